/*
 * Operator family: gemm (Gemm, MatMul).
 *
 * float goes through es_sgemm (oneDNN); float16 and bfloat16 are widened to
 * float, multiplied there and narrowed back; double and the integer types
 * use plain loops (integers wrap around like two's complement hardware).
 */
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "engine/kernels/dnnl_util.h"
#include "engine/kernels/sgemm.h"
#include "engine/opt/opt.h"
#include "engine/ops/families.h"
#include "engine/ops/mm_plan.h"
#include "engine/ops/op_util.h"

/* ---- small helpers ----------------------------------------------------- */

static bool is_half(es_dtype dt)
{
	return dt == ES_DT_FLOAT16 || dt == ES_DT_BFLOAT16;
}

/* t's values as float: t->data itself for float, a widened scratch copy
 * for float16/bfloat16. NULL (k->err set) on exhaustion. */
static const float *as_float(es_kctx *k, const es_tensor *t)
{
	if (t->dtype == ES_DT_FLOAT)
		return t->data;
	int64_t n = es_tensor_numel(t);
	float *f = es_op_scratch(k, n, sizeof(float));
	if (f)
		es_op_half_to_f32(t->dtype, t->data, f, n);
	return f;
}

/* ---- plain loops for double and the integer types ---------------------- */

/*
 * Y[i,j] = alpha * sum_k A(i,k) B(k,j) + beta * C(i,j) with
 * A(i,k) = a[i*a_si + k*a_sk], B(k,j) = b[k*b_sk + j*b_sj], Y dense M x N
 * and C (NULL when absent) read as c[i*c_si + j*c_sj] (strides 0 for
 * broadcast). Integers accumulate in uint64_t so overflow wraps instead of
 * being undefined; with a float alpha or beta the result is computed in
 * double and saturates (es_op_f2i_*). `parallel` spreads rows over
 * `threads`.
 */
#define DEFINE_NAIVE_GEMM(NAME, T, ACC, EPILOGUE)                     \
	static void NAME(const void *a_, const void *b_, const void *c_,     \
			 void *y_, int64_t M, int64_t N, int64_t K,           \
			 int64_t a_si, int64_t a_sk, int64_t b_sk,            \
			 int64_t b_sj, int64_t c_si, int64_t c_sj,            \
			 double alpha, double beta, int threads,              \
			 bool parallel)                                       \
	{                                                                     \
		const T *a = a_, *b = b_, *c = c_;                            \
		T *y = y_;                                                    \
		bool unit = alpha == 1.0 && (c == NULL || beta == 1.0);      \
		_Pragma("omp parallel for num_threads(threads) if(parallel)") \
		for (int64_t i = 0; i < M; i++) {                             \
			for (int64_t j = 0; j < N; j++) {                     \
				ACC acc = 0;                                  \
				for (int64_t kk = 0; kk < K; kk++)            \
					acc += (ACC)a[i * a_si + kk * a_sk] * \
					       (ACC)b[kk * b_sk + j * b_sj];  \
				T cv = c ? c[i * c_si + j * c_sj] : 0;        \
				EPILOGUE;                                     \
			}                                                     \
		}                                                             \
	}

DEFINE_NAIVE_GEMM(gemm_f64, double, double,
	(void)unit; y[i * N + j] = alpha * acc + (c ? beta * cv : 0.0))
DEFINE_NAIVE_GEMM(gemm_i32, int32_t, uint64_t,
	y[i * N + j] = unit ? (int32_t)(uint32_t)(acc + (uint64_t)(int64_t)cv)
			    : es_op_f2i_i32(alpha * (double)(int32_t)(uint32_t)acc + beta * cv))
DEFINE_NAIVE_GEMM(gemm_i64, int64_t, uint64_t,
	y[i * N + j] = unit ? (int64_t)(acc + (uint64_t)cv)
			    : es_op_f2i_i64(alpha * (double)(int64_t)acc + beta * (double)cv))
DEFINE_NAIVE_GEMM(gemm_u32, uint32_t, uint64_t,
	y[i * N + j] = unit ? (uint32_t)(acc + cv)
			    : es_op_f2i_u32(alpha * (double)(uint32_t)acc + beta * cv))
DEFINE_NAIVE_GEMM(gemm_u64, uint64_t, uint64_t,
	y[i * N + j] = unit ? acc + cv
			    : es_op_f2i_u64(alpha * (double)acc + beta * (double)cv))

/* Worth an OpenMP team: more than ~32K multiply-adds. */
static bool worth_threads(int64_t M, int64_t N, int64_t K, int threads)
{
	int64_t mn, mnk;
	if (threads <= 1)
		return false;
	if (__builtin_mul_overflow(M, N, &mn) || __builtin_mul_overflow(mn, K, &mnk))
		return true;
	return mnk > 32768;
}

typedef void (*naive_gemm_fn)(const void *, const void *, const void *,
			      void *, int64_t, int64_t, int64_t, int64_t,
			      int64_t, int64_t, int64_t, int64_t, int64_t,
			      double, double, int, bool);

