//! Hardening tests: operations (issue #15, items 5(c) and 6): the policy watch never
//! swaps in a half-written file, the admin API refuses cross-origin and rebinding
//! requests, debug headers are opt-in and never reach the origin, and the on-disk
//! module cache refuses a directory others can write.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use crate::support::*;

/// One raw HTTP/1.1 request to `addr` (exactly these bytes, as a browser would send
/// them); the status code and the whole response.
fn raw(addr: SocketAddr, request: &str) -> (u16, String) {
    let (code, out) = exchange(addr, request.as_bytes());
    (code, String::from_utf8_lossy(&out).into_owned())
}

fn generation(s: &Sluice) -> u64 {
    s.status()["generation"].as_u64().unwrap()
}

fn route(name: &str, prefix: &str) -> String {
    format!("[[routes]]\nname = \"{name}\"\npath_prefix = \"{prefix}\"\npool = \"o\"\n")
}

/// A Sluice at generation 2 (one reload done), so that a rollback has somewhere to go.
fn sluice_at_generation_2(o: &Proc) -> Sluice {
    let body = format!("[pools.o]\npeers = [\"{}\"]\n{}", o.addr, route("all", "/"));
    let s = sluice(&body);
    s.rewrite(&format!("{body}{}", route("extra", "/extra")));
    let r = client().post(s.admin_url("/admin/reload")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(generation(&s), 2);
    s
}

#[test]
fn watch_never_serves_a_policy_caught_half_written() {
    let o = origin("o");
    let pool = format!("[pools.o]\npeers = [\"{}\"]\n", o.addr);
    let s = sluice_with_server(
        &format!("{pool}{}", route("echo", "/echo")),
        "watch = true\n",
    );
    assert_eq!(client().get(s.url("/echo")).send().unwrap().status(), 200);
    // The writer stops at a table boundary for 1.2 s: what is on disk then is a valid
    // policy whose only route is /first, so /echo would answer 404 if it were served.
    let first = format!("{}{pool}{}", s.server, route("first", "/first"));
    let second = format!("{}{}", route("echo", "/echo"), route("extra", "/extra"));
    let writer = {
        let path = s.policy.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::File::create(&path).unwrap();
            f.write_all(first.as_bytes()).unwrap();
            f.sync_all().unwrap();
            // A half-written policy file for a while: the stimulus of this test.
            std::thread::sleep(Duration::from_millis(1200));
            f.write_all(second.as_bytes()).unwrap();
            f.sync_all().unwrap();
        })
    };
    let t = Instant::now();
    let mut echo_failures = Vec::new();
    loop {
        let code = client()
            .get(s.url("/echo"))
            .send()
            .unwrap()
            .status()
            .as_u16();
        if code != 200 {
            echo_failures.push((t.elapsed().as_millis(), code));
        }
        let st = s.status();
        let routes: Vec<&str> = st["routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_ne!(
            routes,
            ["first"],
            "the half-written policy was swapped in: {st}"
        );
        if st["generation"] == 2 {
            assert_eq!(routes, ["first", "echo", "extra"], "{st}");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the whole policy was never served: {st}"
        );
        // Samples /echo and the status while the file is half-written: each round
        // checks the half-written policy was never served, so this is not `until`.
        std::thread::sleep(Duration::from_millis(50));
    }
    writer.join().unwrap();
    assert!(
        echo_failures.is_empty(),
        "/echo failed during the write: {echo_failures:?}"
    );
    let st = s.status();
    assert_eq!(
        st["swaps"]["successes"], 1,
        "one swap, of the whole file: {st}"
    );
    assert_eq!(client().get(s.url("/echo")).send().unwrap().status(), 200);
}

