#!/usr/bin/env bash
# Instructions per request (issue #18): each Sluice binary, each chain, under valgrind's
# callgrind with one worker thread, counted over a fixed wrk run after a warm-up. A count
# of executed instructions does not move with the load of a shared machine the way CPU
# time does, so it shows a filter-cost change of 1-2 µs that `bench/run.sh` cannot.
#
# Per chain and binary: Sluice (`threads = 1`) starts under
# `valgrind --tool=callgrind`; a warm-up (`wrk -t1 -c4`, WARMUP), then the counters are
# zeroed (`callgrind_control -z`), a measured run (`wrk -t1 -c4`, DURATION), a dump
# (`callgrind_control -d`); the dump's total divided by the requests wrk completed. The
# `memcpy` column is the part spent in libc's memcpy: callgrind counts each byte of a
# `rep movsb` copy as an instruction, which real CPUs move 32-64 bytes a cycle, so the
# `rest` column is the one to compare.
#
# Usage: bash bench/callgrind.sh BIN [BIN...]
#   A BIN named `nginx` is nginx (the system's) proxying to the same origin as
#   bench/run.sh's nginx row (`master_process off`, one process): counted on the `empty`
#   chain only, the peer of Sluice's floor.
# Knobs (environment):
#   CHAINS="empty one three waf-norules"   policies of bench/lib.sh (sluice_policy_tail);
#                                          waf-crs (the CRS at PL1) is not in the default:
#                                          its start under callgrind takes minutes
#   MIX=                                   a wrk Lua script for both wrk runs instead of
#                                          BENCH_PATH, e.g. MIX=bench/waf-mix.lua (waf.sh's
#                                          traffic: 16 GETs, 4 attacks, Host: localhost)
#   READY_SECS=240                         how long Sluice may take to answer under callgrind
#   DURATION=3s WARMUP=2s                  measured run and warm-up (wrk -t1 -c4)
#   ORIGIN_PORT=18081 SLUICE_PORT=18084 SLUICE_ADMIN=19901
#   KEEP=0                                 1: keep the temp dir (callgrind dumps) and say where
#   TLS=0                                  1: HTTP/1.1 over TLS (a `[tls]` listener on
#                                          SLUICE_TLS_PORT=18444 with a self-signed ECDSA
#                                          P-256 certificate made here by openssl; wrk over
#                                          https). Not with H2=1; nginx is not counted
#   H2=0                                   1: HTTP/2 with prior knowledge (h2c, `[server]
#                                          h2c = true`) instead of HTTP/1.1: h2load -t1 -c4
#                                          -m4 in place of wrk (DURATION and WARMUP in whole
#                                          seconds; no MIX, no nginx)
# Needs valgrind (callgrind_control, callgrind_annotate), wrk (h2load with H2=1), curl,
# the release origin (target/release/sluice-origin) and filters/out/*.wasm.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CHAINS=${CHAINS:-empty one three waf-norules}
DURATION=${DURATION:-3s}
WARMUP=${WARMUP:-2s}
ORIGIN_PORT=${ORIGIN_PORT:-18081}
SLUICE_PORT=${SLUICE_PORT:-18084}
SLUICE_ADMIN=${SLUICE_ADMIN:-19901}
KEEP=${KEEP:-0}
MIX=${MIX:-}
READY=${READY_SECS:-240}
H2=${H2:-0}
TLS=${TLS:-0}
SLUICE_TLS_PORT=${SLUICE_TLS_PORT:-18444}
THREADS=1 ORIGIN_THREADS=1

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sluice-callgrind.XXXXXX")
BENCH_TAG=callgrind
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

