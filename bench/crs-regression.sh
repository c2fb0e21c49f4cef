#!/usr/bin/env bash
# The Core Rule Set's regression tests against nginx + libmodsecurity 3 and against
# Sluice's WAF, same tests, same CRS test configuration, same scoring: both servers run
# on loopback in front of the same backend, and `sluice test --target URL --log FILE`
# scores each as go-ftw does (marker requests around each stage, the rule ids logged
# between them: ModSecurity's `[id "N"]` error-log lines, Sluice's WAF audit lines).
#
# Usage: bash bench/crs-regression.sh CRS_DIR [TESTS_DIR]
#   CRS_DIR    a Core Rule Set checkout (rules/, crs-setup.conf.example,
#              tests/regression/tests/), 3.x or 4.x
#   TESTS_DIR  default CRS_DIR/tests/regression/tests (a subdirectory runs a part)
# Prints both pass rates and the tests on which the two differ; keeps the configs, logs
# and JSON reports in a temp dir whose path it prints.
#
# The CRS test configuration (tests/regression/README.md of the checkout): the engine in
# DetectionOnly, paranoia 4, 910000 removed, UTF-8 validation on, the argument limits
# the README's rule 900005 sets (CRS 4 adds its max_num_args and file-size limits), the
# response body inspected for text/plain, text/html, text/xml and application/json (the
# CRS test containers' setting); a marker rule (999999) logs X-CRS-Test and removes
# every other rule for the marker request. The backend (bench/crs-backend.py) answers
# CRS 4's POST /reflect with the response it asks for, and 200 to anything else.
#
# Knobs (environment): BUILD=1 (0: use target/release/sluice and filters/out/waf.wasm
#   as they are), ONLY=both|modsec|sluice, TIMEOUT=5 (seconds per response),
#   ports BACKEND_PORT=23481 MODSEC_PORT=23482 SLUICE_PORT=23483 SLUICE_ADMIN=23484.
# Needs: nginx, libnginx-mod-http-modsecurity (scripts/setup.sh), python3.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CRS=$(cd "${1:?usage: crs-regression.sh CRS_DIR [TESTS_DIR]}" && pwd)
TESTS=${2:-$CRS/tests/regression/tests}
BACKEND_PORT=${BACKEND_PORT:-23481}
MODSEC_PORT=${MODSEC_PORT:-23482}
SLUICE_PORT=${SLUICE_PORT:-23483}
SLUICE_ADMIN=${SLUICE_ADMIN:-23484}
ONLY=${ONLY:-both}
TIMEOUT=${TIMEOUT:-5}
WAF_WASM=${WAF_WASM:-$ROOT/filters/out/waf.wasm}
THREADS=${THREADS:-1}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sluice-crs-regression.XXXXXX")
chmod 755 "$TMP"
BENCH_TAG=crs-regression
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

[[ -d $CRS/rules && -f $CRS/crs-setup.conf.example ]] || die "$CRS: not a CRS checkout"
[[ -d $TESTS ]] || die "$TESTS: no tests"
if [[ $BUILD == 1 ]]; then
    log "building sluice (release) and the WAF filter"
    (cd "$ROOT" && cargo build --release -p sluice -q)
    (cd "$ROOT" && RUSTC=${RUSTC:-/usr/bin/rustc} filters/build.sh >/dev/null)
fi

# CRS 4 names its paranoia levels blocking/detection; CRS 3 has one.
if grep -q detection_paranoia_level "$CRS"/rules/REQUEST-901-INITIALIZATION.conf; then
    VERSION=4
    LIMITS='setvar:tx.blocking_paranoia_level=4,setvar:tx.detection_paranoia_level=4,setvar:tx.arg_name_length=100,setvar:tx.arg_length=400,setvar:tx.total_arg_length=64000,setvar:tx.max_num_args=255,setvar:tx.max_file_size=64100,setvar:tx.combined_file_sizes=65535'
else
    VERSION=3
    LIMITS='setvar:tx.paranoia_level=4,setvar:tx.arg_name_length=100,setvar:tx.arg_length=400'
fi
log "CRS $VERSION.x at $CRS; tests $TESTS; work dir $TMP"

cp "$CRS/crs-setup.conf.example" "$TMP/crs-setup.conf"
cat >"$TMP/crs-test.conf" <<EOF
# The CRS regression-test configuration (both engines load this file).
SecRuleEngine DetectionOnly
SecAuditEngine Off
SecResponseBodyAccess On
SecResponseBodyMimeType text/plain text/html text/xml application/json
SecRule REQUEST_HEADERS:X-CRS-Test "@rx ^.*\$" "id:999999,phase:1,pass,t:none,log,msg:'X-CRS-Test %{MATCHED_VAR}',ctl:ruleRemoveById=1-999998"
SecAction "id:900005,phase:1,nolog,pass,ctl:ruleRemoveById=910000,setvar:tx.crs_validate_utf8_encoding=1,$LIMITS"
EOF

start_bg backend python3 "$ROOT/bench/crs-backend.py" "$BACKEND_PORT"

