/*
 * Elementwise operators end to end: small models from
 * tests/data/ops/elementwise/ (made by gen_models.py there) are loaded with
 * es_model_load and run through a session, and the outputs are checked
 * against reference loops written here: broadcasting shapes and their
 * errors, integer division by zero, wrapping integer arithmetic, float16,
 * Cast round trips and saturation, Where, the variadic ops, opset < 7
 * broadcasting, Clip of both generations, and the threaded paths on large
 * tensors.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/alloc.h"
#include "base/fp16.h"
#include "edgeserve/engine.h"

#define MAX_IO 4

/* ---- locating the models ------------------------------------------------ */

static const char *model_path(const char *name)
{
	static char buf[4096];
#ifdef ES_TEST_DATA_DIR
	snprintf(buf, sizeof(buf), "%s/ops/elementwise/%s.onnx",
		 ES_TEST_DATA_DIR, name);
#else
	/* tests/unit/this.c -> tests/data */
	const char *file = __FILE__;
	const char *slash = strrchr(file, '/');
	int dir_len = slash ? (int)(slash - file) : 0;
	snprintf(buf, sizeof(buf), "%.*s/../data/ops/elementwise/%s.onnx",
		 dir_len, file, name);
#endif
	return buf;
}

/* ---- random numbers (xorshift64*, fixed seed: failures reproduce) ------- */

static uint64_t rng = 0x2545F4914F6CDD1Dull;

static uint64_t rnd(void)
{
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 0x2545F4914F6CDD1Dull;
}

/* uniform in [-1, 1) */
static float frand(void)
{
	return (float)((double)(rnd() >> 11) / (double)(1ull << 52) - 1.0);
}

/* ---- tensors ------------------------------------------------------------ */

/* A tensor viewing caller memory. */
static es_tensor tview(es_dtype dt, int ndim, const int64_t *dims,
		       const void *data)
{
	es_tensor t;
	memset(&t, 0, sizeof(t));
	t.dtype = dt;
	t.ndim = ndim;
	for (int d = 0; d < ndim; d++)
		t.dims[d] = dims[d];
	t.data = (void *)data;
	t.nbytes = (size_t)es_tensor_numel(&t) * es_dtype_size(dt);
	return t;
}

#define DIMS(...) ((const int64_t[]){ __VA_ARGS__ })
#define NDIMS(...) ((int)(sizeof((int64_t[]){ __VA_ARGS__ }) / sizeof(int64_t)))
#define TV(dt, data, ...) tview(dt, NDIMS(__VA_ARGS__), DIMS(__VA_ARGS__), data)
#define TSCALAR(dt, data) tview(dt, 0, NULL, data)

/* A float tensor of random values in [-1, 1), malloc'ed (free t.data). */
static es_tensor frandom(int ndim, const int64_t *dims)
{
	es_tensor t = tview(ES_DT_FLOAT, ndim, dims, NULL);
	int64_t n = es_tensor_numel(&t);
	float *p = malloc((size_t)(n ? n : 1) * sizeof(float));
	assert_non_null(p);
	for (int64_t i = 0; i < n; i++)
		p[i] = frand();
	t.data = p;
	return t;
}

/* Flat index into t of output index `flat` of shape (ndim, dims), numpy
 * broadcasting. */
static int64_t bcast_index(const es_tensor *t, int ndim, const int64_t *dims,
			   int64_t flat)
{
	int64_t off = 0, stride = 1;
	for (int d = ndim - 1; d >= 0; d--) {
		int64_t idx = flat % dims[d];
		int td = d - (ndim - t->ndim);
		flat /= dims[d];
		if (td >= 0) {
			if (t->dims[td] != 1)
				off += idx * stride;
			stride *= t->dims[td];
		}
	}
	return off;
}

static void assert_shape(const es_tensor *t, int ndim, const int64_t *dims)
{
	assert_int_equal(t->ndim, ndim);
	for (int d = 0; d < ndim; d++)
		assert_int_equal(t->dims[d], dims[d]);
}

/* ---- running a model ---------------------------------------------------- */

/* A loaded model and one session on it. Outputs of run() stay valid until
 * the next run() or close. */
typedef struct runner {
	es_model *m;
	es_session *s;
	es_tensor out[MAX_IO];
	es_error err;
} runner;

static void open_threads(runner *r, const char *name, int threads)
{
	es_session_options so = { .threads = threads };
	memset(r, 0, sizeof(*r));
	if (es_model_load(model_path(name), NULL, &r->m, &r->err))
		fail_msg("loading %s: %s", name, r->err.msg);
	if (es_session_create(r->m, &so, &r->s, &r->err))
		fail_msg("session on %s: %s", name, r->err.msg);
}

static void open1(runner *r, const char *name)
{
	open_threads(r, name, 1);
}

static void close_runner(runner *r)
{
	es_session_destroy(r->s);
	es_model_release(r->m);
	memset(r, 0, sizeof(*r));
}

static int run(runner *r, const es_tensor *in, size_t n)
{
	memset(&r->err, 0, sizeof(r->err));
	return es_session_run(r->s, in, n, r->out, &r->err);
}

static void run_ok(runner *r, const es_tensor *in, size_t n)
{
	if (run(r, in, n))
		fail_msg("run failed: %s", r->err.msg);
}

/* Runs and expects failure `code` with `needle` in the message. */
static void run_fails(runner *r, const es_tensor *in, size_t n, int code,
		      const char *needle)
{
	int rc = run(r, in, n);
	if (rc != code)
		fail_msg("expected %s, got %d (%s)", es_strerror(code), rc,
			 r->err.msg);
	if (needle && !strstr(r->err.msg, needle))
		fail_msg("message '%s' lacks '%s'", r->err.msg, needle);
}

/* ---- broadcasting --------------------------------------------------------- */

typedef struct bcase {
	int na, nb, nout;
	int64_t a[6], b[6], out[6];
} bcase;

