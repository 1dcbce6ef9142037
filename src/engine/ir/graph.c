#include "engine/ir/graph.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "base/alloc.h"
#include "base/status.h"
#include "engine/ops/op.h"

es_graph *es_graph_new(void)
{
	return calloc(1, sizeof(es_graph));
}

bool es_graph_borrows(const es_graph *g, const void *p)
{
	/* inclusive end: an empty tensor may point just past the last byte */
	const char *b = g ? g->backing : NULL;
	return b && (const char *)p >= b && (const char *)p <= b + g->backing_len;
}

void es_graph_tensor_free(const es_graph *g, es_tensor *t)
{
	if (!t)
		return;
	if (!es_graph_borrows(g, t->data))
		es_tensor_free_data(t);
	free(t);
}

void es_attr_clear(const es_graph *g, es_attr *a)
{
	free(a->name);
	free(a->s);
	es_graph_tensor_free(g, a->t);
	free(a->floats);
	free(a->ints);
	if (a->strings) {
		for (size_t i = 0; i < a->n; i++)
			free(a->strings[i]);
		free(a->strings);
	}
	memset(a, 0, sizeof(*a));
}

static void value_clear(const es_graph *g, es_value *v)
{
	free(v->name);
	for (int d = 0; d < ES_MAX_DIMS; d++)
		free(v->dim_params[d]);
	es_graph_tensor_free(g, v->constant);
}

void es_graph_node_clear(const es_graph *g, es_node *n)
{
	if (n->op && n->op->fini && n->state)
		n->op->fini(n->state);
	free(n->name);
	free(n->op_type);
	free(n->domain);
	free(n->inputs);
	free(n->outputs);
	for (int i = 0; i < n->n_attrs; i++)
		es_attr_clear(g, &n->attrs[i]);
	free(n->attrs);
}

void es_graph_free(es_graph *g)
{
	if (!g)
		return;
	/* kernel states first: they may point at constants */
	for (int i = 0; i < g->n_nodes; i++)
		es_graph_node_clear(g, &g->nodes[i]);
	for (int i = 0; i < g->n_values; i++)
		value_clear(g, &g->values[i]);
	for (int i = 0; i < g->n_opsets; i++)
		free(g->opsets[i].domain);
	free(g->opsets);
	free(g->values);
	free(g->nodes);
	free(g->inputs);
	free(g->outputs);
	free(g->name);
	if (g->backing)
		munmap(g->backing, g->backing_len);
	free(g);
}

static int grow(void **arr, int *cap, int need, size_t elem)
{
	if (need <= *cap)
		return 0;
	int ncap = *cap ? *cap * 2 : 16;
	while (ncap < need)
		ncap *= 2;
	void *p = realloc(*arr, (size_t)ncap * elem);
	if (!p)
		return ES_ENOMEM;
	memset((char *)p + (size_t)*cap * elem, 0, (size_t)(ncap - *cap) * elem);
	*arr = p;
	*cap = ncap;
	return 0;
}

int es_graph_add_value(es_graph *g, const char *name)
{
	if (grow((void **)&g->values, &g->cap_values, g->n_values + 1,
		 sizeof(es_value)))
		return -1;
	es_value *v = &g->values[g->n_values];
	memset(v, 0, sizeof(*v));
	v->name = strdup(name ? name : "");
	if (!v->name)
		return -1;
	v->ndim = -1;
	v->producer = -1;
	for (int d = 0; d < ES_MAX_DIMS; d++)
		v->dims[d] = -1;
	return g->n_values++;
}

int es_graph_add_node(es_graph *g)
{
	if (grow((void **)&g->nodes, &g->cap_nodes, g->n_nodes + 1,
		 sizeof(es_node)))
		return -1;
	memset(&g->nodes[g->n_nodes], 0, sizeof(es_node));
	return g->n_nodes++;
}

int es_graph_find_value(const es_graph *g, const char *name)
{
	for (int i = 0; i < g->n_values; i++)
		if (!strcmp(g->values[i].name, name))
			return i;
	return -1;
}

