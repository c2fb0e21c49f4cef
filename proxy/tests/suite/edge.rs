//! Edge serving: TLS with SNI and ALPN (real certificates minted here), HTTP/2 and h2c
//! to clients, HTTPS redirects, and upstream pools (round robin, weights, consistent
//! hashing, health checks, retries, ejection) against real origins on loopback.

use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;

fn tls_client(pki: &Pki, tls_addr: SocketAddr, names: &[&str]) -> reqwest::blocking::Client {
    let mut b = reqwest::blocking::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .tls_info(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10));
    for n in names {
        b = b.resolve(n, tls_addr);
    }
    b.build().unwrap()
}

/// `GET https://a.test/echo` with a new client (a new handshake); it must answer 200.
fn get_a_test(pki: &Pki, tls_addr: SocketAddr) -> reqwest::blocking::Response {
    let r = tls_client(pki, tls_addr, &["a.test"])
        .get(format!("https://a.test:{}/echo", tls_addr.port()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    r
}

fn peer_cert(resp: &reqwest::blocking::Response) -> Vec<u8> {
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("TLS info with a peer certificate")
        .to_vec()
}

fn tls_policy(origin: &Proc, tls_addr: SocketAddr, extra_route: &str) -> String {
    format!(
        "[tls]\nlisten = [\"{tls_addr}\"]\n\
         [[tls.certificates]]\ncert = \"a.pem\"\nkey = \"a.key\"\n\
         [[tls.certificates]]\ncert = \"b.pem\"\nkey = \"b.key\"\n\
         [pools.o]\npeers = [\"{}\"]\n\
         [filters.props]\nmodule = {}\n\
         {extra_route}\
         [[routes]]\nfilters = [\"props\"]\npool = \"o\"\n",
        origin.addr,
        module("props.wasm")
    )
}

/// Starts Sluice on a policy whose certificate files must exist before it starts:
/// the files are minted into the harness's directory first.
fn sluice_tls(
    pki: &Pki,
    body: impl Fn(SocketAddr) -> String,
) -> (Sluice, SocketAddr, Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let a = pki.leaf(dir.path(), "a", &["a.test"]);
    let b = pki.leaf(dir.path(), "b", &["b.test", "*.b.test"]);
    let (s, tls) = sluice_ports(dir, 1, |t| body(t[0]), &Opts::default());
    (s, tls[0], a, b)
}

/// A TCP connection that keeps every byte it receives: the TLS records the server
/// sent, counted by [`records`].
struct Tapped {
    tcp: TcpStream,
    seen: Vec<u8>,
}

impl Read for Tapped {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.tcp.read(buf)?;
        self.seen.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

impl Write for Tapped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.tcp.flush()
    }
}

/// An HTTP/1.1 client connection over TLS to `a.test` (rustls, ALPN `http/1.1`), its
/// received bytes kept.
fn tls_h1(pki: &Pki, addr: SocketAddr) -> rustls::StreamOwned<rustls::ClientConnection, Tapped> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pki.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let conn =
        rustls::ClientConnection::new(Arc::new(config), "a.test".try_into().unwrap()).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    rustls::StreamOwned::new(
        conn,
        Tapped {
            tcp,
            seen: Vec::new(),
        },
    )
}

/// How many TLS records `bytes` hold (whole records, back to back).
fn records(bytes: &[u8]) -> usize {
    let (mut n, mut at) = (0, 0);
    while at + 5 <= bytes.len() {
        at += 5 + usize::from(u16::from_be_bytes([bytes[at + 3], bytes[at + 4]]));
        n += 1;
    }
    assert_eq!(at, bytes.len(), "the bytes end with a whole record");
    n
}

/// One `GET` of `path` on `tls` and its whole answer (a body with a length).
fn get_over(tls: &mut (impl Read + Write), path: &str) -> (String, Vec<u8>) {
    write!(tls, "GET {path} HTTP/1.1\r\nhost: a.test\r\n\r\n").unwrap();
    tls.flush().unwrap();
    let head = String::from_utf8(read_head(tls)).unwrap();
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap())
        })
        .expect("a content-length");
    let mut body = vec![0; length];
    tls.read_exact(&mut body).unwrap();
    (head, body)
}

