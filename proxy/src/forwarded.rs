//! Request metadata Sluice adds before routing, as Envoy's connection manager does:
//! `x-request-id` (generated as a UUID v4 unless a trusted one came with the request)
//! and `x-forwarded-for` / `x-forwarded-proto` (the `[server] forwarded` policy).
//! Filters see the result as request headers, the origin receives it.

use std::net::IpAddr;

use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;

/// The request-id header.
pub const REQUEST_ID: &str = "x-request-id";
const XFF: &str = "x-forwarded-for";
const XFP: &str = "x-forwarded-proto";
/// The names above, parsed once: a look-up by `&str` parses the name each time.
static REQUEST_ID_NAME: HeaderName = HeaderName::from_static(REQUEST_ID);
static XFF_NAME: HeaderName = HeaderName::from_static(XFF);
static XFP_NAME: HeaderName = HeaderName::from_static(XFP);

/// What Sluice does with `x-forwarded-for` and `x-forwarded-proto` (`[server] forwarded`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Append the client address to `x-forwarded-for`; the list the client sent is
    /// kept only when the client is trusted, and so is its `x-forwarded-proto`
    /// (otherwise set to the listener's scheme).
    #[default]
    Append,
    /// `x-forwarded-for` is the client address and `x-forwarded-proto` the listener's
    /// scheme, whatever the client sent.
    Replace,
    /// Leave both headers as the client sent them.
    Off,
}

impl Mode {
    /// Parses the policy value.
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "append" => Some(Mode::Append),
            "replace" => Some(Mode::Replace),
            "off" => Some(Mode::Off),
            _ => None,
        }
    }
}

/// An address range, `10.0.0.0/8` or a bare address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    bits: u8,
}

impl Cidr {
    /// Parses `addr[/bits]`.
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b.parse::<u8>().ok()?)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        (bits <= max).then_some(Cidr { addr, bits })
    }

    /// Is `ip` in the range (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.bits),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.bits),
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let full = usize::from(bits / 8);
    if a[..full] != b[..full] {
        return false;
    }
    let rest = bits % 8;
    rest == 0 || (a[full] ^ b[full]) & (0xffu8 << (8 - rest)) == 0
}

/// The `[server]` keys about request metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// `forwarded`.
    pub mode: Mode,
    /// `trust_forwarded_from`: clients whose `x-forwarded-*` headers are kept.
    pub trusted: Vec<Cidr>,
    /// `trust_request_id`: keep an `x-request-id` the client sent.
    pub trust_request_id: bool,
}

/// Sets the request's `x-request-id` and `x-forwarded-*` headers; returns the request id.
pub fn apply(
    req: &mut RequestHeader,
    cfg: &Config,
    client: Option<IpAddr>,
    tls: bool,
) -> pingora::Result<String> {
    let (id, added) = decide(req, cfg, client, tls)?;
    added.into_head(req, &id)?;
    Ok(id)
}

/// The request metadata Sluice adds to a request, decided from the client's head
/// ([`decide`]) and written either into that head ([`Added::apply`]: filters see it) or,
/// on a route where nothing reads the head before it goes upstream, only into the head
/// sent upstream: [`Added::replaces`] names the client's fields it replaces,
/// [`Added::fields`] gives those it sets (no insertion into the client's head, whose
/// maps Pingora sized to the fields read: three insertions there cost ~7 k
/// instructions a request, issue #18).
#[derive(Debug, Clone)]
pub struct Added {
    /// `x-request-id` is set to the request's id (a new one; `false`: the client's is
    /// kept). The id itself is the caller's (`decide` returns it): one copy of it a
    /// request, written from there.
    request_id: bool,
    /// `x-forwarded-for`: `None` left alone, `Some(None)` removed, `Some(Some(v))` set.
    xff: Option<Option<HeaderValue>>,
    /// `x-forwarded-proto` to set (`None`: left alone).
    xfp: Option<HeaderValue>,
}

