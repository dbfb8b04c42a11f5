//! The NATS permissions docs/WORKER_HOSTS.md gives
//! (scripts/nats/farm-permissions.conf): a farm runs under them, and a
//! host's credentials cannot reach what is the gateways' alone.

mod common;

use common::nats::{NatsServer, RawNats, WorkerHost};
use common::{reference_compute, TestServer};
use serde_json::json;

const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/nats/farm-permissions.conf");
const GATEWAY: [&str; 4] = ["--nats-user", "gateway", "--nats-password", "change-me-gateway"];
const HOST: (&str, &str) = ("host", "change-me-host");

#[test]
fn a_farm_runs_under_the_documented_permissions_and_a_host_cannot_reach_gateway_results() {
    let Some(nats) = NatsServer::start_with(&["-c", CONFIG]) else { return };
    let host_flags = ["--nats-user", HOST.0, "--nats-password", HOST.1];
    let _host = WorkerHost::start(&nats.url, "h", "threads", 1, &host_flags);
    let mut args = vec!["--port", "0", "--workers", "0", "--nats", &nats.url, "--log-level", "error"];
    args.extend_from_slice(&GATEWAY);
    let gateway = TestServer::start_with(&args, &[]);
    gateway.wait_for_stats("the host", |s| s["remote"]["hosts_alive"] == 1);
    for n in [10u64, 1000, 123_456] {
        let reply = gateway.request(json!({"id": n, "cmd": "compute", "n": n}));
        assert_eq!(reply["result"], reference_compute(n), "{reply}");
    }

    let mut host = RawNats::connect(&nats.url, Some(HOST));
    // Not onto a gateway's delivery subject (its results come only through
    // the stream, signed and deduplicated) ...
    host.publish("_INBOX_TC_GATEWAY.forged", None, b"", b"forged");
    // ... nor reading results, directly or through a consumer of its own,
    host.subscribe("tc.results.>");
    host.publish("$JS.API.CONSUMER.CREATE.TC_RESULTS.spy", Some("_INBOX_TC_HOST.x"), b"", b"{}");
    // ... nor listening to the jobs as they are published.
    host.subscribe("tc.jobs");
    host.until_pong();
    let refused =
        |what: &str| host.errors.iter().any(|e| e.contains("Permissions Violation") && e.contains(what));
    assert!(refused("_INBOX_TC_GATEWAY.forged"), "{:?}", host.errors);
    assert!(refused("tc.results.>"), "{:?}", host.errors);
    assert!(refused("$JS.API.CONSUMER.CREATE.TC_RESULTS.spy"), "{:?}", host.errors);
    assert!(refused("tc.jobs"), "{:?}", host.errors);
    // And the farm is unharmed.
    assert_eq!(gateway.request(json!({"id": 1, "cmd": "compute", "n": 7}))["result"], reference_compute(7));
}
