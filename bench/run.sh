#!/usr/bin/env bash
# Sluice benchmark: one run, on loopback, of
#   origin        the demo origin (sluice-origin) hit directly: the ceiling
#   nginx         nginx as a reverse proxy to the origin
#   bare-pingora  a filter-less Pingora proxy: what the framework costs
#   sluice-empty  Sluice with a policy that has no filters
#   sluice-two    Sluice with a two-filter chain
# Each target gets a warm-up, then `wrk --latency`; the script prints a
# Markdown table (rps, p50, p99, rps vs nginx) and keeps the raw wrk outputs
# and server logs in a temp dir whose path it prints.
#
# Usage: bash bench/run.sh            (from anywhere)
# Knobs (environment):
#   THREADS=2            proxy threads (nginx worker_processes, Pingora/Sluice threads)
#   ORIGIN_THREADS=$THREADS   origin worker threads
#   WRK_THREADS=2 CONNECTIONS=64 DURATION=10s WARMUP=2s
#   BENCH_PATH=/hello.txt     path requested by wrk
#   ORIGIN_PORT=18081 NGINX_PORT=18082 BARE_PORT=18083
#   SLUICE_EMPTY_PORT=18084 SLUICE_TWO_PORT=18085
#   SLUICE_EMPTY_ADMIN=19901 SLUICE_TWO_ADMIN=19902
#   BUILD=1        0: do not run cargo, use the binaries in target/release
#   BUILD_SLUICE=1 0: do not build sluice (an existing binary is still used)
#   SKIP_SLUICE=0  1: skip the two Sluice rows
#   SKIP_NGINX=0   1: skip the nginx row
#   SLUICE_BIN=target/release/sluice   the Sluice binary to run
#
# Load generator and servers share the machine's cores; nothing is pinned.
# On a small machine (2 cores) the absolute numbers are mostly a measure of
# how the CPU is shared; compare rows of the same run, not runs of different
# machines.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

CONNECTIONS=${CONNECTIONS:-64}
BENCH_PATH=${BENCH_PATH:-/hello.txt}

ORIGIN_PORT=${ORIGIN_PORT:-18081}
NGINX_PORT=${NGINX_PORT:-18082}
BARE_PORT=${BARE_PORT:-18083}
SLUICE_EMPTY_PORT=${SLUICE_EMPTY_PORT:-18084}
SLUICE_TWO_PORT=${SLUICE_TWO_PORT:-18085}
SLUICE_EMPTY_ADMIN=${SLUICE_EMPTY_ADMIN:-19901}
SLUICE_TWO_ADMIN=${SLUICE_TWO_ADMIN:-19902}

BUILD_SLUICE=${BUILD_SLUICE:-1}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench.XXXXXX")
RESULTS="$TMP/results.md"

BENCH_TAG=bench
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

# ---------------------------------------------------------------- servers

start_nginx() {
    local dir="$TMP/nginx" conf="$TMP/nginx.conf"
    mkdir -p "$dir"
    {
        nginx_head "$dir"
        echo "    server {"
        echo "        listen 127.0.0.1:$NGINX_PORT;"
        nginx_proxy_location
        echo "    }"
        echo "}"
    } >"$conf"
    start_nginx_conf nginx "$dir" "$conf"
}

start_bare_pingora() {
    start_bg bare-pingora "$REL/bare-pingora" --listen "127.0.0.1:$BARE_PORT" \
        --upstream "127.0.0.1:$ORIGIN_PORT" --threads "$THREADS"
}

# start_sluice_empty POLICY_PATH / start_sluice_two_filters POLICY_PATH: Sluice with no
# filter, or with a chain of two header filters (both edit headers and tag the chain,
# x-sluice-chain, on the request and on the response).
start_sluice_empty() {
    start_sluice_bench sluice-empty "$1" "$SLUICE_EMPTY_PORT" "$SLUICE_EMPTY_ADMIN" empty
}
start_sluice_two_filters() {
    start_sluice_bench sluice-two "$1" "$SLUICE_TWO_PORT" "$SLUICE_TWO_ADMIN" two
}

# ---------------------------------------------------------------- wrk

NGINX_RPS=""

