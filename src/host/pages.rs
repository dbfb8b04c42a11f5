//! `tc-worker --metrics-addr`: the host's own `/metrics`, `/healthz` and
//! `/readyz`, on the server's HTTP endpoint ([`crate::runtime::http`]).
//!
//! Ready means: connected to NATS, at least one worker up, not draining —
//! a load balancer or an orchestrator can then tell a host that takes jobs
//! from one that cannot.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;

use super::HeldJobs;
use crate::remote::connect::LinkState;
use crate::runtime::http::Pages;
use crate::runtime::metrics::{render, Families, PREFIX};
use crate::runtime::pool::WorkerBoard;

/// What a host's pages read, all live.
pub(crate) struct HostState {
    pub(crate) name: String,
    pub(crate) mode: &'static str,
    pub(crate) board: Arc<WorkerBoard>,
    pub(crate) held: Arc<HeldJobs>,
    pub(crate) link: Arc<LinkState>,
    pub(crate) started: Instant,
    /// Set when the host starts draining (SIGTERM). `SeqCst`: once per run.
    pub(crate) draining: AtomicBool,
    /// What the host refused or skipped.
    pub(crate) counters: Arc<HostCounters>,
    /// Whether messages are signed and checked (`--farm-key`).
    pub(crate) farm_key: bool,
}

/// What a host refused or skipped, for `/metrics`. Each is bumped by one
/// task and read by scrapes, `Relaxed`: independent counters.
#[derive(Debug, Default)]
pub(crate) struct HostCounters {
    /// Messages dropped: not signed with the farm key, replayed, or stale.
    pub(crate) rejected: std::sync::atomic::AtomicU64,
    /// Jobs dropped unrun: past their expiry (their gateway had answered).
    pub(crate) expired: std::sync::atomic::AtomicU64,
    /// Jobs dropped unrun: their gateway has gone silent.
    pub(crate) orphaned: std::sync::atomic::AtomicU64,
    /// Redeliveries past the attempt limit run anyway: a live host held
    /// the job, or the broker link had just come back (not a crash).
    pub(crate) redeliveries_excused: std::sync::atomic::AtomicU64,
    /// Messages dropped because their sender's farm key differs.
    pub(crate) key_trouble: crate::remote::envelope::KeyTrouble,
    /// The warnings about other refused messages, a line per kind at most
    /// every 30 s (anyone who can publish to NATS can send them).
    pub(crate) refusals: crate::remote::envelope::RefusalLog,
}

impl fmt::Debug for HostState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HostState")
    }
}

impl HostState {
    fn reasons(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if !self.link.is_up() {
            reasons.push("the connection to NATS is down (reconnecting)".to_string());
        }
        if self.board.alive() == 0 {
            reasons.push(format!("no worker is up (0 of {})", self.board.configured()));
        }
        if self.draining.load(Ordering::SeqCst) {
            reasons.push("the host is draining (SIGTERM)".to_string());
        }
        reasons
    }

    /// Said in `/readyz` even when ready: what an operator should know.
    fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if !self.farm_key {
            warnings.push(crate::remote::envelope::NO_KEY_WARNING.to_string());
        }
        warnings.extend(self.counters.key_trouble.recent());
        warnings
    }
}

/// The host's pages.
pub(crate) struct HostPages {
    state: Arc<HostState>,
    registry: Registry,
}

impl HostPages {
    pub(crate) fn new(state: Arc<HostState>) -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register_collector(Box::new(HostCollector { state: Arc::clone(&state) }));
        HostPages { state, registry }
    }
}

impl Pages for HostPages {
    fn metrics(&self) -> String {
        render(&self.registry)
    }

    fn health(&self) -> serde_json::Value {
        serde_json::json!({
            "status": "ok",
            "host": self.state.name,
            "uptime_s": self.state.started.elapsed().as_secs_f64(),
            "draining": self.state.draining.load(Ordering::SeqCst),
        })
    }

    fn readiness(&self) -> (bool, serde_json::Value) {
        let reasons = self.state.reasons();
        let ready = reasons.is_empty();
        let body = serde_json::json!({
            "status": if ready { "ready" } else { "not_ready" },
            "reasons": reasons,
            "workers_alive": self.state.board.alive(),
            "workers_configured": self.state.board.configured(),
            "jobs_held": self.state.held.len(),
            "warnings": self.state.warnings(),
        });
        (ready, body)
    }
}

/// Reads the host's state on every scrape.
#[derive(Debug)]
struct HostCollector {
    state: Arc<HostState>,
}

impl Collector for HostCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let state = &self.state;
        let workers = state.board.snapshot();
        let mut out = Families { encoder: &mut encoder };
        let info =
            [("version", env!("CARGO_PKG_VERSION")), ("mode", state.mode), ("host", state.name.as_str())];
        out.info("host_build", "The worker host's version, pool mode and name", &info)?;
        out.gauge_seconds("uptime", "Time since the host started", state.started.elapsed().as_secs_f64())?;
        out.gauge("ready", "1 when /readyz answers 200", state.reasons().is_empty() as i64)?;
        out.gauge(
            "nats_connected",
            "1 while the host's connection to NATS is up",
            state.link.is_up() as i64,
        )?;
        out.gauge(
            "workers_configured",
            "Workers the pool keeps (--workers)",
            state.board.configured() as i64,
        )?;
        out.gauge("workers_alive", "Workers up now (idle or busy)", state.board.alive() as i64)?;
        out.gauge("host_jobs_held", "Jobs pulled from NATS and not yet answered", state.held.len() as i64)?;
        out.counter(
            "host_jobs",
            "Jobs run to completion since the host started",
            workers.iter().map(|w| w.jobs_done).sum(),
        )?;
        out.counter(
            "worker_restarts",
            "Times a worker was replaced after dying, hanging or being written off",
            workers.iter().map(|w| w.restarts).sum(),
        )?;
        let c = &state.counters;
        let read =
            |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
        out.counter(
            "host_messages_rejected",
            "Messages dropped unread: not signed with the farm key, replayed or stale",
            read(&c.rejected),
        )?;
        out.counter(
            "host_jobs_expired",
            "Jobs dropped unrun: past their gateway's deadline",
            read(&c.expired),
        )?;
        out.counter(
            "host_jobs_orphaned",
            "Jobs dropped unrun: their gateway has gone silent",
            read(&c.orphaned),
        )?;
        out.counter(
            "host_redeliveries_excused",
            "Redeliveries past the attempt limit not counted as crashes (a live host held the job, or the broker link had just come back)",
            read(&c.redeliveries_excused),
        )
    }
}
