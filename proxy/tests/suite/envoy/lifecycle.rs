//! Issue #16 tests: the plugin lifecycle as on Envoy. VMs start with the policy on every
//! worker (a background plugin ticks with no traffic and no route), a swap prepares the
//! new policy's VMs before it serves and retires the old ones, a header pause holds the
//! request until the filter resumes it from a tick, and HTTP calls dispatched from body
//! and log phases deliver their responses.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::*;

/// A filter of the background module that ticks every 20 ms and counts in `metric`.
fn ticker(name: &str, metric: &str) -> String {
    format!(
        "[filters.{name}]\nmodule = {}\nconfig = {{ role = \"ticker\", period_ms = 20, metric = \"{metric}\" }}\n",
        module("background.wasm")
    )
}

/// A pool `o` and one route through `filters` (TOML list items).
fn routed(origin: SocketAddr, filters: &str) -> String {
    format!("[pools.o]\npeers = [\"{origin}\"]\n[[routes]]\npool = \"o\"\nfilters = [{filters}]\n")
}

#[test]
fn a_background_plugin_ticks_from_start_with_no_traffic_and_no_route() {
    let o = origin("o");
    // `bg` is declared but no route names it: it is still started, on each worker.
    let s = sluice_threads(
        &format!("{}{}", routed(o.addr, ""), ticker("bg", "bg_ticks")),
        2,
    );
    // No request reaches the traffic listener in this test.
    until(secs(10), "the background plugin ticks", || {
        metric(&s, "sluice_wasm_bg_ticks_total") >= 10.0
    });
    let vms = metric_with(&s, "sluice_filter_vms", "filter=\"bg\"");
    assert!(vms >= 2.0, "one VM per worker thread at least, found {vms}");
    let before = metric(&s, "sluice_wasm_bg_ticks_total");
    let after = until_value(
        secs(10),
        "the background plugin keeps ticking",
        || metric(&s, "sluice_wasm_bg_ticks_total"),
        |n| *n > before,
    );
    assert!(after > before);
}

#[test]
fn a_swapped_out_ticker_stops_and_its_vms_are_dropped() {
    let o = origin("o");
    let s = sluice_threads(
        &format!("{}{}", routed(o.addr, "\"bg\""), ticker("bg", "old_ticks")),
        2,
    );
    until(secs(10), "generation 1 ticks", || {
        metric(&s, "sluice_wasm_old_ticks_total") > 0.0
    });
    // A request on generation 1, so that its snapshot also had traffic.
    assert_eq!(client().get(s.url("/echo")).send().unwrap().status(), 200);
    s.rewrite(&format!(
        "{}{}",
        routed(o.addr, "\"bg\""),
        ticker("bg", "new_ticks")
    ));
    assert_eq!(reload(&s), 2);
    until(secs(10), "generation 2 ticks", || {
        metric(&s, "sluice_wasm_new_ticks_total") > 0.0
    });
    until(secs(10), "generation 1 has no VM left", || {
        metric_with(&s, "sluice_generation_vms", "generation=\"1\"") == 0.0
    });
    let old = metric(&s, "sluice_wasm_old_ticks_total");
    let new = metric(&s, "sluice_wasm_new_ticks_total");
    // A period in which the retired ticker must NOT tick (20 ticks of the new one):
    // an absence has no state to wait for, so this pause stays.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        metric(&s, "sluice_wasm_old_ticks_total"),
        old,
        "the retired ticker still ticks"
    );
    assert!(metric(&s, "sluice_wasm_new_ticks_total") > new);
    // The rollback history keeps the compiled policy only: no VM of generation 1 runs.
    let status = s.status();
    assert_eq!(status["swaps"]["rollback_generations"][0], 1);
    assert_eq!(status["live_snapshots"], 1, "{status}");
    assert!(metric_with(&s, "sluice_generation_vms", "generation=\"2\"") >= 2.0);
}

