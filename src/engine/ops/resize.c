/*
 * Operator family: resize (Resize 10/11/13, Upsample 1/7/9).
 *
 * Interpolation is separable: for every axis we precompute, per output
 * coordinate, a few taps (input offset and weight: one for nearest, two
 * for linear, four for cubic) and whether the coordinate falls outside the
 * crop (tf_crop_and_resize). An output element is then the tensor product
 * of its axes' taps; axes whose taps collapse to a single weight-1 source
 * (untouched batch and channel axes) cost nothing.
 *
 * Coordinates are computed in double like the ONNX reference
 * implementation, so the nearest-pixel rounding decisions match it.
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "engine/ops/families.h"
#include "engine/ops/op_util.h"

#define PAR_MIN_WORK (1 << 15)
/* Coordinates beyond this are treated as unrepresentable. */
#define MAX_COORD 4.0e18

enum rs_variant {
	RV_UPSAMPLE1, /* attributes height_scale, width_scale (4-D) */
	RV_UPSAMPLE7, /* attribute scales */
	RV_UPSAMPLE9, /* input 1: scales */
	RV_RESIZE10,  /* input 1: scales */
	RV_RESIZE11,  /* X, roi, scales, [sizes] */
	RV_RESIZE13,  /* X, [roi], [scales], [sizes] */
};

enum rs_mode { MODE_NEAREST, MODE_LINEAR, MODE_CUBIC };

enum rs_coord {
	CT_HALF_PIXEL, CT_PYTORCH_HALF_PIXEL, CT_ALIGN_CORNERS, CT_ASYMMETRIC,
	CT_TF_HALF_PIXEL_FOR_NN, CT_TF_CROP_AND_RESIZE,
};

enum rs_nearest {
	NM_ROUND_PREFER_FLOOR, NM_ROUND_PREFER_CEIL, NM_FLOOR, NM_CEIL,
	NM_SIMPLE, /* before opset 11: floor, or ceil when downsampling */
};

struct rs_state {
	enum rs_variant variant;
	enum rs_mode mode;
	enum rs_coord coord;
	enum rs_nearest nearest;
	double cubic_a;
	bool exclude_outside;
	float extrapolation;
	int n_scales; /* scales from attributes (Upsample 1 and 7) */
	double scales[ES_MAX_DIMS];
};

struct name_val {
	const char *name;
	int val;
};

static int lookup(const struct name_val *t, size_t n, const char *s, int *out)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(t[i].name, s)) {
			*out = t[i].val;
			return 0;
		}
	return -1;
}

