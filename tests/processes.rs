//! Worker processes: they exist, they are the server's children, a dead one
//! is replaced, and none outlives the server.

mod common;

use common::{error_code, process_is_running, send_signal, wait_until_gone, worker_pids, TestServer};
use serde_json::json;

/// Parent pid of a process, from /proc.
fn parent_pid(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("process exists");
    let (_, rest) = stat.rsplit_once(')').unwrap();
    rest.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn worker_processes_are_children_of_the_server_and_gone_after_it_stops() {
    let mut server = TestServer::start("processes", 3, &[]);
    let pids = worker_pids(&server.stats());
    assert_eq!(pids.len(), 3);
    for &pid in &pids {
        assert!(process_is_running(pid), "worker {pid} is alive");
        assert_eq!(parent_pid(pid), server.pid(), "worker {pid} was spawned by the server");
    }
    assert_eq!(server.request(json!({"id": 1, "cmd": "compute", "n": 1000}))["result"], 933_214_789);

    let status = server.terminate();
    assert!(status.success(), "SIGTERM is a clean stop: {status}");
    wait_until_gone(&pids);
}

#[test]
fn workers_exit_by_themselves_when_the_server_is_killed() {
    let server = TestServer::start("processes", 2, &[]);
    let pids = worker_pids(&server.stats());
    // SIGKILL gives the server no chance to clean up; the workers notice
    // their job channel closing and leave.
    send_signal(server.pid(), libc::SIGKILL);
    wait_until_gone(&pids);
}

#[test]
fn a_worker_killed_while_idle_is_replaced() {
    let server = TestServer::start("processes", 2, &[]);
    let before = worker_pids(&server.stats());
    send_signal(before[0], libc::SIGKILL);

    let stats = server.wait_for_stats("worker 0 to be replaced", |s| {
        s["worker_list"][0]["restarts"] == 1 && s["workers"]["alive"] == 2
    });
    let after = worker_pids(&stats);
    assert_ne!(after[0], before[0], "a new process took the slot");
    assert_eq!(after[1], before[1], "the other worker was not touched");
    assert!(process_is_running(after[0]));
    assert_eq!(stats["worker_list"][1]["restarts"], 0);
    for i in 0..10 {
        assert_eq!(server.request(json!({"id": i, "cmd": "compute", "n": 10}))["result"], 8360);
    }
}

#[test]
fn a_worker_killed_mid_job_answers_that_job_with_worker_crashed() {
    // No retries: the crash is reported to the client.
    let server = TestServer::start("processes", 1, &["--retries", "0"]);
    let mut client = server.connect();
    // The largest job allowed: long enough to be caught running.
    client.send(&json!({"id": "victim", "cmd": "compute", "n": 100_000_000}));
    let stats = server.wait_for_stats("the job to start", |s| s["worker_list"][0]["state"] == "busy");
    send_signal(worker_pids(&stats)[0], libc::SIGKILL);

    let reply = client.recv();
    assert_eq!(reply["id"], "victim");
    assert_eq!(error_code(&reply), Some("WORKER_CRASHED"), "{reply}");
    // The slot is refilled and the same connection keeps working.
    let reply = client.request(json!({"id": "next", "cmd": "compute", "n": 10}));
    assert_eq!(reply["result"], 8360, "{reply}");
    let stats = server.stats();
    assert_eq!(stats["errors"]["WORKER_CRASHED"], 1);
    assert_eq!(stats["worker_list"][0]["restarts"], 1);
}

#[test]
fn a_compute_whose_worker_is_killed_is_retried_on_another_worker() {
    let server = TestServer::start("processes", 2, &[]);
    let mut client = server.connect();
    client.send(&json!({"id": "retry-me", "cmd": "compute", "n": 100_000_000}));
    let stats = server.wait_for_stats("the job to start", |s| {
        s["worker_list"].as_array().unwrap().iter().any(|w| w["state"] == "busy")
    });
    let busy = stats["worker_list"].as_array().unwrap().iter().find(|w| w["state"] == "busy").unwrap();
    send_signal(busy["pid"].as_u64().unwrap() as u32, libc::SIGKILL);

    let reply = client.recv();
    assert_eq!(reply["id"], "retry-me");
    assert_eq!(reply["result"], common::reference_compute(100_000_000), "{reply}");
    assert_eq!(reply["attempts"], 2, "the reply says the job was tried twice: {reply}");
    let stats = server.stats();
    assert_eq!(stats["jobs"]["retried"], 1);
    assert_eq!(stats["errors"]["WORKER_CRASHED"], 0);
}

#[test]
fn stats_show_where_jobs_time_went_hop_by_hop_with_the_crossings_only_in_process_mode() {
    // A job's hops, by name, with how many jobs each timed.
    let hops = |mode: &str| {
        let server = TestServer::start(mode, 2, &[]);
        let mut client = server.connect();
        for id in 0..20 {
            assert!(client.request(json!({"id": id, "cmd": "compute", "n": 1000}))["result"].is_number());
        }
        // A job's last hop (the reply) is recorded once its reply is
        // written, so the client may read it a moment before `stats` counts
        // it: ask until every hop has all 20, for at most 5 s.
        let all_counted = |stats: &serde_json::Value| {
            stats["hops"].as_array().is_some_and(|hops| hops.iter().all(|hop| hop["count"] == 20))
        };
        let mut stats = server.stats();
        for _ in 0..100 {
            if all_counted(&stats) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            stats = server.stats();
        }
        let hops = stats["hops"].as_array().unwrap_or_else(|| panic!("stats has hops: {stats}")).clone();
        for hop in &hops {
            let (p50, p99) = (hop["p50_us"].as_f64().unwrap(), hop["p99_us"].as_f64().unwrap());
            assert!(p50 > 0.0 && p50 <= p99, "a median within the histogram: {hop}");
        }
        hops.iter()
            .map(|h| (h["hop"].as_str().unwrap().to_string(), h["count"].as_u64().unwrap()))
            .collect::<Vec<_>>()
    };
    let threads = hops("threads");
    let names: Vec<&str> = threads.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["queue", "run", "reply"], "{threads:?}");
    assert!(threads.iter().all(|(_, count)| *count == 20), "every job timed once per hop: {threads:?}");

    let processes = hops("processes");
    let names: Vec<&str> = processes.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        ["queue", "to_worker", "behind_in_worker", "run", "held_in_worker", "to_driver", "reply"],
        "{processes:?}"
    );
    assert!(processes.iter().all(|(_, count)| *count == 20), "every job timed once per hop: {processes:?}");
}
