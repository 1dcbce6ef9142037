/*
 * Operator family: gemm (Gemm, MatMul).
 *
 * float goes through es_sgemm (oneDNN); float16 and bfloat16 are widened to
 * float, multiplied there and narrowed back; double and the integer types
 * use plain loops (integers wrap around like two's complement hardware).
 */
#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "engine/kernels/sgemm.h"
#include "engine/ops/families.h"
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

/* numpy matmul shapes of one call. */
typedef struct mm_shape {
	int64_t M, N, K;
	int nb;                      /* broadcast batch rank */
	int64_t batch;               /* product of out batch dims */
	int64_t bdims[ES_MAX_DIMS];  /* out batch dims */
	int64_t a_bstride[ES_MAX_DIMS], b_bstride[ES_MAX_DIMS]; /* 0: bcast */
	int64_t a_batch, b_batch;    /* number of matrices in A, B */
	int ndim;
	int64_t dims[ES_MAX_DIMS];   /* output shape */
} mm_shape;

static int mm_plan(es_kctx *k, const es_tensor *A, const es_tensor *B,
		   mm_shape *s)
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

/* Element offsets of batch b's matrices in A and B. */
static void mm_offsets(const mm_shape *s, int64_t b, int64_t *oa, int64_t *ob)
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
	#pragma omp parallel for num_threads(threads) if(spread) reduction(|:failed)
	for (int64_t i = 0; i < s->batch; i++) {
		int64_t oa, ob;
		mm_offsets(s, i, &oa, &ob);
		if (es_sgemm(false, false, M, N, K, 1.0f, a + oa, K, b + ob, N,
			     0.0f, y + i * mn, N))
			failed |= 1;
	}
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
	if ((rc = mm_plan(k, A, B, &s)))
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
		mm_offsets(&s, i, &oa, &ob);
		fn((const char *)A->data + (size_t)oa * esz,
		   (const char *)B->data + (size_t)ob * esz, NULL,
		   (char *)Y->data + (size_t)(i * mn) * esz, s.M, s.N, s.K,
		   s.K, 1, s.N, 1, 0, 0, 1.0, 0.0, k->threads,
		   worth_threads(s.M, s.N, s.K, k->threads));
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
};

const es_op_table es_ops_gemm = { defs, sizeof(defs) / sizeof(defs[0]) };
