#!/usr/bin/env bash
# Runs every test of the workspace. The proxy-wasm modules are built first (release, wasm32-wasip1):
# the host's integration tests run the real .wasm files, exactly as the gateway would load them.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> building egress_filter.wasm and noop_filter.wasm (release, wasm32-wasip1, wasm-opt)"
filter/build.sh

echo "==> cargo test --workspace"
cargo test --workspace "$@"
