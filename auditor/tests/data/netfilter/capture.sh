#!/usr/bin/env bash
# Regenerates real/: real tool output (iptables-save with counters, both iptables backends, nft
# text and JSON) of the sidecar rules in this directory, clean and after real tampering commands.
# Needs root, iproute2, iptables and nftables. The files are committed so that tests reading them
# run everywhere.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p real
ns="eg-capture-$$"
cleanup() { ip netns del "$ns" 2>/dev/null || true; }
trap cleanup EXIT

fresh() {
  cleanup
  ip netns add "$ns"
  ip -n "$ns" link set lo up
}
run() { ip netns exec "$ns" "$@"; }

# iptables-legacy
fresh
run iptables-legacy-restore < sidecar.iptables
run ip6tables-legacy-restore < sidecar.ip6tables
run iptables-legacy-save -c > real/legacy-clean.v4.save
run ip6tables-legacy-save -c > real/legacy-clean.v6.save
run iptables-legacy -t nat -I ISTIO_OUTPUT 1 -j RETURN
run iptables-legacy-save -c > real/legacy-return-first.v4.save
run iptables-legacy -t nat -D ISTIO_OUTPUT 1
run iptables-legacy -t nat -R ISTIO_REDIRECT 1 -p tcp -j REDIRECT --to-ports 15002
run iptables-legacy-save -c > real/legacy-redirect-15002.v4.save

# iptables-nft (Debian's default `iptables`)
fresh
run iptables-nft-restore < sidecar.iptables
run iptables-nft-save > real/nft-backend-clean.v4.save
run iptables-nft -t nat -I ISTIO_OUTPUT 1 -p tcp --dport 443 -j RETURN
run iptables-nft-save > real/nft-backend-dport443.v4.save
# What `nft` itself shows of an iptables-nft table: `xt` expressions it cannot translate.
run nft -j list ruleset > real/nft-backend-dport443.json

# native nftables
fresh
run nft -f sidecar.nft
run nft list ruleset > real/native-clean.nft
run nft -j list ruleset > real/native-clean.json
run nft add table inet intruder
run nft add chain inet intruder out '{ type filter hook output priority raw; policy accept; }'
run nft add rule inet intruder out meta l4proto tcp notrack
run nft -j list ruleset > real/native-notrack.json
run nft delete table inet intruder
run nft flush chain inet istio-proxy-nat output
run nft list ruleset > real/native-flushed-output.nft
