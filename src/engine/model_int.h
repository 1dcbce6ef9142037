/* Private layout of a loaded model, shared by model.c and the executor. */
#ifndef ES_ENGINE_MODEL_INT_H
#define ES_ENGINE_MODEL_INT_H

#include <stdatomic.h>

#include "edgeserve/engine.h"
#include "engine/ir/graph.h"
#include "engine/opt/opt.h"

struct es_model {
	atomic_int refs;
	es_graph *graph;
	es_value_info *inputs;  /* n = graph->n_inputs */
	es_value_info *outputs; /* n = graph->n_outputs */
	int64_t opset;
	char *base_dir;
	es_model_options opts; /* the options it was loaded with */
	es_opt_report opt;     /* what the optimizer did (empty: no_optimize) */
};

/*
 * The pipeline every way of loading shares once it has a graph: Constant
 * nodes become constants, es_graph_finalize (structure, topological
 * order), kernel resolution, type checks and kernel init with constant
 * folding, then the optimizer passes (opt/opt.h) and init of the nodes
 * they created; folding and passes are skipped with opts->no_optimize. Takes ownership of g, also on failure.
 * base_dir (copied, may be NULL) is the directory external data came from.
 * On success *out holds one reference.
 */
int es_model_from_graph(es_graph *g, const char *base_dir,
			const es_model_options *opts, es_model **out,
			es_error *err);

/*
 * Compiled form (cache/compiled.c, described in docs/engine.md): the
 * fixed header's size and the offsets of the fields tests and the fuzzer
 * patch. All fields are little-endian.
 */
#define ES_COMPILED_FORMAT_VERSION 2
#define ES_COMPILED_HEADER_SIZE 320
#define ES_COMPILED_OFF_FORMAT 8         /* u32 */
#define ES_COMPILED_OFF_ENGINE 16        /* char[32] */
#define ES_COMPILED_OFF_CPU 48           /* char[160] */
#define ES_COMPILED_OFF_OPTIONS 208      /* u64 */
#define ES_COMPILED_OFF_KEY 240          /* u8[32] */
#define ES_COMPILED_OFF_PAYLOAD_LEN 272  /* u64 */
#define ES_COMPILED_OFF_PAYLOAD_CRC 280  /* u32, CRC-32C of the checked part */
#define ES_COMPILED_OFF_CHECKED_LEN 284  /* u64, payload bytes the CRC covers */
#define ES_COMPILED_OFF_HEADER_CRC 316   /* u32, CRC-32C of bytes [0, 316) */

#endif
