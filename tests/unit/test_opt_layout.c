/*
 * Channels-last layout (opt/layout.c) and the kernels it relies on
 * (FusedConv channels_last, the ES_DOMAIN pools, Transpose): graphs built
 * in memory, optimized and not, run side by side on random inputs.
 *
 * - A ResNet-like stem and block (Conv, Relu, MaxPool, Conv + Add + Relu,
 *   AveragePool, Sigmoid * x, GlobalAveragePool, Flatten) runs
 *   channels-last with exactly one Transpose in and one out.
 * - A region tensor that is also a graph output, or read by an op outside
 *   the region, gets its NCHW value back under its own name.
 * - Must not fire: 1-D convolutions, an Add of a region tensor and a
 *   constant (which would broadcast differently) stays NCHW, a
 *   convolution whose W is computed at run time.
 * - Pools with padding, strides, dilations, ceil_mode, count_include_pad.
 * - transpose_cleanup removes a Transpose and its inverse; a Transpose
 *   that only moves size-1 axes is a view.
 * - The pipeline is idempotent on the optimized graph.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/model_int.h"
#include "engine/opt/opt.h"
#include "engine/opt/passes.h"
#include "engine/ops/conv_ref.h"
#include "support/graph_builder.h"

/* ---- helpers --------------------------------------------------------------------- */

/* Optimized and unoptimized runs agree on x; the output names stay; a
 * second pipeline run changes nothing. Returns the optimized model. */
static es_model *both(es_graph *(*build)(void), const es_tensor *x)
{
	return gb_both(build, x, 1);
}

/* in -> Conv(k x k, pad, stride) -> out */
static void conv(es_graph *g, int in, int out, int64_t cin, int64_t cout, int64_t k,
		 int64_t pad, int64_t stride)
{
	int64_t wd[4] = { cout, cin, k, k }, bd[1] = { cout };
	int ins[3] = { in, gb_rand_const(g, "W", 4, wd, 0.5f), gb_rand_const(g, "B", 1, bd, 0.5f) };
	int n = gb_node(g, "Conv", "conv", ins, 3, &out, 1);
	int64_t pads[4] = { pad, pad, pad, pad }, st[2] = { stride, stride };
	gb_attr_ints(g, n, "pads", pads, 4);
	gb_attr_ints(g, n, "strides", st, 2);
}

static int val(es_graph *g, const char *name)
{
	return gb_value(g, name, ES_DT_FLOAT);
}

/* ---- graphs ---------------------------------------------------------------------- */

static const int64_t x_dims[4] = { 2, 3, 13, 11 };

static es_graph *resnet_like(void)
{
	gb_seed(101);
	es_graph *g = gb_graph(13);
	int x = gb_input(g, "x", ES_DT_FLOAT, 4, x_dims);
	int c1 = val(g, "c1"), r1 = val(g, "r1"), p1 = val(g, "p1");
	int c2 = val(g, "c2"), r2 = val(g, "r2"), c3 = val(g, "c3"), s3 = val(g, "s3");
	int r3 = val(g, "r3"), ap = val(g, "ap"), sg = val(g, "sg"), sw = val(g, "sw");
	int gp = val(g, "gp"), y = val(g, "y");
	conv(g, x, c1, 3, 8, 3, 1, 2);
	gb_node(g, "Relu", "relu1", &c1, 1, &r1, 1);
	int n = gb_node(g, "MaxPool", "pool", &r1, 1, &p1, 1);
	int64_t k3[2] = { 3, 3 }, pads[4] = { 1, 0, 1, 1 }, s2[2] = { 2, 2 };
	gb_attr_ints(g, n, "kernel_shape", k3, 2);
	gb_attr_ints(g, n, "pads", pads, 4);
	gb_attr_ints(g, n, "strides", s2, 2);
	gb_attr_int(g, n, "ceil_mode", 1);
	conv(g, p1, c2, 8, 8, 3, 1, 1);
	gb_node(g, "Relu", "relu2", &c2, 1, &r2, 1);
	conv(g, r2, c3, 8, 8, 1, 0, 1);
	int add_in[2] = { c3, p1 };
	gb_node(g, "Add", "add", add_in, 2, &s3, 1);
	gb_node(g, "Relu", "relu3", &s3, 1, &r3, 1);
	n = gb_node(g, "AveragePool", "avg", &r3, 1, &ap, 1);
	int64_t k2[2] = { 2, 2 }, pads1[4] = { 1, 1, 1, 1 };
	gb_attr_ints(g, n, "kernel_shape", k2, 2);
	gb_attr_ints(g, n, "pads", pads1, 4);
	gb_attr_int(g, n, "count_include_pad", 1);
	gb_node(g, "Sigmoid", "sig", &ap, 1, &sg, 1);
	int mul_in[2] = { ap, sg };
	gb_node(g, "Mul", "swish", mul_in, 2, &sw, 1);
	gb_node(g, "GlobalAveragePool", "gap", &sw, 1, &gp, 1);
	gb_node(g, "Flatten", "flat", &gp, 1, &y, 1);
	gb_output(g, y);
	return g;
}

