#!/usr/bin/env bash
# Sets everything up and runs the whole test suite: formatting, clippy, the default
# policy's check, and every unit and integration test (real processes on loopback).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
cargo fmt --all --check
cargo clippy --release --workspace --all-targets --locked -- -D warnings
# The guest filters are a workspace of their own: the same checks for the crates whose
# native tests run below.
FILTER_CRATES=(-p router -p waf -p image -p sluice-filter-kit -p ratelimit)
(cd filters && cargo fmt --all --check)
(cd filters && cargo clippy --release --locked "${FILTER_CRATES[@]}" --all-targets -- -D warnings)
target/release/sluice check --policy policies/default.toml
target/release/sluice check --policy policies/waf.toml
target/release/sluice check --policy policies/fleet.toml
cargo test --release --workspace --locked
# The guest filters' own tests (rule engines, natively): the router's matchers and
# splits, the WAF's SecLang engine against the real CRS, the filter kit, the rate limiter's
# keys and windows.
(cd filters && cargo test --release --locked "${FILTER_CRATES[@]}")
