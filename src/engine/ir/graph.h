/*
 * The engine's intermediate representation of an ONNX graph.
 *
 * Values (tensors flowing between nodes) and nodes live in two arrays and
 * refer to each other by index. A value is produced by at most one node, or
 * is a graph input, or an initializer/constant (value->constant != NULL).
 * After es_graph_finalize the nodes are in topological order.
 */
#ifndef ES_ENGINE_IR_GRAPH_H
#define ES_ENGINE_IR_GRAPH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "edgeserve/engine.h"

typedef enum es_attr_type {
	ES_ATTR_UNDEFINED = 0,
	ES_ATTR_FLOAT = 1,
	ES_ATTR_INT = 2,
	ES_ATTR_STRING = 3,
	ES_ATTR_TENSOR = 4,
	ES_ATTR_GRAPH = 5,
	ES_ATTR_FLOATS = 6,
	ES_ATTR_INTS = 7,
	ES_ATTR_STRINGS = 8,
	ES_ATTR_TENSORS = 9,
	ES_ATTR_GRAPHS = 10,
	ES_ATTR_SPARSE_TENSOR = 11,
	ES_ATTR_SPARSE_TENSORS = 12,
	ES_ATTR_TYPE_PROTO = 13,
	ES_ATTR_TYPE_PROTOS = 14,
} es_attr_type;

/* One node attribute. Only the fields of `type` are meaningful. All memory
 * is owned by the graph. Strings are NUL-terminated. */
typedef struct es_attr {
	char *name;
	es_attr_type type;
	float f;
	int64_t i;
	char *s;
	es_tensor *t; /* owned; t->data owned unless the graph borrows it */
	size_t n;     /* element count of floats/ints/strings */
	float *floats;
	int64_t *ints;
	char **strings;
} es_attr;

typedef struct es_value {
	char *name;
	es_dtype dtype;            /* ES_DT_UNDEFINED when not yet known */
	int ndim;                  /* -1: rank unknown */
	int64_t dims[ES_MAX_DIMS]; /* -1: dimension unknown */
	char *dim_params[ES_MAX_DIMS];
	es_tensor *constant;       /* initializer or folded constant (owned;
				    * data may be borrowed, see es_graph) */
	int producer;              /* node index, or -1 */
	int n_consumers;           /* count of node inputs reading it */
	bool is_input;             /* graph input fed by the caller */
	bool is_output;            /* graph output */
} es_value;

struct es_op_def;

typedef struct es_node {
	char *name;   /* never NULL after load: synthesised if the file has none */
	char *op_type;
	char *domain; /* "" for the default ONNX domain */
	int n_inputs;
	int *inputs;  /* value indices; -1 for an omitted optional input */
	int n_outputs;
	int *outputs; /* value indices; -1 for an omitted optional output */
	int n_attrs;
	es_attr *attrs;
	const struct es_op_def *op; /* resolved kernel, set by es_graph_resolve */
	int opset;    /* opset version of the node's domain in this model */
	void *state;  /* kernel private state from op->init */
	bool ready;   /* op->init ran (or the op has none) */
	bool dead;    /* removed by an optimizer pass, until compaction */
} es_node;

typedef struct es_opset_import {
	char *domain;
	int64_t version;
} es_opset_import;

/*
 * A graph loaded from a compiled form borrows its constant data from a
 * read-only mapping of that file: tensor data (of values and of tensor
 * attributes) that lies inside [backing, backing + backing_len) belongs to
 * the mapping, is never freed on its own and must never be written (the
 * pages are PROT_READ). es_graph_free unmaps it last.
 */
typedef struct es_graph {
	es_value *values;
	int n_values, cap_values;
	es_node *nodes;
	int n_nodes, cap_nodes;
	int *inputs; /* graph inputs fed by the caller, in model order */
	int n_inputs;
	int *outputs;
	int n_outputs;
	es_opset_import *opsets;
	int n_opsets;
	char *name;
	void *backing;      /* read-only file mapping, or NULL (owned) */
	size_t backing_len;
} es_graph;

/* Creates an empty graph. Owner frees with es_graph_free. */
es_graph *es_graph_new(void);
/* Frees everything the graph owns, kernel states (op->fini) included, and
 * unmaps its backing mapping after everything that points into it. */
void es_graph_free(es_graph *g);

/* True when p points into g's backing mapping (data the graph borrows). */
bool es_graph_borrows(const es_graph *g, const void *p);
/* Frees a tensor held by g (a value's constant, an attribute's tensor):
 * its data unless g borrows it from the backing mapping, then the struct. */
void es_graph_tensor_free(const es_graph *g, es_tensor *t);
/* Frees a node's contents (not the struct): kernel state via op->fini when
 * op and state are set, names, input/output lists and attributes. */
void es_graph_node_clear(const es_graph *g, es_node *n);

/* Appends a value named `name` (copied) and returns its index, or -1 when
 * out of memory. Names need not be unique at this point; the loader keeps a
 * name map. */
int es_graph_add_value(es_graph *g, const char *name);
/* Appends an empty node and returns its index, or -1 on ENOMEM. */
int es_graph_add_node(es_graph *g);
/* Linear search by name; -1 if absent. */
int es_graph_find_value(const es_graph *g, const char *name);

/* Opset version imported for `domain` ("" or "ai.onnx" for ONNX), or 0. */
int64_t es_graph_opset(const es_graph *g, const char *domain);

/*
 * Checks the graph and puts nodes in topological order: every node input is
 * defined (graph input, constant or a node output), no value is produced
 * twice, no cycles, every graph output is defined. Fills producer and
 * n_consumers. Errors name the node.
 */
int es_graph_finalize(es_graph *g, es_error *err);

/* Frees an attribute's contents (not the struct) of an attribute held by g;
 * tensor data g borrows from its backing mapping is left alone. */
void es_attr_clear(const es_graph *g, es_attr *a);

/* ---- attribute access for kernels ------------------------------------- */
const es_attr *es_node_attr(const es_node *n, const char *name);
/* The getters return the default when the attribute is absent; they fail
 * (ES_EINVAL naming the node and attribute) when it has the wrong type. */
int es_node_attr_int(const es_node *n, const char *name, int64_t def,
		     int64_t *out, es_error *err);
int es_node_attr_float(const es_node *n, const char *name, float def,
		       float *out, es_error *err);
/* *out points into the graph (or is def). */
int es_node_attr_string(const es_node *n, const char *name, const char *def,
			const char **out, es_error *err);
/* *out points into the graph; *count = 0 and *out = NULL when absent. */
int es_node_attr_ints(const es_node *n, const char *name,
		      const int64_t **out, size_t *count, es_error *err);
int es_node_attr_floats(const es_node *n, const char *name,
			const float **out, size_t *count, es_error *err);

#endif
