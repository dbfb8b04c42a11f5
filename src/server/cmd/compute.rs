//! `compute` and the chaos commands: jobs for a worker.
//!
//! A compute result depends on `n` alone, so its request payload is offered
//! to the result cache; an injected fault is never cached (nor retried).

use super::submit;
use crate::protocol::{Chaos, Request};
use crate::server::replies::ReplySink;
use crate::server::session::Session;
use crate::work::job::JobKind;

/// `compute`: queues the job, or answers it from the cache.
pub(crate) fn compute(
    session: &mut Session<'_>,
    request: &Request<'_>,
    n: u64,
    payload: &[u8],
    sink: &ReplySink,
) {
    submit(session, request, JobKind::Compute { n }, Some(payload), sink);
}

/// `crash`, `hang`, `sleep`, `panic` (only with `--allow-chaos`): queues the fault.
pub(crate) fn chaos(session: &mut Session<'_>, request: &Request<'_>, chaos: Chaos, sink: &ReplySink) {
    submit(session, request, JobKind::Chaos(chaos), None, sink);
}
