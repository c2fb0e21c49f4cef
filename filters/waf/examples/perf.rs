//! Deterministic per-request cost of the engine on the real CRS 3.3 (Debian `modsecurity-crs`).
//!
//! `cargo run --release --example perf -- [N]` evaluates a fixed mix of benign requests N times
//! (default 200) and prints the decisions. Count instructions with
//! `valgrind --tool=callgrind target/release/examples/perf 200` and subtract a `perf 0` run
//! (configure only), or `perf stat -e instructions`.

use waf::config::{build, Config};

#[path = "../tests/support/mod.rs"]
mod support;
use support::Fs;

#[derive(Clone)]
struct Req {
    method: &'static str,
    uri: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body: Option<&'static [u8]>,
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let cfg = Config {
        rules: vec![
            "/etc/nginx/modsecurity.conf".into(),
            "/etc/modsecurity/crs/crs-setup.conf".into(),
            "/etc/modsecurity/crs/REQUEST-900-EXCLUSION-RULES-BEFORE-CRS.conf".into(),
            "/usr/share/modsecurity-crs/rules/*.conf".into(),
            "/etc/modsecurity/crs/RESPONSE-999-EXCLUSION-RULES-AFTER-CRS.conf".into(),
        ],
        mode: Some("block".into()),
        ..Config::default()
    };
    let w = build(&cfg, Some(&Fs), None).unwrap_or_else(|e| panic!("CRS load failed: {e}"));
    if let Some(s) = &w.snapshot {
        eprintln!(
            "phase-1 entries evaluated at configure: {:?}; gates folded: {}; counts folded: {}",
            s.range(),
            s.folded(),
            s.counted()
        );
    }
    let (mut with_list, mut with_memo, mut total) = (0, 0, 0);
    for x in w.engine.rules.iter().flat_map(waf::model::Rule::links) {
        total += 1;
        with_list += usize::from(x.tlist.is_some());
        with_memo += usize::from(x.memo.is_some());
    }
    eprintln!(
        "rules (with chained): {total}, shared target lists: {} used by {with_list}, memo slots: {with_memo}",
        w.engine.n_tlists
    );
    if std::env::var_os("PERF_IDS").is_some() {
        dbg_ids(&w);
    }
    let base: Vec<(&str, &str)> = vec![
        ("Host", "shop.example.com"),
        (
            "User-Agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
        ),
        (
            "Accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("Accept-Language", "en-US,en;q=0.5"),
        ("Accept-Encoding", "gzip, deflate, br"),
    ];
    let reqs = [
        Req {
            method: "GET",
            uri: "/",
            headers: vec![],
            body: None,
        },
        Req {
            method: "GET",
            uri: "/products/list?category=shoes&page=2&sort=price_asc",
            headers: vec![
                ("Cookie", "session=abc123def456; theme=dark; lang=en"),
                ("Referer", "https://shop.example.com/products"),
            ],
            body: None,
        },
        Req {
            method: "GET",
            uri: "/static/app.js?v=1.2.3",
            headers: vec![("Cookie", "session=abc123def456")],
            body: None,
        },
        Req {
            method: "POST",
            uri: "/api/cart",
            headers: vec![
                ("Content-Type", "application/json"),
                ("Cookie", "session=abc123def456"),
            ],
            body: Some(
                br#"{"item":"sku-1234","qty":2,"note":"gift wrap please","tags":["a","b"]}"#,
            ),
        },
    ];
    // PERF_MIX=waf: the 16 GETs of bench/waf-mix.lua (12 ordinary, 4 attacks that get a 403)
    // with its browser-like headers, as bench/waf.sh sends them.
    let waf_mix = std::env::var("PERF_MIX").is_ok_and(|m| m == "waf");
    let (base, reqs) = if waf_mix {
        waf_sh_mix()
    } else {
        (base, Vec::from(reqs))
    };
    let mut blocked = 0usize;
    let mut flagged = 0usize;
    let (mut rules, mut ops) = (0u64, 0u64);
    // PERF_UNIQUE=1: every request also carries a never-seen query value and session cookie
    let unique = std::env::var_os("PERF_UNIQUE").is_some();
    let mut serial = 0u64;
    for _ in 0..n {
        for r in &reqs {
            let mut headers: Vec<(String, String)> = base
                .iter()
                .chain(r.headers.iter())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            serial += 1;
            let uri = if unique {
                headers.push(("Cookie".into(), format!("sid={serial:016x}")));
                let sep = if r.uri.contains('?') { '&' } else { '?' };
                format!("{}{sep}t={serial}", r.uri)
            } else {
                r.uri.to_string()
            };
            if let Some(b) = r.body {
                headers.push(("Content-Length".into(), b.len().to_string()));
            }
            let mut tx = w.transaction();
            tx.set_request(
                r.method,
                &uri,
                "HTTP/1.1",
                &headers,
                "127.0.0.1:40000",
                "perf-1",
            );
            tx.run_phase(1);
            if let Some(b) = r.body {
                let ct = r
                    .headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                    .map(|(_, v)| *v);
                tx.process_body(b, ct);
            }
            tx.run_phase(2);
            if waf_mix && tx.intervention.is_none() && tx.wants_response() {
                // what the filter does with the demo origin's answer (bench/waf.sh)
                let (ctype, body) = origin_answer(r.uri);
                let mut rh: Vec<(String, String)> = vec![("content-type".into(), ctype.into())];
                if ctype.starts_with("text/") {
                    rh.insert(0, ("etag".into(), "\"399-18ee3dffb9034492\"".into()));
                    rh.insert(
                        1,
                        (
                            "last-modified".into(),
                            "Sat, 05 Dec 2026 03:31:09 GMT".into(),
                        ),
                    );
                }
                rh.push(("content-length".into(), body.len().to_string()));
                rh.push(("server".into(), "sluice-origin".into()));
                rh.push(("x-origin-id".into(), "bench".into()));
                rh.push(("date".into(), "Sat, 05 Dec 2026 03:33:02 GMT".into()));
                tx.set_response(200, "HTTP/1.1", &rh);
                tx.run_phase(3);
                if tx.wants_response_body() {
                    tx.process_response_body(body, false);
                }
                tx.run_phase(4);
            }
            tx.run_phase(5);
            if !tx.logs.is_empty() || tx.intervention.is_some() || tx.would_block.is_some() {
                // the filter's audit line
                std::hint::black_box(waf::config::audit_json(&tx, "perf-1"));
            }
            rules += u64::from(tx.counters.0);
            ops += u64::from(tx.counters.1);
            if tx.intervention.is_some() {
                blocked += 1;
            } else if !tx.logs.is_empty() {
                flagged += 1;
            }
        }
    }
    let total = (n * reqs.len()).max(1) as u64;
    println!(
        "requests={} blocked={} flagged={} rules/request={} operator calls/request={}",
        n * reqs.len(),
        blocked,
        flagged,
        rules / total,
        ops / total
    );
}
#[allow(dead_code)]
fn dbg_ids(w: &waf::config::Waf) {
    for (i, e) in w.engine.phases[1].iter().enumerate().take(60) {
        match e {
            waf::load::Entry::Rule(r, _) => {
                eprintln!(
                    "{i} {} {:?}",
                    w.engine.rules[*r].id,
                    w.engine.rules[*r]
                        .targets
                        .iter()
                        .map(|t| t.var)
                        .collect::<Vec<_>>()
                )
            }
            waf::load::Entry::Marker(m) => eprintln!("{i} marker {m:?}"),
        }
    }
}

/// bench/waf-mix.lua: its headers and 16 paths, in its order.
fn waf_sh_mix() -> (Vec<(&'static str, &'static str)>, Vec<Req>) {
    let base = vec![
        ("Host", "localhost"),
        (
            "User-Agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        (
            "Accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("Accept-Language", "en-US,en;q=0.5"),
    ];
    let paths = [
        "/hello.txt",
        "/index.html",
        "/echo?q=hello+world&id=42",
        "/echo?search=red+shoes&page=2&sort=price_asc",
        "/echo?id=1%27+or+%271%27%3D%271",
        "/status/200",
        "/echo/api/v1/users/123?fields=name,email",
        "/hello.txt?utm_source=newsletter&utm_medium=email",
        "/echo?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        "/bytes/1024",
        "/echo?lang=fr&tz=Europe%2FParis",
        "/index.html?ref=home",
        "/echo?f=..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/echo?next=%2Faccount%2Fsettings",
        "/echo?email=alice%40example.com&name=Alice",
        "/echo?c=%3Bcat+%2Fetc%2Fpasswd",
    ];
    let reqs = paths
        .iter()
        .map(|&uri| Req {
            method: "GET",
            uri,
            headers: vec![],
            body: None,
        })
        .collect();
    (base, reqs)
}

/// The demo origin's media type and body for a path of the mix (`origin/`: files from
/// `origin/www`, `/echo` as JSON, `/status` and `/bytes`).
fn origin_answer(uri: &str) -> (&'static str, &'static [u8]) {
    let path = uri.split('?').next().unwrap_or(uri);
    match path {
        "/hello.txt" => (
            "text/plain; charset=utf-8",
            include_bytes!("../../../origin/www/hello.txt"),
        ),
        "/index.html" => (
            "text/html; charset=utf-8",
            include_bytes!("../../../origin/www/index.html"),
        ),
        "/status/200" => ("text/plain; charset=utf-8", b"200 OK\n"),
        "/bytes/1024" => ("application/octet-stream", &[b'x'; 1024]),
        _ => (
            "application/json",
            br#"{"method":"GET","path":"/echo","query":"q=hello+world&id=42","headers":[["host","localhost"],["user-agent","Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"]],"body":"","body_len":0,"origin":"bench"}"#,
        ),
    }
}
