/*
 * Operator family: misc (Einsum, NonMaxSuppression, Shrink).
 *
 * Einsum is one generic engine: every distinct label of the equation (the
 * broadcast ellipsis dimensions count as labels too) becomes a loop axis;
 * each operand gets a stride per axis (the sum of its strides for a label
 * it repeats, which is how diagonals fall out) and the output gets one
 * (zero for summed labels). Each output element then sums the product of
 * the operands over the summed axes. Operands are widened once into double
 * (float types) or uint64 (integers: sums and products wrap like the input
 * type, whatever its signedness).
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "engine/ops/families.h"
#include "engine/ops/op_util.h"

#define PAR_MIN_WORK (1 << 15)

/* ---- Einsum operand widening -------------------------------------------- */

/* Integer element as its 64-bit two's complement pattern. */
static uint64_t load_bits(const void *p, es_dtype dt, int64_t i)
{
	switch (dt) {
	case ES_DT_INT8: return (uint64_t)(int64_t)((const int8_t *)p)[i];
	case ES_DT_INT16: return (uint64_t)(int64_t)((const int16_t *)p)[i];
	case ES_DT_INT32: return (uint64_t)(int64_t)((const int32_t *)p)[i];
	case ES_DT_INT64: return (uint64_t)((const int64_t *)p)[i];
	case ES_DT_UINT8: return ((const uint8_t *)p)[i];
	case ES_DT_UINT16: return ((const uint16_t *)p)[i];
	case ES_DT_UINT32: return ((const uint32_t *)p)[i];
	case ES_DT_UINT64: return ((const uint64_t *)p)[i];
	default: return 0;
	}
}

/* ---- Einsum ---------------------------------------------------------------- */

#define EIN_LABELS 52           /* a-z, A-Z */
#define EIN_MAX_OPS 32          /* operands we accept */
#define EIN_MAX_AXES (EIN_LABELS + ES_MAX_DIMS)
#define EIN_ELL -1              /* the ellipsis in a term */

struct ein_term {
	int n;                   /* entries in lab[] */
	int lab[ES_MAX_DIMS + 1]; /* label 0..51, or EIN_ELL (at most once) */
	bool has_ell;
};

struct ein_state {
	int n_ops;
	struct ein_term in[EIN_MAX_OPS];
	struct ein_term out;
};

static int label_of(char c)
{
	if (c >= 'a' && c <= 'z')
		return c - 'a';
	if (c >= 'A' && c <= 'Z')
		return 26 + c - 'A';
	return -1;
}

/* Parses one term from *p up to ',' '-' or the end. */
static int ein_parse_term(const char **p, struct ein_term *t, const char **bad)
{
	const char *s = *p;
	memset(t, 0, sizeof(*t));
	for (;;) {
		while (*s == ' ')
			s++;
		if (!*s || *s == ',' || *s == '-')
			break;
		if (s[0] == '.') {
			if (s[1] != '.' || s[2] != '.' || t->has_ell) {
				*bad = s;
				return -1;
			}
			if (t->n >= ES_MAX_DIMS + 1) {
				*bad = s;
				return -1;
			}
			t->lab[t->n++] = EIN_ELL;
			t->has_ell = true;
			s += 3;
			continue;
		}
		int l = label_of(*s);
		if (l < 0 || t->n >= ES_MAX_DIMS + (t->has_ell ? 1 : 0)) {
			*bad = s;
			return -1;
		}
		t->lab[t->n++] = l;
		s++;
	}
	*p = s;
	return 0;
}

