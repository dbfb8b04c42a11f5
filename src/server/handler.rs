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
//! Commands that need no worker (`ping`, `stats`, `health`, `auth`) and every
//! error are answered right here; jobs go to the dispatcher, and their replies
//! come back later through the registry, from a worker.

use std::net::{IpAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use subtle::ConstantTimeEq;

use super::Farm;
use crate::connection::{Connection, InlineReplies, ReadLimits, ReplySink};
use crate::dispatch::{encode_output, JobRequest};
use crate::frame::FrameError;
use crate::job::JobKind;
use crate::protocol::{
    encode_error, encode_pong, encode_result, parse_request, Command, ErrorCode, ReplyExtras, Request,
};
use crate::registry::ConnId;

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
                    self.farm.stats.error(code);
                    self.inline.push(&encode_error(None, code, &message));
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
                }
                let close = !self.authenticated;
                if close {
                    // Garbage before authenticating is refused as unauthorized.
                    self.reply_error(e.id.as_ref(), ErrorCode::Unauthorized, UNAUTHORIZED);
                    farm.stats.connection_rejected();
                    return Continue::Close;
                }
                farm.stats.error(e.code);
                self.inline.push(&encode_error(e.id.as_ref(), e.code, &e.message));
                return Continue::Yes;
            }
        };
        let kind = request.command.kind();
        farm.stats.request(kind);

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
                self.reply_error(Some(&request.id), ErrorCode::RateLimited, &message);
                return Continue::Yes;
            }
        }
        if farm.draining.load(Ordering::SeqCst) {
            self.reply_error(Some(&request.id), ErrorCode::ShuttingDown, "the server is shutting down");
            return Continue::Yes;
        }
        match request.command {
            Command::Ping => self.inline.push(&encode_pong(&request.id)),
            Command::Stats => {
                self.inline.push(&encode_result(&request.id, &farm.stats_report(), ReplyExtras::default()))
            }
            Command::Health => {
                self.inline.push(&encode_result(&request.id, &farm.health_report(), ReplyExtras::default()))
            }
            Command::Auth { .. } => self.inline.push(&encode_result(
                &request.id,
                &serde_json::json!({"ok": true}),
                ReplyExtras::default(),
            )),
            Command::Compute { n } => {
                self.run_job(request_parts(&request), JobKind::Compute { n }, Some(payload), sink)
            }
            Command::Chaos(chaos) => self.run_job(request_parts(&request), JobKind::Chaos(chaos), None, sink),
        }
        Continue::Yes
    }

    /// The first request of a connection when `--auth-token` is set.
    fn authenticate(&mut self, request: &Request) -> Continue {
        let expected = self.farm.config.auth_token.as_deref().unwrap_or_default();
        match &request.command {
            // Compared in constant time, so the time taken says nothing about
            // how much of a guess was right.
            Command::Auth { token } if bool::from(token.as_bytes().ct_eq(expected.as_bytes())) => {
                self.authenticated = true;
                self.inline.push(&encode_result(
                    &request.id,
                    &serde_json::json!({"ok": true}),
                    ReplyExtras::default(),
                ));
                Continue::Yes
            }
            _ => {
                tracing::warn!(conn = self.conn_id, client = ?self.client, "authentication failed; closing the connection");
                self.reply_error(Some(&request.id), ErrorCode::Unauthorized, UNAUTHORIZED);
                self.farm.stats.connection_rejected();
                Continue::Close
            }
        }
    }

    /// Serves a job from the cache, or hands it to the dispatcher.
    fn run_job(
        &mut self,
        (id, command, timing): RequestParts,
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
                        self.inline.push(&encode_output(&id, &output, extras));
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
            self.reply_error(Some(&id), ErrorCode::Busy, message);
            return;
        }
        let request = JobRequest { conn: self.conn_id, client_id: id, command, timing, cache_key, sink };
        if let Err((rejection, id)) = farm.dispatcher.submit(request, kind) {
            let (code, message) = rejection.to_error(farm.dispatcher.queue_capacity());
            self.reply_error(Some(&id), code, &message);
        }
    }

    /// Answers with an error, inline.
    fn reply_error(&mut self, id: Option<&crate::protocol::ClientId>, code: ErrorCode, message: &str) {
        self.farm.stats.error(code);
        self.inline.push(&encode_error(id, code, message));
    }
}

const UNAUTHORIZED: &str = "this server requires authentication: send {\"cmd\":\"auth\",\"token\":...} first";

/// A request's routing fields: id, command kind, timing flag.
type RequestParts = (crate::protocol::ClientId, crate::protocol::CommandKind, bool);

fn request_parts(request: &Request) -> RequestParts {
    (request.id.clone(), request.command.kind(), request.timing)
}
