#!/usr/bin/env bash
# Sets everything up, starts two instances of the bundled demo origin (127.0.0.1:8081
# "blue", 127.0.0.1:8082 "green") and runs Sluice on policies/default.toml (traffic on
# 127.0.0.1:8080 and, over TLS, 127.0.0.1:8443; admin on 127.0.0.1:9901).
# Ctrl-C stops them all.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
target/release/sluice-origin --listen 127.0.0.1:8081 --root origin/www --id blue &
blue=$!
target/release/sluice-origin --listen 127.0.0.1:8082 --root origin/www --id green &
green=$!
trap 'kill $blue $green 2>/dev/null || true' EXIT
echo "demo: origins on http://127.0.0.1:8081 (blue) and :8082 (green); Sluice on http://127.0.0.1:8080 and https://localhost:8443; admin on http://127.0.0.1:9901"
target/release/sluice run --policy policies/default.toml
