//! The Prometheus view of the farm: what `/metrics` serves.
//!
//! Nothing here counts anything. The counters live in [`crate::server::stats`], the
//! workers' state in the [`crate::runtime::pool::WorkerBoard`], the mutex in
//! [`crate::server::lock`]; on every scrape [`FarmCollector`] reads the very same
//! [`StatsReport`] that the `stats` command returns and turns it into metric
//! families, so `stats` and `/metrics` cannot drift apart. The latency
//! histograms are `prometheus-client` histograms kept by
//! [`crate::server::stats::Stats`] (one per command); they are encoded as they are.
//!
//! Names follow Prometheus conventions: everything starts `threadcenter_`,
//! counters end `_total` (added by the encoder), durations are in seconds
//! and end `_seconds`. The exposition format is OpenMetrics text, which
//! Prometheus negotiates and reads natively.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;

use super::{Farm, StatsReport};
use crate::runtime::metrics::{Families, PREFIX};
use crate::server::stats::LatencyHistograms;

/// Builds the registry that `/metrics` encodes: the farm's collector.
pub(super) fn registry(farm: Arc<Farm>) -> Registry {
    let mut registry = Registry::with_prefix(PREFIX);
    registry.register_collector(Box::new(FarmCollector { farm }));
    registry
}

/// Reads the farm's state on every scrape.
struct FarmCollector {
    farm: Arc<Farm>,
}

impl fmt::Debug for FarmCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FarmCollector")
    }
}

impl Collector for FarmCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let farm = &self.farm;
        let report = farm.stats_report();
        let ready = farm.readiness().is_ready();
        let mut out = Families { encoder: &mut encoder };
        let build = [("version", env!("CARGO_PKG_VERSION")), ("mode", report.mode.as_str())];
        out.info("build", "The server's version and pool mode", &build)?;
        out.gauge_seconds("uptime", "Time since the server started", report.uptime_s)?;
        out.gauge("ready", "1 when /readyz answers 200", ready as i64)?;
        out.gauge("draining", "1 while a shutdown is under way", report.draining as i64)?;
        requests(&mut out, &report)?;
        latency(&mut out, farm.stats.histograms())?;
        jobs(&mut out, &report)?;
        connections_and_workers(&mut out, &report)?;
        cache_and_limits(&mut out, &report)?;
        remote_hosts(&mut out, &report)?;
        model_and_mutex(&mut out, &report)
    }
}

/// Requests by command, and replies by command and outcome.
fn requests(out: &mut Families<'_, '_>, report: &StatsReport) -> fmt::Result {
    out.counters(
        "requests_received",
        "Requests by command, counted when they arrive (before any check)",
        report.requests.iter().map(|(command, n)| ([("command", command.as_str())], *n)),
    )?;
    out.counters(
        "requests",
        "Requests answered, by command and outcome code (OK or the error code of the reply); \
         command=\"unknown\" when none could be read",
        report.replies.iter().flat_map(|(command, outcomes)| {
            outcomes
                .iter()
                .map(move |(code, n)| ([("command", command.as_str()), ("code", code.as_str())], *n))
        }),
    )?;
    out.counters(
        "errors",
        "Error frames sent, by code (error replies and connections refused at --max-connections)",
        report.errors.iter().map(|(code, n)| ([("code", code.as_str())], *n)),
    )?;
    let rate_limited = report.errors.get("RATE_LIMITED").copied().unwrap_or(0);
    out.counter("rate_limited", "Requests refused by --rate-limit", rate_limited)
}

/// The latency histograms, by command.
fn latency(out: &mut Families<'_, '_>, histograms: &LatencyHistograms) -> fmt::Result {
    out.histograms(
        "request_duration",
        "Time from a request's frame being read to its reply being queued for the client, by command",
        histograms.request.observed(),
    )?;
    out.histograms(
        "job_queue_wait",
        "Time a job waited for a free worker, by command",
        histograms.queue_wait.observed(),
    )?;
    out.histograms("job_service", "Time a job ran on its worker, by command", histograms.service.observed())
}

