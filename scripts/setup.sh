#!/usr/bin/env bash
# Installs what Sluice needs on a fresh Debian machine (idempotent), then builds the
# guest filters and the workspace in release mode.
#
#   scripts/setup.sh            # install + build
#   SLUICE_SKIP_APT=1 scripts/setup.sh   # build only
#   SLUICE_SKIP_BUILD=1 scripts/setup.sh # packages (and the demo certificate) only
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

need=(cmake gcc g++ make pkg-config curl openssl prometheus)
# Image transforms: nasm for mozjpeg's SIMD; vips (libvips-tools) and wrk for bench/image.sh.
need+=(nasm libvips-tools wrk)
# Instructions per request (bench/callgrind.sh: valgrind's callgrind) and syscalls and
# allocations per request (bench/run.sh PROFILE=1: perf stat with uprobes).
need+=(valgrind linux-perf)
# Soak (bench/soak.sh): h2load drives the h2c share of the traffic.
need+=(nghttp2-client)
# WAF differential test and bench (proxy/tests/suite/waf.rs, bench/waf.sh): nginx + ModSecurity
# + the OWASP CRS as Debian ships them, the echo module (a content handler ModSecurity
# inspects), and wrk.
need+=(nginx-light libnginx-mod-http-modsecurity modsecurity-crs libnginx-mod-http-echo wrk)
# Policy bundles (proxy/tests/suite/bundle.rs): Debian's OCI distribution registry, started by
# the tests on a loopback port with a temporary storage directory.
need+=(docker-registry)
# Fleet state (proxy/tests/suite/fleet.rs, bench/run.sh's ratelimit-redis target): Redis,
# started by the tests on a loopback port with no persistence.
need+=(redis-server)
# Operators' tools (proxy/tests/suite/ops/ui.rs): the status page is loaded, clicked and
# photographed in a real headless Chromium, driven over the DevTools protocol.
need+=(chromium)
# Component guests (filters/build.sh): python3 reads `cargo metadata` to find the pinned
# wasip3 crate's WIT files.
need+=(python3)
# Wasm: where rustup has no wasm32 std (offline machines), the filters build with
# Debian's rustc and -Zbuild-std (see filters/build.sh).
if ! (command -v rustup >/dev/null && rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown); then
    need+=(rustc-web cargo-web rust-web-src lld-16)
fi
if ! (command -v rustup >/dev/null && rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1); then
    need+=(rustc-web cargo-web rust-web-src lld-16 wasi-libc)
fi
need+=("$@")

if [[ -z "${SLUICE_SKIP_APT:-}" ]]; then
    missing=()
    for p in "${need[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if ((${#missing[@]})); then
        echo "setup: installing ${missing[*]}"
        SUDO=""
        [[ $(id -u) -eq 0 ]] || SUDO=sudo
        $SUDO apt-get update -q
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
fi

# The default policy's TLS listener serves a self-signed certificate made here once
# (never committed): policies/demo-tls/{cert,key}.pem for localhost and 127.0.0.1.
if [[ ! -s policies/demo-tls/cert.pem || ! -s policies/demo-tls/key.pem ]]; then
    echo "setup: making the demo TLS certificate (policies/demo-tls/)"
    mkdir -p policies/demo-tls
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
        -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout policies/demo-tls/key.pem -out policies/demo-tls/cert.pem 2>/dev/null
fi

[[ -n "${SLUICE_SKIP_BUILD:-}" ]] && exit 0
echo "setup: building filters"
filters/build.sh
echo "setup: building sluice, the demo origin and the bench peers (release)"
cargo build --release --workspace --all-targets --locked
