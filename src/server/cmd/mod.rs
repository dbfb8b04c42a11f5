//! The commands, one file per family, as in mini-redis's `cmd/`.
//!
//! A request arrives here already parsed and typed (the protocol layer's
//! [`crate::protocol::parse`] reads every argument, for both dialects, so
//! the fuzz target and the client share it) and already through the
//! session's gates. [`apply`] is the parse step of this layer: it takes the
//! [`Command`] apart and calls the family's function with exactly the typed
//! arguments it needs. That function either answers at once through the
//! [`Session`] or hands a job to [`crate::server::jobs`].
//!
//! | file | commands |
//! |---|---|
//! | [`observe`] | `ping`, `stats`, `health` (IdentyFire: `health_check`) |
//! | [`auth`] | `auth`, and the first-frame check of `--auth-token` |
//! | [`compute`] | `compute` and the chaos commands (`crash`, `hang`, `sleep`, `panic`) |
//! | [`predict`] | `predict`, `predict_batch` (IdentyFire: `predict_image`, `predict_batch`) |
//! | [`models`] | `model`, `models`, `load_model` |
//! | [`mutex`] | `mutex_acquire`, `mutex_release` |

pub(crate) mod auth;
pub(crate) mod compute;
pub(crate) mod models;
pub(crate) mod mutex;
pub(crate) mod observe;
pub(crate) mod predict;

use super::session::{Continue, Session};
use crate::protocol::{Chaos, Command, Request};
use crate::server::jobs::{PendingReply, Submitted};
use crate::server::replies::ReplySink;
use crate::work::job::JobKind;

/// Runs one request's command. `payload` is the request's frame (the cache
/// key of a compute job); `sink` is where a job's reply will be sent.
pub(super) fn apply(
    session: &mut Session<'_>,
    request: &Request<'_>,
    payload: &[u8],
    sink: &ReplySink,
) -> Continue {
    match &request.command {
        Command::Ping => observe::ping(session, request),
        Command::Stats => observe::stats(session, request),
        Command::Health => observe::health(session, request),
        Command::Auth { .. } => auth::apply(session, request),
        Command::Compute { n } => compute::compute(session, request, *n, payload, sink),
        Command::Crash => compute::chaos(session, request, Chaos::Crash, sink),
        Command::Hang => compute::chaos(session, request, Chaos::Hang, sink),
        Command::Sleep { ms } => compute::chaos(session, request, Chaos::Sleep { ms: *ms }, sink),
        Command::Panic => compute::chaos(session, request, Chaos::Panic, sink),
        Command::Predict { image, holder } => {
            predict::apply(session, request, std::slice::from_ref(image), holder, true, sink)
        }
        Command::PredictBatch { images, holder } => {
            predict::apply(session, request, images, holder, false, sink)
        }
        Command::Model => models::describe(session, request),
        Command::Models => models::list(session, request),
        Command::LoadModel { path } => models::load(session, request, path),
        Command::MutexAcquire { client_id, token, wait_ms } => {
            mutex::acquire(session, request, client_id.as_deref(), *token, *wait_ms)
        }
        Command::MutexRelease { holder } => mutex::release(session, request, holder),
    }
    Continue::Yes
}

/// Hands a job to [`crate::server::jobs`]: answered from the cache, refused,
/// or queued (its reply then comes from a worker, through the completer).
fn submit(
    session: &mut Session<'_>,
    request: &Request<'_>,
    kind: JobKind,
    cacheable: Option<&[u8]>,
    sink: &ReplySink,
) {
    let job = PendingReply {
        conn: session.conn_id,
        client_id: request.id.clone(),
        command: request.command.kind(),
        dialect: request.dialect,
        timing: request.timing,
        cache_key: None,
        sink: sink.clone(),
        received_at: session.received,
        size: kind.size(),
    };
    let refusal = session.farm.nobody_can_run();
    match session.farm.jobs.submit_or_cached(job, kind, cacheable, refusal) {
        Submitted::Queued => {}
        Submitted::Cached(frame) => session.answer_ok(&frame),
        Submitted::Refused(id, error) => session.reply_error(request.dialect, Some(&id), &error),
    }
}
