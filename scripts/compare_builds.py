#!/usr/bin/env python3
"""Two builds of ThreadCenter side by side: the ping and compute rows of
scripts/bench.py, run against each build in turn (A, B, A, B, ...) so that
drift in the machine's speed hits both alike. Reports each build's median
and the ratio after / before.

    git worktree add /tmp/before <commit> && (cd /tmp/before && cargo build --release --bins)
    cargo build --release --bins
    python3 scripts/compare_builds.py --before /tmp/before/target/release --after target/release

The worker-host scenario (`--only nats_short`: short jobs through a gateway
and one 2-slot host, as in scripts/bench_hosts.py) needs both trees built
with `--features nats` and a nats-server; each run starts its own.

Writes results/compare-<date>.md and .csv. A ratio within the spread of the
runs is noise; the per-run values are in the CSV.
"""

import argparse
import csv
import datetime
import platform
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the same Server and client helpers as bench.py)
import bench_hosts  # noqa: E402  (nats-server and worker hosts, as bench_hosts.py starts them)

ROOT = Path(__file__).resolve().parent.parent

# (key, description, server flags, client flags, what to read)
SCENARIOS = [
    ("ping_c16", "ping, 16 connections, threads mode", ["--mode", "threads", "--workers", "2"],
     ["--cmd", "ping", "-c", "16"], "req/s"),
    ("ping_c16_p16", "ping, 16 connections, pipeline 16, threads mode", ["--mode", "threads", "--workers", "2"],
     ["--cmd", "ping", "-c", "16", "--pipeline", "16"], "req/s"),
    ("compute_threads", "compute n=500000, 8 connections, 2 worker threads", ["--mode", "threads", "--workers", "2"],
     ["-c", "8", "--size", "500000"], "jobs/s"),
    ("compute_processes", "compute n=500000, 8 connections, 2 worker processes",
     ["--mode", "processes", "--workers", "2"], ["-c", "8", "--size", "500000"], "jobs/s"),
    ("dispatch_threads", "compute n=1, 16 connections, 2 worker threads (per-job cost)",
     ["--mode", "threads", "--workers", "2"], ["-c", "16", "--size", "1"], "jobs/s"),
    ("dispatch_processes", "compute n=1, 16 connections, 2 worker processes (dispatch cost)",
     ["--mode", "processes", "--workers", "2"], ["-c", "16", "--size", "1"], "jobs/s"),
]


# Through NATS: a fresh nats-server, one tc-worker host of 2 worker
# processes and a gateway (--workers 0) per run, each from the build measured.
NATS_SCENARIOS = [
    ("nats_short", "compute n=1, 16 connections, gateway + 1 host (2 worker processes) over NATS",
     ["-c", "16", "--size", "1"], "jobs/s"),
    ("nats_long", "compute n=500000, 8 connections, gateway + 1 host (2 worker processes) over NATS",
     ["-c", "8", "--size", "500000"], "jobs/s"),
]
# CPU per job of nats-server, the gateway and the host process in each NATS
# run, by scenario and build: what the runs' note reports (medians).
NATS_CPU = {}


def use_build(directory):
    bench.SERVER = Path(directory) / "tc-server"
    bench.CLIENT = Path(directory) / "tc-client"
    bench_hosts.WORKER = Path(directory) / "tc-worker"
    for binary in (bench.SERVER, bench.CLIENT):
        if not binary.is_file():
            sys.exit(f"{binary} is missing: build that tree with 'cargo build --release --bins' first")


def measure(directory, server_flags, client_flags, duration):
    use_build(directory)
    with bench.Server(*server_flags) as server:
        report, _, _ = bench.client("--port", str(server.port), *client_flags, "-d", str(duration), "--warmup", "1s")
    return report["throughput_rps"]


def measure_nats(key, build, directory, client_flags, duration):
    use_build(directory)
    if not bench_hosts.WORKER.is_file():
        sys.exit(f"{bench_hosts.WORKER} is missing: build that tree with 'cargo build --release --bins --features nats'")
    with bench_hosts.Nats() as nats:
        host = bench_hosts.Host(nats.url, "one", 2)
        try:
            with bench.Server("--nats", nats.url, "--workers", "0") as gateway:
                bench_hosts.wait_for_hosts(gateway.port, 1)
                pids = (nats.process.pid, gateway.process.pid, host.process.pid)
                before = [bench_hosts.cpu_seconds(pid) for pid in pids]
                report, _, _ = bench.client("--port", str(gateway.port), *client_flags, "-d", str(duration),
                                            "--warmup", "1s")
                # The 1 s warm-up is in the CPU too: per job, count its jobs as well (approximately).
                jobs = report["throughput_rps"] * (duration + 1)
                cpu = [(bench_hosts.cpu_seconds(pid) - b) / jobs * 1e6 for pid, b in zip(pids, before)]
                NATS_CPU.setdefault(key, {}).setdefault(build, []).append(cpu)
        finally:
            host.stop()
    return report["throughput_rps"]


