#!/usr/bin/env bash
# Runs Parley's load scenarios end to end: builds in release, starts a
# server pinned to core 0 on a fresh data dir (SQLite, or a fresh Postgres
# database with --postgres), runs every scenario with parley-load pinned to
# core 1, then the machine's ceiling (the same scenarios against
# parley-relay, a bare relay pinned like the server), collects their JSON
# lines and writes load-tests/RESULTS.md with the targets table on top.
#
#   load-tests/run.sh                  full-size run (takes a while: 19,000 accounts)
#   load-tests/run.sh --smoke          every scenario for a moment with tiny parameters;
#                                      exits non-zero if anything was lost (CI runs this)
#   load-tests/run.sh --postgres postgres://postgres:postgres@127.0.0.1:5432/postgres
#                                      use a fresh database on that server instead of SQLite;
#                                      writes load-tests/RESULTS-postgres.md
#   load-tests/run.sh --keep-data DIR  keep the server's data dir and the token cache in DIR
#                                      and reuse them next time (skips re-registering users)
#   load-tests/run.sh --port N         server port (default 18180; a cluster uses N, N+1, …)
#   load-tests/run.sh --repeats N      runs of each latency scenario (default 3; 1 to 9);
#                                      the report judges the median
#   load-tests/run.sh --relay-port N   the relay's port (default: server port + 10)
#   load-tests/run.sh --cluster 4 --engine redis|nats --postgres ADMIN_URL
#                                      several nodes on one fresh database and an engine
#                                      server of their own (on a free loopback port); runs
#                                      idle (60,000 sockets), pairs across nodes, fan-out
#                                      and broadcast, then the same on one plain node; writes
#                                      this engine's section of load-tests/RESULTS-cluster.md.
#                                      Also: --out FILE, --conns N (idle sockets, default
#                                      60000), --pairs-rate R (default 3000), --no-single
#                                      (skip the one-node comparison). --smoke --cluster 2 is
#                                      a quick check.
#   load-tests/run.sh --bin-dir DIR    use DIR/parley, DIR/parley-load and DIR/parley-relay
#                                      instead of building
#
# What it starts (server or nodes, relay, engine, load processes) is stopped
# on exit (by PID); nothing is left running.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

MODE=full
PG_ADMIN_URL=""
KEEP_DIR=""
PORT=18180
CLUSTER=""
ENGINE=""
OUT_MD=""
IDLE_CONNS=60000
REPEATS=3
PAIRS_RATE=3000
SINGLE=yes
BIN_DIR=""
RELAY_PORT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) MODE=smoke ;;
        --postgres) PG_ADMIN_URL="$2"; shift ;;
        --keep-data) KEEP_DIR="$2"; shift ;;
        --port) PORT="$2"; shift ;;
        --cluster) CLUSTER="$2"; shift ;;
        --engine) ENGINE="$2"; shift ;;
        --out) OUT_MD="$2"; shift ;;
        --conns) IDLE_CONNS="$2"; shift ;;
        --repeats) REPEATS="$2"; shift ;;
        --pairs-rate) PAIRS_RATE="$2"; shift ;;
        --no-single) SINGLE=no ;;
        --bin-dir) BIN_DIR="$2"; shift ;;
        --relay-port) RELAY_PORT="$2"; shift ;;
        -h|--help) sed -n '2,35p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

log() { printf '\n==> %s\n' "$*" >&2; }

if [ -n "$CLUSTER" ]; then
    case "$CLUSTER" in
        ''|*[!0-9]*) echo "run.sh: --cluster takes a number of nodes (2 or more)" >&2; exit 2 ;;
    esac
    if [ "$CLUSTER" -lt 2 ] || [ "$CLUSTER" -gt 8 ]; then
        echo "run.sh: --cluster takes 2 to 8 nodes" >&2
        exit 2
    fi
    if [ -z "$PG_ADMIN_URL" ]; then
        echo "run.sh: --cluster needs --postgres ADMIN_URL: the nodes of a cluster share one Postgres database (Parley refuses SQLite in cluster mode)" >&2
        exit 2
    fi
    ENGINE=${ENGINE:-redis}
    case "$ENGINE" in
        redis|nats) ;;
        *) echo "run.sh: --engine is redis or nats, not $ENGINE" >&2; exit 2 ;;
    esac
    for n in "$IDLE_CONNS" "$PAIRS_RATE"; do
        case "$n" in ''|*[!0-9]*) echo "run.sh: --conns and --pairs-rate take whole numbers" >&2; exit 2 ;; esac
    done
    if [ "$IDLE_CONNS" -gt 90000 ]; then
        echo "run.sh: --conns at most 90000" >&2
        exit 2
    fi
