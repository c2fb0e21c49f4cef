//! `sluice test`: the go-ftw test runner, run as a user runs it (the binary, a policy
//! file, YAML test files; nothing else started). The policy's pool points at a dead
//! peer: the 200 answers and echoed requests can only come from the runner's stub origin.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::*;
use crate::waf::crs_lists;

/// The YAML files of these tests (proxy/tests/suite/ftw/).
fn yaml(name: &str) -> PathBuf {
    repo().join("proxy/tests/suite/ftw").join(name)
}

/// Runs `sluice test --policy POLICY ARGS...`.
fn sluice_test(policy: &Path, args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("test")
        .arg("--policy")
        .arg(policy)
        .args(args)
        .output()
        .unwrap()
}

/// `sluice test`'s standard output, after checking it exited with `code` (both outputs
/// shown when not).
fn exited(out: &std::process::Output, code: i32) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}

fn crs_policy(dir: &Path) -> PathBuf {
    let (files, rules) = crs_lists();
    let text = format!(
        "[limits]\nmemory_mb = 256\nstartup_ms = 60000\ncallback_ms = 1000\n\n[pools.o]\npeers = [\"{DEAD_PEER}\"]\n\n[filters.waf]\nmodule = {:?}\nfiles = [{}]\nconfig = {{ rules = [{}], mode = \"block\", status = 403 }}\n\n[[routes]]\nfilters = [\"waf\"]\npool = \"o\"\n",
        filter("waf.wasm").display().to_string(),
        files,
        rules
    );
    let path = dir.join("policy.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn ftw_runs_go_ftw_files_against_the_crs() {
    if !require("crs", CRS_RULES) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let policy = crs_policy(dir.path());
    let json = dir.path().join("report.json");
    let junit = dir.path().join("report.xml");
    let out = sluice_test(
        &policy,
        &[
            yaml("crs.yaml").as_os_str(),
            yaml("legacy.yaml").as_os_str(),
            "--json".as_ref(),
            json.as_os_str(),
            "--junit".as_ref(),
            junit.as_os_str(),
        ],
    );
    let stdout = exited(&out, 0);
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("PASS {name} [")))
            .unwrap_or_else(|| panic!("no PASS line for {name}:\n{stdout}"))
            .to_string()
    };
    assert!(line("900001-1").contains("942100"), "{stdout}");
    assert!(line("900001-2").contains("930100"), "{stdout}");
    assert_eq!(line("900001-3"), "PASS 900001-3 []", "{stdout}");
    assert!(line("legacy-1").contains("942100"), "{stdout}");
    assert!(
        stdout.contains("sluice test: 6 passed, 0 failed, 0 skipped, 6 total"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["passed"], 6);
    assert_eq!(report["failed"], 0);
    assert_eq!(report["tests"][0]["name"], "900001-1");
    assert!(report["tests"][0]["ids"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!(942100)));
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("<testsuites name=\"sluice test\" tests=\"6\" failures=\"0\""),
        "{xml}"
    );
    assert!(xml.contains("<testcase name=\"900001-1\""), "{xml}");
    assert!(!xml.contains("<failure"), "{xml}");
}

#[test]
fn ftw_failing_expectation_exits_1_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("own.conf"),
        "SecRuleEngine On\nSecRule ARGS \"@contains evil\" \"id:1001,phase:2,deny,status:403,log,msg:'evil argument'\"\n",
    )
    .unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[pools.o]\npeers = [\"{DEAD_PEER}\"]\n\n[filters.waf]\nmodule = {:?}\nfiles = [\"own.conf\"]\nconfig = {{ rules = [\"own.conf\"], mode = \"block\", status = 403 }}\n\n[[routes]]\nfilters = [\"waf\"]\npool = \"o\"\n",
            filter("waf.wasm").display().to_string()
        ),
    )
    .unwrap();
    let junit = dir.path().join("report.xml");
    let out = sluice_test(
        &policy,
        &[
            yaml("failing.yaml").as_os_str(),
            "--junit".as_ref(),
            junit.as_os_str(),
        ],
    );
    let stdout = exited(&out, 1);
    assert!(
        stdout.lines().any(|l| l
            == "FAIL 1001-1 [] stage 1: status 200, expected 403; stage 1: expected ids not logged: [1001]"),
        "{stdout}"
    );
    assert!(stdout.contains("PASS 1001-2 [1001]"), "{stdout}");
    assert!(
        stdout.contains("sluice test: 1 passed, 1 failed, 0 skipped, 2 total"),
        "{stdout}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("<failure message=\"stage 1: status 200"),
        "{xml}"
    );

    // --include selects by test name: the passing test alone exits 0.
    let out = sluice_test(
        &policy,
        &[
            yaml("failing.yaml").as_os_str(),
            "--include".as_ref(),
            "1001-2".as_ref(),
        ],
    );
    let stdout = exited(&out, 0);
    assert!(
        stdout.contains("sluice test: 1 passed, 0 failed, 0 skipped, 1 total"),
        "{stdout}"
    );
}

#[test]
fn ftw_policies_waf_tests_pass() {
    if !require("crs", CRS_RULES) {
        return;
    }
    let out = sluice_test(
        &repo().join("policies/waf.toml"),
        &[repo().join("policies/waf/tests").as_os_str()],
    );
    let stdout = exited(&out, 0);
    assert!(stdout.contains("PASS 10005-1 [10005]"), "{stdout}");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}

fn input(yaml: &str) -> sluice::ftw::format::Input {
    serde_yaml::from_str(yaml).unwrap()
}

fn built(yaml: &str) -> String {
    String::from_utf8(sluice::ftw::request::build(&input(yaml)).unwrap()).unwrap()
}

