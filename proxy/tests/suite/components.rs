//! Component-model filters (issue #21): WASI 0.3 `wasi:http` middleware and edge
//! functions from `filters/components` (built by filters/build.sh), on a real listener
//! with a real origin.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;

/// `[server]` key that enables component filters.
const ENABLE: &str = "component_model = true\n";

/// The TOML path of a built component.
fn component(name: &str) -> String {
    module(&format!("components/{name}.wasm"))
}

/// `[filters.NAME]` of a component with extra keys.
fn component_filter(name: &str, file: &str, extra: &str) -> String {
    format!(
        "[filters.{name}]\nkind = \"component\"\nmodule = {}\n{extra}",
        component(file)
    )
}

#[test]
fn header_changes_run_in_chain_order_across_proxy_wasm_and_components() {
    let origin = origin("cm-order");
    let policy = format!(
        "[pools.o]\npeers = [\"{}\"]\n\
         [filters.tag]\nmodule = {}\nconfig = {{ request = {{ set = {{ \"x-from-wasm\" = \"1\" }} }} }}\n\
         [filters.flag]\nmodule = {}\nconfig = {{ request = {{ set = {{ \"x-deny\" = \"yes\" }} }} }}\n\
         {}{}\
         [[routes]]\nhost = \"a.test\"\nfilters = [\"tag\", \"add\"]\npool = \"o\"\n\
         [[routes]]\nhost = \"b.test\"\nfilters = [\"flag\", \"deny\"]\npool = \"o\"\n",
        origin.addr,
        module("headers.wasm"),
        module("headers.wasm"),
        component_filter("add", "add_header", ""),
        component_filter("deny", "deny", ""),
    );
    let s = sluice_with_server(&policy, ENABLE);
    let r = client()
        .get(s.url("/echo"))
        .header("host", "a.test")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-component-response"], "add-header");
    let echo: serde_json::Value = r.json().unwrap();
    // The origin saw the Proxy-Wasm filter's header and the component's.
    assert_eq!(echo_header(&echo, "x-from-wasm").as_deref(), Some("1"));
    assert_eq!(
        echo_header(&echo, "x-component").as_deref(),
        Some("add-header")
    );
    // The component runs after the Proxy-Wasm request phase: it sees the header the
    // Proxy-Wasm filter set and denies.
    let r = client()
        .get(s.url("/echo"))
        .header("host", "b.test")
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-denied-by"], "deny-component");
}

/// A pool peer that counts the connections it accepts (and answers none).
fn counting_peer() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            c.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    (addr, count)
}

#[test]
fn request_bodies_stream_through_a_middleware_to_the_origin() {
    let origin = origin("cm-body");
    let policy = format!(
        "[pools.o]\npeers = [\"{}\"]\n[filters.tag]\nmodule = {}\nrequest_body = \"stream\"\nconfig = {{ request = {{ set = {{ \"x-from-wasm\" = \"1\" }} }} }}\n{}\
         [[routes]]\nhost = \"plain.test\"\nfilters = [\"add\"]\npool = \"o\"\n\
         [[routes]]\nhost = \"mixed.test\"\nfilters = [\"tag\", \"add\"]\npool = \"o\"\n",
        origin.addr,
        module("headers.wasm"),
        component_filter("add", "add_header", ""),
    );
    let s = sluice_with_server(&policy, ENABLE);
    // Small (read whole before the chain) and large (streamed) bodies, both routes.
    for host in ["plain.test", "mixed.test"] {
        for n in [1000usize, 3 << 20] {
            let r = client()
                .post(s.url("/echo"))
                .header("host", host)
                .body(vec![b'a'; n])
                .send()
                .unwrap();
            assert_eq!(r.status(), 200, "{host} {n}");
            let echo: serde_json::Value = r.json().unwrap();
            assert_eq!(echo["body_len"].as_u64(), Some(n as u64), "{host} {n}");
            assert_eq!(
                echo_header(&echo, "x-component").as_deref(),
                Some("add-header")
            );
        }
    }
}

