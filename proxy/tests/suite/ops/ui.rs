//! The `/ui` status page in a real headless Chromium (Debian's `chromium`, requirement
//! `chromium`): loaded against a running Sluice with traffic, its numbers checked
//! against `/metrics`, its rollback button clicked, and screenshots saved in the test's
//! output (`target/release/tmp/ui/`; `docs/ui-status.png` is one of them).

use serde_json::Value;

use super::cdp::Browser;
use crate::support::*;

/// Three routes (images through the WAF and the image filter, `/echo/api` through a
/// headers filter, the rest through the WAF), a healthy pool and one whose only peer
/// is dead.
fn policy(o: &Proc) -> String {
    format!(
        r#"[pools.o]
peers = ["{o}"]
[pools.o.health]
path = "/healthz"
interval_ms = 200

[pools.spare]
peers = ["{dead}"]
[pools.spare.health]
path = "/healthz"
interval_ms = 200

[filters.tag]
module = {headers}
config = {{ response = {{ set = {{ "x-tag" = "api" }} }} }}

[filters.waf]
module = {waf}
config = {{ inline = '''
SecRule REQUEST_URI "@contains attack" "id:1001,phase:1,deny,status:403,msg:'attack in the path'"
SecRule REQUEST_URI "@contains passwd" "id:1002,phase:1,deny,status:403,msg:'a system file'"
''', mode = "block" }}

[filters.image]
module = {image}
config = {{ sources = ["/sample.jpg"], max_width = 2000, max_height = 2000 }}

[[routes]]
name = "images"
path_prefix = "/cdn-cgi/image/"
filters = ["waf", "image"]
pool = "o"

[[routes]]
name = "api"
path_prefix = "/echo/api"
filters = ["tag"]
pool = "o"

[[routes]]
name = "spare"
path_prefix = "/spare"
pool = "spare"

[[routes]]
name = "web"
filters = ["waf"]
pool = "o"
"#,
        o = o.addr,
        dead = DEAD_PEER,
        headers = module("headers.wasm"),
        waf = module("waf.wasm"),
        image = module("image.wasm"),
    )
}

/// What the page shows, read from its DOM.
const READ_PAGE: &str = r#"(() => {
  const t = (id) => document.getElementById(id).textContent;
  const cell = (sel) => { const e = document.querySelector(sel); return e ? e.textContent : null; };
  return {
    generation: t("generation"),
    requests: t("requests-total"),
    blocked: t("waf-blocked"),
    recent_blocked: t("waf-recent-blocked"),
    rule_1001: cell('tr[data-rule="1001"] td.num'),
    rule_1002: cell('tr[data-rule="1002"] td.num'),
    hits: t("image-hits"),
    misses: t("image-misses"),
    hit_rate: t("image-hit-rate"),
    tag_calls: cell('tr[data-filter="tag"][data-phase="request_headers"] td.calls'),
    waf_calls: cell('div.route[data-route="web"] tr[data-filter="waf"][data-phase="request_headers"] td.calls'),
    pool_o: cell('tr[data-pool="o"] td:nth-child(3)'),
    pool_spare: cell('tr[data-pool="spare"] td:nth-child(3)'),
    chains: [...document.querySelectorAll("div.route")].map((r) =>
      r.dataset.route + ":" + [...r.querySelectorAll("div.filter")].map((f) => f.dataset.filter).join(",")),
    rollback: document.getElementById("rollback").textContent,
    rollback_disabled: document.getElementById("rollback").disabled,
  };
})()"#;

