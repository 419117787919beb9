#!/usr/bin/env bash
# Contract fuzzing: runs schemathesis against a live Parley server's own
# /openapi.json, as a signed-in user, and fails on any server error (5xx),
# any response that breaks the documented contract (status code, content
# type, headers, body schema) or any error of the run itself.
#
#   bash tests/contract/run.sh
#
# What it does: builds the server (`cargo build -p parley`), starts
# target/debug/parley on a free loopback port with a fresh temporary data dir
# and PARLEY_RATE_LIMITS=off, installs schemathesis into a virtual
# environment under target/contract-venv (once), registers a user and logs in
# with curl, sends every operation with path parameters odd values in each
# of them (odd_path_values.py: a 4xx with the error body, never a 5xx), then
# fuzzes every documented operation, bounded in examples per operation and
# in wall-clock time. Before fuzzing it also checks that the
# served /openapi.json is valid OpenAPI 3.1 (openapi-spec-validator, in the
# same venv) and /asyncapi.json valid AsyncAPI 3.0 (@asyncapi/parser, from
# npm into target/contract-node; needs node and npm). The server is stopped
# by its PID on exit.
#
# Knobs (environment): CONTRACT_MAX_EXAMPLES (default 100 per operation),
# CONTRACT_TIME_LIMIT (default 600 s for each schemathesis run),
# CONTRACT_SEED (a fixed seed reproduces a run), CONTRACT_WORKERS (default 2).
# The reports (JUnit, and the server's log) land in target/contract-report/.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

schemathesis_version=4.32.5
openapi_validator_version=0.9.0
asyncapi_parser_version=3.6.3
max_examples=${CONTRACT_MAX_EXAMPLES:-100}
time_limit=${CONTRACT_TIME_LIMIT:-600}
workers=${CONTRACT_WORKERS:-2}
seed=${CONTRACT_SEED:-$RANDOM}
venv="$root/target/contract-venv"
report_dir="$root/target/contract-report"

log() { printf '\n==> %s\n' "$*"; }

log "building the server"
cargo build -p parley

log "preparing schemathesis $schemathesis_version in $venv"
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "version $schemathesis_version\$" ||
    ! "$venv/bin/pip" show openapi-spec-validator 2>/dev/null | grep -q "^Version: $openapi_validator_version\$"; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "schemathesis==$schemathesis_version" "openapi-spec-validator==$openapi_validator_version"
fi
"$venv/bin/schemathesis" --version

data_dir=$(mktemp -d "${TMPDIR:-/tmp}/parley-contract.XXXXXX")
rm -rf "$report_dir"
mkdir -p "$report_dir"
server_log="$report_dir/server.log"
server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$data_dir"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
base="http://127.0.0.1:$port"

log "starting target/debug/parley on $base (data in $data_dir)"
PARLEY_BIND="127.0.0.1:$port" \
PARLEY_DATA_DIR="$data_dir" \
PARLEY_RATE_LIMITS=off \
PARLEY_LOG="${PARLEY_LOG:-warn}" \
    "$root/target/debug/parley" >"$server_log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "$base/openapi.json" 2>/dev/null && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$server_log"; echo "the server exited" >&2; exit 1; }
    sleep 0.2
done
curl -fsS -o /dev/null "$base/openapi.json"

log "validating /openapi.json (openapi-spec-validator) and /asyncapi.json (@asyncapi/parser)"
curl -fsS "$base/openapi.json" >"$report_dir/openapi.json"
curl -fsS "$base/asyncapi.json" >"$report_dir/asyncapi.json"
"$venv/bin/openapi-spec-validator" "$report_dir/openapi.json"
node_dir="$root/target/contract-node"
if ! grep -qs "\"version\": \"$asyncapi_parser_version\"" "$node_dir/node_modules/@asyncapi/parser/package.json"; then
    mkdir -p "$node_dir"
    [[ -f "$node_dir/package.json" ]] || echo '{"private": true}' >"$node_dir/package.json"
    npm install --prefix "$node_dir" --silent --no-audit --no-fund "@asyncapi/parser@$asyncapi_parser_version"
fi
ASYNCAPI_PARSER_DIR="$node_dir" node "$root/tests/contract/check-asyncapi.mjs" "$report_dir/asyncapi.json"

log "registering a user and logging in"
username="contract_$(date +%s)"
password="contract-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
curl -fsS "$base/auth/register" \
    -d "{\"username\":\"$username\",\"email\":\"$username@example.com\",\"password\":\"$password\"}" >/dev/null
token=$(curl -fsS "$base/auth/login" -d "{\"username\":\"$username\",\"password\":\"$password\"}" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')
# Someone to talk to, so that valid sends and group additions can succeed.
curl -fsS "$base/auth/register" \
    -d '{"username":"bob","email":"bob@example.com","password":"battery staple"}' >/dev/null

checks=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance

run_schemathesis() {
    local name=$1
    shift
    log "schemathesis: $name (seed $seed, at most $max_examples examples per operation, ${time_limit}s)"
    local status=0
    # Run from the report dir: schemathesis keeps a cache (.schemathesis/)
    # in its working directory.
    (cd "$report_dir" && timeout --signal=INT --kill-after=30 "$time_limit" \
        "$venv/bin/schemathesis" run "$base/openapi.json" \
        --url "$base" \
        --header "Authorization: Bearer $token" \
        --checks "$checks" \
        --max-examples "$max_examples" \
        --seed "$seed" \
        --workers "$workers" \
        --max-redirects 0 \
        --request-timeout 30 \
        --generation-database none \
        --suppress-health-check too_slow,filter_too_much \
        --report junit --report-junit-path "$report_dir/$name.xml" \
        --no-color \
        "$@") || status=$?
    if [[ $status -eq 124 ]]; then
        echo "schemathesis ($name) did not finish within ${time_limit}s" >&2
    fi
    return $status
}

log "odd path parameters (NUL, dot segments, encoded slashes, non-UTF-8, over-long) on every operation"
python3 "$root/tests/contract/odd_path_values.py" "$base" "$token" "$report_dir/openapi.json"

# Logging out revokes the token every other operation uses, so it runs last,
# on its own.
run_schemathesis main --exclude-path /auth/logout
run_schemathesis logout --include-path /auth/logout

if grep -q "panicked" "$server_log"; then
    echo "the server log shows a panic:" >&2
    grep -n "panicked" "$server_log" >&2
    exit 1
fi
log "contract fuzzing passed"
