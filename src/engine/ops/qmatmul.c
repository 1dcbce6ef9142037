/*
 * Operator family: qmatmul, int8 matrix products.
 *
 *   QLinearMatMul (ONNX, since 10)  quantized x quantized -> quantized
 *   MatMulInteger (ONNX, since 10)  quantized x quantized -> int32
 *   QGemm         (ES_DOMAIN)       fuse_qdq_matmul's DQ -> MatMul/Gemm [-> Q]
 *
 * All three compute the int32 product
 *
 *     acc[m, n] = sum_k (A[m, k] - za) * (B[k, n] - zb[n])
 *
 * (za per tensor or per row of A, zb per tensor or per column of B), which
 * wraps around in 32 bits as the specification allows, and differ in what
 * they make of it:
 *
 *   MatMulInteger  y = acc
 *   QLinearMatMul  y = saturate(rint(acc * (sa * sb / sy)) + zy)
 *   QGemm          r = (acc + bias[n]) * (sa * sb[n]) as float, or, with
 *                  y_scale, saturate(rint((acc + bias[n]) * (sa * sb[n] / sy)) + zy)
 *
 * rint rounds half to even (the default rounding mode); the multiplier is
 * one float, as ONNX Runtime computes it.
 *
 * QGemm's contract (inputs; "opt." may be omitted):
 *   0 A        uint8 or int8, [..., K] (gemm=1: [M, K]); all leading
 *              dimensions are rows of one product
 *   1 a_scale  float scalar                2 a_zero_point  A's type, scalar (opt.)
 *   3 B        uint8 or int8, 2-D: [K, N], or [N, K] with trans_b=1
 *   4 b_scale  float, scalar or [N]        5 b_zero_point  B's type, scalar or [N] (opt.)
 *   6 bias     int32 [N] at scale a_scale * b_scale, zero point 0 (opt.)
 *   7 y_scale  float scalar (opt.)         8 y_zero_point  uint8 or int8 scalar (opt.)
 * attributes trans_b (0), gemm (0). Output: float [..., N] without y_scale,
 * else y_zero_point's type (uint8 when absent). Scales must be finite and
 * positive.
 *
 * Kernels. When B is a constant 2-D matrix and every quantization
 * parameter is a per-tensor constant (b's may be per column), init
 * prepares oneDNN's int8 matmul: B - zb as int8 weights (when that fits),
 * the a zero point folded into an int32 bias (-za * column sums of the
 * weights, plus QGemm's bias), the multipliers as output scales and zy as
 * a linear post-op. Primitives are created per row count and thread count
 * (oneDNN fixes the team size) and cached in the node state with the
 * weights packed into their layout, like FusedMatMul's (gemm.c). Only on
 * CPUs with VNNI: without it oneDNN multiplies u8 x s8 pairs with
 * saturating 16-bit sums, which is not the exact product ONNX asks for.
 * Everything else (u8 weights that do not fit int8 after their zero
 * point, per-row a parameters, batched or run-time B) takes a plain C
 * int32 loop.
 */
#include <inttypes.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "engine/kernels/dnnl_util.h"
#include "engine/opt/opt.h"
#include "engine/ops/families.h"
#include "engine/ops/mm_plan.h"
#include "engine/ops/op_util.h"

typedef enum qmm_kind { QMM_LINEAR, QMM_INTEGER, QMM_GEMM } qmm_kind;
typedef enum qmm_out { QOUT_I32, QOUT_F32, QOUT_Q8 } qmm_out;

/* Input slot of each operand (-1: the op has none). */
typedef struct qmm_slots {
	int a, sa, za, b, sb, zb, bias, sy, zy;
} qmm_slots;

static const qmm_slots slots_of[3] = {
	[QMM_LINEAR] = { 0, 1, 2, 3, 4, 5, -1, 6, 7 },
	[QMM_INTEGER] = { 0, -1, 2, 1, -1, 3, -1, -1, -1 },
	[QMM_GEMM] = { 0, 1, 2, 3, 4, 5, 6, 7, 8 },
};

/* ---- node state and oneDNN cache ----------------------------------------- */

#define QMM_CACHE_SLOTS 4

typedef struct qmm_key {
	int64_t M;
	int threads;
	int a_u8;
} qmm_key;

/* One oneDNN matmul for a row count, with the weights in its layout.
 * failed: oneDNN declined; the reference loop runs. */
typedef struct qmm_prim {
	atomic_int refs;
	qmm_key key;
	bool failed;
	dnnl_primitive_t prim;
	dnnl_memory_desc_t src_md, wei_md, dst_md, bias_md, scratch_md;
	size_t scratch_bytes;
	void *packed;
	uint64_t last_use;
	atomic_flag busy; /* mem[] in use by a run */
	dnnl_memory_t mem[5];
} qmm_prim;

