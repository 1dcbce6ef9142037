/* es_model: load, validate and prepare a graph for execution. */
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/status.h"
#include "engine/exec/exec.h"
#include "engine/model_int.h"
#include "engine/onnx/onnx_int.h"
#include "engine/opt/passes.h"
#include "engine/ops/op.h"

const es_tensor *es_init_const_input(const es_op_init_ctx *c, int i)
{
	if (i < 0 || i >= c->node->n_inputs || c->node->inputs[i] < 0)
		return NULL;
	return c->graph->values[c->node->inputs[i]].constant;
}

static bool is_default_domain(const char *d)
{
	return !d || !*d || !strcmp(d, "ai.onnx");
}

/* Turns attribute payloads of Constant nodes into constant values, so that
 * kernels see them in init (shapes, axes, weights) and the executor never
 * runs them. */
static int fold_constant_nodes(es_graph *g, es_error *err)
{
	int kept = 0, n, rc = 0;
	for (n = 0; n < g->n_nodes; n++) {
		es_node *node = &g->nodes[n];
		if (strcmp(node->op_type, "Constant") || !is_default_domain(node->domain)) {
			if (kept != n)
				g->nodes[kept] = *node;
			kept++;
			continue;
		}
		if (node->n_outputs != 1 || node->outputs[0] < 0 || node->n_inputs != 0) {
			rc = es_error_set(err, ES_EGRAPH,
				"node '%s' (Constant): needs no inputs and exactly one output",
				node->name);
			goto out;
		}
		if (node->n_attrs != 1) {
			rc = es_error_set(err, ES_EGRAPH,
				"node '%s' (Constant): needs exactly one value attribute, has %d",
				node->name, node->n_attrs);
			goto out;
		}
		es_attr *a = &node->attrs[0];
		es_tensor *t = calloc(1, sizeof(es_tensor));
		if (!t) {
			rc = es_error_set(err, ES_ENOMEM, "out of memory");
			goto out;
		}
		int64_t dim;
		if (!strcmp(a->name, "value") && a->type == ES_ATTR_TENSOR && a->t) {
			*t = *a->t;
			free(a->t);
			a->t = NULL;
		} else if (!strcmp(a->name, "value_float") && a->type == ES_ATTR_FLOAT) {
			rc = es_tensor_alloc(t, ES_DT_FLOAT, 0, NULL, err);
			if (!rc)
				*(float *)t->data = a->f;
		} else if (!strcmp(a->name, "value_int") && a->type == ES_ATTR_INT) {
			rc = es_tensor_alloc(t, ES_DT_INT64, 0, NULL, err);
			if (!rc)
				*(int64_t *)t->data = a->i;
		} else if (!strcmp(a->name, "value_floats") && a->type == ES_ATTR_FLOATS) {
			dim = (int64_t)a->n;
			rc = es_tensor_alloc(t, ES_DT_FLOAT, 1, &dim, err);
			if (!rc && a->n)
				memcpy(t->data, a->floats, a->n * sizeof(float));
		} else if (!strcmp(a->name, "value_ints") && a->type == ES_ATTR_INTS) {
			dim = (int64_t)a->n;
			rc = es_tensor_alloc(t, ES_DT_INT64, 1, &dim, err);
			if (!rc && a->n)
				memcpy(t->data, a->ints, a->n * sizeof(int64_t));
		} else {
			free(t);
			rc = es_error_set(err, ES_EUNSUPPORTED,
				"node '%s' (Constant): attribute '%s' is not supported (string and sparse constants are not)",
				node->name, a->name);
			goto out;
		}
		if (rc) {
			free(t);
			rc = es_error_prefix(err, "node '%s' (Constant)", node->name);
			goto out;
		}
		es_value *v = &g->values[node->outputs[0]];
		if (v->constant || v->is_input) {
			es_graph_tensor_free(g, t);
			rc = es_error_set(err, ES_EGRAPH,
				"node '%s' (Constant): output '%s' is already defined",
				node->name, v->name);
			goto out;
		}
		v->constant = t;
		v->dtype = t->dtype;
		v->ndim = t->ndim;
		for (int d = 0; d < t->ndim; d++)
			v->dims[d] = t->dims[d];
		/* the node itself goes (the constant took its tensor over) */
		node->op = NULL;
		es_graph_node_clear(g, node);
	}
out:
	/* on failure the nodes not yet visited stay, after the kept ones, so
	 * the graph frees each node exactly once */
	for (; n < g->n_nodes; n++)
		g->nodes[kept++] = g->nodes[n];
	g->n_nodes = kept;
	return rc;
}