def nats_cpu_note(key):
    """'CPU per job: nats-server B -> A µs, ...' for a NATS scenario."""
    runs = NATS_CPU.get(key)
    if not runs:
        return ""
    median = {build: [statistics.median(c[i] for c in cpus) for i in range(3)] for build, cpus in runs.items()}
    parts = [f"{name} {median['before'][i]:.0f} -> {median['after'][i]:.0f} µs"
             for i, name in enumerate(("nats-server", "gateway", "host process"))]
    return "CPU per job, before -> after: " + ", ".join(parts)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="directory with the old tc-server and tc-client")
    parser.add_argument("--after", required=True, help="directory with the new tc-server and tc-client")
    parser.add_argument("--repeats", type=int, default=5, help="runs per build and scenario (median reported)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per run")
    every = [s[0] for s in SCENARIOS] + [s[0] for s in NATS_SCENARIOS]
    parser.add_argument("--only", nargs="*", choices=every, help="these scenarios (default: all but nats_short)")
    args = parser.parse_args()

    chosen = [(key, description, lambda d, b, s=server_flags, c=client_flags: measure(d, s, c, args.duration), unit)
              for key, description, server_flags, client_flags, unit in SCENARIOS
              if (args.only is None or key in args.only)]
    chosen += [(key, description, lambda d, b, k=key, c=client_flags: measure_nats(k, b, d, c, args.duration), unit)
               for key, description, client_flags, unit in NATS_SCENARIOS if args.only and key in args.only]
    rows = []
    for key, description, run_once, unit in chosen:
        runs = {"before": [], "after": []}
        for repeat in range(args.repeats):
            # Alternate which build goes first, so neither always runs warmer.
            order = ("before", "after") if repeat % 2 == 0 else ("after", "before")
            for build in order:
                directory = args.before if build == "before" else args.after
                runs[build].append(run_once(directory, build))
        before, after = statistics.median(runs["before"]), statistics.median(runs["after"])
        spread = max(runs["before"] + runs["after"]) / min(runs["before"] + runs["after"]) - 1
        ratios = [a / b for a, b in zip(runs["after"], runs["before"])]
        rows.append({
            "key": key, "scenario": description, "unit": unit,
            "before": round(before, 1), "after": round(after, 1), "ratio": round(after / before, 3),
            "per_pair_ratios": " ".join(f"{r:.3f}" for r in ratios),
            "spread_of_all_runs": f"{spread:.1%}",
            "before_runs": " ".join(f"{v:.0f}" for v in runs["before"]),
            "after_runs": " ".join(f"{v:.0f}" for v in runs["after"]),
            "note": nats_cpu_note(key),
        })
        bench.log(f"{description}: before {before:,.0f}, after {after:,.0f} {unit}, ratio {after / before:.3f}")

    today = datetime.date.today().isoformat()
    out = ROOT / "results"
    with open(out / f"compare-{today}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), "?")
    with open(out / f"compare-{today}.md", "w") as f:
        f.write(f"# Two builds side by side, {today}\n\n")
        only = f" --only {' '.join(args.only)}" if args.only else ""
        f.write(f"Command: `python3 scripts/compare_builds.py --before {args.before} --after {args.after} "
                f"--repeats {args.repeats} --duration {args.duration}{only}`\n\n")
        f.write(f"Machine: {platform.machine()}, {model}, {len(__import__('os').sched_getaffinity(0))} cores. "
                "Release builds. Each scenario alternates the builds run by run; medians of "
                f"{args.repeats} runs of {args.duration} s each (after a 1 s warm-up).\n\n")
        f.write("| scenario | before | after | after / before | per-pair ratios | spread of all runs | note |\n")
        f.write("|---|---|---|---|---|---|---|\n")
        for r in rows:
            f.write(f"| {r['scenario']} | {r['before']:,.0f} {r['unit']} | {r['after']:,.0f} {r['unit']} | "
                    f"**{r['ratio']:.3f}** | {r['per_pair_ratios']} | {r['spread_of_all_runs']} | {r['note']} |\n")
    bench.log(f"wrote results/compare-{today}.md and .csv")


if __name__ == "__main__":
    main()
