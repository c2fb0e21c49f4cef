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
REL="$ROOT/target/release"

THREADS=${THREADS:-2}
ORIGIN_THREADS=${ORIGIN_THREADS:-$THREADS}
WRK_THREADS=${WRK_THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
BENCH_PATH=${BENCH_PATH:-/hello.txt}

ORIGIN_PORT=${ORIGIN_PORT:-18081}
NGINX_PORT=${NGINX_PORT:-18082}
BARE_PORT=${BARE_PORT:-18083}
SLUICE_EMPTY_PORT=${SLUICE_EMPTY_PORT:-18084}
SLUICE_TWO_PORT=${SLUICE_TWO_PORT:-18085}
SLUICE_EMPTY_ADMIN=${SLUICE_EMPTY_ADMIN:-19901}
SLUICE_TWO_ADMIN=${SLUICE_TWO_ADMIN:-19902}

BUILD=${BUILD:-1}
BUILD_SLUICE=${BUILD_SLUICE:-1}
SKIP_SLUICE=${SKIP_SLUICE:-0}
SKIP_NGINX=${SKIP_NGINX:-0}

SLUICE_BIN=${SLUICE_BIN:-$REL/sluice}
FILTERS_OUT="$ROOT/filters/out"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench.XXXXXX")
RESULTS="$TMP/results.md"

BENCH_TAG=bench
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

# wait_ready NAME URL: until URL answers 200 with the origin's x-origin-id
# (so a proxy is known to reach the origin). Fails if NAME exits or after 15 s.
wait_ready() {
    local name=$1 url=$2 pid i
    pid=${PID_OF[$name]}
    for ((i = 0; i < 150; i++)); do
        if ! alive "$pid"; then
            log "$name exited during startup; last lines of $TMP/$name.log:"
            tail -n 20 "$TMP/$name.log" >&2 || true
            return 1
        fi
        if curl -fsS -o /dev/null -D "$TMP/$name.ready-headers" --max-time 1 "$url" 2>/dev/null &&
            grep -qi '^x-origin-id:' "$TMP/$name.ready-headers"; then
            return 0
        fi
        sleep 0.1
    done
    log "$name did not answer $url within 15 s; last lines of $TMP/$name.log:"
    tail -n 20 "$TMP/$name.log" >&2 || true
    return 1
}

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

# start_sluice_empty POLICY_PATH: writes a filter-less policy to POLICY_PATH
# and starts Sluice with it.
start_sluice_empty() {
    local policy=$1
    {
        cat <<EOF
# Sluice, no filters: every request goes straight to the demo origin.
[server]
listen = ["127.0.0.1:$SLUICE_EMPTY_PORT"]
admin = "127.0.0.1:$SLUICE_EMPTY_ADMIN"
threads = $THREADS

EOF
        sluice_policy_tail empty
    } >"$policy"
    start_bg sluice-empty "$SLUICE_BIN" run --policy "$policy"
}

# start_sluice_two_filters POLICY_PATH: writes a policy with a chain of two
# header filters to POLICY_PATH and starts Sluice with it.
start_sluice_two_filters() {
    local policy=$1
    {
        cat <<EOF
# Sluice, a chain of two filters on every request: both edit headers and tag
# the chain (x-sluice-chain), on the request and on the response.
[server]
listen = ["127.0.0.1:$SLUICE_TWO_PORT"]
admin = "127.0.0.1:$SLUICE_TWO_ADMIN"
threads = $THREADS

EOF
        sluice_policy_tail two
    } >"$policy"
    start_bg sluice-two "$SLUICE_BIN" run --policy "$policy"
}

# ---------------------------------------------------------------- wrk

declare -a ROWS=()
declare -a NOTES=()
NGINX_RPS=""

# skip_row NAME REASON
skip_row() {
    ROWS+=("$1|n/a|n/a|n/a|n/a")
    NOTES+=("$1: skipped ($2)")
    log "$1: skipped ($2)"
}

# bench NAME PORT: warm-up, measured run, one row.
bench() {
    local name=$1 port=$2 url out rps p50 p99 errs
    url="http://127.0.0.1:$port$BENCH_PATH"
    log "$name: warm-up $WARMUP, then $DURATION with $CONNECTIONS connections ($url)"
    wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$WARMUP" "$url" >"$TMP/wrk-$name-warmup.txt" 2>&1 || true
    out="$TMP/wrk-$name.txt"
    if ! wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$url" >"$out" 2>&1; then
        skip_row "$name" "wrk failed, see $out"
        return 0
    fi
    rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")
    p50=$(awk '$1 == "50%" { print $2 }' "$out")
    p99=$(awk '$1 == "99%" { print $2 }' "$out")
    if [[ -z $rps || -z $p50 || -z $p99 ]]; then
        skip_row "$name" "could not parse $out"
        return 0
    fi
    errs=$(grep -E 'Non-2xx|Socket errors' "$out" | sed 's/^ *//' | paste -sd ';' - || true)
    if [[ -n $errs ]]; then
        NOTES+=("$name: $errs")
    fi
    [[ $name == nginx ]] && NGINX_RPS=$rps
    ROWS+=("$name|$rps|$(to_ms "$p50") ms|$(to_ms "$p99") ms|")
}

# cpu_busy_pct: percentage of CPU time not idle over one second.
cpu_busy_pct() {
    local a b
    a=$(awk '/^cpu / { print $2 + $3 + $4 + $5 + $6 + $7 + $8, $5 + $6 }' /proc/stat)
    sleep 1
    b=$(awk '/^cpu / { print $2 + $3 + $4 + $5 + $6 + $7 + $8, $5 + $6 }' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN {
        split(a, x, " "); split(b, y, " "); t = y[1] - x[1]; i = y[2] - x[2];
        printf "%d", (t > 0 ? 100 * (t - i) / t : 0) }'
}

# still_running NAME: false (and a note with the exit status) if NAME, started
# by this script, has exited.
still_running() {
    local name=$1 pid rc=0
    pid=${PID_OF[$name]:-}
    [[ -n $pid ]] || return 1
    alive "$pid" && return 0
    wait "$pid" 2>/dev/null || rc=$?
    unset "PID_OF[$name]"
    NOTES+=("$name exited during the run (status $rc), see $TMP/$name.log")
    log "$name exited during the run (status $rc), see $TMP/$name.log"
    return 1
}

# run_target NAME PORT START_FN [ARGS...]: start a proxy, wait until it
# proxies to the origin, bench it, stop it.
run_target() {
    local name=$1 port=$2
    shift 2
    if ! still_running origin; then
        skip_row "$name" "the origin is not running"
        return 0
    fi
    if "$@" && wait_ready "$name" "http://127.0.0.1:$port/healthz"; then
        bench "$name" "$port"
        still_running "$name" || true
    else
        skip_row "$name" "did not start, see $TMP/$name.log"
    fi
    stop "$name"
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

for port in "$ORIGIN_PORT" "$NGINX_PORT" "$BARE_PORT" "$SLUICE_EMPTY_PORT" "$SLUICE_TWO_PORT" \
    "$SLUICE_EMPTY_ADMIN" "$SLUICE_TWO_ADMIN"; do
    if port_in_use "$port"; then
        die "port $port is already in use on 127.0.0.1 (a leftover server?); set the *_PORT variables"
    fi
done

log "results and logs: $TMP"
{
    echo "date:     $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "host:     $(uname -srm), $(nproc) CPUs"
    echo "nginx:    $(nginx -v 2>&1 || echo none)"
    echo "wrk:      -t$WRK_THREADS -c$CONNECTIONS -d$DURATION --latency (warm-up $WARMUP), path $BENCH_PATH"
    echo "threads:  proxies $THREADS, origin $ORIGIN_THREADS"
    echo "commit:   $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)"
} | tee "$TMP/env.txt" >&2

# Other work on the machine skews everything: measure how busy it is first.
busy=$(cpu_busy_pct)
if ((busy > 15)); then
    log "warning: the CPUs were ${busy}% busy before the run (a build?); numbers will be low"
    NOTES+=("the CPUs were ${busy}% busy before the run: numbers are low")
fi

start_origin
wait_ready origin "http://127.0.0.1:$ORIGIN_PORT/healthz" || die "the origin did not start"
bench origin "$ORIGIN_PORT"
still_running origin || true

if [[ $SKIP_NGINX == 1 ]]; then
    skip_row nginx "SKIP_NGINX=1"
elif ! command -v nginx >/dev/null; then
    skip_row nginx "nginx not installed: apt-get install nginx-light"
else
    run_target nginx "$NGINX_PORT" start_nginx
fi

if [[ ! -x $REL/bare-pingora ]]; then
    skip_row bare-pingora "$REL/bare-pingora missing"
else
    run_target bare-pingora "$BARE_PORT" start_bare_pingora
fi

if [[ $SKIP_SLUICE == 1 ]]; then
    skip_row sluice-empty "SKIP_SLUICE=1"
    skip_row sluice-two "SKIP_SLUICE=1"
elif [[ ! -x $SLUICE_BIN ]]; then
    skip_row sluice-empty "$SLUICE_BIN missing"
    skip_row sluice-two "$SLUICE_BIN missing"
else
    run_target sluice-empty "$SLUICE_EMPTY_PORT" start_sluice_empty "$TMP/policy-empty.toml"
    if [[ ! -f $FILTERS_OUT/headers.wasm ]]; then
        skip_row sluice-two "$FILTERS_OUT/headers.wasm missing (run filters/build.sh)"
    else
        run_target sluice-two "$SLUICE_TWO_PORT" start_sluice_two_filters "$TMP/policy-two.toml"
    fi
fi

stop origin

echo
print_table
echo
log "raw wrk outputs, logs, policies and results.md: $TMP"
