/*
 * Operator family: pool (MaxPool, AveragePool, LpPool and their Global
 * forms), opsets 1..17 (and the later ceil_mode/dilations attributes).
 *
 * Plain C loops, parallel over the N*C planes. Problems are normalised to
 * three spatial dims by prepending unit dims (global pools flatten all
 * spatial dims into one), so one triple loop serves 1-D, 2-D and 3-D.
 * float and double compute directly; float16, int8 and uint8 go through
 * double scratch and back.
 *
 * The ES_DOMAIN forms of MaxPool, AveragePool, GlobalMaxPool and
 * GlobalAveragePool take the same attributes plus channels_last (0/1):
 * with 1, X and Y are float (N, H, W, C) (2-D kernels only, no Indices)
 * and the loops run over contiguous channels (the optimizer's layout
 * pass, opt/layout.c, makes them).
 *
 * Output size (NOTSET/VALID): floor or, with ceil_mode, ceil of
 * (in + pads - dilated kernel) / stride, plus 1; in ceil mode a last window
 * that would start in the end padding is dropped (the ONNX shape inference
 * rule since onnx 1.16, same as PyTorch). SAME_*: ceil(in / stride), the
 * total padding split with the odd element at the end (UPPER) or at the
 * beginning (LOWER).
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/fp16.h"
#include "engine/ops/families.h"
#include "engine/ops/op_util.h"
#include "engine/opt/opt.h"

#define MAX_SP 3 /* spatial dims of non-global pools */

enum pool_kind { POOL_MAX, POOL_AVG, POOL_LP };

struct pool_state {
	enum pool_kind kind;
	bool global;
	int nsp; /* from kernel_shape; 0 for global pools */
	int64_t kernel[MAX_SP];
	int64_t strides[MAX_SP];
	int64_t dilations[MAX_SP];
	int64_t pads[2 * MAX_SP];
	es_auto_pad auto_pad;
	bool ceil_mode;
	bool count_include_pad;
	bool col_major; /* storage_order 1: Indices count column-major */
	double p;       /* LpPool */
	bool channels_last; /* ES_DOMAIN forms: X and Y are (N, H, W, C) */
};

/* A problem normalised to three spatial dims. */
struct pool_geom {
	enum pool_kind kind;
	bool count_include_pad;
	bool col_major;
	double p;
	int64_t planes; /* N * C */
	int64_t in[3], out[3], k[3], s[3], dil[3], pb[3], pe[3];
	int64_t sp_in, sp_out;
};

/* ---- compute -------------------------------------------------------------- */

/* Valid taps [*j0, *j1) of a window starting at `start` over an axis of
 * size `in`, and how many taps fall inside the padded extent
 * [-pb, in + pe) (for count_include_pad; windows never start before -pb). */
static inline void window(int64_t start, int64_t in, int64_t k, int64_t dil,
			  int64_t pe, int64_t *j0, int64_t *j1, int64_t *padded)
{
	if (start >= 0 && start + (k - 1) * dil < in) { /* interior: no division */
		*j0 = 0;
		*j1 = k;
		*padded = k;
		return;
	}
	int64_t a = start >= 0 ? 0 : (-start + dil - 1) / dil;
	int64_t b = start >= in ? 0 : (in - start + dil - 1) / dil;
	int64_t hi = in + pe - start;
	int64_t c = hi <= 0 ? 0 : (hi + dil - 1) / dil;
	if (b > k)
		b = k;
	if (c > k)
		c = k;
	*j0 = a;
	*j1 = b > a ? b : a;
	*padded = c;
}

/* Flat input-plane index of (d, h, w) in the requested storage order. */
static inline int64_t flat_index(const struct pool_geom *g, int64_t d,
				 int64_t h, int64_t w)
{
	if (!g->col_major)
		return (d * g->in[1] + h) * g->in[2] + w;
	/* column-major over the original axes (the unit axes prepended
	 * for normalisation have coordinate 0): w varies slowest */
	return w * g->in[0] * g->in[1] + h * g->in[0] + d;
}

