# metricx — every operator task is a target here.  The two a newcomer needs:
#   make demo   install everything, start the services, create the schema, run the live demo
#   make test   install everything, start the services, run the whole suite, stop the services
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
METRICX := $(BIN)/metricx
PYTEST_ARGS ?=

include deploy/services.mk

.PHONY: help setup timescaledb-install browser-install python migrate pipeline poller serve notifier demo test test-unit test-faults bench lint typecheck clean

help:
	@echo "make demo      simulated ad accounts -> Kafka -> Bytewax -> PostgreSQL (Ctrl-C to stop)"
	@echo "make test      the whole test suite against real services (started and stopped here)"
	@echo "make test-faults  restarts, outages and kill -9 under load (its own services); recovery times"
	@echo "make bench     throughput, latency and memory figures"
	@echo "make setup | timescaledb-install | services-up | services-down | migrate | topics | pipeline | poller | serve"

## Python environment (pinned in pyproject.toml), system packages, Kafka jars, TimescaleDB
## (built from source when missing), and Debian's Chromium for the dashboard's browser test
setup: python services-install timescaledb-install browser-install

## TimescaleDB 2.28.3 into PostgreSQL 15, unless installed: from TIMESCALEDB_SOURCE,
## ../shared/vendor/ or the upstream release tag (deploy/timescaledb.sh)
timescaledb-install: services-install
	@bash deploy/timescaledb.sh install

browser-install:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium (browser tests)"; \
	  apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; }

python: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "metricx needs Python 3.11, found " + sys.version.split()[0]'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

# `make topics` (deploy/services.mk) runs `metricx topics`: the one list of topics
topics: python

migrate: python services-up
	$(METRICX) migrate

pipeline: python services-up migrate topics
	$(METRICX) pipeline

poller: python services-up topics
	$(METRICX) poller --sim

serve: python services-up migrate
	$(METRICX) serve

notifier: python services-up migrate topics
	$(METRICX) notifier

demo: setup services-up migrate topics
	$(METRICX) demo

## the whole suite; services are stopped afterwards whatever the outcome
test: setup
	@bash deploy/services.sh up
	@status=0; \
	$(BIN)/python -m pytest $(PYTEST_ARGS) || status=$$?; \
	bash deploy/services.sh down; \
	exit $$status

## the fault suite alone: its own Kafka, PostgreSQL and Redis (on free ports) restarted,
## stopped and its processes killed under load; writes .data/bench/recovery.json
test-faults: setup
	$(BIN)/python -m pytest -m faults tests/faults $(PYTEST_ARGS)

## every test that needs no service (marked by the fixtures it uses: tests/conftest.py),
## for a quick loop while editing; passes with every service down
test-unit: python
	$(BIN)/python -m pytest -q -m "not services and not timescale and not browser and not faults" $(PYTEST_ARGS)

## figures only, never pass/fail: the backbone (throughput, latency, memory), the pollers, serving,
## stop-loss, then recovery after faults (runs the fault suite with Redis down 30 s)
bench: setup services-up migrate topics
	$(BIN)/python -m tests.bench.run_bench $(BENCH_ARGS)
	$(BIN)/python -m tests.bench.bench_pollers
	$(BIN)/python -m tests.bench.bench_serving
	$(BIN)/python -m tests.bench.bench_stoploss
	$(BIN)/python -m tests.bench.bench_recovery --run

## ruff, and the layers (import-linter contracts in pyproject.toml: arrows point down,
## services independent, no import circle)
lint: python
	$(BIN)/ruff check metricx ground schemas adapters domain copilot pipelines notifier pollers serving tests
	$(BIN)/lint-imports

typecheck: python
	$(BIN)/mypy

clean: services-down
	rm -rf .data $(VENV)
