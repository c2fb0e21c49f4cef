#!/usr/bin/env bash
# Sluice TLS benchmark (issue #7), on loopback, of TLS termination by
#   nginx         nginx terminating TLS, reverse proxy to the origin
#   sluice-empty  Sluice's [tls] listener, a policy with no filters
#   sluice-two    Sluice's [tls] listener, the two-filter chain of bench/run.sh
# with the SAME certificate (an ECDSA P-256 leaf signed by a CA, both made here
# with openssl), all proxying to the demo origin (sluice-origin, HTTP/1.1,
# upstream keep-alive). The origin hit directly in cleartext is the ceiling.
#
# Three loads, each measured run after a warm-up:
#   h1      HTTP/1.1 over TLS, keep-alive:      wrk -t2 -c64 -d10s --latency
#   h2      HTTP/2 over TLS (ALPN h2):          h2load -t2 -c32 -m10 -D 10s,
#           p50/p99 computed from h2load's --log-file (per-request latencies)
#   newconn one request per TLS connection (HTTP/1.1, Connection: close),
#           every connection but a client's first one resumed with the
#           session of its previous one: h2load --h1 -H 'Connection: close'
#           -t2 -c64 -n 10000 (h2load keeps the OpenSSL session across
#           reconnects; checked, see below). Latencies are per request, from
#           the request's start: they leave out TCP connect and handshake.
#
# Like bench/run.sh, every server (origin, nginx, sluice-empty, sluice-two) starts
# once, each on its own ports, and stays up; then ROUNDS interleaved rounds. A round
# runs every load of TESTS in turn and, for each load, every target once (warm-up,
# then the measured run, with the CPU time of the target's process tree read from
# /proc around the measured run). The target order rotates by one each round, so no
# target always runs first. Per load and target the table gives the medians over
# the rounds of rps, p50, p99 and CPU µs/request, each round's CPU µs/request ("CPU
# by round", in round order: the spread), and the rps and CPU ratios to nginx's
# medians. On a shared machine compare rows of one run, not runs.
#
# Resumption is checked, not assumed, once per target before the rounds: a chain of
# `openssl s_client -sess_in -sess_out` connections must say "Reused" (TLS 1.3 and
# TLS 1.2) against each server, and a probe server block of nginx, with an access
# log of $ssl_session_reused, counts how many of the newconn handshakes resumed.
#
# Usage: bash bench/tls.sh            (from anywhere; needs the release binaries)
#   e.g. ROUNDS=5 SLUICE_BIN=/path/to/sluice bash bench/tls.sh
# Knobs (environment):
#   ROUNDS=3                  interleaved rounds (each: every load against every target)
#   THREADS=2                 proxy threads (nginx worker_processes, Sluice threads)
#   ORIGIN_THREADS=$THREADS   origin worker threads
#   WRK_THREADS=2 CONNECTIONS=64          wrk (h1); CONNECTIONS also newconn's clients
#   NEWCONN_REQUESTS=10000    newconn requests (= TLS connections) per target and round
#   H2_THREADS=2 H2_CLIENTS=32 H2_STREAMS=10   h2load, h2 (H2_THREADS also newconn)
#   DURATION=10s WARMUP=2s    measured run and warm-up of h1 and h2 (per target and round)
#   BENCH_PATH=/hello.txt     path requested
#   TLS_NAME=bench.test       certificate name, SNI and Host of h2load
#   WRK_HOST=localhost        SNI and Host of wrk (no --connect-to in wrk)
#   ORIGIN_PORT=18480 NGINX_PORT=18443 NGINX_PROBE_PORT=18446
#   SLUICE_EMPTY_PORT=18444 SLUICE_TWO_PORT=18445        TLS listeners
#   SLUICE_EMPTY_HTTP=18484 SLUICE_TWO_HTTP=18485        Sluice cleartext listeners
#   SLUICE_EMPTY_ADMIN=19941 SLUICE_TWO_ADMIN=19942
#   SKIP_NGINX=0 SKIP_SLUICE=0   1: those targets are not started (n/a rows)
#   TESTS="h1 h2 newconn"     loads to run (and the table's order)
#   REL=target/release        where sluice-origin is
#   SLUICE_BIN=$REL/sluice    the Sluice binary
#   BEFORE_BIN=               another Sluice binary (e.g. before a change): adds the row
#                             sluice-empty-before, the empty chain run by it, measured in
#                             the same rounds (SLUICE_BEFORE_PORT=18447 SLUICE_BEFORE_HTTP=18487
#                             SLUICE_BEFORE_ADMIN=19943)
#   FILTERS_OUT=filters/out   where headers.wasm is (sluice-two)
#   READY_SECS=15             how long a server may take to answer after its start
#
# It does not build anything: run `cargo build --release -p sluice-origin -p
# sluice` (and filters/build.sh for the two-filter row) first.
# Load generators and servers share the machine's cores; nothing is pinned.
# Results (results.md) and every raw output (file names end in -rROUND) stay in
# /tmp/sluice-tls-bench.XXXXXX; every server is stopped on exit and on Ctrl-C.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

