#!/usr/bin/env bash
# Sluice TLS benchmark (issue #7): one run, on loopback, of TLS termination by
#   nginx         nginx terminating TLS, reverse proxy to the origin
#   sluice-empty  Sluice's [tls] listener, a policy with no filters
#   sluice-two    Sluice's [tls] listener, the two-filter chain of bench/run.sh
# with the SAME certificate (an ECDSA P-256 leaf signed by a CA, both made here
# with openssl), all proxying to the demo origin (sluice-origin, HTTP/1.1,
# upstream keep-alive). The origin hit directly in cleartext is the ceiling.
#
# Three loads per target, each after a warm-up:
#   h1      HTTP/1.1 over TLS, keep-alive:      wrk -t2 -c64 -d10s --latency
#   h2      HTTP/2 over TLS (ALPN h2):          h2load -t2 -c32 -m10 -D 10s,
#           p50/p99 computed from h2load's --log-file (per-request latencies)
#   newconn one request per TLS connection (HTTP/1.1, Connection: close),
#           every connection but a client's first one resumed with the
#           session of its previous one: h2load --h1 -H 'Connection: close'
#           -t2 -c64 -n 10000 (h2load keeps the OpenSSL session across
#           reconnects; checked, see below). Latencies are per request, from
#           the request's start: they leave out TCP connect and handshake.
# Resumption is checked, not assumed: a chain of `openssl s_client -sess_in
# -sess_out` connections must say "Reused" (TLS 1.3 and TLS 1.2) against each
# server, and a probe server block of nginx, with an access log of
# $ssl_session_reused, counts how many of the newconn handshakes resumed.
#
# Usage: bash bench/tls.sh            (from anywhere; needs the release binaries)
# Knobs (environment):
#   THREADS=2                 proxy threads (nginx worker_processes, Sluice threads)
#   ORIGIN_THREADS=$THREADS   origin worker threads
#   WRK_THREADS=2 CONNECTIONS=64          wrk (h1); CONNECTIONS also newconn's clients
#   NEWCONN_REQUESTS=10000    newconn requests (= TLS connections) per target
#   H2_THREADS=2 H2_CLIENTS=32 H2_STREAMS=10   h2load, h2 (H2_THREADS also newconn)
#   DURATION=10s WARMUP=2s    measured run and warm-up of h1 and h2
#   BENCH_PATH=/hello.txt     path requested
#   TLS_NAME=bench.test       certificate name, SNI and Host of h2load
#   WRK_HOST=localhost        SNI and Host of wrk (no --connect-to in wrk)
#   ORIGIN_PORT=18480 NGINX_PORT=18443 NGINX_PROBE_PORT=18446
#   SLUICE_EMPTY_PORT=18444 SLUICE_TWO_PORT=18445        TLS listeners
#   SLUICE_EMPTY_HTTP=18484 SLUICE_TWO_HTTP=18485        Sluice cleartext listeners
#   SLUICE_EMPTY_ADMIN=19941 SLUICE_TWO_ADMIN=19942
#   SKIP_NGINX=0 SKIP_SLUICE=0   1: skip those rows
#   TESTS="h1 h2 newconn"     loads to run
#   SLUICE_BIN=target/release/sluice
#
# It does not build anything: run `cargo build --release -p sluice-origin -p
# sluice` (and filters/build.sh for the two-filter row) first.
# Load generators and servers share the machine's cores; nothing is pinned.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

CONNECTIONS=${CONNECTIONS:-64}
H2_THREADS=${H2_THREADS:-2}
H2_CLIENTS=${H2_CLIENTS:-32}
H2_STREAMS=${H2_STREAMS:-10}
BENCH_PATH=${BENCH_PATH:-/hello.txt}
TLS_NAME=${TLS_NAME:-bench.test}
WRK_HOST=${WRK_HOST:-localhost}
TESTS=${TESTS:-h1 h2 newconn}
NEWCONN_REQUESTS=${NEWCONN_REQUESTS:-10000}

