//! One connection's reader thread: frames in, requests answered or dispatched.
//!
//! Every frame that is read gets exactly one reply, and the reader takes a
//! reply slot (see [`crate::connection::FlowControl`]) before producing it.
//! Before a request reaches a worker it passes, in order:
//! 1. **authentication** (with `--auth-token`): the first frame must be a
//!    valid `auth`, or the client gets `UNAUTHORIZED` and is disconnected;
//! 2. **rate limiting** (with `--rate-limit`): `RATE_LIMITED` when the
//!    client's bucket is empty (`stats` and `health` are exempt, so
//!    monitoring keeps working);

//! 3. **draining**: once the server is stopping, `SHUTTING_DOWN`;
//! 4. the **cache** (with `--cache-entries`): a known compute is answered
//!    with `"cached": true`.
//!
//! Commands that need no worker (`ping`, `stats`, `health`, `auth`, `model`,
//! the mutex) and every error are answered right here; jobs (`compute`,
//! `predict`) go to the dispatcher, and their replies come back later through
//! the registry, from a worker.
//!
//! IdentyFire calls (`{"method","params"}`) take the same path and the same
//! checks; only the shape of their answers differs (see [`Dialect`]).

use std::net::{IpAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

use super::Farm;
use crate::connection::{Connection, InlineReplies, ReadLimits, ReplySink};
use crate::dispatch::{encode_output, JobRequest};
use crate::frame::FrameError;
use crate::job::{JobKind, PredictJob};
use crate::lock::{unix_millis, Acquire, Violation};
use crate::pool::Mode;
use crate::protocol::{
    encode_error, encode_error_in, encode_pong, encode_result, encode_rpc, parse_request, ClientId, Command,
    CommandKind, Dialect, ErrorCode, Holder, ImageArg, ReplyExtras, Request,
};
use crate::registry::ConnId;
use crate::stats::Outcome;

/// Serves one connection until the client leaves, the connection breaks, or
/// the server shuts it down; then cleans up after it.
pub(super) fn handle_connection(farm: Arc<Farm>, conn_id: ConnId, stream: Arc<TcpStream>) {
    let peer = stream.peer_addr().ok();
    tracing::debug!(conn = conn_id, ?peer, "connection opened");
    let limits = ReadLimits {
        max_frame: farm.config.max_frame,
        max_inflight: farm.config.max_inflight,
        read_timeout: farm.config.read_timeout,
    };
    match Connection::start(stream, limits) {
        Ok(mut conn) => {
            farm.connections.set_flow(conn_id, Arc::clone(conn.sink().flow()));
            let mut session = Session {
                farm: &farm,
                conn_id,
                client: peer.map(|p| p.ip()),
                authenticated: farm.config.auth_token.is_none(),
                inline: conn.inline_replies(),
                received: Instant::now(),
                command: None,
            };
            session.serve(&mut conn);
            // Whatever the reader answered last still goes out.
            let _ = session.inline.flush();
            // Forget this connection's jobs first: their registry entries hold
            // reply sinks, and the writer only finishes when all sinks are gone.
            let cancelled = farm.dispatcher.cancel_connection(conn_id);
            if cancelled > 0 {
                tracing::debug!(conn = conn_id, cancelled, "client left with jobs in flight");
            }
            conn.finish();
        }
        Err(e) => tracing::warn!(conn = conn_id, ?peer, error = %e, "cannot start the connection's writer"),
    }
    farm.connections.remove(conn_id);
    farm.stats.connection_closed();
    tracing::debug!(conn = conn_id, ?peer, "connection closed");
}

/// What to do with the outcome of one frame read that owes a reply.
enum Step<'a> {
    /// A whole payload: parse and serve it.
    Request(&'a [u8]),
    /// A frame that cannot be served: answer with an error, and close the
    /// connection afterwards when the frame boundary was lost.
    Refuse { code: ErrorCode, message: String, then_close: bool },
}

/// Whether the connection goes on after a request.
#[derive(PartialEq, Eq)]
enum Continue {
    Yes,
    Close,
}

/// One connection's state.
struct Session<'a> {
    farm: &'a Farm,
    conn_id: ConnId,
    client: Option<IpAddr>,
    authenticated: bool,
    /// Replies produced here, written in batches (see [`InlineReplies`]).
    inline: InlineReplies,
    /// When the frame being served was read: its latency starts here.
    received: Instant,
    /// Its command, once known (`None`: not parsed, or not a known command).
    command: Option<CommandKind>,
}

