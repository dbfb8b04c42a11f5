//! A command's arguments, read from the request's fields: the same rules in
//! both dialects (a ThreadCenter request's top level, an IdentyFire call's
//! `params`). Every field is checked on its own, so a mistake is reported
//! with the field's name.
//!
//! One file per family, as in `server::cmd`; each command's reader is named
//! in the command table ([`super::Command`]). This file holds the
//! fields and the readers several families share.
//!
//! | file | reads the arguments of |
//! |---|---|
//! | [`observe`] | `ping`, `stats`, `health` (none) |
//! | [`auth`] | `auth` |
//! | [`compute`] | `compute` and the chaos commands |
//! | [`predict`] | `predict`, `predict_batch` |
//! | [`models`] | `model`, `models`, `load_model` |
//! | [`mutex`] | `mutex_acquire`, `mutex_release` |

pub(crate) mod auth;
pub(crate) mod compute;
pub(crate) mod models;
pub(crate) mod mutex;
pub(crate) mod observe;
pub(crate) mod predict;

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{json_type_name, Holder};

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
pub(crate) struct Fields<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    pub(in crate::protocol) id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(in crate::protocol) cmd: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(in crate::protocol) method: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(in crate::protocol) params: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(in crate::protocol) n: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(in crate::protocol) timing: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(in crate::protocol) token: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(in crate::protocol) ms: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(in crate::protocol) image_b64: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(in crate::protocol) filename: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(in crate::protocol) images: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(in crate::protocol) client_id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(in crate::protocol) wait_ms: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(in crate::protocol) model_path: Option<&'a RawValue>,
}

/// Reads a field that is there, `null` included (see [`Fields`]).
pub(in crate::protocol) fn present<'de, D: serde::Deserializer<'de>>(
    field: D,
) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(field).map(Some)
}

/// The lock holder's claim: `client_id` and the grant's `token`.
pub(in crate::protocol) fn holder(fields: &Fields<'_>) -> Result<Holder, String> {
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
pub(in crate::protocol) fn client_id(raw: Option<&RawValue>) -> Result<Option<String>, String> {
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

/// A field that, when there, must be a string.
pub(in crate::protocol) fn optional_string(
    raw: Option<&RawValue>,
    name: &str,
) -> Result<Option<String>, String> {
    match raw {
        None => Ok(None),
        Some(raw) => as_string(raw)
            .map(|s| Some(s.into_owned()))
            .ok_or_else(|| format!("\"{name}\" must be a string, not {}", json_type_name(raw.get()))),
    }
}

/// Reads a JSON string, borrowing it when it has no escapes.
pub(in crate::protocol) fn as_string(raw: &RawValue) -> Option<Cow<'_, str>> {
    serde_json::from_str::<&str>(raw.get())
        .map(Cow::Borrowed)
        .or_else(|_| serde_json::from_str::<String>(raw.get()).map(Cow::Owned))
        .ok()
}
