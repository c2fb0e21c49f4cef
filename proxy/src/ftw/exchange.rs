//! One stage on the wire: the raw request written to a fresh TCP connection, the
//! HTTP/1 response read back (interim 1xx skipped; body by `Content-Length`, chunked
//! or to the close).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A response as received.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header fields, names as sent.
    pub headers: Vec<(String, String)>,
    /// The head and body as text (lossy), what `response_contains` is matched against.
    pub text: String,
}

impl Response {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `request` to `addr` and reads one response; an error when none comes (refused,
/// reset, closed, or nothing within `timeout` of the last byte read).
pub fn send(
    addr: SocketAddr,
    request: &[u8],
    head_only: bool,
    timeout: Duration,
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    s.write_all(request)?;
    let mut buf = Vec::new();
    loop {
        let (status, headers, head_len) = read_head(&mut s, &mut buf)?;
        if (100..200).contains(&status) && status != 101 {
            buf.drain(..head_len);
            continue;
        }
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.trim().to_ascii_lowercase())
        };
        let no_body = head_only || status == 204 || status == 304;
        if !no_body {
            if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
                fill(&mut s, &mut buf, head_len + len)?;
                buf.truncate(head_len + len);
            } else if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
                while !buf[head_len..].windows(5).any(|w| w == b"0\r\n\r\n") {
                    if !more(&mut s, &mut buf)? {
                        break;
                    }
                }
            } else {
                while more(&mut s, &mut buf)? {}
            }
        }
        return Ok(Response {
            status,
            headers,
            text: String::from_utf8_lossy(&buf).into_owned(),
        });
    }
}

/// A response head's status, header fields and length in bytes.
type Head = (u16, Vec<(String, String)>, usize);

/// Reads until a whole head is in `buf`; its status, headers and length.
fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Head> {
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if !more(s, buf)? {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                if buf.is_empty() {
                    "connection closed without a response"
                } else {
                    "connection closed inside the response head"
                },
            ));
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP status line")
        })?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok((status, headers, end))
}

fn fill(s: &mut TcpStream, buf: &mut Vec<u8>, want: usize) -> std::io::Result<()> {
    while buf.len() < want {
        if !more(s, buf)? {
            break;
        }
    }
    Ok(())
}

/// One read into `buf`; false at the end of the stream (or a reset after some bytes).
fn more(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut chunk = [0u8; 16 * 1024];
    match s.read(&mut chunk) {
        Ok(0) => Ok(false),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !buf.is_empty() => Ok(false),
        Err(e) => Err(e),
    }
}
