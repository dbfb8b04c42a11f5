//! The metrics endpoint's limits and token, shared by `tc-server` and
//! `tc-worker` (both serve `--metrics-addr` with the same code).

use std::time::Duration;

use crate::runtime::http::HttpLimits;
use crate::units::parse_duration;

/// How the `--metrics-addr` endpoint is bounded and protected.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct MetricsHttpArgs {
    /// Require `Authorization: Bearer TOKEN` for /metrics (/healthz and
    /// /readyz stay open for probes).
    #[arg(help_heading = "Observability", long, env = "THREADCENTER_METRICS_TOKEN", hide_env_values = true)]
    pub(crate) metrics_token: Option<String>,

    /// Connections the metrics endpoint holds at once. When full, a new one
    /// closes the oldest connection that has not sent its request yet; if
    /// every one has (answers being written, dashboard streams), the new
    /// one is answered 503 and closed.
    #[arg(help_heading = "Observability", long, env = "THREADCENTER_METRICS_MAX_CONNECTIONS", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub(crate) metrics_max_connections: u32,

    /// Live dashboard streams (/events) at once, within
    /// --metrics-max-connections; one more is answered 503. Each costs a
    /// connection and a share of one fixed backlog, however slow its browser.
    #[arg(help_heading = "Observability", long, env = "THREADCENTER_METRICS_MAX_STREAMS", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub(crate) metrics_max_streams: u32,

    /// Read and write timeout of a metrics connection: its request must
    /// arrive within it, or the connection is closed.
    #[arg(help_heading = "Observability", long, env = "THREADCENTER_METRICS_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub(crate) metrics_timeout: Duration,
}

impl MetricsHttpArgs {
    /// The endpoint's limits.
    pub(crate) fn limits(&self) -> HttpLimits {
        HttpLimits {
            max_connections: self.metrics_max_connections as usize,
            max_streams: self.metrics_max_streams as usize,
            timeout: self.metrics_timeout,
            token: self.metrics_token.clone(),
            // Set by the server from its certificate (`--metrics-tls`).
            tls: None,
        }
    }
}
