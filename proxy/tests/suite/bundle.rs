//! Policy bundles from a real OCI registry (issue #20): Debian's `docker-registry`
//! (distribution) started here on a loopback port with a temporary storage directory;
//! `sluice bundle push` and `sluice run --policy oci://...` as processes; hostile
//! registries made by writing manifests and tampering with the registry's storage.
//! Requirement name: `docker-registry` (scripts/setup.sh installs it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice::bundle::{self, follow, registry::Registry as Client, BundleRef, Refusal};

use crate::support::*;

/// A registry on a loopback port, storing in a temporary directory.
struct Registry {
    child: Child,
    addr: SocketAddr,
    storage: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    /// `oci://ADDR/REPO:TAG`.
    fn reference(&self, repo_tag: &str) -> String {
        format!("oci://{}/{repo_tag}", self.addr)
    }

    /// Stops it (its storage stays).
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port and storage (after [`Registry::stop`]).
    fn start(&mut self) {
        self.child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.storage.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry");
        let addr = self.addr;
        until(secs(20), "the registry answers /v2/ again", || {
            client()
                .get(format!("http://{addr}/v2/"))
                .send()
                .is_ok_and(|a| a.status() == 200)
        });
    }

    /// The file holding blob `digest` in the registry's storage.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage_root()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

fn registry() -> Option<Registry> {
    if !require("docker-registry", "docker-registry") {
        return None;
    }
    let storage = tempfile::tempdir().unwrap();
    let conf = storage.path().join("config.yml");
    let log = storage.path().join("registry.log");
    let (child, addrs) = spawn_on_fresh_ports(1, "docker-registry", |addrs| {
        std::fs::write(
            &conf,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {}\n",
                storage.path().join("data").display(),
                addrs[0]
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("docker-registry");
        (child, log.clone())
    });
    let r = Registry {
        child,
        addr: addrs[0],
        storage,
    };
    until(secs(20), "the registry answers /v2/", || {
        client()
            .get(format!("http://{}/v2/", r.addr))
            .send()
            .is_ok_and(|a| a.status() == 200)
    });
    Some(r)
}

impl Registry {
    fn storage_root(&self) -> PathBuf {
        self.storage.path().join("data")
    }
}

/// `sluice bundle push DIR REF [args]`: the digest it printed.
fn push(input: &Path, reference: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["bundle", "push"])
        .arg(input)
        .arg(reference)
        .args(args)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let digest = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{out:?}"
    );
    Ok(digest)
}

/// A policy directory: `server` then `body`.
fn write_policy(dir: &Path, server: &str, body: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("policy.toml"), format!("{server}{body}")).unwrap();
}

/// The policy body: the demo origin behind the headers filter, which tags answers `x-gen`.
fn generation(origin: &Proc, tag: &str) -> String {
    one_filter(
        origin,
        "tag",
        &module("headers.wasm"),
        &format!("{{ response = {{ set = {{ \"x-gen\" = \"{tag}\" }} }} }}"),
    )
}

/// `sluice run` flags that poll every 200 to 250 ms.
const POLL: [&str; 4] = ["--poll-ms", "200", "--poll-jitter-ms", "50"];

/// Starts Sluice from `reference` after pushing `body` there with fresh ports (pushed
/// again on new ports when one was taken); `args` go to `sluice run`, `push_args` to
/// `sluice bundle push`; a `[server]` line in `body` before its first table joins the
/// `[server]` section.
fn sluice_from(
    reg: &Registry,
    reference: &str,
    body: &str,
    cache: &Path,
    args: &[&str],
    push_args: &[&str],
) -> (Sluice, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let log_path = dir.path().join("sluice.log");
    let mut server = String::new();
    let mut digest = String::new();
    let _ = reg;
    let (child, addrs) = spawn_on_fresh_ports(2, "sluice", |addrs| {
        server = format!(
            "[server]\nlisten = [\"{}\"]\nadmin = \"{}\"\nthreads = 1\n",
            addrs[0], addrs[1]
        );
        write_policy(&src, &server, body);
        digest = push(&src, reference, push_args).unwrap();
        (
            run_bundle(reference, cache, args, &log_path),
            log_path.clone(),
        )
    });
    let s = Sluice {
        proc: Proc {
            child,
            addr: addrs[0],
        },
        admin: addrs[1],
        dir,
        policy: src.join("policy.toml"),
        server: server.clone(),
    };
    (s, digest, server)
}

