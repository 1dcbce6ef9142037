/*
 * Operator family: shape.
 *
 * Operators that look at or rewrite a tensor's shape, most of them as
 * zero-copy views of their input (Reshape, Flatten, Squeeze, Unsqueeze,
 * Identity, Dropout at inference), plus the small generators (Shape, Size,
 * Constant, ConstantOfShape, Expand, Range, EyeLike).
 *
 * Every size that comes from tensor data (a shape input, a Range count) is
 * checked for negative values and overflow before anything is allocated.
 */
#include <limits.h>
#include <math.h>
#include <string.h>

#include "engine/ops/families.h"
#include "engine/ops/op_util.h"

/* ---- helpers ------------------------------------------------------------ */

/* *out = product of dims; nonzero on int64 overflow or negative dims. */
static int dims_product(const int64_t *dims, int ndim, int64_t *out)
{
	int64_t p = 1;
	for (int i = 0; i < ndim; i++) {
		if (dims[i] < 0 || __builtin_mul_overflow(p, dims[i], &p))
			return -1;
	}
	*out = p;
	return 0;
}

/* Reads one int16/int32/int64 element as int64. */
static int64_t load_int(const void *p, es_dtype dt)
{
	if (dt == ES_DT_INT64)
		return *(const int64_t *)p;
	if (dt == ES_DT_INT32)
		return *(const int32_t *)p;
	return *(const int16_t *)p;
}

/* Writes the value 1 (true for bool) of dtype dt into p. */
static void store_one(void *p, es_dtype dt)
{
	switch (dt) {
	case ES_DT_FLOAT: *(float *)p = 1.0f; break;
	case ES_DT_DOUBLE: *(double *)p = 1.0; break;
	case ES_DT_FLOAT16: *(uint16_t *)p = 0x3c00; break;
	case ES_DT_BFLOAT16: *(uint16_t *)p = 0x3f80; break;
	case ES_DT_INT8: case ES_DT_UINT8: case ES_DT_BOOL: *(uint8_t *)p = 1; break;
	case ES_DT_INT16: case ES_DT_UINT16: *(uint16_t *)p = 1; break;
	case ES_DT_INT32: case ES_DT_UINT32: *(uint32_t *)p = 1; break;
	case ES_DT_INT64: case ES_DT_UINT64: *(uint64_t *)p = 1; break;
	default: break;
	}
}

/* ---- Flatten ------------------------------------------------------------ */

struct axis_state {
	int64_t axis;
};

static int init_flatten(es_op_init_ctx *c, void **state)
{
	struct axis_state *st = *state = es_op_state_alloc(c, sizeof(*st));
	if (!st)
		return ES_ENOMEM;
	return es_node_attr_int(c->node, "axis", 1, &st->axis, c->err);
}

static int run_flatten(es_kctx *k)
{
	const struct axis_state *st = k->state;
	const es_tensor *x = es_kin(k, 0);
	int64_t axis = st->axis;
	int r = x->ndim;
	if (axis < -r || axis > r)
		return es_kctx_fail(k, ES_EINVAL,
				    "attribute axis=%lld is out of range [%d, %d] for input of rank %d",
				    (long long)axis, -r, r, r);
	if (axis < 0)
		axis += r;
	int64_t d[2];
	if (dims_product(x->dims, (int)axis, &d[0]) ||
	    dims_product(x->dims + axis, r - (int)axis, &d[1]))
		return es_kctx_fail(k, ES_ERANGE, "flattened dimensions overflow int64");
	return es_kctx_output_alias(k, 0, 0, 2, d);
}

/* ---- Reshape ------------------------------------------------------------ */

struct reshape_state {
	int64_t allowzero;
	int n_shape;                /* Reshape-1: the shape attribute */
	int64_t shape[ES_MAX_DIMS];
};

static int init_reshape(es_op_init_ctx *c, void **state)
{
	struct reshape_state *st = *state = es_op_state_alloc(c, sizeof(*st));
	if (!st)
		return ES_ENOMEM;
	int rc = es_node_attr_int(c->node, "allowzero", 0, &st->allowzero, c->err);
	if (rc)
		return rc;
	if (c->node->opset < 5) {
		if (!es_node_attr(c->node, "shape"))
			return es_error_set(c->err, ES_EINVAL,
					    "node '%s' (Reshape-1): attribute shape is required",
					    c->node->name);
		return es_op_attr_ints(c, "shape", st->shape, ES_MAX_DIMS, &st->n_shape);
	}
	return 0;
}

