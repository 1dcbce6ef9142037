/*
 * Operator family: norm (BatchNormalization, InstanceNormalization,
 * LayerNormalization, LpNormalization, MeanVarianceNormalization).
 *
 * Data of type float and double is normalised natively; float16 and
 * bfloat16 through a float copy. Statistics accumulate in double and are
 * two-pass (mean, then centred squares), so they do not cancel. Small
 * per-channel parameters are read as double whatever their type. Every
 * kernel allows x == y, so outputs may reuse the input's buffer.
 */
#include <inttypes.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "engine/opt/opt.h"
#include "engine/ops/families.h"
#include "engine/ops/op_util.h"

/* ---- helpers ----------------------------------------------------------- */

/* A parameter tensor (scale, bias, mean, var) as a double array. */
static double *load_param(es_kctx *k, const es_tensor *t)
{
	int64_t n = es_tensor_numel(t);
	double *p = es_op_scratch(k, n, sizeof(double));
	if (p)
		for (int64_t i = 0; i < n; i++)
			p[i] = es_op_load_f64(t->dtype, t->data, i);
	return p;
}

/*
 * The data an op works on: X and Y themselves for float and double, one
 * float copy (used for input and output) for float16/bfloat16. `wide` is
 * true for double.
 */
typedef struct work {
	void *x, *y;
	bool wide;
	es_tensor *Y; /* narrowed into by work_end when x is a copy */
	float *copy;
	int64_t n;
} work;

static int work_begin(es_kctx *k, const es_tensor *X, es_tensor *Y, work *w)
{
	w->n = es_tensor_numel(X);
	w->Y = Y;
	w->x = w->y = w->copy = NULL;
	w->wide = X->dtype == ES_DT_DOUBLE;
	if (X->dtype == ES_DT_FLOAT || X->dtype == ES_DT_DOUBLE) {
		w->x = X->data;
		w->y = Y->data;
		return 0;
	}
	w->copy = es_op_scratch(k, w->n, sizeof(float));
	if (!w->copy)
		return k->err->code;
	es_op_half_to_f32(X->dtype, X->data, w->copy, w->n);
	w->x = w->y = w->copy;
	return 0;
}

static void work_end(work *w)
{
	if (w->copy)
		es_op_f32_to_half(w->Y->dtype, w->copy, w->Y->data, w->n);
}

/* Y with X's type and shape, sharing X's buffer when the executor can. */
static int output_like(es_kctx *k, const es_tensor *X)
{
	bool inplace;
	return es_kctx_output_inplace(k, 0, 0, X->dtype, X->ndim, X->dims, &inplace);
}

static int check_epsilon(es_op_init_ctx *c, float eps)
{
	if (!(eps >= 0.0f) || isinf(eps))
		return es_error_set(c->err, ES_EINVAL,
			"node '%s' (%s): attribute 'epsilon' = %g must be finite and >= 0",
			c->node->name, c->node->op_type, (double)eps);
	return 0;
}

/*
 * Kernels for one element type T. Rows are contiguous runs of `len`
 * elements (a channel's spatial block, a LayerNorm row).
 */
#define DEFINE_NORM(T, SFX)                                                   \
	static void row_stats_##SFX(const T *x, int64_t len, double *mean,    \
				    double *var)                              \
	{                                                                     \
		double s = 0, ss = 0;                                         \
		for (int64_t i = 0; i < len; i++)                             \
			s += x[i];                                            \
		double m = len ? s / (double)len : 0;                         \
		for (int64_t i = 0; i < len; i++) {                           \
			double d = x[i] - m;                                  \
			ss += d * d;                                          \
		}                                                             \
		*mean = m;                                                    \
		*var = len ? ss / (double)len : 0;                            \
	}                                                                     \
                                                                              \
	/* y = x * a + b; a, b indexed by i when per_elem, else constant */  \
	static void affine_##SFX(const T *x, T *y, int64_t len,               \
				 const double *a, const double *b,            \
				 bool per_elem)                               \
	{                                                                     \
		if (per_elem) {                                               \
			for (int64_t i = 0; i < len; i++)                     \
				y[i] = (T)(x[i] * a[i] + b[i]);               \
		} else {                                                      \
			double a0 = a[0], b0 = b[0];                          \
			for (int64_t i = 0; i < len; i++)                     \
				y[i] = (T)(x[i] * a0 + b0);                   \
		}                                                             \
	}                                                                     \
                                                                              \
	/* y = (x - mean) * inv * scale[i] + bias[i] over one row */          \
	static void norm_row_##SFX(const T *x, T *y, int64_t len, double mean, \
				   double inv, const double *scale,          \
				   const double *bias)                        \
	{                                                                     \
		for (int64_t i = 0; i < len; i++)                             \
			y[i] = (T)((x[i] - mean) * inv * scale[i] +           \
				   (bias ? bias[i] : 0));                     \
	}                                                                     \
                                                                              \
	/* Lp norm of the n elements x[0], x[inner], ... per column */        \
	static void lp_##SFX(const T *x, T *y, int64_t outer, int64_t n,      \
			     int64_t inner, int p, int threads)               \
	{                                                                     \
		bool par = threads > 1 && outer * n * inner > 16384;          \
		_Pragma("omp parallel for num_threads(threads) if(par)")      \
		for (int64_t col = 0; col < outer * inner; col++) {           \
			int64_t o = col / inner, i = col % inner;             \
			const T *xc = x + o * n * inner + i;                  \
			T *yc = y + o * n * inner + i;                        \
			double s = 0;                                         \
			for (int64_t a = 0; a < n; a++) {                     \
				double v = xc[a * inner];                     \
				s += p == 1 ? fabs(v) : v * v;                \
			}                                                     \
			double norm = p == 1 ? s : sqrt(s);                   \
			/* a zero vector stays zero (as onnxruntime) */       \
			double inv = norm > 0 ? 1 / norm : 0;                 \
			for (int64_t a = 0; a < n; a++)                       \
				yc[a * inner] = (T)(xc[a * inner] * inv);     \
		}                                                             \
	}

