/*
 * Matrix products with their bias and activation in one node.
 *
 *     MatMul(A, B) -> Add(., bias) [-> act]       B, bias constant
 *     MatMul(A, B) -> act
 *     Gemm(A, B, bias) [-> act]                   alpha 1, beta 1, transA 0
 *
 * (act: Relu, or the ES_DOMAIN Gelu that fuse_gelu made) become one
 * ES_DOMAIN FusedMatMul(A, B, bias) with activation "", "Relu" or "Gelu"
 * (gemm.c), which runs oneDNN's matmul with B packed once into the
 * primitive's own layout and bias and Relu applied inside the product.
 * The patterns fire only on float graphs whose B is a constant 2-D matrix
 * and whose bias is a constant 1-D vector of B's column count (so the Add
 * cannot broadcast the result to another shape), and only when every
 * intermediate value is read by the pattern alone. A MatMul with nothing
 * to fuse stays a MatMul.
 */
#include <stdio.h>
#include <string.h>

#include "engine/opt/passes.h"

/* The single live node of (op_type, default domain) reading v, or -1. */
static int sole_reader(const es_graph *g, int v, const char *op_type)
{
	int n = es_rw_sole_consumer(g, v);
	if (n < 0 || !es_rw_is(&g->nodes[n], "", op_type))
		return -1;
	return n;
}

/* Columns of the product op(B) for constant float 2-D B, or -1. */
static int64_t const_b_cols(const es_graph *g, int v, bool trans_b)
{
	const es_tensor *t = v >= 0 ? g->values[v].constant : NULL;
	if (!t || t->dtype != ES_DT_FLOAT || t->ndim != 2)
		return -1;
	return trans_b ? t->dims[0] : t->dims[1];
}

/* True for a constant float 1-D vector of n elements. */
static bool bias_vector(const es_graph *g, int v, int64_t n)
{
	const es_tensor *t = v >= 0 ? g->values[v].constant : NULL;
	return t && t->dtype == ES_DT_FLOAT && t->ndim == 1 && t->dims[0] == n;
}

typedef struct mm_match {
	int nodes[3];
	int n_nodes;
	int a, b, bias, y;
	const char *act; /* NULL, "Relu" or "Gelu" */
	bool trans_b, gemm;
} mm_match;

/* Extends m with a Relu, or fuse_gelu's Gelu, reading m->y alone. */
static void take_activation(const es_graph *g, mm_match *m)
{
	int n = es_rw_sole_consumer(g, m->y);
	if (n < 0 || g->nodes[n].n_inputs != 1 || g->nodes[n].n_outputs != 1)
		return;
	if (es_rw_is(&g->nodes[n], "", "Relu"))
		m->act = "Relu";
	else if (es_rw_is(&g->nodes[n], ES_DOMAIN, "Gelu"))
		m->act = "Gelu";
	else
		return;
	m->nodes[m->n_nodes++] = n;
	m->y = g->nodes[n].outputs[0];
}

static bool match_matmul(const es_graph *g, int n, mm_match *m)
{
	const es_node *mm = &g->nodes[n];
	if (mm->n_inputs != 2 || mm->n_outputs != 1)
		return false;
	memset(m, 0, sizeof(*m));
	m->a = mm->inputs[0];
	m->b = mm->inputs[1];
	m->bias = -1;
	m->y = mm->outputs[0];
	m->nodes[m->n_nodes++] = n;
	int64_t cols = const_b_cols(g, m->b, false);
	if (cols < 0 || m->a < 0 || g->values[m->a].dtype != ES_DT_FLOAT)
		return false;
	int add = sole_reader(g, m->y, "Add");
	if (add >= 0 && g->nodes[add].n_inputs == 2 && g->nodes[add].n_outputs == 1) {
		const es_node *an = &g->nodes[add];
		int other = an->inputs[0] == m->y ? an->inputs[1] : an->inputs[0];
		if (other != m->y && bias_vector(g, other, cols)) {
			m->bias = other;
			m->nodes[m->n_nodes++] = add;
			m->y = an->outputs[0];
		}
	}
	take_activation(g, m);
	return m->n_nodes > 1;
}

static bool match_gemm(const es_graph *g, int n, mm_match *m)
{
	const es_node *gm = &g->nodes[n];
	float alpha, beta;
	int64_t ta, tb;
	if (gm->n_inputs < 2 || gm->n_outputs != 1 ||
	    es_node_attr_float(gm, "alpha", 1.0f, &alpha, NULL) ||
	    es_node_attr_float(gm, "beta", 1.0f, &beta, NULL) ||
	    es_node_attr_int(gm, "transA", 0, &ta, NULL) ||
	    es_node_attr_int(gm, "transB", 0, &tb, NULL) ||
	    alpha != 1.0f || ta != 0 || gm->opset < 11)
		return false;
	memset(m, 0, sizeof(*m));
	m->a = gm->inputs[0];
	m->b = gm->inputs[1];
	m->bias = gm->n_inputs > 2 ? gm->inputs[2] : -1;
	m->trans_b = tb != 0;
	m->gemm = true;
	m->y = gm->outputs[0];
	m->nodes[m->n_nodes++] = n;
	int64_t cols = const_b_cols(g, m->b, m->trans_b);
	if (cols < 0 || m->a < 0 || g->values[m->a].dtype != ES_DT_FLOAT)
		return false;
	if (m->bias >= 0 && (beta != 1.0f || !bias_vector(g, m->bias, cols)))
		return false;
	take_activation(g, m);
	return true;
}

static int run_fuse_matmul(es_graph *g, es_pass_ctx *c)
{
	int n_nodes = g->n_nodes;
	for (int n = 0; n < n_nodes; n++) {
		mm_match m;
		if (es_rw_killed(g, n))
			continue;
		bool ok = es_rw_is(&g->nodes[n], "", "MatMul") ? match_matmul(g, n, &m)
			: es_rw_is(&g->nodes[n], "", "Gemm") ? match_gemm(g, n, &m)
			: false;
		if (!ok)
			continue;
		/* "<prefix>/MatMul" gives "<prefix>/FusedMatMul" */
		char name[512];
		const char *orig = g->nodes[n].name, *slash = strrchr(orig, '/');
		int len = slash ? (int)(slash - orig) : (int)strlen(orig);
		snprintf(name, sizeof(name), "%.*s", len, orig);
		for (int i = 0; i < m.n_nodes; i++)
			es_rw_kill(g, m.nodes[i]);
		int in[3] = { m.a, m.b, m.bias };
		int f = es_rw_add_node(g, ES_DOMAIN, "FusedMatMul", name, in,
				       m.bias >= 0 ? 3 : 2, &m.y, 1, c->err);
		if (f < 0)
			return c->err->code ? c->err->code : ES_EINTERNAL;
		es_node *fn = &g->nodes[f];
		if ((m.act && es_rw_set_string(fn, "activation", m.act)) ||
		    (m.trans_b && es_rw_set_int(fn, "trans_b", 1)) ||
		    (m.gemm && es_rw_set_int(fn, "gemm", 1)))
			return es_error_set(c->err, ES_ENOMEM,
				"fuse_matmul: out of memory on node '%s'", name);
		c->changes++;
	}
	return 0;
}

const es_pass es_pass_fuse_matmul = { "fuse_matmul", run_fuse_matmul };
