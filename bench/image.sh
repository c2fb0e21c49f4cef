#!/usr/bin/env bash
# Image transforms: Sluice against vipsthumbnail, same image, same machine, one run.
#
#   bash bench/image.sh
#
# Input: a synthetic 2000x1500 "photo" (bench/image-gen.py, noise 24, then
# `vips copy in.ppm in.jpg[Q=85]`). Output: 400 px wide, quality 80, as JPEG and as WebP.
#
# Sluice: `sluice run` with the `image` filter, `[images] cache_mb = 0` (every request
# really transforms), `threads = max_concurrent = CORES`; wrk with CONNECTIONS
# connections for DURATION on /cdn-cgi/image/width=400,quality=80,format=F/in.jpg,
# the source served by the demo origin over loopback. Reported: transforms/s (wrk's
# requests/s), p50/p99 latency (wrk), and Sluice's CPU time per transform (utime+stime
# from /proc, fetch and HTTP included).
# vips: CORES `vipsthumbnail` processes at once (VIPS_CONCURRENCY=1), each on BATCH
# copies of the image: transforms/s = images / wall time; CPU per image = the
# processes' user+sys minus one single-image run (start-up), divided by the images.
# vips p50/p99 are per process with one image each, start-up included (vips has no
# per-image latency in batch mode).
#
# Knobs: CORES (2), CONNECTIONS (CORES), DURATION (15s), WARMUP (3s), BATCH (40),
# RUNS (30 single-image vips runs for the latency), BUILD (1), PORT (18181),
# ADMIN (19181), ORIGIN_PORT (18180).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CORES="${CORES:-2}"
CONNECTIONS="${CONNECTIONS:-$CORES}"
DURATION="${DURATION:-15s}"
WARMUP="${WARMUP:-3s}"
BATCH="${BATCH:-40}"
RUNS="${RUNS:-30}"
BUILD="${BUILD:-1}"
PORT="${PORT:-18181}"
ADMIN="${ADMIN:-19181}"
ORIGIN_PORT="${ORIGIN_PORT:-18180}"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/sluice-image-bench.XXXXXX")"
TMP=$WORK
BENCH_TAG=image-bench
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

for t in wrk vips vipsthumbnail python3 curl; do
    command -v "$t" >/dev/null || die "$t is missing (scripts/setup.sh installs it)"
done
check_ports "$PORT" "$ADMIN" "$ORIGIN_PORT"

if [[ "$BUILD" == 1 ]]; then
    (cd "$ROOT" && cargo build --release -p sluice -p sluice-origin)
    [[ -f "$ROOT/filters/out/image.wasm" ]] || "$ROOT/filters/build.sh" --no-wasip1
fi
BIN=$REL

echo "work dir: $WORK" >&2
mkdir -p "$WORK/www" "$WORK/many" "$WORK/out"
python3 "$ROOT/bench/image-gen.py" 2000 1500 24 "$WORK/in.ppm"
vips copy "$WORK/in.ppm" "$WORK/www/in.jpg[Q=85]"
IN="$WORK/www/in.jpg"
echo "input: $(stat -c %s "$IN") bytes, $(vipsheader "$IN")" >&2

start_bg origin "$BIN/sluice-origin" --listen "127.0.0.1:$ORIGIN_PORT" --root "$WORK/www" --id bench --threads 1
cat >"$WORK/policy.toml" <<EOF
[server]
listen = ["127.0.0.1:$PORT"]
admin = "127.0.0.1:$ADMIN"
threads = $CORES

[images]
cache_mb = 0
max_concurrent = $CORES
max_in_flight = $((CONNECTIONS + 16))

[pools.o]
peers = ["127.0.0.1:$ORIGIN_PORT"]

[filters.image]
module = "$ROOT/filters/out/image.wasm"
config = { sources = ["/in.jpg"], max_width = 4096 }

[[routes]]
path_prefix = "/cdn-cgi/image/"
filters = ["image"]
pool = "o"
EOF
SLUICE_LOG=warn start_bg sluice "$BIN/sluice" run --policy "$WORK/policy.toml"
SLUICE_PID=${PID_OF[sluice]}
READY_SECS=20 READY_HEADER= wait_ready sluice "http://127.0.0.1:$PORT/cdn-cgi/image/width=400,format=jpeg/in.jpg" ||
    die "sluice did not start"
TICK=$(getconf CLK_TCK)

