//! Unit tests of [`super`].

use super::*;

fn spec(w: u32, h: u32, fit: &str) -> Spec {
    Spec {
        width: w,
        height: h,
        fit: fit.into(),
        ..Spec::default()
    }
}

#[test]
fn plans_each_fit() {
    let p = plan(2000, 1000, &spec(400, 400, "scale-down"));
    assert_eq!((p.resized, p.canvas), ((400, 200), (400, 200)));
    let p = plan(2000, 1000, &spec(400, 400, "cover"));
    assert_eq!(p.canvas, (400, 400));
    assert_eq!(p.crop, (500.0, 0.0, 1000.0, 1000.0));
    let p = plan(2000, 1000, &spec(400, 400, "pad"));
    assert_eq!(
        (p.resized, p.canvas, p.offset),
        ((400, 200), (400, 400), (0, 100))
    );
    let p = plan(200, 100, &spec(400, 400, "contain"));
    assert_eq!(p.canvas, (400, 200));
    let p = plan(200, 100, &spec(400, 400, "scale-down"));
    assert_eq!(p.canvas, (200, 100));
    let p = plan(200, 100, &spec(400, 400, "crop"));
    assert_eq!(p.canvas, (200, 100));
    let p = plan(2000, 1000, &spec(400, 400, "crop"));
    assert_eq!(p.canvas, (400, 400));
    let p = plan(2000, 1000, &spec(0, 100, "cover"));
    assert_eq!(p.canvas, (200, 100));
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let l = TransformLimits {
        max_source_pixels: 1 << 24,
        max_output_pixels: 1 << 22,
    };
    let s = spec(10, 10, "cover");
    assert!(transform(b"hello", &s, &l).is_err());
    assert!(transform(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 1], &s, &l).is_err());
    assert!(transform(b"\x89PNG\r\n\x1a\n\0\0", &s, &l).is_err());
}