fn run_bundle(reference: &str, cache: &Path, args: &[&str], log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--policy", reference, "--bundle-cache"])
        .arg(cache)
        .args(args)
        .env("SLUICE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("spawn sluice")
}

fn gen_of(s: &Sluice) -> Option<String> {
    let a = client().get(s.url("/echo")).send().ok()?;
    (a.status() == 200)
        .then(|| a.headers().get("x-gen")?.to_str().ok().map(str::to_string))
        .flatten()
}

fn bundle_status(s: &Sluice) -> serde_json::Value {
    s.status()["bundle"].clone()
}

/// A runtime and a client of the library for hand-made manifests.
fn lib_client(reference: &str) -> (tokio::runtime::Runtime, Client, BundleRef) {
    let r = BundleRef::parse(reference).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    (rt, Client::new(&r, &[]), r)
}

/// Pushes a bundle made of `(title, bytes)` layers as they are (no checks) to `r`.
fn push_raw(
    rt: &tokio::runtime::Runtime,
    c: &Client,
    r: &BundleRef,
    layers: &[(&str, &[u8])],
) -> String {
    rt.block_on(async {
        let config = c
            .push_blob(&r.oci, bundle::CONFIG_MEDIA_TYPE, b"{}", Default::default())
            .await
            .unwrap();
        let mut ls = Vec::new();
        for (title, data) in layers {
            let ann =
                std::collections::BTreeMap::from([(bundle::TITLE.to_string(), title.to_string())]);
            ls.push(
                c.push_blob(&r.oci, bundle::FILE_MEDIA_TYPE, data, ann)
                    .await
                    .unwrap(),
            );
        }
        c.push_manifest(&r.oci, config, ls).await.unwrap()
    })
}

/// Starts a node again on `addr`/`admin` from `reference` and the cache (log `name` in
/// the cache dir), waits until it serves, and checks it serves generation `want`.
fn restart(
    reference: &str,
    cache: &Path,
    name: &str,
    (addr, admin): (SocketAddr, SocketAddr),
    server: String,
    want: &str,
) -> Sluice {
    let log = cache.join(name);
    let child = run_bundle(reference, cache, &POLL, &log);
    let s = Sluice {
        proc: Proc { child, addr },
        admin,
        dir: tempfile::tempdir().unwrap(),
        policy: PathBuf::new(),
        server,
    };
    until(
        secs(20),
        &format!("the node restarted ({name}) serves"),
        || gen_of(&s).is_some(),
    );
    assert_eq!(
        gen_of(&s).as_deref(),
        Some(want),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    s
}

#[test]
fn a_node_follows_its_tag_swaps_refuses_and_restarts_offline() {
    let Some(mut reg) = registry() else { return };
    let origin = origin("bundle");
    let cache = tempfile::tempdir().unwrap();
    let reference = reg.reference("edge/policy:live");
    let (s, d1, server) = sluice_from(
        &reg,
        &reference,
        &generation(&origin, "v1"),
        cache.path(),
        &POLL,
        &[],
    );
    assert_eq!(gen_of(&s).as_deref(), Some("v1"), "{}", s.log());
    let st = bundle_status(&s);
    assert_eq!(st["reference"], reference);
    assert_eq!(st["digest"], d1);
    assert!(st["fetched_at_unix"].as_f64().unwrap() > 0.0, "{st}");
    assert_eq!(
        metric_with(&s, "sluice_bundle_info", &format!("digest=\"{d1}\"")),
        1.0
    );
    // The module came from outside the policy's directory: packed under ext/root/.
    let unpacked = cache.path().join("bundles").join(d1.replace(':', "-"));
    let bundled = std::fs::read_to_string(unpacked.join("policy.toml")).unwrap();
    assert!(bundled.contains("module = \"ext/root/"), "{bundled}");

    // v2 on the same tag, under load: swapped within the poll interval, no failed request.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let url = s.url("/echo");
    let load = {
        let (stop, failures) = (stop.clone(), failures.clone());
        std::thread::spawn(move || {
            let c = client();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                match c.get(&url).send() {
                    Ok(a) if a.status() == 200 => {}
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                n += 1;
            }
            n
        })
    };
    let src2 = s.dir.path().join("v2");
    write_policy(&src2, &server, &generation(&origin, "v2"));
    let d2 = push(&src2, &reference, &[]).unwrap();
    assert_ne!(d1, d2);
    until(secs(10), "the node serves v2", || {
        gen_of(&s).as_deref() == Some("v2")
    });
    stop.store(true, Ordering::Relaxed);
    let requests = load.join().unwrap();
    assert!(requests > 10, "{requests} requests under load");
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "failed requests during the swap"
    );
    assert_eq!(bundle_status(&s)["digest"], d2);

    // A broken generation: refused once (remembered by digest), v2 keeps serving.
    let (rt, c, r) = lib_client(&reference);
    let d3 = push_raw(&rt, &c, &r, &[("policy.toml", b"[server\nnot toml")]);
    until(secs(10), "the broken bundle is refused", || {
        bundle_status(&s)["last_refused_digest"] == d3
    });
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(gen_of(&s).as_deref(), Some("v2"));
    assert_eq!(
        metric_with(&s, "sluice_bundle_refusals_total", "reason=\"invalid\""),
        1.0,
        "refused once, not on every poll"
    );
    let st = bundle_status(&s);
    assert_eq!(st["digest"], d2);
    assert!(
        st["last_error"]
            .as_str()
            .unwrap()
            .contains("invalid policy"),
        "{st}"
    );
    assert!(s.log().contains("policy bundle refused"), "{}", s.log());

    // The registry stops: the node keeps serving, and a restart serves the cache.
    reg.stop();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(gen_of(&s).as_deref(), Some("v2"));
    assert!(
        metric_with(&s, "sluice_bundle_fetches_total", "result=\"error\"") >= 1.0,
        "registry errors are counted"
    );
    let (addr, admin) = (s.proc.addr, s.admin);
    drop(s);
    let restarted = restart(
        &reference,
        cache.path(),
        "restart.log",
        (addr, admin),
        server,
        "v2",
    );
    let st = bundle_status(&restarted);
    assert_eq!(st["digest"], d2);
    assert_eq!(st["from_cache"], true);
    assert!(
        st["last_error"].as_str().unwrap().contains("registry"),
        "{st}"
    );
    assert_eq!(
        metric_with(
            &restarted,
            "sluice_bundle_fetches_total",
            "result=\"offline_cache\""
        ),
        1.0
    );

    // The registry is back with the tag on the broken generation: a restart refuses it
    // and starts from the last good bundle.
    let server = restarted.server.clone();
    drop(restarted);
    reg.start();
    let again = restart(
        &reference,
        cache.path(),
        "restart2.log",
        (addr, admin),
        server,
        "v2",
    );
    let st = bundle_status(&again);
    assert_eq!(st["digest"], d2);
    assert_eq!(st["last_refused_digest"], d3);

    // v4 on the tag, then an operator's rollback: the status names the bundle serving
    // (v2) and the one rolled back from; the poller does not swap v4 back in.
    let src4 = cache.path().join("v4");
    write_policy(&src4, &again.server, &generation(&origin, "v4"));
    let d4 = push(&src4, &reference, &[]).unwrap();
    until(secs(10), "the node serves v4", || {
        gen_of(&again).as_deref() == Some("v4")
    });
    let rolled = client()
        .post(format!("http://{}/admin/rollback", again.admin))
        .send()
        .unwrap();
    assert_eq!(rolled.status(), 200);
    assert_eq!(gen_of(&again).as_deref(), Some("v2"));
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(gen_of(&again).as_deref(), Some("v2"), "the rollback holds");
    let st = bundle_status(&again);
    assert_eq!(st["digest"], d2, "{st}");
    assert_eq!(st["newest_digest"], d4, "{st}");
    assert_eq!(
        metric_with(&again, "sluice_bundle_info", &format!("digest=\"{d2}\"")),
        1.0,
        "the metric names the bundle serving"
    );

    // A bundle that loads but does not build (a module that is not Wasm): a restart on
    // it refuses it and serves the last good bundle (v4) from the cache.
    let server = again.server.clone();
    drop(again);
    // A client of its own: the one above held connections to the registry's first process.
    let (rt, c, r) = lib_client(&reference);
    let d5 = push_raw(
        &rt,
        &c,
        &r,
        &[
            (
                "policy.toml",
                format!("{server}{}", one_filter(&origin, "bad", "\"bad.wasm\"", "")).as_bytes(),
            ),
            ("bad.wasm", b"\0asm but not really"),
        ],
    );
    let last = restart(
        &reference,
        cache.path(),
        "restart3.log",
        (addr, admin),
        server,
        "v4",
    );
    let st = bundle_status(&last);
    assert_eq!(st["digest"], d4, "{st}");
    assert_eq!(st["last_refused_digest"], d5, "{st}");
}

#[test]
fn a_digest_pin_never_moves() {
    let Some(reg) = registry() else { return };
    let origin = origin("pin");
    let cache = tempfile::tempdir().unwrap();
    let tag = reg.reference("edge/pin:v1");
    // Push once to learn the digest, then pin it.
    let dir = tempfile::tempdir().unwrap();
    let (s, d1, server) = sluice_from(
        &reg,
        &tag,
        &generation(&origin, "v1"),
        cache.path(),
        &POLL,
        &[],
    );
    drop(s);
    let pinned = format!("{}@{d1}", tag.trim_end_matches(":v1"));
    let log = dir.path().join("pinned.log");
    let addrs: Vec<SocketAddr> = server
        .lines()
        .filter_map(|l| l.split('"').nth(1)?.parse().ok())
        .collect();
    let child = run_bundle(&pinned, cache.path(), &POLL, &log);
    let s = Sluice {
        proc: Proc {
            child,
            addr: addrs[0],
        },
        admin: addrs[1],
        dir,
        policy: PathBuf::new(),
        server: server.clone(),
    };
    until(secs(20), "the pinned node serves", || gen_of(&s).is_some());
    let src2 = s.dir.path().join("v2");
    write_policy(&src2, &server, &generation(&origin, "v2"));
    push(&src2, &tag, &[]).unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(gen_of(&s).as_deref(), Some("v1"));
    let st = bundle_status(&s);
    assert_eq!(st["digest"], d1);
    assert_eq!(st["poll_ms"], 0);
}

/// A PKCS#8 P-256 key pair as PEM files in `dir`: (private, public).
fn key_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf, String) {
    use base64::Engine;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &rng,
    )
    .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
    let pem = format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n");
    let key = bundle::sign::SigningKey::from_pem(&pem).unwrap();
    let (private, public) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    );
    std::fs::write(&private, pem).unwrap();
    std::fs::write(&public, key.public().to_pem()).unwrap();
    (private, public, key.public().id())
}

