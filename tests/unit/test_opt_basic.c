/*
 * The optimizer pipeline and its clean-up pass: graphs built in memory,
 * optimized and not, run side by side.
 *
 * - eliminate_identity removes Identity and inference Dropout (node counts
 *   before/after), keeps graph output names, and leaves alone what it must:
 *   an Identity from a graph input straight to an output, a Dropout whose
 *   mask is read, a Dropout in training mode.
 * - The pipeline report (es_model's optimizer report) and no_optimize.
 * - A model file may not import the engine's reserved operator domain.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/alloc.h"
#include "engine/model_int.h"
#include "engine/opt/opt.h"
#include "engine/opt/passes.h"

/* ---- building graphs ------------------------------------------------------------ */

static es_graph *graph_new(int opset)
{
	es_graph *g = es_graph_new();
	assert_non_null(g);
	g->opsets = calloc(1, sizeof(es_opset_import));
	assert_non_null(g->opsets);
	g->opsets[0].domain = strdup("");
	g->opsets[0].version = opset;
	g->n_opsets = 1;
	g->name = strdup("test");
	return g;
}

static int value(es_graph *g, const char *name, es_dtype dt)
{
	int v = es_graph_add_value(g, name);
	assert_true(v >= 0);
	g->values[v].dtype = dt;
	return v;
}

static void add_io(int **list, int *n, int v)
{
	*list = realloc(*list, (size_t)(*n + 1) * sizeof(int));
	assert_non_null(*list);
	(*list)[(*n)++] = v;
}

static int input(es_graph *g, const char *name)
{
	int v = value(g, name, ES_DT_FLOAT);
	g->values[v].is_input = true;
	g->values[v].ndim = 2;
	g->values[v].dims[0] = 2;
	g->values[v].dims[1] = 3;
	add_io(&g->inputs, &g->n_inputs, v);
	return v;
}

static void output(es_graph *g, int v)
{
	g->values[v].is_output = true;
	add_io(&g->outputs, &g->n_outputs, v);
}

static int bool_const(es_graph *g, const char *name, bool b)
{
	int v = value(g, name, ES_DT_BOOL);
	es_tensor *t = calloc(1, sizeof(*t));
	assert_non_null(t);
	t->dtype = ES_DT_BOOL;
	t->ndim = 0;
	t->nbytes = 1;
	t->data = es_aligned_alloc(1);
	assert_non_null(t->data);
	*(uint8_t *)t->data = b;
	g->values[v].constant = t;
	return v;
}

/* A node of the default domain. */
static void node(es_graph *g, const char *op, const char *name, const int *in, int n_in,
		 const int *out, int n_out)
{
	int n = es_graph_add_node(g);
	assert_true(n >= 0);
	es_node *nd = &g->nodes[n];
	nd->name = strdup(name);
	nd->op_type = strdup(op);
	nd->domain = strdup("");
	nd->inputs = malloc((size_t)(n_in + 1) * sizeof(int));
	nd->outputs = malloc((size_t)(n_out + 1) * sizeof(int));
	memcpy(nd->inputs, in, (size_t)n_in * sizeof(int));
	memcpy(nd->outputs, out, (size_t)n_out * sizeof(int));
	nd->n_inputs = n_in;
	nd->n_outputs = n_out;
}

static es_model *model(es_graph *g, bool no_optimize)
{
	es_model_options o = { .no_optimize = no_optimize };
	es_model *m = NULL;
	es_error err = { 0 };
	if (es_model_from_graph(g, NULL, &o, &m, &err))
		fail_msg("model: %s", err.msg);
	return m;
}

static const float x_data[6] = { -1.5f, 0.25f, 2.0f, -0.0f, 3.5f, -7.0f };

/* Runs m on x_data; copies output `which` (at most 6 floats' worth of
 * bytes) into out and returns its size in bytes. */
static size_t run(es_model *m, int which, float *out)
{
	es_session *s = NULL;
	es_error err = { 0 };
	es_session_options so = { .threads = 1 };
	assert_int_equal(es_session_create(m, &so, &s, &err), 0);
	es_tensor in = { .dtype = ES_DT_FLOAT, .ndim = 2, .dims = { 2, 3 },
			 .data = (void *)x_data, .nbytes = sizeof(x_data) };
	es_tensor outs[4];
	if (es_session_run(s, &in, 1, outs, &err))
		fail_msg("run: %s", err.msg);
	size_t n = outs[which].nbytes;
	assert_true(n <= sizeof(float) * 6);
	memset(out, 0, sizeof(float) * 6);
	memcpy(out, outs[which].data, n);
	es_session_destroy(s);
	return n;
}

