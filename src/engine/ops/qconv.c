/*
 * Operator family: qconv, the integer convolutions.
 *
 *   QLinearConv (since 10)  x, x_scale, x_zero_point, w, w_scale,
 *                           w_zero_point, y_scale, y_zero_point [, B]
 *   ConvInteger (since 10)  x, w [, x_zero_point [, w_zero_point]] -> int32
 *   QConv (ES_DOMAIN, since 1), made by the optimizer from
 *                           DequantizeLinear -> Conv -> [Add] -> [Relu] ->
 *                           QuantizeLinear chains: QLinearConv's inputs,
 *                           then 9 Z, 10 z_scale, 11 z_zero_point (an
 *                           optional residual), Conv's attributes plus
 *                           channels_last (0|1) and activation ("" | "Relu").
 *
 * Semantics (QLinearConv is QConv without Z and activation):
 *
 *   acc[m] = B[m] + sum (x - x_zp) * (w - w_zp[m])   int32, taps that fall
 *                                                    in the padding add 0
 *   v      = acc[m] * x_scale * w_scale[m]           real
 *   if Z:    v = v + z_scale * (Z - z_zp)
 *   if Relu: v = max(v, 0)
 *   y      = saturate(round_half_even(v / y_scale) + y_zp)
 *
 * ConvInteger's y is acc without B. Sums wrap modulo 2^32 as int32
 * arithmetic does (only reachable with tens of thousands of taps).
 *
 * Two implementations. The fast one is oneDNN's int8 convolution (1 to 3
 * spatial dims) on channels-last activations: s8 weights with zero point 0 (u8 weights
 * whose zero point is 128 everywhere are the same numbers shifted, and
 * are converted), the output scales x_scale * w_scale[m] / y_scale and
 * both zero points baked into the primitive, Z as a sum post-op
 * (scale z_scale / y_scale, zero point z_zp) and Relu as an eltwise
 * post-op; oneDNN adds the destination zero point after the post-ops,
 * rounds to nearest even and saturates. Baking needs the scales and zero
 * points to be model constants (they are in every quantized model we
 * know). When they are not, the primitive writes the int32 sums (x_zp
 * passed at execution; oneDNN 2.6's int8 convolutions refuse run-time
 * output scales) and a C loop requantizes them. NCHW tensors are
 * transposed to channels-last scratch and back. Everything else (other
 * weight zero points, more than 3 spatial dims, what oneDNN refuses)
 * runs the plain C reference below: the formulas above on int16 copies
 * of x - x_zp and w - w_zp, int32 sums wrapping, double requantization.
 *
 * Primitives are cached in the node state like conv.c's: keyed by the
 * geometry, the dtypes and the thread count (oneDNN fixes a primitive's
 * team size), reference counted, with the weights packed once per entry
 * when W is constant and the memory objects kept for the next run.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "engine/kernels/dnnl_util.h"
#include "engine/ops/conv_ref.h"
#include "engine/ops/families.h"
#include "engine/ops/op_util.h"
#include "engine/opt/opt.h"

#define MAX_SP ES_CONV_MAX_SP
#define CACHE_SLOTS 4
#define N_MEMS 6

#define FAIL(k, code, ...) es_kctx_fail(k, code, __VA_ARGS__)

enum qkind { K_QLINEAR, K_INTEGER, K_QCONV };

/* Input positions of QLinearConv / QConv. */
enum {
	IN_X, IN_XS, IN_XZP, IN_W, IN_WS, IN_WZP, IN_YS, IN_YZP, IN_B,
	IN_Z, IN_ZS, IN_ZZP,
};

/* ---- quantization parameters ---------------------------------------------- */

/*
 * The quantization parameters of one run, read from the inputs and
 * checked. Pointers point into the input tensors.
 */
struct qvals {
	int32_t x_zp, y_zp, z_zp;
	float x_scale, y_scale, z_scale;
	const float *w_scale; /* NULL (ConvInteger) or n_ws entries */
	int64_t n_ws;
	const void *w_zp;     /* NULL: 0 */
	bool w_zp_u8;
	int64_t n_wzp;
	const int32_t *bias;  /* NULL: none */
	es_dtype ydt;         /* UINT8, INT8 or INT32 (ConvInteger) */
	bool has_z;
};

static inline int32_t ld8(const void *p, bool u8, int64_t i)
{
	return u8 ? (int32_t)((const uint8_t *)p)[i] : (int32_t)((const int8_t *)p)[i];
}

static inline int32_t wzp_at(const struct qvals *q, int64_t m)
{
	if (!q->w_zp)
		return 0;
	return ld8(q->w_zp, q->w_zp_u8, q->n_wzp == 1 ? 0 : m);
}

static bool is_q8(es_dtype dt)
{
	return dt == ES_DT_UINT8 || dt == ES_DT_INT8;
}

static bool good_scale(float s)
{
	return isfinite(s) && s > 0.0f;
}

/* ---- node state ------------------------------------------------------------ */

/* What a cached primitive was made for; compared bytewise (zero-filled). */
struct qkey {
	es_conv_geom geom;
	int threads;
	int xdt, wdt, ydt;
	bool has_bias, sum;
	/* quantization parameters that are not model constants: an int32
	 * destination (ydt INT32) requantized in C, x_zero_point given at
	 * execution when nonzero */
	bool runtime;
	bool rt_src_zp;
};

/* One cached problem; use_ref marks a problem oneDNN rejected. */
struct qprim {
	atomic_int refs;
	struct qkey key;
	bool use_ref;
	dnnl_primitive_t prim;
	dnnl_memory_desc_t src_md, dst_md, bias_md, wei_user_md, wei_md, scratch_md;
	dnnl_memory_desc_t zp_md; /* run-time x_zero_point */
	size_t wei_bytes, scratch_bytes;
	bool pack_w;
	int8_t *packed_w; /* constant W as s8 in wei_md's layout */
	uint64_t last_use;
	atomic_flag mems_busy;
	dnnl_memory_t mem[N_MEMS];
	const void *bound[N_MEMS];
};

struct qconv_state {
	int kind; /* enum qkind */
	int nsp;  /* spatial rank the attributes fix; 0: none do */
	int64_t group;
	es_auto_pad auto_pad;
	bool has_kernel_shape;
	int64_t kernel_shape[MAX_SP];
	int64_t strides[MAX_SP];
	int64_t dilations[MAX_SP];
	int64_t pads[2 * MAX_SP];
	bool channels_last; /* QConv: x, y, Z are (N, spatial..., C) */
	bool relu;          /* QConv: activation "Relu" */

	/* constant quantization parameters that oneDNN takes baked into the
	 * primitive (baked false: some are not constants, or the weight
	 * zero point is not one oneDNN can take: reference only) */
	bool baked;
	bool w_const;
	int32_t x_zp, y_zp, z_zp;
	float sum_scale;    /* z_scale / y_scale */
	float *out_scales;  /* x_scale * w_scale[m] / y_scale */
	int64_t n_out_scales;
	int32_t w_zp_all;   /* the weight zero point, the same for every m */

	pthread_mutex_t lock;
	struct qprim *cache[CACHE_SLOTS];
	uint64_t clock;
};

static void mems_destroy(struct qprim *e)
{
	for (int i = 0; i < N_MEMS; i++) {
		if (e->mem[i])
			dnnl_memory_destroy(e->mem[i]);
		e->mem[i] = NULL;
		e->bound[i] = NULL;
	}
}

static void prim_put(struct qprim *e)
{
	if (!e || atomic_fetch_sub(&e->refs, 1) != 1)
		return;
	mems_destroy(e);
	if (e->prim)
		dnnl_primitive_destroy(e->prim);
	es_aligned_free(e->packed_w);
	free(e);
}