DEFINE_NORM(float, f32)
DEFINE_NORM(double, f64)

#define ROW_STATS(w, off, len, m, v)                                          \
	((w)->wide ? row_stats_f64((const double *)(w)->x + (off), len, m, v) \
		   : row_stats_f32((const float *)(w)->x + (off), len, m, v))
#define AFFINE(w, off, len, a, b, pe)                                         \
	((w)->wide ? affine_f64((const double *)(w)->x + (off),               \
				(double *)(w)->y + (off), len, a, b, pe)      \
		   : affine_f32((const float *)(w)->x + (off),                \
				(float *)(w)->y + (off), len, a, b, pe))
#define NORM_ROW(w, off, len, m, inv, sc, bi)                                 \
	((w)->wide ? norm_row_f64((const double *)(w)->x + (off),             \
				  (double *)(w)->y + (off), len, m, inv, sc, bi) \
		   : norm_row_f32((const float *)(w)->x + (off),              \
				  (float *)(w)->y + (off), len, m, inv, sc, bi))

/* ---- BatchNormalization ------------------------------------------------ */

typedef struct bn_state {
	float epsilon, momentum;
	bool spatial;  /* opset < 9: spatial=0 normalises per activation */
	bool training; /* opset >= 14 training_mode=1 */
} bn_state;

static int bn_init(es_op_init_ctx *c, void **state)
{
	const es_node *n = c->node;
	float eps, momentum;
	int64_t spatial = 1, training = 0;
	int rc;
	if ((rc = es_node_attr_float(n, "epsilon", 1e-5f, &eps, c->err)) ||
	    (rc = es_node_attr_float(n, "momentum", 0.9f, &momentum, c->err)) ||
	    (rc = check_epsilon(c, eps)))
		return rc;
	if (n->opset < 9 &&
	    (rc = es_node_attr_int(n, "spatial", 1, &spatial, c->err)))
		return rc;
	if (n->opset >= 14 &&
	    (rc = es_node_attr_int(n, "training_mode", 0, &training, c->err)))
		return rc;
	/*
	 * Before opset 14, training was implied by the extra outputs (mean,
	 * var, saved_mean, saved_var) with semantics the spec never pinned
	 * down. We run inference; extra outputs that nobody reads are filled
	 * with the running statistics, ones that are read are refused.
	 */
	if (!training) {
		for (int i = 1; i < n->n_outputs; i++) {
			int v = n->outputs[i];
			if (v < 0)
				continue;
			const es_value *val = &c->graph->values[v];
			if (val->n_consumers > 0 || val->is_output)
				return es_error_set(c->err,
					n->opset >= 14 ? ES_EINVAL : ES_EUNSUPPORTED,
					"node '%s' (BatchNormalization): output %d ('%s') is only defined in training mode, %s",
					n->name, i, val->name,
					n->opset >= 14 ? "and training_mode is 0"
						       : "which is not supported before opset 14");
		}
	}
	bn_state *st = es_op_state_alloc(c, sizeof(*st));
	if (!st)
		return ES_ENOMEM;
	st->epsilon = eps;
	st->momentum = momentum;
	st->spatial = spatial != 0;
	st->training = training != 0;
	*state = st;
	return 0;
}

