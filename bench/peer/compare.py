#!/usr/bin/python3
"""Compare two sets of ONNX outputs saved as TensorProto files.

    /usr/bin/python3 bench/peer/compare.py CANDIDATE REFERENCE [--tol 1e-4]
                                           [--summary] [--quiet]

CANDIDATE and REFERENCE are each a directory of output_<i>.pb files (the
layout of the ONNX backend test data, as `edgeserve run --save-outputs` and
`ort_run.js --save-outputs` write it) or a single .pb file (taken as output 0).
Outputs are matched by index. For each output a (candidate) and b (reference)
it reports max|a-b| and max|b|, and passes when

    max|a-b| <= tol * max|b|        (tol 1e-4 by default)

with equal shapes and no NaN/Inf in a that b does not have at the same
place. Integer and bool outputs are compared the same way, which means exactly
unless tol*max|b| >= 1. Prints a table (or, with --summary, one tab-separated
line: outputs, max abs diff, max |ref|, worst ratio, PASS/FAIL) and exits 1
when any output fails, 2 on a usage or file error.

Needs only numpy (Debian's python3-numpy); the TensorProto parser is built in.
"""

import argparse
import os
import re
import struct
import sys

import numpy as np

# onnx.TensorProto.DataType -> numpy dtype, typed field holding the values
DTYPES = {
    1: (np.float32, "float_data"),
    2: (np.uint8, "int32_data"),
    3: (np.int8, "int32_data"),
    4: (np.uint16, "int32_data"),
    5: (np.int16, "int32_data"),
    6: (np.int32, "int32_data"),
    7: (np.int64, "int64_data"),
    9: (np.bool_, "int32_data"),
    10: (np.float16, "int32_data"),  # int32_data holds the fp16 bits
    11: (np.float64, "double_data"),
    12: (np.uint32, "uint64_data"),
    13: (np.uint64, "uint64_data"),
}
F_DIMS, F_DTYPE, F_SEGMENT, F_FLOAT, F_INT32 = 1, 2, 3, 4, 5
F_INT64, F_NAME, F_RAW, F_DOUBLE, F_UINT64, F_LOCATION = 7, 8, 9, 10, 11, 14


class TensorError(Exception):
    pass


def _varint(buf, pos):
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise TensorError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise TensorError("varint longer than 64 bits")


def _signed64(v):
    return v - (1 << 64) if v >= 1 << 63 else v


def _take(buf, pos, n):
    if n < 0 or pos + n > len(buf):
        raise TensorError("truncated field")
    return buf[pos:pos + n], pos + n


def _repeated(buf, pos, wire, kind, out):
    """Appends one value (unpacked) or a packed run of values to out."""
    if wire == 2:
        n, pos = _varint(buf, pos)
        chunk, pos = _take(buf, pos, n)
        if kind == "f32":
            out.extend(struct.unpack(f"<{len(chunk) // 4}f", chunk))
        elif kind == "f64":
            out.extend(struct.unpack(f"<{len(chunk) // 8}d", chunk))
        else:
            p = 0
            while p < len(chunk):
                v, p = _varint(chunk, p)
                out.append(v)
        return pos
    if kind == "f32":
        chunk, pos = _take(buf, pos, 4)
        out.append(struct.unpack("<f", chunk)[0])
    elif kind == "f64":
        chunk, pos = _take(buf, pos, 8)
        out.append(struct.unpack("<d", chunk)[0])
    else:
        v, pos = _varint(buf, pos)
        out.append(v)
    return pos


def _skip(buf, pos, wire):
    if wire == 0:
        return _varint(buf, pos)[1]
    if wire == 1:
        return _take(buf, pos, 8)[1]
    if wire == 2:
        n, pos = _varint(buf, pos)
        return _take(buf, pos, n)[1]
    if wire == 5:
        return _take(buf, pos, 4)[1]
    raise TensorError(f"unsupported wire type {wire}")