/// A small response to an HTTP/1.1 client over TLS leaves as one TLS record, its
/// head and body sealed together (as from nginx), not a record each; a body larger
/// than a record still comes whole.
#[test]
fn a_small_http1_response_over_tls_leaves_as_one_record() {
    let o = origin("o1");
    let pki = Pki::new();
    let (_s, tls_addr, _, _) = sluice_tls(&pki, |t| tls_policy(&o, t, ""));
    wait_port(tls_addr);
    let mut tls = tls_h1(&pki, tls_addr);
    // The first response also carries the handshake's session tickets: counted after.
    let (head, body) = get_over(&mut tls, "/bytes/100");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body.len(), 100);
    for _ in 0..3 {
        tls.sock.seen.clear();
        let (head, body) = get_over(&mut tls, "/bytes/100");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body.len(), 100);
        assert_eq!(records(&tls.sock.seen), 1, "head and body in one record");
    }
    // 100 KiB: records of at most 16 KiB, every byte there.
    tls.sock.seen.clear();
    let (_, body) = get_over(&mut tls, "/bytes/102400");
    assert_eq!(body.len(), 102_400);
    assert!(records(&tls.sock.seen) >= 7);
}

/// A response streamed slowly to an HTTP/1.1 client over TLS is not held back for a
/// record: each chunk the origin sends reaches the client before the next is sent.
#[test]
fn a_response_streamed_over_tls_arrives_chunk_by_chunk() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = listener.local_addr().unwrap();
    let (next, go) = std::sync::mpsc::channel::<()>();
    let origin = std::thread::spawn(move || {
        let (c, _) = listener.accept().unwrap();
        let mut r = std::io::BufReader::new(c.try_clone().unwrap());
        let mut line = String::new();
        while r.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
            line.clear();
        }
        let mut c = c;
        c.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            .unwrap();
        // The second chunk only once the client has the first.
        go.recv_timeout(Duration::from_secs(20)).unwrap();
        c.write_all(b"6\r\nsecond\r\n0\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(200));
    });
    let pki = Pki::new();
    let (_s, tls_addr, _, _) = sluice_tls(&pki, |t| {
        format!(
            "[tls]\nlisten = [\"{t}\"]\n\
             [[tls.certificates]]\ncert = \"a.pem\"\nkey = \"a.key\"\n\
             [pools.o]\npeers = [\"{upstream}\"]\n\
             [[routes]]\npool = \"o\"\n"
        )
    });
    wait_port(tls_addr);
    let mut tls = tls_h1(&pki, tls_addr);
    write!(tls, "GET /stream HTTP/1.1\r\nhost: a.test\r\n\r\n").unwrap();
    tls.flush().unwrap();
    let head = String::from_utf8(read_head(&mut tls)).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // The first chunk (`5\r\nfirst\r\n`) arrives on its own (a read timeout fails).
    let mut first = [0u8; 10];
    tls.read_exact(&mut first)
        .expect("the first chunk before the origin sends the second");
    assert_eq!(&first, b"5\r\nfirst\r\n");
    next.send(()).unwrap();
    let mut rest = [0u8; 16];
    tls.read_exact(&mut rest).unwrap();
    assert_eq!(&rest, b"6\r\nsecond\r\n0\r\n\r\n");
    origin.join().unwrap();
}

