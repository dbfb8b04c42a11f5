#!/usr/bin/env bash
# Regenerates results/classroom/: every table and chart that
# docs/CLASSROOM.md quotes, from real runs on this machine (~4 minutes).
# Demo 6 is measured by hand with ps (see the guide).
#
#   bash scripts/classroom.sh          # demos 1 2 3 4 5 7 8 10
#   bash scripts/classroom.sh 7 8      # only these; other results are kept
set -euo pipefail
cd "$(dirname "$0")/.."
# --features nats: demo 9 runs worker hosts (tc-worker).
cargo build --release --quiet --bins --features nats
client=./target/release/tc-client
server=./target/release/tc-server
out=results/classroom
demos=${*:-1 2 3 4 5 7 8 10}
mkdir -p "$out"
{
  echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(free -g | awk '/Mem:/{print $2}') GiB"
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
} > "$out/machine.txt"


# Starts a tc-server in the background with the given flags; sets $port,
# $metrics (when --metrics-addr is among them) and $server_pid.
start_server() {
  local address_file
  address_file=$(mktemp)
  $server --port 0 --log-level warn "$@" > "$address_file" &
  server_pid=$!
  for _ in $(seq 100); do grep -q '^listening on' "$address_file" && break; sleep 0.1; done
  sleep 0.2 # the metrics line follows the first one
  port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$address_file")
  metrics=$(sed -n 's#^metrics on http://\(.*\)/metrics$#\1#p' "$address_file")
  rm -f "$address_file"
}
stop_server() {
  [ -n "${server_pid:-}" ] || return 0 # no server started (demos with an embedded farm)
  kill -TERM "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
}
trap stop_server EXIT

demo_1() {
  echo "== demo 1: threads vs processes vs threads with a GIL"
  rm -f "$out"/modes*
  $client sweep --modes threads,threads-gil,processes --workers 1,2,4 --concurrency 8 \
    --duration 3s --csv "$out/modes.csv"
  $client plot throughput --csv "$out/modes.csv" -o "$out/modes-throughput"
  $client plot breakdown --csv "$out/modes.csv" -o "$out/modes-breakdown"
}

demo_2() {
  echo "== demo 2: Little's law and saturation (threads, 2 workers)"
  rm -f "$out"/saturation*
  $client sweep --modes threads --workers 2 --concurrency 1,2,4,8,16,32 \
    --duration 3s --csv "$out/saturation.csv"
  $client plot latency --csv "$out/saturation.csv" -o "$out/saturation-latency"
  $client plot breakdown --csv "$out/saturation.csv" -o "$out/saturation-breakdown"
}

demo_3() {
  echo "== demo 3: closed loop vs open loop (processes, 2 workers, n=500000)"
  rm -f "$out"/closed-loop* "$out"/open-loop* "$out"/loops*
  $client --embedded --mode processes --workers 2 -c 8 -d 5s --warmup 1s \
    --hgrm "$out/closed-loop.hgrm" --csv "$out/loops.csv" | tee "$out/closed-loop.txt"
  for rate in 800 1100; do
    $client --embedded --mode processes --workers 2 -c 8 --rate "$rate" -d 5s --warmup 1s \
      --hgrm "$out/open-loop-$rate.hgrm" --csv "$out/loops.csv" | tee "$out/open-loop-$rate.txt" || true
  done
  $client plot percentiles --hgrm "$out/closed-loop.hgrm" --hgrm "$out/open-loop-800.hgrm" \
    --hgrm "$out/open-loop-1100.hgrm" -o "$out/loops-percentiles"
}

demo_4() {
  echo "== demo 4: crash isolation (kill -9 a worker process mid-run)"
  rm -f "$out"/crash*
  start_server --mode processes --workers 2
  $client --port "$port" -c 8 -d 6s --hdr-log "$out/crash.hlog" --hdr-log-interval 250ms \
    --json "$out/crash.json" > "$out/crash.txt" &
  local client_pid=$!
  sleep 3
  local victim
  victim=$($client call --port "$port" '{"cmd":"stats"}' | python3 -c \
    'import json,sys; print(json.load(sys.stdin)["result"]["worker_list"][0]["pid"])')
  echo "killing worker process $victim" | tee "$out/crash-kill.txt"
  kill -9 "$victim"
  wait "$client_pid" || true
  $client call --port "$port" '{"cmd":"stats"}' > "$out/crash-stats.json"
  $client plot timeline --hdr-log "$out/crash.hlog" -o "$out/crash-timeline"
  stop_server
}

demo_5() {
  echo "== demo 5: replies out of order on one pipelined connection"
  start_server --mode processes --workers 2
  python3 scripts/example_client.py --port "$port" | tee "$out/pipelining.txt"
  stop_server
}

demo_7() {
  echo "== demo 7: a mutex is a queue (lock-cycle, 1 to 8 clients)"
  : > "$out/lock-cycle.txt"
  for c in 1 2 4 8; do
    echo "\$ tc-client --embedded --mode processes --workers 2 --cmd lock-cycle -c $c --duration 3s" >> "$out/lock-cycle.txt"
    $client --embedded --mode processes --workers 2 --cmd lock-cycle -c "$c" --duration 3s | tee -a "$out/lock-cycle.txt"
    echo >> "$out/lock-cycle.txt"
  done
}

