/*
 * fuse_gelu (src/engine/opt/fuse_gelu.c): the erf GELU as PyTorch exports
 * it becomes one ES_DOMAIN Gelu, in both of the exporter's shapes and with
 * swapped operands; after a MatMul + bias it ends up inside the
 * FusedMatMul as its activation (fuse_matmul runs after). Outputs equal
 * the unoptimized graph's; wrong constants and an intermediate read
 * elsewhere keep the pattern.
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

#include "engine/model_int.h"
#include "engine/opt/opt.h"
#include "engine/opt/passes.h"
#include "support/graph_builder.h"

#define ROWS 3
#define K 37
#define N 24

enum variant {
	V_DIV_MUL_HALF,   /* Div(x, sqrt2), Mul(x, e), Mul(., 0.5) */
	V_MUL_HALF_FIRST, /* Mul(0.7071, x), Mul(0.5, x) first, Mul(e, h) */
	V_MATMUL,         /* MatMul + bias, then the GELU: one FusedMatMul */
	V_WRONG_SCALE,    /* Div(x, 2): not a GELU */
	V_WRONG_HALF,     /* Mul(., 0.25) */
	V_ERF_OUTPUT,     /* the Erf result is also a graph output */
};

static float x_data[ROWS * K], b_data[K * N], bias_data[N];

static void fill(void)
{
	uint32_t s = 4242;
	for (int i = 0; i < ROWS * K; i++) {
		s = s * 1103515245u + 12345u;
		x_data[i] = (float)((s >> 8) % 4001) / 1000.0f - 2.0f;
	}
	for (int i = 0; i < K * N; i++) {
		s = s * 1103515245u + 12345u;
		b_data[i] = (float)((s >> 8) % 2001) / 4000.0f - 0.25f;
	}
	for (int i = 0; i < N; i++)
		bias_data[i] = (float)(i % 3) * 0.2f - 0.2f;
}

static es_graph *build(enum variant v)
{
	es_graph *g = gb_graph(13);
	int64_t xdims[2] = { ROWS, K }, bdims[2] = { K, N }, bias1[1] = { N };
	int in = gb_input(g, "x", ES_DT_FLOAT, 2, xdims);
	int x = in;
	if (v == V_MATMUL) {
		int b = gb_const_f32(g, "b", 2, bdims, b_data);
		int bias = gb_const_f32(g, "bias", 1, bias1, bias_data);
		int mm = gb_value(g, "mm", ES_DT_FLOAT);
		x = gb_value(g, "h", ES_DT_FLOAT);
		int in_mm[2] = { in, b };
		gb_node(g, "MatMul", "/fc/MatMul", in_mm, 2, &mm, 1);
		int in_add[2] = { bias, mm };
		gb_node(g, "Add", "/fc/Add", in_add, 2, &x, 1);
	}
	int u = gb_value(g, "u", ES_DT_FLOAT), e = gb_value(g, "e", ES_DT_FLOAT);
	int e1 = gb_value(g, "e1", ES_DT_FLOAT), t = gb_value(g, "t", ES_DT_FLOAT);
	int y = gb_value(g, "y", ES_DT_FLOAT);
	int one = gb_scalar_f32(g, "one", 1.0f);
	int half = gb_scalar_f32(g, "half", v == V_WRONG_HALF ? 0.25f : 0.5f);

	if (v == V_MUL_HALF_FIRST) {
		int c = gb_scalar_f32(g, "inv_sqrt2", 0.70710677f);
		int in_s[2] = { c, x };
		gb_node(g, "Mul", "/act/Mul", in_s, 2, &u, 1);
	} else {
		int c = gb_scalar_f32(g, "sqrt2", v == V_WRONG_SCALE ? 2.0f : 1.4142135f);
		int in_s[2] = { x, c };
		gb_node(g, "Div", "/act/Div", in_s, 2, &u, 1);
	}
	gb_node(g, "Erf", "/act/Erf", &u, 1, &e, 1);
	int in_a[2] = { e, one }, in_a_sw[2] = { one, e };
	gb_node(g, "Add", "/act/Add", v == V_MUL_HALF_FIRST ? in_a_sw : in_a, 2, &e1, 1);
	if (v == V_MUL_HALF_FIRST) {
		int in_h[2] = { half, x };
		gb_node(g, "Mul", "/act/Mul_1", in_h, 2, &t, 1);
		int in_m[2] = { e1, t };
		gb_node(g, "Mul", "/act/Mul_2", in_m, 2, &y, 1);
	} else {
		int in_m[2] = { x, e1 };
		gb_node(g, "Mul", "/act/Mul_1", in_m, 2, &t, 1);
		int in_h[2] = { t, half };
		gb_node(g, "Mul", "/act/Mul_2", in_h, 2, &y, 1);
	}
	gb_output(g, y);
	if (v == V_ERF_OUTPUT)
		gb_output(g, e);
	return g;
}

/* Builds v optimized and not, compares every output; checks node counts
 * and the op left (NULL: not checked). */
static void check(enum variant v, int before, int after, const char *op)
{
	fill();
	es_model *plain = gb_model(build(v), true);
	es_model *opt = gb_model(build(v), false);
	assert_int_equal(es_model_num_nodes(plain), before);
	assert_int_equal(es_model_num_nodes(opt), after);
	if (op) {
		assert_string_equal(opt->graph->nodes[0].op_type, op);
		assert_string_equal(opt->graph->nodes[0].domain, ES_DOMAIN);
	}
	es_tensor in = { .dtype = ES_DT_FLOAT, .ndim = 2, .dims = { ROWS, K },
			 .data = x_data, .nbytes = sizeof(x_data) };
	size_t n_out = es_model_num_outputs(plain);
	es_tensor a[2], b[2];
	es_error err = { 0 };
	if (gb_run(plain, &in, 1, a, &err) || gb_run(opt, &in, 1, b, &err))
		fail_msg("run: %s", err.msg);
	for (size_t o = 0; o < n_out; o++) {
		gb_assert_close(b + o, a + o, 1e-5, 1e-5);
		free(a[o].data);
		free(b[o].data);
	}
	es_model_release(plain);
	es_model_release(opt);
}

static void test_fuses_both_shapes(void **state)
{
	(void)state;
	check(V_DIV_MUL_HALF, 5, 1, "Gelu");
	check(V_MUL_HALF_FIRST, 5, 1, "Gelu");
}

static void test_into_matmul(void **state)
{
	(void)state;
	check(V_MATMUL, 7, 1, "FusedMatMul");
	fill();
	es_model *m = gb_model(build(V_MATMUL), false);
	const char *act = "";
	assert_int_equal(es_node_attr_string(&m->graph->nodes[0], "activation", "", &act, NULL), 0);
	assert_string_equal(act, "Gelu");
	es_model_release(m);
}

static void test_must_not_fire(void **state)
{
	(void)state;
	check(V_WRONG_SCALE, 5, 5, NULL);
	check(V_WRONG_HALF, 5, 5, NULL);
	check(V_ERF_OUTPUT, 5, 5, NULL);
}

/* Gelu of a few exact points against 0.5 x (1 + erf(x / sqrt 2)). */
static void test_values(void **state)
{
	(void)state;
	es_model *m = gb_model(build(V_DIV_MUL_HALF), false);
	for (int i = 0; i < ROWS * K; i++)
		x_data[i] = (float)(i - ROWS * K / 2) / 8.0f;
	es_tensor in = { .dtype = ES_DT_FLOAT, .ndim = 2, .dims = { ROWS, K },
			 .data = x_data, .nbytes = sizeof(x_data) };
	es_tensor out;
	es_error err = { 0 };
	if (gb_run(m, &in, 1, &out, &err))
		fail_msg("run: %s", err.msg);
	const float *y = out.data;
	for (int i = 0; i < ROWS * K; i++) {
		double x = x_data[i], want = 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
		if (fabs(y[i] - want) > 1e-6 + 1e-6 * fabs(want))
			fail_msg("Gelu(%g) = %g, want %g", x, (double)y[i], want);
	}
	free(out.data);
	es_model_release(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fuses_both_shapes),
		cmocka_unit_test(test_into_matmul),
		cmocka_unit_test(test_must_not_fire),
		cmocka_unit_test(test_values),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
