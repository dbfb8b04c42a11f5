//! `tc-client --metrics-addr`: the client's own Prometheus metrics while a
//! run goes, and after it the final figures, which must agree with its
//! JSON report; and the Grafana dashboard's queries name only families the
//! binaries export.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{http_get, parse_exposition, wait_for_exit, TestServer};

/// A tc-client run with `--metrics-addr 127.0.0.1:0` (and a long linger):
/// the child, and the address it printed.
fn client_with_metrics(args: &[&str]) -> (std::process::Child, SocketAddr) {
    let mut client = Command::new(env!("CARGO_BIN_EXE_tc-client"))
        .args(args)
        .args(["--metrics-addr", "127.0.0.1:0", "--metrics-linger", "60s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(client.stderr.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("tc-client metrics on http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("the address line: {line:?}"))
        .parse()
        .unwrap();
    (client, addr)
}

/// Reads the client's stdout until its summary's last line; returns it all.
fn summary_of(client: &mut std::process::Child) -> String {
    let mut stdout = BufReader::new(client.stdout.take().unwrap());
    let mut summary = String::new();
    while stdout.read_line(&mut summary).unwrap() > 0 && !summary.contains("Done:") {}
    summary
}

#[test]
fn the_clients_final_metrics_agree_with_its_json_report() {
    // Half the requests refused (n above --max-n), half answered: both show.
    let server = TestServer::start("threads", 2, &["--max-n", "1000"]);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let port = server.addr.port().to_string();
    let json_path = json.to_str().unwrap();
    let (mut client, addr) = client_with_metrics(&[
        "--port",
        &port,
        "--mix",
        "compute:1,ping:1",
        "--size",
        "2000",
        "-c",
        "2",
        "-d",
        "2s",
        "--json",
        json_path,
    ]);
    // While the run goes the page answers, not finished yet.
    let (status, during) = http_get(addr, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(parse_exposition(&during).get("tc_client_finished"), Some(&0.0), "{during}");
    // The summary is printed once the run is over; then the final scrape.
    let summary = summary_of(&mut client);
    let (_, text) = http_get(addr, "/metrics");
    // The final scrape lets the client exit (long before its 60 s linger).
    let status = wait_for_exit(&mut client, Duration::from_secs(30), "tc-client after its final scrape");
    assert_eq!(status.code(), Some(1), "error replies fail the run: {summary}");
    let metrics = parse_exposition(&text);
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let counts = &report["counts"];
    assert_eq!(metrics["tc_client_finished"], 1.0);
    assert_eq!(metrics["tc_client_ok_replies_total"], counts["ok"].as_f64().unwrap(), "{text}");
    assert!(metrics["tc_client_ok_replies_total"] > 0.0);
    assert_eq!(
        metrics["tc_client_error_replies_total{code=\"BAD_REQUEST\"}"],
        counts["errors"]["BAD_REQUEST"].as_f64().unwrap(),
        "{text}"
    );
    assert_eq!(metrics["tc_client_timeouts_total"], counts["timeouts"].as_f64().unwrap());
    assert_eq!(metrics["tc_client_latency_seconds_count"], report["latency"]["count"].as_f64().unwrap());
    assert_eq!(
        metrics["tc_client_latency_from_send_seconds_count"],
        report["latency_uncorrected"]["count"].as_f64().unwrap(),
        "{text}"
    );
    assert!(metrics["tc_client_requests_sent_total"] >= counts["sent"].as_f64().unwrap());
}

/// Every metric name a dashboard query names: `threadcenter_…` or
/// `tc_client_…` (a histogram's `_bucket`/`_sum`/`_count` and a counter's
/// `_total` are taken off before looking for its `# TYPE` line).
fn families_named(dashboard: &serde_json::Value) -> Vec<String> {
    let mut names = Vec::new();
    let mut exprs = Vec::new();
    fn walk<'a>(value: &'a serde_json::Value, exprs: &mut Vec<&'a str>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(expr)) = map.get("expr") {
                    exprs.push(expr);
                }
                map.values().for_each(|v| walk(v, exprs));
            }
            serde_json::Value::Array(list) => list.iter().for_each(|v| walk(v, exprs)),
            _ => {}
        }
    }
    walk(dashboard, &mut exprs);
    for expr in exprs {
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("threadcenter_") || word.starts_with("tc_client_") {
                names.push(word.to_string());
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

#[test]
fn the_grafana_dashboards_queries_name_families_the_binaries_export() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/grafana/threadcenter.json"))
            .unwrap(),
    )
    .unwrap();
    let names = families_named(&dashboard);
    assert!(
        names.iter().any(|n| n.starts_with("tc_client_"))
            && names.iter().any(|n| n.starts_with("threadcenter_"))
    );
    // What the binaries export: a server's page, and a client's.
    let server = TestServer::start("threads", 1, &["--metrics-addr", "127.0.0.1:0"]);
    let (_, server_page) = http_get(server.metrics_addr.unwrap(), "/metrics");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let port = server.addr.port().to_string();
    let json_path = json.to_str().unwrap();
    let (mut client, addr) = client_with_metrics(&[
        "--port", &port, "--cmd", "ping", "--rate", "50", "-d", "1s", "--json", json_path,
    ]);
    summary_of(&mut client);
    let (_, client_page) = http_get(addr, "/metrics");
    wait_for_exit(&mut client, Duration::from_secs(30), "tc-client after its final scrape");
    let exported = format!("{server_page}{client_page}");
    for name in names {
        let family = ["_bucket", "_sum", "_count", "_total"]
            .iter()
            .fold(name.as_str(), |n, s| n.strip_suffix(s).unwrap_or(n));
        assert!(
            exported.lines().any(|l| l.starts_with(&format!("# TYPE {family} "))),
            "the dashboard queries {name}, which no binary exports"
        );
    }
}