#define DEFINE_POOL_PLANE(NAME, T)                                            \
	static void NAME(const struct pool_geom *g, const T *x, T *y,         \
			 int64_t *ind, int64_t plane)                         \
	{                                                                     \
		const T *xp = x + plane * g->sp_in;                           \
		T *yp = y + plane * g->sp_out;                                \
		int64_t *ip = ind ? ind + plane * g->sp_out : NULL;           \
		const int64_t H = g->in[1], W = g->in[2];                     \
		int64_t o = 0;                                                \
		for (int64_t od = 0; od < g->out[0]; od++)                    \
		for (int64_t oh = 0; oh < g->out[1]; oh++)                    \
		for (int64_t ow = 0; ow < g->out[2]; ow++, o++) {             \
			int64_t sd = od * g->s[0] - g->pb[0];                 \
			int64_t sh = oh * g->s[1] - g->pb[1];                 \
			int64_t sw = ow * g->s[2] - g->pb[2];                 \
			int64_t d0, d1, h0, h1, w0, w1, cd, ch, cw;           \
			window(sd, g->in[0], g->k[0], g->dil[0], g->pe[0], &d0, &d1, &cd); \
			window(sh, g->in[1], g->k[1], g->dil[1], g->pe[1], &h0, &h1, &ch); \
			window(sw, g->in[2], g->k[2], g->dil[2], g->pe[2], &w0, &w1, &cw); \
			switch (g->kind) {                                    \
			case POOL_MAX: {                                      \
				T best = (T)-INFINITY;                        \
				int64_t bi = -1;                              \
				for (int64_t jd = d0; jd < d1; jd++)          \
				for (int64_t jh = h0; jh < h1; jh++) {        \
					int64_t id = sd + jd * g->dil[0];     \
					int64_t ih = sh + jh * g->dil[1];     \
					const T *row = xp + (id * H + ih) * W + sw; \
					if (!ip) { /* values only */          \
						for (int64_t jw = w0; jw < w1; jw++) { \
							T v = row[jw * g->dil[2]]; \
							best = v > best ? v : best; \
						}                             \
						continue;                     \
					}                                     \
					for (int64_t jw = w0; jw < w1; jw++) { \
						T v = row[jw * g->dil[2]];    \
						if (bi < 0 || v > best) {     \
							best = v;             \
							bi = flat_index(g, id, ih, sw + jw * g->dil[2]); \
						}                             \
					}                                     \
				}                                             \
				yp[o] = best; /* -inf: window all padding */  \
				if (ip)                                       \
					ip[o] = bi < 0 ? -1 : plane * g->sp_in + bi; \
				break;                                        \
			}                                                     \
			case POOL_AVG:                                        \
			case POOL_LP: {                                       \
				double acc = 0;                               \
				for (int64_t jd = d0; jd < d1; jd++)          \
				for (int64_t jh = h0; jh < h1; jh++) {        \
					int64_t id = sd + jd * g->dil[0];     \
					int64_t ih = sh + jh * g->dil[1];     \
					const T *row = xp + (id * H + ih) * W; \
					for (int64_t jw = w0; jw < w1; jw++) { \
						double v = row[sw + jw * g->dil[2]]; \
						if (g->kind == POOL_AVG)      \
							acc += v;             \
						else if (g->p == 2.0)         \
							acc += v * v;         \
						else if (g->p == 1.0)         \
							acc += fabs(v);       \
						else                          \
							acc += pow(fabs(v), g->p); \
					}                                     \
				}                                             \
				if (g->kind == POOL_LP) {                     \
					yp[o] = (T)(g->p == 2.0 ? sqrt(acc) : \
						    g->p == 1.0 ? acc :       \
						    pow(acc, 1.0 / g->p));    \
				} else {                                      \
					/* double: giant kernels cannot overflow */ \
					double cnt = g->count_include_pad ?   \
						(double)cd * ch * cw :        \
						(double)(d1 - d0) * (h1 - h0) * (w1 - w0); \
					yp[o] = (T)(cnt > 0 ? acc / cnt : 0.0); \
				}                                             \
				break;                                        \
			}                                                     \
			}                                                     \
		}                                                             \
	}

