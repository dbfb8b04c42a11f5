//! **Shared wire layer** — the protocol: typed requests and replies, and the
//! error codes. Both sides use it: the server to read requests and write
//! replies, the client to write requests and read replies, and a worker to
//! return results.
//!
//! Framing (bytes ↔ frames) lives in [`crate::frame`]; this module turns a
//! frame's JSON payload into a [`Request`] and builds the JSON of every
//! reply. It is pure: no sockets, no threads, no clocks.
//!
//! | file | owns |
//! |---|---|
//! | [`request`] | the request types: [`Request`], [`Command`], [`CommandKind`], limits |
//! | [`parse`] | bytes → [`Request`], with an error that still echoes the id |
//! | [`identyfire`] | IdentyFire's `{"method","params"}` calls and its method names |
//! | [`request::args`] | a command's arguments, read field by field (both dialects) |
//! | [`job_result`] | what a worker sends back: [`JobOutput`], predictions |
//! | [`reply`] | every reply frame, in both dialects, job replies included |
//! | [`mode`] | [`Mode`]: worker processes or worker threads |
//! | [`error_code`] | [`ErrorCode`] and [`ReplyError`], the one code + message pair |
//!
//! Requests are objects `{"id": <string or number>, "cmd": "<name>", ...}`,
//! compatible with the original Python ThreadCenter. The `id` is echoed back
//! byte for byte, so a client can use any id scheme it likes.

pub mod error_code;
pub(crate) mod identyfire;
pub(crate) mod job_result;
pub(crate) mod mode;
pub mod parse;
pub(crate) mod reply;
pub mod request;

pub use error_code::{ErrorCode, ReplyError};
pub(crate) use job_result::{ImageOutcome, JobOutput, JobResult, Prediction};
pub(crate) use mode::Mode;
pub use parse::parse_request;
pub(crate) use reply::{
    encode_error, encode_error_in, encode_job_reply, encode_pong, encode_result, encode_rpc, ReplyExtras,
    Timing,
};
pub(crate) use request::{
    Chaos, CommandKind, Dialect, Holder, ImageArg, DEFAULT_N, MAX_BATCH_IMAGES, MAX_MUTEX_WAIT_MS,
};
// The longest chaos sleep: worker hosts (the `nats` feature) bound theirs too.
#[cfg(feature = "nats")]
pub(crate) use request::MAX_SLEEP_MS;
pub use request::{ClientId, Command, Limits, Request, RequestError};
