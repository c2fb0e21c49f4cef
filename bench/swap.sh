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
# Usage: bash bench/swap.sh   (knobs: N=20 DURATION=10s CONNECTIONS=64 SWAP_EVERY=0.1
#        WAF_SWAPS=10 SLUICE_BIN=target/release/sluice ONLY_WAF=0)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REL="$ROOT/target/release"
N=${N:-20}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
SWAP_EVERY=${SWAP_EVERY:-0.1}
ORIGIN=127.0.0.1:18181 LISTEN=127.0.0.1:18184 ADMIN=127.0.0.1:19984
WAF_SWAPS=${WAF_SWAPS:-10}
SLUICE_BIN=${SLUICE_BIN:-$REL/sluice}
ONLY_WAF=${ONLY_WAF:-0}
WAF_LISTEN=127.0.0.1:18185 WAF_ADMIN=127.0.0.1:19985
for b in "$SLUICE_BIN" "$REL/sluice-origin"; do [[ -x "$b" ]] || { echo "build first: cargo build --release --workspace" >&2; exit 1; }; done
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
TMP=$(mktemp -d /tmp/sluice-swap.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

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
    cat <<EOF2
[server]
listen = ["$LISTEN"]
admin = "$ADMIN"
threads = 2
[pools.o]
peers = ["$ORIGIN"]
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

"$REL/sluice-origin" --listen "$ORIGIN" --threads 2 >/dev/null 2>&1 & pids+=($!)
policy "$TMP/h1.wasm" one > "$TMP/policy.toml"
if [[ "$ONLY_WAF" != 1 ]]; then
SLUICE_CACHE_DIR=off SLUICE_LOG=warn "$SLUICE_BIN" run --policy "$TMP/policy.toml" >/dev/null 2>"$TMP/sluice.log" & pids+=($!)
for _ in $(seq 100); do curl -sf "http://$ADMIN/healthz" >/dev/null && break; sleep 0.1; done

reload_ms() { curl -s -o /dev/null -w '%{time_total}\n' -X POST "http://$ADMIN/admin/reload" | awk '{printf "%.2f\n", $1*1000}'; }
stats() { sort -n | awk '{a[NR]=$1} END {printf "%.2f ms | %.2f ms", a[int((NR+1)/2)], a[int(NR*0.99+0.99)]}'; }

echo "swap latency, $N swaps each (POST /admin/reload returns once the new generation serves)"
for i in $(seq "$N"); do policy "$TMP/h1.wasm" "c$i" > "$TMP/policy.toml"; reload_ms; done > "$TMP/config.txt"
for i in $(seq "$N"); do policy "$TMP/m$i.wasm" "m$i" > "$TMP/policy.toml"; reload_ms; done > "$TMP/module.txt"
echo "| swap | median | p99 |"
echo "|---|---:|---:|"
echo "| config only (modules cached) | $(stats < "$TMP/config.txt") |"
echo "| module change (compile, cache off) | $(stats < "$TMP/module.txt") |"

curl -sf "http://$LISTEN/hello.txt" >/dev/null
wrk_run() { wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "http://$LISTEN/hello.txt" > "$TMP/$1.txt"; }
lat() { awk -v k="$2" '$1==k {print $2}' "$TMP/$1.txt"; }
rps() { awk '/Requests\/sec/ {print $2}' "$TMP/$1.txt"; }
non2xx() { awk '/Non-2xx/ {print $NF}' "$TMP/$1.txt"; }
wrk -t2 -c"$CONNECTIONS" -d2s "http://$LISTEN/hello.txt" >/dev/null
wrk_run steady
( i=0; end=$((SECONDS + ${DURATION%s} + 1)); while ((SECONDS < end)); do
    i=$((i+1)); policy "$TMP/h1.wasm" "s$i" > "$TMP/policy.toml"
    curl -s -o /dev/null -X POST "http://$ADMIN/admin/reload"; sleep "$SWAP_EVERY"; done; echo "$i" > "$TMP/swaps" ) &
storm=$!
wrk_run storm
wait "$storm"
echo
echo "traffic, wrk -t2 -c$CONNECTIONS -d$DURATION, 2-filter chain; storm: $(cat "$TMP/swaps") swaps in the run"
echo "| state | rps | p50 | p99 | non-2xx |"
echo "|---|---:|---:|---:|---:|"
for s in steady storm; do echo "| $s | $(rps $s) | $(lat $s 50%) | $(lat $s 99%) | $(non2xx $s || true) |"; done
fi

# 3. First request after a WAF swap, under light load (one request every 20 ms).
[[ "$ONLY_WAF" == 1 ]] && { "$REL/sluice-origin" --listen "$ORIGIN" --threads 2 >/dev/null 2>&1 & pids+=($!); }
cat > "$TMP/waf.toml" <<EOF2
[server]
listen = ["$WAF_LISTEN"]
admin = "$WAF_ADMIN"
threads = 2
[pools.o]
peers = ["$ORIGIN"]
[filters.waf]
module = "$ROOT/filters/out/waf.wasm"
memory_mb = 256
startup_ms = 60000
files = ["/etc/nginx/modsecurity.conf", "/etc/modsecurity/crs/crs-setup.conf",
         "/usr/share/modsecurity-crs/rules/*.conf", "/usr/share/modsecurity-crs/rules/*.data"]
config = { rules = ["/etc/nginx/modsecurity.conf", "/etc/modsecurity/crs/crs-setup.conf",
                    "/usr/share/modsecurity-crs/rules/*.conf"], mode = "block", paranoia = 1 }
[[routes]]
filters = ["waf"]
pool = "o"
EOF2
SLUICE_LOG=warn "$SLUICE_BIN" run --policy "$TMP/waf.toml" >/dev/null 2>"$TMP/waf.log" & pids+=($!)
# The traffic listener opens once every worker has its WAF VMs.
for _ in $(seq 600); do curl -s -o /dev/null "http://$WAF_LISTEN/hello.txt" && break; sleep 0.1; done
get_ms() { curl -s -o /dev/null -w '%{time_total}\n' "http://$WAF_LISTEN/hello.txt?q=$1" | awk '{printf "%.1f\n", $1*1000}'; }
for _ in $(seq 20); do get_ms warm >/dev/null; done
( while :; do curl -s -o /dev/null "http://$WAF_LISTEN/hello.txt?q=light"; sleep 0.02; done ) & light=$!; pids+=($light)
: > "$TMP/waf-reload.txt"; : > "$TMP/waf-first.txt"; : > "$TMP/waf-next.txt"
for i in $(seq "$WAF_SWAPS"); do
    curl -s -o /dev/null -w '%{time_total}\n' -X POST "http://$WAF_ADMIN/admin/reload" | awk '{printf "%.0f\n", $1*1000}' >> "$TMP/waf-reload.txt"
    get_ms "first$i" >> "$TMP/waf-first.txt"
    get_ms "next$i" >> "$TMP/waf-next.txt"
    sleep 1
done
kill "$light" 2>/dev/null || true
mx() { sort -n | tail -1; }
echo
echo "WAF policy (CRS, threads = 2), $WAF_SWAPS reloads under light load ($SLUICE_BIN)"
echo "| after each swap | median | max |"
echo "|---|---:|---:|"
echo "| POST /admin/reload | $(sort -n "$TMP/waf-reload.txt" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}') ms | $(mx < "$TMP/waf-reload.txt") ms |"
echo "| first request | $(sort -n "$TMP/waf-first.txt" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}') ms | $(mx < "$TMP/waf-first.txt") ms |"
echo "| second request | $(sort -n "$TMP/waf-next.txt" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}') ms | $(mx < "$TMP/waf-next.txt") ms |"
echo "first-request latencies (ms): $(tr '\n' ' ' < "$TMP/waf-first.txt")"
echo "raw: $TMP"
