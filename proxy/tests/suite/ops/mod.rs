//! Operators' tools (issue #22), each against a running Sluice: `sluice ctl`
//! ([`ctl`]), the `/ui` status page in a real headless Chromium ([`ui`]), the
//! zero-downtime binary upgrade ([`upgrade`]).

mod cdp;
mod ctl;
mod ui;
mod upgrade;

use std::process::{Command, Output};

/// Runs `sluice ctl --admin ADDR ARGS...` with `env`, to its end.
pub fn ctl(admin: std::net::SocketAddr, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.arg("ctl")
        .arg("--admin")
        .arg(admin.to_string())
        .args(args)
        .env_remove("SLUICE_ADMIN_TOKEN")
        .env_remove("SLUICE_ADMIN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run sluice ctl")
}

/// Its stdout, after checking it exited 0.
pub fn ctl_ok(admin: std::net::SocketAddr, args: &[&str]) -> String {
    let out = ctl(admin, args, &[]);
    assert!(
        out.status.success(),
        "sluice ctl {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A policy body with two routes: `api` (`/echo/api`, a headers filter) and `web` (the rest,
/// a WAF with one inline rule, id 1001, that blocks paths containing `attack`).
pub fn two_routes(origin: &crate::support::Proc, waf_status: u16) -> String {
    format!(
        r#"[pools.o]
peers = ["{o}"]

[filters.tag]
module = {headers}
config = {{ response = {{ set = {{ "x-tag" = "api" }} }} }}

[filters.waf]
module = {waf}
config = {{ inline = '''SecRule REQUEST_URI "@contains attack" "id:1001,phase:1,deny,status:{waf_status},msg:'attack in the path'"''', mode = "block" }}

[[routes]]
name = "api"
path_prefix = "/echo/api"
filters = ["tag"]
pool = "o"

[[routes]]
name = "web"
filters = ["waf"]
pool = "o"
"#,
        o = origin.addr,
        headers = crate::support::module("headers.wasm"),
        waf = crate::support::module("waf.wasm"),
    )
}
