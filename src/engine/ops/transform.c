/*
 * Operator family: transform.
 *
 * Operators that move elements around without arithmetic on them (most work
 * byte-wise by element size, so every dtype goes through the same code):
 * Transpose Concat Split Slice Gather GatherElements GatherND ScatterND
 * ScatterElements Scatter Tile Pad DepthToSpace SpaceToDepth OneHot Trilu
 * CumSum NonZero Compress.
 *
 * Index inputs (int32 or int64) are checked against the data before any
 * element moves: an out-of-range index fails with ES_ERANGE naming the
 * value and the allowed range, never reads or writes out of bounds.
 */
#include <limits.h>
#include <math.h>
#include <string.h>

#include "base/fp16.h"
#include "engine/ops/families.h"
#include "engine/ops/op_util.h"

/* Work (in elements) below which the kernels stay on one thread. */
#define PAR_MIN 65536

/* ---- helpers ------------------------------------------------------------ */

/* Product of dims[from..to) of a tensor whose numel is known to be valid
 * (when a dim is 0 the other partial products can still overflow, so this
 * saturates instead of wrapping; callers only use it when numel > 0). */
static int64_t span(const int64_t *dims, int from, int to)
{
	int64_t p = 1;
	for (int i = from; i < to; i++)
		if (__builtin_mul_overflow(p, dims[i], &p))
			return INT64_MAX;
	return p;
}

/* Row-major strides in elements. */
static void strides_of(const int64_t *dims, int nd, int64_t *strides)
{
	int64_t s = 1;
	for (int i = nd - 1; i >= 0; i--) {
		strides[i] = s;
		s *= dims[i];
	}
}

static bool is_index_type(es_dtype dt)
{
	return dt == ES_DT_INT32 || dt == ES_DT_INT64;
}

/* Reads a one-element integer input (0-D or shape [1]). */
static int read_int_scalar(es_kctx *k, int idx, const char *what, int64_t *out)
{
	const es_tensor *t = es_kin(k, idx);
	if (!is_index_type(t->dtype))
		return es_kctx_fail(k, ES_ETYPE,
				    "input %d ('%s') must be int64 or int32, got %s",
				    idx, what, es_dtype_name(t->dtype));
	if (es_tensor_numel(t) != 1)
		return es_kctx_fail(k, ES_ESHAPE,
				    "input %d ('%s') must be a scalar, got %lld elements",
				    idx, what, (long long)es_tensor_numel(t));
	*out = es_op_load_index(t, 0);
	return 0;
}

/* Normalises axis against rank r (negative counts from the back). */
static int norm_axis(es_kctx *k, int64_t axis, int r, const char *what, int *out)
{
	*out = 0;
	if (!es_op_norm_axis(axis, r, out))
		return es_kctx_fail(k, ES_EINVAL,
				    "%s=%lld is out of range [%d, %d] for input of rank %d",
				    what, (long long)axis, -r, r - 1, r);
	return 0;
}

/* Reads a numeric element as int64 (floats truncate). False when the value
 * is not representable (NaN, out of int64 range). */
static bool load_int64_any(const void *p, es_dtype dt, int64_t *out)
{
	switch (dt) {
	case ES_DT_INT64: *out = *(const int64_t *)p; return true;
	case ES_DT_UINT64: {
		uint64_t v = *(const uint64_t *)p;
		*out = (int64_t)v;
		return v <= INT64_MAX;
	}
	default: {
		double v = es_op_load_f64(dt, p, 0);
		if (!(v > -9.2e18 && v < 9.2e18))
			return false;
		*out = (int64_t)v;
		return true;
	}
	}
}

static inline void copy_bytes(void *dst, const void *src, size_t n)
{
	if (n)
		memcpy(dst, src, n);
}

/* Element size of x, failing for types the engine cannot move. */
static int elem_size(es_kctx *k, const es_tensor *x, size_t *esz)
{
	*esz = es_dtype_size(x->dtype);
	if (*esz == 0 || *esz > 8)
		return es_kctx_fail(k, ES_EUNSUPPORTED, "type %s is not supported",
				    es_dtype_name(x->dtype));
	return 0;
}

/* Fails with a message naming the bad index and the allowed range. */
static int index_error(es_kctx *k, const char *what, int64_t pos, int64_t v,
		       int64_t n)
{
	if (n == 0)
		return es_kctx_fail(k, ES_ERANGE,
				    "%s[%lld] = %lld is out of range: the indexed axis is empty",
				    what, (long long)pos, (long long)v);
	return es_kctx_fail(k, ES_ERANGE,
			    "%s[%lld] = %lld is out of range [%lld, %lld]",
			    what, (long long)pos, (long long)v, (long long)-n,
			    (long long)(n - 1));
}

/* Checks every element of the index tensor against an axis of size n. */
static int check_indices(es_kctx *k, const es_tensor *idx, int64_t n)
{
	int64_t cnt = es_tensor_numel(idx);
	for (int64_t i = 0; i < cnt; i++) {
		int64_t v = es_op_load_index(idx, i);
		if (v < -n || v >= n)
			return index_error(k, "indices", i, v, n);
	}
	return 0;
}

/* A state holding one integer attribute (axis, upper, blocksize...). */
struct int_state {
	int64_t v;
	bool given;
};

static int init_int_attr(es_op_init_ctx *c, void **state, const char *name,
			 int64_t def)
{
	struct int_state *st = *state = es_op_state_alloc(c, sizeof(*st));
	if (!st)
		return ES_ENOMEM;
	st->given = es_node_attr(c->node, name) != NULL;
	return es_node_attr_int(c->node, name, def, &st->v, c->err);
}

static int init_axis0(es_op_init_ctx *c, void **state)
{
	return init_int_attr(c, state, "axis", 0);
}

/* ---- strided copies ------------------------------------------------------ */

#define SWITCH_ESZ(esz, BODY)                           \
	switch (esz) {                                  \
	case 1: { typedef uint8_t E; BODY; } break;     \
	case 2: { typedef uint16_t E; BODY; } break;    \
	case 4: { typedef uint32_t E; BODY; } break;    \
	default: { typedef uint64_t E; BODY; } break;   \
	}

/*
 * Dense dst of shape dims[nd] gets src[base + sum(c_i * strides[i])]
 * (strides in elements, may be negative or zero). The innermost axis is
 * copied with memcpy when its stride is 1.
 */
static void strided_gather(void *dst, const void *src, int nd,
			   const int64_t *dims, const int64_t *strides,
			   int64_t base, size_t esz, int threads)
{
	if (nd == 0) {
		memcpy(dst, (const uint8_t *)src + base * (int64_t)esz, esz);
		return;
	}
	int64_t inner = dims[nd - 1], rows = 1;
	for (int i = 0; i < nd - 1; i++)
		rows *= dims[i];
	if (inner == 0 || rows == 0)
		return;
	int64_t istep = strides[nd - 1];

	ES_PARALLEL_FOR(threads, rows * inner > PAR_MIN, r, rows, {
		int64_t rem = r, off = base;
		for (int i = nd - 2; i >= 0; i--) {
			off += (rem % dims[i]) * strides[i];
			rem /= dims[i];
		}
		uint8_t *d = (uint8_t *)dst + (size_t)(r * inner) * esz;
		const uint8_t *s = (const uint8_t *)src + off * (int64_t)esz;
		if (istep == 1) {
			memcpy(d, s, (size_t)inner * esz);
		} else {
			SWITCH_ESZ(esz, {
				E *de = (E *)d;
				const E *se = (const E *)s;
				for (int64_t j = 0; j < inner; j++)
					de[j] = se[j * istep];
			})
		}
	});
}

/* Blocked out[c][r] = in[r][c] for an R x C matrix (batched `batch` times). */
static void transpose_2d(void *dst, const void *src, int64_t batch, int64_t R,
			 int64_t C, size_t esz, int threads)
{
	const int64_t B = 32;
	int64_t rb = (R + B - 1) / B, cb = (C + B - 1) / B;
	int64_t tiles = batch * rb * cb;

	ES_PARALLEL_FOR(threads, batch * R * C > PAR_MIN, t, tiles, {
		int64_t b = t / (rb * cb), rem = t % (rb * cb);
		int64_t r0 = (rem / cb) * B, c0 = (rem % cb) * B;
		int64_t r1 = r0 + B < R ? r0 + B : R, c1 = c0 + B < C ? c0 + B : C;
		SWITCH_ESZ(esz, {
			const E *s = (const E *)src + b * R * C;
			E *d = (E *)dst + b * R * C;
			for (int64_t r = r0; r < r1; r++)
				for (int64_t c = c0; c < c1; c++)
					d[c * R + r] = s[r * C + c];
		})
	});
}

/*
 * dst = src transposed: output axis i is input axis perm[i]. Axes of size 1
 * are dropped and input axes that stay neighbours are merged first, so
 * that most real permutations become a plain copy, a row copy (last axis
 * kept), or a (batched) 2-D transpose.
 */
static void transpose_any(void *dst, const void *src, int nd,
			  const int64_t *in_dims, const int *perm, size_t esz,
			  int threads)
{
	int64_t numel = 1;
	for (int i = 0; i < nd; i++)
		numel *= in_dims[i];
	if (numel == 0)
		return;

	/* drop size-1 axes */
	int newidx[ES_MAX_DIMS], p2[ES_MAX_DIMS], n2 = 0;
	int64_t d2[ES_MAX_DIMS];
	for (int a = 0, j = 0; a < nd; a++) {
		newidx[a] = in_dims[a] != 1 ? j : -1;
		if (in_dims[a] != 1)
			d2[j++] = in_dims[a];
	}
	for (int i = 0; i < nd; i++)
		if (newidx[perm[i]] >= 0)
			p2[n2++] = newidx[perm[i]];

	/* merge runs of consecutive input axes (in output order) */
	int gfirst[ES_MAX_DIMS], m = 0;
	int64_t gdim[ES_MAX_DIMS];
	for (int i = 0; i < n2; i++) {
		if (m > 0 && p2[i] == p2[i - 1] + 1) {
			gdim[m - 1] *= d2[p2[i]];
		} else {
			gfirst[m] = p2[i];
			gdim[m] = d2[p2[i]];
			m++;
		}
	}
	/* group g's rank in input order is its new input axis */
	int p[ES_MAX_DIMS];
	int64_t dm[ES_MAX_DIMS];
	for (int g = 0; g < m; g++) {
		int rank = 0;
		for (int h = 0; h < m; h++)
			rank += gfirst[h] < gfirst[g];
		p[g] = rank;
		dm[rank] = gdim[g];
	}

	if (m <= 1) {
		memcpy(dst, src, (size_t)numel * esz);
		return;
	}
	if (m == 2) {
		transpose_2d(dst, src, 1, dm[0], dm[1], esz, threads);
		return;
	}
	if (m == 3 && p[0] == 0 && p[1] == 2 && p[2] == 1) {
		transpose_2d(dst, src, dm[0], dm[1], dm[2], esz, threads);
		return;
	}
	int64_t istr[ES_MAX_DIMS], od[ES_MAX_DIMS], os[ES_MAX_DIMS];
	strides_of(dm, m, istr);
	for (int i = 0; i < m; i++) {
		od[i] = dm[p[i]];
		os[i] = istr[p[i]];
	}
	/* last axis kept: os[m-1] == 1 and strided_gather copies rows */
	strided_gather(dst, src, m, od, os, 0, esz, threads);
}

