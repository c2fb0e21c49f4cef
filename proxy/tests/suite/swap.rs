//! Hot swap: policies change under load with no failed request, every request runs on
//! one snapshot, bad policies change nothing, rollback, SIGHUP, file watch, and the
//! module cache.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;
use serde_json::Value;

fn policy(origin: &Proc, tags: &[&str], prefix: &str) -> String {
    let mut p = format!("[pools.o]\npeers = [\"{}\"]\n", origin.addr);
    for t in tags {
        p.push_str(&format!(
            "[filters.{t}]\nmodule = {}\nconfig = {{ chain_tag = \"{t}\" }}\n",
            module("headers.wasm")
        ));
    }
    let list: Vec<String> = tags.iter().map(|t| format!("\"{t}\"")).collect();
    p.push_str(&format!(
        "[[routes]]\nname = \"r-{}\"\npath_prefix = \"{prefix}\"\nfilters = [{}]\npool = \"o\"\n",
        tags.join("-"),
        list.join(", ")
    ));
    p
}

fn post(url: &str) -> (u16, Value) {
    let r = client().post(url).send().unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

#[test]
fn hundred_swaps_under_load_fail_no_request_and_mix_no_snapshots() {
    let o = origin("o");
    let a = policy(&o, &["a1", "a2"], "/");
    let b = policy(&o, &["b1", "b2", "b3"], "/echo");
    // Two workers: both swap their VMs while the load runs.
    let s = sluice_threads(&a, 2);
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for _ in 0..3 {
        let (url, stop, ok, failures) = (
            s.url("/echo/load"),
            stop.clone(),
            ok.clone(),
            failures.clone(),
        );
        workers.push(std::thread::spawn(move || {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                let r = match c.get(&url).send() {
                    Ok(r) => r,
                    Err(e) => {
                        failures.lock().unwrap().push(format!("transport: {e}"));
                        continue;
                    }
                };
                let status = r.status().as_u16();
                let down = r
                    .headers()
                    .get("x-sluice-chain")
                    .map(|v| v.to_str().unwrap().to_string());
                let echo: Value = r.json().unwrap_or(Value::Null);
                let up = echo_header(&echo, "x-sluice-chain");
                // One snapshot per request: the chain upstream and its reverse downstream
                // both come from the same policy.
                let coherent = matches!(
                    (up.as_deref(), down.as_deref()),
                    (Some("a1,a2"), Some("a2,a1")) | (Some("b1,b2,b3"), Some("b3,b2,b1"))
                );
                if status != 200 || !coherent {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("{status} up={up:?} down={down:?}"));
                } else {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let first = s.status()["generation"].as_u64().unwrap();
    let mut generation = first;
    for i in 0..100 {
        s.rewrite(if i % 2 == 0 { &b } else { &a });
        let (code, body) = post(&s.admin_url("/admin/reload"));
        assert_eq!(code, 200, "{body}");
        let g = body["generation"].as_u64().unwrap();
        assert!(g > generation);
        generation = g;
        if i == 50 {
            // A broken policy in the middle is rejected and changes nothing.
            s.rewrite("[[routes]]\npool = \"nowhere\"\n");
            let (code, body) = post(&s.admin_url("/admin/reload"));
            assert_eq!(code, 422);
            assert!(
                body["errors"][0]
                    .as_str()
                    .unwrap()
                    .contains("unknown pool \"nowhere\""),
                "{body}"
            );
            assert_eq!(s.status()["generation"].as_u64().unwrap(), generation);
        }
    }
    // The load runs on a while after the last swap (the stimulus, not a wait).
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} bad responses, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        ok.load(Ordering::Relaxed) > 200,
        "only {} requests ran",
        ok.load(Ordering::Relaxed)
    );
    let status = s.status();
    assert_eq!(status["swaps"]["failures"], 1);
    assert!(status["swaps"]["last_error"]
        .as_str()
        .unwrap()
        .contains("nowhere"));
    // Old snapshots are freed once their last request ends: only the live one and the
    // rollback history remain.
    let live = status["live_snapshots"].as_u64().unwrap();
    assert!(live <= 3, "{live} snapshots still alive after 100 swaps");
    // Config-only swaps recompiled nothing: one module, compiled (or loaded) once.
    assert!(
        status["modules"]["compiled"].as_u64().unwrap()
            + status["modules"]["from_disk_cache"].as_u64().unwrap()
            <= 1
    );
}

#[test]
fn rollback_returns_to_the_previous_snapshot() {
    let o = origin("o");
    // Debug headers are off unless the policy turns them on (issue #15).
    let s = sluice_with_server(&policy(&o, &["a1"], "/"), "debug_headers = true\n");
    let chain = || {
        client()
            .get(s.url("/echo"))
            .header("x-sluice-debug", "1")
            .send()
            .unwrap()
            .headers()
            .get("x-sluice-chain")
            .map(|v| v.to_str().unwrap().to_string())
    };
    assert_eq!(chain().as_deref(), Some("a1"));
    let (code, _) = post(&s.admin_url("/admin/rollback"));
    assert_eq!(code, 409, "nothing to roll back to yet");
    s.rewrite(&policy(&o, &["b1"], "/"));
    let (code, body) = post(&s.admin_url("/admin/reload"));
    assert_eq!(code, 200);
    assert_eq!(body["generation"], 2);
    assert_eq!(chain().as_deref(), Some("b1"));
    let (code, body) = post(&s.admin_url("/admin/rollback"));
    assert_eq!(code, 200);
    assert_eq!(body["generation"], 1);
    assert_eq!(chain().as_deref(), Some("a1"));
    let r = client()
        .get(s.url("/echo"))
        .header("x-sluice-debug", "1")
        .send()
        .unwrap();
    assert_eq!(r.headers()["x-sluice-generation"], "1");
}

#[test]
fn sighup_and_file_watch_reload() {
    let o = origin("o");
    let s = sluice(&policy(&o, &["a1"], "/"));
    s.rewrite(&policy(&o, &["b1"], "/"));
    let pid = s.proc.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    wait_generation(&s, 2);
    // A watched policy reloads by itself when the file changes.
    let opts = Opts {
        server_extra: "watch = true\n",
        log: Some("warn"),
        ..Opts::default()
    };
    let w = sluice_opts(
        tempfile::tempdir().unwrap(),
        &policy(&o, &["a1"], "/"),
        &opts,
    );
    w.rewrite(&policy(&o, &["b1"], "/"));
    wait_generation(&w, 2);
}

#[test]
fn restart_with_unchanged_modules_compiles_nothing() {
    let o = origin("o");
    let cache = tempfile::tempdir().unwrap();
    let env = [("SLUICE_CACHE_DIR", cache.path().to_str().unwrap())];
    let p = policy(&o, &["a1", "a2"], "/");
    let first = sluice_with_env(&p, &env);
    assert_eq!(first.status()["modules"]["compiled"], 1);
    drop(first);
    let second = sluice_with_env(&p, &env);
    let st = second.status();
    assert_eq!(st["modules"]["compiled"], 0, "{st}");
    assert_eq!(st["modules"]["from_disk_cache"], 1, "{st}");
    assert_eq!(
        client().get(second.url("/echo")).send().unwrap().status(),
        200
    );
}
