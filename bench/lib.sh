# shellcheck shell=bash
# What the bench scripts share (sourced, not run). The caller sets BENCH_TAG (log prefix)
# and TMP (where each process's output goes) first.
#
# Processes: start_bg NAME CMD..., stop NAME (every process is stopped on exit), alive PID,
#   still_running NAME, proc_ticks PID, check_ports PORT..., port_in_use PORT.
# Readiness: wait_ready NAME URL [CURL_ARGS...] (READY_SECS, READY_HEADER).
# Rows: note MSG, skip_row KEY REASON (ROW_NA). bench/run.sh, bench/tls.sh and
#   bench/waf.sh start all their servers at once and measure them in interleaved rounds.
# Measuring: wrk_warmup / wrk_measure / wrk_warm_run / wrk_row OUT WRK_ARGS..., wrk_stat FILE KEY, to_ms, nearest_rank P,
#   cpu_busy_pct, warn_if_busy, env_lines.
# Servers: start_origin, nginx_head DIR, nginx_proxy_location, nginx_proxy_conf DIR PORT,
#   start_nginx_conf NAME DIR CONF,
#   sluice_server, start_sluice_bench, sluice_policy_tail CHAIN, headers_filters N,
#   waf_norules_filter, crs_waf_filter.
# CPU: proc_table, proc_tree_pids PID, proc_ticks PID (the whole process tree),
#   us_per_request TICKS REQUESTS, ratio A B, median.
# perf: perf_usable, perf_stat_run OUT EVENTS PIDS CMD..., perf_stat_sum OUT EVENTS,
#   alloc_lib PID, alloc_probe_setup PID (ALLOC_EVENTS, REALLOC_EVENTS, ALLOC_WHAT, ALLOC_FUNCS),
#   defined_funcs FILE NAME..., alloc_probes_cleanup (on exit).

# Knobs most scripts share (a script sets its own defaults before sourcing this file).
: "${THREADS:=2}" "${WRK_THREADS:=2}" "${DURATION:=10s}" "${WARMUP:=2s}" "${BUILD:=1}"
: "${ORIGIN_THREADS:=$THREADS}" "${SKIP_NGINX:=0}" "${SKIP_SLUICE:=0}"
REL=${REL:-$ROOT/target/release}
SLUICE_BIN=${SLUICE_BIN:-$REL/sluice}
FILTERS_OUT=${FILTERS_OUT:-$ROOT/filters/out}

log() { printf '[%s] %s\n' "$BENCH_TAG" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

declare -A PID_OF=()

start_bg() {
    local name=$1
    shift
    "$@" >"$TMP/$name.log" 2>&1 &
    PID_OF[$name]=$!
}

alive() { kill -0 "$1" 2>/dev/null; }

# Pingora-based servers (bare-pingora, sluice*) are SIGKILLed: their fast shutdown
# (SIGINT) with `threads > 1` and `work_stealing = false` leaves the accept loop of one
# runtime spinning at 100% CPU on "Tokio context is being shutdown" errors (pingora
# 0.9.1), and the graceful one (SIGTERM) waits out a grace period. Others get SIGTERM,
# then SIGKILL after 3 s.
stop() {
    local name=$1 pid i
    pid=${PID_OF[$name]:-}
    [[ -n $pid ]] || return 0
    unset "PID_OF[$name]"
    if [[ $name == sluice* || $name == bare-pingora ]]; then
        kill -s KILL "$pid" 2>/dev/null || true
    else
        kill -s TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 30; i++)); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            kill -s KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local name
    for name in "${!PID_OF[@]}"; do
        stop "$name"
    done
    alloc_probes_cleanup
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# to_ms 312.45us|1.20ms|2.00s -> milliseconds, 2 decimals (wrk's latency units).
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v; sub(/[a-z]+$/, "", n); u = v; sub(/^[0-9.]+/, "", u);
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000;
        printf "%.2f", n }'
}

