//! `tc-client --cmd lock-cycle`: clients taking turns on the accelerator
//! mutex, as IdentyFire's clients do — acquire (waiting on the server),
//! predict, release — measured and checked.
//!
//! Each connection is one client (`client_id` = `tc-client-<pid>-<n>`) in a
//! loop of three calls. The report gives the lock's throughput, how long
//! clients waited for it and held it, how evenly the waits fell on the
//! clients (fairness), and proof of mutual exclusion: sorted by fencing
//! token, every grant must start after the previous holder released
//! (server clock, microseconds) and the tokens must rise with time. A single
//! overlap is reported as a violation and fails the run.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::mix::ImagePayloads;
use super::options::{BenchOptions, StopAfter};
use super::ServerUnderTest;
use crate::client::connection::ServerConnection;
use crate::error::{Error, Result};
use crate::units::micros;

/// One turn of one client.
#[derive(Debug, Clone)]
struct Cycle {
    client: usize,
    token: u64,
    grant_us: u64,
    /// `None` when the release was refused: the lease had run out.
    release_us: Option<u64>,
    wait_us: u64,
    hold_us: u64,
    predict_ok: bool,
}

/// Per-client figures, for fairness.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ClientTurns {
    /// The client's `client_id`.
    pub(crate) client_id: String,
    /// Turns it had.
    pub(crate) cycles: u64,
    /// Its mean wait for the lock, in milliseconds.
    pub(crate) mean_wait_ms: f64,
    /// Its longest wait, in milliseconds.
    pub(crate) max_wait_ms: f64,
}

/// Percentiles of a latency, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Spread {
    /// Mean.
    pub(crate) mean_ms: f64,
    /// Median.
    pub(crate) p50_ms: f64,
    /// 99th percentile.
    pub(crate) p99_ms: f64,
    /// Largest.
    pub(crate) max_ms: f64,
}

/// What a lock-cycle run found.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LockCycleReport {
    /// Clients (connections).
    pub(crate) clients: usize,
    /// Completed turns (acquire, predict, release).
    pub(crate) cycles: u64,
    /// Turns whose prediction failed.
    pub(crate) predict_errors: u64,
    /// Turns whose release was refused (the lease ran out first).
    pub(crate) lost_leases: u64,
    /// Seconds from the first acquire to the last release.
    pub(crate) seconds: f64,
    /// Turns per second: the lock's throughput.
    pub(crate) cycles_per_second: f64,
    /// Time from asking for the lock to holding it.
    pub(crate) wait: Spread,
    /// Time from holding the lock to having released it.
    pub(crate) hold: Spread,
    /// Each client's turns and waits.
    pub(crate) per_client: Vec<ClientTurns>,
    /// Largest of the clients' mean waits over the smallest (1 = perfectly even).
    pub(crate) mean_wait_ratio: f64,
    /// Pairs of turns that overlapped, or tokens out of order: must be 0.
    pub(crate) exclusion_violations: u64,
    /// Errors that ended a client's loop early.
    pub(crate) connection_errors: Vec<String>,
}

impl LockCycleReport {
    /// Whether the run found a problem.
    pub(crate) fn failed(&self) -> bool {
        self.exclusion_violations > 0 || self.predict_errors > 0 || !self.connection_errors.is_empty()
    }

    /// The summary printed after a run.
    pub(crate) fn summary(&self) -> String {
        let mut out = String::new();
        let line = |out: &mut String, text: String| {
            out.push_str(&text);
            out.push('\n');
        };
        line(
            &mut out,
            format!("lock-cycle: {} clients, {} turns in {:.2} s", self.clients, self.cycles, self.seconds),
        );
        line(&mut out, format!("  throughput   {:.1} turns/s", self.cycles_per_second));
        for (name, s) in [("wait", &self.wait), ("hold", &self.hold)] {
            line(
                &mut out,
                format!(
                    "  {name:<12} mean {:.2} ms  p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
                    s.mean_ms, s.p50_ms, s.p99_ms, s.max_ms
                ),
            );
        }
        line(&mut out, format!("  fairness     largest mean wait / smallest = {:.2}", self.mean_wait_ratio));
        for client in &self.per_client {
            line(
                &mut out,
                format!(
                    "    {:<24} {:>6} turns  mean wait {:>8.2} ms  max wait {:>8.2} ms",
                    client.client_id, client.cycles, client.mean_wait_ms, client.max_wait_ms
                ),
            );
        }
        let verdict = if self.exclusion_violations == 0 { "never two holders at once" } else { "VIOLATED" };
        line(&mut out, format!("  exclusion    {verdict} ({} violations)", self.exclusion_violations));
        line(
            &mut out,
            format!(
                "  problems     {} prediction errors, {} lost leases",
                self.predict_errors, self.lost_leases
            ),
        );
        for error in &self.connection_errors {
            line(&mut out, format!("  error: {error}"));
        }
        out
    }
}

