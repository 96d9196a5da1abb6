#!/usr/bin/env bash
# The local cluster stack: a Redis Cluster of 3 masters and 3 replicas and a
# three-node Apache Kafka (KRaft, each node broker and controller) on loopback,
# with data and logs under $STACK_DIR/cluster. Its ports differ from stack.sh's,
# so both stacks run side by side. Idempotent like stack.sh: `up` reuses nodes
# that answer, starts the missing ones and waits until each really answers;
# `down` stops every node and keeps the data.
#
#   scripts/stack-cluster.sh up|down|status
#   scripts/stack-cluster.sh kill-redis PORT|start-redis PORT|kill-kafka N|start-kafka N
#
# Redis nodes on 7001-7006 (cluster bus 17001-17006); Kafka node N (1-3) serves
# clients on 9N92 and its controller on 9N93, and has a listener on 9N96 that
# it advertises as 9N97, where e2e scenario c8 puts a proxy that slows it.
# kill-* SIGKILLs one node, start-* starts it again and waits as `up` does.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK_DIR="${STACK_DIR:-$ROOT/.stack}"
CLUSTER_DIR="$STACK_DIR/cluster"
KAFKA_HEAP="${KAFKA_HEAP:-512m}"
REDIS_PORTS=(7001 7002 7003 7004 7005 7006)
KAFKA_NODES=(1 2 3)
TOPIC=inside.coupon.issued
DLQ_TOPIC=inside.coupon.issued.dlq

# shellcheck source=lib/common.sh
. "$ROOT/scripts/lib/common.sh"
# shellcheck source=lib/stack-common.sh
. "$ROOT/scripts/lib/stack-common.sh"

# ---------------------------------------------------------------- Redis
redis_dir() { echo "$CLUSTER_DIR/redis-$1"; }
rcli() { local port=$1; shift; redis-cli -h 127.0.0.1 -p "$port" "$@"; }
redis_ping() { rcli "$1" ping 2>/dev/null | grep -q PONG; }
# Both print nothing for a node that does not answer.
redis_field() { # port field command...: the value of one `field:value` line of INFO or CLUSTER INFO
    local port=$1 field=$2; shift 2
    { rcli "$port" "$@" 2>/dev/null || true; } | tr -d '\r' | sed -n "s/^$field://p"
}
redis_nodes() { { rcli "$1" cluster nodes 2>/dev/null || true; } | tr -d '\r'; }
redis_check_port() {
    case " ${REDIS_PORTS[*]} " in *" ${1:-} "*) ;; *) die "not a Redis port of the cluster: '${1:-}' (${REDIS_PORTS[*]})" ;; esac
}

redis_start() { # port
    local port=$1 dir
    dir="$(redis_dir "$port")"
    if redis_ping "$port" || pid_alive "$dir/redis.pid"; then return; fi
    mkdir -p "$dir"
    # As stack.sh's Redis (AOF, noeviction), clustered; a 2 s node timeout makes
    # a replica take over about 4 s after its master died.
    redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" \
        --cluster-enabled yes --cluster-config-file "$dir/nodes.conf" --cluster-node-timeout 2000 \
        --appendonly yes --appendfsync everysec --maxmemory-policy noeviction \
        --save "" --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
}

redis_stop() { # port
    stop_pidfile "$(redis_dir "$1")/redis.pid" "redis $1" 30 rcli "$1" shutdown
}

# The role the other nodes give PORT: master while it holds slots, else
# slave (a replica, or a master whose replica took its slots over).
redis_expected_role() { # port
    local port=$1 peer line
    for peer in "${REDIS_PORTS[@]}"; do
        [ "$peer" != "$port" ] || continue
        line="$(redis_nodes "$peer" | awk -v a="127.0.0.1:$port@" 'index($2, a) == 1')"
        if [ -n "$line" ]; then
            if [ "$(wc -w <<<"$line")" -gt 8 ]; then echo master; else echo slave; fi
            return
        fi
    done
    echo any
}

