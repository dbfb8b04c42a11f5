//! The receiving side of a benchmark connection: reads reply frames, matches
//! each to its request in the window, and records what happened — latency,
//! server timings, error codes, timeouts, duplicates, wrong results.
//!
//! The receiver reads with a short socket timeout so that, between replies,
//! it can expire requests older than `--timeout` and close finished
//! intervals of the interval log. Frames are reassembled across reads by a
//! [`FrameBuffer`], so a timeout in the middle of a frame loses nothing.

use crate::transport::{Transport, TransportIo};
use std::collections::BTreeSet;
use std::io;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::value::RawValue;

use super::mix::BenchCommand;
use super::recorder::{Recorder, Sample};
use super::sender::Feeder;
use super::window::{describe_io_error, InFlight, Window};
use super::{IntervalRecorder, Plan, RunSinks};
use crate::frame::{FrameBuffer, DEFAULT_MAX_FRAME};
use crate::units::micros;

/// How often the receiver wakes up without a reply, to expire timeouts.
const RECEIVER_TICK: Duration = Duration::from_millis(20);
/// Ids of timed-out requests remembered to recognise their late replies.
const REMEMBERED_TIMEOUTS: usize = 100_000;
/// After Ctrl-C, how long (at most; never more than `--timeout`) the
/// requests in flight may take to be answered before they are counted as
/// cancelled.
const INTERRUPT_GRACE: Duration = Duration::from_secs(2);

/// How one request ended, for the per-request CSV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RequestOutcome {
    /// A result (verified, with `--verify`).
    Ok,
    /// An error reply with this code.
    Error(String),
    /// No reply within `--timeout`.
    Timeout,
    /// A result that differs from the local computation.
    Mismatch,
    /// The connection broke before the reply.
    Missing,
    /// The server closed the connection in order before reading it.
    Unread,
    /// Still in flight when the run was interrupted.
    Cancelled,
}

impl RequestOutcome {
    /// The outcome as written in reports: `ok`, `error:BUSY`, `timeout`...
    pub(crate) fn label(&self) -> String {
        match self {
            RequestOutcome::Ok => "ok".into(),
            RequestOutcome::Error(code) => format!("error:{code}"),
            RequestOutcome::Timeout => "timeout".into(),
            RequestOutcome::Mismatch => "mismatch".into(),
            RequestOutcome::Missing => "missing".into(),
            RequestOutcome::Unread => "unread".into(),
            RequestOutcome::Cancelled => "cancelled".into(),
        }
    }
}

/// One finished request, as streamed to `--requests-csv`.
#[derive(Debug, Clone)]
pub(crate) struct RequestRecord {
    /// Connection index.
    pub(crate) connection: usize,
    /// Request id (per connection).
    pub(crate) id: u64,
    /// Command sent.
    pub(crate) command: BenchCommand,
    /// Whether it was a warm-up request.
    pub(crate) warmup: bool,
    /// Scheduled send, µs since the run started.
    pub(crate) scheduled_us: u64,
    /// Actual send, µs since the run started.
    pub(crate) sent_us: u64,
    /// Latency from the scheduled send, when a reply came.
    pub(crate) latency_us: Option<u64>,
    /// Latency from the actual send, when a reply came.
    pub(crate) uncorrected_us: Option<u64>,
    /// Server-reported queue wait.
    pub(crate) queue_us: Option<u64>,
    /// Server-reported service time.
    pub(crate) service_us: Option<u64>,
    /// Worker that ran it.
    pub(crate) worker: Option<u64>,
    /// How it ended.
    pub(crate) outcome: RequestOutcome,
}

/// The fields of a reply the client looks at, borrowed from the frame.
#[derive(Deserialize)]
struct ReplyView<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    result: Option<&'a RawValue>,
    #[serde(borrow)]
    error: Option<ErrorField<'a>>,
    queue_us: Option<u64>,
    service_us: Option<u64>,
    worker: Option<u64>,
}

/// `"error"` as tc-server sends it (`{"code","message"}`) or as the Python
/// original does (a bare string, e.g. `"unknown command"`).
#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorField<'a> {
    Coded(#[serde(borrow)] ErrorView<'a>),
    Text(#[serde(borrow)] std::borrow::Cow<'a, str>),
}

impl ErrorField<'_> {
    /// The code, and the message when there is one.
    fn parts(&self) -> (String, Option<String>) {
        match self {
            ErrorField::Coded(view) => (
                view.code.as_deref().unwrap_or("UNKNOWN").to_string(),
                view.message.as_deref().map(str::to_string),
            ),
            ErrorField::Text(text) => ("ERROR".to_string(), Some(text.to_string())),
        }
    }
}

/// The id of a reply: ours are numbers, but the Python original sends every
/// id back as a string (`"7"`).
fn reply_id(raw: &RawValue) -> Option<u64> {
    let text = raw.get();
    text.parse().ok().or_else(|| text.strip_prefix('"')?.strip_suffix('"')?.parse().ok())
}

