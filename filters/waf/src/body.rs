//! Request body processors: urlencoded, JSON (ModSecurity key naming), multipart, XML.

use crate::model::s;
use crate::transform::form_decode;

/// Key/value pairs from a body.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Parses `a=1&b=2` (both sides form-decoded). Empty pieces are skipped.
pub fn urlencoded(data: &[u8], sep: u8) -> Pairs {
    let mut out = Vec::new();
    for piece in data.split(|&b| b == sep) {
        if piece.is_empty() {
            continue;
        }
        let (k, v) = match piece.iter().position(|&b| b == b'=') {
            Some(p) => (&piece[..p], &piece[p + 1..]),
            None => (piece, &b""[..]),
        };
        out.push((form_decode(k), form_decode(v)));
    }
    out
}

/// Flattens a JSON document into ARGS: `{"a":{"b":1},"c":[x,y]}` -> `json.a.b=1`,
/// `json.c.array_0=x`, `json.c.array_1=y` (libmodsecurity 3 naming).
pub fn json(data: &[u8], depth: usize) -> Result<Pairs, String> {
    let v: serde_json::Value = serde_json::from_slice(data).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    walk(&v, "json".to_string(), 0, depth, &mut out)?;
    Ok(out)
}

fn walk(
    v: &serde_json::Value,
    path: String,
    d: usize,
    max: usize,
    out: &mut Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<(), String> {
    use serde_json::Value;
    if d > max {
        return Err(format!("JSON depth exceeds {max}"));
    }
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                walk(x, format!("{path}.{k}"), d + 1, max, out)?;
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                walk(x, format!("{path}.array_{i}"), d + 1, max, out)?;
            }
        }
        Value::String(s) => out.push((path.into_bytes(), s.as_bytes().to_vec())),
        Value::Number(n) => out.push((path.into_bytes(), n.to_string().into_bytes())),
        Value::Bool(b) => out.push((path.into_bytes(), b.to_string().into_bytes())),
        Value::Null => out.push((path.into_bytes(), Vec::new())),
    }
    Ok(())
}

/// One uploaded file.
#[derive(Clone, Debug, Default)]
pub struct FilePart {
    /// Form field name.
    pub name: Vec<u8>,
    /// Client file name.
    pub filename: Vec<u8>,
    /// Size in bytes.
    pub size: usize,
}

/// Result of multipart parsing.
#[derive(Clone, Debug, Default)]
pub struct Multipart {
    /// Form fields.
    pub args: Vec<(Vec<u8>, Vec<u8>)>,
    /// Files.
    pub files: Vec<FilePart>,
    /// (part name, `Header: value` line) for MULTIPART_PART_HEADERS.
    pub part_headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// Scalar indices of MULTIPART_* flags that are set.
    pub flags: Vec<u8>,
    /// MULTIPART_UNMATCHED_BOUNDARY
    pub unmatched_boundary: bool,
    /// A fatal parse error.
    pub error: Option<String>,
}

/// Splits `v; k=v; k="a;b"` on `;` outside double-quoted strings (inside quotes `\` escapes the
/// next character).
fn split_params(header: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in header.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                out.push(&header[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&header[start..]);
    out
}

/// The value of parameter `name` in a header value; `(value, was quoted)`. A quoted value loses its
/// quotes and the `\` before an escaped `"` or `\`.
fn param(header: &str, name: &str) -> Option<(String, bool)> {
    for p in split_params(header).into_iter().skip(1) {
        let p = p.trim();
        if let Some((k, v)) = p.split_once('=') {
            if k.trim().eq_ignore_ascii_case(name) {
                let v = v.trim();
                if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
                    let mut out = String::with_capacity(v.len());
                    let mut chars = v[1..v.len() - 1].chars().peekable();
                    while let Some(c) = chars.next() {
                        if c == '\\' && matches!(chars.peek(), Some('"' | '\\')) {
                            continue;
                        }
                        out.push(c);
                    }
                    return Some((out, true));
                }
                return Some((v.to_string(), false));
            }
        }
    }
    None
}

fn find(h: &[u8], n: &[u8], from: usize) -> Option<usize> {
    if from > h.len() || n.is_empty() {
        return None;
    }
    h[from..]
        .windows(n.len())
        .position(|w| w == n)
        .map(|p| p + from)
}

