/*
 * Gemm, MatMul, the softmax family and the norms, checked against plain
 * reference loops written here on random shapes, plus es_sgemm itself and
 * the ONNX node test cases of these ops when Debian's libonnx-testdata is
 * installed.
 *
 * The models under tests/data/ops/gemm/ come from gen_models.py there; most
 * have inputs of unknown rank so one model serves every random shape.
 */
#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "base/alloc.h"
#include "base/fp16.h"
#include "edgeserve/engine.h"
#include "engine/kernels/sgemm.h"

#define NODE_DATA "/usr/share/libonnx-testdata/data"
#define MAX_IO 5

/* ---- random numbers (xorshift64*, fixed seed: failures reproduce) ------- */

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint64_t rnd(void)
{
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 0x2545F4914F6CDD1Dull;
}

/* uniform in [lo, hi] */
static int64_t irand(int64_t lo, int64_t hi)
{
	return lo + (int64_t)(rnd() % (uint64_t)(hi - lo + 1));
}

/* uniform in [-1, 1) */
static double frand(void)
{
	return (double)(rnd() >> 11) / (double)(1ull << 52) - 1.0;
}

/* ---- tensors of any dtype as doubles ------------------------------------ */

static double get_d(const es_tensor *t, int64_t i)
{
	switch (t->dtype) {
	case ES_DT_FLOAT: return ((const float *)t->data)[i];
	case ES_DT_DOUBLE: return ((const double *)t->data)[i];
	case ES_DT_FLOAT16: return es_half_to_float(((const uint16_t *)t->data)[i]);
	case ES_DT_BFLOAT16: return es_bf16_to_float(((const uint16_t *)t->data)[i]);
	case ES_DT_INT32: return ((const int32_t *)t->data)[i];
	case ES_DT_INT64: return (double)((const int64_t *)t->data)[i];
	case ES_DT_UINT32: return ((const uint32_t *)t->data)[i];
	case ES_DT_UINT64: return (double)((const uint64_t *)t->data)[i];
	default: fail_msg("get_d: type %s", es_dtype_name(t->dtype));
	}
	return 0;
}

static void set_d(es_tensor *t, int64_t i, double v)
{
	switch (t->dtype) {
	case ES_DT_FLOAT: ((float *)t->data)[i] = (float)v; break;
	case ES_DT_DOUBLE: ((double *)t->data)[i] = v; break;
	case ES_DT_FLOAT16: ((uint16_t *)t->data)[i] = es_float_to_half((float)v); break;
	case ES_DT_BFLOAT16: ((uint16_t *)t->data)[i] = es_float_to_bf16((float)v); break;
	case ES_DT_INT32: ((int32_t *)t->data)[i] = (int32_t)v; break;
	case ES_DT_INT64: ((int64_t *)t->data)[i] = (int64_t)v; break;
	case ES_DT_UINT32: ((uint32_t *)t->data)[i] = (uint32_t)v; break;
	case ES_DT_UINT64: ((uint64_t *)t->data)[i] = (uint64_t)v; break;
	default: fail_msg("set_d: type %s", es_dtype_name(t->dtype));
	}
}

static bool is_int(es_dtype dt)
{
	return dt == ES_DT_INT32 || dt == ES_DT_INT64 || dt == ES_DT_UINT32 ||
	       dt == ES_DT_UINT64;
}

/* Allocates t with random values: small integers for integer types,
 * [-scale, scale) otherwise. */
static void make(es_tensor *t, es_dtype dt, int ndim, const int64_t *dims,
		 double scale)
{
	es_error err = { 0 };
	memset(t, 0, sizeof(*t));
	assert_int_equal(es_tensor_alloc(t, dt, ndim, dims, &err), 0);
	int64_t n = es_tensor_numel(t);
	for (int64_t i = 0; i < n; i++) {
		double v;
		if (dt == ES_DT_UINT32 || dt == ES_DT_UINT64)
			v = (double)irand(0, 9);
		else if (is_int(dt))
			v = (double)irand(-9, 9);
		else
			v = frand() * scale;
		set_d(t, i, v);
	}
}

static const char *shape_s(const int64_t *dims, int ndim)
{
	static char buf[8][128];
	static int slot;
	char *b = buf[slot++ % 8];
	size_t pos = (size_t)snprintf(b, 128, "[");
	for (int d = 0; d < ndim; d++)
		pos += (size_t)snprintf(b + pos, 128 - pos, "%s%lld", d ? "," : "",
					(long long)dims[d]);
	snprintf(b + pos, 128 - pos, "]");
	return b;
}

/* Checks |got - ref| <= atol + rtol * |ref| everywhere (NaN only matches
 * NaN). */
static void check_close(const es_tensor *got, const double *ref, int64_t n,
			double rtol, double atol, const char *what)
{
	assert_int_equal(es_tensor_numel(got), n);
	for (int64_t i = 0; i < n; i++) {
		double g = get_d(got, i), r = ref[i];
		if (isnan(r) && isnan(g))
			continue;
		if (!(fabs(g - r) <= atol + rtol * fabs(r)))
			fail_msg("%s: element %lld is %.9g, expected %.9g", what,
				 (long long)i, g, r);
	}
}

/* ---- running a model ----------------------------------------------------- */

static char path_buf[4096];

static const char *model_path(const char *name)
{
	snprintf(path_buf, sizeof(path_buf), "%s/ops/gemm/%s.onnx",
		 ES_TEST_DATA_DIR, name);
	return path_buf;
}

/*
 * Loads `path`, runs it once on `in` with `threads` threads and copies the
 * outputs into `out` (caller frees each with es_tensor_free_data). Returns
 * the load or run status; err holds the message.
 */
static int run_path(const char *path, const es_tensor *in, size_t n_in,
		    es_tensor *out, size_t n_out, int threads, es_error *err)
{
	es_model *m = NULL;
	es_session *s = NULL;
	es_tensor res[MAX_IO];
	memset(err, 0, sizeof(*err));
	int rc = es_model_load(path, NULL, &m, err);
	if (rc)
		return rc;
	es_session_options so = { .threads = threads };
	if ((rc = es_session_create(m, &so, &s, err)))
		goto out_model;
	assert_true(es_model_num_outputs(m) <= MAX_IO);
	if ((rc = es_session_run(s, in, n_in, res, err)))
		goto out_session;
	for (size_t i = 0; i < n_out && i < es_model_num_outputs(m); i++) {
		es_error e2 = { 0 };
		assert_int_equal(es_tensor_alloc(&out[i], res[i].dtype, res[i].ndim,
						 res[i].dims, &e2), 0);
		memcpy(out[i].data, res[i].data, res[i].nbytes);
	}
out_session:
	es_session_destroy(s);
out_model:
	es_model_release(m);
	return rc;
}

static int run_model(const char *name, const es_tensor *in, size_t n_in,
		     es_tensor *out, size_t n_out, es_error *err)
{
	/* alternate thread counts so both code paths see every test */
	static int calls;
	return run_path(model_path(name), in, n_in, out, n_out,
			1 + (calls++ & 1), err);
}

static void run_ok(const char *name, const es_tensor *in, size_t n_in,
		   es_tensor *out, size_t n_out)
{
	es_error err;
	int rc = run_model(name, in, n_in, out, n_out, &err);
	if (rc)
		fail_msg("%s: run failed (%d): %s", name, rc, err.msg);
}

/* Runs expecting failure `code` with every fragment in the message. */
static void run_fail(const char *name, const es_tensor *in, size_t n_in,
		     int code, ...)
{
	es_error err;
	es_tensor out[MAX_IO];
	int rc = run_model(name, in, n_in, out, 0, &err);
	if (rc != code)
		fail_msg("%s: expected code %d, got %d (%s)", name, code, rc, err.msg);
	va_list ap;
	va_start(ap, code);
	const char *frag;
	while ((frag = va_arg(ap, const char *)))
		if (!strstr(err.msg, frag))
			fail_msg("%s: message '%s' lacks '%s'", name, err.msg, frag);
	va_end(ap);
}

static void free_all(es_tensor *t, size_t n)
{
	for (size_t i = 0; i < n; i++)
		es_tensor_free_data(&t[i]);
}

static double *ref_alloc(int64_t n)
{
	double *r = calloc((size_t)(n > 0 ? n : 1), sizeof(double));
	assert_non_null(r);
	return r;
}

