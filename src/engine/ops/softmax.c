/*
 * Operator family: softmax (Softmax, LogSoftmax, Hardmax).
 *
 * Before opset 13 the input is coerced to 2-D [prod(d[:axis]),
 * prod(d[axis:])] and the op runs over each row (default axis 1); from 13
 * it runs along the one dimension `axis` (default -1). Both are the same
 * loop over a view [outer, n, inner]: legacy is inner = 1.
 *
 * Softmax and LogSoftmax subtract the maximum first, so large inputs do not
 * overflow. float and double are computed natively, float16 and bfloat16
 * through float.
 */
#include <inttypes.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "base/alloc.h"
#include "engine/ops/families.h"
#include "engine/ops/op_util.h"

enum sm_mode { SM_SOFTMAX, SM_LOGSOFTMAX, SM_HARDMAX };

/* Columns of a tile when the reduced axis is not the innermost one. */
#define TILE 256

typedef struct sm_state {
	int64_t axis;
	bool legacy; /* opset < 13: coerce to 2-D */
} sm_state;

/*
 * The kernels for one element type. A view is [outer, n, inner]; every
 * (outer, inner) column of n elements is reduced independently. Reading x
 * and writing y at the same index is safe (x == y allowed).
 */
#define DEFINE_SOFTMAX(T, SFX, EXP, LOG)                                      \
	static void row_##SFX(const T *x, T *y, int64_t n, enum sm_mode mode) \
	{                                                                     \
		T mx = x[0];                                                  \
		int64_t arg = 0;                                              \
		for (int64_t a = 1; a < n; a++) {                             \
			if (x[a] > mx) {                                      \
				mx = x[a];                                    \
				arg = a;                                      \
			}                                                     \
		}                                                             \
		if (mode == SM_HARDMAX) {                                     \
			for (int64_t a = 0; a < n; a++)                       \
				y[a] = a == arg ? 1 : 0;                      \
			return;                                               \
		}                                                             \
		T sum = 0;                                                    \
		if (mode == SM_SOFTMAX) {                                     \
			for (int64_t a = 0; a < n; a++) {                     \
				y[a] = EXP(x[a] - mx);                        \
				sum += y[a];                                  \
			}                                                     \
			T inv = 1 / sum;                                      \
			for (int64_t a = 0; a < n; a++)                       \
				y[a] *= inv;                                  \
		} else {                                                      \
			for (int64_t a = 0; a < n; a++)                       \
				sum += EXP(x[a] - mx);                        \
			T lse = mx + LOG(sum);                                \
			for (int64_t a = 0; a < n; a++)                       \
				y[a] = x[a] - lse;                            \
		}                                                             \
	}                                                                     \
                                                                              \
	/* w columns starting at x, n rows apart by `inner`. */               \
	static void tile_##SFX(const T *x, T *y, int64_t n, int64_t inner,    \
			       int w, enum sm_mode mode)                      \
	{                                                                     \
		T mx[TILE], acc[TILE];                                        \
		int64_t arg[TILE];                                            \
		for (int i = 0; i < w; i++) {                                 \
			mx[i] = x[i];                                         \
			arg[i] = 0;                                           \
		}                                                             \
		for (int64_t a = 1; a < n; a++) {                             \
			const T *xr = x + a * inner;                          \
			for (int i = 0; i < w; i++) {                         \
				if (xr[i] > mx[i]) {                          \
					mx[i] = xr[i];                        \
					arg[i] = a;                           \
				}                                             \
			}                                                     \
		}                                                             \
		if (mode == SM_HARDMAX) {                                     \
			for (int64_t a = 0; a < n; a++)                       \
				for (int i = 0; i < w; i++)                   \
					y[a * inner + i] = arg[i] == a ? 1 : 0; \
			return;                                               \
		}                                                             \
		for (int i = 0; i < w; i++)                                   \
			acc[i] = 0;                                           \
		for (int64_t a = 0; a < n; a++) {                             \
			const T *xr = x + a * inner;                          \
			T *yr = y + a * inner;                                \
			for (int i = 0; i < w; i++) {                         \
				T e = EXP(xr[i] - mx[i]);                     \
				acc[i] += e;                                  \
				if (mode == SM_SOFTMAX)                       \
					yr[i] = e;                            \
			}                                                     \
		}                                                             \
		for (int i = 0; i < w; i++)                                   \
			acc[i] = mode == SM_SOFTMAX ? 1 / acc[i]              \
						    : mx[i] + LOG(acc[i]);    \
		for (int64_t a = 0; a < n; a++) {                             \
			const T *xr = x + a * inner;                          \
			T *yr = y + a * inner;                                \
			for (int i = 0; i < w; i++)                           \
				yr[i] = mode == SM_SOFTMAX ? yr[i] * acc[i]   \
							   : xr[i] - acc[i];  \
		}                                                             \
	}                                                                     \
                                                                              \
	static void run_##SFX(const T *x, T *y, int64_t outer, int64_t n,     \
			      int64_t inner, enum sm_mode mode, int threads)  \
	{                                                                     \
		bool par = threads > 1 && outer * n * inner > 16384;          \
		if (inner == 1) {                                             \
			_Pragma("omp parallel for num_threads(threads) if(par)") \
			for (int64_t o = 0; o < outer; o++)                   \
				row_##SFX(x + o * n, y + o * n, n, mode);     \
			return;                                               \
		}                                                             \
		int64_t tiles = (inner + TILE - 1) / TILE;                    \
		_Pragma("omp parallel for num_threads(threads) if(par)")      \
		for (int64_t t = 0; t < outer * tiles; t++) {                 \
			int64_t o = t / tiles, i0 = (t % tiles) * TILE;       \
			int w = (int)(inner - i0 < TILE ? inner - i0 : TILE); \
			int64_t off = o * n * inner + i0;                     \
			tile_##SFX(x + off, y + off, n, inner, w, mode);      \
		}                                                             \
	}