# PORT is in an ok cluster in the expected role, a replica with its link to
# its master up, and no answering node thinks PORT is failing.
redis_node_ok() { # port [role]; says what is missing
    local port=$1 role state link peer flags
    state="$(redis_field "$port" cluster_state cluster info)"
    [ "$state" = ok ] || { echo "cluster_state '$state'"; return 1; }
    role="$(redis_field "$port" role info replication)"
    case "${2:-any}" in any) ;; "$role") ;; *) echo "role $role, expected ${2:-any}"; return 1 ;; esac
    if [ "$role" = slave ]; then
        link="$(redis_field "$port" master_link_status info replication)"
        [ "$link" = up ] || { echo "master link $link"; return 1; }
    fi
    for peer in "${REDIS_PORTS[@]}"; do
        flags="$(redis_nodes "$peer" | awk -v a="127.0.0.1:$port@" 'index($2, a) == 1 && $3 ~ /fail/ { print $3 }')"
        [ -z "$flags" ] || { echo "$peer flags it: $flags"; return 1; }
    done
}

# PORT is ok in the role its peers give it now (asked on every check: a
# peer may still hold the view from before a failover).
redis_rejoined() { redis_node_ok "$1" "$(redis_expected_role "$1")"; }

redis_cluster_ok() {
    local port known why
    for port in "${REDIS_PORTS[@]}"; do
        known="$(redis_field "$port" cluster_known_nodes cluster info)"
        [ "$known" = "${#REDIS_PORTS[@]}" ] || { echo "$port knows '$known' nodes"; return 1; }
        why="$(redis_node_ok "$port")" || { echo "$port: $why"; return 1; }
    done
}

redis_create_if_new() {
    local port fresh=0 addrs=()
    for port in "${REDIS_PORTS[@]}"; do
        if [ "$(redis_field "$port" cluster_known_nodes cluster info)" = 1 ] &&
            [ "$(redis_field "$port" cluster_slots_assigned cluster info)" = 0 ]; then fresh=$((fresh + 1)); fi
        addrs+=("127.0.0.1:$port")
    done
    [ $fresh = 0 ] && return
    [ $fresh = ${#REDIS_PORTS[@]} ] ||
        die "redis: $fresh nodes belong to no cluster while the others do (nodes.conf lost?); start anew: make down-cluster; rm -rf $CLUSTER_DIR/redis-*"
    log "redis: creating the cluster (masters ${REDIS_PORTS[*]:0:3}, replicas ${REDIS_PORTS[*]:3})"
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$CLUSTER_DIR/redis-create.log" 2>&1 ||
        die "redis: cluster create failed; see $CLUSTER_DIR/redis-create.log"
}

# Each master with slots has exactly one replica. redis-cli gives each master
# one; this re-points a replica should two ever share a master.
redis_spread_replicas() {
    local move tries=0
    while :; do
        move="$(redis_nodes "${REDIS_PORTS[0]}" | awk '
            $3 ~ /master/ && NF > 8 { n[$1] += 0 }
            $3 ~ /slave/ { n[$4]++; replica[$4] = $2 }
            END {
                for (m in n) if (n[m] == 0) lonely = m
                for (m in n) if (n[m] > 1) crowded = m
                if (lonely != "" && crowded != "") { split(replica[crowded], a, /[:@]/); print a[2], lonely }
            }')"
        [ -n "$move" ] || return 0
        tries=$((tries + 1))
        [ $tries -le 3 ] || die "redis: replicas still share a master: $(redis_nodes "${REDIS_PORTS[0]}")"
        log "redis: ${move% *} replicates ${move#* } instead, so that each master has one replica"
        rcli "${move% *}" cluster replicate "${move#* }" >/dev/null
        wait_for --log "$(redis_dir "${move% *}")/redis.log" 30 "redis ${move% *}" redis_cluster_ok
    done
}

redis_up() {
    local port
    for port in "${REDIS_PORTS[@]}"; do redis_start "$port"; done
    for port in "${REDIS_PORTS[@]}"; do wait_for --log "$(redis_dir "$port")/redis.log" 20 "redis $port" redis_ping "$port"; done
    redis_create_if_new
    wait_for --log "$CLUSTER_DIR/redis-*/redis.log" 60 "redis cluster" redis_cluster_ok
    redis_spread_replicas
    log "redis: cluster ok on 127.0.0.1:${REDIS_PORTS[0]}-${REDIS_PORTS[-1]}"
}

redis_down() {
    # Replicas first: a replica still running when its master stops would
    # take over, and the next `up` would find the roles swapped.
    local port role
    for role in slave master; do
        for port in "${REDIS_PORTS[@]}"; do
            [ "$(redis_field "$port" role info replication)" != "$role" ] || redis_stop "$port"
        done
    done
    for port in "${REDIS_PORTS[@]}"; do redis_stop "$port"; done
}

# SIGKILLs the process of a pid file, as a crash would, and waits until it is gone.
sigkill() { # pidfile name
    local pid
    pid_alive "$1" || die "$2: not running"
    pid="$(head -1 "$1")"
    kill -9 "$pid"
    wait_gone "$pid" "$1" "$2"
    log "$2: killed (SIGKILL)"
}

redis_kill() { # port
    redis_check_port "${1:-}"
    sigkill "$(redis_dir "$1")/redis.pid" "redis $1"
}

redis_restart() { # port
    redis_check_port "${1:-}"
    local port=$1
    redis_start "$port"
    wait_for --log "$(redis_dir "$port")/redis.log" 60 "redis $port" redis_rejoined "$port"
    log "redis $port: up as $(redis_field "$port" role info replication)"
}

# ---------------------------------------------------------------- Kafka
kafka_dir() { echo "$CLUSTER_DIR/kafka-$1"; }
kafka_port() { echo "9${1}92"; }
kafka_bootstrap() { local n; for n in "${KAFKA_NODES[@]}"; do printf '127.0.0.1:%s,' "$(kafka_port "$n")"; done | sed 's/,$//'; }
kafka_probe() { python3 "$ROOT/scripts/kafka_ready.py" "127.0.0.1:$(kafka_port "$1")" "${@:2}"; }
kafka_check_node() {
    case " ${KAFKA_NODES[*]} " in *" ${1:-} "*) ;; *) die "not a Kafka node of the cluster: '${1:-}' (${KAFKA_NODES[*]})" ;; esac
}

