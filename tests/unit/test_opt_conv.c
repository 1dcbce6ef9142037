/*
 * Convolution fusions (opt/fuse_conv.c) and the FusedConv kernel
 * (ops/conv.c): graphs built in memory, optimized and not, run side by
 * side on random inputs.
 *
 * - conv_bn_fold: Conv + BatchNormalization -> one Conv (node counts),
 *   same outputs; not when the Conv output has a second reader, when a BN
 *   parameter is computed at run time, or when BN's mean output is read.
 * - fuse_conv: Conv + Add + Relu, Conv + Clip, Conv + LeakyRelu, Conv +
 *   Add -> FusedConv; not across a value with two readers or a graph
 *   output, not an Add of a constant, not a Clip whose min exceeds max.
 * - FusedConv with a residual Z whose shape differs from the convolution
 *   output (the pass cannot know it): broadcast either way, same answer as
 *   the unfused graph; an incompatible Z fails naming the node.
 * - A Z that is also the convolution's X (Y must not overwrite X).
 * - Passes are idempotent on the optimized graph.
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

/* ---- helpers --------------------------------------------------------------------- */

/* A positive random constant (BatchNormalization variances). */
static int pos_const(es_graph *g, const char *name, int64_t m)
{
	float *buf = malloc((size_t)m * sizeof(float));
	assert_non_null(buf);
	for (int64_t i = 0; i < m; i++)
		buf[i] = 0.5f + fabsf(gb_rand());
	int v = gb_const_f32(g, name, 1, &m, buf);
	free(buf);
	return v;
}

/* Input tensors of random values for shapes dims[i][0..nd[i]). */
struct feed {
	int n;
	es_tensor t[3];
};

static void feed_add(struct feed *f, int ndim, const int64_t *dims)
{
	f->t[f->n++] = gb_rand_tensor(ndim, dims);
}

static void feed_free(struct feed *f)
{
	for (int i = 0; i < f->n; i++)
		free(f->t[i].data);
}

/* Builds the graph twice, optimized and not, runs both on f and checks
 * every output agrees. Returns the optimized model (caller releases). */
static es_model *both(es_graph *(*build)(void), struct feed *f)
{
	return gb_both(build, f->t, (size_t)f->n);
}

static const int64_t x_dims[4] = { 1, 4, 6, 6 };
static const int64_t w_dims[4] = { 6, 4, 3, 3 };
static const int64_t b_dims[1] = { 6 };
static const int64_t y_dims[4] = { 1, 6, 6, 6 };

/* x -> Conv(3x3, pad 1, 4 -> 6 channels) -> c; returns the node. */
static int conv(es_graph *g, int x, int c, bool bias)
{
	int in[3] = { x, gb_rand_const(g, "W", 4, w_dims, 1.0f), bias ? gb_rand_const(g, "B", 1, b_dims, 1.0f) : -1 };
	int n = gb_node(g, "Conv", "conv", in, bias ? 3 : 2, &c, 1);
	int64_t pads[4] = { 1, 1, 1, 1 };
	gb_attr_ints(g, n, "pads", pads, 4);
	return n;
}

/* ---- Conv + BatchNormalization ------------------------------------------------- */

static int bn(es_graph *g, int c, int y, bool mean_input)
{
	int in[5] = { c, gb_rand_const(g, "scale", 1, b_dims, 1.0f), gb_rand_const(g, "bias", 1, b_dims, 1.0f),
		      mean_input ? gb_input(g, "mean", ES_DT_FLOAT, 1, b_dims) :
				   gb_rand_const(g, "mean", 1, b_dims, 1.0f),
		      pos_const(g, "var", 6) };
	int n = gb_node(g, "BatchNormalization", "bn", in, 5, &y, 1);
	gb_attr_float(g, n, "epsilon", 1e-3f);
	return n;
}

static es_graph *conv_bn(void)
{
	gb_seed(11);
	es_graph *g = gb_graph(13);
	int x = gb_input(g, "x", ES_DT_FLOAT, 4, x_dims);
	int c = gb_value(g, "c", ES_DT_FLOAT), y = gb_value(g, "y", ES_DT_FLOAT);
	conv(g, x, c, true);
	bn(g, c, y, false);
	gb_output(g, y);
	return g;
}

