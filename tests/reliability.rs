//! What happens when things go wrong: crashed, hung and panicking workers,
//! the restart limit, injected faults, and what the server promises through
//! all of it — every accepted request gets exactly one reply.

mod common;

use std::collections::HashMap;
use std::thread;

use common::{
    error_code, process_is_running, reference_compute, send_signal, worker_pids, TestServer, MODES,
};
use serde_json::json;

#[test]
fn killing_workers_under_load_loses_no_request_and_the_pool_recovers() {
    let server = TestServer::start("processes", 2, &[]);
    // 4 connections pipeline 100 jobs each while workers are being killed.
    let clients: Vec<_> = (0..4u64)
        .map(|c| {
            let mut client = server.connect();
            let mut writer = client.try_clone_for_writing();
            thread::spawn(move || {
                let sender = thread::spawn(move || {
                    for r in 0..100u64 {
                        writer.send(&json!({"id": c * 1000 + r, "cmd": "compute", "n": 300_000}));
                    }
                });
                let mut answered = HashMap::new();
                for _ in 0..100 {
                    let reply = client.recv();
                    let id = reply["id"].as_u64().unwrap();
                    assert!(answered.insert(id, reply.clone()).is_none(), "id {id} answered twice");
                }
                sender.join().unwrap();
                answered
            })
        })
        .collect();
    for _ in 0..2 {
        let stats = server.wait_for_stats("a busy worker", |s| {
            s["worker_list"].as_array().unwrap().iter().any(|w| w["state"] == "busy")
        });
        let victim = stats["worker_list"].as_array().unwrap().iter().find(|w| w["state"] == "busy").unwrap();
        let pid = victim["pid"].as_u64().unwrap();
        send_signal(pid as u32, libc::SIGKILL);
        // Until the driver notices, the dead pid may still be listed.
        server.wait_for_stats("the victim to be replaced", |s| {
            s["workers"]["alive"] == 2 && s["worker_list"].as_array().unwrap().iter().all(|w| w["pid"] != pid)
        });
    }
    let expected = reference_compute(300_000);
    let mut crashed_twice = 0;
    for client in clients {
        let answered = client.join().expect("client thread");
        assert_eq!(answered.len(), 100, "every request got exactly one reply");
        for reply in answered.values() {
            if error_code(reply) == Some("WORKER_CRASHED") {
                // Only a job whose retry was killed too may fail (--retries 1).
                assert_eq!(reply["attempts"], 2, "{reply}");
                crashed_twice += 1;
            } else {
                assert_eq!(reply["result"], expected, "a crashed compute is retried: {reply}");
            }
        }
    }
    assert!(crashed_twice <= 1, "two kills can fail at most one job twice");
    let stats = server.stats();
    assert_eq!(stats["workers"]["alive"], 2);
    assert!(stats["jobs"]["retried"].as_u64().unwrap() >= 1, "{stats}");
    assert_eq!(stats["jobs"]["in_flight"], 0);
    assert_eq!(server.request(json!({"id": "after", "cmd": "compute", "n": 10}))["result"], 8360);
}

#[test]
fn a_hung_job_times_out_and_its_worker_is_replaced_in_both_modes() {
    for mode in MODES {
        let server = TestServer::start(mode, 1, &["--allow-chaos", "--job-timeout", "300ms"]);
        let mut client = server.connect();
        let reply = client.request(json!({"id": "stuck", "cmd": "hang"}));
        assert_eq!(error_code(&reply), Some("TIMEOUT"), "{mode}: {reply}");
        assert!(reply["error"]["message"].as_str().unwrap().contains("--job-timeout"));
        // The slot was refilled: the next job runs.
        let reply = client.request(json!({"id": "next", "cmd": "compute", "n": 10}));
        assert_eq!(reply["result"], 8360, "{mode}: {reply}");
        let stats = server.stats();
        assert_eq!(stats["errors"]["TIMEOUT"], 1);
        assert_eq!(stats["worker_list"][0]["restarts"], 1, "{mode}: {stats}");
        // In thread mode the stuck thread cannot be killed, only written off.
        let abandoned = if mode == "threads" { 1 } else { 0 };
        assert_eq!(stats["workers"]["abandoned_threads"], abandoned, "{mode}: {stats}");
    }
}

/// Threads of a process, from `/proc` (the kernel's count, not the server's).
fn threads_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |tasks| tasks.count())
}

#[test]
fn a_written_off_thread_stops_a_compute_that_ran_past_the_job_timeout() {
    // n = 10^12 runs for about an hour: before the kernel checked between
    // chunks, its written-off thread went on computing for nobody (and a
    // forged huge n kept a host's core busy for good).
    let server = TestServer::start("threads", 1, &["--job-timeout", "500ms", "--max-n", "1000000000000"]);
    let mut client = server.connect();
    assert_eq!(client.request(json!({"id": "warm", "cmd": "ping"}))["pong"], true);
    let before = threads_of(server.pid());
    let reply = client.request(json!({"id": "long", "cmd": "compute", "n": 1_000_000_000_000u64}));
    assert_eq!(error_code(&reply), Some("TIMEOUT"), "{reply}");
    assert_eq!(server.stats()["workers"]["abandoned_threads"], 1);
    // The replacement thread has started; the written-off one must end, so
    // the process is back to as many threads as before the job.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while threads_of(server.pid()) > before {
        assert!(
            std::time::Instant::now() < deadline,
            "the written-off thread is still there: {} threads, {before} before the job",
            threads_of(server.pid())
        );
        thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(client.request(json!({"id": "next", "cmd": "compute", "n": 10}))["result"], 8360);
}

