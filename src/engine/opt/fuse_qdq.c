/*
 * fuse_qdq: int8 execution of QDQ models (what quantization tools emit:
 * QuantizeLinear / DequantizeLinear around float operators).
 *
 * Patterns, activations per tensor (scalar constant scales and zero
 * points), weights int8 or uint8 constants, per tensor or per output
 * channel (axis 0):
 *
 *   Q(sy, zy) <- [Relu] <- Conv(DQ(xq, sx, zx), DQ(wq, sw, zw)
 *                                [, DQ(bq int32, sx * sw, 0)])
 *     ==> QConv(xq, sx, zx, wq, sw, zw, sy, zy [, bq]) [activation Relu]
 *     (ops/qconv.c). The bias is fused only when its scale equals sx * sw
 *     channel by channel (within float rounding): then it is the int32
 *     accumulator's own bias.
 *   Q(sy, zy) <- [Relu] <- Add(DQ(a, sa, za), DQ(b, sb, zb))
 *     ==> QAdd(a, sa, za, b, sb, zb, sy, zy) [activation Relu] (ops/qelem.c)
 *   Q(s, z) <- MaxPool(DQ(xq, s, z)), the same scale and zero point
 *     ==> MaxPool(xq) (MaxPool-12 takes uint8 and int8): the max commutes
 *     with the monotonic dequantization, so this is exact.
 *
 * The Conv's (Relu's, Add's, MaxPool's) output must be read by the next
 * node of the chain only and not be a graph output; the Q output keeps
 * its name and becomes the fused node's output, so graph outputs keep
 * their names and dtypes. A DequantizeLinear nobody reads any more is
 * removed. Everything else stays as it is (GlobalAveragePool, Gemm and
 * MatMul between their Q/DQ pairs run in float).
 *
 * The pass runs before the float fusions (conv_bn_fold, fuse_conv), which
 * would otherwise fuse the float Conv + Relu, and sees DequantizeLinear of
 * constant weights unfolded (model.c defers their folding until after this
 * pass and folds what it leaves). Idempotent: the fused nodes no longer
 * match. The QConv fusion is skipped while no QConv kernel is registered.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ops/op.h"
#include "engine/opt/passes.h"

/* One quantized activation: the int8 value and its scalar parameters. */
struct qact {
	int q;       /* the uint8 / int8 value */
	int scale;   /* float scalar constant */
	int zp;      /* constant of q's dtype, -1: absent (zero) */
	es_dtype dt; /* ES_DT_UINT8 or ES_DT_INT8 */
	float s;     /* the scale's value */
	int32_t z;   /* the zero point's value */
};

static bool is_int8(es_dtype dt)
{
	return dt == ES_DT_UINT8 || dt == ES_DT_INT8;
}

static bool is_graph_output(const es_graph *g, int v)
{
	for (int o = 0; o < g->n_outputs; o++)
		if (g->outputs[o] == v)
			return true;
	return false;
}

static int32_t int8_at(const es_tensor *t, int64_t i)
{
	return t->dtype == ES_DT_UINT8 ? ((const uint8_t *)t->data)[i]
				       : ((const int8_t *)t->data)[i];
}

/* A positive finite float scalar constant (rank 0, or rank 1 of one). */
static bool pos_scalar(const es_graph *g, int v, float *out)
{
	const es_tensor *t = v >= 0 ? g->values[v].constant : NULL;
	return t && t->ndim <= 1 && es_rw_scalar_f32(t, out) && isfinite(*out) && *out > 0.0f;
}

/*
 * The per-tensor parameters of Q/DQ node n (inputs: x, scale, zero point)
 * for quantized dtype dt (ES_DT_UNDEFINED: take the zero point's, uint8
 * when absent) into *a (a->q is left to the caller).
 */
static bool per_tensor(const es_graph *g, const es_node *n, es_dtype dt, struct qact *a)
{
	if (n->n_inputs < 2 || n->n_outputs != 1 || !pos_scalar(g, n->inputs[1], &a->s))
		return false;
	a->scale = n->inputs[1];
	a->zp = n->n_inputs > 2 ? n->inputs[2] : -1;
	a->z = 0;
	if (a->zp < 0) {
		a->dt = dt == ES_DT_UNDEFINED ? ES_DT_UINT8 : dt;
		return is_int8(a->dt);
	}
	const es_tensor *zp = g->values[a->zp].constant;
	if (!zp || zp->ndim > 1 || es_tensor_numel(zp) != 1 || !is_int8(zp->dtype) ||
	    (dt != ES_DT_UNDEFINED && zp->dtype != dt))
		return false;
	a->dt = zp->dtype;
	a->z = int8_at(zp, 0);
	return true;
}

