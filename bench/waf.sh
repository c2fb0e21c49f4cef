#!/usr/bin/env bash
# WAF benchmark, on loopback, same traffic mix, same origin, of
#   nginx              nginx as a reverse proxy, no WAF (reference)
#   sluice             Sluice with no filter: the ceiling of any Sluice + WAF row
#   nginx-modsecurity  the same nginx + ModSecurity 3 + OWASP CRS 3.3.4 PL1 (Debian packages)
#   sluice-waf-norules Sluice + filters/out/waf.wasm with no rule (the CRS files mounted)
#   sluice-waf-host    Sluice + filters/out/waf.wasm, same CRS files, host-side matchers
#   sluice-waf-wasm    the same, matchers inside the filter (regex / aho-corasick in wasm)
#   sluice-waf-before  the same with another build of the filter (WAF_WASM_BEFORE), when set
#   *-unique           the row above it again, with a never-seen cookie and query value in
#                      every request (WAF_UNIQUE=1 in waf-mix.lua): no memo can answer for them
# The traffic mix (bench/waf-mix.lua): 12 ordinary requests and 4 attacks (SQLi, XSS,
# path traversal, shell), cycled per connection, all GET with browser-like headers, so
# 25% of answers are 403 from the WAFs.
#
# Like bench/run.sh and bench/tls.sh, every server starts once, each on its own ports, and
# stays up: origin, nginx, nginx-modsecurity, and one Sluice per policy (sluice,
# sluice-waf-norules, sluice-waf-host, sluice-waf-wasm). A *-unique row is another load
# on the server of the row above it (nginx-modsecurity, sluice-waf-wasm), not another
# server (the WAF's memo gives a value a row on its second sight only, so one-off values
# do not flush the other row's; and every measured run follows its own warm-up). Before
# the rounds each row answers a SQLi probe (403 for the WAFs, 200 without one: a note per
# row). Then ROUNDS interleaved rounds: a round runs every row
# once (a warm-up, then `wrk --latency -s bench/waf-mix.lua`, with the CPU time, utime +
# stime from /proc, of the server's process tree read around the measured run: nginx's
# master and workers, or the Sluice process). The row order rotates by one each round, so
# no row always runs first. Per row the table gives the medians over the rounds of rps, p50,
# p99 and CPU per request, the rps ratio of the medians to ModSecurity's (unique rows to
# nginx-modsecurity-unique's), the non-2xx answers over all rounds, and each round's CPU
# per request ("CPU by round", in round order: the spread). The idle servers stay up while
# another row runs (Sluice's timers cost a little CPU); on a shared machine compare rows of
# one run, not runs. Raw outputs (file names end in -rROUND), configs, policies and logs
# stay in /tmp/sluice-waf-bench.XXXXXX; every server is stopped on exit and on Ctrl-C.
#
# Usage: bash bench/waf.sh
#   e.g. BUILD=0 ROUNDS=5 SLUICE_BIN=/tmp/sluice WAF_WASM=/tmp/waf.wasm bash bench/waf.sh
# Knobs (environment):
#   ROUNDS=3               interleaved rounds (each: every row once, order rotated)
#   THREADS=2              nginx worker_processes, Sluice threads
#   ORIGIN_THREADS=$THREADS
#   WRK_THREADS=2 CONNECTIONS=32 DURATION=10s WARMUP=3s   (per row and round)
#   BUILD=1                0: use target/release and filters/out as they are (no cargo)
#   REL=target/release     where sluice-origin is (and sluice, unless SLUICE_BIN)
#   SLUICE_BIN=$REL/sluice the Sluice binary
#   WAF_WASM=filters/out/waf.wasm   the WAF filter every Sluice policy declares
#   WAF_WASM_BEFORE=       another build of the WAF filter (e.g. main's, before a change):
#     when set, row sluice-waf-before runs it as sluice-waf-wasm runs WAF_WASM, in the
#     same rounds (its own server: SLUICE_BEFORE_PORT=SLUICE_PORT+4,
#     SLUICE_BEFORE_ADMIN=SLUICE_ADMIN+4), so an engine change is measured side by side
#   SLUICE_BIN_BEFORE=$SLUICE_BIN   the Sluice binary of row sluice-waf-before (a host
#     change and an engine change measured together against main's pair)
#   SKIP_NGINX=0, SKIP_MODSEC=0, SKIP_SLUICE=0   1: leave those rows out
#   SLUICE_ROWS="sluice sluice-waf-norules sluice-waf-host sluice-waf-wasm sluice-waf-wasm-unique"
#     (the Sluice rows to run, e.g. SLUICE_ROWS=sluice-waf-wasm for the WAF row alone;
#      sluice-waf-wasm-unique alone still starts sluice-waf-wasm's server)
#   READY_SECS=60          how long a server may take to answer after its start (CRS load)
#   ports ORIGIN_PORT=18481 NGINX_PORT=18482 MODSEC_PORT=18483, and per Sluice server
#     SLUICE_PORT=18484 (sluice) SLUICE_NORULES_PORT=SLUICE_PORT+1 SLUICE_HOST_PORT=+2
#     SLUICE_WASM_PORT=+3, admin SLUICE_ADMIN=19941 SLUICE_NORULES_ADMIN=SLUICE_ADMIN+1
#     SLUICE_HOST_ADMIN=+2 SLUICE_WASM_ADMIN=+3 (all distinct: the script checks).
#
# Needs: wrk, curl, nginx, libnginx-mod-http-modsecurity, modsecurity-crs (scripts/setup.sh).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-32}
WARMUP=${WARMUP:-3s}
READY_SECS=${READY_SECS:-60}
ORIGIN_PORT=${ORIGIN_PORT:-18481}
NGINX_PORT=${NGINX_PORT:-18482}
MODSEC_PORT=${MODSEC_PORT:-18483}
SLUICE_PORT=${SLUICE_PORT:-18484}
SLUICE_NORULES_PORT=${SLUICE_NORULES_PORT:-$((SLUICE_PORT + 1))}
SLUICE_HOST_PORT=${SLUICE_HOST_PORT:-$((SLUICE_PORT + 2))}
SLUICE_WASM_PORT=${SLUICE_WASM_PORT:-$((SLUICE_PORT + 3))}
SLUICE_ADMIN=${SLUICE_ADMIN:-19941}
SLUICE_NORULES_ADMIN=${SLUICE_NORULES_ADMIN:-$((SLUICE_ADMIN + 1))}
SLUICE_HOST_ADMIN=${SLUICE_HOST_ADMIN:-$((SLUICE_ADMIN + 2))}
SLUICE_WASM_ADMIN=${SLUICE_WASM_ADMIN:-$((SLUICE_ADMIN + 3))}
SLUICE_BEFORE_PORT=${SLUICE_BEFORE_PORT:-$((SLUICE_PORT + 4))}
SLUICE_BEFORE_ADMIN=${SLUICE_BEFORE_ADMIN:-$((SLUICE_ADMIN + 4))}
WAF_WASM_BEFORE=${WAF_WASM_BEFORE:-}
SLUICE_BIN_BEFORE=${SLUICE_BIN_BEFORE:-}
SKIP_MODSEC=${SKIP_MODSEC:-0}
WAF_WASM=${WAF_WASM:-$ROOT/filters/out/waf.wasm}
SLUICE_ROWS=${SLUICE_ROWS:-sluice sluice-waf-norules sluice-waf-host sluice-waf-wasm sluice-waf-wasm-unique${WAF_WASM_BEFORE:+ sluice-waf-before}}
MIX="$ROOT/bench/waf-mix.lua"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sluice-waf-bench.XXXXXX")
chmod 755 "$TMP"
RESULTS="$TMP/results.md"
BENCH_TAG=waf-bench
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