static int rs_init(es_op_init_ctx *c, void **state, enum rs_variant v)
{
	const es_node *node = c->node;
	struct rs_state *s = es_op_state_alloc(c, sizeof(*s));
	const char *str;
	int rc, val;
	int64_t iv;
	float f;
	if (!s)
		return ES_ENOMEM;
	s->variant = v;
	s->coord = CT_ASYMMETRIC;
	s->nearest = NM_SIMPLE;
	s->cubic_a = -0.75;

	static const struct name_val modes_v1[] = {
		{ "nearest", MODE_NEAREST }, { "bilinear", MODE_LINEAR },
	};
	static const struct name_val modes_v7[] = {
		{ "nearest", MODE_NEAREST }, { "linear", MODE_LINEAR },
	};
	static const struct name_val modes_v11[] = {
		{ "nearest", MODE_NEAREST }, { "linear", MODE_LINEAR },
		{ "cubic", MODE_CUBIC },
	};
	if ((rc = es_node_attr_string(node, "mode", "nearest", &str, c->err)))
		goto out_free;
	const struct name_val *mt = v == RV_UPSAMPLE1 ? modes_v1 :
				    v >= RV_RESIZE11 ? modes_v11 : modes_v7;
	size_t mn = v == RV_UPSAMPLE1 ? 2 : v >= RV_RESIZE11 ? 3 : 2;
	if (lookup(mt, mn, str, &val)) {
		rc = es_error_set(c->err, ES_EINVAL,
			"node '%s' (%s): attribute mode is '%s', expected %s",
			node->name, node->op_type, str,
			v == RV_UPSAMPLE1 ? "'nearest' or 'bilinear'" :
			v >= RV_RESIZE11 ? "'nearest', 'linear' or 'cubic'" :
					   "'nearest' or 'linear'");
		goto out_free;
	}
	s->mode = (enum rs_mode)val;

	if (v >= RV_RESIZE11) {
		static const struct name_val coords[] = {
			{ "half_pixel", CT_HALF_PIXEL },
			{ "pytorch_half_pixel", CT_PYTORCH_HALF_PIXEL },
			{ "align_corners", CT_ALIGN_CORNERS },
			{ "asymmetric", CT_ASYMMETRIC },
			{ "tf_crop_and_resize", CT_TF_CROP_AND_RESIZE },
			{ "tf_half_pixel_for_nn", CT_TF_HALF_PIXEL_FOR_NN },
		};
		/* tf_half_pixel_for_nn was removed at opset 13 */
		size_t cn = v == RV_RESIZE11 ? 6 : 5;
		if ((rc = es_node_attr_string(node, "coordinate_transformation_mode",
					      "half_pixel", &str, c->err)))
			goto out_free;
		if (lookup(coords, cn, str, &val)) {
			rc = es_error_set(c->err, ES_EINVAL,
				"node '%s' (%s): attribute coordinate_transformation_mode '%s' is not valid at opset %d",
				node->name, node->op_type, str, node->opset);
			goto out_free;
		}
		s->coord = (enum rs_coord)val;

		static const struct name_val nearests[] = {
			{ "round_prefer_floor", NM_ROUND_PREFER_FLOOR },
			{ "round_prefer_ceil", NM_ROUND_PREFER_CEIL },
			{ "floor", NM_FLOOR },
			{ "ceil", NM_CEIL },
		};
		if ((rc = es_node_attr_string(node, "nearest_mode",
					      "round_prefer_floor", &str, c->err)))
			goto out_free;
		if (lookup(nearests, 4, str, &val)) {
			rc = es_error_set(c->err, ES_EINVAL,
				"node '%s' (%s): attribute nearest_mode is '%s', expected round_prefer_floor, round_prefer_ceil, floor or ceil",
				node->name, node->op_type, str);
			goto out_free;
		}
		s->nearest = (enum rs_nearest)val;
		if ((rc = es_node_attr_float(node, "cubic_coeff_a", -0.75f, &f, c->err)))
			goto out_free;
		s->cubic_a = f;
		if ((rc = es_node_attr_int(node, "exclude_outside", 0, &iv, c->err)))
			goto out_free;
		s->exclude_outside = iv != 0;
		if ((rc = es_node_attr_float(node, "extrapolation_value", 0.0f,
					     &s->extrapolation, c->err)))
			goto out_free;
	}

	if (v == RV_UPSAMPLE1) {
		float h, w;
		if (!es_node_attr(node, "height_scale") || !es_node_attr(node, "width_scale")) {
			rc = es_error_set(c->err, ES_EINVAL,
				"node '%s' (Upsample): attributes height_scale and width_scale are required",
				node->name);
			goto out_free;
		}
		if ((rc = es_node_attr_float(node, "height_scale", 1, &h, c->err)) ||
		    (rc = es_node_attr_float(node, "width_scale", 1, &w, c->err)))
			goto out_free;
		s->n_scales = 4;
		s->scales[0] = s->scales[1] = 1;
		s->scales[2] = h;
		s->scales[3] = w;
	} else if (v == RV_UPSAMPLE7) {
		const float *sc;
		size_t n;
		if ((rc = es_node_attr_floats(node, "scales", &sc, &n, c->err)))
			goto out_free;
		if (n == 0 || n > ES_MAX_DIMS) {
			rc = es_error_set(c->err, ES_EINVAL,
				"node '%s' (Upsample): attribute scales has %zu entries, expected 1 to %d (one per input axis)",
				node->name, n, ES_MAX_DIMS);
			goto out_free;
		}
		s->n_scales = (int)n;
		for (size_t i = 0; i < n; i++)
			s->scales[i] = sc[i];
	}
	if (v <= RV_UPSAMPLE9) {
		for (int i = 0; i < s->n_scales; i++)
			if (!(s->scales[i] >= 1) || !isfinite(s->scales[i])) {
				rc = es_error_set(c->err, ES_EINVAL,
					"node '%s' (Upsample): scale %d is %g, expected a finite value >= 1",
					node->name, i, s->scales[i]);
				goto out_free;
			}
	}
	*state = s;
	return 0;
out_free:
	free(s);
	return rc;
}

