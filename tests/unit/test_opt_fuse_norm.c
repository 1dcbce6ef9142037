/*
 * fuse_layernorm (src/engine/opt/fuse_norm.c): the decomposed LayerNorm
 * export becomes one LayerNormalization node (ES_DOMAIN below opset 17,
 * the ONNX operator from 17), with the same outputs as the unoptimized
 * graph; and the cases where the pattern must stay as it is.
 *
 * The graphs take X [2, 5, 40]: rows of 40 exercise the kernel's
 * eight-lane loop and its tail.
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

#define D 40
#define ROWS 10

/* What to change in the pattern (a must-not-fire case each). */
enum variant {
	V_PLAIN,        /* the exporter's pattern, operand orders as PyTorch */
	V_SWAPPED,      /* Mul(gamma, n), Add(beta, .), Add(eps, v) */
	V_NO_BETA,      /* Mul gamma only */
	V_AXIS_1,       /* ReduceMean over axis 1: not a LayerNorm */
	V_POW_4,        /* Pow(d, 4) */
	V_SUB_OUTPUT,   /* d is also a graph output */
	V_GAMMA_INPUT,  /* gamma is a graph input, not a constant */
};

static float x_data[ROWS * D], gamma_data[D], beta_data[D];

static void fill_data(float offset)
{
	uint32_t s = 12345;
	for (int i = 0; i < ROWS * D; i++) {
		s = s * 1103515245u + 12345u;
		x_data[i] = offset + (float)((s >> 8) % 2000) / 500.0f - 2.0f;
	}
	for (int i = 0; i < D; i++) {
		gamma_data[i] = 0.5f + (float)i / D;
		beta_data[i] = (float)(i % 7) * 0.1f - 0.3f;
	}
}

static int mean_node(es_graph *g, const char *name, int in, int out, int64_t axis)
{
	int n = gb_node(g, "ReduceMean", name, &in, 1, &out, 1);
	gb_attr_ints(g, n, "axes", &axis, 1);
	return n;
}

static es_graph *build(int opset, enum variant v)
{
	es_graph *g = gb_graph(opset);
	int64_t xdims[3] = { 2, 5, D }, pdims[1] = { D };
	int x = gb_input(g, "x", ES_DT_FLOAT, 3, xdims);
	int gamma = v == V_GAMMA_INPUT ? gb_input(g, "gamma", ES_DT_FLOAT, 1, pdims)
				       : gb_const_f32(g, "gamma", 1, pdims, gamma_data);
	int beta = gb_const_f32(g, "beta", 1, pdims, beta_data);
	int two = gb_scalar_f32(g, "two", v == V_POW_4 ? 4.0f : 2.0f);
	int eps = gb_scalar_f32(g, "eps", 1e-5f);
	int m = gb_value(g, "m", ES_DT_FLOAT), d = gb_value(g, "d", ES_DT_FLOAT);
	int p = gb_value(g, "p", ES_DT_FLOAT), var = gb_value(g, "var", ES_DT_FLOAT);
	int ve = gb_value(g, "ve", ES_DT_FLOAT), sd = gb_value(g, "sd", ES_DT_FLOAT);
	int nrm = gb_value(g, "nrm", ES_DT_FLOAT), sc = gb_value(g, "sc", ES_DT_FLOAT);
	int y = gb_value(g, "y", ES_DT_FLOAT);
	int64_t axis = v == V_AXIS_1 ? 1 : -1;

	mean_node(g, "/norm/ReduceMean", x, m, axis);
	int in_sub[2] = { x, m };
	gb_node(g, "Sub", "/norm/Sub", in_sub, 2, &d, 1);
	int in_pow[2] = { d, two };
	gb_node(g, "Pow", "/norm/Pow", in_pow, 2, &p, 1);
	mean_node(g, "/norm/ReduceMean_1", p, var, axis);
	int in_add[2] = { var, eps }, in_add_sw[2] = { eps, var };
	gb_node(g, "Add", "/norm/Add", v == V_SWAPPED ? in_add_sw : in_add, 2, &ve, 1);
	gb_node(g, "Sqrt", "/norm/Sqrt", &ve, 1, &sd, 1);
	int in_div[2] = { d, sd };
	gb_node(g, "Div", "/norm/Div", in_div, 2, &nrm, 1);
	int in_mul[2] = { nrm, gamma }, in_mul_sw[2] = { gamma, nrm };
	if (v == V_NO_BETA) {
		gb_node(g, "Mul", "/norm/Mul", in_mul, 2, &y, 1);
	} else {
		gb_node(g, "Mul", "/norm/Mul", v == V_SWAPPED ? in_mul_sw : in_mul, 2, &sc, 1);
		int in_b[2] = { sc, beta }, in_b_sw[2] = { beta, sc };
		gb_node(g, "Add", "/norm/Add_1", v == V_SWAPPED ? in_b_sw : in_b, 2, &y, 1);
	}
	gb_output(g, y);
	if (v == V_SUB_OUTPUT)
		gb_output(g, d);
	return g;
}