ROUNDS=${ROUNDS:-3}
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
BEFORE_BIN=${BEFORE_BIN:-}
SLUICE_BEFORE_PORT=${SLUICE_BEFORE_PORT:-18447}
SLUICE_BEFORE_HTTP=${SLUICE_BEFORE_HTTP:-18487}
SLUICE_BEFORE_ADMIN=${SLUICE_BEFORE_ADMIN:-19943}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sluice-tls-bench.XXXXXX")
RESULTS="$TMP/results.md"
CERT="$TMP/pki/cert.pem"
KEY="$TMP/pki/key.pem"
CA="$TMP/pki/ca.pem"

BENCH_TAG=tls-bench
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
start_sluice_empty_before() {
    SLUICE_BIN=$BEFORE_BIN start_sluice_bench sluice-empty-before "$1" "$SLUICE_BEFORE_HTTP" \
        "$SLUICE_BEFORE_ADMIN" empty sluice_tls_section "$SLUICE_BEFORE_PORT"
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

# The targets, in the table's order, and the port each load hits.
TARGETS=(origin nginx sluice-empty sluice-two)
[[ -z $BEFORE_BIN ]] || TARGETS=(origin nginx sluice-empty-before sluice-empty sluice-two)
declare -A PORT_OF=(
    [origin]=$ORIGIN_PORT [nginx]=$NGINX_PORT [sluice-empty-before]=$SLUICE_BEFORE_PORT
    [sluice-empty]=$SLUICE_EMPTY_PORT [sluice-two]=$SLUICE_TWO_PORT
)

declare -a RESUMPTION=() ROUND_ORDERS=() # "target|tls1.3|tls1.2"; "origin, nginx, ..."
# Per "load|target", one value per round (space-separated, in round order): rps, p50 and
# p99 (ms) of the rounds that measured, CPU µs/req of every round (n/a when not measured).
declare -A RPS_L=() P50_L=() P99_L=() CPU_R=() NEGOTIATED=() FAILED=()

# record TEST TARGET RPS P50 P99 CPU: one measured run's figures (p50 and p99 in ms).
record() {
    local key="$1|$2"
    RPS_L[$key]+="$3 "
    P50_L[$key]+="$4 "
    P99_L[$key]+="$5 "
    CPU_R[$key]+="$6 "
}

# run_failed TEST TARGET ROUND REASON: a round without figures, and why.
run_failed() {
    CPU_R[$1|$2]+="n/a "
    note "$1 / $2, round $3: no figures ($4)"
}

# cpu_ticks NAME: the CPU ticks so far of target NAME's process tree (0 if not running).
cpu_ticks() {
    if [[ -n ${PID_OF[$1]:-} ]]; then proc_ticks "${PID_OF[$1]}"; else echo 0; fi
}

# h2load_done OUT: the requests h2load completed.
h2load_done() {
    awk '/^requests:/ { print $6; exit }' "$1"
}

# wrk_round TEST TARGET ROUND: h1 keep-alive, warm-up then a measured wrk run.
wrk_round() {
    local test=$1 name=$2 round=$3 url out rps p50 p99 n errs
    url=$(wrk_url_of "$name" "${PORT_OF[$name]}")
    out="$TMP/$test-$name-r$round.txt"
    log "round $round/$ROUNDS, $test / $name: wrk warm-up $WARMUP, then $DURATION, -c$CONNECTIONS ($url)"
    if ! CPU_PID=${PID_OF[$name]} wrk_warm_run "$out" -t"$WRK_THREADS" -c"$CONNECTIONS" "$url"; then
        run_failed "$test" "$name" "$round" "wrk failed, see $out"
        return 0
    fi
    rps=$(wrk_stat "$out" rps)
    p50=$(wrk_stat "$out" p50)
    p99=$(wrk_stat "$out" p99)
    n=$(wrk_stat "$out" requests)
    if [[ -z $rps || -z $p50 || -z $p99 || -z $n ]]; then
        run_failed "$test" "$name" "$round" "could not parse $out"
        return 0
    fi
    errs=$(wrk_stat "$out" errors)
    [[ -z $errs ]] || note "$test / $name, round $round: $errs"
    record "$test" "$name" "$(printf '%.0f' "$rps")" "$(to_ms "$p50")" "$(to_ms "$p99")" \
        "$(us_per_request "${WRK_CPU_TICKS:-0}" "$n")"
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

# h2load_record TEST TARGET ROUND OUT REQLOG TICKS: the figures of an h2load run (rps from
# OUT, percentiles from its per-request REQLOG, CPU per request from the target's TICKS
# over the run), its failures noted; false (a round without figures) if unparsable.
h2load_record() {
    local test=$1 name=$2 round=$3 out=$4 reqlog=$5 ticks=$6 rps pcts fails
    rps=$(awk '/^finished in/ { v = $4; gsub(/,/, "", v); printf "%.0f", v }' "$out")
    pcts=$(percentiles "$reqlog")
    if [[ -z $rps || $pcts == "n/a n/a" ]]; then
        run_failed "$test" "$name" "$round" "could not parse $out / $reqlog"
        return 1
    fi
    fails=$(awk '/^requests:/ { if ($10 + $12 + $14 > 0) print $0 }
                 /^status codes:/ { if ($5 + $7 + $9 > 0) print $0 }' "$out" | paste -sd ';' -)
    [[ -z $fails ]] || note "$test / $name, round $round: $fails"
    record "$test" "$name" "$rps" "${pcts% *}" "${pcts#* }" "$(us_per_request "$ticks" "$(h2load_done "$out")")"
}

# h2load_round TEST TARGET ROUND: h2 over TLS, warm-up then a measured run with
# per-request logging. The negotiated protocol, cipher and key exchange are noted
# once per target (again if a later round differs).
h2load_round() {
    local test=$1 name=$2 round=$3 port url out reqlog secs t0 ticks neg
    port=${PORT_OF[$name]}
    url=$(url_of "$name" "$port")
    secs=$(($(seconds "$DURATION") + 60))
    out="$TMP/$test-$name-r$round.txt"
    reqlog="$TMP/$test-$name-r$round.requests.tsv"
    log "round $round/$ROUNDS, $test / $name: h2load warm-up $WARMUP, then $DURATION, -c$H2_CLIENTS -m$H2_STREAMS ($url)"
    timeout --foreground -k 5 "$secs" h2load -t"$H2_THREADS" -c"$H2_CLIENTS" -m"$H2_STREAMS" -D "$WARMUP" \
        --connect-to="127.0.0.1:$port" "$url" >"${out%.txt}-warmup.txt" 2>&1 || true
    t0=$(cpu_ticks "$name")
    if ! timeout --foreground -k 5 "$secs" h2load -t"$H2_THREADS" -c"$H2_CLIENTS" -m"$H2_STREAMS" -D "$DURATION" \
        --connect-to="127.0.0.1:$port" --log-file="$reqlog" "$url" >"$out" 2>&1; then
        run_failed "$test" "$name" "$round" "h2load failed or timed out, see $out"
        return 0
    fi
    ticks=$(($(cpu_ticks "$name") - t0))
    if ! grep -q '^Application protocol: h2' "$out"; then
        run_failed "$test" "$name" "$round" "h2 was not negotiated, see $out"
        return 0
    fi
    h2load_record "$test" "$name" "$round" "$out" "$reqlog" "$ticks" || return 0
    neg=$(awk -F': ' '/^(TLS Protocol|Cipher|Server Temp Key|Application protocol):/ {
        printf "%s%s", sep, $2; sep = ", " }' "$out")
    if [[ ${NEGOTIATED[$name]:-} != "$neg" ]]; then
        NOTES+=("$test / $name: negotiated $neg$([[ -z ${NEGOTIATED[$name]:-} ]] || echo " (from round $round on)")")
        NEGOTIATED[$name]=$neg
    fi
}

# newconn_round TEST TARGET ROUND: one request per connection (HTTP/1.1,
# Connection: close), $NEWCONN_REQUESTS requests over $CONNECTIONS clients
# that reconnect after every answer, after a warm-up of a tenth of that. h2load
# keeps each client's OpenSSL session across reconnects, so every handshake
# but a client's first is a resumption (counted against nginx's probe block).
# Count-based: h2load 1.52's timing mode (-D) never ends when the server
# closes connections.
newconn_round() {
    local test=$1 name=$2 round=$3 port url out reqlog t0
    port=${PORT_OF[$name]}
    url=$(url_of "$name" "$port")
    out="$TMP/$test-$name-r$round.txt"
    reqlog="$TMP/$test-$name-r$round.requests.tsv"
    log "round $round/$ROUNDS, $test / $name: h2load warm-up $((NEWCONN_REQUESTS / 10)), then $NEWCONN_REQUESTS requests, one per connection, -c$CONNECTIONS ($url)"
    timeout --foreground -k 5 120 h2load --h1 -H 'Connection: close' -t"$H2_THREADS" -c"$CONNECTIONS" \
        -n "$((NEWCONN_REQUESTS / 10))" --connect-to="127.0.0.1:$port" "$url" \
        >"${out%.txt}-warmup.txt" 2>&1 || true
    t0=$(cpu_ticks "$name")
    if ! timeout --foreground -k 5 300 h2load --h1 -H 'Connection: close' -t"$H2_THREADS" -c"$CONNECTIONS" \
        -n "$NEWCONN_REQUESTS" --connect-to="127.0.0.1:$port" --log-file="$reqlog" "$url" >"$out" 2>&1; then
        run_failed "$test" "$name" "$round" "h2load failed or timed out, see $out"
        return 0
    fi
    h2load_record "$test" "$name" "$round" "$out" "$reqlog" "$(($(cpu_ticks "$name") - t0))" || true
}

# run_load TEST TARGET ROUND: one load against one target, one round.
run_load() {
    case $1 in
        h1) wrk_round "$@" ;;
        h2) h2load_round "$@" ;;
        newconn) newconn_round "$@" ;;
    esac
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
            timeout --foreground 10 openssl s_client -connect "127.0.0.1:$port" -servername "$TLS_NAME" \
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
    timeout --foreground -k 5 60 h2load --h1 -H 'Connection: close' -t"$H2_THREADS" -c"$CONNECTIONS" -n 2000 \
        --connect-to="127.0.0.1:$NGINX_PROBE_PORT" "https://$TLS_NAME:$NGINX_PROBE_PORT$BENCH_PATH" \
        >"$TMP/probe-h2load.txt" 2>&1 || true
    sleep 0.5
    total=$(wc -l <"$logf")
    resumed=$(grep -c '^r ' "$logf" || true)
    echo "$resumed/$total"
}

