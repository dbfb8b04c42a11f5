//! What `tc-client` reports when a run does not go as planned: interrupted
//! with Ctrl-C (SIGINT) or SIGTERM, or measuring a server that does not
//! describe itself (the Python original, played by a stand-in).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{read_csv, send_signal};

/// Starts `tc-client ARGS` with piped output.
fn start_client(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tc-client"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tc-client starts")
}

/// Waits (at most 60 s) until `path` holds at least `bytes` bytes: the
/// streamed per-request CSV shows the run is measuring.
fn wait_for_file(path: &Path, bytes: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(path).map_or(true, |m| m.len() < bytes) {
        assert!(Instant::now() < deadline, "{} never reached {bytes} bytes", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (at most 60 s) for the child to exit; its exit code, stdout, stderr.
fn finish(mut child: Child) -> (Option<i32>, String, String) {
    let code = wait_exit(&mut child);
    let (mut out, mut err) = (String::new(), String::new());
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (code, out, err)
}

/// Waits (at most 60 s, then kills it and fails) for the child to exit.
fn wait_exit(child: &mut Child) -> Option<i32> {
    common::wait_for_exit(child, Duration::from_secs(60), "tc-client did not exit after the signal").code()
}

#[test]
fn ctrl_c_reports_what_was_measured_writes_every_file_and_exits_130() {
    for (signal, name) in [(libc::SIGINT, "SIGINT"), (libc::SIGTERM, "SIGTERM")] {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        let (csv, json, hgrm, rows) = (path("runs.csv"), path("run.json"), path("run.hgrm"), path("req.csv"));
        let child = start_client(&[
            "--embedded",
            "--mode",
            "threads",
            "--workers",
            "1",
            "-c",
            "2",
            "--size",
            "20000",
            "-d",
            "10m",
            "--warmup",
            "0",
            "--csv",
            &csv,
            "--json",
            &json,
            "--hgrm",
            &hgrm,
            "--requests-csv",
            &rows,
        ]);
        // The per-request rows are flushed in 8 KiB blocks: once one is
        // out, the run is measuring.
        wait_for_file(Path::new(&rows), 8192);
        send_signal(child.id(), signal);
        let (code, stdout, stderr) = finish(child);

        assert_eq!(code, Some(130), "{name}: {stdout}\n{stderr}");
        assert!(stdout.contains("INTERRUPTED after"), "{name}: {stdout}");
        assert!(stdout.contains("ok replies/s"), "{name}: the summary is printed: {stdout}");
        let row = &read_csv(Path::new(&csv))[0];
        assert_eq!(row["interrupted"], "true", "{name}");
        assert!(row["ok"].parse::<u64>().unwrap() > 0, "{name}: the CSV row has the measurements");
        let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        assert_eq!(report["interrupted"], true, "{name}");
        assert!(report["counts"]["ok"].as_u64().unwrap() > 0, "{name}");
        let hgrm_text = std::fs::read_to_string(&hgrm).unwrap();
        assert!(hgrm_text.contains("Total count"), "{name}: the .hgrm is complete");
    }
}

#[test]
fn a_second_ctrl_c_exits_at_once_without_a_report() {
    // One long job (n = 10^11, minutes of work) in flight: after the first
    // Ctrl-C the client would wait up to 2 s for its reply before
    // reporting; the second Ctrl-C must end the process without waiting.
    let server = common::TestServer::start("threads", 1, &["--max-n", "100000000000"]);
    let port = server.addr.port().to_string();
    let mut child =
        start_client(&["--port", &port, "-c", "1", "--size", "100000000000", "-d", "10m", "--warmup", "0"]);
    // The signals come only once the server holds the client's job.
    server.wait_for_stats("the client's job in flight", |s| s["requests"]["compute"] == 1);
    let pid = child.id();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    send_signal(pid, libc::SIGINT);
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 && !line.contains("interrupted, stopping") {
        line.clear();
    }
    send_signal(pid, libc::SIGINT);
    assert_eq!(wait_exit(&mut child), Some(130));
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    // A job was in flight, so the first signal waited for it: the second
    // one ended the wait before any report.
    assert!(!stdout.contains("Requests"), "{stdout}");
}

#[test]
fn a_server_without_stats_is_measured_with_its_mode_and_workers_unknown() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/compute_only_server.py");
    let Ok(mut stand_in) = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped()) // closing it stops the stand-in
        .stdout(Stdio::piped())
        .spawn()
    else {
        common::skipped(
            "a_server_without_stats_is_measured_with_its_mode_and_workers_unknown",
            "python3 is not installed (apt-get install -y python3)",
        );
        return;
    };
    let mut first = String::new();
    BufReader::new(stand_in.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let port = first.trim().rsplit(':').next().unwrap().to_string();

    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("runs.csv");
    let out = common::run_client(&[
        "--port",
        &port,
        "-c",
        "2",
        "-n",
        "5",
        "--size",
        "1000",
        "--verify",
        "--csv",
        csv.to_str().unwrap(),
    ]);
    drop(stand_in.stdin.take());
    let _ = stand_in.wait();

    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.matches("mode and workers unknown").count(), 1, "said once: {stdout}");
    assert!(stdout.contains("10 sent, 10 ok"), "{stdout}");
    let row = &read_csv(&csv)[0];
    assert_eq!((row["server_mode"].as_str(), row["server_workers"].as_str()), ("", ""));
    assert_eq!(row["ok"], "10");
}
