/*
 * Operator family: bmm, the optimizer's BatchMatMul (ES_DOMAIN, made by
 * opt/fuse_bmm.c):
 *
 *     Y = transpose(alpha * (transpose(A, perm_a) x transpose(B, perm_b)), perm_y)
 *
 * with ONNX MatMul semantics for the product (numpy batch broadcasting, a
 * 1-D operand promoted and its axis removed from the result). Each perm is
 * optional (absent: no transpose) and must be a permutation of its
 * operand's (or the product's) rank; alpha defaults to 1. float only.
 *
 * No transpose is carried out: the permuted operands and the permuted
 * result are read and written through strides, so the heads of an
 * attention block come from, and go back to, the layout the surrounding
 * nodes use, as far as that keeps the product allocation-free: a
 * matrix that is row-major with a row stride (permuted heads: q, v, the
 * merged context) is used in place; a transposed one (the keys) is copied
 * into dense scratch first, because oneDNN's implementation for
 * transposed strided operands allocates on every call. The product is one
 * es_sgemm_strided call (kernels/sgemm.c). Only when scratch runs out does
 * oneDNN's matmul get the strides as memory descriptors (its primitive
 * cached in the node state, 4 entries, LRU, per thread count), and a
 * problem that declines runs a plain C loop over the same strides.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "engine/kernels/dnnl_util.h"
#include "engine/kernels/sgemm.h"
#include "engine/ops/families.h"
#include "engine/ops/op_util.h"
#include "engine/opt/opt.h"

#define MAX_RANK 8
#define CACHE_SLOTS 4

/* The product as oneDNN sees it: rank r (>= 2) for all three, A (.., M, K),
 * B (.., K, N), Y (.., M, N), strides in elements (0 on broadcast axes). */
typedef struct bmm_key {
	int r;
	int threads;
	float alpha;
	int64_t ad[MAX_RANK], bd[MAX_RANK], yd[MAX_RANK];
	int64_t as[MAX_RANK], bs[MAX_RANK], ys[MAX_RANK];
} bmm_key;

typedef struct bmm_prim {
	atomic_int refs;
	bmm_key key;
	bool use_ref; /* oneDNN declined the problem */
	dnnl_primitive_t prim;
	dnnl_memory_desc_t amd, bmd, ymd, smd;
	size_t scratch_bytes;
	uint64_t last_use;
	atomic_flag busy; /* a run is using mem[] */
	dnnl_memory_t mem[4];
	const void *bound[4];
} bmm_prim;

typedef struct bmm_state {
	int64_t perm[3][MAX_RANK]; /* a, b, y */
	int rank[3];               /* 0: no perm */
	float alpha;
	pthread_mutex_t lock;
	bmm_prim *cache[CACHE_SLOTS];
	uint64_t clock;
} bmm_state;

static void prim_put(bmm_prim *e)
{
	if (!e || atomic_fetch_sub(&e->refs, 1) != 1)
		return;
	for (int i = 0; i < 4; i++)
		if (e->mem[i])
			dnnl_memory_destroy(e->mem[i]);
	if (e->prim)
		dnnl_primitive_destroy(e->prim);
	free(e);
}

static void bmm_fini(void *state)
{
	bmm_state *st = state;
	if (!st)
		return;
	for (int i = 0; i < CACHE_SLOTS; i++)
		prim_put(st->cache[i]);
	pthread_mutex_destroy(&st->lock);
	free(st);
}

