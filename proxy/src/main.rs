//! `sluice run | check | test | abi | ctl`: builds the Pingora server from a policy, nothing else.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pingora::server::RunArgs;

use sluice::lifecycle::{self, Signals};
use sluice::policy::Policy;
use sluice::serve::Assembled;
use sluice::snapshot::Snapshot;

/// mimalloc: per-thread free lists suit a thread-per-core proxy; glibc malloc was ~12%
/// of a request's CPU (issue #18, bench/README.md).
#[global_allocator]
static ALLOCATOR: sluice::memory::Allocator = sluice::memory::Allocator;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "A CDN edge proxy that runs Proxy-Wasm filter chains"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

// Parsed once per process: `Test`'s size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Serve traffic with a policy: a file, or a bundle `oci://HOST/REPO:TAG` (polled, swapped
    /// when its digest changes) or `oci://HOST/REPO@sha256:<hex>` (pinned).
    Run {
        /// The policy file, or an `oci://` bundle reference.
        #[arg(long, short)]
        policy: String,
        #[command(flatten)]
        bundle: BundleOpts,
        /// Serve traffic on these addresses instead of the policy's `[server] listen`
        /// (node-local: several nodes on one host can run the same bundle). Repeatable.
        #[arg(long)]
        listen: Vec<std::net::SocketAddr>,
        /// Serve the admin API here instead of the policy's `[server] admin`.
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
        /// Take the listening sockets over from the Sluice running on the same policy
        /// (zero-downtime binary upgrade): it is found through its admin API and sent
        /// SIGUSR2, hands its sockets over on `[server] upgrade_sock`, finishes its
        /// requests in flight and exits.
        #[arg(long)]
        upgrade: bool,
    },
    /// Policy bundles in an OCI registry.
    Bundle {
        #[command(subcommand)]
        cmd: BundleCmd,
    },
    /// Validate a policy (parse, compile modules, start and configure every filter) without serving.
    Check {
        /// The policy file.
        #[arg(long, short)]
        policy: PathBuf,
    },
    /// Run go-ftw YAML test files against a policy, in-process (a loopback listener and
    /// an echoing stub origin; nothing to start), or against a running server
    /// (`--target`, `--log`). Exit status 1 when a test fails.
    Test {
        /// The policy file (in-process run).
        #[arg(
            long,
            short,
            required_unless_present = "target",
            conflicts_with = "target"
        )]
        policy: Option<PathBuf>,
        /// A running server to test instead, `http://HOST:PORT`: each stage is bracketed
        /// by marker requests, and its rule ids are the ones `--log` gets between them.
        #[arg(long, requires = "log")]
        target: Option<String>,
        /// With `--target`: the server's log of rule ids (ModSecurity's error log with
        /// `[id "N"]` lines, or Sluice's log with WAF audit lines).
        #[arg(long)]
        log: Option<PathBuf>,
        /// With `--target`: the marker header, which a rule of the server's logs.
        #[arg(long, default_value = "X-CRS-Test")]
        marker_header: String,
        /// Test files (`.yaml`, `.yml`) and directories of them.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Write a JSON report to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write a JUnit XML report to this file.
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Run only tests whose name (e.g. `942100-1`) matches this regex.
        #[arg(long)]
        include: Option<regex::Regex>,
        /// Skip tests whose name matches this regex.
        #[arg(long)]
        exclude: Option<regex::Regex>,
        /// Seconds to wait for each stage's response.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Print the Proxy-Wasm hostcall table as Markdown.
    Abi,
    /// Drive a running Sluice through its admin API: status, reload, rollback, diff, tail.
    Ctl(sluice::ctl::Args),
}

/// How `run` follows an `oci://` policy.
#[derive(clap::Args)]
struct BundleOpts {
    /// Where pulled bundles are unpacked (one directory per digest) and the last good one
    /// is recorded (default: $SLUICE_BUNDLE_CACHE, else ~/.cache/sluice/bundles).
    #[arg(long)]
    bundle_cache: Option<PathBuf>,
    /// Accept only bundles with a cosign signature by this ECDSA P-256 public key (PEM).
    #[arg(long)]
    verify_key: Option<PathBuf>,
    /// How often the tag is looked at, in milliseconds (default: the policy's `[server]
    /// bundle_poll_ms`, else 30000).
    #[arg(long)]
    poll_ms: Option<u64>,
    /// Up to this many milliseconds added at random to each interval (default: the
    /// policy's `bundle_poll_jitter_ms`, else a tenth of the interval).
    #[arg(long)]
    poll_jitter_ms: Option<u64>,
    /// A registry (HOST:PORT) spoken to in plain HTTP; loopback registries always are.
    #[arg(long)]
    insecure: Vec<String>,
}

