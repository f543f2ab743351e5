# FactoryOps — the two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: run build test test-deps lint fmt test-rust openapi bench clean-data help

help:
	@echo "make run    build and start the all-in-one server on embedded defaults"
	@echo "make test   install what the tests need, then lint and run every test"
	@echo "make lint   rustfmt --check and clippy -D warnings"
	@echo "make openapi  regenerate docs/openapi.json from the code"
	@echo "make bench  run the benchmarks (release builds; slow)"

## The all-in-one server: SQLite + embedded time-series store in ./data, nothing to install.
run:
	@scripts/run.sh

build:
	$(CARGO) build --release -p factoryops

## Everything CI runs.
test: test-deps lint test-rust

test-deps:
	@scripts/test-deps.sh

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

test-rust:
	$(CARGO) nextest run --workspace --profile $(if $(CI),ci,default)

openapi:
	UPDATE_OPENAPI=1 $(CARGO) nextest run -p factoryops -E 'test(openapi_document_is_checked_in)'

bench:
	$(CARGO) bench --workspace

clean-data:
	rm -rf ./data