DEFINE_POOL_PLANE(pool_plane_f32, float)
DEFINE_POOL_PLANE(pool_plane_f64, double)

static bool pool_parallel(const struct pool_geom *g, int threads)
{
	double work = (double)g->planes * g->sp_out * g->k[0] * g->k[1] * g->k[2];
	return threads > 1 && g->planes > 1 && work > 32768.0;
}

static void pool_f32(const struct pool_geom *g, const float *x, float *y,
		     int64_t *ind, int threads)
{
	ES_PARALLEL_FOR(threads, pool_parallel(g, threads), p, g->planes, {
		pool_plane_f32(g, x, y, ind, p);
	});
}

static void pool_f64(const struct pool_geom *g, const double *x, double *y,
		     int64_t *ind, int threads)
{
	ES_PARALLEL_FOR(threads, pool_parallel(g, threads), p, g->planes, {
		pool_plane_f64(g, x, y, ind, p);
	});
}

/*
 * Channels-last float pooling of a 2-D (or global) problem: x is
 * (n, in[1], in[2], c), y is (n, out[1], out[2], c); the axis-0 entries of
 * g are the unit axis normalisation prepends. Each output position is a
 * row of c contiguous channels, so the inner loops run over channels,
 * which the compiler vectorises for the widest of AVX-512, AVX2 and the
 * baseline that the CPU has (one clone each, picked at load).
 */
__attribute__((target_clones("avx512f", "avx2", "default")))
static void pool_nhwc_f32(const struct pool_geom *g, const float *x, float *y,
			  int64_t n, int64_t c, int threads)
{
	enum { CB = 64 }; /* channels per block: the accumulators stay in registers */
	const int64_t H = g->in[1], W = g->in[2];
	const int64_t OH = g->out[1], OW = g->out[2];
	const int64_t positions = n * OH * OW;
	const bool is_max = g->kind == POOL_MAX;
	double work = (double)positions * c * g->k[1] * g->k[2];

	ES_PARALLEL_FOR(threads, positions > 1 && work > 32768.0, pos, positions, {
		const int64_t img = pos / (OH * OW), oh = pos / OW % OH, ow = pos % OW;
		const int64_t sh = oh * g->s[1] - g->pb[1], sw = ow * g->s[2] - g->pb[2];
		int64_t h0, h1, w0, w1, ch, cw;
		window(sh, H, g->k[1], g->dil[1], g->pe[1], &h0, &h1, &ch);
		window(sw, W, g->k[2], g->dil[2], g->pe[2], &w0, &w1, &cw);
		float scale = 1.0f;
		if (!is_max) {
			double cnt = g->count_include_pad ? (double)ch * cw :
				     (double)(h1 - h0) * (w1 - w0);
			scale = cnt > 0 ? (float)(1.0 / cnt) : 0.0f;
		}
		for (int64_t c0 = 0; c0 < c; c0 += CB) {
			const int64_t nc = c - c0 < CB ? c - c0 : CB;
			float acc[CB];
			for (int64_t j = 0; j < CB; j++)
				acc[j] = is_max ? -INFINITY : 0.0f;
			for (int64_t jh = h0; jh < h1; jh++) {
				const int64_t ih = sh + jh * g->dil[1];
				for (int64_t jw = w0; jw < w1; jw++) {
					const int64_t iw = sw + jw * g->dil[2];
					const float *xr = x + ((img * H + ih) * W + iw) * c + c0;
					if (nc == CB) {
						if (is_max)
							for (int64_t j = 0; j < CB; j++)
								acc[j] = xr[j] > acc[j] ? xr[j] : acc[j];
						else
							for (int64_t j = 0; j < CB; j++)
								acc[j] += xr[j];
					} else {
						if (is_max)
							for (int64_t j = 0; j < nc; j++)
								acc[j] = xr[j] > acc[j] ? xr[j] : acc[j];
						else
							for (int64_t j = 0; j < nc; j++)
								acc[j] += xr[j];
					}
				}
			}
			float *yr = y + pos * c + c0;
			for (int64_t j = 0; j < nc; j++)
				yr[j] = is_max ? acc[j] : acc[j] * scale;
		}
	});
}