#[test]
fn only_bundles_signed_with_the_key_are_served() {
    let Some(reg) = registry() else { return };
    let origin = origin("signed");
    let cache = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (a_key, a_pub, a_id) = key_pair(keys.path(), "a");
    let (b_key, _, _) = key_pair(keys.path(), "b");
    let reference = reg.reference("edge/signed:live");
    let a_key_s = a_key.to_str().unwrap();
    let a_pub_s = a_pub.to_str().unwrap();
    // The poll interval comes from the policy here ([server] bundle_poll_ms).
    let tagged = |tag: &str| {
        format!(
            "bundle_poll_ms = 200\nbundle_poll_jitter_ms = 50\n{}",
            generation(&origin, tag)
        )
    };
    let (s, d1, server) = sluice_from(
        &reg,
        &reference,
        &tagged("v1"),
        cache.path(),
        &["--verify-key", a_pub_s],
        &["--sign-key", a_key_s],
    );
    assert_eq!(bundle_status(&s)["poll_ms"], 200);
    assert_eq!(gen_of(&s).as_deref(), Some("v1"), "{}", s.log());
    let st = bundle_status(&s);
    assert_eq!(st["signer"], a_id);
    assert_eq!(
        metric_with(&s, "sluice_bundle_info", &format!("signer=\"{a_id}\"")),
        1.0
    );
    let refused = |digest: &str, reason: &str| {
        until(secs(10), &format!("{digest} refused as {reason}"), || {
            bundle_status(&s)["last_refused_digest"] == digest
        });
        assert_eq!(gen_of(&s).as_deref(), Some("v1"));
        assert_eq!(
            metric_with(
                &s,
                "sluice_bundle_refusals_total",
                &format!("reason=\"{reason}\"")
            ),
            1.0,
            "{}",
            s.log()
        );
    };
    let generation_dir = |tag: &str| {
        let d = s.dir.path().join(tag);
        write_policy(&d, &server, &tagged(tag));
        d
    };
    // Unsigned.
    let d2 = push(&generation_dir("v2"), &reference, &[]).unwrap();
    refused(&d2, "unsigned");
    assert!(s.log().contains("unsigned: no signature"), "{}", s.log());
    // Signed with another key.
    let d3 = push(
        &generation_dir("v3"),
        &reference,
        &["--sign-key", b_key.to_str().unwrap()],
    )
    .unwrap();
    refused(&d3, "bad_signature");
    // Signed with the right key, but the signature names another digest (v1's, copied).
    let src4 = generation_dir("v4");
    let (rt, c, r) = lib_client(&reference);
    let d4 = {
        // Push v4 unsigned without moving the tag yet, give it v1's signed payload, then tag it.
        let packed = bundle::pack::pack(&src4).unwrap();
        let at4 =
            BundleRef::parse(&format!("{}:staging", reference.trim_end_matches(":live"))).unwrap();
        let d4 = rt.block_on(c.push(&at4, &packed, None)).unwrap();
        let key =
            bundle::sign::SigningKey::from_pem(&std::fs::read_to_string(&a_key).unwrap()).unwrap();
        let payload = bundle::sign::payload(&r.repository(), &d1);
        use base64::Engine;
        let sig = base64::engine::general_purpose::STANDARD.encode(key.sign(&payload).unwrap());
        let target = r.at_tag(&bundle::sign::signature_tag(&d4));
        rt.block_on(async {
            let layer = c
                .push_blob(
                    &target,
                    bundle::sign::PAYLOAD_MEDIA_TYPE,
                    &payload,
                    std::collections::BTreeMap::from([(
                        bundle::sign::SIGNATURE_ANNOTATION.to_string(),
                        sig,
                    )]),
                )
                .await
                .unwrap();
            let config = c
                .push_blob(
                    &target,
                    "application/vnd.oci.image.config.v1+json",
                    b"{}",
                    Default::default(),
                )
                .await
                .unwrap();
            c.push_manifest(&target, config, vec![layer]).await.unwrap();
        });
        push(&src4, &reference, &[]).unwrap()
    };
    refused(&d4, "wrong_digest");
    // Signed with the right key: served.
    let d5 = push(&generation_dir("v5"), &reference, &["--sign-key", a_key_s]).unwrap();
    until(secs(10), "the signed v5 is served", || {
        gen_of(&s).as_deref() == Some("v5")
    });
    assert_eq!(bundle_status(&s)["digest"], d5);
}

