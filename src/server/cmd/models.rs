//! `model`, `models` and `load_model` (IdentyFire: `get_current_model`,
//! `get_models`, `load_model`): the served model, answered by the reader
//! thread from the [`crate::server::models`] catalog.

use crate::protocol::{ErrorCode, ReplyError, Request};
use crate::server::session::Session;

/// `model`: the current model's info, threshold and name — and, for
/// IdentyFire's GUI client (`client_gui.py` reads `response["model"]["name"]`
/// to refresh its model status), the `model` object IdentyFire replied with:
/// `{"name", "info", "loaded": true}`.
pub(crate) fn describe(session: &mut Session<'_>, request: &Request<'_>) {
    let farm = session.farm;
    let Some(info) = farm.models.current() else {
        let message = "no model is loaded: start the server with --model, or call load_model";
        return session.refuse(request, ReplyError::new(ErrorCode::ModelUnavailable, message));
    };
    let mut body = serde_json::to_value(&info).expect("model info serializes");
    body["threshold"] = farm.config.threshold.into();
    body["model_name"] = info.name.clone().into();
    let summary = format!(
        "{}: {}x{}x{} input, {} layers, {} parameters",
        info.name,
        info.input_shape[0],
        info.input_shape[1],
        info.input_shape[2],
        info.layers.len(),
        info.parameters
    );
    body["model"] = serde_json::json!({"name": info.name, "info": summary, "loaded": true});
    session.reply_ok(request, body);
}

/// `models`: the model files in `--models-dir`, and the current one.
pub(crate) fn list(session: &mut Session<'_>, request: &Request<'_>) {
    let farm = session.farm;
    let body = serde_json::json!({
        "models": farm.models.list(),
        "current": farm.models.current().map(|m| m.name),
        "models_dir": farm.models.dir(),
    });
    session.reply_ok(request, body);
}

/// `load_model`: switches to another file inside `--models-dir`.
pub(crate) fn load(session: &mut Session<'_>, request: &Request<'_>, path: &str) {
    match session.farm.models.load(path) {
        Ok(info) => {
            let body = serde_json::json!({"model_name": info.name, "sha256": info.sha256, "path": info.path});
            session.reply_ok(request, body);
        }
        Err(error) => session.refuse(request, error),
    }
}