# bench_target NAME PORT: warm-up, measured run, one row (called by run_target).
bench_target() {
    local name=$1 port=$2 url
    url="http://127.0.0.1:$port$BENCH_PATH"
    log "$name: warm-up $WARMUP, then $DURATION with $CONNECTIONS connections ($url)"
    wrk_row "$name" "$TMP/wrk-$name.txt" -t"$WRK_THREADS" -c"$CONNECTIONS" "$url" || return 0
    [[ $name == nginx ]] && NGINX_RPS=$WRK_RPS
    ROWS+=("$name|$WRK_RPS|$WRK_P50 ms|$WRK_P99 ms|")
}

print_table() {
    local row name rps p50 p99 ratio
    {
        echo "| target | rps | p50 | p99 | rps vs nginx |"
        echo "|---|---:|---:|---:|---:|"
        for row in "${ROWS[@]}"; do
            IFS='|' read -r name rps p50 p99 ratio <<<"$row"
            if [[ -z $ratio ]]; then
                if [[ -n $NGINX_RPS && $NGINX_RPS != 0 ]]; then
                    ratio=$(awk -v a="$rps" -v b="$NGINX_RPS" 'BEGIN { printf "%.2fx", a / b }')
                else
                    ratio="n/a"
                fi
            fi
            echo "| $name | $rps | $p50 | $p99 | $ratio |"
        done
        if ((${#NOTES[@]} > 0)); then
            echo
            for row in "${NOTES[@]}"; do
                echo "- $row"
            done
        fi
    } | tee "$RESULTS"
}

# ---------------------------------------------------------------- main

command -v wrk >/dev/null || die "wrk not found (apt-get install wrk)"
command -v curl >/dev/null || die "curl not found (apt-get install curl)"
ulimit -n 65536 2>/dev/null || ulimit -n 8192 2>/dev/null || true

if [[ $BUILD == 1 ]]; then
    cd "$ROOT"
    built_sluice=0
    if [[ $BUILD_SLUICE == 1 && $SKIP_SLUICE != 1 ]]; then
        log "building sluice-origin, bare-pingora and sluice (release)"
        if cargo build --release -p sluice-origin -p bare-pingora -p sluice; then
            built_sluice=1
        else
            log "building sluice failed; building the other two alone"
        fi
    fi
    if [[ $built_sluice == 0 ]]; then
        log "building sluice-origin and bare-pingora (release)"
        cargo build --release -p sluice-origin -p bare-pingora
        if [[ $SKIP_SLUICE != 1 && -x $SLUICE_BIN ]]; then
            log "warning: $SLUICE_BIN was not rebuilt by this run"
        fi
    fi
fi
[[ -x $REL/sluice-origin ]] || die "$REL/sluice-origin missing (run with BUILD=1)"

check_ports "$ORIGIN_PORT" "$NGINX_PORT" "$BARE_PORT" "$SLUICE_EMPTY_PORT" "$SLUICE_TWO_PORT" \
    "$SLUICE_EMPTY_ADMIN" "$SLUICE_TWO_ADMIN"

log "results and logs: $TMP"
{
    env_lines
    echo "wrk:      -t$WRK_THREADS -c$CONNECTIONS -d$DURATION --latency (warm-up $WARMUP), path $BENCH_PATH"
    echo "threads:  proxies $THREADS, origin $ORIGIN_THREADS"
} | tee "$TMP/env.txt" >&2

# Other work on the machine skews everything: measure how busy it is first.
warn_if_busy

start_origin
wait_ready origin "http://127.0.0.1:$ORIGIN_PORT/healthz" || die "the origin did not start"
bench_target origin "$ORIGIN_PORT"
still_running origin || true

run_nginx_target "$NGINX_PORT" start_nginx

if [[ ! -x $REL/bare-pingora ]]; then
    skip_row bare-pingora "$REL/bare-pingora missing"
else
    run_target bare-pingora "$BARE_PORT" start_bare_pingora
fi

run_sluice_targets "$SLUICE_EMPTY_PORT" "$SLUICE_TWO_PORT"

stop origin

echo
print_table
echo
log "raw wrk outputs, logs, policies and results.md: $TMP"