static int bmm_init(es_op_init_ctx *c, void **state)
{
	static const char *const names[3] = { "perm_a", "perm_b", "perm_y" };
	bmm_state *st = es_op_state_alloc(c, sizeof(*st));
	int rc;
	if (!st)
		return ES_ENOMEM;
	pthread_mutex_init(&st->lock, NULL);
	for (int p = 0; p < 3; p++) {
		const int64_t *v;
		size_t n;
		if ((rc = es_node_attr_ints(c->node, names[p], &v, &n, c->err)))
			goto fail;
		if (n == 0)
			continue;
		bool seen[MAX_RANK] = { false };
		if (n < 2 || n > MAX_RANK) {
			rc = es_error_set(c->err, ES_EINVAL,
				"BatchMatMul node '%s': attribute %s has %zu values, expected 2 to %d",
				c->node->name, names[p], n, MAX_RANK);
			goto fail;
		}
		for (size_t i = 0; i < n; i++) {
			if (v[i] < 0 || v[i] >= (int64_t)n || seen[v[i]]) {
				rc = es_error_set(c->err, ES_EINVAL,
					"BatchMatMul node '%s': attribute %s is not a permutation of 0..%zu",
					c->node->name, names[p], n - 1);
				goto fail;
			}
			seen[v[i]] = true;
			st->perm[p][i] = v[i];
		}
		st->rank[p] = (int)n;
	}
	if ((rc = es_node_attr_float(c->node, "alpha", 1.0f, &st->alpha, c->err)))
		goto fail;
	if (!isfinite(st->alpha)) {
		rc = es_error_set(c->err, ES_EINVAL,
				  "BatchMatMul node '%s': attribute alpha is %g, expected a finite number",
				  c->node->name, (double)st->alpha);
		goto fail;
	}
	*state = st;
	return 0;
fail:
	bmm_fini(st);
	return rc;
}

/* Dense row-major strides of dims. */
static void dense_strides(int nd, const int64_t *dims, int64_t *str)
{
	int64_t s = 1;
	for (int d = nd - 1; d >= 0; d--) {
		str[d] = s;
		s *= dims[d] > 0 ? dims[d] : 1;
	}
}

/* The logical (permuted) view of t: dims and strides. */
static int view(es_kctx *k, const char *what, const es_tensor *t, const int64_t *perm,
		int rank, int64_t *dims, int64_t *str)
{
	int64_t phys[MAX_RANK];
	if (t->ndim < 1 || t->ndim > MAX_RANK)
		return es_kctx_fail(k, ES_ESHAPE, "input %s has rank %d, expected 1 to %d",
				    what, t->ndim, MAX_RANK);
	if (rank && rank != t->ndim)
		return es_kctx_fail(k, ES_ESHAPE,
				    "input %s has rank %d but its permutation has %d axes",
				    what, t->ndim, rank);
	dense_strides(t->ndim, t->dims, phys);
	for (int i = 0; i < t->ndim; i++) {
		int s = rank ? (int)perm[i] : i;
		dims[i] = t->dims[s];
		str[i] = phys[s];
	}
	return 0;
}

/*
 * Resolves the problem: the key (oneDNN's view, rank r) and the output's
 * physical dims (ny of them). Follows ONNX MatMul: 1-D operands are
 * promoted, batch axes broadcast.
 */