/// Where the jobs are and how they ended.
fn jobs(out: &mut Families<'_, '_>, report: &StatsReport) -> fmt::Result {
    let jobs = &report.jobs;
    out.gauge(
        "jobs_in_flight",
        "Jobs accepted and not yet answered (queued or running)",
        jobs.in_flight as i64,
    )?;
    out.gauge("queue_depth", "Jobs waiting for a free worker", jobs.queued as i64)?;
    out.gauge(
        "queue_capacity",
        "Jobs that may wait before new ones get BUSY (--queue-capacity)",
        jobs.queue_capacity as i64,
    )?;
    out.counter("jobs_completed", "Jobs run to completion by a worker", jobs.completed)?;
    out.counter(
        "jobs_cancelled",
        "Jobs skipped because their client left before they started",
        jobs.cancelled,
    )?;
    out.counter("jobs_retried", "Jobs sent to another worker after their worker crashed", jobs.retried)?;
    out.counter("job_timeouts", "Jobs answered TIMEOUT after running past --job-timeout", jobs.timed_out)?;
    out.counter("replies_dropped", "Finished jobs whose client had already left", jobs.replies_dropped)
}

/// Connections and the worker pool.
fn connections_and_workers(out: &mut Families<'_, '_>, report: &StatsReport) -> fmt::Result {
    let connections = &report.connections;
    out.gauge("connections_open", "Client connections open now", connections.open as i64)?;
    out.counter("connections_accepted", "Client connections accepted since start", connections.total)?;
    out.counter(
        "connections_rejected",
        "Connections turned away: over --max-connections, or failed authentication",
        connections.rejected,
    )?;
    out.counter(
        "connections_tls_failed",
        "Connections closed because their TLS handshake failed or timed out (e.g. plain text on a TLS port)",
        connections.tls_failed,
    )?;
    out.counter(
        "connections_rejected_per_ip",
        "Connections turned away because their address held --max-connections-per-ip",
        connections.rejected_per_ip,
    )?;
    out.counter(
        "connections_idle_closed",
        "Connections closed after --idle-timeout with nothing owed and nothing sent",
        connections.idle_closed,
    )?;
    let frames = &connections.frame_memory;
    out.gauge(
        "frame_memory_bytes",
        "Memory held by frames still arriving, all connections",
        frames.bytes as i64,
    )?;
    out.gauge("frame_memory_limit_bytes", "--max-frame-memory", frames.limit as i64)?;
    out.counter(
        "frame_memory_refused",
        "Connections closed because their frame needed more than was left of --max-frame-memory",
        frames.refused,
    )?;
    let workers = &report.workers;
    out.gauge("workers_configured", "Workers the pool keeps (--workers)", workers.configured as i64)?;
    out.gauge("workers_alive", "Workers up now (idle or busy)", workers.alive as i64)?;
    out.gauge(
        "workers_throttled",
        "Worker slots waiting for the restart budget (--max-restarts)",
        workers.throttled as i64,
    )?;
    let ids: Vec<String> = report.worker_list.iter().map(|w| w.id.to_string()).collect();
    out.counters(
        "worker_restarts",
        "Times a worker was replaced after dying, hanging or being written off, by worker slot",
        report.worker_list.iter().zip(&ids).map(|(w, id)| ([("worker", id.as_str())], w.restarts)),
    )?;
    out.counters(
        "worker_jobs",
        "Jobs run to completion, by worker slot",
        report.worker_list.iter().zip(&ids).map(|(w, id)| ([("worker", id.as_str())], w.jobs_done)),
    )?;
    out.counter(
        "worker_threads_abandoned",
        "Worker threads written off after a job timeout (thread mode; they cannot be killed)",
        workers.abandoned_threads,
    )
}

/// The result cache and the GIL (zeros when they are off, so queries and
/// alerts work the same on every server).
fn cache_and_limits(out: &mut Families<'_, '_>, report: &StatsReport) -> fmt::Result {
    let cache = report.cache.as_ref();
    out.counter("cache_hits", "Requests answered from the result cache", cache.map_or(0, |c| c.hits))?;
    out.counter("cache_misses", "Cacheable requests that had to run", cache.map_or(0, |c| c.misses))?;
    out.gauge("cache_entries", "Results in the cache now", cache.map_or(0, |c| c.entries as i64))?;
    out.counter(
        "gil_switches",
        "Times the --gil lock was taken (thread mode with --gil)",
        report.gil.as_ref().map_or(0, |g| g.switches),
    )
}