/* Finds every node's kernel; reports all unsupported ops in one message. */
static int resolve_kernels(es_graph *g, es_error *err)
{
	char list[ES_ERROR_MSG_MAX - 64];
	size_t used = 0;
	int missing = 0;
	list[0] = '\0';
	for (int n = 0; n < g->n_nodes; n++) {
		es_node *node = &g->nodes[n];
		int64_t opset = es_graph_opset(g, node->domain);
		node->opset = (int)opset;
		bool known = false;
		node->op = opset > 0 ? es_op_find(node->domain, node->op_type, opset, &known) : NULL;
		if (node->op)
			continue;
		/* name each missing (domain, op, opset) once */
		bool seen = false;
		for (int m = 0; m < n && !seen; m++) {
			es_node *o = &g->nodes[m];
			seen = !o->op && !strcmp(o->op_type, node->op_type) &&
			       !strcmp(o->domain, node->domain);
		}
		if (seen)
			continue;
		missing++;
		char item[160];
		if (opset <= 0)
			snprintf(item, sizeof(item), "%s%s%s (domain not imported)",
				 node->domain, *node->domain ? "." : "", node->op_type);
		else
			snprintf(item, sizeof(item), "%s%s%s-%lld%s",
				 node->domain, *node->domain ? "." : "", node->op_type,
				 (long long)opset, known ? " (this opset)" : "");
		size_t len = strlen(item);
		if (used + len + 3 < sizeof(list)) {
			memcpy(list + used, used ? ", " : "", used ? 2 : 0);
			used += used ? 2 : 0;
			memcpy(list + used, item, len + 1);
			used += len;
		}
	}
	if (missing)
		return es_error_set(err, ES_EUNSUPPORTED,
			"model uses %d unsupported operator%s: %s", missing,
			missing > 1 ? "s" : "", list);
	/* arity */
	for (int n = 0; n < g->n_nodes; n++) {
		es_node *node = &g->nodes[n];
		const es_op_def *d = node->op;
		if (node->n_inputs < d->min_inputs || node->n_inputs > d->max_inputs)
			return es_error_set(err, ES_EGRAPH,
				"node '%s' (%s): has %d inputs, expected %d to %d",
				node->name, node->op_type, node->n_inputs, d->min_inputs,
				d->max_inputs);
		if (node->n_outputs < d->min_outputs || node->n_outputs > d->max_outputs)
			return es_error_set(err, ES_EGRAPH,
				"node '%s' (%s): has %d outputs, expected %d to %d",
				node->name, node->op_type, node->n_outputs,
				d->min_outputs, d->max_outputs);
		for (int i = 0; i < d->min_inputs && i < node->n_inputs; i++)
			if (node->inputs[i] < 0)
				return es_error_set(err, ES_EGRAPH,
					"node '%s' (%s): required input %d is missing",
					node->name, node->op_type, i);
	}
	return 0;
}

/* Propagates dtypes along the (sorted) graph with each kernel's rules and
 * rejects combinations that can never run. Unknown stays unknown. */
