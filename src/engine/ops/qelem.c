/*
 * Small int8 operators of the QDQ path (opt/fuse_qdq.c creates them), all
 * in the domain ES_DOMAIN:
 *
 *   QAdd(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale,
 *        y_zero_point), attribute activation "" | "Relu":
 *     y = saturate(round_half_even(act(a_scale * (a - a_zp) +
 *                                      b_scale * (b - b_zp)) / y_scale) + y_zp)
 *   a and b are uint8 or int8 (each with its own zero point's dtype), y
 *   has y_zero_point's dtype (uint8 when it is absent; an absent zero
 *   point is 0). Scales and zero points are scalars. a and b broadcast
 *   numpy-style. Every step is the float arithmetic of the graph
 *   DequantizeLinear -> Add -> [Relu] -> QuantizeLinear, in the same order
 *   and precision, so the result equals that graph's bit for bit.
 *
 *   QMaxPool(X), the attributes of MaxPool plus channels_last (must be 1):
 *   MaxPool of a uint8 or int8 (N, H, W, C) tensor, no Indices output.
 *   Taking the max of the quantized values is exact: dequantization is
 *   monotonic. (NCHW int8 max pooling is ONNX MaxPool-12.)
 */
#include <math.h>
#include <string.h>
#if defined(__x86_64__) || defined(__SSE4_1__)
#include <immintrin.h>
#endif

#include "engine/ops/op.h"
#include "engine/ops/op_util.h"
#include "engine/opt/opt.h"

/* ---- QAdd ------------------------------------------------------------------- */

typedef struct qadd_state {
	bool relu;
} qadd_state;

static int qadd_init(es_op_init_ctx *c, void **state)
{
	const char *act = "";
	qadd_state *st;
	int rc = es_node_attr_string(c->node, "activation", "", &act, c->err);
	if (rc)
		return rc;
	if (strcmp(act, "") && strcmp(act, "Relu"))
		return es_error_set(c->err, ES_EINVAL,
				    "QAdd node '%s': attribute activation is '%s', expected \"\" or \"Relu\"",
				    c->node->name, act);
	if (!(st = es_op_state_alloc(c, sizeof(*st))))
		return c->err->code;
	st->relu = !strcmp(act, "Relu");
	*state = st;
	return 0;
}

/* One operand's type and parameters (read_operand). */
struct qoperand {
	const uint8_t *data; /* int8 data is read through its bytes */
	bool sign;           /* int8 */
	int zero;
	float scale;
};

static int read_operand(es_kctx *k, int xi, const char *what, struct qoperand *o)
{
	const es_tensor *x = es_kin(k, xi), *s = es_kin(k, xi + 1), *zp = es_kin(k, xi + 2);
	if (!x || (x->dtype != ES_DT_UINT8 && x->dtype != ES_DT_INT8))
		return es_kctx_fail(k, ES_ETYPE, "input %d (%s) has type %s, expected uint8 or int8",
				    xi, what, x ? es_dtype_name(x->dtype) : "none");
	if (!s || s->dtype != ES_DT_FLOAT || es_tensor_numel(s) != 1 || s->ndim > 1)
		return es_kctx_fail(k, ES_ESHAPE, "input %d (%s scale) must be a float scalar",
				    xi + 1, what);
	o->data = x->data;
	o->sign = x->dtype == ES_DT_INT8;
	o->scale = *(const float *)s->data;
	o->zero = 0;
	if (!isfinite(o->scale))
		return es_kctx_fail(k, ES_EINVAL, "input %d (%s scale) is %g, expected a finite value",
				    xi + 1, what, (double)o->scale);
	if (zp) {
		if (zp->dtype != x->dtype || es_tensor_numel(zp) != 1 || zp->ndim > 1)
			return es_kctx_fail(k, ES_ETYPE,
					    "input %d (%s zero point) must be a %s scalar like input %d",
					    xi + 2, what, es_dtype_name(x->dtype), xi);
		o->zero = o->sign ? *(const int8_t *)zp->data : *(const uint8_t *)zp->data;
	}
	return 0;
}

