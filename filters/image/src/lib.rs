//! `image.wasm`: image-resizing options in the URL -> a transform spec for the host.
//!
//! The filter owns the policy: it parses the options (path form
//! `/cdn-cgi/image/<options>/<source path>` and, when enabled, query parameters),
//! checks them against its configuration, verifies signed URLs, negotiates
//! `format=auto` from `Accept` and the host's encoders (property
//! `sluice.image.formats`), and sets the property `sluice.image.transform` to a JSON
//! spec. Sluice then fetches the source, transforms it natively and answers (see
//! docs/IMAGES.md). Bad options get a 400, a bad signature or a source outside
//! `sources` a 403, from this filter.
//!
//! Config (JSON, every key optional but `sources`):
//! ```json
//! {"sources": ["/img/", "/sample.jpg"], "content_types": ["image/jpeg", "image/png"],
//!  "forward_query": false,
//!  "path_prefix": "/cdn-cgi/image/", "query": false,
//!  "widths": [320, 640], "heights": [], "max_width": 4096, "max_height": 4096,
//!  "max_dpr": 4, "formats": ["jpeg", "png", "webp"], "quality": 85,
//!  "signing_key": "secret", "on_error": "passthrough"}
//! ```

use std::cell::RefCell;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use hmac::{Hmac, Mac};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel, MetricType};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Property the spec is handed over in.
const SPEC_PROPERTY: [&str; 3] = ["sluice", "image", "transform"];
/// Read-only property: the output formats the host can encode, comma-separated.
const FORMATS_PROPERTY: [&str; 3] = ["sluice", "image", "formats"];
/// Query parameters of signed URLs (never forwarded to the origin).
const SIG_PARAM: &str = "sig";
const EXP_PARAM: &str = "exp";

/// What to do with a source the host cannot transform (over a limit, undecodable).
#[derive(Debug, Clone, Copy)]
enum OnError {
    Passthrough,
    Status(u16),
}

impl<'de> Deserialize<'de> for OnError {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            N(u16),
        }
        match Raw::deserialize(d)? {
            Raw::S(s) if s == "passthrough" => Ok(OnError::Passthrough),
            Raw::N(n) if (400..600).contains(&n) => Ok(OnError::Status(n)),
            _ => Err(serde::de::Error::custom(
                "on_error must be \"passthrough\" or a 4xx/5xx status",
            )),
        }
    }
}

