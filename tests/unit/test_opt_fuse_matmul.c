/*
 * fuse_matmul (src/engine/opt/fuse_matmul.c): MatMul + bias Add [+ Relu],
 * MatMul + Relu and Gemm + Relu become one ES_DOMAIN FusedMatMul with the
 * outputs of the unoptimized graph; and the cases that must stay as they
 * are (B not constant, a bias that would broadcast the result, an
 * intermediate read elsewhere, a Gemm with beta != 1). Also the kernel's
 * message for a bad run-time shape.
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

#include "engine/model_int.h"
#include "engine/opt/opt.h"
#include "engine/opt/passes.h"
#include "support/graph_builder.h"

#define K 19
#define N 21

enum variant {
	V_BIAS_RELU,    /* MatMul(A [2,3,K], B) -> Add(bias, .) -> Relu */
	V_BIAS,         /* MatMul -> Add(., bias) */
	V_RELU,         /* MatMul -> Relu */
	V_GEMM_RELU,    /* Gemm(A [6,K], B [N,K], C, transB=1) -> Relu */
	V_GEMM,         /* Gemm alone: FusedMatMul too (packed B) */
	V_GEMM_BETA,    /* Gemm with beta 0.5: stays */
	V_B_INPUT,      /* B a graph input: stays */
	V_BIAS_2D,      /* bias [1, N]: stays (it may broadcast the rank) */
	V_MM_OUTPUT,    /* the MatMul result is also a graph output: stays */
};

static float a_data[6 * K], b_data[K * N], bias_data[N];

static void fill(void)
{
	uint32_t s = 777;
	for (int i = 0; i < 6 * K; i++) {
		s = s * 1103515245u + 12345u;
		a_data[i] = (float)((s >> 8) % 2001) / 1000.0f - 1.0f;
	}
	for (int i = 0; i < K * N; i++) {
		s = s * 1103515245u + 12345u;
		b_data[i] = (float)((s >> 8) % 2001) / 1000.0f - 1.0f;
	}
	for (int i = 0; i < N; i++)
		bias_data[i] = (float)(i % 5) * 0.25f - 0.5f;
}

static bool is_gemm(enum variant v)
{
	return v == V_GEMM_RELU || v == V_GEMM || v == V_GEMM_BETA;
}

static es_graph *build(enum variant v)
{
	es_graph *g = gb_graph(13);
	/* A's outer and inner dims are left unknown (-1): other row counts
	 * run, and a wrong inner dim reaches the kernel */
	int64_t a3[3] = { -1, 3, -1 }, a2[2] = { 6, K };
	int64_t bdims[2] = { K, N }, btdims[2] = { N, K };
	int64_t bias1[1] = { N }, bias2[2] = { 1, N };
	int a = is_gemm(v) ? gb_input(g, "a", ES_DT_FLOAT, 2, a2)
			   : gb_input(g, "a", ES_DT_FLOAT, 3, a3);
	int b = v == V_B_INPUT ? gb_input(g, "b", ES_DT_FLOAT, 2, bdims)
			       : gb_const_f32(g, "b", 2, is_gemm(v) ? btdims : bdims, b_data);
	int bias = v == V_BIAS_2D ? gb_const_f32(g, "bias", 2, bias2, bias_data)
				  : gb_const_f32(g, "bias", 1, bias1, bias_data);
	int mm = gb_value(g, "mm", ES_DT_FLOAT), sum = gb_value(g, "sum", ES_DT_FLOAT);
	int y = gb_value(g, "y", ES_DT_FLOAT);

	if (is_gemm(v)) {
		int in[3] = { a, b, bias };
		int n = gb_node(g, "Gemm", "/fc/Gemm", in, 3, v == V_GEMM_RELU ? &mm : &y, 1);
		gb_attr_int(g, n, "transB", 1);
		if (v == V_GEMM_BETA)
			gb_attr_float(g, n, "beta", 0.5f);
		if (v == V_GEMM_RELU)
			gb_node(g, "Relu", "/fc/Relu", &mm, 1, &y, 1);
		gb_output(g, y);
		return g;
	}
	int in_mm[2] = { a, b };
	gb_node(g, "MatMul", "/fc/MatMul", in_mm, 2, &mm, 1);
	if (v == V_RELU) {
		gb_node(g, "Relu", "/fc/Relu", &mm, 1, &y, 1);
	} else {
		int in_add[2] = { bias, mm }, in_add_sw[2] = { mm, bias };
		gb_node(g, "Add", "/fc/Add", v == V_BIAS ? in_add_sw : in_add, 2,
			v == V_BIAS_RELU ? &sum : &y, 1);
		if (v == V_BIAS_RELU)
			gb_node(g, "Relu", "/fc/Relu", &sum, 1, &y, 1);
	}
	gb_output(g, y);
	if (v == V_MM_OUTPUT)
		gb_output(g, mm);
	return g;
}

