/* Rewriting helpers shared by the optimizer passes (opt.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "engine/ops/op.h"
#include "engine/opt/opt.h"

/* ---- reading ------------------------------------------------------------------- */

bool es_rw_killed(const es_graph *g, int n)
{
	return n >= 0 && n < g->n_nodes && g->nodes[n].dead;
}

int es_rw_consumers(const es_graph *g, int v, int *nodes, int max)
{
	int count = 0;
	if (v < 0)
		return 0;
	for (int n = 0; n < g->n_nodes; n++) {
		const es_node *node = &g->nodes[n];
		if (node->dead)
			continue;
		for (int i = 0; i < node->n_inputs; i++) {
			if (node->inputs[i] != v)
				continue;
			if (nodes && count < max)
				nodes[count] = n;
			count++;
		}
	}
	return count;
}

static bool is_graph_output(const es_graph *g, int v)
{
	for (int o = 0; o < g->n_outputs; o++)
		if (g->outputs[o] == v)
			return true;
	return false;
}

int es_rw_sole_consumer(const es_graph *g, int v)
{
	int n = -1;
	if (v < 0 || is_graph_output(g, v) || es_rw_consumers(g, v, &n, 1) != 1)
		return -1;
	return n;
}

int es_rw_producer(const es_graph *g, int v)
{
	if (v < 0 || v >= g->n_values)
		return -1;
	/* producer indices go stale between compactions: search */
	for (int n = 0; n < g->n_nodes; n++) {
		const es_node *node = &g->nodes[n];
		if (node->dead)
			continue;
		for (int o = 0; o < node->n_outputs; o++)
			if (node->outputs[o] == v)
				return n;
	}
	return -1;
}

const es_tensor *es_rw_const_input(const es_graph *g, const es_node *n, int i)
{
	if (i < 0 || i >= n->n_inputs || n->inputs[i] < 0)
		return NULL;
	return g->values[n->inputs[i]].constant;
}

static bool is_default_domain(const char *d)
{
	return !d || !*d || !strcmp(d, "ai.onnx");
}

bool es_rw_is(const es_node *n, const char *domain, const char *op_type)
{
	if (n->dead || strcmp(n->op_type, op_type))
		return false;
	if (is_default_domain(domain))
		return is_default_domain(n->domain);
	return n->domain && !strcmp(n->domain, domain);
}

bool es_rw_scalar_f32(const es_tensor *t, float *out)
{
	if (!t || t->dtype != ES_DT_FLOAT || t->nbytes != sizeof(float) || !t->data)
		return false;
	memcpy(out, t->data, sizeof(float));
	return true;
}

/* ---- changing --------------------------------------------------------------------- */

void es_rw_kill(es_graph *g, int n)
{
	if (n >= 0 && n < g->n_nodes)
		g->nodes[n].dead = true;
}

void es_rw_touch(es_graph *g, int n)
{
	es_node *node = &g->nodes[n];
	if (node->op && node->op->fini && node->state)
		node->op->fini(node->state);
	node->state = NULL;
	node->ready = false;
}

void es_rw_replace_uses(es_graph *g, int from, int to)
{
	for (int n = 0; n < g->n_nodes; n++) {
		es_node *node = &g->nodes[n];
		if (node->dead)
			continue;
		for (int i = 0; i < node->n_inputs; i++)
			if (node->inputs[i] == from)
				node->inputs[i] = to;
	}
	for (int o = 0; o < g->n_outputs; o++)
		if (g->outputs[o] == from)
			g->outputs[o] = to;
}

bool es_rw_bypass(es_graph *g, int n, int in, int out)
{
	if (in < 0 || out < 0 || in == out)
		return false;
	if (!is_graph_output(g, out)) {
		es_rw_kill(g, n);
		es_rw_replace_uses(g, out, in);
		return true;
	}
	/* out must keep its name: let in's producer write out directly */
	const es_value *vin = &g->values[in];
	int p = es_rw_producer(g, in);
	if (p < 0 || p == n || vin->is_input || vin->constant || is_graph_output(g, in))
		return false;
	es_node *prod = &g->nodes[p];
	for (int o = 0; o < prod->n_outputs; o++)
		if (prod->outputs[o] == in)
			prod->outputs[o] = out;
	es_rw_kill(g, n);
	/* the node's own inputs are gone with it; everyone else reading in
	 * now reads out (same values) */
	for (int k = 0; k < g->n_nodes; k++) {
		es_node *node = &g->nodes[k];
		if (node->dead)
			continue;
		for (int i = 0; i < node->n_inputs; i++)
			if (node->inputs[i] == in)
				node->inputs[i] = out;
	}
	if (g->values[out].dtype == ES_DT_UNDEFINED)
		g->values[out].dtype = vin->dtype;
	return true;
}

