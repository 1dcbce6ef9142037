/*
 * Conv / ConvTranspose / pooling kernels.
 *
 * - oneDNN against the plain C reference on random problems (groups,
 *   depthwise, dilation, stride, asymmetric padding, 1x1, 1-D to 3-D,
 *   transposed with output padding), ncnn-style.
 * - End to end through es_model_load/es_session_run on the small models in
 *   tests/data/ops/conv/ (made by gen_models.py there): dynamic shapes
 *   from several threads at once (the primitive cache is shared by the
 *   sessions of a model), float16, double, 4 spatial dims, pooling with
 *   Indices, ceil_mode, count_include_pad, LpPool.
 * - Every invalid attribute or shape fails with the right code and a
 *   message naming the node and the values.
 */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/fp16.h"
#include "edgeserve/engine.h"
#include "engine/ops/conv_ref.h"

/* ---- helpers ------------------------------------------------------------- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 11);
}

/* uniform in [lo, hi] */
static int64_t rnd_in(int64_t lo, int64_t hi)
{
	return lo + (int64_t)(rnd() % (uint32_t)(hi - lo + 1));
}

static float rnd_f(void)
{
	return (float)(rnd() % 20001) / 10000.0f - 1.0f;
}

static float *rnd_buf(int64_t n)
{
	float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
	assert_non_null(p);
	for (int64_t i = 0; i < n; i++)
		p[i] = rnd_f();
	return p;
}

/* the values gen_models.py puts in the constant W and B */
static float formula(int64_t i, float scale)
{
	return (float)((i * 37) % 17 - 8) / scale;
}

static int64_t prod(const int64_t *v, int n)
{
	int64_t p = 1;
	for (int i = 0; i < n; i++)
		p *= v[i];
	return p;
}

static const char *data(const char *name)
{
	static char buf[4096];
	snprintf(buf, sizeof(buf), "%s/ops/conv/%s", ES_TEST_DATA_DIR, name);
	return buf;
}

static void check_close(const float *got, const float *want, int64_t n,
			double atol, double rtol, const char *what)
{
	for (int64_t i = 0; i < n; i++) {
		double d = fabs((double)got[i] - (double)want[i]);
		if (!(d <= atol + rtol * fabs((double)want[i])))
			fail_msg("%s: element %lld is %.7g, expected %.7g",
				 what, (long long)i, got[i], want[i]);
	}
}

static es_model *load(const char *file)
{
	es_model *m = NULL;
	es_error err = { 0 };
	int rc = es_model_load(data(file), NULL, &m, &err);
	if (rc)
		fail_msg("%s: load failed: %d %s", file, rc, err.msg);
	return m;
}

static es_tensor tensor_f32(int ndim, const int64_t *dims, float *values)
{
	es_tensor t = { .dtype = ES_DT_FLOAT, .ndim = ndim, .data = values };
	for (int i = 0; i < ndim; i++)
		t.dims[i] = dims[i];
	t.nbytes = (size_t)prod(dims, ndim) * sizeof(float);
	return t;
}

/* ---- oneDNN vs reference on random problems --------------------------------- */