static int ein_init(es_op_init_ctx *c, void **state)
{
	const es_node *node = c->node;
	const char *eq, *bad = NULL;
	int rc;
	if (!es_node_attr(node, "equation"))
		return es_error_set(c->err, ES_EINVAL,
				    "node '%s' (Einsum): required attribute 'equation' is missing",
				    node->name);
	if ((rc = es_node_attr_string(node, "equation", "", &eq, c->err)))
		return rc;
	if (node->n_inputs > EIN_MAX_OPS)
		return es_error_set(c->err, ES_EUNSUPPORTED,
				    "node '%s' (Einsum): %d operands, at most %d are supported",
				    node->name, node->n_inputs, EIN_MAX_OPS);
	struct ein_state *s = es_op_state_alloc(c, sizeof(*s));
	if (!s)
		return ES_ENOMEM;
	const char *p = eq;
	bool explicit_out = false;
	for (;;) {
		if (s->n_ops >= EIN_MAX_OPS) {
			bad = p;
			goto out_bad;
		}
		if (ein_parse_term(&p, &s->in[s->n_ops], &bad))
			goto out_bad;
		s->n_ops++;
		if (*p == ',') {
			p++;
			continue;
		}
		if (*p == '-') {
			if (p[1] != '>') {
				bad = p;
				goto out_bad;
			}
			p += 2;
			if (ein_parse_term(&p, &s->out, &bad))
				goto out_bad;
			while (*p == ' ')
				p++;
			if (*p) {
				bad = p;
				goto out_bad;
			}
			explicit_out = true;
		}
		break;
	}
	if (s->n_ops != node->n_inputs) {
		rc = es_error_set(c->err, ES_EINVAL,
				  "node '%s' (Einsum): equation '%s' has %d operand terms but the node has %d inputs",
				  node->name, eq, s->n_ops, node->n_inputs);
		goto out_free;
	}
	int count[EIN_LABELS] = { 0 };
	bool any_ell = false;
	for (int i = 0; i < s->n_ops; i++) {
		any_ell |= s->in[i].has_ell;
		for (int j = 0; j < s->in[i].n; j++)
			if (s->in[i].lab[j] >= 0)
				count[s->in[i].lab[j]]++;
	}
	if (explicit_out) {
		bool seen[EIN_LABELS] = { false };
		for (int j = 0; j < s->out.n; j++) {
			int l = s->out.lab[j];
			if (l == EIN_ELL) {
				if (!any_ell) {
					rc = es_error_set(c->err, ES_EINVAL,
						"node '%s' (Einsum): equation '%s': the output has '...' but no operand has",
						node->name, eq);
					goto out_free;
				}
				continue;
			}
			if (!count[l] || seen[l]) {
				rc = es_error_set(c->err, ES_EINVAL,
					"node '%s' (Einsum): equation '%s': output label '%c' %s",
					node->name, eq, l < 26 ? 'a' + l : 'A' + l - 26,
					seen[l] ? "appears twice" : "is not in any operand");
				goto out_free;
			}
			seen[l] = true;
		}
	} else {
		/* implicit: the ellipsis, then labels seen once, alphabetically
		 * (numpy orders upper case before lower case) */
		struct ein_term *o = &s->out;
		if (any_ell) {
			o->lab[o->n++] = EIN_ELL;
			o->has_ell = true;
		}
		for (int l = 26; l < EIN_LABELS; l++)
			if (count[l] == 1 && o->n < ES_MAX_DIMS + 1)
				o->lab[o->n++] = l;
		for (int l = 0; l < 26; l++)
			if (count[l] == 1 && o->n < ES_MAX_DIMS + 1)
				o->lab[o->n++] = l;
	}
	*state = s;
	return 0;
out_bad:
	rc = es_error_set(c->err, ES_EINVAL,
			  "node '%s' (Einsum): cannot parse equation '%s' at offset %d",
			  node->name, eq, bad ? (int)(bad - eq) : 0);
out_free:
	free(s);
	return rc;
}

struct ein_plan {
	int n_axes, n_out_axes;      /* output axes come first */
	int64_t size[EIN_MAX_AXES];
	int64_t ostride[EIN_MAX_AXES];
	int n_ops;
	int64_t istride[EIN_MAX_OPS][EIN_MAX_AXES];
	const void *data[EIN_MAX_OPS]; /* widened operands */
	bool real;
};

