//! Proxy-Wasm response phases on component routes (issue #21): the response of a
//! component chain (middleware and pool, or edge function) goes back through the
//! route's Proxy-Wasm response-headers and response-body phases as a pool's does, so a
//! WAF's response rules hold there too. Real listener, real origin, the built WAF.

use std::io::Read;

use crate::support::*;

/// `[server]` key that enables component filters.
const ENABLE: &str = "component_model = true\n";

/// `[filters.NAME]` of a component.
fn component_filter(name: &str, file: &str) -> String {
    format!(
        "[filters.{name}]\nkind = \"component\"\nmodule = {}\n",
        module(&format!("components/{file}.wasm"))
    )
}

/// `[filters.waf]` with inline rules.
fn waf(rules: &str) -> String {
    format!(
        "[filters.waf]\nmodule = {}\nconfig = {{ inline = '''{rules}''', mode = \"block\" }}\n",
        module("waf.wasm")
    )
}

#[test]
fn proxy_wasm_response_headers_run_after_the_component_middleware() {
    let origin = origin("cmp-order");
    let policy = format!(
        "[pools.o]\npeers = [\"{}\"]\n\
         [filters.tag]\nmodule = {}\nconfig = {{ response = {{ set = {{ \"x-component-response\" = \"wasm\" }}, add = {{ \"x-wasm-response\" = \"1\" }} }} }}\n\
         {}{}\
         [[routes]]\nhost = \"mw.test\"\nfilters = [\"tag\", \"add\"]\npool = \"o\"\n\
         [[routes]]\nhost = \"fn.test\"\nfilters = [\"tag\"]\nfunction = \"hello\"\n",
        origin.addr,
        module("headers.wasm"),
        component_filter("add", "add_header"),
        component_filter("hello", "hello"),
    );
    let s = sluice_with_server(&policy, ENABLE);
    let r = client()
        .get(s.url("/echo"))
        .header("host", "mw.test")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-origin-id"], "cmp-order");
    // The way back is middleware first, then the Proxy-Wasm filters: the component
    // appended its header and the Proxy-Wasm filter replaced it (had the Proxy-Wasm
    // phase run first, the component's value would follow the filter's).
    let values: Vec<_> = r
        .headers()
        .get_all("x-component-response")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(values, ["wasm"]);
    assert_eq!(r.headers()["x-wasm-response"], "1");
    // An edge function's response too.
    let r = client()
        .get(s.url("/hi"))
        .header("host", "fn.test")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-edge-function"], "hello");
    assert_eq!(r.headers()["x-wasm-response"], "1");
    assert_eq!(r.text().unwrap(), "hello from a component: GET /hi\n");
}

#[test]
fn waf_response_rules_block_on_component_routes() {
    let root = tempfile::tempdir().unwrap();
    let secret = "<html><body>api_key=sk_live_0123456789</body></html>\n";
    let page = "<html><body>hello</body></html>\n";
    std::fs::write(root.path().join("secret.html"), secret).unwrap();
    std::fs::write(root.path().join("page.html"), page).unwrap();
    let origin = origin_root("cmp-waf", root.path());
    let rules = r#"SecResponseBodyAccess On
SecResponseBodyMimeType text/html text/plain
SecResponseBodyLimit 65536
SecResponseBodyLimitAction ProcessPartial
SecRule RESPONSE_STATUS "@streq 404" "id:101,phase:3,deny,status:451,log"
SecRule RESPONSE_BODY "@contains sk_live_" "id:102,phase:4,deny,status:403,log""#;
    let policy = format!(
        "[pools.o]\npeers = [\"{}\"]\n{}{}{}\
         [[routes]]\nhost = \"mw.test\"\nfilters = [\"waf\", \"add\"]\npool = \"o\"\n\
         [[routes]]\nhost = \"fn.test\"\nfilters = [\"waf\"]\nfunction = \"hello\"\n",
        origin.addr,
        waf(rules),
        component_filter("add", "add_header"),
        component_filter("hello", "hello"),
    );
    let s = sluice_with_server(&policy, ENABLE);
    let c = client();
    let get = |host: &str, path: &str| {
        let r = c.get(s.url(path)).header("host", host).send().unwrap();
        let status = r.status().as_u16();
        let origin = r.headers().contains_key("x-origin-id");
        let component = r.headers().contains_key("x-component-response");
        (status, origin, component, r.text().unwrap())
    };
    // Phase 4 on the body the origin returned through the middleware: the held head
    // (origin's and component's headers) never leaves, the leak neither.
    let (status, from_origin, from_component, body) = get("mw.test", "/secret.html");
    assert_eq!((status, from_origin, from_component), (403, false, false));
    assert!(!body.contains("sk_live_"), "{body}");
    // Phase 3 on the status.
    assert_eq!(get("mw.test", "/nothing-here").0, 451);
    // A clean page passes byte for byte, with the component's header.
    assert_eq!(
        get("mw.test", "/page.html"),
        (200, true, true, page.to_string())
    );
    // Phase 4 on the body an edge function wrote (it echoes the path).
    let (status, _, _, body) = get("fn.test", "/sk_live_0123");
    assert_eq!(status, 403);
    assert!(!body.contains("sk_live_"), "{body}");
    let (status, _, _, body) = get("fn.test", "/fine");
    assert_eq!(
        (status, body.as_str()),
        (200, "hello from a component: GET /fine\n")
    );
    // The same client connection served all of it.
    assert_eq!(
        get("mw.test", "/page.html"),
        (200, true, true, page.to_string())
    );
}