/* A random valid problem; kind 0: any, 1: depthwise, 2: 1x1. */
static void random_geom(es_conv_geom *g, bool transpose, int kind)
{
	memset(g, 0, sizeof(*g));
	g->transpose = transpose;
	g->nsp = (int)rnd_in(1, 3);
	g->n = rnd_in(1, 2);
	int64_t cg = rnd_in(1, 4), mg = rnd_in(1, 4);
	static const int64_t groups[] = { 1, 1, 2, 3 };
	g->group = groups[rnd() % 4];
	if (kind == 1) {
		g->group = rnd_in(2, 8);
		cg = 1;
		mg = rnd_in(1, 2);
	}
	g->c = g->group * cg;
	g->m = g->group * mg;
	for (int d = 0; d < g->nsp; d++) {
		int64_t big = g->nsp == 3 ? 4 : 9;
		g->kernel[d] = kind == 2 ? 1 : rnd_in(1, 3);
		g->stride[d] = rnd_in(1, 3);
		g->dilation[d] = kind == 2 ? 1 : rnd_in(1, 2);
		int64_t ext = (g->kernel[d] - 1) * g->dilation[d] + 1;
		if (!transpose) {
			g->pad_begin[d] = kind == 2 ? 0 : rnd_in(0, 2);
			g->pad_end[d] = kind == 2 ? 0 : rnd_in(0, 2);
			int64_t min_in = ext - g->pad_begin[d] - g->pad_end[d];
			if (min_in < 1)
				min_in = 1;
			g->in[d] = rnd_in(min_in, min_in + big);
			g->out[d] = (g->in[d] + g->pad_begin[d] + g->pad_end[d] - ext) /
				    g->stride[d] + 1;
		} else {
			g->in[d] = rnd_in(1, big / 2 + 1);
			int64_t op = rnd_in(0, g->stride[d] - 1);
			int64_t pb = rnd_in(0, 2), pe = rnd_in(0, 2);
			int64_t full = (g->in[d] - 1) * g->stride[d] + ext;
			if (full + op - pb - pe < 1)
				pb = pe = 0;
			g->pad_begin[d] = pb;
			g->out[d] = full + op - pb - pe;
			g->pad_end[d] = pe - op; /* effective, see conv_ref.h */
		}
	}
}

static void run_random(bool transpose, int kind, int count, int *rejected)
{
	for (int it = 0; it < count; it++) {
		es_conv_geom g;
		random_geom(&g, transpose, kind);
		int64_t k_sz = prod(g.kernel, g.nsp);
		int64_t nx = g.n * g.c * prod(g.in, g.nsp);
		int64_t nw = g.m * (g.c / g.group) * k_sz;
		int64_t ny = g.n * g.m * prod(g.out, g.nsp);
		float *x = rnd_buf(nx), *w = rnd_buf(nw), *b = rnd_buf(g.m);
		float *y_ref = rnd_buf(ny), *y_dnnl = rnd_buf(ny);
		bool bias = rnd() % 2;
		es_error err = { 0 };
		int threads = (int)rnd_in(1, 3);

		es_conv_ref_f32(&g, x, w, bias ? b : NULL, y_ref, threads);
		int rc = es_conv_dnnl_f32(&g, x, w, bias ? b : NULL, y_dnnl, threads, &err);
		if (rc == ES_EUNSUPPORTED) {
			(*rejected)++;
		} else {
			char what[256];
			snprintf(what, sizeof(what),
				 "%s case %d (nsp %d n %lld c %lld m %lld group %lld in0 %lld k0 %lld s0 %lld d0 %lld pads %lld/%lld)",
				 transpose ? "ConvTranspose" : "Conv", it, g.nsp,
				 (long long)g.n, (long long)g.c, (long long)g.m,
				 (long long)g.group, (long long)g.in[0],
				 (long long)g.kernel[0], (long long)g.stride[0],
				 (long long)g.dilation[0], (long long)g.pad_begin[0],
				 (long long)g.pad_end[0]);
			if (rc)
				fail_msg("%s: oneDNN failed: %d %s", what, rc, err.msg);
			check_close(y_dnnl, y_ref, ny, 1e-4, 1e-4, what);
		}
		free(x);
		free(w);
		free(b);
		free(y_ref);
		free(y_dnnl);
	}
}

static void test_dnnl_vs_ref_conv(void **state)
{
	(void)state;
	int rejected = 0;
	run_random(false, 0, 300, &rejected);
	run_random(false, 1, 60, &rejected);
	run_random(false, 2, 60, &rejected);
	/* oneDNN takes every plain convolution of 1-3 spatial dims */
	assert_int_equal(rejected, 0);
}

static void test_dnnl_vs_ref_convtranspose(void **state)
{
	(void)state;
	int rejected = 0;
	run_random(true, 0, 300, &rejected);
	run_random(true, 1, 60, &rejected);
	run_random(true, 2, 60, &rejected);
	print_message("ConvTranspose: oneDNN rejected %d of 420 random problems\n",
		      rejected);
	assert_true(rejected < 420 / 4);
}

/* The reference against hand-computed values (ONNX test_basic_conv_with_
 * padding, and the test_convtranspose_dilations case). */
