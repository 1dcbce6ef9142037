/*
 * fuse_bmm (opt/fuse_bmm.c) and the BatchMatMul kernel (ops/bmm.c): graphs
 * built in memory, optimized and not, run side by side.
 *
 * - An attention block (split heads with Transpose(1,0,2), keys with
 *   Transpose(1,2,0), the 1/sqrt(d) Div, Softmax, merge heads with
 *   Transpose(1,0,2)) loses every Transpose and the Div: two BatchMatMul.
 * - ONNX MatMul semantics survive the folding: batch broadcasting between
 *   ranks 4 and 3, a 1-D B, a Mul scale on either side.
 * - Must not fire: a Transpose read by something else too, a scale that
 *   is not a scalar, a constant B, a MatMul with nothing to fold.
 * - The kernel rejects bad permutations at load and shapes that do not
 *   multiply at run time, naming the node.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/model_int.h"
#include "engine/opt/opt.h"
#include "engine/opt/passes.h"
#include "support/graph_builder.h"

static int val(es_graph *g, const char *name)
{
	return gb_value(g, name, ES_DT_FLOAT);
}

static int transpose(es_graph *g, const char *name, int in, const int64_t *perm, int n)
{
	int out = val(g, name);
	int t = gb_node(g, "Transpose", name, &in, 1, &out, 1);
	gb_attr_ints(g, t, "perm", perm, (size_t)n);
	return out;
}

/* ---- the attention block ------------------------------------------------------- */

static const int64_t qkv_dims[3] = { 9, 3, 5 }; /* seq, heads, head dim */

static es_graph *attention(void)
{
	static const int64_t split[3] = { 1, 0, 2 }, keys[3] = { 1, 2, 0 };
	es_graph *g = gb_graph(17);
	int q = gb_input(g, "q", ES_DT_FLOAT, 3, qkv_dims);
	int k = gb_input(g, "k", ES_DT_FLOAT, 3, qkv_dims);
	int v = gb_input(g, "v", ES_DT_FLOAT, 3, qkv_dims);
	int qt = transpose(g, "qt", q, split, 3);
	int kt = transpose(g, "kt", k, keys, 3);
	int vt = transpose(g, "vt", v, split, 3);
	int qs = val(g, "qs"), s = val(g, "s"), p = val(g, "p"), o = val(g, "o");
	int div_in[2] = { qt, gb_scalar_f32(g, "sqrt_d", 2.2360679f) };
	gb_node(g, "Div", "scale", div_in, 2, &qs, 1);
	int mm1[2] = { qs, kt };
	gb_node(g, "MatMul", "scores", mm1, 2, &s, 1);
	int sm = gb_node(g, "Softmax", "softmax", &s, 1, &p, 1);
	gb_attr_int(g, sm, "axis", -1);
	int mm2[2] = { p, vt };
	gb_node(g, "MatMul", "context", mm2, 2, &o, 1);
	int y = transpose(g, "y", o, split, 3);
	gb_output(g, y);
	return g;
}

static void test_attention(void **state)
{
	(void)state;
	es_tensor in[3] = { gb_rand_tensor(3, qkv_dims), gb_rand_tensor(3, qkv_dims),
			    gb_rand_tensor(3, qkv_dims) };
	es_model *m = gb_both(attention, in, 3);
	const es_opt_pass_stat *st = gb_pass_stat(m, "fuse_bmm");
	assert_int_equal(st->changes, 2);
	assert_int_equal(st->nodes_before, 8);
	assert_int_equal(st->nodes_after, 3); /* BatchMatMul, Softmax, BatchMatMul */
	assert_int_equal(gb_count_op(m, "Transpose"), 0);
	assert_int_equal(gb_count_op(m, "Div"), 0);
	assert_int_equal(gb_count_op(m, "BatchMatMul"), 2);
	gb_assert_pass_idempotent(m, &es_pass_fuse_bmm);
	es_model_release(m);
	for (int i = 0; i < 3; i++)
		free(in[i].data);
}

/* ---- MatMul semantics through the folding --------------------------------------- */

static int semantics_case;

/* 0: A' [2,1,4,5] (from [2,1,5,4] transposed) x B [3,5,6] -> [2,3,4,6];
 * 1: A' [4,3] (from [3,4]) x B [3] -> [4], times a Mul constant on the left;
 * 2: A [2,4,3] x B' [2,3,6] (from [2,6,3]) -> Transpose(2,0,1) of [2,4,6]. */