/* Flat index into `small` (trailing-aligned numpy broadcast) of element e
 * of a tensor shaped dims[0..r). */
static int64_t bcast_index(const es_tensor *small, const int64_t *dims, int r,
			   int64_t e)
{
	int64_t idx = 0, stride = 1;
	for (int d = r - 1; d >= 0; d--) {
		int64_t coord = e % dims[d];
		e /= dims[d];
		int sd = d - (r - small->ndim);
		if (sd < 0)
			continue;
		if (small->dims[sd] != 1)
			idx += coord * stride;
		stride *= small->dims[sd];
	}
	return idx;
}

/* ---- es_sgemm --------------------------------------------------------------- */

static void ref_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K,
		     double alpha, const float *A, int64_t lda, const float *B,
		     int64_t ldb, double beta, const float *C, int64_t ldc,
		     double *out)
{
	for (int64_t i = 0; i < M; i++)
		for (int64_t j = 0; j < N; j++) {
			double acc = 0;
			for (int64_t k = 0; k < K; k++)
				acc += (double)(ta ? A[k * lda + i] : A[i * lda + k]) *
				       (double)(tb ? B[j * ldb + k] : B[k * ldb + j]);
			out[i * ldc + j] = alpha * acc +
					   (beta == 0 ? 0 : beta * C[i * ldc + j]);
		}
}

static float *frand_buf(int64_t n)
{
	float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
	assert_non_null(p);
	for (int64_t i = 0; i < n; i++)
		p[i] = (float)frand();
	return p;
}

static void test_sgemm_random(void **state)
{
	(void)state;
	static const int64_t special[] = { 0, 1, 1, 2, 3, 7, 16, 17, 33, 64, 65 };
	for (int iter = 0; iter < 300; iter++) {
		bool ta = rnd() & 1, tb = rnd() & 1;
		int64_t M = special[irand(0, 10)], N = special[irand(0, 10)];
		int64_t K = special[irand(0, 10)];
		if (iter % 3 == 0) { /* larger, uneven sizes */
			M = irand(1, 150);
			N = irand(1, 150);
			K = irand(1, 150);
		}
		int64_t lda = (ta ? M : K) + irand(0, 3);
		int64_t ldb = (tb ? K : N) + irand(0, 3);
		int64_t ldc = N + irand(0, 3);
		if (lda < 1) lda = 1;
		if (ldb < 1) ldb = 1;
		if (ldc < 1) ldc = 1;
		double alpha = iter % 5 == 0 ? 1.0 : frand() * 2;
		double beta = iter % 4 == 0 ? 0.0 : iter % 4 == 1 ? 1.0 : frand();
		float *A = frand_buf((ta ? K : M) * lda);
		float *B = frand_buf((tb ? N : K) * ldb);
		float *C = frand_buf(M * ldc);
		double *ref = ref_alloc(M * ldc);
		for (int64_t i = 0; i < M * ldc; i++)
			ref[i] = C[i]; /* padding must stay untouched */
		if (beta == 0) /* with beta 0, C is never read */
			for (int64_t i = 0; i < M; i++)
				for (int64_t j = 0; j < N; j++)
					C[i * ldc + j] = NAN;
		ref_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, ref);
		int rc = es_sgemm(ta, tb, M, N, K, (float)alpha, A, lda, B, ldb,
				  (float)beta, C, ldc);
		assert_int_equal(rc, 0);
		for (int64_t i = 0; i < M * ldc; i++) {
			double tol = 1e-5 * (double)(K + 1) + 1e-6;
			if (!(fabs(C[i] - ref[i]) <= tol))
				fail_msg("sgemm ta=%d tb=%d M=%lld N=%lld K=%lld: C[%lld] = %g, expected %g",
					 ta, tb, (long long)M, (long long)N, (long long)K,
					 (long long)i, C[i], ref[i]);
		}
		free(A);
		free(B);
		free(C);
		free(ref);
	}
}

static void test_sgemm_strided(void **state)
{
	(void)state;
	for (int iter = 0; iter < 40; iter++) {
		int64_t batch = irand(1, 9), M = irand(1, 40), N = irand(1, 40);
		int64_t K = irand(1, 40);
		if (iter % 4 == 0) { /* big enough to hand each GEMM to oneDNN */
			M = 80;
			N = 70;
			K = 90;
		}
		bool share_a = iter % 3 == 0, share_b = iter % 3 == 1;
		int64_t sa = share_a ? 0 : M * K, sb = share_b ? 0 : K * N;
		float *A = frand_buf((share_a ? 1 : batch) * M * K);
		float *B = frand_buf((share_b ? 1 : batch) * K * N);
		float *C = frand_buf(batch * M * N);
		double *ref = ref_alloc(batch * M * N);
		for (int64_t b = 0; b < batch; b++)
			ref_gemm(false, false, M, N, K, 1.0, A + b * sa, K, B + b * sb,
				 N, 0.5, C + b * M * N, N, ref + b * M * N);
		assert_int_equal(es_sgemm_strided(false, false, M, N, K, 1.0f, A, K, sa,
						  B, N, sb, 0.5f, C, N, M * N, batch,
						  1 + iter % 2), 0);
		for (int64_t i = 0; i < batch * M * N; i++)
			assert_true(fabs(C[i] - ref[i]) <= 1e-5 * (double)K + 1e-6);
		free(A);
		free(B);
		free(C);
		free(ref);
	}
}

static void test_sgemm_bad_args(void **state)
{
	(void)state;
	float a[4] = { 1, 2, 3, 4 }, c[4] = { 0 };
	assert_int_equal(es_sgemm(false, false, -1, 2, 2, 1, a, 2, a, 2, 0, c, 2), ES_EINVAL);
	assert_int_equal(es_sgemm(false, false, 2, 2, 2, 1, a, 1, a, 2, 0, c, 2), ES_EINVAL);
	assert_int_equal(es_sgemm(false, true, 2, 2, 2, 1, a, 2, a, 1, 0, c, 2), ES_EINVAL);
	assert_int_equal(es_sgemm(false, false, 2, 2, 2, 1, a, 2, a, 2, 0, c, 1), ES_EINVAL);
	/* empty products are fine */
	assert_int_equal(es_sgemm(false, false, 0, 2, 2, 1, a, 2, a, 2, 0, c, 2), 0);
	assert_int_equal(es_sgemm(false, false, 2, 2, 0, 1, a, 0, a, 2, 0, c, 2), 0);
	for (int i = 0; i < 4; i++)
		assert_true(c[i] == 0.0f);
	assert_int_equal(es_sgemm_strided(false, false, 2, 2, 2, 1, a, 2, 0, a, 2,
					  0, 0, c, 2, -1, 2, 1), ES_EINVAL);
}

/* ---- MatMul ------------------------------------------------------------- */

/* numpy matmul in double, integers wrapped to the type's width. */
static double *ref_matmul(const es_tensor *A, const es_tensor *B, int *ondim,
			  int64_t *odims)
{
	int ra = A->ndim, rb = B->ndim;
	int64_t M = ra == 1 ? 1 : A->dims[ra - 2], K = A->dims[ra - 1];
	int64_t N = rb == 1 ? 1 : B->dims[rb - 1];
	int na = ra > 2 ? ra - 2 : 0, nb = rb > 2 ? rb - 2 : 0;
	int nbat = na > nb ? na : nb;
	int64_t bd[8], batch = 1;
	for (int d = 0; d < nbat; d++) {
		int ia = d - (nbat - na), ib = d - (nbat - nb);
		int64_t da = ia >= 0 ? A->dims[ia] : 1, db = ib >= 0 ? B->dims[ib] : 1;
		bd[d] = da > db ? da : db;
		batch *= bd[d];
	}
	*ondim = 0;
	for (int d = 0; d < nbat; d++)
		odims[(*ondim)++] = bd[d];
	if (ra > 1)
		odims[(*ondim)++] = M;
	if (rb > 1)
		odims[(*ondim)++] = N;
	double *out = ref_alloc(batch * M * N);
	for (int64_t b = 0; b < batch; b++) {
		/* unravel b over the broadcast batch dims */
		int64_t coord[8], rem = b;
		for (int d = nbat - 1; d >= 0; d--) {
			coord[d] = rem % bd[d];
			rem /= bd[d];
		}
		int64_t oa = 0, ob = 0, sa = 1, sb = 1;
		for (int d = nbat - 1; d >= 0; d--) {
			int ia = d - (nbat - na), ib = d - (nbat - nb);
			if (ia >= 0) {
				oa += (A->dims[ia] == 1 ? 0 : coord[d]) * sa;
				sa *= A->dims[ia];
			}
			if (ib >= 0) {
				ob += (B->dims[ib] == 1 ? 0 : coord[d]) * sb;
				sb *= B->dims[ib];
			}
		}
		for (int64_t i = 0; i < M; i++)
			for (int64_t j = 0; j < N; j++) {
				double acc = 0;
				uint64_t iacc = 0;
				for (int64_t k = 0; k < K; k++) {
					double x = get_d(A, oa * M * K + i * K + k);
					double y = get_d(B, ob * K * N + k * N + j);
					acc += x * y;
					iacc += (uint64_t)(int64_t)x * (uint64_t)(int64_t)y;
				}
				double v = acc;
				if (A->dtype == ES_DT_INT32)
					v = (int32_t)(uint32_t)iacc;
				else if (A->dtype == ES_DT_UINT32)
					v = (uint32_t)iacc;
				else if (is_int(A->dtype))
					v = (double)(int64_t)iacc;
				out[b * M * N + i * N + j] = v;
			}
	}
	return out;
}

