//! Parsing a frame's payload into a typed [`Request`].
//!
//! Parsing happens in two steps so that every error can still echo the
//! client's `id`:
//! 1. the payload is split into its top-level fields, each kept as raw JSON
//!    text ([`RawValue`]) borrowed from the frame — no tree of
//!    `serde_json::Value`s is built;
//! 2. each field we use is checked and converted on its own, so a bad `n`
//!    gives a `BAD_REQUEST` that names `n` *and* carries the request's id.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::ErrorCode;
use crate::compute::DEFAULT_N;
pub use crate::job::Chaos;

/// The client's request id, kept as the exact JSON text it sent (a string or
/// a number), so it is echoed back byte for byte — `1.50` stays `1.50` and a
/// 30-digit number survives even though it fits no integer type.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientId(Box<RawValue>);

impl ClientId {
    /// Builds an id from JSON text, checking that it is a string or a number.
    ///
    /// # Errors
    /// A `BAD_REQUEST` message when the text is another JSON type.
    pub fn from_json(raw: &RawValue) -> Result<Self, String> {
        let text = raw.get();
        match text.as_bytes().first() {
            Some(b'"' | b'-' | b'0'..=b'9') => Ok(ClientId(raw.to_owned())),
            _ => Err(format!("\"id\" must be a string or a number, not {}", json_type_name(text))),
        }
    }

    /// The id as JSON text, exactly as the client sent it.
    pub fn as_json(&self) -> &str {
        self.0.get()
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.get())
    }
}

impl PartialEq for ClientId {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

/// Which protocol a request came in, and so in which shapes it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    /// `{"id","cmd",...}` → `{"id","result"}` or `{"id","error"}`.
    #[default]
    ThreadCenter,
    /// IdentyFire's RPC: `{"method","params"}` → `{"success":...}`, no id.
    IdentyFire,
}

/// A decoded, validated request. It borrows the frame it came from, so an
/// image's base64 text is never copied before it is decoded.
#[derive(Debug, PartialEq)]
pub struct Request<'a> {
    /// Echoed back in the reply (`null` for IdentyFire calls, which have none).
    pub id: ClientId,
    /// What to do.
    pub command: Command<'a>,
    /// `"timing": true` asks for `worker`, `queue_us` and `service_us` in the reply.
    pub timing: bool,
    /// How to answer.
    pub dialect: Dialect,
}

/// One image of a `predict` or `predict_batch` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageArg<'a> {
    /// The client's name for it, echoed in batch results.
    pub filename: Option<String>,
    /// The base64 text, or why this entry has none (reported for this image
    /// alone in a batch).
    pub image_b64: Result<Cow<'a, str>, String>,
}

/// Who claims to hold the accelerator mutex.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Holder {
    /// The client's name for itself (`client_id`).
    pub client_id: Option<String>,
    /// The fencing token of its grant, when it shows one.
    pub token: Option<u64>,
}

/// The commands of the ThreadCenter protocol (IdentyFire's methods map onto
/// the same commands; see [`CommandKind::from_method`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// Answered by the connection's own thread, without a worker.
    Ping,
    /// Run the original CPU-bound job for `n` steps on a worker.
    Compute {
        /// Number of steps (validated against [`Limits::max_n`]).
        n: u64,
    },
    /// The server's counters, workers and latency percentiles.
    Stats,
    /// Whether the server is fit to serve (status, workers alive vs configured).
    Health,
    /// Authenticate the connection (`--auth-token`): `{"cmd":"auth","token":"..."}`.
    Auth {
        /// The shared secret.
        token: String,
    },
    /// A fault to inject on a worker (only with `--allow-chaos`).
    Chaos(Chaos),
    /// Run the fire detector on one image.
    Predict {
        /// The image.
        image: ImageArg<'a>,
        /// The lock holder's claim (needed with `--predict-lock`, and always
        /// for IdentyFire).
        holder: Holder,
    },
    /// Run the fire detector on several images as one batch.
    PredictBatch {
        /// The images (at least one, at most [`MAX_BATCH_IMAGES`]).
        images: Vec<ImageArg<'a>>,
        /// As for `Predict`.
        holder: Holder,
    },
    /// Describe the current model.
    Model,
    /// List the model files in `--models-dir`.
    Models,
    /// Switch to another model file inside `--models-dir`.
    LoadModel {
        /// A path relative to `--models-dir`.
        path: String,
    },
    /// Ask for the accelerator mutex.
    MutexAcquire {
        /// Who asks.
        client_id: Option<String>,
        /// How long to wait on the server for the grant (0 = answer at once).
        wait_ms: u64,
    },
    /// Give the accelerator mutex back.
    MutexRelease {
        /// Who gives it back, and under which grant.
        holder: Holder,
    },
}

