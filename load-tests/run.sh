#!/usr/bin/env bash
# Runs Parley's load scenarios end to end: builds in release, starts a
# server pinned to core 0 on a fresh data dir (SQLite, or a fresh Postgres
# database with --postgres), runs every scenario with parley-load pinned to
# core 1, collects their JSON lines and writes load-tests/RESULTS.md.
#
#   load-tests/run.sh                  full-size run (takes a while: 19,000 accounts)
#   load-tests/run.sh --smoke          every scenario for a moment with tiny parameters;
#                                      exits non-zero if anything was lost (CI runs this)
#   load-tests/run.sh --postgres postgres://postgres:postgres@127.0.0.1:5432/postgres
#                                      use a fresh database on that server instead of SQLite;
#                                      writes load-tests/RESULTS-postgres.md
#   load-tests/run.sh --keep-data DIR  keep the server's data dir and the token cache in DIR
#                                      and reuse them next time (skips re-registering users)
#   load-tests/run.sh --port N         server port (default 18180)
#
# The server it starts is stopped on exit (by PID); nothing is left running.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

MODE=full
PG_ADMIN_URL=""
KEEP_DIR=""
PORT=18180
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) MODE=smoke ;;
        --postgres) PG_ADMIN_URL="$2"; shift ;;
        --keep-data) KEEP_DIR="$2"; shift ;;
        --port) PORT="$2"; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

log() { printf '\n==> %s\n' "$*" >&2; }

STAMP=$(date -u +%Y%m%d-%H%M%S)
OUT="$ROOT/target/parley-load/run-$MODE-$STAMP"
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
BACKGROUND_PID=""
PG_DB=""
cleanup() {
    local status=$?
    if [ -n "$BACKGROUND_PID" ] && kill -0 "$BACKGROUND_PID" 2>/dev/null; then
        kill "$BACKGROUND_PID" 2>/dev/null || true
        wait "$BACKGROUND_PID" 2>/dev/null || true
    fi
    stop_server
    if [ -n "$PG_DB" ] && [ -z "$KEEP_DIR" ]; then
        psql "$PG_ADMIN_URL" -q -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 150); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "run.sh: server $SERVER_PID did not stop in 15 s; killing it" >&2
            kill -9 "$SERVER_PID" 2>/dev/null || true
        fi
    fi
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
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

log "building (release)"
cargo build --release -p parley -p parley-load
SERVER_BIN="$ROOT/target/release/parley"
LOAD_BIN="$ROOT/target/release/parley-load"

if port_open "$PORT"; then
    echo "run.sh: something already listens on 127.0.0.1:$PORT; pick another with --port" >&2
    exit 2
fi

start_server() {
    env PARLEY_DATA_DIR="$DATA" PARLEY_BIND="127.0.0.1:$PORT" PARLEY_LOG=warn \
        PARLEY_RATE_LIMITS=off "${DB_ENV[@]}" \
        "${SERVER_PIN[@]}" "$SERVER_BIN" >>"$OUT/server.log" 2>&1 &
    SERVER_PID=$!
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

log "starting the server ($BACKEND, data in $DATA, port $PORT)"
start_server

FAILED=()
# One scenario: run it pinned, keep its JSON line, note a failure.
#   scenario LABEL ARGS...
scenario() {
    local label=$1
    shift
    local command="parley-load $*"
    log "$label: $command"
    local rc=0
    "${TOOL_PIN[@]}" "$LOAD_BIN" --url "http://127.0.0.1:$PORT" --server-pid "$SERVER_PID" \
        --json --accounts "$ACCOUNTS" --state "$STATE" "$@" >"$OUT/$label.json" || rc=$?
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
    "${TOOL_PIN[@]}" "$LOAD_BIN" --url "http://127.0.0.1:$PORT" --server-pid "$SERVER_PID" \
        --json --quiet --accounts "$ACCOUNTS" --state "$STATE" $pairs_args \
        >"$OUT/$label-pairs.json" &
    BACKGROUND_PID=$!
    sleep "$delay"
    # shellcheck disable=SC2086
    "${TOOL_PIN[@]}" "$LOAD_BIN" --url "http://127.0.0.1:$PORT" --server-pid "$SERVER_PID" \
        --json --accounts "$ACCOUNTS" --state "$STATE" $login_args \
        >"$OUT/$label-login.json" || login_rc=$?
    wait "$BACKGROUND_PID" || rc=$?
    BACKGROUND_PID=""
    record "$label" "parley-load $pairs_args (with logins alongside)" "$rc" "$OUT/$label-pairs.json"
    record "login-during-$label" "parley-load $login_args (during $label)" "$login_rc" "$OUT/$label-login.json"
}

# Steps the pairs rate up (or down) from START until the server no longer
# sustains it; records every step, and the highest sustained rate.
pairs_ladder() {
    local pairs=$1 start=$2 duration=$3
    local rate=$start best="" step=0 direction=""
    while [ "$step" -lt 8 ]; do
        step=$((step + 1))
        local label="pairs-ladder-$rate"
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
    echo "${best:-none}" >"$OUT/max-pairs-rate"
    # A step that was not sustained is the point of the ladder, not a failure.
    local kept=()
    for f in "${FAILED[@]}"; do
        case "$f" in pairs-ladder-*) ;; *) kept+=("$f") ;; esac
    done
    FAILED=("${kept[@]}")
}

