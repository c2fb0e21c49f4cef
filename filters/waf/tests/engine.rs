//! Engine tests with inline rules: directives, operators, chains, skipAfter, ctl, macros, bodies.

use std::collections::BTreeMap;
use waf::config::{build, Config, Waf};
use waf::tx::Transaction;

fn waf(rules: &str) -> Waf {
    let cfg = Config {
        inline: rules.to_string(),
        ..Config::default()
    };
    build(&cfg, None, None).unwrap_or_else(|e| panic!("load failed: {e}"))
}

fn load_err(rules: &str) -> String {
    let cfg = Config {
        inline: rules.to_string(),
        ..Config::default()
    };
    match build(&cfg, None, None) {
        Ok(_) => panic!("expected a load error"),
        Err(e) => e,
    }
}

fn req(
    w: &Waf,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Transaction {
    let hs: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut tx = w.transaction();
    tx.set_request(method, uri, "HTTP/1.1", &hs, "10.1.2.3:5555", "rid");
    tx.run_phase(1);
    if let Some(b) = body {
        let ct = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| *v);
        tx.process_body(b, ct);
    }
    tx.run_phase(2);
    tx.run_phase(5);
    tx
}

fn get(w: &Waf, uri: &str) -> Transaction {
    req(
        w,
        "GET",
        uri,
        &[("Host", "example.com"), ("User-Agent", "curl/8")],
        None,
    )
}

fn ids(tx: &Transaction) -> Vec<u32> {
    tx.logs.iter().map(|l| l.id).collect()
}

fn status(tx: &Transaction) -> u16 {
    tx.intervention.map(|i| i.status).unwrap_or(200)
}

