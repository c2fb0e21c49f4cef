//! The response body type of the origin: either bytes already in memory or a
//! file streamed from disk in 64 KiB chunks.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use tokio::io::{AsyncRead, ReadBuf};

const CHUNK: usize = 64 * 1024;

pub enum Body {
    /// In-memory bytes; `None` once sent (or for an empty body).
    Full(Option<Bytes>),
    /// A file of known length, streamed.
    File(FileStream),
}

pub struct FileStream {
    file: tokio::fs::File,
    remaining: u64,
    buf: Box<[u8]>,
}

impl Body {
    pub fn empty() -> Self {
        Body::Full(None)
    }

    pub fn full(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        if data.is_empty() {
            Body::Full(None)
        } else {
            Body::Full(Some(data))
        }
    }

    pub fn file(file: tokio::fs::File, len: u64) -> Self {
        Body::File(FileStream {
            file,
            remaining: len,
            buf: vec![0u8; CHUNK].into_boxed_slice(),
        })
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            Body::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Body::File(f) => {
                if f.remaining == 0 {
                    return Poll::Ready(None);
                }
                let want = usize::try_from(f.remaining).map_or(CHUNK, |r| r.min(CHUNK));
                let mut rb = ReadBuf::new(&mut f.buf[..want]);
                ready!(Pin::new(&mut f.file).poll_read(cx, &mut rb))?;
                let n = rb.filled().len();
                if n == 0 {
                    // The file shrank after we sent Content-Length.
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shorter than announced",
                    ))));
                }
                f.remaining -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(rb.filled())))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(data) => data.is_none(),
            Body::File(f) => f.remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Body::File(f) => SizeHint::with_exact(f.remaining),
        }
    }
}
