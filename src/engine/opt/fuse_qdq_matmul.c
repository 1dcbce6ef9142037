/*
 * fuse_qdq_matmul: int8 matrix products of QDQ models.
 *
 *   [Q(sy, zy) <-] MatMul(DQ(a, sa, za), DQ(wq, sw, zw))
 *   [Q(sy, zy) <-] Gemm(DQ(a, sa, za), DQ(wq, sw, zw) [, DQ(bq, sa * sw, 0)])
 *     ==> QGemm(a, sa, za, wq, sw, zw [, bq] [, sy, zy])   (ops/qmatmul.c)
 *
 * a: uint8 / int8 with a scalar constant scale and zero point; wq: a
 * constant 2-D uint8 / int8 matrix quantized per tensor or per column of
 * the product (axis 1 of a [K, N] MatMul weight, axis 0 of a Gemm weight
 * with transB=1, PyTorch's layout); the Gemm's C, when present, an int32
 * constant [N] dequantized with zero point 0 at scale sa * sw (per column,
 * within float rounding), which is then the accumulator's own bias. A Gemm
 * must have alpha 1, beta 1 and transA 0. The trailing QuantizeLinear
 * (scalar constant scale and zero point) is taken when it is the product's
 * only reader; without it QGemm yields the float result.
 *
 * The MatMul's / Gemm's output must not be a graph output when a Q is
 * taken; a DequantizeLinear read elsewhere too stays for its other
 * readers, one nobody reads any more is removed. The pass must see the
 * DequantizeLinear of constant weights unfolded: it runs in the part of
 * the pipeline before model.c folds them (next to fuse_qdq). Idempotent:
 * QGemm does not match again.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "engine/opt/passes.h"

static bool is_q8(es_dtype dt)
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

/* Input i of node n or -1. */
static int input_of(const es_node *n, int i)
{
	return i < n->n_inputs ? n->inputs[i] : -1;
}

/* The constant value v (a value index, -1: NULL). */
static const es_tensor *const_of(const es_graph *g, int v)
{
	return v >= 0 ? g->values[v].constant : NULL;
}

/* One DequantizeLinear feeding the product. */
typedef struct dq_in {
	int node;       /* the DequantizeLinear */
	int x, scale, zp; /* its inputs (zp -1: absent) */
	es_dtype xdt;     /* x's type (the zero point's when x's is not known yet) */
	const es_tensor *s, *z;
} dq_in;

/* The live default-domain DequantizeLinear producing v, its scale a
 * constant float and its zero point (if any) a constant of x's dtype. */
static bool match_dq(const es_graph *g, int v, dq_in *d)
{
	int p = v >= 0 ? es_rw_producer(g, v) : -1;
	if (p < 0 || !es_rw_is(&g->nodes[p], "", "DequantizeLinear"))
		return false;
	const es_node *n = &g->nodes[p];
	memset(d, 0, sizeof(*d));
	d->node = p;
	d->x = input_of(n, 0);
	d->scale = input_of(n, 1);
	d->zp = input_of(n, 2);
	d->s = const_of(g, d->scale);
	d->z = const_of(g, d->zp);
	if (d->x < 0)
		return false;
	/* a QuantizeLinear's output whose type propagation has not run yet
	 * (its node's init waits for folding) has the zero point's type */
	d->xdt = g->values[d->x].dtype;
	if (d->xdt == ES_DT_UNDEFINED && d->z)
		d->xdt = d->z->dtype;
	if (!d->s || d->s->dtype != ES_DT_FLOAT || d->s->ndim > 1 ||
	    (d->zp >= 0 && (!d->z || d->z->dtype != d->xdt ||
			    d->z->ndim != d->s->ndim ||
			    es_tensor_numel(d->z) != es_tensor_numel(d->s))))
		return false;
	for (int64_t i = 0; i < es_tensor_numel(d->s); i++) {
		float s = ((const float *)d->s->data)[i];
		if (!(s > 0.0f) || !isfinite(s))
			return false;
	}
	return true;
}

