/*
 * Operator family: reduce.
 *
 * ReduceSum, ReduceMean, ReduceMax, ReduceMin, ReduceProd, ReduceL1,
 * ReduceL2, ReduceLogSum, ReduceLogSumExp and ReduceSumSquare share one
 * reduction engine. ArgMax, ArgMin and TopK work along a single axis.
 *
 * The engine coalesces the input shape into alternating groups of reduced
 * and kept dimensions and walks the input once, in memory order, one
 * innermost row at a time. An innermost reduced group is a contiguous row
 * folded into one accumulator; an innermost kept group is a row added
 * element-wise into a row of accumulators (reducing over outer axes).
 *
 * Arithmetic happens in a small set of domains: float for float, float16
 * and bfloat16; double for double; int64 for the signed and narrow
 * unsigned integers (sums wrap like the input type would); uint64 for
 * uint64. Narrow types are widened chunk by chunk into a per-thread
 * buffer, so run() needs only bounded scratch.
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/fp16.h"
#include "engine/ops/families.h"
#include "engine/ops/op_util.h"

/* Elements converted per chunk and the work below which we stay serial. */
#define CHUNK 2048
#define PAR_MIN_WORK (1 << 16)

/* ---- dtype domains ------------------------------------------------------- */

enum dom { DOM_F32, DOM_F64, DOM_I64, DOM_U64 };

static bool dom_native(enum dom d, es_dtype dt)
{
	switch (d) {
	case DOM_F32: return dt == ES_DT_FLOAT;
	case DOM_F64: return dt == ES_DT_DOUBLE;
	case DOM_I64: return dt == ES_DT_INT64;
	case DOM_U64: return dt == ES_DT_UINT64;
	}
	return false;
}

/* The natural domain of a dtype; false for dtypes we cannot compute on. */
static bool dom_of(es_dtype dt, enum dom *d)
{
	switch (dt) {
	case ES_DT_FLOAT: case ES_DT_FLOAT16: case ES_DT_BFLOAT16:
		*d = DOM_F32;
		return true;
	case ES_DT_DOUBLE:
		*d = DOM_F64;
		return true;
	case ES_DT_INT8: case ES_DT_INT16: case ES_DT_INT32: case ES_DT_INT64:
	case ES_DT_UINT8: case ES_DT_UINT16: case ES_DT_UINT32: case ES_DT_BOOL:
		*d = DOM_I64;
		return true;
	case ES_DT_UINT64:
		*d = DOM_U64;
		return true;
	default:
		return false;
	}
}

/* dst[i] = src[i * stride] converted to the domain type DT. */
#define LOAD_LOOP(CT, EXPR) do { \
		const CT *s_ = src; \
		for (int64_t i_ = 0; i_ < n; i_++) { \
			CT v_ = s_[i_ * stride]; \
			dst[i_] = (EXPR); \
		} \
	} while (0)

#define DEF_LOAD(NAME, DT) \
static void NAME(DT *dst, const void *src, es_dtype dt, int64_t n, \
		 int64_t stride) \
{ \
	switch (dt) { \
	case ES_DT_FLOAT: LOAD_LOOP(float, (DT)v_); break; \
	case ES_DT_DOUBLE: LOAD_LOOP(double, (DT)v_); break; \
	case ES_DT_FLOAT16: LOAD_LOOP(uint16_t, (DT)es_half_to_float(v_)); break; \
	case ES_DT_BFLOAT16: LOAD_LOOP(uint16_t, (DT)es_bf16_to_float(v_)); break; \
	case ES_DT_INT8: LOAD_LOOP(int8_t, (DT)v_); break; \
	case ES_DT_INT16: LOAD_LOOP(int16_t, (DT)v_); break; \
	case ES_DT_INT32: LOAD_LOOP(int32_t, (DT)v_); break; \
	case ES_DT_INT64: LOAD_LOOP(int64_t, (DT)v_); break; \
	case ES_DT_UINT8: LOAD_LOOP(uint8_t, (DT)v_); break; \
	case ES_DT_UINT16: LOAD_LOOP(uint16_t, (DT)v_); break; \
	case ES_DT_UINT32: LOAD_LOOP(uint32_t, (DT)v_); break; \
	case ES_DT_UINT64: LOAD_LOOP(uint64_t, (DT)v_); break; \
	case ES_DT_BOOL: LOAD_LOOP(uint8_t, (DT)(v_ != 0)); break; \
	default: break; \
	} \
}

DEF_LOAD(load_f32, float)
DEF_LOAD(load_f64, double)
DEF_LOAD(load_i64, int64_t)
DEF_LOAD(load_u64, uint64_t)

/* Loads n elements (stride apart) of src into dst, typed by domain d. */
static void load_dom(enum dom d, void *dst, const void *src, es_dtype dt,
		     int64_t n, int64_t stride)
{
	switch (d) {
	case DOM_F32: load_f32(dst, src, dt, n, stride); break;
	case DOM_F64: load_f64(dst, src, dt, n, stride); break;
	case DOM_I64: load_i64(dst, src, dt, n, stride); break;
	case DOM_U64: load_u64(dst, src, dt, n, stride); break;
	}
}

static int normalize_axis(es_kctx *k, int64_t axis, int rank, const char *what,
			  int *out)
{
	if (!es_op_norm_axis(axis, rank, out))
		return es_kctx_fail(k, ES_ERANGE,
				    "%s %lld is out of range for an input of rank %d (expected %d to %d)",
				    what, (long long)axis, rank, -rank, rank - 1);
	return 0;
}

/* Reads a 1-D (or scalar) int64 tensor with at most `max` entries. */
static int read_int64_list(es_kctx *k, const es_tensor *t, const char *what,
			   int64_t *vals, int max, int *count)
{
	if (t->dtype != ES_DT_INT64)
		return es_kctx_fail(k, ES_ETYPE, "input '%s' has type %s, expected int64",
				    what, es_dtype_name(t->dtype));
	if (t->ndim > 1)
		return es_kctx_fail(k, ES_ESHAPE, "input '%s' has rank %d, expected a 1-D tensor",
				    what, t->ndim);
	int64_t n = es_tensor_numel(t);
	if (n > max)
		return es_kctx_fail(k, ES_ESHAPE,
				    "input '%s' has %lld entries, at most %d are allowed",
				    what, (long long)n, max);
	if (n > 0 && !t->data)
		return es_kctx_fail(k, ES_EINVAL, "input '%s' has no data", what);
	for (int64_t i = 0; i < n; i++)
		vals[i] = ((const int64_t *)t->data)[i];
	*count = (int)n;
	return 0;
}

