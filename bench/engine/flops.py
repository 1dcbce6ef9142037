#!/usr/bin/python3
"""Count a model's multiply-accumulate FLOPs, for bench/engine/run.sh.

    /usr/bin/python3 bench/engine/flops.py MODEL.onnx [--dim NAME=VALUE ...]

Counts Conv, ConvTranspose, Gemm and MatMul from the model's shapes (ONNX
shape inference, symbolic dimensions set by --dim, default 1) and prints

    flops 8178368512 conv 8174272512 gemm 4096000 matmul 0 nodes 54 unknown 0

where each figure is 2 x multiply-accumulates (one multiply and one add per
MAC); bias additions, activations, pooling and normalisation are not
counted, as is usual for "the model's FLOPs". "unknown" counts nodes of
those types whose shapes could not be inferred (their FLOPs are missing
from the total). Needs python3-onnx (Debian's /usr/bin/python3).
"""

import argparse
import sys

try:
    import onnx
    from onnx import shape_inference
except ImportError as exc:
    sys.exit(f"flops.py: {exc}; run it with /usr/bin/python3 (python3-onnx)")


def prod(xs):
    p = 1
    for x in xs:
        p *= x
    return p


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--dim", action="append", default=[],
                    help="NAME=VALUE for a symbolic dimension (default 1)")
    args = ap.parse_args()
    dims = {}
    for d in args.dim:
        name, _, value = d.partition("=")
        if not name or not value.isdigit():
            sys.exit(f"flops.py: --dim '{d}': expected NAME=VALUE")
        dims[name] = int(value)

    model = onnx.load(args.model)
    # fix the symbolic input dimensions first, so inference yields numbers
    for inp in model.graph.input:
        for dim in inp.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") or not dim.HasField("dim_value"):
                dim.dim_value = dims.get(dim.dim_param, 1)
    model = shape_inference.infer_shapes(model)

    shapes = {}
    for vi in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        t = vi.type.tensor_type
        if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
            shapes[vi.name] = [d.dim_value for d in t.shape.dim]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)

    total = {"conv": 0, "gemm": 0, "matmul": 0}
    counted = unknown = 0
    for node in model.graph.node:
        op = node.op_type
        if op not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            continue
        ins = [shapes.get(n) for n in node.input]
        out = shapes.get(node.output[0])
        if op in ("Conv", "ConvTranspose"):
            w = ins[1] if len(ins) > 1 else None
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            if w is None or out is None or ins[0] is None:
                unknown += 1
                continue
            if op == "Conv":
                # every output element: C_in/group x kernel MACs
                macs = prod(out) * w[1] * prod(w[2:])
            else:
                # every input element scatters to C_out/group x kernel outputs
                macs = prod(ins[0]) * w[1] * prod(w[2:])
            total["conv"] += 2 * macs
        elif op == "Gemm":
            a = ins[0]
            trans_a = next((a_.i for a_ in node.attribute if a_.name == "transA"), 0)
            if a is None or out is None:
                unknown += 1
                continue
            k = a[0] if trans_a else a[1]
            total["gemm"] += 2 * prod(out) * k
        else:
            a = ins[0]
            if a is None or out is None:
                unknown += 1
                continue
            total["matmul"] += 2 * prod(out) * a[-1]
        counted += 1
    print(f"flops {sum(total.values())} conv {total['conv']} gemm {total['gemm']} "
          f"matmul {total['matmul']} nodes {counted} unknown {unknown}")


if __name__ == "__main__":
    main()