# start_origin: the demo origin on $ORIGIN_PORT serving origin/www (the caller sets REL,
# ROOT, ORIGIN_PORT, ORIGIN_THREADS).
start_origin() {
    start_bg origin "$REL/sluice-origin" --listen "127.0.0.1:$ORIGIN_PORT" \
        --root "$ROOT/origin/www" --id bench --threads "$ORIGIN_THREADS"
}

# nginx_head DIR: the start of an nginx.conf whose pid, logs and temp files live in DIR, up
# to `http {`, `access_log off;` and the keep-alive upstream `origin` ($ORIGIN_PORT). The
# caller adds its directives and servers and closes `http`.
nginx_head() {
    local dir=$1
    cat <<EOF
worker_processes $THREADS;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    upstream origin {
        server 127.0.0.1:$ORIGIN_PORT;
        keepalive 128;
    }
EOF
}

# nginx_proxy_location: `location /` proxying to the upstream `origin` over keep-alive HTTP/1.1.
nginx_proxy_location() {
    cat <<'EOF'
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            # Never spool to temp files (workers run as nobody; the temp dir is 0700).
            proxy_max_temp_file_size 0;
        }
EOF
}

# nginx_proxy_conf DIR PORT: a whole nginx.conf (nginx_head DIR) with one server on
# 127.0.0.1:PORT proxying everything to the origin (nginx_proxy_location): bench/run.sh's
# nginx row and bench/callgrind.sh's nginx.
nginx_proxy_conf() {
    nginx_head "$1"
    echo "    server {"
    echo "        listen 127.0.0.1:$2;"
    nginx_proxy_location
    echo "    }"
    echo "}"
}

# start_nginx_conf NAME DIR CONF: checks CONF with `nginx -t`, then runs it in the
# foreground as NAME (its logs in DIR).
start_nginx_conf() {
    local name=$1 dir=$2 conf=$3
    nginx -t -q -p "$dir" -e "$dir/error.log" -c "$conf" >"$TMP/$name-t.log" 2>&1 || {
        log "nginx -t failed for $name:"
        cat "$TMP/$name-t.log" >&2
        return 1
    }
    start_bg "$name" nginx -p "$dir" -e "$dir/error.log" -c "$conf" -g 'daemon off;'
}

# sluice_server LISTEN_PORT ADMIN_PORT: a bench policy's [server] section ($THREADS threads).
sluice_server() {
    cat <<EOF
[server]
listen = ["127.0.0.1:$1"]
admin = "127.0.0.1:$2"
threads = $THREADS
EOF
    # Extra [server] keys (e.g. `component_model = true` for the component chains).
    if [[ -n ${SLUICE_SERVER_EXTRA:-} ]]; then echo "$SLUICE_SERVER_EXTRA"; fi
}

