# One entry point for everything: `make run` runs the system, `make test` tests it.
# Both install and start what they need (Debian packages, Kafka from Maven Central,
# cargo builds).

CARGO ?= cargo
STACK := scripts/stack.sh
# Test builds carry the services' fail points (the `fail` crate, inert unless
# the FAILPOINTS variable sets one); release builds never do.
TEST_FEATURES := --features coupon-api/failpoints,coupon-writer/failpoints

.PHONY: help setup up down status up-cluster down-cluster status-cluster up-secure down-secure status-secure build build-release run demo token bench bench-many bench-hot soak pause-drill reconcile test test-ready test-tools e2e e2e-cluster fmt lint lint-deploy audit images compose-smoke clean

# Every target's line carries its description after `##`; `make help` prints
# them in this order, and names any .PHONY target that has none.
help: ## this list
	@awk '/^\.PHONY:/ { for (i = 2; i <= NF; i++) phony[$$i] = 1 } \
		/^[a-z][a-z0-9-]*:.*## / { \
			name = $$0; sub(/:.*/, "", name); text = $$0; sub(/^[^#]*## /, "", text); \
			printf "  make %-16s %s\n", name, text; described[name] = 1 } \
		END { for (t in phony) if (!(t in described)) { printf "  make %-16s (no description: add one after ## in the Makefile)\n", t; bad = 1 } \
			exit bad }' $(firstword $(MAKEFILE_LIST))

setup: ## install the Debian packages the project needs (through sudo when not root)
	@scripts/setup.sh

up: setup ## start the local Redis, PostgreSQL and Kafka (reuses what already runs)
	@$(STACK) up

down: ## stop the local Redis, PostgreSQL and Kafka
	@$(STACK) down

status: ## state of the local Redis, PostgreSQL and Kafka
	@$(STACK) status

# A Redis Cluster (7001-7006) and three Kafka brokers (9192, 9292, 9392), beside
# the single-node stack: README.md, "The local cluster stack".
up-cluster: setup ## start a Redis Cluster (7001-7006) and three Kafka brokers
	@scripts/stack-cluster.sh up

down-cluster: ## stop the Redis Cluster and the three Kafka brokers
	@scripts/stack-cluster.sh down

status-cluster: ## state of the Redis Cluster and the three Kafka brokers
	@scripts/stack-cluster.sh status

# Redis (6380), PostgreSQL (5433) and Kafka (9093) over TLS with client
# certificates and passwords, beside the other stacks; `. .stack/secure/env`
# points the services at it: README.md, "The secure local stack".
up-secure: setup ## start the secure Redis, PostgreSQL and Kafka (TLS, client certificates, passwords)
	@scripts/stack-secure.sh up

down-secure: ## stop the secure Redis, PostgreSQL and Kafka
	@scripts/stack-secure.sh down

status-secure: ## state of the secure Redis, PostgreSQL and Kafka
	@scripts/stack-secure.sh status

build: setup ## debug build of every target, with the test fail points
	$(CARGO) build --workspace --all-targets $(TEST_FEATURES)

build-release: setup ## release build of the binaries
	$(CARGO) build --release --bins

run: up build-release ## stack up, then coupon-api and coupon-writer in the foreground
	@scripts/run.sh

demo: up build-release ## 10,000 customers against 1,000 coupons, promises checked
	@scripts/demo.sh

# A bearer token for `make run` (signed with its development secret): a
# customer's, or with SERVICE=orders the order service's (it redeems and releases).
CUSTOMER ?= 1
token: build-release ## a bearer token for make run: a customer's (CUSTOMER=7) or a service's (SERVICE=orders)
	@if [ -n "$(SERVICE)" ]; then target/release/coupon-loadgen token --service $(SERVICE); \
	else target/release/coupon-loadgen token --customer $(CUSTOMER); fi