/* Random A, B shapes of the given ranks whose batch dims broadcast. */
static void matmul_shapes(int ra, int rb, int64_t *da, int64_t *db)
{
	int64_t M = irand(1, 12), K = irand(1, 12), N = irand(1, 12);
	switch (rnd() % 4) {
	case 0: M = 1; break;
	case 1: K = 1; break;
	case 2: N = 1; break;
	default: break;
	}
	int na = ra > 2 ? ra - 2 : 0, nb = rb > 2 ? rb - 2 : 0;
	int nbat = na > nb ? na : nb;
	int64_t bd[8];
	for (int d = 0; d < nbat; d++)
		bd[d] = irand(1, 4);
	for (int d = 0; d < na; d++)
		da[d] = rnd() % 3 == 0 ? 1 : bd[d + nbat - na];
	for (int d = 0; d < nb; d++)
		db[d] = rnd() % 3 == 0 ? 1 : bd[d + nbat - nb];
	if (ra == 1) {
		da[0] = K;
	} else {
		da[ra - 2] = M;
		da[ra - 1] = K;
	}
	if (rb == 1) {
		db[0] = K;
	} else {
		db[rb - 2] = K;
		db[rb - 1] = N;
	}
}

static void matmul_case(const char *model, es_dtype dt, int ra, int rb,
			const int64_t *da, const int64_t *db, double rtol,
			double atol)
{
	es_tensor in[2], out[1];
	make(&in[0], dt, ra, da, 1.0);
	make(&in[1], dt, rb, db, 1.0);
	int ondim;
	int64_t odims[8];
	double *ref = ref_matmul(&in[0], &in[1], &ondim, odims);
	run_ok(model, in, 2, out, 1);
	char what[256];
	snprintf(what, sizeof(what), "%s A %s B %s", model, shape_s(da, ra),
		 shape_s(db, rb));
	assert_int_equal(out[0].dtype, dt);
	if (out[0].ndim != ondim || memcmp(out[0].dims, odims, sizeof(int64_t) * (size_t)ondim))
		fail_msg("%s: output shape %s, expected %s", what,
			 shape_s(out[0].dims, out[0].ndim), shape_s(odims, ondim));
	check_close(&out[0], ref, es_tensor_numel(&out[0]), rtol, atol, what);
	free(ref);
	free_all(in, 2);
	free_all(out, 1);
}

static void test_matmul_float_random(void **state)
{
	(void)state;
	for (int ra = 1; ra <= 5; ra++)
		for (int rb = 1; rb <= 5; rb++)
			for (int rep = 0; rep < 6; rep++) {
				int64_t da[8], db[8];
				matmul_shapes(ra, rb, da, db);
				matmul_case("matmul_float", ES_DT_FLOAT, ra, rb, da, db,
					    1e-5, 1e-5);
			}
	/* the three float paths: one tall GEMM, strided, general broadcast */
	const int64_t a1[] = { 3, 4, 5, 6 }, b1[] = { 6, 7 };
	matmul_case("matmul_float", ES_DT_FLOAT, 4, 2, a1, b1, 1e-5, 1e-5);
	const int64_t a2[] = { 5, 6 }, b2[] = { 2, 3, 6, 7 };
	matmul_case("matmul_float", ES_DT_FLOAT, 2, 4, a2, b2, 1e-5, 1e-5);
	const int64_t a3[] = { 2, 1, 5, 6 }, b3[] = { 3, 6, 7 };
	matmul_case("matmul_float", ES_DT_FLOAT, 4, 3, a3, b3, 1e-5, 1e-5);
	const int64_t a4[] = { 64, 100, 130 }, b4[] = { 64, 130, 90 };
	matmul_case("matmul_float", ES_DT_FLOAT, 3, 3, a4, b4, 1e-5, 1e-5);
	const int64_t a5[] = { 130 }, b5[] = { 130 }; /* dot product, scalar out */
	matmul_case("matmul_float_v1", ES_DT_FLOAT, 1, 1, a5, b5, 1e-5, 1e-5);
}

static void test_matmul_types(void **state)
{
	(void)state;
	static const struct {
		const char *model;
		es_dtype dt;
		double rtol, atol;
	} types[] = {
		{ "matmul_double", ES_DT_DOUBLE, 1e-12, 1e-12 },
		{ "matmul_float16", ES_DT_FLOAT16, 5e-3, 5e-3 },
		{ "matmul_bfloat16", ES_DT_BFLOAT16, 2e-2, 2e-2 },
		{ "matmul_int32", ES_DT_INT32, 0, 0 },
		{ "matmul_int64", ES_DT_INT64, 0, 0 },
		{ "matmul_uint32", ES_DT_UINT32, 0, 0 },
		{ "matmul_uint64", ES_DT_UINT64, 0, 0 },
	};
	for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++)
		for (int rep = 0; rep < 12; rep++) {
			int ra = (int)irand(1, 4), rb = (int)irand(1, 4);
			int64_t da[8], db[8];
			matmul_shapes(ra, rb, da, db);
			matmul_case(types[t].model, types[t].dt, ra, rb, da, db,
				    types[t].rtol, types[t].atol);
		}
}

static void test_matmul_int_wraps(void **state)
{
	(void)state;
	es_tensor in[2], out[1];
	const int64_t d[] = { 1, 2 }, e[] = { 2, 1 };
	make(&in[0], ES_DT_INT32, 2, d, 0);
	make(&in[1], ES_DT_INT32, 2, e, 0);
	int32_t *a = in[0].data, *b = in[1].data;
	a[0] = a[1] = INT32_MAX;
	b[0] = b[1] = 2;
	run_ok("matmul_int32", in, 2, out, 1);
	/* 4 * INT32_MAX wraps to -4 */
	assert_int_equal(((int32_t *)out[0].data)[0], -4);
	free_all(in, 2);
	free_all(out, 1);
}