# start_sluice_bench NAME POLICY LISTEN_PORT ADMIN_PORT CHAIN [SECTION_CMD...]: writes a
# bench policy to POLICY ([server], what SECTION_CMD prints, sluice_policy_tail) and
# starts Sluice on it as NAME.
start_sluice_bench() {
    local name=$1 policy=$2 listen=$3 admin=$4 chain=$5
    shift 5
    {
        echo "# Sluice bench policy ($name): $chain chain, everything to the demo origin."
        sluice_server "$listen" "$admin"
        echo
        if (($# > 0)); then
            "$@"
            echo
        fi
        sluice_policy_tail "$chain"
    } >"$policy"
    start_bg "$name" "$SLUICE_BIN" run --policy "$policy"
}

# crs_waf_filter: the [filters.waf] section running the OWASP CRS at paranoia 1, blocking,
# as policies/default.toml runs it ($FILTERS_OUT/waf.wasm, Debian's CRS files).
crs_waf_filter() {
    cat <<EOF
[filters.waf]
module = "$FILTERS_OUT/waf.wasm"
memory_mb = 256
startup_ms = 60000
files = ["/etc/nginx/modsecurity.conf", "/etc/modsecurity/crs/crs-setup.conf",
         "/usr/share/modsecurity-crs/rules/*.conf", "/usr/share/modsecurity-crs/rules/*.data"]
config = { rules = ["/etc/nginx/modsecurity.conf", "/etc/modsecurity/crs/crs-setup.conf",
                    "/usr/share/modsecurity-crs/rules/*.conf"], mode = "block", paranoia = 1 }
EOF
}

# headers_filters N: the sections of N `headers` filters h1..hN ($FILTERS_OUT/headers.wasm),
# each doing the same work: set one request header and one response header, and append its
# tag to x-sluice-chain on both; a chain of N costs N times one.
headers_filters() {
    local i
    for ((i = 1; i <= $1; i++)); do
        cat <<EOF

[filters.h$i]
module = "$FILTERS_OUT/headers.wasm"
config = { request = { set = { "x-bench-h$i" = "$i" } }, response = { set = { "x-bench-h$i" = "$i" } }, chain_tag = "h$i" }
EOF
    done
}

# waf_norules_filter: the [filters.waf] section of $FILTERS_OUT/waf.wasm with no rule (no
# rule file, no file): what the WAF filter costs per request before any rule runs.
waf_norules_filter() {
    cat <<EOF

[filters.waf]
module = "$FILTERS_OUT/waf.wasm"
config = { rules = [], mode = "block", status = 403, paranoia = 1, matchers = "wasm" }
EOF
}

# sluice_policy_tail CHAIN: what follows a bench policy's [server] (and [tls]) sections:
# the pool `origin` ($ORIGIN_PORT) and one route to it, through CHAIN:
#   empty   no filter
#   two     two `headers` filters, `first` on the request and `second` on the response,
#           both tagging x-sluice-chain (bench/tls.sh's chain)
#   one, three   headers_filters 1 or 3
#   noop    one `headers` filter configured to do nothing (no hostcall of its own): what a
#           Proxy-Wasm filter costs before its own work, the callbacks every filter gets
#   waf-norules  waf_norules_filter
#   waf-crs      crs_waf_filter (the OWASP CRS at paranoia 1, wasm matchers)
#   component-fresh, component-reused   one component middleware (filters/out/components/
#           add_header.wasm: one request and one response header), a fresh instance per
#           request or one instance reused for up to 100000 requests, 1 at a time
#           (needs SLUICE_SERVER_EXTRA="component_model = true")
sluice_policy_tail() {
    local route=""
    cat <<EOF
[pools.origin]
peers = ["127.0.0.1:$ORIGIN_PORT"]
EOF
    case $1 in
        empty) ;;
        two)
            cat <<EOF

[filters.first]
module = "$FILTERS_OUT/headers.wasm"
config = { request = { set = { "x-bench" = "first" } }, chain_tag = "first" }

[filters.second]
module = "$FILTERS_OUT/headers.wasm"
config = { response = { set = { "x-bench" = "second" } }, chain_tag = "second" }
EOF
            route='["first", "second"]'
            ;;
        one)
            headers_filters 1
            route='["h1"]'
            ;;
        noop)
            cat <<EOF

[filters.noop]
module = "$FILTERS_OUT/headers.wasm"
config = {}
EOF
            route='["noop"]'
            ;;
        three)
            headers_filters 3
            route='["h1", "h2", "h3"]'
            ;;
        waf-norules)
            waf_norules_filter
            route='["waf"]'
            ;;
        waf-crs)
            echo
            crs_waf_filter
            route='["waf"]'
            ;;
        component-fresh | component-reused)
            local reuse=1
            [[ $1 == component-reused ]] && reuse=100000
            cat <<EOF