static void qconv_fini(void *state)
{
	struct qconv_state *st = state;
	if (!st)
		return;
	for (int i = 0; i < CACHE_SLOTS; i++)
		prim_put(st->cache[i]);
	free(st->out_scales);
	pthread_mutex_destroy(&st->lock);
	free(st);
}

/* ---- init ---------------------------------------------------------------- */

static int agree_rank(const es_op_init_ctx *c, const char *name, int n, int *nsp,
		      const char **nsp_from)
{
	if (*nsp_from && *nsp != n)
		return es_error_set(c->err, ES_EINVAL,
				    "%s node '%s': attribute %s describes %d spatial dims but %s describes %d",
				    c->node->op_type, c->node->name, name, n, *nsp_from, *nsp);
	*nsp = n;
	*nsp_from = name;
	return 0;
}

static int read_conv_attrs(es_op_init_ctx *c, struct qconv_state *st)
{
	const char *nsp_from = NULL;
	int nsp = 0, n, rc;

	for (int i = 0; i < MAX_SP; i++) {
		st->strides[i] = 1;
		st->dilations[i] = 1;
	}
	if ((rc = es_node_attr_int(c->node, "group", 1, &st->group, c->err)))
		return rc;
	if (st->group < 1)
		return es_error_set(c->err, ES_EINVAL,
				    "%s node '%s': attribute group is %lld, must be >= 1",
				    c->node->op_type, c->node->name, (long long)st->group);
	if ((rc = es_op_attr_auto_pad(c, &st->auto_pad)))
		return rc;

	if ((rc = es_op_attr_ints(c, "kernel_shape", st->kernel_shape, MAX_SP, &n)))
		return rc;
	st->has_kernel_shape = n > 0;
	if (n && ((rc = agree_rank(c, "kernel_shape", n, &nsp, &nsp_from)) ||
		  (rc = es_op_attr_check_min(c, "kernel_shape", st->kernel_shape, n, 1))))
		return rc;
	if ((rc = es_op_attr_ints(c, "strides", st->strides, MAX_SP, &n)))
		return rc;
	if (!n) {
		for (int i = 0; i < MAX_SP; i++)
			st->strides[i] = 1;
	} else if ((rc = agree_rank(c, "strides", n, &nsp, &nsp_from)) ||
		   (rc = es_op_attr_check_min(c, "strides", st->strides, n, 1))) {
		return rc;
	}
	if ((rc = es_op_attr_ints(c, "dilations", st->dilations, MAX_SP, &n)))
		return rc;
	if (!n) {
		for (int i = 0; i < MAX_SP; i++)
			st->dilations[i] = 1;
	} else if ((rc = agree_rank(c, "dilations", n, &nsp, &nsp_from)) ||
		   (rc = es_op_attr_check_min(c, "dilations", st->dilations, n, 1))) {
		return rc;
	}
	if ((rc = es_op_attr_ints(c, "pads", st->pads, 2 * MAX_SP, &n)))
		return rc;
	if (n) {
		if (n % 2)
			return es_error_set(c->err, ES_EINVAL,
					    "%s node '%s': attribute pads has %d values, expected 2 per spatial axis",
					    c->node->op_type, c->node->name, n);
		if ((rc = agree_rank(c, "pads", n / 2, &nsp, &nsp_from)) ||
		    (rc = es_op_attr_check_min(c, "pads", st->pads, n, 0)))
			return rc;
	}
	st->nsp = nsp;
	return 0;
}

/* A constant scalar quantization parameter (a 0-D or one-element tensor)
 * for baking, or false. */
static bool const_scale(const es_tensor *t, float *out)
{
	if (!t || t->dtype != ES_DT_FLOAT || t->ndim > 1 || es_tensor_numel(t) != 1)
		return false;
	*out = *(const float *)t->data;
	return true;
}

static bool const_zp(const es_tensor *t, int32_t *out)
{
	if (!t) {
		*out = 0;
		return true;
	}
	if (!is_q8(t->dtype) || t->ndim > 1 || es_tensor_numel(t) != 1)
		return false;
	*out = ld8(t->data, t->dtype == ES_DT_UINT8, 0);
	return true;
}

/*
 * Checks the constant scales at load (a non-positive or non-finite scale
 * is an error of the model) and, when every quantization parameter is a
 * constant oneDNN can take, bakes them into the state. Malformed constants
 * (wrong dtype or length) are left to run(), which names them.
 */
static int bake_params(es_op_init_ctx *c, struct qconv_state *st)
{
	const es_node *node = c->node;
	const bool integer = st->kind == K_INTEGER;
	const int w_in = integer ? 1 : IN_W;
	const int wzp_in = integer ? 3 : IN_WZP;
	const int xzp_in = integer ? 2 : IN_XZP;

	static const struct { int in; const char *name; } scales[] = {
		{ IN_XS, "x_scale" }, { IN_WS, "w_scale" }, { IN_YS, "y_scale" },
		{ IN_ZS, "z_scale" },
	};
	for (size_t i = 0; !integer && i < sizeof(scales) / sizeof(scales[0]); i++) {
		const es_tensor *t = es_init_const_input(c, scales[i].in);
		if (!t || t->dtype != ES_DT_FLOAT)
			continue;
		const float *v = t->data;
		int64_t n = es_tensor_numel(t);
		for (int64_t j = 0; j < n; j++)
			if (!good_scale(v[j]))
				return es_error_set(c->err, ES_EINVAL,
						    "%s node '%s': input %d (%s) holds %g at %lld, expected a positive finite number",
						    node->op_type, node->name, scales[i].in,
						    scales[i].name, (double)v[j], (long long)j);
	}

	const es_tensor *w = es_init_const_input(c, w_in);
	st->w_const = w != NULL;

	/* every weight zero point equal, 0 for s8 weights or 128 for u8 */
	bool wzp_absent = wzp_in >= node->n_inputs || node->inputs[wzp_in] < 0;
	const es_tensor *wzp = es_init_const_input(c, wzp_in);
	if (wzp_absent) {
		st->w_zp_all = 0;
	} else {
		if (!wzp || !is_q8(wzp->dtype) || wzp->ndim > 1)
			return 0;
		int64_t n = es_tensor_numel(wzp);
		bool u8 = wzp->dtype == ES_DT_UINT8;
		if (n < 1)
			return 0;
		st->w_zp_all = ld8(wzp->data, u8, 0);
		for (int64_t j = 1; j < n; j++)
			if (ld8(wzp->data, u8, j) != st->w_zp_all)
				return 0;
		if (st->w_zp_all != (u8 ? 128 : 0))
			return 0;
	}

	bool xzp_absent = xzp_in >= node->n_inputs || node->inputs[xzp_in] < 0;
	const es_tensor *xzp = es_init_const_input(c, xzp_in);
	if ((!xzp_absent && !xzp) || !const_zp(xzp, &st->x_zp))
		return 0;
	if (integer) {
		st->baked = true;
		return 0;
	}

	float xs, ys, zs = 1.0f;
	const es_tensor *ws = es_init_const_input(c, IN_WS);
	const es_tensor *yzp = es_init_const_input(c, IN_YZP);
	if (!const_scale(es_init_const_input(c, IN_XS), &xs) ||
	    !const_scale(es_init_const_input(c, IN_YS), &ys) ||
	    !yzp || !const_zp(yzp, &st->y_zp) ||
	    !ws || ws->dtype != ES_DT_FLOAT || ws->ndim > 1 || es_tensor_numel(ws) < 1)
		return 0;
	bool has_z = IN_Z < node->n_inputs && node->inputs[IN_Z] >= 0;
	if (has_z) {
		const es_tensor *zzp = es_init_const_input(c, IN_ZZP);
		if (!const_scale(es_init_const_input(c, IN_ZS), &zs) || !zzp ||
		    !const_zp(zzp, &st->z_zp))
			return 0;
		st->sum_scale = (float)((double)zs / (double)ys);
	}
	int64_t n = es_tensor_numel(ws);
	st->out_scales = malloc((size_t)n * sizeof(float));
	if (!st->out_scales)
		return es_error_set(c->err, ES_ENOMEM, "%s node '%s': out of memory",
				    node->op_type, node->name);
	const float *wv = ws->data;
	for (int64_t j = 0; j < n; j++)
		st->out_scales[j] = (float)((double)xs * (double)wv[j] / (double)ys);
	st->n_out_scales = n;
	st->baked = true;
	return 0;
}

