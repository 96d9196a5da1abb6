#!/usr/bin/env bash
# The secure local stack, beside stack.sh's: Redis, PostgreSQL and Apache Kafka
# (KRaft, single node) on loopback, each reached over TLS only, with a client
# certificate and a user's password. Certificates, secrets and data under
# $STACK_DIR/secure. Idempotent like stack.sh: `up` reuses healthy services and
# starts the missing ones; `down` stops exactly what `up` started.
#
#   scripts/stack-secure.sh up|down|status
#
# Redis 6380 (TLS only, the ACL users of deploy/redis/users.acl), PostgreSQL
# 5433 (hostssl only: scram-sha-256 and a certificate of the stack's CA), Kafka
# 9093 (SASL_SSL, SCRAM-SHA-512 and a certificate of the stack's CA; its
# controller on 9095). `up` writes $STACK_DIR/secure/env, which points the
# services at this stack (env.reconcile: as coupon-reconcile's Redis user).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK_DIR="${STACK_DIR:-$ROOT/.stack}"
KAFKA_HEAP="${KAFKA_HEAP:-512m}"
SECURE_DIR="$STACK_DIR/secure"
REDIS_PORT=6380
PG_PORT=5433
KAFKA_PORT=9093
KAFKA_CONTROLLER_PORT=9095

# shellcheck source=lib/common.sh
. "$ROOT/scripts/lib/common.sh"
# shellcheck source=lib/stack-common.sh
. "$ROOT/scripts/lib/stack-common.sh"

TLS_DIR="$SECURE_DIR/tls"
SECRETS="$SECURE_DIR/secrets"
REDIS_DIR="$SECURE_DIR/redis"
PG_DIR="$(pg_cluster_dir "$SECURE_DIR")"
KAFKA_DIR="$SECURE_DIR/kafka"

