//! The native transform: source bytes + spec -> output bytes. Synchronous and
//! CPU-bound: it runs on the blocking pool, never on a reactor thread.
//!
//! Pipeline: sniff the format; read the header only (dimensions, EXIF orientation)
//! and refuse sources over the pixel limits before anything is decoded; plan the
//! geometry (fit, gravity, rotation); decode (JPEG with mozjpeg and DCT
//! shrink-on-load to at least twice the target size, others with `image`); apply the
//! orientation; crop and resize with `fast_image_resize` (Lanczos3); pad; sharpen;
//! encode (mozjpeg fastest settings + optimized Huffman tables, lossy libwebp, PNG).
//! Every codec call sits behind `catch_unwind` (mozjpeg reports errors by unwinding).

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};

use fast_image_resize as fir;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage, RgbaImage};

use super::Spec;

mod encode;
mod pixels;
mod plan;

use encode::encode;
use pixels::{compose, resize, sharpen, swaps, Pixels};
use plan::{plan, too_big, Plan};

/// Largest width or height accepted, in and out (WebP's own maximum is 16383).
pub const MAX_SIDE: u32 = 16383;

/// Hard limits of one transform.
#[derive(Debug, Clone, Copy)]
pub struct TransformLimits {
    /// Most pixels of a source (width x height from its header).
    pub max_source_pixels: u64,
    /// Most pixels of an output.
    pub max_output_pixels: u64,
}

/// Image formats Sluice reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    /// JPEG.
    Jpeg,
    /// PNG.
    Png,
    /// GIF (first frame).
    Gif,
    /// WebP.
    WebP,
}

/// Image formats Sluice writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// JPEG (mozjpeg).
    Jpeg,
    /// PNG.
    Png,
    /// Lossy WebP (libwebp).
    WebP,
}

impl OutputFormat {
    /// The media type.
    pub fn content_type(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "image/jpeg",
            OutputFormat::Png => "image/png",
            OutputFormat::WebP => "image/webp",
        }
    }

    /// Short name, as in the spec.
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "jpeg",
            OutputFormat::Png => "png",
            OutputFormat::WebP => "webp",
        }
    }
}

/// A transformed image.
#[derive(Debug)]
pub struct Output {
    /// Encoded bytes.
    pub bytes: Vec<u8>,
    /// Their format.
    pub format: OutputFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// Why a transform failed.
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    /// Not a JPEG, PNG, GIF or WebP.
    #[error("the source is not a JPEG, PNG, GIF or WebP image")]
    Unsupported,
    /// Over `max_source_pixels` or the side limit.
    #[error("the source is {0}x{1}: over the pixel limits")]
    SourceTooLarge(u32, u32),
    /// The output would be over `max_output_pixels` or the side limit.
    #[error("the output would be {0}x{1}: over the pixel limits")]
    OutputTooLarge(u32, u32),
    /// The output format cannot be produced.
    #[error("cannot encode {0}")]
    Format(&'static str),
    /// The decoder refused the data.
    #[error("cannot decode the source: {0}")]
    Decode(String),
    /// The encoder failed.
    #[error("cannot encode: {0}")]
    Encode(String),
    /// A codec panicked (caught).
    #[error("a codec failed unexpectedly")]
    Panic,
}

impl TransformError {
    /// Metric label of the outcome.
    pub fn label(&self) -> &'static str {
        match self {
            TransformError::Unsupported => "unsupported",
            TransformError::SourceTooLarge(..) => "source_too_large",
            TransformError::OutputTooLarge(..) => "output_too_large",
            TransformError::Format(_) => "bad_format",
            TransformError::Decode(_) | TransformError::Panic => "undecodable",
            TransformError::Encode(_) => "encode_error",
        }
    }
}

/// The format of `src` from its magic bytes.
pub fn sniff(src: &[u8]) -> Option<SourceFormat> {
    if src.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(SourceFormat::Jpeg)
    } else if src.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(SourceFormat::Png)
    } else if src.starts_with(b"GIF87a") || src.starts_with(b"GIF89a") {
        Some(SourceFormat::Gif)
    } else if src.len() >= 12 && &src[..4] == b"RIFF" && &src[8..12] == b"WEBP" {
        Some(SourceFormat::WebP)
    } else {
        None
    }
}

/// Transforms `src` as `spec` says, within `limits`. Never panics.
pub fn transform(
    src: &[u8],
    spec: &Spec,
    limits: &TransformLimits,
) -> Result<Output, TransformError> {
    match catch_unwind(AssertUnwindSafe(|| run(src, spec, limits))) {
        Ok(r) => r,
        Err(_) => Err(TransformError::Panic),
    }
}

