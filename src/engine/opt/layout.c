/*
 * Channels-last layout for convolution networks.
 *
 * layout_nhwc: oneDNN's convolutions are several times faster on
 * (N, H, W, C) activations than on ONNX's (N, C, H, W). This pass finds
 * the region of float 2-D convolutions (Conv, FusedConv) and of the ops
 * between them that compute the same values in either layout, and runs
 * the region channels-last:
 *   - convolutions become FusedConv with channels_last = 1 (W stays in
 *     the ONNX layout: the kernel packs it for the primitive);
 *   - MaxPool, AveragePool (2-D) and the global pools become their
 *     ES_DOMAIN forms with channels_last = 1;
 *   - Relu, LeakyRelu, Sigmoid, Clip of a region tensor, and Add, Mul,
 *     Sub of two region tensors stay as they are (elementwise on equal
 *     layouts; broadcasting between two rank-4 tensors permuted the same
 *     way broadcasts the same elements).
 *   - int8 (opt/fuse_qdq.c's output): QConv becomes channels_last = 1 (its
 *     Z, input 9, enters like FusedConv's); QAdd of two region tensors and
 *     QuantizeLinear / DequantizeLinear with scalar parameters stay as they
 *     are (elementwise: the same values in any layout); an int8 MaxPool
 *     becomes ES_DOMAIN QMaxPool (ops/qelem.c) with channels_last = 1.
 * A region tensor is the output of a region node; it is rank 4 and float,
 * uint8 or int8. Each gets a new channels-last value; the original value keeps
 * its name and NCHW meaning, produced by a Transpose(perm 0,3,1,2) when
 * anything outside the region (or the graph's caller) reads it. Inputs
 * entering the region from outside go through one Transpose(perm
 * 0,2,3,1) each; only inputs whose rank is 4 for certain enter (a
 * convolution's X: its W has rank 4; a residual Z only when its value's
 * rank is known to be 4).
 *
 * transpose_cleanup: a Transpose whose input comes from a Transpose with
 * the inverse permutation is removed (its consumers read the first one's
 * input). A Transpose that only moves size-1 axes is a view already: its
 * kernel aliases the input (ops/transform.c).
 *
 * Both are idempotent: channels_last nodes are not candidates again, and
 * the Transposes at region borders never cancel each other.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/opt/passes.h"

static const int64_t to_nhwc[4] = { 0, 2, 3, 1 };
static const int64_t to_nchw[4] = { 0, 3, 1, 2 };

enum kind { K_NONE = 0, K_CONV, K_POOL, K_ELEMENTWISE, K_QCONV, K_QPOOL };

static bool is_graph_output(const es_graph *g, int v)
{
	for (int o = 0; o < g->n_outputs; o++)
		if (g->outputs[o] == v)
			return true;
	return false;
}

static bool float_value(const es_graph *g, int v)
{
	return v >= 0 && g->values[v].dtype == ES_DT_FLOAT;
}

static bool int8_dtype(es_dtype dt)
{
	return dt == ES_DT_UINT8 || dt == ES_DT_INT8;
}

/* Input i of n is absent or a scalar constant (a per-tensor scale or
 * zero point). */
static bool scalar_input(const es_graph *g, const es_node *n, int i)
{
	if (i >= n->n_inputs || n->inputs[i] < 0)
		return true;
	const es_tensor *t = es_rw_const_input(g, n, i);
	return t && t->ndim <= 1 && es_tensor_numel(t) == 1;
}

/* The int8 ops of the QDQ path (opt/fuse_qdq.c) and per-tensor
 * Quantize/DequantizeLinear, whose region tensors may be uint8 or int8. */