# ---------------------------------------------------------------- rows and servers

# Every row in the table's order, the server it loads, and that server's ports.
ALL_ROWS=(nginx nginx-modsecurity nginx-modsecurity-unique sluice sluice-waf-norules
    sluice-waf-host sluice-waf-before sluice-waf-wasm sluice-waf-wasm-unique)
declare -A SERVER_OF=(
    [nginx]=nginx [nginx-modsecurity]=nginx-modsecurity [nginx-modsecurity-unique]=nginx-modsecurity
    [sluice]=sluice [sluice-waf-norules]=sluice-waf-norules [sluice-waf-host]=sluice-waf-host
    [sluice-waf-wasm]=sluice-waf-wasm [sluice-waf-wasm-unique]=sluice-waf-wasm
    [sluice-waf-before]=sluice-waf-before
)
declare -A PORT_OF=(
    [nginx]=$NGINX_PORT [nginx-modsecurity]=$MODSEC_PORT [sluice]=$SLUICE_PORT
    [sluice-waf-norules]=$SLUICE_NORULES_PORT [sluice-waf-host]=$SLUICE_HOST_PORT
    [sluice-waf-wasm]=$SLUICE_WASM_PORT [sluice-waf-before]=$SLUICE_BEFORE_PORT
)
declare -A ADMIN_OF=(
    [sluice]=$SLUICE_ADMIN [sluice-waf-norules]=$SLUICE_NORULES_ADMIN
    [sluice-waf-host]=$SLUICE_HOST_ADMIN [sluice-waf-wasm]=$SLUICE_WASM_ADMIN
    [sluice-waf-before]=$SLUICE_BEFORE_ADMIN
)
# The matchers of each Sluice server's policy (sluice_waf).
declare -A MATCHERS_OF=(
    [sluice]=none [sluice-waf-norules]=norules [sluice-waf-host]=host [sluice-waf-wasm]=wasm
    [sluice-waf-before]=wasm
)

