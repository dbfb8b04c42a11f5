#!/usr/bin/env python3
"""A ThreadCenter client in plain Python (standard library only).

Shows the whole protocol in a few lines: every message is a frame, a 4-byte
big-endian length followed by that many bytes of UTF-8 JSON. Run it against a
server started with `tc-server` (or `tc-server --port 0`, then pass the port):

    python3 scripts/example_client.py --port 5050

It runs four small demos and exits non-zero if any reply is wrong:
  1. ping
  2. compute, checked against the original project's reference values
  3. pipelining: many requests on one connection before reading any reply;
     replies may come back in any order and are matched by id
  4. the original ThreadCenter client's pattern: one connection per thread,
     {"id","cmd":"compute","n"} requests, closing line "Done: N responses in X.XXXs"
"""

import argparse
import json
import socket
import ssl
import struct
import sys
import threading
import time

# n -> result, published with the original Python ThreadCenter.
REFERENCE = {0: 48, 1: 48, 2: 113, 10: 8360, 1000: 933214789, 500000: 869502129}


def send_frame(sock, message):
    """Sends one JSON message as a frame."""
    payload = json.dumps(message).encode("utf-8")
    sock.sendall(struct.pack(">I", len(payload)) + payload)


def recv_exact(sock, count):
    """Reads exactly `count` bytes, or raises if the server closes first."""
    chunks = []
    while count:
        chunk = sock.recv(count)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def recv_frame(sock):
    """Reads one frame and returns the decoded JSON message."""
    (length,) = struct.unpack(">I", recv_exact(sock, 4))
    return json.loads(recv_exact(sock, length).decode("utf-8"))


# An ssl.SSLContext when --tls is given (a server started with --tls-cert).
TLS = None


def tls_context(cafile, certfile=None, keyfile=None):
    """Trusts `cafile` (or the system's CAs), checks the server's name, and
    presents a client certificate for mutual TLS when given one."""
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if certfile:
        context.load_cert_chain(certfile, keyfile)
    return context


def connect(host, port, timeout):
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if TLS is not None:
        sock = TLS.wrap_socket(sock, server_hostname=host)
    return sock


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def demo_ping(host, port, timeout):
    with connect(host, port, timeout) as sock:
        send_frame(sock, {"id": "p1", "cmd": "ping"})
        reply = recv_frame(sock)
    check(reply == {"id": "p1", "ok": True, "pong": True}, f"ping reply {reply}")
    print(f"ping: {reply}")


def demo_compute(host, port, timeout):
    with connect(host, port, timeout) as sock:
        for i, (n, expected) in enumerate(REFERENCE.items()):
            send_frame(sock, {"id": i, "cmd": "compute", "n": n, "timing": True})
            reply = recv_frame(sock)
            check(reply.get("id") == i and reply.get("result") == expected, f"compute n={n}: {reply}")
            print(f"compute n={n}: {reply['result']} (queue {reply['queue_us']} us, service {reply['service_us']} us)")


def demo_pipelining(host, port, timeout, count=200):
    with connect(host, port, timeout) as sock:
        # Send everything first; the server works on the requests while we send.
        for i in range(count):
            send_frame(sock, {"id": f"req-{i}", "cmd": "compute", "n": i})
        answered = {}
        for _ in range(count):
            reply = recv_frame(sock)
            check(reply["id"] not in answered, f"duplicate reply {reply}")
            answered[reply["id"]] = reply["result"]
    check(len(answered) == count, f"{count - len(answered)} replies missing")
    check(answered["req-10"] == REFERENCE[10], "req-10 has the wrong result")
    in_order = list(answered) == [f"req-{i}" for i in range(count)]
    print(f"pipelining: {count} requests, {count} replies matched by id "
          f"({'in order' if in_order else 'out of order'})")


def demo_original_client(host, port, timeout, concurrency=4, requests=5, size=1000):
    """The original client: one connection per thread, sequential requests."""
    errors = []
    responses = [0]
    lock = threading.Lock()

    def worker(thread_id):
        try:
            with connect(host, port, timeout) as sock:
                for r in range(requests):
                    request_id = thread_id * 1000 + r
                    send_frame(sock, {"id": request_id, "cmd": "compute", "n": size})
                    reply = recv_frame(sock)
                    check(reply.get("id") == request_id, f"wrong id in {reply}")
                    check("result" in reply, f"no result in {reply}")
                    with lock:
                        responses[0] += 1
        except Exception as e:  # reported below; the demo must not hang
            errors.append(f"thread {thread_id}: {e}")

    start = time.time()
    threads = [threading.Thread(target=worker, args=(t,)) for t in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(not errors, "; ".join(errors))
    print(f"Done: {responses[0]} responses in {time.time() - start:.3f}s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5050)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per socket operation")
    parser.add_argument("--tls", action="store_true", help="connect over TLS")
    parser.add_argument("--cafile", help="PEM CA that signed the server's certificate (default: the system's)")
    parser.add_argument("--certfile", help="client certificate (PEM) for mutual TLS")
    parser.add_argument("--keyfile", help="its private key (PEM)")
    args = parser.parse_args()
    global TLS
    if args.tls:
        TLS = tls_context(args.cafile, args.certfile, args.keyfile)
    try:
        demo_ping(args.host, args.port, args.timeout)
        demo_compute(args.host, args.port, args.timeout)
        demo_pipelining(args.host, args.port, args.timeout)
        demo_original_client(args.host, args.port, args.timeout)
    except (AssertionError, OSError, ValueError) as e:
        print(f"example_client: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
