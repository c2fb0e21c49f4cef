//! CRS 3.3's response rules (RESPONSE-950..959: data leakage, error pages, the outbound
//! anomaly evaluation) on responses, with Debian's base config (`SecResponseBodyAccess On`,
//! `text/plain text/html text/xml`, 512 KiB, `ProcessPartial`), paranoia 1, blocking.

use waf::config::{build, Config, Waf};
use waf::tx::Transaction;

mod support;
use support::{installed, respond, Fs};

fn crs() -> Option<Waf> {
    if !installed("/usr/share/modsecurity-crs/rules/RESPONSE-951-DATA-LEAKAGES-SQL.conf") {
        return None;
    }
    let cfg = Config {
        rules: vec![
            "/etc/nginx/modsecurity.conf".into(),
            "/etc/modsecurity/crs/crs-setup.conf".into(),
            "/usr/share/modsecurity-crs/rules/*.conf".into(),
        ],
        mode: Some("block".into()),
        ..Config::default()
    };
    Some(build(&cfg, Some(&Fs), None).unwrap_or_else(|e| panic!("CRS load failed: {e}")))
}

/// A benign GET, then the response through phases 3, 4 (body when inspected) and 5, as the
/// filter runs them.
fn exchange(w: &Waf, content_type: &str, status: u16, body: &[u8]) -> Transaction {
    let hs: Vec<(String, String)> = [
        ("Host", "localhost"),
        (
            "User-Agent",
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0",
        ),
        ("Accept", "*/*"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut tx = w.transaction();
    tx.set_request("GET", "/app/page", "HTTP/1.1", &hs, "127.0.0.1:40000", "t");
    tx.run_phase(1);
    tx.run_phase(2);
    assert!(tx.intervention.is_none() && tx.wants_response());
    let len = body.len().to_string();
    respond(
        &mut tx,
        status,
        &[("Content-Type", content_type), ("Content-Length", &len)],
        body,
    );
    tx
}

fn ids(tx: &Transaction) -> Vec<u32> {
    tx.logs.iter().map(|l| l.id).collect()
}

#[test]
fn crs_blocks_leaking_responses_at_paranoia_1() {
    let Some(w) = crs() else { return };
    let cases: &[(&str, &[u8], u32)] = &[
        (
            "text/html; charset=utf-8",
            b"<html><body><b>Warning</b>: You have an error in your SQL syntax; check the manual that corresponds to your MySQL server version for the right syntax to use near ''42'' at line 1</body></html>",
            951230,
        ),
        (
            "text/html",
            b"<html><head><title>Index of /backup</title></head><body><h1>Index of /backup</h1><pre><a href=\"db.sql\">db.sql</a></pre></body></html>",
            950130,
        ),
        (
            "text/plain",
            b"ORA-00933: SQL command not properly ended\n",
            951120,
        ),
    ];
    for (ct, body, rule) in cases {
        let tx = exchange(&w, ct, 200, body);
        let got = ids(&tx);
        assert!(got.contains(rule), "{ct}: expected {rule} in {got:?}");
        assert!(
            got.contains(&959100),
            "{ct}: outbound evaluation in {got:?}"
        );
        let iv = tx
            .intervention
            .unwrap_or_else(|| panic!("{ct}: not blocked: {got:?}"));
        assert_eq!((iv.status, iv.rule_id, iv.phase), (403, 959100, 4), "{ct}");
    }
}

#[test]
fn crs_passes_clean_and_uninspected_responses() {
    let Some(w) = crs() else { return };
    let clean = exchange(
        &w,
        "text/html",
        200,
        b"<!doctype html><html><head><title>Shop</title></head><body><h1>Welcome</h1><p>3 items in your cart.</p></body></html>",
    );
    assert!(
        clean.intervention.is_none() && clean.logs.is_empty(),
        "{:?}",
        ids(&clean)
    );
    // the same leak in a type Debian's base config does not list is never read
    let leak = b"You have an error in your SQL syntax; check the manual that corresponds to your MySQL server version";
    for ct in ["image/png", "application/json", "application/octet-stream"] {
        let tx = exchange(&w, ct, 200, leak);
        assert!(
            tx.intervention.is_none() && tx.logs.is_empty(),
            "{ct}: {:?}",
            ids(&tx)
        );
    }
    // a 500 is only scored from paranoia 2 (950100)
    let tx = exchange(&w, "text/html", 500, b"<h1>Internal Server Error</h1>");
    assert!(tx.intervention.is_none(), "{:?}", ids(&tx));
}

/// What the response phases cost natively (printed, not asserted): a benign GET through
/// phases 1, 2 and 5 alone, then with phases 3 and 4 on a 4 KiB HTML body.
#[test]
fn crs_response_cost_smoke() {
    let Some(w) = crs() else { return };
    let mut page = String::from("<!doctype html><html><body>");
    while page.len() < 4096 {
        page.push_str("<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit.</p>");
    }
    let n = 2000;
    let hs: Vec<(String, String)> = vec![
        ("Host".into(), "localhost".into()),
        ("User-Agent".into(), "Mozilla/5.0 Firefox/120.0".into()),
        ("Accept".into(), "*/*".into()),
    ];
    let t = std::time::Instant::now();
    for _ in 0..n {
        let mut tx = w.transaction();
        tx.set_request("GET", "/app/page", "HTTP/1.1", &hs, "127.0.0.1:1", "t");
        tx.run_phase(1);
        tx.run_phase(2);
        tx.run_phase(5);
    }
    let req = t.elapsed() / n;
    let t = std::time::Instant::now();
    for _ in 0..n {
        let tx = exchange(&w, "text/html", 200, page.as_bytes());
        assert!(tx.intervention.is_none());
    }
    let both = t.elapsed() / n;
    let t = std::time::Instant::now();
    for _ in 0..n {
        let tx = exchange(&w, "image/png", 200, page.as_bytes());
        assert!(tx.intervention.is_none());
    }
    let head_only = t.elapsed() / n;
    eprintln!(
        "per request: request phases {req:?}; + response phases on a 4 KiB text/html body {both:?}; + response phases, body not inspected (image/png) {head_only:?}"
    );
}