typedef struct qmm_state {
	qmm_kind kind;
	bool trans_b, gemm;
	/* the oneDNN path, prepared at init (fast_prepare) */
	bool fast;
	int64_t K, N;
	int8_t *w;        /* [K, N] row-major: B - zb */
	int32_t *bias;    /* [N]: bias - za * column sums of w; NULL: zero */
	float *scales;    /* output scales: n_scales of them */
	int n_scales;     /* 0 (MatMulInteger), 1 or N */
	float zy;
	dnnl_data_type_t dst_dt;
	pthread_mutex_t lock;
	qmm_prim *cache[QMM_CACHE_SLOTS];
	uint64_t clock;
} qmm_state;

static void prim_put(qmm_prim *e)
{
	if (!e || atomic_fetch_sub(&e->refs, 1) != 1)
		return;
	for (int i = 0; i < 5; i++)
		if (e->mem[i])
			dnnl_memory_destroy(e->mem[i]);
	if (e->prim)
		dnnl_primitive_destroy(e->prim);
	es_aligned_free(e->packed);
	free(e);
}

static void qmm_fini(void *state)
{
	qmm_state *st = state;
	if (!st)
		return;
	for (int i = 0; i < QMM_CACHE_SLOTS; i++)
		prim_put(st->cache[i]);
	pthread_mutex_destroy(&st->lock);
	free(st->w);
	free(st->bias);
	free(st->scales);
	free(st);
}

/* ---- quantization parameters ---------------------------------------------- */

/* How one scale or zero point spreads over its matrix. */
typedef struct qvec {
	const void *data; /* NULL: absent (a zero point of 0) */
	es_dtype dt;
	bool vec;         /* per row of A / per column of B: [matrix * len + i] */
} qvec;

static int32_t qv_int(const qvec *q, int64_t i)
{
	if (!q->data)
		return 0;
	if (!q->vec)
		i = 0;
	return q->dt == ES_DT_UINT8 ? ((const uint8_t *)q->data)[i]
				    : ((const int8_t *)q->data)[i];
}

static float qv_f32(const qvec *q, int64_t i)
{
	return ((const float *)q->data)[q->vec ? i : 0];
}

static bool is_q8(es_dtype dt)
{
	return dt == ES_DT_UINT8 || dt == ES_DT_INT8;
}

static bool good_scale(float s)
{
	return s > 0.0f && isfinite(s);
}

/* Which per-row / per-column forms a parameter may take. */
typedef enum qspread {
	SPREAD_SCALAR, /* one value only */
	SPREAD_SPEC,   /* the ONNX ops: [M] / [N] for 2-D, else t's shape with
			* the last / second-to-last dimension 1 */
	SPREAD_COLS,   /* QGemm's B: 1-D [n_cols] (the columns of op(B)) */
} qspread;

/*
 * Reads input `slot` (`what`: "a_scale", ...), a scale (float) or zero
 * point (type zp_dt) of matrix operand t: per row of A (col false) or per
 * column of B (col true) as `spread` allows; a single value is per tensor.
 * An absent zero point leaves q->data NULL.
 */
static int read_param(es_kctx *k, int slot, const char *what, bool scale,
		      es_dtype zp_dt, const es_tensor *t, bool col,
		      qspread spread, int64_t n_cols, qvec *q)
{
	const es_tensor *p = slot >= 0 ? es_kin(k, slot) : NULL;
	char sp[192], st[192];
	memset(q, 0, sizeof(*q));
	if (!p)
		return 0;
	es_dtype want = scale ? ES_DT_FLOAT : zp_dt;
	if (p->dtype != want)
		return es_kctx_fail(k, ES_ETYPE, "input %d (%s) has type %s, expected %s",
				    slot, what, es_dtype_name(p->dtype), es_dtype_name(want));
	q->data = p->data;
	q->dt = p->dtype;
	int64_t n = es_tensor_numel(p);
	int r = t->ndim;
	if (n != 1) {
		bool ok = false;
		if (spread == SPREAD_COLS) {
			ok = p->ndim == 1 && p->dims[0] == n_cols;
		} else if (spread == SPREAD_SPEC && r == 2 && p->ndim == 1) {
			ok = p->dims[0] == t->dims[col ? 1 : 0];
		} else if (spread == SPREAD_SPEC && r >= 2 && p->ndim == r) {
			ok = true;
			for (int d = 0; d < r; d++)
				if (p->dims[d] != (d == (col ? r - 2 : r - 1) ? 1 : t->dims[d]))
					ok = false;
		}
		if (!ok)
			return es_kctx_fail(k, ES_ESHAPE,
				"input %d (%s) has shape %s: expected a scalar%s%s for %s %s",
				slot, what, es_op_fmt_shape(sp, sizeof(sp), p),
				spread != SPREAD_SCALAR ? " or one value per " : "",
				spread == SPREAD_SCALAR ? "" : col ? "column" : "row",
				col ? "B" : "A", es_op_fmt_shape(st, sizeof(st), t));
		q->vec = true;
	}
	if (scale)
		for (int64_t i = 0; i < n; i++)
			if (!good_scale(((const float *)p->data)[i]))
				return es_kctx_fail(k, ES_EINVAL,
					"input %d (%s) entry %" PRId64 " is %g: a scale must be finite and positive",
					slot, what, i, (double)((const float *)p->data)[i]);
	return 0;
}

/* ---- the plain C path ------------------------------------------------------- */