/* ---- attributes ----------------------------------------------------------- */

static int attr_ints(const es_op_init_ctx *c, const char *name, int64_t *out,
		     int max, int *count, bool *present)
{
	const int64_t *v = NULL;
	size_t n = 0;
	int rc = es_node_attr_ints(c->node, name, &v, &n, c->err);
	if (rc)
		return rc;
	*present = n > 0; /* an empty list means the default */
	if (n > (size_t)max)
		return es_error_set(c->err, ES_EUNSUPPORTED,
				    "%s node '%s': attribute %s has %zu values; pooling over more than %d spatial dims is not supported",
				    c->node->op_type, c->node->name, name, n, MAX_SP);
	for (size_t i = 0; i < n; i++)
		out[i] = v[i];
	*count = (int)n;
	return 0;
}

static int attr_check(const es_op_init_ctx *c, const char *name,
		      const int64_t *v, int n, int want, int64_t min)
{
	if (n != want)
		return es_error_set(c->err, ES_EINVAL,
				    "%s node '%s': attribute %s has %d values, expected %d (kernel_shape has %d spatial dims)",
				    c->node->op_type, c->node->name, name, n, want,
				    strcmp(name, "pads") ? want : want / 2);
	return es_op_attr_check_min(c, name, v, n, min);
}

static int pool_init_common(es_op_init_ctx *c, void **state, enum pool_kind kind,
			    bool global)
{
	struct pool_state *st = es_op_state_alloc(c, sizeof(*st));
	const es_node *node = c->node;
	int n, rc;
	bool present;

	if (!st)
		return ES_ENOMEM;
	st->kind = kind;
	st->global = global;
	st->p = 2.0;
	for (int i = 0; i < MAX_SP; i++) {
		st->strides[i] = 1;
		st->dilations[i] = 1;
	}

	if (kind == POOL_LP) {
		/* LpPool-1 / GlobalLpPool-1 have a float p, later versions an int */
		const es_attr *a = es_node_attr(node, "p");
		if (a && a->type == ES_ATTR_INT)
			st->p = (double)a->i;
		else if (a && a->type == ES_ATTR_FLOAT)
			st->p = a->f;
		else if (a) {
			rc = es_error_set(c->err, ES_EINVAL,
					  "%s node '%s': attribute p must be an int or float",
					  node->op_type, node->name);
			goto out_fail;
		}
		if (!(st->p > 0) || !isfinite(st->p)) {
			rc = es_error_set(c->err, ES_EINVAL,
					  "%s node '%s': attribute p is %g, must be > 0",
					  node->op_type, node->name, st->p);
			goto out_fail;
		}
	}
	if (node->domain && !strcmp(node->domain, ES_DOMAIN)) {
		int64_t cl;
		if ((rc = es_node_attr_int(node, "channels_last", 0, &cl, c->err)))
			goto out_fail;
		if (cl != 0 && cl != 1) {
			rc = es_error_set(c->err, ES_EINVAL,
					  "%s node '%s': attribute channels_last is %lld, expected 0 or 1",
					  node->op_type, node->name, (long long)cl);
			goto out_fail;
		}
		st->channels_last = cl == 1;
	}
	if (global) {
		*state = st;
		return 0;
	}

	if ((rc = attr_ints(c, "kernel_shape", st->kernel, MAX_SP, &n, &present)))
		goto out_fail;
	if (!present || n < 1) {
		rc = es_error_set(c->err, ES_EINVAL,
				  "%s node '%s': attribute kernel_shape is required",
				  node->op_type, node->name);
		goto out_fail;
	}
	st->nsp = n;
	if ((rc = attr_check(c, "kernel_shape", st->kernel, n, st->nsp, 1)))
		goto out_fail;

	if ((rc = attr_ints(c, "strides", st->strides, MAX_SP, &n, &present)))
		goto out_fail;
	if (present && (rc = attr_check(c, "strides", st->strides, n, st->nsp, 1)))
		goto out_fail;
	if ((rc = attr_ints(c, "dilations", st->dilations, MAX_SP, &n, &present)))
		goto out_fail;
	if (present && (rc = attr_check(c, "dilations", st->dilations, n, st->nsp, 1)))
		goto out_fail;
	if ((rc = attr_ints(c, "pads", st->pads, 2 * MAX_SP, &n, &present)))
		goto out_fail;
	if (present && (rc = attr_check(c, "pads", st->pads, n, 2 * st->nsp, 0)))
		goto out_fail;

	if ((rc = es_op_attr_auto_pad(c, &st->auto_pad)))
		goto out_fail;

	int64_t v;
	if ((rc = es_node_attr_int(node, "ceil_mode", 0, &v, c->err)))
		goto out_fail;
	st->ceil_mode = v != 0;
	if ((rc = es_node_attr_int(node, "count_include_pad", 0, &v, c->err)))
		goto out_fail;
	st->count_include_pad = v != 0;
	if ((rc = es_node_attr_int(node, "storage_order", 0, &v, c->err)))
		goto out_fail;
	if (v != 0 && v != 1) {
		rc = es_error_set(c->err, ES_EINVAL,
				  "%s node '%s': attribute storage_order is %lld, expected 0 or 1",
				  node->op_type, node->name, (long long)v);
		goto out_fail;
	}
	st->col_major = v == 1;
	if (st->channels_last && st->nsp != 2) {
		rc = es_error_set(c->err, ES_EINVAL,
				  "%s node '%s': channels_last needs 2 spatial dims, kernel_shape has %d",
				  node->op_type, node->name, st->nsp);
		goto out_fail;
	}
	*state = st;
	return 0;

out_fail:
	free(st);
	return rc;
}

