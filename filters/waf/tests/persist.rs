//! Persistent collections (`initcol`, `setvar`/`expirevar`/`deprecatevar` on them) kept
//! across transactions in a store, and CRS 3's DoS protection (912xxx) working on them.

use std::cell::Cell;
use std::rc::Rc;
use waf::config::{build, Config, Waf};
use waf::persist::{CollectionStore, LocalStore};
use waf::tx::Transaction;

mod support;
use support::{installed, respond, Fs};

fn waf(rules: &str) -> Waf {
    let cfg = Config {
        inline: rules.to_string(),
        ..Config::default()
    };
    build(&cfg, None, None).unwrap_or_else(|e| panic!("load failed: {e}"))
}

/// A store on a clock the test moves.
fn store() -> (Rc<dyn CollectionStore>, Rc<Cell<u64>>) {
    let clock = Rc::new(Cell::new(1_700_000_000u64));
    let c = clock.clone();
    (Rc::new(LocalStore::new(Box::new(move || c.get()))), clock)
}

/// One request from `ip` through every phase; the transaction's changes committed.
fn request(w: &Waf, store: &Rc<dyn CollectionStore>, ip: &str, uri: &str) -> Transaction {
    let hs = vec![
        ("Host".to_string(), "localhost".to_string()),
        ("User-Agent".to_string(), "persist-test".to_string()),
        ("Accept".to_string(), "*/*".to_string()),
    ];
    let mut tx = w.transaction();
    tx.set_store(store.clone(), false);
    tx.set_request("GET", uri, "HTTP/1.1", &hs, &format!("{ip}:4000"), "rid");
    tx.run_phase(1);
    tx.run_phase(2);
    if tx.intervention.is_none() {
        respond(&mut tx, 200, &[("Content-Type", "text/html")], b"ok");
    } else {
        tx.run_phase(5);
    }
    tx.commit();
    tx
}

fn status(tx: &Transaction) -> u16 {
    tx.intervention.map_or(200, |i| i.status)
}

const COUNTER: &str = r#"
SecRuleEngine On
SecCollectionTimeout 600
SecAction "id:1,phase:1,pass,nolog,initcol:ip=%{REMOTE_ADDR}"
SecRule IP:BLOCKED "@eq 1" "id:2,phase:1,deny,status:429,log"
SecAction "id:3,phase:5,pass,nolog,setvar:ip.hits=+1"
SecRule IP:HITS "@ge 3" "id:4,phase:5,pass,log,setvar:ip.blocked=1,expirevar:ip.blocked=30,setvar:!ip.hits"
"#;

#[test]
fn counters_persist_per_key_and_block_expires() {
    let w = waf(COUNTER);
    let (s, clock) = store();
    for _ in 0..3 {
        assert_eq!(status(&request(&w, &s, "10.0.0.1", "/")), 200);
    }
    // The third request set the block: the fourth from that address is refused, another
    // address is not.
    assert_eq!(status(&request(&w, &s, "10.0.0.1", "/")), 429);
    assert_eq!(status(&request(&w, &s, "10.0.0.2", "/")), 200);
    // The flag expires after 30 s; the counter started again from nothing.
    clock.set(clock.get() + 31);
    assert_eq!(status(&request(&w, &s, "10.0.0.1", "/")), 200);
    // Without a store a transaction's collection lives as long as it does (no block ever).
    let mut tx = w.transaction();
    tx.set_request("GET", "/", "HTTP/1.1", &[], "10.0.0.1:1", "r");
    tx.run_phase(1);
    assert!(tx.intervention.is_none());
}

