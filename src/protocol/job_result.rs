//! What a finished job yields: the results that travel back from a worker
//! and become the `result` of a reply.
//!
//! They are plain data (they cross the process boundary over ipc-channel),
//! defined here in the shared layer so that the worker that produces them and
//! the reply encoder that shapes them ([`super::reply::encode_job_reply`])
//! agree on one type.

use serde::{Deserialize, Serialize};

use super::ReplyError;

/// A job's successful result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum JobOutput {
    /// The checksum returned by `compute` ([`crate::work::compute`]).
    Compute(u64),
    /// A chaos `sleep` that woke up: how long it slept, in milliseconds.
    Slept(u64),
    /// One outcome per image, in request order.
    Predictions(Vec<ImageOutcome>),
}

/// What became of one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ImageOutcome {
    /// The client's name for it.
    pub(crate) filename: Option<String>,
    /// The prediction, or why there is none.
    pub(crate) result: Result<Prediction, String>,
}

/// The detector's verdict on one image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct Prediction {
    /// `raw_score > threshold`.
    pub(crate) fire_detected: bool,
    /// How sure, in percent: the score of the answer given.
    pub(crate) confidence: f32,
    /// The network's output, in [0, 1].
    pub(crate) raw_score: f32,
}

impl Prediction {
    /// Turns a score into a verdict, as IdentyFire did.
    pub(crate) fn from_score(raw_score: f32, threshold: f32) -> Prediction {
        let fire_detected = raw_score > threshold;
        let confidence = if fire_detected { raw_score } else { 1.0 - raw_score } * 100.0;
        Prediction { fire_detected, confidence, raw_score }
    }
}

/// What running a job yields.
pub(crate) type JobResult = Result<JobOutput, ReplyError>;
