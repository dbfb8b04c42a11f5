//! `mutex_acquire` and `mutex_release`: the accelerator mutex of
//! [`crate::server::lock`], as IdentyFire's clients use it.
//!
//! `mutex_acquire` with `wait_ms` blocks this connection's reader until the
//! grant or the wait runs out (pipelined requests behind it wait too): fine
//! for IdentyFire's one-call-per-connection clients. While it waits, the
//! socket is watched: a client that leaves gives up its place at once.

use std::time::{Duration, Instant};

use crate::protocol::{ErrorCode, Holder, ReplyError, Request};
use crate::server::lock::{unix_millis, Acquire, Violation};
use crate::server::session::Session;

/// `mutex_acquire`: answers GRANTED or QUEUED (with the queue position).
pub(crate) fn acquire(
    session: &mut Session<'_>,
    request: &Request<'_>,
    client_id: Option<&str>,
    token: Option<u64>,
    wait_ms: u64,
) {
    let Some(client) = client_id else {
        return missing_client_id(session, request);
    };
    match grant(session, request, client, token, wait_ms) {
        Ok(body) => session.reply_ok(request, body),
        Err(violation) => {
            session.refuse(request, ReplyError::new(ErrorCode::LockRequired, violation.message()))
        }
    }
}

/// `mutex_release`: succeeds only for the holder (under its token, if shown).
pub(crate) fn release(session: &mut Session<'_>, request: &Request<'_>, holder: &Holder) {
    let Some(client) = holder.client_id.as_deref() else {
        return missing_client_id(session, request);
    };
    let who = session.claimant(request.dialect, client);
    let released = session.farm.lock.release(&who, holder.token);
    let mut body = serde_json::json!({
        "success": released.is_ok(),
        "released_at_us": released.as_ref().ok(),
        "server_timestamp": unix_millis(),
    });
    match released {
        Err(Violation::TokenRequired) => body["error"] = Violation::TokenRequired.message().into(),
        Err(_) => body["error"] = "not the owner of the lock (or not under this token)".into(),
        Ok(_) => {}
    }
    session.reply_ok(request, body);
}

/// IdentyFire's own answer to a mutex call without `client_id`.
fn missing_client_id(session: &mut Session<'_>, request: &Request<'_>) {
    session.refuse(request, ReplyError::new(ErrorCode::BadRequest, "Missing client_id"));
}

/// `mutex_acquire`, waiting on the server up to `wait_ms` for the grant.
fn grant(
    session: &mut Session<'_>,
    request: &Request<'_>,
    client: &str,
    token: Option<u64>,
    wait_ms: u64,
) -> Result<serde_json::Value, Violation> {
    if wait_ms > 0 {
        // This thread is about to block: what it owes goes out first.
        let _ = session.inline.flush();
    }
    let farm = session.farm;
    let who = session.claimant(request.dialect, client);
    let peer = std::sync::Arc::clone(&session.peer);
    let started = Instant::now();
    let outcome =
        farm.lock.acquire(&who, token, Duration::from_millis(wait_ms), Some(session.conn_id), || {
            peer.peer_has_left()
        });
    let waited_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (status, position, token, granted_at_us) = match outcome {
        Acquire::Granted { token, granted_at_us } => ("GRANTED", 0, Some(token), Some(granted_at_us)),
        Acquire::Queued { position } => ("QUEUED", position, None, None),
        Acquire::Refused(violation) => return Err(violation),
    };
    Ok(serde_json::json!({
        "success": true,
        "status": status,
        "queue_position": position,
        "token": token,
        "lease_ms": farm.config.lock_timeout.as_millis() as u64,
        "waited_ms": waited_ms,
        "granted_at_us": granted_at_us,
        "server_timestamp": unix_millis(),
    }))
}