#[test]
fn operators() {
    let w = waf(r#"
SecRule ARGS:a "@rx ^x+$" "id:1,phase:1,pass,log"
SecRule ARGS:a "@pm foo BAR" "id:2,phase:1,pass,log"
SecRule ARGS:a "@streq hello" "id:3,phase:1,pass,log"
SecRule ARGS:a "@contains ell" "id:4,phase:1,pass,log"
SecRule ARGS:a "@beginsWith he" "id:5,phase:1,pass,log"
SecRule ARGS:a "@endsWith lo" "id:6,phase:1,pass,log"
SecRule ARGS:n "@eq 5" "id:7,phase:1,pass,log"
SecRule ARGS:n "@ge 5" "id:8,phase:1,pass,log"
SecRule ARGS:n "@gt 5" "id:9,phase:1,pass,log"
SecRule ARGS:n "@lt 6" "id:10,phase:1,pass,log"
SecRule ARGS:n "@le 4" "id:11,phase:1,pass,log"
SecRule REQUEST_METHOD "@within GET POST" "id:12,phase:1,pass,log"
SecRule ARGS:a "@validateByteRange 97-122" "id:13,phase:1,pass,log"
SecRule QUERY_STRING "@validateUrlEncoding" "id:14,phase:1,pass,log"
SecRule ARGS:a "@validateUtf8Encoding" "id:15,phase:1,pass,log"
SecRule REMOTE_ADDR "@ipMatch 10.0.0.0/8,192.168.1.1" "id:16,phase:1,pass,log"
SecRule ARGS:s "@detectSQLi" "id:17,phase:1,pass,log"
SecRule ARGS:x "@detectXSS" "id:18,phase:1,pass,log"
SecRule ARGS:a "@unconditionalMatch" "id:19,phase:1,pass,log"
SecRule ARGS:a "@containsWord hello" "id:20,phase:1,pass,log"
SecRule ARGS:a "!@rx ^hello$" "id:21,phase:1,pass,log"
SecRule ARGS:a "@geoLookup" "id:22,phase:1,pass,log"
SecRule ARGS:a "hel+o" "id:23,phase:1,pass,log"
"#);
    let tx = get(
        &w,
        "/?a=hello&n=5&s=1%27%20or%20%271%27%3D%271&x=%3Cscript%3Ealert(1)%3C/script%3E",
    );
    assert_eq!(
        ids(&tx),
        vec![3, 4, 5, 6, 7, 8, 10, 12, 16, 17, 18, 19, 20, 23]
    );
    assert_eq!(ids(&get(&w, "/?b=%zz")), vec![12, 14, 16]);
    let tx = get(&w, "/?a=xx%ff%00FOO");
    assert_eq!(ids(&tx), vec![2, 12, 13, 15, 16, 19, 21]);
    let tx = get(&w, "/?a=xxx&n=4");
    assert_eq!(ids(&tx), vec![1, 10, 11, 12, 16, 19, 21]);
}

#[test]
fn pm_from_file_via_data() {
    let mut data = BTreeMap::new();
    data.insert(
        "/r/words.data".to_string(),
        "# comment\nevil\n\nBad Word\n".to_string(),
    );
    data.insert(
        "/r/rules.conf".to_string(),
        "SecRule ARGS \"@pmFromFile words.data\" \"id:1,phase:1,deny\"\n".to_string(),
    );
    let cfg = Config {
        rules: vec!["/r/*.conf".into()],
        data,
        ..Config::default()
    };
    let w = build(&cfg, None, None).unwrap();
    assert_eq!(status(&get(&w, "/?q=so+EVIL")), 403);
    assert_eq!(status(&get(&w, "/?q=a+bad+word")), 403);
    assert_eq!(status(&get(&w, "/?q=good")), 200);
}

#[test]
fn transformations_and_capture_and_macros() {
    let w = waf(r#"
SecRule ARGS:a "@rx (s\w+)t" "id:1,phase:1,pass,capture,t:none,t:urlDecodeUni,t:lowercase,setvar:tx.cap=%{TX.1},setvar:'tx.where=%{MATCHED_VAR_NAME}',msg:'got %{tx.1} in %{MATCHED_VAR}',logdata:'%{rule.id}'"
SecRule TX:cap "@streq scrip" "id:2,phase:1,pass,log,msg:'%{tx.where}'"
SecAction "id:3,phase:1,pass,nolog,setvar:tx.score=+5,setvar:tx.score=+3,setvar:tx.gone=1,setvar:!tx.gone"
SecRule TX:score "@eq 8" "id:4,phase:1,pass,log"
SecRule &TX:gone "@eq 0" "id:5,phase:1,pass,log"
SecRule REQUEST_HEADERS:User-Agent "@rx ^.*$" "id:6,phase:1,pass,nolog,t:sha1,t:hexEncode,setvar:tx.ua_hash=%{MATCHED_VAR}"
SecRule TX:ua_hash "@streq 7cbaf2f4c1e8c6d7f3e3e5f4ba9a1c1e0d9c0d6e" "id:7,phase:1,pass,log"
SecRule TX:ua_hash "@rx ^[0-9a-f]{40}$" "id:8,phase:1,pass,log"
SecAction "id:9,phase:1,pass,nolog,setvar:tx.allowed=GET HEAD"
SecRule REQUEST_METHOD "!@within %{tx.allowed}" "id:10,phase:1,deny,status:405"
"#);
    let tx = get(&w, "/?a=%3CSCRIPT%3E");
    assert_eq!(tx.tx_get("cap"), Some(&b"scrip"[..]));
    assert_eq!(tx.tx_get("where"), Some(&b"ARGS:a"[..]));
    assert_eq!(tx.logs[0].msg, "got scrip in <script>");
    assert_eq!(tx.logs[0].data, "1");
    assert_eq!(tx.logs[1].msg, "ARGS:a");
    assert_eq!(ids(&tx), vec![1, 2, 4, 5, 8]);
    let tx = req(&w, "PUT", "/", &[("User-Agent", "x")], None);
    assert_eq!(status(&tx), 405);
}

#[test]
fn collections_exclusions_counts_and_regex_keys() {
    let w = waf(r#"
SecRule ARGS|!ARGS:safe "@contains bad" "id:1,phase:1,pass,log"
SecRule &ARGS "@eq 3" "id:2,phase:1,pass,log"
SecRule ARGS:/^x_/ "@streq 1" "id:3,phase:1,pass,log"
SecRule ARGS_NAMES "@rx ^x_b$" "id:4,phase:1,pass,log"
SecRule REQUEST_COOKIES:sid|REQUEST_COOKIES_NAMES "@rx ^(abc|sid)$" "id:5,phase:1,pass,log"
SecRule &REQUEST_HEADERS:X-Missing "@eq 0" "id:6,phase:1,pass,log"
SecRule REQUEST_FILENAME "@streq /a b/c.php" "id:7,phase:1,pass,log"
SecRule REQUEST_BASENAME "@streq c.php" "id:8,phase:1,pass,log"
SecRule REQUEST_LINE "@beginsWith GET /a%20b" "id:9,phase:1,pass,log"
"#);
    let tx = req(
        &w,
        "GET",
        "/a%20b/c.php?safe=bad&x_b=1&other=ok",
        &[("Cookie", "sid=abc; t=1")],
        None,
    );
    assert_eq!(ids(&tx), vec![2, 3, 4, 5, 6, 7, 8, 9]);
    let tx = get(&w, "/?v=bad");
    assert_eq!(ids(&tx), vec![1, 6]);
    assert_eq!(tx.logs[0].var, "ARGS:v");
}

#[test]
fn chains() {
    let w = waf(r#"
SecRule REQUEST_METHOD "@streq POST" "id:1,phase:1,deny,status:418,chain"
    SecRule ARGS:a "@streq 1" "chain,setvar:tx.c1=1"
    SecRule ARGS:b "@streq 2" "setvar:tx.c2=1"
"#);
    assert_eq!(status(&req(&w, "POST", "/?a=1&b=2", &[], None)), 418);
    let tx = req(&w, "POST", "/?a=1&b=3", &[], None);
    assert_eq!(status(&tx), 200);
    // as libmodsecurity 3: a chain member's setvar runs when that member matches
    assert_eq!(tx.tx_get("c1"), Some(&b"1"[..]));
    assert_eq!(tx.tx_get("c2"), None);
    assert!(tx.logs.is_empty());
    assert_eq!(status(&req(&w, "GET", "/?a=1&b=2", &[], None)), 200);
    assert!(load_err("SecRule ARGS \"@rx a\" \"id:1,chain\"").contains("chain"));
}

#[test]
fn skip_after_markers_and_skip() {
    let w = waf(r#"
SecRule ARGS:skip "@streq 1" "id:1,phase:1,pass,nolog,skipAfter:END"
SecAction "id:2,phase:1,pass,log"
SecMarker END
SecAction "id:3,phase:1,pass,log"
SecRule ARGS:skip "@streq 2" "id:4,phase:1,pass,nolog,skip:1"
SecAction "id:5,phase:1,pass,log"
SecAction "id:6,phase:1,pass,log"
SecAction "id:7,phase:2,pass,log,skipAfter:NOWHERE"
SecAction "id:8,phase:2,pass,log"
"#);
    assert_eq!(ids(&get(&w, "/?skip=1")), vec![3, 5, 6, 7]);
    assert_eq!(ids(&get(&w, "/?skip=2")), vec![2, 3, 6, 7]);
}

#[test]
fn ctl_actions() {
    let w = waf(r#"
SecRule ARGS:off "@streq 1" "id:1,phase:1,pass,nolog,ctl:ruleRemoveById=10-11"
SecRule ARGS:t "@streq 1" "id:2,phase:1,pass,nolog,ctl:ruleRemoveTargetById=12;ARGS:q"
SecRule ARGS:g "@streq 1" "id:3,phase:1,pass,nolog,ctl:ruleRemoveByTag=grp"
SecRule ARGS:e "@streq 1" "id:4,phase:1,pass,nolog,ctl:ruleEngine=DetectionOnly"
SecRule ARGS:u "@streq 1" "id:5,phase:1,pass,nolog,ctl:ruleRemoveTargetByTag=grp;ARGS:q"
SecAction "id:10,phase:2,pass,log"
SecAction "id:11,phase:2,pass,log"
SecRule ARGS "@contains x" "id:12,phase:2,deny,tag:grp"
"#);
    assert_eq!(ids(&get(&w, "/?q=x")), vec![10, 11, 12]);
    assert_eq!(ids(&get(&w, "/?off=1&q=x")), vec![12]);
    assert_eq!(status(&get(&w, "/?t=1&q=x")), 200);
    assert_eq!(status(&get(&w, "/?t=1&r=x")), 403);
    assert_eq!(status(&get(&w, "/?g=1&q=x")), 200);
    assert_eq!(status(&get(&w, "/?u=1&q=x")), 200);
    let tx = get(&w, "/?e=1&q=x");
    assert_eq!(status(&tx), 200);
    assert_eq!(tx.would_block.map(|i| i.rule_id), Some(12));
}

#[test]
fn remove_update_and_default_action() {
    let w = waf(r#"
SecDefaultAction "phase:2,log,deny,status:451"
SecRule ARGS "@contains a" "id:1,phase:2,block"
SecRule ARGS "@contains b" "id:2,phase:2,block,tag:tb"
SecRule ARGS "@contains c" "id:3,phase:2,block"
SecRuleRemoveById 1
SecRuleRemoveByTag tb
SecRuleUpdateTargetById 3 "!ARGS:skip"
"#);
    assert_eq!(status(&get(&w, "/?q=a")), 200);
    assert_eq!(status(&get(&w, "/?q=b")), 200);
    assert_eq!(status(&get(&w, "/?q=c")), 451);
    assert_eq!(status(&get(&w, "/?skip=c")), 200);
}

#[test]
fn bodies() {
    let w = waf(r#"
SecRule REQUEST_HEADERS:Content-Type "^application/json" "id:100,phase:1,pass,nolog,t:lowercase,ctl:requestBodyProcessor=JSON"
SecRule REQUEST_HEADERS:Content-Type "^(?:application(?:/soap\+|/)|text/)xml" "id:101,phase:1,pass,nolog,t:lowercase,ctl:requestBodyProcessor=XML"
SecRule REQBODY_ERROR "!@eq 0" "id:102,phase:2,deny,status:400"
SecRule MULTIPART_STRICT_ERROR "!@eq 0" "id:103,phase:2,deny,status:400"
SecRule ARGS:json.user.name "@streq eve" "id:1,phase:2,deny,status:401"
SecRule ARGS_POST:f "@streq v" "id:2,phase:2,deny,status:402"
SecRule FILES "@endsWith .php" "id:3,phase:2,deny,status:403"
SecRule XML:/* "@contains union" "id:4,phase:2,deny,status:404"
SecRule XML://@* "@streq evil" "id:5,phase:2,deny,status:405"
SecRule REQUEST_BODY "@contains zz" "id:6,phase:2,deny,status:406"
SecRule MULTIPART_PART_HEADERS "@rx content-type:.*php" "id:7,phase:2,deny,status:407,t:lowercase"
"#);
    let j = &[("Content-Type", "application/json")];
    assert_eq!(
        status(&req(
            &w,
            "POST",
            "/",
            j,
            Some(br#"{"user":{"name":"eve"}}"#)
        )),
        401
    );
    assert_eq!(
        status(&req(
            &w,
            "POST",
            "/",
            j,
            Some(br#"{"user":{"name":"bob"}}"#)
        )),
        200
    );
    assert_eq!(status(&req(&w, "POST", "/", j, Some(b"{\"user\":"))), 400);
    let f = &[("Content-Type", "application/x-www-form-urlencoded")];
    assert_eq!(status(&req(&w, "POST", "/", f, Some(b"f=v"))), 402);
    assert_eq!(status(&req(&w, "POST", "/", f, Some(b"g=zz"))), 406);
    let m = &[("Content-Type", "multipart/form-data; boundary=B")];
    let up = b"--B\r\nContent-Disposition: form-data; name=\"up\"; filename=\"s.php\"\r\n\r\nx\r\n--B--\r\n";
    assert_eq!(status(&req(&w, "POST", "/", m, Some(up))), 403);
    let ok = b"--B\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nw\r\n--B--\r\n";
    assert_eq!(status(&req(&w, "POST", "/", m, Some(ok))), 200);
    let bad = b"--B\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nw\r\n";
    assert_eq!(status(&req(&w, "POST", "/", m, Some(bad))), 400);
    let ph = b"--B\r\nContent-Disposition: form-data; name=\"f\"\r\nContent-Type: application/x-php\r\n\r\nw\r\n--B--\r\n";
    assert_eq!(status(&req(&w, "POST", "/", m, Some(ph))), 407);
    let x = &[("Content-Type", "application/xml")];
    assert_eq!(
        status(&req(
            &w,
            "POST",
            "/",
            x,
            Some(b"<a><b>1 union select</b></a>")
        )),
        404
    );
    assert_eq!(
        status(&req(&w, "POST", "/", x, Some(b"<a k=\"evil\">1</a>"))),
        405
    );
    assert_eq!(status(&req(&w, "POST", "/", x, Some(b"<a><b></a>"))), 400);
}

#[test]
fn load_errors_name_file_and_line() {
    let e = load_err("SecRuleEngine On\n\nSecFoo bar\n");
    assert_eq!(e, "<inline>:3: unsupported directive SecFoo");
    assert!(load_err("SecRule ARGS \"@nope x\" \"id:1\"").contains("unsupported operator @nope"));
    assert!(
        load_err("SecRule ARGS \"@rx a\" \"id:1,exec:/bin/x\"").contains("unsupported action exec")
    );
    assert!(load_err("SecRule ARGS \"@rx a\" \"id:1,t:bogus\"")
        .contains("unsupported transformation t:bogus"));
    assert!(load_err("SecRule NOPE \"@rx a\" \"id:1\"").contains("unsupported variable NOPE"));
    assert!(load_err("SecRule ARGS \"@rx (\" \"id:1\"").contains("@rx"));
    assert!(load_err("SecAction \"id:1\"\nSecAction \"id:1\"").contains("duplicate rule id 1"));
    assert!(load_err("SecRule ARGS \\\n  \"@rx a\" \\\n  \"id:1,bad\"").starts_with("<inline>:1:"));
    let cfg = Config {
        rules: vec!["/nonexistent/x.conf".into()],
        ..Config::default()
    };
    assert!(build(&cfg, None, None).is_err());
}

#[test]
fn phases_allow_and_config_knobs() {
    let w = waf(r#"
SecRule ARGS:ok "@streq 1" "id:1,phase:1,allow"
SecRule ARGS "@contains x" "id:2,phase:1,deny"
SecRule ARGS "@contains y" "id:3,phase:2,deny"
SecRule TX:paranoia_level "@eq 3" "id:4,phase:1,deny,status:499"
"#);
    assert_eq!(status(&get(&w, "/?a=x")), 403);
    assert_eq!(tx_phase(&get(&w, "/?a=x")), 1);
    assert_eq!(tx_phase(&get(&w, "/?a=y")), 2);
    assert_eq!(status(&get(&w, "/?ok=1&a=x")), 200);
    let cfg = Config {
        inline: "SecRule TX:paranoia_level \"@eq 3\" \"id:4,phase:1,deny,status:499\"".into(),
        paranoia: Some(3),
        ..Config::default()
    };
    assert_eq!(status(&get(&build(&cfg, None, None).unwrap(), "/")), 499);
    // CRS 4 names the level twice (blocking and detection); `paranoia` sets both.
    for var in ["blocking_paranoia_level", "detection_paranoia_level"] {
        let cfg = Config {
            inline: format!("SecRule TX:{var} \"@eq 2\" \"id:4,phase:1,deny,status:499\""),
            paranoia: Some(2),
            ..Config::default()
        };
        assert_eq!(
            status(&get(&build(&cfg, None, None).unwrap(), "/")),
            499,
            "{var}"
        );
    }
    let cfg = Config {
        inline: "SecAction \"id:1,phase:1,deny\"".into(),
        status: Some(406),
        ..Config::default()
    };
    assert_eq!(status(&get(&build(&cfg, None, None).unwrap(), "/")), 406);
    assert!(Config::parse(br#"{"rules":[],"bogus":1}"#).is_err());
    assert!(Config::parse(br#"{"mode":"detect","paranoia":2}"#).is_ok());
}

fn tx_phase(tx: &Transaction) -> u8 {
    tx.intervention.map(|i| i.phase).unwrap_or(0)
}

/// Request-independent phase-1 rules run once at configure (`tx::Snapshot`); results must be
/// as if they ran per request, including MATCHED_VAR seen by the first rule after them.
#[test]
fn phase1_snapshot() {
    let w = waf(r#"
SecRule REQUEST_HEADERS:Content-Type "xml" "id:1,phase:1,pass,nolog,t:lowercase,ctl:requestBodyProcessor=XML"
SecAction "id:2,phase:1,pass,nolog,setvar:tx.a=5,setvar:tx.n=1"
SecRule TX:a "@eq 5" "id:3,phase:1,pass,nolog,setvar:tx.b=%{tx.a}7,setvar:tx.n=+2"
SecRule MATCHED_VAR "@streq 5" "id:4,phase:1,pass,log,setvar:tx.n=+10"
SecRule TX:b "@streq 57" "id:5,phase:1,pass,log"
SecRule TX:n "@eq 13" "id:6,phase:1,deny,status:403,log"
"#);
    let s = w.snapshot.as_ref().expect("snapshot");
    assert_eq!(s.range(), (1, 3), "rules 2 and 3 run at configure");
    for _ in 0..2 {
        let tx = req(
            &w,
            "GET",
            "/",
            &[("Host", "h"), ("Content-Type", "text/XML")],
            None,
        );
        assert_eq!(ids(&tx), vec![4, 5, 6]);
        assert_eq!(status(&tx), 403);
        assert_eq!(tx.tx_get("n"), Some(&b"13"[..]));
        let tx = get(&w, "/");
        assert_eq!(ids(&tx), vec![4, 5, 6]);
    }
}

/// Gates are folded only when no per-request rule can write their variable; a folded gate
/// gives what an evaluated one gives; a runtime target removal disables folding.
#[test]
fn gates_fold_only_on_stable_tx() {
    let rules = r#"
SecRuleEngine On
SecAction "id:1,phase:1,pass,nolog,setvar:tx.stable=1,setvar:tx.pl=1"
SecRule REQUEST_URI "@beginsWith /admin" "id:2,phase:1,pass,nolog,setvar:tx.pl=3"
SecRule REQUEST_URI "@beginsWith /num" "id:7,phase:1,pass,nolog,setvar:'tx.%{rule.id}-x=1'"
SecRule TX:PL "@lt 2" "id:3,phase:1,pass,nolog,skipAfter:END"
SecRule TX:STABLE "@lt 2" "id:4,phase:2,pass,nolog,skipAfter:END2"
SecRule ARGS "@contains evil" "id:5,phase:1,deny,status:403"
SecMarker END
SecRule ARGS "@contains worse" "id:6,phase:2,deny,status:403"
SecMarker END2
"#;
    let w = waf(rules);
    let folded = w.snapshot.as_ref().map_or(0, |s| s.folded());
    // 4 folds (tx.stable is written only at configure; %{rule.id} writes digits); 3 does not
    // (rule 2 writes tx.pl per request)
    assert_eq!(folded, 1, "only the TX:STABLE gate folds");
    assert_eq!(
        status(&get(&w, "/admin?x=evil")),
        403,
        "tx.pl=3: gate 3 passes"
    );
    assert_eq!(status(&get(&w, "/?x=evil")), 200, "tx.pl=1: gate 3 jumps");
    assert_eq!(status(&get(&w, "/?x=worse")), 200, "folded gate 4 jumps");
    assert_eq!(
        status(&get(&w, "/num?x=worse")),
        200,
        "%{{rule.id}} cannot write tx.stable"
    );
    // A runtime target removal of the gate's variable turns the fold off for that request.
    let w = waf(&format!(
        "{rules}\nSecRule REQUEST_URI \"@beginsWith /ex\" \"id:8,phase:1,pass,nolog,ctl:ruleRemoveTargetById=4;TX:STABLE\"\n"
    ));
    assert_eq!(
        status(&get(&w, "/ex?x=worse")),
        403,
        "gate 4 lost its target: no jump"
    );
}

/// Rules on counts of stable TX keys (`&TX:key`, CRS 9001000, 920360) are answered at
/// configure (`Fold::Counted`) and still count as evaluated, with their operator calls and
/// the `MATCHED_VAR` a match leaves: the same logs, decisions and counters as evaluating them.
#[test]
fn stable_tx_counts_fold_with_the_same_counters_and_matched_var() {
    let rules = r#"
SecRuleEngine On
SecAction "id:1,phase:1,pass,nolog,setvar:tx.set=1"
SecRule REQUEST_URI "@beginsWith /w" "id:2,phase:1,pass,nolog,setvar:tx.written=1"
SecRule &TX:unset|TX:unset "@eq 0" "id:10,phase:1,pass,nolog,skipAfter:END1"
SecRule ARGS "@contains evil" "id:11,phase:1,deny,status:403"
SecMarker END1
SecRule MATCHED_VAR "@streq 0" "id:12,phase:1,pass,log,msg:'mv %{MATCHED_VAR_NAME}'"
SecRule &TX:written "@eq 0" "id:13,phase:2,pass,nolog,skipAfter:END2"
SecRule ARGS "@contains worse" "id:14,phase:2,deny,status:403"
SecMarker END2
SecRule &TX:set "@eq 1" "id:15,phase:2,pass,nolog"
SecRule MATCHED_VAR "@streq 1" "id:16,phase:2,pass,log,msg:'after %{MATCHED_VAR_NAME}'"
SecRule &TX:arg_length "@eq 1" "id:17,phase:2,block,log,chain"
  SecRule ARGS "@gt %{tx.arg_length}" "t:none"
"#;
    let w = waf(rules);
    let counted = w.snapshot.as_ref().map_or(0, |s| s.counted());
    assert_eq!(
        counted, 3,
        "10, 15 and 17 fold; 13 does not (rule 2 writes tx.written)"
    );
    let mut plain = waf(rules);
    if let Some(s) = plain.snapshot.as_mut() {
        s.unfold();
    }
    for uri in ["/", "/?x=evil", "/?x=worse", "/w?x=worse", "/w?x=evil"] {
        let (a, b) = (get(&w, uri), get(&plain, uri));
        assert_eq!(ids(&a), ids(&b), "{uri}");
        assert_eq!(status(&a), status(&b), "{uri}");
        assert_eq!(a.counters, b.counters, "{uri}");
        let msgs = |t: &Transaction| t.logs.iter().map(|l| l.msg.clone()).collect::<Vec<_>>();
        assert_eq!(msgs(&a), msgs(&b), "{uri}");
        if status(&a) == 200 {
            assert!(ids(&a).contains(&16), "{uri}: 15's MATCHED_VAR");
        }
    }
    assert_eq!(status(&get(&w, "/?x=evil")), 200, "10 jumps over 11");
    assert_eq!(status(&get(&w, "/w?x=worse")), 403, "13 is evaluated");
}

#[test]
fn ctl_remove_target_on_keyless_variables() {
    // Runtime removal of REQUEST_FILENAME (a variable without keys) by id and by tag, as CRS
    // exclusion packages do; static SecRuleUpdateTargetById with !REQUEST_FILENAME too.
    let w = waf(r#"
SecRule REQUEST_URI "@beginsWith /a/" "id:1,phase:1,pass,nolog,ctl:ruleRemoveTargetById=20;REQUEST_FILENAME"
SecRule REQUEST_URI "@beginsWith /b/" "id:2,phase:1,pass,nolog,ctl:ruleRemoveTargetByTag=paths;REQUEST_FILENAME"
SecRule REQUEST_FILENAME|ARGS "@contains evil" "id:20,phase:2,deny,tag:paths"
SecRule REQUEST_FILENAME "@contains bad" "id:21,phase:2,deny"
SecRuleUpdateTargetById 21 "!REQUEST_FILENAME"
"#);
    assert_eq!(status(&get(&w, "/c/evil")), 403);
    assert_eq!(status(&get(&w, "/a/evil")), 200, "removed by id");
    assert_eq!(status(&get(&w, "/b/evil")), 200, "removed by tag");
    assert_eq!(status(&get(&w, "/a/x?q=evil")), 403, "ARGS still inspected");
    assert_eq!(
        status(&get(&w, "/c/bad")),
        200,
        "removed by SecRuleUpdateTargetById"
    );
}

#[test]
fn json_request_body_variable_and_bodyless_json() {
    // libmodsecurity 3 keeps the raw body in REQUEST_BODY whatever processor parsed it; the
    // processor a ctl chose is visible in REQBODY_PROCESSOR at once, also without a body.
    let w = waf(r#"
SecRule REQUEST_HEADERS:Content-Type "^application/json" "id:100,phase:1,pass,nolog,t:lowercase,ctl:requestBodyProcessor=JSON"
SecRule REQBODY_ERROR "!@eq 0" "id:102,phase:2,deny,status:400"
SecRule REQUEST_BODY "@contains \"role\":" "id:1,phase:2,deny,status:401"
SecRule REQBODY_PROCESSOR "@streq JSON" "id:2,phase:1,pass,log"
SecRule REQBODY_PROCESSOR "@streq JSON" "id:3,phase:2,pass,log"
SecRule ARGS_POST "@rx ." "id:4,phase:2,pass,log"
SecRule &REQUEST_BODY "@eq 0" "id:5,phase:2,pass,log"
"#);
    let j = &[("Content-Type", "application/json")];
    let tx = req(&w, "POST", "/", j, Some(br#"{"role":"admin"}"#));
    assert_eq!(status(&tx), 401);
    assert_eq!(tx.args(), vec![("json.role".into(), "admin".into())]);
    for body in [None, Some(&b""[..])] {
        let tx = req(&w, "GET", "/", j, body);
        assert_eq!(status(&tx), 200, "no body: no JSON error ({body:?})");
        assert_eq!(ids(&tx), vec![2, 3, 5], "{body:?}");
    }
}

#[test]
fn audit_line_is_ascii_json_with_modsecurity_data_escapes() {
    let w = waf(r#"
SecRule ARGS:a "@rx x" "id:1,phase:1,pass,log,msg:'m',logdata:'%{MATCHED_VAR}'"
SecRule ARGS_NAMES "@rx ^b" "id:2,phase:1,pass,log,msg:'%{MATCHED_VAR}'"
"#);
    // C1 controls as UTF-8 (U+0080, U+009F), raw 0x80-0x9F bytes, CR/LF, DEL, quote, backslash
    let tx = get(&w, "/?a=x%C2%80%C2%9F%80%9F%0D%0A%7F%22%5C%C3%A9&b%C2%85=1");
    let line = waf::config::audit_json(&tx, "rid");
    // tracing-subscriber rewrites U+007F-U+009F as `\u{80}`, which is not JSON: none may be left
    assert!(
        !line.chars().any(|c| ('\u{7f}'..='\u{9f}').contains(&c)),
        "{line}"
    );
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        v["rules"][0]["data"],
        r#"x\xc2\x80\xc2\x9f\x80\x9f\x0d\x0a\x7f"\\xc3\xa9"#
    );
    assert_eq!(v["rules"][0]["var"], "ARGS:a");
    // names and messages keep their characters; C1 ones travel as JSON escapes
    assert_eq!(v["rules"][1]["var"], "ARGS_NAMES:b\u{85}");
    assert_eq!(v["rules"][1]["msg"], "b\u{85}");
}

#[test]
fn absolute_form_target_and_absent_host() {
    let w = waf(r#"
SecRule REQUEST_URI "@streq http://ex.com/a/b c.php?q=1 x" "id:1,phase:1,pass,log"
SecRule REQUEST_URI_RAW "@streq http://ex.com/a/b%20c.php?q=1%20x" "id:2,phase:1,pass,log"
SecRule REQUEST_FILENAME "@streq /a/b c.php" "id:3,phase:1,pass,log"
SecRule REQUEST_BASENAME "@streq b c.php" "id:4,phase:1,pass,log"
SecRule ARGS:q "@streq 1 x" "id:5,phase:1,pass,log"
SecRule REQUEST_LINE "@streq GET http://ex.com/a/b%20c.php?q=1%20x HTTP/1.1" "id:6,phase:1,pass,log"
SecRule &REQUEST_HEADERS:Host "@eq 0" "id:7,phase:1,pass,log"
SecRule REQUEST_FILENAME "@streq /" "id:8,phase:1,pass,log"
"#);
    let tx = req(
        &w,
        "GET",
        "http://ex.com/a/b%20c.php?q=1%20x",
        &[("Accept", "*/*")],
        None,
    );
    assert_eq!(ids(&tx), vec![1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(
        ids(&req(&w, "GET", "https://ex.com?q=1%20x", &[], None)),
        vec![5, 7, 8]
    );
    assert_eq!(
        ids(&req(&w, "GET", "/", &[("Host", "ex.com")], None)),
        vec![8]
    );
}

#[test]
fn xml_body_stays_out_of_request_body_unless_forced() {
    // An element name is not a value: a rule on REQUEST_BODY|XML:/* must not see it when the
    // XML processor parsed the body (ModSecurity 2), but does with forceRequestBodyVariable.
    let rules = r#"
SecRule REQUEST_HEADERS:Content-Type "@rx xml" "id:100,phase:1,pass,nolog,ctl:requestBodyProcessor=XML"
SecRule REQUEST_BODY|XML:/* "@contains evil.Tag" "id:1,phase:2,deny,status:401"
SecRule XML:/* "@contains plain" "id:2,phase:2,deny,status:402"
"#;
    let x = &[("Content-Type", "application/xml")];
    let body = b"<?xml version=\"1.0\"?><r><evil.Tag a=\"b\">plain</evil.Tag></r>";
    let w = waf(rules);
    assert_eq!(status(&req(&w, "POST", "/", x, Some(body))), 402);
    let forced = waf(&format!(
        "SecAction \"id:99,phase:1,pass,nolog,ctl:forceRequestBodyVariable=On\"\n{rules}"
    ));
    assert_eq!(status(&req(&forced, "POST", "/", x, Some(body))), 401);
    // Other processors keep the body in REQUEST_BODY.
    let t = &[("Content-Type", "text/plain")];
    assert_eq!(status(&req(&w, "POST", "/", t, Some(b"evil.Tag"))), 401);
}

/// The audit line is byte for byte what `serde_json::json!` (sorted keys) wrote before it
/// was built from structs: quotes, backslashes, UTF-8 and controls in msg, var and data, a
/// block's status and phase, and a pass.
#[test]
fn audit_line_bytes_as_json_values_wrote_them() {
    let w = waf(r#"
SecRule ARGS:a "@rx x" "id:1,phase:1,pass,log,msg:'m \"q\" %{MATCHED_VAR}',logdata:'%{MATCHED_VAR}',setvar:tx.anomaly_score=+3"
SecRule ARGS_NAMES "@rx ^b" "id:2,phase:2,pass,log,msg:'%{MATCHED_VAR}'"
SecRule ARGS:d "@streq 1" "id:3,phase:2,deny,status:418,log,msg:'d'"
SecRule ARGS:o "@streq 1" "id:4,phase:2,pass,nolog,setvar:tx.outbound_anomaly_score=7"
"#);
    for uri in [
        "/?a=x%22%5C%C3%A9%0D%0A%09&b%C3%A9=1&d=1",
        "/?a=xyz&bb=2&o=1",
        "/?nothing=here",
    ] {
        let tx = get(&w, uri);
        let decision = tx.intervention.or(tx.would_block);
        let rules: Vec<serde_json::Value> = tx
            .logs
            .iter()
            .map(|l| serde_json::json!({"id": l.id, "msg": l.msg, "var": l.var, "data": l.data}))
            .collect();
        let expected = serde_json::json!({
            "request_id": "rid \"1\"",
            "action": if tx.intervention.is_some() { "block" } else if tx.would_block.is_some() { "detect" } else { "pass" },
            "status": decision.map(|i| i.status),
            "phase": decision.map(|i| i.phase),
            "anomaly_score": tx.anomaly_score(),
            "outbound_anomaly_score": tx.tx_get("outbound_anomaly_score").map(|v| String::from_utf8_lossy(v).parse::<i64>().unwrap()),
            "rules": rules,
        })
        .to_string();
        assert_eq!(waf::config::audit_json(&tx, "rid \"1\""), expected, "{uri}");
    }
}

/// `TX:/re/`, `TX:/^prefix/` targets see keys written during the request (setvar in any
/// case, captures, keys deleted and written again): the key counts that let a selector with
/// no key skip the walk follow every change.
#[test]
fn tx_key_selectors_see_keys_set_and_removed_during_the_request() {
    let w = waf(r#"
SecRule TX:/^msc_/ "!@streq 0" "id:1,phase:1,pass,log,msg:'%{MATCHED_VAR_NAME}'"
SecRule ARGS:a "@rx ^(.)" "id:2,phase:1,pass,nolog,capture,setvar:TX.MSC_%{tx.1}=1"
SecRule TX:/^msc_/ "!@streq 0" "id:3,phase:1,pass,log,msg:'%{MATCHED_VAR_NAME}'"
SecRule ARGS:del "@streq 1" "id:4,phase:1,pass,nolog,setvar:!tx.msc_x"
SecRule TX:/^msc_/ "!@streq 0" "id:5,phase:1,pass,log,msg:'%{MATCHED_VAR_NAME}'"
SecRule ARGS:b "@rx ^(.)" "id:6,phase:1,pass,nolog,setvar:tx.msc_x=2"
SecRule TX:/MSC_X$/ "@streq 2" "id:7,phase:1,pass,log,msg:'%{MATCHED_VAR_NAME}'"
SecRule TX:/^[0-9]$/ "@rx ." "id:8,phase:2,pass,log"
SecRule &TX:/^msc_/ "@eq 0" "id:9,phase:2,pass,log"
"#);
    assert_eq!(
        ids(&get(&w, "/")),
        vec![9],
        "no msc_ key: only the count rule"
    );
    let tx = get(&w, "/?a=x");
    assert_eq!(ids(&tx), vec![3, 5, 8]);
    assert_eq!(tx.logs[0].msg, "TX:msc_x");
    assert_eq!(
        ids(&get(&w, "/?a=x&del=1")),
        vec![3, 8, 9],
        "deleted: none left"
    );
    assert_eq!(ids(&get(&w, "/?a=x&del=1&b=y")), vec![3, 7, 8]);
}

/// A transaction starts from the tables the last one left (`tx::spare`): nothing of the
/// earlier request may show (value ids repeat from request to request, and the transformation
/// cache, `MATCHED_VAR_NAME`s and memo rows are keyed by them), also with two engines
/// taking turns on the thread.
#[test]
fn kept_tables_carry_no_state() {
    let rules = r#"
SecRule ARGS "@rx <script" "id:1,phase:2,deny,status:403,t:none,t:lowercase,log"
SecRule ARGS "@streq bbb" "id:2,phase:2,pass,log,t:lowercase,setvar:'tx.where=%{MATCHED_VAR_NAME}'"
SecRule ARGS:a "@rx ^(\w)" "id:3,phase:2,pass,nolog,capture,setvar:tx.first=%{tx.1}"
SecAction "id:4,phase:2,pass,nolog,setvar:tx.score=+5,setvar:tx.neg=-7,setvar:tx.neg=-%{tx.score}"
SecRule &TX:from_a "@eq 0" "id:5,phase:2,pass,log"
SecRule ARGS:a "@streq AAA" "id:6,phase:2,pass,nolog,setvar:tx.from_a=1"
SecRule REQUEST_COOKIES "@rx ." "id:7,phase:2,pass,log"
"#;
    let (w1, w2) = (waf(rules), waf(rules));
    for w in [&w1, &w2, &w1] {
        // warm the memo: "hello" gets a row and its misses are kept
        for _ in 0..3 {
            let tx = get(w, "/?a=hello");
            assert_eq!(ids(&tx), vec![5]);
        }
        let tx = req(
            w,
            "GET",
            "/?a=AAA",
            &[("Host", "h"), ("Cookie", "c=1")],
            None,
        );
        assert_eq!(ids(&tx), vec![5, 7]);
        assert_eq!(tx.tx_get("from_a"), Some(&b"1"[..]));
        assert_eq!(tx.tx_get("first"), Some(&b"A"[..]));
        // the same value ids now hold other bytes
        let tx = get(w, "/?zz=BBB");
        assert_eq!(ids(&tx), vec![2, 5]);
        assert_eq!(tx.tx_get("where"), Some(&b"ARGS:zz"[..]));
        assert_eq!(tx.tx_get("first"), None);
        assert_eq!(tx.tx_get("score"), Some(&b"5"[..]));
        assert_eq!(tx.tx_get("neg"), Some(&b"-12"[..]));
        assert_eq!(tx.tx_get("from_a"), None);
        let tx = get(w, "/?a=%3CSCRIPT%3E");
        assert_eq!(
            status(&tx),
            403,
            "a value at a memoised value's id is evaluated"
        );
        let tx = get(w, "/?a=hello");
        assert_eq!(ids(&tx), vec![5]);
        assert!(tx.args().iter().all(|(k, v)| k == "a" && v == "hello"));
    }
}

/// A GET of `uri` with headers `hs` on the warm engine `warm`, checked against an engine
/// freshly built from the same `rules`: the same logged rule ids and the same status.
fn as_fresh(warm: &Waf, rules: &str, uri: &str, hs: &[(&str, &str)]) -> Transaction {
    let a = req(warm, "GET", uri, hs, None);
    let b = req(&waf(rules), "GET", uri, hs, None);
    assert_eq!(ids(&a), ids(&b), "{hs:?} {uri}");
    assert_eq!(status(&a), status(&b), "{hs:?} {uri}");
    a
}

/// Transformation results kept across transactions (`tcache`): a warm engine answers as a
/// fresh one, whatever values came before (same value, another value, the same bytes again).
#[test]
fn chain_results_kept_across_transactions_answer_as_fresh() {
    let rules = r#"
SecRule REQUEST_HEADERS:User-Agent "@streq a13d219e5ded760716f5952758285c6f6a575108" "id:1,phase:1,pass,log,t:sha1,t:hexEncode"
SecRule REQUEST_HEADERS:User-Agent "@streq curl/8" "id:2,phase:1,pass,log,t:lowercase"
SecRule REQUEST_HEADERS "@rx ^mozilla" "id:3,phase:1,pass,log,t:lowercase,t:removeWhitespace"
"#;
    let warm = waf(rules);
    for ua in [
        "curl/8",
        "CURL/8",
        "curl/8",
        "Mozilla 5",
        "curl/8",
        "x",
        "CURL/8",
    ] {
        let hs = [("Host", "example.com"), ("User-Agent", ua)];
        let a = as_fresh(&warm, rules, "/", &hs);
        let want: &[u32] = match ua {
            "curl/8" => &[1, 2],
            "CURL/8" => &[2],
            "Mozilla 5" => &[3],
            _ => &[],
        };
        assert_eq!(ids(&a), want, "{ua}");
    }
}

/// The intern table and the chain results are the engine's, shared by the transactions a
/// VM runs at once (a request waiting for its response keeps its transaction): many
/// transactions of one engine alive together, with values that repeat, differ by one byte
/// or collide in case, each answer as a fresh engine's.
#[test]
fn transactions_alive_together_share_kept_values_and_answer_as_fresh() {
    let rules = r#"
SecRule REQUEST_HEADERS:User-Agent "@streq a13d219e5ded760716f5952758285c6f6a575108" "id:1,phase:1,pass,log,t:sha1,t:hexEncode"
SecRule REQUEST_HEADERS:User-Agent "@streq curl/8" "id:2,phase:1,pass,log,t:lowercase"
SecRule ARGS "@rx (?i)union\s+select" "id:3,phase:2,deny,status:403,t:urlDecodeUni"
"#;
    let warm = waf(rules);
    let uas = ["curl/8", "curl/9", "CURL/8", "curl/8", "curl/8 ", "curl/8"];
    let uris = [
        "/?q=1",
        "/?q=union+select",
        "/?q=1",
        "/?q=UNION%20SELECT",
        "/?q=union+selec",
        "/?q=1",
    ];
    let mut alive = Vec::new();
    for round in 0..3 {
        for (ua, uri) in uas.iter().zip(uris.iter().cycle().skip(round)) {
            let hs = [("Host", "example.com"), ("User-Agent", *ua)];
            let a = as_fresh(&warm, rules, uri, &hs);
            let attack = uri.contains("union+select") || uri.contains("UNION%20SELECT");
            assert_eq!(status(&a), if attack { 403 } else { 200 }, "{ua} {uri}");
            // (`t:lowercase`: `CURL/8` too, not `curl/8 `)
            assert_eq!(
                ids(&a).contains(&2),
                ua.eq_ignore_ascii_case("curl/8"),
                "{ua} {uri}"
            );
            alive.push(a);
        }
    }
    assert_eq!(alive.len(), 18);
}

/// Known misses are told from segments (one target with the exclusions of its variable),
/// shared by the lists that have the same one. A list with an exclusion of a variable and a
/// list without it read different segments of it: a warm value known to miss the rule that
/// excludes `note` must not make the rule that reads `note` skip the attack in it. And a
/// list's segments are collected again when the body adds values between phases.
#[test]
fn warm_known_misses_share_only_equal_segments() {
    let rules = r#"
SecRule ARGS|!ARGS:note "@rx evil" "id:1,phase:2,pass,log"
SecRule ARGS "@rx evil" "id:2,phase:2,pass,log"
SecRule REQUEST_HEADERS:User-Agent|ARGS|!REQUEST_HEADERS:x-skip "@rx evil" "id:3,phase:2,pass,log"
SecRule ARGS|!ARGS:other "@rx evil" "id:4,phase:2,pass,log"
SecRule ARGS "@rx bad" "id:5,phase:1,pass,log"
SecRule ARGS "@rx bad" "id:6,phase:2,pass,log"
"#;
    let w = waf(rules);
    let hs = [("Host", "example.com"), ("User-Agent", "curl/8")];
    // (first sight, then a memo row, then its misses known)
    for round in 0..4 {
        let tx = as_fresh(&w, rules, "/?x=hello&note=evil&y=world", &hs);
        assert_eq!(ids(&tx), [2, 3, 4], "request {round}");
        let tx = as_fresh(&w, rules, "/?x=hello&y=world", &hs);
        assert_eq!(ids(&tx), Vec::<u32>::new(), "request {round}");
    }
    let post = [
        ("Host", "example.com"),
        ("User-Agent", "curl/8"),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    for round in 0..4 {
        // phase 1 reads the query alone, phase 2 the body too: ARGS again
        let tx = req(&w, "POST", "/?x=hello", &post, Some(b"y=bad"));
        assert_eq!(ids(&tx), [6], "request {round}");
    }
}

/// The evaluation loop steps over runs of known misses at once, across markers and up to a
/// rule that must be evaluated: a warm engine answers as a fresh one, counts the same rules
/// as evaluated, and takes the same `skipAfter` jumps, whichever value comes.
#[test]
fn warm_runs_of_known_misses_answer_as_fresh() {
    let rules = r#"
SecRule ARGS "@rx evil" "id:1,phase:2,pass,log"
SecMarker M1
SecRule ARGS "@rx bad" "id:2,phase:2,pass,log,skipAfter:M2"
SecRule ARGS "@rx worse" "id:3,phase:2,pass,log"
SecRule ARGS_NAMES "@rx worse" "id:4,phase:2,pass,log"
SecMarker M2
SecRule ARGS "@rx evil" "id:5,phase:2,pass,log"
SecRule REQUEST_HEADERS:User-Agent "@rx curl" "id:6,phase:2,pass,log"
SecRule ARGS "@rx worse" "id:7,phase:2,deny,status:403"
SecRule ARGS "@rx evil" "id:8,phase:2,deny,status:403"
"#;
    let w = waf(rules);
    let hs = [("Host", "example.com"), ("User-Agent", "curl/8")];
    for round in 0..4 {
        for (uri, want) in [
            ("/?a=fine", &[6][..]),
            ("/?a=bad&b=worse", &[2, 6, 7][..]),
            ("/?a=worse", &[3, 6, 7][..]),
            ("/?a=evil", &[1, 5, 6, 8][..]),
            ("/?worse=1", &[4, 6][..]),
        ] {
            let tx = as_fresh(&w, rules, uri, &hs);
            assert_eq!(ids(&tx), want, "{uri}, request {round}");
            let fresh = req(&waf(rules), "GET", uri, &hs, None);
            assert_eq!(tx.counters.0, fresh.counters.0, "{uri}, request {round}");
        }
    }
}

/// A list whose values keep including one never seen before is not checked for known misses
/// on every request (`tx::misses::Hint`): its rules are evaluated value by value, and an attack
/// in it is caught on every request, before, while and after the values repeat again.
#[test]
fn lists_of_values_never_seen_still_catch_attacks() {
    let rules = r#"
SecRule ARGS "@rx evil" "id:1,phase:2,deny,status:403"
SecRule ARGS|REQUEST_HEADERS:User-Agent "@rx worse" "id:2,phase:2,pass,log"
"#;
    let w = waf(rules);
    let hs = [("Host", "example.com"), ("User-Agent", "curl/8")];
    for n in 0..120u32 {
        // unique values for 60 requests, then the same ones again
        let t = if n < 60 { n } else { 7 };
        let attack = n % 5 == 4;
        let uri = match (attack, n % 3) {
            (true, _) => format!("/?t={t}&q=evil"),
            (false, 0) => format!("/?t={t}&q=worse"),
            _ => format!("/?t={t}&q=fine"),
        };
        let tx = as_fresh(&w, rules, &uri, &hs);
        assert_eq!(status(&tx), if attack { 403 } else { 200 }, "{uri}");
    }
}

/// A prefiltered `@rx` (its matches start with a literal) tests the value's bytes against the
/// regex's byte needs before the prefilter's scan: a value without them (a number) is skipped
/// as the prefilter skips it, without an operator call; a value with them reaches the regex,
/// which still decides.
#[test]
fn prefiltered_regexes_test_their_byte_needs_first() {
    let rules = r#"SecRule ARGS "@rx (?i)union\s+select" "id:1,phase:2,deny,status:403""#;
    let w = waf(rules);
    let hs = [("Host", "example.com")];
    for (q, blocked, calls) in [
        ("12345", false, 0),
        ("1%20UNION%20select%202", true, 1),
        ("union%20selection", true, 1),
        ("union%20set%20selector", false, 1),
        // (the prefilter finds `union`, but `select` needs bytes this value does not have)
        ("union%20all", false, 0),
        ("98765", false, 0),
    ] {
        let uri = format!("/?q={q}");
        let tx = req(&w, "GET", &uri, &hs, None);
        assert_eq!(status(&tx) == 403, blocked, "{q}");
        assert_eq!(tx.counters.1, calls, "{q}: operator calls");
    }
}

/// A target list's "every value misses" words are kept only for the words that hold the memo
/// slots of the rules reading it, and each rule reads its own: with 130 rules on one list
/// (slots in three words), a warm value that misses the rule at slot 36 must not skip the
/// rule at slot 100 (same bit, next word) that matches it.
#[test]
fn warm_known_misses_read_each_rules_own_memo_word() {
    let mut rules = String::new();
    for i in 0..130u32 {
        rules.push_str(&format!(
            "SecRule ARGS \"@streq v{i:03}\" \"id:{},phase:2,deny,status:403\"\n",
            1000 + i
        ));
    }
    let w = waf(&rules);
    let hs = [("Host", "example.com")];
    for n in [100u32, 70, 129, 5] {
        let uri = format!("/?a=v{n:03}");
        // (first sight, then a memo row, then its misses known)
        for round in 0..4 {
            let tx = req(&w, "GET", &uri, &hs, None);
            assert_eq!(status(&tx), 403, "{uri}, request {round}");
            assert_eq!(
                tx.intervention.map(|i| i.rule_id),
                Some(1000 + n),
                "{uri}, request {round}"
            );
        }
    }
    for round in 0..4 {
        assert_eq!(
            status(&req(&w, "GET", "/?a=v999", &hs, None)),
            200,
            "{round}"
        );
    }
}

/// A target list with no value in a phase (no query argument, no cookie) has every rule
/// of it skipped as a known miss, counted as evaluated, without an operator call; the
/// next request that brings a value in any part of the list (an argument, a cookie, each
/// in its own segment) is evaluated and caught, warm or not.
#[test]
fn lists_with_no_value_skip_their_rules_and_catch_the_next_value() {
    let rules = r#"
SecRule ARGS|REQUEST_COOKIES|!REQUEST_COOKIES:theme "@rx (?i)<script" "id:1,phase:2,deny,status:403"
SecRule ARGS|REQUEST_COOKIES|!REQUEST_COOKIES:theme "@contains ../" "id:2,phase:2,deny,status:403"
"#;
    let w = waf(rules);
    let host = ("Host", "example.com");
    let quiet = [host, ("Cookie", "theme=<script>")];
    for round in 0..4 {
        for (uri, cookie, want) in [
            ("/", None, 200),
            ("/?q=%3Cscript%3E", None, 403),
            ("/", Some("sid=<SCRIPT>"), 403),
            ("/", None, 200),
            ("/?f=..%2F..%2Fetc", None, 403),
            ("/", Some("sid=abc; theme=<script>"), 200),
        ] {
            let mut hs = vec![host];
            if let Some(c) = cookie {
                hs.push(("Cookie", c));
            }
            let tx = req(&w, "GET", uri, &hs, None);
            assert_eq!(status(&tx), want, "round {round}: {uri} {cookie:?}");
        }
        // nothing in the list (the only cookie excluded): both rules counted, no call
        let tx = req(&w, "GET", "/", &quiet, None);
        assert_eq!(status(&tx), 200, "round {round}");
        assert_eq!(tx.counters, (2, 0), "round {round}: rules, operator calls");
    }
}
