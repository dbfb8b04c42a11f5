//! The IdentyFire dialect: `{"method", "params"}` calls and their replies.
//!
//! This file reads the calls; their reply shapes are in [`super::reply`]
//! (`encode_rpc`, `encode_rpc_error`).
//!
//! IdentyFire's clients send `{"method": "predict_image", "params": {...}}`
//! and read `{"success": true, ...}` or `{"success": false, "error": "..."}`:
//! no id, no error code. Its methods are parsed into the very same
//! [`super::Command`]s as ThreadCenter requests (so they pass the same checks and
//! run the same jobs); only the envelope and the shape of the answers differ.

use serde_json::value::RawValue;

use super::request::args::{as_string, Fields};
use super::request::{ClientId, Command, CommandKind, Dialect, Limits, Request, RequestError};
use super::{ErrorCode, ReplyError};

/// IdentyFire's method names, and the commands they are.
pub(crate) const METHODS: [(&str, CommandKind); 8] = [
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
pub(crate) fn command_for(method: &str) -> Option<CommandKind> {
    METHODS.iter().find(|(name, _)| *name == method).map(|(_, kind)| *kind)
}

/// An IdentyFire call: `{"method": "...", "params": {...}}`.
pub(super) fn parse_call<'a>(
    method: &'a RawValue,
    params: Option<&'a RawValue>,
    limits: &Limits,
) -> Result<Request<'a>, RequestError> {
    let fail = |code, message: String, command| RequestError {
        id: None,
        error: ReplyError::new(code, message),
        command,
        dialect: Dialect::IdentyFire,
    };
    let name = as_string(method)
        .ok_or_else(|| fail(ErrorCode::BadRequest, "\"method\" must be a string".into(), None))?;
    let kind = command_for(&name).ok_or_else(|| {
        let known: Vec<&str> = METHODS.iter().map(|(m, _)| *m).collect();
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
    let command = Command::read(kind, &fields, limits)
        .map_err(|message| fail(ErrorCode::BadRequest, message, Some(kind)))?;
    // IdentyFire replies carry no id; `null` stands in where one is needed.
    Ok(Request { id: ClientId::null(), command, timing: false, dialect: Dialect::IdentyFire })
}