/// Runs the lock-cycle benchmark (against an embedded server started with
/// `--predict-lock`, or the given one).
///
/// # Errors
/// When the server cannot be reached or started.
pub(crate) fn run(options: &BenchOptions) -> Result<LockCycleReport> {
    if options.images.is_empty() {
        return Err(Error::Config("lock-cycle predicts: it needs images (--images DIR)".into()));
    }
    let server = ServerUnderTest::start_with(options, true)?;
    let result = run_against(&server, options);
    server.stop();
    result
}

fn run_against(server: &ServerUnderTest, options: &BenchOptions) -> Result<LockCycleReport> {
    let token = options.auth_token.as_deref();
    let mut connections = Vec::with_capacity(options.concurrency);
    for _ in 0..options.concurrency {
        connections.push(server.connect(token)?);
    }
    // Shared by the client threads with `Relaxed` ordering: `budget` is a
    // count handed out by `fetch_update` (atomic on its own, whatever the
    // ordering), and `failed` only says "stop soon" — a thread that sees it
    // one turn late does one more turn. The results travel in each thread's
    // return value, published by `join`.
    let budget = Arc::new(AtomicU64::new(match options.stop {
        StopAfter::Requests(n) => n,
        StopAfter::Duration(_) => u64::MAX,
    }));
    let deadline = match options.stop {
        StopAfter::Duration(d) => Some(Instant::now() + d),
        StopAfter::Requests(_) => None,
    };
    let failed = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles: Vec<_> = connections
        .into_iter()
        .enumerate()
        .map(|(index, connection)| {
            let (budget, failed, images) = (Arc::clone(&budget), Arc::clone(&failed), options.images.clone());
            let wait = options.timeout;
            thread::Builder::new()
                .name(format!("lock-cycle-{index}"))
                .spawn(move || client_loop(index, connection, &images, wait, &budget, deadline, &failed))
                .map_err(|e| Error::io("starting a lock-cycle thread", e))
        })
        .collect::<Result<_>>()?;
    let mut cycles = Vec::new();
    let mut errors = Vec::new();
    for handle in handles {
        match handle.join() {
            Ok((done, error)) => {
                cycles.extend(done);
                errors.extend(error);
            }
            Err(_) => errors.push("a lock-cycle thread panicked".into()),
        }
    }
    Ok(analyse(options.concurrency, cycles, started.elapsed(), errors))
}

/// The name a connection uses as `client_id`.
fn client_name(index: usize) -> String {
    format!("tc-client-{}-{index}", std::process::id())
}

