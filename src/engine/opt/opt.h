/*
 * Graph optimization: the pass pipeline and the rewriting helpers passes
 * share.
 *
 * Where passes run (model.c, es_model_from_graph): after kernel resolution,
 * type propagation and kernel init with constant folding, so a pass sees
 * every node resolved (node->op), value dtypes propagated and every
 * constant subgraph already folded into value->constant. Passes are skipped
 * with es_model_options.no_optimize.
 *
 * Rules every pass follows:
 *   - Never change a node that kernels have initialised in a way its state
 *     depends on (inputs, attributes, constants it read). Either build a new
 *     node (es_rw_add_node) and kill the old one (es_rw_kill), or call
 *     es_rw_touch first, which frees the old state; new and touched nodes
 *     are initialised after the pipeline.
 *   - Never change the meaning of the graph: every graph input and output
 *     keeps its name, dtype and values (within float rounding of the
 *     rewritten arithmetic).
 *   - Only rewrite what is proven legal from the graph alone (shapes the
 *     pass cannot know are checked by the new node's kernel at run time,
 *     which then fails with a message, or falls back).
 *   - Passes are idempotent: running the pipeline on an optimized graph
 *     (e.g. one loaded from the compiled form) changes nothing.
 *
 * Internal operators that passes create live in the domain ES_DOMAIN
 * ("ai.edgeserve", opset 1). A model file may not import that domain
 * (es_opt_check_domains): those operators exist only as pass output.
 *
 * es_graph's arrays grow when values or nodes are added: es_node and
 * es_value pointers are invalid after es_rw_add_* calls; keep indices.
 */
#ifndef ES_ENGINE_OPT_OPT_H
#define ES_ENGINE_OPT_OPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "edgeserve/engine.h"
#include "engine/ir/graph.h"

#define ES_DOMAIN "ai.edgeserve"
#define ES_DOMAIN_VERSION 1

/* What one pass is handed. */
typedef struct es_pass_ctx {
	es_error *err;
	const es_model_options *opts; /* never NULL */
	int changes;                  /* the pass counts its rewrites here */
} es_pass_ctx;

typedef struct es_pass {
	const char *name; /* e.g. "conv_bn_fold" */
	/* Rewrites g; returns 0 or an error code with c->err set. Leaves
	 * killed nodes in place (es_opt_run compacts after each pass). */
	int (*run)(es_graph *g, es_pass_ctx *c);
} es_pass;

#define ES_OPT_MAX_PASSES 32

/* What the pipeline did, pass by pass (node counts before and after). */
typedef struct es_opt_pass_stat {
	const char *name;
	int nodes_before, nodes_after;
	int changes;
	double ms;
} es_opt_pass_stat;

typedef struct es_opt_report {
	int n_passes;
	es_opt_pass_stat pass[ES_OPT_MAX_PASSES];
	int nodes_before, nodes_after; /* of the whole pipeline */
} es_opt_report;

/* The default pipeline in its order (opt.c). */
extern const es_pass *const es_opt_default_passes[];
extern const size_t es_opt_default_passes_n;

/*
 * Runs `passes` in order on g, compacting (es_rw_compact) after each;
 * fills *rep when not NULL. Returns 0 or the first pass's error.
 */
int es_opt_run_passes(es_graph *g, const es_pass *const *passes, size_t n,
		      const es_model_options *opts, es_opt_report *rep,
		      es_error *err);

/* es_opt_run_passes with the default pipeline. */
int es_opt_run(es_graph *g, const es_model_options *opts, es_opt_report *rep,
	       es_error *err);

/* ES_EGRAPH when g imports ES_DOMAIN (a model file must not). */
int es_opt_check_domains(const es_graph *g, es_error *err);

/* ---- reading the graph ------------------------------------------------------- */

/* Number of live nodes reading value v (a node reading it twice counts
 * twice); the first `max` node indices go to nodes[] (may be NULL). */
