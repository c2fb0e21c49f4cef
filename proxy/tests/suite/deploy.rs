//! The compose stack's files checked against each other and against a running Sluice,
//! without a container engine: docker-compose.yml, the Dockerfile, the policy the stack
//! runs (deploy/policy.compose.toml), Prometheus's configuration and Grafana's
//! provisioning and dashboard.
//!
//! - `compose_files_are_wired_together`: every path a service mounts or the Dockerfile
//!   copies exists (and is not left out by .dockerignore), every workspace member
//!   reaches the image, `depends_on` names
//!   services (with a health check where it waits for one), host ports do not collide;
//!   the policy listens off loopback on the ports the compose file publishes, its admin
//!   token variable is set, its pool peers are compose services on the ports they serve,
//!   its modules are built filters; Prometheus scrapes Sluice's admin port with the
//!   token the compose file writes for it (`promtool check config`); Grafana's
//!   datasource is the Prometheus service and its dashboard provider reads the mounted
//!   dashboards; every PromQL expression of the dashboard parses (`promtool check rules`).
//! - `the_dashboard_uses_only_metrics_the_compose_policy_exports`: the compose policy,
//!   its container paths and peers mapped to this machine, passes `sluice check`, runs
//!   with traffic, a reload and an origin outage, and its real `/metrics` scrape has
//!   every metric family the dashboard queries.
//!
//! YAML is read with `serde_yaml`, already in the tree through pingora-core.

use crate::support::*;
use serde_yaml::Value as Yaml;
use std::collections::{BTreeSet, HashMap};
use std::process::{Command, Stdio};

/// The token the test gives Sluice and Prometheus (the compose file's default is public).
const TOKEN: &str = "deploy-test-token";
/// Container path of the filters in the image (Dockerfile) and where they are here.
const IMAGE_FILTERS: &str = "/usr/local/share/sluice/filters/out";