static int init_common(es_op_init_ctx *c, void **state, int kind)
{
	struct qconv_state *st = es_op_state_alloc(c, sizeof(*st));
	int rc;

	if (!st)
		return ES_ENOMEM;
	pthread_mutex_init(&st->lock, NULL);
	st->kind = kind;
	if ((rc = read_conv_attrs(c, st)))
		goto out_fail;
	if (kind == K_QCONV) {
		const es_node *node = c->node;
		const char *act;
		int64_t cl;
		if ((rc = es_node_attr_int(node, "channels_last", 0, &cl, c->err)) ||
		    (rc = es_node_attr_string(node, "activation", "", &act, c->err)))
			goto out_fail;
		if (cl != 0 && cl != 1) {
			rc = es_error_set(c->err, ES_EINVAL,
					  "QConv node '%s': attribute channels_last is %lld, expected 0 or 1",
					  node->name, (long long)cl);
			goto out_fail;
		}
		st->channels_last = cl == 1;
		if (act[0] && strcmp(act, "Relu")) {
			rc = es_error_set(c->err, ES_EINVAL,
					  "QConv node '%s': attribute activation is '%s', expected '' or 'Relu'",
					  node->name, act);
			goto out_fail;
		}
		st->relu = act[0] != 0;
		if (IN_Z < node->n_inputs && node->inputs[IN_Z] >= 0 &&
		    (IN_ZZP >= node->n_inputs || node->inputs[IN_ZS] < 0 ||
		     node->inputs[IN_ZZP] < 0)) {
			rc = es_error_set(c->err, ES_EINVAL,
					  "QConv node '%s': input 9 (Z) needs inputs 10 (z_scale) and 11 (z_zero_point)",
					  node->name);
			goto out_fail;
		}
	}
	if ((rc = bake_params(c, st)))
		goto out_fail;
	*state = st;
	return 0;

out_fail:
	qconv_fini(st);
	return rc;
}

static int qlinear_init(es_op_init_ctx *c, void **state)
{
	return init_common(c, state, K_QLINEAR);
}

static int integer_init(es_op_init_ctx *c, void **state)
{
	return init_common(c, state, K_INTEGER);
}

static int qconv_init(es_op_init_ctx *c, void **state)
{
	return init_common(c, state, K_QCONV);
}

/* ---- geometry ------------------------------------------------------------ */

static int64_t prod(const int64_t *v, int n)
{
	int64_t p = 1;
	for (int i = 0; i < n; i++)
		p *= v[i];
	return p;
}

/*
 * Resolves the convolution of x (logical dims (N, C, spatial...), already
 * permuted from channels-last by the caller) and w into g, checking every
 * product for overflow.
 */
static int qconv_geometry(es_kctx *k, const struct qconv_state *st, const int64_t *xd,
			  int nd, const es_tensor *w, es_conv_geom *g)
{
	memset(g, 0, sizeof(*g));
	if (nd < 3)
		return FAIL(k, ES_ESHAPE, "input x has rank %d, expected (N, C, D1, ...) of rank >= 3",
			    nd);
	if (w->ndim != nd)
		return FAIL(k, ES_ESHAPE, "input w has rank %d, expected %d (the rank of x)",
			    w->ndim, nd);
	const int nsp = nd - 2;
	if (nsp > MAX_SP)
		return FAIL(k, ES_EUNSUPPORTED, "input x has %d spatial dims, at most %d supported",
			    nsp, MAX_SP);
	if (st->nsp && st->nsp != nsp)
		return FAIL(k, ES_ESHAPE,
			    "the attributes describe %d spatial dims but input x has %d (rank %d)",
			    st->nsp, nsp, nd);
	g->nsp = nsp;
	g->n = xd[0];
	g->c = xd[1];
	g->m = w->dims[0];
	g->group = st->group;

	int64_t need;
	if (__builtin_mul_overflow(w->dims[1], st->group, &need) || need != g->c)
		return FAIL(k, ES_ESHAPE,
			    "input w has %lld channels per group (dim 1) and group is %lld, but x has %lld channels",
			    (long long)w->dims[1], (long long)st->group, (long long)g->c);
	if (g->m % st->group)
		return FAIL(k, ES_ESHAPE,
			    "input w has %lld output channels (dim 0), not a multiple of group %lld",
			    (long long)g->m, (long long)st->group);

	for (int d = 0; d < nsp; d++) {
		const int64_t in = xd[2 + d], kd = w->dims[2 + d];
		const int64_t s = st->strides[d], dil = st->dilations[d];
		int64_t ext, t, pb, pe;

		g->in[d] = in;
		g->kernel[d] = kd;
		g->stride[d] = s;
		g->dilation[d] = dil;
		if (kd < 1)
			return FAIL(k, ES_ESHAPE, "input w has kernel size %lld on spatial axis %d, expected >= 1",
				    (long long)kd, d);
		if (st->has_kernel_shape && st->kernel_shape[d] != kd)
			return FAIL(k, ES_ESHAPE,
				    "attribute kernel_shape[%d] is %lld but input w has %lld there",
				    d, (long long)st->kernel_shape[d], (long long)kd);
		if (__builtin_mul_overflow(kd - 1, dil, &ext) || __builtin_add_overflow(ext, 1, &ext))
			return FAIL(k, ES_ERANGE, "kernel extent on axis %d overflows", d);
		switch (st->auto_pad) {
		case ES_AUTO_PAD_NOTSET:
			pb = st->pads[d];
			pe = st->pads[nsp + d];
			break;
		case ES_AUTO_PAD_VALID:
			pb = pe = 0;
			break;
		default:
			if (es_op_same_pads(in, s, ext, st->auto_pad == ES_AUTO_PAD_SAME_UPPER,
					    &pb, &pe))
				return FAIL(k, ES_ERANGE, "padding on axis %d overflows", d);
			break;
		}
		if (__builtin_add_overflow(in, pb, &t) || __builtin_add_overflow(t, pe, &t))
			return FAIL(k, ES_ERANGE, "padded size on axis %d overflows", d);
		t -= ext;
		if (t < 0)
			return FAIL(k, ES_ESHAPE,
				    "output size on spatial axis %d would be <= 0: input %lld + pads %lld + %lld is smaller than the dilated kernel %lld",
				    d, (long long)in, (long long)pb, (long long)pe, (long long)ext);
		g->out[d] = t / s + 1;
		g->pad_begin[d] = pb;
		g->pad_end[d] = pe;
	}
	return 0;
}

/* ---- run-time parameter checks ------------------------------------------- */

