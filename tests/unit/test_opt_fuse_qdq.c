/*
 * The int8 pass (opt/fuse_qdq.c), the int8 regions of layout_nhwc and the
 * deferred folding of constant DequantizeLinear (model.c): QDQ graphs built
 * in memory, optimized and not, run side by side on random inputs.
 *
 * - Q <- [Relu] <- Conv(DQ(x), DQ(w), [DQ(b)]) -> one QConv; per-tensor and
 *   per-channel weights, with and without bias and Relu.
 * - Q <- [Relu] <- Add(DQ(a), DQ(b)) -> QAdd: equal bit for bit.
 * - DQ -> MaxPool -> Q with equal parameters -> MaxPool on uint8, and
 *   channels-last (QMaxPool) inside an int8 convolution region.
 * - A residual block (two QConv, QAdd, Q/DQ, GlobalAveragePool) runs as one
 *   channels-last region with one Transpose in and one out.
 * - Nothing fires for: per-axis activation scales, a weight scale computed
 *   at run time, a Conv output also read elsewhere, a Q scale computed at
 *   run time, float weights without DQ, a bias at the wrong scale, a
 *   MaxPool whose Q has another scale.
 * - A constant DequantizeLinear the pass leaves is still folded at load.
 * - The pass is idempotent.
 *
 * Tolerance: QConv requantizes with one multiplication by x_scale * w_scale
 * / y_scale where the float graph divides (x_scale * w_scale * acc) by
 * y_scale; where that value lies within float rounding of a .5 tie, the
 * two round half to even to neighbouring integers. So outputs may differ
 * by one quantization step on a tiny fraction of elements (none in
 * practice here), never more.
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

/* ---- building QDQ graphs ---------------------------------------------------------- */

static const int64_t x_dims[4] = { 1, 4, 8, 8 };
static const int64_t y_dims[4] = { 1, 6, 8, 8 };
#define M 6
#define C 4

static const float sx = 2.0f / 255.0f; /* inputs in [-1, 1] */
static const uint8_t zx = 128;

/* Q(v) -> DQ with scalar constant scale / zero point; the Q output into
 * *q (may be NULL); returns the DQ output. */
static int qdq(es_graph *g, int v, const char *name, float scale, uint8_t zp, int *q)
{
	char n1[64], n2[64], n3[64], n4[64];
	snprintf(n1, sizeof(n1), "%s/q", name);
	snprintf(n2, sizeof(n2), "%s/dq", name);
	snprintf(n3, sizeof(n3), "%s/scale", name);
	snprintf(n4, sizeof(n4), "%s/zero_point", name);
	int s = gb_scalar_f32(g, n3, scale);
	int z = gb_const(g, n4, ES_DT_UINT8, 0, NULL, &zp);
	int qv = gb_value(g, n1, ES_DT_UNDEFINED), dv = gb_value(g, n2, ES_DT_FLOAT);
	int in[3] = { v, s, z };
	gb_node(g, "QuantizeLinear", n1, in, 3, &qv, 1);
	in[0] = qv;
	gb_node(g, "DequantizeLinear", n2, in, 3, &dv, 1);
	if (q)
		*q = qv;
	return dv;
}

/* Per-channel (or per-tensor) weight scales. */
static void weight_scales(float *sw, bool per_channel)
{
	for (int m = 0; m < M; m++)
		sw[m] = per_channel ? 0.004f * (1.0f + 0.25f * (float)m) : 0.005f;
}

/* DQ(int8 weight [M, C, 3, 3], sw, 0); sw_input >= 0 replaces the scale
 * constant (a scale computed at run time). */
