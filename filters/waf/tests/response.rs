//! Response inspection with inline rules: phase 3 (status, protocol, headers) and phase 4
//! (body), `SecResponseBody*` settings (access, MIME types, limit and its action),
//! `ctl:responseBodyAccess`, and what a request decision leaves for the response phases.

use waf::config::{build, Config, Waf};
use waf::load::LimitAction;
use waf::tx::Transaction;

mod support;
use support::respond;

fn waf(rules: &str) -> Waf {
    let cfg = Config {
        inline: rules.to_string(),
        ..Config::default()
    };
    build(&cfg, None, None).unwrap_or_else(|e| panic!("load failed: {e}"))
}

/// A GET through phases 1 and 2 (as the filter runs them before the response).
fn request(w: &Waf, uri: &str) -> Transaction {
    let hs = vec![
        ("Host".to_string(), "example.com".to_string()),
        ("User-Agent".to_string(), "curl/8".to_string()),
    ];
    let mut tx = w.transaction();
    tx.set_request("GET", uri, "HTTP/1.1", &hs, "10.1.2.3:5555", "rid");
    tx.run_phase(1);
    tx.run_phase(2);
    tx
}

fn ids(tx: &Transaction) -> Vec<u32> {
    tx.logs.iter().map(|l| l.id).collect()
}

const BODY_RULES: &str = r#"
SecResponseBodyAccess On
SecResponseBodyMimeType text/plain text/html
SecRule RESPONSE_BODY "@contains You have an error in your SQL syntax" "id:40,phase:4,deny,status:403,msg:'sql error leak'"
"#;