static es_graph *conv_bn_nobias(void)
{
	gb_seed(12);
	es_graph *g = gb_graph(13);
	int x = gb_input(g, "x", ES_DT_FLOAT, 4, x_dims);
	int c = gb_value(g, "c", ES_DT_FLOAT), y = gb_value(g, "y", ES_DT_FLOAT);
	conv(g, x, c, false);
	bn(g, c, y, false);
	gb_output(g, y);
	return g;
}

/* the Conv output is also a graph output */
static es_graph *conv_bn_shared(void)
{
	gb_seed(13);
	es_graph *g = gb_graph(13);
	int x = gb_input(g, "x", ES_DT_FLOAT, 4, x_dims);
	int c = gb_value(g, "c", ES_DT_FLOAT), y = gb_value(g, "y", ES_DT_FLOAT);
	conv(g, x, c, true);
	bn(g, c, y, false);
	gb_output(g, y);
	gb_output(g, c);
	return g;
}

/* the BN mean is a graph input */
static es_graph *conv_bn_dynamic(void)
{
	gb_seed(14);
	es_graph *g = gb_graph(13);
	int x = gb_input(g, "x", ES_DT_FLOAT, 4, x_dims);
	int c = gb_value(g, "c", ES_DT_FLOAT), y = gb_value(g, "y", ES_DT_FLOAT);
	conv(g, x, c, true);
	bn(g, c, y, true);
	gb_output(g, y);
	return g;
}

static void test_conv_bn_folds(void **state)
{
	(void)state;
	es_graph *(*builds[2])(void) = { conv_bn, conv_bn_nobias };
	for (int i = 0; i < 2; i++) {
		struct feed f = { 0 };
		feed_add(&f, 4, x_dims);
		es_model *m = both(builds[i], &f);
		const es_opt_pass_stat *s = gb_pass_stat(m, "conv_bn_fold");
		assert_int_equal(s->nodes_before, 2);
		assert_int_equal(s->nodes_after, 1);
		assert_int_equal(s->changes, 1);
		assert_int_equal(gb_count_op(m, "BatchNormalization"), 0);
		es_model_release(m);
		feed_free(&f);
	}
}

static void test_conv_bn_not_folded(void **state)
{
	(void)state;
	struct feed f = { 0 };
	feed_add(&f, 4, x_dims);
	es_model *m = both(conv_bn_shared, &f);
	assert_int_equal(gb_pass_stat(m, "conv_bn_fold")->changes, 0);
	assert_int_equal(gb_count_op(m, "BatchNormalization"), 1);
	es_model_release(m);

	feed_add(&f, 1, b_dims); /* the mean */
	m = both(conv_bn_dynamic, &f);
	assert_int_equal(gb_pass_stat(m, "conv_bn_fold")->changes, 0);
	assert_int_equal(gb_count_op(m, "BatchNormalization"), 1);
	es_model_release(m);
	feed_free(&f);
}

/* ---- Conv [+ Add] [+ activation] ------------------------------------------------ */

/* x -> Conv -> Add(z) -> Relu -> y */
static es_graph *conv_add_relu(void)
{
	gb_seed(21);
	es_graph *g = gb_graph(13);
	int x = gb_input(g, "x", ES_DT_FLOAT, 4, x_dims);
	int z = gb_input(g, "z", ES_DT_FLOAT, 4, y_dims);
	int c = gb_value(g, "c", ES_DT_FLOAT), s = gb_value(g, "s", ES_DT_FLOAT);
	int y = gb_value(g, "y", ES_DT_FLOAT);
	conv(g, x, c, true);
	int add_in[2] = { z, c }; /* the conv output second */
	gb_node(g, "Add", "add", add_in, 2, &s, 1);
	gb_node(g, "Relu", "relu", &s, 1, &y, 1);
	gb_output(g, y);
	return g;
}

/* x -> Conv -> Clip(0, 6) -> y (Clip-13 bounds as inputs) */
static es_graph *conv_clip(void)
{
	gb_seed(22);
	es_graph *g = gb_graph(13);
	int x = gb_input(g, "x", ES_DT_FLOAT, 4, x_dims);
	int c = gb_value(g, "c", ES_DT_FLOAT), y = gb_value(g, "y", ES_DT_FLOAT);
	conv(g, x, c, true);
	int in[3] = { c, gb_scalar_f32(g, "lo", 0.0f), gb_scalar_f32(g, "hi", 0.5f) };
	gb_node(g, "Clip", "clip", in, 3, &y, 1);
	gb_output(g, y);
	return g;
}