/* ---- the reduction engine ------------------------------------------------ */

enum red_kind {
	RK_SUM, RK_MEAN, RK_MAX, RK_MIN, RK_PROD, RK_L1, RK_L2, RK_LOGSUM,
	RK_LOGSUMEXP, RK_SUMSQUARE,
};

enum acc_op { ACC_SUM, ACC_SUMSQ, ACC_ABS, ACC_PROD, ACC_MAX, ACC_MIN, ACC_SUMEXP };

static const struct {
	const char *op_type;
	enum red_kind kind;
} red_names[] = {
	{ "ReduceSum", RK_SUM },         { "ReduceMean", RK_MEAN },
	{ "ReduceMax", RK_MAX },         { "ReduceMin", RK_MIN },
	{ "ReduceProd", RK_PROD },       { "ReduceL1", RK_L1 },
	{ "ReduceL2", RK_L2 },           { "ReduceLogSum", RK_LOGSUM },
	{ "ReduceLogSumExp", RK_LOGSUMEXP }, { "ReduceSumSquare", RK_SUMSQUARE },
};

/* Binary combine steps; integer sums wrap (computed unsigned). */
#define F_ADD(a, b) ((a) + (b))
#define F_MUL(a, b) ((a) * (b))
#define I_ADD(a, b) ((int64_t)((uint64_t)(a) + (uint64_t)(b)))
#define I_MUL(a, b) ((int64_t)((uint64_t)(a) * (uint64_t)(b)))
#define U_ADD(a, b) ((a) + (b))
#define U_MUL(a, b) ((a) * (b))
/* max/min that propagate NaN: once NaN, only NaN replaces it */
#define F_MAX(a, b) (((b) > (a) || (b) != (b)) ? (b) : (a))
#define F_MIN(a, b) (((b) < (a) || (b) != (b)) ? (b) : (a))
#define I_MAX(a, b) ((b) > (a) ? (b) : (a))
#define I_MIN(a, b) ((b) < (a) ? (b) : (a))
#define I_ABS(v) ((v) < 0 ? (int64_t)(0 - (uint64_t)(v)) : (v))
#define U_ABS(v) (v)
#define NO_EXP(v) (v)

/* Folds x[0..n) into acc with 8 independent lanes (vectorisable, and a
 * little better rounding than one running sum). */
#define LANES(T, COMBINE, TERM, IDENT) do { \
		T l_[8]; \
		int64_t i_ = 0; \
		for (int j_ = 0; j_ < 8; j_++) \
			l_[j_] = (IDENT); \
		for (; i_ + 8 <= n; i_ += 8) \
			for (int j_ = 0; j_ < 8; j_++) { \
				T v = x[i_ + j_]; \
				l_[j_] = COMBINE(l_[j_], (TERM)); \
			} \
		for (; i_ < n; i_++) { \
			T v = x[i_]; \
			l_[0] = COMBINE(l_[0], (TERM)); \
		} \
		for (int j_ = 0; j_ < 8; j_++) \
			acc = COMBINE(acc, l_[j_]); \
	} while (0)

#define ELEMS(COMBINE, TERM) do { \
		for (int64_t i_ = 0; i_ < n; i_++) { \
			__typeof__(x[0]) v = x[i_]; \
			acc[i_] = COMBINE(acc[i_], (TERM)); \
		} \
	} while (0)

#define DEF_ROW_OPS(SUF, T, ADD, MUL, MAX, MIN, ABS, EXP, ZERO, ONE) \
static T reduce_row_##SUF(enum acc_op op, const T *x, int64_t n, T acc, \
			  T shift) \
{ \
	switch (op) { \
	case ACC_SUM: LANES(T, ADD, v, ZERO); break; \
	case ACC_SUMSQ: LANES(T, ADD, MUL(v, v), ZERO); break; \
	case ACC_ABS: LANES(T, ADD, ABS(v), ZERO); break; \
	case ACC_PROD: LANES(T, MUL, v, ONE); break; \
	case ACC_MAX: LANES(T, MAX, v, x[0]); break; \
	case ACC_MIN: LANES(T, MIN, v, x[0]); break; \
	case ACC_SUMEXP: LANES(T, ADD, EXP(v - shift), ZERO); break; \
	} \
	return acc; \
} \
static void accum_row_##SUF(enum acc_op op, const T *x, int64_t n, T *acc, \
			    const T *shift) \
{ \
	switch (op) { \
	case ACC_SUM: ELEMS(ADD, v); break; \
	case ACC_SUMSQ: ELEMS(ADD, MUL(v, v)); break; \
	case ACC_ABS: ELEMS(ADD, ABS(v)); break; \
	case ACC_PROD: ELEMS(MUL, v); break; \
	case ACC_MAX: ELEMS(MAX, v); break; \
	case ACC_MIN: ELEMS(MIN, v); break; \
	case ACC_SUMEXP: \
		for (int64_t i_ = 0; i_ < n; i_++) \
			acc[i_] = ADD(acc[i_], EXP(x[i_] - shift[i_])); \
		break; \
	} \
}

DEF_ROW_OPS(f32, float, F_ADD, F_MUL, F_MAX, F_MIN, fabsf, expf, 0.0f, 1.0f)
DEF_ROW_OPS(f64, double, F_ADD, F_MUL, F_MAX, F_MIN, fabs, exp, 0.0, 1.0)
DEF_ROW_OPS(i64, int64_t, I_ADD, I_MUL, I_MAX, I_MIN, I_ABS, NO_EXP, 0, 1)
DEF_ROW_OPS(u64, uint64_t, U_ADD, U_MUL, I_MAX, I_MIN, U_ABS, NO_EXP, 0u, 1u)

/* The coalesced iteration space of one reduction. */
struct red_plan {
	int ng;                        /* groups; the last one is innermost */
	int64_t size[ES_MAX_DIMS];
	bool red[ES_MAX_DIMS];
	int64_t ostride[ES_MAX_DIMS];  /* output stride; 0 for reduced groups */
	int64_t inner;                 /* size[ng - 1] */
	bool inner_red;
	int64_t rows;                  /* product of the outer group sizes */
	int64_t out_numel;
	int64_t count;                 /* input elements per output element */
};

struct red_job {
	const struct red_plan *p;
	enum dom dom;
	enum acc_op op;
	const void *x;
	es_dtype dt;
	size_t esz;
	void *acc;         /* domain typed, out_numel entries */
	const void *shift; /* domain typed, for ACC_SUMEXP */
	char *bufs;        /* CHUNK domain elements per thread */
};

