//! The framing of an HTTP/1 response body (RFC 9112 §6.3), decoded from the bytes read
//! so far: a `Content-Length` count, chunked (chunk extensions and trailers read and
//! dropped), or until the peer closes. No I/O here: [`Decoder::next`] takes what the
//! buffer holds and says when it needs more.

use bytes::{Bytes, BytesMut};
use pingora::prelude::*;
use pingora::ErrorType;

/// Longest chunk-size line (size and extensions) accepted, as Pingora's client.
const MAX_CHUNK_LINE: usize = 8 * 1024;
/// Most trailer bytes accepted after the last chunk (dropped), as Pingora's client.
const MAX_TRAILERS: usize = 64 * 1024;

/// A malformed chunked body (Pingora's `InvalidChunk`).
pub const INVALID_CHUNK: ErrorType = ErrorType::new("InvalidChunk");

/// Where the decoder is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many bytes of a `Content-Length` body are still to come.
    Length(u64),
    /// A chunk-size line is next.
    ChunkSize,
    /// This many bytes of the current chunk's data are still to come.
    ChunkData(u64),
    /// The CRLF after a chunk's data is next.
    ChunkEnd,
    /// After the last chunk: trailer lines, then an empty line.
    Trailers,
    /// Until the peer closes the connection.
    UntilClose,
    /// The body is complete.
    Done,
}

/// What [`Decoder::next`] found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Body bytes.
    Data(Bytes),
    /// The body is complete.
    End,
    /// More bytes must be read first.
    NeedMore,
}

/// A response body's framing state.
#[derive(Debug)]
pub struct Decoder {
    state: State,
}

impl Decoder {
    /// A body of `n` bytes.
    pub fn length(n: u64) -> Self {
        Decoder {
            state: if n == 0 {
                State::Done
            } else {
                State::Length(n)
            },
        }
    }

    /// A chunked body.
    pub fn chunked() -> Self {
        Decoder {
            state: State::ChunkSize,
        }
    }

    /// A body that ends when the peer closes the connection.
    pub fn until_close() -> Self {
        Decoder {
            state: State::UntilClose,
        }
    }

    /// Whether the body is complete.
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// How many bytes of a `Content-Length` body are still to come, so that a read
    /// makes no more room than that.
    pub fn read_size(&self) -> Option<u64> {
        match self.state {
            State::Length(left) => Some(left),
            _ => None,
        }
    }

    /// Whether the body ends only when the peer closes.
    pub fn close_delimited(&self) -> bool {
        self.state == State::UntilClose
    }

    /// The next piece of the body out of `buf` (consumed from it). Framing bytes are
    /// consumed as far as `buf` holds them, so that [`Self::done`] is true as soon as
    /// the end is buffered. An error leaves the state as it was (the body is broken).
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Step> {
        loop {
            match self.state {
                State::Done => return Ok(Step::End),
                State::Length(left) | State::ChunkData(left) => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    let take = left.min(buf.len() as u64);
                    let data = buf.split_to(take as usize).freeze();
                    let left = left - take;
                    self.state = match self.state {
                        State::Length(_) if left == 0 => State::Done,
                        State::Length(_) => State::Length(left),
                        _ if left == 0 => State::ChunkEnd,
                        _ => State::ChunkData(left),
                    };
                    // Framing that is already buffered is consumed now; an error in it
                    // comes again from the next call.
                    let _ = self.settle(buf);
                    return Ok(Step::Data(data));
                }
                State::UntilClose => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    return Ok(Step::Data(buf.split().freeze()));
                }
                State::ChunkSize | State::ChunkEnd | State::Trailers => {
                    if !self.settle(buf)? {
                        return Ok(Step::NeedMore);
                    }
                }
            }
        }
    }

    /// As [`Self::next`], with the body bytes after the first piece that `buf` already
    /// holds (the chunks that follow it) joined to it, up to `max` bytes: a body sent
    /// as many small chunks costs a piece per read, not a piece per chunk (each piece
    /// is a body callback of every filter and a write to the other side: one-byte
    /// chunks would turn six bytes received into one of each). A framing error after
    /// the first piece is left for the next call, which gives it.
    pub fn next_in_hand(&mut self, buf: &mut BytesMut, max: usize) -> Result<Step> {
        let first = match self.next(buf)? {
            Step::Data(first) => first,
            other => return Ok(other),
        };
        let mut joined: Option<BytesMut> = None;
        let mut len = first.len();
        while len < max {
            match self.next(buf) {
                Ok(Step::Data(more)) => {
                    len += more.len();
                    joined
                        .get_or_insert_with(|| {
                            let mut j = BytesMut::with_capacity(max.min(len * 2));
                            j.extend_from_slice(&first);
                            j
                        })
                        .extend_from_slice(&more);
                }
                Ok(Step::End | Step::NeedMore) | Err(_) => break,
            }
        }
        Ok(Step::Data(joined.map_or(first, BytesMut::freeze)))
    }

    /// The end of stream at the connection: fine for a close-delimited body (it is
    /// complete), an error for every other (the peer cut it short).
    pub fn closed(&mut self) -> Result<()> {
        match self.state {
            State::UntilClose | State::Done => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(Error::explain(
                ErrorType::ConnectionClosed,
                "upstream closed the connection before the end of the response body",
            )),
        }
    }

    /// Consumes framing (chunk-size lines, chunk CRLFs, trailers) from `buf` until data
    /// or the end is next; false when more bytes are needed first.
    fn settle(&mut self, buf: &mut BytesMut) -> Result<bool> {
        loop {
            match self.state {
                State::ChunkEnd => {
                    if buf.len() < 2 {
                        if buf.first().is_some_and(|b| *b != b'\r') {
                            return Err(invalid("chunk data not followed by CRLF"));
                        }
                        return Ok(false);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(invalid("chunk data not followed by CRLF"));
                    }
                    let _ = buf.split_to(2);
                    self.state = State::ChunkSize;
                }
                State::ChunkSize => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((len, size))) => {
                        let _ = buf.split_to(len);
                        self.state = if size == 0 {
                            State::Trailers
                        } else {
                            State::ChunkData(size)
                        };
                    }
                    Ok(httparse::Status::Partial) => {
                        if buf.len() > MAX_CHUNK_LINE {
                            return Err(invalid("chunk-size line too long"));
                        }
                        return Ok(false);
                    }
                    Err(_) => return Err(invalid("invalid chunk size")),
                },
                State::Trailers => {
                    // Either an empty line now, or trailer lines ending with one.
                    if buf.len() < 2 {
                        if buf
                            .first()
                            .is_some_and(|b| !is_field_byte(*b) && *b != b'\r')
                        {
                            return Err(invalid("invalid trailer section"));
                        }
                        return Ok(false);
                    }
                    if &buf[..2] == b"\r\n" {
                        let _ = buf.split_to(2);
                        self.state = State::Done;
                        continue;
                    }
                    match memchr::memmem::find(buf, b"\r\n\r\n") {
                        Some(at) => {
                            let _ = buf.split_to(at + 4);
                            self.state = State::Done;
                        }
                        None => {
                            if buf.len() > MAX_TRAILERS {
                                return Err(Error::explain(
                                    ErrorType::new("InvalidTrailerEnd"),
                                    "trailers too long",
                                ));
                            }
                            return Ok(false);
                        }
                    }
                }
                _ => return Ok(true),
            }
        }
    }
}

