//! `sluice:edge` (issue #21): the optional Sluice imports of a component guest. The
//! `edge_info` edge function (filters/components/edge_info) echoes what
//! `sluice:edge/request-info` returns; a real listener, a real client, a real TLS handshake.

use std::collections::HashSet;
use std::time::Duration;

use crate::support::*;

/// `[server]` key that enables component filters.
const ENABLE: &str = "component_model = true\n";

/// `[filters.NAME]` of a built component with extra keys.
fn component_filter(name: &str, file: &str, extra: &str) -> String {
    format!(
        "[filters.{name}]\nkind = \"component\"\nmodule = {}\n{extra}",
        module(&format!("components/{file}.wasm"))
    )
}

/// A response header as text.
fn header(r: &reqwest::blocking::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

/// `GET /` with `host` on `s`.
fn get(s: &Sluice, host: &str) -> reqwest::blocking::Response {
    let r = client()
        .get(s.url("/"))
        .header("host", host)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{host}");
    r
}

#[test]
fn edge_info_sees_the_request_it_serves_and_portable_components_run_beside_it() {
    let policy = format!(
        "{}{}{}\
         [[routes]]\nname = \"direct\"\nhost = \"a.test\"\nfunction = \"info\"\n\
         [[routes]]\nname = \"behind-middleware\"\nhost = \"b.test\"\nfilters = [\"add\"]\nfunction = \"info\"\n\
         [[routes]]\nname = \"portable\"\nhost = \"c.test\"\nfunction = \"hello\"\n",
        component_filter("info", "edge_info", ""),
        component_filter("add", "add_header", ""),
        component_filter("hello", "hello", ""),
    );
    let s = sluice_with_server(&policy, ENABLE);
    let mut ids = HashSet::new();
    for (host, route) in [("a.test", "direct"), ("b.test", "behind-middleware")] {
        for _ in 0..3 {
            let r = get(&s, host);
            assert_eq!(header(&r, "x-edge-route").as_deref(), Some(route));
            assert_eq!(header(&r, "x-edge-client").as_deref(), Some("127.0.0.1"));
            assert_eq!(header(&r, "x-edge-protocol").as_deref(), Some("HTTP/1.1"));
            assert_eq!(header(&r, "x-edge-sni"), None, "cleartext has no SNI");
            // The id Sluice set is the `x-request-id` the guest (as an origin would)
            // received, a new one per request.
            let id = header(&r, "x-edge-request-id").unwrap();
            assert_eq!(header(&r, "x-seen-request-id").as_deref(), Some(&*id));
            assert_eq!(id.len(), 36, "{id}");
            assert!(ids.insert(id));
            // Fresh instances (the default).
            assert_eq!(header(&r, "x-edge-served").as_deref(), Some("1"));
            if host == "b.test" {
                assert_eq!(
                    header(&r, "x-component-response").as_deref(),
                    Some("add-header")
                );
            }
            assert!(r.text().unwrap().ends_with("stable: true\n"));
        }
    }
    // A portable component (only wasi:* imports) beside it, unchanged.
    let r = get(&s, "c.test");
    assert_eq!(header(&r, "x-edge-function").as_deref(), Some("hello"));
    assert_eq!(r.text().unwrap(), "hello from a component: GET /\n");
}

#[test]
fn a_reused_instance_gives_each_request_its_own_values() {
    let policy = format!(
        "{}{}\
         [[routes]]\nname = \"first\"\nhost = \"a.test\"\nfilters = [\"add\"]\nfunction = \"info\"\n",
        component_filter(
            "info",
            "edge_info",
            "reuse_requests = 1000\nreuse_concurrency = 1\n"
        ),
        component_filter(
            "add",
            "add_header",
            "reuse_requests = 1000\nreuse_concurrency = 4\n"
        ),
    );
    let s = sluice_with_server(&policy, ENABLE);
    let mut ids = HashSet::new();
    let mut served = Vec::new();
    for i in 0..8 {
        // Half the requests bring their own id (untrusted: replaced), so ids differ
        // however they come.
        let mut req = client().get(s.url("/")).header("host", "a.test");
        if i % 2 == 0 {
            req = req.header("x-request-id", "forged-by-the-client");
        }
        let r = req.send().unwrap();
        assert_eq!(r.status(), 200);
        let id = header(&r, "x-edge-request-id").unwrap();
        assert_ne!(id, "forged-by-the-client");
        assert_eq!(header(&r, "x-seen-request-id").as_deref(), Some(&*id));
        assert!(
            ids.insert(id.clone()),
            "request {i} saw an earlier request's id {id}"
        );
        served.push(header(&r, "x-edge-served").unwrap().parse::<u64>().unwrap());
        // The facts read after the response left are still this request's.
        assert!(r.text().unwrap().ends_with("stable: true\n"));
    }
    // One instance served them all, one after another.
    assert_eq!(served, (1..=8).collect::<Vec<_>>());
}

#[test]
fn concurrent_requests_on_a_reusing_chain_keep_their_own_values() {
    // The middleware in front reuses its instance 8 requests at a time: the facts it
    // hands on are each request's own; the function runs fresh per request.
    let policy = format!(
        "{}{}\
         [[routes]]\nname = \"busy\"\nhost = \"a.test\"\nfilters = [\"add\"]\nfunction = \"info\"\n",
        component_filter("info", "edge_info", ""),
        component_filter("add", "add_header", "reuse_requests = 100000\nreuse_concurrency = 8\n"),
    );
    let s = sluice_with_server(&policy, ENABLE);
    let url = s.url("/");
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let c = client();
                for _ in 0..25 {
                    let r = c.get(&url).header("host", "a.test").send().unwrap();
                    assert_eq!(r.status(), 200);
                    let id = header(&r, "x-edge-request-id").unwrap();
                    assert_eq!(header(&r, "x-seen-request-id").as_deref(), Some(&*id));
                    assert!(r.text().unwrap().ends_with("stable: true\n"));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn an_edge_import_with_reuse_concurrency_above_one_is_a_policy_error() {
    let text = format!(
        "[server]\n{ENABLE}{}[[routes]]\nfunction = \"info\"\n",
        component_filter(
            "info",
            "edge_info",
            "reuse_requests = 100\nreuse_concurrency = 2\n"
        )
    );
    let (out, path, _dir) = check(&text);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("{}:5:", path.display()))
            && err.contains("sluice:edge/request-info@0.1.0")
            && err.contains("reuse_concurrency = 1"),
        "{err}"
    );
    // Serial reuse is accepted.
    let text = text.replace("reuse_concurrency = 2", "reuse_concurrency = 1");
    let (out, _path, _dir) = check(&text);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn edge_info_reports_the_sni_of_a_tls_request() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    pki.leaf(dir.path(), "e", &["edge.test"]);
    let (_s, tls) = sluice_ports(
        dir,
        1,
        |t| {
            format!(
                "[tls]\nlisten = [\"{}\"]\n\
                 [[tls.certificates]]\ncert = \"e.pem\"\nkey = \"e.key\"\n\
                 {}[[routes]]\nname = \"secure\"\nfunction = \"info\"\n",
                t[0],
                component_filter("info", "edge_info", "")
            )
        },
        &Opts {
            server_extra: ENABLE,
            ..Opts::default()
        },
    );
    let tls = tls[0];
    let c = reqwest::blocking::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .resolve("edge.test", tls)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let r = c
        .get(format!("https://edge.test:{}/", tls.port()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-edge-sni").as_deref(), Some("edge.test"));
    assert_eq!(header(&r, "x-edge-route").as_deref(), Some("secure"));
    assert_eq!(header(&r, "x-edge-client").as_deref(), Some("127.0.0.1"));
}

/// `GET /echo` with `host` and the `steer` headers; (status, origin id or the
/// `x-steer-error`, `x-steer-choice`).
fn steer_get(s: &Sluice, host: &str, headers: &[(&str, &str)]) -> (u16, String, Option<String>) {
    let mut req = client().get(s.url("/echo")).header("host", host);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let r = req.send().unwrap();
    let status = r.status().as_u16();
    let choice = header(&r, "x-steer-choice");
    let at = header(&r, "x-origin-id")
        .or_else(|| header(&r, "x-steer-error"))
        .unwrap_or_default();
    (status, at, choice)
}

#[test]
fn steer_sends_its_request_to_the_pool_it_names_and_only_that_request() {
    // Pool a is the route's; steer (one instance reused for every request) sends a
    // request with `x-steer-pool: b` to pool b; the next request, without the header,
    // goes to a again. Behind another middleware (add), the choice still holds.
    let a = origin("steer-a");
    let b = origin("steer-b");
    let outside = origin("steer-outside");
    let policy = format!(
        "[pools.a]\npeers = [\"{}\"]\n[pools.b]\npeers = [\"{}\"]\n{}{}\
         [[routes]]\nname = \"steered\"\nhost = \"a.test\"\nfilters = [\"steer\"]\npool = \"a\"\n\
         [[routes]]\nname = \"steered-then-added\"\nhost = \"b.test\"\nfilters = [\"steer\", \"add\"]\npool = \"a\"\n\
         [[routes]]\nname = \"steered-then-failed-open\"\nhost = \"c.test\"\nfilters = [\"steer\", \"crash\"]\npool = \"a\"\n{}",
        a.addr,
        b.addr,
        component_filter(
            "steer",
            "steer",
            "reuse_requests = 1000\nreuse_concurrency = 1\n"
        ),
        component_filter("add", "add_header", "reuse_requests = 1000\nreuse_concurrency = 4\n"),
        component_filter("crash", "hostile", "callback_ms = 50\non_failure = \"fail_open\"\n"),
    );
    let s = sluice_with_server(&policy, ENABLE);
    // A middleware after steer that traps and fails open: the retry past it keeps the
    // choice (and only its request's).
    for round in 0..3 {
        let trap = |headers: &[(&str, &str)]| {
            let mut req = client().get(s.url("/trap")).header("host", "c.test");
            for (n, v) in headers {
                req = req.header(*n, *v);
            }
            // The demo origin has no `/trap` (404): it answered, that is the point.
            let r = req.send().unwrap();
            assert_eq!(r.status(), 404, "{round}");
            header(&r, "x-origin-id").unwrap()
        };
        assert_eq!(trap(&[("x-steer-pool", "b")]), "steer-b", "{round}");
        assert_eq!(trap(&[]), "steer-a", "{round}");
    }
    for host in ["a.test", "b.test"] {
        for round in 0..3 {
            let to_b = steer_get(&s, host, &[("x-steer-pool", "b")]);
            assert_eq!(
                to_b,
                (200, "steer-b".into(), Some("b -".into())),
                "{host} {round}"
            );
            let plain = steer_get(&s, host, &[]);
            assert_eq!(
                plain,
                (200, "steer-a".into(), Some("- -".into())),
                "{host} {round}"
            );
            let to_a = steer_get(&s, host, &[("x-steer-pool", "a")]);
            assert_eq!(to_a.1, "steer-a", "{host} {round}");
        }
    }
    // A name that is no pool of the policy (not a peer's address, not a host name):
    // the guest gets `destination-not-found` from `handle`; nothing outside is reached.
    let outside_addr = outside.addr.to_string();
    for name in [
        "nope",
        outside_addr.as_str(),
        "localhost",
        "A",
        "a.b",
        "b/",
        "",
    ] {
        let (status, at, _) = steer_get(&s, "a.test", &[("x-steer-pool", name)]);
        assert_eq!(
            (status, at.as_str()),
            (502, "destination-not-found"),
            "pool name {name:?}"
        );
    }
    // And the next request on the same instance goes to the route's pool.
    assert_eq!(steer_get(&s, "a.test", &[]).1, "steer-a");
}

#[test]
fn steer_hash_key_keeps_a_key_on_one_peer_of_a_consistent_hash_pool() {
    // Pool h picks by `x-user`; steer's `x-steer-key` overrides it: one steer key stays
    // on one peer whatever `x-user` says, and sixteen steer keys spread over both.
    let h1 = origin("steer-h1");
    let h2 = origin("steer-h2");
    let a = origin("steer-route");
    let policy = format!(
        "[pools.a]\npeers = [\"{}\"]\n\
         [pools.h]\npeers = [\"{}\", \"{}\"]\nbalance = \"consistent_hash\"\nhash_key = \"header:x-user\"\n{}\
         [[routes]]\nhost = \"a.test\"\nfilters = [\"steer\"]\npool = \"a\"\n\
         [[routes]]\nhost = \"h.test\"\nfilters = [\"steer\"]\npool = \"h\"\n",
        a.addr,
        h1.addr,
        h2.addr,
        component_filter("steer", "steer", "reuse_requests = 1000\n"),
    );
    let s = sluice_with_server(&policy, ENABLE);
    let mut seen = HashSet::new();
    for key in 0..16 {
        let key = format!("k{key}");
        let mut peers = HashSet::new();
        for user in 0..6 {
            let user = format!("u{user}");
            // Chosen pool h from route a, and h as the route's own pool.
            for (host, pool) in [("a.test", Some("h")), ("h.test", None)] {
                let mut hs = vec![("x-steer-key", key.as_str()), ("x-user", user.as_str())];
                if let Some(p) = pool {
                    hs.push(("x-steer-pool", p));
                }
                let (status, at, _) = steer_get(&s, host, &hs);
                assert_eq!(status, 200);
                peers.insert(at);
            }
        }
        assert_eq!(peers.len(), 1, "key {key} moved: {peers:?}");
        seen.extend(peers);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    // Without a steer key the pool's own key (x-user) picks again: users spread.
    let users: HashSet<String> = (0..16)
        .map(|u| steer_get(&s, "h.test", &[("x-user", &format!("u{u}"))]).1)
        .collect();
    assert_eq!(users.len(), 2, "{users:?}");
}