static naive_gemm_fn naive_for(es_dtype dt)
{
	switch (dt) {
	case ES_DT_DOUBLE: return gemm_f64;
	case ES_DT_INT32: return gemm_i32;
	case ES_DT_INT64: return gemm_i64;
	case ES_DT_UINT32: return gemm_u32;
	case ES_DT_UINT64: return gemm_u64;
	default: return NULL;
	}
}

/* ---- Gemm -------------------------------------------------------------- */

typedef struct gemm_state {
	float alpha, beta;
	bool trans_a, trans_b;
	bool broadcast; /* opset < 7: C may broadcast only when set */
} gemm_state;

static int gemm_init(es_op_init_ctx *c, void **state)
{
	const es_node *n = c->node;
	int64_t ta, tb, bc = 1;
	float alpha, beta;
	int rc;
	if ((rc = es_node_attr_float(n, "alpha", 1.0f, &alpha, c->err)) ||
	    (rc = es_node_attr_float(n, "beta", 1.0f, &beta, c->err)) ||
	    (rc = es_node_attr_int(n, "transA", 0, &ta, c->err)) ||
	    (rc = es_node_attr_int(n, "transB", 0, &tb, c->err)))
		return rc;
	if (n->opset < 7 &&
	    (rc = es_node_attr_int(n, "broadcast", 0, &bc, c->err)))
		return rc;
	gemm_state *st = es_op_state_alloc(c, sizeof(*st));
	if (!st)
		return ES_ENOMEM;
	st->alpha = alpha;
	st->beta = beta;
	st->trans_a = ta != 0;
	st->trans_b = tb != 0;
	st->broadcast = bc != 0;
	*state = st;
	return 0;
}

/* Fills dense M x N y with C broadcast (strides c_si, c_sj). */
static void fill_broadcast_f32(float *y, const float *c, int64_t M, int64_t N,
			       int64_t c_si, int64_t c_sj)
{
	for (int64_t i = 0; i < M; i++) {
		float *row = y + i * N;
		const float *crow = c + i * c_si;
		if (c_sj) {
			memcpy(row, crow, (size_t)N * sizeof(float));
		} else {
			for (int64_t j = 0; j < N; j++)
				row[j] = crow[0];
		}
	}
}

static int gemm_run(es_kctx *k)
{
	const gemm_state *st = k->state;
	const es_tensor *A = es_kin(k, 0), *B = es_kin(k, 1), *C = es_kin(k, 2);
	char sa[192], sb[192], sc[192];
	es_dtype dt = A->dtype;

	if (B->dtype != dt || (C && C->dtype != dt))
		return es_kctx_fail(k, ES_ETYPE,
			"inputs must share one type: A is %s, B is %s, C is %s",
			es_dtype_name(dt), es_dtype_name(B->dtype),
			C ? es_dtype_name(C->dtype) : "absent");
	if (dt != ES_DT_FLOAT && !is_half(dt) && !naive_for(dt))
		return es_kctx_fail(k, ES_ETYPE, "type %s is not supported",
				    es_dtype_name(dt));
	if (A->ndim != 2 || B->ndim != 2)
		return es_kctx_fail(k, ES_ESHAPE,
			"A and B must be 2-D, got A %s and B %s",
			es_op_fmt_shape(sa, sizeof(sa), A), es_op_fmt_shape(sb, sizeof(sb), B));

	int64_t M = st->trans_a ? A->dims[1] : A->dims[0];
	int64_t K = st->trans_a ? A->dims[0] : A->dims[1];
	int64_t Kb = st->trans_b ? B->dims[1] : B->dims[0];
	int64_t N = st->trans_b ? B->dims[0] : B->dims[1];
	if (K != Kb)
		return es_kctx_fail(k, ES_ESHAPE,
			"A %s (transA=%d) and B %s (transB=%d) have different inner dimensions %" PRId64 " and %" PRId64,
			es_op_fmt_shape(sa, sizeof(sa), A), st->trans_a,
			es_op_fmt_shape(sb, sizeof(sb), B), st->trans_b, K, Kb);

	/* C broadcasts unidirectionally to [M, N]: trailing-aligned, each dim
	 * equal or 1. Strides 0 mark broadcast dims. */
	int64_t c_si = 0, c_sj = 0;
	bool c_full = false;
	if (C) {
		int64_t cm = C->ndim >= 2 ? C->dims[C->ndim - 2] : 1;
		int64_t cn = C->ndim >= 1 ? C->dims[C->ndim - 1] : 1;
		bool ok = C->ndim <= 2 && (cm == M || cm == 1) && (cn == N || cn == 1);
		c_full = C->ndim == 2 && cm == M && cn == N;
		if (!st->broadcast && !c_full)
			ok = false;
		if (!ok)
			return es_kctx_fail(k, ES_ESHAPE,
				"C %s cannot be broadcast to the result [%" PRId64 ",%" PRId64 "]%s",
				es_op_fmt_shape(sc, sizeof(sc), C), M, N,
				st->broadcast ? "" : " (broadcast=0)");
		c_sj = cn == 1 ? 0 : 1;
		c_si = cm == 1 ? 0 : cn;
	}
	bool use_c = C && st->beta != 0.0f;

	int64_t ydims[2] = { M, N };
	int rc;
	bool inplace = false;
	if (use_c && c_full)
		rc = es_kctx_output_inplace(k, 0, 2, dt, 2, ydims, &inplace);
	else
		rc = es_kctx_output(k, 0, dt, 2, ydims);
	if (rc)
		return rc;
	es_tensor *Y = k->outputs[0];
	if (M == 0 || N == 0)
		return 0;

	int64_t lda = A->dims[1], ldb = B->dims[1];
	if (dt == ES_DT_FLOAT || is_half(dt)) {
		const float *a = as_float(k, A), *b = as_float(k, B);
		float *y = dt == ES_DT_FLOAT ? Y->data : es_op_scratch(k, M * N, sizeof(float));
		if (!a || !b || !y)
			return k->err->code;
		if (use_c && !inplace) {
			const float *c = as_float(k, C);
			if (!c)
				return k->err->code;
			fill_broadcast_f32(y, c, M, N, c_si, c_sj);
		} else if (use_c && dt != ES_DT_FLOAT) {
			/* in place on a half C: widen it into y */
			es_op_half_to_f32(dt, Y->data, y, M * N);
		}
		rc = es_sgemm(st->trans_a, st->trans_b, M, N, K, st->alpha, a,
			      lda, b, ldb, use_c ? st->beta : 0.0f, y, N);
		if (rc)
			return es_kctx_fail(k, rc, "sgemm failed (M=%" PRId64 " N=%" PRId64 " K=%" PRId64 ")",
					    M, N, K);
		if (dt != ES_DT_FLOAT)
			es_op_f32_to_half(dt, y, Y->data, M * N);
		return 0;
	}

	/* In place, C's values are already in Y: read them from there. */
	const void *c = use_c ? (inplace ? Y->data : C->data) : NULL;
	if (inplace) {
		c_si = N;
		c_sj = 1;
	}
	naive_for(dt)(A->data, B->data, c, Y->data, M, N, K,
		      st->trans_a ? 1 : lda, st->trans_a ? lda : 1,
		      st->trans_b ? 1 : ldb, st->trans_b ? ldb : 1,
		      c_si, c_sj, st->alpha, st->beta, k->threads,
		      worth_threads(M, N, K, k->threads));
	return 0;
}

