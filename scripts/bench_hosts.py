#!/usr/bin/env python3
"""Worker hosts over NATS, measured: the gateway's overhead against local
worker processes, scaling with simulated hosts, and faults during a run.
Release builds; results go to results/hosts-<date>.md and .csv.

    python3 scripts/bench_hosts.py [--repeats 3] [--duration 5] [--only overhead key scaling faults broker partition]

Needs nats-server (apt-get install -y nats-server). Simulated hosts are
separate tc-worker processes, each in its own cgroup v1 CPU group with an
equal quota (root, /sys/fs/cgroup/cpu/); the cgroups are removed at the end.
Every process runs on loopback, except in the partition run: there every
process (nats-server, gateway, hosts and client) runs inside network
namespaces made for the run (root, iproute2), which are removed after it.
"""

import argparse
import csv
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (Server, client, kernel_rate, log)

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "target" / "release" / "tc-worker"
CGROUP = Path("/sys/fs/cgroup/cpu")


def nats_binary():
    for path in ("/usr/sbin/nats-server", "/usr/bin/nats-server"):
        if os.path.exists(path):
            return path
    return shutil.which("nats-server")


class Nats:
    """nats-server with JetStream on a free loopback port, in a temporary store."""

    def __enter__(self):
        binary = nats_binary()
        if not binary:
            sys.exit("nats-server is not installed: apt-get install -y nats-server")
        self.store = tempfile.TemporaryDirectory()
        self.process = subprocess.Popen(
            [binary, "-js", "-sd", self.store.name, "-a", "127.0.0.1", "-p", "-1", "-m", "-1",
             "--ports_file_dir", self.store.name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ports = [p for p in os.listdir(self.store.name) if p.endswith(".ports")]
            if ports:
                # The monitoring port too (/varz: the messages it moved).
                ports = json.load(open(os.path.join(self.store.name, ports[0])))
                self.url, self.monitor = ports["nats"][0], ports["monitoring"][0]
                return self
            time.sleep(0.02)
        raise RuntimeError("nats-server did not start")

    def restart(self, sig, outage):
        """Stops the server with `sig` (SIGTERM: graceful; SIGKILL: a crash),
        leaves the farm without a broker for `outage` seconds, and starts it
        again on the same port with the same store."""
        self.process.send_signal(sig)
        self.process.wait()
        time.sleep(outage)
        port = self.url.rsplit(":", 1)[1]
        self.process = subprocess.Popen(
            [nats_binary(), "-js", "-sd", self.store.name, "-a", "127.0.0.1", "-p", port],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def messages_moved(self):
        """Messages nats-server has taken in and sent out so far (its /varz)."""
        with urllib.request.urlopen(f"{self.monitor}/varz", timeout=5) as reply:
            varz = json.load(reply)
        return varz["in_msgs"] + varz["out_msgs"]

    def stream_messages(self, stream):
        """Messages a JetStream stream holds now, by its STREAM.INFO."""
        host, port = self.url.removeprefix("nats://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.recv(65536)  # INFO
            s.sendall(b'CONNECT {"verbose":false}\r\nSUB _INBOX.bench 1\r\n'
                      + f"PUB $JS.API.STREAM.INFO.{stream} _INBOX.bench 0\r\n\r\n".encode())
            data = b""
            while b"\r\n" not in data.partition(b"MSG ")[2]:
                data += s.recv(65536)
            header, _, rest = data.partition(b"MSG ")[2].partition(b"\r\n")
            size = int(header.split()[-1])
            while len(rest) < size:
                rest += s.recv(65536)
            return json.loads(rest[:size])["state"]["messages"]

    def __exit__(self, *exc):
        self.process.terminate()
        self.process.wait()
        self.store.cleanup()


class Host:
    """A tc-worker process, optionally inside a CPU cgroup of `cpus` cores."""

    def __init__(self, url, name, workers, mode="processes", cpus=None, extra=()):
        self.cgroup = None
        preexec = None
        if cpus is not None:
            self.cgroup = CGROUP / f"tc-bench-{name}"
            self.cgroup.mkdir(exist_ok=True)
            (self.cgroup / "cpu.cfs_period_us").write_text("100000")
            (self.cgroup / "cpu.cfs_quota_us").write_text(str(int(cpus * 100000)))
            tasks = self.cgroup / "cgroup.procs"
            # The child joins the cgroup before it runs (so do its worker processes).
            preexec = lambda: tasks.write_text(str(os.getpid()))  # noqa: E731
        self.process = subprocess.Popen(
            [WORKER, "--nats", url, "--name", name, "--workers", str(workers), "--mode", mode,
             "--log-level", "error", *extra], stdout=subprocess.DEVNULL, preexec_fn=preexec)

    def signal(self, sig):
        self.process.send_signal(sig)

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
        self.process.wait()
        if self.cgroup is not None:
            # Wait for the cgroup to empty (worker processes exit with their host).
            for _ in range(200):
                try:
                    self.cgroup.rmdir()
                    break
                except OSError:
                    time.sleep(0.02)


def gateway_stats(port):
    out = subprocess.run([bench.CLIENT, "call", "--port", str(port), '{"cmd":"stats"}'],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)["result"]


def wait_for_hosts(port, count, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hosts = gateway_stats(port).get("hosts") or []
        if sum(1 for h in hosts if h["alive"]) >= count:
            return
        time.sleep(0.1)
    raise RuntimeError(f"the gateway did not see {count} hosts")


def p50(report):
    return bench.p50(report)


def nats_round_trip_us(url, requests=2000):
    """The floor: NATS request/reply on loopback with the text protocol, one
    request at a time (a responder and a requester on two sockets). Python
    adds its own cost, so this is an upper bound of NATS's floor."""
    address = url.replace("nats://", "").split(":")
    def connect():
        s = socket.create_connection((address[0], int(address[1])))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        f = s.makefile("rb")
        f.readline()
        s.sendall(b'CONNECT {"verbose":false}\r\n')
        return s, f
    responder, rfile = connect()
    responder.sendall(b"SUB rtt 1\r\nPING\r\n")
    while rfile.readline() != b"PONG\r\n":
        pass
    requester, qfile = connect()
    requester.sendall(b"SUB _INBOX.rtt 2\r\nPING\r\n")
    while qfile.readline() != b"PONG\r\n":
        pass
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        requester.sendall(b"PUB rtt _INBOX.rtt 1\r\nx\r\n")
        header = rfile.readline()  # MSG rtt 1 _INBOX.rtt 1
        rfile.readline()
        reply_to = header.split()[3]
        responder.sendall(b"PUB " + reply_to + b" 1\r\ny\r\n")
        qfile.readline()
        qfile.readline()
        times.append((time.perf_counter() - start) * 1e6)
    responder.close()
    requester.close()
    return statistics.median(times)


def cpu_seconds(pid):
    """User + system CPU of one process so far (from /proc, 100 Hz ticks)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid):
    """The direct children of a process (a pool's worker processes)."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        children.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return children


class WorkerCpus:
    """Moves a pool's worker processes into a cgroup v1 CPU group of `cpus`
    cores: both sides' workers then have the same CPU, and everything else
    (NATS, gateway, front doors, client) runs beside them, as it would on
    other machines."""

    def __init__(self, name, parent_pid, cpus):
        self.path = CGROUP / f"tc-bench-{name}"
        self.path.mkdir(exist_ok=True)
        (self.path / "cpu.cfs_period_us").write_text("100000")
        (self.path / "cpu.cfs_quota_us").write_text(str(int(cpus * 100000)))
        self.workers = child_pids(parent_pid)
        for pid in self.workers:
            (self.path / "cgroup.procs").write_text(str(pid))

    def remove(self):
        for pid in self.workers:
            try:
                (CGROUP / "cgroup.procs").write_text(str(pid))
            except OSError:
                pass  # already gone
        for _ in range(200):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.02)


def overhead(results, args):
    bench.log("1. gateway + one host vs local processes (2 workers)")
    cases = [("long", "compute n=500000, 8 connections", ["-c", "8", "--size", "500000"]),
             ("short", "compute n=1, 16 connections", ["-c", "16", "--size", "1"]),
             ("long_workers_1cpu", "compute n=500000, 8 connections, each side's 2 worker processes held to "
              "1 CPU (cgroup v1), everything else beside them", ["-c", "8", "--size", "500000"])]
    with Nats() as nats:
        floor = nats_round_trip_us(nats.url)
        host = Host(nats.url, "one", 2)
        try:
            with bench.Server("--nats", nats.url, "--workers", "0") as gateway, \
                    bench.Server("--nats", nats.url, "--workers", "0", "--nats-max-parcel", "1") as alone, \
                    bench.Server("--mode", "processes", "--workers", "2") as local:
                wait_for_hosts(gateway.port, 1)
                wait_for_hosts(alone.port, 1)
                parcels_vs_alone(results, args, gateway, alone)
                for key, label, flags in cases:
                    held = []
                    if key.endswith("1cpu"):
                        if not CGROUP.is_dir() or os.geteuid() != 0:
                            bench.log("   cgroup v1 CPU controller not writable here: the 1-CPU case is skipped")
                            continue
                        held = [WorkerCpus("local-workers", local.process.pid, 1.0),
                                WorkerCpus("host-workers", host.process.pid, 1.0)]
                    try:
                        remote_runs, local_runs, remote_cpu = [], [], []
                        # Every process of the remote farm: nats-server, the
                        # gateway, the host, its worker processes (the client
                        # is added from bench.client's own measure).
                        farm = [nats.process.pid, gateway.process.pid, host.process.pid]
                        farm += child_pids(host.process.pid)
                        for repeat in range(args.repeats):
                            order = [("local", local), ("remote", gateway)]
                            for which, server in (order if repeat % 2 == 0 else order[::-1]):
                                before = [cpu_seconds(pid) for pid in farm]
                                moved = nats.messages_moved()
                                report, client_cpu, _ = bench.client("--port", str(server.port), *flags,
                                                                     "-d", str(args.duration), "--warmup", "1s")
                                if which == "remote":
                                    # Includes the 1 s warm-up: per job, count its jobs too (approximately).
                                    jobs = report["throughput_rps"] * (args.duration + 1)
                                    cpu = [(cpu_seconds(pid) - b) / jobs * 1e6 for pid, b in zip(farm, before)]
                                    remote_cpu.append(cpu[:3] + [sum(cpu[3:]), client_cpu / jobs * 1e6,
                                                                 (nats.messages_moved() - moved) / jobs])
                                    remote_runs.append(report)
                                else:
                                    local_runs.append(report)
                    finally:
                        for group in held:
                            group.remove()
                    remote = statistics.median(r["throughput_rps"] for r in remote_runs)
                    ours_local = statistics.median(r["throughput_rps"] for r in local_runs)
                    remote_p50 = statistics.median(p50(r) for r in remote_runs)
                    local_p50 = statistics.median(p50(r) for r in local_runs)
                    nats_us, gateway_us, host_us, workers_us, client_us, messages = (
                        statistics.median(c[i] for c in remote_cpu) for i in range(6))
                    # How busy the machine's cores were: CPU per job times jobs/s.
                    whole_us = nats_us + gateway_us + host_us + workers_us + client_us
                    busy = whole_us * remote / 1e6 / os.cpu_count()
                    target = "report" if key == "short" else ">= 0.9"
                    ratio = remote / ours_local
                    met = bench.verdict(ratio >= 0.9) if target == ">= 0.9" else "-"
                    results.add(f"overhead_{key}",
                                f"{label}: gateway + 1 host (2 worker processes) vs local processes", remote,
                                ours_local, "jobs/s", target, met,
                                f"p50 {remote_p50 / 1000:.3f} ms vs {local_p50 / 1000:.3f} ms; CPU per job: "
                                f"nats-server {nats_us:.0f} µs, gateway {gateway_us:.0f} µs, host process "
                                f"{host_us:.0f} µs, its workers {workers_us:.0f} µs, client {client_us:.0f} µs "
                                f"(the cores {busy:.0%} busy); NATS messages per job {messages:.2f} (in and out); "
                                f"NATS request/reply floor (Python, sequential) {floor:.0f} µs")
        finally:
            host.stop()


def parcels_vs_alone(results, args, gateway, alone):
    """Short jobs through a gateway that packs them (the default) and one
    that sends each alone (--nats-max-parcel 1, how every job travelled
    before parcels), same NATS, same host, alternating."""
    flags = ["-c", "16", "--size", "1"]
    packed_runs, alone_runs = [], []
    for repeat in range(args.repeats):
        order = [("packed", gateway), ("alone", alone)]
        for which, server in (order if repeat % 2 == 0 else order[::-1]):
            report, _, _ = bench.client("--port", str(server.port), *flags, "-d", str(args.duration),
                                        "--warmup", "1s")
            (packed_runs if which == "packed" else alone_runs).append(report["throughput_rps"])
    packed, single = statistics.median(packed_runs), statistics.median(alone_runs)
    remote = gateway_stats(gateway.port)["remote"]
    per_parcel = remote["forwarded"] / max(1, remote["parcels"])
    results.add("parcels_short", "compute n=1, 16 connections, gateway + 1 host (2 worker processes): jobs packed "
                "(default) vs each job alone (--nats-max-parcel 1)", packed, single, "jobs/s", ">= 5.0",
                bench.verdict(packed >= 5.0 * single),
                f"packed runs {', '.join(f'{r:.0f}' for r in packed_runs)}; alone "
                f"{', '.join(f'{r:.0f}' for r in alone_runs)}; {per_parcel:.1f} jobs per message on average, "
                f"at most {remote['largest_parcel']}")
    results.add("parcels_short_absolute", "compute n=1, 16 connections, gateway + 1 host, jobs packed: jobs/s "
                "against the issue's figure (5 x the 4,491 measured before, results/hosts-2026-11-25.md)",
                packed, 22_000, "jobs/s", ">= 22,000", bench.verdict(packed >= 22_000))


def scaling(results, args):
    bench.log("2. scaling with simulated hosts (1 worker each, equal CPU quota)")
    if not CGROUP.is_dir() or os.geteuid() != 0:
        bench.log("   cgroup v1 CPU controller not writable here (needs root and /sys/fs/cgroup/cpu): skipped")
        return
    quota = 0.4
    rates = {}
    with Nats() as nats:
        for k in (1, 2, 3):
            hosts = [Host(nats.url, f"sim{i}", 1, cpus=quota) for i in range(k)]
            try:
                with bench.Server("--nats", nats.url, "--workers", "0") as gateway:
                    wait_for_hosts(gateway.port, k)
                    runs = [bench.client("--port", str(gateway.port), "-c", str(4 * k), "--size", "500000",
                                         "-d", str(args.duration), "--warmup", "1s")[0]["throughput_rps"]
                            for _ in range(args.repeats)]
                    rates[k] = statistics.median(runs)
            finally:
                for host in hosts:
                    host.stop()
            bench.log(f"   {k} host(s): {rates[k]:.1f} jobs/s")
    for k in (2, 3):
        ratio = rates[k] / (k * rates[1])
        results.add(f"scaling_{k}", f"{k} hosts vs {k} x one host ({quota} CPU each, 1 worker, n=500000)",
                    rates[k], k * rates[1], "jobs/s", ">= 0.9", bench.verdict(ratio >= 0.9), ratio=ratio)


def faults(results, args):
    bench.log("3. faults during a run: a host SIGKILLed, a host SIGSTOPped and resumed")
    with Nats() as nats:
        for fault in ("kill", "stop"):
            hosts = [Host(nats.url, f"{fault}{i}", 1, mode="threads") for i in range(3)]
            try:
                with bench.Server("--nats", nats.url, "--workers", "0") as gateway:
                    wait_for_hosts(gateway.port, 3)
                    with tempfile.NamedTemporaryFile(suffix=".json") as report_file:
                        run = subprocess.Popen([bench.CLIENT, "--port", str(gateway.port), "-c", "6", "-n", "60",
                                                "--size", "20000000", "--verify", "--timeout", "60s",
                                                "--json", report_file.name], stdout=subprocess.DEVNULL)
                        time.sleep(1.0)
                        victim = hosts[0]
                        victim.signal(signal.SIGKILL if fault == "kill" else signal.SIGSTOP)
                        if fault == "stop":
                            time.sleep(8)
                            victim.signal(signal.SIGCONT)
                        run.wait(timeout=300)
                        report = json.load(open(report_file.name))
                    stats = gateway_stats(gateway.port)
                counts = report["counts"]
                remote = stats["remote"]
                answered_once = counts["ok"] == counts["sent"] and counts["duplicates"] == 0 \
                    and counts["missing"] == 0 and counts["mismatches"] == 0
                max_ms = report["latency"]["max_us"] / 1000
                results.add(f"faults_{fault}", f"360 jobs, a host {'SIGKILLed' if fault == 'kill' else 'SIGSTOPped 8 s'} "
                            "mid-run: every request answered once, results verified",
                            counts["ok"], counts["sent"], "ok replies", "all", bench.verdict(answered_once),
                            f"redelivered {remote['redelivered']}, duplicates dropped {remote['duplicates_dropped']}, "
                            f"slowest reply {max_ms:.0f} ms (time to recover)")
            finally:
                for host in hosts:
                    host.stop()


def broker(results, args):
    bench.log("4. broker restarts during a run: nats-server SIGTERMed / SIGKILLed, 8 s outage")
    for fault, sig in (("term", signal.SIGTERM), ("kill", signal.SIGKILL)):
        with Nats() as nats:
            hosts = [Host(nats.url, f"b{fault}{i}", 1, mode="threads") for i in range(3)]
            try:
                with bench.Server("--nats", nats.url, "--workers", "0") as gateway:
                    wait_for_hosts(gateway.port, 3)
                    with tempfile.NamedTemporaryFile(suffix=".json") as report_file:
                        run = subprocess.Popen([bench.CLIENT, "--port", str(gateway.port), "-c", "6", "-n", "60",
                                                "--size", "20000000", "--verify", "--timeout", "120s",
                                                "--json", report_file.name], stdout=subprocess.DEVNULL)
                        time.sleep(1.0)
                        nats.restart(sig, 8)
                        run.wait(timeout=600)
                        report = json.load(open(report_file.name))
                    stats = gateway_stats(gateway.port)
                    # Nothing left behind: the janitor runs every 10 s.
                    deadline = time.monotonic() + 30
                    while time.monotonic() < deadline and nats.stream_messages("TC_JOBS"):
                        time.sleep(0.5)
                    left = nats.stream_messages("TC_JOBS")
            finally:
                for host in hosts:
                    host.stop()
        counts = report["counts"]
        remote = stats["remote"]
        crashed = counts["errors"].get("WORKER_CRASHED", 0)
        answered_once = counts["ok"] == counts["sent"] and counts["duplicates"] == 0 \
            and counts["missing"] == 0 and counts["mismatches"] == 0 and left == 0
        results.add(f"broker_{fault}", f"360 jobs, nats-server {'SIGTERMed' if fault == 'term' else 'SIGKILLed'} "
                    "1 s into the run and back after 8 s: every request answered once, results verified, streams "
                    "empty after", counts["ok"], counts["sent"], "ok replies", "all", bench.verdict(answered_once),
                    f"WORKER_CRASHED {crashed}, deadlines passed {remote['deadlines_passed']}, redelivered "
                    f"{remote['redelivered']}, duplicates dropped {remote['duplicates_dropped']}, stale jobs removed "
                    f"{remote['stale_jobs_removed']}, messages left in the streams {left}, slowest reply "
                    f"{report['latency']['max_us'] / 1e6:.1f} s")


def key(results, args):
    bench.log("5. the farm key's cost: signed vs unsigned, gateway + one host")
    cases = [("key_short", "compute n=1, 16 connections", ["-c", "16", "--size", "1"]),
             ("key_long", "compute n=500000, 8 connections", ["-c", "8", "--size", "500000"])]
    with tempfile.TemporaryDirectory() as tmp:
        key_file = os.path.join(tmp, "farm.key")
        with open(key_file, "w") as f:
            f.write(os.urandom(32).hex() + "\n")
        for case, label, flags in cases:
            rates = {"signed": [], "unsigned": []}
            for repeat in range(args.repeats):
                order = ["unsigned", "signed"] if repeat % 2 == 0 else ["signed", "unsigned"]
                for which in order:
                    extra = ["--farm-key", key_file] if which == "signed" else []
                    with Nats() as nats:
                        host = Host(nats.url, f"k{which}", 2, extra=extra)
                        try:
                            with bench.Server("--nats", nats.url, "--workers", "0", *extra) as gateway:
                                wait_for_hosts(gateway.port, 1)
                                report, _, _ = bench.client("--port", str(gateway.port), *flags,
                                                            "-d", str(args.duration), "--warmup", "1s")
                                rates[which].append(report["throughput_rps"])
                        finally:
                            host.stop()
            signed, unsigned = statistics.median(rates["signed"]), statistics.median(rates["unsigned"])
            results.add(case, f"{label}: gateway + 1 host (2 worker processes), --farm-key vs none", signed,
                        unsigned, "jobs/s", ">= 0.95", bench.verdict(signed / unsigned >= 0.95),
                        f"runs signed {', '.join(f'{r:.0f}' for r in rates['signed'])}; unsigned "
                        f"{', '.join(f'{r:.0f}' for r in rates['unsigned'])}")


class Namespaces:
    """A small network of our own: namespace tcb-core (nats-server, the
    gateway and the client) joined by a bridge to tcb-h0..tcb-hN (one worker
    host each), addresses 10.77.0.0/24 that exist only inside these
    namespaces. Every process of the run lives in one of them; nothing in
    the root namespace talks to these addresses. Removed on exit."""

    CORE = "tcb-core"
    CORE_ADDRESS = "10.77.0.1"

    def __init__(self, hosts):
        self.hosts = [f"tcb-h{i}" for i in range(hosts)]

    @staticmethod
    def ip(*args):
        subprocess.run(["ip", *args], check=True)

    def __enter__(self):
        self.__exit__()  # leftovers of an interrupted run
        self.ip("netns", "add", self.CORE)
        self.ip("-n", self.CORE, "link", "set", "lo", "up")
        self.ip("-n", self.CORE, "link", "add", "br0", "type", "bridge")
        self.ip("-n", self.CORE, "link", "set", "br0", "up")
        self.ip("-n", self.CORE, "addr", "add", f"{self.CORE_ADDRESS}/24", "dev", "br0")
        for i, ns in enumerate(self.hosts):
            self.ip("netns", "add", ns)
            self.ip("-n", ns, "link", "set", "lo", "up")
            # A veth pair: one end in the host's namespace, the other on the bridge.
            self.ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"port{i}", "netns", self.CORE)
            self.ip("-n", ns, "addr", "add", f"10.77.0.{11 + i}/24", "dev", "eth0")
            self.ip("-n", ns, "link", "set", "eth0", "up")
            self.ip("-n", self.CORE, "link", "set", f"port{i}", "master", "br0")
            self.ip("-n", self.CORE, "link", "set", f"port{i}", "up")
        return self

    def cut(self, host):
        """Unplugs a host: its cable (the bridge port) goes down."""
        self.ip("-n", self.CORE, "link", "set", f"port{host}", "down")

    def __exit__(self, *exc):
        for ns in [self.CORE, *self.hosts]:
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)


def in_namespace(ns, command):
    return ["ip", "netns", "exec", ns, *map(str, command)]


def partition(results, args):
    bench.log("4. a host cut off by a network partition (network namespaces)")
    if os.geteuid() != 0 or not shutil.which("ip"):
        bench.log("   needs root and iproute2 (ip netns): skipped")
        return
    core = Namespaces.CORE
    with Namespaces(3) as net, tempfile.TemporaryDirectory() as store:
        nats = subprocess.Popen(in_namespace(core, [nats_binary(), "-js", "-sd", store, "-a", net.CORE_ADDRESS,
                                                    "-p", "4222"]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"nats://{net.CORE_ADDRESS}:4222"
        time.sleep(0.5)
        hosts = [subprocess.Popen(in_namespace(ns, [WORKER, "--nats", url, "--name", ns, "--workers", "1",
                                                   "--mode", "threads", "--log-level", "error"]),
                                  stdout=subprocess.DEVNULL) for ns in net.hosts]
        gateway = subprocess.Popen(in_namespace(core, [bench.SERVER, "--port", "0", "--nats", url, "--workers", "0",
                                                       "--log-level", "warn"]), stdout=subprocess.PIPE, text=True)
        try:
            port = int(gateway.stdout.readline().rsplit(":", 1)[1])

            def call(request):
                out = subprocess.run(in_namespace(core, [bench.CLIENT, "call", "--port", port, request]),
                                     capture_output=True, text=True, check=True).stdout
                return json.loads(out)["result"]

            deadline = time.monotonic() + 15
            while sum(h["alive"] for h in call('{"cmd":"stats"}').get("hosts", [])) < 3:
                if time.monotonic() > deadline:
                    raise RuntimeError("the hosts did not join through the namespaces")
                time.sleep(0.2)
            with tempfile.NamedTemporaryFile(suffix=".json") as report_file:
                run = subprocess.Popen(in_namespace(core, [bench.CLIENT, "--port", port, "-c", "6", "-n", "60",
                                                           "--size", "20000000", "--verify", "--timeout", "60s",
                                                           "--json", report_file.name]), stdout=subprocess.DEVNULL)
                time.sleep(1.0)
                net.cut(0)
                run.wait(timeout=300)
                report = json.load(open(report_file.name))
            stats = call('{"cmd":"stats"}')
        finally:
            for process in [gateway, *hosts, nats]:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    counts = report["counts"]
    answered_once = counts["ok"] == counts["sent"] and counts["duplicates"] == 0 \
        and counts["missing"] == 0 and counts["mismatches"] == 0
    remote = stats["remote"]
    max_ms = report["latency"]["max_us"] / 1000
    results.add("faults_partition", "360 jobs, a host cut off mid-run (its link down, in network namespaces): "
                "every request answered once, results verified", counts["ok"], counts["sent"], "ok replies", "all",
                bench.verdict(answered_once),
                f"redelivered {remote['redelivered']}, duplicates dropped {remote['duplicates_dropped']}, "
                f"slowest reply {max_ms:.0f} ms (time to recover)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--only", nargs="*", help="overhead, key, scaling, faults, broker, partition")
    args = parser.parse_args()
    # tc-worker and tc-server --nats are the `nats` feature.
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bins", "--features", "nats"], cwd=ROOT, check=True)
    results = bench.Results()
    for name, section in (("overhead", overhead), ("key", key), ("scaling", scaling), ("faults", faults),
                          ("broker", broker), ("partition", partition)):
        if not args.only or name in args.only:
            section(results, args)
    today = datetime.date.today().isoformat()
    out = ROOT / "results"
    csv_path, md_path = out / f"hosts-{today}.csv", out / f"hosts-{today}.md"
    rows = results.rows
    # A partial run (--only) replaces its own rows in the day's results and
    # keeps the others; notes written below the table are kept too.
    if args.only and csv_path.exists():
        measured = {r["key"] for r in rows}
        kept = [r for r in csv.DictReader(open(csv_path)) if r["key"] not in measured]
        rows = kept + rows
    notes = ""
    if md_path.exists():
        text = md_path.read_text()
        notes = text[text.index("\n## "):] if "\n## " in text else ""
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(results.rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("Model name")), "?")
    with open(md_path, "w") as f:
        f.write(f"# Worker hosts over NATS, {today}\n\n")
        f.write(f"Command: `python3 scripts/bench_hosts.py --repeats {args.repeats} --duration {args.duration}`"
                + (f" (this time only: {' '.join(args.only)}; the other rows are from earlier runs of the day)"
                   if args.only else "") + "\n\n")
        nats_version = subprocess.run([nats_binary(), "--version"], capture_output=True, text=True).stdout.strip()
        f.write(f"Machine: {platform.machine()}, {model}, {os.cpu_count()} cores; {nats_version}; release builds; "
                "every process on loopback (the partition run: in network namespaces). Medians; runs alternate "
                "between the two sides compared.\n\n")
        f.write("| comparison | ours | reference | unit | ratio | target | met | note |\n|---|---|---|---|---|---|---|---|\n")
        for r in rows:
            f.write(f"| {r['comparison']} | {bench.fmt(r['ours'])} | {bench.fmt(r['reference'])} | {r['unit']} | "
                    f"{'' if r['ratio'] in (None, '') else r['ratio']} | {r['target']} | {r['met']} | {r['note']} |\n")
        f.write(notes)
    bench.log(f"wrote results/hosts-{today}.md and .csv")


if __name__ == "__main__":
    main()
