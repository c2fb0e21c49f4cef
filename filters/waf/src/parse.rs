//! SecLang lexer: logical lines (with `\` continuations), comments, and directive tokens.

use std::fmt;
use std::rc::Rc;

/// Where a directive came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loc {
    /// File name (or `<inline>`).
    pub file: Rc<str>,
    /// 1-based line of the directive's first physical line.
    pub line: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A load error with its location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError {
    /// Where.
    pub loc: Loc,
    /// Why.
    pub msg: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.loc, self.msg)
    }
}

impl std::error::Error for LoadError {}

/// One directive: its name and its arguments (quotes removed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Directive {
    /// Location of the directive.
    pub loc: Loc,
    /// Directive name as written (e.g. `SecRule`).
    pub name: String,
    /// Arguments, unquoted.
    pub args: Vec<String>,
}

/// Splits SecLang text into directives.
pub fn directives(file: &str, text: &str) -> Result<Vec<Directive>, LoadError> {
    let file: Rc<str> = Rc::from(file);
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut start = 0usize;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if buf.is_empty() {
            let t = line.trim_start();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            start = n + 1;
        }
        let trimmed = line.trim_end();
        if let Some(body) = trimmed.strip_suffix('\\') {
            buf.push_str(body);
            continue;
        }
        buf.push_str(line);
        let loc = Loc {
            file: file.clone(),
            line: start,
        };
        let toks = tokens(&buf).map_err(|msg| LoadError {
            loc: loc.clone(),
            msg,
        })?;
        buf.clear();
        let mut it = toks.into_iter();
        if let Some(name) = it.next() {
            out.push(Directive {
                loc,
                name,
                args: it.collect(),
            });
        }
    }
    if !buf.is_empty() {
        let loc = Loc {
            file: file.clone(),
            line: start,
        };
        let toks = tokens(&buf).map_err(|msg| LoadError {
            loc: loc.clone(),
            msg,
        })?;
        let mut it = toks.into_iter();
        if let Some(name) = it.next() {
            out.push(Directive {
                loc,
                name,
                args: it.collect(),
            });
        }
    }
    Ok(out)
}

/// Splits one logical line into words; `"..."` and `'...'` quote, `\"` (`\'`) escapes the quote.
/// Other backslashes are kept (regexes need them).
pub fn tokens(s: &str) -> Result<Vec<String>, String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if b[i] == b'"' || b[i] == b'\'' {
            let q = b[i];
            i += 1;
            let mut tok = Vec::new();
            let mut closed = false;
            while i < b.len() {
                if b[i] == b'\\' && i + 1 < b.len() && b[i + 1] == q {
                    tok.push(q);
                    i += 2;
                    continue;
                }
                if b[i] == q {
                    closed = true;
                    i += 1;
                    break;
                }
                tok.push(b[i]);
                i += 1;
            }
            if !closed {
                return Err(format!("unterminated {} quote", q as char));
            }
            out.push(String::from_utf8_lossy(&tok).into_owned());
        } else {
            let j = i;
            while i < b.len() && !b[i].is_ascii_whitespace() {
                i += 1;
            }
            out.push(s[j..i].to_string());
        }
    }
    Ok(out)
}

/// One `name[:value]` action; value unquoted (`'...'` with `\'`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawAction {
    /// Action name (case kept).
    pub name: String,
    /// Value, if any.
    pub value: Option<String>,
}

/// Splits an action list on commas outside single quotes.
pub fn actions(s: &str) -> Result<Vec<RawAction>, String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut inq = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && inq && chars.peek() == Some(&'\'') {
            cur.push('\\');
            cur.push('\'');
            chars.next();
            continue;
        }
        if c == '\'' {
            inq = !inq;
        }
        if c == ',' && !inq {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    if inq {
        return Err("unterminated ' quote in actions".into());
    }
    parts.push(cur);
    let mut out = Vec::new();
    for p in parts {
        let p = p.trim();
        if p.is_empty() {
            continue;
        }
        let (name, value) = match p.split_once(':') {
            Some((n, v)) => (n.trim().to_string(), Some(unquote(v.trim()))),
            None => (p.to_string(), None),
        };
        out.push(RawAction { name, value });
    }
    Ok(out)
}

/// Removes one level of `'...'` quoting (and `\'` escapes inside).
pub fn unquote(v: &str) -> String {
    if v.len() >= 2 && v.starts_with('\'') && v.ends_with('\'') {
        v[1..v.len() - 1].replace("\\'", "'")
    } else {
        v.to_string()
    }
}

/// Splits a variable list on `|` outside `/regex/` selectors (XML XPath is not a regex).
pub fn split_vars(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut inre = false;
    let mut prev_bs = false;
    for c in s.chars() {
        if c == '/' && !prev_bs {
            let head = cur.trim_start_matches(['!', '&']).to_ascii_uppercase();
            if !head.starts_with("XML") && (inre || cur.ends_with(':')) {
                inre = !inre;
            }
        }
        prev_bs = c == '\\' && !prev_bs;
        if c == '|' && !inre {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_comments_and_quotes() {
        let t = "# comment\n\nSecRule ARGS \"@rx a\\\"b\" \\\n   \"id:1,\\\n  msg:'x, y'\"\n  SecMarker END\n";
        let d = directives("f.conf", t).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].name, "SecRule");
        assert_eq!(d[0].loc.line, 3);
        assert_eq!(d[0].args, vec!["ARGS", "@rx a\"b", "id:1,  msg:'x, y'"]);
        assert_eq!(d[1].args, vec!["END"]);
        assert_eq!(d[1].loc.line, 6);
        let a = actions(&d[0].args[2]).unwrap();
        assert_eq!(a[1].name, "msg");
        assert_eq!(a[1].value.as_deref(), Some("x, y"));
    }

    #[test]
    fn unterminated_quote_is_an_error() {
        let e = directives("f", "SecRule ARGS \"@rx a").unwrap_err();
        assert_eq!(e.loc.line, 1);
        assert!(e.msg.contains("unterminated"));
    }

    #[test]
    fn escaped_quote_in_action_value() {
        let a = actions("msg:'it\\'s, ok',id:'5'").unwrap();
        assert_eq!(a[0].value.as_deref(), Some("it's, ok"));
        assert_eq!(a[1].value.as_deref(), Some("5"));
    }

    #[test]
    fn var_split() {
        assert_eq!(
            split_vars("ARGS|!REQUEST_COOKIES:/a|b/|XML:/*|&TX:x"),
            vec!["ARGS", "!REQUEST_COOKIES:/a|b/", "XML:/*", "&TX:x"]
        );
        assert_eq!(split_vars("TX:/^MSC_/"), vec!["TX:/^MSC_/"]);
    }
}
