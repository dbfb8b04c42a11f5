//! A worker's model slot: the model it has loaded, and loading another when
//! a job names one it does not have.

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::{Model, ModelError, ModelInfo, ModelRef};

/// A worker's loaded model, replaced when a job names another one.
///
/// Thread workers share one slot (threads share memory: one copy of the
/// weights for the whole pool); each worker process has its own (processes
/// share nothing: one copy per process). The classroom guide makes that
/// point with `ps`.
#[derive(Default)]
pub(crate) struct ModelSlot {
    loaded: Mutex<Option<Arc<Model>>>,
}

impl ModelSlot {
    /// An empty slot.
    pub(crate) fn new() -> ModelSlot {
        ModelSlot::default()
    }

    /// Loads a model into the slot now (a worker's start-up).
    ///
    /// # Errors
    /// As [`Model::load`].
    pub(crate) fn preload(&self, path: &Path) -> Result<ModelInfo, ModelError> {
        let model = Arc::new(Model::load(path)?);
        let info = model.info().clone();
        *self.loaded.lock().unwrap_or_else(|p| p.into_inner()) = Some(model);
        Ok(info)
    }

    /// The model a job asks for: the loaded one when its checksum matches,
    /// else the file is loaded now and must have the checksum the server saw.
    ///
    /// # Errors
    /// A sentence for the client when the file cannot be loaded or changed.
    pub(crate) fn get(&self, wanted: &ModelRef) -> Result<Arc<Model>, ModelError> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(model) = loaded.as_ref().filter(|m| m.info().sha256 == wanted.sha256) {
            return Ok(Arc::clone(model));
        }
        let model = Model::load(&wanted.path)?;
        if model.info().sha256 != wanted.sha256 {
            return Err(ModelError::ChangedOnDisk { path: wanted.path.clone() });
        }
        let model = Arc::new(model);
        *loaded = Some(Arc::clone(&model));
        Ok(model)
    }
}
