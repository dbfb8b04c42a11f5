#!/usr/bin/env python3
"""ONNX files for ThreadCenter: the shipped fire detector as ONNX, the small
models the tests load, a bigger model for the benchmark, and the reference
answers onnxruntime gives for each.

    python3 -m pip install -r scripts/requirements-train.txt
    python3 scripts/onnx_models.py                  # all of the below
    python3 scripts/onnx_models.py --bench-model DIR  # only the benchmark's big model, into DIR

Writes:
  models/fire-cnn.onnx          the shipped network (from models/fire-cnn.safetensors,
                                the weights train_model.py trained), NHWC input
  tests/models/*.onnx           small models the tests load, good and refused
  tests/models/reference.json   onnxruntime's outputs for each good model on
                                inputs both sides can generate (see `probe`),
                                and the fire detector's six reference images

The tests compare the server's engine to these numbers to 1e-4 (and to a live
onnxruntime when the pinned version is installed), so `cargo test` never
needs Python packages.
"""

import argparse
import hashlib
import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPSET = 13
# The onnxruntime the committed reference numbers come from (the live test
# compares only against this version).
PINNED_ONNXRUNTIME = "1.32.0"


def probe(shape):
    """An input both this script and the Rust tests generate exactly: a
    32-bit multiplicative hash of each element's index, mapped to [0, 1)."""
    count = int(np.prod(shape))
    index = np.arange(count, dtype=np.uint64)
    hashed = (index * np.uint64(2654435761)) % np.uint64(1 << 32)
    return ((hashed >> np.uint64(8)).astype(np.float64) / float(1 << 24)).astype(np.float32).reshape(shape)


class Graph:
    """A tiny builder: nodes, weights and a running tensor name."""

    def __init__(self, rng=None):
        self.nodes, self.weights, self.count = [], [], 0
        self.rng = rng or np.random.default_rng(7)

    def name(self, prefix):
        self.count += 1
        return f"{prefix}{self.count}"

    def weight(self, array, prefix="w"):
        name = self.name(prefix)
        self.weights.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    def ints(self, values, prefix="shape"):
        name = self.name(prefix)
        self.weights.append(numpy_helper.from_array(np.array(values, dtype=np.int64), name))
        return name

    def op(self, op_type, inputs, **attributes):
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attributes))
        return out

    def conv(self, x, cin, cout, k=3, stride=1, pad=0, weight=None, bias=None):
        w = weight if weight is not None else self.rng.normal(0, np.sqrt(2 / (k * k * cin)), (cout, cin, k, k))
        b = bias if bias is not None else self.rng.normal(0, 0.05, cout)
        return self.op("Conv", [x, self.weight(w), self.weight(b)], kernel_shape=[k, k], strides=[stride, stride],
                       pads=[pad, pad, pad, pad])

    def model(self, x_name, x_shape, out, out_shape, metadata, name, more_inputs=(), check=True):
        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info(x_name, TensorProto.FLOAT, x_shape)]
            + [helper.make_tensor_value_info(extra, TensorProto.FLOAT, x_shape) for extra in more_inputs],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)],
            self.weights)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="threadcenter scripts/onnx_models.py")
        model.ir_version = 8
        for key, value in metadata.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        if check:
            onnx.checker.check_model(model)
        return model


def fire_cnn(params, metadata):
    """The shipped network as ONNX: NHWC input [N,150,150,3] (as the
    server's decoder produces it), transposed to NCHW for the convolutions
    and back before the flatten, so the dense weights keep their
    height-width-channel order."""
    g = Graph()
    x = g.op("Transpose", ["image"], perm=[0, 3, 1, 2])
    for name in ("conv1", "conv2", "conv3"):
        w = params[f"{name}.weight"].transpose(0, 3, 1, 2)  # [out,kh,kw,in] -> [out,in,kh,kw]
        x = g.conv(x, w.shape[1], w.shape[0], weight=w, bias=params[f"{name}.bias"])
        x = g.op("Relu", [x])
        x = g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    x = g.op("Transpose", [x], perm=[0, 2, 3, 1])
    x = g.op("Flatten", [x], axis=1)
    x = g.op("Gemm", [x, g.weight(params["fc1.weight"]), g.weight(params["fc1.bias"])])
    x = g.op("Relu", [x])
    x = g.op("Gemm", [x, g.weight(params["fc2.weight"]), g.weight(params["fc2.bias"])])
    x = g.op("Sigmoid", [x])
    return g.model("image", ["N", 150, 150, 3], x, ["N", 1], metadata, "fire-cnn")


