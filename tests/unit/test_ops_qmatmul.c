/*
 * qmatmul family (src/engine/ops/qmatmul.c): QLinearMatMul, MatMulInteger
 * and the ES_DOMAIN QGemm against a reference computed here on random
 * data: 2-D, batched and broadcast, 1-D operands, uint8/int8 mixes,
 * per-tensor, per-row and per-column parameters. A constant B with
 * per-tensor/per-column parameters runs oneDNN's int8 matmul (on VNNI
 * CPUs), a run-time B the plain loop: both are checked, on one and two
 * threads. Then the messages for bad inputs.
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
#include "support/graph_builder.h"

#define MAX_IN 9

/* One operand: dtype, shape and data (owned by the test case). */
typedef struct operand {
	es_dtype dt;
	int ndim;
	int64_t dims[ES_MAX_DIMS];
	void *data;
	bool constant; /* a model constant, else a graph input */
	bool absent;   /* an omitted optional input */
} operand;

static size_t esize(es_dtype dt)
{
	return dt == ES_DT_FLOAT || dt == ES_DT_INT32 ? 4 : 1;
}

static int64_t numel(const operand *o)
{
	return gb_numel(o->dims, o->ndim);
}

static operand mk(es_dtype dt, int ndim, const int64_t *dims, bool constant)
{
	operand o = { .dt = dt, .ndim = ndim, .constant = constant };
	if (ndim)
		memcpy(o.dims, dims, sizeof(int64_t) * (size_t)ndim);
	int64_t n = numel(&o);
	o.data = calloc((size_t)(n ? n : 1), esize(dt));
	assert_non_null(o.data);
	return o;
}

/* Random integers in [lo, hi] into an int8 / uint8 / int32 operand. */
static void fill_int(operand *o, int lo, int hi)
{
	for (int64_t i = 0; i < numel(o); i++) {
		int v = lo + (int)((gb_rand() + 1.0f) * 0.5f * (float)(hi - lo) + 0.5f);
		if (v > hi)
			v = hi;
		if (o->dt == ES_DT_UINT8)
			((uint8_t *)o->data)[i] = (uint8_t)v;
		else if (o->dt == ES_DT_INT8)
			((int8_t *)o->data)[i] = (int8_t)v;
		else
			((int32_t *)o->data)[i] = v;
	}
}

static void fill_scale(operand *o, float lo, float hi)
{
	for (int64_t i = 0; i < numel(o); i++)
		((float *)o->data)[i] = lo + (gb_rand() + 1.0f) * 0.5f * (hi - lo);
}

static operand q8(es_dtype dt, int ndim, const int64_t *dims, bool constant)
{
	operand o = mk(dt, ndim, dims, constant);
	fill_int(&o, dt == ES_DT_UINT8 ? 0 : -128, dt == ES_DT_UINT8 ? 255 : 127);
	return o;
}

static operand scalar(es_dtype dt, double v, bool constant)
{
	operand o = mk(dt, 0, NULL, constant);
	if (dt == ES_DT_FLOAT)
		*(float *)o.data = (float)v;
	else if (dt == ES_DT_UINT8)
		*(uint8_t *)o.data = (uint8_t)v;
	else if (dt == ES_DT_INT8)
		*(int8_t *)o.data = (int8_t)v;
	else
		*(int32_t *)o.data = (int32_t)v;
	return o;
}

static void free_ops(operand *ops, int n)
{
	for (int i = 0; i < n; i++)
		free(ops[i].data);
}

static int32_t ival(const operand *o, int64_t i)
{
	if (o->absent)
		return 0;
	if (numel(o) == 1)
		i = 0;
	switch (o->dt) {
	case ES_DT_UINT8: return ((const uint8_t *)o->data)[i];
	case ES_DT_INT8: return ((const int8_t *)o->data)[i];
	default: return ((const int32_t *)o->data)[i];
	}
}

static float fval(const operand *o, int64_t i)
{
	return ((const float *)o->data)[numel(o) == 1 ? 0 : i];
}