has_test() { [[ " $TESTS " == *" $1 "* ]]; }

# skip_target NAME REASON: NAME is not measured (n/a rows), and why.
skip_target() {
    FAILED[$1]=1
    note "$1: skipped ($2)"
}

# can_start NAME: true when NAME may run here (else skip_target).
can_start() {
    case $1 in
        nginx)
            if [[ $SKIP_NGINX == 1 ]]; then
                skip_target nginx "SKIP_NGINX=1"
                return 1
            fi
            command -v nginx >/dev/null || {
                skip_target nginx "nginx not installed: apt-get install nginx-light"
                return 1
            }
            ;;
        sluice-*)
            if [[ $SKIP_SLUICE == 1 ]]; then
                skip_target "$1" "SKIP_SLUICE=1"
                return 1
            fi
            local bin=$SLUICE_BIN
            [[ $1 != sluice-empty-before ]] || bin=$BEFORE_BIN
            [[ -x $bin ]] || {
                skip_target "$1" "$bin missing"
                return 1
            }
            if [[ $1 == sluice-two && ! -f $FILTERS_OUT/headers.wasm ]]; then
                skip_target "$1" "$FILTERS_OUT/headers.wasm missing (run filters/build.sh)"
                return 1
            fi
            ;;
    esac
}

# start_target NAME: starts NAME and waits until it proxies to the origin over TLS.
start_target() {
    case $1 in
        nginx) start_nginx ;;
        sluice-empty) start_sluice_empty "$TMP/policy-empty.toml" ;;
        sluice-empty-before) start_sluice_empty_before "$TMP/policy-empty-before.toml" ;;
        sluice-two) start_sluice_two_filters "$TMP/policy-two.toml" ;;
        *) die "unknown target $1" ;;
    esac || return 1
    tls_ready "$1" "${PORT_OF[$1]}"
}