fn num(v: &Value) -> f64 {
    v.as_str()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

#[test]
fn the_status_page_shows_what_metrics_say_and_rolls_back_on_a_click() {
    if !require("chromium", "chromium") {
        return;
    }
    let o = origin("ui");
    let s = sluice(&policy(&o));
    let c = client();
    let get = |path: &str| c.get(s.url(path)).send().unwrap().status().as_u16();
    for _ in 0..20 {
        assert_eq!(get("/echo/api/x"), 200);
    }
    for _ in 0..10 {
        assert_eq!(get("/echo/page"), 200);
    }
    for _ in 0..6 {
        assert_eq!(get("/echo/attack"), 403);
    }
    for _ in 0..3 {
        assert_eq!(get("/echo/etc/passwd"), 403);
    }
    for _ in 0..3 {
        assert_eq!(get("/cdn-cgi/image/width=64/sample.jpg"), 200);
    }
    // A second generation, so that there is one to roll back to.
    assert_eq!(reload(&s), 2);
    until(secs(10), "the dead peer marked down", || {
        metric_with(&s, "sluice_upstream_healthy", "pool=\"spare\"") == 0.0
    });
    // The page's numbers, once it has read the status after the traffic.
    let want_requests = metric(&s, "sluice_requests_total");
    let mut b = Browser::start(1280, 1000);
    b.navigate(&s.admin_url("/ui"));
    b.wait_for(
        "the page drawn with every request",
        secs(20),
        "document.body.dataset.state + ' ' + document.getElementById('requests-total').textContent",
        |v| v.as_str() == Some(&format!("ready {want_requests}")),
    );
    let page = b.eval(READ_PAGE);
    println!("page: {page}");
    assert_eq!(
        num(&page["generation"]),
        metric(&s, "sluice_policy_generation")
    );
    assert_eq!(num(&page["generation"]), 2.0);
    let blocked = metric(&s, "sluice_wasm_waf_blocked_total");
    assert_eq!(blocked, 9.0);
    assert_eq!(num(&page["blocked"]), blocked);
    assert_eq!(
        num(&page["recent_blocked"]),
        blocked,
        "all within the last minutes"
    );
    assert_eq!(
        num(&page["rule_1001"]),
        metric_with(&s, "sluice_wasm_waf_rule_matches_total", "rule=\"1001\"")
    );
    assert_eq!(num(&page["rule_1001"]), 6.0);
    assert_eq!(num(&page["rule_1002"]), 3.0);
    let hits = metric_with(&s, "sluice_image_cache_total", "result=\"hit\"");
    let misses = metric_with(&s, "sluice_image_cache_total", "result=\"miss\"");
    assert_eq!((hits, misses), (2.0, 1.0));
    assert_eq!((num(&page["hits"]), num(&page["misses"])), (hits, misses));
    assert_eq!(page["hit_rate"], "66.7 %");
    assert_eq!(
        num(&page["tag_calls"]),
        metric_with(
            &s,
            "sluice_filter_duration_seconds_count",
            "filter=\"tag\",phase=\"request_headers\""
        )
    );
    assert_eq!(num(&page["tag_calls"]), 20.0);
    assert_eq!(
        num(&page["waf_calls"]),
        metric_with(
            &s,
            "sluice_filter_duration_seconds_count",
            "filter=\"waf\",phase=\"request_headers\""
        )
    );
    assert_eq!(
        (page["pool_o"].as_str(), page["pool_spare"].as_str()),
        (Some("healthy"), Some("down"))
    );
    assert_eq!(
        metric_with(&s, "sluice_upstream_healthy", "pool=\"o\""),
        1.0
    );
    assert_eq!(
        page["chains"],
        serde_json::json!(["images:waf,image", "api:tag", "spare:", "web:waf"])
    );
    assert_eq!(page["rollback"], "Roll back to generation 1");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui");
    b.screenshot(&out.join("status.png"));

    // Click rollback: the page and the admin API agree on generation 1, and the button
    // is off (nothing older is kept).
    b.eval("document.getElementById('rollback').click(); true");
    b.wait_for(
        "the page showing generation 1",
        secs(20),
        "document.body.dataset.generation",
        |v| v.as_str() == Some("1"),
    );
    assert_eq!(s.status()["generation"], 1);
    assert_eq!(metric(&s, "sluice_policy_generation"), 1.0);
    let page = b.eval(READ_PAGE);
    assert_eq!(page["rollback_disabled"], true, "{page}");
    assert!(b
        .eval("document.getElementById('message').textContent")
        .as_str()
        .unwrap()
        .contains("now generation 1"));
    b.screenshot(&out.join("after-rollback.png"));
    println!("screenshots in {}", out.display());

    // The page's own rules: served from the binary with a strict CSP, and guarded like
    // the rest of the admin API (a rebinding Host is refused).
    let r = c.get(s.admin_url("/ui")).send().unwrap();
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(!r.text().unwrap().contains("://"), "no external asset");
    let r = c
        .get(s.admin_url("/ui"))
        .header("host", "evil.example")
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let js = c
        .get(s.admin_url("/ui/app.js"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        !js.contains("innerHTML"),
        "text goes in through textContent only"
    );
}

/// With a token configured, a browser signs in: `/ui` answers the login form, a wrong
/// token is refused, the right one sets a session cookie that is a hash of the token
/// (HttpOnly, SameSite=Strict), and the page then reads the admin API with it.
#[test]
fn with_a_token_the_page_signs_in_with_a_hashed_session() {
    if !require("chromium", "chromium") {
        return;
    }
    const TOKEN: &str = "s3cret-ui-token";
    let o = origin("ui-token");
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
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
    let c = client();
    let r = c.get(s.admin_url("/ui")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().unwrap().contains("id=\"login\""), "the login form");
    assert_eq!(
        c.get(s.admin_url("/admin/status")).send().unwrap().status(),
        401
    );
    assert_eq!(
        c.get(s.admin_url("/ui/app.js")).send().unwrap().status(),
        401
    );
    let login = |body: &str, origin: Option<&str>| {
        let mut r = c
            .post(s.admin_url("/ui/login"))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send().unwrap()
    };
    assert_eq!(login(r#"{"token":"nope"}"#, None).status(), 401);
    let good = format!(r#"{{"token":"{TOKEN}"}}"#);
    assert_eq!(
        login(&good, Some("http://evil.example")).status(),
        403,
        "cross-origin"
    );
    let r = login(&good, None);
    assert_eq!(r.status(), 204);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains(TOKEN),
        "the cookie is not the token: {cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let with = |cookie: &str| {
        c.get(s.admin_url("/admin/status"))
            .header("cookie", cookie)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(with(&session), 200);
    assert_eq!(
        with(&format!("sluice_session={TOKEN}")),
        401,
        "the token is no session"
    );

    let mut b = Browser::start(1000, 700);
    b.navigate(&s.admin_url("/ui"));
    b.wait_for(
        "the login form",
        secs(20),
        "document.body.dataset.state",
        |v| v == "login",
    );
    b.eval("document.getElementById('token').value = 'wrong'; document.getElementById('sign-in').click(); true");
    b.wait_for("a refusal", secs(20), "document.body.dataset.state", |v| {
        v == "refused"
    });
    b.eval(&format!(
        "document.getElementById('token').value = '{TOKEN}'; document.getElementById('sign-in').click(); true"
    ));
    b.wait_for(
        "the status page",
        secs(20),
        "document.body.dataset.state",
        |v| v == "ready",
    );
    assert_eq!(
        b.eval("document.getElementById('generation').textContent"),
        "1"
    );
}