#[test]
fn a_waf_reload_under_load_has_its_vms_on_every_worker_before_it_serves() {
    if !require("crs", CRS_RULES) {
        return;
    }
    let o = origin("o");
    let policy = format!("{}{}", routed(o.addr, "\"waf\""), waf_filter());
    let s = sluice_threads(&policy, 2);
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let load = {
        let (url, stop, served) = (s.url("/echo?q=light"), stop.clone(), served.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(r) = client().get(&url).send() {
                    assert_eq!(r.status(), 200);
                    served.fetch_add(1, Ordering::Relaxed);
                }
                // Pacing of the light load (the stimulus), not a wait for a state.
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    until(secs(30), "light load runs", || {
        served.load(Ordering::Relaxed) > 5
    });
    // The same policy again: a new snapshot, new VMs (what a WAF rules update costs).
    assert_eq!(reload(&s), 2);
    // Right after the reload answered: the new policy's WAF runs on both workers.
    let vms = metric_with(&s, "sluice_generation_vms", "generation=\"2\"");
    assert!(
        vms >= 2.0,
        "the new WAF VMs should exist on every worker, found {vms}"
    );
    let started = Instant::now();
    let r = client()
        .get(s.url("/echo?q=first-after-swap"))
        .send()
        .unwrap();
    let took = started.elapsed();
    assert_eq!(r.status(), 200);
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    assert!(
        took < Duration::from_millis(150),
        "the first request after the swap took {took:?}"
    );
}

/// An origin that counts requests and echoes `x-stamp-ms` as its body.
fn counting_origin() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let count = count.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(c.try_clone().unwrap());
                let mut stamp = String::new();
                let mut started = false;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if !started {
                        started = true;
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("x-stamp-ms:") {
                        stamp = v.trim().to_string();
                    }
                    if line == "\r\n" {
                        let mut w = &c;
                        let _ = write!(
                            w,
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{stamp}",
                            stamp.len()
                        );
                        stamp.clear();
                        started = false;
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn role(name: &str, config: &str) -> String {
    format!(
        "[filters.{name}]\nmodule = {}\nconfig = {config}\n",
        module("background.wasm")
    )
}

#[test]
fn a_header_pause_holds_the_request_and_later_filters_until_a_tick_resumes_it() {
    let (origin, seen) = counting_origin();
    let s = sluice(&format!(
        "{}{}{}",
        routed(origin, "\"a\", \"b\""),
        role("a", "{ role = \"pause\", delay_ms = 200 }"),
        role("b", "{ role = \"stamp\" }")
    ));
    let sent_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let started = Instant::now();
    let r = client().get(s.url("/paused")).send().unwrap();
    let took = started.elapsed();
    assert_eq!(r.status(), 200);
    let stamp: u128 = r.text().unwrap().parse().expect("b stamped the request");
    assert!(
        took >= Duration::from_millis(180),
        "the request did not wait: {took:?}"
    );
    assert!(
        stamp >= sent_ms + 180,
        "filter b ran {} ms after the request was sent, before a resumed it",
        stamp as i128 - sent_ms as i128
    );
    assert_eq!(seen.load(Ordering::SeqCst), 1, "the origin saw it once");
}

#[test]
fn a_pause_that_never_resumes_ends_with_a_504_at_the_pools_read_timeout() {
    let (origin, seen) = counting_origin();
    let s = sluice(&format!(
        "[pools.o]\npeers = [\"{origin}\"]\nread_timeout_ms = 400\n[[routes]]\npool = \"o\"\nfilters = [\"a\"]\n{}",
        role("a", "{ role = \"pause\", delay_ms = 3600000 }")
    ));
    let started = Instant::now();
    let r = client().get(s.url("/stuck")).send().unwrap();
    assert_eq!(r.status(), 504);
    assert!(started.elapsed() >= Duration::from_millis(380));
    assert_eq!(seen.load(Ordering::SeqCst), 0);
    until(secs(5), "the log names the filter", || {
        s.log().contains("did not resume it in time")
    });
}

#[test]
fn calls_dispatched_from_body_and_log_phases_deliver_their_responses() {
    let o = origin("o");
    let s = sluice(&format!(
        "{}{}",
        routed(o.addr, "\"c\""),
        role(
            "c",
            "{ role = \"calls\", upstream = \"o\", metric = \"late\" }"
        )
    ));
    let r = client().post(s.url("/echo")).body("hello").send().unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().unwrap();
    for phase in ["request_body", "response_body", "log"] {
        until(secs(10), &format!("the {phase} call's response"), || {
            metric(&s, &format!("sluice_wasm_late_{phase}_total")) >= 1.0
        });
    }
}
