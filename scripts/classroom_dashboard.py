#!/usr/bin/env python3
"""Screenshots of the live dashboard for the classroom guide: the same
load on threads, processes and threads with the GIL, then a worker process
killed under load. Release builds; needs chromium and chromedriver
(apt-get install -y chromium chromium-driver). Writes results/classroom/dashboard-<moment>.png.

    python3 scripts/classroom_dashboard.py

Each page is opened about 9 s into a 40 s run and shot 6 s later (the
task stream then holds the run so far, the charts the last 6 s), in a
headless chromium at 1400x1000 (the crash: 1400x1500, to show the event
log) driven over WebDriver.
"""

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT / "target" / "release"
OUT = ROOT / "results" / "classroom"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """A headless chromium driven over WebDriver by chromedriver (the
    protocol is JSON over HTTP: a few urllib calls). Headless chromium's own
    --screenshot flag freezes the page's network after loading, so a live
    page is shot this way."""

    def __init__(self, height=1000):
        self.height = height

    def __enter__(self):
        self.port = free_port()
        self.driver = subprocess.Popen([CHROMEDRIVER, f"--port={self.port}"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                if self.call("GET", "/status")["value"]["ready"]:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        options = {"binary": CHROMIUM, "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                                                "--hide-scrollbars", f"--window-size=1400,{self.height}"]}
        answer = self.call("POST", "/session", {"capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}})
        self.session = answer["value"]["sessionId"]
        return self

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.load(answer)

    def shoot(self, url, path, settle):
        self.call("POST", f"/session/{self.session}/url", {"url": url})
        time.sleep(settle)
        png = self.call("GET", f"/session/{self.session}/screenshot")["value"]
        path.write_bytes(base64.b64decode(png))
        print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)

    def __exit__(self, *exc):
        try:
            self.call("DELETE", f"/session/{self.session}")
        finally:
            self.driver.kill()
            self.driver.wait()


def screenshot(url, path, settle=6, height=1000):
    with Browser(height) as browser:
        browser.shoot(url, path, settle)


def mode_shot(name, flags, size="2000000"):
    """A 40 s benchmark of an embedded farm with its dashboard, shot mid-run."""
    port = free_port()
    run = subprocess.Popen([RELEASE / "tc-client", "--embedded", "--dashboard", f"127.0.0.1:{port}", *flags,
                            "-c", "8", "--size", size, "-d", "40s", "--warmup", "0"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for line in run.stderr:
            if line.startswith("dashboard on "):
                break
        time.sleep(9)
        screenshot(f"http://127.0.0.1:{port}/", OUT / f"dashboard-{name}.png")
    finally:
        run.send_signal(signal.SIGINT)
        run.wait(timeout=60)


def crash_shot():
    """A worker process killed under load: the red mark, the event, the new pid."""
    metrics = free_port()
    server = subprocess.Popen([RELEASE / "tc-server", "--port", "0", "--mode", "processes", "--workers", "2",
                               "--metrics-addr", f"127.0.0.1:{metrics}", "--log-level", "warn"],
                              stdout=subprocess.PIPE, text=True)
    port = re.match(r"listening on .*:(\d+)", server.stdout.readline()).group(1)
    load = subprocess.Popen([RELEASE / "tc-client", "--port", port, "-c", "8", "--size", "2000000", "-d", "40s",
                             "--warmup", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(8)
        stats = json.loads(subprocess.run([RELEASE / "tc-client", "call", "--port", port, "stats"],
                                          capture_output=True, text=True, check=True).stdout)
        pid = stats["result"]["worker_list"][0]["pid"]
        os.kill(pid, signal.SIGKILL)
        print(f"killed worker 0 (pid {pid})", file=sys.stderr)
        time.sleep(1)
        # Taller: the event log (the replacement, the retry) is at the bottom.
        screenshot(f"http://127.0.0.1:{metrics}/", OUT / "dashboard-crash.png", settle=4, height=1500)
    finally:
        load.send_signal(signal.SIGINT)
        load.wait(timeout=60)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


def main():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        sys.exit("needs chromium and chromedriver: apt-get install -y chromium chromium-driver")
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bins"], cwd=ROOT, check=True)
    mode_shot("threads", ["--mode", "threads", "--workers", "2"])
    mode_shot("processes", ["--mode", "processes", "--workers", "2"])
    # Turns of 100 ms (CPython's 5 ms would be narrower than a pixel at the
    # page's 30 s) and jobs long enough to hold several: the lock's turns
    # then show as solid stripes alternating between the two rows.
    mode_shot("threads-gil", ["--mode", "threads", "--gil", "--switch-interval", "100ms", "--workers", "2"],
              size="100000000")
    crash_shot()


if __name__ == "__main__":
    main()
