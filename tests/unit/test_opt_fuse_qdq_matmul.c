/*
 * fuse_qdq_matmul (src/engine/opt/fuse_qdq_matmul.c): DequantizeLinear ->
 * MatMul / Gemm [-> QuantizeLinear] with constant int8 weights become one
 * ES_DOMAIN QGemm whose outputs match the unoptimized graph (float within
 * rounding, quantized within one step on a few elements); the cases that
 * must stay as they are; idempotence.
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

#define K 24
#define N 10
#define ROWS 6

enum variant {
	V_MM,           /* MatMul(DQ(x), DQ(w [K,N], per column)) */
	V_MM_Q,         /* ... -> Q: uint8 out */
	V_GEMM_BIAS_Q,  /* Gemm(DQ(x), DQ(w [N,K]), DQ(bias)) transB=1 -> Q (int8) */
	V_GEMM,         /* Gemm(DQ(x), DQ(w [K,N] per tensor)): float out */
	V_MM_OUT_Q,     /* the MatMul result is a graph output: Q stays */
	V_SHARED_DQ,    /* DQ(x) also read by a Relu: it stays */
	V_FROM_Q,       /* x is QuantizeLinear(float input): its type is known
			 * only once that node is initialised, after the pass */
	/* must not fire */
	V_W_INPUT,      /* the weight is a graph input */
	V_W_AXIS0,      /* per-row weight scales (axis 0 of [K, N]) */
	V_BIAS_SCALE,   /* bias scale 2 * sa * sw */
	V_ALPHA,        /* Gemm alpha 0.5 */
	V_ZP_INPUT,     /* x's zero point is a graph input */
};

static uint8_t x_data[ROWS * K];
static int8_t w_data[K * N];
static int32_t bias_data[N];
static float sw_data[N];
static const float SX = 0.025f, SY = 0.11f;

static void fill(void)
{
	gb_seed(99);
	for (int i = 0; i < ROWS * K; i++)
		x_data[i] = (uint8_t)(127.5f + 127.5f * gb_rand());
	for (int i = 0; i < K * N; i++)
		w_data[i] = (int8_t)(127.0f * gb_rand());
	for (int i = 0; i < N; i++) {
		bias_data[i] = (int32_t)(2000.0f * gb_rand());
		sw_data[i] = 0.004f + 0.002f * (gb_rand() + 1.0f);
	}
}

static bool is_gemm(enum variant v)
{
	return v == V_GEMM_BIAS_Q || v == V_GEMM || v == V_BIAS_SCALE || v == V_ALPHA;
}

static bool has_q(enum variant v)
{
	return v == V_MM_Q || v == V_GEMM_BIAS_Q || v == V_MM_OUT_Q || v == V_BIAS_SCALE ||
	       v == V_ALPHA;
}

