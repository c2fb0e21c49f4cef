//! Observability: the Prometheus exposition passes `promtool check metrics` after
//! traffic through every filter outcome, a real Prometheus scrapes it, the admin API
//! guards itself with a token, and access-log lines are JSON.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::Value;

fn policy(o: &Proc, extra_server: &str) -> String {
    let h = module("hostile.wasm");
    format!(
        r#"{extra_server}
[pools.o]
peers = ["{o}"]
[filters.tag]
module = {hdr}
config = {{ chain_tag = "tag" }}
[filters.teapot]
module = {resp}
config = {{ status = 418, body = "no", path_prefix = "/tea" }}
[filters.rw]
module = {rw}
config = {{ response = {{ from = "a", to = "b" }} }}
[filters.boom]
module = {h}
config = {{ mode = "panic", path_prefix = "/echo/boom" }}
[filters.count]
module = {m}
config = {{ prefix = "obs" }}
[[routes]]
name = "main"
filters = ["tag", "teapot", "rw", "boom", "count"]
pool = "o"
"#,
        o = o.addr,
        hdr = module("headers.wasm"),
        resp = module("respond.wasm"),
        rw = module("body_rewrite.wasm"),
        m = module("metrics.wasm"),
    )
}

fn traffic(s: &Sluice) {
    let c = client();
    for _ in 0..5 {
        assert_eq!(c.get(s.url("/echo/ok")).send().unwrap().status(), 200); // continue
        let big = c.get(s.url("/bytes/300000")).send().unwrap(); // pause: the body comes in chunks
        assert_eq!(big.status(), 200);
        assert_eq!(big.bytes().unwrap().len(), 300000);
        assert_eq!(c.get(s.url("/tea")).send().unwrap().status(), 418); // local response
        assert_eq!(c.get(s.url("/echo/boom")).send().unwrap().status(), 503); // trap
        assert_eq!(c.get(s.url("/nothing-here")).send().unwrap().status(), 404);
        // upstream 4xx
    }
}

