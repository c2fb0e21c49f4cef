//! Transformation functions (`t:name`), ModSecurity semantics on bytes.

use crate::sha1::sha1;
use crate::unicode_map::UnicodeMap;

/// A transformation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum T {
    /// `lowercase`
    Lowercase,
    /// `uppercase`
    Uppercase,
    /// `urlDecode`
    UrlDecode,
    /// `urlDecodeUni`
    UrlDecodeUni,
    /// `htmlEntityDecode`
    HtmlEntityDecode,
    /// `jsDecode`
    JsDecode,
    /// `cssDecode`
    CssDecode,
    /// `escapeSeqDecode`
    EscapeSeqDecode,
    /// `utf8toUnicode`
    Utf8ToUnicode,
    /// `removeNulls`
    RemoveNulls,
    /// `replaceNulls`
    ReplaceNulls,
    /// `cmdLine`
    CmdLine,
    /// `compressWhitespace`
    CompressWhitespace,
    /// `removeWhitespace`
    RemoveWhitespace,
    /// `normalizePath` / `normalisePath`
    NormalizePath,
    /// `normalizePathWin` / `normalisePathWin`
    NormalizePathWin,
    /// `replaceComments`
    ReplaceComments,
    /// `removeCommentsChar`
    RemoveCommentsChar,
    /// `removeComments`
    RemoveComments,
    /// `length`
    Length,
    /// `base64Decode`
    Base64Decode,
    /// `base64DecodeExt`
    Base64DecodeExt,
    /// `hexEncode`
    HexEncode,
    /// `hexDecode`
    HexDecode,
    /// `sha1`
    Sha1,
    /// `trim`
    Trim,
    /// `trimLeft`
    TrimLeft,
    /// `trimRight`
    TrimRight,
}

impl T {
    /// Parses a transformation name; `Ok(None)` for `none`.
    pub fn parse(name: &str) -> Result<Option<T>, String> {
        Ok(Some(match name {
            "none" => return Ok(None),
            "lowercase" => T::Lowercase,
            "uppercase" => T::Uppercase,
            "urlDecode" => T::UrlDecode,
            "urlDecodeUni" => T::UrlDecodeUni,
            "htmlEntityDecode" => T::HtmlEntityDecode,
            "jsDecode" => T::JsDecode,
            "cssDecode" => T::CssDecode,
            "escapeSeqDecode" => T::EscapeSeqDecode,
            "utf8toUnicode" => T::Utf8ToUnicode,
            "removeNulls" => T::RemoveNulls,
            "replaceNulls" => T::ReplaceNulls,
            "cmdLine" => T::CmdLine,
            "compressWhitespace" => T::CompressWhitespace,
            "removeWhitespace" => T::RemoveWhitespace,
            "normalizePath" | "normalisePath" => T::NormalizePath,
            "normalizePathWin" | "normalisePathWin" => T::NormalizePathWin,
            "replaceComments" => T::ReplaceComments,
            "removeCommentsChar" => T::RemoveCommentsChar,
            "removeComments" => T::RemoveComments,
            "length" => T::Length,
            "base64Decode" => T::Base64Decode,
            "base64DecodeExt" => T::Base64DecodeExt,
            "hexEncode" => T::HexEncode,
            "hexDecode" => T::HexDecode,
            "sha1" => T::Sha1,
            "trim" => T::Trim,
            "trimLeft" => T::TrimLeft,
            "trimRight" => T::TrimRight,
            _ => return Err(format!("unsupported transformation t:{name}")),
        }))
    }

