#!/usr/bin/env bash
# Swap benchmark, one run on loopback:
#  1. swap latency: POST /admin/reload until the new generation serves, for a
#     config-only change and for a module change (a new module to compile), medians
#     and p99 of N swaps each;
#  2. traffic p50/p99 with wrk, steady state vs during a swap storm (a reload every
#     SWAP_EVERY seconds), same load;
#  3. the first request after a swap of a WAF policy (the OWASP CRS, as
#     policies/default.toml runs it) under light load: WAF_SWAPS reloads, each followed
#     at once by one timed request and then a second one (the steady cost).
# Only reloads that answered 200 count in the latencies and the storm's swap count; any
# other answer is reported under the tables (and makes the exit status 1).
# Usage: bash bench/swap.sh   (knobs: N=20 DURATION=10s CONNECTIONS=64 SWAP_EVERY=0.1
#        WAF_SWAPS=10 SLUICE_BIN=target/release/sluice ONLY_WAF=0 WARMUP=2s)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${N:-20}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNECTIONS=${CONNECTIONS:-64}
SWAP_EVERY=${SWAP_EVERY:-0.1}
ORIGIN_PORT=${ORIGIN_PORT:-18181}
ORIGIN_THREADS=2
THREADS=2
LISTEN=127.0.0.1:18184 ADMIN=127.0.0.1:19984
WAF_SWAPS=${WAF_SWAPS:-10}
ONLY_WAF=${ONLY_WAF:-0}
WAF_LISTEN=127.0.0.1:18185 WAF_ADMIN=127.0.0.1:19985

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sluice-swap.XXXXXX")
BENCH_TAG=swap-bench
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

for b in "$SLUICE_BIN" "$REL/sluice-origin"; do
    [[ -x $b ]] || die "$b missing: cargo build --release --workspace"
done
command -v wrk >/dev/null || die "wrk is missing: apt-get install wrk"
check_ports "$ORIGIN_PORT" "${LISTEN##*:}" "${ADMIN##*:}" "${WAF_LISTEN##*:}" "${WAF_ADMIN##*:}"

# Copies of the headers module that differ only in a custom section: each is a new
# module (new hash) that a swap must compile.
cp "$ROOT/filters/out/headers.wasm" "$TMP/h1.wasm"
python3 - "$ROOT/filters/out/headers.wasm" "$TMP" "$N" <<'PY'
import sys
src, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
base = open(src, "rb").read()
for i in range(1, n + 1):
    name = b"sluice-bench"
    payload = bytes([len(name)]) + name + str(i).encode().rjust(8, b"0")
    open(f"{out}/m{i}.wasm", "wb").write(base + b"\x00" + bytes([len(payload)]) + payload)
PY

policy() { # policy MODULE TAG
    sluice_server "${LISTEN##*:}" "${ADMIN##*:}"
    cat <<EOF2
[pools.o]
peers = ["127.0.0.1:$ORIGIN_PORT"]
[filters.a]
module = "$1"
config = { chain_tag = "$2" }
[filters.b]
module = "$1"
config = { request = { set = { "x-b" = "$2" } } }
[[routes]]
filters = ["a", "b"]
pool = "o"
EOF2
}

# reload ADMIN: POST /admin/reload; prints its time in ms when it answered 200, else
# counts it in $TMP/reload-failures and notes its status.
reload() {
    local out
    out=$(curl -s -o "$TMP/reload-body.txt" -w '%{http_code} %{time_total}' -X POST --max-time 120 \
        "http://$1/admin/reload" || echo "000 0")
    if [[ ${out%% *} == 200 ]]; then
        awk -v t="${out##* }" 'BEGIN { printf "%.2f\n", t * 1000 }'
    else
        echo "reload answered ${out%% *}: $(head -c 200 "$TMP/reload-body.txt" 2>/dev/null)" >>"$TMP/reload-failures"
    fi
}
# stats: "median | p99" in ms of the numbers on stdin.
stats() {
    local v
    v=$(cat)
    printf '%s ms | %s ms' "$(nearest_rank 50 <<<"$v")" "$(nearest_rank 99 <<<"$v")"
}