/* ---- Transpose ---------------------------------------------------------- */

struct transpose_state {
	int n_perm; /* 0: reverse the axes */
	int64_t perm[ES_MAX_DIMS];
};

static int init_transpose(es_op_init_ctx *c, void **state)
{
	struct transpose_state *st = *state = es_op_state_alloc(c, sizeof(*st));
	if (!st)
		return ES_ENOMEM;
	int rc = es_op_attr_ints(c, "perm", st->perm, ES_MAX_DIMS, &st->n_perm);
	if (rc)
		return rc;
	bool seen[ES_MAX_DIMS] = { false };
	for (int i = 0; i < st->n_perm; i++) {
		int64_t a = st->perm[i];
		if (a < 0 || a >= st->n_perm || seen[a])
			return es_error_set(c->err, ES_EINVAL,
					    "node '%s' (Transpose): attribute perm is not a permutation of 0..%d (perm[%d] = %lld)",
					    c->node->name, st->n_perm - 1, i, (long long)a);
		seen[a] = true;
	}
	return 0;
}

static int run_transpose(es_kctx *k)
{
	const struct transpose_state *st = k->state;
	const es_tensor *x = es_kin(k, 0);
	int r = x->ndim;
	int perm[ES_MAX_DIMS];
	int64_t out[ES_MAX_DIMS];
	size_t esz;
	int rc = elem_size(k, x, &esz);
	if (rc)
		return rc;
	if (st->n_perm && st->n_perm != r)
		return es_kctx_fail(k, ES_ESHAPE,
				    "perm has %d entries but the input has rank %d",
				    st->n_perm, r);
	/* a permutation that moves only size-1 axes keeps the element order:
	 * the output is a view (e.g. (N, 1, 1, C) -> (N, C, 1, 1) after a
	 * channels-last global pool) */
	bool order_kept = true;
	int last_moved = -1;
	for (int i = 0; i < r; i++) {
		perm[i] = st->n_perm ? (int)st->perm[i] : r - 1 - i;
		out[i] = x->dims[perm[i]];
		if (out[i] != 1) {
			order_kept = order_kept && perm[i] > last_moved;
			last_moved = perm[i];
		}
	}
	if (order_kept)
		return es_kctx_output_alias(k, 0, 0, r, out);
	rc = es_kctx_output(k, 0, x->dtype, r, out);
	if (rc)
		return rc;
	transpose_any(k->outputs[0]->data, x->data, r, x->dims, perm, esz, k->threads);
	return 0;
}

/* ---- Concat ------------------------------------------------------------- */

static int init_concat(es_op_init_ctx *c, void **state)
{
	/* Concat-1 defaults axis to 1; from opset 4 it is required */
	int rc = init_int_attr(c, state, "axis", 1);
	if (rc)
		return rc;
	if (c->node->opset >= 4 && !((struct int_state *)*state)->given)
		return es_error_set(c->err, ES_EINVAL,
				    "node '%s' (Concat): attribute axis is required",
				    c->node->name);
	return 0;
}

static int run_concat(es_kctx *k)
{
	const struct int_state *st = k->state;
	const es_tensor *x0 = es_kin(k, 0);
	char b1[128], b2[128];
	size_t esz;
	int rc = elem_size(k, x0, &esz);
	if (rc)
		return rc;
	int r = x0->ndim, axis;
	if (r == 0)
		return es_kctx_fail(k, ES_ESHAPE, "cannot concatenate scalars (input 0 has rank 0)");
	if ((rc = norm_axis(k, st->v, r, "axis", &axis)))
		return rc;

	int64_t out[ES_MAX_DIMS];
	memcpy(out, x0->dims, sizeof(out));
	out[axis] = 0;
	for (int i = 0; i < k->n_inputs; i++) {
		const es_tensor *x = es_kin(k, i);
		if (!x)
			return es_kctx_fail(k, ES_EINVAL, "input %d is missing", i);
		if (x->dtype != x0->dtype)
			return es_kctx_fail(k, ES_ETYPE, "input %d is %s, expected %s like input 0",
					    i, es_dtype_name(x->dtype), es_dtype_name(x0->dtype));
		bool ok = x->ndim == r;
		for (int d = 0; ok && d < r; d++)
			ok = d == axis || x->dims[d] == x0->dims[d];
		if (!ok)
			return es_kctx_fail(k, ES_ESHAPE,
					    "input %d has shape %s, incompatible with input 0 %s for axis %d",
					    i, es_op_fmt_dims(b1, sizeof(b1), x->dims, x->ndim),
					    es_op_fmt_dims(b2, sizeof(b2), x0->dims, r), axis);
		if (__builtin_add_overflow(out[axis], x->dims[axis], &out[axis]))
			return es_kctx_fail(k, ES_ERANGE, "concatenated axis overflows int64");
	}
	rc = es_kctx_output(k, 0, x0->dtype, r, out);
	if (rc)
		return rc;
	int64_t numel = es_tensor_numel(k->outputs[0]);
	if (numel == 0)
		return 0;
	int64_t outer = span(out, 0, axis), inner = span(out, axis + 1, r);
	size_t out_row = (size_t)(out[axis] * inner) * esz;
	uint8_t *y = k->outputs[0]->data;
	size_t at = 0;
	for (int i = 0; i < k->n_inputs; i++) {
		const es_tensor *x = es_kin(k, i);
		size_t row = (size_t)(x->dims[axis] * inner) * esz;
		if (row == 0)
			continue;
		ES_PARALLEL_FOR(k->threads, outer * (int64_t)row > PAR_MIN * 4, o, outer, {
			memcpy(y + (size_t)o * out_row + at,
			       (const uint8_t *)x->data + (size_t)o * row, row);
		});
		at += row;
	}
	return 0;
}

/* ---- Split -------------------------------------------------------------- */

struct split_state {
	int64_t axis;
	int64_t num_outputs; /* 0: not given */
	size_t n_split;      /* split attribute (opset < 13) */
	int64_t split[];
};

static int init_split(es_op_init_ctx *c, void **state)
{
	const int64_t *sp = NULL;
	size_t n = 0;
	int rc = es_node_attr_ints(c->node, "split", &sp, &n, c->err);
	if (rc)
		return rc;
	struct split_state *st = *state =
		es_op_state_alloc(c, sizeof(*st) + n * sizeof(int64_t));
	if (!st)
		return ES_ENOMEM;
	st->n_split = n;
	if (n)
		memcpy(st->split, sp, n * sizeof(int64_t));
	rc = es_node_attr_int(c->node, "axis", 0, &st->axis, c->err);
	if (!rc)
		rc = es_node_attr_int(c->node, "num_outputs", 0, &st->num_outputs, c->err);
	if (rc)
		return rc;
	if (st->num_outputs && st->num_outputs != c->node->n_outputs)
		return es_error_set(c->err, ES_EINVAL,
				    "node '%s' (Split): num_outputs=%lld but the node has %d outputs",
				    c->node->name, (long long)st->num_outputs, c->node->n_outputs);
	return 0;
}

static int run_split(es_kctx *k)
{
	const struct split_state *st = k->state;
	const es_tensor *x = es_kin(k, 0);
	const es_tensor *sp = es_kin(k, 1);
	int nout = k->n_outputs;
	if (sp && es_tensor_numel(sp) == 0)
		sp = NULL; /* an empty split input means "not given" */
	size_t esz;
	int rc = elem_size(k, x, &esz);
	if (rc)
		return rc;
	int r = x->ndim, axis;
	if (r == 0)
		return es_kctx_fail(k, ES_ESHAPE, "cannot split a scalar");
	if ((rc = norm_axis(k, st->axis, r, "axis", &axis)))
		return rc;
	int64_t dim = x->dims[axis];

	int64_t *sizes = es_kctx_scratch(k, (size_t)nout * sizeof(int64_t));
	if (!sizes)
		return es_kctx_fail(k, ES_ENOMEM, "no scratch memory for %d split sizes", nout);
	if (sp || st->n_split) {
		int64_t n = sp ? es_tensor_numel(sp) : (int64_t)st->n_split;
		if (sp && (sp->dtype != ES_DT_INT64 || sp->ndim > 1))
			return es_kctx_fail(k, ES_ETYPE, "input 1 (split) must be a 1-D int64 tensor, got %s of rank %d",
					    es_dtype_name(sp->dtype), sp->ndim);
		if (n != nout)
			return es_kctx_fail(k, ES_EINVAL, "split has %lld entries but the node has %d outputs",
					    (long long)n, nout);
		int64_t sum = 0;
		for (int i = 0; i < nout; i++) {
			sizes[i] = sp ? ((const int64_t *)sp->data)[i] : st->split[i];
			if (sizes[i] < 0 || __builtin_add_overflow(sum, sizes[i], &sum))
				return es_kctx_fail(k, ES_EINVAL, "split[%d] = %lld is invalid",
						    i, (long long)sizes[i]);
		}
		if (sum != dim)
			return es_kctx_fail(k, ES_ESHAPE,
					    "split sizes add up to %lld but axis %d has size %lld",
					    (long long)sum, axis, (long long)dim);
	} else if (st->num_outputs) {
		/* Split-18: ceil(dim / n) each, the last one takes the rest */
		int64_t chunk = (dim + nout - 1) / nout;
		for (int i = 0; i < nout; i++) {
			int64_t left = dim - chunk * i;
			sizes[i] = left < 0 ? 0 : left < chunk ? left : chunk;
		}
	} else {
		if (dim % nout)
			return es_kctx_fail(k, ES_ESHAPE,
					    "axis %d of size %lld cannot be split evenly into %d outputs",
					    axis, (long long)dim, nout);
		for (int i = 0; i < nout; i++)
			sizes[i] = dim / nout;
	}

	int64_t outer = span(x->dims, 0, axis), inner = span(x->dims, axis + 1, r);
	int64_t numel = es_tensor_numel(x);
	int64_t off = 0;
	for (int i = 0; i < nout; i++) {
		int64_t od[ES_MAX_DIMS];
		memcpy(od, x->dims, sizeof(od));
		od[axis] = sizes[i];
		if ((rc = es_kctx_output(k, i, x->dtype, r, od)))
			return rc;
		if (numel > 0 && sizes[i] > 0) {
			size_t row = (size_t)(sizes[i] * inner) * esz;
			size_t in_row = (size_t)(dim * inner) * esz;
			uint8_t *y = k->outputs[i]->data;
			const uint8_t *s = (const uint8_t *)x->data + (size_t)(off * inner) * esz;
			ES_PARALLEL_FOR(k->threads, outer * (int64_t)row > PAR_MIN * 4, o, outer, {
				memcpy(y + (size_t)o * row, s + (size_t)o * in_row, row);
			});
		}
		off += sizes[i];
	}
	return 0;
}

