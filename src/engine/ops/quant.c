/*
 * Linear quantization: QuantizeLinear, DequantizeLinear (per tensor and,
 * from opset 13, per axis) and DynamicQuantizeLinear.
 *
 *   QuantizeLinear:   y = saturate(round_half_even(x / scale) + zero_point)
 *   DequantizeLinear: y = (x - zero_point) * scale
 *
 * x / scale is a float division, as the specification writes it (not a
 * multiplication by the reciprocal, which rounds differently at the .5
 * ties). These are what QDQ models (a quantization tool's output) contain
 * around every quantized operator; DequantizeLinear of a constant weight
 * folds to a float constant at load.
 */
#include <float.h>
#include <stdbool.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "engine/ops/op.h"
#include "engine/ops/op_util.h"

/* axis (opset >= 13): the node's attribute, default 1. */
typedef struct quant_state {
	int64_t axis;
} quant_state;

static int quant_init(es_op_init_ctx *c, void **state)
{
	quant_state *st = es_op_state_alloc(c, sizeof(*st));
	if (!st)
		return c->err->code;
	int rc = es_node_attr_int(c->node, "axis", 1, &st->axis, c->err);
	if (rc) {
		es_op_state_free(st);
		return rc;
	}
	*state = st;
	return 0;
}

/*
 * The quantization parameters of one node run: scale (float) and zero
 * point (optional, its dtype is the quantized type) are scalars, or 1-D of
 * length x.dims[axis] (opset >= 13). Fills *per_axis_len (1: per tensor),
 * *inner (elements per step of the axis) and checks dtypes.
 */
typedef struct qparams {
	const float *scale;
	const es_tensor *zp;     /* NULL: zero */
	int64_t len;             /* scale entries: 1 or dims[axis] */
	int64_t inner;           /* product of dims after axis */
} qparams;

static int read_qparams(es_kctx *k, const es_tensor *x, int scale_in, bool quantize,
			qparams *q)
{
	const es_tensor *s = es_kin(k, scale_in);
	const es_tensor *zp = es_kin(k, scale_in + 1);
	const quant_state *st = k->state;
	char b1[64], b2[64];
	if (s->dtype != ES_DT_FLOAT)
		return es_kctx_fail(k, ES_EUNSUPPORTED,
				    "input %d (scale) has type %s; only float scales are supported",
				    scale_in, es_dtype_name(s->dtype));
	int64_t n = es_tensor_numel(s);
	memset(q, 0, sizeof(*q));
	q->scale = s->data;
	q->zp = zp;
	q->len = 1;
	q->inner = 1;
	if (s->ndim > 1 || (s->ndim == 1 && k->node->opset < 13 && n != 1))
		return es_kctx_fail(k, ES_ESHAPE,
				    "input %d (scale) must be a scalar%s, got shape %s", scale_in,
				    k->node->opset >= 13 ? " or 1-D" : "",
				    es_op_fmt_shape(b1, sizeof(b1), s));
	if (s->ndim == 1) {
		int axis;
		if (!es_op_norm_axis(st ? st->axis : 1, x->ndim, &axis))
			return es_kctx_fail(k, ES_EINVAL,
					    "attribute 'axis' = %lld is outside [-%d, %d] for input shape %s",
					    (long long)(st ? st->axis : 1), x->ndim, x->ndim - 1,
					    es_op_fmt_shape(b1, sizeof(b1), x));
		if (n != x->dims[axis])
			return es_kctx_fail(k, ES_ESHAPE,
					    "input %d (scale) has %lld entries, expected %lld (dimension %d of input 0, shape %s)",
					    scale_in, (long long)n, (long long)x->dims[axis], axis,
					    es_op_fmt_shape(b1, sizeof(b1), x));
		q->len = n;
		for (int d = axis + 1; d < x->ndim; d++)
			q->inner *= x->dims[d];
	}
	if (zp) {
		if (es_tensor_numel(zp) != q->len || zp->ndim > 1 || zp->ndim != s->ndim)
			return es_kctx_fail(k, ES_ESHAPE,
					    "input %d (zero point) has shape %s, expected the scale's shape %s",
					    scale_in + 1, es_op_fmt_shape(b1, sizeof(b1), zp),
					    es_op_fmt_shape(b2, sizeof(b2), s));
	}
	for (int64_t i = 0; i < q->len; i++)
		if (quantize && !(q->scale[i] > 0.0f) && !(q->scale[i] < 0.0f))
			return es_kctx_fail(k, ES_EINVAL,
					    "input %d (scale) entry %lld is %g: a quantization scale must be nonzero",
					    scale_in, (long long)i, (double)q->scale[i]);
	return 0;
}

