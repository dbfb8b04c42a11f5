#!/usr/bin/env python3
"""A stand-in for the original Python ThreadCenter server, for tests.

It behaves as the original did where a client can tell: framed JSON
(4-byte big-endian length, then UTF-8 JSON); `{"id", "cmd": "compute", "n"}`
answered with `{"id", "result"}`, the id coming back as a string; anything
else answered with `{"id", "error": "unknown command"}` — no `stats`; and
replies routed through ONE id -> connection map shared by all connections,
filled by the readers and emptied by a worker thread. A client whose ids
repeat across its connections gets replies on the wrong connection here, as
it would against the original. It listens on a free loopback port, prints
`listening on 127.0.0.1:PORT`, and stops when its standard input closes, so
a test that dies leaves nothing behind.
"""

import json
import queue
import socketserver
import struct
import sys
import threading

# The original's routing: job id -> the connection's send function, for all
# connections together, and one queue of jobs for the worker.
PENDING = {}
PENDING_LOCK = threading.Lock()
JOBS = queue.Queue(maxsize=1000)


def compute(n):
    """The original job: a Fibonacci-like recurrence folded into a checksum."""
    acc, a, b = 0, 0, 1
    for _ in range(max(1, int(n))):
        a, b = b, (a + b) % 10_000_019
        acc = (acc + a * 31 + b * 17) % 1_000_000_007
    return acc


def read_exact(stream, count):
    data = stream.read(count)
    return data if len(data) == count else None


def worker():
    """Runs queued jobs and sends each result to whichever connection the
    shared map names for its id."""
    while True:
        request_id, n = JOBS.get()
        result = compute(n)
        with PENDING_LOCK:
            send = PENDING.pop(request_id, None)
        if send is not None:
            send({"id": request_id, "result": result})


class Connection(socketserver.StreamRequestHandler):
    def handle(self):
        write_lock = threading.Lock()

        def send(reply):
            body = json.dumps(reply).encode("utf-8")
            with write_lock:
                self.wfile.write(struct.pack(">I", len(body)) + body)

        while True:
            header = read_exact(self.rfile, 4)
            if header is None:
                return
            payload = read_exact(self.rfile, struct.unpack(">I", header)[0])
            if payload is None:
                return
            request = json.loads(payload)
            request_id = str(request.get("id"))
            if request.get("cmd") == "compute":
                with PENDING_LOCK:
                    PENDING[request_id] = send
                JOBS.put((request_id, int(request.get("n", 1_000_000))))
            else:
                send({"id": request_id, "error": "unknown command"})


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    threading.Thread(target=worker, daemon=True).start()
    server = Server(("127.0.0.1", 0), Connection)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    sys.stdin.read()  # until the test closes our stdin (or exits)
    server.shutdown()


if __name__ == "__main__":
    main()
