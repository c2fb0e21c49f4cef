#!/usr/bin/env bash
# Tries the examples of the Proxy-Wasm Go SDK with Sluice, by hand (not run by CI).
#
#   scripts/try-go-sdk.sh SDK_DIR
#
# SDK_DIR is a checkout of github.com/proxy-wasm/proxy-wasm-go-sdk (e.g. a `git archive`
# of a fetched mirror unpacked in a temporary directory). Nothing here is committed or
# downloaded beyond `golang-1.24-go` from apt: the examples are built offline
# (GOPROXY=off) in a temporary copy whose go.mod files keep only the SDK itself, so the
# test-only dependencies (testify, wazero) are not needed. Examples that import other
# modules (gjson) are skipped and said so. Each example then runs in Sluice on a small
# policy in front of the demo origin; the script prints what happens: start-up, a few
# requests, the filter's log lines.
set -euo pipefail

SDK_DIR=${1:?usage: scripts/try-go-sdk.sh SDK_DIR}
SDK_DIR=$(cd "$SDK_DIR" && pwd)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SLUICE=$ROOT/target/release/sluice
ORIGIN=$ROOT/target/release/sluice-origin
[ -x "$SLUICE" ] && [ -x "$ORIGIN" ] || {
    echo "build Sluice first: cargo build --release -p sluice --all-targets --locked" >&2
    exit 1
}

GO=$(command -v go || true)
[ -z "$GO" ] && [ -x /usr/lib/go-1.24/bin/go ] && GO=/usr/lib/go-1.24/bin/go
if [ -z "$GO" ] || ! "$GO" version | grep -qE 'go1\.(2[4-9]|[3-9][0-9])'; then
    echo "installing golang-1.24-go with apt" >&2
    if ! apt-get install -y golang-1.24-go >/dev/null; then
        echo "golang-1.24-go is not available here (Debian trixie ships it; bookworm has 1.19," >&2
        echo "which cannot build wasip1 modules with go:wasmexport)" >&2
        exit 1
    fi
    GO=/usr/lib/go-1.24/bin/go
fi
echo "go: $($GO version)"

WORK=$(mktemp -d /tmp/try-go-sdk.XXXXXX)
OUT=/tmp/try-go-sdk-out
mkdir -p "$OUT"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# The SDK without its test-only parts, as a module with no requirements.
cp -r "$SDK_DIR" "$WORK/sdk"
rm -rf "$WORK/sdk/proxywasm/proxytest" "$WORK/sdk/.git"
find "$WORK/sdk" -name '*_test.go' -delete
printf 'module github.com/proxy-wasm/proxy-wasm-go-sdk\n\ngo 1.24\n' >"$WORK/sdk/go.mod"
rm -f "$WORK/sdk/go.sum"

export GOOS=wasip1 GOARCH=wasm GOPROXY=off GOFLAGS=-mod=mod GOTOOLCHAIN=local
export GOCACHE=$WORK/gocache GOPATH=$WORK/gopath

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

ORIGIN_PORT=$(free_port)
"$ORIGIN" --listen "127.0.0.1:$ORIGIN_PORT" --id go --threads 1 >/dev/null 2>&1 &
PIDS+=($!)

declare -A RESULT
for main in $(cd "$WORK/sdk/examples" && find . -name main.go | sort); do
    dir=$(dirname "$main")
    name=$(echo "${dir#./}" | tr '/' '_')
    src=$WORK/sdk/examples/${dir#./}
    if grep -q '"github.com/tidwall' "$src"/*.go; then
        RESULT[$name]="skipped: imports github.com/tidwall/gjson (not available offline)"
        continue
    fi
    printf 'module example/%s\n\ngo 1.24\n\nrequire github.com/proxy-wasm/proxy-wasm-go-sdk v0.0.0\n\nreplace github.com/proxy-wasm/proxy-wasm-go-sdk => %s\n' \
        "$name" "$WORK/sdk" >"$src/go.mod"
    rm -f "$src/go.sum"
    echo "== $name: build"
    if ! (cd "$src" && GOOS=wasip1 GOARCH=wasm "$GO" build -buildmode=c-shared -o "$OUT/$name.wasm" . 2>"$OUT/$name.build.log"); then
        cat "$OUT/$name.build.log"
        RESULT[$name]="build failed (see $OUT/$name.build.log)"
        continue
    fi

    # A policy: the example on every route, in front of the demo origin. Examples that
    # call an upstream by name find pools named as in their envoy.yaml.
    d=$WORK/run-$name
    mkdir -p "$d"
    listen=$(free_port)
    admin=$(free_port)
    cat >"$d/policy.toml" <<EOF
[server]
listen = ["127.0.0.1:$listen"]
admin = "127.0.0.1:$admin"
threads = 1
[pools.o]
peers = ["127.0.0.1:$ORIGIN_PORT"]
[pools.httpbin]
peers = ["127.0.0.1:$ORIGIN_PORT"]
[pools.web_service]
peers = ["127.0.0.1:$ORIGIN_PORT"]
[filters.go]
module = "$OUT/$name.wasm"
memory_mb = 256
startup_ms = 20000
[[routes]]
filters = ["go"]
pool = "o"
EOF
    echo "== $name: run"
    SLUICE_LOG=warn,sluice::filter=debug "$SLUICE" run --policy "$d/policy.toml" >"$d/out.log" 2>&1 &
    pid=$!
    PIDS+=($pid)
    up=no
    for _ in $(seq 1 100); do
        if curl -s -o /dev/null "http://127.0.0.1:$admin/readyz"; then up=yes; break; fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if [ $up = no ]; then
        tail -n 20 "$d/out.log"
        RESULT[$name]="does not start (see $d/out.log)"
        kill "$pid" 2>/dev/null || true
        continue
    fi
    codes=""
    for path in / /echo/a "/echo/b?x=1"; do
        c=$(curl -s -o "$d/body" -w '%{http_code}' -H 'content-type: application/json' \
            -d '{"a":1}' "http://127.0.0.1:$listen$path" || echo 000)
        codes="$codes $c"
    done
    sleep 1.5 # ticks
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echo "-- statuses:$codes; last body: $(head -c 200 "$d/body")"
    grep -iE 'panic|trap|error|go:' "$d/out.log" | head -n 15 || true
    if grep -qiE 'panic|trap|proc_exit' "$d/out.log"; then
        RESULT[$name]="runs, but fails (statuses:$codes; see $d/out.log)"
    else
        RESULT[$name]="works (statuses:$codes)"
    fi
done

echo
echo "== summary"
for k in $(printf '%s\n' "${!RESULT[@]}" | sort); do
    printf '%-28s %s\n' "$k" "${RESULT[$k]}"
done
