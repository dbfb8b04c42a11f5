#!/usr/bin/env python3
"""An IdentyFire-style client, standard library only, for tc-server.

IdentyFire clients speak a small RPC over TCP: each call opens a connection,
sends one frame (4-byte big-endian length + UTF-8 JSON)
{"method": ..., "params": {...}}, reads one reply frame, and closes. This
script makes the calls such a client makes -- health check, model info,
mutex acquire/release, predict_image, predict_batch -- and checks every
answer's shape, so it is both a demo and a compatibility test:

    cargo run --release --bin tc-server &          # then:
    python3 scripts/identyfire_client.py --port 5050

Exit status 0 when every check passed.
"""

import argparse
import base64
import glob
import json
import os
import socket
import ssl
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLES = os.path.join(HERE, "..", "models", "samples")


def call(host, port, method, params=None, timeout=30.0, tls=None):
    """One IdentyFire call: a fresh connection (over TLS when `tls`, an
    ssl.SSLContext, is given), one request, one reply."""
    request = {"method": method}
    if params is not None:
        request["params"] = params
    payload = json.dumps(request).encode("utf-8")
    with socket.create_connection((host, port), timeout=timeout) as raw:
        sock = tls.wrap_socket(raw, server_hostname=host) if tls else raw
        sock.sendall(struct.pack(">I", len(payload)) + payload)
        (length,) = struct.unpack(">I", recv_exactly(sock, 4))
        return json.loads(recv_exactly(sock, length).decode("utf-8"))


def recv_exactly(sock, count):
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("the server closed the connection mid-reply")
        data += chunk
    return data


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5050)
    parser.add_argument("--images", default=SAMPLES, help="directory of sample images")
    parser.add_argument("--tls", action="store_true", help="connect over TLS")
    parser.add_argument("--cafile", help="PEM CA that signed the server's certificate (default: the system's)")
    args = parser.parse_args()
    tls = ssl.create_default_context(cafile=args.cafile) if args.tls else None

    failures = []

    def check(what, condition, reply):
        print(f"{'ok  ' if condition else 'FAIL'} {what}: {json.dumps(reply)[:160]}")
        if not condition:
            failures.append(what)

    def rpc(method, params=None):
        return call(args.host, args.port, method, params, tls=tls)

    health = rpc("health_check")
    check("health_check", health.get("status") == "online" and health.get("model_loaded") is True
          and "uptime" in health and "mutex_locked" in health and "stats" in health, health)

    model = rpc("get_current_model")
    # IdentyFire's GUI reads response["model"]["name"] to show the model status.
    check("get_current_model", model.get("success") is True and model.get("model_name")
          and isinstance(model.get("model"), dict) and model["model"].get("name") == model["model_name"]
          and model["model"].get("loaded") is True and isinstance(model["model"].get("info"), str), model)

    models = rpc("get_models")
    check("get_models", models.get("success") is True and isinstance(models.get("models"), list), models)

    missing = rpc("mutex_acquire", {})
    check("mutex_acquire without client_id",
          missing == {"success": False, "error": "Missing client_id"}, missing)

    files = sorted(f for f in glob.glob(os.path.join(args.images, "*"))
                   if f.lower().endswith((".png", ".jpg", ".jpeg", ".bmp", ".gif")))
    if not files:
        print(f"no images in {args.images}")
        return 2
    images = [(os.path.basename(f), base64.b64encode(open(f, "rb").read()).decode("ascii")) for f in files]
    me = f"identyfire-client-{os.getpid()}"

    refused = rpc("predict_image", {"client_id": me, "image_b64": images[0][1], "filename": images[0][0]})
    check("predict_image without the lock",
          refused == {"success": False, "error": "Mutex Violation - Acquire lock first"}, refused)

    granted = rpc("mutex_acquire", {"client_id": me})
    check("mutex_acquire", granted.get("success") is True and granted.get("status") == "GRANTED"
          and granted.get("queue_position") == 0 and isinstance(granted.get("server_timestamp"), int), granted)

    other = rpc("mutex_acquire", {"client_id": me + "-other"})
    check("a second client is queued", other.get("status") == "QUEUED" and other.get("queue_position") == 1, other)

    for name, data in images:
        reply = rpc("predict_image", {"client_id": me, "image_b64": data, "filename": name})
        expected = name.startswith("fire")
        check(f"predict_image {name}", reply.get("success") is True and reply.get("fire_detected") is expected
              and 0 <= reply.get("raw_score", -1) <= 1 and 0 <= reply.get("confidence", -1) <= 100, reply)

    bad = rpc("predict_image", {"client_id": me, "image_b64": "not base64 at all!", "filename": "x.jpg"})
    check("predict_image with bad data", bad.get("success") is False and "error" in bad, bad)

    batch = [{"filename": n, "image_b64": d} for n, d in images]
    batch.append({"filename": "broken.jpg", "image_b64": base64.b64encode(b"plain text").decode()})
    reply = rpc("predict_batch", {"client_id": me, "images": batch})
    results = reply.get("results", [])
    check("predict_batch", reply.get("success") is True and len(results) == len(images)
          and all({"filename", "fire_detected", "confidence", "raw_prediction"} <= set(r) for r in results)
          and len(reply.get("errors", [])) == 1
          and reply.get("fires_detected") == sum(1 for n, _ in images if n.startswith("fire")), reply)

    escape = rpc("load_model", {"model_path": "../Cargo.toml"})
    check("load_model outside --models-dir is refused", escape.get("success") is False, escape)

    not_owner = rpc("mutex_release", {"client_id": me + "-other"})
    check("mutex_release by a non-owner", not_owner.get("success") is False, not_owner)
    released = rpc("mutex_release", {"client_id": me})
    check("mutex_release by the owner", released.get("success") is True, released)
    handed = rpc("mutex_acquire", {"client_id": me + "-other"})
    check("the queued client got the lock", handed.get("status") == "GRANTED", handed)
    rpc("mutex_release", {"client_id": me + "-other"})

    unknown = rpc("format_disk")
    check("unknown method", unknown.get("success") is False and "Unknown method" in unknown.get("error", ""), unknown)

    print(f"Done: {len(failures)} failed checks")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
