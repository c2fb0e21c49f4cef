//! Operators (`@rx`, `@pm`, ...) and the regex / phrase matcher backends.

use crate::model::Macro;
use aho_corasick::AhoCorasick;
use std::cell::RefCell;
use std::rc::Rc;

/// Captures: group 0..=9 (None: did not participate).
pub type Caps = Vec<Option<Vec<u8>>>;

/// Host-side matchers reached through `proxy_call_foreign_function` (see the contract).
pub trait HostMatch {
    /// Compiles one `regex::bytes` pattern (already translated, flags inline) on the host.
    fn compile_rx(&self, pattern: &str) -> Option<u32>;
    /// Compiles a phrase set (ASCII case-insensitive) on the host.
    fn compile_pm(&self, words: &[Vec<u8>]) -> Option<u32>;
    /// Runs a host regex: `Ok(None)` no match; with `captures`, groups 0..=9.
    fn run_rx(&self, handle: u32, captures: bool, input: &[u8]) -> Result<Option<Caps>, HostError>;
    /// Runs a host phrase set: `Ok(Some(vec![matched phrase]))` on a match.
    fn run_pm(&self, handle: u32, input: &[u8]) -> Result<Option<Caps>, HostError>;
}

/// The host matcher failed (the engine then matches in wasm).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError;

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("host matcher failed")
    }
}

/// A regex, compiled once.
pub enum Rx {
    /// `regex::bytes` on the translated pattern.
    Bytes(regex::bytes::Regex),
    /// fancy-regex (look-around, back-references, possessives); matched on a lossless-ish
    /// `&str` view where every byte >= 0x80 becomes U+0080. The second field is a gate: the
    /// same pattern without its look-arounds on `regex` (see [`strip_lookarounds`]), which
    /// matches whenever the pattern does, so "no" from it skips fancy-regex's backtracking
    /// (CRS 953120 `<\?(?!xml)` on a response body: 60% of phase 4 before it).
    Fancy(fancy_regex::Regex, Option<regex::Regex>),
}

impl std::fmt::Debug for Rx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rx::Bytes(r) => write!(f, "Rx::Bytes({})", r.as_str()),
            Rx::Fancy(r, _) => write!(f, "Rx::Fancy({})", r.as_str()),
        }
    }
}

/// Compiles a PCRE pattern: `regex::bytes` if it can, else fancy-regex.
pub fn compile_rx(pat: &str) -> Result<Rx, String> {
    let tr = crate::pcre::translate(pat, false);
    // Possessive quantifiers change results: keep them (fancy) when present.
    let possessive = has_possessive(pat);
    if !possessive {
        if let Ok(r) = regex::bytes::RegexBuilder::new(&tr)
            .size_limit(64 << 20)
            .dfa_size_limit(8 << 20)
            .build()
        {
            return Ok(Rx::Bytes(r));
        }
    }
    let fr = crate::pcre::translate(pat, true);
    match fancy_regex::RegexBuilder::new(&fr)
        .backtrack_limit(100_000)
        .build()
    {
        Ok(r) => {
            let gate = strip_lookarounds(&fr).and_then(|g| {
                regex::RegexBuilder::new(&g)
                    .size_limit(16 << 20)
                    .build()
                    .ok()
            });
            Ok(Rx::Fancy(r, gate))
        }
        Err(e) => {
            if possessive {
                if let Ok(r) = regex::bytes::RegexBuilder::new(&tr)
                    .size_limit(64 << 20)
                    .build()
                {
                    return Ok(Rx::Bytes(r));
                }
            }
            Err(format!("regex does not compile: {e}"))
        }
    }
}

