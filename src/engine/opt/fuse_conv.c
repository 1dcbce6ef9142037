/*
 * Convolution fusions:
 *
 *   conv_bn_fold: Conv -> BatchNormalization (constant parameters, the
 *   Conv's sole consumer) becomes one Conv whose constant W and B carry
 *   the normalisation: s = scale / sqrt(var + epsilon),
 *   W'[m] = W[m] * s[m], B'[m] = (B[m] - mean[m]) * s[m] + bias[m].
 *
 *   fuse_conv: Conv [-> Add(other input computed at run time)]
 *   [-> Relu | Clip(constant bounds) | LeakyRelu] becomes one FusedConv
 *   (ops/conv.c) with the Add's other input as Z. Only values with
 *   exactly one consumer that are not graph outputs are fused across.
 *   Z's shape need not be known: FusedConv checks it at run time and
 *   broadcasts when it differs from the convolution's output.
 *
 * Both only touch float32 convolutions (value dtypes are known after
 * type propagation) and are idempotent: what they produce no longer
 * matches their patterns.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/opt/passes.h"

/* ---- Conv + BatchNormalization ---------------------------------------------- */

/* A float32 1-D constant of m elements, or NULL. */
static const float *const_vec(const es_graph *g, const es_node *n, int i, int64_t m)
{
	const es_tensor *t = es_rw_const_input(g, n, i);
	if (!t || t->dtype != ES_DT_FLOAT || t->ndim != 1 || t->dims[0] != m)
		return NULL;
	return t->data;
}

/* True when BatchNormalization node bn computes in inference mode with
 * only its Y output read. */
static bool bn_inference_only(const es_graph *g, const es_node *bn)
{
	int64_t training = 0;
	const es_attr *a = es_node_attr(bn, "training_mode");
	if (a && (a->type != ES_ATTR_INT || (training = a->i) != 0))
		return false;
	if (es_node_attr(bn, "spatial")) /* BatchNormalization-1..8: keep as is */
		return false;
	for (int o = 1; o < bn->n_outputs; o++) {
		int v = bn->outputs[o];
		if (v < 0)
			continue;
		if (es_rw_consumers(g, v, NULL, 0) > 0)
			return false;
		for (int k = 0; k < g->n_outputs; k++)
			if (g->outputs[k] == v)
				return false;
	}
	return true;
}

static int fold_one(es_graph *g, es_pass_ctx *c, int ni, int bi)
{
	const es_node *conv = &g->nodes[ni];
	const es_node *bn = &g->nodes[bi];
	const es_tensor *w = es_rw_const_input(g, conv, 1);
	const es_tensor *b = conv->n_inputs > 2 && conv->inputs[2] >= 0 ?
			     es_rw_const_input(g, conv, 2) : NULL;
	float eps;

	if (!w || w->dtype != ES_DT_FLOAT || w->ndim < 3 || w->dims[0] < 1)
		return 0;
	if (conv->n_inputs > 2 && conv->inputs[2] >= 0 &&
	    (!b || b->dtype != ES_DT_FLOAT || b->ndim != 1 || b->dims[0] != w->dims[0]))
		return 0;
	const int64_t m = w->dims[0];
	const float *scale = const_vec(g, bn, 1, m), *bias = const_vec(g, bn, 2, m);
	const float *mean = const_vec(g, bn, 3, m), *var = const_vec(g, bn, 4, m);
	if (!scale || !bias || !mean || !var || !bn_inference_only(g, bn))
		return 0;
	if (es_node_attr_float(bn, "epsilon", 1e-5f, &eps, NULL))
		return 0;

	const int64_t numel = es_tensor_numel(w), per = numel / m;
	es_tensor nw = *w, nb = { .dtype = ES_DT_FLOAT, .ndim = 1, .dims = { m } };
	nw.data = malloc(w->nbytes);
	nb.nbytes = (size_t)m * sizeof(float);
	nb.data = malloc(nb.nbytes);
	if (!nw.data || !nb.data) {
		free(nw.data);
		free(nb.data);
		return es_error_set(c->err, ES_ENOMEM, "out of memory folding BatchNormalization");
	}
	const float *wd = w->data, *bd = b ? b->data : NULL;
	float *nwd = nw.data, *nbd = nb.data;
	for (int64_t k = 0; k < m; k++) {
		double s = (double)scale[k] / sqrt((double)var[k] + (double)eps);
		for (int64_t j = 0; j < per; j++)
			nwd[k * per + j] = (float)((double)wd[k * per + j] * s);
		nbd[k] = (float)(((bd ? (double)bd[k] : 0.0) - (double)mean[k]) * s +
				 (double)bias[k]);
	}

	const int x = conv->inputs[0], y = bn->outputs[0];
	char *name = strdup(conv->name);
	if (!name) {
		free(nw.data);
		free(nb.data);
		return es_error_set(c->err, ES_ENOMEM, "out of memory");
	}
	int vw = es_rw_add_constant(g, name, "W_bn", &nw, c->err);
	int vb = vw >= 0 ? es_rw_add_constant(g, name, "B_bn", &nb, c->err) : -1;
	if (vw < 0)
		es_tensor_free_data(&nb);
	int in[3] = { x, vw, vb };
	int nn = vb >= 0 ? es_rw_add_node(g, "", "Conv", name, in, 3, &y, 1, c->err) : -1;
	free(name);
	if (nn < 0)
		return c->err->code ? c->err->code : ES_ENOMEM;
	/* indices survive es_rw_add_*, pointers do not */
	if (es_rw_copy_attrs(g, &g->nodes[nn], &g->nodes[ni]))
		return es_error_set(c->err, ES_ENOMEM, "out of memory");
	es_rw_kill(g, ni);
	es_rw_kill(g, bi);
	c->changes++;
	return 0;
}

