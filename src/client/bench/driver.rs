//! One benchmark connection: a sender thread and a receiver thread.
//!
//! ```text
//!  sender ── insert(id → times) ──▶ Window (Mutex + Condvar) ◀── take(id) ── receiver
//!    │  writes request frames              ▲ waits for a slot          │ reads reply frames,
//!    ▼                                     │ (closed loop)             ▼ records latencies
//!  socket ─────────────────────────────── server ─────────────────────────▶ socket
//! ```
//!
//! - **Closed loop**: the sender waits until fewer than `pipeline` requests
//!   are in flight, then sends the next one at once. A reply frees a slot.
//! - **Open loop**: the sender sends request *k* at `start + offset + k ×
//!   interval`, whatever the replies are doing. If it falls behind (the server
//!   pushes back), the delay still counts: latency is measured from the
//!   scheduled time, so coordinated omission is corrected.
//!
//! The receiver reads with a short socket timeout so that, between replies,
//! it can expire requests older than `--timeout` and close finished
//! intervals of the interval log. Frames are reassembled across reads by a
//! [`FrameBuffer`], so a timeout in the middle of a frame loses nothing.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::value::RawValue;

use super::mix::{BenchCommand, MixSequence};
use super::options::{LoadModel, StopAfter, Warmup};
use super::recorder::{Recorder, Sample};
use super::{Plan, RunSinks};
use crate::frame::{FrameBuffer, DEFAULT_MAX_FRAME};
use crate::units::micros;

/// How often the receiver wakes up without a reply, to expire timeouts.
const RECEIVER_TICK: Duration = Duration::from_millis(20);
/// In an open loop, at most this many requests may wait for replies on one
/// connection; past it the sender waits (and the wait shows in the corrected
/// latency). It bounds the client's memory when the server falls behind.
const OPEN_LOOP_MAX_IN_FLIGHT: usize = 100_000;
/// Ids of timed-out requests remembered to recognise their late replies.
const REMEMBERED_TIMEOUTS: usize = 100_000;

/// How one request ended, for the per-request CSV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOutcome {
    /// A result (verified, with `--verify`).
    Ok,
    /// An error reply with this code.
    Error(String),
    /// No reply within `--timeout`.
    Timeout,
    /// A result that differs from the local computation.
    Mismatch,
    /// The connection closed before the reply.
    Missing,
}

impl RequestOutcome {
    /// The outcome as written in reports: `ok`, `error:BUSY`, `timeout`...
    pub fn label(&self) -> String {
        match self {
            RequestOutcome::Ok => "ok".into(),
            RequestOutcome::Error(code) => format!("error:{code}"),
            RequestOutcome::Timeout => "timeout".into(),
            RequestOutcome::Mismatch => "mismatch".into(),
            RequestOutcome::Missing => "missing".into(),
        }
    }
}

/// One finished request, as streamed to `--requests-csv`.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// Connection index.
    pub connection: usize,
    /// Request id (per connection).
    pub id: u64,
    /// Command sent.
    pub command: BenchCommand,
    /// Whether it was a warm-up request.
    pub warmup: bool,
    /// Scheduled send, µs since the run started.
    pub scheduled_us: u64,
    /// Actual send, µs since the run started.
    pub sent_us: u64,
    /// Latency from the scheduled send, when a reply came.
    pub latency_us: Option<u64>,
    /// Latency from the actual send, when a reply came.
    pub uncorrected_us: Option<u64>,
    /// Server-reported queue wait.
    pub queue_us: Option<u64>,
    /// Server-reported service time.
    pub service_us: Option<u64>,
    /// Worker that ran it.
    pub worker: Option<u64>,
    /// How it ended.
    pub outcome: RequestOutcome,
}

/// A request waiting for its reply.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    scheduled: Instant,
    sent: Instant,
    command: BenchCommand,
    measured: bool,
}

/// State shared by a connection's sender and receiver.
#[derive(Default)]
struct Window {
    state: Mutex<WindowState>,
    changed: Condvar,
}

