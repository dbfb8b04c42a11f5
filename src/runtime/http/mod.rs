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
//! is closed. One request per connection (`Connection: close`): probes and
//! scrapes come every few seconds, and keep-alive would only hold slots.

mod slots;
pub(crate) mod stream;

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::metrics;
use crate::error::{Error, Result};
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

/// How far one connection has got, shared by its service and its watcher.
#[derive(Debug, Default)]
struct Progress {
    /// Set when the request head has arrived.
    asked: std::sync::atomic::AtomicBool,
    /// When the answer started (ms since `EPOCH`), 0 before.
    answer_started_ms: AtomicU64,
    /// A stream's last frame taken by the browser (ms since `EPOCH`); 0 for
    /// an ordinary answer.
    stream_read_ms: AtomicU64,
}

/// The clock the progress marks are kept in.
static EPOCH: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX).max(1)
}

impl Progress {
    fn asked(&self) {
        self.asked.store(true, Ordering::Relaxed);
        self.answer_started_ms.store(now_ms(), Ordering::Relaxed);
    }

    fn has_asked(&self) -> bool {
        self.asked.load(Ordering::Relaxed)
    }

    fn streamed(&self) {
        self.stream_read_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Whether the answer has taken too long to go out: an ordinary one
    /// longer than `timeout`, a stream with nothing read for [`STREAM_STALL`].
    fn overdue(&self, timeout: Duration) -> bool {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let now = now_ms();
        match (self.answer_started_ms.load(Ordering::Relaxed), self.stream_read_ms.load(Ordering::Relaxed)) {
            (0, _) => false,
            (started, 0) => now.saturating_sub(started) > ms(timeout),
            (_, read) => now.saturating_sub(read) > ms(STREAM_STALL),
        }
    }
}

type Body = BoxBody<Bytes, Infallible>;

/// The answer to one request.
fn route(request: &Request<Incoming>, shared: &Shared, progress: &Arc<Progress>) -> Response<Body> {
    let path = request.uri().path();
    let method = request.method();
    let head_only = method == Method::HEAD;
    if method != Method::GET && method != Method::HEAD {
        if !matches!(path, "/metrics" | "/healthz" | "/readyz" | "/" | "/dashboard" | "/events") {
            return not_found(shared, false);
        }
        let mut refusal = respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            b"only GET and HEAD are allowed here\n".to_vec(),
            false,
        );
        refusal
            .headers_mut()
            .insert(hyper::header::ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD"));
        return refusal;
    }
    let live = shared.pages.live();
    match path {
        "/metrics" => unauthorized(request, shared).unwrap_or_else(|| {
            respond(StatusCode::OK, metrics::CONTENT_TYPE, shared.pages.metrics().into_bytes(), head_only)
        }),
        // Answering at all is the proof of life; the body is context.
        "/healthz" => json(StatusCode::OK, &shared.pages.health(), head_only),
        "/readyz" => {
            let (ready, body) = shared.pages.readiness();
            json(if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, &body, head_only)
        }
        "/" | "/dashboard" if live.is_some() => unauthorized(request, shared).unwrap_or_else(|| {
            let page = live.map_or("", |live| live.page);
            respond(StatusCode::OK, "text/html; charset=utf-8", page.as_bytes().to_vec(), head_only)
        }),
        "/events" if live.is_some() => {
            unauthorized(request, shared).unwrap_or_else(|| events(live, shared, progress, head_only))
        }
        _ => not_found(shared, head_only),
    }
}

/// `/events`: the greeting, then every message the hub publishes.
fn events(
    live: Option<Live<'_>>,
    shared: &Shared,
    progress: &Arc<Progress>,
    head_only: bool,
) -> Response<Body> {
    let Some(Live { hub, greeter, .. }) = live else { return not_found(shared, head_only) };
    let subscription = match hub.subscribe() {
        Ok(subscription) => subscription,
        Err(stream::TooManySubscribers(most)) => {
            let message = format!(
                "busy: {most} dashboards are already watching, this endpoint's limit (--metrics-max-streams); \
                 close one or raise the limit\n"
            );
            return respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                message.into_bytes(),
                false,
            );
        }
    };
    let response = Response::builder()
        .status(StatusCode::OK)
        .header(hyper::header::CONTENT_TYPE, "text/event-stream")
        .header(hyper::header::CACHE_CONTROL, "no-store")
        .header(hyper::header::CONNECTION, "close");
    if head_only {
        return response
            .body(Full::new(Bytes::new()).boxed())
            .unwrap_or_else(|_| Response::new(Body::default()));
    }
    // Subscribed first, greeted second: a message published in between is
    // in the backlog, and the bars in it that the greeting already has are
    // skipped by their number.
    let greeting = greeter.greeting();
    let upto = greeting.bars_upto;
    progress.streamed();
    let progress = Arc::clone(progress);
    let first: Vec<Bytes> = greeting.messages.into_iter().map(|m| m.text).collect();
    let live_messages = futures_util::stream::unfold(subscription, move |mut subscription| async move {
        loop {
            let message = subscription.next().await?;
            if message.bars_upto.is_some_and(|bars| bars <= upto) {
                continue;
            }
            return Some((message.text.clone(), subscription));
        }
    });
    let frames = futures_util::stream::iter(first).chain(live_messages).map(move |bytes| {
        // Asked for by hyper only when the socket can take more: the
        // mark of a browser that is still reading.
        progress.streamed();
        Ok::<_, Infallible>(Frame::data(bytes))
    });
    response.body(BodyExt::boxed(StreamBody::new(frames))).unwrap_or_else(|_| Response::new(Body::default()))
}