static int bn_run(es_kctx *k)
{
	const bn_state *st = k->state;
	const es_tensor *X = es_kin(k, 0);
	static const char *const names[5] = { "X", "scale", "B", "mean", "var" };
	const es_tensor *p[5];
	char sx[192], sp[192];
	int rc;

	if (!es_op_is_float(X->dtype))
		return es_kctx_fail(k, ES_ETYPE, "input X type %s is not supported",
				    es_dtype_name(X->dtype));
	if (!es_op_dims_fit(X))
		return es_kctx_fail(k, ES_ERANGE, "input X has too many elements");
	if (X->ndim < 2)
		return es_kctx_fail(k, ES_ESHAPE, "input X %s must have rank >= 2 (N, C, ...)",
				    es_op_fmt_shape(sx, sizeof(sx), X));
	int64_t N = X->dims[0], C = X->dims[1], S = 1;
	for (int d = 2; d < X->ndim; d++)
		S *= X->dims[d];
	/* per channel, or per activation (C x D1 x ... Dn) when !spatial */
	int64_t P = st->spatial ? C : C * S;
	for (int i = 1; i < 5; i++) {
		p[i] = es_kin(k, i);
		if (!p[i])
			return es_kctx_fail(k, ES_EINVAL, "input %s is missing", names[i]);
		if (!es_op_is_float(p[i]->dtype))
			return es_kctx_fail(k, ES_ETYPE, "input %s type %s is not supported",
					    names[i], es_dtype_name(p[i]->dtype));
		if (!es_op_dims_fit(p[i]) || es_tensor_numel(p[i]) != P ||
		    (st->spatial && p[i]->ndim != 1))
			return es_kctx_fail(k, ES_ESHAPE,
				"input %s %s does not match X %s: expected %s%" PRId64 " values",
				names[i], es_op_fmt_shape(sp, sizeof(sp), p[i]),
				es_op_fmt_shape(sx, sizeof(sx), X),
				st->spatial ? "one per channel, " : "one per activation, ", P);
	}
	if (st->training && !st->spatial)
		return es_kctx_fail(k, ES_EUNSUPPORTED, "training mode with spatial=0");

	if ((rc = output_like(k, X)))
		return rc;
	double *scale = load_param(k, p[1]), *bias = load_param(k, p[2]);
	double *mean = load_param(k, p[3]), *var = load_param(k, p[4]);
	double *a = es_op_scratch(k, 2 * P, sizeof(double));
	if (!scale || !bias || !mean || !var || !a)
		return k->err->code;
	double *b = a + P;
	work w;
	if ((rc = work_begin(k, X, k->outputs[0], &w)))
		return rc;

	double *cur_mean = NULL, *cur_var = NULL;
	if (st->training) {
		cur_mean = es_op_scratch(k, 2 * C, sizeof(double));
		if (!cur_mean)
			return k->err->code;
		cur_var = cur_mean + C;
		int threads = k->threads;
		ES_PARALLEL_FOR(threads, N * C * S > 16384, c, C, {
			/* mean and population variance over N x S, two-pass */
			double s = 0, ss = 0, m, v;
			for (int64_t n = 0; n < N; n++) {
				ROW_STATS(&w, (n * C + c) * S, S, &m, &v);
				s += m * (double)S;
			}
			double cnt = (double)N * (double)S;
			m = cnt > 0 ? s / cnt : 0;
			for (int64_t n = 0; n < N; n++) {
				double rm, rv;
				ROW_STATS(&w, (n * C + c) * S, S, &rm, &rv);
				/* combine row variances around the global mean */
				ss += (rv + (rm - m) * (rm - m)) * (double)S;
			}
			cur_mean[c] = m;
			cur_var[c] = cnt > 0 ? ss / cnt : 0;
		});
	}
	for (int64_t i = 0; i < P; i++) {
		double m = st->training ? cur_mean[i] : mean[i];
		double v = st->training ? cur_var[i] : var[i];
		a[i] = scale[i] / sqrt(v + st->epsilon);
		b[i] = bias[i] - m * a[i];
	}

	int threads = k->threads;
	bool per_elem = !st->spatial;
	ES_PARALLEL_FOR(threads, N * C * S > 16384, nc, N * C, {
		int64_t c = nc % C;
		int64_t pi = per_elem ? c * S : c;
		AFFINE(&w, nc * S, S, a + pi, b + pi, per_elem);
	});
	work_end(&w);

	/* running_mean, running_var (and before 14: saved_mean, saved_var) */
	for (int o = 1; o < k->n_outputs && o < 5; o++) {
		if (!es_op_has_output(k, o))
			continue;
		const es_tensor *src = p[o == 1 || o == 3 ? 3 : 4];
		if ((rc = es_kctx_output(k, o, src->dtype, src->ndim, src->dims)))
			return rc;
		es_tensor *out = k->outputs[o];
		for (int64_t i = 0; i < P; i++) {
			double run = o == 1 || o == 3 ? mean[i] : var[i];
			if (st->training) {
				double cur = o == 1 ? cur_mean[i] : cur_var[i];
				run = run * st->momentum + cur * (1.0 - st->momentum);
			}
			es_op_store_f64(out->dtype, out->data, i, run);
		}
	}
	return 0;
}

/* ---- InstanceNormalization --------------------------------------------- */

typedef struct eps_state {
	float epsilon;
} eps_state;

static int instnorm_init(es_op_init_ctx *c, void **state)
{
	float eps;
	int rc;
	if ((rc = es_node_attr_float(c->node, "epsilon", 1e-5f, &eps, c->err)) ||
	    (rc = check_epsilon(c, eps)))
		return rc;
	eps_state *st = es_op_state_alloc(c, sizeof(*st));
	if (!st)
		return ES_ENOMEM;
	st->epsilon = eps;
	*state = st;
	return 0;
}

