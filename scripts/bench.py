#!/usr/bin/env python3
"""ThreadCenter's performance benchmark: every comparison of the performance
issue, measured side by side in one run on one machine, release builds only.

    python3 scripts/bench.py [--repeats 3] [--duration 5]

Each measurement is repeated and the median is reported. Results go to
results/perf-<date>.csv and results/perf-<date>.md (the table the README
quotes). References that are not installed are skipped with a note saying how
to install them; nothing is installed silently.
"""

import argparse
import csv
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "target" / "release" / "tc-server"
CLIENT = ROOT / "target" / "release" / "tc-client"


def log(message):
    print(message, file=sys.stderr, flush=True)


def build(with_tract=False):
    """The release binaries; with tract (the optional ONNX engine) when a
    section compares it."""
    log("building release binaries ...")
    features = ["--features", "tract"] if with_tract else []
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bins", *features], cwd=ROOT, check=True)


class Server:
    """A tc-server on a free loopback port, stopped with SIGTERM on exit."""

    def __init__(self, *args, preexec_fn=None):
        self.args = ["--port", "0", "--log-level", "warn", *args]
        self.preexec_fn = preexec_fn

    def __enter__(self):
        self.process = subprocess.Popen([SERVER, *self.args], stdout=subprocess.PIPE, text=True,
                                        preexec_fn=self.preexec_fn)
        line = self.process.stdout.readline()
        match = re.match(r"listening on .*:(\d+)", line)
        if not match:
            raise RuntimeError(f"tc-server did not start: {line!r}")
        self.port = int(match.group(1))
        return self

    def __exit__(self, *exc):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def hops(self):
        """The server's `stats` -> `hops`: each hop's p50, in microseconds."""
        out = subprocess.run([CLIENT, "--port", str(self.port), "call", '{"cmd":"stats"}'], capture_output=True,
                             text=True, check=True).stdout
        return {hop["hop"]: hop["p50_us"] for hop in json.loads(out)["result"].get("hops", [])}

    def rss_mb(self):
        """Resident memory of the server process, in MB."""
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")


def children_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def client(*args, preexec_fn=None):
    """Runs tc-client with a JSON report; returns (report, client CPU seconds, wall seconds)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as report:
        cpu_before, wall_before = children_cpu_seconds(), time.monotonic()
        subprocess.run([CLIENT, *args, "--json", report.name], check=False, stdout=subprocess.DEVNULL,
                       preexec_fn=preexec_fn)
        cpu, wall = children_cpu_seconds() - cpu_before, time.monotonic() - wall_before
        return json.load(open(report.name)), cpu, wall


def median_of(repeats, measure):
    values = [measure() for _ in range(repeats)]
    return statistics.median(values), values


def p50(report):
    return next(p["value_us"] for p in report["latency"]["percentiles"] if p["percentile"] == 50.0)


def redis_available():
    return shutil.which("redis-server") and shutil.which("redis-benchmark")


class Redis:
    """redis-server on a free loopback port, persistence off."""

    def __init__(self, tls=None):
        # tls: (certs dir) to serve TLS only, with the files of `tc-server gen-cert`.
        self.tls = tls

    def __enter__(self):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        ports = ["--port", str(self.port)]
        if self.tls:
            ports = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", f"{self.tls}/server.pem",
                     "--tls-key-file", f"{self.tls}/server.key", "--tls-ca-cert-file", f"{self.tls}/ca.pem",
                     "--tls-auth-clients", "no"]
        self.process = subprocess.Popen(
            ["redis-server", *ports, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def __exit__(self, *exc):
        self.process.terminate()
        self.process.wait()

    def ping_rps(self, connections, pipeline, requests):
        """The better of redis-benchmark's two PING variants, requests per second."""
        tls = ["--tls", "--cacert", f"{self.tls}/ca.pem"] if self.tls else []
        out = subprocess.run(
            ["redis-benchmark", "-p", str(self.port), *tls, "-t", "ping", "-c", str(connections),
             "-P", str(pipeline), "-n", str(requests), "-q"],
            capture_output=True, text=True, check=True,
        ).stdout
        rates = [float(x) for x in re.findall(r"PING_\w+: ([\d.]+) requests per second", out)]
        if not rates:
            raise RuntimeError(f"unexpected redis-benchmark output: {out!r}")
        return max(rates)


