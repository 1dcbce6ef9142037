#!/usr/bin/python3
"""Quantize a float convolutional network to a QDQ (QuantizeLinear /
DequantizeLinear) ONNX model, the form quantization tools emit and runtimes
turn into int8 kernels.

    /usr/bin/python3 bench/models/quantize.py IN.onnx OUT.onnx
        [--calib N] [--seed S] [--input IN.pb]

Uses only what Debian ships (python3-onnx, python3-numpy). Static
quantization:

- weights of Conv and Gemm: int8, symmetric, one scale per output channel
  (zero point 0), stored as int8 initializers read through DequantizeLinear;
- biases: int32 at scale input_scale * weight_scale (per channel), read
  through DequantizeLinear, as the usual tools do;
- activations: every float tensor that feeds a Conv, Gemm, Add, MaxPool,
  AveragePool or GlobalAveragePool, or that one of them produces, gets one
  QuantizeLinear -> DequantizeLinear pair after its producer (uint8,
  asymmetric, per tensor), except an output whose only reader is a Relu or
  Clip (the activation's output is quantized instead, as the tools do, so
  the runtime can fold the activation into the quantized operator); graph
  outputs stay float.

Activation ranges come from running the float model on --calib random inputs
(uniform in [-1, 1), the distribution the benchmark inputs have, plus the
--input file when given) with a small NumPy interpreter of the operators the
benchmark convolutional networks use (Conv, Relu, Clip, Add, MaxPool,
AveragePool, GlobalAveragePool, Flatten, Gemm, Reshape): any other operator
stops the script with its name. Ranges always include 0.

Prints the node counts before and after. How far the quantized model's
output is from the float model's is for the runtimes to show: run both on
the same input (bench/engine/ prints it for the INT8 row).
"""

import argparse
import sys

try:
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper, TensorProto
except ImportError as exc:
    sys.exit(f"quantize.py: {exc}; run it with /usr/bin/python3 "
             "(Debian's python3-numpy and python3-onnx)")

QUANT_OPS = {"Conv", "Gemm", "Add", "MaxPool", "AveragePool", "GlobalAveragePool"}


# ---- a small float interpreter for calibration --------------------------------------

def attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def pads_of(a, nsp):
    p = list(a.get("pads", [0] * (2 * nsp)))
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", b""):
        raise SystemExit("quantize.py: auto_pad is not supported by the calibration interpreter")
    return p


def conv(x, w, b, a):
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    g = a.get("group", 1)
    sh, sw = a.get("strides", [1, 1])
    dh, dw = a.get("dilations", [1, 1])
    pt, pl, pb, pr = pads_of(a, 2)
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    y = np.empty((n, m, oh, ow), dtype=np.float32)
    mg = m // g
    for gi in range(g):
        xs = xp[:, gi * cg:(gi + 1) * cg]
        cols = np.empty((n, cg, kh, kw, oh, ow), dtype=np.float32)
        for i in range(kh):
            for j in range(kw):
                cols[:, :, i, j] = xs[:, :, i * dh:i * dh + sh * oh:sh, j * dw:j * dw + sw * ow:sw]
        cols = cols.reshape(n, cg * kh * kw, oh * ow)
        wg = w[gi * mg:(gi + 1) * mg].reshape(mg, -1)
        y[:, gi * mg:(gi + 1) * mg] = np.einsum("mk,nkp->nmp", wg, cols).reshape(n, mg, oh, ow)
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


