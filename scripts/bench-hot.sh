#!/usr/bin/env bash
# `make bench-hot`: one hot coupon. What merged issue-script calls
# (COUPON__ISSUE__MAX_BATCH, default 256) and refusals answered from memory
# (COUPON__ISSUE__MEMORY_CHECK_MS, default 100; 0 is off) change, each on
# and off, on a drop of DROP_CUSTOMERS distinct customers (100,000) on a
# coupon of DROP_STOCK (10,000), as fast as coupon-loadgen sends, ROUNDS
# times each, alternating,
# on one machine in one run; then the script's own ceiling
# (scripts/bench-script-batches.sh). Reports requests/s, latency, Redis
# commands per request (INFO commandstats) and the CPU seconds of Redis and
# coupon-api per drop. The writer is not running: the drop's cost is the
# API's, Redis's and Kafka's. Not a test: it asserts nothing about time.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/target/release"
. "$ROOT/scripts/lib/common.sh"
DROP_CUSTOMERS="${DROP_CUSTOMERS:-100000}"
DROP_STOCK="${DROP_STOCK:-10000}"
ROUNDS="${ROUNDS:-3}"
LOGS="$ROOT/bench/results/hot-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$LOGS"
. "$ROOT/scripts/lib/services.sh"
bench_ports

redis_cli() { redis-cli -p "${REDIS_PORT:-6379}" "$@"; }
redis_cpu_s() { redis_cli INFO cpu | awk -F: '/used_cpu_(sys|user):/ {s += $2} END {printf "%.3f", s}'; }
# Calls of every command, those the scripts run included; and the EVALSHA
# calls among them (the issue script, as coupon-api sends it).
redis_commands() { redis_cli INFO commandstats | awk -F'[=,:]' '/^cmdstat_/ {s += $3} END {print s}'; }
script_calls() { redis_cli INFO commandstats | awk -F'[=,:]' '/^cmdstat_evalsha:/ {print $3}'; }
process_cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.3f", ($14 + $15) / hz}' "/proc/$1/stat"; }

drop() { # max_batch memory_check_ms round
    start "api-$1-$2-$3" COUPON__ISSUE__MAX_BATCH="$1" COUPON__ISSUE__MEMORY_CHECK_MS="$2" "$BIN/coupon-api"
    local api=$started
    until curl -sf "$COUPON_API_MANAGEMENT/health/ready" >/dev/null; do sleep 0.2; done
    local commands0 calls0 redis0 api0 out
    commands0=$(redis_commands) calls0=$(script_calls) redis0=$(redis_cpu_s) api0=$(process_cpu_s "$api")
    out=$("$BIN/coupon-loadgen" spike --api "$API" --customers "$DROP_CUSTOMERS" --stock "$DROP_STOCK" \
        --repeat-share 0 --no-writer --concurrency 256)
    echo "$out" >"$LOGS/drop-$1-$2-$3.log"
    local commands=$(($(redis_commands) - commands0)) calls=$(($(script_calls) - calls0))
    local redis_s api_s
    redis_s=$(echo "$(redis_cpu_s) - $redis0" | bc) api_s=$(echo "$(process_cpu_s "$api") - $api0" | bc)
    stop "$api"
    local rate p50 p99 sold_out answered
    rate=$(sed -n 's/.*: \([0-9]*\) requests\/s.*/\1/p' <<<"$out")
    answered=$(sed -n 's/^answers in \([0-9.]*\) s.*/\1/p' <<<"$out")
    sold_out=$(sed -n 's/^last 201 after \([0-9.]*\) s/\1/p' <<<"$out")
    p50=$(sed -n 's/^latency: p50 \([0-9.]*\) ms.*/\1/p' <<<"$out")
    p99=$(sed -n 's/^latency: .* p99 \([0-9.]*\) ms  p99.9.*/\1/p' <<<"$out")
    awk -v b="$1" -v m="$([ "$2" = 0 ] && echo off || echo on)" -v r="$3" -v so="$sold_out" -v all="$answered" -v rate="$rate" -v p50="$p50" -v p99="$p99" -v c="$commands" -v k="$calls" \
        -v n="$DROP_CUSTOMERS" -v rs="$redis_s" -v as="$api_s" \
        'BEGIN { printf "| %d | %s | %d | %s | %s | %s | %s | %s | %.3f | %.2f | %.2f | %.2f |\n", b, m, r, so, all, rate, p50, p99, k / n, c / n, rs, as }'
}

echo "== drop: $DROP_CUSTOMERS customers, stock $DROP_STOCK: merged calls (max batch 256, or 1: a call per request) and memory, each on and off"
echo "| max batch | memory | round | sold out after s | all answered after s | requests/s | p50 ms | p99 ms | script calls per request | Redis commands per request (scripts' included) | Redis CPU s | coupon-api CPU s |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for ((round = 1; round <= ROUNDS; round++)); do
    for setting in "1 0" "1 100" "256 0" "256 100"; do
        # shellcheck disable=SC2086 # two words: max batch, memory check
        drop $setting "$round"
    done
done
echo
echo "== the issue script alone (redis-benchmark, no HTTP)"
"$ROOT/scripts/bench-script-batches.sh"
