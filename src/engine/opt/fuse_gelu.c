/*
 * GELU from its decomposed export.
 *
 * PyTorch writes nn.GELU() (the exact, erf form) as
 *
 *     u = Div(x, 1.4142135)  (or Mul(x, 0.70710677))
 *     e = Add(Erf(u), 1)
 *     y = Mul(Mul(x, e), 0.5)      or      y = Mul(Mul(x, 0.5), e)
 *
 * with the operands of Add and Mul in either order. The five nodes become
 * one ES_DOMAIN Gelu(x) (elementwise.c); fuse_matmul, which runs after,
 * then folds a Gelu that follows a matrix product into the product as its
 * activation. Only float graphs are fused, and only when every
 * intermediate value is read by the pattern alone.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "engine/opt/passes.h"

static int out0(const es_graph *g, int n)
{
	return g->nodes[n].outputs[0];
}

/* The single live node of (op_type, default domain) reading v, or -1. */
static int sole_reader(const es_graph *g, int v, const char *op_type)
{
	int n = es_rw_sole_consumer(g, v);
	if (n < 0 || !es_rw_is(&g->nodes[n], "", op_type) ||
	    g->nodes[n].n_outputs != 1)
		return -1;
	return n;
}

/* For binary node n reading v: its other input, or -1. */
static int other_operand(const es_node *n, int v)
{
	if (n->n_inputs != 2)
		return -1;
	if (n->inputs[0] == v && n->inputs[1] != v)
		return n->inputs[1];
	if (n->inputs[1] == v && n->inputs[0] != v)
		return n->inputs[0];
	return -1;
}

/* True when value v is a float scalar constant within a relative 1e-6 of
 * want. */
static bool scalar_is(const es_graph *g, int v, double want)
{
	float f;
	if (v < 0 || !es_rw_scalar_f32(g->values[v].constant, &f))
		return false;
	return fabs((double)f - want) <= 1e-6 * fabs(want);
}

typedef struct gelu_match {
	int nodes[5];
	int x, y;
} gelu_match;

/* Matches the pattern around Erf node e. */
static bool match(const es_graph *g, int e, gelu_match *m)
{
	const es_node *erf = &g->nodes[e];
	if (!es_rw_is(erf, "", "Erf") || erf->n_inputs != 1 || erf->n_outputs != 1)
		return false;
	int u = erf->inputs[0];
	int scale = es_rw_producer(g, u);
	if (scale < 0 || es_rw_sole_consumer(g, u) != e)
		return false;
	const es_node *sn = &g->nodes[scale];
	if (es_rw_is(sn, "", "Div") && sn->n_inputs == 2 &&
	    scalar_is(g, sn->inputs[1], M_SQRT2)) {
		m->x = sn->inputs[0];
	} else if (es_rw_is(sn, "", "Mul") && sn->n_inputs == 2) {
		if (scalar_is(g, sn->inputs[1], M_SQRT1_2))
			m->x = sn->inputs[0];
		else if (scalar_is(g, sn->inputs[0], M_SQRT1_2))
			m->x = sn->inputs[1];
		else
			return false;
	} else {
		return false;
	}
	if (m->x < 0 || g->values[m->x].dtype != ES_DT_FLOAT)
		return false;
	m->nodes[0] = scale;
	m->nodes[1] = e;

	int add = sole_reader(g, out0(g, e), "Add");
	if (add < 0 || !scalar_is(g, other_operand(&g->nodes[add], out0(g, e)), 1.0))
		return false;
	m->nodes[2] = add;

	int mul = sole_reader(g, out0(g, add), "Mul");
	if (mul < 0)
		return false;
	int other = other_operand(&g->nodes[mul], out0(g, add));
	if (other == m->x) {
		/* Mul(Mul(x, e), 0.5) */
		int half = sole_reader(g, out0(g, mul), "Mul");
		if (half < 0 || !scalar_is(g, other_operand(&g->nodes[half], out0(g, mul)), 0.5))
			return false;
		m->nodes[3] = mul;
		m->nodes[4] = half;
		m->y = out0(g, half);
		return true;
	}
	/* Mul(Mul(x, 0.5), e) */
	int half = other >= 0 ? es_rw_producer(g, other) : -1;
	if (half < 0 || !es_rw_is(&g->nodes[half], "", "Mul") ||
	    es_rw_sole_consumer(g, other) != mul ||
	    other_operand(&g->nodes[half], m->x) < 0 ||
	    !scalar_is(g, other_operand(&g->nodes[half], m->x), 0.5))
		return false;
	m->nodes[3] = half;
	m->nodes[4] = mul;
	m->y = out0(g, mul);
	return true;
}

static int run_fuse_gelu(es_graph *g, es_pass_ctx *c)
{
	int n_nodes = g->n_nodes;
	for (int e = 0; e < n_nodes; e++) {
		gelu_match m;
		if (es_rw_killed(g, e) || !match(g, e, &m))
			continue;
		/* "<prefix>/Erf" gives "<prefix>/Gelu" */
		char name[512];
		const char *orig = g->nodes[e].name, *slash = strrchr(orig, '/');
		int len = slash ? (int)(slash - orig) : (int)strlen(orig);
		snprintf(name, sizeof(name), "%.*s", len, orig);
		for (int i = 0; i < 5; i++)
			es_rw_kill(g, m.nodes[i]);
		if (es_rw_add_node(g, ES_DOMAIN, "Gelu", name, &m.x, 1, &m.y, 1, c->err) < 0)
			return c->err->code ? c->err->code : ES_EINTERNAL;
		c->changes++;
	}
	return 0;
}

const es_pass es_pass_fuse_gelu = { "fuse_gelu", run_fuse_gelu };
