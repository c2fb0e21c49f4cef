//! The local reply's way back through the filters that saw the request (Envoy's
//! `sendLocalReply` while decoding).

use super::*;

impl Chain {
    /// Runs the local reply in `stream.local_response` through the response callbacks
    /// of the filters that saw the request (those with a stream context, the replying
    /// filter included), last first, as Envoy's filter manager does with a reply sent
    /// while decoding: headers, then the whole body at once. Filters that never ran
    /// (after the replier) and filters that failed are skipped, as Envoy's Wasm filter
    /// skips a stream without a VM context. Returns the reply as the filters left it;
    /// a filter that replies again replaces it (sent as is), `Err` when one resets.
    pub fn local_reply(&mut self, stream: &mut StreamState) -> Result<LocalResponse, Outcome> {
        let Some(local) = stream.local_response.take() else {
            return Err(Outcome::Reset);
        };
        let local = with_content_type(local);
        let mut map = HeaderMap::with_capacity(local.headers.len() + 2, 64);
        map.append(":status", local.status.to_string().as_bytes());
        for (k, v) in &local.headers {
            if !k.starts_with(':') && !k.eq_ignore_ascii_case("content-length") {
                map.append(k, v);
            }
        }
        map.append("content-length", local.body.len().to_string().as_bytes());
        stream.response_headers = map;
        stream.info.response_code = Some(local.status);
        let ran: Vec<usize> = (0..self.filters.len())
            .rev()
            .filter(|i| self.slots[*i].ctx.is_some() && !self.slots[*i].skipped)
            .collect();
        let eos = local.body.is_empty();
        let mut laps = Laps::default();
        for &i in &ran {
            stream.resumed = false;
            let step = self.run(
                &mut laps,
                i,
                BodyKind::Response,
                Phase::ResponseHeaders,
                stream,
                |vm, ctx, s| vm.on_response_headers(s, ctx, eos),
            );
            if let Some(again) = self.replied_again(stream, step)? {
                return Ok(again);
            }
        }
        let mut body = local.body;
        if !eos {
            let mut laps = Laps::default();
            for &i in &ran {
                if self.slots[i].skipped {
                    continue;
                }
                stream.body = body;
                let step = self.run(
                    &mut laps,
                    i,
                    BodyKind::Response,
                    Phase::ResponseBody,
                    stream,
                    |vm, ctx, s| vm.on_body(s, ctx, BodyKind::Response, true),
                );
                body = std::mem::take(&mut stream.body);
                if let Some(again) = self.replied_again(stream, step)? {
                    return Ok(again);
                }
            }
        }
        let status = stream
            .response_headers
            .get(":status")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse::<u16>().ok())
            .filter(|c| (100..=999).contains(c))
            .unwrap_or(local.status);
        stream.info.response_code = Some(status);
        let headers = stream
            .response_headers
            .iter()
            .filter(|(k, _)| !k.starts_with(':'))
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect();
        Ok(LocalResponse {
            status,
            details: local.details,
            body,
            headers,
        })
    }

    /// After a callback of the local-reply path: `Some` when the filter sent another
    /// reply (it replaces the first, untouched by filters), `Err` on a reset.
    fn replied_again(
        &mut self,
        stream: &mut StreamState,
        step: Step,
    ) -> Result<Option<LocalResponse>, Outcome> {
        match step {
            Step::Stop(Outcome::Respond) => match stream.local_response.take() {
                Some(again) => {
                    stream.info.response_code = Some(again.status);
                    Ok(Some(with_content_type(again)))
                }
                None => Err(Outcome::Reset),
            },
            Step::Stop(o) => Err(o),
            Step::Go(_) => Ok(None),
        }
    }
}

/// A local reply with `content-type: text/plain` when it has a body and the filter
/// set no content type (as Envoy's `sendLocalReply`).
pub fn with_content_type(mut local: LocalResponse) -> LocalResponse {
    if !local.body.is_empty()
        && !local
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        local
            .headers
            .push(("content-type".into(), b"text/plain".to_vec()));
    }
    local
}