# ---------------------------------------------------------------- report

# med LIST: the median of the numbers in the space-separated LIST (n/a for none).
med() { tr ' ' '\n' <<<"${1:-}" | awk '$1 ~ /^[0-9]+(\.[0-9]+)?$/' | median; }
# fmt VALUE FORMAT: printf FORMAT VALUE, or n/a when VALUE is not a number.
fmt() { awk -v v="$1" -v f="$2" 'BEGIN { if (v ~ /^[0-9]+(\.[0-9]+)?$/) printf f, v; else print "n/a" }'; }

print_table() {
    local test name key row a b rps cpu rounds nginx_rps nginx_cpu
    echo "Medians over $ROUNDS interleaved round(s); CPU by round: each round's CPU µs/req, rounds 1..$ROUNDS."
    echo
    echo "| load | target | rps | p50 | p99 | rps vs nginx | CPU µs/req | CPU by round | CPU vs nginx |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
    for test in $TESTS; do
        nginx_rps=$(med "${RPS_L[$test|nginx]:-}")
        nginx_cpu=$(med "${CPU_R[$test|nginx]:-}")
        for name in "${TARGETS[@]}"; do
            key="$test|$name"
            rps=$(med "${RPS_L[$key]:-}")
            cpu=$(med "${CPU_R[$key]:-}")
            rounds=$(awk '{ $1 = $1; gsub(/ /, ", "); print }' <<<"${CPU_R[$key]:-}")
            echo "| $test | $name | $(fmt "$rps" %.0f) | $(fmt "$(med "${P50_L[$key]:-}")" '%.2f ms') | $(fmt "$(med "${P99_L[$key]:-}")" '%.2f ms') | $(ratio "$rps" "$nginx_rps") | $(fmt "$cpu" %.1f) | ${rounds:-n/a} | $(ratio "$cpu" "$nginx_cpu") |"
        done
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
    echo
    for row in "${ROUND_ORDERS[@]}"; do
        echo "- $row"
    done
    for row in "${NOTES[@]}"; do
        echo "- $row"
    done
    echo
    echo "Command: ROUNDS=$ROUNDS TESTS=\"$TESTS\" SKIP_NGINX=$SKIP_NGINX SKIP_SLUICE=$SKIP_SLUICE THREADS=$THREADS ORIGIN_THREADS=$ORIGIN_THREADS WRK_THREADS=$WRK_THREADS CONNECTIONS=$CONNECTIONS H2_THREADS=$H2_THREADS H2_CLIENTS=$H2_CLIENTS H2_STREAMS=$H2_STREAMS NEWCONN_REQUESTS=$NEWCONN_REQUESTS DURATION=$DURATION WARMUP=$WARMUP BENCH_PATH=$BENCH_PATH SLUICE_BIN=$SLUICE_BIN${BEFORE_BIN:+ BEFORE_BIN=$BEFORE_BIN} bash bench/tls.sh"
}

