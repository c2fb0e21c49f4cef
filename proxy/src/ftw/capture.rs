//! The WAF's log lines of each request, caught in-process: a `tracing` layer keeps
//! every line filters log (target `sluice::filter`, what `proxy_log` emits), and the
//! WAF's audit lines (`waf: {json}`) are read for their `request_id` and rule ids.
//!
//! Why a layer and not go-ftw's marker requests around a log file: go-ftw cannot tell
//! which lines of a shared log belong to a request, so it brackets each stage with
//! marker requests that a test-only rule logs. In-process the lines arrive as events;
//! each audit line names its request, and the response names it too (`x-request-id`),
//! so a stage's lines are picked by id, with no extra requests and no test-only rule
//! in the user's policy. Stages run one at a time; a stage whose response carries no
//! request id (refused by the HTTP layer, or no response at all) takes the lines logged
//! while it ran.

use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// One log line of a filter.
#[derive(Debug, Clone)]
pub struct Line {
    /// The plugin that logged it.
    pub plugin: String,
    /// The text.
    pub text: String,
    /// The request the WAF's audit line names.
    pub request_id: Option<String>,
    /// Rule ids of an audit line's matches (id 0, unnamed rules, left out).
    pub ids: Vec<u64>,
    /// A ModSecurity-style `[id "N"] [msg "..."] [data "..."]` line per match, so the
    /// older `log_contains: id "942100"` patterns match.
    pub modsec: Vec<String>,
}

/// The lines caught so far, shared by the layer and the runner.
#[derive(Clone, Default)]
pub struct Store(Arc<Mutex<Vec<Line>>>);

impl Store {
    /// How many lines there are: a mark to read from.
    pub fn mark(&self) -> usize {
        self.0.lock().map(|l| l.len()).unwrap_or(0)
    }

    /// The lines after `mark`.
    pub fn since(&self, mark: usize) -> Vec<Line> {
        self.0
            .lock()
            .map(|l| l.get(mark..).map(<[Line]>::to_vec).unwrap_or_default())
            .unwrap_or_default()
    }

    /// The layer that fills this store.
    pub fn layer(&self) -> CaptureLayer {
        CaptureLayer(self.clone())
    }
}

/// A `tracing` layer keeping filters' log lines in a [`Store`].
pub struct CaptureLayer(Store);

#[derive(Default)]
struct Fields {
    message: String,
    plugin: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "plugin" => self.plugin = value.to_string(),
            "message" => self.message = value.to_string(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "plugin" => self.plugin = format!("{value:?}").trim_matches('"').to_string(),
            _ => {}
        }
    }
}

impl<S: Subscriber> Layer<S> for CaptureLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != "sluice::filter" {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        let line = parse(f.plugin, f.message);
        if let Ok(mut lines) = self.0 .0.lock() {
            lines.push(line);
        }
    }
}

/// Reads an audit line's request id and matches; other lines are kept as text.
pub fn parse(plugin: String, text: String) -> Line {
    let mut line = Line {
        plugin,
        text,
        request_id: None,
        ids: Vec::new(),
        modsec: Vec::new(),
    };
    let Some(json) = line.text.strip_prefix("waf: ") else {
        return line;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
        return line;
    };
    line.request_id = v["request_id"].as_str().map(str::to_string);
    for r in v["rules"].as_array().into_iter().flatten() {
        let id = r["id"].as_u64().unwrap_or(0);
        if id == 0 {
            // ModSecurity logs no line for a match without an id.
            continue;
        }
        line.ids.push(id);
        line.modsec.push(format!(
            "[id \"{id}\"] [msg \"{}\"] [data \"{}\"]",
            r["msg"].as_str().unwrap_or_default(),
            r["data"].as_str().unwrap_or_default()
        ));
    }
    line
}
