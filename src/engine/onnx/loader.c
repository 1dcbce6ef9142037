/* ModelProto -> es_graph. Checks everything that comes from the file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/status.h"
#include "engine/onnx/onnx_int.h"

/* Highest IR version whose format this loader understands. */
#define ES_MAX_IR_VERSION 10

/* ---- name -> value index map (open addressing) ------------------------- */
typedef struct name_map {
	const char **keys;
	int *vals;
	size_t cap, count;
} name_map;

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 1099511628211ull;
	return h;
}

static int map_init(name_map *m, size_t hint)
{
	m->cap = 64;
	while (m->cap < hint * 2)
		m->cap *= 2;
	m->count = 0;
	m->keys = calloc(m->cap, sizeof(*m->keys));
	m->vals = calloc(m->cap, sizeof(*m->vals));
	return m->keys && m->vals ? 0 : ES_ENOMEM;
}

static void map_free(name_map *m)
{
	free(m->keys);
	free(m->vals);
}

static int map_get(const name_map *m, const char *key)
{
	size_t i = hash_str(key) & (m->cap - 1);
	while (m->keys[i]) {
		if (!strcmp(m->keys[i], key))
			return m->vals[i];
		i = (i + 1) & (m->cap - 1);
	}
	return -1;
}

/* key must outlive the map (it points at the graph's value names). */
static int map_put(name_map *m, const char *key, int val)
{
	if ((m->count + 1) * 2 > m->cap) {
		name_map bigger;
		if (map_init(&bigger, m->cap))
			return ES_ENOMEM;
		for (size_t i = 0; i < m->cap; i++)
			if (m->keys[i])
				map_put(&bigger, m->keys[i], m->vals[i]);
		map_free(m);
		*m = bigger;
	}
	size_t i = hash_str(key) & (m->cap - 1);
	while (m->keys[i]) {
		if (!strcmp(m->keys[i], key)) {
			m->vals[i] = val;
			return 0;
		}
		i = (i + 1) & (m->cap - 1);
	}
	m->keys[i] = key;
	m->vals[i] = val;
	m->count++;
	return 0;
}

typedef struct loader {
	es_graph *g;
	name_map names;
	const char *base_dir;
	es_error *err;
} loader;

/* Value for `name`, created on first use. */
static int value_for(loader *L, const char *name)
{
	int v = map_get(&L->names, name);
	if (v >= 0)
		return v;
	v = es_graph_add_value(L->g, name);
	if (v < 0 || map_put(&L->names, L->g->values[v].name, v))
		return -1;
	return v;
}

/* Copies type and shape from a ValueInfoProto into a value. */
static int apply_value_info(loader *L, es_value *val,
			    const Onnx__ValueInfoProto *vi, bool required)
{
	const Onnx__TypeProto *tp = vi->type;
	if (!tp) {
		if (required)
			return es_error_set(L->err, ES_EPARSE,
				"graph input '%s' has no type", val->name);
		return 0;
	}
	if (tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE) {
		if (required)
			return es_error_set(L->err, ES_EUNSUPPORTED,
				"graph input or output '%s' is not a tensor (sequence, map and optional types are not supported)",
				val->name);
		return 0;
	}
	const Onnx__TypeProto__Tensor *tt = tp->tensor_type;
	if (tt->has_elem_type)
		val->dtype = (es_dtype)tt->elem_type;
	if (required && (val->dtype == ES_DT_STRING || !es_dtype_size(val->dtype)))
		return es_error_set(L->err, ES_EUNSUPPORTED,
			"graph input or output '%s' has type %s (%d), which is not supported",
			val->name, es_dtype_name(val->dtype), (int)val->dtype);
	if (!tt->shape) {
		val->ndim = -1;
		return 0;
	}
	if (tt->shape->n_dim > ES_MAX_DIMS)
		return es_error_set(L->err, ES_EUNSUPPORTED,
			"value '%s' has %zu dimensions; at most %d are supported",
			val->name, tt->shape->n_dim, ES_MAX_DIMS);
	val->ndim = (int)tt->shape->n_dim;
	for (size_t d = 0; d < tt->shape->n_dim; d++) {
		const Onnx__TensorShapeProto__Dimension *dim = tt->shape->dim[d];
		val->dims[d] = -1;
		if (dim->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE) {
			if (dim->dim_value < 0)
				return es_error_set(L->err, ES_EPARSE,
					"value '%s': dimension %zu is negative (%lld)",
					val->name, d, (long long)dim->dim_value);
			val->dims[d] = dim->dim_value;
		} else if (dim->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM &&
			   dim->dim_param && *dim->dim_param) {
			free(val->dim_params[d]);
			val->dim_params[d] = strdup(dim->dim_param);
			if (!val->dim_params[d])
				return es_error_set(L->err, ES_ENOMEM, "out of memory");
		}
	}
	return 0;
}