struct qadd_args {
	struct qoperand a, b;
	uint8_t *y;        /* int8 results are stored as their bytes */
	float y_scale;     /* divided by, as QuantizeLinear does */
	float zero, lo, hi;
	bool relu;
};

/*
 * y[i] from a[ia], b[ib]: DequantizeLinear's (x - zp) * scale for each,
 * their float sum, the Relu, QuantizeLinear's division and rounding. The
 * rounding adds and subtracts 1.5 * 2^23, which rounds half to even like
 * rintf for |t| < 2^22 (t is clamped to +-1e6 first, far outside what any
 * zero point brings back into [-128, 255]; NaN goes to the low end like
 * QuantizeLinear's). No FMA contraction: the float graph rounds the
 * products before adding them.
 */
/* The requantization constants, copied to locals so that stores to y
 * cannot alias them (the loops then vectorise). */
struct qadd_k {
	float za, sa, zb, sb, ys, zero, lo, hi;
	bool relu;
};

static inline __attribute__((always_inline)) uint8_t qadd_one(struct qadd_k c, int ai, int bi)
{
	float va = (float)(ai - (int)c.za) * c.sa;
	float vb = (float)(bi - (int)c.zb) * c.sb;
	float v = va + vb;
	if (c.relu)
		v = v > 0.0f ? v : 0.0f;
	float t = v / c.ys;
	t = t > -1e6f ? t : -1e6f;
	t = t < 1e6f ? t : 1e6f;
	float r = (t + 12582912.0f) - 12582912.0f;
	r += c.zero;
	r = r > c.lo ? r : c.lo;
	r = r < c.hi ? r : c.hi;
	return (uint8_t)(int)r;
}

static struct qadd_k qadd_consts(const struct qadd_args *q)
{
	struct qadd_k c = {
		.za = (float)q->a.zero, .sa = q->a.scale, .zb = (float)q->b.zero,
		.sb = q->b.scale, .ys = q->y_scale, .zero = q->zero, .lo = q->lo,
		.hi = q->hi, .relu = q->relu,
	};
	return c;
}

static inline __attribute__((always_inline)) int byte_value(const uint8_t *p, int64_t i,
							     bool sign)
{
	return sign ? (int)(int8_t)p[i] : (int)p[i];
}

/* Elements [begin, end) of the equal-shape case, for one combination of
 * operand signs (constants after inlining, so the loop vectorises). */
static inline __attribute__((always_inline)) void
qadd_same(const struct qadd_args *q, int64_t begin, int64_t end, bool as, bool bs)
{
	const uint8_t *restrict a = q->a.data, *restrict b = q->b.data;
	uint8_t *restrict y = q->y;
	const struct qadd_k c = qadd_consts(q);
	if (c.relu) {
		for (int64_t i = begin; i < end; i++)
			y[i] = qadd_one((struct qadd_k){ c.za, c.sa, c.zb, c.sb, c.ys, c.zero,
							 c.lo, c.hi, true },
					byte_value(a, i, as), byte_value(b, i, bs));
	} else {
		for (int64_t i = begin; i < end; i++)
			y[i] = qadd_one((struct qadd_k){ c.za, c.sa, c.zb, c.sb, c.ys, c.zero,
							 c.lo, c.hi, false },
					byte_value(a, i, as), byte_value(b, i, bs));
	}
}

#ifdef __SSE4_1__
/* Four codes at p (int8 when sign) widened to int32, minus zero. */
static inline __m128i widen4(const uint8_t *p, bool sign, __m128i zero)
{
	int32_t four;
	memcpy(&four, p, sizeof(four)); /* p need not be aligned */
	__m128i v = _mm_cvtsi32_si128(four);
	v = sign ? _mm_cvtepi8_epi32(v) : _mm_cvtepu8_epi32(v);
	return _mm_sub_epi32(v, zero);
}

/* qadd_one on four elements: the same operations in the same order
 * (_mm_round_ps rounds half to even). */