/// A byte that may start a trailer field line.
fn is_field_byte(b: u8) -> bool {
    b.is_ascii_graphic()
}

fn invalid(why: &'static str) -> Box<Error> {
    Error::explain(INVALID_CHUNK, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` one byte at a time; the body and whether it ended.
    fn decode_bytewise(mut d: Decoder, wire: &[u8]) -> Result<(Vec<u8>, bool)> {
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        for b in wire {
            buf.extend_from_slice(&[*b]);
            loop {
                match d.next(&mut buf)? {
                    Step::Data(data) => body.extend_from_slice(&data),
                    Step::End => return Ok((body, true)),
                    Step::NeedMore => break,
                }
            }
        }
        Ok((body, d.done()))
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let wire = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-T: 1\r\nY: 2\r\n\r\n";
        let (body, end) = decode_bytewise(Decoder::chunked(), wire).unwrap();
        assert_eq!(body, b"Wikipedia");
        assert!(end);
    }

    #[test]
    fn chunked_end_is_seen_with_the_last_data() {
        let mut d = Decoder::chunked();
        let mut buf = BytesMut::from(&b"3\r\nabc\r\n0\r\n\r\nleft"[..]);
        assert_eq!(
            d.next(&mut buf).unwrap(),
            Step::Data(Bytes::from_static(b"abc"))
        );
        assert!(d.done());
        assert_eq!(&buf[..], b"left");
    }

    #[test]
    fn chunks_in_hand_come_as_one_piece_up_to_the_limit() {
        let mut wire = BytesMut::new();
        for b in b"abcdefgh" {
            wire.extend_from_slice(b"1\r\n");
            wire.extend_from_slice(&[*b, b'\r', b'\n']);
        }
        wire.extend_from_slice(b"0\r\n\r\nnext");
        let mut d = Decoder::chunked();
        assert_eq!(
            d.next_in_hand(&mut wire, 5).unwrap(),
            Step::Data("abcde".into())
        );
        assert_eq!(
            d.next_in_hand(&mut wire, 64).unwrap(),
            Step::Data("fgh".into())
        );
        assert_eq!(d.next_in_hand(&mut wire, 64).unwrap(), Step::End);
        assert_eq!(&wire[..], b"next");
        // A broken size after good chunks: the good bytes, then the error.
        let mut wire = BytesMut::from(&b"1\r\na\r\n1\r\nb\r\nzz\r\n"[..]);
        let mut d = Decoder::chunked();
        assert_eq!(
            d.next_in_hand(&mut wire, 64).unwrap(),
            Step::Data("ab".into())
        );
        assert!(d.next_in_hand(&mut wire, 64).is_err());
    }

    #[test]
    fn bogus_chunk_sizes_fail() {
        for wire in [
            &b"fffffffffffffffff\r\n"[..],
            b"-1\r\n",
            b"zz\r\n",
            b"3\r\nabcX\r\n",
            b"3\r\nabc\n0\r\n\r\n",
        ] {
            assert!(
                decode_bytewise(Decoder::chunked(), wire).is_err(),
                "{}",
                wire.escape_ascii()
            );
        }
        let mut long = b"1".to_vec();
        long.extend(std::iter::repeat_n(b';', MAX_CHUNK_LINE + 1));
        assert!(decode_bytewise(Decoder::chunked(), &long).is_err());
    }

    #[test]
    fn content_length_stops_at_its_count() {
        let mut d = Decoder::length(3);
        let mut buf = BytesMut::from(&b"abcdef"[..]);
        assert_eq!(
            d.next(&mut buf).unwrap(),
            Step::Data(Bytes::from_static(b"abc"))
        );
        assert!(d.done());
        assert_eq!(&buf[..], b"def");
    }

    #[test]
    fn early_close_is_an_error_except_for_close_delimited() {
        assert!(Decoder::length(3).closed().is_err());
        assert!(Decoder::chunked().closed().is_err());
        let mut d = Decoder::until_close();
        assert!(d.closed().is_ok());
        assert!(d.done());
    }
}
