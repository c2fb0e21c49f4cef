//! The variant cache (bounded by bytes) and the transform slots, process-wide.
//!
//! Keyed by the request host, the source path and the whole spec (which holds the
//! negotiated format); each entry remembers the source validator (ETag or
//! Last-Modified, else a hash of the source bytes) it was made from, so an entry is
//! only served for that validator: the origin confirms it with a 304 or by sending
//! the same validator again.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Semaphore;

use crate::policy::ImagesConfig;

/// A transformed image and what its response needs.
#[derive(Debug)]
pub struct Variant {
    /// Validator of the source it was made from.
    pub validator: String,
    /// The source's ETag, sent back as `If-None-Match`.
    pub source_etag: Option<String>,
    /// The source's Last-Modified (sent as `If-Modified-Since`, and in responses).
    pub last_modified: Option<String>,
    /// Origin `Cache-Control`.
    pub cache_control: Option<String>,
    /// Origin `Expires`.
    pub expires: Option<String>,
    /// ETag of this variant (quoted).
    pub etag: String,
    /// Media type.
    pub content_type: &'static str,
    /// `Vary: Accept`.
    pub vary_accept: bool,
    /// Encoded image.
    pub body: Bytes,
}

#[derive(Clone)]
struct Weigh;

impl quick_cache::Weighter<String, Arc<Variant>> for Weigh {
    fn weight(&self, key: &String, v: &Arc<Variant>) -> u64 {
        (key.len() + v.body.len() + 512) as u64
    }
}

/// Process-wide image state: cache and transform slots, rebuilt when a policy
/// changes their sizes.
pub struct ImageEngine {
    cache_mb: u64,
    max_concurrent: usize,
    cache: Option<quick_cache::sync::Cache<String, Arc<Variant>, Weigh>>,
    /// Transform slots.
    pub slots: Arc<Semaphore>,
}

impl ImageEngine {
    /// The engine for `cfg` (the current one when its sizes match).
    pub fn get(cfg: &ImagesConfig) -> Arc<ImageEngine> {
        static E: Mutex<Option<Arc<ImageEngine>>> = Mutex::new(None);
        let mut g = E.lock().unwrap_or_else(|p| p.into_inner());
        let want = cfg.concurrency();
        if let Some(e) = g.as_ref() {
            if e.cache_mb == cfg.cache_mb && e.max_concurrent == want {
                return e.clone();
            }
        }
        let bytes = cfg.cache_mb << 20;
        let e = Arc::new(ImageEngine {
            cache_mb: cfg.cache_mb,
            max_concurrent: want,
            cache: (bytes > 0).then(|| {
                let items = (bytes / (16 << 10)).clamp(16, 1 << 20) as usize;
                quick_cache::sync::Cache::with_weighter(items, bytes, Weigh)
            }),
            slots: Arc::new(Semaphore::new(want)),
        });
        *g = Some(e.clone());
        e
    }

    /// True when variants are cached.
    pub fn caches(&self) -> bool {
        self.cache.is_some()
    }

    /// The cached variant for `key`.
    pub fn lookup(&self, key: &str) -> Option<Arc<Variant>> {
        self.cache.as_ref()?.get(key)
    }

    /// Stores a variant.
    pub fn store(&self, key: String, v: Arc<Variant>) {
        if let Some(c) = &self.cache {
            c.insert(key, v);
            crate::metrics::metrics()
                .image_cache_bytes
                .set(c.weight() as i64);
        }
    }
}