class Results:
    def __init__(self):
        self.rows = []

    def add(self, key, comparison, ours, reference, unit, target, met, note="", ratio=None):
        if ratio is None and isinstance(ours, (int, float)) and reference:
            ratio = ours / reference
        self.rows.append({
            "key": key, "comparison": comparison, "ours": ours, "reference": reference, "unit": unit,
            "ratio": None if ratio is None else round(ratio, 3), "target": target,
            "met": met, "note": note,
        })
        shown = "" if ratio is None else f" ratio {ratio:.3f}"
        log(f"  {comparison}: ours {fmt(ours)} {unit}, reference {fmt(reference)}{shown} -> {met}")


def fmt(value):
    if isinstance(value, float):
        return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"
    return "" if value is None else str(value)


def verdict(ok):
    return "yes" if ok else "NO"


def kernel_rate(seconds):
    out = subprocess.run([CLIENT, "kernel", "--size", "500000", "--duration", str(seconds), "--json"],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)["per_second"]


def compute_scaling(results, args):
    """Throughput vs the ideal (2 x the single-thread kernel rate). On a shared
    VM the kernel's own speed drifts by several percent from minute to minute,
    so each farm run is compared with the kernel measured just before and just
    after it, and the median of those per-run ratios is reported."""
    log("1. compute scaling (2 workers, 8 connections, n=500000)")
    for mode in ("threads", "processes"):
        ratios, rates, ideals = [], [], []
        with Server("--mode", mode, "--workers", "2") as server:
            for _ in range(args.repeats):
                before = kernel_rate(2)
                rps = client("--port", str(server.port), "-c", "8", "--size", "500000", "-d", str(args.duration),
                             "--warmup", "1s")[0]["throughput_rps"]
                ideal = 2 * (before + kernel_rate(2)) / 2
                ratios.append(rps / ideal)
                rates.append(rps)
                ideals.append(ideal)
        ratio = statistics.median(ratios)
        results.add(f"scaling_{mode}", f"compute scaling, {mode} (ideal = 2 x kernel, measured around each run)",
                    statistics.median(rates), statistics.median(ideals), "jobs/s", ">= 0.95", verdict(ratio >= 0.95),
                    f"median of per-run ratios {ratio:.3f} ({', '.join(f'{r:.3f}' for r in ratios)})", ratio=ratio)


def small_requests(results, args):
    log("2. ping vs redis (threads mode)")
    have_redis = redis_available()
    if not have_redis:
        log("   redis-server/redis-benchmark not found: install them with "
            "'apt-get install redis-server redis-tools' to get these rows; skipping the reference")
    cases = [(1, 1), (16, 1), (64, 1), (16, 16)]
    with Server("--mode", "threads", "--workers", "2") as server:
        ours = {}
        for connections, pipeline in cases:
            def run():
                report, cpu, wall = client("--port", str(server.port), "--cmd", "ping", "-c", str(connections),
                                           "--pipeline", str(pipeline), "-d", str(args.duration), "--warmup", "1s")
                return report["throughput_rps"], cpu / wall
            runs = [run() for _ in range(args.repeats)]
            ours[(connections, pipeline)] = (statistics.median(r[0] for r in runs),
                                             statistics.median(r[1] for r in runs))
        # A second client process when the server has headroom (c=1 is latency-bound).
        def two_clients():
            procs = []
            files = [tempfile.NamedTemporaryFile(suffix=".json") for _ in range(2)]
            for f in files:
                procs.append(subprocess.Popen([CLIENT, "--port", str(server.port), "--cmd", "ping", "-c", "1",
                                               "-d", str(args.duration), "--warmup", "1s", "--json", f.name],
                                              stdout=subprocess.DEVNULL))
            for p in procs:
                p.wait()
            return sum(json.load(open(f.name))["throughput_rps"] for f in files)
        both, _ = median_of(args.repeats, two_clients)
    reference = {}
    if have_redis:
        with Redis() as redis:
            for connections, pipeline in cases:
                requests = 200_000 if pipeline == 1 else 2_000_000
                reference[(connections, pipeline)], _ = median_of(
                    args.repeats, lambda: redis.ping_rps(connections, pipeline, requests))
    for (connections, pipeline), (rps, client_cores) in ours.items():
        ref = reference.get((connections, pipeline))
        label = f"ping, {connections} connections" + (f", pipeline {pipeline}" if pipeline > 1 else "")
        target = ">= 0.8" if (connections, pipeline) == (16, 1) else "report"
        met = "skipped (no redis)" if ref is None else (
            verdict(rps >= 0.8 * ref) if target == ">= 0.8" else "-")
        results.add(f"ping_c{connections}_p{pipeline}", label + " (vs redis-benchmark)", rps, ref, "req/s",
                    target, met, f"client CPU {client_cores:.2f} cores")
    single = ours[(1, 1)][0]
    results.add("second_client", "ping c=1: two client processes vs one", both, single, "req/s",
                "> 1 (client is not the bottleneck)", verdict(both > 1.2 * single))


