# shellcheck shell=bash
# Sourced by stack.sh, stack-cluster.sh and stack-secure.sh: pid files, the
# PostgreSQL cluster's user and folder, and Apache Kafka run from the jars
# Maven fetches (scripts/kafka/pom.xml). Expects ROOT, STACK_DIR, KAFKA_HEAP
# and scripts/lib/common.sh (log, die; wait_for for the services).

# One copy of the broker's jars serves every stack.
KAFKA_LIBS="$STACK_DIR/kafka/libs"
# The newest PostgreSQL installed (none: empty).
# shellcheck disable=SC2034 # used by the scripts that source this one
PG_BIN="$(compgen -G '/usr/lib/postgresql/*/bin' | sort -V | tail -1 || true)"

# initdb and postgres refuse to run as root; Debian's package creates `postgres`.
as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Prints the folder of the PostgreSQL cluster of the stack kept in DIR:
# DIR/postgres. initdb and the server run as `postgres` (see as_pg), which must
# be able to enter it. A clone below a folder only root may enter (mktemp -d
# makes those) keeps its cluster in /var/tmp instead, one per clone and stack,
# with DIR/postgres a link to it.
pg_cluster_dir() { # dir
    local dir=$1 real
    if [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1 && ! runuser -u postgres -- test -x "$ROOT"; then
        real="/var/tmp/coupon-stack/$(printf %s "$dir" | sha256sum | cut -c1-16)/postgres"
        mkdir -p "$real" "$dir"
        chmod 755 /var/tmp/coupon-stack "$(dirname "$real")"
        [ -e "$dir/postgres" ] || ln -s "$real" "$dir/postgres"
        echo "$real"
    else
        echo "$dir/postgres"
    fi
}

# Fails when the port still answers after this checkout stopped its own
# server: someone else's (another clone's stack) holds it, and a test that
# stops the component would go on against a server that never went away.
still_answers() { # name port probe...
    if "${@:3}" >/dev/null 2>&1; then
        die "$1: 127.0.0.1:$2 still answers after stopping this checkout's server; another stack holds the port (stop it there)"
    fi
}

# A process that exited but was not reaped yet (a zombie, until whatever
# adopted the daemon gets to it) counts as gone.
proc_running() { # pid
    local state
    state="$(awk '{ sub(/.*\) /, ""); print substr($0, 1, 1) }' "/proc/$1/stat" 2>/dev/null || true)"
    [ -n "$state" ] && [ "$state" != Z ]
}

pid_alive() { [ -f "$1" ] && proc_running "$(head -1 "$1")"; }

# Stops the process of a pid file, if it runs: through COMMAND (a polite
# shutdown) when one is given, else (or should COMMAND fail) with SIGTERM;
# then waits until it is gone (see wait_gone).
stop_pidfile() { # pidfile name timeout_s [command...]
    pid_alive "$1" || return 0
    # Read before stopping: Redis removes its pid file as it exits.
    local pid
    pid="$(head -1 "$1")"
    if [ $# -le 3 ] || ! "${@:4}" >/dev/null 2>&1; then kill "$pid" 2>/dev/null || true; fi
    wait_gone "$pid" "$1" "$2" "$3"
}

wait_gone() { # pid pidfile name [timeout]
    local deadline=$((SECONDS + ${4:-30})) killed=""
    while proc_running "$1"; do
        if [ -z "$killed" ] && [ $SECONDS -ge $deadline ]; then
            log "$3: still running after ${4:-30}s, killing"
            kill -9 "$1" 2>/dev/null || true
            killed=1
        fi
        sleep 0.2
    done
    rm -f "$2"
}

# shellcheck disable=SC2120 # the pattern is optional
kafka_fetch() { # [pattern of a jar libs/ must hold]
    # The broker's jars come from Maven Central through scripts/kafka/pom.xml;
    # after the first fetch they are cached here and in ~/.m2. A pattern fetches
    # again into a libs/ made before the pom gained that jar.
    if [ -f "$KAFKA_LIBS/.complete" ] && { [ $# = 0 ] || compgen -G "$KAFKA_LIBS/$1" >/dev/null; }; then return; fi
    command -v mvn >/dev/null || die "maven is not installed: run 'make setup'"
    log "kafka: fetching the broker from Maven Central (first run only)"
    mkdir -p "$STACK_DIR/kafka"
    mvn -B -q -f "$ROOT/scripts/kafka/pom.xml" -Dkafka.libs.dir="$KAFKA_LIBS" package \
        >"$STACK_DIR/kafka/maven.log" 2>&1 || die "kafka: maven could not fetch the broker; see $STACK_DIR/kafka/maven.log"
    touch "$KAFKA_LIBS/.complete"
}

# Writes DIR/server.properties for a node that is both broker and controller
# (KRaft) on loopback, and DIR/log4j2.properties. Clients and the brokers
# among themselves use the listener PROTOCOL (PLAINTEXT unless --protocol
# says otherwise), the controllers PLAINTEXT. Topics are never created by a
# client's request; topics and the internal ones get REPLICAS replicas and
# MIN_ISR in sync. --proxied PORT AT adds a plaintext listener on PORT that
# the broker advertises as AT, where a test's proxy (a slow link) forwards to
# PORT: a client that starts at AT is told to come back through the proxy.
# Further LINEs (key=value) are appended as they are.
kafka_node_config() { # [--protocol PROTOCOL] [--proxied PORT AT] dir node_id voters client_port controller_port replicas min_isr [line...]
    local protocol=PLAINTEXT listeners="" advertised="" protocols=""
    if [ "$1" = --protocol ]; then protocol=$2; shift 2; fi
    if [ "$1" = --proxied ]; then
        listeners=",PROXIED://127.0.0.1:$2" advertised=",PROXIED://127.0.0.1:$3" protocols=",PROXIED:PLAINTEXT"
        shift 3
    fi
    local dir=$1 id=$2 voters=$3 port=$4 controller_port=$5 replicas=$6 min_isr=$7
    shift 7
    mkdir -p "$dir"
    {
        cat <<PROPS
process.roles=broker,controller
node.id=$id
controller.quorum.voters=$voters
listeners=$protocol://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port$listeners
advertised.listeners=$protocol://127.0.0.1:$port$advertised
controller.listener.names=CONTROLLER
inter.broker.listener.name=$protocol
listener.security.protocol.map=$protocol:$protocol,CONTROLLER:PLAINTEXT$protocols
log.dirs=$dir/data
num.partitions=6
auto.create.topics.enable=false
default.replication.factor=$replicas
min.insync.replicas=$min_isr
offsets.topic.replication.factor=$replicas
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=$replicas
transaction.state.log.min.isr=$min_isr
share.coordinator.state.topic.replication.factor=$replicas
share.coordinator.state.topic.min.isr=$min_isr
group.initial.rebalance.delay.ms=0
PROPS
        [ $# = 0 ] || printf '%s\n' "$@"
    } >"$dir/server.properties"
    cp "$ROOT/scripts/kafka/log4j2.properties" "$dir/log4j2.properties"
}

# One of Kafka's command-line tools (the kafka-tools jar), errors to stderr.
kafka_tool() { java -Xmx256m -cp "$KAFKA_LIBS/*" "$@"; }

kafka_java() { # dir class args...: logs to dir with dir/log4j2.properties
    # JVM flags as Kafka's kafka-run-class.sh sets them, with a small heap. `exec`
    # keeps the recorded PID the JVM's own; setsid gives the broker a session
    # of its own, so a Ctrl-C meant for `make run` does not stop it (Redis and
    # PostgreSQL detach by themselves). In this subshell, which leads no process
    # group, setsid execs java in place.
    local dir=$1; shift
    exec setsid java -Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
        -XX:MaxInlineLevel=15 -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$dir/log4j2.properties" -Dkafka.logs.dir="$dir" \
        -cp "$KAFKA_LIBS/*" "$@"
}

kafka_node_start() { # dir cluster_id_file [format_option...]
    # Formats dir/data for the cluster id (made once, kept in cluster_id_file)
    # unless already formatted, with the further options of the storage tool
    # given (users to create, say), then starts the node of
    # dir/server.properties in the background; its PID goes to dir/kafka.pid.
    local dir=$1 id_file=$2
    shift 2
    if [ ! -f "$id_file" ]; then
        python3 -c 'import base64,uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))' \
            >"$id_file"
    fi
    # `=`: an id may start with `-` (base64), which the tool would take for an option.
    (kafka_java "$dir" kafka.tools.StorageTool format --cluster-id="$(cat "$id_file")" \
        --config "$dir/server.properties" --ignore-formatted "$@") >"$dir/format.log" 2>&1 ||
        die "kafka: storage format failed; see $dir/format.log"
    (kafka_java "$dir" kafka.Kafka "$dir/server.properties") >"$dir/server.out" 2>&1 </dev/null &
    echo $! >"$dir/kafka.pid"
}
