//! A stage's input as the bytes sent on the wire, built as go-ftw builds them: the
//! request line and headers as written (nothing normalised, so malformed requests can
//! be tested); unless `autocomplete_headers: false`, `Connection: close` is added when
//! missing and, for a request with a body, `Content-Length` and
//! `Content-Type: application/x-www-form-urlencoded` (as go-ftw documents it).

use base64::Engine as _;

use super::format::{Data, Input};

/// The bytes of `input`'s request (tests: `proxy/tests/suite/ftw.rs`); an error if a base64 field does not decode.
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
    let mut has_type = false;
    for (k, v) in &input.headers {
        let (Some(k), v) = (scalar(k), scalar(v).unwrap_or_default()) else {
            continue;
        };
        has_length |=
            k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding");
        has_connection |= k.eq_ignore_ascii_case("connection");
        has_type |= k.eq_ignore_ascii_case("content-type");
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if autocomplete {
        if !has_length && !body.is_empty() {
            out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        if !has_type && !body.is_empty() {
            out.extend_from_slice(b"Content-Type: application/x-www-form-urlencoded\r\n");
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
