#!/usr/bin/env bash
# Energy benchmarks of issue 18: a month of daily energy for 1,000 devices and a month's
# peak demand for 100 devices, cold (raw reads) and warm (closed days cached), then after
# a restart cold again from the persisted days (ADR 0017), through a release FactoryOps on
# the embedded store and on InfluxDB 1.x, and in the same run the nearest InfluxQL query
# straight on InfluxDB (integral() … GROUP BY time(1d) tz()).
#
#   bench/energy.sh [all|embedded|influx]            (make bench-energy = all)
#
# Environment: BIN (release binary), DEVICES (1000), PEAK_DEVICES (100), STEP_MIN (minutes
# between power readings, 5: enough for power), MONTH (2026-11, a closed month in Europe/Berlin), WRITERS
# (HTTP backfill connections, 4), WARM (warm reads per case, 20), RAW_DAYS (the embedded
# store's raw retention, 90: the default 30 days would drop the start of the month), OUT (results directory),
# KEEP_DATA=1 keeps the data dirs. Every case notes `uptime` first: the machine is shared,
# so each figure is recorded with the load it was measured under.
set -euo pipefail
cd "$(dirname "$0")/.."

WHAT="${1:-all}"
BIN="${BIN:-${CARGO_TARGET_DIR:-target}/release/factoryops}"
export DEVICES="${DEVICES:-1000}" PEAK_DEVICES="${PEAK_DEVICES:-100}" STEP_MIN="${STEP_MIN:-5}"
export WRITERS="${WRITERS:-4}" WARM="${WARM:-20}"
MONTH="${MONTH:-2026-11}"
RAW_DAYS="${RAW_DAYS:-90}"
OUT="${OUT:-bench/results/energy-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"
[[ -x "$BIN" ]] || { echo "build first: cargo build --release -p factoryops (BIN=$BIN)"; exit 1; }

# The month's bounds: local midnights in Berlin, as UTC milliseconds.
read -r FROM_MS TO_MS < <(python3 - "$MONTH" <<'EOF'
import sys, datetime, zoneinfo
y, m = map(int, sys.argv[1].split("-"))
tz = zoneinfo.ZoneInfo("Europe/Berlin")
a = datetime.datetime(y, m, 1, tzinfo=tz)
b = datetime.datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=tz)
print(int(a.timestamp() * 1000), int(b.timestamp() * 1000))
EOF
)
export FROM_MS TO_MS

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
note() { echo "== $(date -u +%H:%M:%S) load $(load) :: $*" | tee -a "$OUT/log.txt"; }
step() { note "$*"; python3 bench/energy_load.py "$@" | tee -a "$OUT/results.jsonl"; }
rss() { awk '/VmRSS|VmHWM/ { printf "%s %.0f MiB  ", $1, $2/1024 }' "/proc/$1/status"; echo; }

SERVER_PID=""; INFLUX_PID=""; DATA=""; INFLUX_DIR=""
stop_all() {
  if [[ -n "$SERVER_PID" ]]; then kill -TERM "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""; fi
  if [[ -n "$INFLUX_PID" ]]; then kill -TERM "$INFLUX_PID" 2>/dev/null || true; wait "$INFLUX_PID" 2>/dev/null || true; INFLUX_PID=""; fi
  if [[ -z "${KEEP_DATA:-}" ]]; then
    [[ -n "$DATA" ]] && rm -rf "$DATA"
    [[ -n "$INFLUX_DIR" ]] && rm -rf "$INFLUX_DIR"
  fi
  DATA=""; INFLUX_DIR=""
}
trap stop_all EXIT