static int weight(es_graph *g, const float *sw, bool per_channel, int sw_input)
{
	static int8_t w[M * C * 9];
	int64_t wd[4] = { M, C, 3, 3 }, md = M;
	for (int i = 0; i < M * C * 9; i++)
		w[i] = (int8_t)lrintf(gb_rand() * 127.0f);
	int wq = gb_const(g, "wq", ES_DT_INT8, 4, wd, w);
	int8_t zeros[M] = { 0 };
	int s = sw_input >= 0 ? sw_input :
		per_channel ? gb_const_f32(g, "sw", 1, &md, sw) : gb_scalar_f32(g, "sw", sw[0]);
	int z = per_channel ? gb_const(g, "zw", ES_DT_INT8, 1, &md, zeros)
			    : gb_const(g, "zw", ES_DT_INT8, 0, NULL, zeros);
	int dv = gb_value(g, "w", ES_DT_FLOAT);
	int in[3] = { wq, s, z };
	int n = gb_node(g, "DequantizeLinear", "w/dq", in, 3, &dv, 1);
	gb_attr_int(g, n, "axis", 0);
	return dv;
}

/* DQ(int32 bias [M], bias_scale[m] = sx * sw[m] * factor, 0). */
static int bias(es_graph *g, const float *sw, float factor)
{
	int32_t b[M];
	float s[M];
	int64_t md = M;
	for (int m = 0; m < M; m++) {
		b[m] = (int32_t)lrintf(gb_rand() * 2000.0f);
		s[m] = sx * sw[m] * factor;
	}
	int bq = gb_const(g, "bq", ES_DT_INT32, 1, &md, b);
	int sv = gb_const_f32(g, "sb", 1, &md, s);
	int dv = gb_value(g, "b", ES_DT_FLOAT);
	int in[2] = { bq, sv };
	int n = gb_node(g, "DequantizeLinear", "b/dq", in, 2, &dv, 1);
	gb_attr_int(g, n, "axis", 0);
	return dv;
}

struct conv_opts {
	bool per_channel, with_bias, relu;
	bool per_axis_x;      /* x's DQ scale per channel (must not fire) */
	bool runtime_w_scale; /* weight scale a graph input (must not fire) */
	bool conv_out_read;   /* the Conv output also a graph output */
	bool runtime_q_scale; /* the output Q's scale a graph input */
	bool float_w;         /* float weights, no DQ */
	bool bad_bias_scale;  /* bias scale 2 * sx * sw */
	bool maxpool;         /* then DQ -> MaxPool -> Q -> DQ */
};

static struct conv_opts copts;