fn default_prefix() -> String {
    "/cdn-cgi/image/".into()
}
fn default_max() -> u32 {
    4096
}
fn default_dpr() -> f32 {
    4.0
}
fn default_formats() -> Vec<String> {
    vec!["jpeg".into(), "png".into(), "webp".into(), "avif".into()]
}
fn default_quality() -> u8 {
    85
}
fn default_on_error() -> OnError {
    OnError::Passthrough
}
/// What the host decodes: the media types a source may have unless configured.
fn default_content_types() -> Vec<String> {
    ["image/jpeg", "image/png", "image/webp", "image/gif"]
        .map(String::from)
        .to_vec()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Path prefixes sources may have, matched on segment boundaries (`/img` and
    /// `/img/` allow `/img/a.jpg`, not `/imgs/a.jpg`; `/` allows every path). Required:
    /// an image route must say what it may fetch.
    sources: Vec<String>,
    /// Media types the fetched source may have (`type/subtype` or `type/*`); the host
    /// answers 415 for any other.
    #[serde(default = "default_content_types")]
    content_types: Vec<String>,
    /// Send the request's query parameters (but `sig` and `exp`) to the origin with
    /// the source path. Off: the source is fetched by its path alone.
    #[serde(default)]
    forward_query: bool,
    /// Path form prefix; `""` turns the path form off.
    #[serde(default = "default_prefix")]
    path_prefix: String,
    /// Query-parameter form on every path of the route.
    #[serde(default)]
    query: bool,
    /// Allowed `width` values (before `dpr`); empty = any up to `max_width`.
    #[serde(default)]
    widths: Vec<u32>,
    /// Allowed `height` values (before `dpr`); empty = any up to `max_height`.
    #[serde(default)]
    heights: Vec<u32>,
    #[serde(default = "default_max")]
    max_width: u32,
    #[serde(default = "default_max")]
    max_height: u32,
    #[serde(default = "default_dpr")]
    max_dpr: f32,
    /// Output formats requests may ask for (and `auto` may pick).
    #[serde(default = "default_formats")]
    formats: Vec<String>,
    /// Quality when the request gives none.
    #[serde(default = "default_quality")]
    quality: u8,
    /// HMAC-SHA256 key: when set, every request needs a valid `sig`.
    #[serde(default)]
    signing_key: Option<String>,
    #[serde(default = "default_on_error")]
    on_error: OnError,
}

impl Config {
    fn check(&self) -> Result<(), String> {
        for f in &self.formats {
            if !matches!(f.as_str(), "jpeg" | "png" | "webp" | "avif") {
                return Err(format!("unknown format {f:?} in formats"));
            }
        }
        if !(1..=100).contains(&self.quality) {
            return Err("quality must be 1 to 100".into());
        }
        if self.max_width == 0
            || self.max_height == 0
            || self.max_dpr.is_nan()
            || self.max_dpr < 1.0
        {
            return Err("max_width, max_height must be > 0 and max_dpr >= 1".into());
        }
        let p = &self.path_prefix;
        if !(p.is_empty() || p.starts_with('/') && p.ends_with('/')) {
            return Err("path_prefix must start and end with '/'".into());
        }
        if self.signing_key.as_deref() == Some("") {
            return Err("signing_key is empty".into());
        }
        if self.sources.is_empty() {
            return Err("sources is empty: list the path prefixes images come from".into());
        }
        for p in &self.sources {
            if !p.starts_with('/') || p.contains("//") || source_path_error(p).is_some() && p != "/"
            {
                return Err(format!(
                    "sources: {p:?} is not a plain absolute path prefix"
                ));
            }
        }
        if self.content_types.is_empty() {
            return Err("content_types is empty".into());
        }
        for t in &self.content_types {
            let ok = t.split_once('/').is_some_and(|(a, b)| {
                let token = |s: &str| {
                    !s.is_empty()
                        && s.bytes()
                            .all(|c| c.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&c))
                };
                token(a) && (b == "*" || token(b))
            });
            if !ok {
                return Err(format!("content_types: {t:?} is not a media type"));
            }
        }
        Ok(())
    }

    /// Is `path` (the source path, checked) under one of `sources`?
    fn allows(&self, path: &str) -> bool {
        self.sources.iter().any(|p| {
            let p = p.trim_end_matches('/');
            p.is_empty()
                || path == p
                || path
                    .strip_prefix(p)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    }
}

/// Why a source path is refused, `None` when it is plain: no empty, `.` or `..`
/// segment (raw or percent-encoded, `;` parameters ignored), no encoded `/` or `%`,
/// no backslash, space or control byte (raw or encoded), no bad escape. The host
/// checks the same again.
fn source_path_error(path: &str) -> Option<&'static str> {
    let rest = path.strip_prefix('/')?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Some("empty source path");
    }
    for segment in rest.split('/') {
        if segment.is_empty() {
            return Some("empty segment in the source path");
        }
        if segment.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Some("the source path holds a control byte or a space");
        }
        let Ok(decoded) = decode_bytes(segment) else {
            return Some("bad percent escape in the source path");
        };
        // An encoded space is a file name's; an encoded control byte, slash, backslash
        // or percent sign is an attempt to be read differently further on.
        if decoded
            .iter()
            .any(|&b| b < b' ' || b == 0x7f || b == b'\\' || b == b'/' || b == b'%')
        {
            return Some("the source path holds a forbidden byte");
        }
        let name = decoded.split(|&b| b == b';').next().unwrap_or(&[]);
        if name == b"." || name == b".." {
            return Some("dot segment in the source path");
        }
    }
    None
}

/// The spec handed to the host (docs/IMAGES.md, "Transform spec").
#[derive(Debug, Serialize, Default)]
struct Spec {
    /// Always 1.
    v: u8,
    /// Path (and query) of the source on the route's pool.
    source: String,
    /// Target width in pixels (`dpr` applied), 0 = from the height or the source.
    width: u32,
    /// Target height in pixels (`dpr` applied), 0 = from the width or the source.
    height: u32,
    fit: &'static str,
    /// Focus point for `cover`/`crop`, fractions of the width and height.
    gravity: [f32; 2],
    quality: u8,
    /// `jpeg`, `png`, `webp`, `avif`, or `source` (same family as the source).
    format: &'static str,
    /// The format was negotiated from `Accept`: the response varies on it.
    vary_accept: bool,
    /// RGBA, for `pad` and for flattening transparency into JPEG.
    background: [u8; 4],
    /// Clockwise, 0/90/180/270.
    rotate: u16,
    /// 0 to 10.
    sharpen: f32,
    /// `none`, `copyright` or `keep` (the host strips metadata in every case today).
    metadata: &'static str,
    /// 0 = pass the original through, else the status to answer.
    on_error: u16,
    /// Media types the source may have.
    content_types: Vec<String>,
}