/// A gateway's worker hosts and its NATS counters (only with `--nats`).
fn remote_hosts(out: &mut Families<'_, '_>, report: &StatsReport) -> fmt::Result {
    let (Some(remote), Some(hosts)) = (&report.remote, &report.hosts) else { return Ok(()) };
    out.gauge("nats_connected", "1 while the gateway's connection to NATS is up", remote.connected as i64)?;
    out.gauge("hosts_alive", "Worker hosts heard from within the host timeout", remote.hosts_alive as i64)?;
    out.counter("nats_jobs_forwarded", "Jobs published to the JetStream stream", remote.forwarded)?;
    out.counter(
        "nats_parcels_forwarded",
        "Stream messages those jobs travelled in (short compute jobs are packed several to a message)",
        remote.parcels,
    )?;
    out.counter(
        "nats_jobs_refused",
        "Jobs not published: stream full, NATS refusing, or over max_payload",
        remote.refused,
    )?;
    out.counter(
        "nats_redeliveries",
        "Results of jobs delivered more than once (a host died, hung or was cut off)",
        remote.redelivered,
    )?;
    out.counter(
        "nats_duplicates_dropped",
        "Second results for a job already answered",
        remote.duplicates_dropped,
    )?;
    out.counter(
        "nats_messages_rejected",
        "Messages from NATS dropped unread: not signed with the farm key, replayed, stale or not ThreadCenter's",
        remote.messages_rejected,
    )?;
    out.counter(
        "nats_deadlines_passed",
        "Jobs answered TIMEOUT by the gateway: no result came by their deadline",
        remote.deadlines_passed,
    )?;
    out.counter(
        "nats_stale_jobs_removed",
        "Acknowledged jobs a broker crash had left in the stream, removed",
        remote.stale_jobs_removed,
    )?;
    out.counter(
        "nats_heartbeats_refused",
        "Heartbeats not taken into the host table: fields out of bounds, or a new name when full",
        remote.heartbeats_refused,
    )?;
    let live: Vec<_> = hosts.iter().filter(|h| h.alive).collect();
    out.gauges(
        "host_slots",
        "Workers of each live host",
        live.iter().map(|h| ([("host", h.name.as_str())], h.slots as i64)),
    )?;
    out.gauges(
        "host_busy",
        "Jobs each live host held at its last heartbeat",
        live.iter().map(|h| ([("host", h.name.as_str())], h.busy as i64)),
    )?;
    out.counters(
        "host_jobs",
        "Jobs each live host has finished since it started",
        live.iter().map(|h| ([("host", h.name.as_str())], h.jobs_done)),
    )
}

/// The model being served and the accelerator mutex.
fn model_and_mutex(out: &mut Families<'_, '_>, report: &StatsReport) -> fmt::Result {
    out.gauge(
        "model_loaded",
        "1 when a model is loaded and predictions can run",
        report.model.is_some() as i64,
    )?;
    if let Some(name) = &report.model {
        out.info("model", "The model being served", &[("name", name.as_str())])?;
    }
    let Some(mutex) = &report.mutex else { return Ok(()) };
    out.gauge("mutex_held", "1 while a client holds the accelerator mutex", mutex.locked as i64)?;
    out.gauge("mutex_queue_length", "Clients waiting for the accelerator mutex", mutex.queue_length as i64)?;
    out.counter("mutex_grants", "Times the accelerator mutex was granted", mutex.grants)?;
    out.counter(
        "mutex_lease_expiries",
        "Leases that ran out before their owner released (--lock-timeout)",
        mutex.lease_expiries,
    )?;
    out.counter(
        "mutex_queue_expiries",
        "Queued clients dropped for not asking again within the lease",
        mutex.queue_expiries,
    )
}