kafka_config() { # node
    local n=$1 voters="" v
    for v in "${KAFKA_NODES[@]}"; do voters+="${voters:+,}$v@127.0.0.1:9${v}93"; done
    # A controlled shutdown waits (up to 5 min) for the controller quorum to
    # approve it, which the last node of a full stop never gets: its two
    # fellow voters are gone. Without it a node still closes its logs cleanly.
    kafka_node_config --proxied "9${n}96" "9${n}97" \
        "$(kafka_dir "$n")" "$n" "$voters" "9${n}92" "9${n}93" 3 2 controlled.shutdown.enable=false
}

kafka_start() { # node
    local n=$1
    if kafka_probe "$n" 2>/dev/null || pid_alive "$(kafka_dir "$n")/kafka.pid"; then return; fi
    kafka_config "$n"
    kafka_node_start "$(kafka_dir "$n")" "$CLUSTER_DIR/kafka-cluster.id"
}

# Every node answers, knows all brokers and these topics, and every partition
# has a leader and a full ISR.
kafka_cluster_ok() { # [topic...]
    local n t known
    for n in "${KAFKA_NODES[@]}"; do
        known="$(kafka_probe "$n" -v --brokers ${#KAFKA_NODES[@]} --in-sync)" || return 1
        for t in "$@"; do grep -q "^  topic $t:" <<<"$known" || return 1; done
    done
}