impl Session<'_> {
    /// The read loop.
    fn serve(&mut self, conn: &mut Connection) {
        let sink = conn.sink().clone();
        loop {
            let step = match conn.read_frame(&mut self.inline) {
                Ok(Some(payload)) => Step::Request(payload),
                Err(FrameError::Empty) => Step::Refuse {
                    code: ErrorCode::BadFrame,
                    message: FrameError::Empty.to_string(),
                    then_close: false,
                },
                // The payload was not read, so the next frame boundary is
                // unknown: say why, then close.
                Err(e @ FrameError::TooLarge { .. }) => Step::Refuse {
                    code: ErrorCode::FrameTooLarge,
                    message: format!("{e} (the server's --max-frame); closing the connection"),
                    then_close: true,
                },
                // Half a frame, then nothing for --read-timeout.
                Err(e @ FrameError::Stalled { .. }) => {
                    tracing::debug!(conn = self.conn_id, error = %e, "cutting off a stalled frame");
                    Step::Refuse { code: ErrorCode::BadFrame, message: e.to_string(), then_close: true }
                }
                Ok(None) => return, // a clean close between frames
                Err(e) => {
                    tracing::debug!(conn = self.conn_id, error = %e, "connection ended mid-frame");
                    return;
                }
            };
            self.received = Instant::now();
            self.command = None;
            // Take the reply's slot. This blocks while the client already owes
            // `--max-inflight` replies, so a client that does not read its
            // replies stops being read from (TCP backpressure).
            if !sink.flow().acquire() {
                return; // the connection was closed while we waited
            }
            match step {
                Step::Request(payload) => {
                    if self.handle_request(payload, &sink) == Continue::Close {
                        return;
                    }
                }
                Step::Refuse { code, message, then_close } => {
                    self.answer(&encode_error(None, code, &message), Outcome::Error(code));
                    if then_close {
                        return;
                    }
                }
            }
        }
    }

    /// Answers or dispatches one request payload.
    fn handle_request(&mut self, payload: &[u8], sink: &ReplySink) -> Continue {
        let farm = self.farm;
        let request = match parse_request(payload, &farm.config.limits()) {
            Ok(request) => request,
            Err(e) => {
                if let Some(kind) = e.command {
                    farm.stats.request(kind);
                    self.command = Some(kind);
                }
                let close = !self.authenticated;
                if close {
                    // Garbage before authenticating is refused as unauthorized.
                    self.reply_error(e.dialect, e.id.as_ref(), ErrorCode::Unauthorized, UNAUTHORIZED);
                    farm.stats.connection_rejected();
                    return Continue::Close;
                }
                self.reply_error(e.dialect, e.id.as_ref(), e.code, &e.message);
                return Continue::Yes;
            }
        };
        let kind = request.command.kind();
        farm.stats.request(kind);
        self.command = Some(kind);

        if !self.authenticated {
            return self.authenticate(&request);
        }
        // stats and health are never rate-limited, so monitoring keeps
        // working when a client is being held back.
        let observability = matches!(request.command, Command::Stats | Command::Health);
        if let (Some(limiter), Some(client), false) = (&farm.rate_limiter, self.client, observability) {
            if !limiter.allow(client, Instant::now()) {
                let message = format!(
                    "over the rate limit of {} requests per second per client (--rate-limit); slow down",
                    limiter.rate()
                );
                self.reply_error(request.dialect, Some(&request.id), ErrorCode::RateLimited, &message);
                return Continue::Yes;
            }
        }
        if farm.draining.load(Ordering::SeqCst) {
            let message = "the server is shutting down";
            self.reply_error(request.dialect, Some(&request.id), ErrorCode::ShuttingDown, message);
            return Continue::Yes;
        }
        match &request.command {
            Command::Ping => self.answer_ok(&encode_pong(&request.id)),
            Command::Stats => {
                self.answer_ok(&encode_result(&request.id, &farm.stats_report(), ReplyExtras::default()))
            }
            Command::Health if request.dialect == Dialect::IdentyFire => {
                self.answer_ok(&encode_rpc(&farm.identyfire_health()))
            }
            Command::Health => {
                self.answer_ok(&encode_result(&request.id, &farm.health_report(), ReplyExtras::default()))
            }
            Command::Auth { .. } => self.answer_ok(&encode_result(
                &request.id,
                &serde_json::json!({"ok": true}),
                ReplyExtras::default(),
            )),
            Command::Compute { n } => {
                self.run_job(request_parts(&request), JobKind::Compute { n: *n }, Some(payload), sink)
            }
            Command::Chaos(chaos) => {
                self.run_job(request_parts(&request), JobKind::Chaos(*chaos), None, sink)
            }
            Command::Predict { image, holder } => {
                self.predict(&request, std::slice::from_ref(image), holder, true, sink)
            }
            Command::PredictBatch { images, holder } => self.predict(&request, images, holder, false, sink),
            Command::Model => self.describe_model(&request),
            Command::Models => {
                let current = farm.models.current().map(|m| m.name);
                let body = serde_json::json!({
                    "models": farm.models.list(),
                    "current": current,
                    "models_dir": farm.models.dir(),
                });
                self.reply_ok(&request, body);
            }
            Command::LoadModel { path } => match farm.models.load(path) {
                Ok(info) => {
                    let body = serde_json::json!({"model_name": info.name, "sha256": info.sha256, "path": info.path});
                    self.reply_ok(&request, body)
                }
                Err((code, message)) => self.reply_error(request.dialect, Some(&request.id), code, &message),
            },
            Command::MutexAcquire { client_id, wait_ms } => {
                self.acquire(&request, client_id.as_deref(), *wait_ms)
            }
            Command::MutexRelease { holder } => {
                let Some(client) = holder.client_id.as_deref() else {
                    self.missing_client_id(&request);
                    return Continue::Yes;
                };
                let released_at = farm.lock.release(client, holder.token);
                let mut body = serde_json::json!({
                    "success": released_at.is_some(),
                    "released_at_us": released_at,
                    "server_timestamp": unix_millis(),
                });
                if released_at.is_none() {
                    body["error"] = "not the owner of the lock (or not under this token)".into();
                }
                self.reply_ok(&request, body);
            }
        }
        Continue::Yes
    }

    /// `predict` / `predict_batch` (IdentyFire: `predict_image` / `predict_batch`):
    /// checks the mutex when required, decodes the base64 into the job's
    /// buffer, and hands the job to a worker.
    fn predict(
        &mut self,
        request: &Request<'_>,
        images: &[ImageArg<'_>],
        holder: &Holder,
        single: bool,
        sink: &ReplySink,
    ) {
        let farm = self.farm;
        let dialect = request.dialect;
        if dialect == Dialect::IdentyFire || farm.config.predict_lock {
            let checked = match holder.client_id.as_deref() {
                Some(client) => farm.lock.check_holder(client, holder.token),
                None => Err(Violation::NotHolder),
            };
            if let Err(violation) = checked {
                self.reply_error(dialect, Some(&request.id), ErrorCode::LockRequired, &violation.message());
                return;
            }
        }
        let Some(model) = farm.models.current_ref() else {
            let message = "no model is loaded: start the server with --model, or call load_model";
            self.reply_error(dialect, Some(&request.id), ErrorCode::ModelUnavailable, message);
            return;
        };
        let shared = farm.config.mode == Mode::Processes;
        let decoded = super::images::decode_images(images, farm.config.max_image_bytes, shared);
        if let (true, Some((code, message))) = (single, &decoded.first_error) {
            self.reply_error(dialect, Some(&request.id), *code, message);
            return;
        }
        let job = PredictJob { model, threshold: farm.config.threshold, images: decoded.batch, single };
        self.run_job(request_parts(request), JobKind::Predict(job), None, sink);
    }

    /// `mutex_acquire`, waiting on the server up to `wait_ms` for the grant.
    fn acquire(&mut self, request: &Request<'_>, client_id: Option<&str>, wait_ms: u64) {
        let Some(client) = client_id else {
            return self.missing_client_id(request);
        };
        if wait_ms > 0 {
            // This thread is about to block: what it owes goes out first.
            let _ = self.inline.flush();
        }
        let started = Instant::now();
        let outcome = self.farm.lock.acquire(client, Duration::from_millis(wait_ms));
        let waited_ms = started.elapsed().as_secs_f64() * 1000.0;
        let (status, position, token, granted_at_us) = match outcome {
            Acquire::Granted { token, granted_at_us } => ("GRANTED", 0, Some(token), Some(granted_at_us)),
            Acquire::Queued { position } => ("QUEUED", position, None, None),
        };
        let body = serde_json::json!({
            "success": true,
            "status": status,
            "queue_position": position,
            "token": token,
            "lease_ms": self.farm.config.lock_timeout.as_millis() as u64,
            "waited_ms": waited_ms,
            "granted_at_us": granted_at_us,
            "server_timestamp": unix_millis(),
        });
        self.reply_ok(request, body);
    }

    /// IdentyFire's answer to a mutex call without `client_id`.
    fn missing_client_id(&mut self, request: &Request<'_>) {
        self.reply_error(request.dialect, Some(&request.id), ErrorCode::BadRequest, "Missing client_id");
    }

    /// `model` (IdentyFire: `get_current_model`).
    fn describe_model(&mut self, request: &Request<'_>) {
        let farm = self.farm;
        match farm.models.current() {
            Some(info) => {
                let mut body = serde_json::to_value(&info).expect("model info serializes");
                body["threshold"] = farm.config.threshold.into();
                body["model_name"] = info.name.clone().into();
                self.reply_ok(request, body)
            }
            None => self.reply_error(
                request.dialect,
                Some(&request.id),
                ErrorCode::ModelUnavailable,
                "no model is loaded: start the server with --model, or call load_model",
            ),
        }
    }

    /// A successful answer: `{"id","result": body}`, or for IdentyFire the
    /// body itself with `"success": true`.
    fn reply_ok(&mut self, request: &Request<'_>, mut body: serde_json::Value) {
        match request.dialect {
            Dialect::ThreadCenter => {
                self.answer_ok(&encode_result(&request.id, &body, ReplyExtras::default()))
            }
            Dialect::IdentyFire => {
                if body.get("success").is_none() {
                    body["success"] = true.into();
                }
                self.answer_ok(&encode_rpc(&body))
            }
        }
    }

    /// The first request of a connection when `--auth-token` is set.
    fn authenticate(&mut self, request: &Request<'_>) -> Continue {
        let expected = self.farm.config.auth_token.as_deref().unwrap_or_default();
        match &request.command {
            // Compared in constant time, so the time taken says nothing about
            // how much of a guess was right.
            Command::Auth { token } if bool::from(token.as_bytes().ct_eq(expected.as_bytes())) => {
                self.authenticated = true;
                self.answer_ok(&encode_result(
                    &request.id,
                    &serde_json::json!({"ok": true}),
                    ReplyExtras::default(),
                ));
                Continue::Yes
            }
            _ => {
                tracing::warn!(conn = self.conn_id, client = ?self.client, "authentication failed; closing the connection");
                self.reply_error(request.dialect, Some(&request.id), ErrorCode::Unauthorized, UNAUTHORIZED);
                self.farm.stats.connection_rejected();
                Continue::Close
            }
        }
    }

    /// Serves a job from the cache, or hands it to the dispatcher.
    fn run_job(
        &mut self,
        (id, command, timing, dialect): RequestParts,
        kind: JobKind,
        cacheable: Option<&[u8]>,
        sink: &ReplySink,
    ) {
        let farm = self.farm;
        let cache_key = match (farm.dispatcher.cache(), cacheable) {
            (Some(cache), Some(body)) => match cache.key_for(body) {
                Some(key) => match cache.get(&key) {
                    Some(output) => {
                        let extras = ReplyExtras { cached: true, ..ReplyExtras::default() };
                        self.answer_ok(&encode_output(&id, &output, extras, command, dialect));
                        return;
                    }
                    None => Some(key),
                },
                None => None,
            },
            _ => None,
        };
        // A worker being replaced is normal: jobs queue for a few ms. But if
        // no worker is up *and* replacements are held back by the restart
        // budget, a job could wait a whole window: say so at once instead.
        if farm.board.alive() == 0 && farm.board.throttled() > 0 {
            let message = "no worker is running: workers keep failing and replacements are rate-limited \
                           (--max-restarts); retry later";
            self.reply_error(dialect, Some(&id), ErrorCode::Busy, message);
            return;
        }
        let request = JobRequest {
            conn: self.conn_id,
            client_id: id,
            command,
            dialect,
            timing,
            cache_key,
            sink,
            received_at: self.received,
        };
        if let Err((rejection, id)) = farm.dispatcher.submit(request, kind) {
            let (code, message) = rejection.to_error(farm.dispatcher.queue_capacity());
            self.reply_error(dialect, Some(&id), code, &message);
        }
    }

    /// Sends a successful reply produced here (not by a worker).
    fn answer_ok(&mut self, frame: &[u8]) {
        self.answer(frame, Outcome::Ok);
    }

    /// Sends a reply produced here, and counts it: every frame read is
    /// answered through this (or, for jobs, by the dispatcher), so the
    /// `replies` counters and the request-latency histogram see them all.
    fn answer(&mut self, frame: &[u8], outcome: Outcome) {
        self.farm.stats.replied(self.command, outcome, self.received.elapsed());
        self.inline.push(frame);
    }

    /// Answers with an error, inline, in the request's dialect.
    fn reply_error(&mut self, dialect: Dialect, id: Option<&ClientId>, code: ErrorCode, message: &str) {
        self.answer(&encode_error_in(dialect, id, code, message, None), Outcome::Error(code));
    }
}

const UNAUTHORIZED: &str = "this server requires authentication: send {\"cmd\":\"auth\",\"token\":...} first";

/// A request's routing fields: id, command kind, timing flag, dialect.
type RequestParts = (ClientId, crate::protocol::CommandKind, bool, Dialect);

fn request_parts(request: &Request<'_>) -> RequestParts {
    (request.id.clone(), request.command.kind(), request.timing, request.dialect)
}