/// Counters this filter defines (`sluice_wasm_<name>` on the admin API), by name.
#[derive(Default)]
struct Metrics {
    ids: RefCell<Vec<(&'static str, u32)>>,
}

impl Metrics {
    fn inc(&self, name: &'static str) {
        let mut ids = self.ids.borrow_mut();
        let id = match ids.iter().find(|(n, _)| *n == name) {
            Some((_, id)) => *id,
            None => match hostcalls::define_metric(MetricType::Counter, name) {
                Ok(id) => {
                    ids.push((name, id));
                    id
                }
                Err(_) => return,
            },
        };
        let _ = hostcalls::increment_metric(id, 1);
    }
}

/// The configuration and this VM's counters, shared by the streams.
struct Configured {
    config: Rc<Config>,
    metrics: Rc<Metrics>,
}

struct Image;

impl kit::Filter for Image {
    const NAME: &'static str = "image";
    const CONFIG_ERROR: &'static str = "bad config";
    const LOG_LEVEL: LogLevel = LogLevel::Info;
    type Config = Configured;

    fn parse(raw: Option<&[u8]>) -> Result<Configured, String> {
        let parsed = match raw {
            Some(raw) if !kit::is_blank(Some(raw)) => serde_json::from_slice::<Config>(raw),
            _ => serde_json::from_str::<Config>("{}"),
        };
        let config = parsed.map_err(|e| e.to_string())?;
        config.check()?;
        Ok(Configured {
            config: Rc::new(config),
            metrics: Rc::default(),
        })
    }

    fn http_context(c: Option<Rc<Configured>>, _id: u32) -> Option<Box<dyn HttpContext>> {
        let c = c?;
        Some(Box::new(ImageHttp {
            config: c.config.clone(),
            metrics: c.metrics.clone(),
        }))
    }
}

kit::main!(Image);

struct ImageHttp {
    config: Rc<Config>,
    metrics: Rc<Metrics>,
}

impl Context for ImageHttp {}

/// Decoded options, name and value, in request order.
type Options = Vec<(String, String)>;

/// A refusal: status and reason (sent as a text body).
struct Refuse(u32, String);

fn bad(msg: impl Into<String>) -> Refuse {
    Refuse(400, msg.into())
}

impl HttpContext for ImageHttp {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let path = self.get_http_request_header(":path").unwrap_or_default();
        match self.plan(&path) {
            Ok(None) => Action::Continue,
            Ok(Some(spec)) => {
                let json = serde_json::to_vec(&spec).unwrap_or_default();
                self.set_property(SPEC_PROPERTY.to_vec(), Some(&json));
                Action::Continue
            }
            Err(Refuse(status, msg)) => {
                self.send_http_response(
                    status,
                    vec![
                        ("content-type", "text/plain"),
                        ("cache-control", "no-store"),
                    ],
                    Some(format!("{msg}\n").as_bytes()),
                );
                Action::Pause
            }
        }
    }
}

