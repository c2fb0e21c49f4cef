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

/// Where the output comes from and goes, in the oriented source's pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Plan {
    /// The oriented source's size.
    source: (f64, f64),
    /// Crop window of the source: left, top, width, height.
    crop: (f64, f64, f64, f64),
    /// Size the window is resized to.
    resized: (u32, u32),
    /// Output canvas (bigger than `resized` with `pad`).
    canvas: (u32, u32),
    /// Where the resized image sits on the canvas.
    offset: (u32, u32),
}

fn px(v: f64) -> u32 {
    (v.round() as u32).max(1)
}

/// The geometry of `spec` on a `sw` x `sh` (oriented) source.
fn plan(sw: u32, sh: u32, spec: &Spec) -> Plan {
    let (w, h) = (spec.width, spec.height);
    let (fw, fh) = (f64::from(sw), f64::from(sh));
    let whole = (0.0, 0.0, fw, fh);
    let simple = |scale: f64| {
        let r = (px(fw * scale), px(fh * scale));
        Plan {
            source: (fw, fh),
            crop: whole,
            resized: r,
            canvas: r,
            offset: (0, 0),
        }
    };
    let fit = spec.fit.as_str();
    let no_enlarge = matches!(fit, "scale-down" | "crop");
    if w == 0 && h == 0 {
        return simple(1.0);
    }
    if w == 0 || h == 0 {
        let mut scale = if w > 0 {
            f64::from(w) / fw
        } else {
            f64::from(h) / fh
        };
        if no_enlarge {
            scale = scale.min(1.0);
        }
        return simple(scale);
    }
    let (tw, th) = (f64::from(w), f64::from(h));
    let contain = (tw / fw).min(th / fh);
    let cover = (tw / fw).max(th / fh);
    match fit {
        "cover" | "crop" if fit == "cover" || cover <= 1.0 => {
            let (cw, ch) = ((tw / cover).min(fw), (th / cover).min(fh));
            let [gx, gy] = spec.gravity;
            let left = (fw - cw) * f64::from(gx.clamp(0.0, 1.0));
            let top = (fh - ch) * f64::from(gy.clamp(0.0, 1.0));
            Plan {
                source: (fw, fh),
                crop: (left, top, cw, ch),
                resized: (w, h),
                canvas: (w, h),
                offset: (0, 0),
            }
        }
        "pad" => {
            let r = (px(fw * contain).min(w), px(fh * contain).min(h));
            let [gx, gy] = spec.gravity;
            let ox = (f64::from(w - r.0) * f64::from(gx.clamp(0.0, 1.0))).round() as u32;
            let oy = (f64::from(h - r.1) * f64::from(gy.clamp(0.0, 1.0))).round() as u32;
            Plan {
                source: (fw, fh),
                crop: whole,
                resized: r,
                canvas: (w, h),
                offset: (ox, oy),
            }
        }
        "contain" => simple(contain),
        // scale-down, and crop on a source smaller than the box.
        _ => simple(contain.min(1.0)),
    }
}

fn too_big(w: u32, h: u32, max: u64) -> bool {
    w > MAX_SIDE || h > MAX_SIDE || u64::from(w) * u64::from(h) > max
}

/// Decoded pixels: RGB8 or RGBA8.
struct Pixels {
    width: u32,
    height: u32,
    alpha: bool,
    data: Vec<u8>,
}

impl Pixels {
    fn from_dynamic(img: DynamicImage) -> Pixels {
        let (width, height) = (img.width(), img.height());
        if img.color().has_alpha() {
            Pixels {
                width,
                height,
                alpha: true,
                data: img.into_rgba8().into_raw(),
            }
        } else {
            Pixels {
                width,
                height,
                alpha: false,
                data: img.into_rgb8().into_raw(),
            }
        }
    }

    fn into_dynamic(self) -> Result<DynamicImage, TransformError> {
        let bad = || TransformError::Decode("pixel buffer has the wrong size".into());
        Ok(if self.alpha {
            DynamicImage::ImageRgba8(
                RgbaImage::from_raw(self.width, self.height, self.data).ok_or_else(bad)?,
            )
        } else {
            DynamicImage::ImageRgb8(
                RgbImage::from_raw(self.width, self.height, self.data).ok_or_else(bad)?,
            )
        })
    }

    fn channels(&self) -> usize {
        if self.alpha {
            4
        } else {
            3
        }
    }
}

