//! The request body: framed as its checked head says (chunked, a `Content-Length`, or
//! none), decoded by the upstream client's decoder ([`Decoder`], no I/O) from the bytes
//! read past the head first, then from the connection; the retry buffer (a copy of the
//! body read, for another attempt, as Pingora's); and the drain of what is left when
//! the request is over.

use bytes::Bytes;
use pingora::prelude::*;
use pingora::protocols::http::body_buffer::FixedBuffer;
use pingora::ErrorType;

use super::Session;
use crate::forward::h1::response_body::{Decoder, Step};

/// Largest read of a `Content-Length` body (no more than it has left: the bytes after
/// it stay on the connection, as Pingora's session leaves them).
const BODY_READ: usize = 64 * 1024;

/// Read size of a chunked body.
const CHUNK_READ: usize = 16 * 1024;

/// Most body bytes the retry buffer holds (Pingora's `BODY_BUF_LIMIT`); a longer body
/// truncates it, and there is none.
const RETRY_LIMIT: usize = 64 * 1024;

/// The request body's state.
pub(super) struct RequestBody {
    /// Its framing and where the reading is in it.
    pub decoder: Decoder,
    /// Payload bytes returned so far.
    read: usize,
    /// The copy kept for a retry, once enabled.
    retry: Option<FixedBuffer>,
    /// The client closed the connection before the end of the body.
    cut: bool,
}

impl Default for RequestBody {
    /// No body (before a head is read, or a head without one).
    fn default() -> Self {
        RequestBody {
            decoder: Decoder::length(0),
            read: 0,
            retry: None,
            cut: false,
        }
    }
}

impl Session {
    /// The next piece of the request body; None once done (or when the request has
    /// none). Each read waits at most the read timeout (`ReadTimedout`). A malformed
    /// chunked body is `InvalidChunk` (again at each call); one the client cuts short
    /// `ConnectionClosed`, after which the body counts as done.
    pub async fn read_body(&mut self) -> Result<Option<Bytes>> {
        loop {
            if self.body.cut {
                return Ok(None);
            }
            match self.body.decoder.next_in_hand(&mut self.buf, BODY_READ)? {
                Step::Data(data) => {
                    self.body.read += data.len();
                    if let Some(retry) = self.body.retry.as_mut() {
                        retry.write_to_buffer(&data);
                    }
                    return Ok(Some(data));
                }
                Step::End => return Ok(None),
                Step::NeedMore => {}
            }
            let max = self
                .body
                .decoder
                .read_size()
                .map_or(CHUNK_READ, |left| left.clamp(1, BODY_READ as u64) as usize);
            match self.read_some(max, self.read_timeout).await {
                None => {
                    return Err(Error::explain(
                        ErrorType::ReadTimedout,
                        "reading the request body",
                    ))
                }
                Some(Ok(0)) => {
                    self.body.cut = true;
                    return Err(Error::explain(
                        ErrorType::ConnectionClosed,
                        format!(
                            "client closed the connection before the end of the request body ({} bytes read)",
                            self.body.read
                        ),
                    ));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    return Err(Error::because(
                        ErrorType::ReadError,
                        "reading the request body",
                        e,
                    ))
                }
            }
        }
    }

    /// Whether the request has no body: none by its framing (no `Content-Length` or
    /// `0`, no transfer coding), or, as Pingora's session counts it, a chunked one read
    /// whole that held no byte.
    pub fn is_body_empty(&self) -> bool {
        self.body.decoder.done() && self.body.read == 0
    }

    /// Whether the request body is over: read whole (or none), or cut short by the
    /// client.
    pub fn is_body_done(&self) -> bool {
        self.body.decoder.done() || self.body.cut
    }

    /// Request body payload bytes returned so far (framing not counted).
    pub fn body_bytes_read(&self) -> usize {
        self.body.read
    }

