#!/usr/bin/python3
"""Regenerates the small ONNX models test_ops_elementwise.c loads.

Run with Debian's python3-onnx (1.12) from this directory:
    /usr/bin/python3 gen_models.py
Inputs have no shape (unknown rank) unless a test needs one, so the C test
feeds shapes of its choosing and checks against its own reference loops.
"""
from onnx import TensorProto, helper, save

T = {
    "float": TensorProto.FLOAT, "double": TensorProto.DOUBLE,
    "float16": TensorProto.FLOAT16, "bfloat16": TensorProto.BFLOAT16,
    "int8": TensorProto.INT8, "int16": TensorProto.INT16,
    "int32": TensorProto.INT32, "int64": TensorProto.INT64,
    "uint8": TensorProto.UINT8, "uint16": TensorProto.UINT16,
    "uint32": TensorProto.UINT32, "uint64": TensorProto.UINT64,
    "bool": TensorProto.BOOL, "string": TensorProto.STRING,
}


def graph_model(name, nodes, inputs, outputs, opset):
    """inputs / outputs: lists of (name, type)."""
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info(n, T[t], None) for n, t in inputs],
        [helper.make_tensor_value_info(n, T[t], None) for n, t in outputs])
    m = helper.make_model(graph, producer_name="edgeserve-tests",
                          opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    save(m, name + ".onnx")


def model(name, op, inputs, out_type, opset, attrs=None, node_inputs=None):
    """One node named `name` reading `inputs` [(name, type)] into Y."""
    node = helper.make_node(op, node_inputs or [n for n, _ in inputs], ["Y"],
                            name=name, **(attrs or {}))
    graph_model(name, [node], inputs, [("Y", out_type)], opset)


def binary(name, op, t, opset=14, out=None, attrs=None, tb=None):
    model(name, op, [("A", t), ("B", tb or t)], out or t, opset, attrs)


# broadcasting, dtypes, in-place
binary("add_float", "Add", "float")
binary("add_float16", "Add", "float16")
binary("add_bfloat16", "Add", "bfloat16")
binary("add_int32", "Add", "int32")
binary("mul_uint16", "Mul", "uint16")
binary("sub_int64", "Sub", "int64")
binary("div_int64", "Div", "int64")
binary("div_int32", "Div", "int32")
binary("div_uint8", "Div", "uint8")
binary("div_float", "Div", "float")
binary("mod_int32", "Mod", "int32", 13)
binary("mod_int64_fmod", "Mod", "int64", 13, attrs=dict(fmod=1))
binary("mod_float", "Mod", "float", 13)
binary("mod_float_fmod", "Mod", "float", 13, attrs=dict(fmod=1))
binary("pow_float_int64", "Pow", "float", 15, tb="int64")
binary("pow_int32_int32", "Pow", "int32", 15)
binary("bitshift_left_uint32", "BitShift", "uint32", 11,
       attrs=dict(direction="LEFT"))
binary("bitshift_right_uint8", "BitShift", "uint8", 11,
       attrs=dict(direction="RIGHT"))
binary("equal_int64", "Equal", "int64", 13, out="bool")
binary("greater_float16", "Greater", "float16", 13, out="bool")
binary("and_bool", "And", "bool", 7, out="bool")
binary("prelu_float", "PRelu", "float", 16)
binary("prelu_float_v6", "PRelu", "float", 6)
# opset < 7 broadcasting: explicit attributes
binary("add_v6_axis", "Add", "float", 6, attrs=dict(broadcast=1, axis=1))
binary("add_v6_suffix", "Add", "float", 6, attrs=dict(broadcast=1))
binary("add_v6_nobcast", "Add", "float", 6)

# variadic
for op in ("Sum", "Mean", "Max", "Min"):
    model(op.lower() + "3_float", op,
          [("A", "float"), ("B", "float"), ("C", "float")], "float", 13)
model("max3_int8", "Max", [("A", "int8"), ("B", "int8"), ("C", "int8")],
      "int8", 13)
model("sum1_float", "Sum", [("A", "float")], "float", 13)

# Where
model("where_float", "Where", [("C", "bool"), ("X", "float"), ("Y0", "float")],
      "float", 16)
model("where_int64", "Where", [("C", "bool"), ("X", "int64"), ("Y0", "int64")],
      "int64", 16)

# Clip, both generations
model("clip_v6", "Clip", [("X", "float")], "float", 6,
      attrs=dict(min=-1.0, max=0.5))
model("clip_v6_default", "Clip", [("X", "float")], "float", 6)
model("clip_v13", "Clip", [("X", "float"), ("lo", "float"), ("hi", "float")],
      "float", 13)
model("clip_v13_max_only", "Clip", [("X", "float"), ("hi", "float")],
      "float", 13, node_inputs=["X", "", "hi"])
model("clip_v13_int32", "Clip",
      [("X", "int32"), ("lo", "int32"), ("hi", "int32")], "int32", 13)

# unary with attributes
model("isinf_pos", "IsInf", [("X", "float")], "bool", 10,
      attrs=dict(detect_negative=0))
model("sigmoid_float", "Sigmoid", [("X", "float")], "float", 13)
model("round_float", "Round", [("X", "float")], "float", 11)
model("neg_int8", "Neg", [("X", "int8")], "int8", 13)
model("abs_int32", "Abs", [("X", "int32")], "int32", 13)
model("erf_float16", "Erf", [("X", "float16")], "float16", 13)
model("selu_v1", "Selu", [("X", "float")], "float", 1)

# Cast: single casts and round trips A -> B -> A
CASTS = [("float", "float16"), ("float", "bfloat16"), ("float", "double"),
         ("int32", "int64"), ("uint8", "float"), ("int8", "int16"),
         ("bool", "float"), ("int64", "double"), ("float16", "int32"),
         ("uint16", "int32"), ("double", "uint64")]
for a, b in CASTS:
    graph_model("cast_rt_%s_%s" % (a, b),
                [helper.make_node("Cast", ["X"], ["M"], name="to_" + b,
                                  to=T[b]),
                 helper.make_node("Cast", ["M"], ["Y"], name="back_" + a,
                                  to=T[a])],
                [("X", a)], [("Y", a)], 13)
for a, b in [("float", "int32"), ("float", "uint8"), ("double", "int64"),
             ("float", "bool"), ("int32", "uint8"), ("int64", "float16"),
             ("float", "uint64"), ("float16", "int8")]:
    model("cast_%s_%s" % (a, b), "Cast", [("X", a)], b, 13, attrs=dict(to=T[b]))
model("cast_float_string", "Cast", [("X", "float")], "string", 13,
      attrs=dict(to=TensorProto.STRING))
model("cast_v1_int32", "Cast", [("X", "float")], "int32", 1,
      attrs=dict(to="INT32"))
model("castlike_float_int64", "CastLike", [("X", "float"), ("L", "int64")],
      "int64", 15)

# a chain whose intermediates the executor may compute in place
graph_model("chain_float",
            [helper.make_node("Add", ["A", "B"], ["s"], name="add"),
             helper.make_node("Relu", ["s"], ["r"], name="relu"),
             helper.make_node("Mul", ["r", "C"], ["m"], name="mul"),
             helper.make_node("Sigmoid", ["m"], ["g"], name="sigmoid"),
             helper.make_node("Sub", ["g", "A"], ["Y"], name="sub")],
            [("A", "float"), ("B", "float"), ("C", "float")],
            [("Y", "float")], 14)
