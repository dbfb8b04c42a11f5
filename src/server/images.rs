//! From the base64 text in a request to the bytes a worker decodes.
//!
//! The reader thread does only the cheap part: base64 to bytes, written once
//! into the buffer that travels to the worker (shared memory in process
//! mode, see [`ImageData`](crate::work::job::ImageData)). Everything expensive — image decoding,
//! resizing, the network — happens on the worker.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, Engine};

use crate::protocol::{ErrorCode, ImageArg, ReplyError};
use crate::work::job::{ImageBatch, ImageBuffer, ImageItem};

/// Standard base64, with or without `=` padding (clients differ).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The images of a request, ready for a job.
pub(super) struct DecodedImages {
    /// The bytes and where each image lies.
    pub(crate) batch: ImageBatch,
    /// The first image refused here, with its error code (a single
    /// `predict` is answered with it at once).
    pub(crate) first_error: Option<ReplyError>,
}

/// Decodes every image's base64 into one buffer. An image that is not valid
/// base64, is empty, or is larger than `max_bytes` is marked with the reason
/// and takes no room; the others are unaffected.
pub(super) fn decode_images(images: &[ImageArg<'_>], max_bytes: usize, shared: bool) -> DecodedImages {
    // First pass: sizes and refusals, so the buffer is allocated once.
    let mut first_error = None;
    let mut refuse = |code: ErrorCode, message: String| -> String {
        first_error.get_or_insert_with(|| ReplyError::new(code, message.clone()));
        message
    };
    let planned: Vec<Result<(&str, usize), String>> = images
        .iter()
        .map(|image| match &image.image_b64 {
            Err(message) => Err(refuse(ErrorCode::BadRequest, message.clone())),
            Ok(text) => {
                let text = text.trim_end_matches('=');
                // Four base64 characters carry three bytes.
                let len = text.len() / 4 * 3 + (text.len() % 4 * 3) / 4;
                if len == 0 {
                    Err(refuse(ErrorCode::BadImage, "\"image_b64\" is empty".into()))
                } else if len > max_bytes {
                    Err(refuse(
                        ErrorCode::ImageTooLarge,
                        format!("the image is {len} bytes; this server accepts at most {max_bytes} (--max-image-bytes)"),
                    ))
                } else {
                    Ok((text, len))
                }
            }
        })
        .collect();
    let total: usize = planned.iter().filter_map(|p| p.as_ref().ok()).map(|(_, len)| len).sum();
    let mut data = ImageBuffer::zeroed(total, shared && total > 0);
    let buffer = data.fill();
    let mut offset = 0;
    let mut items = Vec::with_capacity(images.len());
    for (image, plan) in images.iter().zip(planned) {
        let span = plan.and_then(|(text, len)| {
            let target = &mut buffer[offset..offset + len];
            match BASE64.decode_slice(text, target) {
                Ok(written) if written == len => {
                    offset += len;
                    Ok((offset - len, len))
                }
                Ok(_) => Err(refuse(ErrorCode::BadImage, "\"image_b64\" is not valid base64".into())),
                Err(e) => Err(refuse(ErrorCode::BadImage, format!("\"image_b64\" is not valid base64: {e}"))),
            }
        });
        items.push(ImageItem { filename: image.filename.clone(), span });
    }
    DecodedImages { batch: ImageBatch { data: data.into_data(), items }, first_error }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::work::job::ImageData;
    use std::borrow::Cow;

    fn arg(text: &str) -> ImageArg<'_> {
        ImageArg { filename: Some("f".into()), image_b64: Ok(Cow::Borrowed(text)) }
    }

    #[test]
    fn good_and_bad_images_are_told_apart() {
        // "hello" = aGVsbG8= ; "hi" = aGk (unpadded)
        let images = [arg("aGVsbG8="), arg("not base64!"), arg("aGk"), arg(""), arg("aGVsbG8gd29ybGQ=")];
        let decoded = decode_images(&images, 8, false);
        let items = &decoded.batch.items;
        let bytes = decoded.batch.data.bytes();
        let (o, l) = items[0].span.clone().unwrap();
        assert_eq!(&bytes[o..o + l], b"hello");
        assert!(items[1].span.as_ref().unwrap_err().contains("base64"));
        let (o, l) = items[2].span.clone().unwrap();
        assert_eq!(&bytes[o..o + l], b"hi");
        assert!(items[3].span.as_ref().unwrap_err().contains("empty"));
        assert!(items[4].span.as_ref().unwrap_err().contains("--max-image-bytes"));
        assert_eq!(decoded.first_error.unwrap().code, ErrorCode::BadImage);
    }

    #[test]
    fn process_mode_writes_into_shared_memory() {
        let decoded = decode_images(&[arg("aGVsbG8=")], 100, true);
        assert!(matches!(decoded.batch.data, ImageData::Shared(_)));
        assert_eq!(decoded.batch.data.bytes(), b"hello");
    }
}