static int maxpool_init(es_op_init_ctx *c, void **s) { return pool_init_common(c, s, POOL_MAX, false); }
static int avgpool_init(es_op_init_ctx *c, void **s) { return pool_init_common(c, s, POOL_AVG, false); }
static int lppool_init(es_op_init_ctx *c, void **s) { return pool_init_common(c, s, POOL_LP, false); }
static int gmaxpool_init(es_op_init_ctx *c, void **s) { return pool_init_common(c, s, POOL_MAX, true); }
static int gavgpool_init(es_op_init_ctx *c, void **s) { return pool_init_common(c, s, POOL_AVG, true); }
static int glppool_init(es_op_init_ctx *c, void **s) { return pool_init_common(c, s, POOL_LP, true); }

/* ---- run ------------------------------------------------------------------ */

/* Resolves the output shape into ydims and the normalised geometry. */
static int pool_geometry(es_kctx *k, const struct pool_state *st,
			 const es_tensor *x, struct pool_geom *g, int64_t *ydims)
{
	const int nd = x->ndim;
	const int nsp = nd - 2;

	memset(g, 0, sizeof(*g));
	g->kind = st->kind;
	g->count_include_pad = st->count_include_pad;
	g->col_major = st->col_major;
	g->p = st->p;
	for (int i = 0; i < 3; i++) {
		g->in[i] = g->out[i] = g->k[i] = g->s[i] = g->dil[i] = 1;
	}
	if (nd < 2)
		return es_kctx_fail(k, ES_ESHAPE,
				    "input X has rank %d, expected (N, C, D1, ...) of rank >= 2", nd);
	if (__builtin_mul_overflow(x->dims[0], x->dims[1], &g->planes))
		return es_kctx_fail(k, ES_ERANGE, "N * C overflows");
	ydims[0] = x->dims[0];
	ydims[1] = x->dims[1];

	if (st->global) {
		/* one window over the whole flattened plane */
		int64_t sp = 1;
		for (int d = 0; d < nsp; d++) {
			if (x->dims[2 + d] < 1)
				return es_kctx_fail(k, ES_ESHAPE,
						    "input X has size %lld on spatial axis %d, expected >= 1",
						    (long long)x->dims[2 + d], d);
			sp *= x->dims[2 + d]; /* X exists, so this fits */
			ydims[2 + d] = 1;
		}
		g->in[2] = g->k[2] = sp;
		g->sp_in = sp;
		g->sp_out = 1;
		return 0;
	}

	if (nsp != st->nsp)
		return es_kctx_fail(k, ES_ESHAPE,
				    "input X has rank %d but kernel_shape has %d spatial dims (expected rank %d)",
				    nd, st->nsp, st->nsp + 2);
	const int off = 3 - nsp;
	g->sp_in = g->sp_out = 1;
	for (int d = 0; d < nsp; d++) {
		const int64_t in = x->dims[2 + d], kd = st->kernel[d];
		const int64_t s = st->strides[d], dil = st->dilations[d];
		int64_t ext, pb, pe, out, t;

		if (__builtin_mul_overflow(kd - 1, dil, &ext) || __builtin_add_overflow(ext, 1, &ext))
			return es_kctx_fail(k, ES_ERANGE, "kernel extent on axis %d overflows", d);
		if (in < 1)
			return es_kctx_fail(k, ES_ESHAPE,
					    "input X has size %lld on spatial axis %d, expected >= 1",
					    (long long)in, d);
		if (st->auto_pad == ES_AUTO_PAD_SAME_UPPER || st->auto_pad == ES_AUTO_PAD_SAME_LOWER) {
			out = in / s + (in % s != 0);
			if (es_op_same_pads(in, s, ext, st->auto_pad == ES_AUTO_PAD_SAME_UPPER,
					    &pb, &pe))
				return es_kctx_fail(k, ES_ERANGE, "padding on axis %d overflows", d);
		} else {
			if (st->auto_pad == ES_AUTO_PAD_VALID) {
				pb = pe = 0;
			} else {
				pb = st->pads[d];
				pe = st->pads[nsp + d];
			}
			if (__builtin_add_overflow(in, pb, &t) || __builtin_add_overflow(t, pe, &t))
				return es_kctx_fail(k, ES_ERANGE, "padded size on axis %d overflows", d);
			t -= ext;
			if (t < 0)
				return es_kctx_fail(k, ES_ESHAPE,
						    "output size on spatial axis %d would be <= 0: input %lld + pads %lld + %lld is smaller than the kernel extent %lld",
						    d, (long long)in, (long long)pb, (long long)pe, (long long)ext);
			if (st->ceil_mode) {
				out = t / s + (t % s != 0) + 1;
				/* drop a last window that starts in the end padding */
				if ((out - 1) * s >= in + pb)
					out--;
			} else {
				out = t / s + 1;
			}
		}
		if (out < 1)
			return es_kctx_fail(k, ES_ESHAPE, "output size on spatial axis %d would be %lld (<= 0)",
					    d, (long long)out);
		ydims[2 + d] = out;
		g->in[off + d] = in;
		g->out[off + d] = out;
		g->k[off + d] = kd;
		g->s[off + d] = s;
		g->dil[off + d] = dil;
		g->pb[off + d] = pb;
		g->pe[off + d] = pe;
		g->sp_in *= in;
		if (__builtin_mul_overflow(g->sp_out, out, &g->sp_out))
			return es_kctx_fail(k, ES_ERANGE, "output size overflows");
	}
	return 0;
}

