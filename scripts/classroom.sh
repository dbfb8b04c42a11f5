#!/usr/bin/env bash
# Regenerates results/classroom/: every table and chart that
# docs/CLASSROOM.md quotes, from real runs on this machine (~3 minutes).
#
#   bash scripts/classroom.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bins
client=./target/release/tc-client
server=./target/release/tc-server
out=results/classroom
rm -rf "$out" && mkdir -p "$out"
{
  echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(free -g | awk '/Mem:/{print $2}') GiB"
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
} > "$out/machine.txt"

echo "== demo 1: threads vs processes vs threads with a GIL"
$client sweep --modes threads,threads-gil,processes --workers 1,2,4 --concurrency 8 \
  --duration 3s --csv "$out/modes.csv"
$client plot throughput --csv "$out/modes.csv" -o "$out/modes-throughput"
$client plot breakdown --csv "$out/modes.csv" -o "$out/modes-breakdown"

echo "== demo 2: Little's law and saturation (threads, 2 workers)"
$client sweep --modes threads --workers 2 --concurrency 1,2,4,8,16,32 \
  --duration 3s --csv "$out/saturation.csv"
$client plot latency --csv "$out/saturation.csv" -o "$out/saturation-latency"
$client plot breakdown --csv "$out/saturation.csv" -o "$out/saturation-breakdown"

echo "== demo 3: closed loop vs open loop (processes, 2 workers, n=500000)"
$client --embedded --mode processes --workers 2 -c 8 -d 5s --warmup 1s \
  --hgrm "$out/closed-loop.hgrm" --csv "$out/loops.csv" | tee "$out/closed-loop.txt"
for rate in 800 1100; do
  $client --embedded --mode processes --workers 2 -c 8 --rate "$rate" -d 5s --warmup 1s \
    --hgrm "$out/open-loop-$rate.hgrm" --csv "$out/loops.csv" | tee "$out/open-loop-$rate.txt" || true
done
$client plot percentiles --hgrm "$out/closed-loop.hgrm" --hgrm "$out/open-loop-800.hgrm" \
  --hgrm "$out/open-loop-1100.hgrm" -o "$out/loops-percentiles"

echo "== demo 4: crash isolation (kill -9 a worker process mid-run)"
address_file=$(mktemp)
$server --port 0 --mode processes --workers 2 --log-level warn > "$address_file" &
server_pid=$!
trap 'kill -TERM $server_pid 2>/dev/null || true; rm -f "$address_file"' EXIT
for _ in $(seq 100); do grep -q '^listening on' "$address_file" && break; sleep 0.1; done
port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$address_file")
$client --port "$port" -c 8 -d 6s --hdr-log "$out/crash.hlog" --hdr-log-interval 250ms \
  --json "$out/crash.json" > "$out/crash.txt" &
client_pid=$!
sleep 3
victim=$($client call --port "$port" '{"cmd":"stats"}' | python3 -c \
  'import json,sys; print(json.load(sys.stdin)["result"]["worker_list"][0]["pid"])')
echo "killing worker process $victim" | tee "$out/crash-kill.txt"
kill -9 "$victim"
wait "$client_pid" || true
$client call --port "$port" '{"cmd":"stats"}' > "$out/crash-stats.json"
$client plot timeline --hdr-log "$out/crash.hlog" -o "$out/crash-timeline"

echo "== demo 5: replies out of order on one pipelined connection"
python3 scripts/example_client.py --port "$port" | tee "$out/pipelining.txt"
echo "done: $out"