/* LayerNorm of x_data over rows of D in double, into ref. */
static void reference(float *ref, bool with_beta)
{
	for (int r = 0; r < ROWS; r++) {
		const float *x = x_data + r * D;
		double s = 0, ss = 0;
		for (int i = 0; i < D; i++)
			s += x[i];
		double mean = s / D;
		for (int i = 0; i < D; i++)
			ss += (x[i] - mean) * (x[i] - mean);
		double inv = 1.0 / sqrt(ss / D + 1e-5);
		for (int i = 0; i < D; i++)
			ref[r * D + i] = (float)((x[i] - mean) * inv * gamma_data[i] +
						 (with_beta ? beta_data[i] : 0.0));
	}
}

/* Runs both models on x_data (and gamma when it is an input) and compares
 * every output; a fused model's output 0 is also checked against the
 * double reference (tighter than the decomposed float graph, whose mean
 * loses digits on rows far from zero). */
static void compare(es_model *plain, es_model *opt, enum variant v)
{
	es_tensor in[2] = {
		{ .dtype = ES_DT_FLOAT, .ndim = 3, .dims = { 2, 5, D },
		  .data = x_data, .nbytes = sizeof(x_data) },
		{ .dtype = ES_DT_FLOAT, .ndim = 1, .dims = { D },
		  .data = gamma_data, .nbytes = sizeof(gamma_data) },
	};
	size_t n_in = v == V_GAMMA_INPUT ? 2 : 1;
	size_t n_out = es_model_num_outputs(plain);
	assert_int_equal(n_out, es_model_num_outputs(opt));
	es_tensor a[2], b[2];
	es_error err = { 0 };
	if (gb_run(plain, in, n_in, a, &err) || gb_run(opt, in, n_in, b, &err))
		fail_msg("run: %s", err.msg);
	if (v == V_PLAIN || v == V_SWAPPED || v == V_NO_BETA) {
		static float ref[ROWS * D];
		reference(ref, v != V_NO_BETA);
		es_tensor rt = b[0];
		rt.data = ref;
		gb_assert_close(b, &rt, 1e-5, 1e-5);
	}
	for (size_t o = 0; o < n_out; o++) {
		gb_assert_close(b + o, a + o, 1e-3, 1e-3);
		assert_string_equal(es_model_output(plain, o)->name,
				    es_model_output(opt, o)->name);
		free(a[o].data);
		free(b[o].data);
	}
}

/* Builds (opset, v) optimized and not, compares, checks the node counts
 * and the fused node's domain ("-" when no fusion is expected). */
