#!/usr/bin/env bash
# The issue script's ceiling on one Redis core, with and without merged
# calls: redis-benchmark (-c 50, unpipelined, no HTTP) calls issue.lua with
# batches of 1, 16 and 256 distinct customers on a coupon whose stock never
# runs out, then on a sold-out coupon. Prints a Markdown table of calls/s and
# requests decided per second. Runs against the Redis of `make up` (or
# REDIS_PORT) under a key prefix of its own, and removes its keys.
# Not a test: it asserts nothing about time.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PORT="${REDIS_PORT:-6379}"
PREFIX="bench-batches-$$:"
cli() { redis-cli -p "$PORT" "$@"; }

# MIRRORS crates/coupon-domain/src/keys.rs (CouponKeys::new), as scripts/bench.sh.
coupon_keys() { # coupon_id
    local base="${PREFIX}coupon:{$1}"
    echo "$base:meta $base:stock $base:issued $base:outbox $base:reissued"
}

sha=$(cli SCRIPT LOAD "$(cat "$ROOT/crates/coupon-api/src/issuance/issue.lua")")
cleanup() { cli --scan --pattern "${PREFIX}*" | xargs -r -n 500 redis-cli -p "$PORT" DEL >/dev/null; }
trap cleanup EXIT

# One run: prints calls/s.
calls_per_s() { # coupon_id stock batch calls
    local keys meta stock args=()
    keys=$(coupon_keys "$1")
    read -r meta stock _ <<<"$keys"
    cli HSET "$meta" starts_ms 0 ends_ms 99999999999999 total "$2" >/dev/null
    cli SET "$stock" "$2" >/dev/null
    for ((i = 0; i < $3; i++)); do args+=(__rand_int__); done
    # shellcheck disable=SC2086 # the five key names, one word each
    redis-benchmark -p "$PORT" -n "$4" -c 50 -r 1000000000 --csv \
        EVALSHA "$sha" 5 $keys 1 "${args[@]}" | tail -1 | cut -d, -f2 | tr -d '"'
    # shellcheck disable=SC2086
    cli DEL $keys >/dev/null
}

echo "| customers per call | calls/s (issuing) | issued/s | calls/s (sold out) | answered/s (sold out) |"
echo "|---|---|---|---|---|"
coupon=1
for batch in 1 16 256; do
    # About two million issuances per row: the outbox keeps each one.
    calls=$((2000000 / batch))
    ((calls > 200000)) && calls=200000
    issuing=$(calls_per_s "$coupon" 1000000000 "$batch" "$calls")
    sold_out=$(calls_per_s "$((coupon + 1))" 0 "$batch" "$calls")
    coupon=$((coupon + 2))
    awk -v b="$batch" -v i="$issuing" -v s="$sold_out" \
        'BEGIN { printf "| %d | %.0f | %.0f | %.0f | %.0f |\n", b, i, i * b, s, s * b }'
done