# ---------------------------------------------------------------- main

for tool in wrk h2load curl openssl; do
    command -v "$tool" >/dev/null ||
        die "$tool not found (Debian: apt-get install wrk nghttp2-client curl openssl)"
done
[[ -x $REL/sluice-origin ]] || die "$REL/sluice-origin missing (cargo build --release -p sluice-origin)"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
for t in $TESTS; do
    [[ $t == h1 || $t == h2 || $t == newconn ]] || die "unknown load $t in TESTS (h1 h2 newconn)"
done
ulimit -n 65536 2>/dev/null || ulimit -n 8192 2>/dev/null || true

check_ports "$ORIGIN_PORT" "$NGINX_PORT" "$NGINX_PROBE_PORT" "$SLUICE_EMPTY_PORT" "$SLUICE_TWO_PORT" \
    "$SLUICE_EMPTY_HTTP" "$SLUICE_TWO_HTTP" "$SLUICE_EMPTY_ADMIN" "$SLUICE_TWO_ADMIN"
[[ -z $BEFORE_BIN ]] || check_ports "$SLUICE_BEFORE_PORT" "$SLUICE_BEFORE_HTTP" "$SLUICE_BEFORE_ADMIN"

make_pki
if [[ $(getent ahosts "$WRK_HOST" | awk '{ print $1 }' | sort -u) != 127.0.0.1 ]]; then
    die "$WRK_HOST must resolve to 127.0.0.1 only (wrk connects to it); set WRK_HOST"
