#!/usr/bin/env bash
# The local stack: real Redis, PostgreSQL and Apache Kafka (KRaft, single node) on
# loopback, with all data under $STACK_DIR. Idempotent: `up` reuses healthy
# services and starts the missing ones; `down` stops exactly what `up` started.
#
#   scripts/stack.sh up|down|status|psql|redis-cli
#
# Ports come from the environment: REDIS_PORT (6379), PG_PORT (5432),
# KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9094; 9093 is the secure stack's,
# scripts/stack-secure.sh), KAFKA_PROXIED_PORT (9096, advertised as
# KAFKA_PROXIED_AT, 9097: the listener e2e scenario 16 slows through a proxy).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK_DIR="${STACK_DIR:-$ROOT/.stack}"
REDIS_PORT="${REDIS_PORT:-6379}"
PG_PORT="${PG_PORT:-5432}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9094}"
KAFKA_PROXIED_PORT="${KAFKA_PROXIED_PORT:-9096}"
KAFKA_PROXIED_AT="${KAFKA_PROXIED_AT:-9097}"
KAFKA_HEAP="${KAFKA_HEAP:-512m}"

# shellcheck source=lib/common.sh
. "$ROOT/scripts/lib/common.sh"
dev_env
# shellcheck source=lib/stack-common.sh
. "$ROOT/scripts/lib/stack-common.sh"

PG_DIR="$(pg_cluster_dir "$STACK_DIR")"
REDIS_DIR="$STACK_DIR/redis"
KAFKA_DIR="$STACK_DIR/kafka"

# ---------------------------------------------------------------- Redis
redis_ping() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping | grep -q PONG; }

redis_up() {
    command -v redis-server >/dev/null || die "redis-server is not installed: run 'make setup'"
    if redis_ping 2>/dev/null; then log "redis: already answering on 127.0.0.1:$REDIS_PORT"; return; fi
    mkdir -p "$REDIS_DIR"
    # noeviction: coupon state must never be evicted; AOF keeps issued coupons over a restart.
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$REDIS_DIR" \
        --appendonly yes --appendfsync everysec --maxmemory-policy noeviction \
        --save "" --daemonize yes --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/redis.log"
    wait_for --log "$REDIS_DIR/redis.log" 20 redis redis_ping
    log "redis: up on 127.0.0.1:$REDIS_PORT"
}

redis_down() {
    stop_pidfile "$REDIS_DIR/redis.pid" redis 30 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown
    still_answers redis "$REDIS_PORT" redis_ping
}

# ----------------------------------------------------------- PostgreSQL
pg_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; }

pg_up() {
    [ -n "$PG_BIN" ] || die "PostgreSQL is not installed: run 'make setup'"
    if pg_ready 2>/dev/null; then log "postgres: already answering on 127.0.0.1:$PG_PORT"; ensure_pg_role; return; fi
    mkdir -p "$PG_DIR"
    [ "$(id -u)" = 0 ] && chown postgres: "$PG_DIR"
    if [ ! -f "$PG_DIR/data/PG_VERSION" ]; then
        # Local socket: trust (only the stack's own folder can reach it); TCP: passwords.
        echo postgres >"$PG_DIR/pwfile"
        [ "$(id -u)" = 0 ] && chown postgres: "$PG_DIR/pwfile"
        as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth-local=trust \
            --auth-host=scram-sha-256 --pwfile="$PG_DIR/pwfile" -E UTF8 >"$PG_DIR/initdb.log" 2>&1 ||
            die "postgres: initdb failed; see $PG_DIR/initdb.log"
        rm -f "$PG_DIR/pwfile"
    fi
    mkdir -p "$PG_DIR/run"
    [ "$(id -u)" = 0 ] && chown postgres: "$PG_DIR/run"
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/postgres.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR/run -c max_connections=300" start >/dev/null ||
        die "postgres did not start; see its log: $PG_DIR/postgres.log"
    wait_for --log "$PG_DIR/postgres.log" 30 postgres pg_ready
    ensure_pg_role
    log "postgres: up on 127.0.0.1:$PG_PORT"
}