ORIGIN_PORT=${ORIGIN_PORT:-18480}
NGINX_PORT=${NGINX_PORT:-18443}
NGINX_PROBE_PORT=${NGINX_PROBE_PORT:-18446}
SLUICE_EMPTY_PORT=${SLUICE_EMPTY_PORT:-18444}
SLUICE_TWO_PORT=${SLUICE_TWO_PORT:-18445}
SLUICE_EMPTY_HTTP=${SLUICE_EMPTY_HTTP:-18484}
SLUICE_TWO_HTTP=${SLUICE_TWO_HTTP:-18485}
SLUICE_EMPTY_ADMIN=${SLUICE_EMPTY_ADMIN:-19941}
SLUICE_TWO_ADMIN=${SLUICE_TWO_ADMIN:-19942}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sluice-tls-bench.XXXXXX")
RESULTS="$TMP/results.md"
CERT="$TMP/pki/cert.pem"
KEY="$TMP/pki/key.pem"
CA="$TMP/pki/ca.pem"

BENCH_TAG=tls-bench
ROW_NA="n/a|n/a|n/a|n/a" # rows: "load|target|rps|p50|p99|cpu"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

# url_of TARGET PORT: the URL curl and h2load use (h2load and curl connect to
# 127.0.0.1 but send SNI and :authority $TLS_NAME).
url_of() {
    if [[ $1 == origin ]]; then
        echo "http://127.0.0.1:$2$BENCH_PATH"
    else
        echo "https://$TLS_NAME:$2$BENCH_PATH"
    fi
}

# wrk_url_of TARGET PORT: wrk has no --connect-to: it connects to, and sends
# SNI and Host for, $WRK_HOST (localhost, a name of the certificate, which
# must resolve to 127.0.0.1 only). Not 127.0.0.1: an IP address as SNI makes
# rustls log a warning per handshake, which would load Sluice's log.
wrk_url_of() {
    if [[ $1 == origin ]]; then
        echo "http://127.0.0.1:$2$BENCH_PATH"
    else
        echo "https://$WRK_HOST:$2$BENCH_PATH"
    fi
}

# tls_ready NAME PORT: until https://$TLS_NAME:PORT/healthz (http for the origin) answers
# with the origin's x-origin-id header, the certificate verified against the bench CA.
tls_ready() {
    local scheme=https
    [[ $1 == origin ]] && scheme=http
    wait_ready "$1" "$scheme://$TLS_NAME:$2/healthz" --cacert "$CA" --resolve "$TLS_NAME:$2:127.0.0.1"
}
ready_target() { tls_ready "$@"; }

# ---------------------------------------------------------------- certificates

# make_pki: a CA and one leaf (ECDSA P-256, SAN $TLS_NAME, localhost,
# 127.0.0.1), the leaf served by every TLS target.
make_pki() {
    local d="$TMP/pki"
    mkdir -p "$d"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$d/ca.key" -out "$CA" -days 7 -subj "/CN=Sluice bench CA" >"$d/openssl.log" 2>&1
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$KEY" -out "$d/leaf.csr" -subj "/CN=$TLS_NAME" >>"$d/openssl.log" 2>&1
    cat >"$d/leaf.ext" <<EOF
subjectAltName = DNS:$TLS_NAME, DNS:localhost, IP:127.0.0.1
basicConstraints = CA:FALSE
keyUsage = digitalSignature
extendedKeyUsage = serverAuth
EOF
    openssl x509 -req -in "$d/leaf.csr" -CA "$CA" -CAkey "$d/ca.key" -CAcreateserial \
        -days 7 -extfile "$d/leaf.ext" -out "$CERT" >>"$d/openssl.log" 2>&1
    openssl verify -CAfile "$CA" "$CERT" >>"$d/openssl.log" 2>&1 ||
        die "the generated certificate does not verify, see $d/openssl.log"
}

# ---------------------------------------------------------------- servers