/// The most images one `predict_batch` may carry.
pub const MAX_BATCH_IMAGES: usize = 256;

/// The kind of a command without its arguments, for counting requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandKind {
    /// `ping`
    Ping,
    /// `compute`
    Compute,
    /// `stats`
    Stats,
    /// `health` (IdentyFire: `health_check`)
    Health,
    /// `auth`
    Auth,
    /// `crash` (chaos): the worker dies.
    Crash,
    /// `hang` (chaos): the worker never answers.
    Hang,
    /// `sleep` (chaos): the worker sleeps `ms` milliseconds.
    Sleep,
    /// `panic` (chaos): the job panics.
    Panic,
    /// `predict` (IdentyFire: `predict_image`)
    Predict,
    /// `predict_batch`
    PredictBatch,
    /// `model` (IdentyFire: `get_current_model`)
    Model,
    /// `models` (IdentyFire: `get_models`)
    Models,
    /// `load_model`
    LoadModel,
    /// `mutex_acquire`
    MutexAcquire,
    /// `mutex_release`
    MutexRelease,
}

impl CommandKind {
    /// Every kind, in a fixed order (used to index counters).
    pub const ALL: [CommandKind; 16] = [
        CommandKind::Ping,
        CommandKind::Compute,
        CommandKind::Stats,
        CommandKind::Health,
        CommandKind::Auth,
        CommandKind::Crash,
        CommandKind::Hang,
        CommandKind::Sleep,
        CommandKind::Panic,
        CommandKind::Predict,
        CommandKind::PredictBatch,
        CommandKind::Model,
        CommandKind::Models,
        CommandKind::LoadModel,
        CommandKind::MutexAcquire,
        CommandKind::MutexRelease,
    ];

    /// The command's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::Ping => "ping",
            CommandKind::Compute => "compute",
            CommandKind::Stats => "stats",
            CommandKind::Health => "health",
            CommandKind::Auth => "auth",
            CommandKind::Crash => "crash",
            CommandKind::Hang => "hang",
            CommandKind::Sleep => "sleep",
            CommandKind::Panic => "panic",
            CommandKind::Predict => "predict",
            CommandKind::PredictBatch => "predict_batch",
            CommandKind::Model => "model",
            CommandKind::Models => "models",
            CommandKind::LoadModel => "load_model",
            CommandKind::MutexAcquire => "mutex_acquire",
            CommandKind::MutexRelease => "mutex_release",
        }
    }

    /// IdentyFire's method names, and the commands they are.
    pub const METHODS: [(&'static str, CommandKind); 8] = [
        ("health_check", CommandKind::Health),
        ("get_current_model", CommandKind::Model),
        ("get_models", CommandKind::Models),
        ("load_model", CommandKind::LoadModel),
        ("mutex_acquire", CommandKind::MutexAcquire),
        ("mutex_release", CommandKind::MutexRelease),
        ("predict_image", CommandKind::Predict),
        ("predict_batch", CommandKind::PredictBatch),
    ];

    /// Looks an IdentyFire method up.
    pub fn from_method(name: &str) -> Option<Self> {
        Self::METHODS.iter().find(|(method, _)| *method == name).map(|(_, kind)| *kind)
    }

    /// Whether this is a fault-injection command (`--allow-chaos` only).
    pub fn is_chaos(self) -> bool {
        matches!(self, CommandKind::Crash | CommandKind::Hang | CommandKind::Sleep | CommandKind::Panic)
    }

    /// Looks a wire name up.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// Position of this kind in [`CommandKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl Command<'_> {
    /// The command's kind, without its arguments.
    pub fn kind(&self) -> CommandKind {
        match self {
            Command::Ping => CommandKind::Ping,
            Command::Compute { .. } => CommandKind::Compute,
            Command::Stats => CommandKind::Stats,
            Command::Health => CommandKind::Health,
            Command::Auth { .. } => CommandKind::Auth,
            Command::Chaos(Chaos::Crash) => CommandKind::Crash,
            Command::Chaos(Chaos::Hang) => CommandKind::Hang,
            Command::Chaos(Chaos::Sleep { .. }) => CommandKind::Sleep,
            Command::Chaos(Chaos::Panic) => CommandKind::Panic,
            Command::Predict { .. } => CommandKind::Predict,
            Command::PredictBatch { .. } => CommandKind::PredictBatch,
            Command::Model => CommandKind::Model,
            Command::Models => CommandKind::Models,
            Command::LoadModel { .. } => CommandKind::LoadModel,
            Command::MutexAcquire { .. } => CommandKind::MutexAcquire,
            Command::MutexRelease { .. } => CommandKind::MutexRelease,
        }
    }
}