static void test_matmul_errors(void **state)
{
	(void)state;
	es_tensor in[2];
	const int64_t d1[] = { 2, 3 }, d2[] = { 4, 5 };
	make(&in[0], ES_DT_FLOAT, 2, d1, 1);
	make(&in[1], ES_DT_FLOAT, 2, d2, 1);
	run_fail("matmul_float", in, 2, ES_ESHAPE, "[2,3]", "[4,5]", "3", "4", NULL);
	free_all(in, 2);

	const int64_t d3[] = { 2, 2, 3 }, d4[] = { 3, 3, 4 };
	make(&in[0], ES_DT_FLOAT, 3, d3, 1);
	make(&in[1], ES_DT_FLOAT, 3, d4, 1);
	run_fail("matmul_float", in, 2, ES_ESHAPE, "[2,2,3]", "[3,3,4]", "broadcast", NULL);
	free_all(in, 2);

	make(&in[0], ES_DT_FLOAT, 0, NULL, 1);
	make(&in[1], ES_DT_FLOAT, 2, d2, 1);
	run_fail("matmul_float", in, 2, ES_ESHAPE, "rank", NULL);
	free_all(in, 2);

	/* empty dims give empty results, K = 0 gives zeros */
	const int64_t e1[] = { 0, 3 }, e2[] = { 3, 4 }, z1[] = { 2, 0 }, z2[] = { 0, 3 };
	es_tensor out[1];
	make(&in[0], ES_DT_FLOAT, 2, e1, 1);
	make(&in[1], ES_DT_FLOAT, 2, e2, 1);
	run_ok("matmul_float", in, 2, out, 1);
	assert_int_equal(out[0].dims[0], 0);
	assert_int_equal(out[0].dims[1], 4);
	free_all(in, 2);
	free_all(out, 1);
	make(&in[0], ES_DT_FLOAT, 2, z1, 1);
	make(&in[1], ES_DT_FLOAT, 2, z2, 1);
	run_ok("matmul_float", in, 2, out, 1);
	assert_int_equal(es_tensor_numel(&out[0]), 6);
	for (int i = 0; i < 6; i++)
		assert_true(((float *)out[0].data)[i] == 0.0f);
	free_all(in, 2);
	free_all(out, 1);
}

/* ---- Gemm --------------------------------------------------------------- */

static void gemm_case(const char *model, es_dtype dt, bool ta, bool tb,
		      double alpha, double beta, int64_t M, int64_t N,
		      int64_t K, int c_ndim, const int64_t *c_dims, double rtol,
		      double atol)
{
	es_tensor in[3], out[1];
	int64_t da[2] = { ta ? K : M, ta ? M : K }, db[2] = { tb ? N : K, tb ? K : N };
	make(&in[0], dt, 2, da, 1.0);
	make(&in[1], dt, 2, db, 1.0);
	size_t n_in = 2;
	if (c_ndim >= 0) {
		make(&in[2], dt, c_ndim, c_dims, 1.0);
		n_in = 3;
	}
	double *ref = ref_alloc(M * N);
	int64_t yd[2] = { M, N };
	for (int64_t i = 0; i < M; i++)
		for (int64_t j = 0; j < N; j++) {
			double acc = 0;
			for (int64_t k = 0; k < K; k++)
				acc += get_d(&in[0], ta ? k * M + i : i * K + k) *
				       get_d(&in[1], tb ? j * K + k : k * N + j);
			double c = n_in == 3 ? get_d(&in[2], bcast_index(&in[2], yd, 2, i * N + j)) : 0;
			ref[i * N + j] = alpha * acc + beta * c;
		}
	run_ok(model, in, n_in, out, 1);
	char what[256];
	snprintf(what, sizeof(what), "%s M=%lld N=%lld K=%lld C %s", model,
		 (long long)M, (long long)N, (long long)K,
		 c_ndim >= 0 ? shape_s(c_dims, c_ndim) : "none");
	assert_int_equal(out[0].ndim, 2);
	assert_int_equal(out[0].dims[0], M);
	assert_int_equal(out[0].dims[1], N);
	check_close(&out[0], ref, M * N, rtol, atol, what);
	free(ref);
	free_all(in, n_in);
	free_all(out, 1);
}

/* A random C shape that broadcasts to [M, N]. */
static int c_shape(int64_t M, int64_t N, int64_t *cd)
{
	switch (rnd() % 7) {
	case 0: return 0;
	case 1: cd[0] = 1; return 1;
	case 2: cd[0] = N; return 1;
	case 3: cd[0] = M; cd[1] = 1; return 2;
	case 4: cd[0] = 1; cd[1] = N; return 2;
	case 5: cd[0] = 1; cd[1] = 1; return 2;
	default: cd[0] = M; cd[1] = N; return 2;
	}
}

static void test_gemm_random(void **state)
{
	(void)state;
	static const char *const models[4] = {
		"gemm_float_t00", "gemm_float_t01", "gemm_float_t10", "gemm_float_t11",
	};
	for (int t = 0; t < 4; t++)
		for (int rep = 0; rep < 25; rep++) {
			int64_t M = irand(1, 40), N = irand(1, 40), K = irand(1, 40), cd[2];
			if (rep == 0)
				M = 1;
			if (rep == 1)
				K = 1;
			int cn = c_shape(M, N, cd);
			gemm_case(models[t], ES_DT_FLOAT, t & 2, t & 1, 0.5, 2.0, M, N, K,
				  cn, cd, 1e-5, 1e-5);
		}
	int64_t cd[2] = { 7, 9 };
	gemm_case("gemm_float_noc", ES_DT_FLOAT, false, true, 2.0, 0, 7, 9, 11, -1,
		  NULL, 1e-5, 1e-5);
	gemm_case("gemm_float_v6_nobcast", ES_DT_FLOAT, false, false, 1, 1, 7, 9, 3,
		  2, cd, 1e-5, 1e-5);
	cd[0] = 9;
	gemm_case("gemm_float_v6_bcast", ES_DT_FLOAT, false, false, 1, 0.5, 7, 9, 3,
		  1, cd, 1e-5, 1e-5);
	const int64_t row[] = { 150 }; /* big enough for oneDNN's threads */
	gemm_case("gemm_float_t01", ES_DT_FLOAT, false, true, 0.5, 2.0, 200, 150,
		  300, 1, row, 1e-5, 1e-4);
}

static void test_gemm_types(void **state)
{
	(void)state;
	for (int rep = 0; rep < 10; rep++) {
		int64_t M = irand(1, 20), N = irand(1, 20), K = irand(1, 20), cd[2];
		int cn = c_shape(M, N, cd);
		gemm_case("gemm_double_t11", ES_DT_DOUBLE, true, true, 1, 1, M, N, K,
			  cn, cd, 1e-12, 1e-12);
		gemm_case("gemm_double_alpha", ES_DT_DOUBLE, false, false, -1.5, 0.25,
			  M, N, K, cn, cd, 1e-12, 1e-12);
		gemm_case("gemm_float16_t11", ES_DT_FLOAT16, true, true, 1, 1, M, N,
			  K, cn, cd, 5e-3, 5e-3);
		gemm_case("gemm_int64_t11", ES_DT_INT64, true, true, 1, 1, M, N, K,
			  cn, cd, 0, 0);
		gemm_case("gemm_int32_t11", ES_DT_INT32, true, true, 1, 1, M, N, K,
			  cn, cd, 0, 0);
		gemm_case("gemm_uint32_t11", ES_DT_UINT32, true, true, 1, 1, M, N, K,
			  cn, cd, 0, 0);
	}
}

static void test_gemm_errors(void **state)
{
	(void)state;
	es_tensor in[3];
	const int64_t a[] = { 2, 3 }, b[] = { 4, 5 }, c[] = { 2, 5 };
	make(&in[0], ES_DT_FLOAT, 2, a, 1);
	make(&in[1], ES_DT_FLOAT, 2, b, 1);
	make(&in[2], ES_DT_FLOAT, 2, c, 1);
	run_fail("gemm_float_t00", in, 3, ES_ESHAPE, "[2,3]", "[4,5]", NULL);
	free_all(in, 3);

	const int64_t b2[] = { 3, 5 }, c2[] = { 3 };
	make(&in[0], ES_DT_FLOAT, 2, a, 1);
	make(&in[1], ES_DT_FLOAT, 2, b2, 1);
	make(&in[2], ES_DT_FLOAT, 1, c2, 1);
	run_fail("gemm_float_t00", in, 3, ES_ESHAPE, "C [3]", "[2,5]", NULL);
	free_all(in, 3);

	/* opset 6 without broadcast needs C exactly M x N */
	const int64_t c3[] = { 5 };
	make(&in[0], ES_DT_FLOAT, 2, a, 1);
	make(&in[1], ES_DT_FLOAT, 2, b2, 1);
	make(&in[2], ES_DT_FLOAT, 1, c3, 1);
	run_fail("gemm_float_v6_nobcast", in, 3, ES_ESHAPE, "broadcast=0", NULL);
	free_all(in, 3);

	const int64_t a3[] = { 2, 3, 1 };
	make(&in[0], ES_DT_FLOAT, 3, a3, 1);
	make(&in[1], ES_DT_FLOAT, 2, b2, 1);
	make(&in[2], ES_DT_FLOAT, 1, c3, 1);
	run_fail("gemm_float_t00", in, 3, ES_ESHAPE, "2-D", NULL);
	free_all(in, 3);
}

