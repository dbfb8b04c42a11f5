//! What one user or one client can take, bounded: counts checked at start
//! against what the machine holds (tested by the refusal, never by starting
//! the processes), the memory of frames still arriving, idle connections,
//! connections per address, and the accelerator mutex's claimants.

mod common;

use std::process::{Command, Output};

use common::{error_code, TestClient, TestServer};
use serde_json::{json, Value};

fn run(binary: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(binary);
    command.args(args).env_remove("THREADCENTER_WORKERS");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("the binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Waits (bounded) until `stats` satisfies `condition`.
fn wait_for(server: &TestServer, what: &str, condition: impl Fn(&Value) -> bool) -> Value {
    server.wait_for_stats(what, condition)
}

#[test]
fn a_worker_count_the_machine_cannot_hold_is_refused_before_anything_starts() {
    let server = env!("CARGO_BIN_EXE_tc-server");
    for mode in ["processes", "threads"] {
        let out = run(server, &["--port", "0", "--mode", mode, "--workers", "100000"], &[]);
        assert_eq!(out.status.code(), Some(2), "{mode}: {}", stderr(&out));
        let message = stderr(&out);
        assert!(
            message.contains("--workers 100000 is more than this machine can hold: at most"),
            "{message}"
        );
        assert!(message.contains("cores"), "says why more workers add nothing: {message}");
    }
    // The environment form goes through the same check.
    let out = run(server, &["--port", "0"], &[("THREADCENTER_WORKERS", "100000")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("more than this machine can hold"), "{}", stderr(&out));
    // The worker host (the `nats` feature) refuses before it connects to
    // NATS (nothing listens here).
    #[cfg(feature = "nats")]
    {
        let worker = env!("CARGO_BIN_EXE_tc-worker");
        let out = run(worker, &["--nats", "nats://127.0.0.1:1", "--workers", "100000"], &[]);
        assert!(!out.status.success());
        let said = stderr(&out);
        assert!(said.contains("--workers 100000 is more than this machine can hold"), "{said}");
    }
    // And so does a benchmark's embedded farm.
    let client = env!("CARGO_BIN_EXE_tc-client");
    let out = run(client, &["--embedded", "--workers", "100000", "-n", "1"], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--workers 100000 is more than this machine can hold"), "{}", stderr(&out));
}

#[test]
fn queues_caches_and_rates_past_the_machine_are_refused_naming_the_flag() {
    let server = env!("CARGO_BIN_EXE_tc-server");
    let huge = "1000000000000000";
    for flag in ["--queue-capacity", "--cache-entries", "--max-inflight", "--max-frame-memory"] {
        let out = run(server, &["--port", "0", "--workers", "1", flag, huge], &[]);
        assert_eq!(out.status.code(), Some(2), "{flag}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("{flag} {huge} is more than this machine can hold")),
            "{}",
            stderr(&out)
        );
    }
    let out = run(server, &["--port", "0", "--workers", "1", "--rate-limit", "1e15"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--rate-limit must be a positive number"), "{}", stderr(&out));
    let client = env!("CARGO_BIN_EXE_tc-client");
    let out = run(client, &["--embedded", "--rate", "1e15", "-d", "1s"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--rate must be a positive number"), "{}", stderr(&out));
    let out = run(client, &["--embedded", "--pipeline", huge, "-n", "1"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--pipeline"), "{}", stderr(&out));
}

#[test]
fn frames_still_arriving_share_one_memory_budget_and_the_connection_past_it_is_shed() {
    // Budget 1 MiB, frames up to 1 MiB: one connection holding most of a
    // large frame leaves too little for a second one.
    let server = TestServer::start(
        "threads",
        1,
        &[
            "--max-frame",
            "1MiB",
            "--max-frame-memory",
            "1MiB",
            "--read-timeout",
            "30s",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    );
    let body = format!(r#"{{"id":1,"cmd":"ping","pad":"{}"}}"#, "x".repeat(900 * 1024));
    let announced = (body.len() as u32).to_be_bytes();
    let mut first = server.connect();
    first.send_raw(&announced);
    first.send_raw(&body.as_bytes()[..600 * 1024]);
    wait_for(&server, "the first frame's bytes held", |s| {
        s["connections"]["frame_memory"]["bytes"].as_u64().unwrap_or(0) >= 600 * 1024
    });
    let mut second = server.connect();
    second.send_raw(&announced);
    let writer = second.send_raw_in_background(body.as_bytes()[..600 * 1024].to_vec());
    let refused = second.recv();
    assert_eq!(error_code(&refused), Some("BUSY"), "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("--max-frame-memory"), "{message}");
    assert!(second.try_recv().is_none(), "closed after the refusal");
    let _ = writer.join();
    // The first connection is unharmed: its frame completes and is answered.
    first.send_raw(&body.as_bytes()[600 * 1024..]);
    assert_eq!(first.recv()["pong"], true);
    let stats =
        wait_for(&server, "the budget given back", |s| s["connections"]["frame_memory"]["bytes"] == 0);
    assert_eq!(stats["connections"]["frame_memory"]["refused"], 1, "{}", stats["connections"]);
    assert_eq!(stats["connections"]["frame_memory"]["limit"], 1024 * 1024);
    assert_eq!(server.scrape().get("threadcenter_frame_memory_refused_total"), Some(&1.0));
}

#[test]
fn an_idle_connection_is_closed_with_a_frame_saying_why_but_one_waiting_for_a_reply_is_not() {
    let server = TestServer::start(
        "threads",
        1,
        &["--idle-timeout", "1s", "--read-timeout", "1s", "--allow-chaos", "--metrics-addr", "127.0.0.1:0"],
    );
    // This one waits 2.5 s for its reply, sending nothing meanwhile.
    let mut waiting = server.connect();
    waiting.send(&json!({"id": 1, "cmd": "sleep", "ms": 2500}));
    let mut idle = server.connect();
    assert_eq!(idle.request(json!({"id": 2, "cmd": "ping"}))["pong"], true);
    let closing = idle.recv();
    assert_eq!(error_code(&closing), Some("IDLE_TIMEOUT"), "{closing}");
    assert!(closing["error"]["message"].as_str().unwrap().contains("--idle-timeout"), "{closing}");
    assert!(idle.try_recv().is_none(), "closed after the frame");
    let slept = waiting.recv();
    assert!(slept.get("result").is_some(), "the waiting connection got its reply: {slept}");
    let stats =
        wait_for(&server, "the idle close counted", |s| s["connections"]["idle_closed"].as_u64() >= Some(1));
    assert_eq!(stats["connections"]["idle_closed"], 1, "only the idle one: {}", stats["connections"]);
    assert_eq!(server.scrape().get("threadcenter_connections_idle_closed_total"), Some(&1.0));
}

#[test]
fn one_address_cannot_take_more_than_its_share_of_connections() {
    let server = TestServer::start(
        "threads",
        1,
        &["--max-connections-per-ip", "2", "--idle-timeout", "0", "--metrics-addr", "127.0.0.1:0"],
    );
    let mut held: Vec<TestClient> = (0..2).map(|_| server.connect()).collect();
    for client in &mut held {
        assert_eq!(client.request(json!({"id": 1, "cmd": "ping"}))["pong"], true);
    }
    let mut third = server.connect();
    let refused = third.try_recv_timeout_free().expect("a refusal frame");
    assert_eq!(error_code(&refused), Some("BUSY"), "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("--max-connections-per-ip"), "{refused}");
    // Once one of the two leaves, the address may connect again. (Watched
    // on /metrics: a `stats` request would need a connection of its own.)
    held.pop().unwrap().close();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while server.scrape().get("threadcenter_connections_open") != Some(&1.0) {
        assert!(std::time::Instant::now() < deadline, "the closed connection was never removed");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(server.connect().request(json!({"id": 2, "cmd": "ping"}))["pong"], true);
    let metrics = server.scrape();
    assert_eq!(metrics.get("threadcenter_connections_rejected_per_ip_total"), Some(&1.0), "{metrics:?}");
}

/// `mutex_acquire` in the native dialect.
fn acquire(client: &mut TestClient, who: &str, token: Option<u64>) -> Value {
    let mut request = json!({"id": 1, "cmd": "mutex_acquire", "client_id": who});
    if let Some(token) = token {
        request["token"] = token.into();
    }
    client.request(request)
}

#[test]
fn two_native_connections_with_one_client_id_are_two_clients_and_tokens_are_required() {
    let server = TestServer::start("threads", 1, &["--lock-timeout", "60s"]);
    let (mut first, mut second) = (server.connect(), server.connect());
    let granted = acquire(&mut first, "same", None);
    assert_eq!(granted["result"]["status"], "GRANTED", "{granted}");
    let token = granted["result"]["token"].as_u64().unwrap();
    let other = acquire(&mut second, "same", None);
    assert_eq!(other["result"]["status"], "QUEUED", "not a second holder: {other}");
    // Releasing by name alone does nothing; renewing needs the token too.
    let release = json!({"id": 2, "cmd": "mutex_release", "client_id": "same"});
    let refused = second.request(release.clone());
    assert_eq!(refused["result"]["success"], false, "{refused}");
    assert!(refused["result"]["error"].as_str().unwrap().contains("token"), "{refused}");
    assert_eq!(error_code(&acquire(&mut first, "same", None)), Some("LOCK_REQUIRED"));
    assert_eq!(acquire(&mut first, "same", Some(token))["result"]["token"], token, "renewed");
    // The holder's name is not shown to readers without --auth-token.
    let mutex = &server.stats()["mutex"];
    assert_eq!(mutex["owner"], "(hidden: the server has no --auth-token)", "{mutex}");
    let released =
        first.request(json!({"id": 3, "cmd": "mutex_release", "client_id": "same", "token": token}));
    assert_eq!(released["result"]["success"], true, "{released}");
    // Handed over to the second connection, which collects it.
    assert_eq!(acquire(&mut second, "same", None)["result"]["status"], "GRANTED");
    // Client ids are bounded whatever their JSON type.
    let long_number = "9".repeat(300);
    let payload = format!(r#"{{"id":4,"cmd":"mutex_acquire","client_id":{long_number}}}"#);
    first.send_payload(payload.as_bytes());
    let too_long = first.recv();
    assert_eq!(error_code(&too_long), Some("BAD_REQUEST"), "{too_long}");
    assert!(too_long["error"]["message"].as_str().unwrap().contains("longer than 256"), "{too_long}");
}

#[test]
fn a_waiter_that_disconnects_leaves_the_queue_at_once() {
    let server = TestServer::start("threads", 1, &["--lock-timeout", "60s"]);
    let holder_request = json!({"method": "mutex_acquire", "params": {"client_id": "holder"}});
    let mut holder = server.connect();
    assert_eq!(holder.request(holder_request)["status"], "GRANTED");
    // This client waits on the server, then goes away.
    let mut leaver = server.connect();
    leaver.send(&json!({"method": "mutex_acquire", "params": {"client_id": "leaver", "wait_ms": 30_000}}));
    wait_for(&server, "the leaver queued", |s| s["mutex"]["queue_length"] == 1);
    leaver.close();
    // Within the wait of `wait_for` (far less than the 30 s wait or the lease).
    wait_for(&server, "the leaver gone from the queue", |s| s["mutex"]["queue_length"] == 0);
    let released = holder.request(json!({"method": "mutex_release", "params": {"client_id": "holder"}}));
    assert_eq!(released["success"], true, "{released}");
    // Before the fix, the lock went to the departed waiter and the next
    // client waited a whole lease.
    let next = server.connect().request(json!({"method": "mutex_acquire", "params": {"client_id": "next"}}));
    assert_eq!(next["status"], "GRANTED", "{next}");
}
