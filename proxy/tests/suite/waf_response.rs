//! Response inspection end to end: Sluice runs `filters/out/waf.wasm` with the CRS and
//! Debian's ModSecurity base config (`SecResponseBodyAccess On` for `text/plain text/html
//! text/xml`, 512 KiB, `ProcessPartial`) in front of the demo origin serving files of this
//! test. A page leaking a SQL error or a directory listing is answered 403 by the WAF (the
//! origin's head and body never reach the client), a clean page passes byte for byte, a
//! large HTML page is inspected in its first 512 KiB and passes whole, and a large image,
//! never inspected, streams through (it is larger than the filters may buffer).
//!
//! Needs `modsecurity-crs` (scripts/setup.sh installs it).

use crate::support::*;
use crate::waf::crs_lists;

const REPORT_HEADER: &str = "x-sluice-waf";

fn policy(origin: &Proc) -> String {
    let (files, rules) = crs_lists();
    format!(
        "[limits]\nmemory_mb = 256\nstartup_ms = 60000\ncallback_ms = 1000\n\n[pools.o]\npeers = [\"{}\"]\n\n[filters.waf]\nmodule = {:?}\nfiles = [{}]\nconfig = {{ rules = [{}], mode = \"block\", report_header = \"{REPORT_HEADER}\" }}\n\n[[routes]]\nfilters = [\"waf\"]\npool = \"o\"\n",
        origin.addr,
        filter("waf.wasm").display().to_string(),
        files,
        rules
    )
}

/// Bytes that are not text: a PNG signature then a pseudo-random tail.
fn png(len: usize) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut x: u32 = 0x1234_5678;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push(x as u8);
    }
    v
}

