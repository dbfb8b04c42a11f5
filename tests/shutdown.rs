//! Graceful shutdown: on SIGTERM the server stops accepting, answers new
//! requests with SHUTTING_DOWN, lets jobs in flight finish (up to
//! --drain-timeout), answers the rest, stops its workers and exits 0.

mod common;

use std::thread;

use common::{error_code, reference_compute, send_signal, wait_until_gone, worker_pids, TestServer};
use serde_json::json;

#[test]
fn every_request_accepted_before_sigterm_gets_its_reply_then_a_clean_exit() {
    let mut server = TestServer::start("processes", 2, &["--drain-timeout", "30s"]);
    let pids = worker_pids(&server.stats());
    let mut clients: Vec<_> = (0..4).map(|_| server.connect()).collect();
    for (c, client) in clients.iter_mut().enumerate() {
        for r in 0..30 {
            client.send(&json!({"id": c * 100 + r, "cmd": "compute", "n": 300_000}));
        }
    }
    // Every request has been read (accepted) before the signal.
    server.wait_for_stats("all 120 requests accepted", |s| s["requests"]["compute"] == 120);
    send_signal(server.pid(), libc::SIGTERM);

    let expected = reference_compute(300_000);
    for (c, client) in clients.iter_mut().enumerate() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..30 {
            let reply = client.try_recv().unwrap_or_else(|| panic!("connection {c}: a reply is missing"));
            assert!(seen.insert(reply["id"].as_u64().unwrap()), "duplicate reply {reply}");
            // Jobs in flight finish: with a 30 s drain every one completes.
            assert_eq!(reply["result"], expected, "{reply}");
        }
        assert!(client.try_recv().is_none(), "connection {c}: closed after its last reply");
    }
    let status = server.wait_exit();
    assert!(status.success(), "a clean stop exits 0: {status}");
    wait_until_gone(&pids);
}

#[test]
fn new_requests_during_the_drain_get_shutting_down() {
    let mut server = TestServer::start("threads", 1, &["--allow-chaos", "--drain-timeout", "30s"]);
    let mut busy = server.connect();
    let mut other = server.connect();
    busy.send(&json!({"id": "slow", "cmd": "sleep", "ms": 1500}));
    server.wait_for_stats("the sleep to start", |s| s["worker_list"][0]["state"] == "busy");
    send_signal(server.pid(), libc::SIGTERM);
    // The drain is under way: a new request is refused, politely.
    let reply = loop {
        let reply = other.request(json!({"id": "late", "cmd": "ping"}));
        if reply["pong"] == true {
            thread::sleep(std::time::Duration::from_millis(5)); // the signal is not handled yet
            continue;
        }
        break reply;
    };
    assert_eq!(error_code(&reply), Some("SHUTTING_DOWN"), "{reply}");
    // The job in flight still finishes and is delivered.
    assert_eq!(busy.recv()["result"], json!({"slept_ms": 1500}));
    assert!(server.wait_exit().success());
}

#[test]
fn jobs_still_running_when_the_drain_times_out_are_answered_shutting_down() {
    let mut server = TestServer::start("processes", 1, &["--allow-chaos", "--drain-timeout", "300ms"]);
    let pids = worker_pids(&server.stats());
    let mut client = server.connect();
    client.send(&json!({"id": "forever", "cmd": "hang"}));
    server.wait_for_stats("the hang to start", |s| s["worker_list"][0]["state"] == "busy");
    send_signal(server.pid(), libc::SIGTERM);
    let reply = client.recv();
    assert_eq!(error_code(&reply), Some("SHUTTING_DOWN"), "{reply}");
    assert_eq!(reply["id"], "forever");
    assert!(server.wait_exit().success());
    wait_until_gone(&pids);
}