static es_graph *semantics(void)
{
	es_graph *g = gb_graph(17);
	int y = val(g, "y"), p = val(g, "p");
	if (semantics_case == 0) {
		static const int64_t ad[4] = { 2, 1, 5, 4 }, bd[3] = { 3, 5, 6 };
		static const int64_t perm[4] = { 0, 1, 3, 2 };
		int a = gb_input(g, "a", ES_DT_FLOAT, 4, ad);
		int b = gb_input(g, "b", ES_DT_FLOAT, 3, bd);
		int in[2] = { transpose(g, "at", a, perm, 4), b };
		gb_node(g, "MatMul", "mm", in, 2, &y, 1);
	} else if (semantics_case == 1) {
		static const int64_t ad[2] = { 3, 4 }, bd[1] = { 3 }, perm[2] = { 1, 0 };
		int a = gb_input(g, "a", ES_DT_FLOAT, 2, ad);
		int b = gb_input(g, "b", ES_DT_FLOAT, 1, bd);
		int at = transpose(g, "at", a, perm, 2), as = val(g, "as");
		int mul_in[2] = { gb_scalar_f32(g, "c", -0.75f), at };
		gb_node(g, "Mul", "scale", mul_in, 2, &as, 1);
		int in[2] = { as, b };
		gb_node(g, "MatMul", "mm", in, 2, &y, 1);
	} else {
		static const int64_t ad[3] = { 2, 4, 3 }, bd[3] = { 2, 6, 3 };
		static const int64_t pb[3] = { 0, 2, 1 }, py[3] = { 2, 0, 1 };
		int a = gb_input(g, "a", ES_DT_FLOAT, 3, ad);
		int b = gb_input(g, "b", ES_DT_FLOAT, 3, bd);
		int in[2] = { a, transpose(g, "bt", b, pb, 3) };
		gb_node(g, "MatMul", "mm", in, 2, &p, 1);
		y = transpose(g, "yt", p, py, 3);
	}
	gb_output(g, y);
	return g;
}

static void test_semantics(void **state)
{
	(void)state;
	static const int64_t a_dims[3][4] = { { 2, 1, 5, 4 }, { 3, 4 }, { 2, 4, 3 } };
	static const int64_t b_dims[3][3] = { { 3, 5, 6 }, { 3 }, { 2, 6, 3 } };
	static const int a_rank[3] = { 4, 2, 3 }, b_rank[3] = { 3, 1, 3 };
	static const int64_t y_dims[3][4] = { { 2, 3, 4, 6 }, { 4 }, { 6, 2, 4 } };
	static const int y_rank[3] = { 4, 1, 3 };
	for (semantics_case = 0; semantics_case < 3; semantics_case++) {
		es_tensor in[2] = { gb_rand_tensor(a_rank[semantics_case], a_dims[semantics_case]),
				    gb_rand_tensor(b_rank[semantics_case], b_dims[semantics_case]) };
		es_model *m = gb_both(semantics, in, 2);
		assert_int_equal(gb_count_op(m, "BatchMatMul"), 1);
		assert_int_equal(gb_count_op(m, "Transpose"), 0);
		assert_int_equal(gb_count_op(m, "Mul"), 0);
		es_tensor y[1];
		es_error err = { 0 };
		assert_int_equal(gb_run(m, in, 2, y, &err), 0);
		assert_int_equal(y[0].ndim, y_rank[semantics_case]);
		assert_memory_equal(y[0].dims, y_dims[semantics_case],
				    sizeof(int64_t) * (size_t)y_rank[semantics_case]);
		free(y[0].data);
		es_model_release(m);
		free(in[0].data);
		free(in[1].data);
	}
}

/* ---- must not fire ----------------------------------------------------------------- */

static int negative_case;

/* A' = Transpose(a) [2,4,5] times B [2,5,3], except: 0: A' is also a
 * graph output; 1: A' is divided by a [1,1,5] tensor (broadcasts, not a
 * scale); 2: B is a constant [5,3]; 3: A' goes through a Neg first
 * (nothing left to fold). */