kafka_wait() {
    local n
    for n in "${KAFKA_NODES[@]}"; do
        wait_for --log "$(kafka_dir "$n")/server.log" 120 "kafka $n" kafka_probe "$n" --brokers ${#KAFKA_NODES[@]}
    done
    wait_for --log "$CLUSTER_DIR/kafka-*/server.log" 120 "kafka partitions in sync" kafka_cluster_ok
}

kafka_topic() { # name partitions: created unless the cluster has it
    grep -q "^  topic $1:" <<<"$(kafka_probe "${KAFKA_NODES[0]}" -v)" && return
    kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$(kafka_bootstrap)" --create --if-not-exists \
        --topic "$1" --partitions "$2" --replication-factor 3 --config min.insync.replicas=2 >/dev/null ||
        die "kafka: could not create topic $1"
    log "kafka: created topic $1 (partitions $2, replication factor 3, min.insync.replicas 2)"
}

kafka_launch() { # start every node not running: a node alone cannot elect a controller
    command -v java >/dev/null || die "java is not installed: run 'make setup'"
    kafka_fetch 'kafka-tools-[0-9]*.jar'
    local n
    for n in "${KAFKA_NODES[@]}"; do kafka_start "$n"; done
}

kafka_up() {
    kafka_wait
    kafka_topic "$TOPIC" 6
    kafka_topic "$DLQ_TOPIC" 1
    wait_for --log "$CLUSTER_DIR/kafka-*/server.log" 60 "kafka topics" kafka_cluster_ok "$TOPIC" "$DLQ_TOPIC"
    log "kafka: 3 brokers ok on $(kafka_bootstrap)"
}

kafka_down() {
    local n pids=()
    for n in "${KAFKA_NODES[@]}"; do
        if pid_alive "$(kafka_dir "$n")/kafka.pid"; then
            pids[n]="$(head -1 "$(kafka_dir "$n")/kafka.pid")"
            kill "${pids[n]}" 2>/dev/null || true
        fi
    done
    for n in "${!pids[@]}"; do wait_gone "${pids[n]}" "$(kafka_dir "$n")/kafka.pid" "kafka $n" 60; done
}

kafka_kill() { # node
    kafka_check_node "${1:-}"
    sigkill "$(kafka_dir "$1")/kafka.pid" "kafka $1"
}

kafka_restart() { # node
    kafka_check_node "${1:-}"
    command -v java >/dev/null || die "java is not installed: run 'make setup'"
    kafka_start "$1"
    kafka_wait
    log "kafka $1: up, 3 brokers, partitions in sync"
}

# ---------------------------------------------------------------- status
status() {
    local rc=0 port n dir role line
    for port in "${REDIS_PORTS[@]}"; do
        dir="$(redis_dir "$port")"
        if ! redis_ping "$port"; then echo "redis $port  down  log $dir/redis.log"; rc=1; continue; fi
        role="$(redis_field "$port" role info replication)"
        line="$(redis_nodes "$port" | awk '$3 ~ /myself/ { s = ""; for (i = 9; i <= NF; i++) s = s " " $i; print s }')"
        if [ "$role" = slave ]; then
            line=" of $(redis_field "$port" master_port info replication), link $(redis_field "$port" master_link_status info replication)"
        else
            line=", slots${line:- none}"
        fi
        echo "redis $port  up    $role$line, cluster_state:$(redis_field "$port" cluster_state cluster info)"
        [ "$(redis_field "$port" cluster_state cluster info)" = ok ] || rc=1
    done
    local up=()
    for n in "${KAFKA_NODES[@]}"; do
        dir="$(kafka_dir "$n")"
        if kafka_probe "$n" --brokers ${#KAFKA_NODES[@]} 2>/dev/null; then
            echo "kafka $n     up    127.0.0.1:$(kafka_port "$n")  data $dir/data"
            up+=("$n")
        elif kafka_probe "$n" 2>/dev/null; then
            echo "kafka $n     up    127.0.0.1:$(kafka_port "$n")  but not all brokers are live"; up+=("$n"); rc=1
        else
            echo "kafka $n     down  127.0.0.1:$(kafka_port "$n")  log $dir/server.log"; rc=1
        fi
    done
    if [ ${#up[@]} -gt 0 ]; then
        echo "topics (as broker ${up[0]} sees them):"
        kafka_probe "${up[0]}" --partitions --in-sync || rc=1
    fi
    return $rc
}

case "${1:-}" in
    up)
        command -v redis-server >/dev/null || die "redis-server is not installed: run 'make setup'"
        mkdir -p "$CLUSTER_DIR"
        # The JVMs boot while Redis comes up.
        kafka_launch
        redis_up
        kafka_up
        ;;
    down) kafka_down; redis_down; log "stopped" ;;
    status) status ;;
    kill-redis) redis_kill "${2:-}" ;;
    start-redis) redis_restart "${2:-}" ;;
    kill-kafka) kafka_kill "${2:-}" ;;
    start-kafka) kafka_restart "${2:-}" ;;
    *) die "usage: $0 up|down|status|kill-redis PORT|start-redis PORT|kill-kafka N|start-kafka N" ;;
esac