DEFINE_SOFTMAX(float, f32, expf, logf)
DEFINE_SOFTMAX(double, f64, exp, log)

/*
 * The float Softmax over contiguous rows, the common case (attention
 * scores): max, exp and sum, scale, eight lanes at a time with a
 * polynomial exp, built once for AVX2+FMA and once for the baseline ISA.
 *
 * exp8 is exp for x <= 88 (Softmax only feeds it x - max <= 0): x is split
 * into n ln2 + r with |r| <= ln2 / 2, exp(r) is a degree-6 Taylor
 * polynomial (relative error < 2e-7) and 2^n is built in the exponent
 * bits. Below -87 the result flushes to 0, which is what a sum of terms
 * that include exp(0) = 1 cannot tell apart. NaN propagates: every step is
 * float arithmetic and the integer part only builds the scale.
 */
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

/* The helpers below are always inlined into the two builds of the row
 * loop, so no vector crosses a call boundary (the psabi note is moot). */
#pragma GCC diagnostic ignored "-Wpsabi"

/* Lane-wise c ? a : b (c from a vector comparison: all ones or zero). */
static inline __attribute__((always_inline)) v8f sel8(v8i c, v8f a, v8f b)
{
	return (v8f)(((v8i)a & c) | ((v8i)b & ~c));
}

static inline __attribute__((always_inline)) v8f exp8(v8f x)
{
	const v8f lo = (v8f){ 0 } - 87.0f, hi = (v8f){ 0 } + 88.0f;
	x = sel8(x < lo, lo, x);
	x = sel8(x > hi, hi, x);
	/* round x / ln2 to an integer in the low mantissa bits of j */
	v8f j = x * 1.44269504088896341f + 12582912.0f;
	v8f n = j - 12582912.0f;
	v8f r = x - n * 0.693145751953125f;
	r = r - n * 1.428606765330187045e-06f;
	v8f p = (v8f){ 0 } + (1.0f / 720);
	p = p * r + (1.0f / 120);
	p = p * r + (1.0f / 24);
	p = p * r + (1.0f / 6);
	p = p * r + 0.5f;
	p = p * r + 1.0f;
	p = p * r + 1.0f;
	v8i bits;
	memcpy(&bits, &j, sizeof(bits));
	/* n sits in j's low mantissa bits; moved into the exponent field
	 * it gives 2^n (unsigned shifts: no overflow questions) */
	typedef uint32_t v8u __attribute__((vector_size(32)));
	v8u e = ((v8u)bits << 23) + (127u << 23);
	v8f scale;
	memcpy(&scale, &e, sizeof(scale));
	return p * scale;
}