#[test]
fn a_component_deny_never_reaches_the_origin() {
    let (peer, connections) = counting_peer();
    let policy = format!(
        "[pools.o]\npeers = [\"{peer}\"]\n{}[[routes]]\nfilters = [\"deny\"]\npool = \"o\"\n",
        component_filter("deny", "deny", "")
    );
    let s = sluice_with_server(&policy, ENABLE);
    for (path, header) in [("/admin/x", None), ("/x", Some("1"))] {
        let mut req = client().post(s.url(path)).body("secret body");
        if let Some(v) = header {
            req = req.header("x-deny", v);
        }
        let r = req.send().unwrap();
        assert_eq!(r.status(), 403);
        assert_eq!(r.text().unwrap(), "denied by a component\n");
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "the origin was contacted"
    );
}

#[test]
fn an_edge_function_answers_with_no_pool() {
    let policy = format!(
        "{}[[routes]]\nfunction = \"hello\"\n",
        component_filter("hello", "hello", "")
    );
    let s = sluice_with_server(&policy, ENABLE);
    let r = client().get(s.url("/hi?x=1")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-edge-function"], "hello");
    assert_eq!(r.text().unwrap(), "hello from a component: GET /hi?x=1\n");
}

#[test]
fn ten_mib_stream_through_a_transform_under_a_64_mib_cap() {
    let origin = origin("cm-stream");
    let policy = format!(
        "[pools.o]\npeers = [\"{}\"]\n{}[[routes]]\nfilters = [\"upper\"]\npool = \"o\"\n",
        origin.addr,
        component_filter("upper", "transform", "memory_mb = 64\n")
    );
    let s = sluice_with_server(&policy, ENABLE);
    let n = 10 << 20;
    let mut r = client().get(s.url(&format!("/bytes/{n}"))).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-transform"], "upper");
    let mut body = Vec::new();
    r.read_to_end(&mut body).unwrap();
    assert_eq!(body.len(), n);
    assert!(body.iter().all(|b| *b == b'X'), "every byte upper-cased");
}

#[test]
fn endless_loop_and_trap_get_the_failure_policy() {
    let origin = origin("cm-fail");
    let policy = format!(
        "[pools.o]\npeers = [\"{}\"]\n{}{}\
         [[routes]]\npath_prefix = \"/closed\"\nfilters = [\"closed\"]\npool = \"o\"\n\
         [[routes]]\npath_prefix = \"/\"\nfilters = [\"open\"]\npool = \"o\"\n",
        origin.addr,
        component_filter(
            "closed",
            "hostile",
            "callback_ms = 50\non_failure = \"fail_closed\"\nfailure_status = 503\n"
        ),
        component_filter(
            "open",
            "hostile",
            "callback_ms = 50\non_failure = \"fail_open\"\n"
        ),
    );
    let s = sluice_with_server(&policy, ENABLE);
    for path in ["/loop", "/trap"] {
        let started = Instant::now();
        let r = client().get(s.url(path)).send().unwrap();
        // Fail open: a bodiless request goes on to the origin.
        assert_eq!(r.status(), 404, "{path}: the origin answered");
        assert_eq!(r.headers()["x-origin-id"], "cm-fail");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{path} took {:?}",
            started.elapsed()
        );
    }
    assert!(metric_with(&s, "sluice_filter_failures_total", "filter=\"open\"") >= 2.0);
    // Still serving after the failures, on fresh instances.
    let r = client().get(s.url("/echo")).send().unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn fail_closed_answers_the_failure_status() {
    let origin = origin("cm-closed");
    let policy = format!(
        "[pools.o]\npeers = [\"{}\"]\n{}[[routes]]\nfilters = [\"h\"]\npool = \"o\"\n",
        origin.addr,
        component_filter(
            "h",
            "hostile",
            "callback_ms = 50\non_failure = \"fail_closed\"\nfailure_status = 503\n"
        ),
    );
    let s = sluice_with_server(&policy, ENABLE);
    for path in ["/loop", "/trap"] {
        let started = Instant::now();
        let r = client().get(s.url(path)).send().unwrap();
        assert_eq!(r.status(), 503, "{path}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    assert!(metric_with(&s, "sluice_filter_failures_total", "filter=\"h\"") >= 2.0);
    assert_eq!(client().get(s.url("/echo")).send().unwrap().status(), 200);
}

#[test]
fn the_memory_cap_stops_a_guest_and_gets_the_failure_policy() {
    let origin = origin("cm-memory");
    let policy = format!(
        "[pools.o]\npeers = [\"{}\"]\n{}{}\
         [[routes]]\nhost = \"small.test\"\nfilters = [\"small\"]\npool = \"o\"\n\
         [[routes]]\nhost = \"large.test\"\nfilters = [\"large\"]\npool = \"o\"\n",
        origin.addr,
        component_filter("small", "hostile", "memory_mb = 64\nfailure_status = 507\n"),
        // A CPU deadline far from the growth's cost: this test is about memory, and
        // touching 100 MiB on a busy machine can take longer than the default deadline.
        component_filter("large", "hostile", "memory_mb = 256\ncallback_ms = 5000\n"),
    );
    let s = sluice_with_server(&policy, ENABLE);
    let get = |host: &str| {
        client()
            .get(s.url("/grow"))
            .header("host", host)
            .send()
            .unwrap()
    };
    // 100 MiB under a 64 MiB cap: the allocation fails, the guest traps, fail closed.
    assert_eq!(get("small.test").status(), 507);
    assert!(metric_with(&s, "sluice_filter_failures_total", "filter=\"small\"") >= 1.0);
    // The same guest under 256 MiB answers.
    let r = get("large.test");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), format!("{}\n", 100 << 20));
}