/* ---- softmax family ----------------------------------------------------- */

enum { SOFTMAX, LOGSOFTMAX, HARDMAX };

static double *ref_softmax(const es_tensor *X, int op, int64_t axis, bool legacy)
{
	int r = X->ndim;
	if (axis < 0)
		axis += r;
	int64_t outer = 1, n = 1, inner = 1;
	for (int d = 0; d < r; d++) {
		if (d < axis)
			outer *= X->dims[d];
		else if (d == axis || legacy)
			n *= X->dims[d];
		else
			inner *= X->dims[d];
	}
	double *y = ref_alloc(outer * n * inner);
	for (int64_t o = 0; o < outer; o++)
		for (int64_t i = 0; i < inner; i++) {
			int64_t base = o * n * inner + i;
			double mx = -INFINITY;
			int64_t arg = 0;
			for (int64_t a = 0; a < n; a++) {
				double v = get_d(X, base + a * inner);
				if (v > mx) {
					mx = v;
					arg = a;
				}
			}
			double sum = 0;
			for (int64_t a = 0; a < n; a++)
				sum += exp(get_d(X, base + a * inner) - mx);
			for (int64_t a = 0; a < n; a++) {
				double v = get_d(X, base + a * inner);
				double out = op == SOFTMAX ? exp(v - mx) / sum
					   : op == LOGSOFTMAX ? v - mx - log(sum)
					   : (a == arg ? 1.0 : 0.0);
				y[base + a * inner] = out;
			}
		}
	return y;
}

static void softmax_case(const char *model, int op, es_dtype dt, int64_t axis,
			 bool legacy, int r, const int64_t *dims, double scale,
			 double rtol, double atol)
{
	es_tensor in[1], out[1];
	make(&in[0], dt, r, dims, scale);
	double *ref = ref_softmax(&in[0], op, axis, legacy);
	run_ok(model, in, 1, out, 1);
	char what[256];
	snprintf(what, sizeof(what), "%s X %s", model, shape_s(dims, r));
	assert_int_equal(out[0].ndim, r);
	check_close(&out[0], ref, es_tensor_numel(&in[0]), rtol, atol, what);
	free(ref);
	free_all(in, 1);
	free_all(out, 1);
}

static void test_softmax_family(void **state)
{
	(void)state;
	static const char *const ops[3] = { "softmax", "logsoftmax", "hardmax" };
	char name[64];
	for (int op = 0; op < 3; op++)
		for (int rep = 0; rep < 16; rep++) {
			int r = (int)irand(2, 4);
			int64_t dims[4];
			for (int d = 0; d < r; d++)
				dims[d] = irand(1, 7);
			if (rep == 3)
				dims[r - 1] = 300; /* more than one tile of columns */
			/* large values: must not overflow exp */
			double scale = rep == 5 ? 1000.0 : 4.0;
			snprintf(name, sizeof(name), "%s_v11_axis1", ops[op]);
			softmax_case(name, op, ES_DT_FLOAT, 1, true, r, dims, scale, 1e-5, 1e-6);
			snprintf(name, sizeof(name), "%s_v11_default", ops[op]);
			softmax_case(name, op, ES_DT_FLOAT, 1, true, r, dims, scale, 1e-5, 1e-6);
			snprintf(name, sizeof(name), "%s_v13_axis1", ops[op]);
			softmax_case(name, op, ES_DT_FLOAT, 1, false, r, dims, scale, 1e-5, 1e-6);
			snprintf(name, sizeof(name), "%s_v13_default", ops[op]);
			softmax_case(name, op, ES_DT_FLOAT, -1, false, r, dims, scale, 1e-5, 1e-6);
		}
	const int64_t d3[] = { 2, 9, 333 };
	softmax_case("softmax_v13_axis1_double", SOFTMAX, ES_DT_DOUBLE, 1, false, 3,
		     d3, 3.0, 1e-12, 1e-14);
	softmax_case("softmax_v13_axis1_float16", SOFTMAX, ES_DT_FLOAT16, 1, false,
		     3, d3, 3.0, 5e-3, 1e-4);
	const int64_t d1[] = { 17 };
	softmax_case("softmax_v13_default", SOFTMAX, ES_DT_FLOAT, -1, false, 1, d1,
		     3.0, 1e-5, 1e-6);
}

static void test_softmax_errors(void **state)
{
	(void)state;
	es_tensor in[1];
	const int64_t d1[] = { 5 };
	make(&in[0], ES_DT_FLOAT, 1, d1, 1);
	run_fail("softmax_v13_axis1", in, 1, ES_EINVAL, "axis", "rank 1", NULL);
	run_fail("hardmax_v13_axis1", in, 1, ES_EINVAL, "axis", NULL);
	free_all(in, 1);
}

/* ---- norms -------------------------------------------------------------- */

static void test_layernorm(void **state)
{
	(void)state;
	for (int rep = 0; rep < 20; rep++) {
		int r = (int)irand(2, 4);
		int64_t dims[4], sd[4];
		for (int d = 0; d < r; d++)
			dims[d] = irand(1, 6);
		bool last_axis = rep & 1;
		int64_t axis = last_axis ? r - 1 : 1;
		/* Scale: the normalised dims, some broadcast; B: the full
		 * trailing shape */
		int sr = (int)(r - axis);
		for (int d = 0; d < sr; d++)
			sd[d] = rnd() % 3 == 0 ? 1 : dims[axis + d];
		es_tensor in[3], out[3];
		make(&in[0], ES_DT_FLOAT, r, dims, 3.0);
		make(&in[1], ES_DT_FLOAT, sr, sd, 1.0);
		make(&in[2], ES_DT_FLOAT, sr, dims + axis, 1.0);
		int64_t outer = 1, D = 1;
		for (int d = 0; d < r; d++)
			*(d < axis ? &outer : &D) *= dims[d];
		double eps = last_axis ? 1e-5 : 1e-3;
		double *ref = ref_alloc(outer * D), *rm = ref_alloc(outer), *ri = ref_alloc(outer);
		for (int64_t o = 0; o < outer; o++) {
			double s = 0, ss = 0;
			for (int64_t j = 0; j < D; j++)
				s += get_d(&in[0], o * D + j);
			double m = s / (double)D;
			for (int64_t j = 0; j < D; j++) {
				double v = get_d(&in[0], o * D + j) - m;
				ss += v * v;
			}
			double inv = 1 / sqrt(ss / (double)D + eps);
			rm[o] = m;
			ri[o] = inv;
			for (int64_t j = 0; j < D; j++) {
				int64_t e = o * D + j;
				ref[e] = (get_d(&in[0], e) - m) * inv *
					 get_d(&in[1], bcast_index(&in[1], dims, r, e));
				if (!last_axis)
					ref[e] += get_d(&in[2], j);
			}
		}
		const char *model = last_axis ? "layernorm_axis_m1_noB" : "layernorm_axis1";
		run_ok(model, in, last_axis ? 2 : 3, out, 3);
		check_close(&out[0], ref, outer * D, 1e-4, 1e-5, model);
		if (!last_axis) {
			assert_int_equal(out[1].ndim, r);
			assert_int_equal(out[1].dims[0], dims[0]);
			for (int d = 1; d < r; d++)
				assert_int_equal(out[1].dims[d], 1);
			check_close(&out[1], rm, outer, 1e-5, 1e-6, "Mean");
			check_close(&out[2], ri, outer, 1e-4, 1e-6, "InvStdDev");
			free_all(out + 1, 2);
		}
		free(ref);
		free(rm);
		free(ri);
		free_all(in, 3);
		free_all(out, 1);
	}

	/* double with axis -2 */
	const int64_t xd[] = { 3, 4, 5 }, pd[] = { 4, 5 };
	es_tensor in[3], out[1];
	make(&in[0], ES_DT_DOUBLE, 3, xd, 2.0);
	make(&in[1], ES_DT_DOUBLE, 2, pd, 1.0);
	make(&in[2], ES_DT_DOUBLE, 2, pd, 1.0);
	double ref[60];
	for (int o = 0; o < 3; o++) {
		double s = 0, ss = 0;
		for (int j = 0; j < 20; j++)
			s += get_d(&in[0], o * 20 + j);
		for (int j = 0; j < 20; j++)
			ss += pow(get_d(&in[0], o * 20 + j) - s / 20, 2);
		for (int j = 0; j < 20; j++)
			ref[o * 20 + j] = (get_d(&in[0], o * 20 + j) - s / 20) /
					  sqrt(ss / 20 + 1e-5) * get_d(&in[1], j) +
					  get_d(&in[2], j);
	}
	run_ok("layernorm_double", in, 3, out, 1);
	check_close(&out[0], ref, 60, 1e-6, 1e-7, "layernorm_double");
	free_all(out, 1);

	/* a Scale that does not broadcast is refused by name */
	es_tensor_free_data(&in[1]);
	const int64_t bad[] = { 3 };
	make(&in[1], ES_DT_DOUBLE, 1, bad, 1.0);
	run_fail("layernorm_double", in, 3, ES_ESHAPE, "Scale", "[3]", "[3,4,5]", NULL);
	free_all(in, 3);

	es_error err;
	es_tensor none[1];
	assert_int_equal(run_model("layernorm_neg_eps", NULL, 0, none, 0, &err), ES_EINVAL);
	assert_non_null(strstr(err.msg, "epsilon"));
}

