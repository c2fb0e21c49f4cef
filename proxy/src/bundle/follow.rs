//! `sluice run --policy oci://...`: the first fetch (or, with the registry down, the last
//! good bundle from the cache), then a thread that polls the tag (interval plus jitter)
//! and swaps through [`Control::reload_from`] when its digest changes. A bundle refused
//! (layout, digests, sizes, signature, or a policy failing validation) is remembered by
//! digest and not fetched again; the running generation keeps serving. A digest pin is
//! never polled.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use super::registry::Registry;
use super::sign::VerifyKey;
use super::unpack::{bundle_dir, check_contained, unpack};
use super::{BundleRef, Refusal, POLICY_TITLE};
use crate::swap::Control;

/// How a node follows a bundle.
#[derive(Debug, Clone)]
pub struct Options {
    /// The bundle.
    pub reference: BundleRef,
    /// The content-addressed cache (`bundles/`, `refs/`).
    pub cache: PathBuf,
    /// Registries spoken to in plain HTTP besides loopback ones.
    pub insecure: Vec<String>,
    /// Accept only bundles signed with this key.
    pub verify_key: Option<VerifyKey>,
    /// How often the tag is looked at (`None`: the running policy's `[server]
    /// bundle_poll_ms`, else [`DEFAULT_POLL`]).
    pub poll: Option<Duration>,
    /// Up to this much is added to each interval, at random, so nodes do not poll in step
    /// (`None`: the policy's `bundle_poll_jitter_ms`, else a tenth of the interval).
    pub jitter: Option<Duration>,
}

/// How often a tag is polled when neither the command line nor the policy says.
pub const DEFAULT_POLL: Duration = Duration::from_secs(30);

/// What `/admin/status` shows of the bundle.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Status {
    /// The reference followed.
    pub reference: String,
    /// The digest being served.
    pub digest: Option<String>,
    /// Who signed it (`sha256:` of the public key), when `verify_key` is set.
    pub signer: Option<String>,
    /// When the bundle being served was fetched (unix seconds).
    pub fetched_at_unix: Option<f64>,
    /// When the registry was last looked at (unix seconds).
    pub last_check_unix: Option<f64>,
    /// The last error (registry down, refusal).
    pub last_error: Option<String>,
    /// The last digest refused.
    pub last_refused_digest: Option<String>,
    /// Every digest refused since start.
    pub refused_digests: Vec<String>,
    /// Serving the cached bundle because the registry could not be reached at start.
    pub from_cache: bool,
    /// Polling interval, milliseconds (0: pinned, never polled).
    pub poll_ms: u64,
    /// Set while a rollback serves an earlier bundle: the newest digest accepted (the
    /// tag's), not served again until the tag moves.
    pub newest_digest: Option<String>,
}

/// A bundle ready to be validated: unpacked in the cache.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Manifest digest.
    pub digest: String,
    /// `<cache>/bundles/sha256-<hex>/policy.toml`.
    pub policy: PathBuf,
    /// The signer, when verified.
    pub signer: Option<String>,
}

/// The last good bundle of a reference, in `<cache>/refs/<reference>.json`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct LastGood {
    digest: String,
    signer: Option<String>,
    fetched_at_unix: f64,
}

/// Follows one bundle reference.
pub struct Follower {
    opts: Options,
    rt: tokio::runtime::Runtime,
    registry: Registry,
    status: Mutex<Status>,
    refused: Mutex<HashSet<String>>,
    /// Digests found unsigned: looked at again on every poll (a signature may follow the
    /// push), logged and counted once.
    unsigned: Mutex<HashSet<String>>,
    /// Every digest served since start: its signer and when it was fetched (what the
    /// status shows when a rollback serves an earlier one).
    served: Mutex<HashMap<String, (Option<String>, f64)>>,
}

static FOLLOWER: OnceLock<Arc<Follower>> = OnceLock::new();

/// The bundle status of this process, when it runs from a bundle.
pub fn status() -> Option<Status> {
    FOLLOWER.get().map(|f| f.status())
}

