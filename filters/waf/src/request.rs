//! The request line and headers the rules see, built from what the host offers: Sluice's
//! `sluice.request_head` property (the HTTP/1 head as received: header names in the client's
//! case, hop-by-hop headers such as `Connection`, no `Host` added), else its header map
//! (pseudo-headers `:method`, `:path`, `:authority` first, as Proxy-Wasm hosts give them);
//! and, for a target the host rewrote (absolute-form, or bytes encoded for its parser),
//! Sluice's `sluice.request_target` property.

/// Method, target and headers of a request as the client sent them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestHead {
    /// `GET`, ...
    pub method: String,
    /// The request target as sent: origin-form `/path?q`, or absolute-form `http://host/path?q`.
    pub target: String,
    /// Headers without pseudo-headers; `Host` from `:authority` when the host folded it there.
    pub headers: Vec<(String, String)>,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
}

impl RequestHead {
    /// Builds the head from the host's header pairs and the absolute-form target, if any.
    ///
    /// Hosts such as Sluice and Envoy keep `Host` only as `:authority`: it becomes a `host`
    /// header again, unless it is empty (a request sent without `Host` has none in
    /// `REQUEST_HEADERS`, as in ModSecurity).
    pub fn from_host(pairs: Vec<(String, String)>, absolute_target: Option<String>) -> RequestHead {
        Self::from_host_and_head(pairs, absolute_target, None)
    }

    /// As [`RequestHead::from_host`], but from `received` (the head as received, request line
    /// and header lines) when the host offers it: names keep their case, every header the
    /// client sent is there (hop-by-hop ones too) and none the host added.
    pub fn from_host_and_head(
        pairs: Vec<(String, String)>,
        absolute_target: Option<String>,
        received: Option<String>,
    ) -> RequestHead {
        Self::from_head_or_host(|| pairs, absolute_target, received)
    }

    /// As [`RequestHead::from_host_and_head`], but the host's header pairs are asked for
    /// (`pairs` called) only when `received` is absent or not a request head: the filter
    /// then reads no header map (a host call and a copy of every name and value) when the
    /// host offers the head as received.
    pub fn from_head_or_host(
        pairs: impl FnOnce() -> Vec<(String, String)>,
        absolute_target: Option<String>,
        received: Option<String>,
    ) -> RequestHead {
        if let Some(mut head) = received.as_deref().and_then(parse_received) {
            if let Some(t) = absolute_target.filter(|t| !t.is_empty()) {
                head.target = t;
            }
            return head;
        }
        let pairs = pairs();
        let mut head = RequestHead {
            method: "GET".into(),
            target: "/".into(),
            ..RequestHead::default()
        };
        let mut authority = None;
        let mut has_host = false;
        for (k, v) in pairs {
            match k.as_str() {
                ":method" => head.method = v,
                ":path" => head.target = v,
                ":authority" => authority = Some(v),
                k if k.starts_with(':') => {}
                _ => {
                    has_host |= k.eq_ignore_ascii_case("host");
                    if k.eq_ignore_ascii_case("content-type") {
                        head.content_type = Some(v.clone());
                    }
                    head.headers.push((k, v));
                }
            }
        }
        if !has_host {
            if let Some(a) = authority.filter(|a| !a.is_empty()) {
                head.headers.insert(0, ("host".to_string(), a));
            }
        }
        if let Some(t) = absolute_target.filter(|t| !t.is_empty()) {
            head.target = t;
        }
        head
    }
}

/// Parses a head as received: `METHOD SP target SP version`, then `Name: value` lines (a
/// line starting with a space or tab continues the previous value), up to the blank line.
/// `None` when the request line is not one.
fn parse_received(text: &str) -> Option<RequestHead> {
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let line = lines.next()?;
    let (method, rest) = line.split_once(' ')?;
    let target = match rest.rsplit_once(' ') {
        Some((t, v)) if v.starts_with("HTTP/") => t,
        _ => rest,
    };
    if method.is_empty() || target.is_empty() {
        return None;
    }
    let mut head = RequestHead {
        method: method.to_string(),
        target: target.to_string(),
        ..RequestHead::default()
    };
    for l in lines {
        if l.is_empty() {
            break;
        }
        if l.starts_with([' ', '\t']) {
            if let Some((_, v)) = head.headers.last_mut() {
                v.push(' ');
                v.push_str(l.trim_matches([' ', '\t']));
            }
            continue;
        }
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        head.headers
            .push((k.to_string(), v.trim_matches([' ', '\t']).to_string()));
    }
    // A message with Transfer-Encoding is framed by it: its Content-Length is dropped on
    // receipt (RFC 9112 §6.3), as Sluice's parser and ModSecurity 2's Apache do.
    if head
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"))
    {
        head.headers
            .retain(|(k, _)| !k.eq_ignore_ascii_case("content-length"));
    }
    head.content_type = head
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.clone());
    Some(head)
}