static int upsample1_init(es_op_init_ctx *c, void **st) { return rs_init(c, st, RV_UPSAMPLE1); }
static int upsample7_init(es_op_init_ctx *c, void **st) { return rs_init(c, st, RV_UPSAMPLE7); }
static int upsample9_init(es_op_init_ctx *c, void **st) { return rs_init(c, st, RV_UPSAMPLE9); }
static int resize10_init(es_op_init_ctx *c, void **st) { return rs_init(c, st, RV_RESIZE10); }
static int resize11_init(es_op_init_ctx *c, void **st) { return rs_init(c, st, RV_RESIZE11); }
static int resize13_init(es_op_init_ctx *c, void **st) { return rs_init(c, st, RV_RESIZE13); }

/* ---- coordinate tables --------------------------------------------------- */

/* One axis: taps per output coordinate, input offsets (index * stride) and
 * weights; outside[o] marks crop extrapolation. */
struct axis_tab {
	int taps;
	int64_t *off;
	double *w;
	uint8_t *outside;
};

static void cubic_coeffs(double r, double a, double *c)
{
	double t;
	t = r + 1;
	c[0] = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a;
	c[1] = ((a + 2) * r - (a + 3)) * r * r + 1;
	t = 1 - r;
	c[2] = ((a + 2) * t - (a + 3)) * t * t + 1;
	t = 2 - r;
	c[3] = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a;
}

static int64_t clamp_idx(double v, int64_t n)
{
	if (!(v > 0))
		return 0;
	if (v >= (double)(n - 1))
		return n - 1;
	return (int64_t)v;
}

/*
 * Fills tab for an axis of in_len input and out_len output elements.
 * scale is the axis' scale factor; resized_len the (possibly fractional)
 * resized length in_len * scale that the reference uses in align_corners,
 * pytorch_half_pixel and tf_crop_and_resize.
 */