start_origin
policy "$TMP/h1.wasm" one >"$TMP/policy.toml"
if [[ $ONLY_WAF != 1 ]]; then
    SLUICE_CACHE_DIR=off SLUICE_LOG=warn start_bg sluice "$SLUICE_BIN" run --policy "$TMP/policy.toml"
    wait_ready sluice "http://$LISTEN/hello.txt" || die "sluice did not start"

    echo "swap latency, $N swaps each (POST /admin/reload returns once the new generation serves)"
    for i in $(seq "$N"); do
        policy "$TMP/h1.wasm" "c$i" >"$TMP/policy.toml"
        reload "$ADMIN"
    done >"$TMP/config.txt"
    for i in $(seq "$N"); do
        policy "$TMP/m$i.wasm" "m$i" >"$TMP/policy.toml"
        reload "$ADMIN"
    done >"$TMP/module.txt"
    echo "| swap | successful | median | p99 |"
    echo "|---|---:|---:|---:|"
    echo "| config only (modules cached) | $(wc -l <"$TMP/config.txt")/$N | $(stats <"$TMP/config.txt") |"
    echo "| module change (compile, cache off) | $(wc -l <"$TMP/module.txt")/$N | $(stats <"$TMP/module.txt") |"

    wrk_warmup "$TMP/steady.txt" -t2 -c"$CONNECTIONS" "http://$LISTEN/hello.txt"
    wrk_measure "$TMP/steady.txt" -t2 -c"$CONNECTIONS" "http://$LISTEN/hello.txt"
    # The storm: one line per successful reload in $TMP/storm-swaps.
    (
        i=0
        end=$((SECONDS + ${DURATION%s} + 1))
        while ((SECONDS < end)); do
            i=$((i + 1))
            policy "$TMP/h1.wasm" "s$i" >"$TMP/policy.toml"
            reload "$ADMIN"
            sleep "$SWAP_EVERY"
        done
    ) >"$TMP/storm-swaps" &
    storm=$!
    wrk_measure "$TMP/storm.txt" -t2 -c"$CONNECTIONS" "http://$LISTEN/hello.txt"
    wait "$storm"
    echo
    echo "traffic, wrk -t2 -c$CONNECTIONS -d$DURATION, 2-filter chain; storm: $(wc -l <"$TMP/storm-swaps") successful swaps in the run"
    echo "| state | rps | p50 | p99 | non-2xx |"
    echo "|---|---:|---:|---:|---:|"
    for s in steady storm; do
        echo "| $s | $(wrk_stat "$TMP/$s.txt" rps) | $(wrk_stat "$TMP/$s.txt" p50) | $(wrk_stat "$TMP/$s.txt" p99) | $(wrk_stat "$TMP/$s.txt" non2xx) |"
    done
    stop sluice
fi

# 3. First request after a WAF swap, under light load (one request every 20 ms).
{
    sluice_server "${WAF_LISTEN##*:}" "${WAF_ADMIN##*:}"
    printf '[pools.o]\npeers = ["127.0.0.1:%s"]\n' "$ORIGIN_PORT"
    crs_waf_filter
    printf '[[routes]]\nfilters = ["waf"]\npool = "o"\n'
} >"$TMP/waf.toml"
SLUICE_LOG=warn start_bg sluice-waf "$SLUICE_BIN" run --policy "$TMP/waf.toml"
# The traffic listener opens once every worker has its WAF VMs.
READY_SECS=60 wait_ready sluice-waf "http://$WAF_LISTEN/hello.txt" || die "the WAF policy did not start"
get_ms() { curl -s -o /dev/null -w '%{time_total}\n' "http://$WAF_LISTEN/hello.txt?q=$1" | awk '{printf "%.1f\n", $1*1000}'; }
for _ in $(seq 20); do get_ms warm >/dev/null; done
start_bg light bash -c "while :; do curl -s -o /dev/null 'http://$WAF_LISTEN/hello.txt?q=light'; sleep 0.02; done"
: >"$TMP/waf-reload.txt"
: >"$TMP/waf-first.txt"
: >"$TMP/waf-next.txt"
for i in $(seq "$WAF_SWAPS"); do
    reload "$WAF_ADMIN" | awk '{ printf "%.0f\n", $1 }' >>"$TMP/waf-reload.txt"
    get_ms "first$i" >>"$TMP/waf-first.txt"
    get_ms "next$i" >>"$TMP/waf-next.txt"
    sleep 1
done
stop light
echo
echo "WAF policy (CRS, threads = 2), $WAF_SWAPS reloads under light load ($SLUICE_BIN), $(wc -l <"$TMP/waf-reload.txt") successful"
echo "| after each swap | median | max |"
echo "|---|---:|---:|"
echo "| POST /admin/reload | $(nearest_rank 50 <"$TMP/waf-reload.txt") ms | $(nearest_rank 100 <"$TMP/waf-reload.txt") ms |"
echo "| first request | $(nearest_rank 50 <"$TMP/waf-first.txt") ms | $(nearest_rank 100 <"$TMP/waf-first.txt") ms |"
echo "| second request | $(nearest_rank 50 <"$TMP/waf-next.txt") ms | $(nearest_rank 100 <"$TMP/waf-next.txt") ms |"
echo "first-request latencies (ms): $(tr '\n' ' ' <"$TMP/waf-first.txt")"
failed=0
if [[ -s $TMP/reload-failures ]]; then
    failed=1
    echo
    echo "failed reloads (not counted above): $(wc -l <"$TMP/reload-failures")"
    sed 's/^/- /' "$TMP/reload-failures"
fi
echo "raw: $TMP"
exit "$failed"
