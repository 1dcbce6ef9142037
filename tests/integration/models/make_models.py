#!/usr/bin/python3
"""Writes the integration tests' model repository into a directory.

  make_models.py OUT_DIR [--slow-layers N]

OUT_DIR receives one subdirectory per model, each with numeric version
subdirectories holding model.onnx:

  classifier/1, classifier/2, scaler/1   copied from examples/models/
  identity_<type>/1                      "x" -> "y" (Identity), dynamic [n, m],
                                         one per KServe v2 datatype the engine has
  twoinput/1                             "a", "b" FP32 [n, 3] -> "sum" = a + b,
                                         "prod" = a * b
  versioned/1, /2, /3                    "x" FP32 [n, 1] -> "y" = x + version
  slow/1                                 "x" FP32 [1, 1] -> "y" FP32 [1, 1]; a chain of
                                         512x512 MatMuls, tens of ms per run on one
                                         thread (queue, deadline and ordering tests)

Deterministic: fixed weights, so two runs write the same bytes. Used by
conftest.py at test time (nothing generated is committed).
"""
import argparse
import os
import shutil
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.normpath(os.path.join(HERE, "..", "..", "..", "examples", "models"))

# KServe v2 datatype name -> ONNX element type. BYTES has no engine dtype.
IDENTITY_TYPES = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
}


def save(model, out, rel):
    path = os.path.join(out, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    onnx.checker.check_model(model)
    onnx.save(model, path)


def model_of(graph):
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                             producer_name="edgeserve-tests")


def identity(elem):
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"], name="id")], "identity",
        [helper.make_tensor_value_info("x", elem, ["n", "m"])],
        [helper.make_tensor_value_info("y", elem, ["n", "m"])])
    return model_of(graph)


def twoinput():
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"], name="add"),
         helper.make_node("Mul", ["a", "b"], ["prod"], name="mul")], "twoinput",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 3]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["n", 3]),
         helper.make_tensor_value_info("prod", TensorProto.FLOAT, ["n", 3])])
    return model_of(graph)


def versioned(v):
    c = numpy_helper.from_array(np.array([float(v)], dtype=np.float32), "c")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "c"], ["y"], name="add")], "versioned",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1])], [c])
    return model_of(graph)


def slow(layers, rows=512, width=512):
    """x [1,1] is broadcast to [rows, width], then `layers` times
    h = tanh(h @ W); y = mean(h) as [1,1]. The work depends on x, so no
    load-time folding can remove it; tanh keeps the values finite."""
    rng = np.random.default_rng(7)
    w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(np.array([rows, width], dtype=np.int64), "shape")]
    nodes = [helper.make_node("Expand", ["x", "shape"], ["h0"], name="expand")]
    for i in range(layers):
        nodes.append(helper.make_node("MatMul", [f"h{i}", "w"], [f"m{i}"], name=f"mm{i}"))
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [f"h{i + 1}"], name=f"tanh{i}"))
    nodes.append(helper.make_node("ReduceMean", [f"h{layers}"], ["y"], keepdims=1,
                                  name="mean"))
    graph = helper.make_graph(
        nodes, "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])], inits)
    return model_of(graph)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--slow-layers", type=int, default=12)
    args = ap.parse_args()
    out = args.out
    os.makedirs(out, exist_ok=True)
    for rel in ("classifier/1", "classifier/2", "scaler/1"):
        dst = os.path.join(out, rel)
        os.makedirs(dst, exist_ok=True)
        shutil.copyfile(os.path.join(EXAMPLES, rel, "model.onnx"),
                        os.path.join(dst, "model.onnx"))
    for name, elem in IDENTITY_TYPES.items():
        save(identity(elem), out, f"identity_{name.lower()}/1/model.onnx")
    save(twoinput(), out, "twoinput/1/model.onnx")
    for v in (1, 2, 3):
        save(versioned(v), out, f"versioned/{v}/model.onnx")
    save(slow(args.slow_layers), out, "slow/1/model.onnx")
    return 0


if __name__ == "__main__":
    sys.exit(main())
