//! The fast engine for ONNX models: onnxruntime itself, loaded at run time
//! from a `libonnxruntime.so` already on the machine (the `onnxruntime` pip
//! wheel ships one in `onnxruntime/capi/`), through the `ort` crate's
//! dynamic loading. Nothing is downloaded at build time and nothing is
//! linked; without a library, ONNX models run on tract, the pure-Rust
//! engine.
//!
//! Which engine a process uses is chosen once ([`choose_engine`], from
//! `--engine` and `--onnxruntime`), and in the default `auto` the library
//! is looked for the first time a model needs it, in this order:
//! `--onnxruntime LIBRARY` (or `THREADCENTER_ONNXRUNTIME`), `ORT_DYLIB_PATH`
//! (the `ort` crate's convention), then the `onnxruntime` package of the
//! `python3` on `PATH` (what `pip install onnxruntime` puts there). Not
//! found, or found but not loadable: tract, and the reason is said — in
//! the log, in `model` and in `stats` ([`engine_reason`]).
//!
//! Worker processes never look for themselves: the server tells them the
//! library it loaded in [`ONNXRUNTIME_ENV`], or tract in [`ENGINE_ENV`].
//!
//! An `ort` session runs one call at a time (`run` takes `&mut self`), so a
//! model keeps one single-threaded session per thread of rayon's pool and a
//! batch part takes whichever is free: parallelism comes from splitting the
//! batch, the same policy as tract's (see [`super::onnx`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use ndarray::Array4;

use super::ModelError;
use ort::session::Session;
use ort::value::TensorRef;

/// The variable that carries `--onnxruntime` to worker processes.
pub(crate) const ONNXRUNTIME_ENV: &str = "THREADCENTER_ONNXRUNTIME";
/// The variable that carries `--engine` (and a server's resolved choice of
/// tract) to worker processes.
pub(crate) const ENGINE_ENV: &str = "THREADCENTER_ENGINE";
/// The `ort` crate's variable for the library's path.
const ORT_DYLIB_PATH: &str = "ORT_DYLIB_PATH";
/// The longest `python3` may take to say where its onnxruntime is.
const PYTHON_WAIT: Duration = Duration::from_secs(5);

/// Which engine runs ONNX models (`--engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum EngineChoice {
    /// onnxruntime when one is found (--onnxruntime, ORT_DYLIB_PATH, or
    /// python3's onnxruntime package), else tract.
    #[default]
    Auto,
    /// onnxruntime, found the same way; refuse to start without it.
    Onnxruntime,
    /// tract, the pure-Rust engine, even when onnxruntime is there.
    Tract,
}

/// The engine this process runs ONNX models with, once chosen.
struct Chosen {
    /// onnxruntime's library and environment; `None`: tract.
    onnxruntime: Option<(PathBuf, ort::environment::Environment)>,
    /// Why, in words: for the log, `model` and `stats`.
    reason: String,
}

static CHOSEN: OnceLock<Chosen> = OnceLock::new();

/// Chooses the engine for every ONNX model this process loads from now on.
/// With an explicit library or `--engine onnxruntime` the library is loaded
/// now, so a bad one fails at start-up; in `auto` it is looked for when the
/// first model needs it. Calling it again does nothing.
///
/// # Errors
/// An explicit library that cannot be loaded as onnxruntime (missing,
/// another library, or a version older than 1.22); `--engine onnxruntime`
/// with none found.
pub fn choose_engine(choice: EngineChoice, library: Option<&Path>) -> crate::error::Result<()> {
    use crate::error::Error;
    if CHOSEN.get().is_some() {
        return Ok(());
    }
    let chosen = match (choice, library) {
        (EngineChoice::Tract, _) if !cfg!(feature = "tract") => {
            return Err(Error::Config(
                "--engine tract: this build has no tract engine; build it in with \
                 cargo build --release --features tract"
                    .into(),
            ))
        }
        (EngineChoice::Tract, _) => Chosen { onnxruntime: None, reason: "--engine tract".into() },
        (_, Some(library)) => load(library, "--onnxruntime")?,
        (EngineChoice::Onnxruntime, None) => {
            let Some((library, how)) = find_onnxruntime() else {
                return Err(Error::Config(format!(
                    "--engine onnxruntime: {}, or name its library with --onnxruntime LIBRARY",
                    not_found()
                )));
            };
            load(&library, &how)?
        }
        (EngineChoice::Auto, None) => return Ok(()), // looked for when a model needs it
    };
    say(&chosen);
    let _ = CHOSEN.set(chosen);
    Ok(())
}

/// The choice a worker process was handed by its server (never a search
/// of its own).
///
/// # Errors
/// The library the server loaded cannot be loaded here.
pub(crate) fn choose_engine_as_told() -> crate::error::Result<()> {
    if let Some(library) = std::env::var_os(ONNXRUNTIME_ENV) {
        return choose_engine(EngineChoice::Auto, Some(Path::new(&library)));
    }
    // No library: tract where it is built in. Where it is not, the server
    // found no engine either and started all the same (ONNX models are
    // refused, the shipped model runs on its ndarray twin), so its workers
    // must too: asking for `--engine tract` here would be a usage error
    // that stops every worker of a server that did nothing wrong.
    if cfg!(feature = "tract") {
        return choose_engine(EngineChoice::Tract, None);
    }
    let _ = CHOSEN.set(Chosen { onnxruntime: None, reason: not_found() });
    Ok(())
}