# nginx + libmodsecurity 3: Debian's base configuration, then the files above, then the
# checkout's rules; error.log at info (where the module writes each match).
start_modsec() {
    local dir="$TMP/modsec"
    mkdir -p "$dir"
    chmod 1777 "$dir"
    cat >"$dir/main.conf" <<EOF
Include /etc/nginx/modsecurity.conf
Include $TMP/crs-setup.conf
Include $TMP/crs-test.conf
Include $CRS/rules/*.conf
EOF
    cat >"$dir/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_http_modsecurity_module.so;
worker_processes $THREADS;
pid $dir/nginx.pid;
error_log $dir/error.log info;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    server {
        listen 127.0.0.1:$MODSEC_PORT;
        modsecurity on;
        modsecurity_rules_file $dir/main.conf;
        location / {
            proxy_pass http://127.0.0.1:$BACKEND_PORT;
            proxy_http_version 1.1;
            proxy_set_header Host \$http_host;
            proxy_max_temp_file_size 0;
        }
    }
}
EOF
    : >"$dir/error.log"
    start_nginx_conf modsec "$dir" "$dir/nginx.conf"
    MODSEC_LOG="$dir/error.log"
}

# Sluice: the same files through the WAF filter's `rules`, detect mode, paranoia 4 (the
# same values crs-test.conf sets), request bodies buffered as nginx does.
start_sluice() {
    local policy="$TMP/sluice.toml"
    cat >"$policy" <<EOF
[server]
listen = ["127.0.0.1:$SLUICE_PORT"]
admin = "127.0.0.1:$SLUICE_ADMIN"
threads = $THREADS

[limits]
memory_mb = 512
startup_ms = 120000
callback_ms = 2000
max_body_bytes = 1048576

[pools.backend]
peers = ["127.0.0.1:$BACKEND_PORT"]

[filters.waf]
module = "$WAF_WASM"
request_body = "buffer"
files = ["/etc/nginx/modsecurity.conf", "/etc/nginx/unicode.mapping",
         "$TMP/crs-setup.conf", "$TMP/crs-test.conf",
         "$CRS/rules/*.conf", "$CRS/rules/*.data"]
config = { rules = ["/etc/nginx/modsecurity.conf", "$TMP/crs-setup.conf", "$TMP/crs-test.conf",
                    "$CRS/rules/*.conf"], mode = "detect", paranoia = 4 }

[[routes]]
path_prefix = "/"
filters = ["waf"]
pool = "backend"
EOF
    SLUICE_LOG=info,sluice::access=off start_bg sluice "$SLUICE_BIN" run --policy "$policy"
    SLUICE_LOG_FILE="$TMP/sluice.log"
}

# ready NAME PORT: the server answers (the WAFs load the CRS first).
ready() {
    local i
    for ((i = 0; i < 240; i++)); do
        if curl -s -o /dev/null -H 'Host: localhost' "http://127.0.0.1:$2/"; then return 0; fi
        alive "${PID_OF[$1]}" || die "$1 exited: $(tail -5 "$TMP/$1.log")"
        sleep 0.5
    done
    die "$1 not ready on port $2"
}

# score NAME PORT LOG: runs the tests against it; its JSON report is $TMP/NAME.json.
score() {
    local name=$1 port=$2 logf=$3 t0 t1
    t0=$(date +%s)
    "$SLUICE_BIN" test --target "http://127.0.0.1:$port" --log "$logf" --timeout "$TIMEOUT" \
        --json "$TMP/$name.json" "$TESTS" >"$TMP/$name.out" 2>"$TMP/$name.err" || true
    t1=$(date +%s)
    log "$name: $(tail -1 "$TMP/$name.out") ($((t1 - t0)) s)"
}

ready_backend() {
    local i
    for ((i = 0; i < 50; i++)); do
        curl -s -o /dev/null "http://127.0.0.1:$BACKEND_PORT/" && return 0
        sleep 0.1
    done
    die "backend not ready"
}
ready_backend

if [[ $ONLY != sluice ]]; then
    start_modsec
    ready modsec "$MODSEC_PORT"
    score modsec "$MODSEC_PORT" "$MODSEC_LOG"
    stop modsec
fi
if [[ $ONLY != modsec ]]; then
    start_sluice
    ready sluice "$SLUICE_PORT"
    score sluice "$SLUICE_PORT" "$SLUICE_LOG_FILE"
    stop sluice
fi

python3 - "$TMP" "$CRS" <<'EOF'
import json, os, sys
tmp, crs = sys.argv[1], sys.argv[2]
runs = {}
print(f"\nCRS regression tests, {crs}")
for name in ("modsec", "sluice"):
    p = os.path.join(tmp, name + ".json")
    if not os.path.exists(p):
        continue
    tests = json.load(open(p))["tests"]
    ran = [t for t in tests if t["result"] != "skip"]
    ok = sum(t["result"] == "pass" for t in ran)
    print(f"  {name:7} {ok}/{len(ran)} passed ({100.0 * ok / max(len(ran), 1):.2f}%), "
          f"{len(tests) - len(ran)} skipped")
    # A name can repeat (two files for one rule): keyed by file and name.
    runs[name] = {(t["file"], t["name"]): t for t in tests}
if len(runs) == 2:
    m, s = runs["modsec"], runs["sluice"]
    for title, want in (("ModSecurity passes, Sluice fails", ("pass", "fail")),
                        ("Sluice passes, ModSecurity fails", ("fail", "pass")),
                        ("both fail", ("fail", "fail"))):
        keys = sorted((k for k in m if k in s and (m[k]["result"], s[k]["result"]) == want),
                      key=lambda k: k[1])
        print(f"\n{title}: {len(keys)}")
        for k in keys:
            why = "; ".join(s[k]["failures"] if want[1] == "fail" else m[k]["failures"])
            print(f"  {k[1]}: {why[:200]}")
EOF
log "configs, logs, reports: $TMP"