# sluice_row NAME: is NAME one of $SLUICE_ROWS?
sluice_row() { [[ " $SLUICE_ROWS " == *" $1 "* ]]; }

# wanted_row NAME: is row NAME to be run (SKIP_*, SLUICE_ROWS)?
wanted_row() {
    case $1 in
        nginx) [[ $SKIP_NGINX != 1 ]] ;;
        nginx-modsecurity*) [[ $SKIP_MODSEC != 1 ]] ;;
        sluice*) [[ $SKIP_SLUICE != 1 ]] && sluice_row "$1" ;;
    esac
}

# ---------------------------------------------------------------- servers

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

# sluice_waf NAME MATCHERS PORT ADMIN MODULE (MATCHERS "none": the same Sluice with no
# filter, the ceiling)
sluice_waf() {
    local name=$1 matchers=$2 port=$3 admin=$4 module=$5 policy="$TMP/$1.toml" chain='["waf"]'
    local rules='"/etc/nginx/modsecurity.conf", "/etc/modsecurity/crs/crs-setup.conf",
                    "/etc/modsecurity/crs/REQUEST-900-EXCLUSION-RULES-BEFORE-CRS.conf",
                    "/usr/share/modsecurity-crs/rules/*.conf",
                    "/etc/modsecurity/crs/RESPONSE-999-EXCLUSION-RULES-AFTER-CRS.conf"'
    # "none": the filter stays declared (loaded, configured) but the route runs no filter.
    [[ $matchers == none ]] && chain='[]' && matchers=wasm
    # "norules": the filter runs with no rule at all: what any filter costs on each request.
    [[ $matchers == norules ]] && rules='' && matchers=wasm
    {
        sluice_server "$port" "$admin"
        cat <<EOF

[limits]
memory_mb = 256
startup_ms = 60000
callback_ms = 1000

[pools.origin]
peers = ["127.0.0.1:$ORIGIN_PORT"]

[filters.waf]
module = "$module"
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
    SLUICE_LOG=${SLUICE_LOG:-warn} start_bg "$name" "$(bin_of "$name")" run --policy "$policy"
}

# start_server NAME: starts server NAME and waits until it proxies /hello.txt to the
# origin (READY_SECS: the WAFs load the CRS first).
start_server() {
    local name=$1
    case $name in
        nginx) nginx_conf nginx "$NGINX_PORT" 0 ;;
        nginx-modsecurity) nginx_conf nginx-modsecurity "$MODSEC_PORT" 1 ;;
        sluice*) sluice_waf "$name" "${MATCHERS_OF[$name]}" "${PORT_OF[$name]}" "${ADMIN_OF[$name]}" "$(module_of "$name")" ;;
        *) die "unknown server $name" ;;
    esac || return 1
}