/// Server-side bounds on request arguments.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest `n` a `compute` request may ask for (flag `--max-n`).
    pub max_n: u64,
    /// Whether the fault-injection commands are accepted (`--allow-chaos`).
    pub allow_chaos: bool,
}

/// Longest `sleep` a chaos request may ask for (one hour).
pub const MAX_SLEEP_MS: u64 = 3_600_000;

/// A request that cannot be served, as it will be reported to the client.
#[derive(Debug, PartialEq)]
pub struct RequestError {
    /// The request's id when it could be read, otherwise `null` in the reply.
    pub id: Option<ClientId>,
    /// What kind of mistake it is.
    pub code: ErrorCode,
    /// A sentence a person can act on.
    pub message: String,
    /// The command, when it was recognised (for per-command counters).
    pub command: Option<CommandKind>,
    /// How to answer.
    pub dialect: Dialect,
}

/// The fields we look at, as raw JSON text borrowed from the frame: the
/// top-level object of a ThreadCenter request, or the `params` object of an
/// IdentyFire call (which has no `id`, `cmd` or `method`). Other fields are
/// ignored, as the original servers ignored them.
#[derive(Deserialize, Default)]
struct Fields<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    cmd: Option<&'a RawValue>,
    #[serde(borrow)]
    method: Option<&'a RawValue>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
    #[serde(borrow)]
    n: Option<&'a RawValue>,
    #[serde(borrow)]
    timing: Option<&'a RawValue>,
    #[serde(borrow)]
    token: Option<&'a RawValue>,
    #[serde(borrow)]
    ms: Option<&'a RawValue>,
    #[serde(borrow)]
    image_b64: Option<&'a RawValue>,
    #[serde(borrow)]
    filename: Option<&'a RawValue>,
    #[serde(borrow)]
    images: Option<&'a RawValue>,
    #[serde(borrow)]
    client_id: Option<&'a RawValue>,
    #[serde(borrow)]
    wait_ms: Option<&'a RawValue>,
    #[serde(borrow)]
    model_path: Option<&'a RawValue>,
}

/// One entry of `images`.
#[derive(Deserialize)]
struct ImageFields<'a> {
    #[serde(borrow)]
    filename: Option<&'a RawValue>,
    #[serde(borrow)]
    image_b64: Option<&'a RawValue>,
}

