//! The operator of a rule, with its matchers compiled once and shared (`@rx`, `@pm`, ...).

use super::*;

impl<'a> Loader<'a> {
    pub(super) fn rx_op(&mut self, pat: &str) -> Result<Rc<RxOp>, String> {
        if let Some(r) = self.rx_cache.get(pat) {
            return Ok(r.clone());
        }
        let rx = ops::compile_rx(pat)?;
        let mut host = None;
        let mut need = None;
        match &rx {
            ops::Rx::Bytes(r) => {
                self.stats.rx_bytes += 1;
                need = crate::prefilter::Need::regex(r.as_str());
                if let Some(h) = &self.host {
                    host = h.compile_rx(r.as_str());
                    if host.is_some() {
                        self.stats.host_matchers += 1;
                    }
                }
            }
            ops::Rx::Fancy(..) => self.stats.rx_fancy += 1,
        }
        let op = Rc::new(RxOp { rx, host, need });
        self.rx_cache.insert(pat.to_string(), op.clone());
        Ok(op)
    }

    pub(super) fn pm_op(&mut self, words: Vec<Vec<u8>>) -> Result<Rc<Pm>, String> {
        if let Some(p) = self.pm_cache.get(&words) {
            return Ok(p.clone());
        }
        let ac = ops::compile_pm(&words)?;
        let mut host = None;
        if let Some(h) = &self.host {
            host = h.compile_pm(&words);
            if host.is_some() {
                self.stats.host_matchers += 1;
            }
        }
        let need = crate::prefilter::Need::phrases(&words);
        let p = Rc::new(Pm { ac, host, need });
        self.pm_cache.insert(words, p.clone());
        Ok(p)
    }

    pub(super) fn operator(&mut self, loc: &Loc, s: &str) -> Result<(Op, bool), LoadError> {
        let (neg, s) = match s.strip_prefix('!') {
            Some(r) => (true, r),
            None => (false, s),
        };
        let (name, arg) = if let Some(r) = s.strip_prefix('@') {
            match r.split_once(|c: char| c.is_ascii_whitespace()) {
                Some((n, a)) => (n, a.trim_start()),
                None => (r, ""),
            }
        } else {
            ("rx", s)
        };
        let m = |a: &str| parse_macro(a).map_err(|e| err(loc, e));
        let op = match name {
            "rx" => {
                let mac = m(arg)?;
                if mac.literal().is_some() {
                    Op::Rx(self.rx_op(arg).map_err(|e| err(loc, format!("@rx: {e}")))?)
                } else {
                    Op::RxMacro(mac, RefCell::new(Vec::new()))
                }
            }
            "pm" => {
                let words: Vec<Vec<u8>> = arg
                    .split_ascii_whitespace()
                    .map(|w| w.as_bytes().to_vec())
                    .collect();
                if words.is_empty() {
                    return Err(err(loc, "@pm needs words"));
                }
                Op::Pm(self.pm_op(words).map_err(|e| err(loc, e))?)
            }
            "pmFromFile" | "pmf" => {
                let mut words = Vec::new();
                for f in arg.split_ascii_whitespace() {
                    let path = if f.starts_with('/') {
                        f.to_string()
                    } else {
                        format!("{}{}", dir_of(&loc.file), f)
                    };
                    let data = self
                        .src
                        .read(&path)
                        .map_err(|e| err(loc, format!("@pmFromFile {path}: {e}")))?;
                    for line in data.split(|&b| b == b'\n') {
                        let line = line.trim_ascii();
                        if line.is_empty() || line.starts_with(b"#") {
                            continue;
                        }
                        words.push(line.to_vec());
                    }
                }
                if words.is_empty() {
                    return Err(err(loc, "@pmFromFile: no phrases"));
                }
                Op::Pm(self.pm_op(words).map_err(|e| err(loc, e))?)
            }
            "streq" => Op::StrEq(m(arg)?),
            "contains" => Op::Contains(m(arg)?),
            "containsWord" => Op::ContainsWord(m(arg)?),
            "beginsWith" => Op::BeginsWith(m(arg)?),
            "endsWith" => Op::EndsWith(m(arg)?),
            "within" => Op::Within(m(arg)?),
            "eq" => Op::Eq(m(arg)?),
            "ge" => Op::Ge(m(arg)?),
            "gt" => Op::Gt(m(arg)?),
            "lt" => Op::Lt(m(arg)?),
            "le" => Op::Le(m(arg)?),
            "validateByteRange" => {
                Op::ValidateByteRange(ops::byte_range(arg).map_err(|e| err(loc, e))?)
            }
            "validateUrlEncoding" => Op::ValidateUrlEncoding,
            "validateUtf8Encoding" => Op::ValidateUtf8Encoding,
            "ipMatch" => {
                let mut list = Vec::new();
                for a in arg.split([',', ' ']).filter(|a| !a.is_empty()) {
                    list.push(
                        ops::Cidr::parse(a)
                            .ok_or_else(|| err(loc, format!("@ipMatch: bad address {a:?}")))?,
                    );
                }
                Op::IpMatch(list)
            }
            "detectSQLi" => Op::DetectSqli,
            "detectXSS" => Op::DetectXss,
            "unconditionalMatch" => Op::Unconditional,
            "noMatch" | "geoLookup" | "rbl" => Op::NoMatch,
            other => return Err(err(loc, format!("unsupported operator @{other}"))),
        };
        Ok((op, neg))
    }
}