static int instnorm_run(es_kctx *k)
{
	const eps_state *st = k->state;
	const es_tensor *X = es_kin(k, 0), *sc = es_kin(k, 1), *bi = es_kin(k, 2);
	char sx[192], sp[192], sb[192];
	int rc;

	if (!es_op_is_float(X->dtype) || !es_op_is_float(sc->dtype) ||
	    !es_op_is_float(bi->dtype))
		return es_kctx_fail(k, ES_ETYPE, "types %s, %s, %s are not supported",
				    es_dtype_name(X->dtype), es_dtype_name(sc->dtype),
				    es_dtype_name(bi->dtype));
	if (!es_op_dims_fit(X))
		return es_kctx_fail(k, ES_ERANGE, "input X has too many elements");
	if (X->ndim < 2)
		return es_kctx_fail(k, ES_ESHAPE, "input %s must have rank >= 2 (N, C, ...)",
				    es_op_fmt_shape(sx, sizeof(sx), X));
	int64_t N = X->dims[0], C = X->dims[1], S = 1;
	for (int d = 2; d < X->ndim; d++)
		S *= X->dims[d];
	if (sc->ndim != 1 || sc->dims[0] != C || bi->ndim != 1 || bi->dims[0] != C)
		return es_kctx_fail(k, ES_ESHAPE,
			"scale %s and B %s must both be [%" PRId64 "] for input %s",
			es_op_fmt_shape(sp, sizeof(sp), sc), es_op_fmt_shape(sb, sizeof(sb), bi),
			C, es_op_fmt_shape(sx, sizeof(sx), X));
	if ((rc = output_like(k, X)))
		return rc;
	double *scale = load_param(k, sc), *bias = load_param(k, bi);
	if (!scale || !bias)
		return k->err->code;
	work w;
	if ((rc = work_begin(k, X, k->outputs[0], &w)))
		return rc;
	int threads = k->threads;
	ES_PARALLEL_FOR(threads, N * C * S > 16384, nc, N * C, {
		int64_t c = nc % C;
		double m, v;
		ROW_STATS(&w, nc * S, S, &m, &v);
		double a = scale[c] / sqrt(v + st->epsilon);
		double b = bias[c] - m * a;
		AFFINE(&w, nc * S, S, &a, &b, false);
	});
	work_end(&w);
	return 0;
}

/* ---- LayerNormalization ------------------------------------------------ */

typedef struct ln_state {
	int64_t axis;
	float epsilon;
	es_dtype stash; /* type of Mean and InvStdDev */
} ln_state;

static int ln_init(es_op_init_ctx *c, void **state)
{
	const es_node *n = c->node;
	int64_t axis, stash;
	float eps;
	int rc;
	if ((rc = es_node_attr_int(n, "axis", -1, &axis, c->err)) ||
	    (rc = es_node_attr_float(n, "epsilon", 1e-5f, &eps, c->err)) ||
	    (rc = es_node_attr_int(n, "stash_type", ES_DT_FLOAT, &stash, c->err)) ||
	    (rc = check_epsilon(c, eps)))
		return rc;
	if (axis < -ES_MAX_DIMS || axis > ES_MAX_DIMS)
		return es_error_set(c->err, ES_EINVAL,
			"node '%s' (LayerNormalization): attribute 'axis' = %" PRId64 " is outside [-%d, %d]",
			n->name, axis, ES_MAX_DIMS, ES_MAX_DIMS);
	if (stash != ES_DT_FLOAT && stash != ES_DT_DOUBLE &&
	    stash != ES_DT_FLOAT16 && stash != ES_DT_BFLOAT16)
		return es_error_set(c->err, ES_EINVAL,
			"node '%s' (LayerNormalization): attribute 'stash_type' = %" PRId64 " is not a floating-point type",
			n->name, stash);
	ln_state *st = es_op_state_alloc(c, sizeof(*st));
	if (!st)
		return ES_ENOMEM;
	st->axis = axis;
	st->epsilon = eps;
	st->stash = (es_dtype)stash;
	*state = st;
	return 0;
}

/*
 * Broadcasts parameter t (trailing-aligned, numpy rules, unidirectional)
 * to the trailing dims X[start:], start <= axis chosen so t fits, and
 * returns it as `*block_len` doubles: element e of X uses [e % block_len].
 */
static double *ln_param(es_kctx *k, const es_tensor *t, const es_tensor *X,
			int64_t axis, const char *name, int64_t *block_len)
{
	char st_[192], sx[192];
	int r = X->ndim;
	if (t->ndim > r)
		goto bad;
	int start = r - t->ndim < axis ? r - t->ndim : (int)axis;
	int64_t len = 1;
	for (int d = start; d < r; d++) {
		int td = d - (r - t->ndim);
		if (td >= 0 && t->dims[td] != 1 && t->dims[td] != X->dims[d])
			goto bad;
		len *= X->dims[d];
	}
	double *out = es_op_scratch(k, len, sizeof(double));
	if (!out)
		return NULL;
	/* walk the block with an odometer; source strides are 0 on
	 * broadcast dims */
	int64_t idx[ES_MAX_DIMS] = { 0 }, sstride[ES_MAX_DIMS] = { 0 };
	int64_t acc = 1;
	for (int d = r - 1; d >= start; d--) {
		int td = d - (r - t->ndim);
		if (td >= 0 && t->dims[td] != 1)
			sstride[d] = acc;
		if (td >= 0)
			acc *= t->dims[td];
	}
	int64_t src = 0;
	for (int64_t e = 0; e < len; e++) {
		out[e] = es_op_load_f64(t->dtype, t->data, src);
		for (int d = r - 1; d >= start; d--) {
			src += sstride[d];
			if (++idx[d] < X->dims[d])
				break;
			src -= sstride[d] * idx[d];
			idx[d] = 0;
		}
	}
	*block_len = len;
	return out;
bad:
	es_kctx_fail(k, ES_ESHAPE, "input %s %s cannot be broadcast to X %s normalised from axis %" PRId64,
		     name, es_op_fmt_shape(st_, sizeof(st_), t),
		     es_op_fmt_shape(sx, sizeof(sx), X), axis);
	return NULL;
}

