//! `sluice ctl` against a running Sluice: status as a table and as JSON, tail of the
//! access and WAF logs with filters, diff before a reload, reload, rollback, and the
//! errors an operator sees when the admin listener is absent or the token is wrong.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{ctl, ctl_ok, two_routes};
use crate::support::*;

/// Runs `sluice ctl tail ARGS --count N --json` in the background while `traffic` is
/// sent (again and again, until the tail has its lines), and returns the lines.
fn tail_while(
    admin: std::net::SocketAddr,
    args: &[&str],
    n: usize,
    mut traffic: impl FnMut(),
) -> Vec<serde_json::Value> {
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["ctl", "--admin", &admin.to_string(), "tail", "--json"])
        .args(["--count", &n.to_string()])
        .args(args)
        .env_remove("SLUICE_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output().unwrap());
    let deadline = Instant::now() + secs(20);
    while !waiter.is_finished() {
        assert!(
            Instant::now() < deadline,
            "sluice ctl tail {args:?}: no {n} lines in 20 s"
        );
        traffic();
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = waiter.join().unwrap();
    assert!(
        out.status.success(),
        "tail {args:?} (pid {id}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn ctl_shows_status_tails_diffs_reloads_and_rolls_back() {
    let o = origin("ctl");
    let s = sluice(&two_routes(&o, 403));
    let c = client();
    for _ in 0..5 {
        assert_eq!(c.get(s.url("/echo/api/x")).send().unwrap().status(), 200);
        assert_eq!(c.get(s.url("/echo/page")).send().unwrap().status(), 200);
    }
    assert_eq!(c.get(s.url("/attack")).send().unwrap().status(), 403);

    // status: the table names the generation, both chains, the filters' phases.
    let table = ctl_ok(s.admin, &["status"]);
    println!("{table}");
    assert!(table.starts_with("generation 1  hash "), "{table}");
    for want in [
        "ROUTE",
        "api",
        "/api",
        "tag",
        "web",
        "waf",
        "FILTER",
        "PHASE",
        "P99",
        "request_headers",
        "POOL",
        "healthy",
    ] {
        assert!(table.contains(want), "{want} missing from:\n{table}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&ctl_ok(s.admin, &["status", "--json"])).unwrap();
    assert_eq!(json["generation"], 1);
    let tag = json["filters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "tag")
        .unwrap();
    assert!(
        tag["phases"]["request_headers"]["calls"].as_u64().unwrap() >= 5,
        "{tag}"
    );
    assert!(
        tag["phases"]["request_headers"]["p99_ms"]
            .as_f64()
            .is_some(),
        "{tag}"
    );
    assert_eq!(
        tag["phases"]["request_headers"]["calls"].as_f64().unwrap(),
        metric_with(
            &s,
            "sluice_filter_duration_seconds_count",
            "filter=\"tag\",phase=\"request_headers\""
        ),
        "the p99's count is /metrics' count"
    );

    // tail: the access log of one route and status class, the WAF's lines of one rule.
    let lines = tail_while(s.admin, &["--route", "api", "--status", "2xx"], 2, || {
        c.get(s.url("/echo/page")).send().unwrap();
        c.get(s.url("/echo/api/tailed")).send().unwrap();
    });
    assert_eq!(lines.len(), 2);
    for l in &lines {
        assert_eq!(
            (l["route"].as_str(), l["status"].as_u64()),
            (Some("api"), Some(200)),
            "{l}"
        );
        assert_eq!(l["path"], "/echo/api/tailed");
    }
    let lines = tail_while(s.admin, &["--log", "waf", "--rule", "1001"], 1, || {
        c.get(s.url("/attack-on-web")).send().unwrap();
    });
    let l = &lines[0];
    assert_eq!(l["action"], "block", "{l}");
    assert_eq!(
        (l["route"].as_str(), l["response_status"].as_u64()),
        (Some("web"), Some(403)),
        "{l}"
    );
    assert_eq!(l["path"], "/attack-on-web");
    assert_eq!(l["rules"][0]["id"], 1001);
    let out = ctl(s.admin, &["tail", "--rule", "1001"], &[]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--rule filters WAF lines: add --log waf")
    );

    // diff: a policy with another status for the WAF rule and a third route.
    let next = format!(
        "{}{}[[routes]]\nname = \"extra\"\npath_prefix = \"/extra\"\npool = \"o\"\n",
        s.server,
        two_routes(&o, 418)
    );
    let file = s.dir.path().join("next.toml");
    std::fs::write(&file, &next).unwrap();
    let diff = ctl_ok(s.admin, &["diff", "--policy", file.to_str().unwrap()]);
    println!("{diff}");
    assert!(diff.contains("routes:\n  + extra (added)"), "{diff}");
    assert!(
        diff.contains("filters:\n  ~ waf (changed)\n      config_sha256: "),
        "{diff}"
    );
    assert!(
        !diff.contains("tag"),
        "the unchanged filter is not listed: {diff}"
    );
    let changes: serde_json::Value = serde_json::from_str(&ctl_ok(
        s.admin,
        &["diff", "--policy", file.to_str().unwrap(), "--json"],
    ))
    .unwrap();
    assert_eq!(changes.as_array().unwrap().len(), 2, "{changes}");
    // The running policy's own file: nothing would change.
    let same = ctl_ok(s.admin, &["diff", "--policy", s.policy.to_str().unwrap()]);
    assert!(same.starts_with("no changes"), "{same}");
    // The same files named another way (a policy in another directory) are the same.
    let text = std::fs::read_to_string(&s.policy).unwrap();
    let other = s.dir.path().join("other.toml");
    std::fs::write(&other, text.replace("filters/out/", "filters/out/../out/")).unwrap();
    assert!(text.contains("filters/out/"));
    let same = ctl_ok(s.admin, &["diff", "--policy", other.to_str().unwrap()]);
    assert!(same.starts_with("no changes"), "{same}");

    // reload, then rollback, as the status shows them.
    std::fs::rename(&file, &s.policy).unwrap();
    let out = ctl_ok(s.admin, &["reload"]);
    assert!(out.starts_with("reloaded: generation 2"), "{out}");
    assert_eq!(c.get(s.url("/attack")).send().unwrap().status(), 418);
    assert!(ctl_ok(s.admin, &["status"]).contains("rollback to 1"));
    let out = ctl_ok(s.admin, &["rollback"]);
    assert!(out.starts_with("rolled back: generation 1"), "{out}");
    assert_eq!(c.get(s.url("/attack")).send().unwrap().status(), 403);
    let out = ctl(s.admin, &["rollback"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("409") && err.contains("no earlier snapshot"),
        "{err}"
    );
    // A policy that does not load: the diff says a reload would be refused.
    std::fs::write(&file, "[server]\nthreads = \"many\"\n").unwrap();
    let out = ctl(s.admin, &["diff", "--policy", file.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("would be refused"));
}

#[test]
fn ctl_says_when_no_admin_listens_or_the_token_is_wrong() {
    let dead: std::net::SocketAddr = DEAD_PEER.parse().unwrap();
    let out = ctl(dead, &["status"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!("sluice ctl: no admin listener at {dead} ("))
            && err.contains("is sluice running"),
        "{err}"
    );

    let o = origin("ctl-token");
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let extra = format!("admin_token_file = {:?}\n", token.display().to_string());
    let s = sluice_opts(
        dir,
        &format!(
            "[pools.p]\npeers = [\"{}\"]\n[[routes]]\npool = \"p\"\n",
            o.addr
        ),
        &Opts {
            server_extra: &extra,
            ..Opts::default()
        },
    );
    let out = ctl(s.admin, &["status"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("refused the token (none was given)") && err.contains("SLUICE_ADMIN_TOKEN"),
        "{err}"
    );
    let out = ctl(s.admin, &["reload"], &[("SLUICE_ADMIN_TOKEN", "wrong")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the token given is wrong"), "{err}");
    let out = ctl(
        s.admin,
        &["status", "--token-file", token.to_str().unwrap()],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ctl(
        s.admin,
        &["status", "--json"],
        &[("SLUICE_ADMIN_TOKEN", "s3cret")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ctl(s.admin, &["tail", "--status", "4x"], &[]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("expected a status (403) or a class (4xx)")
    );
}
