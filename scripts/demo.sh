#!/usr/bin/env bash
# Sets everything up, starts the bundled demo origin on 127.0.0.1:8081 and runs Sluice
# on policies/default.toml (traffic on 127.0.0.1:8080, admin on 127.0.0.1:9901).
# Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
target/release/sluice-origin --listen 127.0.0.1:8081 --root origin/www &
origin=$!
trap 'kill $origin 2>/dev/null || true' EXIT
echo "demo: origin on http://127.0.0.1:8081, Sluice on http://127.0.0.1:8080, admin on http://127.0.0.1:9901"
target/release/sluice run --policy policies/default.toml