static int reshape_to(es_kctx *k, const int64_t *shape, int n, bool allowzero)
{
	const es_tensor *x = es_kin(k, 0);
	int64_t out[ES_MAX_DIMS];
	int64_t known = 1;
	int infer = -1;
	char b1[128], b2[128];

	for (int i = 0; i < n; i++) {
		int64_t s = shape[i];
		if (s == -1) {
			if (infer >= 0)
				return es_kctx_fail(k, ES_ESHAPE,
						    "shape %s has more than one -1 (at %d and %d)",
						    es_op_fmt_dims(b1, sizeof(b1), shape, n), infer, i);
			infer = i;
			out[i] = 1;
			continue;
		}
		if (s == 0 && !allowzero) {
			if (i >= x->ndim)
				return es_kctx_fail(k, ES_ESHAPE,
						    "shape[%d] = 0 copies input dimension %d, but the input %s has rank %d",
						    i, i, es_op_fmt_dims(b1, sizeof(b1), x->dims, x->ndim),
						    x->ndim);
			s = x->dims[i];
		} else if (s < 0) {
			return es_kctx_fail(k, ES_ESHAPE,
					    "shape[%d] = %lld is negative (only -1 is allowed)",
					    i, (long long)s);
		}
		out[i] = s;
		if (__builtin_mul_overflow(known, s, &known))
			return es_kctx_fail(k, ES_ERANGE, "shape %s overflows int64",
					    es_op_fmt_dims(b1, sizeof(b1), shape, n));
	}
	int64_t numel = es_tensor_numel(x);
	if (infer >= 0) {
		if (known == 0 || numel % known)
			return es_kctx_fail(k, ES_ESHAPE,
					    "cannot reshape input %s (%lld elements) to %s: the -1 dimension cannot be inferred",
					    es_op_fmt_dims(b1, sizeof(b1), x->dims, x->ndim),
					    (long long)numel, es_op_fmt_dims(b2, sizeof(b2), shape, n));
		out[infer] = numel / known;
	} else if (known != numel) {
		return es_kctx_fail(k, ES_ESHAPE,
				    "cannot reshape input %s (%lld elements) to %s (%lld elements)",
				    es_op_fmt_dims(b1, sizeof(b1), x->dims, x->ndim), (long long)numel,
				    es_op_fmt_dims(b2, sizeof(b2), out, n), (long long)known);
	}
	return es_kctx_output_alias(k, 0, 0, n, out);
}

static int run_reshape(es_kctx *k)
{
	const struct reshape_state *st = k->state;
	if (k->node->opset < 5)
		return reshape_to(k, st->shape, st->n_shape, false);
	if (!es_kin(k, 1))
		return es_kctx_fail(k, ES_EINVAL, "input 1 (shape) is required");
	int64_t shape[ES_MAX_DIMS];
	int n;
	int rc = es_op_read_ints(k, 1, "shape", shape, ES_MAX_DIMS, &n);
	if (rc)
		return rc;
	return reshape_to(k, shape, n, st->allowzero != 0);
}

/* ---- Squeeze / Unsqueeze ------------------------------------------------ */

struct axes_state {
	int n_axes;
	int64_t axes[ES_MAX_DIMS];
};

/* Opset < 13: axes is an attribute. */
static int init_axes_attr(es_op_init_ctx *c, void **state)
{
	struct axes_state *st = *state = es_op_state_alloc(c, sizeof(*st));
	if (!st)
		return ES_ENOMEM;
	return es_op_attr_ints(c, "axes", st->axes, ES_MAX_DIMS, &st->n_axes);
}

/* Axes from the attribute (opset < 13) or from input 1 (opset >= 13). */
static int get_axes(es_kctx *k, int64_t *axes, int *n, bool *given)
{
	if (k->node->opset < 13) {
		const struct axes_state *st = k->state;
		*n = st->n_axes;
		memcpy(axes, st->axes, sizeof(st->axes));
		*given = es_node_attr(k->node, "axes") != NULL;
		return 0;
	}
	*given = es_kin(k, 1) != NULL;
	*n = 0;
	if (!*given)
		return 0;
	return es_op_read_ints(k, 1, "axes", axes, ES_MAX_DIMS, n);
}

