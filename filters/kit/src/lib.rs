//! The boilerplate every Sluice guest filter repeats, once: reading the plugin
//! configuration as JSON, the root context that shares it with each stream, and the
//! `proxy_wasm::main!` entry point.
//!
//! A filter implements [`Filter`] (its name, how it reads its configuration, how it makes
//! a stream) and calls [`main!`]. The kit's [`Root`] then answers `on_configure`: it
//! parses the configuration ([`Filter::parse`], usually with [`json_or_default`] or
//! [`json_required`]), logs `<name>: invalid config: <reason>` at error level and returns
//! `false` when that fails, and otherwise hands an `Rc` of the result to every stream.
//!
//! ```ignore
//! use kit::proxy_wasm::traits::{Context, HttpContext};
//! use kit::proxy_wasm::types::Action;
//! use std::rc::Rc;
//!
//! #[derive(Default, serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Config { #[serde(default)] tag: String }
//!
//! struct Tag;
//! impl kit::Filter for Tag {
//!     const NAME: &'static str = "tag";
//!     type Config = Config;
//!     fn parse(raw: Option<&[u8]>) -> Result<Config, String> { kit::json_or_default(raw) }
//!     fn http_context(config: Option<Rc<Config>>, _id: u32) -> Option<Box<dyn HttpContext>> {
//!         Some(Box::new(Stream(config.unwrap_or_default())))
//!     }
//! }
//!
//! struct Stream(Rc<Config>);
//! impl Context for Stream {}
//! impl HttpContext for Stream {
//!     fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
//!         self.set_http_request_header("x-tag", Some(&self.0.tag));
//!         Action::Continue
//!     }
//! }
//!
//! kit::main!(Tag);
//! ```
//!
//! The crate is a plain library (`kit` in code, `sluice-filter-kit` in `Cargo.toml`); it
//! adds no code a filter does not call. Filters whose root does more than this (the WAF's
//! host files and matchers, `background`'s paused streams, `image`'s metrics) use the
//! helpers ([`log`], [`json_or_default`]) with their own root context.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};
use serde::de::DeserializeOwned;
use std::rc::Rc;

/// The SDK, for [`main!`] and for filters that name it through the kit.
pub use proxy_wasm;

/// Logs `msg` at `level` through `proxy_log`; a refusal by the host is ignored (there is
/// nowhere else to report it).
pub fn log(level: LogLevel, msg: &str) {
    let _ = hostcalls::log(level, msg);
}

/// Is a plugin configuration absent, empty or whitespace only?
pub fn is_blank(raw: Option<&[u8]>) -> bool {
    raw.is_none_or(|b| b.iter().all(u8::is_ascii_whitespace))
}

/// A JSON configuration; absent or blank = `T::default()`. The error is serde's message.
pub fn json_or_default<T: DeserializeOwned + Default>(raw: Option<&[u8]>) -> Result<T, String> {
    match raw {
        Some(b) if !is_blank(raw) => serde_json::from_slice(b).map_err(|e| e.to_string()),
        _ => Ok(T::default()),
    }
}

/// A JSON configuration with a required key: absent or blank is the error
/// ``missing config: `<required>` is required``.
pub fn json_required<T: DeserializeOwned>(raw: Option<&[u8]>, required: &str) -> Result<T, String> {
    match raw {
        Some(b) if !is_blank(raw) => serde_json::from_slice(b).map_err(|e| e.to_string()),
        _ => Err(format!("missing config: `{required}` is required")),
    }
}