/*
 * Builds a model of one node (domain, op) over ops[n] (constants or graph
 * inputs in order), runs it on `threads` threads and returns output 0 in
 * *out (data malloc'ed). Returns the load or run error code, err filled.
 */
static int run_node(const char *domain, const char *op, const operand *ops, int n,
		    const int64_t *attr_vals, const char *const *attr_names, int n_attr,
		    int threads, es_tensor *out, es_error *err)
{
	es_graph *g = gb_graph(13);
	int in[MAX_IN];
	es_tensor feeds[MAX_IN];
	size_t n_feeds = 0;
	char name[16];
	for (int i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "in%d", i);
		if (ops[i].absent)
			in[i] = -1;
		else if (ops[i].constant)
			in[i] = gb_const(g, name, ops[i].dt, ops[i].ndim, ops[i].dims, ops[i].data);
		else {
			in[i] = gb_input(g, name, ops[i].dt, ops[i].ndim, ops[i].dims);
			es_tensor *t = &feeds[n_feeds++];
			memset(t, 0, sizeof(*t));
			t->dtype = ops[i].dt;
			t->ndim = ops[i].ndim;
			memcpy(t->dims, ops[i].dims, sizeof(t->dims));
			t->data = ops[i].data;
			t->nbytes = (size_t)numel(&ops[i]) * esize(ops[i].dt);
		}
	}
	int y = gb_value(g, "y", ES_DT_UNDEFINED);
	int node = gb_node_in(g, domain, op, "/mm/node", in, n, &y, 1);
	for (int i = 0; i < n_attr; i++)
		gb_attr_int(g, node, attr_names[i], attr_vals[i]);
	gb_output(g, y);
	if (!strcmp(domain, ES_DOMAIN)) {
		/* import the engine's domain as the optimizer would */
		es_opset_import *im = realloc(g->opsets, sizeof(*im) * (size_t)(g->n_opsets + 1));
		assert_non_null(im);
		g->opsets = im;
		im[g->n_opsets].domain = strdup(ES_DOMAIN);
		im[g->n_opsets].version = ES_DOMAIN_VERSION;
		g->n_opsets++;
	}
	es_model *m = NULL;
	int rc = gb_model_err(g, true, &m, err);
	if (rc)
		return rc;
	es_session *s = NULL;
	es_session_options so = { .threads = threads };
	assert_int_equal(es_session_create(m, &so, &s, err), 0);
	es_tensor tmp;
	rc = es_session_run(s, feeds, n_feeds, &tmp, err);
	if (!rc) {
		*out = tmp;
		out->data = malloc(tmp.nbytes ? tmp.nbytes : 1);
		assert_non_null(out->data);
		memcpy(out->data, tmp.data, tmp.nbytes);
	}
	es_session_destroy(s);
	es_model_release(m);
	return rc;
}

/*
 * The reference: numpy matmul of (A - za) and (B - zb) in int64 with
 * broadcast batches, parameters per tensor or per row / column as the
 * spec shapes them. kind 0: QLinearMatMul (u8/s8 out), 1: MatMulInteger.
 * Output values as int32 into want[], shape into dims/ndim.
 */