/* x -> Q -> DQ -> Conv [-> Relu] -> Q -> DQ -> y (-> MaxPool ...). */
static es_graph *conv_graph(void)
{
	const struct conv_opts *o = &copts;
	float sw[M];
	gb_seed(21);
	es_graph *g = gb_graph(13);
	int x = gb_input(g, "x", ES_DT_FLOAT, 4, x_dims);
	int xd;
	weight_scales(sw, o->per_channel);
	if (o->per_axis_x) {
		float s[C];
		uint8_t z[C];
		int64_t cd = C;
		for (int c = 0; c < C; c++) {
			s[c] = sx * (1.0f + 0.1f * (float)c);
			z[c] = zx;
		}
		int sv = gb_const_f32(g, "sx", 1, &cd, s), zv = gb_const(g, "zx", ES_DT_UINT8, 1, &cd, z);
		int q = gb_value(g, "xq", ES_DT_UNDEFINED);
		xd = gb_value(g, "xd", ES_DT_FLOAT);
		int in[3] = { x, sv, zv };
		gb_node(g, "QuantizeLinear", "xq", in, 3, &q, 1);
		in[0] = q;
		gb_node(g, "DequantizeLinear", "xd", in, 3, &xd, 1);
	} else {
		xd = qdq(g, x, "x", sx, zx, NULL);
	}
	int64_t md = M;
	int sw_in = o->runtime_w_scale ? gb_input(g, "sw_in", ES_DT_FLOAT, 1, &md) : -1;
	int64_t wd[4] = { M, C, 3, 3 };
	int wv = o->float_w ? gb_rand_const(g, "wf", 4, wd, 0.3f) :
		 weight(g, sw, o->per_channel, sw_in);
	int bv = o->with_bias ? bias(g, sw, o->bad_bias_scale ? 2.0f : 1.0f) : -1;
	int c = gb_value(g, "c", ES_DT_FLOAT);
	int in[3] = { xd, wv, bv };
	int n = gb_node(g, "Conv", "conv", in, bv >= 0 ? 3 : 2, &c, 1);
	int64_t pads[4] = { 1, 1, 1, 1 };
	gb_attr_ints(g, n, "pads", pads, 4);
	if (o->conv_out_read)
		gb_output(g, c);
	int a = c;
	if (o->relu) {
		a = gb_value(g, "r", ES_DT_FLOAT);
		gb_node(g, "Relu", "relu", &c, 1, &a, 1);
	}
	const float sy = 0.05f;
	const uint8_t zy = o->relu ? 0 : 128;
	int yd;
	if (o->runtime_q_scale) {
		int sv = gb_input(g, "sy_in", ES_DT_FLOAT, 0, NULL);
		int zv = gb_const(g, "zy", ES_DT_UINT8, 0, NULL, &zy);
		int q = gb_value(g, "yq", ES_DT_UNDEFINED);
		yd = gb_value(g, "y", ES_DT_FLOAT);
		int qin[3] = { a, sv, zv };
		gb_node(g, "QuantizeLinear", "yq", qin, 3, &q, 1);
		qin[0] = q;
		gb_node(g, "DequantizeLinear", "yd", qin, 3, &yd, 1);
	} else {
		yd = qdq(g, a, "y", sy, zy, NULL);
	}
	if (o->maxpool) {
		int p = gb_value(g, "p", ES_DT_FLOAT);
		int pn = gb_node(g, "MaxPool", "pool", &yd, 1, &p, 1);
		int64_t k[2] = { 3, 3 }, s[2] = { 2, 2 }, pp[4] = { 1, 1, 1, 1 };
		gb_attr_ints(g, pn, "kernel_shape", k, 2);
		gb_attr_ints(g, pn, "strides", s, 2);
		gb_attr_ints(g, pn, "pads", pp, 4);
		yd = qdq(g, p, "p", sy, zy, NULL);
	}
	gb_output(g, yd);
	return g;
}

/* ---- running both ------------------------------------------------------------------ */

/* Whether a and b (float outputs of dequantized int8 values) differ by
 * more than one step anywhere, or by one step on more than 1/50 of the
 * elements (at least one allowed). */
static void assert_within_step(const es_tensor *a, const es_tensor *b, float step)
{
	assert_int_equal(a->ndim, b->ndim);
	for (int d = 0; d < a->ndim; d++)
		assert_int_equal(a->dims[d], b->dims[d]);
	int64_t n = es_tensor_numel(a), off = 0;
	const float *x = a->data, *y = b->data;
	for (int64_t i = 0; i < n; i++) {
		float diff = fabsf(x[i] - y[i]);
		if (diff > step * 1.01f)
			fail_msg("element %lld: %g vs %g, more than one step %g apart", (long long)i,
				 (double)x[i], (double)y[i], (double)step);
		off += diff > step * 0.01f;
	}
	if (off > 1 && off * 50 > n)
		fail_msg("%lld of %lld elements one step apart", (long long)off, (long long)n);
}

/* Builds twice, runs both on in[], compares output 0 within one step
 * (exact: equal bit for bit). Returns the optimized model. */