elif [ -n "$ENGINE" ] || [ -n "$OUT_MD" ] || [ "$SINGLE" = no ]; then
    echo "run.sh: --engine, --out and --no-single go with --cluster N" >&2
    exit 2
fi
for n in "$REPEATS" "$PORT" "${RELAY_PORT:-0}"; do
    case "$n" in ''|*[!0-9]*) echo "run.sh: --repeats, --port and --relay-port take whole numbers" >&2; exit 2 ;; esac
done
RELAY_PORT=${RELAY_PORT:-$((PORT + 10))}
if [ "$REPEATS" -lt 1 ] || [ "$REPEATS" -gt 9 ]; then
    echo "run.sh: --repeats takes 1 to 9" >&2
    exit 2
fi

STAMP=$(date -u +%Y%m%d-%H%M%S)
OUT="$ROOT/target/parley-load/run-$MODE${CLUSTER:+-cluster$CLUSTER-$ENGINE}-$STAMP"
mkdir -p "$OUT"
if [ -n "$KEEP_DIR" ]; then
    mkdir -p "$KEEP_DIR"
    DATA=$(cd "$KEEP_DIR" && pwd)
else
    DATA="$OUT/data"
fi
ACCOUNTS="$DATA/load-accounts.json"
STATE="$DATA/load-state.json"
RUNS="$OUT/runs.jsonl"
: > "$RUNS"
if [ "$MODE" = smoke ]; then
    RESULTS_MD="$OUT/RESULTS.md"
elif [ -n "$CLUSTER" ]; then
    RESULTS_MD="$OUT/RESULTS.md"
    CLUSTER_MD=${OUT_MD:-$ROOT/load-tests/RESULTS-cluster.md}
elif [ -n "$PG_ADMIN_URL" ]; then
    RESULTS_MD="$ROOT/load-tests/RESULTS-postgres.md"
else
    RESULTS_MD="$ROOT/load-tests/RESULTS.md"
fi

SERVER_PIN=()
TOOL_PIN=()
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
    SERVER_PIN=(taskset -c 0)
    TOOL_PIN=(taskset -c 1)
else
    echo "run.sh: taskset missing or fewer than 2 CPUs: not pinning" >&2
fi

SERVER_PID=""
RELAY_PID=""
BACKGROUND_PID=""
PG_DB=""
# Where scenarios send their load, and whose CPU/memory they read: the one
# server, or every node of the cluster (comma-separated).
URLS=""
PIDS=""
NODE_PIDS=()
ENGINE_PID=""
cleanup() {
    local status=$?
    if [ -n "$BACKGROUND_PID" ] && kill -0 "$BACKGROUND_PID" 2>/dev/null; then
        kill "$BACKGROUND_PID" 2>/dev/null || true
        wait "$BACKGROUND_PID" 2>/dev/null || true
    fi
    stop_server
    stop_relay
    stop_nodes
    stop_pid "$ENGINE_PID" "the $ENGINE server"
    ENGINE_PID=""
    if [ -n "$PG_DB" ] && [ -z "$KEEP_DIR" ]; then
        psql "$PG_ADMIN_URL" -q -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Stops one process this script started: TERM, up to 15 s, then KILL.
#   stop_pid PID WHAT
stop_pid() {
    local pid=$1 what=$2
    [ -n "$pid" ] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 150); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "run.sh: $what $pid did not stop in 15 s; killing it" >&2
            kill -9 "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}

stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    stop_pid "$SERVER_PID" server
    SERVER_PID=""
}

stop_relay() {
    [ -n "$RELAY_PID" ] || return 0
    stop_pid "$RELAY_PID" relay
    RELAY_PID=""
}

stop_nodes() {
    local pid
    for pid in "${NODE_PIDS[@]}"; do
        stop_pid "$pid" node
    done
    NODE_PIDS=()
}

DB_ENV=()
if [ -n "$PG_ADMIN_URL" ]; then
    PG_DB="parley_load_$(date -u +%Y%m%d%H%M%S)_$$"
    if [ -n "$KEEP_DIR" ] && [ -f "$DATA/postgres-database" ]; then
        PG_DB=$(cat "$DATA/postgres-database")
    else
        log "creating Postgres database $PG_DB"
        psql "$PG_ADMIN_URL" -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE $PG_DB" >/dev/null
        [ -n "$KEEP_DIR" ] && echo "$PG_DB" > "$DATA/postgres-database"
    fi
    DB_ENV=(PARLEY_DATABASE_URL="${PG_ADMIN_URL%/*}/$PG_DB")
    BACKEND="postgres"