#[derive(Deserialize)]
struct ErrorView<'a> {
    #[serde(borrow)]
    code: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    message: Option<std::borrow::Cow<'a, str>>,
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
pub(super) struct Receiver<'a> {
    index: usize,
    plan: &'a Plan,
    window: &'a Window,
    sinks: &'a RunSinks,
    recorder: Recorder,
    settled: SettledIds,
    interval: IntervalRecorder,
    /// How requests still in flight at the end are counted: missing, unless
    /// the server closed in order (unread) or the run was interrupted.
    leftovers: RequestOutcome,
}

impl<'a> Receiver<'a> {
    pub(super) fn new(index: usize, plan: &'a Plan, window: &'a Window, sinks: &'a RunSinks) -> Self {
        Receiver {
            index,
            plan,
            window,
            sinks,
            recorder: Recorder::default(),
            settled: SettledIds::default(),
            // Intervals count from the end of a timed warm-up, so a stage's
            // boundaries fall on interval boundaries.
            interval: IntervalRecorder::new(
                index,
                plan.start + plan.options.timed_warmup(),
                plan.options.log_interval,
            ),
            leftovers: RequestOutcome::Missing,
        }
    }

    pub(super) fn run(&mut self, stream: Arc<Transport>, mut feeder: Option<Feeder<'_>>) {
        if let Err(e) = stream.set_read_timeout(Some(RECEIVER_TICK)) {
            self.window.close(Some(describe_io_error(self.index, self.plan, "configuring the socket", &e)));
            return;
        }
        let mut buffer = FrameBuffer::new(DEFAULT_MAX_FRAME);
        let mut batch = Vec::new();
        // After Ctrl-C: when to stop waiting for the replies in flight.
        let mut give_up_at: Option<Instant> = None;
        loop {
            // Closed loop: top the window up before waiting for replies.
            if let Some(feeder) = feeder.as_mut() {
                if self.top_up(feeder, &mut batch).is_break() {
                    return;
                }
            }
            if self.read_replies(&mut buffer, &stream).is_break() || self.tick(&mut give_up_at).is_break() {
                return;
            }
        }
    }