#[test]
fn ftw_request_autocompletes_a_body_request() {
    assert_eq!(
        built("method: POST\nuri: /a?b=1\nheaders:\n  Host: localhost\ndata: x=1"),
        "POST /a?b=1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nConnection: close\r\n\r\nx=1"
    );
    // Headers the test sets are kept, in file order, and not added again.
    assert_eq!(
        built("method: POST\nheaders:\n  Content-Type: text/plain\n  Host: h\n  Connection: keep-alive\ndata: [a, b]"),
        "POST / HTTP/1.1\r\nContent-Type: text/plain\r\nHost: h\r\nConnection: keep-alive\r\n\
         Content-Length: 4\r\n\r\na\r\nb"
    );
}

#[test]
fn ftw_request_is_sent_as_written_without_autocomplete() {
    assert_eq!(
        built("uri: /<x>\nversion: HTTP/1.0\nautocomplete_headers: false\nheaders:\n  Host: h"),
        "GET /<x> HTTP/1.0\r\nHost: h\r\n\r\n"
    );
    // "GET / HTTP/1.1\r\n\r\n", base64: sent byte for byte.
    assert_eq!(
        built("encoded_request: R0VUIC8gSFRUUC8xLjENCg0K"),
        "GET / HTTP/1.1\r\n\r\n"
    );
    assert!(sluice::ftw::request::build(&input("encoded_request: '***'")).is_err());
}

#[test]
fn ftw_capture_reads_an_audit_line() {
    let l = sluice::ftw::capture::parse(
        "waf".into(),
        r#"waf: {"request_id":"r1","action":"block","rules":[{"id":942100,"msg":"SQLi","data":"x"},{"id":0,"msg":"","data":""}]}"#.into(),
    );
    assert_eq!(l.request_id.as_deref(), Some("r1"));
    assert_eq!(l.ids, vec![942100]);
    assert_eq!(l.modsec, vec![r#"[id "942100"] [msg "SQLi"] [data "x"]"#]);
    let other = sluice::ftw::capture::parse("waf".into(), "waf: starting".into());
    assert!(other.request_id.is_none() && other.ids.is_empty());
}

/// A server that logs as ModSecurity and Sluice do, for `--target`: each request's head is
/// read, a line is appended to `log` for the marker header (its value in the msg, as a
/// marker rule logs it), for `/attack` (ModSecurity's `[id "942100"]` error-log format)
/// and for `/sluicey` (a Sluice WAF audit line); every request is answered 200.
fn logging_server(log: PathBuf) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&head).to_string();
            let mut lines = String::new();
            if let Some(v) = head.lines().find_map(|l| l.strip_prefix("X-CRS-Test: ")) {
                lines += &format!(
                    "[info] ModSecurity: Warning. [id \"999999\"] [msg \"X-CRS-Test {v}\"]\n"
                );
            }
            if head.starts_with("GET /attack ") {
                lines += "[info] ModSecurity: Warning. Matched [id \"942100\"] [msg \"SQL Injection\"] [data \"x\"]\n";
            }
            if head.starts_with("GET /sluicey ") {
                lines += "2026-01-01T00:00:00Z  INFO sluice::filter: waf: {\"request_id\":\"r1\",\"rules\":[{\"id\":941100,\"msg\":\"XSS\",\"data\":\"y\"}]} plugin=\"waf\"\n";
            }
            let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
            f.write_all(lines.as_bytes()).unwrap();
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    addr
}

/// `sluice test --target URL --log FILE`: a running server scored as go-ftw scores it, by
/// the rule ids its log gets between two marker requests (ModSecurity's and Sluice's line
/// formats); a server that never logs the marker fails each stage with the reason.
#[test]
fn ftw_target_scores_a_running_server_by_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("error.log");
    std::fs::write(&log, "an old line [id \"942100\"]\n").unwrap();
    let addr = logging_server(log.clone());
    let tests = dir.path().join("t.yaml");
    std::fs::write(
        &tests,
        r#"rule_id: 942100
tests:
  - test_id: 1
    stages:
      - input: { uri: /attack, headers: { Host: localhost } }
        output: { log: { expect_ids: [942100] } }
  - test_id: 2
    stages:
      - input: { uri: /fine, headers: { Host: localhost } }
        output: { log: { no_expect_ids: [942100] } }
  - test_id: 3
    stages:
      - input: { uri: /sluicey, headers: { Host: localhost } }
        output: { log_contains: 'id "941100"', log: { expect_ids: [941100], no_expect_ids: [942100] } }
  - test_id: 4
    stages:
      - input: { uri: /fine, headers: { Host: localhost } }
        output: { log: { expect_ids: [942100] } }
"#,
    )
    .unwrap();
    let run = |log: &Path, marker: &str| {
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args([
                "test",
                "--timeout",
                "2",
                "--marker-header",
                marker,
                "--target",
            ])
            .arg(format!("http://{addr}"))
            .arg("--log")
            .arg(log)
            .arg(&tests)
            .output()
            .unwrap()
    };
    let stdout = exited(&run(&log, "X-CRS-Test"), 1);
    for line in [
        "PASS 942100-1 [942100]",
        "PASS 942100-2 []",
        "PASS 942100-3 [941100]",
        "FAIL 942100-4",
        "3 passed, 1 failed",
    ] {
        assert!(stdout.contains(line), "{line}:\n{stdout}");
    }
    // Markers under another header name are never logged: every stage says so.
    let stdout = exited(&run(&log, "X-Other-Marker"), 1);
    assert!(stdout.contains("0 passed, 4 failed"), "{stdout}");
    assert!(stdout.contains("marker rule"), "{stdout}");
}