#[test]
fn phase3_status_protocol_and_headers() {
    let w = waf(r#"
SecRule RESPONSE_STATUS "@rx ^5\d\d$" "id:31,phase:3,pass,log,msg:'server error'"
SecRule RESPONSE_HEADERS:X-Powered-By "@contains PHP/5" "id:32,phase:3,deny,status:403,msg:'old php'"
SecRule RESPONSE_HEADERS_NAMES "@streq x-debug-token" "id:33,phase:3,pass,log,t:lowercase"
SecRule RESPONSE_PROTOCOL "@streq HTTP/1.1" "id:34,phase:3,pass,log"
SecRule RESPONSE_CONTENT_TYPE "@beginsWith text/html" "id:35,phase:3,pass,log"
SecRule RESPONSE_CONTENT_LENGTH "@gt 10" "id:36,phase:3,pass,log"
SecRule &RESPONSE_HEADERS "@eq 3" "id:37,phase:3,pass,log"
SecRule STATUS_LINE "@streq HTTP/1.1 502" "id:38,phase:3,pass,log"
"#);
    let mut tx = request(&w, "/");
    assert!(tx.wants_response());
    respond(
        &mut tx,
        502,
        &[
            ("Content-Type", "text/html"),
            ("Content-Length", "42"),
            ("X-Debug-Token", "abc"),
        ],
        b"",
    );
    assert_eq!(ids(&tx), vec![31, 33, 34, 35, 36, 37, 38]);
    assert!(tx.intervention.is_none());

    let mut tx = request(&w, "/");
    respond(&mut tx, 200, &[("X-Powered-By", "PHP/5.4.1")], b"");
    let iv = tx.intervention.expect("phase 3 deny");
    assert_eq!((iv.status, iv.rule_id, iv.phase), (403, 32, 3));
}

#[test]
fn phase4_body_of_listed_mime_types_only() {
    let w = waf(BODY_RULES);
    let leak = b"<html>Warning: You have an error in your SQL syntax near ''1''</html>";
    for ct in ["text/html", "text/html; charset=UTF-8", "Text/Plain"] {
        let mut tx = request(&w, "/");
        respond(&mut tx, 200, &[("Content-Type", ct)], leak);
        let iv = tx
            .intervention
            .unwrap_or_else(|| panic!("{ct}: not blocked"));
        assert_eq!((iv.status, iv.rule_id, iv.phase), (403, 40, 4), "{ct}");
    }
    // not listed, or no content type: never buffered, never inspected
    for ct in [Some("application/json"), Some("image/png"), None] {
        let mut tx = request(&w, "/");
        let hs: Vec<(&str, &str)> = ct.map(|c| ("Content-Type", c)).into_iter().collect();
        tx.set_response(
            200,
            "HTTP/1.1",
            &hs.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>(),
        );
        tx.run_phase(3);
        assert!(!tx.wants_response_body(), "{ct:?}");
        tx.process_response_body(leak, false);
        tx.run_phase(4);
        assert!(tx.intervention.is_none(), "{ct:?}");
    }
    // a clean body passes
    let mut tx = request(&w, "/");
    respond(
        &mut tx,
        200,
        &[("Content-Type", "text/html")],
        b"<p>hello</p>",
    );
    assert!(tx.intervention.is_none() && tx.logs.is_empty());
}

#[test]
fn mime_type_list_replaces_and_clears() {
    let w = waf(&format!(
        "{BODY_RULES}\nSecResponseBodyMimeType application/json\n"
    ));
    let mut tx = request(&w, "/");
    respond(
        &mut tx,
        200,
        &[("Content-Type", "application/json")],
        b"{\"e\":\"You have an error in your SQL syntax\"}",
    );
    assert_eq!(tx.intervention.map(|i| i.rule_id), Some(40));
    let mut tx = request(&w, "/");
    respond(
        &mut tx,
        200,
        &[("Content-Type", "text/html")],
        b"You have an error in your SQL syntax",
    );
    assert!(tx.intervention.is_none(), "text/html no longer listed");

    let w = waf(&format!("{BODY_RULES}\nSecResponseBodyMimeTypesClear\n"));
    let mut tx = request(&w, "/");
    tx.set_response(
        200,
        "HTTP/1.1",
        &[("Content-Type".into(), "text/html".into())],
    );
    assert!(!tx.wants_response_body());
}

#[test]
fn body_access_off_by_default_and_ctl_turns_it_on() {
    let rule = r#"SecRule RESPONSE_BODY "@contains secret" "id:41,phase:4,deny,status:403""#;
    let w = waf(rule);
    let mut tx = request(&w, "/");
    respond(&mut tx, 200, &[("Content-Type", "text/html")], b"a secret");
    assert!(
        tx.intervention.is_none(),
        "SecResponseBodyAccess defaults to Off"
    );

    let w = waf(&format!(
        "{rule}\nSecRule REQUEST_FILENAME \"@beginsWith /admin\" \"id:42,phase:1,pass,nolog,ctl:responseBodyAccess=On\"\n"
    ));
    let mut tx = request(&w, "/admin/x");
    respond(&mut tx, 200, &[("Content-Type", "text/html")], b"a secret");
    assert_eq!(tx.intervention.map(|i| i.rule_id), Some(41));
    let mut tx = request(&w, "/public");
    respond(&mut tx, 200, &[("Content-Type", "text/html")], b"a secret");
    assert!(tx.intervention.is_none());

    // and ctl:responseBodyAccess=Off in phase 3 drops the body inspection
    let w = waf(&format!(
        "{BODY_RULES}\nSecRule RESPONSE_HEADERS:X-No-Inspect \"@streq 1\" \"id:43,phase:3,pass,nolog,ctl:responseBodyAccess=Off\"\n"
    ));
    let mut tx = request(&w, "/");
    tx.set_response(
        200,
        "HTTP/1.1",
        &[
            ("Content-Type".into(), "text/html".into()),
            ("X-No-Inspect".into(), "1".into()),
        ],
    );
    tx.run_phase(3);
    assert!(!tx.wants_response_body());
}

#[test]
fn body_limit_and_partial_processing() {
    let w = waf(&format!(
        "{BODY_RULES}\nSecResponseBodyLimit 64\nSecResponseBodyLimitAction ProcessPartial\n\
         SecRule OUTBOUND_DATA_ERROR \"@eq 1\" \"id:44,phase:4,pass,log,msg:'partial'\"\n"
    ));
    let mut tx = request(&w, "/");
    assert_eq!(tx.response_body_limit(), (64, LimitAction::ProcessPartial));
    // the leak within the first 64 bytes is caught, the partial body is flagged
    let mut body = b"You have an error in your SQL syntax".to_vec();
    body.resize(1000, b'.');
    respond(&mut tx, 200, &[("Content-Type", "text/html")], &body);
    assert_eq!(ids(&tx), vec![40]);
    assert_eq!(tx.intervention.map(|i| i.rule_id), Some(40));
    // beyond the limit it is not seen
    let mut tx = request(&w, "/");
    let mut body = vec![b'.'; 100];
    body.extend_from_slice(b"You have an error in your SQL syntax");
    respond(&mut tx, 200, &[("Content-Type", "text/html")], &body);
    assert!(tx.intervention.is_none());
    assert_eq!(ids(&tx), vec![44]);

    // defaults: ModSecurity's 512 KiB and Reject
    let w = waf(BODY_RULES);
    let tx = request(&w, "/");
    assert_eq!(tx.response_body_limit(), (524_288, LimitAction::Reject));
    // the filter config overrides the directive
    let cfg = Config {
        inline: format!("{BODY_RULES}\nSecResponseBodyLimit 64\n"),
        response_body_limit: Some(4096),
        ..Config::default()
    };
    let w = build(&cfg, None, None).unwrap();
    assert_eq!(request(&w, "/").response_body_limit().0, 4096);
}

#[test]
fn detection_only_flags_without_blocking() {
    let w = waf(&format!("SecRuleEngine DetectionOnly\n{BODY_RULES}"));
    let mut tx = request(&w, "/");
    respond(
        &mut tx,
        200,
        &[("Content-Type", "text/plain")],
        b"You have an error in your SQL syntax",
    );
    assert!(tx.intervention.is_none());
    assert_eq!(tx.would_block.map(|i| (i.rule_id, i.phase)), Some((40, 4)));
}

#[test]
fn request_decisions_end_the_response_phases() {
    let w = waf(&format!(
        "{BODY_RULES}\nSecRule ARGS:x \"@streq bad\" \"id:45,phase:1,deny,status:403\"\n\
         SecRule ARGS:x \"@streq ok\" \"id:46,phase:1,allow\"\n"
    ));
    assert!(!request(&w, "/?x=bad").wants_response(), "blocked");
    assert!(!request(&w, "/?x=ok").wants_response(), "allowed");
    assert!(request(&w, "/?x=other").wants_response());
    // no rule in phases 3 and 4: nothing waits for the response
    let w = waf(r#"SecRule ARGS "@streq x" "id:47,phase:2,deny""#);
    assert!(!request(&w, "/").wants_response());
}

#[test]
fn response_directives_are_checked() {
    let cfg = Config {
        inline: "SecResponseBodyLimitAction Drop\n".into(),
        ..Config::default()
    };
    let e = build(&cfg, None, None).err().expect("load error");
    assert!(e.contains("SecResponseBodyLimitAction"), "{e}");
    let cfg = Config {
        inline: "SecResponseBodyLimit lots\n".into(),
        ..Config::default()
    };
    assert!(build(&cfg, None, None).is_err());
}