#[derive(Subcommand)]
enum BundleCmd {
    /// Pack a policy (a file, or a directory with policy.toml), every module it names and
    /// every file it grants, push it as one OCI artifact, and print its digest.
    Push {
        /// The policy file or its directory.
        input: PathBuf,
        /// Where to: `oci://HOST/REPO:TAG`.
        reference: String,
        /// Sign it (cosign's key-based format) with this PKCS#8 P-256 private key (PEM).
        #[arg(long)]
        sign_key: Option<PathBuf>,
        /// A registry (HOST:PORT) spoken to in plain HTTP; loopback registries always are.
        #[arg(long)]
        insecure: Vec<String>,
    },
    /// Push one filter module as a Wasm artifact (for `module = "oci://HOST/REPO@sha256:..."`)
    /// and print its digest.
    PushModule {
        /// The `.wasm` file.
        module: PathBuf,
        /// Where to: `oci://HOST/REPO:TAG`.
        reference: String,
        /// A registry (HOST:PORT) spoken to in plain HTTP; loopback registries always are.
        #[arg(long)]
        insecure: Vec<String>,
    },
}

/// The policy `run` starts with: a file, or a bundle's unpacked copy and its follower.
type Source = (
    PathBuf,
    Option<(
        std::sync::Arc<sluice::bundle::follow::Follower>,
        sluice::bundle::follow::Fetched,
    )>,
);

fn source(policy: &str, o: &BundleOpts) -> Result<Source, String> {
    use sluice::bundle::{follow, BundleRef};
    // Also where `module = "oci://..."` modules are kept.
    if let Some(dir) = &o.bundle_cache {
        sluice::bundle::module::set_cache(dir.clone());
    }
    if !BundleRef::is_bundle(policy) {
        return Ok((PathBuf::from(policy), None));
    }
    let reference = BundleRef::parse(policy)?;
    let verify_key = match &o.verify_key {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| e.to_string())
                .and_then(|t| sluice::bundle::sign::VerifyKey::from_pem(&t))
                .map_err(|e| format!("--verify-key {}: {e}", p.display()))?,
        ),
        None => None,
    };
    let follower = follow::Follower::new(follow::Options {
        reference,
        cache: o.bundle_cache.clone().unwrap_or_else(follow::default_cache),
        insecure: o.insecure.clone(),
        verify_key,
        poll: o
            .poll_ms
            .map(|ms| std::time::Duration::from_millis(ms.max(100))),
        jitter: o.poll_jitter_ms.map(std::time::Duration::from_millis),
    })
    .map_err(|e| e.to_string())?;
    let fetched = follower.first()?;
    Ok((fetched.policy.clone(), Some((follower, fetched))))
}

/// `sluice bundle push`.
fn push(
    input: &std::path::Path,
    reference: &str,
    key: Option<&PathBuf>,
    insecure: &[String],
) -> Result<(), String> {
    use sluice::bundle::{pack, registry::Registry, sign::SigningKey, BundleRef};
    let r = BundleRef::parse(reference)?;
    let key = match key {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| e.to_string())
                .and_then(|t| SigningKey::from_pem(&t))
                .map_err(|e| format!("--sign-key {}: {e}", p.display()))?,
        ),
        None => None,
    };
    let packed = pack::pack(input).map_err(|e| format!("{e:#}"))?;
    for p in &packed.node_local {
        eprintln!("not packed (stays on each node): {p}");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let digest = rt
        .block_on(Registry::new(&r, insecure).push(&r, &packed, key.as_ref()))
        .map_err(|e| format!("{r}: {e}"))?;
    let bytes: usize = packed.layers.iter().map(|l| l.data.len()).sum();
    eprintln!(
        "pushed {r}: {} layers, {bytes} bytes{}",
        packed.layers.len(),
        key.as_ref()
            .map(|k| format!(", signed by {}", k.public().id()))
            .unwrap_or_default()
    );
    println!("{digest}");
    Ok(())
}