HANDSHAKES = r"""
import socket, ssl, struct, sys, time
port, cafile, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
context = ssl.create_default_context(cafile=cafile) if cafile else None
frame = b'{"id":1,"cmd":"ping"}'
count, started = 0, time.monotonic()
while time.monotonic() - started < seconds:
    with socket.create_connection(("127.0.0.1", port)) as raw:
        sock = context.wrap_socket(raw, server_hostname="127.0.0.1") if context else raw
        sock.sendall(struct.pack(">I", len(frame)) + frame)
        sock.recv(4)
    count += 1
print(count / (time.monotonic() - started))
"""


def tls(results, args):
    """TLS on the job port: ping over TLS vs redis over TLS in the same run,
    ours with TLS vs without, and new connections per second."""
    log("8. TLS: ping vs redis --tls; the cost of TLS; handshakes per second")
    with tempfile.TemporaryDirectory() as certs:
        subprocess.run([SERVER, "gen-cert", "--out", certs], check=True, stdout=subprocess.DEVNULL)
        tls_flags = ["--tls-cert", f"{certs}/server.pem", "--tls-key", f"{certs}/server.key"]
        ping = ["--cmd", "ping", "-c", "16", "-d", str(args.duration), "--warmup", "1s"]
        with Server("--mode", "threads", "--workers", "2", *tls_flags) as secure, \
                Server("--mode", "threads", "--workers", "2") as plain:
            over_tls, _ = median_of(args.repeats, lambda: client(
                "--port", str(secure.port), "--tls", "--tls-ca", f"{certs}/ca.pem", *ping)[0]["throughput_rps"])
            in_clear, _ = median_of(args.repeats, lambda: client("--port", str(plain.port), *ping)[0]["throughput_rps"])
            handshakes, _ = median_of(args.repeats, lambda: float(subprocess.run(
                [sys.executable, "-c", HANDSHAKES, str(secure.port), f"{certs}/ca.pem", str(args.duration)],
                capture_output=True, text=True, check=True).stdout))
            plain_connects, _ = median_of(args.repeats, lambda: float(subprocess.run(
                [sys.executable, "-c", HANDSHAKES, str(plain.port), "", str(args.duration)],
                capture_output=True, text=True, check=True).stdout))
        reference = None
        if redis_available():
            with Redis(tls=certs) as redis:
                reference, _ = median_of(args.repeats, lambda: redis.ping_rps(16, 1, 200_000))
        results.add("tls_ping_c16", "ping over TLS, 16 connections (vs redis-benchmark --tls, redis 7 --tls-port)",
                    over_tls, reference, "req/s", ">= 1.0",
                    "skipped (no redis)" if reference is None else verdict(over_tls >= reference))
        results.add("tls_cost", "ping, 16 connections: ours over TLS vs ours in clear", over_tls, in_clear, "req/s",
                    "report", "-", f"TLS keeps {over_tls / in_clear:.0%} of the plain rate")
        results.add("tls_handshakes", "new connections per second, each with one ping (Python ssl client, one at "
                    "a time): TLS vs plain", handshakes, plain_connects, "connections/s", "report", "-",
                    "a full TLS 1.3 handshake (ECDSA P-256 certificate) per connection")