/// A follower of `reference` (no Sluice process): what a node would do with it.
fn follower(reference: &str, cache: &Path) -> Arc<follow::Follower> {
    follow::Follower::new(follow::Options {
        reference: BundleRef::parse(reference).unwrap(),
        cache: cache.to_path_buf(),
        insecure: Vec::new(),
        verify_key: None,
        poll: None,
        jitter: None,
    })
    .unwrap()
}

fn refusal(reference: &str, cache: &Path) -> Refusal {
    match follower(reference, cache).fetch(None) {
        Err((_, e)) => e,
        Ok(f) => panic!("{reference} was taken: {f:?}"),
    }
}

#[test]
fn hostile_bundles_are_refused() {
    let Some(reg) = registry() else { return };
    let cache = tempfile::tempdir().unwrap();
    let policy = b"# a policy\n";

    // Path traversal and absolute titles: refused before anything is written.
    for (i, title) in [
        "../escaped",
        "a/../../escaped",
        "/tmp/escaped-sluice-bundle",
    ]
    .iter()
    .enumerate()
    {
        let reference = reg.reference(&format!("evil/titles:t{i}"));
        let (rt, c, r) = lib_client(&reference);
        push_raw(&rt, &c, &r, &[("policy.toml", policy), (title, b"x")]);
        let e = refusal(&reference, cache.path());
        assert!(matches!(e, Refusal::BadLayout(_)), "{title}: {e}");
    }
    assert!(!cache.path().join("escaped").exists());
    assert!(!Path::new("/tmp/escaped-sluice-bundle").exists());
    assert!(!cache.path().parent().unwrap().join("escaped").exists());

    // A policy that would read the node's files rather than the bundle's.
    let reference = reg.reference("evil/reach:v1");
    let (rt, c, r) = lib_client(&reference);
    let reach = b"[filters.f]\nmodule = \"f.wasm\"\nfiles = [\"/etc/hostname\"]\n";
    push_raw(&rt, &c, &r, &[("policy.toml", reach), ("f.wasm", b"\0asm")]);
    let e = refusal(&reference, cache.path());
    assert!(
        matches!(e, Refusal::BadLayout(_)) && e.to_string().contains("outside the bundle"),
        "{e}"
    );

    // A blob whose bytes do not match its digest (the registry's storage tampered with).
    let reference = reg.reference("evil/tampered:v1");
    let (rt, c, r) = lib_client(&reference);
    let content = b"SecRule ARGS \"@rx attack\" \"id:1,deny\"\n";
    push_raw(
        &rt,
        &c,
        &r,
        &[("policy.toml", policy), ("rules.conf", content)],
    );
    let blob = reg.blob_file(&bundle::digest_of(content));
    let mut evil = content.to_vec();
    evil[0] = b'#';
    std::fs::write(&blob, &evil).unwrap();
    let e = refusal(&reference, cache.path());
    assert!(matches!(e, Refusal::DigestMismatch(_)), "{e}");
    // ... and one longer than its descriptor says.
    std::fs::write(&blob, vec![b'#'; 1 << 20]).unwrap();
    let e = refusal(&reference, cache.path());
    assert!(matches!(e, Refusal::DigestMismatch(_)), "{e}");

    // A blob beyond the bound: refused from its descriptor, never read.
    let reference = reg.reference("evil/large:v1");
    let (rt, c, r) = lib_client(&reference);
    let big = vec![0u8; bundle::MAX_BLOB_BYTES as usize + 1];
    push_raw(&rt, &c, &r, &[("policy.toml", policy), ("big.data", &big)]);
    let e = refusal(&reference, cache.path());
    assert!(matches!(e, Refusal::TooLarge(_)), "{e}");

    // Not a Sluice bundle (another config media type).
    let reference = reg.reference("evil/image:v1");
    let (rt, c, r) = lib_client(&reference);
    let d = rt.block_on(async {
        let config = c
            .push_blob(
                &r.oci,
                "application/vnd.oci.image.config.v1+json",
                b"{}",
                Default::default(),
            )
            .await
            .unwrap();
        c.push_manifest(&r.oci, config, vec![]).await.unwrap()
    });
    let e = refusal(&reference, cache.path());
    assert!(matches!(e, Refusal::BadLayout(_)), "{d}: {e}");
}

