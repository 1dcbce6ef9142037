/* In-memory graphs for unit tests (graph_builder.h). */
#include "support/graph_builder.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/alloc.h"
#include "engine/model_int.h"

static char *dup(const char *s)
{
	char *d = strdup(s ? s : "");
	assert_non_null(d);
	return d;
}

es_graph *gb_graph(int opset)
{
	es_graph *g = es_graph_new();
	assert_non_null(g);
	g->opsets = calloc(1, sizeof(es_opset_import));
	assert_non_null(g->opsets);
	g->opsets[0].domain = dup("");
	g->opsets[0].version = opset;
	g->n_opsets = 1;
	g->name = dup("test");
	return g;
}

int gb_value(es_graph *g, const char *name, es_dtype dt)
{
	int v = es_graph_add_value(g, name);
	assert_true(v >= 0);
	g->values[v].dtype = dt;
	return v;
}

static void append(int **list, int *n, int v)
{
	int *l = realloc(*list, (size_t)(*n + 1) * sizeof(int));
	assert_non_null(l);
	l[(*n)++] = v;
	*list = l;
}

int gb_input(es_graph *g, const char *name, es_dtype dt, int ndim, const int64_t *dims)
{
	int v = gb_value(g, name, dt);
	es_value *val = &g->values[v];
	val->is_input = true;
	val->ndim = ndim;
	for (int d = 0; d < ndim; d++)
		val->dims[d] = dims[d];
	append(&g->inputs, &g->n_inputs, v);
	return v;
}

void gb_output(es_graph *g, int v)
{
	g->values[v].is_output = true;
	append(&g->outputs, &g->n_outputs, v);
}

int gb_const(es_graph *g, const char *name, es_dtype dt, int ndim, const int64_t *dims,
	     const void *data)
{
	int v = gb_value(g, name, dt);
	es_tensor *t = calloc(1, sizeof(*t));
	assert_non_null(t);
	es_error err = { 0 };
	if (es_tensor_alloc(t, dt, ndim, dims, &err))
		fail_msg("constant %s: %s", name, err.msg);
	if (t->nbytes)
		memcpy(t->data, data, t->nbytes);
	es_value *val = &g->values[v];
	val->constant = t;
	val->ndim = ndim;
	for (int d = 0; d < ndim; d++)
		val->dims[d] = dims[d];
	return v;
}

int gb_const_f32(es_graph *g, const char *name, int ndim, const int64_t *dims,
		 const float *data)
{
	return gb_const(g, name, ES_DT_FLOAT, ndim, dims, data);
}

int gb_scalar_f32(es_graph *g, const char *name, float v)
{
	return gb_const(g, name, ES_DT_FLOAT, 0, NULL, &v);
}

int gb_node_in(es_graph *g, const char *domain, const char *op, const char *name,
	       const int *in, int n_in, const int *out, int n_out)
{
	int n = es_graph_add_node(g);
	assert_true(n >= 0);
	es_node *nd = &g->nodes[n];
	nd->name = dup(name);
	nd->op_type = dup(op);
	nd->domain = dup(domain);
	nd->inputs = malloc((size_t)(n_in + 1) * sizeof(int));
	nd->outputs = malloc((size_t)(n_out + 1) * sizeof(int));
	assert_non_null(nd->inputs);
	assert_non_null(nd->outputs);
	if (n_in)
		memcpy(nd->inputs, in, (size_t)n_in * sizeof(int));
	if (n_out)
		memcpy(nd->outputs, out, (size_t)n_out * sizeof(int));
	nd->n_inputs = n_in;
	nd->n_outputs = n_out;
	return n;
}

void gb_import(es_graph *g, const char *domain, int64_t version)
{
	for (int i = 0; i < g->n_opsets; i++)
		if (!strcmp(g->opsets[i].domain, domain))
			return;
	es_opset_import *o = realloc(g->opsets, sizeof(*o) * (size_t)(g->n_opsets + 1));
	assert_non_null(o);
	g->opsets = o;
	o[g->n_opsets].domain = dup(domain);
	o[g->n_opsets].version = version;
	g->n_opsets++;
}

