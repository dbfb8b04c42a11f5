//! Overload and abuse: the connection limit, per-client rate limiting, a
//! client that never reads, a client that stalls mid-frame, 1,000 idle
//! connections, authentication, and the result cache.

mod common;

use std::thread;
use std::time::Duration;

use common::{error_code, run_client, TestServer};
use serde_json::json;

#[test]
fn a_connection_over_the_limit_gets_busy_and_is_closed() {
    let server = TestServer::start("threads", 1, &["--max-connections", "2"]);
    let mut first = server.connect();
    let mut second = server.connect();
    assert_eq!(first.request(json!({"id": 1, "cmd": "ping"}))["pong"], true);
    assert_eq!(second.request(json!({"id": 2, "cmd": "ping"}))["pong"], true);
    let mut third = server.connect();
    let reply = third.try_recv().expect("an error frame before the close");
    assert_eq!(error_code(&reply), Some("BUSY"), "{reply}");
    assert!(reply["error"]["message"].as_str().unwrap().contains("--max-connections"));
    assert!(third.try_recv().is_none(), "then closed");
    // The two admitted connections are untouched; when one leaves, room is made.
    assert_eq!(first.request(json!({"id": 3, "cmd": "ping"}))["pong"], true);
    second.close();
    let stats = loop {
        let mut probe = server.connect();
        match probe.try_recv_timeout_free() {
            Some(reply) => {
                // refused again: the closed connection is not gone yet
                assert_eq!(error_code(&reply), Some("BUSY"));
                thread::sleep(Duration::from_millis(20));
            }
            None => break probe.request(json!({"id": "s", "cmd": "stats"})),
        }
    };
    assert!(stats["result"]["connections"]["rejected"].as_u64().unwrap() >= 1);
}

#[test]
fn a_client_over_its_rate_limit_gets_rate_limited_replies_not_silence() {
    let server = TestServer::start("threads", 1, &["--rate-limit", "1/s"]);
    let mut client = server.connect();
    for i in 0..10 {
        client.send(&json!({"id": i, "cmd": "ping"}));
    }
    let replies: Vec<_> = (0..10).map(|_| client.recv()).collect();
    let limited = replies.iter().filter(|r| error_code(r) == Some("RATE_LIMITED")).count();
    let ok = replies.iter().filter(|r| r["pong"] == true).count();
    assert_eq!(ok + limited, 10, "every request is answered: {replies:?}");
    assert!(ok >= 1, "the first request fits in the burst");
    assert!(limited >= 5, "a burst of 10 at 1/s is mostly refused: {replies:?}");
    assert_eq!(server.stats()["errors"]["RATE_LIMITED"], limited as u64);
}

#[test]
fn a_client_that_never_reads_does_not_block_the_others() {
    let server = TestServer::start("threads", 2, &["--max-inflight", "8"]);
    // The greedy client asks for large replies (stats) and never reads them.
    let greedy = server.connect();
    let writer = greedy.send_raw_in_background({
        let one = {
            let payload = br#"{"id":1,"cmd":"stats"}"#;
            let mut f = (payload.len() as u32).to_be_bytes().to_vec();
            f.extend_from_slice(payload);
            f
        };
        one.repeat(20_000)
    });
    // Meanwhile everyone else is served.
    let mut polite = server.connect();
    for i in 0..50 {
        assert_eq!(polite.request(json!({"id": i, "cmd": "compute", "n": 10}))["result"], 8360);
    }
    let stats = server.stats();
    assert_eq!(stats["workers"]["alive"], 2);
    greedy.close();
    writer.join().unwrap();
}

#[test]
fn a_frame_that_stalls_halfway_is_cut_off() {
    let server = TestServer::start("threads", 1, &["--read-timeout", "300ms"]);
    let mut stalled = server.connect();
    stalled.send_raw(&[0, 0, 0, 40, b'{', b'"']); // 2 of 40 bytes, then nothing
    let reply = stalled.try_recv().expect("an explanation before the close");
    assert_eq!(error_code(&reply), Some("BAD_FRAME"), "{reply}");
    assert!(reply["error"]["message"].as_str().unwrap().contains("did not complete"), "{reply}");
    assert!(stalled.try_recv().is_none(), "then the connection is closed");
    // An idle connection (no partial frame) is not cut off by the same timeout.
    let mut idle = server.connect();
    thread::sleep(Duration::from_millis(700));
    assert_eq!(idle.request(json!({"id": 1, "cmd": "ping"}))["pong"], true);
}

