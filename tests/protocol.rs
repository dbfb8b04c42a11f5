//! The wire protocol against the real server, in both pool modes.

mod common;

use common::{error_code, reference_compute, TestServer, MODES};
use serde_json::json;

#[test]
fn ping_is_answered_with_pong() {
    for mode in MODES {
        let server = TestServer::start(mode, 1, &[]);
        let reply = server.request(json!({"id": 1, "cmd": "ping"}));
        assert_eq!(reply, json!({"id": 1, "ok": true, "pong": true}), "{mode}");
    }
}

#[test]
fn compute_returns_the_original_reference_values() {
    let reference = [(0, 48), (1, 48), (2, 113), (10, 8360), (1000, 933_214_789), (500_000, 869_502_129)];
    for mode in MODES {
        let server = TestServer::start(mode, 2, &[]);
        let mut client = server.connect();
        for (n, expected) in reference {
            let reply = client.request(json!({"id": n, "cmd": "compute", "n": n}));
            assert_eq!(reply, json!({"id": n, "result": expected}), "{mode} n={n}");
        }
        // A missing n means the original's default of 1,000,000.
        let reply = client.request(json!({"id": "default", "cmd": "compute"}));
        assert_eq!(reply["result"], 734_284_044, "{mode}");
    }
}

#[test]
fn ids_are_echoed_exactly_as_sent() {
    let server = TestServer::start("threads", 1, &[]);
    let mut client = server.connect();
    for id in [r#""abc""#, "1.50", "123456789012345678901234567890", "-7", r#""ação""#] {
        client.send_payload(format!(r#"{{"id":{id},"cmd":"ping"}}"#).as_bytes());
        let raw = client.try_recv_raw().expect("a reply");
        assert_eq!(raw, format!(r#"{{"id":{id},"ok":true,"pong":true}}"#));
    }
}

#[test]
fn timing_splits_latency_into_queue_and_service() {
    for mode in MODES {
        let server = TestServer::start(mode, 2, &[]);
        let reply = server.request(json!({"id": 1, "cmd": "compute", "n": 200_000, "timing": true}));
        assert_eq!(reply["result"], json!(reference_compute(200_000)), "{mode}");
        let worker = reply["worker"].as_u64().expect("worker");
        assert!(worker < 2, "{mode}: worker {worker}");
        assert!(reply["queue_us"].is_u64(), "{mode}: {reply}");
        assert!(reply["service_us"].as_u64().unwrap() > 0, "{mode}: a 200,000-step job takes time");
        let plain = server.request(json!({"id": 2, "cmd": "compute", "n": 5}));
        assert!(plain.get("worker").is_none(), "timing fields only when asked for");
    }
}

#[test]
fn stats_and_health_describe_the_farm() {
    for mode in MODES {
        let server = TestServer::start(mode, 2, &[]);
        let mut client = server.connect();
        client.request(json!({"id": 1, "cmd": "compute", "n": 10, "timing": true}));
        client.request(json!({"id": 2, "cmd": "nope"}));
        client.request(json!({"id": 3, "cmd": "ping"}));

        let health = client.request(json!({"id": "h", "cmd": "health"}));
        assert_eq!(
            health["result"],
            json!({"status": "ok", "mode": mode, "workers_alive": 2, "workers_configured": 2, "restarts_throttled": false})
        );

        let stats = client.request(json!({"id": "s", "cmd": "stats"}))["result"].clone();
        assert_eq!(stats["mode"], mode);
        assert_eq!(
            stats["workers"],
            json!({"configured": 2, "alive": 2, "throttled": 0, "abandoned_threads": 0})
        );

        let workers = stats["worker_list"].as_array().unwrap();
        assert_eq!(workers.len(), 2);
        let jobs_done: u64 = workers.iter().map(|w| w["jobs_done"].as_u64().unwrap()).sum();
        assert_eq!(jobs_done, 1, "{mode}: {stats}");
        for w in workers {
            assert_eq!(w["restarts"], 0);
            assert!(matches!(w["state"].as_str(), Some("idle" | "busy")), "{w}");
            assert_eq!(w["pid"].is_u64(), mode == "processes", "pids only in process mode: {w}");
        }
        assert_eq!(stats["requests"]["compute"], 1);
        assert_eq!(stats["requests"]["ping"], 1);
        assert_eq!(stats["requests"]["health"], 1);
        assert_eq!(stats["requests"]["stats"], 1);
        assert_eq!(stats["errors"]["UNKNOWN_COMMAND"], 1);
        assert_eq!(stats["errors"]["BAD_JSON"], 0);
        assert_eq!(stats["connections"]["open"], 1);
        assert_eq!(stats["jobs"]["in_flight"], 0);
        assert_eq!(stats["jobs"]["queued"], 0);
        assert_eq!(stats["jobs"]["completed"], 1);
        assert_eq!(stats["latency_us"]["service"]["count"], 1);
        for key in ["p50", "p99", "max"] {
            assert!(stats["latency_us"]["queue_wait"][key].is_u64(), "{key}: {stats}");
            assert!(stats["latency_us"]["service"][key].is_u64(), "{key}: {stats}");
        }
        assert!(stats["uptime_s"].as_f64().unwrap() >= 0.0);
        assert!(stats["instance"].as_str().unwrap().len() == 36, "a UUID");
    }
}

#[test]
fn bad_requests_get_clear_errors_and_the_connection_stays_usable() {
    for mode in MODES {
        let server = TestServer::start(mode, 1, &["--max-n", "1000"]);
        let mut client = server.connect();
        let cases: [(&[u8], &str); 9] = [
            (b"this is not json", "BAD_JSON"),
            (b"\xff\xfe{}", "BAD_JSON"),
            (b"[1,2,3]", "BAD_REQUEST"),
            (br#"{"cmd":"ping"}"#, "BAD_REQUEST"),
            (br#"{"id":1,"cmd":42}"#, "BAD_REQUEST"),
            (br#"{"id":1,"cmd":"compute","n":-1}"#, "BAD_REQUEST"),
            (br#"{"id":1,"cmd":"compute","n":1001}"#, "BAD_REQUEST"),
            (br#"{"id":1,"cmd":"compute","n":"12"}"#, "BAD_REQUEST"),
            (br#"{"id":1,"cmd":"fly"}"#, "UNKNOWN_COMMAND"),
        ];
        for (payload, code) in cases {
            client.send_payload(payload);
            let reply = client.recv();
            assert_eq!(
                error_code(&reply),
                Some(code),
                "{mode} {}: {reply}",
                String::from_utf8_lossy(payload)
            );
            assert!(!reply["error"]["message"].as_str().unwrap().is_empty());
        }
        // The id is echoed when it could be read, null otherwise.
        client.send_payload(br#"{"id":"x","cmd":"compute","n":5000}"#);
        let reply = client.recv();
        assert_eq!(reply["id"], "x");
        assert!(reply["error"]["message"].as_str().unwrap().contains("1000"), "names the limit: {reply}");
        client.send_payload(b"nope");
        assert_eq!(client.recv()["id"], serde_json::Value::Null);

        // A zero-length frame is BAD_FRAME, and the next frame is still read.
        client.send_raw(&[0, 0, 0, 0]);
        assert_eq!(error_code(&client.recv()), Some("BAD_FRAME"));
        assert_eq!(client.request(json!({"id": 9, "cmd": "compute", "n": 10}))["result"], 8360);
    }
}

#[test]
fn an_oversized_frame_is_refused_then_the_connection_closes() {
    for mode in MODES {
        let server = TestServer::start(mode, 1, &["--max-frame", "1KiB"]);
        let mut client = server.connect();
        // 1024 bytes is allowed...
        let padding = "x".repeat(1024 - r#"{"id":1,"cmd":"ping","pad":""}"#.len());
        let at_limit = format!(r#"{{"id":1,"cmd":"ping","pad":"{padding}"}}"#);
        assert_eq!(at_limit.len(), 1024);
        client.send_payload(at_limit.as_bytes());
        assert_eq!(client.recv()["pong"], true);
        // ...1025 is not. Only the header is sent: the server must not wait
        // for (or allocate) the body.
        client.send_raw(&1025u32.to_be_bytes());
        let reply = client.recv();
        assert_eq!(error_code(&reply), Some("FRAME_TOO_LARGE"), "{reply}");
        assert!(client.try_recv().is_none(), "{mode}: the server closes after FRAME_TOO_LARGE");
        // 0xFFFFFFFF on another connection: same answer, nothing allocated.
        let mut other = server.connect();
        other.send_raw(&[0xFF; 4]);
        assert_eq!(error_code(&other.recv()), Some("FRAME_TOO_LARGE"));
        // The server itself is fine.
        assert_eq!(server.request(json!({"id": 2, "cmd": "ping"}))["pong"], true);
    }
}