impl ImageHttp {
    /// The spec for this request, `None` when it asks for no transform.
    fn plan(&self, full: &str) -> Result<Option<Spec>, Refuse> {
        let cfg = &*self.config;
        let (path, query) = full.split_once('?').unwrap_or((full, ""));
        let params: Vec<(&str, &str)> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once('=').unwrap_or((p, "")))
            .collect();
        let (options, source_path, other): (Options, String, Vec<(&str, &str)>) =
            if !cfg.path_prefix.is_empty() && path.starts_with(&cfg.path_prefix) {
                let rest = &path[cfg.path_prefix.len()..];
                let (opts, src) = rest
                    .split_once('/')
                    .ok_or_else(|| bad("expected /<prefix>/<options>/<source path>"))?;
                let mut options = Vec::new();
                for o in opts.split(',').filter(|o| !o.is_empty()) {
                    let (k, v) = o
                        .split_once('=')
                        .ok_or_else(|| bad(format!("option {o:?} has no value")))?;
                    options.push((decode(k)?, decode(v)?));
                }
                let other = params
                    .into_iter()
                    .filter(|(k, _)| *k != SIG_PARAM && *k != EXP_PARAM)
                    .collect();
                (options, format!("/{src}"), other)
            } else if cfg.query && params.iter().any(|(k, _)| is_option(k)) {
                let mut options = Vec::new();
                let mut other = Vec::new();
                for (k, v) in params {
                    if is_option(k) {
                        options.push((decode(k)?, decode(v)?));
                    } else if k != SIG_PARAM && k != EXP_PARAM {
                        other.push((k, v));
                    }
                }
                (options, path.to_string(), other)
            } else {
                return Ok(None);
            };
        let method = self.get_http_request_header(":method").unwrap_or_default();
        if method != "GET" && method != "HEAD" {
            return Err(Refuse(
                405,
                "image variants answer GET and HEAD only".into(),
            ));
        }
        if let Some(key) = &cfg.signing_key {
            self.verify(key, full)?;
        }
        let first = source_path[1..].split('/').next().unwrap_or("");
        if first.contains(':') {
            return Err(bad("remote sources are not supported: give a path"));
        }
        if source_path.len() < 2 || source_path.starts_with("//") || source_path.ends_with('/') {
            return Err(bad("bad source path"));
        }
        if let Some(why) = source_path_error(&source_path) {
            return Err(bad(why));
        }
        if !cfg.allows(&source_path) {
            self.metrics.inc("image_source_refused_total");
            return Err(Refuse(403, "image source not allowed".into()));
        }
        let mut source = source_path;
        if cfg.forward_query {
            for (i, (k, v)) in other.iter().enumerate() {
                source.push(if i == 0 { '?' } else { '&' });
                source.push_str(k);
                if !v.is_empty() {
                    source.push('=');
                    source.push_str(v);
                }
            }
        }
        let mut spec = self.spec(&options)?;
        spec.source = source;
        spec.content_types = cfg.content_types.clone();
        Ok(Some(spec))
    }

    fn verify(&self, key: &str, full: &str) -> Result<(), Refuse> {
        let forbidden = |m: &str| Refuse(403, m.to_string());
        let (path, query) = full.split_once('?').unwrap_or((full, ""));
        let mut sig = None;
        let mut exp = None;
        let mut kept: Vec<&str> = Vec::new();
        for p in query.split('&').filter(|p| !p.is_empty()) {
            match p.split_once('=') {
                Some((SIG_PARAM, v)) => sig = Some(v),
                Some((EXP_PARAM, v)) => {
                    exp = Some(v);
                    kept.push(p);
                }
                _ => kept.push(p),
            }
        }
        let sig = sig.ok_or_else(|| forbidden("missing signature"))?;
        let raw = unhex(sig).ok_or_else(|| forbidden("bad signature"))?;
        let mut message = path.to_string();
        if !kept.is_empty() {
            message.push('?');
            message.push_str(&kept.join("&"));
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes())
            .map_err(|_| forbidden("bad signature"))?;
        mac.update(message.as_bytes());
        mac.verify_slice(&raw)
            .map_err(|_| forbidden("bad signature"))?;
        if let Some(exp) = exp {
            let exp: u64 = exp.parse().map_err(|_| forbidden("bad exp"))?;
            let now = self
                .get_current_time()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(u64::MAX);
            if now > exp {
                return Err(forbidden("signature expired"));
            }
        }
        Ok(())
    }

    fn spec(&self, options: &[(String, String)]) -> Result<Spec, Refuse> {
        let cfg = &*self.config;
        let mut seen: Vec<&str> = Vec::new();
        let mut width = 0u32;
        let mut height = 0u32;
        let mut dpr = 1.0f32;
        let mut format = "auto";
        let mut spec = Spec {
            v: 1,
            fit: "scale-down",
            gravity: [0.5, 0.5],
            quality: cfg.quality,
            background: [255, 255, 255, 0],
            metadata: "none",
            on_error: match cfg.on_error {
                OnError::Passthrough => 0,
                OnError::Status(s) => s,
            },
            ..Spec::default()
        };
        for (k, v) in options {
            let name = canonical(k).ok_or_else(|| bad(format!("unknown option {k:?}")))?;
            if seen.contains(&name) {
                return Err(bad(format!("option {name} given twice")));
            }
            seen.push(name);
            let what = || bad(format!("bad value {v:?} for {name}"));
            match name {
                "width" => width = v.parse().ok().filter(|w| *w > 0).ok_or_else(what)?,
                "height" => height = v.parse().ok().filter(|h| *h > 0).ok_or_else(what)?,
                "dpr" => {
                    dpr = v
                        .parse()
                        .ok()
                        .filter(|d: &f32| *d > 0.0 && *d <= cfg.max_dpr)
                        .ok_or_else(what)?
                }
                "fit" => {
                    spec.fit = match v.as_str() {
                        "scale-down" => "scale-down",
                        "contain" => "contain",
                        "cover" => "cover",
                        "crop" => "crop",
                        "pad" => "pad",
                        _ => return Err(what()),
                    }
                }
                "gravity" => spec.gravity = gravity(v).ok_or_else(what)?,
                "quality" => {
                    spec.quality = v
                        .parse()
                        .ok()
                        .filter(|q| (1..=100).contains(q))
                        .ok_or_else(what)?
                }
                "format" => {
                    format = match v.as_str() {
                        "auto" => "auto",
                        "jpeg" | "jpg" => "jpeg",
                        "png" => "png",
                        "webp" => "webp",
                        "avif" => "avif",
                        _ => return Err(what()),
                    }
                }
                "background" => spec.background = color(v).ok_or_else(what)?,
                "rotate" => {
                    spec.rotate = match v.as_str() {
                        "0" => 0,
                        "90" => 90,
                        "180" => 180,
                        "270" => 270,
                        _ => return Err(what()),
                    }
                }
                "sharpen" => {
                    spec.sharpen = v
                        .parse()
                        .ok()
                        .filter(|s: &f32| (0.0..=10.0).contains(s))
                        .ok_or_else(what)?
                }
                "metadata" => {
                    spec.metadata = match v.as_str() {
                        "none" => "none",
                        "copyright" => "copyright",
                        "keep" => "keep",
                        _ => return Err(what()),
                    }
                }
                _ => return Err(what()),
            }
        }
        if width > 0 && !cfg.widths.is_empty() && !cfg.widths.contains(&width) {
            return Err(bad(format!("width {width} is not allowed")));
        }
        if height > 0 && !cfg.heights.is_empty() && !cfg.heights.contains(&height) {
            return Err(bad(format!("height {height} is not allowed")));
        }
        let scaled = |n: u32| ((n as f32) * dpr).round().max(1.0) as u32;
        if width > 0 {
            spec.width = scaled(width);
        }
        if height > 0 {
            spec.height = scaled(height);
        }
        if spec.width > cfg.max_width || spec.height > cfg.max_height {
            return Err(bad(format!(
                "{}x{} is over the maximum {}x{}",
                spec.width, spec.height, cfg.max_width, cfg.max_height
            )));
        }
        let host: Vec<String> = self
            .get_property(FORMATS_PROPERTY.to_vec())
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .collect()
            })
            .unwrap_or_else(|| vec!["jpeg".into(), "png".into()]);
        let usable = |f: &str| cfg.formats.iter().any(|c| c == f) && host.iter().any(|h| h == f);
        spec.format = match format {
            "auto" => {
                spec.vary_accept = true;
                let accept = self.get_http_request_header("accept").unwrap_or_default();
                if usable("avif") && accepts(&accept, "image/avif") {
                    "avif"
                } else if usable("webp") && accepts(&accept, "image/webp") {
                    "webp"
                } else {
                    "source"
                }
            }
            f if usable(f) => f,
            f => return Err(bad(format!("format {f} is not available"))),
        };
        Ok(spec)
    }
}