static int run_squeeze(es_kctx *k)
{
	const es_tensor *x = es_kin(k, 0);
	int64_t axes[ES_MAX_DIMS];
	int n;
	bool given;
	int rc = get_axes(k, axes, &n, &given);
	if (rc)
		return rc;

	int r = x->ndim;
	bool drop[ES_MAX_DIMS] = { false };
	char b[128];
	if (n == 0) {
		/* no axes (or an empty list): drop every dimension of size 1 */
		for (int i = 0; i < r; i++)
			drop[i] = x->dims[i] == 1;
	}
	for (int i = 0; i < n; i++) {
		int a;
		if (!es_op_norm_axis(axes[i], r, &a))
			return es_kctx_fail(k, ES_EINVAL,
					    "axes[%d] = %lld is out of range [%d, %d] for input of rank %d",
					    i, (long long)axes[i], -r, r - 1, r);
		if (drop[a])
			return es_kctx_fail(k, ES_EINVAL, "axes has axis %d twice", a);
		if (x->dims[a] != 1)
			return es_kctx_fail(k, ES_ESHAPE,
					    "cannot squeeze axis %d of input %s: its size is %lld, not 1",
					    a, es_op_fmt_dims(b, sizeof(b), x->dims, r),
					    (long long)x->dims[a]);
		drop[a] = true;
	}
	int64_t out[ES_MAX_DIMS];
	int m = 0;
	for (int i = 0; i < r; i++)
		if (!drop[i])
			out[m++] = x->dims[i];
	return es_kctx_output_alias(k, 0, 0, m, out);
}

static int run_unsqueeze(es_kctx *k)
{
	const es_tensor *x = es_kin(k, 0);
	int64_t axes[ES_MAX_DIMS];
	int n;
	bool given;
	int rc = get_axes(k, axes, &n, &given);
	if (rc)
		return rc;
	if (!given)
		return es_kctx_fail(k, ES_EINVAL, "axes is required");

	int r = x->ndim;
	int out_r = r + n;
	if (out_r > ES_MAX_DIMS)
		return es_kctx_fail(k, ES_EUNSUPPORTED,
				    "output rank %d exceeds the supported maximum %d",
				    out_r, ES_MAX_DIMS);
	bool ins[ES_MAX_DIMS] = { false };
	for (int i = 0; i < n; i++) {
		int a;
		if (!es_op_norm_axis(axes[i], out_r, &a))
			return es_kctx_fail(k, ES_EINVAL,
					    "axes[%d] = %lld is out of range [%d, %d] for output rank %d",
					    i, (long long)axes[i], -out_r, out_r - 1, out_r);
		if (ins[a])
			return es_kctx_fail(k, ES_EINVAL, "axes has axis %d twice", a);
		ins[a] = true;
	}
	int64_t out[ES_MAX_DIMS];
	for (int i = 0, j = 0; i < out_r; i++)
		out[i] = ins[i] ? 1 : x->dims[j++];
	return es_kctx_output_alias(k, 0, 0, out_r, out);
}

/* ---- Shape / Size / Identity -------------------------------------------- */

struct shape_state {
	int64_t start, end;
	bool has_end;
};

static int init_shape(es_op_init_ctx *c, void **state)
{
	struct shape_state *st = *state = es_op_state_alloc(c, sizeof(*st));
	if (!st)
		return ES_ENOMEM;
	int rc = es_node_attr_int(c->node, "start", 0, &st->start, c->err);
	if (rc)
		return rc;
	st->has_end = es_node_attr(c->node, "end") != NULL;
	return es_node_attr_int(c->node, "end", 0, &st->end, c->err);
}

static int run_shape(es_kctx *k)
{
	const struct shape_state *st = k->state;
	const es_tensor *x = es_kin(k, 0);
	int64_t r = x->ndim;
	int64_t start = st->start, end = st->has_end ? st->end : r;
	/* Shape-15: negative means from the back; both clamp to [0, r] */
	if (start < 0)
		start += r;
	if (end < 0)
		end += r;
	start = start < 0 ? 0 : start > r ? r : start;
	end = end < 0 ? 0 : end > r ? r : end;
	int64_t n = end > start ? end - start : 0;
	int rc = es_kctx_output(k, 0, ES_DT_INT64, 1, &n);
	if (rc)
		return rc;
	int64_t *out = k->outputs[0]->data;
	for (int64_t i = 0; i < n; i++)
		out[i] = x->dims[start + i];
	return 0;
}

static int run_size(es_kctx *k)
{
	const es_tensor *x = es_kin(k, 0);
	int64_t n;
	if (dims_product(x->dims, x->ndim, &n))
		return es_kctx_fail(k, ES_ERANGE, "input element count overflows int64");
	int rc = es_kctx_output(k, 0, ES_DT_INT64, 0, NULL);
	if (rc)
		return rc;
	*(int64_t *)k->outputs[0]->data = n;
	return 0;
}

static int run_identity(es_kctx *k)
{
	const es_tensor *x = es_kin(k, 0);
	return es_kctx_output_alias(k, 0, 0, x->ndim, x->dims);
}

/* ---- Dropout (inference only) ------------------------------------------- */

