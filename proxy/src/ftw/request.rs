//! A stage's input as the bytes sent on the wire, built as go-ftw builds them: the
//! request line and headers as written (nothing normalised, so malformed requests can
//! be tested), `Content-Length` and `Connection: close` added when missing unless
//! `autocomplete_headers: false`.

use base64::Engine as _;

use super::format::{Data, Input};

/// The bytes of `input`'s request; an error if a base64 field does not decode.
pub fn build(input: &Input) -> anyhow::Result<Vec<u8>> {
    if let Some(enc) = &input.encoded_request {
        return decode(enc, "encoded_request");
    }
    if let Some(raw) = &input.raw_request {
        return Ok(raw.as_bytes().to_vec());
    }
    let body: Vec<u8> = match (&input.encoded_data, &input.data) {
        (Some(enc), _) => decode(enc, "encoded_data")?,
        (None, Some(Data::Text(t))) => t.as_bytes().to_vec(),
        (None, Some(Data::Lines(l))) => l.join("\r\n").into_bytes(),
        (None, None) => Vec::new(),
    };
    let autocomplete = input
        .autocomplete_headers
        .unwrap_or(!input.stop_magic.unwrap_or(false));
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(input.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(input.uri.as_bytes());
    if !input.version.is_empty() {
        out.push(b' ');
        out.extend_from_slice(input.version.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    let mut has_length = false;
    let mut has_connection = false;
    for (k, v) in &input.headers {
        let (Some(k), v) = (scalar(k), scalar(v).unwrap_or_default()) else {
            continue;
        };
        has_length |=
            k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding");
        has_connection |= k.eq_ignore_ascii_case("connection");
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if autocomplete {
        if !has_length && !body.is_empty() {
            out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        if !has_connection {
            out.extend_from_slice(b"Connection: close\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    Ok(out)
}

/// A YAML scalar as header text (numbers and booleans as written).
fn scalar(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        serde_yaml::Value::Null => Some(String::new()),
        _ => None,
    }
}

fn decode(enc: &str, field: &str) -> anyhow::Result<Vec<u8>> {
    let clean: String = enc.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(clean)
        .map_err(|e| anyhow::anyhow!("{field}: not base64: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(yaml: &str) -> Input {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn autocompletes_length_and_close() {
        let bytes = build(&input(
            "method: POST\nuri: /a?b=1\nheaders:\n  Host: localhost\ndata: x=1",
        ))
        .unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "POST /a?b=1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\nConnection: close\r\n\r\nx=1"
        );
    }

    #[test]
    fn sends_as_written_without_autocomplete() {
        let bytes = build(&input(
            "uri: /<x>\nversion: HTTP/1.0\nautocomplete_headers: false\nheaders:\n  Host: h",
        ))
        .unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "GET /<x> HTTP/1.0\r\nHost: h\r\n\r\n"
        );
    }

    #[test]
    fn encoded_request_is_sent_as_is() {
        // "GET / HTTP/1.1\r\n\r\n"
        let bytes = build(&input("encoded_request: R0VUIC8gSFRUUC8xLjENCg0K")).unwrap();
        assert_eq!(bytes, b"GET / HTTP/1.1\r\n\r\n");
    }
}
