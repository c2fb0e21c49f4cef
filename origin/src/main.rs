//! `sluice-origin`: the demo origin bundled with Sluice, also used as the
//! benchmark backend.
//!
//! Endpoints:
//! * `GET/HEAD /<path>`: static files below `--root` (ETag / Last-Modified,
//!   304 on `If-None-Match` / `If-Modified-Since`).
//! * `ANY /echo`, `/echo/...`: the request as JSON.
//! * `/healthz`: `200 ok`.
//! * `/status/<code>`: that status (200..=599).
//! * `/bytes/<n>`: `n` bytes of `x` (at most 16 MiB).
//!
//! Every response carries `x-origin-id: <id>` and `server: sluice-origin`.

#![warn(missing_docs)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

mod body;
mod files;

use body::Body;

/// Largest `/bytes/<n>` answer.
const BYTES_CAP: usize = 16 * 1024 * 1024;
/// Largest request body `/echo` accepts (413 beyond).
const ECHO_MAX_BODY: usize = 16 * 1024 * 1024;

static X_ORIGIN_ID: HeaderName = HeaderName::from_static("x-origin-id");

#[derive(Parser, Debug)]
#[command(
    name = "sluice-origin",
    version,
    about = "The Sluice demo origin: static files, /echo, /healthz, /status/<code>, /bytes/<n>"
)]
struct Args {
    /// Address to listen on (port 0: a free port, printed on the first stderr line).
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// Directory served as static files.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/www"))]
    root: PathBuf,
    /// Value of the `x-origin-id` response header and of `origin` in /echo.
    #[arg(long, default_value = "demo")]
    id: String,
    /// Worker threads (default: number of CPUs).
    #[arg(long)]
    threads: Option<usize>,
}

/// What every request handler shares: where the files are and who this origin is.
pub struct State {
    /// Canonical root directory.
    root: PathBuf,
    /// The `--id` this origin answers with.
    id: String,
    /// `id` as the `x-origin-id` header value.
    id_header: HeaderValue,
    /// Static files read so far.
    cache: files::FileCache,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("sluice-origin: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let root = std::fs::canonicalize(&args.root)
        .with_context(|| format!("root directory {}", args.root.display()))?;
    anyhow::ensure!(root.is_dir(), "root {} is not a directory", root.display());
    let id_header = HeaderValue::from_str(&args.id)
        .with_context(|| format!("--id {:?} is not a valid header value", args.id))?;
    let state = Arc::new(State {
        root,
        id: args.id,
        id_header,
        cache: files::FileCache::default(),
    });

    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    rt.block_on(serve(args.listen, state, threads))
}

async fn serve(addr: SocketAddr, state: Arc<State>, threads: usize) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    // The bound address, first line on stderr: with `--listen 127.0.0.1:0` the kernel
    // picks a free port and the test suite (proxy/tests/suite/support) reads it here, so
    // no port number changes hands before the bind. Keep the `listening on http://ADDR `
    // shape.
    eprintln!(
        "sluice-origin id={} listening on http://{} root={} threads={threads}",
        state.id,
        listener.local_addr()?,
        state.root.display(),
    );

    let mut conn_builder = http1::Builder::new();
    conn_builder.keep_alive(true).pipeline_flush(true);
    let conn_builder = Arc::new(conn_builder);

    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // e.g. EMFILE: back off instead of spinning.
                eprintln!("sluice-origin: accept: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let conn_builder = conn_builder.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(state.clone(), req));
            // Errors here are client disconnects and malformed requests.
            let _ = conn_builder
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn handle(st: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let mut resp = route(&st, req).await;
    let h = resp.headers_mut();
    h.insert(header::SERVER, HeaderValue::from_static("sluice-origin"));
    h.insert(X_ORIGIN_ID.clone(), st.id_header.clone());
    Ok(resp)
}

async fn route(st: &State, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    if path == "/echo" || path.starts_with("/echo/") {
        return echo(st, req).await;
    }
    if path == "/healthz" {
        return text(StatusCode::OK, "ok", is_head(&req));
    }
    if let Some(code) = path.strip_prefix("/status/") {
        return status(code, is_head(&req));
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        return bytes(n, is_head(&req));
    }
    files::serve(st, &req).await
}

fn is_head(req: &Request<Incoming>) -> bool {
    req.method() == Method::HEAD
}

/// A response with a plain-text body, e.g. `404 Not Found`.
pub fn simple(status: StatusCode) -> Response<Body> {
    let msg = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    text(status, msg, false)
}

fn text(status: StatusCode, body: impl Into<Bytes>, head: bool) -> Response<Body> {
    let body = body.into();
    let len = body.len();
    let mut resp = Response::new(if head {
        Body::empty()
    } else {
        Body::full(body)
    });
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

fn status(code: &str, head: bool) -> Response<Body> {
    let Some(status) = code
        .parse::<u16>()
        .ok()
        .filter(|c| (200..=599).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok())
    else {
        return text(
            StatusCode::BAD_REQUEST,
            "/status/<code> needs a code in 200..=599\n",
            head,
        );
    };
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = status;
        return resp;
    }
    let mut resp = simple(status);
    if head {
        *resp.body_mut() = Body::empty();
    }
    resp
}

fn bytes(n: &str, head: bool) -> Response<Body> {
    static XS: OnceLock<Bytes> = OnceLock::new();
    let Ok(n) = n.parse::<u64>() else {
        return text(
            StatusCode::BAD_REQUEST,
            "/bytes/<n> needs a decimal byte count\n",
            head,
        );
    };
    let n = usize::try_from(n).map_or(BYTES_CAP, |n| n.min(BYTES_CAP));
    let data = XS
        .get_or_init(|| Bytes::from(vec![b'x'; BYTES_CAP]))
        .slice(..n);
    let mut resp = Response::new(if head {
        Body::empty()
    } else {
        Body::full(data)
    });
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    resp
}

async fn echo(st: &State, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, ECHO_MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => return simple(StatusCode::PAYLOAD_TOO_LARGE),
        Err(_) => return simple(StatusCode::BAD_REQUEST),
    };
    // HeaderMap keeps first-seen order of names; repeated names are grouped
    // at their first occurrence. Names are lowercase already.
    // Written by hand to keep the documented key order.
    let js = |s: &str| serde_json::to_string(s).expect("strings serialize");
    let headers: Vec<String> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            format!(
                "[{},{}]",
                js(k.as_str()),
                js(&String::from_utf8_lossy(v.as_bytes()))
            )
        })
        .collect();
    let out = format!(
        "{{\"method\":{},\"path\":{},\"query\":{},\"headers\":[{}],\"body\":{},\"body_len\":{},\"origin\":{}}}\n",
        js(parts.method.as_str()),
        js(parts.uri.path()),
        js(parts.uri.query().unwrap_or("")),
        headers.join(","),
        js(&String::from_utf8_lossy(&body)),
        body.len(),
        js(&st.id),
    );
    let len = out.len();
    let head = parts.method == Method::HEAD;
    let mut resp = Response::new(if head { Body::empty() } else { Body::full(out) });
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}
