//! From the bytes of an image file to the network's input tensor, as
//! IdentyFire prepared it: RGB, resized to the input size, pixels × 1/255.
//!
//! This runs on the worker, never on a connection's reader thread: decoding
//! a large JPEG takes milliseconds, and a reader that spends them is a
//! reader that does not read.

use std::io::Cursor;

use fast_image_resize::{
    images::Image, images::ImageRef, FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer,
};
use image::ImageFormat;
use ndarray::Array3;

/// Bounds on what a decoder may do with untrusted bytes. A 50 kB PNG can
/// claim to be 100,000 × 100,000 pixels; without these, decoding it would
/// try to allocate 40 GB.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ImageLimits {
    /// Widest and tallest image accepted, in pixels.
    pub(crate) max_side: u32,
    /// Most memory the decoder may allocate, in bytes.
    pub(crate) max_alloc: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits { max_side: 8192, max_alloc: 256 * 1024 * 1024 }
    }
}

/// Why an image could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ImageError {
    /// Zero bytes.
    #[error("the image is empty")]
    Empty,
    /// Not a format we decode (or not an image at all).
    #[error("not a PNG, JPEG, BMP or GIF image (the first bytes are {0})")]
    UnknownFormat(String),
    /// The decoder failed or a limit was hit.
    #[error("cannot decode the {format} image: {reason}")]
    Decode {
        /// The format it claimed to be.
        format: &'static str,
        /// The decoder's words.
        reason: String,
    },
}

/// Decodes an image file and prepares it for a `[height, width, 3]` input.
///
/// # Errors
/// When the bytes are not a supported image, or break the limits.
pub(crate) fn decode_image(
    bytes: &[u8],
    [height, width, channels]: [usize; 3],
    scale: f32,
    limits: ImageLimits,
) -> Result<Array3<f32>, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    // Only the four formats IdentyFire accepted; anything else, including a
    // text file, is refused before any decoder sees it.
    let format = match image::guess_format(bytes) {
        Ok(f @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Bmp | ImageFormat::Gif)) => f,
        _ => {
            let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
            return Err(ImageError::UnknownFormat(head.join(" ")));
        }
    };
    let format_name = match format {
        ImageFormat::Png => "PNG",
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Bmp => "BMP",
        _ => "GIF",
    };
    let fail = |reason: String| ImageError::Decode { format: format_name, reason };
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_image_width = Some(limits.max_side);
    decoder_limits.max_image_height = Some(limits.max_side);
    decoder_limits.max_alloc = Some(limits.max_alloc);
    reader.limits(decoder_limits);
    let decoded = reader.decode().map_err(|e| fail(e.to_string()))?;
    if channels != 3 {
        return Err(fail(format!("the model wants {channels} channels; only RGB models are supported")));
    }
    let rgb = decoded.into_rgb8();
    let (w, h) = (width as u32, height as u32);
    let raw =
        if rgb.dimensions() == (w, h) { rgb.into_raw() } else { resize_rgb(&rgb, w, h).map_err(fail)? };
    let pixels: Vec<f32> = raw.into_iter().map(|v| f32::from(v) * scale).collect();
    Ok(Array3::from_shape_vec((height, width, 3), pixels).expect("RGB buffer of the input size"))
}

/// Resizes RGB pixels to `width` × `height`: bilinear, like most image
/// pipelines (Keras's load_img defaults to nearest; bilinear is kinder to
/// downscaled photos, and is Pillow's `BILINEAR`), with SIMD convolution.
fn resize_rgb(rgb: &image::RgbImage, width: u32, height: u32) -> Result<Vec<u8>, String> {
    let (from_width, from_height) = rgb.dimensions();
    let source =
        ImageRef::new(from_width, from_height, rgb.as_raw(), PixelType::U8x3).map_err(|e| e.to_string())?;
    let mut resized = Image::new(width, height, PixelType::U8x3);
    let bilinear = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    Resizer::new().resize(&source, &mut resized, &bilinear).map_err(|e| e.to_string())?;
    Ok(resized.into_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: [usize; 3] = [150, 150, 3];

    fn png(width: u32, height: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([x as u8, y as u8, 200]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn images_are_resized_and_scaled() {
        let input = decode_image(&png(300, 100), SHAPE, 1.0 / 255.0, ImageLimits::default()).unwrap();
        assert_eq!(input.dim(), (150, 150, 3));
        assert!(input.iter().all(|v| (0.0..=1.0).contains(v)));
        assert!((input[[0, 0, 2]] - 200.0 / 255.0).abs() < 1e-6);
    }

    #[test]
    fn non_images_and_bombs_get_clear_errors() {
        let limits = ImageLimits::default();
        assert_eq!(decode_image(b"", SHAPE, 1.0, limits), Err(ImageError::Empty));
        let text = decode_image(b"hello, I am a text file", SHAPE, 1.0, limits).unwrap_err();
        assert!(matches!(text, ImageError::UnknownFormat(_)), "{text}");
        let mut truncated = png(50, 50);
        truncated.truncate(60);
        assert!(matches!(decode_image(&truncated, SHAPE, 1.0, limits), Err(ImageError::Decode { .. })));
        let tight = ImageLimits { max_side: 64, ..limits };
        let too_big = decode_image(&png(100, 10), SHAPE, 1.0, tight).unwrap_err();
        assert!(too_big.to_string().contains("PNG"), "{too_big}");
    }
}
