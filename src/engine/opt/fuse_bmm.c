/*
 * fuse_bmm: a MatMul of two computed tensors with the Transposes around it
 * folded into the product's memory layouts.
 *
 *     Transpose(perm_a)? -> [Div | Mul by a constant scalar]? -> A
 *     Transpose(perm_b)? ------------------------------------> B
 *     MatMul(A, B) -> Transpose(perm_y)? -> Y
 *
 * becomes one ES_DOMAIN BatchMatMul(A0, B0) with attributes perm_a, perm_b,
 * perm_y and alpha (ops/bmm.c): Y = transpose(alpha * (transpose(A0,
 * perm_a) x transpose(B0, perm_b)), perm_y). oneDNN's matmul reads and
 * writes through strides, so a transposed operand or result costs no copy:
 * attention blocks (split heads: Transpose(1,0,2), keys: Transpose(1,2,0),
 * merge heads: Transpose(1,0,2), the 1/sqrt(d) scale) lose five nodes and
 * four copies each, and the heads run as one batched product.
 *
 * Fires only on float MatMuls whose B is not a constant (fuse_matmul takes
 * those) when at least one Transpose or scale folds; each folded node's
 * output must have this MatMul as its only reader (and not be a graph
 * output). Ranks it cannot see are checked by the kernel at run time.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "engine/opt/passes.h"

#define MAX_PERM 8

typedef struct operand {
	int value;       /* what the new node reads */
	int64_t perm[MAX_PERM];
	int rank;        /* perm length; 0 when no Transpose folded */
	int nodes[2];    /* folded nodes */
	int n_nodes;
} operand;

/* perm of Transpose node t (its attribute or, absent, the reversal of a
 * rank it cannot know: then false). */
static bool transpose_perm(const es_node *t, int64_t *perm, int *rank)
{
	const es_attr *a = es_node_attr(t, "perm");
	if (!a || a->type != ES_ATTR_INTS || a->n < 2 || a->n > MAX_PERM)
		return false;
	bool seen[MAX_PERM] = { false };
	for (size_t i = 0; i < a->n; i++) {
		if (a->ints[i] < 0 || a->ints[i] >= (int64_t)a->n || seen[a->ints[i]])
			return false;
		seen[a->ints[i]] = true;
		perm[i] = a->ints[i];
	}
	*rank = (int)a->n;
	return true;
}

/* The live node of (default domain) op producing v, read only by reader. */
static int sole_producer(const es_graph *g, int v, const char *op, int reader)
{
	int p = es_rw_producer(g, v);
	if (p < 0 || !es_rw_is(&g->nodes[p], "", op) || g->nodes[p].n_outputs != 1 ||
	    es_rw_sole_consumer(g, v) != reader)
		return -1;
	return p;
}

/* Folds a Transpose producing o->value (read only by node `reader`). */
static void fold_transpose(const es_graph *g, operand *o, int reader)
{
	int t = sole_producer(g, o->value, "Transpose", reader);
	if (t < 0 || g->nodes[t].n_inputs != 1)
		return;
	if (!transpose_perm(&g->nodes[t], o->perm, &o->rank))
		return;
	o->value = g->nodes[t].inputs[0];
	o->nodes[o->n_nodes++] = t;
}

/* Folds A's scale: Div by, or Mul by, a constant float scalar (rank 0 or
 * [1], so it cannot change the other operand's shape). */
static bool fold_scale(const es_graph *g, operand *o, int reader, double *alpha)
{
	int s = sole_producer(g, o->value, "Div", reader);
	bool div = s >= 0;
	if (s < 0)
		s = sole_producer(g, o->value, "Mul", reader);
	if (s < 0 || g->nodes[s].n_inputs != 2)
		return false;
	const es_node *n = &g->nodes[s];
	/* Div: the divisor is input 1; Mul: either input */
	for (int ci = 1; ci >= (div ? 1 : 0); ci--) {
		const es_tensor *k = es_rw_const_input(g, n, ci);
		int other = n->inputs[1 - ci];
		float c;
		if (!k || k->ndim > 1 || !es_rw_scalar_f32(k, &c) || other < 0 ||
		    g->values[other].dtype != ES_DT_FLOAT || !isfinite(c) ||
		    (div && c == 0.0f))
			continue;
		*alpha = div ? 1.0 / (double)c : (double)c;
		o->value = other;
		o->nodes[o->n_nodes++] = s;
		return true;
	}
	return false;
}

