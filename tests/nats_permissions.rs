//! The NATS permissions docs/WORKER_HOSTS.md gives
//! (scripts/nats/farm-permissions.conf): a farm runs under them, and a
//! host's credentials cannot reach what is the gateways' alone.

// Worker hosts and gateways are the `nats` feature (cargo test --all-features).
#![cfg(feature = "nats")]

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
    // Not onto a gateway's inbox (its JetStream answers) ...
    host.publish("_INBOX_TC_GATEWAY.forged", None, b"", b"forged");
    // ... nor a forged receipt onto another host's inbox (which would make
    // that host drop results its gateway never had) ...
    host.publish("_INBOX_TC_HOST.another", None, b"", b"taken");
    // ... nor reading other hosts' results on their way to a gateway,
    host.subscribe("tc.answers.>");
    // ... nor listening to the jobs as they are published.
    host.subscribe("tc.jobs");
    host.until_pong();
    let refused =
        |what: &str| host.errors.iter().any(|e| e.contains("Permissions Violation") && e.contains(what));
    assert!(refused("_INBOX_TC_GATEWAY.forged"), "{:?}", host.errors);
    assert!(refused("_INBOX_TC_HOST.another"), "{:?}", host.errors);
    assert!(refused("tc.answers.>"), "{:?}", host.errors);
    assert!(refused("tc.jobs"), "{:?}", host.errors);
    // And the farm is unharmed.
    assert_eq!(gateway.request(json!({"id": 1, "cmd": "compute", "n": 7}))["result"], reference_compute(7));
}

/// Runs a binary to its end (it must stop by itself within 60 s) and
/// returns its exit code and standard error.
fn run_to_end(binary: &str, args: &[&str]) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(binary)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary starts");
    common::wait_for_exit(
        &mut child,
        std::time::Duration::from_secs(60),
        &format!("{binary} {args:?} did not stop by itself"),
    );
    let output = child.wait_with_output().unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn swapped_users_are_told_as_a_permission_refusal_not_a_missing_jetstream() {
    // The gateways' user given to a host and the hosts' to a gateway: NATS
    // refuses each its reply inbox, and each says so (not "is JetStream on?").
    let Some(nats) = NatsServer::start_with(&["-c", CONFIG]) else { return };
    let as_gateway = [
        "--port",
        "0",
        "--workers",
        "0",
        "--nats",
        &nats.url,
        "--nats-user",
        HOST.0,
        "--nats-password",
        HOST.1,
    ];
    let (code, stderr) = run_to_end(env!("CARGO_BIN_EXE_tc-server"), &as_gateway);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("NATS refused this connection a permission"), "{stderr}");
    assert!(stderr.contains("swapped") && !stderr.contains("(-js)"), "{stderr}");
    let as_host = ["--workers", "1", "--nats", &nats.url, GATEWAY[0], GATEWAY[1], GATEWAY[2], GATEWAY[3]];
    let (code, stderr) = run_to_end(env!("CARGO_BIN_EXE_tc-worker"), &as_host);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("lacks what a worker host needs") && stderr.contains("swapped"), "{stderr}");
}

#[test]
fn a_farm_that_cannot_start_says_why_and_a_setting_that_cannot_work_exits_two() {
    // Nothing listening: the hint is to start nats-server first.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("nats://{}", closed.local_addr().unwrap());
    drop(closed);
    let (code, stderr) =
        run_to_end(env!("CARGO_BIN_EXE_tc-worker"), &["--workers", "1", "--nats", &closed_url]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("start nats-server with JetStream first"), "{stderr}");
    // A port that accepts but is not NATS (a ThreadCenter job port).
    let server = TestServer::start("threads", 1, &[]);
    let not_nats = format!("nats://{}", server.addr);
    let (code, stderr) =
        run_to_end(env!("CARGO_BIN_EXE_tc-worker"), &["--workers", "1", "--nats", &not_nats]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("did not greet as a NATS server does"), "{stderr}");
    // Settings that cannot work: exit 2, before any worker starts.
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.key");
    std::fs::write(&short, "too short").unwrap();
    let short = short.to_str().unwrap();
    for (binary, args) in [
        (env!("CARGO_BIN_EXE_tc-worker"), vec!["--workers", "1", "--nats", "http://127.0.0.1:4222"]),
        (env!("CARGO_BIN_EXE_tc-worker"), vec!["--workers", "1", "--nats", &closed_url, "--farm-key", short]),
        (
            env!("CARGO_BIN_EXE_tc-server"),
            vec![
                "--port",
                "0",
                "--mode",
                "processes",
                "--nats",
                &closed_url,
                "--farm-key",
                "/nonexistent/farm.key",
            ],
        ),
    ] {
        let (code, stderr) = run_to_end(binary, &args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("invalid configuration:") && !stderr.contains("worker 0"),
            "{args:?}: {stderr}"
        );
    }
}