/* ---- MatMul ------------------------------------------------------------ */

/* numpy matmul shapes of one call (mm_plan.h, shared with qmatmul.c). */
typedef es_mm_shape mm_shape;

int es_mm_plan(es_kctx *k, const es_tensor *A, const es_tensor *B,
	       es_mm_shape *s)
{
	char sa[192], sb[192];
	int ra = A->ndim, rb = B->ndim;
	if (ra < 1 || rb < 1)
		return es_kctx_fail(k, ES_ESHAPE,
			"inputs must have rank >= 1, got A %s and B %s",
			es_op_fmt_shape(sa, sizeof(sa), A), es_op_fmt_shape(sb, sizeof(sb), B));
	if (!es_op_dims_fit(A) || !es_op_dims_fit(B))
		return es_kctx_fail(k, ES_ERANGE, "A %s or B %s has too many elements",
			es_op_fmt_shape(sa, sizeof(sa), A), es_op_fmt_shape(sb, sizeof(sb), B));
	s->M = ra == 1 ? 1 : A->dims[ra - 2];
	s->K = A->dims[ra - 1];
	int64_t Kb = rb == 1 ? B->dims[0] : B->dims[rb - 2];
	s->N = rb == 1 ? 1 : B->dims[rb - 1];
	if (s->K != Kb)
		return es_kctx_fail(k, ES_ESHAPE,
			"A %s and B %s have different inner dimensions %" PRId64 " and %" PRId64,
			es_op_fmt_shape(sa, sizeof(sa), A), es_op_fmt_shape(sb, sizeof(sb), B),
			s->K, Kb);

	int na = ra > 2 ? ra - 2 : 0, nbb = rb > 2 ? rb - 2 : 0;
	s->nb = na > nbb ? na : nbb;
	int64_t sa_acc = s->M * s->K, sb_acc = s->K * s->N;
	s->batch = 1;
	s->a_batch = 1;
	s->b_batch = 1;
	for (int d = s->nb - 1; d >= 0; d--) {
		int ia = d - (s->nb - na), ib = d - (s->nb - nbb);
		int64_t da = ia >= 0 ? A->dims[ia] : 1;
		int64_t db = ib >= 0 ? B->dims[ib] : 1;
		if (da != db && da != 1 && db != 1)
			return es_kctx_fail(k, ES_ESHAPE,
				"batch dimensions of A %s and B %s do not broadcast (%" PRId64 " vs %" PRId64 ")",
				es_op_fmt_shape(sa, sizeof(sa), A),
				es_op_fmt_shape(sb, sizeof(sb), B), da, db);
		s->bdims[d] = da == 1 ? db : da;
		s->a_bstride[d] = da == 1 ? 0 : sa_acc;
		s->b_bstride[d] = db == 1 ? 0 : sb_acc;
		sa_acc *= da;
		sb_acc *= db;
		s->a_batch *= da;
		s->b_batch *= db;
		/* A [2^33,1,..] x B [1,2^33,..] broadcasts past int64 */
		if (__builtin_mul_overflow(s->batch, s->bdims[d], &s->batch))
			return es_kctx_fail(k, ES_ERANGE,
				"broadcast batch of A %s and B %s has too many matrices",
				es_op_fmt_shape(sa, sizeof(sa), A),
				es_op_fmt_shape(sb, sizeof(sb), B));
	}
	s->ndim = 0;
	for (int d = 0; d < s->nb; d++)
		s->dims[s->ndim++] = s->bdims[d];
	if (ra > 1)
		s->dims[s->ndim++] = s->M;
	if (rb > 1)
		s->dims[s->ndim++] = s->N;
	return 0;
}

