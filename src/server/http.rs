//! The operator's HTTP endpoint (`--metrics-addr`): `/metrics`, `/healthz`
//! and `/readyz`, served by `tiny_http` on an address of its own. The server
//! and the worker host (`tc-worker --metrics-addr`) each serve their own
//! [`Pages`] through it.
//!
//! ```text
//!  Prometheus ──GET /metrics──▶ tiny_http ──▶ serve loop ──▶ metrics::render(registry)
//!  kubelet / LB ─GET /readyz──▶  (its own      (one thread)   Farm::readiness()
//!                ─GET /healthz─▶  accept +                     "the process is up"
//!                                 conn threads)
//! ```
//!
//! It is kept apart from the job port on purpose: scrapes and probes never
//! queue behind jobs, never count as requests, and are never rate-limited
//! or asked for `--auth-token`. That is also why it should listen on
//! loopback or a private network only.
//!
//! One thread answers requests one at a time; every answer is built from
//! atomics and a few short-held locks, so that is plenty for probes and
//! scrapes every few seconds. [`MetricsEndpoint::stop`] unblocks and joins it.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use tiny_http::{Header, Method, Request, Response, StatusCode};

use super::{metrics, Farm};
use crate::error::{Error, Result};

/// What an endpoint shows: the exposition, proof of life, readiness.
pub(crate) trait Pages: Send + Sync + 'static {
    /// The whole OpenMetrics exposition.
    fn metrics(&self) -> String;
    /// `/healthz`'s body (answering at all is the proof of life).
    fn health(&self) -> serde_json::Value;
    /// Whether `/readyz` says 200, and its body.
    fn readiness(&self) -> (bool, serde_json::Value);
}

/// The server's pages: its farm, and the registry that reads it.
struct ServerPages {
    farm: Arc<Farm>,
    registry: prometheus_client::registry::Registry,
}

impl Pages for ServerPages {
    fn metrics(&self) -> String {
        metrics::render(&self.registry)
    }

    fn health(&self) -> serde_json::Value {
        let farm = &self.farm;
        serde_json::json!({
            "status": "ok",
            "instance": farm.stats.instance(),
            "uptime_s": farm.stats.uptime_s(),
            "draining": farm.draining.load(std::sync::atomic::Ordering::SeqCst),
        })
    }

    fn readiness(&self) -> (bool, serde_json::Value) {
        let readiness = self.farm.readiness();
        (readiness.is_ready(), serde_json::to_value(&readiness).unwrap_or_default())
    }
}

/// A running endpoint.
pub(crate) struct MetricsEndpoint {
    server: Arc<tiny_http::Server>,
    addr: SocketAddr,
    thread: JoinHandle<()>,
}

impl MetricsEndpoint {
    /// Serves the endpoint on `listener` until [`MetricsEndpoint::stop`].
    ///
    /// # Errors
    /// The listener's address cannot be read, or the thread cannot start.
    pub(super) fn start(listener: TcpListener, farm: Arc<Farm>) -> Result<MetricsEndpoint> {
        let registry = metrics::registry(Arc::clone(&farm));
        Self::serve(listener, Arc::new(ServerPages { farm, registry }))
    }

    /// Serves `pages` on `listener` until [`MetricsEndpoint::stop`].
    ///
    /// # Errors
    /// The listener's address cannot be read, or the thread cannot start.
    pub(crate) fn serve(listener: TcpListener, pages: Arc<dyn Pages>) -> Result<MetricsEndpoint> {
        let addr = listener.local_addr().map_err(|e| Error::io("reading the metrics address", e))?;
        let server = tiny_http::Server::from_listener(listener, None)
            .map_err(|e| Error::io(format!("cannot serve metrics on {addr}"), std::io::Error::other(e)))?;
        let server = Arc::new(server);
        let thread = {
            let server = Arc::clone(&server);
            thread::Builder::new()
                .name("metrics-http".into())
                .spawn(move || {
                    // `recv` fails once `unblock` is called: that is the stop.
                    while let Ok(request) = server.recv() {
                        respond(request, pages.as_ref());
                    }
                })
                .map_err(|e| Error::io("starting the metrics thread", e))?
        };
        Ok(MetricsEndpoint { server, addr, thread })
    }

    /// The address actually bound (useful with port 0).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops answering and waits for the serving thread. Dropping the last
    /// `tiny_http::Server` then closes the listening socket.
    pub(crate) fn stop(self) {
        self.server.unblock();
        let _ = self.thread.join();
    }
}

/// Answers one HTTP request.
fn respond(request: Request, pages: &dyn Pages) {
    // The query string, if any, does not change the answer.
    let path = request.url().split('?').next().unwrap_or_default();
    let readable = matches!(request.method(), Method::Get | Method::Head);
    let response = match (path, readable) {
        ("/metrics", true) => text(200, metrics::CONTENT_TYPE, pages.metrics()),
        // Answering at all is the proof of life; the body is context.
        ("/healthz", true) => json(200, &pages.health()),
        ("/readyz", true) => {
            let (ready, body) = pages.readiness();
            json(if ready { 200 } else { 503 }, &body)
        }
        ("/metrics" | "/healthz" | "/readyz", false) => {
            text(405, "text/plain; charset=utf-8", "only GET and HEAD are allowed here\n".into())
                .with_header(header("Allow", "GET, HEAD"))
        }
        _ => text(
            404,
            "text/plain; charset=utf-8",
            "not found: this endpoint serves /metrics, /healthz and /readyz\n".into(),
        ),
    };
    if let Err(e) = request.respond(response) {
        tracing::debug!(error = %e, "metrics client went away before its answer");
    }
}

fn text(status: u16, content_type: &str, body: String) -> Response<std::io::Cursor<Vec<u8>>> {
    Response::from_string(body)
        .with_status_code(StatusCode(status))
        .with_header(header("Content-Type", content_type))
}

fn json(status: u16, body: &impl serde::Serialize) -> Response<std::io::Cursor<Vec<u8>>> {
    let mut body = serde_json::to_string(body).expect("health bodies serialize");
    body.push('\n');
    text(status, "application/json", body)
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("constant headers are valid")
}