def pool(x, a, kind):
    kh, kw = a["kernel_shape"]
    sh, sw = a.get("strides", [1, 1])
    pt, pl, pb, pr = pads_of(a, 2)
    if a.get("ceil_mode", 0) or a.get("dilations", [1, 1]) != [1, 1]:
        raise SystemExit("quantize.py: ceil_mode/dilations in pooling are not supported")
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=fill)
    n, c, h, w = x.shape
    oh = (h + pt + pb - kh) // sh + 1
    ow = (w + pl + pr - kw) // sw + 1
    win = np.stack([xp[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw]
                    for i in range(kh) for j in range(kw)])
    if kind == "max":
        return win.max(axis=0)
    if a.get("count_include_pad", 0) or not any((pt, pl, pb, pr)):
        return win.mean(axis=0)
    ones = np.pad(np.ones((1, 1, h, w), np.float32), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    cnt = np.stack([ones[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw]
                    for i in range(kh) for j in range(kw)]).sum(axis=0)
    return win.sum(axis=0) / cnt


def run_float(model, feeds):
    """Every tensor's value for one input (dict name -> array)."""
    env = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    env.update(feeds)
    for node in model.graph.node:
        a = attrs(node)
        ins = [env[i] if i else None for i in node.input]
        op = node.op_type
        if op == "Conv":
            out = conv(ins[0], ins[1], ins[2] if len(ins) > 2 else None, a)
        elif op == "Relu":
            out = np.maximum(ins[0], 0)
        elif op == "Clip":
            lo = ins[1] if len(ins) > 1 and ins[1] is not None else a.get("min", -np.inf)
            hi = ins[2] if len(ins) > 2 and ins[2] is not None else a.get("max", np.inf)
            out = np.clip(ins[0], lo, hi)
        elif op == "Add":
            out = ins[0] + ins[1]
        elif op == "MaxPool":
            out = pool(ins[0], a, "max")
        elif op == "AveragePool":
            out = pool(ins[0], a, "avg")
        elif op == "GlobalAveragePool":
            out = ins[0].mean(axis=(2, 3), keepdims=True)
        elif op == "Flatten":
            ax = a.get("axis", 1)
            out = ins[0].reshape(int(np.prod(ins[0].shape[:ax])), -1)
        elif op == "Reshape":
            out = ins[0].reshape([d if d != 0 else ins[0].shape[k]
                                  for k, d in enumerate(ins[1].tolist())])
        elif op == "Gemm":
            A = ins[0].T if a.get("transA", 0) else ins[0]
            B = ins[1].T if a.get("transB", 0) else ins[1]
            out = a.get("alpha", 1.0) * A @ B
            if len(ins) > 2 and ins[2] is not None:
                out = out + a.get("beta", 1.0) * ins[2]
        else:
            raise SystemExit(f"quantize.py: operator {op} (node {node.name}) is not "
                             "supported by the calibration interpreter")
        env[node.output[0]] = out.astype(np.float32)
    return env


# ---- quantization parameters ------------------------------------------------------------

def act_params(lo, hi):
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0 if hi > lo else 1.0
    zp = int(np.clip(np.rint(-lo / scale), 0, 255))
    return np.float32(scale), np.uint8(zp)


def weight_params(w):
    """Per output channel (axis 0) symmetric int8."""
    amax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale.reshape((-1,) + (1,) * (w.ndim - 1))), -127, 127)
    return q.astype(np.int8), scale


def fake_quant(x, scale, zp):
    q = np.clip(np.rint(x / scale) + zp, 0, 255)
    return ((q - zp) * scale).astype(np.float32)


# ---- rewriting -------------------------------------------------------------------------------