/* One product as the reference loop sees it. */
typedef struct qmm_prob {
	es_mm_shape s;
	const void *a, *b;
	bool a_u8, b_u8;
	int64_t b_sk, b_sn;     /* element strides inside one B matrix */
	qvec za, zb, sa, sb;
	const int32_t *bias;    /* [N] or NULL */
	float sy;
	int32_t zy;
	bool y_u8;
	qmm_out out;
	void *y;
	int16_t *bq;            /* b_batch matrices [K, N]: B - zb */
	uint32_t *acc;          /* N per thread */
} qmm_prob;

/* Converts every B matrix to int16 B - zb, row-major [K, N]. */
static void ref_convert_b(const qmm_prob *p)
{
	int64_t K = p->s.K, N = p->s.N;
	for (int64_t j = 0; j < p->s.b_batch; j++) {
		const int64_t base = j * K * N;
		int16_t *dst = p->bq + base;
		for (int64_t kk = 0; kk < K; kk++)
			for (int64_t n = 0; n < N; n++) {
				int64_t at = base + kk * p->b_sk + n * p->b_sn;
				int32_t v = p->b_u8 ? ((const uint8_t *)p->b)[at]
						    : ((const int8_t *)p->b)[at];
				dst[kk * N + n] = (int16_t)(v - qv_int(&p->zb, j * N + n));
			}
	}
}

/* Output row r (batch r / M, row r % M) of the product. */
static void ref_row(const qmm_prob *p, int64_t r, uint32_t *acc)
{
	const es_mm_shape *s = &p->s;
	int64_t M = s->M, N = s->N, K = s->K, oa, ob;
	int64_t i = r / M, m = r % M;
	es_mm_offsets(s, i, &oa, &ob);
	int64_t amat = M * K != 0 ? oa / (M * K) : 0;
	int64_t bmat = K * N != 0 ? ob / (K * N) : 0;
	int64_t arow = amat * M + m;
	const int16_t *bq = p->bq + bmat * K * N;
	uint32_t *sum = p->out == QOUT_I32 ? (uint32_t *)p->y + r * N : acc;
	int32_t za = qv_int(&p->za, arow);

	memset(sum, 0, (size_t)N * sizeof(*sum));
	for (int64_t kk = 0; kk < K; kk++) {
		int64_t at = oa + m * K + kk;
		int32_t av = (p->a_u8 ? ((const uint8_t *)p->a)[at]
				      : ((const int8_t *)p->a)[at]) - za;
		if (!av)
			continue;
		const int16_t *brow = bq + kk * N;
		/* |av * b| <= 255 * 255: the product never overflows, the
		 * sum wraps in 32 bits */
		for (int64_t n = 0; n < N; n++)
			sum[n] += (uint32_t)(av * (int32_t)brow[n]);
	}
	if (p->out == QOUT_I32)
		return;
	float sa = qv_f32(&p->sa, arow);
	if (p->out == QOUT_F32) {
		float *y = (float *)p->y + r * N;
		for (int64_t n = 0; n < N; n++) {
			uint32_t v = sum[n] + (p->bias ? (uint32_t)p->bias[n] : 0u);
			y[n] = (float)(int32_t)v * (sa * qv_f32(&p->sb, bmat * N + n));
		}
		return;
	}
	float lo = p->y_u8 ? 0.0f : -128.0f, hi = p->y_u8 ? 255.0f : 127.0f;
	float zy = (float)p->zy;
	for (int64_t n = 0; n < N; n++) {
		uint32_t v = sum[n] + (p->bias ? (uint32_t)p->bias[n] : 0u);
		float mult = sa * qv_f32(&p->sb, bmat * N + n) / p->sy;
		float q = rintf((float)(int32_t)v * mult) + zy;
		if (!(q >= lo))
			q = lo;
		else if (q > hi)
			q = hi;
		if (p->y_u8)
			((uint8_t *)p->y)[r * N + n] = (uint8_t)q;
		else
			((int8_t *)p->y)[r * N + n] = (int8_t)q;
	}
}

static void ref_rows(const qmm_prob *p, int64_t lo, int64_t hi, int tid)
{
	uint32_t *acc = p->acc + (size_t)tid * (size_t)p->s.N;
	for (int64_t r = lo; r < hi; r++)
		ref_row(p, r, acc);
}

static int ref_run(es_kctx *k, qmm_prob *p)
{
	const es_mm_shape *s = &p->s;
	int64_t rows = s->batch * s->M, kn = s->K * s->N, bq_n, work;
	if (__builtin_mul_overflow(kn, s->b_batch, &bq_n) ||
	    __builtin_mul_overflow(rows, kn, &work))
		work = INT64_MAX;
	int team = es_op_threads(k, work, 1 << 16);
	if (team > rows)
		team = (int)rows;
	if (team < 1)
		team = 1;
	size_t bq_bytes = ((size_t)bq_n * sizeof(int16_t) + 63) & ~(size_t)63;
	size_t acc_bytes = (size_t)team * (size_t)s->N * sizeof(uint32_t);
	char *buf = es_op_scratch(k, (int64_t)(bq_bytes + acc_bytes) + 1, 1);
	if (!buf)
		return k->err->code;
	p->bq = (int16_t *)buf;
	p->acc = (uint32_t *)(buf + bq_bytes);
	ref_convert_b(p);
	/* rows in equal contiguous shares, one accumulator row per thread */
	ES_PARALLEL_REGION(team, true,
		int t = omp_get_thread_num(), nt = omp_get_num_threads();
		ref_rows(p, rows * t / nt, rows * (t + 1) / nt, t);
	);
	return 0;
}