void es_mm_offsets(const es_mm_shape *s, int64_t b, int64_t *oa, int64_t *ob)
{
	int64_t a = 0, bb = 0;
	for (int d = s->nb - 1; d >= 0; d--) {
		int64_t i = b % s->bdims[d];
		b /= s->bdims[d];
		a += i * s->a_bstride[d];
		bb += i * s->b_bstride[d];
	}
	*oa = a;
	*ob = bb;
}

static int mm_float(es_kctx *k, const mm_shape *s, const float *a,
		    const float *b, float *y)
{
	int64_t M = s->M, N = s->N, K = s->K;
	int64_t mn = M * N;
	/* B shared by all batches and A's matrices stacked: one tall GEMM */
	if (s->b_batch == 1 && s->a_batch == s->batch)
		return es_sgemm(false, false, s->batch * M, N, K, 1.0f, a, K, b,
				N, 0.0f, y, N);
	/* every batch offset linear in b: one strided call */
	if ((s->a_batch == 1 || s->a_batch == s->batch) &&
	    (s->b_batch == 1 || s->b_batch == s->batch))
		return es_sgemm_strided(false, false, M, N, K, 1.0f,
					a, K, s->a_batch == 1 ? 0 : M * K,
					b, N, s->b_batch == 1 ? 0 : K * N,
					0.0f, y, N, mn, s->batch, k->threads);
	/* general broadcast (e.g. [2,1,M,K] x [3,K,N]) */
	int failed = 0;
	int threads = k->threads;
	bool spread = es_sgemm_spread_batches(M, N, K, s->batch, threads);
	ES_PARALLEL_FOR_OR(threads, spread, failed, i, s->batch, {
		int64_t oa, ob;
		es_mm_offsets(s, i, &oa, &ob);
		if (es_sgemm(false, false, M, N, K, 1.0f, a + oa, K, b + ob, N,
			     0.0f, y + i * mn, N))
			failed |= 1;
	});
	return failed ? ES_EINTERNAL : 0;
}

static int matmul_run(es_kctx *k)
{
	const es_tensor *A = es_kin(k, 0), *B = es_kin(k, 1);
	es_dtype dt = A->dtype;
	mm_shape s;
	int rc;

	if (B->dtype != dt)
		return es_kctx_fail(k, ES_ETYPE, "A is %s but B is %s",
				    es_dtype_name(dt), es_dtype_name(B->dtype));
	if (dt != ES_DT_FLOAT && !is_half(dt) && !naive_for(dt))
		return es_kctx_fail(k, ES_ETYPE, "type %s is not supported",
				    es_dtype_name(dt));
	if ((rc = es_mm_plan(k, A, B, &s)))
		return rc;
	if ((rc = es_kctx_output(k, 0, dt, s.ndim, s.dims)))
		return rc;
	es_tensor *Y = k->outputs[0];
	if (es_tensor_numel(Y) == 0)
		return 0;
	int64_t mn = s.M * s.N; /* <= numel(Y) */

	if (dt == ES_DT_FLOAT || is_half(dt)) {
		const float *a = as_float(k, A), *b = as_float(k, B);
		float *y = dt == ES_DT_FLOAT ? Y->data :
			   es_op_scratch(k, s.batch * mn, sizeof(float));
		if (!a || !b || !y)
			return k->err->code;
		if ((rc = mm_float(k, &s, a, b, y)))
			return es_kctx_fail(k, rc, "sgemm failed (M=%" PRId64 " N=%" PRId64 " K=%" PRId64 ")",
					    s.M, s.N, s.K);
		if (dt != ES_DT_FLOAT)
			es_op_f32_to_half(dt, y, Y->data, s.batch * mn);
		return 0;
	}

	naive_gemm_fn fn = naive_for(dt);
	size_t esz = es_dtype_size(dt);
	for (int64_t i = 0; i < s.batch; i++) {
		int64_t oa, ob;
		es_mm_offsets(&s, i, &oa, &ob);
		fn((const char *)A->data + (size_t)oa * esz,
		   (const char *)B->data + (size_t)ob * esz, NULL,
		   (char *)Y->data + (size_t)(i * mn) * esz, s.M, s.N, s.K,
		   s.K, 1, s.N, 1, 0, 0, 1.0, 0.0, k->threads,
		   worth_threads(s.M, s.N, s.K, k->threads));
	}
	return 0;
}

