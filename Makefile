# One entry point for everything: `make run` runs the system, `make test` tests it.
# Both install and start what they need (Debian packages, Kafka from Maven Central,
# cargo builds).

CARGO ?= cargo
STACK := scripts/stack.sh
# Test builds carry the services' fail points (the `fail` crate, inert unless
# the FAILPOINTS variable sets one); release builds never do.
TEST_FEATURES := --features coupon-api/failpoints,coupon-writer/failpoints

.PHONY: help setup up down status up-cluster down-cluster status-cluster build build-release run demo token bench bench-many soak reconcile test test-tools e2e e2e-cluster fmt lint lint-deploy images compose-smoke clean

help:
	@echo "make run     stack up, then coupon-api and coupon-writer in the foreground"
	@echo "make test    stack up, build once, run every test"
	@echo "make up|down|status   the local Redis, PostgreSQL and Kafka"
	@echo "make up-cluster|down-cluster|status-cluster   Redis Cluster and three Kafka brokers"
	@echo "make token CUSTOMER=7   a customer's bearer token for make run"
	@echo "make demo    10,000 customers against 1,000 coupons, promises checked"
	@echo "make reconcile   compare Redis with PostgreSQL for every coupon"
	@echo "make e2e     the end-to-end fault scenarios at full size"
	@echo "make e2e-cluster   the Redis Cluster and Kafka cluster failovers at full size"
	@echo "make bench   Kafka design against synchronous baseline: docs/BENCHMARK.md"
	@echo "make bench-many  idle cost and issuance with 10,000 open coupons"
	@echo "make soak    a 3-minute flood: writer membership, drain, memory, promises"
	@echo "make images   the three container images (podman or docker), sizes printed"
	@echo "make compose-smoke   the images against the local stack, as Kubernetes runs them"
	@echo "make setup|build|fmt|lint|clean"

setup:
	@scripts/setup.sh

up: setup
	@$(STACK) up

down:
	@$(STACK) down

status:
	@$(STACK) status

# A Redis Cluster (7001-7006) and three Kafka brokers (9192, 9292, 9392), beside
# the single-node stack: README.md, "The local cluster stack".
up-cluster: setup
	@scripts/stack-cluster.sh up

down-cluster:
	@scripts/stack-cluster.sh down

status-cluster:
	@scripts/stack-cluster.sh status

build: setup
	$(CARGO) build --workspace --all-targets $(TEST_FEATURES)

build-release: setup
	$(CARGO) build --release --bins

run: up build-release
	@scripts/run.sh

demo: up build-release
	@scripts/demo.sh

# A customer's bearer token for `make run` (signed with its development secret).
CUSTOMER ?= 1
token: build-release
	@target/release/coupon-loadgen token --customer $(CUSTOMER)

# TO-BE against AS-IS, the ceilings, plots: docs/BENCHMARK.md. Not part of `test`.
bench: up build-release
	@scripts/bench.sh

# What 10,000 open coupons cost an idle coupon-api and Redis, and issuance;
# its section of docs/BENCHMARK.md (also run at the end of `bench`).
bench-many: up build-release
	@scripts/bench-many.sh

# A sustained flood (3 minutes by default, SOAK_SECONDS) after a spike for
# comparison; the soak section of docs/BENCHMARK.md. Not part of `test`.
soak: up build-release
	@scripts/soak.sh

reconcile: build-release
	target/release/coupon-reconcile

# Every step selects targets of the whole workspace (`--workspace` with
# `--lib`/`--bins`/`--test`), never a package alone or one excluded: cargo
# resolves features over the packages selected, so `-p coupon-e2e` or
# `--exclude coupon-e2e` would build every dependency again, once each.
# The integration tests of every crate but coupon-e2e, found by their files:
INTEGRATION_TESTS := $(foreach t,$(filter-out crates/coupon-e2e/%,$(wildcard crates/*/tests/*.rs crates/*/tests/*/main.rs)),--test $(notdir $(basename $(patsubst %/main.rs,%,$(t)))))
E2E_SINGLE := --test newcomer --test scenarios --test bench_tool --test observability
E2E_CLUSTER := --test cluster

# Build everything once, then run the tests against the stacks. The end-to-end
# scenarios stop and start stack components, so they run one at a time, last:
# the single-node ones, then the cluster failovers at their short size.
test: up up-cluster build lint-deploy test-tools
	$(CARGO) test --workspace $(TEST_FEATURES) --no-fail-fast --lib --bins $(INTEGRATION_TESTS)
	rm -f target/debug/e2e-logs/report.md
	$(CARGO) test --workspace $(TEST_FEATURES) $(E2E_SINGLE) -- --test-threads=1
	$(CARGO) test --workspace $(TEST_FEATURES) $(E2E_CLUSTER) -- --test-threads=1

# Tools the tests run besides cargo (schemathesis for the API's contract test),
# installed once under .stack/tools.
test-tools:
	@scripts/test-tools.sh

# The end-to-end scenarios at full size (20,000 customers per spike), and the
# Prometheus test waits for its alert to fire (its `for: 5m`), not only to be
# pending; the table lands in target/debug/e2e-logs/report.md.
e2e: up build test-tools
	rm -f target/debug/e2e-logs/report.md
	E2E_CUSTOMERS=20000 E2E_ALERTS_FIRE=1 $(CARGO) test --workspace $(TEST_FEATURES) $(E2E_SINGLE) -- --test-threads=1 --nocapture

# The cluster failovers (Redis master, Kafka broker, API replica) at full size.
e2e-cluster: up up-cluster build
	rm -f target/debug/e2e-logs/report.md
	E2E_CUSTOMERS=20000 $(CARGO) test --workspace $(TEST_FEATURES) $(E2E_CLUSTER) -- --test-threads=1 --nocapture

fmt:
	$(CARGO) fmt --all

# cargo-machete (unused dependencies) is installed once under .stack/tools.
MACHETE := .stack/tools/bin/cargo-machete
lint: setup lint-deploy $(MACHETE)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets $(TEST_FEATURES) -- -D warnings
	$(MACHETE)

$(MACHETE):
	$(CARGO) install --locked --quiet --root .stack/tools cargo-machete@0.9.2

# docker/ and deploy/ checked offline (tools installed under .stack/tools).
lint-deploy:
	@scripts/lint-deploy.sh

# Container images of docker/Dockerfile, tagged localhost/<binary>:dev: docker/README.md.
images:
	@scripts/images.sh

# The images against the local stack (own database, topics, key prefix), as
# the Kubernetes manifests run them: non-root, read-only, no capabilities.
compose-smoke: up images
	@scripts/compose-smoke.sh

clean: down down-cluster
	$(CARGO) clean
	if [ -L .stack/postgres ]; then rm -rf "$$(readlink .stack/postgres)"; fi
	rm -rf .stack
