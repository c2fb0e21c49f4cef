//! Unit tests of [`super`].

use super::*;

fn fp(content: u64) -> Fingerprint {
    vec![(
        PathBuf::from("p.toml"),
        Some(FileState {
            modified: SystemTime::UNIX_EPOCH,
            changed: (0, 0),
            inode: 1,
            len: 1,
            content: Some(content),
        }),
    )]
}

#[test]
fn a_change_is_read_only_after_it_stayed_the_same_for_the_interval() {
    let t0 = Instant::now();
    let settle = Duration::from_millis(500);
    let ms = |n| t0 + Duration::from_millis(n);
    let mut d = Debounce::new(fp(1));
    assert!(!d.observe(fp(1), ms(100), settle), "nothing changed");
    assert!(!d.observe(fp(2), ms(200), settle), "half written");
    assert!(!d.observe(fp(2), ms(600), settle), "stable 400 ms only");
    assert!(!d.observe(fp(3), ms(650), settle), "written again");
    assert!(!d.observe(fp(3), ms(1100), settle));
    assert!(d.observe(fp(3), ms(1150), settle), "stable 500 ms");
    assert!(!d.observe(fp(3), ms(2000), settle), "read once");
}

#[test]
fn a_write_during_a_reload_is_read_after_it_settles() {
    let t0 = Instant::now();
    let settle = Duration::from_millis(500);
    let mut d = Debounce::new(fp(1));
    d.rebase(fp(1), t0);
    assert!(
        !d.observe(fp(1), t0 + Duration::from_millis(600), settle),
        "nothing owed"
    );
    d.rebase(fp(4), t0);
    assert!(!d.observe(fp(4), t0 + Duration::from_millis(100), settle));
    assert!(d.observe(fp(4), t0 + Duration::from_millis(600), settle));
}

#[test]
fn polls_a_quarter_of_the_interval_within_bounds() {
    assert_eq!(
        poll_interval(Duration::from_millis(2000)),
        Duration::from_millis(250)
    );
    assert_eq!(
        poll_interval(Duration::from_millis(200)),
        Duration::from_millis(50)
    );
    assert_eq!(
        poll_interval(Duration::from_millis(20)),
        Duration::from_millis(10)
    );
}