/* One output element: the sum over the summed axes of the products. */
static void ein_element(const struct ein_plan *p, int64_t o, void *out)
{
	int64_t base[EIN_MAX_OPS], idx[EIN_MAX_AXES];
	int64_t rem = o;
	for (int i = 0; i < p->n_ops; i++)
		base[i] = 0;
	for (int a = p->n_out_axes - 1; a >= 0; a--) {
		int64_t c = rem % p->size[a];
		rem /= p->size[a];
		for (int i = 0; i < p->n_ops; i++)
			base[i] += c * p->istride[i][a];
	}
	int first = p->n_out_axes, last = p->n_axes - 1;
	int64_t off[EIN_MAX_OPS];
	double racc = 0;
	uint64_t uacc = 0;
	for (int a = first; a <= last; a++)
		idx[a] = 0;
	for (int i = 0; i < p->n_ops; i++)
		off[i] = base[i];
	for (;;) {
		/* innermost summed axis (or a single term) as a tight loop */
		int64_t n = first <= last ? p->size[last] : 1;
		for (int64_t j = 0; j < n; j++) {
			if (p->real) {
				double v = 1;
				for (int i = 0; i < p->n_ops; i++)
					v *= ((const double *)p->data[i])
						[off[i] + (first <= last ? j * p->istride[i][last] : 0)];
				racc += v;
			} else {
				uint64_t v = 1;
				for (int i = 0; i < p->n_ops; i++)
					v *= ((const uint64_t *)p->data[i])
						[off[i] + (first <= last ? j * p->istride[i][last] : 0)];
				uacc += v;
			}
		}
		int a = last - 1;
		for (; a >= first; a--) {
			for (int i = 0; i < p->n_ops; i++)
				off[i] += p->istride[i][a];
			if (++idx[a] < p->size[a])
				break;
			for (int i = 0; i < p->n_ops; i++)
				off[i] -= p->istride[i][a] * p->size[a];
			idx[a] = 0;
		}
		if (a < first)
			break;
	}
	if (p->real)
		((double *)out)[o] = racc;
	else
		((uint64_t *)out)[o] = uacc;
}

