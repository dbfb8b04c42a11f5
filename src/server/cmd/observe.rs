//! `ping`, `stats` and `health`: answered by the reader thread from the
//! server's live state, never queued behind jobs.

use crate::protocol::{encode_pong, encode_result, encode_rpc, Dialect, ReplyExtras, Request};
use crate::server::session::Session;

/// `ping`: `{"id","ok":true,"pong":true}`.
pub(crate) fn ping(session: &mut Session<'_>, request: &Request<'_>) {
    session.answer_ok(&encode_pong(&request.id));
}

/// `stats`: counters, workers, latency percentiles.
pub(crate) fn stats(session: &mut Session<'_>, request: &Request<'_>) {
    let report = session.farm.stats_report();
    session.answer_ok(&encode_result(&request.id, &report, ReplyExtras::default()));
}

/// `health` (IdentyFire's `health_check`, in its own field names).
pub(crate) fn health(session: &mut Session<'_>, request: &Request<'_>) {
    let farm = session.farm;
    let frame = match request.dialect {
        Dialect::IdentyFire => encode_rpc(&farm.identyfire_health()),
        Dialect::ThreadCenter => encode_result(&request.id, &farm.health_report(), ReplyExtras::default()),
    };
    session.answer_ok(&frame);
}