static void test_batchnorm(void **state)
{
	(void)state;
	/* opset 7, spatial=0: one statistic per activation (C x H x W) */
	const int64_t xd[] = { 2, 3, 4, 5 }, pd[] = { 3, 4, 5 };
	es_tensor in[5], out[1];
	make(&in[0], ES_DT_FLOAT, 4, xd, 3.0);
	for (int i = 1; i < 5; i++)
		make(&in[i], ES_DT_FLOAT, 3, pd, 1.0);
	for (int64_t i = 0; i < 60; i++) /* variance > 0 */
		set_d(&in[4], i, fabs(get_d(&in[4], i)) + 0.1);
	double ref[120];
	for (int64_t e = 0; e < 120; e++) {
		int64_t p = e % 60;
		ref[e] = (get_d(&in[0], e) - get_d(&in[3], p)) /
			 sqrt(get_d(&in[4], p) + 1e-2) * get_d(&in[1], p) +
			 get_d(&in[2], p);
	}
	run_ok("batchnorm_v7_nonspatial", in, 5, out, 1);
	check_close(&out[0], ref, 120, 1e-5, 1e-5, "batchnorm_v7_nonspatial");
	free_all(in, 5);
	free_all(out, 1);

	/* opset 15: float16 data, float scale/B, double mean/var */
	const int64_t xd2[] = { 2, 3, 7 }, cd[] = { 3 };
	static const es_dtype pt[5] = { ES_DT_FLOAT16, ES_DT_FLOAT, ES_DT_FLOAT,
					ES_DT_DOUBLE, ES_DT_DOUBLE };
	make(&in[0], pt[0], 3, xd2, 3.0);
	for (int i = 1; i < 5; i++)
		make(&in[i], pt[i], 1, cd, 1.0);
	for (int64_t i = 0; i < 3; i++)
		set_d(&in[4], i, fabs(get_d(&in[4], i)) + 0.1);
	double ref2[42];
	for (int64_t e = 0; e < 42; e++) {
		int64_t c = (e / 7) % 3;
		ref2[e] = (get_d(&in[0], e) - get_d(&in[3], c)) /
			  sqrt(get_d(&in[4], c) + 1e-5) * get_d(&in[1], c) +
			  get_d(&in[2], c);
	}
	run_ok("batchnorm_v15_f16_mixed", in, 5, out, 1);
	assert_int_equal(out[0].dtype, ES_DT_FLOAT16);
	check_close(&out[0], ref2, 42, 2e-3, 2e-3, "batchnorm_v15_f16_mixed");
	free_all(in, 5);
	free_all(out, 1);

	/* a per-channel parameter of the wrong length */
	const int64_t bad[] = { 4 };
	make(&in[0], ES_DT_DOUBLE, 3, xd2, 1.0);
	for (int i = 1; i < 5; i++)
		make(&in[i], ES_DT_DOUBLE, 1, i == 3 ? bad : cd, 1.0);
	run_fail("batchnorm_v9_double", in, 5, ES_ESHAPE, "mean", "[4]", "[2,3,7]", NULL);
	free_all(in, 5);
}

static void test_instancenorm_lp_mvn(void **state)
{
	(void)state;
	const int64_t xd[] = { 2, 3, 4, 5 }, cd[] = { 3 };
	es_tensor in[3], out[1];
	double ref[120];

	/* InstanceNormalization, double */
	make(&in[0], ES_DT_DOUBLE, 4, xd, 3.0);
	make(&in[1], ES_DT_DOUBLE, 1, cd, 1.0);
	make(&in[2], ES_DT_DOUBLE, 1, cd, 1.0);
	for (int nc = 0; nc < 6; nc++) {
		double s = 0, ss = 0;
		for (int j = 0; j < 20; j++)
			s += get_d(&in[0], nc * 20 + j);
		for (int j = 0; j < 20; j++)
			ss += pow(get_d(&in[0], nc * 20 + j) - s / 20, 2);
		for (int j = 0; j < 20; j++)
			ref[nc * 20 + j] = (get_d(&in[0], nc * 20 + j) - s / 20) /
					   sqrt(ss / 20 + 1e-3) * get_d(&in[1], nc % 3) +
					   get_d(&in[2], nc % 3);
	}
	run_ok("instancenorm_double", in, 3, out, 1);
	check_close(&out[0], ref, 120, 1e-9, 1e-9, "instancenorm_double");
	free_all(in, 3);
	free_all(out, 1);

	/* LpNormalization along axis 1 (strided columns), p = 1 and 2 */
	for (int p = 1; p <= 2; p++) {
		make(&in[0], ES_DT_FLOAT, 4, xd, 2.0);
		for (int c = 0; c < 3; c++) /* column (0, :, 0, 0) is all zeros */
			set_d(&in[0], c * 20, 0);
		for (int o = 0; o < 2; o++)
			for (int i = 0; i < 20; i++) {
				double s = 0;
				for (int c = 0; c < 3; c++) {
					double v = get_d(&in[0], o * 60 + c * 20 + i);
					s += p == 1 ? fabs(v) : v * v;
				}
				double nrm = p == 1 ? s : sqrt(s);
				for (int c = 0; c < 3; c++)
					ref[o * 60 + c * 20 + i] = nrm > 0 ?
						get_d(&in[0], o * 60 + c * 20 + i) / nrm : 0;
			}
		run_ok(p == 1 ? "lpnorm_p1_axis1" : "lpnorm_p2_axis1", in, 1, out, 1);
		check_close(&out[0], ref, 120, 1e-5, 1e-6, "lpnorm");
		free_all(in, 1);
		free_all(out, 1);
	}
	es_error err;
	assert_int_equal(run_model("lpnorm_p3", NULL, 0, out, 0, &err), ES_EINVAL);
	assert_non_null(strstr(err.msg, "'p'"));

	/* MeanVarianceNormalization over axes {1, 2} and the default {0,2,3} */
	for (int which = 0; which < 2; which++) {
		make(&in[0], ES_DT_FLOAT, 4, xd, 2.0);
		bool red[4] = { which == 1, which == 0, true, which == 1 };
		for (int64_t e = 0; e < 120; e++) {
			/* brute force: every element of the same group */
			int64_t ce[4], rem = e;
			for (int d = 3; d >= 0; d--) {
				ce[d] = rem % xd[d];
				rem /= xd[d];
			}
			double s = 0, ss = 0;
			int cnt = 0;
			for (int64_t f = 0; f < 120; f++) {
				int64_t cf[4];
				rem = f;
				for (int d = 3; d >= 0; d--) {
					cf[d] = rem % xd[d];
					rem /= xd[d];
				}
				bool same = true;
				for (int d = 0; d < 4; d++)
					if (!red[d] && cf[d] != ce[d])
						same = false;
				if (same) {
					double v = get_d(&in[0], f);
					s += v;
					ss += v * v;
					cnt++;
				}
			}
			double m = s / cnt;
			ref[e] = (get_d(&in[0], e) - m) / (sqrt(ss / cnt - m * m) + 1e-9);
		}
		run_ok(which == 0 ? "mvn_axes_1_2" : "mvn_default", in, 1, out, 1);
		check_close(&out[0], ref, 120, 1e-4, 1e-5, "mvn");
		free_all(in, 1);
		free_all(out, 1);
	}
	/* default axes need rank 4 */
	make(&in[0], ES_DT_FLOAT, 2, xd, 1.0);
	run_fail("mvn_default", in, 1, ES_EINVAL, "axes", NULL);
	free_all(in, 1);
}

