//! One connection's trouble stays on that connection.

mod common;

use std::thread;

use common::{error_code, TestServer, MODES};
use serde_json::json;

#[test]
fn bad_frames_on_one_connection_do_not_disturb_another() {
    for mode in MODES {
        let server = TestServer::start(mode, 2, &["--max-frame", "4KiB"]);
        // A well-behaved client pipelines 200 requests...
        let mut good = server.connect();
        let mut writer = good.try_clone_for_writing();
        let sender = thread::spawn(move || {
            for i in 0..200u64 {
                writer.send(&json!({"id": i, "cmd": "compute", "n": 10}));
            }
        });
        // ...while others misbehave in every way at the same time.
        let mut garbage = server.connect();
        garbage.send_payload(b"\x00\x01garbage");
        garbage.send_raw(&[0, 0, 0, 0]);
        let mut oversized = server.connect();
        oversized.send_raw(&[0x7F, 0xFF, 0xFF, 0xFF]);
        let mut half_header = server.connect();
        half_header.send_raw(&[0, 0]);
        half_header.close();
        let mut half_body = server.connect();
        half_body.send_raw(&[0, 0, 0, 100, b'{']);
        half_body.close();

        for i in 0..200u64 {
            let reply = good.recv();
            assert_eq!(reply["result"], 8360, "{mode}: reply {i}: {reply}");
        }
        sender.join().unwrap();
        assert_eq!(error_code(&garbage.recv()), Some("BAD_JSON"));
        assert_eq!(error_code(&garbage.recv()), Some("BAD_FRAME"));
        assert_eq!(error_code(&oversized.recv()), Some("FRAME_TOO_LARGE"));
        assert!(oversized.try_recv().is_none());
        // The misbehaving connections that stay open still work.
        assert_eq!(garbage.request(json!({"id": "ok", "cmd": "ping"}))["pong"], true);
    }
}

#[test]
fn a_client_that_leaves_with_jobs_in_flight_leaves_nothing_behind() {
    for mode in MODES {
        // One worker, so most of the 20 jobs are still queued when the client
        // hangs up; each takes a noticeable time in a debug build.
        let server = TestServer::start(mode, 1, &[]);
        let mut client = server.connect();
        for i in 0..20u64 {
            client.send(&json!({"id": i, "cmd": "compute", "n": 5_000_000}));
        }
        client.close();

        // Each stats poll uses a fresh connection, closed asynchronously, so
        // "only the polling connection is open" is part of what we wait for.
        let stats = server.wait_for_stats("every job to be run or cancelled", |s| {
            s["jobs"]["completed"].as_u64().unwrap() + s["jobs"]["cancelled"].as_u64().unwrap() == 20
                && s["connections"]["open"] == 1
        });
        assert_eq!(stats["jobs"]["in_flight"], 0, "{mode}: the map keeps nothing for a gone client");
        assert_eq!(stats["jobs"]["queued"], 0, "{mode}");
        assert!(
            stats["jobs"]["cancelled"].as_u64().unwrap() >= 1,
            "{mode}: queued jobs of a gone client are skipped, not run: {stats}"
        );
        // And the farm carries on.
        assert_eq!(server.request(json!({"id": 1, "cmd": "compute", "n": 10}))["result"], 8360);
    }
}
