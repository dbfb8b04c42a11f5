//! The optional second engine for ONNX models: onnxruntime itself, loaded at
//! run time from a `libonnxruntime.so` the user already has (the
//! `onnxruntime` pip wheel ships one in `onnxruntime/capi/`), through the
//! `ort` crate's dynamic loading. Nothing is downloaded at build time and
//! nothing is linked: without `--onnxruntime`, ONNX models run on tract.
//!
//! One process has one onnxruntime environment, made once by
//! [`use_onnxruntime`] at start-up (a bad path fails there, with the file
//! named). Worker processes are told the library's path in
//! [`ONNXRUNTIME_ENV`] and load it the same way.
//!
//! An `ort` session runs one call at a time (`run` takes `&mut self`), so a
//! model keeps one single-threaded session per thread of rayon's pool and a
//! batch part takes whichever is free: parallelism comes from splitting the
//! batch, the same policy as tract's (see [`super::onnx`]).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use ndarray::Array4;

use super::ModelError;
use ort::session::Session;
use ort::value::TensorRef;

/// The variable that carries `--onnxruntime` to worker processes.
pub(crate) const ONNXRUNTIME_ENV: &str = "THREADCENTER_ONNXRUNTIME";

/// The library this process runs ONNX models with, once loaded.
static LOADED: OnceLock<(PathBuf, ort::environment::Environment)> = OnceLock::new();

/// Loads onnxruntime from `library` for every ONNX model this process loads
/// from now on. Calling it again with the same path does nothing.
///
/// # Errors
/// The file cannot be loaded as onnxruntime (missing, another library, or a
/// version older than 1.22), or another library was loaded before.
pub fn use_onnxruntime(library: &Path) -> crate::error::Result<()> {
    use crate::error::Error;
    if let Some((loaded, _)) = LOADED.get() {
        return if loaded == library {
            Ok(())
        } else {
            Err(Error::Model(format!("onnxruntime is already loaded from {}", loaded.display())))
        };
    }
    if !library.is_file() {
        return Err(Error::Model(format!(
            "--onnxruntime {}: no such file (the pip wheel's is onnxruntime/capi/libonnxruntime.so.*)",
            library.display()
        )));
    }
    let environment = ort::init_from(library)
        .map_err(|e| {
            Error::Model(format!("--onnxruntime {}: cannot load it as onnxruntime: {e}", library.display()))
        })?
        .with_name("threadcenter")
        .build()
        .map_err(|e| Error::Model(format!("--onnxruntime {}: {e}", library.display())))?;
    let _ = LOADED.set((library.to_path_buf(), environment));
    Ok(())
}

/// The onnxruntime library in use, if any.
pub(crate) fn loaded_library() -> Option<&'static Path> {
    LOADED.get().map(|(path, _)| path.as_path())
}

/// A model's onnxruntime sessions: one per thread of rayon's pool.
pub(crate) struct OrtSessions {
    sessions: Vec<Mutex<Session>>,
}

impl OrtSessions {
    /// Builds the sessions for a model file's bytes, if onnxruntime is in
    /// use in this process.
    /// A session that cannot be built is [`ModelError::Invalid`] for `path`.
    pub(crate) fn for_model(bytes: &[u8], path: &Path) -> Option<Result<OrtSessions, ModelError>> {
        let (_, environment) = LOADED.get()?;
        let build = || -> Result<Session, ort::Error> {
            Session::builder(environment)?
                .with_intra_threads(1)?
                .with_inter_threads(1)?
                .commit_from_memory(bytes)
        };
        let refused = |e: ort::Error| ModelError::Invalid {
            path: path.to_path_buf(),
            reason: format!("onnxruntime cannot load the model: {e}"),
        };
        let sessions: Result<Vec<Mutex<Session>>, ModelError> = (0..rayon::current_num_threads().max(1))
            .map(|_| build().map(Mutex::new).map_err(refused))
            .collect();
        Some(sessions.map(|sessions| OrtSessions { sessions }))
    }

    /// Runs one batch (in the graph's layout) and returns its rows, flat.
    pub(crate) fn run(&self, batch: &Array4<f32>) -> Result<Vec<f32>, ModelError> {
        // A free session if there is one, else the one this thread maps to.
        let mut session = self.sessions.iter().find_map(|s| s.try_lock().ok()).unwrap_or_else(|| {
            let index = rayon::current_thread_index().unwrap_or(0) % self.sessions.len();
            self.sessions[index].lock().unwrap_or_else(PoisonError::into_inner)
        });
        let input = TensorRef::from_array_view(batch.view()).map_err(|e| ModelError::Run(e.to_string()))?;
        let outputs =
            session.run(ort::inputs![input]).map_err(|e| ModelError::Run(format!("onnxruntime: {e}")))?;
        let (_, values) =
            outputs[0].try_extract_tensor::<f32>().map_err(|e| ModelError::Run(e.to_string()))?;
        Ok(values.to_vec())
    }
}