#[cfg(test)]
mod tests {
    use super::RequestHead;

    #[test]
    fn received_head_keeps_names_hop_by_hop_and_adds_no_host() {
        let received = "POST http://ex.com/a?b=<c> HTTP/1.1\r\nUser-Agent: t\r\nConnection: keep-alive, keep-alive\r\n\
                        X-Folded: one\r\n two\r\nContent-Type: text/xml\r\n\r\n";
        // The host's map: lower-case names, Connection gone, Host added from the target.
        let h = RequestHead::from_host_and_head(
            pairs(&[
                (":method", "POST"),
                (":path", "/a?b=%3Cc%3E"),
                (":authority", "ex.com"),
                ("user-agent", "t"),
            ]),
            Some("http://ex.com/a?b=<c>".into()),
            Some(received.into()),
        );
        assert_eq!(h.method, "POST");
        assert_eq!(h.target, "http://ex.com/a?b=<c>");
        assert_eq!(
            h.headers,
            pairs(&[
                ("User-Agent", "t"),
                ("Connection", "keep-alive, keep-alive"),
                ("X-Folded", "one two"),
                ("Content-Type", "text/xml"),
            ])
        );
        assert_eq!(h.content_type.as_deref(), Some("text/xml"));
        // Transfer-Encoding frames the body: a Content-Length beside it is dropped.
        let h = RequestHead::from_host_and_head(
            Vec::new(),
            None,
            Some(
                "POST / HTTP/1.1\r\nContent-Length: 7\r\nTransfer-Encoding: chunked\r\n\r\n".into(),
            ),
        );
        assert_eq!(h.headers, pairs(&[("Transfer-Encoding", "chunked")]));
        // Not a request line: the host's map is used.
        let h = RequestHead::from_host_and_head(
            pairs(&[(":method", "GET"), (":path", "/p"), ("accept", "*/*")]),
            None,
            Some("garbage".into()),
        );
        assert_eq!((h.target.as_str(), h.headers.len()), ("/p", 1));
    }

    #[test]
    fn host_map_read_only_without_a_received_head() {
        let h = RequestHead::from_head_or_host(
            || panic!("the header map is not read when the head parses"),
            None,
            Some("GET /x HTTP/1.1\r\nAccept: */*\r\n\r\n".into()),
        );
        assert_eq!((h.target.as_str(), h.headers.len()), ("/x", 1));
        let h = RequestHead::from_head_or_host(|| pairs(&[(":path", "/p")]), None, None);
        assert_eq!(h.target, "/p");
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn host_absent_means_absent() {
        let h = RequestHead::from_host(
            pairs(&[
                (":authority", ""),
                (":path", "/a"),
                (":method", "GET"),
                ("accept", "*/*"),
            ]),
            None,
        );
        assert_eq!(h.headers, pairs(&[("accept", "*/*")]));
        let h = RequestHead::from_host(
            pairs(&[
                (":authority", "ex.com"),
                (":path", "/a"),
                ("content-type", "text/xml"),
            ]),
            None,
        );
        assert_eq!(h.headers[0], ("host".to_string(), "ex.com".to_string()));
        assert_eq!(h.content_type.as_deref(), Some("text/xml"));
    }

    #[test]
    fn absolute_form_target_as_sent() {
        let h = RequestHead::from_host(
            pairs(&[(":authority", "h"), (":path", "/p?q"), (":method", "POST")]),
            Some("http://h/x/../p?q".into()),
        );
        assert_eq!(h.method, "POST");
        assert_eq!(h.target, "http://h/x/../p?q");
    }
}
