//! `tc-client predict IMAGE...`: classify image files with a server's model.
//!
//! One file goes as one `predict` request, several as one `predict_batch`
//! (the server decodes a batch's images in parallel). The request is built
//! here, from the files, so a 270 KB image never has to fit on a command
//! line; the reply is printed as one line per file, or as it came with
//! `--json`.

use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::protocol::MAX_BATCH_IMAGES;

/// The request for `paths`: `predict` for one file, `predict_batch` for
/// several. Each image carries its file name, as IdentyFire's clients send.
///
/// # Errors
/// A file that cannot be read (named), or more files than one batch holds.
pub(crate) fn request_for(paths: &[PathBuf]) -> Result<Value> {
    if paths.len() > MAX_BATCH_IMAGES {
        return Err(Error::Usage(format!(
            "{} images given; predict sends them as one predict_batch, which holds at most {MAX_BATCH_IMAGES}",
            paths.len()
        )));
    }
    let mut images = Vec::with_capacity(paths.len());
    for path in paths {
        let bytes =
            std::fs::read(path).map_err(|e| Error::input(path, format!("cannot read the image: {e}")))?;
        images.push(json!({
            "filename": file_name(path),
            "image_b64": base64::engine::general_purpose::STANDARD.encode(bytes),
        }));
    }
    Ok(match images.as_mut_slice() {
        [one] => {
            let mut request = one.take();
            request["cmd"] = json!("predict");
            request
        }
        _ => json!({"cmd": "predict_batch", "images": images}),
    })
}

/// The reply in words, one line per file, and whether every file was
/// classified (an error reply, or a batch entry in `errors`, is a failure).
pub(crate) fn describe(paths: &[PathBuf], reply: &Value) -> (String, bool) {
    if let Some(error) = reply.get("error") {
        let message = error["message"].as_str().unwrap_or("(no message)");
        let code = error["code"].as_str().unwrap_or("ERROR");
        let name = match paths {
            [one] => one.display().to_string(),
            _ => "predict_batch".to_string(),
        };
        return (format!("{name}: {code}: {message}\n"), false);
    }
    let result = &reply["result"];
    if paths.len() == 1 {
        return (format!("{}: {}\n", paths[0].display(), verdict(result)), true);
    }
    // A batch lists each image by its index in the request, classified or not.
    let mut lines: Vec<(u64, String)> = Vec::new();
    for entry in result["results"].as_array().into_iter().flatten() {
        lines.push((entry["index"].as_u64().unwrap_or(u64::MAX), verdict(entry)));
    }
    let mut all_ok = true;
    for entry in result["errors"].as_array().into_iter().flatten() {
        all_ok = false;
        let message = entry["error"].as_str().unwrap_or("(no message)");
        lines.push((entry["index"].as_u64().unwrap_or(u64::MAX), format!("error: {message}")));
    }
    lines.sort_by_key(|(index, _)| *index);
    let mut text = String::new();
    for (index, line) in lines {
        let name = usize::try_from(index)
            .ok()
            .and_then(|i| paths.get(i))
            .map_or_else(|| format!("image #{index}"), |path| path.display().to_string());
        text.push_str(&format!("{name}: {line}\n"));
    }
    (text, all_ok)
}

/// `fire (score 0.973, confidence 97.3%)` for one classified image.
fn verdict(result: &Value) -> String {
    let label = if result["fire_detected"] == true { "fire" } else { "no fire" };
    let score = result["raw_score"].as_f64().unwrap_or(f64::NAN);
    let confidence = result["confidence"].as_f64().unwrap_or(f64::NAN);
    format!("{label} (score {score:.3}, confidence {confidence:.1}%)")
}

/// The file's name without its directory (what IdentyFire's clients send).
fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |name| name.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_file_in_the_order_given_with_errors_in_place() {
        let paths: Vec<PathBuf> = ["a.png", "b.txt", "c.jpg"].map(PathBuf::from).to_vec();
        let reply = json!({"id": 1, "result": {
            "results": [
                {"index": 2, "filename": "c.jpg", "fire_detected": false, "confidence": 90.0, "raw_score": 0.1},
                {"index": 0, "filename": "a.png", "fire_detected": true, "confidence": 97.25, "raw_score": 0.9725},
            ],
            "errors": [{"index": 1, "filename": "b.txt", "error": "not a PNG, JPEG, BMP or GIF"}],
            "fires_detected": 1,
        }});
        let (text, ok) = describe(&paths, &reply);
        assert_eq!(
            text,
            "a.png: fire (score 0.973, confidence 97.2%)\n\
             b.txt: error: not a PNG, JPEG, BMP or GIF\n\
             c.jpg: no fire (score 0.100, confidence 90.0%)\n"
        );
        assert!(!ok, "an image in errors is a failure");
    }

    #[test]
    fn an_error_reply_names_the_file_and_the_code() {
        let paths = vec![PathBuf::from("x.png")];
        let reply = json!({"id": 1, "error": {"code": "BAD_IMAGE", "message": "cannot decode"}});
        assert_eq!(describe(&paths, &reply), ("x.png: BAD_IMAGE: cannot decode\n".to_string(), false));
    }
}
