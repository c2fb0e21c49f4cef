//! The request line and headers the rules see, built from what the host offers: its header map
//! (pseudo-headers `:method`, `:path`, `:authority` first, as Proxy-Wasm hosts give them) and,
//! for an absolute-form target, Sluice's `sluice.request_target` property.

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

#[cfg(test)]
mod tests {
    use super::RequestHead;

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