int64_t es_graph_opset(const es_graph *g, const char *domain)
{
	bool want_default = !domain || !*domain || !strcmp(domain, "ai.onnx");
	for (int i = 0; i < g->n_opsets; i++) {
		const char *d = g->opsets[i].domain;
		bool is_default = !d || !*d || !strcmp(d, "ai.onnx");
		if (want_default ? is_default : (d && !strcmp(d, domain)))
			return g->opsets[i].version;
	}
	return 0;
}

/*
 * Kahn's algorithm over node dependencies. Producers are computed first so
 * that a value produced twice and an input nobody defines are reported with
 * the node that uses them.
 */
int es_graph_finalize(es_graph *g, es_error *err)
{
	int rc = 0;
	int *indeg = NULL, *order = NULL, *queue = NULL;
	int *adj_start = NULL, *adj = NULL;

	for (int v = 0; v < g->n_values; v++) {
		g->values[v].producer = -1;
		g->values[v].n_consumers = 0;
	}
	for (int n = 0; n < g->n_nodes; n++) {
		es_node *node = &g->nodes[n];
		for (int o = 0; o < node->n_outputs; o++) {
			int v = node->outputs[o];
			if (v < 0)
				continue;
			es_value *val = &g->values[v];
			if (val->producer >= 0)
				return es_error_set(err, ES_EGRAPH,
					"node '%s' (%s): output '%s' is already produced by node '%s'",
					node->name, node->op_type, val->name,
					g->nodes[val->producer].name);
			if (val->is_input || val->constant)
				return es_error_set(err, ES_EGRAPH,
					"node '%s' (%s): output '%s' is also a graph input or initializer",
					node->name, node->op_type, val->name);
			val->producer = n;
		}
	}
	for (int n = 0; n < g->n_nodes; n++) {
		es_node *node = &g->nodes[n];
		for (int i = 0; i < node->n_inputs; i++) {
			int v = node->inputs[i];
			if (v < 0)
				continue;
			es_value *val = &g->values[v];
			if (val->producer < 0 && !val->is_input && !val->constant)
				return es_error_set(err, ES_EGRAPH,
					"node '%s' (%s): input '%s' is not defined by any node, graph input or initializer",
					node->name, node->op_type, val->name);
			val->n_consumers++;
		}
	}
	for (int o = 0; o < g->n_outputs; o++) {
		es_value *val = &g->values[g->outputs[o]];
		if (val->producer < 0 && !val->is_input && !val->constant)
			return es_error_set(err, ES_EGRAPH,
				"graph output '%s' is not produced by any node",
				val->name);
	}

	/* edges producer -> consumer (one per input slot) */
	size_t nn = (size_t)g->n_nodes;
	indeg = calloc(nn + 1, sizeof(int));
	order = calloc(nn + 1, sizeof(int));
	queue = calloc(nn + 1, sizeof(int));
	adj_start = calloc(nn + 2, sizeof(int));
	if (!indeg || !order || !queue || !adj_start) {
		rc = es_error_set(err, ES_ENOMEM, "out of memory sorting the graph");
		goto out;
	}
	size_t n_edges = 0;
	for (int n = 0; n < g->n_nodes; n++) {
		es_node *node = &g->nodes[n];
		for (int i = 0; i < node->n_inputs; i++) {
			int v = node->inputs[i];
			if (v >= 0 && g->values[v].producer >= 0) {
				adj_start[g->values[v].producer + 1]++;
				indeg[n]++;
				n_edges++;
			}
		}
	}
	for (size_t n = 0; n < nn; n++)
		adj_start[n + 1] += adj_start[n];
	adj = calloc(n_edges + 1, sizeof(int));
	int *fill = calloc(nn + 1, sizeof(int));
	if (!adj || !fill) {
		free(fill);
		rc = es_error_set(err, ES_ENOMEM, "out of memory sorting the graph");
		goto out;
	}
	for (int n = 0; n < g->n_nodes; n++) {
		es_node *node = &g->nodes[n];
		for (int i = 0; i < node->n_inputs; i++) {
			int v = node->inputs[i];
			if (v >= 0 && g->values[v].producer >= 0) {
				int p = g->values[v].producer;
				adj[adj_start[p] + fill[p]++] = n;
			}
		}
	}
	free(fill);

	/* stable: ready nodes are taken in file order */
	int head = 0, tail = 0, n_sorted = 0;
	for (int n = 0; n < g->n_nodes; n++)
		if (indeg[n] == 0)
			queue[tail++] = n;
	while (head < tail) {
		int n = queue[head++];
		order[n_sorted++] = n;
		for (int e = adj_start[n]; e < adj_start[n + 1]; e++)
			if (--indeg[adj[e]] == 0)
				queue[tail++] = adj[e];
	}
	if (n_sorted != g->n_nodes) {
		for (int n = 0; n < g->n_nodes; n++) {
			if (indeg[n] > 0) {
				rc = es_error_set(err, ES_EGRAPH,
					"graph has a cycle through node '%s' (%s)",
					g->nodes[n].name, g->nodes[n].op_type);
				goto out;
			}
		}
	}

	/* permute nodes and remap producers */
	bool identity = true;
	for (int i = 0; i < n_sorted; i++)
		identity &= order[i] == i;
	if (!identity) {
		es_node *sorted = malloc(nn * sizeof(es_node));
		if (!sorted) {
			rc = es_error_set(err, ES_ENOMEM, "out of memory sorting the graph");
			goto out;
		}
		for (int i = 0; i < n_sorted; i++)
			sorted[i] = g->nodes[order[i]];
		memcpy(g->nodes, sorted, nn * sizeof(es_node));
		free(sorted);
		for (int n = 0; n < g->n_nodes; n++)
			for (int o = 0; o < g->nodes[n].n_outputs; o++)
				if (g->nodes[n].outputs[o] >= 0)
					g->values[g->nodes[n].outputs[o]].producer = n;
	}
out:
	free(indeg);
	free(order);
	free(queue);
	free(adj_start);
	free(adj);
	return rc;
}