static int plan(es_kctx *k, const bmm_state *st, const es_tensor *A,
		const es_tensor *B, bmm_key *key, int64_t *ydims, int *ny)
{
	int64_t ad[MAX_RANK], as[MAX_RANK], bd[MAX_RANK], bs[MAX_RANK];
	int rc;
	if ((rc = view(k, "A", A, st->perm[0], st->rank[0], ad, as)) ||
	    (rc = view(k, "B", B, st->perm[1], st->rank[1], bd, bs)))
		return rc;
	int ra = A->ndim, rb = B->ndim;
	bool a1 = ra == 1, b1 = rb == 1;
	/* promote: A [K] -> [1, K]; B [K] -> [K, 1] */
	if (a1) {
		ad[1] = ad[0]; as[1] = as[0];
		ad[0] = 1; as[0] = 0;
		ra = 2;
	}
	if (b1) {
		bd[1] = 1; bs[1] = 0;
		rb = 2;
	}
	int r = ra > rb ? ra : rb;
	memset(key, 0, sizeof(*key));
	key->r = r;
	/* right-align both in rank r; missing leading axes are broadcast */
	for (int i = 0; i < r; i++) {
		int ia = i - (r - ra), ib = i - (r - rb);
		key->ad[i] = ia >= 0 ? ad[ia] : 1;
		key->as[i] = ia >= 0 ? as[ia] : 0;
		key->bd[i] = ib >= 0 ? bd[ib] : 1;
		key->bs[i] = ib >= 0 ? bs[ib] : 0;
	}
	const int64_t M = key->ad[r - 2], K = key->ad[r - 1], N = key->bd[r - 1];
	if (key->bd[r - 2] != K)
		return es_kctx_fail(k, ES_ESHAPE,
				    "A (after perm_a) has %lld columns but B (after perm_b) has %lld rows",
				    (long long)K, (long long)key->bd[r - 2]);
	for (int i = 0; i < r - 2; i++) {
		int64_t x = key->ad[i], y = key->bd[i];
		if (x != y && x != 1 && y != 1)
			return es_kctx_fail(k, ES_ESHAPE,
					    "batch axis %d: A has %lld, B has %lld; they do not broadcast",
					    i, (long long)x, (long long)y);
		key->yd[i] = x == 1 ? y : x;
		if (key->ad[i] == 1)
			key->as[i] = 0;
		if (key->bd[i] == 1)
			key->bs[i] = 0;
	}
	key->yd[r - 2] = M;
	key->yd[r - 1] = N;

	/* the result ONNX defines: rank r less the promoted axes */
	int64_t ld[MAX_RANK];
	int map[MAX_RANK]; /* logical result axis -> axis of key->yd */
	int nl = 0;
	for (int i = 0; i < r; i++) {
		if ((i == r - 2 && a1) || (i == r - 1 && b1))
			continue;
		ld[nl] = key->yd[i];
		map[nl++] = i;
	}
	if (st->rank[2] && st->rank[2] != nl)
		return es_kctx_fail(k, ES_ESHAPE,
				    "the product has rank %d but perm_y has %d axes", nl, st->rank[2]);
	int64_t ps[MAX_RANK];
	for (int i = 0; i < nl; i++)
		ydims[i] = ld[st->rank[2] ? st->perm[2][i] : i];
	dense_strides(nl, ydims, ps);
	for (int i = 0; i < r; i++)
		key->ys[i] = 0; /* promoted axes have size 1 */
	for (int i = 0; i < nl; i++) {
		int l = st->rank[2] ? (int)st->perm[2][i] : i; /* physical i holds logical l */
		key->ys[map[l]] = ps[i];
	}
	*ny = nl;
	key->alpha = st->alpha;
	key->threads = k->threads;
	return 0;
}

static bool prim_create(bmm_prim *e)
{
	dnnl_engine_t eng = es_dnnl_engine();
	const bmm_key *k = &e->key;
	dnnl_primitive_attr_t attr = NULL;
	dnnl_primitive_desc_t pd = NULL;
	dnnl_matmul_desc_t d;
	bool ok = false;

	/* axes of size 1 (broadcast, promoted) get stride 1: oneDNN checks
	 * strides, not what a single index reads */
	int64_t as[MAX_RANK], bs[MAX_RANK], ys[MAX_RANK];
	for (int i = 0; i < k->r; i++) {
		as[i] = k->ad[i] == 1 ? 1 : k->as[i];
		bs[i] = k->bd[i] == 1 ? 1 : k->bs[i];
		ys[i] = k->yd[i] == 1 ? 1 : k->ys[i];
	}
	if (!eng || es_dnnl_md_strided(&e->amd, k->r, k->ad, as, dnnl_f32) ||
	    es_dnnl_md_strided(&e->bmd, k->r, k->bd, bs, dnnl_f32) ||
	    es_dnnl_md_strided(&e->ymd, k->r, k->yd, ys, dnnl_f32) ||
	    dnnl_matmul_desc_init(&d, &e->amd, &e->bmd, NULL, &e->ymd) ||
	    dnnl_primitive_attr_create(&attr) ||
	    dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user))
		goto out;
	if (k->alpha != 1.0f && dnnl_primitive_attr_set_output_scales(attr, 1, 0, &k->alpha))
		goto out;
	if (dnnl_primitive_desc_create(&pd, &d, attr, eng, NULL))
		goto out;
	const char *impl = NULL;
	/* oneDNN's reference matmul is far slower than the loop below */
	if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) ||
	    !impl || !strncmp(impl, "ref", 3))
		goto out;
	const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
	if (smd) {
		e->smd = *smd;
		e->scratch_bytes = dnnl_memory_desc_get_size(smd);
	}
	if (dnnl_primitive_create(&e->prim, pd)) {
		e->prim = NULL;
		goto out;
	}
	ok = true;