/// What [`apply`] does to `req`, decided and not done: the request id (the client's when
/// trusted, else a new one) and the fields to write.
pub fn decide(
    req: &RequestHeader,
    cfg: &Config,
    client: Option<IpAddr>,
    tls: bool,
) -> pingora::Result<(String, Added)> {
    let kept = req
        .headers
        .get(&REQUEST_ID_NAME)
        .filter(|_| cfg.trust_request_id)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string);
    let (id, request_id) = match kept {
        Some(id) => (id, false),
        None => (uuid_v4(), true),
    };
    let trusted = client.is_some_and(|ip| cfg.trusted.iter().any(|c| c.contains(ip)));
    let scheme = HeaderValue::from_static(if tls { "https" } else { "http" });
    let (xff, xfp) = match cfg.mode {
        Mode::Off => (None, None),
        Mode::Replace => (Some(client.and_then(client_value)), Some(scheme)),
        Mode::Append => {
            let prior = trusted
                .then(|| joined(req, &XFF_NAME))
                .flatten()
                .filter(|v| !v.is_empty());
            let value = match (prior, client) {
                (Some(p), Some(ip)) => Some(string_value(format!("{p}, {ip}"))?),
                (Some(p), None) => Some(string_value(p)?),
                (None, ip) => ip.and_then(client_value),
            };
            let keep_proto = trusted && req.headers.contains_key(&XFP_NAME);
            (Some(value), (!keep_proto).then_some(scheme))
        }
    };
    Ok((
        id,
        Added {
            request_id,
            xff,
            xfp,
        },
    ))
}

impl Added {
    /// Writes the fields into `req` (set fields replace the client's of the same name),
    /// a copy of each: for the copies of a head sent upstream, one per attempt. `id`:
    /// the request's id, as [`decide`] returned it.
    pub fn apply(&self, req: &mut RequestHeader, id: &str) -> pingora::Result<()> {
        self.clone().into_head(req, id)
    }

    /// [`Self::apply`], the fields moved in (the client's head, once).
    pub fn into_head(self, req: &mut RequestHeader, id: &str) -> pingora::Result<()> {
        if self.request_id {
            req.insert_header(REQUEST_ID, string_value(id.to_string())?)?;
        }
        if let Some(v) = self.xff {
            set_or_remove(req, XFF, v)?;
        }
        if let Some(v) = self.xfp {
            req.insert_header(XFP, v)?;
        }
        Ok(())
    }

    /// Whether the client's field `name` is replaced or removed by [`Self::apply`].
    pub fn replaces(&self, name: &HeaderName) -> bool {
        self.touches(name.as_str())
    }

    /// Whether [`Self::apply`] sets, replaces or removes the field `name` (lowercase).
    pub fn touches(&self, name: &str) -> bool {
        (self.request_id && name == REQUEST_ID)
            || (self.xff.is_some() && name == XFF)
            || (self.xfp.is_some() && name == XFP)
    }

    /// Leaves alone the fields `taken(name)` says something else now decides (a
    /// filter edited them in its view of the request, and the write-back put its
    /// values in the client's head): [`Self::apply`] neither sets nor removes them.
    pub fn leave(&mut self, mut taken: impl FnMut(&str) -> bool) {
        if taken(REQUEST_ID) {
            self.request_id = false;
        }
        if taken(XFF) {
            self.xff = None;
        }
        if taken(XFP) {
            self.xfp = None;
        }
    }

    /// The fields [`Self::apply`] sets, in its order, names and values (`id`: the
    /// request's id, as [`decide`] returned it).
    pub fn fields<'a>(&'a self, id: &'a str) -> impl Iterator<Item = (&'a str, &'a [u8])> {
        // Typed so that the static names take the map's lifetime (the iterator's item
        // type is fixed, not shortened by variance).
        let fields: [(&str, Option<&[u8]>); 3] = [
            (REQUEST_ID, self.request_id.then_some(id.as_bytes())),
            (
                XFF,
                self.xff
                    .as_ref()
                    .and_then(Option::as_ref)
                    .map(HeaderValue::as_bytes),
            ),
            (XFP, self.xfp.as_ref().map(HeaderValue::as_bytes)),
        ];
        fields.into_iter().filter_map(|(k, v)| v.map(|v| (k, v)))
    }
}

fn joined(req: &RequestHeader, name: &HeaderName) -> Option<String> {
    let vals: Vec<&str> = req
        .headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .collect();
    (!vals.is_empty()).then(|| vals.join(", "))
}

thread_local! {
    /// The last client address this thread wrote into `x-forwarded-for`, and its value:
    /// a keep-alive connection's requests come from one address, and a clone of the
    /// value shares its bytes.
    static LAST_CLIENT: std::cell::RefCell<Option<(IpAddr, HeaderValue)>> =
        const { std::cell::RefCell::new(None) };
}

/// [`ip_value`], the last address's value reused: no allocation a request on a
/// keep-alive connection.
fn client_value(ip: IpAddr) -> Option<HeaderValue> {
    LAST_CLIENT
        .try_with(|last| {
            let Ok(mut last) = last.try_borrow_mut() else {
                return ip_value(ip);
            };
            if let Some((seen, value)) = last.as_ref() {
                if *seen == ip {
                    return Some(value.clone());
                }
            }
            let value = ip_value(ip)?;
            *last = Some((ip, value.clone()));
            Some(value)
        })
        .unwrap_or_else(|_| ip_value(ip))
}