/* The ES_DOMAIN channels-last forms: X (N, H, W, C), float only, no
 * Indices output. */
static int pool_run_nhwc(es_kctx *k, const struct pool_state *st, const es_tensor *x)
{
	int64_t ydims[ES_MAX_DIMS], yl[4];
	struct pool_geom g;
	es_tensor xv;
	int rc;

	if (x->dtype != ES_DT_FLOAT)
		return es_kctx_fail(k, ES_ETYPE, "input X has type %s, channels_last expects float",
				    es_dtype_name(x->dtype));
	if (x->ndim != 4)
		return es_kctx_fail(k, ES_ESHAPE,
				    "input X has rank %d, channels_last expects (N, H, W, C) of rank 4",
				    x->ndim);
	if (es_op_has_output(k, 1))
		return es_kctx_fail(k, ES_EINVAL, "channels_last pooling has no Indices output");
	xv = *x;
	xv.dims[1] = x->dims[3];
	xv.dims[2] = x->dims[1];
	xv.dims[3] = x->dims[2];
	if ((rc = pool_geometry(k, st, &xv, &g, ydims)))
		return rc;
	yl[0] = ydims[0];
	yl[1] = ydims[2];
	yl[2] = ydims[3];
	yl[3] = ydims[1];
	if ((rc = es_kctx_output(k, 0, ES_DT_FLOAT, 4, yl)))
		return rc;
	if (g.planes == 0 || g.sp_out == 0)
		return 0;
	pool_nhwc_f32(&g, x->data, k->outputs[0]->data, x->dims[0], x->dims[3], k->threads);
	return 0;
}

