#!/usr/bin/env bash
# Installs and starts what the test suite talks to. Idempotent; safe to run often.
# Tests skip loudly when a service is missing on a developer machine, and fail in CI.
set -euo pipefail

log() { echo "==> $*"; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }

apt_updated=0
apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  if [[ $apt_updated -eq 0 ]]; then as_root apt-get update -qq; apt_updated=1; fi
  log "installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

if ! command -v cargo-nextest >/dev/null; then
  log "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

# s3s-fs: a real S3-compatible server for the object store's tests (each test starts its
# own on a free port, factoryops_testkit::s3). Pinned: 0.14.1 is the newest release that
# builds with the rustc 1.95 these machines have (later ones need 1.96).
S3S_FS_VERSION=0.14.1
if [[ "$(s3s-fs --version 2>/dev/null)" != *"$S3S_FS_VERSION"* ]]; then
  log "installing s3s-fs $S3S_FS_VERSION"
  cargo install s3s-fs --version "$S3S_FS_VERSION" --features binary --locked --quiet
fi

# The in-process SMTP server of the notification tests links the system OpenSSL.
apt_install libssl-dev pkg-config

# The report tests read their PDFs back with pdftotext and render pages with pdftoppm.
apt_install poppler-utils

# MariaDB: the scaled-out relational backend. Tests create and drop their own databases.
if ! port_open 3306; then
  if ! command -v mariadbd >/dev/null && ! [[ -x /usr/sbin/mariadbd ]]; then
    apt_install mariadb-server
  fi
  log "starting MariaDB"
  as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql || true
  for _ in $(seq 1 30); do port_open 3306 && break; sleep 1; done
fi
if port_open 3306; then
  # Tests connect as root with no password over TCP.
  mariadb -uroot -h127.0.0.1 -e 'CREATE DATABASE IF NOT EXISTS test' >/dev/null 2>&1 || true
  log "MariaDB is up on 127.0.0.1:3306"
else
  log "WARNING: MariaDB is not reachable on 127.0.0.1:3306; its tests will skip (or fail under CI)"
fi

# InfluxDB 1.x: the InfluxDB adapter's tests and the side-by-side benchmark start their own
# `influxd` on free ports with a temporary directory, so only the binary is needed here.
# The package's system service is not started (and is disabled if the install enabled it).
if ! command -v influxd >/dev/null; then
  apt_install influxdb
  if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
    as_root systemctl disable --now influxdb >/dev/null 2>&1 || true
  fi
fi
if command -v influxd >/dev/null; then
  log "influxd is installed ($(influxd version 2>/dev/null | head -1)); tests start their own instance"
else
  log "WARNING: influxd is not installed; the InfluxDB tests (adapter, server, e2e) will skip (or fail under CI)"
fi

# mosquitto_pub: a second, independent MQTT client for the ingest end-to-end tests.
command -v mosquitto_pub >/dev/null || apt_install mosquitto-clients

# Mosquitto on 1883: the simulator's anchor test and the ingest benchmark's anchor. Machines
# of this kind usually run it already; a fresh one gets it here (CI fails without it).
if ! port_open 1883; then
  command -v mosquitto >/dev/null || [[ -x /usr/sbin/mosquitto ]] || apt_install mosquitto
  log "starting Mosquitto on 1883"
  as_root /usr/sbin/mosquitto -d || true  # no config: localhost:1883, anonymous
  for _ in $(seq 1 10); do port_open 1883 && break; sleep 1; done
fi
port_open 1883 && log "Mosquitto is up on 127.0.0.1:1883" || log "WARNING: no MQTT broker on 127.0.0.1:1883"

# The web portal: Node.js 20+ with npm builds it; its e2e test drives Debian's Chromium
# through playwright-core (a Playwright browser download would fail offline).
command -v npm >/dev/null || apt_install nodejs npm
command -v chromium >/dev/null || apt_install chromium
log "node $(node --version 2>/dev/null || echo missing), $(chromium --version 2>/dev/null || echo 'chromium missing')"

# cargo-fuzz: `make fuzz-smoke` runs each fuzz target briefly (stable toolchain,
# RUSTC_BOOTSTRAP, no sanitizer: the fuzzed code forbids `unsafe`).
if ! command -v cargo-fuzz >/dev/null; then
  log "installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi
