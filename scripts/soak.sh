#!/usr/bin/env bash
# `make soak`: a sustained flood on one coupon, after a spike for comparison,
# on release binaries of coupon-api and coupon-writer started for it (ports of
# their own, so `make run` may stay up). First a short flood by wrk, the
# independent load generator, as a cross-check of the request rate. Writes the
# soak section of docs/BENCHMARK.md and docs/bench/soak.svg; exits non-zero
# when a promise broke or the writer lost its group. Not a test: it asserts
# nothing about time.
#
#   SOAK_SECONDS (180)  CONCURRENCY (128)  WRK_SECONDS (20; 0 skips wrk)
#   SOAK_READY_S (60: how long coupon-api may take to answer ready)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/target/release"
# shellcheck source=lib/common.sh
. "$ROOT/scripts/lib/common.sh"
. "$ROOT/scripts/lib/machine.sh"
SOAK_SECONDS="${SOAK_SECONDS:-180}"
CONCURRENCY="${CONCURRENCY:-128}"
WRK_SECONDS="${WRK_SECONDS:-20}"
READY_S="${SOAK_READY_S:-60}"
OUT="$ROOT/bench/results/soak-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"

# wrk cannot sign a token per request: the API takes the customer from a
# gateway's header instead (with the gateway's proof, COUPON__AUTH__GATEWAY_SECRET
# of scripts/lib/services.sh), for wrk and the load generator alike.
export COUPON__AUTH__MODE=gateway

LOGS="$OUT"
. "$ROOT/scripts/lib/services.sh"
bench_ports
start_writer
start api "$BIN/coupon-api"

cross_check=""
if [ "$WRK_SECONDS" -gt 0 ]; then
    if ! command -v wrk >/dev/null; then
        log "installing wrk"
        apt_install wrk
    fi
    wait_for --log "$OUT/api.log" "$READY_S" "coupon-api on $API" curl -sf "$COUPON_API_MANAGEMENT/health/ready"
    coupon=$(curl -sf -X POST "$API/api/v1/coupons" -H "Authorization: Bearer $COUPON__ADMIN__TOKEN" \
        -H 'Content-Type: application/json' \
        -d '{"name":"wrk cross-check","totalQuantity":100000000,"startsAt":"2020-01-01T00:00:00Z","endsAt":"2100-01-01T00:00:00Z"}' |
        json_field id)
    echo "== wrk: ${WRK_SECONDS}s on coupon $coupon, $CONCURRENCY connections"
    COUPON=$coupon wrk -t2 -c"$CONCURRENCY" -d"${WRK_SECONDS}s" --latency -s "$ROOT/scripts/flood.lua" "$API" |
        tee "$OUT/wrk.txt"
    rate=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$OUT/wrk.txt")
    p99=$(awk '$1 == "99%" {print $2}' "$OUT/wrk.txt")
    cross_check="wrk -t2 -c$CONCURRENCY -d${WRK_SECONDS}s with scripts/flood.lua just before: $rate requests/s, p99 $p99"
    # Let the writer catch up, so the spike and the soak start from no backlog.
    remaining=$(curl -sf "$API/api/v1/coupons/$coupon" | json_field remainingQuantity)
    "$BIN/coupon-loadgen" drain --coupon "$coupon" --expected $((100000000 - remaining)) >/dev/null
fi

"$BIN/coupon-loadgen" soak --api "$API" --seconds "$SOAK_SECONDS" --concurrency "$CONCURRENCY" \
    --writer-metrics "http://$COUPON__WRITER__HTTP__ADDR/metrics" --json "$OUT/soak.json" \
    --output "$ROOT/docs/BENCHMARK.md" --plots "$ROOT/docs/bench" \
    --machine "$(machine_description)" --cross-check "$cross_check" \
    --command "make soak (SOAK_SECONDS=$SOAK_SECONDS CONCURRENCY=$CONCURRENCY WRK_SECONDS=$WRK_SECONDS)"
echo "raw results: $OUT"
