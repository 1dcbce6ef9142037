#!/usr/bin/python3
"""Writes the small example model repository in examples/models/.

The models are tiny on purpose: they start instantly and make the server's
behaviour easy to see. Weights come from a fixed seed, so running this again
reproduces the committed files byte for byte.

  classifier/1, classifier/2  a 4-16-3 MLP (Gemm, Relu, Gemm, Softmax) with a
                              dynamic batch: "input" [N,4] float -> "probabilities" [N,3].
                              Version 2 has different weights.
  scaler/1                    y = x * scale + bias over [N,8] float: "x" -> "y".
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))


def save(model, rel):
    path = os.path.join(HERE, "models", rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    print("wrote", os.path.relpath(path, os.getcwd()))


def classifier(seed):
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((16, 4)).astype(np.float32) * 0.5
    b1 = rng.standard_normal(16).astype(np.float32) * 0.1
    w2 = rng.standard_normal((3, 16)).astype(np.float32) * 0.5
    b2 = rng.standard_normal(3).astype(np.float32) * 0.1
    nodes = [
        helper.make_node("Gemm", ["input", "w1", "b1"], ["h"], transB=1, name="fc1"),
        helper.make_node("Relu", ["h"], ["h_relu"], name="relu1"),
        helper.make_node("Gemm", ["h_relu", "w2", "b2"], ["logits"], transB=1, name="fc2"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1, name="softmax"),
    ]
    graph = helper.make_graph(
        nodes, "classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"),
         numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(b2, "b2")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                             producer_name="edgeserve-examples")


def scaler():
    scale = np.linspace(0.5, 2.0, 8, dtype=np.float32)
    bias = np.arange(8, dtype=np.float32) * 0.25
    nodes = [
        helper.make_node("Mul", ["x", "scale"], ["scaled"], name="mul"),
        helper.make_node("Add", ["scaled", "bias"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes, "scaler",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        [numpy_helper.from_array(scale, "scale"), numpy_helper.from_array(bias, "bias")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                             producer_name="edgeserve-examples")


def main():
    save(classifier(1), "classifier/1/model.onnx")
    save(classifier(2), "classifier/2/model.onnx")
    save(scaler(), "scaler/1/model.onnx")
    return 0


if __name__ == "__main__":
    sys.exit(main())
