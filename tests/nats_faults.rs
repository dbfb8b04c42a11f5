//! The NATS farm's two promises under attack and under faults: exactly one
//! reply through broker restarts (graceful and crashes), and nothing
//! accepted from a stranger when the farm has a key. Every process on
//! loopback, a real `nats-server` per test.

// Worker hosts and gateways are the `nats` feature (cargo test --all-features).
#![cfg(feature = "nats")]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::nats::{start_gateway, wait_for_hosts, NatsServer, RawNats, WorkerHost};
use common::{reference_compute, send_signal, wait_for_exit};
use serde_json::{json, Value};

/// Polls `condition` every 50 ms for at most 60 s.
fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A gateway (no workers of its own) whose warnings go to a file in `dir`,
/// for a test to read once it has stopped it.
fn gateway_logging_to(
    dir: &tempfile::TempDir,
    nats: &NatsServer,
    extra: &[&str],
) -> (common::TestServer, std::path::PathBuf) {
    let path = dir.path().join("gateway.log");
    let log = std::fs::File::create(&path).unwrap();
    let mut args = vec!["--port", "0", "--workers", "0", "--nats", &nats.url, "--log-level", "warn"];
    args.extend_from_slice(extra);
    (common::TestServer::start_logging_to(&args, &[], std::process::Stdio::from(log)), path)
}