/* A scalar (0-D or one element, 1-D) float scale input, checked. */
static int read_scale(es_kctx *k, int in, const char *name, float *out)
{
	const es_tensor *t = es_kin(k, in);
	if (!t)
		return FAIL(k, ES_EINVAL, "input %d (%s) is required", in, name);
	if (t->dtype != ES_DT_FLOAT)
		return FAIL(k, ES_ETYPE, "input %d (%s) has type %s, expected float", in, name,
			    es_dtype_name(t->dtype));
	if (t->ndim > 1 || es_tensor_numel(t) != 1)
		return FAIL(k, ES_ESHAPE, "input %d (%s) must be a scalar, got %lld elements of rank %d",
			    in, name, (long long)es_tensor_numel(t), t->ndim);
	*out = *(const float *)t->data;
	if (!good_scale(*out))
		return FAIL(k, ES_EINVAL, "input %d (%s) is %g, expected a positive finite number",
			    in, name, (double)*out);
	return 0;
}

/* A scalar zero point of dtype dt (absent: 0 when optional). */
static int read_zp(es_kctx *k, int in, const char *name, es_dtype dt, bool optional,
		   int32_t *out)
{
	const es_tensor *t = es_kin(k, in);
	*out = 0;
	if (!t) {
		if (optional)
			return 0;
		return FAIL(k, ES_EINVAL, "input %d (%s) is required", in, name);
	}
	if (t->dtype != dt)
		return FAIL(k, ES_ETYPE, "input %d (%s) has type %s, expected %s (the type of its tensor)",
			    in, name, es_dtype_name(t->dtype), es_dtype_name(dt));
	if (t->ndim > 1 || es_tensor_numel(t) != 1)
		return FAIL(k, ES_ESHAPE, "input %d (%s) must be a scalar, got %lld elements of rank %d",
			    in, name, (long long)es_tensor_numel(t), t->ndim);
	*out = ld8(t->data, dt == ES_DT_UINT8, 0);
	return 0;
}

/* Checks everything but the geometry; fills q. m: output channels. */
static int read_qvals(es_kctx *k, const struct qconv_state *st, const es_tensor *x,
		      const es_tensor *w, int64_t m, struct qvals *q)
{
	const bool integer = st->kind == K_INTEGER;
	const int wzp_in = integer ? 3 : IN_WZP;
	int rc;

	memset(q, 0, sizeof(*q));
	if (!is_q8(x->dtype))
		return FAIL(k, ES_ETYPE, "input 0 (x) has type %s, expected uint8 or int8",
			    es_dtype_name(x->dtype));
	if (!is_q8(w->dtype))
		return FAIL(k, ES_ETYPE, "input %d (w) has type %s, expected uint8 or int8",
			    integer ? 1 : IN_W, es_dtype_name(w->dtype));
	if ((rc = read_zp(k, integer ? 2 : IN_XZP, "x_zero_point", x->dtype, integer, &q->x_zp)))
		return rc;

	const es_tensor *wzp = es_kin(k, wzp_in);
	if (!wzp && !integer)
		return FAIL(k, ES_EINVAL, "input %d (w_zero_point) is required", wzp_in);
	if (wzp) {
		int64_t n = es_tensor_numel(wzp);
		if (wzp->dtype != w->dtype)
			return FAIL(k, ES_ETYPE, "input %d (w_zero_point) has type %s, expected %s (the type of w)",
				    wzp_in, es_dtype_name(wzp->dtype), es_dtype_name(w->dtype));
		if (wzp->ndim > 1 || (n != 1 && n != m))
			return FAIL(k, ES_ESHAPE,
				    "input %d (w_zero_point) must be a scalar or 1-D of %lld (output channels), got %lld elements of rank %d",
				    wzp_in, (long long)m, (long long)n, wzp->ndim);
		q->w_zp = wzp->data;
		q->w_zp_u8 = wzp->dtype == ES_DT_UINT8;
		q->n_wzp = n;
	}
	if (integer) {
		q->ydt = ES_DT_INT32;
		return 0;
	}

	if ((rc = read_scale(k, IN_XS, "x_scale", &q->x_scale)) ||
	    (rc = read_scale(k, IN_YS, "y_scale", &q->y_scale)))
		return rc;
	const es_tensor *ws = es_kin(k, IN_WS);
	if (!ws)
		return FAIL(k, ES_EINVAL, "input %d (w_scale) is required", IN_WS);
	if (ws->dtype != ES_DT_FLOAT)
		return FAIL(k, ES_ETYPE, "input %d (w_scale) has type %s, expected float", IN_WS,
			    es_dtype_name(ws->dtype));
	int64_t n = es_tensor_numel(ws);
	if (ws->ndim > 1 || (n != 1 && n != m))
		return FAIL(k, ES_ESHAPE,
			    "input %d (w_scale) must be a scalar or 1-D of %lld (output channels), got %lld elements of rank %d",
			    IN_WS, (long long)m, (long long)n, ws->ndim);
	q->w_scale = ws->data;
	q->n_ws = n;
	for (int64_t i = 0; i < n; i++)
		if (!good_scale(q->w_scale[i]))
			return FAIL(k, ES_EINVAL,
				    "input %d (w_scale) holds %g at %lld, expected a positive finite number",
				    IN_WS, (double)q->w_scale[i], (long long)i);

	const es_tensor *yzp = es_kin(k, IN_YZP);
	if (!yzp)
		return FAIL(k, ES_EINVAL, "input %d (y_zero_point) is required", IN_YZP);
	if (!is_q8(yzp->dtype))
		return FAIL(k, ES_ETYPE, "input %d (y_zero_point) has type %s, expected uint8 or int8",
			    IN_YZP, es_dtype_name(yzp->dtype));
	q->ydt = yzp->dtype;
	if ((rc = read_zp(k, IN_YZP, "y_zero_point", q->ydt, false, &q->y_zp)))
		return rc;

	const es_tensor *b = es_kin(k, IN_B);
	if (b) {
		if (b->dtype != ES_DT_INT32)
			return FAIL(k, ES_ETYPE, "input %d (B) has type %s, expected int32", IN_B,
				    es_dtype_name(b->dtype));
		if (b->ndim != 1 || b->dims[0] != m)
			return FAIL(k, ES_ESHAPE,
				    "input %d (B) must be 1-D of %lld (output channels), got %lld elements of rank %d",
				    IN_B, (long long)m, (long long)es_tensor_numel(b), b->ndim);
		q->bias = b->data;
	}

	const es_tensor *z = es_kin(k, IN_Z);
	if (z) {
		q->has_z = true;
		if (z->dtype != q->ydt)
			return FAIL(k, ES_ETYPE, "input %d (Z) has type %s, expected %s (the type of y)",
				    IN_Z, es_dtype_name(z->dtype), es_dtype_name(q->ydt));
		if ((rc = read_scale(k, IN_ZS, "z_scale", &q->z_scale)) ||
		    (rc = read_zp(k, IN_ZZP, "z_zero_point", q->ydt, false, &q->z_zp)))
			return rc;
	}
	return 0;
}

/* Whether every weight zero point is the shift that makes w an int8
 * tensor with zero point 0 (0 for int8, 128 for uint8 weights). */
static bool wzp_is_shift(const struct qvals *q, bool w_u8)
{
	const int32_t want = w_u8 ? 128 : 0;
	if (!q->w_zp)
		return want == 0;
	for (int64_t i = 0; i < q->n_wzp; i++)
		if (ld8(q->w_zp, q->w_zp_u8, i) != want)
			return false;
	return true;
}

/* ---- reference -------------------------------------------------------------- */

/*
 * One run's problem for the reference. x16 holds x - x_zp channels-last
 * ((n, spatial..., c) whatever the node's layout), w16 holds
 * w - w_zp[m] as (m, kernel..., c/group), so each tap is a dot product of
 * two contiguous int16 rows. y and Z use element strides of the node's
 * layout (logical order n, c, spatial...).
 */