static int convert_attr(loader *L, const Onnx__NodeProto *np,
			const Onnx__AttributeProto *ap, es_attr *a)
{
	const char *nname = np->name && *np->name ? np->name : np->op_type;
	memset(a, 0, sizeof(*a));
	if (!ap->name || !*ap->name)
		return es_error_set(L->err, ES_EPARSE,
			"node '%s': attribute without a name", nname);
	a->name = strdup(ap->name);
	if (!a->name)
		return ES_ENOMEM;
	if (ap->ref_attr_name && *ap->ref_attr_name)
		return es_error_set(L->err, ES_EUNSUPPORTED,
			"node '%s': attribute '%s' refers to a function attribute",
			nname, ap->name);
	es_attr_type type = ap->has_type ? (es_attr_type)ap->type : ES_ATTR_UNDEFINED;
	if (type == ES_ATTR_UNDEFINED) {
		/* IR < 2 models may omit the type: infer it from what is set */
		if (ap->has_f) type = ES_ATTR_FLOAT;
		else if (ap->has_i) type = ES_ATTR_INT;
		else if (ap->has_s) type = ES_ATTR_STRING;
		else if (ap->t) type = ES_ATTR_TENSOR;
		else if (ap->g) type = ES_ATTR_GRAPH;
		else if (ap->n_floats) type = ES_ATTR_FLOATS;
		else if (ap->n_ints) type = ES_ATTR_INTS;
		else if (ap->n_strings) type = ES_ATTR_STRINGS;
	}
	a->type = type;
	switch (type) {
	case ES_ATTR_FLOAT:
		a->f = ap->f;
		break;
	case ES_ATTR_INT:
		a->i = ap->i;
		break;
	case ES_ATTR_STRING:
		a->s = es_strndup((const char *)ap->s.data, ap->s.len);
		if (!a->s && ap->s.len)
			return ES_ENOMEM;
		if (!a->s)
			a->s = strdup("");
		a->n = ap->s.len;
		break;
	case ES_ATTR_TENSOR: {
		if (!ap->t)
			return es_error_set(L->err, ES_EPARSE,
				"node '%s': tensor attribute '%s' is empty", nname, ap->name);
		a->t = calloc(1, sizeof(es_tensor));
		if (!a->t)
			return ES_ENOMEM;
		int rc = es_onnx_tensor_from_proto(ap->t, L->base_dir, a->t, L->err);
		if (rc)
			return es_error_prefix(L->err, "node '%s': attribute '%s'",
					       nname, ap->name);
		break;
	}
	case ES_ATTR_FLOATS:
		a->n = ap->n_floats;
		a->floats = malloc((a->n ? a->n : 1) * sizeof(float));
		if (!a->floats)
			return ES_ENOMEM;
		if (a->n)
			memcpy(a->floats, ap->floats, a->n * sizeof(float));
		break;
	case ES_ATTR_INTS:
		a->n = ap->n_ints;
		a->ints = malloc((a->n ? a->n : 1) * sizeof(int64_t));
		if (!a->ints)
			return ES_ENOMEM;
		if (a->n)
			memcpy(a->ints, ap->ints, a->n * sizeof(int64_t));
		break;
	case ES_ATTR_STRINGS:
		a->n = ap->n_strings;
		a->strings = calloc(a->n ? a->n : 1, sizeof(char *));
		if (!a->strings)
			return ES_ENOMEM;
		for (size_t i = 0; i < a->n; i++) {
			a->strings[i] = es_strndup((const char *)ap->strings[i].data,
						   ap->strings[i].len);
			if (!a->strings[i])
				a->strings[i] = strdup("");
			if (!a->strings[i])
				return ES_ENOMEM;
		}
		break;
	default:
		/* graphs, sparse tensors, type protos: kept as a typed marker;
		 * kernels that need them reject the node */
		break;
	}
	return 0;
}

