//! The binaries' command lines: flags, environment variables, exit codes and
//! error messages, and `tc-client call`.

mod common;

use std::net::TcpListener;
use std::process::{Command, Output};

use common::TestServer;
use serde_json::Value;

fn tc_client(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tc-client")).args(args).output().expect("tc-client runs")
}

fn tc_server(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tc-server")).args(args).output().expect("tc-server runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn call_prints_the_reply_and_exits_zero() {
    let server = TestServer::start("threads", 1, &[]);
    let port = server.addr.port().to_string();
    let out = tc_client(&["call", "--port", &port, r#"{"cmd":"compute","n":10}"#]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let reply: Value = serde_json::from_slice(&out.stdout).expect("one JSON reply on stdout");
    assert_eq!(reply, serde_json::json!({"id": 1, "result": 8360}), "an id is added when missing");

    let out = tc_client(&["call", "--port", &port, r#"{"id":"mine","cmd":"stats"}"#]);
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["id"], "mine");
    assert_eq!(reply["result"]["mode"], "threads");
}

#[test]
fn call_exits_one_on_an_error_reply_or_no_server_and_two_on_bad_input() {
    let server = TestServer::start("threads", 1, &[]);
    let port = server.addr.port().to_string();
    let out = tc_client(&["call", "--port", &port, r#"{"cmd":"warp"}"#]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("UNKNOWN_COMMAND"));

    let out = tc_client(&["call", "--port", &port, "{not json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not valid JSON"), "{}", text(&out.stderr));

    // A port nobody listens on: bind one, note it, free it.
    let free = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let out = tc_client(&["call", "--port", &free, "--timeout", "2", r#"{"cmd":"ping"}"#]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&format!("127.0.0.1:{free}")), "names host and port: {stderr}");
    assert!(stderr.contains(&format!("tc-server --port {free}")), "suggests starting one: {stderr}");
    assert!(!stderr.contains("--embedded"), "call has no --embedded, so no such hint: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one clear line: {stderr}");
}

#[test]
fn only_the_benchmark_suggests_embedded_when_no_server_listens() {
    let free = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let out = tc_client(&["--port", &free, "-n", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("or add --embedded to measure a farm started for the run"), "{stderr}");
    // The flag the hint names works where the hint is given.
    assert!(tc_client(&["--embedded", "--mode", "threads", "--workers", "1", "-n", "1", "-c", "1"])
        .status
        .success());

    let shell = common::run_client_with_stdin(&["shell", "--port", &free], Some("ping\n"));
    let said = text(&shell.stdout);
    assert!(
        said.contains("Connection refused") && said.contains(&format!("tc-server --port {free}")),
        "{said}"
    );
    assert!(!said.contains("--embedded"), "the shell has no --embedded: {said}");
}

#[test]
fn server_help_documents_every_flag() {
    let out = tc_server(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for flag in [
        "--host",
        "--port",
        "--mode",
        "--workers",
        "--max-n",
        "--max-frame",
        "--queue-capacity",
        "--max-inflight",
        "--spawn-timeout",
        "--log-level",
        "THREADCENTER_PORT",
    ] {
        assert!(help.contains(flag), "--help mentions {flag}");
    }
}

#[test]
fn bad_flag_values_are_refused_with_a_message_naming_the_flag() {
    for (args, flag) in [
        (&["--workers", "0"][..], "--workers"),
        (&["--queue-capacity", "0"][..], "--queue-capacity"),
        (&["--spawn-timeout", "soon"][..], "--spawn-timeout"),
        (&["--max-frame", "huge"][..], "--max-frame"),
        (&["--mode", "fibers"][..], "--mode"),
    ] {
        let mut full = vec!["--port", "0"];
        full.extend_from_slice(args);
        let out = tc_server(&full);
        assert!(!out.status.success(), "{args:?} must be refused");
        assert!(text(&out.stderr).contains(flag), "{args:?}: {}", text(&out.stderr));
    }
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = tc_server(&["--port", &port, "--mode", "threads", "--workers", "1"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("--port 0"), "suggests --port 0: {}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "a run-time failure, not a usage error");
}

#[test]
fn flags_can_come_from_environment_variables() {
    let server = TestServer::start_with(
        &["--log-level", "warn"],
        &[("THREADCENTER_PORT", "0"), ("THREADCENTER_MODE", "threads"), ("THREADCENTER_WORKERS", "3")],
    );
    let stats = server.stats();
    assert_eq!(stats["mode"], "threads");
    assert_eq!(stats["workers"]["configured"], 3);
}

#[test]
fn durations_accept_plain_seconds_and_units() {
    for value in ["2", "0.5", "500ms", "1m"] {
        let server = TestServer::start("processes", 1, &["--spawn-timeout", value]);
        assert_eq!(server.stats()["workers"]["alive"], 1, "--spawn-timeout {value}");
    }
}

#[test]
fn model_times_a_forward_pass_and_names_its_engine() {
    if !common::tract_built_in("model_times_a_forward_pass_and_names_its_engine") {
        return;
    }
    let out = tc_client(&["model", "--engine", "tract", "--batch", "2", "-d", "200ms", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rate: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rate["model"], "fire-cnn", "{rate}");
    assert_eq!(rate["engine"], "tract", "{rate}");
    assert_eq!(rate["batch"], 2);
    assert!(rate["images"].as_u64().unwrap() >= 2, "{rate}");
    assert!(rate["images_per_second"].as_f64().unwrap() > 0.0, "{rate}");
    let missing = tc_client(&["model", "--model", "/nonexistent/model.onnx", "-d", "100ms"]);
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains("/nonexistent/model.onnx"), "{}", text(&missing.stderr));
}

#[test]
fn kernel_and_model_print_a_sentence_and_json_with_json() {
    let out = tc_client(&["kernel", "--size", "1000", "-d", "100ms"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(said.starts_with("compute n=1000 on one thread: ") && said.contains(" per second"), "{said}");
    assert!(serde_json::from_str::<Value>(&said).is_err(), "prose, not JSON: {said}");
    let out = tc_client(&["kernel", "--size", "1000", "-d", "100ms", "--json"]);
    let measured: Value = serde_json::from_slice(&out.stdout).expect("JSON with --json");
    assert_eq!(measured["size"], 1000);
    assert!(measured["per_second"].as_f64().unwrap() > 0.0, "{measured}");

    if !common::tract_built_in("kernel_and_model_print_a_sentence_and_json_with_json") {
        return;
    }
    let out = tc_client(&["model", "--engine", "tract", "--batch", "2", "-d", "100ms"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.starts_with("fire-cnn on tract, batches of 2 on 1 thread: ") && said.contains("images/s"),
        "{said}"
    );
}