static int ein_run(es_kctx *k)
{
	const struct ein_state *s = k->state;
	int rc, n_ell = 0;
	int64_t lsize[EIN_LABELS];
	int64_t ell[ES_MAX_DIMS]; /* broadcast ellipsis dims, right-aligned */
	int ell_of[EIN_MAX_OPS];
	const es_tensor *x0 = es_kin(k, 0);

	for (int l = 0; l < EIN_LABELS; l++)
		lsize[l] = -1;
	if (!x0)
		return es_kctx_fail(k, ES_EINVAL, "input 0 is missing");
	for (int i = 0; i < s->n_ops; i++) {
		const es_tensor *x = es_kin(k, i);
		const struct ein_term *t = &s->in[i];
		char what[16];
		snprintf(what, sizeof(what), "%d", i);
		if (!x)
			return es_kctx_fail(k, ES_EINVAL, "input %d is missing", i);
		if ((rc = es_op_check_dtype(k, x, ES_T_NUMERIC, what)))
			return rc;
		if (x->dtype != x0->dtype)
			return es_kctx_fail(k, ES_ETYPE, "input %d has type %s, expected %s like input 0",
					    i, es_dtype_name(x->dtype), es_dtype_name(x0->dtype));
		int letters = t->n - (t->has_ell ? 1 : 0);
		if (t->has_ell ? x->ndim < letters : x->ndim != letters)
			return es_kctx_fail(k, ES_ESHAPE,
					    "input %d has rank %d but its term has %d labels%s",
					    i, x->ndim, letters, t->has_ell ? " and '...'" : "");
		ell_of[i] = x->ndim - letters;
		n_ell = ell_of[i] > n_ell ? ell_of[i] : n_ell;
	}
	for (int e = 0; e < n_ell; e++)
		ell[e] = 1;
	for (int i = 0; i < s->n_ops; i++) {
		const es_tensor *x = es_kin(k, i);
		const struct ein_term *t = &s->in[i];
		int d = 0;
		for (int j = 0; j < t->n; j++) {
			if (t->lab[j] == EIN_ELL) {
				for (int e = 0; e < ell_of[i]; e++, d++) {
					int at = n_ell - ell_of[i] + e;
					int64_t v = x->dims[d];
					if (v != 1 && ell[at] != 1 && ell[at] != v)
						return es_kctx_fail(k, ES_ESHAPE,
							"input %d: dimension %d (%lld) under '...' does not broadcast with %lld",
							i, d, (long long)v, (long long)ell[at]);
					if (v != 1)
						ell[at] = v;
				}
				continue;
			}
			int l = t->lab[j];
			if (lsize[l] >= 0 && lsize[l] != x->dims[d])
				return es_kctx_fail(k, ES_ESHAPE,
					"label '%c' is %lld in input %d but %lld elsewhere",
					l < 26 ? 'a' + l : 'A' + l - 26,
					(long long)x->dims[d], i, (long long)lsize[l]);
			lsize[l] = x->dims[d];
			d++;
		}
	}

	/* axes: output labels (with the ellipsis) first, then summed ones;
	 * axis of a label l, or of ellipsis dim e */
	struct ein_plan plan, *p = &plan;
	memset(p, 0, sizeof(*p));
	int axis_of_label[EIN_LABELS], axis_of_ell[ES_MAX_DIMS];
	int64_t odims[ES_MAX_DIMS];
	int ondim = 0;
	for (int l = 0; l < EIN_LABELS; l++)
		axis_of_label[l] = -1;
	for (int e = 0; e < n_ell; e++)
		axis_of_ell[e] = -1;
	for (int j = 0; j < s->out.n; j++) {
		if (s->out.lab[j] == EIN_ELL) {
			for (int e = 0; e < n_ell; e++) {
				axis_of_ell[e] = p->n_axes;
				p->size[p->n_axes++] = ell[e];
			}
		} else {
			axis_of_label[s->out.lab[j]] = p->n_axes;
			p->size[p->n_axes++] = lsize[s->out.lab[j]];
		}
	}
	p->n_out_axes = p->n_axes;
	if (p->n_out_axes > ES_MAX_DIMS)
		return es_kctx_fail(k, ES_ESHAPE, "the output would have rank %d, more than %d",
				    p->n_out_axes, ES_MAX_DIMS);
	for (int a = 0; a < p->n_out_axes; a++)
		odims[ondim++] = p->size[a];
	for (int e = 0; e < n_ell; e++) /* '...' missing from the output: summed */
		if (axis_of_ell[e] < 0) {
			axis_of_ell[e] = p->n_axes;
			p->size[p->n_axes++] = ell[e];
		}
	for (int l = 0; l < EIN_LABELS; l++)
		if (lsize[l] >= 0 && axis_of_label[l] < 0) {
			axis_of_label[l] = p->n_axes;
			p->size[p->n_axes++] = lsize[l];
		}

	if ((rc = es_kctx_output(k, 0, x0->dtype, ondim, odims)))
		return rc;
	es_tensor *y = k->outputs[0];
	int64_t on = es_tensor_numel(y);
	if (on == 0)
		return 0;

	/* one scratch block: the widened operands, then the accumulators */
	size_t bytes = (size_t)on * 8;
	for (int i = 0; i < s->n_ops; i++) {
		size_t b = (size_t)es_tensor_numel(es_kin(k, i)) * 8;
		if (__builtin_add_overflow(bytes, b, &bytes))
			return es_kctx_fail(k, ES_ERANGE, "operands too large");
	}
	char *scratch = es_kctx_scratch(k, bytes);
	if (!scratch)
		return es_kctx_fail(k, ES_ENOMEM, "cannot allocate %zu bytes of scratch", bytes);
	void *acc = scratch;
	scratch += (size_t)on * 8;

	/* widen the operands; strides per axis */
	p->n_ops = s->n_ops;
	p->real = es_op_is_float(x0->dtype);
	bool empty = false;
	for (int i = 0; i < s->n_ops; i++) {
		const es_tensor *x = es_kin(k, i);
		int64_t n = es_tensor_numel(x);
		void *buf = scratch;
		scratch += (size_t)n * 8;
		empty |= n == 0;
		for (int64_t q = 0; q < n; q++) {
			if (p->real)
				((double *)buf)[q] = es_op_load_f64(x->dtype, x->data, q);
			else
				((uint64_t *)buf)[q] = load_bits(x->data, x->dtype, q);
		}
		p->data[i] = buf;
		const struct ein_term *t = &s->in[i];
		int64_t stride = 1;
		int d = x->ndim - 1;
		for (int j = t->n - 1; j >= 0; j--) {
			if (t->lab[j] == EIN_ELL) {
				for (int e = ell_of[i] - 1; e >= 0; e--, d--) {
					int at = n_ell - ell_of[i] + e;
					if (x->dims[d] != 1)
						p->istride[i][axis_of_ell[at]] += stride;
					stride *= x->dims[d];
				}
				continue;
			}
			p->istride[i][axis_of_label[t->lab[j]]] += stride;
			stride *= x->dims[d];
			d--;
		}
	}
	int64_t per = 1;
	for (int a = p->n_out_axes; a < p->n_axes; a++)
		per *= p->size[a];
	if (empty || per == 0) {
		memset(acc, 0, (size_t)on * 8); /* sums over nothing */
	} else {
		int nt = on > 1 ? es_op_threads(k, on * per, PAR_MIN_WORK) : 1;
		ES_PARALLEL_FOR(nt, true, o, on, {
			ein_element(p, o, acc);
		});
	}
	for (int64_t o = 0; o < on; o++) {
		if (p->real)
			es_op_store_f64(y->dtype, y->data, o, ((double *)acc)[o]);
		else
			es_op_store_i64(y->dtype, y->data, o, (int64_t)((uint64_t *)acc)[o]);
	}
	return 0;
}

