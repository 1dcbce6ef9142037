"""Models and repository operations for the lifecycle tests
(test_lifecycle.py): versions published and removed the supported way, a
version written slowly, corrupt versions, pre-flight validation cases, and
a large model that makes loading and cache writes take long enough to be
interrupted.

Everything is generated at test time with the onnx package; nothing is
committed. The small models come from make_models.py.
"""
import os
import shutil
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_models  # noqa: E402  (next to this file)


def versioned_bytes(v, pad=0):
    """make_models.versioned(v) serialized: "x" FP32 [n, 1] -> "y" = x + v.
    pad adds that many bytes of doc_string, to make the file big enough to
    be written in visible pieces."""
    model = make_models.versioned(v)
    if pad:
        model.doc_string = "p" * pad
    onnx.checker.check_model(model)
    return model.SerializeToString()


def mlp_bytes(seed=3, n_in=16, hidden=32, n_out=4):
    """"x" FP32 [n, n_in] -> relu(x @ W1 + b1) @ W2 -> "y" [n, n_out],
    seeded random weights: outputs that tell a wrong compiled form apart."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((n_in, hidden)).astype(np.float32)
    b1 = rng.standard_normal((hidden,)).astype(np.float32)
    w2 = rng.standard_normal((hidden, n_out)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
         helper.make_node("Add", ["h", "b1"], ["hb"], name="add1"),
         helper.make_node("Relu", ["hb"], ["r"], name="relu"),
         helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2")], "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", n_out])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"),
         numpy_helper.from_array(w2, "w2")])
    model = make_models.model_of(graph)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field, wire_type):
    return _varint(field << 3 | wire_type)


def large_model_file(path, layers=18, width=2048, version=1.0):
    """Writes a model with layers * width^2 float32 initializers (18 x 2048^2
    is 288 MiB): "x" FP32 [1, width] -> `layers` times h = tanh(h @ W_i) ->
    "y" = h + version [1, width]. Big enough that reading, hashing,
    compiling and caching it take a while on any machine.

    Written as protobuf by hand, each weight streamed from its array: the
    onnx helpers copy every initializer four or five times, which costs
    more than everything else in the tests on a slow machine. The layout is
    plain protobuf (ModelProto field 7 = graph, GraphProto field 5 =
    initializer, TensorProto dims 1, data_type 2, name 8, raw_data 9)."""
    rng = np.random.default_rng(11)
    # one random block, rows rotated per layer: distinct weights for the
    # price of a copy
    block = (rng.standard_normal((width, width), dtype=np.float32) /
             np.float32(np.sqrt(width)))
    nodes = []
    h = "x"
    for i in range(layers):
        nodes.append(helper.make_node("MatMul", [h, f"w{i}"], [f"m{i}"], name=f"mm{i}"))
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [f"t{i}"], name=f"tanh{i}"))
        h = f"t{i}"
    nodes.append(helper.make_node("Add", [h, "v"], ["y"], name="addv"))
    graph = helper.make_graph(
        nodes, "large",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])],
        [numpy_helper.from_array(np.array([version], dtype=np.float32), "v")])
    model = make_models.model_of(graph)
    graph_bytes = model.graph.SerializeToString()
    model.ClearField("graph")
    header = model.SerializeToString()

    nbytes = width * width * 4
    heads = []
    for i in range(layers):
        name = f"w{i}".encode()
        t_head = (_key(1, 0) + _varint(width) + _key(1, 0) + _varint(width) +
                  _key(2, 0) + _varint(TensorProto.FLOAT) +
                  _key(8, 2) + _varint(len(name)) + name +
                  _key(9, 2) + _varint(nbytes))
        heads.append(_key(5, 2) + _varint(len(t_head) + nbytes) + t_head)
    graph_len = len(graph_bytes) + sum(len(hd) + nbytes for hd in heads)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(header + _key(7, 2) + _varint(graph_len) + graph_bytes)
        for i, hd in enumerate(heads):
            f.write(hd)
            f.write(memoryview(np.ascontiguousarray(np.roll(block, 37 * i, axis=0))))
    return os.path.getsize(path)


def tensor_pb(array, name=None):
    """An ONNX TensorProto file's bytes (name optional: bound by position)."""
    t = numpy_helper.from_array(np.asarray(array), name or "")
    if not name:
        t.ClearField("name")
    return t.SerializeToString()


# ---- the repository, the supported way -------------------------------------

def write_version(dir_path, files):
    """files: {relative path: bytes}."""
    for rel, data in files.items():
        p = os.path.join(dir_path, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)


def publish(base, v, files):
    """Copies a version under a name that is not a number, then renames it
    to its number (atomic: the server sees nothing or all of it)."""
    staging = os.path.join(base, f".staging-{v}")
    shutil.rmtree(staging, ignore_errors=True)
    write_version(staging, files)
    os.rename(staging, os.path.join(base, str(v)))


def remove(base, v):
    """Renames a version out of the numbered names, then deletes it."""
    gone = os.path.join(base, f".removed-{v}")
    os.rename(os.path.join(base, str(v)), gone)
    shutil.rmtree(gone)


def model_files(model_bytes):
    return {"model.onnx": model_bytes}


def corrupt_files(seed=0):
    """A model.onnx of garbage bytes."""
    rng = np.random.default_rng(seed)
    return {"model.onnx": b"\x08\x07garbage" + rng.bytes(4096)}