def nchw_two_class():
    """NCHW input, padding and stride, batch norm, average pooling, a global
    average pool, Reshape, Gemm with transB, and a two-class Softmax."""
    g = Graph(np.random.default_rng(11))
    x = g.conv("pixels", 3, 8, k=5, stride=2, pad=2)
    x = g.op("BatchNormalization", [x, g.weight(g.rng.uniform(0.5, 1.5, 8)), g.weight(g.rng.normal(0, 0.1, 8)),
                                    g.weight(g.rng.normal(0, 0.1, 8)), g.weight(g.rng.uniform(0.5, 2, 8))],
             epsilon=1e-5)
    x = g.op("Relu", [x])
    x = g.op("AveragePool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    x = g.conv(x, 8, 16, k=1)
    x = g.op("Relu", [x])
    x = g.op("GlobalAveragePool", [x])
    x = g.op("Reshape", [x, g.ints([-1, 16])])
    x = g.op("Gemm", [x, g.weight(g.rng.normal(0, 0.3, (2, 16))), g.weight(np.array([0.1, -0.1]))], transB=1)
    x = g.op("Softmax", [x], axis=1)
    metadata = {"threadcenter.name": "nchw-two-class", "threadcenter.labels": "no fire,fire",
                "threadcenter.threshold": "0.6"}
    return g.model("pixels", ["N", 3, 32, 40], x, ["N", 2], metadata, "nchw-two-class")


def nhwc_sigmoid():
    """NHWC input, a 2x2 convolution with asymmetric size, MatMul + Add as
    the dense layer, and a sigmoid score."""
    g = Graph(np.random.default_rng(12))
    x = g.op("Transpose", ["image"], perm=[0, 3, 1, 2])
    x = g.conv(x, 3, 4, k=2)
    x = g.op("Relu", [x])
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[3, 3])
    x = g.op("Flatten", [x])
    x = g.op("MatMul", [x, g.weight(g.rng.normal(0, 0.1, (4 * 7 * 7, 1)))])
    x = g.op("Add", [x, g.weight(np.array([0.05]))])
    x = g.op("Sigmoid", [x])
    return g.model("image", [1, 22, 22, 3], x, [1, 1], {"threadcenter.scale": "0.00392156862745098"},
                   "nhwc-sigmoid")


# How exporters write the batch dimension, by file: (input, output, an
# intermediate tensor's value_info). Nothing at all (the dim has neither
# dim_value nor dim_param: what onnx.helper writes for None), an empty name,
# tf2onnx's unk__ names (a different one on the output), -1 (a dim_value
# onnxruntime reads as free), a fixed 4, and an input made free by hand in a
# graph that still names its batch elsewhere. A named batch ("N") and a fixed
# 1 are the other test models.
BATCH_VARIANTS = {
    "nchw-unnamed-batch": (None, None, None),
    "nchw-empty-name-batch": ("", "", None),
    "nchw-unk-batch": ("unk__12", "unk__13", None),
    "nchw-minus-one-batch": (-1, -1, None),
    "nchw-fixed-batch-4": (4, 4, None),
    "nchw-unnamed-batch-named-inside": (None, "batch_size", "batch_size"),
}


def batch_variant(name, batch_in, batch_out, batch_inside):
    """A small NCHW two-class classifier, the same weights in every variant
    (so an image gets the same score from each): a strided convolution,
    global average pooling, Gemm and Softmax."""
    g = Graph(np.random.default_rng(21))
    x = g.conv("input", 3, 4, k=3, stride=2, pad=1)
    conv = x
    x = g.op("Relu", [x])
    x = g.op("GlobalAveragePool", [x])
    x = g.op("Flatten", [x])
    x = g.op("Gemm", [x, g.weight(g.rng.normal(0, 0.5, (4, 2))), g.weight(np.array([0.2, -0.2]))])
    x = g.op("Softmax", [x], axis=1)
    model = g.model("input", [batch_in, 3, 20, 24], x, [batch_out, 2], {}, name)
    if batch_inside is not None:
        model.graph.value_info.append(
            helper.make_tensor_value_info(conv, TensorProto.FLOAT, [batch_inside, 4, 10, 12]))
        onnx.checker.check_model(model)
    return model