    /// Is `apply(i)` certainly `i` unchanged? (a cheap scan; `false` when unsure)
    pub fn is_noop(self, i: &[u8]) -> bool {
        match self {
            T::Lowercase => !i.iter().any(u8::is_ascii_uppercase),
            T::Uppercase => !i.iter().any(u8::is_ascii_lowercase),
            T::UrlDecode | T::UrlDecodeUni => !i.iter().any(|&b| b == b'%' || b == b'+'),
            T::HtmlEntityDecode => !i.contains(&b'&'),
            T::JsDecode | T::EscapeSeqDecode | T::CssDecode => !i.contains(&b'\\'),
            T::Utf8ToUnicode => i.is_ascii(),
            T::RemoveNulls | T::ReplaceNulls => !i.contains(&0),
            T::RemoveWhitespace => !i.iter().any(|&b| is_ws(b)),
            // no empty, "." or ".." segment except a leading/trailing "/"
            T::NormalizePath | T::NormalizePathWin => {
                i.first() != Some(&b'.')
                    && !i.windows(2).any(|w| w == b"//" || w == b"/.")
                    && !(self == T::NormalizePathWin && i.contains(&b'\\'))
            }
            // lowercases; drops `"'\^`; whitespace, `,` and `;` become a space, before which
            // `/` and `(` are glued
            T::CmdLine => !i.iter().any(|&b| CLASS[usize::from(b)] & CMD_LINE != 0),
            T::CompressWhitespace => !i.iter().any(|&b| is_ws(b)),
            T::ReplaceComments => !i.contains(&b'*'),
            T::RemoveComments | T::RemoveCommentsChar => {
                !i.iter().any(|&b| matches!(b, b'*' | b'-' | b'#'))
            }
            T::Trim | T::TrimLeft | T::TrimRight => {
                (self == T::TrimRight || i.first().is_none_or(|&b| !is_ws(b)))
                    && (self == T::TrimLeft || i.last().is_none_or(|&b| !is_ws(b)))
            }
            _ => false,
        }
    }

    /// [`T::is_noop`] for a value whose [`classes`] are `c`: most answers are one test of
    /// `c`, so a chain of transformations scans a value once, not once per transformation.
    pub fn noop_in(self, c: u16, i: &[u8]) -> bool {
        match self {
            T::Lowercase => c & UPPER == 0,
            T::Uppercase => c & LOWER == 0,
            T::UrlDecode | T::UrlDecodeUni => c & PCT_PLUS == 0,
            T::HtmlEntityDecode => c & AMP == 0,
            T::JsDecode | T::EscapeSeqDecode | T::CssDecode => c & BSLASH == 0,
            T::Utf8ToUnicode => c & HIGH == 0,
            T::RemoveNulls | T::ReplaceNulls => c & NUL == 0,
            T::RemoveWhitespace | T::CompressWhitespace => c & WS == 0,
            T::CmdLine => c & CMD_LINE == 0,
            T::ReplaceComments => c & STAR == 0,
            T::RemoveComments | T::RemoveCommentsChar => c & COMMENT == 0,
            T::NormalizePath => c & SLASH_DOT == 0 || self.is_noop(i),
            T::NormalizePathWin => c & (SLASH_DOT | BSLASH) == 0 || self.is_noop(i),
            _ => self.is_noop(i),
        }
    }

    /// Applies the transformation: `out` is cleared and receives the result.
    pub fn apply(self, i: &[u8], out: &mut Vec<u8>) {
        self.apply_with(i, out, None);
    }

