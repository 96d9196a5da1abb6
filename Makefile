# One entry point for everything: `make run` runs the system, `make test` tests it.
# Both install and start what they need (Debian packages, Kafka from Maven Central,
# cargo builds).

CARGO ?= cargo
STACK := scripts/stack.sh

.PHONY: help setup up down status build build-release run test fmt lint clean

help:
	@echo "make run     stack up, then coupon-api and coupon-writer in the foreground"
	@echo "make test    stack up, build once, run every test"
	@echo "make up|down|status   the local Redis, PostgreSQL and Kafka"
	@echo "make setup|build|fmt|lint|clean"

setup:
	@scripts/setup.sh

up: setup
	@$(STACK) up

down:
	@$(STACK) down

status:
	@$(STACK) status

build: setup
	$(CARGO) build --workspace --all-targets

build-release: setup
	$(CARGO) build --release --bins

run: up build-release
	@scripts/run.sh

# Build everything once, then run the tests against the stack.
test: up build
	$(CARGO) test --workspace --no-fail-fast

fmt:
	$(CARGO) fmt --all

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean: down
	$(CARGO) clean
	rm -rf .stack
