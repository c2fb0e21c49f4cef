//! Image variants (issue #9): the `image` filter decides, Sluice fetches the source
//! from the demo origin, transforms it natively and caches the variant. Images are
//! generated here, served by the real origin, fetched with a real client and decoded.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::*;
use image::{DynamicImage, GenericImageView, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
use sha2::{Digest, Sha256};

const RED: [u8; 3] = [220, 20, 20];
const BLUE: [u8; 3] = [20, 20, 220];

/// 800x600: left half red, right half blue.
fn halves(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, _| Rgb(if x < w / 2 { RED } else { BLUE }))
}

fn encode(img: &DynamicImage, f: ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, f).unwrap();
    out.into_inner()
}

/// A JPEG with an APP1 EXIF segment holding `Orientation = o`.
fn jpeg_with_orientation(img: &RgbImage, o: u16) -> Vec<u8> {
    let plain = encode(&DynamicImage::ImageRgb8(img.clone()), ImageFormat::Jpeg);
    // Big-endian TIFF: header, IFD0 with one entry (0x0112, SHORT, 1, o), no next IFD.
    let mut tiff = b"MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01".to_vec();
    tiff.extend_from_slice(&o.to_be_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = plain[..2].to_vec(); // SOI
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&plain[2..]);
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for b in data {
        c ^= u32::from(*b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A PNG whose header claims 50000x50000 pixels, in a few dozen bytes.
fn png_bomb() -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&50_000u32.to_be_bytes());
    ihdr.extend_from_slice(&50_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(&ihdr);
    out.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    let idat = b"IDAT\x78\x9c\x03\x00\x00\x00\x00\x01";
    out.extend_from_slice(&8u32.to_be_bytes());
    out.extend_from_slice(idat);
    out.extend_from_slice(&crc32(idat).to_be_bytes());
    out
}

fn hmac_sha256_hex(key: &[u8], msg: &[u8]) -> String {
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::digest([&ipad[..], msg].concat());
    hex::encode(Sha256::digest([&opad[..], &inner[..]].concat()))
}

fn write_images(root: &Path) -> Vec<u8> {
    let dir = root.join("img");
    std::fs::create_dir_all(&dir).unwrap();
    let photo = DynamicImage::ImageRgb8(halves(800, 600));
    let jpg = encode(&photo, ImageFormat::Jpeg);
    std::fs::write(dir.join("photo.jpg"), &jpg).unwrap();
    let rgba = RgbaImage::from_fn(640, 480, |x, y| {
        Rgba([
            (x % 256) as u8,
            (y % 256) as u8,
            128,
            if x < 320 { 255 } else { 0 },
        ])
    });
    let rgba = DynamicImage::ImageRgba8(rgba);
    std::fs::write(dir.join("pic.png"), encode(&rgba, ImageFormat::Png)).unwrap();
    std::fs::write(dir.join("pic.webp"), encode(&rgba, ImageFormat::WebP)).unwrap();
    // Two frames: green, then red; the first one is used.
    {
        use image::codecs::gif::GifEncoder;
        use image::{Delay, Frame};
        let mut out = Vec::new();
        let mut enc = GifEncoder::new(&mut out);
        for c in [[0u8, 200, 0, 255], [200, 0, 0, 255]] {
            let f = Frame::from_parts(
                RgbaImage::from_pixel(320, 240, Rgba(c)),
                0,
                0,
                Delay::from_numer_denom_ms(100, 1),
            );
            enc.encode_frame(f).unwrap();
        }
        drop(enc);
        std::fs::write(dir.join("anim.gif"), out).unwrap();
    }
    // Stored 300x200 (left red, right blue), shown rotated 90° clockwise: 200x300,
    // red on top.
    std::fs::write(
        dir.join("exif6.jpg"),
        jpeg_with_orientation(&halves(300, 200), 6),
    )
    .unwrap();
    std::fs::write(dir.join("bomb.png"), png_bomb()).unwrap();
    // Over max_source_bytes (500000): 600x600 of noise.
    let mut seed = 7u32;
    let noise = RgbImage::from_fn(600, 600, |_, _| {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let b = seed.to_be_bytes();
        Rgb([b[0], b[1], b[2]])
    });
    std::fs::write(
        dir.join("big.png"),
        encode(&DynamicImage::ImageRgb8(noise), ImageFormat::Png),
    )
    .unwrap();
    std::fs::write(dir.join("truncated.jpg"), &jpg[..jpg.len() / 3]).unwrap();
    std::fs::write(dir.join("notanimage.jpg"), b"hello, I am text").unwrap();
    let mut garbage = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10];
    garbage.extend((0..4000u32).map(|i| (i * 7919 % 251) as u8));
    std::fs::write(dir.join("garbage.jpg"), garbage).unwrap();
    jpg
}

struct Env {
    sluice: Sluice,
    _origin: Proc,
    _root: tempfile::TempDir,
    photo: Vec<u8>,
}

fn setup() -> Env {
    let root = tempfile::tempdir().unwrap();
    let photo = write_images(root.path());
    let origin = origin_root("img", root.path());
    let m = module("image.wasm");
    let policy = format!(
        r#"
[images]
max_source_pixels = 4000000
max_source_bytes = 500000
cache_mb = 8

[pools.o]
peers = ["{addr}"]

[filters.img]
module = {m}
config = {{ sources = ["/img/"], max_width = 2000, max_height = 2000, on_error = 422 }}

[filters.pass]
module = {m}
config = {{ path_prefix = "/pass/", sources = ["/img/"], on_error = "passthrough" }}

[filters.signed]
module = {m}
config = {{ path_prefix = "/signed/", sources = ["/img/"], signing_key = "s3cret", widths = [100, 200] }}

[filters.query]
module = {m}
config = {{ path_prefix = "", sources = ["/img/"], query = true, formats = ["jpeg", "png"] }}

[[routes]]
path_prefix = "/cdn-cgi/image/"
filters = ["img"]
pool = "o"

[[routes]]
path_prefix = "/pass/"
filters = ["pass"]
pool = "o"

[[routes]]
path_prefix = "/signed/"
filters = ["signed"]
pool = "o"

[[routes]]
path_prefix = "/"
filters = ["query"]
pool = "o"
"#,
        addr = origin.addr
    );
    Env {
        sluice: sluice(&policy),
        _origin: origin,
        _root: root,
        photo,
    }
}

struct Got {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn image(&self) -> (ImageFormat, DynamicImage) {
        assert_eq!(
            self.status,
            200,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        let f = image::guess_format(&self.body).expect("an image");
        let img = image::load_from_memory(&self.body).expect("decodable");
        (f, img)
    }
}

fn get_with(url: &str, headers: &[(&str, &str)]) -> Got {
    let mut r = client().get(url);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().unwrap();
    Got {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.bytes().unwrap().to_vec(),
    }
}

fn get(url: &str) -> Got {
    get_with(url, &[])
}

fn near(p: [u8; 3], want: [u8; 3]) -> bool {
    p.iter()
        .zip(want)
        .all(|(a, b)| (i32::from(*a) - i32::from(b)).abs() < 40)
}

fn rgb_at(img: &DynamicImage, x: u32, y: u32) -> [u8; 3] {
    let p = img.get_pixel(x, y).0;
    [p[0], p[1], p[2]]
}

#[test]
fn every_source_format_resizes_to_its_family() {
    let env = setup();
    let s = &env.sluice;
    for (file, want) in [
        ("photo.jpg", ImageFormat::Jpeg),
        ("pic.png", ImageFormat::Png),
        ("pic.webp", ImageFormat::WebP),
        ("anim.gif", ImageFormat::Png),
    ] {
        let got = get(&s.url(&format!("/cdn-cgi/image/width=200/img/{file}")));
        let (f, img) = got.image();
        assert_eq!(f, want, "{file}");
        assert_eq!(img.width(), 200, "{file}");
        assert_eq!(got.header("x-sluice-image"), Some("miss"));
        assert_eq!(
            got.header("content-length")
                .map(|v| v.parse::<usize>().unwrap()),
            Some(got.body.len())
        );
        assert!(got.header("etag").is_some_and(|e| e.starts_with("\"img-")));
        assert!(got.header("last-modified").is_some());
        if file == "anim.gif" {
            // The first frame (green), not the second (red).
            assert!(near(rgb_at(&img, 100, 75), [0, 200, 0]), "{file}");
        }
        if file == "pic.png" || file == "pic.webp" {
            // Transparency kept: the right half is transparent.
            assert_eq!(img.get_pixel(190, 50).0[3], 0, "{file}");
            assert_eq!(img.get_pixel(10, 50).0[3], 255, "{file}");
        }
    }
}

#[test]
fn options_and_fit_modes_give_the_expected_dimensions() {
    let env = setup();
    let s = &env.sluice;
    let dims = |opts: &str| {
        let got = get(&s.url(&format!("/cdn-cgi/image/{opts}/img/photo.jpg")));
        let (f, img) = got.image();
        (f, img.width(), img.height())
    };
    let jpeg = ImageFormat::Jpeg;
    for (opts, w, h) in [
        ("width=300,height=300,fit=scale-down", 300, 225),
        ("width=300,height=300", 300, 225),
        ("width=300,height=300,fit=contain", 300, 225),
        ("width=300,height=300,fit=cover", 300, 300),
        ("width=300,height=300,fit=crop", 300, 300),
        ("width=300,height=300,fit=pad", 300, 300),
        ("width=1600,height=1600,fit=scale-down", 800, 600),
        ("width=1600,height=1600,fit=contain", 1600, 1200),
        ("width=1600,height=1600,fit=cover", 1600, 1600),
        ("width=1600,height=1600,fit=crop", 800, 600),
        ("width=1600,height=1600,fit=pad", 1600, 1600),
        ("height=150", 200, 150),
        ("w=100,dpr=2", 200, 150),
        ("width=300,rotate=90", 300, 400),
        ("width=300,rotate=180", 300, 225),
        ("width=200,sharpen=2", 200, 150),
        ("width=200,metadata=keep", 200, 150),
        ("width=200,gravity=0.2x0.8,fit=cover,height=50", 200, 50),
    ] {
        assert_eq!(dims(opts), (jpeg, w, h), "{opts}");
    }
    assert_eq!(dims("width=200,format=webp").0, ImageFormat::WebP);
    assert_eq!(dims("width=200,format=png").0, ImageFormat::Png);
    assert_eq!(dims("width=200,f=jpeg").0, jpeg);

    // Quality changes the size.
    let small = get(&s.url("/cdn-cgi/image/width=400,quality=20/img/photo.jpg"));
    let big = get(&s.url("/cdn-cgi/image/width=400,quality=95/img/photo.jpg"));
    assert!(small.body.len() < big.body.len());

    // Gravity picks the side that stays.
    let (_, left) =
        get(&s.url("/cdn-cgi/image/width=100,height=100,fit=cover,gravity=left/img/photo.jpg"))
            .image();
    let (_, right) =
        get(&s.url("/cdn-cgi/image/width=100,height=100,fit=cover,gravity=right/img/photo.jpg"))
            .image();
    assert!(near(rgb_at(&left, 50, 50), RED));
    assert!(near(rgb_at(&right, 50, 50), BLUE));

    // Pad fills with the background.
    let (_, padded) =
        get(&s
            .url("/cdn-cgi/image/width=300,height=300,fit=pad,background=%2300ff00/img/photo.jpg"))
        .image();
    assert!(near(rgb_at(&padded, 150, 5), [0, 255, 0]));
    assert!(near(rgb_at(&padded, 50, 150), RED));

    // Rotation turns the left half to the top.
    let (_, turned) = get(&s.url("/cdn-cgi/image/width=300,rotate=90/img/photo.jpg")).image();
    assert!(near(rgb_at(&turned, 150, 50), RED));
    assert!(near(rgb_at(&turned, 150, 350), BLUE));

    // HEAD: the headers of the variant, no body.
    let head = client()
        .head(s.url("/cdn-cgi/image/width=200/img/photo.jpg"))
        .send()
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-type"], "image/jpeg");
}

#[test]
fn exif_orientation_is_applied() {
    let env = setup();
    let got = get(&env.sluice.url("/cdn-cgi/image/width=200/img/exif6.jpg"));
    let (_, img) = got.image();
    assert_eq!((img.width(), img.height()), (200, 300));
    assert!(
        near(rgb_at(&img, 100, 40), RED),
        "{:?}",
        rgb_at(&img, 100, 40)
    );
    assert!(near(rgb_at(&img, 100, 260), BLUE));
    // Without the option the source's orientation is applied too (output is upright).
    let (_, img) = get(&env.sluice.url("/cdn-cgi/image/format=png/img/exif6.jpg")).image();
    assert_eq!((img.width(), img.height()), (200, 300));
}

#[test]
fn format_auto_follows_accept_and_varies() {
    let env = setup();
    let url = env
        .sluice
        .url("/cdn-cgi/image/width=200,format=auto/img/photo.jpg");
    let webp = get_with(&url, &[("accept", "image/avif,image/webp,*/*")]);
    assert_eq!(webp.image().0, ImageFormat::WebP);
    assert_eq!(webp.header("vary"), Some("Accept"));
    assert_eq!(webp.header("content-type"), Some("image/webp"));
    let plain = get_with(&url, &[("accept", "image/*")]);
    assert_eq!(plain.image().0, ImageFormat::Jpeg);
    assert_eq!(plain.header("vary"), Some("Accept"));
    let refused = get_with(&url, &[("accept", "image/webp;q=0, */*")]);
    assert_eq!(refused.image().0, ImageFormat::Jpeg);
    assert_ne!(webp.header("etag"), plain.header("etag"));
    // An explicit format does not vary.
    let fixed = get(&env
        .sluice
        .url("/cdn-cgi/image/width=200,format=webp/img/photo.jpg"));
    assert_eq!(fixed.header("vary"), None);
    // A route whose filter does not allow WebP never picks it.
    let q = get_with(
        &env.sluice.url("/img/photo.jpg?width=120&format=auto"),
        &[("accept", "image/webp")],
    );
    assert_eq!(q.image().0, ImageFormat::Jpeg);
}

#[test]
fn bad_options_get_400() {
    let env = setup();
    for path in [
        "/cdn-cgi/image/width=abc/img/photo.jpg",
        "/cdn-cgi/image/width=0/img/photo.jpg",
        "/cdn-cgi/image/fit=stretch/img/photo.jpg",
        "/cdn-cgi/image/blur=3/img/photo.jpg",
        "/cdn-cgi/image/width=5000/img/photo.jpg",
        "/cdn-cgi/image/width=1500,dpr=2/img/photo.jpg",
        "/cdn-cgi/image/quality=0/img/photo.jpg",
        "/cdn-cgi/image/format=avif/img/photo.jpg",
        "/cdn-cgi/image/format=bmp/img/photo.jpg",
        "/cdn-cgi/image/rotate=45/img/photo.jpg",
        "/cdn-cgi/image/gravity=2x2/img/photo.jpg",
        "/cdn-cgi/image/width=10,width=20/img/photo.jpg",
        "/cdn-cgi/image/background=%23zzz/img/photo.jpg",
        "/cdn-cgi/image/width=100",
        "/cdn-cgi/image/width=100/https://evil.example/x.jpg",
        "/img/photo.jpg?width=100&format=webp",
    ] {
        let got = get(&env.sluice.url(path));
        assert_eq!(
            got.status,
            400,
            "{path}: {}",
            String::from_utf8_lossy(&got.body)
        );
    }
    // Dot segments (sent raw: HTTP clients normalize them away) are resolved before
    // routing ([paths]), so the filter sees `/img/photo.jpg`: the same variant.
    {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(env.sluice.proc.addr).unwrap();
        c.write_all(
            b"GET /cdn-cgi/image/width=100/img/../img/photo.jpg HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        let out = String::from_utf8_lossy(&out);
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(
            out.to_ascii_lowercase()
                .contains("content-type: image/jpeg"),
            "{out}"
        );
    }
    let post = client()
        .post(env.sluice.url("/cdn-cgi/image/width=100/img/photo.jpg"))
        .send()
        .unwrap();
    assert_eq!(post.status(), 405);
}

#[test]
fn query_form_and_plain_requests() {
    let env = setup();
    let got = get(&env.sluice.url("/img/photo.jpg?width=120&format=png"));
    let (f, img) = got.image();
    assert_eq!((f, img.width(), img.height()), (ImageFormat::Png, 120, 90));
    // No option: an ordinary proxied request, the original bytes.
    let plain = get(&env.sluice.url("/img/photo.jpg"));
    assert_eq!(plain.status, 200);
    assert_eq!(plain.body, env.photo);
    assert_eq!(plain.header("x-sluice-image"), None);
    // A missing source is the origin's 404.
    let missing = get(&env.sluice.url("/cdn-cgi/image/width=100/img/nope.jpg"));
    assert_eq!(missing.status, 404);
}

#[test]
fn bombs_and_broken_sources_are_refused_without_harm() {
    let env = setup();
    let s = &env.sluice;
    let t = Instant::now();
    let bomb = get(&s.url("/cdn-cgi/image/width=100/img/bomb.png"));
    assert_eq!(bomb.status, 422, "{}", String::from_utf8_lossy(&bomb.body));
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // Passed through as it is where the filter says so.
    let pass = get(&s.url("/pass/width=100/img/bomb.png"));
    assert_eq!(pass.status, 200);
    assert_eq!(pass.body, png_bomb());
    assert_eq!(pass.header("x-sluice-image"), Some("passthrough"));

    // Over max_source_bytes: refused, or passed through whole.
    let big = get(&s.url("/cdn-cgi/image/width=100/img/big.png"));
    assert_eq!(big.status, 422);
    let whole = std::fs::read(env._root.path().join("img/big.png")).unwrap();
    assert!(whole.len() > 500_000);
    let pass = get(&s.url("/pass/width=100/img/big.png"));
    assert_eq!((pass.status, pass.body.len()), (200, whole.len()));
    assert!(pass.body == whole);

    for file in ["truncated.jpg", "notanimage.jpg", "garbage.jpg"] {
        let got = get(&s.url(&format!("/cdn-cgi/image/width=100/img/{file}")));
        assert!(
            got.status == 422 || (got.status == 200 && got.image().1.width() == 100),
            "{file}: {}",
            got.status
        );
        let pass = get(&s.url(&format!("/pass/width=100/img/{file}")));
        assert!(pass.status == 200, "{file}");
    }
    for file in ["notanimage.jpg", "garbage.jpg"] {
        let got = get(&s.url(&format!("/cdn-cgi/image/width=100/img/{file}")));
        assert_eq!(got.status, 422, "{file}");
    }
    // Still serving.
    let (_, img) = get(&s.url("/cdn-cgi/image/width=64/img/photo.jpg")).image();
    assert_eq!(img.width(), 64);
    let metrics = client()
        .get(s.admin_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("sluice_image_transforms_total{outcome=\"source_too_large\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("sluice_image_transforms_total{outcome=\"undecodable\"}"));
    assert!(metrics.contains("sluice_image_transforms_total{outcome=\"unsupported\"}"));
}

#[test]
fn a_hot_variant_is_transformed_once() {
    let env = setup();
    let s = &env.sluice;
    let url = s.url("/cdn-cgi/image/width=150,format=webp/img/photo.jpg");
    let first = get(&url);
    assert_eq!(first.header("x-sluice-image"), Some("miss"));
    let second = get(&url);
    assert_eq!(second.header("x-sluice-image"), Some("hit"));
    assert_eq!(first.body, second.body);
    assert_eq!(first.header("etag"), second.header("etag"));
    let etag = second.header("etag").unwrap().to_string();
    let revalidated = get_with(&url, &[("if-none-match", &etag)]);
    assert_eq!(revalidated.status, 304);
    assert!(revalidated.body.is_empty());
    // Another option is another variant.
    let other = get(&s.url("/cdn-cgi/image/width=151,format=webp/img/photo.jpg"));
    assert_eq!(other.header("x-sluice-image"), Some("miss"));
    let metrics = client()
        .get(s.admin_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(
        value("sluice_image_cache_total{result=\"hit\"}") >= 2.0,
        "{metrics}"
    );
    assert_eq!(value("sluice_image_transforms_total{outcome=\"ok\"}"), 2.0);
    assert!(value("sluice_image_cache_bytes") > 0.0);
    assert!(value("sluice_image_transform_duration_seconds_count{format=\"webp\"}") >= 2.0);
}

#[test]
fn signed_urls() {
    let env = setup();
    let s = &env.sluice;
    let path = "/signed/width=100/img/photo.jpg";
    let sig = hmac_sha256_hex(b"s3cret", path.as_bytes());
    let (_, img) = get(&s.url(&format!("{path}?sig={sig}"))).image();
    assert_eq!(img.width(), 100);
    // With an expiry in the signed part.
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let fresh = format!("{path}?exp={}", exp + 600);
    let sig2 = hmac_sha256_hex(b"s3cret", fresh.as_bytes());
    assert_eq!(get(&s.url(&format!("{fresh}&sig={sig2}"))).status, 200);
    let stale = format!("{path}?exp={}", exp - 600);
    let sig3 = hmac_sha256_hex(b"s3cret", stale.as_bytes());
    assert_eq!(get(&s.url(&format!("{stale}&sig={sig3}"))).status, 403);
    // Wrong, missing, or for another URL.
    let bad = hmac_sha256_hex(b"wrong", path.as_bytes());
    assert_eq!(get(&s.url(&format!("{path}?sig={bad}"))).status, 403);
    assert_eq!(get(&s.url(path)).status, 403);
    let other = "/signed/width=200/img/photo.jpg";
    assert_eq!(get(&s.url(&format!("{other}?sig={sig}"))).status, 403);
    // Signed but not an allowed width.
    let p300 = "/signed/width=300/img/photo.jpg";
    let sig300 = hmac_sha256_hex(b"s3cret", p300.as_bytes());
    assert_eq!(get(&s.url(&format!("{p300}?sig={sig300}"))).status, 400);
}

#[test]
fn images_limits_are_checked_with_file_and_line() {
    let (out, path, _dir) =
        check("[pools.o]\npeers = [\"127.0.0.1:1\"]\n\n[images]\nmax_source_bytes = 0\n");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:4: [images]: max_source_bytes", path.display())),
        "{err}"
    );
    let (out, _, _dir) = check("[images]\nmax_sorce_bytes = 1\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_sorce_bytes"));
}
