//! `[images]`: the hard limits of the host's image transforms (the image code reads
//! them from the policy).

use serde::Deserialize;
use toml::Spanned;

use super::errors::Lines;

/// `[images]`: hard limits of the host's image transforms.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImagesConfig {
    /// Most bytes read from the origin for one source.
    pub max_source_bytes: u64,
    /// Most pixels (width x height, from the header) of a source.
    pub max_source_pixels: u64,
    /// Most pixels of an output.
    pub max_output_pixels: u64,
    /// Time one transform may take, waiting for a slot included, milliseconds.
    pub timeout_ms: u64,
    /// Time to fetch a source (header and body), milliseconds.
    pub fetch_timeout_ms: u64,
    /// Transforms running at once, process-wide (0 = one per CPU).
    pub max_concurrent: usize,
    /// Image requests served at once (from the source fetch to the last byte sent),
    /// process-wide; beyond it a 503 at once.
    pub max_in_flight: usize,
    /// Longest time the client may take no bytes of an image response, milliseconds;
    /// then the connection is cut (nginx's `send_timeout`).
    pub send_timeout_ms: u64,
    /// Size of the variant cache, MiB (0 = no cache).
    pub cache_mb: u64,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig {
            max_source_bytes: 20 << 20,
            max_source_pixels: 50_000_000,
            max_output_pixels: 16_777_216,
            timeout_ms: 5_000,
            fetch_timeout_ms: 10_000,
            max_concurrent: 0,
            max_in_flight: 16,
            send_timeout_ms: 60_000,
            cache_mb: 64,
        }
    }
}

impl ImagesConfig {
    /// Checks the values; the message names the bad key.
    pub fn check(&self) -> Result<(), String> {
        if self.max_source_bytes == 0 || self.max_source_bytes > 1 << 30 {
            return Err("max_source_bytes must be 1 to 1073741824".into());
        }
        if self.max_source_pixels == 0 || self.max_source_pixels > 1 << 30 {
            return Err("max_source_pixels must be 1 to 1073741824".into());
        }
        if self.max_output_pixels == 0 || self.max_output_pixels > 1 << 28 {
            return Err("max_output_pixels must be 1 to 268435456".into());
        }
        if self.timeout_ms == 0 || self.fetch_timeout_ms == 0 || self.send_timeout_ms == 0 {
            return Err("timeout_ms, fetch_timeout_ms and send_timeout_ms must be > 0".into());
        }
        if self.max_concurrent > 1024 {
            return Err("max_concurrent must be at most 1024".into());
        }
        if self.max_in_flight == 0 || self.max_in_flight > 4096 {
            return Err("max_in_flight must be 1 to 4096".into());
        }
        if self.cache_mb > 1 << 20 {
            return Err("cache_mb is too large".into());
        }
        Ok(())
    }

    /// Transforms allowed at once.
    pub fn concurrency(&self) -> usize {
        static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        match self.max_concurrent {
            0 => *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
            n => n,
        }
    }
}

/// Validates `[images]` (defaults when absent).
pub(super) fn parse_images(l: &mut Lines<'_>, raw: Option<Spanned<ImagesConfig>>) -> ImagesConfig {
    match raw {
        Some(i) => {
            let span = i.span();
            let i = i.into_inner();
            if let Err(e) = i.check() {
                l.err(Some(span), format!("[images]: {e}"));
            }
            i
        }
        None => Default::default(),
    }
}