# Sluice rows: transforms/s, p50, p99, CPU ms per transform.
sluice_row() {
    local fmt="$1" url="http://127.0.0.1:$PORT/cdn-cgi/image/width=400,quality=80,format=$1/in.jpg"
    curl -sf -o "$WORK/out/sluice.$fmt" "$url"
    local out="$WORK/wrk-$fmt.txt" before after
    wrk_warmup "$out" -t1 -c"$CONNECTIONS" "$url"
    before=$(proc_ticks "$SLUICE_PID")
    wrk_measure "$out" -t1 -c"$CONNECTIONS" "$url"
    after=$(proc_ticks "$SLUICE_PID")
    local n rps p50 p99 non2xx
    n=$(wrk_stat "$out" requests)
    rps=$(wrk_stat "$out" rps)
    p50=$(wrk_stat "$out" p50)
    p99=$(wrk_stat "$out" p99)
    non2xx=$(wrk_stat "$out" non2xx)
    local cpu
    cpu=$(awk -v a="$before" -v b="$after" -v n="$n" -v t="$TICK" 'BEGIN {printf "%.1f", (b - a) * 1000 / t / n}')
    printf '| sluice | %s | %s | %.1f | %s | %s | %s | %s B |%s\n' "$fmt" "$rps" \
        "$(awk -v r="$rps" -v c="$CORES" 'BEGIN {print r / c}')" "$p50" "$p99" "$cpu" \
        "$(stat -c %s "$WORK/out/sluice.$fmt")" "${non2xx:+ $non2xx non-2xx!}"
}

# vips rows: CORES processes at once on BATCH copies each.
vips_row() {
    local fmt="$1" ext="$1"
    [[ "$fmt" == jpeg ]] && ext=jpg
    local i j
    for i in $(seq "$CORES"); do
        mkdir -p "$WORK/many/$i" "$WORK/out/$i"
        for j in $(seq "$BATCH"); do ln -f "$IN" "$WORK/many/$i/i$j.jpg"; done
    done
    # Start-up cost: one image, user+sys.
    local one
    one=$( { /usr/bin/time -f "%U %S" env VIPS_CONCURRENCY=1 vipsthumbnail "$IN" --size 400x \
        -o "$WORK/out/one.$ext[Q=80]" >/dev/null; } 2>&1 | tail -1 | awk '{print $1 + $2}')
    local t0 t1
    t0=$(date +%s.%N)
    for i in $(seq "$CORES"); do
        ( /usr/bin/time -f "%U %S" -o "$WORK/vips-time-$i" env VIPS_CONCURRENCY=1 vipsthumbnail \
            "$WORK"/many/"$i"/*.jpg --size 400x -o "$WORK/out/$i/%s.$ext[Q=80]" ) &
    done
    wait
    t1=$(date +%s.%N)
    local total=$((CORES * BATCH))
    local cpu
    cpu=$(cat "$WORK"/vips-time-* | awk -v one="$one" -v c="$CORES" -v n="$total" \
        '{s += $1 + $2} END {printf "%.1f", (s - c * one) * 1000 / n}')
    local rps
    rps=$(awk -v a="$t0" -v b="$t1" -v n="$total" 'BEGIN {printf "%.2f", n / (b - a)}')
    # Per-process latency, one image each, start-up included.
    local lat=()
    for i in $(seq "$RUNS"); do
        t0=$(date +%s%N)
        VIPS_CONCURRENCY=1 vipsthumbnail "$IN" --size 400x -o "$WORK/out/lat.$ext[Q=80]"
        t1=$(date +%s%N)
        lat+=($(( (t1 - t0) / 1000 )))
    done
    local p50 p99
    p50=$(printf '%s\n' "${lat[@]}" | nearest_rank 50 | awk '{printf "%.2fms", $1 / 1000}')
    p99=$(printf '%s\n' "${lat[@]}" | nearest_rank 99 | awk '{printf "%.2fms", $1 / 1000}')
    printf '| vipsthumbnail | %s | %s | %.1f | %s* | %s* | %s | %s B |\n' "$fmt" "$rps" \
        "$(awk -v r="$rps" -v c="$CORES" 'BEGIN {print r / c}')" "$p50" "$p99" "$cpu" \
        "$(stat -c %s "$WORK/out/lat.$ext")"
}

{
    echo "2000x1500 JPEG ($(stat -c %s "$IN") B) -> 400 px wide, Q80; $CORES cores; $(date -u +%FT%TZ); load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "| target | output | transforms/s | per core | p50 | p99 | CPU ms / image | output size |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|"
    sluice_row jpeg
    vips_row jpeg
    sluice_row webp
    vips_row webp
    echo
    echo "\\* vips latency: one process per image, start-up included (batch mode has no per-image latency)."
} | tee "$WORK/results.md"
