#!/usr/bin/env bash
# WAF benchmark: one run, on loopback, same traffic mix, same origin, of
#   nginx              nginx as a reverse proxy, no WAF (reference)
#   sluice             Sluice with no filter: the ceiling of any Sluice + WAF row
#   nginx-modsecurity  the same nginx + ModSecurity 3 + OWASP CRS 3.3.4 PL1 (Debian packages)
#   sluice-waf-host    Sluice + filters/out/waf.wasm, same CRS files, host-side matchers
#   sluice-waf-wasm    the same, matchers inside the filter (regex / aho-corasick in wasm)
#   *-unique           the row above it again, with a never-seen cookie and query value in
#                      every request (WAF_UNIQUE=1 in waf-mix.lua): no memo can answer for them
# The traffic mix (bench/waf-mix.lua): 12 ordinary requests and 4 attacks (SQLi, XSS,
# path traversal, shell), cycled per connection, all GET with browser-like headers, so
# 25% of answers are 403 from the WAFs. Each target gets a warm-up, then `wrk --latency`;
# the script prints a Markdown table (rps, p50, p99, rps vs ModSecurity) and keeps raw
# wrk outputs, configs and logs in a temp dir whose path it prints. The last column is the
# CPU time the server (nginx master + workers, or the Sluice process) spent per request
# during the measured run: on a shared machine it is steadier than rps.
#
# Usage: bash bench/waf.sh
# Knobs (environment): THREADS=2 (nginx worker_processes, Sluice threads), ORIGIN_THREADS,
#   WRK_THREADS=2 CONNECTIONS=32 DURATION=10s WARMUP=3s, BUILD=1 (0: use target/release
#   and filters/out as they are), SKIP_NGINX=0, SKIP_MODSEC=0, SKIP_SLUICE=0,
#   SLUICE_ROWS="sluice sluice-waf-norules sluice-waf-host sluice-waf-wasm sluice-waf-wasm-unique"
#   (the Sluice rows to run, e.g. SLUICE_ROWS=sluice-waf-wasm for the WAF row alone),
#   ports ORIGIN_PORT=18481 NGINX_PORT=18482 MODSEC_PORT=18483 SLUICE_PORT=18484 SLUICE_ADMIN=19941.
#
# Needs: wrk, nginx, libnginx-mod-http-modsecurity, modsecurity-crs (scripts/setup.sh).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONNECTIONS=${CONNECTIONS:-32}
WARMUP=${WARMUP:-3s}
ORIGIN_PORT=${ORIGIN_PORT:-18481}
NGINX_PORT=${NGINX_PORT:-18482}
MODSEC_PORT=${MODSEC_PORT:-18483}
SLUICE_PORT=${SLUICE_PORT:-18484}
SLUICE_ADMIN=${SLUICE_ADMIN:-19941}
SKIP_MODSEC=${SKIP_MODSEC:-0}
WAF_WASM=${WAF_WASM:-$ROOT/filters/out/waf.wasm}
MIX="$ROOT/bench/waf-mix.lua"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sluice-waf-bench.XXXXXX")
chmod 755 "$TMP"
RESULTS="$TMP/results.md"
BENCH_TAG=waf-bench
ROW_NA="n/a|n/a|n/a||n/a|n/a" # rows: "name|rps|p50|p99|ratio|non-2xx|cpu"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

# ready_target NAME PORT (run_target): /hello.txt through the proxy (60 s: the WAFs load
# the CRS first).
ready_target() { READY_SECS=60 wait_ready "$1" "http://127.0.0.1:$2/hello.txt" -H 'Host: localhost'; }

