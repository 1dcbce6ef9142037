/*
 * QuantizeLinear / DequantizeLinear / DynamicQuantizeLinear beyond the ONNX
 * backend cases (which the conformance allowlist runs): ties rounding to
 * even, saturation of both 8-bit types, per-axis parameters, a constant
 * weight's DequantizeLinear folded at load, and every invalid parameter
 * failing with a message that names it.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "support/graph_builder.h"

static es_tensor f32_tensor(const float *data, int ndim, const int64_t *dims)
{
	es_tensor t = { .dtype = ES_DT_FLOAT, .ndim = ndim, .data = (void *)data };
	int64_t n = 1;
	for (int d = 0; d < ndim; d++) {
		t.dims[d] = dims[d];
		n *= dims[d];
	}
	t.nbytes = (size_t)n * sizeof(float);
	return t;
}

/* y = QuantizeLinear(x, scale, zp) with scalar parameters. */
static es_model *quantize_model(int opset, float scale, es_dtype zp_dt, int64_t zp, int64_t n)
{
	es_graph *g = gb_graph(opset);
	int x = gb_input(g, "x", ES_DT_FLOAT, 1, &n);
	int s = gb_scalar_f32(g, "scale", scale);
	int8_t zp8 = (int8_t)zp;
	uint8_t zpu = (uint8_t)zp;
	int z = gb_const(g, "zp", zp_dt, 0, NULL, zp_dt == ES_DT_INT8 ? (void *)&zp8 : (void *)&zpu);
	int y = gb_value(g, "y", zp_dt);
	int in[3] = { x, s, z };
	gb_node(g, "QuantizeLinear", "q", in, 3, &y, 1);
	gb_output(g, y);
	return gb_model(g, false);
}

static void test_quantize_rounding_and_saturation(void **state)
{
	(void)state;
	const float x[] = { -1.5f, -0.5f, 0.5f, 1.5f, 2.5f, 300.0f, -300.0f, 126.5f, -127.5f };
	int64_t n = 9;
	es_tensor in = f32_tensor(x, 1, &n), out;
	es_error err = { 0 };

	es_model *m = quantize_model(13, 1.0f, ES_DT_INT8, 0, n);
	assert_int_equal(gb_run(m, &in, 1, &out, &err), 0);
	const int8_t want8[] = { -2, 0, 0, 2, 2, 127, -128, 126, -128 };
	assert_int_equal(out.dtype, ES_DT_INT8);
	assert_memory_equal(out.data, want8, sizeof(want8));
	free(out.data);
	es_model_release(m);

	/* uint8 with zero point 128 and scale 0.5: x / 0.5 rounds first */
	m = quantize_model(10, 0.5f, ES_DT_UINT8, 128, n);
	assert_int_equal(gb_run(m, &in, 1, &out, &err), 0);
	const uint8_t wantu[] = { 125, 127, 129, 131, 133, 255, 0, 255, 0 };
	assert_int_equal(out.dtype, ES_DT_UINT8);
	assert_memory_equal(out.data, wantu, sizeof(wantu));
	free(out.data);
	es_model_release(m);
}

/* x [2,3] quantized per axis 1 (3 scales and zero points), then
 * dequantized: the round trip is within half a step of each column. */
