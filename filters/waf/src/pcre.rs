//! PCRE (as libmodsecurity compiles it: DOTALL|MULTILINE, no UTF) to `regex::bytes` syntax.
//!
//! Inside classes every non-alphanumeric or non-ASCII literal becomes `\xHH` (covers `[`, `\'`,
//! `\<` and UTF-8 bytes, which PCRE without UTF treats as separate bytes); outside classes `{`/`}`
//! are escaped unless they form `{n}`, `{n,}`, `{n,m}`; escaped punctuation becomes `\xHH`;
//! possessive `+` is dropped (unless `keep_possessive`, for fancy-regex).

fn lit(b: u8, fancy: bool, out: &mut String) {
    if b < 0x80 && b.is_ascii_alphanumeric() {
        out.push(b as char);
    } else {
        byte(b, fancy, out);
    }
}

/// One byte as an escape. fancy-regex matches a `&str` view of the input where every byte >= 0x80
/// is U+0080 (ops.rs), so there a high byte is `\x{80}`.
fn byte(b: u8, fancy: bool, out: &mut String) {
    if fancy && b >= 0x80 {
        out.push_str("\\x{80}");
    } else {
        out.push_str(&format!("\\x{b:02x}"));
    }
}

/// Translates one escape at `p[i] == '\\'`; returns the next index.
/// `\x{hh}` and `\xhh` are the byte hh (PCRE without UTF), not the code point.
fn esc(p: &[u8], i: usize, fancy: bool, out: &mut String) -> usize {
    let Some(&b) = p.get(i + 1) else {
        out.push_str("\\\\");
        return i + 1;
    };
    if b == b'x' {
        if p.get(i + 2) == Some(&b'{') {
            if let Some(j) = p[i..].iter().position(|&c| c == b'}') {
                let digits = &p[i + 3..i + j];
                let v = std::str::from_utf8(digits)
                    .ok()
                    .filter(|d| !d.is_empty())
                    .and_then(|d| u32::from_str_radix(d, 16).ok());
                match v {
                    Some(v) if v <= 0xff => byte(v as u8, fancy, out),
                    // > 0xff is a compile error in PCRE's byte mode; let the regex crate say so
                    _ => out.push_str(&String::from_utf8_lossy(&p[i..i + j + 1])),
                }
                return i + j + 1;
            }
        }
        // `\x` takes up to two hex digits (none: NUL)
        let digits = p[i + 2..]
            .iter()
            .take(2)
            .take_while(|c| c.is_ascii_hexdigit())
            .count();
        let v = std::str::from_utf8(&p[i + 2..i + 2 + digits])
            .ok()
            .and_then(|d| u8::from_str_radix(d, 16).ok())
            .unwrap_or(0);
        byte(v, fancy, out);
        return i + 2 + digits;
    }
    if b.is_ascii_alphanumeric() {
        out.push('\\');
        out.push(b as char);
        return i + 2;
    }
    lit(b, fancy, out);
    i + 2
}

fn counted_quantifier(p: &[u8]) -> Option<usize> {
    // p[0] == '{'
    let mut i = 1;
    let d0 = i;
    while i < p.len() && p[i].is_ascii_digit() {
        i += 1;
    }
    if i == d0 {
        return None;
    }
    if p.get(i) == Some(&b',') {
        i += 1;
        while i < p.len() && p[i].is_ascii_digit() {
            i += 1;
        }
    }
    (p.get(i) == Some(&b'}')).then_some(i + 1)
}

/// Translates a PCRE pattern. `fancy`: keep possessives and prefix `(?sm)` (fancy-regex syntax).
pub fn translate(pat: &str, fancy: bool) -> String {
    let p = pat.as_bytes();
    let n = p.len();
    let mut out = String::with_capacity(n + 16);
    out.push_str(if fancy { "(?sm)" } else { "(?sm-u)" });
    let mut i = 0;
    let mut quant = false;
    while i < n {
        let c = p[i];
        if c == b'+' && quant && !fancy {
            i += 1;
            quant = false;
            continue;
        }
        quant = false;
        if c == b'\\' {
            i = esc(p, i, fancy, &mut out);
        } else if c == b'[' {
            out.push('[');
            i += 1;
            if p.get(i) == Some(&b'^') {
                out.push('^');
                i += 1;
            }
            if p.get(i) == Some(&b']') {
                lit(b']', fancy, &mut out);
                i += 1;
            }
            while i < n && p[i] != b']' {
                if p[i] == b'\\' {
                    i = esc(p, i, fancy, &mut out);
                } else if p[i] == b'-'
                    && p.get(i + 1).is_some_and(|&x| x != b']')
                    && !out.ends_with('[')
                    && !out.ends_with("[^")
                {
                    out.push('-');
                    i += 1;
                } else if p[i] == b'[' && p.get(i + 1) == Some(&b':') {
                    // POSIX class [:alpha:] stays as is
                    if let Some(j) = p[i..].windows(2).position(|w| w == b":]") {
                        out.push_str(&String::from_utf8_lossy(&p[i..i + j + 2]));
                        i += j + 2;
                    } else {
                        lit(p[i], fancy, &mut out);
                        i += 1;
                    }
                } else {
                    lit(p[i], fancy, &mut out);
                    i += 1;
                }
            }
            out.push(']');
            i += 1;
            quant = false;
        } else if c == b'{' {
            if let Some(len) = counted_quantifier(&p[i..]) {
                out.push_str(&String::from_utf8_lossy(&p[i..i + len]));
                i += len;
                quant = true;
            } else {
                out.push_str("\\{");
                i += 1;
            }
        } else if c == b'}' {
            out.push_str("\\}");
            i += 1;
        } else if c == b'(' && p.get(i + 1) == Some(&b'?') {
            out.push_str("(?");
            i += 2;
        } else if c >= 0x80 {
            lit(c, fancy, &mut out);
            i += 1;
        } else {
            out.push(c as char);
            i += 1;
            quant = matches!(c, b'*' | b'+' | b'?');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::translate;

    #[test]
    fn translations() {
        assert_eq!(translate("a{2}b{c}", false), "(?sm-u)a{2}b\\{c\\}");
        assert_eq!(translate("[a\\'\\[]", false), "(?sm-u)[a\\x27\\x5b]");
        assert_eq!(translate("a*+b", false), "(?sm-u)a*b");
        assert_eq!(translate("a*+b", true), "(?sm)a*+b");
        assert_eq!(translate("[´]", false), "(?sm-u)[\\xc2\\xb4]");
        assert_eq!(translate("\\<x", false), "(?sm-u)\\x3cx");
        assert_eq!(
            translate("\\x{7B}\\x{00e9}\\xe\\x", false),
            "(?sm-u)\\x7b\\xe9\\x0e\\x00"
        );
        assert_eq!(
            translate("[\\x{e9}é]", true),
            "(?sm)[\\x{80}\\x{80}\\x{80}]"
        );
        for p in ["[\\w\\s=.,;)(]++x", "(?i:a|b)\\b\\d+", "[^?\\w\\s=.,;)(]++"] {
            regex::bytes::Regex::new(&translate(p, false)).unwrap();
        }
    }
}
