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
#include "support/graph_builder.h"

/* ---- building graphs ------------------------------------------------------------ */

/* The graphs here take one float input [2, 3]. */
static int input(es_graph *g, const char *name)
{
	int64_t dims[2] = { 2, 3 };
	return gb_input(g, name, ES_DT_FLOAT, 2, dims);
}

static int bool_const(es_graph *g, const char *name, bool b)
{
	uint8_t v = b;
	return gb_const(g, name, ES_DT_BOOL, 0, NULL, &v);
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
	es_model *plain = gb_model(build(), true);
	es_model *opt = gb_model(build(), false);
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
	es_graph *g = gb_graph(13);
	int x = input(g, "x"), a = gb_value(g, "a", ES_DT_FLOAT), b = gb_value(g, "b", ES_DT_FLOAT);
	int c = gb_value(g, "c", ES_DT_FLOAT), y = gb_value(g, "y", ES_DT_FLOAT);
	gb_node(g, "Identity", "id1", &x, 1, &a, 1);
	gb_node(g, "Relu", "relu", &a, 1, &b, 1);
	gb_node(g, "Dropout", "drop", &b, 1, &c, 1);
	gb_node(g, "Identity", "id2", &c, 1, &y, 1);
	gb_output(g, y);
	return g;
}

/* x -> Identity -> y (an output straight from an input: must stay) and
 * x -> Relu -> r -> Identity -> z, r also an output (z must stay). */
static es_graph *io_edges(void)
{
	es_graph *g = gb_graph(13);
	int x = input(g, "x"), y = gb_value(g, "y", ES_DT_FLOAT);
	int r = gb_value(g, "r", ES_DT_FLOAT), z = gb_value(g, "z", ES_DT_FLOAT);
	gb_node(g, "Identity", "id_in_out", &x, 1, &y, 1);
	gb_node(g, "Relu", "relu", &x, 1, &r, 1);
	gb_node(g, "Identity", "id_out_out", &r, 1, &z, 1);
	gb_output(g, y);
	gb_output(g, r);
	gb_output(g, z);
	return g;
}

/* Dropout whose mask is a graph output: kept. */
static es_graph *dropout_mask(void)
{
	es_graph *g = gb_graph(13);
	int x = input(g, "x"), r = gb_value(g, "r", ES_DT_FLOAT);
	int y = gb_value(g, "y", ES_DT_FLOAT), mask = gb_value(g, "mask", ES_DT_BOOL);
	gb_node(g, "Relu", "relu", &x, 1, &r, 1);
	int outs[2] = { y, mask };
	gb_node(g, "Dropout", "drop", &r, 1, outs, 2);
	gb_output(g, y);
	gb_output(g, mask);
	return g;
}

/* Dropout with training_mode a constant: false is removed, true stays
 * (ratio 0 keeps it the identity, so both graphs run). */
static es_graph *dropout_training(bool training)
{
	es_graph *g = gb_graph(13);
	int x = input(g, "x"), r = gb_value(g, "r", ES_DT_FLOAT), y = gb_value(g, "y", ES_DT_FLOAT);
	int ratio = gb_scalar_f32(g, "ratio", 0.0f);
	int tm = bool_const(g, "training_mode", training);
	gb_node(g, "Relu", "relu", &x, 1, &r, 1);
	int ins[3] = { r, ratio, tm };
	gb_node(g, "Dropout", "drop", ins, 3, &y, 1);
	gb_output(g, y);
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
	es_model *m = gb_model(chain(), true);
	assert_int_equal(es_model_num_nodes(m), 4);
	assert_int_equal(m->opt.n_passes, 0);
	es_model_release(m);
}

/* A pass run twice changes nothing the second time (idempotent). */
static void test_idempotent(void **state)
{
	(void)state;
	es_graph *g = chain();
	es_model *m = gb_model(g, false);
	gb_assert_pass_idempotent(m, &es_pass_eliminate_identity);
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