static void test_ref_known_values(void **state)
{
	(void)state;
	es_conv_geom g = {
		.nsp = 2, .n = 1, .c = 1, .m = 1, .group = 1,
		.in = { 5, 5 }, .out = { 5, 5 }, .kernel = { 3, 3 },
		.stride = { 1, 1 }, .dilation = { 1, 1 },
		.pad_begin = { 1, 1 }, .pad_end = { 1, 1 },
	};
	float x[25], w[9], y[25];
	for (int i = 0; i < 25; i++)
		x[i] = (float)i;
	for (int i = 0; i < 9; i++)
		w[i] = 1.0f;
	static const float want[25] = {
		12, 21, 27, 33, 24, 33, 54, 63, 72, 51, 63, 99, 108,
		117, 81, 93, 144, 153, 162, 111, 72, 111, 117, 123, 84,
	};
	es_conv_ref_f32(&g, x, w, NULL, y, 1);
	check_close(y, want, 25, 0, 0, "basic conv");

	es_conv_geom t = {
		.transpose = true, .nsp = 2, .n = 1, .c = 1, .m = 1, .group = 1,
		.in = { 3, 3 }, .out = { 5, 5 }, .kernel = { 2, 2 },
		.stride = { 1, 1 }, .dilation = { 2, 2 },
	};
	float tx[9] = { 3, 8, 1, 9, 5, 7, 3, 2, 6 }, tw[4] = { 7, 2, 1, 9 };
	static const float twant[25] = {
		21, 56, 13, 16, 2, 63, 35, 67, 10, 14, 24, 22, 76, 76, 21,
		9, 5, 88, 45, 63, 3, 2, 33, 18, 54,
	};
	es_conv_ref_f32(&t, tx, tw, NULL, y, 1);
	check_close(y, twant, 25, 0, 0, "convtranspose dilations");
}

/* ---- end to end --------------------------------------------------------- */

struct dyn_job {
	es_model *m;
	bool transpose;
	int first_shape;
	int failures;
	char msg[512];
};

/* Input shapes the dynamic models are run with: more than the cache
 * holds, so entries are evicted and rebuilt while other threads run. */
static const int64_t dyn_shapes[][2][3] = {
	/* { N, H, W } for Conv, for ConvTranspose */
	{ { 1, 5, 7 }, { 1, 3, 4 } },
	{ { 2, 8, 8 }, { 2, 2, 2 } },
	{ { 1, 3, 3 }, { 1, 1, 1 } },
	{ { 3, 6, 9 }, { 1, 5, 3 } },
	{ { 1, 12, 5 }, { 3, 2, 6 } },
	{ { 2, 4, 11 }, { 1, 4, 4 } },
};
#define N_DYN 6

/* Geometry of conv_dyn.onnx / convtr_dyn.onnx for input (n, h, w). */
static void dyn_geom(es_conv_geom *g, bool transpose, const int64_t *nhw)
{
	memset(g, 0, sizeof(*g));
	g->nsp = 2;
	g->n = nhw[0];
	g->in[0] = nhw[1];
	g->in[1] = nhw[2];
	g->kernel[0] = g->kernel[1] = 3;
	g->dilation[0] = g->dilation[1] = 1;
	if (!transpose) { /* pads [1,0,1,2], strides [1,2] */
		g->c = 3, g->m = 4, g->group = 1;
		g->stride[0] = 1, g->stride[1] = 2;
		g->pad_begin[0] = 1, g->pad_begin[1] = 0;
		g->pad_end[0] = 1, g->pad_end[1] = 2;
		for (int d = 0; d < 2; d++)
			g->out[d] = (g->in[d] + g->pad_begin[d] + g->pad_end[d] - 3) /
				    g->stride[d] + 1;
	} else { /* group 2, strides [2,2], output_padding [1,0], pads [1,1,0,1] */
		g->transpose = true;
		g->c = 4, g->m = 6, g->group = 2;
		g->stride[0] = g->stride[1] = 2;
		g->pad_begin[0] = 1, g->pad_begin[1] = 1;
		const int64_t op[2] = { 1, 0 }, pe[2] = { 0, 1 };
		for (int d = 0; d < 2; d++) {
			g->out[d] = (g->in[d] - 1) * 2 + op[d] + 3 - g->pad_begin[d] - pe[d];
			g->pad_end[d] = pe[d] - op[d];
		}
	}
}