static void axis_fill(const struct rs_state *s, struct axis_tab *tab,
		      int64_t in_len, int64_t out_len, double scale,
		      double resized_len, double roi_start, double roi_end,
		      int64_t stride)
{
	int taps = tab->taps;
	for (int64_t o = 0; o < out_len; o++) {
		double x = (double)o, xo;
		bool outside = false;
		switch (s->coord) {
		case CT_HALF_PIXEL:
			xo = (x + 0.5) / scale - 0.5;
			break;
		case CT_PYTORCH_HALF_PIXEL:
			xo = resized_len > 1 ? (x + 0.5) / scale - 0.5 : 0;
			break;
		case CT_ALIGN_CORNERS:
			xo = resized_len == 1 ? 0 :
			     x * (double)(in_len - 1) / (resized_len - 1);
			break;
		case CT_TF_HALF_PIXEL_FOR_NN:
			xo = (x + 0.5) / scale;
			break;
		case CT_TF_CROP_AND_RESIZE:
			if (resized_len > 1)
				xo = roi_start * (double)(in_len - 1) +
				     x * (roi_end - roi_start) * (double)(in_len - 1) /
				     (resized_len - 1);
			else
				xo = 0.5 * (roi_start + roi_end) * (double)(in_len - 1);
			outside = xo < 0 || xo > (double)(in_len - 1);
			break;
		case CT_ASYMMETRIC:
		default:
			xo = x / scale;
			break;
		}
		if (!isfinite(xo) || fabs(xo) > MAX_COORD) {
			xo = 0;
			outside = s->coord == CT_TF_CROP_AND_RESIZE;
		}
		tab->outside[o] = outside;
		int64_t *off = tab->off + o * taps;
		double *w = tab->w + o * taps;
		double f = floor(xo), r = xo - f;
		if (s->mode == MODE_NEAREST) {
			double pick;
			if (r == 0) {
				pick = xo;
			} else {
				switch (s->nearest) {
				case NM_ROUND_PREFER_FLOOR: pick = r <= 0.5 ? f : f + 1; break;
				case NM_ROUND_PREFER_CEIL: pick = r < 0.5 ? f : f + 1; break;
				case NM_FLOOR: pick = f; break;
				case NM_CEIL: pick = f + 1; break;
				case NM_SIMPLE:
				default: pick = scale < 1 ? f + 1 : f; break;
				}
			}
			off[0] = clamp_idx(pick, in_len) * stride;
			w[0] = 1;
			continue;
		}
		double c[4];
		int64_t first;
		if (s->mode == MODE_LINEAR) {
			c[0] = 1 - r;
			c[1] = r;
			first = (int64_t)f;
		} else {
			cubic_coeffs(r, s->cubic_a, c);
			first = (int64_t)f - 1;
		}
		double sum = 0;
		for (int q = 0; q < taps; q++) {
			int64_t i = first + q;
			if (s->exclude_outside && (i < 0 || i >= in_len))
				c[q] = 0;
			sum += c[q];
		}
		for (int q = 0; q < taps; q++) {
			int64_t i = first + q;
			off[q] = (i < 0 ? 0 : i >= in_len ? in_len - 1 : i) * stride;
			w[q] = s->exclude_outside && sum != 0 ? c[q] / sum : c[q];
		}
	}
	/* an axis where every coordinate has one source of weight 1 (the
	 * untouched batch and channel axes) needs one tap */
	if (taps > 1) {
		for (int64_t o = 0; o < out_len; o++) {
			int nz = -1;
			for (int q = 0; q < taps; q++) {
				if (tab->w[o * taps + q] == 0)
					continue;
				if (nz >= 0 || tab->w[o * taps + q] != 1)
					return;
				nz = q;
			}
			if (nz < 0)
				return;
		}
		for (int64_t o = 0; o < out_len; o++) {
			int q = 0;
			while (tab->w[o * taps + q] == 0)
				q++;
			tab->off[o] = tab->off[o * taps + q];
			tab->w[o] = 1;
		}
		tab->taps = 1;
	}
}

/* ---- compute kernels ----------------------------------------------------- */

struct rs_job {
	int ndim;
	int64_t odims[ES_MAX_DIMS];
	struct axis_tab tab[ES_MAX_DIMS];
	int64_t rows;     /* product of odims[0..ndim-2] */
	int64_t width;    /* odims[ndim-1] */
	size_t max_comb;  /* tap products over all but the last axis */
};

/* Row index -> per-axis output coordinates of the outer axes. */
static void row_coords(const struct rs_job *j, int64_t row, int64_t *oc)
{
	for (int d = j->ndim - 2; d >= 0; d--) {
		oc[d] = row % j->odims[d];
		row /= j->odims[d];
	}
}

/* Nearest: a gather of elements of esz bytes. */
static void nearest_rows(const struct rs_job *j, const char *x, char *y,
			 size_t esz, const void *extra, int64_t r0, int64_t r1)
{
	const struct axis_tab *last = &j->tab[j->ndim - 1];
	int64_t oc[ES_MAX_DIMS];
	for (int64_t row = r0; row < r1; row++) {
		row_coords(j, row, oc);
		int64_t base = 0;
		bool outside = false;
		for (int d = 0; d < j->ndim - 1; d++) {
			base += j->tab[d].off[oc[d]];
			outside |= j->tab[d].outside[oc[d]];
		}
		char *dst = y + (size_t)(row * j->width) * esz;
		for (int64_t c = 0; c < j->width; c++) {
			const void *src = outside || last->outside[c] ? extra :
					  x + (size_t)(base + last->off[c]) * esz;
			switch (esz) {
			case 1: memcpy(dst + c, src, 1); break;
			case 2: memcpy(dst + c * 2, src, 2); break;
			case 4: memcpy(dst + c * 4, src, 4); break;
			default: memcpy(dst + c * 8, src, 8); break;
			}
		}
	}
}