[filters.cm]
kind = "component"
module = "$FILTERS_OUT/components/add_header.wasm"
reuse_requests = $reuse
EOF
            route='["cm"]'
            ;;
        ratelimit-local | ratelimit-redis)
            # One rule on the client IP (every bench request the same key) with a limit
            # never reached: each request counts (a CAS on shared data, or a Redis round
            # trip: the over-limit cache never answers).
            local scope=local
            [[ $1 == ratelimit-redis ]] && scope=fleet && printf '[fleet]\nredis = "redis://127.0.0.1:%s"\ntimeout_ms = 100\n\n' "$REDIS_PORT"
            cat <<EOF

[filters.rl]
module = "$FILTERS_OUT/ratelimit.wasm"
request_body = "stream"
config = { rules = [{ name = "bench", key = ["ip"], limit = 4000000000, window_s = 86400 }], scope = "$scope" }
EOF
            route='["rl"]'
            ;;
        *) die "sluice_policy_tail: unknown chain $1" ;;
    esac
    printf '\n[[routes]]\nname = "all"\npath_prefix = "/"\n'
    [[ -z $route ]] || echo "filters = $route"
    echo 'pool = "origin"'
}

# ---------------------------------------------------------------- rows and notes

# ROWS: one "|"-separated row per target, in the caller's layout; NOTES: lines printed
# under the table. ROW_NA: the fields after a row's key when it has no numbers (the
# caller sets it to match its layout).
declare -a ROWS=() NOTES=()
ROW_NA=${ROW_NA:-n/a|n/a|n/a|n/a}

# note MSG: a line under the results table, and the log.
note() {
    NOTES+=("$1")
    log "$1"
}

# skip_row KEY REASON: a row of n/a for KEY ("name", or "load|name"), and why.
skip_row() {
    ROWS+=("$1|$ROW_NA")
    note "${1//|/ \/ }: skipped ($2)"
}

# ---------------------------------------------------------------- processes

# still_running NAME: false (and a note with the exit status) if NAME, started by
# start_bg, has exited.
still_running() {
    local name=$1 pid rc=0
    pid=${PID_OF[$name]:-}
    [[ -n $pid ]] || return 1
    alive "$pid" && return 0
    wait "$pid" 2>/dev/null || rc=$?
    unset "PID_OF[$name]"
    note "$name exited during the run (status $rc), see $TMP/$name.log"
    return 1
}

# proc_table: one line "PID PPID TICKS UTIME STIME" per live process (TICKS: utime +
# stime of all its threads, clock ticks). The command name in /proc/PID/stat may hold
# spaces: fields are counted after its closing parenthesis.
proc_table() {
    # (a process that exits between the glob and its read makes cat fail: with pipefail and
    # set -e that ended a whole bench run on a busy machine; the rest of the table stands)
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk '{
        s = $0; sub(/^.*\) /, "", s); split(s, f, " "); print $1, f[2], f[12] + f[13], f[12], f[13] }'
}

# proc_tree_pids PID: PID and all its live descendants, comma-separated (perf's -p list).
proc_tree_pids() {
    proc_table | awk -v root="$1" '{ parent[$1] = $2 }
        END { tree[root] = 1
              do { more = 0; for (p in parent) if (!(p in tree) && (parent[p] in tree)) { tree[p] = 1; more = 1 } } while (more)
              out = root; for (p in tree) if (p != root && (p in parent)) out = out "," p; print out }'
}

# proc_ticks PID: CPU time (user + system, clock ticks, all threads) of PID and all its
# live descendants (nginx's master and workers; a Pingora process and its threads), for
# CPU time per request: steadier than rps on a shared machine. Descendants that exited
# are not counted: take the difference of two readings around a run of a server whose
# processes live through it.
proc_ticks() {
    proc_table | awk -v root="$1" '{ parent[$1] = $2; t[$1] = $3 }
        END { tree[root] = 1
              do { more = 0; for (p in parent) if (!(p in tree) && (parent[p] in tree)) { tree[p] = 1; more = 1 } } while (more)
              total = 0; for (p in tree) if (p in t) total += t[p]; print total }'
}

