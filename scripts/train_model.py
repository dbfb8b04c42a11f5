#!/usr/bin/env python3
"""Train ThreadCenter's default fire detector and write everything it ships.

    python3 -m pip install -r scripts/requirements-train.txt
    python3 scripts/train_model.py            # ~5 minutes on 2 cores

The network is small on purpose (about 33 MFLOP and 0.3 M parameters per
150x150 RGB image), written here in plain numpy so that every step -- im2col,
the matrix products, the backward pass -- can be read next to its Rust twin in
src/work/model/. No framework, no download: the script draws its own data set.

The data set is synthetic and that is its limit. "Fire" scenes are flame-like
blobs (white-yellow core, orange body, red fringe, flickering edges) over
random day or night backgrounds; "no fire" scenes are skies, ground, and
random shapes -- including red, orange and yellow ones, sunsets and lamps, so
that "is there orange?" is not enough to win. A model trained on this
recognises *these* pictures; it says nothing reliable about photographs of
real fires. The held-out accuracy printed at the end (and written into the
model's metadata and models/training.json) is measured on scenes it never saw,
drawn by the same generator.

Writes, under models/:
  fire-cnn.onnx            the served model: the same weights as an ONNX graph
                           (with scripts/onnx_models.py, which also writes the
                           test models and onnxruntime's reference answers)
  fire-cnn.safetensors     the weights, with the architecture in the metadata
  reference/fire-cnn-pairs.safetensors
                           input -> output pairs the Rust tests check to 1e-4
  samples/                 a few fire / no-fire images for demos and tests
  samples.json, training.json
                           what each sample is, and the training run's figures
"""

import argparse
import hashlib
import json
import os
import time

import numpy as np
from PIL import Image
from safetensors.numpy import save_file

SIZE = 150  # IdentyFire's input: 150x150 RGB, pixels scaled by 1/255

# ---------------------------------------------------------------- data set


def _grid():
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    return ys / SIZE, xs / SIZE


YS, XS = _grid()


def background(rng):
    """A sky-over-ground scene, by day, at dusk, or at night."""
    kind = rng.choice(["day", "dusk", "night", "indoor"])
    horizon = rng.uniform(0.35, 0.75)
    if kind == "day":
        top, bottom = rng.uniform([60, 110, 170], [140, 190, 250]), rng.uniform([150, 190, 220], [220, 230, 255])
    elif kind == "dusk":  # orange-pink skies: a hard negative for "orange means fire"
        top, bottom = rng.uniform([40, 30, 80], [110, 70, 140]), rng.uniform([200, 90, 40], [255, 170, 90])
    elif kind == "night":
        top, bottom = rng.uniform([0, 0, 10], [30, 30, 60]), rng.uniform([20, 20, 40], [60, 60, 90])
    else:
        top, bottom = rng.uniform([90, 80, 70], [200, 190, 170]), rng.uniform([120, 110, 90], [230, 220, 200])
    t = np.clip(YS / horizon, 0, 1)[..., None]
    sky = top * (1 - t) + bottom * t
    ground_color = rng.uniform([20, 40, 10], [120, 140, 90]) if kind != "indoor" else rng.uniform(60, 160, 3)
    if kind == "night":
        ground_color *= 0.3
    ground = ground_color * (0.8 + 0.4 * (YS[..., None] - horizon))
    img = np.where((YS > horizon)[..., None], ground, sky)
    return img.astype(np.float32), kind


def add_shapes(img, rng, count, warm_bias):
    """Rectangles and discs in random colours; with warm_bias, often red/orange/yellow."""
    for _ in range(count):
        if rng.random() < warm_bias:
            color = rng.uniform([180, 40, 0], [255, 200, 60])  # a red car, an orange sign, a lamp
        else:
            color = rng.uniform(0, 255, 3)
        cy, cx = rng.uniform(0.1, 0.9, 2)
        h, w = rng.uniform(0.04, 0.25, 2)
        if rng.random() < 0.5:
            mask = (np.abs(YS - cy) < h / 2) & (np.abs(XS - cx) < w / 2)
        else:
            mask = ((YS - cy) / h) ** 2 + ((XS - cx) / w) ** 2 < 0.25
        img[mask] = color
    return img