def quantize(model, ranges):
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    outputs = {o.name for o in g.output}
    consumers = {}
    for node in g.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)

    # which activations get a Q/DQ pair
    acts = set()
    for node in g.node:
        if node.op_type not in QUANT_OPS:
            continue
        data_inputs = node.input[:1] if node.op_type in ("Conv", "Gemm") else node.input
        for t in data_inputs:
            if t and t not in inits:
                acts.add(t)
        for t in node.output:
            # an activation right after the node is where the tools quantize
            # (they fold it into the quantized operator)
            after = consumers.get(t, [])
            if len(after) == 1 and after[0].op_type in ("Relu", "Clip"):
                continue
            if t not in outputs:
                acts.add(t)

    new_nodes, new_inits, act_scale = [], [], {}
    renamed = {}
    for t in sorted(acts):
        s, zp = act_params(*ranges[t])
        act_scale[t] = s
        sn, zn = f"{t}/q_scale", f"{t}/q_zero_point"
        new_inits += [numpy_helper.from_array(np.array(s, np.float32), sn),
                      numpy_helper.from_array(np.array(zp, np.uint8), zn)]
        renamed[t] = f"{t}/dq"
        new_nodes.append((t, [
            helper.make_node("QuantizeLinear", [t, sn, zn], [f"{t}/q"], name=f"{t}/QuantizeLinear"),
            helper.make_node("DequantizeLinear", [f"{t}/q", sn, zn], [renamed[t]],
                             name=f"{t}/DequantizeLinear"),
        ]))

    weight_dq = []
    for node in g.node:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        x, w = node.input[0], node.input[1]
        if w not in inits:
            continue
        wf = numpy_helper.to_array(inits[w])
        trans_b = node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
        if node.op_type == "Gemm" and not trans_b:
            wf = wf.T  # channels on axis 0 for the per-channel scales
        wq, ws = weight_params(wf)
        if node.op_type == "Gemm" and not trans_b:
            wq = wq.T
        axis = 0 if node.op_type == "Conv" or trans_b else 1
        wn = f"{w}/quantized"
        new_inits += [numpy_helper.from_array(wq, wn),
                      numpy_helper.from_array(ws, f"{wn}/scale"),
                      numpy_helper.from_array(np.zeros(ws.shape, np.int8), f"{wn}/zero_point")]
        dq = helper.make_node("DequantizeLinear", [wn, f"{wn}/scale", f"{wn}/zero_point"],
                              [f"{wn}/dq"], name=f"{wn}/DequantizeLinear", axis=axis)
        weight_dq.append(dq)
        node.input[1] = f"{wn}/dq"
        if len(node.input) > 2 and node.input[2] in inits and x in act_scale:
            b = node.input[2]
            bf = numpy_helper.to_array(inits[b])
            bs = (act_scale[x] * ws).astype(np.float32)
            bq = np.clip(np.rint(bf / bs), -2**31, 2**31 - 1).astype(np.int32)
            bn = f"{b}/quantized"
            new_inits += [numpy_helper.from_array(bq, bn),
                          numpy_helper.from_array(bs, f"{bn}/scale"),
                          numpy_helper.from_array(np.zeros(bs.shape, np.int32), f"{bn}/zero_point")]
            bdq = helper.make_node("DequantizeLinear", [bn, f"{bn}/scale", f"{bn}/zero_point"],
                                   [f"{bn}/dq"], name=f"{bn}/DequantizeLinear", axis=0)
            weight_dq.append(bdq)
            node.input[2] = f"{bn}/dq"

    # consumers read the dequantized activations
    for node in g.node:
        for k, i in enumerate(node.input):
            if i in renamed:
                node.input[k] = renamed[i]

    # order: weights first, then each Q/DQ pair right after its producer
    pairs = dict(new_nodes)
    ordered = list(weight_dq)
    for t in [i.name for i in g.input]:
        ordered += pairs.get(t, [])
    for node in g.node:
        ordered.append(node)
        for t in node.output:
            ordered += pairs.get(t, [])
    used = set()
    for node in ordered:
        used.update(node.input)
    keep = [i for i in g.initializer if i.name in used]
    del g.node[:]
    g.node.extend(ordered)
    del g.initializer[:]
    g.initializer.extend(keep + new_inits)
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--calib", type=int, default=4, help="random calibration inputs (default 4)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--input", help="a TensorProto .pb input added to the calibration set")
    args = ap.parse_args()

    model = onnx.load(args.src)
    g = model.graph
    inits = {i.name for i in g.initializer}
    real_inputs = [i for i in g.input if i.name not in inits]
    if len(real_inputs) != 1:
        sys.exit("quantize.py: expected a model with one input")
    inp = real_inputs[0]
    dims = [d.dim_value if d.dim_value > 0 else 1 for d in inp.type.tensor_type.shape.dim]
    rng = np.random.default_rng(args.seed)
    samples = [rng.uniform(-1, 1, dims).astype(np.float32) for _ in range(args.calib)]
    if args.input:
        t = onnx.TensorProto()
        with open(args.input, "rb") as f:
            t.ParseFromString(f.read())
        samples.insert(0, numpy_helper.to_array(t).astype(np.float32))

    ranges = {}
    for k, x in enumerate(samples):
        env = run_float(model, {inp.name: x})
        for name, v in env.items():
            if name in inits or not isinstance(v, np.ndarray) or v.dtype != np.float32:
                continue
            lo, hi = float(v.min()), float(v.max())
            if name in ranges:
                lo, hi = min(lo, ranges[name][0]), max(hi, ranges[name][1])
            ranges[name] = (lo, hi)
        print(f"calibration input {k + 1}/{len(samples)} done", file=sys.stderr)

    n_before = len(g.node)
    qmodel = quantize(model, ranges)
    onnx.checker.check_model(qmodel)
    onnx.save(qmodel, args.dst)
    counts = {}
    for node in qmodel.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    print(f"{args.dst}: {n_before} -> {len(qmodel.graph.node)} nodes "
          f"({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})")


if __name__ == "__main__":
    main()
