#!/usr/bin/env bash
# `make pause-drill`: how soon a pause stops the 201s of a flood on two API
# replicas. Release binaries of coupon-writer and of two coupon-api replicas
# (ports of their own, so `make run` may stay up); wrk floods both replicas
# with new customers, and after PAUSE_AFTER_S seconds an operator pauses the
# coupon through the first one. Once the writer has written every issued
# coupon, PostgreSQL holds each issuance's instant (Redis's clock, on this
# machine the same as the script's), so the last one is compared with the
# pause's answer; wrk's longest response bounds how long after its issuance
# any 201 can have reached its customer. Not a test: it prints a measurement.
#
#   FLOOD_S (10)  PAUSE_AFTER_S (4)  CONCURRENCY (64 per replica)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/target/release"
# shellcheck source=lib/common.sh
. "$ROOT/scripts/lib/common.sh"
FLOOD_S="${FLOOD_S:-10}"
PAUSE_AFTER_S="${PAUSE_AFTER_S:-4}"
CONCURRENCY="${CONCURRENCY:-64}"
OUT="$ROOT/bench/results/pause-drill-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"

# wrk takes the customer from a gateway's header (as in scripts/soak.sh).
export COUPON__AUTH__MODE=gateway
LOGS="$OUT"
. "$ROOT/scripts/lib/services.sh"
bench_ports
command -v wrk >/dev/null || { log "installing wrk"; apt_install wrk; }

start_writer
start api-a "$BIN/coupon-api"
start api-b COUPON__HTTP__ADDR=127.0.0.1:18081 COUPON__HTTP__MANAGEMENT_ADDR=127.0.0.1:19092 "$BIN/coupon-api"
API_B=http://127.0.0.1:18081
for management in "$COUPON_API_MANAGEMENT" http://127.0.0.1:19092; do
    wait_for --log "$OUT/api-a.log" 60 "coupon-api on $management" curl -sf "$management/health/ready"
done

admin=(-H "Authorization: Bearer $COUPON__ADMIN__TOKEN" -H 'Content-Type: application/json')
coupon=$(curl -sf -X POST "$API/api/v1/coupons" "${admin[@]}" \
    -d '{"name":"pause drill","totalQuantity":100000000,"startsAt":"2020-01-01T00:00:00Z","endsAt":"2100-01-01T00:00:00Z"}' |
    json_field id)
echo "== wrk on two replicas for ${FLOOD_S}s, $CONCURRENCY connections each; pause after ${PAUSE_AFTER_S}s (coupon $coupon)"
COUPON=$coupon OFFSET=0 wrk -t1 -c"$CONCURRENCY" -d"${FLOOD_S}s" --latency -s "$ROOT/scripts/flood.lua" "$API" >"$OUT/wrk-a.txt" &
flood_a=$!
COUPON=$coupon OFFSET=8 wrk -t1 -c"$CONCURRENCY" -d"${FLOOD_S}s" --latency -s "$ROOT/scripts/flood.lua" "$API_B" >"$OUT/wrk-b.txt" &
flood_b=$!
sleep "$PAUSE_AFTER_S"
asked_ms=$(date +%s%3N)
curl -sf -X POST "$API/api/v1/coupons/$coupon/pause" "${admin[@]}" >"$OUT/pause.json"
answered_ms=$(date +%s%3N)
wait "$flood_a" "$flood_b"

issued=$(curl -sf "$API/api/v1/coupons/$coupon/stats" "${admin[@]}" | json_field issued)
"$BIN/coupon-loadgen" drain --coupon "$coupon" --expected "$issued" >/dev/null
last_ms=$(psql_bench -c "SELECT (extract(epoch FROM max(issued_at)) * 1000)::bigint FROM customer_coupon WHERE coupon_id = $coupon")
after=$(psql_bench -c "SELECT count(*) FROM customer_coupon WHERE coupon_id = $coupon AND issued_at > to_timestamp($answered_ms / 1000.0)")
longest() { awk '$1 == "Latency" {print $4}' "$1"; }
requests() { awk '/requests in/ {print $1}' "$1"; }
refused() { awk '/Non-2xx/ {print $5}' "$1"; }

echo "requests: $(requests "$OUT/wrk-a.txt") on A, $(requests "$OUT/wrk-b.txt") on B;" \
    "refused: $(refused "$OUT/wrk-a.txt") and $(refused "$OUT/wrk-b.txt"); issued $issued"
echo "pause asked at +0 ms, answered at +$((answered_ms - asked_ms)) ms"
echo "last issuance at $((last_ms - answered_ms)) ms from the pause's answer (negative: before it); issuances after the answer: $after"
echo "longest response: $(longest "$OUT/wrk-a.txt") on A, $(longest "$OUT/wrk-b.txt") on B"
echo "raw results: $OUT"