/*
 * The float fast path: X, Scale and B float, Scale and B exactly one value
 * per element of a normalised row (no broadcasting inside the row). One
 * pass gathers the row's sums of x - x[0] and of its squares (shifting by
 * a sample of the row keeps the variance from cancelling when the mean is
 * large against the spread), eight lanes at a time; lane sums are moved
 * into double every 512 elements so long rows do not lose precision. A
 * second pass writes (x - mean) * inv * scale + bias. Built once for
 * AVX2+FMA and once for the baseline ISA.
 */
typedef float v8f __attribute__((vector_size(32)));
/* always inlined into both builds below: no vector crosses a call */
#pragma GCC diagnostic ignored "-Wpsabi"

static inline __attribute__((always_inline)) void
ln_rows_body(const float *x, float *y, int64_t rows, int64_t D,
	     const float *scale, const float *bias, float eps, float *mean_out,
	     float *inv_out)
{
	for (int64_t o = 0; o < rows; o++, x += D, y += D) {
		double s1 = 0, s2 = 0;
		float x0 = x[0];
		v8f vx0 = (v8f){ 0 } + x0;
		int64_t i = 0;
		while (i + 8 <= D) {
			v8f a1 = { 0 }, a2 = { 0 };
			int64_t stop = i + 512 < D ? i + 512 : D;
			for (; i + 8 <= stop; i += 8) {
				v8f v;
				memcpy(&v, x + i, sizeof(v));
				v -= vx0;
				a1 += v;
				a2 += v * v;
			}
			for (int l = 0; l < 8; l++) {
				s1 += a1[l];
				s2 += a2[l];
			}
		}
		for (; i < D; i++) {
			double d = (double)x[i] - x0;
			s1 += d;
			s2 += d * d;
		}
		double dm = s1 / (double)D;
		double var = s2 / (double)D - dm * dm;
		if (var < 0)
			var = 0;
		/* centre as (x - x0) - dm: x - x0 is exact for nearby values,
		 * while a mean rounded to float far from zero is not */
		float dmf = (float)dm;
		float inv = (float)(1.0 / sqrt(var + eps));
		v8f vdm = (v8f){ 0 } + dmf, vi = (v8f){ 0 } + inv;
		for (i = 0; i + 8 <= D; i += 8) {
			v8f v, sc, b = { 0 };
			memcpy(&v, x + i, sizeof(v));
			memcpy(&sc, scale + i, sizeof(sc));
			if (bias)
				memcpy(&b, bias + i, sizeof(b));
			v = ((v - vx0) - vdm) * vi * sc + b;
			memcpy(y + i, &v, sizeof(v));
		}
		for (; i < D; i++)
			y[i] = ((x[i] - x0) - dmf) * inv * scale[i] + (bias ? bias[i] : 0.0f);
		if (mean_out) {
			mean_out[o] = (float)(x0 + dm);
			inv_out[o] = inv;
		}
	}
}

__attribute__((target("avx2,fma")))
static void ln_rows_avx2(const float *x, float *y, int64_t rows, int64_t D,
			 const float *scale, const float *bias, float eps,
			 float *mean_out, float *inv_out)
{
	ln_rows_body(x, y, rows, D, scale, bias, eps, mean_out, inv_out);
}

static void ln_rows_base(const float *x, float *y, int64_t rows, int64_t D,
			 const float *scale, const float *bias, float eps,
			 float *mean_out, float *inv_out)
{
	ln_rows_body(x, y, rows, D, scale, bias, eps, mean_out, inv_out);
}

/* True when parameter t holds exactly one value per element of a row of
 * the D elements X[axis:] in X's own order (its dims are X's trailing
 * dims, leading ones of the row may be absent). */
static bool ln_param_is_row(const es_tensor *t, const es_tensor *X,
			    int64_t axis, int64_t D)
{
	if (t->dtype != ES_DT_FLOAT || t->ndim > X->ndim - axis ||
	    es_tensor_numel(t) != D)
		return false;
	for (int d = 0; d < t->ndim; d++)
		if (t->dims[d] != X->dims[X->ndim - t->ndim + d])
			return false;
	return true;
}

/* Runs the fast path when it applies; returns 1 when it did not (the
 * general kernel then runs), 0 or an error code otherwise. */
