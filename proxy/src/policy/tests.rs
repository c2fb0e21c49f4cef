//! Unit tests of policy validation.

use super::*;

fn errs(text: &str) -> Vec<String> {
    match Policy::parse(Path::new("p.toml"), text) {
        Ok(_) => vec![],
        Err(e) => e.0.iter().map(|d| d.to_string()).collect(),
    }
}

#[test]
fn reports_file_line_and_reason() {
    let e = errs(
        "[pools.a]\npeers = [\"127.0.0.1:1\"]\n\n[[routes]]\npool = \"b\"\nfilters = [\"nope\"]\n",
    );
    assert!(
        e.contains(&"p.toml:6: route \"route0\" names unknown filter \"nope\"".to_string()),
        "{e:?}"
    );
    assert!(
        e.contains(&"p.toml:5: route \"route0\" names unknown pool \"b\"".to_string()),
        "{e:?}"
    );
    let e = errs("[server]\nlisten = 5\n");
    assert!(e[0].starts_with("p.toml:2: "), "{e:?}");
    let e = errs("[bogus]\n");
    assert!(
        e[0].starts_with("p.toml:1: ") && e[0].contains("bogus"),
        "{e:?}"
    );
}

#[test]
fn request_body_mode() {
    let base = "[pools.a]\npeers = [\"127.0.0.1:1\"]\n[[routes]]\npool = \"a\"\nfilters = [\"f\"]\n[filters.f]\nmodule = \"f.wasm\"\n";
    let p = Policy::parse(Path::new("p.toml"), base).unwrap();
    assert_eq!(p.filters[0].request_body, RequestBodyMode::Buffer);
    let p = Policy::parse(
        Path::new("p.toml"),
        &format!("{base}request_body = \"stream\"\n"),
    )
    .unwrap();
    assert_eq!(p.filters[0].request_body, RequestBodyMode::Stream);
    let e = errs(&format!("{base}request_body = \"later\"\n"));
    assert!(
        e[0].starts_with("p.toml:8: ") && e[0].contains("request_body"),
        "{e:?}"
    );
}

#[test]
fn route_matching() {
    let r = RouteDef {
        name: "r".into(),
        host: Some("*.example.com".into()),
        path_prefix: "/api".into(),
        filters: vec![],
        pool: Some(0),
        components: Vec::new(),
        function: None,
        redirect_https: false,
        metadata: vec![],
    };
    assert!(r.matches("a.example.com", "/api/x"));
    assert!(!r.matches("example.org", "/api/x"));
    assert!(!r.matches("a.example.com", "/web"));
    assert!(r.matches("a.example.com", "/api"));
    assert!(!r.matches("a.example.com", "/apis"), "segment boundary");
}

#[test]
fn paths_section() {
    let base =
        "[pools.a]\npeers = [\"127.0.0.1:1\"]\n[[routes]]\npool = \"a\"\npath_prefix = \"/Echo\"\n";
    let p = Policy::parse(Path::new("p.toml"), base).unwrap();
    assert_eq!(p.paths, crate::paths::PathsConfig::default());
    assert_eq!(p.routes[0].path_prefix, "/Echo");
    let text = format!("{base}[paths]\ncase = \"lower\"\nencoded_slashes = \"decode\"\n");
    let p = Policy::parse(Path::new("p.toml"), &text).unwrap();
    assert_eq!(p.paths.case, crate::paths::Case::Lower);
    assert_eq!(p.paths.encoded_slashes, crate::paths::Separators::Decode);
    assert_eq!(
        p.routes[0].path_prefix, "/echo",
        "prefixes follow case = lower"
    );
    let e = errs(&format!("{base}[paths]\nbackslashes = \"maybe\"\n"));
    assert!(e[0].starts_with("p.toml:7: "), "{e:?}");
    let e = errs(&format!("{base}[paths]\nmerge = true\n"));
    assert!(e[0].starts_with("p.toml:7: "), "{e:?}");
    let bad = base.replace("/Echo", "/x/../echo");
    let e = errs(&bad);
    assert!(
        e[0].starts_with("p.toml:5: ") && e[0].contains("write \"/echo\""),
        "{e:?}"
    );
}