/* v = DequantizeLinear(xq int8 computed at run time, per tensor) into *a. */
static bool dq_activation(es_graph *g, int v, struct qact *a)
{
	int p = v >= 0 ? es_rw_producer(g, v) : -1;
	if (p < 0 || !es_rw_is(&g->nodes[p], "", "DequantizeLinear"))
		return false;
	const es_node *dq = &g->nodes[p];
	int xq = dq->inputs[0];
	if (xq < 0 || g->values[xq].constant)
		return false;
	/* a QuantizeLinear output's dtype is not propagated at load: the
	 * zero point tells it (per_tensor checks they agree) */
	es_dtype dt = g->values[xq].dtype;
	if (dt == ES_DT_UNDEFINED && dq->n_inputs > 2 && dq->inputs[2] >= 0)
		dt = g->values[dq->inputs[2]].dtype;
	if (!is_int8(dt) || !per_tensor(g, dq, dt, a))
		return false;
	a->q = xq;
	g->values[xq].dtype = dt;
	return true;
}

/* Node n is a per-tensor QuantizeLinear of value x into *a (a->q: its output). */
static bool q_of(const es_graph *g, int n, int x, struct qact *a)
{
	if (n < 0)
		return false;
	const es_node *q = &g->nodes[n];
	if (!es_rw_is(q, "", "QuantizeLinear") || q->inputs[0] != x || q->outputs[0] < 0 ||
	    !per_tensor(g, q, ES_DT_UNDEFINED, a))
		return false;
	a->q = q->outputs[0];
	return true;
}

/* The node after value v when it is v's only reader, reading it as input 0. */
static int next_of(const es_graph *g, int v)
{
	int n = es_rw_sole_consumer(g, v);
	return n >= 0 && g->nodes[n].inputs[0] == v ? n : -1;
}

/* A constant weight: DequantizeLinear(wq int8 constant, sw, zw) with sw
 * scalar or one per output channel (axis 0). */
struct qweight {
	int q, scale, zp;       /* zp -1: absent */
	const es_tensor *wq, *sw;
	int64_t m;              /* output channels */
};

static bool dq_weight(const es_graph *g, int v, struct qweight *w)
{
	int p = v >= 0 ? es_rw_producer(g, v) : -1;
	if (p < 0 || !es_rw_is(&g->nodes[p], "", "DequantizeLinear"))
		return false;
	const es_node *dq = &g->nodes[p];
	if (dq->n_inputs < 2 || dq->inputs[0] < 0 || dq->inputs[1] < 0)
		return false;
	w->q = dq->inputs[0];
	w->scale = dq->inputs[1];
	w->zp = dq->n_inputs > 2 ? dq->inputs[2] : -1;
	w->wq = g->values[w->q].constant;
	w->sw = g->values[w->scale].constant;
	if (!w->wq || !w->sw || !is_int8(w->wq->dtype) || w->wq->ndim < 3 ||
	    w->wq->dims[0] < 1 || w->sw->dtype != ES_DT_FLOAT || w->sw->ndim > 1)
		return false;
	w->m = w->wq->dims[0];
	int64_t len = es_tensor_numel(w->sw);
	if (w->sw->ndim == 1) {
		int64_t axis = 1;
		if (es_node_attr_int(dq, "axis", 1, &axis, NULL))
			return false;
		if (axis < 0)
			axis += w->wq->ndim;
		if (dq->opset < 13 || axis != 0 || len != w->m)
			return false;
	} else if (len != 1) {
		return false;
	}
	const float *s = w->sw->data;
	for (int64_t i = 0; i < len; i++)
		if (!isfinite(s[i]) || !(s[i] > 0.0f))
			return false;
	if (w->zp >= 0) {
		const es_tensor *z = g->values[w->zp].constant;
		if (!z || z->dtype != w->wq->dtype || z->ndim != w->sw->ndim ||
		    es_tensor_numel(z) != len)
			return false;
	}
	return true;
}

/*
 * The Conv's bias v = DequantizeLinear(bq int32 [m], sb, 0) with
 * sb[k] == sx * sw[k] within float rounding; its int32 value into *bq.
 */
