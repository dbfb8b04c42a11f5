//! The metrics endpoint's limits and token, shared by `tc-server` and
//! `tc-worker` (both serve `--metrics-addr` with the same code).

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::runtime::http::HttpLimits;
use crate::units::parse_duration;

/// How the `--metrics-addr` endpoint is bounded and protected.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct MetricsHttpArgs {
    /// Require `Authorization: Bearer TOKEN` (or `?token=TOKEN`, for a
    /// browser) for /metrics, the dashboard / and /events; /healthz and
    /// /readyz stay open for probes.
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

/// Parses `--metrics-addr`: `IP:PORT` or `HOST:PORT` (the first address the
/// name resolves to).
pub(crate) fn parse_socket_address(text: &str) -> Result<SocketAddr, String> {
    let mut addresses = text
        .to_socket_addrs()
        .map_err(|e| format!("{text:?} is not an address like 127.0.0.1:9464 ({e})"))?;
    addresses.next().ok_or_else(|| format!("{text:?} resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_addresses_take_an_ip_or_a_name_with_a_port() {
        assert_eq!(parse_socket_address("127.0.0.1:9464"), Ok("127.0.0.1:9464".parse().unwrap()));
        assert!(parse_socket_address("localhost:0").unwrap().ip().is_loopback());
        for bad in ["", "9464", "127.0.0.1", "127.0.0.1:99999"] {
            assert!(parse_socket_address(bad).is_err(), "{bad:?}");
        }
    }
}