/* Plans the walk over dims with reduced[] marking reduced axes. */
static void red_plan_make(struct red_plan *p, const int64_t *dims, int ndim,
			  const bool *reduced)
{
	p->ng = 0;
	p->count = 1;
	p->out_numel = 1;
	for (int d = 0; d < ndim; d++) {
		if (reduced[d])
			p->count *= dims[d];
		else
			p->out_numel *= dims[d];
		if (dims[d] == 1)
			continue; /* affects neither layout nor counts */
		if (p->ng > 0 && p->red[p->ng - 1] == reduced[d]) {
			p->size[p->ng - 1] *= dims[d];
		} else {
			p->size[p->ng] = dims[d];
			p->red[p->ng] = reduced[d];
			p->ng++;
		}
	}
	if (p->ng == 0) {
		p->size[0] = 1;
		p->red[0] = false;
		p->ng = 1;
	}
	int64_t s = 1;
	for (int g = p->ng - 1; g >= 0; g--) {
		p->ostride[g] = p->red[g] ? 0 : s;
		if (!p->red[g])
			s *= p->size[g];
	}
	p->inner = p->size[p->ng - 1];
	p->inner_red = p->red[p->ng - 1];
	p->rows = 1;
	for (int g = 0; g < p->ng - 1; g++)
		p->rows *= p->size[g];
}

/* Folds n elements of one input row (at src) into the accumulators at out:
 * all into acc[out] when the innermost group is reduced, else element-wise
 * into acc[out .. out + n). */
static void red_row(const struct red_job *j, const char *src, int64_t n,
		    int64_t out, char *buf)
{
	for (int64_t c = 0; c < n; c += CHUNK) {
		int64_t m = n - c < CHUNK ? n - c : CHUNK;
		const void *x = src + (size_t)c * j->esz;
		if (!dom_native(j->dom, j->dt)) {
			load_dom(j->dom, buf, x, j->dt, m, 1);
			x = buf;
		}
		int64_t o = j->p->inner_red ? out : out + c;
		switch (j->dom) {
		case DOM_F32: {
			float *acc = j->acc;
			const float *sh = j->shift;
			if (j->p->inner_red)
				acc[o] = reduce_row_f32(j->op, x, m, acc[o], sh ? sh[o] : 0);
			else
				accum_row_f32(j->op, x, m, acc + o, sh ? sh + o : NULL);
			break;
		}
		case DOM_F64: {
			double *acc = j->acc;
			const double *sh = j->shift;
			if (j->p->inner_red)
				acc[o] = reduce_row_f64(j->op, x, m, acc[o], sh ? sh[o] : 0);
			else
				accum_row_f64(j->op, x, m, acc + o, sh ? sh + o : NULL);
			break;
		}
		case DOM_I64: {
			int64_t *acc = j->acc;
			if (j->p->inner_red)
				acc[o] = reduce_row_i64(j->op, x, m, acc[o], 0);
			else
				accum_row_i64(j->op, x, m, acc + o, NULL);
			break;
		}
		case DOM_U64: {
			uint64_t *acc = j->acc;
			if (j->p->inner_red)
				acc[o] = reduce_row_u64(j->op, x, m, acc[o], 0);
			else
				accum_row_u64(j->op, x, m, acc + o, NULL);
			break;
		}
		}
	}
}

/* Walks rows [r0, r1), columns [c0, c1) of the innermost group. */
static void red_rows(const struct red_job *j, int64_t r0, int64_t r1,
		     int64_t c0, int64_t c1, char *buf)
{
	const struct red_plan *p = j->p;
	int64_t idx[ES_MAX_DIMS];
	int no = p->ng - 1;
	int64_t rem = r0, out = 0;
	for (int g = no - 1; g >= 0; g--) {
		idx[g] = rem % p->size[g];
		rem /= p->size[g];
		out += idx[g] * p->ostride[g];
	}
	for (int64_t r = r0; r < r1; r++) {
		const char *src = (const char *)j->x +
				  (size_t)(r * p->inner + c0) * j->esz;
		red_row(j, src, c1 - c0, p->inner_red ? out : out + c0, buf);
		for (int g = no - 1; g >= 0; g--) {
			out += p->ostride[g];
			if (++idx[g] < p->size[g])
				break;
			out -= p->ostride[g] * p->size[g];
			idx[g] = 0;
		}
	}
}

/* Runs one pass, split across threads over disjoint outputs when large. */
static void red_pass(const struct red_job *j, int threads)
{
	const struct red_plan *p = j->p;
	size_t buf_bytes = CHUNK * sizeof(double);
	bool big = p->rows * p->inner >= PAR_MIN_WORK;
	if (threads > 1 && big && p->ng >= 2 && !p->red[0] && p->size[0] > 1) {
		/* outermost kept group: each index owns its outputs */
		int64_t n0 = p->size[0], per = p->rows / n0;
		ES_PARALLEL_FOR(threads, true, i0, n0, {
			red_rows(j, i0 * per, (i0 + 1) * per, 0, p->inner,
				 j->bufs + (size_t)omp_get_thread_num() * buf_bytes);
		});
	} else if (threads > 1 && big && !p->inner_red && p->inner >= 256) {
		/* innermost kept group: split its columns */
		int64_t nc = threads;
		ES_PARALLEL_FOR(threads, true, t, nc, {
			red_rows(j, 0, p->rows, p->inner * t / nc,
				 p->inner * (t + 1) / nc,
				 j->bufs + (size_t)omp_get_thread_num() * buf_bytes);
		});
	} else {
		red_rows(j, 0, p->rows, 0, p->inner, j->bufs);
	}
}

static void acc_fill(enum dom d, enum acc_op op, void *acc, int64_t n)
{
	for (int64_t i = 0; i < n; i++) {
		switch (d) {
		case DOM_F32:
			((float *)acc)[i] = op == ACC_PROD ? 1.0f :
					    op == ACC_MAX ? -INFINITY :
					    op == ACC_MIN ? INFINITY : 0.0f;
			break;
		case DOM_F64:
			((double *)acc)[i] = op == ACC_PROD ? 1.0 :
					     op == ACC_MAX ? -INFINITY :
					     op == ACC_MIN ? INFINITY : 0.0;
			break;
		case DOM_I64:
			((int64_t *)acc)[i] = op == ACC_PROD ? 1 :
					      op == ACC_MAX ? INT64_MIN :
					      op == ACC_MIN ? INT64_MAX : 0;
			break;
		case DOM_U64:
			((uint64_t *)acc)[i] = op == ACC_PROD ? 1 :
					       op == ACC_MIN ? UINT64_MAX : 0;
			break;
		}
	}
}

