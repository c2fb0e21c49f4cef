//! Request targets made canonical before routing, so that a route guarded by filters
//! cannot be dodged by spelling its path another way (`//echo`, `/./echo`,
//! `/x/../echo`, `/%65cho`, `/%2e%2e/echo`) and the origin, which may normalise paths
//! itself, never serves a different resource than the one Sluice routed.
//!
//! What [`normalize_path`] does, in order, for one pass over the path (the query is
//! left as it is):
//! 1. refuses malformed escapes (`%` not followed by two hex digits) and control
//!    bytes, raw or escaped (`%00`..`%1F`, `%7F`);
//! 2. decodes escaped unreserved characters (RFC 3986 §2.3: `A-Z a-z 0-9 - . _ ~`),
//!    writes other escapes with upper-case hex (§6.2.2.1) and escapes bytes that may
//!    not appear in a path (non-ASCII, `"`, `<`, `{`...);
//! 3. applies the policy to `%2F` ([`PathsConfig::encoded_slashes`]) and to `\` and
//!    `%5C` ([`PathsConfig::backslashes`]): refuse, keep inside the segment, or decode
//!    to a separator;
//! 4. merges repeated slashes ([`PathsConfig::merge_slashes`]);
//! 5. removes dot segments (RFC 3986 §5.2.4; `..` above the root stays at the root);
//! 6. lower-cases the path when [`PathsConfig::case`] is [`Case::Lower`].
//!
//! Decoding comes before dot-segment removal, so `%2e%2e` is `..`. Decoding happens
//! once: `%252e` stays `%252e`, as an origin that decodes once sees it.
//!
//! The normalised path is the one filters see as `:path` and the one the origin
//! receives. Also here: [`prefix_matches`] (route prefixes on segment boundaries),
//! [`normalize_host`] and [`split_query`].
//! No Pingora here.

use serde::Deserialize;

/// What to do with an encoded or backslash separator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Separators {
    /// Refuse the request with 400.
    Reject,
    /// Keep it inside its segment, escaped (`%2F`, `%5C`): it separates nothing.
    Keep,
    /// Decode it to `/`, a separator; slashes are then merged and dot segments removed.
    Decode,
}

/// How letter case in paths is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Case {
    /// Paths are case-sensitive (RFC 3986): `/ECHO` is not `/echo`.
    Sensitive,
    /// Paths are lower-cased (ASCII) before routing, for case-insensitive origins:
    /// filters and the origin see the lower-case path, route prefixes are lower-cased.
    Lower,
}

/// The `[paths]` section of a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PathsConfig {
    /// Normalise paths at all (`false`: route on the raw path and forward it as is).
    pub normalize: bool,
    /// Merge repeated slashes (`//echo` is `/echo`).
    pub merge_slashes: bool,
    /// `%2F` in a path.
    pub encoded_slashes: Separators,
    /// `\` and `%5C` in a path.
    pub backslashes: Separators,
    /// Letter case.
    pub case: Case,
}

impl Default for PathsConfig {
    fn default() -> Self {
        PathsConfig {
            normalize: true,
            merge_slashes: true,
            encoded_slashes: Separators::Reject,
            backslashes: Separators::Reject,
            case: Case::Sensitive,
        }
    }
}

/// Why a request target was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// `%` not followed by two hex digits.
    #[error("malformed percent-escape in the path")]
    MalformedEscape,
    /// A control byte (raw or escaped), NUL included.
    #[error("control byte in the path")]
    ControlByte,
    /// `%2F` while `encoded_slashes = "reject"`.
    #[error("encoded slash (%2F) in the path")]
    EncodedSlash,
    /// `\` or `%5C` while `backslashes = "reject"`.
    #[error("backslash in the path")]
    Backslash,
}

impl PathError {
    /// The metric label of this refusal.
    pub fn reason(self) -> &'static str {
        match self {
            PathError::MalformedEscape => "malformed_escape",
            PathError::ControlByte => "control_byte",
            PathError::EncodedSlash => "encoded_slash",
            PathError::Backslash => "backslash",
        }
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// A byte allowed as is in a path segment (`pchar` less `%`): unreserved, sub-delims,
/// `:` and `@`.
fn is_pchar(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
        )
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// One piece of a path as read: a byte of a segment (escaped or not) or a separator.
enum Piece {
    /// A byte written as is.
    Plain(u8),
    /// A byte written as `%XX`.
    Escaped(u8),
    /// A segment separator.
    Slash,
}

/// Reads `path` into pieces, refusing what the policy refuses.
fn pieces(path: &[u8], cfg: &PathsConfig) -> Result<Vec<Piece>, PathError> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        i += 1;
        let (byte, escaped) = if b == b'%' {
            let (Some(h), Some(l)) = (
                path.get(i).copied().and_then(hex),
                path.get(i + 1).copied().and_then(hex),
            ) else {
                return Err(PathError::MalformedEscape);
            };
            i += 2;
            (h << 4 | l, true)
        } else {
            (b, false)
        };
        if is_control(byte) {
            return Err(PathError::ControlByte);
        }
        let piece = match byte {
            b'/' if !escaped => Piece::Slash,
            b'/' => match cfg.encoded_slashes {
                Separators::Reject => return Err(PathError::EncodedSlash),
                Separators::Keep => Piece::Escaped(b'/'),
                Separators::Decode => Piece::Slash,
            },
            b'\\' => match cfg.backslashes {
                Separators::Reject => return Err(PathError::Backslash),
                Separators::Keep => Piece::Escaped(b'\\'),
                Separators::Decode => Piece::Slash,
            },
            b if is_unreserved(b) => Piece::Plain(b),
            // Escaped reserved characters keep their meaning as data (`%3F` is not `?`).
            b if escaped => Piece::Escaped(b),
            b if is_pchar(b) => Piece::Plain(b),
            b => Piece::Escaped(b),
        };
        out.push(piece);
    }
    Ok(out)
}

