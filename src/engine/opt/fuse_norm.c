/*
 * LayerNormalization from its decomposed export.
 *
 * Exporters below opset 17 (PyTorch's nn.LayerNorm among them) write
 *
 *     m = ReduceMean(X, axes=[-1])        d = Sub(X, m)
 *     v = ReduceMean(Pow(d, 2), axes=[-1])
 *     n = Div(d, Sqrt(Add(v, eps)))       Y = Add(Mul(n, gamma), beta)
 *
 * (Mul and Add with their operands in either order, the final Add
 * optional). The nine nodes become one LayerNormalization(X, gamma, beta,
 * axis=-1, epsilon=eps): the ONNX operator when the model's opset has it
 * (17 and later), otherwise the engine's own ES_DOMAIN row, which runs the
 * same kernel. Only float graphs are fused, and only when every
 * intermediate value is read by the pattern alone.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "engine/opt/passes.h"

/* Output 0 of node n. */
static int out0(const es_graph *g, int n)
{
	return g->nodes[n].outputs[0];
}

/* The single live node of (op_type, default domain) reading v, or -1. */
static int sole_reader(const es_graph *g, int v, const char *op_type)
{
	int n = es_rw_sole_consumer(g, v);
	if (n < 0 || !es_rw_is(&g->nodes[n], "", op_type))
		return -1;
	return n;
}

/* For binary node n reading v: the index of its other input, or -1 when v
 * is not exactly one of its two inputs. */
static int other_operand(const es_node *n, int v)
{
	if (n->n_inputs != 2 || n->n_outputs < 1)
		return -1;
	if (n->inputs[0] == v && n->inputs[1] != v)
		return n->inputs[1];
	if (n->inputs[1] == v && n->inputs[0] != v)
		return n->inputs[0];
	return -1;
}

/* True when ReduceMean node n averages over the last axis only and keeps
 * the reduced dim (axes [-1] as attribute, or as a constant input from
 * opset 18). */
static bool mean_over_last_axis(const es_graph *g, const es_node *n)
{
	int64_t keep = 1;
	if (es_node_attr_int(n, "keepdims", 1, &keep, NULL) || keep != 1)
		return false;
	if (n->opset < 18) {
		const int64_t *axes = NULL;
		size_t count = 0;
		if (!es_node_attr(n, "axes") ||
		    es_node_attr_ints(n, "axes", &axes, &count, NULL))
			return false;
		return count == 1 && axes[0] == -1 && n->n_inputs == 1;
	}
	if (n->n_inputs != 2)
		return false;
	const es_tensor *t = es_rw_const_input(g, n, 1);
	return t && t->dtype == ES_DT_INT64 && es_tensor_numel(t) == 1 &&
	       ((const int64_t *)t->data)[0] == -1;
}

/* A float constant of rank <= 1 (one value per normalised element). */
static bool row_param(const es_graph *g, int v)
{
	const es_tensor *t = v >= 0 ? g->values[v].constant : NULL;
	return t && t->dtype == ES_DT_FLOAT && t->ndim <= 1;
}

/* The node indices of one matched pattern. */
typedef struct ln_match {
	int nodes[9];
	int n_nodes;
	int x, gamma, beta, y;
	float eps;
} ln_match;