static int check_types(es_graph *g, es_error *err)
{
	for (int n = 0; n < g->n_nodes; n++) {
		es_node *node = &g->nodes[n];
		const es_op_def *d = node->op;
		es_dtype t0 = ES_DT_UNDEFINED;
		if (node->n_inputs > 0 && node->inputs[0] >= 0)
			t0 = g->values[node->inputs[0]].dtype;
		/* type codes come from the file (value_info): ES_T shifts by them */
		if ((unsigned)t0 >= 32 && d->types)
			return es_error_set(err, ES_ETYPE,
				"node '%s' (%s): input '%s' has unknown type code %d",
				node->name, node->op_type,
				g->values[node->inputs[0]].name, (int)t0);
		if (t0 != ES_DT_UNDEFINED && d->types && !(d->types & ES_T(t0)))
			return es_error_set(err, ES_ETYPE,
				"node '%s' (%s): input '%s' has type %s, which this operator does not accept",
				node->name, node->op_type,
				g->values[node->inputs[0]].name, es_dtype_name(t0));
		for (int i = 1; i < node->n_inputs && i < 32; i++) {
			if (!(d->same_type_inputs & (1u << i)) || node->inputs[i] < 0)
				continue;
			es_dtype ti = g->values[node->inputs[i]].dtype;
			if (t0 != ES_DT_UNDEFINED && ti != ES_DT_UNDEFINED && ti != t0)
				return es_error_set(err, ES_ETYPE,
					"node '%s' (%s): input '%s' has type %s, expected %s like input '%s'",
					node->name, node->op_type,
					g->values[node->inputs[i]].name, es_dtype_name(ti),
					es_dtype_name(t0), g->values[node->inputs[0]].name);
		}
		if (node->n_outputs < 1 || node->outputs[0] < 0)
			continue;
		es_dtype out = ES_DT_UNDEFINED;
		switch (d->out_type) {
		case ES_OUT_SAME: out = t0; break;
		case ES_OUT_FIXED: out = d->out_dtype; break;
		case ES_OUT_ATTR_TO: {
			int64_t to = 0;
			if (es_node_attr_int(node, "to", 0, &to, err))
				return err ? err->code : ES_EINVAL;
			out = (es_dtype)to;
			break;
		}
		case ES_OUT_INPUT1:
			if (node->n_inputs > 1 && node->inputs[1] >= 0)
				out = g->values[node->inputs[1]].dtype;
			break;
		default: break;
		}
		es_value *ov = &g->values[node->outputs[0]];
		if (out != ES_DT_UNDEFINED)
			ov->dtype = out;
	}
	return 0;
}

static bool is_random(const es_node *n)
{
	static const char *const ops[] = {
		"RandomNormal", "RandomUniform", "RandomNormalLike",
		"RandomUniformLike", "Multinomial", "Bernoulli",
	};
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
		if (!strcmp(n->op_type, ops[i]))
			return true;
	return false;
}

static bool all_inputs_constant(const es_graph *g, const es_node *n)
{
	for (int i = 0; i < n->n_inputs; i++)
		if (n->inputs[i] >= 0 && !g->values[n->inputs[i]].constant)
			return false;
	return true;
}

static int init_node(es_graph *g, es_node *node, es_error *err)
{
	if (node->ready)
		return 0;
	if (node->op->init) {
		es_op_init_ctx c = { .graph = g, .node = node, .err = err };
		int rc = node->op->init(&c, &node->state);
		if (rc) {
			if (err && !err->msg[0])
				es_error_set(err, rc, "node '%s' (%s): %s", node->name,
					     node->op_type, es_strerror(rc));
			return rc;
		}
	}
	node->ready = true;
	return 0;
}

/* Initialises the nodes the optimizer created or touched. */
static int init_pending(es_graph *g, es_error *err)
{
	for (int n = 0; n < g->n_nodes; n++) {
		int rc = init_node(g, &g->nodes[n], err);
		if (rc)
			return rc;
	}
	return 0;
}

/* A DequantizeLinear of constants (an int8 weight, an int32 bias). */
static bool const_dequantize(const es_graph *g, const es_node *n)
{
	return !strcmp(n->op_type, "DequantizeLinear") && is_default_domain(n->domain) &&
	       all_inputs_constant(g, n);
}

/*
 * Whether node n waits for the int8 pass (opt/fuse_qdq.c), which must see
 * quantized weights before they become float constants: DequantizeLinear
 * of constants and whatever would fold together with it (late[] marks
 * their outputs), and the nodes reading such a value, whose init would
 * otherwise see a non-constant weight. They are initialised (and folded)
 * by the second init_kernels round, right after that pass.
 */
static bool deferred(const es_graph *g, const es_node *n, bool *late)
{
	bool any_late = false, chain = true;
	for (int i = 0; i < n->n_inputs; i++) {
		int v = n->inputs[i];
		if (v < 0)
			continue;
		if (late[v])
			any_late = true;
		else if (!g->values[v].constant)
			chain = false;
	}
	if (const_dequantize(g, n) || (any_late && chain && !is_random(n))) {
		for (int o = 0; o < n->n_outputs; o++)
			if (n->outputs[o] >= 0)
				late[n->outputs[o]] = true;
		return true;
	}
	return any_late;
}