fn swaps(o: Orientation) -> bool {
    matches!(
        o,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
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

/// Crops and resizes with Lanczos3 (alpha premultiplied by the resizer).
fn resize(img: &Pixels, plan: &Plan) -> Result<Pixels, TransformError> {
    let pt = if img.alpha {
        fir::PixelType::U8x4
    } else {
        fir::PixelType::U8x3
    };
    let src = fir::images::ImageRef::new(img.width, img.height, &img.data, pt)
        .map_err(|e| TransformError::Decode(e.to_string()))?;
    // The plan is in full-size (oriented) source pixels; the decoded image may be shrunk.
    let (dw, dh) = (f64::from(img.width), f64::from(img.height));
    let (l, t, w, h) = plan.crop;
    let sx = dw / plan.source.0;
    let sy = dh / plan.source.1;
    let (rw, rh) = plan.resized;
    let mut dst = fir::images::Image::new(rw, rh, pt);
    let crop = (
        (l * sx).clamp(0.0, dw - 1.0),
        (t * sy).clamp(0.0, dh - 1.0),
        0.0,
        0.0,
    );
    let crop = (
        crop.0,
        crop.1,
        (w * sx).clamp(1.0, dw - crop.0),
        (h * sy).clamp(1.0, dh - crop.1),
    );
    let opts = fir::ResizeOptions::new()
        .resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Lanczos3))
        .crop(crop.0, crop.1, crop.2, crop.3);
    fir::Resizer::new()
        .resize(&src, &mut dst, &opts)
        .map_err(|e| TransformError::Encode(e.to_string()))?;
    Ok(Pixels {
        width: rw,
        height: rh,
        alpha: img.alpha,
        data: dst.into_vec(),
    })
}

