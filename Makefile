# The Lotería Nacional: build, images, Compose and tests.
#
#   make demo                the main job: five agencies on sample data, end to end
#   make admin ARGS=status   the operator's command on the Compose server (close, open,
#                            status --json)
#   make test                unit, integration and end-to-end tests
#   make chaos               a long fault campaign (natively)
#   make bench               the benchmark: the course's sizes, natively over loopback
#   make bench-scale         10 M bets, as 50 agencies and as 5 (several minutes)
#   make bench-hostile       the server's memory under 256 flooding agencies
#   make swarm-up            the main job on Docker Swarm (a single-node swarm if none)
#   make swarm-logs          its services' logs
#   make swarm-down          remove it (and the swarm, if swarm-up made it)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

# `docker compose` (v2) where it exists, else `docker-compose` (v1).
COMPOSE := $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
COMPOSE_FILE := docker-compose-dev.yaml
TARGET := x86_64-unknown-linux-gnu
BIN := target/$(TARGET)/release

.PHONY: build credentials docker-image busybox-image host-deps sample-data docker-compose-up \
        docker-compose-down docker-compose-logs demo test lint e2e chaos bench bench-scale \
        bench-hostile bench-build static-binaries swarm-up swarm-logs swarm-down admin

# Static binaries, so that the images need no base at all. The TLS
# credentials of the committed Compose file come with them (the course's
# flow is build, docker build, compose up); they are never in an image.
build: credentials static-binaries

static-binaries:
	RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked \
		--target $(TARGET) -p server -p client -p datagen --bins

docker-image: build
	docker build -q -f ./server/Dockerfile -t server:latest .
	docker build -q -f ./client/Dockerfile -t client:latest .

# busybox:latest for the echo validation and the tests, made from the
# host's static busybox when the engine does not have it (never pulled:
# this engine reaches no registry). validar-echo-server.sh does the same.
busybox-image:
	@sh scripts/busybox-image.sh busybox:latest

host-deps:
	@sh scripts/host-deps.sh

# The CA, the server's and five agencies' certificates and keys, and the
# revocation list, in .credentials/ (kept when they exist; never committed).
credentials:
	@bash scripts/credentials.sh .credentials 5

# .data/agency-N.csv when present, else .data/dataset.zip extracted, else
# generated sample files: datagen's defaults are the course's five agencies
# (their sizes live in datagen::COURSE_ROWS).
sample-data: build
	@if compgen -G '.data/agency-*.csv' >/dev/null; then \
		echo "using $$(ls .data/agency-*.csv | tr '\n' ' ')"; \
	elif [ -f .data/dataset.zip ]; then \
		unzip -o -j -q .data/dataset.zip '*agency-*.csv' -d .data; \
		echo "extracted $$(ls .data/agency-*.csv | tr '\n' ' ')"; \
	else \
		$(BIN)/datagen --out .data; \
	fi

docker-compose-up: docker-image sample-data
	$(COMPOSE) -f $(COMPOSE_FILE) up -d
	@echo "the round's status page: http://127.0.0.1:8074/ (metrics: /metrics)"

docker-compose-down:
	$(COMPOSE) -f $(COMPOSE_FILE) stop -t 10
	$(COMPOSE) -f $(COMPOSE_FILE) down -v --remove-orphans

docker-compose-logs:
	$(COMPOSE) -f $(COMPOSE_FILE) logs -f

# The operator's command (server admin) on the running Compose project.
ARGS ?= status
admin:
	@sh scripts/admin.sh $(ARGS)

# The main job: start everything, wait for the five agencies, show what
# happened, and clean up. The whole log stays in .data/demo.log.
demo: host-deps docker-image sample-data
	@start=$$(date +%s%N); \
	$(COMPOSE) -f $(COMPOSE_FILE) up -d; \
	echo "agency exit codes: $$(docker wait client1 client2 client3 client4 client5 | tr '\n' ' ')"; \
	end=$$(date +%s%N); \
	$(COMPOSE) -f $(COMPOSE_FILE) logs --no-color > .data/demo.log 2>&1; \
	grep -E 'action: (config|sorteo|consulta_ganadores|loop_finished)|result: fail' .data/demo.log || true; \
	echo "batches stored: $$(grep -c 'action: apuesta_recibida | result: success' .data/demo.log)," \
	     "bets stored: $$(grep -o 'apuesta_recibida | result: success | cantidad: [0-9]*' .data/demo.log | awk '{s += $$NF} END {print s}')"; \
	echo "from compose up to the last agency's exit: $$(( (end - start) / 1000000 )) ms (full log: .data/demo.log)"; \
	$(MAKE) --no-print-directory docker-compose-down >/dev/null 2>&1

test: host-deps lint
	cargo test --locked
	$(MAKE) --no-print-directory e2e

lint:
	cargo fmt --all -- --check
	cargo clippy --locked --workspace --all-targets -- -D warnings

# The end-to-end suite: the real images through Compose.
e2e: docker-image busybox-image
	cargo test --locked -p e2e --tests -- --test-threads=1

# A long fault campaign, natively: rounds of the real binaries under random
# kills, cuts and half-open connections, each checked byte for byte.
# CHAOS_ARGS="--rounds 3" for a shorter one (see --help).
chaos:
	cargo run --release --locked -p testkit --bin chaos -- $(CHAOS_ARGS)

# The benchmark runs the binaries the images ship: the static build.
BENCH := target/release/bench --server $(BIN)/server --client $(BIN)/client

bench-build: static-binaries
	cargo build --release --locked -p bench

# The agencies are `client` processes with client/config.yaml; see
# `target/release/bench --help` for BENCH_ARGS.
bench: bench-build
	$(BENCH) $(BENCH_ARGS)

bench-scale: bench-build
	$(BENCH) --agencies 50 --rows 200000 --runs 1
	$(BENCH) --agencies 5 --rows 2000000 --runs 1

bench-hostile: bench-build
	$(BENCH) --hostile 256

# The main job on Docker Swarm: the same images and sample data, a stack
# named $(STACK) (docs/OPERATIONS.md: Across hosts).
STACK ?= lottery

swarm-up: docker-image sample-data
	STACK=$(STACK) bash scripts/swarm.sh up 5

swarm-logs:
	@STACK=$(STACK) bash scripts/swarm.sh logs

swarm-down:
	STACK=$(STACK) bash scripts/swarm.sh down
