//! The component host on its own (no proxy): the guests of `filters/components`, built by
//! `filters/build.sh`, checked against their roles and run on a real tokio runtime.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use sluice_host::component::{
    ComponentEngine, EdgeInfo, ErrorCode, Guest, GuestError, GuestLimits, Next, Reuse, Role,
    Upstream, WasiBody, MAX_CHOICE_LEN, REQUEST_INFO, UPSTREAM,
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

/// A request to `edge_info` carrying its `sluice:edge` facts.
fn request_with_facts(route: &str, id: &str) -> http::Request<WasiBody> {
    let mut req = request("/");
    req.headers_mut()
        .insert("x-request-id", id.parse().unwrap());
    req.extensions_mut().insert(Arc::new(EdgeInfo {
        route: route.into(),
        client_address: Some("192.0.2.7".into()),
        sni: Some(format!("{route}.test")),
        request_id: id.into(),
        protocol: "HTTP/2".into(),
        generation: 7,
    }));
    req
}

fn header(res: &http::Response<WasiBody>, name: &str) -> String {
    res.headers()[name].to_str().unwrap().to_string()
}

#[tokio::test(flavor = "current_thread")]
async fn sluice_edge_facts_are_each_requests_own_on_a_shared_instance() {
    // Concurrency 4 (the policy refuses it for a `sluice:edge` importer; the host
    // itself keeps facts per task, which this checks): request A's response leaves, its
    // guest task still writes the body when B starts on the same instance, then reads
    // the facts again. Both reads must be A's.
    let guest = Guest::new(
        "edge",
        &load("edge_info"),
        Role::Function,
        refuse(),
        refuse(),
        LIMITS,
        Reuse {
            max_requests: 100,
            max_concurrent: 4,
        },
    )
    .unwrap();
    // A's request body stays open until B has started: A's guest task waits for its end
    // before it reads the facts again.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, _>>(1);
    let mut req_a = request_with_facts("a", "id-a");
    *req_a.body_mut() =
        http_body_util::StreamBody::new(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))
        .boxed_unsync();
    let a = guest.handle(req_a).await.unwrap();
    let b = guest.handle(request_with_facts("b", "id-b")).await.unwrap();
    tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"late"))))
        .await
        .unwrap();
    drop(tx);
    assert_eq!(guest.instances(), 1, "both requests on one instance");
    assert_eq!(header(&a, "x-edge-served"), "1");
    assert_eq!(header(&b, "x-edge-served"), "2");
    for (res, route, id) in [(a, "a", "id-a"), (b, "b", "id-b")] {
        assert_eq!(header(&res, "x-edge-route"), route);
        assert_eq!(header(&res, "x-edge-request-id"), id);
        assert_eq!(header(&res, "x-seen-request-id"), id);
        assert_eq!(header(&res, "x-edge-sni"), format!("{route}.test"));
        assert_eq!(header(&res, "x-edge-client"), "192.0.2.7");
        assert_eq!(header(&res, "x-edge-protocol"), "HTTP/2");
        assert_eq!(header(&res, "x-edge-generation"), "7");
        let text = text(res).await;
        assert!(text.ends_with("stable: true\n"), "{route}: {text}");
    }
    // A request without facts: the import traps (the guest fails), it never sees another
    // request's facts.
    let fresh = Guest::new(
        "edge-bare",
        &load("edge_info"),
        Role::Function,
        refuse(),
        refuse(),
        LIMITS,
        Reuse::default(),
    )
    .unwrap();
    assert!(matches!(
        fresh.handle(request("/")).await,
        Err(GuestError::Crashed)
    ));
}

#[test]
fn sluice_edge_is_optional_and_detected() {
    // The portable guests import no `sluice:edge`; `edge_info` does, and links.
    for name in ["hello", "add_header", "deny", "transform"] {
        assert!(!load(name).imports_edge(), "{name}");
    }
    let info = load("edge_info");
    assert!(info.imports_edge());
    info.check(Role::Function).unwrap();
    assert_eq!(REQUEST_INFO, "sluice:edge/request-info@0.1.0");
}

