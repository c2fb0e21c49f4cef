//! Image variants at the edge (issue #9, docs/IMAGES.md).
//!
//! The `image` filter (Wasm) decides: it parses and checks the options and sets the
//! property [`TRANSFORM_PROPERTY`] to a JSON [`Spec`]. When the request-header phase
//! ends with that property set, the proxy calls [`serve`], which fetches the source
//! from the route's pool, looks the variant up in a bounded in-memory cache, transforms
//! it natively on the blocking pool (bounded concurrency, a timeout, hard limits) and
//! writes the response itself. Sources are restricted twice: the filter allows path
//! prefixes, the host refuses tricky paths ([`source::check`]) and media types the
//! spec does not allow; image requests in flight are bounded (`max_in_flight`).

mod admit;
mod cache;
mod serve;
pub mod source;
pub mod transform;

use serde::Deserialize;

pub use serve::serve;

/// Filter-state property the `image` filter sets to a JSON [`Spec`].
pub const TRANSFORM_PROPERTY: &str = "sluice.image.transform";
/// Read-only property: the output formats this build encodes, comma-separated.
pub const FORMATS_PROPERTY: &str = "sluice.image.formats";
/// Value of [`FORMATS_PROPERTY`]: no AVIF encoder is built in.
pub const OUTPUT_FORMATS: &str = "jpeg,png,webp";

/// What the filter asks for (the JSON in [`TRANSFORM_PROPERTY`], docs/IMAGES.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Spec {
    /// Version, 1.
    pub v: u8,
    /// Path and query of the source on the route's pool.
    pub source: String,
    /// Target width, 0 = unset.
    pub width: u32,
    /// Target height, 0 = unset.
    pub height: u32,
    /// `scale-down`, `contain`, `cover`, `crop` or `pad`.
    pub fit: String,
    /// Focus for `cover`/`crop` and placement for `pad`: fractions (x, y).
    pub gravity: [f32; 2],
    /// Encoder quality 1 to 100.
    pub quality: u8,
    /// `jpeg`, `png`, `webp`, or `source` (the source's family).
    pub format: String,
    /// The format was negotiated from `Accept` (`Vary: Accept`).
    pub vary_accept: bool,
    /// RGBA background for `pad` and for flattening transparency.
    pub background: [u8; 4],
    /// Clockwise rotation after EXIF orientation: 0, 90, 180, 270.
    pub rotate: u16,
    /// Sharpening 0 to 10.
    pub sharpen: f32,
    /// `none`, `copyright` (both strip) or `keep` (JPEG to JPEG keeps EXIF).
    pub metadata: String,
    /// Source over a limit or undecodable: 0 = pass the original through, else this status.
    pub on_error: u16,
    /// Media types the source may have (`type/subtype` or `type/*`); empty = the
    /// types this build decodes ([`source::DEFAULT_CONTENT_TYPES`]).
    pub content_types: Vec<String>,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            v: 1,
            source: String::new(),
            width: 0,
            height: 0,
            fit: "scale-down".into(),
            gravity: [0.5, 0.5],
            quality: 85,
            format: "source".into(),
            vary_accept: false,
            background: [255, 255, 255, 0],
            rotate: 0,
            sharpen: 0.0,
            metadata: "none".into(),
            on_error: 0,
            content_types: Vec::new(),
        }
    }
}

impl Spec {
    /// Parses and checks a spec (the filter is trusted, but its output is still bounded).
    pub fn parse(raw: &[u8]) -> Result<Spec, String> {
        let s: Spec = serde_json::from_slice(raw).map_err(|e| e.to_string())?;
        if s.v != 1 {
            return Err(format!("unknown spec version {}", s.v));
        }
        if !s.source.starts_with('/') {
            return Err("source must be a path".into());
        }
        if s.content_types.len() > 64 || s.content_types.iter().any(|t| !t.contains('/')) {
            return Err("content_types must be at most 64 media types".into());
        }
        if !matches!(
            s.fit.as_str(),
            "scale-down" | "contain" | "cover" | "crop" | "pad"
        ) {
            return Err(format!("unknown fit {:?}", s.fit));
        }
        if !matches!(s.rotate, 0 | 90 | 180 | 270) {
            return Err("rotate must be 0, 90, 180 or 270".into());
        }
        if !matches!(s.format.as_str(), "jpeg" | "png" | "webp" | "source") {
            return Err(format!("format {:?} is not available", s.format));
        }
        if s.width > transform::MAX_SIDE || s.height > transform::MAX_SIDE {
            return Err("width or height over the maximum side".into());
        }
        if !(0.0..=10.0).contains(&s.sharpen) || s.gravity.iter().any(|g| !g.is_finite()) {
            return Err("bad sharpen or gravity".into());
        }
        if s.on_error != 0 && !(400..600).contains(&s.on_error) {
            return Err("on_error must be 0 or a 4xx/5xx status".into());
        }
        Ok(s)
    }
}
