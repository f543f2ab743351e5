# FactoryOps — the two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: run build web test test-deps lint fmt test-rust test-web fuzz-smoke openapi bench bench-ingest bench-energy clean-data help

help:
	@echo "make run    build and start the all-in-one server on embedded defaults"
	@echo "make test   install what the tests need, then lint and run every test"
	@echo "make lint   rustfmt --check and clippy -D warnings"
	@echo "make openapi  regenerate docs/openapi.json from the code"
	@echo "make bench  run the benchmarks (release builds; slow)"
	@echo "make web    build the web portal (web/dist, embedded in the binary)"
	@echo "make test-web  Vitest unit tests + the Playwright e2e against the real binary (embedded store, then InfluxDB)"
	@echo "make bench-ingest  MQTT ingest and alert latency end to end, with the Mosquitto anchor"
	@echo "make bench-energy  issue 18: a month of energy for 1,000 devices, embedded and InfluxDB"

## The all-in-one server: SQLite + embedded time-series store in ./data, nothing to install.
run:
	@scripts/run.sh

build:
	$(CARGO) build --release -p factoryops

## Everything CI runs.
# The portal is built before the Rust tests so the binary they build embeds it (test-web reuses that binary).
test: test-deps lint web test-rust test-web fuzz-smoke

test-deps:
	@scripts/test-deps.sh

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

test-rust:
	$(CARGO) nextest run --workspace --profile $(if $(CI),ci,default)

## Each fuzz target for a short while (FUZZ_SECONDS, default 20); findings fail the run.
FUZZ_SECONDS ?= 20
fuzz-smoke:
	set -o pipefail; cd fuzz && for target in payload_parser mqtt_decoder; do \
	  RUSTC_BOOTSTRAP=1 cargo fuzz run -s none $$target -- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=0 2>&1 | tail -n 2 || exit 1; \
	done

## The web portal (React + TypeScript, web/): npm ci, typed client from docs/openapi.json, build.
web:
	cd web && npm ci --no-audit --no-fund && npm run build

## Vitest unit tests, then Playwright (Debian's /usr/bin/chromium) against the debug binary.
# The e2e needs target/debug/factoryops. `cargo test --no-run` builds it with the same
# features as `make test-rust` (a no-op right after it); `cargo build -p factoryops`
# would compile a second variant of half the workspace. A binary built before web/dist
# existed embeds nothing: touching web.rs makes cargo embed the portal again.
test-web: web
	cd web && npm test
	bin="$${CARGO_TARGET_DIR:-target}/debug/factoryops"; \
	  if [[ -f "$$bin" && web/dist/index.html -nt "$$bin" ]]; then touch crates/api/src/web.rs; fi
	$(CARGO) test --workspace --no-run --quiet
	cd web && npm run e2e
	cd web && npm run e2e:influx

openapi:
	UPDATE_OPENAPI=1 $(CARGO) nextest run -p factoryops -E 'test(openapi_document_is_checked_in)'

bench:
	$(CARGO) bench --workspace

## Issues 6/7 end to end: the simulator against a release server and the machine's Mosquitto
## (needs ~25 min and ulimit -n ≥ 11000; see BENCHMARKS.md).
bench-ingest:
	$(CARGO) build --release -p factoryops
	bench/ingest.sh all

## Issue 18: a month of daily energy / peak demand through a release server, on the embedded
## store and on a private influxd, with the InfluxQL anchor (see BENCHMARKS.md).
bench-energy:
	$(CARGO) build --release -p factoryops
	bench/energy.sh all

clean-data:
	rm -rf ./data
