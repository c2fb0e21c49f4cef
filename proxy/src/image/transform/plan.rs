//! The output's geometry, planned from the source's size and the spec before any pixel is decoded.

use super::*;

/// Where the output comes from and goes, in the oriented source's pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Plan {
    /// The oriented source's size.
    pub(super) source: (f64, f64),
    /// Crop window of the source: left, top, width, height.
    pub(super) crop: (f64, f64, f64, f64),
    /// Size the window is resized to.
    pub(super) resized: (u32, u32),
    /// Output canvas (bigger than `resized` with `pad`).
    pub(super) canvas: (u32, u32),
    /// Where the resized image sits on the canvas.
    pub(super) offset: (u32, u32),
}

pub(super) fn px(v: f64) -> u32 {
    (v.round() as u32).max(1)
}

/// The geometry of `spec` on a `sw` x `sh` (oriented) source.
pub(super) fn plan(sw: u32, sh: u32, spec: &Spec) -> Plan {
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

pub(super) fn too_big(w: u32, h: u32, max: u64) -> bool {
    w > MAX_SIDE || h > MAX_SIDE || u64::from(w) * u64::from(h) > max
}