def add_flame(img, rng):
    """One flame: a teardrop whose heat fades from a white-yellow core to a red fringe."""
    cx, base = rng.uniform(0.15, 0.85), rng.uniform(0.55, 0.98)
    height, width = rng.uniform(0.2, 0.6), rng.uniform(0.06, 0.2)
    up = np.clip((base - YS) / height, 0, 1)  # 0 at the base, 1 at the tip
    below = np.clip((YS - base) / (0.3 * height), 0, None)
    wobble = 0.03 * np.sin(YS * rng.uniform(20, 50) + rng.uniform(0, 6.3))
    half_width = width * (1 - up) ** 0.7 + 1e-3
    heat = np.exp(-(((XS - cx - wobble) / half_width) ** 2) - 4 * below**2) * (up > 0) * (1 - up**2)
    heat = np.clip(heat * rng.uniform(1.0, 1.6) + rng.normal(0, 0.05, heat.shape), 0, 1)
    core = np.array([255, 250, 210], np.float32)
    body = np.array([255, 150, 20], np.float32)
    fringe = np.array([200, 40, 5], np.float32)
    h = heat[..., None]
    color = np.where(h > 0.6, body + (core - body) * (h - 0.6) / 0.4, fringe + (body - fringe) * h / 0.6)
    alpha = np.clip(h * 2.0, 0, 1)
    return img * (1 - alpha) + color * alpha


def scene(rng, fire):
    img, _ = background(rng)
    img = add_shapes(img, rng, rng.integers(0, 6), warm_bias=0.4)
    if fire:
        for _ in range(rng.integers(1, 4)):
            img = add_flame(img, rng)
        if rng.random() < 0.5:  # smoke
            haze = np.exp(-(((YS - rng.uniform(0.1, 0.4)) / 0.2) ** 2))[..., None] * rng.uniform(0.2, 0.5)
            img = img * (1 - haze) + 120 * haze
    img = img * rng.uniform(0.7, 1.2) + rng.normal(0, 6, img.shape)  # exposure and sensor noise
    return np.clip(img, 0, 255).astype(np.uint8)


def dataset(rng, count):
    labels = rng.random(count) < 0.5
    images = np.stack([scene(rng, bool(fire)) for fire in labels])
    return images, labels.astype(np.float32)


# ------------------------------------------------------------------ layers
# Layout is NHWC everywhere, as in the Rust forward pass. A convolution's
# weight is [out, kh, kw, in]; a dense layer's is [in, out].


def im2col(x, k):
    """[B,H,W,C] -> [B*H'*W', k*k*C], columns ordered (dy, dx, c)."""
    b, h, w, c = x.shape
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))  # B,H',W',C,k,k
    return windows.transpose(0, 1, 2, 4, 5, 3).reshape(b * (h - k + 1) * (w - k + 1), k * k * c)


def conv_forward(x, weight, bias):
    f, k, _, c = weight.shape
    b, h, w, _ = x.shape
    cols = im2col(x, k)
    out = cols @ weight.reshape(f, -1).T + bias
    return out.reshape(b, h - k + 1, w - k + 1, f), cols


def conv_backward(dout, x_shape, cols, weight):
    f, k, _, c = weight.shape
    b, h, w, _ = x_shape
    ho, wo = h - k + 1, w - k + 1
    d2 = dout.reshape(-1, f)
    dweight = (d2.T @ cols).reshape(weight.shape)
    dbias = d2.sum(axis=0)
    dcols = (d2 @ weight.reshape(f, -1)).reshape(b, ho, wo, k, k, c)
    dx = np.zeros(x_shape, dtype=dout.dtype)
    for dy in range(k):
        for dx_ in range(k):
            dx[:, dy : dy + ho, dx_ : dx_ + wo, :] += dcols[:, :, :, dy, dx_, :]
    return dx, dweight, dbias


