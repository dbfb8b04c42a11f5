//! `predict` and `predict_batch` (IdentyFire: `predict_image`,
//! `predict_batch`): check the accelerator mutex when required, decode the
//! base64 into the job's buffer, and hand the job to a worker.

use super::submit;
use crate::protocol::{Dialect, ErrorCode, Holder, ImageArg, Mode, ReplyError, Request};
use crate::server::images::decode_images;
use crate::server::lock::Violation;
use crate::server::replies::ReplySink;
use crate::server::session::Session;
use crate::work::job::{JobKind, PredictJob};

/// Queues the prediction job, or refuses it with the first reason found.
/// `single` is `predict` (one image; a bad image fails the request) rather
/// than `predict_batch` (bad images are listed beside the good results).
pub(crate) fn apply(
    session: &mut Session<'_>,
    request: &Request<'_>,
    images: &[ImageArg<'_>],
    holder: &Holder,
    single: bool,
    sink: &ReplySink,
) {
    match prepare(session, request, images, holder, single) {
        Ok(job) => submit(session, request, JobKind::Predict(job), None, sink),
        Err(error) => session.refuse(request, error),
    }
}

/// Everything done on the reader thread before a prediction is queued.
fn prepare(
    session: &Session<'_>,
    request: &Request<'_>,
    images: &[ImageArg<'_>],
    holder: &Holder,
    single: bool,
) -> Result<PredictJob, ReplyError> {
    let farm = session.farm;
    // IdentyFire's predictions always require the mutex; ours only with
    // --predict-lock.
    if request.dialect == Dialect::IdentyFire || farm.config.predict_lock {
        let checked = match holder.client_id.as_deref() {
            Some(client) => farm.lock.check_holder(&session.claimant(request.dialect, client), holder.token),
            None => Err(Violation::NotHolder),
        };
        if let Err(violation) = checked {
            return Err(ReplyError::new(ErrorCode::LockRequired, violation.message()));
        }
    }
    let Some(model) = farm.models.current_ref() else {
        return Err(ReplyError::new(
            ErrorCode::ModelUnavailable,
            "no model is loaded: start the server with --model, or call load_model",
        ));
    };
    // A worker process cannot see this process's heap: decode straight into
    // shared memory for it.
    let shared = farm.config.mode == Mode::Processes;
    let decoded = decode_images(images, farm.config.max_image_bytes, shared);
    if let (true, Some(error)) = (single, decoded.first_error) {
        return Err(error);
    }
    Ok(PredictJob { model, threshold: farm.config.threshold, images: decoded.batch, single })
}