static int run_dropout(es_kctx *k)
{
	const es_tensor *x = es_kin(k, 0);
	const es_tensor *ratio = es_kin(k, 1);
	const es_tensor *training = es_kin(k, 2);

	if (k->node->opset >= 12 && training) {
		if (training->dtype != ES_DT_BOOL || es_tensor_numel(training) != 1)
			return es_kctx_fail(k, ES_ETYPE,
					    "input 2 (training_mode) must be a bool scalar, got %s with %lld elements",
					    es_dtype_name(training->dtype),
					    (long long)es_tensor_numel(training));
		double r = 0.5;
		if (ratio) {
			if (es_tensor_numel(ratio) != 1)
				return es_kctx_fail(k, ES_ESHAPE,
						    "input 1 (ratio) must be a scalar, got %lld elements",
						    (long long)es_tensor_numel(ratio));
			r = es_op_load_f64(ratio->dtype, ratio->data, 0);
		}
		/* With ratio 0 training mode is the identity; anything else
		 * is random and belongs to a training runtime. */
		if (*(const uint8_t *)training->data && r != 0)
			return es_kctx_fail(k, ES_EUNSUPPORTED,
					    "training_mode=true with ratio %g (random dropout) is not supported; edgeserve runs inference only",
					    r);
	}
	int rc = es_kctx_output_alias(k, 0, 0, x->ndim, x->dims);
	if (rc || !es_op_has_output(k, 1))
		return rc;

	/* the mask keeps every element: true (opset >= 10) or 1 of type T */
	es_dtype mdt = k->node->opset >= 10 ? ES_DT_BOOL : x->dtype;
	rc = es_kctx_output(k, 1, mdt, x->ndim, x->dims);
	if (rc)
		return rc;
	uint8_t one[8] = { 0 };
	store_one(one, mdt);
	es_op_fill(k->outputs[1]->data, one, es_dtype_size(mdt), es_tensor_numel(x));
	return 0;
}

/* ---- Constant ----------------------------------------------------------- */

struct constant_state {
	es_tensor value; /* a view of graph-owned attribute memory */
};

static int init_constant(es_op_init_ctx *c, void **state)
{
	const es_node *nd = c->node;
	const es_attr *found = NULL;
	for (int i = 0; i < nd->n_attrs; i++) {
		const es_attr *a = &nd->attrs[i];
		if (strncmp(a->name, "value", 5) && strcmp(a->name, "sparse_value"))
			continue;
		if (found)
			return es_error_set(c->err, ES_EINVAL,
					    "node '%s' (Constant): exactly one value attribute is allowed, got %s and %s",
					    nd->name, found->name, a->name);
		found = &nd->attrs[i];
	}
	if (!found)
		return es_error_set(c->err, ES_EINVAL,
				    "node '%s' (Constant): no value attribute (value, value_float(s), value_int(s))",
				    nd->name);

	struct constant_state *st = *state = es_op_state_alloc(c, sizeof(*st));
	if (!st)
		return ES_ENOMEM;
	es_tensor *v = &st->value;
	const char *name = found->name;
	if (!strcmp(name, "value") && found->type == ES_ATTR_TENSOR && found->t) {
		if (found->t->dtype == ES_DT_STRING || !es_dtype_size(found->t->dtype))
			return es_error_set(c->err, ES_EUNSUPPORTED,
					    "node '%s' (Constant): value of type %s is not supported",
					    nd->name, es_dtype_name(found->t->dtype));
		*v = *found->t;
	} else if (!strcmp(name, "value_float") && found->type == ES_ATTR_FLOAT) {
		v->dtype = ES_DT_FLOAT;
		v->ndim = 0;
		v->data = (void *)&found->f;
		v->nbytes = sizeof(float);
	} else if (!strcmp(name, "value_floats") && found->type == ES_ATTR_FLOATS) {
		v->dtype = ES_DT_FLOAT;
		v->ndim = 1;
		v->dims[0] = (int64_t)found->n;
		v->data = found->floats;
		v->nbytes = found->n * sizeof(float);
	} else if (!strcmp(name, "value_int") && found->type == ES_ATTR_INT) {
		v->dtype = ES_DT_INT64;
		v->ndim = 0;
		v->data = (void *)&found->i;
		v->nbytes = sizeof(int64_t);
	} else if (!strcmp(name, "value_ints") && found->type == ES_ATTR_INTS) {
		v->dtype = ES_DT_INT64;
		v->ndim = 1;
		v->dims[0] = (int64_t)found->n;
		v->data = found->ints;
		v->nbytes = found->n * sizeof(int64_t);
	} else if (!strcmp(name, "sparse_value") || !strcmp(name, "value_string") ||
		   !strcmp(name, "value_strings")) {
		return es_error_set(c->err, ES_EUNSUPPORTED,
				    "node '%s' (Constant): attribute %s is not supported",
				    nd->name, name);
	} else {
		return es_error_set(c->err, ES_EINVAL,
				    "node '%s' (Constant): attribute %s is unknown or has the wrong type",
				    nd->name, name);
	}
	return 0;
}