#[test]
fn tls_picks_the_certificate_by_sni_offers_h2_and_refuses_tls11() {
    // curl and openssl s_client compare the handshake with other TLS stacks.
    if !require("curl", "curl") {
        return;
    }
    let o = origin("o1");
    let pki = Pki::new();
    let (s, tls_addr, cert_a, cert_b) = sluice_tls(&pki, |t| tls_policy(&o, t, ""));
    wait_port(tls_addr);
    let c = tls_client(
        &pki,
        tls_addr,
        &["a.test", "b.test", "x.b.test", "other.test"],
    );
    for (name, want) in [
        ("a.test", &cert_a),
        ("b.test", &cert_b),
        ("x.b.test", &cert_b),
    ] {
        let r = c
            .get(format!("https://{name}:{}/echo", tls_addr.port()))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{name}");
        assert_eq!(&peer_cert(&r), want, "{name} got the wrong certificate");
        assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN h2 for {name}");
        let echo: serde_json::Value = r.json().unwrap();
        // The filter saw the request as HTTPS over HTTP/2 with the right authority.
        assert_eq!(
            echo_header(&echo, "x-prop-scheme").as_deref(),
            Some("https")
        );
        assert_eq!(
            echo_header(&echo, "x-prop-protocol").as_deref(),
            Some("HTTP/2")
        );
        assert_eq!(
            echo_header(&echo, "x-prop-host").as_deref(),
            Some(format!("{name}:{}", tls_addr.port()).as_str())
        );
    }
    // A name no certificate has gets the first certificate (the default); the client
    // then refuses it for the name mismatch.
    assert!(c
        .get(format!("https://other.test:{}/echo", tls_addr.port()))
        .send()
        .is_err());

    // curl (OpenSSL + nghttp2) agrees: h2 negotiated, verified against the CA.
    let ca_file = s.dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let out = Command::new("curl")
        .args([
            "-sS",
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .arg("--cacert")
        .arg(&ca_file)
        .args([
            "--resolve",
            &format!("b.test:{}:127.0.0.1", tls_addr.port()),
        ])
        .arg(format!("https://b.test:{}/echo", tls_addr.port()))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200", "{out:?}");

    // openssl s_client: TLS 1.1 is refused, TLS 1.2 and 1.3 work, SNI picks the cert.
    let s_client = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(["s_client", "-connect", &tls_addr.to_string()])
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (ok, _) = s_client(&["-servername", "a.test", "-tls1_1"]);
    assert!(!ok, "TLS 1.1 must be refused");
    let (ok, text) = s_client(&["-servername", "a.test", "-tls1_2"]);
    assert!(ok && text.contains("CN = a.test"), "{text}");
    let (ok, text) = s_client(&["-servername", "b.test", "-tls1_3", "-alpn", "h2"]);
    assert!(ok && text.contains("CN = b.test"), "{text}");
    assert!(text.contains("ALPN protocol: h2"), "{text}");
}

#[test]
fn certificates_swap_with_the_policy_and_bad_ones_are_rejected() {
    let o = origin("o1");
    let pki = Pki::new();
    let (s, tls_addr, cert_a, _) = sluice_tls(&pki, |t| tls_policy(&o, t, ""));
    wait_port(tls_addr);
    // A new client per request: a new handshake.
    let get = || peer_cert(&get_a_test(&pki, tls_addr));
    assert_eq!(get(), cert_a);
    let body = tls_policy(&o, tls_addr, "");

    // A key that belongs to another certificate: rejected with file and line, and the
    // old certificate keeps serving.
    std::fs::copy(s.dir.path().join("b.key"), s.dir.path().join("a.key")).unwrap();
    let r = client().post(s.admin_url("/admin/reload")).send().unwrap();
    assert_eq!(r.status(), 422);
    let text = r.text().unwrap();
    assert!(
        text.contains("policy.toml:") && text.contains("a.key does not belong to certificate"),
        "{text}"
    );
    assert_eq!(get(), cert_a);

    // A missing certificate file: named in the error.
    s.rewrite(&body.replace("\"a.pem\"", "\"missing.pem\""));
    let r = client().post(s.admin_url("/admin/reload")).send().unwrap();
    assert_eq!(r.status(), 422);
    let text = r.text().unwrap();
    assert!(text.contains("missing.pem"), "{text}");
    assert_eq!(get(), cert_a);

    // A new certificate for a.test: the next handshake gets it, without a restart.
    let new_a = pki.leaf(s.dir.path(), "a", &["a.test"]);
    assert_ne!(new_a, cert_a);
    s.rewrite(&body);
    let r = client().post(s.admin_url("/admin/reload")).send().unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    assert_eq!(get(), new_a);
}

#[test]
fn h2c_and_h1_reach_the_origin_with_the_same_headers() {
    let o = origin("o1");
    let body = format!(
        "[pools.o]\npeers = [\"{}\"]\n[filters.props]\nmodule = {}\n[[routes]]\nfilters = [\"props\"]\npool = \"o\"\n",
        o.addr,
        module("props.wasm")
    );
    let s = sluice_with_server(&body, "h2c = true\n");
    let h2c = reqwest::blocking::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let mut seen = Vec::new();
    for (c, version) in [
        (client(), reqwest::Version::HTTP_11),
        (h2c, reqwest::Version::HTTP_2),
    ] {
        let r = c
            .get(s.url("/echo?q=1"))
            .header("x-custom", "v1")
            .header("cookie", "a=1")
            .send()
            .unwrap();
        assert_eq!(r.version(), version);
        assert_eq!(r.status(), 200);
        let echo: serde_json::Value = r.json().unwrap();
        let h = |n: &str| echo_header(&echo, n);
        assert_eq!(h("x-custom").as_deref(), Some("v1"));
        assert_eq!(h("cookie").as_deref(), Some("a=1"));
        assert_eq!(
            h("host"),
            Some(s.proc.addr.to_string()),
            "Host reaches the origin"
        );
        assert_eq!(echo["path"], "/echo");
        assert_eq!(echo["query"], "q=1");
        seen.push((
            h("x-prop-path"),
            h("x-prop-method"),
            h("x-prop-host"),
            h("x-prop-scheme"),
        ));
        assert_eq!(
            h("x-prop-protocol").as_deref(),
            Some(if version == reqwest::Version::HTTP_2 {
                "HTTP/2"
            } else {
                "HTTP/1.1"
            })
        );
    }
    assert_eq!(
        seen[0], seen[1],
        "filters see the same request over h1 and h2c"
    );
    assert_eq!(seen[0].0.as_deref(), Some("/echo?q=1"));
}

/// A raw HTTP/1.1 origin: every request head it reads goes to the returned list, and
/// each is answered with `answer` (keep-alive).
fn recording_origin(answer: &'static [u8]) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let heads: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = heads.clone();
    let (addr, _) = counting_origin(move |mut r, mut w| loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        seen.lock().unwrap().push(head);
        if w.write_all(answer).is_err() {
            return;
        }
    });
    (addr, heads)
}

#[test]
fn an_h2_clients_head_reaches_an_http1_origin_with_pingoras_names_and_h1_clients_keep_the_origins_case(
) {
    // The origin answers with names in mixed case: an HTTP/1 client gets them as sent,
    // an HTTP/2 client lowercase (its head is built without a case map).
    let (origin, heads) = recording_origin(
        b"HTTP/1.1 200 OK\r\nX-Mixed-Case: v\r\ncontent-type: text/plain\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nContent-Length: 2\r\n\r\nok",
    );
    let s = sluice_with_server(
        &format!("[pools.o]\npeers = [\"{origin}\"]\n[[routes]]\npool = \"o\"\n"),
        "h2c = true\n",
    );
    let h2c = reqwest::blocking::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2c
        .get(s.url("/p?q=1"))
        .header("x-custom", "v1")
        .header("content-type", "text/plain")
        .header("cookie", "c=3")
        .header("te", "trailers")
        .header("x-sluice-debug", "1")
        .send()
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-mixed-case"], "v");
    assert_eq!(r.headers()["content-type"], "text/plain");
    let cookies: Vec<_> = r.headers().get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    assert_eq!(r.text().unwrap(), "ok");
    let head = heads
        .lock()
        .unwrap()
        .pop()
        .expect("the origin got the request");
    let lines: Vec<&str> = head.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines[0], "GET /p?q=1 HTTP/1.1", "{head}");
    // Names Pingora titles on HTTP/1, every other one lowercase; no hop-by-hop field,
    // no debug question; the authority as Host.
    for want in [
        "x-custom: v1".to_string(),
        "Content-Type: text/plain".to_string(),
        "cookie: c=3".to_string(),
        format!("Host: {}", s.proc.addr),
    ] {
        assert!(lines.contains(&want.as_str()), "{want} in {head}");
    }
    for gone in ["te:", "x-sluice-debug:", "TE:"] {
        assert!(!head.contains(gone), "{gone} in {head}");
    }
    assert_eq!(lines.iter().filter(|l| l.starts_with("Host:")).count(), 1);

    // An HTTP/1.1 client: the origin's names keep their case and order.
    let answer = {
        let mut c = TcpStream::connect(s.proc.addr).unwrap();
        c.write_all(b"GET /q HTTP/1.1\r\nHost: h1.test\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut a = String::new();
        c.read_to_string(&mut a).unwrap();
        a
    };
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let at = |needle: &str| {
        answer
            .find(needle)
            .unwrap_or_else(|| panic!("{needle} in {answer}"))
    };
    assert!(at("\r\nX-Mixed-Case: v\r\n") < at("\r\ncontent-type: text/plain\r\n"));
    assert!(at("\r\nSet-Cookie: a=1\r\n") < at("\r\nset-cookie: b=2\r\n"));
}

#[test]
fn streams_of_one_h2_connection_answer_right_around_failing_ones() {
    // Streams of a connection reuse the shells of finished ones: a stream that fails
    // (no route, a refused peer, a refused head) must leave nothing to the next.
    let o = origin("o1");
    let refused = fresh_addr();
    let s = sluice_with_server(
        &format!(
            "[pools.o]\npeers = [\"{}\"]\n[pools.down]\npeers = [\"{refused}\"]\n\
             [[routes]]\npath_prefix = \"/echo\"\npool = \"o\"\n\
             [[routes]]\npath_prefix = \"/down\"\npool = \"down\"\n",
            o.addr
        ),
        "h2c = true\n",
    );
    let h2c = reqwest::blocking::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let rounds = |c: reqwest::blocking::Client, t: usize| {
        for i in 0..20 {
            let tag = format!("{t}-{i}");
            let r = c
                .post(s.url(&format!("/echo?n={tag}")))
                .header("x-tag", &tag)
                .body(tag.clone())
                .send()
                .unwrap();
            assert_eq!(r.version(), reqwest::Version::HTTP_2);
            assert_eq!(r.status(), 200);
            let echo: serde_json::Value = r.json().unwrap();
            assert_eq!(echo_header(&echo, "x-tag").as_deref(), Some(tag.as_str()));
            assert_eq!(echo["query"], format!("n={tag}"));
            assert_eq!(echo["body"], tag);
            let status = |path: &str| c.get(s.url(path)).send().unwrap().status().as_u16();
            assert_eq!(status("/nowhere"), 404, "no route");
            assert_eq!(status("/down"), 502, "a refused peer");
            assert_eq!(status("/echo/a%2Fb"), 400, "an encoded slash");
        }
    };
    std::thread::scope(|scope| {
        for t in 0..4 {
            let c = h2c.clone();
            scope.spawn(move || rounds(c, t));
        }
    });
}

#[test]
fn cleartext_requests_on_a_redirect_route_go_to_https() {
    let o = origin("o1");
    let pki = Pki::new();
    let (s, tls_addr, _, _) = sluice_tls(&pki, |t| {
        tls_policy(
            &o,
            t,
            "[[routes]]\nname = \"secure\"\npath_prefix = \"/secure\"\npool = \"o\"\nredirect_https = true\n",
        )
    });
    let r = client()
        .get(s.url("/secure/page?x=1"))
        .header("host", "a.test")
        .send()
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.headers()["location"],
        format!("https://a.test:{}/secure/page?x=1", tls_addr.port()).as_str()
    );
    // Over TLS the same route serves.
    let c = tls_client(&pki, tls_addr, &["a.test"]);
    let r = c
        .get(format!("https://a.test:{}/secure/page", tls_addr.port()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404, "the origin answers (it has no such page)");
    assert_eq!(r.headers()["x-origin-id"], "o1");
    // Other routes are not redirected.
    assert_eq!(client().get(s.url("/echo")).send().unwrap().status(), 200);
}

fn origin_id(c: &reqwest::blocking::Client, url: &str, headers: &[(&str, &str)]) -> String {
    let mut rb = c.get(url);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().unwrap_or_else(|e| panic!("{url}: {e:?}"));
    assert_eq!(r.status(), 200, "{url}");
    r.headers()["x-origin-id"].to_str().unwrap().to_string()
}

fn counts(ids: impl IntoIterator<Item = String>) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for id in ids {
        *m.entry(id).or_insert(0) += 1;
    }
    m
}

