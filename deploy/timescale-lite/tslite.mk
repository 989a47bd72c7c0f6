# TimescaleDB-in-WASM test server (see deploy/timescale-lite/README.md).
# Include from the top-level Makefile:   include deploy/timescale-lite/tslite.mk

TSLITE_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
# npm ci writes node_modules/.package-lock.json: it stands for the whole install.
TSLITE_STAMP := $(TSLITE_DIR)/node_modules/.package-lock.json
TSLITE_PORT ?= 5433

.PHONY: tslite-install tslite-serve

# npm ci only when node_modules is missing or older than package-lock.json.
tslite-install: $(TSLITE_STAMP)

$(TSLITE_STAMP): $(TSLITE_DIR)/package-lock.json $(TSLITE_DIR)/package.json
	cd $(TSLITE_DIR) && npm ci --no-audit --no-fund
	@touch $@

# Foreground server on 127.0.0.1:$(TSLITE_PORT) (in memory; Ctrl-C stops it).
tslite-serve: tslite-install
	node $(TSLITE_DIR)/server.mjs $(TSLITE_PORT)