static int run_constant(es_kctx *k)
{
	const es_tensor *v = &((const struct constant_state *)k->state)->value;
	int rc = es_kctx_output(k, 0, v->dtype, v->ndim, v->dims);
	if (rc)
		return rc;
	es_tensor *y = k->outputs[0];
	size_t n = y->nbytes < v->nbytes ? y->nbytes : v->nbytes;
	if (n)
		memcpy(y->data, v->data, n);
	return 0;
}

/* ---- ConstantOfShape ---------------------------------------------------- */

struct cos_state {
	es_dtype dtype;
	uint8_t value[8];
};

static int init_constant_of_shape(es_op_init_ctx *c, void **state)
{
	struct cos_state *st = *state = es_op_state_alloc(c, sizeof(*st));
	if (!st)
		return ES_ENOMEM;
	st->dtype = ES_DT_FLOAT; /* default: float 0 */
	const es_attr *a = es_node_attr(c->node, "value");
	if (!a)
		return 0;
	if (a->type != ES_ATTR_TENSOR || !a->t)
		return es_error_set(c->err, ES_EINVAL,
				    "node '%s' (ConstantOfShape): attribute value must be a tensor",
				    c->node->name);
	size_t esz = es_dtype_size(a->t->dtype);
	if (!esz || esz > sizeof(st->value))
		return es_error_set(c->err, ES_EUNSUPPORTED,
				    "node '%s' (ConstantOfShape): value of type %s is not supported",
				    c->node->name, es_dtype_name(a->t->dtype));
	if (es_tensor_numel(a->t) != 1 || a->t->nbytes < esz)
		return es_error_set(c->err, ES_EINVAL,
				    "node '%s' (ConstantOfShape): value must hold exactly one element, got %lld",
				    c->node->name, (long long)es_tensor_numel(a->t));
	st->dtype = a->t->dtype;
	memcpy(st->value, a->t->data, esz);
	return 0;
}

/* Reads a shape input (1-D int64) whose entries must be >= 0. */
static int read_shape_input(es_kctx *k, int idx, const char *what,
			    int64_t *dims, int *n)
{
	int rc = es_op_read_ints(k, idx, what, dims, ES_MAX_DIMS, n);
	if (rc)
		return rc;
	for (int i = 0; i < *n; i++)
		if (dims[i] < 0)
			return es_kctx_fail(k, ES_EINVAL,
					    "input %d ('%s'): dimension %d is negative (%lld)",
					    idx, what, i, (long long)dims[i]);
	return 0;
}

static int run_constant_of_shape(es_kctx *k)
{
	const struct cos_state *st = k->state;
	int64_t dims[ES_MAX_DIMS];
	int n;
	char b[160];
	int rc = read_shape_input(k, 0, "input", dims, &n);
	if (rc)
		return rc;
	size_t esz = es_dtype_size(st->dtype);
	int64_t numel;
	if (es_shape_numel(dims, n, esz, &numel))
		return es_kctx_fail(k, ES_ERANGE, "output shape %s is too large",
				    es_op_fmt_dims(b, sizeof(b), dims, n));
	rc = es_kctx_output(k, 0, st->dtype, n, dims);
	if (rc)
		return rc;
	es_op_fill(k->outputs[0]->data, st->value, esz, numel);
	return 0;
}

/* ---- Expand ------------------------------------------------------------- */

/*
 * Copies src (strides in elements; 0 on broadcast axes) into the dense dst
 * of shape dims[nd], one innermost row at a time.
 */
static void broadcast_copy(uint8_t *dst, const uint8_t *src, int nd,
			   const int64_t *dims, const int64_t *strides,
			   size_t esz, int threads)
{
	if (nd == 0) {
		memcpy(dst, src, esz);
		return;
	}
	int64_t inner = dims[nd - 1];
	int64_t rows = 1;
	for (int i = 0; i < nd - 1; i++)
		rows *= dims[i];
	if (inner == 0 || rows == 0)
		return;
	bool contiguous = strides[nd - 1] == 1;
	size_t row_bytes = (size_t)inner * esz;

	ES_PARALLEL_FOR(threads, rows * inner > 65536, r, rows, {
		int64_t rem = r, off = 0;
		for (int i = nd - 2; i >= 0; i--) {
			off += (rem % dims[i]) * strides[i];
			rem /= dims[i];
		}
		uint8_t *d = dst + (size_t)r * row_bytes;
		const uint8_t *s = src + (size_t)off * esz;
		if (contiguous)
			memcpy(d, s, row_bytes);
		else
			es_op_fill(d, s, esz, inner);
	});
}