/* ---- FusedMatMul (ES_DOMAIN) ---------------------------------------------- */

/*
 * The optimizer's MatMul with a bias and an activation (fuse_matmul.c):
 *     Y = act(A x op(B) + bias)
 * A float [..., M, K] (or [K]), B float 2-D ([K, N], or [N, K] with
 * trans_b=1), bias float [N] (optional), activation "", "Relu" or "Gelu"
 * (the exact, erf form).
 * gemm=1 marks a fused Gemm, whose A must be 2-D. All rows of A make one
 * [M, K] x [K, N] product.
 *
 * With a constant B (the case the pass creates) the product is oneDNN's
 * matmul primitive: created on first run for the actual M and thread
 * count and cached in the node state (a few entries, LRU, reference
 * counted like conv.c's, since every session shares the state), B packed
 * once per entry into the layout the primitive prefers, bias and
 * activation applied inside the kernel (bias argument, eltwise post-op).
 * For BERT's shapes on one core this runs at 205-215 GFLOP/s where
 * dnnl_sgemm, which packs B on every call, plus a separate bias pass gave
 * 150-195. A B computed at run time, or a problem oneDNN declines, takes
 * one es_sgemm and one pass for bias and activation.
 */
typedef enum fmm_act { FMM_NONE, FMM_RELU, FMM_GELU } fmm_act;

#define FMM_CACHE_SLOTS 4

/* What a cached primitive was made for. */
typedef struct fmm_key {
	int64_t M, N, K;
	int threads;
	bool has_bias;
} fmm_key;

/* One cached oneDNN matmul with B packed into its preferred layout.
 * use_sgemm marks a problem oneDNN rejected (the sgemm path runs). */
typedef struct fmm_prim {
	atomic_int refs;
	fmm_key key;
	bool use_sgemm;
	dnnl_primitive_t prim;
	dnnl_memory_desc_t src_md, bias_md, dst_md, wei_md, scratch_md;
	size_t scratch_bytes;
	float *packed_b;
	uint64_t last_use;
	/* memory objects kept between runs (src, weights, dst, bias,
	 * scratchpad; NULL when absent), rebound to each run's buffers by
	 * whichever run holds `busy`; a run that finds it taken makes
	 * temporary ones. A steady-state run so allocates nothing here. */
	atomic_flag busy;
	dnnl_memory_t mem[5];
} fmm_prim;

typedef struct fmm_state {
	fmm_act act;
	bool trans_b;
	bool gemm;
	bool b_const; /* B is a model constant: oneDNN with packed B */
	pthread_mutex_t lock;
	fmm_prim *cache[FMM_CACHE_SLOTS];
	uint64_t clock; /* ticks per lookup, for LRU eviction */
} fmm_state;

static void fmm_prim_put(fmm_prim *e)
{
	if (!e || atomic_fetch_sub(&e->refs, 1) != 1)
		return;
	for (int i = 0; i < 5; i++)
		if (e->mem[i])
			dnnl_memory_destroy(e->mem[i]);
	if (e->prim)
		dnnl_primitive_destroy(e->prim);
	es_aligned_free(e->packed_b);
	free(e);
}

static void fmm_fini(void *state)
{
	fmm_state *st = state;
	if (!st)
		return;
	for (int i = 0; i < FMM_CACHE_SLOTS; i++)
		fmm_prim_put(st->cache[i]);
	pthread_mutex_destroy(&st->lock);
	free(st);
}

/*
 * Creates the matmul for key (src [M,K] x wei [K,N] + bias [1,N], Relu as
 * an eltwise post-op, user scratchpad so sessions can run it at once) and
 * packs b (row-major [K,N], or [N,K] when trans_b) into its weight layout.
 * Returns false when oneDNN declines; e is then left for the sgemm path.
 */