# A private influxd on free ports in a temp dir (the same settings as the tests' support).
start_influx() {
  INFLUX_DIR="$(mktemp -d /tmp/factoryops-bench-influx.XXXXXX)"
  INFLUX_PORT="$(free_port)"; local rpc; rpc="$(free_port)"
  cat >"$INFLUX_DIR/influxdb.conf" <<EOF
reporting-disabled = true
bind-address = "127.0.0.1:$rpc"
[meta]
  dir = "$INFLUX_DIR/meta"
[data]
  dir = "$INFLUX_DIR/data"
  wal-dir = "$INFLUX_DIR/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:$INFLUX_PORT"
  log-enabled = false
  max-row-limit = 0
[continuous_queries]
  enabled = false
EOF
  influxd -config "$INFLUX_DIR/influxdb.conf" >"$OUT/influxd.log" 2>&1 &
  INFLUX_PID=$!
  for _ in $(seq 1 300); do curl -fsS "http://127.0.0.1:$INFLUX_PORT/ping" >/dev/null 2>&1 && break; sleep 0.2; done
  curl -fsS "http://127.0.0.1:$INFLUX_PORT/ping" >/dev/null
  note "influxd $(influxd version) pid $INFLUX_PID http $INFLUX_PORT"
}

# start_server NAME [PERSIST_SECS]: a fresh data dir unless REUSE=1 (a restart).
start_server() {
  [[ -n "${REUSE:-}" && -n "$DATA" ]] || DATA="$(mktemp -d /tmp/factoryops-bench.XXXXXX)"
  local http; http="$(free_port)"
  export FACTORYOPS_ROOT_PASSWORD="bench-root-password-1"
  # Energy reads raw points (ADR 0015): raw retention (30 days by default) must hold the month.
  # The background pass that persists closed days (ADR 0017) is off unless asked for, so
  # the first timing is the raw path.
  FACTORYOPS_ENERGY__PERSIST_INTERVAL_SECS="${2:-0}" \
  FACTORYOPS_TSDB__RETENTION_RAW_DAYS="$RAW_DAYS" FACTORYOPS_DATA_DIR="$DATA" FACTORYOPS_HTTP_ADDR="127.0.0.1:$http" \
    FACTORYOPS_MQTT_ADDR="127.0.0.1:$(free_port)" FACTORYOPS_LOG_LEVEL="${LOG_LEVEL:-warn}" \
    ${TSDB_URL:+env FACTORYOPS_TSDB_URL="$TSDB_URL"} "$BIN" serve >"$OUT/server-$1.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 150); do curl -fsS "http://127.0.0.1:$http/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
  curl -fsS "http://127.0.0.1:$http/readyz" >/dev/null
  export API="127.0.0.1:$http" STATE="$DATA/bench-state.json"
  note "server ($1) pid $SERVER_PID http $http data $DATA"
}

stop_server() {
  kill -TERM "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
}