static void *dyn_worker(void *arg)
{
	struct dyn_job *job = arg;
	es_session *s = NULL;
	es_error err = { 0 };
	es_session_options so = { .threads = 2 };
	float w[108], b[6];

	for (int i = 0; i < 108; i++)
		w[i] = formula(i, 8.0f);
	for (int i = 0; i < 6; i++)
		b[i] = formula(i, 4.0f);
	if (es_session_create(job->m, &so, &s, &err)) {
		snprintf(job->msg, sizeof(job->msg), "session: %.400s", err.msg);
		job->failures++;
		return NULL;
	}
	for (int it = 0; it < 3 * N_DYN; it++) {
		const int64_t *nhw = dyn_shapes[(job->first_shape + it) % N_DYN][job->transpose];
		es_conv_geom g;
		dyn_geom(&g, job->transpose, nhw);
		int64_t xd[4] = { g.n, g.c, g.in[0], g.in[1] };
		int64_t nx = prod(xd, 4), ny = g.n * g.m * g.out[0] * g.out[1];
		float *x = malloc((size_t)nx * sizeof(float));
		float *want = malloc((size_t)ny * sizeof(float));
		for (int64_t i = 0; i < nx; i++)
			x[i] = (float)((i * 7919 + it) % 23) / 11.0f - 1.0f;
		es_conv_ref_f32(&g, x, w, b, want, 1);
		es_tensor in = tensor_f32(4, xd, x), out;
		if (es_session_run(s, &in, 1, &out, &err)) {
			snprintf(job->msg, sizeof(job->msg), "run: %.400s", err.msg);
			job->failures++;
		} else if (out.ndim != 4 || out.dims[0] != g.n || out.dims[1] != g.m ||
			   out.dims[2] != g.out[0] || out.dims[3] != g.out[1]) {
			snprintf(job->msg, sizeof(job->msg),
				 "shape [%lld,%lld,%lld,%lld], expected [%lld,%lld,%lld,%lld]",
				 (long long)out.dims[0], (long long)out.dims[1],
				 (long long)out.dims[2], (long long)out.dims[3],
				 (long long)g.n, (long long)g.m, (long long)g.out[0],
				 (long long)g.out[1]);
			job->failures++;
		} else {
			const float *got = out.data;
			for (int64_t i = 0; i < ny; i++)
				if (fabsf(got[i] - want[i]) > 1e-4f + 1e-4f * fabsf(want[i])) {
					snprintf(job->msg, sizeof(job->msg),
						 "shape %d element %lld: %g, expected %g",
						 (job->first_shape + it) % N_DYN,
						 (long long)i, got[i], want[i]);
					job->failures++;
					break;
				}
		}
		free(x);
		free(want);
	}
	es_session_destroy(s);
	return NULL;
}

static void run_dyn(const char *file, bool transpose)
{
	es_model *m = load(file);
	struct dyn_job jobs[4];
	pthread_t th[4];
	for (int i = 0; i < 4; i++) {
		jobs[i] = (struct dyn_job){ .m = m, .transpose = transpose, .first_shape = i };
		assert_int_equal(pthread_create(&th[i], NULL, dyn_worker, &jobs[i]), 0);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < 4; i++)
		if (jobs[i].failures)
			fail_msg("%s thread %d: %d failures, last: %s", file, i,
				 jobs[i].failures, jobs[i].msg);
	es_model_release(m);
}

static void test_conv_dynamic_shapes_threads(void **state)
{
	(void)state;
	run_dyn("conv_dyn.onnx", false);
}

static void test_convtranspose_dynamic_shapes_threads(void **state)
{
	(void)state;
	run_dyn("convtr_dyn.onnx", true);
}