/* Matches the pattern starting at ReduceMean node r; fills *m. */
static bool match(const es_graph *g, int r, ln_match *m)
{
	const es_node *mean = &g->nodes[r];
	if (!es_rw_is(mean, "", "ReduceMean") || mean->n_outputs != 1 ||
	    !mean_over_last_axis(g, mean))
		return false;
	m->x = mean->inputs[0];
	if (m->x < 0 || g->values[m->x].dtype != ES_DT_FLOAT)
		return false;
	m->n_nodes = 0;
	m->nodes[m->n_nodes++] = r;

	int sub = sole_reader(g, out0(g, r), "Sub");
	if (sub < 0 || g->nodes[sub].n_inputs != 2 ||
	    g->nodes[sub].inputs[0] != m->x || g->nodes[sub].inputs[1] != out0(g, r))
		return false;
	m->nodes[m->n_nodes++] = sub;

	/* d feeds Pow and Div, nothing else */
	int d = out0(g, sub), readers[3];
	if (g->values[d].is_output || es_rw_consumers(g, d, readers, 3) != 2)
		return false;
	int pow = -1, div = -1;
	for (int i = 0; i < 2; i++) {
		if (es_rw_is(&g->nodes[readers[i]], "", "Pow"))
			pow = readers[i];
		else if (es_rw_is(&g->nodes[readers[i]], "", "Div"))
			div = readers[i];
	}
	float two;
	if (pow < 0 || div < 0 || g->nodes[pow].n_inputs != 2 ||
	    g->nodes[pow].inputs[0] != d ||
	    !es_rw_scalar_f32(es_rw_const_input(g, &g->nodes[pow], 1), &two) || two != 2.0f)
		return false;
	m->nodes[m->n_nodes++] = pow;

	int var = sole_reader(g, out0(g, pow), "ReduceMean");
	if (var < 0 || g->nodes[var].inputs[0] != out0(g, pow) ||
	    g->nodes[var].n_outputs != 1 || !mean_over_last_axis(g, &g->nodes[var]))
		return false;
	m->nodes[m->n_nodes++] = var;

	int add_eps = sole_reader(g, out0(g, var), "Add");
	if (add_eps < 0)
		return false;
	int eps_v = other_operand(&g->nodes[add_eps], out0(g, var));
	const es_tensor *eps_t = eps_v >= 0 ? g->values[eps_v].constant : NULL;
	if (!es_rw_scalar_f32(eps_t, &m->eps) || !(m->eps >= 0.0f) || isinf(m->eps))
		return false;
	m->nodes[m->n_nodes++] = add_eps;

	int sqrt_n = sole_reader(g, out0(g, add_eps), "Sqrt");
	if (sqrt_n < 0 || sole_reader(g, out0(g, sqrt_n), "Div") != div)
		return false;
	m->nodes[m->n_nodes++] = sqrt_n;
	if (g->nodes[div].n_inputs != 2 || g->nodes[div].inputs[0] != d ||
	    g->nodes[div].inputs[1] != out0(g, sqrt_n))
		return false;
	m->nodes[m->n_nodes++] = div;

	int mul = sole_reader(g, out0(g, div), "Mul");
	if (mul < 0)
		return false;
	m->gamma = other_operand(&g->nodes[mul], out0(g, div));
	if (!row_param(g, m->gamma))
		return false;
	m->nodes[m->n_nodes++] = mul;
	m->y = out0(g, mul);
	m->beta = -1;

	int add_b = sole_reader(g, m->y, "Add");
	if (add_b >= 0) {
		int beta = other_operand(&g->nodes[add_b], m->y);
		if (row_param(g, beta)) {
			m->beta = beta;
			m->nodes[m->n_nodes++] = add_b;
			m->y = out0(g, add_b);
		}
	}
	return true;
}

/* The name hint "<prefix>" from the ReduceMean's name "<prefix>/..."
 * (es_rw_add_node appends "/LayerNormalization"). */
static void fused_name(const char *mean_name, char *buf, size_t size)
{
	const char *slash = strrchr(mean_name, '/');
	size_t len = slash ? (size_t)(slash - mean_name) : strlen(mean_name);
	snprintf(buf, size, "%.*s", (int)len, mean_name);
}

static int run_fuse_layernorm(es_graph *g, es_pass_ctx *c)
{
	int n_nodes = g->n_nodes;
	for (int r = 0; r < n_nodes; r++) {
		ln_match m;
		if (es_rw_killed(g, r) || !match(g, r, &m))
			continue;
		/* read everything needed from the old nodes before the graph
		 * grows */
		const char *domain = g->nodes[r].opset >= 17 ? "" : ES_DOMAIN;
		char name[512];
		fused_name(g->nodes[r].name, name, sizeof(name));
		for (int i = 0; i < m.n_nodes; i++)
			es_rw_kill(g, m.nodes[i]);
		int in[3] = { m.x, m.gamma, m.beta };
		int ln = es_rw_add_node(g, domain, "LayerNormalization", name, in,
					m.beta >= 0 ? 3 : 2, &m.y, 1, c->err);
		if (ln < 0)
			return c->err->code ? c->err->code : ES_EINTERNAL;
		if (es_rw_set_int(&g->nodes[ln], "axis", -1) ||
		    es_rw_set_float(&g->nodes[ln], "epsilon", m.eps))
			return es_error_set(c->err, ES_ENOMEM,
				"fuse_layernorm: out of memory on node '%s'", name);
		c->changes++;
	}
	return 0;
}

const es_pass es_pass_fuse_layernorm = { "fuse_layernorm", run_fuse_layernorm };
