/*
 * The small int8 operators of the QDQ path (ops/qelem.c), against plain
 * references computed here:
 *
 * - QAdd: uint8 and int8 operands in every combination, Relu, equal shapes
 *   (vector path and its scalar tail) and numpy broadcasting; the result
 *   is the float QDQ arithmetic bit for bit, so the comparison is exact.
 * - QMaxPool (channels-last): pads, strides, dilations, ceil_mode,
 *   SAME_UPPER, uint8 and int8.
 * - Bad inputs fail with the expected code and a message naming the node.
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

#include "engine/opt/opt.h"
#include "support/graph_builder.h"

static void import_es_domain(es_graph *g)
{
	es_opset_import *o = realloc(g->opsets, sizeof(*o) * (size_t)(g->n_opsets + 1));
	assert_non_null(o);
	g->opsets = o;
	o[g->n_opsets].domain = strdup(ES_DOMAIN);
	assert_non_null(o[g->n_opsets].domain);
	o[g->n_opsets].version = ES_DOMAIN_VERSION;
	g->n_opsets++;
}

static es_tensor bytes_tensor(es_dtype dt, int ndim, const int64_t *dims)
{
	es_tensor t = { .dtype = dt, .ndim = ndim };
	int64_t n = gb_numel(dims, ndim);
	for (int d = 0; d < ndim; d++)
		t.dims[d] = dims[d];
	t.nbytes = (size_t)n;
	t.data = malloc((size_t)n + 1);
	assert_non_null(t.data);
	uint8_t *p = t.data;
	for (int64_t i = 0; i < n; i++)
		p[i] = (uint8_t)lrintf((gb_rand() + 1.0f) * 127.5f);
	return t;
}

/* ---- QAdd ----------------------------------------------------------------------------- */

struct qadd_case {
	es_dtype at, bt, yt;
	int an, bn;
	int64_t ad[4], bd[4];
	bool relu;
};

struct qparm {
	float s;
	int z;
};

static const struct qparm pa = { 0.021f, 7 }, pb = { 0.013f, 3 }, py = { 0.03f, 5 };

static int zp_const(es_graph *g, const char *name, es_dtype dt, int z)
{
	uint8_t u = (uint8_t)z;
	int8_t s = (int8_t)z;
	return gb_const(g, name, dt, 0, NULL, dt == ES_DT_UINT8 ? (void *)&u : (void *)&s);
}

static es_graph *qadd_graph(const struct qadd_case *c)
{
	es_graph *g = gb_graph(13);
	import_es_domain(g);
	int a = gb_input(g, "a", c->at, c->an, c->ad);
	int b = gb_input(g, "b", c->bt, c->bn, c->bd);
	int in[8] = {
		a, gb_scalar_f32(g, "as", pa.s), zp_const(g, "az", c->at, pa.z),
		b, gb_scalar_f32(g, "bs", pb.s), zp_const(g, "bz", c->bt, pb.z),
		gb_scalar_f32(g, "ys", py.s), zp_const(g, "yz", c->yt, py.z),
	};
	int y = gb_value(g, "y", c->yt);
	int n = gb_node_in(g, ES_DOMAIN, "QAdd", "qadd", in, 8, &y, 1);
	if (c->relu)
		gb_attr_string(g, n, "activation", "Relu");
	gb_output(g, y);
	return g;
}

static int byte_at(es_dtype dt, const es_tensor *t, int64_t i)
{
	const uint8_t *p = t->data;
	return dt == ES_DT_INT8 ? (int)(int8_t)p[i] : (int)p[i];
}

/* The float QDQ arithmetic: DequantizeLinear, Add, Relu, QuantizeLinear. */
static int ref_qadd(const struct qadd_case *c, int a, int b)
{
	volatile float va = (float)(a - pa.z) * pa.s; /* no contraction */
	volatile float vb = (float)(b - pb.z) * pb.s;
	float v = va + vb;
	if (c->relu && v < 0.0f)
		v = 0.0f;
	float r = rintf(v / py.s) + (float)py.z;
	float lo = c->yt == ES_DT_UINT8 ? 0.0f : -128.0f, hi = c->yt == ES_DT_UINT8 ? 255.0f : 127.0f;
	r = r < lo ? lo : r > hi ? hi : r;
	return (int)r;
}

