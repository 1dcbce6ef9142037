/*
 * The executor: runs a model's nodes in topological order over buffers from
 * a static memory plan (or, until there is one, a per-session pool).
 *
 * Every intermediate value holds a reference on a buffer block. A value's
 * reference is dropped after its last reader ran (or right after its node
 * when nobody reads it). Reshape-like kernels alias their input's block (a
 * second reference), elementwise kernels may write in place into a block
 * nobody else will read.
 *
 * Memory plans. A run's input shapes (dtype and dims of every graph input)
 * are its signature. The first run of a signature takes its blocks from the
 * pool (best fit from a free list; a block whose last reference goes
 * returns to it) and records every request in order: outputs, scratch,
 * in-place and alias decisions, with the node that made it, and for every
 * block the nodes between which it was live. At the end of that run the
 * recording becomes a plan: one arena in which every block has an offset,
 * chosen so that blocks live at the same time never overlap (largest
 * first, each into the lowest gap left by the blocks already placed whose
 * lifetimes meet its own). Later runs of the signature answer each request
 * with the next planned block (arena + offset) after checking it is the
 * request the recording saw; a run that asks for anything else (an output
 * size that depends on values, NonZero) takes the rest of its blocks from
 * the pool, and its plan is dropped and recorded again by the next run of
 * that signature, or given up for it after ES_EXEC_MAX_PLAN_MISSES. A
 * session keeps up to ES_EXEC_MAX_PLANS plans (least recently used goes).
 *
 * Threads: a session runs on the calling thread's OpenMP team, shared by
 * the engine's kernels and oneDNN. Waking the team costs more than the work
 * of a tiny node (a shape op, a small elementwise op, the matrix-vector
 * products of a small MLP), so every node gets a thread count of its own
 * (node_threads): one thread below a work estimate, the session's count
 * above it. The team size is changed only when it differs from the
 * previous node's.
 */
#define _GNU_SOURCE /* qsort_r */
#include <limits.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "base/status.h"
#include "engine/model_int.h"
#include "engine/exec/exec.h"
#include "engine/ops/op.h"

typedef struct block {
	void *data;
	size_t cap;
	int refs;
	bool planned;  /* part of a plan's arena: never on the free list */
	int buf;       /* while recording: the recorded buffer it answers */
	struct block *next; /* free list / all-blocks list */
	struct block *all_next;
} block;

typedef struct slot {
	es_tensor t;
	block *blk; /* NULL for inputs and constants */
} slot;

#define MAX_SCRATCH 16

struct es_exec {
	es_session *s;
	int node;
	block *scratch[MAX_SCRATCH];
	int n_scratch;
};

/* What a kernel asked the executor for, in run order. */
enum { EV_OUTPUT, EV_SCRATCH, EV_INPLACE, EV_ALIAS };

typedef struct plan_event {
	int node;
	int kind;   /* EV_* */
	int index;  /* output index; -1 for scratch */
	int src;    /* input index shared (in-place, alias); -1 otherwise */
	int buf;    /* buffer answering it (output, scratch); -1 otherwise */
	size_t bytes;
} plan_event;

/* One planned buffer: live from node `first` to node `last` (inclusive). */
typedef struct plan_buf {
	size_t offset, size, bytes;
	int first, last;
} plan_buf;

/* The arena and what it answers, for one signature. */
typedef struct plan_layout {
	plan_event *events;
	int n_events;
	plan_buf *bufs;
	int n_bufs;
	block *blocks; /* one per buffer, data inside the arena */
	void *arena;
	size_t arena_bytes, sum_bytes, pool_bytes;
} plan_layout;

typedef struct sig_dim {
	es_dtype dtype;
	int ndim;
	int64_t dims[ES_MAX_DIMS];
} sig_dim;

/* A signature the session has seen; layout NULL until (re)recorded. */
typedef struct mem_plan {
	sig_dim *sig;
	int misses;         /* runs that deviated from this signature's plans */
	uint64_t last_used;
	plan_layout *layout;
} mem_plan;

struct es_session {
	es_model *model;
	es_graph *g;
	int threads;
	bool profile;
	slot *slots;       /* one per graph value */
	int *remaining;    /* readers left in the current run */
	block *free_list;  /* sorted by capacity, ascending */
	block *all_blocks;
	es_node_profile *prof;
	/* per-node scratch for the kernel context */
	const es_tensor **in_ptrs;
	es_tensor **out_ptrs;
	es_tensor *omitted; /* stand-ins for omitted optional outputs */
	slot *omitted_slots;
	int max_in, max_out;
	bool have_outputs; /* graph outputs of the last run still held */
	unsigned char *work_kind; /* per node: how node_threads estimates work */
	unsigned char *work_w;    /* per node: its weight input's index */
	es_exec_node_hook hook;   /* called around every node when set */
	void *hook_arg;
	/* memory plans */
	bool planning;             /* plans enabled (sessions of a model) */
	int cur_node;              /* node running, n_nodes between runs */
	mem_plan *plans[ES_EXEC_MAX_PLANS];
	int n_plans;
	uint64_t clock;            /* LRU time */
	mem_plan *active;          /* answering this run's requests, or NULL */
	int next_event;            /* active: index of the next expected event */
	plan_layout *retired;      /* dropped mid-run: freed at the next run */
	mem_plan *recording;       /* signature being recorded this run */
	plan_event *rec_events;
	int rec_n_events, rec_cap_events;
	plan_buf *rec_bufs;
	int rec_n_bufs, rec_cap_bufs;
	bool rec_failed;           /* out of memory while recording */
	const plan_layout *last_layout; /* the plan the last run used */
	uint64_t plans_built, plan_misses;
};

/* ---- pool ---------------------------------------------------------------- */