static es_graph *build(enum variant v)
{
	es_graph *g = gb_graph(13);
	int64_t xd[3] = { 2, 3, K }, xd2[2] = { ROWS, K }, wd[2] = { K, N }, wt[2] = { N, K };
	int64_t nd[1] = { N }, kd[1] = { K };
	bool gemm = is_gemm(v);
	es_dtype xdt = v == V_FROM_Q ? ES_DT_FLOAT : ES_DT_UINT8;
	int x = gemm ? gb_input(g, "x", xdt, 2, xd2) : gb_input(g, "x", xdt, 3, xd);
	uint8_t zx_v = 131;
	int sx = gb_scalar_f32(g, "sx", SX);
	int zx = v == V_ZP_INPUT ? gb_input(g, "zx", ES_DT_UINT8, 0, NULL)
				 : gb_const(g, "zx", ES_DT_UINT8, 0, NULL, &zx_v);
	if (v == V_FROM_Q) {
		int xq = gb_value(g, "xq", ES_DT_UNDEFINED);
		int in_q[3] = { x, sx, zx };
		gb_node(g, "QuantizeLinear", "/fc/qx", in_q, 3, &xq, 1);
		x = xq;
	}
	int trans = v == V_GEMM_BIAS_Q || v == V_BIAS_SCALE || v == V_ALPHA;
	int8_t wbuf[K * N];
	if (trans) /* the same logical matrix stored [N, K] */
		for (int k = 0; k < K; k++)
			for (int n = 0; n < N; n++)
				wbuf[n * K + k] = w_data[k * N + n];
	else
		memcpy(wbuf, w_data, sizeof(wbuf));
	int w = v == V_W_INPUT ? gb_input(g, "w", ES_DT_INT8, 2, wd)
			       : gb_const(g, "w", ES_DT_INT8, 2, trans ? wt : wd, wbuf);
	float sw_k[K];
	for (int k = 0; k < K; k++)
		sw_k[k] = 0.005f;
	int sw = v == V_GEMM ? gb_scalar_f32(g, "sw", 0.006f)
	       : v == V_W_AXIS0 ? gb_const_f32(g, "sw", 1, kd, sw_k)
				: gb_const_f32(g, "sw", 1, nd, sw_data);
	int xf = gb_value(g, "xf", ES_DT_FLOAT), wf = gb_value(g, "wf", ES_DT_FLOAT);
	int mm = gb_value(g, "mm", ES_DT_FLOAT), y = gb_value(g, "y", ES_DT_UINT8);
	int in_dqx[3] = { x, sx, zx }, in_dqw[2] = { w, sw };
	gb_node(g, "DequantizeLinear", "/fc/dqx", in_dqx, 3, &xf, 1);
	int dqw = gb_node(g, "DequantizeLinear", "/fc/dqw", in_dqw, 2, &wf, 1);
	if (trans)
		gb_attr_int(g, dqw, "axis", 0);
	if (v == V_W_AXIS0)
		gb_attr_int(g, dqw, "axis", 0);
	if (gemm) {
		int in[3] = { xf, wf, -1 }, n_in = 2;
		if (v == V_GEMM_BIAS_Q || v == V_BIAS_SCALE || v == V_ALPHA) {
			float sb[N];
			for (int n = 0; n < N; n++)
				sb[n] = SX * sw_data[n] * (v == V_BIAS_SCALE ? 2.0f : 1.0f);
			int bq = gb_const(g, "bias", ES_DT_INT32, 1, nd, bias_data);
			int bs = gb_const_f32(g, "bias_scale", 1, nd, sb);
			int bf = gb_value(g, "bf", ES_DT_FLOAT);
			int in_b[2] = { bq, bs };
			int dqb = gb_node(g, "DequantizeLinear", "/fc/dqb", in_b, 2, &bf, 1);
			gb_attr_int(g, dqb, "axis", 0);
			in[2] = bf;
			n_in = 3;
		}
		int gn = gb_node(g, "Gemm", "/fc/Gemm", in, n_in, has_q(v) ? &mm : &y, 1);
		if (trans)
			gb_attr_int(g, gn, "transB", 1);
		if (v == V_ALPHA)
			gb_attr_float(g, gn, "alpha", 0.5f);
	} else {
		int in[2] = { xf, wf };
		gb_node(g, "MatMul", "/fc/MatMul", in, 2, has_q(v) ? &mm : &y, 1);
	}
	if (!has_q(v))
		g->values[y].dtype = ES_DT_FLOAT;
	if (has_q(v)) {
		int sy = gb_scalar_f32(g, "sy", SY);
		int8_t zy_s8 = -3;
		uint8_t zy_u8 = 120;
		bool s8 = v == V_GEMM_BIAS_Q;
		int zy = gb_const(g, "zy", s8 ? ES_DT_INT8 : ES_DT_UINT8, 0, NULL,
				  s8 ? (const void *)&zy_s8 : (const void *)&zy_u8);
		g->values[y].dtype = s8 ? ES_DT_INT8 : ES_DT_UINT8;
		int in_q[3] = { mm, sy, zy };
		gb_node(g, "QuantizeLinear", "/fc/q", in_q, 3, &y, 1);
	}
	if (v == V_SHARED_DQ) {
		int r = gb_value(g, "r", ES_DT_FLOAT);
		gb_node(g, "Relu", "/fc/relu", &xf, 1, &r, 1);
		gb_output(g, r);
	}
	gb_output(g, y);
	if (v == V_MM_OUT_Q)
		gb_output(g, mm);
	return g;
}

/* Compares outputs: float within rounding, quantized within one step on
 * at most 2 % of the elements. */
static void compare_outputs(const es_tensor *got, const es_tensor *want)
{
	assert_int_equal(got->dtype, want->dtype);
	assert_int_equal(got->ndim, want->ndim);
	for (int d = 0; d < got->ndim; d++)
		assert_int_equal(got->dims[d], want->dims[d]);
	if (got->dtype == ES_DT_FLOAT) {
		gb_assert_close(got, want, 1e-4, 1e-4);
		return;
	}
	int64_t n = gb_numel(got->dims, got->ndim), off = 0;
	for (int64_t i = 0; i < n; i++) {
		int a = got->dtype == ES_DT_UINT8 ? ((uint8_t *)got->data)[i]
						  : ((int8_t *)got->data)[i];
		int b = got->dtype == ES_DT_UINT8 ? ((uint8_t *)want->data)[i]
						  : ((int8_t *)want->data)[i];
		if (a != b) {
			if (a - b > 1 || b - a > 1)
				fail_msg("element %lld: %d vs %d", (long long)i, a, b);
			off++;
		}
	}
	assert_true(off * 50 <= n);
}

