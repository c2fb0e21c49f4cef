//! Encoding the output: JPEG, PNG, WebP.

use super::*;

pub(super) fn encode(
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