def pool_forward(x):
    """2x2 max pooling, stride 2; an odd last row or column is dropped."""
    b, h, w, c = x.shape
    hp, wp = h // 2, w // 2
    blocks = x[:, : hp * 2, : wp * 2, :].reshape(b, hp, 2, wp, 2, c)
    return blocks.max(axis=(2, 4)), blocks


def pool_backward(dout, x_shape, blocks, out):
    b, h, w, c = x_shape
    hp, wp = h // 2, w // 2
    mask = blocks == out[:, :, None, :, None, :]
    dblocks = mask * dout[:, :, None, :, None, :]
    dx = np.zeros(x_shape, dtype=dout.dtype)
    dx[:, : hp * 2, : wp * 2, :] = dblocks.reshape(b, hp * 2, wp * 2, c)
    return dx


CONVS = [("conv1", 3, 8), ("conv2", 8, 16), ("conv3", 16, 32)]
HIDDEN = 32


def init_params(rng):
    params = {}
    for name, cin, cout in CONVS:
        params[f"{name}.weight"] = (rng.normal(0, np.sqrt(2 / (9 * cin)), (cout, 3, 3, cin))).astype(np.float32)
        params[f"{name}.bias"] = np.zeros(cout, np.float32)
    side = SIZE
    for _ in CONVS:
        side = (side - 2) // 2
    flat = side * side * CONVS[-1][2]
    params["fc1.weight"] = rng.normal(0, np.sqrt(2 / flat), (flat, HIDDEN)).astype(np.float32)
    params["fc1.bias"] = np.zeros(HIDDEN, np.float32)
    params["fc2.weight"] = rng.normal(0, np.sqrt(1 / HIDDEN), (HIDDEN, 1)).astype(np.float32)
    params["fc2.bias"] = np.zeros(1, np.float32)
    return params


def architecture():
    """The layer list stored in the file's metadata; the Rust loader follows it."""
    layers = []
    for name, _, _ in CONVS:
        layers += [
            {"type": "conv2d", "weight": f"{name}.weight", "bias": f"{name}.bias"},
            {"type": "relu"},
            {"type": "maxpool2d", "size": 2},
        ]
    layers += [
        {"type": "flatten"},
        {"type": "dense", "weight": "fc1.weight", "bias": "fc1.bias"},
        {"type": "relu"},
        {"type": "dense", "weight": "fc2.weight", "bias": "fc2.bias"},
        {"type": "sigmoid"},
    ]
    return layers


def forward(params, x, keep=False):
    """x: [B,150,150,3] floats in [0,1]. Returns logits [B] (and the tape)."""
    tape = []
    for name, _, _ in CONVS:
        shape = x.shape
        y, cols = conv_forward(x, params[f"{name}.weight"], params[f"{name}.bias"])
        r = np.maximum(y, 0)
        p, blocks = pool_forward(r)
        tape.append((name, shape, cols, y, r.shape, blocks, p))
        x = p
    flat = x.reshape(x.shape[0], -1)
    h = flat @ params["fc1.weight"] + params["fc1.bias"]
    hr = np.maximum(h, 0)
    logits = (hr @ params["fc2.weight"] + params["fc2.bias"])[:, 0]
    return (logits, (tape, x.shape, flat, h, hr)) if keep else logits


def backward(params, tape_all, dlogits):
    tape, pooled_shape, flat, h, hr = tape_all
    grads = {}
    d = dlogits[:, None]
    grads["fc2.weight"] = hr.T @ d
    grads["fc2.bias"] = d.sum(axis=0)
    dh = (d @ params["fc2.weight"].T) * (h > 0)
    grads["fc1.weight"] = flat.T @ dh
    grads["fc1.bias"] = dh.sum(axis=0)
    dx = (dh @ params["fc1.weight"].T).reshape(pooled_shape)
    for name, shape, cols, y, r_shape, blocks, p in reversed(tape):
        dr = pool_backward(dx, r_shape, blocks, p)
        dy = dr * (y > 0)
        dx, grads[f"{name}.weight"], grads[f"{name}.bias"] = conv_backward(dy, shape, cols, params[f"{name}.weight"])
    return grads


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def scale(images):
    return images.astype(np.float32) / 255.0


