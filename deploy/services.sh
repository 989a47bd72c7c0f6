#!/usr/bin/env bash
# Local services for metricx: Kafka (KRaft, single node), PostgreSQL 15 and Redis,
# run as plain processes (no Docker, no systemd) with all state under .data/.
#
#   deploy/services.sh install        apt packages + Kafka jars (idempotent, quick when done)
#   deploy/services.sh up             install if needed, start all three, wait until healthy
#   deploy/services.sh down           stop all three, make sure the processes are gone
#   deploy/services.sh status         one line per service; exit 0 only when all are up
#   deploy/services.sh start|stop|restart kafka|postgres|redis
#                                     one service (operations drills, the fault suite)
#   deploy/services.sh create-topics  create the metricx topics (idempotent)
#   deploy/services.sh env            print the METRICX_* settings for these services
#
# Settings (environment):
#   METRICX_DATA_DIR          state folder                 (default <repo>/.data)
#   KAFKA_PORT                broker listener              (default 9092)
#   KAFKA_CONTROLLER_PORT     KRaft controller listener    (default 9093)
#   KAFKA_HEAP_OPTS           broker heap                  (default -Xms256m -Xmx512m)
#   POSTGRES_PORT             PostgreSQL                   (default 5432)
#   POSTGRES_BIN              PostgreSQL binaries          (default /usr/lib/postgresql/15/bin)
#   METRICX_PG_TS_WORKERS     TimescaleDB background workers (default 16): one scheduler
#                             per database using the extension, plus its running jobs
#   REDIS_PORT                Redis                        (default 6379)
#   METRICX_RAW_PARTITIONS    partitions of metricx.insights.raw (default 4)
#   METRICX_SERVICES_TIMEOUT  seconds to wait for each service to get healthy (default 90)
#   METRICX_KAFKA_LIBS        the Kafka jars (default <data dir>/kafka/libs; another data
#                             dir can point at jars already fetched)
#
# Everything listens on 127.0.0.1 only.  The repo root is found from this file's
# location, so it works from any cwd and in any clone.
set -Eeuo pipefail
shopt -s nullglob

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd -P)

