//! Parsing an HTTP/1 response head (`httparse`, configured as Pingora's client is) into
//! a [`ResponseHeader`] built once and owned: names keep their case (when the head goes
//! on to an HTTP/1 client: [`Case`]) and order, values
//! share the bytes read (no copy), obs-folds collapse as Pingora's
//! `header_value_from_raw` does. A head without obs-folds (its line feeds are exactly
//! its lines') has its values taken as they are: `httparse` has already refused every
//! byte a value may not hold, so that per-byte normalisation has nothing to do.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::HeaderValue;
use pingora::http::{header_value_from_raw, IntoCaseHeaderName, ResponseHeader};
use pingora::prelude::*;
use pingora::ErrorType;

use super::raw_head::{Field, Fields, Part, RawHead};

/// Most header lines a response head may carry (as Pingora's client).
pub const MAX_HEADERS: usize = 256;

/// Largest response head accepted (Pingora's client allows 1 MiB; nginx's
/// `proxy_buffer_size` is 4-8 KiB). A bigger head is the upstream's error (502).
pub const MAX_HEAD: usize = 64 * 1024;

/// The parser settings Pingora's HTTP/1 client uses for responses.
fn parser() -> httparse::ParserConfig {
    let mut p = httparse::ParserConfig::default();
    p.allow_spaces_after_header_name_in_responses(true);
    p.allow_obsolete_multiline_headers_in_responses(true);
    p
}

/// Whether a parsed head keeps its field names' case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// Kept (Pingora's case map): an HTTP/1 client gets the names as the origin wrote
    /// them, as from nginx.
    Kept,
    /// Not kept: the head goes to an HTTP/2 client, whose names are lowercase on the
    /// wire whatever their case here. Pingora's `build_no_case` head: one map, not two,
    /// so each field costs one insertion and no copy of its name (issue #18).
    Dropped,
}

/// The form a response head is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// As the bytes read ([`RawHead`]): the head goes to an HTTP/1 client through no
    /// filter. A head with an obs-fold is built all the same (with its case), so that
    /// the fold is collapsed.
    Raw,
    /// Built into a [`ResponseHeader`], its names' case kept or not.
    Built(Case),
}

/// A response head read.
pub enum ResponseHead {
    /// As the bytes read ([`Form::Raw`]); never with an obs-fold ([`read`] builds
    /// such a head), so its bytes can be written as they are.
    Raw(Box<RawHead>),
    /// Built into Pingora's head.
    Built(Box<ResponseHeader>),
}

impl ResponseHead {
    /// The status code.
    pub fn status(&self) -> http::StatusCode {
        match self {
            ResponseHead::Raw(h) => h.status,
            ResponseHead::Built(h) => h.status,
        }
    }
}

/// The response head at the start of `buf` in the form `form`, when it is complete: it
/// is split off `buf` (what follows it stays there). `Ok(None)`: more bytes are needed.
/// Errors: as [`parse_raw`].
pub fn read(buf: &mut BytesMut, form: Form) -> Result<Option<ResponseHead>> {
    Ok(match form {
        Form::Built(case) => parse(buf, case)?.map(ResponseHead::Built),
        Form::Raw => match parse_raw(buf)? {
            Some(raw) if raw.folded() => Some(ResponseHead::Built(build(&raw, Case::Kept)?)),
            Some(raw) => Some(ResponseHead::Raw(Box::new(raw))),
            None => None,
        },
    })
}

/// What httparse found at the start of `buf`: the head's length, when it is complete.
/// Errors: a malformed head, too many header lines, or a head longer than [`MAX_HEAD`]
/// (all `InvalidHTTPHeader`).
fn head_of<'b, 'h>(
    buf: &'b [u8],
    resp: &mut httparse::Response<'h, 'b>,
    slots: &'h mut [MaybeUninit<httparse::Header<'b>>],
) -> Result<Option<usize>> {
    let len = match parser().parse_response_with_uninit_headers(resp, buf, slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HEAD {
                return Err(Error::explain(
                    ErrorType::InvalidHTTPHeader,
                    format!("response head larger than {MAX_HEAD} bytes"),
                ));
            }
            return Ok(None);
        }
        Err(e) => {
            return Err(Error::because(
                ErrorType::InvalidHTTPHeader,
                "malformed response head",
                e,
            ))
        }
    };
    if len > MAX_HEAD {
        return Err(Error::explain(
            ErrorType::InvalidHTTPHeader,
            format!("response head larger than {MAX_HEAD} bytes"),
        ));
    }
    Ok(Some(len))
}

/// The version httparse read.
fn version_of(resp: &httparse::Response<'_, '_>) -> http::Version {
    match resp.version {
        Some(1) => http::Version::HTTP_11,
        Some(0) => http::Version::HTTP_10,
        _ => http::Version::HTTP_09,
    }
}

/// Whether the head's `len` first bytes hold an obs-fold: lines end in a line feed each
/// (the status line, every field line, the empty line), so one more anywhere is a fold
/// inside a value.
fn folded(buf: &[u8], len: usize, fields: usize) -> bool {
    memchr::memchr_iter(b'\n', &buf[..len]).count() != fields + 2
}