/* conv_packed.onnx: constant W (1,1,3), strides 2, pads [2,0]. For L = 1
 * oneDNN (brgconv, AVX-512) wants W blocked, so the entry packs it once;
 * other lengths take the plain-layout gemm path. Shapes alternate so
 * cached entries are reused, and every result is checked. */
static void test_conv_packed_const_weights(void **state)
{
	(void)state;
	es_model *m = load("conv_packed.onnx");
	es_session *s = NULL;
	es_error err = { 0 };
	es_session_options so = { .threads = 2 };
	const float w[3] = { formula(0, 8), formula(1, 8), formula(2, 8) };
	const float b[1] = { formula(0, 4) };
	static const int64_t lens[] = { 1, 1, 3, 1, 9, 1, 3 };

	assert_int_equal(es_session_create(m, &so, &s, &err), 0);
	for (size_t it = 0; it < sizeof(lens) / sizeof(lens[0]); it++) {
		float x[9], want[9];
		int64_t xd[3] = { 1, 1, lens[it] };
		for (int i = 0; i < lens[it]; i++)
			x[i] = rnd_f();
		es_conv_geom g = {
			.nsp = 1, .n = 1, .c = 1, .m = 1, .group = 1,
			.in = { lens[it] }, .kernel = { 3 }, .stride = { 2 },
			.dilation = { 1 }, .pad_begin = { 2 }, .pad_end = { 0 },
		};
		g.out[0] = (lens[it] + 2 - 3) / 2 + 1;
		es_conv_ref_f32(&g, x, w, b, want, 1);
		es_tensor in = tensor_f32(3, xd, x), out;
		if (es_session_run(s, &in, 1, &out, &err))
			fail_msg("run %zu: %s", it, err.msg);
		assert_int_equal(out.dims[2], g.out[0]);
		check_close(out.data, want, g.out[0], 1e-6, 1e-5, "packed conv");
	}
	es_session_destroy(s);
	es_model_release(m);
}

/* Runs a model with one session; outputs stay valid until *s is freed. */
static int run_once(es_model *m, es_session **s, const es_tensor *in, size_t n_in,
		    es_tensor *out, es_error *err)
{
	es_session_options so = { .threads = 2 };
	int rc = es_session_create(m, &so, s, err);
	if (rc)
		return rc;
	return es_session_run(*s, in, n_in, out, err);
}

static void test_conv_float16(void **state)
{
	(void)state;
	es_model *m = load("conv_f16.onnx");
	const int64_t xd[4] = { 1, 2, 5, 5 }, wd[4] = { 3, 2, 3, 3 }, bd[1] = { 3 };
	uint16_t xh[50], wh[54], bh[3];
	float xf[50], wf[54], bf[3], want[75], got[75];
	for (int i = 0; i < 50; i++)
		xf[i] = es_half_to_float(xh[i] = es_float_to_half(rnd_f()));
	for (int i = 0; i < 54; i++)
		wf[i] = es_half_to_float(wh[i] = es_float_to_half(rnd_f()));
	for (int i = 0; i < 3; i++)
		bf[i] = es_half_to_float(bh[i] = es_float_to_half(rnd_f()));
	es_tensor in[3] = {
		{ .dtype = ES_DT_FLOAT16, .ndim = 4, .data = xh, .nbytes = sizeof(xh) },
		{ .dtype = ES_DT_FLOAT16, .ndim = 4, .data = wh, .nbytes = sizeof(wh) },
		{ .dtype = ES_DT_FLOAT16, .ndim = 1, .data = bh, .nbytes = sizeof(bh) },
	};
	memcpy(in[0].dims, xd, sizeof(xd));
	memcpy(in[1].dims, wd, sizeof(wd));
	memcpy(in[2].dims, bd, sizeof(bd));
	es_conv_geom g = {
		.nsp = 2, .n = 1, .c = 2, .m = 3, .group = 1,
		.in = { 5, 5 }, .out = { 5, 5 }, .kernel = { 3, 3 },
		.stride = { 1, 1 }, .dilation = { 1, 1 },
		.pad_begin = { 1, 1 }, .pad_end = { 1, 1 },
	};
	es_conv_ref_f32(&g, xf, wf, bf, want, 1);

	es_session *s = NULL;
	es_tensor out;
	es_error err = { 0 };
	int rc = run_once(m, &s, in, 3, &out, &err);
	if (rc)
		fail_msg("run: %s", err.msg);
	assert_int_equal(out.dtype, ES_DT_FLOAT16);
	for (int i = 0; i < 75; i++)
		got[i] = es_half_to_float(((const uint16_t *)out.data)[i]);
	check_close(got, want, 75, 2e-3, 2e-3, "float16 conv");
	es_session_destroy(s);
	es_model_release(m);
}