else
    BACKEND="sqlite"
fi

if [ -n "$BIN_DIR" ]; then
    SERVER_BIN="$BIN_DIR/parley"
    LOAD_BIN="$BIN_DIR/parley-load"
    RELAY_BIN="$BIN_DIR/parley-relay"
    if [ ! -x "$SERVER_BIN" ] || [ ! -x "$LOAD_BIN" ] || [ ! -x "$RELAY_BIN" ]; then
        echo "run.sh: --bin-dir $BIN_DIR holds no parley, parley-load and parley-relay binaries" >&2
        exit 2
    fi
    log "using the binaries in $BIN_DIR (not building)"
else
    log "building (release)"
    cargo build --release -p parley -p parley-load
    SERVER_BIN="$ROOT/target/release/parley"
    LOAD_BIN="$ROOT/target/release/parley-load"
    RELAY_BIN="$ROOT/target/release/parley-relay"
fi

SECRET_ENV=()
if [ -n "$CLUSTER" ]; then
    # Every node (and the one-node comparison) signs and checks tokens with one secret.
    if [ -n "$KEEP_DIR" ] && [ -f "$DATA/jwt-secret" ]; then
        JWT_SECRET=$(cat "$DATA/jwt-secret")
    else
        JWT_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
        mkdir -p "$DATA"
        [ -n "$KEEP_DIR" ] && echo "$JWT_SECRET" > "$DATA/jwt-secret"
    fi
    SECRET_ENV=(PARLEY_JWT_SECRET="$JWT_SECRET")
fi

if port_open "$PORT"; then
    echo "run.sh: something already listens on 127.0.0.1:$PORT; pick another with --port" >&2
    exit 2
fi

start_server() {
    env PARLEY_DATA_DIR="$DATA" PARLEY_BIND="127.0.0.1:$PORT" PARLEY_LOG=warn \
        PARLEY_RATE_LIMITS=off "${DB_ENV[@]}" "${SECRET_ENV[@]}" \
        "${SERVER_PIN[@]}" "$SERVER_BIN" >>"$OUT/server.log" 2>&1 &
    SERVER_PID=$!
    URLS="http://127.0.0.1:$PORT"
    PIDS=$SERVER_PID
    for _ in $(seq 1 300); do
        port_open "$PORT" && return 0
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "run.sh: the server exited at start-up; its log:" >&2
            tail -n 30 "$OUT/server.log" >&2
            SERVER_PID=""
            exit 1
        fi
        sleep 0.1
    done
    echo "run.sh: the server did not listen on port $PORT within 30 s" >&2
    exit 1
}

# The ceiling: parley-relay (Parley's protocol on Parley's stack, storing
# nothing, no password hashing), pinned like the server. It exits by itself
# after two hours should this script be killed before it can stop it.
start_relay() {
    if port_open "$RELAY_PORT"; then
        echo "run.sh: something already listens on 127.0.0.1:$RELAY_PORT; pick another with --relay-port" >&2
        exit 2
    fi
    "${SERVER_PIN[@]}" "$RELAY_BIN" --bind "127.0.0.1:$RELAY_PORT" --max-secs 7200 \
        >>"$OUT/relay.log" 2>&1 &
    RELAY_PID=$!
    URLS="http://127.0.0.1:$RELAY_PORT"
    PIDS=$RELAY_PID
    for _ in $(seq 1 100); do
        port_open "$RELAY_PORT" && return 0
        if ! kill -0 "$RELAY_PID" 2>/dev/null; then
            echo "run.sh: the relay exited at start-up; its log:" >&2
            tail -n 20 "$OUT/relay.log" >&2
            RELAY_PID=""
            exit 1
        fi
        sleep 0.1
    done
    echo "run.sh: the relay did not listen on port $RELAY_PORT within 10 s" >&2
    exit 1
}

# --- a cluster: its engine and its nodes ------------------------------------

