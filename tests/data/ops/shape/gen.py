#!/usr/bin/python3
"""Generates the test models of tests/unit/test_ops_shape.c.

Run once by hand (python3-onnx and numpy); the tests only read the output:

  golden/<case>/model.onnx, input_<i>.pb, output_<i>.pb
      one small model per case, expected outputs computed here with numpy.
      They cover what the ONNX node tests do not: old opset versions
      (attributes that later became inputs), more dtypes (bool, float16,
      int8, int32 indices), negative indices, sentinels, zero-size tensors.
  err_<name>.onnx
      models whose inputs the C test fills with hostile values.
  rand_<name>.onnx
      models with symbolic dims, checked in C against reference loops on
      random shapes.
"""
import os
import shutil

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "golden")
I64_MAX = np.iinfo(np.int64).max
I64_MIN = np.iinfo(np.int64).min

NP2ONNX = {
    np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE,
    np.dtype(np.float16): TensorProto.FLOAT16, np.dtype(np.int8): TensorProto.INT8,
    np.dtype(np.int16): TensorProto.INT16, np.dtype(np.int32): TensorProto.INT32,
    np.dtype(np.int64): TensorProto.INT64, np.dtype(np.uint8): TensorProto.UINT8,
    np.dtype(np.uint16): TensorProto.UINT16, np.dtype(np.uint32): TensorProto.UINT32,
    np.dtype(np.uint64): TensorProto.UINT64, np.dtype(np.bool_): TensorProto.BOOL,
}

rng = np.random.default_rng(1234)


def model(op, inputs, outputs, opset, initializers=(), **attrs):
    """inputs / outputs: lists of (name, elem_type, shape); a name of ''
    is an omitted optional input."""
    node = helper.make_node(op, [n for n, _, _ in inputs], [n for n, _, _ in outputs], **attrs)
    ins = [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs if n]
    outs = [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs]
    g = helper.make_graph([node], op.lower(), ins, outs, list(initializers))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                             producer_name="edgeserve-tests")


def golden(name, op, opset, inputs, outputs, **attrs):
    """inputs: list of numpy arrays (None = omitted optional input);
    outputs: list of numpy arrays (expected)."""
    d = os.path.join(GOLDEN, name)
    os.makedirs(d)
    ins, k = [], 0
    for i, a in enumerate(inputs):
        if a is None:
            ins.append(("", 0, None))
            continue
        ins.append((f"x{i}", NP2ONNX[a.dtype], list(a.shape)))
        t = numpy_helper.from_array(a, f"x{i}")
        with open(os.path.join(d, f"input_{k}.pb"), "wb") as f:
            f.write(t.SerializeToString())
        k += 1
    outs = []
    for i, a in enumerate(outputs):
        a = np.asarray(a)
        outs.append((f"y{i}", NP2ONNX[a.dtype], list(a.shape)))
        t = numpy_helper.from_array(a, f"y{i}")
        with open(os.path.join(d, f"output_{i}.pb"), "wb") as f:
            f.write(t.SerializeToString())
    m = model(op, ins, outs, opset, **attrs)
    onnx.save(m, os.path.join(d, "model.onnx"))


def err_model(name, op, opset, inputs, outputs, **attrs):
    onnx.save(model(op, inputs, outputs, opset, **attrs), os.path.join(HERE, f"err_{name}.onnx"))


def rand_model(name, op, opset, inputs, outputs, **attrs):
    onnx.save(model(op, inputs, outputs, opset, **attrs), os.path.join(HERE, f"rand_{name}.onnx"))