static int run_expand(es_kctx *k)
{
	const es_tensor *x = es_kin(k, 0);
	int64_t shape[ES_MAX_DIMS], out[ES_MAX_DIMS], strides[ES_MAX_DIMS];
	int n;
	char b1[128], b2[128];
	int rc = es_op_read_ints(k, 1, "shape", shape, ES_MAX_DIMS, &n);
	if (rc)
		return rc;
	int r = x->ndim;
	int R = r > n ? r : n;
	int64_t stride = 1;
	for (int i = R - 1; i >= 0; i--) {
		int xi = i - (R - r), si = i - (R - n);
		int64_t a = xi >= 0 ? x->dims[xi] : 1;
		int64_t s = si >= 0 ? shape[si] : 1;
		if (s < 0)
			return es_kctx_fail(k, ES_EINVAL,
					    "input 1 (shape): dimension %d is negative (%lld)",
					    si, (long long)s);
		if (a == s || s == 1)
			out[i] = a;
		else if (a == 1)
			out[i] = s;
		else
			return es_kctx_fail(k, ES_ESHAPE,
					    "cannot broadcast input %s to shape %s (dimension %d: %lld vs %lld)",
					    es_op_fmt_dims(b1, sizeof(b1), x->dims, r),
					    es_op_fmt_dims(b2, sizeof(b2), shape, n), i,
					    (long long)a, (long long)s);
		strides[i] = (a == 1 && out[i] != 1) ? 0 : stride;
		if (xi >= 0)
			stride *= a;
	}
	size_t esz = es_dtype_size(x->dtype);
	int64_t numel;
	if (es_shape_numel(out, R, esz, &numel))
		return es_kctx_fail(k, ES_ERANGE,
				    "expanded shape %s is too large (element count overflows)",
				    es_op_fmt_dims(b1, sizeof(b1), out, R));
	rc = es_kctx_output(k, 0, x->dtype, R, out);
	if (rc)
		return rc;
	if (numel)
		broadcast_copy(k->outputs[0]->data, x->data, R, out, strides, esz,
			       k->threads);
	return 0;
}

/* ---- Range -------------------------------------------------------------- */

static int run_range(es_kctx *k)
{
	const es_tensor *in[3] = { es_kin(k, 0), es_kin(k, 1), es_kin(k, 2) };
	static const char *const names[3] = { "start", "limit", "delta" };
	for (int i = 0; i < 3; i++)
		if (!in[i])
			return es_kctx_fail(k, ES_EINVAL, "input %d (%s) is required", i, names[i]);
	es_dtype dt = in[0]->dtype;
	for (int i = 0; i < 3; i++) {
		if (in[i]->dtype != dt)
			return es_kctx_fail(k, ES_ETYPE, "input %d (%s) is %s, expected %s like start",
					    i, names[i], es_dtype_name(in[i]->dtype), es_dtype_name(dt));
		if (es_tensor_numel(in[i]) != 1)
			return es_kctx_fail(k, ES_ESHAPE, "input %d (%s) must be a scalar, got %lld elements",
					    i, names[i], (long long)es_tensor_numel(in[i]));
	}
	int64_t n;
	int rc;

	if (dt == ES_DT_FLOAT || dt == ES_DT_DOUBLE) {
		double s = es_op_load_f64(dt, in[0]->data, 0), l = es_op_load_f64(dt, in[1]->data, 0),
		       d = es_op_load_f64(dt, in[2]->data, 0);
		if (!isfinite(s) || !isfinite(l) || !isfinite(d) || d == 0)
			return es_kctx_fail(k, ES_EINVAL,
					    "start %g, limit %g, delta %g: need finite values and delta != 0",
					    s, l, d);
		double cnt = ceil((l - s) / d);
		if (!(cnt < 9.2e18))
			return es_kctx_fail(k, ES_ERANGE,
					    "start %g, limit %g, delta %g gives too many elements", s, l, d);
		n = cnt > 0 ? (int64_t)cnt : 0;
	} else if (dt == ES_DT_INT16 || dt == ES_DT_INT32 || dt == ES_DT_INT64) {
		/* 128-bit so that limit - start cannot overflow */
		__int128 s = load_int(in[0]->data, dt), l = load_int(in[1]->data, dt),
			 d = load_int(in[2]->data, dt);
		if (d == 0)
			return es_kctx_fail(k, ES_EINVAL, "delta must not be 0");
		__int128 diff = l - s, cnt = 0;
		if ((diff > 0 && d > 0) || (diff < 0 && d < 0)) {
			if (d < 0) {
				diff = -diff;
				d = -d;
			}
			cnt = (diff + d - 1) / d;
		}
		if (cnt > INT64_MAX)
			return es_kctx_fail(k, ES_ERANGE, "start %lld, limit %lld, delta %lld gives too many elements",
					    (long long)load_int(in[0]->data, dt),
					    (long long)load_int(in[1]->data, dt),
					    (long long)load_int(in[2]->data, dt));
		n = (int64_t)cnt;
	} else {
		return es_kctx_fail(k, ES_ETYPE, "type %s is not supported (float, double, int16, int32, int64)",
				    es_dtype_name(dt));
	}

	int64_t numel;
	if (es_shape_numel(&n, 1, es_dtype_size(dt), &numel))
		return es_kctx_fail(k, ES_ERANGE, "output of %lld elements is too large",
				    (long long)n);
	rc = es_kctx_output(k, 0, dt, 1, &n);
	if (rc)
		return rc;
	void *y = k->outputs[0]->data;
	switch (dt) {
	case ES_DT_FLOAT: {
		float s = *(const float *)in[0]->data, d = *(const float *)in[2]->data;
		for (int64_t i = 0; i < n; i++)
			((float *)y)[i] = (float)((double)s + (double)i * d);
		break;
	}
	case ES_DT_DOUBLE: {
		double s = *(const double *)in[0]->data, d = *(const double *)in[2]->data;
		for (int64_t i = 0; i < n; i++)
			((double *)y)[i] = s + (double)i * d;
		break;
	}
	default: {
		/* unsigned accumulation: the values stay inside [start, limit) so
		 * nothing that is stored wraps */
		uint64_t v = (uint64_t)load_int(in[0]->data, dt);
		uint64_t d = (uint64_t)load_int(in[2]->data, dt);
		for (int64_t i = 0; i < n; i++, v += d) {
			if (dt == ES_DT_INT64)
				((int64_t *)y)[i] = (int64_t)v;
			else if (dt == ES_DT_INT32)
				((int32_t *)y)[i] = (int32_t)v;
			else
				((int16_t *)y)[i] = (int16_t)v;
		}
	}
	}
	return 0;
}

