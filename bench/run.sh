#!/usr/bin/env bash
# Sluice benchmark (issue #18: what a request costs), on loopback:
#   origin              the demo origin (sluice-origin) hit directly: the reference
#   nginx               nginx as a reverse proxy to the origin
#   bare-pingora        a filter-less Pingora proxy: what the framework costs
#   sluice-empty        Sluice with a route that runs no filter
#   sluice-one          Sluice with one `headers` filter (sets a request and a response header)
#   sluice-three        Sluice with three such filters
#   sluice-spread       the empty chain with `balance_connections = true`: each new connection
#                       to the worker thread with the fewest open instead of a random one
#   sluice-noop         Sluice with one `headers` filter configured to do nothing: the
#                       callbacks every Proxy-Wasm filter gets, without work of its own
#   sluice-waf-norules  Sluice with filters/out/waf.wasm and no rule
#   sluice-rl-local     Sluice with filters/out/ratelimit.wasm counting on this node (shared data)
#   sluice-rl-redis     the same counting on Redis ([fleet]; a redis-server this script starts)
#   sluice-cm-fresh     Sluice with one component middleware (add_header: one request and one
#                       response header, as sluice-one's filter), a fresh instance per request
#   sluice-cm-reused    the same component, one instance reused (reuse_requests = 100000)
# All servers start once; then ROUNDS interleaved rounds each run every target once in
# turn (the order rotates by one each round): a warm-up, then `wrk --latency`, with the
# CPU time (utime + stime, /proc) of the server's process tree read before and after.
# Per target it reports the median over rounds of rps, p50 and p99, and the CPU time per
# request over all rounds (total CPU / total requests: the robust figure on a shared
# machine), ratios to nginx, and the cost each filter adds over the empty chain.
# PROFILE=1 adds, per target, two short runs under `perf stat` (see bench/README.md): one
# counting syscalls (tracepoint raw_syscalls:sys_enter), one counting allocations
# (uprobes on the allocation functions of the allocator the server uses: libc's malloc
# family, or mimalloc / jemalloc when the binary links them), per request.
# Prints Markdown tables and keeps raw outputs, logs and policies in a temp dir.
#
# Usage: bash bench/run.sh            (from anywhere)
# Knobs (environment):
#   ROUNDS=3             interleaved rounds
#   THREADS=2            proxy threads (nginx worker_processes, Pingora/Sluice threads)
#   ORIGIN_THREADS=$THREADS   origin worker threads
#   WRK_THREADS=1 CONNECTIONS=32 DURATION=10s WARMUP=2s   (per target and round)
#   BENCH_PATH=/hello.txt     path requested by wrk
#   PROFILE=0            1: syscalls and allocations per request (perf, root)
#   PROFILE_DURATION=5s  each profile run
#   IDLE_SECS=5          CPU of the idle servers measured over this long first (0: not)
#   TARGETS="origin nginx bare-pingora sluice-empty sluice-one sluice-three sluice-waf-norules"
#            (add sluice-rl-local sluice-rl-redis for the rate-limit filter's cost,
#             sluice-cm-fresh sluice-cm-reused for a component middleware's,
#             sluice-noop for the callbacks alone, sluice-spread for balance_connections)
#   SLUICE_SPREAD_PORT=18096 SLUICE_SPREAD_ADMIN=19915
#   SLUICE_NOOP_PORT=18095 SLUICE_NOOP_ADMIN=19914
#   SLUICE_CM_FRESH_PORT=18093 SLUICE_CM_REUSED_PORT=18094
#   SLUICE_CM_FRESH_ADMIN=19912 SLUICE_CM_REUSED_ADMIN=19913
#   SLUICE_RL_LOCAL_PORT=18090 SLUICE_RL_REDIS_PORT=18091 SLUICE_RL_LOCAL_ADMIN=19910
#   SLUICE_RL_REDIS_ADMIN=19911 REDIS_PORT=18092
#   ORIGIN_PORT=18081 NGINX_PORT=18082 BARE_PORT=18083 SLUICE_EMPTY_PORT=18084
#   SLUICE_ONE_PORT=18085 SLUICE_THREE_PORT=18086 SLUICE_WAF_PORT=18087
#   SLUICE_EMPTY_ADMIN=19901 SLUICE_ONE_ADMIN=19902 SLUICE_THREE_ADMIN=19903 SLUICE_WAF_ADMIN=19904
#   BUILD=1        0: do not run cargo, use the binaries in target/release
#   BUILD_SLUICE=1 0: do not build sluice (an existing binary is still used)
#   SKIP_SLUICE=0  1: skip the Sluice rows
#   SKIP_NGINX=0   1: skip the nginx row
#   SLUICE_BIN=target/release/sluice   the Sluice binary to run
#   BEFORE_BIN=    another Sluice binary (e.g. before a change): adds its Sluice rows
#                  (sluice-*-before, ports from BEFORE_PORT=18088, admin from
#                  BEFORE_ADMIN=19905), interleaved with the others, and a before/after table
#
# Load generator and servers share the machine's cores; nothing is pinned. Compare rows
# of the same run (they are interleaved for that), not runs of different machines.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