/* Turns accumulators into results in the output dtype (may be in place). */
static void red_finish(enum red_kind kind, enum dom d, const void *acc,
		       const void *shift, void *out, es_dtype dt, int64_t n,
		       int64_t count)
{
	for (int64_t i = 0; i < n; i++) {
		if (d == DOM_F32 || d == DOM_F64) {
			double v = d == DOM_F32 ? ((const float *)acc)[i] :
				   ((const double *)acc)[i];
			switch (kind) {
			case RK_MEAN: v = v / (double)count; break;
			case RK_L2: v = sqrt(v); break;
			case RK_LOGSUM: v = log(v); break;
			case RK_LOGSUMEXP:
				v = log(v) + (d == DOM_F32 ? ((const float *)shift)[i] :
					      ((const double *)shift)[i]);
				break;
			default: break;
			}
			es_op_store_f64(dt, out, i, v);
			continue;
		}
		bool sgn = d == DOM_I64;
		uint64_t u = sgn ? (uint64_t)((const int64_t *)acc)[i] :
			     ((const uint64_t *)acc)[i];
		double real = sgn ? (double)(int64_t)u : (double)u;
		switch (kind) {
		case RK_MEAN:
			if (count == 0)
				u = 0;
			else if (sgn)
				u = (uint64_t)((int64_t)u / count);
			else
				u = u / (uint64_t)count;
			es_op_store_i64(dt, out, i, (int64_t)u);
			break;
		case RK_L2:
			es_op_store_f64(dt, out, i, sqrt(real));
			break;
		case RK_LOGSUM:
			es_op_store_f64(dt, out, i, log(real));
			break;
		case RK_MAX: case RK_MIN:
			/* in range except for the identity of an empty set,
			 * which saturates to the type's limit */
			es_op_store_f64(dt, out, i, real);
			if (dt == ES_DT_INT64 || dt == ES_DT_UINT64)
				es_op_store_i64(dt, out, i, (int64_t)u);
			break;
		default:
			es_op_store_i64(dt, out, i, (int64_t)u);
			break;
		}
	}
}

struct red_state {
	enum red_kind kind;
	bool keepdims;
	bool noop_with_empty_axes;
	bool axes_input;  /* axes come from input 1 */
	int n_axes;       /* attribute axes; 0 when absent or empty */
	int64_t axes[ES_MAX_DIMS];
};

static int red_init_common(es_op_init_ctx *c, void **state, bool axes_input)
{
	const es_node *node = c->node;
	struct red_state *s = es_op_state_alloc(c, sizeof(*s));
	int64_t v;
	int rc;
	if (!s)
		return ES_ENOMEM;
	size_t i;
	for (i = 0; i < sizeof(red_names) / sizeof(red_names[0]); i++)
		if (!strcmp(node->op_type, red_names[i].op_type))
			break;
	if (i == sizeof(red_names) / sizeof(red_names[0])) {
		rc = es_error_set(c->err, ES_EINTERNAL, "node '%s': %s is not a reduction",
				  node->name, node->op_type);
		goto out_free;
	}
	s->kind = red_names[i].kind;
	s->axes_input = axes_input;
	if ((rc = es_node_attr_int(node, "keepdims", 1, &v, c->err)))
		goto out_free;
	s->keepdims = v != 0;
	if (axes_input) {
		if ((rc = es_node_attr_int(node, "noop_with_empty_axes", 0, &v, c->err)))
			goto out_free;
		s->noop_with_empty_axes = v != 0;
		if (es_node_attr(node, "axes")) {
			rc = es_error_set(c->err, ES_EINVAL,
				"node '%s' (%s): attribute 'axes' is not allowed at opset %d; axes is input 1",
				node->name, node->op_type, node->opset);
			goto out_free;
		}
	} else {
		const int64_t *axes;
		size_t n;
		if ((rc = es_node_attr_ints(node, "axes", &axes, &n, c->err)))
			goto out_free;
		if (n > ES_MAX_DIMS) {
			rc = es_error_set(c->err, ES_EINVAL,
				"node '%s' (%s): attribute 'axes' has %zu entries, more than the maximum rank %d",
				node->name, node->op_type, n, ES_MAX_DIMS);
			goto out_free;
		}
		for (size_t a = 0; a < n; a++)
			s->axes[a] = axes[a];
		s->n_axes = (int)n;
	}
	*state = s;
	return 0;
out_free:
	free(s);
	return rc;
}

static int red_init_attr(es_op_init_ctx *c, void **state)
{
	return red_init_common(c, state, false);
}

static int red_init_input(es_op_init_ctx *c, void **state)
{
	return red_init_common(c, state, true);
}