#[test]
fn component_keys_are_checked() {
    for (kind, extra, expect) in [
        ("wasi", "", "kind must be"),
        (
            "component",
            "reuse_requests = 0\n",
            "reuse_requests must be 1..100000",
        ),
        (
            "component",
            "config = \"x\"\n",
            "config is a Proxy-Wasm key",
        ),
    ] {
        let text = format!(
            "[server]\n{ENABLE}[filters.c]\nkind = \"{kind}\"\nmodule = {}\n{extra}[[routes]]\nfunction = \"c\"\n",
            component("hello")
        );
        let (out, _path, _dir) = check(&text);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(err.contains(expect), "{expect}: {err}");
    }
    // A Proxy-Wasm filter after a component on a route.
    let text = format!(
        "[server]\n{ENABLE}[pools.o]\npeers = [\"127.0.0.1:9\"]\n{}[filters.h]\nmodule = {}\n[[routes]]\nfilters = [\"add\", \"h\"]\npool = \"o\"\n",
        component_filter("add", "add_header", ""),
        module("headers.wasm")
    );
    let (out, _path, _dir) = check(&text);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("list them last"), "{err}");
}

#[test]
fn wrong_world_and_missing_import_are_policy_errors_with_a_line() {
    // A middleware where a function belongs: it imports wasi:http/handler.
    let text = format!(
        "[server]\n{ENABLE}{}[[routes]]\nfunction = \"add\"\n",
        component_filter("add", "add_header", "")
    );
    let (out, path, _dir) = check(&text);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("{}:5:", path.display()))
            && err.contains("import wasi:http/handler@0.3.0"),
        "{err}"
    );
    // A Proxy-Wasm module is no component.
    let text = format!(
        "[server]\n{ENABLE}[filters.x]\nkind = \"component\"\nmodule = {}\n[[routes]]\nfunction = \"x\"\n",
        module("headers.wasm")
    );
    let (out, path, _dir) = check(&text);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&format!("{}:5:", path.display())), "{err}");
    // The experimental key is required.
    let text = format!(
        "{}[[routes]]\nfunction = \"hello\"\n",
        component_filter("hello", "hello", "")
    );
    let (out, _path, _dir) = check(&text);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("component_model = true"), "{err}");
}

#[test]
fn instance_reuse_on_and_off_is_observable() {
    let origin = origin("cm-reuse");
    let policy = format!(
        "[pools.o]\npeers = [\"{}\"]\n{}{}\
         [[routes]]\nhost = \"fresh.test\"\nfilters = [\"fresh\"]\npool = \"o\"\n\
         [[routes]]\nhost = \"reused.test\"\nfilters = [\"reused\"]\npool = \"o\"\n",
        origin.addr,
        component_filter("fresh", "hostile", ""),
        component_filter(
            "reused",
            "hostile",
            "reuse_requests = 1000\nreuse_concurrency = 1\n"
        ),
    );
    let s = sluice_with_server(&policy, ENABLE);
    let count = |host: &str| -> u64 {
        let r = client()
            .get(s.url("/count"))
            .header("host", host)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().unwrap().trim().parse().unwrap()
    };
    // Fresh: every request sees a new instance.
    assert_eq!(
        (
            count("fresh.test"),
            count("fresh.test"),
            count("fresh.test")
        ),
        (1, 1, 1)
    );
    // Reused: one instance counts the requests it served.
    let seen: Vec<u64> = (0..3).map(|_| count("reused.test")).collect();
    assert!(seen.windows(2).all(|w| w[1] > w[0]), "{seen:?}");
}