static int ln_run_f32(es_kctx *k, const ln_state *st, const es_tensor *X,
		      const es_tensor *sc, const es_tensor *bi, int64_t axis,
		      int64_t outer, int64_t D)
{
	int rc;
	if (X->dtype != ES_DT_FLOAT || D == 0 || st->stash != ES_DT_FLOAT ||
	    !ln_param_is_row(sc, X, axis, D) ||
	    (bi && !ln_param_is_row(bi, X, axis, D)))
		return 1;
	if ((rc = output_like(k, X)))
		return rc;
	float *stats[2] = { NULL, NULL };
	int64_t sdims[ES_MAX_DIMS];
	for (int d = 0; d < X->ndim; d++)
		sdims[d] = d < axis ? X->dims[d] : 1;
	for (int i = 1; i <= 2 && i < k->n_outputs; i++) {
		if ((rc = es_kctx_output(k, i, ES_DT_FLOAT, X->ndim, sdims)))
			return rc;
		stats[i - 1] = k->outputs[i]->data;
	}
	if (stats[0] && !stats[1]) {
		stats[1] = es_op_scratch(k, outer, sizeof(float));
		if (!stats[1])
			return k->err->code;
	}
	const float *x = X->data, *scale = sc->data;
	const float *bias = bi ? bi->data : NULL;
	float *y = k->outputs[0]->data;
	bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
	bool par = k->threads > 1 && outer > 1 && outer * D > 16384;
	int team = par ? k->threads : 1;
	float eps = st->epsilon;
	ES_PARALLEL_REGION(team, par, {
		int nt = par ? omp_get_num_threads() : 1;
		int id = par ? omp_get_thread_num() : 0;
		int64_t lo = outer * id / nt, hi = outer * (id + 1) / nt;
		float *m = stats[0] ? stats[0] + lo : NULL;
		float *iv = stats[0] ? stats[1] + lo : NULL;
		if (avx2)
			ln_rows_avx2(x + lo * D, y + lo * D, hi - lo, D, scale,
				     bias, eps, m, iv);
		else
			ln_rows_base(x + lo * D, y + lo * D, hi - lo, D, scale,
				     bias, eps, m, iv);
	});
	return 0;
}

static int ln_run(es_kctx *k)
{
	const ln_state *st = k->state;
	const es_tensor *X = es_kin(k, 0), *sc = es_kin(k, 1), *bi = es_kin(k, 2);
	char sx[192];
	int rc;

	if (!es_op_is_float(X->dtype) || !es_op_is_float(sc->dtype) ||
	    (bi && !es_op_is_float(bi->dtype)))
		return es_kctx_fail(k, ES_ETYPE, "types X %s, Scale %s, B %s are not supported",
				    es_dtype_name(X->dtype), es_dtype_name(sc->dtype),
				    bi ? es_dtype_name(bi->dtype) : "absent");
	if (!es_op_dims_fit(X))
		return es_kctx_fail(k, ES_ERANGE, "input X has too many elements");
	int r = X->ndim;
	int64_t axis = st->axis;
	if (axis < -r || axis > r)
		return es_kctx_fail(k, ES_EINVAL,
			"attribute 'axis' = %" PRId64 " is outside [%d, %d] for X %s",
			axis, -r, r, es_op_fmt_shape(sx, sizeof(sx), X));
	if (axis < 0)
		axis += r;
	int64_t outer = 1, D = 1;
	for (int d = 0; d < r; d++) {
		if (d < axis)
			outer *= X->dims[d];
		else
			D *= X->dims[d];
	}
	if ((rc = ln_run_f32(k, st, X, sc, bi, axis, outer, D)) <= 0)
		return rc;
	int64_t sdims[ES_MAX_DIMS];
	for (int d = 0; d < r; d++)
		sdims[d] = d < axis ? X->dims[d] : 1;

	int64_t slen, blen = 1;
	double *scale = ln_param(k, sc, X, axis, "Scale", &slen);
	double *bias = bi ? ln_param(k, bi, X, axis, "B", &blen) : NULL;
	if (!scale || (bi && !bias))
		return k->err->code;
	if ((rc = output_like(k, X)))
		return rc;
	/* Mean and InvStdDev in the stash type; scratch when the node does
	 * not list them */
	es_tensor stats[2];
	for (int i = 1; i <= 2; i++) {
		if (i < k->n_outputs) {
			if ((rc = es_kctx_output(k, i, st->stash, r, sdims)))
				return rc;
			stats[i - 1] = *k->outputs[i];
		} else {
			stats[i - 1] = (es_tensor){ .dtype = st->stash };
			stats[i - 1].data = es_op_scratch(k, outer, es_dtype_size(st->stash));
			if (!stats[i - 1].data)
				return k->err->code;
		}
	}
	es_tensor *Y = k->outputs[0], *Mean = &stats[0], *Inv = &stats[1];
	work w;
	if ((rc = work_begin(k, X, Y, &w)))
		return rc;
	int threads = k->threads;
	ES_PARALLEL_FOR(threads, outer * D > 16384, o, outer, {
		double m, v;
		ROW_STATS(&w, o * D, D, &m, &v);
		double inv = 1.0 / sqrt(v + st->epsilon);
		/* rows start at a multiple of D inside the parameter blocks
		 * (both lengths are 0 only when D is) */
		const double *s_row = D ? scale + (o * D) % slen : scale;
		const double *b_row = bias && D ? bias + (o * D) % blen : bias;
		NORM_ROW(&w, o * D, D, m, inv, s_row, b_row);
		es_op_store_f64(Mean->dtype, Mean->data, o, m);
		es_op_store_f64(Inv->dtype, Inv->data, o, inv);
	});
	work_end(&w);
	return 0;
}

