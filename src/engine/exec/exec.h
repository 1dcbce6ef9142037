/* Executor services used by the model loader. */
#ifndef ES_ENGINE_EXEC_EXEC_H
#define ES_ENGINE_EXEC_EXEC_H

#include "edgeserve/engine.h"
#include "engine/ir/graph.h"

/* A model-less session for evaluating constant nodes at load. */
es_session *es_exec_folder_new(es_graph *g);
void es_exec_folder_free(es_session *s);
/* Runs node n (all inputs constant) and makes its outputs constants. */
int es_exec_fold_node(es_session *s, int n, es_error *err);

/*
 * Calls hook(arg, node, false) right before and hook(arg, node, true)
 * right after node `node` runs (also when it failed), in every later run
 * of s; NULL removes it. For tests and diagnostics that attribute
 * something (allocations, counters) to nodes; the hook must not run s.
 */
typedef void (*es_exec_node_hook)(void *arg, int node, bool done);
void es_exec_set_node_hook(es_session *s, es_exec_node_hook hook, void *arg);

/* ---- memory plans (session.c, docs/engine.md "Running") ---------------------- */

/* Plans a session keeps (one per input-shape signature, least recently
 * used dropped first), and how many runs may deviate from a signature's
 * plan before that signature stays on the pool. */
#define ES_EXEC_MAX_PLANS 4
#define ES_EXEC_MAX_PLAN_MISSES 2

typedef struct es_exec_memory_info {
	bool last_run_planned;  /* the last run took its memory from a plan */
	size_t arena_bytes;     /* that plan's arena */
	size_t buffer_bytes;    /* sum of its buffers (what no sharing would need) */
	size_t recorded_pool_bytes; /* the pool's footprint after the run it was
				     * recorded from (the pre-plan cost) */
	size_t buffers;         /* buffers in that plan */
	size_t pool_bytes;      /* the pool's footprint now */
	int plans;              /* signatures held (<= ES_EXEC_MAX_PLANS) */
	uint64_t plans_built;   /* plans computed since the session started */
	uint64_t plan_misses;   /* runs that deviated from their plan */
} es_exec_memory_info;

/* Fills *out with s's memory figures (valid between runs). */
void es_session_memory_info(const es_session *s, es_exec_memory_info *out);

/* One buffer of a plan: its place in the arena and the nodes between which
 * it is live (inclusive; a graph output lives to node n_nodes). */
typedef struct es_exec_plan_buffer {
	size_t offset, bytes;
	int first_node, last_node;
	const void *data;
} es_exec_plan_buffer;

/* Copies up to cap buffers of the plan the last run used into out and
 * returns how many it has (0 when that run was not planned). For tests
 * that check live buffers never overlap. */
size_t es_session_plan_buffers(const es_session *s, es_exec_plan_buffer *out,
			       size_t cap);

/* Turns memory plans on (the default for model sessions) or off (every run
 * takes its blocks from the pool, as before plans existed; the plans held
 * are dropped at the next run). */
void es_exec_set_planning(es_session *s, bool on);

#endif