static es_model *run_both(es_graph *(*build)(void), const es_tensor *in, size_t n_in,
			  float step, bool exact)
{
	es_model *plain = gb_model(build(), true);
	es_model *opt = gb_model(build(), false);
	es_tensor a[2], b[2];
	es_error err = { 0 };
	size_t n_out = es_model_num_outputs(plain);
	assert_true(n_out <= 2);
	if (gb_run(plain, in, n_in, a, &err))
		fail_msg("unoptimized run: %s", err.msg);
	if (gb_run(opt, in, n_in, b, &err))
		fail_msg("optimized run: %s", err.msg);
	for (size_t o = 0; o < n_out; o++) {
		assert_string_equal(es_model_output(plain, o)->name, es_model_output(opt, o)->name);
		if (exact) {
			assert_int_equal(a[o].nbytes, b[o].nbytes);
			assert_memory_equal(a[o].data, b[o].data, a[o].nbytes);
		} else {
			assert_within_step(&b[o], &a[o], step);
		}
		free(a[o].data);
		free(b[o].data);
	}
	es_model_release(plain);
	return opt;
}

static es_model *run_conv(const struct conv_opts *o)
{
	copts = *o;
	es_tensor x = gb_rand_tensor(4, x_dims);
	es_tensor in[3] = { x };
	size_t n_in = 1;
	float sw[M];
	float sy = 0.05f;
	if (o->runtime_w_scale) {
		weight_scales(sw, o->per_channel);
		in[n_in++] = (es_tensor){ .dtype = ES_DT_FLOAT, .ndim = 1, .dims = { M },
					  .data = sw, .nbytes = sizeof(sw) };
	}
	if (o->runtime_q_scale)
		in[n_in++] = (es_tensor){ .dtype = ES_DT_FLOAT, .ndim = 0, .data = &sy,
					  .nbytes = sizeof(sy) };
	es_model *m = run_both(conv_graph, in, n_in, 0.05f, false);
	free(x.data);
	return m;
}

/* ---- Conv ------------------------------------------------------------------------- */

static void test_conv_fusions(void **state)
{
	(void)state;
	static const struct conv_opts cases[] = {
		{ .per_channel = true, .with_bias = true, .relu = true },
		{ .per_channel = true, .with_bias = false, .relu = false },
		{ .per_channel = false, .with_bias = true, .relu = false },
		{ .per_channel = false, .with_bias = false, .relu = true },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		es_model *m = run_conv(&cases[i]);
		const es_opt_pass_stat *st = gb_pass_stat(m, "fuse_qdq");
		/* Q, DQ, DQ(w), [DQ(b)], Conv, [Relu], Q, DQ -> Q, QConv, DQ */
		int before = 6 + cases[i].with_bias + cases[i].relu;
		assert_int_equal(st->nodes_before, before);
		assert_int_equal(st->nodes_after, 3);
		assert_int_equal(st->changes, 1);
		assert_int_equal(gb_count_op(m, "QConv"), 1);
		assert_int_equal(gb_count_op(m, "Conv"), 0);
		assert_int_equal(gb_count_op(m, "FusedConv"), 0);
		assert_int_equal(gb_count_op(m, "Relu"), 0);
		/* layout: the int8 convolution runs channels-last */
		for (int n = 0; n < m->graph->n_nodes; n++) {
			const es_node *node = &m->graph->nodes[n];
			if (!strcmp(node->op_type, "QConv")) {
				int64_t cl = 0;
				assert_int_equal(es_node_attr_int(node, "channels_last", 0, &cl, NULL), 0);
				assert_int_equal(cl, 1);
			}
		}
		gb_assert_pass_idempotent(m, &es_pass_fuse_qdq);
		gb_assert_pass_idempotent(m, &es_pass_layout_nhwc);
		es_model_release(m);
	}
}

static void test_conv_maxpool_region(void **state)
{
	(void)state;
	struct conv_opts o = { .per_channel = true, .with_bias = true, .relu = true, .maxpool = true };
	es_model *m = run_conv(&o);
	const es_opt_pass_stat *st = gb_pass_stat(m, "fuse_qdq");
	assert_int_equal(st->changes, 2);
	assert_int_equal(gb_count_op(m, "QConv"), 1);
	/* the uint8 MaxPool joined the channels-last region */
	assert_int_equal(gb_count_op(m, "QMaxPool"), 1);
	assert_int_equal(gb_count_op(m, "MaxPool"), 0);
	gb_assert_pass_idempotent(m, &es_pass_fuse_qdq);
	es_model_release(m);
}