/* ---- Slice -------------------------------------------------------------- */

struct slice_state { /* Slice-1: attributes */
	int n_starts, n_ends, n_axes;
	int64_t starts[ES_MAX_DIMS], ends[ES_MAX_DIMS], axes[ES_MAX_DIMS];
};

static int init_slice1(es_op_init_ctx *c, void **state)
{
	int rc;
	struct slice_state *st = *state = es_op_state_alloc(c, sizeof(*st));
	if (!st)
		return ES_ENOMEM;
	if (!es_node_attr(c->node, "starts") || !es_node_attr(c->node, "ends"))
		return es_error_set(c->err, ES_EINVAL,
				    "node '%s' (Slice-1): attributes starts and ends are required",
				    c->node->name);
	if ((rc = es_op_attr_ints(c, "starts", st->starts, ES_MAX_DIMS, &st->n_starts)) ||
	    (rc = es_op_attr_ints(c, "ends", st->ends, ES_MAX_DIMS, &st->n_ends)) ||
	    (rc = es_op_attr_ints(c, "axes", st->axes, ES_MAX_DIMS, &st->n_axes)))
		return rc;
	return 0;
}

static int run_slice(es_kctx *k)
{
	const es_tensor *x = es_kin(k, 0);
	int64_t starts[ES_MAX_DIMS], ends[ES_MAX_DIMS], axes[ES_MAX_DIMS], steps[ES_MAX_DIMS];
	int ns, ne, na = -1, nst = -1;
	size_t esz;
	int rc = elem_size(k, x, &esz);
	if (rc)
		return rc;

	if (k->node->opset < 10) {
		const struct slice_state *st = k->state;
		ns = st->n_starts;
		ne = st->n_ends;
		memcpy(starts, st->starts, sizeof(starts));
		memcpy(ends, st->ends, sizeof(ends));
		if (st->n_axes) {
			na = st->n_axes;
			memcpy(axes, st->axes, sizeof(axes));
		}
	} else {
		if ((rc = es_op_read_ints(k, 1, "starts", starts, ES_MAX_DIMS, &ns)) ||
		    (rc = es_op_read_ints(k, 2, "ends", ends, ES_MAX_DIMS, &ne)))
			return rc;
		if (es_kin(k, 3) && (rc = es_op_read_ints(k, 3, "axes", axes, ES_MAX_DIMS, &na)))
			return rc;
		if (es_kin(k, 4) && (rc = es_op_read_ints(k, 4, "steps", steps, ES_MAX_DIMS, &nst)))
			return rc;
	}
	if (ne != ns || (na >= 0 && na != ns) || (nst >= 0 && nst != ns))
		return es_kctx_fail(k, ES_EINVAL,
				    "starts, ends, axes and steps must have the same length (got %d, %d, %d, %d)",
				    ns, ne, na, nst);

	int r = x->ndim;
	int64_t out[ES_MAX_DIMS], first[ES_MAX_DIMS], step_of[ES_MAX_DIMS];
	bool seen[ES_MAX_DIMS] = { false };
	for (int d = 0; d < r; d++) {
		out[d] = x->dims[d];
		first[d] = 0;
		step_of[d] = 1;
	}
	for (int i = 0; i < ns; i++) {
		int a;
		if ((rc = norm_axis(k, na >= 0 ? axes[i] : i, r, "axes", &a)))
			return rc;
		if (seen[a])
			return es_kctx_fail(k, ES_EINVAL, "axis %d is sliced twice", a);
		seen[a] = true;
		int64_t step = nst >= 0 ? steps[i] : 1;
		if (step == 0)
			return es_kctx_fail(k, ES_EINVAL, "steps[%d] is 0", i);
		int64_t dim = x->dims[a], s = starts[i], e = ends[i], cnt = 0;
		/* negative positions count from the end (INT64_MIN + dim cannot
		 * overflow), then clamp as the spec says for each direction */
		if (s < 0)
			s += dim;
		if (e < 0)
			e += dim;
		if (step > 0) {
			s = s < 0 ? 0 : s > dim ? dim : s;
			e = e < 0 ? 0 : e > dim ? dim : e;
			if (e > s)
				cnt = (e - s - 1) / step + 1;
		} else {
			s = s < 0 ? 0 : s > dim - 1 ? dim - 1 : s;
			e = e < -1 ? -1 : e > dim - 1 ? dim - 1 : e;
			if (s > e && dim > 0) {
				uint64_t mag = (uint64_t)0 - (uint64_t)step;
				cnt = (int64_t)((uint64_t)(s - e - 1) / mag) + 1;
			}
		}
		out[a] = cnt;
		first[a] = cnt ? s : 0;
		step_of[a] = step;
	}
	rc = es_kctx_output(k, 0, x->dtype, r, out);
	if (rc)
		return rc;
	int64_t numel = es_tensor_numel(k->outputs[0]);
	if (numel == 0)
		return 0;
	int64_t istr[ES_MAX_DIMS], strides[ES_MAX_DIMS], base = 0;
	strides_of(x->dims, r, istr);
	for (int d = 0; d < r; d++) {
		base += first[d] * istr[d];
		/* only one element on that axis: the step never applies */
		strides[d] = out[d] > 1 ? step_of[d] * istr[d] : istr[d];
	}
	strided_gather(k->outputs[0]->data, x->data, r, out, strides, base, esz, k->threads);
	return 0;
}

/* ---- Gather ------------------------------------------------------------- */

static int run_gather(es_kctx *k)
{
	const struct int_state *st = k->state;
	const es_tensor *x = es_kin(k, 0), *idx = es_kin(k, 1);
	size_t esz;
	int rc = elem_size(k, x, &esz);
	if (rc)
		return rc;
	if (!is_index_type(idx->dtype))
		return es_kctx_fail(k, ES_ETYPE, "input 1 (indices) must be int32 or int64, got %s",
				    es_dtype_name(idx->dtype));
	int r = x->ndim, q = idx->ndim, axis;
	if (r == 0)
		return es_kctx_fail(k, ES_ESHAPE, "input 0 (data) must have rank >= 1");
	if ((rc = norm_axis(k, st->v, r, "axis", &axis)))
		return rc;
	if (r - 1 + q > ES_MAX_DIMS)
		return es_kctx_fail(k, ES_EUNSUPPORTED, "output rank %d exceeds %d",
				    r - 1 + q, ES_MAX_DIMS);
	int64_t n = x->dims[axis];
	if ((rc = check_indices(k, idx, n)))
		return rc;

	int64_t out[ES_MAX_DIMS];
	int o = 0;
	for (int d = 0; d < axis; d++)
		out[o++] = x->dims[d];
	for (int d = 0; d < q; d++)
		out[o++] = idx->dims[d];
	for (int d = axis + 1; d < r; d++)
		out[o++] = x->dims[d];
	if ((rc = es_kctx_output(k, 0, x->dtype, o, out)))
		return rc;
	if (es_tensor_numel(k->outputs[0]) == 0)
		return 0;

	int64_t outer = span(x->dims, 0, axis), inner = span(x->dims, axis + 1, r);
	int64_t nidx = es_tensor_numel(idx);
	size_t blk = (size_t)inner * esz;
	uint8_t *y = k->outputs[0]->data;
	const uint8_t *src = x->data;
	int64_t total = outer * nidx;

	ES_PARALLEL_FOR(k->threads, total * inner > PAR_MIN, t, total, {
		int64_t oi = t / nidx, v = es_op_load_index(idx, t % nidx);
		if (v < 0)
			v += n;
		memcpy(y + (size_t)t * blk, src + (size_t)(oi * n + v) * blk, blk);
	});
	return 0;
}

/* ---- GatherElements / ScatterElements / Scatter ----------------------- */

/* Checks the shared shape rules of GatherElements and ScatterElements:
 * same rank, indices no larger than data on the other axes. */
static int check_elements_shapes(es_kctx *k, const es_tensor *x,
				 const es_tensor *idx, int axis)
{
	char b1[128], b2[128];
	if (idx->ndim != x->ndim)
		return es_kctx_fail(k, ES_ESHAPE,
				    "indices has rank %d but data has rank %d",
				    idx->ndim, x->ndim);
	for (int d = 0; d < x->ndim; d++)
		if (d != axis && idx->dims[d] > x->dims[d])
			return es_kctx_fail(k, ES_ESHAPE,
					    "indices shape %s exceeds data shape %s on axis %d",
					    es_op_fmt_dims(b1, sizeof(b1), idx->dims, idx->ndim),
					    es_op_fmt_dims(b2, sizeof(b2), x->dims, x->ndim), d);
	return 0;
}

/* Offset in data (elements) of the position of indices element i with the
 * axis coordinate replaced by v. */
static int64_t elements_offset(const es_tensor *idx, const int64_t *dstr,
			       int axis, int64_t i, int64_t v)
{
	int64_t off = 0;
	for (int d = idx->ndim - 1; d >= 0; d--) {
		int64_t c = i % idx->dims[d];
		i /= idx->dims[d];
		off += (d == axis ? v : c) * dstr[d];
	}
	return off;
}