static void check_qadd(const struct qadd_case *c)
{
	es_model *m = gb_model(qadd_graph(c), true);
	es_tensor in[2] = { bytes_tensor(c->at, c->an, c->ad), bytes_tensor(c->bt, c->bn, c->bd) };
	es_tensor y;
	es_error err = { 0 };
	if (gb_run(m, in, 2, &y, &err))
		fail_msg("run: %s", err.msg);
	/* broadcast shape and reference */
	int rank = c->an > c->bn ? c->an : c->bn;
	int64_t yd[4], sa[4], sb[4], stride_a = 1, stride_b = 1;
	for (int d = rank - 1; d >= 0; d--) {
		int ia = d - (rank - c->an), ib = d - (rank - c->bn);
		int64_t da = ia >= 0 ? c->ad[ia] : 1, db = ib >= 0 ? c->bd[ib] : 1;
		yd[d] = da > db ? da : db;
		sa[d] = da == 1 ? 0 : stride_a;
		sb[d] = db == 1 ? 0 : stride_b;
		stride_a *= da;
		stride_b *= db;
	}
	assert_int_equal(y.dtype, c->yt);
	assert_int_equal(y.ndim, rank);
	for (int d = 0; d < rank; d++)
		assert_int_equal(y.dims[d], yd[d]);
	int64_t n = gb_numel(yd, rank);
	for (int64_t i = 0; i < n; i++) {
		int64_t rem = i, oa = 0, ob = 0;
		for (int d = rank - 1; d >= 0; d--) {
			oa += (rem % yd[d]) * sa[d];
			ob += (rem % yd[d]) * sb[d];
			rem /= yd[d];
		}
		int want = ref_qadd(c, byte_at(c->at, &in[0], oa), byte_at(c->bt, &in[1], ob));
		int got = byte_at(c->yt, &y, i);
		if (want != got)
			fail_msg("element %lld: %d, expected %d", (long long)i, got, want);
	}
	free(y.data);
	free(in[0].data);
	free(in[1].data);
	es_model_release(m);
}

static void test_qadd(void **state)
{
	(void)state;
	const es_dtype U = ES_DT_UINT8, S = ES_DT_INT8;
	const struct qadd_case cases[] = {
		/* equal shapes: 16-wide vector path plus a tail of 7 */
		{ U, U, U, 4, 4, { 1, 3, 5, 5 }, { 1, 3, 5, 5 }, false },
		{ U, U, U, 4, 4, { 1, 3, 5, 5 }, { 1, 3, 5, 5 }, true },
		{ S, U, S, 2, 2, { 9, 13 }, { 9, 13 }, false },
		{ U, S, U, 2, 2, { 9, 13 }, { 9, 13 }, true },
		{ S, S, S, 1, 1, { 40 }, { 40 }, true },
		{ U, U, U, 1, 1, { 3 }, { 3 }, false },
		/* broadcasting both ways and across ranks */
		{ U, U, U, 4, 1, { 1, 3, 4, 5 }, { 5 }, false },
		{ U, S, U, 3, 3, { 2, 1, 5 }, { 1, 4, 1 }, true },
		{ S, U, U, 1, 4, { 1 }, { 2, 3, 2, 2 }, false },
	};
	gb_seed(61);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		check_qadd(&cases[i]);
}