metric() { curl -fsS "http://$API/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }

# Waits until the background pass's persisted-day count stops growing.
wait_persisted() {
  local last=-1 now
  while true; do
    sleep 5
    now="$(metric factoryops_energy_days_persisted_total)"; now="${now:-0}"
    if [[ "$now" != 0 && "$now" == "$last" ]]; then break; fi
    last="$now"
  done
  note "persisted $now device-days"
}

# One backend: provision, backfill the month over HTTP, annotate, group, time.
run_case() {
  local name="$1"
  start_server "$name"
  step provision
  step backfill
  step annotate
  step groups
  note "$name: server $(rss "$SERVER_PID")"
  step time
  curl -fsS "http://$API/metrics" | grep -E "^factoryops_energy_(cache|days)" | tee -a "$OUT/log.txt" || true
  note "$name: server $(rss "$SERVER_PID")"
  # ADR 0017: restart with the background pass on and wait for it; restart again (empty
  # memory, pass off) and time: the cold read now comes from the persisted days.
  stop_server
  local t0=$SECONDS
  REUSE=1 start_server "$name-persist" 3600
  wait_persisted
  note "$name: persisting took about $((SECONDS - t0)) s"
  stop_server
  REUSE=1 start_server "$name-persisted" 0
  PHASE="-persisted" step time
  curl -fsS "http://$API/metrics" | grep -E "^factoryops_energy_(cache|days)" | tee -a "$OUT/log.txt" || true
  # Priming (ADR 0017, 6): with the pass on, the cache is filled from the persisted days
  # after its first pass. Timed once right after the restart (racing the priming), and
  # once after the priming's log line.
  stop_server
  LOG_LEVEL=info REUSE=1 start_server "$name-primed-race" 3600
  PHASE="-primed-race" step time
  stop_server
  LOG_LEVEL=info REUSE=1 start_server "$name-primed" 3600
  until grep -q "energy cache primed\|priming the energy cache failed" "$OUT/server-$name-primed.log"; do sleep 0.5; done
  note "$name: $(grep -m1 "energy cache primed\|priming the energy cache failed" "$OUT/server-$name-primed.log")"
  PHASE="-primed" step time
  curl -fsS "http://$API/metrics" | grep -E "^factoryops_energy_(cache|days)" | tee -a "$OUT/log.txt" || true
}

# The anchor: InfluxQL straight on InfluxDB, timed with curl (median of WARM after a first).
influxql() {
  local what="$1" q="$2"
  local first; first="$(curl -sS -o "$OUT/anchor-$what.json" -w '%{time_total}' -G "http://127.0.0.1:$INFLUX_PORT/query" \
    --data-urlencode db=factoryops --data-urlencode "q=$q")"
  local times=()
  for _ in $(seq 1 "$WARM"); do
    times+=("$(curl -sS -o /dev/null -w '%{time_total}' -G "http://127.0.0.1:$INFLUX_PORT/query" \
      --data-urlencode db=factoryops --data-urlencode "q=$q")")
  done
  printf '%s\n' "${times[@]}" | sort -n | awk -v what="$what" -v first="$first" '
    { t[NR] = $1 * 1000 } END { p95 = t[int(NR * 0.95 + 0.5)]; med = (NR % 2) ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2;
      printf "{\"case\": \"influxql-%s\", \"first_ms\": %.1f, \"median_ms\": %.1f, \"p95_ms\": %.1f, \"n\": %d}\n", what, first * 1000, med, p95, NR }' \
    | tee -a "$OUT/results.jsonl"
}

anchor() {
  local from to where peak_devices
  from="$(python3 -c "import time; print(time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime($FROM_MS / 1000)))")"
  to="$(python3 -c "import time; print(time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime($TO_MS / 1000)))")"
  where="\"factory_id\" = 'bench' AND \"property_name\" = 'power_kw' AND time >= '$from' AND time < '$to'"
  note "anchor: InfluxQL on influxd directly"
  influxql daily-integral "SELECT integral(\"value\", 1h) FROM \"device_metrics\" WHERE $where GROUP BY time(1d), \"device_id\" tz('Europe/Berlin')"
  peak_devices="$(python3 -c "print(' OR '.join(f\"\\\"device_id\\\" = 'm{i:04d}'\" for i in range($PEAK_DEVICES)))")"
  influxql peak-15min "SELECT max(\"kw\") FROM (SELECT sum(\"m\") AS \"kw\" FROM (SELECT mean(\"value\") AS \"m\" FROM \"device_metrics\" WHERE $where AND ($peak_devices) GROUP BY time(15m), \"device_id\") GROUP BY time(15m))"
}

note "energy benchmark: $DEVICES devices, a reading every $STEP_MIN min over $MONTH ($FROM_MS..$TO_MS), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
uptime | tee -a "$OUT/log.txt"
if [[ "$WHAT" == all || "$WHAT" == embedded ]]; then
  TSDB_URL="" run_case embedded
  stop_all
fi
if [[ "$WHAT" == all || "$WHAT" == influx ]]; then
  start_influx
  TSDB_URL="http://127.0.0.1:$INFLUX_PORT/?db=factoryops" run_case influxdb
  anchor
  stop_all
fi
note "done: $OUT"