static void check(int opset, enum variant v, int nodes_after, const char *domain)
{
	es_model *plain = gb_model(build(opset, v), true);
	es_model *opt = gb_model(build(opset, v), false);
	int before = es_model_num_nodes(plain);
	assert_int_equal(before, v == V_NO_BETA ? 8 : 9);
	assert_int_equal(es_model_num_nodes(opt), nodes_after);
	compare(plain, opt, v);
	if (strcmp(domain, "-")) {
		const es_graph *g = opt->graph;
		assert_int_equal(g->n_nodes, 1);
		assert_string_equal(g->nodes[0].op_type, "LayerNormalization");
		assert_string_equal(g->nodes[0].domain, domain);
		assert_string_equal(g->nodes[0].name, "/norm/LayerNormalization");
	}
	es_model_release(plain);
	es_model_release(opt);
}

static void test_fuses_opset13(void **state)
{
	(void)state;
	fill_data(0.0f);
	check(13, V_PLAIN, 1, ES_DOMAIN);
	check(13, V_SWAPPED, 1, ES_DOMAIN);
	check(13, V_NO_BETA, 1, ES_DOMAIN);
}

static void test_fuses_opset17_to_onnx_op(void **state)
{
	(void)state;
	fill_data(0.0f);
	check(17, V_PLAIN, 1, "");
}

/* Rows far from zero: the kernel's shifted one-pass variance must not
 * cancel (the decomposed graph subtracts the mean first). */
static void test_large_mean(void **state)
{
	(void)state;
	fill_data(1000.0f);
	check(13, V_PLAIN, 1, ES_DOMAIN);
}

static void test_must_not_fire(void **state)
{
	(void)state;
	fill_data(0.0f);
	check(13, V_AXIS_1, 9, "-");
	check(13, V_POW_4, 9, "-");
	check(13, V_SUB_OUTPUT, 9, "-");
	check(13, V_GAMMA_INPUT, 9, "-");
}

/* The pass alone, run again on its own output, changes nothing. */
static void test_idempotent(void **state)
{
	(void)state;
	fill_data(0.0f);
	es_model *m = gb_model(build(13, V_PLAIN), false);
	const es_opt_report *r = &m->opt;
	bool seen = false;
	for (int i = 0; i < r->n_passes; i++) {
		if (!strcmp(r->pass[i].name, "fuse_layernorm")) {
			seen = true;
			assert_int_equal(r->pass[i].nodes_before, 9);
			assert_int_equal(r->pass[i].nodes_after, 1);
			assert_int_equal(r->pass[i].changes, 1);
		}
	}
	assert_true(seen);
	gb_assert_pass_idempotent(m, &es_pass_fuse_layernorm);
	es_model_release(m);
}

/* A LayerNormalization whose Scale has the wrong length fails with a
 * message naming the node (fast path and general kernel alike). */
static void test_bad_scale_names_node(void **state)
{
	(void)state;
	fill_data(0.0f);
	es_graph *g = gb_graph(17);
	int64_t xdims[3] = { 2, 5, D }, pdims[1] = { D - 1 };
	int x = gb_input(g, "x", ES_DT_FLOAT, 3, xdims);
	int gamma = gb_const_f32(g, "gamma", 1, pdims, gamma_data);
	int y = gb_value(g, "y", ES_DT_FLOAT);
	int in[2] = { x, gamma };
	gb_node(g, "LayerNormalization", "ln_bad", in, 2, &y, 1);
	gb_output(g, y);
	es_model *m = gb_model(g, false);
	es_tensor tin = { .dtype = ES_DT_FLOAT, .ndim = 3, .dims = { 2, 5, D },
			  .data = x_data, .nbytes = sizeof(x_data) };
	es_tensor out;
	es_error err = { 0 };
	assert_int_not_equal(gb_run(m, &tin, 1, &out, &err), 0);
	assert_non_null(strstr(err.msg, "ln_bad"));
	es_model_release(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fuses_opset13),
		cmocka_unit_test(test_fuses_opset17_to_onnx_op),
		cmocka_unit_test(test_large_mean),
		cmocka_unit_test(test_must_not_fire),
		cmocka_unit_test(test_idempotent),
		cmocka_unit_test(test_bad_scale_names_node),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