/// `p` (Rust regex syntax) without its look-around groups (`(?=..)`, `(?!..)`, `(?<=..)`,
/// `(?<!..)`). Dropping a zero-width assertion only widens what matches, so the result
/// matches wherever `p` does. `None` when a look-around is quantified or the pattern
/// cannot be followed (an unbalanced group).
pub fn strip_lookarounds(p: &str) -> Option<String> {
    let b = p.as_bytes();
    let mut out = String::with_capacity(p.len());
    let mut i = 0;
    let mut class = 0usize;
    let mut stripped = false;
    while i < b.len() {
        let c = b[i];
        if c == b'\\' {
            let end = (i + 2).min(b.len());
            out.push_str(p.get(i..end)?);
            i = end;
            continue;
        }
        if class > 0 {
            match c {
                b'[' => class += 1,
                b']' => class -= 1,
                _ => {}
            }
            out.push(c as char);
            i += 1;
            continue;
        }
        let rest = &b[i..];
        let look = [&b"(?="[..], b"(?!", b"(?<=", b"(?<!"]
            .iter()
            .any(|l| rest.starts_with(l));
        if look {
            // skip to the matching `)`
            let mut depth = 0usize;
            let mut cls = 0usize;
            let mut j = i;
            loop {
                let d = *b.get(j)?;
                match d {
                    b'\\' => j += 1,
                    b'[' => cls += 1,
                    b']' if cls > 0 => cls -= 1,
                    b'(' if cls == 0 => depth += 1,
                    b')' if cls == 0 => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            if matches!(b.get(j + 1), Some(b'?' | b'*' | b'+' | b'{')) {
                return None;
            }
            stripped = true;
            i = j + 1;
            continue;
        }
        if c == b'[' {
            class = 1;
            // a `]` right after `[` or `[^` is a literal
            out.push('[');
            i += 1;
            if b.get(i) == Some(&b'^') {
                out.push('^');
                i += 1;
            }
            if b.get(i) == Some(&b']') {
                out.push(']');
                i += 1;
            }
            continue;
        }
        let ch = p[i..].chars().next()?;
        out.push(ch);
        i += ch.len_utf8();
    }
    stripped.then_some(out)
}

fn has_possessive(p: &str) -> bool {
    let b = p.as_bytes();
    let mut i = 0;
    let mut in_class = false;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'[' if !in_class => in_class = true,
            b']' if in_class => in_class = false,
            b'*' | b'+' | b'?' | b'}' if !in_class && b.get(i + 1) == Some(&b'+') => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

fn to_fancy_str(input: &[u8]) -> (std::borrow::Cow<'_, str>, bool) {
    if input.is_ascii() {
        // SAFETY-free: ASCII is UTF-8
        return (
            std::borrow::Cow::Borrowed(std::str::from_utf8(input).unwrap_or("")),
            false,
        );
    }
    let s: String = input
        .iter()
        .map(|&b| if b < 0x80 { b as char } else { '\u{80}' })
        .collect();
    (std::borrow::Cow::Owned(s), true)
}

impl Rx {
    /// Does it match?
    pub fn is_match(&self, input: &[u8]) -> bool {
        match self {
            Rx::Bytes(r) => r.is_match(input),
            Rx::Fancy(r, gate) => {
                let (s, _) = to_fancy_str(input);
                if gate.as_ref().is_some_and(|g| !g.is_match(&s)) {
                    return false;
                }
                r.is_match(&s).unwrap_or(false)
            }
        }
    }

    /// Match with captures (groups 0..=9).
    pub fn captures(&self, input: &[u8]) -> Option<Caps> {
        match self {
            Rx::Bytes(r) => {
                // The DFA answers "no" cheaply; captures need the slower engines.
                if r.captures_len() == 1 {
                    // only group 0: the DFAs find it; full captures would run the backtracker,
                    // which clears a (states x input) bitset per search
                    return r.find(input).map(|m| vec![Some(m.as_bytes().to_vec())]);
                }
                if !r.is_match(input) {
                    return None;
                }
                let c = r.captures(input)?;
                Some(
                    (0..c.len().min(10))
                        .map(|i| c.get(i).map(|m| m.as_bytes().to_vec()))
                        .collect(),
                )
            }
            Rx::Fancy(r, gate) => {
                let (s, mapped) = to_fancy_str(input);
                if gate.as_ref().is_some_and(|g| !g.is_match(&s)) {
                    return None;
                }
                if !r.is_match(&s).unwrap_or(false) {
                    return None;
                }
                let c = r.captures(&s).ok()??;
                let back = |start: usize, end: usize| -> Vec<u8> {
                    if !mapped {
                        return input[start..end].to_vec();
                    }
                    // map char offsets in `s` back to byte offsets in `input`
                    let cs = s[..start].chars().count();
                    let ce = cs + s[start..end].chars().count();
                    input[cs..ce].to_vec()
                };
                Some(
                    (0..c.len().min(10))
                        .map(|i| c.get(i).map(|m| back(m.start(), m.end())))
                        .collect(),
                )
            }
        }
    }
}

/// A compiled matcher with an optional host-side twin.
#[derive(Debug)]
pub struct RxOp {
    /// In-wasm matcher.
    pub rx: Rx,
    /// Host handle, when the host compiled the same pattern.
    pub host: Option<u32>,
    /// Bytes every match holds (`regex::bytes` patterns): without them, no match.
    pub need: Option<crate::prefilter::Need>,
}

/// Phrase matcher (`@pm`, `@pmFromFile`): ASCII case-insensitive substring search.
#[derive(Debug)]
pub struct Pm {
    /// The automaton.
    pub ac: AhoCorasick,
    /// Host handle, if any.
    pub host: Option<u32>,
    /// Bytes every match holds (one of each phrase's): without them, no match.
    pub need: Option<crate::prefilter::Need>,
}

/// Builds a phrase matcher.
pub fn compile_pm(words: &[Vec<u8>]) -> Result<AhoCorasick, String> {
    AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .match_kind(aho_corasick::MatchKind::Standard)
        .build(words)
        .map_err(|e| e.to_string())
}

/// An IPv4/IPv6 network.
#[derive(Clone, Copy, Debug)]
pub struct Cidr {
    addr: u128,
    bits: u8,
    v6: bool,
}

impl Cidr {
    /// Parses `a.b.c.d[/n]` or an IPv6 address with optional prefix.
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, n) = match s.split_once('/') {
            Some((a, n)) => (a, Some(n.parse::<u8>().ok()?)),
            None => (s, None),
        };
        let ip: std::net::IpAddr = a.trim().parse().ok()?;
        Some(match ip {
            std::net::IpAddr::V4(v) => Cidr {
                addr: u128::from(u32::from(v)),
                bits: n.unwrap_or(32).min(32),
                v6: false,
            },
            std::net::IpAddr::V6(v) => Cidr {
                addr: u128::from(v),
                bits: n.unwrap_or(128).min(128),
                v6: true,
            },
        })
    }

    fn contains(&self, other: &Cidr) -> bool {
        if self.v6 != other.v6 {
            return false;
        }
        let width = if self.v6 { 128 } else { 32 };
        let shift = width - u32::from(self.bits);
        if shift >= 128 {
            return true;
        }
        (self.addr >> shift) == (other.addr >> shift)
    }
}

/// Operator with its compiled argument.
#[derive(Debug)]
pub enum Op {
    /// @rx
    Rx(Rc<RxOp>),
    /// @rx whose pattern has macros: compiled on first use per distinct expansion (bounded cache).
    RxMacro(Macro, RefCell<Vec<(Vec<u8>, Rc<Rx>)>>),
    /// @pm / @pmFromFile
    Pm(Rc<Pm>),
    /// @streq
    StrEq(Macro),
    /// @contains
    Contains(Macro),
    /// @containsWord
    ContainsWord(Macro),
    /// @beginsWith
    BeginsWith(Macro),
    /// @endsWith
    EndsWith(Macro),
    /// @within
    Within(Macro),
    /// @eq
    Eq(Macro),
    /// @ge
    Ge(Macro),
    /// @gt
    Gt(Macro),
    /// @lt
    Lt(Macro),
    /// @le
    Le(Macro),
    /// @validateByteRange
    ValidateByteRange(Box<[bool; 256]>),
    /// @validateUrlEncoding
    ValidateUrlEncoding,
    /// @validateUtf8Encoding
    ValidateUtf8Encoding,
    /// @ipMatch
    IpMatch(Vec<Cidr>),
    /// @detectSQLi
    DetectSqli,
    /// @detectXSS
    DetectXss,
    /// @unconditionalMatch (and SecAction)
    Unconditional,
    /// @noMatch, @geoLookup and @rbl (no GeoIP/DNS in a filter: never match)
    NoMatch,
}

/// `match`es `$op` on the operators whose argument may hold macros, binding the argument
/// to `$m` for `$e` (one list of them for [`Op::macro_arg`] and [`Op::macro_arg_mut`]).
macro_rules! on_macro_arg {
    ($op:expr, $m:ident => $e:expr) => {
        match $op {
            Op::Eq($m)
            | Op::Ge($m)
            | Op::Gt($m)
            | Op::Lt($m)
            | Op::Le($m)
            | Op::StrEq($m)
            | Op::Contains($m)
            | Op::ContainsWord($m)
            | Op::BeginsWith($m)
            | Op::EndsWith($m)
            | Op::Within($m)
            | Op::RxMacro($m, _) => $e,
            _ => None,
        }
    };
}

impl Op {
    /// The operator's argument when it may hold macros (`@within %{tx.allowed_methods}`).
    pub fn macro_arg(&self) -> Option<&Macro> {
        on_macro_arg!(self, m => Some(m))
    }

    /// [`Op::macro_arg`], to change (configure: `tx::tx_slots`).
    pub fn macro_arg_mut(&mut self) -> Option<&mut Macro> {
        on_macro_arg!(self, m => Some(m))
    }
}

/// The sign of a number's text (trimmed) and what follows it: `-` negative, `+` or
/// none positive.
fn sign_and_rest(b: &[u8]) -> (bool, &[u8]) {
    let s = b.trim_ascii();
    match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    }
}