static bool fmm_prim_create(fmm_prim *e, const fmm_state *st, const float *b)
{
	const fmm_key *key = &e->key;
	dnnl_engine_t eng = es_dnnl_engine();
	dnnl_primitive_attr_t attr = NULL;
	dnnl_post_ops_t po = NULL;
	dnnl_primitive_desc_t pd = NULL;
	dnnl_memory_desc_t wei_any, wei_user;
	dnnl_matmul_desc_t desc;
	dnnl_dims_t src_d = { key->M, key->K }, wei_d = { key->K, key->N };
	dnnl_dims_t bias_d = { 1, key->N }, dst_d = { key->M, key->N };
	bool ok = false;

	if (!eng ||
	    dnnl_memory_desc_init_by_tag(&e->src_md, 2, src_d, dnnl_f32, dnnl_ab) ||
	    dnnl_memory_desc_init_by_tag(&e->dst_md, 2, dst_d, dnnl_f32, dnnl_ab) ||
	    dnnl_memory_desc_init_by_tag(&e->bias_md, 2, bias_d, dnnl_f32, dnnl_ab) ||
	    dnnl_memory_desc_init_by_tag(&wei_any, 2, wei_d, dnnl_f32, dnnl_format_tag_any) ||
	    dnnl_memory_desc_init_by_tag(&wei_user, 2, wei_d, dnnl_f32,
					 st->trans_b ? dnnl_ba : dnnl_ab) ||
	    dnnl_matmul_desc_init(&desc, &e->src_md, &wei_any,
				  key->has_bias ? &e->bias_md : NULL, &e->dst_md) ||
	    dnnl_primitive_attr_create(&attr) ||
	    dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user))
		goto out;
	if (st->act != FMM_NONE &&
	    (dnnl_post_ops_create(&po) ||
	     dnnl_post_ops_append_eltwise(po, 1.0f,
					  st->act == FMM_RELU ? dnnl_eltwise_relu
							      : dnnl_eltwise_gelu_erf,
					  0.0f, 0.0f) ||
	     dnnl_primitive_attr_set_post_ops(attr, po)))
		goto out;
	es_dnnl_set_threads(key->threads);
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
	e->packed_b = es_aligned_alloc(dnnl_memory_desc_get_size(md));
	if (!e->packed_b || es_dnnl_reorder(&wei_user, b, &e->wei_md, e->packed_b) ||
	    dnnl_primitive_create(&e->prim, pd))
		goto out;
	const dnnl_memory_desc_t *mds[5] = {
		&e->src_md, &e->wei_md, &e->dst_md,
		key->has_bias ? &e->bias_md : NULL,
		e->scratch_bytes ? &e->scratch_md : NULL,
	};
	for (int i = 0; i < 5; i++)
		if (mds[i] && es_dnnl_memory(&e->mem[i], mds[i],
					     i == 1 ? e->packed_b : DNNL_MEMORY_NONE))
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
		es_aligned_free(e->packed_b);
		e->packed_b = NULL;
		e->prim = NULL;
	}
	if (pd)
		dnnl_primitive_desc_destroy(pd);
	if (po)
		dnnl_post_ops_destroy(po);
	if (attr)
		dnnl_primitive_attr_destroy(attr);
	return ok;
}

/* The cache entry for key with a reference held (fmm_prim_put), created
 * on first sight; NULL when out of memory. */
static fmm_prim *fmm_prim_get(fmm_state *st, const fmm_key *key, const float *b)
{
	fmm_prim *e = NULL;
	int victim = 0;

	pthread_mutex_lock(&st->lock);
	st->clock++;
	for (int i = 0; i < FMM_CACHE_SLOTS; i++) {
		fmm_prim *c = st->cache[i];
		if (c && !memcmp(&c->key, key, sizeof(*key))) {
			e = c;
			break;
		}
		if (!c || (st->cache[victim] && c->last_use < st->cache[victim]->last_use))
			victim = i;
	}
	if (!e && (e = calloc(1, sizeof(*e)))) {
		memcpy(&e->key, key, sizeof(*key)); /* padding too: memcmp'd */
		atomic_flag_clear(&e->busy);
		e->use_sgemm = !fmm_prim_create(e, st, b);
		fmm_prim_put(st->cache[victim]);
		atomic_init(&e->refs, 1); /* the cache's reference */
		st->cache[victim] = e;
	}
	if (e) {
		e->last_use = st->clock;
		atomic_fetch_add(&e->refs, 1);
	}
	pthread_mutex_unlock(&st->lock);
	return e;
}

/* Runs e on a [M,K], bias and y [M,N]; scratch from the run's arena.
 * Returns 0 or an error code with k->err set. */