out:
	if (pd)
		dnnl_primitive_desc_destroy(pd);
	if (attr)
		dnnl_primitive_attr_destroy(attr);
	return ok;
}

static bmm_prim *prim_get(bmm_state *st, const bmm_key *key)
{
	bmm_prim *e = NULL;
	int victim = 0;
	pthread_mutex_lock(&st->lock);
	st->clock++;
	for (int i = 0; i < CACHE_SLOTS; i++) {
		bmm_prim *c = st->cache[i];
		if (c && !memcmp(&c->key, key, sizeof(*key))) {
			e = c;
			break;
		}
		if (!c || (st->cache[victim] && c->last_use < st->cache[victim]->last_use))
			victim = i;
	}
	if (!e && (e = calloc(1, sizeof(*e)))) {
		e->key = *key;
		atomic_flag_clear(&e->busy);
		es_dnnl_set_threads(key->threads);
		e->use_ref = !prim_create(e);
		prim_put(st->cache[victim]);
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

static bool run_dnnl(es_kctx *k, bmm_prim *e, const float *a, const float *b, float *y)
{
	dnnl_stream_t strm = es_dnnl_stream();
	void *scratch = NULL;
	if (!strm || (e->scratch_bytes && !(scratch = es_kctx_scratch(k, e->scratch_bytes))))
		return false;
	dnnl_memory_t tmp[4] = { NULL };
	const void *tb[4] = { NULL };
	bool mine = !atomic_flag_test_and_set(&e->busy);
	dnnl_memory_t *mem = mine ? e->mem : tmp;
	const void **bound = mine ? e->bound : tb;
	dnnl_exec_arg_t args[4];
	int n = 0;
	dnnl_status_t s;
	if ((s = es_dnnl_bind(&mem[0], &bound[0], &e->amd, a)) ||
	    (s = es_dnnl_bind(&mem[1], &bound[1], &e->bmd, b)) ||
	    (s = es_dnnl_bind(&mem[2], &bound[2], &e->ymd, y)) ||
	    (e->scratch_bytes && (s = es_dnnl_bind(&mem[3], &bound[3], &e->smd, scratch))))
		goto out;
	args[n++] = (dnnl_exec_arg_t){ DNNL_ARG_SRC, mem[0] };
	args[n++] = (dnnl_exec_arg_t){ DNNL_ARG_WEIGHTS, mem[1] };
	args[n++] = (dnnl_exec_arg_t){ DNNL_ARG_DST, mem[2] };
	if (e->scratch_bytes)
		args[n++] = (dnnl_exec_arg_t){ DNNL_ARG_SCRATCHPAD, mem[3] };
	es_dnnl_set_threads(k->threads);
	if (!(s = dnnl_primitive_execute(e->prim, strm, n, args)))
		s = dnnl_stream_wait(strm);
out:
	if (!mine || s) {
		for (int i = 0; i < 4; i++) {
			if (mem[i])
				dnnl_memory_destroy(mem[i]);
			mem[i] = NULL;
			bound[i] = NULL;
		}
	}
	if (mine)
		atomic_flag_clear(&e->busy);
	return s == dnnl_success;
}

/* The plain loop over the key's strides. */
static void run_ref(const bmm_key *key, const float *a, const float *b, float *y,
		    int threads)
{
	const int r = key->r;
	int64_t batch = 1;
	for (int i = 0; i < r - 2; i++)
		batch *= key->yd[i];
	const int64_t M = key->yd[r - 2], N = key->yd[r - 1], K = key->ad[r - 1];
	ES_PARALLEL_FOR(threads, (double)batch * M * N * K > 65536.0, t, batch * M, {
		int64_t bi = t / M, m = t % M, rem = bi;
		int64_t oa = 0, ob = 0, oy = 0;
		for (int i = r - 3; i >= 0; i--) {
			int64_t c = rem % key->yd[i];
			rem /= key->yd[i];
			oa += c * key->as[i];
			ob += c * key->bs[i];
			oy += c * key->ys[i];
		}
		const float *ar = a + oa + m * key->as[r - 2];
		float *yr = y + oy + m * key->ys[r - 2];
		for (int64_t n = 0; n < N; n++) {
			const float *bc = b + ob + n * key->bs[r - 1];
			double acc = 0.0;
			for (int64_t kk = 0; kk < K; kk++)
				acc += (double)ar[kk * key->as[r - 1]] * (double)bc[kk * key->bs[r - 2]];
			yr[n * key->ys[r - 1]] = (float)(acc * key->alpha);
		}
	});
}

/*
 * Moves a strided [batch..., rows, cols] view (dims over r axes: the batch
 * axes given by bdims, a size-1 axis with stride 0 repeating) to or from
 * dense memory laid out as [batch, rows, cols]: gather = true copies the
 * view into dense, false copies dense into the view.
 */
static void strided_copy(const float *view_src, float *view_dst, float *dense,
			 int r, const int64_t *bdims, const int64_t *str, int64_t rows,
			 int64_t cols, bool gather, int threads)
{
	int64_t batch = 1;
	for (int i = 0; i < r - 2; i++)
		batch *= bdims[i];
	const int64_t rs = str[r - 2], cs = str[r - 1];
	ES_PARALLEL_FOR(threads, batch * rows * cols > 65536, t, batch * rows, {
		int64_t bi = t / rows, i = t % rows, rem = bi, off = 0;
		for (int d = r - 3; d >= 0; d--) {
			off += (rem % bdims[d]) * str[d];
			rem /= bdims[d];
		}
		off += i * rs;
		float *dn = dense + t * cols;
		if (gather && cs == 1)
			memcpy(dn, view_src + off, (size_t)cols * sizeof(float));
		else if (gather)
			for (int64_t j = 0; j < cols; j++)
				dn[j] = view_src[off + j * cs];
		else if (cs == 1)
			memcpy(view_dst + off, dn, (size_t)cols * sizeof(float));
		else
			for (int64_t j = 0; j < cols; j++)
				view_dst[off + j * cs] = dn[j];
	});
}

/* Row-major with a row stride (at least cols): rows x cols at i * rs + j * cs. */
static bool rows_strided(int64_t rows, int64_t cols, int64_t rs, int64_t cs, int64_t *ld)
{
	if (cols != 1 && cs != 1)
		return false;
	*ld = rows == 1 ? cols : rs;
	return *ld >= cols;
}

/*
 * The product as one es_sgemm_strided call (oneDNN matmul primitives
 * cached per thread: nothing allocated in steady state). Each operand is
 * used in place when its matrices are row-major with a row stride and its
 * batches one stride apart (one batch axis, or none); otherwise it is
 * first copied into dense scratch, as is a transposed one: the strided
 * transposed layouts make oneDNN take an implementation that allocates on
 * every call. Y likewise, copied out after. False when scratch runs out.
 */
static bool run_gemm(es_kctx *k, const bmm_key *key, const float *a, const float *b,
		     float *y, int *failed)
{
	const int r = key->r;
	const int64_t M = key->yd[r - 2], N = key->yd[r - 1], K = key->ad[r - 1];
	int64_t batch = 1;
	for (int i = 0; i < r - 2; i++)
		batch *= key->yd[i];
	int64_t lda, ldb, ldc, sa = 0, sb = 0, sy = 0;
	bool da = r <= 3 && rows_strided(M, K, key->as[r - 2], key->as[r - 1], &lda);
	bool db = r <= 3 && rows_strided(K, N, key->bs[r - 2], key->bs[r - 1], &ldb);
	bool dy = r <= 3 && rows_strided(M, N, key->ys[r - 2], key->ys[r - 1], &ldc);
	if (r == 3) {
		sa = key->as[0];
		sb = key->bs[0];
		sy = key->ys[0];
	}
	/* dense copies hold batch matrices of the output's batch axes; an
	 * operand broadcast over them can make that more than it has */
	int64_t na, nb, ny;
	if (__builtin_mul_overflow(batch, M * K, &na) ||
	    __builtin_mul_overflow(batch, K * N, &nb) ||
	    __builtin_mul_overflow(batch, M * N, &ny))
		return false;
	const float *ap = a, *bp = b;
	float *yp = y;
	if (!da) {
		float *t = es_op_scratch(k, na, sizeof(float));
		if (!t)
			return false;
		strided_copy(a, NULL, t, r, key->yd, key->as, M, K, true, k->threads);
		ap = t, lda = K, sa = M * K;
	}
	if (!db) {
		float *t = es_op_scratch(k, nb, sizeof(float));
		if (!t)
			return false;
		strided_copy(b, NULL, t, r, key->yd, key->bs, K, N, true, k->threads);
		bp = t, ldb = N, sb = K * N;
	}
	if (!dy) {
		if (!(yp = es_op_scratch(k, ny, sizeof(float))))
			return false;
		ldc = N, sy = M * N;
	}
	*failed = es_sgemm_strided(false, false, M, N, K, key->alpha, ap, lda, sa, bp, ldb, sb,
				   0.0f, yp, ldc, sy, batch, k->threads) != 0;
	if (!dy && !*failed)
		strided_copy(NULL, y, yp, r, key->yd, key->ys, M, N, false, k->threads);
	return true;
}

static int bmm_run(es_kctx *k)
{
	bmm_state *st = k->state;
	const es_tensor *A = es_kin(k, 0), *B = es_kin(k, 1);
	bmm_key key;
	int64_t ydims[MAX_RANK];
	int ny = 0, rc;

	if (!A || !B)
		return es_kctx_fail(k, ES_EINVAL, "inputs A and B are required");
	if (A->dtype != ES_DT_FLOAT || B->dtype != ES_DT_FLOAT)
		return es_kctx_fail(k, ES_ETYPE, "A is %s and B is %s, both must be float",
				    es_dtype_name(A->dtype), es_dtype_name(B->dtype));
	if ((rc = plan(k, st, A, B, &key, ydims, &ny)))
		return rc;
	if ((rc = es_kctx_output(k, 0, ES_DT_FLOAT, ny, ydims)))
		return rc;
	float *y = k->outputs[0]->data;
	int64_t numel = es_tensor_numel(k->outputs[0]);
	if (numel == 0)
		return 0;
	if (key.ad[key.r - 1] == 0) { /* K = 0: the product is zeros */
		memset(y, 0, (size_t)numel * sizeof(float));
		return 0;
	}
	int failed = 0;
	if (run_gemm(k, &key, A->data, B->data, y, &failed) && !failed)
		return 0;
	bmm_prim *e = prim_get(st, &key);
	bool done = e && !e->use_ref && run_dnnl(k, e, A->data, B->data, y);
	prim_put(e);
	if (!done)
		run_ref(&key, A->data, B->data, y, k->threads);
	return 0;
}

static const es_op_def defs[] = {
	{
		.domain = ES_DOMAIN, .op_type = "BatchMatMul", .since = 1,
		.min_inputs = 2, .max_inputs = 2, .min_outputs = 1, .max_outputs = 1,
		.types = ES_T(ES_DT_FLOAT), .same_type_inputs = 0x2, .out_type = ES_OUT_SAME,
		.init = bmm_init, .fini = bmm_fini, .run = bmm_run,
	},
};

const es_op_table es_ops_bmm = { defs, sizeof(defs) / sizeof(defs[0]) };