ROUNDS=${ROUNDS:-3}
WRK_THREADS=${WRK_THREADS:-1}
CONNECTIONS=${CONNECTIONS:-32}
BENCH_PATH=${BENCH_PATH:-/hello.txt}
PROFILE=${PROFILE:-0}
PROFILE_DURATION=${PROFILE_DURATION:-5s}
IDLE_SECS=${IDLE_SECS:-5}
TARGETS=${TARGETS:-origin nginx bare-pingora sluice-empty sluice-one sluice-three sluice-waf-norules}
BEFORE_BIN=${BEFORE_BIN:-}

ORIGIN_PORT=${ORIGIN_PORT:-18081}
NGINX_PORT=${NGINX_PORT:-18082}
BARE_PORT=${BARE_PORT:-18083}
SLUICE_EMPTY_PORT=${SLUICE_EMPTY_PORT:-18084}
SLUICE_ONE_PORT=${SLUICE_ONE_PORT:-18085}
SLUICE_THREE_PORT=${SLUICE_THREE_PORT:-18086}
SLUICE_WAF_PORT=${SLUICE_WAF_PORT:-18087}
SLUICE_NOOP_PORT=${SLUICE_NOOP_PORT:-18095}
SLUICE_NOOP_ADMIN=${SLUICE_NOOP_ADMIN:-19914}
SLUICE_EMPTY_ADMIN=${SLUICE_EMPTY_ADMIN:-19901}
SLUICE_SPREAD_PORT=${SLUICE_SPREAD_PORT:-18096}
SLUICE_SPREAD_ADMIN=${SLUICE_SPREAD_ADMIN:-19915}
SLUICE_ONE_ADMIN=${SLUICE_ONE_ADMIN:-19902}
SLUICE_THREE_ADMIN=${SLUICE_THREE_ADMIN:-19903}
SLUICE_WAF_ADMIN=${SLUICE_WAF_ADMIN:-19904}
SLUICE_RL_LOCAL_PORT=${SLUICE_RL_LOCAL_PORT:-18090}
SLUICE_RL_REDIS_PORT=${SLUICE_RL_REDIS_PORT:-18091}
SLUICE_RL_LOCAL_ADMIN=${SLUICE_RL_LOCAL_ADMIN:-19910}
SLUICE_RL_REDIS_ADMIN=${SLUICE_RL_REDIS_ADMIN:-19911}
SLUICE_CM_FRESH_PORT=${SLUICE_CM_FRESH_PORT:-18093}
SLUICE_CM_REUSED_PORT=${SLUICE_CM_REUSED_PORT:-18094}
SLUICE_CM_FRESH_ADMIN=${SLUICE_CM_FRESH_ADMIN:-19912}
SLUICE_CM_REUSED_ADMIN=${SLUICE_CM_REUSED_ADMIN:-19913}
REDIS_PORT=${REDIS_PORT:-18092}
BEFORE_PORT=${BEFORE_PORT:-18088}
BEFORE_ADMIN=${BEFORE_ADMIN:-19905}

BUILD_SLUICE=${BUILD_SLUICE:-1}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench.XXXXXX")
RESULTS="$TMP/results.md"

BENCH_TAG=bench
ROW_NA="n/a|n/a|n/a|n/a|n/a" # rows: "name|rps|p50|p99|cpu|cpu per round"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