/// ModSecurity's numeric parse: leading sign and digits, anything else 0.
pub fn atoi(b: &[u8]) -> i64 {
    let (neg, d) = sign_and_rest(b);
    let mut v: i64 = 0;
    for &c in d {
        if !c.is_ascii_digit() {
            break;
        }
        // min(i64::MAX, 10v + d) for v, d >= 0, as saturating_mul(10).saturating_add(d),
        // without the 128-bit multiply (a libcall on wasm32) a checked i64 multiply costs
        let d = i64::from(c - b'0');
        v = if v > (i64::MAX - d) / 10 {
            i64::MAX
        } else {
            v * 10 + d
        };
    }
    if neg {
        -v
    } else {
        v
    }
}

/// Parses the `@validateByteRange` argument (`1-255`, `9,10,13,32-126`).
pub fn byte_range(arg: &str) -> Result<Box<[bool; 256]>, String> {
    let mut ok = Box::new([false; 256]);
    for part in arg.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let a: u8 = a.parse().map_err(|_| format!("bad byte range {part}"))?;
        let b: u8 = b.parse().map_err(|_| format!("bad byte range {part}"))?;
        if a > b {
            return Err(format!("bad byte range {part}"));
        }
        for x in a..=b {
            ok[x as usize] = true;
        }
    }
    Ok(ok)
}