/* Builds the (offset, weight) products of the outer axes' taps for one
 * row, skipping zero weights. Returns the count. */
static size_t row_combos(const struct rs_job *j, const int64_t *oc,
			 int64_t *off, double *w, int64_t *off2, double *w2)
{
	size_t n = 1;
	off[0] = 0;
	w[0] = 1;
	for (int d = 0; d < j->ndim - 1; d++) {
		const struct axis_tab *t = &j->tab[d];
		size_t m = 0;
		for (size_t c = 0; c < n; c++)
			for (int q = 0; q < t->taps; q++) {
				double tw = t->w[oc[d] * t->taps + q];
				if (tw == 0)
					continue;
				off2[m] = off[c] + t->off[oc[d] * t->taps + q];
				w2[m] = w[c] * tw;
				m++;
			}
		memcpy(off, off2, m * sizeof(*off));
		memcpy(w, w2, m * sizeof(*w));
		n = m;
	}
	return n;
}

#define DEF_INTERP(SUF, T) \
static void interp_rows_##SUF(const struct rs_job *j, const T *x, T *y, \
			      T extra, char *buf, int64_t r0, int64_t r1) \
{ \
	const struct axis_tab *last = &j->tab[j->ndim - 1]; \
	int lt = last->taps; \
	int64_t oc[ES_MAX_DIMS]; \
	int64_t *off = (int64_t *)buf, *off2 = off + j->max_comb; \
	double *w = (double *)(off2 + j->max_comb), *w2 = w + j->max_comb; \
	for (int64_t row = r0; row < r1; row++) { \
		T *dst = y + row * j->width; \
		row_coords(j, row, oc); \
		bool outside = false; \
		for (int d = 0; d < j->ndim - 1; d++) \
			outside |= j->tab[d].outside[oc[d]]; \
		if (outside) { \
			for (int64_t c = 0; c < j->width; c++) \
				dst[c] = extra; \
			continue; \
		} \
		size_t nc = row_combos(j, oc, off, w, off2, w2); \
		for (int64_t c = 0; c < j->width; c++) { \
			if (last->outside[c]) { \
				dst[c] = extra; \
				continue; \
			} \
			const int64_t *lo = last->off + c * lt; \
			const double *lw = last->w + c * lt; \
			T acc = 0; \
			for (size_t k = 0; k < nc; k++) { \
				const T *src = x + off[k]; \
				T s = 0; \
				for (int q = 0; q < lt; q++) \
					s += (T)lw[q] * src[lo[q]]; \
				acc += (T)w[k] * s; \
			} \
			dst[c] = acc; \
		} \
	} \
}

DEF_INTERP(f32, float)
DEF_INTERP(f64, double)

/* ---- dtype conversion for linear/cubic ----------------------------------- */

static bool use_f64(es_dtype dt)
{
	return dt == ES_DT_DOUBLE || dt == ES_DT_INT32 || dt == ES_DT_UINT32 ||
	       dt == ES_DT_INT64 || dt == ES_DT_UINT64;
}

/* Stores v into element i of p; integers round to nearest, then saturate. */
static void from_real(void *p, es_dtype dt, int64_t i, double v)
{
	bool integer = dt != ES_DT_BOOL && !es_op_is_float(dt);
	es_op_store_f64(dt, p, i, integer ? nearbyint(v) : v);
}

/* ---- run ----------------------------------------------------------------- */