/* ---- the oneDNN path ------------------------------------------------------- */

static bool cpu_has_vnni(void)
{
	dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
	return (isa & dnnl_cpu_isa_avx512_core_vnni) == dnnl_cpu_isa_avx512_core_vnni ||
	       (isa & dnnl_cpu_isa_avx2_vnni) == dnnl_cpu_isa_avx2_vnni;
}

/* A constant single value of a zero point (u8/s8) into *v (0 when the
 * input is omitted). False when not constant or not one u8/s8 value. */
static bool const_zp(const es_op_init_ctx *c, int slot, int32_t *v)
{
	*v = 0;
	if (slot < 0 || slot >= c->node->n_inputs || c->node->inputs[slot] < 0)
		return true;
	const es_tensor *t = es_init_const_input(c, slot);
	if (!t || es_tensor_numel(t) != 1 || !is_q8(t->dtype))
		return false;
	*v = t->dtype == ES_DT_UINT8 ? *(const uint8_t *)t->data : *(const int8_t *)t->data;
	return true;
}

static bool const_scale(const es_op_init_ctx *c, int slot, float *v)
{
	const es_tensor *t = es_init_const_input(c, slot);
	if (!t || t->dtype != ES_DT_FLOAT || es_tensor_numel(t) != 1)
		return false;
	*v = *(const float *)t->data;
	return good_scale(*v);
}

/*
 * Prepares the oneDNN path when B and the parameters are constants (see
 * the top comment); leaves st->fast false otherwise. Only ES_ENOMEM is an
 * error.
 */
static int fast_prepare(const es_op_init_ctx *c, qmm_state *st)
{
	const qmm_slots *sl = &slots_of[st->kind];
	const es_node *n = c->node;
	const es_tensor *B = es_init_const_input(c, sl->b);
	int32_t za = 0, zy = 0;
	float sa = 1.0f, sy = 1.0f;
	bool has_y = sl->sy >= 0 && sl->sy < n->n_inputs && n->inputs[sl->sy] >= 0;

	if (!B || B->ndim != 2 || !is_q8(B->dtype) || !es_dnnl_engine() || !cpu_has_vnni())
		return 0;
	int64_t K = st->trans_b ? B->dims[1] : B->dims[0];
	int64_t N = st->trans_b ? B->dims[0] : B->dims[1];
	if (K <= 0 || N <= 0 || K > INT32_MAX || N > INT32_MAX)
		return 0;
	if (!const_zp(c, sl->za, &za))
		return 0;
	if (sl->sa >= 0 && !const_scale(c, sl->sa, &sa))
		return 0;
	if (has_y && !const_scale(c, sl->sy, &sy))
		return 0;
	if (has_y && !const_zp(c, sl->zy, &zy))
		return 0;
	const es_tensor *zb = sl->zb < n->n_inputs && n->inputs[sl->zb] >= 0
				      ? es_init_const_input(c, sl->zb) : NULL;
	if (sl->zb < n->n_inputs && n->inputs[sl->zb] >= 0 &&
	    (!zb || zb->dtype != B->dtype ||
	     !(es_tensor_numel(zb) == 1 || (zb->ndim == 1 && zb->dims[0] == N))))
		return 0;
	const es_tensor *sb = sl->sb >= 0 ? es_init_const_input(c, sl->sb) : NULL;
	if (sl->sb >= 0 &&
	    (!sb || sb->dtype != ES_DT_FLOAT ||
	     !(es_tensor_numel(sb) == 1 || (sb->ndim == 1 && sb->dims[0] == N))))
		return 0;
	const es_tensor *bias = NULL;
	if (sl->bias >= 0 && sl->bias < n->n_inputs && n->inputs[sl->bias] >= 0) {
		bias = es_init_const_input(c, sl->bias);
		if (!bias || bias->dtype != ES_DT_INT32 || bias->ndim != 1 || bias->dims[0] != N)
			return 0;
	}
	if (sb)
		for (int64_t i = 0; i < es_tensor_numel(sb); i++)
			if (!good_scale(((const float *)sb->data)[i]))
				return 0;

	qvec zbq = { zb ? zb->data : NULL, B->dtype, zb && es_tensor_numel(zb) > 1 };
	int8_t *w = malloc((size_t)K * (size_t)N);
	int64_t *colsum = calloc((size_t)N, sizeof(int64_t));
	int32_t *bv = malloc((size_t)N * sizeof(int32_t));
	int n_scales = sb ? (int)es_tensor_numel(sb) : 0;
	float *scales = n_scales ? malloc((size_t)n_scales * sizeof(float)) : NULL;
	bool fits = true, any_bias = false;
	if (!w || !colsum || !bv || (n_scales && !scales)) {
		free(w);
		free(colsum);
		free(bv);
		free(scales);
		return es_error_set(c->err, ES_ENOMEM, "node '%s' (%s): out of memory",
				    n->name, n->op_type);
	}
	for (int64_t kk = 0; kk < K && fits; kk++)
		for (int64_t j = 0; j < N; j++) {
			int64_t at = st->trans_b ? j * K + kk : kk * N + j;
			int32_t v = B->dtype == ES_DT_UINT8 ? ((const uint8_t *)B->data)[at]
							   : ((const int8_t *)B->data)[at];
			v -= qv_int(&zbq, j);
			if (v < -128 || v > 127) {
				fits = false;
				break;
			}
			w[kk * N + j] = (int8_t)v;
			colsum[j] += v;
		}
	for (int64_t j = 0; j < N && fits; j++) {
		int64_t v = (bias ? ((const int32_t *)bias->data)[j] : 0) - (int64_t)za * colsum[j];
		if (v < INT32_MIN || v > INT32_MAX)
			fits = false;
		bv[j] = (int32_t)v;
		any_bias |= v != 0;
	}
	for (int i = 0; i < n_scales; i++) {
		float prod = sa * ((const float *)sb->data)[i];
		scales[i] = has_y ? prod / sy : prod;
	}
	free(colsum);
	if (!fits) {
		free(w);
		free(bv);
		free(scales);
		return 0;
	}
	if (!any_bias) {
		free(bv);
		bv = NULL;
	}
	/* oneDNN adds the bias in float: int32 results past 2^24 would round */
	if (bv && st->kind == QMM_INTEGER) {
		free(w);
		free(bv);
		free(scales);
		return 0;
	}
	st->fast = true;
	st->K = K;
	st->N = N;
	st->w = w;
	st->bias = bv;
	st->scales = scales;
	st->n_scales = n_scales;
	st->zy = (float)zy;
	if (st->kind == QMM_INTEGER)
		st->dst_dt = dnnl_s32;
	else if (!has_y)
		st->dst_dt = dnnl_f32;
	else {
		const es_tensor *zyt = es_init_const_input(c, sl->zy);
		st->dst_dt = zyt && zyt->dtype == ES_DT_INT8 ? dnnl_s8 : dnnl_u8;
	}
	return 0;
}