static int64_t zp_at(const qparams *q, int64_t c)
{
	if (!q->zp)
		return 0;
	switch (q->zp->dtype) {
	case ES_DT_UINT8: return ((const uint8_t *)q->zp->data)[c];
	case ES_DT_INT8: return ((const int8_t *)q->zp->data)[c];
	case ES_DT_INT32: return ((const int32_t *)q->zp->data)[c];
	default: return 0;
	}
}

static float saturate_round(float v, float lo, float hi)
{
	/* NaN saturates to the low end like the specification's reference */
	float r = rintf(v); /* the default rounding mode: half to even */
	if (!(r >= lo))
		return lo;
	return r > hi ? hi : r;
}

/* ---- QuantizeLinear ----------------------------------------------------------- */

static int quantize_run(es_kctx *k)
{
	const es_tensor *x = es_kin(k, 0);
	int rc = es_op_check_dtype(k, x, ES_T(ES_DT_FLOAT) | ES_T(ES_DT_INT32), "input 0 (x)");
	if (rc)
		return rc;
	qparams q;
	if ((rc = read_qparams(k, x, 1, true, &q)))
		return rc;
	es_dtype out = q.zp ? q.zp->dtype : ES_DT_UINT8;
	if (out != ES_DT_UINT8 && out != ES_DT_INT8)
		return es_kctx_fail(k, ES_ETYPE,
				    "input 2 (zero point) has type %s; expected uint8 or int8",
				    es_dtype_name(out));
	if ((rc = es_kctx_output(k, 0, out, x->ndim, x->dims)))
		return rc;
	float lo = out == ES_DT_UINT8 ? 0.0f : -128.0f;
	float hi = out == ES_DT_UINT8 ? 255.0f : 127.0f;
	int64_t n = es_tensor_numel(x);
	void *y = k->outputs[0]->data;
	int threads = es_op_threads(k, n, 1 << 16);
	ES_PARALLEL_FOR(threads, true, i, n, {
		int64_t c = q.len > 1 ? (i / q.inner) % q.len : 0;
		float xv = x->dtype == ES_DT_FLOAT ? ((const float *)x->data)[i]
						   : (float)((const int32_t *)x->data)[i];
		float v = saturate_round(xv / q.scale[c], -FLT_MAX, FLT_MAX);
		v = saturate_round(v + (float)zp_at(&q, c), lo, hi);
		if (out == ES_DT_UINT8)
			((uint8_t *)y)[i] = (uint8_t)v;
		else
			((int8_t *)y)[i] = (int8_t)v;
	});
	return 0;
}

/* ---- DequantizeLinear ------------------------------------------------------------ */

static int dequantize_run(es_kctx *k)
{
	const es_tensor *x = es_kin(k, 0);
	int rc = es_op_check_dtype(k, x, ES_T(ES_DT_UINT8) | ES_T(ES_DT_INT8) | ES_T(ES_DT_INT32),
				   "input 0 (x)");
	if (rc)
		return rc;
	qparams q;
	if ((rc = read_qparams(k, x, 1, false, &q)))
		return rc;
	if (q.zp && q.zp->dtype != x->dtype)
		return es_kctx_fail(k, ES_ETYPE,
				    "input 2 (zero point) has type %s, expected %s like input 0",
				    es_dtype_name(q.zp->dtype), es_dtype_name(x->dtype));
	if (x->dtype == ES_DT_INT32 && q.zp)
		for (int64_t c = 0; c < q.len; c++)
			if (zp_at(&q, c))
				return es_kctx_fail(k, ES_EINVAL,
						    "input 2 (zero point) entry %lld is %lld: int32 input requires a zero point of 0",
						    (long long)c, (long long)zp_at(&q, c));
	if ((rc = es_kctx_output(k, 0, ES_DT_FLOAT, x->ndim, x->dims)))
		return rc;
	int64_t n = es_tensor_numel(x);
	float *y = k->outputs[0]->data;
	int threads = es_op_threads(k, n, 1 << 16);
	ES_PARALLEL_FOR(threads, true, i, n, {
		int64_t c = q.len > 1 ? (i / q.inner) % q.len : 0;
		int64_t xv = x->dtype == ES_DT_UINT8 ? ((const uint8_t *)x->data)[i]
			   : x->dtype == ES_DT_INT8 ? ((const int8_t *)x->data)[i]
						    : ((const int32_t *)x->data)[i];
		y[i] = (float)(xv - zp_at(&q, c)) * q.scale[c];
	});
	return 0;
}