static int64_t ref_matmul(int kind, const operand *o, int32_t *want, int64_t *dims,
			  int *ndim)
{
	const operand *A = &o[0], *B = kind ? &o[1] : &o[3];
	const operand *za = &o[2], *zb = kind ? &o[3] : &o[5];
	int ra = A->ndim, rb = B->ndim;
	int64_t M = ra == 1 ? 1 : A->dims[ra - 2], K = A->dims[ra - 1];
	int64_t N = rb == 1 ? 1 : B->dims[rb - 1];
	int na = ra > 2 ? ra - 2 : 0, nbb = rb > 2 ? rb - 2 : 0, nb = na > nbb ? na : nbb;
	int64_t bd[ES_MAX_DIMS], batch = 1;
	for (int d = 0; d < nb; d++) {
		int ia = d - (nb - na), ib = d - (nb - nbb);
		int64_t da = ia >= 0 ? A->dims[ia] : 1, db = ib >= 0 ? B->dims[ib] : 1;
		bd[d] = da > db ? da : db;
		batch *= bd[d];
	}
	*ndim = 0;
	for (int d = 0; d < nb; d++)
		dims[(*ndim)++] = bd[d];
	if (ra > 1)
		dims[(*ndim)++] = M;
	if (rb > 1)
		dims[(*ndim)++] = N;
	for (int64_t bi = 0; bi < batch; bi++) {
		/* matrix index of A and B for output batch bi */
		int64_t rem = bi, amat = 0, bmat = 0, astr = 1, bstr = 1;
		for (int d = nb - 1; d >= 0; d--) {
			int64_t i = rem % bd[d];
			rem /= bd[d];
			int ia = d - (nb - na), ib = d - (nb - nbb);
			if (ia >= 0) {
				amat += (A->dims[ia] == 1 ? 0 : i) * astr;
				astr *= A->dims[ia];
			}
			if (ib >= 0) {
				bmat += (B->dims[ib] == 1 ? 0 : i) * bstr;
				bstr *= B->dims[ib];
			}
		}
		for (int64_t m = 0; m < M; m++)
			for (int64_t n = 0; n < N; n++) {
				int64_t acc = 0;
				for (int64_t k = 0; k < K; k++)
					acc += (int64_t)(ival(A, (amat * M + m) * K + k) - ival(za, amat * M + m)) *
					       (ival(B, (bmat * K + k) * N + n) - ival(zb, bmat * N + n));
				int32_t acc32 = (int32_t)(uint32_t)(uint64_t)acc;
				int64_t at = (bi * M + m) * N + n;
				if (kind) {
					want[at] = acc32;
					continue;
				}
				float mult = fval(&o[1], amat * M + m) * fval(&o[4], bmat * N + n) /
					     fval(&o[6], 0);
				float q = rintf((float)acc32 * mult) + (float)ival(&o[7], 0);
				float lo = o[7].dt == ES_DT_UINT8 ? 0.0f : -128.0f;
				float hi = o[7].dt == ES_DT_UINT8 ? 255.0f : 127.0f;
				want[at] = (int32_t)(q < lo ? lo : q > hi ? hi : q);
			}
	}
	return batch * M * N;
}

/* Output value i as int32. */
static int32_t out_at(const es_tensor *t, int64_t i)
{
	switch (t->dtype) {
	case ES_DT_UINT8: return ((const uint8_t *)t->data)[i];
	case ES_DT_INT8: return ((const int8_t *)t->data)[i];
	default: return ((const int32_t *)t->data)[i];
	}
}

/* Runs op over o on 1 and 2 threads; compares with the reference. With
 * `exact` every value must match, else within 1 on at most 1 % of them
 * (oneDNN rounds (acc * mult) from its own float steps). */
static void check_op(int kind, const operand *o, bool exact)
{
	int n = kind ? 4 : 8;
	int64_t dims[ES_MAX_DIMS];
	int ndim;
	int32_t *want = malloc(sizeof(int32_t) * 65536);
	assert_non_null(want);
	int64_t count = ref_matmul(kind, o, want, dims, &ndim);
	assert_true(count <= 65536);
	for (int threads = 1; threads <= 2; threads++) {
		es_tensor y = { 0 };
		es_error err = { 0 };
		if (run_node("", kind ? "MatMulInteger" : "QLinearMatMul", o, n, NULL, NULL, 0,
			     threads, &y, &err))
			fail_msg("run: %s", err.msg);
		assert_int_equal(y.dtype, kind ? ES_DT_INT32 : o[7].dt);
		assert_int_equal(y.ndim, ndim);
		for (int d = 0; d < ndim; d++)
			assert_int_equal(y.dims[d], dims[d]);
		int64_t off = 0;
		for (int64_t i = 0; i < count; i++) {
			int32_t got = out_at(&y, i), d = got - want[i];
			if (d == 0)
				continue;
			if (exact || d > 1 || d < -1)
				fail_msg("element %lld: got %d, want %d", (long long)i, got, want[i]);
			off++;
		}
		assert_true(off * 100 <= count);
		free(y.data);
	}
	free(want);
}

