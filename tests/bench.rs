//! `tc-client` as a load generator against the real `tc-server`: closed
//! loop, pipelined, open loop, mixes, warm-up, timeouts, errors, the report
//! files it writes, and the embedded server.

mod common;

use std::fs;
use std::io::Write;

use common::{read_csv, run_client, run_client_with_stdin, TestServer};
use serde_json::Value;

/// Runs `tc-client --port <server's port> ARGS`.
fn run_on(server: &TestServer, args: &[&str]) -> std::process::Output {
    let port = server.addr.port().to_string();
    let mut full = vec!["--port", port.as_str()];
    full.extend_from_slice(args);
    run_client(&full)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_str(&fs::read_to_string(path).expect("report written")).expect("valid JSON")
}

#[test]
fn closed_loop_run_counts_every_request_and_writes_every_report() {
    let server = TestServer::start("threads", 2, &[]);
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let port = server.addr.port().to_string();
    let (csv, json, hgrm, rows, log) =
        (path("runs.csv"), path("run.json"), path("run.hgrm"), path("req.csv"), path("run.hlog"));
    let args = [
        "--port",
        &port,
        "-c",
        "4",
        "-n",
        "25",
        "--size",
        "1000",
        "--verify",
        "--csv",
        csv.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--hgrm",
        hgrm.to_str().unwrap(),
        "--requests-csv",
        rows.to_str().unwrap(),
        "--hdr-log",
        log.to_str().unwrap(),
    ];
    let out = run_client(&args);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("Requests    100 sent, 100 ok, 0 error replies, 0 timeouts"), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("Done: 100 responses in ")), "{stdout}");
    assert!(stdout.contains("from schedule") && stdout.contains("queue wait"), "{stdout}");

    let report = read_json(&json);
    assert_eq!(report["counts"]["sent"], 100);
    assert_eq!(report["counts"]["ok"], 100);
    assert_eq!(report["server"]["mode"], "threads", "mode as reported by the server");
    assert_eq!(report["server"]["workers"], 2);
    assert_eq!(report["parameters"]["concurrency"], 4);
    assert_eq!(report["latency"]["count"], 100);
    assert_eq!(report["breakdown"]["service"]["count"], 100, "timing fields were requested");
    assert_eq!(report["failed"], false);
    let labels: Vec<f64> = report["latency"]["percentiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["percentile"].as_f64().unwrap())
        .collect();
    assert_eq!(labels, [50.0, 90.0, 99.0, 99.9, 99.99, 100.0]);

    let summary = read_csv(&csv);
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0]["sent"], "100");
    assert_eq!(summary[0]["server_mode"], "threads");
    assert_eq!(summary[0]["concurrency"], "4");
    assert_eq!(summary[0]["requests_per_connection"], "25");
    assert_eq!(summary[0]["rate_rps"], "", "no rate in a closed loop");

    let requests = read_csv(&rows);
    assert_eq!(requests.len(), 100);
    assert!(requests.iter().all(|r| r["outcome"] == "ok" && r["cmd"] == "compute" && r["warmup"] == "false"));
    let mut ids: Vec<(String, String)> =
        requests.iter().map(|r| (r["connection"].clone(), r["id"].clone())).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 100, "every (connection, id) once");

    let distribution = fs::read_to_string(&hgrm).unwrap();
    assert!(distribution.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
    let last = distribution.lines().rfind(|l| !l.starts_with('#') && !l.trim().is_empty()).unwrap();
    let columns: Vec<&str> = last.split_whitespace().collect();
    assert_eq!((columns[1], columns[2]), ("1.000000000000", "100"), "{last}");

    let interval_log = fs::read_to_string(&log).unwrap();
    assert!(interval_log.contains("#[StartTime: "));
    assert!(interval_log.lines().any(|l| l.contains(",HISTFAA")), "at least one interval: {interval_log}");

    // A second run appends one row under the same header.
    let out = run_on(&server, &["-c", "1", "-n", "3", "--size", "10", "--csv", csv.to_str().unwrap()]);
    assert!(out.status.success());
    let content = fs::read_to_string(&csv).unwrap();
    assert_eq!(content.lines().count(), 3, "{content}");
    assert_eq!(content.lines().filter(|l| l.starts_with("started_at,")).count(), 1);
}