/// Decodes and validates one request payload, in either dialect: a frame
/// with `"method"` and no `"cmd"` is an IdentyFire call.
///
/// # Errors
/// `BAD_JSON` when the payload is not UTF-8 JSON; `BAD_REQUEST` when it is
/// not an object or a field is missing, mistyped or out of range;
/// `UNKNOWN_COMMAND` when `cmd` (or `method`) names no command.
pub fn parse_request<'a>(payload: &'a [u8], limits: &Limits) -> Result<Request<'a>, RequestError> {
    let fail = |id: Option<ClientId>, code, message: String| RequestError {
        id,
        code,
        message,
        command: None,
        dialect: Dialect::ThreadCenter,
    };

    let text = std::str::from_utf8(payload).map_err(|e| {
        fail(
            None,
            ErrorCode::BadJson,
            format!("the frame is not valid UTF-8 (invalid byte at offset {})", e.valid_up_to()),
        )
    })?;

    // serde would happily read a struct from a JSON array (field by position),
    // so insist on an object before decoding the envelope.
    if !text.trim_start().starts_with('{') {
        return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => fail(
                None,
                ErrorCode::BadRequest,
                format!("a request must be a JSON object, not {}", json_type_name(text.trim_start())),
            ),
            Err(e) => fail(None, ErrorCode::BadJson, format!("the frame is not valid JSON: {e}")),
        });
    }

    let envelope: Fields = serde_json::from_str(text).map_err(|e| {
        let code = match e.classify() {
            serde_json::error::Category::Data => ErrorCode::BadRequest,
            _ => ErrorCode::BadJson,
        };
        let what = if code == ErrorCode::BadJson { "not valid JSON" } else { "not a valid request" };
        fail(None, code, format!("the frame is {what}: {e}"))
    })?;

    if let (None, Some(method)) = (envelope.cmd, envelope.method) {
        return parse_rpc(method, envelope.params, limits);
    }

    let id = match envelope.id {
        None => {
            return Err(fail(
                None,
                ErrorCode::BadRequest,
                "the request has no \"id\"; add a string or number id to match the reply".into(),
            ))
        }
        Some(raw) => ClientId::from_json(raw).map_err(|msg| fail(None, ErrorCode::BadRequest, msg))?,
    };

    let bad = |code, message: String| fail(Some(id.clone()), code, message);

    let name = match envelope.cmd {
        None => {
            return Err(bad(
                ErrorCode::BadRequest,
                "the request has no \"cmd\" (e.g. \"cmd\": \"compute\")".into(),
            ))
        }
        Some(raw) => as_string(raw).ok_or_else(|| {
            bad(ErrorCode::BadRequest, format!("\"cmd\" must be a string, not {}", json_type_name(raw.get())))
        })?,
    };
    // Chaos commands do not exist unless the server was started with
    // --allow-chaos: without it they are unknown like any other word.
    let offered = |k: &CommandKind| limits.allow_chaos || !k.is_chaos();
    let Some(kind) = CommandKind::from_name(&name).filter(offered) else {
        let known: Vec<&str> = CommandKind::ALL.iter().filter(|k| offered(k)).map(|k| k.as_str()).collect();
        return Err(bad(
            ErrorCode::UnknownCommand,
            format!("unknown command {:?}; this server knows {}", name, known.join(", ")),
        ));
    };
    let with_kind = |mut e: RequestError| {
        e.command = Some(kind);
        e
    };

    let timing = match envelope.timing {
        None => false,
        Some(raw) => serde_json::from_str::<bool>(raw.get()).map_err(|_| {
            with_kind(bad(
                ErrorCode::BadRequest,
                format!("\"timing\" must be true or false, not {}", raw.get()),
            ))
        })?,
    };

    let command = build_command(kind, &envelope, limits)
        .map_err(|message| with_kind(bad(ErrorCode::BadRequest, message)))?;
    Ok(Request { id, command, timing, dialect: Dialect::ThreadCenter })
}

/// An IdentyFire call: `{"method": "...", "params": {...}}`.
fn parse_rpc<'a>(
    method: &'a RawValue,
    params: Option<&'a RawValue>,
    limits: &Limits,
) -> Result<Request<'a>, RequestError> {
    let fail = |code, message: String, command| RequestError {
        id: None,
        code,
        message,
        command,
        dialect: Dialect::IdentyFire,
    };
    let name = as_string(method)
        .ok_or_else(|| fail(ErrorCode::BadRequest, "\"method\" must be a string".into(), None))?;
    let kind = CommandKind::from_method(&name).ok_or_else(|| {
        let known: Vec<&str> = CommandKind::METHODS.iter().map(|(m, _)| *m).collect();
        fail(ErrorCode::UnknownCommand, format!("Unknown method: {name} (known: {})", known.join(", ")), None)
    })?;
    let fields = match params {
        None => Fields::default(),
        Some(raw) if raw.get().trim_start().starts_with('{') => serde_json::from_str(raw.get())
            .map_err(|e| fail(ErrorCode::BadRequest, format!("bad \"params\": {e}"), Some(kind)))?,
        Some(_) => {
            return Err(fail(ErrorCode::BadRequest, "\"params\" must be an object".into(), Some(kind)))
        }
    };
    let command = build_command(kind, &fields, limits)
        .map_err(|message| fail(ErrorCode::BadRequest, message, Some(kind)))?;
    // IdentyFire replies carry no id; `null` stands in where one is needed.
    let id = ClientId(RawValue::from_string("null".into()).expect("null is JSON"));
    Ok(Request { id, command, timing: false, dialect: Dialect::IdentyFire })
}