#[derive(Default)]
struct WindowState {
    in_flight: HashMap<u64, InFlight>,
    /// The sender has sent everything it will send.
    sending_done: bool,
    /// The connection is finished or broken: the sender must stop.
    closed: bool,
    /// Why the connection broke, if it did.
    error: Option<String>,
}

impl Window {
    fn lock(&self) -> std::sync::MutexGuard<'_, WindowState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sleeps until `due`, waking early only if the connection closes.
    /// Returns `false` if it did.
    fn wait_until(&self, due: Instant) -> bool {
        let mut state = self.lock();
        loop {
            if state.closed {
                return false;
            }
            let now = Instant::now();
            if now >= due {
                return true;
            }
            state = self.changed.wait_timeout(state, due - now).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    fn close(&self, error: Option<String>) {
        let mut state = self.lock();
        state.closed = true;
        if state.error.is_none() {
            state.error = error;
        }
        self.changed.notify_all();
    }
}

/// What a connection hands back when it is done.
pub struct ConnectionResult {
    /// Its measurements.
    pub recorder: Recorder,
    /// Why it stopped early, if it did.
    pub error: Option<String>,
}

/// Runs connection `index` of the plan to completion on the calling thread.
///
/// A closed loop needs only this thread: it fills the window, writes the
/// new requests in one system call, reads replies, and fills the window
/// again — no hand-off between threads per request. An open loop adds a
/// sender thread that keeps the schedule whatever the replies are doing.
pub fn run_connection(index: usize, plan: Arc<Plan>, stream: TcpStream, sinks: RunSinks) -> ConnectionResult {
    let window = Arc::new(Window::default());
    // A server that stops reading for longer than --timeout fails the
    // connection instead of blocking the sender forever.
    if let Err(e) = stream.set_write_timeout(Some(plan.options.timeout)) {
        return ConnectionResult {
            recorder: Recorder::default(),
            error: Some(describe_io_error(index, &plan, "configuring the socket", &e)),
        };
    }
    let fail = |e: std::io::Error| ConnectionResult {
        recorder: Recorder::default(),
        error: Some(format!("connection {index}: cannot start its sender: {e}")),
    };
    let write_half = match stream.try_clone() {
        Ok(write_half) => write_half,
        Err(e) => return fail(e),
    };
    let (sender, feeder) = match plan.options.load {
        LoadModel::Open { .. } => {
            let (window, plan, sinks) = (Arc::clone(&window), Arc::clone(&plan), sinks.clone());
            let spawned = thread::Builder::new()
                .name(format!("bench-send-{index}"))
                .spawn(move || send_on_schedule(index, &plan, write_half, &window, &sinks));
            match spawned {
                Ok(handle) => (Some(handle), None),
                Err(e) => return fail(e),
            }
        }
        LoadModel::Closed { pipeline } => {
            (None, Some(Feeder { schedule: Schedule::new(index, &plan), stream: write_half, pipeline }))
        }
    };
    // All connections begin together, at the plan's start.
    if window.wait_until(plan.start) {
        let mut receiver = Receiver::new(index, &plan, &window, &sinks);
        receiver.run(stream, feeder);
        let recorder = receiver.finish();
        if let Some(sender) = sender {
            let _ = sender.join();
        }
        let error = window.lock().error.clone();
        return ConnectionResult { recorder, error };
    }
    let error = window.lock().error.clone();
    ConnectionResult { recorder: Recorder::default(), error }
}

/// Which request comes next on a connection, and whether it is measured:
/// the command mix, the warm-up, the stop condition and, in an open loop,
/// the schedule.
struct Schedule<'a> {
    plan: &'a Plan,
    commands: MixSequence,
    warmup_requests: u64,
    /// When the measured part started: known up front for a timed warm-up,
    /// set at the first measured request for a counted one.
    measured_since: Option<Instant>,
    next_id: u64,
    /// Open loop: time between this connection's requests, and its offset
    /// in the global schedule.
    interval: Duration,
    offset: Duration,
}

impl<'a> Schedule<'a> {
    fn new(index: usize, plan: &'a Plan) -> Self {
        let options = &plan.options;
        let (interval, offset) = match options.load {
            LoadModel::Open { rate } => {
                let interval = Duration::from_secs_f64(options.concurrency as f64 / rate);
                (interval, interval.mul_f64(index as f64 / options.concurrency as f64))
            }
            LoadModel::Closed { .. } => (Duration::ZERO, Duration::ZERO),
        };
        Schedule {
            plan,
            commands: options.mix.sequence(),
            warmup_requests: options.warmup_requests(),
            measured_since: match options.warmup {
                Warmup::Duration(d) => Some(plan.start + d),
                Warmup::None => Some(plan.start),
                Warmup::Requests(_) => None,
            },
            next_id: 0,
            interval,
            offset,
        }
    }

