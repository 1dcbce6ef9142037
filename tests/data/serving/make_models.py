#!/usr/bin/python3
"""Writes the small model repository the serving unit tests use.

Run with Debian's /usr/bin/python3 (python3-onnx); the outputs are checked in,
so the tests never need python. Running it again reproduces the files.

  repo/multi/1/model.onnx   y = x + 1 over "x" [N,2] float -> "y" [N,2]
  repo/multi/2/model.onnx   y = x + 2 (same signature)
  repo/multi/3/model.onnx   not an ONNX file: loading it fails
  repo/multi/4/             no model.onnx: not a version directory
  repo/multi/0, 007, abc    names that are not versions (0, leading zero,
                            not numeric): ignored although they hold a model
  repo/slow/1/model.onnx    a chain of 16 MatMuls by a 256x256 constant:
                            "x" [N,256] -> "y" [N,256]; a few ms at N=64,
                            slow enough to see requests overlap or not.
  repo/fixed/1/model.onnx   "a" [2,3] float and "b" [3] int64 (fixed dims)
                            -> "y" = a + 1, "c" = b: input validation tests.
"""
import os
import shutil
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.join(HERE, "repo")


def save(model, rel):
    path = os.path.join(REPO, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    print("wrote", os.path.relpath(path, os.getcwd()))


def write(rel, data):
    path = os.path.join(REPO, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    print("wrote", os.path.relpath(path, os.getcwd()))


def model(nodes, name, inputs, outputs, inits):
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                             producer_name="edgeserve-tests")


def add_const(value):
    return model(
        [helper.make_node("Add", ["x", "c"], ["y"], name="add")], "multi",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(np.array([value], dtype=np.float32), "c")])


def slow(depth=16, width=256):
    # The weight comes from ConstantOfShape, folded at load: the file stays tiny.
    shape = numpy_helper.from_array(np.array([width, width], dtype=np.int64), "w_shape")
    nodes = [helper.make_node(
        "ConstantOfShape", ["w_shape"], ["w"], name="weight",
        value=numpy_helper.from_array(np.array([1.0 / width], dtype=np.float32)))]
    prev = "x"
    for i in range(depth):
        out = "y" if i == depth - 1 else "h%d" % i
        nodes.append(helper.make_node("MatMul", [prev, "w"], [out], name="mm%d" % i))
        prev = out
    return model(
        nodes, "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        [shape])


def fixed():
    return model(
        [helper.make_node("Add", ["a", "one"], ["y"], name="add"),
         helper.make_node("Identity", ["b"], ["c"], name="copy")], "fixed",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("b", TensorProto.INT64, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("c", TensorProto.INT64, [3])],
        [numpy_helper.from_array(np.array([1.0], dtype=np.float32), "one")])


def main():
    if os.path.isdir(REPO):
        shutil.rmtree(REPO)
    save(add_const(1.0), "multi/1/model.onnx")
    save(add_const(2.0), "multi/2/model.onnx")
    write("multi/3/model.onnx", b"this is not an ONNX model\n")
    write("multi/4/README", b"a numeric directory without model.onnx is not a version\n")
    for name in ("0", "007", "abc"):
        save(add_const(9.0), name.join(("multi/", "/model.onnx")))
    save(slow(), "slow/1/model.onnx")
    save(fixed(), "fixed/1/model.onnx")
    return 0


if __name__ == "__main__":
    sys.exit(main())