# nginx: TLS 1.2/1.3, a shared session cache (and its default session
# tickets), h2 by ALPN, upstream keep-alive as in bench/run.sh. A second
# server block (the probe port, same certificate and cache) logs
# $ssl_session_reused to count resumed handshakes; the measured one logs nothing.
start_nginx() {
    local dir="$TMP/nginx" conf="$TMP/nginx.conf"
    mkdir -p "$dir"
    {
        nginx_head "$dir"
        cat <<EOF
    # Pingora has no per-connection request limit; nginx's default (1000)
    # would close h1 connections and send h2 GOAWAYs during the runs.
    keepalive_requests 1000000;
    ssl_certificate $CERT;
    ssl_certificate_key $KEY;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    ssl_session_timeout 10m;
    log_format resumed '\$ssl_session_reused \$ssl_protocol \$server_protocol \$status';
    server {
        listen 127.0.0.1:$NGINX_PORT ssl http2;
EOF
        nginx_proxy_location
        cat <<EOF
    }
    server {
        listen 127.0.0.1:$NGINX_PROBE_PORT ssl http2;
        access_log $dir/probe-access.log resumed;
EOF
        nginx_proxy_location
        echo "    }"
        echo "}"
    } >"$conf"
    start_nginx_conf nginx "$dir" "$conf"
}

# sluice_tls_section PORT: the [tls] section both Sluice policies share.
sluice_tls_section() {
    cat <<EOF
[tls]
listen = ["127.0.0.1:$1"]
h2 = true

[[tls.certificates]]
cert = "$CERT"
key = "$KEY"
EOF
}

# start_sluice_empty POLICY_PATH / start_sluice_two_filters POLICY_PATH: the two Sluice
# policies of bench/run.sh behind a TLS listener.
start_sluice_empty() {
    start_sluice_bench sluice-empty "$1" "$SLUICE_EMPTY_HTTP" "$SLUICE_EMPTY_ADMIN" empty \
        sluice_tls_section "$SLUICE_EMPTY_PORT"
}
start_sluice_two_filters() {
    start_sluice_bench sluice-two "$1" "$SLUICE_TWO_HTTP" "$SLUICE_TWO_ADMIN" two \
        sluice_tls_section "$SLUICE_TWO_PORT"
}

# ---------------------------------------------------------------- measuring

# seconds 10s|2m|10 -> whole seconds (for timeouts).
seconds() {
    awk -v v="$1" 'BEGIN { n = v; sub(/[a-z]+$/, "", n); u = v; sub(/^[0-9.]+/, "", u);
        if (u == "m") n *= 60; else if (u == "h") n *= 3600; printf "%d", n + 0.999 }'
}

declare -a RESUMPTION=()  # "target|tls1.3|tls1.2"
declare -A NGINX_RPS=()
declare -A NGINX_CPU=()

# add_row TEST TARGET RPS P50 P99 [CPU]: CPU is the target's process tree's CPU µs per
# request over the measured run (n/a when not measured).
add_row() {
    ROWS+=("$1|$2|$3|$4|$5|${6:-n/a}")
    [[ $2 == nginx && $3 != n/a ]] && NGINX_RPS[$1]=$3
    [[ $2 == nginx && ${6:-n/a} != n/a ]] && NGINX_CPU[$1]=$6
    return 0
}

# cpu_ticks NAME: the CPU ticks so far of target NAME's process tree (0 if not running).
cpu_ticks() {
    if [[ -n ${PID_OF[$1]:-} ]]; then proc_ticks "${PID_OF[$1]}"; else echo 0; fi
}

# h2load_done OUT: the requests h2load completed.
h2load_done() {
    awk '/^requests:/ { print $6; exit }' "$1"
}

# wrk_run TEST TARGET PORT [wrk args...]: warm-up, measured run, one row.
wrk_run() {
    local test=$1 name=$2 port=$3 url
    shift 3
    url=$(wrk_url_of "$name" "$port")
    log "$test / $name: wrk warm-up $WARMUP, then $DURATION, -c$CONNECTIONS ($url $*)"
    CPU_PID=${PID_OF[$name]:-} wrk_row "$test|$name" "$TMP/$test-$name.txt" \
        -t"$WRK_THREADS" -c"$CONNECTIONS" "$@" "$url" || return 0
    add_row "$test" "$name" "$WRK_RPS" "$WRK_P50 ms" "$WRK_P99 ms" \
        "$(us_per_request "${WRK_CPU_TICKS:-0}" "$(wrk_stat "$TMP/$test-$name.txt" requests)")"
}

