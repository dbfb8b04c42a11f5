//! Many requests at once: pipelining on one connection and many concurrent
//! connections, in both pool modes. Every id must be answered exactly once.

mod common;

use std::collections::HashMap;
use std::thread;

use common::{reference_compute as expected, TestServer, MODES};
use serde_json::{json, Value};

#[test]
fn a_thousand_pipelined_requests_on_one_connection_are_all_answered_once() {
    for mode in MODES {
        let server = TestServer::start(mode, 2, &[]);
        let mut client = server.connect();
        // Send all 1000 before reading anything. The server's socket buffers
        // and per-connection in-flight limit push back if needed.
        let sender = {
            let mut writer = client.try_clone_for_writing();
            thread::spawn(move || {
                for i in 0..1000u64 {
                    let n = i % 300;
                    writer.send(&json!({"id": format!("p{i}"), "cmd": "compute", "n": n}));
                }
                writer
            })
        };
        let mut answered: HashMap<String, Value> = HashMap::new();
        for _ in 0..1000 {
            let reply = client.recv();
            let id = reply["id"].as_str().expect("string id").to_string();
            assert!(answered.insert(id.clone(), reply).is_none(), "{mode}: {id} answered twice");
        }
        sender.join().unwrap();
        for i in 0..1000u64 {
            let reply = &answered[&format!("p{i}")];
            assert_eq!(reply["result"], expected(i % 300), "{mode}: p{i}");
        }
        assert_eq!(server.stats()["jobs"]["in_flight"], 0);
    }
}

#[test]
fn thirty_two_connections_of_fifty_requests_each_get_every_reply_once() {
    for mode in MODES {
        let server = TestServer::start(mode, 2, &[]);
        let clients: Vec<_> = (0..32u64)
            .map(|c| {
                let mut client = server.connect();
                // Like the original client: one request at a time per
                // connection, all 32 connections at once.
                thread::spawn(move || {
                    let mut seen = HashMap::new();
                    for r in 0..50u64 {
                        let reply = client.request(json!({"id": c * 1000 + r, "cmd": "compute", "n": r}));
                        let id = reply["id"].as_u64().expect("numeric id");
                        assert_eq!(id / 1000, c, "a reply for another connection arrived here");
                        assert_eq!(reply["result"], expected(id % 1000), "id {id}");
                        assert!(seen.insert(id, ()).is_none(), "id {id} answered twice");
                    }
                    seen.len()
                })
            })
            .collect();
        let total: usize = clients.into_iter().map(|c| c.join().expect("client thread")).sum();
        assert_eq!(total, 32 * 50, "{mode}");
        let stats = server.stats();
        assert_eq!(stats["requests"]["compute"], 32 * 50, "{mode}");
        assert_eq!(stats["jobs"]["completed"], 32 * 50, "{mode}");
        assert_eq!(stats["connections"]["total"], 33, "{mode}: 32 clients + this stats call");
    }
}

#[test]
fn a_full_queue_answers_busy_at_once_and_still_answers_every_id() {
    for mode in MODES {
        // One worker and room for one waiting job: a burst of slow jobs must
        // overflow, and the overflow is answered with BUSY, not buffered.
        let server = TestServer::start(mode, 1, &["--queue-capacity", "1"]);
        let mut client = server.connect();
        for i in 0..50u64 {
            client.send(&json!({"id": i, "cmd": "compute", "n": 2_000_000}));
        }
        let mut busy = 0;
        let mut answered = HashMap::new();
        for _ in 0..50 {
            let reply = client.recv();
            let id = reply["id"].as_u64().unwrap();
            assert!(answered.insert(id, ()).is_none(), "{mode}: id {id} answered twice");
            match common::error_code(&reply) {
                Some("BUSY") => busy += 1,
                None => assert_eq!(reply["result"], expected(2_000_000), "{mode}"),
                Some(other) => panic!("{mode}: unexpected error {other}: {reply}"),
            }
        }
        assert!(busy > 0, "{mode}: a burst of 50 slow jobs must overflow a queue of 1");
        let stats = server.stats();
        assert_eq!(stats["errors"]["BUSY"], busy, "{mode}");
        assert_eq!(stats["jobs"]["queue_capacity"], 1);
        assert_eq!(stats["jobs"]["in_flight"], 0);
    }
}
