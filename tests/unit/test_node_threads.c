/*
 * The executor's per-node thread count (session.c, node_threads): a node
 * gets the session's threads when its work estimate is large, one thread
 * otherwise. The estimate reads the weights input, which the quantized
 * operators list after the first operand's scale and zero point: a large
 * QLinearConv must get the team, a large QLinearMatMul too, and a tiny
 * elementwise node one thread. Observed through the executor's node hook,
 * which runs after the team size is set for the node.
 */
#include <omp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/exec/exec.h"
#include "engine/model_int.h"
#include "support/graph_builder.h"

#define MAX_NODES 8

static int seen_threads[MAX_NODES];

static void hook(void *arg, int node, bool done)
{
	(void)arg;
	if (!done && node >= 0 && node < MAX_NODES)
		seen_threads[node] = omp_get_max_threads();
}

static int scalar(es_graph *g, const char *name, es_dtype dt)
{
	static const uint8_t zero[8];
	return gb_const(g, name, dt, 0, NULL, zero);
}

/* x u8 [1,64,28,28] -> QLinearConv 3x3 64->64 -> Neg of a tiny float
 * input (independent) ; a u8 [128,256] x [256,256] QLinearMatMul. */
static es_graph *build(void)
{
	gb_seed(7);
	es_graph *g = gb_graph(13);
	static const int64_t xd[4] = { 1, 64, 28, 28 }, wd[4] = { 64, 64, 3, 3 };
	static const int64_t ad[2] = { 128, 256 }, bd[2] = { 256, 256 }, td[1] = { 4 };
	int x = gb_input(g, "x", ES_DT_UINT8, 4, xd);
	int a = gb_input(g, "a", ES_DT_UINT8, 2, ad);
	int t = gb_input(g, "t", ES_DT_FLOAT, 1, td);
	size_t wn = 64 * 64 * 9, bn = 256 * 256;
	int8_t *w = malloc(wn), *b = malloc(bn);
	assert_non_null(w);
	assert_non_null(b);
	for (size_t i = 0; i < wn; i++)
		w[i] = (int8_t)((int)(gb_rand() * 100.0f));
	for (size_t i = 0; i < bn; i++)
		b[i] = (int8_t)((int)(gb_rand() * 100.0f));
	int y = gb_value(g, "y", ES_DT_UINT8), z = gb_value(g, "z", ES_DT_UINT8);
	int u = gb_value(g, "u", ES_DT_FLOAT);
	int conv_in[8] = {
		x, gb_scalar_f32(g, "xs", 0.02f), scalar(g, "xz", ES_DT_UINT8),
		gb_const(g, "w", ES_DT_INT8, 4, wd, w), gb_scalar_f32(g, "ws", 0.01f),
		scalar(g, "wz", ES_DT_INT8), gb_scalar_f32(g, "ys", 0.5f),
		scalar(g, "yz", ES_DT_UINT8),
	};
	int n = gb_node(g, "QLinearConv", "qconv", conv_in, 8, &y, 1);
	static const int64_t pads[4] = { 1, 1, 1, 1 };
	gb_attr_ints(g, n, "pads", pads, 4);
	int mm_in[8] = {
		a, gb_scalar_f32(g, "as", 0.02f), scalar(g, "az", ES_DT_UINT8),
		gb_const(g, "b", ES_DT_INT8, 2, bd, b), gb_scalar_f32(g, "bs", 0.01f),
		scalar(g, "bz", ES_DT_INT8), gb_scalar_f32(g, "zs", 0.5f),
		scalar(g, "zz", ES_DT_UINT8),
	};
	gb_node(g, "QLinearMatMul", "qmatmul", mm_in, 8, &z, 1);
	gb_node(g, "Neg", "tiny", &t, 1, &u, 1);
	gb_output(g, y);
	gb_output(g, z);
	gb_output(g, u);
	free(w);
	free(b);
	return g;
}

static void test_quantized_weights_counted(void **state)
{
	(void)state;
	static const int64_t xd[4] = { 1, 64, 28, 28 }, ad[2] = { 128, 256 }, td[1] = { 4 };
	es_tensor in[3];
	es_error err = { 0 };
	assert_int_equal(es_tensor_alloc(&in[0], ES_DT_UINT8, 4, xd, &err), 0);
	assert_int_equal(es_tensor_alloc(&in[1], ES_DT_UINT8, 2, ad, &err), 0);
	in[2] = gb_rand_tensor(1, td);
	memset(in[0].data, 3, in[0].nbytes);
	memset(in[1].data, 5, in[1].nbytes);

	es_model *m = gb_model(build(), true);
	es_session *s = NULL;
	es_session_options so = { .threads = 2 };
	assert_int_equal(es_session_create(m, &so, &s, &err), 0);
	es_exec_set_node_hook(s, hook, NULL);
	es_tensor out[3];
	memset(seen_threads, 0, sizeof(seen_threads));
	if (es_session_run(s, in, 3, out, &err))
		fail_msg("%s", err.msg);
	int checked = 0;
	for (int n = 0; n < m->graph->n_nodes && n < MAX_NODES; n++) {
		const char *op = m->graph->nodes[n].op_type;
		int want = !strcmp(op, "Neg") ? 1 : 2;
		if (seen_threads[n] != want)
			fail_msg("node %d (%s) ran on %d thread(s), expected %d", n, op,
				 seen_threads[n], want);
		checked++;
	}
	assert_int_equal(checked, 3);
	es_session_destroy(s);
	es_model_release(m);
	es_tensor_free_data(&in[0]);
	es_tensor_free_data(&in[1]);
	free(in[2].data);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_quantized_weights_counted),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
