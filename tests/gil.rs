//! `--mode threads --gil`: worker threads share one CPython-style global
//! lock while they compute. Results must not change; threads must take turns.
//! (Mutual exclusion itself is checked by the unit test in src/gil.rs; no
//! timing is asserted here.)

mod common;

use std::thread;

use common::{reference_compute, TestServer};
use serde_json::json;

#[test]
fn threads_with_a_gil_compute_the_same_results_taking_turns() {
    let server = TestServer::start("threads", 4, &["--gil", "--switch-interval", "1ms"]);
    let clients: Vec<_> = (0..4u64)
        .map(|c| {
            let mut client = server.connect();
            thread::spawn(move || {
                for r in 0..3u64 {
                    let n = 1_000_000 + c * 1000 + r;
                    let reply = client.request(json!({"id": r, "cmd": "compute", "n": n}));
                    assert_eq!(reply["result"], reference_compute(n), "{reply}");
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    let stats = server.stats();
    assert_eq!(stats["gil"]["switch_interval_ms"], 1.0);
    assert!(
        stats["gil"]["switches"].as_u64().unwrap() >= 12,
        "every job takes the lock at least once: {stats}"
    );
    let plain = TestServer::start("threads", 1, &[]);
    assert!(plain.stats()["gil"].is_null(), "no GIL unless asked for");
}

#[test]
fn a_gil_is_refused_for_worker_processes() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tc-server"))
        .args(["--port", "0", "--mode", "processes", "--gil"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--gil"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
