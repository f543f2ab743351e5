#!/usr/bin/env bash
# Ingest benchmarks of issues 6 and 7: the simulator against a release FactoryOps
# (embedded defaults: SQLite + embedded TSDB, rules consumer on) and, in the same run,
# against the machine's Mosquitto relaying to one QoS 1 subscriber.
#
#   bench/ingest.sh [all|server|anchor|alerts|max|soak]      (make bench-ingest = all)
#
# Environment: BIN (release binary), DEVICES (10000), DURATION (60 s per case),
# MAX_RATE (messages/s per device offered in the throughput case, 5), TARGET_RATE (3: the
# 300k points/s of issue 6 offered exactly), ALERT_PROBES (200),
# SOAK_DURATION (900 s, `soak` only), MOSQUITTO
# (127.0.0.1:1883), OUT (results directory), SERVER_PRELOAD (e.g. a jemalloc .so, to
# compare allocators without rebuilding). Every case prints `uptime` first: the
# machine is shared, so each figure is recorded with the load it was measured under.
set -euo pipefail
cd "$(dirname "$0")/.."

WHAT="${1:-all}"
BIN="${BIN:-${CARGO_TARGET_DIR:-target}/release/factoryops}"
DEVICES="${DEVICES:-10000}"
DURATION="${DURATION:-60}"
MAX_RATE="${MAX_RATE:-5}"
STEADY_RATE="${STEADY_RATE:-0.2}" # 10k devices × 0.2 msg/s × 10 points = 20k points/s
TARGET_RATE="${TARGET_RATE:-3}"   # 10k devices × 3 msg/s × 10 points = 300k points/s (issue 6)
ALERT_PROBES="${ALERT_PROBES:-200}" # alert/resolve cycles of the latency probe
MOSQUITTO="${MOSQUITTO:-127.0.0.1:1883}"
OUT="${OUT:-bench/results/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"

[[ -x "$BIN" ]] || { echo "build first: cargo build --release -p factoryops (BIN=$BIN)"; exit 1; }
# 10k client sockets in the simulator, 10k in the server: raise the soft limit to the hard one.
ulimit -n "$(ulimit -Hn)"
echo "open files: $(ulimit -n); local ports: $(cat /proc/sys/net/ipv4/ip_local_port_range)"
if (( $(ulimit -n) < DEVICES + 1000 )); then echo "ulimit -n is too low for $DEVICES devices"; exit 1; fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
note() { echo "== $(date -u +%H:%M:%S) load $(load) :: $*" | tee -a "$OUT/log.txt"; }
rss() { # VmRSS and VmHWM of a pid, in MiB
  awk '/VmRSS|VmHWM/ { printf "%s %.0f MiB  ", $1, $2/1024 }' "/proc/$1/status"; echo
}

cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }
TIME=""; if [[ -x /usr/bin/time ]]; then TIME="/usr/bin/time -f simulator-cpu:%U-user-%S-sys-%e-wall"; fi

SERVER_PID=""
stop_server() {
  if [[ -n "$SERVER_PID" ]]; then kill -TERM "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""; fi
  # The data dir (tens to hundreds of MB) goes unless KEEP_DATA=1.
  if [[ -n "${DATA:-}" && -z "${KEEP_DATA:-}" ]]; then rm -rf "$DATA"; DATA=""; fi
}
trap stop_server EXIT

start_server() {
  DATA="$(mktemp -d /tmp/factoryops-bench.XXXXXX)"
  HTTP_PORT="$(free_port)"; MQTT_PORT="$(free_port)"
  export FACTORYOPS_ROOT_PASSWORD="bench-root-password-1"
  FACTORYOPS_DATA_DIR="$DATA" FACTORYOPS_HTTP_ADDR="127.0.0.1:$HTTP_PORT" \
    FACTORYOPS_MQTT_ADDR="127.0.0.1:$MQTT_PORT" FACTORYOPS_LOG_LEVEL="${LOG_LEVEL:-warn}" \
    ${SERVER_PRELOAD:+env LD_PRELOAD="$SERVER_PRELOAD"} "$BIN" serve >"$OUT/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.2
  done
  curl -fsS "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null
  note "server pid $SERVER_PID http $HTTP_PORT mqtt $MQTT_PORT data $DATA"
}

# simulate NAME ARGS… against the running server, reusing provisioned credentials.
simulate_server() {
  local name="$1"; shift
  note "server: $name ($*)"
  local c0; c0="$(cpu_secs "$SERVER_PID")"
  $TIME "$BIN" simulate --mqtt "127.0.0.1:$MQTT_PORT" --api "http://127.0.0.1:$HTTP_PORT" \
    --devices "$DEVICES" --credentials "$DATA/credentials.jsonl" --json "$@" 2>&1 | tee "$OUT/server-$name.txt"
  echo "after $name: load $(load) server $(rss "$SERVER_PID") server-cpu $(echo "$(cpu_secs "$SERVER_PID") - $c0" | bc) s" | tee -a "$OUT/log.txt"
}

simulate_anchor() {
  local name="$1"; shift
  note "mosquitto: $name ($*)"
  local pid c0; pid="$(pgrep -o -x mosquitto)"; c0="$(cpu_secs "$pid")"
  $TIME "$BIN" simulate --anchor --subscribe --mqtt "$MOSQUITTO" --prefix "anchor$$" \
    --devices "$DEVICES" --json "$@" 2>&1 | tee "$OUT/mosquitto-$name.txt"
  echo "after $name: load $(load) mosquitto $(rss "$pid") mosquitto-cpu $(echo "$(cpu_secs "$pid") - $c0" | bc) s" | tee -a "$OUT/log.txt"
}