fn scrape(s: &Sluice) -> String {
    client()
        .get(s.admin_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap()
}

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .unwrap_or_else(|| panic!("{series} not in the scrape"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn scrape_passes_promtool_and_counts_every_outcome() {
    if !require("prometheus", "promtool") {
        return;
    }
    let o = origin("o");
    let s = sluice(&policy(&o, ""));
    traffic(&s);
    let text = scrape(&s);
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is installed by scripts/setup.sh");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let lint = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && lint.trim().is_empty(),
        "promtool: {lint}"
    );

    assert_eq!(
        value(
            &text,
            r#"sluice_requests_total{method="GET",route="main",status_class="2xx"}"#
        ),
        10.0
    );
    assert_eq!(
        value(
            &text,
            r#"sluice_requests_total{method="GET",route="main",status_class="4xx"}"#
        ),
        10.0
    );
    assert_eq!(
        value(
            &text,
            r#"sluice_requests_total{method="GET",route="main",status_class="5xx"}"#
        ),
        5.0
    );
    assert_eq!(
        value(
            &text,
            r#"sluice_filter_local_responses_total{filter="teapot",status="418"}"#
        ),
        5.0
    );
    assert_eq!(
        value(
            &text,
            r#"sluice_filter_failures_total{filter="boom",kind="trap"}"#
        ),
        5.0
    );
    assert!(
        value(
            &text,
            r#"sluice_filter_actions_total{action="pause",filter="rw",phase="response_body"}"#
        ) >= 5.0
    );
    assert!(
        value(
            &text,
            r#"sluice_filter_duration_seconds_count{filter="tag",phase="request_headers"}"#
        ) >= 20.0
    );
    assert!(value(&text, r#"sluice_upstream_duration_seconds_count{pool="o"}"#) >= 15.0);
    assert_eq!(value(&text, "sluice_policy_generation"), 1.0);
    assert!(value(&text, r#"sluice_filter_vms{filter="tag"}"#) >= 1.0);
    assert!(value(&text, r#"sluice_filter_vm_memory_bytes{filter="tag"}"#) > 0.0);
    // A filter's own metrics, under sluice_wasm_ with the plugin as a label.
    assert!(value(&text, r#"sluice_wasm_obs_requests_total{plugin="count"}"#) == 15.0);
    // Label values stay bounded: no raw path anywhere.
    assert!(!text.contains("/echo/ok") && !text.contains("nothing-here"));
    // A swap is counted.
    let r = client().post(s.admin_url("/admin/reload")).send().unwrap();
    assert_eq!(r.status(), 200);
    let text = scrape(&s);
    assert_eq!(
        value(&text, r#"sluice_policy_swaps_total{result="success"}"#),
        1.0
    );
    assert_eq!(value(&text, "sluice_policy_generation"), 2.0);
}

#[test]
fn a_real_prometheus_scrapes_sluice() {
    if !require("prometheus", "prometheus") {
        return;
    }
    let o = origin("o");
    let s = sluice(&policy(&o, ""));
    let config = s.dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sluice\n    static_configs:\n      - targets: [\"{}\"]\n",
            s.admin
        ),
    )
    .unwrap();
    let data = s.dir.path().join("tsdb");
    let prom_log = s.dir.path().join("prometheus.log");
    let (child, addrs) = spawn_on_fresh_ports(1, "prometheus", |addrs| {
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={}", addrs[0]))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&prom_log).unwrap())
            .spawn()
            .expect("prometheus (Debian package) is installed by scripts/setup.sh");
        (child, prom_log.clone())
    });
    let port = addrs[0].port();
    let mut prom = Proc {
        child,
        addr: addrs[0],
    };
    traffic(&s);
    let c = client();
    let t = Instant::now();
    let query = format!(
        "http://127.0.0.1:{port}/api/v1/query?query=sum(sluice_requests_total%7Broute%3D%22main%22%7D)"
    );
    loop {
        assert!(
            prom.child.try_wait().unwrap().is_none(),
            "prometheus exited"
        );
        if let Ok(r) = c.get(&query).send() {
            if let Ok(v) = r.json::<Value>() {
                if let Some(sample) = v["data"]["result"][0]["value"][1].as_str() {
                    let n: f64 = sample.parse().unwrap();
                    if n >= 25.0 {
                        break;
                    }
                }
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(40),
            "Prometheus never saw the 25 requests"
        );
        // Polls Prometheus's query API (scrape_interval 1 s): a wait for a state, with
        // the process check above on each round.
        std::thread::sleep(Duration::from_millis(250));
    }
    // The target is up and the filter-failure series made it through.
    let v: Value = c
        .get(format!("http://127.0.0.1:{port}/api/v1/query?query=sluice_filter_failures_total%7Bfilter%3D%22boom%22%2Ckind%3D%22trap%22%7D"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["data"]["result"][0]["value"][1], "5", "{v}");
}

#[test]
fn admin_token_guards_the_admin_api() {
    let o = origin("o");
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    // The token comes from a file named in [server].
    let server_extra = format!(
        "admin_token_file = {:?}\naccess_log = \"access.log\"\n",
        token.display().to_string()
    );
    let opts = Opts {
        server_extra: &server_extra,
        ..Opts::default()
    };
    let s = sluice_opts(
        dir,
        &format!(
            "[pools.p]\npeers = [\"{}\"]\n[[routes]]\npool = \"p\"\n",
            o.addr
        ),
        &opts,
    );
    let (listen, admin) = (s.proc.addr, s.admin);
    let c = client();
    assert_eq!(
        c.get(format!("http://{admin}/healthz"))
            .send()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(format!("http://{admin}/metrics"))
            .send()
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        c.post(format!("http://{admin}/admin/reload"))
            .send()
            .unwrap()
            .status(),
        401
    );
    let r = c
        .get(format!("http://{admin}/admin/status"))
        .bearer_auth("s3cret")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    // Access log: one JSON line per request.
    assert_eq!(
        c.get(format!("http://{listen}/echo/x"))
            .send()
            .unwrap()
            .status(),
        200
    );
    let log = s.dir.path().join("access.log");
    let line = eventually(secs(5), "an access-log line", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines().next().map(str::to_string).ok_or(text)
    });
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["route"], "route0");
    assert_eq!(v["status"], 200);
    assert_eq!(v["path"], "/echo/x");
    assert_eq!(v["generation"], 1);
    assert!(v["duration_us"].as_u64().is_some());

    // Off loopback, an admin listener without a token is refused.
    let (out, _p, _d) = check(&format!(
        "[server]\nadmin = \"0.0.0.0:{}\"\n[pools.p]\npeers = [\"{}\"]\n[[routes]]\npool = \"p\"\n",
        // Only checked, never bound.
        9901,
        o.addr
    ));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs admin_token_env or admin_token_file")
    );
}