    /// Open loop: when the next request is due.
    fn next_due(&self) -> Instant {
        self.plan.start + self.offset + self.interval.mul_f64(self.next_id as f64)
    }

    /// The next request, scheduled at `scheduled`: its id, command and
    /// whether it is measured; `None` once the run is over.
    fn next(&mut self, scheduled: Instant) -> Option<(u64, BenchCommand, bool)> {
        let id = self.next_id;
        let measured = match self.plan.options.warmup {
            Warmup::Requests(_) => id >= self.warmup_requests,
            Warmup::Duration(_) | Warmup::None => self.measured_since.is_some_and(|since| scheduled >= since),
        };
        if measured && self.measured_since.is_none() {
            self.measured_since = Some(scheduled);
        }
        let finished = match self.plan.options.stop {
            StopAfter::Requests(n) => id >= self.warmup_requests + n,
            StopAfter::Duration(d) => self.measured_since.is_some_and(|since| scheduled >= since + d),
        };
        if finished {
            return None;
        }
        self.next_id += 1;
        Some((id, self.commands.next().unwrap_or(BenchCommand::Ping), measured))
    }
}

/// Closed loop: tops the window up and writes the new requests.
struct Feeder<'a> {
    schedule: Schedule<'a>,
    stream: TcpStream,
    pipeline: usize,
}

impl Feeder<'_> {
    /// Sends requests until `pipeline` are in flight (or the run is over).
    /// Each request is registered *before* it is written: its reply may
    /// arrive before `write` returns.
    fn fill(&mut self, window: &Window, batch: &mut Vec<u8>) -> std::io::Result<usize> {
        batch.clear();
        let mut sent = 0;
        {
            let mut state = window.lock();
            while !state.sending_done && state.in_flight.len() < self.pipeline {
                let now = Instant::now();
                match self.schedule.next(now) {
                    Some((id, command, measured)) => {
                        state.in_flight.insert(id, InFlight { scheduled: now, sent: now, command, measured });
                        batch.extend_from_slice(&command.encode(
                            id,
                            self.schedule.plan.options.size,
                            &self.schedule.plan.options.images,
                        ));
                        sent += 1;
                    }
                    None => state.sending_done = true,
                }
            }
        }
        if !batch.is_empty() {
            self.stream.write_all(batch)?;
        }
        Ok(sent)
    }
}

/// Open loop: the sender thread writes each request at its scheduled time.
fn send_on_schedule(index: usize, plan: &Plan, mut stream: TcpStream, window: &Window, sinks: &RunSinks) {
    let mut schedule = Schedule::new(index, plan);
    loop {
        let due = schedule.next_due();
        if !window.wait_until(due) {
            return;
        }
        let Some((id, command, measured)) = schedule.next(due) else { break };
        // Register the request before writing it; if too many are
        // outstanding, wait (the wait shows in the latency from the schedule).
        {
            let mut state = window.lock();
            while state.in_flight.len() >= OPEN_LOOP_MAX_IN_FLIGHT && !state.closed {
                state = window.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
            }
            if state.closed {
                return;
            }
            state.in_flight.insert(id, InFlight { scheduled: due, sent: Instant::now(), command, measured });
        }
        if let Err(e) = stream.write_all(&command.encode(id, plan.options.size, &plan.options.images)) {
            window.close(Some(describe_io_error(index, plan, "sending a request", &e)));
            return;
        }
        sinks.progress.sent.fetch_add(1, Relaxed);
    }
    let mut state = window.lock();
    state.sending_done = true;
    window.changed.notify_all();
}