/// What [`choose_engine`] chose, looking for onnxruntime now in `auto`.
fn chosen() -> &'static Chosen {
    CHOSEN.get_or_init(|| {
        if cfg!(test) {
            // The library's unit tests are tract's; the integration tests
            // run both engines through the binaries.
            return Chosen { onnxruntime: None, reason: "unit tests run on tract".into() };
        }
        let chosen = match find_onnxruntime() {
            Some((library, how)) => load(&library, &how).unwrap_or_else(|e| Chosen {
                onnxruntime: None,
                reason: if cfg!(feature = "tract") {
                    format!("{e}; running on tract instead")
                } else {
                    e.to_string()
                },
            }),
            None => Chosen { onnxruntime: None, reason: not_found() },
        };
        say(&chosen);
        chosen
    })
}

fn not_found() -> String {
    format!(
        "no onnxruntime found (not in --onnxruntime, ORT_DYLIB_PATH, or python3's onnxruntime package; \
         {INSTALL_ONNXRUNTIME} puts one there)"
    )
}

/// The start-up log's line on the engine, the reason said once (it holds
/// what to do). A library that was found but would not load is a warning:
/// someone meant it to run, and what runs instead is several times slower.
fn say(chosen: &Chosen) {
    let refused = !chosen.reason.starts_with("no onnxruntime found");
    match &chosen.onnxruntime {
        Some((library, _)) => {
            tracing::info!(library = %library.display(), reason = %chosen.reason, "ONNX models run on onnxruntime")
        }
        None if cfg!(feature = "tract") && refused => {
            tracing::warn!(reason = %chosen.reason, "ONNX models run on tract, the slower pure-Rust engine")
        }
        None if cfg!(feature = "tract") => {
            tracing::info!(reason = %chosen.reason, "ONNX models run on tract, the slower pure-Rust engine")
        }
        None if refused => tracing::warn!(
            reason = %chosen.reason,
            "ONNX models cannot run in this build (the shipped model runs on its ndarray twin)"
        ),
        None => tracing::info!(
            reason = %chosen.reason,
            "ONNX models cannot run in this build (the shipped model runs on its ndarray twin); onnxruntime, \
             or tract built in (cargo build --release --features tract), runs them"
        ),
    }
}

/// What puts onnxruntime where it is found, in one place for every message.
const INSTALL_ONNXRUNTIME: &str = "python3 -m pip install onnxruntime==1.32.0";

/// Loads `library` as onnxruntime; `how` says where its path came from.
fn load(library: &Path, how: &str) -> crate::error::Result<Chosen> {
    use crate::error::Error;
    if !library.is_file() {
        return Err(Error::Model(format!(
            "{how} {}: no such file (the pip wheel's is onnxruntime/capi/libonnxruntime.so.*)",
            library.display()
        )));
    }
    let environment = ort::init_from(library)
        .map_err(|e| {
            Error::Model(format!("{how} {}: cannot load it as onnxruntime: {e}", library.display()))
        })?
        .with_name("threadcenter")
        .build()
        .map_err(|e| Error::Model(format!("{how} {}: {e}", library.display())))?;
    let reason = match how {
        "--onnxruntime" => "--onnxruntime".to_string(),
        how => format!("found by {how}"),
    };
    Ok(Chosen { onnxruntime: Some((library.to_path_buf(), environment)), reason })
}

/// Where onnxruntime's library is, and how it was found: `ORT_DYLIB_PATH`,
/// else the `onnxruntime` package of `python3` (asked without importing
/// it, so in milliseconds).
fn find_onnxruntime() -> Option<(PathBuf, String)> {
    if let Some(path) = std::env::var_os(ORT_DYLIB_PATH).filter(|p| !p.is_empty()) {
        return Some((PathBuf::from(path), ORT_DYLIB_PATH.into()));
    }
    let package = python_package_dir("onnxruntime")?;
    let capi = package.join("capi");
    let mut libraries: Vec<PathBuf> = std::fs::read_dir(&capi)
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libonnxruntime.so"))
        })
        .collect();
    libraries.sort();
    Some((libraries.pop()?, "python3's onnxruntime package".into()))
}

/// The directory of a Python package, from `python3` on `PATH`; `None`
/// without python3, without the package, or when python3 takes too long.
fn python_package_dir(package: &str) -> Option<PathBuf> {
    let script = format!(
        "import importlib.util as u; s = u.find_spec('{package}'); \
         print(s.submodule_search_locations[0] if s and s.submodule_search_locations else '')"
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + PYTHON_WAIT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take()?, &mut out).ok()?;
    let dir = PathBuf::from(out.trim());
    (!out.trim().is_empty() && dir.is_dir()).then_some(dir)
}

/// The onnxruntime library in use, if any (choosing now in `auto`).
pub(crate) fn loaded_library() -> Option<&'static Path> {
    chosen().onnxruntime.as_ref().map(|(path, _)| path.as_path())
}

/// Why this process runs ONNX models on the engine it does.
pub(crate) fn engine_reason() -> &'static str {
    &chosen().reason
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
        let (_, environment) = chosen().onnxruntime.as_ref()?;
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