/* Reads a float-typed 1-D tensor (float, float16 or double) into vals. */
static int read_reals(es_kctx *k, const es_tensor *t, const char *what,
		      bool float_only, double *vals, int max, int *count)
{
	bool ok = t->dtype == ES_DT_FLOAT ||
		  (!float_only && (t->dtype == ES_DT_DOUBLE || t->dtype == ES_DT_FLOAT16));
	if (!ok)
		return es_kctx_fail(k, ES_ETYPE, "input '%s' has type %s, expected %s",
				    what, es_dtype_name(t->dtype),
				    float_only ? "float" : "float, float16 or double");
	if (t->ndim > 1)
		return es_kctx_fail(k, ES_ESHAPE, "input '%s' has rank %d, expected 1",
				    what, t->ndim);
	int64_t n = es_tensor_numel(t);
	if (n > max)
		return es_kctx_fail(k, ES_ESHAPE,
				    "input '%s' has %lld entries, expected %d",
				    what, (long long)n, max);
	for (int64_t i = 0; i < n; i++)
		vals[i] = es_op_load_f64(t->dtype, t->data, i);
	*count = (int)n;
	return 0;
}

static int rs_run(es_kctx *k)
{
	const struct rs_state *s = k->state;
	const es_tensor *x = es_kin(k, 0);
	const es_tensor *roi_t = NULL, *scales_t = NULL, *sizes_t = NULL;
	double scales[ES_MAX_DIMS], roi[2 * ES_MAX_DIMS];
	int64_t sizes[ES_MAX_DIMS];
	int n_scales = 0, n_roi = 0, n_sizes = 0, rc;

	if (!x)
		return es_kctx_fail(k, ES_EINVAL, "input 'X' is missing");
	if ((rc = es_op_check_dtype(k, x, ES_T_ALL, "X")))
		return rc;
	int r = x->ndim;
	if (r == 0)
		return es_kctx_fail(k, ES_ESHAPE, "input 'X' is a scalar; expected rank >= 1");
	if (s->mode != MODE_NEAREST && x->dtype == ES_DT_BOOL)
		return es_kctx_fail(k, ES_EUNSUPPORTED,
				    "input 'X' has type bool, which only mode 'nearest' supports");

	switch (s->variant) {
	case RV_UPSAMPLE1:
	case RV_UPSAMPLE7:
		n_scales = s->n_scales;
		memcpy(scales, s->scales, sizeof(scales));
		break;
	case RV_UPSAMPLE9:
	case RV_RESIZE10:
		scales_t = es_kin(k, 1);
		break;
	default:
		roi_t = es_kin(k, 1);
		scales_t = es_kin(k, 2);
		sizes_t = es_kin(k, 3);
		break;
	}
	if (scales_t && (rc = read_reals(k, scales_t, "scales", true, scales,
					 ES_MAX_DIMS, &n_scales)))
		return rc;
	if (sizes_t) {
		if (sizes_t->dtype != ES_DT_INT64)
			return es_kctx_fail(k, ES_ETYPE, "input 'sizes' has type %s, expected int64",
					    es_dtype_name(sizes_t->dtype));
		if (sizes_t->ndim > 1 || es_tensor_numel(sizes_t) > ES_MAX_DIMS)
			return es_kctx_fail(k, ES_ESHAPE,
					    "input 'sizes' must be 1-D with one entry per axis of 'X' (%d)", r);
		n_sizes = (int)es_tensor_numel(sizes_t);
		for (int i = 0; i < n_sizes; i++)
			sizes[i] = ((const int64_t *)sizes_t->data)[i];
	}
	if (n_scales && n_sizes)
		return es_kctx_fail(k, ES_EINVAL,
				    "both 'scales' and 'sizes' are given; exactly one must be");
	if (!n_scales && !n_sizes)
		return es_kctx_fail(k, ES_EINVAL,
				    s->variant >= RV_RESIZE11 ?
				    "neither 'scales' nor 'sizes' is given; exactly one must be" :
				    "input 'scales' is empty");
	if ((n_scales && n_scales != r) || (n_sizes && n_sizes != r))
		return es_kctx_fail(k, ES_ESHAPE,
				    "'%s' has %d entries, expected %d (the rank of 'X')",
				    n_scales ? "scales" : "sizes", n_scales ? n_scales : n_sizes, r);
	for (int i = 0; i < n_scales; i++) {
		double lo = s->variant <= RV_UPSAMPLE9 ? 1 : 0;
		if (!isfinite(scales[i]) || scales[i] < lo || scales[i] <= 0)
			return es_kctx_fail(k, ES_ERANGE, "scales[%d] is %g, expected a finite value %s",
					    i, scales[i], lo > 0 ? ">= 1" : "> 0");
	}
	for (int i = 0; i < n_sizes; i++)
		if (sizes[i] < 0)
			return es_kctx_fail(k, ES_ERANGE, "sizes[%d] is %lld, expected >= 0",
					    i, (long long)sizes[i]);

	bool crop = s->coord == CT_TF_CROP_AND_RESIZE;
	for (int i = 0; i < r; i++) {
		roi[i] = 0;
		roi[r + i] = 1;
	}
	if (crop && roi_t && es_tensor_numel(roi_t) > 0) {
		if ((rc = read_reals(k, roi_t, "roi", false, roi, 2 * ES_MAX_DIMS, &n_roi)))
			return rc;
		if (n_roi != 2 * r)
			return es_kctx_fail(k, ES_ESHAPE, "input 'roi' has %d entries, expected %d (2 x rank)",
					    n_roi, 2 * r);
	}

	/* output shape and the per-axis scale and resized length */
	int64_t odims[ES_MAX_DIMS];
	double scale[ES_MAX_DIMS], resized[ES_MAX_DIMS];
	for (int d = 0; d < r; d++) {
		int64_t in = x->dims[d];
		if (n_sizes) {
			odims[d] = sizes[d];
			if (in == 0 && sizes[d] != 0)
				return es_kctx_fail(k, ES_ESHAPE,
						    "axis %d of 'X' is empty but sizes[%d] is %lld",
						    d, d, (long long)sizes[d]);
			scale[d] = in ? (double)sizes[d] / (double)in : 1;
			resized[d] = (double)sizes[d];
		} else {
			double crop_len = crop ? roi[r + d] - roi[d] : 1;
			double len = floor((double)in * scales[d] * crop_len);
			if (!(len >= 0) || len > 0x1p62)
				return es_kctx_fail(k, ES_ERANGE,
						    "output axis %d would have %g elements (input %lld x scale %g)",
						    d, len, (long long)in, scales[d]);
			odims[d] = (int64_t)len;
			scale[d] = scales[d];
			resized[d] = (double)in * scales[d];
		}
	}
	if ((rc = es_kctx_output(k, 0, x->dtype, r, odims)))
		return rc;
	es_tensor *y = k->outputs[0];
	int64_t out_numel = es_tensor_numel(y);
	if (out_numel == 0)
		return 0;

	/* tables: [off][w][outside] per axis, then per-thread combo buffers */
	struct rs_job j = { .ndim = r };
	int taps = s->mode == MODE_NEAREST ? 1 : s->mode == MODE_LINEAR ? 2 : 4;
	size_t tab_bytes = 0;
	j.max_comb = 1;
	for (int d = 0; d < r; d++) {
		j.odims[d] = odims[d];
		tab_bytes += (size_t)odims[d] * taps * (sizeof(int64_t) + sizeof(double)) +
			     (((size_t)odims[d] + 7) & ~(size_t)7);
		if (d < r - 1)
			j.max_comb *= (size_t)taps;
	}
	int threads = k->threads > 0 ? k->threads : 1;
	size_t comb_bytes = j.max_comb * 2 * (sizeof(int64_t) + sizeof(double));
	bool f64 = use_f64(x->dtype);
	size_t dsz = f64 ? sizeof(double) : sizeof(float);
	bool native = x->dtype == (f64 ? ES_DT_DOUBLE : ES_DT_FLOAT);
	size_t conv_bytes = 0;
	int64_t in_numel = es_tensor_numel(x);
	if (s->mode != MODE_NEAREST && !native)
		conv_bytes = ((size_t)in_numel + (size_t)out_numel) * dsz;
	size_t total = tab_bytes + (size_t)threads * comb_bytes + conv_bytes + 64;
	char *scratch = es_kctx_scratch(k, total);
	if (!scratch)
		return es_kctx_fail(k, ES_ENOMEM, "cannot allocate %zu bytes of scratch", total);

	char *p = scratch;
	int64_t stride = 1;
	for (int d = r - 1; d >= 0; d--) {
		struct axis_tab *t = &j.tab[d];
		t->taps = taps;
		t->off = (int64_t *)p;
		p += (size_t)odims[d] * taps * sizeof(int64_t);
		t->w = (double *)p;
		p += (size_t)odims[d] * taps * sizeof(double);
		t->outside = (uint8_t *)p;
		p += ((size_t)odims[d] + 7) & ~(size_t)7;
		axis_fill(s, t, x->dims[d], odims[d], scale[d], resized[d], roi[d],
			  roi[r + d], stride);
		stride *= x->dims[d];
	}
	char *combs = p;
	p += (size_t)threads * comb_bytes;
	j.width = odims[r - 1];
	j.rows = out_numel / j.width;
	bool par = j.rows > 1 && es_op_threads(k, out_numel, PAR_MIN_WORK) > 1;

	if (s->mode == MODE_NEAREST) {
		size_t esz = es_dtype_size(x->dtype);
		uint64_t extra = 0; /* extrapolation value in X's dtype */
		from_real(&extra, x->dtype, 0, s->extrapolation);
		if (in_numel == 0)
			return 0; /* only reachable with empty output */
		ES_PARALLEL_FOR(threads, par, t, threads, {
			nearest_rows(&j, x->data, y->data, esz, &extra,
				     j.rows * t / threads, j.rows * (t + 1) / threads);
		});
		return 0;
	}

	void *xin = x->data, *yout = y->data;
	if (!native) {
		xin = p;
		yout = p + (size_t)in_numel * dsz;
		for (int64_t i = 0; i < in_numel; i++) {
			if (f64)
				((double *)xin)[i] = es_op_load_f64(x->dtype, x->data, i);
			else
				((float *)xin)[i] = (float)es_op_load_f64(x->dtype, x->data, i);
		}
	}
	ES_PARALLEL_FOR(threads, par, t, threads, {
		char *buf = combs + (size_t)omp_get_thread_num() * comb_bytes;
		int64_t r0 = j.rows * t / threads, r1 = j.rows * (t + 1) / threads;
		if (f64)
			interp_rows_f64(&j, xin, yout, s->extrapolation, buf, r0, r1);
		else
			interp_rows_f32(&j, xin, yout, s->extrapolation, buf, r0, r1);
	});
	if (!native)
		for (int64_t i = 0; i < out_numel; i++)
			from_real(y->data, y->dtype, i,
				  f64 ? ((double *)yout)[i] : ((float *)yout)[i]);
	return 0;
}