#[test]
fn a_tag_flipping_during_pulls_never_mixes_generations() {
    let Some(reg) = registry() else { return };
    let reference = reg.reference("edge/flip:live");
    let (rt, c, r) = lib_client(&reference);
    // Two generations with the same titles and different contents.
    let gens: Vec<(String, Vec<u8>)> = ["one", "two"]
        .iter()
        .map(|g| {
            let policy = format!("# generation {g}\n");
            let d = push_raw(
                &rt,
                &c,
                &r,
                &[
                    ("policy.toml", policy.as_bytes()),
                    ("rules.conf", g.as_bytes()),
                ],
            );
            (d, g.as_bytes().to_vec())
        })
        .collect();
    let manifests: Vec<Vec<u8>> = gens
        .iter()
        .map(|(d, _)| rt.block_on(c.resolve(&r.at_digest(d))).unwrap().0)
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let stop = stop.clone();
        let url = format!("http://{}/v2/edge/flip/manifests/live", reg.addr);
        std::thread::spawn(move || {
            let c = client();
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                // A PUT the registry dropped (keep-alive race) is tried again.
                let put = c
                    .put(&url)
                    .header("content-type", bundle::MANIFEST_MEDIA_TYPE)
                    .body(manifests[n % 2].clone())
                    .send();
                if put.is_ok_and(|a| a.status().is_success()) {
                    n += 1;
                }
            }
            n
        })
    };
    let mut seen = std::collections::HashSet::new();
    let mut pulls = 0;
    for _ in 0..400 {
        if pulls == 40 {
            break;
        }
        let cache = tempfile::tempdir().unwrap();
        // The registry itself answers 500 now and then while its tag file is rewritten
        // under it: a registry error, never a mixed bundle.
        let f = match follower(&reference, cache.path()).fetch(None) {
            Ok(f) => f.unwrap(),
            Err((_, Refusal::Registry(_))) => continue,
            Err((_, e)) => panic!("{e}"),
        };
        pulls += 1;
        let (_, content) = gens
            .iter()
            .find(|(d, _)| *d == f.digest)
            .expect("one of the two");
        let dir = f.policy.parent().unwrap();
        assert_eq!(
            &std::fs::read(dir.join("rules.conf")).unwrap(),
            content,
            "{}",
            f.digest
        );
        seen.insert(f.digest);
    }
    stop.store(true, Ordering::Relaxed);
    let flips = flipper.join().unwrap();
    assert_eq!(pulls, 40, "pulls that went through");
    assert!(flips > 40, "{flips} flips");
    assert_eq!(
        seen.len(),
        2,
        "both generations were pulled while the tag flipped"
    );
}