/* ---- LpNormalization --------------------------------------------------- */

typedef struct lp_state {
	int64_t axis;
	int p;
} lp_state;

static int lp_init(es_op_init_ctx *c, void **state)
{
	const es_node *n = c->node;
	int64_t axis, p;
	int rc;
	if ((rc = es_node_attr_int(n, "axis", -1, &axis, c->err)) ||
	    (rc = es_node_attr_int(n, "p", 2, &p, c->err)))
		return rc;
	if (p != 1 && p != 2)
		return es_error_set(c->err, ES_EINVAL,
			"node '%s' (LpNormalization): attribute 'p' = %" PRId64 " must be 1 or 2",
			n->name, p);
	if (axis < -ES_MAX_DIMS || axis >= ES_MAX_DIMS)
		return es_error_set(c->err, ES_EINVAL,
			"node '%s' (LpNormalization): attribute 'axis' = %" PRId64 " is out of range",
			n->name, axis);
	lp_state *st = es_op_state_alloc(c, sizeof(*st));
	if (!st)
		return ES_ENOMEM;
	st->axis = axis;
	st->p = (int)p;
	*state = st;
	return 0;
}

static int lp_run(es_kctx *k)
{
	const lp_state *st = k->state;
	const es_tensor *X = es_kin(k, 0);
	char sx[192];
	int rc;
	if (!es_op_is_float(X->dtype))
		return es_kctx_fail(k, ES_ETYPE, "input type %s is not supported",
				    es_dtype_name(X->dtype));
	if (!es_op_dims_fit(X))
		return es_kctx_fail(k, ES_ERANGE, "input X has too many elements");
	int r = X->ndim;
	int axis;
	if (!es_op_norm_axis(st->axis, r, &axis))
		return es_kctx_fail(k, ES_EINVAL,
			"attribute 'axis' = %" PRId64 " is outside [%d, %d] for input %s",
			st->axis, -r, r - 1, es_op_fmt_shape(sx, sizeof(sx), X));
	int64_t outer = 1, n = X->dims[axis], inner = 1;
	for (int d = 0; d < r; d++) {
		if (d < axis)
			outer *= X->dims[d];
		else if (d > axis)
			inner *= X->dims[d];
	}
	if ((rc = output_like(k, X)))
		return rc;
	work w;
	if ((rc = work_begin(k, X, k->outputs[0], &w)))
		return rc;
	if (w.wide)
		lp_f64(w.x, w.y, outer, n, inner, st->p, k->threads);
	else
		lp_f32(w.x, w.y, outer, n, inner, st->p, k->threads);
	work_end(&w);
	return 0;
}

/* ---- MeanVarianceNormalization ----------------------------------------- */

typedef struct mvn_state {
	size_t n_axes;
	int64_t axes[ES_MAX_DIMS];
} mvn_state;

static int mvn_init(es_op_init_ctx *c, void **state)
{
	const int64_t *axes;
	size_t n_axes;
	static const int64_t def_axes[] = { 0, 2, 3 };
	int rc = es_node_attr_ints(c->node, "axes", &axes, &n_axes, c->err);
	if (rc)
		return rc;
	if (!es_node_attr(c->node, "axes")) {
		axes = def_axes;
		n_axes = 3;
	}
	if (n_axes > ES_MAX_DIMS)
		return es_error_set(c->err, ES_EINVAL,
			"node '%s' (MeanVarianceNormalization): %zu axes, at most %d",
			c->node->name, n_axes, ES_MAX_DIMS);
	mvn_state *st = es_op_state_alloc(c, sizeof(*st));
	if (!st)
		return ES_ENOMEM;
	st->n_axes = n_axes;
	memcpy(st->axes, axes, n_axes * sizeof(int64_t));
	*state = st;
	return 0;
}

/*
 * Y = (X - mean) / (sqrt(var) + 1e-9) with statistics over `axes`, as the
 * ONNX function body defines it. Each group (one index of the kept dims)
 * has its own mean and variance.
 */
