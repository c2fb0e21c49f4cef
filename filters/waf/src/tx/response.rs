//! Response input: status, protocol and headers (phase 3), and the body (phase 4), with
//! the `SecResponseBody*` settings that decide whether the body is inspected at all.

use super::*;

impl Transaction {
    /// Response status line and headers (phase 3 input). `protocol` as `HTTP/1.1`.
    pub fn set_response(&mut self, status: u16, protocol: &str, headers: &[(String, String)]) {
        self.set_scalar(s::RESPONSE_STATUS, status.to_string().as_bytes());
        self.set_scalar(s::RESPONSE_PROTOCOL, protocol.as_bytes());
        self.set_scalar(s::STATUS_LINE, format!("{protocol} {status}").as_bytes());
        for (k, v) in headers {
            let kv = self.kv(k.as_bytes(), v.as_bytes());
            self.resp_headers.push(kv);
            if k.eq_ignore_ascii_case("content-type") {
                self.set_scalar(s::RESPONSE_CONTENT_TYPE, v.as_bytes());
            } else if k.eq_ignore_ascii_case("content-length") {
                self.set_scalar(s::RESPONSE_CONTENT_LENGTH, v.trim().as_bytes());
            }
        }
        self.set_scalar(s::OUTBOUND_DATA_ERROR, b"0");
    }

    /// Do phases 3 and 4 have anything to do: rules in them, the engine not off, and no
    /// decision taken on the request (a block answered it, `allow` ended evaluation)?
    pub fn wants_response(&self) -> bool {
        self.mode != Mode::Off
            && self.intervention.is_none()
            && !self.allowed
            && [3, 4].iter().any(|p| {
                self.eng.phases[*p]
                    .iter()
                    .any(|e| matches!(e, Entry::Rule(..)))
            })
    }

    /// Is the response body inspected (phase 4 with `RESPONSE_BODY`)? Only with
    /// `SecResponseBodyAccess On` (or `ctl:responseBodyAccess=On`), for a media type listed
    /// in `SecResponseBodyMimeType` (compared without parameters, case-insensitively), when
    /// phase 4 holds rules and nothing decided yet. Call after [`Transaction::set_response`]
    /// and phase 3. Anything else streams through uninspected.
    pub fn wants_response_body(&self) -> bool {
        if !self.resp_body_access
            || self.mode == Mode::Off
            || self.intervention.is_some()
            || self.allowed
            || !self.eng.phases[4]
                .iter()
                .any(|e| matches!(e, Entry::Rule(..)))
        {
            return false;
        }
        let Some(ct) = self.scalar(s::RESPONSE_CONTENT_TYPE) else {
            return false;
        };
        let media = ct.split(|&b| b == b';').next().unwrap_or(b"").trim_ascii();
        self.eng
            .settings
            .resp_mime
            .iter()
            .any(|m| m.as_bytes().eq_ignore_ascii_case(media))
    }

    /// Response body bytes buffered for inspection and what to do beyond them
    /// (`SecResponseBodyLimit`, `SecResponseBodyLimitAction`).
    pub fn response_body_limit(&self) -> (usize, LimitAction) {
        let st = &self.eng.settings;
        (st.resp_body_limit, st.resp_body_limit_action)
    }

    /// Feeds the response body (whole, or its first `limit` bytes with `truncated`); run
    /// before phase 4. A truncated body sets `OUTBOUND_DATA_ERROR` as ModSecurity does.
    pub fn process_response_body(&mut self, data: &[u8], truncated: bool) {
        if !self.wants_response_body() {
            return;
        }
        self.set_scalar(s::RESPONSE_BODY, data);
        if self.scalar(s::RESPONSE_CONTENT_LENGTH).is_none() {
            self.set_scalar(
                s::RESPONSE_CONTENT_LENGTH,
                data.len().to_string().as_bytes(),
            );
        }
        if truncated {
            self.set_scalar(s::OUTBOUND_DATA_ERROR, b"1");
        }
    }
}