static enum kind classify_int8(const es_graph *g, const es_node *n, const bool *region)
{
	const int x = n->inputs[0];
	if (es_rw_is(n, ES_DOMAIN, "QConv")) {
		int64_t cl = 0;
		if (es_node_attr_int(n, "channels_last", 0, &cl, NULL) || cl != 0 || n->n_inputs < 8)
			return K_NONE;
		const es_tensor *w = es_rw_const_input(g, n, 3);
		if (!w || w->ndim != 4 || !int8_dtype(g->values[x].dtype))
			return K_NONE;
		if (n->n_inputs > 9 && n->inputs[9] >= 0) {
			int z = n->inputs[9];
			if (!region[z] && (g->values[z].ndim != 4 || g->values[z].constant))
				return K_NONE;
		}
		return K_QCONV;
	}
	if (!region[x])
		return K_NONE;
	if (es_rw_is(n, ES_DOMAIN, "QAdd"))
		return n->n_inputs == 8 && n->inputs[3] >= 0 && region[n->inputs[3]] &&
		       scalar_input(g, n, 1) && scalar_input(g, n, 2) && scalar_input(g, n, 4) &&
		       scalar_input(g, n, 5) && scalar_input(g, n, 6) && scalar_input(g, n, 7) ?
		       K_ELEMENTWISE : K_NONE;
	if (es_rw_is(n, "", "QuantizeLinear") || es_rw_is(n, "", "DequantizeLinear"))
		return n->n_inputs >= 2 && scalar_input(g, n, 1) && scalar_input(g, n, 2) ?
		       K_ELEMENTWISE : K_NONE;
	if (es_rw_is(n, "", "MaxPool") && int8_dtype(g->values[x].dtype)) {
		const int64_t *ks;
		size_t nk = 0;
		if (es_node_attr_ints(n, "kernel_shape", &ks, &nk, NULL) || nk != 2)
			return K_NONE;
		return K_QPOOL;
	}
	return K_NONE;
}

/* Whether node n can join the region, given which values are region
 * tensors so far (nodes are visited in topological order). */
static enum kind classify(const es_graph *g, const es_node *n, const bool *region)
{
	if (n->n_outputs != 1 || n->n_inputs < 1 || n->inputs[0] < 0 || n->outputs[0] < 0)
		return K_NONE;
	enum kind k = classify_int8(g, n, region);
	if (k != K_NONE || !float_value(g, n->outputs[0]))
		return k;
	const int x = n->inputs[0];

	bool fused = es_rw_is(n, ES_DOMAIN, "FusedConv");
	if (es_rw_is(n, "", "Conv") || fused) {
		int64_t cl = 0;
		if (fused && (es_node_attr_int(n, "channels_last", 0, &cl, NULL) || cl != 0))
			return K_NONE;
		const es_tensor *w = es_rw_const_input(g, n, 1);
		if (!w || w->dtype != ES_DT_FLOAT || w->ndim != 4 || !float_value(g, x))
			return K_NONE;
		if (n->n_inputs > 3 && n->inputs[3] >= 0) {
			int z = n->inputs[3];
			if (!region[z] && (g->values[z].ndim != 4 || g->values[z].constant))
				return K_NONE;
		}
		return K_CONV;
	}
	if (!region[x])
		return K_NONE;
	if (es_rw_is(n, "", "Relu") || es_rw_is(n, "", "LeakyRelu") ||
	    es_rw_is(n, "", "Sigmoid") || es_rw_is(n, "", "Clip")) {
		for (int i = 1; i < n->n_inputs; i++)
			if (n->inputs[i] >= 0 && region[n->inputs[i]])
				return K_NONE;
		return K_ELEMENTWISE;
	}
	if (es_rw_is(n, "", "Add") || es_rw_is(n, "", "Mul") || es_rw_is(n, "", "Sub"))
		return n->n_inputs == 2 && n->inputs[1] >= 0 && region[n->inputs[1]] ?
		       K_ELEMENTWISE : K_NONE;
	if (es_rw_is(n, "", "GlobalAveragePool") || es_rw_is(n, "", "GlobalMaxPool"))
		return K_POOL;
	if (es_rw_is(n, "", "MaxPool") || es_rw_is(n, "", "AveragePool")) {
		const int64_t *ks;
		size_t nk = 0;
		if (es_node_attr_ints(n, "kernel_shape", &ks, &nk, NULL) || nk != 2)
			return K_NONE;
		return K_POOL;
	}
	return K_NONE;
}

/* A new channels-last value standing for region tensor v. */
static int nhwc_value(es_graph *g, int v, es_error *err)
{
	char *hint = strdup(g->values[v].name ? g->values[v].name : "");
	if (!hint) {
		es_error_set(err, ES_ENOMEM, "out of memory");
		return -1;
	}
	int nv = es_rw_add_value(g, hint, "nhwc", g->values[v].dtype, err);
	free(hint);
	if (nv < 0)
		return -1;
	const es_value *src = &g->values[v];
	es_value *dst = &g->values[nv];
	dst->ndim = 4;
	for (int d = 0; d < 4; d++)
		dst->dims[d] = src->ndim == 4 ? src->dims[to_nhwc[d]] : -1;
	return nv;
}