# module_of SERVER: the WAF module a Sluice server's policy declares.
module_of() { if [[ $1 == sluice-waf-before ]]; then echo "$WAF_WASM_BEFORE"; else echo "$WAF_WASM"; fi; }
# bin_of NAME: the Sluice binary that runs row NAME.
bin_of() { if [[ $1 == sluice-waf-before && -n $SLUICE_BIN_BEFORE ]]; then echo "$SLUICE_BIN_BEFORE"; else echo "$SLUICE_BIN"; fi; }

# ready_server NAME: until NAME answers /hello.txt (Host: localhost) through to the origin.
ready_server() {
    wait_ready "$1" "http://127.0.0.1:${PORT_OF[$1]}/hello.txt" -H 'Host: localhost'
}

# ---------------------------------------------------------------- measuring

# seconds 10s|2m|10 -> whole seconds (for timeouts).
seconds() {
    awk -v v="$1" 'BEGIN { n = v; sub(/[a-z]+$/, "", n); u = v; sub(/^[0-9.]+/, "", u);
        if (u == "m") n *= 60; else if (u == "h") n *= 3600; printf "%d", n + 0.999 }'
}

# wrk_timed SECS OUT WRK_ARGS...: wrk WRK_ARGS into OUT, killed if still running after
# SECS + 60 s; wrk's status. --foreground keeps wrk in the terminal's process group, so
# Ctrl-C reaches it (wrk stops, then the INT trap ends the script and stops every server).
wrk_timed() {
    local secs=$1 out=$2
    shift 2
    timeout --foreground -k 5 "$((secs + 60))" wrk "$@" >"$out" 2>&1
}

# Per row, one value per round (space-separated, in round order): rps, p50, p99 (ms) of
# the rounds that measured; CPU ms/request of every round (n/a when not measured).
declare -A RPS_L=() P50_L=() P99_L=() CPU_R=() NON2XX=() REQS=() FAILED=()
declare -a ROUND_ORDERS=()

# round_failed ROW ROUND REASON: a round without figures, and why.
round_failed() {
    CPU_R[$1]+="n/a "
    note "$1, round $2: no figures ($3)"
}