static block *pool_get(es_session *s, size_t bytes)
{
	block **pp = &s->free_list;
	for (; *pp; pp = &(*pp)->next) {
		if ((*pp)->cap >= bytes) {
			block *b = *pp;
			*pp = b->next;
			b->next = NULL;
			b->refs = 1;
			return b;
		}
	}
	block *b = calloc(1, sizeof(block));
	if (!b)
		return NULL;
	b->data = es_aligned_alloc(bytes);
	if (!b->data) {
		free(b);
		return NULL;
	}
	b->cap = bytes;
	b->refs = 1;
	b->buf = -1;
	b->all_next = s->all_blocks;
	s->all_blocks = b;
	return b;
}

static void pool_put(es_session *s, block *b)
{
	if (!b || --b->refs > 0)
		return;
	if (b->buf >= 0) {
		/* recorded: its lifetime ends with the node running now */
		if (s->recording && b->buf < s->rec_n_bufs)
			s->rec_bufs[b->buf].last = s->cur_node;
		b->buf = -1;
	}
	if (b->planned)
		return;
	block **pp = &s->free_list;
	while (*pp && (*pp)->cap < b->cap)
		pp = &(*pp)->next;
	b->next = *pp;
	*pp = b;
}

static size_t pool_footprint(const es_session *s)
{
	size_t bytes = 0;
	for (const block *b = s->all_blocks; b; b = b->all_next)
		bytes += b->cap;
	return bytes;
}

/* Frees the pool's blocks; call only when none is in use. */
static void pool_trim(es_session *s)
{
	block *b = s->all_blocks;
	while (b) {
		block *next = b->all_next;
		es_aligned_free(b->data);
		free(b);
		b = next;
	}
	s->all_blocks = NULL;
	s->free_list = NULL;
}

static void slot_release(es_session *s, slot *sl)
{
	if (sl->blk)
		pool_put(s, sl->blk);
	sl->blk = NULL;
	memset(&sl->t, 0, sizeof(sl->t));
}

/* ---- memory plans ---------------------------------------------------------- */

static void layout_free(plan_layout *l)
{
	if (!l)
		return;
	es_aligned_free(l->arena);
	free(l->events);
	free(l->bufs);
	free(l->blocks);
	free(l);
}

static void plan_free(mem_plan *p)
{
	if (!p)
		return;
	layout_free(p->layout);
	free(p->sig);
	free(p);
}

static bool sig_matches(const es_session *s, const mem_plan *p,
			const es_tensor *inputs)
{
	for (int i = 0; i < s->g->n_inputs; i++) {
		const sig_dim *d = &p->sig[i];
		if (d->dtype != inputs[i].dtype || d->ndim != inputs[i].ndim ||
		    memcmp(d->dims, inputs[i].dims, (size_t)d->ndim * sizeof(int64_t)))
			return false;
	}
	return true;
}

static mem_plan *plan_find(es_session *s, const es_tensor *inputs)
{
	for (int i = 0; i < s->n_plans; i++)
		if (sig_matches(s, s->plans[i], inputs))
			return s->plans[i];
	return NULL;
}

/* A new signature entry (no layout yet); evicts the least recently used
 * entry when the session holds ES_EXEC_MAX_PLANS. NULL when out of memory. */
static mem_plan *plan_add(es_session *s, const es_tensor *inputs)
{
	mem_plan *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->sig = calloc((size_t)s->g->n_inputs + 1, sizeof(sig_dim));
	if (!p->sig) {
		free(p);
		return NULL;
	}
	for (int i = 0; i < s->g->n_inputs; i++) {
		p->sig[i].dtype = inputs[i].dtype;
		p->sig[i].ndim = inputs[i].ndim;
		memcpy(p->sig[i].dims, inputs[i].dims,
		       (size_t)inputs[i].ndim * sizeof(int64_t));
	}
	if (s->n_plans == ES_EXEC_MAX_PLANS) {
		int oldest = 0;
		for (int i = 1; i < s->n_plans; i++)
			if (s->plans[i]->last_used < s->plans[oldest]->last_used)
				oldest = i;
		/* between runs: no block of its arena is in use */
		if (s->last_layout == s->plans[oldest]->layout)
			s->last_layout = NULL;
		plan_free(s->plans[oldest]);
		s->plans[oldest] = s->plans[--s->n_plans];
	}
	s->plans[s->n_plans++] = p;
	return p;
}

/* The active plan does not describe this run: the rest of the run takes
 * pool blocks; the arena stays valid until the next run, which records
 * the signature again (or gives it up). */
static void plan_deviated(es_session *s)
{
	mem_plan *p = s->active;
	s->plan_misses++;
	p->misses++;
	layout_free(s->retired);
	s->retired = p->layout;
	p->layout = NULL;
	s->active = NULL;
}

static int rec_event(es_session *s, int kind, int index, int src, int buf,
		     size_t bytes)
{
	if (s->rec_n_events == s->rec_cap_events) {
		int cap = s->rec_cap_events ? 2 * s->rec_cap_events : 256;
		plan_event *e = realloc(s->rec_events, (size_t)cap * sizeof(*e));
		if (!e)
			return -1;
		s->rec_events = e;
		s->rec_cap_events = cap;
	}
	s->rec_events[s->rec_n_events++] = (plan_event){
		.node = s->cur_node, .kind = kind, .index = index, .src = src,
		.buf = buf, .bytes = bytes,
	};
	return 0;
}

static int rec_buf(es_session *s, size_t bytes)
{
	if (s->rec_n_bufs == s->rec_cap_bufs) {
		int cap = s->rec_cap_bufs ? 2 * s->rec_cap_bufs : 128;
		plan_buf *b = realloc(s->rec_bufs, (size_t)cap * sizeof(*b));
		if (!b)
			return -1;
		s->rec_bufs = b;
		s->rec_cap_bufs = cap;
	}
	s->rec_bufs[s->rec_n_bufs] = (plan_buf){
		.bytes = bytes, .first = s->cur_node, .last = INT_MAX,
	};
	return s->rec_n_bufs++;
}