/* x -> Conv -> LeakyRelu(0.2) -> y, no bias */
static es_graph *conv_leaky(void)
{
	gb_seed(23);
	es_graph *g = gb_graph(13);
	int x = gb_input(g, "x", ES_DT_FLOAT, 4, x_dims);
	int c = gb_value(g, "c", ES_DT_FLOAT), y = gb_value(g, "y", ES_DT_FLOAT);
	conv(g, x, c, false);
	int n = gb_node(g, "LeakyRelu", "leaky", &c, 1, &y, 1);
	gb_attr_float(g, n, "alpha", 0.2f);
	gb_output(g, y);
	return g;
}

/* x -> Conv -> Add(z) -> y, the Add's output also read by a Relu: the
 * Add fuses, the Relu (second reader... no: s is a graph output) stays */
static es_graph *conv_add_out(void)
{
	gb_seed(24);
	es_graph *g = gb_graph(13);
	int x = gb_input(g, "x", ES_DT_FLOAT, 4, x_dims);
	int z = gb_input(g, "z", ES_DT_FLOAT, 4, y_dims);
	int c = gb_value(g, "c", ES_DT_FLOAT), s = gb_value(g, "s", ES_DT_FLOAT);
	int y = gb_value(g, "y", ES_DT_FLOAT);
	conv(g, x, c, true);
	int add_in[2] = { c, z };
	gb_node(g, "Add", "add", add_in, 2, &s, 1);
	gb_node(g, "Relu", "relu", &s, 1, &y, 1);
	gb_output(g, s);
	gb_output(g, y);
	return g;
}

static void test_fusions(void **state)
{
	(void)state;
	struct feed f = { 0 };
	feed_add(&f, 4, x_dims);
	feed_add(&f, 4, y_dims);
	es_model *m = both(conv_add_relu, &f);
	const es_opt_pass_stat *s = gb_pass_stat(m, "fuse_conv");
	assert_int_equal(s->nodes_before, 3);
	assert_int_equal(s->nodes_after, 1);
	assert_int_equal(gb_count_op(m, "Add") + gb_count_op(m, "Relu") + gb_count_op(m, "Conv"), 0);
	es_model_release(m);

	m = both(conv_add_out, &f);
	s = gb_pass_stat(m, "fuse_conv");
	assert_int_equal(s->nodes_before, 3);
	assert_int_equal(s->nodes_after, 2); /* FusedConv (with Z), Relu */
	assert_int_equal(gb_count_op(m, "Relu"), 1);
	es_model_release(m);
	feed_free(&f);

	es_graph *(*one[2])(void) = { conv_clip, conv_leaky };
	for (int i = 0; i < 2; i++) {
		struct feed f1 = { 0 };
		feed_add(&f1, 4, x_dims);
		m = both(one[i], &f1);
		s = gb_pass_stat(m, "fuse_conv");
		assert_int_equal(s->nodes_before, 2);
		assert_int_equal(s->nodes_after, 1);
		es_model_release(m);
		feed_free(&f1);
	}
}

/* Conv -> Add(constant [6,1,1]) -> Relu: a bias-like Add is not a
 * residual, and the Relu then does not follow the Conv directly. */
static es_graph *conv_add_const(void)
{
	gb_seed(31);
	es_graph *g = gb_graph(13);
	int x = gb_input(g, "x", ES_DT_FLOAT, 4, x_dims);
	int c = gb_value(g, "c", ES_DT_FLOAT), s = gb_value(g, "s", ES_DT_FLOAT);
	int y = gb_value(g, "y", ES_DT_FLOAT);
	conv(g, x, c, true);
	int64_t kd[3] = { 6, 1, 1 };
	int add_in[2] = { c, gb_rand_const(g, "k", 3, kd, 1.0f) };
	gb_node(g, "Add", "add", add_in, 2, &s, 1);
	gb_node(g, "Relu", "relu", &s, 1, &y, 1);
	gb_output(g, y);
	return g;
}

