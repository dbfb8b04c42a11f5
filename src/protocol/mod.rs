//! The wire protocol: typed requests and replies, and the error codes.
//!
//! Framing (bytes ↔ frames) lives in [`crate::frame`]; this module turns a
//! frame's JSON payload into a [`Request`] and builds the JSON of every
//! reply. It is pure: no sockets, no threads, no clocks.
//!
//! Requests are objects `{"id": <string or number>, "cmd": "<name>", ...}`,
//! compatible with the original Python ThreadCenter. The `id` is echoed back
//! byte for byte, so a client can use any id scheme it likes.

mod error_code;
mod reply;
mod request;

pub use error_code::ErrorCode;
pub use reply::{
    encode_error, encode_error_in, encode_job_error, encode_pong, encode_predictions, encode_result,
    encode_rpc, encode_rpc_error, ReplyExtras, Timing,
};
pub use request::{
    parse_request, Chaos, ClientId, Command, CommandKind, Dialect, Holder, ImageArg, Limits, Request,
    RequestError, MAX_BATCH_IMAGES,
};