# TO-BE against AS-IS, the ceilings, plots: docs/BENCHMARK.md. Not part of `test`.
bench: up up-secure up-cluster build-release ## Kafka design against synchronous baseline: docs/BENCHMARK.md, then bench-hot
	@scripts/bench.sh
	@scripts/bench-hot.sh

# What 10,000 open coupons cost an idle coupon-api and Redis, and issuance;
# its section of docs/BENCHMARK.md (also run at the end of `bench`).
bench-many: up build-release ## idle cost and issuance with 10,000 open coupons
	@scripts/bench-many.sh

# One hot coupon: merged issue-script calls against a call per request, in
# one run, then the Kafka producer's linger and compression (docs/PERFORMANCE.md,
# "One hot coupon").
bench-hot: up up-cluster build-release ## one hot coupon: merged script calls and memory on and off, producer settings, 1 and 3 shards on the cluster, the script's ceiling
	@scripts/bench-hot.sh

# A sustained flood (3 minutes by default, SOAK_SECONDS) after a spike for
# comparison; the soak section of docs/BENCHMARK.md. Not part of `test`.
soak: up build-release ## a 3-minute flood: writer membership, drain, memory, promises
	@scripts/soak.sh

pause-drill: up build-release ## how soon a pause stops the 201s of a wrk flood on two replicas
	@scripts/pause-drill.sh

reconcile: build-release ## compare Redis with PostgreSQL for every coupon
	target/release/coupon-reconcile

