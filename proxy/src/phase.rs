//! The phases a filter runs in and what its callbacks amount to, as enums: the chain
//! runs by [`Phase`], metrics and the access log label by [`Phase::as_str`] and
//! [`Verdict::as_str`] (the label values Prometheus sees).

/// A phase of a filter's stream: which callback ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// `proxy_on_request_headers`.
    RequestHeaders,
    /// `proxy_on_request_body`.
    RequestBody,
    /// `proxy_on_response_headers`.
    ResponseHeaders,
    /// `proxy_on_response_body`.
    ResponseBody,
    /// `proxy_on_http_call_response`.
    HttpCallResponse,
    /// `proxy_on_log` (and the end of the stream).
    Log,
}

impl Phase {
    /// Every phase, in the order metrics are registered.
    pub const ALL: [Phase; 6] = [
        Phase::RequestHeaders,
        Phase::RequestBody,
        Phase::ResponseHeaders,
        Phase::ResponseBody,
        Phase::HttpCallResponse,
        Phase::Log,
    ];

    /// The metric label value (`phase="..."`) and access-log name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::RequestHeaders => "request_headers",
            Phase::RequestBody => "request_body",
            Phase::ResponseHeaders => "response_headers",
            Phase::ResponseBody => "response_body",
            Phase::HttpCallResponse => "http_call_response",
            Phase::Log => "log",
        }
    }

    /// The position in [`Phase::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// What a filter callback amounted to: the `action` label of
/// `sluice_filter_actions_total`. Wider than the Proxy-Wasm action a callback returns
/// ([`crate::host::Action`]): a local response or a reset ends the stream whatever the
/// callback returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The callback let the stream go on.
    Continue,
    /// The callback paused the stream.
    Pause,
    /// The filter answered locally.
    LocalResponse,
    /// The filter reset the stream.
    Reset,
}

impl Verdict {
    /// Every verdict, in the order metrics are registered.
    pub const ALL: [Verdict; 4] = [
        Verdict::Continue,
        Verdict::Pause,
        Verdict::LocalResponse,
        Verdict::Reset,
    ];

    /// The metric label value (`action="..."`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::Continue => "continue",
            Verdict::Pause => "pause",
            Verdict::LocalResponse => "local_response",
            Verdict::Reset => "reset",
        }
    }

    /// The position in [`Verdict::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_stable() {
        let phases: Vec<_> = Phase::ALL.iter().map(|p| p.as_str()).collect();
        assert_eq!(
            phases,
            [
                "request_headers",
                "request_body",
                "response_headers",
                "response_body",
                "http_call_response",
                "log"
            ]
        );
        let verdicts: Vec<_> = Verdict::ALL.iter().map(|v| v.as_str()).collect();
        assert_eq!(verdicts, ["continue", "pause", "local_response", "reset"]);
        for (i, p) in Phase::ALL.iter().enumerate() {
            assert_eq!(p.index(), i);
        }
        for (i, v) in Verdict::ALL.iter().enumerate() {
            assert_eq!(v.index(), i);
        }
    }
}
