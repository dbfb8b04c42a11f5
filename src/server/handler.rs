//! One connection's reader thread: frames in, requests answered or dispatched.
//!
//! Every frame that is read gets exactly one reply, and the reader takes a
//! reply slot (see [`crate::connection::FlowControl`]) before producing it.
//! Commands that need no worker (`ping`, `stats`, `health`) and every error
//! are answered right here; `compute` goes to the dispatcher, and its reply
//! comes back later through the registry, from a worker.

use std::net::TcpStream;
use std::sync::Arc;

use super::Farm;
use crate::connection::{Connection, ReplySink};
use crate::frame::FrameError;
use crate::job::JobKind;
use crate::protocol::{encode_error, encode_pong, encode_result, parse_request, Command, ErrorCode};
use crate::registry::ConnId;

/// Serves one connection until the client leaves, the connection breaks, or
/// the server shuts it down; then cleans up after it.
pub(super) fn handle_connection(farm: Arc<Farm>, conn_id: ConnId, stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    tracing::debug!(conn = conn_id, %peer, "connection opened");
    match Connection::start(stream, farm.config.max_frame, farm.config.max_inflight) {
        Ok(mut conn) => {
            farm.connections.set_flow(conn_id, Arc::clone(conn.sink().flow()));
            serve(&farm, conn_id, &mut conn);
            // Forget this connection's jobs first: their registry entries hold
            // reply sinks, and the writer only finishes when all sinks are gone.
            let cancelled = farm.dispatcher.cancel_connection(conn_id);
            if cancelled > 0 {
                tracing::debug!(conn = conn_id, cancelled, "client left with jobs in flight");
            }
            conn.finish();
        }
        Err(e) => tracing::warn!(conn = conn_id, %peer, error = %e, "cannot start the connection's writer"),
    }
    farm.connections.remove(conn_id);
    farm.stats.connection_closed();
    tracing::debug!(conn = conn_id, %peer, "connection closed");
}

/// What to do with the outcome of one frame read that owes a reply.
enum Step<'a> {
    /// A whole payload: parse and serve it.
    Request(&'a [u8]),
    /// A frame that cannot be served: answer with an error, and close the
    /// connection afterwards when the frame boundary was lost.
    Refuse {
        code: ErrorCode,
        message: String,
        then_close: bool,
    },
}

/// The read loop.
fn serve(farm: &Farm, conn_id: ConnId, conn: &mut Connection) {
    let sink = conn.sink().clone();
    loop {
        let step = match conn.read_frame() {
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
            Ok(None) => return, // a clean close between frames
            Err(e) => {
                tracing::debug!(conn = conn_id, error = %e, "connection ended mid-frame");
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
            Step::Request(payload) => handle_request(farm, conn_id, payload, &sink),
            Step::Refuse {
                code,
                message,
                then_close,
            } => {
                farm.stats.error(code);
                sink.send(encode_error(None, code, &message));
                if then_close {
                    return;
                }
            }
        }
    }
}

/// Answers or dispatches one request payload.
fn handle_request(farm: &Farm, conn_id: ConnId, payload: &[u8], sink: &ReplySink) {
    let request = match parse_request(payload, &farm.config.limits()) {
        Ok(request) => request,
        Err(e) => {
            if let Some(kind) = e.command {
                farm.stats.request(kind);
            }
            farm.stats.error(e.code);
            sink.send(encode_error(e.id.as_ref(), e.code, &e.message));
            return;
        }
    };
    let kind = request.command.kind();
    farm.stats.request(kind);
    match request.command {
        Command::Ping => sink.send(encode_pong(&request.id)),
        Command::Stats => sink.send(encode_result(&request.id, &farm.stats_report(), None)),
        Command::Health => sink.send(encode_result(&request.id, &farm.health_report(), None)),
        Command::Compute { n } => {
            let job = JobKind::Compute { n };
            if let Err((rejection, id)) =
                farm.dispatcher
                    .submit(conn_id, request.id, kind, job, request.timing, sink)
            {
                let (code, message) = rejection.to_error(farm.dispatcher.queue_capacity());
                farm.stats.error(code);
                sink.send(encode_error(Some(&id), code, &message));
            }
        }
    }
}