ENGINE_URL=""
ENGINE_VERSION=""
# Starts this run's own Redis or NATS server on the first free loopback port
# from 26379 / 24222 (never the machine's own on 6379 / 4222).
start_engine() {
    local port
    if [ "$ENGINE" = redis ]; then port=26379; else port=24222; fi
    for _ in $(seq 1 200); do
        port_open "$port" || break
        port=$((port + 1))
    done
    if port_open "$port"; then
        echo "run.sh: no free port for the $ENGINE server" >&2
        exit 2
    fi
    if [ "$ENGINE" = redis ]; then
        command -v redis-server >/dev/null || { echo "run.sh: redis-server is not installed" >&2; exit 2; }
        ENGINE_VERSION=$(redis-server --version | head -n 1)
        "${SERVER_PIN[@]}" redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
            >>"$OUT/engine.log" 2>&1 &
        ENGINE_URL="redis://127.0.0.1:$port"
    else
        command -v nats-server >/dev/null || { echo "run.sh: nats-server is not installed" >&2; exit 2; }
        ENGINE_VERSION=$(nats-server --version | head -n 1)
        "${SERVER_PIN[@]}" nats-server -a 127.0.0.1 -p "$port" >>"$OUT/engine.log" 2>&1 &
        ENGINE_URL="nats://127.0.0.1:$port"
    fi
    ENGINE_PID=$!
    for _ in $(seq 1 100); do
        if ! kill -0 "$ENGINE_PID" 2>/dev/null; then
            echo "run.sh: the $ENGINE server exited at start-up; its log:" >&2
            tail -n 20 "$OUT/engine.log" >&2
            ENGINE_PID=""
            exit 1
        fi
        port_open "$port" && return 0
        sleep 0.1
    done
    echo "run.sh: the $ENGINE server did not listen on port $port within 10 s" >&2
    exit 1
}

# Starts COUNT nodes on ports PORT, PORT+1, … sharing the database, data
# dir, secret and engine; pinned to the server core unless PIN is "no".
#   start_nodes COUNT PIN
start_nodes() {
    local count=$1 pin=$2 k port pin_cmd=() urls=()
    [ "$pin" = no ] || pin_cmd=("${SERVER_PIN[@]}")
    for k in $(seq 0 $((count - 1))); do
        port=$((PORT + k))
        if port_open "$port"; then
            echo "run.sh: something already listens on 127.0.0.1:$port; pick another base with --port" >&2
            exit 2
        fi
        env PARLEY_DATA_DIR="$DATA" PARLEY_BIND="127.0.0.1:$port" PARLEY_LOG=warn \
            PARLEY_RATE_LIMITS=off PARLEY_CLUSTER="$ENGINE_URL" "${DB_ENV[@]}" "${SECRET_ENV[@]}" \
            "${pin_cmd[@]}" "$SERVER_BIN" >>"$OUT/node-$k.log" 2>&1 &
        NODE_PIDS+=("$!")
        urls+=("http://127.0.0.1:$port")
    done
    for k in $(seq 0 $((count - 1))); do
        port=$((PORT + k))
        for _ in $(seq 1 300); do
            port_open "$port" && break
            if ! kill -0 "${NODE_PIDS[$k]}" 2>/dev/null; then
                echo "run.sh: node $k exited at start-up; its log:" >&2
                tail -n 30 "$OUT/node-$k.log" >&2
                exit 1
            fi
            sleep 0.1
        done
        if ! port_open "$port"; then
            echo "run.sh: node $k did not listen on port $port within 30 s" >&2
            exit 1
        fi
    done
    URLS=$(IFS=,; echo "${urls[*]}")
    PIDS=$(IFS=,; echo "${NODE_PIDS[*]}")
}

# Makes load users 1..N-1 as copies of load_00000 (its argon2 hash) in SQL:
# 60,000 registrations through the API would cost ~30 min of argon2 on one
# core; the logins that follow still verify every password for real.
#   clone_users N
clone_users() {
    local n=$1
    psql "${PG_ADMIN_URL%/*}/$PG_DB" -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
INSERT INTO users (username, username_key, email, email_key, password_hash, created_at)
SELECT name, name, name || '@load.example', name || '@load.example', t.password_hash, t.created_at
FROM (SELECT 'load_' || CASE WHEN i < 100000 THEN lpad(i::text, 5, '0') ELSE i::text END AS name
      FROM generate_series(1, $n - 1) AS i) AS names,
     (SELECT password_hash, created_at FROM users WHERE username_key = 'load_00000') AS t
ON CONFLICT DO NOTHING;
SQL
}

# The latency scenarios, REPEATS times each, labelled PREFIX-…-rK.
#   latency_runs PREFIX
latency_runs() {
    local prefix=$1 r
    for r in $(seq 1 "$REPEATS"); do
        scenario "$prefix-pairs-$PAIRS_RATE-r$r" pairs --pairs 500 --rate "$PAIRS_RATE" --duration 20 --quiet
    done
    for r in $(seq 1 "$REPEATS"); do
        scenario "$prefix-fanout-20x10-r$r" fanout --groups 20 --members 10 --rate 500 --duration 20 --quiet
    done
    scenario "$prefix-broadcast-2000" broadcast --members 2000 --repeats 5 --quiet
}