def dispatch_overhead(results, args):
    """Threads and processes runs alternate, so drift in the machine's speed
    hits both modes alike; per-run ratios and differences are reported."""
    log("3. process dispatch overhead (compute n=1, 16 connections)")
    runs = {"threads": [], "processes": []}
    for _ in range(args.repeats):
        for mode in ("threads", "processes"):
            with Server("--mode", mode, "--workers", "2") as server:
                runs[mode].append(client("--port", str(server.port), "-c", "16", "--size", "1",
                                         "-d", str(args.duration), "--warmup", "1s")[0])
    ratios = [p["throughput_rps"] / t["throughput_rps"] for t, p in zip(runs["threads"], runs["processes"])]
    gaps = [p50(p) - p50(t) for t, p in zip(runs["threads"], runs["processes"])]
    t_rps = statistics.median(r["throughput_rps"] for r in runs["threads"])
    p_rps = statistics.median(r["throughput_rps"] for r in runs["processes"])
    t_p50 = statistics.median(p50(r) for r in runs["threads"])
    p_p50 = statistics.median(p50(r) for r in runs["processes"])
    ratio, gap = statistics.median(ratios), statistics.median(gaps)
    results.add("dispatch_throughput", "n=1 throughput, 16 connections, processes vs threads", p_rps, t_rps,
                "jobs/s", ">= 0.95 in every run", verdict(min(ratios) >= 0.95),
                f"per-run ratios {', '.join(f'{r:.2f}' for r in ratios)}", ratio=ratio)
    results.add("dispatch_p50", "n=1 p50 latency difference, processes - threads, closed loop at saturation",
                gap, None, "us", "report", "-",
                f"p50 threads {t_p50} us, processes {p_p50} us (Little's law: at saturation p50 follows "
                f"throughput)")
    # The hop itself: an open loop at a quarter of the threads' capacity, so
    # neither mode queues and the p50 gap is the process hop, not Little's law.
    rate = round(t_rps / 4)
    open_runs = {"threads": [], "processes": []}
    open_hops = {"threads": [], "processes": []}
    for _ in range(args.repeats):
        for mode in ("threads", "processes"):
            with Server("--mode", mode, "--workers", "2") as server:
                open_runs[mode].append(client("--port", str(server.port), "-c", "16", "--size", "1",
                                              "--rate", str(rate), "-d", str(args.duration), "--warmup",
                                              "1s")[0])
                open_hops[mode].append(server.hops())
    open_gaps = [p50(p) - p50(t) for t, p in zip(open_runs["threads"], open_runs["processes"])]
    open_gap = statistics.median(open_gaps)
    results.add("dispatch_p50_open", f"n=1 p50 latency difference, processes - threads, open loop at "
                f"{rate}/s (~25% of the threads' capacity)", open_gap, None, "us", "<= 20",
                verdict(open_gap <= 20),
                f"per-run gaps {', '.join(f'{g:.0f}' for g in open_gaps)} us; p50 threads "
                f"{statistics.median(p50(r) for r in open_runs['threads'])} us, processes "
                f"{statistics.median(p50(r) for r in open_runs['processes'])} us (from schedule)")
    # Where the gap goes: each hop's p50 inside the server (stats -> hops),
    # the median over the runs, for the same open-loop runs.
    for mode in ("threads", "processes"):
        names = list(open_hops[mode][0])
        medians = {name: statistics.median(run.get(name, 0.0) for run in open_hops[mode]) for name in names}
        total = sum(medians.values())
        results.add(f"dispatch_hops_{mode}", f"n=1, open loop at {rate}/s: the server's hops, {mode} "
                    f"(p50 of each, us)", round(total, 1), None, "us", "report", "-",
                    ", ".join(f"{name} {value:g}" for name, value in medians.items()))


def pipelining(results, args):
    log("4. pipelining (1 connection, pipeline 64, ping)")
    with Server("--mode", "threads", "--workers", "2") as server:
        rps, _ = median_of(args.repeats, lambda: client(
            "--port", str(server.port), "--cmd", "ping", "-c", "1", "--pipeline", "64", "-d", str(args.duration),
            "--warmup", "1s")[0]["throughput_rps"])
    results.add("pipeline_64", "ping, 1 connection, pipeline 64", rps, 200_000, "req/s", ">= 200000",
                verdict(rps >= 200_000))


def memory(results, args):
    log("5. memory (threads mode)")
    with Server("--mode", "threads", "--workers", "2") as server:
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(1000)]
        time.sleep(1)
        with_idle = server.rss_mb()
        for s in idle:
            s.close()
        time.sleep(0.5)
        per_connection = 100_000 // 16
        client("--port", str(server.port), "--cmd", "ping", "-c", "16", "--pipeline", "16", "-n", str(per_connection))
        after_100k = server.rss_mb()
        client("--port", str(server.port), "--cmd", "ping", "-c", "16", "--pipeline", "16", "-n", str(9 * per_connection))
        after_1m = server.rss_mb()
    results.add("rss_idle_1000", "server RSS with 1,000 idle connections", with_idle, 150, "MB", "<= 150 MB",
                verdict(with_idle <= 150))
    results.add("rss_growth", "server RSS after 1,000,000 requests vs after 100,000", after_1m, after_100k, "MB",
                "<= 1.1", verdict(after_1m <= 1.1 * after_100k))


