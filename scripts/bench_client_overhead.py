#!/usr/bin/env python3
"""What tc-client's own observability costs the measurement: the same run
plain, with `--metrics-addr` (scraped once a second while it goes, as a
fast Prometheus would) and with `--live` (drawn in a real pseudo-terminal,
tmux, 120x40), against one standalone tc-server. Runs alternate (plain,
metrics, live, plain, ...) so drift in the machine's speed hits all alike;
each row reports the medians, the throughput ratios (target >= 0.97) and
the p50s.

    python3 scripts/bench_client_overhead.py [--repeats 5] [--duration 5]

Writes results/client-overhead-<date>.md. Release builds; nothing else
should run on the machine meanwhile.
"""

import argparse
import datetime
import json
import os
import shutil
import subprocess
import tempfile
import platform
import socket
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the same Server and client helpers as bench.py)

ROOT = Path(__file__).resolve().parent.parent

# (description, server flags, client flags)
SCENARIOS = [
    ("ping, 16 connections (the client's busiest case: ~150k replies/s)", ["--mode", "threads", "--workers", "2"],
     ["--cmd", "ping", "-c", "16"]),
    ("compute n=500000, 8 connections, 2 worker threads", ["--mode", "threads", "--workers", "2"],
     ["-c", "8", "--size", "500000"]),
    ("ping, open loop at 20,000 requests/s", ["--mode", "threads", "--workers", "2"],
     ["--cmd", "ping", "-c", "8", "--rate", "20000"]),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape_every_second(port, stop):
    """Scrapes the client's /metrics once a second until `stop` is set."""
    scrapes = 0
    while not stop.wait(1.0):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
                answer.read()
                scrapes += 1
        except OSError:
            pass  # not up yet, or gone: the run decides, not the scraper
    return scrapes


def run_live(flags):
    """The client with --live in a tmux pseudo-terminal; its JSON report."""
    with tempfile.TemporaryDirectory() as tmp:
        report, done = os.path.join(tmp, "run.json"), os.path.join(tmp, "done")
        socket_name = f"tc-overhead-{os.getpid()}"
        command = " ".join([str(bench.CLIENT), *flags, "--live", "--json", report]) + f"; touch {done}"
        subprocess.run(["tmux", "-L", socket_name, "new-session", "-d", "-x", "120", "-y", "40", command], check=True)
        try:
            deadline = time.monotonic() + 120
            while not os.path.exists(done) and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            subprocess.run(["tmux", "-L", socket_name, "kill-server"], check=False, stderr=subprocess.DEVNULL)
        return json.load(open(report))


def run_once(server, client_flags, duration, observed):
    flags = ["--port", str(server.port), *client_flags, "-d", str(duration), "--warmup", "1s"]
    if observed == "live":
        return run_live(flags)
    if not observed:
        report, _, _ = bench.client(*flags)
        return report
    port = free_port()
    stop = threading.Event()
    scraper = threading.Thread(target=scrape_every_second, args=(port, stop))
    scraper.start()
    try:
        report, _, _ = bench.client(*flags, "--metrics-addr", f"127.0.0.1:{port}", "--metrics-linger", "0s")
    finally:
        stop.set()
        scraper.join()
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each kind per scenario (median reported)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per run")
    args = parser.parse_args()
    bench.build()

    if not shutil.which("tmux"):
        sys.exit("needs tmux for the --live runs: apt-get install -y tmux")
    rows = []
    kinds = (False, True, "live")
    for description, server_flags, client_flags in SCENARIOS:
        runs = {kind: [] for kind in kinds}
        with bench.Server(*server_flags) as server:
            for repeat in range(args.repeats):
                # Rotate the order, so no kind always runs first.
                order = kinds[repeat % 3:] + kinds[:repeat % 3]
                for kind in order:
                    runs[kind].append(run_once(server, client_flags, args.duration, kind))
        median = lambda kind: statistics.median(r["throughput_rps"] for r in runs[kind])
        p50 = lambda kind: statistics.median(bench.p50(r) for r in runs[kind]) / 1000
        spread = lambda rs: (max(r["throughput_rps"] for r in rs) - min(r["throughput_rps"] for r in rs)) / statistics.median(
            r["throughput_rps"] for r in rs)
        plain = median(False)
        rows.append((description, plain, median(True), median("live"), p50(False), p50(True), p50("live"),
                     max(spread(runs[kind]) for kind in kinds)))
        bench.log(f"{description}: {plain:,.0f} plain, {median(True):,.0f} metrics, {median('live'):,.0f} live ok/s")

    date = datetime.date.today().isoformat()
    out = ROOT / "results" / f"client-overhead-{date}.md"
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    lines = [
        f"# tc-client's own observability: what it costs the measurement, {date}",
        "",
        f"Command: `python3 scripts/bench_client_overhead.py --repeats {args.repeats} --duration {args.duration}`",
        "",
        f"Machine: {platform.machine()}, {cpu}, 2 cores, shared by the server, the client and the scraper. "
        f"Release builds. Each scenario: one tc-server; runs rotate plain / `--metrics-addr` "
        f"(scraped once a second during the run) / `--live` (in tmux, 120x40); medians of {args.repeats} runs "
        f"of {args.duration} s each after a 1 s warm-up. Target: throughput ratio >= 0.97, p50 within noise.",
        "",
        "| scenario | plain | --metrics-addr | ratio | --live | ratio | p50 plain / metrics / live | spread of the runs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for description, plain, metrics, live, p50_plain, p50_metrics, p50_live, spread in rows:
        lines.append(f"| {description} | {plain:,.0f} ok/s | {metrics:,.0f} ok/s | **{metrics / plain:.3f}** | "
                     f"{live:,.0f} ok/s | **{live / plain:.3f}** | "
                     f"{p50_plain:.3f} / {p50_metrics:.3f} / {p50_live:.3f} ms | {100 * spread:.1f}% |")
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