static int red_run(es_kctx *k)
{
	const struct red_state *s = k->state;
	const es_tensor *x = es_kin(k, 0);
	const es_tensor *axes_t = s->axes_input ? es_kin(k, 1) : NULL;
	int64_t axes[ES_MAX_DIMS];
	int n_axes = s->n_axes;
	bool reduced[ES_MAX_DIMS] = { false };
	int rank, rc;

	if (!x)
		return es_kctx_fail(k, ES_EINVAL, "input 'data' is missing");
	if ((rc = es_op_check_dtype(k, x, ES_T_NUMERIC, "data")))
		return rc;
	rank = x->ndim;
	if (axes_t) {
		if ((rc = read_int64_list(k, axes_t, "axes", axes, ES_MAX_DIMS, &n_axes)))
			return rc;
	} else {
		memcpy(axes, s->axes, sizeof(axes));
	}
	for (int a = 0; a < n_axes; a++) {
		int ax = 0;
		if ((rc = normalize_axis(k, axes[a], rank, "axes entry", &ax)))
			return rc;
		if (reduced[ax])
			return es_kctx_fail(k, ES_EINVAL,
					    "axes lists axis %d more than once", ax);
		reduced[ax] = true;
	}
	if (n_axes == 0 && !s->noop_with_empty_axes)
		for (int d = 0; d < rank; d++)
			reduced[d] = true;

	int64_t odims[ES_MAX_DIMS];
	int ondim = 0;
	for (int d = 0; d < rank; d++) {
		if (!reduced[d])
			odims[ondim++] = x->dims[d];
		else if (s->keepdims)
			odims[ondim++] = 1;
	}

	struct red_plan p;
	red_plan_make(&p, x->dims, rank, reduced);

	/* reducing single elements: the input itself for these kinds */
	if (p.count == 1 && (s->kind == RK_SUM || s->kind == RK_MEAN ||
			     s->kind == RK_MAX || s->kind == RK_MIN ||
			     s->kind == RK_PROD || s->kind == RK_LOGSUMEXP))
		return es_kctx_output_alias(k, 0, 0, ondim, odims);

	if ((rc = es_kctx_output(k, 0, x->dtype, ondim, odims)))
		return rc;
	es_tensor *y = k->outputs[0];
	if (p.out_numel == 0)
		return 0;

	enum dom d = DOM_F32;
	dom_of(x->dtype, &d);
	if (s->kind == RK_LOGSUMEXP && (d == DOM_I64 || d == DOM_U64))
		d = DOM_F64;
	size_t dsz = d == DOM_F32 ? 4 : 8;
	int threads = k->threads > 0 ? k->threads : 1;

	/* one scratch block: [accumulators][shift][per-thread buffers] */
	bool in_place = dom_native(d, x->dtype);
	size_t acc_bytes = in_place ? 0 : (size_t)p.out_numel * dsz;
	size_t shift_bytes = s->kind == RK_LOGSUMEXP ? (size_t)p.out_numel * dsz : 0;
	size_t buf_bytes = (size_t)threads * CHUNK * sizeof(double);
	acc_bytes = (acc_bytes + 63) & ~(size_t)63;
	shift_bytes = (shift_bytes + 63) & ~(size_t)63;
	char *scratch = es_kctx_scratch(k, acc_bytes + shift_bytes + buf_bytes);
	if (!scratch)
		return es_kctx_fail(k, ES_ENOMEM, "cannot allocate %zu bytes of scratch",
				    acc_bytes + shift_bytes + buf_bytes);
	void *acc = in_place ? y->data : scratch;
	void *shift = shift_bytes ? scratch + acc_bytes : NULL;

	struct red_job j = {
		.p = &p, .dom = d, .x = x->data, .dt = x->dtype,
		.esz = es_dtype_size(x->dtype), .acc = acc,
		.bufs = scratch + acc_bytes + shift_bytes,
	};
	static const enum acc_op ops[] = {
		[RK_SUM] = ACC_SUM, [RK_MEAN] = ACC_SUM, [RK_MAX] = ACC_MAX,
		[RK_MIN] = ACC_MIN, [RK_PROD] = ACC_PROD, [RK_L1] = ACC_ABS,
		[RK_L2] = ACC_SUMSQ, [RK_LOGSUM] = ACC_SUM,
		[RK_LOGSUMEXP] = ACC_SUMEXP, [RK_SUMSQUARE] = ACC_SUMSQ,
	};
	bool has_input = p.count > 0;
	if (s->kind == RK_LOGSUMEXP) {
		/* pass 1: the maximum, used as a shift so exp cannot overflow */
		j.acc = shift;
		j.op = ACC_MAX;
		acc_fill(d, ACC_MAX, shift, p.out_numel);
		if (has_input)
			red_pass(&j, threads);
		for (int64_t i = 0; i < p.out_numel; i++) {
			if (d == DOM_F32) {
				float *m = shift;
				if (!isfinite(m[i]))
					m[i] = 0;
			} else {
				double *m = shift;
				if (!isfinite(m[i]))
					m[i] = 0;
			}
		}
		j.acc = acc;
		j.shift = shift;
	}
	j.op = ops[s->kind];
	acc_fill(d, j.op, acc, p.out_numel);
	if (has_input)
		red_pass(&j, threads);
	red_finish(s->kind, d, acc, shift, y->data, y->dtype, p.out_numel, p.count);
	return 0;
}

/* ---- ArgMax / ArgMin ----------------------------------------------------- */

struct arg_state {
	bool is_max;
	bool keepdims;
	bool select_last;
	int64_t axis;
};

static int arg_init_common(es_op_init_ctx *c, void **state, bool has_last)
{
	const es_node *node = c->node;
	struct arg_state *s = es_op_state_alloc(c, sizeof(*s));
	int64_t v;
	int rc;
	if (!s)
		return ES_ENOMEM;
	s->is_max = !strcmp(node->op_type, "ArgMax");
	if ((rc = es_node_attr_int(node, "axis", 0, &s->axis, c->err)))
		goto out_free;
	if ((rc = es_node_attr_int(node, "keepdims", 1, &v, c->err)))
		goto out_free;
	s->keepdims = v != 0;
	if (has_last) {
		if ((rc = es_node_attr_int(node, "select_last_index", 0, &v, c->err)))
			goto out_free;
		s->select_last = v != 0;
	}
	*state = s;
	return 0;
out_free:
	free(s);
	return rc;
}

static int arg_init_v1(es_op_init_ctx *c, void **state)
{
	return arg_init_common(c, state, false);
}

static int arg_init(es_op_init_ctx *c, void **state)
{
	return arg_init_common(c, state, true);
}

/*
 * Whether v replaces the current best b. NaN counts as the extreme value
 * (numpy's argmax/argmin return the first NaN); ties go to the first index
 * unless select_last_index.
 */
#define F_TAKE(v, b, gt, last) \
	((v) != (v) ? ((last) || (b) == (b)) : \
	 (b) != (b) ? false : \
	 (gt) ? ((last) ? (v) >= (b) : (v) > (b)) : ((last) ? (v) <= (b) : (v) < (b)))
#define I_TAKE(v, b, gt, last) \
	((gt) ? ((last) ? (v) >= (b) : (v) > (b)) : ((last) ? (v) <= (b) : (v) < (b)))

#define DEF_ARG(SUF, T, TAKE) \
/* Scans one contiguous row of n values; returns the winning index. */ \
static int64_t arg_scan_##SUF(const T *x, int64_t n, int64_t base, T *best, \
			      int64_t bidx, bool gt, bool last) \
{ \
	T b = *best; \
	for (int64_t i = 0; i < n; i++) \
		if (TAKE(x[i], b, gt, last)) { \
			b = x[i]; \
			bidx = base + i; \
		} \
	*best = b; \
	return bidx; \
} \
/* Merges row i (n columns) into best[] / out[]. */ \
static void arg_merge_##SUF(const T *x, int64_t n, int64_t i, T *best, \
			    int64_t *out, bool gt, bool last) \
{ \
	for (int64_t c = 0; c < n; c++) \
		if (TAKE(x[c], best[c], gt, last)) { \
			best[c] = x[c]; \
			out[c] = i; \
		} \
}

DEF_ARG(f32, float, F_TAKE)
DEF_ARG(f64, double, F_TAKE)
DEF_ARG(i64, int64_t, I_TAKE)
DEF_ARG(u64, uint64_t, I_TAKE)

struct arg_job {
	const struct arg_state *s;
	enum dom dom;
	const char *x;
	es_dtype dt;
	size_t esz;
	int64_t n, inner;
	int64_t *out;
};

