#!/usr/bin/python3
"""Regenerates the small ONNX models test_ops_gemm.c loads.

Run with Debian's python3-onnx (1.12) from this directory:
    /usr/bin/python3 gen_models.py
Inputs have no shape (unknown rank) unless a test needs one, so the C test
feeds random shapes and checks against its own reference loops.
"""
from onnx import TensorProto, helper, save

T = {
    "float": TensorProto.FLOAT, "double": TensorProto.DOUBLE,
    "float16": TensorProto.FLOAT16, "bfloat16": TensorProto.BFLOAT16,
    "int32": TensorProto.INT32, "int64": TensorProto.INT64,
    "uint32": TensorProto.UINT32, "uint64": TensorProto.UINT64,
}


def model(name, op, inputs, outputs, opset, attrs=None, in_types=None,
          out_types=None, elem="float", in_shapes=None, node_inputs=None,
          node_outputs=None):
    in_types = in_types or [elem] * len(inputs)
    out_types = out_types or [elem] * len(outputs)
    in_shapes = in_shapes or [None] * len(inputs)
    node = helper.make_node(op, node_inputs or inputs, node_outputs or outputs,
                            name=name, **(attrs or {}))
    graph = helper.make_graph(
        [node], name,
        [helper.make_tensor_value_info(n, T[t], s)
         for n, t, s in zip(inputs, in_types, in_shapes)],
        [helper.make_tensor_value_info(n, T[t], None)
         for n, t in zip(outputs, out_types)])
    m = helper.make_model(graph, producer_name="edgeserve-tests",
                          opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    save(m, name + ".onnx")


# MatMul, every type with a kernel path
for t in ["float", "double", "float16", "bfloat16", "int32", "int64",
          "uint32", "uint64"]:
    model("matmul_" + t, "MatMul", ["A", "B"], ["Y"], 13, elem=t)
model("matmul_float_v1", "MatMul", ["A", "B"], ["Y"], 1)

# Gemm: every transpose pair with alpha, beta and a broadcast C
for ta in (0, 1):
    for tb in (0, 1):
        model("gemm_float_t%d%d" % (ta, tb), "Gemm", ["A", "B", "C"], ["Y"],
              13, attrs=dict(transA=ta, transB=tb, alpha=0.5, beta=2.0))
for t in ["double", "float16", "int64", "int32", "uint32"]:
    model("gemm_%s_t11" % t, "Gemm", ["A", "B", "C"], ["Y"], 13, elem=t,
          attrs=dict(transA=1, transB=1, alpha=1.0, beta=1.0))
model("gemm_double_alpha", "Gemm", ["A", "B", "C"], ["Y"], 13, elem="double",
      attrs=dict(alpha=-1.5, beta=0.25))
model("gemm_float_noc", "Gemm", ["A", "B"], ["Y"], 13,
      attrs=dict(transB=1, alpha=2.0))
model("gemm_float_v6_bcast", "Gemm", ["A", "B", "C"], ["Y"], 6,
      attrs=dict(broadcast=1, beta=0.5))
model("gemm_float_v6_nobcast", "Gemm", ["A", "B", "C"], ["Y"], 6)

# Softmax family: legacy (2-D coercion) and per-axis semantics
for op in ["Softmax", "LogSoftmax", "Hardmax"]:
    low = op.lower()
    model(low + "_v11_axis1", op, ["X"], ["Y"], 11, attrs=dict(axis=1))
    model(low + "_v11_default", op, ["X"], ["Y"], 11)
    model(low + "_v13_axis1", op, ["X"], ["Y"], 13, attrs=dict(axis=1))
    model(low + "_v13_default", op, ["X"], ["Y"], 13)
model("softmax_v13_axis1_double", "Softmax", ["X"], ["Y"], 13,
      attrs=dict(axis=1), elem="double")
model("softmax_v13_axis1_float16", "Softmax", ["X"], ["Y"], 13,
      attrs=dict(axis=1), elem="float16")

# Norms
model("layernorm_axis1", "LayerNormalization", ["X", "S", "B"],
      ["Y", "Mean", "InvStd"], 17, attrs=dict(axis=1, epsilon=1e-3))
model("layernorm_axis_m1_noB", "LayerNormalization", ["X", "S"], ["Y"], 17)
model("layernorm_neg_eps", "LayerNormalization", ["X", "S"], ["Y"], 17,
      attrs=dict(epsilon=-1.0))
model("layernorm_double", "LayerNormalization", ["X", "S", "B"], ["Y"], 17,
      attrs=dict(axis=-2), elem="double")
model("batchnorm_v7_nonspatial", "BatchNormalization",
      ["X", "s", "b", "m", "v"], ["Y"], 7, attrs=dict(spatial=0, epsilon=1e-2))
model("batchnorm_v15_f16_mixed", "BatchNormalization",
      ["X", "s", "b", "m", "v"], ["Y"], 15,
      in_types=["float16", "float", "float", "double", "double"],
      out_types=["float16"])
model("batchnorm_v9_double", "BatchNormalization",
      ["X", "s", "b", "m", "v"], ["Y"], 9, elem="double")
model("instancenorm_double", "InstanceNormalization", ["X", "s", "b"], ["Y"],
      6, attrs=dict(epsilon=1e-3), elem="double")
for p in (1, 2):
    model("lpnorm_p%d_axis1" % p, "LpNormalization", ["X"], ["Y"], 1,
          attrs=dict(axis=1, p=p))
model("lpnorm_p3", "LpNormalization", ["X"], ["Y"], 1, attrs=dict(p=3))
model("mvn_axes_1_2", "MeanVarianceNormalization", ["X"], ["Y"], 13,
      attrs=dict(axes=[1, 2]))
model("mvn_default", "MeanVarianceNormalization", ["X"], ["Y"], 13)


def chain(name, nodes, inputs, outputs, opset, elem="float"):
    """A graph of several nodes: intermediate values let outputs reuse
    their input's buffer (the in-place paths)."""
    graph = helper.make_graph(
        [helper.make_node(op, i, o, **a) for op, i, o, a in nodes], name,
        [helper.make_tensor_value_info(n, T[elem], None) for n in inputs],
        [helper.make_tensor_value_info(n, T[elem], None) for n in outputs])
    m = helper.make_model(graph, producer_name="edgeserve-tests",
                          opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    save(m, name + ".onnx")


# C computed by a previous node: Gemm may write Y over it
for t in ["float", "float16", "double"]:
    chain("gemm_inplace_c_" + t,
          [("Softmax", ["Cin"], ["C"], {}),
           ("Gemm", ["A", "B", "C"], ["Y"], dict(alpha=0.5, beta=2.0))],
          ["A", "B", "Cin"], ["Y"], 13, elem=t)
# Softmax -> LayerNormalization -> LogSoftmax, each in place
chain("softmax_layernorm_logsoftmax",
      [("Softmax", ["X"], ["S1"], {}),
       ("LayerNormalization", ["S1", "Scale"], ["L"], {}),
       ("LogSoftmax", ["L"], ["Y"], dict(axis=0))],
      ["X", "Scale"], ["Y"], 17)