static void compare(es_model *plain, es_model *opt, enum variant v)
{
	es_tensor in[2] = {
		{ .dtype = ES_DT_FLOAT, .ndim = 3, .dims = { 2, 3, K },
		  .data = a_data, .nbytes = sizeof(a_data) },
		{ .dtype = ES_DT_FLOAT, .ndim = 2, .dims = { K, N },
		  .data = b_data, .nbytes = sizeof(b_data) },
	};
	if (is_gemm(v)) {
		in[0].ndim = 2;
		in[0].dims[0] = 6;
		in[0].dims[1] = K;
	}
	size_t n_in = v == V_B_INPUT ? 2 : 1;
	size_t n_out = es_model_num_outputs(plain);
	assert_int_equal(n_out, es_model_num_outputs(opt));
	es_tensor a[2], b[2];
	es_error err = { 0 };
	if (gb_run(plain, in, n_in, a, &err) || gb_run(opt, in, n_in, b, &err))
		fail_msg("run: %s", err.msg);
	for (size_t o = 0; o < n_out; o++) {
		gb_assert_close(b + o, a + o, 1e-5, 1e-5);
		assert_string_equal(es_model_output(plain, o)->name,
				    es_model_output(opt, o)->name);
		free(a[o].data);
		free(b[o].data);
	}
}

/* Builds v optimized and not, compares; checks the node counts and, when
 * fused, the node and its activation. */
static void check(enum variant v, int before, int after, const char *act)
{
	fill();
	es_model *plain = gb_model(build(v), true);
	es_model *opt = gb_model(build(v), false);
	assert_int_equal(es_model_num_nodes(plain), before);
	assert_int_equal(es_model_num_nodes(opt), after);
	compare(plain, opt, v);
	if (act) {
		const es_node *n = &opt->graph->nodes[0];
		assert_string_equal(n->domain, ES_DOMAIN);
		assert_string_equal(n->op_type, "FusedMatMul");
		assert_string_equal(n->name, "/fc/FusedMatMul");
		const char *got = "";
		assert_int_equal(es_node_attr_string(n, "activation", "", &got, NULL), 0);
		assert_string_equal(got, act);
	} else {
		for (int i = 0; i < opt->graph->n_nodes; i++)
			assert_string_not_equal(opt->graph->nodes[i].op_type, "FusedMatMul");
	}
	es_model_release(plain);
	es_model_release(opt);
}

static void test_matmul_bias_relu(void **state)
{
	(void)state;
	check(V_BIAS_RELU, 3, 1, "Relu");
}

static void test_matmul_bias(void **state)
{
	(void)state;
	check(V_BIAS, 2, 1, "");
}

static void test_matmul_relu(void **state)
{
	(void)state;
	check(V_RELU, 2, 1, "Relu");
}

static void test_gemm_relu(void **state)
{
	(void)state;
	check(V_GEMM_RELU, 2, 1, "Relu");
}

static void test_gemm(void **state)
{
	(void)state;
	check(V_GEMM, 1, 1, "");
}

static void test_must_not_fire(void **state)
{
	(void)state;
	check(V_GEMM_BETA, 1, 1, NULL);
	check(V_B_INPUT, 2, 2, NULL);
	check(V_BIAS_2D, 2, 2, NULL);
	check(V_MM_OUTPUT, 2, 2, NULL);
}

/* Runs m on A [b0, 3, K] (data from a_data, cycled) with `threads`
 * intra-op threads; returns the output (free its data). */
static es_tensor run_rows(es_model *m, int64_t b0, int threads, float *buf)
{
	for (int64_t i = 0; i < b0 * 3 * K; i++)
		buf[i] = a_data[i % (6 * K)] * (float)(1 + i / (6 * K));
	es_tensor in = { .dtype = ES_DT_FLOAT, .ndim = 3, .dims = { b0, 3, K },
			 .data = buf, .nbytes = sizeof(float) * (size_t)(b0 * 3 * K) };
	es_session *s = NULL;
	es_error err = { 0 };
	es_session_options so = { .threads = threads };
	assert_int_equal(es_session_create(m, &so, &s, &err), 0);
	es_tensor out;
	if (es_session_run(s, &in, 1, &out, &err))
		fail_msg("run: %s", err.msg);
	es_tensor copy = out;
	copy.data = malloc(out.nbytes);
	assert_non_null(copy.data);
	memcpy(copy.data, out.data, out.nbytes);
	es_session_destroy(s);
	return copy;
}

