#!/usr/bin/env bash
# Runs every test of the workspace. The proxy-wasm modules are built first (release, wasm32-wasip1):
# the host's integration tests run the real .wasm files, exactly as the gateway would load them.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  rustup target add wasm32-wasip1
fi

echo "==> building egress_filter.wasm and noop_filter.wasm (release, wasm32-wasip1)"
cargo build --release --target wasm32-wasip1 -p egress-filter -p noop-filter

echo "==> cargo test --workspace"
cargo test --workspace "$@"
