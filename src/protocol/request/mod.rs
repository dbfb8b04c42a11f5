//! The request types: what a client can ask, after parsing, with the
//! command table and (in [`args`]) each command's argument readers.
//!
//! These are plain data borrowed from the frame they came from; turning
//! bytes into them is [`super::parse`]'s job, and IdentyFire's method names
//! live in [`super::identyfire`].

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::ReplyError;

pub(crate) mod args;

/// `n` of a `compute` request that does not say: the original's default.
pub(crate) const DEFAULT_N: u64 = 1_000_000;

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
    pub(crate) fn from_json(raw: &RawValue) -> Result<Self, String> {
        let text = raw.get();
        match text.as_bytes().first() {
            Some(b'"' | b'-' | b'0'..=b'9') => Ok(ClientId(raw.to_owned())),
            _ => Err(format!("\"id\" must be a string or a number, not {}", json_type_name(text))),
        }
    }

    /// `null`: the id of a call that has none (IdentyFire's).
    pub(crate) fn null() -> Self {
        ClientId(RawValue::from_string("null".into()).expect("null is JSON"))
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

/// Declares every command once, in one table: its variant of [`Command`]
/// (with its arguments), its [`CommandKind`], its wire name, and the
/// function of [`args`] that reads its arguments from a request's
/// fields. [`Command`], [`CommandKind`], [`CommandKind::ALL`],
/// [`CommandKind::as_str`], [`Command::kind`] and [`Command::read`] are all
/// derived from it, so adding a command is one row here, its reader, and its
/// handler in `server::cmd` — there is no list to keep in step.
macro_rules! commands {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident $({ $($(#[doc = $field_doc:literal])* $field:ident: $type:ty),* $(,)? })?
            = $wire:literal => $reader:path;
    )*) => {
        /// The commands of the ThreadCenter protocol (IdentyFire's methods
        /// map onto the same commands; see [`super::identyfire`]).
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Command<'a> {
            $(
                $(#[doc = $doc])*
                $variant $({ $($(#[doc = $field_doc])* $field: $type),* })?,
            )*
        }

        /// The kind of a command without its arguments, for counting requests.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum CommandKind {
            $(
                #[doc = concat!("`", $wire, "`")]
                $variant,
            )*
        }

        impl CommandKind {
            /// Every kind, in the table's order (used to index counters).
            pub(crate) const ALL: [CommandKind; [$($wire),*].len()] = [$(CommandKind::$variant),*];

            /// The command's wire name.
            pub(crate) fn as_str(self) -> &'static str {
                match self {
                    $(CommandKind::$variant => $wire,)*
                }
            }
        }

        impl<'a> Command<'a> {
            /// The command's kind, without its arguments.
            pub(crate) fn kind(&self) -> CommandKind {
                match self {
                    $(Command::$variant { .. } => CommandKind::$variant,)*
                }
            }

            /// Reads the arguments of a `kind` command from a request's
            /// fields (the same in both dialects).
            pub(super) fn read(
                kind: CommandKind,
                fields: &args::Fields<'a>,
                limits: &Limits,
            ) -> Result<Command<'a>, String> {
                match kind {
                    $(CommandKind::$variant => $reader(fields, limits),)*
                }
            }
        }
    };
}

commands! {
    /// Answered by the connection's own thread, without a worker.
    Ping = "ping" => args::observe::ping;
    /// Run the original CPU-bound job for `n` steps on a worker.
    Compute {
        /// Number of steps (validated against [`Limits::max_n`]).
        n: u64,
    } = "compute" => args::compute::compute;
    /// The server's counters, workers and latency percentiles.
    Stats = "stats" => args::observe::stats;
    /// Whether the server is fit to serve (status, workers alive vs
    /// configured). IdentyFire: `health_check`.
    Health = "health" => args::observe::health;
    /// Authenticate the connection (`--auth-token`): `{"cmd":"auth","token":"..."}`.
    Auth {
        /// The shared secret.
        token: String,
    } = "auth" => args::auth::auth;
    /// Chaos (only with `--allow-chaos`): the worker dies.
    Crash = "crash" => args::compute::crash;
    /// Chaos: the worker never answers.
    Hang = "hang" => args::compute::hang;
    /// Chaos: the worker sleeps `ms` milliseconds, then answers.
    Sleep {
        /// Milliseconds, at most [`MAX_SLEEP_MS`].
        ms: u64,
    } = "sleep" => args::compute::sleep;
    /// Chaos: the job panics.
    Panic = "panic" => args::compute::panic;
    /// Run the fire detector on one image. IdentyFire: `predict_image`.
    Predict {
        /// The image.
        image: ImageArg<'a>,
        /// The lock holder's claim (needed with `--predict-lock`, and always
        /// for IdentyFire).
        holder: Holder,
    } = "predict" => args::predict::predict;
    /// Run the fire detector on several images as one batch.
    PredictBatch {
        /// The images (at least one, at most [`MAX_BATCH_IMAGES`]).
        images: Vec<ImageArg<'a>>,
        /// As for `Predict`.
        holder: Holder,
    } = "predict_batch" => args::predict::predict_batch;
    /// Describe the current model. IdentyFire: `get_current_model`.
    Model = "model" => args::models::model;
    /// List the model files in `--models-dir`. IdentyFire: `get_models`.
    Models = "models" => args::models::models;
    /// Switch to another model file inside `--models-dir`.
    LoadModel {
        /// A path relative to `--models-dir`.
        path: String,
    } = "load_model" => args::models::load_model;
    /// Ask for the accelerator mutex.
    MutexAcquire {
        /// Who asks.
        client_id: Option<String>,
        /// The token of the grant it renews (native clients renew with it).
        token: Option<u64>,
        /// How long to wait on the server for the grant (0 = answer at once).
        wait_ms: u64,
    } = "mutex_acquire" => args::mutex::acquire;
    /// Give the accelerator mutex back.
    MutexRelease {
        /// Who gives it back, and under which grant.
        holder: Holder,
    } = "mutex_release" => args::mutex::release;
}

/// Faults a worker can be asked to commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Chaos {
    /// Die at once (`abort`). In a worker process this kills that process;
    /// in thread mode it kills the whole server — which is the lesson.
    Crash,
    /// Never finish (until the job timeout has the worker replaced).
    Hang,
    /// Sleep this many milliseconds, then answer.
    Sleep {
        /// Milliseconds.
        ms: u64,
    },
    /// Panic. A worker thread catches it (INTERNAL); a worker process dies.
    Panic,
}

/// The longest `wait_ms` of a `mutex_acquire` the server honours (one
/// minute); a longer wait is cut to this.
pub(crate) const MAX_MUTEX_WAIT_MS: u64 = 60_000;

/// The most images one `predict_batch` may carry.
pub(crate) const MAX_BATCH_IMAGES: usize = 256;

impl CommandKind {
    /// Whether this is a fault-injection command (`--allow-chaos` only).
    pub(crate) fn is_chaos(self) -> bool {
        matches!(self, CommandKind::Crash | CommandKind::Hang | CommandKind::Sleep | CommandKind::Panic)
    }

    /// Looks a wire name up.
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// Position of this kind in [`CommandKind::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
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
pub(crate) const MAX_SLEEP_MS: u64 = 3_600_000;

/// A request that cannot be served, as it will be reported to the client.
#[derive(Debug, PartialEq)]
pub struct RequestError {
    /// The request's id when it could be read, otherwise `null` in the reply.
    pub id: Option<ClientId>,
    /// What is wrong, as the error reply will say it.
    pub error: ReplyError,
    /// The command, when it was recognised (for per-command counters).
    pub command: Option<CommandKind>,
    /// How to answer.
    pub dialect: Dialect,
}

/// Names the JSON type of a value from its first character, for error messages.
pub(crate) fn json_type_name(text: &str) -> &'static str {
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
