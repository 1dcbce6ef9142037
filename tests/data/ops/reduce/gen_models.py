#!/usr/bin/python3
"""Regenerates the small ONNX models test_ops_reduce.c loads.

Run with Debian's python3-onnx (1.12) from this directory:
    /usr/bin/python3 gen_models.py
Data inputs have no shape (unknown rank), so the C test feeds random shapes
and checks the results against its own reference loops. Models for opset 18
(axes as an input for every reduction) are written by hand: onnx 1.12 knows
opsets up to 17, which does not matter since nothing here runs the checker.
"""
import glob
import os

from onnx import TensorProto, helper, save

T = {
    "float": TensorProto.FLOAT, "double": TensorProto.DOUBLE,
    "float16": TensorProto.FLOAT16, "bfloat16": TensorProto.BFLOAT16,
    "int8": TensorProto.INT8, "uint8": TensorProto.UINT8,
    "int16": TensorProto.INT16, "uint16": TensorProto.UINT16,
    "int32": TensorProto.INT32, "int64": TensorProto.INT64,
    "uint32": TensorProto.UINT32, "uint64": TensorProto.UINT64,
    "bool": TensorProto.BOOL,
}


def model(name, op, inputs, outputs, opset, attrs=None, node_inputs=None):
    """inputs/outputs: lists of (name, type)."""
    node = helper.make_node(op, node_inputs or [n for n, _ in inputs],
                            [n for n, _ in outputs], name=name, **(attrs or {}))
    graph = helper.make_graph(
        [node], name,
        [helper.make_tensor_value_info(n, T[t], None) for n, t in inputs],
        [helper.make_tensor_value_info(n, T[t], None) for n, t in outputs])
    m = helper.make_model(graph, producer_name="edgeserve-tests",
                          opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    save(m, name + ".onnx")


for f in glob.glob("*.onnx"):
    os.remove(f)

REDUCE = {
    "sum": "ReduceSum", "mean": "ReduceMean", "max": "ReduceMax",
    "min": "ReduceMin", "prod": "ReduceProd", "l1": "ReduceL1",
    "l2": "ReduceL2", "logsum": "ReduceLogSum",
    "logsumexp": "ReduceLogSumExp", "sumsquare": "ReduceSumSquare",
}


def red18(short, elem, keepdims=1, noop=0, opset=18, suffix=""):
    name = "red_%s_v%d_%s%s" % (short, opset, elem, suffix)
    attrs = {"keepdims": keepdims}
    if noop:
        attrs["noop_with_empty_axes"] = 1
    model(name, REDUCE[short], [("x", elem), ("axes", "int64")],
          [("y", elem)], opset, attrs)


# every reduction with axes as input, float, keepdims 1 and 0
for short in REDUCE:
    red18(short, "float")
    red18(short, "float", keepdims=0, suffix="_k0")
# noop_with_empty_axes: identity (Sum), element-wise square (SumSquare)
red18("sum", "float", noop=1, opset=13, suffix="_noop")
red18("sumsquare", "float", noop=1, suffix="_noop")
red18("sum", "float", opset=13)
# dtypes
for short, elem in [
        ("sum", "int32"), ("sum", "int64"), ("sum", "uint32"), ("sum", "uint64"),
        ("sum", "float16"), ("sum", "bfloat16"), ("sum", "double"),
        ("max", "int8"), ("max", "uint8"), ("max", "uint64"), ("max", "float16"),
        ("min", "int64"), ("min", "uint32"), ("min", "int8"),
        ("mean", "int32"), ("mean", "double"), ("prod", "int64"),
        ("l1", "int32"), ("l2", "float16"), ("l2", "int64"),
        ("logsum", "double"), ("logsumexp", "double"), ("logsumexp", "int32"),
        ("sumsquare", "int32"), ("sumsquare", "bfloat16")]:
    red18(short, elem)

# attribute axes (opset 1 .. 17)
model("red_mean_v1_default", "ReduceMean", [("x", "float")], [("y", "float")], 1)
model("red_sum_v11_axes", "ReduceSum", [("x", "float")], [("y", "float")], 11,
      {"axes": [0, -1], "keepdims": 0})
model("red_max_v12_uint8", "ReduceMax", [("x", "uint8")], [("y", "uint8")], 12,
      {"axes": [1]})
model("red_logsumexp_v13_axes", "ReduceLogSumExp", [("x", "float")],
      [("y", "float")], 13, {"axes": [-1]})
model("red_l1_v13_dup", "ReduceL1", [("x", "float")], [("y", "float")], 13,
      {"axes": [1, -2]})
model("red_min_v13_oob", "ReduceMin", [("x", "float")], [("y", "float")], 13,
      {"axes": [3]})
model("red_sum_v13_axes_attr", "ReduceSum", [("x", "float")], [("y", "float")],
      13, {"axes": [1]})
model("red_sum_v11_bool", "ReduceSum", [("x", "bool")], [("y", "bool")], 11)

# ArgMax / ArgMin
for op in ["ArgMax", "ArgMin"]:
    short = op.lower()
    for elem in ["float", "int8", "uint64", "float16", "double", "int32",
                 "bfloat16"]:
        model("%s_v13_a1_%s" % (short, elem), op, [("x", elem)],
              [("y", "int64")], 13, {"axis": 1})
        model("%s_v13_am1_k0_last_%s" % (short, elem), op, [("x", elem)],
              [("y", "int64")], 13,
              {"axis": -1, "keepdims": 0, "select_last_index": 1})
    model("%s_v11_a0_k0" % short, op, [("x", "float")], [("y", "int64")], 11,
          {"axis": 0, "keepdims": 0})

# TopK
for elem in ["float", "double", "float16", "int32", "uint8", "int64",
             "uint64"]:
    model("topk_v11_am1_%s" % elem, "TopK", [("x", elem), ("k", "int64")],
          [("v", elem), ("i", "int64")], 11, {"axis": -1})
    model("topk_v11_a1_small_%s" % elem, "TopK", [("x", elem), ("k", "int64")],
          [("v", elem), ("i", "int64")], 11, {"axis": 1, "largest": 0})
model("topk_v10_a0", "TopK", [("x", "float"), ("k", "int64")],
      [("v", "float"), ("i", "int64")], 10, {"axis": 0})
model("topk_v1_k3", "TopK", [("x", "float")], [("v", "float"), ("i", "int64")],
      1, {"k": 3})
model("topk_v1_kneg", "TopK", [("x", "float")],
      [("v", "float"), ("i", "int64")], 1, {"k": -1})

# Resize 13: one model per (mode, coordinate mode) with scales, one with sizes
CONFIGS = [
    ("nearest", "half_pixel", {}),
    ("nearest", "asymmetric", {"nearest_mode": "floor"}),
    ("nearest", "align_corners", {"nearest_mode": "round_prefer_ceil"}),
    ("nearest", "pytorch_half_pixel", {"nearest_mode": "ceil"}),
    ("nearest", "tf_crop_and_resize", {"extrapolation_value": 7.0}),
    ("linear", "half_pixel", {}),
    ("linear", "align_corners", {}),
    ("linear", "pytorch_half_pixel", {}),
    ("linear", "asymmetric", {}),
    ("linear", "tf_crop_and_resize", {"extrapolation_value": -1.0}),
    ("cubic", "half_pixel", {}),
    ("cubic", "align_corners", {}),
    ("cubic", "asymmetric", {"cubic_coeff_a": -0.5, "exclude_outside": 1}),
    ("cubic", "tf_crop_and_resize", {"extrapolation_value": 3.0}),
]
CT_SHORT = {"half_pixel": "hp", "asymmetric": "asym", "align_corners": "ac",
            "pytorch_half_pixel": "php", "tf_crop_and_resize": "crop"}


def resize(name, elem, mode, ct, extra, by, opset=13):
    attrs = {"mode": mode, "coordinate_transformation_mode": ct}
    attrs.update(extra)
    crop = ct == "tf_crop_and_resize"
    ins = [("x", elem)] + ([("roi", "float")] if crop else [])
    node_ins = ["x", "roi" if crop else ""]
    if by == "scales":
        ins.append(("scales", "float"))
        node_ins.append("scales")
    else:
        ins.append(("sizes", "int64"))
        node_ins += ["", "sizes"]
    model(name, "Resize", ins, [("y", elem)], opset, attrs, node_ins)


for mode, ct, extra in CONFIGS:
    for by in ["scales", "sizes"]:
        resize("resize_%s_%s_%s" % (mode, CT_SHORT[ct], by), "float", mode, ct,
               extra, by)
for elem, mode, by in [("uint8", "linear", "sizes"), ("int64", "nearest", "scales"),
                       ("float16", "linear", "scales"), ("double", "cubic", "sizes"),
                       ("bool", "nearest", "sizes"), ("int32", "cubic", "scales")]:
    resize("resize_%s_%s_%s" % (mode, elem, by), elem, mode, "half_pixel", {}, by)
model("resize_both", "Resize",
      [("x", "float"), ("scales", "float"), ("sizes", "int64")], [("y", "float")],
      13, {}, ["x", "", "scales", "sizes"])
model("resize_bool_linear", "Resize", [("x", "bool"), ("scales", "float")],
      [("y", "bool")], 13, {"mode": "linear"}, ["x", "", "scales"])
model("resize_bad_mode", "Resize", [("x", "float"), ("scales", "float")],
      [("y", "float")], 13, {"mode": "area"}, ["x", "", "scales"])
model("resize_v13_tf_nn", "Resize", [("x", "float"), ("scales", "float")],
      [("y", "float")], 13, {"coordinate_transformation_mode": "tf_half_pixel_for_nn"},
      ["x", "", "scales"])
# Resize 11: roi and scales are required inputs (empty when unused)
model("resize11_nearest_tfnn", "Resize",
      [("x", "float"), ("roi", "float"), ("scales", "float"), ("sizes", "int64")],
      [("y", "float")], 11,
      {"coordinate_transformation_mode": "tf_half_pixel_for_nn"})
# Resize 10 and Upsample: asymmetric coordinates, nearest floors
for mode in ["nearest", "linear"]:
    model("resize10_%s" % mode, "Resize", [("x", "float"), ("scales", "float")],
          [("y", "float")], 10, {"mode": mode})
    model("upsample9_%s" % mode, "Upsample", [("x", "float"), ("scales", "float")],
          [("y", "float")], 9, {"mode": mode})
model("upsample7_nearest", "Upsample", [("x", "int32")], [("y", "int32")], 7,
      {"scales": [1.0, 1.0, 2.0, 3.0]})
model("upsample7_bad_scale", "Upsample", [("x", "float")], [("y", "float")], 7,
      {"scales": [1.0, 0.5]})
model("upsample1_bilinear", "Upsample", [("x", "float")], [("y", "float")], 1,
      {"mode": "bilinear", "height_scale": 2.0, "width_scale": 3.0})

# Einsum (misc.c): one model per equation, float unless named
EINSUM = {
    "matmul": ("ij,jk->ik", 2), "implicit_matmul": ("ij,jk", 2),
    "transpose": ("ij->ji", 1), "trace": ("ii", 1), "diag": ("ii->i", 1),
    "outer": ("i,j->ij", 2), "bcast_batch": ("...ij,...jk->...ik", 2),
    "three": ("ij,jk,kl->il", 3), "sum_all": ("ij->", 1),
    "bhqd": ("bhqd,bhkd->bhqk", 2), "ell_sum": ("...i->...", 1),
    "upper": ("Ab,bc->Ac", 2),
}
for short, (eq, n) in EINSUM.items():
    model("einsum_%s" % short, "Einsum", [("x%d" % i, "float") for i in range(n)],
          [("y", "float")], 12, {"equation": eq})
model("einsum_matmul_int32", "Einsum", [("x0", "int32"), ("x1", "int32")],
      [("y", "int32")], 12, {"equation": "ij,jk->ik"})
model("einsum_bad_eq", "Einsum", [("x0", "float")], [("y", "float")], 12,
      {"equation": "i$j->i"})
model("einsum_bad_out", "Einsum", [("x0", "float")], [("y", "float")], 12,
      {"equation": "ij->k"})
# NonMaxSuppression, Shrink
model("nms_v11", "NonMaxSuppression",
      [("boxes", "float"), ("scores", "float"), ("max", "int64"), ("iou", "float"),
       ("sth", "float")], [("sel", "int64")], 11)
model("shrink_int8", "Shrink", [("x", "int8")], [("y", "int8")], 9,
      {"lambd": 1.5, "bias": 100.0})
