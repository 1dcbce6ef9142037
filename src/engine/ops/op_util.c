/* Helpers shared by the operator families; see op_util.h. */
#include "engine/ops/op_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/fp16.h"

/* ---- shapes ------------------------------------------------------------- */

const char *es_op_fmt_dims(char *buf, size_t len, const int64_t *dims, int ndim)
{
	size_t at;
	int n = snprintf(buf, len, "[");
	at = n > 0 ? (size_t)n : 0;
	for (int i = 0; i < ndim && at < len; i++) {
		n = snprintf(buf + at, len - at, "%s%lld", i ? "," : "",
			     (long long)dims[i]);
		if (n < 0)
			break;
		at += (size_t)n;
	}
	if (at < len)
		snprintf(buf + at, len - at, "]");
	return buf;
}

const char *es_op_fmt_shape(char *buf, size_t len, const es_tensor *t)
{
	return es_op_fmt_dims(buf, len, t->dims, t->ndim);
}

bool es_op_dims_fit(const es_tensor *t)
{
	int64_t n = 1;
	for (int d = 0; d < t->ndim; d++) {
		if (t->dims[d] < 0)
			return false;
		if (t->dims[d] && __builtin_mul_overflow(n, t->dims[d], &n))
			return false;
	}
	return true;
}

bool es_op_norm_axis(int64_t axis, int rank, int *out)
{
	if (axis < -(int64_t)rank || axis >= rank)
		return false;
	*out = (int)(axis < 0 ? axis + rank : axis);
	return true;
}

/* ---- dtypes and elements ------------------------------------------------ */

bool es_op_is_float(es_dtype dt)
{
	return dt == ES_DT_FLOAT || dt == ES_DT_DOUBLE || dt == ES_DT_FLOAT16 ||
	       dt == ES_DT_BFLOAT16;
}

double es_op_load_f64(es_dtype dt, const void *p, int64_t i)
{
	switch (dt) {
	case ES_DT_FLOAT: return ((const float *)p)[i];
	case ES_DT_DOUBLE: return ((const double *)p)[i];
	case ES_DT_FLOAT16: return es_half_to_float(((const uint16_t *)p)[i]);
	case ES_DT_BFLOAT16: return es_bf16_to_float(((const uint16_t *)p)[i]);
	case ES_DT_INT8: return ((const int8_t *)p)[i];
	case ES_DT_INT16: return ((const int16_t *)p)[i];
	case ES_DT_INT32: return ((const int32_t *)p)[i];
	case ES_DT_INT64: return (double)((const int64_t *)p)[i];
	case ES_DT_UINT8: return ((const uint8_t *)p)[i];
	case ES_DT_UINT16: return ((const uint16_t *)p)[i];
	case ES_DT_UINT32: return ((const uint32_t *)p)[i];
	case ES_DT_UINT64: return (double)((const uint64_t *)p)[i];
	case ES_DT_BOOL: return ((const uint8_t *)p)[i] != 0;
	default: return 0;
	}
}

void es_op_store_f64(es_dtype dt, void *p, int64_t i, double v)
{
	switch (dt) {
	case ES_DT_FLOAT: ((float *)p)[i] = (float)v; break;
	case ES_DT_DOUBLE: ((double *)p)[i] = v; break;
	case ES_DT_FLOAT16: ((uint16_t *)p)[i] = es_float_to_half((float)v); break;
	case ES_DT_BFLOAT16: ((uint16_t *)p)[i] = es_float_to_bf16((float)v); break;
	case ES_DT_INT8: ((int8_t *)p)[i] = es_op_f2i_i8(v); break;
	case ES_DT_INT16: ((int16_t *)p)[i] = es_op_f2i_i16(v); break;
	case ES_DT_INT32: ((int32_t *)p)[i] = es_op_f2i_i32(v); break;
	case ES_DT_INT64: ((int64_t *)p)[i] = es_op_f2i_i64(v); break;
	case ES_DT_UINT8: ((uint8_t *)p)[i] = es_op_f2i_u8(v); break;
	case ES_DT_UINT16: ((uint16_t *)p)[i] = es_op_f2i_u16(v); break;
	case ES_DT_UINT32: ((uint32_t *)p)[i] = es_op_f2i_u32(v); break;
	case ES_DT_UINT64: ((uint64_t *)p)[i] = es_op_f2i_u64(v); break;
	case ES_DT_BOOL: ((uint8_t *)p)[i] = v != 0; break;
	default: break;
	}
}

