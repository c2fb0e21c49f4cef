#!/usr/bin/env bash
# Soak: Sluice under mixed traffic for SOAK_SECS (10 minutes by default) with a policy
# reload every RELOAD_EVERY seconds, on loopback, against the demo origin. Policies like
# policies/default.toml, written to a temp dir, alternating two versions (A and B differ
# in a response header the edge-headers filter sets) at each POST /admin/reload.
# Traffic classes, each its own client so every answer can be checked against what it
# should be:
#   plain      Host plain.localhost, GET /hello.txt, a route with no filter      -> 200
#   filtered   GET /index.html through edge-headers + hello (two filters)       -> 200
#   waf        GET /echo?q=... through the WAF (OWASP CRS, PL1) + edge-headers   -> 200
#   attack     GET /echo?id=1' or '1'='1 (SQL injection)                         -> 403
#   image      GET /cdn-cgi/image/width=200,quality=70/sample.jpg (image filter) -> 200
#   h2c        h2load, HTTP/2 prior knowledge, GET /hello.txt (filtered route)   -> 200
# Reported: per class requests, unexpected statuses, transport errors, p50/p99/p99.9;
# reloads and their failures; Sluice's RSS over time (start/max/end, sampled every
# 5 s) and CPU time per request (user+system of the Sluice process over the run,
# divided by all requests). Exit status 1 when anything failed.
#
# Usage: bash bench/soak.sh            (SOAK_SECS=60 bash bench/soak.sh for a smoke run)
# Knobs (environment): SOAK_SECS=600 RELOAD_EVERY=30 THREADS=2 ORIGIN_THREADS=2
#   CONNS=2 (connections per wrk class) H2_CLIENTS=2 H2_STREAMS=4, BUILD=1 (0: use
#   target/release and filters/out as they are), ports ORIGIN_PORT=18581
#   SLUICE_PORT=18582 SLUICE_ADMIN=19951.
# Needs: wrk, h2load (nghttp2-client), modsecurity-crs (scripts/setup.sh).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SOAK_SECS=${SOAK_SECS:-600}
RELOAD_EVERY=${RELOAD_EVERY:-30}
THREADS=${THREADS:-2}
ORIGIN_THREADS=${ORIGIN_THREADS:-2}
CONNS=${CONNS:-2}
H2_CLIENTS=${H2_CLIENTS:-2}
H2_STREAMS=${H2_STREAMS:-4}
BUILD=${BUILD:-1}
ORIGIN_PORT=${ORIGIN_PORT:-18581}
SLUICE_PORT=${SLUICE_PORT:-18582}
SLUICE_ADMIN=${SLUICE_ADMIN:-19951}
FILTERS_OUT="$ROOT/filters/out"
CLASS_LUA="$ROOT/bench/soak-class.lua"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sluice-soak.XXXXXX")
BENCH_TAG=soak
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

for tool in wrk h2load curl; do
    command -v "$tool" >/dev/null || die "$tool is missing (scripts/setup.sh installs it)"
done
[[ -d /usr/share/modsecurity-crs/rules ]] || die "modsecurity-crs is missing (scripts/setup.sh installs it)"
check_ports "$ORIGIN_PORT" "$SLUICE_PORT" "$SLUICE_ADMIN"
if [[ $BUILD == 1 ]]; then
    log "building (release)"
    (cd "$ROOT" && cargo build --release -q -p sluice -p sluice-origin)
fi
[[ -x $REL/sluice && -x $REL/sluice-origin ]] || die "no binaries in $REL (BUILD=1 builds them)"