/* ---- the table ----------------------------------------------------------- */

#define UPS1_T (ES_T(ES_DT_BOOL) | ES_T(ES_DT_INT32) | ES_T(ES_DT_INT64) | \
		ES_T(ES_DT_FLOAT16) | ES_T(ES_DT_FLOAT) | ES_T(ES_DT_DOUBLE))
#define RS_T10 (ES_T_ALL & ~ES_T(ES_DT_BFLOAT16))

#define RS_ROW(name, from, to, nmin, nmax, t, ini) \
	{ .domain = "", .op_type = name, .since = from, .until = to, \
	  .min_inputs = nmin, .max_inputs = nmax, .min_outputs = 1, .max_outputs = 1, \
	  .types = t, .out_type = ES_OUT_SAME, .init = ini, .fini = es_op_state_free, \
	  .run = rs_run }

static const es_op_def defs[] = {
	RS_ROW("Upsample", 1, 6, 1, 1, UPS1_T, upsample1_init),
	RS_ROW("Upsample", 7, 8, 1, 1, RS_T10, upsample7_init),
	RS_ROW("Upsample", 9, 9, 2, 2, RS_T10, upsample9_init),
	RS_ROW("Resize", 10, 10, 2, 2, RS_T10, resize10_init),
	RS_ROW("Resize", 11, 12, 3, 4, RS_T10, resize11_init),
	RS_ROW("Resize", 13, 17, 1, 4, ES_T_ALL, resize13_init),
};

const es_op_table es_ops_resize = { defs, sizeof(defs) / sizeof(defs[0]) };