# measure ROW ROUND: warm-up, then one measured wrk run of the mix against ROW's server,
# with the CPU ticks of the server's process tree read around the measured run.
measure() {
    local row=$1 round=$2 server url out t0 t1 rps p50 p99 n non2xx errs rc=0
    server=${SERVER_OF[$row]}
    url="http://127.0.0.1:${PORT_OF[$server]}"
    out="$TMP/wrk-$row-r$round.txt"
    # *-unique rows: every request carries a never-seen cookie and query value (waf-mix.lua)
    if [[ $row == *-unique ]]; then export WAF_UNIQUE=1; else unset WAF_UNIQUE; fi
    log "round $round/$ROUNDS, $row: warm-up $WARMUP, then $DURATION, -t$WRK_THREADS -c$CONNECTIONS ($url)"
    wrk_timed "$(seconds "$WARMUP")" "${out%.txt}-warmup.txt" \
        -d"$WARMUP" -t"$WRK_THREADS" -c"$CONNECTIONS" -s "$MIX" "$url" || true
    t0=$(proc_ticks "${PID_OF[$server]}")
    wrk_timed "$(seconds "$DURATION")" "$out" \
        -d"$DURATION" --latency -t"$WRK_THREADS" -c"$CONNECTIONS" -s "$MIX" "$url" || rc=$?
    t1=$(proc_ticks "${PID_OF[$server]}")
    if ! still_running "$server"; then
        FAILED[$server]="exited"
        round_failed "$row" "$round" "$server exited during the run"
        return 0
    fi
    if ((rc != 0)); then
        round_failed "$row" "$round" "wrk failed or timed out (status $rc), see $out"
        return 0
    fi
    rps=$(wrk_stat "$out" rps)
    p50=$(wrk_stat "$out" p50)
    p99=$(wrk_stat "$out" p99)
    n=$(wrk_stat "$out" requests)
    if [[ -z $rps || -z $p50 || -z $p99 || -z $n ]]; then
        round_failed "$row" "$round" "could not parse $out"
        return 0
    fi
    non2xx=$(wrk_stat "$out" non2xx)
    # Non-2xx answers are expected (the mix's attacks): the column counts them. Socket
    # errors are not: a note.
    errs=$(grep -E 'Socket errors' "$out" | sed 's/^ *//' || true)
    [[ -z $errs ]] || note "$row, round $round: $errs"
    RPS_L[$row]+="$(printf '%.0f' "$rps") "
    P50_L[$row]+="$(to_ms "$p50") "
    P99_L[$row]+="$(to_ms "$p99") "
    CPU_R[$row]+="$(awk -v d="$((t1 - t0))" -v hz="$HZ" -v n="$n" 'BEGIN { printf "%.3f", (n > 0) ? 1000 * d / hz / n : 0 }') "
    NON2XX[$row]=$((${NON2XX[$row]:-0} + ${non2xx:-0}))
    REQS[$row]=$((${REQS[$row]:-0} + n))
}

# ---------------------------------------------------------------- report

# med LIST: the median of the numbers in the space-separated LIST (n/a for none).
med() { tr ' ' '\n' <<<"${1:-}" | awk '$1 ~ /^[0-9]+(\.[0-9]+)?$/' | median; }
# fmt VALUE FORMAT: printf FORMAT VALUE, or n/a when VALUE is not a number.
fmt() { awk -v v="$1" -v f="$2" 'BEGIN { if (v ~ /^[0-9]+(\.[0-9]+)?$/) printf f, v; else print "n/a" }'; }
# ratio1 A B: A / B with 1 decimal and an x (n/a when either is missing or B is 0).
ratio1() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.1fx", a / b; else print "n/a" }'
}

print_table() {
    local row rps base cpu rounds modsec_rps modsec_unique_rps non2xx
    modsec_rps=$(med "${RPS_L[nginx-modsecurity]:-}")
    modsec_unique_rps=$(med "${RPS_L[nginx-modsecurity-unique]:-}")
    echo "Medians over $ROUNDS interleaved round(s); CPU by round: each round's server CPU ms per request, rounds 1..$ROUNDS."
    echo
    echo "| target | rps | p50 | p99 | rps vs ModSecurity | non-2xx | server CPU per request | CPU by round |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for row in "${ROWS_RUN[@]}"; do
        rps=$(med "${RPS_L[$row]:-}")
        cpu=$(med "${CPU_R[$row]:-}")
        # unique rows compare with ModSecurity on the same unique traffic
        base=$modsec_rps
        [[ $row == *-unique ]] && base=$modsec_unique_rps
        rounds=$(awk '{ $1 = $1; gsub(/ /, ", "); print }' <<<"${CPU_R[$row]:-}")
        non2xx="n/a"
        [[ -z ${REQS[$row]:-} ]] || non2xx="${NON2XX[$row]} of ${REQS[$row]}"
        echo "| $row | $(fmt "$rps" %.0f) | $(fmt "$(med "${P50_L[$row]:-}")" '%.2f ms') | $(fmt "$(med "${P99_L[$row]:-}")" '%.2f ms') | $(ratio1 "$rps" "$base") | $non2xx | $(fmt "$cpu" '%.3f ms') | ${rounds:-n/a} |"
    done
    echo
    for row in "${ROUND_ORDERS[@]}"; do echo "- $row"; done
    for row in "${NOTES[@]}"; do echo "- $row"; done
    echo
    echo "Command: BUILD=$BUILD ROUNDS=$ROUNDS THREADS=$THREADS ORIGIN_THREADS=$ORIGIN_THREADS WRK_THREADS=$WRK_THREADS CONNECTIONS=$CONNECTIONS DURATION=$DURATION WARMUP=$WARMUP SKIP_NGINX=$SKIP_NGINX SKIP_MODSEC=$SKIP_MODSEC SKIP_SLUICE=$SKIP_SLUICE SLUICE_ROWS=\"$SLUICE_ROWS\" SLUICE_BIN=$SLUICE_BIN WAF_WASM=$WAF_WASM${WAF_WASM_BEFORE:+ WAF_WASM_BEFORE=$WAF_WASM_BEFORE}${SLUICE_BIN_BEFORE:+ SLUICE_BIN_BEFORE=$SLUICE_BIN_BEFORE} bash bench/waf.sh"
}

