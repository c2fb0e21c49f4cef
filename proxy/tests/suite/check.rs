//! `sluice check`: every problem of a broken policy is reported with file, line and
//! reason, and a good policy passes.

use crate::support::*;

fn errors(text: &str) -> (i32, String, String) {
    let (out, path, _dir) = check(text);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        path.display().to_string(),
    )
}

#[test]
fn good_policy_passes() {
    let text = format!(
        "[pools.p]\npeers = [\"127.0.0.1:1\"]\n[filters.h]\nmodule = {}\n[[routes]]\nfilters = [\"h\"]\npool = \"p\"\n",
        module("headers.wasm")
    );
    let (out, _p, _d) = check(&text);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ok (1 routes, 1 filters, 1 pools) in "),
        "{stdout}"
    );
    // What it compiled and started, and how long each took (issue #22).
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("module headers.wasm: compiled (")
            || lines[0].starts_with("module headers.wasm: read from the module cache ("),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("filter h (start and configure): ready ("),
        "{stdout}"
    );
    assert!(
        lines[1].ends_with(" ms)") || lines[1].ends_with(" s)"),
        "{stdout}"
    );
    // Not a terminal: no spinner, stderr stays empty.
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[test]
fn bad_toml_names_the_line() {
    let (code, err, path) =
        errors("[pools.p]\npeers = [\"127.0.0.1:1\" x]\n\n[[routes]]\npool = \"p\"\n");
    assert_ne!(code, 0);
    assert!(err.starts_with(&format!("{path}:2: ")), "{err}");
}

#[test]
fn unknown_filter_and_pool_are_all_reported() {
    let (code, err, path) = errors(
        "[pools.p]\npeers = [\"127.0.0.1:1\"]\n\n[[routes]]\nname = \"r\"\nfilters = [\"ghost\"]\npool = \"nowhere\"\n",
    );
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!(
            "{path}:6: route \"r\" names unknown filter \"ghost\""
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{path}:7: route \"r\" names unknown pool \"nowhere\""
        )),
        "{err}"
    );
}

#[test]
fn missing_and_invalid_modules_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm at all").unwrap();
    let (code, err, path) = errors(&format!(
        "[pools.p]\npeers = [\"127.0.0.1:1\"]\n\n[filters.gone]\nmodule = \"/nonexistent/x.wasm\"\n\n[filters.junk]\nmodule = {:?}\n\n[[routes]]\nfilters = [\"gone\", \"junk\"]\npool = \"p\"\n",
        junk.display().to_string()
    ));
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!(
            "{path}:5: filter \"gone\": module /nonexistent/x.wasm not found"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("{path}:8: filter \"junk\": compile error")),
        "{err}"
    );
}

#[test]
fn module_that_is_not_proxy_wasm_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("plain.wasm");
    std::fs::write(&m, b"\0asm\x01\0\0\0").unwrap();
    let (code, err, path) = errors(&format!(
        "[pools.p]\npeers = [\"127.0.0.1:1\"]\n[filters.plain]\nmodule = {:?}\n[[routes]]\nfilters = [\"plain\"]\npool = \"p\"\n",
        m.display().to_string()
    ));
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!(
            "{path}:4: filter \"plain\": not a Proxy-Wasm 0.2.0/0.2.1 module"
        )),
        "{err}"
    );
}

#[test]
fn filter_rejecting_its_configuration_is_rejected() {
    let (code, err, path) = errors(&format!(
        "[pools.p]\npeers = [\"127.0.0.1:1\"]\n[filters.h]\nmodule = {}\nconfig = {{ no_such_key = 1 }}\n[[routes]]\nfilters = [\"h\"]\npool = \"p\"\n",
        module("headers.wasm")
    ));
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!(
            "{path}:4: filter \"h\": proxy_on_configure returned false"
        )),
        "{err}"
    );
}

#[test]
fn unknown_keys_and_bad_addresses_are_rejected() {
    let (code, err, path) = errors("[server]\nlisten = [\"nonsense\"]\n[pools.p]\npeers = [\"127.0.0.1:1\"]\n[[routes]]\npool = \"p\"\nbogus = 1\n");
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("{path}:7: ")) && err.contains("bogus"),
        "{err}"
    );
}
