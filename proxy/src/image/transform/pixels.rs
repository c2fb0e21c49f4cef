//! Decoded pixels and the steps on them: orientation, resize, composition, sharpening.

use super::*;

/// Decoded pixels: RGB8 or RGBA8.
pub(super) struct Pixels {
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) alpha: bool,
    pub(super) data: Vec<u8>,
}

impl Pixels {
    pub(super) fn from_dynamic(img: DynamicImage) -> Pixels {
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

    pub(super) fn into_dynamic(self) -> Result<DynamicImage, TransformError> {
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

    pub(super) fn channels(&self) -> usize {
        if self.alpha {
            4
        } else {
            3
        }
    }
}

pub(super) fn swaps(o: Orientation) -> bool {
    matches!(
        o,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

/// Crops and resizes with Lanczos3 (alpha premultiplied by the resizer).
pub(super) fn resize(img: &Pixels, plan: &Plan) -> Result<Pixels, TransformError> {
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
pub(super) fn compose(img: Pixels, plan: &Plan, spec: &Spec, format: OutputFormat) -> Pixels {
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
pub(super) fn sharpen(img: &mut Pixels, amount: f32) {
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