REFERENCE_FORWARD = r"""
import sys, time, json
sys.path.insert(0, sys.argv[1])
import numpy as np
from safetensors.numpy import load_file
import train_model as tm
params = load_file(sys.argv[2])
batch = np.random.default_rng(0).random((16, 150, 150, 3), dtype=np.float32)
tm.forward(params, batch)  # warm-up
count, started = 0, time.monotonic()
while time.monotonic() - started < float(sys.argv[3]):
    tm.forward(params, batch)
    count += 16
print(json.dumps({"images_per_s": count / (time.monotonic() - started)}))
"""


def reference_images_per_s(seconds):
    """The same network in numpy (the training script's forward pass) on one
    BLAS thread, batches of 16, network only (no image decoding)."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", REFERENCE_FORWARD, str(ROOT / "scripts"),
                          str(ROOT / "models" / "fire-cnn.safetensors"), str(seconds)],
                         capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        return None
    return json.loads(out.stdout)["images_per_s"]


def predict(results, args):
    """Images/s with predict_batch of 16 vs one image per request, on the
    shipped samples (decode + resize + network, all on the worker)."""
    log("6. predict (shipped samples; 1 worker, then 2 worker processes)")
    for workers, mode in ((1, "threads"), (2, "processes")):
        single, batch = [], []
        for _ in range(args.repeats):
            with Server("--mode", mode, "--workers", str(workers)) as server:
                common = ("--port", str(server.port), "-c", str(2 * workers), "-d", str(args.duration),
                          "--warmup", "1s")
                single.append(client(*common, "--cmd", "predict")[0]["throughput_rps"])
                batch.append(16 * client(*common, "--cmd", "predict_batch", "--batch", "16")[0]["throughput_rps"])
        gains = [b / s for s, b in zip(single, batch)]
        s_med, b_med, gain = statistics.median(single), statistics.median(batch), statistics.median(gains)
        results.add(f"predict_batch_{workers}w", f"images/s, predict_batch 16 vs predict, {workers} {mode} worker(s)",
                    b_med / workers, s_med / workers, "images/s per worker", "batch > single",
                    verdict(gain > 1.0), f"gain {gain:.2f}x (per-run {', '.join(f'{g:.2f}' for g in gains)}); "
                    f"totals {b_med:.0f} vs {s_med:.0f} images/s; a batch also spreads its images over rayon's "
                    f"threads (all cores), one image per request cannot", ratio=gain)
    try:
        import torch  # noqa: F401  (the issue's reference, where installed)
        torch_note = "PyTorch is installed but the reference here is the numpy twin of the network"
    except ImportError:
        torch_note = "PyTorch is not installed; the reference is the same network in numpy (OpenBLAS, 1 thread)"
    reference = reference_images_per_s(args.duration)
    if reference is None:
        results.add("predict_reference", "1 worker's batch images/s vs reference", None, None, "images/s",
                    ">= 0.5 x reference", "not measured",
                    "numpy/safetensors not installed: python3 -m pip install -r scripts/requirements-train.txt")
        return
    ours = next(r for r in results.rows if r["key"] == "predict_batch_1w")["ours"]
    results.add("predict_reference", "1 worker's batch images/s vs the same network in numpy, 1 thread",
                ours, reference, "images/s", ">= 0.5 x reference", verdict(ours >= 0.5 * reference),
                f"{torch_note}; ours includes image decoding, the reference does not", ratio=ours / reference)

ORT_FORWARD = r"""
import json, sys, time
import numpy as np, onnxruntime as ort
path, batch, threads, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
options = ort.SessionOptions()
options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
meta = session.get_inputs()[0]
shape = [batch if not isinstance(d, int) else d for d in meta.shape]
x = np.random.default_rng(0).random(shape, dtype=np.float32)
session.run(None, {meta.name: x})
count, started = 0, time.monotonic()
while time.monotonic() - started < seconds:
    session.run(None, {meta.name: x})
    count += batch
print(json.dumps({"images_per_s": count / (time.monotonic() - started), "version": ort.__version__}))
"""


def onnxruntime_library():
    """The pip wheel's libonnxruntime.so, or None."""
    out = subprocess.run([sys.executable, "-c", "import glob, os, onnxruntime; print(glob.glob(os.path.join("
                          "os.path.dirname(onnxruntime.__file__), 'capi', 'libonnxruntime.so*'))[0])"],
                         capture_output=True, text=True, check=False)
    return out.stdout.strip() if out.returncode == 0 else None