struct qjob {
	const es_conv_geom *g;
	const struct qvals *q;
	const int16_t *x16, *w16;
	const void *z;
	void *y;
	bool relu;
	int64_t ys_n, ys_c, ys_sp[MAX_SP];
};

static void layout_strides(const es_conv_geom *g, int64_t ch, const int64_t *sp, bool cl,
			   int64_t *s_n, int64_t *s_c, int64_t *s_sp)
{
	int64_t s = cl ? ch : 1;
	for (int d = g->nsp - 1; d >= 0; d--) {
		s_sp[d] = s;
		s *= sp[d];
	}
	if (cl) {
		*s_c = 1;
		*s_n = s;
	} else {
		*s_c = s;
		*s_n = s * ch;
	}
}

static inline void odometer_next(int64_t *c, const int64_t *lim, int n)
{
	for (int d = n - 1; d >= 0; d--) {
		if (++c[d] < lim[d])
			return;
		c[d] = 0;
	}
}

static void store_q(void *y, es_dtype dt, int64_t i, double r)
{
	if (dt == ES_DT_UINT8)
		((uint8_t *)y)[i] = es_op_f2i_u8(r);
	else
		((int8_t *)y)[i] = es_op_f2i_i8(r);
}

/* sum a[i] * b[i] modulo 2^32 (int32 arithmetic that wraps, without
 * signed overflow). */
static uint32_t dot16(const int16_t *a, const int16_t *b, int64_t n)
{
	uint32_t sum = 0;
	for (int64_t i = 0; i < n; i++)
		sum += (uint32_t)((int32_t)a[i] * (int32_t)b[i]);
	return sum;
}

/* The output plane of image n, output channel m (plane = n * g->m + m). */
static void ref_plane(const struct qjob *j, int64_t plane)
{
	const es_conv_geom *g = j->g;
	const struct qvals *q = j->q;
	const int64_t sp_out = prod(g->out, g->nsp), k_sz = prod(g->kernel, g->nsp);
	const int64_t sp_in = prod(g->in, g->nsp);
	const int64_t cg = g->c / g->group, mg = g->m / g->group;
	const int64_t n = plane / g->m, m = plane % g->m, gi = m / mg;
	const int16_t *xg = j->x16 + n * sp_in * g->c + gi * cg;
	const int16_t *wm = j->w16 + m * k_sz * cg;
	double mult = 0.0;
	int64_t oc[MAX_SP] = { 0 };

	if (q->ydt != ES_DT_INT32)
		mult = (double)q->x_scale * (double)q->w_scale[q->n_ws == 1 ? 0 : m];
	for (int64_t o = 0; o < sp_out; o++) {
		uint32_t acc = q->bias ? (uint32_t)q->bias[m] : 0;
		int64_t kc[MAX_SP] = { 0 };
		for (int64_t kk = 0; kk < k_sz; kk++) {
			int64_t pos = 0;
			bool pad = false;
			for (int d = 0; d < g->nsp; d++) {
				int64_t p = oc[d] * g->stride[d] - g->pad_begin[d] +
					    kc[d] * g->dilation[d];
				if (p < 0 || p >= g->in[d]) {
					pad = true;
					break;
				}
				pos = pos * g->in[d] + p;
			}
			if (!pad)
				acc += dot16(xg + pos * g->c, wm + kk * cg, cg);
			odometer_next(kc, g->kernel, g->nsp);
		}
		int64_t yo = n * j->ys_n + m * j->ys_c;
		for (int d = 0; d < g->nsp; d++)
			yo += oc[d] * j->ys_sp[d];
		const int32_t a32 = (int32_t)acc; /* int32 wraps (GCC: modulo) */
		if (q->ydt == ES_DT_INT32) {
			((int32_t *)j->y)[yo] = a32;
		} else {
			double v = (double)a32 * mult;
			if (j->z)
				v += (double)q->z_scale *
				     (double)(ld8(j->z, q->ydt == ES_DT_UINT8, yo) - q->z_zp);
			if (j->relu && v < 0.0)
				v = 0.0;
			store_q(j->y, q->ydt, yo, rint(v / (double)q->y_scale) + (double)q->y_zp);
		}
		odometer_next(oc, g->out, g->nsp);
	}
}

static void ref_run(const struct qjob *j, int threads)
{
	const es_conv_geom *g = j->g;
	const int64_t planes = g->n * g->m;
	double work = (double)planes * (double)prod(g->out, g->nsp) *
		      (double)prod(g->kernel, g->nsp) * (double)(g->c / g->group);
	/* threads only pay off on bigger problems */
	ES_PARALLEL_FOR(threads, work > 65536.0, p, planes, ref_plane(j, p););
}

/* ---- oneDNN ----------------------------------------------------------------- */

static dnnl_data_type_t dnnl_dt(int dt)
{
	switch (dt) {
	case ES_DT_UINT8: return dnnl_u8;
	case ES_DT_INT8: return dnnl_s8;
	default: return dnnl_s32;
	}
}

/* Logical dims (n, c, spatial...) of rank nd stored channels-last:
 * (n, spatial..., c). */
static dnnl_status_t md_channels_last(dnnl_memory_desc_t *md, int nd, const int64_t *dims,
				      dnnl_data_type_t dt)
{
	int64_t str[ES_CONV_MAX_SP + 2];
	int64_t s = dims[1];
	str[1] = 1;
	for (int d = nd - 1; d >= 2; d--) {
		str[d] = s;
		s *= dims[d];
	}
	str[0] = s;
	return es_dnnl_md_strided(md, nd, dims, str, dt);
}

/* Builds the primitive of e->key with the state's baked parameters;
 * false when oneDNN refuses (the reference runs instead). */