static inline __m128i qadd4(const struct qadd_k *c, const uint8_t *a, const uint8_t *b,
			    bool as, bool bs)
{
	__m128 va = _mm_mul_ps(_mm_cvtepi32_ps(widen4(a, as, _mm_set1_epi32((int)c->za))),
			       _mm_set1_ps(c->sa));
	__m128 vb = _mm_mul_ps(_mm_cvtepi32_ps(widen4(b, bs, _mm_set1_epi32((int)c->zb))),
			       _mm_set1_ps(c->sb));
	__m128 v = _mm_add_ps(va, vb);
	if (c->relu)
		v = _mm_max_ps(_mm_setzero_ps(), v); /* NaN stays NaN */
	__m128 t = _mm_div_ps(v, _mm_set1_ps(c->ys));
	t = _mm_max_ps(t, _mm_set1_ps(-1e6f)); /* NaN goes low */
	t = _mm_min_ps(t, _mm_set1_ps(1e6f));
	t = _mm_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	t = _mm_add_ps(t, _mm_set1_ps(c->zero));
	t = _mm_max_ps(t, _mm_set1_ps(c->lo));
	t = _mm_min_ps(t, _mm_set1_ps(c->hi));
	return _mm_cvtps_epi32(t);
}

/* Sixteen elements at a time; returns where it stopped. */
static int64_t qadd_sse(const struct qadd_args *q, int64_t begin, int64_t end)
{
	const struct qadd_k c = qadd_consts(q);
	const bool as = q->a.sign, bs = q->b.sign, ys = c.lo < 0.0f;
	int64_t i = begin;
	for (; i + 16 <= end; i += 16) {
		const uint8_t *a = q->a.data + i, *b = q->b.data + i;
		__m128i r0 = qadd4(&c, a, b, as, bs), r1 = qadd4(&c, a + 4, b + 4, as, bs);
		__m128i r2 = qadd4(&c, a + 8, b + 8, as, bs), r3 = qadd4(&c, a + 12, b + 12, as, bs);
		__m128i lo = _mm_packs_epi32(r0, r1), hi = _mm_packs_epi32(r2, r3);
		__m128i out = ys ? _mm_packs_epi16(lo, hi) : _mm_packus_epi16(lo, hi);
		_mm_storeu_si128((__m128i *)(void *)(q->y + i), out);
	}
	return i;
}
#endif

#ifdef __x86_64__
#define QADD_AVX2 __attribute__((target("avx2"), optimize("fp-contract=off")))

/* Eight codes at p widened to int32, minus zero. */
QADD_AVX2 static inline __m256i widen8(const uint8_t *p, bool sign, __m256i zero)
{
	__m128i v = _mm_loadl_epi64((const __m128i *)(const void *)p);
	__m256i w = sign ? _mm256_cvtepi8_epi32(v) : _mm256_cvtepu8_epi32(v);
	return _mm256_sub_epi32(w, zero);
}

/* qadd4 on eight elements (AVX2 has no FMA: nothing to contract). */
QADD_AVX2 static inline __m256i qadd8(const struct qadd_k *c, const uint8_t *a,
				      const uint8_t *b, bool as, bool bs)
{
	__m256 va = _mm256_mul_ps(_mm256_cvtepi32_ps(widen8(a, as, _mm256_set1_epi32((int)c->za))),
				  _mm256_set1_ps(c->sa));
	__m256 vb = _mm256_mul_ps(_mm256_cvtepi32_ps(widen8(b, bs, _mm256_set1_epi32((int)c->zb))),
				  _mm256_set1_ps(c->sb));
	__m256 v = _mm256_add_ps(va, vb);
	if (c->relu)
		v = _mm256_max_ps(_mm256_setzero_ps(), v);
	__m256 t = _mm256_div_ps(v, _mm256_set1_ps(c->ys));
	t = _mm256_max_ps(t, _mm256_set1_ps(-1e6f));
	t = _mm256_min_ps(t, _mm256_set1_ps(1e6f));
	t = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	t = _mm256_add_ps(t, _mm256_set1_ps(c->zero));
	t = _mm256_max_ps(t, _mm256_set1_ps(c->lo));
	t = _mm256_min_ps(t, _mm256_set1_ps(c->hi));
	return _mm256_cvtps_epi32(t);
}