static void test_conv_double(void **state)
{
	(void)state;
	es_model *m = load("conv_f64.onnx");
	const int64_t xd[4] = { 2, 4, 6, 6 }, wd[4] = { 4, 2, 3, 3 };
	double x[288], w[72], want[288];
	for (int i = 0; i < 288; i++)
		x[i] = rnd_f();
	for (int i = 0; i < 72; i++)
		w[i] = rnd_f();
	es_tensor in[2] = {
		{ .dtype = ES_DT_DOUBLE, .ndim = 4, .data = x, .nbytes = sizeof(x) },
		{ .dtype = ES_DT_DOUBLE, .ndim = 4, .data = w, .nbytes = sizeof(w) },
	};
	memcpy(in[0].dims, xd, sizeof(xd));
	memcpy(in[1].dims, wd, sizeof(wd));
	es_conv_geom g = {
		.nsp = 2, .n = 2, .c = 4, .m = 4, .group = 2,
		.in = { 6, 6 }, .out = { 6, 6 }, .kernel = { 3, 3 },
		.stride = { 1, 1 }, .dilation = { 2, 2 },
		.pad_begin = { 2, 2 }, .pad_end = { 2, 2 },
	};
	es_conv_ref_f64(&g, x, w, NULL, want, 1);

	es_session *s = NULL;
	es_tensor out;
	es_error err = { 0 };
	if (run_once(m, &s, in, 2, &out, &err))
		fail_msg("run: %s", err.msg);
	assert_int_equal(out.dtype, ES_DT_DOUBLE);
	assert_memory_equal(out.data, want, sizeof(want));
	es_session_destroy(s);
	es_model_release(m);
}

/* 4 spatial dims: no oneDNN primitive, the reference runs. Checked
 * against a direct 4-D loop written out here. */
static void test_conv_4d_reference(void **state)
{
	(void)state;
	es_model *m = load("conv_4d.onnx");
	const int64_t xd[6] = { 1, 2, 3, 4, 3, 3 }, wd[6] = { 2, 2, 2, 2, 2, 2 };
	float x[216], w[64], want[2 * 2 * 2 * 2 * 2];
	for (int i = 0; i < 216; i++)
		x[i] = rnd_f();
	for (int i = 0; i < 64; i++)
		w[i] = rnd_f();
	es_tensor in[2] = { tensor_f32(6, xd, x), tensor_f32(6, wd, w) };
	/* out = (3-2)/1+1=2, (4-2)/2+1=2, 2, 2 */
	int o = 0;
	for (int mo = 0; mo < 2; mo++)
	for (int a = 0; a < 2; a++)
	for (int b = 0; b < 2; b++)
	for (int c = 0; c < 2; c++)
	for (int d = 0; d < 2; d++, o++) {
		double acc = 0;
		for (int ci = 0; ci < 2; ci++)
		for (int ka = 0; ka < 2; ka++)
		for (int kb = 0; kb < 2; kb++)
		for (int kc = 0; kc < 2; kc++)
		for (int kd = 0; kd < 2; kd++) {
			int ia = a + ka, ib = 2 * b + kb, ic = c + kc, id = d + kd;
			acc += (double)x[(((ci * 3 + ia) * 4 + ib) * 3 + ic) * 3 + id] *
			       w[((((mo * 2 + ci) * 2 + ka) * 2 + kb) * 2 + kc) * 2 + kd];
		}
		want[o] = (float)acc;
	}
	es_session *s = NULL;
	es_tensor out;
	es_error err = { 0 };
	if (run_once(m, &s, in, 2, &out, &err))
		fail_msg("run: %s", err.msg);
	assert_int_equal(out.ndim, 6);
	assert_int_equal(out.dims[3], 2);
	check_close(out.data, want, 32, 1e-5, 1e-5, "4-D conv");
	es_session_destroy(s);
	es_model_release(m);
}