int es_rw_consumers(const es_graph *g, int v, int *nodes, int max);

/* The only live node reading v, or -1 (none, several, or v is a graph
 * output, whose value must stay observable). */
int es_rw_sole_consumer(const es_graph *g, int v);

/* The live node producing v, or -1 (graph input, constant, or killed). */
int es_rw_producer(const es_graph *g, int v);

/* The constant behind input i of node n, or NULL. */
const es_tensor *es_rw_const_input(const es_graph *g, const es_node *n, int i);

/* True for node n of (domain, op_type): "" and "ai.onnx" are the same. */
bool es_rw_is(const es_node *n, const char *domain, const char *op_type);

/* A float32 constant's single value (numel 1) into *out; false otherwise. */
bool es_rw_scalar_f32(const es_tensor *t, float *out);

/* ---- changing the graph -------------------------------------------------------- */

/* Marks node n removed (it is cleared and dropped at the next compaction;
 * killed nodes are invisible to the helpers above). */
void es_rw_kill(es_graph *g, int n);
bool es_rw_killed(const es_graph *g, int n);

/* Frees node n's kernel state and marks it for init after the pipeline. */
void es_rw_touch(es_graph *g, int n);

/* Makes every live node input and graph output reading `from` read `to`
 * instead. A graph output keeps its name only through es_rw_bypass. */
void es_rw_replace_uses(es_graph *g, int from, int to);

/*
 * Removes node n, whose output `out` carries the same values as its input
 * `in` (Identity, Dropout in inference, a Transpose pair that cancels...).
 * Consumers of `out` read `in` instead; when `out` is a graph output the
 * producer of `in` is rewired to produce `out` (keeping the output's name)
 * if that is legal. Returns false, changing nothing, when it is not (e.g.
 * `in` is a graph input, a constant or another graph output).
 */
bool es_rw_bypass(es_graph *g, int n, int in, int out);

/* A new value named "<hint>/<suffix>" (made unique), dtype dt, rank
 * unknown. Returns its index or -1 (out of memory: err set). */
int es_rw_add_value(es_graph *g, const char *hint, const char *suffix,
		    es_dtype dt, es_error *err);

/* A new constant value owning *t's data afterwards (t is copied, its data
 * pointer moved; on failure the data is freed). Returns the index or -1. */
int es_rw_add_constant(es_graph *g, const char *hint, const char *suffix,
		       es_tensor *t, es_error *err);

/*
 * A new node (not yet initialised) of (domain, op_type) named `name`
 * (copied, made unique), reading in[0..n_in) and writing out[0..n_out)
 * (value indices, -1 for an omitted optional slot). Resolves its kernel
 * (importing ES_DOMAIN at version ES_DOMAIN_VERSION when needed); fails
 * with ES_EINTERNAL when no kernel exists. Returns its index or -1.
 */
int es_rw_add_node(es_graph *g, const char *domain, const char *op_type,
		   const char *name, const int *in, int n_in, const int *out,
		   int n_out, es_error *err);

/* Attribute setters (replace an attribute of the same name). 0 or
 * ES_ENOMEM. */
int es_rw_set_int(es_node *n, const char *name, int64_t v);
int es_rw_set_float(es_node *n, const char *name, float v);
int es_rw_set_string(es_node *n, const char *name, const char *v);
int es_rw_set_ints(es_node *n, const char *name, const int64_t *v, size_t count);
int es_rw_set_floats(es_node *n, const char *name, const float *v, size_t count);
/* Copies every attribute of src to dst (tensor attributes included). */
int es_rw_copy_attrs(const es_graph *g, es_node *dst, const es_node *src);

/*
 * Drops killed nodes (clearing them) and re-finalizes the graph
 * (producers, consumer counts, topological order). Values nobody uses any
 * more stay (harmless). Returns 0 or the finalize error.
 */
int es_rw_compact(es_graph *g, es_error *err);

#endif