/// `@validateUrlEncoding`: true (match) if the input has an invalid %-escape.
pub fn invalid_url_encoding(i: &[u8]) -> bool {
    let mut k = 0;
    while k < i.len() {
        if i[k] == b'%' {
            if k + 2 >= i.len() || !i[k + 1].is_ascii_hexdigit() || !i[k + 2].is_ascii_hexdigit() {
                return true;
            }
            k += 3;
        } else {
            k += 1;
        }
    }
    false
}

/// `@validateUtf8Encoding`: true (match) if the input is not valid UTF-8 (incl. overlongs).
pub fn invalid_utf8(i: &[u8]) -> bool {
    std::str::from_utf8(i).is_err()
}

/// `@containsWord`: `w` appears with non-word characters (or ends) around it.
pub fn contains_word(hay: &[u8], w: &[u8]) -> bool {
    if w.is_empty() {
        return true;
    }
    let isw = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut start = 0;
    while let Some(p) = memfind(&hay[start..], w) {
        let s = start + p;
        let e = s + w.len();
        if (s == 0 || !isw(hay[s - 1])) && (e == hay.len() || !isw(hay[e])) {
            return true;
        }
        start = s + 1;
    }
    false
}

/// Substring search.
pub fn memfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    if needle.len() > hay.len() {
        return None;
    }
    // (a byte-at-a-time `windows().position(==)` called memcmp at every offset: `@within`
    // scans CRS's long lists such as tx.restricted_extensions on every request)
    memchr::memmem::find(hay, needle)
}