/* In-place and alias decisions are part of the plan: they decide how long
 * a block lives. */
static void mem_event(es_session *s, int kind, int index, int src)
{
	if (s->active) {
		mem_plan *p = s->active;
		const plan_event *e = s->next_event < p->layout->n_events ?
			&p->layout->events[s->next_event] : NULL;
		if (e && e->node == s->cur_node && e->kind == kind &&
		    e->index == index && e->src == src) {
			s->next_event++;
			return;
		}
		plan_deviated(s);
	}
	if (s->recording && !s->rec_failed && rec_event(s, kind, index, src, -1, 0))
		s->rec_failed = true;
}

/* A block for a request of the running node (output `index`, or scratch
 * with index -1): the planned one, else from the pool. */
static block *mem_get(es_session *s, int kind, int index, size_t bytes)
{
	if (s->active) {
		mem_plan *p = s->active;
		const plan_event *e = s->next_event < p->layout->n_events ?
			&p->layout->events[s->next_event] : NULL;
		/* a planned block still referenced would mean the lifetimes
		 * differ from the recording's: never hand it out twice */
		if (e && e->node == s->cur_node && e->kind == kind &&
		    e->index == index && e->bytes == bytes &&
		    p->layout->blocks[e->buf].refs == 0) {
			block *b = &p->layout->blocks[e->buf];
			s->next_event++;
			b->refs = 1;
			return b;
		}
		plan_deviated(s);
	}
	block *b = pool_get(s, bytes);
	if (b && s->recording && !s->rec_failed) {
		int id = rec_buf(s, bytes);
		if (id < 0 || rec_event(s, kind, index, -1, id, bytes))
			s->rec_failed = true;
		else
			b->buf = id;
	}
	return b;
}

static int cmp_size_desc(const void *a, const void *b, void *bufs)
{
	const plan_buf *x = &((const plan_buf *)bufs)[*(const int *)a];
	const plan_buf *y = &((const plan_buf *)bufs)[*(const int *)b];
	if (x->size != y->size)
		return x->size < y->size ? 1 : -1;
	return x->first - y->first;
}

