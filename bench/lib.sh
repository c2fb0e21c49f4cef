# shellcheck shell=bash
# Process handling shared by the bench scripts (sourced, not run). The caller sets
# BENCH_TAG (log prefix) and TMP (where each process's output goes) first.
#   start_bg NAME CMD...   run CMD in the background, output in $TMP/NAME.log
#   stop NAME              stop it (see below); every process is stopped on exit
#   alive PID, port_in_use PORT, log MSG, die MSG

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