/* Row counts that change from run to run (more of them than the kernel
 * caches primitives for, so entries are evicted and rebuilt), on one and
 * two threads: always the unoptimized graph's result. */
static void test_changing_rows_and_threads(void **state)
{
	(void)state;
	fill();
	es_model *plain = gb_model(build(V_BIAS_RELU), true);
	es_model *opt = gb_model(build(V_BIAS_RELU), false);
	static const int64_t rows[] = { 1, 2, 5, 7, 64, 1, 2, 9, 5 };
	static float buf[64 * 3 * K];
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		for (int threads = 1; threads <= 2; threads++) {
			es_tensor a = run_rows(plain, rows[i], threads, buf);
			es_tensor b = run_rows(opt, rows[i], threads, buf);
			gb_assert_close(&b, &a, 1e-4, 1e-5);
			free(a.data);
			free(b.data);
		}
	}
	es_model_release(plain);
	es_model_release(opt);
}

/* Two sessions of one model running the same FusedMatMul at once (one
 * holds the cached primitive's memory objects, the other makes its own):
 * every result equals the single-session one. */
typedef struct conc_arg {
	es_model *m;
	const float *want;
	int bad;
} conc_arg;

static void *conc_worker(void *p)
{
	conc_arg *c = p;
	es_session *s = NULL;
	es_error err = { 0 };
	es_session_options so = { .threads = 1 };
	if (es_session_create(c->m, &so, &s, &err)) {
		c->bad = 1;
		return NULL;
	}
	es_tensor in = { .dtype = ES_DT_FLOAT, .ndim = 3, .dims = { 2, 3, K },
			 .data = a_data, .nbytes = sizeof(a_data) };
	for (int r = 0; r < 200 && !c->bad; r++) {
		es_tensor out;
		if (es_session_run(s, &in, 1, &out, &err) ||
		    memcmp(out.data, c->want, sizeof(float) * 6 * N))
			c->bad = 1;
	}
	es_session_destroy(s);
	return NULL;
}

static void test_concurrent_sessions(void **state)
{
	(void)state;
	fill();
	es_model *m = gb_model(build(V_BIAS_RELU), false);
	es_tensor in = { .dtype = ES_DT_FLOAT, .ndim = 3, .dims = { 2, 3, K },
			 .data = a_data, .nbytes = sizeof(a_data) };
	es_tensor want;
	es_error err = { 0 };
	if (gb_run(m, &in, 1, &want, &err))
		fail_msg("run: %s", err.msg);
	conc_arg args[2] = { { m, want.data, 0 }, { m, want.data, 0 } };
	pthread_t th[2];
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, conc_worker, &args[i]), 0);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(args[0].bad, 0);
	assert_int_equal(args[1].bad, 0);
	free(want.data);
	es_model_release(m);
}

/* The pass run again on its output changes nothing. */
static void test_idempotent(void **state)
{
	(void)state;
	fill();
	es_model *m = gb_model(build(V_BIAS_RELU), false);
	gb_assert_pass_idempotent(m, &es_pass_fuse_matmul);
	es_model_release(m);
}

/* A run-time A whose inner dimension is not B's rows fails with a
 * message naming the fused node and both shapes. */
static void test_bad_shape_names_node(void **state)
{
	(void)state;
	fill();
	es_model *m = gb_model(build(V_BIAS_RELU), false);
	es_tensor in = { .dtype = ES_DT_FLOAT, .ndim = 3, .dims = { 2, 3, K - 1 },
			 .data = a_data, .nbytes = sizeof(float) * 6 * (K - 1) };
	es_tensor out;
	es_error err = { 0 };
	int rc = gb_run(m, &in, 1, &out, &err);
	assert_int_not_equal(rc, 0);
	assert_non_null(strstr(err.msg, "/fc/FusedMatMul"));
	assert_non_null(strstr(err.msg, "inner dimensions"));
	es_model_release(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_matmul_bias_relu),
		cmocka_unit_test(test_matmul_bias),
		cmocka_unit_test(test_matmul_relu),
		cmocka_unit_test(test_gemm_relu),
		cmocka_unit_test(test_gemm),
		cmocka_unit_test(test_must_not_fire),
		cmocka_unit_test(test_changing_rows_and_threads),
		cmocka_unit_test(test_concurrent_sessions),
		cmocka_unit_test(test_idempotent),
		cmocka_unit_test(test_bad_shape_names_node),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
