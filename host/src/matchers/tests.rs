//! Unit tests of the matchers: encoding, limits, caching, and a property test
//! against `regex` itself.

use super::*;

fn u32s(b: &[u8]) -> Vec<u32> {
    b.chunks(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn with_handle(h: u32, input: &[u8]) -> Vec<u8> {
    let mut a = h.to_le_bytes().to_vec();
    a.extend_from_slice(input);
    a
}

#[test]
fn regex_set_reports_every_matching_pattern() {
    let mut hs = Handles::default();
    let h = hs
        .regex_compile(&encode_list(&[
            r"(?sm-u)^b$",
            r"(?i)select\s+\w+",
            r"(?-u)\xe9",
            "zzz",
        ]))
        .unwrap();
    assert_eq!(u32s(&h), vec![1]);
    let out = hs
        .regex_match(&with_handle(1, b"a\nb\nSELECT x \xe9"))
        .unwrap();
    assert_eq!(u32s(&out), vec![3, 0, 1, 2]);
    let out = hs.regex_match(&with_handle(1, b"nothing")).unwrap();
    assert_eq!(u32s(&out), vec![0]);
}

#[test]
fn captures_give_offsets_and_absent_groups() {
    let mut hs = Handles::default();
    hs.regex_compile(&encode_list(&["(a+)(x)?(b)", "q"]))
        .unwrap();
    let mut args = 1u32.to_le_bytes().to_vec();
    args.extend_from_slice(&0u32.to_le_bytes());
    args.extend_from_slice(b"--aab");
    let out = u32s(&hs.regex_captures(&args).unwrap());
    assert_eq!(out, vec![4, 2, 5, 2, 4, u32::MAX, u32::MAX, 4, 5]);
    // No match: n = 0. Index out of range: error.
    let mut args = 1u32.to_le_bytes().to_vec();
    args.extend_from_slice(&1u32.to_le_bytes());
    args.extend_from_slice(b"--aab");
    assert_eq!(u32s(&hs.regex_captures(&args).unwrap()), vec![0]);
    let mut args = 1u32.to_le_bytes().to_vec();
    args.extend_from_slice(&7u32.to_le_bytes());
    assert!(hs.regex_captures(&args).is_err());
}

#[test]
fn pm_is_ascii_case_insensitive_and_reports_the_earliest_end() {
    let mut hs = Handles::default();
    let h = hs
        .pm_compile(&encode_list(&["", "/etc/passwd", "passwd", "cmd.exe"]))
        .unwrap();
    let h = u32s(&h)[0];
    let out = u32s(&hs.pm_match(&with_handle(h, b"GET /ETC/PASSWD")).unwrap());
    assert_eq!(out, vec![1, 1, 4, 15]);
    let out = u32s(&hs.pm_match(&with_handle(h, b"a CMD.EXE b")).unwrap());
    assert_eq!(out, vec![1, 3, 2, 9]);
    let out = u32s(&hs.pm_match(&with_handle(h, b"harmless")).unwrap());
    assert_eq!(out, vec![0, 0, 0, 0]);
}

#[test]
fn compiled_sets_are_shared_across_vms() {
    let args = encode_list(&["shared-set-test-[0-9]+"]);
    let mut a = Handles::default();
    let mut b = Handles::default();
    a.regex_compile(&args).unwrap();
    b.regex_compile(&args).unwrap();
    let (ra, rb) = (a.regex(1).unwrap(), b.regex(1).unwrap());
    assert!(std::ptr::eq(ra, rb), "one compiled set for both VMs");
    drop(a);
    drop(b);
    // Nobody holds it any more: the next compile builds afresh.
    let mut c = Handles::default();
    c.regex_compile(&args).unwrap();
    assert!(cached_counts().0 >= 1);
}

#[test]
fn bad_input_is_an_error_never_a_panic() {
    let mut hs = Handles::default();
    // Truncated, trailing, empty set, bad pattern, non-UTF-8.
    assert!(matches!(
        hs.regex_compile(&[1, 0]),
        Err(MatchError::Malformed(_))
    ));
    let mut t = encode_list(&["a"]);
    t.push(0);
    assert!(hs.regex_compile(&t).is_err());
    let mut t = encode_list(&["abc"]);
    t.truncate(t.len() - 1);
    assert!(hs.regex_compile(&t).is_err());
    assert!(hs.regex_compile(&encode_list::<&str>(&[])).is_err());
    assert_eq!(
        hs.regex_compile(&encode_list(&["ok", "(unclosed"])),
        Err(MatchError::Pattern {
            index: 1,
            reason: hs
                .regex_compile(&encode_list(&["ok", "(unclosed"]))
                .unwrap_err()
                .to_string()
                .split_once(": ")
                .map(|(_, r)| r.to_string())
                .unwrap()
        })
    );
    assert!(hs.regex_compile(&encode_list(&[&b"\xff"[..]])).is_err());
    // Unknown handles, and a handle of the other kind.
    assert_eq!(
        hs.regex_match(&with_handle(9, b"x")),
        Err(MatchError::Handle(9))
    );
    assert_eq!(
        hs.regex_match(&[1, 2]),
        Err(MatchError::Malformed("truncated integer"))
    );
    hs.pm_compile(&encode_list(&["x"])).unwrap();
    assert_eq!(
        hs.regex_match(&with_handle(1, b"x")),
        Err(MatchError::Handle(1))
    );
    assert_eq!(
        hs.pm_match(&with_handle(0, b"x")),
        Err(MatchError::Handle(0))
    );
}

#[test]
fn limits_are_enforced() {
    let mut hs = Handles::default();
    let long = "a".repeat(MAX_PATTERN_BYTES + 1);
    assert!(matches!(
        hs.regex_compile(&encode_list(&[long.as_str()])),
        Err(MatchError::Limit(_))
    ));
    // A count above the cap is refused before anything is read.
    let mut many = ((MAX_REGEX_PATTERNS + 1) as u32).to_le_bytes().to_vec();
    many.extend_from_slice(&[0; 16]);
    assert!(matches!(hs.regex_compile(&many), Err(MatchError::Limit(_))));
    // A pattern whose compiled program is over the size limit.
    let huge = r"(?u)\w{1000}\w{1000}\w{1000}";
    assert!(matches!(
        hs.regex_compile(&encode_list(&[huge])),
        Err(MatchError::Pattern { index: 0, .. })
    ));
    // Handles per VM.
    let args = encode_list(&["limit-test"]);
    for _ in 0..MAX_HANDLES {
        hs.regex_compile(&args).unwrap();
    }
    assert_eq!(
        hs.regex_compile(&args),
        Err(MatchError::Limit("too many handles in this VM"))
    );
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config { cases: 400, failure_persistence: None, ..Default::default() })]

    /// Whatever bytes a guest sends, every call answers Ok or an error, never a panic.
    #[test]
    fn arbitrary_arguments_never_panic(
        raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        pats in proptest::collection::vec("[ab()|*+?\\\\\\[\\]{}^$.0-9,-]{0,10}", 1..6),
        input in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        handle in 0u32..4,
        index in 0u32..8,
    ) {
        let mut hs = Handles::default();
        let _ = hs.regex_compile(&raw);
        let _ = hs.pm_compile(&raw);
        let _ = hs.regex_compile(&encode_list(&pats));
        let _ = hs.pm_compile(&encode_list(&pats));
        let mut args = handle.to_le_bytes().to_vec();
        args.extend_from_slice(&input);
        let _ = hs.regex_match(&args);
        let _ = hs.pm_match(&args);
        let mut cargs = handle.to_le_bytes().to_vec();
        cargs.extend_from_slice(&index.to_le_bytes());
        cargs.extend_from_slice(&input);
        let _ = hs.regex_captures(&cargs);
        let _ = hs.regex_match(&raw);
        let _ = hs.regex_captures(&raw);
        let _ = hs.pm_match(&raw);
    }
}