/* ---- NonMaxSuppression ------------------------------------------------------ */

struct nms_state {
	bool center_point_box;
};

static int nms_init(es_op_init_ctx *c, void **state)
{
	int64_t v;
	int rc;
	if ((rc = es_node_attr_int(c->node, "center_point_box", 0, &v, c->err)))
		return rc;
	if (v != 0 && v != 1)
		return es_error_set(c->err, ES_EINVAL,
				    "node '%s' (NonMaxSuppression): attribute center_point_box is %lld, expected 0 or 1",
				    c->node->name, (long long)v);
	struct nms_state *s = es_op_state_alloc(c, sizeof(*s));
	if (!s)
		return ES_ENOMEM;
	s->center_point_box = v != 0;
	*state = s;
	return 0;
}

struct nms_cand {
	float score;
	int64_t box;
};

/* Whether a comes before b: higher score first (NaN last), equal scores
 * keep the lower box index first. A total order. */
static bool nms_before(const struct nms_cand *a, const struct nms_cand *b)
{
	bool an = a->score != a->score, bn = b->score != b->score;
	if (an != bn)
		return bn;
	if (!an && a->score != b->score)
		return a->score > b->score;
	return a->box < b->box;
}

static void nms_sift(struct nms_cand *h, int64_t n, int64_t i)
{
	for (;;) {
		int64_t l = 2 * i + 1, r = l + 1, w = i;
		/* a heap with the last-in-order element at the root */
		if (l < n && nms_before(&h[w], &h[l]))
			w = l;
		if (r < n && nms_before(&h[w], &h[r]))
			w = r;
		if (w == i)
			return;
		struct nms_cand t = h[i];
		h[i] = h[w];
		h[w] = t;
		i = w;
	}
}

/* In-place heapsort (qsort may allocate, and run() must not). */
static void nms_sort(struct nms_cand *c, int64_t n)
{
	for (int64_t i = n / 2 - 1; i >= 0; i--)
		nms_sift(c, n, i);
	for (int64_t end = n - 1; end > 0; end--) {
		struct nms_cand t = c[0];
		c[0] = c[end];
		c[end] = t;
		nms_sift(c, end, 0);
	}
}

/* Corners (y1, x1, y2, x2) with y1 <= y2 and x1 <= x2. */
static void nms_corners(const float *b, bool center, float *c)
{
	if (center) {
		c[0] = b[1] - b[3] / 2;
		c[2] = b[1] + b[3] / 2;
		c[1] = b[0] - b[2] / 2;
		c[3] = b[0] + b[2] / 2;
	} else {
		c[0] = fminf(b[0], b[2]);
		c[2] = fmaxf(b[0], b[2]);
		c[1] = fminf(b[1], b[3]);
		c[3] = fmaxf(b[1], b[3]);
	}
}

static bool nms_suppress(const float *a, const float *b, float iou_threshold)
{
	float ih = fminf(a[2], b[2]) - fmaxf(a[0], b[0]);
	float iw = fminf(a[3], b[3]) - fmaxf(a[1], b[1]);
	if (!(ih > 0) || !(iw > 0))
		return false;
	float inter = ih * iw;
	float area_a = (a[2] - a[0]) * (a[3] - a[1]);
	float area_b = (b[2] - b[0]) * (b[3] - b[1]);
	float uni = area_a + area_b - inter;
	if (!(uni > 0))
		return false;
	return inter / uni > iou_threshold;
}

static int scalar_of(es_kctx *k, int i, es_dtype dt, const char *what, double *v,
		     bool *present)
{
	const es_tensor *t = es_kin(k, i);
	*present = t && es_tensor_numel(t) > 0;
	if (!*present)
		return 0;
	if (t->dtype != dt)
		return es_kctx_fail(k, ES_ETYPE, "input '%s' has type %s, expected %s",
				    what, es_dtype_name(t->dtype), es_dtype_name(dt));
	if (es_tensor_numel(t) != 1)
		return es_kctx_fail(k, ES_ESHAPE, "input '%s' has %lld elements, expected 1",
				    what, (long long)es_tensor_numel(t));
	*v = dt == ES_DT_INT64 ? (double)((const int64_t *)t->data)[0] :
	     ((const float *)t->data)[0];
	return 0;
}