static void check_add(int threads, const bcase *c)
{
	runner r;
	es_tensor in[2];
	in[0] = frandom(c->na, c->a);
	in[1] = frandom(c->nb, c->b);
	open_threads(&r, "add_float", threads);
	run_ok(&r, in, 2);
	assert_shape(&r.out[0], c->nout, c->out);
	const float *pa = in[0].data, *pb = in[1].data, *po = r.out[0].data;
	int64_t n = es_tensor_numel(&r.out[0]);
	for (int64_t i = 0; i < n; i++) {
		float ref = pa[bcast_index(&in[0], c->nout, c->out, i)] +
			    pb[bcast_index(&in[1], c->nout, c->out, i)];
		if (po[i] != ref)
			fail_msg("case %d-d + %d-d: element %lld is %g, expected %g",
				 c->na, c->nb, (long long)i, po[i], ref);
	}
	close_runner(&r);
	free(in[0].data);
	free(in[1].data);
}

static void test_broadcast_shapes(void **state)
{
	static const bcase cases[] = {
		{ 3, 1, 3, { 2, 3, 4 }, { 4 }, { 2, 3, 4 } },
		{ 3, 2, 3, { 2, 1, 4 }, { 3, 1 }, { 2, 3, 4 } },
		{ 0, 2, 2, { 0 }, { 2, 3 }, { 2, 3 } },
		{ 2, 0, 2, { 2, 3 }, { 0 }, { 2, 3 } },
		{ 0, 0, 0, { 0 }, { 0 }, { 0 } },
		{ 2, 2, 2, { 5, 1 }, { 1, 6 }, { 5, 6 } },
		{ 1, 3, 3, { 1 }, { 3, 1, 2 }, { 3, 1, 2 } },
		{ 3, 2, 3, { 2, 0, 3 }, { 1, 3 }, { 2, 0, 3 } },
		{ 5, 3, 5, { 4, 1, 3, 1, 5 }, { 3, 2, 1 }, { 4, 1, 3, 2, 5 } },
		{ 4, 4, 4, { 2, 3, 4, 5 }, { 2, 3, 4, 5 }, { 2, 3, 4, 5 } },
		{ 4, 4, 4, { 1, 3, 1, 5 }, { 2, 1, 4, 1 }, { 2, 3, 4, 5 } },
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		check_add(1, &cases[i]);
}

/* Large shapes with 4 threads: long rows split in pieces, many short rows,
 * bias add, scalar operand. */
static void test_broadcast_threads(void **state)
{
	static const bcase cases[] = {
		{ 1, 1, 1, { 300000 }, { 300000 }, { 300000 } },
		{ 1, 0, 1, { 300000 }, { 0 }, { 300000 } },
		{ 0, 2, 2, { 0 }, { 3, 100000 }, { 3, 100000 } },
		{ 2, 1, 2, { 1000, 257 }, { 257 }, { 1000, 257 } },
		{ 3, 3, 3, { 64, 1, 300 }, { 1, 40, 300 }, { 64, 40, 300 } },
		{ 4, 3, 4, { 8, 16, 30, 30 }, { 16, 1, 1 }, { 8, 16, 30, 30 } },
		{ 2, 2, 2, { 70000, 1 }, { 1, 3 }, { 70000, 3 } },
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		check_add(4, &cases[i]);
}

static void test_broadcast_mismatch(void **state)
{
	runner r;
	float a[6] = { 0 }, b[4] = { 0 };
	es_tensor in[2] = { TV(ES_DT_FLOAT, a, 2, 3), TV(ES_DT_FLOAT, b, 4) };
	(void)state;
	open1(&r, "add_float");
	run_fails(&r, in, 2, ES_ESHAPE, "[2,3]");
	assert_non_null(strstr(r.err.msg, "[4]"));
	/* a zero dim only broadcasts against 1 */
	in[0] = TV(ES_DT_FLOAT, a, 0, 3);
	in[1] = TV(ES_DT_FLOAT, b, 2, 1);
	run_fails(&r, in, 2, ES_ESHAPE, "[0,3]");
	/* the session still works after a failure */
	in[0] = TV(ES_DT_FLOAT, a, 2, 3);
	in[1] = TV(ES_DT_FLOAT, b, 3);
	run_ok(&r, in, 2);
	close_runner(&r);
}

/* ---- integer arithmetic ------------------------------------------------- */

static void test_int_div_by_zero(void **state)
{
	runner r;
	int64_t a[4] = { 7, -7, INT64_MIN, 5 }, b[4] = { -2, 2, -1, 0 };
	int64_t b_ok[3] = { -2, 2, -1 };
	es_tensor in[2] = { TV(ES_DT_INT64, a, 4), TV(ES_DT_INT64, b, 4) };
	(void)state;

	open1(&r, "div_int64");
	run_fails(&r, in, 2, ES_EINVAL, "division by zero");
	/* scalar zero divisor */
	int64_t zero = 0;
	in[1] = TSCALAR(ES_DT_INT64, &zero);
	run_fails(&r, in, 2, ES_EINVAL, "division by zero");
	/* truncation toward zero, INT64_MIN / -1 wraps instead of trapping */
	in[0] = TV(ES_DT_INT64, a, 3);
	in[1] = TV(ES_DT_INT64, b_ok, 3);
	run_ok(&r, in, 2);
	const int64_t *o = r.out[0].data;
	assert_int_equal(o[0], -3);
	assert_int_equal(o[1], -3);
	assert_true(o[2] == INT64_MIN);
	close_runner(&r);

	int32_t a32[2] = { INT32_MIN, 9 }, b32[2] = { -1, 0 };
	in[0] = TV(ES_DT_INT32, a32, 2);
	in[1] = TV(ES_DT_INT32, b32, 2);
	open1(&r, "div_int32");
	run_fails(&r, in, 2, ES_EINVAL, "division by zero");
	in[0] = TV(ES_DT_INT32, a32, 1);
	in[1] = TV(ES_DT_INT32, b32, 1);
	run_ok(&r, in, 2);
	assert_true(((int32_t *)r.out[0].data)[0] == INT32_MIN);
	close_runner(&r);

	uint8_t a8[3] = { 200, 7, 1 }, b8[3] = { 3, 0, 1 };
	in[0] = TV(ES_DT_UINT8, a8, 3);
	in[1] = TV(ES_DT_UINT8, b8, 3);
	open1(&r, "div_uint8");
	run_fails(&r, in, 2, ES_EINVAL, "division by zero");
	close_runner(&r);

	/* float division by zero is IEEE: inf and nan, not an error */
	float fa[2] = { 1, 0 }, fb[2] = { 0, 0 };
	in[0] = TV(ES_DT_FLOAT, fa, 2);
	in[1] = TV(ES_DT_FLOAT, fb, 2);
	open1(&r, "div_float");
	run_ok(&r, in, 2);
	assert_true(isinf(((float *)r.out[0].data)[0]));
	assert_true(isnan(((float *)r.out[0].data)[1]));
	close_runner(&r);
}

static void test_int_mod(void **state)
{
	runner r;
	int32_t a[6] = { -7, 7, -7, 7, INT32_MIN, 0 };
	int32_t b[6] = { 3, -3, -3, 3, -1, 5 };
	int32_t want[6] = { 2, -2, -1, 1, 0, 0 };
	es_tensor in[2] = { TV(ES_DT_INT32, a, 6), TV(ES_DT_INT32, b, 6) };
	(void)state;

	open1(&r, "mod_int32"); /* fmod=0: sign of the divisor */
	run_ok(&r, in, 2);
	for (int i = 0; i < 6; i++)
		assert_int_equal(((int32_t *)r.out[0].data)[i], want[i]);
	b[5] = 0;
	run_fails(&r, in, 2, ES_EINVAL, "division by zero");
	close_runner(&r);

	int64_t a64[3] = { -7, 7, INT64_MIN }, b64[3] = { 3, -3, -1 };
	in[0] = TV(ES_DT_INT64, a64, 3);
	in[1] = TV(ES_DT_INT64, b64, 3);
	open1(&r, "mod_int64_fmod"); /* fmod=1: sign of the dividend */
	run_ok(&r, in, 2);
	assert_int_equal(((int64_t *)r.out[0].data)[0], -1);
	assert_int_equal(((int64_t *)r.out[0].data)[1], 1);
	assert_int_equal(((int64_t *)r.out[0].data)[2], 0);
	close_runner(&r);

	float fa[2] = { -7.5f, 7.5f }, fb[2] = { 2, -2 };
	in[0] = TV(ES_DT_FLOAT, fa, 2);
	in[1] = TV(ES_DT_FLOAT, fb, 2);
	open1(&r, "mod_float"); /* float needs fmod=1 */
	run_fails(&r, in, 2, ES_EINVAL, "fmod");
	close_runner(&r);
	open1(&r, "mod_float_fmod");
	run_ok(&r, in, 2);
	assert_true(((float *)r.out[0].data)[0] == -1.5f);
	assert_true(((float *)r.out[0].data)[1] == 1.5f);
	close_runner(&r);
}

static void test_int_wraps(void **state)
{
	runner r;
	es_tensor in[2];
	(void)state;

	int32_t a[2] = { INT32_MAX, INT32_MIN }, b[2] = { 1, -1 };
	in[0] = TV(ES_DT_INT32, a, 2);
	in[1] = TV(ES_DT_INT32, b, 2);
	open1(&r, "add_int32");
	run_ok(&r, in, 2);
	assert_true(((int32_t *)r.out[0].data)[0] == INT32_MIN);
	assert_true(((int32_t *)r.out[0].data)[1] == INT32_MAX);
	close_runner(&r);

	uint16_t ua[2] = { 65535, 300 }, ub[2] = { 65535, 300 };
	in[0] = TV(ES_DT_UINT16, ua, 2);
	in[1] = TV(ES_DT_UINT16, ub, 2);
	open1(&r, "mul_uint16");
	run_ok(&r, in, 2);
	assert_int_equal(((uint16_t *)r.out[0].data)[0], 1);
	assert_int_equal(((uint16_t *)r.out[0].data)[1], (300 * 300) & 0xffff);
	close_runner(&r);

	int64_t la[1] = { INT64_MIN }, lb[1] = { 1 };
	in[0] = TV(ES_DT_INT64, la, 1);
	in[1] = TV(ES_DT_INT64, lb, 1);
	open1(&r, "sub_int64");
	run_ok(&r, in, 2);
	assert_true(((int64_t *)r.out[0].data)[0] == INT64_MAX);
	close_runner(&r);

	/* integer Pow: wraps, negative exponents truncate */
	int32_t pa[5] = { 2, 3, -1, 2, 1 }, pb[5] = { 10, 40, -3, -1, -5 };
	int32_t pw[5] = { 1024, (int32_t)(uint32_t)12157665459056928801ull, -1, 0, 1 };
	in[0] = TV(ES_DT_INT32, pa, 5);
	in[1] = TV(ES_DT_INT32, pb, 5);
	open1(&r, "pow_int32_int32");
	run_ok(&r, in, 2);
	for (int i = 0; i < 5; i++)
		assert_int_equal(((int32_t *)r.out[0].data)[i], pw[i]);
	close_runner(&r);
}

/* ---- float16 / bfloat16 ------------------------------------------------- */

static void test_float16_add(void **state)
{
	runner r;
	uint16_t a[6] = { 0 }, b[3] = { 0 };
	float fa[6] = { 1.5f, -2.0f, 0.1f, 1e-7f, 65504.0f, -0.0f };
	float fb[3] = { 2.25f, 65504.0f, 0.2f };
	es_tensor in[2] = { TV(ES_DT_FLOAT16, a, 2, 3), TV(ES_DT_FLOAT16, b, 3) };
	(void)state;
	for (int i = 0; i < 6; i++)
		a[i] = es_float_to_half(fa[i]);
	for (int i = 0; i < 3; i++)
		b[i] = es_float_to_half(fb[i]);
	open1(&r, "add_float16");
	run_ok(&r, in, 2);
	assert_int_equal(r.out[0].dtype, ES_DT_FLOAT16);
	assert_shape(&r.out[0], 2, DIMS(2, 3));
	const uint16_t *o = r.out[0].data;
	for (int i = 0; i < 6; i++) {
		uint16_t want = es_float_to_half(es_half_to_float(a[i]) +
						 es_half_to_float(b[i % 3]));
		assert_int_equal(o[i], want);
	}
	assert_true(es_half_to_float(o[0]) == 3.75f);
	assert_true(isinf(es_half_to_float(o[1])) == 0);
	assert_true(isinf(es_half_to_float(o[4]))); /* 65504 + 65504 */
	close_runner(&r);

	/* random values, checked bit for bit against float math */
	enum { N = 5000 };
	static uint16_t ra[N], rb[N];
	for (int i = 0; i < N; i++) {
		ra[i] = es_float_to_half(frand() * 100);
		rb[i] = es_float_to_half(frand() * 100);
	}
	in[0] = TV(ES_DT_FLOAT16, ra, N);
	in[1] = TV(ES_DT_FLOAT16, rb, N);
	open1(&r, "add_float16");
	run_ok(&r, in, 2);
	for (int i = 0; i < N; i++)
		assert_int_equal(((uint16_t *)r.out[0].data)[i],
				 es_float_to_half(es_half_to_float(ra[i]) +
						  es_half_to_float(rb[i])));
	close_runner(&r);

	in[0] = TV(ES_DT_BFLOAT16, ra, N);
	in[1] = TV(ES_DT_BFLOAT16, rb, 1);
	open1(&r, "add_bfloat16");
	run_ok(&r, in, 2);
	for (int i = 0; i < N; i++)
		assert_int_equal(((uint16_t *)r.out[0].data)[i],
				 es_float_to_bf16(es_bf16_to_float(ra[i]) +
						  es_bf16_to_float(rb[0])));
	close_runner(&r);

	/* comparisons on float16 compare values, not bits */
	uint16_t ga[3] = { es_float_to_half(-0.0f), es_float_to_half(1.0f),
			   es_float_to_half(-3.0f) };
	uint16_t gb[3] = { es_float_to_half(0.0f), es_float_to_half(0.5f),
			   es_float_to_half(-2.0f) };
	in[0] = TV(ES_DT_FLOAT16, ga, 3);
	in[1] = TV(ES_DT_FLOAT16, gb, 3);
	open1(&r, "greater_float16");
	run_ok(&r, in, 2);
	assert_int_equal(r.out[0].dtype, ES_DT_BOOL);
	assert_memory_equal(r.out[0].data, ((uint8_t[]){ 0, 1, 0 }), 3);
	close_runner(&r);
}

/* ---- Cast ----------------------------------------------------------------- */

/* Values every type of the round trip represents exactly. */
static void fill_exact(es_dtype dt, void *p, int n)
{
	for (int i = 0; i < n; i++) {
		int v = (i * 37) % 101 - (dt == ES_DT_UINT8 || dt == ES_DT_UINT16 ||
					  dt == ES_DT_BOOL || dt == ES_DT_DOUBLE ? 0 : 50);
		switch (dt) {
		case ES_DT_FLOAT: ((float *)p)[i] = (float)v * 0.25f; break;
		case ES_DT_DOUBLE: ((double *)p)[i] = (double)v; break;
		case ES_DT_FLOAT16: ((uint16_t *)p)[i] = es_float_to_half((float)v); break;
		case ES_DT_INT8: ((int8_t *)p)[i] = (int8_t)v; break;
		case ES_DT_INT32: ((int32_t *)p)[i] = v * 1000003; break;
		case ES_DT_INT64: ((int64_t *)p)[i] = (int64_t)v * ((int64_t)1 << 40); break;
		case ES_DT_UINT8: ((uint8_t *)p)[i] = (uint8_t)(v * 2); break;
		case ES_DT_UINT16: ((uint16_t *)p)[i] = (uint16_t)(v * 600); break;
		case ES_DT_BOOL: ((uint8_t *)p)[i] = (uint8_t)(v & 1); break;
		default: fail_msg("fill_exact: %s", es_dtype_name(dt));
		}
	}
}

static void test_cast_round_trips(void **state)
{
	static const struct {
		const char *model;
		es_dtype dt;
	} trips[] = {
		{ "cast_rt_float_float16", ES_DT_FLOAT },
		{ "cast_rt_float_bfloat16", ES_DT_FLOAT },
		{ "cast_rt_float_double", ES_DT_FLOAT },
		{ "cast_rt_int32_int64", ES_DT_INT32 },
		{ "cast_rt_uint8_float", ES_DT_UINT8 },
		{ "cast_rt_int8_int16", ES_DT_INT8 },
		{ "cast_rt_bool_float", ES_DT_BOOL },
		{ "cast_rt_int64_double", ES_DT_INT64 },
		{ "cast_rt_float16_int32", ES_DT_FLOAT16 },
		{ "cast_rt_uint16_int32", ES_DT_UINT16 },
		{ "cast_rt_double_uint64", ES_DT_DOUBLE },
	};
	enum { N = 101 };
	static uint64_t buf[N];
	(void)state;
	for (size_t i = 0; i < sizeof(trips) / sizeof(trips[0]); i++) {
		runner r;
		es_tensor in = TV(trips[i].dt, buf, N);
		fill_exact(trips[i].dt, buf, N);
		open1(&r, trips[i].model);
		run_ok(&r, &in, 1);
		assert_int_equal(r.out[0].dtype, trips[i].dt);
		if (memcmp(r.out[0].data, buf, in.nbytes))
			fail_msg("%s does not round-trip", trips[i].model);
		close_runner(&r);
	}
}

static void test_cast_saturation(void **state)
{
	runner r;
	es_tensor in;
	(void)state;

	float f[7] = { 1.9f, -1.9f, NAN, 3e9f, -3e9f, INFINITY, -INFINITY };
	int32_t want32[7] = { 1, -1, 0, INT32_MAX, INT32_MIN, INT32_MAX, INT32_MIN };
	in = TV(ES_DT_FLOAT, f, 7);
	open1(&r, "cast_float_int32");
	run_ok(&r, &in, 1);
	assert_int_equal(r.out[0].dtype, ES_DT_INT32);
	for (int i = 0; i < 7; i++)
		assert_int_equal(((int32_t *)r.out[0].data)[i], want32[i]);
	close_runner(&r);

	float f8[5] = { -5, 300, 12.7f, -0.9f, 255.9f };
	uint8_t want8[5] = { 0, 255, 12, 0, 255 };
	in = TV(ES_DT_FLOAT, f8, 5);
	open1(&r, "cast_float_uint8");
	run_ok(&r, &in, 1);
	assert_memory_equal(r.out[0].data, want8, 5);
	close_runner(&r);

	double d[4] = { 1e19, -1e19, 9007199254740993.0, -2.5 };
	in = TV(ES_DT_DOUBLE, d, 4);
	open1(&r, "cast_double_int64");
	run_ok(&r, &in, 1);
	assert_true(((int64_t *)r.out[0].data)[0] == INT64_MAX);
	assert_true(((int64_t *)r.out[0].data)[1] == INT64_MIN);
	assert_true(((int64_t *)r.out[0].data)[2] == 9007199254740992ll);
	assert_true(((int64_t *)r.out[0].data)[3] == -2);
	close_runner(&r);

	float fb[4] = { 0.0f, -0.0f, 0.5f, NAN };
	in = TV(ES_DT_FLOAT, fb, 4);
	open1(&r, "cast_float_bool");
	run_ok(&r, &in, 1);
	assert_memory_equal(r.out[0].data, ((uint8_t[]){ 0, 0, 1, 1 }), 4);
	close_runner(&r);

	int32_t iw[3] = { 263, -1, 128 }; /* integer narrowing wraps */
	in = TV(ES_DT_INT32, iw, 3);
	open1(&r, "cast_int32_uint8");
	run_ok(&r, &in, 1);
	assert_memory_equal(r.out[0].data, ((uint8_t[]){ 7, 255, 128 }), 3);
	close_runner(&r);

	int64_t ih[3] = { 70000, 3, -2048 };
	in = TV(ES_DT_INT64, ih, 3);
	open1(&r, "cast_int64_float16");
	run_ok(&r, &in, 1);
	assert_true(isinf(es_half_to_float(((uint16_t *)r.out[0].data)[0])));
	assert_true(es_half_to_float(((uint16_t *)r.out[0].data)[1]) == 3.0f);
	assert_true(es_half_to_float(((uint16_t *)r.out[0].data)[2]) == -2048.0f);
	close_runner(&r);

	float fu[3] = { 1e20f, -1.0f, 4294967296.0f };
	in = TV(ES_DT_FLOAT, fu, 3);
	open1(&r, "cast_float_uint64");
	run_ok(&r, &in, 1);
	assert_true(((uint64_t *)r.out[0].data)[0] == UINT64_MAX);
	assert_true(((uint64_t *)r.out[0].data)[1] == 0);
	assert_true(((uint64_t *)r.out[0].data)[2] == 4294967296ull);
	close_runner(&r);

	uint16_t h[3] = { es_float_to_half(200.0f), es_float_to_half(-3.5f),
			  es_float_to_half(-200.0f) };
	in = TV(ES_DT_FLOAT16, h, 3);
	open1(&r, "cast_float16_int8");
	run_ok(&r, &in, 1);
	assert_memory_equal(r.out[0].data, ((int8_t[]){ 127, -3, -128 }), 3);
	close_runner(&r);
}

static void test_cast_variants(void **state)
{
	runner r;
	es_model *m = NULL;
	es_error err = { 0 };
	es_tensor in[2];
	(void)state;

	/* strings are not supported: a clear error at load */
	int rc = es_model_load(model_path("cast_float_string"), NULL, &m, &err);
	if (rc == 0)
		es_model_release(m);
	assert_int_equal(rc, ES_EUNSUPPORTED);
	assert_non_null(strstr(err.msg, "string"));

	/* Cast-1 names the target type with a string */
	float f[2] = { 2.7f, -2.7f };
	in[0] = TV(ES_DT_FLOAT, f, 2);
	open1(&r, "cast_v1_int32");
	run_ok(&r, in, 1);
	assert_int_equal(r.out[0].dtype, ES_DT_INT32);
	assert_int_equal(((int32_t *)r.out[0].data)[0], 2);
	assert_int_equal(((int32_t *)r.out[0].data)[1], -2);
	close_runner(&r);

	/* CastLike takes the type of input 1 */
	int64_t like = 0;
	in[1] = TSCALAR(ES_DT_INT64, &like);
	open1(&r, "castlike_float_int64");
	run_ok(&r, in, 2);
	assert_int_equal(r.out[0].dtype, ES_DT_INT64);
	assert_int_equal(((int64_t *)r.out[0].data)[0], 2);
	assert_int_equal(((int64_t *)r.out[0].data)[1], -2);
	close_runner(&r);
}

/* ---- Where ---------------------------------------------------------------- */

static void test_where_broadcast(void **state)
{
	runner r;
	uint8_t c[2] = { 1, 0 };
	float x[3] = { 1, 2, 3 }, y = -1;
	es_tensor in[3] = { TV(ES_DT_BOOL, c, 2, 1), TV(ES_DT_FLOAT, x, 1, 3),
			    TSCALAR(ES_DT_FLOAT, &y) };
	(void)state;
	open1(&r, "where_float");
	run_ok(&r, in, 3);
	assert_shape(&r.out[0], 2, DIMS(2, 3));
	const float want[6] = { 1, 2, 3, -1, -1, -1 };
	assert_memory_equal(r.out[0].data, want, sizeof(want));
	/* incompatible shapes */
	in[1] = TV(ES_DT_FLOAT, x, 3);
	in[0] = TV(ES_DT_BOOL, c, 2);
	run_fails(&r, in, 3, ES_ESHAPE, "[2]");
	close_runner(&r);

	uint8_t c3[3] = { 0, 1, 0 };
	int64_t x6[6] = { 1, 2, 3, 4, 5, 6 }, y2[2] = { -10, -20 };
	in[0] = TV(ES_DT_BOOL, c3, 3);
	in[1] = TV(ES_DT_INT64, x6, 2, 3);
	in[2] = TV(ES_DT_INT64, y2, 2, 1);
	open1(&r, "where_int64");
	run_ok(&r, in, 3);
	const int64_t want64[6] = { -10, 2, -10, -20, 5, -20 };
	assert_memory_equal(r.out[0].data, want64, sizeof(want64));
	close_runner(&r);

	/* large, threaded, random condition */
	es_tensor big[3];
	static uint8_t cond[512];
	for (int i = 0; i < 512; i++)
		cond[i] = rnd() & 1;
	big[0] = TV(ES_DT_BOOL, cond, 512, 1);
	big[1] = frandom(2, DIMS(512, 256));
	big[2] = frandom(1, DIMS(256));
	open_threads(&r, "where_float", 4);
	run_ok(&r, big, 3);
	for (int i = 0; i < 512; i++)
		for (int j = 0; j < 256; j++) {
			float want1 = cond[i] ? ((float *)big[1].data)[i * 256 + j]
					      : ((float *)big[2].data)[j];
			assert_true(((float *)r.out[0].data)[i * 256 + j] == want1);
		}
	close_runner(&r);
	free(big[1].data);
	free(big[2].data);
}

/* ---- variadic ------------------------------------------------------------- */

static void test_variadic(void **state)
{
	static const char *const names[] = { "sum3_float", "mean3_float",
					     "max3_float", "min3_float" };
	es_tensor in[3];
	(void)state;
	in[0] = frandom(3, DIMS(2, 1, 3));
	in[1] = frandom(2, DIMS(4, 1));
	in[2] = frandom(1, DIMS(3));
	((float *)in[1].data)[2] = NAN;
	for (int k = 0; k < 4; k++) {
		runner r;
		open1(&r, names[k]);
		run_ok(&r, in, 3);
		assert_shape(&r.out[0], 3, DIMS(2, 4, 3));
		for (int64_t i = 0; i < 24; i++) {
			float v[3], want;
			for (int j = 0; j < 3; j++)
				v[j] = ((float *)in[j].data)[bcast_index(&in[j], 3,
									 DIMS(2, 4, 3), i)];
			switch (k) {
			case 0: want = v[0] + v[1] + v[2]; break;
			case 1: want = (v[0] + v[1] + v[2]) * (1.0f / 3); break;
			case 2: want = fmaxf(fmaxf(v[0], v[1]), v[2]); break;
			default: want = fminf(fminf(v[0], v[1]), v[2]); break;
			}
			float got = ((float *)r.out[0].data)[i];
			if (isnan(v[1])) {
				/* every op propagates NaN */
				assert_true(isnan(got));
				continue;
			}
			if (fabsf(got - want) > 1e-6f)
				fail_msg("%s: element %lld is %g, expected %g",
					 names[k], (long long)i, got, want);
		}
		close_runner(&r);
	}
	for (int j = 0; j < 3; j++)
		free(in[j].data);

	/* one input: identity */
	runner r;
	float one[3] = { 1, 2, 3 };
	in[0] = TV(ES_DT_FLOAT, one, 3);
	open1(&r, "sum1_float");
	run_ok(&r, in, 1);
	assert_memory_equal(r.out[0].data, one, sizeof(one));
	close_runner(&r);

	int8_t a[2] = { -128, 5 }, b[2] = { 127, -5 }, c = 6;
	in[0] = TV(ES_DT_INT8, a, 2);
	in[1] = TV(ES_DT_INT8, b, 2);
	in[2] = TSCALAR(ES_DT_INT8, &c);
	open1(&r, "max3_int8");
	run_ok(&r, in, 3);
	assert_memory_equal(r.out[0].data, ((int8_t[]){ 127, 6 }), 2);
	close_runner(&r);
}

/* ---- opset < 7 broadcasting ----------------------------------------------- */

static void test_legacy_broadcast(void **state)
{
	runner r;
	es_tensor in[2];
	(void)state;
	in[0] = frandom(4, DIMS(2, 3, 4, 5));
	in[1] = frandom(2, DIMS(3, 4));
	open1(&r, "add_v6_axis"); /* broadcast=1 axis=1 */
	run_ok(&r, in, 2);
	assert_shape(&r.out[0], 4, DIMS(2, 3, 4, 5));
	for (int64_t i = 0; i < 120; i++) {
		float want = ((float *)in[0].data)[i] +
			     ((float *)in[1].data)[(i / 5) % 12];
		assert_true(((float *)r.out[0].data)[i] == want);
	}
	free(in[1].data);
	/* B does not fit at axis 1 */
	in[1] = frandom(2, DIMS(4, 5));
	run_fails(&r, in, 2, ES_ESHAPE, "axis");
	close_runner(&r);

	open1(&r, "add_v6_suffix"); /* default: trailing dims */
	run_ok(&r, in, 2);
	for (int64_t i = 0; i < 120; i++) {
		float want = ((float *)in[0].data)[i] + ((float *)in[1].data)[i % 20];
		assert_true(((float *)r.out[0].data)[i] == want);
	}
	close_runner(&r);

	open1(&r, "add_v6_nobcast"); /* broadcast=0: shapes must be equal */
	run_fails(&r, in, 2, ES_ESHAPE, "broadcast=0");
	free(in[1].data);
	in[1] = frandom(4, DIMS(2, 3, 4, 5));
	run_ok(&r, in, 2);
	close_runner(&r);
	free(in[1].data);

	/* PRelu-6: a 1-D slope is per channel (axis 1) */
	float slope[3] = { 0.5f, -1.0f, 2.0f };
	in[1] = TV(ES_DT_FLOAT, slope, 3);
	open1(&r, "prelu_float_v6");
	run_ok(&r, in, 2);
	for (int64_t i = 0; i < 120; i++) {
		float x = ((float *)in[0].data)[i];
		float want = x < 0 ? x * slope[(i / 20) % 3] : x;
		assert_true(((float *)r.out[0].data)[i] == want);
	}
	close_runner(&r);
	/* PRelu-16: numpy broadcasting, slope must broadcast to X */
	open1(&r, "prelu_float");
	run_fails(&r, in, 2, ES_ESHAPE, NULL);
	float slope5[5] = { 1, 2, 3, 4, 5 };
	in[1] = TV(ES_DT_FLOAT, slope5, 5);
	run_ok(&r, in, 2);
	in[1] = TV(ES_DT_FLOAT, slope5, 5, 1, 1, 1, 1);
	run_fails(&r, in, 2, ES_ESHAPE, "slope");
	close_runner(&r);
	free(in[0].data);
}

/* ---- Clip ----------------------------------------------------------------- */

static void test_clip(void **state)
{
	runner r;
	float x[6] = { -3, -0.5f, 0.25f, 2, NAN, INFINITY };
	es_tensor in[3] = { TV(ES_DT_FLOAT, x, 6) };
	(void)state;

	open1(&r, "clip_v6"); /* attributes min=-1 max=0.5 */
	run_ok(&r, in, 1);
	const float *o = r.out[0].data;
	assert_true(o[0] == -1 && o[1] == -0.5f && o[2] == 0.25f && o[3] == 0.5f);
	assert_true(isnan(o[4]) && o[5] == 0.5f);
	close_runner(&r);

	open1(&r, "clip_v6_default"); /* defaults are +-FLT_MAX */
	run_ok(&r, in, 1);
	assert_true(((float *)r.out[0].data)[0] == -3);
	assert_true(((float *)r.out[0].data)[5] == 3.4028234663852886e38f);
	close_runner(&r);

	float lo = -1, hi = 1;
	in[1] = TSCALAR(ES_DT_FLOAT, &lo);
	in[2] = TSCALAR(ES_DT_FLOAT, &hi);
	open1(&r, "clip_v13");
	run_ok(&r, in, 3);
	o = r.out[0].data;
	assert_true(o[0] == -1 && o[1] == -0.5f && o[3] == 1 && o[5] == 1);
	/* min > max: everything becomes max */
	lo = 2;
	run_ok(&r, in, 3);
	assert_true(((float *)r.out[0].data)[0] == 1 && ((float *)r.out[0].data)[2] == 1);
	/* bounds must be scalars */
	float two[2] = { 0, 1 };
	in[1] = TV(ES_DT_FLOAT, two, 2);
	run_fails(&r, in, 3, ES_ESHAPE, "min");
	close_runner(&r);

	in[1] = TSCALAR(ES_DT_FLOAT, &hi);
	open1(&r, "clip_v13_max_only");
	run_ok(&r, in, 2);
	assert_true(((float *)r.out[0].data)[0] == -3 && ((float *)r.out[0].data)[3] == 1);
	close_runner(&r);

	int32_t xi[4] = { INT32_MIN, -5, 5, INT32_MAX }, ilo = -4, ihi = 4;
	in[0] = TV(ES_DT_INT32, xi, 4);
	in[1] = TSCALAR(ES_DT_INT32, &ilo);
	in[2] = TSCALAR(ES_DT_INT32, &ihi);
	open1(&r, "clip_v13_int32");
	run_ok(&r, in, 3);
	assert_memory_equal(r.out[0].data, ((int32_t[]){ -4, -4, 4, 4 }), 16);
	close_runner(&r);
}

/* ---- other operators -------------------------------------------------------- */

static void test_misc_ops(void **state)
{
	runner r;
	es_tensor in[2];
	(void)state;

	float inf[4] = { INFINITY, -INFINITY, NAN, 1 };
	in[0] = TV(ES_DT_FLOAT, inf, 4);
	open1(&r, "isinf_pos");
	run_ok(&r, in, 1);
	assert_int_equal(r.out[0].dtype, ES_DT_BOOL);
	assert_memory_equal(r.out[0].data, ((uint8_t[]){ 1, 0, 0, 0 }), 4);
	close_runner(&r);

	float rx[7] = { 0.5f, 1.5f, 2.5f, -0.5f, -2.5f, 2.4f, -2.6f };
	float rw[7] = { 0, 2, 2, -0.0f, -2, 2, -3 };
	in[0] = TV(ES_DT_FLOAT, rx, 7);
	open1(&r, "round_float"); /* half to even */
	run_ok(&r, in, 1);
	assert_memory_equal(r.out[0].data, rw, sizeof(rw));
	close_runner(&r);

	int8_t nx[3] = { -128, 127, 0 };
	in[0] = TV(ES_DT_INT8, nx, 3);
	open1(&r, "neg_int8");
	run_ok(&r, in, 1);
	assert_memory_equal(r.out[0].data, ((int8_t[]){ -128, -127, 0 }), 3);
	close_runner(&r);

	int32_t ax[3] = { INT32_MIN, -7, 7 };
	in[0] = TV(ES_DT_INT32, ax, 3);
	open1(&r, "abs_int32");
	run_ok(&r, in, 1);
	assert_memory_equal(r.out[0].data, ((int32_t[]){ INT32_MIN, 7, 7 }), 12);
	close_runner(&r);

	uint16_t ex[3] = { es_float_to_half(0.5f), es_float_to_half(-1.0f),
			   es_float_to_half(3.0f) };
	in[0] = TV(ES_DT_FLOAT16, ex, 3);
	open1(&r, "erf_float16");
	run_ok(&r, in, 1);
	for (int i = 0; i < 3; i++)
		assert_int_equal(((uint16_t *)r.out[0].data)[i],
				 es_float_to_half(erff(es_half_to_float(ex[i]))));
	close_runner(&r);

	float sx[2] = { -1, 2 };
	in[0] = TV(ES_DT_FLOAT, sx, 2);
	open1(&r, "selu_v1"); /* opset 1 defaults: alpha 1.6732, gamma 1.0507 */
	run_ok(&r, in, 1);
	assert_true(fabsf(((float *)r.out[0].data)[0] -
			  1.0507f * 1.6732f * (expf(-1) - 1)) < 1e-6f);
	assert_true(fabsf(((float *)r.out[0].data)[1] - 2 * 1.0507f) < 1e-6f);
	close_runner(&r);

	float pb[3] = { 2, 3, 4 };
	int64_t pe[3] = { 3, -1, 0 };
	in[0] = TV(ES_DT_FLOAT, pb, 3);
	in[1] = TV(ES_DT_INT64, pe, 3);
	open1(&r, "pow_float_int64"); /* exponent of another type */
	run_ok(&r, in, 2);
	assert_int_equal(r.out[0].dtype, ES_DT_FLOAT);
	assert_memory_equal(r.out[0].data, ((float[]){ 8, 1.0f / 3, 1 }), 12);
	close_runner(&r);

	uint32_t sa[3] = { 1, 0xffffffffu, 5 }, sb[3] = { 31, 4, 32 };
	in[0] = TV(ES_DT_UINT32, sa, 3);
	in[1] = TV(ES_DT_UINT32, sb, 3);
	open1(&r, "bitshift_left_uint32");
	run_ok(&r, in, 2);
	assert_memory_equal(r.out[0].data, ((uint32_t[]){ 0x80000000u, 0xfffffff0u, 0 }), 12);
	close_runner(&r);

	uint8_t ra[3] = { 0x80, 0xff, 7 }, rb = 7;
	in[0] = TV(ES_DT_UINT8, ra, 3);
	in[1] = TSCALAR(ES_DT_UINT8, &rb);
	open1(&r, "bitshift_right_uint8");
	run_ok(&r, in, 2);
	assert_memory_equal(r.out[0].data, ((uint8_t[]){ 1, 1, 0 }), 3);
	close_runner(&r);

	int64_t ea[4] = { 1, 2, 3, 4 }, eb[2] = { 2, 4 };
	in[0] = TV(ES_DT_INT64, ea, 2, 2);
	in[1] = TV(ES_DT_INT64, eb, 2);
	open1(&r, "equal_int64");
	run_ok(&r, in, 2);
	assert_int_equal(r.out[0].dtype, ES_DT_BOOL);
	assert_memory_equal(r.out[0].data, ((uint8_t[]){ 0, 0, 0, 1 }), 4);
	/* the two inputs must have one type */
	int32_t e32[2] = { 2, 4 };
	in[1] = TV(ES_DT_INT32, e32, 2);
	assert_int_not_equal(run(&r, in, 2), 0);
	close_runner(&r);

	uint8_t la[4] = { 0, 1, 0, 1 }, lb[2] = { 0, 2 }; /* any nonzero is true */
	in[0] = TV(ES_DT_BOOL, la, 2, 2);
	in[1] = TV(ES_DT_BOOL, lb, 2, 1);
	open1(&r, "and_bool");
	run_ok(&r, in, 2);
	assert_memory_equal(r.out[0].data, ((uint8_t[]){ 0, 0, 0, 1 }), 4);
	close_runner(&r);
}

/* ---- threads, in-place chains, steady state ----------------------------------- */

static float sigmoidf(float x)
{
	return 1.0f / (1.0f + expf(-x));
}

static void test_chain_threads(void **state)
{
	enum { N = 64, C = 3000 };
	es_tensor in[3];
	(void)state;
	in[0] = frandom(2, DIMS(N, C));
	in[1] = frandom(1, DIMS(C));
	in[2] = frandom(2, DIMS(N, 1));
	for (int threads = 1; threads <= 4; threads += 3) {
		runner r;
		open_threads(&r, "chain_float", threads);
		for (int rep = 0; rep < 3; rep++) {
			uint64_t before = es_alloc_count();
			run_ok(&r, in, 3);
			/* steady state: the kernels allocate nothing */
			if (rep == 2)
				assert_int_equal(es_alloc_count(), before);
			for (int64_t i = 0; i < N * C; i++) {
				float a = ((float *)in[0].data)[i];
				float s = a + ((float *)in[1].data)[i % C];
				float m = (s < 0 ? 0 : s) * ((float *)in[2].data)[i / C];
				float want = sigmoidf(m) - a;
				float got = ((float *)r.out[0].data)[i];
				if (fabsf(got - want) > 1e-6f)
					fail_msg("threads %d: element %lld is %g, expected %g",
						 threads, (long long)i, got, want);
			}
		}
		close_runner(&r);
	}
	for (int j = 0; j < 3; j++)
		free(in[j].data);
}

static void test_unary_threads(void **state)
{
	enum { N = 200003 };
	runner r;
	es_tensor in = frandom(1, DIMS(N));
	(void)state;
	for (int i = 0; i < N; i++)
		((float *)in.data)[i] *= 50;
	open_threads(&r, "sigmoid_float", 4);
	run_ok(&r, &in, 1);
	for (int i = 0; i < N; i++) {
		float x = ((float *)in.data)[i];
		float got = ((float *)r.out[0].data)[i];
		assert_true(fabsf(got - sigmoidf(x)) <= 1e-6f);
	}
	close_runner(&r);
	free(in.data);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_broadcast_shapes),
		cmocka_unit_test(test_broadcast_threads),
		cmocka_unit_test(test_broadcast_mismatch),
		cmocka_unit_test(test_int_div_by_zero),
		cmocka_unit_test(test_int_mod),
		cmocka_unit_test(test_int_wraps),
		cmocka_unit_test(test_float16_add),
		cmocka_unit_test(test_cast_round_trips),
		cmocka_unit_test(test_cast_saturation),
		cmocka_unit_test(test_cast_variants),
		cmocka_unit_test(test_where_broadcast),
		cmocka_unit_test(test_variadic),
		cmocka_unit_test(test_legacy_broadcast),
		cmocka_unit_test(test_clip),
		cmocka_unit_test(test_misc_ops),
		cmocka_unit_test(test_chain_threads),
		cmocka_unit_test(test_unary_threads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
