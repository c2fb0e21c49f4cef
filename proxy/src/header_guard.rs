//! Checks of a header section made before routing and before any filter sees it, as
//! Envoy's HTTP codecs and `max_request_headers_kb` / `max_headers_count` do:
//!
//! - a request whose header section is larger than `max_header_bytes`, or has more than
//!   `max_header_count` fields, gets 431;
//! - a field name that is not an RFC 9110 token, or a value holding a control byte other
//!   than HTAB (NUL, CR, LF, DEL...), gets 400 (Pingora's HTTP/1 parser and the `h2`
//!   crate refuse them already; checked again here so no codec can let one through);
//! - on a route that runs filters, a value that is not valid UTF-8 (obs-text, 0x80-0xFF,
//!   that does not form UTF-8) gets 400 unless the policy says `non_utf8_headers =
//!   "pass"`: the Proxy-Wasm Rust SDK turns header values into `String`s with `unwrap`
//!   (`get_http_request_headers`, `get_http_request_header`), so such a byte would make
//!   most filters panic. The same rule answers 502 for an upstream response whose
//!   headers a filter would read.
//!
//! Plain functions over names and values: no Pingora, no wasm.

/// What happens to header values that are not valid UTF-8 on routes with filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NonUtf8 {
    /// Refuse the request (400) or the upstream response (502): no guest sees the bytes.
    #[default]
    Reject,
    /// Hand the bytes to filters as they are, as Envoy does; filters must read headers
    /// with the SDK's `_bytes` calls (`get_http_request_headers_bytes`...).
    Pass,
}

/// The header rules of a policy (`[limits]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRules {
    /// Most bytes of a request's header section: names and values of its fields plus
    /// the method and the request target, as Envoy counts its header map.
    pub max_bytes: usize,
    /// Most fields in a request's header section.
    pub max_count: usize,
    /// Header values that are not UTF-8, on routes with filters.
    pub non_utf8: NonUtf8,
}

/// Envoy's `max_request_headers_kb` default: 60 KiB.
pub const DEFAULT_MAX_BYTES: usize = 60 << 10;
/// Envoy's `max_headers_count` default.
pub const DEFAULT_MAX_COUNT: usize = 100;
/// The largest `max_header_bytes` a policy may set. Filters may grow a header map to
/// `host::abi::headers::MAX_MAP_BYTES` (256 KiB): this leaves them at least 128 KiB.
pub const MAX_MAX_BYTES: usize = 128 << 10;
/// The largest `max_header_count` a policy may set: Pingora's HTTP/1 parser takes at
/// most 256 fields (and answers 400 beyond).
pub const MAX_MAX_COUNT: usize = 256;

impl Default for HeaderRules {
    fn default() -> Self {
        HeaderRules {
            max_bytes: DEFAULT_MAX_BYTES,
            max_count: DEFAULT_MAX_COUNT,
            non_utf8: NonUtf8::Reject,
        }
    }
}

/// Why a header section was refused, with the status to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderRefusal {
    /// The section is larger than `max_header_bytes` (431).
    TooLarge,
    /// The section has more than `max_header_count` fields (431).
    TooMany,
    /// A field name is not a token (400).
    BadName,
    /// A field value holds a control byte other than HTAB (400).
    BadValue,
    /// A field value is not UTF-8 and filters would read it (400; 502 for a response).
    NotUtf8,
}

impl HeaderRefusal {
    /// The metric label (`sluice_header_refusals_total{reason}`).
    pub fn reason(self) -> &'static str {
        match self {
            HeaderRefusal::TooLarge => "too_large",
            HeaderRefusal::TooMany => "too_many",
            HeaderRefusal::BadName => "bad_name",
            HeaderRefusal::BadValue => "bad_value",
            HeaderRefusal::NotUtf8 => "not_utf8",
        }
    }

    /// The status a request refused for this gets.
    pub fn status(self) -> u16 {
        match self {
            HeaderRefusal::TooLarge | HeaderRefusal::TooMany => 431,
            _ => 400,
        }
    }

    /// The plain-text body of the answer.
    pub fn message(self) -> &'static str {
        match self {
            HeaderRefusal::TooLarge => "request header section too large\n",
            HeaderRefusal::TooMany => "too many request header fields\n",
            HeaderRefusal::BadName => "invalid byte in a request header name\n",
            HeaderRefusal::BadValue => "invalid byte in a request header value\n",
            HeaderRefusal::NotUtf8 => "request header values must be UTF-8\n",
        }
    }
}