static int nms_run(es_kctx *k)
{
	const struct nms_state *s = k->state;
	const es_tensor *boxes = es_kin(k, 0), *scores = es_kin(k, 1);
	double maxv = 0, iou = 0, sth = 0;
	bool has_max, has_iou, has_sth;
	int rc;
	if (!boxes || !scores)
		return es_kctx_fail(k, ES_EINVAL, "inputs 'boxes' and 'scores' are required");
	if (boxes->dtype != ES_DT_FLOAT || scores->dtype != ES_DT_FLOAT)
		return es_kctx_fail(k, ES_ETYPE, "'boxes' and 'scores' must be float, got %s and %s",
				    es_dtype_name(boxes->dtype), es_dtype_name(scores->dtype));
	if (boxes->ndim != 3 || boxes->dims[2] != 4)
		return es_kctx_fail(k, ES_ESHAPE, "input 'boxes' must be [batches, boxes, 4]");
	if (scores->ndim != 3 || scores->dims[0] != boxes->dims[0] ||
	    scores->dims[2] != boxes->dims[1])
		return es_kctx_fail(k, ES_ESHAPE,
				    "input 'scores' must be [%lld, classes, %lld] to match 'boxes'",
				    (long long)boxes->dims[0], (long long)boxes->dims[1]);
	if ((rc = scalar_of(k, 2, ES_DT_INT64, "max_output_boxes_per_class", &maxv, &has_max)) ||
	    (rc = scalar_of(k, 3, ES_DT_FLOAT, "iou_threshold", &iou, &has_iou)) ||
	    (rc = scalar_of(k, 4, ES_DT_FLOAT, "score_threshold", &sth, &has_sth)))
		return rc;
	if (has_iou && !(iou >= 0 && iou <= 1))
		return es_kctx_fail(k, ES_ERANGE, "iou_threshold is %g, expected a value in [0, 1]", iou);
	int64_t nb = boxes->dims[0], nc = scores->dims[1], n = boxes->dims[1];
	int64_t max_out = has_max && maxv > 0 ? (int64_t)maxv : 0;
	if (max_out > n)
		max_out = n;

	/* room for every possible selection: batches x classes x max_out */
	int64_t pairs, total_cap;
	size_t bytes, sel_bytes;
	if (__builtin_mul_overflow(nb, nc, &pairs) ||
	    __builtin_mul_overflow(pairs, max_out, &total_cap) ||
	    __builtin_mul_overflow((size_t)total_cap, 3 * sizeof(int64_t), &sel_bytes) ||
	    __builtin_add_overflow((size_t)n * (sizeof(struct nms_cand) + 4 * sizeof(float) +
						sizeof(int64_t)) + 64, sel_bytes, &bytes))
		return es_kctx_fail(k, ES_ERANGE, "too many possible selections");
	char *scratch = es_kctx_scratch(k, bytes);
	if (!scratch)
		return es_kctx_fail(k, ES_ENOMEM, "cannot allocate %zu bytes of scratch", bytes);
	struct nms_cand *cand = (struct nms_cand *)scratch;
	float *corners = (float *)(cand + n);
	int64_t *kept = (int64_t *)(corners + 4 * n);
	int64_t *sel = kept + n;
	int64_t n_sel = 0;

	for (int64_t b = 0; b < nb && max_out > 0; b++) {
		const float *bx = (const float *)boxes->data + b * n * 4;
		for (int64_t i = 0; i < n; i++)
			nms_corners(bx + i * 4, s->center_point_box, corners + i * 4);
		for (int64_t c = 0; c < nc; c++) {
			const float *sc = (const float *)scores->data + (b * nc + c) * n;
			int64_t m = 0, nk = 0;
			for (int64_t i = 0; i < n; i++)
				if (!has_sth || sc[i] > sth) {
					cand[m].score = sc[i];
					cand[m].box = i;
					m++;
				}
			nms_sort(cand, m);
			for (int64_t i = 0; i < m && nk < max_out; i++) {
				const float *cb = corners + cand[i].box * 4;
				bool drop = false;
				for (int64_t q = 0; q < nk && !drop; q++)
					drop = nms_suppress(corners + kept[q] * 4, cb, (float)iou);
				if (drop)
					continue;
				kept[nk++] = cand[i].box;
				sel[n_sel * 3] = b;
				sel[n_sel * 3 + 1] = c;
				sel[n_sel * 3 + 2] = cand[i].box;
				n_sel++;
			}
		}
	}
	int64_t odims[2] = { n_sel, 3 };
	if ((rc = es_kctx_output(k, 0, ES_DT_INT64, 2, odims)))
		return rc;
	if (n_sel)
		memcpy(k->outputs[0]->data, sel, (size_t)n_sel * 3 * sizeof(int64_t));
	return 0;
}

