//! `tc-client merge`: two real `tc-client` processes against one farm, each
//! writing its interval log, merged — and the merge must equal the
//! histogram of every request both clients measured, value by value.

mod common;

use base64::Engine;
use common::{read_csv, run_client, TestServer};
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;

/// Every interval of an interval log, added into one histogram.
fn histogram_of_log(path: &std::path::Path) -> Histogram<u64> {
    let bytes = std::fs::read(path).unwrap();
    let mut total = Histogram::<u64>::new(3).unwrap();
    let mut deserializer = Deserializer::new();
    for entry in IntervalLogIterator::new(&bytes) {
        if let LogEntry::Interval(interval) = entry.expect("a valid log line") {
            let compressed =
                base64::engine::general_purpose::STANDARD.decode(interval.encoded_histogram()).unwrap();
            let h: Histogram<u64> = deserializer.deserialize(&mut compressed.as_slice()).unwrap();
            total.add(&h).unwrap();
        }
    }
    total
}

#[test]
fn two_clients_merged_equal_the_histogram_of_every_request_both_measured() {
    let server = TestServer::start("threads", 2, &[]);
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let port = server.addr.port().to_string();
    // Two clients at once, as two machines would be.
    std::thread::scope(|scope| {
        for client in ["a", "b"] {
            let (log, rows) = (path(&format!("{client}.hlog")), path(&format!("{client}.csv")));
            let port = &port;
            scope.spawn(move || {
                let out = run_client(&[
                    "--port",
                    port,
                    "-c",
                    "2",
                    "--size",
                    "50000",
                    "-d",
                    "2s",
                    "--warmup",
                    "200ms",
                    "--hdr-log",
                    log.to_str().unwrap(),
                    "--requests-csv",
                    rows.to_str().unwrap(),
                ]);
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            });
        }
    });
    let (json, merged_log) = (path("merged.json"), path("merged.hlog"));
    let out = run_client(&[
        "merge",
        path("a.hlog").to_str().unwrap(),
        path("b.hlog").to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--hdr-log",
        merged_log.to_str().unwrap(),
    ]);
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{summary}{}", String::from_utf8_lossy(&out.stderr));
    assert!(summary.contains("from 2 logs"), "{summary}");

    // The union: every measured ok request of both clients, from their
    // per-request rows (latency from schedule, as the logs hold).
    let mut union = Histogram::<u64>::new(3).unwrap();
    for client in ["a", "b"] {
        for row in read_csv(&path(&format!("{client}.csv"))) {
            if row["outcome"] == "ok" && row["warmup"] == "false" {
                union.record(row["latency_us"].parse::<u64>().unwrap().max(1)).unwrap();
            }
        }
    }
    assert!(union.len() > 100, "enough requests to mean something: {}", union.len());
    let merged = histogram_of_log(&merged_log);
    assert_eq!(merged.len(), union.len(), "every request once");
    for value in union.iter_recorded() {
        let at = value.value_iterated_to();
        assert_eq!(merged.count_at(at), union.count_at(at), "the count at {at} µs");
    }
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["latency"]["count"], union.len());
    assert_eq!(report["latency"]["max_us"], union.max());
    for p in report["latency"]["percentiles"].as_array().unwrap() {
        let percentile = p["percentile"].as_f64().unwrap();
        assert_eq!(p["value_us"], union.value_at_quantile(percentile / 100.0), "p{percentile}");
    }
    let per_interval: u64 =
        report["intervals"].as_array().unwrap().iter().map(|i| i["ok"].as_u64().unwrap()).sum();
    assert_eq!(per_interval, union.len(), "the merged intervals hold every request");
}

#[test]
fn merge_refuses_what_is_not_an_interval_log_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.hlog");
    std::fs::write(&junk, "hello\n").unwrap();
    let out = run_client(&["merge", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(error.contains("junk.hlog"), "{error}");
}
