#!/usr/bin/env bash
# The project's main job on a fresh machine: install what is missing, then run the host lab
# (stock and lean side by side, every scenario). Extra arguments go to `cargo xtask lab`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
exec cargo xtask lab "$@"