/* QLinearMatMul operands: A [ra] (at), B [rb] (bt), scalar params. */
static void qlinear_ops(operand *o, es_dtype at, int ra, const int64_t *da, es_dtype bt,
			int rb, const int64_t *db, bool b_const, es_dtype yt)
{
	o[0] = q8(at, ra, da, false);
	o[1] = scalar(ES_DT_FLOAT, 0.02, true);
	o[2] = scalar(at, at == ES_DT_UINT8 ? 121 : -7, true);
	o[3] = q8(bt, rb, db, b_const);
	o[4] = scalar(ES_DT_FLOAT, 0.013, true);
	o[5] = scalar(bt, bt == ES_DT_UINT8 ? 130 : 0, true);
	o[6] = scalar(ES_DT_FLOAT, 0.9, true);
	o[7] = scalar(yt, yt == ES_DT_UINT8 ? 128 : 3, true);
}

static void test_qlinear_2d(void **state)
{
	(void)state;
	static const es_dtype types[2] = { ES_DT_UINT8, ES_DT_INT8 };
	int64_t da[2] = { 7, 37 }, db[2] = { 37, 19 };
	gb_seed(11);
	for (int ai = 0; ai < 2; ai++)
		for (int bi = 0; bi < 2; bi++)
			for (int c = 0; c < 2; c++) {
				operand o[8];
				qlinear_ops(o, types[ai], 2, da, types[bi], 2, db, c,
					    types[(ai + bi) % 2]);
				/* the run-time B (plain loop) is exact */
				check_op(0, o, !c);
				free_ops(o, 8);
			}
}

/* Per-row a and per-column b parameters ([M] and [N]). */
static void test_qlinear_per_row_col(void **state)
{
	(void)state;
	int64_t da[2] = { 5, 40 }, db[2] = { 40, 12 }, m[1] = { 5 }, nn[1] = { 12 };
	gb_seed(12);
	for (int c = 0; c < 2; c++) {
		operand o[8];
		qlinear_ops(o, ES_DT_UINT8, 2, da, ES_DT_INT8, 2, db, c, ES_DT_UINT8);
		free(o[1].data);
		free(o[2].data);
		free(o[4].data);
		free(o[5].data);
		o[1] = mk(ES_DT_FLOAT, 1, m, true);
		fill_scale(&o[1], 0.01f, 0.03f);
		o[2] = q8(ES_DT_UINT8, 1, m, true);
		o[4] = mk(ES_DT_FLOAT, 1, nn, true);
		fill_scale(&o[4], 0.005f, 0.02f);
		o[5] = mk(ES_DT_INT8, 1, nn, true); /* zeros: fits int8 */
		check_op(0, o, !c);
		/* per-column b only: the oneDNN path with per-column scales */
		free(o[1].data);
		free(o[2].data);
		o[1] = scalar(ES_DT_FLOAT, 0.02, true);
		o[2] = scalar(ES_DT_UINT8, 100, true);
		check_op(0, o, !c);
		free_ops(o, 8);
	}
}

/* Batched and broadcast: A [2, 3, 4, K] x B [3, K, N], per-row a
 * parameters [2, 3, 4, 1], per-column b parameters [3, 1, N]. */
