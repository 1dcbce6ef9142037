/*
 * The optimizer's passes, one es_pass each (opt.h says what a pass may do).
 * Each has its own unit test (tests/unit/test_opt_*.c) that builds a small
 * graph, runs the pass alone with es_opt_run_passes and checks the node
 * counts before and after and the outputs against the unoptimized graph.
 */
#ifndef ES_ENGINE_OPT_PASSES_H
#define ES_ENGINE_OPT_PASSES_H

#include "engine/opt/opt.h"

/* basic.c: Identity, and Dropout whose mask output nobody reads
 * (inference: Dropout passes its input through). */
extern const es_pass es_pass_eliminate_identity;

#endif