    /// [`T::apply`] with the engine's `SecUnicodeMapFile` map (used by `urlDecodeUni`).
    pub fn apply_with(self, i: &[u8], out: &mut Vec<u8>, map: Option<&UnicodeMap>) {
        out.clear();
        if self == T::UrlDecodeUni {
            return url_decode(i, out, true, map);
        }
        match self {
            T::Lowercase => out.extend(i.iter().map(|b| b.to_ascii_lowercase())),
            T::Uppercase => out.extend(i.iter().map(|b| b.to_ascii_uppercase())),
            T::UrlDecode => url_decode(i, out, false, None),
            T::UrlDecodeUni => url_decode(i, out, true, map),
            T::HtmlEntityDecode => html_entity_decode(i, out),
            T::JsDecode => js_decode(i, out, true),
            T::EscapeSeqDecode => js_decode(i, out, false),
            T::CssDecode => css_decode(i, out),
            T::Utf8ToUnicode => utf8_to_unicode(i, out),
            T::RemoveNulls => out.extend(i.iter().copied().filter(|&b| b != 0)),
            T::ReplaceNulls => out.extend(i.iter().map(|&b| if b == 0 { b' ' } else { b })),
            T::CmdLine => cmd_line(i, out),
            T::CompressWhitespace => {
                let mut in_ws = false;
                for &b in i {
                    if is_ws(b) {
                        if !in_ws {
                            out.push(b' ');
                        }
                        in_ws = true;
                    } else {
                        out.push(b);
                        in_ws = false;
                    }
                }
            }
            T::RemoveWhitespace => out.extend(i.iter().copied().filter(|&b| !is_ws(b))),
            T::NormalizePath => normalize_path(i, out, false),
            T::NormalizePathWin => normalize_path(i, out, true),
            T::ReplaceComments => replace_comments(i, out),
            T::RemoveCommentsChar => remove_comments_char(i, out),
            T::RemoveComments => remove_comments(i, out),
            T::Length => out.extend_from_slice(i.len().to_string().as_bytes()),
            T::Base64Decode | T::Base64DecodeExt => {
                base64_decode(i, out, self == T::Base64DecodeExt)
            }
            T::HexEncode => {
                const H: &[u8; 16] = b"0123456789abcdef";
                for &b in i {
                    out.push(H[(b >> 4) as usize]);
                    out.push(H[(b & 15) as usize]);
                }
            }
            T::HexDecode => {
                for c in i.chunks(2) {
                    if c.len() == 2 {
                        if let (Some(a), Some(b)) = (hexval(c[0]), hexval(c[1])) {
                            out.push(a << 4 | b);
                        }
                    }
                }
            }
            T::Sha1 => out.extend_from_slice(&sha1(i)),
            T::Trim => out.extend_from_slice(trim_right(trim_left(i))),
            T::TrimLeft => out.extend_from_slice(trim_left(i)),
            T::TrimRight => out.extend_from_slice(trim_right(i)),
        }
    }
}

// Byte classes of [`classes`], one bit each.
const UPPER: u16 = 1;
const LOWER: u16 = 2;
const PCT_PLUS: u16 = 4;
const AMP: u16 = 8;
const BSLASH: u16 = 16;
const HIGH: u16 = 32;
const NUL: u16 = 64;
/// [`is_ws`].
const WS: u16 = 128;
/// What `cmdLine` changes: uppercase, `"'\^`, its whitespace (not 0xa0), `,` and `;`.
const CMD_LINE: u16 = 256;
const STAR: u16 = 512;
/// `*`, `-`, `#`: what the comment removals look for.
const COMMENT: u16 = 1024;
const SLASH_DOT: u16 = 2048;

/// The class bits of each byte.
static CLASS: [u16; 256] = {
    let mut t = [0u16; 256];
    let mut b = 0usize;
    while b < 256 {
        let c = b as u8;
        let mut v = 0;
        if c.is_ascii_uppercase() {
            v |= UPPER | CMD_LINE;
        }
        if c.is_ascii_lowercase() {
            v |= LOWER;
        }
        if c >= 0x80 {
            v |= HIGH;
        }
        v |= match c {
            b'%' | b'+' => PCT_PLUS,
            b'&' => AMP,
            b'\\' => BSLASH | CMD_LINE,
            0 => NUL,
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => WS | CMD_LINE,
            0xa0 => WS,
            b'"' | b'\'' | b'^' | b',' | b';' => CMD_LINE,
            b'*' => STAR | COMMENT,
            b'-' | b'#' => COMMENT,
            b'/' | b'.' => SLASH_DOT,
            _ => 0,
        };
        t[b] = v;
        b += 1;
    }
    t
};