# proc_ticks_split PID: "USER SYSTEM" clock ticks of PID's process tree (as proc_ticks):
# where the time went, the server's own code or the kernel's work for it.
proc_ticks_split() {
    proc_table | awk -v root="$1" '{ parent[$1] = $2; u[$1] = $4; k[$1] = $5 }
        END { tree[root] = 1
              do { more = 0; for (p in parent) if (!(p in tree) && (parent[p] in tree)) { tree[p] = 1; more = 1 } } while (more)
              us = 0; sy = 0; for (p in tree) if (p in u) { us += u[p]; sy += k[p] }; print us, sy }'
}

# ratio A B: A / B with 2 decimals and an x (n/a when either is missing or B is 0).
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2fx", a / b; else print "n/a" }'
}

# us_per_request TICKS REQUESTS: microseconds of CPU per request (1 decimal; n/a for 0 requests).
us_per_request() {
    awk -v d="$1" -v hz="$(getconf CLK_TCK)" -v n="$2" 'BEGIN {
        if (n > 0) printf "%.1f", 1e6 * d / hz / n; else print "n/a" }'
}

# check_ports PORT...: dies if one of them is already taken on 127.0.0.1.
check_ports() {
    local port
    for port in "$@"; do
        if port_in_use "$port"; then
            die "port $port is already in use on 127.0.0.1 (a leftover server?); set the *_PORT variables"
        fi
    done
}

# ---------------------------------------------------------------- readiness

# wait_ready NAME URL [CURL_ARGS...]: until URL answers 2xx with the header READY_HEADER
# (default x-origin-id: the proxy is known to reach the origin; empty: any 2xx). Fails,
# with the last lines of NAME's log, if NAME exits or after READY_SECS (15) seconds.
wait_ready() {
    local name=$1 url=$2 pid i header=${READY_HEADER-x-origin-id} secs=${READY_SECS:-15}
    shift 2
    pid=${PID_OF[$name]}
    for ((i = 0; i < secs * 10; i++)); do
        if ! alive "$pid"; then
            log "$name exited during startup; last lines of $TMP/$name.log:"
            tail -n 20 "$TMP/$name.log" >&2 || true
            return 1
        fi
        if curl -fsS -o /dev/null -D "$TMP/$name.ready-headers" --max-time 5 "$@" "$url" 2>/dev/null &&
            { [[ -z $header ]] || grep -qi "^$header:" "$TMP/$name.ready-headers"; }; then
            return 0
        fi
        sleep 0.1
    done
    log "$name did not answer $url within $secs s; last lines of $TMP/$name.log:"
    tail -n 20 "$TMP/$name.log" >&2 || true
    return 1
}

# ---------------------------------------------------------------- measuring

# wrk_warmup OUT WRK_ARGS...: wrk WRK_ARGS for $WARMUP, output in OUT-warmup (discarded).
wrk_warmup() {
    local out=$1
    shift
    wrk -d"$WARMUP" "$@" >"${out%.txt}-warmup.txt" 2>&1 || true
}

# wrk_measure OUT WRK_ARGS...: `wrk --latency WRK_ARGS` for $DURATION into OUT; wrk's status.
wrk_measure() {
    local out=$1
    shift
    wrk -d"$DURATION" --latency "$@" >"$out" 2>&1
}

# wrk_warm_run OUT WRK_ARGS...: wrk_warmup, then wrk_measure. With CPU_PID set, also
# WRK_CPU_TICKS: the CPU ticks of that process tree over the measured run alone.
wrk_warm_run() {
    local t0
    WRK_CPU_TICKS=0
    wrk_warmup "$@"
    [[ -z ${CPU_PID:-} ]] || t0=$(proc_ticks "$CPU_PID")
    wrk_measure "$@" || return
    [[ -z ${CPU_PID:-} ]] || WRK_CPU_TICKS=$(($(proc_ticks "$CPU_PID") - t0))
}