/// One client's turns until the budget or the deadline runs out.
fn client_loop(
    index: usize,
    mut connection: ServerConnection,
    images: &ImagePayloads,
    wait: Duration,
    budget: &AtomicU64,
    deadline: Option<Instant>,
    failed: &AtomicBool,
) -> (Vec<Cycle>, Option<String>) {
    let client = client_name(index);
    let client_json = serde_json::to_string(&client).expect("a string serializes");
    let wait_ms = (wait.as_millis() as u64).min(crate::protocol::MAX_MUTEX_WAIT_MS);
    let mut cycles = Vec::new();
    let mut id = 0u64;
    let mut call =
        |connection: &mut ServerConnection, body: String| -> std::result::Result<serde_json::Value, String> {
            id += 1;
            let request = format!(r#"{{"id":{id},{body}}}"#);
            connection.send(request.as_bytes()).map_err(|e| e.to_string())?;
            let reply = connection.receive().map_err(|e| e.to_string())?;
            let value: serde_json::Value =
                serde_json::from_slice(reply).map_err(|e| format!("bad reply: {e}"))?;
            if let Some(error) = value.get("error") {
                return Err(format!("{} {}", error["code"], error["message"]));
            }
            Ok(value["result"].clone())
        };
    loop {
        if failed.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
            return (cycles, None);
        }
        if budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(1)).is_err() {
            return (cycles, None);
        }
        let asked = Instant::now();
        // Wait on the server; if the wait runs out while still queued, ask
        // again (which also keeps our place in the queue).
        let (token, grant_us) = loop {
            let acquire = format!(r#""cmd":"mutex_acquire","client_id":{client_json},"wait_ms":{wait_ms}"#);
            match call(&mut connection, acquire) {
                Ok(result) if result["status"] == "GRANTED" => {
                    break (
                        result["token"].as_u64().unwrap_or(0),
                        result["granted_at_us"].as_u64().unwrap_or(0),
                    )
                }
                Ok(_) if deadline.is_some_and(|d| Instant::now() >= d) => return (cycles, None),
                Ok(_) => continue,
                Err(e) => {
                    failed.store(true, Ordering::Relaxed);
                    return (cycles, Some(format!("{client}: mutex_acquire failed: {e}")));
                }
            }
        };
        let granted = Instant::now();
        let image = images.predict_fields(cycles.len() as u64 + index as u64);
        let predict = format!(r#""cmd":"predict","client_id":{client_json},"token":{token},{image}"#);
        let predict_ok = call(&mut connection, predict).is_ok();
        let release = format!(r#""cmd":"mutex_release","client_id":{client_json},"token":{token}"#);
        let release_us = match call(&mut connection, release) {
            Ok(result) if result["success"] == true => result["released_at_us"].as_u64(),
            Ok(_) => None,
            Err(e) => {
                failed.store(true, Ordering::Relaxed);
                return (cycles, Some(format!("{client}: mutex_release failed: {e}")));
            }
        };
        cycles.push(Cycle {
            client: index,
            token,
            grant_us,
            release_us,
            wait_us: micros(granted - asked),
            hold_us: micros(granted.elapsed()),
            predict_ok,
        });
    }
}

/// Counts overlapping turns: sorted by token, each grant must come at or
/// after the previous release, and tokens must never repeat.
fn exclusion_violations(cycles: &[Cycle]) -> u64 {
    let mut sorted: Vec<&Cycle> = cycles.iter().collect();
    sorted.sort_by_key(|c| c.token);
    sorted
        .windows(2)
        .filter(|pair| {
            let (before, after) = (pair[0], pair[1]);
            let repeated = before.token == after.token;
            let overlapped = before.release_us.is_some_and(|released| after.grant_us < released);
            let out_of_order = after.grant_us < before.grant_us;
            repeated || overlapped || out_of_order
        })
        .count() as u64
}

fn spread(values: impl Iterator<Item = u64>) -> Spread {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
        .expect("one hour at 3 significant figures is valid");
    for v in values {
        histogram.saturating_record(v.max(1));
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Spread {
        mean_ms: histogram.mean() / 1000.0,
        p50_ms: ms(histogram.value_at_quantile(0.5)),
        p99_ms: ms(histogram.value_at_quantile(0.99)),
        max_ms: ms(histogram.max()),
    }
}

fn analyse(
    clients: usize,
    cycles: Vec<Cycle>,
    elapsed: Duration,
    connection_errors: Vec<String>,
) -> LockCycleReport {
    let per_client: Vec<ClientTurns> = (0..clients)
        .map(|index| {
            let mine: Vec<&Cycle> = cycles.iter().filter(|c| c.client == index).collect();
            let count = mine.len() as u64;
            let total: u64 = mine.iter().map(|c| c.wait_us).sum();
            ClientTurns {
                client_id: client_name(index),
                cycles: count,
                mean_wait_ms: if count == 0 { 0.0 } else { total as f64 / count as f64 / 1000.0 },
                max_wait_ms: mine.iter().map(|c| c.wait_us).max().unwrap_or(0) as f64 / 1000.0,
            }
        })
        .collect();
    let means: Vec<f64> = per_client.iter().filter(|c| c.cycles > 0).map(|c| c.mean_wait_ms).collect();
    let (low, high) = means.iter().fold((f64::MAX, 0.0f64), |(lo, hi), m| (lo.min(*m), hi.max(*m)));
    let seconds = elapsed.as_secs_f64();
    LockCycleReport {
        clients,
        cycles: cycles.len() as u64,
        predict_errors: cycles.iter().filter(|c| !c.predict_ok).count() as u64,
        lost_leases: cycles.iter().filter(|c| c.release_us.is_none()).count() as u64,
        seconds,
        cycles_per_second: if seconds > 0.0 { cycles.len() as f64 / seconds } else { 0.0 },
        wait: spread(cycles.iter().map(|c| c.wait_us)),
        hold: spread(cycles.iter().map(|c| c.hold_us)),
        per_client,
        mean_wait_ratio: if means.is_empty() || low <= 0.0 { 1.0 } else { high / low },
        exclusion_violations: exclusion_violations(&cycles),
        connection_errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(token: u64, grant_us: u64, release_us: u64) -> Cycle {
        Cycle {
            client: 0,
            token,
            grant_us,
            release_us: Some(release_us),
            wait_us: 1,
            hold_us: 1,
            predict_ok: true,
        }
    }

    #[test]
    fn overlaps_and_disorder_are_counted() {
        let clean = [turn(1, 0, 10), turn(2, 10, 20), turn(3, 25, 30)];
        assert_eq!(exclusion_violations(&clean), 0);
        let overlap = [turn(1, 0, 10), turn(2, 5, 20)];
        assert_eq!(exclusion_violations(&overlap), 1);
        let disorder = [turn(1, 50, 60), turn(2, 10, 20)];
        assert!(exclusion_violations(&disorder) >= 1);
        let repeated = [turn(4, 0, 10), turn(4, 10, 20)];
        assert_eq!(exclusion_violations(&repeated), 1);
    }
}
