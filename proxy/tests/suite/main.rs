//! Sluice's integration tests: one binary (each test binary links the whole proxy), one
//! module per area. Most tests run real processes on loopback (the demo origin, Sluice
//! with a policy the test writes, a real HTTP client); what they share is in
//! [`support`]: starting processes without port races, `eventually`/`until` instead of
//! sleeps, raw exchanges and metric samples, and `require` for external programs.
//!
//! # Running
//!
//! The full suite (formatting, clippy, every crate's tests, the guest filters' own tests)
//! is `scripts/test.sh`; it installs what the tests need (nginx + ModSecurity, the OWASP
//! CRS, Prometheus, curl) on a Debian machine first.
//!
//! The fast tier, for the edit-compile-test loop: this binary alone, without the apt
//! packages, on a machine where `filters/build.sh` has built `filters/out/*.wasm` once:
//!
//! ```text
//! SLUICE_TEST_ALLOW_SKIP=crs,nginx,prometheus,curl,demo-tls,docker-registry,redis-server,chromium \
//!     cargo test --release -p sluice --test suite
//! cargo test --release -p sluice --test suite -- envoy::abi   # one area
//! ```
//!
//! A test that needs something missing fails and says what, unless
//! `SLUICE_TEST_ALLOW_SKIP` names it (`all` allows every skip); a skipped test passes
//! and prints `SKIPPED ...` (see `support::require`). The requirement names:
//!
//! | name | what | tests |
//! |---|---|---|
//! | `crs` | `/usr/share/modsecurity-crs` (`modsecurity-crs`, with ModSecurity's base config) | the WAF ones in `hardening`, `envoy::lifecycle`, `waf`, two in `ftw` |
//! | `nginx` | nginx with ModSecurity | `waf::sluice_waf_agrees_with_modsecurity` |
//! | `prometheus` | `promtool`, `prometheus` | two in `observability`, `deploy::compose_files_are_wired_together`, `deploy::prometheus_scrapes_the_compose_sluice_and_every_dashboard_query_has_series` |
//! | `curl` | curl | `edge` (TLS), `showcase` |
//! | `demo-tls` | `policies/demo-tls/` (made by `scripts/setup.sh`) | `showcase`, `bundle::the_default_and_waf_policies_push_and_run_as_they_are` |
//! | `docker-registry` | Debian's OCI registry (`docker-registry`) | `bundle` |
//! | `redis-server` | Redis (`redis-server`) | `fleet`, `components_fleet` |
//! | `chromium` | Debian's headless Chromium (`chromium`) | `ops::ui` |
//!
//! The filters (`filters/out/*.wasm`) and the demo origin are never skippable.
//!
//! Tests run in parallel in this one process, one harness thread per core (as each of
//! the former 15 binaries did, one after the other): the timing-sensitive tests
//! (deadlines, slowloris, RSS after a storm) keep the margins they had. To chase a
//! timing flake, run serially with `RUST_TEST_THREADS=1`.

mod support;

mod abi;
mod abi_doc;
mod bundle;
mod chain;
mod check;
mod components;
mod components_edge;
mod components_failures;
mod components_fleet;
mod components_phases;
mod deploy;
mod edge;
mod envoy;
mod fleet;
mod forward;
mod ftw;
mod hardening;
mod hostcall_fuzz;
mod image;
mod observability;
mod ops;
mod router;
mod sandbox;
mod showcase;
mod swap;
mod upstream_h1;
mod waf;
mod waf_response;