(($# > 0)) || die "usage: bash bench/callgrind.sh BIN [BIN...]"
for t in valgrind callgrind_control callgrind_annotate wrk curl; do
    command -v "$t" >/dev/null || die "$t not found"
done
if [[ $H2 == 1 ]]; then
    command -v h2load >/dev/null || die "h2load not found (Debian: nghttp2-client)"
    [[ -z $MIX ]] || die "MIX is a wrk script: not with H2=1"
    SLUICE_SERVER_EXTRA="${SLUICE_SERVER_EXTRA:+$SLUICE_SERVER_EXTRA$'\n'}h2c = true"
fi
if [[ $TLS == 1 ]]; then
    [[ $H2 != 1 ]] || die "TLS=1 is HTTP/1.1 over TLS: not with H2=1"
    command -v openssl >/dev/null || die "openssl not found"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$TMP/key.pem" -out "$TMP/cert.pem" -days 2 -subj "/CN=localhost" \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >"$TMP/openssl.log" 2>&1 ||
        die "openssl could not make a certificate, see $TMP/openssl.log"
fi
[[ -x $REL/sluice-origin ]] || die "$REL/sluice-origin missing (cargo build --release -p sluice-origin)"
check_ports "$ORIGIN_PORT" "$SLUICE_PORT" "$SLUICE_ADMIN"
[[ $TLS != 1 ]] || check_ports "$SLUICE_TLS_PORT"
[[ $KEEP == 1 ]] || trap 'cleanup; rm -rf "$TMP"' EXIT

start_origin
wait_ready origin "http://127.0.0.1:$ORIGIN_PORT/healthz" || die "the origin did not start"

# total FILE: the instructions a callgrind dump counted, and those of memcpy.
totals() {
    local all copy
    all=$(callgrind_annotate --threshold=100 "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ && !n++ { gsub(",", "", $1); print $1 }')
    copy=$(callgrind_annotate --threshold=100 --inclusive=no "$1" 2>/dev/null |
        awk '!/=>/ && /:__mem(cpy|move)_[a-z0-9_]+ \[/ { gsub(",", "", $1); s += $1 } END { print s + 0 }')
    echo "${all:-0} ${copy:-0}"
}

# count CHAIN BIN N: one measured run; prints a table row.
count() {
    local chain=$1 bin=$2 n=$3 name out pid reqs dump all copy
    name="s$n-$chain"
    out="$TMP/$name"
    mkdir -p "$out"
    # The bench policy of bench/lib.sh (as start_sluice_bench writes it), under callgrind.
    {
        echo "# Sluice callgrind policy: $chain chain, everything to the demo origin."
        sluice_server "$SLUICE_PORT" "$SLUICE_ADMIN"
        echo
        sluice_policy_tail "$chain"
        if [[ $TLS == 1 ]]; then
            printf '\n[tls]\nlisten = ["127.0.0.1:%s"]\n\n[[tls.certificates]]\ncert = "%s"\nkey = "%s"\n' \
                "$SLUICE_TLS_PORT" "$TMP/cert.pem" "$TMP/key.pem"
        fi
    } >"$out/policy.toml"
    if [[ $bin == nginx ]]; then
        # No filter chain: nginx is counted as the peer of the empty chain only (and of
        # cleartext HTTP/1.1: its listener here has neither HTTP/2 nor TLS).
        [[ $chain == empty && $H2 != 1 && $TLS != 1 ]] || return 0
        mkdir -p "$out/nginx"
        nginx_proxy_conf "$out/nginx" "$SLUICE_PORT" >"$out/nginx.conf"
        start_bg "$name" valgrind --tool=callgrind --callgrind-out-file="$out/cg.out" \
            nginx -p "$out/nginx" -e "$out/nginx/error.log" -c "$out/nginx.conf" \
            -g 'daemon off; master_process off;'
    else
        start_bg "$name" valgrind --tool=callgrind --callgrind-out-file="$out/cg.out" \
            "$bin" run --policy "$out/policy.toml"
    fi
    pid=${PID_OF[$name]}
    READY_SECS=$READY wait_ready "$name" "http://127.0.0.1:$SLUICE_PORT/healthz" || {
        log "$bin ($chain) did not start under valgrind, see $TMP/$name.log"
        stop "$name"
        return 0
    }
    load "$WARMUP" >/dev/null
    callgrind_control -z "$pid" >/dev/null
    load "$DURATION" >"$out/load.txt"
    callgrind_control -d "$pid" >/dev/null
    sleep 1
    stop "$name"
    reqs=$(load_requests "$out/load.txt")
    dump=$(ls -t "$out"/cg.out.* 2>/dev/null | head -1)
    [[ -n $dump && -n $reqs ]] || {
        log "no dump or no requests for $bin ($chain)"
        return 0
    }
    read -r all copy < <(totals "$dump")
    awk -v c="$chain" -v b="$bin" -v a="$all" -v m="$copy" -v r="$reqs" 'BEGIN {
        printf "| %s | %s | %d | %.0f | %.0f | %.0f |\n", c, b, r, a / r, m / r, (a - m) / r }'
}

# load DURATION: the client's run (wrk, or h2load with H2=1) against Sluice.
load() {
    if [[ $H2 == 1 ]]; then
        h2load -t1 -c4 -m4 -D "${1%s}" "http://127.0.0.1:$SLUICE_PORT$BENCH_PATH"
    else
        wrk -t1 -c4 -d"$1" "${WRK_ARGS[@]}"
    fi
}

# load_requests FILE: the requests a run of `load` completed, from its output.
load_requests() {
    if [[ $H2 == 1 ]]; then
        awk '/^requests:/ { print $4 }' "$1"
    else
        wrk_stat "$1" requests
    fi
}

BENCH_PATH=${BENCH_PATH:-/hello.txt}
BASE="http://127.0.0.1:$SLUICE_PORT"
[[ $TLS != 1 ]] || BASE="https://localhost:$SLUICE_TLS_PORT"
if [[ -n $MIX ]]; then
    [[ -f $MIX ]] || die "MIX=$MIX: no such file"
    WRK_ARGS=(-s "$MIX" "$BASE")
else
    WRK_ARGS=("$BASE$BENCH_PATH")
fi
# Rows are printed as they come (and kept in results.md); the servers run from this shell
# so that its exit trap stops them, Ctrl-C included.
out() { tee -a "$TMP/results.md"; }
proto=HTTP/1.1
[[ $H2 != 1 ]] || proto="HTTP/2 (h2c)"
[[ $TLS != 1 ]] || proto="HTTP/1.1 over TLS"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo n/a), load $(cut -d' ' -f1-3 /proc/loadavg), traffic ${MIX:-$BENCH_PATH} over $proto" | out
printf '\n| chain | binary | requests | instructions/req | of which memcpy | rest |\n|---|---|---:|---:|---:|---:|\n' | out
for chain in $CHAINS; do
    i=0
    for bin in "$@"; do
        count "$chain" "$bin" "$i" >"$TMP/row"
        out <"$TMP/row"
        i=$((i + 1))
    done
done
[[ $KEEP != 1 ]] || log "dumps and logs: $TMP"
