'use strict';
// Minimal reader/writer for onnx.TensorProto (dense tensors only), so the peer
// needs no protobuf dependency. Reads dims, data_type, name and the data from
// raw_data or from the typed fields float_data, int32_data, int64_data,
// double_data and uint64_data (packed or not). Writes dims, data_type, name
// and raw_data, the way onnx.numpy_helper.from_array does.
//
// Field numbers and the data_type enum are those of onnx/onnx.proto.

const FIELD = {
  dims: 1, data_type: 2, segment: 3, float_data: 4, int32_data: 5,
  string_data: 6, int64_data: 7, name: 8, raw_data: 9, double_data: 10,
  uint64_data: 11, doc_string: 12, external_data: 13, data_location: 14,
};

// ONNX data_type -> [onnxruntime-node type name, TypedArray, typed field]
const DTYPES = {
  1: ['float32', Float32Array, 'float_data'],
  2: ['uint8', Uint8Array, 'int32_data'],
  3: ['int8', Int8Array, 'int32_data'],
  4: ['uint16', Uint16Array, 'int32_data'],
  5: ['int16', Int16Array, 'int32_data'],
  6: ['int32', Int32Array, 'int32_data'],
  7: ['int64', BigInt64Array, 'int64_data'],
  9: ['bool', Uint8Array, 'int32_data'],
  10: ['float16', Uint16Array, 'int32_data'], // the bits, as ONNX stores them
  11: ['float64', Float64Array, 'double_data'],
  12: ['uint32', Uint32Array, 'uint64_data'],
  13: ['uint64', BigUint64Array, 'uint64_data'],
};
const ORT_TO_ONNX = Object.fromEntries(
  Object.entries(DTYPES).map(([code, [ortName]]) => [ortName, Number(code)]));

class Reader {
  constructor(buf) { this.buf = buf; this.pos = 0; }
  eof() { return this.pos >= this.buf.length; }
  varint() { // as BigInt: int64 dims and data need all 64 bits
    let result = 0n;
    let shift = 0n;
    for (;;) {
      if (this.pos >= this.buf.length) throw new Error('truncated varint');
      const b = this.buf[this.pos++];
      result |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) break;
      shift += 7n;
      if (shift > 63n) throw new Error('varint longer than 64 bits');
    }
    return result;
  }
  bytes(n) {
    if (n < 0 || this.pos + n > this.buf.length) throw new Error('truncated field');
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  skip(wire) {
    if (wire === 0) this.varint();
    else if (wire === 1) this.bytes(8);
    else if (wire === 2) this.bytes(Number(this.varint()));
    else if (wire === 5) this.bytes(4);
    else throw new Error(`unsupported wire type ${wire}`);
  }
}

// Reads repeated scalars of one field, packed (wire 2) or not (wire 0/1/5).
function readRepeated(r, wire, kind, sink) {
  const one = (rr) => {
    if (kind === 'varint') return rr.varint();
    if (kind === 'f32') { const b = rr.bytes(4); return Buffer.from(b).readFloatLE(0); }
    if (kind === 'f64') { const b = rr.bytes(8); return Buffer.from(b).readDoubleLE(0); }
    throw new Error(kind);
  };
  if (wire === 2) {
    const sub = new Reader(r.bytes(Number(r.varint())));
    while (!sub.eof()) sink.push(one(sub));
  } else {
    sink.push(one(r));
  }
}

const asInt64 = (u) => BigInt.asIntN(64, u);

