#!/usr/bin/env bash
# A real Apache Kafka 4.x broker (single KRaft node: broker + controller) for
# the integration tests and local experiments, built from Maven Central jars.
#
#   scripts/kafka-broker.sh fetch                    resolve the jars into the cache (idempotent, fast when cached)
#   scripts/kafka-broker.sh start DIR PORT [CPORT]   format DIR (first time) and start a broker on 127.0.0.1:PORT,
#                                                    controller on CPORT (default PORT+1); waits until it is up
#   scripts/kafka-broker.sh stop DIR                 stop the broker started in DIR (SIGTERM, then SIGKILL)
#   scripts/kafka-broker.sh status DIR               exit 0 when the broker in DIR is running
#   scripts/kafka-broker.sh version                  the Kafka version the script uses
#   scripts/kafka-broker.sh libs                     the directory holding the jars
#
# Environment:
#   KAFKA_VERSION        Kafka version to fetch/run (default below; 4.x)
#   ARB_CACHE_DIR        cache root (default $HOME/.cache/arb-orchestration); jars go to
#                        $ARB_CACHE_DIR/kafka-<version>/libs, never into the repository
#   KAFKA_HEAP_OPTS      default -Xmx512m -Xms64m (the machine has 2 cores, shared)
#   KAFKA_JVM_OPTS       extra JVM options, appended
#   KAFKA_START_TIMEOUT  seconds to wait for "Kafka Server started" (default 90)
#   KAFKA_STOP_TIMEOUT   seconds to wait for a clean exit before SIGKILL (default 20)
#   KAFKA_PARENT_PID     if set, the broker is stopped when that process exits (the test fixture sets it)
#   ARB_KAFKA_CDS        1 (default): `fetch` also records a JVM class-data-sharing archive of a
#                        broker start, which `start` then uses (about half the start time on a
#                        busy 2-core machine); 0 disables it
#
# Every failure exits non-zero with a message on stderr that says what to do.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
POM="$HERE/kafka/pom.xml"
LOG4J_CONFIG="$HERE/kafka/log4j2.properties"

KAFKA_VERSION="${KAFKA_VERSION:-4.4.0}"
CACHE_ROOT="${ARB_CACHE_DIR:-$HOME/.cache/arb-orchestration}"
KAFKA_HOME="$CACHE_ROOT/kafka-$KAFKA_VERSION"
LIBS="$KAFKA_HOME/libs"
STAMP="$KAFKA_HOME/.fetched"

# Small heap, serial GC (fewer threads on 2 cores), C1 only (faster start; tests
# move little data so peak throughput does not matter).
HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx512m -Xms64m}"
JVM_OPTS="-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:-UsePerfData -Xshare:auto -Djava.awt.headless=true -Djava.net.preferIPv4Stack=true ${KAFKA_JVM_OPTS:-}"

die() {
    echo "kafka-broker.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '2,26p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# What the cached jar set was built from: the version and the pom's content.
stamp_value() {
    echo "kafka=$KAFKA_VERSION pom=$(sha256sum "$POM" | cut -d' ' -f1)"
}

jars_ready() {
    [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(stamp_value)" && -f "$LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]]
}

require_jars() {
    jars_ready || die "Kafka $KAFKA_VERSION jars missing or stale in $LIBS; run: scripts/kafka-broker.sh fetch"
    command -v java >/dev/null || die "java not found on PATH (Kafka $KAFKA_VERSION needs Java 17+)"
}

# ---------------------------------------------------------------- class-data sharing
# A dynamic CDS archive (JDK 13+) holds the classes a broker start loads, already
# parsed and verified. It is only valid for the same JVM, options and classpath,
# so its name carries a hash of those; a stale or foreign archive is ignored by
# the JVM (-Xshare:auto) and the broker starts as usual.

cds_enabled() {
    [[ "${ARB_KAFKA_CDS:-1}" == "1" ]]
}

cds_archive() {
    local id
    # The JVM checks the classpath jars' paths, sizes and mtimes against the archive: so do we.
    id="$( { java -version 2>&1; echo "$HEAP_OPTS $JVM_OPTS"; stat -c '%n %s %Y' "$LIBS"/*; } | sha256sum | cut -c1-16)"
    echo "$KAFKA_HOME/cds/broker-$id.jsa"
}

