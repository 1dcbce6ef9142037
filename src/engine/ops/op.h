/*
 * The operator kernel interface and registry.
 *
 * An operator is one es_op_def row: (domain, op type, opset range) plus its
 * functions. Each family file (elementwise.c, conv.c, ...) exports a table;
 * registry.c joins the tables. Adding an operator is one row and a kernel.
 *
 * Life of a kernel:
 *   init  (optional, at model load): parse and validate attributes into a
 *         private state, look at constant inputs (weights) and pre-pack
 *         them. Must not depend on non-constant input shapes.
 *   run   (every inference): check input dtypes/shapes, compute output
 *         shapes, obtain output buffers from the executor with
 *         es_kctx_output (or alias/in-place helpers), compute.
 *   fini  (optional): free the state.
 *
 * The state belongs to the model, and every session of the model runs the
 * same node concurrently: run() treats it as read-only, or guards what it
 * caches (conv.c's per-shape primitive cache takes a lock).
 *
 * Threading: kernels parallelise with OpenMP (the runtime oneDNN uses too)
 * through ES_PARALLEL_FOR / ES_PARALLEL_REGION below, never with a bare
 * `#pragma omp parallel` that a one-thread node would enter. The session
 * sets the thread count; kernels never create threads.
 */
#ifndef ES_ENGINE_OPS_OP_H
#define ES_ENGINE_OPS_OP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "edgeserve/engine.h"
#include "engine/ir/graph.h"

typedef struct es_exec es_exec; /* the executor's per-run state (opaque) */

/* Load-time context handed to op->init. */
typedef struct es_op_init_ctx {
	const es_graph *graph;
	const es_node *node;
	es_error *err;
} es_op_init_ctx;

/* The constant tensor feeding input i (initializer or Constant folded at
 * load), or NULL when input i is absent or computed at run time. */
const es_tensor *es_init_const_input(const es_op_init_ctx *c, int i);

/* Run-time context handed to op->run. */
typedef struct es_kctx {
	const es_node *node;
	void *state;
	int n_inputs;
	const es_tensor *const *inputs; /* inputs[i] NULL if omitted */
	int n_outputs;
	es_tensor *const *outputs; /* filled by es_kctx_output & co */
	int threads;               /* intra-op threads for this run (>= 1) */
	es_error *err;
	es_exec *exec;
} es_kctx;

/* The i-th input, or NULL if the node has fewer inputs or it is omitted. */
static inline const es_tensor *es_kin(const es_kctx *k, int i)
{
	return i < k->n_inputs ? k->inputs[i] : NULL;
}

/*
 * Gives output i (0 <= i < k->n_outputs) its dtype, shape and a fresh
 * buffer (64-byte aligned, contents undefined) owned by the executor.
 * Checks dims for negative values and overflow (ES_ERANGE naming the
 * node). An output slot the node lists but leaves empty ("" in the model)
 * gets a scratch buffer, so kernels can write it unconditionally; an index
 * past the node's outputs is an error. Returns 0 or a negative code with
 * k->err filled.
 */
int es_kctx_output(es_kctx *k, int i, es_dtype dt, int ndim,
		   const int64_t *dims);

/* Like es_kctx_output, but lets output i share input `in`'s buffer when the
 * executor can prove no one else will read that input afterwards (this node
 * is its last reader, it is not a graph input or constant). Same dtype size
 * and element count required. *inplace is set true when the buffer is
 * shared (then data already holds the input's values). */
int es_kctx_output_inplace(es_kctx *k, int i, int in, es_dtype dt, int ndim,
			   const int64_t *dims, bool *inplace);

/* Makes output i a view of input `in`'s data with a new shape (Reshape,
 * Flatten, Squeeze, Identity...). Element count and dtype must match. No
 * copy is made; the executor keeps the buffer alive. */
int es_kctx_output_alias(es_kctx *k, int i, int in, int ndim,
			 const int64_t *dims);

/*
 * Parallel loops that cost nothing when they run on one thread.
 *
 * GCC's libgomp allocates (and frees) a team structure for every parallel
 * region entered with one thread, `num_threads(1)` and a false `if()`
 * clause included, which breaks the executor's no-allocation rule for a
 * steady-state run. These macros enter a region only when it gets more
 * than one thread and run the very same code as a plain loop otherwise;
 * with a team the expansion is exactly the `#pragma omp parallel for` it
 * replaces, so they cost nothing at 2 threads either.
 *
 *   ES_PARALLEL_FOR(team, cond, i, n, body...)
 *       for (int64_t i = 0; i < n; i++) { body }, split statically over
 *       `team` threads when team > 1 and cond (evaluated only then).
 *   ES_PARALLEL_REGION(team, cond, body...)
 *       { body } on each thread of a team of `team` when team > 1 and
 *       cond, else once on the calling thread; omp_get_thread_num() and
 *       omp_get_num_threads() then return 0 and 1 as usual.
 *
 * The body is a macro argument: no preprocessor directives inside, and
 * `return` is not allowed in it (as in any OpenMP loop).
 */
#define ES_PARALLEL_FOR(team, cond, var, n, ...)                                   \
	do {                                                                      \
		const int es_par_team_ = (team);                                  \
		const int64_t es_par_n_ = (n);                                    \
		if (es_par_team_ > 1 && (cond)) {                                 \
			_Pragma("omp parallel for num_threads(es_par_team_) schedule(static)") \
			for (int64_t var = 0; var < es_par_n_; var++) { __VA_ARGS__ } \
		} else {                                                          \
			for (int64_t var = 0; var < es_par_n_; var++) { __VA_ARGS__ } \
		}                                                                 \
	} while (0)