static void test_qadd_errors(void **state)
{
	(void)state;
	/* shapes that do not broadcast */
	struct qadd_case c = { ES_DT_UINT8, ES_DT_UINT8, ES_DT_UINT8, 2, 2, { 2, 3 }, { 2, 4 }, false };
	es_model *m = gb_model(qadd_graph(&c), true);
	es_tensor in[2] = { bytes_tensor(c.at, 2, c.ad), bytes_tensor(c.bt, 2, c.bd) };
	es_tensor y;
	es_error err = { 0 };
	assert_int_equal(gb_run(m, in, 2, &y, &err), ES_ESHAPE);
	assert_non_null(strstr(err.msg, "qadd"));
	assert_non_null(strstr(err.msg, "broadcast"));
	es_model_release(m);
	free(in[0].data);
	free(in[1].data);

	/* a float operand */
	es_graph *g = gb_graph(13);
	import_es_domain(g);
	int64_t d = 4;
	int a = gb_input(g, "a", ES_DT_FLOAT, 1, &d);
	int ins[8] = { a, gb_scalar_f32(g, "as", 1.0f), zp_const(g, "az", ES_DT_UINT8, 0),
		       a, gb_scalar_f32(g, "bs", 1.0f), zp_const(g, "bz", ES_DT_UINT8, 0),
		       gb_scalar_f32(g, "ys", 1.0f), zp_const(g, "yz", ES_DT_UINT8, 0) };
	int yv = gb_value(g, "y", ES_DT_UINT8);
	gb_node_in(g, ES_DOMAIN, "QAdd", "qadd", ins, 8, &yv, 1);
	gb_output(g, yv);
	es_model *mf = NULL;
	int rc = gb_model_err(g, true, &mf, &err);
	if (!rc) {
		es_tensor x = gb_rand_tensor(1, &d);
		rc = gb_run(mf, &x, 1, &y, &err);
		free(x.data);
		es_model_release(mf);
	}
	assert_int_equal(rc, ES_ETYPE);
	assert_non_null(strstr(err.msg, "qadd"));

	/* a bad activation */
	c = (struct qadd_case){ ES_DT_UINT8, ES_DT_UINT8, ES_DT_UINT8, 1, 1, { 2 }, { 2 }, false };
	g = qadd_graph(&c);
	gb_attr_string(g, g->n_nodes - 1, "activation", "Tanh");
	mf = NULL;
	assert_int_equal(gb_model_err(g, true, &mf, &err), ES_EINVAL);
	assert_non_null(strstr(err.msg, "qadd"));
	assert_non_null(strstr(err.msg, "activation"));
}

/* ---- QMaxPool -------------------------------------------------------------------------- */

struct pool_case {
	es_dtype dt;
	int64_t xd[4]; /* N, H, W, C */
	int64_t k[2], s[2], d[2], p[4];
	int ceil_mode;
	const char *auto_pad;
	int64_t oh, ow; /* expected */
};

static void check_pool(const struct pool_case *c)
{
	es_graph *g = gb_graph(13);
	import_es_domain(g);
	int x = gb_input(g, "x", c->dt, 4, c->xd);
	int y = gb_value(g, "y", c->dt);
	int n = gb_node_in(g, ES_DOMAIN, "QMaxPool", "pool", &x, 1, &y, 1);
	gb_attr_ints(g, n, "kernel_shape", c->k, 2);
	gb_attr_ints(g, n, "strides", c->s, 2);
	gb_attr_ints(g, n, "dilations", c->d, 2);
	if (c->auto_pad)
		gb_attr_string(g, n, "auto_pad", c->auto_pad);
	else
		gb_attr_ints(g, n, "pads", c->p, 4);
	gb_attr_int(g, n, "ceil_mode", c->ceil_mode);
	gb_attr_int(g, n, "channels_last", 1);
	gb_output(g, y);
	es_model *m = gb_model(g, true);
	es_tensor in = bytes_tensor(c->dt, 4, c->xd), out;
	es_error err = { 0 };
	if (gb_run(m, &in, 1, &out, &err))
		fail_msg("run: %s", err.msg);
	assert_int_equal(out.dims[0], c->xd[0]);
	assert_int_equal(out.dims[1], c->oh);
	assert_int_equal(out.dims[2], c->ow);
	assert_int_equal(out.dims[3], c->xd[3]);
	int64_t pt = c->p[0], pl = c->p[1];
	if (c->auto_pad) { /* SAME_UPPER: the odd padding at the end */
		int64_t th = (c->oh - 1) * c->s[0] + (c->k[0] - 1) * c->d[0] + 1 - c->xd[1];
		int64_t tw = (c->ow - 1) * c->s[1] + (c->k[1] - 1) * c->d[1] + 1 - c->xd[2];
		pt = th > 0 ? th / 2 : 0;
		pl = tw > 0 ? tw / 2 : 0;
	}
	for (int64_t b = 0; b < c->xd[0]; b++)
		for (int64_t oh = 0; oh < c->oh; oh++)
			for (int64_t ow = 0; ow < c->ow; ow++)
				for (int64_t ch = 0; ch < c->xd[3]; ch++) {
					int best = c->dt == ES_DT_INT8 ? -128 : 0;
					for (int64_t kh = 0; kh < c->k[0]; kh++)
						for (int64_t kw = 0; kw < c->k[1]; kw++) {
							int64_t h = oh * c->s[0] - pt + kh * c->d[0];
							int64_t w = ow * c->s[1] - pl + kw * c->d[1];
							if (h < 0 || h >= c->xd[1] || w < 0 || w >= c->xd[2])
								continue;
							int v = byte_at(c->dt, &in,
									((b * c->xd[1] + h) * c->xd[2] + w) * c->xd[3] + ch);
							best = v > best ? v : best;
						}
					int64_t i = ((b * c->oh + oh) * c->ow + ow) * c->xd[3] + ch;
					assert_int_equal(byte_at(c->dt, &out, i), best);
				}
	free(in.data);
	free(out.data);
	es_model_release(m);
}

