#!/usr/bin/env bash
# Fuzzes the frame decoders and the request parser with cargo-fuzz
# (libFuzzer) and appends the final statistics to results/fuzz.md.
#
#   bash scripts/fuzz.sh [seconds-per-target]      (default 180)
#
# cargo-fuzz normally wants a nightly toolchain; this machine has only a
# stable one, so RUSTC_BOOTSTRAP=1 lets stable rustc accept the -Z
# sanitizer flags cargo-fuzz passes. Nothing is installed silently: if
# cargo-fuzz is missing, the script says how to get it and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-180}

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is not installed. Install it with:  cargo install cargo-fuzz --locked" >&2
  exit 1
fi

export RUSTC_BOOTSTRAP=1
{
  echo
  echo "## $(date -u +%Y-%m-%dT%H:%MZ), ${seconds} s per target"
  echo
  echo "Command: \`bash scripts/fuzz.sh ${seconds}\` on $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p' | head -1)), $(cargo fuzz --version)."
  echo
  echo "| target | executions | exec/s | coverage | corpus | crashes |"
  echo "|---|---|---|---|---|---|"
} >> results/fuzz.md
for target in frame_decoder request_parser; do
  log=$(mktemp)
  status=0
  cargo fuzz run -O "$target" -- -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  corpus=$(grep -o 'corp: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  crashes=$([ "$status" = 0 ] && echo 0 || echo "see fuzz/artifacts/$target")
  echo "| $target | $runs | $rate | $cov | $corpus | $crashes |" >> results/fuzz.md
  echo "$target: $runs runs, $rate exec/s, coverage $cov, crashes: $crashes"
  rm -f "$log"
done