static void test_per_axis_round_trip(void **state)
{
	(void)state;
	es_graph *g = gb_graph(13);
	int64_t dims[2] = { 2, 3 }, three = 3;
	const float scales[3] = { 0.1f, 0.02f, 1.0f };
	const int8_t zps[3] = { 0, -10, 5 };
	int x = gb_input(g, "x", ES_DT_FLOAT, 2, dims);
	int s = gb_const_f32(g, "scale", 1, &three, scales);
	int z = gb_const(g, "zp", ES_DT_INT8, 1, &three, zps);
	int q = gb_value(g, "q", ES_DT_INT8), y = gb_value(g, "y", ES_DT_FLOAT);
	int qin[3] = { x, s, z }, din[3] = { q, s, z };
	gb_node(g, "QuantizeLinear", "quant", qin, 3, &q, 1);
	gb_node(g, "DequantizeLinear", "dequant", din, 3, &y, 1);
	gb_output(g, y);
	gb_output(g, q);
	es_model *m = gb_model(g, false);
	const float xv[6] = { 0.33f, 0.5f, -7.4f, -1.04f, -2.0f, 99.0f };
	es_tensor in = f32_tensor(xv, 2, dims), out[2];
	es_error err = { 0 };
	assert_int_equal(gb_run(m, &in, 1, out, &err), 0);
	const int8_t *qv = out[1].data;
	const int8_t want_q[6] = { 3, 15, -2, -10, -110, 104 };
	assert_memory_equal(qv, want_q, sizeof(want_q));
	const float *yv = out[0].data;
	for (int i = 0; i < 6; i++) {
		int c = i % 3;
		float lo = -128.0f, hi = 127.0f;
		float clamped = fminf(fmaxf(xv[i], (lo - zps[c]) * scales[c]), (hi - zps[c]) * scales[c]);
		assert_true(fabsf(yv[i] - clamped) <= scales[c] * 0.5f + 1e-6f);
	}
	free(out[0].data);
	free(out[1].data);
	es_model_release(m);
}

/* DequantizeLinear of a constant int8 weight folds into a float constant:
 * one node fewer, same result. */
static es_graph *dq_matmul(void)
{
	es_graph *g = gb_graph(13);
	int64_t xd[2] = { 1, 4 }, wd[2] = { 4, 2 };
	const int8_t w[8] = { 1, -2, 3, -4, 5, -6, 7, -128 };
	int x = gb_input(g, "x", ES_DT_FLOAT, 2, xd);
	int wq = gb_const(g, "w_q", ES_DT_INT8, 2, wd, w);
	int s = gb_scalar_f32(g, "w_scale", 0.25f);
	int wf = gb_value(g, "w", ES_DT_FLOAT), y = gb_value(g, "y", ES_DT_FLOAT);
	int din[2] = { wq, s }, min[2] = { x, wf };
	gb_node(g, "DequantizeLinear", "dq", din, 2, &wf, 1);
	gb_node(g, "MatMul", "mm", min, 2, &y, 1);
	gb_output(g, y);
	return g;
}

static void test_constant_dequantize_folds(void **state)
{
	(void)state;
	es_model *plain = gb_model(dq_matmul(), true), *opt = gb_model(dq_matmul(), false);
	assert_int_equal(es_model_num_nodes(plain), 2);
	assert_int_equal(es_model_num_nodes(opt), 1);
	int64_t xd[2] = { 1, 4 };
	const float xv[4] = { 1.0f, 2.0f, -1.0f, 0.5f };
	es_tensor in = f32_tensor(xv, 2, xd), a, b;
	es_error err = { 0 };
	assert_int_equal(gb_run(plain, &in, 1, &a, &err), 0);
	assert_int_equal(gb_run(opt, &in, 1, &b, &err), 0);
	/* y = x . (w * 0.25): [0.25-1.5+3.5/4... ] computed by hand below */
	const float want[2] = { (1 * 1 + 2 * 3 - 1 * 5 + 0.5f * 7) * 0.25f,
				(1 * -2 + 2 * -4 - 1 * -6 + 0.5f * -128) * 0.25f };
	es_tensor wt = f32_tensor(want, 2, (int64_t[]){ 1, 2 });
	gb_assert_close(&a, &wt, 1e-6, 0);
	gb_assert_close(&b, &wt, 1e-6, 0);
	free(a.data);
	free(b.data);
	es_model_release(plain);
	es_model_release(opt);
}

/* ---- errors ------------------------------------------------------------------------ */

/* Runs QuantizeLinear (or DequantizeLinear when deq) with the given
 * parameter tensors and expects error `code` with `needle` in the
 * message. */