/* ---- Shrink ------------------------------------------------------------------- */

struct shrink_state {
	double lambd, bias;
};

static int shrink_init(es_op_init_ctx *c, void **state)
{
	float l, b;
	int rc;
	if ((rc = es_node_attr_float(c->node, "lambd", 0.5f, &l, c->err)) ||
	    (rc = es_node_attr_float(c->node, "bias", 0.0f, &b, c->err)))
		return rc;
	struct shrink_state *s = es_op_state_alloc(c, sizeof(*s));
	if (!s)
		return ES_ENOMEM;
	s->lambd = l;
	s->bias = b;
	*state = s;
	return 0;
}

static int shrink_run(es_kctx *k)
{
	const struct shrink_state *s = k->state;
	const es_tensor *x = es_kin(k, 0);
	bool inplace = false;
	int rc;
	if (!x)
		return es_kctx_fail(k, ES_EINVAL, "input 'input' is missing");
	if ((rc = es_op_check_dtype(k, x, ES_T_NUMERIC, "input")))
		return rc;
	if ((rc = es_kctx_output_inplace(k, 0, 0, x->dtype, x->ndim, x->dims, &inplace)))
		return rc;
	es_tensor *y = k->outputs[0];
	int64_t n = es_tensor_numel(x);
	float lf = (float)s->lambd, bf = (float)s->bias;
	if (x->dtype == ES_DT_FLOAT) {
		const float *xi = x->data;
		float *yo = y->data;
		for (int64_t i = 0; i < n; i++) {
			float v = xi[i];
			yo[i] = v < -lf ? v + bf : v > lf ? v - bf : 0.0f;
		}
		return 0;
	}
	for (int64_t i = 0; i < n; i++) {
		double v = es_op_load_f64(x->dtype, x->data, i);
		/* integers: the result truncates and saturates to the type */
		es_op_store_f64(y->dtype, y->data, i,
				v < -s->lambd ? v + s->bias : v > s->lambd ? v - s->bias : 0);
	}
	return 0;
}

/* ---- the table ---------------------------------------------------------------- */

#define EIN_T (ES_T_NUMERIC & ~ES_T(ES_DT_BFLOAT16))

static const es_op_def defs[] = {
	{ .domain = "", .op_type = "Einsum", .since = 12, .until = 0,
	  .min_inputs = 1, .max_inputs = ES_VARIADIC, .min_outputs = 1, .max_outputs = 1,
	  .types = EIN_T, .same_type_inputs = UINT32_MAX, .out_type = ES_OUT_SAME,
	  .init = ein_init, .fini = es_op_state_free, .run = ein_run },
	{ .domain = "", .op_type = "NonMaxSuppression", .since = 10, .until = 0,
	  .min_inputs = 2, .max_inputs = 5, .min_outputs = 1, .max_outputs = 1,
	  .types = ES_T(ES_DT_FLOAT), .same_type_inputs = ES_T(1),
	  .out_type = ES_OUT_FIXED, .out_dtype = ES_DT_INT64,
	  .init = nms_init, .fini = es_op_state_free, .run = nms_run },
	{ .domain = "", .op_type = "Shrink", .since = 9, .until = 0,
	  .min_inputs = 1, .max_inputs = 1, .min_outputs = 1, .max_outputs = 1,
	  .types = ES_T_NUMERIC & ~ES_T(ES_DT_BFLOAT16), .out_type = ES_OUT_SAME,
	  .init = shrink_init, .fini = es_op_state_free, .run = shrink_run },
};

const es_op_table es_ops_misc = { defs, sizeof(defs) / sizeof(defs[0]) };