    /// Closed loop: sends what the window has room for; breaks when the
    /// connection fails or everything is sent and answered.
    fn top_up(&mut self, feeder: &mut Feeder<'_>, batch: &mut Vec<u8>) -> ControlFlow<()> {
        match feeder.fill(self.window, batch) {
            Ok(sent) => {
                self.sinks.progress.sent.fetch_add(sent as u64, Relaxed);
            }
            Err(e) => {
                self.window.close(Some(describe_io_error(self.index, self.plan, "sending requests", &e)));
                return ControlFlow::Break(());
            }
        }
        let state = self.window.lock();
        if state.sending_done && state.in_flight.is_empty() {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    /// Reads what has arrived (waiting at most [`RECEIVER_TICK`]) and
    /// handles every whole reply; breaks when the connection ends.
    fn read_replies(&mut self, buffer: &mut FrameBuffer, stream: &Transport) -> ControlFlow<()> {
        match buffer.read_from(&mut TransportIo(stream)) {
            Ok(0) => {
                // End of stream: the server closed the connection in
                // order. What is still in flight was never read by it
                // (a clean stop answers everything read first).
                let state = self.window.lock();
                let (unanswered, sending_done) = (state.in_flight.len(), state.sending_done);
                drop(state);
                if unanswered > 0 || !sending_done {
                    self.leftovers = RequestOutcome::Unread;
                    let message = format!(
                        "connection {} to {}: the server closed the connection before the run \
                         ended, {} unread",
                        self.index,
                        self.plan.address,
                        crate::units::count(unanswered as u64, "request", "requests")
                    );
                    self.window.close(Some(message));
                }
                ControlFlow::Break(())
            }
            Ok(_) => loop {
                match buffer.next_frame() {
                    Ok(Some(payload)) => self.handle_reply(payload),
                    Ok(None) => return ControlFlow::Continue(()),
                    Err(e) => {
                        let message = format!(
                            "connection {} to {}: the server sent a malformed frame ({e})",
                            self.index, self.plan.address
                        );
                        self.window.close(Some(message));
                        return ControlFlow::Break(());
                    }
                }
            },
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) =>
            {
                ControlFlow::Continue(())
            }
            Err(e) => {
                self.window.close(Some(describe_io_error(self.index, self.plan, "reading replies", &e)));
                ControlFlow::Break(())
            }
        }
    }

    /// Between reads: expires timeouts, closes intervals, and after Ctrl-C
    /// gives the replies in flight a short grace; breaks when this
    /// connection has nothing left to wait for.
    fn tick(&mut self, give_up_at: &mut Option<Instant>) -> ControlFlow<()> {
        let now = Instant::now();
        self.expire_timeouts(now);
        self.interval.advance(now, &self.sinks.intervals);
        if crate::client::interrupt::requested() {
            // The senders stop by themselves; give the replies in
            // flight a short grace, then cancel what is left.
            let grace = INTERRUPT_GRACE.min(self.plan.options.timeout);
            if now >= *give_up_at.get_or_insert(now + grace) {
                self.leftovers = RequestOutcome::Cancelled;
                return ControlFlow::Break(());
            }
        }
        let state = self.window.lock();
        if state.sending_done && state.in_flight.is_empty() {
            return ControlFlow::Break(());
        }
        if state.closed {
            return ControlFlow::Break(()); // the sender hit an error
        }
        ControlFlow::Continue(())
    }

    fn handle_reply(&mut self, payload: &[u8]) {
        let now = Instant::now();
        let Ok(reply) = serde_json::from_slice::<ReplyView>(payload) else {
            return self.reject(payload, "a reply is not valid JSON");
        };
        let Some(id) = reply.id.and_then(reply_id).and_then(|wire| super::seq_of(self.index, wire)) else {
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
            let (code, message) = error.parts();
            // Keep the first message of each code.
            self.recorder
                .counts
                .error_messages
                .entry(code.clone())
                .or_insert_with(|| message.unwrap_or_else(|| "(no message)".to_string()));
            RequestOutcome::Error(code)
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
        if !matches!(outcome, RequestOutcome::Ok | RequestOutcome::Cancelled) {
            self.sinks.progress.problems.fetch_add(1, Relaxed);
        }
        if request.measured {
            let progress = &self.sinks.progress;
            progress.measured.fetch_add(1, Relaxed);
            match outcome {
                RequestOutcome::Ok => {
                    progress.ok.fetch_add(1, Relaxed);
                }
                RequestOutcome::Error(code) => {
                    progress.error_replies.fetch_add(1, Relaxed);
                    let mut by_code =
                        progress.errors_by_code.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let tally = by_code.entry(code.clone()).or_default();
                    tally.count += 1;
                    if tally.first_message.is_none() {
                        // The reply's message, kept by handle_reply just before.
                        tally.first_message = self.recorder.counts.error_messages.get(code).cloned();
                    }
                }
                RequestOutcome::Timeout => {
                    progress.timeouts.fetch_add(1, Relaxed);
                }
                _ => {}
            }
            let counts = &mut self.recorder.counts;
            counts.sent += 1;
            match outcome {
                RequestOutcome::Ok => {
                    if let Some((sample, _)) = reply {
                        self.recorder.record_ok(sample);
                        self.interval.record(now, sample, &self.sinks.intervals);
                    }
                }
                RequestOutcome::Error(code) => *counts.errors.entry(code.clone()).or_default() += 1,
                RequestOutcome::Timeout => counts.timeouts += 1,
                RequestOutcome::Mismatch => counts.mismatches += 1,
                RequestOutcome::Missing => counts.missing += 1,
                RequestOutcome::Unread => counts.unread += 1,
                RequestOutcome::Cancelled => counts.cancelled += 1,
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

    /// Counts what is still in flight (missing, unread or cancelled) and
    /// hands the measurements back.
    pub(super) fn finish(mut self) -> Recorder {
        let now = Instant::now();
        let leftovers: Vec<(u64, InFlight)> = {
            let mut state = self.window.lock();
            state.closed = true;
            self.window.changed.notify_all();
            state.in_flight.drain().collect()
        };
        let outcome = self.leftovers.clone();
        for (id, request) in leftovers {
            self.settle(id, request, now, &outcome, None);
        }
        self.interval.finish(&self.sinks.intervals);
        self.recorder
    }
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
    fn replies_of_the_python_original_are_understood() {
        let reply: ReplyView = serde_json::from_str(r#"{"id":"7","error":"unknown command"}"#).unwrap();
        assert_eq!(reply.id.and_then(reply_id), Some(7), "string ids are ours too");
        let (code, message) = reply.error.unwrap().parts();
        assert_eq!((code.as_str(), message.as_deref()), ("ERROR", Some("unknown command")));
        let reply: ReplyView =
            serde_json::from_str(r#"{"id":3,"error":{"code":"BUSY","message":"full"}}"#).unwrap();
        assert_eq!(reply.id.and_then(reply_id), Some(3));
        assert_eq!(reply.error.unwrap().parts(), ("BUSY".to_string(), Some("full".to_string())));
    }

    #[test]
    fn outcomes_have_stable_labels() {
        assert_eq!(RequestOutcome::Ok.label(), "ok");
        assert_eq!(RequestOutcome::Error("BUSY".into()).label(), "error:BUSY");
        assert_eq!(RequestOutcome::Timeout.label(), "timeout");
    }
}