if [ "$MODE" = smoke ]; then
    scenario smoke smoke --round-trips 3
    scenario idle idle --conns 20 --hold 1
    pairs_with_login pairs 1 "pairs --pairs 5 --rate 200 --duration 2" "login --rate 5 --duration 1 --users 4"
    scenario fanout fanout --groups 2 --members 4 --rate 100 --duration 2
    scenario broadcast broadcast --members 20 --repeats 3
    scenario seed seed --messages 2000 --senders 4
    scenario history history --requests 200 --concurrency 4
else
    scenario smoke smoke --round-trips 20
    # Accounts first (argon2: minutes for 19,000 users), then a fresh server
    # process so idle's memory figures don't carry the hashing's heap.
    scenario prepare prepare --users 19000
    log "restarting the server before idle"
    stop_server
    start_server
    scenario idle-19000 idle --conns 19000 --hold 30
    scenario pairs-15k pairs --pairs 500 --rate 15000 --duration 30
    pairs_ladder 500 15000 15
    pairs_with_login pairs-15k-with-logins 5 "pairs --pairs 500 --rate 15000 --duration 30" "login --rate 30 --duration 20 --users 64"
    scenario fanout-50x20 fanout --groups 50 --members 20 --rate 1000 --duration 30
    # 7,000 posts/s to 19 other members each: the 100,000 deliveries/s target, with headroom.
    scenario fanout-50x20-7000 fanout --groups 50 --members 20 --rate 7000 --duration 30
    scenario broadcast-10000 broadcast --members 10000 --repeats 5
    scenario seed-1m seed --messages 1000000
    scenario history history --requests 100000 --concurrency 32
fi

stop_server

# --- RESULTS.md ----------------------------------------------------------------
{
    echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) memory, kernel $(uname -r)"
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "- backend: $BACKEND; server pinned with \`${SERVER_PIN[*]:-(none)}\`, parley-load with \`${TOOL_PIN[*]:-(none)}\`"
    echo "- mode: $MODE; raw JSON lines: \`${RUNS#"$ROOT"/}\`"
    if [ -f "$OUT/max-pairs-rate" ]; then
        echo "- highest pairs rate sustained (ladder: ok, ≥95% delivered/s, p99 ≤ 250 ms): $(cat "$OUT/max-pairs-rate") msg/s"
    fi
    echo "- against the targets, with profiles: [load-tests/README.md](README.md#against-the-targets)"
    echo "- server log: $(grep -c -E 'WARN|ERROR' "$OUT/server.log" || true) warning/error lines (\`${OUT#"$ROOT"/}/server.log\`)"
} >"$OUT/header.md"
"$LOAD_BIN" summarize --input "$RUNS" --header "$OUT/header.md" --out "$RESULTS_MD"
log "results: $RESULTS_MD"

if [ "${#FAILED[@]}" -gt 0 ]; then
    echo "run.sh: FAILED: ${FAILED[*]}" >&2
    exit 1
fi
echo "run.sh: every scenario passed" >&2