fn metric(s: &Sluice, name: &str, labels: &str) -> f64 {
    let text = client()
        .get(s.admin_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(name) && l.contains(labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn round_robin_spreads_evenly_and_a_stopped_origin_leaves_without_client_errors() {
    let (o1, o2, o3) = (origin("o1"), origin("o2"), origin("o3"));
    let body = format!(
        "[pools.o]\npeers = [\"{}\", \"{}\", \"{}\"]\nretries = 2\n\
         [pools.o.health]\npath = \"/healthz\"\ninterval_ms = 200\ntimeout_ms = 200\nunhealthy = 1\n\
         [[routes]]\npool = \"o\"\n",
        o1.addr, o2.addr, o3.addr
    );
    let s = sluice(&body);
    let c = client();
    let ids: Vec<String> = (0..300)
        .map(|_| origin_id(&c, &s.url("/echo"), &[]))
        .collect();
    let n = counts(ids);
    for id in ["o1", "o2", "o3"] {
        assert_eq!(n.get(id), Some(&100), "round robin: {n:?}");
    }

    // Stop o2 and keep sending: idempotent requests never fail (a failed connect or a
    // dead pooled connection retries on another peer), and within the health-check
    // interval o2 is out of rotation.
    let o2_addr = o2.addr.to_string();
    drop(o2);
    let stopped = Instant::now();
    let mut after = Vec::new();
    while stopped.elapsed() < Duration::from_millis(1500) {
        after.push(origin_id(&c, &s.url("/echo"), &[]));
    }
    assert!(
        after.iter().all(|id| id != "o2"),
        "o2 answered after it stopped"
    );
    assert_eq!(
        metric(
            &s,
            "sluice_upstream_healthy",
            &format!("peer=\"{o2_addr}\"")
        ),
        0.0,
        "the health check marks o2 down"
    );
    let retries = metric(&s, "sluice_upstream_retries_total", "pool=\"o\"");
    let n = counts((0..100).map(|_| origin_id(&c, &s.url("/echo"), &[])));
    assert_eq!(n.len(), 2, "{n:?}");
    assert!(n["o1"].abs_diff(n["o3"]) <= 2, "{n:?}");
    assert_eq!(
        metric(&s, "sluice_upstream_retries_total", "pool=\"o\""),
        retries,
        "once o2 is marked down no attempt goes to it"
    );
    drop((o1, o3));
}

#[test]
fn weights_consistent_hashing_retries_and_ejection() {
    let (o1, o2, o3) = (origin("o1"), origin("o2"), origin("o3"));
    let dead = DEAD_PEER;
    let body = format!(
        "[pools.w]\npeers = [{{ addr = \"{a}\", weight = 3 }}, \"{b}\"]\n\
         [pools.h]\npeers = [\"{a}\", \"{b}\", \"{c}\"]\nbalance = \"consistent_hash\"\nhash_key = \"header:x-user\"\n\
         [pools.r]\npeers = [\"{dead}\", \"{a}\"]\nretries = 1\n[pools.r.ejection]\nfailures = 2\nduration_ms = 60000\n\
         [[routes]]\nhost = \"w.test\"\npool = \"w\"\n\
         [[routes]]\nhost = \"h.test\"\npool = \"h\"\n\
         [[routes]]\nhost = \"r.test\"\npool = \"r\"\n",
        a = o1.addr,
        b = o2.addr,
        c = o3.addr
    );
    let s = sluice(&body);
    let c = client();

    // Weighted round robin: 3:1.
    let n = counts((0..400).map(|_| origin_id(&c, &s.url("/echo"), &[("host", "w.test")])));
    assert_eq!((n["o1"], n["o2"]), (300, 100), "{n:?}");

    // Consistent hashing: a key stays on one peer; keys spread over all three.
    let mut owners = HashMap::new();
    for user in 0..60 {
        let key = format!("user-{user}");
        let first = origin_id(&c, &s.url("/echo"), &[("host", "h.test"), ("x-user", &key)]);
        for _ in 0..5 {
            assert_eq!(
                origin_id(&c, &s.url("/echo"), &[("host", "h.test"), ("x-user", &key)]),
                first
            );
        }
        owners.insert(key, first);
    }
    let spread = counts(owners.values().cloned());
    assert_eq!(spread.len(), 3, "{spread:?}");
    assert!(spread.values().all(|n| *n >= 8), "{spread:?}");

    // A dead peer: every request still succeeds (connect failure -> retry on the
    // other peer, for any method), and after 2 failures it is ejected.
    for i in 0..20 {
        let r = c
            .post(s.url("/echo"))
            .header("host", "r.test")
            .body(format!("payload {i}"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        let echo: serde_json::Value = r.json().unwrap();
        assert_eq!(echo["body"], format!("payload {i}"));
    }
    assert_eq!(
        metric(
            &s,
            "sluice_upstream_ejections_total",
            &format!("peer=\"{dead}\"")
        ),
        1.0
    );
    assert_eq!(
        metric(&s, "sluice_upstream_retries_total", "pool=\"r\""),
        2.0
    );
    drop((o1, o2, o3));
}

#[test]
fn bad_pool_and_tls_definitions_are_reported_with_lines() {
    let (out, path, _dir) = check(
        "[tls]\nlisten = [\"127.0.0.1:1\"]\n[[tls.certificates]]\ncert = \"nope.pem\"\nkey = \"nope.key\"\n\
         [pools.o]\npeers = [\"127.0.0.1:1\"]\nbalance = \"fastest\"\n\
         [pools.p]\npeers = [\"127.0.0.1:2\"]\ntls = true\n\
         [[routes]]\npool = \"o\"\nredirect_https = true\n",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let p = path.display();
    assert!(
        err.contains(&format!("{p}:6: pool \"o\": balance must be")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{p}:9: pool \"p\": tls with verify needs sni")),
        "{err}"
    );

    let (out, path, _dir) = check(
        "[tls]\nlisten = [\"127.0.0.1:1\"]\n[[tls.certificates]]\ncert = \"nope.pem\"\nkey = \"nope.key\"\n\
         [pools.o]\npeers = [\"127.0.0.1:1\"]\n[[routes]]\npool = \"o\"\n",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:3: certificate {}",
            path.display(),
            path.with_file_name("nope.pem").display()
        )),
        "{err}"
    );
}

/// The TLS handshake runs within `timeouts.header_ms`: a client that connects and never
/// says hello is closed and counted; one that speaks plain HTTP to the TLS port is
/// counted as a failed handshake; a real client still gets through afterwards.
#[test]
fn silent_and_plaintext_tls_clients_are_closed_and_counted() {
    use std::io::{Read, Write};
    let o = origin("o-tls-slow");
    let pki = Pki::new();
    let (s, tls_addr, _, _) = sluice_tls(&pki, |t| {
        format!("[timeouts]\nheader_ms = 1000\n{}", tls_policy(&o, t, ""))
    });
    wait_port(tls_addr);
    // Silent: no ClientHello.
    let mut silent = std::net::TcpStream::connect(tls_addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let start = std::time::Instant::now();
    let mut buf = [0u8; 64];
    let n = silent.read(&mut buf).unwrap_or(0);
    let took = start.elapsed();
    assert_eq!(n, 0, "a silent TLS client got bytes");
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_millis(3000),
        "silent TLS client closed after {took:?} (header_ms 1000)"
    );
    // Plain HTTP on the TLS port.
    let mut plain = std::net::TcpStream::connect(tls_addr).unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(
        !String::from_utf8_lossy(&got).contains("200 OK"),
        "plain HTTP answered on the TLS port"
    );
    eventually(Duration::from_secs(5), "the handshake counters", || {
        let timeouts = metric_with(
            &s,
            "sluice_connection_timeouts_total",
            "phase=\"tls_handshake\"",
        );
        let failures = metric(&s, "sluice_tls_handshake_failures_total", "");
        (timeouts >= 1.0 && failures >= 1.0)
            .then_some(())
            .ok_or(format!("timeouts {timeouts}, failures {failures}"))
    });
    get_a_test(&pki, tls_addr);
}