cds_opts() {
    # Options that use the archive when there is one (nothing otherwise).
    if cds_enabled; then
        local archive
        archive="$(cds_archive)"
        [[ -f "$archive" ]] && echo "-XX:SharedArchiveFile=$archive"
    fi
    return 0
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

build_cds() {
    local archive tmpdir began
    archive="$(cds_archive)"
    [[ -f "$archive" ]] && return 0
    # A build that failed once for this JVM/options/classpath is not retried on every fetch.
    [[ -f "$archive.failed" ]] && return 1
    began="$EPOCHREALTIME"
    mkdir -p "$(dirname "$archive")"
    tmpdir="$(mktemp -d "$KAFKA_HOME/cds/run.XXXXXX")"
    local port cport
    port="$(free_port)" && cport="$(free_port)" || { rm -rf "$tmpdir"; return 1; }
    write_properties "$tmpdir" "$port" "$cport"
    local ok=0
    # shellcheck disable=SC2086
    if java $HEAP_OPTS $JVM_OPTS -Dkafka.logs.dir="$tmpdir" -Dlog4j2.configurationFile="$LOG4J_CONFIG" -cp "$LIBS/*" \
        kafka.tools.StorageTool format --cluster-id "$(random_cluster_id)" --config "$tmpdir/server.properties" \
        >"$tmpdir/format.log" 2>&1; then
        # shellcheck disable=SC2086
        java $HEAP_OPTS $JVM_OPTS -XX:ArchiveClassesAtExit="$tmpdir/broker.jsa" -Dkafka.logs.dir="$tmpdir" \
            -Dlog4j2.configurationFile="$LOG4J_CONFIG" -cp "$LIBS/*" kafka.Kafka "$tmpdir/server.properties" \
            >"$tmpdir/stdout.log" 2>&1 </dev/null &
        local pid=$! deadline=$((SECONDS + 180))
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
            if grep -q "Kafka Server started" "$tmpdir/server.log" 2>/dev/null; then
                ok=1
                break
            fi
            sleep 0.2
        done
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    if ((ok)) && [[ -s "$tmpdir/broker.jsa" ]]; then
        mv "$tmpdir/broker.jsa" "$archive"
        rm -rf "$tmpdir"
        # Archives of other jar sets or JVMs are dead weight (~50 MB each).
        find "$(dirname "$archive")" -maxdepth 1 -name 'broker-*.jsa*' ! -name "$(basename "$archive")" -delete
        echo "kafka $KAFKA_VERSION: class-data archive for faster broker starts built in $(awk -v a="$began" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')s"
        return 0
    fi
    echo "kafka-broker.sh: warning: could not build the class-data archive (brokers start without it); logs in $tmpdir" >&2
    echo "$tmpdir" >"$archive.failed"
    return 1
}

cmd_fetch() {
    if jars_ready && { ! cds_enabled || [[ -f "$(cds_archive)" || -f "$(cds_archive).failed" ]]; }; then
        echo "kafka $KAFKA_VERSION: jars cached in $LIBS"
        return 0
    fi
    mkdir -p "$KAFKA_HOME"
    # One fetch at a time per version (two `make test` in parallel share the cache).
    exec 9>"$KAFKA_HOME.lock"
    flock 9
    if ! jars_ready; then
        resolve_jars
    fi
    if cds_enabled && command -v java >/dev/null; then
        build_cds || true
    fi
    echo "kafka $KAFKA_VERSION: jars cached in $LIBS"
}

resolve_jars() {
    command -v mvn >/dev/null || die "mvn not found on PATH: it is needed once to resolve Kafka $KAFKA_VERSION from Maven Central"
    local tmp
    tmp="$(mktemp -d "$KAFKA_HOME/libs.tmp.XXXXXX")"
    echo "kafka $KAFKA_VERSION: resolving org.apache.kafka:kafka_2.13 and its runtime dependencies from Maven Central..."
    if ! mvn -B -q -f "$POM" -Dkafka.version="$KAFKA_VERSION" \
        dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" >"$KAFKA_HOME/fetch.log" 2>&1; then
        tail -n 30 "$KAFKA_HOME/fetch.log" >&2
        rm -rf "$tmp"
        die "mvn could not resolve Kafka $KAFKA_VERSION (full log: $KAFKA_HOME/fetch.log)"
    fi
    [[ -f "$tmp/kafka_2.13-$KAFKA_VERSION.jar" ]] || { rm -rf "$tmp"; die "mvn finished but kafka_2.13-$KAFKA_VERSION.jar is not in the result"; }
    rm -rf "$LIBS"
    mv "$tmp" "$LIBS"
    stamp_value >"$STAMP"
    echo "kafka $KAFKA_VERSION: $(ls "$LIBS" | wc -l) jars in $LIBS"
}

pid_of() {
    local dir="$1"
    [[ -f "$dir/broker.pid" ]] || return 1
    local pid
    pid="$(cat "$dir/broker.pid")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

random_cluster_id() {
    # A Kafka Uuid: 16 random bytes, base64url without padding, not starting with '-'.
    local id
    while :; do
        id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
        [[ "$id" != -* ]] && { echo "$id"; return; }
    done
}

write_properties() {
    local dir="$1" port="$2" cport="$3"
    cat >"$dir/server.properties" <<EOF
# Written by scripts/kafka-broker.sh: a single-node KRaft test broker.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=3
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
num.network.threads=2
num.io.threads=2
background.threads=2
num.recovery.threads.per.data.dir=1
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=8388608
EOF
}

cmd_start() {
    [[ $# -ge 2 ]] || die "usage: start DIR PORT [CONTROLLER_PORT]"
    local dir port cport
    mkdir -p "$1"
    dir="$(cd "$1" && pwd)"
    port="$2"
    cport="${3:-$((port + 1))}"
    [[ "$port" =~ ^[0-9]+$ && "$cport" =~ ^[0-9]+$ ]] || die "PORT and CONTROLLER_PORT must be numbers, got '$port' '$cport'"
    require_jars
    if pid="$(pid_of "$dir")"; then
        die "a broker is already running from $dir (pid $pid); stop it first: scripts/kafka-broker.sh stop $dir"
    fi
    write_properties "$dir" "$port" "$cport"
    local cp="$LIBS/*"
    local cds
    cds="$(cds_opts)"
    local started
    started="$EPOCHREALTIME"
    if [[ ! -f "$dir/data/meta.properties" ]]; then
        # shellcheck disable=SC2086
        if ! java $HEAP_OPTS $JVM_OPTS $cds -Dkafka.logs.dir="$dir" -Dlog4j2.configurationFile="$LOG4J_CONFIG" -cp "$cp" \
            kafka.tools.StorageTool format --cluster-id "$(random_cluster_id)" --config "$dir/server.properties" \
            >"$dir/format.log" 2>&1; then
            cat "$dir/format.log" >&2
            die "formatting the KRaft log dir $dir/data failed (see above)"
        fi
    fi
    : >"$dir/stdout.log"
    local log="$dir/server.log"
    # Start marker: only lines written after this offset count as this start's.
    local offset=0
    [[ -f "$log" ]] && offset="$(stat -c %s "$log")"
    # shellcheck disable=SC2086
    nohup java $HEAP_OPTS $JVM_OPTS $cds -Dkafka.logs.dir="$dir" -Dlog4j2.configurationFile="$LOG4J_CONFIG" -cp "$cp" \
        kafka.Kafka "$dir/server.properties" >>"$dir/stdout.log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$dir/broker.pid"
    if [[ -n "${KAFKA_PARENT_PID:-}" ]]; then
        # Tie the broker to a parent (the pytest process): a killed test run leaves no broker behind.
        (
            while kill -0 "$KAFKA_PARENT_PID" 2>/dev/null && kill -0 "$pid" 2>/dev/null; do sleep 2; done
            kill -TERM "$pid" 2>/dev/null || true
        ) </dev/null >/dev/null 2>&1 &
        disown
    fi
    local timeout="${KAFKA_START_TIMEOUT:-90}"
    local deadline=$((SECONDS + timeout))
    while :; do
        if [[ -f "$log" ]] && tail -c +"$((offset + 1))" "$log" | grep -q "Kafka Server started"; then
            break
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "--- $dir/stdout.log" >&2; tail -n 30 "$dir/stdout.log" >&2
            echo "--- $log" >&2; [[ -f "$log" ]] && tail -n 40 "$log" >&2
            rm -f "$dir/broker.pid"
            die "the Kafka broker exited during startup (logs above)"
        fi
        if ((SECONDS >= deadline)); then
            echo "--- $log" >&2; [[ -f "$log" ]] && tail -n 40 "$log" >&2
            kill -9 "$pid" 2>/dev/null || true
            rm -f "$dir/broker.pid"
            die "the Kafka broker did not start within ${timeout}s (KAFKA_START_TIMEOUT); logs above"
        fi
        sleep 0.1
    done
    local elapsed
    elapsed="$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')"
    echo "kafka $KAFKA_VERSION broker up on 127.0.0.1:$port (controller 127.0.0.1:$cport, pid $pid, dir $dir, ${elapsed}s)"
}

cmd_stop() {
    [[ $# -ge 1 ]] || die "usage: stop DIR"
    local dir="$1" pid
    if ! pid="$(pid_of "$dir")"; then
        rm -f "$dir/broker.pid"
        echo "no broker running from $dir"
        return 0
    fi
    kill -TERM "$pid"
    local deadline=$((SECONDS + ${KAFKA_STOP_TIMEOUT:-20}))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            echo "kafka-broker.sh: broker pid $pid ignored SIGTERM for ${KAFKA_STOP_TIMEOUT:-20}s; sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    rm -f "$dir/broker.pid"
    echo "stopped broker pid $pid ($dir)"
}

cmd_status() {
    [[ $# -ge 1 ]] || die "usage: status DIR"
    local pid
    if pid="$(pid_of "$1")"; then
        echo "running (pid $pid)"
    else
        echo "not running"
        return 1
    fi
}

main() {
    local cmd="${1:-}"
    [[ $# -gt 0 ]] && shift
    case "$cmd" in
        fetch) cmd_fetch "$@" ;;
        start) cmd_start "$@" ;;
        stop) cmd_stop "$@" ;;
        status) cmd_status "$@" ;;
        version) echo "$KAFKA_VERSION" ;;
        libs) echo "$LIBS" ;;
        -h | --help | help) usage ;;
        *) usage >&2; die "unknown command '${cmd}'" ;;
    esac
}

main "$@"
