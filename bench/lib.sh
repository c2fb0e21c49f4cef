# shellcheck shell=bash
# Process handling shared by the bench scripts (sourced, not run). The caller sets
# BENCH_TAG (log prefix) and TMP (where each process's output goes) first.
#   start_bg NAME CMD...   run CMD in the background, output in $TMP/NAME.log
#   stop NAME              stop it (see below); every process is stopped on exit
#   alive PID, port_in_use PORT, log MSG, die MSG
#   to_ms, start_origin, nginx_head DIR, nginx_proxy_location, start_nginx_conf NAME DIR CONF,
#   sluice_policy_tail empty|two

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
