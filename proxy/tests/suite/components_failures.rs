//! Component failures (issue #21) counted and guarded as Proxy-Wasm filters' are: a trap,
//! a CPU deadline and the memory cap are separate `kind`s of
//! `sluice_filter_failures_total`, and a component failing on every request trips the
//! crash-loop guard (no instance for its cooldown, the failure policy at once), then
//! recovers. The `hostile` guest, a real listener and a real origin.

use std::time::{Duration, Instant};

use crate::support::*;

/// `[server]` key that enables component filters.
const ENABLE: &str = "component_model = true\n";

/// A policy with the `hostile` component as filter `h` (fail closed, 503) on every path.
fn policy(origin: &Proc) -> String {
    format!(
        "[pools.o]\npeers = [\"{}\"]\n[filters.h]\nkind = \"component\"\nmodule = {}\ncallback_ms = 50\nmemory_mb = 64\non_failure = \"fail_closed\"\nfailure_status = 503\n\
         [[routes]]\nfilters = [\"h\"]\npool = \"o\"\n",
        origin.addr,
        module("components/hostile.wasm"),
    )
}

/// `sluice_filter_failures_total{filter="h",kind=KIND}`.
fn failures(s: &Sluice, kind: &str) -> f64 {
    metric_with(
        s,
        "sluice_filter_failures_total",
        &format!("filter=\"h\",kind=\"{kind}\""),
    )
}

#[test]
fn trap_deadline_and_memory_are_counted_apart() {
    let origin = origin("cmf-kinds");
    let s = sluice_with_server(&policy(&origin), ENABLE);
    for (path, kind) in [
        ("/trap", "trap"),
        ("/loop", "deadline"),
        ("/grow", "memory"),
    ] {
        let before = failures(&s, kind);
        let r = client().get(s.url(path)).send().unwrap();
        assert_eq!(r.status(), 503, "{path}");
        // The instance's end is counted from its own task, just after the answer.
        until_value(
            secs(5),
            &format!("{kind} counted"),
            || failures(&s, kind),
            |n| *n == before + 1.0,
        );
    }
    assert_eq!(
        (
            failures(&s, "trap"),
            failures(&s, "deadline"),
            failures(&s, "memory")
        ),
        (1.0, 1.0, 1.0)
    );
    assert_eq!(client().get(s.url("/echo")).send().unwrap().status(), 200);
}

#[test]
fn a_crash_looping_component_gets_no_instance_then_recovers() {
    let origin = origin("cmf-loop");
    let s = sluice_with_server(&policy(&origin), ENABLE);
    // More than the guard's 50 failures in 10 s.
    for _ in 0..51 {
        assert_eq!(client().get(s.url("/trap")).send().unwrap().status(), 503);
    }
    until_value(
        secs(5),
        "the guard tripped",
        || metric(&s, "sluice_filter_crash_loops_total{filter=\"h\"}"),
        |n| *n >= 1.0,
    );
    let tripped = Instant::now();
    let traps = failures(&s, "trap");
    // Tripped: the failure policy at once, with no instance (no new trap, even for a
    // request that would succeed), each refusal counted as `crash_loop`.
    for path in ["/trap", "/echo", "/trap"] {
        let r = client().get(s.url(path)).send().unwrap();
        assert_eq!(r.status(), 503, "{path}");
    }
    assert!(tripped.elapsed() < Duration::from_secs(4));
    assert_eq!(failures(&s, "trap"), traps, "an instance ran while tripped");
    assert_eq!(failures(&s, "crash_loop"), 3.0);
    // After the 5 s cooldown, instances again.
    let r = until_value(
        secs(10),
        "the guard recovered",
        || {
            client()
                .get(s.url("/echo"))
                .send()
                .unwrap()
                .status()
                .as_u16()
        },
        |status| *status == 200,
    );
    assert_eq!(r, 200);
    assert!(tripped.elapsed() >= Duration::from_secs(4));
}
