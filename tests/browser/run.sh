#!/usr/bin/env bash
# End-to-end browser test of Parley's bundled web client.
#
# Builds the server, starts it on a free loopback port with a fresh data
# directory, installs the npm dependencies if needed, runs e2e.mjs in
# headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core)
# and stops the server again. Exits with the test's status.
#
# Environment:
#   CHROMIUM          path of the Chromium binary (default /usr/bin/chromium)
#   PARLEY_E2E_KEEP   set to 1 to keep the temp data dir and server log
#   SKIP_BUILD        set to 1 to use the existing target/debug/parley
#   CARGO_TARGET_DIR  honoured as cargo does: the binary is looked for there
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

if [[ ! -x "$CHROMIUM" ]]; then
  echo "error: Chromium not found at $CHROMIUM (install it: apt-get install -y chromium)" >&2
  exit 2
fi
command -v node >/dev/null || { echo "error: node is not installed" >&2; exit 2; }

cd "$ROOT"
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  echo "==> cargo build -p parley"
  cargo build -p parley
fi
# Where cargo put it: CARGO_TARGET_DIR if set (relative to the workspace), else target/.
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
[[ "$TARGET_DIR" = /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
BIN="$TARGET_DIR/debug/parley"
[[ -x "$BIN" ]] || { echo "error: $BIN was not built" >&2; exit 2; }

if [[ ! -d "$HERE/node_modules/playwright-core" ]]; then
  echo "==> npm ci"
  (cd "$HERE" && npm ci --no-audit --no-fund)
fi

# A free loopback port: bind port 0 and read back what the kernel chose.
PORT="$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close();});')"
DATA_DIR="$(mktemp -d "${TMPDIR:-/tmp}/parley-e2e.XXXXXX")"
LOG="$DATA_DIR/server.log"
SERVER_PID=""
TEST_PID=""

cleanup() {
  local status=$?
  # The test first (playwright-core closes Chromium on SIGTERM), then the server.
  if [[ -n "$TEST_PID" ]] && kill -0 "$TEST_PID" 2>/dev/null; then
    kill "$TEST_PID" 2>/dev/null || true
    wait "$TEST_PID" 2>/dev/null || true
  fi
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [[ $status -ne 0 && -f "$LOG" ]]; then
    echo "---- last lines of the server log ($LOG) ----" >&2
    tail -n 40 "$LOG" >&2 || true
  fi
  if [[ "${PARLEY_E2E_KEEP:-0}" == 1 || $status -ne 0 ]]; then
    echo "kept data dir: $DATA_DIR" >&2
  else
    rm -rf "$DATA_DIR"
  fi
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "==> starting parley on 127.0.0.1:$PORT (data dir $DATA_DIR)"
PARLEY_DATA_DIR="$DATA_DIR" \
PARLEY_BIND="127.0.0.1:$PORT" \
PARLEY_RATE_LIMITS=off \
PARLEY_LOG="${PARLEY_LOG:-info}" \
  "$BIN" >"$LOG" 2>&1 &
SERVER_PID=$!

BASE_URL="http://127.0.0.1:$PORT"
for i in $(seq 1 100); do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "error: the server exited during start-up" >&2
    exit 1
  fi
  if node -e "fetch('$BASE_URL/').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))" 2>/dev/null; then
    break
  fi
  if [[ $i -eq 100 ]]; then
    echo "error: the server did not answer on $BASE_URL within 20 s" >&2
    exit 1
  fi
  sleep 0.2
done
echo "==> server is up at $BASE_URL"

mkdir -p "$ROOT/target/browser"
# In the background with `wait`, so a signal reaches the trap at once.
PARLEY_URL="$BASE_URL" CHROMIUM="$CHROMIUM" SCREENSHOT_DIR="$ROOT/target/browser" \
  node "$HERE/e2e.mjs" &
TEST_PID=$!
STATUS=0
wait "$TEST_PID" || STATUS=$?
TEST_PID=""
exit $STATUS