void es_op_store_i64(es_dtype dt, void *p, int64_t i, int64_t v)
{
	switch (dt) {
	case ES_DT_INT8: ((int8_t *)p)[i] = (int8_t)v; break;
	case ES_DT_INT16: ((int16_t *)p)[i] = (int16_t)v; break;
	case ES_DT_INT32: ((int32_t *)p)[i] = (int32_t)v; break;
	case ES_DT_INT64: ((int64_t *)p)[i] = v; break;
	case ES_DT_UINT8: ((uint8_t *)p)[i] = (uint8_t)v; break;
	case ES_DT_UINT16: ((uint16_t *)p)[i] = (uint16_t)v; break;
	case ES_DT_UINT32: ((uint32_t *)p)[i] = (uint32_t)v; break;
	case ES_DT_UINT64: ((uint64_t *)p)[i] = (uint64_t)v; break;
	default: es_op_store_f64(dt, p, i, (double)v); break;
	}
}

void es_op_half_to_f32(es_dtype dt, const uint16_t *src, float *dst, int64_t n)
{
	if (dt == ES_DT_BFLOAT16) {
		for (int64_t i = 0; i < n; i++)
			dst[i] = es_bf16_to_float(src[i]);
	} else {
		for (int64_t i = 0; i < n; i++)
			dst[i] = es_half_to_float(src[i]);
	}
}

void es_op_f32_to_half(es_dtype dt, const float *src, uint16_t *dst, int64_t n)
{
	if (dt == ES_DT_BFLOAT16) {
		for (int64_t i = 0; i < n; i++)
			dst[i] = es_float_to_bf16(src[i]);
	} else {
		for (int64_t i = 0; i < n; i++)
			dst[i] = es_float_to_half(src[i]);
	}
}

void es_op_fill(void *dst, const void *val, size_t esz, int64_t n)
{
	if (n <= 0)
		return;
	bool zero = true;
	for (size_t b = 0; b < esz; b++)
		zero = zero && ((const uint8_t *)val)[b] == 0;
	if (zero) {
		memset(dst, 0, (size_t)n * esz);
		return;
	}
	switch (esz) {
	case 1:
		memset(dst, *(const uint8_t *)val, (size_t)n);
		break;
	case 2: {
		uint16_t v, *d = dst;
		memcpy(&v, val, 2);
		for (int64_t i = 0; i < n; i++)
			d[i] = v;
		break;
	}
	case 4: {
		uint32_t v, *d = dst;
		memcpy(&v, val, 4);
		for (int64_t i = 0; i < n; i++)
			d[i] = v;
		break;
	}
	case 8: {
		uint64_t v, *d = dst;
		memcpy(&v, val, 8);
		for (int64_t i = 0; i < n; i++)
			d[i] = v;
		break;
	}
	default:
		for (int64_t i = 0; i < n; i++)
			memcpy((uint8_t *)dst + (size_t)i * esz, val, esz);
	}
}

/* ---- inputs --------------------------------------------------------------- */

int es_op_check_dtype(es_kctx *k, const es_tensor *x, uint32_t allowed,
		      const char *what)
{
	if (x->dtype == ES_DT_STRING)
		return es_kctx_fail(k, ES_EUNSUPPORTED,
				    "input '%s' has type string, which the engine does not support",
				    what);
	if ((unsigned)x->dtype >= 32 || !(allowed & ES_T(x->dtype)))
		return es_kctx_fail(k, ES_ETYPE,
				    "input '%s' has type %s, which this operator does not accept",
				    what, es_dtype_name(x->dtype));
	return 0;
}

int64_t es_op_load_index(const es_tensor *t, int64_t i)
{
	if (t->dtype == ES_DT_INT32)
		return ((const int32_t *)t->data)[i];
	return ((const int64_t *)t->data)[i];
}

int es_op_read_ints(es_kctx *k, int idx, const char *what, int64_t *out,
		    int max, int *count)
{
	const es_tensor *t = es_kin(k, idx);
	if (t->dtype != ES_DT_INT64 && t->dtype != ES_DT_INT32)
		return es_kctx_fail(k, ES_ETYPE,
				    "input %d ('%s') must be int64 or int32, got %s",
				    idx, what, es_dtype_name(t->dtype));
	if (t->ndim > 1)
		return es_kctx_fail(k, ES_ESHAPE,
				    "input %d ('%s') must be 1-D, got rank %d",
				    idx, what, t->ndim);
	int64_t n = es_tensor_numel(t);
	if (n > max)
		return es_kctx_fail(k, ES_EUNSUPPORTED,
				    "input %d ('%s') has %lld elements; at most %d are supported",
				    idx, what, (long long)n, max);
	for (int64_t i = 0; i < n; i++)
		out[i] = es_op_load_index(t, i);
	*count = (int)n;
	return 0;
}

