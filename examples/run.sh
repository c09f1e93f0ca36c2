#!/usr/bin/env bash
# Quick start, no cluster needed:
#  1. builds the egress filter (.wasm) and replays examples/traffic.jsonl through it, the way the
#     egress gateway's Envoy would run it, and prints what was allowed or denied and why;
#  2. replays an egress gateway access log (examples/access-log.json, Istio's JSON format, written
#     by `egress-sim generate-access-log`) and prints, per source namespace and destination, what
#     the policy would allow and deny; writes the same as an HTML report;
#  3. audits the bundled cluster snapshot in examples/cluster/ for sidecar bypasses and writes
#     that report as HTML too.
# The HTML reports land in target/reports/ (or $CARGO_TARGET_DIR/reports/): open them in a browser.
set -euo pipefail
cd "$(dirname "$0")/.."

filter/build.sh -q
# The whole workspace as the test command builds it: the two commands share one build (a
# narrower package selection would unify features differently and compile wasmtime again).
cargo build -q --workspace --tests
target="${CARGO_TARGET_DIR:-target}"
reports="$target/reports"
mkdir -p "$reports"
wasm="$target/wasm32-wasip1/release/egress_filter.wasm"

echo "== egress filter: examples/egress-policy.json against examples/traffic.jsonl"
"$target/debug/egress-sim" replay --summary \
  --wasm "$wasm" \
  --config examples/egress-policy.json \
  --requests examples/traffic.jsonl --workers 2

echo
echo "== egress filter: examples/egress-policy.json against the access log examples/access-log.json"
# The lines the log cannot use (Envoy's own messages, a cut line) are counted on stderr.
replay_log=(replay --wasm "$wasm" --config examples/egress-policy.json
  --envoy-access-log examples/access-log.json --principal-field downstream_peer_uri_san)
"$target/debug/egress-sim" "${replay_log[@]}" --summary
"$target/debug/egress-sim" "${replay_log[@]}" --format html >"$reports/egress-replay.html" 2>/dev/null

echo
echo "== auditor: examples/cluster/"
# Exit code 1 means "findings at or above --fail-on": expected for this snapshot.
rc=0
"$target/debug/egress-auditor" scan --input examples/cluster --format table || rc=$?
[ "$rc" -le 1 ] || exit "$rc"
rc=0
"$target/debug/egress-auditor" scan --input examples/cluster --format html >"$reports/egress-audit.html" || rc=$?
[ "$rc" -le 1 ] || exit "$rc"

echo
echo "== HTML reports (one self-contained file each; open in a browser):"
echo "   $reports/egress-replay.html"
echo "   $reports/egress-audit.html"