/* Conv whose output is read twice (Relu and Sigmoid): nothing fuses */
static es_graph *conv_two_readers(void)
{
	gb_seed(32);
	es_graph *g = gb_graph(13);
	int x = gb_input(g, "x", ES_DT_FLOAT, 4, x_dims);
	int c = gb_value(g, "c", ES_DT_FLOAT), y = gb_value(g, "y", ES_DT_FLOAT);
	int y2 = gb_value(g, "y2", ES_DT_FLOAT);
	conv(g, x, c, true);
	gb_node(g, "Relu", "relu", &c, 1, &y, 1);
	gb_node(g, "Sigmoid", "sig", &c, 1, &y2, 1);
	gb_output(g, y);
	gb_output(g, y2);
	return g;
}

/* Conv output is a graph output and read by a Relu */
static es_graph *conv_output_read(void)
{
	gb_seed(33);
	es_graph *g = gb_graph(13);
	int x = gb_input(g, "x", ES_DT_FLOAT, 4, x_dims);
	int c = gb_value(g, "c", ES_DT_FLOAT), y = gb_value(g, "y", ES_DT_FLOAT);
	conv(g, x, c, true);
	gb_node(g, "Relu", "relu", &c, 1, &y, 1);
	gb_output(g, c);
	gb_output(g, y);
	return g;
}

/* Clip with min > max (ONNX: everything becomes max): not fused */
static es_graph *conv_clip_inverted(void)
{
	gb_seed(34);
	es_graph *g = gb_graph(13);
	int x = gb_input(g, "x", ES_DT_FLOAT, 4, x_dims);
	int c = gb_value(g, "c", ES_DT_FLOAT), y = gb_value(g, "y", ES_DT_FLOAT);
	conv(g, x, c, true);
	int in[3] = { c, gb_scalar_f32(g, "lo", 1.0f), gb_scalar_f32(g, "hi", 0.5f) };
	gb_node(g, "Clip", "clip", in, 3, &y, 1);
	gb_output(g, y);
	return g;
}

static void test_no_fusion(void **state)
{
	(void)state;
	es_graph *(*builds[4])(void) = { conv_add_const, conv_two_readers, conv_output_read,
					 conv_clip_inverted };
	for (int i = 0; i < 4; i++) {
		struct feed f = { 0 };
		feed_add(&f, 4, x_dims);
		es_model *m = both(builds[i], &f);
		const es_opt_pass_stat *s = gb_pass_stat(m, "fuse_conv");
		assert_int_equal(s->changes, 0);
		assert_int_equal(s->nodes_before, s->nodes_after);
		es_model_release(m);
		feed_free(&f);
	}
}

/* ---- FusedConv at run time ---------------------------------------------------- */

/* x [1,4,h,w] -> Conv (3x3, no pad) -> Add(z, shape unknown) -> Relu */
static es_graph *conv_add_dynamic(void)
{
	gb_seed(41);
	es_graph *g = gb_graph(13);
	int64_t xd[4] = { 1, 4, -1, -1 };
	int x = gb_input(g, "x", ES_DT_FLOAT, 4, xd);
	int z = gb_value(g, "z", ES_DT_FLOAT);
	g->values[z].is_input = true;
	g->values[z].ndim = -1;
	int *ins = realloc(g->inputs, sizeof(int) * (size_t)(g->n_inputs + 1));
	assert_non_null(ins);
	g->inputs = ins;
	g->inputs[g->n_inputs++] = z;
	int c = gb_value(g, "c", ES_DT_FLOAT), s = gb_value(g, "s", ES_DT_FLOAT);
	int y = gb_value(g, "y", ES_DT_FLOAT);
	int in[3] = { x, gb_rand_const(g, "W", 4, w_dims, 1.0f), gb_rand_const(g, "B", 1, b_dims, 1.0f) };
	gb_node(g, "Conv", "conv", in, 3, &c, 1);
	int add_in[2] = { c, z };
	gb_node(g, "Add", "add", add_in, 2, &s, 1);
	gb_node(g, "Relu", "relu", &s, 1, &y, 1);
	gb_output(g, y);
	return g;
}