/* ---- in place and hostile shapes ---------------------------------------- */

/* Row-wise softmax over the last dim of a [rows, cols] double buffer. */
static void softmax_rows(double *v, int64_t rows, int64_t cols)
{
	for (int64_t r = 0; r < rows; r++) {
		double mx = -INFINITY, sum = 0;
		for (int64_t j = 0; j < cols; j++)
			mx = fmax(mx, v[r * cols + j]);
		for (int64_t j = 0; j < cols; j++)
			sum += exp(v[r * cols + j] - mx);
		for (int64_t j = 0; j < cols; j++)
			v[r * cols + j] = exp(v[r * cols + j] - mx) / sum;
	}
}

/* Gemm whose C is an intermediate value (Y may overwrite it), and a chain
 * Softmax -> LayerNormalization -> LogSoftmax where each output may reuse
 * its input's buffer. */
static void test_inplace_chains(void **state)
{
	(void)state;
	static const struct {
		const char *model;
		es_dtype dt;
		double tol;
	} g[] = {
		{ "gemm_inplace_c_float", ES_DT_FLOAT, 1e-5 },
		{ "gemm_inplace_c_float16", ES_DT_FLOAT16, 5e-3 },
		{ "gemm_inplace_c_double", ES_DT_DOUBLE, 1e-12 },
	};
	for (size_t t = 0; t < 3; t++) {
		const int64_t M = 9, N = 13, K = 7;
		const int64_t da[] = { M, K }, db[] = { K, N }, dc[] = { M, N };
		es_tensor in[3], out[1];
		make(&in[0], g[t].dt, 2, da, 1.0);
		make(&in[1], g[t].dt, 2, db, 1.0);
		make(&in[2], g[t].dt, 2, dc, 2.0);
		double *c = ref_alloc(M * N), *ref = ref_alloc(M * N);
		for (int64_t i = 0; i < M * N; i++)
			c[i] = get_d(&in[2], i);
		softmax_rows(c, M, N);
		for (int64_t i = 0; i < M; i++)
			for (int64_t j = 0; j < N; j++) {
				double acc = 0;
				for (int64_t k = 0; k < K; k++)
					acc += get_d(&in[0], i * K + k) * get_d(&in[1], k * N + j);
				ref[i * N + j] = 0.5 * acc + 2.0 * c[i * N + j];
			}
		run_ok(g[t].model, in, 3, out, 1);
		check_close(&out[0], ref, M * N, g[t].tol, g[t].tol, g[t].model);
		free(c);
		free(ref);
		free_all(in, 3);
		free_all(out, 1);
	}

	const int64_t dx[] = { 5, 11 }, ds[] = { 11 };
	es_tensor in[2], out[1];
	make(&in[0], ES_DT_FLOAT, 2, dx, 3.0);
	make(&in[1], ES_DT_FLOAT, 1, ds, 1.0);
	double v[55];
	for (int i = 0; i < 55; i++)
		v[i] = get_d(&in[0], i);
	softmax_rows(v, 5, 11);
	for (int r = 0; r < 5; r++) {
		double m = 0, var = 0;
		for (int j = 0; j < 11; j++)
			m += v[r * 11 + j] / 11;
		for (int j = 0; j < 11; j++)
			var += pow(v[r * 11 + j] - m, 2) / 11;
		for (int j = 0; j < 11; j++)
			v[r * 11 + j] = (v[r * 11 + j] - m) / sqrt(var + 1e-5) *
					get_d(&in[1], j);
	}
	for (int j = 0; j < 11; j++) { /* LogSoftmax along axis 0 */
		double mx = -INFINITY, sum = 0;
		for (int r = 0; r < 5; r++)
			mx = fmax(mx, v[r * 11 + j]);
		for (int r = 0; r < 5; r++)
			sum += exp(v[r * 11 + j] - mx);
		for (int r = 0; r < 5; r++)
			v[r * 11 + j] -= mx + log(sum);
	}
	run_ok("softmax_layernorm_logsoftmax", in, 2, out, 1);
	check_close(&out[0], v, 55, 1e-4, 1e-4, "softmax_layernorm_logsoftmax");
	free_all(in, 2);
	free_all(out, 1);
}

/* Empty tensors work; empty tensors whose other dims multiply past int64
 * are refused instead of overflowing. */
static void test_empty_and_huge_dims(void **state)
{
	(void)state;
	es_tensor in[2], out[1];
	const int64_t big = (int64_t)1 << 40;
	const int64_t ha[] = { 0, big, big }, hb[] = { 0, big, 3 };
	make(&in[0], ES_DT_FLOAT, 3, ha, 1);
	make(&in[1], ES_DT_FLOAT, 3, hb, 1);
	run_fail("matmul_float", in, 2, ES_ERANGE, "too many", NULL);
	free_all(in, 2);

	/* empty matrices whose broadcast batch count overflows */
	const int64_t b33 = (int64_t)1 << 33;
	const int64_t wa[] = { b33, 1, 0, 1 }, wb[] = { 1, b33, 1, 0 };
	make(&in[0], ES_DT_FLOAT, 4, wa, 1);
	make(&in[1], ES_DT_FLOAT, 4, wb, 1);
	run_fail("matmul_float", in, 2, ES_ERANGE, "batch", NULL);
	free_all(in, 2);

	const int64_t hx[] = { 0, (int64_t)1 << 62, 4 };
	make(&in[0], ES_DT_FLOAT, 3, hx, 1);
	run_fail("softmax_v13_axis1", in, 1, ES_ERANGE, NULL);
	run_fail("lpnorm_p1_axis1", in, 1, ES_ERANGE, NULL);
	run_fail("mvn_axes_1_2", in, 1, ES_ERANGE, NULL);
	free_all(in, 1);

	const int64_t ex[] = { 3, 0, 4 };
	make(&in[0], ES_DT_FLOAT, 3, ex, 1);
	run_ok("softmax_v13_axis1", in, 1, out, 1);
	assert_int_equal(es_tensor_numel(&out[0]), 0);
	free_all(out, 1);
	run_ok("mvn_axes_1_2", in, 1, out, 1);
	assert_int_equal(out[0].dims[1], 0);
	free_all(out, 1);
	free_all(in, 1);

	/* empty normalised block and empty channel axis */
	const int64_t lx[] = { 2, 0, 3 }, lp[] = { 0, 3 }, c0[] = { 0 };
	es_tensor p5[5], o3[3];
	make(&p5[0], ES_DT_FLOAT, 3, lx, 1);
	make(&p5[1], ES_DT_FLOAT, 2, lp, 1);
	make(&p5[2], ES_DT_FLOAT, 2, lp, 1);
	run_ok("layernorm_axis1", p5, 3, o3, 3);
	assert_int_equal(es_tensor_numel(&o3[0]), 0);
	assert_int_equal(es_tensor_numel(&o3[1]), 2);
	free_all(o3, 3);
	free_all(p5, 3);
	make(&p5[0], ES_DT_DOUBLE, 3, lx, 1);
	for (int i = 1; i < 5; i++)
		make(&p5[i], ES_DT_DOUBLE, 1, c0, 1);
	run_ok("batchnorm_v9_double", p5, 5, o3, 1);
	assert_int_equal(es_tensor_numel(&o3[0]), 0);
	free_all(o3, 1);
	free_all(p5, 5);

	const int64_t ea[] = { 4, 0, 5, 6 }, eb[] = { 6, 2 };
	make(&in[0], ES_DT_DOUBLE, 4, ea, 1);
	make(&in[1], ES_DT_DOUBLE, 2, eb, 1);
	run_ok("matmul_double", in, 2, out, 1);
	assert_int_equal(out[0].ndim, 4);
	assert_int_equal(out[0].dims[1], 0);
	assert_int_equal(out[0].dims[3], 2);
	free_all(out, 1);
	free_all(in, 2);
}

