//! The origin of `sluice test`: a loopback HTTP/1.1 server that answers every request
//! `200` with the request it received (head and body) as its body, and the request's
//! `x-request-id` back as a response header. Keep-alive, a thread per connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

/// Starts the stub on an ephemeral loopback port; its address.
pub fn start() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::Builder::new()
        .name("ftw-stub".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let _ = std::thread::Builder::new()
                    .name("ftw-stub-conn".into())
                    .spawn(move || serve(conn));
            }
        })?;
    Ok(addr)
}

fn serve(mut s: TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        // One request: head, then body by content-length or chunked.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let header = |name: &str| {
            head.split("\r\n").skip(1).find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let end = if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok())
        {
            let want: usize = head_end + len;
            while buf.len() < want {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            want
        } else if header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            loop {
                if let Some(i) = buf[head_end..].windows(5).position(|w| w == b"0\r\n\r\n") {
                    break head_end + i + 5;
                }
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        } else {
            head_end
        };
        let echoed: Vec<u8> = buf.drain(..end).collect();
        let id = header("x-request-id").unwrap_or_default();
        let mut out = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n",
            echoed.len()
        );
        if !id.is_empty() {
            out.push_str(&format!("x-request-id: {id}\r\n"));
        }
        out.push_str("\r\n");
        let mut resp = out.into_bytes();
        resp.extend_from_slice(&echoed);
        if s.write_all(&resp).is_err() {
            return;
        }
    }
}