/* ---- DynamicQuantizeLinear ---------------------------------------------------------- */

static int dynquant_run(es_kctx *k)
{
	const es_tensor *x = es_kin(k, 0);
	int rc = es_op_check_dtype(k, x, ES_T(ES_DT_FLOAT), "input 0 (x)");
	if (rc)
		return rc;
	int64_t n = es_tensor_numel(x);
	const float *xd = x->data;
	/* the range always includes 0, so that 0 is exactly representable */
	float mn = 0.0f, mx = 0.0f;
	for (int64_t i = 0; i < n; i++) {
		if (isnan(xd[i]))
			return es_kctx_fail(k, ES_EINVAL,
					    "input 0 (x) element %lld is NaN: no quantization range exists",
					    (long long)i);
		mn = xd[i] < mn ? xd[i] : mn;
		mx = xd[i] > mx ? xd[i] : mx;
	}
	if (isinf(mn) || isinf(mx))
		return es_kctx_fail(k, ES_EINVAL,
				    "input 0 (x) holds an infinity: no quantization range exists");
	float scale = (mx - mn) / 255.0f;
	float zp = scale > 0.0f ? saturate_round(0.0f - mn / scale, 0.0f, 255.0f) : 0.0f;
	int64_t one = 1;
	if ((rc = es_kctx_output(k, 0, ES_DT_UINT8, x->ndim, x->dims)) ||
	    (rc = es_kctx_output(k, 1, ES_DT_FLOAT, 0, &one)) ||
	    (rc = es_kctx_output(k, 2, ES_DT_UINT8, 0, &one)))
		return rc;
	uint8_t *y = k->outputs[0]->data;
	*(float *)k->outputs[1]->data = scale;
	*(uint8_t *)k->outputs[2]->data = (uint8_t)zp;
	for (int64_t i = 0; i < n; i++)
		y[i] = scale > 0.0f
			? (uint8_t)saturate_round(saturate_round(xd[i] / scale, -FLT_MAX, FLT_MAX) + zp,
						  0.0f, 255.0f)
			: (uint8_t)zp;
	return 0;
}

#define Q_ROW(op, since_, until_, types_, out_, odt_, init_, run_, max_out_)     \
	{ .op_type = op, .since = since_, .until = until_,                     \
	  .min_inputs = (max_out_) == 3 ? 1 : 2,                               \
	  .max_inputs = (max_out_) == 3 ? 1 : 3, .min_outputs = max_out_,      \
	  .max_outputs = max_out_, .types = types_, .out_type = out_,          \
	  .out_dtype = odt_, .init = init_, .fini = es_op_state_free,          \
	  .run = run_ }

static const es_op_def defs[] = {
	/* 10: per tensor; 13: per axis (axis attribute); 19 adds float16
	 * inputs and float8 outputs (not implemented) */
	Q_ROW("QuantizeLinear", 10, 18, ES_T(ES_DT_FLOAT) | ES_T(ES_DT_INT32), ES_OUT_UNKNOWN,
	      ES_DT_UNDEFINED, quant_init, quantize_run, 1),
	Q_ROW("DequantizeLinear", 10, 18,
	      ES_T(ES_DT_UINT8) | ES_T(ES_DT_INT8) | ES_T(ES_DT_INT32), ES_OUT_FIXED,
	      ES_DT_FLOAT, quant_init, dequantize_run, 1),
	Q_ROW("DynamicQuantizeLinear", 11, 0, ES_T(ES_DT_FLOAT), ES_OUT_FIXED, ES_DT_UINT8,
	      NULL, dynquant_run, 3),
};

const es_op_table es_ops_quant = { defs, sizeof(defs) / sizeof(defs[0]) };