/* The graph `build` makes, optimized and not: same outputs; returns the
 * optimized model (caller releases). */
static es_model *both(es_graph *(*build)(void), int n_outputs)
{
	es_model *plain = model(build(), true);
	es_model *opt = model(build(), false);
	assert_int_equal(es_model_num_outputs(plain), n_outputs);
	assert_int_equal(es_model_num_outputs(opt), n_outputs);
	for (int o = 0; o < n_outputs; o++) {
		float a[6], b[6];
		size_t na = run(plain, o, a), nb = run(opt, o, b);
		assert_int_equal(na, nb);
		assert_memory_equal(a, b, sizeof(a));
		assert_string_equal(es_model_output(plain, (size_t)o)->name,
				    es_model_output(opt, (size_t)o)->name);
	}
	es_model_release(plain);
	return opt;
}

/* ---- graphs ---------------------------------------------------------------------- */

/* x -> Identity -> Relu -> Dropout -> Identity -> y */
static es_graph *chain(void)
{
	es_graph *g = graph_new(13);
	int x = input(g, "x"), a = value(g, "a", ES_DT_FLOAT), b = value(g, "b", ES_DT_FLOAT);
	int c = value(g, "c", ES_DT_FLOAT), y = value(g, "y", ES_DT_FLOAT);
	node(g, "Identity", "id1", &x, 1, &a, 1);
	node(g, "Relu", "relu", &a, 1, &b, 1);
	node(g, "Dropout", "drop", &b, 1, &c, 1);
	node(g, "Identity", "id2", &c, 1, &y, 1);
	output(g, y);
	return g;
}

/* x -> Identity -> y (an output straight from an input: must stay) and
 * x -> Relu -> r -> Identity -> z, r also an output (z must stay). */
static es_graph *io_edges(void)
{
	es_graph *g = graph_new(13);
	int x = input(g, "x"), y = value(g, "y", ES_DT_FLOAT);
	int r = value(g, "r", ES_DT_FLOAT), z = value(g, "z", ES_DT_FLOAT);
	node(g, "Identity", "id_in_out", &x, 1, &y, 1);
	node(g, "Relu", "relu", &x, 1, &r, 1);
	node(g, "Identity", "id_out_out", &r, 1, &z, 1);
	output(g, y);
	output(g, r);
	output(g, z);
	return g;
}

/* Dropout whose mask is a graph output: kept. */
static es_graph *dropout_mask(void)
{
	es_graph *g = graph_new(13);
	int x = input(g, "x"), r = value(g, "r", ES_DT_FLOAT);
	int y = value(g, "y", ES_DT_FLOAT), mask = value(g, "mask", ES_DT_BOOL);
	node(g, "Relu", "relu", &x, 1, &r, 1);
	int outs[2] = { y, mask };
	node(g, "Dropout", "drop", &r, 1, outs, 2);
	output(g, y);
	output(g, mask);
	return g;
}

/* Dropout with training_mode a constant: false is removed, true stays
 * (ratio 0 keeps it the identity, so both graphs run). */
static es_graph *dropout_training(bool training)
{
	es_graph *g = graph_new(13);
	int x = input(g, "x"), r = value(g, "r", ES_DT_FLOAT), y = value(g, "y", ES_DT_FLOAT);
	int ratio = value(g, "ratio", ES_DT_FLOAT);
	es_tensor *t = calloc(1, sizeof(*t));
	assert_non_null(t);
	t->dtype = ES_DT_FLOAT;
	t->nbytes = sizeof(float);
	t->data = es_aligned_calloc(sizeof(float));
	g->values[ratio].constant = t;
	int tm = bool_const(g, "training_mode", training);
	node(g, "Relu", "relu", &x, 1, &r, 1);
	int ins[3] = { r, ratio, tm };
	node(g, "Dropout", "drop", ins, 3, &y, 1);
	output(g, y);
	return g;
}

static es_graph *dropout_train_false(void) { return dropout_training(false); }
static es_graph *dropout_train_true(void) { return dropout_training(true); }

/* ---- tests ----------------------------------------------------------------------- */

static void test_chain_removed(void **state)
{
	(void)state;
	es_model *m = both(chain, 1);
	assert_int_equal(es_model_num_nodes(m), 1); /* only Relu is left */
	const es_opt_report *r = &m->opt;
	assert_true(r->n_passes >= 1);
	assert_string_equal(r->pass[0].name, "eliminate_identity");
	assert_int_equal(r->pass[0].nodes_before, 4);
	assert_int_equal(r->pass[0].nodes_after, 1);
	assert_int_equal(r->pass[0].changes, 3);
	assert_string_equal(es_model_output(m, 0)->name, "y");
	es_model_release(m);
}