static void test_qmaxpool(void **state)
{
	(void)state;
	const struct pool_case cases[] = {
		{ ES_DT_UINT8, { 1, 9, 9, 5 }, { 3, 3 }, { 2, 2 }, { 1, 1 }, { 1, 1, 1, 1 }, 0, NULL, 5, 5 },
		{ ES_DT_INT8, { 2, 7, 8, 3 }, { 2, 3 }, { 1, 2 }, { 1, 1 }, { 0, 1, 1, 0 }, 0, NULL, 7, 4 },
		{ ES_DT_UINT8, { 1, 8, 8, 4 }, { 3, 3 }, { 2, 2 }, { 1, 1 }, { 0, 0, 0, 0 }, 1, NULL, 4, 4 },
		{ ES_DT_INT8, { 1, 9, 7, 2 }, { 2, 2 }, { 1, 1 }, { 2, 2 }, { 0, 0, 0, 0 }, 0, NULL, 7, 5 },
		{ ES_DT_UINT8, { 1, 7, 6, 3 }, { 3, 2 }, { 2, 2 }, { 1, 1 }, { 0, 0, 0, 0 }, 0, "SAME_UPPER", 4, 3 },
	};
	gb_seed(71);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		check_pool(&cases[i]);
}

static void test_qmaxpool_errors(void **state)
{
	(void)state;
	es_error err = { 0 };
	/* channels_last 0 is ONNX MaxPool's job */
	es_graph *g = gb_graph(13);
	import_es_domain(g);
	int64_t xd[4] = { 1, 4, 4, 2 }, k[2] = { 2, 2 };
	int x = gb_input(g, "x", ES_DT_UINT8, 4, xd);
	int y = gb_value(g, "y", ES_DT_UINT8);
	int n = gb_node_in(g, ES_DOMAIN, "QMaxPool", "pool", &x, 1, &y, 1);
	gb_attr_ints(g, n, "kernel_shape", k, 2);
	gb_output(g, y);
	es_model *m = NULL;
	assert_int_equal(gb_model_err(g, true, &m, &err), ES_EINVAL);
	assert_non_null(strstr(err.msg, "pool"));
	assert_non_null(strstr(err.msg, "channels_last"));

	/* a window larger than the input */
	g = gb_graph(13);
	import_es_domain(g);
	x = gb_input(g, "x", ES_DT_UINT8, 4, xd);
	y = gb_value(g, "y", ES_DT_UINT8);
	n = gb_node_in(g, ES_DOMAIN, "QMaxPool", "pool", &x, 1, &y, 1);
	int64_t big[2] = { 9, 2 };
	gb_attr_ints(g, n, "kernel_shape", big, 2);
	gb_attr_int(g, n, "channels_last", 1);
	gb_output(g, y);
	m = gb_model(g, true);
	es_tensor in = bytes_tensor(ES_DT_UINT8, 4, xd), out;
	assert_int_equal(gb_run(m, &in, 1, &out, &err), ES_ESHAPE);
	assert_non_null(strstr(err.msg, "pool"));
	free(in.data);
	es_model_release(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_qadd),
		cmocka_unit_test(test_qadd_errors),
		cmocka_unit_test(test_qmaxpool),
		cmocka_unit_test(test_qmaxpool_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
