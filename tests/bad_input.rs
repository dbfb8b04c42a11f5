//! A table of malformed inputs over a raw socket: each gets its documented
//! error (or, for a frame that cannot be delimited, a close), and the server
//! keeps serving everyone else throughout.

mod common;

use common::{error_code, TestServer, MODES};
use serde_json::json;

/// What the server must do with a malformed input.
enum Expect {
    /// Reply with this error code and keep the connection usable.
    Error(&'static str),
    /// Reply with this error code, then close.
    ErrorThenClose(&'static str),
    /// Nothing to reply to (the client hung up mid-frame); just survive.
    Survive,
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(payload);
    bytes
}

#[test]
fn every_malformed_input_gets_the_documented_answer_and_nobody_else_notices() {
    let nested = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
    let huge_string = format!(r#"{{"id":1,"cmd":"ping","s":"{}"}}"#, "x".repeat(20 * 1024 * 1024));
    let cases: Vec<(&str, Vec<u8>, bool, Expect)> = vec![
        ("zero length", vec![0, 0, 0, 0], false, Expect::Error("BAD_FRAME")),
        ("length 0xFFFFFFFF", vec![0xFF; 4], false, Expect::ErrorThenClose("FRAME_TOO_LARGE")),
        ("truncated header, then close", vec![0, 0], true, Expect::Survive),
        ("truncated body, then close", vec![0, 0, 0, 50, b'{', b'"'], true, Expect::Survive),
        ("invalid UTF-8", frame(b"{\"id\":1,\"cmd\":\"\xc3\x28\"}"), false, Expect::Error("BAD_JSON")),
        ("not JSON", frame(b"hello"), false, Expect::Error("BAD_JSON")),
        ("a JSON array", frame(b"[1,2,3]"), false, Expect::Error("BAD_REQUEST")),
        ("a JSON number", frame(b"42"), false, Expect::Error("BAD_REQUEST")),
        ("missing cmd", frame(br#"{"id":1}"#), false, Expect::Error("BAD_REQUEST")),
        ("cmd not a string", frame(br#"{"id":1,"cmd":["ping"]}"#), false, Expect::Error("BAD_REQUEST")),
        ("missing id", frame(br#"{"cmd":"ping"}"#), false, Expect::Error("BAD_REQUEST")),
        ("id an object", frame(br#"{"id":{"a":1},"cmd":"ping"}"#), false, Expect::Error("BAD_REQUEST")),
        ("n a string", frame(br#"{"id":1,"cmd":"compute","n":"5"}"#), false, Expect::Error("BAD_REQUEST")),
        ("negative n", frame(br#"{"id":1,"cmd":"compute","n":-5}"#), false, Expect::Error("BAD_REQUEST")),
        ("huge n", frame(br#"{"id":1,"cmd":"compute","n":1e300}"#), false, Expect::Error("BAD_REQUEST")),
        ("unknown command", frame(br#"{"id":1,"cmd":"format c:"}"#), false, Expect::Error("UNKNOWN_COMMAND")),
        ("deeply nested request", frame(nested.as_bytes()), false, Expect::Error("BAD_REQUEST")),
        (
            "a 20 MB JSON string",
            frame(huge_string.as_bytes()),
            false,
            Expect::ErrorThenClose("FRAME_TOO_LARGE"),
        ),
    ];
    for mode in MODES {
        let server = TestServer::start(mode, 2, &[]);
        // A well-behaved client that must not notice anything.
        let mut bystander = server.connect();
        for (name, bytes, hang_up, expect) in &cases {
            let mut client = server.connect();
            let writer = client.send_raw_in_background(bytes.clone());
            if *hang_up {
                writer.join().unwrap();
                client.close();
            } else {
                let reply = client.try_recv().unwrap_or_else(|| panic!("{mode} {name}: no reply"));
                match expect {
                    Expect::Error(code) => {
                        assert_eq!(error_code(&reply), Some(*code), "{mode} {name}: {reply}");
                        let ok = client.request(json!({"id": "still-ok", "cmd": "ping"}));
                        assert_eq!(ok["pong"], true, "{mode} {name}: the connection stays usable");
                    }
                    Expect::ErrorThenClose(code) => {
                        assert_eq!(error_code(&reply), Some(*code), "{mode} {name}: {reply}");
                        assert!(client.try_recv().is_none(), "{mode} {name}: closed after the error");
                    }
                    Expect::Survive => unreachable!("hang-up cases are closed above"),
                }
            }
            let reply = bystander.request(json!({"id": name, "cmd": "compute", "n": 10}));
            assert_eq!(reply["result"], 8360, "{mode}: bystander after {name}");
        }
        let stats = server.stats();
        assert_eq!(stats["workers"]["alive"], 2, "{mode}: no worker was hurt");
    }
}

#[test]
fn null_or_a_wrong_type_in_any_field_is_bad_request_naming_the_field_in_both_dialects() {
    let server = TestServer::start("threads", 1, &["--allow-chaos"]);
    // (field, request) in ThreadCenter's dialect: each must be refused with
    // BAD_REQUEST and a message that names the field.
    let threadcenter = [
        ("n", json!({"id": 1, "cmd": "compute", "n": null})),
        ("n", json!({"id": 1, "cmd": "compute", "n": true})),
        ("n", json!({"id": 1, "cmd": "compute", "n": [5]})),
        ("cmd", json!({"id": 1, "cmd": null})),
        ("id", json!({"id": null, "cmd": "ping"})),
        ("timing", json!({"id": 1, "cmd": "ping", "timing": null})),
        ("timing", json!({"id": 1, "cmd": "ping", "timing": "yes"})),
        ("token", json!({"id": 1, "cmd": "auth", "token": null})),
        ("ms", json!({"id": 1, "cmd": "sleep", "ms": null})),
        ("image_b64", json!({"id": 1, "cmd": "predict", "image_b64": null})),
        ("image_b64", json!({"id": 1, "cmd": "predict", "image_b64": 12})),
        ("filename", json!({"id": 1, "cmd": "predict", "image_b64": "aGk=", "filename": null})),
        ("filename", json!({"id": 1, "cmd": "predict", "image_b64": "aGk=", "filename": {"a": 1}})),
        ("images", json!({"id": 1, "cmd": "predict_batch", "images": null})),
        ("images", json!({"id": 1, "cmd": "predict_batch", "images": "a.png"})),
        ("model_path", json!({"id": 1, "cmd": "load_model", "model_path": null})),
        ("wait_ms", json!({"id": 1, "cmd": "mutex_acquire", "client_id": "a", "wait_ms": null})),
        ("client_id", json!({"id": 1, "cmd": "mutex_acquire", "client_id": [1]})),
        ("token", json!({"id": 1, "cmd": "mutex_release", "client_id": "a", "token": null})),
    ];
    for (field, request) in &threadcenter {
        let reply = server.request(request.clone());
        assert_eq!(error_code(&reply), Some("BAD_REQUEST"), "{request}: {reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("\"{field}\"")), "{request}: the message names {field}: {message}");
    }
    // The same fields in IdentyFire's `params`: {"success": false, "error"}.
    let identyfire = [
        ("method", json!({"method": null})),
        ("params", json!({"method": "predict_image", "params": null})),
        ("image_b64", json!({"method": "predict_image", "params": {"client_id": "a", "image_b64": null}})),
        (
            "filename",
            json!({"method": "predict_image", "params": {"client_id": "a", "image_b64": "aGk=", "filename": 3}}),
        ),
        ("images", json!({"method": "predict_batch", "params": {"client_id": "a", "images": null}})),
        ("model_path", json!({"method": "load_model", "params": {"model_path": null}})),
        ("wait_ms", json!({"method": "mutex_acquire", "params": {"client_id": "a", "wait_ms": "soon"}})),
    ];
    for (field, request) in &identyfire {
        let reply = server.request(request.clone());
        assert_eq!(reply["success"], false, "{request}: {reply}");
        let message = reply["error"].as_str().unwrap();
        assert!(message.contains(&format!("\"{field}\"")), "{request}: the message names {field}: {message}");
    }
    // An entry of a batch with a wrong-typed field is refused on its own.
    let reply = server
        .request(json!({"id": 2, "cmd": "predict_batch", "images": [{"filename": 1, "image_b64": "aGk="}]}));
    let entry = &reply["result"]["errors"][0];
    assert!(entry["error"].as_str().is_some_and(|e| e.contains("\"filename\"")), "{reply}");
    // IdentyFire's own reply for a null client_id is kept.
    let reply = server.request(json!({"method": "mutex_acquire", "params": {"client_id": null}}));
    assert_eq!(reply, json!({"success": false, "error": "Missing client_id"}));
}
