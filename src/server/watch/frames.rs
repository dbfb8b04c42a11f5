//! The dashboard's frames: every [`FRAME_INTERVAL`], while at least one
//! browser watches, three SSE messages go to every `/events` stream:
//!
//! | event | data |
//! |---|---|
//! | `state` | the `stats` report, plus what the page needs per second: ok replies/s, errors/s by code, p50/p99 of the jobs answered in the last second, and Little's law (L measured against λ·W) |
//! | `bars` | the jobs answered since the last frame, one bar each ([`super::JobSpan`]); past [`MAX_BARS`] in one frame, the shortest are summed per worker instead (a bar shorter than a pixel shows nothing) |
//! | `gil` | with `--gil`: who held the lock since the last frame, one interval per turn (a worker's turns one after another, with nobody else's between, are one); at most [`MAX_HOLDS`], the newest |
//! | `events` | what changed: a worker replaced, down or held back by the restart budget, jobs retried or timed out, `BUSY` refusals, a drain begun, a worker host joined, lost or back |
//!
//! Events are found by comparing each reading of the counters with the one
//! before, so the workers and the request path do nothing extra for them.
//! A new subscriber first gets a `hello` (what this farm is, and the line
//! charts' points of the last minute), the current `state`, every bar still
//! in the timeline and the recent events.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::events::changes;
use super::{JobSpan, Watch};
use crate::runtime::http::stream::{Greeting, StreamMessage};
use crate::runtime::http::{EventHub, Greeter};
use crate::server::Farm;
use crate::work::gil::GilHold;

/// Time between two frames: 5 a second, smooth enough for bars and cheap.
pub(crate) const FRAME_INTERVAL: Duration = Duration::from_millis(200);
/// How long the last frame, at a stop, is given to reach the pages.
const LAST_FRAME_GRACE: Duration = Duration::from_millis(100);
/// The most bars in one frame; the rest are summed per worker.
pub(crate) const MAX_BARS: usize = 200;
/// The most GIL turns in one `gil` message (the newest are kept).
pub(crate) const MAX_HOLDS: usize = 400;
/// How far back a page opened late is sent bars: the page keeps 65 s.
const BACKLOG_US: u64 = 65_000_000;
/// Events kept for pages that open late.
const RECENT_EVENTS: usize = 200;
/// Points of the line charts kept for pages that open late (a minute).
const RECENT_POINTS: usize = 300;
/// The window of the rates and percentiles ("the last second"): a rate
/// over one 200 ms frame jumps with every frame, and would not agree with
/// the λ of Little's law.
const LAST_SECOND_US: u64 = 1_000_000;
/// The window of Little's law: longer than the rates', so that jobs of a
/// second or so still average out (L = λ·W holds over windows much
/// longer than W).
const LITTLE_WINDOW_US: u64 = 5_000_000;

/// Builds and publishes the frames; greets new subscribers.
pub(crate) struct FrameBuilder {
    farm: Arc<Farm>,
    watch: Arc<Watch>,
    hub: Arc<EventHub>,
    cores: usize,
    recent: Mutex<VecDeque<Value>>,
    /// The line charts' points of the last minute (what each `state` gave).
    points: Mutex<VecDeque<Value>>,
}

/// One reading of the counters, kept to compare with the next.
struct Reading {
    at_us: u64,
    report: Value,
}

/// The few counters of one reading that the rates need, kept for the
/// last [`LITTLE_WINDOW_US`] (a `Reading` holds the whole report).
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    at_us: u64,
    ok_replies: f64,
    /// Jobs answered so far, ok or not: what leaves the farm (λ).
    completed: f64,
    errors: serde_json::Map<String, Value>,
    /// Jobs queued or running at this moment (L).
    in_flight: f64,
}