/// The fields of a reply the client looks at, borrowed from the frame.
#[derive(Deserialize)]
struct ReplyView<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    result: Option<&'a RawValue>,
    #[serde(borrow)]
    error: Option<ErrorView<'a>>,
    queue_us: Option<u64>,
    service_us: Option<u64>,
    worker: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorView<'a> {
    #[serde(borrow)]
    code: Option<std::borrow::Cow<'a, str>>,
}

/// Which ids have been settled (answered or timed out), to tell duplicates
/// and late replies from replies to requests still in flight. Memory stays
/// bounded: everything below `watermark` is settled, and only the settled
/// ids above it are kept.
#[derive(Default)]
struct SettledIds {
    watermark: u64,
    above: BTreeSet<u64>,
    timed_out: BTreeSet<u64>,
}

impl SettledIds {
    fn settle(&mut self, id: u64) {
        self.above.insert(id);
        while self.above.remove(&self.watermark) {
            self.watermark += 1;
        }
    }

    fn is_settled(&self, id: u64) -> bool {
        id < self.watermark || self.above.contains(&id)
    }

    fn time_out(&mut self, id: u64) {
        self.settle(id);
        self.timed_out.insert(id);
        if self.timed_out.len() > REMEMBERED_TIMEOUTS {
            self.timed_out.pop_first();
        }
    }
}

/// The receiver: reads replies, matches them, records.
struct Receiver<'a> {
    index: usize,
    plan: &'a Plan,
    window: &'a Window,
    sinks: &'a RunSinks,
    recorder: Recorder,
    settled: SettledIds,
    interval: super::IntervalRecorder,
}

impl<'a> Receiver<'a> {
    fn new(index: usize, plan: &'a Plan, window: &'a Window, sinks: &'a RunSinks) -> Self {
        Receiver {
            index,
            plan,
            window,
            sinks,
            recorder: Recorder::default(),
            settled: SettledIds::default(),
            interval: super::IntervalRecorder::new(index, plan.start, plan.options.log_interval),
        }
    }

