//! Jobs: what a worker runs, and what it sends back.
//!
//! These types cross the process boundary (over ipc-channel, serialized with
//! postcard), so they are plain data: no references, no `serde_json::Value`.
//! [`execute`] is *the* job code — thread workers call it directly and worker
//! processes call it after receiving a job — so both modes compute exactly
//! the same thing.

use ipc_channel::ipc::IpcSharedMemory;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::protocol::{Chaos, ErrorCode, ImageOutcome, JobOutput, JobResult, Prediction, ReplyError};
use crate::work::compute::compute;
use crate::work::model::{decode_image, ImageLimits, ModelRef, ModelSlot};

/// Identifies one accepted job for the whole life of the server. Job ids are
/// never reused, so a late reply can never be mistaken for a newer job's.
pub(crate) type JobId = u64;

/// The work itself, without any routing information.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum JobKind {
    /// The original ThreadCenter CPU-bound function.
    Compute {
        /// Number of steps.
        n: u64,
    },
    /// A fault injected on purpose (`--allow-chaos`), for demos and tests.
    Chaos(Chaos),
    /// Run the fire detector on one or more images.
    Predict(PredictJob),
}

/// A `predict` or `predict_batch` job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PredictJob {
    /// The model to run (the server's current one when the job was accepted).
    pub(crate) model: ModelRef,
    /// `fire_detected = raw_score > threshold` (`--threshold`).
    pub(crate) threshold: f32,
    /// The image files.
    pub(crate) images: ImageBatch,
    /// `predict` (one image; a bad image fails the job) rather than
    /// `predict_batch` (bad images are listed next to the good results).
    pub(crate) single: bool,
}

/// Image files as they travel to a worker: one buffer holding every file of
/// the request back to back, and where each file lies in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ImageBatch {
    /// The bytes.
    pub(crate) data: ImageData,
    /// One entry per image of the request, in order.
    pub(crate) items: Vec<ImageItem>,
}

/// One image of a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ImageItem {
    /// The client's name for it.
    pub(crate) filename: Option<String>,
    /// `(offset, length)` in [`ImageBatch::data`], or why the reader thread
    /// already refused it (bad base64, too large).
    pub(crate) span: Result<(usize, usize), String>,
}

/// Where the image bytes live.
///
/// A worker *thread* reads a plain `Vec` that the reader filled. A worker
/// *process* cannot see the server's heap, so for process mode the reader
/// decodes the base64 straight into shared memory: sending it over
/// ipc-channel passes a file descriptor, not the bytes, and the worker maps
/// the same pages. The image is written once and never copied again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum ImageData {
    /// In the server's own memory (thread mode).
    Local(Vec<u8>),
    /// In a shared-memory region (process mode).
    Shared(IpcSharedMemory),
}

/// An image buffer while the reader fills it: made zeroed, written through
/// [`ImageBuffer::fill`], then turned into the [`ImageData`] that travels.
///
/// It is neither `Clone` nor serializable, so while it exists its handle to
/// a shared-memory region is the only one — the invariant the `unsafe` in
/// `fill` needs, kept by the type instead of by its callers.
#[derive(Debug)]
pub(crate) struct ImageBuffer(ImageData);

impl ImageBuffer {
    /// A zeroed buffer of `len` bytes, shared when `shared`.
    pub(crate) fn zeroed(len: usize, shared: bool) -> ImageBuffer {
        ImageBuffer(if shared {
            ImageData::Shared(IpcSharedMemory::from_byte(0, len))
        } else {
            ImageData::Local(vec![0; len])
        })
    }

    /// The bytes, to write into.
    #[allow(unsafe_code)]
    pub(crate) fn fill(&mut self) -> &mut [u8] {
        match &mut self.0 {
            ImageData::Local(bytes) => bytes,
            // SAFETY: `deref_mut` is sound while this handle is the only one
            // to the region. The region was made by `zeroed` inside this
            // buffer, and an `ImageBuffer` cannot be cloned or serialized:
            // the only way to share it is `into_data`, which ends the buffer.
            ImageData::Shared(memory) => unsafe { memory.deref_mut() },
        }
    }

    /// The filled bytes, ready to travel to a worker.
    pub(crate) fn into_data(self) -> ImageData {
        self.0
    }
}

impl ImageData {
    /// The bytes, for the worker to read.
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            ImageData::Local(bytes) => bytes,
            ImageData::Shared(memory) => memory,
        }
    }
}

