#!/usr/bin/env bash
# Builds the proxy-wasm modules (release, wasm32-wasip1) and shrinks egress_filter.wasm with
# binaryen's wasm-opt (-Oz --converge), so the module the gateway loads stays under its 300 KiB
# budget. The optimised bytes replace cargo's output in place: target/wasm32-wasip1/release/egress_filter.wasm
# is the module every test, the quick start, the OCI image and the pinned digests use.
#
# Run it again at any time: cargo rebuilds only what changed, and a module already optimised
# (its digest is in egress_filter.wasm.wasm-opt) is left alone: wasm-opt is not idempotent, and a
# second pass would change the pinned digest. Extra arguments go to cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
cargo="${CARGO:-cargo}"

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  rustup target add wasm32-wasip1
fi
if ! command -v wasm-opt >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing binaryen (wasm-opt)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends binaryen >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends binaryen >/dev/null; }
  else
    echo "error: wasm-opt not found: install binaryen (Debian: apt-get install binaryen)" >&2
    exit 1
  fi
fi

mkdir -p "$target"
# Tests run this from several processes at once: one build and one optimisation at a time.
exec 9>"$target/.egress-filter-build.lock"
flock 9

"$cargo" build --release --target wasm32-wasip1 -p egress-filter -p noop-filter "$@"

wasm="$target/wasm32-wasip1/release/egress_filter.wasm"
stamp="$wasm.wasm-opt"
digest() { sha256sum "$1" | cut -d' ' -f1; }
if [ -f "$stamp" ] && [ "$(digest "$wasm")" = "$(cat "$stamp")" ]; then
  exit 0
fi
before=$(stat -c %s "$wasm")
tmp="$wasm.tmp"
# The features rustc enables for wasm32-wasip1 (the stripped module carries no
# target_features section to detect them from); wasm-opt adds none of its own. --converge runs
# the passes again while the module still shrinks (a few hundred bytes, two seconds).
wasm-opt -Oz --converge --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
  --enable-nontrapping-float-to-int --enable-multivalue --enable-reference-types \
  "$wasm" -o "$tmp"
# Written into the same file, not renamed over it: cargo's copy in deps/ is a hard link to it, so
# a later no-op `cargo build` links the optimised bytes back rather than the unoptimised ones.
cat "$tmp" >"$wasm"
rm -f "$tmp"
digest "$wasm" >"$stamp"
echo "egress_filter.wasm: $before bytes -> $(stat -c %s "$wasm") bytes (wasm-opt -Oz --converge)" >&2
