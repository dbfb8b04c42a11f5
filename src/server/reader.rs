//! One connection's reader thread: frames in, each request through the
//! gates, then to its command.
//!
//! Every frame that is read gets exactly one reply, and the reader takes a
//! reply slot (see [`crate::server::replies::FlowControl`]) before
//! producing it. Before a request reaches its command it passes, in order:
//! 1. **authentication** (with `--auth-token`): the first frame must be a
//!    valid `auth`, or the client gets `UNAUTHORIZED` and is disconnected
//!    ([`super::cmd::auth`]);
//! 2. **rate limiting** (with `--rate-limit`): `RATE_LIMITED` when the
//!    client's bucket is empty (`stats` and `health` are exempt, so
//!    monitoring keeps working);
//! 3. **draining**: once the server is stopping, `SHUTTING_DOWN`.
//!
//! Then [`super::cmd::apply`] runs the command. Commands that need no worker
//! are answered right here, through the [`Session`]; jobs go to
//! [`crate::server::jobs`], and their replies come back later from a worker.
//!
//! IdentyFire calls (`{"method","params"}`) take the same path and the same
//! checks; only the shape of their answers differs.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::cmd;
use super::session::{Continue, Session};
use super::Farm;
use crate::frame::FrameError;
use crate::protocol::{encode_error, parse_request, Command, ErrorCode, ReplyError};
use crate::server::connection::{Connection, ReadLimits};
use crate::server::jobs::registry::ConnId;
use crate::server::replies::ReplySink;
use crate::server::stats::ReplyOutcome;
use crate::transport::Transport;

/// Serves one connection until the client leaves, the connection breaks, or
/// the server shuts it down; then cleans up after it.
pub(super) fn handle_connection(farm: Arc<Farm>, conn_id: ConnId, stream: Arc<Transport>) {
    let peer = stream.peer_addr().ok();
    tracing::debug!(conn = conn_id, ?peer, "connection opened");
    let limits = ReadLimits {
        max_frame: farm.config.max_frame,
        max_inflight: farm.config.max_inflight,
        read_timeout: farm.config.read_timeout,
        idle_timeout: farm.config.idle_timeout,
    };
    match Connection::start(Arc::clone(&stream), limits, Arc::clone(&farm.frame_memory)) {
        Ok(mut conn) => {
            farm.connections.set_flow(conn_id, Arc::clone(conn.sink().flow()));
            let mut session = Session {
                farm: &farm,
                conn_id,
                peer: Arc::clone(&stream),
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
            let cancelled = farm.jobs.cancel_connection(conn_id);
            // Its place in the mutex queue goes too: nobody waits for it.
            farm.lock.forget_connection(conn_id);
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
                // Another frame's worth of memory is not there: this one
                // connection is shed, so the server and everyone else go on.
                Err(e @ FrameError::OverBudget { .. }) => {
                    tracing::warn!(conn = self.conn_id, error = %e, "frame memory budget spent; closing a connection");
                    Step::Refuse { code: ErrorCode::Busy, message: e.to_string(), then_close: true }
                }
                // Nothing owed, nothing sent for --idle-timeout.
                Err(e @ FrameError::Idle { .. }) => {
                    tracing::debug!(conn = self.conn_id, error = %e, "closing an idle connection");
                    self.farm.stats.connection_idle_closed();
                    Step::Refuse { code: ErrorCode::IdleTimeout, message: e.to_string(), then_close: true }
                }
                // Half a frame, then nothing for --read-timeout.
                Err(e @ FrameError::Stalled { .. }) => {
                    tracing::debug!(conn = self.conn_id, error = %e, "cutting off a stalled frame");
                    Step::Refuse { code: ErrorCode::BadFrame, message: e.to_string(), then_close: true }
                }
                Ok(None) => return, // a clean close between frames
                Err(FrameError::Io(e)) if self.tls_failed(&e) => {
                    tracing::debug!(conn = self.conn_id, error = %e, "TLS failed; closing the connection");
                    self.farm.stats.connection_tls_failed();
                    return;
                }
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
                    self.answer(&encode_error(None, code, &message), ReplyOutcome::Error(code));
                    if then_close {
                        return;
                    }
                }
            }
        }
    }

    /// Whether a read error ended a TLS connection's handshake or session:
    /// bytes that are not acceptable TLS, or a handshake past the timeout.
    fn tls_failed(&self, error: &std::io::Error) -> bool {
        self.farm.tls.is_some()
            && (error.get_ref().is_some_and(|inner| inner.is::<crate::transport::TlsRefused>())
                || error.kind() == std::io::ErrorKind::TimedOut)
    }

    /// Parses one request payload, passes it through the gates, and runs
    /// its command.
    fn handle_request(&mut self, payload: &[u8], sink: &ReplySink) -> Continue {
        let farm = self.farm;
        let request = match parse_request(payload, &farm.config.limits()) {
            Ok(request) => request,
            Err(refused) => {
                if let Some(kind) = refused.command {
                    farm.stats.request(kind);
                    self.command = Some(kind);
                }
                if !self.authenticated {
                    // Garbage before authenticating is refused as unauthorized.
                    return cmd::auth::reject(self, refused.dialect, refused.id.as_ref());
                }
                self.reply_error(refused.dialect, refused.id.as_ref(), &refused.error);
                return Continue::Yes;
            }
        };
        let kind = request.command.kind();
        farm.stats.request(kind);
        self.command = Some(kind);

        if !self.authenticated {
            return cmd::auth::authenticate(self, &request);
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
                self.refuse(&request, ReplyError::new(ErrorCode::RateLimited, message));
                return Continue::Yes;
            }
        }
        // SeqCst pairs with the store in `Server::wait`: once the drain has
        // begun, no reader admits another request.
        if farm.draining.load(Ordering::SeqCst) {
            self.refuse(&request, ReplyError::new(ErrorCode::ShuttingDown, "the server is shutting down"));
            return Continue::Yes;
        }
        cmd::apply(self, &request, payload, sink)
    }
}