#[test]
fn swap_under_load_changes_the_component_with_no_failed_request() {
    let origin = origin("cm-swap");
    let policy = |filter: &str, file: &str| {
        format!(
            "[pools.o]\npeers = [\"{}\"]\n{}[[routes]]\nfilters = [\"{filter}\"]\npool = \"o\"\n",
            origin.addr,
            component_filter(filter, file, "")
        )
    };
    let s = sluice_with_server(&policy("add", "add_header"), ENABLE);
    let stop = Arc::new(AtomicBool::new(false));
    let url = s.url("/echo");
    let load: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            let url = url.clone();
            std::thread::spawn(move || {
                let (mut ok, mut failed, mut transformed) = (0, 0, 0);
                let deadline = Instant::now() + Duration::from_secs(30);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match client().get(&url).send() {
                        Ok(r) if r.status() == 200 => {
                            ok += 1;
                            if r.headers().contains_key("x-transform") {
                                transformed += 1;
                            }
                        }
                        _ => failed += 1,
                    }
                }
                (ok, failed, transformed)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    s.rewrite(&policy("upper", "transform"));
    let generation = reload(&s);
    assert!(generation >= 2);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed, mut transformed) = (0, 0, 0);
    for t in load {
        let (o, f, x) = t.join().unwrap();
        ok += o;
        failed += f;
        transformed += x;
    }
    assert_eq!(failed, 0, "{ok} ok, {failed} failed");
    assert!(
        ok > 10 && transformed > 0,
        "{ok} ok, {transformed} through the new component"
    );
    let r = client().get(s.url("/echo")).send().unwrap();
    assert_eq!(r.headers()["x-transform"], "upper");
}

/// Raw bytes: a component route answers HTTP/1.1 with chunked framing when the guest
/// sets no length, and the connection stays usable.
#[test]
fn an_edge_function_keeps_the_connection() {
    let policy = format!(
        "{}[[routes]]\nfunction = \"hello\"\n",
        component_filter("hello", "hello", "")
    );
    let s = sluice_with_server(&policy, ENABLE);
    let mut c = std::net::TcpStream::connect(s.proc.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..2 {
        c.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4096];
        while !got.ends_with(b"\r\n0\r\n\r\n") {
            let n = c.read(&mut buf).unwrap();
            assert!(n > 0, "closed after {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(
            text.to_ascii_lowercase()
                .contains("transfer-encoding: chunked"),
            "{text}"
        );
        assert!(text.contains("hello from a component: GET /a"), "{text}");
    }
}

/// A peer that accepts connections and never answers.
fn silent_peer() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in l.incoming() {
            held.push(conn);
        }
    });
    addr
}