/* The DQ's axis attribute normalised against rank, or -1 when invalid. */
static int dq_axis(const es_node *n, int rank)
{
	int64_t axis;
	if (es_node_attr_int(n, "axis", 1, &axis, NULL) || axis < -rank || axis >= rank)
		return -1;
	return (int)(axis < 0 ? axis + rank : axis);
}

typedef struct qmm_match {
	int prod;          /* the MatMul or Gemm */
	dq_in a, b, c;
	bool has_c, trans_b, gemm;
	int q;             /* the QuantizeLinear, -1: none */
	int sy, zy;        /* its scale and zero point (zy -1: absent) */
	int y;             /* the fused node's output */
	int64_t n_cols;
} qmm_match;

/* sa * sw[j] == sc[j] for every column within float rounding. */
static bool bias_scale_matches(const qmm_match *m)
{
	float sa = *(const float *)m->a.s->data;
	int64_t nb = es_tensor_numel(m->b.s), nc = es_tensor_numel(m->c.s);
	for (int64_t j = 0; j < m->n_cols; j++) {
		float want = sa * ((const float *)m->b.s->data)[nb == 1 ? 0 : j];
		float got = ((const float *)m->c.s->data)[nc == 1 ? 0 : j];
		if (fabsf(got - want) > 1e-6f * want)
			return false;
	}
	return true;
}

static bool match_operands(const es_graph *g, qmm_match *m)
{
	const es_node *p = &g->nodes[m->prod];
	if (!match_dq(g, input_of(p, 0), &m->a) || !match_dq(g, input_of(p, 1), &m->b))
		return false;
	/* a: activations per tensor */
	if (!is_q8(m->a.xdt) || es_tensor_numel(m->a.s) != 1 ||
	    const_of(g, m->a.x))
		return false;
	/* b: a constant 2-D int8 matrix, per tensor or per column of op(B) */
	const es_tensor *w = const_of(g, m->b.x);
	if (!w || w->ndim != 2 || !is_q8(w->dtype))
		return false;
	m->n_cols = m->trans_b ? w->dims[0] : w->dims[1];
	if (es_tensor_numel(m->b.s) != 1) {
		int axis = dq_axis(&g->nodes[m->b.node], 2);
		if (m->b.s->ndim != 1 || m->b.s->dims[0] != m->n_cols ||
		    axis != (m->trans_b ? 0 : 1) || g->nodes[m->b.node].opset < 13)
			return false;
	}
	if (!m->has_c)
		return true;
	/* C: int32 [N] at the accumulator's scale, zero point 0 */
	if (!match_dq(g, input_of(p, 2), &m->c))
		return false;
	const es_tensor *bq = const_of(g, m->c.x);
	if (!bq || bq->dtype != ES_DT_INT32 || bq->ndim != 1 || bq->dims[0] != m->n_cols)
		return false;
	if (es_tensor_numel(m->c.s) != 1 &&
	    (m->c.s->dims[0] != m->n_cols || dq_axis(&g->nodes[m->c.node], 1) != 0 ||
	     g->nodes[m->c.node].opset < 13))
		return false;
	if (m->c.z)
		for (int64_t i = 0; i < es_tensor_numel(m->c.z); i++)
			if (((const int32_t *)m->c.z->data)[i])
				return false;
	return bias_scale_matches(m);
}

/* Takes a QuantizeLinear reading the product alone (scalar constants). */
static void take_quantize(const es_graph *g, qmm_match *m)
{
	int n = es_rw_sole_consumer(g, m->y);
	if (n < 0 || !es_rw_is(&g->nodes[n], "", "QuantizeLinear") ||
	    g->nodes[n].n_outputs != 1 || input_of(&g->nodes[n], 0) != m->y)
		return;
	const es_node *q = &g->nodes[n];
	int sy = input_of(q, 1), zy = input_of(q, 2);
	const es_tensor *s = const_of(g, sy), *z = const_of(g, zy);
	float v;
	if (!s || !es_rw_scalar_f32(s, &v) || !(v > 0.0f) || !isfinite(v))
		return;
	if (zy >= 0 && (!z || !is_q8(z->dtype) || es_tensor_numel(z) != 1))
		return;
	m->q = n;
	m->sy = sy;
	m->zy = zy;
	m->y = q->outputs[0];
}