#[test]
fn a_thousand_idle_connections_are_held_and_served() {
    let server = TestServer::start("threads", 2, &[]);
    let mut clients: Vec<_> = (0..1000).map(|_| server.connect()).collect();
    let stats = server.wait_for_stats("all connections registered", |s| s["connections"]["open"] == 1001);
    assert_eq!(stats["connections"]["rejected"], 0);
    for (i, client) in clients.iter_mut().enumerate() {
        let reply = client.request(json!({"id": i, "cmd": "ping"}));
        assert_eq!(reply["id"], i, "connection {i}");
    }
}

#[test]
fn with_an_auth_token_only_authenticated_connections_are_served() {
    let server = TestServer::start("threads", 1, &["--auth-token", "s3cret"]);
    let mut anonymous = server.connect();
    let reply = anonymous.request(json!({"id": 1, "cmd": "ping"}));
    assert_eq!(error_code(&reply), Some("UNAUTHORIZED"), "{reply}");
    assert!(anonymous.try_recv().is_none(), "closed after the refusal");

    let mut wrong = server.connect();
    let reply = wrong.request(json!({"id": 1, "cmd": "auth", "token": "guess"}));
    assert_eq!(error_code(&reply), Some("UNAUTHORIZED"));
    assert!(wrong.try_recv().is_none());

    let mut friend = server.connect();
    assert_eq!(friend.request(json!({"id": 1, "cmd": "auth", "token": "s3cret"}))["result"]["ok"], true);
    assert_eq!(friend.request(json!({"id": 2, "cmd": "compute", "n": 10}))["result"], 8360);
    let stats = friend.request(json!({"id": 3, "cmd": "stats"}))["result"].clone();
    assert_eq!(stats["connections"]["rejected"], 2);

    // tc-client authenticates with the same flag.
    let port = server.addr.port().to_string();
    let out = run_client(&["call", "--port", &port, "--auth-token", "s3cret", r#"{"cmd":"ping"}"#]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run_client(&["--port", &port, "--auth-token", "s3cret", "-c", "2", "-n", "5", "--size", "10"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn the_cache_answers_repeated_requests_without_a_worker() {
    let server = TestServer::start("threads", 1, &["--cache-entries", "16"]);
    let mut client = server.connect();
    let first = client.request(json!({"id": "a", "cmd": "compute", "n": 1000}));
    assert_eq!(first["result"], 933_214_789);
    assert!(first.get("cached").is_none(), "{first}");
    let second = client.request(json!({"id": "b", "cmd": "compute", "n": 1000}));
    assert_eq!(second, json!({"id": "b", "result": 933_214_789, "cached": true}));
    let other = client.request(json!({"id": "c", "cmd": "compute", "n": 1001}));
    assert!(other.get("cached").is_none(), "a different body is a different entry");
    let stats = server.stats();
    assert_eq!(stats["cache"]["hits"], 1);
    assert_eq!(stats["cache"]["misses"], 2);
    assert_eq!(stats["jobs"]["completed"], 2, "the hit never reached a worker");
}

#[test]
fn both_ports_held_at_their_limits_at_once_and_the_server_still_answers() {
    let server = TestServer::start(
        "threads",
        1,
        &["--max-connections", "200", "--metrics-addr", "127.0.0.1:0", "--metrics-max-connections", "16"],
    );
    // Every job connection the limit allows (each with its two threads)...
    let mut held: Vec<_> = (0..200).map(|_| server.connect()).collect();
    // ...and every metrics connection, idle.
    let metrics = server.metrics_addr.unwrap();
    let idle: Vec<_> = (0..16).map(|_| std::net::TcpStream::connect(metrics).unwrap()).collect();
    // Each held job connection answers.
    for (i, client) in held.iter_mut().enumerate().step_by(20) {
        assert_eq!(client.request(json!({"id": i, "cmd": "ping"}))["pong"], true);
    }
    assert!(held[199].request(json!({"id": 199, "cmd": "compute", "n": 1000}))["result"].is_u64());
    // One more job connection is refused with a sentence, not an abort.
    let mut extra = server.connect();
    let reply = extra.try_recv().expect("a BUSY frame");
    assert_eq!(error_code(&reply), Some("BUSY"), "{reply}");
    drop(idle);
    drop(held);
}

#[test]
fn a_connection_limit_beyond_the_machine_is_refused_at_start_naming_the_limit() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tc-server"))
        .args(["--port", "0", "--max-connections", "100000000"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--max-connections 100000000 is more than this machine can hold")
            && stderr.contains("limited by"),
        "{stderr}"
    );
}
