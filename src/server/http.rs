//! The operator's HTTP endpoint (`--metrics-addr`): `/metrics`, `/healthz`
//! and `/readyz`, on an address of its own. The server and the worker host
//! (`tc-worker --metrics-addr`) each serve their own [`Pages`] through it.
//!
//! ```text
//!  Prometheus ──GET /metrics──▶ acceptor ──bounded queue──▶ handler threads ──▶ metrics::render
//!  kubelet / LB ─GET /readyz──▶ (full: 503, closed)        (a fixed few;         Farm::readiness()
//!                ─GET /healthz─▶                            read/write timeouts)  "the process is up"
//! ```
//!
//! It is kept apart from the job port on purpose: scrapes and probes never
//! queue behind jobs, never count as requests, and are never rate-limited
//! or asked for `--auth-token`. It should listen on loopback or a private
//! network; `/metrics` can also require a bearer token (`--metrics-token`),
//! while `/healthz` and `/readyz` stay open for probes.
//!
//! **Bounded.** A scrape port must not be a way to starve the farm: a fixed
//! number of handler threads and a short queue hold at most
//! [`HttpLimits::max_connections`] connections; one more is answered 503
//! and closed at once by the acceptor. Each connection has read and write
//! timeouts, so an idle or slow client frees its handler within
//! [`HttpLimits::timeout`]. One request per connection (`Connection:
//! close`): probes and scrapes come every few seconds, keep-alive would buy
//! nothing and hold a handler.
//!
//! This is a deliberately small HTTP/1.1 reader: a request line, headers up
//! to [`MAX_HEAD`] bytes, no body — all these paths need.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

use super::{metrics, Farm};
use crate::error::{Error, Result};
use crate::transport::{Transport, TransportIo};

/// The largest request head (request line and headers) read.
const MAX_HEAD: usize = 8 * 1024;
/// Threads answering requests; the rest of `max_connections` waits in the queue.
const HANDLERS: usize = 4;

/// How much the endpoint accepts, and who may read `/metrics`.
#[derive(Debug, Clone)]
pub(crate) struct HttpLimits {
    /// Connections being answered or waiting, at most.
    pub(crate) max_connections: usize,
    /// Read and write timeout of each connection (the whole request head
    /// must arrive within it).
    pub(crate) timeout: Duration,
    /// When set, `/metrics` needs `Authorization: Bearer <token>`.
    pub(crate) token: Option<String>,
    /// When set, the endpoint speaks HTTPS with this configuration
    /// (`--metrics-tls`: the job port's certificate).
    pub(crate) tls: Option<std::sync::Arc<rustls::ServerConfig>>,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits { max_connections: 64, timeout: Duration::from_secs(5), token: None, tls: None }
    }
}

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
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// What the handler threads share.
struct Shared {
    pages: Arc<dyn Pages>,
    limits: HttpLimits,
}

impl MetricsEndpoint {
    /// Serves the endpoint on `listener` until [`MetricsEndpoint::stop`].
    ///
    /// # Errors
    /// The listener's address cannot be read, or the threads cannot start.
    pub(super) fn start(
        listener: TcpListener,
        farm: Arc<Farm>,
        limits: HttpLimits,
    ) -> Result<MetricsEndpoint> {
        let registry = metrics::registry(Arc::clone(&farm));
        Self::serve(listener, Arc::new(ServerPages { farm, registry }), limits)
    }

    /// Serves `pages` on `listener` until [`MetricsEndpoint::stop`].
    ///
    /// # Errors
    /// The listener's address cannot be read, or the threads cannot start.
    pub(crate) fn serve(
        listener: TcpListener,
        pages: Arc<dyn Pages>,
        limits: HttpLimits,
    ) -> Result<MetricsEndpoint> {
        let addr = listener.local_addr().map_err(|e| Error::io("reading the metrics address", e))?;
        let handlers = HANDLERS.min(limits.max_connections.max(1));
        let waiting = limits.max_connections.saturating_sub(handlers);
        let (queue, connections) = crossbeam_channel::bounded::<TcpStream>(waiting);
        let shared = Arc::new(Shared { pages, limits });
        let stopping = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::with_capacity(handlers + 1);
        for index in 0..handlers {
            let (shared, connections) = (Arc::clone(&shared), connections.clone());
            let thread = thread::Builder::new()
                .name(format!("metrics-http-{index}"))
                .spawn(move || {
                    // Ends when the acceptor drops the queue's sender.
                    for stream in connections {
                        answer(stream, &shared);
                    }
                })
                .map_err(|e| Error::io("starting a metrics thread", e))?;
            threads.push(thread);
        }
        let acceptor = {
            let stopping = Arc::clone(&stopping);
            thread::Builder::new()
                .name("metrics-accept".into())
                .spawn(move || accept(&listener, &queue, &stopping))
                .map_err(|e| Error::io("starting the metrics thread", e))?
        };
        threads.push(acceptor);
        Ok(MetricsEndpoint { addr, stopping, threads })
    }

