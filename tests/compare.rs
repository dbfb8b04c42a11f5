//! `tc-client compare` on reports whose figures are known: the ratios, the
//! test's verdict, `--fail-if-slower`, and the refusal of runs of
//! different workloads.

mod common;

use common::run_client;
use serde_json::{json, Value};

/// A `--json` report with the given per-second ok counts and p50s (µs).
fn report(workers: u64, size: u64, ok: &[u64], p50_us: &[u64]) -> Value {
    let ok_count = ok.len();
    let intervals: Vec<Value> = ok
        .iter()
        .zip(p50_us)
        .enumerate()
        .map(|(i, (ok, p50))| {
            // The first and last intervals are partial, as in a real run.
            let length = if i == 0 || i == ok_count - 1 { 0.3 } else { 1.0 };
            json!({"start_s": i as f64, "length_s": length, "ok": ok, "p50_us": p50, "p90_us": p50 * 2,
                   "p99_us": p50 * 3, "max_us": p50 * 4})
        })
        .collect();
    json!({
        "server": {"mode": "threads", "workers": workers, "gil": false},
        "parameters": {"cmd": "compute", "size": size, "concurrency": 4, "load_model": "closed", "pipeline": 1,
                       "rate_rps": null, "duration_s": 5.0},
        "throughput_rps": ok.iter().sum::<u64>() as f64 / ok.len() as f64,
        "intervals": intervals,
    })
}

fn write(dir: &tempfile::TempDir, name: &str, value: &Value) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, value.to_string()).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn compare_prints_ratios_with_their_test_and_fails_a_slower_run_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    // The first and last intervals are edges and left out: the middle
    // three give 100 ± 1 against 200 ± 2 ok replies/s.
    let a = write(&dir, "a.json", &report(1, 500_000, &[7, 99, 100, 101, 3], &[1, 4000, 4000, 4000, 1]));
    let b = write(&dir, "b.json", &report(2, 500_000, &[7, 198, 200, 202, 3], &[1, 2000, 2000, 2000, 1]));
    let out = run_client(&["compare", &a, &b]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("baseline a.json: threads, 1 worker; compute n=500000, 4 connections, closed loop"),
        "{text}"
    );
    assert!(text.contains("b.json (threads, 2 workers; 3 intervals against 3 intervals):"), "{text}");
    let throughput = text.lines().find(|l| l.trim_start().starts_with("throughput")).unwrap();
    assert!(throughput.contains("100.0 ± 1.000"), "{throughput}");
    assert!(throughput.contains("200.0 ± 2.000"), "{throughput}");
    assert!(throughput.contains("2.00 ± 0.03 ×"), "{throughput}");
    assert!(throughput.ends_with(": better"), "{throughput}");
    let p50 = text.lines().find(|l| l.trim_start().starts_with("p50 latency")).unwrap();
    assert!(p50.contains("0.50 ± 0.00 ×") && p50.ends_with("p < 0.001: better"), "{p50}");

    // Reversed, the new run is slower by half: --fail-if-slower 10 exits 99.
    let out = run_client(&["compare", &b, &a, "--fail-if-slower", "10"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(99), "{text}");
    assert!(text.contains("✗ 50.0% less throughput than b.json: more than --fail-if-slower 10%"), "{text}");
    // ... and 60% allows it.
    assert_eq!(run_client(&["compare", &b, &a, "--fail-if-slower", "60"]).status.code(), Some(0));
}

#[test]
fn runs_of_different_workloads_are_refused_naming_the_difference_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(&dir, "a.json", &report(2, 500_000, &[0, 100, 100, 100, 0], &[0, 10, 10, 10, 0]));
    let b = write(&dir, "b.json", &report(2, 1_000_000, &[0, 50, 50, 50, 0], &[0, 20, 20, 20, 0]));
    let out = run_client(&["compare", &a, &b]);
    assert_eq!(out.status.code(), Some(2));
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(error.contains("a.json and b.json ran different workloads (size 500000 vs 1000000)"), "{error}");
    assert!(error.contains("--allow-different-workloads"), "{error}");
    let allowed = run_client(&["compare", &a, &b, "--allow-different-workloads"]);
    assert_eq!(allowed.status.code(), Some(0), "{}", String::from_utf8_lossy(&allowed.stderr));
    // Not a report at all: said, naming the file.
    let junk = write(&dir, "junk.json", &json!({"hello": 1}));
    let out = run_client(&["compare", &a, &junk]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("junk.json: not a tc-client --json report"));
}
