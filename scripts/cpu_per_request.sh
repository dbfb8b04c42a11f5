#!/usr/bin/env bash
# Server CPU time per request of two builds, interleaved A, B, A, B, ...:
# the way to see a per-request cost (a new counter, a histogram) that is far
# below the noise of a throughput number on a shared 2-core machine.
#
#   bash scripts/cpu_per_request.sh OLD_BIN_DIR NEW_BIN_DIR [ROUNDS] [-- SERVER FLAGS...]
#
# e.g. to measure this commit against the previous one:
#   git worktree add /tmp/before HEAD~1
#   (cd /tmp/before && CARGO_TARGET_DIR=/tmp/before-target cargo build --release)
#   cargo build --release
#   bash scripts/cpu_per_request.sh /tmp/before-target/release target/release 4
#
# Each round starts a fresh tc-server (threads, 2 workers), sends
# 4 connections x 500,000 pipelined pings with NEW_BIN_DIR's tc-client, and
# reads the server's user+system CPU time from /proc before and after.
set -euo pipefail
old=${1:?usage: cpu_per_request.sh OLD_BIN_DIR NEW_BIN_DIR [ROUNDS] [-- SERVER FLAGS...]}
new=${2:?usage: cpu_per_request.sh OLD_BIN_DIR NEW_BIN_DIR [ROUNDS] [-- SERVER FLAGS...]}
rounds=${3:-4}
shift $(( $# < 3 ? $# : 3 ))
[[ ${1:-} == "--" ]] && shift
connections=4
per_connection=500000
ticks=$(getconf CLK_TCK)

measure() {
  local dir=$1; shift
  local out pid port before after
  out=$(mktemp)
  "$dir/tc-server" --port 0 --mode threads --workers 2 --log-level warn "$@" > "$out" &
  pid=$!
  for _ in $(seq 100); do grep -q '^listening on' "$out" && break; sleep 0.05; done
  port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$out")
  before=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  "$new/tc-client" --port "$port" --cmd ping -c "$connections" --pipeline 16 -n "$per_connection" > /dev/null
  after=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  rm -f "$out"
  python3 -c "print(f'{($after - $before) / $ticks * 1e6 / ($connections * $per_connection):.3f}')"
}

echo "server CPU µs per ping ($connections x $per_connection pipelined, threads mode, 2 workers)"
declare -a a b
for round in $(seq "$rounds"); do
  a+=("$(measure "$old" "$@")")
  b+=("$(measure "$new" "$@")")
  echo "round $round: old ${a[-1]}  new ${b[-1]}"
done
python3 - "${a[*]}" "${b[*]}" <<'PY'
import statistics, sys
old = [float(x) for x in sys.argv[1].split()]
new = [float(x) for x in sys.argv[2].split()]
mo, mn = statistics.mean(old), statistics.mean(new)
print(f"mean: old {mo:.3f} µs, new {mn:.3f} µs, difference {mn - mo:+.3f} µs ({(mn / mo - 1) * 100:+.0f}%)")
PY