/* "<hint>/<suffix>", or "<hint>/<suffix>_<k>" when taken. */
static char *unique_name(const es_graph *g, const char *hint, const char *suffix,
			 bool node_names)
{
	char buf[512];
	for (int k = 0;; k++) {
		if (k)
			snprintf(buf, sizeof(buf), "%s/%s_%d", hint ? hint : "", suffix, k);
		else
			snprintf(buf, sizeof(buf), "%s/%s", hint ? hint : "", suffix);
		bool taken = false;
		if (node_names) {
			for (int n = 0; n < g->n_nodes && !taken; n++)
				taken = g->nodes[n].name && !strcmp(g->nodes[n].name, buf);
		} else {
			taken = es_graph_find_value(g, buf) >= 0;
		}
		if (!taken)
			return strdup(buf);
	}
}

int es_rw_add_value(es_graph *g, const char *hint, const char *suffix,
		    es_dtype dt, es_error *err)
{
	char *name = unique_name(g, hint, suffix, false);
	int v = name ? es_graph_add_value(g, name) : -1;
	free(name);
	if (v < 0) {
		es_error_set(err, ES_ENOMEM, "out of memory");
		return -1;
	}
	g->values[v].dtype = dt;
	return v;
}

int es_rw_add_constant(es_graph *g, const char *hint, const char *suffix,
		       es_tensor *t, es_error *err)
{
	es_tensor *c = malloc(sizeof(*c));
	int v = c ? es_rw_add_value(g, hint, suffix, t->dtype, err) : -1;
	if (v < 0) {
		free(c);
		es_tensor_free_data(t);
		if (err && !err->code)
			es_error_set(err, ES_ENOMEM, "out of memory");
		return -1;
	}
	*c = *t;
	t->data = NULL;
	t->nbytes = 0;
	es_value *val = &g->values[v];
	val->constant = c;
	val->ndim = c->ndim;
	for (int d = 0; d < c->ndim; d++)
		val->dims[d] = c->dims[d];
	return v;
}

static int import_domain(es_graph *g, const char *domain)
{
	if (es_graph_opset(g, domain) > 0)
		return 0;
	es_opset_import *o = realloc(g->opsets, (size_t)(g->n_opsets + 1) * sizeof(*o));
	if (!o)
		return ES_ENOMEM;
	g->opsets = o;
	o[g->n_opsets].domain = strdup(domain);
	if (!o[g->n_opsets].domain)
		return ES_ENOMEM;
	o[g->n_opsets].version = ES_DOMAIN_VERSION;
	g->n_opsets++;
	return 0;
}

int es_rw_add_node(es_graph *g, const char *domain, const char *op_type,
		   const char *name, const int *in, int n_in, const int *out,
		   int n_out, es_error *err)
{
	if (!is_default_domain(domain) && !strcmp(domain, ES_DOMAIN) &&
	    import_domain(g, ES_DOMAIN)) {
		es_error_set(err, ES_ENOMEM, "out of memory");
		return -1;
	}
	int64_t opset = es_graph_opset(g, domain);
	bool known = false;
	const es_op_def *op = opset > 0 ? es_op_find(domain, op_type, opset, &known) : NULL;
	if (!op) {
		es_error_set(err, ES_EINTERNAL, "optimizer: no kernel for %s%s%s at opset %lld",
			     domain, *domain ? "." : "", op_type, (long long)opset);
		return -1;
	}
	char *uname = unique_name(g, name, op_type, true);
	int n = uname ? es_graph_add_node(g) : -1;
	if (n < 0) {
		free(uname);
		es_error_set(err, ES_ENOMEM, "out of memory");
		return -1;
	}
	es_node *node = &g->nodes[n];
	node->name = uname;
	node->op_type = strdup(op_type);
	node->domain = strdup(is_default_domain(domain) ? "" : domain);
	node->inputs = malloc((size_t)(n_in > 0 ? n_in : 1) * sizeof(int));
	node->outputs = malloc((size_t)(n_out > 0 ? n_out : 1) * sizeof(int));
	if (!node->op_type || !node->domain || !node->inputs || !node->outputs) {
		node->dead = true; /* cleared at compaction */
		es_error_set(err, ES_ENOMEM, "out of memory");
		return -1;
	}
	if (n_in > 0)
		memcpy(node->inputs, in, (size_t)n_in * sizeof(int));
	if (n_out > 0)
		memcpy(node->outputs, out, (size_t)n_out * sizeof(int));
	node->n_inputs = n_in;
	node->n_outputs = n_out;
	node->op = op;
	node->opset = (int)opset;
	node->ready = false;
	return n;
}

/* ---- attributes -------------------------------------------------------------------- */