static int run_gather_elements(es_kctx *k)
{
	const struct int_state *st = k->state;
	const es_tensor *x = es_kin(k, 0), *idx = es_kin(k, 1);
	size_t esz;
	int rc = elem_size(k, x, &esz);
	if (rc)
		return rc;
	if (!is_index_type(idx->dtype))
		return es_kctx_fail(k, ES_ETYPE, "input 1 (indices) must be int32 or int64, got %s",
				    es_dtype_name(idx->dtype));
	int r = x->ndim, axis;
	if (r == 0)
		return es_kctx_fail(k, ES_ESHAPE, "input 0 (data) must have rank >= 1");
	if ((rc = norm_axis(k, st->v, r, "axis", &axis)) ||
	    (rc = check_elements_shapes(k, x, idx, axis)))
		return rc;
	int64_t n = x->dims[axis];
	if ((rc = check_indices(k, idx, n)))
		return rc;
	if ((rc = es_kctx_output(k, 0, x->dtype, idx->ndim, idx->dims)))
		return rc;
	int64_t cnt = es_tensor_numel(idx);
	int64_t dstr[ES_MAX_DIMS];
	strides_of(x->dims, r, dstr);
	uint8_t *y = k->outputs[0]->data;
	const uint8_t *src = x->data;

	ES_PARALLEL_FOR(k->threads, cnt > PAR_MIN, i, cnt, {
		int64_t v = es_op_load_index(idx, i);
		if (v < 0)
			v += n;
		int64_t off = elements_offset(idx, dstr, axis, i, v);
		memcpy(y + (size_t)i * esz, src + (size_t)off * esz, esz);
	});
	return 0;
}

enum { RED_NONE, RED_ADD, RED_MUL, RED_MAX, RED_MIN };

struct scatter_state {
	int64_t axis;
	int reduction;
};

static int init_scatter(es_op_init_ctx *c, void **state)
{
	int rc;
	struct scatter_state *st = *state = es_op_state_alloc(c, sizeof(*st));
	if (!st)
		return ES_ENOMEM;
	const char *red;
	rc = es_node_attr_int(c->node, "axis", 0, &st->axis, c->err);
	if (!rc)
		rc = es_node_attr_string(c->node, "reduction", "none", &red, c->err);
	if (rc)
		return rc;
	static const char *const names[] = { "none", "add", "mul", "max", "min" };
	for (int i = 0; i < 5; i++)
		if (!strcmp(red, names[i])) {
			st->reduction = i;
			return 0;
		}
	return es_error_set(c->err, ES_EINVAL,
			    "node '%s' (%s): attribute reduction='%s' is not one of none, add, mul, max, min",
			    c->node->name, c->node->op_type, red);
}

#define RED_LOOP(T, ADD, MUL, MAX, MIN)                                       \
	do {                                                                  \
		T *d_ = dst;                                                  \
		const T *s_ = src;                                            \
		for (int64_t i_ = 0; i_ < n; i_++) {                          \
			T a = d_[i_], b = s_[i_];                             \
			d_[i_] = red == RED_ADD ? (ADD) : red == RED_MUL ? (MUL) : \
				 red == RED_MAX ? (MAX) : (MIN);              \
		}                                                             \
	} while (0)

#define RED_INT(T) RED_LOOP(T, (T)((uint64_t)a + (uint64_t)b), \
			    (T)((uint64_t)a * (uint64_t)b), a > b ? a : b, a < b ? a : b)
#define RED_FLT(T) RED_LOOP(T, a + b, a * b, a > b ? a : b, a < b ? a : b)

/* dst[i] = dst[i] (op) src[i] for n elements of dtype dt. */
static void reduce_into(void *dst, const void *src, int64_t n, es_dtype dt, int red)
{
	if (red == RED_NONE) {
		copy_bytes(dst, src, (size_t)n * es_dtype_size(dt));
		return;
	}
	switch (dt) {
	case ES_DT_FLOAT: RED_FLT(float); break;
	case ES_DT_DOUBLE: RED_FLT(double); break;
	case ES_DT_INT8: RED_INT(int8_t); break;
	case ES_DT_INT16: RED_INT(int16_t); break;
	case ES_DT_INT32: RED_INT(int32_t); break;
	case ES_DT_INT64: RED_INT(int64_t); break;
	case ES_DT_UINT8: RED_INT(uint8_t); break;
	case ES_DT_UINT16: RED_INT(uint16_t); break;
	case ES_DT_UINT32: RED_INT(uint32_t); break;
	case ES_DT_UINT64: RED_INT(uint64_t); break;
	case ES_DT_BOOL:
		/* add/max are "or", mul/min are "and" */
		RED_LOOP(uint8_t, (uint8_t)(a || b), (uint8_t)(a && b),
			 (uint8_t)(a || b), (uint8_t)(a && b));
		break;
	case ES_DT_FLOAT16:
	case ES_DT_BFLOAT16: {
		uint16_t *d = dst;
		const uint16_t *s = src;
		bool half = dt == ES_DT_FLOAT16;
		for (int64_t i = 0; i < n; i++) {
			float a = half ? es_half_to_float(d[i]) : es_bf16_to_float(d[i]);
			float b = half ? es_half_to_float(s[i]) : es_bf16_to_float(s[i]);
			float v = red == RED_ADD ? a + b : red == RED_MUL ? a * b :
				  red == RED_MAX ? (a > b ? a : b) : (a < b ? a : b);
			d[i] = half ? es_float_to_half(v) : es_float_to_bf16(v);
		}
		break;
	}
	default:
		break;
	}
}

/* Output 0 starts as a copy of input 0 (in place when the executor can). */
static int output_copy_of_input(es_kctx *k, const es_tensor *x)
{
	bool inplace;
	int rc = es_kctx_output_inplace(k, 0, 0, x->dtype, x->ndim, x->dims, &inplace);
	if (rc)
		return rc;
	if (!inplace)
		copy_bytes(k->outputs[0]->data, x->data, x->nbytes);
	return 0;
}

static int run_scatter_elements(es_kctx *k)
{
	const struct scatter_state *st = k->state;
	const es_tensor *x = es_kin(k, 0), *idx = es_kin(k, 1), *upd = es_kin(k, 2);
	char b1[128], b2[128];
	size_t esz;
	int rc = elem_size(k, x, &esz);
	if (rc)
		return rc;
	if (!is_index_type(idx->dtype))
		return es_kctx_fail(k, ES_ETYPE, "input 1 (indices) must be int32 or int64, got %s",
				    es_dtype_name(idx->dtype));
	if (upd->dtype != x->dtype)
		return es_kctx_fail(k, ES_ETYPE, "input 2 (updates) is %s, expected %s like data",
				    es_dtype_name(upd->dtype), es_dtype_name(x->dtype));
	int r = x->ndim, axis;
	if (r == 0)
		return es_kctx_fail(k, ES_ESHAPE, "input 0 (data) must have rank >= 1");
	if ((rc = norm_axis(k, st->axis, r, "axis", &axis)) ||
	    (rc = check_elements_shapes(k, x, idx, axis)))
		return rc;
	bool same = upd->ndim == idx->ndim;
	for (int d = 0; same && d < idx->ndim; d++)
		same = upd->dims[d] == idx->dims[d];
	if (!same)
		return es_kctx_fail(k, ES_ESHAPE, "updates shape %s differs from indices shape %s",
				    es_op_fmt_dims(b1, sizeof(b1), upd->dims, upd->ndim),
				    es_op_fmt_dims(b2, sizeof(b2), idx->dims, idx->ndim));
	int64_t n = x->dims[axis];
	if ((rc = check_indices(k, idx, n)))
		return rc;
	if ((rc = output_copy_of_input(k, x)))
		return rc;

	int64_t cnt = es_tensor_numel(idx);
	int64_t dstr[ES_MAX_DIMS];
	strides_of(x->dims, r, dstr);
	uint8_t *y = k->outputs[0]->data;
	const uint8_t *u = upd->data;
	/* serial: duplicate indices apply in order */
	for (int64_t i = 0; i < cnt; i++) {
		int64_t v = es_op_load_index(idx, i);
		if (v < 0)
			v += n;
		int64_t off = elements_offset(idx, dstr, axis, i, v);
		reduce_into(y + (size_t)off * esz, u + (size_t)i * esz, 1, x->dtype, st->reduction);
	}
	return 0;
}

/* ---- GatherND / ScatterND ---------------------------------------------- */

static int init_gather_nd(es_op_init_ctx *c, void **state)
{
	return init_int_attr(c, state, "batch_dims", 0);
}

static int run_gather_nd(es_kctx *k)
{
	const struct int_state *st = k->state;
	const es_tensor *x = es_kin(k, 0), *idx = es_kin(k, 1);
	char b1[128], b2[128];
	size_t esz;
	int rc = elem_size(k, x, &esz);
	if (rc)
		return rc;
	if (idx->dtype != ES_DT_INT64 && idx->dtype != ES_DT_INT32)
		return es_kctx_fail(k, ES_ETYPE, "input 1 (indices) must be int64, got %s",
				    es_dtype_name(idx->dtype));
	int r = x->ndim, q = idx->ndim;
	int64_t b = st->v;
	if (r < 1 || q < 1)
		return es_kctx_fail(k, ES_ESHAPE, "data and indices must have rank >= 1 (got %d and %d)",
				    r, q);
	if (b < 0 || b >= (q < r ? q : r))
		return es_kctx_fail(k, ES_EINVAL, "batch_dims=%lld must be in [0, %d)",
				    (long long)b, q < r ? q : r);
	int64_t last = idx->dims[q - 1];
	if (last < 1 || last > r - b)
		return es_kctx_fail(k, ES_ESHAPE,
				    "indices.shape[-1] = %lld must be in [1, %lld] (data rank %d, batch_dims %lld)",
				    (long long)last, (long long)(r - b), r, (long long)b);
	for (int d = 0; d < b; d++)
		if (idx->dims[d] != x->dims[d])
			return es_kctx_fail(k, ES_ESHAPE,
					    "batch dimension %d differs: indices %s, data %s",
					    d, es_op_fmt_dims(b1, sizeof(b1), idx->dims, q),
					    es_op_fmt_dims(b2, sizeof(b2), x->dims, r));
	int out_r = q - 1 + r - (int)b - (int)last;
	if (out_r > ES_MAX_DIMS)
		return es_kctx_fail(k, ES_EUNSUPPORTED, "output rank %d exceeds %d", out_r, ES_MAX_DIMS);
	int64_t out[ES_MAX_DIMS];
	int o = 0;
	for (int d = 0; d < q - 1; d++)
		out[o++] = idx->dims[d];
	for (int d = (int)(b + last); d < r; d++)
		out[o++] = x->dims[d];
	if ((rc = es_kctx_output(k, 0, x->dtype, o, out)))
		return rc;
	if (es_tensor_numel(k->outputs[0]) == 0)
		return 0;

	int64_t batches = span(x->dims, 0, (int)b);
	int64_t per_batch = span(idx->dims, (int)b, q - 1);
	int64_t slice = span(x->dims, (int)(b + last), r);
	int64_t data_batch = span(x->dims, (int)b, r);
	int64_t istr[ES_MAX_DIMS]; /* strides of the indexed axes, in elements */
	for (int j = (int)last - 1; j >= 0; j--)
		istr[j] = j == (int)last - 1 ? slice : istr[j + 1] * x->dims[b + j + 1];
	size_t blk = (size_t)slice * esz;
	uint8_t *y = k->outputs[0]->data;
	const uint8_t *src = x->data;
	for (int64_t bi = 0; bi < batches; bi++) {
		for (int64_t t = 0; t < per_batch; t++) {
			int64_t row = bi * per_batch + t, off = bi * data_batch;
			for (int64_t j = 0; j < last; j++) {
				int64_t n = x->dims[b + j];
				int64_t v = es_op_load_index(idx, row * last + j);
				if (v < -n || v >= n)
					return index_error(k, "indices", row * last + j, v, n);
				off += (v < 0 ? v + n : v) * istr[j];
			}
			memcpy(y + (size_t)row * blk, src + (size_t)off * esz, blk);
		}
	}
	return 0;
}