#[test]
fn cross_origin_rollback_is_refused() {
    let o = origin("o");
    let s = sluice_at_generation_2(&o);
    let host = s.admin.to_string();
    // What a page on another site makes the browser send: fetch() with no-cors, and a
    // plain HTML form (which old browsers sent without Origin).
    let attacks = [
        format!("POST /admin/rollback HTTP/1.1\r\nHost: {host}\r\nOrigin: http://evil.example\r\nSec-Fetch-Site: cross-site\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        format!("POST /admin/rollback HTTP/1.1\r\nHost: {host}\r\nOrigin: http://evil.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        format!("POST /admin/rollback HTTP/1.1\r\nHost: {host}\r\nOrigin: null\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        format!("POST /admin/rollback HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 3\r\nConnection: close\r\n\r\na=b"),
        format!("POST /admin/rollback HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    ];
    for a in &attacks {
        let (code, resp) = raw(s.admin, a);
        assert_eq!(code, 403, "{a}\n->\n{resp}");
        assert_eq!(generation(&s), 2, "rolled back by {a}");
    }
    assert_eq!(
        metric(&s, "sluice_admin_refusals_total{reason=\"origin\"}"),
        3.0
    );
    assert_eq!(
        metric(&s, "sluice_admin_refusals_total{reason=\"content_type\"}"),
        2.0
    );
    // Same origin, and tools that send no Origin (curl -X POST), still work.
    let same = format!("POST /admin/rollback HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\nSec-Fetch-Site: same-origin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    assert_eq!(raw(s.admin, &same).0, 200);
    assert_eq!(generation(&s), 1);
}

#[test]
fn dns_rebinding_host_is_refused() {
    let o = origin("o");
    let s = sluice_at_generation_2(&o);
    let port = s.admin.port();
    // After rebinding, evil.example resolves to 127.0.0.1: the browser connects to the
    // admin port and sends the attacker's name as Host (and as a same-origin Origin).
    for (method, path) in [
        ("GET", "/admin/status"),
        ("GET", "/metrics"),
        ("POST", "/admin/rollback"),
        ("POST", "/admin/reload"),
    ] {
        let req = format!("{method} {path} HTTP/1.1\r\nHost: evil.example:{port}\r\nOrigin: http://evil.example:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let (code, resp) = raw(s.admin, &req);
        assert_eq!(code, 403, "{req}\n->\n{resp}");
        assert!(!resp.contains("generation"), "{resp}");
    }
    assert_eq!(generation(&s), 2);
    assert_eq!(s.status()["swaps"]["successes"], 1);
    assert_eq!(
        metric(&s, "sluice_admin_refusals_total{reason=\"host\"}"),
        4.0
    );
    // Health checks stay open; the admin's own names work.
    let health = "GET /healthz HTTP/1.1\r\nHost: lb.example\r\nConnection: close\r\n\r\n";
    assert_eq!(raw(s.admin, health).0, 200);
    for host in [format!("localhost:{port}"), s.admin.to_string()] {
        let req =
            format!("GET /admin/status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        assert_eq!(raw(s.admin, &req).0, 200, "{host}");
    }
}

#[test]
fn debug_header_is_ignored_by_default_and_never_reaches_the_origin() {
    let o = origin("o");
    let body = format!("[pools.o]\npeers = [\"{}\"]\n{}", o.addr, route("all", "/"));
    let ask = |s: &Sluice| {
        let r = client()
            .get(s.url("/echo"))
            .header("x-sluice-debug", "1")
            .send()
            .unwrap();
        let generation = r.headers().get("x-sluice-generation").cloned();
        let hash = r.headers().get("x-sluice-policy-hash").cloned();
        let echo: serde_json::Value = r.json().unwrap();
        (generation, hash, echo_header(&echo, "x-sluice-debug"))
    };
    let s = sluice(&body);
    let (generation, hash, upstream) = ask(&s);
    assert_eq!(generation, None, "generation revealed to any client");
    assert_eq!(hash, None, "policy hash revealed to any client");
    assert_eq!(upstream, None, "x-sluice-debug forwarded to the origin");
    let s = sluice_with_server(&body, "debug_headers = true\n");
    let (generation, hash, upstream) = ask(&s);
    assert_eq!(generation.unwrap(), "1");
    assert!(hash.is_some());
    assert_eq!(upstream, None, "x-sluice-debug forwarded to the origin");
}

#[test]
fn module_cache_directory_others_can_write_is_refused() {
    let o = origin("o");
    let body = one_filter(&o, "h", &module("headers.wasm"), "");
    let tmp = tempfile::tempdir().unwrap();
    // A missing cache directory is created (0700, checked at the end).
    let cache = tmp.path().join("cache/sluice");
    let env = [("SLUICE_CACHE_DIR", cache.to_str().unwrap())];
    let first = sluice_with_env(&body, &env);
    assert_eq!(first.status()["modules"]["compiled"], 1);
    drop(first);
    let created = std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777;
    // Anyone could now replace the native code in it: it must not be loaded.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let second = sluice_with_env(&body, &env);
    let st = second.status();
    assert_eq!(st["modules"]["from_disk_cache"], 0, "{st}");
    assert_eq!(st["modules"]["compiled"], 1, "{st}");
    assert_eq!(st["modules"]["cache_refusals"], 1, "{st}");
    assert_eq!(metric(&second, "sluice_module_cache_refusals_total"), 1.0);
    assert!(
        second.log().contains("module cache refused"),
        "{}",
        second.log()
    );
    assert_eq!(
        client().get(second.url("/echo")).send().unwrap().status(),
        200
    );
    drop(second);
    // An entry others can write is refused as well, in a directory that is fine.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
    for e in std::fs::read_dir(&cache).unwrap() {
        let p = e.unwrap().path();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    let third = sluice_with_env(&body, &env);
    let st = third.status();
    assert_eq!(st["modules"]["from_disk_cache"], 0, "{st}");
    assert_eq!(st["modules"]["cache_refusals"], 1, "{st}");
    assert_eq!(created, 0o700, "cache directory created {created:o}");
}