static int run_fuse_bmm(es_graph *g, es_pass_ctx *c)
{
	int n_nodes = g->n_nodes;
	for (int n = 0; n < n_nodes; n++) {
		if (es_rw_killed(g, n) || !es_rw_is(&g->nodes[n], "", "MatMul"))
			continue;
		const es_node *mm = &g->nodes[n];
		if (mm->n_inputs != 2 || mm->n_outputs != 1 || mm->inputs[0] < 0 ||
		    mm->inputs[1] < 0 || g->values[mm->outputs[0]].dtype != ES_DT_FLOAT ||
		    g->values[mm->inputs[1]].constant)
			continue;
		operand a = { .value = mm->inputs[0] }, b = { .value = mm->inputs[1] };
		double alpha = 1.0;
		if (fold_scale(g, &a, n, &alpha))
			fold_transpose(g, &a, a.nodes[0]);
		else
			fold_transpose(g, &a, n);
		fold_transpose(g, &b, n);

		/* a Transpose reading the product alone */
		int y = mm->outputs[0], ty = es_rw_sole_consumer(g, y);
		int64_t perm_y[MAX_PERM];
		int rank_y = 0;
		if (ty >= 0 && (!es_rw_is(&g->nodes[ty], "", "Transpose") ||
				g->nodes[ty].n_outputs != 1 ||
				!transpose_perm(&g->nodes[ty], perm_y, &rank_y)))
			ty = -1;
		if (ty >= 0)
			y = g->nodes[ty].outputs[0];
		/* the ranks that are known must agree */
		int rank = a.rank ? a.rank : b.rank ? b.rank : rank_y;
		if ((a.rank && a.rank != rank) || (b.rank && b.rank != rank) ||
		    (rank_y && rank_y != rank))
			continue;
		if (!a.n_nodes && !b.n_nodes && ty < 0)
			continue;
		if (a.value < 0 || b.value < 0 ||
		    g->values[a.value].dtype != ES_DT_FLOAT ||
		    g->values[b.value].dtype != ES_DT_FLOAT)
			continue;

		char name[512];
		snprintf(name, sizeof(name), "%s", mm->name);
		for (int i = 0; i < a.n_nodes; i++)
			es_rw_kill(g, a.nodes[i]);
		for (int i = 0; i < b.n_nodes; i++)
			es_rw_kill(g, b.nodes[i]);
		if (ty >= 0)
			es_rw_kill(g, ty);
		es_rw_kill(g, n);
		int in[2] = { a.value, b.value };
		int f = es_rw_add_node(g, ES_DOMAIN, "BatchMatMul", name, in, 2, &y, 1, c->err);
		if (f < 0)
			return c->err->code ? c->err->code : ES_EINTERNAL;
		es_node *fn = &g->nodes[f];
		if ((a.rank && es_rw_set_ints(fn, "perm_a", a.perm, (size_t)a.rank)) ||
		    (b.rank && es_rw_set_ints(fn, "perm_b", b.perm, (size_t)b.rank)) ||
		    (ty >= 0 && es_rw_set_ints(fn, "perm_y", perm_y, (size_t)rank_y)) ||
		    (alpha != 1.0 && es_rw_set_float(fn, "alpha", (float)alpha)))
			return es_error_set(c->err, ES_ENOMEM,
				"fuse_bmm: out of memory on node '%s'", name);
		c->changes++;
	}
	return 0;
}

const es_pass es_pass_fuse_bmm = { "fuse_bmm", run_fuse_bmm };
