#!/usr/bin/env bash
# Quick start, no cluster needed:
#  1. builds the egress filter (.wasm) and replays examples/traffic.jsonl through it, the way the
#     egress gateway's Envoy would run it, and prints what was allowed or denied and why;
#  2. audits the bundled cluster snapshot in examples/cluster/ for sidecar bypasses.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  rustup target add wasm32-wasip1
fi
cargo build -q --release --target wasm32-wasip1 -p egress-filter
cargo build -q -p egress-sim -p egress-auditor
target="${CARGO_TARGET_DIR:-target}"

echo "== egress filter: examples/egress-policy.json against examples/traffic.jsonl"
"$target/debug/egress-sim" replay --summary \
  --wasm "$target/wasm32-wasip1/release/egress_filter.wasm" \
  --config examples/egress-policy.json \
  --requests examples/traffic.jsonl --workers 2

echo
echo "== auditor: examples/cluster/"
# Exit code 1 means "findings at or above --fail-on": expected for this snapshot.
rc=0
"$target/debug/egress-auditor" scan --input examples/cluster --format table || rc=$?
[ "$rc" -le 1 ] || exit "$rc"