static es_graph *negative(void)
{
	gb_seed(130 + (uint64_t)negative_case); /* both builds get the same constants */
	static const int64_t ad[3] = { 2, 5, 4 }, bd[3] = { 2, 5, 3 }, perm[3] = { 0, 2, 1 };
	static const int64_t kd[3] = { 1, 1, 5 }, cd[2] = { 5, 3 };
	es_graph *g = gb_graph(17);
	int a = gb_input(g, "a", ES_DT_FLOAT, 3, ad);
	int b = gb_input(g, "b", ES_DT_FLOAT, 3, bd);
	int y = val(g, "y");
	int at = transpose(g, "at", a, perm, 3);
	int lhs = at, rhs = b;
	if (negative_case == 0) {
		gb_output(g, at);
	} else if (negative_case == 1) {
		lhs = val(g, "ad");
		int div_in[2] = { at, gb_rand_const(g, "k", 3, kd, 1.0f) };
		gb_node(g, "Div", "div", div_in, 2, &lhs, 1);
		rhs = b;
	} else if (negative_case == 2) {
		rhs = gb_rand_const(g, "c", 2, cd, 0.5f);
	} else {
		lhs = val(g, "ac");
		gb_node(g, "Neg", "neg", &at, 1, &lhs, 1);
	}
	int in[2] = { lhs, rhs };
	gb_node(g, "MatMul", "mm", in, 2, &y, 1);
	gb_output(g, y);
	return g;
}

static void test_must_not_fire(void **state)
{
	(void)state;
	static const int64_t ad[3] = { 2, 5, 4 }, bd[3] = { 2, 5, 3 };
	es_tensor in[2] = { gb_rand_tensor(3, ad), gb_rand_tensor(3, bd) };
	static const int expect_bmm[4] = { 0, 0, 0, 0 };
	for (negative_case = 0; negative_case < 4; negative_case++) {
		es_model *m = gb_both(negative, in, 2);
		assert_int_equal(gb_count_op(m, "BatchMatMul"), expect_bmm[negative_case]);
		if (negative_case == 1)
			assert_int_equal(gb_count_op(m, "Div"), 1);
		es_model_release(m);
	}
	free(in[0].data);
	free(in[1].data);
}

/* ---- errors -------------------------------------------------------------------------- */

static es_graph *bmm_node(const int64_t *perm_a, int n_perm_a, const int64_t *bd)
{
	static const int64_t ad[3] = { 2, 4, 3 };
	es_graph *g = gb_graph(17);
	int a = gb_input(g, "a", ES_DT_FLOAT, 3, ad);
	int b = gb_input(g, "b", ES_DT_FLOAT, 3, bd);
	int y = val(g, "y");
	gb_import(g, ES_DOMAIN, ES_DOMAIN_VERSION);
	int in[2] = { a, b };
	int n = gb_node_in(g, ES_DOMAIN, "BatchMatMul", "bmm", in, 2, &y, 1);
	if (n_perm_a)
		gb_attr_ints(g, n, "perm_a", perm_a, (size_t)n_perm_a);
	gb_output(g, y);
	return g;
}

static void test_errors(void **state)
{
	(void)state;
	static const int64_t bd_ok[3] = { 2, 3, 5 }, bd_bad[3] = { 2, 7, 5 };
	static const int64_t not_perm[3] = { 0, 0, 1 }, short_perm[2] = { 1, 0 };
	es_model *m = NULL;
	es_error err = { 0 };

	/* not a permutation: refused at load, naming node and attribute */
	assert_int_equal(gb_model_err(bmm_node(not_perm, 3, bd_ok), true, &m, &err), ES_EINVAL);
	assert_non_null(strstr(err.msg, "bmm"));
	assert_non_null(strstr(err.msg, "perm_a"));

	/* a perm of the wrong rank, and K that does not match: run errors */
	static const int64_t ad[3] = { 2, 4, 3 };
	es_tensor a = gb_rand_tensor(3, ad);
	es_tensor b_ok = gb_rand_tensor(3, bd_ok), b_bad = gb_rand_tensor(3, bd_bad);
	es_tensor in[2] = { a, b_ok }, y[1];
	m = gb_model(bmm_node(short_perm, 2, bd_ok), true);
	assert_int_equal(gb_run(m, in, 2, y, &err), ES_ESHAPE);
	assert_non_null(strstr(err.msg, "bmm"));
	assert_non_null(strstr(err.msg, "permutation"));
	es_model_release(m);
	in[1] = b_bad;
	m = gb_model(bmm_node(NULL, 0, bd_bad), true);
	assert_int_equal(gb_run(m, in, 2, y, &err), ES_ESHAPE);
	assert_non_null(strstr(err.msg, "bmm"));
	assert_non_null(strstr(err.msg, "columns"));
	es_model_release(m);
	free(a.data);
	free(b_ok.data);
	free(b_bad.data);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_attention),
		cmocka_unit_test(test_semantics),
		cmocka_unit_test(test_must_not_fire),
		cmocka_unit_test(test_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