def ort_images_per_s(model, batch, threads, seconds):
    out = subprocess.run([sys.executable, "-c", ORT_FORWARD, str(model), str(batch), str(threads), str(seconds)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def our_forward(model, batch, threads, seconds, library):
    args = [str(CLIENT), "model", "--model", str(model), "--batch", str(batch), "--threads", str(threads),
            "-d", f"{seconds}s", "--json"]
    env = dict(os.environ)
    env.pop("THREADCENTER_ONNXRUNTIME", None)
    args += ["--onnxruntime", library] if library else ["--engine", "tract"]
    out = subprocess.run(args, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout)["images_per_second"]


def onnx(results, args):
    """ONNX predictions against onnxruntime itself (pip, same .onnx file, same
    machine, same run): the forward pass on one thread for the shipped model
    and a bigger generated one, batch 16 and 1, with each of our engines; then
    end to end (decoding included) with 2 workers against onnxruntime's
    forward pass on 2 threads."""
    log("7. ONNX: forward pass vs onnxruntime; end to end")
    library = onnxruntime_library()
    if library is None:
        results.add("onnx_forward", "forward pass vs onnxruntime", None, None, "images/s", ">= 0.8 x onnxruntime",
                    "not measured", "onnxruntime is not installed: python3 -m pip install -r "
                    "scripts/requirements-train.txt")
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, str(ROOT / "scripts" / "onnx_models.py"), "--bench-model", tmp], check=True)
        models = [("fire-cnn", ROOT / "models" / "fire-cnn.onnx"), ("bench-224", Path(tmp) / "bench-224.onnx")]
        for name, model in models:
            for batch in (16, 1):
                theirs, ours, tract = [], [], []
                for _ in range(args.repeats):
                    reference = ort_images_per_s(model, batch, 1, args.duration)
                    theirs.append(reference["images_per_s"])
                    ours.append(our_forward(model, batch, 1, args.duration, library))
                    tract.append(our_forward(model, batch, 1, args.duration, None))
                t, o, r = statistics.median(theirs), statistics.median(ours), statistics.median(tract)
                results.add(f"onnx_forward_{name}_b{batch}",
                            f"{name} forward pass, batch {batch}, 1 thread: tc (onnxruntime engine) vs onnxruntime "
                            f"{reference['version']} from Python", o, t, "images/s", ">= 0.8", verdict(o >= 0.8 * t),
                            f"tract engine (--engine tract): {r:.1f} images/s = {r / t:.2f}x")
        # End to end: decoding and the network, 2 workers, batches of 16 samples.
        forward_2 = statistics.median(ort_images_per_s(models[0][1], 16, 2, args.duration)["images_per_s"]
                                      for _ in range(args.repeats))
        for mode in ("threads", "processes"):
            rates = []
            for _ in range(args.repeats):
                env = dict(os.environ, THREADCENTER_ONNXRUNTIME=library)
                with tempfile.NamedTemporaryFile(suffix=".json") as report:
                    subprocess.run([str(CLIENT), "--embedded", "--mode", mode, "--workers", "2", "--cmd",
                                    "predict_batch", "--batch", "16", "-c", "4", "-d", str(args.duration),
                                    "--warmup", "1s", "--json", report.name], check=True, env=env,
                                   stdout=subprocess.DEVNULL)
                    rates.append(16 * json.load(open(report.name))["throughput_rps"])
            e2e = statistics.median(rates)
            # Per image: 1/e2e of wall time on 2 cores, of which 1/forward_2 is the network.
            network_share = e2e / forward_2
            results.add(f"onnx_end_to_end_{mode}",
                        f"fire-cnn end to end, predict_batch 16, 2 {mode} workers (onnxruntime engine) vs "
                        f"onnxruntime's forward pass alone on 2 threads", e2e, forward_2, "images/s", "report", "-",
                        f"time per image: ~{network_share:.0%} network, ~{1 - network_share:.0%} decoding the "
                        f"sample images (PNG/JPEG/GIF/BMP, resize to 150x150) and the farm around them")


PILLOW_ORT_END_TO_END = r"""
import io, json, sys, time
import numpy as np, onnxruntime as ort
from PIL import Image
model, seconds, files = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
options = ort.SessionOptions()
options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
meta = session.get_inputs()[0]
nchw = meta.shape[1] in (1, 3)
height, width = (meta.shape[2], meta.shape[3]) if nchw else (meta.shape[1], meta.shape[2])
blobs = [open(f, "rb").read() for f in files]
batch = [blobs[i % len(blobs)] for i in range(16)]
def prepare(blob):
    image = Image.open(io.BytesIO(blob)).convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.BILINEAR)
    return np.asarray(image, dtype=np.float32) * np.float32(1 / 255)
def once():
    x = np.stack([prepare(blob) for blob in batch])
    if nchw:
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return session.run(None, {meta.name: x})
once()
count, started = 0, time.monotonic()
while time.monotonic() - started < seconds:
    once()
    count += len(batch)
print(json.dumps({"images_per_s": count / (time.monotonic() - started), "onnxruntime": ort.__version__,
                  "pillow": Image.__version__}))
"""