# The whole exposition goes to metrics.txt (latency histograms of the write, rules and outbox stages).
metrics() { curl -fsS "http://127.0.0.1:$HTTP_PORT/metrics" | tee "$OUT/metrics.txt" | grep -E "^factoryops_(ingest_points|ingest_messages|mqtt_connections|mqtt_connects_refused|rules_[a-z_]*events)" || true; }

if [[ "$WHAT" == all || "$WHAT" == server ]]; then
  start_server
  # Provisioning (10k devices through the API) and a short warm-up.
  simulate_server warmup --rate 0.2 --properties 20 --duration 15
  # 1. Memory: 10k connected devices × 20 properties, on the fresh server (RSS sampled
  #    mid-run and after; VmHWM is the peak since the server started).
  ( sleep $((DURATION / 2 + 25)); echo "mid-run 20 properties: server $(rss "$SERVER_PID")" | tee -a "$OUT/log.txt" ) &
  SAMPLER=$!
  simulate_server rss20 --rate "$STEADY_RATE" --properties 20 --duration "$DURATION"
  wait "$SAMPLER"
  # 2. PUBACK latency at a steady 20k points/s.
  simulate_server steady --rate "$STEADY_RATE" --duration "$DURATION"
  # 3. Alert latency (issue 7) under the same 20k points/s background load.
  simulate_server alerts --rate "$STEADY_RATE" --duration "$DURATION" --probe-alerts "$ALERT_PROBES"
  # 4. Sustained throughput: offer more than the target, count what is PUBACKed (= durable).
  simulate_server max --rate "$MAX_RATE" --duration "$DURATION"
  # 5. The target offered exactly (10k devices × 3 msg/s × 10 points = 300k points/s):
  #    whether it is all acknowledged, and the PUBACK latency when not overloaded.
  simulate_server target --rate "$TARGET_RATE" --duration "$DURATION"
  metrics | tee -a "$OUT/log.txt"
  stop_server
fi

if [[ "$WHAT" == alerts ]]; then
  # Only the alert latency case (issue 7), e.g. with more probes for a steadier p99.
  start_server
  simulate_server warmup --rate 0.2 --properties 20 --duration 15
  simulate_server alerts --rate "$STEADY_RATE" --duration "$DURATION" --probe-alerts "$ALERT_PROBES"
  metrics | tee -a "$OUT/log.txt"
  stop_server
fi

if [[ "$WHAT" == max ]]; then
  # Only the throughput case (a quick loop for CPU-per-message work); PERF=1 records a
  # cpu-clock profile of the server (PERF_SECONDS, 20; PERF_ARGS, -g) in the middle of it
  # (the fleet takes ~20 s to connect first).
  start_server
  simulate_server warmup --rate 0.2 --duration 15
  if [[ -n "${PERF:-}" ]]; then
    ( sleep $((25 + DURATION / 3)); perf record -e cpu-clock -F 999 ${PERF_ARGS:--g} -p "$SERVER_PID" -o "$OUT/perf.data" -- sleep "${PERF_SECONDS:-20}" >/dev/null 2>&1 ) &
    PERF_PID=$!
  fi
  simulate_server max --rate "$MAX_RATE" --duration "$DURATION"
  [[ -n "${PERF_PID:-}" ]] && wait "$PERF_PID"
  simulate_server target --rate "$TARGET_RATE" --duration "$DURATION"
  metrics | tee -a "$OUT/log.txt"
  stop_server
fi

if [[ "$WHAT" == soak ]]; then
  # Memory over time (not part of `all`): 10k devices × 20 properties at 20k points/s for
  # SOAK_DURATION seconds (default 900), RSS sampled every 30 s. The head flushes and
  # parts accumulate and merge during the run, so this shows whether memory stays bounded.
  SOAK_DURATION="${SOAK_DURATION:-900}"
  start_server
  simulate_server warmup --rate 0.2 --properties 20 --duration 15
  ( for _ in $(seq 1 $((SOAK_DURATION / 30))); do
      sleep 30
      echo "soak $(date -u +%H:%M:%S) load $(load) server $(rss "$SERVER_PID") parts $(find "$DATA" -name '*.part' | wc -l)" | tee -a "$OUT/log.txt"
    done ) &
  SAMPLER=$!
  simulate_server soak --rate 0.1 --properties 20 --duration "$SOAK_DURATION"
  kill "$SAMPLER" 2>/dev/null || true
  metrics | tee -a "$OUT/log.txt"
  stop_server
fi

if [[ "$WHAT" == all || "$WHAT" == anchor ]]; then
  # The same simulator against Mosquitto: PUBACKs vs what its one QoS 1 subscriber receives.
  simulate_anchor max --rate "$MAX_RATE" --duration "$DURATION"
  simulate_anchor steady --rate "$STEADY_RATE" --duration "$DURATION"
  # Loss-free relay rate: step the offered rate up.
  for rate in ${ANCHOR_RATES:-1 1.5 2 3}; do
    simulate_anchor "rate$rate" --rate "$rate" --duration "$DURATION"
  done
fi

echo "results in $OUT"
grep -h '^result ' "$OUT"/*.txt | cut -c8- > "$OUT/results.jsonl" || true