#[test]
fn a_panic_is_internal_in_thread_mode_and_a_crash_in_process_mode() {
    let threads = TestServer::start("threads", 1, &["--allow-chaos"]);
    let reply = threads.request(json!({"id": 1, "cmd": "panic"}));
    assert_eq!(error_code(&reply), Some("INTERNAL"), "{reply}");
    assert_eq!(threads.request(json!({"id": 2, "cmd": "compute", "n": 10}))["result"], 8360);
    assert_eq!(threads.stats()["worker_list"][0]["restarts"], 0, "the same thread goes on serving");

    let processes = TestServer::start("processes", 1, &["--allow-chaos"]);
    let reply = processes.request(json!({"id": 1, "cmd": "panic"}));
    assert_eq!(error_code(&reply), Some("WORKER_CRASHED"), "a panicking process dies: {reply}");
    assert!(reply.get("attempts").is_none(), "injected faults are not retried: {reply}");
    assert_eq!(processes.request(json!({"id": 2, "cmd": "compute", "n": 10}))["result"], 8360);
}

#[test]
fn crash_kills_one_worker_process_but_the_whole_server_in_thread_mode() {
    let processes = TestServer::start("processes", 2, &["--allow-chaos"]);
    let before = worker_pids(&processes.stats());
    let reply = processes.request(json!({"id": "boom", "cmd": "crash"}));
    assert_eq!(error_code(&reply), Some("WORKER_CRASHED"), "{reply}");
    // The crash reply can come before the pool marks the dead worker down,
    // so wait for the new pid, not only for two live workers.
    let after = processes
        .wait_for_stats("the replacement", |s| s["workers"]["alive"] == 2 && worker_pids(s) != before);
    assert_ne!(worker_pids(&after), before, "one worker was replaced");
    assert_eq!(processes.request(json!({"id": 2, "cmd": "compute", "n": 10}))["result"], 8360);

    // The lesson of the original project: a thread that crashes takes its
    // whole process with it.
    let mut threads = TestServer::start("threads", 2, &["--allow-chaos"]);
    let mut client = threads.connect();
    client.send(&json!({"id": "boom", "cmd": "crash"}));
    assert!(client.try_recv().is_none(), "the connection dies with the server");
    let status = threads.wait_exit();
    assert!(!status.success(), "the server aborted: {status}");
}

#[test]
fn the_restart_limit_stops_a_crash_loop_and_health_says_so() {
    let server = TestServer::start(
        "processes",
        1,
        &["--allow-chaos", "--retries", "0", "--max-restarts", "2", "--restart-window", "60s"],
    );
    for i in 0..3 {
        server.wait_for_stats("a live worker", |s| {
            s["workers"]["alive"] == 1 || s["workers"]["throttled"] == 1
        });
        let reply = server.request(json!({"id": i, "cmd": "crash"}));
        assert!(reply["error"].is_object(), "{reply}");
    }
    // Two replacements were allowed; the third must wait for the window.
    let stats = server.wait_for_stats("the slot to be throttled", |s| s["workers"]["throttled"] == 1);
    assert_eq!(stats["workers"]["alive"], 0);
    assert_eq!(stats["worker_list"][0]["restarts"], 2);
    let health = server.request(json!({"id": "h", "cmd": "health"}))["result"].clone();
    assert_eq!(health["status"], "down");
    assert_eq!(health["restarts_throttled"], true);
    // Work is refused at once, with a reason, rather than left waiting.
    let reply = server.request(json!({"id": "w", "cmd": "compute", "n": 10}));
    assert_eq!(error_code(&reply), Some("BUSY"), "{reply}");
    assert!(reply["error"]["message"].as_str().unwrap().contains("--max-restarts"));
}

#[test]
fn chaos_sleep_answers_and_chaos_needs_the_flag() {
    let server = TestServer::start("threads", 1, &["--allow-chaos"]);
    assert_eq!(server.request(json!({"id": 1, "cmd": "sleep", "ms": 20}))["result"], json!({"slept_ms": 20}));
    let plain = TestServer::start("threads", 1, &[]);
    for cmd in ["crash", "hang", "panic"] {
        let reply = plain.request(json!({"id": 1, "cmd": cmd}));
        assert_eq!(error_code(&reply), Some("UNKNOWN_COMMAND"), "{cmd}: {reply}");
    }
}

#[test]
fn a_hanging_worker_dies_with_a_killed_server() {
    let server = TestServer::start("processes", 1, &["--allow-chaos"]);
    let pids = worker_pids(&server.stats());
    let mut client = server.connect();
    client.send(&json!({"id": 1, "cmd": "hang"}));
    server.wait_for_stats("the hang to start", |s| s["worker_list"][0]["state"] == "busy");
    // The worker is asleep inside a job, so it cannot notice its channel
    // closing; the kernel's parent-death signal must take it down.
    send_signal(server.pid(), libc::SIGKILL);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while pids.iter().any(|&p| process_is_running(p)) {
        assert!(std::time::Instant::now() < deadline, "a hung worker outlived its server: {pids:?}");
        thread::sleep(std::time::Duration::from_millis(20));
    }
}