/// The bundle status as seen from the generation serving `policy` (its file): after a
/// rollback to an earlier bundle, the digest, signer and fetch time are that bundle's and
/// `newest_digest` names the one rolled back from.
pub fn status_serving(policy: &Path) -> Option<Status> {
    let f = FOLLOWER.get()?;
    let mut st = f.status();
    if let Some(d) = served_digest(policy) {
        if st.digest.as_deref() != Some(d.as_str()) {
            if let Some((signer, at)) = lock(&f.served).get(&d).cloned() {
                st.newest_digest = st.digest.replace(d);
                st.signer = signer;
                st.fetched_at_unix = Some(at);
            }
        }
    }
    Some(st)
}

/// After a rollback: `sluice_bundle_info` names the bundle serving `policy` (the earlier
/// one), as the status does.
pub fn rolled_back_to(policy: &Path) {
    let Some(st) = status_serving(policy) else {
        return;
    };
    if let Some(digest) = &st.digest {
        set_info(&st.reference, digest, st.signer.as_deref());
    }
}

/// `sluice_bundle_info`: 1 for the bundle serving, no other series.
fn set_info(reference: &str, digest: &str, signer: Option<&str>) {
    let info = &crate::metrics::metrics().bundle_info;
    info.reset();
    info.with_label_values(&[reference, digest, signer.unwrap_or("none")])
        .set(1);
}

