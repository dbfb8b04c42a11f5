#!/usr/bin/env python3
"""What tc-client's own observability costs the measurement: the same run
with and without `--metrics-addr` (scraped once a second while it goes, as
a fast Prometheus would), against one standalone tc-server. Runs
alternate (plain, observed, plain, observed, ...) so drift in the
machine's speed hits both alike; each row reports the medians, the
throughput ratio (target >= 0.97) and the p50s.

    python3 scripts/bench_client_overhead.py [--repeats 5] [--duration 5]

Writes results/client-overhead-<date>.md. Release builds; nothing else
should run on the machine meanwhile.
"""

import argparse
import datetime
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


def run_once(server, client_flags, duration, observed):
    flags = ["--port", str(server.port), *client_flags, "-d", str(duration), "--warmup", "1s"]
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

    rows = []
    for description, server_flags, client_flags in SCENARIOS:
        runs = {False: [], True: []}
        with bench.Server(*server_flags) as server:
            for repeat in range(args.repeats):
                order = (False, True) if repeat % 2 == 0 else (True, False)
                for observed in order:
                    runs[observed].append(run_once(server, client_flags, args.duration, observed))
        plain = statistics.median(r["throughput_rps"] for r in runs[False])
        watched = statistics.median(r["throughput_rps"] for r in runs[True])
        p50_plain = statistics.median(bench.p50(r) for r in runs[False]) / 1000
        p50_watched = statistics.median(bench.p50(r) for r in runs[True]) / 1000
        spread = lambda rs: (max(r["throughput_rps"] for r in rs) - min(r["throughput_rps"] for r in rs)) / statistics.median(
            r["throughput_rps"] for r in rs)
        rows.append((description, plain, watched, watched / plain, p50_plain, p50_watched,
                     max(spread(runs[False]), spread(runs[True]))))
        bench.log(f"{description}: {plain:,.0f} vs {watched:,.0f} ok/s, ratio {watched / plain:.3f}")

    date = datetime.date.today().isoformat()
    out = ROOT / "results" / f"client-overhead-{date}.md"
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    lines = [
        f"# tc-client's own observability: what it costs the measurement, {date}",
        "",
        f"Command: `python3 scripts/bench_client_overhead.py --repeats {args.repeats} --duration {args.duration}`",
        "",
        f"Machine: {platform.machine()}, {cpu}, 2 cores, shared by the server, the client and the scraper. "
        f"Release builds. Each scenario: one tc-server; runs alternate plain / with `--metrics-addr` "
        f"(scraped once a second during the run); medians of {args.repeats} runs of {args.duration} s each "
        "after a 1 s warm-up. Target: throughput ratio >= 0.97, p50 within noise.",
        "",
        "| scenario | plain | with --metrics-addr | ratio | p50 plain | p50 with | spread of the runs |",
        "|---|---|---|---|---|---|---|",
    ]
    for description, plain, watched, ratio, p50_plain, p50_watched, spread in rows:
        lines.append(f"| {description} | {plain:,.0f} ok/s | {watched:,.0f} ok/s | **{ratio:.3f}** | "
                     f"{p50_plain:.3f} ms | {p50_watched:.3f} ms | {100 * spread:.1f}% |")
    lines += ["", "`--live` (the full-screen view) is not built yet: its row comes with it."]
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