#[test]
fn pipelining_keeps_k_requests_in_flight_and_matches_every_reply() {
    let server = TestServer::start("threads", 2, &[]);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let out = run_on(
        &server,
        &["--cmd", "ping", "-c", "2", "--pipeline", "16", "-n", "500", "--json", json.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stdout));
    let report = read_json(&json);
    assert_eq!(report["counts"]["ok"], 1000);
    assert_eq!(report["counts"]["duplicates"], 0);
    assert_eq!(report["parameters"]["pipeline"], 16);
    assert_eq!(server.stats()["requests"]["ping"], 1000);
}

#[test]
fn open_loop_sends_on_schedule_and_reports_both_latencies() {
    let server = TestServer::start("threads", 2, &[]);
    let dir = tempfile::tempdir().unwrap();
    let (json, csv) = (dir.path().join("run.json"), dir.path().join("runs.csv"));
    let out = run_on(
        &server,
        &[
            "--cmd",
            "ping",
            "-c",
            "2",
            "--rate",
            "200",
            "-d",
            "1s",
            "--json",
            json.to_str().unwrap(),
            "--csv",
            csv.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stdout));
    let report = read_json(&json);
    // The schedule, not the machine's speed, decides the count: 200/s for 1 s.
    assert_eq!(report["counts"]["sent"], 200);
    assert_eq!(report["counts"]["ok"], 200);
    assert_eq!(report["parameters"]["load_model"], "open");
    assert_eq!(report["latency"]["count"], 200);
    assert_eq!(report["latency_uncorrected"]["count"], 200);
    // From the schedule can only be later than from the send.
    assert!(report["latency"]["max_us"].as_u64() >= report["latency_uncorrected"]["max_us"].as_u64());
    assert_eq!(read_csv(&csv)[0]["rate_rps"], "200.0");
}

#[test]
fn a_mix_and_a_warmup_are_honoured() {
    let server = TestServer::start("threads", 1, &[]);
    let dir = tempfile::tempdir().unwrap();
    let (json, rows) = (dir.path().join("run.json"), dir.path().join("req.csv"));
    let out = run_on(
        &server,
        &[
            "--mix",
            "compute:3,ping:1",
            "--size",
            "10",
            "-c",
            "2",
            "-n",
            "20",
            "--warmup",
            "4r",
            "--json",
            json.to_str().unwrap(),
            "--requests-csv",
            rows.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stdout));
    let report = read_json(&json);
    assert_eq!(report["counts"]["sent"], 40, "warm-up left out");
    assert_eq!(report["counts"]["warmup"], 8);
    assert_eq!(report["latency"]["count"], 40);
    let requests = read_csv(&rows);
    assert_eq!(requests.len(), 48);
    assert_eq!(requests.iter().filter(|r| r["warmup"] == "true").count(), 8);
    assert_eq!(requests.iter().filter(|r| r["cmd"] == "compute").count(), 36, "3 of every 4");
    assert_eq!(requests.iter().filter(|r| r["cmd"] == "ping").count(), 12);
}