/// A filter built on the kit's [`Root`]: its name, its configuration and its streams.
pub trait Filter: 'static {
    /// Prefix of the filter's log lines (`<NAME>: invalid config: ...`).
    const NAME: &'static str;
    /// What the line logged when [`Filter::parse`] fails calls the configuration:
    /// `<NAME>: <CONFIG_ERROR>: <reason>`.
    const CONFIG_ERROR: &'static str = "invalid config";
    /// Passed to `proxy_wasm::set_log_level` by [`main!`].
    const LOG_LEVEL: LogLevel = LogLevel::Trace;
    /// The filter takes no configuration: `on_configure` succeeds without reading it (nor
    /// calling [`Filter::parse`] and [`Filter::configured`]).
    const NO_CONFIG: bool = false;
    /// The parsed configuration, shared by the streams.
    type Config: 'static;

    /// Parses and checks the plugin configuration (`None`: the host sent none).
    fn parse(raw: Option<&[u8]>) -> Result<Self::Config, String>;

    /// The configuration streams get before `on_configure` succeeded (`None`: none).
    fn unconfigured() -> Option<Self::Config> {
        None
    }

    /// After a successful [`Filter::parse`], before the streams see the configuration:
    /// what configuring does besides parsing (define metrics, set the tick period). An
    /// error is logged as `<NAME>: <error>` and fails `on_configure`.
    fn configured(_config: &mut Self::Config) -> Result<(), String> {
        Ok(())
    }

    /// The context of a new stream, given the configuration (`None` only if the host
    /// creates streams without a successful configure and [`Filter::unconfigured`] is `None`).
    fn http_context(
        config: Option<Rc<Self::Config>>,
        context_id: u32,
    ) -> Option<Box<dyn HttpContext>>;

    /// The root context's tick (`proxy_on_tick`).
    fn on_tick(_config: Option<&Rc<Self::Config>>) {}

    /// A shared queue the root registered has items (`proxy_on_queue_ready`).
    fn on_queue_ready(_config: Option<&Rc<Self::Config>>, _queue_id: u32) {}
}

/// The root context of a [`Filter`]: parses the configuration in `on_configure` and
/// creates the streams with a shared `Rc` of it.
pub struct Root<F: Filter> {
    config: Option<Rc<F::Config>>,
}

impl<F: Filter> Root<F> {
    /// A root context holding [`Filter::unconfigured`].
    pub fn new() -> Self {
        Root {
            config: F::unconfigured().map(Rc::new),
        }
    }
}

impl<F: Filter> Default for Root<F> {
    fn default() -> Self {
        Self::new()
    }
}

impl<F: Filter> Context for Root<F> {}

impl<F: Filter> RootContext for Root<F> {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        if F::NO_CONFIG {
            return true;
        }
        let raw = self.get_plugin_configuration();
        let mut config = match F::parse(raw.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                log(
                    LogLevel::Error,
                    &format!("{}: {}: {e}", F::NAME, F::CONFIG_ERROR),
                );
                return false;
            }
        };
        if let Err(e) = F::configured(&mut config) {
            log(LogLevel::Error, &format!("{}: {e}", F::NAME));
            return false;
        }
        self.config = Some(Rc::new(config));
        true
    }

    fn on_tick(&mut self) {
        F::on_tick(self.config.as_ref());
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        F::on_queue_ready(self.config.as_ref(), queue_id);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        F::http_context(self.config.clone(), context_id)
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// The module's entry point for a [`Filter`]: sets the log level ([`Filter::LOG_LEVEL`])
/// and the kit's [`Root`] as the root context. Use once per filter crate.
#[macro_export]
macro_rules! main {
    ($filter:ty) => {
        $crate::proxy_wasm::main! {{
            $crate::proxy_wasm::set_log_level(<$filter as $crate::Filter>::LOG_LEVEL);
            $crate::proxy_wasm::set_root_context(
                |_| -> Box<dyn $crate::proxy_wasm::traits::RootContext> {
                    Box::new($crate::Root::<$filter>::new())
                },
            );
        }}
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct C {
        #[serde(default)]
        a: u32,
    }

    #[test]
    fn blank_is_default_or_missing() {
        for raw in [None, Some(&b""[..]), Some(&b" \n\t"[..])] {
            assert!(is_blank(raw));
            assert_eq!(json_or_default::<C>(raw), Ok(C::default()));
            assert_eq!(
                json_required::<C>(raw, "a"),
                Err("missing config: `a` is required".to_string())
            );
        }
    }

    #[test]
    fn json_is_parsed_and_errors_are_serdes() {
        assert_eq!(json_or_default::<C>(Some(br#"{"a": 2}"#)), Ok(C { a: 2 }));
        assert_eq!(
            json_required::<C>(Some(br#"{"a": 2}"#), "a"),
            Ok(C { a: 2 })
        );
        let e = json_or_default::<C>(Some(br#"{"b": 1}"#)).unwrap_err();
        assert!(e.starts_with("unknown field `b`"), "{e}");
    }
}