static int convert_node(loader *L, const Onnx__NodeProto *np, int index)
{
	if (!np->op_type || !*np->op_type)
		return es_error_set(L->err, ES_EPARSE, "node %d has no op_type", index);
	int ni = es_graph_add_node(L->g);
	if (ni < 0)
		return ES_ENOMEM;
	es_node *n = &L->g->nodes[ni];
	char synth[64];
	if (np->name && *np->name) {
		n->name = strdup(np->name);
	} else {
		snprintf(synth, sizeof(synth), "%s_%d", np->op_type, index);
		n->name = strdup(synth);
	}
	n->op_type = strdup(np->op_type);
	n->domain = strdup(np->domain ? np->domain : "");
	if (!n->name || !n->op_type || !n->domain)
		return ES_ENOMEM;
	if (np->n_input > 4096 || np->n_output > 4096 || np->n_attribute > 4096)
		return es_error_set(L->err, ES_EPARSE,
			"node '%s': too many inputs, outputs or attributes", n->name);
	n->n_inputs = (int)np->n_input;
	n->n_outputs = (int)np->n_output;
	n->inputs = calloc(np->n_input + 1, sizeof(int));
	n->outputs = calloc(np->n_output + 1, sizeof(int));
	n->attrs = calloc(np->n_attribute + 1, sizeof(es_attr));
	if (!n->inputs || !n->outputs || !n->attrs)
		return ES_ENOMEM;
	for (size_t i = 0; i < np->n_input; i++) {
		const char *nm = np->input[i];
		if (!nm || !*nm) {
			L->g->nodes[ni].inputs[i] = -1;
			continue;
		}
		int v = value_for(L, nm);
		if (v < 0)
			return ES_ENOMEM;
		L->g->nodes[ni].inputs[i] = v;
	}
	for (size_t o = 0; o < np->n_output; o++) {
		const char *nm = np->output[o];
		if (!nm || !*nm) {
			L->g->nodes[ni].outputs[o] = -1;
			continue;
		}
		int v = value_for(L, nm);
		if (v < 0)
			return ES_ENOMEM;
		L->g->nodes[ni].outputs[o] = v;
	}
	n = &L->g->nodes[ni];
	for (size_t a = 0; a < np->n_attribute; a++) {
		int rc = convert_attr(L, np, np->attribute[a], &n->attrs[a]);
		n->n_attrs = (int)a + 1;
		if (rc)
			return rc == ES_ENOMEM
				? es_error_set(L->err, ES_ENOMEM, "out of memory")
				: rc;
		for (size_t b = 0; b < a; b++)
			if (!strcmp(n->attrs[b].name, n->attrs[a].name))
				return es_error_set(L->err, ES_EPARSE,
					"node '%s': attribute '%s' given twice",
					n->name, n->attrs[a].name);
	}
	return 0;
}