# policy A|B: a policies/default.toml-like policy; the two differ in one header value.
policy() {
    cat <<TOML
[server]
listen = ["127.0.0.1:$SLUICE_PORT"]
admin = "127.0.0.1:$SLUICE_ADMIN"
threads = $THREADS
h2c = true

[pools.demo]
peers = ["127.0.0.1:$ORIGIN_PORT"]

[filters.edge-headers]
module = "$FILTERS_OUT/headers.wasm"
config = { request = { set = { "x-forwarded-by" = "sluice" } }, response = { set = { "x-served-by" = "sluice", "x-soak-policy" = "$1" }, remove = ["server"] }, chain_tag = "edge-headers" }

[filters.hello]
module = "$FILTERS_OUT/respond.wasm"
config = { status = 200, body = "Hello from a Wasm filter at the edge.\n", headers = { "content-type" = "text/plain" }, path_prefix = "/hello" }

[filters.image]
module = "$FILTERS_OUT/image.wasm"
config = { sources = ["/sample.jpg"], max_width = 2000, max_height = 2000, on_error = "passthrough" }

$(crs_waf_filter)

[[routes]]
name = "plain"
host = "plain.localhost"
path_prefix = "/"
pool = "demo"

[[routes]]
name = "images"
path_prefix = "/cdn-cgi/image/"
filters = ["image"]
pool = "demo"

[[routes]]
name = "echo"
path_prefix = "/echo"
filters = ["waf", "edge-headers"]
pool = "demo"

[[routes]]
name = "site"
path_prefix = "/"
filters = ["edge-headers", "hello"]
pool = "demo"
TOML
}
policy A >"$TMP/policy-A.toml"
policy B >"$TMP/policy-B.toml"
cp "$TMP/policy-A.toml" "$TMP/policy.toml"

start_origin
SLUICE_LOG=warn start_bg sluice "$REL/sluice" run --policy "$TMP/policy.toml"
SLUICE_PID=${PID_OF[sluice]}

# wait_200 URL [HOST]: until URL answers 2xx (120 s: the WAF compiles the CRS first).
wait_200() {
    READY_SECS=120 READY_HEADER= wait_ready sluice "$1" -H "Host: ${2:-localhost}" || die "$1 never answered 200"
}
BASE="http://127.0.0.1:$SLUICE_PORT"
wait_200 "$BASE/hello.txt" plain.localhost
wait_200 "$BASE/index.html"
wait_200 "$BASE/echo?q=warm"
wait_200 "$BASE/cdn-cgi/image/width=200,quality=70/sample.jpg"
log "ready; soaking for ${SOAK_SECS}s, reload every ${RELOAD_EVERY}s, results in $TMP"

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$SLUICE_PID/status" 2>/dev/null || echo 0; }
HZ=$(getconf CLK_TCK)
CPU0=$(proc_ticks "$SLUICE_PID")
T0=$(date +%s)

# RSS sampler: seconds since start, kB.
(
    while alive "$SLUICE_PID"; do
        echo "$(($(date +%s) - T0)) $(rss_kb)"
        sleep 5
    done
) >"$TMP/rss.tsv" 2>/dev/null &
PID_OF[rss]=$!

