//! `sluice run | check | abi`: builds the Pingora server from a policy, nothing else.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use pingora::server::configuration::ServerConf;
use pingora::server::{configuration::Opt, RunArgs, Server};
use pingora::services::listening::Service;

use sluice::admin::Admin;
use sluice::forward::Forwarder;
use sluice::lifecycle::{self, Signals};
use sluice::listener::{self, Admit, Tracker};
use sluice::policy::Policy;
use sluice::proxy::Sluice;
use sluice::snapshot::Snapshot;
use sluice::swap::Control;
use sluice::workers::Warmed;

/// mimalloc: per-thread free lists suit a thread-per-core proxy; glibc malloc was ~12%
/// of a request's CPU (issue #18, bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

#[derive(Subcommand)]
enum Cmd {
    /// Serve traffic with a policy.
    Run {
        /// The policy file.
        #[arg(long, short)]
        policy: PathBuf,
    },
    /// Validate a policy (parse, compile modules, start and configure every filter) without serving.
    Check {
        /// The policy file.
        #[arg(long, short)]
        policy: PathBuf,
    },
    /// Print the Proxy-Wasm hostcall table as Markdown.
    Abi,
}

fn build(path: &std::path::Path) -> Result<Snapshot, sluice::policy::PolicyErrors> {
    Snapshot::build(Policy::load(path)?, 1)
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
    tracing_subscriber::registry()
        .with(logs)
        .with(access)
        .init();
    guard
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `run` reads its policy before logging starts: it says where access-log lines go.
    let loaded = match &cli.cmd {
        Cmd::Run { policy } => Some(Policy::load(policy)),
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
        Cmd::Check { policy } => match build(&policy) {
            Ok(snap) => {
                println!(
                    "{}: ok ({} routes, {} filters, {} pools)",
                    policy.display(),
                    snap.routes.len(),
                    snap.filters.len(),
                    snap.pools.len()
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        },
        Cmd::Run { policy } => match loaded.expect("loaded for run").and_then(|p| {
            sluice::upstream::enable_health_checks();
            Snapshot::build(p, 1)
        }) {
            Ok(snap) => {
                let code = run(&policy, snap);
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

fn run(path: &std::path::Path, snap: Snapshot) -> ExitCode {
    let grace = snap.policy.grace_period;
    let threads = snap.policy.threads;
    let conf = ServerConf {
        threads: snap.policy.threads,
        // Keep each request on one thread from start to end: VMs are per thread.
        work_stealing: false,
        // A backstop only: sluice::lifecycle exits once drained or after `grace`.
        grace_period_seconds: Some(grace.as_secs() + 2),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let listen = snap.policy.listen.clone();
    let h2c = snap.policy.h2c;
    let tls = snap.policy.tls.clone();
    let admin_addr = snap.policy.admin;
    let watch = snap.policy.watch;
    let keepalive = snap.policy.timeouts.keepalive;
    let traffic: Vec<_> = listen
        .iter()
        .chain(tls.iter().flat_map(|t| t.listen.iter()))
        .copied()
        .collect();
    let all: Vec<_> = traffic.iter().copied().chain(admin_addr).collect();
    if let Err((addr, e)) = lifecycle::check_free(&all) {
        eprintln!("cannot listen on {addr}: {e}");
        return ExitCode::FAILURE;
    }
    let control = Arc::new(Control::new(path, snap));
    if let Err(e) = control.reload_on_sighup() {
        tracing::warn!(error = %e, "SIGHUP reloads are off");
    }
    if watch {
        if let Err(e) = control.watch() {
            tracing::warn!(error = %e, "policy watch is off");
        }
    }
    let live = control.live.clone();
    let mut server = Server::new_with_opt_and_conf(Option::<Opt>::None, conf);
    server.bootstrap();
    let tracker = Arc::new(Tracker::new(&traffic, listener::fd_ceiling()));
    let mut app = pingora::proxy::http_proxy(&server.configuration, Sluice { live: live.clone() });
    // HTTP/1 requests run on Sluice's own loop; pingora-proxy keeps HTTP/2 and upgrades.
    let forwarder = Forwarder::new(Sluice { live: live.clone() }, &server.configuration);
    // Admit sniffs h2c itself (per the live policy) and hands only HTTP/2 here.
    let mut options = pingora::apps::HttpServerOptions::default();
    options.h2c = true;
    options.h2_idle_timeout = Some(keepalive);
    app.server_options = Some(options);
    let mut admit = Admit::new(app, forwarder, live.clone(), tracker.clone());
    if let Some(def) = &tls {
        // TLS listeners are bound as TCP: Sluice runs the handshake on the thread that
        // serves the connection (`listener::Admit::with_tls`).
        pingora::tls::install_default_crypto_provider();
        match sluice::tls::settings(def, live.clone()) {
            Ok(settings) => admit = admit.with_tls(def.listen.clone(), settings.build()),
            Err(e) => {
                eprintln!("cannot set up TLS on {:?}: {e}", def.listen);
                return ExitCode::FAILURE;
            }
        }
    }
    let mut proxy = Service::new("sluice".to_string(), admit);
    for addr in listen
        .iter()
        .chain(tls.iter().flat_map(|t| t.listen.iter()))
    {
        proxy.add_tcp(&addr.to_string());
    }
    // Every worker thread gets the policy's VMs before the listeners open.
    server.add_service(Warmed::new(proxy, control.clone(), threads));
    if let Some(addr) = admin_addr {
        let mut admin = Service::new(
            "sluice-admin".to_string(),
            Admin {
                control: control.clone(),
            },
        );
        admin.add_tcp(&addr.to_string());
        server.add_service(admin);
    }
    tracing::info!(listen = ?listen, tls = ?tls.as_ref().map(|t| &t.listen), h2c, admin = ?admin_addr, generation = 1, max_connections = tracker.ceiling(), "sluice serving");
    sluice::memory::trim_after_storms(tracker.clone());
    let phases = server.watch_execution_phase();
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals::new(tracker, grace, phases)),
    });
    ExitCode::SUCCESS
}