/// The canonical form of `path` (which starts with `/`, no query), or `Ok(None)` when
/// it is canonical already (the common case: no allocation).
pub fn normalize_path(path: &[u8], cfg: &PathsConfig) -> Result<Option<String>, PathError> {
    if !cfg.normalize || path.first() != Some(&b'/') {
        return Ok(None);
    }
    if is_canonical(path, cfg) {
        return Ok(None);
    }
    let pieces = pieces(&path[1..], cfg)?;
    // Segments in canonical spelling.
    let mut segments: Vec<String> = vec![String::new()];
    for p in pieces {
        let seg = segments.last_mut().expect("one segment at least");
        match p {
            Piece::Slash => segments.push(String::new()),
            Piece::Plain(b) if cfg.case == Case::Lower => seg.push(b.to_ascii_lowercase() as char),
            Piece::Plain(b) => seg.push(b as char),
            Piece::Escaped(b) => {
                seg.push('%');
                seg.push(HEX[(b >> 4) as usize] as char);
                seg.push(HEX[(b & 15) as usize] as char);
            }
        }
    }
    let last = segments.len() - 1;
    let mut out: Vec<String> = Vec::with_capacity(segments.len());
    for (i, seg) in segments.into_iter().enumerate() {
        let is_last = i == last;
        match seg.as_str() {
            "." => {}
            ".." => {
                out.pop();
            }
            "" if cfg.merge_slashes && !is_last => continue,
            _ => {
                out.push(seg);
                continue;
            }
        }
        // A dot segment at the end leaves a trailing slash (`/a/b/..` is `/a/`).
        if is_last {
            out.push(String::new());
        }
    }
    let canonical = format!("/{}", out.join("/"));
    Ok((canonical.as_bytes() != path).then_some(canonical))
}

/// True when `path` needs no work: pchars and slashes only, no `%`, no empty or dot
/// segment, no upper case under [`Case::Lower`].
fn is_canonical(path: &[u8], cfg: &PathsConfig) -> bool {
    let bytes_ok = path.iter().all(|&b| {
        (b == b'/' || is_pchar(b)) && !(cfg.case == Case::Lower && b.is_ascii_uppercase())
    });
    if !bytes_ok {
        return false;
    }
    let mut segments = path[1..].split(|&b| b == b'/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        if seg == b"." || seg == b".." || (seg.is_empty() && cfg.merge_slashes && !last) {
            return false;
        }
    }
    true
}

/// True when `path` (no query) is under the route prefix `prefix`, on a segment
/// boundary: `/echo` serves `/echo` and `/echo/...`, not `/echoes`. A prefix that ends
/// with `/` is a plain prefix (`/` serves everything).
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        && (prefix.ends_with('/')
            || path.len() == prefix.len()
            || path.as_bytes()[prefix.len()] == b'/')
}

/// The host a route is matched on: lower case, port, IPv6 brackets and one trailing
/// dot removed (`API.Example.com.:8080` is `api.example.com`).
pub fn normalize_host(raw: &str) -> std::borrow::Cow<'_, str> {
    let host = if let Some(v6) = raw.strip_prefix('[') {
        v6.split(']').next().unwrap_or(v6)
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => raw,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    // Most hosts arrive in lower case already: borrowed, no copy.
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

/// The bytes of a host name or IPv4 address in [`is_host_port`]: letters, digits, `-`,
/// `.`, `_` (one look-up a byte, on every request's `Host`).
const HOST_NAME_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_');
        b += 1;
    }
    t
};

/// Whether `v` is `host[:port]` as a `Host` header or a `CONNECT` target spells it: a DNS
/// name or IPv4 address (letters, digits, `-`, `.`, `_`) or a bracketed IPv6 literal,
/// then a port of up to five digits, which `port_required` makes mandatory (and
/// non-empty).
pub fn is_host_port(v: &[u8], port_required: bool) -> bool {
    let (host, port) = match v.iter().rposition(|&b| b == b':') {
        Some(i) if !v[i..].contains(&b']') => (&v[..i], Some(&v[i + 1..])),
        _ => (v, None),
    };
    let host_ok = match host {
        [b'[', inner @ .., b']'] => {
            !inner.is_empty()
                && inner
                    .iter()
                    .all(|b| b.is_ascii_hexdigit() || b":.".contains(b))
        }
        _ => !host.is_empty() && host.iter().all(|&b| HOST_NAME_BYTE[usize::from(b)]),
    };
    let port_ok = match port {
        Some(p) => {
            p.len() <= 5 && p.iter().all(u8::is_ascii_digit) && !(port_required && p.is_empty())
        }
        None => !port_required,
    };
    host_ok && port_ok
}

/// Splits an origin-form target (`/p?q`) into its path and its query with the `?`
/// (empty when none).
pub fn split_query(target: &[u8]) -> (&[u8], &[u8]) {
    let q = target
        .iter()
        .position(|&b| b == b'?')
        .unwrap_or(target.len());
    target.split_at(q)
}

#[cfg(test)]
mod tests;