static int run_conv_bn_fold(es_graph *g, es_pass_ctx *c)
{
	const int n_nodes = g->n_nodes; /* new nodes need no second look */
	for (int n = 0; n < n_nodes; n++) {
		const es_node *node = &g->nodes[n];
		if (node->dead || !es_rw_is(node, "", "Conv") || node->n_outputs != 1 ||
		    node->n_inputs < 2)
			continue;
		int y = node->outputs[0];
		if (y < 0 || g->values[y].dtype != ES_DT_FLOAT)
			continue;
		int bn = es_rw_sole_consumer(g, y);
		if (bn < 0 || !es_rw_is(&g->nodes[bn], "", "BatchNormalization") ||
		    g->nodes[bn].n_inputs != 5 || g->nodes[bn].inputs[0] != y)
			continue;
		int rc = fold_one(g, c, n, bn);
		if (rc)
			return rc;
	}
	return 0;
}

const es_pass es_pass_conv_bn_fold = { "conv_bn_fold", run_conv_bn_fold };

/* ---- Conv [+ Add] [+ activation] -> FusedConv -------------------------------- */

struct act {
	const char *name; /* NULL: none */
	float min, max;   /* Clip */
	float alpha;      /* LeakyRelu */
	bool has_alpha;
};

/* Recognises an activation node FusedConv can apply, into *a. */
static bool match_act(const es_graph *g, const es_node *n, struct act *a)
{
	memset(a, 0, sizeof(*a));
	if (n->n_outputs != 1 || n->n_inputs < 1)
		return false;
	if (es_rw_is(n, "", "Relu")) {
		a->name = "Relu";
		return true;
	}
	if (es_rw_is(n, "", "LeakyRelu")) {
		a->name = "LeakyRelu";
		a->has_alpha = true;
		return !es_node_attr_float(n, "alpha", 0.01f, &a->alpha, NULL);
	}
	if (!es_rw_is(n, "", "Clip"))
		return false;
	a->name = "Clip";
	a->min = -INFINITY;
	a->max = INFINITY;
	if (n->opset < 11) {
		/* Clip-6 defaults to the float range; Clip-1 is unbounded */
		float lo = n->opset >= 6 ? -FLT_MAX : -INFINITY;
		float hi = n->opset >= 6 ? FLT_MAX : INFINITY;
		if (es_node_attr_float(n, "min", lo, &a->min, NULL) ||
		    es_node_attr_float(n, "max", hi, &a->max, NULL))
			return false;
	} else {
		for (int i = 1; i < n->n_inputs && i < 3; i++) {
			if (n->inputs[i] < 0)
				continue;
			const es_tensor *t = es_rw_const_input(g, n, i);
			float v;
			if (!t || !es_rw_scalar_f32(t, &v))
				return false;
			if (i == 1)
				a->min = v;
			else
				a->max = v;
		}
	}
	/* min > max clips everything to max in ONNX; oneDNN's clip does not
	 * promise that: leave such a Clip alone */
	return !isnan(a->min) && !isnan(a->max) && a->min <= a->max;
}