/// Parses a multipart/form-data body.
pub fn multipart(content_type: &str, data: &[u8]) -> Multipart {
    let mut m = Multipart::default();
    let Some((boundary, quoted)) = param(content_type, "boundary") else {
        m.error = Some("no boundary in Content-Type".into());
        return m;
    };
    if quoted {
        m.flags.push(s::MULTIPART_BOUNDARY_QUOTED);
    }
    if boundary.is_empty() || boundary.len() > 70 {
        m.error = Some("invalid boundary".into());
        return m;
    }
    let delim = format!("--{boundary}").into_bytes();
    let Some(first) = find(data, &delim, 0) else {
        m.error = Some("boundary not found".into());
        return m;
    };
    if data[..first].iter().any(|b| !b.is_ascii_whitespace()) {
        m.flags.push(s::MULTIPART_DATA_BEFORE);
    }
    let mut pos = first + delim.len();
    let mut finished = false;
    let mut lf_only = false;
    loop {
        if data[pos..].starts_with(b"--") {
            finished = true;
            if data[pos + 2..].iter().any(|b| !b.is_ascii_whitespace()) {
                m.flags.push(s::MULTIPART_DATA_AFTER);
            }
            break;
        }
        // end of the boundary line
        let line_end = match find(data, b"\n", pos) {
            Some(e) => e,
            None => break,
        };
        if line_end == pos || data[line_end - 1] != b'\r' {
            lf_only = true;
        }
        let hstart = line_end + 1;
        // headers until an empty line
        let (hend, body_start) =
            match (find(data, b"\r\n\r\n", hstart), find(data, b"\n\n", hstart)) {
                (Some(a), Some(b)) if b < a => {
                    lf_only = true;
                    (b, b + 2)
                }
                (Some(a), _) => (a, a + 4),
                (None, Some(b)) => {
                    lf_only = true;
                    (b, b + 2)
                }
                (None, None) => {
                    if hstart >= data.len() {
                        break;
                    }
                    m.flags.push(s::MULTIPART_INVALID_PART);
                    break;
                }
            };
        let headers = String::from_utf8_lossy(&data[hstart..hend]).into_owned();
        // part body until the next delimiter
        let next = match find(data, &delim, body_start) {
            Some(n) => n,
            None => break,
        };
        let mut body_end = next;
        if body_end >= 2 && &data[body_end - 2..body_end] == b"\r\n" {
            body_end -= 2;
        } else if body_end >= 1 && data[body_end - 1] == b'\n' {
            body_end -= 1;
            lf_only = true;
        }
        let body = &data[body_start.min(body_end)..body_end];
        let mut name: Option<String> = None;
        let mut filename: Option<String> = None;
        let mut hlines = Vec::new();
        for line in headers.split('\n') {
            let line = line.trim_end_matches('\r');
            if line.is_empty() {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                m.flags
                    .push(crate::model::scalar("MULTIPART_HEADER_FOLDING").unwrap_or(36));
            }
            hlines.push(line.to_string());
            if let Some((k, v)) = line.split_once(':') {
                if k.trim().eq_ignore_ascii_case("content-disposition") {
                    let v = v.trim();
                    if !v.to_ascii_lowercase().starts_with("form-data") {
                        m.flags.push(s::MULTIPART_INVALID_PART);
                    }
                    if v.contains('\'') && !v.contains('"') {
                        m.flags.push(s::MULTIPART_INVALID_QUOTING);
                    }
                    name = param(v, "name").map(|x| x.0);
                    filename = param(v, "filename").map(|x| x.0);
                }
            }
        }
        let pname = name.clone().unwrap_or_default();
        for h in hlines {
            m.part_headers
                .push((pname.clone().into_bytes(), h.into_bytes()));
        }
        match (name, filename) {
            (Some(n), Some(f)) => m.files.push(FilePart {
                name: n.into_bytes(),
                filename: f.into_bytes(),
                size: body.len(),
            }),
            (Some(n), None) => m.args.push((n.into_bytes(), body.to_vec())),
            (None, _) => m.flags.push(s::MULTIPART_INVALID_PART),
        }
        pos = next + delim.len();
    }
    if lf_only {
        m.flags.push(s::MULTIPART_LF_LINE);
    }
    if !finished {
        m.error = Some("final boundary missing".into());
    }
    m
}

