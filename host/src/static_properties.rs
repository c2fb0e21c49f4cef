//! Read-only properties the embedder answers for every plugin: facts about the program
//! that runs the host (Sluice's image output formats, say) that the host itself must not
//! know. They come in as a value on the [`Engine`](crate::Engine), so the host never
//! reaches into its embedder's code.

use std::collections::BTreeMap;
use std::sync::Arc;

/// A table of read-only properties, path (dotted, as `proxy_get_property` joins its
/// segments) to value, answered by `proxy_get_property` before any stream property.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaticProperties {
    values: BTreeMap<String, Arc<[u8]>>,
}

impl StaticProperties {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The table with `path` set to `value` (replacing an earlier value).
    pub fn with(mut self, path: impl Into<String>, value: impl AsRef<[u8]>) -> Self {
        self.values.insert(path.into(), Arc::from(value.as_ref()));
        self
    }

    /// The value at `path`, if the embedder gave one.
    pub fn get(&self, path: &str) -> Option<&[u8]> {
        self.values.get(path).map(|v| &v[..])
    }

    /// Every property, in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.values.iter().map(|(k, v)| (k.as_str(), &v[..]))
    }
}