/// The byte classes a value holds (the OR of [`CLASS`]), for [`T::noop_in`].
pub fn classes(i: &[u8]) -> u16 {
    let mut chunks = i.chunks_exact(4);
    let mut c = 0;
    for w in &mut chunks {
        c |= CLASS[usize::from(w[0])]
            | CLASS[usize::from(w[1])]
            | CLASS[usize::from(w[2])]
            | CLASS[usize::from(w[3])];
    }
    for &b in chunks.remainder() {
        c |= CLASS[usize::from(b)];
    }
    c
}

fn trim_left(i: &[u8]) -> &[u8] {
    let s = i.iter().position(|&b| !is_ws(b)).unwrap_or(i.len());
    &i[s..]
}

fn trim_right(i: &[u8]) -> &[u8] {
    let e = i.iter().rposition(|&b| !is_ws(b)).map_or(0, |p| p + 1);
    &i[..e]
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | 0xa0)
}

fn hexval(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn hex2(a: u8, b: u8) -> Option<u8> {
    Some(hexval(a)? << 4 | hexval(b)?)
}

/// `%uHHHH` -> one byte: the low byte, full-width ASCII (U+FF01..U+FF5E) mapped to ASCII.
/// The byte `%uXXXX` decodes to: the code page's byte when the map has the code point, else
/// the low byte (full-width ASCII `%uff01`-`%uff5e` shifted to ASCII), as ModSecurity does.
fn uni_byte(h: &[u8], map: Option<&UnicodeMap>) -> Option<u8> {
    let hi = hex2(h[0], h[1])?;
    let lo = hex2(h[2], h[3])?;
    if let Some(b) = map.and_then(|m| m.get(u32::from(hi) << 8 | u32::from(lo))) {
        return Some(b);
    }
    if hi == 0xff && lo > 0 && lo < 0x5f {
        return Some(lo + 0x20);
    }
    Some(lo)
}

fn url_decode(i: &[u8], out: &mut Vec<u8>, uni: bool, map: Option<&UnicodeMap>) {
    let mut k = 0;
    while k < i.len() {
        let b = i[k];
        if b == b'%' {
            if uni && k + 5 < i.len() && (i[k + 1] == b'u' || i[k + 1] == b'U') {
                if let Some(c) = uni_byte(&i[k + 2..k + 6], map) {
                    out.push(c);
                    k += 6;
                    continue;
                }
            }
            if k + 2 < i.len() {
                if let Some(c) = hex2(i[k + 1], i[k + 2]) {
                    out.push(c);
                    k += 3;
                    continue;
                }
            }
            out.push(b);
            k += 1;
        } else if b == b'+' {
            out.push(b' ');
            k += 1;
        } else {
            out.push(b);
            k += 1;
        }
    }
}

/// Percent-decodes `%XX` only (no `+`), as ModSecurity does for the URI path.
pub fn uri_decode(i: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(i.len());
    let mut k = 0;
    while k < i.len() {
        if i[k] == b'%' && k + 2 < i.len() {
            if let Some(c) = hex2(i[k + 1], i[k + 2]) {
                out.push(c);
                k += 3;
                continue;
            }
        }
        out.push(i[k]);
        k += 1;
    }
    out
}

/// Decodes a form-urlencoded component (`+` is a space).
pub fn form_decode(i: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(i.len());
    url_decode(i, &mut out, false, None);
    out
}

fn html_entity_decode(i: &[u8], out: &mut Vec<u8>) {
    let mut k = 0;
    while k < i.len() {
        if i[k] != b'&' {
            out.push(i[k]);
            k += 1;
            continue;
        }
        let rest = &i[k + 1..];
        if rest.first() == Some(&b'#') {
            let (hex, start) = match rest.get(1) {
                Some(b'x') | Some(b'X') => (true, 2),
                _ => (false, 1),
            };
            // every digit counts (leading zeros too); the value saturates like strtol's long and
            // its low byte is the result, as in ModSecurity
            let mut j = start;
            let mut val: u64 = 0;
            while j < rest.len() {
                let d = if hex {
                    hexval(rest[j])
                } else {
                    rest[j].is_ascii_digit().then(|| rest[j] - b'0')
                };
                match d {
                    Some(d) => {
                        val = val
                            .saturating_mul(if hex { 16 } else { 10 })
                            .saturating_add(u64::from(d))
                            .min(i64::MAX as u64)
                    }
                    None => break,
                }
                j += 1;
            }
            if j > start {
                out.push(val as u8);
                k += 1 + j;
                if i.get(k) == Some(&b';') {
                    k += 1;
                }
                continue;
            }
        } else {
            let names: [(&[u8], u8); 5] = [
                (b"quot", b'"'),
                (b"amp", b'&'),
                (b"lt", b'<'),
                (b"gt", b'>'),
                (b"nbsp", 0xa0),
            ];
            let mut hit = false;
            for (n, c) in names {
                if rest.len() >= n.len() && rest[..n.len()].eq_ignore_ascii_case(n) {
                    out.push(c);
                    k += 1 + n.len();
                    if i.get(k) == Some(&b';') {
                        k += 1;
                    }
                    hit = true;
                    break;
                }
            }
            if hit {
                continue;
            }
        }
        out.push(b'&');
        k += 1;
    }
}

fn js_decode(i: &[u8], out: &mut Vec<u8>, js: bool) {
    let mut k = 0;
    while k < i.len() {
        if i[k] != b'\\' || k + 1 >= i.len() {
            out.push(i[k]);
            k += 1;
            continue;
        }
        let c = i[k + 1];
        if js && (c == b'u' || c == b'U') && k + 5 < i.len() {
            if let Some(b) = uni_byte(&i[k + 2..k + 6], None) {
                out.push(b);
                k += 6;
                continue;
            }
        }
        if (c == b'x' || c == b'X') && k + 3 < i.len() {
            if let Some(b) = hex2(i[k + 2], i[k + 3]) {
                out.push(b);
                k += 4;
                continue;
            }
        }
        if (b'0'..=b'7').contains(&c) {
            let mut j = k + 1;
            let mut v: u32 = 0;
            while j < i.len() && j < k + 4 && (b'0'..=b'7').contains(&i[j]) {
                v = v * 8 + u32::from(i[j] - b'0');
                j += 1;
            }
            out.push(v as u8);
            k = j;
            continue;
        }
        let m = match c {
            b'a' => 7,
            b'b' => 8,
            b'f' => 12,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'v' => 11,
            other => other,
        };
        out.push(m);
        k += 2;
    }
}

fn css_decode(i: &[u8], out: &mut Vec<u8>) {
    let mut k = 0;
    while k < i.len() {
        if i[k] != b'\\' {
            out.push(i[k]);
            k += 1;
            continue;
        }
        if k + 1 >= i.len() {
            k += 1;
            continue;
        }
        let mut j = k + 1;
        while j < i.len() && j < k + 7 && hexval(i[j]).is_some() {
            j += 1;
        }
        let n = j - (k + 1);
        if n > 0 {
            let h = &i[k + 1..j];
            let mut b = if n >= 2 {
                hex2(h[n - 2], h[n - 1]).unwrap_or(0)
            } else {
                hexval(h[0]).unwrap_or(0)
            };
            // full-width ASCII: 0xff01..0xff5e
            if n >= 4 && b > 0 && b < 0x5f {
                let hi = &h[n - 4..n - 2];
                if hi.eq_ignore_ascii_case(b"ff") && h[..n - 4].iter().all(|&c| c == b'0') {
                    b += 0x20;
                }
            }
            out.push(b);
            k = j;
            if k < i.len() && is_ws(i[k]) && i[k] != 0xa0 {
                k += 1;
            }
            continue;
        }
        if i[k + 1] == b'\n' {
            k += 2;
            continue;
        }
        out.push(i[k + 1]);
        k += 2;
    }
}

/// UTF-8 sequences become `%uXXXX` (ModSecurity's `utf8toUnicode`). A lead byte (`C0`-`F7`)
/// whose continuation bytes are missing or not `10xxxxxx` is dropped and decoding goes on with the
/// next byte; overlong forms (`C0 AF`) are decoded like any other; other bytes pass unchanged.
fn utf8_to_unicode(i: &[u8], out: &mut Vec<u8>) {
    let mut k = 0;
    while k < i.len() {
        let b = i[k];
        let (len, init) = match b {
            0xc0..=0xdf => (2, u32::from(b & 0x1f)),
            0xe0..=0xef => (3, u32::from(b & 0x0f)),
            0xf0..=0xf7 => (4, u32::from(b & 0x07)),
            _ => {
                out.push(b);
                k += 1;
                continue;
            }
        };
        if k + len > i.len() || !i[k + 1..k + len].iter().all(|&c| c & 0xc0 == 0x80) {
            k += 1;
            continue;
        }
        let mut cp = init;
        for &c in &i[k + 1..k + len] {
            cp = cp << 6 | u32::from(c & 0x3f);
        }
        out.extend_from_slice(format!("%u{cp:04x}").as_bytes());
        k += len;
    }
}

fn cmd_line(i: &[u8], out: &mut Vec<u8>) {
    let mut space = false;
    for &b in i {
        match b {
            b'"' | b'\'' | b'\\' | b'^' => {}
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | b',' | b';' => {
                if !space {
                    out.push(b' ');
                    space = true;
                }
            }
            b'/' | b'(' => {
                if space {
                    out.pop();
                }
                out.push(b);
                space = false;
            }
            _ => {
                out.push(b.to_ascii_lowercase());
                space = false;
            }
        }
    }
}

fn normalize_path(i: &[u8], out: &mut Vec<u8>, win: bool) {
    let src: Vec<u8> = if win {
        i.iter()
            .map(|&b| if b == b'\\' { b'/' } else { b })
            .collect()
    } else {
        i.to_vec()
    };
    let absolute = src.first() == Some(&b'/');
    let trailing = src.ends_with(b"/") || src.ends_with(b"/.") || src.ends_with(b"/..");
    let mut segs: Vec<&[u8]> = Vec::new();
    for seg in src.split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                if segs.last().is_some_and(|s| *s != b"..") {
                    segs.pop();
                } else if !absolute {
                    segs.push(seg);
                }
            }
            s => segs.push(s),
        }
    }
    if absolute {
        out.push(b'/');
    }
    for (n, s) in segs.iter().enumerate() {
        if n > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(s);
    }
    if trailing && !segs.is_empty() {
        out.push(b'/');
    }
}

