# shellcheck shell=bash
# What the bench scripts share (sourced, not run). The caller sets BENCH_TAG (log prefix)
# and TMP (where each process's output goes) first.
#
# Processes: start_bg NAME CMD..., stop NAME (every process is stopped on exit), alive PID,
#   still_running NAME, proc_ticks PID, check_ports PORT..., port_in_use PORT.
# Readiness: wait_ready NAME URL [CURL_ARGS...] (READY_SECS, READY_HEADER).
# Rows: note MSG, skip_row KEY REASON (ROW_NA), run_target NAME PORT START_FN [ARGS...]
#   (calls the script's bench_target; ready_target and skip_target may be redefined),
#   run_nginx_target PORT START_FN, run_sluice_targets EMPTY_PORT TWO_PORT.
# Measuring: wrk_warmup / wrk_measure / wrk_warm_run / wrk_row OUT WRK_ARGS..., wrk_stat FILE KEY, to_ms, nearest_rank P,
#   cpu_busy_pct, warn_if_busy, env_lines.
# Servers: start_origin, nginx_head DIR, nginx_proxy_location, start_nginx_conf NAME DIR CONF,
#   sluice_server, start_sluice_bench, sluice_policy_tail empty|two, crs_waf_filter.

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
}

# start_sluice_bench NAME POLICY LISTEN_PORT ADMIN_PORT empty|two [SECTION_CMD...]: writes a
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

# sluice_policy_tail empty|two: what follows a bench policy's [server] (and [tls]) sections:
# the pool `origin` ($ORIGIN_PORT) and one route to it, through no filter ("empty") or a
# chain of two `headers` filters ("two": both edit headers and tag the chain,
# x-sluice-chain, one on the request and one on the response; $FILTERS_OUT/headers.wasm).
sluice_policy_tail() {
    cat <<EOF
[pools.origin]
peers = ["127.0.0.1:$ORIGIN_PORT"]
EOF
    if [[ $1 == two ]]; then
        cat <<EOF

[filters.first]
module = "$FILTERS_OUT/headers.wasm"
config = { request = { set = { "x-bench" = "first" } }, chain_tag = "first" }

[filters.second]
module = "$FILTERS_OUT/headers.wasm"
config = { response = { set = { "x-bench" = "second" } }, chain_tag = "second" }
EOF
    fi
    printf '\n[[routes]]\nname = "all"\npath_prefix = "/"\n'
    [[ $1 == two ]] && echo 'filters = ["first", "second"]'
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

# proc_ticks PID: CPU time (user + system, clock ticks) of PID and its direct children
# (nginx's workers), for CPU time per request: steadier than rps on a shared machine.
proc_ticks() {
    local root=$1 f pid ppid total=0
    for f in /proc/[0-9]*/stat; do
        read -r pid _ _ ppid _ <"$f" 2>/dev/null || continue
        if [[ $pid == "$root" || $ppid == "$root" ]]; then
            total=$((total + $(awk '{ print $14 + $15 }' "$f" 2>/dev/null || echo 0)))
        fi
    done
    echo "$total"
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

# ready_target NAME PORT: how run_target waits for a target (redefine for TLS).
ready_target() { wait_ready "$1" "http://127.0.0.1:$2/healthz"; }

# skip_target NAME REASON: how run_target records a target it could not run (redefine
# when a target has several rows).
skip_target() { skip_row "$1" "$2"; }

# run_target NAME PORT START_FN [ARGS...]: start a proxy with START_FN ARGS, wait until
# it proxies to the origin, run the caller's `bench_target NAME PORT`, stop it.
run_target() {
    local name=$1 port=$2
    shift 2
    if ! still_running origin; then
        skip_target "$name" "the origin is not running"
        return 0
    fi
    if "$@" && ready_target "$name" "$port"; then
        bench_target "$name" "$port"
        still_running "$name" || true
    else
        skip_target "$name" "did not start, see $TMP/$name.log"
    fi
    stop "$name"
}

# run_nginx_target PORT START_FN [ARGS...]: the nginx target, unless SKIP_NGINX=1 or nginx
# is not installed.
run_nginx_target() {
    if [[ $SKIP_NGINX == 1 ]]; then
        skip_target nginx "SKIP_NGINX=1"
    elif ! command -v nginx >/dev/null; then
        skip_target nginx "nginx not installed: apt-get install nginx-light"
    else
        run_target nginx "$@"
    fi
}

# run_sluice_targets EMPTY_PORT TWO_PORT: the sluice-empty and sluice-two targets, started
# by the caller's start_sluice_empty and start_sluice_two_filters (policies in $TMP).
run_sluice_targets() {
    if [[ $SKIP_SLUICE == 1 ]]; then
        skip_target sluice-empty "SKIP_SLUICE=1"
        skip_target sluice-two "SKIP_SLUICE=1"
    elif [[ ! -x $SLUICE_BIN ]]; then
        skip_target sluice-empty "$SLUICE_BIN missing"
        skip_target sluice-two "$SLUICE_BIN missing"
    else
        run_target sluice-empty "$1" start_sluice_empty "$TMP/policy-empty.toml"
        if [[ ! -f $FILTERS_OUT/headers.wasm ]]; then
            skip_target sluice-two "$FILTERS_OUT/headers.wasm missing (run filters/build.sh)"
        else
            run_target sluice-two "$2" start_sluice_two_filters "$TMP/policy-two.toml"
        fi
    fi
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

# wrk_warm_run OUT WRK_ARGS...: wrk_warmup, then wrk_measure.
wrk_warm_run() {
    wrk_warmup "$@"
    wrk_measure "$@"
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