/* Creates e's primitive and packs the weights; false when oneDNN declines. */
static bool prim_create(qmm_prim *e, const qmm_state *st)
{
	dnnl_engine_t eng = es_dnnl_engine();
	dnnl_primitive_attr_t attr = NULL;
	dnnl_post_ops_t po = NULL;
	dnnl_primitive_desc_t pd = NULL;
	dnnl_memory_desc_t wei_any, wei_user;
	dnnl_matmul_desc_t desc;
	int64_t M = e->key.M;
	dnnl_dims_t src_d = { M, st->K }, wei_d = { st->K, st->N };
	dnnl_dims_t bias_d = { 1, st->N }, dst_d = { M, st->N };
	bool ok = false;

	if (!eng ||
	    dnnl_memory_desc_init_by_tag(&e->src_md, 2, src_d,
					 e->key.a_u8 ? dnnl_u8 : dnnl_s8, dnnl_ab) ||
	    dnnl_memory_desc_init_by_tag(&e->dst_md, 2, dst_d, st->dst_dt, dnnl_ab) ||
	    dnnl_memory_desc_init_by_tag(&e->bias_md, 2, bias_d, dnnl_s32, dnnl_ab) ||
	    dnnl_memory_desc_init_by_tag(&wei_any, 2, wei_d, dnnl_s8, dnnl_format_tag_any) ||
	    dnnl_memory_desc_init_by_tag(&wei_user, 2, wei_d, dnnl_s8, dnnl_ab) ||
	    dnnl_matmul_desc_init(&desc, &e->src_md, &wei_any,
				  st->bias ? &e->bias_md : NULL, &e->dst_md) ||
	    dnnl_primitive_attr_create(&attr) ||
	    dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user))
		goto out;
	if (st->n_scales &&
	    dnnl_primitive_attr_set_output_scales(attr, st->n_scales,
						  st->n_scales > 1 ? 1 << 1 : 0, st->scales))
		goto out;
	if (st->zy != 0.0f &&
	    (dnnl_post_ops_create(&po) ||
	     dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_linear, 1.0f, st->zy) ||
	     dnnl_primitive_attr_set_post_ops(attr, po)))
		goto out;
	es_dnnl_set_threads(e->key.threads);
	if (dnnl_primitive_desc_create(&pd, &desc, attr, eng, NULL))
		goto out;
	const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
	const dnnl_memory_desc_t *sp = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
	if (!md)
		goto out;
	e->wei_md = *md;
	e->scratch_bytes = sp ? dnnl_memory_desc_get_size(sp) : 0;
	if (sp)
		e->scratch_md = *sp;
	e->packed = es_aligned_alloc(dnnl_memory_desc_get_size(md));
	if (!e->packed || es_dnnl_reorder(&wei_user, st->w, &e->wei_md, e->packed) ||
	    dnnl_primitive_create(&e->prim, pd))
		goto out;
	const dnnl_memory_desc_t *mds[5] = {
		&e->src_md, &e->wei_md, &e->dst_md, st->bias ? &e->bias_md : NULL,
		e->scratch_bytes ? &e->scratch_md : NULL,
	};
	for (int i = 0; i < 5; i++)
		if (mds[i] && es_dnnl_memory(&e->mem[i], mds[i],
					     i == 1 ? e->packed : i == 3 ? (void *)st->bias
								  : DNNL_MEMORY_NONE))
			goto out;
	ok = true;