#[test]
fn a_large_body_streams_through_the_proxy_wasm_response_body_phase() {
    // 6 MiB files, one with a leak string 100 KiB in.
    let root = tempfile::tempdir().unwrap();
    let n = 6 << 20;
    let clean = vec![b'a'; n];
    let mut leak = clean.clone();
    leak[100 << 10..][..16].copy_from_slice(b"sk_live_01234567");
    std::fs::write(root.path().join("clean.bin"), &clean).unwrap();
    std::fs::write(root.path().join("leak.bin"), &leak).unwrap();
    let origin = origin_root("cmp-large", root.path());
    // The WAF inspects the first 512 KiB of the body (held, with the head) and lets the
    // whole of it through. It sees the component's output: the rule matches only the
    // upper-cased leak.
    let rules = r#"SecResponseBodyAccess On
SecResponseBodyMimeType application/octet-stream
SecResponseBodyLimit 524288
SecResponseBodyLimitAction ProcessPartial
SecRule RESPONSE_BODY "@contains SK_LIVE_" "id:102,phase:4,deny,status:403,log""#;
    let policy = format!(
        "[pools.o]\npeers = [\"{}\"]\n{}{}\
         [[routes]]\nfilters = [\"waf\", \"upper\"]\npool = \"o\"\n",
        origin.addr,
        waf(rules),
        component_filter("upper", "transform"),
    );
    let s = sluice_with_server(&policy, ENABLE);
    let started = std::time::Instant::now();
    let mut r = client().get(s.url("/clean.bin")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-transform"], "upper");
    let mut body = Vec::new();
    r.read_to_end(&mut body).unwrap();
    assert_eq!(body.len(), n);
    assert!(body.iter().all(|b| *b == b'A'), "every byte upper-cased");
    eprintln!("6 MiB through WAF + transform: {:?}", started.elapsed());
    let r = client().get(s.url("/leak.bin")).send().unwrap();
    assert_eq!(r.status(), 403);
    assert!(!r.headers().contains_key("x-origin-id"));
    let body = r.bytes().unwrap();
    assert!(body.len() < 4096, "the large body was replaced");
}

#[test]
fn a_streamed_request_body_goes_through_the_proxy_wasm_body_phase() {
    let origin = origin("cmp-reqbody");
    let policy = format!(
        "[pools.o]\npeers = [\"{}\"]\n\
         [filters.rw]\nmodule = {}\nrequest_body = \"stream\"\nconfig = {{ request = {{ from = \"secret\", to = \"public\" }} }}\n\
         {}[[routes]]\nfilters = [\"rw\", \"add\"]\npool = \"o\"\n",
        origin.addr,
        module("body_rewrite.wasm"),
        component_filter("add", "add_header"),
    );
    let s = sluice_with_server(&policy, ENABLE);
    // Past the 64 KiB read before the chain: streamed, chunk by chunk through the
    // Proxy-Wasm body phase (the filter holds it to the end), then to the component.
    for n in [1000usize, 300 << 10] {
        let mut body = vec![b'a'; n];
        body[n / 2..][..6].copy_from_slice(b"secret");
        let r = client().post(s.url("/echo")).body(body).send().unwrap();
        assert_eq!(r.status(), 200, "{n}");
        let echo: serde_json::Value = r.json().unwrap();
        let got = echo["body"].as_str().unwrap();
        assert_eq!(got.len(), n, "{n}");
        assert!(got.contains("public") && !got.contains("secret"), "{n}");
        assert_eq!(
            echo_header(&echo, "x-component").as_deref(),
            Some("add-header")
        );
    }
}

/// Bodies larger than a Proxy-Wasm filter may hold, both ways, on a component route: the
/// filter's limit answers 413 for the request and cuts the response, none of the held
/// body sent.
#[test]
fn bodies_past_the_filter_buffer_are_refused_on_a_component_route() {
    let origin = origin("cmp-huge");
    let policy = format!(
        "[pools.o]\npeers = [\"{}\"]\n\
         [filters.rw]\nmodule = {}\nrequest_body = \"stream\"\nconfig = {{ request = {{ from = \"secret\", to = \"public\" }}, response = {{ from = \"X\", to = \"Y\" }} }}\n\
         {}[[routes]]\nfilters = [\"rw\", \"upper\"]\npool = \"o\"\n",
        origin.addr,
        module("body_rewrite.wasm"),
        component_filter("upper", "transform"),
    );
    let s = sluice_with_server(&policy, ENABLE);
    // 2 MiB streamed request body, held by the filter past its 1 MiB limit.
    let r = client()
        .post(s.url("/echo"))
        .body(vec![b'a'; 2 << 20])
        .send()
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(!r.headers().contains_key("x-origin-id"));
    // A 3 MiB response the filter would hold whole: this filter lets the head go (it
    // does not pause the headers), so past its limit the stream is cut, as on a pool
    // route; nothing of the held body was sent.
    let r = client().get(s.url("/bytes/3145728")).send().unwrap();
    assert_eq!(r.headers()["x-transform"], "upper");
    if let Ok(body) = r.bytes() {
        panic!("the cut stream read as a whole body: {body:?}");
    }
    // A small one is rewritten after the component's transform.
    let r = client().get(s.url("/bytes/8")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-transform"], "upper");
    assert_eq!(&r.bytes().unwrap()[..], b"YYYYYYYY");
}