fn replace_comments(i: &[u8], out: &mut Vec<u8>) {
    let mut k = 0;
    while k < i.len() {
        if i[k] == b'/' && i.get(k + 1) == Some(&b'*') {
            match i[k + 2..].windows(2).position(|w| w == b"*/") {
                Some(p) => k += 2 + p + 2,
                None => k = i.len(),
            }
            out.push(b' ');
            continue;
        }
        out.push(i[k]);
        k += 1;
    }
}

fn remove_comments_char(i: &[u8], out: &mut Vec<u8>) {
    let mut k = 0;
    while k < i.len() {
        let r = &i[k..];
        let skip = if r.starts_with(b"/*") || r.starts_with(b"*/") || r.starts_with(b"--") {
            2
        } else if r.starts_with(b"<!--") {
            4
        } else if r.starts_with(b"-->") {
            3
        } else if r[0] == b'#' {
            1
        } else {
            0
        };
        if skip > 0 {
            k += skip;
        } else {
            out.push(i[k]);
            k += 1;
        }
    }
}

fn remove_comments(i: &[u8], out: &mut Vec<u8>) {
    let mut k = 0;
    while k < i.len() {
        let r = &i[k..];
        if r.starts_with(b"/*") {
            k = r[2..]
                .windows(2)
                .position(|w| w == b"*/")
                .map_or(i.len(), |p| k + 2 + p + 2);
        } else if r.starts_with(b"<!--") {
            k = r[4..]
                .windows(3)
                .position(|w| w == b"-->")
                .map_or(i.len(), |p| k + 4 + p + 3);
        } else if r.starts_with(b"--") || r[0] == b'#' {
            k = i.len();
        } else {
            out.push(i[k]);
            k += 1;
        }
    }
}