static bool prim_create(const struct qconv_state *st, struct qprim *e)
{
	const es_conv_geom *g = &e->key.geom;
	dnnl_engine_t eng = es_dnnl_engine();
	dnnl_primitive_attr_t attr = NULL;
	dnnl_post_ops_t po = NULL;
	dnnl_primitive_desc_t pd = NULL;
	dnnl_memory_desc_t wei_any;
	dnnl_convolution_desc_t cd;
	int64_t sdims[ES_CONV_MAX_SP + 2], ddims[ES_CONV_MAX_SP + 2], wstr[ES_CONV_MAX_SP + 3];
	dnnl_dims_t wdims;
	dnnl_dims_t strides, dil, pl, pr;
	const dnnl_data_type_t ddt = dnnl_dt(e->key.ydt);
	const int nd = g->nsp + 2;
	const int64_t one = 1;
	bool ok = false;

	if (!eng || g->nsp < 1 || g->nsp > 3 || g->n < 1 || g->c < 1 || g->m < 1)
		return false;
	sdims[0] = ddims[0] = g->n;
	sdims[1] = g->c;
	ddims[1] = g->m;
	for (int d = 0; d < g->nsp; d++) {
		sdims[2 + d] = g->in[d];
		ddims[2 + d] = g->out[d];
		strides[d] = g->stride[d];
		dil[d] = g->dilation[d] - 1;
		pl[d] = g->pad_begin[d];
		pr[d] = g->pad_end[d];
	}
	/* W in the ONNX layout (m, c/group, kernel...), oneDNN's logical
	 * order [group,] m/group, c/group, kernel... */
	const int64_t cg = g->c / g->group, mg = g->m / g->group;
	const int64_t k_sz = prod(g->kernel, g->nsp);
	const int lead = g->group > 1, wnd = lead + nd;
	if (lead) {
		wdims[0] = g->group;
		wstr[0] = mg * cg * k_sz;
	}
	wdims[lead] = mg;
	wstr[lead] = cg * k_sz;
	wdims[lead + 1] = cg;
	wstr[lead + 1] = k_sz;
	int64_t ks = 1;
	for (int d = g->nsp - 1; d >= 0; d--) {
		wdims[lead + 2 + d] = g->kernel[d];
		wstr[lead + 2 + d] = ks;
		ks *= g->kernel[d];
	}

	if (md_channels_last(&e->src_md, nd, sdims, dnnl_dt(e->key.xdt)) ||
	    md_channels_last(&e->dst_md, nd, ddims, ddt) ||
	    es_dnnl_md_plain(&e->bias_md, 1, &g->m, dnnl_s32) ||
	    es_dnnl_md_plain(&e->zp_md, 1, &one, dnnl_s32) ||
	    es_dnnl_md_strided(&e->wei_user_md, wnd, wdims, wstr, dnnl_s8) ||
	    dnnl_memory_desc_init_by_tag(&wei_any, wnd, wdims, dnnl_s8, dnnl_format_tag_any))
		return false;
	if (dnnl_dilated_convolution_forward_desc_init(&cd, dnnl_forward_inference,
			dnnl_convolution_direct, &e->src_md, &wei_any,
			e->key.has_bias ? &e->bias_md : NULL, &e->dst_md,
			strides, dil, pl, pr))
		return false;
	if (dnnl_primitive_attr_create(&attr))
		return false;
	if (dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user))
		goto out;
	const bool rt = e->key.runtime;
	const int32_t rt_zp = DNNL_RUNTIME_S32_VAL;
	if ((rt ? e->key.rt_src_zp : st->x_zp != 0) &&
	    dnnl_primitive_attr_set_zero_points(attr, DNNL_ARG_SRC, 1, 0, rt ? &rt_zp : &st->x_zp))
		goto out;
	/* (oneDNN 2.6's int8 convolutions take no run-time output scales) */
	if (st->kind != K_INTEGER && !rt) {
		if (dnnl_primitive_attr_set_output_scales(attr, st->n_out_scales,
				st->n_out_scales > 1 ? 1 << 1 : 0, st->out_scales))
			goto out;
		if (st->y_zp &&
		    dnnl_primitive_attr_set_zero_points(attr, DNNL_ARG_DST, 1, 0, &st->y_zp))
			goto out;
		if (e->key.sum || st->relu) {
			if (dnnl_post_ops_create(&po))
				goto out;
			if (e->key.sum &&
			    dnnl_post_ops_append_sum_v3(po, st->sum_scale, st->z_zp, ddt))
				goto out;
			if (st->relu &&
			    dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f))
				goto out;
			if (dnnl_primitive_attr_set_post_ops(attr, po))
				goto out;
		}
	}
	if (dnnl_primitive_desc_create(&pd, &cd, attr, eng, NULL))
		goto out;
	if (dnnl_primitive_create(&e->prim, pd)) {
		e->prim = NULL;
		goto out;
	}
	const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
	if (!md)
		goto out;
	e->wei_md = *md;
	e->wei_bytes = dnnl_memory_desc_get_size(md);
	e->pack_w = !dnnl_memory_desc_equal(&e->wei_md, &e->wei_user_md);
	md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
	if (md) {
		e->scratch_md = *md;
		e->scratch_bytes = dnnl_memory_desc_get_size(md);
	}
	ok = true;
out:
	if (!ok && e->prim) {
		dnnl_primitive_destroy(e->prim);
		e->prim = NULL;
	}
	if (pd)
		dnnl_primitive_desc_destroy(pd);
	if (po)
		dnnl_post_ops_destroy(po);
	dnnl_primitive_attr_destroy(attr);
	return ok;
}

/* W as s8 in the ONNX layout: W itself, or u8 W shifted by its zero point
 * 128 into dst (numel entries). */
static const int8_t *weights_s8(const es_tensor *w, int8_t *dst)
{
	if (w->dtype == ES_DT_INT8)
		return w->data;
	const uint8_t *src = w->data;
	int64_t n = es_tensor_numel(w);
	for (int64_t i = 0; i < n; i++)
		dst[i] = (int8_t)((int32_t)src[i] - 128);
	return dst;
}

/* Packs constant W into e->packed_w once (load time of the entry). */
static bool pack_const_weights(struct qprim *e, const es_tensor *w)
{
	int8_t *conv = NULL;
	const int8_t *ws;
	size_t n = (size_t)es_tensor_numel(w);

	if (w->dtype == ES_DT_UINT8 && !(conv = malloc(n ? n : 1)))
		return false;
	ws = weights_s8(w, conv);
	e->packed_w = es_aligned_alloc(e->pack_w ? e->wei_bytes : n);
	bool ok = e->packed_w != NULL;
	if (ok && e->pack_w)
		ok = es_dnnl_reorder(&e->wei_user_md, ws, &e->wei_md, e->packed_w) == dnnl_success;
	else if (ok)
		memcpy(e->packed_w, ws, n);
	free(conv);
	return ok;
}

static struct qprim *prim_build(const struct qconv_state *st, const struct qkey *key,
				const es_tensor *w)
{
	struct qprim *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	atomic_flag_clear(&e->mems_busy);
	e->key = *key;
	es_dnnl_set_threads(key->threads);
	if (!prim_create(st, e)) {
		e->use_ref = true;
		return e;
	}
	if (st->w_const && !pack_const_weights(e, w)) {
		es_aligned_free(e->packed_w);
		e->packed_w = NULL;
		dnnl_primitive_destroy(e->prim);
		e->prim = NULL;
		e->use_ref = true;
	}
	return e;
}

/* The cache entry for key, with a reference held (prim_put); NULL when out
 * of memory. */
static struct qprim *prim_get(struct qconv_state *st, const struct qkey *key,
			      const es_tensor *w)
{
	struct qprim *e = NULL;
	int victim = 0;

	pthread_mutex_lock(&st->lock);
	st->clock++;
	for (int i = 0; i < CACHE_SLOTS; i++) {
		struct qprim *c = st->cache[i];
		if (c && !memcmp(&c->key, key, sizeof(*key))) {
			e = c;
			break;
		}
		if (!c || (st->cache[victim] && c->last_use < st->cache[victim]->last_use))
			victim = i;
	}
	if (!e) {
		e = prim_build(st, key, w);
		if (e) {
			prim_put(st->cache[victim]);
			atomic_init(&e->refs, 1); /* the cache's reference */
			st->cache[victim] = e;
		}
	}
	if (e) {
		e->last_use = st->clock;
		atomic_fetch_add(&e->refs, 1);
	}
	pthread_mutex_unlock(&st->lock);
	return e;
}

/* Executes e on channels-last x and y; w in e->wei_md's layout. The
 * entry's memory objects serve one run at a time; a concurrent run of the
 * same entry makes temporary ones. */
