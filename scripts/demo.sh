#!/usr/bin/env bash
# Runs the farm end to end on this machine: builds in release mode, starts
# tc-server on a free loopback port, runs the standard-library Python client
# against it (ping, compute, pipelining, the original client's load), prints
# the server's stats, and stops the server cleanly.
#
#   bash scripts/demo.sh [processes|threads] [workers]
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-processes}
workers=${2:-$(nproc)}

cargo build --release --quiet --bins
address_file=$(mktemp)
./target/release/tc-server --port 0 --mode "$mode" --workers "$workers" --log-level warn >"$address_file" &
server=$!
cleanup() {
  kill -TERM "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -f "$address_file"
}
trap cleanup EXIT

# The server prints "listening on HOST:PORT" once its workers are up.
for _ in $(seq 100); do
  grep -q '^listening on ' "$address_file" && break
  kill -0 "$server" 2>/dev/null || { echo "tc-server failed to start" >&2; exit 1; }
  sleep 0.1
done
port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$address_file")
[ -n "$port" ] || { echo "tc-server did not report its port" >&2; exit 1; }
echo "tc-server: mode=$mode workers=$workers port=$port"

python3 scripts/example_client.py --port "$port"
echo
echo "server stats:"
./target/release/tc-client call --port "$port" '{"cmd":"stats"}'