static void test_conv_no_fusion(void **state)
{
	(void)state;
	static const struct conv_opts cases[] = {
		{ .per_channel = true, .with_bias = true, .relu = true, .per_axis_x = true },
		{ .per_channel = true, .with_bias = false, .relu = true, .runtime_w_scale = true },
		{ .per_channel = true, .with_bias = true, .relu = false, .conv_out_read = true },
		{ .per_channel = true, .with_bias = true, .relu = true, .runtime_q_scale = true },
		{ .per_channel = true, .with_bias = false, .relu = true, .float_w = true },
		{ .per_channel = true, .with_bias = true, .relu = true, .bad_bias_scale = true },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		es_model *m = run_conv(&cases[i]);
		const es_opt_pass_stat *st = gb_pass_stat(m, "fuse_qdq");
		assert_int_equal(st->changes, 0);
		assert_int_equal(st->nodes_before, st->nodes_after);
		assert_int_equal(gb_count_op(m, "QConv"), 0);
		if (!cases[i].runtime_w_scale) {
			/* constant weights (and bias) still fold to floats: only
			 * the activations' DequantizeLinear nodes are left */
			assert_int_equal(gb_count_op(m, "DequantizeLinear"), 2);
			assert_int_equal(gb_count_op(m, "FusedConv") + gb_count_op(m, "Conv"), 1);
		}
		es_model_release(m);
	}
}

/* ---- Add --------------------------------------------------------------------------- */

static bool add_relu;

static es_graph *add_graph(void)
{
	es_graph *g = gb_graph(13);
	int a = gb_input(g, "a", ES_DT_FLOAT, 4, y_dims);
	int b = gb_input(g, "b", ES_DT_FLOAT, 4, y_dims);
	int ad = qdq(g, a, "a", 0.011f, 120, NULL), bd = qdq(g, b, "b", 0.007f, 133, NULL);
	int s = gb_value(g, "sum", ES_DT_FLOAT), r = s;
	int in[2] = { ad, bd };
	gb_node(g, "Add", "add", in, 2, &s, 1);
	if (add_relu) {
		r = gb_value(g, "r", ES_DT_FLOAT);
		gb_node(g, "Relu", "relu", &s, 1, &r, 1);
	}
	gb_output(g, qdq(g, r, "y", 0.013f, add_relu ? 0 : 128, NULL));
	return g;
}

static void test_add(void **state)
{
	(void)state;
	for (int relu = 0; relu < 2; relu++) {
		add_relu = relu;
		gb_seed(31);
		es_tensor in[2] = { gb_rand_tensor(4, y_dims), gb_rand_tensor(4, y_dims) };
		es_model *m = run_both(add_graph, in, 2, 0.0f, true);
		const es_opt_pass_stat *st = gb_pass_stat(m, "fuse_qdq");
		/* 2 x (Q, DQ), Add, [Relu], Q, DQ -> 2 Q, QAdd, DQ */
		assert_int_equal(st->nodes_before, 7 + relu);
		assert_int_equal(st->nodes_after, 4);
		assert_int_equal(gb_count_op(m, "QAdd"), 1);
		assert_int_equal(gb_count_op(m, "Add"), 0);
		gb_assert_pass_idempotent(m, &es_pass_fuse_qdq);
		es_model_release(m);
		free(in[0].data);
		free(in[1].data);
	}
}

/* A residual block: x -> Q -> DQ -> Conv -> Relu -> Q -> DQ -> Conv -> Q -> DQ
 * -> Add(the block input's DQ) -> Relu -> Q -> DQ -> GlobalAveragePool. */
