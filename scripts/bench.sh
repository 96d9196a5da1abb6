#!/usr/bin/env bash
# `make bench`: the Kafka design (TO-BE) against the synchronous baseline (AS-IS)
# on the same stack in one invocation, alternating A/B/A/B, plus the ceilings of
# the stores alone (redis-benchmark on the issue script, pgbench on the
# writer's statements) and the writer's drain rate per batch size, what
# stronger Redis durability costs (WAIT for a replica, appendfsync always), and
# what many open coupons cost (scripts/bench-many.sh), and what TLS and SASL
# cost (the same spike on the secure stack of `make up-secure`). Writes
# docs/BENCHMARK.md and docs/bench/*.svg. Not a test: it asserts nothing about time.
#
#   CUSTOMERS (50000)  STOCK (10000)  CONCURRENCY (256)  ROUNDS (3)  BACKLOG (100000)
#   TRICKLE_RATE (200 issuances/s, for the writer's batch-limit sweep)
#   WARMUP_S (90: seconds of unrecorded Kafka-mode spikes first)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/target/release"
# shellcheck source=lib/common.sh
. "$ROOT/scripts/lib/common.sh"
. "$ROOT/scripts/lib/machine.sh"
CUSTOMERS="${CUSTOMERS:-50000}"
STOCK="${STOCK:-10000}"
CONCURRENCY="${CONCURRENCY:-256}"
ROUNDS="${ROUNDS:-3}"
BACKLOG="${BACKLOG:-100000}"
TRICKLE_RATE="${TRICKLE_RATE:-200}"
WARMUP_S="${WARMUP_S:-90}"
OUT="$ROOT/bench/results/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT/runs" "$OUT/logs"


LOGS="$OUT/logs"
. "$ROOT/scripts/lib/services.sh"
bench_ports
start_writer
writer=$started

# Unrecorded, so neither mode pays for a cold broker JIT, cold caches or pools:
# after a broker start its JIT compiler took up to a fifth of the CPU during
# the Kafka mode's spikes, for minutes.
echo "== warm-up: spikes for ${WARMUP_S}s in the Kafka mode and one in the baseline, not recorded"
for mode in kafka sync-db; do
    start "api-$mode-warmup" COUPON__ISSUE__MODE="$mode" "$BIN/coupon-api"
    api=$started
    until_s=$((SECONDS + WARMUP_S))
    [ "$mode" = kafka ] || until_s=$SECONDS
    while :; do
        "$BIN/coupon-loadgen" spike --api "$API" --customers "$CUSTOMERS" --stock "$STOCK" \
            --concurrency "$CONCURRENCY" --mode "$mode" >>"$OUT/logs/warmup-$mode.log"
        [ "$SECONDS" -lt "$until_s" ] || break
    done
    stop "$api"
done

# Durability options, measured in the same rounds: a replica of the stack's
# Redis that every mode replicates to (so only WAIT's cost differs), and the
# single Redis with `appendfsync always`.
REPLICA_PORT="${REPLICA_PORT:-16380}"
redis_cli() { redis-cli -p "${REDIS_PORT:-6379}" "$@"; }
start redis-replica redis-server --bind 127.0.0.1 --port "$REPLICA_PORT" --save "" --appendonly no \
    --dir "$OUT" --replicaof 127.0.0.1 "${REDIS_PORT:-6379}"
replica_linked() { redis-cli -p "$REPLICA_PORT" INFO replication | grep -q '^master_link_status:up'; }
wait_for --log "$LOGS/redis-replica.log" 10 "the benchmark's Redis replica" replica_linked
trap 'redis_cli CONFIG SET appendfsync everysec >/dev/null; cleanup' EXIT