# wrk_row KEY OUT WRK_ARGS...: wrk_warm_run, then WRK_RPS (whole requests/s), WRK_P50 and
# WRK_P99 (ms) from OUT, wrk's errors noted under KEY; false, with a skipped row for KEY,
# when wrk fails or its output does not parse.
wrk_row() {
    local key=$1 out=$2 errs
    shift 2
    if ! wrk_warm_run "$out" "$@"; then
        skip_row "$key" "wrk failed, see $out"
        return 1
    fi
    WRK_RPS=$(wrk_stat "$out" rps)
    WRK_P50=$(wrk_stat "$out" p50)
    WRK_P99=$(wrk_stat "$out" p99)
    if [[ -z $WRK_RPS || -z $WRK_P50 || -z $WRK_P99 ]]; then
        skip_row "$key" "could not parse $out"
        return 1
    fi
    WRK_RPS=$(printf '%.0f' "$WRK_RPS")
    WRK_P50=$(to_ms "$WRK_P50")
    WRK_P99=$(to_ms "$WRK_P99")
    errs=$(wrk_stat "$out" errors)
    [[ -z $errs ]] || note "${key//|/ \/ }: $errs"
}

# wrk_stat FILE KEY: from a `wrk --latency` output, KEY one of rps (as wrk prints it),
# p50, p99 (wrk's units: to_ms converts), requests, non2xx (empty when none), errors
# (wrk's Non-2xx and socket error lines, joined with ";").
wrk_stat() {
    case $2 in
        rps) awk '/^Requests\/sec:/ { print $2 }' "$1" ;;
        p50) awk '$1 == "50%" { print $2 }' "$1" ;;
        p99) awk '$1 == "99%" { print $2 }' "$1" ;;
        requests) awk '/requests in/ { print $1 }' "$1" ;;
        non2xx) awk '/Non-2xx/ { print $NF }' "$1" ;;
        errors) grep -E 'Non-2xx|Socket errors' "$1" | sed 's/^ *//' | paste -sd ';' - || true ;;
        *) die "wrk_stat: unknown key $2" ;;
    esac
}