static es_graph *block_graph(void)
{
	float sw[M];
	int64_t d6[4] = { 1, M, 8, 8 };
	gb_seed(81);
	es_graph *g = gb_graph(13);
	int x = gb_input(g, "x", ES_DT_FLOAT, 4, d6);
	int xd = qdq(g, x, "x", sx, zx, NULL);
	int h = xd;
	for (int i = 0; i < 2; i++) {
		char name[16];
		snprintf(name, sizeof(name), "c%d", i);
		weight_scales(sw, true);
		static int8_t w[M * M * 9];
		int64_t wd[4] = { M, M, 3, 3 }, md = M;
		for (int j = 0; j < M * M * 9; j++)
			w[j] = (int8_t)lrintf(gb_rand() * 127.0f);
		int8_t zeros[M] = { 0 };
		char n1[32], n2[32], n3[32], n4[32];
		snprintf(n1, sizeof(n1), "%s/wq", name);
		snprintf(n2, sizeof(n2), "%s/sw", name);
		snprintf(n3, sizeof(n3), "%s/zw", name);
		snprintf(n4, sizeof(n4), "%s/w", name);
		int win[3] = { gb_const(g, n1, ES_DT_INT8, 4, wd, w), gb_const_f32(g, n2, 1, &md, sw),
			       gb_const(g, n3, ES_DT_INT8, 1, &md, zeros) };
		int wv = gb_value(g, n4, ES_DT_FLOAT);
		int dn = gb_node(g, "DequantizeLinear", n4, win, 3, &wv, 1);
		gb_attr_int(g, dn, "axis", 0);
		int c = gb_value(g, name, ES_DT_FLOAT);
		int in[2] = { h, wv };
		int n = gb_node(g, "Conv", name, in, 2, &c, 1);
		int64_t pads[4] = { 1, 1, 1, 1 };
		gb_attr_ints(g, n, "pads", pads, 4);
		if (i == 0) {
			int r = gb_value(g, "r0", ES_DT_FLOAT);
			gb_node(g, "Relu", "relu0", &c, 1, &r, 1);
			h = qdq(g, r, "r0", 0.04f, 0, NULL);
		} else {
			h = qdq(g, c, "c1", 0.05f, 128, NULL);
		}
	}
	int s = gb_value(g, "sum", ES_DT_FLOAT), r = gb_value(g, "r1", ES_DT_FLOAT);
	int in[2] = { h, xd };
	gb_node(g, "Add", "add", in, 2, &s, 1);
	gb_node(g, "Relu", "relu1", &s, 1, &r, 1);
	int rd = qdq(g, r, "r1", 0.05f, 0, NULL);
	int p = gb_value(g, "pool", ES_DT_FLOAT);
	gb_node(g, "GlobalAveragePool", "gap", &rd, 1, &p, 1);
	gb_output(g, p);
	return g;
}

static void test_residual_block_region(void **state)
{
	(void)state;
	int64_t d6[4] = { 1, M, 8, 8 };
	gb_seed(82);
	es_tensor x = gb_rand_tensor(4, d6);
	/* the pooled output averages 64 values: one step of 0.05 on one of
	 * them moves it by 0.05 / 64 */
	es_model *m = run_both(block_graph, &x, 1, 0.05f, false);
	assert_int_equal(gb_pass_stat(m, "fuse_qdq")->changes, 3);
	assert_int_equal(gb_count_op(m, "QConv"), 2);
	assert_int_equal(gb_count_op(m, "QAdd"), 1);
	assert_int_equal(gb_count_op(m, "Conv") + gb_count_op(m, "FusedConv"), 0);
	/* one channels-last region: the uint8 input enters through one
	 * Transpose, the pooled float result leaves through one */
	assert_int_equal(gb_count_op(m, "Transpose"), 2);
	gb_assert_pass_idempotent(m, &es_pass_fuse_qdq);
	gb_assert_pass_idempotent(m, &es_pass_layout_nhwc);
	es_model_release(m);
	free(x.data);
}

/* ---- MaxPool ------------------------------------------------------------------------ */

static float pool_q_scale;