/* Thirty-two elements at a time; returns where it stopped. */
QADD_AVX2 static int64_t qadd_avx2(const struct qadd_args *q, int64_t begin, int64_t end)
{
	const struct qadd_k c = qadd_consts(q);
	const bool as = q->a.sign, bs = q->b.sign, ys = c.lo < 0.0f;
	/* the packs work within 128-bit lanes: this puts the dwords back */
	const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
	int64_t i = begin;
	for (; i + 32 <= end; i += 32) {
		const uint8_t *a = q->a.data + i, *b = q->b.data + i;
		__m256i r0 = qadd8(&c, a, b, as, bs), r1 = qadd8(&c, a + 8, b + 8, as, bs);
		__m256i r2 = qadd8(&c, a + 16, b + 16, as, bs);
		__m256i r3 = qadd8(&c, a + 24, b + 24, as, bs);
		__m256i lo = _mm256_packs_epi32(r0, r1), hi = _mm256_packs_epi32(r2, r3);
		__m256i out = ys ? _mm256_packs_epi16(lo, hi) : _mm256_packus_epi16(lo, hi);
		out = _mm256_permutevar8x32_epi32(out, order);
		_mm256_storeu_si256((__m256i *)(void *)(q->y + i), out);
	}
	return i;
}
#endif

__attribute__((optimize("fp-contract=off")))
static void qadd_range(const struct qadd_args *q, int64_t begin, int64_t end)
{
#ifdef __x86_64__
	if (__builtin_cpu_supports("avx2"))
		begin = qadd_avx2(q, begin, end);
#endif
#ifdef __SSE4_1__
	begin = qadd_sse(q, begin, end);
#endif
	if (!q->a.sign && !q->b.sign)
		qadd_same(q, begin, end, false, false);
	else if (q->a.sign && q->b.sign)
		qadd_same(q, begin, end, true, true);
	else if (q->a.sign)
		qadd_same(q, begin, end, true, false);
	else
		qadd_same(q, begin, end, false, true);
}

/* Elements [begin, end) with broadcasting: a and b step through their own
 * strides (0 along broadcast axes) of the output's rank. */
__attribute__((optimize("fp-contract=off")))
static void qadd_bcast_range(const struct qadd_args *q, int rank, const int64_t *ydims,
			     const int64_t *sa, const int64_t *sb, int64_t begin, int64_t end)
{
	const struct qadd_k c = qadd_consts(q);
	for (int64_t i = begin; i < end; i++) {
		int64_t rem = i, oa = 0, ob = 0;
		for (int d = rank - 1; d >= 0; d--) {
			int64_t at = rem % ydims[d];
			rem /= ydims[d];
			oa += at * sa[d];
			ob += at * sb[d];
		}
		q->y[i] = qadd_one(c, byte_value(q->a.data, oa, q->a.sign),
				   byte_value(q->b.data, ob, q->b.sign));
	}
}

