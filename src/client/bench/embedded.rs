//! The server a benchmark measures: a remote one at `--host/--port`, or,
//! with `--embedded`, a real `tc-server` started in this process on a free
//! loopback port for the run and stopped after it.
//!
//! This is the only file on the client side that uses the server's code.

use std::net::TcpListener;
use std::time::Duration;

use super::options::{BenchOptions, Pacing, Target};
use super::{FarmHosts, ServerInfo};
use crate::client::connection::ServerConnection;
use crate::client::tls::ClientTls;
use crate::error::{Error, Result};
use crate::server::{Server, ServerConfig};

/// How long to wait for connections and the server-info request.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Chooses the ONNX engine of the farms this client embeds as tc-server
/// would, from `THREADCENTER_ENGINE` and `THREADCENTER_ONNXRUNTIME`.
///
/// # Errors
/// A value that is not an engine, or a library that cannot be loaded.
pub(crate) fn choose_engine_from_env() -> Result<()> {
    crate::work::model::choose_engine(engine_of_env()?, onnxruntime_of_env().as_deref())
}

/// `THREADCENTER_ENGINE`, as `tc-server --engine` reads it.
fn engine_of_env() -> Result<crate::work::model::EngineChoice> {
    use clap::ValueEnum;
    match std::env::var(crate::work::model::ENGINE_ENV) {
        Ok(text) if !text.is_empty() => {
            crate::work::model::EngineChoice::from_str(&text, true).map_err(|_| {
                Error::Config(format!(
                    "{}={text}: the engine is auto, onnxruntime or tract",
                    crate::work::model::ENGINE_ENV
                ))
            })
        }
        _ => Ok(crate::work::model::EngineChoice::Auto),
    }
}

/// `THREADCENTER_ONNXRUNTIME`: the library `tc-server --onnxruntime` takes.
fn onnxruntime_of_env() -> Option<std::path::PathBuf> {
    std::env::var_os(crate::work::model::ONNXRUNTIME_ENV).filter(|p| !p.is_empty()).map(Into::into)
}

/// Where a server listens and how to reach it: what `--live` asks for
/// `stats` on a connection of its own.
#[derive(Debug, Clone)]
pub(crate) struct ServerEndpoint {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) tls: Option<ClientTls>,
}

/// A server to measure, and how to stop it afterwards.
pub(crate) struct ServerUnderTest {
    host: String,
    port: u16,
    embedded: Option<Server>,
    /// TLS for the run's connections.
    tls: Option<ClientTls>,
    /// The embedded server's throwaway certificate files (removed on drop).
    _certificates: Option<tempfile::TempDir>,
}

impl ServerUnderTest {
    /// The server `options` target: the remote one, or a new embedded one.
    pub(crate) fn start(options: &BenchOptions) -> Result<Self> {
        Self::start_with(options, false)
    }

    /// As `start`; an embedded server requires the mutex for `predict` when
    /// `predict_lock` is set (`--cmd lock-cycle`).
    pub(crate) fn start_with(options: &BenchOptions, predict_lock: bool) -> Result<Self> {
        match &options.target {
            Target::Remote { host, port } => Ok(ServerUnderTest {
                host: host.clone(),
                port: *port,
                embedded: None,
                tls: options.tls.clone(),
                _certificates: None,
            }),
            Target::Embedded { mode, workers, gil } => {
                let listener = TcpListener::bind("127.0.0.1:0")
                    .map_err(|e| Error::io("binding a loopback port for the embedded server", e))?;
                // Room for every request the client can have in flight, so a
                // closed-loop run never sees BUSY from its own server.
                let window = match options.pacing {
                    Pacing::Closed { pipeline } => options.concurrency.saturating_mul(pipeline),
                    Pacing::Open { .. } | Pacing::Staged(_) => 0,
                };
                choose_engine_from_env()?;
                let defaults = ServerConfig::default();
                let mut config = ServerConfig {
                    mode: *mode,
                    workers: *workers,
                    queue_capacity: defaults.queue_capacity.max(window),
                    auth_token: options.auth_token.clone(),
                    gil_switch_interval: *gil,
                    predict_lock,
                    metrics_addr: options.dashboard,
                    ..defaults
                };
                let (certificates, tls) = match options.embedded_tls {
                    true => {
                        let (dir, files, tls) = throwaway_certificates()?;
                        config.tls = Some(files);
                        (Some(dir), Some(tls))
                    }
                    false => (None, None),
                };
                let server = Server::start(listener, config)?;
                server.log_settings();
                if let Some(addr) = server.metrics_addr() {
                    // On stderr, with the progress: stdout is the report's.
                    crate::client::say!(
                        "dashboard on http://{addr}/ (open it in a browser; the run is starting)"
                    );
                }
                let addr = server.local_addr();
                Ok(ServerUnderTest {
                    host: addr.ip().to_string(),
                    port: addr.port(),
                    embedded: Some(server),
                    tls,
                    _certificates: certificates,
                })
            }
        }
    }

