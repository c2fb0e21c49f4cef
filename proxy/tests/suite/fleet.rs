//! State shared by the fleet (issue #20, part 2): a real `redis-server` started here on
//! a loopback port (no persistence), two Sluice nodes sharing it through `[fleet]`, and
//! `filters/ratelimit` counting on it. Requirement name: `redis-server`
//! (scripts/setup.sh installs it).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// A Redis on a loopback port (also used by `components_fleet`).
pub(crate) struct Redis {
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
    pub(crate) fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Kills it (SIGKILL: an outage, not a shutdown).
    pub(crate) fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port (empty: no persistence).
    pub(crate) fn start(&mut self) {
        self.child = redis_cmd(self.dir.path(), self.addr)
            .spawn()
            .expect("redis-server");
        wait_port(self.addr);
    }
}

/// A fresh Redis, or `None` when `redis-server` is missing and the skip is allowed
/// (`SLUICE_TEST_ALLOW_SKIP=redis-server`; else the test fails).
pub(crate) fn redis() -> Option<Redis> {
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

/// A WAF with CRS 3's initialisation and DoS protection (901, 912) and thresholds low
/// enough for a test: two bursts of 3 counted requests within 60 s block the client for
/// 600 s.
fn dos_policy(origin: &Proc, redis: &str) -> String {
    const SETUP: &str = r#"SecAction "id:900700,phase:1,nolog,pass,t:none,setvar:tx.dos_burst_time_slice=60,setvar:tx.dos_counter_threshold=3,setvar:tx.dos_block_timeout=600""#;
    let crs = "/usr/share/modsecurity-crs/rules";
    format!(
        r#"[fleet]
redis = "{redis}"
timeout_ms = 200
backoff_ms = 100
collections_flush_ms = 50
collections_refresh_ms = 200

[limits]
startup_ms = 60000

[pools.o]
peers = ["{origin}"]

[filters.waf]
module = {module}
files = ["/etc/modsecurity/crs/crs-setup.conf", "{crs}/REQUEST-901-INITIALIZATION.conf", "{crs}/REQUEST-912-DOS-PROTECTION.conf"]
config = {{ rules = ["/etc/modsecurity/crs/crs-setup.conf", "/sluice/dos-setup.conf", "{crs}/REQUEST-901-INITIALIZATION.conf", "{crs}/REQUEST-912-DOS-PROTECTION.conf"], data = {{ "/sluice/dos-setup.conf" = '{SETUP}' }}, mode = "block", status = 403 }}

[[routes]]
name = "all"
path_prefix = "/"
filters = ["waf"]
pool = "o"
"#,
        origin = origin.addr,
        module = module("waf.wasm"),
    )
}

fn as_client(s: &Sluice, path: &str, agent: &str) -> u16 {
    client()
        .get(s.url(path))
        .header("user-agent", agent)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn a_client_the_waf_blocked_on_node_a_is_blocked_on_node_b() {
    if !require(
        "crs",
        "/usr/share/modsecurity-crs/rules/REQUEST-912-DOS-PROTECTION.conf",
    ) {
        return;
    }
    let Some(mut redis) = redis() else { return };
    let origin = origin("fleet-waf");
    let body = dos_policy(&origin, &redis.url());
    let (a, b) = (sluice(&body), sluice(&body));
    // CRS keys the IP collection by address and User-Agent: every client here is
    // 127.0.0.1, the agent tells them apart.
    for i in 0..6 {
        assert_eq!(
            as_client(&a, "/echo/api", "mallory"),
            200,
            "request {i} on A"
        );
    }
    // A counted two bursts at the end of the sixth request: A refuses the next one at once.
    assert_eq!(as_client(&a, "/echo/api", "mallory"), 403);
    // B has never seen this client; A's change reaches Redis within its flush period, and
    // B loads the record on the client's first request there.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        as_client(&b, "/echo/api", "mallory"),
        403,
        "B must refuse at once"
    );
    assert_eq!(
        as_client(&b, "/echo/api", "alice"),
        200,
        "another client is served"
    );
    assert!(metric(&a, r#"sluice_fleet_calls_total{op="flush",result="ok"}"#) >= 1.0);
    assert!(metric(&b, r#"sluice_fleet_calls_total{op="load",result="ok"}"#) >= 1.0);
    // Counts add up across nodes: two bursts of 3, counted alternately on A and B (each
    // node sees 3 requests); the sixth (on B) sets the block, and both nodes refuse.
    for (i, node) in [&a, &b, &a, &b, &a, &b].iter().enumerate() {
        assert_eq!(as_client(node, "/echo/api", "eve"), 200, "eve {i}");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(as_client(&a, "/echo/api", "eve"), 403, "A refuses eve");
    assert_eq!(as_client(&b, "/echo/api", "eve"), 403, "B refuses eve");
    // Redis down: each node keeps its own copy and decides at once, no request waits
    // more than the store's timeout.
    redis.stop();
    let t = Instant::now();
    assert_eq!(as_client(&a, "/echo/api", "mallory"), 403);
    assert_eq!(as_client(&b, "/echo/api", "trent"), 200);
    assert_eq!(as_client(&b, "/echo/api", "trent"), 200);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

/// One `x-kv` operation through `filters/fleetkv` on `path`: the filter's answer.
fn kv(s: &Sluice, path: &str, line: &str) -> String {
    let r = client()
        .get(s.url(path))
        .header("x-kv", line)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{line}");
    r.text().unwrap()
}

#[test]
fn get_set_and_cas_from_a_guest_are_shared_by_nodes_and_scoped_per_filter() {
    let Some(redis) = redis() else { return };
    let origin = origin("fleet-kv");
    let body = format!(
        "[fleet]\nredis = \"{}\"\ntimeout_ms = 200\n[pools.o]\npeers = [\"{}\"]\n\
         [filters.kv1]\nmodule = {m}\n[filters.kv2]\nmodule = {m}\n\
         [[routes]]\nname = \"one\"\npath_prefix = \"/one/\"\nfilters = [\"kv1\"]\npool = \"o\"\n\
         [[routes]]\nname = \"two\"\npath_prefix = \"/two/\"\nfilters = [\"kv2\"]\npool = \"o\"\n",
        redis.url(),
        origin.addr,
        m = module("fleetkv.wasm"),
    );
    let (a, b) = (sluice(&body), sluice(&body));
    assert_eq!(kv(&a, "/one/", "get color"), "absent");
    assert_eq!(kv(&a, "/one/", "set color 0 blue"), "done");
    // Another node sees it; another filter (vm_id) has its own keys.
    assert_eq!(kv(&b, "/one/", "get color"), "found blue");
    assert_eq!(kv(&b, "/two/", "get color"), "absent");
    // Compare-and-set: a wrong expectation changes nothing; the right one swaps; "absent"
    // only when there is none.
    assert_eq!(kv(&b, "/one/", "cas color red green"), "swapped 0");
    assert_eq!(kv(&a, "/one/", "cas color blue green"), "swapped 1");
    assert_eq!(kv(&b, "/one/", "get color"), "found green");
    assert_eq!(kv(&a, "/one/", "cas color - x"), "swapped 0");
    assert_eq!(kv(&a, "/two/", "cas color - x"), "swapped 1");
    // A TTL ends the value.
    assert_eq!(kv(&a, "/one/", "set short 300 soon-gone"), "done");
    assert_eq!(kv(&b, "/one/", "get short"), "found soon-gone");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(kv(&b, "/one/", "get short"), "absent");
    // Limits hold at the start: a key over 1,024 bytes is refused, not sent.
    let long = "k".repeat(1025);
    assert_eq!(
        kv(&a, "/one/", &format!("get {long}")),
        "refused BadArgument"
    );
    // Redis gone: the filter hears it (error, then unavailable while backing off).
    drop(redis);
    let r = kv(&a, "/one/", "get color");
    assert!(r.starts_with("failed "), "{r}");
    assert!(metric(&a, r#"sluice_fleet_calls_total{op="cas",result="ok"}"#) >= 2.0);
}