    /// Keeps a copy of the request body read from now on, up to 64 KiB, for a retry.
    pub fn enable_retry_buffering(&mut self) {
        if self.body.retry.is_none() {
            self.body.retry = Some(FixedBuffer::new(RETRY_LIMIT));
        }
    }

    /// The body read so far, `None` if buffering was never enabled, nothing was read, or
    /// the body outgrew the buffer (as Pingora's).
    pub fn retry_buffer(&self) -> Option<Bytes> {
        self.body
            .retry
            .as_ref()
            .filter(|b| !b.is_truncated())
            .and_then(FixedBuffer::get_buffer)
    }

    /// Whether more of the body was read than the retry buffer holds (no retry can
    /// replay it).
    pub fn retry_buffer_truncated(&self) -> bool {
        self.body.retry.as_ref().is_some_and(|b| b.is_truncated())
    }

    /// Reads what is left of the request body, dropping it (each read under the read
    /// timeout).
    pub(super) async fn drain(&mut self) -> Result<()> {
        while self.read_body().await?.is_some() {}
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    /// The whole body of the request `wire`, read by the session.
    async fn body_of(wire: &[u8]) -> Result<Vec<u8>> {
        let (mut s, _c) = sent(wire).await;
        s.set_read_timeout(Some(Duration::from_millis(500)));
        assert!(s.read_request().await?);
        let mut body = Vec::new();
        while let Some(b) = s.read_body().await? {
            body.extend_from_slice(&b);
        }
        assert!(s.is_body_done());
        assert_eq!(s.body_bytes_read(), body.len());
        Ok(body)
    }

    #[tokio::test]
    async fn content_length_bodies() {
        let body = body_of(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
            .await
            .unwrap();
        assert_eq!(body, b"hello");
        // A body sent after the head, in pieces.
        let (mut s, mut c) = sent(b"PUT / HTTP/1.1\r\nContent-Length: 6\r\n\r\nab").await;
        assert!(s.read_request().await.unwrap());
        assert!(!s.is_body_empty() && !s.is_body_done());
        assert_eq!(s.read_body().await.unwrap().unwrap(), "ab");
        c.write_all(b"cd").await.unwrap();
        assert_eq!(s.read_body().await.unwrap().unwrap(), "cd");
        c.write_all(b"ef").await.unwrap();
        assert_eq!(s.read_body().await.unwrap().unwrap(), "ef");
        assert!(s.is_body_done() && !s.is_body_empty());
        assert_eq!(s.read_body().await.unwrap(), None);
        assert_eq!(s.body_bytes_read(), 6);
    }

    #[tokio::test]
    async fn chunked_bodies_with_extensions_and_trailers() {
        let body = body_of(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-T: 1\r\n\r\n",
        )
        .await
        .unwrap();
        assert_eq!(body, b"Wikipedia");
        // An empty chunked body: empty once read, as Pingora counts it.
        let (mut s, _c) =
            sent(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").await;
        assert!(s.read_request().await.unwrap());
        assert!(!s.is_body_empty());
        assert_eq!(s.read_body().await.unwrap(), None);
        assert!(s.is_body_empty() && s.is_body_done());
    }

    #[tokio::test]
    async fn small_chunks_in_hand_are_one_piece() {
        // 3,000 one-byte chunks in one write: a piece per read, not one per chunk.
        let mut wire = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for i in 0..3000u32 {
            wire.extend_from_slice(format!("1\r\n{}\r\n", i % 10).as_bytes());
        }
        wire.extend_from_slice(b"0\r\n\r\n");
        let (mut s, _c) = sent(&wire).await;
        assert!(s.read_request().await.unwrap());
        let (mut body, mut pieces) = (Vec::new(), 0);
        while let Some(piece) = s.read_body().await.unwrap() {
            body.extend_from_slice(&piece);
            pieces += 1;
        }
        let expected: Vec<u8> = (0..3000u32).map(|i| b'0' + (i % 10) as u8).collect();
        assert_eq!(body, expected);
        assert!(pieces <= 8, "{pieces} pieces for 3,000 chunks");
        // A broken chunk after good ones: the good bytes first, then the error.
        let (mut s, _c) = sent(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n1\r\nb\r\nzz\r\n",
        )
        .await;
        assert!(s.read_request().await.unwrap());
        assert_eq!(s.read_body().await.unwrap().unwrap(), "ab");
        assert_eq!(
            s.read_body().await.unwrap_err().etype(),
            &crate::forward::h1::response_body::INVALID_CHUNK
        );
    }

    #[tokio::test]
    async fn bogus_chunk_sizes_are_invalid_chunks() {
        for body in [
            &b"zz\r\nabc\r\n0\r\n\r\n"[..],
            b"1ffffffffffffffff\r\nabc\r\n0\r\n\r\n",
            b"-3\r\nabc\r\n0\r\n\r\n",
            b"3 abc 0\r\n\r\n",
        ] {
            let wire = [
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".as_slice(),
                body,
            ]
            .concat();
            let e = body_of(&wire).await.unwrap_err();
            assert_eq!(
                e.etype(),
                &crate::forward::h1::response_body::INVALID_CHUNK,
                "{}",
                body.escape_ascii()
            );
        }
    }

    #[tokio::test]
    async fn no_framing_no_body() {
        for wire in [
            &b"POST / HTTP/1.1\r\n\r\n"[..],
            b"POST / HTTP/1.0\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        ] {
            let (mut s, _c) = sent(wire).await;
            assert!(s.read_request().await.unwrap());
            assert!(s.is_body_empty() && s.is_body_done());
            assert_eq!(s.read_body().await.unwrap(), None);
        }
    }

    #[tokio::test]
    async fn bytes_past_the_head_are_the_body_and_past_the_body_stay() {
        let (mut s, _c) =
            sent(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n").await;
        assert!(s.read_request().await.unwrap());
        assert_eq!(s.read_body().await.unwrap().unwrap(), "abc");
        assert_eq!(s.read_body().await.unwrap(), None);
        assert_eq!(&s.buf[..], b"GET / HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn a_cut_body_and_a_slow_one() {
        let (mut s, mut c) = sent(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc").await;
        assert!(s.read_request().await.unwrap());
        assert_eq!(s.read_body().await.unwrap().unwrap(), "abc");
        s.set_read_timeout(Some(Duration::from_millis(50)));
        let e = s.read_body().await.unwrap_err();
        assert_eq!(e.etype(), &ErrorType::ReadTimedout);
        c.shutdown().await.unwrap();
        let e = s.read_body().await.unwrap_err();
        assert_eq!(e.etype(), &ErrorType::ConnectionClosed);
        assert!(s.is_body_done());
        assert_eq!(s.read_body().await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_retry_buffer() {
        let (mut s, _c) = sent(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello").await;
        assert!(s.read_request().await.unwrap());
        assert_eq!(s.retry_buffer(), None);
        s.enable_retry_buffering();
        while s.read_body().await.unwrap().is_some() {}
        assert_eq!(s.retry_buffer().unwrap(), "hello");
        // A body past the limit: no retry buffer.
        let (mut s, mut c) = pair().await;
        let n = RETRY_LIMIT + 1;
        let writer = tokio::spawn(async move {
            c.write_all(format!("POST / HTTP/1.1\r\nContent-Length: {n}\r\n\r\n").as_bytes())
                .await
                .unwrap();
            c.write_all(&vec![b'x'; n]).await.unwrap();
            c
        });
        assert!(s.read_request().await.unwrap());
        s.enable_retry_buffering();
        let mut got = 0;
        while let Some(b) = s.read_body().await.unwrap() {
            got += b.len();
        }
        assert_eq!(got, n);
        assert_eq!(s.retry_buffer(), None);
        let _ = writer.await;
    }
}