static bool dq_bias(const es_graph *g, int v, float sx, const struct qweight *w, int *bq)
{
	int p = v >= 0 ? es_rw_producer(g, v) : -1;
	if (p < 0 || !es_rw_is(&g->nodes[p], "", "DequantizeLinear"))
		return false;
	const es_node *dq = &g->nodes[p];
	if (dq->n_inputs < 2 || dq->inputs[0] < 0 || dq->inputs[1] < 0)
		return false;
	const es_tensor *b = g->values[dq->inputs[0]].constant;
	const es_tensor *sb = g->values[dq->inputs[1]].constant;
	if (!b || b->dtype != ES_DT_INT32 || b->ndim != 1 || b->dims[0] != w->m || !sb ||
	    sb->dtype != ES_DT_FLOAT || sb->ndim > 1)
		return false;
	int64_t len = es_tensor_numel(sb);
	if (len != 1 && (sb->ndim != 1 || len != w->m))
		return false;
	if (sb->ndim == 1 && len > 1) {
		int64_t axis = 1;
		if (es_node_attr_int(dq, "axis", 1, &axis, NULL) || (axis != 0 && axis != -1))
			return false;
	}
	if (dq->n_inputs > 2 && dq->inputs[2] >= 0) {
		const es_tensor *z = g->values[dq->inputs[2]].constant;
		if (!z || z->dtype != ES_DT_INT32)
			return false;
		for (int64_t i = 0; i < es_tensor_numel(z); i++)
			if (((const int32_t *)z->data)[i] != 0)
				return false;
	}
	const float *s = sb->data, *ws = w->sw->data;
	int64_t wlen = es_tensor_numel(w->sw);
	for (int64_t k = 0; k < w->m; k++) {
		double want = (double)sx * (double)ws[wlen > 1 ? k : 0];
		double got = s[len > 1 ? k : 0];
		/* the tool computed the product in float (or double): allow a
		 * few float ulps */
		if (!(fabs(got - want) <= 4e-7 * fabs(want)))
			return false;
	}
	*bq = dq->inputs[0];
	return true;
}

/* A zero constant of dtype dt, shape like `like` (NULL: a scalar). */
static int zero_const(es_graph *g, const char *hint, es_dtype dt, const es_tensor *like,
		      es_error *err)
{
	es_tensor t = { 0 };
	int64_t dims[ES_MAX_DIMS] = { 0 };
	int ndim = like ? like->ndim : 0;
	for (int d = 0; d < ndim; d++)
		dims[d] = like->dims[d];
	if (es_tensor_alloc(&t, dt, ndim, dims, err))
		return -1;
	memset(t.data, 0, t.nbytes);
	return es_rw_add_constant(g, hint, "zero_point", &t, err);
}

/* The zero point input of a, made when absent. */
static int act_zp(es_graph *g, const struct qact *a, es_error *err)
{
	if (a->zp >= 0)
		return a->zp;
	return zero_const(g, g->values[a->q].name, a->dt, NULL, err);
}

static int oom(es_pass_ctx *c)
{
	return c->err->code ? c->err->code : es_error_set(c->err, ES_ENOMEM, "out of memory");
}

/* Builds the fused node replacing `dead[0..n_dead)`, writing y. */
static int replace(es_graph *g, es_pass_ctx *c, int at, const char *domain, const char *op,
		   const int *in, int n_in, struct qact *y, const int *dead, int n_dead,
		   bool relu, bool copy_attrs)
{
	char *name = strdup(g->nodes[at].name);
	if (!name)
		return es_error_set(c->err, ES_ENOMEM, "out of memory");
	int nn = es_rw_add_node(g, domain, op, name, in, n_in, &y->q, 1, c->err);
	free(name);
	if (nn < 0)
		return oom(c);
	if ((copy_attrs && es_rw_copy_attrs(g, &g->nodes[nn], &g->nodes[at])) ||
	    (relu && es_rw_set_string(&g->nodes[nn], "activation", "Relu")))
		return es_error_set(c->err, ES_ENOMEM, "out of memory");
	/* QuantizeLinear's output dtype is only known from its zero point */
	g->values[y->q].dtype = y->dt;
	for (int i = 0; i < n_dead; i++)
		es_rw_kill(g, dead[i]);
	c->changes++;
	return 0;
}

/* Follows v through an optional Relu to a QuantizeLinear; fills *y, the
 * nodes to remove (after `dead[0]`, the head) and *relu. */
static bool tail(const es_graph *g, int v, struct qact *y, int *dead, int *n_dead, bool *relu)
{
	if (is_graph_output(g, v))
		return false;
	int next = next_of(g, v);
	*relu = false;
	if (next >= 0 && es_rw_is(&g->nodes[next], "", "Relu") &&
	    g->nodes[next].n_outputs == 1) {
		*relu = true;
		dead[(*n_dead)++] = next;
		v = g->nodes[next].outputs[0];
		if (is_graph_output(g, v))
			return false;
		next = next_of(g, v);
	}
	if (!q_of(g, next, v, y))
		return false;
	dead[(*n_dead)++] = next;
	return true;
}