// Decodes a serialized TensorProto. Returns {name, dataType, type, dims, data}
// where type is the onnxruntime-node type name and data a fresh TypedArray.
function decodeTensor(buf) {
  const r = new Reader(buf);
  const t = { name: '', dataType: 0, dims: [], raw: null,
    float_data: [], int32_data: [], int64_data: [], double_data: [], uint64_data: [] };
  let external = false;
  while (!r.eof()) {
    const key = Number(r.varint());
    const field = key >>> 3;
    const wire = key & 7;
    switch (field) {
      case FIELD.dims: {
        const d = [];
        readRepeated(r, wire, 'varint', d);
        for (const v of d) t.dims.push(Number(asInt64(v)));
        break;
      }
      case FIELD.data_type: t.dataType = Number(r.varint()); break;
      case FIELD.name: t.name = Buffer.from(r.bytes(Number(r.varint()))).toString('utf8'); break;
      case FIELD.raw_data: t.raw = r.bytes(Number(r.varint())); break;
      case FIELD.float_data: readRepeated(r, wire, 'f32', t.float_data); break;
      case FIELD.double_data: readRepeated(r, wire, 'f64', t.double_data); break;
      case FIELD.int32_data: readRepeated(r, wire, 'varint', t.int32_data); break;
      case FIELD.int64_data: readRepeated(r, wire, 'varint', t.int64_data); break;
      case FIELD.uint64_data: readRepeated(r, wire, 'varint', t.uint64_data); break;
      case FIELD.data_location: external = Number(r.varint()) === 1; break;
      case FIELD.segment: throw new Error('segmented TensorProto is not supported');
      default: r.skip(wire);
    }
  }
  if (external) throw new Error(`tensor '${t.name}': external data is not supported`);
  const spec = DTYPES[t.dataType];
  if (!spec) throw new Error(`tensor '${t.name}': unsupported data_type ${t.dataType}`);
  const [type, Arr, typedField] = spec;
  const numel = t.dims.reduce((a, b) => a * b, 1);
  if (t.dims.some((d) => d < 0)) throw new Error(`tensor '${t.name}': negative dim`);

  let data;
  if (t.raw) {
    if (t.raw.length !== numel * Arr.BYTES_PER_ELEMENT) {
      throw new Error(`tensor '${t.name}': raw_data has ${t.raw.length} bytes, ` +
        `dims ${JSON.stringify(t.dims)} of ${type} need ${numel * Arr.BYTES_PER_ELEMENT}`);
    }
    // copy into an aligned buffer: subarray offsets need not be aligned
    const copy = new Uint8Array(t.raw.length);
    copy.set(t.raw);
    data = new Arr(copy.buffer, 0, numel);
  } else {
    const src = t[typedField];
    if (src.length !== numel) {
      throw new Error(`tensor '${t.name}': ${typedField} has ${src.length} values, ` +
        `dims ${JSON.stringify(t.dims)} need ${numel}`);
    }
    data = new Arr(numel);
    for (let i = 0; i < numel; i++) {
      const v = src[i];
      if (Arr === BigInt64Array) data[i] = asInt64(v);
      else if (Arr === BigUint64Array) data[i] = v;
      else if (typeof v === 'bigint') data[i] = Number(asInt64(v)); // int32_data etc.
      else data[i] = v;
    }
  }
  return { name: t.name, dataType: t.dataType, type, dims: t.dims, data };
}

function varintBytes(value) { // value: BigInt or Number, encoded as uint64
  let v = BigInt.asUintN(64, BigInt(value));
  const out = [];
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v) b |= 0x80;
    out.push(b);
  } while (v);
  return out;
}

// Encodes {name, type (onnxruntime-node type name), dims, data} as a
// TensorProto with raw_data (little-endian, as this machine is).
function encodeTensor({ name, type, dims, data }) {
  const dataType = ORT_TO_ONNX[type];
  if (!dataType) throw new Error(`tensor '${name}': cannot encode type ${type}`);
  const parts = [];
  for (const d of dims) parts.push(Buffer.from([FIELD.dims << 3, ...varintBytes(d)]));
  parts.push(Buffer.from([FIELD.data_type << 3, ...varintBytes(dataType)]));
  const nameBuf = Buffer.from(name, 'utf8');
  parts.push(Buffer.from([(FIELD.name << 3) | 2, ...varintBytes(nameBuf.length)]), nameBuf);
  const raw = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  parts.push(Buffer.from([(FIELD.raw_data << 3) | 2, ...varintBytes(raw.length)]), raw);
  return Buffer.concat(parts);
}

module.exports = { decodeTensor, encodeTensor, DTYPES };
