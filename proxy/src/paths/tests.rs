//! Unit tests of [`super`].

use super::*;

fn norm_with(path: &str, cfg: &PathsConfig) -> Result<String, PathError> {
    normalize_path(path.as_bytes(), cfg).map(|o| o.unwrap_or_else(|| path.to_string()))
}

fn norm(path: &str) -> Result<String, PathError> {
    norm_with(path, &PathsConfig::default())
}

#[test]
fn canonical_paths_are_left_alone() {
    for p in [
        "/",
        "/echo",
        "/echo/",
        "/a/b.c/d~e_f-g",
        "/a;b=c/@:!$&'()*+,",
    ] {
        assert_eq!(
            normalize_path(p.as_bytes(), &PathsConfig::default()),
            Ok(None),
            "{p}"
        );
    }
}

#[test]
fn the_bypasses_of_the_issue_become_echo() {
    for p in [
        "//echo",
        "/./echo",
        "/x/../echo",
        "/%65cho",
        "/%2e%2e/echo",
        "/%2E%2E/echo",
        "///echo",
        "/a/b/../../echo",
        "/../echo",
        "/.%2e/echo",
        "/ech%6F",
    ] {
        assert_eq!(norm(p).as_deref(), Ok("/echo"), "{p}");
    }
}

#[test]
fn dot_segments_follow_rfc3986() {
    // RFC 3986 §5.2.4 examples and edge cases.
    assert_eq!(norm("/a/b/c/./../../g").as_deref(), Ok("/a/g"));
    assert_eq!(norm("/mid/content=5/../6").as_deref(), Ok("/mid/6"));
    assert_eq!(norm("/a/b/..").as_deref(), Ok("/a/"));
    assert_eq!(norm("/a/.").as_deref(), Ok("/a/"));
    assert_eq!(norm("/..").as_deref(), Ok("/"));
    assert_eq!(norm("/.").as_deref(), Ok("/"));
    assert_eq!(norm("/a/..b/c").as_deref(), Ok("/a/..b/c"));
    assert_eq!(norm("/a//").as_deref(), Ok("/a/"));
    assert_eq!(norm("/a//b//").as_deref(), Ok("/a/b/"));
}

#[test]
fn merge_slashes_off_keeps_empty_segments() {
    let cfg = PathsConfig {
        merge_slashes: false,
        ..PathsConfig::default()
    };
    assert_eq!(norm_with("//echo", &cfg).as_deref(), Ok("//echo"));
    assert_eq!(
        normalize_path(b"/a//b", &cfg),
        Ok(None),
        "canonical without merging"
    );
    assert_eq!(norm_with("/a//../b", &cfg).as_deref(), Ok("/a/b"));
}

#[test]
fn escapes_are_canonical_and_decoded_once() {
    assert_eq!(norm("/a%3fb").as_deref(), Ok("/a%3Fb"));
    assert_eq!(norm("/%252e%252e/echo").as_deref(), Ok("/%252e%252e/echo"));
    assert_eq!(norm("/caf%c3%a9").as_deref(), Ok("/caf%C3%A9"));
    assert_eq!(norm("/caf\u{e9}").as_deref(), Ok("/caf%C3%A9"));
    assert_eq!(norm("/a%20b").as_deref(), Ok("/a%20b"));
    assert_eq!(norm("/a{b}|c").as_deref(), Ok("/a%7Bb%7D%7Cc"));
    assert_eq!(norm("/%41%7e").as_deref(), Ok("/A~"));
}

#[test]
fn malformed_escapes_and_control_bytes_are_refused() {
    for p in ["/%", "/%4", "/%zz", "/a%g1", "/echo%"] {
        assert_eq!(norm(p), Err(PathError::MalformedEscape), "{p}");
    }
    for p in [
        "/%00",
        "/echo%00.html",
        "/a%0d%0ab",
        "/%7f",
        "/a\tb",
        "/a\x00",
    ] {
        assert_eq!(norm(p), Err(PathError::ControlByte), "{p:?}");
    }
}

#[test]
fn encoded_slashes_follow_the_policy() {
    assert_eq!(norm("/echo%2F.."), Err(PathError::EncodedSlash));
    assert_eq!(norm("/a%2fb"), Err(PathError::EncodedSlash));
    let keep = PathsConfig {
        encoded_slashes: Separators::Keep,
        ..PathsConfig::default()
    };
    assert_eq!(norm_with("/echo%2f..", &keep).as_deref(), Ok("/echo%2F.."));
    assert_eq!(
        norm_with("/a%2F..%2Fb", &keep).as_deref(),
        Ok("/a%2F..%2Fb")
    );
    let decode = PathsConfig {
        encoded_slashes: Separators::Decode,
        ..PathsConfig::default()
    };
    assert_eq!(norm_with("/echo%2F..", &decode).as_deref(), Ok("/"));
    assert_eq!(norm_with("/x%2F..%2Fecho", &decode).as_deref(), Ok("/echo"));
    assert_eq!(norm_with("/a%2F%2Fb", &decode).as_deref(), Ok("/a/b"));
}