# Reloader: alternates B, A, B, ... every RELOAD_EVERY s; one line per reload:
# seconds since start, policy, HTTP status, milliseconds.
(
    next=B
    while sleep "$RELOAD_EVERY"; do
        (($(date +%s) - T0 < SOAK_SECS - 2)) || break
        cp "$TMP/policy-$next.toml" "$TMP/policy.toml"
        out=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' -X POST --max-time 120 \
            "http://127.0.0.1:$SLUICE_ADMIN/admin/reload" || echo "000 0")
        echo "$(($(date +%s) - T0)) $next ${out%% *} $(awk -v t="${out##* }" 'BEGIN {printf "%.0f", t * 1000}')"
        [[ $next == B ]] && next=A || next=B
    done
) >"$TMP/reloads.tsv" 2>/dev/null &
PID_OF[reloader]=$!

# class NAME PATH HOST EXPECT: one wrk for SOAK_SECS.
class() {
    SOAK_CLASS=$1 SOAK_PATH=$2 SOAK_HOST=$3 SOAK_EXPECT=$4 start_bg "wrk-$1" \
        wrk -t1 -c"$CONNS" -d"${SOAK_SECS}s" --timeout 10s -s "$CLASS_LUA" "$BASE$2"
}
class plain /hello.txt plain.localhost 200
class filtered /index.html localhost 200
class waf '/echo?q=hello+world&id=42' localhost 200
class attack "/echo?id=1%27+or+%271%27%3D%271" localhost 403
class image /cdn-cgi/image/width=200,quality=70/sample.jpg localhost 200
# Under `timeout`: h2load 1.52's timing mode can spin forever once the server closes
# every connection (see bench/README.md, TLS notes).
start_bg h2c timeout $((SOAK_SECS + 60)) h2load -c"$H2_CLIENTS" -m"$H2_STREAMS" -D"$SOAK_SECS" --log-file="$TMP/h2c-requests.tsv" \
    "$BASE/hello.txt"

for name in wrk-plain wrk-filtered wrk-waf wrk-attack wrk-image h2c; do
    wait "${PID_OF[$name]}" || log "$name exited with an error (see $TMP/$name.log)"
    unset "PID_OF[$name]"
done
CPU1=$(proc_ticks "$SLUICE_PID")
ELAPSED=$(($(date +%s) - T0))
SLUICE_ALIVE=yes
alive "$SLUICE_PID" || SLUICE_ALIVE=no
RSS_END=$(rss_kb)
stop reloader
stop rss

# Results.
failed=0
total=0
{
    echo "Soak: ${ELAPSED}s, reload every ${RELOAD_EVERY}s, $THREADS Sluice threads, $CONNS connections per wrk class, h2c $H2_CLIENTS clients x $H2_STREAMS streams"
    echo
    echo "| class | requests | unexpected status | transport errors | p50 ms | p99 ms | p99.9 ms | max ms |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for c in plain filtered waf attack image; do
        line=$(grep '^class=' "$TMP/wrk-$c.log" || echo "class=$c requests=0 unexpected=0 socket_errors=1")
        get() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
        req=$(get requests) bad=$(get unexpected) sock=$(get socket_errors)
        total=$((total + req))
        ((bad + sock == 0 && req > 0)) || failed=1
        printf '| %s | %d | %d | %d | %.2f | %.2f | %.2f | %.2f |\n' "$c" "$req" "$bad" "$sock" \
            "$(get p50_us)e-3" "$(get p99_us)e-3" "$(get p999_us)e-3" "$(get max_us)e-3"
    done
    # h2load: the summary's failures, per-request log for statuses and percentiles.
    h2sum=$(grep -m1 '^requests:' "$TMP/h2c.log" || echo "requests: 0 total, 0 started, 0 done, 0 succeeded, 1 failed, 0 errored, 0 timeout")
    h2fail=$(awk '{for (i = 1; i < NF; i++) if ($(i + 1) ~ /^(failed|errored|timeout)/) s += $i} END {print s + 0}' <<<"$h2sum")
    h2req=$(wc -l <"$TMP/h2c-requests.tsv" 2>/dev/null || echo 0)
    h2bad=$(awk '$2 != 200' "$TMP/h2c-requests.tsv" 2>/dev/null | wc -l)
    total=$((total + h2req))
    ((h2fail + h2bad == 0 && h2req > 0)) || failed=1
    cut -f3 "$TMP/h2c-requests.tsv" | sort -n >"$TMP/h2c-sorted" 2>/dev/null || true
    pct() { awk -v p="$1" -v n="$h2req" 'NR == (int(n * p / 100) > 0 ? int(n * p / 100) : 1) {printf "%.2f", $1 / 1000; exit}' "$TMP/h2c-sorted"; }
    printf '| h2c | %d | %d | %d | %s | %s | %s | %s |\n' "$h2req" "$h2bad" "$h2fail" \
        "$(pct 50)" "$(pct 99)" "$(pct 99.9)" "$(tail -n1 "$TMP/h2c-sorted" | awk '{printf "%.2f", $1 / 1000}')"
    echo
    reloads=$(wc -l <"$TMP/reloads.tsv")
    reload_bad=$(awk '$3 != 200' "$TMP/reloads.tsv" | wc -l)
    ((reload_bad == 0)) || failed=1
    echo "Reloads: $reloads, failed $reload_bad, time ms (mean/max): $(awk '{s += $4; if ($4 > m) m = $4} END {if (NR) printf "%.0f/%d", s / NR, m; else print "-"}' "$TMP/reloads.tsv")"
    echo "Sluice RSS MB (start/max/end): $(awk -v end="$RSS_END" 'NR == 1 {s = $2} {if ($2 > m) m = $2} END {printf "%.0f/%.0f/%.0f", s / 1024, m / 1024, end / 1024}' "$TMP/rss.tsv")"
    echo "Sluice CPU per request: $(awk -v t=$((CPU1 - CPU0)) -v hz="$HZ" -v n="$total" 'BEGIN {printf "%.1f us (%.1f s CPU for %d requests)", n ? t / hz * 1e6 / n : 0, t / hz, n}')"
    [[ $SLUICE_ALIVE == yes ]] || failed=1
    echo "Sluice alive at the end: $SLUICE_ALIVE"
    if ((failed)); then echo "Result: FAIL"; else echo "Result: PASS"; fi
} | tee "$TMP/results.md"
log "raw outputs in $TMP (wrk-*.log, h2c.log, rss.tsv, reloads.tsv, sluice.log)"
exit "$failed"