def read_tensor(path):
    """Returns (name, numpy array) of a dense TensorProto file."""
    with open(path, "rb") as f:
        buf = f.read()
    dims, dtype_code, name, raw = [], 0, "", None
    typed = {"float_data": [], "int32_data": [], "int64_data": [],
             "double_data": [], "uint64_data": []}
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if field == F_DIMS:
            d = []
            pos = _repeated(buf, pos, wire, "varint", d)
            dims.extend(_signed64(v) for v in d)
        elif field == F_DTYPE:
            dtype_code, pos = _varint(buf, pos)
        elif field == F_NAME:
            n, pos = _varint(buf, pos)
            chunk, pos = _take(buf, pos, n)
            name = chunk.decode("utf-8", "replace")
        elif field == F_RAW:
            n, pos = _varint(buf, pos)
            raw, pos = _take(buf, pos, n)
        elif field == F_FLOAT:
            pos = _repeated(buf, pos, wire, "f32", typed["float_data"])
        elif field == F_DOUBLE:
            pos = _repeated(buf, pos, wire, "f64", typed["double_data"])
        elif field == F_INT32:
            pos = _repeated(buf, pos, wire, "varint", typed["int32_data"])
        elif field == F_INT64:
            pos = _repeated(buf, pos, wire, "varint", typed["int64_data"])
        elif field == F_UINT64:
            pos = _repeated(buf, pos, wire, "varint", typed["uint64_data"])
        elif field == F_SEGMENT:
            raise TensorError("segmented TensorProto is not supported")
        elif field == F_LOCATION:
            loc, pos = _varint(buf, pos)
            if loc == 1:
                raise TensorError("external data is not supported")
        else:
            pos = _skip(buf, pos, wire)
    if dtype_code not in DTYPES:
        raise TensorError(f"unsupported data_type {dtype_code}")
    if any(d < 0 for d in dims):
        raise TensorError(f"negative dim in {dims}")
    np_dtype, field_name = DTYPES[dtype_code]
    numel = int(np.prod(dims, dtype=np.int64)) if dims else 1
    if raw is not None:
        want = numel * np.dtype(np_dtype).itemsize
        if len(raw) != want:
            raise TensorError(f"raw_data has {len(raw)} bytes, dims {dims} need {want}")
        arr = np.frombuffer(raw, dtype=np.dtype(np_dtype).newbyteorder("<")).astype(np_dtype)
    else:
        vals = typed[field_name]
        if len(vals) != numel:
            raise TensorError(f"{field_name} has {len(vals)} values, dims {dims} need {numel}")
        if field_name == "int32_data" or field_name == "int64_data":
            vals = [_signed64(v) for v in vals]
        if dtype_code == 10:
            arr = np.array(vals, dtype=np.uint16).view(np.float16)
        else:
            arr = np.array(vals, dtype=np_dtype)
    return name, arr.reshape(dims)


def load_outputs(path):
    """Returns [(file, name, array)] ordered by output index."""
    if os.path.isdir(path):
        found = []
        for f in os.listdir(path):
            m = re.fullmatch(r"output_(\d+)\.pb", f)
            if m:
                found.append((int(m.group(1)), f))
        found.sort()
        if not found:
            raise TensorError(f"{path}: no output_<i>.pb files")
        if [i for i, _ in found] != list(range(len(found))):
            raise TensorError(f"{path}: output indices {[i for i, _ in found]} are not 0..n-1")
        files = [os.path.join(path, f) for _, f in found]
    else:
        files = [path]
    out = []
    for f in files:
        try:
            name, arr = read_tensor(f)
        except (OSError, TensorError) as exc:
            raise TensorError(f"{f}: {exc}") from None
        out.append((f, name, arr))
    return out