/// A farm key file in a temporary directory.
fn farm_key(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("farm.key");
    std::fs::write(&path, "c2VjcmV0LWZhcm0ta2V5LWZvci10ZXN0cy0xMjM0NTY3ODkw\n").unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn broker_restarts_under_load_lose_no_reply_count_no_crash_and_leave_the_streams_empty() {
    let Some(mut nats) = NatsServer::start() else { return };
    let _a = WorkerHost::start(&nats.url, "a", "threads", 1, &[]);
    let _b = WorkerHost::start(&nats.url, "b", "threads", 1, &[]);
    let gateway = start_gateway(&nats, &["--max-n", "1000000000", "--job-timeout", "30s", "--retries", "2"]);
    wait_for_hosts(&gateway, 2);
    // Jobs of about half a second, a few distinct sizes so every reply is
    // checked against the reference without computing each one here.
    let sizes: Vec<u64> = (0..4).map(|i| 40_000_000 + i).collect();
    let expected: HashMap<u64, u64> = sizes.iter().map(|&n| (n, reference_compute(n))).collect();
    // Six restarts, half graceful, half crashes: before the fix about half
    // of graceful restarts and most crashes lost a reply, so passing all six
    // by luck would be a ~1% event.
    for round in 0..6u64 {
        let signal = if round % 2 == 0 { libc::SIGTERM } else { libc::SIGKILL };
        // A reply may wait out the broker's recovery (a JetStream store
        // replayed after a crash, a redelivery after the ack wait, on two
        // shared cores); a lost one never comes, and the gateway would
        // answer it TIMEOUT only after its own deadline (minutes), so a
        // 90 s guard tells the two apart.
        let mut client = gateway.connect().with_reply_timeout(Duration::from_secs(90));
        let jobs: Vec<(String, u64)> =
            (0..10u64).map(|i| (format!("r{round}-{i}"), sizes[(i % 4) as usize])).collect();
        for (id, n) in &jobs {
            client.send(&json!({"id": id, "cmd": "compute", "n": n}));
        }
        gateway.wait_for_stats("jobs running on the hosts", |s| {
            s["hosts"].as_array().is_some_and(|hosts| hosts.iter().any(|h| h["busy"].as_u64() > Some(0)))
        });
        nats.restart_after(signal, Duration::from_secs(2));
        let mut answered: HashMap<String, Value> = HashMap::new();
        for _ in &jobs {
            let reply = client.recv();
            let id = reply["id"].as_str().expect("a reply with our id").to_string();
            assert!(answered.insert(id.clone(), reply).is_none(), "round {round}: {id} answered twice");
        }
        assert!(client.try_recv_timeout_free().is_none(), "round {round}: a reply beyond one per request");
        for (id, n) in &jobs {
            let reply = &answered[id];
            assert_eq!(reply["result"], expected[n], "round {round} (signal {signal}): {id}: {reply}");
        }
    }
    let stats = gateway.stats();
    assert_eq!(stats["remote"]["deadlines_passed"], 0, "{}", stats["remote"]);
    // Nothing stays behind: acknowledged jobs a crash left in the stream are
    // removed by the gateway's janitor (results are never stored).
    eventually("the jobs stream to empty", || nats.stream_messages("TC_JOBS") == 0);
}

#[test]
fn jobs_packed_together_are_answered_once_each_when_their_host_stops_and_their_parcel_runs_again() {
    let Some(nats) = NatsServer::start() else { return };
    let a = WorkerHost::start(&nats.url, "a", "threads", 2, &[]);
    let _b = WorkerHost::start(&nats.url, "b", "threads", 2, &[]);
    let gateway = start_gateway(&nats, &["--retries", "2"]);
    wait_for_hosts(&gateway, 2);
    // A few jobs alone teach the gateway that a step is cheap: from then on
    // short jobs waiting together travel packed.
    for i in 0..5u64 {
        let reply = gateway.request(json!({"id": format!("w{i}"), "cmd": "compute", "n": 100}));
        assert_eq!(reply["result"], reference_compute(100), "{reply}");
    }
    let expected: HashMap<u64, u64> = (1..=20).map(|n| (n, reference_compute(n))).collect();
    let mut clients: Vec<_> =
        (0..4).map(|_| gateway.connect().with_reply_timeout(Duration::from_secs(60))).collect();
    // Host a is stopped just before the jobs come, with a pull request out
    // (a running host always has one, renewed every 2 s): the parcels that
    // request brings stay with a, unanswered, and are delivered again to b
    // after the ack wait; when a goes on it answers them too. Every job of
    // those parcels is then answered by two hosts, and must reach its
    // client once. Three rounds at most, until one has caught a parcel on
    // a (a round misses only if a's request expired in the instant between
    // the stop and the jobs).
    for round in 0..3u64 {
        let jobs: Vec<(String, u64)> = (0..150u64).map(|i| (format!("r{round}-{i}"), 1 + i % 20)).collect();
        send_signal(a.pid(), libc::SIGSTOP);
        for client in clients.iter_mut() {
            for (id, n) in &jobs {
                client.send(&json!({"id": id, "cmd": "compute", "n": n}));
            }
        }
        for (c, client) in clients.iter_mut().enumerate() {
            let mut answered: HashMap<String, Value> = HashMap::new();
            for _ in &jobs {
                let reply = client.recv();
                let id = reply["id"].as_str().expect("a reply with our id").to_string();
                assert!(
                    answered.insert(id.clone(), reply).is_none(),
                    "round {round}, client {c}: {id} answered twice"
                );
            }
            for (id, n) in &jobs {
                assert_eq!(
                    answered[id]["result"], expected[n],
                    "round {round}, client {c}: {id}: {}",
                    answered[id]
                );
            }
        }
        send_signal(a.pid(), libc::SIGCONT);
        if gateway.stats()["remote"]["redelivered"].as_u64() > Some(0) {
            break;
        }
    }
    let remote = gateway.stats()["remote"].clone();
    assert!(remote["largest_parcel"].as_u64() > Some(1), "the jobs travelled packed: {remote}");
    assert!(remote["parcels"].as_u64() < remote["forwarded"].as_u64(), "{remote}");
    assert!(
        remote["redelivered"].as_u64() > Some(0),
        "a parcel held by the stopped host ran again: {remote}"
    );
    // Host a, going on, answers the parcels b has answered already: each of
    // those second results is dropped, and no client hears a second reply.
    eventually("host a's late results to be dropped as duplicates", || {
        gateway.stats()["remote"]["duplicates_dropped"].as_u64() > Some(0)
    });
    for (c, client) in clients.iter_mut().enumerate() {
        assert!(client.try_recv_timeout_free().is_none(), "client {c}: a reply beyond one per request");
    }
    assert_eq!(gateway.stats()["remote"]["deadlines_passed"], 0);
}

#[test]
fn a_new_gateway_answers_its_first_job_while_it_is_still_hearing_from_the_hosts() {
    let Some(nats) = NatsServer::start() else { return };
    let _host = WorkerHost::start(&nats.url, "steady", "threads", 1, &[]);
    // The host is up and beating before the gateway exists.
    let first = start_gateway(&nats, &[]);
    wait_for_hosts(&first, 1);
    drop(first);
    let gateway = start_gateway(&nats, &[]);
    // At once: before this fix the first second's jobs were refused BUSY.
    let reply = gateway.request(json!({"id": 1, "cmd": "compute", "n": 1000}));
    assert_eq!(reply["result"], reference_compute(1000), "{reply}");
}

#[test]
fn stops_finish_while_nats_is_gone_and_a_second_signal_exits_at_once() {
    let Some(mut nats) = NatsServer::start() else { return };
    let mut host = WorkerHost::start(&nats.url, "h", "threads", 1, &[]);
    let mut gateway = start_gateway(&nats, &["--drain-timeout", "1s"]);
    wait_for_hosts(&gateway, 1);
    nats.stop_with(libc::SIGKILL);
    // Both stop by themselves although NATS never comes back (each waits
    // for NATS a bounded time; the helpers give up after 30 s).
    let status = gateway.terminate();
    assert!(status.success(), "{status:?}");
    send_signal(host.pid(), libc::SIGTERM);
    let status =
        wait_for_exit(&mut host.child, Duration::from_secs(30), "the host did not stop with NATS gone");
    assert!(status.success(), "{status:?}");

    // A second signal does not wait for a drain.
    let Some(nats) = NatsServer::start() else { return };
    let host = WorkerHost::start(
        &nats.url,
        "h2",
        "threads",
        1,
        &["--drain-timeout", "600s", "--max-n", "100000000000"],
    );
    let gateway = start_gateway(&nats, &["--max-n", "100000000000"]);
    wait_for_hosts(&gateway, 1);
    let mut client = gateway.connect();
    client.send(&json!({"id": 1, "cmd": "compute", "n": 100_000_000_000u64}));
    gateway.wait_for_stats("the long job held by the host", |s| s["hosts"][0]["busy"] == 1);
    send_signal(host.pid(), libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    send_signal(host.pid(), libc::SIGTERM);
    let mut host = host;
    let status = wait_for_exit(
        &mut host.child,
        Duration::from_secs(30),
        "a second SIGTERM did not end the host's 600 s drain",
    );
    assert_eq!(status.code(), Some(130), "{status:?}");
}

#[test]
fn with_a_farm_key_forged_jobs_results_replays_and_heartbeats_are_refused_and_counted() {
    let Some(nats) = NatsServer::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = farm_key(&dir);
    let (host, metrics) =
        WorkerHost::start_with_metrics_and(&nats.url, "keyed", "threads", 1, &["--farm-key", &key]);
    let gateway = start_gateway(&nats, &["--farm-key", &key, "--metrics-addr", "127.0.0.1:0"]);
    wait_for_hosts(&gateway, 1);
    assert_eq!(gateway.request(json!({"id": 1, "cmd": "compute", "n": 10}))["result"], 8360);
    let stats = gateway.stats();
    let gateway_id = stats["remote"]["gateway"].as_str().unwrap().to_string();
    assert_eq!(stats["remote"]["farm_key"], true);

    let mut stranger = RawNats::connect(&nats.url, None);
    // A job without the farm's signature: stored by JetStream (anyone may
    // publish there), dropped by the host unrun.
    stranger.publish("tc.jobs", None, b"", b"\x01\x02 not a signed job");
    let host_rejected = || host_metric(metrics, "threadcenter_host_messages_rejected_total");
    eventually("the host to drop the forged job", || host_rejected() >= 1.0);
    // A forged result on this gateway's own subject, and forged heartbeats.
    stranger.publish(&format!("tc.answers.{gateway_id}"), None, b"", b"forged result");
    for i in 0..200 {
        let beat = json!({"name": format!("forged-{i}"), "slots": 64, "busy": 0, "jobs_done": 0, "restarts": 0, "mode": "threads"});
        stranger.publish("tc.hosts", None, b"", beat.to_string().as_bytes());
    }
    stranger.until_pong();
    let stats = gateway
        .wait_for_stats("the forgeries counted", |s| s["remote"]["messages_rejected"].as_u64() >= Some(201));
    assert_eq!(stats["hosts"].as_array().unwrap().len(), 1, "no forged host counted: {}", stats["hosts"]);

    // A replay: a real signed heartbeat, captured and sent again.
    let mut listener = RawNats::connect(&nats.url, None);
    listener.subscribe("tc.hosts");
    listener.until_pong();
    let captured = std::iter::from_fn(|| listener.next_message())
        .find(|m| !m.headers.is_empty())
        .expect("a signed heartbeat");
    let before = gateway.stats()["remote"]["messages_rejected"].as_u64().unwrap();
    stranger.publish("tc.hosts", None, &captured.headers, &captured.payload);
    stranger.until_pong();
    gateway.wait_for_stats("the replayed heartbeat refused", |s| {
        s["remote"]["messages_rejected"].as_u64() > Some(before)
    });
    // A replayed job: JetStream refuses a second copy of the same message
    // id, and a changed id breaks the signature.
    let mut jobs = RawNats::connect(&nats.url, None);
    jobs.subscribe("tc.jobs");
    jobs.until_pong();
    let mut client = gateway.connect();
    client.send(&json!({"id": 2, "cmd": "compute", "n": 11}));
    let job =
        std::iter::from_fn(|| jobs.next_message()).find(|m| !m.headers.is_empty()).expect("a signed job");
    assert!(client.recv()["result"].is_u64());
    let reply = jobs.request_with_headers("tc.jobs", &job.headers, &job.payload);
    let ack: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(ack["duplicate"], true, "the same job published again is a duplicate: {ack}");
    let host_before = host_rejected();
    let changed = String::from_utf8(job.headers.clone()).unwrap();
    let changed = changed.replace("Nats-Msg-Id: ", "Nats-Msg-Id: x");
    jobs.publish("tc.jobs", None, changed.as_bytes(), &job.payload);
    jobs.until_pong();
    eventually("the re-labelled job refused", || host_rejected() > host_before);
    // The farm still works, and nothing forged is left in the streams.
    assert_eq!(gateway.request(json!({"id": 3, "cmd": "compute", "n": 10}))["result"], 8360);
    eventually("the jobs stream to empty", || nats.stream_messages("TC_JOBS") == 0);
    drop(host);
}

#[test]
fn a_copy_of_earlier_results_earns_a_receipt_that_names_those_results_only() {
    // Anyone can read a gateway's results subject and send a message there
    // again with a reply subject of their own; the gateway confirms it (a
    // duplicate, as for a host whose receipt was lost). Were that receipt a
    // bare "taken", it would fit a host's pending try on that inbox and make
    // the host let go of results its gateway never had.
    let Some(nats) = NatsServer::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = farm_key(&dir);
    let _host = WorkerHost::start(&nats.url, "keyed", "threads", 1, &["--farm-key", &key]);
    let gateway = start_gateway(&nats, &["--farm-key", &key]);
    wait_for_hosts(&gateway, 1);
    let gateway_id = gateway.stats()["remote"]["gateway"].as_str().unwrap().to_string();
    let mut listener = RawNats::connect(&nats.url, None);
    listener.subscribe(&format!("tc.answers.{gateway_id}"));
    listener.until_pong();
    assert_eq!(gateway.request(json!({"id": 1, "cmd": "compute", "n": 10}))["result"], 8360);
    let captured = listener.next_message().expect("the job's results message");
    let headers = String::from_utf8(captured.headers.clone()).unwrap();
    let signature = headers
        .lines()
        .find_map(|line| line.strip_prefix("Tc-Sig: "))
        .unwrap_or_else(|| panic!("signed results: {headers}"));

    let mut copier = RawNats::connect(&nats.url, None);
    let receipt = copier.request_with_headers(&captured.subject, &captured.headers, &captured.payload);
    assert_eq!(
        String::from_utf8_lossy(&receipt),
        format!("taken {signature}"),
        "bound to the copied results"
    );
    gateway.wait_for_stats("the copy dropped as a duplicate", |s| s["remote"]["duplicates_dropped"] == 1);
    assert_eq!(gateway.request(json!({"id": 2, "cmd": "compute", "n": 10}))["result"], 8360);
}

#[test]
fn a_flood_of_malformed_signatures_is_counted_with_a_line_per_kind_not_per_message() {
    // A stranger who can publish can send thousands of messages a second
    // with a signature header that is not ours; each must cost a counter,
    // not a line of the gateway's log.
    let Some(nats) = NatsServer::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = farm_key(&dir);
    let _host = WorkerHost::start(&nats.url, "keyed", "threads", 1, &["--farm-key", &key]);
    let (mut gateway, log_path) = gateway_logging_to(&dir, &nats, &["--farm-key", &key]);
    wait_for_hosts(&gateway, 1);
    let subject = format!("tc.answers.{}", gateway.stats()["remote"]["gateway"].as_str().unwrap());
    let mut stranger = RawNats::connect(&nats.url, None);
    for _ in 0..500 {
        stranger.publish(&subject, None, b"NATS/1.0\r\nTc-Sig: bad\r\n\r\n", b"x");
    }
    stranger.until_pong();
    gateway.wait_for_stats("every malformed message counted", |s| {
        s["remote"]["messages_rejected"].as_u64() >= Some(500)
    });
    assert_eq!(gateway.request(json!({"id": 1, "cmd": "compute", "n": 10}))["result"], 8360);
    assert!(gateway.terminate().success());
    let text = std::fs::read_to_string(&log_path).unwrap();
    let lines = text.lines().filter(|line| line.contains("dropping a results message")).count();
    assert_eq!(lines, 1, "one line for 500 messages:\n{text}");
}

#[test]
fn a_host_of_an_earlier_release_is_named_in_the_gateways_log() {
    // A farm runs one release (its messages change between releases); a
    // member of another must be said, not found out from jobs that time out.
    let Some(nats) = NatsServer::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (mut gateway, log_path) = gateway_logging_to(&dir, &nats, &[]);
    // A beat as releases before the version field sent it (no farm key here,
    // so an unsigned one is taken).
    let mut old_host = RawNats::connect(&nats.url, None);
    let beat =
        json!({"name": "old-h1", "slots": 1, "busy": 0, "jobs_done": 0, "restarts": 0, "mode": "threads"});
    old_host.publish("tc.hosts", None, b"", beat.to_string().as_bytes());
    old_host.until_pong();
    gateway.wait_for_stats("the old host heard", |s| s["hosts"].as_array().is_some_and(|h| h.len() == 1));
    assert!(gateway.terminate().success());
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        text.contains("host \"old-h1\" speaks version 1 of the messages between gateways and hosts")
            && text.contains("run one release on every gateway and host"),
        "{text}"
    );
}

/// One value from a host's `/metrics`.
fn host_metric(metrics: std::net::SocketAddr, name: &str) -> f64 {
    let (_, body) = common::http_get(metrics, "/metrics");
    common::parse_exposition(&body).get(name).copied().unwrap_or(0.0)
}

/// A second, different key file.
fn other_farm_key(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("other.key");
    std::fs::write(&path, "b3RoZXItZmFybS1rZXktZm9yLXRlc3RzLTk4NzY1NDMyMTAw\n").unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn a_farm_key_that_differs_is_named_in_the_busy_reply_and_in_both_readyz() {
    // Each way a key can differ between a gateway and its hosts: the
    // client hears why at once (not a job deadline later, nor "start a
    // host" while one runs), and both sides' /readyz say it.
    let Some(nats) = NatsServer::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (key, other) = (farm_key(&dir), other_farm_key(&dir));
    let cases: [(&[&str], &[&str], &str, &str); 3] = [
        // (host's flags, gateway's flags, in the BUSY reply, in the host's /readyz)
        (&["--farm-key", &key], &[], "this process has no --farm-key", "not signed"),
        (&["--farm-key", &key], &["--farm-key", &other], "different farm key", "different farm key"),
        (&[], &["--farm-key", &key], "without --farm-key", "this process has no --farm-key"),
    ];
    for (i, (host_flags, gateway_flags, told, host_told)) in cases.into_iter().enumerate() {
        let name = format!("h{i}");
        let (host, metrics) = WorkerHost::start_with_metrics_and(&nats.url, &name, "threads", 1, host_flags);
        let mut flags = vec!["--metrics-addr", "127.0.0.1:0"];
        flags.extend_from_slice(gateway_flags);
        let gateway = start_gateway(&nats, &flags);
        gateway
            .wait_for_stats("a heartbeat dropped", |s| s["remote"]["messages_rejected"].as_u64() >= Some(1));
        let reply = gateway.request(json!({"id": 1, "cmd": "compute", "n": 10}));
        assert_eq!(common::error_code(&reply), Some("BUSY"), "case {i}: {reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains(told) && message.contains(&name), "case {i}: {message}");
        assert!(!message.contains("start one with tc-worker"), "case {i}: {message}");
        let (_, body) = gateway.http_get("/readyz");
        assert!(body.contains(told), "case {i}: gateway /readyz: {body}");
        eventually("the host's /readyz to name the key", || {
            common::http_get(metrics, "/readyz").1.contains(host_told)
        });
        drop(gateway);
        drop(host);
    }
}

#[test]
fn a_host_that_stops_cleanly_is_counted_gone_at_once_as_having_left() {
    let Some(nats) = NatsServer::start() else { return };
    let mut host = WorkerHost::start(&nats.url, "leaver", "threads", 1, &[]);
    let gateway = start_gateway(&nats, &[]);
    wait_for_hosts(&gateway, 1);
    send_signal(host.pid(), libc::SIGTERM);
    assert!(host.child.wait().unwrap().success());
    // Its last heartbeat says it left: not alive, and marked so (a host
    // that died would stay "alive" for the host timeout, then be lost).
    let stats = gateway.wait_for_stats("the host marked as left", |s| s["hosts"][0]["left"] == true);
    assert_eq!(stats["hosts"][0]["alive"], false, "{stats}");
    assert_eq!(stats["remote"]["hosts_alive"], 0, "{stats}");
}

#[test]
fn without_a_key_the_farm_warns_at_start_and_in_readyz() {
    let Some(nats) = NatsServer::start() else { return };
    let _host = WorkerHost::start(&nats.url, "h", "threads", 1, &[]);
    let gateway = start_gateway(&nats, &["--metrics-addr", "127.0.0.1:0"]);
    wait_for_hosts(&gateway, 1);
    eventually("ready", || gateway.http_get("/readyz").0 == 200);
    let (_, body) = gateway.http_get("/readyz");
    assert!(body.contains("no --farm-key"), "{body}");
    assert_eq!(gateway.stats()["remote"]["farm_key"], false);
}

#[test]
fn without_a_key_a_heartbeat_flood_is_capped_and_counted() {
    // Without a farm key anyone may publish heartbeats; what they can do is
    // bounded: names and fields are checked, at most 1,024 hosts are kept
    // (the gateway's MAX_HOSTS), and every refusal is counted.
    let Some(nats) = NatsServer::start() else { return };
    let _host = WorkerHost::start(&nats.url, "real", "threads", 1, &[]);
    let gateway = start_gateway(&nats, &["--metrics-addr", "127.0.0.1:0"]);
    wait_for_hosts(&gateway, 1);
    let mut stranger = RawNats::connect(&nats.url, None);
    let beat = |name: &str| {
        json!({"name": name, "slots": 1, "busy": 0, "jobs_done": 0, "restarts": 0, "mode": "threads", "holding": []})
            .to_string()
    };
    // 50 heartbeats with 100 KB names (the memory attack) ...
    let long_name = "x".repeat(100_000);
    for i in 0..50 {
        stranger.publish("tc.hosts", None, b"", beat(&format!("{long_name}{i}")).as_bytes());
    }
    // ... and more distinct well-formed names than the table holds.
    for i in 0..1_100 {
        stranger.publish("tc.hosts", None, b"", beat(&format!("forged-{i}")).as_bytes());
    }
    stranger.until_pong();
    let refused_at_least = 50 + (1_100 - (1_024 - 1));
    let stats = gateway.wait_for_stats("the flood refused and counted", |s| {
        s["remote"]["heartbeats_refused"].as_u64() >= Some(refused_at_least)
    });
    let hosts = stats["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 1_024, "the table is capped");
    assert!(hosts.iter().any(|h| h["name"] == "real"), "the real host kept its place");
    assert!(hosts.iter().all(|h| h["name"].as_str().unwrap().len() <= 64), "no long name kept");
    let metrics = gateway.scrape();
    assert!(metrics["threadcenter_nats_heartbeats_refused_total"] >= refused_at_least as f64, "{metrics:?}");
    // The farm goes on answering.
    assert_eq!(gateway.request(json!({"id": 1, "cmd": "compute", "n": 10}))["result"], 8360);
}

#[test]
fn a_killed_gateways_waiting_jobs_are_not_run_for_nobody_and_leave_the_stream() {
    let Some(nats) = NatsServer::start() else { return };
    let (_host, metrics) =
        WorkerHost::start_with_metrics_and(&nats.url, "h", "threads", 1, &["--allow-chaos"]);
    let mut gateway = start_gateway(&nats, &["--allow-chaos"]);
    wait_for_hosts(&gateway, 1);
    // One slot: the first job runs (13 s), the second waits in the stream
    // — until after its gateway has been silent for the 10 s that make a
    // gateway dead to a host (a shorter silence may be a reconnect).
    let mut client = gateway.connect();
    client.send(&json!({"id": 1, "cmd": "sleep", "ms": 13000}));
    client.send(&json!({"id": 2, "cmd": "compute", "n": 10u64}));
    gateway.wait_for_stats("both jobs out", |s| s["remote"]["forwarded"] == 2);
    send_signal(gateway.pid(), libc::SIGKILL);
    let _ = gateway.wait_exit();
    eventually("the waiting job dropped unrun", || {
        host_metric(metrics, "threadcenter_host_jobs_orphaned_total") >= 1.0
    });
    assert_eq!(host_metric(metrics, "threadcenter_host_jobs_total"), 1.0, "only the job already running ran");
    eventually("the jobs stream to empty", || nats.stream_messages("TC_JOBS") == 0);
}

#[test]
fn results_wait_on_their_host_for_a_stopped_gateway_and_the_job_runs_once() {
    // Results travel to their gateway as a request it confirms; the host
    // acknowledges the job only on that receipt. A gateway frozen (SIGSTOP)
    // past the ack wait while its job finishes must get the result when it
    // wakes, exactly once — and the job must not have run again meanwhile:
    // its host keeps it "in progress" while the results wait.
    let Some(nats) = NatsServer::start() else { return };
    let (_host, metrics) = WorkerHost::start_with_metrics_and(&nats.url, "h", "threads", 1, &[]);
    let gateway = start_gateway(&nats, &[]);
    wait_for_hosts(&gateway, 1);
    let mut client = gateway.connect();
    // About a second of work; a compute job may run again (--retries 1), so
    // a redelivery would show as a second run.
    let n = 90_000_000u64;
    client.send(&json!({"id": "held", "cmd": "compute", "n": n}));
    gateway.wait_for_stats("the job running on the host", |s| s["hosts"][0]["busy"] == 1);
    send_signal(gateway.pid(), libc::SIGSTOP);
    // Past the 5 s ack wait, short of the 10 s that make a gateway dead.
    std::thread::sleep(Duration::from_millis(8500));
    send_signal(gateway.pid(), libc::SIGCONT);
    let reply = client.recv();
    assert_eq!(reply["id"], "held", "{reply}");
    assert_eq!(reply["result"], reference_compute(n), "{reply}");
    // (No "attempts" field: one delivery.)
    assert!(reply.get("attempts").is_none(), "not redelivered: {reply}");
    assert!(client.try_recv_timeout_free().is_none(), "exactly one reply");
    assert_eq!(host_metric(metrics, "threadcenter_host_jobs_total"), 1.0, "the job ran once");
    eventually("the job acknowledged", || nats.stream_messages("TC_JOBS") == 0);
    assert_eq!(gateway.stats()["remote"]["redelivered"], 0);
}

#[test]
fn a_host_rechecks_every_job_against_its_own_flags_and_stays_up() {
    let Some(nats) = NatsServer::start() else { return };
    let empty_models = tempfile::tempdir().unwrap();
    let models = empty_models.path().to_str().unwrap();
    let _host = WorkerHost::start(&nats.url, "strict", "threads", 1, &["--models-dir", models]);
    // A gateway far more permissive than the host.
    let gateway = start_gateway(&nats, &["--allow-chaos", "--max-n", "100000000000"]);
    wait_for_hosts(&gateway, 1);
    let crash = gateway.request(json!({"id": 1, "cmd": "crash"}));
    assert_eq!(crash["error"]["code"], "UNKNOWN_COMMAND", "{crash}");
    assert!(crash["error"]["message"].as_str().unwrap().contains("tc-worker --allow-chaos"), "{crash}");
    let huge = gateway.request(json!({"id": 2, "cmd": "compute", "n": 18_000_000_000u64}));
    assert_eq!(huge["error"]["code"], "BAD_REQUEST", "{huge}");
    assert!(huge["error"]["message"].as_str().unwrap().contains("tc-worker --max-n"), "{huge}");
    let sample = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/models/samples/fire-1.png")).unwrap();
    let image = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(&sample)
    };
    let predict =
        gateway.request(json!({"id": 3, "cmd": "predict", "image_b64": image, "filename": "fire-1.png"}));
    assert_eq!(
        predict["error"]["code"], "MODEL_UNAVAILABLE",
        "the host's own models dir is empty: {predict}"
    );
    assert!(predict["error"]["message"].as_str().unwrap().contains("--models-dir"), "{predict}");
    // Still alive, and still working.
    assert_eq!(gateway.request(json!({"id": 4, "cmd": "compute", "n": 10}))["result"], 8360);
}

#[test]
fn a_job_that_kills_every_host_it_reaches_is_answered_worker_crashed() {
    let Some(nats) = NatsServer::start() else { return };
    let hosts: Vec<WorkerHost> = (0..3)
        .map(|i| WorkerHost::start(&nats.url, &format!("c{i}"), "threads", 1, &["--allow-chaos"]))
        .collect();
    let gateway = start_gateway(&nats, &["--allow-chaos", "--retries", "1"]);
    wait_for_hosts(&gateway, 3);
    // Let the hosts' links be up long enough to judge redeliveries.
    std::thread::sleep(Duration::from_secs(5));
    // A crash in thread mode takes its whole host down (that is the lesson);
    // an injected fault is allowed one attempt, so the next host that is
    // handed it — with nobody alive holding it — answers WORKER_CRASHED.
    let reply = gateway.request(json!({"id": 1, "cmd": "crash"}));
    assert_eq!(reply["error"]["code"], "WORKER_CRASHED", "{reply}");
    drop(hosts);
}
