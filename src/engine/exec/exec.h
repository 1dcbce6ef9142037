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

#endif
