# shellcheck shell=bash
# Background services of a benchmark script, stopped when it exits, and the
# settings they run with. Source after scripts/lib/common.sh and after setting
# LOGS (where each service's output goes) and BIN (the release binaries).

# The database credentials psql_bench uses (POSTGRES_*).
dev_env

# Credentials of the benchmarks' own (at least 32 bytes, as coupon-api asks),
# and what every benchmark's coupon-api and coupon-writer run with: all load
# comes from this machine's one address; JSON logs, warnings only.
export COUPON__ADMIN__TOKEN=bench-admin-token-of-at-least-32-bytes
export COUPON__AUTH__JWT_SECRET=bench-jwt-secret-of-at-least-32-bytes
export COUPON__AUTH__JWT_AUDIENCE=coupon-api-bench
export COUPON__AUTH__GATEWAY_SECRET=bench-gateway-secret-of-at-least-32-bytes
export COUPON__LIMITS__PER_ADDRESS_PER_SECOND=0
export COUPON__LOG__FORMAT=json RUST_LOG=warn

# coupon-api and coupon-writer on ports of their own, so `make run` may stay
# up; API is coupon-api's URL.
bench_ports() {
    export COUPON__HTTP__ADDR=127.0.0.1:18080 COUPON__HTTP__MANAGEMENT_ADDR=127.0.0.1:19090
    export COUPON__WRITER__HTTP__ADDR=127.0.0.1:19091
    # shellcheck disable=SC2034 # for the script that sourced this file
    API="http://$COUPON__HTTP__ADDR"
    # coupon-loadgen's readiness probe, and the scripts' own.
    export COUPON_API_MANAGEMENT="http://$COUPON__HTTP__MANAGEMENT_ADDR"
}

pids=()
cleanup() { for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# Starts a service in the background as a child of this shell (not in a
# command substitution, whose children `wait` and `cleanup` could not reach);
# its pid is left in $started.
start() { # name env... binary args...
    local name=$1; shift
    env "$@" >"$LOGS/$name.log" 2>&1 &
    started=$!
    pids+=("$started")
}
# SIGTERM, then waits for the graceful exit, so the next service can bind the port.
stop() { kill -TERM "$1"; wait "$1" 2>/dev/null || true; }

# coupon-writer (the release binary in BIN) on a migrated schema; its pid is
# left in $started.
start_writer() {
    "$BIN/coupon-writer" migrate >/dev/null
    start writer "$BIN/coupon-writer" run
}

# Deletes a topic the script made for itself, leaving the broker as it was.
delete_topic() { # topic
    java -cp "$ROOT/.stack/kafka/libs/*" org.apache.kafka.tools.TopicCommand --bootstrap-server \
        "127.0.0.1:${KAFKA_PORT:-9092}" --delete --topic "$1" >>"$LOGS/topics.log" 2>&1 ||
        echo "   could not delete topic $1 (see $LOGS/topics.log)"
}

psql_bench() { PGPASSWORD="$POSTGRES_PASSWORD" psql -h 127.0.0.1 -p "${PG_PORT:-5432}" -U "$POSTGRES_USER" "$POSTGRES_DB" -qAt "$@"; }
