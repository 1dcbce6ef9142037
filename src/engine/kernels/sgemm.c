/*
 * es_sgemm: row-major SGEMM on oneDNN's matmul primitive.
 *
 * dnnl_sgemm allocates its packing buffers on every call; a steady-state
 * run must not allocate (docs/engine.md, "Allocations"). So each calling
 * thread keeps a small cache of matmul primitives keyed by the whole call
 * (transposes, sizes, leading dimensions, alpha, beta, the OpenMP team size
 * the primitive is created for: oneDNN fixes it at creation), each with its
 * memory objects and a scratchpad of its own (scratchpad mode user): a
 * cached call only rebinds the data handles and executes. The only
 * allocations left are inside dnnl_primitive_execute (its argument map).
 */
#include "engine/kernels/sgemm.h"

#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <oneapi/dnnl/dnnl.h>

#include "base/alloc.h"
#include "edgeserve/engine.h"
#include "engine/kernels/dnnl_util.h"
#include "engine/ops/op.h" /* ES_PARALLEL_FOR_OR */

/* Primitives kept per thread (least recently used replaced): a model's
 * distinct GEMM shapes at one input shape, with room for a second. */
#define MM_CACHE_SIZE 32

/* Below this many multiply-adds per matrix a batch is spread over threads
 * one matrix each, instead of letting oneDNN split every small matrix. */
#define SMALL_GEMM_MACS (1 << 18)

typedef struct mm_key {
	bool trans_a, trans_b;
	int threads;
	int64_t M, N, K, lda, ldb, ldc;
	float alpha, beta;
} mm_key;

typedef struct mm_entry {
	mm_key key;
	uint64_t last_used;
	dnnl_primitive_t prim;
	dnnl_memory_t a, b, c, scratch;
	void *scratch_buf;
	bool use_sgemm; /* oneDNN offers only its reference matmul: dnnl_sgemm */
} mm_entry;

typedef struct mm_cache {
	mm_entry e[MM_CACHE_SIZE];
	int n;
	uint64_t clock;
} mm_cache;

static bool key_eq(const mm_key *x, const mm_key *y)
{
	return x->trans_a == y->trans_a && x->trans_b == y->trans_b &&
	       x->threads == y->threads && x->M == y->M && x->N == y->N &&
	       x->K == y->K && x->lda == y->lda && x->ldb == y->ldb &&
	       x->ldc == y->ldc && x->alpha == y->alpha && x->beta == y->beta;
}

static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static pthread_key_t cache_key;
static int cache_key_ok;

static void entry_free(mm_entry *e)
{
	if (e->prim)
		dnnl_primitive_destroy(e->prim);
	if (e->a)
		dnnl_memory_destroy(e->a);
	if (e->b)
		dnnl_memory_destroy(e->b);
	if (e->c)
		dnnl_memory_destroy(e->c);
	if (e->scratch)
		dnnl_memory_destroy(e->scratch);
	es_aligned_free(e->scratch_buf);
	memset(e, 0, sizeof(*e));
}

static void cache_free(void *p)
{
	mm_cache *c = p;
	for (int i = 0; i < c->n; i++)
		entry_free(&c->e[i]);
	free(c);
}

static void cache_setup(void)
{
	cache_key_ok = pthread_key_create(&cache_key, cache_free) == 0;
}

/* The calling thread's cache, created on first use; NULL when out of
 * memory. */
static mm_cache *thread_cache(void)
{
	pthread_once(&cache_once, cache_setup);
	if (!cache_key_ok)
		return NULL;
	mm_cache *c = pthread_getspecific(cache_key);
	if (c)
		return c;
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	if (pthread_setspecific(cache_key, c) != 0) {
		free(c);
		return NULL;
	}
	return c;
}

static dnnl_status_t md_2d(dnnl_memory_desc_t *md, int64_t rows, int64_t cols,
			   int64_t ld, bool trans)
{
	/* logical rows x cols; stored row-major with row stride ld, or (trans)
	 * as its transpose, cols x rows with row stride ld */
	dnnl_dims_t dims = { rows, cols };
	dnnl_dims_t strides = { trans ? 1 : ld, trans ? ld : 1 };
	return dnnl_memory_desc_init_by_strides(md, 2, dims, dnnl_f32, strides);
}

/* Creates e's primitive, memory objects and scratchpad for key k; when
 * oneDNN cannot (or offers only its reference matmul), e says use_sgemm. */