# Every step selects targets of the whole workspace (`--workspace` with
# `--lib`/`--bins`/`--test`), never a package alone or one excluded: cargo
# resolves features over the packages selected, so `-p coupon-e2e` or
# `--exclude coupon-e2e` would build every dependency again, once each.
# The integration tests of every crate but coupon-e2e, found by their files:
INTEGRATION_TESTS := $(foreach t,$(filter-out crates/coupon-e2e/%,$(wildcard crates/*/tests/*.rs crates/*/tests/*/main.rs)),--test $(notdir $(basename $(patsubst %/main.rs,%,$(t)))))
E2E_SINGLE := --test newcomer --test scenarios --test bench_tool --test observability --test secure
E2E_CLUSTER := --test cluster

# What the tests need besides the build, one step after another (they share
# downloads and Debian's package lock): the stacks, the test tools, and the
# deploy lint, whose failure does not stop the tests: `make test` fails at
# the end when it failed.
LINT_DEPLOY_FAILED := .stack/lint-deploy.failed
TEST_READY_LOG := .stack/test-ready.log
test-ready: up up-cluster up-secure test-tools ## what the tests need besides the build: the stacks, test tools and the deploy lint
	@rm -f $(LINT_DEPLOY_FAILED); scripts/lint-deploy.sh || { mkdir -p $(dir $(LINT_DEPLOY_FAILED)); touch $(LINT_DEPLOY_FAILED); }

# Build everything once, then run the tests against the stacks. test-ready
# waits on JVMs, downloads and disks while the build keeps both cores busy, so
# it runs beside the build (on a fresh clone about 2.5 of its 10 minutes); its
# output follows the build's. The end-to-end scenarios stop and start stack
# components, so they run one at a time, last: the single-node ones, then
# the cluster failovers at their short size.
# The crates' integration tests mostly wait (for a recovery, a writer, a
# broker), each on its own database, topic and key prefix: four at a time on
# 2 cores took coupon-api's 124 s instead of 218 s, the writer's 40 s instead of 66 s.
TEST_THREADS ?= 4
test: setup ## stack up, build once, run every test (and the deploy lint)
	@mkdir -p $(dir $(TEST_READY_LOG)); \
	$(MAKE) --no-print-directory test-ready > $(TEST_READY_LOG) 2>&1 & ready=$$!; \
	$(MAKE) --no-print-directory build; built=$$?; \
	wait $$ready; prepared=$$?; cat $(TEST_READY_LOG); \
	[ $$built -eq 0 ] && [ $$prepared -eq 0 ]
	$(CARGO) test --workspace $(TEST_FEATURES) --no-fail-fast --lib --bins $(INTEGRATION_TESTS) -- --test-threads=$(TEST_THREADS)
	rm -f target/debug/e2e-logs/report.md
	$(CARGO) test --workspace $(TEST_FEATURES) $(E2E_SINGLE) -- --test-threads=1
	$(CARGO) test --workspace $(TEST_FEATURES) $(E2E_CLUSTER) -- --test-threads=1
	@if [ -f $(LINT_DEPLOY_FAILED) ]; then echo "make test: the tests ran, but the deploy lint failed (scripts/lint-deploy.sh, output above)" >&2; exit 1; fi

# Tools the tests run besides cargo (schemathesis for the API's contract test),
# installed once under .stack/tools.
test-tools: ## install the tools the tests call besides cargo (schemathesis, prometheus, chromium)
	@scripts/test-tools.sh

# The end-to-end scenarios at full size (20,000 customers per spike), and the
# Prometheus test waits for its alert to fire (its `for: 5m`), not only to be
# pending; the table lands in target/debug/e2e-logs/report.md.
e2e: up build test-tools ## the end-to-end fault scenarios at full size
	rm -f target/debug/e2e-logs/report.md
	E2E_CUSTOMERS=20000 E2E_ALERTS_FIRE=1 $(CARGO) test --workspace $(TEST_FEATURES) $(E2E_SINGLE) -- --test-threads=1 --nocapture

# The cluster failovers (Redis master, Kafka broker, API replica) at full size,
# with the long profile `make test` leaves out (skewed clocks, slow links, a
# split brain: the tests marked `ignore` in cluster.rs).
e2e-cluster: up up-cluster build ## the Redis Cluster and Kafka cluster failovers at full size
	rm -f target/debug/e2e-logs/report.md
	E2E_CUSTOMERS=20000 $(CARGO) test --workspace $(TEST_FEATURES) $(E2E_CLUSTER) -- --test-threads=1 --include-ignored --nocapture

fmt: ## format the workspace (cargo fmt)
	$(CARGO) fmt --all

# cargo-machete (unused dependencies) is installed once under .stack/tools.
MACHETE := .stack/tools/bin/cargo-machete
lint: setup lint-deploy $(MACHETE) ## deploy lint, rustfmt check, clippy, unused dependencies
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets $(TEST_FEATURES) -- -D warnings
	$(MACHETE)

$(MACHETE):
	$(CARGO) install --locked --quiet --root .stack/tools cargo-machete@0.9.2

# docker/ and deploy/ checked offline (tools installed under .stack/tools).
lint-deploy: ## check docker/ and deploy/ offline (hadolint, compose, kustomize, promtool)
	@scripts/lint-deploy.sh

# Cargo.lock against the RustSec advisories with cargo-audit (installed once
# under .stack/tools), offline: ADVISORY_DB is the path to a checkout of
# github.com/rustsec/advisory-db, never fetched. Fails on vulnerabilities;
# warnings too with AUDIT_DENY=warnings. README.md, "Auditing dependencies".
# Not part of `test`.
audit: ## Cargo.lock against the RustSec advisories (ADVISORY_DB=path to an advisory-db checkout)
	@scripts/audit.sh

# Container images of docker/Dockerfile, tagged localhost/<binary>:dev: docker/README.md.
images: ## the three container images (podman or docker), sizes printed
	@scripts/images.sh

# The images against the local stack (own database, topics, key prefix), as
# the Kubernetes manifests run them: non-root, read-only, no capabilities.
compose-smoke: up images ## the images against the local stack, as Kubernetes runs them
	@scripts/compose-smoke.sh

clean: down down-cluster down-secure ## stop the stacks, remove target/ and .stack/
	$(CARGO) clean
	for link in .stack/postgres .stack/secure/postgres; do if [ -L $$link ]; then rm -rf "$$(readlink $$link)"; fi; done
	rm -rf .stack
