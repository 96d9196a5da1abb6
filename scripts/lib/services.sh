# Background services of a benchmark script, stopped when it exits. Source
# after setting LOGS (where each service's output goes).

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

# Deletes a topic the script made for itself, leaving the broker as it was.
delete_topic() { # topic
    java -cp "$ROOT/.stack/kafka/libs/*" org.apache.kafka.tools.TopicCommand --bootstrap-server \
        "127.0.0.1:${KAFKA_PORT:-9092}" --delete --topic "$1" >>"$LOGS/topics.log" 2>&1 ||
        echo "   could not delete topic $1 (see $LOGS/topics.log)"
}

psql_bench() { PGPASSWORD=coupon psql -h 127.0.0.1 -p "${PG_PORT:-5432}" -U coupon coupon -qAt "$@"; }