/// The option's canonical name (Cloudflare's short aliases included).
fn canonical(k: &str) -> Option<&'static str> {
    Some(match k {
        "width" | "w" => "width",
        "height" | "h" => "height",
        "dpr" => "dpr",
        "fit" => "fit",
        "gravity" | "g" => "gravity",
        "quality" | "q" => "quality",
        "format" | "f" => "format",
        "background" => "background",
        "rotate" => "rotate",
        "sharpen" => "sharpen",
        "metadata" => "metadata",
        _ => return None,
    })
}

fn is_option(k: &str) -> bool {
    canonical(k).is_some()
}

/// `Accept` lists `media` (or `image/*` does not count: WebP/AVIF must be named) with q > 0.
fn accepts(accept: &str, media: &str) -> bool {
    accept.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        if !parts.next().is_some_and(|m| m.eq_ignore_ascii_case(media)) {
            return false;
        }
        !parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        })
    })
}

fn gravity(v: &str) -> Option<[f32; 2]> {
    Some(match v {
        "auto" | "center" | "centre" => [0.5, 0.5],
        "left" => [0.0, 0.5],
        "right" => [1.0, 0.5],
        "top" => [0.5, 0.0],
        "bottom" => [0.5, 1.0],
        _ => {
            let (x, y) = v.split_once('x')?;
            let (x, y): (f32, f32) = (x.parse().ok()?, y.parse().ok()?);
            if !((0.0..=1.0).contains(&x) && (0.0..=1.0).contains(&y)) {
                return None;
            }
            [x, y]
        }
    })
}