static void test_region(void **state)
{
	(void)state;
	es_tensor x = gb_rand_tensor(4, x_dims);
	es_model *m = both(resnet_like, &x);
	const es_opt_pass_stat *s = gb_pass_stat(m, "layout_nhwc");
	/* 13 nodes, 9 once conv+relu, conv+relu, conv+add+relu are fused */
	assert_int_equal(s->nodes_before, 9);
	assert_int_equal(s->nodes_after, 11); /* + 1 entry, 1 exit Transpose */
	assert_int_equal(gb_count_op(m, "Transpose"), 2);
	for (int n = 0; n < m->graph->n_nodes; n++) {
		const es_node *node = &m->graph->nodes[n];
		if (!strcmp(node->op_type, "FusedConv") || strstr(node->op_type, "Pool")) {
			const es_attr *a = es_node_attr(node, "channels_last");
			assert_non_null(a);
			assert_int_equal(a->i, 1);
		}
	}
	es_model_release(m);
	free(x.data);
}

/* conv -> relu (graph output) -> conv -> Add(constant [8,1,1]) -> y,
 * and the relu also read by a Neg outside the region */
static es_graph *exits(void)
{
	gb_seed(102);
	es_graph *g = gb_graph(13);
	int x = gb_input(g, "x", ES_DT_FLOAT, 4, x_dims);
	int c1 = val(g, "c1"), r1 = val(g, "r1"), c2 = val(g, "c2"), y = val(g, "y");
	int ng = val(g, "neg");
	conv(g, x, c1, 3, 8, 3, 1, 1);
	gb_node(g, "Relu", "relu1", &c1, 1, &r1, 1);
	gb_node(g, "Neg", "neg", &r1, 1, &ng, 1);
	conv(g, r1, c2, 8, 8, 3, 0, 2);
	int64_t kd[3] = { 8, 1, 1 };
	int add_in[2] = { c2, gb_rand_const(g, "k", 3, kd, 0.5f) };
	gb_node(g, "Add", "add", add_in, 2, &y, 1);
	gb_output(g, r1);
	gb_output(g, y);
	gb_output(g, ng);
	return g;
}

static void test_exits_and_outside_ops(void **state)
{
	(void)state;
	es_tensor x = gb_rand_tensor(4, x_dims);
	es_model *m = both(exits, &x);
	/* FusedConv(+Relu), Neg, Conv, Add -> entry, 2 FusedConv, 2 exits,
	 * Neg, Add: the Add of a constant stays outside */
	assert_int_equal(gb_count_op(m, "Transpose"), 3);
	assert_int_equal(gb_count_op(m, "Add"), 1);
	assert_int_equal(es_model_num_nodes(m), 7);
	es_model_release(m);
	free(x.data);
}

/* a 1-D convolution: nothing changes */
static es_graph *conv1d(void)
{
	gb_seed(103);
	es_graph *g = gb_graph(13);
	int64_t xd[3] = { 1, 3, 9 }, wd[3] = { 4, 3, 3 };
	int x = gb_input(g, "x", ES_DT_FLOAT, 3, xd);
	int c = val(g, "c"), y = val(g, "y");
	int in[2] = { x, gb_rand_const(g, "W", 3, wd, 0.5f) };
	gb_node(g, "Conv", "conv", in, 2, &c, 1);
	gb_node(g, "Relu", "relu", &c, 1, &y, 1);
	gb_output(g, y);
	return g;
}