static void test_io_edges_kept(void **state)
{
	(void)state;
	es_model *m = both(io_edges, 3);
	/* both Identity nodes stay: y would lose its name, z would alias r */
	assert_int_equal(es_model_num_nodes(m), 3);
	assert_int_equal(m->opt.pass[0].changes, 0);
	es_model_release(m);
}

static void test_dropout_rules(void **state)
{
	(void)state;
	es_model *m = both(dropout_mask, 2);
	assert_int_equal(es_model_num_nodes(m), 2);
	es_model_release(m);
	m = both(dropout_train_false, 1);
	assert_int_equal(es_model_num_nodes(m), 1);
	es_model_release(m);
	m = both(dropout_train_true, 1);
	assert_int_equal(es_model_num_nodes(m), 2);
	es_model_release(m);
}

static void test_no_optimize_runs_no_pass(void **state)
{
	(void)state;
	es_model *m = model(chain(), true);
	assert_int_equal(es_model_num_nodes(m), 4);
	assert_int_equal(m->opt.n_passes, 0);
	es_model_release(m);
}

/* A pass run twice changes nothing the second time (idempotent). */
static void test_idempotent(void **state)
{
	(void)state;
	es_graph *g = chain();
	es_model *m = model(g, false);
	es_opt_report rep;
	es_error err = { 0 };
	const es_pass *p = &es_pass_eliminate_identity;
	assert_int_equal(es_opt_run_passes(m->graph, &p, 1, NULL, &rep, &err), 0);
	assert_int_equal(rep.pass[0].changes, 0);
	assert_int_equal(rep.nodes_before, rep.nodes_after);
	es_model_release(m);
}

/* A hand-made node in the reserved domain is refused at load. */
static void test_reserved_domain(void **state)
{
	(void)state;
	es_graph *g = chain();
	free(g->nodes[1].domain);
	g->nodes[1].domain = strdup(ES_DOMAIN);
	es_error err = { 0 };
	assert_int_equal(es_opt_check_domains(g, &err), ES_EGRAPH);
	assert_non_null(strstr(err.msg, "relu"));
	assert_non_null(strstr(err.msg, "reserved"));
	es_graph_free(g);
}

/* Rewriting helpers: consumers, sole consumer, add_node resolving, kill
 * and compaction. */
static void test_rewrite_helpers(void **state)
{
	(void)state;
	es_graph *g = io_edges();
	es_error err = { 0 };
	assert_int_equal(es_graph_finalize(g, &err), 0);
	int x = es_graph_find_value(g, "x"), r = es_graph_find_value(g, "r");
	int nodes[4];
	assert_int_equal(es_rw_consumers(g, x, nodes, 4), 2);
	assert_int_equal(es_rw_sole_consumer(g, x), -1); /* two readers */
	assert_int_equal(es_rw_sole_consumer(g, r), -1); /* a graph output */
	int v = es_rw_add_value(g, "r", "neg", ES_DT_FLOAT, &err);
	assert_true(v >= 0);
	assert_string_equal(g->values[v].name, "r/neg");
	int v2 = es_rw_add_value(g, "r", "neg", ES_DT_FLOAT, &err);
	assert_string_equal(g->values[v2].name, "r/neg_1");
	int n = es_rw_add_node(g, "", "Neg", "r", &r, 1, &v, 1, &err);
	assert_true(n >= 0);
	assert_non_null(g->nodes[n].op);
	assert_false(g->nodes[n].ready);
	assert_int_equal(es_rw_sole_consumer(g, v), -1); /* nobody reads it */
	assert_int_equal(es_rw_add_node(g, "", "NoSuchOp", "x", &r, 1, &v2, 1, &err), -1);
	assert_int_equal(err.code, ES_EINTERNAL);
	assert_non_null(strstr(err.msg, "NoSuchOp"));
	es_error_clear(&err);
	int before = g->n_nodes;
	es_rw_kill(g, n);
	assert_true(es_rw_killed(g, n));
	assert_int_equal(es_rw_producer(g, v), -1);
	assert_int_equal(es_rw_compact(g, &err), 0);
	assert_int_equal(g->n_nodes, before - 1);
	es_graph_free(g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_chain_removed),
		cmocka_unit_test(test_io_edges_kept),
		cmocka_unit_test(test_dropout_rules),
		cmocka_unit_test(test_no_optimize_runs_no_pass),
		cmocka_unit_test(test_idempotent),
		cmocka_unit_test(test_reserved_domain),
		cmocka_unit_test(test_rewrite_helpers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