static void test_qlinear_batched(void **state)
{
	(void)state;
	int64_t da[4] = { 2, 3, 4, 9 }, db[3] = { 3, 9, 6 };
	int64_t pa[4] = { 2, 3, 4, 1 }, pb[3] = { 3, 1, 6 };
	gb_seed(13);
	operand o[8];
	qlinear_ops(o, ES_DT_INT8, 4, da, ES_DT_UINT8, 3, db, true, ES_DT_INT8);
	check_op(0, o, true);
	free(o[1].data);
	free(o[2].data);
	free(o[4].data);
	free(o[5].data);
	o[1] = mk(ES_DT_FLOAT, 4, pa, true);
	fill_scale(&o[1], 0.01f, 0.03f);
	o[2] = q8(ES_DT_INT8, 4, pa, false);
	o[4] = mk(ES_DT_FLOAT, 3, pb, false);
	fill_scale(&o[4], 0.005f, 0.02f);
	o[5] = q8(ES_DT_UINT8, 3, pb, true);
	check_op(0, o, true);
	/* A broadcast against B's batch: A [4, K] x B [3, K, N] */
	free(o[0].data);
	free(o[1].data);
	free(o[2].data);
	int64_t da2[2] = { 4, 9 };
	o[0] = q8(ES_DT_INT8, 2, da2, false);
	o[1] = scalar(ES_DT_FLOAT, 0.05, true);
	o[2] = scalar(ES_DT_INT8, 2, true);
	check_op(0, o, true);
	free_ops(o, 8);
}

/* 1-D operands: [K] x [K, N] and [M, K] x [K]. */
static void test_qlinear_1d(void **state)
{
	(void)state;
	int64_t k1[1] = { 23 }, db[2] = { 23, 8 }, da[2] = { 6, 23 };
	gb_seed(14);
	for (int c = 0; c < 2; c++) {
		operand o[8];
		qlinear_ops(o, ES_DT_UINT8, 1, k1, ES_DT_INT8, 2, db, c, ES_DT_UINT8);
		check_op(0, o, !c);
		free_ops(o, 8);
		qlinear_ops(o, ES_DT_UINT8, 2, da, ES_DT_UINT8, 1, k1, c, ES_DT_UINT8);
		check_op(0, o, true);
		free_ops(o, 8);
	}
}

/* One model (constant B, A [-1, K]) run with row counts changing from run
 * to run, more of them than the kernel caches primitives for, on one and
 * two threads: every result still right. */
static void test_qlinear_changing_rows(void **state)
{
	(void)state;
	static const int64_t rows[] = { 1, 2, 5, 7, 64, 1, 9, 3, 5 };
	int64_t db[2] = { 31, 14 }, dyn[2] = { -1, 31 }, big[2] = { 64, 31 };
	gb_seed(18);
	operand o[8];
	qlinear_ops(o, ES_DT_INT8, 2, big, ES_DT_INT8, 2, db, true, ES_DT_UINT8);
	es_graph *g = gb_graph(13);
	int in[8];
	char name[16];
	for (int i = 0; i < 8; i++) {
		snprintf(name, sizeof(name), "in%d", i);
		in[i] = i == 0 ? gb_input(g, name, ES_DT_INT8, 2, dyn)
			       : gb_const(g, name, o[i].dt, o[i].ndim, o[i].dims, o[i].data);
	}
	int y = gb_value(g, "y", ES_DT_UINT8);
	gb_node(g, "QLinearMatMul", "/mm/node", in, 8, &y, 1);
	gb_output(g, y);
	es_model *m = gb_model(g, true);
	int32_t want[64 * 14];
	for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); r++) {
		for (int threads = 1; threads <= 2; threads++) {
			o[0].dims[0] = rows[r];
			int64_t dims[ES_MAX_DIMS];
			int ndim;
			int64_t count = ref_matmul(0, o, want, dims, &ndim);
			es_tensor x = { .dtype = ES_DT_INT8, .ndim = 2, .dims = { rows[r], 31 },
					.data = o[0].data, .nbytes = (size_t)(rows[r] * 31) };
			es_session *s = NULL;
			es_error err = { 0 };
			es_session_options so = { .threads = threads };
			assert_int_equal(es_session_create(m, &so, &s, &err), 0);
			es_tensor out;
			if (es_session_run(s, &x, 1, &out, &err))
				fail_msg("run: %s", err.msg);
			assert_int_equal(out.dims[0], rows[r]);
			for (int64_t i = 0; i < count; i++) {
				int d = ((uint8_t *)out.data)[i] - want[i];
				assert_true(d >= -1 && d <= 1);
			}
			es_session_destroy(s);
		}
	}
	es_model_release(m);
	free_ops(o, 8);
}

