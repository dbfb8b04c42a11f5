//! The farm past one machine: gateways (`tc-server --nats`) and worker hosts
//! (`tc-worker`) joined through a real `nats-server` with JetStream, on
//! loopback.

// Worker hosts and gateways are the `nats` feature (cargo test --all-features).
#![cfg(feature = "nats")]

mod common;

use common::nats::{start_gateway, wait_for_hosts, NatsServer, WorkerHost};
use common::{error_code, reference_compute, send_signal, TestServer, MODES};
use serde_json::{json, Value};

/// Sends every request on one connection (pipelined), and returns the
/// replies by id; each id must be answered exactly once.
fn pipeline(server: &TestServer, requests: &[Value]) -> std::collections::HashMap<String, Value> {
    let mut client = server.connect();
    for request in requests {
        client.send(request);
    }
    let mut replies = std::collections::HashMap::new();
    for _ in requests {
        let reply = client.recv();
        let id = reply["id"].to_string();
        assert!(replies.insert(id.clone(), reply).is_none(), "id {id} answered twice");
    }
    assert!(client.try_recv_timeout_free().is_none(), "no reply beyond one per request");
    replies
}

#[test]
fn compute_jobs_run_on_worker_hosts_in_both_modes() {
    let Some(nats) = NatsServer::start() else { return };
    for mode in MODES {
        let _host = WorkerHost::start(&nats.url, &format!("host-{mode}"), mode, 2, &[]);
        let gateway = start_gateway(&nats, &["--metrics-addr", "127.0.0.1:0"]);
        let stats = wait_for_hosts(&gateway, 1);
        assert_eq!(stats["hosts"][0]["mode"], mode);
        assert_eq!(stats["hosts"][0]["slots"], 2);
        let requests: Vec<Value> =
            (0..12).map(|i| json!({"id": i, "cmd": "compute", "n": 1000 * i})).collect();
        let replies = pipeline(&gateway, &requests);
        for i in 0..12u64 {
            assert_eq!(replies[&i.to_string()]["result"], reference_compute(1000 * i), "{mode}: job {i}");
        }
        let stats = gateway.wait_for_stats("the completed jobs", |s| s["jobs"]["completed"] == 12);
        assert_eq!(stats["jobs"]["in_flight"], 0);
        assert_eq!(stats["remote"]["forwarded"], 12, "{stats}");
        assert_eq!(stats["remote"]["connected"], true, "{stats}");
        let metrics = gateway.scrape();
        assert_eq!(metrics.get("threadcenter_hosts_alive"), Some(&1.0), "{metrics:?}");
        assert_eq!(metrics.get("threadcenter_nats_jobs_forwarded_total"), Some(&12.0), "{metrics:?}");
        let slots = format!("threadcenter_host_slots{{host=\"host-{mode}\"}}");
        assert_eq!(metrics.get(&slots), Some(&2.0), "{metrics:?}");
    }
}