/// `@within`: is `input` a substring of the argument (ModSecurity: plain substring search).
pub fn within(input: &[u8], list: &[u8]) -> bool {
    memfind(list, input).is_some()
}

/// Does the CIDR list contain `ip`?
pub fn ip_match(list: &[Cidr], ip: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(ip) else {
        return false;
    };
    let Some(c) = Cidr::parse(s) else {
        return false;
    };
    list.iter().any(|n| n.contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookaround_gate_widens_only() {
        assert_eq!(strip_lookarounds("<\\?(?!xml)").as_deref(), Some("<\\?"));
        assert_eq!(
            strip_lookarounds("a(?<=[)(])b(?<!\\))c[(?=]").as_deref(),
            Some("abc[(?=]")
        );
        assert_eq!(strip_lookarounds("(?<n>a)b"), None, "no look-around");
        assert_eq!(strip_lookarounds("(?=a)*b"), None, "quantified");
        assert_eq!(strip_lookarounds("(?=a"), None, "unbalanced");
        let pats = [
            "<\\?(?!xml)",
            "(?<!a)b",
            "(?i)foo(?=bar|baz)",
            "x(?!y[)]z)\\d+",
            "^(?:(?!ab).)*$",
        ];
        let inputs: [&[u8]; 9] = [
            b"<?php echo 1; ?>",
            b"<?xml version='1.0'?>",
            b"cb",
            b"ab",
            b"FOObaz",
            b"foobar",
            b"xy)z12",
            b"x12",
            b"\xff\xfeab\ncd",
        ];
        for p in pats {
            let r = compile_rx(p).unwrap();
            let Rx::Fancy(f, Some(g)) = &r else {
                panic!("{p}: expected a gated fancy regex: {r:?}");
            };
            for i in inputs {
                let (s, _) = to_fancy_str(i);
                if f.is_match(&s).unwrap() {
                    assert!(g.is_match(&s), "{p} on {i:?}: the gate must match");
                }
            }
        }
        let r = compile_rx("<\\?(?!xml)").unwrap();
        assert!(r.is_match(b"<?php"));
        assert!(!r.is_match(b"<?xml ?>"));
        assert!(!r.is_match(b"<html>"));
    }

    #[test]
    fn rx_engines() {
        let r = compile_rx("^b$").unwrap();
        assert!(r.is_match(b"a\nb"));
        let r = compile_rx("a.b").unwrap();
        assert!(r.is_match(b"a\nb"));
        let r = compile_rx("^\\xe9$").unwrap();
        assert!(r.is_match(b"\xe9"));
        assert!(!r.is_match("é".as_bytes()));
        let r = compile_rx("(?<!a)b").unwrap();
        assert!(matches!(r, Rx::Fancy(..)));
        assert!(r.is_match(b"cb"));
        assert!(!r.is_match(b"ab"));
        let c = r.captures(b"\xff\xffcb").unwrap();
        assert_eq!(c[0].as_deref(), Some(&b"b"[..]));
        let r = compile_rx("(a)\\1").unwrap();
        assert!(r.is_match(b"xaa"));
        let r = compile_rx("a{b}").unwrap();
        assert!(r.is_match(b"a{b}"));
    }

    #[test]
    fn rx_brace_hex_escapes_are_bytes() {
        // PCRE without UTF reads `\x{hh}` as the byte hh, in and outside classes, in both engines
        for (pat, yes, no) in [
            ("^a\\x{7B}b$", &b"a{b"[..], &b"ab"[..]),
            ("^\\x{e9}$", b"\xe9", "é".as_bytes()),
            ("^\\x{0e9}$", b"\xe9", "é".as_bytes()),
            ("^[\\x{80}-\\x{ff}]+$", b"\x80\xff\xc3", b"a"),
            ("^[\\x{7b}\\x{7d}]{2}$", b"{}", b"{a"),
            ("(?<!a)\\x{e9}", b"b\xe9", b"a\xe9"),
            ("(?<!a)\\x{7b}", b"b{", b"a{"),
        ] {
            let r = compile_rx(pat).unwrap();
            assert!(r.is_match(yes), "{pat} must match {yes:?} ({r:?})");
            assert!(!r.is_match(no), "{pat} must not match {no:?} ({r:?})");
        }
    }

    /// Long digit strings saturate at i64::MAX (negated for '-') exactly where
    /// saturating_mul(10).saturating_add(d) does, and every value below parses exactly.
    #[test]
    fn atoi_saturates_as_saturating_arithmetic() {
        fn reference(b: &[u8]) -> i64 {
            let (neg, d) = sign_and_rest(b);
            let mut v: i64 = 0;
            for &c in d.iter().take_while(|c| c.is_ascii_digit()) {
                v = v.saturating_mul(10).saturating_add(i64::from(c - b'0'));
            }
            if neg {
                -v
            } else {
                v
            }
        }
        let max = i64::MAX.to_string();
        let mut cases = vec![
            max.clone(),
            format!("-{max}"),
            "9223372036854775808".to_string(),
            "9223372036854775806".to_string(),
            "9223372036854775810".to_string(),
            "922337203685477581".to_string(),
            "922337203685477580".to_string(),
            "99999999999999999999999".to_string(),
            "-99999999999999999999999".to_string(),
            "+0000000000000000000000000012".to_string(),
        ];
        for last in 0..10 {
            cases.push(format!("922337203685477580{last}"));
            cases.push(format!("-922337203685477580{last}7"));
        }
        for c in cases {
            assert_eq!(atoi(c.as_bytes()), reference(c.as_bytes()), "{c}");
        }
    }

    /// `memfind` is the naive first-occurrence search, on tricky haystacks.
    #[test]
    fn memfind_is_the_naive_search() {
        fn naive(hay: &[u8], needle: &[u8]) -> Option<usize> {
            if needle.is_empty() {
                return Some(0);
            }
            if needle.len() > hay.len() {
                return None;
            }
            hay.windows(needle.len()).position(|w| w == needle)
        }
        let long = "ab".repeat(5000) + "abc";
        let hays: [&[u8]; 9] = [
            b"",
            b"a",
            b"GET HEAD POST OPTIONS",
            b".asa/ .asax/ .ascx/ .backup/ .bak/ .bat/ .cdx/ .cer/",
            b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaab",
            b"\x00\xff%00%u2019\xc3\xa9\xe2\x80\x99",
            "é’ü日本".as_bytes(),
            b"AbCaBc abc",
            long.as_bytes(),
        ];
        let mut needles: Vec<Vec<u8>> = vec![b"".to_vec(), b"abc".to_vec(), b"/ .bak/".to_vec()];
        for h in hays {
            // every substring of short haystacks, a few of long ones, and near misses
            for i in 0..h.len().min(24) {
                for j in i..h.len().min(i + 12) {
                    needles.push(h[i..=j].to_vec());
                    let mut m = h[i..=j].to_vec();
                    *m.last_mut().unwrap() ^= 0x20;
                    needles.push(m);
                }
            }
        }
        for h in hays {
            for n in &needles {
                assert_eq!(memfind(h, n), naive(h, n), "{h:?} {n:?}");
            }
        }
    }

    #[test]
    fn helpers() {
        assert_eq!(atoi(b" 42x"), 42);
        assert_eq!(atoi(b"-3"), -3);
        assert_eq!(atoi(b"x"), 0);
        let r = byte_range("9,10,32-126").unwrap();
        assert!(r[9] && r[32] && !r[0] && !r[127]);
        assert!(invalid_url_encoding(b"a%zz"));
        assert!(invalid_url_encoding(b"a%4"));
        assert!(!invalid_url_encoding(b"a%41"));
        assert!(invalid_utf8(b"\xc0\xaf"));
        assert!(!invalid_utf8("é".as_bytes()));
        assert!(contains_word(b"a select b", b"select"));
        assert!(!contains_word(b"selected", b"select"));
        assert!(within(b"GET", b"GET HEAD POST"));
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(&Cidr::parse("10.1.2.3").unwrap()));
        assert!(!c.contains(&Cidr::parse("11.1.2.3").unwrap()));
        assert!(Cidr::parse("::1")
            .unwrap()
            .contains(&Cidr::parse("::1").unwrap()));
    }
}