# ---------------------------------------------------------------- targets

declare -A PORT_OF=(
    [origin]=$ORIGIN_PORT [nginx]=$NGINX_PORT [bare-pingora]=$BARE_PORT
    [sluice-empty]=$SLUICE_EMPTY_PORT [sluice-one]=$SLUICE_ONE_PORT
    [sluice-three]=$SLUICE_THREE_PORT [sluice-waf-norules]=$SLUICE_WAF_PORT
    [sluice-rl-local]=$SLUICE_RL_LOCAL_PORT [sluice-rl-redis]=$SLUICE_RL_REDIS_PORT
    [sluice-cm-fresh]=$SLUICE_CM_FRESH_PORT [sluice-cm-reused]=$SLUICE_CM_REUSED_PORT
    [sluice-noop]=$SLUICE_NOOP_PORT [sluice-spread]=$SLUICE_SPREAD_PORT
)
declare -A ADMIN_OF=(
    [sluice-empty]=$SLUICE_EMPTY_ADMIN [sluice-one]=$SLUICE_ONE_ADMIN
    [sluice-three]=$SLUICE_THREE_ADMIN [sluice-waf-norules]=$SLUICE_WAF_ADMIN
    [sluice-rl-local]=$SLUICE_RL_LOCAL_ADMIN [sluice-rl-redis]=$SLUICE_RL_REDIS_ADMIN
    [sluice-cm-fresh]=$SLUICE_CM_FRESH_ADMIN [sluice-cm-reused]=$SLUICE_CM_REUSED_ADMIN
    [sluice-noop]=$SLUICE_NOOP_ADMIN [sluice-spread]=$SLUICE_SPREAD_ADMIN
)
declare -A CHAIN_OF=(
    [sluice-empty]=empty [sluice-one]=one [sluice-three]=three [sluice-waf-norules]=waf-norules
    [sluice-rl-local]=ratelimit-local [sluice-rl-redis]=ratelimit-redis
    [sluice-cm-fresh]=component-fresh [sluice-cm-reused]=component-reused
    [sluice-noop]=noop [sluice-spread]=empty
)
# BEFORE_BIN: each Sluice target gets a twin, NAME-before, run by that binary, just before it.
if [[ -n $BEFORE_BIN ]]; then
    with_before=""
    i=0
    for name in $TARGETS; do
        if [[ -n ${CHAIN_OF[$name]:-} ]]; then
            PORT_OF[$name-before]=$((BEFORE_PORT + i))
            ADMIN_OF[$name-before]=$((BEFORE_ADMIN + i))
            CHAIN_OF[$name-before]=${CHAIN_OF[$name]}
            with_before+=" $name-before"
            i=$((i + 1))
        fi
        with_before+=" $name"
    done
    TARGETS=${with_before# }
fi

start_nginx() {
    local dir="$TMP/nginx" conf="$TMP/nginx.conf"
    mkdir -p "$dir"
    nginx_proxy_conf "$dir" "$NGINX_PORT" >"$conf"
    start_nginx_conf nginx "$dir" "$conf"
}

start_bare_pingora() {
    start_bg bare-pingora "$REL/bare-pingora" --listen "127.0.0.1:$BARE_PORT" \
        --upstream "127.0.0.1:$ORIGIN_PORT" --threads "$THREADS"
}

# start_sluice NAME: Sluice on its policy ($TMP/policy-NAME.toml, chain CHAIN_OF[NAME]).
start_sluice() {
    local name=$1
    local SLUICE_SERVER_EXTRA=""
    [[ ${CHAIN_OF[$name]} == component-* ]] && SLUICE_SERVER_EXTRA="component_model = true"
    [[ ${name%-before} == sluice-spread ]] && SLUICE_SERVER_EXTRA="balance_connections = true"
    start_sluice_bench "$name" "$TMP/policy-$name.toml" "${PORT_OF[$name]}" "${ADMIN_OF[$name]}" \
        "${CHAIN_OF[$name]}"
}

# can_start NAME: true when NAME's binary and modules exist (else a skipped row).
can_start() {
    case $1 in
        nginx)
            if [[ $SKIP_NGINX == 1 ]]; then
                skip_row nginx "SKIP_NGINX=1"
                return 1
            fi
            command -v nginx >/dev/null || {
                skip_row nginx "nginx not installed: apt-get install nginx-light"
                return 1
            }
            ;;
        bare-pingora)
            [[ -x $REL/bare-pingora ]] || {
                skip_row bare-pingora "$REL/bare-pingora missing"
                return 1
            }
            ;;
        sluice-*)
            local bin=$SLUICE_BIN module="" base=${1%-before}
            [[ $1 == *-before ]] && bin=$BEFORE_BIN
            if [[ $SKIP_SLUICE == 1 ]]; then
                skip_row "$1" "SKIP_SLUICE=1"
                return 1
            fi
            [[ -x $bin ]] || {
                skip_row "$1" "$bin missing"
                return 1
            }
            [[ $base == sluice-one || $base == sluice-three || $base == sluice-noop ]] && module=$FILTERS_OUT/headers.wasm
            [[ $base == sluice-waf-norules ]] && module=$FILTERS_OUT/waf.wasm
            [[ $base == sluice-rl-* ]] && module=$FILTERS_OUT/ratelimit.wasm
            [[ $base == sluice-cm-* ]] && module=$FILTERS_OUT/components/add_header.wasm
            if [[ $base == sluice-rl-redis ]] && ! command -v redis-server >/dev/null; then
                skip_row "$1" "redis-server not installed (scripts/setup.sh)"
                return 1
            fi
            if [[ -n $module && ! -f $module ]]; then
                skip_row "$1" "$module missing (run filters/build.sh)"
                return 1
            fi
            ;;
    esac
}