fn yaml(path: &str) -> Yaml {
    let text = std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn s(v: &Yaml) -> &str {
    v.as_str().unwrap_or("")
}

fn seq(v: &Yaml) -> Vec<&Yaml> {
    v.as_sequence()
        .map(|s| s.iter().collect())
        .unwrap_or_default()
}

/// A service's volumes as (host source, container target); sources relative to the repo.
fn volumes(svc: &Yaml) -> Vec<(String, String)> {
    seq(&svc["volumes"])
        .into_iter()
        .map(|v| {
            let mut parts = s(v).split(':');
            let src = parts.next().unwrap_or("").to_string();
            let dst = parts.next().unwrap_or("").to_string();
            (src, dst)
        })
        .collect()
}

/// The repository file a service sees at container path `path`, through its bind mounts.
fn mounted(svc: &Yaml, path: &str) -> Option<std::path::PathBuf> {
    volumes(svc).into_iter().find_map(|(src, dst)| {
        let src = repo().join(src.strip_prefix("./")?);
        match path.strip_prefix(&dst)? {
            "" => Some(src),
            rest => Some(src.join(rest.strip_prefix('/')?)),
        }
    })
}

/// Container ports a service publishes or exposes.
fn container_ports(svc: &Yaml) -> BTreeSet<u16> {
    let published = seq(&svc["ports"])
        .into_iter()
        .filter_map(|p| s(p).rsplit(':').next()?.parse().ok());
    let exposed = seq(&svc["expose"])
        .into_iter()
        .filter_map(|p| s(p).parse().ok());
    published.chain(exposed).collect()
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// Every `expr` string in a dashboard, at any depth.
fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// Every datasource uid a dashboard names.
fn datasource_uids(v: &serde_json::Value, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(uid) = m
                .get("datasource")
                .and_then(|d| d.get("uid"))
                .and_then(|u| u.as_str())
            {
                out.insert(uid.to_string());
            }
            m.values().for_each(|v| datasource_uids(v, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| datasource_uids(v, out)),
        _ => {}
    }
}

fn dashboard() -> serde_json::Value {
    let path = repo().join("deploy/grafana/dashboards/sluice.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("sluice.json is JSON")
}

/// A dashboard expression with Grafana's interval variables replaced, as Grafana sends it.
fn as_sent(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("${__rate_interval}", "1m")
        .replace("$__range", "1h")
        .replace("$__interval", "1m")
}

fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn compose_files_are_wired_together() {
    if !require("prometheus", "promtool") {
        return;
    }
    let compose = yaml("docker-compose.yml");
    let services = compose["services"].as_mapping().expect("services");
    let svc = |name: &str| -> &Yaml {
        services
            .get(name)
            .unwrap_or_else(|| panic!("docker-compose.yml has no service {name}"))
    };
    let mut errors = Vec::new();

    // Mounts, named volumes, depends_on, host ports.
    let named: BTreeSet<&str> = compose["volumes"]
        .as_mapping()
        .map(|m| m.keys().map(s).collect())
        .unwrap_or_default();
    let mut host_ports = HashMap::new();
    for (name, spec) in services {
        let name = s(name);
        for (src, _) in volumes(spec) {
            if let Some(rel) = src.strip_prefix("./") {
                if !repo().join(rel).exists() {
                    errors.push(format!("{name}: mounts {src}, which does not exist"));
                }
            } else if !named.contains(src.as_str()) {
                errors.push(format!(
                    "{name}: volume {src} is not declared under volumes:"
                ));
            }
        }
        if let Some(deps) = spec["depends_on"].as_mapping() {
            for (dep, cond) in deps {
                match services.get(dep) {
                    None => errors.push(format!("{name}: depends_on {} is not a service", s(dep))),
                    Some(d)
                        if s(&cond["condition"]) == "service_healthy"
                            && d["healthcheck"].is_null() =>
                    {
                        errors.push(format!(
                            "{name}: waits for {} to be healthy, which has no healthcheck",
                            s(dep)
                        ))
                    }
                    _ => {}
                }
            }
        }
        for p in seq(&spec["ports"]) {
            let parts: Vec<&str> = s(p).split(':').collect();
            let host = parts[..parts.len() - 1].join(":");
            if let Some(other) = host_ports.insert(host.clone(), name.to_string()) {
                errors.push(format!("{name} and {other} both publish {host}"));
            }
        }
    }

    // The Dockerfile: what it copies exists, every workspace member reaches the image.
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let copied: Vec<String> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--from"))
        .flat_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words[..words.len() - 1]
                .iter()
                .map(|w| w.to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let ignored: Vec<String> = std::fs::read_to_string(repo().join(".dockerignore"))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.contains('*'))
        .map(|l| l.trim_end_matches('/').to_string())
        .collect();
    for src in &copied {
        let path = src.trim_end_matches('/');
        if !repo().join(path).exists() {
            errors.push(format!("Dockerfile: COPY {src}: no such path"));
        }
        if let Some(pattern) = ignored
            .iter()
            .find(|i| path == i.as_str() || path.starts_with(&format!("{i}/")))
        {
            errors.push(format!(
                "Dockerfile: COPY {src}: excluded by .dockerignore ({pattern})"
            ));
        }
    }
    let workspace: toml::Value =
        toml::from_str(&std::fs::read_to_string(repo().join("Cargo.toml")).unwrap()).unwrap();
    for member in workspace["workspace"]["members"].as_array().unwrap() {
        let top = member.as_str().unwrap().split('/').next().unwrap();
        if !copied.iter().any(|c| c.trim_end_matches('/') == top) {
            errors.push(format!(
                "Dockerfile: the workspace member {member} is not copied into the build"
            ));
        }
    }

    // The policy the sluice service runs.
    let sluice = svc("sluice");
    let command: Vec<&str> = seq(&sluice["command"]).into_iter().map(s).collect();
    let at = command
        .iter()
        .position(|a| *a == "--policy")
        .expect("sluice runs --policy")
        + 1;
    let policy_path = mounted(sluice, command[at]).expect("the sluice service mounts its policy");
    let policy: toml::Value =
        toml::from_str(&std::fs::read_to_string(&policy_path).unwrap()).unwrap();
    let server = &policy["server"];
    let admin = server["admin"].as_str().unwrap();
    let published = container_ports(sluice);
    for addr in server["listen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .chain([admin])
    {
        if !addr.starts_with("0.0.0.0:") {
            errors.push(format!(
                "policy: {addr} is not reachable from other containers"
            ));
        }
        if !published.contains(&port_of(addr)) {
            errors.push(format!(
                "policy: port {} is not published by the sluice service",
                port_of(addr)
            ));
        }
    }
    let token_env = server["admin_token_env"]
        .as_str()
        .expect("admin_token_env (admin off loopback)");
    if sluice["environment"][token_env].is_null() {
        errors.push(format!(
            "sluice service: {token_env} (admin_token_env) is not set"
        ));
    }
    for (pool, spec) in policy["pools"].as_table().unwrap() {
        for peer in spec["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
        {
            let (host, port) = peer.rsplit_once(':').unwrap();
            match services.get(host) {
                None => errors.push(format!("pool {pool}: peer {peer} is not a compose service")),
                Some(o) if !container_ports(o).contains(&port.parse().unwrap()) => {
                    errors.push(format!("pool {pool}: {host} does not expose {port}"))
                }
                _ => {}
            }
        }
    }
    for (name, f) in policy["filters"].as_table().unwrap() {
        let module = f["module"].as_str().unwrap();
        match module.strip_prefix(IMAGE_FILTERS) {
            Some(file)
                if repo()
                    .join("filters/out")
                    .join(file.trim_start_matches('/'))
                    .is_file() => {}
            _ => errors.push(format!(
                "filter {name}: {module} is not a filter filters/build.sh puts in the image"
            )),
        }
    }

    // Prometheus scrapes Sluice's admin port with the token the compose file writes.
    let prom = svc("prometheus");
    let prom_cfg_path =
        mounted(prom, "/etc/prometheus/prometheus.yml").expect("prometheus.yml mounted");
    let prom_cfg: Yaml =
        serde_yaml::from_str(&std::fs::read_to_string(&prom_cfg_path).unwrap()).unwrap();
    let job = seq(&prom_cfg["scrape_configs"])
        .into_iter()
        .find(|j| s(&j["job_name"]) == "sluice")
        .expect("a sluice scrape job");
    let targets: Vec<&str> = seq(&job["static_configs"])
        .into_iter()
        .flat_map(|c| seq(&c["targets"]))
        .map(s)
        .collect();
    let admin_target = format!("sluice:{}", port_of(admin));
    if targets != [admin_target.as_str()] {
        errors.push(format!(
            "prometheus scrapes {targets:?}, not Sluice's admin port {admin_target}"
        ));
    }
    let credentials = s(&job["authorization"]["credentials_file"]);
    let prom_command: String = seq(&prom["command"]).into_iter().map(s).collect();
    if credentials.is_empty()
        || !prom_command.contains(credentials)
        || prom["environment"][token_env].is_null()
    {
        errors.push(format!(
            "prometheus: the token file {credentials:?} is not written from ${token_env} at start"
        ));
    }
    let (ok, out) = promtool(&[
        "check",
        "config",
        "--syntax-only",
        prom_cfg_path.to_str().unwrap(),
    ]);
    if !ok {
        errors.push(format!("promtool check config: {out}"));
    }

    // Grafana: the datasource is the prometheus service, the provider reads the mounted
    // dashboards, the dashboard names the provisioned datasource.
    let grafana = svc("grafana");
    let ds_file = mounted(
        grafana,
        "/etc/grafana/provisioning/datasources/prometheus.yml",
    )
    .expect("datasources mounted");
    let ds: Yaml = serde_yaml::from_str(&std::fs::read_to_string(ds_file).unwrap()).unwrap();
    let mut uids = BTreeSet::new();
    for d in seq(&ds["datasources"]) {
        uids.insert(s(&d["uid"]).to_string());
        let url = s(&d["url"]);
        let hostport = url.trim_start_matches("http://").trim_end_matches('/');
        let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "80"));
        if !services
            .get(host)
            .is_some_and(|p| container_ports(p).contains(&port.parse().unwrap_or(0)))
        {
            errors.push(format!(
                "grafana datasource {url} is not a compose service's port"
            ));
        }
    }
    let providers = mounted(grafana, "/etc/grafana/provisioning/dashboards/sluice.yml")
        .expect("providers mounted");
    let providers: Yaml =
        serde_yaml::from_str(&std::fs::read_to_string(providers).unwrap()).unwrap();
    for p in seq(&providers["providers"]) {
        let path = s(&p["options"]["path"]);
        match mounted(grafana, path) {
            Some(dir) if dir.join("sluice.json").is_file() => {}
            _ => errors.push(format!(
                "grafana provider path {path} does not hold the mounted dashboards"
            )),
        }
    }
    let dash = dashboard();
    let mut used = BTreeSet::new();
    datasource_uids(&dash, &mut used);
    // Grafana's own built-in datasource (annotations) needs no provisioning.
    uids.insert("-- Grafana --".to_string());
    for uid in used.difference(&uids) {
        errors.push(format!(
            "the dashboard names datasource uid {uid}, which is not provisioned"
        ));
    }

    // Every PromQL expression parses, as Grafana sends it.
    let mut queries = Vec::new();
    exprs(&dash, &mut queries);
    assert!(
        queries.len() >= 10,
        "the dashboard has {} queries",
        queries.len()
    );
    let rules = serde_yaml::to_string(&serde_json::json!({
        "groups": [{
            "name": "dashboard",
            "rules": queries.iter().enumerate()
                .map(|(i, q)| serde_json::json!({"record": format!("dashboard:query{i}"), "expr": as_sent(q)}))
                .collect::<Vec<_>>(),
        }]
    }))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rules_path = dir.path().join("dashboard-rules.yml");
    std::fs::write(&rules_path, rules).unwrap();
    let (ok, out) = promtool(&["check", "rules", rules_path.to_str().unwrap()]);
    if !ok {
        errors.push(format!("a dashboard query does not parse: {out}"));
    }

    assert!(
        errors.is_empty(),
        "the compose stack's files disagree:\n- {}",
        errors.join("\n- ")
    );
}

/// The compose stack's Sluice on this machine: deploy/policy.compose.toml with its
/// container paths and peers mapped here (`sluice check` first), the token in its
/// environment, on fresh ports. Returns it, its traffic and admin addresses, and its
/// directory.
fn compose_sluice(
    origin: &Proc,
) -> (
    Proc,
    std::net::SocketAddr,
    std::net::SocketAddr,
    tempfile::TempDir,
) {
    let text = std::fs::read_to_string(repo().join("deploy/policy.compose.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    let mapped = |listen: &str, admin: &str| {
        text.replace("0.0.0.0:8080", listen)
            .replace("0.0.0.0:9901", admin)
            .replace("origin:8081", &origin.addr.to_string())
            .replace(IMAGE_FILTERS, repo().join("filters/out").to_str().unwrap())
    };
    std::fs::write(&policy, mapped("127.0.0.1:8080", "127.0.0.1:9901")).unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check", "--policy"])
        .arg(&policy)
        .env("SLUICE_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "sluice check: {}",
        String::from_utf8_lossy(&check.stderr)
    );

    let log = dir.path().join("sluice.log");
    let (child, addrs) = spawn_on_fresh_ports(2, "sluice", |addrs| {
        std::fs::write(
            &policy,
            mapped(&addrs[0].to_string(), &addrs[1].to_string()),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["run", "--policy"])
            .arg(&policy)
            .env("SLUICE_ADMIN_TOKEN", TOKEN)
            .env("SLUICE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        (child, log.clone())
    });
    let (listen, admin) = (addrs[0], addrs[1]);
    (
        Proc {
            child,
            addr: listen,
        },
        listen,
        admin,
        dir,
    )
}

#[test]
fn the_dashboard_uses_only_metrics_the_compose_policy_exports() {
    let origin = origin("compose");
    let (_sluice, listen, admin, _dir) = compose_sluice(&origin);

    // Traffic through every route and filter, a reload, then an origin outage.
    let c = client();
    let get = |path: &str| {
        c.get(format!("http://{listen}{path}"))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    for _ in 0..3 {
        assert_eq!(get("/index.html"), 200);
        assert_eq!(get("/hello"), 200);
        assert_eq!(get("/private"), 403);
        assert_eq!(get("/echo?x=1"), 200);
        assert_eq!(get("/files/etc/passwd"), 403, "the WAF's rule 1001");
    }
    let reload = c
        .post(format!("http://{admin}/admin/reload"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(reload.status(), 200);
    drop(origin);
    assert_eq!(get("/index.html"), 502);

    let scrape = || {
        c.get(format!("http://{admin}/metrics"))
            .bearer_auth(TOKEN)
            .send()
            .unwrap()
            .text()
            .unwrap()
    };
    let mut queries = Vec::new();
    exprs(&dashboard(), &mut queries);
    let used: BTreeSet<String> = queries
        .iter()
        .flat_map(|q| {
            q.split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                .filter(|w| w.starts_with("sluice_"))
                .map(|w| {
                    ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|sfx| w.strip_suffix(sfx))
                        .unwrap_or(w)
                        .to_string()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(used.len() >= 10, "the dashboard queries {used:?}");
    // Counters of the last requests may land a moment after their answers.
    let missing = until_value(
        secs(10),
        "every metric the dashboard queries in the scrape",
        || {
            let metrics = scrape();
            let exported: BTreeSet<&str> = metrics
                .lines()
                .filter_map(|l| l.strip_prefix("# TYPE "))
                .filter_map(|l| l.split(' ').next())
                .collect();
            used.iter()
                .filter(|n| !exported.contains(n.as_str()))
                .cloned()
                .collect::<Vec<_>>()
        },
        |missing| missing.is_empty(),
    );
    assert!(missing.is_empty());
}

/// Every PromQL expression of the dashboard (panels and annotations).
fn dashboard_queries() -> Vec<String> {
    let mut queries = Vec::new();
    exprs(&dashboard(), &mut queries);
    let d = dashboard();
    for a in d["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(e) = a["expr"].as_str() {
            if !queries.iter().any(|q| q == e) {
                queries.push(e.to_string());
            }
        }
    }
    queries
}

/// The compose topology without a container engine: the demo origin, Sluice on the
/// compose policy, and Debian's `prometheus` on deploy/prometheus/prometheus.yml with
/// only its addresses rewritten (target, token file, and a 1 s scrape for a short test).
/// Prometheus's target is up and every query of the Grafana dashboard, as Grafana sends
/// it, answers at least one series from the data it scraped. Grafana itself is not
/// packaged for Debian: its provisioning files are checked by
/// `compose_files_are_wired_together`.
#[test]
fn prometheus_scrapes_the_compose_sluice_and_every_dashboard_query_has_series() {
    if !require("prometheus", "prometheus") {
        return;
    }
    let origin = origin("compose-prometheus");
    let (_sluice, listen, admin, dir) = compose_sluice(&origin);
    let token_file = dir.path().join("sluice-admin-token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let config = std::fs::read_to_string(repo().join("deploy/prometheus/prometheus.yml")).unwrap();
    for needle in [
        "sluice:9901",
        "/prometheus/sluice-admin-token",
        "scrape_interval: 5s",
    ] {
        assert!(
            config.contains(needle),
            "prometheus.yml no longer has {needle:?}"
        );
    }
    let config = config
        .replace("sluice:9901", &admin.to_string())
        .replace(
            "/prometheus/sluice-admin-token",
            token_file.to_str().unwrap(),
        )
        .replace("scrape_interval: 5s", "scrape_interval: 1s")
        .replace("scrape_timeout: 4s", "scrape_timeout: 1s");
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    let prom_log = dir.path().join("prometheus.log");
    let (prom, addrs) = spawn_on_fresh_ports(1, "prometheus", |addrs| {
        let data = dir.path().join(format!("tsdb-{}", addrs[0].port()));
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={}", addrs[0]))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&prom_log).unwrap())
            .spawn()
            .unwrap();
        (child, prom_log.clone())
    });
    let prom = Proc {
        child: prom,
        addr: addrs[0],
    };
    let c = client();
    let api = |path: &str, query: &[(&str, &str)]| -> serde_json::Value {
        let r = c
            .get(format!("http://{}{path}", prom.addr))
            .query(query)
            .send()
            .unwrap();
        let v: serde_json::Value = r.json().unwrap();
        assert_eq!(v["status"], "success", "{path} {query:?}: {v}");
        v["data"].clone()
    };
    until(secs(30), "Prometheus's target up", || {
        api("/api/v1/targets", &[])["activeTargets"]
            .as_array()
            .is_some_and(|t| t.len() == 1 && t[0]["health"] == "up")
    });
    let targets = api("/api/v1/targets", &[]);
    let target = &targets["activeTargets"][0];
    assert_eq!(target["labels"]["job"], "sluice");
    assert_eq!(target["scrapeUrl"], format!("http://{admin}/metrics"));

    // Traffic through every route and filter for a few scrapes: WAF blocks, a filter's
    // own 403, 404s from the origin, a reload, then 502s from an origin outage.
    let get = |path: &str| {
        c.get(format!("http://{listen}{path}"))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    let reload = || {
        let r = c
            .post(format!("http://{admin}/admin/reload"))
            .bearer_auth(TOKEN)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    };
    let started = std::time::Instant::now();
    while started.elapsed() < secs(4) {
        assert_eq!(get("/index.html"), 200);
        assert_eq!(get("/hello"), 200);
        assert_eq!(get("/private"), 403);
        assert_eq!(get("/echo?x=1"), 200);
        assert_eq!(get("/files/etc/passwd"), 403);
        assert_eq!(get("/search?q=<script>"), 403);
        get("/api/items");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    reload();
    let stopped = origin;
    drop(stopped);
    let outage = std::time::Instant::now();
    while outage.elapsed() < secs(3) {
        assert_eq!(get("/index.html"), 502);
        assert_eq!(get("/hello"), 200);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Every dashboard query answers series once Prometheus has scraped all of this.
    let queries = dashboard_queries();
    assert!(queries.len() >= 20, "{queries:?}");
    let empty = until_value(
        secs(20),
        "every dashboard query answering series",
        || {
            queries
                .iter()
                .filter(|q| {
                    let data = api("/api/v1/query", &[("query", &as_sent(q))]);
                    match data["resultType"].as_str() {
                        Some("vector") | Some("matrix") => {
                            data["result"].as_array().is_none_or(|r| r.is_empty())
                        }
                        _ => data["result"].is_null(),
                    }
                })
                .cloned()
                .collect::<Vec<_>>()
        },
        |empty| empty.is_empty(),
    );
    assert!(empty.is_empty(), "queries without series: {empty:?}");
    // The numbers agree with Sluice's own scrape: the WAF's rule 1001 by its label.
    let by_rule = api(
        "/api/v1/query",
        &[(
            "query",
            "sum by (rule) (sluice_wasm_waf_rule_matches_total)",
        )],
    );
    let rules: BTreeSet<&str> = by_rule["result"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["metric"]["rule"].as_str())
        .collect();
    assert_eq!(rules, BTreeSet::from(["1001", "1002"]), "{by_rule}");
}