def on_cpu_0():
    """Pins a child process (and every thread it starts) to CPU 0."""
    os.sched_setaffinity(0, {0})


def prediction_end_to_end(results, args):
    """A prediction end to end on one CPU, the README's setup (no flags: the
    engine is found by itself), batches of 16 read from files and decoded,
    against onnxruntime + Pillow in Python on the same CPU doing the same
    (read, decode, resize, scale, run). Both pinned to CPU 0, alternating."""
    log("8. predictions end to end on one CPU vs onnxruntime + Pillow")
    try:
        subprocess.run([sys.executable, "-c", "import PIL, onnxruntime, numpy"], check=True,
                       capture_output=True)
    except subprocess.CalledProcessError:
        results.add("predict_e2e_png", "prediction end to end vs onnxruntime + Pillow", None, None, "images/s",
                    ">= 1.0", "not measured", "python3 -m pip install onnxruntime==1.32.0 pillow numpy")
        return
    model = ROOT / "models" / "fire-cnn.onnx"
    samples = sorted((ROOT / "models" / "samples").iterdir())
    sets = [("png", "the shipped PNG samples (150x150: decoded, not resized)",
             [p for p in samples if p.suffix == ".png"], ">= 1.0"),
            ("mixed", "all six samples (PNG, JPEG, GIF, BMP; the JPEGs resized from 300x225)", samples, "report")]
    for key, what, files, target in sets:
        with tempfile.TemporaryDirectory() as images:
            for f in files:
                shutil.copy(f, images)
            theirs, ours, engine = [], [], "?"
            for _ in range(args.repeats):
                out = subprocess.run([sys.executable, "-c", PILLOW_ORT_END_TO_END, str(model), str(args.duration),
                                      *map(str, files)], capture_output=True, text=True, check=True,
                                     preexec_fn=on_cpu_0)
                reference = json.loads(out.stdout)
                theirs.append(reference["images_per_s"])
                with Server("--mode", "threads", "--workers", "1", preexec_fn=on_cpu_0) as server:
                    described = subprocess.run([CLIENT, "call", "--port", str(server.port), '{"cmd":"model"}'],
                                               capture_output=True, text=True, check=True).stdout
                    engine = json.loads(described)["result"]["engine"]
                    report, _, _ = client("--port", str(server.port), "--cmd", "predict_batch", "--batch", "16",
                                          "--images", images, "-c", "2", "-d", str(args.duration), "--warmup", "1s",
                                          preexec_fn=on_cpu_0)
                    ours.append(16 * report["throughput_rps"])
            o, t = statistics.median(ours), statistics.median(theirs)
            met = verdict(o >= t) if target != "report" else "-"
            results.add(f"predict_e2e_{key}",
                        f"fire-cnn end to end on one CPU, batch 16, {what}: tc-server (README setup, 1 worker "
                        f"thread, client on the same CPU) vs onnxruntime {reference['onnxruntime']} + Pillow "
                        f"{reference['pillow']} in Python", o, t, "images/s", target, met,
                        f"engine: {engine}; per-run ours {', '.join(f'{v:.0f}' for v in ours)}, theirs "
                        f"{', '.join(f'{v:.0f}' for v in theirs)}; ours also carries each image as base64 in JSON "
                        f"over TCP", ratio=o / t)


def parse_row(row):
    """A row read back from the CSV, with its numbers as numbers."""
    for key in ("ours", "reference", "ratio"):
        try:
            row[key] = float(row[key]) if row[key] not in ("", None) else None
        except ValueError:
            pass
    return row