int gb_node(es_graph *g, const char *op, const char *name, const int *in, int n_in,
	    const int *out, int n_out)
{
	return gb_node_in(g, "", op, name, in, n_in, out, n_out);
}

static es_attr *new_attr(es_graph *g, int n, const char *name, es_attr_type type)
{
	es_node *nd = &g->nodes[n];
	es_attr *a = realloc(nd->attrs, (size_t)(nd->n_attrs + 1) * sizeof(*a));
	assert_non_null(a);
	nd->attrs = a;
	a = &nd->attrs[nd->n_attrs++];
	memset(a, 0, sizeof(*a));
	a->name = dup(name);
	a->type = type;
	return a;
}

void gb_attr_int(es_graph *g, int n, const char *name, int64_t v)
{
	new_attr(g, n, name, ES_ATTR_INT)->i = v;
}

void gb_attr_float(es_graph *g, int n, const char *name, float v)
{
	new_attr(g, n, name, ES_ATTR_FLOAT)->f = v;
}

void gb_attr_ints(es_graph *g, int n, const char *name, const int64_t *v, size_t count)
{
	es_attr *a = new_attr(g, n, name, ES_ATTR_INTS);
	a->n = count;
	a->ints = malloc((count ? count : 1) * sizeof(int64_t));
	assert_non_null(a->ints);
	if (count)
		memcpy(a->ints, v, count * sizeof(int64_t));
}

void gb_attr_string(es_graph *g, int n, const char *name, const char *v)
{
	new_attr(g, n, name, ES_ATTR_STRING)->s = dup(v);
}

int gb_model_err(es_graph *g, bool no_optimize, es_model **out, es_error *err)
{
	es_model_options o = { .no_optimize = no_optimize };
	return es_model_from_graph(g, NULL, &o, out, err);
}

es_model *gb_model(es_graph *g, bool no_optimize)
{
	es_model *m = NULL;
	es_error err = { 0 };
	if (gb_model_err(g, no_optimize, &m, &err))
		fail_msg("model: %s", err.msg);
	return m;
}

int gb_run(es_model *m, const es_tensor *inputs, size_t n_in, es_tensor *outs,
	   es_error *err)
{
	es_session *s = NULL;
	es_session_options so = { .threads = 1 };
	int rc = es_session_create(m, &so, &s, err);
	if (rc)
		return rc;
	size_t n_out = es_model_num_outputs(m);
	es_tensor *tmp = calloc(n_out + 1, sizeof(*tmp));
	assert_non_null(tmp);
	rc = es_session_run(s, inputs, n_in, tmp, err);
	for (size_t i = 0; !rc && i < n_out; i++) {
		outs[i] = tmp[i];
		outs[i].data = malloc(tmp[i].nbytes ? tmp[i].nbytes : 1);
		assert_non_null(outs[i].data);
		if (tmp[i].nbytes)
			memcpy(outs[i].data, tmp[i].data, tmp[i].nbytes);
	}
	free(tmp);
	es_session_destroy(s);
	return rc;
}

void gb_assert_close(const es_tensor *a, const es_tensor *b, double atol, double rtol)
{
	assert_int_equal(a->dtype, ES_DT_FLOAT);
	assert_int_equal(b->dtype, ES_DT_FLOAT);
	assert_int_equal(a->ndim, b->ndim);
	for (int d = 0; d < a->ndim; d++)
		assert_int_equal(a->dims[d], b->dims[d]);
	assert_int_equal(a->nbytes, b->nbytes);
	const float *x = a->data, *y = b->data;
	for (size_t i = 0; i < a->nbytes / sizeof(float); i++) {
		double diff = fabs((double)x[i] - (double)y[i]);
		if (!(diff <= atol + rtol * fabs((double)y[i])))
			fail_msg("element %zu: %g vs %g (|diff| %g > %g + %g * |b|)", i,
				 (double)x[i], (double)y[i], diff, atol, rtol);
	}
}

