//! `model`, `models`, `load_model`.

use super::{optional_string, Fields};
use crate::protocol::request::{Command, Limits};

/// `model` (IdentyFire: `get_current_model`): no arguments.
pub(crate) fn model<'a>(_: &Fields<'a>, _: &Limits) -> Result<Command<'a>, String> {
    Ok(Command::Model)
}

/// `models` (IdentyFire: `get_models`): no arguments.
pub(crate) fn models<'a>(_: &Fields<'a>, _: &Limits) -> Result<Command<'a>, String> {
    Ok(Command::Models)
}

/// `load_model`: `model_path`, a file inside the server's `--models-dir`.
pub(crate) fn load_model<'a>(fields: &Fields<'a>, _: &Limits) -> Result<Command<'a>, String> {
    Ok(Command::LoadModel {
        path: optional_string(fields.model_path, "model_path")?
            .ok_or("\"load_model\" needs \"model_path\": a file inside the server's --models-dir")?,
    })
}