impl Sample {
    fn of(reading: &Reading) -> Sample {
        let report = &reading.report;
        let ok_replies = report["replies"].as_object().map_or(0.0, |commands| {
            commands.values().map(|outcomes| outcomes["OK"].as_f64().unwrap_or(0.0)).sum()
        });
        Sample {
            at_us: reading.at_us,
            ok_replies,
            completed: report["jobs"]["completed"].as_f64().unwrap_or(0.0),
            errors: report["errors"].as_object().cloned().unwrap_or_default(),
            in_flight: report["jobs"]["in_flight"].as_f64().unwrap_or(0.0),
        }
    }
}

/// The samples of the last [`LITTLE_WINDOW_US`], oldest first.
#[derive(Debug, Default)]
struct Samples(VecDeque<Sample>);

impl Samples {
    fn push(&mut self, sample: Sample) {
        let now = sample.at_us;
        self.0.push_back(sample);
        while self.0.front().is_some_and(|oldest| now - oldest.at_us > LITTLE_WINDOW_US) {
            self.0.pop_front();
        }
    }

    /// The sample to take rates from over `window_us`: the newest one at
    /// least that old, else the oldest there is. `None` when there is only
    /// the newest (the first frame has no rate: showing 0 would draw a
    /// false drop).
    fn reference(&self, window_us: u64) -> Option<(&Sample, &Sample)> {
        let newest = self.0.back()?;
        let since = newest.at_us.saturating_sub(window_us);
        let reference = self.0.iter().rev().find(|sample| sample.at_us <= since).or(self.0.front())?;
        (reference.at_us < newest.at_us).then_some((reference, newest))
    }

    /// Per second, over the last `window_us`, of what `count` reads.
    fn rate(&self, window_us: u64, count: impl Fn(&Sample) -> f64) -> Option<f64> {
        let (from, to) = self.reference(window_us)?;
        Some((count(to) - count(from)).max(0.0) / ((to.at_us - from.at_us) as f64 / 1e6))
    }

    /// Errors per second by code, over the last `window_us`.
    fn error_rates(&self, window_us: u64) -> Value {
        let Some((from, to)) = self.reference(window_us) else { return Value::Null };
        let seconds = (to.at_us - from.at_us) as f64 / 1e6;
        let mut rates = serde_json::Map::new();
        for (code, now) in &to.errors {
            let delta =
                now.as_f64().unwrap_or(0.0) - from.errors.get(code).and_then(Value::as_f64).unwrap_or(0.0);
            if delta > 0.0 {
                rates.insert(code.clone(), json!(delta / seconds));
            }
        }
        Value::Object(rates)
    }

    /// The mean number of jobs in the farm over the samples kept.
    fn mean_in_flight(&self) -> f64 {
        self.0.iter().map(|sample| sample.in_flight).sum::<f64>() / self.0.len().max(1) as f64
    }
}

impl FrameBuilder {
    pub(crate) fn new(farm: Arc<Farm>, watch: Arc<Watch>, hub: Arc<EventHub>) -> Arc<FrameBuilder> {
        if let Some(gil) = &farm.gil {
            gil.keep_holds();
        }
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Arc::new(FrameBuilder { farm, watch, hub, cores, recent: Mutex::default(), points: Mutex::default() })
    }

    /// Publishes frames on a thread of its own until `stop` is set.
    ///
    /// # Errors
    /// The thread cannot start.
    pub(crate) fn start(self: &Arc<Self>, stop: Arc<AtomicBool>) -> std::io::Result<JoinHandle<()>> {
        let builder = Arc::clone(self);
        std::thread::Builder::new().name("dashboard-frames".into()).spawn(move || builder.run(&stop))
    }