/// A next handler that answers 200 with the request's `sluice:edge/upstream` choice (its
/// `Arc<Upstream>` extension) as `x-next-pool` and `x-next-key` (`-`: none chosen;
/// `absent`: no extension at all).
fn upstream_echo() -> Next {
    Arc::new(|req: http::Request<WasiBody>| {
        Box::pin(async move {
            let (pool, key) = match req.extensions().get::<Arc<Upstream>>() {
                Some(u) => (
                    u.pool.clone().unwrap_or_else(|| "-".into()),
                    u.hash_key.clone().unwrap_or_else(|| "-".into()),
                ),
                None => ("absent".into(), "absent".into()),
            };
            let mut res = http::Response::new(body(""));
            res.headers_mut()
                .insert("x-next-pool", pool.parse().unwrap());
            res.headers_mut().insert("x-next-key", key.parse().unwrap());
            Ok(res)
        })
    })
}

fn steer_request(pool: Option<&str>, key: Option<&str>) -> http::Request<WasiBody> {
    let mut req = request("/");
    if let Some(p) = pool {
        req.headers_mut().insert("x-steer-pool", p.parse().unwrap());
    }
    if let Some(k) = key {
        req.headers_mut().insert("x-steer-key", k.parse().unwrap());
    }
    req
}