impl JobKind {
    /// Whether running the job twice is harmless, so it may be retried on
    /// another worker after a crash. Injected faults are not retried: they
    /// would only strike again.
    pub(crate) fn is_idempotent(&self) -> bool {
        matches!(self, JobKind::Compute { .. } | JobKind::Predict(_))
    }

    /// How big the job is, for logs: the `n` of a compute, the number of
    /// images of a prediction, the milliseconds of a chaos `sleep` (0 for
    /// the other injected faults).
    pub(crate) fn size(&self) -> u64 {
        match self {
            JobKind::Compute { n } => *n,
            JobKind::Predict(job) => job.images.items.len() as u64,
            JobKind::Chaos(Chaos::Sleep { ms }) => *ms,
            JobKind::Chaos(_) => 0,
        }
    }
}

/// Runs one job to completion on the calling thread. `models` is the
/// worker's loaded model (shared by all worker threads, one per process).
pub(crate) fn execute(kind: &JobKind, models: &ModelSlot) -> JobResult {
    match kind {
        JobKind::Compute { n } => Ok(JobOutput::Compute(compute(*n))),
        JobKind::Chaos(chaos) => commit(*chaos),
        JobKind::Predict(job) => predict(job, models),
    }
}

/// Decodes the images (in parallel, with rayon), runs the good ones through
/// the network as one batch, and lines the outcomes up in request order.
fn predict(job: &PredictJob, models: &ModelSlot) -> JobResult {
    let model =
        models.get(&job.model).map_err(|e| ReplyError::new(ErrorCode::ModelUnavailable, e.to_string()))?;
    let bytes = job.images.data.bytes();
    let shape = model.info().input_shape;
    let decoded: Vec<Result<ndarray::Array3<f32>, String>> = job
        .images
        .items
        .par_iter()
        .map(|item| {
            let (offset, len) = item.span.clone()?;
            let file = offset
                .checked_add(len)
                .and_then(|end| bytes.get(offset..end))
                .ok_or_else(|| "the image's bytes are missing from the job".to_string())?;
            decode_image(file, shape, model.input_scale(), ImageLimits::default()).map_err(|e| e.to_string())
        })
        .collect();
    // Move the decoded images into the batch (no copy), keeping each
    // image's status in request order.
    let mut good = Vec::with_capacity(decoded.len());
    let statuses: Vec<Result<(), String>> =
        decoded.into_iter().map(|d| d.map(|image| good.push(image))).collect();
    let mut scores = model
        .predict_batch(&good)
        .map_err(|e| ReplyError::new(ErrorCode::Internal, format!("the model could not run: {e}")))?
        .into_iter();
    let outcomes: Vec<ImageOutcome> = job
        .images
        .items
        .iter()
        .zip(statuses)
        .map(|(item, status)| ImageOutcome {
            filename: item.filename.clone(),
            result: status.map(|()| {
                let score = scores.next().expect("one score per decoded image");
                Prediction::from_score(score, job.threshold)
            }),
        })
        .collect();
    if job.single {
        if let Some(Err(message)) = outcomes.first().map(|o| &o.result) {
            return Err(ReplyError::new(ErrorCode::BadImage, message.clone()));
        }
    }
    Ok(JobOutput::Predictions(outcomes))
}

/// Commits an injected fault.
fn commit(chaos: Chaos) -> JobResult {
    match chaos {
        Chaos::Crash => {
            eprintln!("chaos: crash requested; aborting process {}", std::process::id());
            // A requested crash is a demo, not a bug to debug: leave no core file.
            let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
            std::process::abort()
        }
        Chaos::Hang => loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        },
        Chaos::Sleep { ms } => {
            std::thread::sleep(std::time::Duration::from_millis(ms));
            Ok(JobOutput::Slept(ms))
        }
        Chaos::Panic => panic!("chaos: panic requested"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compute_jobs_return_the_kernel_value() {
        assert_eq!(execute(&JobKind::Compute { n: 10 }, &ModelSlot::new()), Ok(JobOutput::Compute(8360)));
    }

    #[test]
    fn confidence_is_the_score_of_the_answer_given() {
        let fire = Prediction::from_score(0.9, 0.5);
        assert!(fire.fire_detected && (fire.confidence - 90.0).abs() < 1e-4);
        let calm = Prediction::from_score(0.2, 0.5);
        assert!(!calm.fire_detected && (calm.confidence - 80.0).abs() < 1e-4);
        assert!(!Prediction::from_score(0.6, 0.7).fire_detected, "the threshold decides");
    }
}