static int fuse_one(es_graph *g, es_pass_ctx *c, int ni)
{
	const es_node *conv = &g->nodes[ni];
	int y = conv->outputs[0], add = -1, actn = -1, z = -1;
	struct act a = { 0 };

	int next = es_rw_sole_consumer(g, y);
	if (next >= 0 && es_rw_is(&g->nodes[next], "", "Add") &&
	    g->nodes[next].n_inputs == 2 && g->nodes[next].n_outputs == 1) {
		const es_node *an = &g->nodes[next];
		int other = an->inputs[0] == y ? an->inputs[1] : an->inputs[0];
		if (other >= 0 && other != y && !g->values[other].constant &&
		    g->values[other].dtype == ES_DT_FLOAT) {
			add = next;
			z = other;
			y = an->outputs[0];
			next = es_rw_sole_consumer(g, y);
		}
	}
	if (next >= 0 && g->nodes[next].inputs[0] == y && match_act(g, &g->nodes[next], &a)) {
		actn = next;
		y = g->nodes[next].outputs[0];
	}
	if (add < 0 && actn < 0)
		return 0;

	char *name = strdup(conv->name);
	if (!name)
		return es_error_set(c->err, ES_ENOMEM, "out of memory");
	int in[4] = { conv->inputs[0], conv->inputs[1],
		      conv->n_inputs > 2 ? conv->inputs[2] : -1, z };
	int n_in = z >= 0 ? 4 : 3;
	int nn = es_rw_add_node(g, ES_DOMAIN, "FusedConv", name, in, n_in, &y, 1, c->err);
	free(name);
	if (nn < 0)
		return c->err->code ? c->err->code : ES_ENOMEM;
	es_node *f = &g->nodes[nn];
	int rc = es_rw_copy_attrs(g, f, &g->nodes[ni]);
	if (!rc && a.name)
		rc = es_rw_set_string(f, "activation", a.name);
	if (!rc && a.name && !strcmp(a.name, "Clip")) {
		if (!isinf(a.min) || a.min > 0)
			rc = es_rw_set_float(f, "activation_min", a.min);
		if (!rc && (!isinf(a.max) || a.max < 0))
			rc = es_rw_set_float(f, "activation_max", a.max);
	}
	if (!rc && a.has_alpha)
		rc = es_rw_set_float(f, "alpha", a.alpha);
	if (rc)
		return es_error_set(c->err, ES_ENOMEM, "out of memory");
	es_rw_kill(g, ni);
	if (add >= 0)
		es_rw_kill(g, add);
	if (actn >= 0)
		es_rw_kill(g, actn);
	c->changes++;
	return 0;
}

static int run_fuse_conv(es_graph *g, es_pass_ctx *c)
{
	const int n_nodes = g->n_nodes;
	for (int n = 0; n < n_nodes; n++) {
		const es_node *node = &g->nodes[n];
		if (node->dead || !es_rw_is(node, "", "Conv") || node->n_outputs != 1 ||
		    node->n_inputs < 2 || node->outputs[0] < 0 ||
		    g->values[node->outputs[0]].dtype != ES_DT_FLOAT)
			continue;
		/* an activation or Add killed by an earlier fusion is skipped by
		 * es_rw_sole_consumer (it ignores dead nodes) */
		int rc = fuse_one(g, c, n);
		if (rc)
			return rc;
	}
	return 0;
}

const es_pass es_pass_fuse_conv = { "fuse_conv", run_fuse_conv };