fn b64val(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'+' | b'-' => Some(62),
        b'/' | b'_' => Some(63),
        _ => None,
    }
}

fn base64_decode(i: &[u8], out: &mut Vec<u8>, forgiving: bool) {
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in i {
        if b == b'=' {
            break;
        }
        match b64val(b) {
            Some(v) => {
                acc = acc << 6 | u32::from(v);
                bits += 6;
                if bits >= 8 {
                    bits -= 8;
                    out.push((acc >> bits) as u8);
                    acc &= (1 << bits) - 1;
                }
            }
            None if forgiving => continue,
            None => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::T;
    use crate::unicode_map::UnicodeMap;

    fn t(name: &str, i: &[u8]) -> Vec<u8> {
        let mut o = Vec::new();
        T::parse(name).unwrap().unwrap().apply(i, &mut o);
        o
    }

    #[test]
    fn each_transformation() {
        assert_eq!(t("lowercase", b"AbC"), b"abc");
        assert_eq!(t("uppercase", b"aBc"), b"ABC");
        assert_eq!(t("urlDecode", b"a%20b+c%zz%4"), b"a b c%zz%4");
        assert_eq!(t("urlDecodeUni", b"%u0041%uff0e%27"), b"A.'");
        let map = UnicodeMap::parse(b"20127 (US-ASCII)\n2018:27 2019:27 00c9:45\n", 20127).unwrap();
        let mut o = Vec::new();
        T::UrlDecodeUni.apply_with(b"%u2018a%u2019%u00c9%uff0e%u2020", &mut o, Some(&map));
        assert_eq!(o, b"'a'E. ");
        assert_eq!(t("urlDecodeUni", b"%u2018a%u2019"), b"\x18a\x19");
        assert_eq!(
            t("htmlEntityDecode", b"&lt;a&#x41;&#66&quot;&foo;"),
            b"<aAB\"&foo;"
        );
        assert_eq!(
            t(
                "htmlEntityDecode",
                b"&#0000123;&#x0007B;&#X00000000007d;&#0000000000000000125x&#99999999999999999999999;"
            ),
            b"{{}}x\xff"
        );
        assert_eq!(t("jsDecode", b"\\x41\\u0042\\n\\'\\101"), b"AB\n'A");
        assert_eq!(t("cssDecode", b"j\\61 vascript\\:"), b"javascript:");
        assert_eq!(t("utf8toUnicode", "é1".as_bytes()), b"%u00e91");
        // a lead byte without its continuation is dropped; overlong forms are decoded
        assert_eq!(
            t("utf8toUnicode", &t("urlDecodeUni", b"..%c0%5c..%c0%5c")),
            b"..\\..\\"
        );
        assert_eq!(t("utf8toUnicode", b"a\xc3"), b"a");
        assert_eq!(t("utf8toUnicode", b"\xe2\x80x\xff"), b"\x80x\xff");
        assert_eq!(t("utf8toUnicode", b"\xc0\xaf\xc1\x81"), b"%u002f%u0041");
        assert_eq!(t("utf8toUnicode", "\u{1F600}".as_bytes()), b"%u1f600");
        assert_eq!(t("removeNulls", b"a\0b"), b"ab");
        assert_eq!(t("replaceNulls", b"a\0b"), b"a b");
        assert_eq!(t("cmdLine", b"C^at\"  /Etc;ls ,x"), b"cat/etc ls x");
        assert_eq!(t("compressWhitespace", b"a \t\n b"), b"a b");
        assert_eq!(t("removeWhitespace", b" a b\t"), b"ab");
        assert_eq!(
            t("normalizePath", b"/a/./b/../../../etc//passwd"),
            b"/etc/passwd"
        );
        assert_eq!(t("normalisePath", b"a/../../x/"), b"../x/");
        assert_eq!(t("normalizePathWin", b"c:\\a\\..\\b"), b"c:/b");
        assert_eq!(t("replaceComments", b"a/*x*/b/*c"), b"a b ");
        assert_eq!(t("removeCommentsChar", b"a/*b*/--c#"), b"abc");
        assert_eq!(t("removeComments", b"a/*x*/b-- c"), b"ab");
        assert_eq!(t("length", b"abcd"), b"4");
        assert_eq!(t("base64Decode", b"aGVsbG8="), b"hello");
        assert_eq!(t("base64DecodeExt", b"aGV.sbG8"), b"hello");
        assert_eq!(t("hexEncode", b"\x01\xff"), b"01ff");
        assert_eq!(t("hexDecode", b"4142"), b"AB");
        assert_eq!(t("trim", b"  a "), b"a");
        assert_eq!(t("trimLeft", b"  a "), b"a ");
        assert_eq!(t("trimRight", b"  a "), b"  a");
        assert_eq!(
            t("hexEncode", &t("sha1", b"abc")),
            b"a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert!(T::parse("none").unwrap().is_none());
        assert!(T::parse("md5x").is_err());
    }

    #[test]
    fn noop_scan_agrees_with_apply() {
        let names = [
            "lowercase",
            "uppercase",
            "urlDecode",
            "urlDecodeUni",
            "htmlEntityDecode",
            "jsDecode",
            "escapeSeqDecode",
            "cssDecode",
            "utf8toUnicode",
            "removeNulls",
            "replaceNulls",
            "removeWhitespace",
            "cmdLine",
            "compressWhitespace",
            "trim",
            "normalizePath",
            "normalizePathWin",
        ];
        let inputs: [&[u8]; 22] = [
            b"/",
            b"//",
            b"/a/./b",
            b"/x/../y",
            b"a//b",
            b"/static/app.js",
            b".a/b",
            b"/a/",
            b"a\\b",
            b"/a/b.",
            b"",
            b"abc",
            b"ABC",
            b"a%41b",
            b"a+b",
            b"x&amp;y",
            b"a\\u0041",
            b"\\",
            b"caf\xc3\xa9",
            b"a\x00b",
            b" a \t b ",
            b"/products/list?category=shoes&page=2",
        ];
        // and random values over the bytes the transformations look at
        let alphabet = b"aZ09 \t\n\x0b\x0c\r\xa0\xc3\xa9\x00%+&;#\\/.*-\"'^,(xu";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut random: Vec<Vec<u8>> = Vec::new();
        for _ in 0..3000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 9) as usize;
            random.push(
                (0..len)
                    .map(|k| alphabet[((seed >> (8 + 5 * k)) % alphabet.len() as u64) as usize])
                    .collect(),
            );
        }
        let names = [
            &names[..],
            &[
                "replaceComments",
                "removeComments",
                "removeCommentsChar",
                "trimLeft",
                "trimRight",
            ],
        ]
        .concat();
        for n in names {
            let tr = T::parse(n).unwrap().unwrap();
            for i in inputs.iter().copied().chain(random.iter().map(|r| &r[..])) {
                let mut o = Vec::new();
                tr.apply(i, &mut o);
                if tr.is_noop(i) {
                    assert_eq!(o, i, "{n} on {i:?}");
                }
                assert_eq!(
                    tr.noop_in(super::classes(i), i),
                    tr.is_noop(i),
                    "{n} on {i:?}"
                );
            }
        }
    }
}