/* ArgMax/ArgMin of slice o (all inner columns); buf holds 2 * CHUNK. */
static void arg_outer(const struct arg_job *j, int64_t o, char *buf)
{
	bool gt = j->s->is_max, last = j->s->select_last;
	const char *base = j->x + (size_t)(o * j->n * j->inner) * j->esz;
	int64_t *out = j->out + o * j->inner;
	char *best = buf, *tmp = buf + CHUNK * sizeof(double);

	if (j->inner == 1) {
		int64_t bidx = 0;
		for (int64_t c = 0; c < j->n; c += CHUNK) {
			int64_t m = j->n - c < CHUNK ? j->n - c : CHUNK;
			load_dom(j->dom, tmp, base + (size_t)c * j->esz, j->dt, m, 1);
			if (c == 0)
				memcpy(best, tmp, sizeof(double)); /* seed */
			switch (j->dom) {
			case DOM_F32: bidx = arg_scan_f32((float *)tmp, m, c, (float *)best, bidx, gt, last); break;
			case DOM_F64: bidx = arg_scan_f64((double *)tmp, m, c, (double *)best, bidx, gt, last); break;
			case DOM_I64: bidx = arg_scan_i64((int64_t *)tmp, m, c, (int64_t *)best, bidx, gt, last); break;
			case DOM_U64: bidx = arg_scan_u64((uint64_t *)tmp, m, c, (uint64_t *)best, bidx, gt, last); break;
			}
		}
		out[0] = bidx;
		return;
	}
	for (int64_t c = 0; c < j->inner; c += CHUNK) {
		int64_t m = j->inner - c < CHUNK ? j->inner - c : CHUNK;
		load_dom(j->dom, best, base + (size_t)c * j->esz, j->dt, m, 1);
		for (int64_t q = 0; q < m; q++)
			out[c + q] = 0;
		for (int64_t i = 1; i < j->n; i++) {
			const char *row = base + (size_t)(i * j->inner + c) * j->esz;
			load_dom(j->dom, tmp, row, j->dt, m, 1);
			switch (j->dom) {
			case DOM_F32: arg_merge_f32((float *)tmp, m, i, (float *)best, out + c, gt, last); break;
			case DOM_F64: arg_merge_f64((double *)tmp, m, i, (double *)best, out + c, gt, last); break;
			case DOM_I64: arg_merge_i64((int64_t *)tmp, m, i, (int64_t *)best, out + c, gt, last); break;
			case DOM_U64: arg_merge_u64((uint64_t *)tmp, m, i, (uint64_t *)best, out + c, gt, last); break;
			}
		}
	}
}

static int arg_run(es_kctx *k)
{
	const struct arg_state *s = k->state;
	const es_tensor *x = es_kin(k, 0);
	int axis = 0, rc;
	if (!x)
		return es_kctx_fail(k, ES_EINVAL, "input 'data' is missing");
	if ((rc = es_op_check_dtype(k, x, ES_T_NUMERIC, "data")))
		return rc;
	if (x->ndim == 0)
		return es_kctx_fail(k, ES_ESHAPE, "input 'data' is a scalar; expected rank >= 1");
	if ((rc = normalize_axis(k, s->axis, x->ndim, "attribute axis", &axis)))
		return rc;

	int64_t outer = 1, inner = 1, n = x->dims[axis];
	int64_t odims[ES_MAX_DIMS];
	int ondim = 0;
	for (int d = 0; d < x->ndim; d++) {
		if (d < axis)
			outer *= x->dims[d];
		else if (d > axis)
			inner *= x->dims[d];
		if (d != axis)
			odims[ondim++] = x->dims[d];
		else if (s->keepdims)
			odims[ondim++] = 1;
	}
	if ((rc = es_kctx_output(k, 0, ES_DT_INT64, ondim, odims)))
		return rc;
	if (outer * inner == 0)
		return 0;
	if (n == 0)
		return es_kctx_fail(k, ES_EINVAL,
				    "axis %d of input 'data' is empty; %s needs at least one element",
				    axis, k->node->op_type);

	enum dom d = DOM_F32;
	dom_of(x->dtype, &d);
	int threads = k->threads > 0 ? k->threads : 1;
	size_t buf_bytes = 2 * CHUNK * sizeof(double);
	char *bufs = es_kctx_scratch(k, (size_t)threads * buf_bytes);
	if (!bufs)
		return es_kctx_fail(k, ES_ENOMEM, "cannot allocate scratch");
	struct arg_job j = {
		.s = s, .dom = d, .x = x->data, .dt = x->dtype,
		.esz = es_dtype_size(x->dtype), .n = n, .inner = inner,
		.out = k->outputs[0]->data,
	};
	bool par = outer > 1 && es_op_threads(k, outer * n * inner, PAR_MIN_WORK) > 1;
	ES_PARALLEL_FOR(threads, par, o, outer, {
		arg_outer(&j, o, bufs + (size_t)omp_get_thread_num() * buf_bytes);
	});
	return 0;
}

/* ---- TopK ---------------------------------------------------------------- */

struct topk_state {
	int64_t axis;
	int64_t k;        /* from the attribute (opset 1) */
	bool k_input;
	bool largest;
	bool sorted;
};

static int topk_init_common(es_op_init_ctx *c, void **state, int version)
{
	const es_node *node = c->node;
	struct topk_state *s = es_op_state_alloc(c, sizeof(*s));
	int64_t v;
	int rc;
	if (!s)
		return ES_ENOMEM;
	if ((rc = es_node_attr_int(node, "axis", -1, &s->axis, c->err)))
		goto out_free;
	s->largest = true;
	s->sorted = true;
	if (version < 10) {
		if (!es_node_attr(node, "k")) {
			rc = es_error_set(c->err, ES_EINVAL,
					  "node '%s' (TopK): required attribute 'k' is missing",
					  node->name);
			goto out_free;
		}
		if ((rc = es_node_attr_int(node, "k", 0, &s->k, c->err)))
			goto out_free;
		if (s->k < 0) {
			rc = es_error_set(c->err, ES_EINVAL,
					  "node '%s' (TopK): attribute k = %lld must not be negative",
					  node->name, (long long)s->k);
			goto out_free;
		}
	} else {
		s->k_input = true;
	}
	if (version >= 11) {
		if ((rc = es_node_attr_int(node, "largest", 1, &v, c->err)))
			goto out_free;
		s->largest = v != 0;
		if ((rc = es_node_attr_int(node, "sorted", 1, &v, c->err)))
			goto out_free;
		s->sorted = v != 0;
	}
	*state = s;
	return 0;
out_free:
	free(s);
	return rc;
}

