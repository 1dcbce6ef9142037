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

#endif