/* ES_PARALLEL_FOR with `flag |= ...` in the body combined over the team
 * (an OpenMP reduction(|:flag)): for "did any iteration fail". */
#define ES_PARALLEL_PRAGMA_(x) _Pragma(#x)
#define ES_PARALLEL_FOR_OR(team, cond, flag, var, n, ...)                          \
	do {                                                                      \
		const int es_par_team_ = (team);                                  \
		const int64_t es_par_n_ = (n);                                    \
		if (es_par_team_ > 1 && (cond)) {                                 \
			ES_PARALLEL_PRAGMA_(omp parallel for num_threads(es_par_team_) \
					    schedule(static) reduction(|:flag))        \
			for (int64_t var = 0; var < es_par_n_; var++) { __VA_ARGS__ } \
		} else {                                                          \
			for (int64_t var = 0; var < es_par_n_; var++) { __VA_ARGS__ } \
		}                                                                 \
	} while (0)

#define ES_PARALLEL_REGION(team, cond, ...)                                        \
	do {                                                                      \
		const int es_par_team_ = (team);                                  \
		if (es_par_team_ > 1 && (cond)) {                                 \
			_Pragma("omp parallel num_threads(es_par_team_)")         \
			{ __VA_ARGS__ }                                           \
		} else {                                                          \
			{ __VA_ARGS__ }                                           \
		}                                                                 \
	} while (0)

/* Temporary workspace valid until op->run returns (64-byte aligned). A run
 * may hold at most 16 scratch blocks; ask for one block and carve it up
 * when more are needed. Returns NULL past that or when out of memory. */
void *es_kctx_scratch(es_kctx *k, size_t bytes);

/* Fails with ES_ETYPE / ES_ESHAPE and a message naming the node and input.
 * Convenience for kernels. */
int es_kctx_fail(es_kctx *k, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* How load-time type propagation derives output 0's dtype. */
typedef enum es_out_type {
	ES_OUT_UNKNOWN = 0, /* not known statically: checked at run */
	ES_OUT_SAME,        /* dtype of input 0 */
	ES_OUT_FIXED,       /* out_dtype */
	ES_OUT_ATTR_TO,     /* the node's "to" attribute (Cast) */
	ES_OUT_INPUT1,      /* dtype of input 1 (CastLike) */
} es_out_type;

#define ES_VARIADIC 1000

/* Bit for dtype dt in es_op_def.types. */
#define ES_T(dt) (1u << (dt))
#define ES_T_FLOATS (ES_T(ES_DT_FLOAT) | ES_T(ES_DT_DOUBLE) | ES_T(ES_DT_FLOAT16) | ES_T(ES_DT_BFLOAT16))
#define ES_T_SINTS (ES_T(ES_DT_INT8) | ES_T(ES_DT_INT16) | ES_T(ES_DT_INT32) | ES_T(ES_DT_INT64))
#define ES_T_UINTS (ES_T(ES_DT_UINT8) | ES_T(ES_DT_UINT16) | ES_T(ES_DT_UINT32) | ES_T(ES_DT_UINT64))
#define ES_T_NUMERIC (ES_T_FLOATS | ES_T_SINTS | ES_T_UINTS)
#define ES_T_ALL (ES_T_NUMERIC | ES_T(ES_DT_BOOL))

typedef struct es_op_def {
	const char *domain;  /* "" for the default ONNX domain */
	const char *op_type;
	int since;           /* first opset version implemented */
	int until;           /* last opset version implemented; 0: open */
	int min_inputs, max_inputs;   /* max ES_VARIADIC for variadic */
	int min_outputs, max_outputs;
	uint32_t types;            /* allowed dtypes of input 0 (ES_T bits); 0: any */
	uint32_t same_type_inputs; /* bit i: input i has input 0's dtype */
	es_out_type out_type;
	es_dtype out_dtype;        /* for ES_OUT_FIXED */
	int (*init)(es_op_init_ctx *c, void **state);
	void (*fini)(void *state);
	int (*run)(es_kctx *k);
	/*
	 * Optional: what the kernel prepared at run time and wants back when
	 * the model is loaded from its compiled form (weights packed for a
	 * primitive, say), as extra node attributes whose names start with
	 * ES_SAVED_ATTR_PREFIX. The compiled-form writer calls it with the
	 * node's state, stores the attributes instead of any of the node's
	 * own with that prefix, and clears and frees them (es_attr_clear, then
	 * free(*out)). init finds them among the node's attributes and must
	 * treat them as untrusted hints: verify before use, ignore what does
	 * not fit. Returns 0 with *n = 0 when there is nothing to keep.
	 */
	int (*save_attrs)(void *state, const es_node *node, es_attr **out, int *n,
			  es_error *err);
} es_op_def;

/* Names of kernel-saved attributes start with this (see save_attrs). */
#define ES_SAVED_ATTR_PREFIX "es."

/* A family's table, exported by each ops/<family>.c. */
typedef struct es_op_table {
	const es_op_def *defs;
	size_t count;
} es_op_table;

/*
 * Finds the kernel for (domain, op_type) valid at `opset`. Returns NULL
 * when none; *known_op tells whether the op exists at some other opset.
 */
const es_op_def *es_op_find(const char *domain, const char *op_type,
			    int64_t opset, bool *known_op);

/* Iterates all registered defs (for --list-ops and docs). */
size_t es_op_count(void);
const es_op_def *es_op_at(size_t i);

#endif
