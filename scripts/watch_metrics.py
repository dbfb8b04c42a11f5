#!/usr/bin/env python3
"""A live, one-line-per-interval view of a farm's /metrics (Python standard
library only): what Prometheus + Grafana would chart, in a terminal.

    python3 scripts/watch_metrics.py --addr 127.0.0.1:9464              # until Ctrl-C
    python3 scripts/watch_metrics.py --addr 127.0.0.1:9464 --count 10 --interval 0.5

Each row covers the last interval:

    req/s    replies sent per second (all commands, all outcomes)
    err/s    of which errors
    mean ms  mean server-side latency of those requests
             (Δ request_duration_seconds_sum / Δ _count)
    L        jobs in flight at the end of the interval (a gauge)
    λ·W      Little's law's prediction of L: jobs/s × mean job latency
    queue    jobs waiting for a worker, and the queue's capacity
    workers  alive / configured
    ready    what /readyz would answer

L and λ·W agree when the farm is in a steady state: that is Little's law,
L = λW, checked from the farm's own counters (docs/CLASSROOM.md, demo 8).
"""

import argparse
import re
import sys
import time
import urllib.error
import urllib.request

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
JOB_COMMANDS = {"compute", "predict", "predict_batch", "sleep", "crash", "hang", "panic"}


def scrape(addr, timeout):
    """Returns {(name, frozenset(labels)): value} from one scrape."""
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=timeout) as response:
        text = response.read().decode("utf-8")
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        if match:
            name, labels, value = match.groups()
            samples[(name, frozenset(LABEL.findall(labels or "")))] = float(value)
    return samples


def total(samples, name, keep=lambda labels: True):
    """Sum of every sample of `name` whose labels pass `keep`."""
    return sum(v for (n, labels), v in samples.items() if n == name and keep(dict(labels)))


def one(samples, name):
    return total(samples, name)


def row(before, after, seconds):
    """The numbers of one interval."""
    def delta(name, keep=lambda labels: True):
        return total(after, name, keep) - total(before, name, keep)

    replies = delta("threadcenter_requests_total")
    errors = delta("threadcenter_requests_total", lambda l: l.get("code") != "OK")
    count = delta("threadcenter_request_duration_seconds_count")
    mean_s = delta("threadcenter_request_duration_seconds_sum") / count if count else 0.0
    is_job = lambda l: l.get("command") in JOB_COMMANDS
    job_count = delta("threadcenter_request_duration_seconds_count", is_job)
    job_mean_s = delta("threadcenter_request_duration_seconds_sum", is_job) / job_count if job_count else 0.0
    return {
        "req/s": replies / seconds,
        "err/s": errors / seconds,
        "mean ms": mean_s * 1000,
        "L": one(after, "threadcenter_jobs_in_flight"),
        "λ·W": job_count / seconds * job_mean_s,
        "queue": f'{one(after, "threadcenter_queue_depth"):.0f}/{one(after, "threadcenter_queue_capacity"):.0f}',
        "workers": f'{one(after, "threadcenter_workers_alive"):.0f}/{one(after, "threadcenter_workers_configured"):.0f}',
        "ready": "yes" if one(after, "threadcenter_ready") == 1 else "NO",
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--addr", default="127.0.0.1:9464", help="the server's --metrics-addr")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between scrapes")
    parser.add_argument("--count", type=int, default=0, help="rows to print, then stop (0: until Ctrl-C)")
    args = parser.parse_args()
    if args.interval <= 0:
        parser.error("--interval must be positive")
    timeout = max(5.0, args.interval)

    header = f'{"time":>8} {"req/s":>9} {"err/s":>7} {"mean ms":>8} {"L":>5} {"λ·W":>6} {"queue":>9} {"workers":>7} {"ready":>5}'
    try:
        before, then = scrape(args.addr, timeout), time.monotonic()
    except (urllib.error.URLError, OSError) as e:
        sys.exit(f"cannot scrape http://{args.addr}/metrics: {e} (was the server started with --metrics-addr?)")
    print(header, flush=True)
    printed = 0
    try:
        while args.count == 0 or printed < args.count:
            time.sleep(args.interval)
            try:
                after, now = scrape(args.addr, timeout), time.monotonic()
            except (urllib.error.URLError, OSError) as e:
                print(f"{time.strftime('%H:%M:%S')} scrape failed: {e}", flush=True)
                continue
            r = row(before, after, now - then)
            print(f'{time.strftime("%H:%M:%S"):>8} {r["req/s"]:>9.1f} {r["err/s"]:>7.1f} {r["mean ms"]:>8.2f} '
                  f'{r["L"]:>5.0f} {r["λ·W"]:>6.2f} {r["queue"]:>9} {r["workers"]:>7} {r["ready"]:>5}', flush=True)
            before, then = after, now
            printed += 1
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
