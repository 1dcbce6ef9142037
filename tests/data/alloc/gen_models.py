#!/usr/bin/python3
"""Generates the small models of tests/unit/test_alloc.c (no steady-state
allocation). Run with Debian's python3-onnx (1.12):
    /usr/bin/python3 tests/data/alloc/gen_models.py
Weights are small seeded random values; the test only checks that repeated
runs allocate nothing, not the values.

cnn.onnx      input [1,3,h,w]: Conv 3x3 + BatchNormalization + Relu,
              depthwise Conv 3x3 + Clip (ReLU6), 1x1 Conv, residual Add,
              MaxPool, AveragePool, GlobalAveragePool, Flatten, Gemm,
              Softmax (opset 13).
encoder.onnx  input [1,16,32]: one attention block: MatMul + Add
              projections, Reshape/Transpose into 2 heads, batched MatMul,
              Mul by a scale, Softmax, MatMul, back, residual Add,
              LayerNormalization, a GELU written out (Div, Erf, Add, Mul)
              (opset 17).
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
F = TensorProto.FLOAT
rng = np.random.default_rng(20261124)


def w(name, *shape):
    return numpy_helper.from_array(
        (rng.standard_normal(shape) * 0.2).astype(np.float32), name)


def const(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def save(name, nodes, inputs, outputs, inits, opset):
    g = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                          producer_name="edgeserve-tests")
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, os.path.join(HERE, name + ".onnx"))


def cnn():
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        n("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["n1"], name="bn1"),
        n("Relu", ["n1"], ["r1"], name="relu1"),
        n("Conv", ["r1", "wd", "bd"], ["c2"], name="dwconv", group=16, pads=[1, 1, 1, 1]),
        n("Clip", ["c2", "lo", "hi"], ["r2"], name="relu6"),
        n("Conv", ["r2", "w3", "b3"], ["c3"], name="pwconv"),
        n("Add", ["c3", "r1"], ["a3"], name="residual"),
        n("MaxPool", ["a3"], ["p1"], name="maxpool", kernel_shape=[2, 2], strides=[2, 2]),
        n("AveragePool", ["p1"], ["p2"], name="avgpool", kernel_shape=[3, 3],
          pads=[1, 1, 1, 1], strides=[1, 1]),
        n("GlobalAveragePool", ["p2"], ["g"], name="gap"),
        n("Flatten", ["g"], ["f"], name="flatten"),
        n("Gemm", ["f", "wf", "bf"], ["logits"], name="fc", transB=1),
        n("Softmax", ["logits"], ["y"], name="softmax", axis=-1),
    ]
    inits = [
        w("w1", 16, 3, 3, 3), w("b1", 16),
        const("bn_s", np.full(16, 1.1, np.float32)), w("bn_b", 16),
        w("bn_m", 16), const("bn_v", np.full(16, 0.9, np.float32)),
        w("wd", 16, 1, 3, 3), w("bd", 16),
        const("lo", np.float32(0)), const("hi", np.float32(6)),
        w("w3", 16, 16, 1, 1), w("b3", 16),
        w("wf", 10, 16), w("bf", 10),
    ]
    save("cnn", nodes, [helper.make_tensor_value_info("x", F, [1, 3, "h", "w"])],
         [helper.make_tensor_value_info("y", F, [1, 10])], inits, 13)


def encoder():
    n = helper.make_node
    nodes = [
        n("MatMul", ["x", "wq"], ["q0"], name="q_proj"),
        n("Add", ["q0", "bq"], ["q1"], name="q_bias"),
        n("MatMul", ["x", "wk"], ["k0"], name="k_proj"),
        n("MatMul", ["x", "wv"], ["v0"], name="v_proj"),
        n("Reshape", ["q1", "heads"], ["q2"], name="q_split"),
        n("Transpose", ["q2"], ["q"], name="q_heads", perm=[0, 2, 1, 3]),
        n("Reshape", ["k0", "heads"], ["k2"], name="k_split"),
        n("Transpose", ["k2"], ["kt"], name="k_heads", perm=[0, 2, 3, 1]),
        n("Reshape", ["v0", "heads"], ["v2"], name="v_split"),
        n("Transpose", ["v2"], ["v"], name="v_heads", perm=[0, 2, 1, 3]),
        n("MatMul", ["q", "kt"], ["s0"], name="scores"),
        n("Mul", ["s0", "scale"], ["s1"], name="scale"),
        n("Softmax", ["s1"], ["p"], name="attn_softmax", axis=-1),
        n("MatMul", ["p", "v"], ["o0"], name="context"),
        n("Transpose", ["o0"], ["o1"], name="merge_heads", perm=[0, 2, 1, 3]),
        n("Reshape", ["o1", "merged"], ["o2"], name="merge"),
        n("Add", ["o2", "x"], ["r"], name="residual"),
        n("LayerNormalization", ["r", "ln_g", "ln_b"], ["ln"], name="layernorm",
          axis=-1, epsilon=1e-5),
        n("Div", ["ln", "sqrt2"], ["g0"], name="gelu_div"),
        n("Erf", ["g0"], ["g1"], name="gelu_erf"),
        n("Add", ["g1", "one"], ["g2"], name="gelu_add"),
        n("Mul", ["ln", "g2"], ["g3"], name="gelu_mul"),
        n("Mul", ["g3", "half"], ["y"], name="gelu_half"),
    ]
    inits = [
        w("wq", 32, 32), w("bq", 32), w("wk", 32, 32), w("wv", 32, 32),
        const("heads", np.array([1, 16, 2, 16], np.int64)),
        const("merged", np.array([1, 16, 32], np.int64)),
        const("scale", np.float32(0.25)),
        const("ln_g", np.ones(32, np.float32)), const("ln_b", np.zeros(32, np.float32)),
        const("sqrt2", np.float32(np.sqrt(2.0))), const("one", np.float32(1.0)),
        const("half", np.float32(0.5)),
    ]
    save("encoder", nodes, [helper.make_tensor_value_info("x", F, [1, 16, 32])],
         [helper.make_tensor_value_info("y", F, [1, 16, 32])], inits, 17)


if __name__ == "__main__":
    cnn()
    encoder()