# The secure stack's variables (make up-secure) as `env` arguments, with the
# database URL read from its file (coupon-loadgen reads the URL itself), for
# the kafka+tls mode: the same spike with TLS, ACL and SASL on every link.
SECURE=()
while IFS= read -r line; do
    case "$line" in
        export\ COUPON__DATABASE__URL_FILE=*) SECURE+=("COUPON__DATABASE__URL=$(cat "${line#*=}")") ;;
        export\ COUPON__*) SECURE+=("${line#export }") ;;
    esac
done <"$ROOT/.stack/secure/env"
env "${SECURE[@]}" "$BIN/coupon-writer" migrate >/dev/null

for round in $(seq 1 "$ROUNDS"); do
    for mode in kafka sync-db kafka+wait1 kafka+fsync-always kafka+tls; do
        echo "== round $round, mode $mode"
        settings=(COUPON__ISSUE__MODE="${mode%%+*}")
        [ "$mode" = kafka+wait1 ] && settings+=(COUPON__REDIS__MIN_REPLICAS=1)
        [ "$mode" = kafka+fsync-always ] && redis_cli CONFIG SET appendfsync always >/dev/null
        [ "$mode" = kafka+tls ] && settings+=("${SECURE[@]}")
        if [ "$mode" = kafka+tls ]; then
            # A writer of its own on the secure stack; the plain one idles.
            start "writer-tls-$round" "${SECURE[@]}" COUPON__WRITER__HTTP__ADDR=127.0.0.1:19092 "$BIN/coupon-writer" run
            tls_writer=$started
        fi
        start "api-$mode-$round" "${settings[@]}" "$BIN/coupon-api"
        api=$started
        env "${settings[@]}" "$BIN/coupon-loadgen" spike --api "$API" --customers "$CUSTOMERS" --stock "$STOCK" \
            --concurrency "$CONCURRENCY" --mode "$mode" --round "$round" --json "$OUT/runs/$mode-$round.json"
        stop "$api"
        [ "$mode" = kafka+tls ] && stop "$tls_writer"
        redis_cli CONFIG SET appendfsync everysec >/dev/null
    done
done
stop "$writer"

echo "== ceiling: an endpoint that does nothing, through the same client and server"
start api-noop "$BIN/coupon-api"
api=$started
noop_rps=$("$BIN/coupon-loadgen" noop --api "$API" --concurrency "$CONCURRENCY")
stop "$api"
echo "   $noop_rps requests/s"

echo "== ceiling: the issue script driven by redis-benchmark (-c 50, unpipelined)"
# A coupon's Redis keys, by hand: redis-benchmark takes key names, and no
# tool prints them yet. MIRRORS crates/coupon-domain/src/keys.rs
# (CouponKeys::new: "<prefix>coupon:{<id>}:<name>"); change both together.
# Prints the five keys issue.lua takes, in its KEYS order: meta stock issued outbox reissued.
coupon_keys() { # prefix coupon_id
    local base="$1coupon:{$2}"
    echo "$base:meta $base:stock $base:issued $base:outbox $base:reissued"
}
sha=$(redis-cli -p "${REDIS_PORT:-6379}" SCRIPT LOAD "$(cat "$ROOT/crates/coupon-api/src/issuance/issue.lua")")
read -r meta stock _ <<<"$(coupon_keys bench: 0)"
# The state create.lua gives a coupon (crates/coupon-api/src/issuance/create.lua).
redis-cli -p "${REDIS_PORT:-6379}" HSET "$meta" starts_ms 0 ends_ms 99999999999999 total 1000000000 >/dev/null
redis-cli -p "${REDIS_PORT:-6379}" SET "$stock" 1000000000 >/dev/null
# shellcheck disable=SC2046 # the five key names, one word each
lua_rps=$(redis-benchmark -p "${REDIS_PORT:-6379}" -n 200000 -c 50 -r 1000000000 --csv \
    EVALSHA "$sha" 5 $(coupon_keys bench: 0) 1 __rand_int__ | tail -1 | cut -d, -f2 | tr -d '"')
# shellcheck disable=SC2046
redis-cli -p "${REDIS_PORT:-6379}" DEL $(coupon_keys bench: 0) >/dev/null
echo "   $lua_rps calls/s"

# The rows earlier steps deleted, vacuumed before a measured step: left to
# autovacuum, they made one drain differ from the next by up to a third.
vacuum_tables() {
    psql_bench -c "VACUUM ANALYZE customer_coupon" -c "VACUUM ANALYZE sold_out_at_write" -c "VACUUM ANALYZE coupon" >/dev/null
}

# A backlog of BACKLOG issuances on one coupon (one partition) in a topic of
# its own, then a writer started with the given settings; its rows/s are left
# in $drained (called directly, not in a command substitution: see `start`).
drain_backlog() { # label env...
    local label=$1 topic coupon api writer; shift
    topic="bench.drain.$label.$(date +%s)"
    start "api-drain-$label" COUPON__KAFKA__TOPIC="$topic" "$BIN/coupon-api"
    api=$started
    "$BIN/coupon-loadgen" spike --api "$API" --customers "$BACKLOG" --stock "$BACKLOG" --repeat-share 0 \
        --concurrency "$CONCURRENCY" --no-writer --mode drain --json "$OUT/drain-$label.json" >/dev/null
    stop "$api"
    coupon=$(json_field coupon "$OUT/drain-$label.json")
    vacuum_tables
    start "writer-drain-$label" COUPON__KAFKA__TOPIC="$topic" COUPON__WRITER__GROUP="bench-$label-$$" \
        "$@" "$BIN/coupon-writer" run
    writer=$started
    drained=$("$BIN/coupon-loadgen" drain --coupon "$coupon" --expected "$BACKLOG")
    stop "$writer"
    delete_topic "$topic"
    psql_bench -c "DELETE FROM customer_coupon WHERE coupon_id = $coupon" >/dev/null
}

echo "== ceiling: the writer's statements driven by pgbench, and the writer draining a backlog"
bench_coupon=$(psql_bench -c "INSERT INTO coupon (name, total_quantity, remaining_quantity, starts_at, ends_at)
    VALUES ('pgbench', 2000000000, 2000000000, now(), now() + interval '1 day') RETURNING id" | head -1)
pg_json=""
writer_json=""
for batch in 100 500 2000; do
    # The writer's statement (crates/coupon-writer/src/statements.rs), its
    # three array parameters built server-side: lock the batch's coupons,
    # grant new customers up to the stock, record the rest as sold out, take
    # the granted count off the stock. A batch's customers are spread over the key space, as a spike's
    # shuffled customers are, not one contiguous run that lands on a few
    # index pages.
    cat >"$OUT/pgbench-$batch.sql" <<SQL
\\set base random(1, 1000000000)
WITH batch AS (SELECT * FROM unnest(array_fill($bench_coupon::bigint, ARRAY[$batch]),
        ARRAY(SELECT g::bigint * 1000000000 + :base FROM generate_series(1, $batch) AS g),
        array_fill(now(), ARRAY[$batch])) AS b(coupon_id, customer_id, issued_at)),
    seen AS MATERIALIZED (SELECT id, xmin AS version FROM coupon WHERE id IN (SELECT coupon_id FROM batch)),
    locked AS MATERIALIZED (SELECT id, remaining_quantity, xmin AS version FROM coupon
        WHERE id IN (SELECT coupon_id FROM batch) ORDER BY id FOR NO KEY UPDATE),
    fresh AS (SELECT DISTINCT ON (b.coupon_id, b.customer_id) b.coupon_id, b.customer_id, b.issued_at
        FROM batch b
        WHERE NOT EXISTS (SELECT 1 FROM customer_coupon c WHERE c.coupon_id = b.coupon_id AND c.customer_id = b.customer_id)
          AND NOT EXISTS (SELECT 1 FROM sold_out_at_write s WHERE s.coupon_id = b.coupon_id AND s.customer_id = b.customer_id)
        ORDER BY b.coupon_id, b.customer_id, b.issued_at),
    ranked AS (SELECT coupon_id, customer_id, issued_at,
        row_number() OVER (PARTITION BY coupon_id ORDER BY issued_at, customer_id) AS rank FROM fresh),
    demand AS (SELECT coupon_id, count(*) AS n FROM fresh GROUP BY coupon_id),
    plan AS (SELECT l.id, l.remaining_quantity AS stock,
        l.version IS DISTINCT FROM s.version AND coalesce(d.n, 0) > l.remaining_quantity AS deferred
        FROM locked l JOIN seen s ON s.id = l.id LEFT JOIN demand d ON d.coupon_id = l.id),
    granted AS (INSERT INTO customer_coupon (coupon_id, customer_id, issued_at)
        SELECT r.coupon_id, r.customer_id, r.issued_at FROM ranked r JOIN plan p ON p.id = r.coupon_id
        WHERE NOT p.deferred AND r.rank <= p.stock
        ORDER BY r.coupon_id, r.customer_id
        ON CONFLICT (coupon_id, customer_id) DO NOTHING RETURNING coupon_id),
    refused AS (INSERT INTO sold_out_at_write (coupon_id, customer_id, issued_at, reason)
        SELECT r.coupon_id, r.customer_id, r.issued_at, 'STOCK_EXHAUSTED' FROM ranked r JOIN plan p ON p.id = r.coupon_id
        WHERE NOT p.deferred AND r.rank > p.stock
        ORDER BY r.coupon_id, r.customer_id
        ON CONFLICT (coupon_id, customer_id) DO NOTHING RETURNING coupon_id),
    inserted AS (SELECT coupon_id, count(*)::int AS n FROM granted GROUP BY coupon_id),
    sold_out AS (SELECT coupon_id, count(*)::int AS n FROM refused GROUP BY coupon_id),
    taken AS (UPDATE coupon SET remaining_quantity = coupon.remaining_quantity - inserted.n
        FROM inserted WHERE coupon.id = inserted.coupon_id RETURNING coupon.id)
SELECT p.id, coalesce(i.n, 0), coalesce(s.n, 0), p.deferred FROM plan p
    LEFT JOIN inserted i ON i.coupon_id = p.id LEFT JOIN sold_out s ON s.coupon_id = p.id;
SQL
    # pgbench exits non-zero when any client aborted, yet still reports the
    # rate of what ran; its log says why.
    vacuum_tables
    PGPASSWORD="$POSTGRES_PASSWORD" pgbench -h 127.0.0.1 -p "${PG_PORT:-5432}" -U "$POSTGRES_USER" -n -M prepared -c 1 -T 10 \
        -f "$OUT/pgbench-$batch.sql" "$POSTGRES_DB" >"$OUT/logs/pgbench-$batch.log" 2>&1 ||
        echo "   pgbench exited with $? (see $OUT/logs/pgbench-$batch.log)"
    tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$OUT/logs/pgbench-$batch.log")
    [ -n "$tps" ] || die "pgbench reported no rate: $OUT/logs/pgbench-$batch.log"
    pg_rows=$(python3 -c "print(round($tps * $batch))")
    echo "   batch $batch: pgbench $pg_rows rows/s"

    drain_backlog "$batch" COUPON__WRITER__BATCH_MAX_RECORDS="$batch" COUPON__WRITER__BATCH_CEILING_RECORDS="$batch"
    echo "   batch $batch: writer drains $drained rows/s"
    pg_json+="\"$batch\": $pg_rows,"
    writer_json+="\"$batch\": $drained,"
done
# The defaults: batches of 100 that grow to the 2,000 ceiling while the backlog lasts.
drain_backlog default
writer_default=$drained
echo "   defaults (100 growing to 2,000): writer drains $writer_default rows/s"
psql_bench -c "DELETE FROM customer_coupon WHERE coupon_id = $bench_coupon; DELETE FROM sold_out_at_write WHERE coupon_id = $bench_coupon; DELETE FROM coupon WHERE id = $bench_coupon"

echo "== the writer's batch limits under steady traffic ($TRICKLE_RATE issuances/s for 10 s)"
sweep_json=""
for limits in 100:50 100:500 100:2000 500:2000 2000:2000; do
    batch=${limits%:*} wait_ms=${limits#*:}
    start "writer-trickle-$batch-$wait_ms" COUPON__WRITER__BATCH_MAX_RECORDS="$batch" \
        COUPON__WRITER__BATCH_MAX_WAIT_MS="$wait_ms" "$BIN/coupon-writer" run
    writer=$started
    start "api-trickle-$batch-$wait_ms" "$BIN/coupon-api"
    api=$started
    printf '   batch %s, wait %s ms: ' "$batch" "$wait_ms"
    "$BIN/coupon-loadgen" trickle --api "$API" --rate "$TRICKLE_RATE" --seconds 10 \
        --json "$OUT/trickle-$batch-$wait_ms.json"
    stop "$api"
    stop "$writer"
    sweep_json+="$(python3 -c "import json; r = json.load(open('$OUT/trickle-$batch-$wait_ms.json')); \
        r.update(batch=$batch, wait_ms=$wait_ms); print(json.dumps(r))"),"
done

cat >"$OUT/ceilings.json" <<JSON
{
  "redis_lua_calls_per_s": $lua_rps,
  "http_noop_requests_per_s": $noop_rps,
  "pg_rows_per_s": {${pg_json%,}},
  "writer_rows_per_s": {${writer_json%,}},
  "writer_default_rows_per_s": $writer_default,
  "writer_limits_sweep": [${sweep_json%,}],
  "machine": "$(machine_description)",
  "command": "make bench (CUSTOMERS=$CUSTOMERS STOCK=$STOCK CONCURRENCY=$CONCURRENCY ROUNDS=$ROUNDS BACKLOG=$BACKLOG TRICKLE_RATE=$TRICKLE_RATE WARMUP_S=$WARMUP_S)"
}
JSON
"$BIN/coupon-loadgen" report --runs "$OUT/runs" --ceilings "$OUT/ceilings.json" \
    --output "$ROOT/docs/BENCHMARK.md" --plots "$ROOT/docs/bench"
echo "raw results: $OUT"
"$ROOT/scripts/bench-many.sh"