#[test]
fn timeouts_and_error_replies_are_counted_and_fail_the_run() {
    // One slow worker and a queue of one: a burst gets BUSY replies and, with
    // a short --timeout, the slow ones time out.
    let server = TestServer::start("threads", 1, &["--queue-capacity", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let out = run_on(
        &server,
        &[
            "--size",
            "100000000",
            "-c",
            "1",
            "--pipeline",
            "4",
            "-n",
            "4",
            "--timeout",
            "200ms",
            "--json",
            json.to_str().unwrap(),
        ],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "problems make the exit code non-zero: {stdout}");
    let report = read_json(&json);
    assert!(report["counts"]["errors"]["BUSY"].as_u64().unwrap() >= 1, "{report}");
    assert!(report["counts"]["timeouts"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(report["failed"], true);
    assert!(stdout.contains("Errors      BUSY"), "{stdout}");
}

#[test]
fn a_refused_connection_is_one_clear_line_and_exit_one() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let out = run_client(&["--port", &free, "-n", "1"]);
    assert_eq!(out.status.code(), Some(1), "it could not run: exit 1 (2 is for usage errors)");
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&format!("127.0.0.1:{free}")), "{stderr}");
    assert!(stderr.to_lowercase().contains("refused"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn a_bad_report_path_fails_before_any_request_is_sent() {
    let server = TestServer::start("threads", 1, &[]);
    let out = run_on(&server, &["-n", "50", "--hgrm", "/nonexistent-dir/run.hgrm"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("/nonexistent-dir/run.hgrm: cannot open the file for --hgrm"), "{stderr}");
    assert_eq!(server.stats()["requests"]["compute"], 0, "nothing was sent");
}

#[test]
fn a_server_that_dies_mid_run_still_gets_a_report_and_a_failed_exit() {
    let server = TestServer::start("threads", 2, &[]);
    let port = server.addr.port().to_string();
    let client =
        std::thread::spawn(move || run_client(&["--port", &port, "-c", "2", "-d", "30s", "--size", "1000"]));
    server.wait_for_stats("the run to be under way", |s| s["jobs"]["completed"].as_u64().unwrap() > 50);
    common::send_signal(server.pid(), libc::SIGKILL);
    let out = client.join().unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("closed"), "names what happened: {stdout}");
    assert!(stdout.contains(&format!("127.0.0.1:{}", server.addr.port())), "names the server: {stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("Done: ")), "what was measured is reported: {stdout}");
}

#[test]
fn embedded_runs_start_and_stop_their_own_server_in_both_modes() {
    for mode in common::MODES {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("run.json");
        let out = run_client(&[
            "--embedded",
            "--mode",
            mode,
            "--workers",
            "2",
            "-c",
            "2",
            "-n",
            "10",
            "--size",
            "1000",
            "--verify",
            "--json",
            json.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{mode}: {}\n{}", text(&out.stdout), text(&out.stderr));
        let report = read_json(&json);
        assert_eq!(report["server"]["embedded"], true);
        assert_eq!(report["server"]["mode"], mode);
        assert_eq!(report["server"]["workers"], 2);
        assert_eq!(report["counts"]["ok"], 20);
    }
}

#[test]
fn the_shell_answers_words_and_json_with_latencies() {
    let server = TestServer::start("threads", 1, &[]);
    let port = server.addr.port().to_string();
    let input = "ping\ncompute 10\n{\"cmd\":\"health\"}\nbogus\nquit\n";
    let out = run_client_with_stdin(&["shell", "--port", &port], Some(input));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains(r#""pong":true"#), "{stdout}");
    assert!(stdout.contains(r#""result":8360"#), "{stdout}");
    assert!(stdout.contains(r#""status":"ok""#), "{stdout}");
    assert!(stdout.contains("! unknown command \"bogus\""), "{stdout}");
    assert!(stdout.contains(" ms)"), "each reply shows its latency: {stdout}");
}

#[test]
fn the_shell_reconnects_after_the_server_closes_its_idle_connection() {
    let server = TestServer::start("threads", 1, &["--idle-timeout", "1s", "--read-timeout", "1s"]);
    let port = server.addr.port().to_string();
    let mut shell = std::process::Command::new(env!("CARGO_BIN_EXE_tc-client"))
        .args(["shell", "--port", &port])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tc-client starts");
    let mut input = shell.stdin.take().unwrap();
    input.write_all(b"ping\n").unwrap();
    // The first connection goes quiet and the server closes it; the shell
    // must not read that goodbye as the next reply.
    server.wait_for_stats("the shell's connection closed as idle", |s| {
        s["connections"]["idle_closed"].as_u64() >= Some(1)
    });
    input.write_all(b"ping\nquit\n").unwrap();
    drop(input);
    let out = shell.wait_with_output().unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert_eq!(stdout.matches(r#""pong":true"#).count(), 2, "both pings answered: {stdout}");
    assert!(!stdout.contains("IDLE_TIMEOUT"), "the goodbye is not shown as a reply: {stdout}");
    assert!(stdout.contains("reconnecting"), "{stdout}");
}

#[test]
fn invalid_plans_are_refused_before_starting() {
    for (args, needle) in [
        (&["--rate", "0", "-d", "1s"][..], "--rate"),
        (&["--rate", "0.001", "-c", "4"][..], "too low for 4 connections"),
        (&["-c", "0"][..], "--concurrency"),
        (&["--verify", "--cmd", "ping"][..], "--verify"),
        (&["--mix", "compute:0"][..], "--mix"),
    ] {
        let out = run_client(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(text(&out.stderr).contains(needle), "{args:?}: {}", text(&out.stderr));
    }
}

/// Runs `tc-client --port PORT ARGS --json FILE`; returns the exit code and
/// the report's `thresholds`.
fn thresholds_of(server: &TestServer, args: &[&str]) -> (Option<i32>, Value) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let mut full = args.to_vec();
    full.extend_from_slice(&["--json", json.to_str().unwrap()]);
    let out = run_on(server, &full);
    let report = read_json(&json);
    assert_eq!(
        report["thresholds"].as_array().map(Vec::len),
        Some(args.iter().filter(|a| **a == "--threshold").count()),
        "one verdict per threshold: {}",
        text(&out.stdout)
    );
    (out.status.code(), report["thresholds"].clone())
}

fn passed(verdicts: &Value) -> Vec<bool> {
    verdicts.as_array().unwrap().iter().map(|v| v["passed"].as_bool().unwrap()).collect()
}

#[test]
fn each_threshold_form_passes_and_fails_on_purpose_made_runs_and_a_crossed_one_exits_99() {
    let server = TestServer::start("threads", 1, &["--max-n", "100000000"]);
    // All met: exit 0.
    let (code, verdicts) = thresholds_of(
        &server,
        &[
            "--cmd",
            "ping",
            "-c",
            "2",
            "-n",
            "200",
            "--threshold",
            "errors==0",
            "--threshold",
            "timeouts<1%",
            "--threshold",
            "max<60s",
            "--threshold",
            "send.p99<=60s",
            "--threshold",
            "throughput>=1",
        ],
    );
    assert_eq!((code, passed(&verdicts)), (Some(0), vec![true; 5]), "{verdicts}");
    // Latency and throughput out of reach: exit 99, the figure named.
    let (code, verdicts) = thresholds_of(
        &server,
        &["--cmd", "ping", "-n", "100", "--threshold", "p99<1us", "--threshold", "throughput>=1e9/s"],
    );
    assert_eq!((code, passed(&verdicts)), (Some(99), vec![false, false]), "{verdicts}");
    assert!(verdicts[0]["observed_as"].as_str().unwrap().starts_with("p99 latency from schedule was"));
    // Every reply an error (n above --max-n): errors thresholds both ways,
    // a latency threshold crossed for want of ok replies; 99 before 1.
    let (code, verdicts) = thresholds_of(
        &server,
        &[
            "--size",
            "200000000",
            "-n",
            "5",
            "--threshold",
            "errors==0",
            "--threshold",
            "errors.BAD_REQUEST>=100%",
            "--threshold",
            "p50<1s",
        ],
    );
    assert_eq!((code, passed(&verdicts)), (Some(99), vec![false, true, false]), "{verdicts}");
    assert_eq!(verdicts[2]["observed"], Value::Null);
    // Timeouts: jobs far longer than --timeout.
    let (code, verdicts) = thresholds_of(
        &server,
        &[
            "--size",
            "100000000",
            "-c",
            "1",
            "-n",
            "2",
            "--timeout",
            "50ms",
            "--threshold",
            "timeouts<1%",
            "--threshold",
            "timeouts==2",
        ],
    );
    assert_eq!((code, passed(&verdicts)), (Some(99), vec![false, true]), "{verdicts}");
}

#[test]
fn a_bad_threshold_is_a_usage_error_that_says_what_is_allowed() {
    let out = run_client(&["--threshold", "p99<20"]);
    assert_eq!(out.status.code(), Some(2));
    let error = text(&out.stderr);
    assert!(error.contains("\"20\" is not a time with its unit"), "{error}");
    assert!(error.contains("a threshold is METRIC OP VALUE"), "{error}");
}

/// The ok replies and target rate of each full interval of a `--json` report.
fn per_interval(report: &Value) -> Vec<(u64, f64)> {
    report["intervals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["length_s"].as_f64().unwrap() > 0.99)
        .map(|i| (i["ok"].as_u64().unwrap(), i["target_rps"].as_f64().unwrap()))
        .collect()
}

#[test]
fn a_staged_open_loop_follows_its_stages_on_the_same_connections() {
    let server = TestServer::start("threads", 2, &[]);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let out = run_on(
        &server,
        &["--cmd", "ping", "-c", "2", "--stages", "2s@100,2s@400", "--json", json.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("open loop in stages 2s@100,2s@400"), "{}", text(&out.stdout));
    let report = read_json(&json);
    assert_eq!(report["parameters"]["stages"], "2s@100,2s@400");
    let intervals = per_interval(&report);
    assert_eq!(
        intervals.iter().map(|i| i.1).collect::<Vec<_>>(),
        [100.0, 100.0, 400.0, 400.0],
        "{intervals:?}"
    );
    // Each second sends what its stage asks, within 15%: a constant rate
    // cannot give 100 twice and then 400 twice.
    for (ok, target) in &intervals {
        assert!((*ok as f64 - target).abs() <= target * 0.15, "{intervals:?}");
    }
    // Every request of the profile, and no more: 2·100 + 2·400.
    assert_eq!(report["counts"]["sent"], 1000, "{}", report["counts"]);
}

#[test]
fn a_ramp_rises_over_the_duration_and_bad_profiles_are_refused() {
    let server = TestServer::start("threads", 2, &[]);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let out = run_on(
        &server,
        &["--cmd", "ping", "--rate", "100..300", "-d", "2s", "--json", json.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let intervals = per_interval(&read_json(&json));
    // 150 requests in the first second, 250 in the second.
    assert_eq!(intervals.iter().map(|i| i.1.round()).collect::<Vec<_>>(), [150.0, 250.0], "{intervals:?}");
    assert!(intervals[1].0 > intervals[0].0 + 50, "it rises: {intervals:?}");
    for (args, says) in [
        (&["--stages", "10s"][..], "is not LENGTH@RATE"),
        (&["--stages", "1s@0"][..], "nothing would be sent"),
        (&["--rate", "100..200", "-n", "5"][..], "runs over --duration, not --requests"),
        (&["--stages", "1s@5", "--warmup", "10r"][..], "a counted warm-up"),
    ] {
        let out = run_on(&server, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(text(&out.stderr).contains(says), "{args:?}: {}", text(&out.stderr));
    }
    let out = run_on(&server, &["--stages", "1s@5", "-d", "3s"]);
    assert_eq!(out.status.code(), Some(2), "the stages give the length: --duration conflicts");
}

#[test]
fn abort_on_fail_stops_at_the_first_breach_and_says_which_while_a_kept_threshold_runs_to_the_end() {
    let server = TestServer::start("threads", 1, &[]);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    // A minute asked for; p99 under a microsecond is crossed by the first
    // second's replies.
    let out = run_on(
        &server,
        &[
            "--cmd",
            "ping",
            "-d",
            "60s",
            "--threshold",
            "p99<1us",
            "--abort-on-fail",
            "--json",
            json.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(99), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("ABORTED after"), "{}", text(&out.stdout));
    let report = read_json(&json);
    assert!(report["aborted"].as_str().unwrap().starts_with("p99<1us crossed"), "{}", report["aborted"]);
    assert_eq!(report["interrupted"], false, "aborted is not interrupted");
    assert!(
        report["measured_s"].as_f64().unwrap() < 30.0,
        "stopped long before the minute: {}",
        report["measured_s"]
    );
    // Met all along: the run goes to its end.
    let out = run_on(
        &server,
        &[
            "--cmd",
            "ping",
            "-d",
            "2s",
            "--threshold",
            "errors==0",
            "--abort-on-fail",
            "--json",
            json.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let report = read_json(&json);
    assert!(report["aborted"].is_null(), "{report}");
    assert!(report["measured_s"].as_f64().unwrap() >= 1.9);
    // Without a threshold there is nothing to abort on.
    assert_eq!(run_on(&server, &["--abort-on-fail"]).status.code(), Some(2));
}

#[test]
fn a_closed_stderr_stops_neither_the_run_nor_its_reports() {
    // Every stderr line of a run (--live on a pipe, the metrics address,
    // the linger) meets a closed stderr: a reader that went away.
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let mut client = std::process::Command::new(env!("CARGO_BIN_EXE_tc-client"))
        .args(["--embedded", "--mode", "threads", "--workers", "1", "-d", "500ms", "--live"])
        .args(["--metrics-addr", "127.0.0.1:0", "--metrics-linger", "1s", "--json", json.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(client.stderr.take());
    let out = client.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?}: {stdout}", out.status);
    assert!(stdout.contains("Done:"), "the summary: {stdout}");
    let report: Value = serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
    assert!(report["counts"]["ok"].as_u64().unwrap() > 0, "{report}");
}