#[test]
fn records_time_out_and_deprecate() {
    let w = waf(r#"
SecRuleEngine On
SecCollectionTimeout 60
SecAction "id:1,phase:1,pass,nolog,initcol:ip=%{REMOTE_ADDR},initcol:global=global"
SecRule IP:SCORE "@ge 10" "id:2,phase:1,deny,status:403,log"
SecRule REQUEST_URI "@contains attack" "id:3,phase:2,pass,log,setvar:ip.score=+5,setvar:global.attacks=+1"
SecAction "id:4,phase:5,pass,nolog,deprecatevar:ip.score=5/10"
SecRule GLOBAL:ATTACKS "@ge 3" "id:5,phase:1,deny,status:503,log"
"#);
    let (s, clock) = store();
    request(&w, &s, "10.0.0.1", "/attack");
    request(&w, &s, "10.0.0.1", "/attack");
    assert_eq!(status(&request(&w, &s, "10.0.0.1", "/")), 403);
    // 20 s later two periods of 10 s take 10 off the score, at the end of the next request
    // (deprecatevar runs in phase 5).
    clock.set(clock.get() + 20);
    assert_eq!(status(&request(&w, &s, "10.0.0.1", "/")), 403);
    assert_eq!(status(&request(&w, &s, "10.0.0.1", "/")), 200);
    // GLOBAL is one record for every address.
    request(&w, &s, "10.0.0.9", "/attack");
    assert_eq!(status(&request(&w, &s, "10.0.0.7", "/")), 503);
    // 61 s without a change: every record is gone.
    clock.set(clock.get() + 61);
    assert_eq!(status(&request(&w, &s, "10.0.0.7", "/")), 200);
    // Built-in fields: IS_NEW, UPDATE_COUNTER, KEY.
    let w = waf(r#"
SecAction "id:1,phase:1,pass,nolog,initcol:ip=%{REMOTE_ADDR}"
SecRule IP:IS_NEW "@eq 1" "id:2,phase:1,pass,log,msg:'new %{ip.key}'"
SecRule IP:UPDATE_COUNTER "@ge 1" "id:3,phase:1,pass,log,msg:'seen %{ip.update_counter}'"
SecAction "id:4,phase:5,pass,nolog,setvar:ip.x=1"
"#);
    let (s, _) = store();
    let t = request(&w, &s, "10.1.1.1", "/");
    assert_eq!(
        t.logs.iter().map(|l| l.msg.as_str()).collect::<Vec<_>>(),
        ["new 10.1.1.1"]
    );
    let t = request(&w, &s, "10.1.1.1", "/");
    assert_eq!(
        t.logs.iter().map(|l| l.msg.as_str()).collect::<Vec<_>>(),
        ["seen 1"]
    );
}

#[test]
fn hostile_keys_and_setvar_floods_stay_bounded() {
    // A key made of what the client sends, as long as the client likes; a rule that would
    // add a field per argument name.
    let w = waf(r#"
SecRuleEngine On
SecAction "id:1,phase:1,pass,nolog,initcol:ip=%{REQUEST_HEADERS.User-Agent}"
SecRule ARGS_NAMES "@rx ." "id:2,phase:2,pass,nolog,setvar:ip.%{MATCHED_VAR}=1"
"#);
    let (s, _) = store();
    let q: String = (0..500).map(|i| format!("a{i}=1&")).collect();
    let t = request(&w, &s, "10.0.0.1", &format!("/?{q}"));
    assert!(t.intervention.is_none());
    let big = "x".repeat(100_000);
    let hs = vec![("User-Agent".to_string(), big)];
    let mut tx = w.transaction();
    tx.set_store(s.clone(), false);
    tx.set_request("GET", "/?a=1", "HTTP/1.1", &hs, "10.0.0.1:1", "r");
    tx.run_phase(1);
    tx.run_phase(2);
    tx.commit();
    let rec = s.read(&[b"IP=".as_slice(), &[b'x'; 997]].concat());
    assert_eq!(rec.fields.len(), 1, "the key is cut at 1000 bytes");
    // Unknown collections and malformed actions are load errors with the line.
    let cfg = Config {
        inline: "SecAction \"id:1,phase:1,pass,initcol:nope=1\"".into(),
        ..Config::default()
    };
    let e = build(&cfg, None, None).err().expect("load error");
    assert!(e.contains("initcol: unsupported collection nope"), "{e}");
}

#[test]
fn crs_dos_protection_blocks_a_burst_and_lets_it_expire() {
    if !installed("/usr/share/modsecurity-crs/rules/REQUEST-912-DOS-PROTECTION.conf") {
        return;
    }
    let mut data = std::collections::BTreeMap::new();
    data.insert(
        "/sluice/dos-setup.conf".to_string(),
        r#"SecAction "id:900700,phase:1,nolog,pass,t:none,setvar:tx.dos_burst_time_slice=60,setvar:tx.dos_counter_threshold=3,setvar:tx.dos_block_timeout=600""#.to_string(),
    );
    let cfg = Config {
        rules: vec![
            "/etc/nginx/modsecurity.conf".into(),
            "/etc/modsecurity/crs/crs-setup.conf".into(),
            "/sluice/dos-setup.conf".into(),
            "/usr/share/modsecurity-crs/rules/*.conf".into(),
        ],
        data,
        mode: Some("block".into()),
        ..Config::default()
    };
    let w = build(&cfg, Some(&Fs), None).unwrap_or_else(|e| panic!("CRS load failed: {e}"));
    let (s, clock) = store();
    // Two bursts of 3 counted requests (static files are not counted) set the block at the
    // end of the sixth.
    for i in 0..6 {
        let t = request(&w, &s, "10.9.9.9", "/api/item");
        assert_eq!(status(&t), 200, "request {i}: {:?}", t.logs);
        if i < 5 {
            let t = request(&w, &s, "10.9.9.9", "/logo.png");
            assert_eq!(status(&t), 200, "static {i}: {:?}", t.logs);
        }
    }
    let t = request(&w, &s, "10.9.9.9", "/api/item");
    assert_eq!(status(&t), 403);
    assert!(t.logs.iter().any(|l| l.id == 912120), "{:?}", t.logs);
    // Blocked on: 912130 (nolog) keeps refusing; another client is served.
    assert_eq!(status(&request(&w, &s, "10.9.9.9", "/api/item")), 403);
    assert_eq!(status(&request(&w, &s, "10.9.9.8", "/api/item")), 200);
    // dos_block_timeout later, served again.
    clock.set(clock.get() + 601);
    assert_eq!(status(&request(&w, &s, "10.9.9.9", "/api/item")), 200);
}