fn run(src: &[u8], spec: &Spec, limits: &TransformLimits) -> Result<Output, TransformError> {
    let format = sniff(src).ok_or(TransformError::Unsupported)?;
    let out_format = match (spec.format.as_str(), format) {
        ("jpeg", _) | ("source", SourceFormat::Jpeg) => OutputFormat::Jpeg,
        ("png", _) | ("source", SourceFormat::Png | SourceFormat::Gif) => OutputFormat::Png,
        ("webp", _) | ("source", SourceFormat::WebP) => OutputFormat::WebP,
        (other, _) => return Err(TransformError::Format(static_name(other))),
    };
    let (pixels, orientation, exif, plan) = match format {
        SourceFormat::Jpeg => match decode_jpeg(src, spec, limits) {
            Ok(d) => d,
            // mozjpeg reads no CMYK to RGB: `image` (zune-jpeg) does.
            Err(TransformError::Decode(_)) | Err(TransformError::Panic) => {
                decode_other(src, spec, limits)?
            }
            Err(e) => return Err(e),
        },
        _ => decode_other(src, spec, limits)?,
    };
    let rotate = spec.rotate;
    let mut img = pixels;
    if orientation != Orientation::NoTransforms || rotate != 0 {
        let mut d = img.into_dynamic()?;
        d.apply_orientation(orientation);
        d = match rotate {
            90 => d.rotate90(),
            180 => d.rotate180(),
            270 => d.rotate270(),
            _ => d,
        };
        img = Pixels::from_dynamic(d);
    }
    let resized = resize(&img, &plan)?;
    drop(img);
    let mut out = compose(resized, &plan, spec, out_format);
    if spec.sharpen > 0.0 {
        sharpen(&mut out, spec.sharpen);
    }
    let bytes = encode(&out, out_format, spec, exif.as_deref())?;
    Ok(Output {
        bytes,
        format: out_format,
        width: out.width,
        height: out.height,
    })
}

fn static_name(s: &str) -> &'static str {
    match s {
        "avif" => "avif",
        _ => "that format",
    }
}

/// Pixels, the source's EXIF orientation, its EXIF chunk (JPEG), the plan.
type Decoded = (Pixels, Orientation, Option<Vec<u8>>, Plan);

/// The plan for a source of `w` x `h` (as stored) with `orientation`, after checking
/// the limits.
fn checked_plan(
    w: u32,
    h: u32,
    orientation: Orientation,
    spec: &Spec,
    limits: &TransformLimits,
) -> Result<Plan, TransformError> {
    if w == 0 || h == 0 || too_big(w, h, limits.max_source_pixels) {
        return Err(TransformError::SourceTooLarge(w, h));
    }
    let swap = swaps(orientation) ^ matches!(spec.rotate, 90 | 270);
    let (ow, oh) = if swap { (h, w) } else { (w, h) };
    let p = plan(ow, oh, spec);
    if too_big(p.canvas.0, p.canvas.1, limits.max_output_pixels) {
        return Err(TransformError::OutputTooLarge(p.canvas.0, p.canvas.1));
    }
    Ok(p)
}

fn decode_jpeg(
    src: &[u8],
    spec: &Spec,
    limits: &TransformLimits,
) -> Result<Decoded, TransformError> {
    let result = catch_unwind(AssertUnwindSafe(|| -> Result<Decoded, TransformError> {
        let dec_err = |e: std::io::Error| TransformError::Decode(e.to_string());
        let mut d = mozjpeg::Decompress::with_markers(&[mozjpeg::Marker::APP(1)])
            .from_mem(src)
            .map_err(dec_err)?;
        let (w, h) = (d.width() as u32, d.height() as u32);
        let mut exif = None;
        for m in d.markers() {
            if let Some(tiff) = m.data.strip_prefix(b"Exif\0\0") {
                exif = Some(tiff.to_vec());
            }
        }
        let orientation = exif
            .as_deref()
            .and_then(Orientation::from_exif_chunk)
            .unwrap_or(Orientation::NoTransforms);
        let plan = checked_plan(w, h, orientation, spec, limits)?;
        // Shrink on load by 1/2, 1/4 or 1/8 while the decoded image stays at least
        // twice the resized size (vips' rule), so Lanczos3 still has pixels to work with.
        let (_, _, cw, ch) = plan.crop;
        let factor = (cw / f64::from(plan.resized.0)).min(ch / f64::from(plan.resized.1));
        let denom = [8u8, 4, 2]
            .into_iter()
            .find(|d| f64::from(*d) * 2.0 <= factor)
            .unwrap_or(1);
        d.scale(8 / denom);
        let mut started = d.rgb().map_err(dec_err)?;
        let (dw, dh) = (started.width() as u32, started.height() as u32);
        let data = started.read_scanlines::<u8>().map_err(dec_err)?;
        let _ = started.finish();
        if data.len() != dw as usize * dh as usize * 3 {
            return Err(TransformError::Decode("short scanlines".into()));
        }
        let pixels = Pixels {
            width: dw,
            height: dh,
            alpha: false,
            data,
        };
        Ok((pixels, orientation, exif, plan))
    }));
    result.unwrap_or(Err(TransformError::Panic))
}

fn decode_other(
    src: &[u8],
    spec: &Spec,
    limits: &TransformLimits,
) -> Result<Decoded, TransformError> {
    let dec_err = |e: image::ImageError| TransformError::Decode(e.to_string());
    let mut reader = ImageReader::new(Cursor::new(src))
        .with_guessed_format()
        .map_err(|e| TransformError::Decode(e.to_string()))?;
    let mut l = image::Limits::default();
    l.max_image_width = Some(MAX_SIDE);
    l.max_image_height = Some(MAX_SIDE);
    l.max_alloc = Some(limits.max_source_pixels.saturating_mul(4) + (16 << 20));
    reader.limits(l);
    let mut decoder = reader.into_decoder().map_err(|e| match e {
        image::ImageError::Limits(_) => TransformError::SourceTooLarge(0, 0),
        image::ImageError::Unsupported(_) => TransformError::Unsupported,
        e => dec_err(e),
    })?;
    let (w, h) = decoder.dimensions();
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let plan = checked_plan(w, h, orientation, spec, limits)?;
    let img = DynamicImage::from_decoder(decoder).map_err(|e| match e {
        image::ImageError::Limits(_) => TransformError::SourceTooLarge(w, h),
        e => dec_err(e),
    })?;
    Ok((Pixels::from_dynamic(img), orientation, None, plan))
}

#[cfg(test)]
mod tests;