static dnnl_status_t entry_init(mm_entry *e, const mm_key *k)
{
	dnnl_engine_t eng = es_dnnl_engine();
	dnnl_memory_desc_t amd, bmd, cmd;
	dnnl_matmul_desc_t desc;
	dnnl_primitive_attr_t attr = NULL;
	dnnl_post_ops_t po = NULL;
	dnnl_primitive_desc_t pd = NULL;
	dnnl_status_t st;

	memset(e, 0, sizeof(*e));
	e->key = *k;
	if (!eng)
		return dnnl_runtime_error;
	if ((st = md_2d(&amd, k->M, k->K, k->lda, k->trans_a)) ||
	    (st = md_2d(&bmd, k->K, k->N, k->ldb, k->trans_b)) ||
	    (st = md_2d(&cmd, k->M, k->N, k->ldc, false)) ||
	    (st = dnnl_matmul_desc_init(&desc, &amd, &bmd, NULL, &cmd)) ||
	    (st = dnnl_primitive_attr_create(&attr)) ||
	    (st = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user)))
		goto out;
	if (k->alpha != 1.0f &&
	    (st = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &k->alpha)))
		goto out;
	if (k->beta != 0.0f) {
		if ((st = dnnl_post_ops_create(&po)) ||
		    (st = dnnl_post_ops_append_sum(po, k->beta)) ||
		    (st = dnnl_primitive_attr_set_post_ops(attr, po)))
			goto out;
	}
	if ((st = dnnl_primitive_desc_create(&pd, &desc, attr, eng, NULL)))
		goto out;
	/* the reference implementation is far slower than dnnl_sgemm, which
	 * allocates but is still the better choice then */
	const char *impl = NULL;
	if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) ||
	    !impl || !strncmp(impl, "ref", 3)) {
		e->use_sgemm = true;
		goto out;
	}
	if ((st = dnnl_primitive_create(&e->prim, pd)))
		goto out;
	const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
	size_t sbytes = smd ? dnnl_memory_desc_get_size(smd) : 0;
	if (sbytes) {
		e->scratch_buf = es_aligned_alloc(sbytes);
		if (!e->scratch_buf) {
			st = dnnl_out_of_memory;
			goto out;
		}
		if ((st = dnnl_memory_create(&e->scratch, smd, eng, e->scratch_buf)))
			goto out;
	}
	if ((st = dnnl_memory_create(&e->a, &amd, eng, DNNL_MEMORY_NONE)) ||
	    (st = dnnl_memory_create(&e->b, &bmd, eng, DNNL_MEMORY_NONE)) ||
	    (st = dnnl_memory_create(&e->c, &cmd, eng, DNNL_MEMORY_NONE)))
		goto out;
out:
	if (pd)
		dnnl_primitive_desc_destroy(pd);
	if (po)
		dnnl_post_ops_destroy(po);
	if (attr)
		dnnl_primitive_attr_destroy(attr);
	if (st != dnnl_success) {
		/* remembered, so the call does not retry creating it every time */
		entry_free(e);
		e->key = *k;
		e->use_sgemm = true;
	}
	return dnnl_success;
}

/* The cached entry for k (created, replacing the least recently used, on a
 * miss); NULL only when the thread's cache cannot be allocated. */
static mm_entry *entry_get(const mm_key *k)
{
	mm_cache *c = thread_cache();
	if (!c)
		return NULL;
	c->clock++;
	for (int i = 0; i < c->n; i++) {
		if (key_eq(&c->e[i].key, k)) {
			c->e[i].last_used = c->clock;
			return &c->e[i];
		}
	}
	mm_entry *e;
	if (c->n < MM_CACHE_SIZE) {
		e = &c->e[c->n];
	} else {
		e = &c->e[0];
		for (int i = 1; i < c->n; i++)
			if (c->e[i].last_used < e->last_used)
				e = &c->e[i];
		entry_free(e);
	}
	if (entry_init(e, k) != dnnl_success)
		return NULL;
	if (e == &c->e[c->n])
		c->n++;
	e->last_used = c->clock;
	return e;
}

/* C = beta * C over an M x N block (the K == 0 case). */
static void scale_c(int64_t M, int64_t N, float beta, float *C, int64_t ldc)
{
	for (int64_t i = 0; i < M; i++) {
		float *row = C + i * ldc;
		if (beta == 0.0f) {
			memset(row, 0, (size_t)N * sizeof(float));
		} else if (beta != 1.0f) {
			for (int64_t j = 0; j < N; j++)
				row[j] *= beta;
		}
	}
}

