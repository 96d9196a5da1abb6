#!/usr/bin/env bash
# `make bench-hot`: one hot coupon. What merged issue-script calls
# (COUPON__ISSUE__MAX_BATCH, default 256) and refusals answered from memory
# (COUPON__ISSUE__MEMORY_CHECK_MS, default 100; 0 is off) change, each on
# and off, on a drop of DROP_CUSTOMERS distinct customers (100,000) on a
# coupon of DROP_STOCK (10,000), as fast as coupon-loadgen sends; then the
# same drop under Kafka producer settings (linger.ms, compression.type); then
# on the cluster stack (three Redis masters, three brokers) with the coupon's
# stock in 1 and 3 shards; each ROUNDS times, alternating, on one machine in
# one run; then the script's own ceiling (scripts/bench-script-batches.sh).
# SECTIONS picks some of: drop producer sharded script (default all). Reports requests/s, latency,
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
SECTIONS=" ${SECTIONS:-drop producer sharded script} "
section() { [[ $SECTIONS == *" $1 "* ]]; }
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

# The cluster stack's masters (ports), and one figure of each, space-separated.
cluster_masters() {
    redis-cli -p 7001 CLUSTER NODES | tr -d '\r' |
        awk '$3 ~ /master/ && $3 !~ /fail/ { split($2, a, /[:@]/); print a[2] }' | sort -n
}
per_master() { # INFO section, awk program over its lines
    local port
    for port in $masters; do redis-cli -p "$port" INFO "$1" | tr -d '\r' | awk -F'[=,:]' "$2"; done | xargs
}
masters_cpu_s() { per_master cpu '/used_cpu_(sys|user):/ {s += $2} END {printf "%.3f\n", s}'; }
masters_script_calls() { per_master commandstats '/^cmdstat_evalsha:/ {s = $3} END {print s + 0}'; }
# What is left on a coupon's shards after its drop: stock, and units in
# transfers still open (`receiver:units:epoch`). Both must be 0.
stranded_units() { # coupon shards
    local coupon=$1 shards=$2 k tag sum=0
    for ((k = 0; k < shards; k++)); do
        tag=$([ "$k" = 0 ] && echo "$coupon" || echo "$coupon:$k")
        sum=$((sum + $(redis-cli -c -p 7001 GET "coupon:{$tag}:stock" | tr -d '\r' | sed 's/^$/0/')))
        sum=$((sum + $(redis-cli -c -p 7001 HVALS "coupon:{$tag}:transfers" | tr -d '\r' | awk -F: '{s += $2} END {print s + 0}')))
    done
    echo "$sum"
}

sharded_drop() { # shards round
    local shards=$1 round=$2 api out coupon cpu0 cpu1 calls0 calls1 api0 api_s stranded early
    masters=$(cluster_masters)
    start "api-cluster-$shards-$round" COUPON__REDIS__MODE=cluster \
        COUPON__REDIS__URL=redis://127.0.0.1:7001,redis://127.0.0.1:7002,redis://127.0.0.1:7003 \
        COUPON__KAFKA__BROKERS=127.0.0.1:9192,127.0.0.1:9292,127.0.0.1:9392 "$BIN/coupon-api"
    api=$started
    wait_for --log "$LOGS/api-cluster-$shards-$round.log" --every 0.2 60 "coupon-api (cluster)" curl -sf "$COUPON_API_MANAGEMENT/health/ready"
    cpu0=$(masters_cpu_s) calls0=$(masters_script_calls) api0=$(process_cpu_s "$api")
    out=$("$BIN/coupon-loadgen" spike --api "$API" --customers "$DROP_CUSTOMERS" --stock "$DROP_STOCK" \
        --shards "$shards" --repeat-share 0 --no-writer --concurrency 256)
    cpu1=$(masters_cpu_s) calls1=$(masters_script_calls) api_s=$(echo "$(process_cpu_s "$api") - $api0" | bc)
    stop "$api"
    echo "$out" >"$LOGS/drop-cluster-$shards-$round.log"
    coupon=$(sed -n 's/^coupon \([0-9]*\): stock.*/\1/p' <<<"$out")
    stranded=$(stranded_units "$coupon" "$shards")
    early=$(sed -n 's/^SOLD_OUT while stock remained: \([0-9]*\)/\1/p' <<<"$out")
    awk -v s="$shards" -v r="$round" -v so="$(sed -n 's/^last 201 after \([0-9.]*\) s/\1/p' <<<"$out")" \
        -v all="$(sed -n 's/^answers in \([0-9.]*\) s.*/\1/p' <<<"$out")" \
        -v rate="$(sed -n 's/.*: \([0-9]*\) requests\/s.*/\1/p' <<<"$out")" \
        -v p50="$(sed -n 's/^latency: p50 \([0-9.]*\) ms.*/\1/p' <<<"$out")" \
        -v p99="$(sed -n 's/^latency: .* p99 \([0-9.]*\) ms  p99.9.*/\1/p' <<<"$out")" \
        -v early="$early" -v stranded="$stranded" -v cpu0="$cpu0" -v cpu1="$cpu1" -v calls0="$calls0" -v calls1="$calls1" \
        -v n="$DROP_STOCK" -v requests="$DROP_CUSTOMERS" -v as="$api_s" '
        BEGIN {
            k = split(cpu0, c0, " "); split(cpu1, c1, " "); split(calls0, k0, " "); split(calls1, k1, " ")
            for (i = 1; i <= k; i++) {
                per = (c1[i] - c0[i]) / n * 1e6; sum += per
                calls = calls (i > 1 ? " / " : "") (k1[i] - k0[i]); cpu = cpu (i > 1 ? " / " : "") sprintf("%.1f", per)
            }
            printf "| %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %.1f | %.1f |\n", s, r, so, all, rate, p50, p99, early, stranded, calls, cpu, sum, as / requests * 1e6
        }'
}

if section drop; then
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
fi
if section producer; then
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
fi

if section sharded; then
echo "== sharded: the same drop on the cluster stack (3 Redis masters, 3 Kafka brokers), the coupon's stock in 1 and 3 shards"
echo "| shards | round | sold out after s | all answered after s | requests/s | p50 ms | p99 ms | SOLD_OUT while stock remained | stranded units | script calls per master | Redis CPU µs per issuance per master | sum of masters' CPU µs per issuance | coupon-api CPU µs per request |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for ((round = 1; round <= ROUNDS; round++)); do
    for shards in 1 3; do
        sharded_drop "$shards" "$round"
    done
done
echo
fi

if section script; then
echo "== the issue script alone (redis-benchmark, no HTTP)"
"$ROOT/scripts/bench-script-batches.sh"
fi