    fn run(&self, stop: &AtomicBool) {
        let mut previous = self.read();
        let mut bars_sent = self.watch.spans_after(u64::MAX).1;
        let mut holds_sent = self.farm.gil.as_ref().map_or(0, |gil| gil.holds_after(u64::MAX).1);
        let mut samples = Samples::default();
        samples.push(Sample::of(&previous));
        let mut next = Instant::now() + FRAME_INTERVAL;
        loop {
            // Once told to stop, one last frame at once: the server has
            // drained by then, and the pages should see it ("drain
            // started", the final counts) before the endpoint closes.
            let last = stop.load(Ordering::SeqCst);
            if !last {
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
                next += FRAME_INTERVAL;
            }
            let reading = self.read();
            // Events are found even while nobody watches, so that a page
            // opened later lists what happened before.
            let events = changes(&previous.report, &reading.report, reading.at_us);
            self.remember(&events);
            samples.push(Sample::of(&reading));
            // The charts' points are kept even while nobody watches, so a
            // page opened later draws the last minute at once.
            let state = self.state(&reading, &samples);
            self.keep_point(&state);
            if self.hub.has_subscribers() {
                let (spans, newest) = self.watch.spans_after(bars_sent);
                self.hub.publish(StreamMessage::new("state", &state.to_string(), None));
                if !spans.is_empty() {
                    self.hub.publish(StreamMessage::new("bars", &bars(&spans).to_string(), Some(newest)));
                }
                if let Some(gil) = &self.farm.gil {
                    let (holds, newest) = gil.holds_after(holds_sent);
                    if !holds.is_empty() {
                        self.hub.publish(StreamMessage::new("gil", &self.turns(&holds).to_string(), None));
                    }
                    holds_sent = newest;
                }
                if !events.is_empty() {
                    self.hub.publish(StreamMessage::new("events", &Value::Array(events).to_string(), None));
                }
                bars_sent = newest;
            } else {
                bars_sent = self.watch.spans_after(u64::MAX).1;
                holds_sent = self.farm.gil.as_ref().map_or(0, |gil| gil.holds_after(u64::MAX).1);
            }
            previous = reading;
            if last {
                // A moment for the streams to write it: the endpoint
                // stops next, and its tasks end where they are.
                if self.hub.has_subscribers() {
                    std::thread::sleep(LAST_FRAME_GRACE);
                }
                return;
            }
        }
    }

    /// The `gil` message: the turns of `holds`, a worker's back-to-back
    /// turns as one, the newest [`MAX_HOLDS`].
    fn turns(&self, holds: &[GilHold]) -> Value {
        let mut turns: Vec<(usize, u64, u64)> = Vec::new();
        for hold in holds {
            let (start, end) = (self.watch.us_at(hold.start), self.watch.us_at(hold.end));
            match turns.last_mut() {
                Some(last) if last.0 == hold.worker => last.2 = end,
                _ => turns.push((hold.worker, start, end)),
            }
        }
        let dropped = turns.len().saturating_sub(MAX_HOLDS);
        let turns: Vec<Value> = turns[dropped..]
            .iter()
            .map(|&(worker, start_us, end_us)| json!({"worker": worker, "start_us": start_us, "end_us": end_us}))
            .collect();
        json!({"turns": turns, "dropped": dropped})
    }

    fn read(&self) -> Reading {
        let report = serde_json::to_value(self.farm.stats_report()).unwrap_or_default();
        Reading { at_us: self.watch.now_us(), report }
    }

    /// What this farm is: shown in the page's header.
    fn hello(&self) -> Value {
        let report = serde_json::to_value(self.farm.stats_report()).unwrap_or_default();
        json!({
            "instance": report["instance"],
            "role": if report["remote"].is_null() { "server" } else { "gateway" },
            "mode": report["mode"],
            "workers": report["workers"]["configured"],
            "gil_switch_interval_ms": report["gil"]["switch_interval_ms"],
            "cores": self.cores,
            "model": report["model"],
            "frame_interval_ms": FRAME_INTERVAL.as_millis() as u64,
            "now_us": self.watch.now_us(),
        })
    }

