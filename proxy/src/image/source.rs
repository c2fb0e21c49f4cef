//! What the host accepts as an image source, whatever the filter decided: a plain
//! path (no dot segments, no encoded separators, no control bytes) and a response
//! whose media type the spec allows.

/// Media types of sources when the spec names none: what this build decodes.
pub const DEFAULT_CONTENT_TYPES: &[&str] = &["image/jpeg", "image/png", "image/webp", "image/gif"];

/// Why a source path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadPath {
    /// Not an absolute path, or `//` (a network path or an empty segment).
    #[error("the source must be an absolute path without empty segments")]
    Shape,
    /// A byte below 0x20, 0x7f or a backslash, raw or percent-encoded; a raw space.
    #[error("the source path holds a control byte, a raw space or a backslash")]
    Byte,
    /// `%2F` or `%25`: a separator or an escape hidden from the router.
    #[error("the source path holds an encoded slash or percent sign")]
    Encoded,
    /// A `.` or `..` segment, raw or percent-encoded (`;` parameters ignored).
    #[error("the source path has a dot segment")]
    Dot,
    /// A malformed percent escape.
    #[error("the source path has a bad percent escape")]
    Escape,
}

/// Checks the path part of `source` (what comes before `?`); the query is only checked
/// for bytes a request line cannot carry.
pub fn check(source: &str) -> Result<(), BadPath> {
    let (path, query) = source.split_once('?').unwrap_or((source, ""));
    if query.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'#') {
        return Err(BadPath::Byte);
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(BadPath::Shape);
    };
    if rest.is_empty() {
        return Err(BadPath::Shape);
    }
    for segment in rest.split('/') {
        if segment.is_empty() {
            return Err(BadPath::Shape);
        }
        if segment.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(BadPath::Byte);
        }
        let decoded = decode(segment)?;
        // An encoded space is a file name's; encoded control bytes and backslashes are not.
        if decoded.iter().any(|&b| b < b' ' || b == 0x7f || b == b'\\') {
            return Err(BadPath::Byte);
        }
        if decoded.iter().any(|&b| b == b'/' || b == b'%') {
            return Err(BadPath::Encoded);
        }
        // Tomcat and others read `..;x` as `..`.
        let name = decoded.split(|&b| b == b';').next().unwrap_or(&[]);
        if name == b"." || name == b".." {
            return Err(BadPath::Dot);
        }
    }
    Ok(())
}

fn decode(s: &str) -> Result<Vec<u8>, BadPath> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let v = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(BadPath::Escape)?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Is the `Content-Type` of a source one of `allowed` (exact media types, or
/// `type/*`; [`DEFAULT_CONTENT_TYPES`] when empty)? Parameters are ignored; a missing
/// or unreadable header is not allowed.
pub fn content_type_allowed(header: Option<&str>, allowed: &[String]) -> bool {
    let Some(media) = header.and_then(|h| h.split(';').next()) else {
        return false;
    };
    let media = media.trim().to_ascii_lowercase();
    let Some((kind, _)) = media.split_once('/') else {
        return false;
    };
    let matches = |a: &str| {
        a == media
            || a.strip_suffix("/*")
                .is_some_and(|k| k.eq_ignore_ascii_case(kind))
    };
    if allowed.is_empty() {
        DEFAULT_CONTENT_TYPES.iter().any(|a| matches(a))
    } else {
        allowed.iter().any(|a| matches(&a.to_ascii_lowercase()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_pass() {
        for p in [
            "/sample.jpg",
            "/img/a/b.jpg",
            "/img/caf%C3%A9.jpg",
            "/img/a.jpg?v=2",
            "/img/..x.jpg",
            "/img/.well",
            "/img/my%20photo.jpg",
        ] {
            assert_eq!(check(p), Ok(()), "{p}");
        }
    }

    #[test]
    fn tricks_are_refused() {
        for (p, why) in [
            ("img/a.jpg", BadPath::Shape),
            ("/", BadPath::Shape),
            ("//evil/a.jpg", BadPath::Shape),
            ("/img//a.jpg", BadPath::Shape),
            ("/img/../echo", BadPath::Dot),
            ("/img/./a.jpg", BadPath::Dot),
            ("/img/%2e%2e/echo", BadPath::Dot),
            ("/img/%2E/a.jpg", BadPath::Dot),
            ("/img/..;x/echo", BadPath::Dot),
            ("/img/..%2Fecho", BadPath::Encoded),
            ("/img/..%2fecho", BadPath::Encoded),
            ("/img/%252e%252e/echo", BadPath::Encoded),
            ("/img\\..\\echo", BadPath::Byte),
            ("/img/..%5Cecho", BadPath::Byte),
            ("/img/a%00.jpg", BadPath::Byte),
            ("/img/a%0d%0a.jpg", BadPath::Byte),
            ("/img/a\u{1}.jpg", BadPath::Byte),
            ("/img/a b.jpg", BadPath::Byte),
            ("/img/a%zz.jpg", BadPath::Escape),
            ("/img/a.jpg?x=1 HTTP/1.1", BadPath::Byte),
        ] {
            assert_eq!(check(p), Err(why), "{p}");
        }
    }

    #[test]
    fn content_types() {
        let none: Vec<String> = Vec::new();
        assert!(content_type_allowed(Some("image/jpeg"), &none));
        assert!(content_type_allowed(Some("Image/PNG; charset=x"), &none));
        assert!(!content_type_allowed(Some("application/json"), &none));
        assert!(!content_type_allowed(Some("image/svg+xml"), &none));
        assert!(!content_type_allowed(None, &none));
        let star = vec!["image/*".to_string()];
        assert!(content_type_allowed(Some("image/svg+xml"), &star));
        assert!(!content_type_allowed(Some("text/html"), &star));
        let octet = vec!["application/octet-stream".to_string()];
        assert!(content_type_allowed(
            Some("application/octet-stream"),
            &octet
        ));
        assert!(!content_type_allowed(Some("image/jpeg"), &octet));
    }
}