static int qadd_run(es_kctx *k)
{
	const qadd_state *st = k->state;
	const es_tensor *a = es_kin(k, 0), *b = es_kin(k, 3);
	const es_tensor *ys = es_kin(k, 6), *yzp = es_kin(k, 7);
	struct qadd_args q = { .relu = st && st->relu };
	int64_t ydims[ES_MAX_DIMS], sa[ES_MAX_DIMS], sb[ES_MAX_DIMS];
	char b1[64], b2[64];
	int rc;

	if ((rc = read_operand(k, 0, "a", &q.a)) || (rc = read_operand(k, 3, "b", &q.b)))
		return rc;
	if (!ys || ys->dtype != ES_DT_FLOAT || es_tensor_numel(ys) != 1 || ys->ndim > 1)
		return es_kctx_fail(k, ES_ESHAPE, "input 6 (y scale) must be a float scalar");
	float yscale = *(const float *)ys->data;
	if (!isfinite(yscale) || yscale == 0.0f)
		return es_kctx_fail(k, ES_EINVAL,
				    "input 6 (y scale) is %g, expected a finite nonzero value",
				    (double)yscale);
	es_dtype ydt = yzp ? yzp->dtype : ES_DT_UINT8;
	if ((ydt != ES_DT_UINT8 && ydt != ES_DT_INT8) ||
	    (yzp && (es_tensor_numel(yzp) != 1 || yzp->ndim > 1)))
		return es_kctx_fail(k, ES_ETYPE,
				    "input 7 (y zero point) must be a uint8 or int8 scalar");
	if (!es_op_dims_fit(a) || !es_op_dims_fit(b))
		return es_kctx_fail(k, ES_ERANGE, "input shapes %s and %s overflow",
				    es_op_fmt_shape(b1, sizeof(b1), a),
				    es_op_fmt_shape(b2, sizeof(b2), b));

	/* numpy broadcasting, dims aligned from the back */
	int rank = a->ndim > b->ndim ? a->ndim : b->ndim;
	bool same = a->ndim == b->ndim;
	int64_t stride_a = 1, stride_b = 1;
	for (int d = rank - 1; d >= 0; d--) {
		int ia = d - (rank - a->ndim), ib = d - (rank - b->ndim);
		int64_t da = ia >= 0 ? a->dims[ia] : 1, db = ib >= 0 ? b->dims[ib] : 1;
		if (da != db && da != 1 && db != 1)
			return es_kctx_fail(k, ES_ESHAPE,
					    "inputs 0 (a) %s and 3 (b) %s do not broadcast",
					    es_op_fmt_shape(b1, sizeof(b1), a),
					    es_op_fmt_shape(b2, sizeof(b2), b));
		same = same && da == db;
		ydims[d] = da == 1 ? db : da;
		sa[d] = da == 1 ? 0 : stride_a;
		sb[d] = db == 1 ? 0 : stride_b;
		stride_a *= da;
		stride_b *= db;
	}
	if ((rc = es_kctx_output(k, 0, ydt, rank, ydims)))
		return rc;
	int64_t n = es_tensor_numel(k->outputs[0]);
	q.y = k->outputs[0]->data;
	q.y_scale = yscale;
	q.zero = yzp ? (float)(ydt == ES_DT_UINT8 ? *(const uint8_t *)yzp->data
						  : *(const int8_t *)yzp->data) : 0.0f;
	q.lo = ydt == ES_DT_UINT8 ? 0.0f : -128.0f;
	q.hi = ydt == ES_DT_UINT8 ? 255.0f : 127.0f;
	if (n == 0)
		return 0;
	int threads = es_op_threads(k, n, 1 << 15);
	/* a few contiguous chunks per thread */
	const int64_t chunks = (int64_t)threads * 4;
	ES_PARALLEL_FOR(threads, true, c, chunks,
		int64_t lo = n * c / chunks, hi = n * (c + 1) / chunks;
		if (same)
			qadd_range(&q, lo, hi);
		else
			qadd_bcast_range(&q, rank, ydims, sa, sb, lo, hi);
	);
	return 0;
}

/* ---- QMaxPool (channels-last) ----------------------------------------------------- */

typedef struct qpool_state {
	int64_t kernel[2], strides[2], dilations[2], pads[4];
	bool ceil_mode;
	es_auto_pad auto_pad;
} qpool_state;

