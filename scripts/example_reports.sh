#!/usr/bin/env bash
# Regenerates results/example/: one benchmark run against an embedded farm,
# with every report tc-client can write. The README quotes these files.
#
#   bash scripts/example_reports.sh
set -euo pipefail
cd "$(dirname "$0")/.."

out=results/example
mkdir -p "$out"
rm -f "$out"/runs.csv
cargo build --release --quiet --bins

command=(./target/release/tc-client --embedded --mode processes --workers 2
  --concurrency 4 --duration 5s --warmup 1s --size 500000 --verify
  --csv "$out/runs.csv" --json "$out/run.json" --hgrm "$out/run.hgrm"
  --hdr-log "$out/run.hlog" --requests-csv "$out/requests.csv")

{
  echo "# command: ${command[*]}"
  echo "# machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(free -g | awk '/Mem:/{print $2}') GiB"
  echo
  "${command[@]}"
} | tee "$out/summary.txt"