/* A Transpose node from -> to with perm; name derived from `hint`. */
static int add_transpose(es_graph *g, int from, int to, const int64_t *perm,
			 const char *suffix, es_error *err)
{
	char *hint = strdup(g->values[from].name ? g->values[from].name : "");
	if (!hint)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	char name[256];
	snprintf(name, sizeof(name), "%s/%s", hint, suffix);
	free(hint);
	int n = es_rw_add_node(g, "", "Transpose", name, &from, 1, &to, 1, err);
	if (n < 0)
		return err->code ? err->code : ES_ENOMEM;
	if (es_rw_set_ints(&g->nodes[n], "perm", perm, 4))
		return es_error_set(err, ES_ENOMEM, "out of memory");
	return 0;
}

struct layout {
	es_graph *g;
	es_error *err;
	int n_values; /* values before the pass: the maps below cover them */
	int *nhwc;    /* region tensor -> its channels-last value, else -1 */
	int *entry;   /* outside value -> its transposed copy, else -1 */
};

/* The channels-last value a region node reads for v. */
static int nhwc_input(struct layout *L, int v)
{
	if (v < 0 || v >= L->n_values)
		return v;
	if (L->nhwc[v] >= 0)
		return L->nhwc[v];
	if (L->entry[v] >= 0)
		return L->entry[v];
	int t = nhwc_value(L->g, v, L->err);
	if (t < 0)
		return -2;
	if (add_transpose(L->g, v, t, to_nhwc, "to_nhwc", L->err))
		return -2;
	L->entry[v] = t;
	return t;
}

#define MAX_REBUILD_INPUTS 12

/* Replaces region node n (conv or pool) by its channels-last form. */
static int rebuild(struct layout *L, int n, enum kind k)
{
	es_graph *g = L->g;
	int in[MAX_REBUILD_INPUTS];
	int n_in = g->nodes[n].n_inputs;
	const char *domain = ES_DOMAIN;
	const char *op = k == K_CONV ? "FusedConv" : k == K_QPOOL ? "QMaxPool" :
			 g->nodes[n].op_type;
	char *name = strdup(g->nodes[n].name);
	char *op_copy = strdup(op);
	int rc = 0;

	if (!name || !op_copy) {
		rc = es_error_set(L->err, ES_ENOMEM, "out of memory");
		goto out_free;
	}
	if (n_in > MAX_REBUILD_INPUTS) {
		rc = es_error_set(L->err, ES_EINTERNAL, "node '%s': too many inputs to rebuild",
				  g->nodes[n].name);
		goto out_free;
	}
	for (int i = 0; i < n_in; i++) {
		int v = g->nodes[n].inputs[i];
		bool activation = i == 0 || (k == K_CONV && i == 3) || (k == K_QCONV && i == 9);
		in[i] = activation ? nhwc_input(L, v) : v;
		if (in[i] == -2) {
			rc = L->err->code ? L->err->code : ES_ENOMEM;
			goto out_free;
		}
	}
	int out = L->nhwc[g->nodes[n].outputs[0]];
	int nn = es_rw_add_node(g, domain, op_copy, name, in, n_in, &out, 1, L->err);
	if (nn < 0) {
		rc = L->err->code ? L->err->code : ES_ENOMEM;
		goto out_free;
	}
	if (es_rw_copy_attrs(g, &g->nodes[nn], &g->nodes[n]) ||
	    es_rw_set_int(&g->nodes[nn], "channels_last", 1)) {
		rc = es_error_set(L->err, ES_ENOMEM, "out of memory");
		goto out_free;
	}
	es_rw_kill(g, n);
out_free:
	free(name);
	free(op_copy);
	return rc;
}