def first_build(results, args):
    """The first `cargo build --release` of the README's main command
    (`cargo run --release --bin tc-client -- --embedded` builds the library
    and tc-client) on a fresh clone of this commit, against a fresh clone of
    --build-before, alternating (before, this, before, ...), each into a
    target directory of its own. The crates are already downloaded, so no
    network time is counted; the wall time is what a user waits."""
    log(f"build. first release build of the main command, fresh clones: HEAD vs {args.build_before}")
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.strip()
    if dirty:
        log("  (the working tree has changes: what is measured is the last commit, HEAD)")
    sides = {"reference": args.build_before, "ours": "HEAD"}
    times = {side: [] for side in sides}
    for _ in range(args.repeats):
        for side, commit in sides.items():
            with tempfile.TemporaryDirectory(prefix="tc-first-build-") as tmp:
                subprocess.run(["git", "clone", "-q", str(ROOT), tmp], check=True)
                revision = subprocess.run(["git", "rev-parse", commit], cwd=ROOT, capture_output=True,
                                          text=True, check=True).stdout.strip()
                subprocess.run(["git", "checkout", "-q", revision], cwd=tmp, check=True)
                env = {**os.environ, "CARGO_TARGET_DIR": str(Path(tmp) / "target")}
                started = time.monotonic()
                subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "tc-client"], cwd=tmp,
                               env=env, check=True)
                times[side].append(time.monotonic() - started)
                log(f"  {side} ({commit}): {times[side][-1]:.0f} s")
    ours, before = statistics.median(times["ours"]), statistics.median(times["reference"])
    runs = lambda side: ", ".join(f"{t:.0f}" for t in times[side])
    results.add("first_build", "first release build of the main command, fresh clone (s; reference = "
                f"{args.build_before})", ours, before, "s", "<= 180 s", verdict(ours <= 180),
                f"runs: this {runs('ours')}; before {runs('reference')}")


def machine():
    cpu = "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        cpu = re.search(r"Model name:\s*(.+)", out).group(1).strip()
    except (OSError, AttributeError):
        pass
    return f"{os.cpu_count()} cores, {cpu}, {platform.system()} {platform.release()}"


def table_lines(rows):
    """The Markdown table of a results file, one line per row."""
    lines = ["| comparison | ours | reference | unit | ratio | target | met | note |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.3f}"
        lines.append(f"| {r['comparison']} | {fmt(r['ours'])} | {fmt(r['reference'])} | {r['unit']} | {ratio} "
                     f"| {r['target']} | {r['met']} | {r['note']} |")
    return lines


def write(results, args):
    """Writes the day's table. A run with --only updates its own rows in the
    day's files and keeps the others, saying which sections were re-run."""
    day = datetime.date.today().isoformat()
    csv_path = ROOT / "results" / f"perf-{day}.csv"
    md_path = ROOT / "results" / f"perf-{day}.md"
    rerun = ""
    if args.only and csv_path.exists():
        fresh = {r["key"]: r for r in results.rows}
        with open(csv_path, newline="") as f:
            kept = [fresh.pop(r["key"], None) or parse_row(r) for r in csv.DictReader(f)]
        results.rows = kept + list(fresh.values())
        rerun = f" Sections re-run afterwards with `--only {' '.join(args.only)}`."
    # A first file of the day from --only names the sections it ran.
    only = f"--only {' '.join(args.only)} " if args.only and not rerun else ""
    if "build" in (args.only or []) or not args.only:
        only += f"--build-before {args.build_before} " if args.build_before != "6915434" else ""
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(results.rows[0]))
        writer.writeheader()
        writer.writerows(results.rows)
    lines = [
        f"# Performance, {day}",
        "",
        f"Command: `python3 scripts/bench.py {only}--repeats {args.repeats} --duration {args.duration}` "
        f"(medians of {args.repeats} runs of {args.duration} s each, after a 1 s warm-up).{rerun}",
        f"Machine: {machine()}; client and server on the same machine, loopback.",
        "",
        *table_lines(results.rows),
    ]
    md_path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    log(f"wrote {csv_path.relative_to(ROOT)} and {md_path.relative_to(ROOT)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (median reported)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per run")
    parser.add_argument("--only", nargs="*", help="run only these sections "
                        "(scaling, ping, dispatch, pipelining, memory, predict, onnx, e2e, tls, build)")
    parser.add_argument("--build-before", default="6915434",
                        help="the commit the build section compares with (default: the last one before "
                        "worker hosts became the nats feature)")
    args = parser.parse_args()
    build(with_tract=not args.only or "onnx" in args.only)
    results = Results()
    sections = {"scaling": compute_scaling, "ping": small_requests, "dispatch": dispatch_overhead,
                "pipelining": pipelining, "memory": memory, "predict": predict, "onnx": onnx,
                "e2e": prediction_end_to_end, "tls": tls, "build": first_build}
    for name, section in sections.items():
        if not args.only or name in args.only:
            section(results, args)
    write(results, args)


if __name__ == "__main__":
    main()