cluster_run() {
    log "starting $ENGINE (pinned like the nodes)"
    start_engine
    log "engine: $ENGINE_URL ($ENGINE_VERSION)"
    if [ "$MODE" = smoke ]; then
        start_nodes "$CLUSTER" yes
        log "$CLUSTER nodes: $URLS (PIDs $PIDS)"
        scenario smoke smoke --round-trips 3
        scenario idle idle --conns 20 --hold 1 --procs 2
        scenario pairs pairs --pairs 5 --rate 200 --duration 2
        scenario fanout fanout --groups 2 --members 4 --rate 100 --duration 2
        scenario broadcast broadcast --members 20 --repeats 3
        stop_nodes
        return 0
    fi
    # Accounts: one registered through the API, the rest copied in SQL, all
    # logged in (argon2) with the nodes unpinned so both cores hash; then
    # fresh, pinned nodes so idle's memory figures don't carry that heap.
    start_nodes "$CLUSTER" no
    log "$CLUSTER nodes (unpinned, for the logins): $URLS"
    scenario prepare-first prepare --users 1
    log "copying load_00000 into users 1..$((IDLE_CONNS - 1)) (SQL)"
    clone_users "$IDLE_CONNS"
    scenario prepare prepare --users "$IDLE_CONNS" --existing --auth-concurrency 32
    stop_nodes
    start_nodes "$CLUSTER" yes
    log "$CLUSTER nodes: $URLS (PIDs $PIDS)"
    local procs=$(((IDLE_CONNS + 14999) / 15000))
    scenario "idle-$IDLE_CONNS" idle --conns "$IDLE_CONNS" --procs "$procs" --hold 30
    latency_runs cluster
    stop_nodes
    if [ "$SINGLE" = yes ]; then
        log "one plain node (no --cluster) on the same database, for comparison"
        start_server
        latency_runs single
        stop_server
    fi
}

# This engine's section of RESULTS-cluster.md (any earlier one replaced).
write_cluster_section() {
    local begin="<!-- run.sh --cluster: $ENGINE begin -->" end="<!-- run.sh --cluster: $ENGINE end -->"
    local section="$OUT/section.md"
    {
        echo "$begin"
        echo "## $CLUSTER nodes, $ENGINE"
        echo
        echo "Latency runs, median of $REPEATS (delivery and ack latency in ms; \`cluster-\` = $CLUSTER nodes, every message crossing nodes in pairs; \`single-\` = one node without --cluster on the same database):"
        echo
        echo "| runs | n | ok | delivered/s | delivery p50 | delivery p99 | ack p50 | ack p99 |"
        echo "|---|---|---|---|---|---|---|---|"
        jq -s -r '
            def med(f): (map(f) | map(select(. != null)) | sort
                | if length == 0 then "" else .[(length - 1) / 2 | floor] end);
            [.[] | select(.result != null and (.label | test("-r[0-9]+$")))]
            | group_by(.label | sub("-r[0-9]+$"; ""))
            | .[]
            | "| \(.[0].label | sub("-r[0-9]+$"; "")) | \(length) | \(map(select(.result.ok == true)) | length) | \(med(.result.delivered_per_sec)) | \(med(.result.delivery_latency_ms.p50)) | \(med(.result.delivery_latency_ms.p99)) | \(med(.result.ack_latency_ms.p50)) | \(med(.result.ack_latency_ms.p99)) |"
        ' "$RUNS"
        echo
        sed -e '1,/^Written by/d' -e 's/^#/##/' "$RESULTS_MD"
        echo
        echo "$end"
    } >"$section"
    if [ ! -f "$CLUSTER_MD" ]; then
        {
            echo "# Parley cluster load-test results"
            echo
            echo "Sections written by \`load-tests/run.sh --cluster N --engine E --postgres URL\`, one per engine;"
            echo "\`load-tests/README.md\` (\"Several nodes\") explains the figures."
            echo
        } >"$CLUSTER_MD"
    fi
    awk -v begin="$begin" -v end="$end" '
        $0 == begin { skip = 1; next }
        $0 == end { skip = 0; next }
        !skip { print }
    ' "$CLUSTER_MD" >"$OUT/cluster-md.tmp"
    cat "$OUT/cluster-md.tmp" "$section" >"$CLUSTER_MD"
}

