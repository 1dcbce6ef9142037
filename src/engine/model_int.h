/* Private layout of a loaded model, shared by model.c and the executor. */
#ifndef ES_ENGINE_MODEL_INT_H
#define ES_ENGINE_MODEL_INT_H

#include <stdatomic.h>

#include "edgeserve/engine.h"
#include "engine/ir/graph.h"

struct es_model {
	atomic_int refs;
	es_graph *graph;
	es_value_info *inputs;  /* n = graph->n_inputs */
	es_value_info *outputs; /* n = graph->n_outputs */
	int64_t opset;
	char *base_dir;
};

#endif
