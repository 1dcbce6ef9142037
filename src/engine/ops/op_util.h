/*
 * Small helpers shared by the operator families (ops/<family>.c): shape
 * formatting, element access across dtypes, index and attribute reading,
 * node state allocation and the thread-count rule for OpenMP loops.
 *
 * Everything here is for kernels: run-time helpers take the kernel
 * context and fail through es_kctx_fail (which names the node), load-time
 * helpers take the init context and fill c->err.
 */
#ifndef ES_ENGINE_OPS_OP_UTIL_H
#define ES_ENGINE_OPS_OP_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/ops/op.h"

/* ---- shapes ------------------------------------------------------------- */

/* Formats dims as "[2,3,4]" into buf (len bytes, truncated when too long)
 * and returns buf, for error messages. */
const char *es_op_fmt_dims(char *buf, size_t len, const int64_t *dims, int ndim);

/* es_op_fmt_dims of t's shape. */
const char *es_op_fmt_shape(char *buf, size_t len, const es_tensor *t);

/* True when no dim of t is negative and the product of its non-zero dims
 * fits in int64_t, so every partial product of its dims does too (an empty
 * tensor may carry huge dims next to its zero). */
bool es_op_dims_fit(const es_tensor *t);

/* Normalises axis against rank (negative counts from the back) into *out.
 * False, *out untouched, when axis is outside [-rank, rank - 1]; the
 * caller reports that in its own words. */
bool es_op_norm_axis(int64_t axis, int rank, int *out);

/* ---- dtypes and elements ------------------------------------------------ */

/* float, double, float16 or bfloat16. */
bool es_op_is_float(es_dtype dt);

/*
 * Double to integer without undefined behaviour: NaN gives 0, values out
 * of the target's range saturate, everything else truncates toward zero
 * (the C cast). ONNX leaves out-of-range conversions undefined.
 */
#define ES_OP_DEF_F2I(sfx, T, MIN, MAX, LO, HI_EXCL)      \
	static inline T es_op_f2i_##sfx(double v)         \
	{                                                 \
		if (v != v)                               \
			return 0;                         \
		if (v <= (LO))                            \
			return (MIN);                     \
		if (v >= (HI_EXCL))                       \
			return (MAX);                     \
		return (T)v;                              \
	}
ES_OP_DEF_F2I(i8, int8_t, INT8_MIN, INT8_MAX, -128.0, 128.0)
ES_OP_DEF_F2I(i16, int16_t, INT16_MIN, INT16_MAX, -32768.0, 32768.0)
ES_OP_DEF_F2I(i32, int32_t, INT32_MIN, INT32_MAX, -2147483648.0, 2147483648.0)
ES_OP_DEF_F2I(i64, int64_t, INT64_MIN, INT64_MAX, -9223372036854775808.0,
	      9223372036854775808.0)
ES_OP_DEF_F2I(u8, uint8_t, 0, UINT8_MAX, 0.0, 256.0)
ES_OP_DEF_F2I(u16, uint16_t, 0, UINT16_MAX, 0.0, 65536.0)
ES_OP_DEF_F2I(u32, uint32_t, 0, UINT32_MAX, 0.0, 4294967296.0)
ES_OP_DEF_F2I(u64, uint64_t, 0, UINT64_MAX, 0.0, 18446744073709551616.0)
#undef ES_OP_DEF_F2I

/* Element i of the array p of dtype dt as a double (bool gives 0 or 1;
 * types without a numeric value give 0). For slow paths: one switch per
 * element. */
double es_op_load_f64(es_dtype dt, const void *p, int64_t i);

/* Stores v into element i of p: floats round to the type, integers
 * saturate as es_op_f2i_*, bool stores v != 0. Other types are left
 * alone. */
void es_op_store_f64(es_dtype dt, void *p, int64_t i, double v);

/* Stores an integer into element i of p: integer types keep the low bits
 * (wrapping, as arithmetic in that type would), bool stores v != 0, float
 * types get (double)v. */
void es_op_store_i64(es_dtype dt, void *p, int64_t i, int64_t v);