static es_attr *attr_slot(es_node *n, const char *name)
{
	for (int i = 0; i < n->n_attrs; i++) {
		if (!strcmp(n->attrs[i].name, name)) {
			es_attr_clear(NULL, &n->attrs[i]);
			if (!(n->attrs[i].name = strdup(name)))
				return NULL;
			return &n->attrs[i];
		}
	}
	es_attr *a = realloc(n->attrs, (size_t)(n->n_attrs + 1) * sizeof(*a));
	if (!a)
		return NULL;
	n->attrs = a;
	a = &n->attrs[n->n_attrs];
	memset(a, 0, sizeof(*a));
	if (!(a->name = strdup(name)))
		return NULL;
	n->n_attrs++;
	return a;
}

int es_rw_set_int(es_node *n, const char *name, int64_t v)
{
	es_attr *a = attr_slot(n, name);
	if (!a)
		return ES_ENOMEM;
	a->type = ES_ATTR_INT;
	a->i = v;
	return 0;
}

int es_rw_set_float(es_node *n, const char *name, float v)
{
	es_attr *a = attr_slot(n, name);
	if (!a)
		return ES_ENOMEM;
	a->type = ES_ATTR_FLOAT;
	a->f = v;
	return 0;
}

int es_rw_set_string(es_node *n, const char *name, const char *v)
{
	es_attr *a = attr_slot(n, name);
	if (!a)
		return ES_ENOMEM;
	a->type = ES_ATTR_STRING;
	a->s = strdup(v);
	return a->s ? 0 : ES_ENOMEM;
}

int es_rw_set_ints(es_node *n, const char *name, const int64_t *v, size_t count)
{
	es_attr *a = attr_slot(n, name);
	if (!a)
		return ES_ENOMEM;
	a->type = ES_ATTR_INTS;
	a->n = count;
	a->ints = malloc((count ? count : 1) * sizeof(int64_t));
	if (!a->ints)
		return ES_ENOMEM;
	if (count)
		memcpy(a->ints, v, count * sizeof(int64_t));
	return 0;
}

int es_rw_set_floats(es_node *n, const char *name, const float *v, size_t count)
{
	es_attr *a = attr_slot(n, name);
	if (!a)
		return ES_ENOMEM;
	a->type = ES_ATTR_FLOATS;
	a->n = count;
	a->floats = malloc((count ? count : 1) * sizeof(float));
	if (!a->floats)
		return ES_ENOMEM;
	if (count)
		memcpy(a->floats, v, count * sizeof(float));
	return 0;
}

static int copy_attr(es_attr *d, const es_attr *s)
{
	d->type = s->type;
	d->f = s->f;
	d->i = s->i;
	d->n = s->n;
	if (s->s && !(d->s = strdup(s->s)))
		return ES_ENOMEM;
	if (s->ints) {
		if (!(d->ints = malloc((s->n ? s->n : 1) * sizeof(int64_t))))
			return ES_ENOMEM;
		memcpy(d->ints, s->ints, s->n * sizeof(int64_t));
	}
	if (s->floats) {
		if (!(d->floats = malloc((s->n ? s->n : 1) * sizeof(float))))
			return ES_ENOMEM;
		memcpy(d->floats, s->floats, s->n * sizeof(float));
	}
	if (s->strings) {
		if (!(d->strings = calloc(s->n ? s->n : 1, sizeof(char *))))
			return ES_ENOMEM;
		for (size_t i = 0; i < s->n; i++)
			if (s->strings[i] && !(d->strings[i] = strdup(s->strings[i])))
				return ES_ENOMEM;
	}
	if (s->t) {
		if (!(d->t = malloc(sizeof(*d->t))))
			return ES_ENOMEM;
		*d->t = *s->t;
		d->t->data = NULL;
		if (s->t->nbytes) {
			if (!(d->t->data = es_aligned_alloc(s->t->nbytes)))
				return ES_ENOMEM;
			memcpy(d->t->data, s->t->data, s->t->nbytes);
		}
	}
	return 0; /* graph attributes are not copied (no kernel fuses them) */
}

int es_rw_copy_attrs(const es_graph *g, es_node *dst, const es_node *src)
{
	(void)g;
	for (int i = 0; i < src->n_attrs; i++) {
		es_attr *d = attr_slot(dst, src->attrs[i].name);
		if (!d || copy_attr(d, &src->attrs[i]))
			return ES_ENOMEM;
	}
	return 0;
}

/* ---- compaction --------------------------------------------------------------------- */

int es_rw_compact(es_graph *g, es_error *err)
{
	int kept = 0;
	bool any = false;
	for (int n = 0; n < g->n_nodes; n++) {
		if (g->nodes[n].dead) {
			es_graph_node_clear(g, &g->nodes[n]);
			any = true;
			continue;
		}
		g->nodes[kept++] = g->nodes[n];
	}
	g->n_nodes = kept;
	(void)any;
	return es_graph_finalize(g, err);
}
