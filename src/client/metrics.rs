//! `tc-client --metrics-addr ADDR`: the run as Prometheus metrics while it
//! goes (as vegeta's `-prometheus-addr`), on the same HTTP endpoint the
//! server and the worker hosts serve theirs with ([`crate::runtime::http`]).
//!
//! Families (prefix `tc_client_`): requests sent; ok replies, error replies
//! by code and timeouts (measured requests: the warm-up is left out, as in
//! every report); latency from schedule as a histogram in seconds, updated
//! once per `--hdr-log-interval` (the intervals the run already merges);
//! the open loop's target rate; and whether the run has finished. Counts
//! are read from the connections' live counters on each scrape, so they
//! agree with the JSON report once the run is over. After the run the
//! endpoint stays up until `/metrics` is scraped once more (the final
//! figures) or `--metrics-linger` passes.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::client::bench::ProgressCounters;
use crate::runtime::http::Pages;
use crate::runtime::metrics::{render, Families};

/// The metric name prefix of tc-client's families.
pub(crate) const PREFIX: &str = "tc_client";

/// Histogram buckets, in seconds: 100 µs to 10 s, 1-2-5.
const BUCKETS: [f64; 16] =
    [0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0];

/// What the pages read: the run's live counters, and whether it ended.
#[derive(Debug)]
pub(crate) struct RunState {
    pub(crate) progress: Arc<ProgressCounters>,
    /// Set when the run is over (its counters final). `SeqCst`: once per run.
    pub(crate) finished: AtomicBool,
    /// Set by the first `/metrics` scrape after `finished`.
    pub(crate) scraped_after_end: AtomicBool,
}

impl RunState {
    /// The state of a run about to start, on `progress`.
    pub(crate) fn new(progress: Arc<ProgressCounters>) -> Arc<RunState> {
        Arc::new(RunState {
            progress,
            finished: AtomicBool::new(false),
            scraped_after_end: AtomicBool::new(false),
        })
    }

    /// The run is over: every counter is final from here on (the reports
    /// are written from the same figures).
    pub(crate) fn finish(&self) {
        self.finished.store(true, Ordering::SeqCst);
    }

    /// After the reports: waits until the final figures were scraped, or
    /// `linger` passed (a scraper that never comes does not hold the
    /// client). Polls every 50 ms: this is the end of the process.
    pub(crate) fn linger(&self, linger: Duration, address: std::net::SocketAddr) {
        self.finish();
        if !self.scraped_after_end.load(Ordering::SeqCst) && !linger.is_zero() {
            crate::client::say!(
                "tc-client: waiting up to {} for a final scrape of http://{address}/metrics (--metrics-linger)",
                humantime::format_duration(linger)
            );
        }
        let until = Instant::now() + linger;
        while !self.scraped_after_end.load(Ordering::SeqCst) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The client's pages: `/metrics`, `/healthz`, `/readyz`.
pub(crate) struct ClientPages {
    state: Arc<RunState>,
    registry: Registry,
}

impl ClientPages {
    pub(crate) fn new(state: Arc<RunState>) -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register_collector(Box::new(ClientCollector { state: Arc::clone(&state) }));
        ClientPages { state, registry }
    }
}

impl Pages for ClientPages {
    fn metrics(&self) -> String {
        // Read "finished" before rendering: the figures of a scrape that
        // saw it are the final ones.
        let finished = self.state.finished.load(Ordering::SeqCst);
        let text = render(&self.registry);
        if finished {
            self.state.scraped_after_end.store(true, Ordering::SeqCst);
        }
        text
    }

    fn health(&self) -> serde_json::Value {
        serde_json::json!({"status": "ok", "finished": self.state.finished.load(Ordering::SeqCst)})
    }

    fn readiness(&self) -> (bool, serde_json::Value) {
        (true, serde_json::json!({"status": "ready"}))
    }
}

/// Reads the run's counters on every scrape.
#[derive(Debug)]
struct ClientCollector {
    state: Arc<RunState>,
}

impl Collector for ClientCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        use std::sync::atomic::Ordering::Relaxed;
        let progress = &self.state.progress;
        let mut families = Families { encoder: &mut encoder };
        families.counter(
            "requests_sent",
            "Requests written, warm-up included.",
            progress.sent.load(Relaxed),
        )?;
        families.counter(
            "ok_replies",
            "Measured requests answered with a result.",
            progress.ok.load(Relaxed),
        )?;
        let by_code: Vec<(Vec<(&str, String)>, u64)> = progress
            .errors_by_code
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(code, tally)| (vec![("code", code.clone())], tally.count))
            .collect();
        families.counters("error_replies", "Measured requests answered with an error, by code.", by_code)?;
        families.counter(
            "timeouts",
            "Measured requests with no reply within --timeout.",
            progress.timeouts.load(Relaxed),
        )?;
        families.gauge(
            "finished",
            "1 once the run is over: the figures are final.",
            i64::from(self.state.finished.load(Ordering::SeqCst)),
        )?;
        let (from_schedule, from_send) = {
            let so_far = progress.so_far.latency.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            (SecondsHistogram::of(&so_far.from_schedule), SecondsHistogram::of(&so_far.from_send))
        };
        for (name, histogram, help) in [
            (
                "latency",
                from_schedule,
                "Latency from schedule of the measured ok replies, as of the last complete interval.",
            ),
            (
                "latency_from_send",
                from_send,
                "Latency from the actual send of the measured ok replies, as of the last complete \
                 interval (below latency by the coordinated omission of an open loop).",
            ),
        ] {
            histogram.encode(encoder.encode_descriptor(
                name,
                help,
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?)?;
        }
        let target = f64::from_bits(progress.so_far.target_rps.load(Relaxed));
        if target.is_finite() {
            let help = "The open loop's target rate in the last complete interval.";
            let gauge = ConstGauge::new(target);
            gauge.encode(encoder.encode_descriptor(
                "target_requests_per_second",
                help,
                None,
                gauge.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// An HdrHistogram of µs as a Prometheus histogram in seconds: the count
/// in each of [`BUCKETS`] read from it (bucket by bucket, not sample by
/// sample), its sum from its mean.
#[derive(Debug)]
struct SecondsHistogram {
    sum: f64,
    count: u64,
    /// (upper bound in seconds, samples in this bucket alone).
    buckets: Vec<(f64, u64)>,
}

impl SecondsHistogram {
    fn of(us: &hdrhistogram::Histogram<u64>) -> Self {
        let mut buckets = Vec::with_capacity(BUCKETS.len() + 1);
        let mut below = 0u64;
        for bound in BUCKETS {
            let upto = if us.is_empty() { 0 } else { us.count_between(0, (bound * 1e6) as u64) };
            buckets.push((bound, upto.saturating_sub(below)));
            below = upto.max(below);
        }
        buckets.push((f64::INFINITY, us.len().saturating_sub(below)));
        SecondsHistogram { sum: us.mean() * us.len() as f64 / 1e6, count: us.len(), buckets }
    }
}

impl EncodeMetric for SecondsHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}