static int topk_init_v1(es_op_init_ctx *c, void **state)
{
	return topk_init_common(c, state, 1);
}

static int topk_init_v10(es_op_init_ctx *c, void **state)
{
	return topk_init_common(c, state, 10);
}

static int topk_init_v11(es_op_init_ctx *c, void **state)
{
	return topk_init_common(c, state, 11);
}

/* Total order on keys: NaN above everything, NaNs equal. */
#define F_CMP(a, b) (((a) != (a) || (b) != (b)) ? \
		     ((a) != (a)) - ((b) != (b)) : ((a) > (b)) - ((a) < (b)))
#define I_CMP(a, b) (((a) > (b)) - ((a) < (b)))

/*
 * Selection with a heap of the k best seen so far, its worst at the root.
 * Elements arrive in index order, so an equal key never displaces an
 * earlier index: ties keep the lower index first, as the spec asks. The
 * heap is then emptied worst-first into out_idx[k-1 .. 0].
 */
#define DEF_TOPK(SUF, T, CMP) \
struct topk_ent_##SUF { T key; int64_t idx; }; \
static bool topk_better_##SUF(const struct topk_ent_##SUF *a, \
			      const struct topk_ent_##SUF *b, int sign) \
{ \
	int c = CMP(a->key, b->key) * sign; \
	return c > 0 || (c == 0 && a->idx < b->idx); \
} \
static void topk_sift_##SUF(struct topk_ent_##SUF *h, int64_t n, int64_t i, \
			    int sign) \
{ \
	for (;;) { \
		int64_t l = 2 * i + 1, r = l + 1, w = i; \
		if (l < n && topk_better_##SUF(&h[w], &h[l], sign)) \
			w = l; \
		if (r < n && topk_better_##SUF(&h[w], &h[r], sign)) \
			w = r; \
		if (w == i) \
			return; \
		struct topk_ent_##SUF t = h[i]; \
		h[i] = h[w]; \
		h[w] = t; \
		i = w; \
	} \
} \
static void topk_select_##SUF(const T *x, int64_t n, int64_t k, int sign, \
			      void *heap, int64_t *out_idx) \
{ \
	struct topk_ent_##SUF *h = heap; \
	int64_t cnt = 0; \
	for (int64_t i = 0; i < n; i++) { \
		struct topk_ent_##SUF e = { x[i], i }; \
		if (cnt < k) { \
			int64_t c = cnt++; \
			h[c] = e; \
			while (c > 0) { /* sift up: worse goes to the root */ \
				int64_t p = (c - 1) / 2; \
				if (!topk_better_##SUF(&h[p], &h[c], sign)) \
					break; \
				struct topk_ent_##SUF t = h[p]; \
				h[p] = h[c]; \
				h[c] = t; \
				c = p; \
			} \
		} else if (k > 0 && topk_better_##SUF(&e, &h[0], sign)) { \
			h[0] = e; \
			topk_sift_##SUF(h, cnt, 0, sign); \
		} \
	} \
	while (cnt > 0) { \
		out_idx[cnt - 1] = h[0].idx; \
		h[0] = h[--cnt]; \
		topk_sift_##SUF(h, cnt, 0, sign); \
	} \
}

DEF_TOPK(f32, float, F_CMP)
DEF_TOPK(f64, double, F_CMP)
DEF_TOPK(i64, int64_t, I_CMP)
DEF_TOPK(u64, uint64_t, I_CMP)

static int topk_run(es_kctx *k)
{
	const struct topk_state *s = k->state;
	const es_tensor *x = es_kin(k, 0);
	int axis = 0, rc;
	int64_t kk = s->k;
	if (!x)
		return es_kctx_fail(k, ES_EINVAL, "input 'X' is missing");
	if ((rc = es_op_check_dtype(k, x, ES_T_NUMERIC, "X")))
		return rc;
	if (x->ndim == 0)
		return es_kctx_fail(k, ES_ESHAPE, "input 'X' is a scalar; expected rank >= 1");
	if ((rc = normalize_axis(k, s->axis, x->ndim, "attribute axis", &axis)))
		return rc;
	if (s->k_input) {
		const es_tensor *kt = es_kin(k, 1);
		int64_t kv[1];
		int nk = 0;
		if (!kt)
			return es_kctx_fail(k, ES_EINVAL, "input 'K' is missing");
		if ((rc = read_int64_list(k, kt, "K", kv, 1, &nk)))
			return rc;
		if (nk != 1)
			return es_kctx_fail(k, ES_ESHAPE,
					    "input 'K' must hold exactly one value, got %d", nk);
		kk = kv[0];
	}
	int64_t n = x->dims[axis];
	if (kk < 0)
		return es_kctx_fail(k, ES_ERANGE, "k = %lld must not be negative",
				    (long long)kk);
	if (kk > n)
		return es_kctx_fail(k, ES_ERANGE,
				    "k = %lld is larger than the size %lld of axis %d of input 'X'",
				    (long long)kk, (long long)n, axis);

	int64_t odims[ES_MAX_DIMS], outer = 1, inner = 1;
	for (int d = 0; d < x->ndim; d++) {
		odims[d] = d == axis ? kk : x->dims[d];
		if (d < axis)
			outer *= x->dims[d];
		else if (d > axis)
			inner *= x->dims[d];
	}
	if ((rc = es_kctx_output(k, 0, x->dtype, x->ndim, odims)))
		return rc;
	if (k->n_outputs > 1 && (rc = es_kctx_output(k, 1, ES_DT_INT64, x->ndim, odims)))
		return rc;
	int64_t slices = outer * inner;
	if (slices == 0 || kk == 0)
		return 0;

	enum dom d = DOM_F32;
	dom_of(x->dtype, &d);
	int threads = k->threads > 0 ? k->threads : 1;
	/* per thread: the slice in the domain type, the heap, the indices */
	size_t per = (size_t)n * sizeof(double) +
		     (size_t)kk * (sizeof(double) + sizeof(int64_t)) +
		     (size_t)kk * sizeof(int64_t);
	per = (per + 63) & ~(size_t)63;
	size_t total;
	if (es_mul_size(per, (size_t)threads, &total))
		return es_kctx_fail(k, ES_ERANGE, "scratch size overflows");
	char *scratch = es_kctx_scratch(k, total);
	if (!scratch)
		return es_kctx_fail(k, ES_ENOMEM, "cannot allocate %zu bytes of scratch", total);

	const char *xd = x->data;
	char *vals = k->outputs[0]->data;
	int64_t *idxs = k->n_outputs > 1 ? k->outputs[1]->data : NULL;
	size_t esz = es_dtype_size(x->dtype);
	int sign = s->largest ? 1 : -1;
	bool par = slices > 1 && es_op_threads(k, slices * n, PAR_MIN_WORK) > 1;
	ES_PARALLEL_FOR(threads, par, sl, slices, {
		char *mine = scratch + (size_t)omp_get_thread_num() * per;
		char *keys = mine;
		char *heap = keys + (size_t)n * sizeof(double);
		int64_t *sel = (int64_t *)(heap + (size_t)kk * (sizeof(double) + sizeof(int64_t)));
		int64_t o = sl / inner, c = sl % inner;
		const char *src = xd + (size_t)(o * n * inner + c) * esz;
		load_dom(d, keys, src, x->dtype, n, inner);
		switch (d) {
		case DOM_F32: topk_select_f32((float *)keys, n, kk, sign, heap, sel); break;
		case DOM_F64: topk_select_f64((double *)keys, n, kk, sign, heap, sel); break;
		case DOM_I64: topk_select_i64((int64_t *)keys, n, kk, sign, heap, sel); break;
		case DOM_U64: topk_select_u64((uint64_t *)keys, n, kk, sign, heap, sel); break;
		}
		for (int64_t q = 0; q < kk; q++) {
			size_t dst = (size_t)(o * kk * inner + q * inner + c);
			memcpy(vals + dst * esz, src + (size_t)(sel[q] * inner) * esz, esz);
			if (idxs)
				idxs[dst] = sel[q];
		}
	});
	return 0;
}

/* ---- the table ----------------------------------------------------------- */

/* Types by opset: 1..12 base, 13 adds bfloat16; Max/Min add 8-bit at 12. */
#define RT_BASE (ES_T(ES_DT_UINT32) | ES_T(ES_DT_UINT64) | ES_T(ES_DT_INT32) | \
		 ES_T(ES_DT_INT64) | ES_T(ES_DT_FLOAT16) | ES_T(ES_DT_FLOAT) | \
		 ES_T(ES_DT_DOUBLE))
#define RT_13 (RT_BASE | ES_T(ES_DT_BFLOAT16))
#define RT_MM12 (RT_BASE | ES_T(ES_DT_UINT8) | ES_T(ES_DT_INT8))
#define RT_MM13 (RT_MM12 | ES_T(ES_DT_BFLOAT16))
#define ARG_T1 (ES_T_NUMERIC & ~ES_T(ES_DT_BFLOAT16))
#define TOPK_T1 (ES_T(ES_DT_FLOAT16) | ES_T(ES_DT_FLOAT) | ES_T(ES_DT_DOUBLE))
#define TOPK_T11 (ES_T_NUMERIC & ~ES_T(ES_DT_BFLOAT16))

#define RED_ATTR(name, from, to, t) \
	{ .domain = "", .op_type = name, .since = from, .until = to, \
	  .min_inputs = 1, .max_inputs = 1, .min_outputs = 1, .max_outputs = 1, \
	  .types = t, .out_type = ES_OUT_SAME, .init = red_init_attr, \
	  .fini = es_op_state_free, .run = red_run }
#define RED_INPUT(name, from, to, t) \
	{ .domain = "", .op_type = name, .since = from, .until = to, \
	  .min_inputs = 1, .max_inputs = 2, .min_outputs = 1, .max_outputs = 1, \
	  .types = t, .out_type = ES_OUT_SAME, .init = red_init_input, \
	  .fini = es_op_state_free, .run = red_run }
#define RED_ROWS(name) \
	RED_ATTR(name, 1, 12, RT_BASE), \
	RED_ATTR(name, 13, 17, RT_13), \
	RED_INPUT(name, 18, 0, RT_13)
#define ARG_ROW(name, from, to, t, ini) \
	{ .domain = "", .op_type = name, .since = from, .until = to, \
	  .min_inputs = 1, .max_inputs = 1, .min_outputs = 1, .max_outputs = 1, \
	  .types = t, .out_type = ES_OUT_FIXED, .out_dtype = ES_DT_INT64, \
	  .init = ini, .fini = es_op_state_free, .run = arg_run }
#define TOPK_ROW(from, to, nin, t, ini) \
	{ .domain = "", .op_type = "TopK", .since = from, .until = to, \
	  .min_inputs = nin, .max_inputs = nin, .min_outputs = 2, .max_outputs = 2, \
	  .types = t, .out_type = ES_OUT_SAME, .init = ini, .fini = es_op_state_free, \
	  .run = topk_run }

static const es_op_def defs[] = {
	RED_ATTR("ReduceSum", 1, 12, RT_BASE),
	RED_INPUT("ReduceSum", 13, 0, RT_13),
	RED_ROWS("ReduceMean"),
	RED_ROWS("ReduceProd"),
	RED_ROWS("ReduceL1"),
	RED_ROWS("ReduceL2"),
	RED_ROWS("ReduceLogSum"),
	RED_ROWS("ReduceLogSumExp"),
	RED_ROWS("ReduceSumSquare"),
	RED_ATTR("ReduceMax", 1, 11, RT_BASE),
	RED_ATTR("ReduceMax", 12, 12, RT_MM12),
	RED_ATTR("ReduceMax", 13, 17, RT_MM13),
	RED_INPUT("ReduceMax", 18, 0, RT_MM13),
	RED_ATTR("ReduceMin", 1, 11, RT_BASE),
	RED_ATTR("ReduceMin", 12, 12, RT_MM12),
	RED_ATTR("ReduceMin", 13, 17, RT_MM13),
	RED_INPUT("ReduceMin", 18, 0, RT_MM13),
	ARG_ROW("ArgMax", 1, 11, ARG_T1, arg_init_v1),
	ARG_ROW("ArgMax", 12, 12, ARG_T1, arg_init),
	ARG_ROW("ArgMax", 13, 0, ES_T_NUMERIC, arg_init),
	ARG_ROW("ArgMin", 1, 11, ARG_T1, arg_init_v1),
	ARG_ROW("ArgMin", 12, 12, ARG_T1, arg_init),
	ARG_ROW("ArgMin", 13, 0, ES_T_NUMERIC, arg_init),
	TOPK_ROW(1, 9, 1, TOPK_T1, topk_init_v1),
	TOPK_ROW(10, 10, 2, TOPK_T1, topk_init_v10),
	TOPK_ROW(11, 0, 2, TOPK_T11, topk_init_v11),
};

const es_op_table es_ops_reduce = { defs, sizeof(defs) / sizeof(defs[0]) };