/// Where the reason phrase httparse read is in `buf`. httparse gives a status line
/// without a reason phrase, or one holding obs-text, as a static "" outside `buf`: an
/// empty reason, as Pingora's client keeps it.
fn reason_of(buf: &[u8], resp: &httparse::Response<'_, '_>) -> Option<Span> {
    resp.reason
        .map(|r| span_within(buf, r.as_bytes()).unwrap_or((0, 0)))
}

/// The response head at the start of `buf`, when it is complete: it is split off
/// `buf` (what follows it stays there) and returned as an owned [`ResponseHeader`]
/// whose names keep their case or not (`case`); values share the bytes read.
/// `Ok(None)`: more bytes are needed. Errors: as [`head_of`].
pub fn parse(buf: &mut BytesMut, case: Case) -> Result<Option<Box<ResponseHeader>>> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let Some(len) = head_of(buf, &mut resp, &mut slots)? else {
        return Ok(None);
    };
    let code = resp.code.unwrap_or(0);
    let version = version_of(&resp);
    let reason_span = reason_of(buf, &resp);
    let folded = folded(buf, len, resp.headers.len());
    let spans: smallvec::SmallVec<[(Span, Span); 24]> = resp
        .headers
        .iter()
        .filter(|h| !h.name.is_empty())
        .map(|h| (span(buf, h.name.as_bytes()), span(buf, h.value)))
        .collect();
    // The head's bytes, shared by the names and values below.
    let raw = buf.split_to(len).freeze();
    let reason = reason_span.map(|(start, end)| &raw[start..end]);
    let mut head = status_line(code, version, reason, case, spans.len())?;
    for ((ns, ne), (vs, ve)) in spans {
        let name = raw.slice(ns..ne).into_case_header_name();
        head.append_header(name, value_of(raw.slice(vs..ve), folded))?;
    }
    Ok(Some(Box::new(head)))
}

/// A head with no fields yet (room for `fields`), of status `code`, `version` and
/// `reason` (as httparse gave it), its names' case kept or not (`case`).
fn status_line(
    code: u16,
    version: http::Version,
    reason: Option<&[u8]>,
    case: Case,
    fields: usize,
) -> Result<ResponseHeader> {
    let mut head = match case {
        Case::Kept => ResponseHeader::build(code, Some(fields))?,
        Case::Dropped => ResponseHeader::build_no_case(code, Some(fields))?,
    };
    head.set_version(version);
    if let Some(reason) = reason {
        // httparse gave it as &str: valid UTF-8.
        head.set_reason_phrase(Some(std::str::from_utf8(reason).unwrap_or_default()))?;
    }
    Ok(head)
}

/// A value the parser accepted, as a [`HeaderValue`]: taken as it is unless the head
/// holds an obs-fold (`folded`), which is collapsed as Pingora's client does.
fn value_of(value: bytes::Bytes, folded: bool) -> HeaderValue {
    if folded {
        header_value_from_raw(value)
    } else {
        // SAFETY: `httparse` accepted this value, so its bytes are HTAB, SP, visible
        // ASCII or obs-text (it refuses every other control byte, and a CR not followed
        // by an LF), and it holds no LF: the head has no line feed besides its lines'
        // (`folded`). Those are the bytes `HeaderValue` allows, and
        // `header_value_from_raw` would return them unchanged. The field Sluice adds to
        // a raw head (`RawHead::append_chunked`) is static ASCII.
        unsafe { HeaderValue::from_maybe_shared_unchecked(value) }
    }
}

/// The response head at the start of `buf`, when it is complete: it is split off
/// `buf` (what follows it stays there) and returned as its bytes and where its parts
/// are ([`RawHead`]). `Ok(None)`: more bytes are needed. Errors: as [`head_of`], and a
/// status code out of range.
pub fn parse_raw(buf: &mut BytesMut) -> Result<Option<RawHead>> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let Some(len) = head_of(buf, &mut resp, &mut slots)? else {
        return Ok(None);
    };
    let status = http::StatusCode::from_u16(resp.code.unwrap_or(0))
        .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "invalid response status", e))?;
    let version = version_of(&resp);
    let reason = reason_of(buf, &resp).map(Part::new);
    let folded = folded(buf, len, resp.headers.len());
    let mut fields = Fields::new();
    for h in resp.headers.iter().filter(|h| !h.name.is_empty()) {
        fields.push(Field::new(
            buf,
            Part::new(span(buf, h.name.as_bytes())),
            Part::new(span(buf, h.value)),
        ));
    }
    let bytes = buf.split_to(len).freeze();
    Ok(Some(RawHead::new(
        bytes, status, version, reason, fields, folded,
    )))
}

/// `raw` as a Pingora [`ResponseHeader`] whose names keep their case or not (`case`):
/// the fields still in it, in order, names and values sharing its bytes; obs-folds
/// collapsed.
pub fn build(raw: &RawHead, case: Case) -> Result<Box<ResponseHeader>> {
    let code = raw.status.as_u16();
    let mut head = status_line(code, raw.version, raw.reason(), case, raw.field_count())?;
    let folded = raw.folded();
    raw.try_each_shared(|name, value| {
        head.append_header(name.into_case_header_name(), value_of(value, folded))
            .map(drop)
    })?;
    Ok(Box::new(head))
}