def refused_models():
    """Models the loader must refuse, each for one reason."""
    models = {}
    g = Graph()
    x = g.conv("image", 3, 4)
    x = g.op("LeakyRelu", [x])
    x = g.op("GlobalAveragePool", [x])
    x = g.op("Flatten", [x])
    x = g.op("Gemm", [x, g.weight(np.ones((4, 1))), g.weight(np.zeros(1))])
    models["unsupported-op"] = g.model("image", [1, 3, 16, 16], x, [1, 1], {}, "unsupported-op")

    g = Graph()
    x = g.op("Add", ["image", "mask"])
    x = g.op("GlobalAveragePool", [x])
    x = g.op("Flatten", [x])
    x = g.op("Gemm", [x, g.weight(np.ones((3, 1))), g.weight(np.zeros(1))])
    models["two-inputs"] = g.model("image", [1, 3, 8, 8], x, [1, 1], {}, "two-inputs", more_inputs=["mask"])

    g = Graph()
    x = g.op("Gemm", ["features", g.weight(np.ones((10, 1))), g.weight(np.zeros(1))])
    models["not-an-image"] = g.model("features", [1, 10], x, [1, 1], {}, "not-an-image")

    g = Graph()
    x = g.op("GlobalAveragePool", ["image"])
    x = g.op("Flatten", [x])
    x = g.op("Gemm", [x, g.weight(np.ones((3, 5))), g.weight(np.zeros(5))])
    models["five-outputs"] = g.model("image", [1, 3, 8, 8], x, [1, 5], {}, "five-outputs")

    # The two below fail onnx.checker (an input needs a shape) or cannot be
    # served (images are resized to a fixed size), yet exporters write them.
    g = Graph()
    x = g.op("GlobalAveragePool", ["image"])
    x = g.op("Flatten", [x])
    x = g.op("Gemm", [x, g.weight(np.ones((3, 1))), g.weight(np.zeros(1))])
    models["no-input-shape"] = g.model("image", None, x, [None, 1], {}, "no-input-shape", check=False)

    g = Graph()
    x = g.op("GlobalAveragePool", ["image"])
    x = g.op("Flatten", [x])
    x = g.op("Gemm", [x, g.weight(np.ones((3, 1))), g.weight(np.zeros(1))])
    models["free-height-width"] = g.model("image", ["N", 3, "height", None], x, ["N", 1], {}, "free-height-width")

    # Passes every check of the loader's, but the dense layer takes 5
    # features where the pooling gives 3: tract cannot work its shapes out.
    g = Graph()
    x = g.op("GlobalAveragePool", ["image"])
    x = g.op("Flatten", [x])
    x = g.op("Gemm", [x, g.weight(np.ones((5, 1))), g.weight(np.zeros(1))])
    models["shapes-do-not-chain"] = g.model("image", ["N", 3, 8, 8], x, ["N", 1], {}, "shapes-do-not-chain")
    return models


def bench_model():
    """The benchmark's bigger network: 224x224 NCHW input, five 3x3
    convolutions of 32-128 channels with padding, max pooling, a global
    average pool and a two-class softmax (~1.1 GFLOP per image)."""
    g = Graph(np.random.default_rng(13))
    x, cin = "image", 3
    for cout in (32, 64, 96, 128, 128):
        x = g.conv(x, cin, cout, pad=1)
        x = g.op("Relu", [x])
        x = g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
        cin = cout
    x = g.op("GlobalAveragePool", [x])
    x = g.op("Flatten", [x])
    x = g.op("Gemm", [x, g.weight(g.rng.normal(0, 0.1, (128, 2))), g.weight(np.zeros(2))])
    x = g.op("Softmax", [x], axis=1)
    return g.model("image", ["N", 3, 224, 224], x, ["N", 2], {"threadcenter.name": "bench-224"}, "bench-224")