demo_8() {
  echo "== demo 8: Little's law, live from /metrics (threads, 2 workers, 8 then 32 connections)"
  start_server --mode threads --workers 2 --queue-capacity 16 --metrics-addr 127.0.0.1:0
  {
    echo "\$ tc-server --mode threads --workers 2 --queue-capacity 16 --metrics-addr 127.0.0.1:0"
    echo "\$ tc-client -c 8 -d 7s      # and beside it:"
    echo "\$ python3 scripts/watch_metrics.py --count 6"
  } > "$out/metrics-watch.txt"
  $client --port "$port" -c 8 -d 7s > /dev/null &
  local load=$!
  sleep 0.5
  python3 scripts/watch_metrics.py --addr "$metrics" --count 6 | tee -a "$out/metrics-watch.txt"
  wait "$load" || true
  echo "\$ tc-client -c 32 -d 3s     # 32 connections, 16 queue places: BUSY" >> "$out/metrics-watch.txt"
  $client --port "$port" -c 32 -d 3s > /dev/null 2>&1 &
  load=$!
  sleep 0.3
  python3 scripts/watch_metrics.py --addr "$metrics" --count 2 | tee -a "$out/metrics-watch.txt"
  wait "$load" || true
  stop_server
}

demo_9() {
  echo "== demo 9: one farm, three hosts (NATS, hosts as CPU-capped processes)"
  local nats_bin
  nats_bin=$(command -v nats-server || echo /usr/sbin/nats-server)
  if [ ! -x "$nats_bin" ]; then
    echo "demo 9 needs nats-server: apt-get install -y nats-server" >&2
    return 1
  fi
  rm -f "$out"/hosts*
  local store cgroups=""
  store=$(mktemp -d)
  "$nats_bin" -js -sd "$store" -a 127.0.0.1 -p -1 --ports_file_dir "$store" > /dev/null 2>&1 &
  local nats_pid=$!
  for _ in $(seq 100); do ls "$store"/*.ports > /dev/null 2>&1 && break; sleep 0.05; done
  local url
  url=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['nats'][0])" "$store"/*.ports)
  # Simulated machines: each host gets 0.4 of a core (cgroup v1), when we
  # may; otherwise they share the machine's cores and scaling stops at 2.
  if [ "$(id -u)" = 0 ] && [ -w /sys/fs/cgroup/cpu ]; then cgroups=yes; fi
  echo "hosts capped at 0.4 core each: ${cgroups:-no (not root, or no cgroup v1 cpu)}" > "$out/hosts.txt"
  local host_pids=()
  for k in 1 2 3; do
    local name="host$k"
    if [ -n "$cgroups" ]; then
      mkdir -p "/sys/fs/cgroup/cpu/tc-demo-$name"
      echo 100000 > "/sys/fs/cgroup/cpu/tc-demo-$name/cpu.cfs_period_us"
      echo 40000 > "/sys/fs/cgroup/cpu/tc-demo-$name/cpu.cfs_quota_us"
      sh -c "echo \$\$ > /sys/fs/cgroup/cpu/tc-demo-$name/cgroup.procs && exec ./target/release/tc-worker \
        --nats $url --name $name --workers 1 --log-level error" &
    else
      ./target/release/tc-worker --nats "$url" --name "$name" --workers 1 --log-level error &
    fi
    host_pids+=($!)
    start_server --nats "$url" --workers 0
    for _ in $(seq 50); do
      [ "$($client call --port "$port" '{"cmd":"stats"}' | python3 -c \
        'import json,sys; print(sum(h["alive"] for h in json.load(sys.stdin)["result"].get("hosts", [])))')" = "$k" ] && break
      sleep 0.2
    done
    echo "\$ tc-client -c 12 -d 4s   # $k host(s)" | tee -a "$out/hosts.txt"
    $client --port "$port" -c 12 -d 4s --warmup 1s --csv "$out/hosts.csv" | tee -a "$out/hosts.txt"
    stop_server
  done
  kill "${host_pids[@]}" 2>/dev/null || true
  wait "${host_pids[@]}" 2>/dev/null || true
  kill "$nats_pid"; wait "$nats_pid" 2>/dev/null || true
  rm -rf "$store"
  if [ -n "$cgroups" ]; then
    for k in 1 2 3; do rmdir "/sys/fs/cgroup/cpu/tc-demo-host$k" 2>/dev/null || true; done
  fi
  $client plot throughput --csv "$out/hosts.csv" -o "$out/hosts-throughput"
}

demo_10() {
  echo "== demo 10: find the knee (processes, 2 workers, stages up to 1200/s)"
  rm -f "$out"/knee*
  $client --embedded --workers 2 -c 8 --size 500000 --timeout 30s \
    --stages 4s@200,4s@400,4s@600,4s@800,4s@1000,4s@1200 \
    --hdr-log "$out/knee.hlog" | tee "$out/knee.txt" || true # past the knee: BUSY, exit 1
  $client plot timeline --hdr-log "$out/knee.hlog" -o "$out/knee" --log-y
  mv "$out/knee.png" "$out/knee-latency.png"
  mv "$out/knee.svg" "$out/knee-latency.svg"
}

for demo in $demos; do
  if ! declare -F "demo_$demo" > /dev/null; then
    echo "no demo $demo (demos: 1 2 3 4 5 7 8 9 10; 6 is measured by hand)" >&2
    exit 2
  fi
  "demo_$demo"
done
echo "done: $out"