static void test_conv1d_untouched(void **state)
{
	(void)state;
	int64_t xd[3] = { 1, 3, 9 };
	es_tensor x = gb_rand_tensor(3, xd);
	es_model *m = both(conv1d, &x);
	assert_int_equal(gb_pass_stat(m, "layout_nhwc")->changes, 0);
	assert_int_equal(gb_count_op(m, "Transpose"), 0);
	es_model_release(m);
	free(x.data);
}

/* X with no channels: oneDNN refuses the problem, so the channels-last
 * FusedConv falls back to the reference (through NCHW copies) and
 * outputs act(B + Z) */
static es_graph *no_channels(void)
{
	gb_seed(107);
	es_graph *g = gb_graph(13);
	int64_t xd[4] = { 1, 0, 5, 4 }, zd[4] = { 1, 3, 5, 4 }, wd[4] = { 3, 0, 3, 3 };
	int64_t bd[1] = { 3 };
	int x = gb_input(g, "x", ES_DT_FLOAT, 4, xd);
	int z = gb_input(g, "z", ES_DT_FLOAT, 4, zd);
	int c = val(g, "c"), s = val(g, "s"), y = val(g, "y");
	int in[3] = { x, gb_const_f32(g, "W", 4, wd, NULL), gb_rand_const(g, "B", 1, bd, 0.5f) };
	int n = gb_node(g, "Conv", "conv", in, 3, &c, 1);
	int64_t pads[4] = { 1, 1, 1, 1 };
	gb_attr_ints(g, n, "pads", pads, 4);
	int add_in[2] = { c, z };
	gb_node(g, "Add", "add", add_in, 2, &s, 1);
	gb_node(g, "Relu", "relu", &s, 1, &y, 1);
	gb_output(g, y);
	return g;
}

static void test_reference_fallback(void **state)
{
	(void)state;
	int64_t xd[4] = { 1, 0, 5, 4 }, zd[4] = { 1, 3, 5, 4 };
	es_tensor in[2] = { gb_rand_tensor(4, xd), gb_rand_tensor(4, zd) };
	es_model *plain = gb_model(no_channels(), true);
	es_model *opt = gb_model(no_channels(), false);
	assert_int_equal(gb_count_op(opt, "FusedConv"), 1);
	assert_int_equal(gb_count_op(opt, "Transpose"), 3);
	es_tensor a[1], b[1];
	es_error err = { 0 };
	if (gb_run(plain, in, 2, a, &err) || gb_run(opt, in, 2, b, &err))
		fail_msg("run: %s", err.msg);
	gb_assert_close(&b[0], &a[0], 1e-6, 1e-6);
	free(a[0].data);
	free(b[0].data);
	free(in[0].data);
	free(in[1].data);
	es_model_release(plain);
	es_model_release(opt);
}

/* a 2-D convolution whose W is computed at run time (W = Relu(w_in)):
 * not a region member (the kernel could not pack W once anyway) */
static es_graph *conv_dynamic_w(void)
{
	gb_seed(106);
	es_graph *g = gb_graph(13);
	int64_t xd[4] = { 1, 3, 9, 9 }, wd[4] = { 4, 3, 3, 3 };
	int x = gb_input(g, "x", ES_DT_FLOAT, 4, xd);
	int wr = val(g, "wr"), c = val(g, "c"), y = val(g, "y");
	int wc = gb_rand_const(g, "W", 4, wd, 0.5f);
	gb_node(g, "Relu", "wrelu", &wc, 1, &wr, 1);
	int in[2] = { x, wr };
	gb_node(g, "Conv", "conv", in, 2, &c, 1);
	gb_node(g, "Relu", "relu", &c, 1, &y, 1);
	gb_output(g, y);
	return g;
}

static void test_dynamic_w_untouched(void **state)
{
	(void)state;
	/* loading folds Relu(constant) into a constant, so the pass runs
	 * here on the graph as built, where W is a node's output */
	es_graph *g = conv_dynamic_w();
	es_error err = { 0 };
	assert_int_equal(es_graph_finalize(g, &err), 0);
	es_pass_ctx c = { .err = &err };
	assert_int_equal(es_pass_layout_nhwc.run(g, &c), 0);
	assert_int_equal(c.changes, 0);
	es_graph_free(g);
}

