//! Building a rule's key from the request: its parts joined with `|`, long values
//! replaced by a hash so that a hostile header cannot make keys (and Redis memory)
//! grow without bound.

use crate::config::{Part, Rule};

/// Longest part kept as it is; longer ones become `#` + a 64-bit FNV-1a hash in hex.
pub const MAX_PART: usize = 128;

/// What a key part needs from the request.
pub trait Request {
    /// `source.address`.
    fn client_address(&self) -> Option<String>;
    /// A request header.
    fn header(&self, name: &str) -> Option<String>;
    /// The route's name.
    fn route(&self) -> Option<String>;
    /// `:path`.
    fn path(&self) -> Option<String>;
}

/// The IP of `ip:port` or `[v6]:port` (or a bare address).
pub fn ip_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match addr.rsplit_once(':') {
        Some((ip, port)) if !ip.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => ip,
        _ => addr,
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn bounded(v: &str) -> String {
    if v.len() <= MAX_PART && !v.contains('|') {
        return v.to_string();
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in v.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("#{h:016x}")
}

/// The key value of `rule` for this request (parts joined with `|`), or `None` when
/// the rule does not apply (a path outside its prefix, a missing header or cookie).
pub fn value(rule: &Rule, req: &impl Request) -> Option<String> {
    if let Some(prefix) = &rule.path_prefix {
        if !req.path()?.starts_with(prefix.as_str()) {
            return None;
        }
    }
    let mut parts = Vec::with_capacity(rule.key.len());
    for p in &rule.key {
        let v = match p {
            Part::Ip => ip_of(&req.client_address()?).to_string(),
            Part::Header(h) => req.header(h)?,
            Part::Cookie(c) => cookie(&req.header("cookie")?, c)?.to_string(),
            Part::Route => req.route().unwrap_or_default(),
            Part::Path => {
                let p = req.path()?;
                p.split('?').next().unwrap_or_default().to_string()
            }
        };
        parts.push(bounded(&v));
    }
    Some(parts.join("|"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_cookies() {
        assert_eq!(ip_of("10.1.2.3:5555"), "10.1.2.3");
        assert_eq!(ip_of("[::1]:80"), "::1");
        assert_eq!(ip_of("::1"), "::1");
        assert_eq!(cookie("a=1; sid=xyz; b=2", "sid"), Some("xyz"));
        assert_eq!(cookie("a=1", "sid"), None);
        assert_eq!(bounded("short"), "short");
        let long = "x".repeat(10_000);
        assert_eq!(bounded(&long).len(), 17);
        assert!(bounded("a|b").starts_with('#'));
    }
}
