//! The exit-code table (docs/MESSAGES.md) and the sentences users see when
//! something is wrong: every one names the flag or the file and says what to
//! do. Also `tc-client call`'s shorthand.

mod common;

use std::process::{Command, Output};

use common::{reference_compute, TestServer};
use serde_json::Value;

fn tc_client(args: &[&str]) -> Output {
    common::run_client(args)
}

fn tc_server(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tc-server")).args(args).output().expect("tc-server runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn usage_errors_exit_2_with_a_sentence_naming_the_flag() {
    for args in [&["--size", "-5"][..], &["--size=-5"], &["-n", "-1"], &["--concurrency", "x"]] {
        let out = tc_client(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let flag = args[0].split('=').next().unwrap();
        let flag = if flag == "-n" { "--requests" } else { flag };
        assert!(stderr(&out).contains(flag), "{args:?} names {flag}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("must not be negative") || stderr(&out).contains("not a whole number"),
            "{args:?} says what is wrong: {}",
            stderr(&out)
        );
    }
    // tc-server: a clap usage error and a configuration error share code 2.
    for args in
        [&["--port", "0", "--workers", "0"][..], &["--port", "0", "--mode", "fibers"], &["--workers=-2"]]
    {
        let out = tc_server(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn a_report_file_in_a_missing_directory_names_the_path_before_anything_runs() {
    let out = tc_client(&["--embedded", "-n", "1", "--csv", "/nonexistent-tc-dir/runs.csv"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(text.contains("/nonexistent-tc-dir/runs.csv: cannot open the file for --csv"), "{text}");
    assert!(stderr(&out).contains("directory exist"), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "nothing ran");
}

#[test]
fn plot_errors_name_the_file_and_what_to_do() {
    let csv = concat!(env!("CARGO_MANIFEST_DIR"), "/results/example/runs.csv");
    let out = tc_client(&["plot", "throughput", "--csv", csv, "-o", "/nonexistent-tc-dir/chart"]);
    assert_eq!(out.status.code(), Some(2));
    let text = stderr(&out);
    assert!(text.contains("/nonexistent-tc-dir") && text.contains("mkdir -p"), "{text}");
    assert!(!text.contains("invalid configuration") && !text.contains("Os {"), "no debug dump: {text}");

    let out = tc_client(&["plot", "throughput", "--csv", "/nonexistent-tc-dir/runs.csv", "-o", "/tmp/x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent-tc-dir/runs.csv: cannot read"), "{}", stderr(&out));
}

#[test]
fn call_accepts_the_shells_shorthand_as_well_as_json() {
    let server = TestServer::start("threads", 1, &[]);
    let port = server.addr.port().to_string();

    let out = tc_client(&["call", "--port", &port, "ping"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(reply.get("error").is_none(), "{reply}");

    let out = tc_client(&["call", "--port", &port, "compute", "1000"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply, serde_json::json!({"id": 1, "result": reference_compute(1000)}), "the plain reply");

    let out = tc_client(&["call", "--port", &port, "fly", "away"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains(r#"'{"cmd":"ping"}'"#), "shows the JSON form: {}", stderr(&out));
}

#[test]
fn help_starts_with_each_binarys_own_description_and_groups_server_flags() {
    let first_line = |binary: &str| {
        let out = Command::new(binary).arg("--help").output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_string()
    };
    let server = first_line(env!("CARGO_BIN_EXE_tc-server"));
    let client = first_line(env!("CARGO_BIN_EXE_tc-client"));
    assert!(server != client, "{server} / {client}");
    #[cfg(feature = "nats")]
    {
        let worker = first_line(env!("CARGO_BIN_EXE_tc-worker"));
        assert!(client != worker && server != worker, "{server} / {client} / {worker}");
    }

    let out = tc_server(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for heading in
        ["Network:", "Workers:", "Limits:", "Reliability:", "Predictions:", "Security:", "Observability:"]
    {
        assert!(help.contains(heading), "tc-server --help has a {heading} section");
    }
    assert!(!help.contains(env!("CARGO_MANIFEST_DIR")), "no absolute build path in --help");
    let cache = help.split("--cache-entries").nth(1).unwrap().split("\n\n  ").next().unwrap().to_string();
    assert_eq!(cache.matches("default").count(), 1, "the default is shown once: {cache}");
}