/* x -> Transpose(0,2,3,1) -> Transpose(0,3,1,2) -> Relu -> y, and
 * x -> Transpose(0,2,3,1) of a [N,C,1,1] tensor (a view) -> z */
static es_graph *transposes(void)
{
	es_graph *g = gb_graph(13);
	int64_t xd[4] = { 2, 5, 1, 1 };
	int x = gb_input(g, "x", ES_DT_FLOAT, 4, xd);
	int a = val(g, "a"), b = val(g, "b"), y = val(g, "y"), z = val(g, "z");
	int64_t p1[4] = { 0, 2, 3, 1 }, p2[4] = { 0, 3, 1, 2 };
	int n = gb_node(g, "Transpose", "t1", &x, 1, &a, 1);
	gb_attr_ints(g, n, "perm", p1, 4);
	n = gb_node(g, "Transpose", "t2", &a, 1, &b, 1);
	gb_attr_ints(g, n, "perm", p2, 4);
	gb_node(g, "Relu", "relu", &b, 1, &y, 1);
	n = gb_node(g, "Transpose", "t3", &x, 1, &z, 1);
	gb_attr_ints(g, n, "perm", p1, 4);
	gb_output(g, y);
	gb_output(g, z);
	return g;
}

static void test_transpose_cleanup(void **state)
{
	(void)state;
	int64_t xd[4] = { 2, 5, 1, 1 };
	es_tensor x = gb_rand_tensor(4, xd);
	es_model *m = both(transposes, &x);
	const es_opt_pass_stat *s = gb_pass_stat(m, "transpose_cleanup");
	assert_int_equal(s->nodes_before, 4);
	assert_int_equal(s->nodes_after, 3); /* t2 gone, t1 unread (compacted later) */
	assert_int_equal(s->changes, 1);
	es_tensor out[2];
	es_error err = { 0 };
	assert_int_equal(gb_run(m, &x, 1, out, &err), 0);
	assert_int_equal(out[1].ndim, 4);
	assert_int_equal(out[1].dims[3], 5);
	assert_memory_equal(out[1].data, x.data, x.nbytes); /* size-1 moves keep order */
	free(out[0].data);
	free(out[1].data);
	es_model_release(m);
	free(x.data);
}

/* Pool variants, each alone between two convolutions */
static int pool_case;

static es_graph *pools(void)
{
	gb_seed(104);
	es_graph *g = gb_graph(13);
	int x = gb_input(g, "x", ES_DT_FLOAT, 4, x_dims);
	int c = val(g, "c"), p = val(g, "p"), y = val(g, "y");
	conv(g, x, c, 3, 16, 1, 0, 1);
	const char *op = pool_case < 2 ? "MaxPool" : pool_case < 4 ? "AveragePool" :
			 pool_case == 4 ? "GlobalMaxPool" : "GlobalAveragePool";
	int n = gb_node(g, op, "pool", &c, 1, &p, 1);
	int64_t k[2] = { 3, 2 }, pads[4] = { 1, 0, 2, 1 }, st[2] = { 2, 1 }, dil[2] = { 2, 1 };
	if (pool_case < 4) {
		gb_attr_ints(g, n, "kernel_shape", k, 2);
		gb_attr_ints(g, n, "pads", pads, 4);
		gb_attr_ints(g, n, "strides", st, 2);
	}
	if (pool_case == 1)
		gb_attr_ints(g, n, "dilations", dil, 2);
	if (pool_case == 0 || pool_case == 3)
		gb_attr_int(g, n, "ceil_mode", 1);
	if (pool_case == 3)
		gb_attr_int(g, n, "count_include_pad", 1);
	conv(g, p, y, 16, 4, 1, 0, 1);
	gb_output(g, y);
	return g;
}

static void test_pools(void **state)
{
	(void)state;
	es_tensor x = gb_rand_tensor(4, x_dims);
	for (pool_case = 0; pool_case < 6; pool_case++) {
		es_model *m = both(pools, &x);
		assert_int_equal(gb_count_op(m, "Transpose"), 2);
		es_model_release(m);
	}
	free(x.data);
}

/* Convolution variants channels-last: depthwise, grouped + dilated,
 * SAME_UPPER with stride, 1x1 without bias, each followed by LeakyRelu */
static int conv_case;

