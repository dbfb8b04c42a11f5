//! `predict` and `predict_batch`: the images, and the lock holder's claim.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{as_string, holder, optional_string, present, Fields};
use crate::protocol::request::{json_type_name, Command, ImageArg, Limits, MAX_BATCH_IMAGES};

/// `predict`: one `image_b64` (and its `filename`).
pub(crate) fn predict<'a>(fields: &Fields<'a>, _: &Limits) -> Result<Command<'a>, String> {
    Ok(Command::Predict {
        image: ImageArg {
            filename: optional_string(fields.filename, "filename")?,
            image_b64: match fields.image_b64 {
                None => return Err("\"predict\" needs \"image_b64\": the image file, base64-encoded".into()),
                Some(raw) => Ok(as_string(raw).ok_or_else(|| {
                    format!("\"image_b64\" must be a string, not {}", json_type_name(raw.get()))
                })?),
            },
        },
        holder: holder(fields)?,
    })
}

/// `predict_batch`: `images`.
pub(crate) fn predict_batch<'a>(fields: &Fields<'a>, _: &Limits) -> Result<Command<'a>, String> {
    Ok(Command::PredictBatch { images: parse_images(fields.images)?, holder: holder(fields)? })
}

/// One entry of `images`.
#[derive(Deserialize)]
struct ImageFields<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    filename: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    image_b64: Option<&'a RawValue>,
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