    /// The address actually bound (useful with port 0).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets the handlers finish, and joins every thread.
    pub(crate) fn stop(self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the acceptor out of `accept` with a connection of our own.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// Takes connections while the endpoint runs: into the queue when there is
/// room, else a 503 and a close (never a thread or a wait per connection).
fn accept(listener: &TcpListener, queue: &crossbeam_channel::Sender<TcpStream>, stopping: &AtomicBool) {
    for stream in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else {
            // Out of file descriptors, or a connection reset before accept:
            // back off a little instead of spinning, and keep serving.
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        if let Err(crossbeam_channel::TrySendError::Full(mut stream)) = queue.try_send(stream) {
            tracing::debug!("metrics endpoint full: a connection answered 503");
            let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
            let _ = stream.write_all(&response(
                503,
                "text/plain; charset=utf-8",
                b"busy: too many connections to this endpoint; retry\n",
                false,
                &[],
            ));
        }
    }
}

/// Reads one request within the timeout and answers it.
fn answer(stream: TcpStream, shared: &Shared) {
    let timeout = shared.limits.timeout;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    // HTTPS: the same reading and writing, through a TLS session (its
    // handshake happens in the first reads, within the same timeout).
    let transport = match &shared.limits.tls {
        None => Transport::Plain(stream),
        Some(config) => match rustls::ServerConnection::new(std::sync::Arc::clone(config)) {
            Ok(session) => Transport::tls(stream, session),
            Err(e) => {
                tracing::debug!(error = %e, "cannot start a TLS session for a metrics connection");
                return;
            }
        },
    };
    let mut stream = TransportIo(&transport);
    let deadline = Instant::now() + timeout;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() >= MAX_HEAD || Instant::now() >= deadline {
            let _ =
                stream.write_all(&response(400, "text/plain; charset=utf-8", b"bad request\n", false, &[]));
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return, // gone, or too slow: the timeout frees this handler
            Ok(read) => head.extend_from_slice(&chunk[..read]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let (method, target) = (request_line.next().unwrap_or_default(), request_line.next().unwrap_or_default());
    let authorization = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("authorization"))
        .map(|(_, value)| value.trim().to_string());
    let bytes = respond(method, target, authorization.as_deref(), shared);
    if let Err(e) = stream.write_all(&bytes) {
        tracing::debug!(error = %e, "metrics client went away before its answer");
    }
}

/// The whole answer to one request.
fn respond(method: &str, target: &str, authorization: Option<&str>, shared: &Shared) -> Vec<u8> {
    // The query string, if any, does not change the answer.
    let path = target.split('?').next().unwrap_or_default();
    let readable = matches!(method, "GET" | "HEAD");
    let head_only = method == "HEAD";
    let plain = "text/plain; charset=utf-8";
    match (path, readable) {
        ("/metrics", true) => {
            if let Some(token) = &shared.limits.token {
                let given = authorization.and_then(|a| a.strip_prefix("Bearer ")).unwrap_or_default();
                if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
                    return response(
                        401,
                        plain,
                        b"/metrics needs Authorization: Bearer <the --metrics-token>\n",
                        head_only,
                        &[("WWW-Authenticate", "Bearer")],
                    );
                }
            }
            response(200, metrics::CONTENT_TYPE, shared.pages.metrics().as_bytes(), head_only, &[])
        }
        // Answering at all is the proof of life; the body is context.
        ("/healthz", true) => json(200, &shared.pages.health(), head_only),
        ("/readyz", true) => {
            let (ready, body) = shared.pages.readiness();
            json(if ready { 200 } else { 503 }, &body, head_only)
        }
        ("/metrics" | "/healthz" | "/readyz", false) => {
            response(405, plain, b"only GET and HEAD are allowed here\n", false, &[("Allow", "GET, HEAD")])
        }
        _ => response(
            404,
            plain,
            b"not found: this endpoint serves /metrics, /healthz and /readyz\n",
            head_only,
            &[],
        ),
    }
}

fn json(status: u16, body: &impl serde::Serialize, head_only: bool) -> Vec<u8> {
    let mut body = serde_json::to_vec(body).expect("health bodies serialize");
    body.push(b'\n');
    response(status, "application/json", &body, head_only, &[])
}

/// An HTTP/1.1 response with `Content-Length` and `Connection: close`.
fn response(
    status: u16,
    content_type: &str,
    body: &[u8],
    head_only: bool,
    extra: &[(&str, &str)],
) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in extra {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(body);
    }
    bytes
}