static es_graph *conv_variants(void)
{
	gb_seed(105 + (uint64_t)conv_case);
	es_graph *g = gb_graph(13);
	int64_t xd[4] = { 1, 8, 11, 9 };
	int x = gb_input(g, "x", ES_DT_FLOAT, 4, xd);
	int c = val(g, "c"), y = val(g, "y");
	int64_t wd[4][4] = { { 8, 1, 3, 3 }, { 6, 4, 3, 2 }, { 5, 8, 5, 5 }, { 7, 8, 1, 1 } };
	int64_t bd[1] = { wd[conv_case][0] };
	int in[3] = { x, gb_rand_const(g, "W", 4, wd[conv_case], 0.5f), gb_rand_const(g, "B", 1, bd, 0.5f) };
	int n = gb_node(g, "Conv", "conv", in, conv_case == 3 ? 2 : 3, &c, 1);
	int64_t pads[4] = { 1, 0, 2, 1 }, s2[2] = { 2, 2 }, dil[2] = { 2, 2 };
	switch (conv_case) {
	case 0:
		gb_attr_int(g, n, "group", 8);
		gb_attr_ints(g, n, "pads", pads, 4);
		gb_attr_ints(g, n, "strides", s2, 2);
		break;
	case 1:
		gb_attr_int(g, n, "group", 2);
		gb_attr_ints(g, n, "dilations", dil, 2);
		gb_attr_ints(g, n, "pads", pads, 4);
		break;
	case 2:
		gb_attr_string(g, n, "auto_pad", "SAME_UPPER");
		gb_attr_ints(g, n, "strides", s2, 2);
		break;
	default:
		break;
	}
	n = gb_node(g, "LeakyRelu", "leaky", &c, 1, &y, 1);
	gb_attr_float(g, n, "alpha", 0.1f);
	gb_output(g, y);
	return g;
}

static void test_conv_variants(void **state)
{
	(void)state;
	int64_t xd[4] = { 1, 8, 11, 9 };
	es_tensor x = gb_rand_tensor(4, xd);
	for (conv_case = 0; conv_case < 4; conv_case++) {
		es_model *m = both(conv_variants, &x);
		assert_int_equal(gb_count_op(m, "FusedConv"), 1);
		assert_int_equal(gb_count_op(m, "Transpose"), 2);
		assert_int_equal(gb_count_op(m, "LeakyRelu"), 0);
		es_model_release(m);
	}
	free(x.data);
}

/* a residual Z from a graph input of known rank 4 enters the region
 * through its own Transpose */
static es_graph *residual_input(void)
{
	gb_seed(110);
	es_graph *g = gb_graph(13);
	int64_t xd[4] = { 1, 8, 7, 7 };
	int x = gb_input(g, "x", ES_DT_FLOAT, 4, xd);
	int z = gb_input(g, "z", ES_DT_FLOAT, 4, xd);
	int c = val(g, "c"), s = val(g, "s"), y = val(g, "y");
	conv(g, x, c, 8, 8, 3, 1, 1);
	int add_in[2] = { c, z };
	gb_node(g, "Add", "add", add_in, 2, &s, 1);
	gb_node(g, "Relu", "relu", &s, 1, &y, 1);
	gb_output(g, y);
	return g;
}

static void test_residual_enters(void **state)
{
	(void)state;
	int64_t xd[4] = { 1, 8, 7, 7 };
	es_tensor in[2] = { gb_rand_tensor(4, xd), gb_rand_tensor(4, xd) };
	es_model *plain = gb_model(residual_input(), true);
	es_model *opt = gb_model(residual_input(), false);
	es_tensor a[1], b[1];
	es_error err = { 0 };
	assert_int_equal(gb_run(plain, in, 2, a, &err), 0);
	assert_int_equal(gb_run(opt, in, 2, b, &err), 0);
	gb_assert_close(&b[0], &a[0], 1e-4, 1e-4);
	assert_int_equal(gb_count_op(opt, "Transpose"), 3); /* x, z in; y out */
	assert_int_equal(gb_count_op(opt, "FusedConv"), 1);
	free(a[0].data);
	free(b[0].data);
	free(in[0].data);
	free(in[1].data);
	es_model_release(plain);
	es_model_release(opt);
}

