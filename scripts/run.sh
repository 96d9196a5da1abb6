#!/usr/bin/env bash
# Runs coupon-api and coupon-writer in the foreground with their logs interleaved
# and prefixed; Ctrl-C (or SIGTERM) stops both gracefully.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${BIN:-$ROOT/target/release}"
# shellcheck source=lib/common.sh
. "$ROOT/scripts/lib/common.sh"
# The development admin token, and the secret and audience customer and
# service tokens (HS256 JWTs) are signed with: `make token CUSTOMER=7` and
# `make token SERVICE=orders` mint them. From scripts/lib/dev.env unless the
# environment sets them.
dev_env
export COUPON__DEV COUPON__ADMIN__TOKEN COUPON__AUTH__JWT_SECRET COUPON__AUTH__JWT_AUDIENCE
# `make demo` drives these services from one address; the per-customer limit stays on.
export COUPON__LIMITS__PER_ADDRESS_PER_SECOND="${COUPON__LIMITS__PER_ADDRESS_PER_SECOND:-0}"

echo "coupon-api    http://${COUPON__HTTP__ADDR:-127.0.0.1:8080}  (admin token: $COUPON__ADMIN__TOKEN; tokens: make token CUSTOMER=7, make token SERVICE=orders)"
echo "              http://${COUPON__HTTP__MANAGEMENT_ADDR:-127.0.0.1:9090}/metrics and /health/ready"
echo "coupon-writer http://${COUPON__WRITER__HTTP__ADDR:-127.0.0.1:9091}/metrics"
echo "Ctrl-C stops both; 'make down' stops the stack."

# The writer migrates the database first, so the API starts once that is done.
"$BIN/coupon-writer" migrate 2>&1 | sed -u 's/^/[writer] /'
"$BIN/coupon-writer" run > >(sed -u 's/^/[writer] /') 2>&1 &
writer=$!
"$BIN/coupon-api" > >(sed -u 's/^/[api]    /') 2>&1 &
api=$!

stop() {
    trap - INT TERM
    kill -TERM "$api" "$writer" 2>/dev/null || true
}
trap stop INT TERM

# Either service ending ends the session.
status=0
wait -n "$api" "$writer" || status=$?
stop
wait "$api" "$writer" 2>/dev/null || true
exit $status