    /// The `state` message: the report, the rates and percentiles of the
    /// last second and Little's law over [`LITTLE_WINDOW_US`]. A rate is
    /// `null` until there are two readings to take it from.
    fn state(&self, reading: &Reading, samples: &Samples) -> Value {
        let mut latencies = self.watch.latencies_since(reading.at_us.saturating_sub(LAST_SECOND_US));
        latencies.sort_unstable();
        let percentile = |p: f64| -> Value {
            if latencies.is_empty() {
                return Value::Null;
            }
            let rank = ((p * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
            json!(latencies[rank - 1])
        };
        json!({
            "now_us": reading.at_us,
            "report": reading.report,
            "per_s": {
                "ok_replies": samples.rate(LAST_SECOND_US, |sample| sample.ok_replies),
                "jobs": samples.rate(LAST_SECOND_US, |sample| sample.completed),
                "errors": samples.error_rates(LAST_SECOND_US),
            },
            "last_second": {"jobs": latencies.len(), "p50_us": percentile(0.50), "p99_us": percentile(0.99)},
            "little": self.little(reading, samples),
            "stream": {"subscribers": self.hub.subscribers(), "skipped": self.hub.skipped()},
        })
    }

    /// Little's law, L = λ·W, over [`LITTLE_WINDOW_US`]: L the mean number
    /// of jobs in the farm (queued or running), λ the jobs answered per
    /// second (from the counters, so every job counts even when the
    /// timeline's ring holds fewer), W their mean time in the farm (from
    /// the bars of the window). Requests answered without a worker (`ping`,
    /// `stats`) are not jobs: they count in neither L nor λ.
    fn little(&self, reading: &Reading, samples: &Samples) -> Value {
        let Some(lambda) = samples.rate(LITTLE_WINDOW_US, |sample| sample.completed) else {
            return json!({"l": null, "lambda": null, "w_s": null, "lambda_w": null, "window_s": null});
        };
        let window_us = samples.reference(LITTLE_WINDOW_US).map_or(0, |(from, to)| to.at_us - from.at_us);
        let times = self.watch.latencies_since(reading.at_us.saturating_sub(window_us));
        let mean_w =
            if times.is_empty() { 0.0 } else { times.iter().sum::<u64>() as f64 / times.len() as f64 / 1e6 };
        json!({
            "l": samples.mean_in_flight(),
            "lambda": lambda,
            "w_s": mean_w,
            "lambda_w": lambda * mean_w,
            "window_s": window_us as f64 / 1e6,
        })
    }

    /// Keeps what the line charts draw of one `state`.
    fn keep_point(&self, state: &Value) {
        let point = json!({
            "t_us": state["now_us"],
            "ok": state["per_s"]["ok_replies"],
            "err": state["per_s"]["errors"].as_object().map(|codes| codes.values().filter_map(Value::as_f64).sum::<f64>()),
            "queue": state["report"]["jobs"]["queued"],
            "p50": state["last_second"]["p50_us"],
            "p99": state["last_second"]["p99_us"],
            "l": state["little"]["l"],
            "lw": state["little"]["lambda_w"],
        });
        let mut points = self.points.lock().unwrap_or_else(PoisonError::into_inner);
        if points.len() == RECENT_POINTS {
            points.pop_front();
        }
        points.push_back(point);
    }

    fn remember(&self, events: &[Value]) {
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        for event in events {
            if recent.len() == RECENT_EVENTS {
                recent.pop_front();
            }
            recent.push_back(event.clone());
        }
    }
}

impl Greeter for FrameBuilder {
    fn greeting(&self) -> Greeting {
        let reading = self.read();
        let (mut spans, newest) = self.watch.spans_after(0);
        // The page keeps a minute (and a little): older bars it would drop.
        let since = self.watch.now_us().saturating_sub(BACKLOG_US);
        spans.retain(|span| span.end_us >= since);
        let recent: Vec<Value> =
            self.recent.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect();
        // One reading: no rates yet (null, drawn as "–", never as a 0).
        let mut samples = Samples::default();
        samples.push(Sample::of(&reading));
        let state = self.state(&reading, &samples);
        let points: Vec<Value> =
            self.points.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect();
        let mut hello = self.hello();
        hello["points"] = Value::Array(points);
        let mut messages = vec![
            StreamMessage::new("hello", &hello.to_string(), None),
            StreamMessage::new("state", &state.to_string(), None),
            StreamMessage::new("bars", &backlog_bars(&spans).to_string(), Some(newest)),
        ];
        if let Some(gil) = &self.farm.gil {
            // The recent turns, so the strip starts full (a turn the first
            // frame sends again is drawn twice, in the same place).
            let (holds, _) = gil.holds_after(0);
            if !holds.is_empty() {
                messages.push(StreamMessage::new("gil", &self.turns(&holds).to_string(), None));
            }
        }
        if !recent.is_empty() {
            messages.push(StreamMessage::new("events", &Value::Array(recent).to_string(), None));
        }
        Greeting { messages, bars_upto: newest }
    }
}

/// The greeting's `bars`: the kept spans cut into [`FRAME_INTERVAL`]
/// slices by when they ended, each slice as a frame would have sent it
/// ([`bars`]), so a page opened late draws the past as a page open all
/// along did — not one sum across the whole history.
fn backlog_bars(spans: &[JobSpan]) -> Value {
    let slice_us = FRAME_INTERVAL.as_micros() as u64;
    let (mut shown, mut summed) = (Vec::new(), Vec::new());
    for slice in spans.chunk_by(|a, b| a.end_us / slice_us == b.end_us / slice_us) {
        let Value::Object(mut frame) = bars(slice) else { continue };
        for (key, list) in [("bars", &mut shown), ("summed", &mut summed)] {
            if let Some(Value::Array(items)) = frame.remove(key) {
                list.extend(items);
            }
        }
    }
    json!({"bars": shown, "summed": summed})
}

/// The `bars` message: every span, or — past [`MAX_BARS`] — the longest
/// ones as bars and the rest summed per worker row.
fn bars(spans: &[JobSpan]) -> Value {
    if spans.len() <= MAX_BARS {
        return json!({"bars": spans, "summed": []});
    }
    let mut by_length: Vec<&JobSpan> = spans.iter().collect();
    by_length.sort_by_key(|span| std::cmp::Reverse(span.end_us - span.start_us));
    let (shown, summed) = by_length.split_at(MAX_BARS);
    let mut rows: Vec<Value> = Vec::new();
    for span in summed {
        let row = rows.iter_mut().find(|row| row["worker"] == span.worker && row["host"] == json!(span.host));
        let busy = span.end_us - span.start_us;
        match row {
            Some(row) => {
                row["jobs"] = json!(row["jobs"].as_u64().unwrap_or(0) + 1);
                row["busy_us"] = json!(row["busy_us"].as_u64().unwrap_or(0) + busy);
                row["from_us"] = json!(row["from_us"].as_u64().unwrap_or(u64::MAX).min(span.start_us));
                row["to_us"] = json!(row["to_us"].as_u64().unwrap_or(0).max(span.end_us));
            }
            None => rows.push(json!({
                "worker": span.worker, "host": span.host, "jobs": 1, "busy_us": busy,
                "from_us": span.start_us, "to_us": span.end_us,
            })),
        }
    }
    json!({"bars": shown, "summed": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(seq: u64, worker: usize, length: u64) -> JobSpan {
        JobSpan {
            seq,
            worker,
            host: None,
            id: seq.to_string(),
            cmd: "compute",
            accepted_us: 0,
            start_us: 10,
            end_us: 10 + length,
            outcome: "ok",
            attempts: 1,
        }
    }

    #[test]
    fn a_frame_of_many_bars_keeps_the_longest_and_sums_the_rest_without_losing_a_job() {
        let spans: Vec<JobSpan> = (0..MAX_BARS as u64 + 100).map(|i| span(i, (i % 2) as usize, i)).collect();
        let frame = bars(&spans);
        let shown = frame["bars"].as_array().unwrap();
        assert_eq!(shown.len(), MAX_BARS);
        assert!(shown.iter().all(|bar| bar["end_us"].as_u64().unwrap() - 10 >= 100), "the longest are shown");
        let summed: u64 =
            frame["summed"].as_array().unwrap().iter().map(|row| row["jobs"].as_u64().unwrap()).sum();
        assert_eq!(summed, 100, "every job is a bar or in a sum");
        assert_eq!(frame["summed"].as_array().unwrap().len(), 2, "one sum per worker row");
    }

    #[test]
    fn a_late_pages_backlog_is_summed_frame_by_frame_not_across_the_whole_history() {
        // Three frames' worth of short jobs, each frame over MAX_BARS on one
        // worker: three sums, each within its own frame's time.
        let slice_us = FRAME_INTERVAL.as_micros() as u64;
        let spans: Vec<JobSpan> = (0..3 * (MAX_BARS as u64 + 10))
            .map(|i| {
                let mut span = span(i, 0, 1);
                span.start_us = (i / (MAX_BARS as u64 + 10)) * slice_us + i % 100;
                span.end_us = span.start_us + 1;
                span
            })
            .collect();
        let greeting = backlog_bars(&spans);
        let summed = greeting["summed"].as_array().unwrap();
        assert_eq!(summed.len(), 3, "one sum per frame: {summed:?}");
        for sum in summed {
            let (from, to) = (sum["from_us"].as_u64().unwrap(), sum["to_us"].as_u64().unwrap());
            assert!(to - from < slice_us, "a sum spans one frame at most: {sum}");
        }
        let jobs: u64 = summed.iter().map(|row| row["jobs"].as_u64().unwrap()).sum();
        assert_eq!(greeting["bars"].as_array().unwrap().len() as u64 + jobs, spans.len() as u64);
    }

    fn sample(at_us: u64, ok_replies: f64, in_flight: f64) -> Sample {
        let errors = json!({"BUSY": ok_replies / 10.0}).as_object().cloned().unwrap();
        Sample { at_us, ok_replies, completed: ok_replies, errors, in_flight }
    }

    #[test]
    fn the_first_reading_has_no_rate_rather_than_a_false_zero() {
        let mut samples = Samples::default();
        samples.push(sample(0, 500.0, 3.0));
        assert_eq!(samples.rate(LAST_SECOND_US, |s| s.ok_replies), None);
        assert_eq!(samples.error_rates(LAST_SECOND_US), Value::Null);
    }

    #[test]
    fn rates_are_taken_over_the_last_second_not_the_last_frame() {
        let mut samples = Samples::default();
        // 1,000 ok/s for 2 s, then a frame of 200 ms with nothing answered.
        for frame in 0..=10u64 {
            samples.push(sample(frame * 200_000, frame as f64 * 200.0, 2.0));
        }
        samples.push(sample(2_200_000, 2_000.0, 4.0));
        // From the reading a second back (1.2 s: 1,200 ok) to now: 800/s,
        // where the last frame alone would say 0.
        assert_eq!(samples.rate(LAST_SECOND_US, |s| s.ok_replies), Some(800.0));
        assert_eq!(samples.error_rates(LAST_SECOND_US)["BUSY"], json!(80.0));
        let mean = samples.mean_in_flight();
        assert!((mean - 26.0 / 12.0).abs() < 1e-9, "{mean}");
    }

    #[test]
    fn samples_older_than_the_little_window_are_let_go() {
        let mut samples = Samples::default();
        for frame in 0..100u64 {
            samples.push(sample(frame * 200_000, 0.0, 1.0));
        }
        let (oldest, newest) = samples.reference(u64::MAX).unwrap();
        assert_eq!(newest.at_us - oldest.at_us, LITTLE_WINDOW_US);
    }

    #[test]
    fn few_bars_are_all_shown() {
        let frame = bars(&[span(1, 0, 5), span(2, 1, 7)]);
        assert_eq!(frame["bars"].as_array().unwrap().len(), 2);
        assert!(frame["summed"].as_array().unwrap().is_empty());
    }
}