static bool match(const es_graph *g, int n, qmm_match *m)
{
	const es_node *p = &g->nodes[n];
	memset(m, 0, sizeof(*m));
	m->prod = n;
	m->q = -1;
	m->sy = m->zy = -1;
	if (p->n_outputs != 1 || p->outputs[0] < 0)
		return false;
	m->y = p->outputs[0];
	if (es_rw_is(p, "", "MatMul")) {
		if (p->n_inputs != 2)
			return false;
	} else {
		float alpha, beta;
		int64_t ta, tb;
		if (p->n_inputs < 2 || p->opset < 11 ||
		    es_node_attr_float(p, "alpha", 1.0f, &alpha, NULL) ||
		    es_node_attr_float(p, "beta", 1.0f, &beta, NULL) ||
		    es_node_attr_int(p, "transA", 0, &ta, NULL) ||
		    es_node_attr_int(p, "transB", 0, &tb, NULL) ||
		    alpha != 1.0f || ta != 0)
			return false;
		m->gemm = true;
		m->trans_b = tb != 0;
		m->has_c = input_of(p, 2) >= 0;
		if (m->has_c && beta != 1.0f)
			return false;
	}
	if (!match_operands(g, m))
		return false;
	if (!is_graph_output(g, m->y))
		take_quantize(g, m);
	return true;
}

/* Kills DequantizeLinear d when the product was its only reader. */
static void drop_dq(es_graph *g, const dq_in *d, int prod)
{
	int out = g->nodes[d->node].outputs[0];
	if (!es_rw_killed(g, d->node) && es_rw_sole_consumer(g, out) == prod)
		es_rw_kill(g, d->node);
}

static int run_fuse_qdq_matmul(es_graph *g, es_pass_ctx *c)
{
	int n_nodes = g->n_nodes;
	for (int n = 0; n < n_nodes; n++) {
		qmm_match m;
		if (es_rw_killed(g, n) ||
		    !(es_rw_is(&g->nodes[n], "", "MatMul") || es_rw_is(&g->nodes[n], "", "Gemm")) ||
		    !match(g, n, &m))
			continue;
		/* "<prefix>/MatMul" gives "<prefix>/QGemm" */
		char name[512];
		const char *orig = g->nodes[n].name, *slash = strrchr(orig, '/');
		int len = slash ? (int)(slash - orig) : (int)strlen(orig);
		snprintf(name, sizeof(name), "%.*s", len, orig);
		int in[9] = { m.a.x, m.a.scale, m.a.zp, m.b.x, m.b.scale, m.b.zp,
			      m.has_c ? m.c.x : -1, m.sy, m.zy };
		int n_in = 9;
		while (n_in > 5 && in[n_in - 1] < 0)
			n_in--;
		drop_dq(g, &m.a, n);
		drop_dq(g, &m.b, n);
		if (m.has_c)
			drop_dq(g, &m.c, n);
		es_rw_kill(g, n);
		if (m.q >= 0)
			es_rw_kill(g, m.q);
		int f = es_rw_add_node(g, ES_DOMAIN, "QGemm", name, in, n_in, &m.y, 1, c->err);
		if (f < 0)
			return c->err->code ? c->err->code : ES_EINTERNAL;
		es_node *fn = &g->nodes[f];
		if ((m.trans_b && es_rw_set_int(fn, "trans_b", 1)) ||
		    (m.gemm && es_rw_set_int(fn, "gemm", 1)))
			return es_error_set(c->err, ES_ENOMEM,
				"fuse_qdq_matmul: out of memory on node '%s'", name);
		c->changes++;
	}
	return 0;
}

const es_pass es_pass_fuse_qdq_matmul = { "fuse_qdq_matmul", run_fuse_qdq_matmul };