/// `#rgb`, `#rrggbb`, `#rrggbbaa` (or without `#`), or a few names.
fn color(v: &str) -> Option<[u8; 4]> {
    match v {
        "white" => return Some([255, 255, 255, 255]),
        "black" => return Some([0, 0, 0, 255]),
        "transparent" => return Some([0, 0, 0, 0]),
        "red" => return Some([255, 0, 0, 255]),
        "green" => return Some([0, 128, 0, 255]),
        "blue" => return Some([0, 0, 255, 255]),
        _ => {}
    }
    let h = v.strip_prefix('#').unwrap_or(v);
    let nib = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = h.as_bytes();
    match b.len() {
        3 => {
            let mut out = [255u8; 4];
            for i in 0..3 {
                out[i] = nib(b[i])? * 17;
            }
            Some(out)
        }
        6 | 8 => {
            let mut out = [255u8; 4];
            for i in 0..b.len() / 2 {
                out[i] = nib(b[2 * i])? << 4 | nib(b[2 * i + 1])?;
            }
            Some(out)
        }
        _ => None,
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 128 {
        return None;
    }
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// Percent-decoding (`+` stays `+`); invalid escapes or UTF-8 are a 400.
fn decode(s: &str) -> Result<String, Refuse> {
    let out = decode_bytes(s)?;
    String::from_utf8(out).map_err(|_| bad("option is not UTF-8"))
}

fn decode_bytes(s: &str) -> Result<Vec<u8>, Refuse> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let v = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| bad("bad percent escape"))?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> Result<Config, String> {
        let c: Config = serde_json::from_str(json).map_err(|e| e.to_string())?;
        c.check().map(|_| c)
    }

    #[test]
    fn sources_are_required_and_checked() {
        assert!(config("{}").unwrap_err().contains("sources"));
        assert!(config(r#"{"sources": []}"#).is_err());
        for bad in ["img/", "/img/../x", "//img", "/a%2Fb", "/a\\b"] {
            let json = serde_json::json!({ "sources": [bad] }).to_string();
            assert!(config(&json).is_err(), "{bad}");
        }
        assert!(config(r#"{"sources": ["/"]}"#).is_ok());
        assert!(config(r#"{"sources": ["/img"], "content_types": ["image/*"]}"#).is_ok());
        assert!(config(r#"{"sources": ["/img"], "content_types": ["jpeg"]}"#).is_err());
        assert!(config(r#"{"sources": ["/img"], "content_types": []}"#).is_err());
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        let c = config(r#"{"sources": ["/img", "/sample.jpg", "/a/b/"]}"#).unwrap();
        for ok in ["/img", "/img/x.jpg", "/sample.jpg", "/a/b/c.jpg"] {
            assert!(c.allows(ok), "{ok}");
        }
        for no in ["/imgs/x.jpg", "/sample.jpgx", "/echo", "/a/bc.jpg", "/a"] {
            assert!(!c.allows(no), "{no}");
        }
        assert!(config(r#"{"sources": ["/"]}"#).unwrap().allows("/anything"));
    }

    #[test]
    fn tricky_source_paths_are_refused() {
        for p in [
            "/img/../echo",
            "/img/./a.jpg",
            "/img/%2e%2e/echo",
            "/img/..;/echo",
            "/img/..%2Fecho",
            "/img/..%5cecho",
            "/img/%252e%252e/echo",
            "/img//a.jpg",
            "/img/a%00.jpg",
            "/img/a\u{7f}.jpg",
            "/img/a%zz.jpg",
        ] {
            assert!(source_path_error(p).is_some(), "{p}");
        }
        for p in [
            "/img/a.jpg",
            "/img/caf%C3%A9.jpg",
            "/img/..a.jpg",
            "/img/my%20photo.jpg",
        ] {
            assert_eq!(source_path_error(p), None, "{p}");
        }
    }
}