/// The 401 for a request without the token (header or query), or `None`
/// when no token is set or the request carries it.
fn unauthorized(request: &Request<Incoming>, shared: &Shared) -> Option<Response<Body>> {
    let token = shared.limits.token.as_ref()?;
    let from_header = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let from_query =
        request.uri().query().and_then(|query| query.split('&').find_map(|pair| pair.strip_prefix("token=")));
    let given = from_header.or(from_query).unwrap_or_default();
    if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
        return None;
    }
    let mut refusal = respond(
        StatusCode::UNAUTHORIZED,
        "text/plain; charset=utf-8",
        b"this page needs Authorization: Bearer <the --metrics-token> (a browser: add ?token=<the --metrics-token> to the address)\n".to_vec(),
        false,
    );
    refusal.headers_mut().insert("WWW-Authenticate", hyper::header::HeaderValue::from_static("Bearer"));
    Some(refusal)
}

fn not_found(shared: &Shared, head_only: bool) -> Response<Body> {
    let message: &[u8] = if shared.pages.live().is_some() {
        b"not found: this endpoint serves / (the dashboard), /events, /metrics, /healthz and /readyz\n"
    } else {
        b"not found: this endpoint serves /metrics, /healthz and /readyz\n"
    };
    respond(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", message.to_vec(), head_only)
}

fn json(status: StatusCode, body: &impl serde::Serialize, head_only: bool) -> Response<Body> {
    let mut body = serde_json::to_vec(body).unwrap_or_default();
    body.push(b'\n');
    respond(status, "application/json", body, head_only)
}

/// A whole answer with its `Content-Length` (also for `HEAD`, which gets
/// the headers and no body).
fn respond(status: StatusCode, content_type: &str, body: Vec<u8>, head_only: bool) -> Response<Body> {
    let length = body.len();
    let body = if head_only { Bytes::new() } else { Bytes::from(body) };
    let mut response = Response::new(Full::new(body).boxed());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        headers.insert(hyper::header::CONTENT_TYPE, value);
    }
    headers.insert(hyper::header::CONTENT_LENGTH, hyper::header::HeaderValue::from(length));
    headers.insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
    response
}