#[tokio::test(flavor = "current_thread")]
async fn sluice_edge_upstream_choice_goes_with_its_request_only() {
    // steer -> add_header -> echo, both reusing one instance for every request: the
    // choice steer makes goes on with its request through add_header (which chose
    // nothing) to the end, and a later request on the same instances starts with none.
    for concurrent in [1, 4] {
        let reuse = Reuse {
            max_requests: 1000,
            max_concurrent: concurrent,
        };
        let add = Arc::new(
            Guest::new(
                "add",
                &load("add_header"),
                Role::Middleware,
                upstream_echo(),
                refuse(),
                LIMITS,
                reuse,
            )
            .unwrap(),
        );
        let after: Next = Arc::new(move |req| {
            let add = add.clone();
            Box::pin(async move {
                add.handle(req).await.map_err(|e| match e {
                    GuestError::Code(c) => c,
                    other => ErrorCode::InternalError(Some(other.to_string())),
                })
            })
        });
        let steer = Guest::new(
            "steer",
            &load("steer"),
            Role::Middleware,
            after,
            refuse(),
            LIMITS,
            reuse,
        )
        .unwrap();
        let cases = [
            (Some("b"), Some("user-1"), "b", "user-1"),
            (None, None, "-", "-"),
            (Some("c"), None, "c", "-"),
            (None, Some("user-2"), "-", "user-2"),
            (None, None, "-", "-"),
        ];
        for round in 0..3 {
            for (pool, key, want_pool, want_key) in cases {
                let res = steer.handle(steer_request(pool, key)).await.unwrap();
                assert_eq!(header(&res, "x-next-pool"), want_pool, "{round} {pool:?}");
                assert_eq!(header(&res, "x-next-key"), want_key, "{round} {key:?}");
                assert_eq!(
                    header(&res, "x-steer-choice"),
                    format!("{want_pool} {want_key}")
                );
            }
        }
        assert_eq!(steer.instances(), 1, "one reused instance served them all");
        // A choice the request came with (the middleware before chose it) is where the
        // guest starts; it may change it.
        let mut req = steer_request(None, Some("mine"));
        req.extensions_mut().insert(Arc::new(Upstream {
            pool: Some("earlier".into()),
            hash_key: Some("earlier-key".into()),
        }));
        let res = steer.handle(req).await.unwrap();
        assert_eq!(header(&res, "x-next-pool"), "earlier");
        assert_eq!(header(&res, "x-next-key"), "mine");
        let res = steer.handle(steer_request(None, None)).await.unwrap();
        assert_eq!(
            header(&res, "x-next-pool"),
            "-",
            "not kept for the next request"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn sluice_edge_upstream_refuses_oversized_choices_and_functions() {
    let steer = Guest::new(
        "steer-big",
        &load("steer"),
        Role::Middleware,
        upstream_echo(),
        refuse(),
        LIMITS,
        Reuse::default(),
    )
    .unwrap();
    let long = "k".repeat(MAX_CHOICE_LEN + 1);
    assert!(matches!(
        steer.handle(steer_request(None, Some(&long))).await,
        Err(GuestError::Crashed)
    ));
    assert!(matches!(
        steer.handle(steer_request(Some(&long), None)).await,
        Err(GuestError::Crashed)
    ));
    let fits = "k".repeat(MAX_CHOICE_LEN);
    let res = steer
        .handle(steer_request(None, Some(&fits)))
        .await
        .unwrap();
    assert_eq!(header(&res, "x-next-key"), fits);
    // Only a middleware is given the interface: an edge function passes nothing on.
    assert_eq!(UPSTREAM, "sluice:edge/upstream@0.1.0");
    assert!(sluice_host::component::imports::provided(
        UPSTREAM,
        Role::Middleware
    ));
    assert!(!sluice_host::component::imports::provided(
        UPSTREAM,
        Role::Function
    ));
    assert!(sluice_host::component::imports::provided(
        REQUEST_INFO,
        Role::Function
    ));
    assert!(load("steer").imports_edge());
}

/// A fleet store that holds every operation until four are waiting at once (but answers
/// the warm-up key at once), and records the keys it was given.
struct Gate {
    keys: std::sync::Mutex<Vec<String>>,
    four: tokio::sync::Barrier,
}

impl sluice_host::fleet::FleetBackend for Gate {
    fn run(self: Arc<Self>, op: sluice_host::fleet::FleetOp) -> sluice_host::fleet::FleetFuture {
        Box::pin(async move {
            let key = String::from_utf8(op.key().to_vec()).unwrap();
            let count = {
                let mut keys = self.keys.lock().unwrap();
                keys.push(key.clone());
                keys.len() as u32
            };
            if !key.ends_with(":warm") {
                self.four.wait().await;
            }
            sluice_host::fleet::FleetReply::Counter {
                count,
                reset_ms: 1000,
                counted: true,
            }
        })
    }
}

/// `sluice:edge/fleet` calls are concurrent host calls: four requests on one reused
/// instance all wait for the store at once (a blocking call would hold the instance, and
/// the gate would never open), each with its key scoped to the filter.
#[tokio::test(flavor = "current_thread")]
async fn fleet_calls_of_a_reused_instance_wait_for_the_store_together() {
    let gate = Arc::new(Gate {
        keys: Default::default(),
        four: tokio::sync::Barrier::new(4),
    });
    let guest = Arc::new(
        Guest::with_fleet(
            "limiter",
            &load("fleet_counter"),
            Role::Middleware,
            sluice_host::component::Ways {
                next: origin(),
                client: refuse(),
                fleet: Some(gate.clone()),
            },
            LIMITS,
            Reuse {
                max_requests: 100,
                max_concurrent: 4,
            },
        )
        .unwrap(),
    );
    let counted = |key: &str| {
        let mut req = request("/");
        req.headers_mut()
            .insert("x-counter-key", key.parse().unwrap());
        let guest = guest.clone();
        tokio::spawn(async move { guest.handle(req).await })
    };
    let warm = counted("warm").await.unwrap().unwrap();
    assert_eq!(header(&warm, "x-counter"), "1");
    // One after the other, each once the one before waits for the store: the instance
    // takes the next request meanwhile.
    let mut waiting = Vec::new();
    for key in ["a", "b", "c", "d"] {
        waiting.push(counted(key));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all = futures::future::join_all(waiting);
    let responses = tokio::time::timeout(Duration::from_secs(10), all)
        .await
        .expect("the four fleet calls never waited together");
    for res in responses {
        let res = res.unwrap().unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(text(res).await, "origin body");
    }
    assert_eq!(guest.instances(), 1, "all on one instance");
    let mut keys = gate.keys.lock().unwrap().clone();
    keys.sort();
    assert_eq!(
        keys,
        [
            "c:7:limiter:client:a",
            "c:7:limiter:client:b",
            "c:7:limiter:client:c",
            "c:7:limiter:client:d",
            "c:7:limiter:client:warm"
        ]
    );
}
