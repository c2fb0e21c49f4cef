//! State shared by the fleet (issue #20, part 2): a real `redis-server` started here on
//! a loopback port (no persistence), two Sluice nodes sharing it through `[fleet]`, and
//! `filters/ratelimit` counting on it. Requirement name: `redis-server`
//! (scripts/setup.sh installs it).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// A Redis on a loopback port.
struct Redis {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn redis_cmd(dir: &std::path::Path, addr: SocketAddr) -> Command {
    let mut c = Command::new("redis-server");
    c.args(["--bind", "127.0.0.1", "--port"])
        .arg(addr.port().to_string())
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(std::fs::File::create(dir.join("redis.log")).unwrap())
        .stderr(Stdio::null());
    c
}

impl Redis {
    fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Kills it (SIGKILL: an outage, not a shutdown).
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port (empty: no persistence).
    fn start(&mut self) {
        self.child = redis_cmd(self.dir.path(), self.addr)
            .spawn()
            .expect("redis-server");
        wait_port(self.addr);
    }
}

fn redis() -> Option<Redis> {
    if !require("redis-server", "redis-server") {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let (child, addrs) = spawn_on_fresh_ports(1, "redis-server", |addrs| {
        let child = redis_cmd(dir.path(), addrs[0])
            .spawn()
            .expect("redis-server");
        (child, dir.path().join("redis.log"))
    });
    Some(Redis {
        child,
        addr: addrs[0],
        dir,
    })
}

/// A policy body: `[fleet]` on `redis` (if any), pool `o`, and one route per
/// `(path prefix, ratelimit config)`, each through its own ratelimit filter.
fn policy(origin: &Proc, redis: Option<&str>, routes: &[(&str, &str)]) -> String {
    let mut p = String::new();
    if let Some(url) = redis {
        p += &format!("[fleet]\nredis = \"{url}\"\ntimeout_ms = 200\nbackoff_ms = 100\n");
    }
    p += &format!("[pools.o]\npeers = [\"{}\"]\n", origin.addr);
    for (i, (_, config)) in routes.iter().enumerate() {
        p += &format!(
            "[filters.rl{i}]\nmodule = {}\nconfig = {config}\n",
            module("ratelimit.wasm")
        );
    }
    for (i, (prefix, _)) in routes.iter().enumerate() {
        p += &format!(
            "[[routes]]\nname = \"r{i}\"\npath_prefix = \"{prefix}\"\nfilters = [\"rl{i}\"]\npool = \"o\"\n"
        );
    }
    p
}

/// One request with `x-user: user`; status and headers.
fn hit(s: &Sluice, path: &str, user: &str) -> (u16, reqwest::header::HeaderMap) {
    let r = client()
        .get(s.url(path))
        .header("x-user", user)
        .send()
        .unwrap();
    (r.status().as_u16(), r.headers().clone())
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// A rule that applies to no request (no fleet call).
const UNUSED: &str = r#"{ rules = [{ name = "n", key = ["ip"], limit = 1, window_s = 60, path_prefix = "/nothing" }] }"#;

const PER_USER: &str =
    r#"{ rules = [{ name = "user", key = ["header:x-user"], limit = 10, window_s = 60 }] }"#;

#[test]
fn two_nodes_share_a_limit_of_ten_per_minute() {
    let Some(redis) = redis() else { return };
    let origin = origin("fleet");
    let body = policy(&origin, Some(&redis.url()), &[("/", PER_USER)]);
    let (a, b) = (sluice(&body), sluice(&body));
    let mut codes = Vec::new();
    for i in 0..16 {
        let node = if i % 2 == 0 { &a } else { &b };
        let (code, h) = hit(node, "/echo/x", "alice");
        if code == 200 {
            assert_eq!(header(&h, "ratelimit-limit"), "10");
            assert_eq!(
                header(&h, "ratelimit-remaining"),
                (9 - codes.len()).to_string(),
                "request {i}"
            );
            let reset: u64 = header(&h, "ratelimit-reset").parse().unwrap();
            assert!((1..=60).contains(&reset), "{reset}");
        } else {
            assert_eq!(code, 429, "request {i}");
            assert_eq!(header(&h, "ratelimit-remaining"), "0");
            let retry: u64 = header(&h, "retry-after").parse().unwrap();
            assert!((1..=60).contains(&retry), "{retry}");
        }
        codes.push(code);
    }
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 10, "{codes:?}");
    assert_eq!(codes[..10], [200; 10], "{codes:?}");
    // Another key has its own count, on both nodes.
    assert_eq!(hit(&a, "/echo/x", "bob").0, 200);
    assert_eq!(hit(&b, "/echo/x", "bob").0, 200);
    // Both nodes went to Redis; a node that saw the key over its limit answers it
    // from its cache (no round trip).
    for n in [&a, &b] {
        assert!(metric(n, r#"sluice_fleet_calls_total{op="incr",result="ok"}"#) >= 5.0);
    }
    for _ in 0..5 {
        assert_eq!(hit(&a, "/echo/x", "alice").0, 429);
    }
    assert!(metric(&a, r#"sluice_fleet_calls_total{op="incr",result="cached"}"#) >= 5.0);
}

#[test]
fn sliding_windows_count_across_nodes_too() {
    let Some(redis) = redis() else { return };
    let origin = origin("fleet");
    let sliding = r#"{ rules = [{ name = "s", key = ["ip", "route"], limit = 5, window_s = 60, algorithm = "sliding" }] }"#;
    let body = policy(&origin, Some(&redis.url()), &[("/", sliding)]);
    let (a, b) = (sluice(&body), sluice(&body));
    let codes: Vec<u16> = (0..8)
        .map(|i| hit(if i % 2 == 0 { &a } else { &b }, "/echo/s", "x").0)
        .collect();
    assert_eq!(codes, [200, 200, 200, 200, 200, 429, 429, 429]);
}

#[test]
fn without_a_fleet_store_the_limit_is_per_node() {
    let origin = origin("fleet");
    let body = policy(&origin, None, &[("/", PER_USER)]);
    let a = sluice_threads(&body, 2);
    let codes: Vec<u16> = (0..13).map(|_| hit(&a, "/echo/l", "carol").0).collect();
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 10, "{codes:?}");
    assert_eq!(codes[10..], [429; 3]);
    let (_, h) = hit(&a, "/echo/l", "dave");
    assert_eq!(header(&h, "ratelimit-remaining"), "9");
}

#[test]
fn a_redis_outage_fails_open_or_closed_as_configured_and_recovers() {
    let Some(mut redis) = redis() else { return };
    let origin = origin("fleet");
    let open = r#"{ rules = [{ name = "o", key = ["header:x-user"], limit = 3, window_s = 60 }], fail = "open" }"#;
    let closed = r#"{ rules = [{ name = "c", key = ["header:x-user"], limit = 3, window_s = 60 }], fail = "closed" }"#;
    let body = policy(
        &origin,
        Some(&redis.url()),
        &[
            ("/echo/open", open),
            ("/echo/closed", closed),
            ("/", UNUSED),
        ],
    );
    let s = sluice(&body);
    assert_eq!(hit(&s, "/echo/open", "u").0, 200);
    assert_eq!(hit(&s, "/echo/closed", "u").0, 200);
    redis.stop();
    for _ in 0..10 {
        let t = Instant::now();
        assert_eq!(hit(&s, "/echo/open", "u").0, 200);
        assert_eq!(hit(&s, "/echo/closed", "u").0, 503);
        // No request waits longer than the call timeout (200 ms), with room for a slow box.
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "{:?}",
            t.elapsed()
        );
    }
    let failed = metric(&s, r#"sluice_fleet_calls_total{op="incr",result="error"}"#)
        + metric(
            &s,
            r#"sluice_fleet_calls_total{op="incr",result="timeout"}"#,
        );
    let skipped = metric(
        &s,
        r#"sluice_fleet_calls_total{op="incr",result="unavailable"}"#,
    );
    assert!(failed >= 1.0, "errors {failed}");
    assert!(
        failed + skipped >= 20.0,
        "errors {failed}, unavailable {skipped}"
    );
    // Other routes (no fleet calls) never wait on the outage.
    let t = Instant::now();
    assert_eq!(
        client().get(s.url("/echo/free")).send().unwrap().status(),
        200
    );
    assert!(t.elapsed() < Duration::from_millis(500));

    // Redis comes back (empty): counting resumes without restarting Sluice.
    redis.start();
    until(secs(20), "the fleet store answers again", || {
        hit(&s, "/echo/closed", "v").0 == 200
    });
    let codes: Vec<u16> = (0..4).map(|_| hit(&s, "/echo/closed", "w").0).collect();
    assert_eq!(codes, [200, 200, 200, 429]);
}

#[test]
fn hostile_keys_and_floods_cost_redis_little() {
    let Some(redis) = redis() else { return };
    let origin = origin("fleet");
    let body = policy(&origin, Some(&redis.url()), &[("/", PER_USER)]);
    let s = sluice(&body);
    // A huge key part is hashed: the key Redis holds stays short, and the limit holds.
    let huge = "k".repeat(6000);
    let codes: Vec<u16> = (0..12).map(|_| hit(&s, "/echo/h", &huge).0).collect();
    assert_eq!(codes.iter().filter(|c| **c == 429).count(), 2, "{codes:?}");
    // Many distinct keys: each counted on its own.
    for i in 0..300 {
        assert_eq!(hit(&s, "/echo/m", &format!("user-{i}")).0, 200);
    }
    // A flood from one key: after the tenth, answered from the over-limit cache.
    let before = metric(&s, r#"sluice_fleet_calls_total{op="incr",result="ok"}"#);
    let codes: Vec<u16> = (0..200).map(|_| hit(&s, "/echo/f", "flood").0).collect();
    assert_eq!(codes.iter().filter(|c| **c == 429).count(), 190);
    let round_trips = metric(&s, r#"sluice_fleet_calls_total{op="incr",result="ok"}"#) - before;
    assert!(round_trips <= 12.0, "{round_trips} round trips for a flood");
    assert!(metric(&s, r#"sluice_fleet_calls_total{op="incr",result="cached"}"#) >= 189.0);
    // Redis holds short keys only.
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p"])
        .arg(redis.addr.port().to_string())
        .args(["--scan", "--pattern", "sluice:*"])
        .output();
    if let Ok(out) = out {
        let keys = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(keys.lines().count() >= 302, "{}", keys.lines().count());
        assert!(keys.lines().all(|k| k.len() < 200), "a long key in Redis");
    }
}

#[test]
fn a_bad_fleet_section_is_refused_and_scope_fleet_needs_one() {
    let origin = origin("fleet");
    let base = policy(&origin, None, &[("/", PER_USER)]);
    for (fleet, want) in [
        ("[fleet]\nredis = \"rediss://127.0.0.1:1\"\n", "no TLS"),
        (
            "[fleet]\nredis = \"redis://127.0.0.1:1\"\ntimeout_ms = 0\n",
            "timeout_ms",
        ),
        (
            "[fleet]\nredis = \"redis://127.0.0.1:1\"\nbogus = 1\n",
            "bogus",
        ),
    ] {
        let (out, _, _dir) = check(&format!("{fleet}{base}"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "{fleet}: {err}"
        );
    }
    // A filter that insists on the fleet store fails to configure without one.
    let fleet_only =
        r#"{ rules = [{ name = "u", key = ["ip"], limit = 1, window_s = 1 }], scope = "fleet" }"#;
    let (out, _, _dir) = check(&policy(&origin, None, &[("/", fleet_only)]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("[fleet]"), "{err}");
    // With one (Redis need not be up to load the policy), it loads.
    let (out, _, _dir) = check(&policy(
        &origin,
        Some("redis://127.0.0.1:1"),
        &[("/", fleet_only)],
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
