#!/usr/bin/python3
"""Generates the small models (and expected outputs) used by
tests/unit/test_ops_conv.c. Run with Debian's python3-onnx (1.12):
    /usr/bin/python3 tests/data/ops/conv/gen_models.py
Expected pooling outputs come from the plain numpy reference below, which
follows the ONNX spec (ceil_mode drops a last window that would start in
the end padding; count_include_pad counts the padded extent only)."""
import itertools
import math
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
F, F16, F64, U8 = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.UINT8


def save(name, nodes, inputs, outputs, inits=(), opset=13):
    g = helper.make_graph(nodes, name, inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                          producer_name="edgeserve-tests")
    m.ir_version = 7
    onnx.save(m, os.path.join(HERE, name + ".onnx"))


def vi(name, t, shape):
    return helper.make_tensor_value_info(name, t, shape)


def pb(name, arr):
    with open(os.path.join(HERE, name + ".pb"), "wb") as f:
        f.write(numpy_helper.from_array(arr).SerializeToString())


def formula(n, scale):
    # the same values test_ops_conv.c computes: ((i * 37) % 17 - 8) / scale
    return np.array([((i * 37) % 17 - 8) / scale for i in range(n)], np.float32)


# ---- conv models ----------------------------------------------------------
w = formula(4 * 3 * 3 * 3, 8.0).reshape(4, 3, 3, 3)
b = formula(4, 4.0)
save("conv_dyn",
     [helper.make_node("Conv", ["X", "W", "B"], ["Y"], pads=[1, 0, 1, 2], strides=[1, 2])],
     [vi("X", F, ["N", 3, "H", "W"])], [vi("Y", F, None)],
     [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])

w = formula(4 * 3 * 3 * 3, 8.0).reshape(4, 3, 3, 3)
b = formula(6, 4.0)
save("convtr_dyn",
     [helper.make_node("ConvTranspose", ["X", "W", "B"], ["Y"], group=2, strides=[2, 2],
                       output_padding=[1, 0], pads=[1, 1, 0, 1])],
     [vi("X", F, ["N", 4, "H", "W"])], [vi("Y", F, None)],
     [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])

save("conv_f16",
     [helper.make_node("Conv", ["X", "W", "B"], ["Y"], pads=[1, 1, 1, 1])],
     [vi("X", F16, [1, 2, 5, 5]), vi("W", F16, [3, 2, 3, 3]), vi("B", F16, [3])],
     [vi("Y", F16, [1, 3, 5, 5])])

save("conv_f64",
     [helper.make_node("Conv", ["X", "W"], ["Y"], group=2, dilations=[2, 2], pads=[2, 2, 2, 2])],
     [vi("X", F64, [2, 4, 6, 6]), vi("W", F64, [4, 2, 3, 3])],
     [vi("Y", F64, [2, 4, 6, 6])])

# 4 spatial dims: oneDNN cannot, the reference must
save("conv_4d",
     [helper.make_node("Conv", ["X", "W"], ["Y"], strides=[1, 2, 1, 1])],
     [vi("X", F, [1, 2, 3, 4, 3, 3]), vi("W", F, [2, 2, 2, 2, 2, 2])],
     [vi("Y", F, None)])

# constant W in a problem where oneDNN (brgconv on AVX-512) wants the
# weights in a blocked layout: exercises the pack-once path
w = formula(1 * 1 * 3, 8.0).reshape(1, 1, 3)
b = formula(1, 4.0)
save("conv_packed",
     [helper.make_node("Conv", ["X", "W", "B"], ["Y"], strides=[2], pads=[2, 0])],
     [vi("X", F, ["N", 1, "L"])], [vi("Y", F, None)],
     [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])

# ---- conv errors ----------------------------------------------------------
save("conv_bad_channels", [helper.make_node("Conv", ["X", "W"], ["Y"], name="badch")],
     [vi("X", F, [1, 4, 5, 5]), vi("W", F, [2, 3, 3, 3])], [vi("Y", F, None)])
save("conv_bad_pads", [helper.make_node("Conv", ["X", "W"], ["Y"], name="badpads", pads=[1, 1, 1])],
     [vi("X", F, [1, 1, 5, 5]), vi("W", F, [1, 1, 3, 3])], [vi("Y", F, None)])