if [ -z "$CLUSTER" ]; then
    log "starting the server ($BACKEND, data in $DATA, port $PORT)"
    start_server
fi

FAILED=()
# One scenario: run it pinned, keep its JSON line, note a failure.
#   scenario LABEL ARGS...
scenario() {
    local label=$1
    shift
    local command="parley-load $*"
    log "$label: $command"
    local rc=0
    "${TOOL_PIN[@]}" "$LOAD_BIN" --url "$URLS" --server-pid "$PIDS" \
        --json --accounts "$ACCOUNTS" --state "$STATE" "$@" >"$OUT/$label.json" &
    # In the background so an interrupt's cleanup can stop it by PID.
    BACKGROUND_PID=$!
    wait "$BACKGROUND_PID" || rc=$?
    BACKGROUND_PID=""
    record "$label" "$command" "$rc" "$OUT/$label.json"
    return 0
}

# Appends {"label","command","exit","result"} to runs.jsonl.
record() {
    local label=$1 command=$2 rc=$3 file=$4
    local result
    result=$(grep '^{' "$file" | tail -n 1 || true)
    [ -n "$result" ] || result=null
    command=${command//\\/\\\\}
    command=${command//\"/\\\"}
    printf '{"label":"%s","command":"%s","exit":%s,"result":%s}\n' \
        "$label" "$command" "$rc" "$result" >>"$RUNS"
    if [ "$rc" -ne 0 ]; then
        FAILED+=("$label")
    fi
}

# pairs and login side by side: pairs in the background, login after a delay.
#   pairs_with_login LABEL DELAY "PAIRS ARGS" "LOGIN ARGS"
pairs_with_login() {
    local label=$1 delay=$2 pairs_args=$3 login_args=$4
    log "$label: parley-load $pairs_args  +  parley-load $login_args"
    local rc=0 login_rc=0
    # shellcheck disable=SC2086
    "${TOOL_PIN[@]}" "$LOAD_BIN" --url "$URLS" --server-pid "$PIDS" \
        --json --quiet --accounts "$ACCOUNTS" --state "$STATE" $pairs_args \
        >"$OUT/$label-pairs.json" &
    BACKGROUND_PID=$!
    sleep "$delay"
    # shellcheck disable=SC2086
    "${TOOL_PIN[@]}" "$LOAD_BIN" --url "$URLS" --server-pid "$PIDS" \
        --json --accounts "$ACCOUNTS" --state "$STATE" $login_args \
        >"$OUT/$label-login.json" || login_rc=$?
    wait "$BACKGROUND_PID" || rc=$?
    BACKGROUND_PID=""
    record "$label" "parley-load $pairs_args (with logins alongside)" "$rc" "$OUT/$label-pairs.json"
    record "login-during-$label" "parley-load $login_args (during $label)" "$login_rc" "$OUT/$label-login.json"
}

# Steps the pairs rate up (or down) from START until the server no longer
# sustains it (at most MAX_STEPS steps, default 8); records every step as
# PREFIX-RATE, and the highest sustained rate in $OUT/PREFIX.best.
#   pairs_ladder PAIRS START DURATION PREFIX [MAX_STEPS]
pairs_ladder() {
    local pairs=$1 start=$2 duration=$3 prefix=$4 max_steps=${5:-8}
    local rate=$start best="" step=0 direction=""
    while [ "$step" -lt "$max_steps" ]; do
        step=$((step + 1))
        local label="$prefix-$rate"
        scenario "$label" pairs --pairs "$pairs" --rate "$rate" --duration "$duration" --quiet
        if grep -q '"sustained":true' "$OUT/$label.json"; then
            best=$rate
            [ "$direction" = down ] && break
            direction=up
            rate=$(awk -v r="$rate" 'BEGIN { printf "%d", r * 1.5 }')
        else
            [ "$direction" = up ] && break
            direction=down
            rate=$(awk -v r="$rate" 'BEGIN { printf "%d", r * 0.6 }')
            [ "$rate" -lt 100 ] && break
        fi
    done
    echo "${best:-none}" >"$OUT/$prefix.best"
    # A step that was not sustained is the point of the ladder, not a failure.
    local kept=()
    for f in "${FAILED[@]}"; do
        case "$f" in "$prefix"-*) ;; *) kept+=("$f") ;; esac
    done
    FAILED=("${kept[@]}")
}