static void test_integer(void **state)
{
	(void)state;
	int64_t da[2] = { 9, 50 }, db[2] = { 50, 17 }, m[1] = { 9 }, nn[1] = { 17 };
	int64_t d3[3] = { 2, 9, 50 };
	gb_seed(15);
	for (int c = 0; c < 2; c++) {
		operand o[4];
		o[0] = q8(ES_DT_UINT8, 2, da, false);
		o[1] = q8(ES_DT_INT8, 2, db, c);
		o[2] = scalar(ES_DT_UINT8, 77, true);
		o[3] = (operand){ .absent = true };
		check_op(1, o, true);
		/* per-row a, per-column b zero points */
		free(o[2].data);
		o[2] = q8(ES_DT_UINT8, 1, m, true);
		o[3] = q8(ES_DT_INT8, 1, nn, true);
		check_op(1, o, true);
		free_ops(o, 4);
		/* no zero points; 3-D A over a 2-D B */
		o[0] = q8(ES_DT_INT8, 3, d3, false);
		o[1] = q8(ES_DT_UINT8, 2, db, c);
		o[2] = (operand){ .absent = true };
		o[3] = scalar(ES_DT_UINT8, 128, true);
		check_op(1, o, true);
		free_ops(o, 4);
	}
}

/* Sums beyond 2^24 stay exact on both paths (no float on the way). */
static void test_integer_large_sums(void **state)
{
	(void)state;
	int64_t da[2] = { 3, 1200 }, db[2] = { 1200, 5 };
	for (int c = 0; c < 2; c++) {
		operand o[4];
		o[0] = mk(ES_DT_UINT8, 2, da, false);
		o[1] = mk(ES_DT_INT8, 2, db, c);
		memset(o[0].data, 255, 3 * 1200);
		memset(o[1].data, 127, 1200 * 5);
		((int8_t *)o[1].data)[3] = 126;
		o[2] = scalar(ES_DT_UINT8, 1, true);
		o[3] = (operand){ .absent = true };
		check_op(1, o, true);
		*(uint8_t *)o[2].data = 0;
		check_op(1, o, true);
		free_ops(o, 4);
	}
}

/* QGemm: y = (acc + bias) * sa * sb, or quantized with y_scale. */
static void test_qgemm(void **state)
{
	(void)state;
	const int64_t M = 6, K = 33, N = 10;
	int64_t da[3] = { 2, 3, K }, dbt[2] = { N, K }, nn[1] = { N };
	gb_seed(16);
	for (int c = 0; c < 2; c++)
		for (int quant = 0; quant < 2; quant++) {
			operand o[9];
			o[0] = q8(ES_DT_UINT8, 3, da, false);
			o[1] = scalar(ES_DT_FLOAT, 0.03, true);
			o[2] = scalar(ES_DT_UINT8, 120, true);
			o[3] = q8(ES_DT_INT8, 2, dbt, c);
			o[4] = mk(ES_DT_FLOAT, 1, nn, true);
			fill_scale(&o[4], 0.004f, 0.01f);
			o[5] = mk(ES_DT_INT8, 1, nn, true);
			o[6] = mk(ES_DT_INT32, 1, nn, true);
			fill_int(&o[6], -3000, 3000);
			o[7] = scalar(ES_DT_FLOAT, 0.7, true);
			o[8] = scalar(ES_DT_INT8, -5, true);
			int n_in = quant ? 9 : 7;
			static const char *const names[1] = { "trans_b" };
			int64_t tb = 1;
			es_tensor y = { 0 };
			es_error err = { 0 };
			if (run_node(ES_DOMAIN, "QGemm", o, n_in, &tb, names, 1, 1, &y, &err))
				fail_msg("run: %s", err.msg);
			assert_int_equal(y.ndim, 3);
			assert_int_equal(y.dims[2], N);
			assert_int_equal(y.dtype, quant ? ES_DT_INT8 : ES_DT_FLOAT);
			int off = 0;
			for (int64_t m = 0; m < M; m++)
				for (int64_t n = 0; n < N; n++) {
					int64_t acc = 0;
					for (int64_t k = 0; k < K; k++)
						acc += (int64_t)(ival(&o[0], m * K + k) - 120) *
						       ival(&o[3], n * K + k);
					acc += ival(&o[6], n);
					float s = 0.03f * fval(&o[4], n);
					if (!quant) {
						float got = ((float *)y.data)[m * N + n];
						assert_true(fabsf(got - (float)acc * s) <=
							    1e-5f * fabsf((float)acc * s) + 1e-6f);
						continue;
					}
					float q = rintf((float)acc * (s / 0.7f)) - 5.0f;
					q = q < -128.0f ? -128.0f : q > 127.0f ? 127.0f : q;
					int d = ((int8_t *)y.data)[m * N + n] - (int)q;
					assert_true(d >= -1 && d <= 1);
					off += d != 0;
				}
			assert_true(off * 100 <= M * N);
			free(y.data);
			free_ops(o, 9);
		}
}