# nginx_conf NAME PORT MODSEC(0|1)
nginx_conf() {
    local name=$1 port=$2 modsec=$3 dir="$TMP/$1" load="" on=""
    mkdir -p "$dir/logs"
    chmod 1777 "$dir/logs"
    if [[ $modsec == 1 ]]; then
        # Debian's base config (request body processors, limits), then the engine on,
        # Debian's audit defaults (RelevantOnly: blocked requests) into our temp dir,
        # then the CRS as Debian installs it (waf.md §4).
        cat >"$dir/modsec.conf" <<EOF
Include /etc/nginx/modsecurity.conf
SecRuleEngine On
SecAuditLog $dir/logs/modsec_audit.log
Include /etc/modsecurity/crs/crs-setup.conf
Include /etc/modsecurity/crs/REQUEST-900-EXCLUSION-RULES-BEFORE-CRS.conf
Include /usr/share/modsecurity-crs/rules/*.conf
Include /etc/modsecurity/crs/RESPONSE-999-EXCLUSION-RULES-AFTER-CRS.conf
EOF
        load="load_module /usr/lib/nginx/modules/ngx_http_modsecurity_module.so;"
        on="modsecurity on; modsecurity_rules_file $dir/modsec.conf;"
    fi
    {
        echo "$load"
        nginx_head "$dir"
        echo "    server {"
        echo "        listen 127.0.0.1:$port;"
        echo "        $on"
        nginx_proxy_location
        echo "    }"
        echo "}"
    } >"$dir/nginx.conf"
    start_nginx_conf "$name" "$dir" "$dir/nginx.conf"
}

# sluice_waf NAME MATCHERS (MATCHERS "none": the same Sluice with no filter, the ceiling)
sluice_waf() {
    local name=$1 matchers=$2 policy="$TMP/$1.toml" chain='["waf"]'
    local rules='"/etc/nginx/modsecurity.conf", "/etc/modsecurity/crs/crs-setup.conf",
                    "/etc/modsecurity/crs/REQUEST-900-EXCLUSION-RULES-BEFORE-CRS.conf",
                    "/usr/share/modsecurity-crs/rules/*.conf",
                    "/etc/modsecurity/crs/RESPONSE-999-EXCLUSION-RULES-AFTER-CRS.conf"'
    # "none": the filter stays declared (loaded, configured) but the route runs no filter.
    [[ $matchers == none ]] && chain='[]' && matchers=wasm
    # "norules": the filter runs with no rule at all: what any filter costs on each request.
    [[ $matchers == norules ]] && rules='' && matchers=wasm
    {
        sluice_server "$SLUICE_PORT" "$SLUICE_ADMIN"
        cat <<EOF

[limits]
memory_mb = 256
startup_ms = 60000
callback_ms = 1000

[pools.origin]
peers = ["127.0.0.1:$ORIGIN_PORT"]

[filters.waf]
module = "$WAF_WASM"
files = ["/etc/nginx/modsecurity.conf", "/etc/modsecurity/crs/crs-setup.conf",
         "/etc/modsecurity/crs/REQUEST-900-EXCLUSION-RULES-BEFORE-CRS.conf",
         "/usr/share/modsecurity-crs/rules/*.conf",
         "/etc/modsecurity/crs/RESPONSE-999-EXCLUSION-RULES-AFTER-CRS.conf",
         "/usr/share/modsecurity-crs/rules/*.data"]
config = { rules = [$rules], mode = "block", status = 403, paranoia = 1, matchers = "$matchers" }

[[routes]]
path_prefix = "/"
filters = $chain
pool = "origin"
EOF
    } >"$policy"
    SLUICE_LOG=${SLUICE_LOG:-warn} start_bg "$name" "$SLUICE_BIN" run --policy "$policy"
}

MODSEC_RPS=""
MODSEC_UNIQUE_RPS=""
# bench_target NAME PORT (run_target): a sanity probe, then the mix.
bench_target() {
    local name=$1 port=$2 out rps p50 p99 non2xx total code cpu
    local url="http://127.0.0.1:$port"
    # Sanity: the WAFs must block the mix's attacks, the reference must not.
    code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: localhost' "$url/echo?id=1%27+or+%271%27%3D%271")
    NOTES+=("$name answers the SQLi probe with $code")
    # *-unique rows: every request carries a never-seen cookie and query value (waf-mix.lua)
    if [[ $name == *-unique ]]; then export WAF_UNIQUE=1; else unset WAF_UNIQUE; fi
    log "$name: warm-up $WARMUP, then $DURATION, $CONNECTIONS connections, mix $MIX"
    out="$TMP/wrk-$name.txt"
    local t0 t1 hz
    wrk_warmup "$out" -t"$WRK_THREADS" -c"$CONNECTIONS" -s "$MIX" "$url"
    t0=$(proc_ticks "${PID_OF[$name]}")
    if ! wrk_measure "$out" -t"$WRK_THREADS" -c"$CONNECTIONS" -s "$MIX" "$url"; then
        skip_row "$name" "wrk failed, see $out"
        return 0
    fi
    t1=$(proc_ticks "${PID_OF[$name]}")
    hz=$(getconf CLK_TCK)
    rps=$(printf '%.0f' "$(wrk_stat "$out" rps)")
    p50=$(wrk_stat "$out" p50)
    p99=$(wrk_stat "$out" p99)
    non2xx=$(wrk_stat "$out" non2xx)
    total=$(wrk_stat "$out" requests)
    [[ $name == nginx-modsecurity ]] && MODSEC_RPS=$rps
    [[ $name == nginx-modsecurity-unique ]] && MODSEC_UNIQUE_RPS=$rps
    cpu=$(awk -v d="$((t1 - t0))" -v hz="$hz" -v n="$total" 'BEGIN { printf "%.3f", (n > 0) ? 1000 * d / hz / n : 0 }')
    ROWS+=("$name|$rps|$(to_ms "$p50") ms|$(to_ms "$p99") ms||${non2xx:-0} of $total|$cpu ms")
}

command -v wrk >/dev/null || die "wrk not found (scripts/setup.sh)"
command -v nginx >/dev/null || die "nginx not found (scripts/setup.sh)"
[[ -f /usr/share/modsecurity-crs/rules/REQUEST-942-APPLICATION-ATTACK-SQLI.conf ]] || die "modsecurity-crs not installed"
ulimit -n 65536 2>/dev/null || true
if [[ $BUILD == 1 ]]; then
    (cd "$ROOT" && cargo build --release -p sluice-origin -p sluice && filters/build.sh)
fi
check_ports "$ORIGIN_PORT" "$NGINX_PORT" "$MODSEC_PORT" "$SLUICE_PORT" "$SLUICE_ADMIN"

start_origin
[[ $SKIP_NGINX == 1 ]] || run_target nginx "$NGINX_PORT" nginx_conf nginx "$NGINX_PORT" 0
if [[ $SKIP_MODSEC != 1 ]]; then
    run_target nginx-modsecurity "$MODSEC_PORT" nginx_conf nginx-modsecurity "$MODSEC_PORT" 1
    run_target nginx-modsecurity-unique "$MODSEC_PORT" nginx_conf nginx-modsecurity-unique "$MODSEC_PORT" 1
fi
SLUICE_ROWS=${SLUICE_ROWS:-sluice sluice-waf-norules sluice-waf-host sluice-waf-wasm sluice-waf-wasm-unique}
# sluice_row NAME: is NAME one of $SLUICE_ROWS?
sluice_row() { [[ " $SLUICE_ROWS " == *" $1 "* ]]; }
if [[ $SKIP_SLUICE != 1 ]]; then
    sluice_row sluice && run_target sluice "$SLUICE_PORT" sluice_waf sluice none
    sluice_row sluice-waf-norules && run_target sluice-waf-norules "$SLUICE_PORT" sluice_waf sluice-waf-norules norules
    if [[ -f $WAF_WASM ]]; then
        sluice_row sluice-waf-host && run_target sluice-waf-host "$SLUICE_PORT" sluice_waf sluice-waf-host host
        sluice_row sluice-waf-wasm && run_target sluice-waf-wasm "$SLUICE_PORT" sluice_waf sluice-waf-wasm wasm
        sluice_row sluice-waf-wasm-unique && run_target sluice-waf-wasm-unique "$SLUICE_PORT" sluice_waf sluice-waf-wasm-unique wasm
    else
        NOTES+=("Sluice rows skipped: $WAF_WASM is not built (filters/build.sh)")
    fi
fi

{
    echo "| target | rps | p50 | p99 | rps vs ModSecurity | non-2xx | server CPU per request |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for row in "${ROWS[@]}"; do
        IFS='|' read -r name rps p50 p99 ratio non2xx cpu <<<"$row"
        # unique rows compare with ModSecurity on the same unique traffic
        base=$MODSEC_RPS
        [[ $name == *-unique ]] && base=$MODSEC_UNIQUE_RPS
        if [[ -z $ratio && -n $base && $base != 0 && $rps != n/a ]]; then
            ratio=$(awk -v a="$rps" -v b="$base" 'BEGIN { printf "%.1fx", a / b }')
        fi
        echo "| $name | $rps | $p50 | $p99 | ${ratio:-n/a} | $non2xx | $cpu |"
    done
    echo
    for n in "${NOTES[@]}"; do echo "- $n"; done
    echo
    echo "Command: THREADS=$THREADS WRK_THREADS=$WRK_THREADS CONNECTIONS=$CONNECTIONS DURATION=$DURATION bash bench/waf.sh"
} | tee "$RESULTS"
log "raw outputs in $TMP"