/// The digest of an unpacked bundle's policy file (`.../bundles/sha256-<hex>/policy.toml`).
fn served_digest(policy: &Path) -> Option<String> {
    let dir = policy.parent()?.file_name()?.to_str()?;
    let hex = dir.strip_prefix("sha256-")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| format!("sha256:{hex}"))
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Follower {
    /// A follower (its own single-threaded runtime for registry I/O); registered for
    /// [`status`].
    pub fn new(opts: Options) -> anyhow::Result<Arc<Follower>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let registry = Registry::new(&opts.reference, &opts.insecure);
        let status = Status {
            reference: opts.reference.to_string(),
            poll_ms: if opts.reference.pinned().is_some() {
                0
            } else {
                opts.poll.unwrap_or(DEFAULT_POLL).as_millis() as u64
            },
            ..Status::default()
        };
        let me = Arc::new(Follower {
            opts,
            rt,
            registry,
            status: Mutex::new(status),
            refused: Mutex::new(HashSet::new()),
            unsigned: Mutex::new(HashSet::new()),
            served: Mutex::new(HashMap::new()),
        });
        let _ = FOLLOWER.set(me.clone());
        Ok(me)
    }

    /// A copy of the status.
    pub fn status(&self) -> Status {
        lock(&self.status).clone()
    }

    fn last_good_path(&self) -> PathBuf {
        self.opts
            .cache
            .join("refs")
            .join(format!("{}.json", self.opts.reference.cache_key()))
    }

    /// Looks at the registry: `None` when the digest is `current` or was refused before.
    pub fn fetch(
        &self,
        current: Option<&str>,
    ) -> Result<Option<Fetched>, (Option<String>, Refusal)> {
        let r = &self.opts.reference;
        let (body, digest) = self
            .rt
            .block_on(self.registry.resolve(&r.oci))
            .map_err(|e| (None, e))?;
        lock(&self.status).last_check_unix = Some(now_unix());
        if current == Some(digest.as_str()) || lock(&self.refused).contains(&digest) {
            return Ok(None);
        }
        let with = |e| (Some(digest.clone()), e);
        let signer = match &self.opts.verify_key {
            Some(key) => Some(
                self.rt
                    .block_on(self.registry.verify(r, &digest, key))
                    .map_err(with)?,
            ),
            None => None,
        };
        let dir = bundle_dir(&self.opts.cache, &digest);
        let dir = if dir.join(POLICY_TITLE).is_file() {
            dir
        } else {
            let pulled = self
                .rt
                .block_on(self.registry.pull(r, &body, &digest))
                .map_err(with)?;
            if let Some((_, policy)) = pulled.files.iter().find(|(t, _)| t == POLICY_TITLE) {
                check_contained(&String::from_utf8_lossy(policy)).map_err(with)?;
            }
            unpack(&self.opts.cache, &digest, &pulled.files).map_err(with)?
        };
        Ok(Some(Fetched {
            policy: dir.join(POLICY_TITLE),
            digest,
            signer,
        }))
    }

    /// The first bundle: from the registry, or (registry unreachable) the last good one in
    /// the cache (for a pin: that digest, if cached).
    pub fn first(&self) -> Result<Fetched, String> {
        match self.fetch(None) {
            Ok(Some(f)) => Ok(f),
            Ok(None) => Err("no bundle".into()),
            Err((digest, Refusal::Registry(e))) if digest.is_none() => {
                crate::metrics::metrics()
                    .bundle_fetches
                    .with_label_values(&["error"])
                    .inc();
                let cached = self.cached().ok_or_else(|| {
                    format!(
                        "{}: registry unreachable ({e}) and no cached bundle in {}",
                        self.opts.reference,
                        self.opts.cache.display()
                    )
                })?;
                crate::metrics::metrics()
                    .bundle_fetches
                    .with_label_values(&["offline_cache"])
                    .inc();
                let mut st = lock(&self.status);
                st.from_cache = true;
                st.last_error = Some(format!("registry: {e}"));
                drop(st);
                tracing::warn!(reference = %self.opts.reference, digest = %cached.digest, error = %e, "registry unreachable: serving the last good bundle from the cache");
                Ok(cached)
            }
            Err((digest, e)) => {
                if let Some(d) = &digest {
                    self.refuse(d, &e);
                }
                Err(format!("{}: {e}", self.opts.reference))
            }
        }
    }

    /// The last good bundle of this reference in the cache, if its signer is still
    /// acceptable (a start whose fetched bundle fails validation falls back to it).
    pub fn cached(&self) -> Option<Fetched> {
        let recorded = std::fs::read_to_string(self.last_good_path())
            .ok()
            .and_then(|t| serde_json::from_str::<LastGood>(&t).ok());
        let (digest, signer) = match (recorded, self.opts.reference.pinned()) {
            (Some(last), _) => (last.digest, last.signer),
            // A pin names its bundle: it serves from the cache even if never recorded.
            (None, Some(d)) => (d.to_string(), None),
            (None, None) => return None,
        };
        if let Some(key) = &self.opts.verify_key {
            if signer.as_deref() != Some(key.id().as_str()) {
                tracing::error!(reference = %self.opts.reference, digest, "the cached bundle was not verified with verify_key: not served");
                return None;
            }
        }
        let policy = bundle_dir(&self.opts.cache, &digest).join(POLICY_TITLE);
        policy.is_file().then_some(Fetched {
            digest,
            policy,
            signer,
        })
    }

    /// Records `f` as served: status, metrics, and the cache's last good bundle.
    pub fn accepted(&self, f: &Fetched) {
        let m = crate::metrics::metrics();
        let now = now_unix();
        let mut st = lock(&self.status);
        let fetched_at = if st.from_cache && st.digest.is_none() {
            // From the cache: when it was fetched then.
            std::fs::read_to_string(self.last_good_path())
                .ok()
                .and_then(|t| serde_json::from_str::<LastGood>(&t).ok())
                .filter(|l| l.digest == f.digest)
                .map_or(now, |l| l.fetched_at_unix)
        } else {
            m.bundle_fetches.with_label_values(&["fetched"]).inc();
            now
        };
        st.digest = Some(f.digest.clone());
        st.signer = f.signer.clone();
        st.fetched_at_unix = Some(fetched_at);
        let reference = st.reference.clone();
        drop(st);
        lock(&self.served).insert(f.digest.clone(), (f.signer.clone(), fetched_at));
        set_info(&reference, &f.digest, f.signer.as_deref());
        m.bundle_fetched.set(fetched_at);
        let last = LastGood {
            digest: f.digest.clone(),
            signer: f.signer.clone(),
            fetched_at_unix: fetched_at,
        };
        if let Err(e) = write_atomically(
            &self.last_good_path(),
            &serde_json::to_vec(&last).unwrap_or_default(),
        ) {
            tracing::warn!(error = %e, "cannot record the last good bundle in the cache");
        }
    }

    /// Remembers `digest` as refused (never fetched again by this process); an unsigned
    /// one is looked at again on later polls (its signature may come after it), but
    /// logged and counted once. A registry error is not the bundle's fault: only logged.
    pub fn refuse(&self, digest: &str, why: &Refusal) {
        match why {
            Refusal::Registry(e) => {
                crate::metrics::metrics()
                    .bundle_fetches
                    .with_label_values(&["error"])
                    .inc();
                tracing::warn!(reference = %self.opts.reference, digest, error = %e, "cannot fetch the bundle; the running generation keeps serving");
                lock(&self.status).last_error = Some(why.to_string());
                return;
            }
            Refusal::Unsigned(_) => {
                if !lock(&self.unsigned).insert(digest.to_string()) {
                    return;
                }
            }
            _ => {
                if !lock(&self.refused).insert(digest.to_string()) {
                    return;
                }
            }
        }
        if let Some(reason) = why.reason() {
            crate::metrics::metrics()
                .bundle_refusals
                .with_label_values(&[reason])
                .inc();
        }
        let mut st = lock(&self.status);
        st.last_error = Some(why.to_string());
        st.last_refused_digest = Some(digest.to_string());
        if !st.refused_digests.iter().any(|d| d == digest) {
            st.refused_digests.push(digest.to_string());
        }
        tracing::error!(
            reference = %self.opts.reference,
            digest,
            reason = why.reason().unwrap_or("registry"),
            error = %why,
            "policy bundle refused; the running generation keeps serving"
        );
    }

    /// One look at the tag: fetch a new digest and swap it in.
    pub fn poll_once(&self, control: &Control) {
        let current = lock(&self.status).digest.clone();
        let m = crate::metrics::metrics();
        match self.fetch(current.as_deref()) {
            Ok(None) => {
                m.bundle_fetches.with_label_values(&["unchanged"]).inc();
            }
            Ok(Some(f)) => match control.reload_from(&f.policy) {
                Ok(snap) => {
                    self.accepted(&f);
                    lock(&self.status).from_cache = false;
                    tracing::info!(reference = %self.opts.reference, digest = %f.digest, generation = snap.generation, signer = f.signer.as_deref().unwrap_or("none"), "policy bundle swapped in");
                }
                Err(e) => self.refuse(&f.digest, &Refusal::Invalid(e.to_string())),
            },
            Err((Some(digest), e)) => self.refuse(&digest, &e),
            Err((None, e)) => {
                m.bundle_fetches.with_label_values(&["error"]).inc();
                tracing::warn!(reference = %self.opts.reference, error = %e, "cannot reach the bundle's registry; the running generation keeps serving");
                lock(&self.status).last_error = Some(e.to_string());
            }
        }
    }

    /// Polls the tag on a thread of its own (not for a digest pin).
    pub fn follow(self: &Arc<Self>, control: Arc<Control>) -> std::io::Result<()> {
        if self.opts.reference.pinned().is_some() {
            return Ok(());
        }
        let me = self.clone();
        std::thread::Builder::new()
            .name("sluice-bundle".into())
            .spawn(move || loop {
                use rand::Rng;
                let (poll, jitter) = {
                    let live = control.live.load();
                    let poll = me
                        .opts
                        .poll
                        .or(live.policy.bundle_poll)
                        .unwrap_or(DEFAULT_POLL);
                    let jitter = me
                        .opts
                        .jitter
                        .or(live.policy.bundle_poll_jitter)
                        .unwrap_or(poll / 10);
                    (poll, jitter.as_millis() as u64)
                };
                lock(&me.status).poll_ms = poll.as_millis() as u64;
                let extra = if jitter == 0 {
                    0
                } else {
                    rand::thread_rng().gen_range(0..=jitter)
                };
                std::thread::sleep(poll + Duration::from_millis(extra));
                me.poll_once(&control);
            })?;
        Ok(())
    }
}

fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, data)?;
    std::fs::rename(tmp, path)
}

/// The default cache: `$SLUICE_BUNDLE_CACHE`, else `$XDG_CACHE_HOME/sluice/bundles`, else
/// `~/.cache/sluice/bundles`, else `/var/cache/sluice/bundles`.
pub fn default_cache() -> PathBuf {
    if let Some(d) = std::env::var_os("SLUICE_BUNDLE_CACHE") {
        return d.into();
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Path::new(&d).join("sluice/bundles");
    }
    if let Some(d) = std::env::var_os("HOME") {
        return Path::new(&d).join(".cache/sluice/bundles");
    }
    "/var/cache/sluice/bundles".into()
}