/// RFC 9110 `tchar`: a byte of a header name or of a token such as a `Connection` option.
pub fn is_token_byte(b: u8) -> bool {
    matches!(b,
        b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_'
        | b'`' | b'|' | b'~' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
}

/// RFC 9110 `field-content` bytes: HTAB, SP, VCHAR and obs-text.
fn is_value_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

fn check_field(name: &[u8], value: &[u8], utf8: bool) -> Result<(), HeaderRefusal> {
    if name.is_empty() || !name.iter().copied().all(is_token_byte) {
        return Err(HeaderRefusal::BadName);
    }
    if !value.iter().copied().all(is_value_byte) {
        return Err(HeaderRefusal::BadValue);
    }
    if utf8 && !value.is_ascii() && std::str::from_utf8(value).is_err() {
        return Err(HeaderRefusal::NotUtf8);
    }
    Ok(())
}

impl HeaderRules {
    /// Checks a request's header section. `filtered`: the request's route runs filters
    /// (only then are non-UTF-8 values refused).
    pub fn check_request<'a>(
        &self,
        method: &str,
        target: &str,
        fields: impl Iterator<Item = (&'a [u8], &'a [u8])>,
        filtered: bool,
    ) -> Result<(), HeaderRefusal> {
        let utf8 = filtered && self.non_utf8 == NonUtf8::Reject;
        let mut bytes = method.len() + target.len();
        let mut count = 0usize;
        let mut invalid = None;
        for (name, value) in fields {
            count += 1;
            bytes += name.len() + value.len();
            if invalid.is_none() {
                invalid = check_field(name, value, utf8).err();
            }
        }
        // Size first: a refusal for size tells the client what to fix.
        if bytes > self.max_bytes {
            return Err(HeaderRefusal::TooLarge);
        }
        if count > self.max_count {
            return Err(HeaderRefusal::TooMany);
        }
        invalid.map_or(Ok(()), Err)
    }

    /// Checks an upstream response's header section before filters read it: only the
    /// bytes filters cannot represent are refused (the caller answers 502).
    pub fn check_response<'a>(
        &self,
        fields: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Result<(), HeaderRefusal> {
        if self.non_utf8 == NonUtf8::Pass {
            return Ok(());
        }
        for (_, value) in fields {
            if !value.is_ascii() && std::str::from_utf8(value).is_err() {
                return Err(HeaderRefusal::NotUtf8);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(
        rules: &HeaderRules,
        fields: &[(&[u8], &[u8])],
        filtered: bool,
    ) -> Result<(), HeaderRefusal> {
        rules.check_request("GET", "/", fields.iter().copied(), filtered)
    }

    #[test]
    fn bytes_are_judged_like_envoys_codecs() {
        let r = HeaderRules::default();
        assert_eq!(req(&r, &[(b"a", b"plain text\tok")], true), Ok(()));
        assert_eq!(req(&r, &[(b"a", "caf\u{e9}".as_bytes())], true), Ok(()));
        assert_eq!(
            req(&r, &[(b"a", b"\xff")], true),
            Err(HeaderRefusal::NotUtf8),
            "obs-text that is not UTF-8, on a filtered route"
        );
        assert_eq!(req(&r, &[(b"a", b"\xff")], false), Ok(()));
        let pass = HeaderRules {
            non_utf8: NonUtf8::Pass,
            ..r
        };
        assert_eq!(req(&pass, &[(b"a", b"\xff")], true), Ok(()));
        for bad in [&b"a\x00b"[..], b"a\rb", b"a\nb", b"\x01", b"\x7f", b"\x1f"] {
            assert_eq!(
                req(&pass, &[(b"a", bad)], false),
                Err(HeaderRefusal::BadValue),
                "{bad:?}"
            );
        }
        for bad in [&b"a b"[..], b"\xff", b"a:b", b"", b"a\x00"] {
            assert_eq!(req(&r, &[(bad, b"v")], false), Err(HeaderRefusal::BadName));
        }
    }

    #[test]
    fn size_and_count_get_431_first() {
        let r = HeaderRules {
            max_bytes: 100,
            max_count: 3,
            non_utf8: NonUtf8::Reject,
        };
        let big = vec![b'x'; 100];
        assert_eq!(req(&r, &[(b"a", &big)], true), Err(HeaderRefusal::TooLarge));
        assert_eq!(
            req(&r, &[(b"a", &big), (b"b", b"\xff")], true),
            Err(HeaderRefusal::TooLarge)
        );
        let four: Vec<(&[u8], &[u8])> = vec![(b"a", b"1"); 4];
        assert_eq!(req(&r, &four, true), Err(HeaderRefusal::TooMany));
        assert_eq!(req(&r, &four[..3], true), Ok(()));
        assert_eq!(HeaderRefusal::TooLarge.status(), 431);
        assert_eq!(HeaderRefusal::NotUtf8.status(), 400);
    }

    #[test]
    fn responses_are_refused_only_for_non_utf8() {
        let r = HeaderRules::default();
        let ok: [(&[u8], &[u8]); 1] = [(b"a", "\u{e9}".as_bytes())];
        assert_eq!(r.check_response(ok.iter().copied()), Ok(()));
        let bad: [(&[u8], &[u8]); 1] = [(b"a", b"\xe9")];
        assert_eq!(
            r.check_response(bad.iter().copied()),
            Err(HeaderRefusal::NotUtf8)
        );
        let pass = HeaderRules {
            non_utf8: NonUtf8::Pass,
            ..r
        };
        assert_eq!(pass.check_response(bad.iter().copied()), Ok(()));
    }
}