static int load_model(loader *L, Onnx__ModelProto *mp)
{
	es_graph *g = L->g;
	int rc;

	if (!mp->graph)
		return es_error_set(L->err, ES_EPARSE, "model has no graph");
	if (mp->has_ir_version && mp->ir_version > ES_MAX_IR_VERSION)
		return es_error_set(L->err, ES_EUNSUPPORTED,
			"model IR version %lld is newer than supported (%d)",
			(long long)mp->ir_version, ES_MAX_IR_VERSION);
	Onnx__GraphProto *gp = mp->graph;
	if (gp->n_sparse_initializer)
		return es_error_set(L->err, ES_EUNSUPPORTED,
			"sparse initializers are not supported");
	if (mp->n_functions)
		return es_error_set(L->err, ES_EUNSUPPORTED,
			"model-local functions are not supported");

	g->name = strdup(gp->name ? gp->name : "");
	g->opsets = calloc(mp->n_opset_import + 1, sizeof(es_opset_import));
	if (!g->name || !g->opsets)
		return ES_ENOMEM;
	for (size_t i = 0; i < mp->n_opset_import; i++) {
		const Onnx__OperatorSetIdProto *os = mp->opset_import[i];
		g->opsets[i].domain = strdup(os->domain ? os->domain : "");
		if (!g->opsets[i].domain)
			return ES_ENOMEM;
		g->opsets[i].version = os->has_version ? os->version : 1;
		g->n_opsets++;
	}
	if (!mp->n_opset_import) {
		/* IR version 1/2 models imported ONNX opset 1 implicitly */
		g->opsets[0].domain = strdup("");
		g->opsets[0].version = 1;
		g->n_opsets = 1;
		if (!g->opsets[0].domain)
			return ES_ENOMEM;
	}

	if (map_init(&L->names, gp->n_node * 2 + gp->n_initializer + 16))
		return ES_ENOMEM;

	for (size_t i = 0; i < gp->n_initializer; i++) {
		Onnx__TensorProto *tp = gp->initializer[i];
		if (!tp->name || !*tp->name)
			return es_error_set(L->err, ES_EPARSE, "initializer %zu has no name", i);
		if (map_get(&L->names, tp->name) >= 0)
			return es_error_set(L->err, ES_EPARSE,
				"initializer '%s' is defined twice", tp->name);
		int v = value_for(L, tp->name);
		if (v < 0)
			return ES_ENOMEM;
		es_tensor *t = calloc(1, sizeof(es_tensor));
		if (!t)
			return ES_ENOMEM;
		rc = es_onnx_tensor_from_proto(tp, L->base_dir, t, L->err);
		if (rc) {
			free(t);
			return es_error_prefix(L->err, "initializer");
		}
		es_value *val = &g->values[v];
		val->constant = t;
		val->dtype = t->dtype;
		val->ndim = t->ndim;
		for (int d = 0; d < t->ndim; d++)
			val->dims[d] = t->dims[d];
	}

	g->inputs = calloc(gp->n_input + 1, sizeof(int));
	g->outputs = calloc(gp->n_output + 1, sizeof(int));
	if (!g->inputs || !g->outputs)
		return ES_ENOMEM;
	for (size_t i = 0; i < gp->n_input; i++) {
		const Onnx__ValueInfoProto *vi = gp->input[i];
		if (!vi->name || !*vi->name)
			return es_error_set(L->err, ES_EPARSE, "graph input %zu has no name", i);
		int v = value_for(L, vi->name);
		if (v < 0)
			return ES_ENOMEM;
		es_value *val = &g->values[v];
		if (val->constant)
			continue; /* an initializer listed as input: a constant here */
		if (val->is_input)
			return es_error_set(L->err, ES_EPARSE,
				"graph input '%s' is listed twice", vi->name);
		rc = apply_value_info(L, val, vi, true);
		if (rc)
			return rc;
		val->is_input = true;
		g->inputs[g->n_inputs++] = v;
	}
	for (size_t i = 0; i < gp->n_value_info; i++) {
		const Onnx__ValueInfoProto *vi = gp->value_info[i];
		if (!vi->name || !*vi->name)
			continue;
		int v = value_for(L, vi->name);
		if (v < 0)
			return ES_ENOMEM;
		if (!g->values[v].constant && !g->values[v].is_input) {
			rc = apply_value_info(L, &g->values[v], vi, false);
			if (rc)
				return rc;
		}
	}
	for (size_t i = 0; i < gp->n_node; i++) {
		rc = convert_node(L, gp->node[i], (int)i);
		if (rc)
			return rc == ES_ENOMEM ? es_error_set(L->err, ES_ENOMEM, "out of memory") : rc;
	}
	for (size_t i = 0; i < gp->n_output; i++) {
		const Onnx__ValueInfoProto *vi = gp->output[i];
		if (!vi->name || !*vi->name)
			return es_error_set(L->err, ES_EPARSE, "graph output %zu has no name", i);
		int v = map_get(&L->names, vi->name);
		if (v < 0)
			return es_error_set(L->err, ES_EGRAPH,
				"graph output '%s' is not produced by any node", vi->name);
		for (int j = 0; j < g->n_outputs; j++)
			if (g->outputs[j] == v)
				return es_error_set(L->err, ES_EGRAPH,
					"graph output '%s' is listed twice", vi->name);
		es_value *val = &g->values[v];
		if (!val->constant && !val->is_input) {
			rc = apply_value_info(L, val, vi, false);
			if (rc)
				return rc;
		}
		val->is_output = true;
		g->outputs[g->n_outputs++] = v;
	}
	if (g->n_outputs == 0)
		return es_error_set(L->err, ES_EGRAPH, "graph has no outputs");
	return 0;
}

int es_onnx_load_graph(const void *buf, size_t len, const char *base_dir,
		       es_graph **out, es_error *err)
{
	Onnx__ModelProto *mp = onnx__model_proto__unpack(&es_onnx_pb_allocator, len, buf);
	if (!mp)
		return es_error_set(err, ES_EPARSE,
			"not a valid ONNX model (protobuf decoding failed)");
	loader L = { .base_dir = base_dir, .err = err };
	L.g = es_graph_new();
	int rc = L.g ? load_model(&L, mp) : ES_ENOMEM;
	if (rc == ES_ENOMEM && err && err->code != ES_ENOMEM)
		es_error_set(err, ES_ENOMEM, "out of memory loading the model");
	map_free(&L.names);
	onnx__model_proto__free_unpacked(mp, &es_onnx_pb_allocator);
	if (rc) {
		es_graph_free(L.g);
		return rc;
	}
	*out = L.g;
	return 0;
}