# start_target NAME: starts NAME and waits until it proxies to the origin.
start_target() {
    local name=$1
    case $name in
        origin) return 0 ;; # started first, always
        nginx) start_nginx ;;
        bare-pingora) start_bare_pingora ;;
        sluice-*-before) SLUICE_BIN=$BEFORE_BIN start_sluice "$name" ;;
        sluice-*) start_sluice "$name" ;;
        *) die "unknown target $name" ;;
    esac || return 1
    READY_SECS=60 wait_ready "$name" "http://127.0.0.1:${PORT_OF[$name]}/healthz"
}

# ---------------------------------------------------------------- one measured run

HZ=$(getconf CLK_TCK)
declare -A REQS=() TICKS=() UTICKS=() STICKS=() RPS_L=() P50_L=() P99_L=() CPU_L=() FAILED=()

# measure NAME ROUND: warm-up, then one measured wrk run of NAME, with the CPU ticks of
# its server's process tree around it; adds to NAME's per-round lists and totals.
measure() {
    local name=$1 round=$2 url out t0 t1 s0 s1 rc=0 rps p50 p99 n errs
    url="http://127.0.0.1:${PORT_OF[$name]}$BENCH_PATH"
    out="$TMP/wrk-$name-r$round.txt"
    log "round $round/$ROUNDS, $name: warm-up $WARMUP, then $DURATION, -t$WRK_THREADS -c$CONNECTIONS"
    wrk_warmup "$out" -t"$WRK_THREADS" -c"$CONNECTIONS" "$url"
    s0=$(proc_ticks_split "${PID_OF[$name]}")
    wrk_measure "$out" -t"$WRK_THREADS" -c"$CONNECTIONS" "$url" || rc=$?
    s1=$(proc_ticks_split "${PID_OF[$name]}")
    t0=$((${s0% *} + ${s0#* })) t1=$((${s1% *} + ${s1#* }))
    rps=$(wrk_stat "$out" rps)
    p50=$(wrk_stat "$out" p50)
    p99=$(wrk_stat "$out" p99)
    n=$(wrk_stat "$out" requests)
    if ((rc != 0)) || [[ -z $rps || -z $p50 || -z $p99 || -z $n ]]; then
        note "$name, round $round: wrk failed or its output did not parse, see $out"
        FAILED[$name]=1
        return 0
    fi
    errs=$(wrk_stat "$out" errors)
    [[ -z $errs ]] || note "$name, round $round: $errs"
    REQS[$name]=$((${REQS[$name]:-0} + n))
    TICKS[$name]=$((${TICKS[$name]:-0} + t1 - t0))
    UTICKS[$name]=$((${UTICKS[$name]:-0} + ${s1% *} - ${s0% *}))
    STICKS[$name]=$((${STICKS[$name]:-0} + ${s1#* } - ${s0#* }))
    RPS_L[$name]+="$rps "
    P50_L[$name]+="$(to_ms "$p50") "
    P99_L[$name]+="$(to_ms "$p99") "
    CPU_L[$name]+="$(us_per_request $((t1 - t0)) "$n") "
}

# ---------------------------------------------------------------- profile (PROFILE=1)

declare -A SYS_PER=() ALLOC_PER=() REALLOC_PER=() ALLOC_BY=() FUNCS_NOTED=()

# per_request COUNT REQUESTS: COUNT / REQUESTS, 1 decimal (n/a when either is missing).
per_request() {
    awk -v c="$1" -v n="$2" 'BEGIN { if (c != "" && n > 0) printf "%.1f", c / n; else print "n/a" }'
}

# profile NAME: one PROFILE_DURATION wrk run under `perf stat -e raw_syscalls:sys_enter`,
# one under the allocation uprobes; counts over the server's process tree, per request.
profile() {
    local name=$1 url pids out n count realloc
    url="http://127.0.0.1:${PORT_OF[$name]}$BENCH_PATH"
    pids=$(proc_tree_pids "${PID_OF[$name]}")
    log "profile $name (pids $pids): syscalls, then allocations, $PROFILE_DURATION each"
    wrk_warmup "$TMP/prof-$name.txt" -t"$WRK_THREADS" -c"$CONNECTIONS" "$url"

    out="$TMP/perf-sys-$name.csv"
    if perf_stat_run "$out" raw_syscalls:sys_enter "$pids" \
        wrk -d"$PROFILE_DURATION" -t"$WRK_THREADS" -c"$CONNECTIONS" "$url" >"$TMP/prof-sys-$name.txt" 2>&1; then
        n=$(wrk_stat "$TMP/prof-sys-$name.txt" requests)
        SYS_PER[$name]=$(per_request "$(perf_stat_sum "$out" raw_syscalls:sys_enter)" "$n")
    else
        note "$name: the syscall run failed, see $TMP/prof-sys-$name.txt and $out.err"
    fi

    if ! alloc_probe_setup "${PID_OF[$name]}"; then
        note "$name: no allocation probe (allocator of pid ${PID_OF[$name]} not found or perf probe failed)"
        return 0
    fi
    ALLOC_BY[$name]=$ALLOC_WHAT
    if [[ -z ${FUNCS_NOTED[$ALLOC_FUNCS]:-} ]]; then
        FUNCS_NOTED[$ALLOC_FUNCS]=1
        note "allocation probes: $ALLOC_FUNCS"
    fi
    out="$TMP/perf-alloc-$name.csv"
    if perf_stat_run "$out" "$ALLOC_EVENTS${REALLOC_EVENTS:+,$REALLOC_EVENTS}" "$pids" \
        wrk -d"$PROFILE_DURATION" -t"$WRK_THREADS" -c"$CONNECTIONS" "$url" >"$TMP/prof-alloc-$name.txt" 2>&1; then
        n=$(wrk_stat "$TMP/prof-alloc-$name.txt" requests)
        count=$(perf_stat_sum "$out" "$ALLOC_EVENTS")
        ALLOC_PER[$name]=$(per_request "$count" "$n")
        realloc=""
        [[ -z $REALLOC_EVENTS ]] || realloc=$(perf_stat_sum "$out" "$REALLOC_EVENTS")
        REALLOC_PER[$name]=$(per_request "$realloc" "$n")
    else
        note "$name: the allocation run failed, see $TMP/prof-alloc-$name.txt and $out.err"
    fi
}

# ---------------------------------------------------------------- report

# cpu_of NAME: NAME's CPU us per request over all rounds (empty when not measured).
cpu_of() {
    [[ -n ${REQS[$1]:-} ]] || return 0
    us_per_request "${TICKS[$1]}" "${REQS[$1]}"
}
med() { tr ' ' '\n' <<<"${1:-}" | awk 'NF' | median; }
# diff A B [DIV]: (A - B) / DIV, 1 decimal, signed (n/a when either is missing).
diff_per() {
    awk -v a="$1" -v b="$2" -v d="${3:-1}" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/) printf "%+.1f", (a - b) / d; else print "n/a" }'
}
# goal LABEL VALUE OP LIMIT: "LABEL: VALUE (goal OP LIMIT: met|not met)".
goal() {
    local verdict
    verdict=$(awk -v v="${2%x}" -v op="$3" -v l="${4%x}" 'BEGIN {
        if (v !~ /^[-+]?[0-9.]+$/) { print "not measured"; exit }
        ok = (op == "<=") ? (v + 0 <= l + 0) : (v + 0 >= l + 0); print ok ? "met" : "NOT met" }')
    echo "- $1: $2 (goal $3 $4: $verdict)"
}

# cost_line LABEL A B [DIV]: one line of the added-cost table: (A − B) / DIV in CPU µs,
# syscalls and allocations per request.
cost_line() {
    echo "| $1 | $(diff_per "$(cpu_of "$2")" "$(cpu_of "$3")" "${4:-1}") | $(diff_per "${SYS_PER[$2]:-}" "${SYS_PER[$3]:-}" "${4:-1}") | $(diff_per "${ALLOC_PER[$2]:-}" "${ALLOC_PER[$3]:-}" "${4:-1}") |"
}

# added_costs SUFFIX: the added-cost table of the Sluice rows named sluice-*SUFFIX.
added_costs() {
    local x=$1
    echo
    echo "| added cost${x:+ ($BEFORE_BIN)} | CPU µs/req | syscalls/req | allocations/req |"
    echo "|---|---:|---:|---:|"
    cost_line "Sluice over bare Pingora (sluice-empty$x − bare-pingora)" "sluice-empty$x" bare-pingora
    cost_line "a filter doing nothing (sluice-noop$x − sluice-empty$x)" "sluice-noop$x" "sluice-empty$x"
    cost_line "one headers filter (sluice-one$x − sluice-empty$x)" "sluice-one$x" "sluice-empty$x"
    cost_line "per filter in a chain of three ((sluice-three$x − sluice-empty$x) / 3)" "sluice-three$x" "sluice-empty$x" 3
    cost_line "each filter after the first ((sluice-three$x − sluice-one$x) / 2)" "sluice-three$x" "sluice-one$x" 2
    cost_line "WAF filter, no rule (sluice-waf-norules$x − sluice-empty$x)" "sluice-waf-norules$x" "sluice-empty$x"
    cost_line "component middleware, fresh instance (sluice-cm-fresh$x − sluice-empty$x)" "sluice-cm-fresh$x" "sluice-empty$x"
    cost_line "component middleware, reused instance (sluice-cm-reused$x − sluice-empty$x)" "sluice-cm-reused$x" "sluice-empty$x"
    cost_line "rate limit, local (sluice-rl-local$x − sluice-empty$x)" "sluice-rl-local$x" "sluice-empty$x"
    cost_line "rate limit on Redis, Sluice's CPU (sluice-rl-redis$x − sluice-empty$x)" "sluice-rl-redis$x" "sluice-empty$x"
}

# before_after: each Sluice row of $SLUICE_BIN against the same row of $BEFORE_BIN.
before_after() {
    local base b a
    echo
    echo "| before → after | CPU µs/req | CPU change | rps | syscalls/req | allocations/req |"
    echo "|---|---:|---:|---:|---:|---:|"
    for base in sluice-empty sluice-noop sluice-one sluice-three sluice-waf-norules; do
        b=$base-before a=$base
        [[ -n ${REQS[$a]:-} && -n ${REQS[$b]:-} ]] || continue
        echo "| $base | $(cpu_of "$b") → $(cpu_of "$a") | $(awk -v x="$(cpu_of "$b")" -v y="$(cpu_of "$a")" 'BEGIN { printf "%+.1f%%", 100 * (y - x) / x }') | $(printf '%.0f' "$(med "${RPS_L[$b]}")") → $(printf '%.0f' "$(med "${RPS_L[$a]}")") | ${SYS_PER[$b]:-n/a} → ${SYS_PER[$a]:-n/a} | ${ALLOC_PER[$b]:-n/a} → ${ALLOC_PER[$a]:-n/a} |"
    done
}

print_report() {
    local name r row rps p50 p99 cpu split rounds nginx_cpu nginx_rps nginx_p99
    nginx_cpu=$(cpu_of nginx)
    nginx_rps=$(med "${RPS_L[nginx]:-}")
    nginx_p99=$(med "${P99_L[nginx]:-}")
    echo "| target | rps | p50 | p99 | CPU µs/req | user / kernel µs/req | CPU µs/req by round | CPU vs nginx | rps vs nginx | p99 vs nginx | idle CPU ms/s |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for name in $TARGETS; do
        row=""
        for r in "${ROWS[@]}"; do [[ ${r%%|*} == "$name" ]] && row=$r; done
        if [[ -n $row || -z ${REQS[$name]:-} ]]; then
            echo "| $name | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | ${IDLE[$name]:-n/a} |"
            continue
        fi
        rps=$(printf '%.0f' "$(med "${RPS_L[$name]}")")
        p50=$(printf '%.2f' "$(med "${P50_L[$name]}")")
        p99=$(printf '%.2f' "$(med "${P99_L[$name]}")")
        cpu=$(cpu_of "$name")
        rounds=$(echo ${CPU_L[$name]} | sed 's/ /, /g')
        split="$(us_per_request "${UTICKS[$name]}" "${REQS[$name]}") / $(us_per_request "${STICKS[$name]}" "${REQS[$name]}")"
        echo "| $name | $rps | $p50 ms | $p99 ms | $cpu | $split | $rounds | $(ratio "$cpu" "$nginx_cpu") | $(ratio "$rps" "$nginx_rps") | $(ratio "$p99" "$nginx_p99") | ${IDLE[$name]:-n/a} |"
    done

    if [[ $PROFILE == 1 ]]; then
        echo
        echo "| target | syscalls/req | allocations/req | reallocations/req | allocator probed |"
        echo "|---|---:|---:|---:|---|"
        for name in $TARGETS; do
            [[ -n ${PID_OF[$name]:-}${SYS_PER[$name]:-} ]] || continue
            echo "| $name | ${SYS_PER[$name]:-n/a} | ${ALLOC_PER[$name]:-n/a} | ${REALLOC_PER[$name]:-n/a} | ${ALLOC_BY[$name]:-n/a} |"
        done
    fi

    added_costs ""
    [[ -z $BEFORE_BIN ]] || added_costs -before
    [[ -z $BEFORE_BIN ]] || before_after
    local e o t w
    e=$(cpu_of sluice-empty) o=$(cpu_of sluice-one) t=$(cpu_of sluice-three) w=$(cpu_of sluice-waf-norules)
    echo
    echo "Goals of #18:"
    goal "sluice-empty CPU per request vs nginx" "$(ratio "$e" "$nginx_cpu")" "<=" 1.5x
    goal "sluice-empty rps vs nginx" "$(ratio "$(med "${RPS_L[sluice-empty]:-}")" "$nginx_rps")" ">=" 0.8x
    goal "sluice-empty p99 vs nginx" "$(ratio "$(med "${P99_L[sluice-empty]:-}")" "$nginx_p99")" "<=" 1.5x
    goal "one headers filter adds (µs CPU)" "$(diff_per "$o" "$e")" "<=" 2
    goal "each filter of three adds (µs CPU)" "$(diff_per "$t" "$e" 3)" "<=" 2
    goal "WAF with no rules adds (µs CPU)" "$(diff_per "$w" "$e")" "<=" 5
    if [[ $PROFILE == 1 ]]; then
        goal "allocations per request, sluice-empty" "${ALLOC_PER[sluice-empty]:-n/a}" "<=" 20
    fi

    if ((${#NOTES[@]} > 0)); then
        echo
        for row in "${NOTES[@]}"; do
            echo "- $row"
        done
    fi
    echo
    echo "Command: ${BEFORE_BIN:+BEFORE_BIN=$BEFORE_BIN }ROUNDS=$ROUNDS PROFILE=$PROFILE THREADS=$THREADS ORIGIN_THREADS=$ORIGIN_THREADS WRK_THREADS=$WRK_THREADS CONNECTIONS=$CONNECTIONS DURATION=$DURATION WARMUP=$WARMUP BENCH_PATH=$BENCH_PATH BUILD=$BUILD bash bench/run.sh"
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
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"

ports=()
for name in $TARGETS; do
    [[ -n ${PORT_OF[$name]:-} ]] || die "unknown target $name (TARGETS)"
    ports+=("${PORT_OF[$name]}")
    [[ -z ${ADMIN_OF[$name]:-} ]] || ports+=("${ADMIN_OF[$name]}")
done
check_ports "$ORIGIN_PORT" "${ports[@]}"

if [[ $PROFILE == 1 ]] && ! perf_usable; then
    note "PROFILE=1: $PERF_WHY; no syscall or allocation counts"
    PROFILE=0
fi

log "results and logs: $TMP"
{
    env_lines
    echo "wrk:      -t$WRK_THREADS -c$CONNECTIONS -d$DURATION --latency (warm-up $WARMUP), path $BENCH_PATH, $ROUNDS interleaved rounds"
    echo "threads:  proxies $THREADS, origin $ORIGIN_THREADS"
    echo "sluice:   $SLUICE_BIN ($(stat -c '%y' "$SLUICE_BIN" 2>/dev/null | cut -d. -f1 || echo missing))"
    [[ -z $BEFORE_BIN ]] || echo "before:   $BEFORE_BIN ($(stat -c '%y' "$BEFORE_BIN" 2>/dev/null | cut -d. -f1 || echo missing)), rows sluice-*-before"
} | tee "$TMP/env.txt" >&2

# Other work on the machine skews everything: measure how busy it is first.
warn_if_busy

start_origin
# The Redis sluice-rl-redis counts on: loopback, no persistence.
if [[ " $TARGETS " == *" sluice-rl-redis"* ]] && command -v redis-server >/dev/null; then
    start_bg redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no
    for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null && break; sleep 0.1; done
fi
wait_ready origin "http://127.0.0.1:$ORIGIN_PORT/healthz" || die "the origin did not start"

# Every server starts once and stays up for all rounds.
active=()
for name in $TARGETS; do
    can_start "$name" || continue
    if start_target "$name"; then
        active+=("$name")
    else
        skip_row "$name" "did not start, see $TMP/$name.log"
        stop "$name"
    fi
done
log "targets: ${active[*]}"

# What each server burns with no traffic (timers, background threads), all at once: it is
# part of every CPU-per-request figure below (and runs while the other targets are measured).
declare -A IDLE=()
if ((IDLE_SECS > 0)); then
    log "idle CPU: ${IDLE_SECS}s with no traffic"
    for name in "${active[@]}"; do IDLE[$name]=$(proc_ticks "${PID_OF[$name]}"); done
    sleep "$IDLE_SECS"
    for name in "${active[@]}"; do
        IDLE[$name]=$(awk -v d="$(($(proc_ticks "${PID_OF[$name]}") - ${IDLE[$name]}))" -v hz="$HZ" -v s="$IDLE_SECS" \
            'BEGIN { printf "%.1f", 1000 * d / hz / s }')
    done
fi

for ((round = 1; round <= ROUNDS; round++)); do
    # rotate the order by one each round: no target always runs first or last
    n=${#active[@]}
    for ((i = 0; i < n; i++)); do
        name=${active[$(((i + round - 1) % n))]}
        [[ -z ${FAILED[$name]:-} ]] || continue
        if ! still_running origin; then
            die "the origin exited, see $TMP/origin.log"
        fi
        if ! still_running "$name"; then
            FAILED[$name]=1
            continue
        fi
        measure "$name" "$round"
    done
done

if [[ $PROFILE == 1 ]]; then
    for name in "${active[@]}"; do
        [[ -z ${FAILED[$name]:-} ]] || continue
        still_running "$name" || continue
        profile "$name"
    done
fi

for name in "${active[@]}"; do
    stop "$name"
done
stop origin
alloc_probes_cleanup

{
    cat "$TMP/env.txt"
    echo
    print_report
} | tee "$RESULTS"
echo
log "raw wrk outputs, perf counts, logs, policies and results.md: $TMP"