static int run_scatter_nd(es_kctx *k)
{
	const struct scatter_state *st = k->state;
	const es_tensor *x = es_kin(k, 0), *idx = es_kin(k, 1), *upd = es_kin(k, 2);
	char b1[128], b2[128], b3[128];
	size_t esz;
	int rc = elem_size(k, x, &esz);
	if (rc)
		return rc;
	if (!is_index_type(idx->dtype))
		return es_kctx_fail(k, ES_ETYPE, "input 1 (indices) must be int64, got %s",
				    es_dtype_name(idx->dtype));
	if (upd->dtype != x->dtype)
		return es_kctx_fail(k, ES_ETYPE, "input 2 (updates) is %s, expected %s like data",
				    es_dtype_name(upd->dtype), es_dtype_name(x->dtype));
	int r = x->ndim, q = idx->ndim;
	if (r < 1 || q < 1)
		return es_kctx_fail(k, ES_ESHAPE, "data and indices must have rank >= 1 (got %d and %d)",
				    r, q);
	int64_t last = idx->dims[q - 1];
	if (last < 1 || last > r)
		return es_kctx_fail(k, ES_ESHAPE, "indices.shape[-1] = %lld must be in [1, %d]",
				    (long long)last, r);
	/* updates.shape == indices.shape[:-1] + data.shape[last:] */
	bool ok = upd->ndim == q - 1 + r - (int)last;
	for (int d = 0; ok && d < q - 1; d++)
		ok = upd->dims[d] == idx->dims[d];
	for (int d = (int)last; ok && d < r; d++)
		ok = upd->dims[q - 1 + d - last] == x->dims[d];
	if (!ok)
		return es_kctx_fail(k, ES_ESHAPE,
				    "updates shape %s does not match indices %s and data %s",
				    es_op_fmt_dims(b1, sizeof(b1), upd->dims, upd->ndim),
				    es_op_fmt_dims(b2, sizeof(b2), idx->dims, q),
				    es_op_fmt_dims(b3, sizeof(b3), x->dims, r));
	/* check all indices before touching the output */
	int64_t rows = span(idx->dims, 0, q - 1);
	if (es_tensor_numel(idx) > 0) {
		for (int64_t t = 0; t < rows; t++)
			for (int64_t j = 0; j < last; j++) {
				int64_t n = x->dims[j], v = es_op_load_index(idx, t * last + j);
				if (v < -n || v >= n)
					return index_error(k, "indices", t * last + j, v, n);
			}
	} else {
		rows = 0;
	}
	if ((rc = output_copy_of_input(k, x)))
		return rc;
	int64_t slice = span(x->dims, (int)last, r);
	int64_t istr[ES_MAX_DIMS];
	for (int j = (int)last - 1; j >= 0; j--)
		istr[j] = j == (int)last - 1 ? slice : istr[j + 1] * x->dims[j + 1];
	uint8_t *y = k->outputs[0]->data;
	const uint8_t *u = upd->data;
	if (slice == 0)
		return 0;
	for (int64_t t = 0; t < rows; t++) {
		int64_t off = 0;
		for (int64_t j = 0; j < last; j++) {
			int64_t n = x->dims[j], v = es_op_load_index(idx, t * last + j);
			off += (v < 0 ? v + n : v) * istr[j];
		}
		reduce_into(y + (size_t)off * esz, u + (size_t)(t * slice) * esz, slice,
			    x->dtype, st->reduction);
	}
	return 0;
}

/* ---- Tile --------------------------------------------------------------- */

/* Fills the output block of axis d (dst) from the input block (src): the
 * input's slices first, then copies of that whole block reps[d]-1 times. */
static void tile_fill(uint8_t *dst, const uint8_t *src, int d, int nd,
		      const int64_t *in_dims, const int64_t *reps,
		      const size_t *in_bytes, const size_t *out_bytes)
{
	if (d == nd - 1) {
		memcpy(dst, src, (size_t)in_dims[d] * in_bytes[d]);
	} else {
		for (int64_t i = 0; i < in_dims[d]; i++)
			tile_fill(dst + (size_t)i * out_bytes[d], src + (size_t)i * in_bytes[d],
				  d + 1, nd, in_dims, reps, in_bytes, out_bytes);
	}
	size_t blk = (size_t)in_dims[d] * out_bytes[d];
	for (int64_t r = 1; r < reps[d]; r++)
		memcpy(dst + (size_t)r * blk, dst, blk);
}

static int run_tile(es_kctx *k)
{
	const es_tensor *x = es_kin(k, 0);
	int r = x->ndim, n;
	int64_t reps[ES_MAX_DIMS], out[ES_MAX_DIMS];
	char b1[128], b2[128];
	size_t esz;
	int rc = elem_size(k, x, &esz);
	if (rc)
		return rc;
	if (k->node->opset < 6) {
		/* Tile-1: tiles (how many) and axis (which), both scalars */
		int64_t tiles, axis;
		int a;
		if (!es_kin(k, 1) || !es_kin(k, 2))
			return es_kctx_fail(k, ES_EINVAL, "inputs tiles and axis are required");
		if ((rc = read_int_scalar(k, 1, "tiles", &tiles)) ||
		    (rc = read_int_scalar(k, 2, "axis", &axis)) ||
		    (rc = norm_axis(k, axis, r, "axis", &a)))
			return rc;
		for (int d = 0; d < r; d++)
			reps[d] = d == a ? tiles : 1;
		n = r;
	} else if ((rc = es_op_read_ints(k, 1, "repeats", reps, ES_MAX_DIMS, &n))) {
		return rc;
	}
	if (n != r)
		return es_kctx_fail(k, ES_ESHAPE, "repeats has %d entries but the input has rank %d",
				    n, r);
	for (int d = 0; d < r; d++) {
		if (reps[d] < 0)
			return es_kctx_fail(k, ES_EINVAL, "repeats[%d] = %lld is negative",
					    d, (long long)reps[d]);
		if (__builtin_mul_overflow(x->dims[d], reps[d], &out[d]))
			return es_kctx_fail(k, ES_ERANGE, "tiling %s by %s overflows",
					    es_op_fmt_dims(b1, sizeof(b1), x->dims, r),
					    es_op_fmt_dims(b2, sizeof(b2), reps, r));
	}
	int64_t numel;
	if (es_shape_numel(out, r, esz, &numel))
		return es_kctx_fail(k, ES_ERANGE, "tiled shape %s is too large",
				    es_op_fmt_dims(b1, sizeof(b1), out, r));
	if ((rc = es_kctx_output(k, 0, x->dtype, r, out)))
		return rc;
	if (numel == 0)
		return 0;
	if (r == 0) {
		memcpy(k->outputs[0]->data, x->data, esz);
		return 0;
	}
	size_t in_bytes[ES_MAX_DIMS], out_bytes[ES_MAX_DIMS];
	in_bytes[r - 1] = out_bytes[r - 1] = esz;
	for (int d = r - 2; d >= 0; d--) {
		in_bytes[d] = in_bytes[d + 1] * (size_t)x->dims[d + 1];
		out_bytes[d] = out_bytes[d + 1] * (size_t)out[d + 1];
	}
	tile_fill(k->outputs[0]->data, x->data, 0, r, x->dims, reps, in_bytes, out_bytes);
	return 0;
}

/* ---- Pad ---------------------------------------------------------------- */

enum { PAD_CONSTANT, PAD_REFLECT, PAD_EDGE, PAD_WRAP };

struct pad_state {
	int mode;
	int n_pads;                      /* opset < 11: pads attribute */
	int64_t pads[2 * ES_MAX_DIMS];
	float value;
};

static int init_pad(es_op_init_ctx *c, void **state)
{
	int rc;
	struct pad_state *st = *state = es_op_state_alloc(c, sizeof(*st));
	if (!st)
		return ES_ENOMEM;
	const char *mode;
	if ((rc = es_node_attr_string(c->node, "mode", "constant", &mode, c->err)))
		return rc;
	static const char *const modes[] = { "constant", "reflect", "edge", "wrap" };
	st->mode = -1;
	for (int i = 0; i < 4; i++)
		if (!strcmp(mode, modes[i]))
			st->mode = i;
	if (st->mode < 0)
		return es_error_set(c->err, ES_EINVAL,
				    "node '%s' (Pad): attribute mode='%s' is not one of constant, reflect, edge, wrap",
				    c->node->name, mode);
	if (c->node->opset < 11) {
		/* Pad-1 calls it paddings, Pad-2 pads */
		const char *name = es_node_attr(c->node, "pads") ? "pads" : "paddings";
		if (!es_node_attr(c->node, name))
			return es_error_set(c->err, ES_EINVAL,
					    "node '%s' (Pad): attribute pads is required",
					    c->node->name);
		if ((rc = es_op_attr_ints(c, name, st->pads, 2 * ES_MAX_DIMS, &st->n_pads)) ||
		    (rc = es_node_attr_float(c->node, "value", 0.0f, &st->value, c->err)))
			return rc;
	}
	return 0;
}