#[test]
fn the_default_and_waf_policies_push_and_run_as_they_are() {
    let Some(reg) = registry() else { return };
    let cert = repo().join("policies/demo-tls/cert.pem");
    if !require("crs", CRS_RULES) || !require("demo-tls", cert.to_str().unwrap()) {
        return;
    }
    // policies/waf.toml as it is.
    push(
        &repo().join("policies/waf.toml"),
        &reg.reference("policies/waf:v1"),
        &[],
    )
    .unwrap();
    // policies/default.toml with its ports moved to free ones (written next to the
    // original, so its relative paths hold), as the showcase test runs it.
    let www = repo().join("origin/www");
    let blue = origin_root("blue", &www);
    let green = origin_root("green", &www);
    let mut text = std::fs::read_to_string(repo().join("policies/default.toml")).unwrap();
    for (from, to) in [("8081", blue.addr), ("8082", green.addr)] {
        text = text.replace(&format!("127.0.0.1:{from}"), &to.to_string());
    }
    text = text.replace("access_log = \"stdout\"", "access_log = \"off\"");
    let policy = repo().join(format!("policies/.bundle-{}.toml", std::process::id()));
    let reference = reg.reference("policies/default:v1");
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sluice.log");
    let (child, addrs) = spawn_on_fresh_ports(3, "sluice", |addrs| {
        let mut text = text.clone();
        for (from, to) in ["8080", "8443", "9901"].iter().zip(addrs) {
            text = text.replace(&format!("127.0.0.1:{from}"), &to.to_string());
        }
        std::fs::write(&policy, text).unwrap();
        let pushed = push(&policy, &reference, &[]);
        let _ = std::fs::remove_file(&policy);
        pushed.unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["run", "--policy", &reference, "--bundle-cache"])
            .arg(cache.path())
            .env("SLUICE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        (child, log.clone())
    });
    let s = Sluice {
        proc: Proc {
            child,
            addr: addrs[0],
        },
        admin: addrs[2],
        dir,
        policy: PathBuf::new(),
        server: String::new(),
    };
    let c = client();
    let hello = c.get(s.url("/hello")).send().unwrap();
    assert_eq!(hello.status(), 200);
    assert!(hello.text().unwrap().contains("Hello from a Wasm filter"));
    let echo = c.get(s.url("/echo?q=fine")).send().unwrap();
    assert_eq!(echo.status(), 200, "{}", s.log());
    // The CRS, packed from /usr/share and /etc, still blocks.
    let attack = c.get(s.url("/echo?id=1'+or+'1'='1")).send().unwrap();
    assert_eq!(attack.status(), 403, "{}", s.log());
    let st = bundle_status(&s);
    assert_eq!(st["reference"], reference);
    drop(blue);
    drop(green);
}