#[test]
fn component_routes_reach_tls_and_h2_pools_within_their_timeouts() {
    let origin = origin("cm-tls");
    let pki = Pki::new();
    // The pools' TLS peer: a Sluice terminating TLS for origin.test (h2 by ALPN) in
    // front of the origin; its `props` filter tells the origin how the request came.
    let dir = tempfile::tempdir().unwrap();
    pki.leaf(dir.path(), "o", &["origin.test"]);
    let (_front, tls) = sluice_ports(
        dir,
        1,
        |t| {
            format!(
                "[tls]\nlisten = [\"{}\"]\n\
                 [[tls.certificates]]\ncert = \"o.pem\"\nkey = \"o.key\"\n\
                 [pools.o]\npeers = [\"{}\"]\n\
                 [filters.props]\nmodule = {}\n\
                 [[routes]]\nfilters = [\"props\"]\npool = \"o\"\n",
                t[0],
                origin.addr,
                module("props.wasm")
            )
        },
        &Opts::default(),
    );
    let tls = tls[0];
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), &pki.ca_pem).unwrap();
    let ca = ca.path().display().to_string();
    let silent = silent_peer();
    let pool = |name: &str, peer: std::net::SocketAddr, extra: &str| {
        format!("[pools.{name}]\npeers = [\"{peer}\"]\n{extra}")
    };
    let tls_keys = format!("tls = true\nsni = \"origin.test\"\nca_file = \"{ca}\"\n");
    let route = |host: &str, pool: &str| {
        format!("[[routes]]\nhost = \"{host}\"\nfilters = [\"add\"]\npool = \"{pool}\"\n")
    };
    let policy = format!(
        "{}{}{}{}{}{}{}{}{}{}{}",
        pool("h1", tls, &tls_keys),
        pool("h2", tls, &format!("{tls_keys}h2 = true\n")),
        // The system roots do not know the test CA.
        pool("untrusted", tls, "tls = true\nsni = \"origin.test\"\n"),
        pool("silent", silent, "read_timeout_ms = 300\n"),
        component_filter("add", "add_header", ""),
        route("h1.test", "h1"),
        route("h2.test", "h2"),
        route("untrusted.test", "untrusted"),
        route("silent.test", "silent"),
        "",
        "",
    );
    let s = sluice_with_server(&policy, ENABLE);
    let get = |host: &str| {
        client()
            .get(s.url("/echo"))
            .header("host", host)
            .send()
            .unwrap()
    };
    for (host, protocol) in [("h1.test", "HTTP/1.1"), ("h2.test", "HTTP/2")] {
        for _ in 0..3 {
            let r = get(host);
            assert_eq!(r.status(), 200, "{host}");
            assert_eq!(r.headers()["x-component-response"], "add-header");
            let echo: serde_json::Value = r.json().unwrap();
            assert_eq!(
                echo_header(&echo, "x-prop-scheme").as_deref(),
                Some("https"),
                "{host}"
            );
            assert_eq!(
                echo_header(&echo, "x-prop-protocol").as_deref(),
                Some(protocol),
                "{host}"
            );
            assert_eq!(
                echo_header(&echo, "x-component").as_deref(),
                Some("add-header")
            );
        }
    }
    // A certificate the pool cannot verify: refused, never sent the request.
    let r = get("untrusted.test");
    assert_eq!(r.status(), 502);
    // A peer that never answers: the pool's read timeout, not the 30 s head timeout.
    let t = Instant::now();
    let r = get("silent.test");
    assert_eq!(r.status(), 502);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[test]