/* 3x3 stride-1 convolutions with whole 16-channel blocks take oneDNN's
 * Winograd algorithm inside the channels-last region (X and Y move to
 * 16-channel blocks and back, the residual too): conv + relu, then conv +
 * residual + relu, batch 2, odd spatial sizes. */
static es_graph *winograd_block(void)
{
	gb_seed(111);
	es_graph *g = gb_graph(13);
	int64_t xd[4] = { 2, 32, 9, 13 };
	int x = gb_input(g, "x", ES_DT_FLOAT, 4, xd);
	int c1 = val(g, "c1"), r1 = val(g, "r1"), c2 = val(g, "c2"), s = val(g, "s");
	int y = val(g, "y");
	conv(g, x, c1, 32, 48, 3, 1, 1);
	gb_node(g, "Relu", "relu1", &c1, 1, &r1, 1);
	conv(g, r1, c2, 48, 32, 3, 1, 1);
	int add_in[2] = { c2, x };
	gb_node(g, "Add", "add", add_in, 2, &s, 1);
	gb_node(g, "Relu", "relu2", &s, 1, &y, 1);
	gb_output(g, y);
	return g;
}

static void test_winograd_block(void **state)
{
	(void)state;
	int64_t xd[4] = { 2, 32, 9, 13 };
	es_tensor x = gb_rand_tensor(4, xd);
	uint64_t before = es_conv_winograd_runs();
	es_model *m = both(winograd_block, &x); /* outputs equal the plain graph's */
	assert_int_equal(gb_count_op(m, "FusedConv"), 2);
	const char *off = getenv("ES_CONV_WINOGRAD");
	if (!off || strcmp(off, "0"))
		assert_true(es_conv_winograd_runs() >= before + 2);
	else
		assert_true(es_conv_winograd_runs() == before);
	es_model_release(m);
	free(x.data);
}

/* The optimized graph (FusedConv, channels-last pools, Transposes) goes
 * through the compiled form unchanged: same nodes, same outputs. */
static void test_compiled_round_trip(void **state)
{
	(void)state;
	es_tensor x = gb_rand_tensor(4, x_dims);
	es_model *m = gb_model(resnet_like(), false);
	char path[] = "/tmp/es_test_layout_XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	uint8_t key[ES_COMPILED_KEY_BYTES] = { 7 };
	es_error err = { 0 };
	if (es_model_save_compiled(m, fd, key, &err))
		fail_msg("save: %s", err.msg);
	close(fd);
	es_model *back = NULL;
	if (es_model_load_compiled(path, NULL, key, &back, &err))
		fail_msg("load: %s", err.msg);
	unlink(path);
	assert_int_equal(es_model_num_nodes(back), es_model_num_nodes(m));
	for (int i = 0; i < back->opt.n_passes; i++)
		assert_int_equal(back->opt.pass[i].changes, 0);
	es_tensor a[1], b[1];
	assert_int_equal(gb_run(m, &x, 1, a, &err), 0);
	assert_int_equal(gb_run(back, &x, 1, b, &err), 0);
	gb_assert_close(&b[0], &a[0], 0, 0);
	free(a[0].data);
	free(b[0].data);
	es_model_release(back);
	es_model_release(m);
	free(x.data);
}

/* Number of kernel-saved packed-weight attributes on node n. */
static int packed_attrs(const es_node *node)
{
	int c = 0;
	for (int a = 0; a < node->n_attrs; a++)
		c += !strncmp(node->attrs[a].name, "es.packed_weights.", 18);
	return c;
}

static es_model *save_and_load(const es_model *m, const uint8_t *key)
{
	char path[] = "/tmp/es_test_layout_XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	es_error err = { 0 };
	if (es_model_save_compiled(m, fd, key, &err))
		fail_msg("save: %s", err.msg);
	close(fd);
	es_model *back = NULL;
	if (es_model_load_compiled(path, NULL, key, &back, &err))
		fail_msg("load: %s", err.msg);
	unlink(path);
	return back;
}

/* A model that ran keeps its packed convolution weights in the compiled
 * form; the model loaded from it adopts them (no packing) and computes the
 * same outputs; saving that model again stores each set once. */