/* ---- pooling against numpy-made expectations ------------------------------ */

static void pool_case(const char *name, bool indices, double tol)
{
	char file[256], path[4096];
	es_tensor x, y, ind, out[2];
	es_error err = { 0 };

	snprintf(file, sizeof(file), "%s.onnx", name);
	es_model *m = load(file);
	snprintf(file, sizeof(file), "%s_x.pb", name);
	snprintf(path, sizeof(path), "%s", data(file));
	assert_int_equal(es_tensor_read_pb(path, &x, NULL, &err), 0);
	snprintf(file, sizeof(file), "%s_y.pb", name);
	snprintf(path, sizeof(path), "%s", data(file));
	assert_int_equal(es_tensor_read_pb(path, &y, NULL, &err), 0);
	if (indices) {
		snprintf(file, sizeof(file), "%s_i.pb", name);
		snprintf(path, sizeof(path), "%s", data(file));
		assert_int_equal(es_tensor_read_pb(path, &ind, NULL, &err), 0);
	}
	es_session *s = NULL;
	if (run_once(m, &s, &x, 1, out, &err))
		fail_msg("%s: run: %s", name, err.msg);
	assert_int_equal(out[0].dtype, y.dtype);
	assert_int_equal(out[0].ndim, y.ndim);
	for (int d = 0; d < y.ndim; d++)
		if (out[0].dims[d] != y.dims[d])
			fail_msg("%s: output dim %d is %lld, expected %lld", name, d,
				 (long long)out[0].dims[d], (long long)y.dims[d]);
	int64_t n = es_tensor_numel(&y);
	for (int64_t i = 0; i < n; i++) {
		double got = y.dtype == ES_DT_DOUBLE ? ((double *)out[0].data)[i] :
						       ((float *)out[0].data)[i];
		double want = y.dtype == ES_DT_DOUBLE ? ((double *)y.data)[i] :
							((float *)y.data)[i];
		if (fabs(got - want) > tol * (1 + fabs(want)))
			fail_msg("%s: element %lld is %.9g, expected %.9g", name,
				 (long long)i, got, want);
	}
	if (indices) {
		assert_int_equal(out[1].dtype, ES_DT_INT64);
		assert_memory_equal(out[1].data, ind.data, ind.nbytes);
		es_tensor_free_data(&ind);
	}
	es_session_destroy(s);
	es_model_release(m);
	es_tensor_free_data(&x);
	es_tensor_free_data(&y);
}

static void test_maxpool_indices(void **state)
{
	(void)state;
	pool_case("maxpool_idx_2d", true, 0);     /* col-major, ceil, dilations */
	pool_case("maxpool_idx_3d", true, 0);
	pool_case("maxpool_idx_3d_col", true, 0);
}

static void test_avgpool(void **state)
{
	(void)state;
	pool_case("avgpool_ceil_pad", false, 1e-6);
	pool_case("avgpool_same_lower_1d", false, 1e-6);
	pool_case("globalavgpool_1d_f64", false, 1e-12);
}

static void test_lppool(void **state)
{
	(void)state;
	pool_case("lppool_p3", false, 1e-5);
	pool_case("lppool_1d_f64", false, 1e-12);
	pool_case("globallppool", false, 1e-5);
}

/* ---- errors --------------------------------------------------------------- */

static void expect_load_fail(const char *file, int code, ...)
{
	es_model *m = NULL;
	es_error err = { 0 };
	int rc = es_model_load(data(file), NULL, &m, &err);
	if (rc != code)
		fail_msg("%s: expected load to fail with %d, got %d (%s)", file, code,
			 rc, err.msg);
	assert_null(m);
	va_list ap;
	va_start(ap, code);
	const char *frag;
	while ((frag = va_arg(ap, const char *)))
		if (!strstr(err.msg, frag))
			fail_msg("%s: message '%s' lacks '%s'", file, err.msg, frag);
	va_end(ap);
}