static int prim_exec(es_kctx *k, struct qprim *e, const void *x, const void *w,
		     const int32_t *b, void *y, void *scratch, const int32_t *rt_x_zp)
{
	dnnl_stream_t strm = es_dnnl_stream();
	dnnl_memory_t tmp[N_MEMS] = { 0 };
	const void *tmp_bound[N_MEMS] = { 0 };
	const bool mine = !atomic_flag_test_and_set(&e->mems_busy);
	dnnl_memory_t *mem = mine ? e->mem : tmp;
	const void **bound = mine ? e->bound : tmp_bound;
	const dnnl_memory_desc_t *mds[N_MEMS] = {
		&e->src_md, &e->wei_md, &e->dst_md, &e->bias_md, &e->scratch_md,
		&e->zp_md,
	};
	const void *bufs[N_MEMS] = {
		x, w, y, b, scratch, rt_x_zp,
	};
	const int args_id[N_MEMS] = {
		DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST, DNNL_ARG_BIAS, DNNL_ARG_SCRATCHPAD,
		DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_SRC,
	};
	const bool use[N_MEMS] = {
		true, true, true, e->key.has_bias, e->scratch_bytes != 0,
		e->key.runtime && e->key.rt_src_zp,
	};
	dnnl_exec_arg_t args[N_MEMS];
	dnnl_status_t s = dnnl_runtime_error;
	int n = 0;

	if (!strm)
		goto out;
	for (int i = 0; i < N_MEMS; i++) {
		if (!use[i])
			continue;
		if ((s = es_dnnl_bind(&mem[i], &bound[i], mds[i], bufs[i])))
			goto out;
		args[n++] = (dnnl_exec_arg_t){ args_id[i], mem[i] };
	}
	es_dnnl_set_threads(k->threads);
	s = dnnl_primitive_execute(e->prim, strm, n, args);
	if (s == dnnl_success)
		s = dnnl_stream_wait(strm);
out:
	if (!mine || s != dnnl_success) {
		for (int i = 0; i < N_MEMS; i++) {
			if (mem[i])
				dnnl_memory_destroy(mem[i]);
			mem[i] = NULL;
			bound[i] = NULL;
		}
	}
	if (mine)
		atomic_flag_clear(&e->mems_busy);
	if (s != dnnl_success)
		return FAIL(k, ES_EINTERNAL, "oneDNN int8 convolution failed: %s",
			    es_dnnl_strstatus(s));
	return 0;
}

/* dst[i][p][c] = src[i][c][p] for n images (the reverse with c and p
 * swapped): 32 x 32 tiles. */
#define DEFINE_TRANSPOSE(NAME, T)                                                  \
	static void NAME(const T *src, T *dst, int64_t n, int64_t c, int64_t p)    \
	{                                                                          \
		const int64_t TS = 32;                                             \
		for (int64_t i = 0; i < n; i++) {                                  \
			const T *s = src + i * c * p;                              \
			T *d = dst + i * c * p;                                    \
			for (int64_t c0 = 0; c0 < c; c0 += TS) {                   \
				const int64_t c1 = c0 + TS < c ? c0 + TS : c;      \
				for (int64_t p0 = 0; p0 < p; p0 += TS) {           \
					const int64_t p1 = p0 + TS < p ? p0 + TS : p; \
					for (int64_t pp = p0; pp < p1; pp++)       \
						for (int64_t cc = c0; cc < c1; cc++) \
							d[pp * c + cc] = s[cc * p + pp]; \
				}                                                  \
			}                                                          \
		}                                                                  \
	}

DEFINE_TRANSPOSE(transpose_u8, uint8_t)
DEFINE_TRANSPOSE(transpose_s32, int32_t)

static void transpose_cp(const void *src, void *dst, size_t esz, int64_t n, int64_t c,
			 int64_t p)
{
	if (esz == 1)
		transpose_u8(src, dst, n, c, p);
	else
		transpose_s32(src, dst, n, c, p);
}

/* ---- run --------------------------------------------------------------------- */

static size_t dt_size(es_dtype dt)
{
	return dt == ES_DT_INT32 ? 4 : 1;
}

/*
 * Requantizes `count` int32 sums acc of a run whose parameters are not
 * constants into y, by the formulas at the top, in double as the
 * reference does. acc, Z and y are channels-last (m channels, fastest).
 */
static void requantize(const struct qvals *q, bool relu, const int32_t *acc,
		       const void *z, void *y, int64_t count, int64_t m)
{
	const bool z_u8 = q->ydt == ES_DT_UINT8;
	const double ys = q->y_scale, yzp = q->y_zp, zs = q->z_scale;
	for (int64_t base = 0; base < count; base += m) {
		for (int64_t c = 0; c < m; c++) {
			const int64_t i = base + c;
			double v = (double)acc[i] * (double)q->x_scale *
				   (double)q->w_scale[q->n_ws == 1 ? 0 : c];
			if (z)
				v += zs * (double)(ld8(z, z_u8, i) - q->z_zp);
			if (relu && v < 0.0)
				v = 0.0;
			store_q(y, q->ydt, i, rint(v / ys) + yzp);
		}
	}
}

/*
 * The oneDNN path once the output exists: y (the node's layout) already
 * holds Z when there is one, the parameters are baked and the layout is
 * channels-last. Fills y and returns 0, or fails (scratch, execution).
 */
static int run_dnnl(es_kctx *k, const struct qconv_state *st, struct qprim *e,
		    const es_tensor *x, const es_tensor *w, const struct qvals *q,
		    const es_tensor *z, void *y)
{
	const es_conv_geom *g = &e->key.geom;
	const int64_t hw_in = prod(g->in, g->nsp), hw_out = prod(g->out, g->nsp);
	/* the primitive's destination: int32 sums when this run requantizes */
	const bool requant = e->key.runtime && q->ydt != ES_DT_INT32;
	const size_t dsz = dt_size((es_dtype)e->key.ydt);
	const void *xs = x->data;
	void *ys = y;
	const void *wp = e->packed_w;
	void *scratch = NULL;

	if (!st->channels_last) {
		void *xt = es_op_scratch(k, g->n * g->c * hw_in, 1);
		if (!xt)
			return k->err->code;
		transpose_cp(x->data, xt, 1, g->n, g->c, hw_in);
		xs = xt;
	}
	if (!st->channels_last || requant) {
		void *yt = es_op_scratch(k, g->n * g->m * hw_out, dsz);
		if (!yt)
			return k->err->code;
		if (z && !requant)
			transpose_cp(z->data, yt, dsz, g->n, g->m, hw_out);
		ys = yt;
	}
	if (!wp) {
		int64_t nw = es_tensor_numel(w);
		int8_t *conv = NULL;
		if (w->dtype == ES_DT_UINT8 && !(conv = es_op_scratch(k, nw, 1)))
			return k->err->code;
		const int8_t *ws = weights_s8(w, conv);
		wp = ws;
		if (e->pack_w) {
			void *packed = es_op_scratch(k, (int64_t)e->wei_bytes, 1);
			if (!packed)
				return k->err->code;
			es_dnnl_set_threads(k->threads);
			if (es_dnnl_reorder(&e->wei_user_md, ws, &e->wei_md, packed))
				return FAIL(k, ES_EINTERNAL, "oneDNN weight reorder failed");
			wp = packed;
		}
	}
	if (e->scratch_bytes && !(scratch = es_op_scratch(k, (int64_t)e->scratch_bytes, 1)))
		return k->err->code;
	int rc = prim_exec(k, e, xs, wp, q->bias, ys, scratch, e->key.runtime ? &q->x_zp : NULL);
	if (rc)
		return rc;
	if (requant && st->channels_last) {
		requantize(q, st->relu, ys, z ? z->data : NULL, y, g->n * hw_out * g->m, g->m);
	} else if (requant) {
		/* in channels-last scratch, then one transpose: writing NCHW
		 * directly strides across every plane per element */
		const int64_t ny = g->n * hw_out * g->m;
		uint8_t *yq = es_op_scratch(k, ny, 1);
		uint8_t *zt = z ? es_op_scratch(k, ny, 1) : NULL;
		if (!yq || (z && !zt))
			return k->err->code;
		if (z)
			transpose_u8(z->data, zt, g->n, g->m, hw_out);
		requantize(q, st->relu, ys, zt, yq, ny, g->m);
		transpose_u8(yq, y, g->n, hw_out, g->m);
	} else if (!st->channels_last) {
		transpose_cp(ys, y, dsz, g->n, hw_out, g->m);
	}
	return 0;
}