static void test_compiled_packed_weights(void **state)
{
	(void)state;
	es_tensor x = gb_rand_tensor(4, x_dims);
	es_model *m = gb_model(resnet_like(), false);
	uint8_t key[ES_COMPILED_KEY_BYTES] = { 9 };
	es_error err = { 0 };
	es_tensor a[1], b[1], c[1];
	assert_int_equal(gb_run(m, &x, 1, a, &err), 0);

	es_model *back = save_and_load(m, key);
	int convs = 0, saved = 0;
	for (int n = 0; n < back->graph->n_nodes; n++) {
		const es_node *node = &back->graph->nodes[n];
		if (strcmp(node->op_type, "FusedConv"))
			continue;
		convs++;
		saved += packed_attrs(node);
		assert_true(packed_attrs(node) >= 1);
	}
	assert_int_equal(convs, 3);
	uint64_t before = es_conv_adopted_weights();
	assert_int_equal(gb_run(back, &x, 1, b, &err), 0);
	gb_assert_close(&b[0], &a[0], 0, 0);
	assert_int_equal(es_conv_adopted_weights() - before, (uint64_t)saved);

	/* a session of another thread count makes primitives of its own; they
	 * adopt the same weights where they want the same layout, and compute
	 * the same outputs either way */
	{
		es_session *s2 = NULL;
		es_session_options so = { .threads = 2 };
		es_tensor out2[1];
		assert_int_equal(es_session_create(back, &so, &s2, &err), 0);
		assert_int_equal(es_session_run(s2, &x, 1, out2, &err), 0);
		gb_assert_close(&out2[0], &a[0], 1e-5, 1e-5);
		es_session_destroy(s2);
	}

	/* saved again: the adopted sets replace the loaded attributes */
	es_model *again = save_and_load(back, key);
	for (int n = 0; n < again->graph->n_nodes; n++)
		assert_int_equal(packed_attrs(&again->graph->nodes[n]),
				 packed_attrs(&back->graph->nodes[n]));
	assert_int_equal(gb_run(again, &x, 1, c, &err), 0);
	gb_assert_close(&c[0], &a[0], 0, 0);

	/* a model that never ran has nothing packed to keep */
	es_model *fresh = gb_model(resnet_like(), false);
	es_model *empty = save_and_load(fresh, key);
	for (int n = 0; n < empty->graph->n_nodes; n++)
		assert_int_equal(packed_attrs(&empty->graph->nodes[n]), 0);

	free(a[0].data);
	free(b[0].data);
	free(c[0].data);
	es_model_release(empty);
	es_model_release(fresh);
	es_model_release(again);
	es_model_release(back);
	es_model_release(m);
	free(x.data);
}

/* Kernel-saved data lies after the part the file's checksum covers (the
 * header's checked length): a flipped byte there still loads, and the
 * kernel, which checks that data's own CRC before adopting it, packs
 * again instead: same outputs, nothing adopted. */