#[test]
fn the_clients_report_names_a_gateways_hosts_and_their_mode() {
    // A gateway with `--workers 0` runs nothing itself: a report that said
    // "processes, 2 workers" (its own default mode) would mislabel a run
    // whose jobs all ran in threads on a host.
    let Some(nats) = NatsServer::start() else { return };
    let _host = WorkerHost::start(&nats.url, "host-threads", "threads", 2, &[]);
    let gateway = start_gateway(&nats, &[]);
    wait_for_hosts(&gateway, 1);
    let dir = tempfile::tempdir().unwrap();
    let (csv, report) = (dir.path().join("run.csv"), dir.path().join("run.json"));
    let port = gateway.addr.port().to_string();
    let out = common::run_client(&[
        "--port",
        &port,
        "-c",
        "2",
        "-n",
        "5",
        "--csv",
        csv.to_str().unwrap(),
        "--json",
        report.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let first = stdout.lines().next().unwrap_or_default();
    assert!(first.contains("(server: gateway, no local workers; 1 host: 2 workers, threads)"), "{stdout}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(
        report["server"]["hosts"],
        json!({"alive": 1, "workers": 2, "modes": ["threads"]}),
        "{report}"
    );
    assert_eq!(report["server"]["mode"], "threads", "the jobs' mode, not the idle gateway's");
    let csv = std::fs::read_to_string(&csv).unwrap();
    let (header, row) = csv.split_once('\n').unwrap();
    let column = header.split(',').position(|c| c == "server_mode").unwrap();
    assert_eq!(row.split(',').nth(column), Some("threads"), "{csv}");
}

#[test]
fn a_host_that_joins_during_the_run_is_in_the_reports_first_line() {
    // The report's first line is what the gateway said at the start; a
    // host started beside the client (still joining then) ran the jobs.
    let Some(nats) = NatsServer::start() else { return };
    let gateway = start_gateway(&nats, &[]);
    let port = gateway.addr.port().to_string();
    let client = std::thread::spawn(move || {
        common::run_client(&["--port", &port, "-c", "1", "--rate", "20", "-d", "8s", "--warmup", "0s"])
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let _host = WorkerHost::start(&nats.url, "late", "threads", 2, &[]);
    wait_for_hosts(&gateway, 1);
    let out = client.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let first = stdout.lines().next().unwrap_or_default();
    assert!(first.contains("(server: gateway, no local workers; 1 host: 2 workers, threads)"), "{stdout}");
}

#[test]
fn a_gateway_without_hosts_refuses_jobs_with_a_clear_error_and_is_not_ready() {
    let Some(nats) = NatsServer::start() else { return };
    let gateway = start_gateway(&nats, &["--metrics-addr", "127.0.0.1:0"]);
    let reply = gateway.request(json!({"id": 1, "cmd": "compute", "n": 5}));
    assert_eq!(error_code(&reply), Some("BUSY"), "{reply}");
    assert!(reply["error"]["message"].as_str().unwrap().contains("tc-worker"), "{reply}");
    let (status, body) = gateway.http_get("/readyz");
    assert_eq!(status, 503, "{body}");
    // A host joins: the same gateway serves, and is ready.
    let _host = WorkerHost::start(&nats.url, "late", "threads", 1, &[]);
    wait_for_hosts(&gateway, 1);
    assert_eq!(gateway.request(json!({"id": 2, "cmd": "compute", "n": 5}))["result"], reference_compute(5));
    assert_eq!(gateway.http_get("/readyz").0, 200);
}

#[test]
fn two_gateways_share_the_hosts_and_each_reply_reaches_its_asker() {
    let Some(nats) = NatsServer::start() else { return };
    let _host = WorkerHost::start(&nats.url, "shared", "threads", 2, &[]);
    let (first, second) = (start_gateway(&nats, &[]), start_gateway(&nats, &[]));
    wait_for_hosts(&first, 1);
    wait_for_hosts(&second, 1);
    // The same ids on both gateways: each must get its own results back.
    let on_first: Vec<Value> = (0..8).map(|i| json!({"id": i, "cmd": "compute", "n": 10 + i})).collect();
    let on_second: Vec<Value> = (0..8).map(|i| json!({"id": i, "cmd": "compute", "n": 500 + i})).collect();
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| pipeline(&first, &on_first));
        let b = scope.spawn(|| pipeline(&second, &on_second));
        (a.join().unwrap(), b.join().unwrap())
    });
    for i in 0..8u64 {
        assert_eq!(a[&i.to_string()]["result"], reference_compute(10 + i));
        assert_eq!(b[&i.to_string()]["result"], reference_compute(500 + i));
    }
}

#[test]
fn jobs_of_a_killed_host_are_run_again_elsewhere_and_answered_once() {
    let Some(nats) = NatsServer::start() else { return };
    let doomed = WorkerHost::start(&nats.url, "doomed", "threads", 1, &[]);
    let gateway = start_gateway(&nats, &["--max-n", "1000000000"]);
    wait_for_hosts(&gateway, 1);
    // Long jobs (seconds each, longer than a heartbeat): the doomed host
    // takes one and is killed while running it.
    let n = 400_000_000u64;
    let requests: Vec<Value> = (0..2).map(|i| json!({"id": i, "cmd": "compute", "n": n + i})).collect();
    let mut client = gateway.connect();
    for request in &requests {
        client.send(request);
    }
    gateway.wait_for_stats("a job running on the doomed host", |s| s["hosts"][0]["busy"] == 1);
    send_signal(doomed.pid(), libc::SIGKILL);
    let _survivor = WorkerHost::start(&nats.url, "survivor", "threads", 1, &[]);
    let mut replies = std::collections::HashMap::new();
    for _ in &requests {
        let reply = client.recv();
        assert!(replies.insert(reply["id"].to_string(), reply).is_none(), "answered once");
    }
    for i in 0..2u64 {
        let reply = &replies[&i.to_string()];
        assert_eq!(reply["result"], reference_compute(n + i), "job {i}: {reply}");
    }
    // The killed host's job was delivered twice, and says so.
    assert!(replies.values().any(|r| r["attempts"] == 2), "{replies:?}");
    assert!(client.try_recv_timeout_free().is_none(), "no duplicate reply");
}

#[test]
fn jobs_of_a_hung_host_go_to_another_and_its_late_result_is_dropped() {
    let Some(nats) = NatsServer::start() else { return };
    let hung = WorkerHost::start(&nats.url, "hung", "threads", 1, &[]);
    let gateway = start_gateway(&nats, &["--max-n", "1000000000"]);
    wait_for_hosts(&gateway, 1);
    let n = 300_000_000u64;
    let mut client = gateway.connect();
    client.send(&json!({"id": "long", "cmd": "compute", "n": n}));
    gateway.wait_for_stats("the job running on the host", |s| s["hosts"][0]["busy"] == 1);
    // SIGSTOP: the host neither works nor acknowledges; JetStream gives the
    // job to another host after the ack wait.
    send_signal(hung.pid(), libc::SIGSTOP);
    let _other = WorkerHost::start(&nats.url, "other", "threads", 1, &[]);
    let reply = client.recv();
    assert_eq!(reply["result"], reference_compute(n), "{reply}");
    assert_eq!(reply["attempts"], 2, "{reply}");
    // The hung host wakes up, finishes, and sends a second result: the
    // gateway has answered this job already and drops it — never a second
    // reply.
    send_signal(hung.pid(), libc::SIGCONT);
    let stats = gateway.wait_for_stats("the hung host to finish its copy", |s| {
        let hung =
            s["hosts"].as_array().and_then(|hosts| hosts.iter().find(|h| h["name"] == "hung")).cloned();
        hung.is_some_and(|h| h["jobs_done"] == 1 && h["busy"] == 0)
    });
    assert_eq!(stats["remote"]["redelivered"], 1, "{stats}");
    assert!(client.try_recv_timeout_free().is_none(), "exactly one reply");
}

#[test]
fn predictions_run_on_worker_hosts_in_both_modes() {
    let Some(nats) = NatsServer::start() else { return };
    let sample = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/models/samples/fire-1.png"))
        .expect("the shipped sample image");
    let image = base64_encode(&sample);
    for mode in MODES {
        let _host = WorkerHost::start(&nats.url, &format!("predict-{mode}"), mode, 1, &[]);
        let gateway = start_gateway(&nats, &[]);
        wait_for_hosts(&gateway, 1);
        let local = TestServer::start("threads", 1, &[]);
        let request = json!({"id": 1, "cmd": "predict", "image_b64": image, "filename": "fire-1.png"});
        let remote_reply = gateway.request(request.clone());
        let local_reply = local.request(request);
        assert!(remote_reply["result"]["raw_score"].is_number(), "{mode}: {remote_reply}");
        assert_eq!(remote_reply["result"], local_reply["result"], "{mode}: same answer as a local worker");
    }
}

#[test]
fn a_job_over_the_nats_payload_limit_is_refused_at_the_gateway_with_how_to_raise_it() {
    let Some(nats) = NatsServer::start() else { return };
    let _host = WorkerHost::start(&nats.url, "small", "threads", 1, &[]);
    let gateway = start_gateway(&nats, &[]);
    wait_for_hosts(&gateway, 1);
    // 1.5 MB of image bytes: over nats-server's default max_payload of 1 MB.
    let image = base64_encode(&vec![7u8; 1_500_000]);
    let reply = gateway.request(json!({"id": 1, "cmd": "predict", "image_b64": image}));
    assert_eq!(error_code(&reply), Some("IMAGE_TOO_LARGE"), "{reply}");
    assert!(reply["error"]["message"].as_str().unwrap().contains("max_payload"), "{reply}");
    // The host never saw it.
    let stats = gateway.stats();
    assert_eq!(stats["hosts"][0]["jobs_done"], 0, "{stats}");
}

#[test]
fn a_host_drains_on_sigterm_finishing_what_it_holds() {
    let Some(nats) = NatsServer::start() else { return };
    let mut host = WorkerHost::start(&nats.url, "leaving", "threads", 1, &[]);
    let gateway = start_gateway(&nats, &["--max-n", "1000000000"]);
    wait_for_hosts(&gateway, 1);
    // Long enough (~3 s) that a heartbeat, sent once a second, sees it running
    // on a fast machine too: at 150 M it once finished before the first one.
    let n = 500_000_000u64;
    let mut client = gateway.connect();
    client.send(&json!({"id": 1, "cmd": "compute", "n": n}));
    gateway.wait_for_stats("the job running on the host", |s| s["hosts"][0]["busy"] == 1);
    send_signal(host.pid(), libc::SIGTERM);
    let reply = client.recv();
    assert_eq!(reply["result"], reference_compute(n), "{reply}");
    // No "attempts" field: one delivery, finished by the draining host itself.
    assert!(reply.get("attempts").is_none(), "{reply}");
    let status = host.child.wait().expect("the host exits");
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_draining_host_delivers_its_last_results_before_it_exits() {
    // The drain waits for held jobs *and* for results still on their way: a
    // host that exited as soon as its last job was done would leave that
    // job unacknowledged, its result lost with the host, and the client
    // waiting for another host or the deadline.
    let Some(nats) = NatsServer::start() else { return };
    let mut host = WorkerHost::start(&nats.url, "leaving", "threads", 1, &[]);
    let gateway = start_gateway(&nats, &[]);
    wait_for_hosts(&gateway, 1);
    let n = 90_000_000u64; // about a second
    let mut client = gateway.connect();
    client.send(&json!({"id": 1, "cmd": "compute", "n": n}));
    gateway.wait_for_stats("the job running on the host", |s| s["hosts"][0]["busy"] == 1);
    // The gateway frozen (short of the ack wait): the result must wait on
    // the draining host until it wakes.
    send_signal(gateway.pid(), libc::SIGSTOP);
    send_signal(host.pid(), libc::SIGTERM);
    std::thread::sleep(std::time::Duration::from_secs(3));
    send_signal(gateway.pid(), libc::SIGCONT);
    let reply = client.recv();
    assert_eq!(reply["result"], reference_compute(n), "{reply}");
    assert!(reply.get("attempts").is_none(), "one delivery, answered by the draining host: {reply}");
    let status = host.child.wait().expect("the host exits");
    assert!(status.success(), "{status:?}");
    // And the host acknowledged the job before it left (the receipt came):
    // nothing is left in the stream for a host that will never come.
    // (JetStream applies an acknowledgement a moment after it arrives.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while nats.stream_messages("TC_JOBS") != 0 {
        assert!(std::time::Instant::now() < deadline, "the job was never acknowledged");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn the_farm_recovers_by_itself_when_nats_restarts() {
    let Some(mut nats) = NatsServer::start() else { return };
    let _host = WorkerHost::start(&nats.url, "steady", "threads", 2, &[]);
    let gateway = start_gateway(&nats, &["--metrics-addr", "127.0.0.1:0"]);
    wait_for_hosts(&gateway, 1);
    assert_eq!(gateway.request(json!({"id": 1, "cmd": "compute", "n": 7}))["result"], reference_compute(7));
    nats.restart();
    // Gateway and host reconnect by themselves; the host's heartbeats resume.
    gateway.wait_for_stats("the host heard from again", |s| {
        s["hosts"][0]["alive"] == true && s["hosts"][0]["last_heartbeat_s"].as_f64().unwrap() < 0.9
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while gateway.http_get("/readyz").0 != 200 {
        assert!(std::time::Instant::now() < deadline, "the gateway never became ready again");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let requests: Vec<Value> = (0..6).map(|i| json!({"id": i, "cmd": "compute", "n": 100 + i})).collect();
    let replies = pipeline(&gateway, &requests);
    for i in 0..6u64 {
        assert_eq!(replies[&i.to_string()]["result"], reference_compute(100 + i), "{:?}", replies);
    }
}

#[test]
fn nats_own_tools_see_every_host_through_the_services_protocol() {
    let Some(nats) = NatsServer::start() else { return };
    let _first = WorkerHost::start(&nats.url, "alpha", "threads", 2, &[]);
    let _second = WorkerHost::start(&nats.url, "beta", "processes", 1, &[]);
    let gateway = start_gateway(&nats, &[]);
    wait_for_hosts(&gateway, 2);
    let pings = common::nats::request_all(&nats.url, "$SRV.PING.tc-worker", 2);
    assert_eq!(pings.len(), 2, "{pings:?}");
    let mut infos = common::nats::request_all(&nats.url, "$SRV.INFO.tc-worker", 2);
    infos.sort_by_key(|info| info["metadata"]["host"].as_str().unwrap_or_default().to_string());
    assert_eq!(infos[0]["metadata"]["host"], "alpha", "{infos:?}");
    assert_eq!(infos[0]["metadata"]["slots"], "2");
    assert_eq!(infos[1]["metadata"]["mode"], "processes");
    // Each host answers on its own status endpoint with its heartbeat.
    let status = common::nats::request_all(&nats.url, "tc.host.beta.status", 1);
    assert_eq!(status[0]["name"], "beta", "{status:?}");
    assert_eq!(status[0]["slots"], 1);
}

#[test]
fn a_host_serves_its_own_metrics_health_and_readiness() {
    let Some(nats) = NatsServer::start() else { return };
    let (_host, addr) = WorkerHost::start_with_metrics(&nats.url, "watched", "threads", 2);
    let gateway = start_gateway(&nats, &[]);
    wait_for_hosts(&gateway, 1);
    assert_eq!(gateway.request(json!({"id": 1, "cmd": "compute", "n": 9}))["result"], reference_compute(9));
    let (status, body) = common::http_get(addr, "/readyz");
    assert_eq!(status, 200, "{body}");
    let (status, body) = common::http_get(addr, "/healthz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"host\":\"watched\""), "{body}");
    let (status, text) = common::http_get(addr, "/metrics");
    assert_eq!(status, 200);
    let metrics = common::parse_exposition(&text);
    assert_eq!(metrics.get("threadcenter_workers_configured"), Some(&2.0), "{text}");
    assert_eq!(metrics.get("threadcenter_nats_connected"), Some(&1.0), "{text}");
    assert_eq!(metrics.get("threadcenter_ready"), Some(&1.0), "{text}");
    assert_eq!(metrics.get("threadcenter_host_jobs_total"), Some(&1.0), "{text}");
    assert_eq!(metrics.get("threadcenter_host_jobs_held"), Some(&0.0), "{text}");
}

#[test]
fn a_full_stream_answers_busy_at_once() {
    let Some(nats) = NatsServer::start() else { return };
    // A stream of one job: the running one fills it.
    let gateway = start_gateway(&nats, &["--nats-max-jobs", "1", "--max-n", "1000000000"]);
    let _host = WorkerHost::start(&nats.url, "single", "threads", 1, &[]);
    wait_for_hosts(&gateway, 1);
    let n = 300_000_000u64;
    let mut client = gateway.connect();
    client.send(&json!({"id": "first", "cmd": "compute", "n": n}));
    gateway.wait_for_stats("the first job on the host", |s| s["hosts"][0]["busy"] == 1);
    client.send(&json!({"id": "second", "cmd": "compute", "n": 1}));
    let busy = client.recv();
    assert_eq!(busy["id"], "second", "the refusal comes at once, before the long job: {busy}");
    assert_eq!(error_code(&busy), Some("BUSY"), "{busy}");
    assert!(busy["error"]["message"].as_str().unwrap().contains("maximum messages"), "{busy}");
    assert_eq!(client.recv()["result"], reference_compute(n));
    assert_eq!(gateway.stats()["remote"]["refused"], 1);
}

/// Runs one compute job through a gateway and a host that both connect to
/// `nats` with `flags`.
fn one_job_through(nats: &NatsServer, flags: &[&str]) -> Value {
    let _host = WorkerHost::start(&nats.url, "secured", "threads", 1, flags);
    let gateway = start_gateway(nats, flags);
    wait_for_hosts(&gateway, 1);
    gateway.request(json!({"id": 1, "cmd": "compute", "n": 11}))
}

#[test]
fn nats_user_and_password_and_token_are_passed_through() {
    let Some(nats) = NatsServer::start_with(&["--user", "farm", "--pass", "s3cret"]) else { return };
    let reply = one_job_through(&nats, &["--nats-user", "farm", "--nats-password", "s3cret"]);
    assert_eq!(reply["result"], reference_compute(11), "{reply}");
    // Without them, a host says why and exits.
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_tc-worker"))
        .args(["--nats", &nats.url, "--workers", "1", "--mode", "threads"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("cannot connect to NATS"), "{stderr}");

    let Some(nats) = NatsServer::start_with(&["--auth", "t0ken"]) else { return };
    let reply = one_job_through(&nats, &["--nats-token", "t0ken"]);
    assert_eq!(reply["result"], reference_compute(11), "{reply}");
}

#[test]
fn gateway_and_hosts_reach_a_tls_nats_server_with_a_ca_file() {
    let tls = common::nats::TlsFiles::generate();
    let (cert, key, ca) = (tls.cert.to_str().unwrap(), tls.key.to_str().unwrap(), tls.ca.to_str().unwrap());
    let Some(nats) = NatsServer::start_with(&["--tls", "--tlscert", cert, "--tlskey", key]) else { return };
    let reply = one_job_through(&nats, &["--nats-tls-ca", ca]);
    assert_eq!(reply["result"], reference_compute(11), "{reply}");
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn a_hosts_metrics_endpoint_can_speak_https() {
    use rustls_pki_types::pem::PemObject;
    use std::io::{Read, Write};
    use std::sync::Arc;
    let Some(nats) = NatsServer::start() else { return };
    let files = common::nats::TlsFiles::generate();
    let (cert, key) = (files.cert.to_str().unwrap(), files.key.to_str().unwrap());
    let (_host, addr) = WorkerHost::start_with_metrics_and(
        &nats.url,
        "secured",
        "threads",
        1,
        &["--metrics-tls-cert", cert, "--metrics-tls-key", key],
    );
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_pki_types::CertificateDer::from_pem_file(&files.ca).unwrap()).unwrap();
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let session = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let socket = std::net::TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let mut stream = rustls::StreamOwned::new(session, socket);
    write!(stream, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 200") && response.contains("\"host\":\"secured\""), "{response}");
}