fn a_component_route_to_a_consistent_hash_pool_keeps_each_key_on_one_peer() {
    let a = origin("cm-hash-a");
    let b = origin("cm-hash-b");
    let policy = format!(
        "[pools.h]\npeers = [\"{}\", \"{}\"]\nbalance = \"consistent_hash\"\nhash_key = \"header:x-user\"\n\
         {}\
         [[routes]]\nfilters = [\"add\"]\npool = \"h\"\n",
        a.addr,
        b.addr,
        component_filter("add", "add_header", ""),
    );
    let s = sluice_with_server(&policy, ENABLE);
    let mut seen = std::collections::HashSet::new();
    for user in 0..16 {
        let origin_of = || {
            let r = client()
                .get(s.url("/echo"))
                .header("x-user", format!("u{user}"))
                .send()
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["x-component-response"], "add-header");
            r.headers()["x-origin-id"].to_str().unwrap().to_string()
        };
        let first = origin_of();
        for _ in 0..3 {
            assert_eq!(origin_of(), first, "user u{user} moved");
        }
        seen.insert(first);
    }
    // Sixteen keys over two peers: both get some (a constant key would pick one).
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[test]
fn hop_by_hop_headers_a_filter_sets_do_not_pass_a_component_route() {
    let origin = origin("cm-hop");
    let policy = format!(
        "[pools.o]\npeers = [\"{}\"]\n\
         [filters.tag]\nmodule = {}\nconfig = {{ request = {{ set = {{ \"proxy-authorization\" = \"Basic c2VjcmV0\", \"http2-settings\" = \"AAA\", \"x-kept\" = \"1\" }} }} }}\n\
         {}\
         [[routes]]\nfilters = [\"tag\", \"add\"]\npool = \"o\"\n",
        origin.addr,
        module("headers.wasm"),
        component_filter("add", "add_header", ""),
    );
    let s = sluice_with_server(&policy, ENABLE);
    let r = client().get(s.url("/echo")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-component-response"], "add-header");
    let echo: serde_json::Value = r.json().unwrap();
    // As on a pool route: what belongs to one hop is not handed to the component chain.
    assert_eq!(echo_header(&echo, "x-kept").as_deref(), Some("1"));
    assert_eq!(echo_header(&echo, "proxy-authorization"), None);
    assert_eq!(echo_header(&echo, "http2-settings"), None);
}

#[test]
fn a_component_route_retries_a_refused_connection_on_another_peer() {
    let live = origin("cm-retry");
    let dead = DEAD_PEER;
    let policy = |retries: usize| {
        format!(
            "[pools.two]\npeers = [\"{dead}\", \"{}\"]\nretries = {retries}\n\
             {}\
             [[routes]]\nfilters = [\"add\"]\npool = \"two\"\n",
            live.addr,
            component_filter("add", "add_header", ""),
        )
    };
    // Round robin sends every other request's first try to the refusing peer: with the
    // pool's retries, each of them goes on to the live one.
    let s = sluice_with_server(&policy(1), ENABLE);
    for i in 0..10 {
        let r = client().get(s.url("/echo")).send().unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(r.headers()["x-component-response"], "add-header");
        assert_eq!(r.headers()["x-origin-id"], "cm-retry");
    }
    assert!(
        metric_with(&s, "sluice_upstream_retries_total", "pool=\"two\"") >= 1.0,
        "no retry counted"
    );
    drop(s);
    // With no retries the refused connection is the answer: 502 for some requests.
    let s = sluice_with_server(&policy(0), ENABLE);
    let statuses: Vec<u16> = (0..10)
        .map(|_| {
            client()
                .get(s.url("/echo"))
                .send()
                .unwrap()
                .status()
                .as_u16()
        })
        .collect();
    assert!(statuses.contains(&502), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
}

#[test]
fn a_proxy_wasm_routing_choice_reaches_a_component_route() {
    let origins: Vec<Proc> = ["rt-a", "rt-b", "rt-c"].into_iter().map(origin).collect();
    let (a, b, c) = (origins[0].addr, origins[1].addr, origins[2].addr);
    // The routing filter (Proxy-Wasm) picks pool `b` for `?backend=b`, and the ring pool
    // keyed by `x-shard` for `/shard`; the route then runs a component middleware.
    let router = r#"{ default = { pool = "a" }, rules = [
  { name = "query", match = { path_prefix = "/echo", query = { backend = "b" } }, pool = "b" },
  { name = "shard", match = { path_prefix = "/shard" }, pool = "ring", hash_key = { header = "x-shard" }, rewrite = { path_prefix = "/echo" } },
] }"#;
    let policy = format!(
        "[pools.a]\npeers = [\"{a}\"]\n[pools.b]\npeers = [\"{b}\"]\n\
         [pools.ring]\npeers = [\"{a}\", \"{b}\", \"{c}\"]\nbalance = \"consistent_hash\"\n\
         [filters.router]\nmodule = {}\nconfig = {router}\n\
         {}\
         [[routes]]\nfilters = [\"router\", \"add\"]\npool = \"a\"\n",
        module("router.wasm"),
        component_filter("add", "add_header", ""),
    );
    let s = sluice_with_server(&policy, ENABLE);
    let origin_of = |req: reqwest::blocking::RequestBuilder| {
        let r = req.send().unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-component-response"], "add-header");
        r.headers()["x-origin-id"].to_str().unwrap().to_string()
    };
    assert_eq!(origin_of(client().get(s.url("/echo"))), "rt-a");
    assert_eq!(origin_of(client().get(s.url("/echo?backend=b"))), "rt-b");
    // The filter's hash key keeps each key on one peer of the ring, and spreads keys.
    let mut seen = std::collections::HashSet::new();
    for k in 0..24 {
        let key = format!("shard-{k}");
        let first = origin_of(client().get(s.url("/shard")).header("x-shard", &key));
        for _ in 0..3 {
            let again = origin_of(client().get(s.url("/shard")).header("x-shard", &key));
            assert_eq!(again, first, "{key} moved");
        }
        seen.insert(first);
    }
    assert!(seen.len() >= 2, "24 keys on one peer of three: {seen:?}");
}
