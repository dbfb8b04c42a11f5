//! `tc-client sweep`: a grid of embedded runs appended to one CSV, resumable.
//! A tiny grid (well under a second per run) keeps this test short.

mod common;

use common::{read_csv as rows, run_client};

#[test]
fn a_sweep_appends_one_row_per_run_and_resumes_without_repeating_runs() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("sweep.csv");
    let csv_arg = csv.to_str().unwrap();
    let grid = |concurrency: &str| {
        run_client(&[
            "sweep",
            "--modes",
            "threads,threads-gil",
            "--workers",
            "1",
            "--concurrency",
            concurrency,
            "--sizes",
            "1000",
            "--duration",
            "300ms",
            "--warmup",
            "0",
            "--csv",
            csv_arg,
        ])
    };
    let out = grid("1,2");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let first = rows(&csv);
    assert_eq!(first.len(), 4, "2 modes x 2 concurrencies");
    assert_eq!(first.iter().filter(|r| r["server_gil"] == "true").count(), 2);
    assert!(first
        .iter()
        .all(|r| r["server_mode"] == "threads" && r["embedded"] == "true" && r["size"] == "1000"));
    assert!(first.iter().all(|r| r["ok"].parse::<u64>().unwrap() > 0), "every run measured something");

    // Run again with one more concurrency: only the new points run.
    let out = grid("1,2,3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("2 runs appended"), "{stdout}");
    assert!(stdout.contains("4 already there"), "{stdout}");
    assert_eq!(rows(&csv).len(), 6);
    let content = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(content.lines().filter(|l| l.starts_with("started_at,")).count(), 1, "one header");
}

#[test]
fn a_tls_sweep_runs_every_farm_over_tls_and_says_so_in_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("sweep.csv");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tc-client"))
        .args(["sweep", "--tls", "--modes", "threads", "--workers", "1", "-c", "2", "--sizes", "100"])
        .args(["-d", "300ms", "--warmup", "0s", "--csv", csv.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut reader = csv::Reader::from_path(&csv).unwrap();
    let rows: Vec<std::collections::HashMap<String, String>> =
        reader.deserialize().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["server_tls"], "true", "{:?}", rows[0]);
    assert!(rows[0]["ok"].parse::<u64>().unwrap() > 0, "{:?}", rows[0]);
}

/// `sweep` with a tiny grid of threads, 1 worker, the given connections.
fn tiny_sweep(csv: &std::path::Path, concurrency: &str, extra: &[&str]) -> std::process::Output {
    let mut args =
        vec!["sweep", "--modes", "threads", "--workers", "1", "-c", concurrency, "--sizes", "1000"];
    args.extend(["-d", "300ms", "--warmup", "0s", "--csv", csv.to_str().unwrap()]);
    args.extend(extra);
    run_client(&args)
}

#[test]
fn repeats_alternate_over_the_grid_and_a_resumed_sweep_adds_only_the_missing_runs() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("sweep.csv");
    let out = tiny_sweep(&csv, "1,2", &["--repeats", "2"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let order: Vec<String> = rows(&csv).iter().map(|r| r["concurrency"].clone()).collect();
    assert_eq!(order, ["1", "2", "1", "2"], "round-robin: run 1 of every point, then run 2");
    assert!(stdout.contains("(run 2 of 2)"), "{stdout}");
    assert!(stdout.contains("median ok replies/s per point"), "{stdout}");
    assert!(stdout.contains("threads, 1 worker, 2 connections, n=1000, pipeline 1: "), "{stdout}");
    assert!(stdout.contains(" over 2 runs ("), "{stdout}");

    // Asking for 3 runs of each: only the third one runs.
    let out = tiny_sweep(&csv, "1,2", &["--repeats", "3"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("sweep: 2 runs appended"), "{stdout}");
    assert!(stdout.contains("4 already there"), "{stdout}");
    assert!(stdout.contains(" over 3 runs ("), "{stdout}");
    assert_eq!(rows(&csv).len(), 6);

    // Already complete: nothing runs, unless --force.
    let out = tiny_sweep(&csv, "1,2", &["--repeats", "3"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("sweep: 0 runs appended") && stdout.contains("6 already there"), "{stdout}");
    let out = tiny_sweep(&csv, "1", &["--force"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("sweep: 1 run appended"), "one run, singular: {stdout}");
    assert!(stdout.contains(" over 4 runs ("), "the forced run adds to the older ones: {stdout}");
    assert_eq!(rows(&csv).len(), 7);
}

#[test]
fn repeats_out_of_range_are_refused_with_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("sweep.csv");
    for repeats in ["0", "101"] {
        let out = tiny_sweep(&csv, "1", &["--repeats", repeats]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("--repeats must be from 1 to 100"), "{stderr}");
    }
    assert!(!csv.exists(), "nothing ran");
}