/* Builds v optimized and not, checks node counts, QGemm presence and the
 * outputs; returns nothing, releases both. */
static void check(enum variant v, int before, int after, bool fused)
{
	fill();
	es_model *plain = gb_model(build(v), true);
	es_model *opt = gb_model(build(v), false);
	assert_int_equal(es_model_num_nodes(plain), before);
	assert_int_equal(es_model_num_nodes(opt), after);
	assert_int_equal(gb_count_op(opt, "QGemm"), fused ? 1 : 0);
	if (fused) {
		for (int i = 0; i < opt->graph->n_nodes; i++) {
			const es_node *n = &opt->graph->nodes[i];
			if (!strcmp(n->op_type, "QGemm")) {
				assert_string_equal(n->domain, ES_DOMAIN);
				assert_string_equal(n->name, "/fc/QGemm");
			}
		}
	}
	gb_assert_pass_idempotent(opt, &es_pass_fuse_qdq_matmul);

	bool gemm = is_gemm(v);
	uint8_t zx = 131;
	int8_t wq[K * N];
	memcpy(wq, w_data, sizeof(wq));
	es_tensor in[3] = {
		{ .dtype = ES_DT_UINT8, .ndim = gemm ? 2 : 3,
		  .dims = { gemm ? ROWS : 2, gemm ? K : 3, K }, .data = x_data,
		  .nbytes = sizeof(x_data) },
	};
	float xf[ROWS * K]; /* V_FROM_Q: values that quantize back to x_data */
	if (v == V_FROM_Q) {
		for (int i = 0; i < ROWS * K; i++)
			xf[i] = ((float)x_data[i] - 131.0f) * SX;
		in[0].dtype = ES_DT_FLOAT;
		in[0].data = xf;
		in[0].nbytes = sizeof(xf);
	}
	size_t n_in = 1;
	if (v == V_W_INPUT)
		in[n_in++] = (es_tensor){ .dtype = ES_DT_INT8, .ndim = 2, .dims = { K, N },
					  .data = wq, .nbytes = sizeof(wq) };
	if (v == V_ZP_INPUT)
		in[n_in++] = (es_tensor){ .dtype = ES_DT_UINT8, .ndim = 0, .data = &zx,
					  .nbytes = 1 };
	size_t n_out = es_model_num_outputs(plain);
	es_tensor a[3], b[3];
	es_error err = { 0 };
	if (gb_run(plain, in, n_in, a, &err) || gb_run(opt, in, n_in, b, &err))
		fail_msg("run: %s", err.msg);
	for (size_t o = 0; o < n_out; o++) {
		assert_string_equal(es_model_output(plain, o)->name, es_model_output(opt, o)->name);
		compare_outputs(&b[o], &a[o]);
		free(a[o].data);
		free(b[o].data);
	}
	es_model_release(plain);
	es_model_release(opt);
}

static void test_matmul(void **state)
{
	(void)state;
	check(V_MM, 3, 1, true);
}

static void test_matmul_q(void **state)
{
	(void)state;
	check(V_MM_Q, 4, 1, true);
}

static void test_gemm_bias_q(void **state)
{
	(void)state;
	check(V_GEMM_BIAS_Q, 5, 1, true);
}

static void test_gemm_float(void **state)
{
	(void)state;
	check(V_GEMM, 3, 1, true);
}

static void test_partial(void **state)
{
	(void)state;
	/* the float product stays observable: QGemm (float) + Q */
	check(V_MM_OUT_Q, 4, 2, true);
	/* DQ(x) stays for the Relu */
	check(V_SHARED_DQ, 4, 3, true);
}

static void test_from_quantize(void **state)
{
	(void)state;
	/* Q, DQ(x), DQ(w), MatMul -> Q, QGemm */
	check(V_FROM_Q, 4, 2, true);
}

static void test_must_not_fire(void **state)
{
	(void)state;
	check(V_W_INPUT, 3, 3, false);
	check(V_W_AXIS0, 3, 2, false); /* DQ(w) folds to a float constant */
	check(V_BIAS_SCALE, 5, 3, false);
	check(V_ALPHA, 5, 3, false);
	check(V_ZP_INPUT, 3, 2, false);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_matmul),
		cmocka_unit_test(test_matmul_q),
		cmocka_unit_test(test_gemm_bias_q),
		cmocka_unit_test(test_gemm_float),
		cmocka_unit_test(test_partial),
		cmocka_unit_test(test_from_quantize),
		cmocka_unit_test(test_must_not_fire),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