static int pool_run(es_kctx *k)
{
	const struct pool_state *st = k->state;
	const es_tensor *x = es_kin(k, 0);
	int64_t ydims[ES_MAX_DIMS];
	struct pool_geom g;
	int rc;

	if (!x)
		return es_kctx_fail(k, ES_EINVAL, "input X is required");
	if (st->channels_last)
		return pool_run_nhwc(k, st, x);
	es_dtype dt = x->dtype;
	bool ok = es_op_is_float(dt) ||
		  (st->kind == POOL_MAX && !st->global &&
		   (dt == ES_DT_INT8 || dt == ES_DT_UINT8));
	if (!ok)
		return es_kctx_fail(k, ES_ETYPE, "input X has type %s, expected %s",
				    es_dtype_name(dt),
				    st->kind == POOL_MAX && !st->global ?
				    "float, double, float16, int8 or uint8" :
				    "float, double or float16");
	if ((rc = pool_geometry(k, st, x, &g, ydims)))
		return rc;
	if ((rc = es_kctx_output(k, 0, dt, x->ndim, ydims)))
		return rc;
	es_tensor *y = k->outputs[0];
	int64_t *ind = NULL;
	bool want_ind = st->kind == POOL_MAX && es_op_has_output(k, 1);
	if (want_ind) {
		if ((rc = es_kctx_output(k, 1, ES_DT_INT64, x->ndim, ydims)))
			return rc;
		ind = k->outputs[1]->data;
	}
	if (g.planes == 0 || g.sp_out == 0)
		return 0;

	if (dt == ES_DT_FLOAT) {
		pool_f32(&g, x->data, y->data, ind, k->threads);
		return 0;
	}
	if (dt == ES_DT_DOUBLE) {
		pool_f64(&g, x->data, y->data, ind, k->threads);
		return 0;
	}

	/* other types: through double */
	int64_t nx = es_tensor_numel(x), ny = es_tensor_numel(y);
	size_t bx, by;
	if (es_mul_size((size_t)nx, sizeof(double), &bx) ||
	    es_mul_size((size_t)ny, sizeof(double), &by))
		return es_kctx_fail(k, ES_ERANGE, "tensor too large");
	double *xd = es_kctx_scratch(k, bx), *yd = es_kctx_scratch(k, by);
	if (!xd || !yd)
		return es_kctx_fail(k, ES_ENOMEM, "out of scratch memory");
	switch (dt) {
	case ES_DT_FLOAT16: {
		const uint16_t *s = x->data;
		for (int64_t i = 0; i < nx; i++)
			xd[i] = es_half_to_float(s[i]);
		break;
	}
	case ES_DT_BFLOAT16: {
		const uint16_t *s = x->data;
		for (int64_t i = 0; i < nx; i++)
			xd[i] = es_bf16_to_float(s[i]);
		break;
	}
	case ES_DT_INT8: {
		const int8_t *s = x->data;
		for (int64_t i = 0; i < nx; i++)
			xd[i] = s[i];
		break;
	}
	default: {
		const uint8_t *s = x->data;
		for (int64_t i = 0; i < nx; i++)
			xd[i] = s[i];
		break;
	}
	}
	pool_f64(&g, xd, yd, ind, k->threads);
	switch (dt) {
	case ES_DT_FLOAT16: {
		uint16_t *d = y->data;
		for (int64_t i = 0; i < ny; i++)
			d[i] = es_float_to_half((float)yd[i]);
		break;
	}
	case ES_DT_BFLOAT16: {
		uint16_t *d = y->data;
		for (int64_t i = 0; i < ny; i++)
			d[i] = es_float_to_bf16((float)yd[i]);
		break;
	}
	case ES_DT_INT8: { /* max of int8 values: exact */
		int8_t *d = y->data;
		for (int64_t i = 0; i < ny; i++)
			d[i] = isinf(yd[i]) ? INT8_MIN : (int8_t)yd[i];
		break;
	}
	default: {
		uint8_t *d = y->data;
		for (int64_t i = 0; i < ny; i++)
			d[i] = isinf(yd[i]) ? 0 : (uint8_t)yd[i];
		break;
	}
	}
	return 0;
}

