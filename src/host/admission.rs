//! A host re-checks every job exactly as a gateway checks a request.
//!
//! A job that reaches a host has passed its gateway's checks — but the
//! host cannot know which gateway (a misconfigured one, another version) or,
//! without a farm key, whether a gateway sent it at all. So it applies its
//! own limits, from its own flags: `--max-n`, `--allow-chaos` (off by
//! default) and the chaos bounds, the batch size, and models resolved only
//! by file name inside its own `--models-dir`, never by the path in the
//! message. A refusal is the job's error reply, naming the host's flag.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::protocol::{Chaos, ErrorCode, ReplyError, MAX_BATCH_IMAGES};
use crate::work::job::JobKind;

/// What a host accepts.
#[derive(Debug, Clone)]
pub(crate) struct HostLimits {
    /// `--max-n`.
    pub(crate) max_n: u64,
    /// `--allow-chaos`.
    pub(crate) allow_chaos: bool,
    /// `--models-dir`.
    pub(crate) models_dir: PathBuf,
    /// `--job-timeout`: no chaos sleep may outlast it.
    pub(crate) job_timeout: Duration,
}

/// Checks jobs against [`HostLimits`]; remembers each model file's SHA-256
/// (keyed by path, size and modification time) so a file is hashed once.
#[derive(Debug)]
pub(crate) struct Admission {
    limits: HostLimits,
    hashes: Mutex<HashMap<(PathBuf, u64, std::time::SystemTime), String>>,
}

/// Most model files whose hash is remembered (a models directory holds a few).
const MAX_REMEMBERED_MODELS: usize = 64;

fn refuse(code: ErrorCode, message: String) -> ReplyError {
    ReplyError::new(code, message)
}

impl Admission {
    pub(crate) fn new(limits: HostLimits) -> Admission {
        Admission { limits, hashes: Mutex::new(HashMap::new()) }
    }

    /// The job to run (a predict job's model moved to this host's own file),
    /// or the refusal that is its reply.
    ///
    /// # Errors
    /// A sentence naming this host's flag.
    pub(crate) fn admit(&self, mut kind: JobKind) -> Result<JobKind, ReplyError> {
        let limits = &self.limits;
        match &mut kind {
            JobKind::Compute { n } => {
                if *n > limits.max_n {
                    return Err(refuse(
                        ErrorCode::BadRequest,
                        format!(
                            "n = {n} is over this worker host's limit of {} (tc-worker --max-n)",
                            limits.max_n
                        ),
                    ));
                }
            }
            JobKind::Chaos(chaos) => {
                if !limits.allow_chaos {
                    return Err(refuse(
                        ErrorCode::UnknownCommand,
                        "this worker host does not run fault-injection commands (tc-worker --allow-chaos)"
                            .into(),
                    ));
                }
                if let Chaos::Sleep { ms } = chaos {
                    let most = u64::try_from(limits.job_timeout.as_millis())
                        .unwrap_or(u64::MAX)
                        .min(crate::protocol::MAX_SLEEP_MS);
                    if *ms > most {
                        return Err(refuse(
                            ErrorCode::BadRequest,
                            format!(
                                "a sleep of {ms} ms is longer than this worker host allows ({most} ms: its \
                                 --job-timeout, at most an hour)"
                            ),
                        ));
                    }
                }
            }
            JobKind::Predict(predict) => {
                if predict.images.items.is_empty() || predict.images.items.len() > MAX_BATCH_IMAGES {
                    return Err(refuse(
                        ErrorCode::BadRequest,
                        format!(
                            "a job of {} images; a worker host takes 1 to {MAX_BATCH_IMAGES}",
                            predict.images.items.len()
                        ),
                    ));
                }
                predict.model.path = self.own_model(&predict.model.path, &predict.model.sha256)?;
            }
        }
        Ok(kind)
    }

    /// This host's copy of the model the job names: the same file name in
    /// its own `--models-dir`, with the same SHA-256.
    fn own_model(&self, named: &Path, sha256: &str) -> Result<PathBuf, ReplyError> {
        let dir = &self.limits.models_dir;
        let unavailable = |why: String| refuse(ErrorCode::ModelUnavailable, why);
        let Some(name) = named.file_name().and_then(|n| n.to_str()).filter(|n| !n.starts_with('.')) else {
            return Err(unavailable(format!("the job names no model file ({})", named.display())));
        };
        let path = dir.join(name);
        let meta = std::fs::metadata(&path).ok().filter(std::fs::Metadata::is_file).ok_or_else(|| {
            unavailable(format!(
                "this worker host has no model {name} in its --models-dir {}; copy the gateway's model there",
                dir.display()
            ))
        })?;
        let key = (path.clone(), meta.len(), meta.modified().unwrap_or(std::time::UNIX_EPOCH));
        let known = self.hashes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key).cloned();
        let hash = match known {
            Some(hash) => hash,
            None => {
                let bytes = std::fs::read(&path)
                    .map_err(|e| unavailable(format!("cannot read {}: {e}", path.display())))?;
                let hash = crate::work::model::sha256_hex(&bytes);
                let mut hashes = self.hashes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if hashes.len() >= MAX_REMEMBERED_MODELS {
                    hashes.clear();
                }
                hashes.insert(key, hash.clone());
                hash
            }
        };
        if hash != sha256 {
            return Err(unavailable(format!(
                "this worker host's {} is not the gateway's model (its SHA-256 differs); give both the same file",
                path.display()
            )));
        }
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(allow_chaos: bool, dir: &Path) -> Admission {
        Admission::new(HostLimits {
            max_n: 1000,
            allow_chaos,
            models_dir: dir.to_path_buf(),
            job_timeout: Duration::from_secs(10),
        })
    }

    #[test]
    fn compute_and_chaos_are_held_to_the_hosts_own_flags() {
        let dir = tempfile::tempdir().unwrap();
        let strict = admission(false, dir.path());
        assert!(strict.admit(JobKind::Compute { n: 1000 }).is_ok());
        let over = strict.admit(JobKind::Compute { n: u64::MAX }).unwrap_err();
        assert!(over.message.contains("--max-n"), "{}", over.message);
        let chaos = strict.admit(JobKind::Chaos(Chaos::Crash)).unwrap_err();
        assert!(chaos.message.contains("--allow-chaos"), "{}", chaos.message);
        let lenient = admission(true, dir.path());
        assert!(lenient.admit(JobKind::Chaos(Chaos::Sleep { ms: 5000 })).is_ok());
        let long = lenient.admit(JobKind::Chaos(Chaos::Sleep { ms: 600_000 })).unwrap_err();
        assert!(long.message.contains("--job-timeout"), "{}", long.message);
    }

    #[test]
    fn a_model_is_this_hosts_own_file_by_name_and_hash_never_the_path_sent() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.onnx"), b"model bytes").unwrap();
        let admission = admission(false, dir.path());
        let hash = crate::work::model::sha256_hex(b"model bytes");
        let path = admission.own_model(Path::new("/elsewhere/m.onnx"), &hash).unwrap();
        assert_eq!(path, dir.path().join("m.onnx"));
        for (named, sha) in [("/etc/shadow", hash.as_str()), ("/dev/zero", hash.as_str()), ("m.onnx", "00")] {
            let refused = admission.own_model(Path::new(named), sha).unwrap_err();
            assert_eq!(refused.code, ErrorCode::ModelUnavailable, "{named}: {}", refused.message);
        }
    }
}