# The machine's ceiling: the same scenarios against parley-relay on the
# server's core (the server is stopped by then), with accounts and state
# files of their own; every run is labelled relay-….
ceiling_runs() {
    local saved_accounts=$ACCOUNTS saved_state=$STATE r
    ACCOUNTS="$OUT/relay-accounts.json"
    STATE="$OUT/relay-state.json"
    log "starting parley-relay (the ceiling: no storage, no hashing) on port $RELAY_PORT"
    start_relay
    if [ "$MODE" = smoke ]; then
        scenario relay-pairs-15k-r1 pairs --pairs 5 --rate 200 --duration 2
        pairs_ladder 5 200 1 relay-pairs-ladder-r1 2
        scenario relay-fanout-50x20-7000-r1 fanout --groups 2 --members 4 --rate 100 --duration 2
        scenario relay-broadcast-10000-r1 broadcast --members 20 --repeats 3
        scenario relay-seed-1m seed --messages 2000 --senders 4
        scenario relay-history-r1 history --requests 200 --concurrency 4
        scenario relay-history-newest-r1 history --newest --requests 200 --concurrency 4
    else
        scenario relay-prepare prepare --users 10000
        for r in $(seq 1 "$REPEATS"); do
            scenario "relay-pairs-15k-r$r" pairs --pairs 500 --rate 15000 --duration 30
        done
        for r in $(seq 1 "$REPEATS"); do
            pairs_ladder 500 15000 15 "relay-pairs-ladder-r$r"
        done
        for r in $(seq 1 "$REPEATS"); do
            scenario "relay-fanout-50x20-7000-r$r" fanout --groups 50 --members 20 --rate 7000 --duration 30
        done
        for r in $(seq 1 "$REPEATS"); do
            scenario "relay-broadcast-10000-r$r" broadcast --members 10000 --repeats 5
        done
        scenario relay-seed-1m seed --messages 1000000
        for r in $(seq 1 "$REPEATS"); do
            scenario "relay-history-r$r" history --requests 100000 --concurrency 32
        done
        for r in $(seq 1 "$REPEATS"); do
            scenario "relay-history-newest-r$r" history --newest --requests 100000 --concurrency 32
        done
    fi
    stop_relay
    ACCOUNTS=$saved_accounts
    STATE=$saved_state
}

if [ -n "$CLUSTER" ]; then
    cluster_run
elif [ "$MODE" = smoke ]; then
    # The full run's labels (the report's targets table finds its runs by
    # them), with tiny parameters.
    scenario smoke smoke --round-trips 3
    scenario hash-cost hash-cost --iterations 3
    scenario idle-19000-r1 idle --conns 20 --hold 1
    scenario pairs-15k-r1 pairs --pairs 5 --rate 200 --duration 2
    pairs_with_login pairs-15k-with-logins-r1 1 "pairs --pairs 5 --rate 200 --duration 2" "login --rate 5 --duration 1 --users 4"
    pairs_ladder 5 200 1 pairs-ladder-r1 2
    scenario fanout-50x20-7000-r1 fanout --groups 2 --members 4 --rate 100 --duration 2
    scenario broadcast-10000-r1 broadcast --members 20 --repeats 3
    scenario seed-1m seed --messages 2000 --senders 4
    scenario history-r1 history --requests 200 --concurrency 4
    scenario history-newest-r1 history --newest --requests 200 --concurrency 4
    scenario changes changes --pairs 3 --messages 5 --requests 100 --concurrency 4
    stop_server
    ceiling_runs
else
    scenario smoke smoke --round-trips 20
    # What one password hash costs on this machine (the tool's core; no server work).
    scenario hash-cost hash-cost --iterations 50
    # Accounts first (argon2: minutes for 19,000 users), then a fresh server
    # process for each idle run, so its memory figures carry neither the
    # hashing's heap nor what the previous run's sockets left behind.
    scenario prepare prepare --users 19000
    for r in $(seq 1 "$REPEATS"); do
        log "restarting the server before idle (run $r of $REPEATS)"
        stop_server
        start_server
        scenario "idle-19000-r$r" idle --conns 19000 --hold 30
    done
    # With and without logins alternate, so each pair of runs meets the
    # database at about the same size.
    for r in $(seq 1 "$REPEATS"); do
        scenario "pairs-15k-r$r" pairs --pairs 500 --rate 15000 --duration 30
        pairs_with_login "pairs-15k-with-logins-r$r" 5 "pairs --pairs 500 --rate 15000 --duration 30" "login --rate 30 --duration 20 --users 64"
    done
    for r in $(seq 1 "$REPEATS"); do
        pairs_ladder 500 15000 15 "pairs-ladder-r$r"
    done
    for r in $(seq 1 "$REPEATS"); do
        scenario "fanout-50x20-r$r" fanout --groups 50 --members 20 --rate 1000 --duration 30
    done
    # 7,000 posts/s to 19 other members each: the 100,000 deliveries/s target, with headroom.
    for r in $(seq 1 "$REPEATS"); do
        scenario "fanout-50x20-7000-r$r" fanout --groups 50 --members 20 --rate 7000 --duration 30
    done
    for r in $(seq 1 "$REPEATS"); do
        scenario "broadcast-10000-r$r" broadcast --members 10000 --repeats 5
    done
    scenario seed-1m seed --messages 1000000
    for r in $(seq 1 "$REPEATS"); do
        scenario "history-r$r" history --requests 100000 --concurrency 32
    done
    for r in $(seq 1 "$REPEATS"); do
        scenario "history-newest-r$r" history --newest --requests 100000 --concurrency 32
    done
    scenario changes changes --pairs 50 --messages 20 --requests 5000 --concurrency 16
    stop_server
    ceiling_runs