#define POOL_FLOATS (ES_T(ES_DT_FLOAT) | ES_T(ES_DT_DOUBLE) | ES_T(ES_DT_FLOAT16) | ES_T(ES_DT_BFLOAT16))

#define POOL_ROW(name, since_v, until_v, nout, types_v, initf)                \
	{                                                                     \
		.domain = "", .op_type = name, .since = since_v, .until = until_v, \
		.min_inputs = 1, .max_inputs = 1,                             \
		.min_outputs = 1, .max_outputs = nout,                        \
		.types = types_v, .out_type = ES_OUT_SAME,                    \
		.init = initf, .fini = es_op_state_free, .run = pool_run,            \
	}

#define ES_POOL_ROW(name, initf)                                              \
	{                                                                     \
		.domain = ES_DOMAIN, .op_type = name, .since = 1,             \
		.min_inputs = 1, .max_inputs = 1,                             \
		.min_outputs = 1, .max_outputs = 1,                           \
		.types = POOL_FLOATS, .out_type = ES_OUT_SAME,                \
		.init = initf, .fini = es_op_state_free, .run = pool_run,     \
	}

static const es_op_def defs[] = {
	/* MaxPool-8 added the Indices output, -12 int8/uint8 */
	POOL_ROW("MaxPool", 1, 7, 1, POOL_FLOATS, maxpool_init),
	POOL_ROW("MaxPool", 8, 11, 2, POOL_FLOATS, maxpool_init),
	POOL_ROW("MaxPool", 12, 0, 2, POOL_FLOATS | ES_T(ES_DT_INT8) | ES_T(ES_DT_UINT8), maxpool_init),
	POOL_ROW("AveragePool", 1, 0, 1, POOL_FLOATS, avgpool_init),
	POOL_ROW("LpPool", 1, 0, 1, POOL_FLOATS, lppool_init),
	POOL_ROW("GlobalMaxPool", 1, 0, 1, POOL_FLOATS, gmaxpool_init),
	POOL_ROW("GlobalAveragePool", 1, 0, 1, POOL_FLOATS, gavgpool_init),
	POOL_ROW("GlobalLpPool", 1, 0, 1, POOL_FLOATS, glppool_init),
	/* the optimizer's forms with the channels_last attribute (opt/layout.c) */
	ES_POOL_ROW("MaxPool", maxpool_init),
	ES_POOL_ROW("AveragePool", avgpool_init),
	ES_POOL_ROW("GlobalMaxPool", gmaxpool_init),
	ES_POOL_ROW("GlobalAveragePool", gavgpool_init),
};

const es_op_table es_ops_pool = { defs, sizeof(defs) / sizeof(defs[0]) };