save("conv_bad_strides", [helper.make_node("Conv", ["X", "W"], ["Y"], name="badstrides", strides=[1, 0])],
     [vi("X", F, [1, 1, 5, 5]), vi("W", F, [1, 1, 3, 3])], [vi("Y", F, None)])
save("conv_bad_dilations",
     [helper.make_node("ConvTranspose", ["X", "W"], ["Y"], name="baddil", dilations=[-1, 1])],
     [vi("X", F, [1, 1, 5, 5]), vi("W", F, [1, 1, 3, 3])], [vi("Y", F, None)])
save("conv_bad_group", [helper.make_node("Conv", ["X", "W"], ["Y"], name="badgroup", group=0)],
     [vi("X", F, [1, 1, 5, 5]), vi("W", F, [1, 1, 3, 3])], [vi("Y", F, None)])
save("conv_rank_mismatch",
     [helper.make_node("Conv", ["X", "W"], ["Y"], name="badrank", kernel_shape=[3])],
     [vi("X", F, [1, 1, 5, 5]), vi("W", F, [1, 1, 3, 3])], [vi("Y", F, None)])
save("conv_out_nonpos", [helper.make_node("Conv", ["X", "W"], ["Y"], name="tiny")],
     [vi("X", F, [1, 1, 2, 2]), vi("W", F, [1, 1, 3, 3])], [vi("Y", F, None)])
save("convtr_out_nonpos",
     [helper.make_node("ConvTranspose", ["X", "W"], ["Y"], name="tinytr", pads=[3, 3, 3, 3])],
     [vi("X", F, [1, 1, 2, 2]), vi("W", F, [1, 1, 3, 3])], [vi("Y", F, None)])