static inline __attribute__((always_inline)) float exp1(float x)
{
	v8f v = (v8f){ 0 } + x;
	return exp8(v)[0];
}

static inline __attribute__((always_inline)) void
softmax_rows_body(const float *x, float *y, int64_t rows, int64_t n)
{
	for (int64_t o = 0; o < rows; o++, x += n, y += n) {
		int64_t a = 0;
		v8f vmx = (v8f){ 0 } + x[0];
		for (; a + 8 <= n; a += 8) {
			v8f v;
			memcpy(&v, x + a, sizeof(v));
			/* v > vmx is false for NaN: NaN rows still end NaN
			 * through the sum below */
			vmx = sel8(v > vmx, v, vmx);
		}
		float mx = vmx[0];
		for (int i = 1; i < 8; i++)
			mx = vmx[i] > mx ? vmx[i] : mx;
		for (; a < n; a++)
			mx = x[a] > mx ? x[a] : mx;

		v8f vsum = { 0 };
		v8f vm = (v8f){ 0 } + mx;
		for (a = 0; a + 8 <= n; a += 8) {
			v8f v;
			memcpy(&v, x + a, sizeof(v));
			v = exp8(v - vm);
			memcpy(y + a, &v, sizeof(v));
			vsum += v;
		}
		float sum = 0;
		for (int i = 0; i < 8; i++)
			sum += vsum[i];
		for (; a < n; a++) {
			y[a] = exp1(x[a] - mx);
			sum += y[a];
		}
		float inv = 1.0f / sum;
		for (a = 0; a < n; a++)
			y[a] *= inv;
	}
}

__attribute__((target("avx2,fma")))
static void softmax_rows_avx2(const float *x, float *y, int64_t rows, int64_t n)
{
	softmax_rows_body(x, y, rows, n);
}

static void softmax_rows_base(const float *x, float *y, int64_t rows, int64_t n)
{
	softmax_rows_body(x, y, rows, n);
}

/* Softmax of float rows of n contiguous elements (x == y allowed). */
static void softmax_rows_f32(const float *x, float *y, int64_t outer,
			     int64_t n, int threads)
{
	bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
	bool par = threads > 1 && outer > 1 && outer * n > 16384;
	int team = par ? threads : 1;
	ES_PARALLEL_REGION(team, par, {
		int nt = par ? omp_get_num_threads() : 1;
		int id = par ? omp_get_thread_num() : 0;
		int64_t lo = outer * id / nt, hi = outer * (id + 1) / nt;
		if (avx2)
			softmax_rows_avx2(x + lo * n, y + lo * n, hi - lo, n);
		else
			softmax_rows_base(x + lo * n, y + lo * n, hi - lo, n);
	});
}

static int sm_init(es_op_init_ctx *c, void **state)
{
	const es_node *n = c->node;
	bool legacy = n->opset < 13;
	int64_t axis;
	int rc = es_node_attr_int(n, "axis", legacy ? 1 : -1, &axis, c->err);
	if (rc)
		return rc;
	if (axis < -ES_MAX_DIMS || axis > ES_MAX_DIMS)
		return es_error_set(c->err, ES_EINVAL,
			"node '%s' (%s): attribute 'axis' = %" PRId64 " is outside [-%d, %d]",
			n->name, n->op_type, axis, ES_MAX_DIMS, ES_MAX_DIMS);
	sm_state *st = es_op_state_alloc(c, sizeof(*st));
	if (!st)
		return ES_ENOMEM;
	st->axis = axis;
	st->legacy = legacy;
	*state = st;
	return 0;
}

