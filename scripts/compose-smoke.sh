#!/usr/bin/env bash
# Runs the images of `make images` against the local stack (`make up`) the way
# the Kubernetes manifests (deploy/base) run them: user 10001:10001, read-only
# root file system, every capability dropped, no privilege escalation. Host
# network, so the containers reach Redis, PostgreSQL and Kafka on 127.0.0.1
# and serve on the ports the images set (coupon-api :8080 and its management
# port :9090, coupon-writer :9091), bound to 127.0.0.1 only. coupon-api runs
# as in production: secrets of this run's own (random, 32 bytes and more), an
# audience, no COUPON__DEV.
#
#   1. a database of its own (created with psql, migrated by `coupon-writer
#      migrate`), Kafka topics, consumer group and Redis key prefix of its own
#   2. coupon-writer and coupon-api started; ready once /health/ready answers
#      (coupon-api's on its management port) and the image's HEALTHCHECK
#      passes; coupon-api's API port answers 404 for /metrics and /health/*
#   3. a coupon created, issued to customer 7 through the API, the writer's row
#      awaited ("persisted": true), coupon-reconcile run once (exit 0 required)
#   4. containers stopped and removed; database, topics, group and keys deleted
#      (also on failure or Ctrl-C)
#
#   IMAGE_TAG=dev          which images (localhost/<name>:$IMAGE_TAG)
#   SMOKE_TIMEOUT_S=120    per wait (start, health, the writer's row)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=lib/common.sh
. scripts/lib/common.sh
dev_env
TAG="${IMAGE_TAG:-dev}"
TIMEOUT="${SMOKE_TIMEOUT_S:-120}"
REDIS_PORT="${REDIS_PORT:-6379}"
PG_PORT="${PG_PORT:-5432}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_LIBS="$ROOT/.stack/kafka/libs"
API_PORT=8080    # the image's COUPON__HTTP__ADDR: the API
MGMT_PORT=9090   # the image's COUPON__HTTP__MANAGEMENT_ADDR, which its HEALTHCHECK probes
WRITER_PORT=9091 # the image's COUPON__WRITER__HTTP__ADDR (its HEALTHCHECK's too)
CUSTOMER=7

START=$(date +%s)

if [ "${IMAGE_ENGINE:-}" != podman ] && command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    ENGINE=docker
else
    ENGINE=podman
    export CONTAINERS_CONF="${CONTAINERS_CONF:-$ROOT/docker/containers.conf}"
fi

# Names of this run's own.
RUN="smoke$(date +%s)$$"
DB="coupon_$RUN"
TOPIC_PREFIX="coupon-$RUN"
PREFIX="$RUN:"
GROUP="coupon-$RUN-writer"
# Not the development credentials (coupon-api refuses those without
# COUPON__DEV): 32 random bytes each, hex.
random_hex() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }
ADMIN_TOKEN="$(random_hex)"
JWT_SECRET="$(random_hex)"
AUDIENCE=coupon-api
API="http://127.0.0.1:$API_PORT"
MGMT="http://127.0.0.1:$MGMT_PORT"
C_API="coupon-$RUN-api"
C_WRITER="coupon-$RUN-writer"
C_ONESHOT="coupon-$RUN-oneshot"
DB_CREATED=""