/// The client address as a header value, formatted on the stack: the value's bytes
/// are its only allocation (no `String` grown digit by digit, no copy of it).
fn ip_value(ip: IpAddr) -> Option<HeaderValue> {
    use std::io::Write;
    if let IpAddr::V4(v4) = ip {
        // The common case written digit by digit (`Display` goes through `core::fmt`'s
        // machinery: ~1 k instructions a request).
        let mut buf = [0u8; 15];
        let mut len = 0;
        for (i, octet) in v4.octets().into_iter().enumerate() {
            if i > 0 {
                buf[len] = b'.';
                len += 1;
            }
            if octet >= 100 {
                buf[len] = b'0' + octet / 100;
                len += 1;
            }
            if octet >= 10 {
                buf[len] = b'0' + octet / 10 % 10;
                len += 1;
            }
            buf[len] = b'0' + octet % 10;
            len += 1;
        }
        return HeaderValue::from_bytes(&buf[..len]).ok();
    }
    // The longest address text (an IPv4-mapped IPv6 address in full) is 45 bytes.
    let mut buf = [0u8; 48];
    let len = {
        let mut rest = &mut buf[..];
        write!(rest, "{ip}").ok()?;
        48 - rest.len()
    };
    HeaderValue::from_bytes(&buf[..len]).ok()
}

/// A header value built from `s` (its buffer reused), or Pingora's error for a bad one.
fn string_value(s: String) -> pingora::Result<HeaderValue> {
    HeaderValue::try_from(s).map_err(|_| {
        pingora::Error::explain(
            pingora::ErrorType::InvalidHTTPHeader,
            "invalid value while insert",
        )
    })
}

fn set_or_remove(
    req: &mut RequestHeader,
    name: &'static str,
    v: Option<HeaderValue>,
) -> pingora::Result<()> {
    match v {
        Some(v) => req.insert_header(name, v).map(|_| ()),
        None => {
            req.remove_header(name);
            Ok(())
        }
    }
}

/// Request ids a thread keeps for its next requests ([`recycle_id`]).
const SPARE_ID_COUNT: usize = 64;

thread_local! {
    /// The buffers of finished requests' ids, reused by [`uuid_v4`]: a request's id
    /// then costs no allocation once the thread has served a few.
    static SPARE_IDS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Gives a finished request's id back for [`uuid_v4`] to reuse (ids of a usual size
/// only; others are freed).
pub fn recycle_id(id: String) {
    if !(36..=256).contains(&id.capacity()) {
        return;
    }
    let _ = SPARE_IDS.try_with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            if s.len() < SPARE_ID_COUNT {
                s.push(id);
            }
        }
    });
}

/// A random UUID v4 (RFC 9562 §5.4), from the thread's ChaCha generator (seeded and
/// periodically reseeded from the kernel by `rand`): no system call per request.
pub fn uuid_v4() -> String {
    use rand::RngCore;
    let mut id = SPARE_IDS
        .try_with(|s| s.try_borrow_mut().ok().and_then(|mut s| s.pop()))
        .ok()
        .flatten()
        .unwrap_or_else(|| String::with_capacity(36));
    id.clear();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    // Spelled into a stack buffer, then appended once: a `push` per character checked
    // the string's capacity 36 times (~400 instructions a request).
    // Where each byte's two digits go (the dashes sit at 8, 13, 18 and 23).
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    let mut text = [b'-'; 36];
    for (byte, at) in b.iter().zip(AT) {
        text[at] = HEX[usize::from(byte >> 4)];
        text[at + 1] = HEX[usize::from(byte & 0x0f)];
    }
    id.push_str(std::str::from_utf8(&text).expect("hex digits and dashes"));
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_match_their_prefix() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert!(Cidr::parse("fd00::/8")
            .unwrap()
            .contains("fd12::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("nope/8").is_none());
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn client_addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "192.168.100.9",
            "::1",
            "fd12::3:4",
            "::ffff:10.1.2.3",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_value(ip).unwrap().to_str().unwrap(), ip.to_string());
        }
    }

    #[test]
    fn uuids_are_version_4() {
        let a = uuid_v4();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(a, uuid_v4());
        for (i, c) in a.bytes().enumerate() {
            match i {
                8 | 13 | 18 | 23 => assert_eq!(c, b'-', "{a}"),
                _ => assert!(matches!(c, b'0'..=b'9' | b'a'..=b'f'), "{a}"),
            }
        }
    }
}