#[test]
fn backslashes_follow_the_policy() {
    assert_eq!(norm("/x\\..\\echo"), Err(PathError::Backslash));
    assert_eq!(norm("/x%5c..%5Cecho"), Err(PathError::Backslash));
    let keep = PathsConfig {
        backslashes: Separators::Keep,
        ..PathsConfig::default()
    };
    assert_eq!(norm_with("/a\\b%5c", &keep).as_deref(), Ok("/a%5Cb%5C"));
    let decode = PathsConfig {
        backslashes: Separators::Decode,
        ..PathsConfig::default()
    };
    assert_eq!(norm_with("/x\\..\\echo", &decode).as_deref(), Ok("/echo"));
    assert_eq!(norm_with("/x%5C..%5Cecho", &decode).as_deref(), Ok("/echo"));
}

#[test]
fn case_lower_lowercases_letters_not_escapes() {
    let lower = PathsConfig {
        case: Case::Lower,
        ..PathsConfig::default()
    };
    assert_eq!(norm_with("/ECHO", &lower).as_deref(), Ok("/echo"));
    assert_eq!(norm_with("/%45cho", &lower).as_deref(), Ok("/echo"));
    assert_eq!(norm_with("/A%C3%89", &lower).as_deref(), Ok("/a%C3%89"));
    assert_eq!(normalize_path(b"/echo", &lower), Ok(None));
    assert_eq!(norm("/ECHO").as_deref(), Ok("/ECHO"));
}

#[test]
fn normalize_off_leaves_everything() {
    let off = PathsConfig {
        normalize: false,
        ..PathsConfig::default()
    };
    assert_eq!(normalize_path(b"//x/../%65cho%00", &off), Ok(None));
}

#[test]
fn prefixes_match_on_segment_boundaries() {
    assert!(prefix_matches("/echo", "/echo"));
    assert!(prefix_matches("/echo", "/echo/"));
    assert!(prefix_matches("/echo", "/echo/x"));
    assert!(!prefix_matches("/echo", "/echoes"));
    assert!(!prefix_matches("/echo", "/echo.json"));
    assert!(!prefix_matches("/echo", "/ech"));
    assert!(prefix_matches("/", "/anything"));
    assert!(prefix_matches("/canary/", "/canary/x"));
    assert!(!prefix_matches("/canary/", "/canary"));
    assert!(prefix_matches("/img/", "/img/"));
}

#[test]
fn hosts_are_normalised() {
    assert_eq!(normalize_host("API.Example.com.:8080"), "api.example.com");
    assert_eq!(normalize_host("example.com."), "example.com");
    assert_eq!(normalize_host("example.com"), "example.com");
    assert_eq!(normalize_host("[::1]:80"), "::1");
    assert_eq!(normalize_host("localhost:x"), "localhost:x");
    assert_eq!(normalize_host(""), "");
}

#[test]
fn queries_are_split_off() {
    assert_eq!(split_query(b"/echo?a=1?b"), (&b"/echo"[..], &b"?a=1?b"[..]));
    assert_eq!(split_query(b"/echo"), (&b"/echo"[..], &b""[..]));
    assert_eq!(split_query(b"?x"), (&b""[..], &b"?x"[..]));
}

#[test]
fn host_headers_are_names_addresses_or_bracketed_literals_with_a_port() {
    for ok in [
        "example.com",
        "a-b_c.example:8080",
        "10.0.0.1:80",
        "[::1]",
        "[fd12::3:4]:443",
        "localhost:",
    ] {
        assert!(is_host_port(ok.as_bytes(), false), "{ok}");
    }
    for bad in [
        "",
        ":80",
        "exa mple.com",
        "example.com:123456",
        "example.com:8o",
        "ex@mple.com",
        "[]",
        "[::g]",
        "host\u{e9}.com",
        "a\0b",
        "a/b",
    ] {
        assert!(!is_host_port(bad.as_bytes(), false), "{bad:?}");
    }
    assert!(is_host_port(b"example.com:443", true));
    assert!(!is_host_port(b"example.com", true));
    assert!(!is_host_port(b"example.com:", true));
}