# percentiles LOGFILE -> "p50 p99" in ms, from h2load's --log-file (column 3:
# microseconds from a request's start to the end of its response; failed
# streams, status -1, left out). Nearest-rank percentiles.
percentiles() {
    awk -F '\t' '$2 != -1 { print $3 }' "$1" | sort -n | awk '
        { v[NR] = $1 }
        END {
            if (NR == 0) { print "n/a n/a"; exit }
            i50 = int(NR * 0.50 + 0.999999); i99 = int(NR * 0.99 + 0.999999);
            printf "%.2f %.2f\n", v[i50] / 1000, v[i99] / 1000 }'
}

# h2load_row TEST TARGET OUT REQLOG TICKS: the row of an h2load run (rps from OUT,
# percentiles from its per-request REQLOG, CPU per request from the target's TICKS over
# the run), its failures noted; false (a skipped row) if unparsable.
h2load_row() {
    local test=$1 name=$2 out=$3 reqlog=$4 ticks=$5 rps pcts fails
    rps=$(awk '/^finished in/ { v = $4; gsub(/,/, "", v); printf "%.0f", v }' "$out")
    pcts=$(percentiles "$reqlog")
    if [[ -z $rps || $pcts == "n/a n/a" ]]; then
        skip_row "$test|$name" "could not parse $out / $reqlog"
        return 1
    fi
    fails=$(awk '/^requests:/ { if ($10 + $12 + $14 > 0) print $0 }
                 /^status codes:/ { if ($5 + $7 + $9 > 0) print $0 }' "$out" | paste -sd ';' -)
    [[ -z $fails ]] || note "$test / $name: $fails"
    add_row "$test" "$name" "$rps" "${pcts% *} ms" "${pcts#* } ms" \
        "$(us_per_request "$ticks" "$(h2load_done "$out")")"
}

# h2load_run TEST TARGET PORT: h2 over TLS, warm-up then a measured run with
# per-request logging, one row.
h2load_run() {
    local test=$1 name=$2 port=$3 url out reqlog secs t0 ticks
    url=$(url_of "$name" "$port")
    secs=$(($(seconds "$DURATION") + 60))
    log "$test / $name: h2load warm-up $WARMUP, then $DURATION, -c$H2_CLIENTS -m$H2_STREAMS ($url)"
    timeout -k 5 "$secs" h2load -t"$H2_THREADS" -c"$H2_CLIENTS" -m"$H2_STREAMS" -D "$WARMUP" \
        --connect-to="127.0.0.1:$port" "$url" >"$TMP/$test-$name-warmup.txt" 2>&1 || true
    out="$TMP/$test-$name.txt"
    reqlog="$TMP/$test-$name.requests.tsv"
    t0=$(cpu_ticks "$name")
    if ! timeout -k 5 "$secs" h2load -t"$H2_THREADS" -c"$H2_CLIENTS" -m"$H2_STREAMS" -D "$DURATION" \
        --connect-to="127.0.0.1:$port" --log-file="$reqlog" "$url" >"$out" 2>&1; then
        skip_row "$test|$name" "h2load failed or timed out, see $out"
        return 0
    fi
    ticks=$(($(cpu_ticks "$name") - t0))
    if ! grep -q '^Application protocol: h2' "$out"; then
        skip_row "$test|$name" "h2 was not negotiated, see $out"
        return 0
    fi
    h2load_row "$test" "$name" "$out" "$reqlog" "$ticks" || return 0
    NOTES+=("$test / $name: negotiated $(awk -F': ' '/^(TLS Protocol|Cipher|Server Temp Key|Application protocol):/ {
        printf "%s%s", sep, $2; sep = ", " }' "$out")")
}

# newconn_run TEST TARGET PORT: one request per connection (HTTP/1.1,
# Connection: close), $NEWCONN_REQUESTS requests over $CONNECTIONS clients
# that reconnect after every answer, after a warm-up of a tenth of that. h2load
# keeps each client's OpenSSL session across reconnects, so every handshake
# but a client's first is a resumption (counted against nginx's probe block).
# Count-based: h2load 1.52's timing mode (-D) never ends when the server
# closes connections.
newconn_run() {
    local test=$1 name=$2 port=$3 url out reqlog t0
    url=$(url_of "$name" "$port")
    log "$test / $name: h2load warm-up $((NEWCONN_REQUESTS / 10)), then $NEWCONN_REQUESTS requests, one per connection, -c$CONNECTIONS ($url)"
    timeout -k 5 120 h2load --h1 -H 'Connection: close' -t"$H2_THREADS" -c"$CONNECTIONS" \
        -n "$((NEWCONN_REQUESTS / 10))" --connect-to="127.0.0.1:$port" "$url" \
        >"$TMP/$test-$name-warmup.txt" 2>&1 || true
    out="$TMP/$test-$name.txt"
    reqlog="$TMP/$test-$name.requests.tsv"
    t0=$(cpu_ticks "$name")
    if ! timeout -k 5 300 h2load --h1 -H 'Connection: close' -t"$H2_THREADS" -c"$CONNECTIONS" \
        -n "$NEWCONN_REQUESTS" --connect-to="127.0.0.1:$port" --log-file="$reqlog" "$url" >"$out" 2>&1; then
        skip_row "$test|$name" "h2load failed or timed out, see $out"
        return 0
    fi
    h2load_row "$test" "$name" "$out" "$reqlog" "$(($(cpu_ticks "$name") - t0))"
}

# resumption_check TARGET PORT TLSFLAG: 5 connections in a chain, each
# offering the session saved by the previous one (-sess_in/-sess_out) and
# sending one request (so TLS 1.3 tickets are read); prints "reused/4" (the
# first connection is a full handshake).
resumption_check() {
    local name=$1 port=$2 flag=$3 i reused=0 in=() out
    for ((i = 0; i < 5; i++)); do
        out="$TMP/sess-$name$flag-$i.pem"
        printf 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$BENCH_PATH" "$TLS_NAME" |
            timeout 10 openssl s_client -connect "127.0.0.1:$port" -servername "$TLS_NAME" \
                -CAfile "$CA" -verify_return_error -alpn http/1.1 "$flag" -ign_eof \
                -sess_out "$out" "${in[@]}" >"$TMP/s_client-$name$flag-$i.txt" 2>&1 || true
        if ((i > 0)) && grep -q '^Reused, ' "$TMP/s_client-$name$flag-$i.txt"; then
            reused=$((reused + 1))
        fi
        # A resumed TLS 1.2 session is not saved again: keep offering the old one.
        [[ -s $out ]] && in=(-sess_in "$out")
    done
    echo "$reused/4"
}

# probe_resumption: the newconn load (h2load, 2000 requests) against nginx's
# probe server block; prints "resumed/total" handshakes from
# $ssl_session_reused.
probe_resumption() {
    local logf="$TMP/nginx/probe-access.log" total resumed
    : >"$logf"
    timeout -k 5 60 h2load --h1 -H 'Connection: close' -t"$H2_THREADS" -c"$CONNECTIONS" -n 2000 \
        --connect-to="127.0.0.1:$NGINX_PROBE_PORT" "https://$TLS_NAME:$NGINX_PROBE_PORT$BENCH_PATH" \
        >"$TMP/probe-h2load.txt" 2>&1 || true
    sleep 0.5
    total=$(wc -l <"$logf")
    resumed=$(grep -c '^r ' "$logf" || true)
    echo "$resumed/$total"
}

has_test() { [[ " $TESTS " == *" $1 "* ]]; }

# bench_loads NAME PORT: every load against one running target.
bench_loads() {
    local name=$1 port=$2
    if has_test h1; then
        wrk_run h1 "$name" "$port"
    fi
    if has_test h2; then
        if [[ $name == origin ]]; then
            add_row h2 origin n/a n/a n/a
        else
            h2load_run h2 "$name" "$port"
        fi
    fi
    if has_test newconn; then
        newconn_run newconn "$name" "$port"
    fi
}

# bench_target NAME PORT (called by run_target): check resumption, then every load.
bench_target() {
    local name=$1 port=$2
    RESUMPTION+=("$name|$(resumption_check "$name" "$port" -tls1_3)|$(resumption_check "$name" "$port" -tls1_2)")
    bench_loads "$name" "$port"
    if [[ $name == nginx ]] && has_test newconn; then
        NOTES+=("nginx probe: the newconn load (h2load, 2000 requests) resumed $(probe_resumption) TLS handshakes (\$ssl_session_reused)")
    fi
}

# skip_target NAME REASON: one skipped row per load.
skip_target() {
    local t
    for t in $TESTS; do skip_row "$t|$1" "$2"; done
}

print_table() {
    local row test name rps p50 p99 cpu
    {
        echo "| load | target | rps | p50 | p99 | rps vs nginx | CPU µs/req | CPU vs nginx |"
        echo "|---|---|---:|---:|---:|---:|---:|---:|"
        for row in "${ROWS[@]}"; do
            IFS='|' read -r test name rps p50 p99 cpu <<<"$row"
            echo "| $test | $name | $rps | $p50 | $p99 | $(ratio "$rps" "${NGINX_RPS[$test]:-}") | ${cpu:-n/a} | $(ratio "${cpu:-n/a}" "${NGINX_CPU[$test]:-}") |"
        done
        if ((${#RESUMPTION[@]} > 0)); then
            echo
            echo "| target | openssl s_client -sess_in: reused, TLS 1.3 | reused, TLS 1.2 |"
            echo "|---|---:|---:|"
            for row in "${RESUMPTION[@]}"; do
                IFS='|' read -r name a b <<<"$row"
                echo "| $name | $a | $b |"
            done
        fi
        if ((${#NOTES[@]} > 0)); then
            echo
            for row in "${NOTES[@]}"; do
                echo "- $row"
            done
        fi
    } | tee "$RESULTS"
}

# ---------------------------------------------------------------- main

for tool in wrk h2load curl openssl; do
    command -v "$tool" >/dev/null ||
        die "$tool not found (Debian: apt-get install wrk nghttp2-client curl openssl)"
done
[[ -x $REL/sluice-origin ]] || die "$REL/sluice-origin missing (cargo build --release -p sluice-origin)"
ulimit -n 65536 2>/dev/null || ulimit -n 8192 2>/dev/null || true

check_ports "$ORIGIN_PORT" "$NGINX_PORT" "$NGINX_PROBE_PORT" "$SLUICE_EMPTY_PORT" "$SLUICE_TWO_PORT" \
    "$SLUICE_EMPTY_HTTP" "$SLUICE_TWO_HTTP" "$SLUICE_EMPTY_ADMIN" "$SLUICE_TWO_ADMIN"

make_pki
if [[ $(getent ahosts "$WRK_HOST" | awk '{ print $1 }' | sort -u) != 127.0.0.1 ]]; then
    die "$WRK_HOST must resolve to 127.0.0.1 only (wrk connects to it); set WRK_HOST"
fi

log "results and logs: $TMP"
{
    env_lines
    echo "openssl:  $(openssl version)"
    echo "h2load:   $(h2load --version 2>&1 | head -1)"
    echo "wrk:      -t$WRK_THREADS -c$CONNECTIONS -d$DURATION --latency (warm-up $WARMUP), path $BENCH_PATH"
    echo "h2load:   -t$H2_THREADS -c$H2_CLIENTS -m$H2_STREAMS -D $DURATION (warm-up $WARMUP)"
    echo "newconn:  h2load --h1 -H 'Connection: close' -t$H2_THREADS -c$CONNECTIONS -n $NEWCONN_REQUESTS"
    echo "threads:  proxies $THREADS, origin $ORIGIN_THREADS"
    echo "cert:     ECDSA P-256 leaf for $TLS_NAME signed by a bench CA ($CERT)"
} | tee "$TMP/env.txt" >&2

warn_if_busy

start_origin
tls_ready origin "$ORIGIN_PORT" || die "the origin did not start"
bench_loads origin "$ORIGIN_PORT"
still_running origin || true

run_nginx_target "$NGINX_PORT" start_nginx

run_sluice_targets "$SLUICE_EMPTY_PORT" "$SLUICE_TWO_PORT"

stop origin
note "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min; at the start: $(awk '/^load:/ { print $2, $3, $4 }' "$TMP/env.txt"))"

# Rows in load order (h1, h2, newconn), targets in run order within a load.
declare -a SORTED=()
for t in $TESTS; do
    for row in "${ROWS[@]}"; do
        [[ ${row%%|*} == "$t" ]] && SORTED+=("$row")
    done
done
ROWS=("${SORTED[@]}")

echo
print_table
echo
log "raw outputs, logs, policies, certificates and results.md: $TMP"