/// Minimal XML reader: returns the text content of the document (what `XML:/*` yields) and
/// every attribute value (`XML://@*`). Rejects unbalanced documents.
pub fn xml(data: &[u8]) -> Result<(Vec<u8>, Vec<Vec<u8>>), String> {
    let mut text = Vec::new();
    let mut attrs = Vec::new();
    let mut stack: Vec<Vec<u8>> = Vec::new();
    let mut i = 0;
    let mut seen_root = false;
    while i < data.len() {
        if data[i] != b'<' {
            if stack.is_empty() {
                if !data[i].is_ascii_whitespace() {
                    return Err("text outside the root element".into());
                }
                i += 1;
                continue;
            }
            let run = data[i..]
                .iter()
                .position(|&b| b == b'<')
                .map_or(data.len(), |p| p + i);
            xml_unescape(&data[i..run], false, &mut text);
            i = run;
            continue;
        }
        let rest = &data[i..];
        if rest.starts_with(b"<?") {
            i += find(rest, b"?>", 0).ok_or("unterminated processing instruction")? + 2;
            continue;
        }
        if rest.starts_with(b"<!--") {
            i += find(rest, b"-->", 0).ok_or("unterminated comment")? + 3;
            continue;
        }
        if rest.starts_with(b"<![CDATA[") {
            let e = find(rest, b"]]>", 0).ok_or("unterminated CDATA")?;
            text.extend_from_slice(&rest[9..e]);
            i += e + 3;
            continue;
        }
        if rest.starts_with(b"<!") {
            i += find(rest, b">", 0).ok_or("unterminated declaration")? + 1;
            continue;
        }
        let end = find(rest, b">", 0).ok_or("unterminated tag")?;
        let tag = &rest[1..end];
        i += end + 1;
        if let Some(name) = tag.strip_prefix(b"/") {
            let name = name.trim_ascii();
            match stack.pop() {
                Some(open) if open == name => {}
                _ => return Err("mismatched closing tag".into()),
            }
            continue;
        }
        let self_closing = tag.ends_with(b"/");
        let tag = if self_closing {
            &tag[..tag.len() - 1]
        } else {
            tag
        };
        let name_end = tag
            .iter()
            .position(|b| b.is_ascii_whitespace())
            .unwrap_or(tag.len());
        let name = tag[..name_end].to_vec();
        if name.is_empty() {
            return Err("empty tag name".into());
        }
        if stack.is_empty() && seen_root {
            return Err("more than one root element".into());
        }
        seen_root = true;
        // attributes: name="v" or name='v'
        let mut a = &tag[name_end..];
        while let Some(eq) = a.iter().position(|&b| b == b'=') {
            let after = a[eq + 1..].trim_ascii_start();
            let Some(&q) = after.first() else { break };
            if q != b'"' && q != b'\'' {
                return Err("unquoted attribute".into());
            }
            let close = after[1..]
                .iter()
                .position(|&b| b == q)
                .ok_or("unterminated attribute")?;
            let mut v = Vec::with_capacity(close);
            xml_unescape(&after[1..1 + close], true, &mut v);
            attrs.push(v);
            a = &after[close + 2..];
        }
        if !self_closing {
            stack.push(name);
        }
    }
    if !stack.is_empty() || !seen_root {
        return Err("unclosed element or empty document".into());
    }
    Ok((text, attrs))
}

