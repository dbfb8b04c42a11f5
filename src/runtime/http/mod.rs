//! The operator's HTTP endpoint (`--metrics-addr`): `/metrics`, `/healthz`,
//! `/readyz`, and — on a server — the live dashboard (`/`) and its event
//! stream (`/events`), on an address of its own. The server and the worker
//! host (`tc-worker --metrics-addr`) each serve their own [`Pages`] through
//! it.
//!
//! ```text
//!  Prometheus ──GET /metrics──▶ ┌ acceptor ─ slot? ─▶ one task per connection ─▶ metrics::render
//!  kubelet ─────GET /readyz───▶ │ (tokio, one thread; full: the oldest    (hyper HTTP/1.1,    Pages::readiness()
//!  browser ─────GET / ────────▶ │  silent connection is closed, or 503)   TLS via rustls)     the page, compiled in
//!  browser ─────GET /events ──▶ └──────────────────────────────────────▶ EventHub (broadcast) ◀─ server::watch
//! ```
//!
//! It is kept apart from the job port on purpose: scrapes, probes and
//! dashboards never queue behind jobs, never count as requests, and are
//! never rate-limited or asked for `--auth-token`. It should listen on
//! loopback or a private network; `/metrics`, `/` and `/events` can also
//! require a token (`--metrics-token`, as `Authorization: Bearer` or, for a
//! browser, `?token=`), while `/healthz` and `/readyz` stay open for probes.
//!
//! **Bounded, and no thread per connection.** hyper serves each connection
//! as a task on a one-thread tokio runtime, so an idle or slow client costs
//! a socket and a few kilobytes, never a thread the next probe waits for. At
//! most [`HttpLimits::max_connections`] are open at once; a newcomer past
//! that closes the oldest connection that has not sent its request yet
//! ([`slots`]), or is answered 503 when every slot holds one that did. A
//! request head must arrive within [`HttpLimits::timeout`], and an answer be
//! taken within it. Live streams are capped separately
//! ([`HttpLimits::max_streams`], one more gets 503) and bounded in memory
//! ([`stream`]); a stream whose browser stops reading for [`STREAM_STALL`]
//! is closed ([`progress`]). One request per connection (`Connection: close`): probes and
//! scrapes come every few seconds, and keep-alive would only hold slots.

mod progress;
mod routes;
mod slots;
pub(crate) mod stream;

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::error::{Error, Result};
use progress::Progress;
use routes::route;
pub(crate) use stream::{EventHub, Greeter};

/// A stream whose browser has taken nothing for this long is closed: frames
/// come several times a second, so a stream this silent is a browser that
/// stopped reading (a suspended tab, a stalled network), holding a slot.
pub(crate) const STREAM_STALL: Duration = Duration::from_secs(30);
/// The kernel send buffer of each connection (the kernel doubles it).
const SEND_BUFFER: usize = 64 * 1024;
/// The largest request head hyper reads (request line and headers).
const MAX_HEAD: usize = 16 * 1024;

/// How much the endpoint accepts, and who may read it.
#[derive(Debug, Clone)]
pub(crate) struct HttpLimits {
    /// Connections open at once, at most.
    pub(crate) max_connections: usize,
    /// Live `/events` streams at once, at most (within `max_connections`).
    pub(crate) max_streams: usize,
    /// The whole request head must arrive within it, and an answer (other
    /// than a stream) be written within it.
    pub(crate) timeout: Duration,
    /// When set, `/metrics`, `/` and `/events` need it (`Authorization:
    /// Bearer <token>`, or `?token=<token>` from a browser).
    pub(crate) token: Option<String>,
    /// When set, the endpoint speaks HTTPS with this configuration
    /// (`--metrics-tls`: the job port's certificate).
    pub(crate) tls: Option<std::sync::Arc<rustls::ServerConfig>>,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 64,
            max_streams: 64,
            timeout: Duration::from_secs(5),
            token: None,
            tls: None,
        }
    }
}

/// What an endpoint shows: the exposition, proof of life, readiness, and
/// (where there is one) the live stream.
pub(crate) trait Pages: Send + Sync + 'static {
    /// The whole OpenMetrics exposition.
    fn metrics(&self) -> String;
    /// `/healthz`'s body (answering at all is the proof of life).
    fn health(&self) -> serde_json::Value;
    /// Whether `/readyz` says 200, and its body.
    fn readiness(&self) -> (bool, serde_json::Value);
    /// The dashboard, for `/` and `/events`; `None` where there is none (a
    /// worker host's endpoint).
    fn live(&self) -> Option<Live<'_>> {
        None
    }
}

/// A live dashboard: its page, and the stream the page reads.
pub(crate) struct Live<'a> {
    /// The whole page, served as `/` (compiled in: a classroom may have no
    /// internet, so nothing is fetched from elsewhere).
    pub(crate) page: &'static str,
    /// Where the messages of `/events` are published.
    pub(crate) hub: &'a Arc<EventHub>,
    /// What a newly connected browser is told first.
    pub(crate) greeter: &'a dyn Greeter,
}

