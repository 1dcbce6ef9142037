#!/usr/bin/python3
"""Generates the small (often deliberately broken) models of test_loader.c.
Run once when they change; the outputs are committed."""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
F = TensorProto.FLOAT


def model(nodes, inputs, outputs, inits=(), opset=13):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def vi(name, dt=F, shape=(2,)):
    return helper.make_tensor_value_info(name, dt, list(shape))


def save(m, name):
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(m.SerializeToString())


save(model([helper.make_node("Relu", ["a"], ["b"], name="r1"),
            helper.make_node("Relu", ["b"], ["a"], name="r2")],
           [], [vi("a")]), "cycle.onnx")
save(model([helper.make_node("Relu", ["nowhere"], ["y"], name="lonely")],
           [vi("x")], [vi("y")]), "undefined_input.onnx")
save(model([helper.make_node("Relu", ["x"], ["y"], name="first"),
            helper.make_node("Relu", ["x"], ["y"], name="second")],
           [vi("x")], [vi("y")]), "duplicate_output.onnx")
save(model([helper.make_node("FancyOp", ["x"], ["t"], name="f"),
            helper.make_node("OtherOp", ["t"], ["u"], name="o"),
            helper.make_node("FancyOp", ["u"], ["y"], name="f2")],
           [vi("x")], [vi("y")]), "unsupported.onnx")
save(model([helper.make_node("Add", ["x", "i"], ["y"], name="mixed_add")],
           [vi("x"), vi("i", TensorProto.INT64)], [vi("y")]), "dtype_mismatch.onnx")
save(model([helper.make_node("Relu", ["x"], ["y"], name="r")],
           [vi("x")], [vi("y")]), "relu.onnx")

# initializer whose dims multiply past int64
big = onnx.TensorProto(name="w", data_type=F, dims=[1 << 40, 1 << 40])
save(model([helper.make_node("Add", ["x", "w"], ["y"], name="a")],
           [vi("x")], [vi("y")], [big]), "dims_overflow.onnx")

# raw_data shorter than the shape needs
short = onnx.TensorProto(name="w", data_type=F, dims=[4], raw_data=b"\0" * 8)
save(model([helper.make_node("Add", ["x", "w"], ["y"], name="a")],
           [vi("x", shape=(4,))], [vi("y", shape=(4,))], [short]), "short_raw.onnx")


def external(name, location):
    t = onnx.TensorProto(name="w", data_type=F, dims=[2])
    t.data_location = TensorProto.EXTERNAL
    e = t.external_data.add()
    e.key, e.value = "location", location
    save(model([helper.make_node("Add", ["x", "w"], ["y"], name="a")],
               [vi("x")], [vi("y")], [t]), name)


external("external_ok.onnx", "weights.bin")
external("external_dotdot.onnx", "../loader/weights.bin")
external("external_abs.onnx", "/etc/passwd")
external("external_missing.onnx", "nope.bin")
with open(os.path.join(HERE, "weights.bin"), "wb") as f:
    f.write(np.array([1.5, -2.0], dtype=np.float32).tobytes())
with open(os.path.join(HERE, "truncated.onnx"), "wb") as f:
    f.write(open(os.path.join(HERE, "relu.onnx"), "rb").read()[:-7])