fi

stop_server
stop_nodes
stop_pid "$ENGINE_PID" "the $ENGINE server"
ENGINE_PID=""

# --- RESULTS.md ----------------------------------------------------------------
{
    echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) memory, kernel $(uname -r)"
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "- backend: $BACKEND; server pinned with \`${SERVER_PIN[*]:-(none)}\`, parley-load with \`${TOOL_PIN[*]:-(none)}\`"
    if [ -n "$CLUSTER" ]; then
        echo "- cluster: $CLUSTER nodes on ports $PORT…$((PORT + CLUSTER - 1)), engine $ENGINE ($ENGINE_VERSION) on its own port, pinned with the nodes; rate limits off"
    fi
    echo "- mode: $MODE; raw JSON lines: \`${RUNS#"$ROOT"/}\`"
    if [ -z "$CLUSTER" ]; then
        echo "- runs of each latency scenario: $([ "$MODE" = smoke ] && echo 1 || echo "$REPEATS") (labels \`…-rN\`); the targets table judges their median"
        echo "- ceiling: \`parley-relay\` (Parley's protocol on actix-web and actix-web-actors, no storage, no password hashing) pinned like the server, the same scenarios labelled \`relay-…\`; [load-tests/README.md](README.md#the-ceiling-parley-relay)"
    fi
    ladders=()
    for best in "$OUT"/*.best; do
        [ -f "$best" ] || continue
        name=${best##*/}
        ladders+=("${name%.best} $(cat "$best")")
    done
    if [ "${#ladders[@]}" -gt 0 ]; then
        echo "- highest pairs rate sustained per ladder (ok, ≥95% delivered/s, p99 ≤ 250 ms), msg/s: $(IFS=,; echo "${ladders[*]}" | sed 's/,/, /g')"
    fi
    echo "- against the targets, with profiles: [load-tests/README.md](README.md#against-the-targets)"
    if [ -f "$OUT/server.log" ]; then
        echo "- server log: $(grep -c -E 'WARN|ERROR' "$OUT/server.log" || true) warning/error lines (\`${OUT#"$ROOT"/}/server.log\`)"
    fi
    if [ -f "$OUT/relay.log" ]; then
        echo "- relay log: $(grep -c -v -E '^parley-relay: (listening|--max-secs)' "$OUT/relay.log" || true) other lines (\`${OUT#"$ROOT"/}/relay.log\`)"
    fi
    if [ -n "$CLUSTER" ]; then
        echo "- node logs: $(cat "$OUT"/node-*.log 2>/dev/null | grep -c -E 'WARN|ERROR' || true) warning/error lines (\`${OUT#"$ROOT"/}/node-*.log\`)"
    fi
} >"$OUT/header.md"
SUMMARY_ARGS=()
if [ -z "$CLUSTER" ]; then
    SUMMARY_ARGS+=(--targets "$BACKEND")
    [ "$MODE" = smoke ] && SUMMARY_ARGS+=(--smoke)
fi
"$LOAD_BIN" summarize --input "$RUNS" --header "$OUT/header.md" --out "$RESULTS_MD" "${SUMMARY_ARGS[@]}"
if [ -n "$CLUSTER" ] && [ "$MODE" != smoke ]; then
    write_cluster_section
    log "results: $CLUSTER_MD (section $ENGINE)"
else
    log "results: $RESULTS_MD"
fi

if [ "${#FAILED[@]}" -gt 0 ]; then
    echo "run.sh: FAILED: ${FAILED[*]}" >&2
    exit 1
fi
echo "run.sh: every scenario passed" >&2
