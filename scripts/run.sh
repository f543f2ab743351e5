#!/usr/bin/env bash
# `make run`: build the release binary and start every component on embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v npm >/dev/null; then
  echo "==> building the web portal (web/dist)"
  (cd web && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent)
  # A release binary built before web/dist existed embeds nothing: make cargo re-embed.
  if [[ -f target/release/factoryops && web/dist/index.html -nt target/release/factoryops ]]; then
    touch crates/api/src/web.rs
  fi
else
  echo "==> npm not found: the portal is not built (the server says so at /); install Node.js 20+"
fi

echo "==> building factoryops (release; the first build takes several minutes)"
cargo build --release -p factoryops

export FACTORYOPS_DATA_DIR="${FACTORYOPS_DATA_DIR:-./data}"
export FACTORYOPS_HTTP_ADDR="${FACTORYOPS_HTTP_ADDR:-0.0.0.0:8080}"
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if [[ -z "${FACTORYOPS_MQTT_ADDR:-}" ]]; then
  if port_in_use 1883; then
    # Another broker (e.g. the machine's Mosquitto) holds the standard port.
    echo "==> port 1883 is taken; the built-in MQTT endpoint uses 1884 (set FACTORYOPS_MQTT_ADDR to choose)"
    export FACTORYOPS_MQTT_ADDR="0.0.0.0:1884"
  fi
fi

echo "==> starting FactoryOps (data in $FACTORYOPS_DATA_DIR; Ctrl-C stops it gracefully)"
echo "    On the first start the platform root's password is printed once below."
exec ./target/release/factoryops serve
