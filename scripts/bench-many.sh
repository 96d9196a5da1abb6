#!/usr/bin/env bash
# `make bench-many` (and the end of `make bench`): what open coupons cost an
# idle coupon-api and its Redis, and whether they slow issuance down. Two
# release coupon-api processes, each on a database, topic and key prefix of
# its own, so "few coupons" means the spikes' own: an idle window, then
# MANY_COUPONS coupons on the second and another idle window, then spikes
# taking turns between the two. Writes the many-coupons section of
# docs/BENCHMARK.md. Not a test: it asserts nothing about time.
#
#   MANY_COUPONS (10000)  IDLE_SECONDS (30)  CUSTOMERS (50000)  STOCK (10000)  CONCURRENCY (256)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/target/release"
# shellcheck source=lib/common.sh
. "$ROOT/scripts/lib/common.sh"
. "$ROOT/scripts/lib/machine.sh"
MANY_COUPONS="${MANY_COUPONS:-10000}"
IDLE_SECONDS="${IDLE_SECONDS:-30}"
CUSTOMERS="${CUSTOMERS:-50000}"
STOCK="${STOCK:-10000}"
CONCURRENCY="${CONCURRENCY:-256}"
OUT="$ROOT/bench/results/many-$(date -u +%Y%m%dT%H%M%SZ)"
LOGS="$OUT/logs"
mkdir -p "$LOGS"
. "$ROOT/scripts/lib/services.sh"

# A and B: alike but for their database, topic and key prefix; B gets the coupons.
forget() {
    for side in a b; do
        psql_bench -c "DROP DATABASE IF EXISTS bench_many_${side}_$$ WITH (FORCE)" >/dev/null
        delete_topic "bench.many.$side.$$"
        redis-cli -p "${REDIS_PORT:-6379}" --scan --pattern "bench-many-$side-$$:*" |
            xargs -r -n 1000 redis-cli -p "${REDIS_PORT:-6379}" DEL >/dev/null
    done
}
trap 'cleanup; forget' EXIT
port=18080
for side in a b; do
    url="$(dev_database_url "bench_many_${side}_$$")"
    psql_bench -c "CREATE DATABASE bench_many_${side}_$$" >/dev/null
    COUPON__DATABASE__URL="$url" "$BIN/coupon-writer" migrate >/dev/null
    start "api-$side" COUPON__HTTP__ADDR="127.0.0.1:$port" COUPON__HTTP__MANAGEMENT_ADDR="127.0.0.1:$((port + 1000))" \
        COUPON__DATABASE__URL="$url" \
        COUPON__KAFKA__TOPIC="bench.many.$side.$$" COUPON__REDIS__KEY_PREFIX="bench-many-$side-$$:" "$BIN/coupon-api"
    eval "pid_$side=$started url_$side=$url api_$side=http://127.0.0.1:$port management_$side=http://127.0.0.1:$((port + 1000))"
    port=$((port + 1))
done
"$BIN/coupon-loadgen" many --api "$api_a" --management "$management_a" --database-url "$url_a" --pid "$pid_a" \
    --api-many "$api_b" --management-many "$management_b" --database-url-many "$url_b" --pid-many "$pid_b" \
    --coupons "$MANY_COUPONS" --idle-s "$IDLE_SECONDS" --customers "$CUSTOMERS" --stock "$STOCK" \
    --concurrency "$CONCURRENCY" --json "$OUT/many.json" --output "$ROOT/docs/BENCHMARK.md" \
    --machine "$(machine_description)" \
    --command "make bench-many (MANY_COUPONS=$MANY_COUPONS IDLE_SECONDS=$IDLE_SECONDS CUSTOMERS=$CUSTOMERS STOCK=$STOCK CONCURRENCY=$CONCURRENCY)"