/* ---- random data and optimizer checks ------------------------------------------ */

static uint64_t rng = 0x9e3779b97f4a7c15ull;

void gb_seed(uint64_t seed)
{
	rng = seed ? seed : 0x9e3779b97f4a7c15ull;
}

float gb_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (float)((rng >> 11) % 20001) / 10000.0f - 1.0f;
}

int64_t gb_numel(const int64_t *dims, int ndim)
{
	int64_t p = 1;
	for (int i = 0; i < ndim; i++)
		p *= dims[i];
	return p;
}

int gb_rand_const(es_graph *g, const char *name, int ndim, const int64_t *dims, float scale)
{
	int64_t n = gb_numel(dims, ndim);
	float *buf = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
	assert_non_null(buf);
	for (int64_t i = 0; i < n; i++)
		buf[i] = gb_rand() * scale;
	int v = gb_const_f32(g, name, ndim, dims, buf);
	free(buf);
	return v;
}

es_tensor gb_rand_tensor(int ndim, const int64_t *dims)
{
	es_tensor t = { .dtype = ES_DT_FLOAT, .ndim = ndim };
	memcpy(t.dims, dims, sizeof(int64_t) * (size_t)ndim);
	int64_t n = gb_numel(dims, ndim);
	t.nbytes = (size_t)n * sizeof(float);
	t.data = malloc(t.nbytes ? t.nbytes : 1);
	assert_non_null(t.data);
	for (int64_t i = 0; i < n; i++)
		((float *)t.data)[i] = gb_rand();
	return t;
}

const es_opt_pass_stat *gb_pass_stat(const es_model *m, const char *name)
{
	for (int i = 0; i < m->opt.n_passes; i++)
		if (!strcmp(m->opt.pass[i].name, name))
			return &m->opt.pass[i];
	fail_msg("pass %s did not run", name);
	return NULL;
}

int gb_count_op(const es_model *m, const char *op)
{
	int k = 0;
	for (int n = 0; n < m->graph->n_nodes; n++)
		k += !strcmp(m->graph->nodes[n].op_type, op);
	return k;
}

void gb_assert_pass_idempotent(es_model *m, const es_pass *pass)
{
	es_opt_report rep;
	es_error err = { 0 };
	if (es_opt_run_passes(m->graph, &pass, 1, NULL, &rep, &err))
		fail_msg("pass %s failed on its own output: %s", pass->name, err.msg);
	assert_int_equal(rep.pass[0].changes, 0);
	assert_int_equal(rep.nodes_before, rep.nodes_after);
}

es_model *gb_both(es_graph *(*build)(void), const es_tensor *in, size_t n_in)
{
	es_model *plain = gb_model(build(), true);
	es_model *opt = gb_model(build(), false);
	size_t n_out = es_model_num_outputs(plain);
	es_tensor a[4], b[4];
	es_error err = { 0 };
	assert_true(n_out <= 4);
	if (gb_run(plain, in, n_in, a, &err))
		fail_msg("unoptimized run: %s", err.msg);
	if (gb_run(opt, in, n_in, b, &err))
		fail_msg("optimized run: %s", err.msg);
	for (size_t o = 0; o < n_out; o++) {
		assert_string_equal(es_model_output(plain, o)->name, es_model_output(opt, o)->name);
		gb_assert_close(&b[o], &a[o], 1e-4, 1e-4);
		free(a[o].data);
		free(b[o].data);
	}
	es_model_release(plain);
	es_opt_report rep;
	assert_int_equal(es_opt_run(opt->graph, NULL, &rep, &err), 0);
	for (int i = 0; i < rep.n_passes; i++)
		if (rep.pass[i].changes)
			fail_msg("pass %s changed the optimized graph again", rep.pass[i].name);
	return opt;
}