out:
	if (!ok) {
		for (int i = 0; i < 5; i++) {
			if (e->mem[i])
				dnnl_memory_destroy(e->mem[i]);
			e->mem[i] = NULL;
		}
		if (e->prim)
			dnnl_primitive_destroy(e->prim);
		e->prim = NULL;
		es_aligned_free(e->packed);
		e->packed = NULL;
	}
	if (pd)
		dnnl_primitive_desc_destroy(pd);
	if (po)
		dnnl_post_ops_destroy(po);
	if (attr)
		dnnl_primitive_attr_destroy(attr);
	return ok;
}

/* The cache entry for key, referenced (prim_put); NULL when out of memory. */
static qmm_prim *prim_get(qmm_state *st, const qmm_key *key)
{
	qmm_prim *e = NULL;
	int victim = 0;
	pthread_mutex_lock(&st->lock);
	st->clock++;
	for (int i = 0; i < QMM_CACHE_SLOTS; i++) {
		qmm_prim *c = st->cache[i];
		if (c && !memcmp(&c->key, key, sizeof(*key))) {
			e = c;
			break;
		}
		if (!c || (st->cache[victim] && c->last_use < st->cache[victim]->last_use))
			victim = i;
	}
	if (!e && (e = calloc(1, sizeof(*e)))) {
		memcpy(&e->key, key, sizeof(*key));
		atomic_flag_clear(&e->busy);
		e->failed = !prim_create(e, st);
		prim_put(st->cache[victim]);
		atomic_init(&e->refs, 1);
		st->cache[victim] = e;
	}
	if (e) {
		e->last_use = st->clock;
		atomic_fetch_add(&e->refs, 1);
	}
	pthread_mutex_unlock(&st->lock);
	return e;
}

static int prim_run(es_kctx *k, qmm_prim *e, const void *a, void *y)
{
	static const int arg_ids[5] = { DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST,
					DNNL_ARG_BIAS, DNNL_ARG_SCRATCHPAD };
	dnnl_memory_t tmp[5] = { NULL };
	dnnl_exec_arg_t args[5];
	int n = 0;
	dnnl_status_t s = dnnl_success;
	dnnl_stream_t strm = es_dnnl_stream();
	void *scratch = NULL;
	const qmm_state *st = k->state;

	if (e->scratch_bytes && !(scratch = es_kctx_scratch(k, e->scratch_bytes)))
		return es_kctx_fail(k, ES_ENOMEM, "cannot allocate %zu bytes of scratch",
				    e->scratch_bytes);
	if (!strm)
		return es_kctx_fail(k, ES_EINTERNAL, "oneDNN stream unavailable");
	const void *bufs[5] = { a, e->packed, y, st->bias, scratch };
	const dnnl_memory_desc_t *mds[5] = { &e->src_md, &e->wei_md, &e->dst_md,
					     &e->bias_md, &e->scratch_md };
	bool own = !atomic_flag_test_and_set(&e->busy);
	for (int i = 0; i < 5 && s == dnnl_success; i++) {
		if (!e->mem[i])
			continue;
		dnnl_memory_t m;
		if (own) {
			m = e->mem[i];
			if (i != 1 && i != 3)
				s = dnnl_memory_set_data_handle(m, (void *)bufs[i]);
		} else {
			s = es_dnnl_memory(&tmp[i], mds[i], bufs[i]);
			m = tmp[i];
		}
		args[n++] = (dnnl_exec_arg_t){ arg_ids[i], m };
	}
	if (s == dnnl_success) {
		es_dnnl_set_threads(k->threads);
		s = dnnl_primitive_execute(e->prim, strm, n, args);
		if (s == dnnl_success)
			s = dnnl_stream_wait(strm);
	}
	if (own)
		atomic_flag_clear(&e->busy);
	for (int i = 0; i < 5; i++)
		if (tmp[i])
			dnnl_memory_destroy(tmp[i]);
	if (s != dnnl_success)
		return es_kctx_fail(k, ES_EINTERNAL, "oneDNN int8 matmul failed: %s",
				    es_dnnl_strstatus(s));
	return 0;
}

/* ---- init and run ------------------------------------------------------------ */

