//! Which model the farm serves, and the rules for switching it from the
//! network (`load_model`).
//!
//! The server loads a model file itself only to check it and to describe it
//! (`model`, `health_check`); jobs carry a [`ModelRef`] — path and checksum —
//! and each worker loads the weights it runs. `load_model` may name only a
//! file inside `--models-dir`: the path must be relative, without `..`, and
//! must still be inside the directory once symlinks are resolved. A server
//! never opens an arbitrary path because a client asked.

use std::path::{Component, Path, PathBuf};
use std::sync::RwLock;

use crate::protocol::{ErrorCode, ReplyError};
use crate::work::model::{Model, ModelError, ModelInfo, ModelRef};

/// Largest model file `load_model` will read.
const MAX_MODEL_BYTES: u64 = 256 * 1024 * 1024;

/// The current model and the directory models may be loaded from.
pub(super) struct ModelCatalog {
    dir: PathBuf,
    current: RwLock<Option<ModelInfo>>,
}

impl ModelCatalog {
    /// Loads `model` (checking it), or starts with no model when `model` is
    /// `None`.
    ///
    /// # Errors
    /// A sentence when the model file cannot be used.
    pub(super) fn start(dir: PathBuf, model: Option<&Path>) -> Result<ModelCatalog, ModelError> {
        let current = match model {
            Some(path) => Some(Model::load(path)?.info().clone()),
            None => {
                // Said at start, not first at the first predict: someone who
                // pointed --models-dir elsewhere may not know the default
                // model came from the old directory.
                tracing::warn!(
                    "serving no model: --model was not given and {} is not there; predictions get \
                     MODEL_UNAVAILABLE until --model names one or load_model names a file in that directory",
                    dir.join(crate::work::model::default_model_file()).display()
                );
                None
            }
        };
        Ok(ModelCatalog { dir, current: RwLock::new(current) })
    }

    /// The model being served.
    pub(super) fn current(&self) -> Option<ModelInfo> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// What a job needs to name the current model.
    pub(super) fn current_ref(&self) -> Option<ModelRef> {
        self.current().map(|info| ModelRef { path: info.path, sha256: info.sha256 })
    }

    /// The directory `load_model` may read from.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The model files (`*.onnx`, `*.safetensors`) directly inside the
    /// directory, sorted.
    pub(super) fn list(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file() || t.is_symlink()))
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|name| name.ends_with(".onnx") || name.ends_with(".safetensors"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Switches to another model file inside the directory. Jobs accepted
    /// before the switch still run the model they were accepted with.
    ///
    /// # Errors
    /// `FORBIDDEN` for a path that leaves the directory; `MODEL_UNAVAILABLE`
    /// for a file that is missing or not a usable model.
    pub(super) fn load(&self, requested: &str) -> Result<ModelInfo, ReplyError> {
        let path = self.resolve(requested)?;
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if size > MAX_MODEL_BYTES {
            return Err(ReplyError::new(
                ErrorCode::ModelUnavailable,
                format!("{requested} is larger than {MAX_MODEL_BYTES} bytes"),
            ));
        }
        let model =
            Model::load(&path).map_err(|e| ReplyError::new(ErrorCode::ModelUnavailable, e.to_string()))?;
        let info = model.info().clone();
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(info.clone());
        tracing::info!(model = %info.name, path = %info.path.display(), sha256 = %info.sha256, "model loaded");
        Ok(info)
    }

    /// Turns a client's relative path into a file inside the directory.
    fn resolve(&self, requested: &str) -> Result<PathBuf, ReplyError> {
        let forbidden = |why: &str| {
            Err(ReplyError::new(
                ErrorCode::Forbidden,
                format!(
                    "refused to load {requested:?}: {why}; name a file inside the server's --models-dir, \
                     the one directory load_model may read from (here {}; the models command lists its files, get_models in IdentyFire)",
                    self.dir.display()
                ),
            ))
        };
        let relative = Path::new(requested);
        if requested.is_empty() || requested.contains('\0') {
            return forbidden("not a file name");
        }
        if relative.is_absolute() {
            return forbidden("absolute paths are not accepted");
        }
        if relative.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
            return forbidden("\"..\" is not accepted");
        }
        let dir = self.dir.canonicalize().map_err(|e| {
            ReplyError::new(
                ErrorCode::ModelUnavailable,
                format!("the models directory {} is unusable: {e}", self.dir.display()),
            )
        })?;
        let path = dir.join(relative).canonicalize().map_err(|_| {
            ReplyError::new(
                ErrorCode::ModelUnavailable,
                format!("no model {requested:?} in the models directory (the models command lists them, get_models in IdentyFire)"),
            )
        })?;
        // A symlink inside the directory may point anywhere: check where it lands.
        if !path.starts_with(&dir) {
            return forbidden("it resolves to a file outside the models directory");
        }
        if !path.is_file() {
            return Err(ReplyError::new(ErrorCode::ModelUnavailable, format!("{requested:?} is not a file")));
        }
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_leave_the_directory_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("models");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(root.path().join("secret.safetensors"), b"outside").unwrap();
        std::os::unix::fs::symlink(root.path().join("secret.safetensors"), dir.join("link.safetensors"))
            .unwrap();
        std::fs::write(dir.join("junk.safetensors"), b"not a model").unwrap();
        let catalog = ModelCatalog::start(dir.clone(), None).unwrap();
        let code = |p: &str| catalog.load(p).unwrap_err().code;
        assert_eq!(code("/etc/passwd"), ErrorCode::Forbidden);
        assert_eq!(code("../secret.safetensors"), ErrorCode::Forbidden);
        assert_eq!(code("sub/../../secret.safetensors"), ErrorCode::Forbidden);
        assert_eq!(code("link.safetensors"), ErrorCode::Forbidden, "symlink out");
        assert_eq!(code(""), ErrorCode::Forbidden);
        assert_eq!(code("missing.safetensors"), ErrorCode::ModelUnavailable);
        assert_eq!(code("junk.safetensors"), ErrorCode::ModelUnavailable, "inside, but not a model");
        assert!(catalog.current().is_none(), "nothing was loaded");
        assert_eq!(catalog.list(), vec!["junk.safetensors".to_string(), "link.safetensors".to_string()]);
    }
}