# ------------------------------------------------------ certificates, secrets
# The CA, the servers' certificate (for 127.0.0.1 and localhost), the clients'
# and a second CA that signed nothing here (tests trust it as the wrong CA).
# Made once, in a folder of their own that takes tls/'s place when complete.
tls_make() {
    [ -f "$TLS_DIR/ca.crt" ] && return
    command -v openssl >/dev/null || die "openssl is not installed: run 'make setup'"
    local new="$TLS_DIR.new"
    rm -rf "$new"
    mkdir -p "$new"
    (
        cd "$new"
        umask 077
        key() { openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1"; }
        ca() { # name subject
            key "$1.key"
            openssl req -x509 -new -key "$1.key" -days 3650 -subj "$2" \
                -addext keyUsage=critical,keyCertSign,cRLSign -out "$1.crt"
        }
        leaf() { # name subject extensions...
            key "$1.key"
            openssl req -new -key "$1.key" -subj "$2" |
                openssl x509 -req -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -out "$1.crt" \
                    -extfile <(printf '%s\n' basicConstraints=critical,CA:FALSE subjectKeyIdentifier=hash \
                        authorityKeyIdentifier=keyid "${@:3}")
            # Java (Kafka's keystores) reads the key and its certificate from one file.
            cat "$1.key" "$1.crt" >"$1.pem"
        }
        ca ca "/CN=coupon secure stack CA"
        # clientAuth too: the broker presents it to itself (inter-broker SASL_SSL).
        leaf server /CN=localhost keyUsage=critical,digitalSignature,keyEncipherment \
            extendedKeyUsage=serverAuth,clientAuth subjectAltName=IP:127.0.0.1,DNS:localhost
        leaf client /CN=coupon keyUsage=critical,digitalSignature extendedKeyUsage=clientAuth
        ca other-ca "/CN=coupon secure stack, other CA"
        chmod 644 ./*.crt
    ) >"$SECURE_DIR/tls.log" 2>&1 || die "tls: openssl failed; see $SECURE_DIR/tls.log"
    mv "$new" "$TLS_DIR"
    log "tls: made a CA and certificates in $TLS_DIR"
}

secret() { # name: prints the secret of that name, made once (random)
    [ -s "$SECRETS/$1" ] || (umask 077 && mkdir -p "$SECRETS" && openssl rand -hex 24 >"$SECRETS/$1")
    cat "$SECRETS/$1"
}

# ---------------------------------------------------------------- Redis
redis_admin() { # redis-cli as the script's own user (its password through the environment, not argv)
    REDISCLI_AUTH="$(cat "$SECRETS/redis-admin" 2>/dev/null)" redis-cli --tls --cacert "$TLS_DIR/ca.crt" \
        --cert "$TLS_DIR/client.crt" --key "$TLS_DIR/client.key" -h 127.0.0.1 -p "$REDIS_PORT" --user admin "$@"
}
redis_ping() { redis_admin ping | grep -q PONG; }

# The users of deploy/redis/users.acl with their passwords (Redis reads no
# comments there), and the script's own `admin`.
redis_acl() {
    local line user
    while IFS= read -r line; do
        case "$line" in
            '' | '#'*) continue ;;
            *@PASSWORD@*) read -r _ user _ <<<"$line"; line="${line//@PASSWORD@/$(secret "redis-$user")}" ;;
        esac
        printf '%s\n' "$line"
    done <"$ROOT/deploy/redis/users.acl"
    echo "user admin on >$(secret redis-admin) ~* &* +@all"
}

redis_up() {
    command -v redis-server >/dev/null || die "redis-server is not installed: run 'make setup'"
    if redis_ping 2>/dev/null; then log "redis: already answering on 127.0.0.1:$REDIS_PORT"; return; fi
    mkdir -p "$REDIS_DIR"
    (umask 077 && redis_acl >"$REDIS_DIR/users.acl")
    # As stack.sh's (AOF, noeviction), over TLS only, client certificates required.
    redis-server --bind 127.0.0.1 --port 0 --tls-port "$REDIS_PORT" \
        --tls-cert-file "$TLS_DIR/server.crt" --tls-key-file "$TLS_DIR/server.key" \
        --tls-ca-cert-file "$TLS_DIR/ca.crt" --tls-auth-clients yes --aclfile "$REDIS_DIR/users.acl" \
        --dir "$REDIS_DIR" --appendonly yes --appendfsync everysec --maxmemory-policy noeviction \
        --save "" --daemonize yes --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/redis.log"
    wait_for --log "$REDIS_DIR/redis.log" 20 redis redis_ping
    log "redis: up on 127.0.0.1:$REDIS_PORT (TLS)"
}

redis_down() {
    stop_pidfile "$REDIS_DIR/redis.pid" redis 30 redis_admin shutdown
    still_answers redis "$REDIS_PORT" redis_ping
}

# ----------------------------------------------------------- PostgreSQL
# The superuser is the server's own user, reached through its socket (peer).
PG_SUPERUSER="$(as_pg id -un)"
pg_tls="sslmode=verify-full sslrootcert=$TLS_DIR/ca.crt sslcert=$TLS_DIR/client.crt sslkey=$TLS_DIR/client.key"
pg_ready() { "$PG_BIN/pg_isready" -q -d "host=127.0.0.1 port=$PG_PORT dbname=coupon user=coupon $pg_tls"; }
pg_admin() { as_pg "$PG_BIN/psql" -h "$PG_DIR/run" -p "$PG_PORT" -U "$PG_SUPERUSER" -d postgres -v ON_ERROR_STOP=1 -qAt "$@"; }
pg_own() { if [ "$(id -u)" = 0 ]; then chown postgres: "$@"; fi; }

pg_up() {
    [ -n "$PG_BIN" ] || die "PostgreSQL is not installed: run 'make setup'"
    if pg_ready 2>/dev/null; then
        log "postgres: already answering on 127.0.0.1:$PG_PORT"
    else
        mkdir -p "$PG_DIR/run" "$PG_DIR/tls"
        pg_own "$PG_DIR" "$PG_DIR/run" "$PG_DIR/tls"
        if [ ! -f "$PG_DIR/data/PG_VERSION" ]; then
            as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U "$PG_SUPERUSER" --auth-local=peer \
                --auth-host=scram-sha-256 -E UTF8 >"$PG_DIR/initdb.log" 2>&1 ||
                die "postgres: initdb failed; see $PG_DIR/initdb.log"
        fi
        # The server reads its key only when its user alone may: copies of its own
        # (which also serve a cluster in /var/tmp, out of reach of $TLS_DIR).
        install -m 600 "$TLS_DIR/ca.crt" "$TLS_DIR/server.crt" "$TLS_DIR/server.key" "$PG_DIR/tls/"
        pg_own "$PG_DIR"/tls/*
        # No plaintext TCP: TLS with a password and a certificate of the CA.
        printf '%s\n' "local all $PG_SUPERUSER peer" \
            "hostssl all all 127.0.0.1/32 scram-sha-256 clientcert=verify-ca" >"$PG_DIR/data/pg_hba.conf"
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/postgres.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR/run -c max_connections=300 -c ssl=on \
                -c ssl_cert_file=$PG_DIR/tls/server.crt -c ssl_key_file=$PG_DIR/tls/server.key \
                -c ssl_ca_file=$PG_DIR/tls/ca.crt -c password_encryption=scram-sha-256" start >/dev/null ||
            die "postgres did not start; see its log: $PG_DIR/postgres.log"
        wait_for --log "$PG_DIR/postgres.log" 30 postgres pg_ready
        log "postgres: up on 127.0.0.1:$PG_PORT (TLS)"
    fi
    # The services' role (its password set again: the secret file is the truth)
    # and database; CREATEDB lets every test make its own database.
    pg_admin -f - >/dev/null <<SQL
select 'create role coupon' where not exists (select from pg_roles where rolname = 'coupon') \gexec
alter role coupon login createdb password '$(secret postgres-coupon)';
select 'create database coupon owner coupon' where not exists (select from pg_database where datname = 'coupon') \gexec
SQL
}

pg_down() {
    if [ -f "$PG_DIR/data/postmaster.pid" ] && pid_alive "$PG_DIR/data/postmaster.pid"; then
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null
    fi
    still_answers postgres "$PG_PORT" pg_ready
}

# ---------------------------------------------------------------- Kafka
scram() { echo "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"$1\" password=\"$(secret "kafka-$1")\";"; }
kafka_port_open() { { : <>"/dev/tcp/127.0.0.1/$KAFKA_PORT"; } 2>/dev/null; }
# The topics, listed as the script's own user: the broker answers over
# SASL_SSL. The port is tried first, as the JVM takes seconds to start.
kafka_topics() {
    kafka_port_open && kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
        --command-config "$KAFKA_DIR/admin.properties" --list
}

# Starts the node unless it runs; kafka_wait waits for it.
kafka_launch() {
    if pid_alive "$KAFKA_DIR/kafka.pid"; then log "kafka: already running on 127.0.0.1:$KAFKA_PORT"; return; fi
    # stack.sh's Kafka had its controller here before it moved to 9094.
    if kafka_port_open; then
        die "kafka: another process holds 127.0.0.1:$KAFKA_PORT (stack.sh's Kafka, started before its controller moved to 9094? scripts/stack.sh kafka-down; scripts/stack.sh kafka-up)"
    fi
    command -v java >/dev/null || die "java is not installed: run 'make setup'"
    kafka_fetch 'kafka-tools-[0-9]*.jar'
    # The users are made when the storage is formatted, with the passwords of then.
    if [ -f "$KAFKA_DIR/data/meta.properties" ] && ! { [ -f "$SECRETS/kafka-admin" ] && [ -f "$SECRETS/kafka-coupon" ]; }; then
        die "kafka: $KAFKA_DIR/data holds users whose passwords $SECRETS lost; start anew: rm -rf $KAFKA_DIR/data"
    fi
    # Everything here holds the admin's password.
    (
        umask 077
        # ssl.client.auth applies to a SASL_SSL listener only with the listener's prefix.
        kafka_node_config --protocol SASL_SSL "$KAFKA_DIR" 1 "1@127.0.0.1:$KAFKA_CONTROLLER_PORT" \
            "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" 1 1 \
            sasl.enabled.mechanisms=SCRAM-SHA-512 sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512 \
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=$(scram admin)" \
            listener.name.sasl_ssl.ssl.client.auth=required \
            ssl.keystore.type=PEM "ssl.keystore.location=$TLS_DIR/server.pem" \
            ssl.truststore.type=PEM "ssl.truststore.location=$TLS_DIR/ca.crt"
        printf '%s\n' security.protocol=SASL_SSL sasl.mechanism=SCRAM-SHA-512 "sasl.jaas.config=$(scram admin)" \
            ssl.keystore.type=PEM "ssl.keystore.location=$TLS_DIR/client.pem" \
            ssl.truststore.type=PEM "ssl.truststore.location=$TLS_DIR/ca.crt" \
            request.timeout.ms=5000 default.api.timeout.ms=10000 >"$KAFKA_DIR/admin.properties"
    )
    kafka_node_start "$KAFKA_DIR" "$KAFKA_DIR/cluster.id" \
        --add-scram "SCRAM-SHA-512=[name=admin,password=$(secret kafka-admin)]" \
        --add-scram "SCRAM-SHA-512=[name=coupon,password=$(secret kafka-coupon)]"
}

kafka_wait() {
    wait_for --log "$KAFKA_DIR/server.log" --every 1 120 kafka kafka_topics
    log "kafka: answering on 127.0.0.1:$KAFKA_PORT (SASL_SSL)"
}

kafka_down() {
    stop_pidfile "$KAFKA_DIR/kafka.pid" kafka 60
    still_answers kafka "$KAFKA_PORT" kafka_port_open
}

# ------------------------------------------------------------------ env
env_write() {
    local env="$SECURE_DIR/env"
    (
        umask 077
        echo "postgres://coupon:$(secret postgres-coupon)@127.0.0.1:$PG_PORT/coupon?sslmode=verify-full&sslrootcert=$TLS_DIR/ca.crt&sslcert=$TLS_DIR/client.crt&sslkey=$TLS_DIR/client.key" \
            >"$SECRETS/database-url"
    )
    {
        echo "# The secure local stack (scripts/stack-secure.sh): '. $env' points coupon-api, coupon-writer and coupon-reconcile at it."
        printf 'export %s\n' \
            COUPON__REDIS__URL=rediss://127.0.0.1:$REDIS_PORT \
            COUPON__REDIS__USERNAME=coupon-api \
            "COUPON__REDIS__PASSWORD_FILE=$SECRETS/redis-coupon-api" \
            "COUPON__REDIS__TLS_CA_FILE=$TLS_DIR/ca.crt" \
            "COUPON__REDIS__TLS_CERT_FILE=$TLS_DIR/client.crt" \
            "COUPON__REDIS__TLS_KEY_FILE=$TLS_DIR/client.key" \
            "COUPON__DATABASE__URL_FILE=$SECRETS/database-url" \
            COUPON__KAFKA__BROKERS=127.0.0.1:$KAFKA_PORT \
            COUPON__KAFKA__SECURITY_PROTOCOL=SASL_SSL \
            COUPON__KAFKA__SASL_MECHANISM=SCRAM-SHA-512 \
            COUPON__KAFKA__SASL_USERNAME=coupon \
            "COUPON__KAFKA__SASL_PASSWORD_FILE=$SECRETS/kafka-coupon" \
            "COUPON__KAFKA__SSL_CA_LOCATION=$TLS_DIR/ca.crt" \
            "COUPON__KAFKA__SSL_CERTIFICATE_LOCATION=$TLS_DIR/client.crt" \
            "COUPON__KAFKA__SSL_KEY_LOCATION=$TLS_DIR/client.key"
    } >"$env"
    {
        echo "# The secure local stack for coupon-reconcile (scripts/stack-secure.sh): env, as Redis user coupon-reconcile."
        echo ". $env"
        printf 'export %s\n' COUPON__REDIS__USERNAME=coupon-reconcile \
            "COUPON__REDIS__PASSWORD_FILE=$SECRETS/redis-coupon-reconcile"
    } >"$env.reconcile"
}

status() {
    local rc=0 topics
    if redis_ping 2>/dev/null; then echo "redis     up    127.0.0.1:$REDIS_PORT  data $REDIS_DIR"; else echo "redis     down  127.0.0.1:$REDIS_PORT  log $REDIS_DIR/redis.log"; rc=1; fi
    if pg_ready 2>/dev/null; then echo "postgres  up    127.0.0.1:$PG_PORT  data $PG_DIR/data"; else echo "postgres  down  127.0.0.1:$PG_PORT  log $PG_DIR/postgres.log"; rc=1; fi
    if topics="$(kafka_topics 2>/dev/null)"; then
        echo "kafka     up    127.0.0.1:$KAFKA_PORT  data $KAFKA_DIR/data"
        [ -z "$topics" ] || awk '{ print "  topic " $0 }' <<<"$topics"
    else echo "kafka     down  127.0.0.1:$KAFKA_PORT  log $KAFKA_DIR/server.log"; rc=1; fi
    return $rc
}

case "${1:-}" in
    up)
        mkdir -p "$SECURE_DIR"
        tls_make
        # The JVM boots while Redis and PostgreSQL come up.
        kafka_launch
        redis_up
        pg_up
        kafka_wait
        env_write
        log "env: . $SECURE_DIR/env (coupon-reconcile: . $SECURE_DIR/env.reconcile)"
        ;;
    down) kafka_down; pg_down; redis_down; log "stopped" ;;
    status) status ;;
    *) die "usage: $0 up|down|status" ;;
esac