/* ---- EyeLike ------------------------------------------------------------ */

struct eyelike_state {
	int64_t k;
	int64_t dtype; /* 0: the input's */
};

static int init_eyelike(es_op_init_ctx *c, void **state)
{
	struct eyelike_state *st = *state = es_op_state_alloc(c, sizeof(*st));
	if (!st)
		return ES_ENOMEM;
	int rc = es_node_attr_int(c->node, "k", 0, &st->k, c->err);
	if (!rc)
		rc = es_node_attr_int(c->node, "dtype", 0, &st->dtype, c->err);
	if (rc)
		return rc;
	if (st->dtype && (st->dtype < 0 || st->dtype >= ES_DT_COUNT ||
			  st->dtype == ES_DT_STRING || !es_dtype_size((es_dtype)st->dtype)))
		return es_error_set(c->err, ES_EUNSUPPORTED,
				    "node '%s' (EyeLike): attribute dtype=%lld is not a supported type",
				    c->node->name, (long long)st->dtype);
	return 0;
}

static int run_eyelike(es_kctx *k)
{
	const struct eyelike_state *st = k->state;
	const es_tensor *x = es_kin(k, 0);
	if (x->ndim != 2)
		return es_kctx_fail(k, ES_ESHAPE, "input must be 2-D, got rank %d", x->ndim);
	es_dtype dt = st->dtype ? (es_dtype)st->dtype : x->dtype;
	int rc = es_kctx_output(k, 0, dt, 2, x->dims);
	if (rc)
		return rc;
	size_t esz = es_dtype_size(dt);
	int64_t rows = x->dims[0], cols = x->dims[1];
	uint8_t *y = k->outputs[0]->data;
	if (rows * cols == 0)
		return 0;
	memset(y, 0, (size_t)(rows * cols) * esz);
	if (st->k >= cols || st->k <= -rows)
		return 0;
	for (int64_t i = 0; i < rows; i++) {
		int64_t j = i + st->k;
		if (j >= 0 && j < cols)
			store_one(y + (size_t)(i * cols + j) * esz, dt);
	}
	return 0;
}

/* ---- the table ---------------------------------------------------------- */

#define ALIAS_OP(name, since_, until_, mini, maxi, init_, fini_, run_)               \
	{ .domain = "", .op_type = name, .since = since_, .until = until_,        \
	  .min_inputs = mini, .max_inputs = maxi, .min_outputs = 1, .max_outputs = 1, \
	  .types = ES_T_ALL, .out_type = ES_OUT_SAME, .init = init_,               \
	  .fini = fini_, .run = run_ }

