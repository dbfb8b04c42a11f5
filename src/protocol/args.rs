//! A command's arguments, read from the request's fields: the same rules in
//! both dialects (a ThreadCenter request's top level, an IdentyFire call's
//! `params`). Every field is checked on its own, so a mistake is reported
//! with the field's name.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::request::{
    json_type_name, Chaos, Command, CommandKind, Holder, ImageArg, Limits, DEFAULT_N, MAX_BATCH_IMAGES,
    MAX_SLEEP_MS,
};

/// The fields we look at, as raw JSON text borrowed from the frame: the
/// top-level object of a ThreadCenter request, or the `params` object of an
/// IdentyFire call (which has no `id`, `cmd` or `method`). Other fields are
/// ignored, as the original servers ignored them.
///
/// A field set to `null` is *present* (`Some("null")`), not missing: serde
/// would otherwise read `null` as `None`, and `{"cmd":"compute","n":null}`
/// would quietly run the default `n`. Each field's reader then refuses the
/// `null` like any other wrong type, naming the field.
#[derive(Deserialize, Default)]
pub(super) struct Fields<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) cmd: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) method: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) params: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) n: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) timing: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) token: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) ms: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) image_b64: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) filename: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) images: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) client_id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) wait_ms: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) model_path: Option<&'a RawValue>,
}

/// Reads a field that is there, `null` included (see [`Fields`]).
fn present<'de, D: serde::Deserializer<'de>>(field: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(field).map(Some)
}

/// One entry of `images`.
#[derive(Deserialize)]
struct ImageFields<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) filename: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) image_b64: Option<&'a RawValue>,
}

/// Reads a command's arguments from its fields (the same in both dialects).
pub(super) fn build_command<'a>(
    kind: CommandKind,
    fields: &Fields<'a>,
    limits: &Limits,
) -> Result<Command<'a>, String> {
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
                    Some(raw) => Ok(as_string(raw).ok_or_else(|| {
                        format!("\"image_b64\" must be a string, not {}", json_type_name(raw.get()))
                    })?),
                },
            },
            holder: holder(fields)?,
        },
        CommandKind::PredictBatch => {
            Command::PredictBatch { images: parse_images(fields.images)?, holder: holder(fields)? }
        }
        CommandKind::Pacing => Command::Pacing {
            path: optional_string(fields.model_path, "model_path")?
                .ok_or("\"load_model\" needs \"model_path\": a file inside the server's --models-dir")?,
        },
        CommandKind::MutexAcquire => Command::MutexAcquire {
            client_id: client_id(fields.client_id)?,
            token: holder(fields)?.token,
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
            Ok(fields) => match optional_string(fields.filename, "filename") {
                Ok(filename) => ImageArg {
                    filename,
                    image_b64: match fields.image_b64 {
                        None => Err("no \"image_b64\" in this entry".into()),
                        Some(raw) => as_string(raw).ok_or_else(|| {
                            format!("\"image_b64\" must be a string, not {}", json_type_name(raw.get()))
                        }),
                    },
                },
                Err(message) => ImageArg { filename: None, image_b64: Err(message) },
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

/// The longest `client_id`, as a string or as a number's digits.
const MAX_CLIENT_ID: usize = 256;

/// `client_id`: a string or a number (kept as its text); absent, `null` or
/// empty is `None`, which the mutex commands answer with IdentyFire's
/// "Missing client_id" (its own reply for a `None` client id, kept so its
/// clients see what they always saw).
fn client_id(raw: Option<&RawValue>) -> Result<Option<String>, String> {
    let too_long = || format!("\"client_id\" is longer than {MAX_CLIENT_ID} characters");
    match raw {
        None => Ok(None),
        Some(raw) if raw.get() == "null" => Ok(None),
        Some(raw) => match as_string(raw) {
            Some(text) if text.is_empty() => Ok(None),
            Some(text) if text.len() > MAX_CLIENT_ID => Err(too_long()),
            Some(text) => Ok(Some(text.into_owned())),
            // A number is kept as its text, and bounded like a string: JSON
            // numbers have no length limit of their own.
            None if raw.get().starts_with(|c: char| c == '-' || c.is_ascii_digit()) => match raw.get() {
                digits if digits.len() > MAX_CLIENT_ID => Err(too_long()),
                digits => Ok(Some(digits.to_owned())),
            },
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
pub(super) fn as_string(raw: &RawValue) -> Option<Cow<'_, str>> {
    serde_json::from_str::<&str>(raw.get())
        .map(Cow::Borrowed)
        .or_else(|_| serde_json::from_str::<String>(raw.get()).map(Cow::Owned))
        .ok()
}