/// Reads a command's arguments from its fields (the same in both dialects).
fn build_command<'a>(kind: CommandKind, fields: &Fields<'a>, limits: &Limits) -> Result<Command<'a>, String> {
    Ok(match kind {
        CommandKind::Ping => Command::Ping,
        CommandKind::Stats => Command::Stats,
        CommandKind::Health => Command::Health,
        CommandKind::Model => Command::Model,
        CommandKind::Models => Command::Models,
        CommandKind::Compute => Command::Compute { n: parse_n(fields.n, limits)? },
        CommandKind::Auth => Command::Auth {
            token: fields
                .token
                .and_then(as_string)
                .map(Cow::into_owned)
                .ok_or_else(|| "\"auth\" needs a string \"token\"".to_string())?,
        },
        CommandKind::Crash => Command::Chaos(Chaos::Crash),
        CommandKind::Hang => Command::Chaos(Chaos::Hang),
        CommandKind::Panic => Command::Chaos(Chaos::Panic),
        CommandKind::Sleep => {
            let ms = fields
                .ms
                .and_then(|raw| serde_json::from_str::<u64>(raw.get()).ok())
                .filter(|ms| *ms <= MAX_SLEEP_MS)
                .ok_or_else(|| format!("\"sleep\" needs \"ms\": an integer from 0 to {MAX_SLEEP_MS}"))?;
            Command::Chaos(Chaos::Sleep { ms })
        }
        CommandKind::Predict => Command::Predict {
            image: ImageArg {
                filename: optional_string(fields.filename, "filename")?,
                image_b64: match fields.image_b64 {
                    None => {
                        return Err("\"predict\" needs \"image_b64\": the image file, base64-encoded".into())
                    }
                    Some(raw) => Ok(as_string(raw).ok_or("\"image_b64\" must be a string")?),
                },
            },
            holder: holder(fields)?,
        },
        CommandKind::PredictBatch => {
            Command::PredictBatch { images: parse_images(fields.images)?, holder: holder(fields)? }
        }
        CommandKind::LoadModel => Command::LoadModel {
            path: optional_string(fields.model_path, "model_path")?
                .ok_or("\"load_model\" needs \"model_path\": a file inside the server's --models-dir")?,
        },
        CommandKind::MutexAcquire => Command::MutexAcquire {
            client_id: client_id(fields.client_id)?,
            wait_ms: match fields.wait_ms {
                None => 0,
                Some(raw) => serde_json::from_str::<u64>(raw.get()).map_err(|_| {
                    format!("\"wait_ms\" must be a whole number of milliseconds, not {}", raw.get())
                })?,
            },
        },
        CommandKind::MutexRelease => Command::MutexRelease { holder: holder(fields)? },
    })
}