# ---------------------------------------------------------------- training


def train(params, images, labels, epochs, batch, lr, rng):
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(v) for k, v in params.items()}
    step = 0
    for epoch in range(epochs):
        order = rng.permutation(len(images))
        started, loss_sum, correct = time.time(), 0.0, 0
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            x, y = scale(images[idx]), labels[idx]
            logits, tape = forward(params, x, keep=True)
            prob = sigmoid(logits)
            loss_sum += float(-np.sum(y * np.log(prob + 1e-7) + (1 - y) * np.log(1 - prob + 1e-7)))
            correct += int(np.sum((prob > 0.5) == (y > 0.5)))
            grads = backward(params, tape, (prob - y) / len(idx))  # d(mean BCE)/d(logit)
            step += 1
            for k in params:  # Adam
                m[k] = 0.9 * m[k] + 0.1 * grads[k]
                v[k] = 0.999 * v[k] + 0.001 * grads[k] ** 2
                mhat, vhat = m[k] / (1 - 0.9**step), v[k] / (1 - 0.999**step)
                params[k] -= (lr * mhat / (np.sqrt(vhat) + 1e-8)).astype(np.float32)
        n = len(order)
        print(f"epoch {epoch + 1}/{epochs}: loss {loss_sum / n:.4f}, train accuracy {correct / n:.3f} "
              f"({time.time() - started:.0f} s)", flush=True)


def predict(params, images, batch=64):
    out = []
    for i in range(0, len(images), batch):
        out.append(sigmoid(forward(params, scale(images[i : i + batch]))))
    return np.concatenate(out)


def reference_scores(params, images):
    """Scores in float64, so the references are as exact as the weights allow."""
    p64 = {k: v.astype(np.float64) for k, v in params.items()}
    return sigmoid(forward(p64, images.astype(np.float64) / 255.0))