static int check_args(bool transA, bool transB, int64_t M, int64_t N,
		      int64_t K, int64_t lda, int64_t ldb, int64_t ldc)
{
	if (M < 0 || N < 0 || K < 0)
		return ES_EINVAL;
	if (M == 0 || N == 0)
		return 0;
	if (ldc < N)
		return ES_EINVAL;
	if (K == 0)
		return 0;
	if (lda < (transA ? M : K) || ldb < (transB ? K : N))
		return ES_EINVAL;
	return 0;
}

/* The call itself, arguments already checked. */
static int sgemm_checked(bool transA, bool transB, int64_t M, int64_t N,
			 int64_t K, float alpha, const float *A, int64_t lda,
			 const float *B, int64_t ldb, float beta, float *C,
			 int64_t ldc)
{
	if (M == 0 || N == 0)
		return 0;
	if (K == 0 || alpha == 0.0f) {
		scale_c(M, N, beta, C, ldc);
		return 0;
	}
	mm_key key;
	key.trans_a = transA;
	key.trans_b = transB;
	key.threads = omp_in_parallel() ? 1 : omp_get_max_threads();
	key.M = M;
	key.N = N;
	key.K = K;
	key.lda = lda;
	key.ldb = ldb;
	key.ldc = ldc;
	key.alpha = alpha;
	key.beta = beta;
	mm_entry *e = entry_get(&key);
	dnnl_stream_t strm = es_dnnl_stream();
	if (!e || !strm || e->use_sgemm) {
		/* no primitive (out of memory, or only the reference one) */
		dnnl_status_t st = dnnl_sgemm(transA ? 'T' : 'N', transB ? 'T' : 'N',
					      M, N, K, alpha, A, lda, B, ldb, beta,
					      C, ldc);
		return st == dnnl_success ? 0 : ES_EINTERNAL;
	}
	/* oneDNN takes non-const handles; A and B are only read */
	if (dnnl_memory_set_data_handle(e->a, (void *)A) ||
	    dnnl_memory_set_data_handle(e->b, (void *)B) ||
	    dnnl_memory_set_data_handle(e->c, C))
		return ES_EINTERNAL;
	dnnl_exec_arg_t args[4] = {
		{ DNNL_ARG_SRC, e->a },
		{ DNNL_ARG_WEIGHTS, e->b },
		{ DNNL_ARG_DST, e->c },
		{ DNNL_ARG_SCRATCHPAD, e->scratch },
	};
	dnnl_status_t st = dnnl_primitive_execute(e->prim, strm, e->scratch ? 4 : 3, args);
	if (st == dnnl_success)
		st = dnnl_stream_wait(strm);
	return st == dnnl_success ? 0 : ES_EINTERNAL;
}

int es_sgemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K,
	     float alpha, const float *A, int64_t lda, const float *B,
	     int64_t ldb, float beta, float *C, int64_t ldc)
{
	int rc = check_args(transA, transB, M, N, K, lda, ldb, ldc);
	if (rc)
		return rc;
	return sgemm_checked(transA, transB, M, N, K, alpha, A, lda, B, ldb,
			     beta, C, ldc);
}

bool es_sgemm_spread_batches(int64_t M, int64_t N, int64_t K, int64_t batch,
			     int threads)
{
	int64_t mn, macs;
	if (threads <= 1 || batch <= 1)
		return false;
	if (__builtin_mul_overflow(M, N, &mn) || __builtin_mul_overflow(mn, K, &macs))
		macs = INT64_MAX;
	return batch >= threads || macs < SMALL_GEMM_MACS;
}

int es_sgemm_strided(bool transA, bool transB, int64_t M, int64_t N,
		     int64_t K, float alpha, const float *A, int64_t lda,
		     int64_t strideA, const float *B, int64_t ldb,
		     int64_t strideB, float beta, float *C, int64_t ldc,
		     int64_t strideC, int64_t batch, int threads)
{
	int rc = check_args(transA, transB, M, N, K, lda, ldb, ldc);
	if (rc)
		return rc;
	if (batch < 0 || strideA < 0 || strideB < 0 || strideC < 0)
		return ES_EINVAL;
	if (batch <= 1) {
		if (batch == 0)
			return 0;
		return sgemm_checked(transA, transB, M, N, K, alpha, A, lda, B,
				     ldb, beta, C, ldc);
	}

	bool spread = es_sgemm_spread_batches(M, N, K, batch, threads);
	int team = threads > 1 ? threads : 1;
	int failed = 0;

	ES_PARALLEL_FOR_OR(team, spread, failed, b, batch, {
		if (sgemm_checked(transA, transB, M, N, K, alpha,
				  A + b * strideA, lda, B + b * strideB, ldb,
				  beta, C + b * strideC, ldc))
			failed |= 1;
	});
	return failed ? ES_EINTERNAL : 0;
}
