//! The default policy (policies/default.toml) does what the README's curl lines say:
//! it runs here on free ports, with two demo origins, exactly as scripts/demo.sh runs it.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

struct Showcase {
    _procs: Vec<Proc>,
    policy: std::path::PathBuf,
    http: String,
    https_port: u16,
}

impl Drop for Showcase {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.policy);
    }
}

/// Starts the default policy with its ports moved to free ones (the file is written
/// next to the original, so its relative paths still hold).
fn showcase() -> Showcase {
    let text = std::fs::read_to_string(repo().join("policies/default.toml")).unwrap();
    let www = repo().join("origin/www");
    // The origins pick their ports; Sluice's three come fresh, retried when taken.
    let blue = origin_root("blue", &www);
    let green = origin_root("green", &www);
    let mut text = text;
    for (from, to) in [("8081", blue.addr), ("8082", green.addr)] {
        text = text.replace(&format!("127.0.0.1:{from}"), &to.to_string());
    }
    text = text.replace("access_log = \"stdout\"", "access_log = \"off\"");
    let policy = repo().join(format!("policies/.showcase-{}.toml", std::process::id()));
    let log = tempfile::NamedTempFile::new().unwrap();
    let (child, addrs) = spawn_on_fresh_ports(3, "sluice", |addrs| {
        let mut text = text.clone();
        for (from, to) in ["8080", "8443", "9901"].iter().zip(addrs) {
            text = text.replace(&format!("127.0.0.1:{from}"), &to.to_string());
        }
        std::fs::write(&policy, text).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["run", "--policy"])
            .arg(&policy)
            .env("SLUICE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log.path()).unwrap())
            .spawn()
            .unwrap();
        (child, log.path().to_path_buf())
    });
    let sluice = Proc {
        child,
        addr: addrs[0],
    };
    let ports: Vec<u16> = addrs.iter().map(|a| a.port()).collect();
    Showcase {
        _procs: vec![sluice, blue, green],
        policy,
        http: format!("http://127.0.0.1:{}", ports[0]),
        https_port: ports[1],
    }
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl");
    assert!(out.status.success(), "curl {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn the_default_policy_shows_every_capability() {
    // scripts/setup.sh makes policies/demo-tls/ (openssl); curl checks the TLS side.
    let cert = repo().join("policies/demo-tls/cert.pem");
    if !require("demo-tls", cert.to_str().unwrap()) || !require("curl", "curl") {
        return;
    }
    let s = showcase();
    let c = client();
    let url = |p: &str| format!("{}{p}", s.http);

    // A Wasm filter answers /hello; headers are edited both ways.
    let r = c.get(url("/hello")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().unwrap().contains("Wasm filter"));
    let r = c.get(url("/")).send().unwrap();
    assert_eq!(r.headers()["x-served-by"], "sluice");

    // A WASI 0.3 component (edge function) answers /edge/ with no pool.
    let r = c.get(url("/edge/hi")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "hello from a component: GET /edge/hi\n");
    // One importing `sluice:edge` sees the request it serves.
    let r = c.get(url("/edge/info")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-edge-route"], "edge-info");
    assert_eq!(r.headers()["x-edge-client"], "127.0.0.1");

    // Round robin over both origins (health-checked).
    let ids: std::collections::HashSet<String> = (0..6)
        .map(|_| {
            let r = c.get(url("/")).send().unwrap();
            r.headers()["x-origin-id"].to_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");

    // HTTP/2: h2c on the cleartext port, h2 by ALPN over TLS with the demo certificate.
    let v = curl(&[
        "--http2-prior-knowledge",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version}",
        &url("/"),
    ]);
    assert_eq!(v, "2");
    let tls = format!("https://localhost:{}/", s.https_port);
    let v = curl(&[
        "--http2",
        "--cacert",
        repo().join("policies/demo-tls/cert.pem").to_str().unwrap(),
        "-o",
        "/dev/null",
        "-w",
        "%{http_version} %{http_code}",
        &tls,
    ]);
    assert_eq!(v, "2 200");

    // The WAF (OWASP CRS) guards /echo: SQL injection and XSS are refused, the rest passes.
    // The WAF reads responses too: a leaking page is replaced by a 403, a clean one passes.
    let r = c.get(url("/legacy/report.html")).send().unwrap();
    assert_eq!(r.status(), 403, "leaking page");
    assert!(!r.text().unwrap().contains("SQL syntax"));
    let r = c.get(url("/legacy/index.html")).send().unwrap();
    assert_eq!(r.status(), 200, "clean page");
    assert!(r.text().unwrap().contains("Legacy app"));
    for attack in ["/echo?id=1'+or+'1'='1", "/echo?q=<script>alert(1)</script>"] {
        let r = c.get(url(attack)).send().unwrap();
        assert_eq!(r.status(), 403, "{attack}");
    }
    assert_eq!(
        c.get(url("/echo?q=hello+world")).send().unwrap().status(),
        200
    );

    // Image variants: a 400 px WebP of the 1200x800 sample, transformed once.
    let img = url("/cdn-cgi/image/width=400,format=auto/sample.jpg");
    for want in ["miss", "hit"] {
        let r = c.get(&img).header("accept", "image/webp").send().unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "image/webp");
        assert_eq!(r.headers()["x-sluice-image"], want);
    }
    let r = c
        .get(url("/cdn-cgi/image/width=9999/sample.jpg"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);

    // Cleartext /account goes to HTTPS.
    let r = c.get(url("/account")).send().unwrap();
    assert_eq!(r.status(), 308);
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with(&format!("https://127.0.0.1:{}/account", s.https_port)));

    // Brute-force lockout on a persistent collection: 5 POSTs a minute, then 429 for the
    // address, on GET too; other routes are not locked.
    let codes: Vec<u16> = (0..6)
        .map(|_| {
            c.post(url("/echo/login"))
                .body("user=a&password=b")
                .header("content-type", "application/x-www-form-urlencoded")
                .send()
                .unwrap()
                .status()
                .as_u16()
        })
        .collect();
    assert_eq!(codes, [200, 200, 200, 200, 200, 429]);
    assert_eq!(c.get(url("/echo/login")).send().unwrap().status(), 429);
    assert_eq!(c.get(url("/echo/x")).send().unwrap().status(), 200);

    // The router filter: beta testers get green; others a sticky 80/20 split.
    for _ in 0..5 {
        let r = c
            .get(url("/canary/echo"))
            .header("cookie", "beta=1")
            .send()
            .unwrap();
        assert_eq!(r.headers()["x-origin-id"], "green");
        let echo: serde_json::Value = r.json().unwrap();
        assert_eq!(echo["path"], "/echo", "the /canary prefix is stripped");
    }
    let mut arms = std::collections::HashMap::new();
    for _ in 0..200 {
        let r = c.get(url("/canary/echo")).send().unwrap();
        let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
        let id = r.headers()["x-origin-id"].to_str().unwrap().to_string();
        assert!(
            cookie.starts_with(&format!("arm={id};")),
            "{cookie} vs {id}"
        );
        *arms.entry(id).or_insert(0) += 1;
    }
    let green = arms.get("green").copied().unwrap_or(0);
    assert!((15..=70).contains(&green), "about 20% green: {arms:?}");
    // The cookie keeps a client on its arm.
    for arm in ["blue", "green"] {
        for _ in 0..5 {
            let r = c
                .get(url("/canary/echo"))
                .header("cookie", format!("arm={arm}"))
                .timeout(Duration::from_secs(5))
                .send()
                .unwrap();
            assert_eq!(r.headers()["x-origin-id"], arm);
            assert!(r.headers().get("set-cookie").is_none());
        }
    }
}