static int qconv_run(es_kctx *k)
{
	struct qconv_state *st = k->state;
	const bool integer = st->kind == K_INTEGER;
	const es_tensor *x = es_kin(k, 0), *w = es_kin(k, integer ? 1 : IN_W);
	const es_tensor *z = integer ? NULL : es_kin(k, IN_Z);
	int64_t xd[ES_MAX_DIMS], ydims[ES_MAX_DIMS];
	es_conv_geom g;
	struct qvals q;
	int rc;

	if (!x || !w)
		return FAIL(k, ES_EINVAL, "inputs x and w are required");
	if (!es_op_dims_fit(x) || !es_op_dims_fit(w))
		return FAIL(k, ES_ERANGE, "inputs x and w have invalid dims");
	const int nd = x->ndim;
	memcpy(xd, x->dims, sizeof(int64_t) * (size_t)nd);
	if (st->channels_last) {
		if (nd < 3)
			return FAIL(k, ES_ESHAPE,
				    "input x has rank %d, channels_last expects (N, D1, ..., C) of rank >= 3",
				    nd);
		xd[1] = x->dims[nd - 1];
		for (int d = 2; d < nd; d++)
			xd[d] = x->dims[d - 1];
	}
	if ((rc = qconv_geometry(k, st, xd, nd, w, &g)) ||
	    (rc = read_qvals(k, st, x, w, g.m, &q)))
		return rc;

	ydims[0] = g.n;
	if (st->channels_last) {
		for (int d = 0; d < g.nsp; d++)
			ydims[1 + d] = g.out[d];
		ydims[nd - 1] = g.m;
	} else {
		ydims[1] = g.m;
		for (int d = 0; d < g.nsp; d++)
			ydims[2 + d] = g.out[d];
	}
	if (z && (z->ndim != nd || memcmp(z->dims, ydims, sizeof(int64_t) * (size_t)nd))) {
		char b1[96], b2[96];
		return FAIL(k, ES_ESHAPE, "input %d (Z) has shape %s, expected %s (the shape of y)",
			    IN_Z, es_op_fmt_shape(b1, sizeof(b1), z),
			    es_op_fmt_dims(b2, sizeof(b2), ydims, nd));
	}
	int64_t ny;
	if ((rc = es_shape_numel(ydims, nd, dt_size(q.ydt), &ny)))
		return FAIL(k, rc, "output size overflows");

	/* the oneDNN path, for weights s8 with zero point 0 or u8 with 128:
	 * with the parameters baked when they are model constants, else an
	 * int32 destination requantized here */
	struct qprim *e = NULL;
	const bool w_u8 = w->dtype == ES_DT_UINT8;
	const bool consts = st->baked && st->w_zp_all == (w_u8 ? 128 : 0) &&
			    (integer || st->n_out_scales == q.n_ws);
	const bool at_run = !st->baked && wzp_is_shift(&q, w_u8);
	if ((consts || at_run) && ny > 0 && g.n > 0 && g.c > 0 && g.nsp <= 3) {
		struct qkey key;
		memset(&key, 0, sizeof(key));
		key.geom = g;
		key.threads = k->threads;
		key.xdt = x->dtype;
		key.wdt = w->dtype;
		key.ydt = q.ydt;
		key.has_bias = q.bias != NULL;
		key.sum = z != NULL;
		if (!consts) {
			key.runtime = true;
			key.ydt = ES_DT_INT32;
			key.sum = false;
			key.rt_src_zp = q.x_zp != 0;
		}
		e = prim_get(st, &key, w);
		if (e && e->use_ref) {
			prim_put(e);
			e = NULL;
		}
	}

	bool inplace = false;
	if (e && !e->key.runtime && z && st->channels_last &&
	    k->node->inputs[IN_Z] != k->node->inputs[0])
		rc = es_kctx_output_inplace(k, 0, IN_Z, q.ydt, nd, ydims, &inplace);
	else
		rc = es_kctx_output(k, 0, q.ydt, nd, ydims);
	if (rc)
		goto out;
	void *y = k->outputs[0]->data;
	if (ny == 0)
		goto out;
	if (e) {
		if (z && st->channels_last && !inplace && !e->key.runtime)
			memcpy(y, z->data, (size_t)ny * dt_size(q.ydt));
		rc = run_dnnl(k, st, e, x, w, &q, z, y);
		goto out;
	}

	/* the reference: shifted int16 copies of x (channels-last) and w
	 * (kernel-major rows), then a dot product per tap */
	const int64_t sp_in = prod(g.in, g.nsp), k_sz = prod(g.kernel, g.nsp);
	const int64_t cg = g.c / g.group;
	/* (at least one element each: x or w may be empty along C) */
	int16_t *x16 = es_op_scratch(k, es_tensor_numel(x) + 1, sizeof(int16_t));
	int16_t *w16 = es_op_scratch(k, es_tensor_numel(w) + 1, sizeof(int16_t));
	if (!x16 || !w16) {
		rc = k->err->code;
		goto out;
	}
	const bool x_u8 = x->dtype == ES_DT_UINT8;
	const int64_t step_p = st->channels_last ? g.c : 1, step_c = st->channels_last ? 1 : sp_in;
	for (int64_t i = 0; i < g.n; i++)
		for (int64_t p = 0; p < sp_in; p++)
			for (int64_t c = 0; c < g.c; c++)
				x16[(i * sp_in + p) * g.c + c] = (int16_t)(ld8(x->data, x_u8,
					i * sp_in * g.c + p * step_p + c * step_c) - q.x_zp);
	for (int64_t m = 0; m < g.m; m++) {
		const int32_t zp = wzp_at(&q, m);
		for (int64_t c = 0; c < cg; c++)
			for (int64_t kk = 0; kk < k_sz; kk++)
				w16[(m * k_sz + kk) * cg + c] = (int16_t)(ld8(w->data, w_u8,
					(m * cg + c) * k_sz + kk) - zp);
	}
	struct qjob j = {
		.g = &g, .q = &q, .x16 = x16, .w16 = w16, .z = z ? z->data : NULL, .y = y,
		.relu = st->relu,
	};
	layout_strides(&g, g.m, g.out, st->channels_last, &j.ys_n, &j.ys_c, j.ys_sp);
	ref_run(&j, k->threads);
out:
	prim_put(e);
	return rc;
}

#define Q8 (ES_T(ES_DT_UINT8) | ES_T(ES_DT_INT8))

static const es_op_def defs[] = {
	{
		.domain = "", .op_type = "QLinearConv", .since = 10,
		.min_inputs = 8, .max_inputs = 9, .min_outputs = 1, .max_outputs = 1,
		.types = Q8, .same_type_inputs = 1u << IN_XZP, .out_type = ES_OUT_UNKNOWN,
		.init = qlinear_init, .fini = qconv_fini, .run = qconv_run,
	},
	{
		.domain = "", .op_type = "ConvInteger", .since = 10,
		.min_inputs = 2, .max_inputs = 4, .min_outputs = 1, .max_outputs = 1,
		.types = Q8, .same_type_inputs = 1u << 2, .out_type = ES_OUT_FIXED,
		.out_dtype = ES_DT_INT32,
		.init = integer_init, .fini = qconv_fini, .run = qconv_run,
	},
	{
		.domain = ES_DOMAIN, .op_type = "QConv", .since = 1,
		.min_inputs = 8, .max_inputs = 12, .min_outputs = 1, .max_outputs = 1,
		.types = Q8, .same_type_inputs = 1u << IN_XZP, .out_type = ES_OUT_UNKNOWN,
		.init = qconv_init, .fini = qconv_fini, .run = qconv_run,
	},
};

const es_op_table es_ops_qconv = { defs, sizeof(defs) / sizeof(defs[0]) };