# ---- pooling --------------------------------------------------------------
def pool_ref(x, kind, kernel_shape, strides=None, pads=None, dilations=None, ceil_mode=0,
             count_include_pad=0, p=2, storage_order=0, auto_pad="NOTSET"):
    kernel = kernel_shape
    nsp = len(kernel)
    strides = strides or [1] * nsp
    dilations = dilations or [1] * nsp
    pads = list(pads or [0] * (2 * nsp))
    ins = x.shape[2:]
    outs = []
    for d in range(nsp):
        ext = (kernel[d] - 1) * dilations[d] + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            o = -(-ins[d] // strides[d])
            tot = max(0, (o - 1) * strides[d] + ext - ins[d])
            small, big = tot // 2, tot - tot // 2
            pads[d], pads[d + nsp] = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
        else:
            t = ins[d] + pads[d] + pads[d + nsp] - ext
            o = (-(-t // strides[d]) if ceil_mode else t // strides[d]) + 1
            if ceil_mode and (o - 1) * strides[d] >= ins[d] + pads[d]:
                o -= 1
        outs.append(o)
    y = np.zeros(x.shape[:2] + tuple(outs), x.dtype)
    ind = np.zeros(y.shape, np.int64)
    plane = int(np.prod(ins))
    for n, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
        for oc in itertools.product(*[range(o) for o in outs]):
            vals, idxs, padded = [], [], 1
            for d in range(nsp):
                start = oc[d] * strides[d] - pads[d]
                padded *= sum(1 for j in range(kernel[d])
                              if start + j * dilations[d] < ins[d] + pads[d + nsp])
            for kc in itertools.product(*[range(k) for k in kernel]):
                pos = [oc[d] * strides[d] - pads[d] + kc[d] * dilations[d] for d in range(nsp)]
                if all(0 <= pos[d] < ins[d] for d in range(nsp)):
                    vals.append(float(x[(n, c) + tuple(pos)]))
                    if storage_order == 0:
                        flat = int(np.ravel_multi_index(pos, ins))
                    else:
                        flat = int(np.ravel_multi_index(pos, ins, order="F"))
                    idxs.append(flat)
            if kind == "max":
                best = int(np.argmax(vals))
                y[(n, c) + oc] = vals[best]
                ind[(n, c) + oc] = (n * x.shape[1] + c) * plane + idxs[best]
            elif kind == "avg":
                y[(n, c) + oc] = sum(vals) / (padded if count_include_pad else len(vals))
            else:
                y[(n, c) + oc] = sum(abs(v) ** p for v in vals) ** (1.0 / p)
    return y, ind


rng = np.random.default_rng(7)


def pool_case(name, op, kind, shape, outputs=1, dtype=np.float32, opset=13, **attrs):
    x = rng.standard_normal(shape).astype(dtype)
    y, ind = pool_ref(x, kind, **attrs)
    tt = {np.float32: F, np.float64: F64}[dtype]
    outs = [vi("Y", tt, list(y.shape))]
    names = ["Y"]
    if outputs == 2:
        outs.append(vi("I", TensorProto.INT64, list(y.shape)))
        names.append("I")
    a = dict(attrs)
    save(name, [helper.make_node(op, ["X"], names, **a)],
         [vi("X", tt, list(shape))], outs, opset=opset)
    pb(name + "_x", x)
    pb(name + "_y", y)
    if outputs == 2:
        pb(name + "_i", ind)


pool_case("maxpool_idx_2d", "MaxPool", "max", (2, 2, 7, 6), outputs=2, kernel_shape=[3, 2],
          strides=[2, 2], pads=[1, 0, 1, 1], dilations=[1, 2], ceil_mode=1, storage_order=1)
pool_case("maxpool_idx_3d", "MaxPool", "max", (1, 2, 4, 5, 3), outputs=2,
          kernel_shape=[2, 3, 2], strides=[1, 2, 1], pads=[0, 1, 1, 1, 1, 0])
pool_case("maxpool_idx_3d_col", "MaxPool", "max", (1, 2, 4, 5, 3), outputs=2,
          kernel_shape=[2, 3, 2], strides=[1, 2, 1], pads=[0, 1, 1, 1, 1, 0], storage_order=1)
# ceil mode: the last window would start in the end padding and is dropped
pool_case("avgpool_ceil_pad", "AveragePool", "avg", (1, 3, 5, 6), kernel_shape=[2, 3],
          strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1)
pool_case("avgpool_same_lower_1d", "AveragePool", "avg", (2, 3, 9), kernel_shape=[4],
          strides=[2], auto_pad="SAME_LOWER")
pool_case("lppool_p3", "LpPool", "lp", (1, 2, 6, 5), kernel_shape=[3, 2], strides=[2, 1],
          pads=[1, 0, 0, 1], p=3)
pool_case("lppool_1d_f64", "LpPool", "lp", (2, 2, 11), dtype=np.float64, kernel_shape=[3],
          strides=[3], p=1)

x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
save("globallppool", [helper.make_node("GlobalLpPool", ["X"], ["Y"], p=3)],
     [vi("X", F, [2, 3, 4, 5])], [vi("Y", F, [2, 3, 1, 1])])
pb("globallppool_x", x)
pb("globallppool_y", (np.abs(x.astype(np.float64)) ** 3).sum(axis=(2, 3), keepdims=True)
   .__pow__(1 / 3).astype(np.float32))

x = rng.standard_normal((2, 3, 7)).astype(np.float64)
save("globalavgpool_1d_f64", [helper.make_node("GlobalAveragePool", ["X"], ["Y"])],
     [vi("X", F64, [2, 3, 7])], [vi("Y", F64, [2, 3, 1])])
pb("globalavgpool_1d_f64_x", x)
pb("globalavgpool_1d_f64_y", x.mean(axis=2, keepdims=True))

# ---- pooling errors -------------------------------------------------------
save("pool_no_kernel", [helper.make_node("MaxPool", ["X"], ["Y"], name="nokernel")],
     [vi("X", F, [1, 1, 4, 4])], [vi("Y", F, None)])
save("pool_rank_mismatch",
     [helper.make_node("AveragePool", ["X"], ["Y"], name="poolrank", kernel_shape=[2, 2, 2])],
     [vi("X", F, [1, 1, 4, 4])], [vi("Y", F, None)])
save("pool_out_nonpos",
     [helper.make_node("MaxPool", ["X"], ["Y"], name="poolbig", kernel_shape=[5, 1])],
     [vi("X", F, [1, 1, 4, 4])], [vi("Y", F, None)])
save("pool_bad_pads",
     [helper.make_node("MaxPool", ["X"], ["Y"], name="poolpads", kernel_shape=[2, 2], pads=[1, 1])],
     [vi("X", F, [1, 1, 4, 4])], [vi("Y", F, None)])
