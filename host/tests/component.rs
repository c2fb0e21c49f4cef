//! The component host on its own (no proxy): the guests of `filters/components`, built by
//! `filters/build.sh`, checked against their roles and run on a real tokio runtime.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use sluice_host::component::{
    ComponentEngine, ErrorCode, Guest, GuestError, GuestLimits, Next, Reuse, Role, WasiBody,
};

fn load(name: &str) -> Arc<sluice_host::component::CompiledComponent> {
    let path = format!(
        "{}/../filters/out/components/{name}.wasm",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{path}: {e} (run RUSTC=/usr/bin/rustc filters/build.sh)"));
    ComponentEngine::global().unwrap().compile(&bytes).unwrap()
}

fn body(text: &'static str) -> WasiBody {
    Full::new(Bytes::from_static(text.as_bytes()))
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A next handler that answers 200 with the request's `x-component` header echoed back.
fn origin() -> Next {
    Arc::new(|req: http::Request<WasiBody>| {
        Box::pin(async move {
            let seen = req
                .headers()
                .get("x-component")
                .map(|v| v.to_str().unwrap_or("").to_string())
                .unwrap_or_default();
            let mut res = http::Response::new(body("origin body"));
            res.headers_mut().insert(
                "x-origin-saw",
                seen.parse().map_err(|_| ErrorCode::InternalError(None))?,
            );
            Ok(res)
        })
    })
}

fn refuse() -> Next {
    Arc::new(|_req| Box::pin(async { Err(ErrorCode::HttpRequestDenied) }))
}

const LIMITS: GuestLimits = GuestLimits {
    memory_bytes: 64 << 20,
    deadline_ms: 100,
    response_timeout: Duration::from_secs(5),
    rebuild_budget: Duration::from_millis(2500),
};

fn request(path: &str) -> http::Request<WasiBody> {
    http::Request::builder()
        .uri(format!("http://localhost{path}"))
        .body(body(""))
        .unwrap()
}

async fn text(res: http::Response<WasiBody>) -> String {
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test(flavor = "current_thread")]
async fn edge_function_answers() {
    let guest = Guest::new(
        "test",
        &load("hello"),
        Role::Function,
        refuse(),
        refuse(),
        LIMITS,
        Reuse::default(),
    )
    .unwrap();
    let res = guest.handle(request("/hi")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(text(res).await, "hello from a component: GET /hi\n");
}

#[tokio::test(flavor = "current_thread")]
async fn middleware_edits_both_ways() {
    let guest = Guest::new(
        "test",
        &load("add_header"),
        Role::Middleware,
        origin(),
        refuse(),
        LIMITS,
        Reuse::default(),
    )
    .unwrap();
    let res = guest.handle(request("/")).await.unwrap();
    assert_eq!(res.headers()["x-origin-saw"], "add-header");
    assert_eq!(res.headers()["x-component-response"], "add-header");
    assert_eq!(text(res).await, "origin body");
}

#[tokio::test(flavor = "current_thread")]
async fn loop_hits_the_deadline_and_trap_fails() {
    let guest = Guest::new(
        "test",
        &load("hostile"),
        Role::Middleware,
        origin(),
        refuse(),
        LIMITS,
        Reuse::default(),
    )
    .unwrap();
    let started = std::time::Instant::now();
    assert!(matches!(
        guest.handle(request("/loop")).await,
        Err(GuestError::Crashed)
    ));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(matches!(
        guest.handle(request("/trap")).await,
        Err(GuestError::Crashed)
    ));
    assert!(guest.handle(request("/ok")).await.is_ok());
}

/// Failures told through `FAILURE_HOOK`, by filter name and kind.
static TOLD: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

fn told(name: &str) -> Vec<String> {
    TOLD.lock()
        .unwrap()
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, k)| k.clone())
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn failures_are_told_by_kind() {
    let _ = sluice_host::FAILURE_HOOK.set(|name, kind| {
        TOLD.lock().unwrap().push((name.into(), kind.into()));
    });
    let guest = Guest::new(
        "kinds",
        &load("hostile"),
        Role::Middleware,
        origin(),
        refuse(),
        LIMITS,
        Reuse::default(),
    )
    .unwrap();
    for path in ["/loop", "/trap", "/grow"] {
        assert!(guest.handle(request(path)).await.is_err(), "{path}");
    }
    // The instance's end is told from its own task, just after the request learns of it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while told("kinds").len() < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(told("kinds"), ["deadline", "trap", "memory"]);
}

#[test]
fn roles_are_checked() {
    let e = load("add_header")
        .check(Role::Function)
        .unwrap_err()
        .to_string();
    assert!(e.contains("wasi:http/handler@0.3.0"), "{e}");
    load("hello").check(Role::Middleware).unwrap();
}

/// Per-request cost of a middleware on its own (no proxy, no network: the next handler
/// answers in memory), fresh instance vs one reused instance, and the instantiation time
/// the guest's counters measure. Prints the numbers (bench/README.md quotes them).
#[tokio::test(flavor = "current_thread")]
async fn instantiation_cost_fresh_and_reused() {
    const N: u32 = 2000;
    let component = load("add_header");
    for (label, reuse) in [
        ("fresh", Reuse::default()),
        (
            "reused",
            Reuse {
                max_requests: 1_000_000,
                max_concurrent: 1,
            },
        ),
    ] {
        let guest = Guest::new(
            "test",
            &component,
            Role::Middleware,
            origin(),
            refuse(),
            LIMITS,
            reuse,
        )
        .unwrap();
        for _ in 0..50 {
            text(guest.handle(request("/")).await.unwrap()).await;
        }
        let before = guest
            .counters()
            .instantiate_ns
            .load(std::sync::atomic::Ordering::Relaxed);
        let instances_before = guest.instances();
        let started = std::time::Instant::now();
        for _ in 0..N {
            let res = guest.handle(request("/")).await.unwrap();
            assert_eq!(text(res).await, "origin body");
        }
        let per_request = started.elapsed() / N;
        let instances = guest.instances() - instances_before;
        let inst_ns = guest
            .counters()
            .instantiate_ns
            .load(std::sync::atomic::Ordering::Relaxed)
            - before;
        println!(
            "{label}: {per_request:?} per request, {instances} instances, {:?} per instantiation",
            Duration::from_nanos(inst_ns / instances.max(1))
        );
        if reuse == Reuse::default() {
            assert_eq!(instances, N as u64);
        } else {
            assert!(instances <= 1);
        }
    }
}