static int sm_run(es_kctx *k, enum sm_mode mode)
{
	const sm_state *st = k->state;
	const es_tensor *X = es_kin(k, 0);
	es_dtype dt = X->dtype;
	int r = X->ndim;

	if (!es_op_is_float(dt))
		return es_kctx_fail(k, ES_ETYPE, "input type %s is not supported",
				    es_dtype_name(dt));
	/* A scalar is treated as one element along a 1-long axis. */
	int r_eff = r > 0 ? r : 1;
	int64_t axis = st->axis;
	int64_t hi = st->legacy ? r_eff : r_eff - 1;
	if (axis < -r_eff || axis > hi)
		return es_kctx_fail(k, ES_EINVAL,
			"attribute 'axis' = %" PRId64 " is outside [%d, %" PRId64 "] for an input of rank %d",
			axis, -r_eff, hi, r);
	if (axis < 0)
		axis += r_eff;
	if (!es_op_dims_fit(X))
		return es_kctx_fail(k, ES_ERANGE, "input has too many elements");

	int64_t outer = 1, n = 1, inner = 1;
	for (int d = 0; d < r; d++) {
		if (d < axis)
			outer *= X->dims[d];
		else if (d == axis || st->legacy)
			n *= X->dims[d];
		else
			inner *= X->dims[d];
	}

	bool inplace;
	int rc = es_kctx_output_inplace(k, 0, 0, dt, r, X->dims, &inplace);
	if (rc)
		return rc;
	es_tensor *Y = k->outputs[0];
	if (outer == 0 || n == 0 || inner == 0)
		return 0;

	int64_t total = outer * n * inner;
	switch (dt) {
	case ES_DT_FLOAT:
		if (mode == SM_SOFTMAX && inner == 1)
			softmax_rows_f32(X->data, Y->data, outer, n, k->threads);
		else
			run_f32(X->data, Y->data, outer, n, inner, mode, k->threads);
		break;
	case ES_DT_DOUBLE:
		run_f64(X->data, Y->data, outer, n, inner, mode, k->threads);
		break;
	default: {
		size_t bytes;
		if (es_mul_size((size_t)total, sizeof(float), &bytes))
			return es_kctx_fail(k, ES_ERANGE, "input is too large");
		float *f = es_kctx_scratch(k, bytes);
		if (!f)
			return es_kctx_fail(k, ES_ENOMEM, "cannot allocate %zu bytes of scratch", bytes);
		es_op_half_to_f32(dt, X->data, f, total);
		run_f32(f, f, outer, n, inner, mode, k->threads);
		es_op_f32_to_half(dt, f, Y->data, total);
		break;
	}
	}
	return 0;
}

static int softmax_run(es_kctx *k)
{
	return sm_run(k, SM_SOFTMAX);
}

static int logsoftmax_run(es_kctx *k)
{
	return sm_run(k, SM_LOGSOFTMAX);
}

static int hardmax_run(es_kctx *k)
{
	return sm_run(k, SM_HARDMAX);
}

#define SM_T_OLD (ES_T(ES_DT_FLOAT16) | ES_T(ES_DT_FLOAT) | ES_T(ES_DT_DOUBLE))
#define SM_T_13 (SM_T_OLD | ES_T(ES_DT_BFLOAT16))

#define SM_ROW(op, since_, until_, types_, run_)                          \
	{ .op_type = op, .since = since_, .until = until_,                \
	  .min_inputs = 1, .max_inputs = 1, .min_outputs = 1,             \
	  .max_outputs = 1, .types = types_, .out_type = ES_OUT_SAME,     \
	  .init = sm_init, .fini = es_op_state_free, .run = run_ }

static const es_op_def defs[] = {
	/* 1 and 11 differ only in the documented axis range */
	SM_ROW("Softmax", 1, 12, SM_T_OLD, softmax_run),
	SM_ROW("Softmax", 13, 0, SM_T_13, softmax_run),
	SM_ROW("LogSoftmax", 1, 12, SM_T_OLD, logsoftmax_run),
	SM_ROW("LogSoftmax", 13, 0, SM_T_13, logsoftmax_run),
	SM_ROW("Hardmax", 1, 12, SM_T_OLD, hardmax_run),
	SM_ROW("Hardmax", 13, 0, SM_T_13, hardmax_run),
};

const es_op_table es_ops_softmax = { defs, sizeof(defs) / sizeof(defs[0]) };