static int qpool_init(es_op_init_ctx *c, void **state)
{
	const char *name = c->node->name;
	int64_t cl = 0, ceil_mode = 0, v[8];
	int count, rc;
	qpool_state *st = es_op_state_alloc(c, sizeof(*st));
	if (!st)
		return c->err->code;
	if ((rc = es_node_attr_int(c->node, "channels_last", 0, &cl, c->err)) ||
	    (rc = es_node_attr_int(c->node, "ceil_mode", 0, &ceil_mode, c->err)) ||
	    (rc = es_op_attr_auto_pad(c, &st->auto_pad)))
		goto out_free;
	if (cl != 1) {
		rc = es_error_set(c->err, ES_EINVAL,
				  "QMaxPool node '%s': attribute channels_last is %lld, expected 1 (NCHW int8 pooling is MaxPool)",
				  name, (long long)cl);
		goto out_free;
	}
	st->ceil_mode = ceil_mode != 0;
	if ((rc = es_op_attr_ints(c, "kernel_shape", v, 8, &count)))
		goto out_free;
	if (count != 2) {
		rc = es_error_set(c->err, ES_EINVAL,
				  "QMaxPool node '%s': attribute kernel_shape has %d entries, expected 2",
				  name, count);
		goto out_free;
	}
	if ((rc = es_op_attr_check_min(c, "kernel_shape", v, 2, 1)))
		goto out_free;
	memcpy(st->kernel, v, sizeof(st->kernel));
	static const char *const names[] = { "strides", "dilations", "pads" };
	int64_t *dst[] = { st->strides, st->dilations, st->pads };
	const int want[] = { 2, 2, 4 };
	for (int a = 0; a < 3; a++) {
		if ((rc = es_op_attr_ints(c, names[a], v, 8, &count)))
			goto out_free;
		if (count == 0) {
			for (int i = 0; i < want[a]; i++)
				dst[a][i] = a == 2 ? 0 : 1;
			continue;
		}
		if (count != want[a]) {
			rc = es_error_set(c->err, ES_EINVAL,
					  "QMaxPool node '%s': attribute %s has %d entries, expected %d",
					  name, names[a], count, want[a]);
			goto out_free;
		}
		if ((rc = es_op_attr_check_min(c, names[a], v, count, a == 2 ? 0 : 1)))
			goto out_free;
		memcpy(dst[a], v, (size_t)count * sizeof(int64_t));
	}
	*state = st;
	return 0;
out_free:
	es_op_state_free(st);
	return rc;
}

struct qpool_geom {
	int64_t n, ih, iw, c, oh, ow;
	int64_t pad_top, pad_left;
	const qpool_state *st;
};

/* The running max of one window row: out[ch] = max(out[ch], in[ch]). */
static inline void max_u8(uint8_t *restrict out, const uint8_t *restrict in, int64_t c)
{
	for (int64_t ch = 0; ch < c; ch++)
		out[ch] = in[ch] > out[ch] ? in[ch] : out[ch];
}

static inline void max_s8(int8_t *restrict out, const int8_t *restrict in, int64_t c)
{
	for (int64_t ch = 0; ch < c; ch++)
		out[ch] = in[ch] > out[ch] ? in[ch] : out[ch];
}

/* Output rows [begin, end) of n * oh: one row of windows each. Every
 * size is copied to a local first: byte stores may alias anything, and
 * the loops vectorise only when nothing they read can change. */
static void qpool_rows(const struct qpool_geom *g, const uint8_t *x, uint8_t *y, bool sign,
		       int64_t begin, int64_t end)
{
	const qpool_state *st = g->st;
	const int64_t ih = g->ih, iw = g->iw, c = g->c, ohs = g->oh, ows = g->ow;
	const int64_t kh_n = st->kernel[0], kw_n = st->kernel[1];
	const int64_t sh = st->strides[0], sw = st->strides[1];
	const int64_t dh = st->dilations[0], dw = st->dilations[1];
	const int64_t pt = g->pad_top, pl = g->pad_left;
	const uint8_t lowest = sign ? 0x80 : 0;
	for (int64_t r = begin; r < end; r++) {
		int64_t b = r / ohs, oh = r % ohs;
		int64_t h0 = oh * sh - pt;
		for (int64_t ow = 0; ow < ows; ow++) {
			uint8_t *out = y + ((r * ows) + ow) * c;
			int64_t w0 = ow * sw - pl;
			memset(out, lowest, (size_t)c);
			for (int64_t kh = 0; kh < kh_n; kh++) {
				int64_t h = h0 + kh * dh;
				if (h < 0 || h >= ih)
					continue;
				for (int64_t kw = 0; kw < kw_n; kw++) {
					int64_t w = w0 + kw * dw;
					if (w < 0 || w >= iw)
						continue;
					const uint8_t *in = x + ((b * ih + h) * iw + w) * c;
					if (sign)
						max_s8((int8_t *)out, (const int8_t *)in, c);
					else
						max_u8(out, in, c);
				}
			}
		}
	}
}