/// Appends `raw` to `out` with XML character references (`&#123;`, `&#x7B;`) and the predefined
/// entities (`&lt;` `&gt;` `&amp;` `&quot;` `&apos;`) replaced, as libxml2 hands text and attribute
/// values to ModSecurity. In an attribute value (`attr`) literal tab, CR and LF become spaces
/// (XML attribute-value normalisation; a reference to them is kept). Anything else that starts
/// with `&` (an undeclared entity, a reference to an invalid code point) is kept as written.
fn xml_unescape(raw: &[u8], attr: bool, out: &mut Vec<u8>) {
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b != b'&' {
            out.push(if attr && matches!(b, b'\t' | b'\n' | b'\r') {
                b' '
            } else {
                b
            });
            i += 1;
            continue;
        }
        let Some(len) = raw[i + 1..].iter().take(12).position(|&c| c == b';') else {
            out.push(b'&');
            i += 1;
            continue;
        };
        let name = &raw[i + 1..i + 1 + len];
        let ch = match name {
            b"lt" => Some('<'),
            b"gt" => Some('>'),
            b"amp" => Some('&'),
            b"quot" => Some('"'),
            b"apos" => Some('\''),
            [b'#', b'x' | b'X', hex @ ..] if !hex.is_empty() => std::str::from_utf8(hex)
                .ok()
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .and_then(char::from_u32),
            [b'#', dec @ ..] if !dec.is_empty() && dec.iter().all(u8::is_ascii_digit) => {
                std::str::from_utf8(dec)
                    .ok()
                    .and_then(|d| d.parse::<u32>().ok())
                    .and_then(char::from_u32)
            }
            _ => None,
        };
        match ch {
            Some(c) if c != '\0' => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                i += len + 2;
            }
            _ => {
                out.push(b'&');
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urlencoded_bodies() {
        let a = urlencoded(b"a=1&b=x+y%21&&c&d=", b'&');
        assert_eq!(a.len(), 4);
        assert_eq!(a[1], (b"b".to_vec(), b"x y!".to_vec()));
        assert_eq!(a[2], (b"c".to_vec(), vec![]));
    }

    #[test]
    fn json_bodies() {
        let a = json(br#"{"a":{"b":"x"},"c":[1,true],"d":null}"#, 512).unwrap();
        let names: Vec<String> = a
            .iter()
            .map(|(k, _)| String::from_utf8(k.clone()).unwrap())
            .collect();
        assert_eq!(
            names,
            vec!["json.a.b", "json.c.array_0", "json.c.array_1", "json.d"]
        );
        assert!(json(b"{\"a\":", 512).is_err());
        assert!(json(b"[[[1]]]", 2).is_err());
    }

    #[test]
    fn multipart_bodies() {
        let body = b"--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nhello\r\n--XX\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x.php\"\r\nContent-Type: text/plain\r\n\r\n<?php ?>\r\n--XX--\r\n";
        let m = multipart("multipart/form-data; boundary=XX", body);
        assert!(m.error.is_none(), "{:?}", m.error);
        assert!(m.flags.is_empty(), "{:?}", m.flags);
        assert_eq!(m.args, vec![(b"a".to_vec(), b"hello".to_vec())]);
        assert_eq!(m.files[0].filename, b"x.php");
        assert_eq!(m.files[0].size, 8);
        assert_eq!(m.part_headers.len(), 3);
        let m = multipart(
            "multipart/form-data; boundary=XX",
            b"--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nhello",
        );
        assert!(m.error.is_some());
        let m = multipart("multipart/form-data; boundary=\"XX\"", body);
        assert!(m.flags.contains(&s::MULTIPART_BOUNDARY_QUOTED));
        // `;` inside a quoted parameter value does not end it
        let body = b"--XX\r\nContent-Disposition: form-data; name=\"a;b=c\"\r\n\r\n1\r\n--XX\r\nContent-Disposition: form-data; filename=\"x;name=y.php\"; name=\"f&#59;\\\"g\"\r\n\r\n2\r\n--XX--\r\n";
        let m = multipart("multipart/form-data; boundary=XX", body);
        assert!(m.error.is_none(), "{:?}", m.error);
        assert_eq!(m.args, vec![(b"a;b=c".to_vec(), b"1".to_vec())]);
        assert_eq!(m.files[0].name, b"f&#59;\"g");
        assert_eq!(m.files[0].filename, b"x;name=y.php");
    }

    #[test]
    fn xml_bodies() {
        let (t, a) =
            xml(b"<?xml version=\"1.0\"?><a x=\"1\"><b>hi</b> <c y='2'/>there</a>").unwrap();
        assert_eq!(t, b"hi there");
        assert_eq!(a, vec![b"1".to_vec(), b"2".to_vec()]);
        assert!(xml(b"<a><b></a>").is_err());
        // character and entity references are decoded in text and attribute values
        let (t, a) = xml(
            b"<a q=\"&lt;x&gt;&#x7B;&#123;\tz\" r='&apos;&quot;&amp;'>&lt;script&gt;&#x7B;&#0125;&amp;amp;&quot;&apos;&nope;<![CDATA[&lt;]]></a>",
        )
        .unwrap();
        assert_eq!(t, b"<script>{}&amp;\"'&nope;&lt;");
        assert_eq!(a, vec![b"<x>{{ z".to_vec(), b"'\"&".to_vec()]);
        assert!(xml(b"<a>").is_err());
    }
}