static void test_residual_broadcast(void **state)
{
	(void)state;
	/* Z smaller than Y, Z larger than Y (Y [1,6,1,1] from a 3x3 input),
	 * Z of Y's shape */
	const int64_t cases[3][2][4] = {
		{ { 1, 4, 5, 5 }, { 6, 1, 1 } },
		{ { 1, 4, 3, 3 }, { 2, 6, 4, 4 } },
		{ { 1, 4, 5, 5 }, { 1, 6, 3, 3 } },
	};
	const int zn[3] = { 3, 4, 4 };
	for (int i = 0; i < 3; i++) {
		struct feed f = { 0 };
		feed_add(&f, 4, cases[i][0]);
		feed_add(&f, zn[i], cases[i][1]);
		es_model *m = both(conv_add_dynamic, &f);
		assert_int_equal(gb_count_op(m, "FusedConv"), 1);
		assert_int_equal(es_model_num_nodes(m), 1); /* Z's rank unknown: NCHW */
		es_model_release(m);
		feed_free(&f);
	}

	/* a Z that does not broadcast: the node is named */
	struct feed f = { 0 };
	int64_t bad[4] = { 1, 5, 3, 3 };
	feed_add(&f, 4, cases[2][0]);
	feed_add(&f, 4, bad);
	es_model *m = gb_model(conv_add_dynamic(), false);
	es_tensor out[1];
	es_error err = { 0 };
	assert_int_equal(gb_run(m, f.t, 2, out, &err), ES_ESHAPE);
	assert_non_null(strstr(err.msg, "conv"));
	assert_non_null(strstr(err.msg, "Z"));
	es_model_release(m);
	feed_free(&f);
}

/* x -> Conv(1x1, 4 -> 4) -> Add(x) -> Relu: Z is X itself */
static es_graph *conv_add_self(void)
{
	gb_seed(51);
	es_graph *g = gb_graph(13);
	int x = gb_input(g, "x", ES_DT_FLOAT, 4, x_dims);
	int c = gb_value(g, "c", ES_DT_FLOAT), s = gb_value(g, "s", ES_DT_FLOAT);
	int y = gb_value(g, "y", ES_DT_FLOAT);
	int r = gb_value(g, "r", ES_DT_FLOAT);
	gb_node(g, "Relu", "pre", &x, 1, &r, 1); /* a computed X the Add reuses */
	int64_t wd[4] = { 4, 4, 1, 1 };
	int in[2] = { r, gb_rand_const(g, "W", 4, wd, 1.0f) };
	gb_node(g, "Conv", "conv", in, 2, &c, 1);
	int add_in[2] = { c, r };
	gb_node(g, "Add", "add", add_in, 2, &s, 1);
	gb_node(g, "Relu", "relu", &s, 1, &y, 1);
	gb_output(g, y);
	return g;
}

static void test_residual_is_input(void **state)
{
	(void)state;
	struct feed f = { 0 };
	feed_add(&f, 4, x_dims);
	es_model *m = both(conv_add_self, &f);
	assert_int_equal(gb_count_op(m, "FusedConv"), 1);
	es_model_release(m);
	feed_free(&f);
}

/* A bad activation attribute is refused at load, naming the node. */
static void test_bad_activation(void **state)
{
	(void)state;
	es_graph *g = gb_graph(13);
	int x = gb_input(g, "x", ES_DT_FLOAT, 4, x_dims);
	int y = gb_value(g, "y", ES_DT_FLOAT);
	int in[2] = { x, gb_rand_const(g, "W", 4, w_dims, 1.0f) };
	int n = gb_node_in(g, ES_DOMAIN, "FusedConv", "fc", in, 2, &y, 1);
	gb_attr_string(g, n, "activation", "Gelu");
	gb_output(g, y);
	/* import the engine's domain as the optimizer would (a model file
	 * may not; es_model_from_graph is the optimizer output's path) */
	es_opset_import *o = realloc(g->opsets, sizeof(*o) * (size_t)(g->n_opsets + 1));
	assert_non_null(o);
	g->opsets = o;
	o[g->n_opsets].domain = strdup(ES_DOMAIN);
	o[g->n_opsets].version = ES_DOMAIN_VERSION;
	g->n_opsets++;
	es_model *m = NULL;
	es_error err = { 0 };
	int rc = gb_model_err(g, true, &m, &err);
	assert_int_equal(rc, ES_EINVAL);
	assert_null(m);
	assert_non_null(strstr(err.msg, "fc"));
	assert_non_null(strstr(err.msg, "Gelu"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_conv_bn_folds),
		cmocka_unit_test(test_conv_bn_not_folded),
		cmocka_unit_test(test_fusions),
		cmocka_unit_test(test_no_fusion),
		cmocka_unit_test(test_residual_broadcast),
		cmocka_unit_test(test_residual_is_input),
		cmocka_unit_test(test_bad_activation),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