# median: the median of the numbers on stdin, one a line (the mean of the middle two
# for an even count; n/a for none).
median() {
    sort -g | awk '{ v[NR] = $1 }
        END { if (NR == 0) { print "n/a"; exit }
              if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# nearest_rank P: the P-th percentile (nearest rank) of the numbers on stdin, one a line.
nearest_rank() {
    sort -n | awk -v p="$1" '{ v[NR] = $1 }
        END { if (NR == 0) { print "n/a"; exit }
              i = int(NR * p / 100); if (i < NR * p / 100) i++; if (i < 1) i = 1; print v[i] }'
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

# warn_if_busy: a note when other work keeps the CPUs more than 15% busy before a run.
warn_if_busy() {
    local busy
    busy=$(cpu_busy_pct)
    if ((busy > 15)); then
        note "the CPUs were ${busy}% busy before the run (load average $(cut -d' ' -f1-3 /proc/loadavg)): numbers are low"
    fi
}

# env_lines: date, host, nginx, commit and load of this run (a script adds its own).
env_lines() {
    echo "date:     $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "host:     $(uname -srm), $(nproc) CPUs"
    echo "nginx:    $(nginx -v 2>&1 || echo none)"
    echo "commit:   $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' + uncommitted changes')"
    echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min) at start"
}

# ---------------------------------------------------------------- perf: syscalls and allocations
#
# Counting recipe (root, perf from linux-perf; see bench/README.md "Syscalls and allocations"):
#   syscalls:    perf stat -e raw_syscalls:sys_enter -p PIDS   (a tracepoint: every syscall entry)
#   allocations: perf probe -x FILE 'GROUP:EVENT=FUNC' for each allocation entry point of the
#                allocator PIDS use (alloc_probe_setup finds it), then perf stat -e GROUP:EVENT -p PIDS
# divided by the requests wrk completed while perf counted. Probes are removed on exit.

# PERF_GROUP: the uprobe group of this script's probes (one per run: concurrent runs do not clash).
PERF_GROUP=${PERF_GROUP:-sluicebench$$}
PERF_PROBES_ADDED=0
declare -A ALLOC_PROBES=() # "kind|file" -> "ALLOC_EVENTS;REALLOC_EVENTS;FUNCS"

# perf_usable: true when `perf stat` can count the syscall tracepoint here (root or
# perf_event_paranoid <= -1, tracefs mounted); PERF_WHY says why not otherwise.
perf_usable() {
    PERF_WHY=""
    if ! command -v perf >/dev/null; then
        PERF_WHY="perf not installed (Debian: linux-perf)"
        return 1
    fi
    if ! perf stat -x, -e raw_syscalls:sys_enter -- true >"$TMP/perf-check.txt" 2>&1; then
        PERF_WHY="perf stat -e raw_syscalls:sys_enter failed: $(tail -n 1 "$TMP/perf-check.txt")"
        return 1
    fi
}

# perf_stat_run OUT EVENTS PIDS CMD...: counts EVENTS (comma-separated) in the processes
# PIDS (comma-separated; all their threads) while CMD runs, into OUT (perf's CSV); CMD's status.
perf_stat_run() {
    local out=$1 events=$2 pids=$3 perf_pid rc=0
    shift 3
    perf stat -x, -o "$out" -e "$events" -p "$pids" 2>"$out.err" &
    perf_pid=$!
    sleep 0.3 # perf attaches to every thread first
    "$@" || rc=$?
    kill -s INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
    return "$rc"
}

# perf_stat_sum OUT EVENTS: the sum of the counts of EVENTS (comma-separated) in OUT
# (perf_stat_run's; "<not counted>", a task that never ran, counts 0); empty when one of
# them is missing or not supported.
perf_stat_sum() {
    awk -F, -v want="$2" 'BEGIN { n = split(want, w, ","); for (i = 1; i <= n; i++) ev[w[i]] = 1 }
        /^#/ || NF < 3 { next }
        ($3 in ev) { if ($1 == "<not counted>") $1 = 0; else if ($1 !~ /^[0-9]+$/) bad = 1
                     sum += $1; seen[$3] = 1 }
        END { for (e in ev) if (!(e in seen)) bad = 1; if (!bad) print sum }' "$1"
}

# Allocation entry points per allocator: functions that return a new block (counted as
# allocations) and functions that resize one (reallocations). mimalloc (the `mimalloc`
# crate calls mi_malloc_aligned / mi_zalloc_aligned / mi_realloc_aligned), jemalloc with
# tikv-jemallocator's prefix, and the C library's (glibc; also what a binary that defines
# its own `malloc` overrides). Aliases (one address, several names) are probed once.
ALLOC_FUNCS_mimalloc="mi_malloc mi_malloc_aligned mi_malloc_aligned_at mi_zalloc mi_zalloc_aligned mi_zalloc_aligned_at mi_calloc mi_calloc_aligned mi_mallocn"
REALLOC_FUNCS_mimalloc="mi_realloc mi_realloc_aligned mi_realloc_aligned_at mi_rezalloc mi_rezalloc_aligned mi_reallocn mi_reallocf"
ALLOC_FUNCS_jemalloc="_rjem_malloc _rjem_calloc _rjem_mallocx _rjem_posix_memalign _rjem_aligned_alloc _rjem_memalign"
REALLOC_FUNCS_jemalloc="_rjem_realloc _rjem_rallocx"
ALLOC_FUNCS_libc="malloc calloc posix_memalign aligned_alloc memalign valloc pvalloc"
REALLOC_FUNCS_libc="realloc"

# defined_funcs FILE NAME...: "ADDRESS NAME" for each NAME that FILE defines (its symbol
# table, else its dynamic one), one name per address.
defined_funcs() {
    local file=$1
    shift
    { nm --defined-only "$file" 2>/dev/null; nm --defined-only -D "$file" 2>/dev/null; } |
        awk -v names="$*" 'BEGIN { n = split(names, w, " "); for (i = 1; i <= n; i++) want[w[i]] = i }
            $2 ~ /^[TtWwi]$/ { name = $3; sub(/@.*/, "", name)
                if ((name in want) && !(name in done) && !($1 in addr)) { addr[$1] = name; done[name] = 1; print $1, name } }'
}

# alloc_lib PID: "KIND FILE": the allocator PID's allocations go to. KIND is mimalloc or
# jemalloc when the executable defines mi_malloc / _rjem_malloc (a statically linked
# Rust global allocator), libc when it defines malloc itself (an override, probed in the
# executable) or, usually, when it calls the C library's (FILE: the libc PID has mapped).
alloc_lib() {
    local exe lib
    exe=$(readlink "/proc/$1/exe") || return 1
    if [[ -n $(defined_funcs "$exe" mi_malloc mi_malloc_aligned) ]]; then
        echo "mimalloc $exe"
    elif [[ -n $(defined_funcs "$exe" _rjem_malloc _rjem_mallocx) ]]; then
        echo "jemalloc $exe"
    elif [[ -n $(defined_funcs "$exe" malloc) ]]; then
        echo "libc $exe"
    else
        lib=$(awk '$6 ~ /\/libc[.-][^\/]*so/ { print $6; exit }' "/proc/$1/maps")
        [[ -n $lib ]] || return 1
        echo "libc $lib"
    fi
}

# alloc_probe_setup PID: uprobes on the allocation entry points of the allocator PID uses
# (alloc_lib); sets ALLOC_EVENTS and REALLOC_EVENTS (perf event names, comma-separated),
# ALLOC_WHAT ("KIND in FILE-NAME", for a table) and ALLOC_FUNCS (the file and the
# functions probed, for a note). Probes of one file are added once.
alloc_probe_setup() {
    local kind file key funcs rfuncs addr name ev args=() alloc=() realloc=() probed=() rprobed=()
    read -r kind file < <(alloc_lib "$1") || return 1
    key="$kind|$file"
    if [[ -z ${ALLOC_PROBES[$key]:-} ]]; then
        local tag="f${#ALLOC_PROBES[@]}"
        funcs="ALLOC_FUNCS_$kind"
        rfuncs="REALLOC_FUNCS_$kind"
        while read -r addr name; do
            ev="${tag}_${name}"
            args+=(-a "$PERF_GROUP:$ev=$name")
            if [[ " ${!rfuncs} " == *" $name "* ]]; then
                realloc+=("$PERF_GROUP:$ev")
                rprobed+=("$name")
            else
                alloc+=("$PERF_GROUP:$ev")
                probed+=("$name")
            fi
        done < <(defined_funcs "$file" ${!funcs} ${!rfuncs})
        ((${#alloc[@]} > 0)) || return 1
        PERF_PROBES_ADDED=1
        perf probe -q -x "$file" "${args[@]}" >"$TMP/perf-probe-$tag.log" 2>&1 || {
            log "perf probe -x $file failed, see $TMP/perf-probe-$tag.log"
            return 1
        }
        ALLOC_PROBES[$key]="$(IFS=,; echo "${alloc[*]}");$(IFS=,; echo "${realloc[*]}");$kind in ${file##*/};$file: allocations ${probed[*]}; reallocations ${rprobed[*]:-none}"
    fi
    IFS=';' read -r ALLOC_EVENTS REALLOC_EVENTS ALLOC_WHAT ALLOC_FUNCS <<<"${ALLOC_PROBES[$key]}"
}

# alloc_probes_cleanup: removes this script's uprobes (called on exit).
alloc_probes_cleanup() {
    if [[ $PERF_PROBES_ADDED == 1 ]]; then
        perf probe -q -d "$PERF_GROUP:*" >/dev/null 2>&1 || true
        PERF_PROBES_ADDED=0
    fi
}
