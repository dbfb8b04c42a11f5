//! The sending side of a benchmark connection: which request comes next
//! ([`Schedule`]: command mix, warm-up, stop condition, open-loop timing),
//! and the two ways of sending it — topping up the window in a closed loop
//! ([`Feeder`], driven by the receiver's thread) or keeping a fixed schedule
//! in an open loop ([`send_on_schedule`], its own thread).

use crate::transport::Transport;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use super::mix::{BenchCommand, MixSequence};
use super::options::{Pacing, StopAfter, Warmup};
use super::stages::Stages;
use super::window::{describe_io_error, InFlight, Window};
use super::{Plan, RunSinks};

/// In an open loop, at most this many requests may wait for replies on one
/// connection; past it the sender waits (and the wait shows in the corrected
/// latency). It bounds the client's memory when the server falls behind.
const OPEN_LOOP_MAX_IN_FLIGHT: usize = 100_000;

/// Which request comes next on a connection, and whether it is measured:
/// the command mix, the warm-up, the stop condition and, in an open loop,
/// the schedule.
pub(super) struct Schedule<'a> {
    plan: &'a Plan,
    commands: MixSequence,
    warmup_requests: u64,
    /// When the measured part started: known up front for a timed warm-up,
    /// set at the first measured request for a counted one.
    measured_since: Option<Instant>,
    next_id: u64,
    /// Measured requests handed out so far (for `--requests`).
    measured_count: u64,
    /// Open loop: time between this connection's requests, and its offset
    /// in the global schedule.
    interval: Duration,
    offset: Duration,
    /// A staged open loop: the profile (warm-up first), this connection's
    /// place among the connections and how many there are — it sends the
    /// profile's requests index, index + c, index + 2c...
    profile: Option<(Stages, u64, u64)>,
}

impl<'a> Schedule<'a> {
    pub(super) fn new(index: usize, plan: &'a Plan) -> Self {
        let options = &plan.options;
        let (interval, offset) = match options.pacing {
            Pacing::Open { rate } => {
                let interval = Duration::from_secs_f64(options.concurrency as f64 / rate);
                (interval, interval.mul_f64(index as f64 / options.concurrency as f64))
            }
            Pacing::Closed { .. } | Pacing::Staged(_) => (Duration::ZERO, Duration::ZERO),
        };
        let profile = match &options.pacing {
            Pacing::Staged(stages) => {
                Some((stages.after_warmup(options.timed_warmup()), index as u64, options.concurrency as u64))
            }
            _ => None,
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
            measured_count: 0,
            interval,
            offset,
            profile,
        }
    }

    /// A staged profile's end, warm-up included.
    fn profile_end(&self) -> Option<Instant> {
        self.profile.as_ref().map(|(stages, _, _)| self.plan.start + stages.total())
    }

    /// Open loop: when the next request is due; `None` when a staged
    /// profile is over.
    fn next_due(&self) -> Option<Instant> {
        match &self.profile {
            Some((stages, index, connections)) => {
                stages.due(self.next_id * connections + index).map(|at| self.plan.start + at)
            }
            None => Some(self.plan.start + self.offset + self.interval.mul_f64(self.next_id as f64)),
        }
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
        // `--requests N` counts measured requests only, whatever the kind
        // of warm-up before them.
        let finished = match self.plan.options.stop {
            StopAfter::Requests(n) => measured && self.measured_count >= n,
            StopAfter::Duration(d) => self.measured_since.is_some_and(|since| scheduled >= since + d),
        };
        if finished || crate::client::interrupt::requested() {
            return None;
        }
        self.next_id += 1;
        self.measured_count += u64::from(measured);
        Some((id, self.commands.next().unwrap_or(BenchCommand::Ping), measured))
    }
}

/// Closed loop: tops the window up and writes the new requests.
pub(super) struct Feeder<'a> {
    /// Which request comes next.
    pub(super) schedule: Schedule<'a>,
    /// The connection's write half.
    pub(super) stream: Arc<Transport>,
    /// Requests to keep in flight.
    pub(super) pipeline: usize,
    /// The connection's index (for wire ids).
    pub(super) index: usize,
}

impl Feeder<'_> {
    /// Sends requests until `pipeline` are in flight (or the run is over).
    /// Each request is registered *before* it is written: its reply may
    /// arrive before `write` returns.
    pub(super) fn fill(&mut self, window: &Window, batch: &mut Vec<u8>) -> std::io::Result<usize> {
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
                            super::wire_id(self.index, id),
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
pub(super) fn send_on_schedule(
    index: usize,
    plan: &Plan,
    stream: Arc<Transport>,
    window: &Window,
    sinks: &RunSinks,
) {
    let mut schedule = Schedule::new(index, plan);
    // A staged profile ends by itself (`next_due` is `None`); otherwise the
    // schedule's stop condition ends the loop.
    while let Some(due) = schedule.next_due() {
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
        let wire = super::wire_id(index, id);
        if let Err(e) = stream.write_all(&command.encode(wire, plan.options.size, &plan.options.images)) {
            window.close(Some(describe_io_error(index, plan, "sending a request", &e)));
            return;
        }
        sinks.progress.sent.fetch_add(1, Relaxed);
    }
    // A profile that ends in silence (`10s@0` last) lasts its whole
    // length: the connections stay open and idle until it ends.
    if let Some(end) = schedule.profile_end() {
        let _ = window.wait_until(end);
    }
    let mut state = window.lock();
    state.sending_done = true;
    window.changed.notify_all();
}