static int qmm_init_kind(es_op_init_ctx *c, void **state, qmm_kind kind)
{
	const es_node *n = c->node;
	int64_t tb = 0, gemm = 0;
	int rc;
	if (kind == QMM_GEMM &&
	    ((rc = es_node_attr_int(n, "trans_b", 0, &tb, c->err)) ||
	     (rc = es_node_attr_int(n, "gemm", 0, &gemm, c->err))))
		return rc;
	qmm_state *st = es_op_state_alloc(c, sizeof(*st));
	if (!st)
		return ES_ENOMEM;
	st->kind = kind;
	st->trans_b = tb != 0;
	st->gemm = gemm != 0;
	pthread_mutex_init(&st->lock, NULL);
	if ((rc = fast_prepare(c, st))) {
		qmm_fini(st);
		return rc;
	}
	*state = st;
	return 0;
}

static int qlinear_init(es_op_init_ctx *c, void **state)
{
	return qmm_init_kind(c, state, QMM_LINEAR);
}

static int integer_init(es_op_init_ctx *c, void **state)
{
	return qmm_init_kind(c, state, QMM_INTEGER);
}

static int qgemm_init(es_op_init_ctx *c, void **state)
{
	return qmm_init_kind(c, state, QMM_GEMM);
}

/* QGemm's shapes: all rows of A times the 2-D B (op(B) with trans_b). */
static int qgemm_plan(es_kctx *k, const qmm_state *st, const es_tensor *A,
		      const es_tensor *B, es_mm_shape *s)
{
	char sa[192], sb[192];
	if (B->ndim != 2 || A->ndim < 1 || (st->gemm && A->ndim != 2))
		return es_kctx_fail(k, ES_ESHAPE,
			"A %s and B %s: B must be 2-D and A %s",
			es_op_fmt_shape(sa, sizeof(sa), A), es_op_fmt_shape(sb, sizeof(sb), B),
			st->gemm ? "2-D" : "of rank >= 1");
	if (!es_op_dims_fit(A) || !es_op_dims_fit(B))
		return es_kctx_fail(k, ES_ERANGE, "A %s or B %s has too many elements",
			es_op_fmt_shape(sa, sizeof(sa), A), es_op_fmt_shape(sb, sizeof(sb), B));
	memset(s, 0, sizeof(*s));
	s->K = A->dims[A->ndim - 1];
	int64_t Kb = st->trans_b ? B->dims[1] : B->dims[0];
	s->N = st->trans_b ? B->dims[0] : B->dims[1];
	if (s->K != Kb)
		return es_kctx_fail(k, ES_ESHAPE,
			"A %s and B %s (trans_b=%d) have different inner dimensions %" PRId64 " and %" PRId64,
			es_op_fmt_shape(sa, sizeof(sa), A), es_op_fmt_shape(sb, sizeof(sb), B),
			st->trans_b, s->K, Kb);
	s->M = 1;
	for (int d = 0; d < A->ndim - 1; d++)
		s->M *= A->dims[d]; /* fits: es_op_dims_fit(A) */
	s->batch = s->a_batch = s->b_batch = 1;
	s->ndim = A->ndim;
	for (int d = 0; d < A->ndim - 1; d++)
		s->dims[d] = A->dims[d];
	s->dims[A->ndim - 1] = s->N;
	return 0;
}

