//! The answer to each request: which path shows what, the token check,
//! and the `/events` stream's body.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use subtle::ConstantTimeEq;

use super::progress::Progress;
use super::{stream, Live, Shared};
use crate::runtime::metrics;

pub(super) type Body = BoxBody<Bytes, Infallible>;

/// The answer to one request.
pub(super) fn route(
    request: &Request<Incoming>,
    shared: &Shared,
    progress: &Arc<Progress>,
) -> Response<Body> {
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
                "busy: {} already watching, this endpoint's limit (--metrics-max-streams); \
                 close one or raise the limit.\n",
                crate::units::count(most as u64, "dashboard is", "dashboards are")
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
        b"the --metrics-token is missing or wrong: send Authorization: Bearer <token> (a browser: end the address with ?token=<token>).\n".to_vec(),
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