/* Loads file and runs it on zero-filled inputs of the declared shapes;
 * expects failure `code` at load or run with every fragment present. */
static void expect_run_fail(const char *file, int code, ...)
{
	es_model *m = NULL;
	es_session *s = NULL;
	es_error err = { 0 };
	es_tensor in[4], out[2];
	int rc = es_model_load(data(file), NULL, &m, &err);
	size_t n_in = 0;
	if (!rc) {
		n_in = es_model_num_inputs(m);
		assert_true(n_in <= 4);
		for (size_t i = 0; i < n_in; i++) {
			const es_value_info *vi = es_model_input(m, i);
			assert_int_equal(es_tensor_alloc(&in[i], vi->dtype, vi->ndim,
							 vi->dims, &err), 0);
		}
		rc = run_once(m, &s, in, n_in, out, &err);
	}
	if (rc != code)
		fail_msg("%s: expected code %d, got %d (%s)", file, code, rc, err.msg);
	va_list ap;
	va_start(ap, code);
	const char *frag;
	while ((frag = va_arg(ap, const char *)))
		if (!strstr(err.msg, frag))
			fail_msg("%s: message '%s' lacks '%s'", file, err.msg, frag);
	va_end(ap);
	for (size_t i = 0; i < n_in; i++)
		es_tensor_free_data(&in[i]);
	es_session_destroy(s);
	if (m)
		es_model_release(m);
}

static void test_conv_attribute_errors(void **state)
{
	(void)state;
	expect_load_fail("conv_bad_pads.onnx", ES_EINVAL, "badpads", "pads", "3 values", NULL);
	expect_load_fail("conv_bad_strides.onnx", ES_EINVAL, "badstrides", "strides[1]",
			 "is 0", NULL);
	expect_load_fail("conv_bad_dilations.onnx", ES_EINVAL, "baddil", "dilations[0]",
			 "is -1", NULL);
	expect_load_fail("conv_bad_group.onnx", ES_EINVAL, "badgroup", "group", "0", NULL);
}

static void test_conv_shape_errors(void **state)
{
	(void)state;
	expect_run_fail("conv_bad_channels.onnx", ES_ESHAPE, "badch", "W", "group is 1",
			"X needs 3 channels", "X has 4", NULL);
	expect_run_fail("conv_rank_mismatch.onnx", ES_ESHAPE, "badrank",
			"1 spatial dims", "has 2", NULL);
	expect_run_fail("conv_out_nonpos.onnx", ES_ESHAPE, "tiny", "<= 0", NULL);
	expect_run_fail("convtr_out_nonpos.onnx", ES_ESHAPE, "tinytr", "<= 0", NULL);
}

static void test_pool_errors(void **state)
{
	(void)state;
	expect_load_fail("pool_no_kernel.onnx", ES_EINVAL, "nokernel", "kernel_shape", NULL);
	expect_load_fail("pool_bad_pads.onnx", ES_EINVAL, "poolpads", "pads", "2 values",
			 "expected 4", NULL);
	expect_run_fail("pool_rank_mismatch.onnx", ES_ESHAPE, "poolrank", "rank 4",
			"3 spatial dims", NULL);
	expect_run_fail("pool_out_nonpos.onnx", ES_ESHAPE, "poolbig", "<= 0", NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ref_known_values),
		cmocka_unit_test(test_dnnl_vs_ref_conv),
		cmocka_unit_test(test_dnnl_vs_ref_convtranspose),
		cmocka_unit_test(test_conv_dynamic_shapes_threads),
		cmocka_unit_test(test_convtranspose_dynamic_shapes_threads),
		cmocka_unit_test(test_conv_packed_const_weights),
		cmocka_unit_test(test_conv_float16),
		cmocka_unit_test(test_conv_double),
		cmocka_unit_test(test_conv_4d_reference),
		cmocka_unit_test(test_maxpool_indices),
		cmocka_unit_test(test_avgpool),
		cmocka_unit_test(test_lppool),
		cmocka_unit_test(test_conv_attribute_errors),
		cmocka_unit_test(test_conv_shape_errors),
		cmocka_unit_test(test_pool_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