# ------------------------------------------------------------------ output


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(here, "..", "models"))
    parser.add_argument("--train", type=int, default=3000, help="training scenes")
    parser.add_argument("--heldout", type=int, default=1000, help="held-out scenes")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--reuse", action="store_true",
                        help="skip training: load the weights already in --out and redo the rest")
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(os.path.join(out, "samples"), exist_ok=True)
    os.makedirs(os.path.join(out, "reference"), exist_ok=True)

    rng = np.random.default_rng(args.seed)
    print(f"drawing {args.train} training and {args.heldout} held-out scenes...", flush=True)
    train_x, train_y = dataset(rng, args.train)
    held_x, held_y = dataset(np.random.default_rng(args.seed + 1), args.heldout)

    params = init_params(rng)
    if args.reuse:
        from safetensors.numpy import load_file
        params = load_file(os.path.join(out, "fire-cnn.safetensors"))
    else:
        train(params, train_x, train_y, args.epochs, args.batch, args.lr, rng)

    scores = predict(params, held_x)
    predicted = scores > 0.5
    truth = held_y > 0.5
    accuracy = float(np.mean(predicted == truth))
    tp = int(np.sum(predicted & truth))
    fp = int(np.sum(predicted & ~truth))
    fn = int(np.sum(~predicted & truth))
    tn = int(np.sum(~predicted & ~truth))
    print(f"held-out accuracy {accuracy:.4f} (TP {tp}, FP {fp}, FN {fn}, TN {tn})")

    flops = 0
    side = SIZE
    for _, cin, cout in CONVS:
        side -= 2
        flops += 2 * side * side * 9 * cin * cout
        side //= 2
    flops += 2 * (side * side * CONVS[-1][2] * HIDDEN + HIDDEN)
    n_params = int(sum(v.size for v in params.values()))

    metadata = {
        "name": "fire-cnn",
        "format": "threadcenter-cnn-v1",
        "input": json.dumps({"height": SIZE, "width": SIZE, "channels": 3, "scale": 1 / 255}),
        "architecture": json.dumps(architecture()),
        "trained_on": f"{args.train} synthetic scenes drawn by scripts/train_model.py (seed {args.seed})",
        "heldout_accuracy": f"{accuracy:.4f}",
        "heldout_confusion": json.dumps({"tp": tp, "fp": fp, "fn": fn, "tn": tn}),
    }
    model_path = os.path.join(out, "fire-cnn.safetensors")
    save_file({k: np.ascontiguousarray(v) for k, v in params.items()}, model_path, metadata=metadata)
    checksum = hashlib.sha256(open(model_path, "rb").read()).hexdigest()

    # Reference pairs: raw pixels in, the float64 score out. Two held-out
    # scenes of each class plus two noise images that no training scene
    # looks like (they exercise every layer with unusual values).
    ref_rng = np.random.default_rng(args.seed + 2)
    picks = list(np.where(truth)[0][:2]) + list(np.where(~truth)[0][:2])
    noise = ref_rng.integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    ref_inputs = np.concatenate([held_x[picks], noise])
    ref_outputs = reference_scores(params, ref_inputs).astype(np.float64)
    save_file(
        {"inputs": ref_inputs, "outputs": ref_outputs},
        os.path.join(out, "reference", "fire-cnn-pairs.safetensors"),
        metadata={"model_sha256": checksum, "about": "uint8 HWC pixels -> sigmoid score (float64)"},
    )

    # Sample images in every format the server decodes. Drawn with their own
    # seed and kept only when the model classifies them correctly, so demos
    # and tests show the model working; the held-out accuracy above is the
    # honest measure of how often it does.
    sample_rng = np.random.default_rng(args.seed + 3)
    wanted = [("fire", True, "png"), ("fire", True, "jpg"), ("fire", True, "gif"),
              ("no-fire", False, "png"), ("no-fire", False, "jpg"), ("no-fire", False, "bmp")]
    samples = []
    for number, (label, fire, ext) in enumerate(wanted, start=1):
        name = f"{label}-{number}.{ext}"
        path = os.path.join(out, "samples", name)
        while True:
            picture = Image.fromarray(scene(sample_rng, fire))
            if ext == "jpg":  # a larger JPEG, so the server's resize step is exercised too
                picture = picture.resize((300, 225), Image.BILINEAR)
                picture.save(path, quality=90)
            else:
                picture.save(path)
            # Score the file as the server will see it: decoded, and resized
            # back to 150x150 with a bilinear (triangle) filter.
            seen = np.asarray(Image.open(path).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))
            score = float(reference_scores(params, seen[None])[0])
            if (score > 0.5) == fire and abs(score - 0.5) > 0.3:
                break
        samples.append((name, fire, score))

    with open(os.path.join(out, "samples.json"), "w") as f:
        json.dump([{"file": n, "fire": fire, "score": round(s, 6)} for n, fire, s in samples], f, indent=2)
        f.write("\n")

    summary = {
        "parameters": n_params,
        "flops_per_image": flops,
        "heldout_accuracy": accuracy,
        "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
        "sha256": checksum,
        "bytes": os.path.getsize(model_path),
    }
    print(json.dumps(summary, indent=2))
    with open(os.path.join(out, "training.json"), "w") as f:
        json.dump({**summary, "args": vars(args) | {"out": "models"}}, f, indent=2)
        f.write("\n")

    # The served model: the same weights as an ONNX graph, with the test
    # models and onnxruntime's reference answers rebuilt beside it.
    if out == os.path.abspath(os.path.join(here, "..", "models")):
        import onnx_models
        onnx_models.write_all()


if __name__ == "__main__":
    main()
