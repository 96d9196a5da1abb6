#!/usr/bin/env bash
# `make bench-hot`: one hot coupon. What merged issue-script calls
# (COUPON__ISSUE__MAX_BATCH, default 256) and refusals answered from memory
# (COUPON__ISSUE__MEMORY_CHECK_MS, default 100; 0 is off) change, each on
# and off, on a drop of DROP_CUSTOMERS distinct customers (100,000) on a
# coupon of DROP_STOCK (10,000), as fast as coupon-loadgen sends; then the
# same drop under Kafka producer settings (linger.ms, compression.type); each
# ROUNDS times, alternating, on one machine in one run; then the script's own
# ceiling (scripts/bench-script-batches.sh). Reports requests/s, latency,
# Redis commands per request (INFO commandstats) and the CPU of Redis, the
# Kafka broker and coupon-api. The writer is not running: the drop's cost is
# the API's, Redis's and Kafka's. Not a test: it asserts nothing about time.
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

kafka_cpu_s() { process_cpu_s "$(cat "$ROOT/.stack/kafka/kafka.pid")"; }

# One drop against a coupon-api started with the given settings. Leaves its
# output in $LOGS/drop-<name>.log and its figures in the globals it sets.
measure_drop() { # name env...
    local name=$1; shift
    start "api-$name" "$@" "$BIN/coupon-api"
    local api=$started
    wait_for --log "$LOGS/api-$name.log" --every 0.2 60 "coupon-api ($name)" curl -sf "$COUPON_API_MANAGEMENT/health/ready"
    local commands0 calls0 redis0 api0 kafka0 out
    commands0=$(redis_commands) calls0=$(script_calls) redis0=$(redis_cpu_s) api0=$(process_cpu_s "$api") kafka0=$(kafka_cpu_s)
    out=$("$BIN/coupon-loadgen" spike --api "$API" --customers "$DROP_CUSTOMERS" --stock "$DROP_STOCK" \
        --repeat-share 0 --no-writer --concurrency 256)
    echo "$out" >"$LOGS/drop-$name.log"
    commands=$(($(redis_commands) - commands0)) calls=$(($(script_calls) - calls0))
    redis_s=$(echo "$(redis_cpu_s) - $redis0" | bc) api_s=$(echo "$(process_cpu_s "$api") - $api0" | bc)
    kafka_s=$(echo "$(kafka_cpu_s) - $kafka0" | bc)
    stop "$api"
    rate=$(sed -n 's/.*: \([0-9]*\) requests\/s.*/\1/p' <<<"$out")
    answered=$(sed -n 's/^answers in \([0-9.]*\) s.*/\1/p' <<<"$out")
    sold_out=$(sed -n 's/^last 201 after \([0-9.]*\) s/\1/p' <<<"$out")
    p50=$(sed -n 's/^latency: p50 \([0-9.]*\) ms.*/\1/p' <<<"$out")
    p99=$(sed -n 's/^latency: .* p99 \([0-9.]*\) ms  p99.9.*/\1/p' <<<"$out")
    issued_p50=$(sed -n 's/^  issued  *p50 \([0-9.]*\) ms.*/\1/p' <<<"$out")
    issued_p99=$(sed -n 's/^  issued  *.* p99 \([0-9.]*\) ms  p99.9.*/\1/p' <<<"$out")
}

drop() { # max_batch memory_check_ms round
    measure_drop "$1-$2-$3" COUPON__ISSUE__MAX_BATCH="$1" COUPON__ISSUE__MEMORY_CHECK_MS="$2"
    awk -v b="$1" -v m="$([ "$2" = 0 ] && echo off || echo on)" -v r="$3" -v so="$sold_out" -v all="$answered" -v rate="$rate" -v p50="$p50" -v p99="$p99" -v c="$commands" -v k="$calls" \
        -v n="$DROP_CUSTOMERS" -v rs="$redis_s" -v as="$api_s" \
        'BEGIN { printf "| %d | %s | %d | %s | %s | %s | %s | %s | %.3f | %.2f | %.2f | %.2f |\n", b, m, r, so, all, rate, p50, p99, k / n, c / n, rs, as }'
}

# The same drop (merged calls and memory at their defaults) with the Kafka
# producer's linger and compression set; what the broker and coupon-api spend
# per issuance, and the latency of the 201s, which wait for the broker's
# acknowledgement.
producer_drop() { # linger_ms compression round
    measure_drop "linger$1-$2-$3" COUPON__KAFKA__LINGER_MS="$1" COUPON__KAFKA__PROPERTIES__COMPRESSION_TYPE="$2"
    awk -v l="$1" -v c="$2" -v r="$3" -v rate="$rate" -v p50="$p50" -v p99="$p99" -v ip50="$issued_p50" -v ip99="$issued_p99" \
        -v n="$DROP_STOCK" -v requests="$DROP_CUSTOMERS" -v ks="$kafka_s" -v as="$api_s" \
        'BEGIN { printf "| %d | %s | %d | %s | %s | %s | %.1f | %s | %s | %.1f | %.1f |\n", l, c, r, rate, ip50, ip99, ip99 / ip50, p50, p99, ks / n * 1e6, as / requests * 1e6 }'
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
echo "== Kafka producer: linger.ms and compression on the same drop; the broker's CPU per issuance ($DROP_STOCK), coupon-api's per request ($DROP_CUSTOMERS)"
echo "| linger ms | compression | round | requests/s | 201s p50 ms | 201s p99 ms | 201s p99/p50 | all p50 ms | all p99 ms | Kafka broker CPU µs per issuance | coupon-api CPU µs per request |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for ((round = 1; round <= ROUNDS; round++)); do
    for setting in "0 none" "2 none" "5 none" "20 none" "2 lz4" "5 lz4" "20 lz4"; do
        # shellcheck disable=SC2086 # two words: linger, compression
        producer_drop $setting "$round"
    done
done
echo
echo "== the issue script alone (redis-benchmark, no HTTP)"
"$ROOT/scripts/bench-script-batches.sh"
