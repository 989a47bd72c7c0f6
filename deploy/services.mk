# Local services (Kafka KRaft, PostgreSQL 15, Redis) as plain processes, state in .data/.
# Included by the main Makefile (`include deploy/services.mk`); all logic lives in
# deploy/services.sh, which finds the repo root itself, so these work from any cwd.
# Settings (ports, data dir, partitions...) are environment variables: see the top of
# deploy/services.sh, e.g. `REDIS_PORT=6380 make services-up`.

METRICX_SERVICES_SH := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))/services.sh

.PHONY: services-install services-up services-down services-status topics

## apt packages (postgresql, redis-server) and the Kafka jars (Maven); quick when done
services-install:
	@bash "$(METRICX_SERVICES_SH)" install

## start Kafka, PostgreSQL and Redis (a no-op for those already running) and wait for them
services-up:
	@bash "$(METRICX_SERVICES_SH)" up

## stop all three and make sure their processes are gone
services-down:
	@bash "$(METRICX_SERVICES_SH)" down

## one line per service; fails (exit 3) unless all three are running
services-status:
	@bash "$(METRICX_SERVICES_SH)" status

## create the metricx Kafka topics (idempotent; METRICX_RAW_PARTITIONS, default 4)
topics:
	@bash "$(METRICX_SERVICES_SH)" create-topics