static int run_layout(es_graph *g, es_pass_ctx *c)
{
	struct layout L = { .g = g, .err = c->err, .n_values = g->n_values };
	const int n_nodes = g->n_nodes;
	enum kind *kinds = calloc((size_t)(n_nodes > 0 ? n_nodes : 1), sizeof(*kinds));
	bool *region = calloc((size_t)(L.n_values > 0 ? L.n_values : 1), sizeof(*region));
	L.nhwc = malloc((size_t)(L.n_values > 0 ? L.n_values : 1) * sizeof(int));
	L.entry = malloc((size_t)(L.n_values > 0 ? L.n_values : 1) * sizeof(int));
	int rc = 0, members = 0;

	if (!kinds || !region || !L.nhwc || !L.entry) {
		rc = es_error_set(c->err, ES_ENOMEM, "out of memory");
		goto out_free;
	}
	for (int v = 0; v < L.n_values; v++)
		L.nhwc[v] = L.entry[v] = -1;

	/* which nodes join (nodes are in topological order) */
	for (int n = 0; n < n_nodes; n++) {
		const es_node *node = &g->nodes[n];
		if (node->dead)
			continue;
		kinds[n] = classify(g, node, region);
		if (kinds[n] != K_NONE) {
			region[node->outputs[0]] = true;
			members++;
		}
	}
	if (!members)
		goto out_free;

	for (int v = 0; v < L.n_values; v++) {
		if (!region[v])
			continue;
		if ((L.nhwc[v] = nhwc_value(g, v, c->err)) < 0) {
			rc = c->err->code ? c->err->code : ES_ENOMEM;
			goto out_free;
		}
	}

	for (int n = 0; n < n_nodes; n++) {
		if (kinds[n] == K_NONE)
			continue;
		if (kinds[n] != K_ELEMENTWISE) {
			if ((rc = rebuild(&L, n, kinds[n])))
				goto out_free;
			continue;
		}
		es_rw_touch(g, n);
		es_node *node = &g->nodes[n];
		for (int i = 0; i < node->n_inputs; i++) {
			int v = node->inputs[i];
			if (v >= 0 && v < L.n_values && region[v])
				node->inputs[i] = L.nhwc[v];
		}
		node->outputs[0] = L.nhwc[node->outputs[0]];
	}

	/* exits: whatever outside still reads a region tensor gets it back
	 * in the ONNX layout, under its own name */
	for (int v = 0; v < L.n_values; v++) {
		if (!region[v])
			continue;
		if (es_rw_consumers(g, v, NULL, 0) > 0 || is_graph_output(g, v)) {
			if ((rc = add_transpose(g, L.nhwc[v], v, to_nchw, "to_nchw", c->err)))
				goto out_free;
		}
	}
	c->changes += members;

out_free:
	free(kinds);
	free(region);
	free(L.nhwc);
	free(L.entry);
	return rc;
}

const es_pass es_pass_layout_nhwc = { "layout_nhwc", run_layout };

/* ---- Transpose clean-up ------------------------------------------------------ */

/* The permutation of Transpose node n into perm (its rank into *r);
 * false when absent (the reversing default needs the input rank). */
static bool transpose_perm(const es_node *n, int64_t *perm, int *r)
{
	const int64_t *p;
	size_t cnt = 0;
	if (es_node_attr_ints(n, "perm", &p, &cnt, NULL) || cnt == 0 || cnt > ES_MAX_DIMS)
		return false;
	for (size_t i = 0; i < cnt; i++)
		perm[i] = p[i];
	*r = (int)cnt;
	return true;
}

static int run_transpose_cleanup(es_graph *g, es_pass_ctx *c)
{
	for (int n = 0; n < g->n_nodes; n++) {
		const es_node *t2 = &g->nodes[n];
		int64_t p[ES_MAX_DIMS], q[ES_MAX_DIMS];
		int rp, rq;
		if (t2->dead || !es_rw_is(t2, "", "Transpose") || t2->n_inputs != 1 ||
		    t2->n_outputs != 1 || !transpose_perm(t2, q, &rq))
			continue;
		int mid = t2->inputs[0];
		int p1 = es_rw_producer(g, mid);
		if (p1 < 0 || !es_rw_is(&g->nodes[p1], "", "Transpose") ||
		    g->nodes[p1].n_inputs != 1 || !transpose_perm(&g->nodes[p1], p, &rp) ||
		    rp != rq)
			continue;
		bool identity = true;
		for (int j = 0; j < rq && identity; j++)
			identity = q[j] >= 0 && q[j] < rp && p[q[j]] == j;
		if (!identity)
			continue;
		/* t2's output carries t1's input */
		if (es_rw_bypass(g, n, g->nodes[p1].inputs[0], t2->outputs[0]))
			c->changes++;
	}
	return 0;
}

const es_pass es_pass_transpose_cleanup = { "transpose_cleanup", run_transpose_cleanup };