/// `images`: a non-empty array of `{filename, image_b64}` objects. An entry
/// that is not usable is kept, with the reason, so that it is reported on
/// its own and the rest of the batch still runs.
fn parse_images<'a>(raw: Option<&'a RawValue>) -> Result<Vec<ImageArg<'a>>, String> {
    let raw = raw.ok_or("\"predict_batch\" needs \"images\": a list of {\"filename\", \"image_b64\"}")?;
    let entries: Vec<&'a RawValue> = serde_json::from_str(raw.get())
        .map_err(|_| format!("\"images\" must be a list, not {}", json_type_name(raw.get())))?;
    if entries.is_empty() {
        return Err("\"images\" is empty: send at least one image".into());
    }
    if entries.len() > MAX_BATCH_IMAGES {
        return Err(format!(
            "\"images\" has {} entries; at most {MAX_BATCH_IMAGES} per batch",
            entries.len()
        ));
    }
    Ok(entries
        .into_iter()
        .map(|entry| match serde_json::from_str::<ImageFields<'a>>(entry.get()) {
            Ok(fields) => ImageArg {
                filename: fields.filename.and_then(as_string).map(Cow::into_owned),
                image_b64: match fields.image_b64 {
                    None => Err("no \"image_b64\" in this entry".into()),
                    Some(raw) => as_string(raw).ok_or_else(|| "\"image_b64\" must be a string".into()),
                },
            },
            Err(_) => ImageArg {
                filename: None,
                image_b64: Err(format!("an entry must be an object, not {}", json_type_name(entry.get()))),
            },
        })
        .collect())
}

fn holder(fields: &Fields<'_>) -> Result<Holder, String> {
    Ok(Holder {
        client_id: client_id(fields.client_id)?,
        token: match fields.token {
            None => None,
            Some(raw) => {
                Some(serde_json::from_str::<u64>(raw.get()).map_err(|_| {
                    format!("\"token\" must be the fencing token (a number), not {}", raw.get())
                })?)
            }
        },
    })
}

/// `client_id`: a string or a number (kept as its text); absent is `None`,
/// which the mutex commands answer with IdentyFire's "Missing client_id".
fn client_id(raw: Option<&RawValue>) -> Result<Option<String>, String> {
    match raw {
        None => Ok(None),
        Some(raw) if raw.get() == "null" => Ok(None),
        Some(raw) => match as_string(raw) {
            Some(text) if text.is_empty() => Ok(None),
            Some(text) if text.len() > 256 => Err("\"client_id\" is longer than 256 characters".into()),
            Some(text) => Ok(Some(text.into_owned())),
            None if raw.get().starts_with(|c: char| c == '-' || c.is_ascii_digit()) => {
                Ok(Some(raw.get().to_owned()))
            }
            None => Err(format!("\"client_id\" must be a string, not {}", json_type_name(raw.get()))),
        },
    }
}

fn optional_string(raw: Option<&RawValue>, name: &str) -> Result<Option<String>, String> {
    match raw {
        None => Ok(None),
        Some(raw) => as_string(raw)
            .map(|s| Some(s.into_owned()))
            .ok_or_else(|| format!("\"{name}\" must be a string, not {}", json_type_name(raw.get()))),
    }
}

/// `n` must be an integer in 0..=max_n; a missing `n` means the original's default.
fn parse_n(raw: Option<&RawValue>, limits: &Limits) -> Result<u64, String> {
    let out_of_range = |shown: &str| {
        format!("\"n\" must be an integer from 0 to {} (the server's --max-n), not {shown}", limits.max_n)
    };
    let n = match raw {
        None => DEFAULT_N,
        Some(raw) => serde_json::from_str::<u64>(raw.get()).map_err(|_| out_of_range(raw.get()))?,
    };
    if n > limits.max_n {
        return Err(out_of_range(&n.to_string()));
    }
    Ok(n)
}

/// Reads a JSON string, borrowing it when it has no escapes.
fn as_string(raw: &RawValue) -> Option<Cow<'_, str>> {
    serde_json::from_str::<&str>(raw.get())
        .map(Cow::Borrowed)
        .or_else(|_| serde_json::from_str::<String>(raw.get()).map(Cow::Owned))
        .ok()
}