def input_shape(model, batch):
    """The input's shape with `batch` for every free dimension (a name, an
    empty name, -1 or nothing)."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else batch for d in dims]


def run_in_groups(session, name, x, group):
    """onnxruntime's rows for `x`, run `group` images at a time with the
    last group padded with zero images (their rows dropped): how the server
    runs a graph that fixes its batch at `group`."""
    rows = []
    for start in range(0, len(x), group):
        part = x[start:start + group]
        padded = np.concatenate([part, np.zeros((group - len(part),) + part.shape[1:], part.dtype)])
        rows.append(session.run(None, {name: padded})[0][:len(part)])
    return np.concatenate(rows)


def reference(path, model, inputs):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = model.graph.input[0].name
    fixed = input_shape(model, 0)[0]
    return [run_in_groups(session, name, x, fixed or len(x)).astype(np.float64).ravel().tolist() for x in inputs]


# The models onnxruntime's answers are recorded for (paths from the repository root).
GOOD_MODELS = ["models/fire-cnn.onnx", "tests/models/nchw-two-class.onnx", "tests/models/nhwc-sigmoid.onnx"] + [
    f"tests/models/{name}.onnx" for name in BATCH_VARIANTS]


def reference_table():
    """onnxruntime's outputs for each good model on its probe input (and,
    for the fire detector, on the training script's six reference images)."""
    import onnxruntime
    from safetensors import safe_open

    table = {"onnxruntime": onnxruntime.__version__, "probe": "x[i] = ((i * 2654435761) mod 2^32 >> 8) / 2^24",
             "models": {}}
    for relative in GOOD_MODELS:
        path = os.path.join(ROOT, relative)
        model = onnx.load(path)
        # A free batch is probed with 2 images, a fixed N with N + N/2 (so a
        # last, smaller group is padded).
        fixed = input_shape(model, 0)[0]
        batch = 2 if fixed == 0 else fixed + fixed // 2
        shape = [batch] + input_shape(model, batch)[1:]
        inputs = [probe(shape)]
        entry = {"sha256": hashlib.sha256(open(path, "rb").read()).hexdigest(), "probe_shape": shape}
        if relative == "models/fire-cnn.onnx":
            # The training script's six reference images (uint8 HWC pixels),
            # scaled as the server scales them.
            with safe_open(os.path.join(ROOT, "models", "reference", "fire-cnn-pairs.safetensors"), "np") as f:
                images = f.get_tensor("inputs").astype(np.float32) * np.float32(1 / 255)
            inputs.append(images)
        outputs = reference(path, model, inputs)
        entry["probe_outputs"] = outputs[0]
        if len(outputs) > 1:
            entry["reference_images_outputs"] = outputs[1]
        table["models"][relative] = entry
    return table


def write_all():
    """models/fire-cnn.onnx from the trained weights, the test models, and
    onnxruntime's reference answers (train_model.py calls this too)."""
    from safetensors import safe_open

    import onnxruntime
    if onnxruntime.__version__ != PINNED_ONNXRUNTIME:
        raise SystemExit(f"reference numbers come from onnxruntime {PINNED_ONNXRUNTIME}; "
                         f"this is {onnxruntime.__version__}")

    models_dir, tests_dir = os.path.join(ROOT, "models"), os.path.join(ROOT, "tests", "models")
    os.makedirs(tests_dir, exist_ok=True)
    with safe_open(os.path.join(models_dir, "fire-cnn.safetensors"), "np") as f:
        params = {k: f.get_tensor(k) for k in f.keys()}
        kept = f.metadata()
    metadata = {"threadcenter.name": kept["name"], "threadcenter.labels": "no fire,fire",
                "threadcenter.scale": repr(1 / 255), "threadcenter.threshold": "0.5",
                "trained_on": kept["trained_on"], "heldout_accuracy": kept["heldout_accuracy"]}
    written = {os.path.join(models_dir, "fire-cnn.onnx"): fire_cnn(params, metadata),
               os.path.join(tests_dir, "nchw-two-class.onnx"): nchw_two_class(),
               os.path.join(tests_dir, "nhwc-sigmoid.onnx"): nhwc_sigmoid()}
    for name, batches in BATCH_VARIANTS.items():
        written[os.path.join(tests_dir, f"{name}.onnx")] = batch_variant(name, *batches)
    for name, model in refused_models().items():
        onnx.save(model, os.path.join(tests_dir, f"refused-{name}.onnx"))
    for path, model in written.items():
        onnx.save(model, path)
    table = reference_table()
    with open(os.path.join(tests_dir, "reference.json"), "w") as f:
        json.dump(table, f, indent=1)
        f.write("\n")
    print(f"wrote {len(written)} models, {len(refused_models())} refused models and tests/models/reference.json")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench-model", metavar="DIR", help="only write the benchmark's model into DIR")
    parser.add_argument("--live", action="store_true",
                        help="print onnxruntime's answers for the committed models as JSON (for the tests)")
    args = parser.parse_args()
    if args.live:
        print(json.dumps(reference_table()))
        return
    if args.bench_model:
        os.makedirs(args.bench_model, exist_ok=True)
        onnx.save(bench_model(), os.path.join(args.bench_model, "bench-224.onnx"))
        return
    write_all()


if __name__ == "__main__":
    main()