/* Where output position j (relative to the input's start) reads from on an
 * axis of size n, for the non-constant modes. */
static int64_t pad_source(int64_t j, int64_t n, int mode)
{
	if (mode == PAD_EDGE)
		return j < 0 ? 0 : n - 1;
	if (mode == PAD_WRAP) {
		int64_t m = j % n;
		return m < 0 ? m + n : m;
	}
	if (n == 1)
		return 0;
	int64_t period = 2 * (n - 1), m = j % period;
	if (m < 0)
		m += period;
	return m < n ? m : period - m;
}

static int run_pad(es_kctx *k)
{
	const struct pad_state *st = k->state;
	const es_tensor *x = es_kin(k, 0);
	int r = x->ndim, np;
	int64_t pads[2 * ES_MAX_DIMS], axes[ES_MAX_DIMS], pb[ES_MAX_DIMS] = { 0 },
		pe[ES_MAX_DIMS] = { 0 }, out[ES_MAX_DIMS];
	uint8_t value[8] = { 0 };
	char b1[128];
	size_t esz;
	int rc = elem_size(k, x, &esz);
	if (rc)
		return rc;

	if (k->node->opset < 11) {
		np = st->n_pads;
		memcpy(pads, st->pads, sizeof(pads));
		es_op_store_f64(x->dtype, value, 0, st->value);
	} else {
		if (!es_kin(k, 1))
			return es_kctx_fail(k, ES_EINVAL, "input 1 (pads) is required");
		if ((rc = es_op_read_ints(k, 1, "pads", pads, 2 * ES_MAX_DIMS, &np)))
			return rc;
		const es_tensor *cv = es_kin(k, 2);
		if (cv && es_tensor_numel(cv) > 0) {
			if (cv->dtype != x->dtype)
				return es_kctx_fail(k, ES_ETYPE,
						    "input 2 (constant_value) is %s, expected %s like data",
						    es_dtype_name(cv->dtype), es_dtype_name(x->dtype));
			memcpy(value, cv->data, esz);
		}
	}
	int na = r;
	if (k->node->opset >= 11 && es_kin(k, 3)) {
		if ((rc = es_op_read_ints(k, 3, "axes", axes, ES_MAX_DIMS, &na)))
			return rc;
	} else {
		for (int d = 0; d < r; d++)
			axes[d] = d;
	}
	if (np != 2 * na)
		return es_kctx_fail(k, ES_EINVAL, "pads has %d entries, expected %d (2 per axis)",
				    np, 2 * na);
	bool seen[ES_MAX_DIMS] = { false };
	for (int i = 0; i < na; i++) {
		int a;
		if ((rc = norm_axis(k, axes[i], r, "axes", &a)))
			return rc;
		if (seen[a])
			return es_kctx_fail(k, ES_EINVAL, "axis %d is padded twice", a);
		seen[a] = true;
		pb[a] = pads[i];
		pe[a] = pads[i + na];
	}
	/*
	 * Negative pads crop: the axis is first cut to [crop, crop + len) of
	 * the input, then padded by lead / the trailing pad. Edge, reflect and
	 * wrap read the cropped range only (slice, then pad).
	 */
	int64_t crop[ES_MAX_DIMS], len[ES_MAX_DIMS], lead[ES_MAX_DIMS];
	for (int d = 0; d < r; d++) {
		int64_t cb = pb[d] < 0 ? pb[d] : 0, ce = pe[d] < 0 ? pe[d] : 0;
		if (__builtin_add_overflow(x->dims[d], pb[d], &out[d]) ||
		    __builtin_add_overflow(out[d], pe[d], &out[d]) ||
		    __builtin_add_overflow(x->dims[d], cb, &len[d]) ||
		    __builtin_add_overflow(len[d], ce, &len[d]))
			return es_kctx_fail(k, ES_ERANGE, "padding axis %d overflows int64", d);
		if (out[d] < 0 || len[d] < 0)
			return es_kctx_fail(k, ES_EINVAL,
					    "pads %lld and %lld remove more than the %lld entries of axis %d",
					    (long long)pb[d], (long long)pe[d], (long long)x->dims[d], d);
		crop[d] = -cb;
		lead[d] = pb[d] > 0 ? pb[d] : 0;
		if (st->mode != PAD_CONSTANT && len[d] == 0 && out[d] > 0)
			return es_kctx_fail(k, ES_EINVAL,
					    "cannot pad the empty axis %d in mode %s", d,
					    st->mode == PAD_REFLECT ? "reflect" : st->mode == PAD_EDGE ? "edge" : "wrap");
	}
	int64_t numel;
	if (es_shape_numel(out, r, esz, &numel))
		return es_kctx_fail(k, ES_ERANGE, "padded shape %s is too large",
				    es_op_fmt_dims(b1, sizeof(b1), out, r));
	if ((rc = es_kctx_output(k, 0, x->dtype, r, out)))
		return rc;
	if (numel == 0)
		return 0;
	if (r == 0) {
		memcpy(k->outputs[0]->data, x->data, esz);
		return 0;
	}

	int64_t istr[ES_MAX_DIMS];
	strides_of(x->dims, r, istr);
	int64_t inner = out[r - 1], rows = numel / inner, n = len[r - 1], p0 = lead[r - 1];
	int mode = st->mode;
	/* output positions [lo, hi) of a row copy the (cropped) input row */
	int64_t lo = p0 < inner ? p0 : inner;
	int64_t hi = p0 + n < inner ? p0 + n : inner;
	uint8_t *y = k->outputs[0]->data;
	const uint8_t *src = x->data;

	ES_PARALLEL_FOR(k->threads, numel > PAR_MIN, row, rows, {
		uint8_t *d = y + (size_t)(row * inner) * esz;
		int64_t rem = row, off = crop[r - 1];
		bool outside = false;
		for (int i = r - 2; i >= 0; i--) {
			int64_t j = rem % out[i] - lead[i];
			rem /= out[i];
			if (j < 0 || j >= len[i]) {
				if (mode == PAD_CONSTANT) {
					outside = true;
					break;
				}
				j = pad_source(j, len[i], mode);
			}
			off += (crop[i] + j) * istr[i];
		}
		if (outside) {
			es_op_fill(d, value, esz, inner);
			continue;
		}
		const uint8_t *s = src + (size_t)off * esz;
		copy_bytes(d + (size_t)lo * esz, s + (size_t)(lo - p0) * esz,
			   (size_t)(hi - lo) * esz);
		if (mode == PAD_CONSTANT) {
			es_op_fill(d, value, esz, lo);
			es_op_fill(d + (size_t)hi * esz, value, esz, inner - hi);
			continue;
		}
		for (int64_t o = 0; o < lo; o++)
			memcpy(d + (size_t)o * esz, s + (size_t)pad_source(o - p0, n, mode) * esz, esz);
		for (int64_t o = hi; o < inner; o++)
			memcpy(d + (size_t)o * esz, s + (size_t)pad_source(o - p0, n, mode) * esz, esz);
	});
	return 0;
}

/* ---- DepthToSpace / SpaceToDepth ---------------------------------------- */

struct d2s_state {
	int64_t blocksize;
	bool crd;
};

static int init_d2s(es_op_init_ctx *c, void **state)
{
	int rc;
	struct d2s_state *st = *state = es_op_state_alloc(c, sizeof(*st));
	if (!st)
		return ES_ENOMEM;
	const char *mode = "DCR";
	if (!es_node_attr(c->node, "blocksize"))
		return es_error_set(c->err, ES_EINVAL, "node '%s' (%s): attribute blocksize is required",
				    c->node->name, c->node->op_type);
	if ((rc = es_node_attr_int(c->node, "blocksize", 0, &st->blocksize, c->err)))
		return rc;
	if (!strcmp(c->node->op_type, "DepthToSpace") &&
	    (rc = es_node_attr_string(c->node, "mode", "DCR", &mode, c->err)))
		return rc;
	if (st->blocksize < 1 || st->blocksize > INT32_MAX)
		return es_error_set(c->err, ES_EINVAL, "node '%s' (%s): blocksize=%lld must be positive",
				    c->node->name, c->node->op_type, (long long)st->blocksize);
	if (strcmp(mode, "DCR") && strcmp(mode, "CRD"))
		return es_error_set(c->err, ES_EINVAL, "node '%s' (%s): mode='%s' must be DCR or CRD",
				    c->node->name, c->node->op_type, mode);
	st->crd = !strcmp(mode, "CRD");
	return 0;
}

static int run_depth_to_space(es_kctx *k)
{
	const struct d2s_state *st = k->state;
	const es_tensor *x = es_kin(k, 0);
	size_t esz;
	int rc = elem_size(k, x, &esz);
	if (rc)
		return rc;
	int64_t bs = st->blocksize, bb = bs * bs;
	if (x->ndim != 4)
		return es_kctx_fail(k, ES_ESHAPE, "input must be 4-D (N,C,H,W), got rank %d", x->ndim);
	int64_t N = x->dims[0], C = x->dims[1], H = x->dims[2], W = x->dims[3];
	if (C % bb)
		return es_kctx_fail(k, ES_ESHAPE, "channels %lld are not divisible by blocksize^2 = %lld",
				    (long long)C, (long long)bb);
	int64_t out[4] = { N, C / bb, 0, 0 };
	if (__builtin_mul_overflow(H, bs, &out[2]) || __builtin_mul_overflow(W, bs, &out[3]))
		return es_kctx_fail(k, ES_ERANGE, "output spatial size overflows");
	if ((rc = es_kctx_output(k, 0, x->dtype, 4, out)))
		return rc;
	int64_t d6[6];
	int perm[6];
	if (st->crd) { /* [N, C', bs, bs, H, W] -> [N, C', H, bs, W, bs] */
		int64_t v[6] = { N, C / bb, bs, bs, H, W };
		int p[6] = { 0, 1, 4, 2, 5, 3 };
		memcpy(d6, v, sizeof(v));
		memcpy(perm, p, sizeof(p));
	} else { /* [N, bs, bs, C', H, W] -> [N, C', H, bs, W, bs] */
		int64_t v[6] = { N, bs, bs, C / bb, H, W };
		int p[6] = { 0, 3, 4, 1, 5, 2 };
		memcpy(d6, v, sizeof(v));
		memcpy(perm, p, sizeof(p));
	}
	transpose_any(k->outputs[0]->data, x->data, 6, d6, perm, esz, k->threads);
	return 0;
}

