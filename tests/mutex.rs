//! The accelerator mutex against the real server: FIFO order, renewal,
//! release by a non-owner, lease expiry with hand-over, queue expiry (the fix
//! for IdentyFire's starvation bug), fencing tokens, and eight clients
//! contending through `tc-client --cmd lock-cycle`.
//!
//! The exact timing rules are unit-tested with made-up clocks in
//! `src/lock.rs`; here leases are real, so the tests that need one to run
//! out use short leases and wait well past them, and the others use leases
//! far longer than the test.

mod common;

use std::time::Duration;

use base64::Engine;
use common::{error_code, run_client, TestClient, TestServer};
use serde_json::{json, Value};

/// `mutex_acquire` as IdentyFire's clients send it: known by name alone,
/// so one connection can play several clients.
fn acquire(client: &mut TestClient, who: &str) -> Value {
    client.request(json!({"method": "mutex_acquire", "params": {"client_id": who}}))
}

/// `mutex_release` as IdentyFire's clients send it (no token needed).
fn release(client: &mut TestClient, who: &str) -> bool {
    client.request(json!({"method": "mutex_release", "params": {"client_id": who}}))["success"] == true
}

fn sample() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/samples/fire-1.png");
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap())
}

#[test]
fn fifo_order_renewal_and_release_by_a_non_owner() {
    let server = TestServer::start("threads", 1, &["--lock-timeout", "60s"]);
    let mut c = server.connect();
    let first = acquire(&mut c, "a");
    assert_eq!(first["status"], "GRANTED", "{first}");
    assert_eq!(first["queue_position"], 0);
    let token = first["token"].as_u64().unwrap();
    assert_eq!(acquire(&mut c, "b")["queue_position"], 1);
    assert_eq!(acquire(&mut c, "c")["queue_position"], 2);
    assert_eq!(acquire(&mut c, "b")["queue_position"], 1, "queued once");
    let renewed = acquire(&mut c, "a");
    assert_eq!((renewed["status"].as_str(), renewed["token"].as_u64()), (Some("GRANTED"), Some(token)));
    assert!(!release(&mut c, "b"), "b does not own the lock");
    assert!(!release(&mut c, "nobody"));
    assert!(release(&mut c, "a"));
    // Handed to the head of the queue: b, then c.
    let b = acquire(&mut c, "b");
    assert_eq!(b["status"], "GRANTED", "{b}");
    assert!(b["token"].as_u64().unwrap() > token);
    assert_eq!(acquire(&mut c, "c")["queue_position"], 1);
    assert!(release(&mut c, "b"));
    assert_eq!(acquire(&mut c, "c")["status"], "GRANTED");
    let missing = c.request(json!({"id": 3, "cmd": "mutex_acquire"}));
    assert_eq!(error_code(&missing), Some("BAD_REQUEST"));
    assert!(missing["error"]["message"].as_str().unwrap().contains("Missing client_id"));
}

#[test]
fn an_expired_lease_hands_the_lock_over_and_fences_the_old_holder() {
    let server = TestServer::start("threads", 1, &["--lock-timeout", "300ms", "--predict-lock"]);
    let mut c = server.connect();
    let old = acquire(&mut c, "crashed")["token"].as_u64().unwrap();
    // b waits on the server; "crashed" never comes back.
    let granted =
        c.request(json!({"method": "mutex_acquire", "params": {"client_id": "b", "wait_ms": 20_000}}));
    assert_eq!(granted["status"], "GRANTED", "{granted}");
    let new = granted["token"].as_u64().unwrap();
    assert!(new > old);
    // The old holder wakes up and tries to use its stale grant.
    let stale = c.request(
        json!({"id": 2, "cmd": "predict", "client_id": "crashed", "token": old, "image_b64": sample()}),
    );
    assert_eq!(error_code(&stale), Some("LOCK_REQUIRED"), "{stale}");
    // b's own token with a wrong number is refused too; the right one works.
    let wrong = c.request(
        json!({"id": 3, "cmd": "predict", "client_id": "b", "token": new - 1, "image_b64": sample()}),
    );
    assert!(wrong["error"]["message"].as_str().unwrap().contains("stale fencing token"), "{wrong}");
    let ok =
        c.request(json!({"id": 4, "cmd": "predict", "client_id": "b", "token": new, "image_b64": sample()}));
    assert_eq!(ok["result"]["fire_detected"], true, "{ok}");
    assert!(server.stats()["mutex"]["lease_expiries"].as_u64().unwrap() >= 1);
}

#[test]
fn a_queued_client_that_went_away_does_not_block_the_lock() {
    // IdentyFire's bug: a queued client that disappears stays at the head of
    // the queue and nobody gets the lock again. Here it leaves the queue once
    // it has not asked for a lease (2 s) while the owner keeps renewing —
    // every 100 ms, until the server says the ghost is gone, so only a stall
    // of nearly 2 s on the test's side could cost the owner its lease.
    let server = TestServer::start("threads", 1, &["--lock-timeout", "2s"]);
    let mut c = server.connect();
    assert_eq!(acquire(&mut c, "a")["status"], "GRANTED");
    assert_eq!(acquire(&mut c, "ghost")["queue_position"], 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while server.stats()["mutex"]["queue_expiries"] != 1 {
        assert!(std::time::Instant::now() < deadline, "the ghost never left the queue");
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(acquire(&mut c, "a")["status"], "GRANTED", "the owner renews");
    }
    assert!(release(&mut c, "a"));
    assert_eq!(acquire(&mut c, "c")["status"], "GRANTED", "the ghost did not get the lock");
    let mutex = &server.stats()["mutex"];
    assert_eq!(mutex["queue_expiries"], 1, "{mutex}");
}

#[test]
fn fencing_tokens_strictly_increase() {
    let server = TestServer::start("threads", 1, &[]);
    let mut c = server.connect();
    let mut last = 0;
    for round in 0..10 {
        let who = format!("client-{}", round % 3);
        let granted = acquire(&mut c, &who);
        let token = granted["token"].as_u64().unwrap();
        assert!(token > last, "{token} after {last}");
        last = token;
        assert!(release(&mut c, &who));
    }
}

#[test]
fn eight_clients_contending_never_hold_the_lock_together() {
    let server = TestServer::start("processes", 2, &["--predict-lock"]);
    let port = server.addr.port().to_string();
    let json_path = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    let out = run_client(&[
        "--port",
        &port,
        "--cmd",
        "lock-cycle",
        "--concurrency",
        "8",
        "--requests",
        "80",
        "--json",
        json_path.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(report["cycles"], 80, "{report}");
    assert_eq!(report["exclusion_violations"], 0, "{report}");
    assert_eq!(report["predict_errors"], 0, "{report}");
    assert_eq!(report["per_client"].as_array().unwrap().len(), 8);
    assert!(stdout.contains("never two holders at once"), "{stdout}");
    let grants = server.stats()["mutex"]["grants"].as_u64().unwrap();
    assert!(grants >= 80, "every turn was a grant: {grants}");
}