pg_admin() { as_pg "$PG_BIN/psql" -h "$PG_DIR/run" -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qAt "$@"; }

# The services' role and database (scripts/lib/dev.env); CREATEDB lets every
# test make its own database.
ensure_pg_role() {
    [ -S "$PG_DIR/run/.s.PGSQL.$PG_PORT" ] || return 0
    if [ "$(pg_admin -c "select 1 from pg_roles where rolname = '$POSTGRES_USER'")" != 1 ]; then
        pg_admin -c "create role $POSTGRES_USER login createdb password '$POSTGRES_PASSWORD'"
    fi
    if [ "$(pg_admin -c "select 1 from pg_database where datname = '$POSTGRES_DB'")" != 1 ]; then
        pg_admin -c "create database $POSTGRES_DB owner $POSTGRES_USER"
    fi
}

pg_down() {
    if [ -f "$PG_DIR/data/postmaster.pid" ] && pid_alive "$PG_DIR/data/postmaster.pid"; then
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null
    fi
    still_answers postgres "$PG_PORT" pg_ready
}

# ---------------------------------------------------------------- Kafka
kafka_ready() { python3 "$ROOT/scripts/kafka_ready.py" "127.0.0.1:$KAFKA_PORT"; }

kafka_up() {
    if kafka_ready 2>/dev/null; then log "kafka: already answering on 127.0.0.1:$KAFKA_PORT"; return; fi
    command -v java >/dev/null || die "java is not installed: run 'make setup'"
    kafka_fetch
    # Topics and the internal ones on the one broker: one replica, no more in sync.
    kafka_node_config --proxied "$KAFKA_PROXIED_PORT" "$KAFKA_PROXIED_AT" \
        "$KAFKA_DIR" 1 "1@127.0.0.1:$KAFKA_CONTROLLER_PORT" "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" 1 1
    kafka_node_start "$KAFKA_DIR" "$KAFKA_DIR/cluster.id"
    wait_for --log "$KAFKA_DIR/server.log" 90 kafka kafka_ready
    log "kafka: up on 127.0.0.1:$KAFKA_PORT"
}

kafka_down() {
    stop_pidfile "$KAFKA_DIR/kafka.pid" kafka 60
    still_answers kafka "$KAFKA_PORT" kafka_ready
}

status() {
    local rc=0
    if redis_ping 2>/dev/null; then echo "redis     up    127.0.0.1:$REDIS_PORT  data $REDIS_DIR"; else echo "redis     down  127.0.0.1:$REDIS_PORT  log $REDIS_DIR/redis.log"; rc=1; fi
    if pg_ready 2>/dev/null; then echo "postgres  up    127.0.0.1:$PG_PORT  data $PG_DIR/data"; else echo "postgres  down  127.0.0.1:$PG_PORT  log $PG_DIR/postgres.log"; rc=1; fi
    if kafka_ready 2>/dev/null; then
        echo "kafka     up    127.0.0.1:$KAFKA_PORT  data $KAFKA_DIR/data"
        python3 "$ROOT/scripts/kafka_ready.py" "127.0.0.1:$KAFKA_PORT" -v
    else echo "kafka     down  127.0.0.1:$KAFKA_PORT  log $KAFKA_DIR/server.log"; rc=1; fi
    return $rc
}

case "${1:-}" in
    up) redis_up; pg_up; kafka_up ;;
    down) kafka_down; pg_down; redis_down; log "stopped" ;;
    status) status ;;
    redis-up) redis_up ;; redis-down) redis_down ;;
    postgres-up) pg_up ;; postgres-down) pg_down ;;
    kafka-up) kafka_up ;; kafka-down) kafka_down ;;
    psql) shift; PGPASSWORD="$POSTGRES_PASSWORD" exec psql -h 127.0.0.1 -p "$PG_PORT" -U "$POSTGRES_USER" "$POSTGRES_DB" "$@" ;;
    *) die "usage: $0 up|down|status|psql|{redis,postgres,kafka}-{up,down}" ;;
esac
