/*
 * Building small engine graphs in memory for unit tests (optimizer passes,
 * kernels): values, constants, nodes of any domain, then a model through
 * the normal pipeline (es_model_from_graph) with or without the optimizer,
 * and a one-call run. Failures end the test (cmocka), so tests read as
 * the graph they build.
 */
#ifndef ES_TESTS_SUPPORT_GRAPH_BUILDER_H
#define ES_TESTS_SUPPORT_GRAPH_BUILDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "edgeserve/engine.h"
#include "engine/ir/graph.h"

/* An empty graph importing the default domain at `opset`. */
es_graph *gb_graph(int opset);

/* A value of dtype dt (rank unknown). */
int gb_value(es_graph *g, const char *name, es_dtype dt);

/* A graph input of dtype dt and shape dims[ndim] (appended to the inputs). */
int gb_input(es_graph *g, const char *name, es_dtype dt, int ndim, const int64_t *dims);

/* Marks v a graph output (appended to the outputs). */
void gb_output(es_graph *g, int v);

/* A constant of dtype dt and shape dims[ndim], data copied from `data`
 * (numel * dtype size bytes). */
int gb_const(es_graph *g, const char *name, es_dtype dt, int ndim, const int64_t *dims,
	     const void *data);

/* A float constant / scalar. */
int gb_const_f32(es_graph *g, const char *name, int ndim, const int64_t *dims,
		 const float *data);
int gb_scalar_f32(es_graph *g, const char *name, float v);

/* A node (domain "" unless gb_node_in is used); returns its index. */
int gb_node(es_graph *g, const char *op, const char *name, const int *in, int n_in,
	    const int *out, int n_out);
int gb_node_in(es_graph *g, const char *domain, const char *op, const char *name,
	       const int *in, int n_in, const int *out, int n_out);

/* Imports domain at version into g's opsets (no-op when imported): nodes
 * of the engine's own domain need ES_DOMAIN, ES_DOMAIN_VERSION. */
void gb_import(es_graph *g, const char *domain, int64_t version);

/* Attributes of node n. */
void gb_attr_int(es_graph *g, int n, const char *name, int64_t v);
void gb_attr_float(es_graph *g, int n, const char *name, float v);
void gb_attr_ints(es_graph *g, int n, const char *name, const int64_t *v, size_t count);
void gb_attr_string(es_graph *g, int n, const char *name, const char *v);

/* The model of g (takes g), optimized unless no_optimize; fails the test
 * with the loader's message on error. */
es_model *gb_model(es_graph *g, bool no_optimize);

/* Like gb_model but returns the error code and fills *err instead. */
int gb_model_err(es_graph *g, bool no_optimize, es_model **out, es_error *err);

/*
 * Runs m once (one thread) on inputs[n_in]; copies output i's tensor
 * (shape and data, data malloc'ed: free with free()) into outs[i] for
 * every output. Returns 0 or the run's error code with *err filled.
 */
int gb_run(es_model *m, const es_tensor *inputs, size_t n_in, es_tensor *outs,
	   es_error *err);

/* Asserts that the float outputs a and b have equal shapes and agree within
 * atol + rtol * |b| element by element. */
void gb_assert_close(const es_tensor *a, const es_tensor *b, double atol, double rtol);

/* ---- random data and optimizer checks ------------------------------------------ */

/* The next value of the process's deterministic generator, uniform in
 * [-1, 1] (seeded by gb_seed; the same test order gives the same data). */
float gb_rand(void);
void gb_seed(uint64_t seed);

int64_t gb_numel(const int64_t *dims, int ndim);

/* A float constant of gb_rand() * scale values. */
int gb_rand_const(es_graph *g, const char *name, int ndim, const int64_t *dims, float scale);

/* A float tensor of gb_rand() values, data malloc'ed (free with free()). */
es_tensor gb_rand_tensor(int ndim, const int64_t *dims);

/* The optimizer's statistics of pass `name` in m (fails if it did not run). */
struct es_opt_pass_stat;
const struct es_opt_pass_stat *gb_pass_stat(const es_model *m, const char *name);

/* Nodes of op type `op` in m's graph. */
int gb_count_op(const es_model *m, const char *op);

/* Runs `pass` alone once more on m's (optimized) graph and asserts it
 * changes nothing and keeps the node count. */
struct es_pass;
void gb_assert_pass_idempotent(es_model *m, const struct es_pass *pass);

/*
 * Builds the graph twice, optimized and not, runs both on in[n_in] and
 * asserts every output keeps its name and agrees within 1e-4 + 1e-4 * |b|,
 * and that a second pipeline run on the optimized graph changes nothing
 * (idempotent passes). Returns the optimized model (caller releases).
 */
es_model *gb_both(es_graph *(*build)(void), const es_tensor *in, size_t n_in);

#endif