static int fuse_conv(es_graph *g, es_pass_ctx *c, int n)
{
	const es_node *conv = &g->nodes[n];
	struct qact x, y;
	struct qweight w;
	int dead[3] = { n }, n_dead = 1, bq = -1;
	bool relu;

	if (conv->n_inputs < 2 || conv->n_outputs != 1 || conv->outputs[0] < 0 ||
	    !dq_activation(g, conv->inputs[0], &x) || !dq_weight(g, conv->inputs[1], &w))
		return 0;
	if (conv->n_inputs > 2 && conv->inputs[2] >= 0 && !dq_bias(g, conv->inputs[2], x.s, &w, &bq))
		return 0;
	if (!tail(g, conv->outputs[0], &y, dead, &n_dead, &relu))
		return 0;

	int in[9] = { x.q, x.scale, -1, w.q, w.scale, w.zp, y.scale, -1, bq };
	if ((in[2] = act_zp(g, &x, c->err)) < 0 || (in[7] = act_zp(g, &y, c->err)) < 0)
		return oom(c);
	if (in[5] < 0) {
		const es_tensor *sw = g->values[w.scale].constant;
		es_tensor like = *sw;
		if ((in[5] = zero_const(g, g->values[w.q].name, w.wq->dtype, &like, c->err)) < 0)
			return oom(c);
	}
	return replace(g, c, n, ES_DOMAIN, "QConv", in, bq >= 0 ? 9 : 8, &y, dead, n_dead,
		       relu, true);
}

static int fuse_add(es_graph *g, es_pass_ctx *c, int n)
{
	const es_node *add = &g->nodes[n];
	struct qact a, b, y;
	int dead[3] = { n }, n_dead = 1;
	bool relu;

	if (add->n_inputs != 2 || add->n_outputs != 1 || add->outputs[0] < 0 ||
	    !dq_activation(g, add->inputs[0], &a) || !dq_activation(g, add->inputs[1], &b) ||
	    !tail(g, add->outputs[0], &y, dead, &n_dead, &relu))
		return 0;
	int in[8] = { a.q, a.scale, -1, b.q, b.scale, -1, y.scale, -1 };
	if ((in[2] = act_zp(g, &a, c->err)) < 0 || (in[5] = act_zp(g, &b, c->err)) < 0 ||
	    (in[7] = act_zp(g, &y, c->err)) < 0)
		return oom(c);
	return replace(g, c, n, ES_DOMAIN, "QAdd", in, 8, &y, dead, n_dead, relu, false);
}

static int fuse_maxpool(es_graph *g, es_pass_ctx *c, int n)
{
	const es_node *pool = &g->nodes[n];
	struct qact x, y;
	int dead[2] = { n, -1 };

	/* MaxPool-12 is the first to take int8 */
	if (es_graph_opset(g, "") < 12 || pool->n_inputs != 1 || pool->outputs[0] < 0 ||
	    (pool->n_outputs > 1 && pool->outputs[1] >= 0) ||
	    !dq_activation(g, pool->inputs[0], &x) || is_graph_output(g, pool->outputs[0]))
		return 0;
	dead[1] = next_of(g, pool->outputs[0]);
	if (!q_of(g, dead[1], pool->outputs[0], &y) || y.dt != x.dt || y.s != x.s || y.z != x.z)
		return 0;
	int in[1] = { x.q };
	return replace(g, c, n, "", "MaxPool", in, 1, &y, dead, 2, false, true);
}

/* Removes the DequantizeLinear nodes whose output nobody reads any more. */
static void drop_unread_dq(es_graph *g)
{
	for (int n = g->n_nodes - 1; n >= 0; n--) {
		const es_node *dq = &g->nodes[n];
		if (dq->dead || !es_rw_is(dq, "", "DequantizeLinear") || dq->n_outputs != 1)
			continue;
		int v = dq->outputs[0];
		if (v >= 0 && !is_graph_output(g, v) && es_rw_consumers(g, v, NULL, 0) == 0)
			es_rw_kill(g, n);
	}
}

static int run_fuse_qdq(es_graph *g, es_pass_ctx *c)
{
	const int n_nodes = g->n_nodes;
	bool have_qconv = es_op_find(ES_DOMAIN, "QConv", ES_DOMAIN_VERSION, NULL) != NULL;
	for (int n = 0; n < n_nodes; n++) {
		const es_node *node = &g->nodes[n];
		int rc = 0;
		if (node->dead || node->n_outputs < 1 || node->outputs[0] < 0 ||
		    g->values[node->outputs[0]].dtype != ES_DT_FLOAT)
			continue;
		if (es_rw_is(node, "", "Conv") && have_qconv)
			rc = fuse_conv(g, c, n);
		else if (es_rw_is(node, "", "Add"))
			rc = fuse_add(g, c, n);
		else if (es_rw_is(node, "", "MaxPool"))
			rc = fuse_maxpool(g, c, n);
		if (rc)
			return rc;
	}
	if (c->changes)
		drop_unread_dq(g);
	return 0;
}

const es_pass es_pass_fuse_qdq = { "fuse_qdq", run_fuse_qdq };