/// Puts the resized image on its canvas (`pad`), and flattens transparency onto the
/// background when the output has no alpha channel (JPEG).
fn compose(img: Pixels, plan: &Plan, spec: &Spec, format: OutputFormat) -> Pixels {
    let bg = spec.background;
    let padded = plan.canvas != plan.resized;
    let alpha_out = format != OutputFormat::Jpeg && (img.alpha || (padded && bg[3] < 255));
    if !padded && alpha_out == img.alpha {
        return img;
    }
    let (cw, ch) = plan.canvas;
    let oc = if alpha_out { 4 } else { 3 };
    // With no alpha channel out, the background is opaque.
    let bg_a = if alpha_out {
        f32::from(bg[3]) / 255.0
    } else {
        1.0
    };
    let mut data = Vec::with_capacity(cw as usize * ch as usize * oc);
    for _ in 0..cw as usize * ch as usize {
        data.extend_from_slice(&bg[..oc]);
        if alpha_out {
            let last = data.len() - 1;
            data[last] = bg[3];
        }
    }
    let ic = img.channels();
    let (ox, oy) = (plan.offset.0 as usize, plan.offset.1 as usize);
    for y in 0..img.height as usize {
        let cy = y + oy;
        if cy >= ch as usize {
            break;
        }
        for x in 0..img.width as usize {
            let cx = x + ox;
            if cx >= cw as usize {
                break;
            }
            let s = &img.data[(y * img.width as usize + x) * ic..][..ic];
            let d = &mut data[(cy * cw as usize + cx) * oc..][..oc];
            let a = if img.alpha {
                f32::from(s[3]) / 255.0
            } else {
                1.0
            };
            let out_a = a + bg_a * (1.0 - a);
            for c in 0..3 {
                let v = if out_a > 0.0 {
                    (f32::from(s[c]) * a + f32::from(bg[c]) * bg_a * (1.0 - a)) / out_a
                } else {
                    0.0
                };
                d[c] = v.round().clamp(0.0, 255.0) as u8;
            }
            if alpha_out {
                d[3] = (out_a * 255.0).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    Pixels {
        width: cw,
        height: ch,
        alpha: alpha_out,
        data,
    }
}

/// Unsharp mask with a 3x3 box blur; `amount` 0 to 10 (1 suits downscaled images).
fn sharpen(img: &mut Pixels, amount: f32) {
    let (w, h, c) = (img.width as usize, img.height as usize, img.channels());
    if w < 3 || h < 3 {
        return;
    }
    let k = amount * 0.3;
    let src = img.data.clone();
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            for ch in 0..3 {
                let mut sum = 0u32;
                for dy in 0..3 {
                    for dx in 0..3 {
                        sum += u32::from(src[((y + dy - 1) * w + x + dx - 1) * c + ch]);
                    }
                }
                let p = f32::from(src[(y * w + x) * c + ch]);
                let v = p + k * (p - sum as f32 / 9.0);
                img.data[(y * w + x) * c + ch] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
}

fn encode(
    img: &Pixels,
    format: OutputFormat,
    spec: &Spec,
    exif: Option<&[u8]>,
) -> Result<Vec<u8>, TransformError> {
    let q = spec.quality.clamp(1, 100);
    match format {
        OutputFormat::Jpeg => {
            let r = catch_unwind(AssertUnwindSafe(|| -> std::io::Result<Vec<u8>> {
                let cs = if img.alpha {
                    mozjpeg::ColorSpace::JCS_EXT_RGBA
                } else {
                    mozjpeg::ColorSpace::JCS_RGB
                };
                let mut c = mozjpeg::Compress::new(cs);
                c.set_size(img.width as usize, img.height as usize);
                c.set_fastest_defaults();
                c.set_quality(f32::from(q));
                c.set_optimize_coding(true);
                let mut started = c.start_compress(Vec::new())?;
                if spec.metadata == "keep" {
                    if let Some(chunk) = exif {
                        let mut chunk = chunk.to_vec();
                        let _ = Orientation::remove_from_exif_chunk(&mut chunk);
                        if chunk.len() + 6 <= 65533 {
                            let mut app1 = b"Exif\0\0".to_vec();
                            app1.extend_from_slice(&chunk);
                            started.write_marker(mozjpeg::Marker::APP(1), &app1);
                        }
                    }
                }
                started.write_scanlines(&img.data)?;
                started.finish()
            }));
            match r {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(TransformError::Encode(e.to_string())),
                Err(_) => Err(TransformError::Encode("mozjpeg failed".into())),
            }
        }
        OutputFormat::WebP => {
            let enc = if img.alpha {
                webp::Encoder::from_rgba(&img.data, img.width, img.height)
            } else {
                webp::Encoder::from_rgb(&img.data, img.width, img.height)
            };
            let mem = enc
                .encode_simple(false, f32::from(q))
                .map_err(|e| TransformError::Encode(format!("webp: {e:?}")))?;
            Ok(mem.to_vec())
        }
        OutputFormat::Png => {
            use image::ImageEncoder;
            let mut out = Vec::new();
            let enc = image::codecs::png::PngEncoder::new_with_quality(
                &mut out,
                image::codecs::png::CompressionType::Fast,
                image::codecs::png::FilterType::Adaptive,
            );
            let ct = if img.alpha {
                image::ExtendedColorType::Rgba8
            } else {
                image::ExtendedColorType::Rgb8
            };
            enc.write_image(&img.data, img.width, img.height, ct)
                .map_err(|e| TransformError::Encode(e.to_string()))?;
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(w: u32, h: u32, fit: &str) -> Spec {
        Spec {
            width: w,
            height: h,
            fit: fit.into(),
            ..Spec::default()
        }
    }

    #[test]
    fn plans_each_fit() {
        let p = plan(2000, 1000, &spec(400, 400, "scale-down"));
        assert_eq!((p.resized, p.canvas), ((400, 200), (400, 200)));
        let p = plan(2000, 1000, &spec(400, 400, "cover"));
        assert_eq!(p.canvas, (400, 400));
        assert_eq!(p.crop, (500.0, 0.0, 1000.0, 1000.0));
        let p = plan(2000, 1000, &spec(400, 400, "pad"));
        assert_eq!(
            (p.resized, p.canvas, p.offset),
            ((400, 200), (400, 400), (0, 100))
        );
        let p = plan(200, 100, &spec(400, 400, "contain"));
        assert_eq!(p.canvas, (400, 200));
        let p = plan(200, 100, &spec(400, 400, "scale-down"));
        assert_eq!(p.canvas, (200, 100));
        let p = plan(200, 100, &spec(400, 400, "crop"));
        assert_eq!(p.canvas, (200, 100));
        let p = plan(2000, 1000, &spec(400, 400, "crop"));
        assert_eq!(p.canvas, (400, 400));
        let p = plan(2000, 1000, &spec(0, 100, "cover"));
        assert_eq!(p.canvas, (200, 100));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let l = TransformLimits {
            max_source_pixels: 1 << 24,
            max_output_pixels: 1 << 22,
        };
        let s = spec(10, 10, "cover");
        assert!(transform(b"hello", &s, &l).is_err());
        assert!(transform(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 1], &s, &l).is_err());
        assert!(transform(b"\x89PNG\r\n\x1a\n\0\0", &s, &l).is_err());
    }
}