static es_graph *pool_graph(void)
{
	es_graph *g = gb_graph(13);
	int x = gb_input(g, "x", ES_DT_FLOAT, 4, y_dims);
	int xd = qdq(g, x, "x", 0.01f, 100, NULL);
	int p = gb_value(g, "p", ES_DT_FLOAT);
	int n = gb_node(g, "MaxPool", "pool", &xd, 1, &p, 1);
	int64_t k[2] = { 2, 2 }, s[2] = { 2, 2 };
	gb_attr_ints(g, n, "kernel_shape", k, 2);
	gb_attr_ints(g, n, "strides", s, 2);
	gb_output(g, qdq(g, p, "y", pool_q_scale, 100, NULL));
	return g;
}

static void test_maxpool(void **state)
{
	(void)state;
	gb_seed(41);
	es_tensor x = gb_rand_tensor(4, y_dims);

	pool_q_scale = 0.01f;
	es_model *m = run_both(pool_graph, &x, 1, 0.0f, true);
	const es_opt_pass_stat *st = gb_pass_stat(m, "fuse_qdq");
	assert_int_equal(st->nodes_before, 5); /* Q, DQ, MaxPool, Q, DQ */
	assert_int_equal(st->nodes_after, 3);  /* Q, MaxPool (uint8), DQ */
	assert_int_equal(gb_count_op(m, "QuantizeLinear"), 1);
	assert_int_equal(gb_count_op(m, "MaxPool"), 1);
	gb_assert_pass_idempotent(m, &es_pass_fuse_qdq);
	es_model_release(m);

	/* another scale after the pool: requantization, not a plain max */
	pool_q_scale = 0.02f;
	m = run_both(pool_graph, &x, 1, 0.0f, true);
	st = gb_pass_stat(m, "fuse_qdq");
	assert_int_equal(st->changes, 0);
	assert_int_equal(gb_count_op(m, "QuantizeLinear"), 2);
	es_model_release(m);
	free(x.data);
}

/* ---- deferred folding ------------------------------------------------------------- */

/* A float Conv whose weight is DQ of an int8 constant (weight-only
 * quantization): nothing to fuse; the weight folds, FusedConv as always. */
static es_graph *weight_only_graph(void)
{
	float sw[M];
	gb_seed(51);
	es_graph *g = gb_graph(13);
	int x = gb_input(g, "x", ES_DT_FLOAT, 4, x_dims);
	weight_scales(sw, true);
	int in[2] = { x, weight(g, sw, true, -1) };
	int c = gb_value(g, "c", ES_DT_FLOAT), r = gb_value(g, "r", ES_DT_FLOAT);
	gb_node(g, "Conv", "conv", in, 2, &c, 1);
	gb_node(g, "Relu", "relu", &c, 1, &r, 1);
	gb_output(g, r);
	return g;
}

static void test_weight_only_folds(void **state)
{
	(void)state;
	gb_seed(52);
	es_tensor x = gb_rand_tensor(4, x_dims);
	es_model *m = gb_both(weight_only_graph, &x, 1);
	assert_int_equal(gb_count_op(m, "DequantizeLinear"), 0);
	assert_int_equal(gb_count_op(m, "FusedConv"), 1);
	assert_int_equal(gb_pass_stat(m, "fuse_qdq")->changes, 0);
	assert_int_equal(gb_pass_stat(m, "fuse_conv")->changes, 1);
	es_model_release(m);
	free(x.data);

	/* unoptimized: nothing folds, as before */
	m = gb_model(weight_only_graph(), true);
	assert_int_equal(gb_count_op(m, "DequantizeLinear"), 1);
	es_model_release(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_conv_fusions),
		cmocka_unit_test(test_conv_maxpool_region),
		cmocka_unit_test(test_conv_no_fusion),
		cmocka_unit_test(test_add),
		cmocka_unit_test(test_residual_block_region),
		cmocka_unit_test(test_maxpool),
		cmocka_unit_test(test_weight_only_folds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