static int run_space_to_depth(es_kctx *k)
{
	const struct d2s_state *st = k->state;
	const es_tensor *x = es_kin(k, 0);
	size_t esz;
	int rc = elem_size(k, x, &esz);
	if (rc)
		return rc;
	int64_t bs = st->blocksize;
	if (x->ndim != 4)
		return es_kctx_fail(k, ES_ESHAPE, "input must be 4-D (N,C,H,W), got rank %d", x->ndim);
	int64_t N = x->dims[0], C = x->dims[1], H = x->dims[2], W = x->dims[3];
	if (H % bs || W % bs)
		return es_kctx_fail(k, ES_ESHAPE, "spatial size %lldx%lld is not divisible by blocksize %lld",
				    (long long)H, (long long)W, (long long)bs);
	int64_t out[4] = { N, 0, H / bs, W / bs };
	if (__builtin_mul_overflow(C, bs * bs, &out[1]))
		return es_kctx_fail(k, ES_ERANGE, "output channels overflow");
	if ((rc = es_kctx_output(k, 0, x->dtype, 4, out)))
		return rc;
	/* [N, C, H/bs, bs, W/bs, bs] -> [N, bs, bs, C, H/bs, W/bs] */
	int64_t d6[6] = { N, C, H / bs, bs, W / bs, bs };
	int perm[6] = { 0, 3, 5, 1, 2, 4 };
	transpose_any(k->outputs[0]->data, x->data, 6, d6, perm, esz, k->threads);
	return 0;
}

/* ---- OneHot ------------------------------------------------------------- */

static int init_onehot(es_op_init_ctx *c, void **state)
{
	return init_int_attr(c, state, "axis", -1);
}

static int run_onehot(es_kctx *k)
{
	const struct int_state *st = k->state;
	const es_tensor *idx = es_kin(k, 0), *depth_t = es_kin(k, 1), *vals = es_kin(k, 2);
	char b1[128];
	size_t esz;
	int rc = elem_size(k, vals, &esz);
	if (rc)
		return rc;
	if (!es_dtype_size(idx->dtype) || !es_dtype_size(depth_t->dtype))
		return es_kctx_fail(k, ES_ETYPE, "indices and depth must be numeric");
	if (es_tensor_numel(depth_t) != 1)
		return es_kctx_fail(k, ES_ESHAPE, "input 1 (depth) must have one element, got %lld",
				    (long long)es_tensor_numel(depth_t));
	if (es_tensor_numel(vals) != 2)
		return es_kctx_fail(k, ES_ESHAPE, "input 2 (values) must have two elements [off, on], got %lld",
				    (long long)es_tensor_numel(vals));
	int64_t depth;
	if (!load_int64_any(depth_t->data, depth_t->dtype, &depth) || depth < 1)
		return es_kctx_fail(k, ES_EINVAL, "depth must be a positive integer, got %g",
				    es_op_load_f64(depth_t->dtype, depth_t->data, 0));
	int r = idx->ndim, axis;
	if (r + 1 > ES_MAX_DIMS)
		return es_kctx_fail(k, ES_EUNSUPPORTED, "output rank %d exceeds %d", r + 1, ES_MAX_DIMS);
	if ((rc = norm_axis(k, st->v, r + 1, "axis", &axis)))
		return rc;
	int64_t out[ES_MAX_DIMS];
	for (int d = 0, j = 0; d <= r; d++)
		out[d] = d == axis ? depth : idx->dims[j++];
	int64_t numel;
	if (es_shape_numel(out, r + 1, esz, &numel))
		return es_kctx_fail(k, ES_ERANGE, "output shape %s is too large",
				    es_op_fmt_dims(b1, sizeof(b1), out, r + 1));
	if ((rc = es_kctx_output(k, 0, vals->dtype, r + 1, out)))
		return rc;
	if (numel == 0)
		return 0;
	uint8_t *y = k->outputs[0]->data;
	const uint8_t *off_v = vals->data, *on_v = off_v + esz;
	es_op_fill(y, off_v, esz, numel);
	int64_t outer = span(idx->dims, 0, axis), inner = span(idx->dims, axis, r);
	size_t isz = es_dtype_size(idx->dtype);
	for (int64_t o = 0; o < outer; o++)
		for (int64_t i = 0; i < inner; i++) {
			int64_t v;
			if (!load_int64_any((const uint8_t *)idx->data + (size_t)(o * inner + i) * isz,
					    idx->dtype, &v))
				continue;
			if (v < 0)
				v += depth;
			if (v < 0 || v >= depth)
				continue; /* out of range: all "off" */
			memcpy(y + (size_t)((o * depth + v) * inner + i) * esz, on_v, esz);
		}
	return 0;
}

/* ---- Trilu -------------------------------------------------------------- */

static int init_trilu(es_op_init_ctx *c, void **state)
{
	return init_int_attr(c, state, "upper", 1);
}

static int run_trilu(es_kctx *k)
{
	const struct int_state *st = k->state;
	const es_tensor *x = es_kin(k, 0);
	int64_t diag = 0;
	size_t esz;
	int rc = elem_size(k, x, &esz);
	if (rc)
		return rc;
	if (x->ndim < 2)
		return es_kctx_fail(k, ES_ESHAPE, "input must have rank >= 2, got %d", x->ndim);
	if (es_kin(k, 1) && (rc = read_int_scalar(k, 1, "k", &diag)))
		return rc;
	if ((rc = output_copy_of_input(k, x)))
		return rc;
	int64_t numel = es_tensor_numel(x);
	if (numel == 0)
		return 0;
	int64_t N = x->dims[x->ndim - 2], M = x->dims[x->ndim - 1];
	int64_t batches = numel / (N * M);
	/* clamp k so that i + k cannot overflow; beyond +-(N+M) nothing changes */
	int64_t lim = N + M;
	diag = diag > lim ? lim : diag < -lim ? -lim : diag;
	uint8_t *y = k->outputs[0]->data;
	for (int64_t b = 0; b < batches; b++)
		for (int64_t i = 0; i < N; i++) {
			uint8_t *row = y + (size_t)((b * N + i) * M) * esz;
			int64_t from, to;
			if (st->v) { /* upper: keep j >= i + k */
				from = 0;
				to = i + diag;
			} else {     /* lower: keep j <= i + k */
				from = i + diag + 1;
				to = M;
			}
			from = from < 0 ? 0 : from > M ? M : from;
			to = to < 0 ? 0 : to > M ? M : to;
			if (to > from)
				memset(row + (size_t)from * esz, 0, (size_t)(to - from) * esz);
		}
	return 0;
}

/* ---- CumSum ------------------------------------------------------------- */

struct cumsum_state {
	int64_t exclusive, reverse;
};

static int init_cumsum(es_op_init_ctx *c, void **state)
{
	struct cumsum_state *st = *state = es_op_state_alloc(c, sizeof(*st));
	if (!st)
		return ES_ENOMEM;
	int rc = es_node_attr_int(c->node, "exclusive", 0, &st->exclusive, c->err);
	if (!rc)
		rc = es_node_attr_int(c->node, "reverse", 0, &st->reverse, c->err);
	return rc;
}

/*
 * Scans along the axis one row of `inner` elements at a time:
 * y[j] = y[j-1] + x[j] (inclusive) or y[j-1] + x[j-1] (exclusive), with j
 * running backwards when reversed. ACC is the accumulation type, LD/ST
 * convert.
 */
#define CUMSUM_LOOP(T, ACC, LD, ST)                                               \
	do {                                                                      \
		const T *xs = x->data;                                            \
		T *ys = y;                                                        \
		for (int64_t o = 0; o < outer; o++) {                             \
			for (int64_t s = 0; s < n; s++) {                         \
				int64_t j = rev ? n - 1 - s : s;                  \
				int64_t pj = s == 0 ? j : rev ? j + 1 : j - 1;    \
				T *yr = ys + (o * n + j) * inner;                 \
				const T *xr = xs + (o * n + (excl ? pj : j)) * inner; \
				const T *yp = ys + (o * n + pj) * inner;          \
				for (int64_t i = 0; i < inner; i++) {             \
					ACC a = s == 0 ? (ACC)0 : (ACC)LD(yp[i]); \
					ACC b = (excl && s == 0) ? (ACC)0 : (ACC)LD(xr[i]); \
					yr[i] = ST(a + b);                        \
				}                                                 \
			}                                                         \
		}                                                                 \
	} while (0)

#define ID(v) (v)
#define U64(v) ((uint64_t)(v))

static int run_cumsum(es_kctx *k)
{
	const struct cumsum_state *st = k->state;
	const es_tensor *x = es_kin(k, 0);
	int64_t axis_v;
	int axis, r = x->ndim;
	int rc = read_int_scalar(k, 1, "axis", &axis_v);
	if (rc)
		return rc;
	if (r == 0)
		return es_kctx_fail(k, ES_ESHAPE, "input must have rank >= 1");
	if ((rc = norm_axis(k, axis_v, r, "axis", &axis)))
		return rc;
	bool excl = st->exclusive != 0, rev = st->reverse != 0;
	/* exclusive reads x[j-1] after y[j-1] was written: no in-place */
	if (excl) {
		rc = es_kctx_output(k, 0, x->dtype, r, x->dims);
	} else {
		bool inplace;
		rc = es_kctx_output_inplace(k, 0, 0, x->dtype, r, x->dims, &inplace);
	}
	if (rc)
		return rc;
	if (es_tensor_numel(x) == 0)
		return 0;
	int64_t outer = span(x->dims, 0, axis), n = x->dims[axis],
		inner = span(x->dims, axis + 1, r);
	void *y = k->outputs[0]->data;
	switch (x->dtype) {
	case ES_DT_FLOAT: CUMSUM_LOOP(float, float, ID, ID); break;
	case ES_DT_DOUBLE: CUMSUM_LOOP(double, double, ID, ID); break;
	case ES_DT_FLOAT16: CUMSUM_LOOP(uint16_t, float, es_half_to_float, es_float_to_half); break;
	case ES_DT_BFLOAT16: CUMSUM_LOOP(uint16_t, float, es_bf16_to_float, es_float_to_bf16); break;
	/* integers wrap (unsigned arithmetic, no UB) */
	case ES_DT_INT8: CUMSUM_LOOP(int8_t, uint64_t, U64, (int8_t)); break;
	case ES_DT_INT16: CUMSUM_LOOP(int16_t, uint64_t, U64, (int16_t)); break;
	case ES_DT_INT32: CUMSUM_LOOP(int32_t, uint64_t, U64, (int32_t)); break;
	case ES_DT_INT64: CUMSUM_LOOP(int64_t, uint64_t, U64, (int64_t)); break;
	case ES_DT_UINT8: CUMSUM_LOOP(uint8_t, uint64_t, U64, (uint8_t)); break;
	case ES_DT_UINT16: CUMSUM_LOOP(uint16_t, uint64_t, U64, (uint16_t)); break;
	case ES_DT_UINT32: CUMSUM_LOOP(uint32_t, uint64_t, U64, (uint32_t)); break;
	case ES_DT_UINT64: CUMSUM_LOOP(uint64_t, uint64_t, U64, (uint64_t)); break;
	default:
		return es_kctx_fail(k, ES_ETYPE, "type %s is not supported", es_dtype_name(x->dtype));
	}
	return 0;
}