static int mvn_run(es_kctx *k)
{
	const mvn_state *st = k->state;
	const es_tensor *X = es_kin(k, 0);
	char sx[192];
	int rc;
	if (!es_op_is_float(X->dtype))
		return es_kctx_fail(k, ES_ETYPE, "input type %s is not supported",
				    es_dtype_name(X->dtype));
	if (!es_op_dims_fit(X))
		return es_kctx_fail(k, ES_ERANGE, "input X has too many elements");
	int r = X->ndim;
	bool reduce[ES_MAX_DIMS] = { false };
	for (size_t i = 0; i < st->n_axes; i++) {
		int a;
		if (!es_op_norm_axis(st->axes[i], r, &a))
			return es_kctx_fail(k, ES_EINVAL,
				"axis %" PRId64 " of attribute 'axes' is outside [%d, %d] for input %s",
				st->axes[i], -r, r - 1, es_op_fmt_shape(sx, sizeof(sx), X));
		reduce[a] = true;
	}
	/* group strides: dense over the kept dims, 0 on reduced dims */
	int64_t gstride[ES_MAX_DIMS], groups = 1;
	for (int d = r - 1; d >= 0; d--) {
		gstride[d] = reduce[d] ? 0 : groups;
		if (!reduce[d])
			groups *= X->dims[d];
	}
	int64_t total = es_tensor_numel(X);
	if ((rc = output_like(k, X)))
		return rc;
	if (total == 0)
		return 0;
	double *mean = es_op_scratch(k, 3 * groups, sizeof(double));
	if (!mean)
		return k->err->code;
	double *m2 = mean + groups, *cnt = m2 + groups;
	for (int64_t g = 0; g < 3 * groups; g++)
		mean[g] = 0;
	work w;
	if ((rc = work_begin(k, X, k->outputs[0], &w)))
		return rc;

	/* three passes over X in order, tracking each element's group */
	for (int pass = 0; pass < 3; pass++) {
		int64_t idx[ES_MAX_DIMS] = { 0 }, g = 0;
		for (int64_t e = 0; e < total; e++) {
			double x = w.wide ? ((const double *)w.x)[e]
					  : ((const float *)w.x)[e];
			if (pass == 0) {
				mean[g] += x;
				cnt[g] += 1;
			} else if (pass == 1) {
				double d = x - mean[g];
				m2[g] += d * d;
			} else {
				double y = (x - mean[g]) * m2[g];
				if (w.wide)
					((double *)w.y)[e] = y;
				else
					((float *)w.y)[e] = (float)y;
			}
			for (int d = r - 1; d >= 0; d--) {
				g += gstride[d];
				if (++idx[d] < X->dims[d])
					break;
				g -= gstride[d] * idx[d];
				idx[d] = 0;
			}
		}
		for (int64_t gi = 0; gi < groups && pass < 2; gi++) {
			if (pass == 0) {
				mean[gi] = cnt[gi] > 0 ? mean[gi] / cnt[gi] : 0;
			} else {
				double var = cnt[gi] > 0 ? m2[gi] / cnt[gi] : 0;
				/* m2 now holds the scale 1 / (std + eps) */
				m2[gi] = 1.0 / (sqrt(var) + 1e-9);
			}
		}
	}
	work_end(&w);
	return 0;
}

/* ---- table ------------------------------------------------------------- */

#define NORM_T_OLD (ES_T(ES_DT_FLOAT16) | ES_T(ES_DT_FLOAT) | ES_T(ES_DT_DOUBLE))
#define NORM_T_NEW (NORM_T_OLD | ES_T(ES_DT_BFLOAT16))

#define ROW(op, since_, until_, min_in, max_in, max_out, types_, same_, init_, run_) \
	{ .op_type = op, .since = since_, .until = until_,                \
	  .min_inputs = min_in, .max_inputs = max_in, .min_outputs = 1,   \
	  .max_outputs = max_out, .types = types_,                        \
	  .same_type_inputs = same_, .out_type = ES_OUT_SAME,             \
	  .init = init_, .fini = es_op_state_free, .run = run_ }

static const es_op_def defs[] = {
	/* 1, 6: is_test and spatial; 7: spatial; 9: per channel only;
	 * 14: training_mode, 3 outputs; 15: scale/B and mean/var may have
	 * their own types */
	ROW("BatchNormalization", 1, 8, 5, 5, 5, NORM_T_OLD, 0x1f, bn_init, bn_run),
	ROW("BatchNormalization", 9, 13, 5, 5, 5, NORM_T_OLD, 0x1f, bn_init, bn_run),
	ROW("BatchNormalization", 14, 14, 5, 5, 3, NORM_T_NEW, 0x7, bn_init, bn_run),
	ROW("BatchNormalization", 15, 0, 5, 5, 3, NORM_T_NEW, 0x1, bn_init, bn_run),
	ROW("InstanceNormalization", 1, 0, 3, 3, 1, NORM_T_OLD, 0x7, instnorm_init, instnorm_run),
	ROW("LayerNormalization", 17, 0, 2, 3, 3, NORM_T_NEW, 0x7, ln_init, ln_run),
	/* the optimizer's fused LayerNormalization for models below opset 17
	 * (fuse_norm.c): the same operator and kernel */
	{ .domain = ES_DOMAIN, .op_type = "LayerNormalization", .since = 1,
	  .min_inputs = 2, .max_inputs = 3, .min_outputs = 1, .max_outputs = 3,
	  .types = NORM_T_NEW, .same_type_inputs = 0x7, .out_type = ES_OUT_SAME,
	  .init = ln_init, .fini = es_op_state_free, .run = ln_run },
	ROW("LpNormalization", 1, 0, 1, 1, 1, NORM_T_OLD, 0x1, lp_init, lp_run),
	ROW("MeanVarianceNormalization", 9, 12, 1, 1, 1, NORM_T_OLD, 0x1, mvn_init, mvn_run),
	ROW("MeanVarianceNormalization", 13, 0, 1, 1, 1, NORM_T_NEW, 0x1, mvn_init, mvn_run),
};

const es_op_table es_ops_norm = { defs, sizeof(defs) / sizeof(defs[0]) };