static int cmp_offset(const void *a, const void *b, void *bufs)
{
	const plan_buf *x = &((const plan_buf *)bufs)[*(const int *)a];
	const plan_buf *y = &((const plan_buf *)bufs)[*(const int *)b];
	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/*
 * Gives every buffer an offset: largest first, each at the lowest offset
 * where it overlaps no already placed buffer whose lifetime meets its own.
 * Returns the arena size, or 0 with *overflow set.
 */
static size_t place_buffers(plan_buf *bufs, int n, int *order, int *meet,
			    bool *overflow)
{
	size_t arena = 0;
	*overflow = false;
	for (int i = 0; i < n; i++)
		order[i] = i;
	qsort_r(order, (size_t)n, sizeof(int), cmp_size_desc, bufs);
	for (int i = 0; i < n; i++) {
		plan_buf *b = &bufs[order[i]];
		int n_meet = 0;
		for (int j = 0; j < i; j++) {
			const plan_buf *q = &bufs[order[j]];
			if (q->first <= b->last && b->first <= q->last)
				meet[n_meet++] = order[j];
		}
		qsort_r(meet, (size_t)n_meet, sizeof(int), cmp_offset, bufs);
		size_t at = 0;
		for (int j = 0; j < n_meet; j++) {
			const plan_buf *q = &bufs[meet[j]];
			if (q->offset >= at && q->offset - at >= b->size)
				break;
			if (q->offset + q->size > at)
				at = q->offset + q->size;
		}
		b->offset = at;
		if (es_add_size(at, b->size, &at)) {
			*overflow = true;
			return 0;
		}
		if (at > arena)
			arena = at;
	}
	return arena;
}

/* Turns this run's recording into p's layout. Failure only means no plan. */
static void plan_build(es_session *s, mem_plan *p)
{
	int n = s->rec_n_bufs;
	plan_layout *l = calloc(1, sizeof(*l));
	int *order = malloc(((size_t)n + 1) * sizeof(int));
	int *meet = malloc(((size_t)n + 1) * sizeof(int));
	if (!l || !order || !meet)
		goto out_free;
	l->n_bufs = n;
	l->n_events = s->rec_n_events;
	l->bufs = malloc(((size_t)n + 1) * sizeof(plan_buf));
	l->blocks = calloc((size_t)n + 1, sizeof(block));
	l->events = malloc(((size_t)l->n_events + 1) * sizeof(plan_event));
	if (!l->bufs || !l->blocks || !l->events)
		goto out_free;
	if (l->n_events) /* a graph with no node requests nothing */
		memcpy(l->events, s->rec_events, (size_t)l->n_events * sizeof(plan_event));
	for (int i = 0; i < n; i++) {
		plan_buf *b = &l->bufs[i];
		*b = s->rec_bufs[i];
		/* still held after the last node: the graph outputs */
		if (b->last == INT_MAX)
			b->last = s->g->n_nodes;
		b->size = b->bytes ? b->bytes : 1;
		if (es_add_size(b->size, ES_ALIGN - 1, &b->size))
			goto out_free;
		b->size &= ~(size_t)(ES_ALIGN - 1);
		if (es_add_size(l->sum_bytes, b->size, &l->sum_bytes))
			goto out_free;
	}
	bool overflow;
	l->arena_bytes = place_buffers(l->bufs, n, order, meet, &overflow);
	if (overflow)
		goto out_free;
	l->arena = es_aligned_alloc(l->arena_bytes);
	if (!l->arena)
		goto out_free;
	for (int i = 0; i < n; i++) {
		block *b = &l->blocks[i];
		b->data = (char *)l->arena + l->bufs[i].offset;
		b->cap = l->bufs[i].size;
		b->planned = true;
		b->buf = -1;
	}
	l->pool_bytes = pool_footprint(s);
	layout_free(p->layout);
	p->layout = l;
	s->plans_built++;
	free(order);
	free(meet);
	return;
out_free:
	layout_free(l);
	free(order);
	free(meet);
}

/* Chooses how this run gets its memory (called between runs). */
static void plan_begin_run(es_session *s, const es_tensor *inputs)
{
	layout_free(s->retired);
	s->retired = NULL;
	s->active = NULL;
	s->recording = NULL;
	s->last_layout = NULL;
	if (!s->planning) {
		for (int i = 0; i < s->n_plans; i++)
			plan_free(s->plans[i]);
		s->n_plans = 0;
		return;
	}
	mem_plan *p = plan_find(s, inputs);
	if (!p && !(p = plan_add(s, inputs)))
		return;
	p->last_used = ++s->clock;
	if (p->layout) {
		s->active = p;
		s->next_event = 0;
		/* the pool is empty between runs: give its memory back, unless
		 * a signature that has given up planning still needs it */
		bool pool_needed = false;
		for (int i = 0; i < s->n_plans; i++)
			if (s->plans[i]->misses >= ES_EXEC_MAX_PLAN_MISSES)
				pool_needed = true;
		if (!pool_needed)
			pool_trim(s);
	} else if (p->misses < ES_EXEC_MAX_PLAN_MISSES) {
		s->recording = p;
		s->rec_n_events = 0;
		s->rec_n_bufs = 0;
		s->rec_failed = false;
	}
}

/* After a successful run: checks the plan was followed to the end, or
 * builds the plan from the recording. */
static void plan_end_run(es_session *s)
{
	if (s->active && s->next_event != s->active->layout->n_events)
		plan_deviated(s);
	if (s->active)
		s->last_layout = s->active->layout;
	if (s->recording && !s->rec_failed)
		plan_build(s, s->recording);
	s->recording = NULL;
	s->active = NULL;
}

void es_exec_set_planning(es_session *s, bool on)
{
	/* the plans go at the next run, when their arenas are no longer in use */
	s->planning = on;
}

void es_session_memory_info(const es_session *s, es_exec_memory_info *out)
{
	memset(out, 0, sizeof(*out));
	out->plans = s->n_plans;
	out->plans_built = s->plans_built;
	out->plan_misses = s->plan_misses;
	out->pool_bytes = pool_footprint(s);
	const plan_layout *l = s->last_layout;
	if (l) {
		out->last_run_planned = true;
		out->arena_bytes = l->arena_bytes;
		out->buffer_bytes = l->sum_bytes;
		out->recorded_pool_bytes = l->pool_bytes;
		out->buffers = (size_t)l->n_bufs;
	}
}

size_t es_session_plan_buffers(const es_session *s, es_exec_plan_buffer *out,
			       size_t cap)
{
	const plan_layout *l = s->last_layout;
	if (!l)
		return 0;
	for (int i = 0; i < l->n_bufs && (size_t)i < cap; i++)
		out[i] = (es_exec_plan_buffer){
			.offset = l->bufs[i].offset, .bytes = l->bufs[i].bytes,
			.first_node = l->bufs[i].first, .last_node = l->bufs[i].last,
			.data = l->blocks[i].data,
		};
	return (size_t)l->n_bufs;
}

/* ---- kernel context services --------------------------------------------- */

int es_kctx_fail(es_kctx *k, int code, const char *fmt, ...)
{
	char msg[ES_ERROR_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return es_error_set(k->err, code, "node '%s' (%s): %s", k->node->name,
			    k->node->op_type, msg);
}

static slot *out_slot(es_kctx *k, int i)
{
	es_session *s = k->exec->s;
	int v = k->node->outputs[i];
	return v >= 0 ? &s->slots[v] : &s->omitted_slots[i];
}

static int check_out_index(es_kctx *k, int i)
{
	if (i < 0 || i >= k->n_outputs)
		return es_error_set(k->err, ES_EINTERNAL,
			"node '%s' (%s): kernel wrote output %d of %d",
			k->node->name, k->node->op_type, i, k->n_outputs);
	return 0;
}

static int set_shape(es_kctx *k, es_tensor *t, es_dtype dt, int ndim,
		     const int64_t *dims, size_t *bytes)
{
	size_t esz = es_dtype_size(dt);
	int64_t numel;
	if (!esz)
		return es_kctx_fail(k, ES_EUNSUPPORTED, "output type %s is not supported",
				    es_dtype_name(dt));
	if (ndim < 0 || ndim > ES_MAX_DIMS)
		return es_kctx_fail(k, ES_EUNSUPPORTED,
				    "output rank %d is outside 0..%d", ndim, ES_MAX_DIMS);
	if (es_shape_numel(dims, ndim, esz, &numel))
		return es_kctx_fail(k, ES_ERANGE,
				    "output shape has a negative dimension or too many elements");
	t->dtype = dt;
	t->ndim = ndim;
	for (int d = 0; d < ndim; d++)
		t->dims[d] = dims[d];
	t->nbytes = (size_t)numel * esz;
	*bytes = t->nbytes;
	return 0;
}

int es_kctx_output(es_kctx *k, int i, es_dtype dt, int ndim,
		   const int64_t *dims)
{
	int rc = check_out_index(k, i);
	if (rc)
		return rc;
	slot *sl = out_slot(k, i);
	slot_release(k->exec->s, sl);
	size_t bytes;
	if ((rc = set_shape(k, &sl->t, dt, ndim, dims, &bytes)))
		return rc;
	sl->blk = mem_get(k->exec->s, EV_OUTPUT, i, bytes);
	if (!sl->blk)
		return es_kctx_fail(k, ES_ENOMEM, "cannot allocate %zu bytes for output %d",
				    bytes, i);
	sl->t.data = sl->blk->data;
	return 0;
}

int es_kctx_output_alias(es_kctx *k, int i, int in, int ndim,
			 const int64_t *dims)
{
	int rc = check_out_index(k, i);
	if (rc)
		return rc;
	const es_tensor *src = es_kin(k, in);
	if (!src)
		return es_kctx_fail(k, ES_EINTERNAL, "alias of missing input %d", in);
	es_session *s = k->exec->s;
	slot *sl = out_slot(k, i);
	slot_release(s, sl);
	size_t bytes;
	if ((rc = set_shape(k, &sl->t, src->dtype, ndim, dims, &bytes)))
		return rc;
	if (bytes != src->nbytes)
		return es_kctx_fail(k, ES_ESHAPE,
			"cannot view %zu bytes of input %d as %zu bytes", src->nbytes, in, bytes);
	int v = k->node->inputs[in];
	block *b = v >= 0 ? s->slots[v].blk : NULL;
	if (b)
		b->refs++;
	mem_event(s, EV_ALIAS, i, in);
	sl->blk = b;
	sl->t.data = src->data;
	return 0;
}

int es_kctx_output_inplace(es_kctx *k, int i, int in, es_dtype dt, int ndim,
			   const int64_t *dims, bool *inplace)
{
	es_session *s = k->exec->s;
	*inplace = false;
	int v = (in >= 0 && in < k->n_inputs) ? k->node->inputs[in] : -1;
	if (v >= 0 && k->node->outputs[i] >= 0) {
		slot *src = &s->slots[v];
		const es_value *val = &s->g->values[v];
		if (src->blk && src->blk->refs == 1 && s->remaining[v] == 1 &&
		    !val->is_output && es_dtype_size(dt) == es_dtype_size(src->t.dtype)) {
			slot *sl = out_slot(k, i);
			size_t bytes;
			int rc = check_out_index(k, i);
			if (rc)
				return rc;
			slot_release(s, sl);
			if ((rc = set_shape(k, &sl->t, dt, ndim, dims, &bytes)))
				return rc;
			if (bytes == src->t.nbytes) {
				mem_event(s, EV_INPLACE, i, in);
				src->blk->refs++;
				sl->blk = src->blk;
				sl->t.data = src->blk->data;
				*inplace = true;
				return 0;
			}
		}
	}
	return es_kctx_output(k, i, dt, ndim, dims);
}

void *es_kctx_scratch(es_kctx *k, size_t bytes)
{
	es_exec *x = k->exec;
	if (x->n_scratch >= MAX_SCRATCH)
		return NULL;
	block *b = mem_get(x->s, EV_SCRATCH, -1, bytes);
	if (!b)
		return NULL;
	x->scratch[x->n_scratch++] = b;
	return b->data;
}

/* ---- threads per node ----------------------------------------------------- */

/*
 * How a node's work is estimated from its inputs at run time (the output
 * shapes are not known before it runs).
 */
enum {
	WORK_ELEMENTS, /* elementwise, data movement, reductions: input elements */
	WORK_CONV,     /* multiply-adds: weight elements x input spatial size */
	WORK_CONV_NHWC, /* the same with the input channels-last ([N, spatial..., C]) */
	WORK_MATMUL,   /* multiply-adds: A's elements x B's last dimension */
	WORK_GEMM,     /* multiply-adds: A's elements x N (transB picks N) */
	WORK_GEMM_TB,
};

/*
 * Below these a node runs on one thread. Waking the team and meeting it at
 * the closing barrier costs a few microseconds with the other cores idle,
 * about what one core needs for ~32 k elements of elementwise work or ~1 M
 * multiply-adds of a memory-bound matrix-vector product; with the cores
 * busy it costs far more (docs/engine.md, "Threading").
 */
#define PAR_MIN_ELEMENTS 32768
#define PAR_MIN_MACS (1 << 20)

/* Which input holds the weights (the second operand): the quantized
 * operators list the first operand's scale and zero point before it. */
static int weight_input(const es_node *n)
{
	const char *op = n->op_type;
	return !strncmp(op, "QLinear", 7) || !strcmp(op, "QConv") || !strcmp(op, "QGemm") ?
		3 : 1;
}

static unsigned char work_kind_of(const es_node *n)
{
	const char *op = n->op_type;
	const int w = weight_input(n);
	if (strstr(op, "Conv")) {
		int64_t cl = 0;
		es_node_attr_int(n, "channels_last", 0, &cl, NULL);
		return n->n_inputs <= w ? WORK_ELEMENTS : cl ? WORK_CONV_NHWC : WORK_CONV;
	}
	if (strstr(op, "MatMul"))
		return n->n_inputs > w ? WORK_MATMUL : WORK_ELEMENTS;
	if (strstr(op, "Gemm")) {
		int64_t tb = 0;
		es_node_attr_int(n, "transB", 0, &tb, NULL);
		if (!tb)
			es_node_attr_int(n, "trans_b", 0, &tb, NULL);
		return n->n_inputs > w ? (tb ? WORK_GEMM_TB : WORK_GEMM) : WORK_ELEMENTS;
	}
	return WORK_ELEMENTS;
}

static int64_t numel_of(const es_tensor *t)
{
	int64_t n = 1;
	for (int d = 0; d < t->ndim; d++)
		n *= t->dims[d];
	return n;
}

/* a * b >= PAR_MIN_MACS, an overflowing product counting as large */
static bool macs_at_least_min(int64_t a, int64_t b)
{
	int64_t p;
	return __builtin_mul_overflow(a, b, &p) || p >= PAR_MIN_MACS;
}

/* Threads for node n this run: 1 for small work, else the session's. */
static int node_threads(const es_session *s, int n, const es_tensor *const *in,
			int n_in)
{
	if (s->threads <= 1)
		return 1;
	const int w = s->work_w[n];
	const es_tensor *a = n_in > 0 ? in[0] : NULL, *b = n_in > w ? in[w] : NULL;
	int64_t work = 0;
	switch (s->work_kind[n]) {
	case WORK_CONV:
	case WORK_CONV_NHWC:
		if (a && b && a->ndim > 2) {
			bool nhwc = s->work_kind[n] == WORK_CONV_NHWC;
			int64_t spatial = 1;
			for (int d = nhwc ? 1 : 2; d < a->ndim - (nhwc ? 1 : 0); d++)
				spatial *= a->dims[d];
			return macs_at_least_min(numel_of(b), spatial) ? s->threads : 1;
		}
		break;
	case WORK_MATMUL:
		if (a && b && b->ndim >= 1)
			return macs_at_least_min(numel_of(a), b->dims[b->ndim - 1]) ?
				s->threads : 1;
		break;
	case WORK_GEMM:
	case WORK_GEMM_TB:
		if (a && b && b->ndim == 2) {
			int64_t cols = s->work_kind[n] == WORK_GEMM_TB ? b->dims[0] : b->dims[1];
			return macs_at_least_min(numel_of(a), cols) ? s->threads : 1;
		}
		break;
	default:
		break;
	}
	/* elementwise and everything else: the largest input */
	for (int i = 0; i < n_in; i++) {
		if (!in[i])
			continue;
		int64_t e = numel_of(in[i]);
		if (e > work)
			work = e;
	}
	return work >= PAR_MIN_ELEMENTS ? s->threads : 1;
}

void es_exec_set_node_hook(es_session *s, es_exec_node_hook hook, void *arg)
{
	s->hook = hook;
	s->hook_arg = arg;
}

/* ---- sessions ------------------------------------------------------------ */

int es_session_create(es_model *m, const es_session_options *opts,
		      es_session **out, es_error *err)
{
	es_session *s = calloc(1, sizeof(*s));
	if (!s)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	es_graph *g = m->graph;
	s->model = m;
	s->g = g;
	s->threads = opts && opts->threads > 0 ? opts->threads : omp_get_num_procs();
	s->profile = opts && opts->profile;
	/* ES_NO_MEMPLAN=1: the pool only, for comparing (docs/engine.md) */
	const char *no_plan = getenv("ES_NO_MEMPLAN");
	s->planning = !(no_plan && !strcmp(no_plan, "1"));
	s->cur_node = g->n_nodes;
	for (int n = 0; n < g->n_nodes; n++) {
		if (g->nodes[n].n_inputs > s->max_in)
			s->max_in = g->nodes[n].n_inputs;
		if (g->nodes[n].n_outputs > s->max_out)
			s->max_out = g->nodes[n].n_outputs;
	}
	s->slots = calloc((size_t)g->n_values + 1, sizeof(slot));
	s->remaining = calloc((size_t)g->n_values + 1, sizeof(int));
	s->prof = calloc((size_t)g->n_nodes + 1, sizeof(es_node_profile));
	s->in_ptrs = calloc((size_t)s->max_in + 1, sizeof(*s->in_ptrs));
	s->out_ptrs = calloc((size_t)s->max_out + 1, sizeof(*s->out_ptrs));
	s->omitted = calloc((size_t)s->max_out + 1, sizeof(es_tensor));
	s->omitted_slots = calloc((size_t)s->max_out + 1, sizeof(slot));
	s->work_kind = calloc((size_t)g->n_nodes + 1, 1);
	s->work_w = calloc((size_t)g->n_nodes + 1, 1);
	if (!s->slots || !s->remaining || !s->prof || !s->in_ptrs ||
	    !s->out_ptrs || !s->omitted || !s->omitted_slots || !s->work_kind ||
	    !s->work_w) {
		es_session_destroy(s);
		return es_error_set(err, ES_ENOMEM, "out of memory");
	}
	for (int n = 0; n < g->n_nodes; n++) {
		s->prof[n].name = g->nodes[n].name;
		s->prof[n].op_type = g->nodes[n].op_type;
		s->work_kind[n] = work_kind_of(&g->nodes[n]);
		s->work_w[n] = (unsigned char)weight_input(&g->nodes[n]);
	}
	es_model_retain(m);
	*out = s;
	return 0;
}

static void release_all(es_session *s)
{
	for (int v = 0; v < s->g->n_values; v++)
		slot_release(s, &s->slots[v]);
	for (int o = 0; o < s->max_out; o++)
		slot_release(s, &s->omitted_slots[o]);
	s->have_outputs = false;
}

void es_session_destroy(es_session *s)
{
	if (!s)
		return;
	if (s->slots && s->g)
		release_all(s);
	for (int i = 0; i < s->n_plans; i++)
		plan_free(s->plans[i]);
	layout_free(s->retired);
	free(s->rec_events);
	free(s->rec_bufs);
	pool_trim(s);
	free(s->slots);
	free(s->remaining);
	free(s->prof);
	free(s->in_ptrs);
	free(s->out_ptrs);
	free(s->omitted);
	free(s->omitted_slots);
	free(s->work_kind);
	free(s->work_w);
	if (s->model)
		es_model_release(s->model);
	free(s);
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int check_input(const es_session *s, size_t i, const es_tensor *t,
		       es_error *err)
{
	const es_value_info *info = &s->model->inputs[i];
	if (t->dtype != info->dtype)
		return es_error_set(err, ES_ETYPE,
			"input '%s': expected type %s, got %s", info->name,
			es_dtype_name(info->dtype), es_dtype_name(t->dtype));
	if (t->ndim < 0 || t->ndim > ES_MAX_DIMS)
		return es_error_set(err, ES_ESHAPE, "input '%s': rank %d is not supported",
				    info->name, t->ndim);
	if (info->ndim >= 0 && t->ndim != info->ndim)
		return es_error_set(err, ES_ESHAPE,
			"input '%s': expected rank %d, got rank %d", info->name,
			info->ndim, t->ndim);
	for (int d = 0; d < t->ndim && info->ndim >= 0; d++)
		if (info->dims[d] >= 0 && t->dims[d] != info->dims[d])
			return es_error_set(err, ES_ESHAPE,
				"input '%s': dimension %d must be %lld, got %lld",
				info->name, d, (long long)info->dims[d],
				(long long)t->dims[d]);
	int64_t numel;
	if (es_shape_numel(t->dims, t->ndim, es_dtype_size(t->dtype), &numel))
		return es_error_set(err, ES_ERANGE,
			"input '%s': negative dimension or element count overflows",
			info->name);
	if ((size_t)numel * es_dtype_size(t->dtype) != t->nbytes)
		return es_error_set(err, ES_ESHAPE,
			"input '%s': shape needs %zu bytes, %zu given", info->name,
			(size_t)numel * es_dtype_size(t->dtype), t->nbytes);
	if (t->nbytes && !t->data)
		return es_error_set(err, ES_EINVAL, "input '%s': no data", info->name);
	return 0;
}

/* Inputs that name the same symbolic dimension ("batch") must agree on its
 * value within one run. */
static int check_symbolic_dims(const es_session *s, const es_tensor *inputs,
			       size_t n_inputs, es_error *err)
{
	for (size_t i = 0; i < n_inputs; i++) {
		const es_value_info *a = &s->model->inputs[i];
		for (int d = 0; d < a->ndim && d < inputs[i].ndim; d++) {
			const char *p = a->dim_params[d];
			if (!p)
				continue;
			for (size_t j = i; j < n_inputs; j++) {
				const es_value_info *b = &s->model->inputs[j];
				for (int e = (j == i ? d + 1 : 0);
				     e < b->ndim && e < inputs[j].ndim; e++) {
					if (!b->dim_params[e] || strcmp(p, b->dim_params[e]))
						continue;
					if (inputs[i].dims[d] != inputs[j].dims[e])
						return es_error_set(err, ES_ESHAPE,
							"inputs '%s' and '%s' disagree on dimension '%s': %lld vs %lld",
							a->name, b->name, p,
							(long long)inputs[i].dims[d],
							(long long)inputs[j].dims[e]);
				}
			}
		}
	}
	return 0;
}

int es_session_run(es_session *s, const es_tensor *inputs, size_t n_inputs,
		   es_tensor *outputs, es_error *err)
{
	es_graph *g = s->g;
	es_error local;
	int rc = 0;
	if (!err)
		err = &local;
	es_error_clear(err);
	if (n_inputs != (size_t)g->n_inputs)
		return es_error_set(err, ES_EINVAL, "model takes %d inputs, %zu given",
				    g->n_inputs, n_inputs);
	for (size_t i = 0; i < n_inputs; i++)
		if ((rc = check_input(s, i, &inputs[i], err)))
			return rc;
	if ((rc = check_symbolic_dims(s, inputs, n_inputs, err)))
		return rc;

	/* the previous run's outputs are released now */
	s->cur_node = g->n_nodes;
	release_all(s);
	plan_begin_run(s, inputs);
	int team = omp_get_max_threads(); /* the calling thread's team size */

	for (int v = 0; v < g->n_values; v++) {
		s->remaining[v] = g->values[v].n_consumers;
		if (g->values[v].constant)
			s->slots[v].t = *g->values[v].constant;
	}
	for (size_t i = 0; i < n_inputs; i++)
		s->slots[g->inputs[i]].t = inputs[i];

	es_exec x = { .s = s };
	for (int n = 0; n < g->n_nodes; n++) {
		es_node *node = &g->nodes[n];
		for (int i = 0; i < node->n_inputs; i++) {
			int v = node->inputs[i];
			s->in_ptrs[i] = v >= 0 ? &s->slots[v].t : NULL;
		}
		for (int o = 0; o < node->n_outputs; o++) {
			int v = node->outputs[o];
			s->out_ptrs[o] = v >= 0 ? &s->slots[v].t : &s->omitted_slots[o].t;
		}
		x.node = n;
		x.n_scratch = 0;
		s->cur_node = n;
		int threads = node_threads(s, n, s->in_ptrs, node->n_inputs);
		if (threads != team) {
			omp_set_num_threads(threads);
			team = threads;
		}
		es_kctx k = {
			.node = node, .state = node->state,
			.n_inputs = node->n_inputs, .inputs = s->in_ptrs,
			.n_outputs = node->n_outputs, .outputs = s->out_ptrs,
			.threads = threads, .err = err, .exec = &x,
		};
		if (s->hook)
			s->hook(s->hook_arg, n, false);
		uint64_t t0 = s->profile ? now_ns() : 0;
		rc = node->op->run(&k);
		if (s->profile) {
			s->prof[n].total_ns += now_ns() - t0;
			s->prof[n].calls++;
		}
		if (s->hook)
			s->hook(s->hook_arg, n, true);
		for (int i = 0; i < x.n_scratch; i++)
			pool_put(s, x.scratch[i]);
		if (rc) {
			if (!err->msg[0])
				es_error_set(err, rc, "node '%s' (%s) failed: %s",
					     node->name, node->op_type, es_strerror(rc));
			goto fail;
		}
		for (int o = 0; o < node->n_outputs; o++) {
			int v = node->outputs[o];
			if (v < 0) {
				slot_release(s, &s->omitted_slots[o]);
				continue;
			}
			if (!s->slots[v].t.data && s->slots[v].t.nbytes == 0 &&
			    s->slots[v].t.dtype == ES_DT_UNDEFINED) {
				rc = es_error_set(err, ES_EINTERNAL,
					"node '%s' (%s): kernel did not produce output %d",
					node->name, node->op_type, o);
				goto fail;
			}
			if (g->values[v].n_consumers == 0 && !g->values[v].is_output)
				slot_release(s, &s->slots[v]);
		}
		/* drop inputs whose last reader this was */
		for (int i = 0; i < node->n_inputs; i++) {
			int v = node->inputs[i];
			if (v < 0)
				continue;
			if (--s->remaining[v] == 0 && !g->values[v].is_output)
				slot_release(s, &s->slots[v]);
		}
	}
	s->cur_node = g->n_nodes;
	plan_end_run(s);
	for (int o = 0; o < g->n_outputs; o++)
		outputs[o] = s->slots[g->outputs[o]].t;
	s->have_outputs = true;
	return 0;
fail:
	/* a failed run proves nothing about the plan: keep it, record nothing */
	s->cur_node = g->n_nodes;
	s->recording = NULL;
	s->active = NULL;
	release_all(s);
	return rc;
}

size_t es_session_profile(const es_session *s, const es_node_profile **out)
{
	*out = s->prof;
	return (size_t)s->g->n_nodes;
}

void es_session_profile_reset(es_session *s)
{
	for (int n = 0; n < s->g->n_nodes; n++) {
		s->prof[n].calls = 0;
		s->prof[n].total_ns = 0;
	}
}

/* ---- load-time evaluation of constant nodes ------------------------------- */

/* A session without a model, used at load to run single nodes whose inputs
 * are all constants. */
es_session *es_exec_folder_new(es_graph *g)
{
	es_session *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->g = g;
	s->threads = 1;
	for (int n = 0; n < g->n_nodes; n++) {
		if (g->nodes[n].n_inputs > s->max_in)
			s->max_in = g->nodes[n].n_inputs;
		if (g->nodes[n].n_outputs > s->max_out)
			s->max_out = g->nodes[n].n_outputs;
	}
	s->slots = calloc((size_t)g->n_values + 1, sizeof(slot));
	s->remaining = calloc((size_t)g->n_values + 1, sizeof(int));
	s->in_ptrs = calloc((size_t)s->max_in + 1, sizeof(*s->in_ptrs));
	s->out_ptrs = calloc((size_t)s->max_out + 1, sizeof(*s->out_ptrs));
	s->omitted = calloc((size_t)s->max_out + 1, sizeof(es_tensor));
	s->omitted_slots = calloc((size_t)s->max_out + 1, sizeof(slot));
	if (!s->slots || !s->remaining || !s->in_ptrs || !s->out_ptrs ||
	    !s->omitted || !s->omitted_slots) {
		es_session_destroy(s);
		return NULL;
	}
	return s;
}

void es_exec_folder_free(es_session *s)
{
	es_session_destroy(s);
}

/*
 * Runs node n of the folder's graph (all its inputs must be constants) and
 * turns each of its outputs into a constant owned by the graph. The node is
 * left in place; the caller removes it.
 */
int es_exec_fold_node(es_session *s, int n, es_error *err)
{
	es_graph *g = s->g;
	es_node *node = &g->nodes[n];
	int rc;
	for (int i = 0; i < node->n_inputs; i++) {
		int v = node->inputs[i];
		if (v >= 0) {
			s->slots[v].t = *g->values[v].constant;
			s->slots[v].blk = NULL;
		}
		s->in_ptrs[i] = v >= 0 ? &s->slots[v].t : NULL;
	}
	for (int o = 0; o < node->n_outputs; o++) {
		int v = node->outputs[o];
		s->out_ptrs[o] = v >= 0 ? &s->slots[v].t : &s->omitted_slots[o].t;
		/* no in-place writes into constants */
		if (v >= 0)
			s->remaining[v] = 0;
	}
	for (int i = 0; i < node->n_inputs; i++)
		if (node->inputs[i] >= 0)
			s->remaining[node->inputs[i]] = 0;
	es_exec x = { .s = s, .node = n };
	es_kctx k = {
		.node = node, .state = node->state,
		.n_inputs = node->n_inputs, .inputs = s->in_ptrs,
		.n_outputs = node->n_outputs, .outputs = s->out_ptrs,
		.threads = 1, .err = err, .exec = &x,
	};
	rc = node->op->run(&k);
	for (int i = 0; i < x.n_scratch; i++)
		pool_put(s, x.scratch[i]);
	for (int o = 0; o < node->n_outputs && !rc; o++) {
		int v = node->outputs[o];
		if (v < 0)
			continue;
		const es_tensor *t = &s->slots[v].t;
		es_tensor *c = calloc(1, sizeof(es_tensor));
		if (!c || es_tensor_alloc(c, t->dtype, t->ndim, t->dims, err)) {
			free(c);
			rc = es_error_set(err, ES_ENOMEM, "out of memory folding node '%s'",
					  node->name);
			break;
		}
		if (t->nbytes)
			memcpy(c->data, t->data, t->nbytes);
		es_value *val = &g->values[v];
		val->constant = c;
		val->dtype = c->dtype;
		val->ndim = c->ndim;
		for (int d = 0; d < c->ndim; d++)
			val->dims[d] = c->dims[d];
	}
	for (int o = 0; o < node->n_outputs; o++) {
		int v = node->outputs[o];
		slot_release(s, v >= 0 ? &s->slots[v] : &s->omitted_slots[o]);
	}
	for (int i = 0; i < node->n_inputs; i++)
		if (node->inputs[i] >= 0)
			memset(&s->slots[node->inputs[i]], 0, sizeof(slot));
	return rc;
}