/* ---- attributes ---------------------------------------------------------- */

const es_attr *es_node_attr(const es_node *n, const char *name)
{
	for (int i = 0; i < n->n_attrs; i++)
		if (!strcmp(n->attrs[i].name, name))
			return &n->attrs[i];
	return NULL;
}

static int wrong_type(const es_node *n, const es_attr *a, const char *want,
		      es_error *err)
{
	return es_error_set(err, ES_EINVAL,
		"node '%s' (%s): attribute '%s' must be %s (type code %d given)",
		n->name, n->op_type, a->name, want, (int)a->type);
}

int es_node_attr_int(const es_node *n, const char *name, int64_t def,
		     int64_t *out, es_error *err)
{
	const es_attr *a = es_node_attr(n, name);
	if (!a) {
		*out = def;
		return 0;
	}
	if (a->type != ES_ATTR_INT)
		return wrong_type(n, a, "an int", err);
	*out = a->i;
	return 0;
}

int es_node_attr_float(const es_node *n, const char *name, float def,
		       float *out, es_error *err)
{
	const es_attr *a = es_node_attr(n, name);
	if (!a) {
		*out = def;
		return 0;
	}
	if (a->type == ES_ATTR_INT) { /* some exporters write ints */
		*out = (float)a->i;
		return 0;
	}
	if (a->type != ES_ATTR_FLOAT)
		return wrong_type(n, a, "a float", err);
	*out = a->f;
	return 0;
}

int es_node_attr_string(const es_node *n, const char *name, const char *def,
			const char **out, es_error *err)
{
	const es_attr *a = es_node_attr(n, name);
	if (!a) {
		*out = def;
		return 0;
	}
	if (a->type != ES_ATTR_STRING)
		return wrong_type(n, a, "a string", err);
	*out = a->s;
	return 0;
}

int es_node_attr_ints(const es_node *n, const char *name,
		      const int64_t **out, size_t *count, es_error *err)
{
	const es_attr *a = es_node_attr(n, name);
	*out = NULL;
	*count = 0;
	if (!a)
		return 0;
	if (a->type != ES_ATTR_INTS)
		return wrong_type(n, a, "a list of ints", err);
	*out = a->ints;
	*count = a->n;
	return 0;
}

int es_node_attr_floats(const es_node *n, const char *name,
			const float **out, size_t *count, es_error *err)
{
	const es_attr *a = es_node_attr(n, name);
	*out = NULL;
	*count = 0;
	if (!a)
		return 0;
	if (a->type != ES_ATTR_FLOATS)
		return wrong_type(n, a, "a list of floats", err);
	*out = a->floats;
	*count = a->n;
	return 0;
}