/// `sluice bundle push-module`.
fn push_module(
    module: &std::path::Path,
    reference: &str,
    insecure: &[String],
) -> Result<(), String> {
    use sluice::bundle::{registry::Registry, BundleRef};
    let r = BundleRef::parse(reference)?;
    let wasm = std::fs::read(module).map_err(|e| format!("{}: {e}", module.display()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let digest = rt
        .block_on(Registry::new(&r, insecure).push_module(&r, &wasm))
        .map_err(|e| format!("{r}: {e}"))?;
    println!("{digest}");
    Ok(())
}

fn build(path: &std::path::Path) -> Result<Snapshot, sluice::policy::PolicyErrors> {
    Snapshot::build(Policy::load(path)?, 1)
}

/// `sluice check`: each module compiled and filter started with its time on stdout
/// (errors alone on stderr), then the verdict.
fn check(policy: &std::path::Path) -> ExitCode {
    sluice::progress::enable(Some(sluice::progress::Output::Stdout));
    let started = std::time::Instant::now();
    match build(policy) {
        Ok(snap) => {
            let components = match snap.policy.components.len() {
                0 => String::new(),
                n => format!(", {n} components"),
            };
            println!(
                "{}: ok ({} routes, {} filters{components}, {} pools) in {}",
                policy.display(),
                snap.routes.len(),
                snap.filters.len(),
                snap.pools.len(),
                sluice::progress::took(started.elapsed())
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr (level from `SLUICE_LOG`, default `info`); access-log lines, when
/// the policy turns them on, go as JSON to stdout or a file.
fn init_logging(access_log: Option<&str>) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    use std::io::IsTerminal;
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{filter, fmt, EnvFilter};
    let env = EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,rustls=error,pingora_load_balancing=warn"));
    let hint = env.max_level_hint();
    if let Some(level) = hint {
        sluice::host::abi::set_guest_log_level(level);
    }
    // The outer filter's level hint is the layer's: without it the subscriber's maximum
    // level is TRACE, and `init` sets the `log` bridge's to match, so every `log::debug!`
    // of Pingora's is built and dispatched only to be filtered out, on each request.
    let logs = fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_filter(env)
        .with_filter({
            let max = hint.unwrap_or(filter::LevelFilter::TRACE);
            filter::filter_fn(move |m| m.target() != "sluice::access" && *m.level() <= max)
                .with_max_level_hint(max)
        });
    let (access, guard) = match access_log {
        None => (None, None),
        Some(dest) => {
            let (writer, guard) = if dest == "stdout" {
                tracing_appender::non_blocking(std::io::stdout())
            } else {
                match std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dest)
                {
                    Ok(f) => tracing_appender::non_blocking(f),
                    Err(e) => {
                        eprintln!("cannot open access log {dest}: {e}; access log off");
                        return None;
                    }
                }
            };
            let layer = fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .with_target(false)
                .with_writer(writer)
                .with_filter(
                    filter::Targets::new().with_target("sluice::access", tracing::Level::INFO),
                );
            (Some(layer), Some(guard))
        }
    };
    // The WAF's audit lines for `/admin/tail` (sluice ctl tail).
    let audit = sluice::admin::feed::AuditLayer
        .with_filter(filter::Targets::new().with_target("sluice::filter", tracing::Level::INFO));
    tracing_subscriber::registry()
        .with(logs)
        .with(access)
        .with(audit)
        .init();
    guard
}

/// `sluice test`'s logging: warnings and errors to stderr (`SLUICE_LOG` overrides), and
/// every filter log line into `store`, where the runner reads each request's rule ids.
fn init_test_logging(store: &sluice::ftw::capture::Store) {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{filter, fmt, EnvFilter};
    let env = EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    sluice::host::abi::set_guest_log_level(filter::LevelFilter::INFO);
    tracing_subscriber::registry()
        .with(
            fmt::layer()
                .with_ansi(false)
                .with_writer(std::io::stderr)
                .with_filter(env),
        )
        .with(store.layer().with_filter(
            filter::Targets::new().with_target("sluice::filter", tracing::Level::INFO),
        ))
        .init();
}

/// `sluice test`: 0 when every test passed, 1 when one failed, 2 when the tests could
/// not run. Exits the process (the in-process server's threads never stop).
fn test(opts: sluice::ftw::Options) -> ! {
    use std::io::Write;
    let store = sluice::ftw::capture::Store::default();
    init_test_logging(&store);
    let code = match sluice::ftw::main(&opts, store) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("sluice test: {e:#}");
            2
        }
    };
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::Ctl(args) = cli.cmd {
        return sluice::ctl::main(args);
    }
    if let Cmd::Test {
        policy,
        target,
        log,
        marker_header,
        paths,
        json,
        junit,
        include,
        exclude,
        timeout,
    } = cli.cmd
    {
        test(sluice::ftw::Options {
            policy,
            target,
            log,
            marker_header,
            paths,
            json,
            junit,
            include,
            exclude,
            timeout: std::time::Duration::from_secs(timeout),
        });
    }
    if let Cmd::Bundle { cmd } = &cli.cmd {
        let pushed = match cmd {
            BundleCmd::Push {
                input,
                reference,
                sign_key,
                insecure,
            } => push(input, reference, sign_key.as_ref(), insecure),
            BundleCmd::PushModule {
                module,
                reference,
                insecure,
            } => push_module(module, reference, insecure),
        };
        return match pushed {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sluice bundle push: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // `run` fetches a bundle, then reads its policy before logging starts: the policy says
    // where access-log lines go.
    let mut bundle = None;
    let mut run_path = PathBuf::new();
    if let Cmd::Run { listen, admin, .. } = &cli.cmd {
        // This node's own addresses, for every policy it loads (bundles included).
        sluice::policy::set_node_overrides(listen.clone(), *admin);
    }
    let loaded = match &cli.cmd {
        Cmd::Run {
            policy, bundle: o, ..
        } => match source(policy, o) {
            Ok((mut path, mut b)) => {
                let mut loaded = Policy::load(&path);
                if let (Err(e), Some((follower, fetched))) = (&loaded, &mut b) {
                    follower.refuse(
                        &fetched.digest,
                        &sluice::bundle::Refusal::Invalid(e.to_string()),
                    );
                    // The tag names a broken bundle: start from the last good one instead.
                    if let Some(good) = follower.cached().filter(|g| g.digest != fetched.digest) {
                        eprintln!(
                            "{}: {} refused ({e}); serving the last good bundle {} from the cache",
                            follower.status().reference,
                            fetched.digest,
                            good.digest
                        );
                        loaded = Policy::load(&good.policy);
                        path = good.policy.clone();
                        *fetched = good;
                    }
                }
                run_path = path;
                bundle = b;
                Some(loaded)
            }
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let access_log = loaded
        .as_ref()
        .and_then(|p| p.as_ref().ok())
        .and_then(|p| p.access_log.clone());
    if let Some(guard) = init_logging(access_log.as_deref()) {
        lifecycle::at_exit(move || drop(guard));
    }
    let _ = sluice::host::FAILURE_HOOK.set(|plugin, kind| {
        sluice::metrics::metrics()
            .filter_failures
            .with_label_values(&[plugin, kind])
            .inc();
    });
    let _ = sluice::host::GUARD_HOOK.set(|plugin, event| {
        let m = sluice::metrics::metrics();
        match event {
            sluice::host::GuardEvent::Rebuilt(took) => {
                m.filter_rebuilds.with_label_values(&[plugin]).inc();
                m.filter_rebuild_seconds
                    .with_label_values(&[plugin])
                    .inc_by(took.as_secs_f64());
            }
            sluice::host::GuardEvent::Tripped => {
                m.filter_crash_loops.with_label_values(&[plugin]).inc()
            }
        }
    });
    match cli.cmd {
        Cmd::Test { .. } | Cmd::Bundle { .. } | Cmd::Ctl(_) => unreachable!("handled above"),
        Cmd::Abi => match sluice::host::Engine::global() {
            Ok(engine) => {
                print!("{}", sluice::host::abi::markdown_table(engine.hostcalls()));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Check { policy } => check(&policy),
        Cmd::Run { .. } => match loaded
            .expect("loaded for run")
            .and_then(|p| {
                sluice::upstream::enable_health_checks();
                // What start-up compiles and starts, on stderr (reloads log it instead).
                sluice::progress::enable(Some(sluice::progress::Output::Stderr));
                let snap = Snapshot::build(p, 1);
                sluice::progress::enable(None);
                snap
            })
            .or_else(|errors| match bundle.as_mut() {
                // The tag's bundle loads but does not build (a module that fails to compile,
                // a file it lacks): refused, and the last good bundle serves instead.
                Some((follower, fetched)) => {
                    follower.refuse(
                        &fetched.digest,
                        &sluice::bundle::Refusal::Invalid(errors.to_string()),
                    );
                    let good = follower
                        .cached()
                        .filter(|g| g.digest != fetched.digest)
                        .ok_or(errors)?;
                    let snap = Policy::load(&good.policy).and_then(|p| Snapshot::build(p, 1))?;
                    tracing::warn!(reference = %follower.status().reference, refused = %fetched.digest, digest = %good.digest, "the bundle fails to build: serving the last good bundle from the cache");
                    run_path = good.policy.clone();
                    *fetched = good;
                    Ok(snap)
                }
                None => Err(errors),
            }) {
            Ok(snap) => {
                if let Some((follower, fetched)) = &bundle {
                    follower.accepted(fetched);
                    tracing::info!(reference = %follower.status().reference, digest = %fetched.digest, signer = fetched.signer.as_deref().unwrap_or("none"), from_cache = follower.status().from_cache, "serving a policy bundle");
                }
                let upgrade = matches!(cli.cmd, Cmd::Run { upgrade: true, .. });
                let code = run(&run_path, snap, bundle.map(|(f, _)| f), upgrade);
                lifecycle::run_exit_hook();
                code
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `sluice run --upgrade`: asks the running process (found through the admin API the
/// policy names) to hand its listening sockets over: SIGUSR2. It sends them to the
/// policy's `upgrade_sock`, which Pingora's bootstrap binds right after this, retrying
/// its connection for a few seconds.
fn signal_old_process(snap: &Snapshot) -> Result<(), String> {
    let admin = snap.policy.admin.ok_or(
        "--upgrade finds the running process through its admin listener: the policy has none",
    )?;
    let client =
        sluice::ctl::client::Client::new(&admin.to_string(), snap.policy.admin_token.clone())
            .map_err(|e| e.to_string())?;
    let status = client
        .get("/admin/status")
        .map_err(|e| format!("--upgrade: the running process: {e}"))?;
    let pid = status["pid"]
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
        .filter(|p| *p > 1 && *p as u32 != std::process::id())
        .ok_or("--upgrade: the running process did not say its pid")?;
    // SAFETY: kill(2) with a pid and a signal number has no memory effects.
    if unsafe { libc::kill(pid, libc::SIGUSR2) } != 0 {
        return Err(format!(
            "--upgrade: cannot signal process {pid}: {}",
            std::io::Error::last_os_error()
        ));
    }
    tracing::info!(
        old_pid = pid,
        "asked the running process for its listening sockets"
    );
    Ok(())
}

fn run(
    path: &std::path::Path,
    snap: Snapshot,
    bundle: Option<std::sync::Arc<sluice::bundle::follow::Follower>>,
    upgrade: bool,
) -> ExitCode {
    let listen = snap.policy.listen.clone();
    let h2c = snap.policy.h2c;
    let tls = snap.policy.tls.clone();
    let admin_addr = snap.policy.admin;
    let all: Vec<_> = listen
        .iter()
        .chain(tls.iter().flat_map(|t| t.listen.iter()))
        .copied()
        .chain(admin_addr)
        .collect();
    let hand_over = snap.policy.upgrade_sock.is_some();
    if upgrade {
        // The addresses are the running process's: they are taken over, not bound.
        if !hand_over {
            eprintln!(
                "--upgrade needs [server] upgrade_sock in the policy (the running process's)"
            );
            return ExitCode::FAILURE;
        }
        if let Err(e) = signal_old_process(&snap) {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    } else if let Err((addr, e)) = lifecycle::check_free(&all) {
        eprintln!("cannot listen on {addr}: {e}");
        return ExitCode::FAILURE;
    }
    let Assembled {
        server,
        tracker,
        control,
        grace,
    } = match sluice::serve::assemble_upgrading(path, snap, Vec::new(), upgrade) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(follower) = bundle {
        if let Err(e) = follower.follow(control) {
            tracing::error!(error = %e, "cannot start polling the policy bundle");
        }
    }
    tracing::info!(listen = ?listen, tls = ?tls.as_ref().map(|t| &t.listen), h2c, admin = ?admin_addr, generation = 1, max_connections = tracker.ceiling(), "sluice serving");
    sluice::memory::trim_after_storms(tracker.clone());
    let phases = server.watch_execution_phase();
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals::new(tracker, grace, phases).with_upgrade(hand_over)),
    });
    ExitCode::SUCCESS
}