/// A running endpoint.
pub(crate) struct MetricsEndpoint {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    runtime: Option<tokio::runtime::Runtime>,
}

/// What the connection tasks share.
struct Shared {
    pages: Arc<dyn Pages>,
    limits: HttpLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Connections answered 503 because every slot was taken.
    refused: AtomicU64,
}

impl MetricsEndpoint {
    /// Serves `pages` on `listener` until [`MetricsEndpoint::stop`].
    ///
    /// # Errors
    /// The listener's address cannot be read, or the runtime cannot start.
    pub(crate) fn serve(
        listener: TcpListener,
        pages: Arc<dyn Pages>,
        limits: HttpLimits,
    ) -> Result<MetricsEndpoint> {
        let addr = listener.local_addr().map_err(|e| Error::io("reading the metrics address", e))?;
        listener.set_nonblocking(true).map_err(|e| Error::io("configuring the metrics listener", e))?;
        // One thread is plenty: every request is answered from memory in
        // microseconds, and the work of a stream is copying shared bytes.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("metrics-http")
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| Error::io("starting the metrics endpoint's runtime", e))?;
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener)
                .map_err(|e| Error::io("configuring the metrics listener", e))?
        };
        let tls = limits.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        let shared = Arc::new(Shared { pages, tls, refused: AtomicU64::new(0), limits });
        let (stop, stopped) = tokio::sync::oneshot::channel();
        runtime.spawn(accept(listener, shared, stopped));
        Ok(MetricsEndpoint { addr, stop: Some(stop), runtime: Some(runtime) })
    }

    /// The address actually bound (useful with port 0).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and closes every connection, streams included, within
    /// about a second.
    pub(crate) fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Takes connections until told to stop: each gets a slot and a task, or a
/// 503 written without waiting for its request.
async fn accept(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let slots = slots::Slots::new(shared.limits.max_connections);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stopped => return,
        };
        let Ok((socket, _)) = accepted else {
            // Out of file descriptors, or a connection reset before accept:
            // back off a little instead of spinning, and keep serving.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = socket.set_nodelay(true);
        // A small send buffer: what a browser has not read yet waits in the
        // kernel, per connection, so this bounds it; a stream that cannot
        // write then falls behind in the shared backlog and skips.
        let _ = nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::SndBuf, &SEND_BUFFER);
        match slots.admit() {
            Some((ticket, evicted)) => {
                tokio::spawn(connection(socket, Arc::clone(&shared), ticket, evicted));
            }
            None => {
                shared.refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    "metrics endpoint full of requests being answered: a connection answered 503"
                );
                tokio::spawn(refuse(socket, shared.limits.timeout));
            }
        }
    }
}

/// Says 503 to a connection there is no slot for, and closes it.
async fn refuse(mut socket: tokio::net::TcpStream, timeout: Duration) {
    let answer = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Length: 51\r\nConnection: close\r\n\r\nbusy: too many connections to this endpoint; retry\n";
    let _ = tokio::time::timeout(timeout, socket.write_all(answer)).await;
}

/// One connection: the TLS handshake (if any), then one request, all within
/// the limits — or until a newcomer takes its slot.
async fn connection(
    socket: tokio::net::TcpStream,
    shared: Arc<Shared>,
    ticket: slots::Ticket,
    evicted: slots::Evicted,
) {
    let timeout = shared.limits.timeout;
    let served = async {
        match &shared.tls {
            None => serve(socket, &shared, &ticket).await,
            Some(acceptor) => match tokio::time::timeout(timeout, acceptor.accept(socket)).await {
                Ok(Ok(tls)) => serve(tls, &shared, &ticket).await,
                Ok(Err(e)) => tracing::debug!(error = %e, "a metrics connection's TLS handshake failed"),
                Err(_) => tracing::debug!("a metrics connection's TLS handshake did not finish in time"),
            },
        }
    };
    tokio::select! {
        () = served => {}
        _ = evicted => tracing::debug!("a silent metrics connection closed to make room"),
    }
}

/// Serves one request on `io` and watches the answer go out: an ordinary
/// answer within the timeout, a stream for as long as its browser reads.
async fn serve<I>(io: I, shared: &Arc<Shared>, ticket: &slots::Ticket)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let progress = Arc::new(Progress::default());
    let service = {
        // The service marks the progress; the loop below, which holds the
        // ticket, tells the slots (the service must be 'static).
        let (shared, progress) = (Arc::clone(shared), Arc::clone(&progress));
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let (shared, progress) = (Arc::clone(&shared), Arc::clone(&progress));
            progress.asked();
            async move { Ok::<_, Infallible>(route(&request, &shared, &progress)) }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.limits.timeout)
        .keep_alive(false)
        .max_buf_size(MAX_HEAD);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut told_asked = false;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            result = &mut connection => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "a metrics connection ended with an error");
                }
                return;
            }
            _ = tick.tick() => {
                if !told_asked && progress.has_asked() {
                    ticket.asked();
                    told_asked = true;
                }
                if progress.overdue(shared.limits.timeout) {
                    tracing::debug!("a metrics client did not take its answer in time: closed");
                    return;
                }
            }
        }
    }
}
