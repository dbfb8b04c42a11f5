#!/usr/bin/env python3
"""The live dashboard's cost, measured: a loaded server's throughput with
30 dashboards watching against none, and a /healthz probe's latency while
2,000 idle connections are held on the metrics port against none.
Release builds; results go to results/dashboard-<date>.md and .csv.

    python3 scripts/bench_dashboard.py [--repeats 5] [--duration 5]

The 30 "dashboards" are /events streams read by one process of this script
(a select loop that reads and discards, as cheap a reader as there is), so
the cost measured is the server's: building the frames once and writing
them 30 times. Every process runs on this machine, on loopback.
"""

import argparse
import csv
import datetime
import os
import platform
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import bench  # noqa: E402  (the shared helpers: Server, client, Results)


class Watchers:
    """`count` /events streams on `addr`, read and discarded on a thread."""

    def __init__(self, addr, count):
        self.addr, self.count, self.received = addr, count, 0
        self.stop = threading.Event()

    def __enter__(self):
        self.selector = selectors.DefaultSelector()
        self.sockets = []
        for _ in range(self.count):
            s = socket.create_connection(self.addr)
            s.sendall(b"GET /events HTTP/1.1\r\nHost: bench\r\n\r\n")
            s.setblocking(False)
            self.selector.register(s, selectors.EVENT_READ)
            self.sockets.append(s)
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()
        return self

    def read(self):
        while not self.stop.is_set():
            for key, _ in self.selector.select(timeout=0.2):
                try:
                    data = key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                self.received += len(data)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        for s in self.sockets:
            s.close()


def metrics_addr(server):
    """The metrics address a bench.Server printed on its second line."""
    line = server.process.stdout.readline()
    host_port = line.strip().removeprefix("metrics on http://").removesuffix("/metrics")
    host, port = host_port.rsplit(":", 1)
    server.process.stdout.readline()  # "dashboard on ..."
    return host, int(port)


def subscribers_cost(results, args):
    bench.log("1. 30 dashboards watching a loaded server (processes, 2 workers, compute n=1000, 16 connections)")
    rates = {"watched": [], "alone": []}
    received = []
    for repeat in range(args.repeats):
        order = ["alone", "watched"] if repeat % 2 == 0 else ["watched", "alone"]
        for which in order:
            with bench.Server("--mode", "processes", "--workers", "2", "--metrics-addr", "127.0.0.1:0") as server:
                addr = metrics_addr(server)
                flags = ["--port", str(server.port), "-c", "16", "--size", "1000", "-d", str(args.duration),
                         "--warmup", "1s"]
                if which == "watched":
                    with Watchers(addr, 30) as watchers:
                        report, _, _ = bench.client(*flags)
                        received.append(watchers.received / 30 / (args.duration + 1))
                else:
                    report, _, _ = bench.client(*flags)
                rates[which].append(report["throughput_rps"])
    watched, alone = statistics.median(rates["watched"]), statistics.median(rates["alone"])
    results.add("dashboard_subscribers", "compute n=1000, 16 connections, 2 worker processes: 30 /events "
                "streams open vs none", watched, alone, "jobs/s", ">= 0.95", bench.verdict(watched / alone >= 0.95),
                f"runs watched {', '.join(f'{r:.0f}' for r in rates['watched'])}; alone "
                f"{', '.join(f'{r:.0f}' for r in rates['alone'])}; each stream received "
                f"~{statistics.median(received) / 1024:.0f} KiB/s")


def probe_ms(addr, probes=20):
    """Milliseconds for each of `probes` /healthz requests, one connection each."""
    times = []
    for _ in range(probes):
        started = time.monotonic()
        with socket.create_connection(addr, timeout=30) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n")
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = s.recv(4096)
                if not chunk:
                    break
                answer += chunk
        if not answer.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"the probe was not answered 200: {answer[:60]!r}")
        times.append((time.monotonic() - started) * 1000)
        time.sleep(0.05)
    return times


def held_connections(results, args):
    bench.log("2. a /healthz probe while 2,000 idle connections are held on the metrics port")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with bench.Server("--mode", "threads", "--workers", "1", "--metrics-addr", "127.0.0.1:0",
                      "--metrics-max-connections", "4096", "--metrics-timeout", "60s") as server:
        addr = metrics_addr(server)
        quiet = probe_ms(addr)
        idle = [socket.create_connection(addr) for _ in range(2000)]
        try:
            held = probe_ms(addr)
        finally:
            for s in idle:
                s.close()
    results.add("dashboard_probe", "/healthz with 2,000 idle connections held (timeout 60 s) vs none: "
                "median probe time", statistics.median(held), statistics.median(quiet), "ms", "< 1000 ms, all 200",
                bench.verdict(max(held) < 1000), f"slowest held {max(held):.1f} ms, slowest quiet {max(quiet):.1f} ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--duration", type=int, default=5)
    args = parser.parse_args()
    bench.build()
    results = bench.Results()
    subscribers_cost(results, args)
    held_connections(results, args)
    today = datetime.date.today().isoformat()
    csv_path, md_path = ROOT / "results" / f"dashboard-{today}.csv", ROOT / "results" / f"dashboard-{today}.md"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(results.rows[0]))
        writer.writeheader()
        writer.writerows(results.rows)
    lines = [f"# The live dashboard's cost, {today}", "",
             f"Command: `python3 scripts/bench_dashboard.py --repeats {args.repeats} --duration {args.duration}` "
             "(medians; runs alternate between the two sides compared).",
             f"Machine: {bench.machine()}; release builds; every process on loopback.", "",
             *bench.table_lines(results.rows)]
    md_path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    bench.log(f"wrote {csv_path.relative_to(ROOT)} and {md_path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