    /// Where it listens (an embedded farm: once it has started).
    pub(crate) fn endpoint(&self) -> ServerEndpoint {
        ServerEndpoint { host: self.host.clone(), port: self.port, tls: self.tls.clone() }
    }

    /// `host:port`, for messages.
    pub(crate) fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Opens a connection, authenticating when a token is given.
    pub(crate) fn connect(&self, token: Option<&str>) -> Result<ServerConnection> {
        let mut connection =
            ServerConnection::connect(&self.host, self.port, CONNECT_TIMEOUT, self.tls.as_ref())?;
        if let Some(token) = token {
            connection.authenticate(token)?;
        }
        Ok(connection)
    }

    /// Asks the server for its mode and worker count (`stats`).
    ///
    /// A server that speaks the job protocol but not `stats` — the Python
    /// original answers `{"error": "unknown command"}` — can still be
    /// measured: its mode and workers are then unknown (`None`), and the
    /// caller says so once.
    pub(crate) fn info(&self, token: Option<&str>) -> Result<ServerInfo> {
        let mut connection = self.connect(token)?;
        connection.send(br#"{"id":"tc-client-info","cmd":"stats"}"#)?;
        let reply: serde_json::Value = serde_json::from_slice(connection.receive()?)
            .map_err(|e| Error::Protocol(format!("{}: the stats reply is not JSON: {e}", self.address())))?;
        let stats = &reply["result"];
        let hosts = stats["hosts"].as_array().map(|hosts| {
            let alive: Vec<&serde_json::Value> = hosts.iter().filter(|h| h["alive"] == true).collect();
            let mut modes: Vec<String> =
                alive.iter().filter_map(|h| h["mode"].as_str()).map(String::from).collect();
            modes.sort();
            modes.dedup();
            FarmHosts {
                alive: alive.len() as u64,
                workers: alive.iter().filter_map(|h| h["slots"].as_u64()).sum(),
                modes,
            }
        });
        let known = stats["mode"].as_str().map(|mode| {
            // A gateway's workers are its own plus those of its live hosts.
            let local = stats["workers"]["configured"].as_u64().unwrap_or(0);
            let workers = local + hosts.as_ref().map_or(0, |h| h.workers);
            // With no local pool, the jobs run in the hosts' mode: that is
            // the mode a CSV row and a chart should carry.
            let mode = match &hosts {
                Some(hosts) if local == 0 && !hosts.modes.is_empty() => hosts.modes.join("+"),
                _ => mode.to_string(),
            };
            (mode, workers, !stats["gil"].is_null())
        });
        Ok(ServerInfo {
            address: self.address(),
            mode: known.as_ref().map(|(mode, _, _)| mode.clone()),
            workers: known.as_ref().map(|(_, workers, _)| *workers),
            gil: known.as_ref().map(|(_, _, gil)| *gil),
            instance: stats["instance"].as_str().unwrap_or_default().to_string(),
            embedded: self.embedded.is_some(),
            tls: self.tls.is_some(),
            hosts,
        })
    }

    /// Stops an embedded server (a remote one is left alone).
    pub(crate) fn stop(self) {
        if let Some(server) = self.embedded {
            server.shutdown_handle().trigger();
            server.wait();
        }
    }
}

/// A CA and a certificate for 127.0.0.1 made for one `--tls --embedded` run,
/// in a temporary directory the server reads them from, and the client TLS
/// that trusts that CA only.
fn throwaway_certificates() -> Result<(tempfile::TempDir, crate::tls::TlsFiles, ClientTls)> {
    let dir =
        tempfile::tempdir().map_err(|e| Error::io("making a directory for the throwaway certificate", e))?;
    let made = crate::tls::make_certificates(dir.path(), &["127.0.0.1".to_string()])?;
    let choice = crate::client::tls::TlsChoice { ca: Some(made.ca), ..Default::default() };
    let tls = ClientTls::new(&choice)?;
    Ok((dir, made.server, tls))
}