/*
 * Initialises kernels in topological order. Unless disabled, a node whose
 * inputs are all constants is run once here and replaced by its outputs, so
 * the kernels after it see those as constants in their own init (weights
 * reshaped or transposed at export time, shape arithmetic on fixed shapes).
 * With `defer`, the nodes deferred() names are left alone (not initialised,
 * not folded) for a second round without it.
 */
static int init_kernels(es_graph *g, bool fold, bool defer, es_error *err)
{
	es_session *folder = NULL;
	bool *late = NULL;
	int rc = 0, kept = 0, folded = 0;
	if (defer && !(late = calloc((size_t)g->n_values + 1, sizeof(*late))))
		return es_error_set(err, ES_ENOMEM, "out of memory");
	if (fold && !(folder = es_exec_folder_new(g))) {
		free(late);
		return es_error_set(err, ES_ENOMEM, "out of memory");
	}
	for (int n = 0; n < g->n_nodes; n++) {
		es_node *node = &g->nodes[n];
		es_error_clear(err);
		if (late && deferred(g, node, late))
			continue;
		if ((rc = init_node(g, node, err)))
			goto out;
		if (fold && all_inputs_constant(g, node) && !is_random(node)) {
			rc = es_exec_fold_node(folder, n, err);
			if (rc)
				goto out;
			node->n_inputs = 0; /* mark: removed below */
			node->n_outputs = -1;
			folded++;
		}
	}
	if (!folded)
		goto out;
	for (int n = 0; n < g->n_nodes; n++) {
		es_node *node = &g->nodes[n];
		if (node->n_outputs >= 0) {
			g->nodes[kept++] = *node;
			continue;
		}
		es_graph_node_clear(g, node);
	}
	g->n_nodes = kept;
	rc = es_graph_finalize(g, err);
out:
	if (folder)
		es_exec_folder_free(folder);
	free(late);
	return rc;
}

/* Appends the pass statistics of `more` to `rep`. */
static void merge_report(es_opt_report *rep, const es_opt_report *more)
{
	for (int i = 0; i < more->n_passes && rep->n_passes < ES_OPT_MAX_PASSES; i++)
		rep->pass[rep->n_passes++] = more->pass[i];
	rep->nodes_after = more->nodes_after;
}

/*
 * The optimizer pipeline in two parts: up to the int8 pass (fuse_qdq),
 * which sees the deferred DequantizeLinear of constant weights, then the
 * second init_kernels round, which initialises and folds what that pass
 * left exactly as the first round would have, then the rest of the passes
 * on a graph like the one they always saw. Then the nodes the passes
 * created or touched are initialised.
 */
static int optimize(es_graph *g, es_model *m, es_error *err)
{
	size_t n = es_opt_default_passes_n, split = 0;
	es_opt_report rest;
	int rc;
	for (size_t i = 0; i < n; i++)
		if (es_opt_default_passes[i] == &es_pass_fuse_qdq)
			split = i + 1;
	if ((rc = es_opt_run_passes(g, es_opt_default_passes, split, &m->opts, &m->opt, err)) ||
	    (rc = init_kernels(g, true, false, err)) ||
	    (rc = es_opt_run_passes(g, es_opt_default_passes + split, n - split, &m->opts,
				    &rest, err)))
		return rc;
	merge_report(&m->opt, &rest);
	return init_pending(g, err);
}

static void fill_info(const es_value *v, es_value_info *info)
{
	info->name = v->name;
	info->dtype = v->dtype;
	info->ndim = v->ndim;
	for (int d = 0; d < ES_MAX_DIMS; d++) {
		info->dims[d] = d < v->ndim ? v->dims[d] : -1;
		info->dim_params[d] = v->dim_params[d];
	}
}

static void model_free(es_model *m)
{
	if (!m)
		return;
	es_graph_free(m->graph);
	free(m->inputs);
	free(m->outputs);
	free(m->base_dir);
	free(m);
}