# ---------------------------------------------------------------- cleanup
kafka_tool() { # class args...: Kafka's own command-line tools from the stack's jars
    java -Xmx256m -cp "$KAFKA_LIBS/*" -Dlog4j2.rootLogger.level=OFF "$@"
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    set +e
    log "cleaning up"
    for c in "$C_API" "$C_WRITER" "$C_ONESHOT"; do
        if "$ENGINE" container exists "$c" 2>/dev/null || "$ENGINE" inspect "$c" >/dev/null 2>&1; then
            if [ "$status" != 0 ]; then
                log "last log lines of $c:"
                "$ENGINE" logs --tail 30 "$c" 2>&1 | sed 's/^/    /' >&2
            fi
            "$ENGINE" stop --time 30 "$c" >/dev/null 2>&1
            "$ENGINE" rm -f "$c" >/dev/null 2>&1
        fi
    done
    if [ -n "$DB_CREATED" ]; then
        scripts/stack.sh psql -qAt -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null ||
            log "could not drop database $DB"
    fi
    if [ -d "$KAFKA_LIBS" ] && command -v java >/dev/null; then
        kafka_tool org.apache.kafka.tools.consumer.group.ConsumerGroupCommand \
            --bootstrap-server "127.0.0.1:$KAFKA_PORT" --delete --group "$GROUP" >/dev/null 2>&1
        # --topic takes a regular expression with --delete.
        if kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
            --list 2>/dev/null | grep -q "^$TOPIC_PREFIX\."; then
            kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
                --delete --topic "$TOPIC_PREFIX\\..*" >/dev/null 2>&1 || log "could not delete topics $TOPIC_PREFIX.*"
        fi
    else
        log "no Kafka tools under $KAFKA_LIBS: topics $TOPIC_PREFIX.* and group $GROUP left"
    fi
    redis-cli -p "$REDIS_PORT" --scan --pattern "$PREFIX*" | xargs -r -n 500 redis-cli -p "$REDIS_PORT" del >/dev/null ||
        log "could not delete Redis keys $PREFIX*"
    local took=$(($(date +%s) - START))
    if [ "$status" = 0 ]; then
        log "PASSED in ${took}s"
    else
        log "FAILED (exit $status) after ${took}s"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() { die "FAILED: $*"; }

# ---------------------------------------------------------------- preconditions
for target in coupon-api coupon-writer coupon-reconcile; do
    "$ENGINE" image inspect "localhost/$target:$TAG" >/dev/null 2>&1 ||
        fail "no image localhost/$target:$TAG: run 'make images'"
done
redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG || fail "no Redis on 127.0.0.1:$REDIS_PORT: run 'make up'"
scripts/stack.sh psql -qAt -c 'select 1' >/dev/null 2>&1 || fail "no PostgreSQL on 127.0.0.1:$PG_PORT: run 'make up'"
python3 scripts/kafka_ready.py "127.0.0.1:$KAFKA_PORT" >/dev/null 2>&1 || fail "no Kafka on 127.0.0.1:$KAFKA_PORT: run 'make up'"
for port in "$API_PORT" "$MGMT_PORT" "$WRITER_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        fail "port $port is in use (a 'make run'?): the containers serve on it with host networking"
    fi
done

# ---------------------------------------------------------------- database
log "run $RUN: database $DB, topics $TOPIC_PREFIX.*, group $GROUP, Redis prefix $PREFIX"
scripts/stack.sh psql -qAt -v ON_ERROR_STOP=1 -c "CREATE DATABASE $DB" >/dev/null || fail "could not create database $DB"
DB_CREATED=1

ENV=(
    -e "COUPON__REDIS__URL=redis://127.0.0.1:$REDIS_PORT"
    -e "COUPON__REDIS__KEY_PREFIX=$PREFIX"
    -e "COUPON__DATABASE__URL=$(dev_database_url "$DB")"
    -e "COUPON__KAFKA__BROKERS=127.0.0.1:$KAFKA_PORT"
    -e "COUPON__KAFKA__TOPIC=$TOPIC_PREFIX.issued"
    -e "COUPON__KAFKA__DLQ_TOPIC=$TOPIC_PREFIX.issued.dlq"
    -e "COUPON__KAFKA__USED_TOPIC=$TOPIC_PREFIX.used"
    -e "COUPON__KAFKA__RELEASED_TOPIC=$TOPIC_PREFIX.released"
    -e "COUPON__KAFKA__REVOKED_TOPIC=$TOPIC_PREFIX.revoked"
    -e "COUPON__KAFKA__PARTITIONS=2"
    -e "COUPON__WRITER__GROUP=$GROUP"
)
# As deploy/base: non-root numeric user, read-only root, no capabilities.
# Podman runs the image's HEALTHCHECK on demand (`podman healthcheck run`)
# rather than from a systemd timer.
SECURE=(--network host --user 10001:10001 --read-only --cap-drop ALL --security-opt no-new-privileges)
[ "$ENGINE" = podman ] && SECURE+=(--health-interval disable)

oneshot() { # image args...: runs to completion, output shown on failure
    local image=$1; shift
    local out status=0
    out="$("$ENGINE" run --name "$C_ONESHOT" "${SECURE[@]}" "${ENV[@]}" "localhost/$image:$TAG" "$@" 2>&1)" || status=$?
    "$ENGINE" rm -f "$C_ONESHOT" >/dev/null 2>&1 || true
    if [ "$status" != 0 ]; then
        printf '%s\n' "$out" | tail -n 30 | sed 's/^/    /' >&2
    fi
    return "$status"
}

log "coupon-writer migrate"
oneshot coupon-writer migrate || fail "coupon-writer migrate exited non-zero"

# ---------------------------------------------------------------- services
start() { # name args...: a detached container; podman 4's complaint that it
    # has no systemd for healthcheck timers (none are wanted) is filtered out.
    local name=$1 err status=0; shift
    err="$("$ENGINE" run -d --name "$name" "$@" 2>&1 >/dev/null)" || status=$?
    printf '%s\n' "$err" | grep -v -e 'systemd connection' -e '^$' >&2 || true
    return "$status"
}
log "starting coupon-writer and coupon-api"
# Host networking: the images' 0.0.0.0 would be every interface of this
# machine, so each listens on 127.0.0.1 (same ports, which the HEALTHCHECKs
# probe there).
start "$C_WRITER" "${SECURE[@]}" "${ENV[@]}" \
    -e "COUPON__WRITER__HTTP__ADDR=127.0.0.1:$WRITER_PORT" \
    -e COUPON__WRITER__BATCH_MAX_WAIT_MS=200 "localhost/coupon-writer:$TAG" run ||
    fail "could not start coupon-writer"
start "$C_API" "${SECURE[@]}" "${ENV[@]}" \
    -e "COUPON__HTTP__ADDR=127.0.0.1:$API_PORT" -e "COUPON__HTTP__MANAGEMENT_ADDR=127.0.0.1:$MGMT_PORT" \
    -e "COUPON__ADMIN__TOKEN=$ADMIN_TOKEN" -e "COUPON__AUTH__JWT_SECRET=$JWT_SECRET" \
    -e "COUPON__AUTH__JWT_AUDIENCE=$AUDIENCE" \
    "localhost/coupon-api:$TAG" ||
    fail "could not start coupon-api"

running() { [ "$("$ENGINE" inspect --format '{{.State.Running}}' "$1" 2>/dev/null)" = true ]; }
healthy() { # container: the image's HEALTHCHECK
    if [ "$ENGINE" = podman ]; then
        podman healthcheck run "$1" >/dev/null 2>&1
    else
        [ "$(docker inspect --format '{{.State.Health.Status}}' "$1" 2>/dev/null)" = healthy ]
    fi
}
# Ends a wait early: the container exited (the caller then fails), or CHECK passed.
exited_or() { # container check...
    local container=$1; shift
    ! running "$container" || "$@"
}
ready_and_healthy() { curl -fsS -o /dev/null --max-time 3 "$2" && healthy "$1"; } # container url
await() { # what container url: /health/ready answers 200 and the HEALTHCHECK passes
    local what=$1 container=$2 url=$3
    wait_for --every 1 "$TIMEOUT" "$what (ready at $url and HEALTHCHECK healthy)" \
        exited_or "$container" ready_and_healthy "$container" "$url"
    running "$container" || fail "$what exited (status $("$ENGINE" inspect --format '{{.State.ExitCode}}' "$container"))"
    curl -fsS -o /dev/null --max-time 3 "${url%/ready}/live" || fail "$what: ${url%/ready}/live failed"
    log "$what: live, ready, HEALTHCHECK healthy"
}
await coupon-writer "$C_WRITER" "http://127.0.0.1:$WRITER_PORT/health/ready"
await coupon-api "$C_API" "$MGMT/health/ready"

# The management paths live on the management port only.
curl -fsS -o /dev/null --max-time 3 "$MGMT/metrics" || fail "coupon-api: $MGMT/metrics failed"
for path in /metrics /health/live /health/ready; do
    code="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 3 "$API$path")" || code=000
    [ "$code" = 404 ] || fail "coupon-api's API port answered $code for $path (404 expected: management port only)"
done
log "coupon-api: /metrics and /health/* on $MGMT only (404 on the API port)"

# What the pods' securityContext asks for, seen from inside the containers.
for c in "$C_WRITER" "$C_API"; do
    [ "$("$ENGINE" exec "$c" id -u)" = 10001 ] || fail "$c does not run as user 10001"
    if "$ENGINE" exec "$c" sh -c ': >/probe' 2>/dev/null; then fail "$c: root file system is writable"; fi
    # shellcheck disable=SC2016 # awk's $2, not the shell's
    [ "$("$ENGINE" exec "$c" awk '/^CapEff/ {print $2}' /proc/1/status)" = 0000000000000000 ] ||
        fail "$c has capabilities"
done
log "both run as 10001, read-only root, no capabilities"

# ---------------------------------------------------------------- issuance
# A customer's HS256 token for this run's secret and audience (sub, exp, aud),
# signed here: the claims an identity provider would issue.
TOKEN="$(python3 - "$JWT_SECRET" "$CUSTOMER" "$AUDIENCE" <<'PY'
import base64, hashlib, hmac, json, sys, time
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
body = b64(json.dumps({"sub": sys.argv[2], "exp": int(time.time()) + 3600, "aud": sys.argv[3]}).encode())
sig = hmac.new(sys.argv[1].encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
print(f"{head}.{body}.{b64(sig)}")
PY
)"

http() { # method path auth [body]: prints the body; fails unless 2xx
    local method=$1 path=$2 auth=$3 body=${4:-} out code
    out="$(mktemp)"
    code="$(curl -sS -o "$out" -w '%{http_code}' --max-time 10 -X "$method" \
        -H "Authorization: Bearer $auth" -H 'Content-Type: application/json' \
        ${body:+--data "$body"} "$API$path")" || code=000
    if [ "${code:0:1}" != 2 ]; then
        log "$method $path answered $code: $(head -c 500 "$out")"
        rm -f "$out"
        return 1
    fi
    cat "$out"
    rm -f "$out"
}

created="$(http POST /api/v1/coupons "$ADMIN_TOKEN" \
    '{"name":"smoke","totalQuantity":5,"startsAt":"2020-01-01T00:00:00Z","endsAt":"2100-01-01T00:00:00Z"}')" ||
    fail "creating a coupon failed"
COUPON="$(printf '%s' "$created" | json_field id)" || fail "no id in the created coupon: $created"
log "coupon $COUPON created"

http POST "/api/v1/coupons/$COUPON/issue" "$TOKEN" '{}' >/dev/null || fail "issuing coupon $COUPON to customer $CUSTOMER failed"
log "coupon $COUPON issued to customer $CUSTOMER"

persisted() { [ "$(http GET "/api/v1/coupons/$COUPON/customers/$CUSTOMER" "$ADMIN_TOKEN" | json_field persisted)" = true ]; }
wait_for --every 1 "$TIMEOUT" "the writer's row of coupon $COUPON for customer $CUSTOMER" exited_or "$C_WRITER" persisted
running "$C_WRITER" || fail "coupon-writer exited"
log "the writer persisted the issuance"

log "coupon-reconcile --coupon $COUPON --settle-ms 0"
oneshot coupon-reconcile --coupon "$COUPON" --settle-ms 0 || fail "coupon-reconcile exited non-zero"

# Both services still healthy after the work.
healthy "$C_API" || fail "coupon-api unhealthy at the end"
healthy "$C_WRITER" || fail "coupon-writer unhealthy at the end"
log "all steps passed"