static int fmm_prim_run(es_kctx *k, fmm_prim *e, const float *a,
			const float *bias, float *y)
{
	static const int arg_ids[5] = { DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST,
					DNNL_ARG_BIAS, DNNL_ARG_SCRATCHPAD };
	dnnl_memory_t tmp[5] = { NULL };
	dnnl_exec_arg_t args[5];
	int n = 0;
	dnnl_status_t s = dnnl_success;
	dnnl_stream_t strm = es_dnnl_stream();
	void *scratch = NULL;

	if (e->scratch_bytes && !(scratch = es_kctx_scratch(k, e->scratch_bytes)))
		return es_kctx_fail(k, ES_ENOMEM, "cannot allocate %zu bytes of scratch",
				    e->scratch_bytes);
	if (!strm)
		return es_kctx_fail(k, ES_EINTERNAL, "oneDNN stream unavailable");
	const void *bufs[5] = { a, e->packed_b, y, bias, scratch };
	const dnnl_memory_desc_t *mds[5] = { &e->src_md, &e->wei_md, &e->dst_md,
					     &e->bias_md, &e->scratch_md };
	/* the entry's own objects when no other run holds them */
	bool own = !atomic_flag_test_and_set(&e->busy);
	for (int i = 0; i < 5 && s == dnnl_success; i++) {
		if (!e->mem[i])
			continue;
		dnnl_memory_t m;
		if (own) {
			m = e->mem[i];
			if (i != 1)
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
		return es_kctx_fail(k, ES_EINTERNAL, "oneDNN matmul failed: %s",
				    es_dnnl_strstatus(s));
	return 0;
}

static int fmm_init(es_op_init_ctx *c, void **state)
{
	const es_node *n = c->node;
	const char *act;
	int64_t tb, gemm;
	int rc;
	if ((rc = es_node_attr_string(n, "activation", "", &act, c->err)) ||
	    (rc = es_node_attr_int(n, "trans_b", 0, &tb, c->err)) ||
	    (rc = es_node_attr_int(n, "gemm", 0, &gemm, c->err)))
		return rc;
	fmm_act a;
	if (!act[0])
		a = FMM_NONE;
	else if (!strcmp(act, "Relu"))
		a = FMM_RELU;
	else if (!strcmp(act, "Gelu"))
		a = FMM_GELU;
	else
		return es_error_set(c->err, ES_EINVAL,
			"node '%s' (FusedMatMul): activation '%s' is not supported",
			n->name, act);
	fmm_state *st = es_op_state_alloc(c, sizeof(*st));
	if (!st)
		return ES_ENOMEM;
	st->act = a;
	st->trans_b = tb != 0;
	st->gemm = gemm != 0;
	const es_tensor *b = es_init_const_input(c, 1);
	st->b_const = b && b->dtype == ES_DT_FLOAT && b->ndim == 2;
	pthread_mutex_init(&st->lock, NULL);
	*state = st;
	return 0;
}

/* y[r, :] = act(y[r, :] + bias) for rows [0, rows). */
static void fmm_epilogue(float *y, int64_t rows, int64_t N, const float *bias,
			 fmm_act act)
{
	for (int64_t r = 0; r < rows; r++) {
		float *row = y + r * N;
		if (act == FMM_GELU) {
			for (int64_t j = 0; j < N; j++) {
				float v = row[j] + (bias ? bias[j] : 0.0f);
				row[j] = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
			}
		} else if (bias && act == FMM_RELU) {
			for (int64_t j = 0; j < N; j++) {
				float v = row[j] + bias[j];
				row[j] = v > 0.0f ? v : 0.0f;
			}
		} else if (bias) {
			for (int64_t j = 0; j < N; j++)
				row[j] += bias[j];
		} else if (act == FMM_RELU) {
			for (int64_t j = 0; j < N; j++)
				row[j] = row[j] > 0.0f ? row[j] : 0.0f;
		}
	}
}

static int fmm_run(es_kctx *k)
{
	/* read-only but for the primitive cache, which takes its lock */
	fmm_state *st = k->state;
	const es_tensor *A = es_kin(k, 0), *B = es_kin(k, 1), *bias = es_kin(k, 2);
	char sa[192], sb[192], sc[192];

	if (A->dtype != ES_DT_FLOAT || B->dtype != ES_DT_FLOAT ||
	    (bias && bias->dtype != ES_DT_FLOAT))
		return es_kctx_fail(k, ES_ETYPE,
			"inputs must be float: A is %s, B is %s, bias is %s",
			es_dtype_name(A->dtype), es_dtype_name(B->dtype),
			bias ? es_dtype_name(bias->dtype) : "absent");
	if (B->ndim != 2 || A->ndim < 1 || (st->gemm && A->ndim != 2))
		return es_kctx_fail(k, ES_ESHAPE,
			"A %s and B %s: B must be 2-D and A %s",
			es_op_fmt_shape(sa, sizeof(sa), A), es_op_fmt_shape(sb, sizeof(sb), B),
			st->gemm ? "2-D" : "of rank >= 1");
	if (!es_op_dims_fit(A))
		return es_kctx_fail(k, ES_ERANGE, "A %s has too many elements",
				    es_op_fmt_shape(sa, sizeof(sa), A));
	int64_t K = A->dims[A->ndim - 1];
	int64_t Kb = st->trans_b ? B->dims[1] : B->dims[0];
	int64_t N = st->trans_b ? B->dims[0] : B->dims[1];
	if (K != Kb)
		return es_kctx_fail(k, ES_ESHAPE,
			"A %s and B %s (trans_b=%d) have different inner dimensions %" PRId64 " and %" PRId64,
			es_op_fmt_shape(sa, sizeof(sa), A), es_op_fmt_shape(sb, sizeof(sb), B),
			st->trans_b, K, Kb);
	if (bias && (bias->ndim > 1 || es_tensor_numel(bias) != N))
		return es_kctx_fail(k, ES_ESHAPE,
			"bias %s must be 1-D with %" PRId64 " elements (the columns of the result)",
			es_op_fmt_shape(sc, sizeof(sc), bias), N);

	int64_t ydims[ES_MAX_DIMS];
	int ndim = A->ndim;
	for (int d = 0; d < ndim - 1; d++)
		ydims[d] = A->dims[d];
	ydims[ndim - 1] = N;
	int rc = es_kctx_output(k, 0, ES_DT_FLOAT, ndim, ydims);
	if (rc)
		return rc;
	float *y = k->outputs[0]->data;
	int64_t rows = K ? es_tensor_numel(A) / K : 1;
	for (int d = 0; d < ndim - 1 && !K; d++)
		rows *= A->dims[d];
	if (rows == 0 || N == 0)
		return 0;

	const float *a = A->data, *b = B->data;
	const float *bv = bias ? bias->data : NULL;
	int64_t ldb = B->dims[1];
	if (st->b_const && K > 0) {
		fmm_key key;
		memset(&key, 0, sizeof(key)); /* compared with memcmp */
		key.M = rows;
		key.N = N;
		key.K = K;
		key.threads = k->threads;
		key.has_bias = bv != NULL;
		fmm_prim *e = fmm_prim_get(st, &key, b);
		if (!e)
			return es_kctx_fail(k, ES_ENOMEM, "out of memory");
		if (!e->use_sgemm) {
			rc = fmm_prim_run(k, e, a, bv, y);
			fmm_prim_put(e);
			return rc;
		}
		fmm_prim_put(e);
	}
	/* one call for all rows: splitting them into cache-sized blocks
	 * measured slower (B is packed again for every call) */
	rc = es_sgemm(false, st->trans_b, rows, N, K, 1.0f, a, K, b, ldb, 0.0f,
		      y, N);
	if (rc)
		return es_kctx_fail(k, rc, "sgemm failed (M=%" PRId64 " N=%" PRId64 " K=%" PRId64 ")",
				    rows, N, K);
	if (bv || st->act != FMM_NONE) {
		int team = es_op_threads(k, rows * N, 1 << 15);
		ES_PARALLEL_FOR(team, true, r, rows, {
			fmm_epilogue(y + r * N, 1, N, bv, st->act);
		});
	}
	return 0;
}

/* ---- table ------------------------------------------------------------- */

#define GEMM_T_OLD (ES_T(ES_DT_FLOAT16) | ES_T(ES_DT_FLOAT) | ES_T(ES_DT_DOUBLE))
#define GEMM_T_9 (GEMM_T_OLD | ES_T(ES_DT_INT32) | ES_T(ES_DT_INT64) | \
		  ES_T(ES_DT_UINT32) | ES_T(ES_DT_UINT64))
#define GEMM_T_13 (GEMM_T_9 | ES_T(ES_DT_BFLOAT16))

#define GEMM_ROW(since_, until_, min_in, types_)                          \
	{ .op_type = "Gemm", .since = since_, .until = until_,            \
	  .min_inputs = min_in, .max_inputs = 3, .min_outputs = 1,        \
	  .max_outputs = 1, .types = types_, .same_type_inputs = 0x7,     \
	  .out_type = ES_OUT_SAME, .init = gemm_init, .fini = es_op_state_free, \
	  .run = gemm_run }
#define MATMUL_ROW(since_, until_, types_)                                \
	{ .op_type = "MatMul", .since = since_, .until = until_,          \
	  .min_inputs = 2, .max_inputs = 2, .min_outputs = 1,             \
	  .max_outputs = 1, .types = types_, .same_type_inputs = 0x3,     \
	  .out_type = ES_OUT_SAME, .run = matmul_run }

static const es_op_def defs[] = {
	GEMM_ROW(1, 8, 3, GEMM_T_OLD), /* 1, 6: broadcast attribute; 7: none */
	GEMM_ROW(9, 10, 3, GEMM_T_9),
	GEMM_ROW(11, 12, 2, GEMM_T_9), /* C optional */
	GEMM_ROW(13, 0, 2, GEMM_T_13),
	MATMUL_ROW(1, 8, GEMM_T_OLD),
	MATMUL_ROW(9, 12, GEMM_T_9),
	MATMUL_ROW(13, 0, GEMM_T_13),
	{ .domain = ES_DOMAIN, .op_type = "FusedMatMul", .since = 1,
	  .min_inputs = 2, .max_inputs = 3, .min_outputs = 1, .max_outputs = 1,
	  .types = ES_T(ES_DT_FLOAT), .same_type_inputs = 0x7,
	  .out_type = ES_OUT_SAME, .init = fmm_init, .fini = fmm_fini,
	  .run = fmm_run },
};

const es_op_table es_ops_gemm = { defs, sizeof(defs) / sizeof(defs[0]) };