int es_model_from_graph(es_graph *g, const char *base_dir,
			const es_model_options *opts, es_model **out,
			es_error *err)
{
	int rc;
	es_model *m = calloc(1, sizeof(*m));
	if (!m) {
		es_graph_free(g);
		return es_error_set(err, ES_ENOMEM, "out of memory");
	}
	atomic_init(&m->refs, 1);
	m->graph = g;
	if (opts)
		m->opts = *opts;
	if (base_dir && !(m->base_dir = strdup(base_dir))) {
		rc = es_error_set(err, ES_ENOMEM, "out of memory");
		goto fail;
	}
	m->opset = es_graph_opset(g, "");
	if ((rc = fold_constant_nodes(g, err)) ||
	    (rc = es_graph_finalize(g, err)) ||
	    (rc = resolve_kernels(g, err)) ||
	    (rc = check_types(g, err)) ||
	    (rc = init_kernels(g, !m->opts.no_optimize, !m->opts.no_optimize, err)))
		goto fail;
	if (!m->opts.no_optimize && (rc = optimize(g, m, err)))
		goto fail;
	m->inputs = calloc((size_t)g->n_inputs + 1, sizeof(es_value_info));
	m->outputs = calloc((size_t)g->n_outputs + 1, sizeof(es_value_info));
	if (!m->inputs || !m->outputs) {
		rc = es_error_set(err, ES_ENOMEM, "out of memory");
		goto fail;
	}
	for (int i = 0; i < g->n_inputs; i++)
		fill_info(&g->values[g->inputs[i]], &m->inputs[i]);
	for (int i = 0; i < g->n_outputs; i++)
		fill_info(&g->values[g->outputs[i]], &m->outputs[i]);
	*out = m;
	return 0;
fail:
	model_free(m);
	return rc;
}

int es_model_load_buffer(const void *buf, size_t len, const char *base_dir,
			 const es_model_options *opts, es_model **out,
			 es_error *err)
{
	es_graph *g;
	es_error local;
	if (!err)
		err = &local;
	es_error_clear(err);
	int rc = es_onnx_load_graph(buf, len, base_dir, &g, err);
	if (rc)
		return rc;
	if ((rc = es_opt_check_domains(g, err))) {
		es_graph_free(g);
		return rc;
	}
	return es_model_from_graph(g, base_dir, opts, out, err);
}

int es_model_load(const char *path, const es_model_options *opts,
		  es_model **out, es_error *err)
{
	void *map;
	size_t len;
	int rc = es_onnx_map_file(path, &map, &len, err);
	if (rc)
		return rc;
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", path);
	rc = es_model_load_buffer(map, len, dirname(dir), opts, out, err);
	es_onnx_unmap_file(map, len);
	return rc;
}

void es_model_retain(es_model *m)
{
	atomic_fetch_add(&m->refs, 1);
}

void es_model_release(es_model *m)
{
	if (m && atomic_fetch_sub(&m->refs, 1) == 1)
		model_free(m);
}

size_t es_model_num_inputs(const es_model *m) { return (size_t)m->graph->n_inputs; }
size_t es_model_num_outputs(const es_model *m) { return (size_t)m->graph->n_outputs; }
size_t es_model_num_nodes(const es_model *m) { return (size_t)m->graph->n_nodes; }
int64_t es_model_opset(const es_model *m) { return m->opset; }

size_t es_model_opt_passes(const es_model *m)
{
	int n = m->opt.n_passes;
	if (n < 0)
		n = 0;
	if (n > ES_OPT_MAX_PASSES)
		n = ES_OPT_MAX_PASSES;
	return (size_t)n;
}

int es_model_opt_pass(const es_model *m, size_t i, es_opt_pass_info *info)
{
	if (i >= es_model_opt_passes(m))
		return ES_ERANGE;
	const es_opt_pass_stat *st = &m->opt.pass[i];
	info->name = st->name ? st->name : "";
	info->nodes_before = st->nodes_before;
	info->nodes_after = st->nodes_after;
	info->changes = st->changes;
	info->ms = st->ms;
	return 0;
}

const es_value_info *es_model_input(const es_model *m, size_t i)
{
	return i < (size_t)m->graph->n_inputs ? &m->inputs[i] : NULL;
}

const es_value_info *es_model_output(const es_model *m, size_t i)
{
	return i < (size_t)m->graph->n_outputs ? &m->outputs[i] : NULL;
}

int es_model_input_index(const es_model *m, const char *name)
{
	for (int i = 0; i < m->graph->n_inputs; i++)
		if (!strcmp(m->inputs[i].name, name))
			return i;
	return -1;
}

int es_model_output_index(const es_model *m, const char *name)
{
	for (int i = 0; i < m->graph->n_outputs; i++)
		if (!strcmp(m->outputs[i].name, name))
			return i;
	return -1;
}
