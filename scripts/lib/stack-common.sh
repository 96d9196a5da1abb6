# shellcheck shell=bash
# Sourced by stack.sh and stack-cluster.sh: waiting for a service, pid files,
# and Apache Kafka run from the jars Maven fetches (scripts/kafka/pom.xml).
# Expects ROOT, STACK_DIR, KAFKA_HEAP and the functions log and die.

# One copy of the broker's jars serves both stacks.
KAFKA_LIBS="$STACK_DIR/kafka/libs"

# A check may print why it failed; the last attempt's words go into the error.
wait_for() { # name timeout_s logfile command...
    local name=$1 timeout=$2 logfile=$3; shift 3
    local deadline=$((SECONDS + timeout)) why
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            why="$("$@" 2>&1 | tail -3 | tr '\n' ' ' | sed 's/ *$//' || true)"
            die "$name did not come up within ${timeout}s${why:+ ($why)}; see its log: $logfile"
        fi
        sleep 0.3
    done
}

# A process that exited but was not reaped yet (a zombie, until whatever
# adopted the daemon gets to it) counts as gone.
proc_running() { # pid
    local state
    state="$(awk '{ sub(/.*\) /, ""); print substr($0, 1, 1) }' "/proc/$1/stat" 2>/dev/null || true)"
    [ -n "$state" ] && [ "$state" != Z ]
}

pid_alive() { [ -f "$1" ] && proc_running "$(head -1 "$1")"; }

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

kafka_node_start() { # dir cluster_id_file
    # Formats dir/data for the cluster id (made once, kept in cluster_id_file)
    # unless already formatted, then starts the node of dir/server.properties in
    # the background; its PID goes to dir/kafka.pid.
    local dir=$1 id_file=$2
    if [ ! -f "$id_file" ]; then
        python3 -c 'import base64,uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))' \
            >"$id_file"
    fi
    # `=`: an id may start with `-` (base64), which the tool would take for an option.
    (kafka_java "$dir" kafka.tools.StorageTool format --cluster-id="$(cat "$id_file")" \
        --config "$dir/server.properties" --ignore-formatted) >"$dir/format.log" 2>&1 ||
        die "kafka: storage format failed; see $dir/format.log"
    (kafka_java "$dir" kafka.Kafka "$dir/server.properties") >"$dir/server.out" 2>&1 </dev/null &
    echo $! >"$dir/kafka.pid"
}