/* Runs QLinearMatMul over o and expects error `code` whose message
 * contains `text`. */
static void expect_error(const operand *o, int code, const char *text)
{
	es_tensor y = { 0 };
	es_error err = { 0 };
	int rc = run_node("", "QLinearMatMul", o, 8, NULL, NULL, 0, 1, &y, &err);
	if (rc == 0) {
		free(y.data);
		fail_msg("expected an error containing '%s'", text);
	}
	assert_int_equal(rc, code);
	if (!strstr(err.msg, text) || !strstr(err.msg, "/mm/node"))
		fail_msg("message '%s' lacks '%s' or the node name", err.msg, text);
}

static void test_errors(void **state)
{
	(void)state;
	int64_t da[2] = { 3, 4 }, db[2] = { 4, 5 }, bad[2] = { 5, 5 }, v4[1] = { 4 };
	operand o[8];
	gb_seed(17);
	qlinear_ops(o, ES_DT_UINT8, 2, da, ES_DT_INT8, 2, db, false, ES_DT_UINT8);
	/* zero point of the wrong type */
	operand keep = o[2];
	o[2] = scalar(ES_DT_INT8, 0, false);
	expect_error(o, ES_ETYPE, "a_zero_point");
	free(o[2].data);
	o[2] = keep;
	/* scale not positive, not finite */
	keep = o[4];
	o[4] = scalar(ES_DT_FLOAT, 0.0, false);
	expect_error(o, ES_EINVAL, "b_scale");
	*(float *)o[4].data = NAN;
	expect_error(o, ES_EINVAL, "b_scale");
	free(o[4].data);
	o[4] = keep;
	keep = o[6];
	o[6] = scalar(ES_DT_FLOAT, -1.0, false);
	expect_error(o, ES_EINVAL, "y_scale");
	free(o[6].data);
	o[6] = keep;
	/* inner dimensions differ */
	keep = o[3];
	o[3] = q8(ES_DT_INT8, 2, bad, false);
	expect_error(o, ES_ESHAPE, "inner dimensions");
	free(o[3].data);
	o[3] = keep;
	/* a per-row parameter of the wrong length */
	keep = o[1];
	o[1] = mk(ES_DT_FLOAT, 1, v4, false);
	fill_scale(&o[1], 0.1f, 0.2f);
	expect_error(o, ES_ESHAPE, "a_scale");
	free(o[1].data);
	o[1] = keep;
	/* A of a float type */
	keep = o[0];
	o[0] = mk(ES_DT_FLOAT, 2, da, false);
	expect_error(o, ES_ETYPE, "does not accept");
	free(o[0].data);
	o[0] = keep;
	free_ops(o, 8);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_qlinear_2d),
		cmocka_unit_test(test_qlinear_per_row_col),
		cmocka_unit_test(test_qlinear_batched),
		cmocka_unit_test(test_qlinear_1d),
		cmocka_unit_test(test_qlinear_changing_rows),
		cmocka_unit_test(test_integer),
		cmocka_unit_test(test_integer_large_sums),
		cmocka_unit_test(test_qgemm),
		cmocka_unit_test(test_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