bool es_op_has_output(const es_kctx *k, int i)
{
	return i < k->n_outputs && i < k->node->n_outputs && k->node->outputs[i] >= 0;
}

void *es_op_scratch(es_kctx *k, int64_t n, size_t elem)
{
	size_t bytes;
	if (n < 0 || es_mul_size((size_t)n, elem, &bytes)) {
		es_kctx_fail(k, ES_ERANGE, "temporary of %lld elements is too large",
			     (long long)n);
		return NULL;
	}
	void *p = es_kctx_scratch(k, bytes);
	if (!p)
		es_kctx_fail(k, ES_ENOMEM, "cannot allocate %zu bytes of scratch", bytes);
	return p;
}

/* ---- node state and attributes (init) ------------------------------------- */

void *es_op_state_alloc(const es_op_init_ctx *c, size_t size)
{
	void *p = calloc(1, size);
	if (!p)
		es_error_set(c->err, ES_ENOMEM, "node '%s' (%s): out of memory",
			     c->node->name, c->node->op_type);
	return p;
}

void es_op_state_free(void *state)
{
	free(state);
}

int es_op_attr_ints(const es_op_init_ctx *c, const char *name, int64_t *out,
		    int max, int *count)
{
	const int64_t *v;
	size_t n;
	int rc = es_node_attr_ints(c->node, name, &v, &n, c->err);
	if (rc)
		return rc;
	if (n > (size_t)max)
		return es_error_set(c->err, ES_EUNSUPPORTED,
				    "node '%s' (%s): attribute %s has %zu values; at most %d are supported",
				    c->node->name, c->node->op_type, name, n, max);
	if (n)
		memcpy(out, v, n * sizeof(*v));
	*count = (int)n;
	return 0;
}

int es_op_attr_check_min(const es_op_init_ctx *c, const char *name,
			 const int64_t *v, int n, int64_t min)
{
	for (int i = 0; i < n; i++)
		if (v[i] < min)
			return es_error_set(c->err, ES_EINVAL,
					    "%s node '%s': attribute %s[%d] is %lld, must be >= %lld",
					    c->node->op_type, c->node->name, name, i,
					    (long long)v[i], (long long)min);
	return 0;
}

int es_op_attr_auto_pad(const es_op_init_ctx *c, es_auto_pad *out)
{
	const char *s;
	int rc = es_node_attr_string(c->node, "auto_pad", "NOTSET", &s, c->err);
	if (rc)
		return rc;
	if (!strcmp(s, "NOTSET") || !strcmp(s, ""))
		*out = ES_AUTO_PAD_NOTSET;
	else if (!strcmp(s, "SAME_UPPER"))
		*out = ES_AUTO_PAD_SAME_UPPER;
	else if (!strcmp(s, "SAME_LOWER"))
		*out = ES_AUTO_PAD_SAME_LOWER;
	else if (!strcmp(s, "VALID"))
		*out = ES_AUTO_PAD_VALID;
	else
		return es_error_set(c->err, ES_EINVAL,
				    "%s node '%s': attribute auto_pad is '%.40s', expected NOTSET, SAME_UPPER, SAME_LOWER or VALID",
				    c->node->op_type, c->node->name, s);
	return 0;
}

int es_op_same_pads(int64_t in, int64_t stride, int64_t ext, bool upper,
		    int64_t *pb, int64_t *pe)
{
	int64_t out = in / stride + (in % stride != 0), t;
	if (__builtin_mul_overflow(out > 0 ? out - 1 : 0, stride, &t) ||
	    __builtin_add_overflow(t, ext, &t))
		return -1;
	t -= in;
	if (t < 0)
		t = 0;
	if (upper) {
		*pb = t / 2;
		*pe = t - *pb;
	} else {
		*pe = t / 2;
		*pb = t - *pe;
	}
	return 0;
}

/* ---- threads -------------------------------------------------------------- */

int es_op_threads(const es_kctx *k, int64_t work, int64_t min_work)
{
	return (k->threads > 1 && work >= min_work) ? k->threads : 1;
}