fi

log "results and logs: $TMP"
{
    env_lines
    echo "openssl:  $(openssl version)"
    echo "h2load:   $(h2load --version 2>&1 | head -1)"
    echo "rounds:   $ROUNDS interleaved (every load against every target per round, order rotated), loads: $TESTS"
    echo "wrk:      -t$WRK_THREADS -c$CONNECTIONS -d$DURATION --latency (warm-up $WARMUP), path $BENCH_PATH"
    echo "h2load:   -t$H2_THREADS -c$H2_CLIENTS -m$H2_STREAMS -D $DURATION (warm-up $WARMUP)"
    echo "newconn:  h2load --h1 -H 'Connection: close' -t$H2_THREADS -c$CONNECTIONS -n $NEWCONN_REQUESTS (warm-up $((NEWCONN_REQUESTS / 10)))"
    echo "threads:  proxies $THREADS, origin $ORIGIN_THREADS"
    echo "sluice:   $SLUICE_BIN ($(stat -c '%y' "$SLUICE_BIN" 2>/dev/null | cut -d. -f1 || echo missing))"
    [[ -z $BEFORE_BIN ]] || echo "before:   $BEFORE_BIN ($(stat -c '%y' "$BEFORE_BIN" 2>/dev/null | cut -d. -f1 || echo missing))"
    echo "cert:     ECDSA P-256 leaf for $TLS_NAME signed by a bench CA ($CERT)"
} | tee "$TMP/env.txt" >&2

warn_if_busy

# Every server starts once, on its own ports, and stays up for all rounds.
start_origin
tls_ready origin "$ORIGIN_PORT" || die "the origin did not start"
active=(origin)
for name in "${TARGETS[@]:1}"; do
    can_start "$name" || continue
    if start_target "$name"; then
        active+=("$name")
    else
        skip_target "$name" "did not start, see $TMP/$name.log"
        stop "$name"
    fi
done
log "targets: ${active[*]}"

# Resumption, once per TLS target, before the rounds.
for name in "${active[@]}"; do
    [[ $name == origin ]] && continue
    log "$name: session resumption check (openssl s_client -sess_in, TLS 1.3 and 1.2)"
    RESUMPTION+=("$name|$(resumption_check "$name" "${PORT_OF[$name]}" -tls1_3)|$(resumption_check "$name" "${PORT_OF[$name]}" -tls1_2)")
done
if [[ " ${active[*]} " == *" nginx "* ]] && has_test newconn; then
    log "nginx probe: resumed handshakes of the newconn load"
    NOTES+=("nginx probe: the newconn load (h2load, 2000 requests) resumed $(probe_resumption) TLS handshakes (\$ssl_session_reused)")
fi

n=${#active[@]}
for ((round = 1; round <= ROUNDS; round++)); do
    # rotate the order by one each round: no target always runs first or last
    order=()
    for ((i = 0; i < n; i++)); do
        order+=("${active[$(((i + round - 1) % n))]}")
    done
    ROUND_ORDERS+=("round $round: $(IFS=,; echo "${order[*]}" | sed 's/,/, /g')")
    log "round $round/$ROUNDS: ${order[*]}"
    for test in $TESTS; do
        for name in "${order[@]}"; do
            [[ $test == h2 && $name == origin ]] && continue # the origin has no TLS, no h2
            if ! still_running origin; then
                note "the origin exited in round $round: the table has the rounds before"
                break 3
            fi
            if [[ -n ${FAILED[$name]:-} ]] || ! still_running "$name"; then
                FAILED[$name]=1
                CPU_R[$test|$name]+="n/a "
                continue
            fi
            run_load "$test" "$name" "$round"
        done
    done
done

for name in "${active[@]}"; do
    [[ $name == origin ]] || stop "$name"
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
log "raw outputs (-rROUND), logs, policies, certificates and results.md: $TMP"