static void test_packed_weights_damaged(void **state)
{
	(void)state;
	es_tensor x = gb_rand_tensor(4, x_dims);
	es_model *m = gb_model(resnet_like(), false);
	uint8_t key[ES_COMPILED_KEY_BYTES] = { 5 };
	es_error err = { 0 };
	es_tensor a[1], b[1];
	assert_int_equal(gb_run(m, &x, 1, a, &err), 0);

	char path[] = "/tmp/es_test_layout_XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	if (es_model_save_compiled(m, fd, key, &err))
		fail_msg("save: %s", err.msg);
	off_t len = lseek(fd, 0, SEEK_END);
	uint8_t hdr[ES_COMPILED_HEADER_SIZE];
	assert_int_equal(pread(fd, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
	uint64_t checked = 0;
	for (int i = 7; i >= 0; i--)
		checked = checked << 8 | hdr[ES_COMPILED_OFF_CHECKED_LEN + i];
	off_t tail = (off_t)(ES_COMPILED_HEADER_SIZE + checked);
	assert_true(tail < len); /* the packed weights are there */
	uint8_t byte;
	off_t at = tail + (len - tail) / 2;
	assert_int_equal(pread(fd, &byte, 1, at), 1);
	byte ^= 0x40;
	assert_int_equal(pwrite(fd, &byte, 1, at), 1);
	close(fd);

	es_model *back = NULL;
	if (es_model_load_compiled(path, NULL, key, &back, &err))
		fail_msg("load: %s", err.msg);
	unlink(path);
	uint64_t before = es_conv_adopted_weights();
	assert_int_equal(gb_run(back, &x, 1, b, &err), 0);
	gb_assert_close(&b[0], &a[0], 0, 0);
	/* the damaged set is refused; the other convolutions' sets are not */
	uint64_t adopted = es_conv_adopted_weights() - before;
	int sets = 0;
	for (int n = 0; n < back->graph->n_nodes; n++)
		sets += packed_attrs(&back->graph->nodes[n]);
	assert_int_equal(adopted, (uint64_t)sets - 1);
	free(a[0].data);
	free(b[0].data);
	es_model_release(back);
	es_model_release(m);
	free(x.data);
}

/* Packed-weight attributes that do not fit (garbage, a header whose sizes
 * do not match) are ignored: the weights are packed as usual. (A key or
 * layout that does not match: test_compiled_packed_weights.) */
static es_graph *fused_with_bogus_packing(void)
{
	gb_seed(112);
	es_graph *g = gb_graph(13);
	int64_t xd[4] = { 1, 16, 8, 8 }, wd[4] = { 16, 16, 3, 3 };
	int x = gb_input(g, "x", ES_DT_FLOAT, 4, xd);
	int y = val(g, "y");
	int ins[2] = { x, gb_rand_const(g, "W", 4, wd, 0.5f) };
	gb_import(g, ES_DOMAIN, ES_DOMAIN_VERSION);
	int n = gb_node_in(g, ES_DOMAIN, "FusedConv", "fc", ins, 2, &y, 1);
	int64_t pads[4] = { 1, 1, 1, 1 };
	gb_attr_ints(g, n, "pads", pads, 4);
	gb_output(g, y);
	/* three bogus blobs: garbage, and two headers with wrong sizes */
	static const size_t sizes[3] = { 100, 4096, 0 };
	for (int i = 0; i < 3; i++) {
		es_node *node = &g->nodes[n];
		es_attr *at = realloc(node->attrs, (size_t)(node->n_attrs + 1) * sizeof(*at));
		assert_non_null(at);
		node->attrs = at;
		es_attr *a = &at[node->n_attrs++];
		memset(a, 0, sizeof(*a));
		char name[40];
		snprintf(name, sizeof(name), "es.packed_weights.%d", i);
		a->name = strdup(name);
		a->type = ES_ATTR_TENSOR;
		a->t = calloc(1, sizeof(*a->t));
		int64_t total = (int64_t)(sizes[i] ? sizes[i] : 1024 + 16 * 16 * 9 * 4);
		es_error err = { 0 };
		assert_int_equal(es_tensor_alloc(a->t, ES_DT_UINT8, 1, &total, &err), 0);
		uint8_t *b = a->t->data;
		memset(b, i == 0 ? 0xa5 : 0, (size_t)total);
		if (i) {
			memcpy(b, "ESPW", 4);
			uint32_t v = 1;
			memcpy(b + 4, &v, 4);
			uint64_t off = 1024, bytes = (uint64_t)total - 1024;
			memcpy(b + 16, &off, 8);
			memcpy(b + 24, &bytes, 8);
		}
	}
	return g;
}

static void test_packed_attrs_untrusted(void **state)
{
	(void)state;
	int64_t xd[4] = { 1, 16, 8, 8 };
	es_tensor x = gb_rand_tensor(4, xd);
	uint64_t before = es_conv_adopted_weights();
	es_model *m = gb_both(fused_with_bogus_packing, &x, 1);
	assert_int_equal(es_conv_adopted_weights(), before);
	es_model_release(m);
	free(x.data);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_region),
		cmocka_unit_test(test_exits_and_outside_ops),
		cmocka_unit_test(test_conv1d_untouched),
		cmocka_unit_test(test_dynamic_w_untouched),
		cmocka_unit_test(test_reference_fallback),
		cmocka_unit_test(test_transpose_cleanup),
		cmocka_unit_test(test_pools),
		cmocka_unit_test(test_conv_variants),
		cmocka_unit_test(test_residual_enters),
		cmocka_unit_test(test_winograd_block),
		cmocka_unit_test(test_compiled_round_trip),
		cmocka_unit_test(test_compiled_packed_weights),
		cmocka_unit_test(test_packed_weights_damaged),
		cmocka_unit_test(test_packed_attrs_untrusted),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