static int qmm_run(es_kctx *k)
{
	qmm_state *st = k->state;
	const qmm_slots *sl = &slots_of[st->kind];
	const es_tensor *A = es_kin(k, sl->a), *B = es_kin(k, sl->b);
	qmm_prob p;
	int rc;

	memset(&p, 0, sizeof(p));
	if (!is_q8(A->dtype) || !is_q8(B->dtype))
		return es_kctx_fail(k, ES_ETYPE,
			"inputs %d (A) and %d (B) must be uint8 or int8, got %s and %s",
			sl->a, sl->b, es_dtype_name(A->dtype), es_dtype_name(B->dtype));
	if (st->kind == QMM_GEMM)
		rc = qgemm_plan(k, st, A, B, &p.s);
	else
		rc = es_mm_plan(k, A, B, &p.s);
	if (rc)
		return rc;
	bool gemm = st->kind == QMM_GEMM;
	qspread a_spread = gemm ? SPREAD_SCALAR : SPREAD_SPEC;
	qspread b_spread = gemm ? SPREAD_COLS : SPREAD_SPEC;
	const es_tensor *bias = sl->bias >= 0 ? es_kin(k, sl->bias) : NULL;
	const es_tensor *sy = sl->sy >= 0 ? es_kin(k, sl->sy) : NULL;
	const es_tensor *zy = sl->zy >= 0 ? es_kin(k, sl->zy) : NULL;
	char sh[192];
	if ((rc = read_param(k, sl->za, "a_zero_point", false, A->dtype, A, false,
			     a_spread, 0, &p.za)) ||
	    (rc = read_param(k, sl->zb, "b_zero_point", false, B->dtype, B, true,
			     b_spread, p.s.N, &p.zb)))
		return rc;
	if (sl->sa >= 0 &&
	    ((rc = read_param(k, sl->sa, "a_scale", true, ES_DT_FLOAT, A, false,
			      a_spread, 0, &p.sa)) ||
	     (rc = read_param(k, sl->sb, "b_scale", true, ES_DT_FLOAT, B, true,
			      b_spread, p.s.N, &p.sb))))
		return rc;
	if (sl->sa >= 0 && (!p.sa.data || !p.sb.data))
		return es_kctx_fail(k, ES_EINVAL, "inputs %d (a_scale) and %d (b_scale) are required",
				    sl->sa, sl->sb);
	if (bias && (bias->dtype != ES_DT_INT32 || bias->ndim != 1 || bias->dims[0] != p.s.N))
		return es_kctx_fail(k, ES_ESHAPE,
			"input %d (bias) must be int32 [%" PRId64 "], got %s %s", sl->bias,
			p.s.N, es_dtype_name(bias->dtype), es_op_fmt_shape(sh, sizeof(sh), bias));

	es_dtype ydt = ES_DT_INT32;
	p.out = QOUT_I32;
	if (st->kind == QMM_LINEAR && (!sy || !zy))
		return es_kctx_fail(k, ES_EINVAL, "inputs 6 (y_scale) and 7 (y_zero_point) are required");
	if (sy) {
		qvec q;
		if ((rc = read_param(k, sl->sy, "y_scale", true, ES_DT_FLOAT, A, false,
				     SPREAD_SCALAR, 0, &q)))
			return rc;
		if (zy && !is_q8(zy->dtype))
			return es_kctx_fail(k, ES_ETYPE,
				"input %d (y_zero_point) has type %s, expected uint8 or int8",
				sl->zy, es_dtype_name(zy->dtype));
		ydt = zy ? zy->dtype : ES_DT_UINT8;
		if (zy && (rc = read_param(k, sl->zy, "y_zero_point", false, ydt, A, false,
					   SPREAD_SCALAR, 0, &q)))
			return rc;
		p.sy = *(const float *)sy->data;
		p.zy = zy ? qv_int(&q, 0) : 0;
		p.y_u8 = ydt == ES_DT_UINT8;
		p.out = QOUT_Q8;
	} else if (st->kind == QMM_GEMM) {
		if (zy)
			return es_kctx_fail(k, ES_EINVAL,
				"input %d (y_zero_point) given without input %d (y_scale)",
				sl->zy, sl->sy);
		ydt = ES_DT_FLOAT;
		p.out = QOUT_F32;
	}

	if ((rc = es_kctx_output(k, 0, ydt, p.s.ndim, p.s.dims)))
		return rc;
	es_tensor *Y = k->outputs[0];
	if (es_tensor_numel(Y) == 0)
		return 0;

	int64_t rows = p.s.batch * p.s.M;
	if (st->fast && p.s.b_batch == 1 && p.s.a_batch == p.s.batch &&
	    !p.za.vec && !p.sa.vec && p.s.K == st->K && p.s.N == st->N) {
		qmm_key key;
		memset(&key, 0, sizeof(key)); /* compared with memcmp */
		key.M = rows;
		key.threads = k->threads;
		key.a_u8 = A->dtype == ES_DT_UINT8;
		qmm_prim *e = prim_get(st, &key);
		if (!e)
			return es_kctx_fail(k, ES_ENOMEM, "out of memory");
		if (!e->failed) {
			rc = prim_run(k, e, A->data, Y->data);
			prim_put(e);
			return rc;
		}
		prim_put(e);
	}

	p.a = A->data;
	p.b = B->data;
	p.a_u8 = A->dtype == ES_DT_UINT8;
	p.b_u8 = B->dtype == ES_DT_UINT8;
	p.b_sk = st->trans_b ? 1 : p.s.N;
	p.b_sn = st->trans_b ? p.s.K : 1;
	p.bias = bias ? bias->data : NULL;
	p.y = Y->data;
	return ref_run(k, &p);
}

/* ---- table ------------------------------------------------------------------- */

#define Q8_TYPES (ES_T(ES_DT_UINT8) | ES_T(ES_DT_INT8))

static const es_op_def defs[] = {
	{ .op_type = "QLinearMatMul", .since = 10, .min_inputs = 8, .max_inputs = 8,
	  .min_outputs = 1, .max_outputs = 1, .types = Q8_TYPES,
	  .out_type = ES_OUT_UNKNOWN, .init = qlinear_init, .fini = qmm_fini,
	  .run = qmm_run },
	{ .op_type = "MatMulInteger", .since = 10, .min_inputs = 2, .max_inputs = 4,
	  .min_outputs = 1, .max_outputs = 1, .types = Q8_TYPES,
	  .out_type = ES_OUT_FIXED, .out_dtype = ES_DT_INT32, .init = integer_init,
	  .fini = qmm_fini, .run = qmm_run },
	{ .domain = ES_DOMAIN, .op_type = "QGemm", .since = 1, .min_inputs = 5,
	  .max_inputs = 9, .min_outputs = 1, .max_outputs = 1, .types = Q8_TYPES,
	  .out_type = ES_OUT_UNKNOWN, .init = qgemm_init, .fini = qmm_fini,
	  .run = qmm_run },
};

const es_op_table es_ops_qmatmul = { defs, sizeof(defs) / sizeof(defs[0]) };
