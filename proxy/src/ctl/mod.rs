//! `sluice ctl`: the running edge from a terminal, through its admin API ([`client`]):
//! `status` ([`table`] or `--json`), `reload`, `rollback`, `diff --policy FILE`
//! ([`diff`]) and `tail` ([`tail`]). The token comes from `--token-file` or
//! `$SLUICE_ADMIN_TOKEN`; the address from `--admin` or `$SLUICE_ADMIN`.

pub mod client;
pub mod diff;
pub mod table;
pub mod tail;

use std::path::PathBuf;
use std::process::ExitCode;

use client::{Client, CtlError};

/// The default admin address (the policy's default `[server] admin`).
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9901";

/// `sluice ctl`'s options and command.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The admin listener, `HOST:PORT` or `http://HOST:PORT` (default: $SLUICE_ADMIN,
    /// else 127.0.0.1:9901).
    #[arg(long, global = true)]
    pub admin: Option<String>,
    /// A file holding the admin token (default: $SLUICE_ADMIN_TOKEN).
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub cmd: Command,
}

/// `sluice ctl` commands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Generation, hash, source, routes and their chains, filters with limits, failures
    /// and p99 per phase, swaps, live snapshots, pools.
    Status {
        /// The admin API's JSON as it is.
        #[arg(long)]
        json: bool,
    },
    /// Read the policy again and swap it in (validated first; the running one keeps
    /// serving on any error).
    Reload,
    /// Go back to the previous good policy.
    Rollback,
    /// What a reload of FILE would change: routes, filters, modules, certificates, pools.
    Diff {
        /// The policy file a reload would read.
        #[arg(long, short)]
        policy: PathBuf,
        /// The changes as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The access log or the WAF's audit log as it happens.
    Tail {
        /// Which log.
        #[arg(long, default_value = "access", value_parser = ["access", "waf"])]
        log: String,
        /// Only this route.
        #[arg(long)]
        route: Option<String>,
        /// Only this status (403) or class (4xx).
        #[arg(long, value_parser = |s: &str| tail::Filter::check_status(s).map(|_| s.to_string()))]
        status: Option<String>,
        /// Only WAF lines that matched this rule id (with --log waf).
        #[arg(long)]
        rule: Option<u64>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Stop after this many lines.
        #[arg(long)]
        count: Option<usize>,
    },
}

fn run(args: Args) -> Result<(), CtlError> {
    let admin = args
        .admin
        .or_else(|| std::env::var("SLUICE_ADMIN").ok())
        .unwrap_or_else(|| DEFAULT_ADMIN.to_string());
    let client = Client::new(&admin, client::token(args.token_file.as_deref())?)?;
    match args.cmd {
        Command::Status { json } => {
            let st = client.get("/admin/status")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&st).unwrap_or_default());
            } else {
                print!("{}", table::render(&st));
            }
        }
        Command::Reload => {
            let r = client.post("/admin/reload")?;
            println!(
                "reloaded: generation {} (hash {})",
                r["generation"],
                r["hash"].as_str().unwrap_or("")
            );
        }
        Command::Rollback => {
            let r = client.post("/admin/rollback")?;
            println!(
                "rolled back: generation {} (hash {})",
                r["generation"],
                r["hash"].as_str().unwrap_or("")
            );
        }
        Command::Diff { policy, json } => {
            let next = crate::policy::Policy::load(&policy).map_err(|e| {
                CtlError::Other(format!(
                    "a reload of {} would be refused:\n{e}",
                    policy.display()
                ))
            })?;
            let next = crate::admin::summary::of_policy(&next);
            let running = client.get("/admin/status")?;
            let changes = diff::changes(&running["summary"], &next);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&changes).unwrap_or_default()
                );
            } else {
                print!("{}", diff::render(&changes));
            }
        }
        Command::Tail {
            log,
            route,
            status,
            rule,
            json,
            count,
        } => {
            if rule.is_some() && log != "waf" {
                return Err(CtlError::Other(
                    "--rule filters WAF lines: add --log waf".into(),
                ));
            }
            let filter = tail::Filter {
                route,
                status,
                rule,
            };
            tail::follow(&client, &log, &filter, json, count)?;
        }
    }
    Ok(())
}

/// Runs `sluice ctl`: 0 on success, 1 with the error on stderr.
pub fn main(args: Args) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice ctl: {e}");
            ExitCode::FAILURE
        }
    }
}