    fn run(&mut self, mut stream: TcpStream, mut feeder: Option<Feeder<'_>>) {
        if let Err(e) = stream.set_read_timeout(Some(RECEIVER_TICK)) {
            self.window.close(Some(describe_io_error(self.index, self.plan, "configuring the socket", &e)));
            return;
        }
        let mut buffer = FrameBuffer::new(DEFAULT_MAX_FRAME);
        let mut batch = Vec::new();
        loop {
            // Closed loop: top the window up before waiting for replies.
            if let Some(feeder) = feeder.as_mut() {
                match feeder.fill(self.window, &mut batch) {
                    Ok(sent) => {
                        self.sinks.progress.sent.fetch_add(sent as u64, Relaxed);
                    }
                    Err(e) => {
                        self.window.close(Some(describe_io_error(
                            self.index,
                            self.plan,
                            "sending requests",
                            &e,
                        )));
                        return;
                    }
                }
                let state = self.window.lock();
                if state.sending_done && state.in_flight.is_empty() {
                    return;
                }
            }
            match buffer.read_from(&mut stream) {
                Ok(0) => {
                    let state = self.window.lock();
                    let expected_more = !state.sending_done || !state.in_flight.is_empty();
                    drop(state);
                    if expected_more {
                        let message = format!(
                            "connection {} to {}: closed by the server with requests outstanding",
                            self.index, self.plan.address
                        );
                        self.window.close(Some(message));
                    }
                    return;
                }
                Ok(_) => loop {
                    match buffer.next_frame() {
                        Ok(Some(payload)) => self.handle_reply(payload),
                        Ok(None) => break,
                        Err(e) => {
                            let message = format!(
                                "connection {} to {}: the server sent a malformed frame ({e})",
                                self.index, self.plan.address
                            );
                            self.window.close(Some(message));
                            return;
                        }
                    }
                },
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.window.close(Some(describe_io_error(self.index, self.plan, "reading replies", &e)));
                    return;
                }
            }
            let now = Instant::now();
            self.expire_timeouts(now);
            self.interval.advance(now, &self.sinks.intervals);
            let state = self.window.lock();
            if state.sending_done && state.in_flight.is_empty() {
                return;
            }
            if state.closed {
                return; // the sender hit an error
            }
        }
    }

    fn handle_reply(&mut self, payload: &[u8]) {
        let now = Instant::now();
        let Ok(reply) = serde_json::from_slice::<ReplyView>(payload) else {
            return self.reject(payload, "a reply is not valid JSON");
        };
        let Some(id) = reply.id.and_then(|raw| raw.get().parse::<u64>().ok()) else {
            return self.reject(payload, "a reply carries no id of ours");
        };
        let request = {
            let mut state = self.window.lock();
            let request = state.in_flight.remove(&id);
            self.window.changed.notify_all(); // a slot is free
            request
        };
        let Some(request) = request else {
            if self.settled.timed_out.remove(&id) {
                self.recorder.counts.late += 1;
            } else if self.settled.is_settled(id) {
                self.recorder.counts.duplicates += 1;
            } else {
                self.recorder.counts.unknown += 1;
            }
            return;
        };
        self.settled.settle(id);

        let outcome = if let Some(error) = &reply.error {
            RequestOutcome::Error(error.code.as_deref().unwrap_or("UNKNOWN").to_string())
        } else if reply.result.is_none() && request.command != BenchCommand::Ping {
            RequestOutcome::Error("NO_RESULT".into())
        } else if self.is_wrong(request.command, reply.result) {
            RequestOutcome::Mismatch
        } else {
            RequestOutcome::Ok
        };
        let sample = Sample {
            corrected_us: micros(now.saturating_duration_since(request.scheduled)),
            uncorrected_us: micros(now.saturating_duration_since(request.sent)),
            queue_us: reply.queue_us,
            service_us: reply.service_us,
        };
        self.settle(id, request, now, &outcome, Some((sample, reply.worker)));
    }

    /// Counts a reply that matches no request, and keeps the first such
    /// problem (with the start of the reply) for the report.
    fn reject(&mut self, payload: &[u8], what: &str) {
        self.recorder.counts.unknown += 1;
        let shown = String::from_utf8_lossy(&payload[..payload.len().min(120)]).into_owned();
        self.note_error(format!("connection {} to {}: {what}: {shown}", self.index, self.plan.address));
    }

    /// With `--verify`, whether a compute result differs from the local one.
    fn is_wrong(&self, command: BenchCommand, result: Option<&RawValue>) -> bool {
        match (command, self.plan.expected_compute) {
            (BenchCommand::Compute, Some(expected)) => {
                result.and_then(|r| r.get().parse::<u64>().ok()) != Some(expected)
            }
            _ => false,
        }
    }

    /// Counts a settled request and streams its row.
    fn settle(
        &mut self,
        id: u64,
        request: InFlight,
        now: Instant,
        outcome: &RequestOutcome,
        reply: Option<(Sample, Option<u64>)>,
    ) {
        self.sinks.progress.done.fetch_add(1, Relaxed);
        if *outcome != RequestOutcome::Ok {
            self.sinks.progress.problems.fetch_add(1, Relaxed);
        }
        if request.measured {
            let counts = &mut self.recorder.counts;
            counts.sent += 1;
            match outcome {
                RequestOutcome::Ok => {
                    if let Some((sample, _)) = reply {
                        self.recorder.record_ok(sample);
                        self.interval.record(now, sample.corrected_us, &self.sinks.intervals);
                    }
                }
                RequestOutcome::Error(code) => *counts.errors.entry(code.clone()).or_default() += 1,
                RequestOutcome::Timeout => counts.timeouts += 1,
                RequestOutcome::Mismatch => counts.mismatches += 1,
                RequestOutcome::Missing => counts.missing += 1,
            }
            self.recorder.extend_span(request.scheduled, now);
        } else {
            self.recorder.counts.warmup += 1;
        }
        if let Some(rows) = &self.sinks.requests {
            let since_start = |t: Instant| micros(t.saturating_duration_since(self.plan.start));
            let sample = reply.map(|(s, _)| s);
            let _ = rows.send(RequestRecord {
                connection: self.index,
                id,
                command: request.command,
                warmup: !request.measured,
                scheduled_us: since_start(request.scheduled),
                sent_us: since_start(request.sent),
                latency_us: sample.map(|s| s.corrected_us),
                uncorrected_us: sample.map(|s| s.uncorrected_us),
                queue_us: sample.and_then(|s| s.queue_us),
                service_us: sample.and_then(|s| s.service_us),
                worker: reply.and_then(|(_, worker)| worker),
                outcome: outcome.clone(),
            });
        }
    }

    /// Settles requests that waited longer than `--timeout`.
    fn expire_timeouts(&mut self, now: Instant) {
        let timeout = self.plan.options.timeout;
        let expired: Vec<(u64, InFlight)> = {
            let mut state = self.window.lock();
            let ids: Vec<u64> = state
                .in_flight
                .iter()
                .filter(|(_, r)| now.saturating_duration_since(r.sent) >= timeout)
                .map(|(id, _)| *id)
                .collect();
            let expired =
                ids.into_iter().filter_map(|id| state.in_flight.remove(&id).map(|r| (id, r))).collect();
            self.window.changed.notify_all();
            expired
        };
        for (id, request) in expired {
            self.settled.time_out(id);
            self.settle(id, request, now, &RequestOutcome::Timeout, None);
        }
    }

    fn note_error(&mut self, message: String) {
        let mut state = self.window.lock();
        if state.error.is_none() {
            state.error = Some(message);
        }
    }

    /// Counts what is still in flight as missing and hands the measurements back.
    fn finish(mut self) -> Recorder {
        let now = Instant::now();
        let leftovers: Vec<(u64, InFlight)> = {
            let mut state = self.window.lock();
            state.closed = true;
            self.window.changed.notify_all();
            state.in_flight.drain().collect()
        };
        for (id, request) in leftovers {
            self.settle(id, request, now, &RequestOutcome::Missing, None);
        }
        self.interval.finish(&self.sinks.intervals);
        self.recorder
    }
}