#[test]
fn waf_blocks_leaking_responses_and_streams_the_rest() {
    if !require(
        "crs",
        "/usr/share/modsecurity-crs/rules/RESPONSE-951-DATA-LEAKAGES-SQL.conf",
    ) {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let leak = "<html><body><b>Warning</b>: mysqli_query(): You have an error in your SQL syntax; check the manual that corresponds to your MySQL server version for the right syntax to use near ''7'' at line 1</body></html>\n";
    let listing = "<html><head><title>Index of /backup</title></head><body><h1>Index of /backup</h1><pre><a href=\"db.sql\">db.sql</a></pre></body></html>\n";
    let clean = "<!doctype html><html><head><title>Shop</title></head><body><h1>Welcome</h1><p>3 items in your cart.</p></body></html>\n";
    // 700 KiB of clean HTML: past the WAF's 512 KiB limit (inspected in part) and under the
    // chain's 1 MiB buffer.
    let mut big_html = String::from("<!doctype html><html><body>\n");
    while big_html.len() < 700 * 1024 {
        big_html.push_str("<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit.</p>\n");
    }
    big_html.push_str("</body></html>\n");
    // 3 MiB of image holding the leak text: never inspected, never buffered (the chain
    // would refuse to hold more than 1 MiB with a 502).
    let mut image = png(3 << 20);
    image.extend_from_slice(leak.as_bytes());
    for (name, data) in [
        ("leak.html", leak.as_bytes()),
        ("listing.html", listing.as_bytes()),
        ("clean.html", clean.as_bytes()),
        ("big.html", big_html.as_bytes()),
        ("big.png", &image[..]),
    ] {
        std::fs::write(root.path().join(name), data).unwrap();
    }
    let origin = origin_root("leaky", root.path());
    let s = sluice_with_server(&policy(&origin), "h2c = true\n");
    let c = client();

    for (path, rule) in [("/leak.html", "951230"), ("/listing.html", "950130")] {
        let r = c.get(s.url(path)).send().unwrap();
        assert_eq!(r.status().as_u16(), 403, "{path}");
        assert!(
            r.headers().get("x-origin-id").is_none(),
            "{path}: the origin's head reached the client"
        );
        let report = r
            .headers()
            .get(REPORT_HEADER)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        assert!(
            report.contains(rule) && report.contains("959100"),
            "{path}: {report}"
        );
        let body = r.text().unwrap();
        assert!(
            body.starts_with("Request blocked by the Sluice WAF."),
            "{path}: {body}"
        );
        assert!(
            !body.contains("SQL syntax") && !body.contains("Index of"),
            "{path}"
        );
    }

    // HTTP/2 clients too: the held head never goes out, the block is a 403 answer.
    let h2 = reqwest::blocking::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2.get(s.url("/leak.html")).send().unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status().as_u16(), 403, "HTTP/2 leak");
    assert!(
        r.headers().get("x-origin-id").is_none(),
        "HTTP/2: origin head"
    );
    assert!(
        !r.text().unwrap().contains("SQL syntax"),
        "HTTP/2: origin body"
    );

    let r = c.get(s.url("/clean.html")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["x-origin-id"], "leaky");
    assert_eq!(
        r.bytes().unwrap(),
        clean.as_bytes(),
        "clean page byte for byte"
    );

    let r = c.get(s.url("/big.html")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.bytes().unwrap(),
        big_html.as_bytes(),
        "partly inspected page whole"
    );

    let r = c.get(s.url("/big.png")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    let got = r.bytes().unwrap();
    assert_eq!(got.len(), image.len());
    assert!(got == image, "image byte for byte");

    // The audit line and the counters record the response-phase blocks.
    let log = until_value(
        secs(5),
        "the audit lines",
        || s.log(),
        |l: &String| l.matches("\"phase\":4").count() >= 3,
    );
    assert!(log.contains("951230") && log.contains("950130"), "{log}");
    let metrics = c
        .get(s.admin_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let blocked = metrics
        .lines()
        .find(|l| l.contains("waf_blocked_total") && !l.starts_with('#'))
        .unwrap_or_else(|| panic!("no waf_blocked_total in {metrics}"));
    assert!(blocked.trim_end().ends_with(" 3"), "{blocked}");
}

/// A site's own response rules, inline: a phase-3 deny on the status, a phase-4 deny on
/// the body, and `SecResponseBodyLimitAction Reject` (500 past the limit). HEAD responses
/// and other media types are not held.
#[test]
fn waf_response_rules_of_a_site_and_the_reject_limit() {
    let root = tempfile::tempdir().unwrap();
    let secret = "<html><body>api_key=sk_live_0123456789</body></html>\n";
    let page = "<html><body>hello</body></html>\n";
    let mut big = String::from("<html><body>\n");
    while big.len() < 8192 {
        big.push_str("<p>hello</p>\n");
    }
    for (name, data) in [
        ("secret.html", secret),
        ("page.html", page),
        ("big.html", big.as_str()),
        ("secret.txt.json", secret),
    ] {
        std::fs::write(root.path().join(name), data).unwrap();
    }
    let origin = origin_root("site", root.path());
    let rules = r#"SecRequestBodyAccess On
SecRequestBodyLimit 1024
SecRequestBodyLimitAction Reject
SecResponseBodyAccess On
SecResponseBodyMimeType text/html
SecResponseBodyLimit 4096
SecResponseBodyLimitAction Reject
SecRule RESPONSE_STATUS "@streq 404" "id:101,phase:3,deny,status:451,log"
SecRule RESPONSE_BODY "@contains sk_live_" "id:102,phase:4,deny,status:403,log""#;
    let policy = format!(
        "[pools.o]\npeers = [\"{}\"]\n\n[filters.waf]\nmodule = {:?}\nconfig = {{ inline = '''{rules}''', mode = \"block\" }}\n\n[[routes]]\nfilters = [\"waf\"]\npool = \"o\"\n",
        origin.addr,
        filter("waf.wasm").display().to_string(),
    );
    let s = sluice(&policy);
    let c = client();
    let get = |path: &str| {
        let r = c.get(s.url(path)).send().unwrap();
        let status = r.status().as_u16();
        let origin = r.headers().contains_key("x-origin-id");
        (status, origin, r.text().unwrap())
    };
    let (st, from_origin, body) = get("/secret.html");
    assert_eq!((st, from_origin), (403, false), "{body}");
    assert!(!body.contains("sk_live_"));
    assert_eq!(get("/page.html"), (200, true, page.to_string()));
    assert_eq!(get("/nothing-here").0, 451, "phase 3 on the status");
    let (st, from_origin, body) = get("/big.html");
    assert_eq!(
        (st, from_origin),
        (500, false),
        "Reject past SecResponseBodyLimit"
    );
    assert!(!body.contains("hello"));
    // not text/html: not inspected
    let (st, from_origin, body) = get("/secret.txt.json");
    assert_eq!((st, from_origin, body.as_str()), (200, true, secret));
    // HEAD: nothing to inspect, nothing held
    let r = c.head(s.url("/secret.html")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // the connection still serves after the replaced responses
    assert_eq!(get("/page.html"), (200, true, page.to_string()));
    // A request body past SecRequestBodyLimit, Reject: 413 and the origin never sees it.
    let r = c
        .post(s.url("/page.html"))
        .body(vec![b'a'; 4096])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    assert!(!r.headers().contains_key("x-origin-id"));
    assert_eq!(r.text().unwrap(), "Request body too large.\n");
    // Both refusals have their audit line.
    let log = until_value(
        secs(5),
        "the limit audit lines",
        || s.log(),
        |l: &String| l.contains("request body larger than 1024 bytes"),
    );
    assert!(
        log.contains(
            "\"status\":500,\"phase\":4,\"reason\":\"response body larger than 4096 bytes\""
        ) && log.contains("\"status\":413,\"reason\":\"request body larger than 1024 bytes\""),
        "{log}"
    );
}