/* Widens n float16 (dt ES_DT_FLOAT16) or bfloat16 values to float. */
void es_op_half_to_f32(es_dtype dt, const uint16_t *src, float *dst, int64_t n);

/* Narrows n floats to float16 (dt ES_DT_FLOAT16) or bfloat16. */
void es_op_f32_to_half(es_dtype dt, const float *src, uint16_t *dst, int64_t n);

/* Fills n elements of esz bytes at dst with copies of the element at val. */
void es_op_fill(void *dst, const void *val, size_t esz, int64_t n);

/* ---- inputs --------------------------------------------------------------- */

/*
 * Fails unless x's dtype is in `allowed` (ES_T bits): ES_EUNSUPPORTED for
 * string tensors, ES_ETYPE otherwise, naming the input as `what`.
 */
int es_op_check_dtype(es_kctx *k, const es_tensor *x, uint32_t allowed,
		      const char *what);

/* Element i of an int32 or int64 tensor as int64. */
int64_t es_op_load_index(const es_tensor *t, int64_t i);

/*
 * Reads input `idx`, a 0-D or 1-D int64 (or int32) tensor of at most
 * `max` entries, into out[]; *count gets the number of entries. `what`
 * names the input in messages. Fails with ES_ETYPE, ES_ESHAPE (rank > 1)
 * or ES_EUNSUPPORTED (too many entries).
 */
int es_op_read_ints(es_kctx *k, int idx, const char *what, int64_t *out,
		    int max, int *count);

/* Whether output i is wired to a value (an optional output may be ""). */
bool es_op_has_output(const es_kctx *k, int i);

/*
 * n elements of scratch of elem bytes each, valid until run() returns.
 * NULL with k->err filled (ES_ERANGE when the size overflows, ES_ENOMEM)
 * on failure.
 */
void *es_op_scratch(es_kctx *k, int64_t n, size_t elem);

/* ---- node state and attributes (init) ------------------------------------- */

/*
 * A zeroed node state of `size` bytes, owned by the caller until init
 * hands it to the model through *state; es_op_state_free frees it. NULL
 * with c->err filled (ES_ENOMEM, naming the node) when out of memory.
 */
void *es_op_state_alloc(const es_op_init_ctx *c, size_t size);

/* The fini of kernels whose state is one es_op_state_alloc block. */
void es_op_state_free(void *state);

/*
 * Copies the ints attribute `name` (absent: empty) into out[max];
 * *count gets its length. ES_EUNSUPPORTED when it has more than max
 * values.
 */
int es_op_attr_ints(const es_op_init_ctx *c, const char *name, int64_t *out,
		    int max, int *count);

/* Fails with ES_EINVAL unless every v[0..n) is >= min; the message names
 * attribute `name` and the bad entry. */
int es_op_attr_check_min(const es_op_init_ctx *c, const char *name,
			 const int64_t *v, int n, int64_t min);

/* The auto_pad attribute of Conv, ConvTranspose and the pools. */
typedef enum es_auto_pad {
	ES_AUTO_PAD_NOTSET,
	ES_AUTO_PAD_SAME_UPPER,
	ES_AUTO_PAD_SAME_LOWER,
	ES_AUTO_PAD_VALID,
} es_auto_pad;

/* Reads auto_pad (default NOTSET; "" means NOTSET too). ES_EINVAL for any
 * other spelling. */
int es_op_attr_auto_pad(const es_op_init_ctx *c, es_auto_pad *out);

/*
 * SAME_UPPER / SAME_LOWER padding along one axis of a window op: the
 * output keeps ceil(in / stride) positions, and the total padding
 * (out - 1) * stride + ext - in (ext: the dilated kernel extent; never
 * negative) is split with the odd element at the end (upper) or at the
 * beginning. Nonzero when that overflows int64.
 */
int es_op_same_pads(int64_t in, int64_t stride, int64_t ext, bool upper,
		    int64_t *pb, int64_t *pe);

/* ---- threads -------------------------------------------------------------- */

/* Threads for an OpenMP loop over `work` units: k->threads when there are
 * several and work >= min_work, else 1 (a team costs more than it saves
 * on small loops). */
int es_op_threads(const es_kctx *k, int64_t work, int64_t min_work);

#endif