#[test]
fn a_filter_module_comes_from_a_registry_by_digest() {
    let Some(reg) = registry() else { return };
    let origin = origin("module");
    let reference = reg.reference("mods/headers:v1");
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["bundle", "push-module"])
        .arg(filter("headers.wasm"))
        .arg(&reference)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let digest = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let by_digest = format!("oci://{}/mods/headers@{digest}", reg.addr);
    let cache = tempfile::tempdir().unwrap();
    let cache_s = cache.path().to_str().unwrap();
    // A tag is not enough: a module must be pinned.
    let (out, _, _dir) = check(&one_filter(&origin, "tag", &format!("{reference:?}"), ""));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs its digest"),
        "{out:?}"
    );
    let s = sluice_with_env(
        &one_filter(
            &origin,
            "tag",
            &format!("{by_digest:?}"),
            "{ response = { set = { \"x-gen\" = \"from-registry\" } } }",
        ),
        &[("SLUICE_BUNDLE_CACHE", cache_s)],
    );
    assert_eq!(gen_of(&s).as_deref(), Some("from-registry"), "{}", s.log());
    let cached = cache
        .path()
        .join("modules")
        .join(format!("{}.wasm", digest.replace(':', "-")));
    assert_eq!(
        std::fs::read(cached).unwrap(),
        std::fs::read(filter("headers.wasm")).unwrap()
    );
}