/// Names the JSON type of a value from its first character, for error messages.
fn json_type_name(text: &str) -> &'static str {
    match text.as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        Some(b'-' | b'0'..=b'9') => "a number",
        _ => "a value of unknown type",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_n: 1_000_000, allow_chaos: false };
    const CHAOS: Limits = Limits { max_n: 1_000_000, allow_chaos: true };

    fn parse(text: &str) -> Result<Request<'_>, RequestError> {
        parse_request(text.as_bytes(), &LIMITS)
    }

    fn error_code(text: &str) -> ErrorCode {
        parse(text).expect_err(text).code
    }

    #[test]
    fn parses_the_original_compute_request() {
        let req = parse(r#"{"id": 7, "cmd": "compute", "n": 500000}"#).unwrap();
        assert_eq!(req.id.as_json(), "7");
        assert_eq!(req.command, Command::Compute { n: 500_000 });
        assert!(!req.timing);
    }

    #[test]
    fn a_missing_n_means_the_original_default() {
        let req = parse(r#"{"id":"a","cmd":"compute"}"#).unwrap();
        assert_eq!(req.command, Command::Compute { n: DEFAULT_N });
    }

    #[test]
    fn ids_are_kept_byte_for_byte() {
        for id in [r#""abc""#, "1.50", "123456789012345678901234567890", "-3", r#""\u00e9""#] {
            let text = format!(r#"{{"id":{id},"cmd":"ping"}}"#);
            let req = parse(&text).unwrap();
            assert_eq!(req.id.as_json(), id);
        }
    }

    #[test]
    fn other_commands_and_timing_are_recognised() {
        assert_eq!(parse(r#"{"id":1,"cmd":"ping"}"#).unwrap().command, Command::Ping);
        assert_eq!(parse(r#"{"id":1,"cmd":"stats"}"#).unwrap().command, Command::Stats);
        assert_eq!(parse(r#"{"id":1,"cmd":"health"}"#).unwrap().command, Command::Health);
        assert_eq!(parse(r#"{"id":1,"cmd":"p\u0069ng"}"#).unwrap().command, Command::Ping);
        assert!(parse(r#"{"id":1,"cmd":"ping","timing":true}"#).unwrap().timing);
        assert!(parse(r#"{"id":1,"cmd":"ping","extra":[1,{"x":2}]}"#).is_ok());
    }

    #[test]
    fn malformed_payloads_get_the_documented_codes() {
        let cases = [
            ("not json", ErrorCode::BadJson),
            (r#"{"id":1,"cmd":"ping""#, ErrorCode::BadJson),
            ("[1,2]", ErrorCode::BadRequest),
            ("42", ErrorCode::BadRequest),
            ("\"text\"", ErrorCode::BadRequest),
            (r#"{"cmd":"ping"}"#, ErrorCode::BadRequest),
            (r#"{"id":null,"cmd":"ping"}"#, ErrorCode::BadRequest),
            (r#"{"id":[1],"cmd":"ping"}"#, ErrorCode::BadRequest),
            (r#"{"id":{},"cmd":"ping"}"#, ErrorCode::BadRequest),
            (r#"{"id":1}"#, ErrorCode::BadRequest),
            (r#"{"id":1,"cmd":5}"#, ErrorCode::BadRequest),
            (r#"{"id":1,"cmd":"launch"}"#, ErrorCode::UnknownCommand),
            (r#"{"id":1,"cmd":"compute","n":-1}"#, ErrorCode::BadRequest),
            (r#"{"id":1,"cmd":"compute","n":1.5}"#, ErrorCode::BadRequest),
            (r#"{"id":1,"cmd":"compute","n":"10"}"#, ErrorCode::BadRequest),
            (r#"{"id":1,"cmd":"compute","n":1000001}"#, ErrorCode::BadRequest),
            (r#"{"id":1,"cmd":"compute","n":99999999999999999999999}"#, ErrorCode::BadRequest),
            (r#"{"id":1,"cmd":"ping","timing":"yes"}"#, ErrorCode::BadRequest),
            (r#"{"id":1,"id":2,"cmd":"ping"}"#, ErrorCode::BadRequest),
        ];
        for (text, code) in cases {
            assert_eq!(error_code(text), code, "{text}");
        }
    }

    #[test]
    fn chaos_commands_exist_only_with_allow_chaos() {
        for text in [
            r#"{"id":1,"cmd":"crash"}"#,
            r#"{"id":1,"cmd":"hang"}"#,
            r#"{"id":1,"cmd":"panic"}"#,
            r#"{"id":1,"cmd":"sleep","ms":5}"#,
        ] {
            let refused = parse_request(text.as_bytes(), &LIMITS).unwrap_err();
            assert_eq!(refused.code, ErrorCode::UnknownCommand, "{text}");
            let advertised = refused.message.split("knows").nth(1).unwrap_or_default();
            assert!(!advertised.contains("crash"), "chaos is not advertised: {}", refused.message);
            assert!(parse_request(text.as_bytes(), &CHAOS).is_ok(), "{text}");
        }
        let sleep = parse_request(br#"{"id":1,"cmd":"sleep","ms":250}"#, &CHAOS).unwrap();
        assert_eq!(sleep.command, Command::Chaos(Chaos::Sleep { ms: 250 }));
        for bad in [
            r#"{"id":1,"cmd":"sleep"}"#,
            r#"{"id":1,"cmd":"sleep","ms":-1}"#,
            r#"{"id":1,"cmd":"sleep","ms":3600001}"#,
        ] {
            assert_eq!(
                parse_request(bad.as_bytes(), &CHAOS).unwrap_err().code,
                ErrorCode::BadRequest,
                "{bad}"
            );
        }
    }

    #[test]
    fn auth_carries_a_string_token() {
        let auth = parse(r#"{"id":1,"cmd":"auth","token":"s3cret"}"#).unwrap();
        assert_eq!(auth.command, Command::Auth { token: "s3cret".into() });
        assert_eq!(error_code(r#"{"id":1,"cmd":"auth"}"#), ErrorCode::BadRequest);
        assert_eq!(error_code(r#"{"id":1,"cmd":"auth","token":5}"#), ErrorCode::BadRequest);
    }

    #[test]
    fn invalid_utf8_is_bad_json() {
        let err = parse_request(b"{\"id\":1,\"cmd\":\"\xff\"}", &LIMITS).unwrap_err();
        assert_eq!(err.code, ErrorCode::BadJson);
    }

    #[test]
    fn deeply_nested_json_never_overflows_the_stack() {
        let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        // In a field the server ignores, it is skipped without recursion.
        let ignored = format!(r#"{{"id":1,"cmd":"ping","x":{nested}}}"#);
        assert!(parse(&ignored).is_ok(), "nesting in an ignored field is harmless");
        // As a value the server reads, it is a clear error.
        let as_n = format!(r#"{{"id":1,"cmd":"compute","n":{nested}}}"#);
        assert_eq!(parse(&as_n).map_err(|e| e.code).unwrap_err(), ErrorCode::BadRequest);
        // As the whole request, it is valid JSON but not an object.
        assert_eq!(parse(&nested).map_err(|e| e.code).unwrap_err(), ErrorCode::BadRequest);
    }

    proptest::proptest! {
        /// Whatever bytes arrive, parsing answers (Ok or a clear error) and
        /// never panics; whatever it accepts is within the limits.
        #[test]
        fn arbitrary_payloads_never_panic(payload in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            match parse_request(&payload, &CHAOS) {
                Ok(request) => {
                    if let Command::Compute { n } = request.command {
                        proptest::prop_assert!(n <= CHAOS.max_n);
                    }
                }
                Err(e) => proptest::prop_assert!(!e.message.is_empty()),
            }
        }

        /// Valid-looking requests with random fields also never panic.
        #[test]
        fn arbitrary_json_requests_never_panic(id in "[0-9]{1,30}|\"[a-z]{0,8}\"|null|\\[\\]",
                                               cmd in "[a-z]{0,8}|ping|compute|sleep",
                                               n in "-?[0-9]{1,25}(\\.[0-9])?|\"x\"|null") {
            let text = format!(r#"{{"id":{id},"cmd":"{cmd}","n":{n},"ms":{n}}}"#);
            let _ = parse_request(text.as_bytes(), &CHAOS);
        }
    }

    #[test]
    fn errors_after_the_id_was_read_echo_the_id() {
        let err = parse(r#"{"id":"req-9","cmd":"compute","n":-5}"#).unwrap_err();
        assert_eq!(err.id.unwrap().as_json(), r#""req-9""#);
        assert_eq!(err.command, Some(CommandKind::Compute));
        assert!(err.message.contains("\"n\""), "{}", err.message);
    }
}
