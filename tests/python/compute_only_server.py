#!/usr/bin/env python3
"""A stand-in for the original Python ThreadCenter server, for tests.

It speaks only what the original spoke: framed JSON (4-byte big-endian
length, then UTF-8 JSON), `{"id", "cmd": "compute", "n"}` answered with
`{"id", "result"}` where the id comes back as a string, and anything else
answered with `{"id", "error": "unknown command"}` — no `stats`. It listens
on a free loopback port, prints `listening on 127.0.0.1:PORT`, and stops
when its standard input closes, so a test that dies leaves nothing behind.
"""

import json
import socketserver
import struct
import sys
import threading


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


class Connection(socketserver.StreamRequestHandler):
    def handle(self):
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
                reply = {"id": request_id, "result": compute(request.get("n", 1_000_000))}
            else:
                reply = {"id": request_id, "error": "unknown command"}
            body = json.dumps(reply).encode("utf-8")
            self.wfile.write(struct.pack(">I", len(body)) + body)


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    server = Server(("127.0.0.1", 0), Connection)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    sys.stdin.read()  # until the test closes our stdin (or exits)
    server.shutdown()


if __name__ == "__main__":
    main()
