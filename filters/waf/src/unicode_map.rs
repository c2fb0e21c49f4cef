//! `SecUnicodeMapFile FILE CODEPAGE`: the code point to byte map `urlDecodeUni` applies to
//! `%uXXXX` (ModSecurity's `unicode.mapping` format).
//!
//! The file holds sections: a line `CODEPAGE (name)` followed by lines of `hhhh:hh` pairs
//! (code point, byte), whitespace-separated. Only the section of the chosen code page is kept.

use std::collections::HashMap;

/// Code points of one code page mapped to a byte (`U+2019` -> `'` with 20127, US-ASCII).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnicodeMap {
    map: HashMap<u32, u8>,
}

impl UnicodeMap {
    /// Reads the section of `codepage` from a mapping file. Errors when the code page is not in
    /// the file (ModSecurity would map nothing: a typo there is worth saying).
    pub fn parse(text: &[u8], codepage: u32) -> Result<UnicodeMap, String> {
        let text = String::from_utf8_lossy(text);
        let mut map = HashMap::new();
        let mut found = false;
        let mut inside = false;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let first = line.split_whitespace().next().unwrap_or("");
            if !first.contains(':') {
                // a section header: `20127 (US-ASCII)` or `(MAC - Roman)`
                inside = first.parse::<u32>().ok() == Some(codepage);
                found |= inside;
                continue;
            }
            if !inside {
                continue;
            }
            for pair in line.split_whitespace() {
                let Some((cp, b)) = pair.split_once(':') else {
                    return Err(format!("bad pair {pair:?} in code page {codepage}"));
                };
                match (u32::from_str_radix(cp, 16), u8::from_str_radix(b, 16)) {
                    (Ok(cp), Ok(b)) => {
                        map.insert(cp, b);
                    }
                    _ => return Err(format!("bad pair {pair:?} in code page {codepage}")),
                }
            }
        }
        if !found {
            return Err(format!("code page {codepage} not in the file"));
        }
        Ok(UnicodeMap { map })
    }

    /// The byte code point `cp` maps to, if the code page maps it.
    #[inline]
    pub fn get(&self, cp: u32) -> Option<u8> {
        self.map.get(&cp).copied()
    }

    /// Number of mapped code points.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// No code point mapped?
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::UnicodeMap;

    #[test]
    fn sections_and_pairs() {
        let text = b"(MAC - Roman)\n\n1250  (ANSI - Central Europe)\n00a1:21 2019:58\n\n20127 (US-ASCII)\n00a0:20 2018:27 2019:27\nff07:27\n\n20261 (T.61)\n2019:60\n";
        let m = UnicodeMap::parse(text, 20127).unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(m.get(0x2019), Some(b'\''));
        assert_eq!(m.get(0xff07), Some(b'\''));
        assert_eq!(m.get(0x00a1), None);
        assert!(UnicodeMap::parse(text, 437).is_err());
        assert!(UnicodeMap::parse(b"20127 (x)\n2019:zz\n", 20127).is_err());
    }
}