static void expect_error(bool deq, int opset, int64_t axis, es_dtype x_dt, int64_t n_scale,
			 const float *scale, es_dtype zp_dt, const void *zp, int code,
			 const char *needle)
{
	es_graph *g = gb_graph(opset);
	int64_t dims[2] = { 2, 3 };
	int x = gb_input(g, "x", x_dt, 2, dims);
	/* the parameters are graph inputs, so that the checks run at run
	 * time, not in constant folding */
	int s = gb_input(g, "scale", ES_DT_FLOAT, n_scale ? 1 : 0, &n_scale);
	int z = zp ? gb_input(g, "zp", zp_dt, n_scale ? 1 : 0, &n_scale) : -1;
	int y = gb_value(g, "y", deq ? ES_DT_FLOAT : zp_dt);
	int in[3] = { x, s, z };
	int node = gb_node(g, deq ? "DequantizeLinear" : "QuantizeLinear", "the_node", in,
			   zp ? 3 : 2, &y, 1);
	if (axis != 1)
		gb_attr_int(g, node, "axis", axis);
	gb_output(g, y);
	es_model *m = NULL;
	es_error err = { 0 };
	int rc = gb_model_err(g, false, &m, &err);
	if (!rc) {
		uint8_t xbuf[6 * 4] = { 0 };
		int64_t one = n_scale ? n_scale : 1;
		es_tensor ins[3] = {
			{ .dtype = x_dt, .ndim = 2, .dims = { 2, 3 }, .data = xbuf,
			  .nbytes = 6 * (x_dt == ES_DT_FLOAT || x_dt == ES_DT_INT32 ? 4 : 1) },
			{ .dtype = ES_DT_FLOAT, .ndim = n_scale ? 1 : 0, .dims = { n_scale },
			  .data = (void *)scale, .nbytes = (size_t)one * sizeof(float) },
			{ .dtype = zp_dt, .ndim = n_scale ? 1 : 0, .dims = { n_scale },
			  .data = (void *)zp,
			  .nbytes = (size_t)one * (zp_dt == ES_DT_INT32 || zp_dt == ES_DT_FLOAT ? 4 : 1) },
		};
		es_tensor out;
		rc = gb_run(m, ins, zp ? 3 : 2, &out, &err);
		if (!rc)
			free(out.data);
		es_model_release(m);
	}
	if (rc != code || !strstr(err.msg, needle))
		fail_msg("expected code %d with '%s', got %d: %s", code, needle, rc, err.msg);
	if (rc && !strstr(err.msg, "the_node") && rc != ES_ETYPE)
		fail_msg("message does not name the node: %s", err.msg);
}

static void test_errors(void **state)
{
	(void)state;
	const float zero = 0.0f, one = 1.0f, three[3] = { 1, 1, 1 }, two[2] = { 1, 1 };
	const uint8_t zpu = 0, zpu3[3] = { 0 };
	const float zpf = 0.0f;
	const int32_t zp32 = 7;
	expect_error(false, 13, 1, ES_DT_FLOAT, 0, &zero, ES_DT_UINT8, &zpu, ES_EINVAL,
		     "must be nonzero");
	expect_error(false, 13, 1, ES_DT_FLOAT, 0, &one, ES_DT_FLOAT, &zpf, ES_ETYPE,
		     "zero point");
	expect_error(false, 13, 1, ES_DT_FLOAT, 2, two, ES_DT_UINT8, zpu3, ES_ESHAPE,
		     "expected 3");
	expect_error(false, 10, 1, ES_DT_FLOAT, 3, three, ES_DT_UINT8, zpu3, ES_ESHAPE,
		     "must be a scalar");
	expect_error(false, 13, 5, ES_DT_FLOAT, 3, three, ES_DT_UINT8, zpu3, ES_EINVAL,
		     "'axis' = 5");
	expect_error(true, 13, 1, ES_DT_INT32, 0, &one, ES_DT_INT32, &zp32, ES_EINVAL,
		     "int32 input requires a zero point of 0");
	expect_error(true, 13, 1, ES_DT_INT8, 0, &one, ES_DT_UINT8, &zpu, ES_ETYPE,
		     "expected int8");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_quantize_rounding_and_saturation),
		cmocka_unit_test(test_per_axis_round_trip),
		cmocka_unit_test(test_constant_dequantize_folds),
		cmocka_unit_test(test_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
