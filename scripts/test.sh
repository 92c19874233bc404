#!/usr/bin/env bash
# The project's tests on a fresh machine: install what is missing, then run every test
# (rustfmt and clippy, unit tests, fixtures, Kconfig parsing with kconfgen, the lab's smoke run (datachannel,
# and lean's cycle) and the lean budgets, the interop matrix against Chromium and aiortc). CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo fetch --locked --manifest-path upstream/Cargo.toml
# Style first: it fails in seconds where the tests take minutes.
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked "$@"