HOST=127.0.0.1
DATA_DIR=${METRICX_DATA_DIR:-$REPO_ROOT/.data}
[[ $DATA_DIR == /* ]] || DATA_DIR=$PWD/$DATA_DIR
DATA_DIR=${DATA_DIR%/}

KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}
POSTGRES_PORT=${POSTGRES_PORT:-5432}
POSTGRES_BIN=${POSTGRES_BIN:-/usr/lib/postgresql/15/bin}
PG_TS_WORKERS=${METRICX_PG_TS_WORKERS:-16}
REDIS_PORT=${REDIS_PORT:-6379}
RAW_PARTITIONS=${METRICX_RAW_PARTITIONS:-4}
TIMEOUT=${METRICX_SERVICES_TIMEOUT:-90}

KAFKA_POM=$SCRIPT_DIR/kafka/pom.xml
KAFKA_HOME=$DATA_DIR/kafka
KAFKA_LIBS=${METRICX_KAFKA_LIBS:-$KAFKA_HOME/libs}
KAFKA_LOG_DIRS=$KAFKA_HOME/data
KAFKA_LOGS=$KAFKA_HOME/logs
KAFKA_CONF=$KAFKA_HOME/server.properties
KAFKA_PID=$KAFKA_HOME/kafka.pid
KAFKA_BOOTSTRAP=$HOST:$KAFKA_PORT

PG_DATA=$DATA_DIR/postgres
PG_RUN=$DATA_DIR/postgres-run
PG_LOG=$PG_RUN/postgres.log
# A unix socket path must fit in 107 bytes; a deep checkout would overflow it.
PG_SOCKET_DIR=$PG_RUN
if (( ${#PG_SOCKET_DIR} > 90 )); then
    PG_SOCKET_DIR=/tmp/metricx-pg-$(printf '%s' "$PG_RUN" | cksum | cut -d' ' -f1)
fi

REDIS_DIR=$DATA_DIR/redis
REDIS_PID=$REDIS_DIR/redis.pid
REDIS_LOG=$REDIS_DIR/redis.log

DB_NAME=metricx DB_USER=metricx DB_PASSWORD=metricx

# ---------------------------------------------------------------------- helpers

say() { printf '[services] %s\n' "$*"; }
warn() { printf '[services] warning: %s\n' "$*" >&2; }
die() { printf '[services] error: %s\n' "$*" >&2; exit 1; }

is_root() { [[ $EUID -eq 0 ]]; }

pid_alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }

# pid_is PID WORD: the process is alive and WORD occurs in its command line
pid_is() {
    pid_alive "$1" || return 1
    local cmd
    cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline") || return 1
    [[ $cmd == *"$2"* ]]
}

read_pid() { [[ -f $1 ]] && head -n1 "$1" | tr -dc '0-9'; }

# wait_gone PID SECONDS: wait for a process to exit
wait_gone() {
    local pid=$1 end=$((SECONDS + $2))
    while pid_alive "$pid"; do
        (( SECONDS < end )) || return 1
        sleep 0.2
    done
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# port_listener PORT: print "pid N (name)" of whatever listens on PORT; fail if nothing
port_listener() {
    local line pid name
    if command -v ss >/dev/null; then
        line=$(ss -Hltnp "sport = :$1" 2>/dev/null | head -n1)
        [[ -n $line ]] || return 1
        if [[ $line =~ \(\"([^\"]+)\",pid=([0-9]+) ]]; then
            name=${BASH_REMATCH[1]} pid=${BASH_REMATCH[2]}
            printf 'pid %s, %s' "$pid" "$name"
        else
            printf 'pid unknown'
        fi
    else
        port_open "$1" || return 1
        printf 'pid unknown'
    fi
}

# ensure_port_free PORT SERVICE ENVVAR
ensure_port_free() {
    local who
    if who=$(port_listener "$1"); then
        die "$2: port $1 is already in use by another process ($who): stop it or set $3 to a free port"
    fi
}

# run as the postgres OS user when we are root (PostgreSQL refuses to run as root)
as_pg() {
    if is_root; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

# fd 9 holds the lock; every daemon we start gets it closed (9>&-) so that it does
# not keep the lock after this script exits
with_lock() {
    mkdir -p "$DATA_DIR"
    exec 9>"$DATA_DIR/.services.lock"
    flock -w 600 9 || die "another deploy/services.sh holds $DATA_DIR/.services.lock"
}

# ---------------------------------------------------------------------- install

apt_install() {
    local sudo=()
    if ! is_root; then
        command -v sudo >/dev/null || die "need root to apt-get install $*"
        sudo=(sudo)
    fi
    say "installing Debian packages: $*"
    # Keep the packages' maintainer scripts from starting system-wide services that
    # would take our ports (Docker-style images already have this file).
    local made_policy=
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${sudo[@]}" chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    local rc=0 apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q)
    if ! "${apt[@]}" install -y "$@"; then
        say "apt-get install failed; refreshing the package lists and retrying"
        "${apt[@]}" update && "${apt[@]}" install -y "$@" || rc=$?
    fi
    [[ -z $made_policy ]] || "${sudo[@]}" rm -f /usr/sbin/policy-rc.d
    (( rc == 0 )) || die "apt-get install $* failed"
}

ensure_packages() {
    local need=() b
    for b in initdb pg_ctl pg_isready psql; do
        [[ -x $POSTGRES_BIN/$b ]] || { need+=(postgresql); break; }
    done
    command -v redis-server >/dev/null && command -v redis-cli >/dev/null || need+=(redis-server)
    command -v java >/dev/null || need+=(default-jre-headless)
    command -v mvn >/dev/null || need+=(maven)
    if (( ${#need[@]} )); then
        apt_install "${need[@]}"
    fi
    for b in initdb pg_ctl pg_isready psql; do
        [[ -x $POSTGRES_BIN/$b ]] || die "$POSTGRES_BIN/$b not found (set POSTGRES_BIN to PostgreSQL's bin folder)"
    done
}

ensure_kafka_libs() {
    local want stamp=$KAFKA_LIBS/.fetched
    want=$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)
    if [[ -f $stamp && $(<"$stamp") == "$want" ]]; then
        return 0
    fi
    say "fetching Kafka jars with Maven (deploy/kafka/pom.xml) into $KAFKA_LIBS"
    mkdir -p "$KAFKA_HOME"
    local tmp=$KAFKA_LIBS.tmp log=$KAFKA_HOME/mvn.log
    rm -rf "$tmp"
    if ! mvn -q -B -Dstyle.color=never -f "$KAFKA_POM" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$tmp" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        die "Maven could not fetch the Kafka jars (full log: $log)"
    fi
    rm -rf "$KAFKA_LIBS"
    mv "$tmp" "$KAFKA_LIBS"
    printf '%s\n' "$want" >"$stamp"
}

cmd_install() {
    ensure_packages
    ensure_kafka_libs
}

# ---------------------------------------------------------------------- kafka

kafka_pid() {
    local pid
    pid=$(read_pid "$KAFKA_PID") && pid_is "$pid" kafka.Kafka && printf '%s' "$pid"
}

# a short-lived JVM for Kafka's command-line tools (an array, so `timeout` can run it)
KAFKA_TOOL=(java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$SCRIPT_DIR/kafka/tools-log4j2.xml"
    -cp "$KAFKA_LIBS/*")
kafka_tool() { "${KAFKA_TOOL[@]}" "$@"; }

write_kafka_config() {
    mkdir -p "$KAFKA_LOG_DIRS" "$KAFKA_LOGS"
    cat >"$KAFKA_CONF" <<EOF
# Written by deploy/services.sh on every start; edit that script, not this file.
# Single node, KRaft combined mode (broker + controller), loopback only.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER

log.dirs=$KAFKA_LOG_DIRS
num.partitions=4
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
delete.topic.enable=true

offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0

# a dev/bench box: keep a day of data, not a week
log.retention.hours=24
EOF
}

kafka_format_if_needed() {
    [[ -f $KAFKA_LOG_DIRS/meta.properties ]] && return 0
    local cluster_id
    cluster_id=$(kafka_tool kafka.tools.StorageTool random-uuid) \
        || die "kafka: could not generate a cluster id"
    say "kafka: formatting $KAFKA_LOG_DIRS (cluster id $cluster_id)"
    kafka_tool kafka.tools.StorageTool format --ignore-formatted \
        -t "$cluster_id" -c "$KAFKA_CONF" >"$KAFKA_LOGS/format.log" 2>&1 || {
        cat "$KAFKA_LOGS/format.log" >&2
        die "kafka: formatting the storage failed"
    }
}

kafka_start() {
    local pid
    if pid=$(kafka_pid); then
        say "kafka: already running (pid $pid) on $KAFKA_BOOTSTRAP"
        return 0
    fi
    write_kafka_config
    kafka_format_if_needed
    local out=$KAFKA_LOGS/kafka.out
    say "kafka: starting on $KAFKA_BOOTSTRAP (log $KAFKA_LOGS/server.log)"
    # setsid: detach from the caller's terminal and process group
    (
        cd "$KAFKA_HOME"
        # shellcheck disable=SC2086  # KAFKA_HEAP_OPTS is a list of JVM flags
        exec setsid java $KAFKA_HEAP_OPTS -server \
            -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
            -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
            -Dkafka.logs.dir="$KAFKA_LOGS" \
            -Dlog4j2.configurationFile="$SCRIPT_DIR/kafka/log4j2.xml" \
            -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_CONF"
    ) >>"$out" 2>&1 </dev/null 9>&- &
    printf '%s\n' "$!" >"$KAFKA_PID"
}

kafka_fail() {
    {
        printf '[services] kafka: %s; last lines of the logs:\n' "$1"
        tail -n 20 "$KAFKA_LOGS/kafka.out" 2>/dev/null
        tail -n 30 "$KAFKA_LOGS/server.log" 2>/dev/null
    } >&2
    exit 1
}

kafka_wait() {
    local pid end=$((SECONDS + TIMEOUT))
    pid=$(read_pid "$KAFKA_PID")
    while ! port_open "$KAFKA_PORT"; do
        pid_alive "$pid" || kafka_fail "the broker exited during startup"
        (( SECONDS < end )) || kafka_fail "port $KAFKA_PORT not open after ${TIMEOUT}s"
        sleep 0.25
    done
    # the port is open: now a real metadata request
    until timeout 30 "${KAFKA_TOOL[@]}" org.apache.kafka.tools.TopicCommand \
        --bootstrap-server "$KAFKA_BOOTSTRAP" --list >/dev/null 2>&1; do
        pid_alive "$pid" || kafka_fail "the broker exited during startup"
        (( SECONDS < end )) || kafka_fail "no metadata answer after ${TIMEOUT}s"
        sleep 0.5
    done
    say "kafka: ready (pid $pid)"
}

kafka_stop_begin() {
    local pid
    pid=$(kafka_pid) || { rm -f "$KAFKA_PID"; return 0; }
    say "kafka: stopping (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
}

kafka_stop_end() {
    local pid
    pid=$(read_pid "$KAFKA_PID") || return 0
    if ! wait_gone "$pid" 60; then
        warn "kafka: pid $pid did not stop in 60s, killing it"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 10 || die "kafka: pid $pid will not die"
    fi
    rm -f "$KAFKA_PID"
}

# ---------------------------------------------------------------------- postgres

pg_pid() {
    local pid
    pid=$(read_pid "$PG_DATA/postmaster.pid" 2>/dev/null) && pid_is "$pid" postgres && printf '%s' "$pid"
}

# root runs the cluster as `postgres`: that user must own the folders and be able to
# traverse every folder above them (a clone under /root, say, is not traversable).
pg_prepare_dirs() {
    mkdir -p "$PG_DATA" "$PG_RUN" "$PG_SOCKET_DIR"
    chmod 700 "$PG_DATA"
    is_root || return 0
    local d
    for d in "$PG_DATA" "$PG_RUN" "$PG_SOCKET_DIR"; do
        [[ $(stat -c %U "$d") == postgres ]] || chown -R postgres:postgres "$d"
    done
    if ! runuser -u postgres -- test -x "$PG_DATA"; then
        # from the top down, so that each test sees its parents already fixed
        local parts=() path=
        IFS=/ read -ra parts <<<"${DATA_DIR#/}"
        for d in "${parts[@]}"; do
            path+=/$d
            if ! runuser -u postgres -- test -x "$path"; then
                say "postgres: letting the postgres user traverse $path (chmod o+x)"
                chmod o+x "$path"
            fi
        done
        runuser -u postgres -- test -x "$PG_DATA" \
            || die "postgres: the postgres user cannot reach $PG_DATA; set METRICX_DATA_DIR elsewhere"
    fi
}

# TimescaleDB is preloaded whenever its files are installed in this PostgreSQL
# (`make setup` builds them: deploy/timescaledb.sh).  Without the preload CREATE EXTENSION
# fails ("must be preloaded") and metricx uses plain PostgreSQL in new databases.
timescaledb_installed() {
    local libdir sharedir
    libdir=$("$POSTGRES_BIN/pg_config" --pkglibdir 2>/dev/null) || return 1
    sharedir=$("$POSTGRES_BIN/pg_config" --sharedir 2>/dev/null) || return 1
    [[ -f $libdir/timescaledb.so && -f $sharedir/extension/timescaledb.control ]]
}

# What TimescaleDB needs: the preload; background workers for its scheduler (one per
# database that uses the extension, while that database exists) and its jobs (refresh,
# compression, retention); no telemetry (no network at run time).  max_worker_processes
# covers them, the launcher and parallel query.
pg_timescaledb_config() {
    if ! timescaledb_installed; then
        printf '# TimescaleDB is not installed (make setup builds it): plain PostgreSQL\n'
        return 0
    fi
    local workers=$PG_TS_WORKERS
    cat <<EOF
shared_preload_libraries = 'timescaledb'
timescaledb.max_background_workers = $workers
timescaledb.telemetry_level = off
max_parallel_workers = 4
max_worker_processes = $((workers + 4 + 2))
EOF
}

pg_write_config() {
    local conf=$PG_DATA/metricx.conf
    cat >"$conf" <<EOF
# Written by deploy/services.sh on every start; edit that script, not this file.
listen_addresses = '$HOST'
port = $POSTGRES_PORT
unix_socket_directories = '$PG_SOCKET_DIR'
max_connections = 200
shared_buffers = 256MB
password_encryption = scram-sha-256
timezone = 'UTC'
log_timezone = 'UTC'
logging_collector = off
$(pg_timescaledb_config)
EOF
    ! is_root || chown postgres:postgres "$conf"
    grep -q "^include = 'metricx.conf'" "$PG_DATA/postgresql.conf" \
        || printf "\ninclude = 'metricx.conf'\n" >>"$PG_DATA/postgresql.conf"
}

pg_init_if_needed() {
    [[ -f $PG_DATA/PG_VERSION ]] && return 0
    say "postgres: initdb $PG_DATA"
    as_pg "$POSTGRES_BIN/initdb" -D "$PG_DATA" -U postgres --encoding=UTF8 --no-locale \
        --auth=trust >"$PG_RUN/initdb.log" 2>&1 || {
        cat "$PG_RUN/initdb.log" >&2
        die "postgres: initdb failed"
    }
    # the socket (used by this script, as the superuser) is trusted; TCP needs a password
    cat >"$PG_DATA/pg_hba.conf" <<'EOF'
# Written by deploy/services.sh at initdb time.
# TYPE  DATABASE  USER  ADDRESS        METHOD
local   all       all                  trust
host    all       all   127.0.0.1/32   scram-sha-256
host    all       all   ::1/128        scram-sha-256
EOF
    ! is_root || chown postgres:postgres "$PG_DATA/pg_hba.conf"
}

pg_ensure_db() {
    pg_sql >/dev/null <<SQL
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER') THEN
    CREATE ROLE $DB_USER LOGIN SUPERUSER PASSWORD '$DB_PASSWORD';
  END IF;
END
\$\$;
SELECT 'CREATE DATABASE $DB_NAME OWNER $DB_USER'
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$DB_NAME')\gexec
SQL
}

# psql over the socket as the superuser (trusted there)
pg_sql() {
    PGOPTIONS='' "$POSTGRES_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$PG_SOCKET_DIR" \
        -p "$POSTGRES_PORT" -U postgres -d postgres "$@"
}

# Why a running server must restart to use the TimescaleDB that is installed now (it
# was started before the extension was installed, or before it was rebuilt): the
# preload is read, and the library loaded, only at start.  Nothing when it need not.
pg_restart_reason() {
    timescaledb_installed || return 1
    local libs lib
    libs=$(pg_sql -c 'SHOW shared_preload_libraries' 2>/dev/null) || return 1
    if [[ ,${libs// /}, != *,timescaledb,* ]]; then
        echo "TimescaleDB was installed after it started"
        return 0
    fi
    for lib in "$("$POSTGRES_BIN/pg_config" --pkglibdir)"/timescaledb*.so; do
        if [[ $lib -nt $PG_DATA/postmaster.pid ]]; then
            echo "TimescaleDB was rebuilt after it started"
            return 0
        fi
    done
    return 1
}

pg_start() {
    local pid
    local why
    if pid=$(pg_pid) && why=$(pg_restart_reason); then
        say "postgres: running (pid $pid), but $why: restarting it"
        pg_write_config
        as_pg "$POSTGRES_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -m fast -w -t "$TIMEOUT" restart >/dev/null 9>&- || {
            tail -n 30 "$PG_LOG" >&2
            die "postgres: pg_ctl restart failed"
        }
    elif pid=$(pg_pid); then
        say "postgres: already running (pid $pid) on $HOST:$POSTGRES_PORT"
    else
        pg_prepare_dirs
        pg_init_if_needed
        pg_write_config
        say "postgres: starting on $HOST:$POSTGRES_PORT (log $PG_LOG)"
        as_pg "$POSTGRES_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$TIMEOUT" start >/dev/null 9>&- || {
            tail -n 30 "$PG_LOG" >&2
            die "postgres: pg_ctl start failed"
        }
    fi
    "$POSTGRES_BIN/pg_isready" -q -h "$HOST" -p "$POSTGRES_PORT" -t "$TIMEOUT" \
        || die "postgres: not accepting connections on $HOST:$POSTGRES_PORT"
    pg_ensure_db || die "postgres: could not create role/database $DB_NAME"
    local ts
    ts=$(pg_sql -c "SELECT CASE WHEN current_setting('shared_preload_libraries') ~ 'timescaledb' THEN 'TimescaleDB ' || default_version ELSE 'plain PostgreSQL: TimescaleDB is not installed (make setup)' END FROM pg_available_extensions RIGHT JOIN (SELECT 1) one ON name = 'timescaledb'") || ts=unknown
    say "postgres: ready (pid $(pg_pid)), ${ts:-plain PostgreSQL}"
}

pg_stop() {
    local pid
    pid=$(pg_pid) || return 0
    say "postgres: stopping (pid $pid)"
    as_pg "$POSTGRES_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null \
        || as_pg "$POSTGRES_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w -t 30 stop >/dev/null \
        || true
    wait_gone "$pid" 10 || { kill -KILL "$pid" 2>/dev/null || true; wait_gone "$pid" 10; } \
        || die "postgres: pid $pid will not die"
}

# ---------------------------------------------------------------------- redis

redis_pid() {
    local pid
    pid=$(read_pid "$REDIS_PID") && pid_is "$pid" redis-server && printf '%s' "$pid"
}

redis_start() {
    local pid
    if pid=$(redis_pid); then
        say "redis: already running (pid $pid) on $HOST:$REDIS_PORT"
        return 0
    fi
    mkdir -p "$REDIS_DIR"
    rm -f "$REDIS_PID"
    say "redis: starting on $HOST:$REDIS_PORT (log $REDIS_LOG)"
    # a cache for the live dashboard: no snapshots, no append-only file
    (cd "$REDIS_DIR" && redis-server --bind "$HOST" --port "$REDIS_PORT" --dir "$REDIS_DIR" \
        --daemonize yes --pidfile "$REDIS_PID" --logfile "$REDIS_LOG" \
        --appendonly no --save '' --protected-mode yes 9>&-) \
        || { tail -n 20 "$REDIS_LOG" >&2; die "redis: redis-server failed to start"; }
    local end=$((SECONDS + TIMEOUT))
    until [[ $(redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; do
        (( SECONDS < end )) || { tail -n 20 "$REDIS_LOG" >&2; die "redis: no PONG after ${TIMEOUT}s"; }
        sleep 0.1
    done
    until pid=$(redis_pid); do
        (( SECONDS < end )) || die "redis: answers but wrote no pid file $REDIS_PID"
        sleep 0.1
    done
    say "redis: ready (pid $pid)"
}

redis_stop() {
    local pid
    pid=$(redis_pid) || { rm -f "$REDIS_PID"; return 0; }
    say "redis: stopping (pid $pid)"
    redis-cli -h "$HOST" -p "$REDIS_PORT" shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" 30; then
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 10 || die "redis: pid $pid will not die"
    fi
    rm -f "$REDIS_PID"
}

# ---------------------------------------------------------------------- commands

cmd_up() {
    local t0=$SECONDS
    [[ $PG_TS_WORKERS =~ ^[1-9][0-9]*$ ]] || die "METRICX_PG_TS_WORKERS must be a positive integer, got '$PG_TS_WORKERS'"
    ensure_packages
    ensure_kafka_libs
    # check every port before starting anything
    kafka_pid >/dev/null || {
        ensure_port_free "$KAFKA_PORT" kafka KAFKA_PORT
        ensure_port_free "$KAFKA_CONTROLLER_PORT" kafka KAFKA_CONTROLLER_PORT
    }
    pg_pid >/dev/null || ensure_port_free "$POSTGRES_PORT" postgres POSTGRES_PORT
    redis_pid >/dev/null || ensure_port_free "$REDIS_PORT" redis REDIS_PORT
    # Kafka's JVM boots while PostgreSQL and Redis start
    kafka_start
    pg_start
    redis_start
    kafka_wait
    say "all services up in $((SECONDS - t0))s"
    cmd_env | sed 's/^/[services]   /'
}

cmd_down() {
    kafka_stop_begin
    pg_stop
    redis_stop
    kafka_stop_end
    local p
    for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$POSTGRES_PORT" "$REDIS_PORT"; do
        local who
        if who=$(port_listener "$p"); then
            warn "port $p is still in use ($who), not by a service of ours"
        fi
    done
    say "all services down"
}

status_line() {  # NAME PID PORT
    local who
    if [[ -n $2 ]]; then
        printf '%-9s running  pid %-8s %s:%s\n' "$1" "$2" "$HOST" "$3"
    elif who=$(port_listener "$3"); then
        printf '%-9s stopped  (port %s is taken by another process: %s)\n' "$1" "$3" "$who"
    else
        printf '%-9s stopped\n' "$1"
    fi
}

cmd_status() {
    local k p r
    k=$(kafka_pid) || k=
    p=$(pg_pid) || p=
    r=$(redis_pid) || r=
    status_line kafka "$k" "$KAFKA_PORT"
    status_line postgres "$p" "$POSTGRES_PORT"
    status_line redis "$r" "$REDIS_PORT"
    [[ -n $k && -n $p && -n $r ]] || return 3
}

# one service: SERVICE start|stop|restart (the others are left alone)
cmd_one() {
    local action=$1 service=${2:-}
    case $service in
        kafka)
            [[ $action == start ]] || { kafka_stop_begin; kafka_stop_end; }
            [[ $action == stop ]] || {
                kafka_pid >/dev/null || {
                    ensure_port_free "$KAFKA_PORT" kafka KAFKA_PORT
                    ensure_port_free "$KAFKA_CONTROLLER_PORT" kafka KAFKA_CONTROLLER_PORT
                }
                kafka_start; kafka_wait; } ;;
        postgres)
            [[ $action == start ]] || pg_stop
            [[ $action == stop ]] || pg_start ;;
        redis)
            [[ $action == start ]] || redis_stop
            [[ $action == stop ]] || redis_start ;;
        *) die "usage: deploy/services.sh $action kafka|postgres|redis" ;;
    esac
}

cmd_create_topics() {
    # The topics, their partitions and sizes are listed once, in schemas/topics.py:
    # `metricx topics` creates them (and grows or aligns existing ones), so this script
    # keeps no list of its own (tests/schemas/test_topics.py checks it).
    [[ -x $REPO_ROOT/.venv/bin/python ]] || die "the Python environment is missing: run make python"
    port_open "$KAFKA_PORT" || die "kafka is not running on $KAFKA_BOOTSTRAP: run deploy/services.sh up"
    [[ $RAW_PARTITIONS =~ ^[1-9][0-9]*$ ]] || die "METRICX_RAW_PARTITIONS must be a positive integer"
    METRICX_KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP "$REPO_ROOT/.venv/bin/python" -m metricx.cli topics \
        --partitions "$RAW_PARTITIONS" || die "creating topics failed"
}

cmd_env() {
    cat <<EOF
METRICX_KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP
METRICX_DATABASE_URL=postgresql://$DB_USER:$DB_PASSWORD@$HOST:$POSTGRES_PORT/$DB_NAME
METRICX_REDIS_URL=redis://$HOST:$REDIS_PORT/0
EOF
}

usage() {
    sed -n '2,/^set -E/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
}

main() {
    local cmd=${1:-}
    case $cmd in
        install) with_lock; cmd_install ;;
        up) with_lock; cmd_up ;;
        down) with_lock; cmd_down ;;
        status) cmd_status ;;
        start|stop|restart) with_lock; ensure_packages; ensure_kafka_libs; cmd_one "$cmd" "${2:-}" ;;
        create-topics|topics) cmd_create_topics ;;
        env) cmd_env ;;
        -h|--help|help) usage ;;
        *) usage >&2; exit 2 ;;
    esac
}

main "$@"
