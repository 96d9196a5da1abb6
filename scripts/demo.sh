#!/usr/bin/env bash
# `make demo`: 10,000 customers against a coupon of 1,000, with a summary and
# the three promises checked. Uses the services of `make run` when they answer,
# otherwise starts them for the demo and stops them afterwards.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${BIN:-$ROOT/target/release}"
API="${COUPON_API:-http://${COUPON__HTTP__ADDR:-127.0.0.1:8080}}"
MANAGEMENT="${COUPON_API_MANAGEMENT:-http://${COUPON__HTTP__MANAGEMENT_ADDR:-127.0.0.1:9090}}"
# The credentials of `make run` (scripts/lib/dev.env), for the load generator
# and for the services started here.
# shellcheck source=lib/common.sh
. "$ROOT/scripts/lib/common.sh"
dev_env
export COUPON__DEV COUPON__ADMIN__TOKEN COUPON__AUTH__JWT_SECRET COUPON__AUTH__JWT_AUDIENCE

started=""
if ! curl -sf "$MANAGEMENT/health/ready" >/dev/null 2>&1; then
    echo "demo: starting coupon-api and coupon-writer (logs in .stack/demo.log)"
    mkdir -p "$ROOT/.stack"
    "$ROOT/scripts/run.sh" >"$ROOT/.stack/demo.log" 2>&1 &
    started=$!
    trap 'kill -TERM $started 2>/dev/null; wait $started 2>/dev/null || true' EXIT
fi
COUPON_API="$API" COUPON_API_MANAGEMENT="$MANAGEMENT" "$BIN/coupon-loadgen" demo "$@"