/// A range of a head's bytes.
pub(crate) type Span = (usize, usize);

/// Where `part` (a slice of `buf`, as httparse returns it) sits in `buf` (also the
/// request head's: `crate::downstream::h1`).
pub(crate) fn span(buf: &[u8], part: &[u8]) -> Span {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    (start, start + part.len())
}

/// Where `part` sits in `buf`, when it is a slice of `buf` at all.
fn span_within(buf: &[u8], part: &[u8]) -> Option<Span> {
    let (base, at) = (buf.as_ptr() as usize, part.as_ptr() as usize);
    (at >= base && at + part.len() <= base + buf.len()).then(|| (at - base, at - base + part.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(bytes: &[u8]) -> Result<Option<Box<ResponseHeader>>> {
        parse(&mut BytesMut::from(bytes), Case::Kept)
    }

    #[test]
    fn names_keep_case_order_and_duplicates() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 Fine\r\nX-One: a\r\nset-cookie: 1\r\nSet-Cookie: 2\r\ncontent-length: 3\r\n\r\nabc"[..],
        );
        let head = parse(&mut buf, Case::Kept).unwrap().unwrap();
        assert_eq!(&buf[..], b"abc");
        assert_eq!(head.status, 200);
        assert_eq!(head.get_reason_phrase(), Some("Fine"));
        let mut wire = Vec::new();
        head.header_to_h1_wire(&mut wire);
        assert_eq!(
            wire,
            b"X-One: a\r\nset-cookie: 1\r\nSet-Cookie: 2\r\ncontent-length: 3\r\n"
        );
    }

    #[test]
    fn a_head_without_case_holds_the_same_fields() {
        let bytes = b"HTTP/1.1 404 Gone\r\nX-One: a\r\nset-cookie: 1\r\nSet-Cookie: 2\r\nX-F: b\r\n c\r\n\r\nrest";
        let mut kept_buf = BytesMut::from(&bytes[..]);
        let mut dropped_buf = BytesMut::from(&bytes[..]);
        let kept = parse(&mut kept_buf, Case::Kept).unwrap().unwrap();
        let dropped = parse(&mut dropped_buf, Case::Dropped).unwrap().unwrap();
        assert!(kept.has_case());
        assert!(!dropped.has_case());
        assert_eq!(dropped_buf, kept_buf);
        assert_eq!(&dropped_buf[..], b"rest");
        assert_eq!(dropped.status, kept.status);
        assert_eq!(dropped.get_reason_phrase(), Some("Gone"));
        let fields = |h: &ResponseHeader| {
            h.headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(fields(&dropped), fields(&kept));
        assert_eq!(dropped.headers.get("x-f").unwrap().as_bytes(), b"b c");
    }

    #[test]
    fn obs_fold_collapses_to_one_space() {
        let head = parse_all(b"HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.headers.get("x-a").unwrap().as_bytes(), b"one two");
    }

    #[test]
    fn folds_are_collapsed_whatever_the_line_ends() {
        for bytes in [
            &b"HTTP/1.1 200 OK\r\nx-a: one\r\n two\r\nx-b: 1\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\nx-a: one\n\ttwo\nx-b: 1\n\n",
            b"HTTP/1.1 200 OK\nx-a: one\r\n two\nX-B: 1\r\n\r\n",
        ] {
            let head = parse_all(bytes).unwrap().unwrap();
            assert_eq!(head.headers.get("x-a").unwrap().as_bytes(), b"one two");
            assert_eq!(head.headers.get("x-b").unwrap().as_bytes(), b"1");
        }
        // Bare line feeds without a fold are plain lines: values taken as they are.
        let head = parse_all(b"HTTP/1.1 200 OK\nx-a: one \t\nx-b: t\two\x80\xff\n\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.headers.get("x-a").unwrap().as_bytes(), b"one");
        assert_eq!(
            head.headers.get("x-b").unwrap().as_bytes(),
            b"t\two\x80\xff"
        );
    }

    #[test]
    fn control_bytes_in_values_are_refused() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\nx-a: o\rne\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nx-a: o\x00ne\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nx-a: o\x7fne\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nx-a: o\x1bne\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nx-a: one\r\r\n\r\n",
        ] {
            assert!(parse_all(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn partial_heads_wait_and_oversized_ones_fail() {
        assert!(parse_all(b"HTTP/1.1 200 OK\r\nX-A: 1\r\n")
            .unwrap()
            .is_none());
        let mut big = b"HTTP/1.1 200 OK\r\n".to_vec();
        while big.len() <= MAX_HEAD {
            big.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert!(parse_all(&big).is_err());
    }

    #[test]
    fn too_many_headers_fail() {
        let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            head.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        assert!(parse_all(&head).is_err());
    }

    #[test]
    fn garbage_fails() {
        assert!(parse_all(b"HTTP/1.1 2x0 OK\r\n\r\n").is_err());
        assert!(parse_all(b"SMTP ready\r\n\r\n").is_err());
    }
}