# ---------------------------------------------------------------- main

command -v wrk >/dev/null || die "wrk not found (scripts/setup.sh)"
command -v curl >/dev/null || die "curl not found (scripts/setup.sh)"
command -v nginx >/dev/null || die "nginx not found (scripts/setup.sh)"
[[ -f /usr/share/modsecurity-crs/rules/REQUEST-942-APPLICATION-ATTACK-SQLI.conf ]] || die "modsecurity-crs not installed"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
for row in $SLUICE_ROWS; do
    [[ -n ${SERVER_OF[$row]:-} && $row == sluice* ]] || die "unknown Sluice row $row in SLUICE_ROWS"
done
ulimit -n 65536 2>/dev/null || true
if [[ $BUILD == 1 ]]; then
    (cd "$ROOT" && cargo build --release -p sluice-origin -p sluice && filters/build.sh)
fi
[[ -x $REL/sluice-origin ]] || die "$REL/sluice-origin missing (cargo build --release -p sluice-origin, or REL=)"
HZ=$(getconf CLK_TCK)

# The rows to run, and the servers they need (in start order).
ROWS_RUN=()
SERVERS=()
for row in "${ALL_ROWS[@]}"; do
    wanted_row "$row" || continue
    ROWS_RUN+=("$row")
    [[ " ${SERVERS[*]} " == *" ${SERVER_OF[$row]} "* ]] || SERVERS+=("${SERVER_OF[$row]}")