def compare_one(a, b, tol):
    """Returns (max abs diff, max |b|, ratio, ok, note)."""
    if a.shape != b.shape:
        return float("nan"), float("nan"), float("inf"), False, \
            f"shape {list(a.shape)} != {list(b.shape)}"
    note = ""
    if a.dtype != b.dtype:
        note = f"dtype {a.dtype} vs {b.dtype}"
    if a.size == 0:
        return 0.0, 0.0, 0.0, True, note or "empty"
    a64 = a.astype(np.float64)
    b64 = b.astype(np.float64)
    # non-finite values must sit in the same places with the same value
    a_bad, b_bad = ~np.isfinite(a64), ~np.isfinite(b64)
    same_bad = np.array_equal(a_bad, b_bad) and np.array_equal(
        a64[a_bad], b64[b_bad], equal_nan=True)
    fin = ~(a_bad | b_bad)
    diff = float(np.abs(a64[fin] - b64[fin]).max()) if fin.any() else 0.0
    ref = float(np.abs(b64[fin]).max()) if fin.any() else 0.0
    ratio = diff / ref if ref > 0 else (0.0 if diff == 0 else float("inf"))
    ok = same_bad and diff <= tol * ref
    if not same_bad:
        ratio = float("inf")
        note = (note + "; " if note else "") + \
            f"non-finite: {int(a_bad.sum())} in candidate, {int(b_bad.sum())} in reference"
    return diff, ref, ratio, ok, note


def main():
    ap = argparse.ArgumentParser(
        description="Compare output_<i>.pb sets: pass when max|a-b| <= tol*max|b|.")
    ap.add_argument("candidate", help="directory of output_<i>.pb, or one .pb")
    ap.add_argument("reference", help="directory of output_<i>.pb, or one .pb (b)")
    ap.add_argument("--tol", type=float, default=1e-4, help="relative tolerance (1e-4)")
    ap.add_argument("--summary", action="store_true",
                    help="print one tab-separated line: outputs, max abs diff, "
                         "max |ref|, worst ratio, PASS/FAIL")
    ap.add_argument("--quiet", action="store_true", help="print nothing; exit code only")
    args = ap.parse_args()

    try:
        cand = load_outputs(args.candidate)
        ref = load_outputs(args.reference)
    except TensorError as exc:
        if args.summary:
            print(f"-\t-\t-\t-\tERROR ({exc})")
        elif not args.quiet:
            print(f"compare: {exc}", file=sys.stderr)
        return 2

    rows, all_ok = [], True
    if len(cand) != len(ref):
        all_ok = False
    worst_diff = worst_ref = worst_ratio = 0.0
    for i in range(max(len(cand), len(ref))):
        if i >= len(cand) or i >= len(ref):
            missing = "candidate" if i >= len(cand) else "reference"
            name = (ref if i >= len(cand) else cand)[i][1]
            rows.append((i, name, "-", "-", "-", "-", "FAIL", f"missing in {missing}"))
            worst_ratio = float("inf")
            continue
        _, a_name, a = cand[i]
        _, b_name, b = ref[i]
        diff, refmax, ratio, ok, note = compare_one(a, b, args.tol)
        if a_name != b_name:
            note = (note + "; " if note else "") + f"name '{a_name}' vs '{b_name}'"
        all_ok &= ok
        worst_diff = max(worst_diff, diff) if diff == diff else float("nan")
        worst_ref = max(worst_ref, refmax) if refmax == refmax else worst_ref
        worst_ratio = max(worst_ratio, ratio)
        num = lambda v, fmt: "-" if v != v else format(v, fmt)  # noqa: E731 (nan: "-")
        rows.append((i, b_name, f"{list(b.shape)}", num(diff, ".3e"), num(refmax, ".3e"),
                     f"{ratio:.2e}", "PASS" if ok else "FAIL", note))

    status = "PASS" if all_ok else "FAIL"
    if args.summary:
        print(f"{len(ref)}\t{worst_diff:.3e}\t{worst_ref:.3e}\t{worst_ratio:.2e}\t{status}")
    elif not args.quiet:
        head = ("#", "output", "shape", "max|a-b|", "max|b|", "ratio", "result", "note")
        table = [tuple(str(c) for c in head)] + [tuple(str(c) for c in r) for r in rows]
        widths = [max(len(r[k]) for r in table) for k in range(len(head))]
        for r in table:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        print(f"{status}: {sum(r[6] == 'PASS' for r in rows)}/{len(rows)} outputs within "
              f"{args.tol:g} * max|b|  (a = {args.candidate}, b = {args.reference})")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