/* Output size and leading padding along one axis (MaxPool's rules). */
static int qpool_axis(es_kctx *k, const qpool_state *st, int a, int64_t in, int64_t *out,
		      int64_t *pad_begin)
{
	int64_t ext = (st->kernel[a] - 1) * st->dilations[a] + 1, s = st->strides[a];
	int64_t pb = st->pads[a], pe = st->pads[a + 2];
	if (ext > (int64_t)1 << 40 || pb > (int64_t)1 << 40 || pe > (int64_t)1 << 40)
		return es_kctx_fail(k, ES_ERANGE, "window or padding of axis %d is too large", a);
	switch (st->auto_pad) {
	case ES_AUTO_PAD_VALID:
		pb = pe = 0;
		break;
	case ES_AUTO_PAD_SAME_UPPER:
	case ES_AUTO_PAD_SAME_LOWER:
		if (es_op_same_pads(in, s, ext, st->auto_pad == ES_AUTO_PAD_SAME_UPPER, &pb, &pe))
			return es_kctx_fail(k, ES_ERANGE, "padding of axis %d overflows", a);
		*out = (in + s - 1) / s;
		*pad_begin = pb;
		return 0;
	default:
		break;
	}
	int64_t span = in + pb + pe - ext;
	if (span < 0)
		return es_kctx_fail(k, ES_ESHAPE,
				    "window of %lld along spatial axis %d is larger than the padded input (%lld)",
				    (long long)ext, a, (long long)(in + pb + pe));
	int64_t o = (st->ceil_mode ? (span + s - 1) / s : span / s) + 1;
	/* the last window must start inside the input or the leading pad */
	if (st->ceil_mode && (o - 1) * s >= in + pb)
		o--;
	*out = o;
	*pad_begin = pb;
	return 0;
}

static int qpool_run(es_kctx *k)
{
	const qpool_state *st = k->state;
	const es_tensor *x = es_kin(k, 0);
	struct qpool_geom g = { .st = st };
	int rc;

	if (!x || (x->dtype != ES_DT_UINT8 && x->dtype != ES_DT_INT8))
		return es_kctx_fail(k, ES_ETYPE, "input X has type %s, expected uint8 or int8",
				    x ? es_dtype_name(x->dtype) : "none");
	if (x->ndim != 4 || !es_op_dims_fit(x))
		return es_kctx_fail(k, ES_ESHAPE,
				    "input X has rank %d, expected (N, H, W, C) of rank 4", x->ndim);
	g.n = x->dims[0];
	g.ih = x->dims[1];
	g.iw = x->dims[2];
	g.c = x->dims[3];
	if ((rc = qpool_axis(k, st, 0, g.ih, &g.oh, &g.pad_top)) ||
	    (rc = qpool_axis(k, st, 1, g.iw, &g.ow, &g.pad_left)))
		return rc;
	int64_t ydims[4] = { g.n, g.oh, g.ow, g.c };
	if ((rc = es_kctx_output(k, 0, x->dtype, 4, ydims)))
		return rc;
	int64_t rows = g.n * g.oh;
	if (es_tensor_numel(k->outputs[0]) == 0)
		return 0;
	bool sign = x->dtype == ES_DT_INT8;
	int threads = es_op_threads(k, es_tensor_numel(k->outputs[0]), 1 << 15);
	const uint8_t *xd = x->data;
	uint8_t *yd = k->outputs[0]->data;
	ES_PARALLEL_FOR(threads, true, r, rows, qpool_rows(&g, xd, yd, sign, r, r + 1););
	return 0;
}

static const es_op_def defs[] = {
	{ .domain = ES_DOMAIN, .op_type = "QAdd", .since = 1, .min_inputs = 8,
	  .max_inputs = 8, .min_outputs = 1, .max_outputs = 1,
	  .types = ES_T(ES_DT_UINT8) | ES_T(ES_DT_INT8), .out_type = ES_OUT_UNKNOWN,
	  .init = qadd_init, .fini = es_op_state_free, .run = qadd_run },
	{ .domain = ES_DOMAIN, .op_type = "QMaxPool", .since = 1, .min_inputs = 1,
	  .max_inputs = 1, .min_outputs = 1, .max_outputs = 1,
	  .types = ES_T(ES_DT_UINT8) | ES_T(ES_DT_INT8), .out_type = ES_OUT_SAME,
	  .init = qpool_init, .fini = es_op_state_free, .run = qpool_run },
};

const es_op_table es_ops_qelem = { defs, sizeof(defs) / sizeof(defs[0]) };