def f32(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def i64(*v):
    return np.array(v, dtype=np.int64)


def i32(*v):
    return np.array(v, dtype=np.int32)


def gen_golden():
    shutil.rmtree(GOLDEN, ignore_errors=True)
    os.makedirs(GOLDEN)

    # ---- shape.c ----
    x = f32(2, 3, 2)
    golden("reshape_v1_attr", "Reshape", 1, [x], [x.reshape(3, -1)], shape=[3, -1])
    golden("reshape_v5_zero_copies", "Reshape", 5, [x, i64(0, -1)], [x.reshape(2, 6)])
    z = np.zeros((0, 3), np.float32)
    golden("reshape_allowzero", "Reshape", 14, [z, i64(3, 0)], [z.reshape(3, 0)], allowzero=1)
    golden("reshape_bool", "Reshape", 14, [x > 0, i64(-1)], [(x > 0).reshape(-1)])

    golden("flatten_v1", "Flatten", 1, [x], [x.reshape(2, 6)], axis=1)
    golden("flatten_zero_size", "Flatten", 13, [np.zeros((2, 0, 3), np.float16)],
           [np.zeros((0, 3), np.float16)], axis=2)
    golden("flatten_axis0_int8", "Flatten", 13, [x.astype(np.int8)], [x.astype(np.int8).reshape(1, 12)], axis=0)

    s = f32(1, 3, 1, 2)
    golden("squeeze_v1_attr", "Squeeze", 1, [s], [s.reshape(3, 2)], axes=[0, 2])
    golden("squeeze_v11_neg", "Squeeze", 11, [s], [s.reshape(1, 3, 2)], axes=[-2])
    golden("squeeze_v1_all", "Squeeze", 1, [s], [s.reshape(3, 2)])
    golden("squeeze_v13_all", "Squeeze", 13, [s], [s.reshape(3, 2)])
    golden("squeeze_v13_empty_axes", "Squeeze", 13, [s, np.zeros(0, np.int64)], [s.reshape(3, 2)])
    u = f32(2, 3)
    golden("unsqueeze_v1_attr", "Unsqueeze", 1, [u], [u.reshape(1, 2, 3, 1)], axes=[0, 3])
    golden("unsqueeze_v11_neg", "Unsqueeze", 11, [u], [u.reshape(2, 3, 1)], axes=[-1])
    golden("unsqueeze_v13_scalar", "Unsqueeze", 13, [np.array(5, np.int64), i64(0, 1)],
           [np.array([[5]], np.int64)])

    golden("shape_v1", "Shape", 1, [x], [i64(2, 3, 2)])
    golden("shape_v15_clip", "Shape", 15, [x], [i64(2, 3)], start=-10, end=-1)
    golden("shape_v15_empty", "Shape", 15, [x], [np.zeros(0, np.int64)], start=2, end=1)
    golden("shape_scalar", "Shape", 13, [np.array(1.0, np.float32)], [np.zeros(0, np.int64)])
    golden("size_zero", "Size", 13, [z], [np.array(0, np.int64)])
    golden("size_bool", "Size", 1, [x > 0], [np.array(12, np.int64)])
    golden("identity_f16", "Identity", 13, [x.astype(np.float16)], [x.astype(np.float16)])
    golden("identity_bool", "Identity", 16, [x > 0], [x > 0])

    golden("dropout_v7_mask", "Dropout", 7, [x], [x, np.ones_like(x)], ratio=0.3)
    golden("dropout_v10_mask", "Dropout", 10, [x], [x, np.ones(x.shape, np.bool_)])
    golden("dropout_v1_is_test", "Dropout", 1, [x], [x], is_test=1)
    golden("dropout_v13_f16_ratio", "Dropout", 13,
           [x.astype(np.float16), np.array(0.5, np.float16)],
           [x.astype(np.float16), np.ones(x.shape, np.bool_)])
    golden("dropout_v13_train_zero", "Dropout", 13,
           [x, np.array(0.0, np.float32), np.array(True)], [x, np.ones(x.shape, np.bool_)])
    golden("dropout_v13_no_train", "Dropout", 13,
           [x, np.array(0.7, np.float32), np.array(False)], [x, np.ones(x.shape, np.bool_)])

    golden("constant_value_ints", "Constant", 13, [], [i64(1, -2, 3)], value_ints=[1, -2, 3])
    golden("constant_value_float", "Constant", 13, [], [np.array(2.5, np.float32)], value_float=2.5)
    golden("constant_value_floats", "Constant", 13, [], [np.array([1.5, -2], np.float32)],
           value_floats=[1.5, -2])
    golden("constant_value_int", "Constant", 13, [], [np.array(-7, np.int64)], value_int=-7)
    h = np.array([[1, 2.5], [-3, 65504]], np.float16)
    golden("constant_tensor_f16", "Constant", 9, [], [h],
           value=numpy_helper.from_array(h, "v"))
    b = np.array([True, False, True])
    golden("constant_tensor_bool", "Constant", 1, [], [b], value=numpy_helper.from_array(b, "v"))

    golden("cos_int64_value", "ConstantOfShape", 9, [i64(2, 3)], [np.full((2, 3), -5, np.int64)],
           value=numpy_helper.from_array(i64(-5), "v"))
    golden("cos_scalar", "ConstantOfShape", 9, [np.zeros(0, np.int64)], [np.array(0, np.float32)])
    golden("cos_bool", "ConstantOfShape", 9, [i64(4)], [np.ones(4, np.bool_)],
           value=numpy_helper.from_array(np.array([True]), "v"))
    golden("cos_f16_zero_dim", "ConstantOfShape", 9, [i64(3, 0)], [np.zeros((3, 0), np.float16)],
           value=numpy_helper.from_array(np.array([1.5], np.float16), "v"))

    e = f32(3, 1)
    golden("expand_bcast", "Expand", 13, [e, i64(2, 1, 4)], [e * np.ones((2, 1, 4), np.float32)])
    xe = f32(2, 3)
    golden("expand_lower_rank_shape", "Expand", 8, [xe, i64(3)], [xe.copy()])
    golden("expand_bool_scalar", "Expand", 13, [np.array(True), i64(2, 2)], [np.ones((2, 2), np.bool_)])
    golden("expand_zero", "Expand", 13, [f32(1, 3), i64(0, 1)], [np.zeros((0, 3), np.float32)])
    xi = np.arange(6, dtype=np.int8).reshape(1, 6, 1)
    golden("expand_int8_middle", "Expand", 13, [xi, i64(2, 1, 3)], [np.broadcast_to(xi, (2, 6, 3)).copy()])

    golden("range_int64_neg", "Range", 11, [i64(10), i64(-3), i64(-4)],
           [np.arange(10, -3, -4, dtype=np.int64)])
    golden("range_int16", "Range", 11, [np.array(1, np.int16), np.array(9, np.int16), np.array(3, np.int16)],
           [np.arange(1, 9, 3, dtype=np.int16)])
    golden("range_double", "Range", 11, [np.array(0.5), np.array(2.0), np.array(0.25)],
           [np.arange(0.5, 2.0, 0.25)])
    golden("range_empty", "Range", 11, [np.array(5, np.int32), np.array(1, np.int32), np.array(2, np.int32)],
           [np.zeros(0, np.int32)])
    golden("range_float_neg", "Range", 11, [np.array(1, np.float32), np.array(-1, np.float32),
                                             np.array(-0.3, np.float32)],
           [np.array([1 - 0.3 * i for i in range(7)], np.float32)])

    golden("eyelike_k_neg_int32", "EyeLike", 9, [np.zeros((3, 4), np.float32)],
           [np.eye(3, 4, k=-1, dtype=np.int32)], k=-1, dtype=TensorProto.INT32)
    golden("eyelike_k_far", "EyeLike", 9, [np.zeros((2, 3), np.int64)], [np.zeros((2, 3), np.int64)], k=5)
    golden("eyelike_bool", "EyeLike", 9, [np.zeros((3, 3), np.bool_)], [np.eye(3, dtype=np.bool_)])
    golden("eyelike_f16", "EyeLike", 9, [np.zeros((2, 4), np.float16)], [np.eye(2, 4, k=2, dtype=np.float16)], k=2)

    # ---- transform.c ----
    t = f32(2, 3, 4, 5)
    for i, perm in enumerate([(0, 2, 3, 1), (1, 0, 2, 3), (3, 2, 1, 0), (0, 1, 3, 2), (2, 0, 3, 1)]):
        golden(f"transpose_f32_{i}", "Transpose", 13, [t], [t.transpose(perm)], perm=list(perm))
    ti = rng.integers(-100, 100, (3, 1, 5, 2)).astype(np.int8)
    golden("transpose_int8_unit_dims", "Transpose", 1, [ti], [ti.transpose(2, 1, 3, 0)], perm=[2, 1, 3, 0])
    th = f32(67, 45).astype(np.float16)
    golden("transpose_2d_blocked_f16", "Transpose", 13, [th], [th.T.copy()])
    td = rng.standard_normal((2, 9, 35))
    golden("transpose_batched_double", "Transpose", 13, [td], [td.transpose(0, 2, 1)], perm=[0, 2, 1])
    tb = rng.standard_normal((2, 3, 4)) > 0
    golden("transpose_bool_default", "Transpose", 13, [tb], [tb.transpose()])
    golden("transpose_scalar", "Transpose", 13, [np.array(3, np.int64)], [np.array(3, np.int64)])

    a1, a2 = f32(2, 3), f32(2, 1)
    golden("concat_v1_default_axis", "Concat", 1, [a1, a2], [np.concatenate([a1, a2], 1)])
    golden("concat_zero_input", "Concat", 13, [a1, np.zeros((2, 0), np.float32), a2],
           [np.concatenate([a1, a2], 1)], axis=-1)
    c1, c2 = rng.integers(0, 9, (1, 2, 2)).astype(np.uint16), rng.integers(0, 9, (3, 2, 2)).astype(np.uint16)
    golden("concat_uint16_axis0", "Concat", 4, [c1, c2], [np.concatenate([c1, c2], 0)], axis=0)

    sp = f32(2, 6)
    golden("split_v2_attr", "Split", 2, [sp], [sp[:, :1], sp[:, 1:3], sp[:, 3:]], axis=1, split=[1, 2, 3])
    golden("split_v1_input", "Split", 1, [sp, i64(4, 2)], [sp[:, :4], sp[:, 4:]], axis=1)
    golden("split_v11_equal_neg_axis", "Split", 11, [sp], [sp[:, :3], sp[:, 3:]], axis=-1)
    s7 = np.arange(7, dtype=np.int32)
    golden("split_v18_num_outputs", "Split", 18, [s7], [s7[:3], s7[3:6], s7[6:]], num_outputs=3)
    golden("split_v13_zero_sizes", "Split", 13, [s7, i64(0, 7, 0)], [s7[:0], s7, s7[:0]])

    sl = f32(5, 6, 4)
    golden("slice_v1_attr", "Slice", 1, [sl], [sl[1:4, :, -3:]], starts=[1, -3], ends=[4, 100], axes=[0, 2])
    golden("slice_v1_default_axes", "Slice", 1, [sl], [sl[0:2, 2:-1]], starts=[0, 2], ends=[2, -1])
    golden("slice_sentinels_reverse", "Slice", 13, [sl, i64(-1), i64(I64_MIN), i64(1), i64(-1)],
           [sl[:, ::-1]])
    golden("slice_int32_neg_step", "Slice", 13, [sl, i32(4, 100), i32(0, -100), i32(0, 1), i32(-2, -3)],
           [sl[4:0:-2, 100:-100:-3]])
    golden("slice_empty", "Slice", 13, [sl, i64(3), i64(1), None, None], [sl[3:1]])
    golden("slice_big_step", "Slice", 13, [sl, i64(1), i64(I64_MAX), i64(2), i64(I64_MAX)], [sl[:, :, 1::10**18]])
    golden("slice_neg_big_step", "Slice", 13, [sl, i64(I64_MAX), i64(I64_MIN), i64(1), i64(I64_MIN)],
           [sl[:, 5:0:-1][:, :1]])
    sb = rng.standard_normal((4, 5)) > 0
    golden("slice_bool", "Slice", 10, [sb, i64(1, 4), i64(4, 0), i64(0, 1), i64(1, -1)],
           [sb[1:4, 4:0:-1]])

    g = f32(4, 3).astype(np.float16)
    idx = i32(-1, 0, 2, -4)
    golden("gather_int32_neg_f16", "Gather", 13, [g, idx.reshape(2, 2)], [g[idx % 4].reshape(2, 2, 3)])
    gb = rng.standard_normal((2, 5)) > 0
    golden("gather_bool_axis1_scalar", "Gather", 1, [gb, np.array(-2, np.int64)], [gb[:, 3]], axis=1)
    golden("gather_empty_indices", "Gather", 13, [g, np.zeros((0,), np.int64)], [g[:0]])

    ge = f32(3, 4)
    gi = i32(-1, 0, 3, 1, 2, -4).reshape(2, 3)
    golden("gather_elements_int32_axis1", "GatherElements", 13, [ge, gi],
           [np.take_along_axis(ge[:2], gi % 4, axis=1)], axis=1)
    gi0 = i64(2, -3, 1, 0).reshape(2, 2)
    golden("gather_elements_axis0_smaller", "GatherElements", 11, [ge, gi0],
           [np.take_along_axis(ge[:, :2], gi0 % 3, axis=0)], axis=0)

    gn = rng.integers(0, 50, (2, 3, 4)).astype(np.int64)
    gni = i64(1, -1, 0, 2).reshape(2, 1, 2)
    golden("gathernd_batch1_neg", "GatherND", 12, [gn, gni],
           [np.stack([gn[0][1, 3].reshape(1), gn[1][0, 2].reshape(1)]).reshape(2, 1)], batch_dims=1)
    gni2 = i64(1, -2).reshape(2, 1)
    golden("gathernd_slices", "GatherND", 11, [gn, gni2], [gn[[1, 0]]])

    sd = f32(4, 3)
    sidx = i64(1, -1).reshape(2, 1)
    upd = f32(2, 3)
    exp = sd.copy(); exp[1] = upd[0]; exp[3] = upd[1]
    golden("scatternd_neg_index", "ScatterND", 11, [sd, sidx, upd], [exp])
    for red, fn in (("max", np.maximum), ("min", np.minimum), ("mul", np.multiply), ("add", np.add)):
        exp = sd.copy()
        i2 = i64(2, 2, 0).reshape(3, 1)
        u2 = f32(3, 3)
        for j in range(3):
            exp[i2[j, 0]] = fn(exp[i2[j, 0]], u2[j])
        golden(f"scatternd_{red}", "ScatterND", 18, [sd, i2, u2], [exp], reduction=red)
    si = rng.integers(0, 20, (3, 3)).astype(np.int32)
    ei = i64(1, -1, 0, 1).reshape(2, 2)
    eu = rng.integers(0, 20, (2, 2)).astype(np.int32)
    for red in ("none", "add", "mul", "max", "min"):
        exp = si.copy()
        for a in range(2):
            for b_ in range(2):
                r, c = ei[a, b_] % 3, b_
                v = eu[a, b_]
                exp[r, c] = {"none": v, "add": exp[r, c] + v, "mul": exp[r, c] * v,
                             "max": max(exp[r, c], v), "min": min(exp[r, c], v)}[red]
        golden(f"scatter_elements_int32_{red}", "ScatterElements", 18, [si, ei, eu], [exp],
               axis=0, reduction=red)
    exp = si.copy()
    ei32 = i32(2, 0).reshape(1, 2)
    eu2 = rng.integers(0, 20, (1, 2)).astype(np.int32)
    exp[0, 2] = eu2[0, 0]; exp[0, 0] = eu2[0, 1]
    golden("scatter_v9_axis1", "Scatter", 9, [si, ei32, eu2], [exp], axis=1)
    sf = f32(2, 2).astype(np.float16)
    exp = sf.copy(); exp[1, 0] = np.float16(float(exp[1, 0]) + 1.5)
    golden("scatter_elements_f16_add", "ScatterElements", 16,
           [sf, i64(1).reshape(1, 1), np.array([[1.5]], np.float16)], [exp], reduction="add")

    tl = f32(2, 3)
    golden("tile_v1", "Tile", 1, [tl, np.array(3, np.int64), np.array(1, np.int64)], [np.tile(tl, (1, 3))])
    tt = rng.integers(0, 9, (2, 1, 3)).astype(np.uint8)
    golden("tile_3d_uint8", "Tile", 13, [tt, i64(2, 3, 2)], [np.tile(tt, (2, 3, 2))])
    golden("tile_zero", "Tile", 13, [tt, i64(2, 0, 1)], [np.tile(tt, (2, 0, 1))])
    golden("tile_scalar", "Tile", 13, [np.array(1.5, np.float64), np.zeros(0, np.int64)], [np.array(1.5)])

    p = f32(3, 4)
    golden("pad_v2_reflect", "Pad", 2, [p], [np.pad(p, ((1, 2), (2, 3)), "reflect")],
           pads=[1, 2, 2, 3], mode="reflect")
    golden("pad_v2_value", "Pad", 2, [p], [np.pad(p, ((0, 1), (1, 0)), constant_values=1.5)],
           pads=[0, 1, 1, 0], value=1.5)
    golden("pad_v1_paddings_edge", "Pad", 1, [p], [np.pad(p, ((2, 0), (0, 1)), "edge")],
           paddings=[2, 0, 0, 1], mode="edge")
    golden("pad_v11_crop", "Pad", 11, [p, i64(-1, 1, 0, -2)], [np.pad(p[1:, :2], ((0, 0), (1, 0)))])
    golden("pad_v11_crop_edge", "Pad", 11, [p, i64(1, -2, -1, 1)],
           [np.pad(p[:2, 2:], ((1, 0), (0, 1)), "edge")], mode="edge")
    golden("pad_reflect_wide", "Pad", 13, [p, i64(5, 7, 6, 9)], [np.pad(p, ((5, 6), (7, 9)), "reflect")],
           mode="reflect")
    # numpy's wrap is only periodic while a pad is <= the axis length
    golden("pad_wrap", "Pad", 13, [p, i64(2, 4, 3, 1)], [np.pad(p, ((2, 3), (4, 1)), "wrap")], mode="wrap")
    q = f32(4, 6)
    golden("pad_crop_then_reflect", "Pad", 13, [q, i64(-2, 0, 5, -4)],
           [np.pad(q[2:, :2], ((0, 5), (0, 0)), "reflect")], mode="reflect")
    golden("pad_crop_then_wrap", "Pad", 13, [q, i64(3, -1, 0, 4)],
           [np.pad(q[:, 1:], ((3, 0), (0, 4)), "wrap")], mode="wrap")
    golden("pad_crop_then_edge", "Pad", 13, [q, i64(-1, 2, 2, -5)],
           [np.pad(q[1:, :1], ((0, 2), (2, 0)), "edge")], mode="edge")
    pi = rng.integers(-5, 5, (2, 3)).astype(np.int32)
    golden("pad_int32_value_input", "Pad", 11, [pi, i64(1, 1, 1, 1), np.array(-9, np.int32)],
           [np.pad(pi, 1, constant_values=-9)])
    golden("pad_v18_axes", "Pad", 18, [p, i64(1, 2), None, i64(-1)], [np.pad(p, ((0, 0), (1, 2)))])
    golden("pad_bool_3d", "Pad", 13, [pi.reshape(1, 2, 3) > 0, i64(0, 1, 0, 1, 0, 2)],
           [np.pad(pi.reshape(1, 2, 3) > 0, ((0, 1), (1, 0), (0, 2)))])
    golden("pad_single_reflect", "Pad", 13, [np.array([[4.0]], np.float32), i64(1, 2, 1, 0)],
           [np.full((3, 3), 4.0, np.float32)], mode="reflect")

    dd = f32(1, 8, 2, 3).astype(np.float16)
    n, c, hh, w = dd.shape
    bs = 2
    crd = dd.reshape(n, c // 4, bs, bs, hh, w).transpose(0, 1, 4, 2, 5, 3).reshape(n, c // 4, hh * 2, w * 2)
    dcr = dd.reshape(n, bs, bs, c // 4, hh, w).transpose(0, 3, 4, 1, 5, 2).reshape(n, c // 4, hh * 2, w * 2)
    golden("depthtospace_crd_f16", "DepthToSpace", 11, [dd], [crd], blocksize=2, mode="CRD")
    golden("depthtospace_v1_dcr", "DepthToSpace", 1, [dd], [dcr], blocksize=2)
    sdp = rng.standard_normal((2, 3, 4, 6)) > 0
    b_, c_, h_, w_ = sdp.shape
    s2d = sdp.reshape(b_, c_, h_ // 2, 2, w_ // 2, 2).transpose(0, 3, 5, 1, 2, 4).reshape(b_, c_ * 4, h_ // 2, w_ // 2)
    golden("spacetodepth_bool", "SpaceToDepth", 13, [sdp], [s2d], blocksize=2)

    oi = np.array([[0.0, 2.7], [-1.0, 5.0]], np.float32)
    depth = 4
    vals = i64(-3, 8)
    exp = np.full((depth, 2, 2), -3, np.int64)
    for a in range(2):
        for b__ in range(2):
            v = int(oi[a, b__])
            if v < 0:
                v += depth
            if 0 <= v < depth:
                exp[v, a, b__] = 8
    golden("onehot_float_idx_axis0", "OneHot", 11, [oi, np.array([4.0], np.float32), vals], [exp], axis=0)
    golden("onehot_v9_int32", "OneHot", 9, [i32(1, 3), np.array(3, np.int64), np.array([0, 1], np.float16)],
           [np.array([[0, 1, 0], [0, 0, 0]], np.float16)])

    tr = rng.integers(1, 9, (2, 3, 4)).astype(np.int64)
    golden("trilu_upper_kneg_batched", "Trilu", 14, [tr, np.array(-1, np.int64)],
           [np.stack([np.triu(m_, -1) for m_ in tr])])
    trb = rng.standard_normal((4, 3)) > -5
    golden("trilu_lower_bool", "Trilu", 14, [trb, np.array(1, np.int64)], [np.tril(trb, 1)], upper=0)
    golden("trilu_huge_k", "Trilu", 14, [tr, np.array(I64_MAX, np.int64)], [np.zeros_like(tr)])
    golden("trilu_lower_huge_neg_k", "Trilu", 14, [tr, np.array(I64_MIN, np.int64)], [np.zeros_like(tr)],
           upper=0)

    cs = rng.integers(-9, 9, (2, 5)).astype(np.int32)
    rev = np.flip(np.cumsum(np.flip(cs, 1), 1), 1)
    golden("cumsum_int32_rev_excl", "CumSum", 11, [cs, np.array(1, np.int32)], [(rev - cs).astype(np.int32)],
           exclusive=1, reverse=1)
    cf = f32(3, 2, 2).astype(np.float16)
    golden("cumsum_f16_axis1", "CumSum", 14, [cf, i64(1)],
           [np.cumsum(cf.astype(np.float32), 1).astype(np.float16)])
    cdd = rng.standard_normal((4, 3))
    golden("cumsum_double_neg_axis_excl", "CumSum", 14, [cdd, np.array(-2, np.int64)],
           [np.cumsum(cdd, 0) - cdd], exclusive=1)
    cu = rng.integers(0, 9, (6,)).astype(np.uint64)
    golden("cumsum_uint64_rev", "CumSum", 14, [cu, np.array(0, np.int64)],
           [np.flip(np.cumsum(np.flip(cu)))], reverse=1)

    nz = np.array([[0.0, -0.0, 1.0], [np.nan, 0.0, -2.0]], np.float32)
    golden("nonzero_float_negzero", "NonZero", 13, [nz], [np.array(np.nonzero(nz), np.int64)])
    nzb = rng.standard_normal((2, 3, 2)) > 0
    golden("nonzero_bool_3d", "NonZero", 9, [nzb], [np.array(np.nonzero(nzb), np.int64)])
    golden("nonzero_none", "NonZero", 13, [np.zeros((2, 2), np.int8)], [np.zeros((2, 0), np.int64)])

    cp = f32(3, 4)
    cond = np.array([True, False, True])
    golden("compress_short_cond_axis1", "Compress", 11, [cp, cond], [np.compress(cond, cp, axis=1)], axis=1)
    golden("compress_flat", "Compress", 9, [cp, np.array([False, True, False, False, True])],
           [np.compress([False, True, False, False, True], cp)])
    golden("compress_long_cond_false_tail", "Compress", 11,
           [cp, np.array([True, False, True, False, False])], [cp[[0, 2]]], axis=0)
    golden("compress_none", "Compress", 11, [cp, np.array([False, False])], [cp[:, :0]], axis=-1)


def gen_err():
    F, I64, I32, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32, TensorProto.BOOL
    err_model("gather", "Gather", 13, [("data", F, [3, 2]), ("idx", I64, ["n"])], [("y", F, None)])
    err_model("gather_i32", "Gather", 13, [("data", F, [3, 2]), ("idx", I32, ["n"])], [("y", F, None)], axis=1)
    err_model("reshape", "Reshape", 14, [("data", F, [2, 3]), ("shape", I64, ["n"])], [("y", F, None)])
    err_model("expand", "Expand", 13, [("data", F, [1]), ("shape", I64, ["n"])], [("y", F, None)])
    err_model("cos", "ConstantOfShape", 9, [("shape", I64, ["n"])], [("y", F, None)])
    err_model("tile", "Tile", 13, [("data", F, [2, 2]), ("reps", I64, [2])], [("y", F, None)])
    err_model("range", "Range", 11, [("s", I64, []), ("l", I64, []), ("d", I64, [])], [("y", I64, None)])
    err_model("range_f", "Range", 11, [("s", F, []), ("l", F, []), ("d", F, [])], [("y", F, None)])
    err_model("slice", "Slice", 13, [("data", F, [4, 4]), ("s", I64, [1]), ("e", I64, [1]),
                                     ("a", I64, [1]), ("st", I64, [1])], [("y", F, None)])
    err_model("gathernd", "GatherND", 13, [("data", F, [3, 2]), ("idx", I64, ["n", 2])], [("y", F, None)])
    err_model("scatternd", "ScatterND", 16, [("data", F, [3, 2]), ("idx", I64, [1, 1]),
                                             ("upd", F, [1, 2])], [("y", F, None)])
    err_model("gather_elements", "GatherElements", 13, [("data", F, [3, 2]), ("idx", I32, [1, 2])],
              [("y", F, None)])
    err_model("scatter_elements", "ScatterElements", 13, [("data", F, [3, 2]), ("idx", I64, [1, 2]),
                                                         ("upd", F, [1, 2])], [("y", F, None)], axis=1)
    err_model("pad", "Pad", 13, [("data", F, [2, 2]), ("pads", I64, ["n"])], [("y", F, None)])
    err_model("onehot", "OneHot", 11, [("idx", I64, [2]), ("depth", I64, []), ("vals", F, [2])],
              [("y", F, None)])
    err_model("squeeze", "Squeeze", 13, [("data", F, [1, 2]), ("axes", I64, [1])], [("y", F, None)])
    err_model("unsqueeze", "Unsqueeze", 13, [("data", F, [1, 2, 1, 2]), ("axes", I64, ["n"])],
              [("y", F, None)])
    err_model("split", "Split", 13, [("data", F, [5])], [("a", F, None), ("b", F, None)])
    err_model("concat", "Concat", 13, [("a", F, [2, 2]), ("b", F, [3, "n"])], [("y", F, None)], axis=1)
    err_model("transpose_perm", "Transpose", 13, [("data", F, [2, 2])], [("y", F, None)], perm=[0, 0])
    err_model("compress", "Compress", 11, [("data", F, [2, 2]), ("cond", B, ["n"])], [("y", F, None)], axis=0)
    err_model("depthtospace", "DepthToSpace", 13, [("data", F, [1, 3, 2, 2])], [("y", F, None)], blocksize=2)
    err_model("dropout_train", "Dropout", 13, [("data", F, [2]), ("r", F, []), ("t", B, [])],
              [("y", F, None)])
    err_model("cumsum_axis", "CumSum", 14, [("data", F, [2, 2]), ("axis", I64, [])], [("y", F, None)])


def gen_rand():
    F, I64 = TensorProto.FLOAT, TensorProto.INT64
    d3 = ["a", "b", "c"]
    for name, perm in (("021", [0, 2, 1]), ("201", [2, 0, 1]), ("120", [1, 2, 0]), ("210", [2, 1, 0])):
        rand_model(f"transpose_{name}", "Transpose", 13, [("x", F, d3)], [("y", F, None)], perm=perm)
    rand_model("transpose_4d_u8", "Transpose", 13, [("x", TensorProto.UINT8, ["a", "b", "c", "d"])],
               [("y", TensorProto.UINT8, None)], perm=[0, 3, 1, 2])
    rand_model("slice", "Slice", 13, [("x", F, d3), ("s", I64, [3]), ("e", I64, [3]), ("ax", I64, [3]),
                                      ("st", I64, [3])], [("y", F, None)])
    for mode in ("constant", "reflect", "edge", "wrap"):
        rand_model(f"pad_{mode}", "Pad", 13, [("x", F, d3), ("p", I64, [6]), ("v", F, [])],
                   [("y", F, None)], mode=mode)
    rand_model("gather", "Gather", 13, [("x", F, d3), ("i", I64, ["n"])], [("y", F, None)], axis=1)
    rand_model("concat", "Concat", 13, [("x", F, d3), ("z", F, ["a", "b", "e"])], [("y", F, None)], axis=2)
    rand_model("tile", "Tile", 13, [("x", F, d3), ("r", I64, [3])], [("y", F, None)])
    rand_model("expand", "Expand", 13, [("x", F, d3), ("s", I64, [3])], [("y", F, None)])


if __name__ == "__main__":
    for f in os.listdir(HERE):
        if f.endswith(".onnx"):
            os.remove(os.path.join(HERE, f))
    gen_golden()
    gen_err()
    gen_rand()