/// One line naming the connection, the server and what went wrong.
fn describe_io_error(index: usize, plan: &Plan, doing: &str, error: &io::Error) -> String {
    let what = match error.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionAborted => {
            "the server closed the connection".to_string()
        }
        _ => error.to_string(),
    };
    format!("connection {index} to {}: {what} while {doing}", plan.address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_ids_tell_duplicates_from_new_ids_in_bounded_memory() {
        let mut settled = SettledIds::default();
        for id in [0, 1, 3, 2, 5] {
            settled.settle(id);
        }
        assert_eq!(settled.watermark, 4, "0..=3 are all settled");
        assert_eq!(settled.above.len(), 1, "only 5 is kept above the watermark");
        assert!(settled.is_settled(2) && settled.is_settled(5));
        assert!(!settled.is_settled(4) && !settled.is_settled(6));
        settled.time_out(4);
        assert!(settled.timed_out.contains(&4));
        assert_eq!(settled.watermark, 6);
        assert!(settled.above.is_empty());
    }

    #[test]
    fn outcomes_have_stable_labels() {
        assert_eq!(RequestOutcome::Ok.label(), "ok");
        assert_eq!(RequestOutcome::Error("BUSY".into()).label(), "error:BUSY");
        assert_eq!(RequestOutcome::Timeout.label(), "timeout");
    }
}