static const es_op_def defs[] = {
	ALIAS_OP("Flatten", 1, 0, 1, 1, init_flatten, es_op_state_free, run_flatten),
	ALIAS_OP("Reshape", 1, 4, 1, 1, init_reshape, es_op_state_free, run_reshape),
	ALIAS_OP("Reshape", 5, 0, 2, 2, init_reshape, es_op_state_free, run_reshape),
	ALIAS_OP("Squeeze", 1, 12, 1, 1, init_axes_attr, es_op_state_free, run_squeeze),
	ALIAS_OP("Squeeze", 13, 0, 1, 2, NULL, NULL, run_squeeze),
	ALIAS_OP("Unsqueeze", 1, 12, 1, 1, init_axes_attr, es_op_state_free, run_unsqueeze),
	ALIAS_OP("Unsqueeze", 13, 0, 2, 2, NULL, NULL, run_unsqueeze),
	ALIAS_OP("Identity", 1, 0, 1, 1, NULL, NULL, run_identity),
	{ .domain = "", .op_type = "Shape", .since = 1, .until = 0,
	  .min_inputs = 1, .max_inputs = 1, .min_outputs = 1, .max_outputs = 1,
	  .types = ES_T_ALL, .out_type = ES_OUT_FIXED, .out_dtype = ES_DT_INT64,
	  .init = init_shape, .fini = es_op_state_free, .run = run_shape },
	{ .domain = "", .op_type = "Size", .since = 1, .until = 0,
	  .min_inputs = 1, .max_inputs = 1, .min_outputs = 1, .max_outputs = 1,
	  .types = ES_T_ALL, .out_type = ES_OUT_FIXED, .out_dtype = ES_DT_INT64,
	  .run = run_size },
	/* Dropout: 1-9 mask of type T, 10-11 bool mask, 12+ ratio and
	 * training_mode are inputs (bits 1 and 2 are not T) */
	{ .domain = "", .op_type = "Dropout", .since = 1, .until = 11,
	  .min_inputs = 1, .max_inputs = 1, .min_outputs = 1, .max_outputs = 2,
	  .types = ES_T_FLOATS, .out_type = ES_OUT_SAME, .run = run_dropout },
	{ .domain = "", .op_type = "Dropout", .since = 12, .until = 0,
	  .min_inputs = 1, .max_inputs = 3, .min_outputs = 1, .max_outputs = 2,
	  .types = ES_T_FLOATS, .out_type = ES_OUT_SAME, .run = run_dropout },
	{ .domain = "", .op_type = "Constant", .since = 1, .until = 0,
	  .min_inputs = 0, .max_inputs = 0, .min_outputs = 1, .max_outputs = 1,
	  .types = 0, .out_type = ES_OUT_UNKNOWN, .init = init_constant,
	  .fini = es_op_state_free, .run = run_constant },
	{ .domain = "", .op_type = "ConstantOfShape", .since = 9, .until = 0,
	  .min_inputs = 1, .max_inputs = 1, .min_outputs = 1, .max_outputs = 1,
	  .types = ES_T(ES_DT_INT64), .out_type = ES_OUT_UNKNOWN,
	  .init = init_constant_of_shape, .fini = es_op_state_free,
	  .run = run_constant_of_shape },
	{ .domain = "", .op_type = "Expand", .since = 8, .until = 0,
	  .min_inputs = 2, .max_inputs = 2, .min_outputs = 1, .max_outputs = 1,
	  .types = ES_T_ALL, .out_type = ES_OUT_SAME, .run = run_expand },
	{ .domain = "", .op_type = "Range", .since = 11, .until = 0,
	  .min_inputs = 3, .max_inputs = 3, .min_outputs = 1, .max_outputs = 1,
	  .types = ES_T(ES_DT_FLOAT) | ES_T(ES_DT_DOUBLE) | ES_T(ES_DT_INT16) |
		   ES_T(ES_DT_INT32) | ES_T(ES_DT_INT64),
	  .same_type_inputs = 0x7, .out_type = ES_OUT_SAME, .run = run_range },
	{ .domain = "", .op_type = "EyeLike", .since = 9, .until = 0,
	  .min_inputs = 1, .max_inputs = 1, .min_outputs = 1, .max_outputs = 1,
	  .types = ES_T_ALL, .out_type = ES_OUT_UNKNOWN, .init = init_eyelike,
	  .fini = es_op_state_free, .run = run_eyelike },
};

const es_op_table es_ops_shape = { defs, sizeof(defs) / sizeof(defs[0]) };