/* ---- steady state ------------------------------------------------------- */

/* A second run of the same shapes allocates nothing. */
static void test_no_alloc_in_steady_state(void **state)
{
	(void)state;
	static const char *const models[] = {
		"matmul_float16", "gemm_float_t11", "softmax_v13_axis1",
		"layernorm_axis1", "mvn_axes_1_2", "gemm_double_t11",
	};
	for (size_t mi = 0; mi < sizeof(models) / sizeof(models[0]); mi++) {
		es_model *m = NULL;
		es_session *s = NULL;
		es_error err = { 0 };
		assert_int_equal(es_model_load(model_path(models[mi]), NULL, &m, &err), 0);
		es_session_options so = { .threads = 2 };
		assert_int_equal(es_session_create(m, &so, &s, &err), 0);
		es_tensor in[3], out[3];
		size_t n = es_model_num_inputs(m);
		const int64_t d2[] = { 6, 6 }, d3[] = { 2, 6, 6 }, d1[] = { 6 };
		for (size_t i = 0; i < n; i++) {
			es_dtype dt = es_model_input(m, i)->dtype;
			if (strstr(models[mi], "layernorm") && i > 0)
				make(&in[i], dt, 2, d2, 1.0);
			else if (strstr(models[mi], "gemm") && i == 2)
				make(&in[i], dt, 1, d1, 1.0);
			else if (strstr(models[mi], "gemm") || strstr(models[mi], "matmul"))
				make(&in[i], dt, 2, d2, 1.0);
			else
				make(&in[i], dt, 3, d3, 1.0);
		}
		for (int run = 0; run < 3; run++) {
			uint64_t before = es_alloc_count();
			int rc = es_session_run(s, in, n, out, &err);
			if (rc)
				fail_msg("%s: %s", models[mi], err.msg);
			if (run > 0 && es_alloc_count() != before)
				fail_msg("%s: run %d allocated %llu blocks", models[mi], run,
					 (unsigned long long)(es_alloc_count() - before));
		}
		free_all(in, n);
		es_session_destroy(s);
		es_model_release(m);
	}
}

/* ---- the ONNX node test cases of these ops ------------------------------ */

static bool wanted_case(const char *suite, const char *name)
{
	static const char *const node_prefixes[] = {
		"test_gemm_", "test_matmul_", "test_batchnorm_",
		"test_layer_normalization_", "test_instancenorm_",
		"test_lpnormalization_", "test_mvn", "test_softmax_",
		"test_logsoftmax_", "test_hardmax_",
	};
	static const char *const torch_cases[] = {
		"test_BatchNorm1d_3d_input_eval", "test_BatchNorm2d_eval",
		"test_BatchNorm2d_momentum_eval", "test_BatchNorm3d_eval",
		"test_BatchNorm3d_momentum_eval", "test_Linear", "test_LogSoftmax",
		"test_Softmax", "test_Softmin", "test_log_softmax_dim3",
		"test_log_softmax_lastdim", "test_softmax_functional_dim3",
		"test_softmax_lastdim", "test_operator_addmm", "test_operator_mm",
	};
	/* expanded variants are graphs of other families' ops */
	if (strstr(name, "_expanded"))
		return false;
	if (!strcmp(suite, "node")) {
		for (size_t i = 0; i < sizeof(node_prefixes) / sizeof(node_prefixes[0]); i++)
			if (!strncmp(name, node_prefixes[i], strlen(node_prefixes[i])))
				return true;
		return false;
	}
	for (size_t i = 0; i < sizeof(torch_cases) / sizeof(torch_cases[0]); i++)
		if (!strcmp(name, torch_cases[i]))
			return true;
	return false;
}

/* Runs one case dir against test_data_set_0; returns false on mismatch
 * with the reason in why. */
static bool run_node_case(const char *dir, char *why, size_t why_len)
{
	char p[4096];
	es_tensor in[MAX_IO], out[MAX_IO], want;
	size_t n_in = 0;
	es_error err = { 0 };
	bool ok = false;
	for (; n_in < MAX_IO; n_in++) {
		snprintf(p, sizeof(p), "%s/test_data_set_0/input_%zu.pb", dir, n_in);
		struct stat sb;
		if (stat(p, &sb))
			break;
		if (es_tensor_read_pb(p, &in[n_in], NULL, &err)) {
			snprintf(why, why_len, "reading %.200s: %.300s", p, err.msg);
			goto out_inputs;
		}
	}
	snprintf(p, sizeof(p), "%s/model.onnx", dir);
	memset(out, 0, sizeof(out));
	if (run_path(p, in, n_in, out, MAX_IO, 2, &err)) {
		snprintf(why, why_len, "%s", err.msg);
		goto out_inputs;
	}
	ok = true;
	for (size_t o = 0; o < MAX_IO && ok; o++) {
		snprintf(p, sizeof(p), "%s/test_data_set_0/output_%zu.pb", dir, o);
		struct stat sb;
		if (stat(p, &sb))
			break;
		if (es_tensor_read_pb(p, &want, NULL, &err)) {
			snprintf(why, why_len, "reading %.200s: %.300s", p, err.msg);
			ok = false;
			break;
		}
		if (want.dtype != out[o].dtype || want.ndim != out[o].ndim ||
		    memcmp(want.dims, out[o].dims, sizeof(int64_t) * (size_t)want.ndim)) {
			snprintf(why, why_len, "output %zu: %s %s, expected %s %s", o,
				 es_dtype_name(out[o].dtype), shape_s(out[o].dims, out[o].ndim),
				 es_dtype_name(want.dtype), shape_s(want.dims, want.ndim));
			ok = false;
		}
		for (int64_t i = 0; ok && i < es_tensor_numel(&want); i++) {
			double g = get_d(&out[o], i), w = get_d(&want, i);
			if (!(fabs(g - w) <= 1e-7 + 1e-3 * fabs(w)) && !(isnan(g) && isnan(w))) {
				snprintf(why, why_len, "output %zu element %lld: %g, expected %g",
					 o, (long long)i, g, w);
				ok = false;
			}
		}
		es_tensor_free_data(&want);
	}
	free_all(out, MAX_IO);
out_inputs:
	free_all(in, n_in);
	return ok;
}

static void test_node_cases(void **state)
{
	(void)state;
	static const char *const suites[] = { "node", "pytorch-converted", "pytorch-operator" };
	int ran = 0, failed = 0;
	for (size_t s = 0; s < 3; s++) {
		char dirp[1024];
		snprintf(dirp, sizeof(dirp), "%s/%s", NODE_DATA, suites[s]);
		DIR *d = opendir(dirp);
		if (!d)
			continue;
		struct dirent *de;
		while ((de = readdir(d))) {
			if (!wanted_case(suites[s], de->d_name))
				continue;
			char casep[2048], why[600] = "";
			snprintf(casep, sizeof(casep), "%s/%s", dirp, de->d_name);
			ran++;
			if (!run_node_case(casep, why, sizeof(why))) {
				failed++;
				print_error("%s/%s: %s\n", suites[s], de->d_name, why);
			}
		}
		closedir(d);
	}
	if (!ran)
		skip(); /* libonnx-testdata is not installed */
	print_message("%d node cases of gemm/norm/softmax ops, %d failed\n", ran, failed);
	assert_int_equal(failed, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sgemm_random),
		cmocka_unit_test(test_sgemm_strided),
		cmocka_unit_test(test_sgemm_bad_args),
		cmocka_unit_test(test_matmul_float_random),
		cmocka_unit_test(test_matmul_types),
		cmocka_unit_test(test_matmul_int_wraps),
		cmocka_unit_test(test_matmul_errors),
		cmocka_unit_test(test_gemm_random),
		cmocka_unit_test(test_gemm_types),
		cmocka_unit_test(test_gemm_errors),
		cmocka_unit_test(test_softmax_family),
		cmocka_unit_test(test_softmax_errors),
		cmocka_unit_test(test_layernorm),
		cmocka_unit_test(test_batchnorm),
		cmocka_unit_test(test_instancenorm_lp_mvn),
		cmocka_unit_test(test_inplace_chains),
		cmocka_unit_test(test_empty_and_huge_dims),
		cmocka_unit_test(test_no_alloc_in_steady_state),
		cmocka_unit_test(test_node_cases),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
