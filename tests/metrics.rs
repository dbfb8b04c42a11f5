//! Operating the farm: `/metrics`, `/healthz`, `/readyz` at `--metrics-addr`,
//! JSON logs and slow-job warnings — all against the real `tc-server`.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use common::{error_code, TestServer};
use serde_json::{json, Value};

/// A server with metrics on a free loopback port.
fn start(mode: &str, workers: usize, extra: &[&str]) -> TestServer {
    let mut args = vec!["--metrics-addr", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    TestServer::start(mode, workers, &args)
}

fn value(metrics: &BTreeMap<String, f64>, series: &str) -> f64 {
    *metrics.get(series).unwrap_or_else(|| panic!("no series {series} in /metrics"))
}

/// A known mix: 5 distinct computes, one of them asked twice (a cache hit),
/// 3 pings, an unknown command, a frame that is not JSON, and a mutex
/// acquire + release. Returns the client, still connected.
fn known_workload(server: &TestServer) -> common::TestClient {
    let mut client = server.connect();
    for n in [1_000, 2_000, 3_000, 4_000, 5_000, 1_000] {
        let reply = client.request(json!({"id": n, "cmd": "compute", "n": n}));
        assert!(reply.get("result").is_some(), "{reply}");
    }
    for id in 0..3 {
        assert_eq!(client.request(json!({"id": id, "cmd": "ping"}))["pong"], true);
    }
    assert_eq!(error_code(&client.request(json!({"id": 9, "cmd": "fly"}))), Some("UNKNOWN_COMMAND"));
    client.send_payload(b"this is not json");
    assert_eq!(error_code(&client.recv()), Some("BAD_JSON"));
    let acquired = client.request(json!({"id": 10, "cmd": "mutex_acquire", "client_id": "op"}));
    assert_eq!(acquired["result"]["status"], "GRANTED", "{acquired}");
    let token = acquired["result"]["token"].clone();
    let released =
        client.request(json!({"id": 11, "cmd": "mutex_release", "client_id": "op", "token": token}));
    assert_eq!(released["result"]["success"], true, "{released}");
    client
}

#[test]
fn a_known_workload_shows_up_in_the_counters_and_histograms() {
    let server = start("threads", 2, &["--cache-entries", "16"]);
    let _client = known_workload(&server);
    let m = server.scrape();

    assert_eq!(value(&m, r#"threadcenter_requests_total{command="compute",code="OK"}"#), 6.0);
    assert_eq!(value(&m, r#"threadcenter_requests_total{command="ping",code="OK"}"#), 3.0);
    assert_eq!(value(&m, r#"threadcenter_requests_total{command="unknown",code="UNKNOWN_COMMAND"}"#), 1.0);
    assert_eq!(value(&m, r#"threadcenter_requests_total{command="unknown",code="BAD_JSON"}"#), 1.0);
    assert_eq!(value(&m, r#"threadcenter_requests_received_total{command="compute"}"#), 6.0);
    assert_eq!(value(&m, r#"threadcenter_errors_total{code="BAD_JSON"}"#), 1.0);
    // Six computes answered, five of them by a worker (one came from the cache).
    assert_eq!(value(&m, r#"threadcenter_request_duration_seconds_count{command="compute"}"#), 6.0);
    assert_eq!(value(&m, r#"threadcenter_job_service_seconds_count{command="compute"}"#), 5.0);
    assert_eq!(value(&m, r#"threadcenter_job_queue_wait_seconds_count{command="compute"}"#), 5.0);
    assert_eq!(
        value(&m, r#"threadcenter_request_duration_seconds_bucket{le="+Inf",command="compute"}"#),
        6.0,
        "every observation lands in the +Inf bucket"
    );
    assert_eq!(value(&m, "threadcenter_jobs_completed_total"), 5.0);
    assert_eq!(value(&m, "threadcenter_cache_hits_total"), 1.0);
    assert_eq!(value(&m, "threadcenter_cache_misses_total"), 5.0);
    assert_eq!(value(&m, "threadcenter_connections_open"), 1.0);
    assert_eq!(value(&m, "threadcenter_workers_alive"), 2.0);
    assert_eq!(value(&m, "threadcenter_jobs_in_flight"), 0.0);
    assert_eq!(value(&m, "threadcenter_mutex_grants_total"), 1.0);
    assert_eq!(value(&m, "threadcenter_mutex_held"), 0.0);
    assert_eq!(value(&m, "threadcenter_ready"), 1.0);
    assert_eq!(value(&m, r#"threadcenter_build_info{version="0.1.0",mode="threads"}"#), 1.0);
}

#[test]
fn stats_and_metrics_report_the_same_counters() {
    let server = start("processes", 2, &["--cache-entries", "16"]);
    let _client = known_workload(&server);
    let stats = server.stats();
    let m = server.scrape();

    for (command, n) in stats["requests"].as_object().unwrap() {
        let series = format!(r#"threadcenter_requests_received_total{{command="{command}"}}"#);
        assert_eq!(value(&m, &series), n.as_f64().unwrap(), "{series}");
    }
    for (code, n) in stats["errors"].as_object().unwrap() {
        let series = format!(r#"threadcenter_errors_total{{code="{code}"}}"#);
        assert_eq!(value(&m, &series), n.as_f64().unwrap(), "{series}");
    }
    // Replies: the same (command, code) pairs with the same counts, except
    // the stats reply itself, counted once it had gone out (after its body
    // was built).
    let mut expected: BTreeMap<String, f64> = BTreeMap::new();
    for (command, outcomes) in stats["replies"].as_object().unwrap() {
        for (code, n) in outcomes.as_object().unwrap() {
            let series = format!(r#"threadcenter_requests_total{{command="{command}",code="{code}"}}"#);
            expected.insert(series, n.as_f64().unwrap());
        }
    }
    *expected.entry(r#"threadcenter_requests_total{command="stats",code="OK"}"#.into()).or_default() += 1.0;
    let replies: BTreeMap<String, f64> = m
        .iter()
        .filter(|(series, _)| series.starts_with("threadcenter_requests_total{"))
        .map(|(series, n)| (series.clone(), *n))
        .collect();
    assert_eq!(replies, expected);
    assert!(replies.len() >= 5, "the workload produced several outcomes: {replies:?}");

    let pairs = [
        ("threadcenter_jobs_completed_total", &stats["jobs"]["completed"]),
        ("threadcenter_jobs_retried_total", &stats["jobs"]["retried"]),
        ("threadcenter_job_timeouts_total", &stats["jobs"]["timed_out"]),
        ("threadcenter_connections_accepted_total", &stats["connections"]["total"]),
        ("threadcenter_workers_alive", &stats["workers"]["alive"]),
        ("threadcenter_workers_configured", &stats["workers"]["configured"]),
        ("threadcenter_cache_hits_total", &stats["cache"]["hits"]),
        ("threadcenter_cache_misses_total", &stats["cache"]["misses"]),
        ("threadcenter_mutex_grants_total", &stats["mutex"]["grants"]),
        ("threadcenter_mutex_queue_length", &stats["mutex"]["queue_length"]),
        ("threadcenter_queue_capacity", &stats["jobs"]["queue_capacity"]),
    ];
    for (series, expected) in pairs {
        assert_eq!(value(&m, series), expected.as_f64().unwrap(), "{series} vs stats {expected}");
    }
    for worker in stats["worker_list"].as_array().unwrap() {
        let series = format!(r#"threadcenter_worker_jobs_total{{worker="{}"}}"#, worker["id"]);
        assert_eq!(value(&m, &series), worker["jobs_done"].as_f64().unwrap(), "{series}");
    }
}

#[test]
fn timeouts_restarts_and_rate_limits_are_counted() {
    let server = start("threads", 1, &["--allow-chaos", "--job-timeout", "300ms"]);
    let reply = server.request(json!({"id": "stuck", "cmd": "hang"}));
    assert_eq!(error_code(&reply), Some("TIMEOUT"));
    // The watchdog answers first and replaces the thread just after.
    server.wait_for_stats("the worker to be replaced", |s| s["worker_list"][0]["restarts"] == 1);
    let m = server.scrape();
    assert_eq!(value(&m, "threadcenter_job_timeouts_total"), 1.0);
    assert_eq!(value(&m, r#"threadcenter_worker_restarts_total{worker="0"}"#), 1.0);
    assert_eq!(value(&m, "threadcenter_worker_threads_abandoned_total"), 1.0);
    assert_eq!(value(&m, r#"threadcenter_requests_total{command="hang",code="TIMEOUT"}"#), 1.0);

    // One request per second, per client: a quick burst is mostly refused.
    let limited = start("threads", 1, &["--rate-limit", "1"]);
    let mut client = limited.connect();
    let refused = (0..5)
        .filter(|id| error_code(&client.request(json!({"id": id, "cmd": "ping"}))) == Some("RATE_LIMITED"))
        .count();
    assert!(refused >= 3, "a burst of 5 at 1/s: {refused} refused");
    let m = limited.scrape();
    assert_eq!(value(&m, "threadcenter_rate_limited_total"), refused as f64);
    assert_eq!(
        value(&m, r#"threadcenter_requests_total{command="ping",code="RATE_LIMITED"}"#),
        refused as f64
    );
}

#[test]
fn readiness_turns_503_while_the_queue_is_full_and_back_to_200() {
    let server = start("threads", 1, &["--allow-chaos", "--queue-capacity", "2"]);
    let (status, body) = server.http_get("/readyz");
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["status"], "ready");

    // Keep the only worker busy, then fill both queue places behind it.
    let mut client = server.connect();
    client.send(&json!({"id": "long", "cmd": "sleep", "ms": 4000}));
    server.wait_for_stats("the worker to take the long job", |s| {
        s["jobs"]["in_flight"] == 1 && s["jobs"]["queued"] == 0
    });
    client.send(&json!({"id": "a", "cmd": "sleep", "ms": 1}));
    client.send(&json!({"id": "b", "cmd": "sleep", "ms": 1}));
    server.wait_for_stats("two queued jobs", |s| s["jobs"]["queued"] == 2);

    let (status, body) = server.http_get("/readyz");
    assert_eq!(status, 503, "{body}");
    let readiness: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(readiness["status"], "not_ready");
    assert!(readiness["reasons"][0].as_str().unwrap().contains("queue is full"), "{readiness}");
    assert_eq!(readiness["queue_depth"], 2);
    assert_eq!(value(&server.scrape(), "threadcenter_ready"), 0.0);
    assert_eq!(server.http_get("/healthz").0, 200, "the process is still alive");

    // The three replies come back; the queue empties; ready again.
    let ids: Vec<Value> = (0..3).map(|_| client.recv()["id"].clone()).collect();
    assert_eq!(ids, [json!("long"), json!("a"), json!("b")]);
    let (status, body) = server.http_get("/readyz");
    assert_eq!(status, 200, "{body}");
}

#[test]
fn readiness_is_503_when_no_worker_is_left() {
    // One worker process, no replacements allowed: a crash leaves none.
    let server = start("processes", 1, &["--allow-chaos", "--max-restarts", "0"]);
    assert_eq!(server.http_get("/readyz").0, 200);
    assert_eq!(error_code(&server.request(json!({"id": 1, "cmd": "crash"}))), Some("WORKER_CRASHED"));
    server.wait_for_stats("the worker to be down", |s| s["workers"]["alive"] == 0);
    let (status, body) = server.http_get("/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no worker is up"), "{body}");
    assert_eq!(value(&server.scrape(), "threadcenter_workers_alive"), 0.0);
}

#[test]
fn the_endpoint_answers_its_paths_and_404_elsewhere() {
    let server = start("threads", 1, &[]);
    assert_eq!(server.request(json!({"id": 1, "cmd": "ping"}))["pong"], true);
    let (status, body) = server.http_get("/healthz");
    assert_eq!(status, 200);
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert!(health["uptime_s"].as_f64().unwrap() >= 0.0);
    let (status, body) = server.http_get("/metrics?format=anything");
    assert_eq!(status, 200);
    assert!(body.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    assert!(body.contains("# TYPE threadcenter_request_duration_seconds histogram"), "{body}");
    assert!(body.contains("# UNIT threadcenter_request_duration_seconds seconds"), "{body}");
    // `/` is the live dashboard (docs/OPERATING.md#the-live-dashboard).
    let (status, body) = server.http_get("/");
    assert_eq!(status, 200);
    assert!(body.starts_with("<!doctype html>") && body.contains("EventSource"), "the dashboard page");
    let (status, body) = server.http_get("/nothing-here");
    assert_eq!(status, 404);
    assert!(body.contains("/metrics") && body.contains("/events"), "{body}");
}

#[test]
fn a_metrics_address_in_use_stops_the_start_with_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_tc-server"))
        .args(["--port", "0", "--mode", "threads", "--workers", "1", "--metrics-addr", &addr])
        .stdin(Stdio::null())
        .output()
        .expect("tc-server runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("listening for metrics on {addr}")), "{stderr}");
}

#[test]
fn json_logs_carry_the_configuration_connections_workers_and_slow_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let args = [
        "--port",
        "0",
        "--mode",
        "threads",
        "--workers",
        "1",
        "--allow-chaos",
        "--log-format",
        "json",
        "--log-level",
        "debug",
        "--slow-ms",
        "1000",
    ];
    let mut server = TestServer::start_logging_to(&args, &[], Stdio::from(log));
    let mut client = server.connect();
    let quick = client.request(json!({"id": "quick", "cmd": "compute", "n": 10}));
    assert_eq!(quick["result"], common::reference_compute(10));
    let slow = client.request(json!({"id": "slow", "cmd": "sleep", "ms": 1200}));
    assert_eq!(slow["result"]["slept_ms"], 1200);
    client.close();
    assert!(server.terminate().success());

    let text = std::fs::read_to_string(&log_path).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let find = |message: &str| -> Vec<&Value> {
        events.iter().filter(|e| e["fields"]["message"] == message).collect()
    };
    let started = find("server started");
    assert_eq!(started.len(), 1, "{text}");
    assert_eq!(started[0]["level"], "INFO");
    assert_eq!(started[0]["fields"]["workers"], 1);
    assert_eq!(started[0]["fields"]["slow_ms"], 1000.0);
    assert!(!find("worker thread started").is_empty(), "{text}");
    assert!(!find("worker thread stopped").is_empty(), "{text}");
    assert!(!find("connection opened").is_empty() && !find("connection closed").is_empty(), "{text}");
    assert!(find("connection opened").iter().all(|e| e["level"] == "DEBUG"));

    let slow_jobs = find("slow job");
    assert_eq!(slow_jobs.len(), 1, "only the sleep is slower than 1 s: {text}");
    let fields = &slow_jobs[0]["fields"];
    assert_eq!(slow_jobs[0]["level"], "WARN");
    assert_eq!(fields["command"], "sleep");
    assert_eq!(fields["size"], 1200);
    assert_eq!(fields["id"], "\"slow\"");
    assert_eq!(fields["outcome"], "OK");
    assert!(fields["service_ms"].as_f64().unwrap() >= 1200.0, "{fields}");
    assert!(fields["total_ms"].as_f64().unwrap() >= fields["service_ms"].as_f64().unwrap());
}

#[test]
fn readiness_turns_503_as_soon_as_a_shutdown_begins() {
    let mut server = start("threads", 1, &["--allow-chaos", "--drain-timeout", "20s"]);
    let mut client = server.connect();
    client.send(&json!({"id": "last", "cmd": "sleep", "ms": 3000}));
    server.wait_for_stats("the job to start", |s| s["jobs"]["in_flight"] == 1);
    common::send_signal(server.pid(), libc::SIGTERM);
    // The drain waits for the sleeping job; meanwhile the endpoint is up
    // and tells load balancers to go elsewhere.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let body = loop {
        let (status, body) = server.http_get("/readyz");
        if status == 503 {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "/readyz stayed {status}: {body}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(body.contains("shutting down"), "{body}");
    assert_eq!(server.http_get("/healthz").0, 200, "alive while draining");
    assert_eq!(client.recv()["result"]["slept_ms"], 3000, "the job in flight is still answered");
    assert!(server.wait_exit().success());
}

#[test]
fn the_client_logs_its_embedded_server_as_json_when_asked() {
    let output = common::run_client(&[
        "--embedded",
        "--mode",
        "threads",
        "--workers",
        "1",
        "--cmd",
        "ping",
        "-n",
        "5",
        "--log-format",
        "json",
        "--log-level",
        "info",
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let events: Vec<Value> = stderr
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(events.iter().any(|e| e["fields"]["message"] == "server started"), "{stderr}");
}

/// `GET path` with extra header lines: the status code.
fn get_status(addr: std::net::SocketAddr, path: &str, headers: &str) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n").unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
}

#[test]
fn metrics_can_require_a_bearer_token_while_probes_stay_open() {
    let server =
        TestServer::start("threads", 1, &["--metrics-addr", "127.0.0.1:0", "--metrics-token", "s3cret"]);
    let addr = server.metrics_addr.unwrap();
    assert_eq!(get_status(addr, "/metrics", ""), 401);
    assert_eq!(get_status(addr, "/metrics", "Authorization: Bearer wrong\r\n"), 401);
    assert_eq!(get_status(addr, "/metrics", "Authorization: Bearer s3cret\r\n"), 200);
    assert_eq!(get_status(addr, "/healthz", ""), 200);
    assert_eq!(get_status(addr, "/readyz", ""), 200);
}

#[test]
fn idle_connections_past_the_cap_make_room_for_a_probe_and_the_job_port_does_not_notice() {
    use std::io::Read;
    // A long --metrics-timeout: only making room, not the timeout, can let
    // the probe below in.
    let server = TestServer::start(
        "threads",
        1,
        &["--metrics-addr", "127.0.0.1:0", "--metrics-max-connections", "8", "--metrics-timeout", "60s"],
    );
    let addr = server.metrics_addr.unwrap();
    // Twenty idle connections that never send a byte.
    let mut idle: Vec<std::net::TcpStream> =
        (0..20).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
    // A probe: it takes the slot of the oldest silent connection.
    assert_eq!(get_status(addr, "/healthz", ""), 200);
    // At most the cap is held: each newcomer closed the oldest silent one.
    let mut closed = 0;
    for stream in &mut idle {
        stream.set_read_timeout(Some(std::time::Duration::from_millis(300))).unwrap();
        if matches!(stream.read(&mut [0u8; 64]), Ok(0)) {
            closed += 1;
        }
    }
    assert!(closed >= 13, "at most 8 connections held, the probe's among them: {closed} of 20 closed");
    // The job port does not notice.
    assert_eq!(server.request(json!({"id": 1, "cmd": "ping"}))["pong"], true);
    drop(idle);
}

/// Raises this process's open-files limit to its hard limit (a test that
/// holds thousands of connections).
fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    limit.rlim_cur
}

#[test]
fn two_thousand_idle_connections_do_not_keep_a_probe_out() {
    // The attack that once kept /healthz unanswered for 45 s: thousands of
    // connections that never speak. Each costs the endpoint a task, not a
    // thread, and a probe takes the place of the oldest.
    if raise_open_files_limit() < 2_200 {
        common::skipped(
            "two_thousand_idle_connections_do_not_keep_a_probe_out",
            "the open-files limit is under 2,200",
        );
        return;
    }
    let server = TestServer::start(
        "threads",
        1,
        &["--metrics-addr", "127.0.0.1:0", "--metrics-max-connections", "4096", "--metrics-timeout", "60s"],
    );
    let addr = server.metrics_addr.unwrap();
    let idle: Vec<std::net::TcpStream> =
        (0..2_000).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(get_status(addr, path, ""), 200, "{path} with 2,000 idle connections held");
    }
    assert_eq!(server.request(json!({"id": 1, "cmd": "ping"}))["pong"], true);
    drop(idle);
}