/* ---- NonZero ------------------------------------------------------------ */

static bool elem_nonzero(const uint8_t *p, es_dtype dt, size_t esz)
{
	if (es_op_is_float(dt))
		return es_op_load_f64(dt, p, 0) != 0; /* -0.0 is zero, NaN is not */
	for (size_t b = 0; b < esz; b++)
		if (p[b])
			return true;
	return false;
}

static int run_nonzero(es_kctx *k)
{
	const es_tensor *x = es_kin(k, 0);
	size_t esz;
	int rc = elem_size(k, x, &esz);
	if (rc)
		return rc;
	int64_t numel = es_tensor_numel(x), nnz = 0;
	const uint8_t *src = x->data;
	for (int64_t i = 0; i < numel; i++)
		nnz += elem_nonzero(src + (size_t)i * esz, x->dtype, esz);
	/* a scalar is treated as 1-D (numpy) */
	int r = x->ndim ? x->ndim : 1;
	int64_t out[2] = { r, nnz };
	if ((rc = es_kctx_output(k, 0, ES_DT_INT64, 2, out)))
		return rc;
	int64_t *y = k->outputs[0]->data;
	int64_t at = 0;
	for (int64_t i = 0; i < numel; i++) {
		if (!elem_nonzero(src + (size_t)i * esz, x->dtype, esz))
			continue;
		int64_t rem = i;
		for (int d = x->ndim - 1; d >= 0; d--) {
			y[d * nnz + at] = rem % x->dims[d];
			rem /= x->dims[d];
		}
		if (x->ndim == 0)
			y[at] = 0;
		at++;
	}
	return 0;
}

/* ---- Compress ----------------------------------------------------------- */

static int run_compress(es_kctx *k)
{
	const struct int_state *st = k->state;
	const es_tensor *x = es_kin(k, 0), *cond = es_kin(k, 1);
	size_t esz;
	int rc = elem_size(k, x, &esz);
	if (rc)
		return rc;
	if (cond->dtype != ES_DT_BOOL)
		return es_kctx_fail(k, ES_ETYPE, "input 1 (condition) must be bool, got %s",
				    es_dtype_name(cond->dtype));
	if (cond->ndim != 1)
		return es_kctx_fail(k, ES_ESHAPE, "input 1 (condition) must be 1-D, got rank %d",
				    cond->ndim);
	const uint8_t *c = cond->data;
	int64_t nc = cond->dims[0];
	int r = x->ndim, axis = -1;
	if (st->given && (rc = norm_axis(k, st->v, r, "axis", &axis)))
		return rc;
	int64_t len = axis < 0 ? es_tensor_numel(x) : x->dims[axis];
	/* a shorter condition drops the rest; a longer one may only add false */
	int64_t count = 0;
	for (int64_t i = 0; i < nc; i++) {
		if (!c[i])
			continue;
		if (i >= len)
			return es_kctx_fail(k, ES_ERANGE,
					    "condition[%lld] is true but the selected axis has only %lld entries",
					    (long long)i, (long long)len);
		count++;
	}
	int64_t lim = nc < len ? nc : len;
	const uint8_t *src = x->data;
	if (axis < 0) {
		if ((rc = es_kctx_output(k, 0, x->dtype, 1, &count)))
			return rc;
		uint8_t *y = k->outputs[0]->data;
		for (int64_t i = 0, at = 0; i < lim; i++)
			if (c[i])
				memcpy(y + (size_t)(at++) * esz, src + (size_t)i * esz, esz);
		return 0;
	}
	int64_t out[ES_MAX_DIMS];
	memcpy(out, x->dims, sizeof(out));
	out[axis] = count;
	if ((rc = es_kctx_output(k, 0, x->dtype, r, out)))
		return rc;
	if (es_tensor_numel(k->outputs[0]) == 0)
		return 0;
	int64_t outer = span(x->dims, 0, axis), inner = span(x->dims, axis + 1, r);
	size_t blk = (size_t)inner * esz;
	uint8_t *y = k->outputs[0]->data;
	for (int64_t o = 0, at = 0; o < outer; o++)
		for (int64_t i = 0; i < lim; i++)
			if (c[i])
				memcpy(y + (size_t)(at++) * blk,
				       src + (size_t)(o * len + i) * blk, blk);
	return 0;
}

/* ---- the table ---------------------------------------------------------- */

#define OP(name, since_, until_, mini, maxi, types_, same_, init_, fini_, run_) \
	{ .domain = "", .op_type = name, .since = since_, .until = until_,       \
	  .min_inputs = mini, .max_inputs = maxi, .min_outputs = 1,               \
	  .max_outputs = 1, .types = types_, .same_type_inputs = same_,           \
	  .out_type = ES_OUT_SAME, .init = init_, .fini = fini_, .run = run_ }

static const es_op_def defs[] = {
	OP("Transpose", 1, 0, 1, 1, ES_T_ALL, 0, init_transpose, es_op_state_free, run_transpose),
	OP("Concat", 1, 0, 1, ES_VARIADIC, ES_T_ALL, 0xffffffffu, init_concat, es_op_state_free,
	   run_concat),
	/* Split: 1 (split input or attribute), 2-12 (attribute), 13+ (input;
	 * 18 adds num_outputs) */
	{ .domain = "", .op_type = "Split", .since = 1, .until = 1,
	  .min_inputs = 1, .max_inputs = 2, .min_outputs = 1, .max_outputs = ES_VARIADIC,
	  .types = ES_T_ALL, .out_type = ES_OUT_SAME, .init = init_split,
	  .fini = es_op_state_free, .run = run_split },
	{ .domain = "", .op_type = "Split", .since = 2, .until = 12,
	  .min_inputs = 1, .max_inputs = 1, .min_outputs = 1, .max_outputs = ES_VARIADIC,
	  .types = ES_T_ALL, .out_type = ES_OUT_SAME, .init = init_split,
	  .fini = es_op_state_free, .run = run_split },
	{ .domain = "", .op_type = "Split", .since = 13, .until = 0,
	  .min_inputs = 1, .max_inputs = 2, .min_outputs = 1, .max_outputs = ES_VARIADIC,
	  .types = ES_T_ALL, .out_type = ES_OUT_SAME, .init = init_split,
	  .fini = es_op_state_free, .run = run_split },
	OP("Slice", 1, 9, 1, 1, ES_T_ALL, 0, init_slice1, es_op_state_free, run_slice),
	OP("Slice", 10, 0, 3, 5, ES_T_ALL, 0, NULL, NULL, run_slice),
	OP("Gather", 1, 0, 2, 2, ES_T_ALL, 0, init_axis0, es_op_state_free, run_gather),
	OP("GatherElements", 11, 0, 2, 2, ES_T_ALL, 0, init_axis0, es_op_state_free,
	   run_gather_elements),
	{ .domain = "", .op_type = "GatherND", .since = 11, .until = 0,
	  .min_inputs = 2, .max_inputs = 2, .min_outputs = 1, .max_outputs = 1,
	  .types = ES_T_ALL, .out_type = ES_OUT_SAME, .init = init_gather_nd,
	  .fini = es_op_state_free, .run = run_gather_nd },
	OP("ScatterND", 11, 0, 3, 3, ES_T_ALL, 0x5, init_scatter, es_op_state_free, run_scatter_nd),
	OP("ScatterElements", 11, 0, 3, 3, ES_T_ALL, 0x5, init_scatter, es_op_state_free,
	   run_scatter_elements),
	OP("Scatter", 9, 0, 3, 3, ES_T_ALL, 0x5, init_scatter, es_op_state_free,
	   run_scatter_elements),
	OP("Tile", 1, 5, 3, 3, ES_T_ALL, 0, NULL, NULL, run_tile),
	OP("Tile", 6, 0, 2, 2, ES_T_ALL, 0, NULL, NULL, run_tile),
	OP("Pad", 1, 10, 1, 1, ES_T_ALL, 0, init_pad, es_op_state_free, run_pad),
	OP("Pad", 11, 0, 2, 4, ES_T_ALL, 0x5, init_pad, es_op_state_free, run_pad),
	OP("DepthToSpace", 1, 0, 1, 1, ES_T_ALL, 0, init_d2s, es_op_state_free, run_depth_to_space),
	OP("SpaceToDepth", 1, 0, 1, 1, ES_T_ALL, 0, init_d2s, es_op_state_free, run_space_to_depth),
	{ .domain = "", .op_type = "OneHot", .since = 9, .until = 0,
	  .min_inputs = 3, .max_inputs = 3, .min_outputs = 1, .max_outputs = 1,
	  .types = ES_T_NUMERIC, .out_type = ES_OUT_UNKNOWN, .init = init_onehot,
	  .fini = es_op_state_free, .run = run_onehot },
	OP("Trilu", 14, 0, 1, 2, ES_T_ALL, 0, init_trilu, es_op_state_free, run_trilu),
	OP("CumSum", 11, 0, 2, 2, ES_T_NUMERIC, 0, init_cumsum, es_op_state_free, run_cumsum),
	{ .domain = "", .op_type = "NonZero", .since = 9, .until = 0,
	  .min_inputs = 1, .max_inputs = 1, .min_outputs = 1, .max_outputs = 1,
	  .types = ES_T_ALL, .out_type = ES_OUT_FIXED, .out_dtype = ES_DT_INT64,
	  .run = run_nonzero },
	OP("Compress", 9, 0, 2, 2, ES_T_ALL, 0, init_axis0, es_op_state_free, run_compress),
};

const es_op_table es_ops_transform = { defs, sizeof(defs) / sizeof(defs[0]) };