done
((${#ROWS_RUN[@]} > 0)) || die "no row to run (SKIP_*, SLUICE_ROWS)"
ports=("$ORIGIN_PORT")
for server in "${SERVERS[@]}"; do
    ports+=("${PORT_OF[$server]}")
    [[ -z ${ADMIN_OF[$server]:-} ]] || ports+=("${ADMIN_OF[$server]}")
done
dup=$(printf '%s\n' "${ports[@]}" | sort | uniq -d | paste -sd ' ' -)
[[ -z $dup ]] || die "port(s) $dup given to two servers (every server has its own ports: see the *_PORT and *_ADMIN knobs)"
check_ports "${ports[@]}"

log "results and logs: $TMP"
{
    env_lines
    echo "rounds:   $ROUNDS interleaved (every row once per round, order rotated)"
    echo "wrk:      -t$WRK_THREADS -c$CONNECTIONS -d$DURATION --latency -s bench/waf-mix.lua (warm-up $WARMUP)"
    echo "threads:  proxies $THREADS, origin $ORIGIN_THREADS"
    echo "sluice:   $SLUICE_BIN ($(stat -c '%y' "$SLUICE_BIN" 2>/dev/null | cut -d. -f1 || echo missing))"
    echo "waf:      $WAF_WASM ($(stat -c '%y' "$WAF_WASM" 2>/dev/null | cut -d. -f1 || echo missing))"
    [[ -z $SLUICE_BIN_BEFORE ]] || echo "sluice before: $SLUICE_BIN_BEFORE ($(stat -c '%y' "$SLUICE_BIN_BEFORE" 2>/dev/null | cut -d. -f1 || echo missing))"
    [[ -z $WAF_WASM_BEFORE ]] || echo "before:   $WAF_WASM_BEFORE ($(stat -c '%y' "$WAF_WASM_BEFORE" 2>/dev/null | cut -d. -f1 || echo missing))"
    echo "crs:      $(dpkg-query -W -f '${Version}' modsecurity-crs 2>/dev/null || echo unknown), ModSecurity $(dpkg-query -W -f '${Version}' libmodsecurity3 2>/dev/null || echo unknown)"
} | tee "$TMP/env.txt" >&2

warn_if_busy

# Every server starts once, on its own ports, and stays up for all rounds.
start_origin
READY_SECS=15 wait_ready origin "http://127.0.0.1:$ORIGIN_PORT/healthz" || die "the origin did not start"
active=()
for server in "${SERVERS[@]}"; do
    if [[ $server == sluice* ]]; then
        if [[ ! -x $(bin_of "$server") ]]; then
            FAILED[$server]="$(bin_of "$server") missing"
            continue
        fi
        if [[ ! -f $(module_of "$server") ]]; then
            FAILED[$server]="$(module_of "$server") is not built (filters/build.sh)"
            continue
        fi
    fi
    if start_server "$server"; then
        active+=("$server")
    else
        FAILED[$server]="did not start, see $TMP/$server.log"
    fi
done
# Wait for them all (the WAFs load the CRS meanwhile, in parallel).
for server in "${active[@]}"; do
    if ! ready_server "$server"; then
        FAILED[$server]="did not answer within $READY_SECS s, see $TMP/$server.log"
        stop "$server"
    fi
done
log "servers: ${active[*]}"

# The rows whose servers run, each checked once: the WAFs must block the mix's attacks,
# the others must not.
measured=()
for row in "${ROWS_RUN[@]}"; do
    server=${SERVER_OF[$row]}
    if [[ -n ${FAILED[$server]:-} ]]; then
        note "$row: skipped (${FAILED[$server]})"
        continue
    fi
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -H 'Host: localhost' \
        "http://127.0.0.1:${PORT_OF[$server]}/echo?id=1%27+or+%271%27%3D%271" || true)
    NOTES+=("$row answers the SQLi probe with $code")
    measured+=("$row")
done

n=${#measured[@]}
for ((round = 1; round <= ROUNDS && n > 0; round++)); do
    # rotate the order by one each round: no row always runs first or last
    order=()
    for ((i = 0; i < n; i++)); do
        order+=("${measured[$(((i + round - 1) % n))]}")
    done
    ROUND_ORDERS+=("round $round: $(IFS=,; echo "${order[*]}" | sed 's/,/, /g')")
    log "round $round/$ROUNDS: ${order[*]}"
    for row in "${order[@]}"; do
        server=${SERVER_OF[$row]}
        if ! still_running origin; then
            note "the origin exited in round $round: the table has the rounds before"
            break 2
        fi
        if [[ -n ${FAILED[$server]:-} ]] || ! still_running "$server"; then
            FAILED[$server]=${FAILED[$server]:-exited}
            CPU_R[$row]+="n/a "
            continue
        fi
        measure "$row" "$round"
    done
done

for server in "${active[@]}"; do
    stop "$server"
done
stop origin
note "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min; at the start: $(awk '/^load:/ { print $2, $3, $4 }' "$TMP/env.txt"))"

echo
{
    cat "$TMP/env.txt"
    echo
    print_table
} | tee "$RESULTS"
echo
log "raw outputs (-rROUND), configs, policies, logs and results.md: $TMP"
