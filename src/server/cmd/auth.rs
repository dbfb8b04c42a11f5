//! `auth` and the `--auth-token` gate: with a token set, the first frame of
//! a connection must be a valid `auth`, or the client is told why and
//! disconnected.

use subtle::ConstantTimeEq;

use crate::protocol::{
    encode_result, ClientId, Command, Dialect, ErrorCode, ReplyError, ReplyExtras, Request,
};
use crate::server::session::{Continue, Session};

const UNAUTHORIZED: &str = "this server requires authentication: send {\"cmd\":\"auth\",\"token\":...} first";

/// `auth` on a connection that is already authenticated (or on a server
/// without a token): nothing to check, answer ok.
pub(crate) fn apply(session: &mut Session<'_>, request: &Request<'_>) {
    session.answer_ok(&ok(request));
}

/// The first request of a connection when `--auth-token` is set.
pub(crate) fn authenticate(session: &mut Session<'_>, request: &Request<'_>) -> Continue {
    let expected = session.farm.config.auth_token.as_deref().unwrap_or_default();
    match &request.command {
        // Compared in constant time, so the time taken says nothing about
        // how much of a guess was right.
        Command::Auth { token } if bool::from(token.as_bytes().ct_eq(expected.as_bytes())) => {
            session.authenticated = true;
            session.answer_ok(&ok(request));
            Continue::Yes
        }
        _ => {
            tracing::warn!(conn = session.conn_id, client = ?session.client, "authentication failed; closing the connection");
            reject(session, request.dialect, Some(&request.id))
        }
    }
}

/// Refuses an unauthenticated connection: `UNAUTHORIZED`, then close.
pub(crate) fn reject(session: &mut Session<'_>, dialect: Dialect, id: Option<&ClientId>) -> Continue {
    session.reply_error(dialect, id, &ReplyError::new(ErrorCode::Unauthorized, UNAUTHORIZED));
    session.farm.stats.connection_rejected();
    Continue::Close
}

fn ok(request: &Request<'_>) -> Vec<u8> {
    encode_result(&request.id, &serde_json::json!({"ok": true}), ReplyExtras::default())
}
