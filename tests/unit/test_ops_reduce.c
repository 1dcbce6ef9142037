/*
 * The reduce and resize operator families (ops/reduce.c, ops/resize.c).
 *
 * The models in tests/data/ops/reduce (gen_models.py there) have inputs of
 * unknown shape, so each test feeds random shapes, axes, k, scales and
 * sizes and compares with reference loops written here:
 * - reductions: every kind, opset 18 rows (axes as an input) and the
 *   attribute rows, many dtypes, empty sets, noop_with_empty_axes;
 * - ArgMax/ArgMin with ties, select_last_index and NaN; TopK with ties
 *   (lower index first), largest / smallest, many dtypes;
 * - Resize against a port of the ONNX reference's interpolate_nd (nearest
 *   modes, linear, cubic, exclude_outside, tf_crop_and_resize), Resize 10
 *   and Upsample;
 * - large inputs on 4 threads (the parallel paths) and steady-state runs
 *   that allocate nothing;
 * - hostile inputs: each must fail with the right code and leave the
 *   session usable.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/alloc.h"
#include "base/fp16.h"
#include "edgeserve/engine.h"

/* ---- data, sessions -------------------------------------------------------- */

static const char *model_path(const char *name)
{
	static char buf[4096];
#ifdef ES_TEST_DATA_DIR
	snprintf(buf, sizeof(buf), "%s/ops/reduce/%s.onnx", ES_TEST_DATA_DIR, name);
#else
	snprintf(buf, sizeof(buf), "tests/data/ops/reduce/%s.onnx", name);
#endif
	return buf;
}

typedef struct sess {
	es_model *m;
	es_session *s;
} sess;

static int sess_try(sess *x, const char *name, int threads, es_error *err)
{
	es_session_options so = { .threads = threads };
	memset(x, 0, sizeof(*x));
	int rc = es_model_load(model_path(name), NULL, &x->m, err);
	if (rc)
		return rc;
	rc = es_session_create(x->m, &so, &x->s, err);
	if (rc) {
		es_model_release(x->m);
		x->m = NULL;
	}
	return rc;
}

static void sess_open(sess *x, const char *name, int threads)
{
	es_error err = { 0 };
	if (sess_try(x, name, threads, &err))
		fail_msg("%s: %s", name, err.msg);
}

static void sess_close(sess *x)
{
	if (x->s)
		es_session_destroy(x->s);
	if (x->m)
		es_model_release(x->m);
	memset(x, 0, sizeof(*x));
}

static int run(sess *x, const es_tensor *in, size_t n_in, es_tensor *out, es_error *err)
{
	memset(err, 0, sizeof(*err));
	return es_session_run(x->s, in, n_in, out, err);
}

/* ---- random numbers, tensors ------------------------------------------------ */

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static int64_t rnd_int(int64_t lo, int64_t hi)
{
	return lo + (int64_t)(rnd() % (uint64_t)(hi - lo + 1));
}

static double rnd_real(double lo, double hi)
{
	return lo + (hi - lo) * (double)(rnd() >> 11) / 9007199254740992.0;
}

static es_tensor mk(es_dtype dt, int ndim, const int64_t *dims)
{
	es_tensor t;
	es_error e = { 0 };
	if (es_tensor_alloc(&t, dt, ndim, dims, &e))
		fail_msg("es_tensor_alloc: %s", e.msg);
	return t;
}

static es_tensor mk_i64(int n, const int64_t *vals, bool as_vector)
{
	int64_t d = n;
	es_tensor t = mk(ES_DT_INT64, as_vector ? 1 : 0, &d);
	if (n)
		memcpy(t.data, vals, (size_t)n * sizeof(int64_t));
	return t;
}

static es_tensor mk_f32(int n, const double *vals)
{
	int64_t d = n;
	es_tensor t = mk(ES_DT_FLOAT, 1, &d);
	for (int i = 0; i < n; i++)
		((float *)t.data)[i] = (float)vals[i];
	return t;
}

static bool is_real(es_dtype dt)
{
	return dt == ES_DT_FLOAT || dt == ES_DT_DOUBLE || dt == ES_DT_FLOAT16 ||
	       dt == ES_DT_BFLOAT16;
}

static bool is_signed(es_dtype dt)
{
	return dt == ES_DT_INT8 || dt == ES_DT_INT16 || dt == ES_DT_INT32 ||
	       dt == ES_DT_INT64;
}

static void set_real(es_tensor *t, int64_t i, double v)
{
	switch (t->dtype) {
	case ES_DT_FLOAT: ((float *)t->data)[i] = (float)v; break;
	case ES_DT_DOUBLE: ((double *)t->data)[i] = v; break;
	case ES_DT_FLOAT16: ((uint16_t *)t->data)[i] = es_float_to_half((float)v); break;
	case ES_DT_BFLOAT16: ((uint16_t *)t->data)[i] = es_float_to_bf16((float)v); break;
	default: fail_msg("set_real on %s", es_dtype_name(t->dtype));
	}
}

static double get_real(const es_tensor *t, int64_t i)
{
	switch (t->dtype) {
	case ES_DT_FLOAT: return ((const float *)t->data)[i];
	case ES_DT_DOUBLE: return ((const double *)t->data)[i];
	case ES_DT_FLOAT16: return es_half_to_float(((const uint16_t *)t->data)[i]);
	case ES_DT_BFLOAT16: return es_bf16_to_float(((const uint16_t *)t->data)[i]);
	case ES_DT_INT8: return ((const int8_t *)t->data)[i];
	case ES_DT_INT16: return ((const int16_t *)t->data)[i];
	case ES_DT_INT32: return ((const int32_t *)t->data)[i];
	case ES_DT_INT64: return (double)((const int64_t *)t->data)[i];
	case ES_DT_UINT8: case ES_DT_BOOL: return ((const uint8_t *)t->data)[i];
	case ES_DT_UINT16: return ((const uint16_t *)t->data)[i];
	case ES_DT_UINT32: return ((const uint32_t *)t->data)[i];
	case ES_DT_UINT64: return (double)((const uint64_t *)t->data)[i];
	default: return 0;
	}
}

/* Integer element as its 64-bit pattern (sign- or zero-extended). */
static uint64_t get_bits(const es_tensor *t, int64_t i)
{
	switch (t->dtype) {
	case ES_DT_INT8: return (uint64_t)(int64_t)((const int8_t *)t->data)[i];
	case ES_DT_INT16: return (uint64_t)(int64_t)((const int16_t *)t->data)[i];
	case ES_DT_INT32: return (uint64_t)(int64_t)((const int32_t *)t->data)[i];
	case ES_DT_INT64: return (uint64_t)((const int64_t *)t->data)[i];
	case ES_DT_UINT8: case ES_DT_BOOL: return ((const uint8_t *)t->data)[i];
	case ES_DT_UINT16: return ((const uint16_t *)t->data)[i];
	case ES_DT_UINT32: return ((const uint32_t *)t->data)[i];
	case ES_DT_UINT64: return ((const uint64_t *)t->data)[i];
	default: return 0;
	}
}

static void set_bits(es_tensor *t, int64_t i, uint64_t v)
{
	switch (t->dtype) {
	case ES_DT_INT8: ((int8_t *)t->data)[i] = (int8_t)v; break;
	case ES_DT_INT16: ((int16_t *)t->data)[i] = (int16_t)v; break;
	case ES_DT_INT32: ((int32_t *)t->data)[i] = (int32_t)v; break;
	case ES_DT_INT64: ((int64_t *)t->data)[i] = (int64_t)v; break;
	case ES_DT_UINT8: case ES_DT_BOOL: ((uint8_t *)t->data)[i] = (uint8_t)v; break;
	case ES_DT_UINT16: ((uint16_t *)t->data)[i] = (uint16_t)v; break;
	case ES_DT_UINT32: ((uint32_t *)t->data)[i] = (uint32_t)v; break;
	case ES_DT_UINT64: ((uint64_t *)t->data)[i] = v; break;
	default: fail_msg("set_bits on %s", es_dtype_name(t->dtype));
	}
}

/* v truncated to dt's width, re-extended (what wrapping arithmetic in dt
 * would give). */
static uint64_t wrap_to(es_dtype dt, uint64_t v)
{
	switch (dt) {
	case ES_DT_INT8: return (uint64_t)(int64_t)(int8_t)v;
	case ES_DT_INT16: return (uint64_t)(int64_t)(int16_t)v;
	case ES_DT_INT32: return (uint64_t)(int64_t)(int32_t)v;
	case ES_DT_UINT8: return (uint8_t)v;
	case ES_DT_UINT16: return (uint16_t)v;
	case ES_DT_UINT32: return (uint32_t)v;
	default: return v;
	}
}

static void int_limits(es_dtype dt, double *lo, double *hi)
{
	switch (dt) {
	case ES_DT_INT8: *lo = INT8_MIN; *hi = INT8_MAX; break;
	case ES_DT_INT16: *lo = INT16_MIN; *hi = INT16_MAX; break;
	case ES_DT_INT32: *lo = INT32_MIN; *hi = INT32_MAX; break;
	case ES_DT_INT64: *lo = -0x1p63; *hi = 0x1p63; break;
	case ES_DT_UINT8: *lo = 0; *hi = UINT8_MAX; break;
	case ES_DT_UINT16: *lo = 0; *hi = UINT16_MAX; break;
	case ES_DT_UINT32: *lo = 0; *hi = UINT32_MAX; break;
	default: *lo = 0; *hi = 0x1p64; break;
	}
}

/* A real result stored into an integer dtype: truncated, saturated. */
static uint64_t sat_bits(es_dtype dt, double v)
{
	double lo, hi;
	int_limits(dt, &lo, &hi);
	if (v != v)
		return 0;
	if (is_signed(dt)) {
		if (v <= lo)
			return (uint64_t)(int64_t)lo;
		if (v >= hi)
			return dt == ES_DT_INT64 ? (uint64_t)INT64_MAX : (uint64_t)(int64_t)hi;
		return (uint64_t)(int64_t)v;
	}
	if (!(v > 0))
		return 0;
	if (v >= hi)
		return dt == ES_DT_UINT64 ? UINT64_MAX : (uint64_t)hi;
	return (uint64_t)v;
}

static double real_tol(es_dtype dt)
{
	switch (dt) {
	case ES_DT_DOUBLE: return 1e-9;
	case ES_DT_FLOAT16: return 2e-3;
	case ES_DT_BFLOAT16: return 1.6e-2;
	default: return 2e-5;
	}
}

static void random_shape(int min_rank, int max_rank, int64_t max_dim, bool allow_empty,
			 int *ndim, int64_t *dims)
{
	*ndim = (int)rnd_int(min_rank, max_rank);
	for (int d = 0; d < *ndim; d++)
		dims[d] = rnd_int(allow_empty && rnd() % 12 == 0 ? 0 : 1, max_dim);
}

/* ---- reductions ---------------------------------------------------------- */

enum kind { K_SUM, K_MEAN, K_MAX, K_MIN, K_PROD, K_L1, K_L2, K_LOGSUM, K_LOGSUMEXP, K_SUMSQ };

static const char *const kind_short[] = {
	"sum", "mean", "max", "min", "prod", "l1", "l2", "logsum", "logsumexp", "sumsquare",
};

static void fill_for_kind(es_tensor *t, enum kind k)
{
	int64_t n = es_tensor_numel(t);
	for (int64_t i = 0; i < n; i++) {
		if (is_real(t->dtype)) {
			double v = k == K_LOGSUM ? rnd_real(0.1, 2) :
				   k == K_PROD ? rnd_real(0.5, 1.5) :
				   k == K_LOGSUMEXP ? rnd_real(-3, 3) : rnd_real(-2, 2);
			set_real(t, i, v);
		} else if (is_signed(t->dtype)) {
			int64_t v = k == K_LOGSUM ? rnd_int(1, 5) :
				    k == K_PROD ? rnd_int(-2, 2) : rnd_int(-5, 5);
			if (t->dtype == ES_DT_INT64 && k == K_MIN && rnd() % 4 == 0)
				v = (int64_t)(rnd() >> 1) * (rnd() % 2 ? 1 : -1);
			set_bits(t, i, (uint64_t)v);
		} else {
			uint64_t v = (uint64_t)rnd_int(k == K_LOGSUM ? 1 : 0, 9);
			if (t->dtype == ES_DT_UINT64 && k == K_MAX && rnd() % 4 == 0)
				v = rnd(); /* above INT64_MAX: must compare unsigned */
			set_bits(t, i, v);
		}
	}
}

/*
 * The expected result of reduction k of x over red[] (output element o),
 * as a real (real dtypes) or 64-bit pattern (integers); *mag is the size of
 * the terms, for the tolerance.
 */
static void ref_reduce(enum kind k, const es_tensor *x, const bool *red, int64_t o,
		       double *real, uint64_t *bits, double *mag)
{
	int r = x->ndim;
	int64_t n = es_tensor_numel(x), count = 0;
	double s = 0, m = 0, mx = -INFINITY, mn = INFINITY, pr = 1;
	uint64_t us = 0, up = 1, usq = 0, ul1 = 0;
	int64_t imax = INT64_MIN, imin = INT64_MAX;
	uint64_t umax = 0, umin = UINT64_MAX;
	bool u64 = x->dtype == ES_DT_UINT64;
	/* pass 1: maximum for the logsumexp shift */
	for (int pass = 0; pass < 2; pass++) {
		for (int64_t i = 0; i < n; i++) {
			int64_t rem = i, oi = 0, ostride = 1;
			for (int d = r - 1; d >= 0; d--) {
				int64_t c = rem % x->dims[d];
				rem /= x->dims[d];
				if (!red[d]) {
					oi += c * ostride;
					ostride *= x->dims[d];
				}
			}
			if (oi != o)
				continue;
			double v = get_real(x, i);
			uint64_t b = get_bits(x, i);
			if (pass == 0) {
				mx = v > mx ? v : mx;
				continue;
			}
			count++;
			double sh = isfinite(mx) ? mx : 0;
			s += k == K_LOGSUMEXP ? exp(v - sh) : k == K_L1 ? fabs(v) :
			     (k == K_L2 || k == K_SUMSQ) ? v * v : v;
			m += fabs(k == K_L2 || k == K_SUMSQ ? v * v : v);
			mn = v < mn ? v : mn;
			pr *= v;
			us += b;
			up *= b;
			usq += b * b;
			ul1 += is_signed(x->dtype) && (int64_t)b < 0 ? 0 - b : b;
			if (u64) {
				umax = b > umax ? b : umax;
				umin = b < umin ? b : umin;
			} else {
				imax = (int64_t)b > imax ? (int64_t)b : imax;
				imin = (int64_t)b < imin ? (int64_t)b : imin;
			}
		}
	}
	*mag = m;
	if (count == 0)
		mx = -INFINITY;
	double sh = isfinite(mx) ? mx : 0;
	switch (k) {
	case K_SUM: case K_SUMSQ: *real = s; break;
	case K_MEAN: *real = s / (double)count; break;
	case K_MAX: *real = mx; break;
	case K_MIN: *real = mn; break;
	case K_PROD: *real = pr; break;
	case K_L1: *real = s; break;
	case K_L2: *real = sqrt(s); break;
	case K_LOGSUM: *real = log(s); break;
	case K_LOGSUMEXP: *real = log(s) + sh; break;
	}
	es_dtype dt = x->dtype;
	if (is_real(dt))
		return;
	switch (k) {
	case K_SUM: *bits = wrap_to(dt, us); break;
	case K_PROD: *bits = wrap_to(dt, up); break;
	case K_SUMSQ: *bits = wrap_to(dt, usq); break;
	case K_L1: *bits = wrap_to(dt, ul1); break;
	case K_MEAN:
		*bits = count == 0 ? 0 : u64 ? us / (uint64_t)count :
			wrap_to(dt, (uint64_t)((int64_t)us / count));
		break;
	case K_MAX: *bits = u64 ? umax : count ? (uint64_t)imax : sat_bits(dt, -INFINITY); break;
	case K_MIN: *bits = u64 ? umin : count ? (uint64_t)imin : sat_bits(dt, INFINITY); break;
	case K_L2: *bits = sat_bits(dt, sqrt((double)(int64_t)usq)); break;
	case K_LOGSUM: *bits = sat_bits(dt, log((double)(int64_t)us)); break;
	case K_LOGSUMEXP: *bits = sat_bits(dt, *real); break;
	}
}

struct red_case {
	const char *model;
	enum kind kind;
	es_dtype dt;
	bool keepdims;
	bool noop;       /* noop_with_empty_axes */
	bool axes_input;
	int n_axes;      /* attribute axes, -1: none */
	int64_t axes[4];
};

/* Runs one random case; returns false and explains on mismatch. */
static bool red_check(sess *x, const struct red_case *c, int ndim, const int64_t *dims,
		      int n_axes, const int64_t *axes, char *why, size_t why_n)
{
	es_tensor in[2], out[1];
	es_error err;
	in[0] = mk(c->dt, ndim, dims);
	fill_for_kind(&in[0], c->kind);
	in[1] = mk_i64(n_axes, axes, true);
	int rc = run(x, in, c->axes_input ? 2 : 1, out, &err);
	bool ok = true;
	if (rc) {
		snprintf(why, why_n, "run failed: %.400s", err.msg);
		ok = false;
		goto out;
	}
	bool red[ES_MAX_DIMS] = { false };
	for (int a = 0; a < n_axes; a++)
		red[axes[a] < 0 ? axes[a] + ndim : axes[a]] = true;
	if (n_axes == 0 && !c->noop)
		for (int d = 0; d < ndim; d++)
			red[d] = true;
	/* shape */
	int ond = 0;
	int64_t od[ES_MAX_DIMS];
	for (int d = 0; d < ndim; d++)
		if (!red[d] || c->keepdims)
			od[ond++] = red[d] ? 1 : dims[d];
	if (out[0].dtype != c->dt || out[0].ndim != ond) {
		snprintf(why, why_n, "dtype %s rank %d, expected %s rank %d",
			 es_dtype_name(out[0].dtype), out[0].ndim, es_dtype_name(c->dt), ond);
		ok = false;
		goto out;
	}
	for (int d = 0; d < ond; d++)
		if (out[0].dims[d] != od[d]) {
			snprintf(why, why_n, "dims[%d] = %lld, expected %lld", d,
				 (long long)out[0].dims[d], (long long)od[d]);
			ok = false;
			goto out;
		}
	int64_t on = es_tensor_numel(&out[0]);
	for (int64_t o = 0; o < on && ok; o++) {
		double want = 0, mag = 0;
		uint64_t wbits = 0;
		ref_reduce(c->kind, &in[0], red, o, &want, &wbits, &mag);
		if (is_real(c->dt)) {
			double got = get_real(&out[0], o);
			double tol = real_tol(c->dt) * (fabs(want) + mag) + 1e-30;
			if (c->dt == ES_DT_FLOAT16 || c->dt == ES_DT_BFLOAT16)
				tol += real_tol(c->dt) * mag; /* low-precision inputs */
			bool same = (isnan(want) && isnan(got)) ||
				    (isinf(want) && got == want) || fabs(got - want) <= tol;
			if (!same) {
				snprintf(why, why_n, "element %lld: %.9g, expected %.9g",
					 (long long)o, got, want);
				ok = false;
			}
		} else {
			uint64_t got = get_bits(&out[0], o);
			bool fuzzy = c->kind == K_LOGSUMEXP; /* a real result truncated */
			int64_t diff = (int64_t)(got - wbits);
			if (got != wbits && !(fuzzy && (diff == 1 || diff == -1))) {
				snprintf(why, why_n, "element %lld: %llu, expected %llu",
					 (long long)o, (unsigned long long)got,
					 (unsigned long long)wbits);
				ok = false;
			}
		}
	}
out:
	es_tensor_free_data(&in[0]);
	es_tensor_free_data(&in[1]);
	return ok;
}

static void red_random(const struct red_case *c, int trials)
{
	sess x;
	char why[512];
	sess_open(&x, c->model, 1);
	for (int t = 0; t < trials; t++) {
		int ndim;
		int64_t dims[ES_MAX_DIMS], axes[ES_MAX_DIMS];
		int n_axes = 0;
		random_shape(c->n_axes > 0 ? 3 : 0, 5, 5, true, &ndim, dims);
		if (c->axes_input) {
			/* a random subset, in random order, some negative */
			for (int d = 0; d < ndim; d++)
				if (rnd() % 2)
					axes[n_axes++] = rnd() % 2 ? d : d - ndim;
			for (int a = n_axes - 1; a > 0; a--) {
				int b = (int)(rnd() % (uint64_t)(a + 1));
				int64_t tmp = axes[a];
				axes[a] = axes[b];
				axes[b] = tmp;
			}
		} else if (c->n_axes > 0) {
			n_axes = c->n_axes;
			memcpy(axes, c->axes, sizeof(c->axes));
		}
		if (!red_check(&x, c, ndim, dims, n_axes, axes, why, sizeof(why)))
			fail_msg("%s, trial %d (rank %d, %d axes): %s", c->model, t, ndim,
				 n_axes, why);
	}
	sess_close(&x);
}

static const es_dtype all_dtypes[] = {
	ES_DT_FLOAT, ES_DT_DOUBLE, ES_DT_FLOAT16, ES_DT_BFLOAT16, ES_DT_INT8,
	ES_DT_UINT8, ES_DT_INT16, ES_DT_UINT16, ES_DT_INT32, ES_DT_INT64,
	ES_DT_UINT32, ES_DT_UINT64, ES_DT_BOOL,
};

static es_dtype dtype_named(const char *s)
{
	for (size_t i = 0; i < sizeof(all_dtypes) / sizeof(all_dtypes[0]); i++)
		if (!strcmp(s, es_dtype_name(all_dtypes[i])))
			return all_dtypes[i];
	fail_msg("unknown dtype %s", s);
	return ES_DT_UNDEFINED;
}

static void test_reduce_all_kinds(void **state)
{
	for (int k = 0; k <= K_SUMSQ; k++) {
		for (int keep = 1; keep >= 0; keep--) {
			char name[128];
			snprintf(name, sizeof(name), "red_%s_v18_float%s", kind_short[k],
				 keep ? "" : "_k0");
			struct red_case c = {
				.model = name, .kind = k, .dt = ES_DT_FLOAT,
				.keepdims = keep, .axes_input = true, .n_axes = -1,
			};
			red_random(&c, 60);
		}
	}
}

static void test_reduce_dtypes(void **state)
{
	static const struct { const char *kind, *dt; } cases[] = {
		{ "sum", "int32" }, { "sum", "int64" }, { "sum", "uint32" },
		{ "sum", "uint64" }, { "sum", "float16" }, { "sum", "bfloat16" },
		{ "sum", "double" }, { "max", "int8" }, { "max", "uint8" },
		{ "max", "uint64" }, { "max", "float16" }, { "min", "int64" },
		{ "min", "uint32" }, { "min", "int8" }, { "mean", "int32" },
		{ "mean", "double" }, { "prod", "int64" }, { "l1", "int32" },
		{ "l2", "float16" }, { "l2", "int64" }, { "logsum", "double" },
		{ "logsumexp", "double" }, { "logsumexp", "int32" },
		{ "sumsquare", "int32" }, { "sumsquare", "bfloat16" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char name[128];
		int k = 0;
		while (strcmp(kind_short[k], cases[i].kind))
			k++;
		snprintf(name, sizeof(name), "red_%s_v18_%s", cases[i].kind, cases[i].dt);
		struct red_case c = {
			.model = name, .kind = k, .dt = dtype_named(cases[i].dt),
			.keepdims = true, .axes_input = true, .n_axes = -1,
		};
		red_random(&c, 50);
	}
}

static void test_reduce_opset_rows(void **state)
{
	const struct red_case cases[] = {
		{ "red_sum_v13_float", K_SUM, ES_DT_FLOAT, true, false, true, -1, { 0 } },
		{ "red_sum_v13_float_noop", K_SUM, ES_DT_FLOAT, true, true, true, -1, { 0 } },
		{ "red_sumsquare_v18_float_noop", K_SUMSQ, ES_DT_FLOAT, true, true, true, -1, { 0 } },
		{ "red_mean_v1_default", K_MEAN, ES_DT_FLOAT, true, false, false, -1, { 0 } },
		{ "red_sum_v11_axes", K_SUM, ES_DT_FLOAT, false, false, false, 2, { 0, -1 } },
		{ "red_max_v12_uint8", K_MAX, ES_DT_UINT8, true, false, false, 1, { 1 } },
		{ "red_logsumexp_v13_axes", K_LOGSUMEXP, ES_DT_FLOAT, true, false, false, 1, { -1 } },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		red_random(&cases[i], 40);
}

/* Values that the identities of empty sets must produce. */
static void test_reduce_empty_sets(void **state)
{
	static const struct { const char *model; double want; } cases[] = {
		{ "red_sum_v18_float", 0 }, { "red_prod_v18_float", 1 },
		{ "red_max_v18_float", -INFINITY }, { "red_min_v18_float", INFINITY },
		{ "red_mean_v18_float", NAN }, { "red_logsum_v18_float", -INFINITY },
		{ "red_logsumexp_v18_float", -INFINITY }, { "red_l2_v18_float", 0 },
		{ "red_max_v18_int8", INT8_MIN }, { "red_min_v18_uint32", UINT32_MAX },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		sess x;
		es_error err;
		es_tensor in[2], out[1];
		sess_open(&x, cases[i].model, 1);
		es_dtype dt = strstr(cases[i].model, "int8") ? ES_DT_INT8 :
			      strstr(cases[i].model, "uint32") ? ES_DT_UINT32 : ES_DT_FLOAT;
		in[0] = mk(dt, 2, (const int64_t[]){ 3, 0 });
		in[1] = mk_i64(1, (const int64_t[]){ 1 }, true);
		assert_int_equal(run(&x, in, 2, out, &err), 0);
		assert_int_equal(out[0].ndim, 2);
		assert_int_equal(out[0].dims[0], 3);
		assert_int_equal(out[0].dims[1], 1);
		for (int o = 0; o < 3; o++) {
			double got = get_real(&out[0], o), want = cases[i].want;
			if (!(got == want || (isnan(got) && isnan(want))))
				fail_msg("%s: element %d is %g, expected %g", cases[i].model, o,
					 got, want);
		}
		/* an empty output */
		es_tensor_free_data(&in[1]);
		in[1] = mk_i64(1, (const int64_t[]){ 0 }, true);
		assert_int_equal(run(&x, in, 2, out, &err), 0);
		assert_int_equal(es_tensor_numel(&out[0]), 0);
		es_tensor_free_data(&in[0]);
		es_tensor_free_data(&in[1]);
		sess_close(&x);
	}
}

/* NaN propagates through Max and Min like numpy's. */
static void test_reduce_nan(void **state)
{
	const char *models[] = { "red_max_v18_float", "red_min_v18_float" };
	for (int i = 0; i < 2; i++) {
		sess x;
		es_error err;
		es_tensor in[2], out[1];
		sess_open(&x, models[i], 1);
		in[0] = mk(ES_DT_FLOAT, 2, (const int64_t[]){ 2, 20 });
		for (int j = 0; j < 40; j++)
			((float *)in[0].data)[j] = (float)j;
		((float *)in[0].data)[13] = NAN;
		((float *)in[0].data)[20] = NAN;
		for (int ax = 0; ax < 2; ax++) {
			in[1] = mk_i64(1, (const int64_t[]){ ax }, true);
			assert_int_equal(run(&x, in, 2, out, &err), 0);
			float *y = out[0].data;
			if (ax == 1) {
				assert_true(isnan(y[0]) && isnan(y[1]));
			} else {
				assert_true(isnan(y[0]) && isnan(y[13]));
				assert_true(!isnan(y[1]));
			}
			es_tensor_free_data(&in[1]);
		}
		es_tensor_free_data(&in[0]);
		sess_close(&x);
	}
}

/* Big inputs on 4 threads (both parallel splits) against 1 thread and the
 * reference; a second run with the same shapes allocates nothing. */
static void test_reduce_threads(void **state)
{
	static const struct { int64_t dims[3]; int n_axes; int64_t axes[2]; } shapes[] = {
		{ { 64, 300, 20 }, 1, { 1 } },   /* kept outer: split over it */
		{ { 64, 300, 20 }, 1, { 0 } },   /* reduced outer, kept inner: columns */
		{ { 64, 300, 20 }, 2, { 0, 1 } },
		{ { 64, 300, 20 }, 1, { 2 } },   /* contiguous rows */
		{ { 3, 70000, 1 }, 1, { 1 } },   /* long rows, chunked */
	};
	const char *models[] = { "red_sum_v18_float", "red_max_v18_float",
				 "red_logsumexp_v18_float", "red_mean_v18_int32" };
	for (int mi = 0; mi < 4; mi++) {
		for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
			sess x1, x4;
			es_error err;
			es_tensor in[2], o1[1], o4[1];
			sess_open(&x1, models[mi], 1);
			sess_open(&x4, models[mi], 4);
			es_dtype dt = mi == 3 ? ES_DT_INT32 : ES_DT_FLOAT;
			enum kind k = mi == 0 ? K_SUM : mi == 1 ? K_MAX : mi == 2 ? K_LOGSUMEXP : K_MEAN;
			in[0] = mk(dt, 3, shapes[si].dims);
			fill_for_kind(&in[0], k);
			in[1] = mk_i64(shapes[si].n_axes, shapes[si].axes, true);
			assert_int_equal(run(&x1, in, 2, o1, &err), 0);
			assert_int_equal(run(&x4, in, 2, o4, &err), 0);
			uint64_t before = es_alloc_count();
			assert_int_equal(run(&x4, in, 2, o4, &err), 0);
			assert_int_equal(es_alloc_count(), before);
			bool red[3] = { false };
			for (int a = 0; a < shapes[si].n_axes; a++)
				red[shapes[si].axes[a]] = true;
			int64_t on = es_tensor_numel(&o4[0]);
			for (int64_t o = 0; o < on; o += 1 + on / 8) {
				double want, mag;
				uint64_t wbits = 0;
				ref_reduce(k, &in[0], red, o, &want, &wbits, &mag);
				if (dt == ES_DT_INT32) {
					assert_int_equal(get_bits(&o4[0], o), wbits);
				} else {
					double got = get_real(&o4[0], o);
					if (!(fabs(got - want) <= 1e-5 * (fabs(want) + mag)))
						fail_msg("%s shape %zu element %lld: %g, expected %g",
							 models[mi], si, (long long)o, got, want);
				}
			}
			for (int64_t o = 0; o < on; o++) {
				double a = get_real(&o1[0], o), b = get_real(&o4[0], o);
				if (!(fabs(a - b) <= 1e-5 * (fabs(a) + 1)))
					fail_msg("%s shape %zu: 1 and 4 threads differ at %lld: %g vs %g",
						 models[mi], si, (long long)o, a, b);
			}
			es_tensor_free_data(&in[0]);
			es_tensor_free_data(&in[1]);
			sess_close(&x1);
			sess_close(&x4);
		}
	}
}

static void expect_fail(sess *x, const es_tensor *in, size_t n, int code, const char *needle)
{
	es_tensor out[2];
	es_error err;
	int rc = run(x, in, n, out, &err);
	if (rc != code)
		fail_msg("expected %s, got %d (%s)", es_strerror(code), rc, err.msg);
	if (needle && !strstr(err.msg, needle))
		fail_msg("message '%s' lacks '%s'", err.msg, needle);
}

static void test_reduce_hostile(void **state)
{
	sess x;
	es_error err;
	es_tensor in[2], out[1];
	sess_open(&x, "red_sum_v18_float", 1);
	in[0] = mk(ES_DT_FLOAT, 3, (const int64_t[]){ 2, 3, 4 });
	in[1] = mk_i64(1, (const int64_t[]){ 3 }, true);
	expect_fail(&x, in, 2, ES_ERANGE, "axes entry 3");
	es_tensor_free_data(&in[1]);
	in[1] = mk_i64(1, (const int64_t[]){ -4 }, true);
	expect_fail(&x, in, 2, ES_ERANGE, "rank 3");
	es_tensor_free_data(&in[1]);
	in[1] = mk_i64(2, (const int64_t[]){ 1, -2 }, true);
	expect_fail(&x, in, 2, ES_EINVAL, "more than once");
	es_tensor_free_data(&in[1]);
	in[1] = mk_i64(9, (const int64_t[]){ 0, 1, 2, 0, 1, 2, 0, 1, 2 }, true);
	expect_fail(&x, in, 2, ES_ESHAPE, "axes");
	es_tensor_free_data(&in[1]);
	in[1] = mk(ES_DT_INT64, 2, (const int64_t[]){ 1, 1 });
	expect_fail(&x, in, 2, ES_ESHAPE, "axes");
	es_tensor_free_data(&in[1]);
	/* still usable */
	in[1] = mk_i64(1, (const int64_t[]){ 1 }, true);
	assert_int_equal(run(&x, in, 2, out, &err), 0);
	assert_int_equal(out[0].dims[1], 1);
	es_tensor_free_data(&in[0]);
	es_tensor_free_data(&in[1]);
	sess_close(&x);

	sess_open(&x, "red_l1_v13_dup", 1);
	in[0] = mk(ES_DT_FLOAT, 3, (const int64_t[]){ 2, 3, 4 });
	expect_fail(&x, in, 1, ES_EINVAL, "more than once");
	es_tensor_free_data(&in[0]);
	sess_close(&x);
	sess_open(&x, "red_min_v13_oob", 1);
	in[0] = mk(ES_DT_FLOAT, 3, (const int64_t[]){ 2, 3, 4 });
	expect_fail(&x, in, 1, ES_ERANGE, "axes entry 3");
	es_tensor_free_data(&in[0]);
	sess_close(&x);

	/* load-time rejections */
	assert_int_equal(sess_try(&x, "red_sum_v13_axes_attr", 1, &err), ES_EINVAL);
	assert_non_null(strstr(err.msg, "axes"));
	assert_int_equal(sess_try(&x, "red_sum_v11_bool", 1, &err), ES_ETYPE);
}

/* ---- ArgMax / ArgMin --------------------------------------------------- */

static void fill_ties(es_tensor *t)
{
	int64_t n = es_tensor_numel(t);
	static const double reals[] = { -1, 0, 0.5, 1 };
	for (int64_t i = 0; i < n; i++) {
		if (is_real(t->dtype))
			set_real(t, i, reals[rnd() % 4]);
		else if (t->dtype == ES_DT_UINT64)
			set_bits(t, i, rnd() % 3 == 0 ? UINT64_MAX - rnd() % 3 : rnd() % 4);
		else if (is_signed(t->dtype))
			set_bits(t, i, (uint64_t)rnd_int(-2, 1));
		else
			set_bits(t, i, (uint64_t)rnd_int(0, 3));
	}
}

/* a < b in t's ordering (integers compared exactly) */
static int cmp_elems(const es_tensor *t, int64_t a, int64_t b)
{
	if (is_real(t->dtype)) {
		double x = get_real(t, a), y = get_real(t, b);
		return (x > y) - (x < y);
	}
	uint64_t x = get_bits(t, a), y = get_bits(t, b);
	if (is_signed(t->dtype))
		return ((int64_t)x > (int64_t)y) - ((int64_t)x < (int64_t)y);
	return (x > y) - (x < y);
}

static void arg_random(const char *model, es_dtype dt, bool is_max, int axis_attr,
		       bool keepdims, bool last)
{
	sess x;
	es_error err;
	sess_open(&x, model, 1);
	for (int t = 0; t < 40; t++) {
		int ndim;
		int64_t dims[ES_MAX_DIMS];
		random_shape(2, 4, 6, false, &ndim, dims);
		es_tensor in = mk(dt, ndim, dims), out[1];
		fill_ties(&in);
		if (run(&x, &in, 1, out, &err))
			fail_msg("%s: %s", model, err.msg);
		int axis = axis_attr < 0 ? axis_attr + ndim : axis_attr;
		int64_t outer = 1, inner = 1, n = dims[axis];
		for (int d = 0; d < ndim; d++) {
			if (d < axis)
				outer *= dims[d];
			if (d > axis)
				inner *= dims[d];
		}
		assert_int_equal(out[0].ndim, keepdims ? ndim : ndim - 1);
		assert_int_equal(out[0].dtype, ES_DT_INT64);
		for (int64_t o = 0; o < outer; o++)
			for (int64_t c = 0; c < inner; c++) {
				int64_t best = 0;
				for (int64_t i = 1; i < n; i++) {
					int cm = cmp_elems(&in, o * n * inner + i * inner + c,
							   o * n * inner + best * inner + c);
					if (!is_max)
						cm = -cm;
					if (cm > 0 || (cm == 0 && last))
						best = i;
				}
				int64_t got = ((int64_t *)out[0].data)[o * inner + c];
				if (got != best)
					fail_msg("%s trial %d: [%lld,%lld] = %lld, expected %lld", model,
						 t, (long long)o, (long long)c, (long long)got,
						 (long long)best);
			}
		es_tensor_free_data(&in);
	}
	sess_close(&x);
}

static void test_argmax_argmin(void **state)
{
	static const char *const types[] = {
		"float", "int8", "uint64", "float16", "double", "int32", "bfloat16",
	};
	for (int mx = 0; mx < 2; mx++)
		for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
			char name[128];
			const char *op = mx ? "argmax" : "argmin";
			snprintf(name, sizeof(name), "%s_v13_a1_%s", op, types[i]);
			arg_random(name, dtype_named(types[i]), mx, 1, true, false);
			snprintf(name, sizeof(name), "%s_v13_am1_k0_last_%s", op, types[i]);
			arg_random(name, dtype_named(types[i]), mx, -1, false, true);
		}
	arg_random("argmax_v11_a0_k0", ES_DT_FLOAT, true, 0, false, false);
	arg_random("argmin_v11_a0_k0", ES_DT_FLOAT, false, 0, false, false);
}

static void test_argmax_nan_threads_errors(void **state)
{
	sess x;
	es_error err;
	es_tensor in, out[1];
	/* NaN wins, first one (numpy) */
	sess_open(&x, "argmax_v13_am1_k0_last_float", 1);
	in = mk(ES_DT_FLOAT, 2, (const int64_t[]){ 1, 5 });
	float *v = in.data;
	v[0] = 1; v[1] = NAN; v[2] = 7; v[3] = NAN; v[4] = 2;
	assert_int_equal(run(&x, &in, 1, out, &err), 0);
	assert_int_equal(((int64_t *)out[0].data)[0], 3); /* select_last_index */
	es_tensor_free_data(&in);
	/* errors: scalar, empty axis */
	in = mk(ES_DT_FLOAT, 0, NULL);
	expect_fail(&x, &in, 1, ES_ESHAPE, "scalar");
	es_tensor_free_data(&in);
	in = mk(ES_DT_FLOAT, 2, (const int64_t[]){ 3, 0 });
	expect_fail(&x, &in, 1, ES_EINVAL, "empty");
	es_tensor_free_data(&in);
	sess_close(&x);
	sess_open(&x, "argmin_v13_a1_float", 1);
	in = mk(ES_DT_FLOAT, 1, (const int64_t[]){ 4 });
	expect_fail(&x, &in, 1, ES_ERANGE, "axis 1");
	es_tensor_free_data(&in);
	/* threads: big outer and big rows */
	sess_close(&x);
	sess x4;
	sess_open(&x, "argmax_v13_a1_float", 1);
	sess_open(&x4, "argmax_v13_a1_float", 4);
	const int64_t shapes[2][3] = { { 300, 500, 3 }, { 4, 40000, 1 } };
	for (int s = 0; s < 2; s++) {
		es_tensor o1[1];
		in = mk(ES_DT_FLOAT, 3, shapes[s]);
		for (int64_t i = 0; i < es_tensor_numel(&in); i++)
			((float *)in.data)[i] = (float)rnd_real(-1, 1);
		assert_int_equal(run(&x, &in, 1, o1, &err), 0);
		assert_int_equal(run(&x4, &in, 1, out, &err), 0);
		assert_memory_equal(o1[0].data, out[0].data, o1[0].nbytes);
		uint64_t before = es_alloc_count();
		assert_int_equal(run(&x4, &in, 1, out, &err), 0);
		assert_int_equal(es_alloc_count(), before);
		es_tensor_free_data(&in);
	}
	sess_close(&x);
	sess_close(&x4);
}

/* ---- TopK ---------------------------------------------------------------- */

static void topk_check(sess *x, es_dtype dt, int axis_attr, bool largest, bool k_input,
		       int ndim, const int64_t *dims, int64_t k, const char *model)
{
	es_error err;
	es_tensor in[2], out[2];
	in[0] = mk(dt, ndim, dims);
	fill_ties(&in[0]);
	in[1] = mk_i64(1, &k, true);
	if (run(x, in, k_input ? 2 : 1, out, &err))
		fail_msg("%s: %s", model, err.msg);
	int axis = axis_attr < 0 ? axis_attr + ndim : axis_attr;
	int64_t outer = 1, inner = 1, n = dims[axis];
	for (int d = 0; d < ndim; d++) {
		if (d < axis)
			outer *= dims[d];
		if (d > axis)
			inner *= dims[d];
	}
	assert_int_equal(out[0].dims[axis], k);
	assert_int_equal(out[1].dims[axis], k);
	int64_t *order = malloc((size_t)(k ? k : 1) * sizeof(int64_t));
	bool *taken = malloc((size_t)(n ? n : 1));
	size_t esz = es_dtype_size(dt);
	for (int64_t o = 0; o < outer; o++)
		for (int64_t c = 0; c < inner; c++) {
			/* k rounds of "best untaken, lowest index on ties" */
			memset(taken, 0, (size_t)(n ? n : 1));
			for (int64_t q = 0; q < k; q++) {
				int64_t best = -1;
				for (int64_t i = 0; i < n; i++) {
					if (taken[i])
						continue;
					int cm = best < 0 ? 1 :
						 cmp_elems(&in[0], o * n * inner + i * inner + c,
							   o * n * inner + best * inner + c);
					if (!largest && best >= 0)
						cm = -cm;
					if (cm > 0)
						best = i;
				}
				taken[best] = true;
				order[q] = best;
			}
			for (int64_t q = 0; q < k; q++) {
				int64_t at = o * k * inner + q * inner + c;
				int64_t gi = ((int64_t *)out[1].data)[at];
				if (gi != order[q])
					fail_msg("%s: slice (%lld,%lld) rank %lld: index %lld, expected %lld",
						 model, (long long)o, (long long)c, (long long)q,
						 (long long)gi, (long long)order[q]);
				const char *src = (const char *)in[0].data +
						  (o * n * inner + order[q] * inner + c) * esz;
				assert_memory_equal((const char *)out[0].data + at * esz, src, esz);
			}
		}
	free(order);
	free(taken);
	es_tensor_free_data(&in[0]);
	es_tensor_free_data(&in[1]);
}

static void test_topk(void **state)
{
	static const char *const types[] = {
		"float", "double", "float16", "int32", "uint8", "int64", "uint64",
	};
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		for (int small = 0; small < 2; small++) {
			char name[128];
			sess x;
			snprintf(name, sizeof(name), small ? "topk_v11_a1_small_%s" : "topk_v11_am1_%s",
				 types[i]);
			sess_open(&x, name, 1);
			for (int t = 0; t < 30; t++) {
				int ndim;
				int64_t dims[ES_MAX_DIMS];
				random_shape(2, 4, 7, t % 10 == 9, &ndim, dims);
				int axis = small ? 1 : ndim - 1;
				int64_t k = rnd_int(0, dims[axis]);
				topk_check(&x, dtype_named(types[i]), small ? 1 : -1, !small, true,
					   ndim, dims, k, name);
			}
			sess_close(&x);
		}
	sess x;
	sess_open(&x, "topk_v10_a0", 1);
	for (int t = 0; t < 20; t++)
		topk_check(&x, ES_DT_FLOAT, 0, true, true, 2, (const int64_t[]){ 9, 4 },
			   rnd_int(0, 9), "topk_v10_a0");
	sess_close(&x);
	sess_open(&x, "topk_v1_k3", 1);
	topk_check(&x, ES_DT_FLOAT, -1, true, false, 3, (const int64_t[]){ 2, 3, 8 }, 3,
		   "topk_v1_k3");
	sess_close(&x);
	/* a big one on threads: heap selection with k << n */
	sess_open(&x, "topk_v11_am1_float", 4);
	topk_check(&x, ES_DT_FLOAT, -1, true, true, 2, (const int64_t[]){ 64, 5000 }, 17,
		   "topk_v11_am1_float (threads)");
	sess_close(&x);
}

static void test_topk_errors(void **state)
{
	sess x;
	es_error err;
	es_tensor in[2], out[2];
	sess_open(&x, "topk_v11_am1_float", 1);
	in[0] = mk(ES_DT_FLOAT, 2, (const int64_t[]){ 3, 5 });
	in[1] = mk_i64(1, (const int64_t[]){ 6 }, true);
	expect_fail(&x, in, 2, ES_ERANGE, "k = 6 is larger than the size 5 of axis 1");
	es_tensor_free_data(&in[1]);
	in[1] = mk_i64(1, (const int64_t[]){ -1 }, true);
	expect_fail(&x, in, 2, ES_ERANGE, "k = -1");
	es_tensor_free_data(&in[1]);
	in[1] = mk_i64(2, (const int64_t[]){ 1, 2 }, true);
	expect_fail(&x, in, 2, ES_ESHAPE, "K");
	es_tensor_free_data(&in[1]);
	in[1] = mk_i64(1, (const int64_t[]){ 2 }, false); /* a scalar K is fine */
	assert_int_equal(run(&x, in, 2, out, &err), 0);
	assert_int_equal(out[0].dims[1], 2);
	es_tensor_free_data(&in[1]);
	es_tensor_free_data(&in[0]);
	sess_close(&x);
	assert_int_equal(sess_try(&x, "topk_v1_kneg", 1, &err), ES_EINVAL);
}

/* ---- Resize: a port of the ONNX reference's interpolate_nd -------------------- */

enum rmode { R_NEAREST, R_LINEAR, R_CUBIC };
enum rct { CT_HP, CT_ASYM, CT_AC, CT_PHP, CT_CROP, CT_TFNN };
enum rnm { NM_RPF, NM_RPC, NM_FLOOR, NM_CEIL, NM_SIMPLE };

struct rcfg {
	enum rmode mode;
	enum rct ct;
	enum rnm nm;
	double a;
	bool exclude;
	double extra;
};

static int ref_coeffs(const struct rcfg *c, double ratio, double scale, double *co)
{
	if (c->mode == R_LINEAR) {
		co[0] = 1 - ratio;
		co[1] = ratio;
		return 2;
	}
	if (c->mode == R_CUBIC) {
		double A = c->a, r = ratio;
		co[0] = ((A * (r + 1) - 5 * A) * (r + 1) + 8 * A) * (r + 1) - 4 * A;
		co[1] = ((A + 2) * r - (A + 3)) * r * r + 1;
		co[2] = ((A + 2) * (1 - r) - (A + 3)) * (1 - r) * (1 - r) + 1;
		co[3] = ((A * ((1 - r) + 1) - 5 * A) * ((1 - r) + 1) + 8 * A) * ((1 - r) + 1) - 4 * A;
		return 4;
	}
	if (ratio == 1) {
		co[0] = 0;
		co[1] = 1;
		return 2;
	}
	bool first;
	switch (c->nm) {
	case NM_RPF: first = ratio <= 0.5; break;
	case NM_RPC: first = ratio < 0.5; break;
	case NM_FLOOR: first = true; break;
	case NM_CEIL: first = false; break;
	default: first = scale >= 1; break; /* before opset 11 */
	}
	co[0] = first;
	co[1] = !first;
	return 2;
}

struct rref {
	const struct rcfg *c;
	const es_tensor *x;
	const double *scale;    /* per axis */
	const double *out_w;    /* per axis: scale * input length */
	const double *roi;      /* 2 * rank or NULL */
	const int64_t *oc;      /* output coordinate */
};

/* The value at output coordinate oc restricted to axes >= d, input element
 * offset base for the axes before. */
static double ref_interp(const struct rref *R, int d, int64_t base)
{
	const es_tensor *x = R->x;
	int r = x->ndim;
	int64_t len = x->dims[d], stride = 1;
	for (int e = d + 1; e < r; e++)
		stride *= x->dims[e];
	double xr = (double)R->oc[d], ow = R->out_w[d], s = R->scale[d], xo;
	switch (R->c->ct) {
	case CT_AC: xo = ow == 1 ? 0 : xr * (double)(len - 1) / (ow - 1); break;
	case CT_ASYM: xo = xr / s; break;
	case CT_TFNN: xo = (xr + 0.5) / s; break;
	case CT_CROP: {
		double st = R->roi[d], en = R->roi[r + d];
		xo = ow == 1 ? (en - st) * (double)(len - 1) / 2 :
		     xr * (en - st) * (double)(len - 1) / (ow - 1);
		xo += st * (double)(len - 1);
		if (xo < 0 || xo > (double)(len - 1))
			return R->c->extra;
		break;
	}
	case CT_PHP: xo = ow == 1 ? 0 : (xr + 0.5) / s - 0.5; break;
	default: xo = (xr + 0.5) / s - 0.5; break;
	}
	double fl = floor(xo), ratio = xo == fl ? 1 : xo - fl;
	double co[4];
	int n = ref_coeffs(R->c, ratio, s, co);
	/* the n indexes nearest to xo (ties to the smaller), ascending, as
	 * get_neighbor_idxes on the edge-padded axis picks them */
	int64_t pad = (n + 1) / 2, idx[4];
	double xp = xo + (double)pad;
	int64_t lo = (int64_t)floor(xp) - n, hi = (int64_t)floor(xp) + n;
	int got = 0;
	while (got < n) {
		int64_t best = INT64_MIN;
		double bd = INFINITY;
		for (int64_t i = lo; i <= hi; i++) {
			if (i < 0 || i >= len + 2 * pad)
				continue;
			bool used = false;
			for (int q = 0; q < got; q++)
				used |= idx[q] == i;
			double dd = fabs(xp - (double)i);
			if (!used && dd < bd) {
				bd = dd;
				best = i;
			}
		}
		idx[got++] = best;
	}
	for (int a = 0; a < n; a++) /* ascending */
		for (int b = a + 1; b < n; b++)
			if (idx[b] < idx[a]) {
				int64_t t = idx[a];
				idx[a] = idx[b];
				idx[b] = t;
			}
	double sum = 0, v = 0;
	for (int q = 0; q < n; q++) {
		int64_t orig = idx[q] - pad;
		if (R->c->exclude && (orig < 0 || orig >= len))
			co[q] = 0;
		sum += co[q];
	}
	for (int q = 0; q < n; q++) {
		int64_t orig = idx[q] - pad;
		int64_t cl = orig < 0 ? 0 : orig >= len ? len - 1 : orig;
		double w = R->c->exclude ? co[q] / sum : co[q];
		if (w == 0)
			continue;
		double pv = d == r - 1 ? get_real(x, base + cl) :
			    ref_interp(R, d + 1, base + cl * stride);
		v += w * pv;
	}
	return v;
}

static bool resize_check(sess *x, const struct rcfg *c, es_dtype dt, bool by_sizes,
			 bool has_roi, int ndim, const int64_t *dims, const double *scales,
			 const int64_t *sizes, const double *roi, char *why, size_t why_n)
{
	es_tensor in[3], out[1];
	es_error err;
	size_t n = 0;
	in[n] = mk(dt, ndim, dims);
	for (int64_t i = 0; i < es_tensor_numel(&in[n]); i++) {
		if (is_real(dt))
			set_real(&in[n], i, rnd_real(-5, 5));
		else if (dt == ES_DT_BOOL)
			set_bits(&in[n], i, rnd() % 2);
		else
			set_bits(&in[n], i, (uint64_t)rnd_int(is_signed(dt) ? -100 : 0, 200));
	}
	n++;
	if (has_roi)
		in[n++] = mk_f32(2 * ndim, roi);
	in[n++] = by_sizes ? mk_i64(ndim, sizes, true) : mk_f32(ndim, scales);
	int rc = run(x, in, n, out, &err);
	bool ok = true;
	if (rc) {
		snprintf(why, why_n, "run failed: %.400s", err.msg);
		ok = false;
		goto out;
	}
	double sc[ES_MAX_DIMS], ow[ES_MAX_DIMS];
	int64_t od[ES_MAX_DIMS];
	for (int d = 0; d < ndim; d++) {
		if (by_sizes) {
			od[d] = sizes[d];
			sc[d] = (double)sizes[d] / (double)dims[d];
		} else {
			float fs = (float)scales[d];
			double crop = has_roi && c->ct == CT_CROP ? (float)roi[ndim + d] - (float)roi[d] : 1;
			od[d] = (int64_t)floor((double)dims[d] * (double)fs * crop);
			sc[d] = fs;
		}
		ow[d] = by_sizes ? (double)sizes[d] : sc[d] * (double)dims[d];
		if (out[0].dims[d] != od[d]) {
			snprintf(why, why_n, "dims[%d] = %lld, expected %lld", d,
				 (long long)out[0].dims[d], (long long)od[d]);
			ok = false;
			goto out;
		}
	}
	double froi[2 * ES_MAX_DIMS];
	for (int i = 0; has_roi && i < 2 * ndim; i++)
		froi[i] = (float)roi[i];
	int64_t oc[ES_MAX_DIMS];
	struct rref R = { c, &in[0], sc, ow, has_roi ? froi : NULL, oc };
	int64_t on = es_tensor_numel(&out[0]);
	for (int64_t o = 0; o < on && ok; o++) {
		int64_t rem = o;
		for (int d = ndim - 1; d >= 0; d--) {
			oc[d] = rem % od[d];
			rem /= od[d];
		}
		double want = ref_interp(&R, 0, 0), got = get_real(&out[0], o);
		double tol;
		if (is_real(dt))
			tol = real_tol(dt) * 10 * (fabs(want) + 5);
		else
			tol = c->mode == R_NEAREST ? 0 : 1; /* rounding of x.5 */
		if (!is_real(dt) && dt != ES_DT_BOOL) {
			double lo, hi;
			int_limits(dt, &lo, &hi);
			want = want < lo ? lo : want > hi ? hi : want;
		}
		if (!(fabs(got - want) <= tol)) {
			snprintf(why, why_n, "element %lld: %.7g, expected %.7g", (long long)o,
				 got, want);
			ok = false;
		}
	}
out:
	for (size_t i = 0; i < n; i++)
		es_tensor_free_data(&in[i]);
	return ok;
}

static void resize_random(const char *model, const struct rcfg *c, es_dtype dt,
			  bool by_sizes, bool has_roi, int trials, int threads)
{
	static const double scale_set[] = { 0.5, 0.6, 1, 1.5, 2, 2.5, 3, 0.75, 1.25 };
	sess x;
	char why[512];
	sess_open(&x, model, threads);
	for (int t = 0; t < trials; t++) {
		int ndim;
		int64_t dims[ES_MAX_DIMS], sizes[ES_MAX_DIMS];
		double scales[ES_MAX_DIMS], roi[2 * ES_MAX_DIMS];
		random_shape(1, 4, 5, false, &ndim, dims);
		for (int d = 0; d < ndim; d++) {
			bool keep = rnd() % 3 == 0;
			scales[d] = keep ? 1 : scale_set[rnd() % 9];
			sizes[d] = keep ? dims[d] : rnd_int(1, 9);
			roi[d] = rnd_real(-0.3, 0.5);
			roi[ndim + d] = rnd_real(0.5, 1.3);
		}
		if (!resize_check(&x, c, dt, by_sizes, has_roi, ndim, dims, scales, sizes, roi,
				  why, sizeof(why)))
			fail_msg("%s, trial %d (rank %d): %s", model, t, ndim, why);
	}
	sess_close(&x);
}

static void test_resize_modes(void **state)
{
	static const struct { const char *name; struct rcfg c; } cfgs[] = {
		{ "nearest_hp", { R_NEAREST, CT_HP, NM_RPF, -0.75, false, 0 } },
		{ "nearest_asym", { R_NEAREST, CT_ASYM, NM_FLOOR, -0.75, false, 0 } },
		{ "nearest_ac", { R_NEAREST, CT_AC, NM_RPC, -0.75, false, 0 } },
		{ "nearest_php", { R_NEAREST, CT_PHP, NM_CEIL, -0.75, false, 0 } },
		{ "nearest_crop", { R_NEAREST, CT_CROP, NM_RPF, -0.75, false, 7 } },
		{ "linear_hp", { R_LINEAR, CT_HP, NM_RPF, -0.75, false, 0 } },
		{ "linear_ac", { R_LINEAR, CT_AC, NM_RPF, -0.75, false, 0 } },
		{ "linear_php", { R_LINEAR, CT_PHP, NM_RPF, -0.75, false, 0 } },
		{ "linear_asym", { R_LINEAR, CT_ASYM, NM_RPF, -0.75, false, 0 } },
		{ "linear_crop", { R_LINEAR, CT_CROP, NM_RPF, -0.75, false, -1 } },
		{ "cubic_hp", { R_CUBIC, CT_HP, NM_RPF, -0.75, false, 0 } },
		{ "cubic_ac", { R_CUBIC, CT_AC, NM_RPF, -0.75, false, 0 } },
		{ "cubic_asym", { R_CUBIC, CT_ASYM, NM_RPF, -0.5, true, 0 } },
		{ "cubic_crop", { R_CUBIC, CT_CROP, NM_RPF, -0.75, false, 3 } },
	};
	for (size_t i = 0; i < sizeof(cfgs) / sizeof(cfgs[0]); i++)
		for (int by = 0; by < 2; by++) {
			char name[128];
			snprintf(name, sizeof(name), "resize_%s_%s", cfgs[i].name,
				 by ? "sizes" : "scales");
			bool crop = cfgs[i].c.ct == CT_CROP;
			resize_random(name, &cfgs[i].c, ES_DT_FLOAT, by, crop, 40, 1);
		}
}

static void test_resize_dtypes_versions(void **state)
{
	static const struct { const char *model, *dt; enum rmode mode; bool sizes; } cases[] = {
		{ "resize_linear_uint8_sizes", "uint8", R_LINEAR, true },
		{ "resize_nearest_int64_scales", "int64", R_NEAREST, false },
		{ "resize_linear_float16_scales", "float16", R_LINEAR, false },
		{ "resize_cubic_double_sizes", "double", R_CUBIC, true },
		{ "resize_nearest_bool_sizes", "bool", R_NEAREST, true },
		{ "resize_cubic_int32_scales", "int32", R_CUBIC, false },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct rcfg c = { cases[i].mode, CT_HP, NM_RPF, -0.75, false, 0 };
		resize_random(cases[i].model, &c, dtype_named(cases[i].dt), cases[i].sizes,
			      false, 30, 1);
	}
	/* before opset 11: asymmetric, nearest floors (ceils when shrinking) */
	struct rcfg nn = { R_NEAREST, CT_ASYM, NM_SIMPLE, -0.75, false, 0 };
	struct rcfg lin = { R_LINEAR, CT_ASYM, NM_SIMPLE, -0.75, false, 0 };
	resize_random("resize10_nearest", &nn, ES_DT_FLOAT, false, false, 30, 1);
	resize_random("resize10_linear", &lin, ES_DT_FLOAT, false, false, 30, 1);

	/* Upsample 9: scales >= 1 */
	const char *ups[] = { "upsample9_nearest", "upsample9_linear" };
	for (int u = 0; u < 2; u++) {
		sess x;
		char why[512];
		sess_open(&x, ups[u], 1);
		for (int t = 0; t < 20; t++) {
			int ndim;
			int64_t dims[ES_MAX_DIMS];
			double scales[ES_MAX_DIMS];
			random_shape(1, 4, 4, false, &ndim, dims);
			for (int d = 0; d < ndim; d++)
				scales[d] = 1 + (double)(rnd() % 5) * 0.5;
			if (!resize_check(&x, u ? &lin : &nn, ES_DT_FLOAT, false, false, ndim, dims,
					  scales, NULL, NULL, why, sizeof(why)))
				fail_msg("%s trial %d: %s", ups[u], t, why);
		}
		sess_close(&x);
	}

	/* Upsample 7 (int32, scales attribute) and 1 (bilinear, 4-D) */
	sess x;
	es_error err;
	es_tensor in, out[1];
	sess_open(&x, "upsample7_nearest", 1);
	in = mk(ES_DT_INT32, 4, (const int64_t[]){ 1, 1, 2, 2 });
	for (int i = 0; i < 4; i++)
		((int32_t *)in.data)[i] = i + 1;
	assert_int_equal(run(&x, &in, 1, out, &err), 0);
	assert_int_equal(out[0].dims[2], 4);
	assert_int_equal(out[0].dims[3], 6);
	static const int32_t want7[24] = { 1, 1, 1, 2, 2, 2, 1, 1, 1, 2, 2, 2,
					   3, 3, 3, 4, 4, 4, 3, 3, 3, 4, 4, 4 };
	assert_memory_equal(out[0].data, want7, sizeof(want7));
	es_tensor_free_data(&in);
	sess_close(&x);
	sess_open(&x, "upsample1_bilinear", 1);
	in = mk(ES_DT_FLOAT, 4, (const int64_t[]){ 1, 2, 3, 2 });
	for (int i = 0; i < 12; i++)
		((float *)in.data)[i] = (float)(i * i);
	assert_int_equal(run(&x, &in, 1, out, &err), 0);
	{
		double sc[4] = { 1, 1, 2, 3 }, ow[4] = { 1, 2, 6, 6 };
		int64_t oc[4];
		struct rref R = { &lin, &in, sc, ow, NULL, oc };
		assert_int_equal(es_tensor_numel(&out[0]), 72);
		for (int64_t o = 0; o < 72; o++) {
			oc[0] = 0;
			oc[1] = o / 36;
			oc[2] = o / 6 % 6;
			oc[3] = o % 6;
			assert_float_equal(((float *)out[0].data)[o], ref_interp(&R, 0, 0), 1e-4);
		}
	}
	es_tensor_free_data(&in);
	sess_close(&x);

	/* Resize 11 with tf_half_pixel_for_nn, roi and scales empty */
	sess_open(&x, "resize11_nearest_tfnn", 1);
	es_tensor ins[4];
	ins[0] = mk(ES_DT_FLOAT, 2, (const int64_t[]){ 4, 4 });
	for (int i = 0; i < 16; i++)
		((float *)ins[0].data)[i] = (float)i;
	ins[1] = mk(ES_DT_FLOAT, 1, (const int64_t[]){ 0 });
	ins[2] = mk(ES_DT_FLOAT, 1, (const int64_t[]){ 0 });
	ins[3] = mk_i64(2, (const int64_t[]){ 3, 2 }, true);
	assert_int_equal(run(&x, ins, 4, out, &err), 0);
	/* x_orig = (x + 0.5) / scale: rows (scale 3/4) 0.67, 2, 3.33 -> 1, 2, 3;
	 * columns (scale 1/2) 1, 3 */
	static const float want11[6] = { 5, 7, 9, 11, 13, 15 };
	assert_memory_equal(out[0].data, want11, sizeof(want11));
	for (int i = 0; i < 4; i++)
		es_tensor_free_data(&ins[i]);
	sess_close(&x);
}

static void test_resize_threads(void **state)
{
	struct rcfg lin = { R_LINEAR, CT_HP, NM_RPF, -0.75, false, 0 };
	struct rcfg cub = { R_CUBIC, CT_AC, NM_RPF, -0.75, false, 0 };
	struct rcfg nn = { R_NEAREST, CT_HP, NM_RPF, -0.75, false, 0 };
	const struct { const char *model; const struct rcfg *c; } cases[] = {
		{ "resize_linear_hp_sizes", &lin },
		{ "resize_cubic_ac_sizes", &cub },
		{ "resize_nearest_hp_sizes", &nn },
	};
	for (int i = 0; i < 3; i++) {
		sess x;
		char why[512];
		es_error err;
		es_tensor in[2], out[1];
		sess_open(&x, cases[i].model, 4);
		const int64_t dims[4] = { 2, 3, 40, 50 }, sizes[4] = { 2, 3, 97, 121 };
		if (!resize_check(&x, cases[i].c, ES_DT_FLOAT, true, false, 4, dims, NULL, sizes,
				  NULL, why, sizeof(why)))
			fail_msg("%s: %s", cases[i].model, why);
		in[0] = mk(ES_DT_FLOAT, 4, dims);
		in[1] = mk_i64(4, sizes, true);
		assert_int_equal(run(&x, in, 2, out, &err), 0);
		uint64_t before = es_alloc_count();
		assert_int_equal(run(&x, in, 2, out, &err), 0);
		assert_int_equal(es_alloc_count(), before);
		es_tensor_free_data(&in[0]);
		es_tensor_free_data(&in[1]);
		sess_close(&x);
	}
}

static void test_resize_hostile(void **state)
{
	sess x;
	es_error err;
	es_tensor in[3], out[1];
	sess_open(&x, "resize_linear_hp_scales", 1);
	in[0] = mk(ES_DT_FLOAT, 2, (const int64_t[]){ 3, 4 });
	const double bad[][2] = { { 1, NAN }, { -1, 1 }, { 0, 1 }, { 1, INFINITY } };
	for (int i = 0; i < 4; i++) {
		in[1] = mk_f32(2, bad[i]);
		expect_fail(&x, in, 2, ES_ERANGE, "scales[");
		es_tensor_free_data(&in[1]);
	}
	in[1] = mk_f32(2, (const double[]){ 1, 1e30 });
	expect_fail(&x, in, 2, ES_ERANGE, "output axis 1");
	es_tensor_free_data(&in[1]);
	in[1] = mk_f32(2, (const double[]){ 1e10, 1e10 });
	expect_fail(&x, in, 2, ES_ERANGE, NULL); /* numel overflows */
	es_tensor_free_data(&in[1]);
	in[1] = mk_f32(3, (const double[]){ 1, 1, 1 });
	expect_fail(&x, in, 2, ES_ESHAPE, "rank of 'X'");
	es_tensor_free_data(&in[1]);
	in[1] = mk_f32(0, NULL);
	expect_fail(&x, in, 2, ES_EINVAL, "neither");
	es_tensor_free_data(&in[1]);
	in[1] = mk_f32(2, (const double[]){ 2, 0.5 });
	assert_int_equal(run(&x, in, 2, out, &err), 0); /* still usable */
	assert_int_equal(out[0].dims[0], 6);
	assert_int_equal(out[0].dims[1], 2);
	es_tensor_free_data(&in[1]);
	sess_close(&x);

	sess_open(&x, "resize_nearest_hp_sizes", 1);
	in[1] = mk_i64(2, (const int64_t[]){ 3, -1 }, true);
	expect_fail(&x, in, 2, ES_ERANGE, "sizes[1]");
	es_tensor_free_data(&in[1]);
	in[1] = mk_i64(1, (const int64_t[]){ 3 }, true);
	expect_fail(&x, in, 2, ES_ESHAPE, "sizes");
	es_tensor_free_data(&in[1]);
	in[1] = mk_i64(2, (const int64_t[]){ 0, 5 }, true); /* empty output is fine */
	assert_int_equal(run(&x, in, 2, out, &err), 0);
	assert_int_equal(es_tensor_numel(&out[0]), 0);
	es_tensor_free_data(&in[1]);
	sess_close(&x);

	sess_open(&x, "resize_both", 1);
	in[1] = mk_f32(2, (const double[]){ 2, 2 });
	in[2] = mk_i64(2, (const int64_t[]){ 6, 8 }, true);
	expect_fail(&x, in, 3, ES_EINVAL, "exactly one");
	es_tensor_free_data(&in[1]);
	es_tensor_free_data(&in[2]);
	sess_close(&x);

	sess_open(&x, "resize_linear_crop_sizes", 1);
	in[1] = mk_f32(3, (const double[]){ 0, 0, 1 });
	in[2] = mk_i64(2, (const int64_t[]){ 2, 2 }, true);
	expect_fail(&x, in, 3, ES_ESHAPE, "roi");
	es_tensor_free_data(&in[1]);
	es_tensor_free_data(&in[2]);
	sess_close(&x);
	es_tensor_free_data(&in[0]);

	sess_open(&x, "resize_bool_linear", 1);
	in[0] = mk(ES_DT_BOOL, 1, (const int64_t[]){ 4 });
	in[1] = mk_f32(1, (const double[]){ 2 });
	expect_fail(&x, in, 2, ES_EUNSUPPORTED, "nearest");
	es_tensor_free_data(&in[0]);
	es_tensor_free_data(&in[1]);
	sess_close(&x);

	assert_int_equal(sess_try(&x, "resize_bad_mode", 1, &err), ES_EINVAL);
	assert_non_null(strstr(err.msg, "area"));
	assert_int_equal(sess_try(&x, "resize_v13_tf_nn", 1, &err), ES_EINVAL);
	assert_int_equal(sess_try(&x, "upsample7_bad_scale", 1, &err), ES_EINVAL);
}

/* ---- Einsum, NonMaxSuppression, Shrink (ops/misc.c) ------------------------ */

/* Brute-force einsum for equations without '...': every assignment of
 * every label. */
static void ref_einsum(const char *eq, int n_in, es_tensor *in, es_tensor *want_out)
{
	char terms[4][16] = { { 0 } }, out[16] = { 0 };
	int t = 0, len = 0;
	const char *p = eq;
	for (; *p && !(p[0] == '-' && p[1] == '>'); p++) {
		if (*p == ',') {
			t++;
			len = 0;
		} else if (*p != ' ') {
			terms[t][len++] = *p;
		}
	}
	assert_int_equal(t + 1, n_in);
	int64_t size[128];
	int count[128] = { 0 };
	for (int i = 0; i < 128; i++)
		size[i] = -1;
	for (int i = 0; i < n_in; i++)
		for (int j = 0; terms[i][j]; j++) {
			size[(int)terms[i][j]] = in[i].dims[j];
			count[(int)terms[i][j]]++;
		}
	if (*p) {
		len = 0;
		for (p += 2; *p; p++)
			if (*p != ' ')
				out[len++] = *p;
	} else {
		len = 0;
		for (int c = 'A'; c <= 'z'; c++)
			if (count[c] == 1)
				out[len++] = (char)c;
	}
	char labels[64];
	int nl = 0;
	for (int c = 0; c < 128; c++)
		if (size[c] >= 0)
			labels[nl++] = (char)c;
	int64_t odims[8];
	for (int j = 0; out[j]; j++)
		odims[j] = size[(int)out[j]];
	*want_out = mk(ES_DT_DOUBLE, (int)strlen(out), odims);
	int64_t total = 1, val[128];
	for (int l = 0; l < nl; l++)
		total *= size[(int)labels[l]];
	for (int64_t a = 0; a < total; a++) {
		int64_t rem = a;
		for (int l = nl - 1; l >= 0; l--) {
			val[(int)labels[l]] = rem % size[(int)labels[l]];
			rem /= size[(int)labels[l]];
		}
		double prod = 1;
		for (int i = 0; i < n_in; i++) {
			int64_t off = 0;
			for (int j = 0; terms[i][j]; j++)
				off = off * in[i].dims[j] + val[(int)terms[i][j]];
			prod *= get_real(&in[i], off);
		}
		int64_t oo = 0;
		for (int j = 0; out[j]; j++)
			oo = oo * odims[j] + val[(int)out[j]];
		((double *)want_out->data)[oo] += prod;
	}
}

static void test_einsum(void **state)
{
	static const struct { const char *model, *eq; int n; int rank[3]; } cases[] = {
		{ "einsum_matmul", "ij,jk->ik", 2, { 2, 2 } },
		{ "einsum_implicit_matmul", "ij,jk", 2, { 2, 2 } },
		{ "einsum_transpose", "ij->ji", 1, { 2 } },
		{ "einsum_trace", "ii", 1, { 2 } },
		{ "einsum_diag", "ii->i", 1, { 2 } },
		{ "einsum_outer", "i,j->ij", 2, { 1, 1 } },
		{ "einsum_three", "ij,jk,kl->il", 3, { 2, 2, 2 } },
		{ "einsum_sum_all", "ij->", 1, { 2 } },
		{ "einsum_bhqd", "bhqd,bhkd->bhqk", 2, { 4, 4 } },
		{ "einsum_upper", "Ab,bc->Ac", 2, { 2, 2 } },
		{ "einsum_matmul_int32", "ij,jk->ik", 2, { 2, 2 } },
	};
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		sess x;
		es_error err;
		sess_open(&x, cases[c].model, c % 2 ? 2 : 1);
		es_dtype dt = strstr(cases[c].model, "int32") ? ES_DT_INT32 : ES_DT_FLOAT;
		for (int trial = 0; trial < 10; trial++) {
			/* one size per label letter, shared by all operands */
			int64_t lsz[128];
			for (int l = 0; l < 128; l++)
				lsz[l] = rnd_int(1, 5);
			es_tensor in[3], out[1], want;
			const char *p = cases[c].eq;
			for (int i = 0; i < cases[c].n; i++) {
				int64_t dims[8];
				int nd = 0;
				while (*p == ',' || *p == ' ')
					p++;
				for (; *p && *p != ',' && *p != '-'; p++)
					if (*p != ' ')
						dims[nd++] = lsz[(int)*p];
				assert_int_equal(nd, cases[c].rank[i]);
				in[i] = mk(dt, nd, dims);
				for (int64_t q = 0; q < es_tensor_numel(&in[i]); q++) {
					if (dt == ES_DT_FLOAT)
						set_real(&in[i], q, rnd_real(-1, 1));
					else
						set_bits(&in[i], q, (uint64_t)rnd_int(-9, 9));
				}
			}
			if (run(&x, in, (size_t)cases[c].n, out, &err))
				fail_msg("%s: %s", cases[c].model, err.msg);
			ref_einsum(cases[c].eq, cases[c].n, in, &want);
			assert_int_equal(out[0].ndim, want.ndim);
			for (int d = 0; d < want.ndim; d++)
				assert_int_equal(out[0].dims[d], want.dims[d]);
			for (int64_t q = 0; q < es_tensor_numel(&want); q++) {
				double w = ((double *)want.data)[q], g = get_real(&out[0], q);
				if (!(fabs(g - w) <= 1e-5 * (1 + fabs(w))))
					fail_msg("%s trial %d element %lld: %g, expected %g",
						 cases[c].model, trial, (long long)q, g, w);
			}
			es_tensor_free_data(&want);
			for (int i = 0; i < cases[c].n; i++)
				es_tensor_free_data(&in[i]);
		}
		sess_close(&x);
	}
}

/* '...' broadcasting and summing, against hand loops. */
static void test_einsum_ellipsis(void **state)
{
	sess x;
	es_error err;
	es_tensor in[2], out[1];
	sess_open(&x, "einsum_bcast_batch", 1);
	/* [2,1,3, i=2, j=4] x [4,1, j=4, k=5] -> [2,4,3, 2, 5] */
	in[0] = mk(ES_DT_FLOAT, 5, (const int64_t[]){ 2, 1, 3, 2, 4 });
	in[1] = mk(ES_DT_FLOAT, 4, (const int64_t[]){ 4, 1, 4, 5 });
	for (int i = 0; i < 2; i++)
		for (int64_t q = 0; q < es_tensor_numel(&in[i]); q++)
			set_real(&in[i], q, rnd_real(-1, 1));
	assert_int_equal(run(&x, in, 2, out, &err), 0);
	assert_int_equal(out[0].ndim, 5);
	const int64_t od[5] = { 2, 4, 3, 2, 5 };
	for (int d = 0; d < 5; d++)
		assert_int_equal(out[0].dims[d], od[d]);
	const float *a = in[0].data, *b = in[1].data, *y = out[0].data;
	for (int b0 = 0; b0 < 2; b0++)
		for (int b1 = 0; b1 < 4; b1++)
			for (int b2 = 0; b2 < 3; b2++)
				for (int i = 0; i < 2; i++)
					for (int kk = 0; kk < 5; kk++) {
						double s = 0;
						for (int j = 0; j < 4; j++)
							s += (double)a[((b0 * 3 + b2) * 2 + i) * 4 + j] *
							     b[(b1 * 4 + j) * 5 + kk];
						float g = y[(((b0 * 4 + b1) * 3 + b2) * 2 + i) * 5 + kk];
						assert_float_equal(g, s, 1e-5);
					}
	/* batch dims that do not broadcast */
	es_tensor_free_data(&in[1]);
	in[1] = mk(ES_DT_FLOAT, 4, (const int64_t[]){ 4, 2, 4, 5 });
	expect_fail(&x, in, 2, ES_ESHAPE, "broadcast");
	es_tensor_free_data(&in[1]);
	/* j mismatch */
	in[1] = mk(ES_DT_FLOAT, 2, (const int64_t[]){ 3, 5 });
	expect_fail(&x, in, 2, ES_ESHAPE, "label 'j'");
	es_tensor_free_data(&in[0]);
	es_tensor_free_data(&in[1]);
	sess_close(&x);

	sess_open(&x, "einsum_ell_sum", 1);
	in[0] = mk(ES_DT_FLOAT, 3, (const int64_t[]){ 2, 3, 4 });
	for (int q = 0; q < 24; q++)
		((float *)in[0].data)[q] = (float)q;
	assert_int_equal(run(&x, in, 1, out, &err), 0);
	assert_int_equal(out[0].ndim, 2);
	for (int q = 0; q < 6; q++)
		assert_float_equal(((float *)out[0].data)[q], 4 * 4 * q + 6, 1e-6);
	es_tensor_free_data(&in[0]);
	in[0] = mk(ES_DT_FLOAT, 0, NULL); /* rank 0 has no 'i' */
	expect_fail(&x, in, 1, ES_ESHAPE, "rank 0");
	es_tensor_free_data(&in[0]);
	sess_close(&x);

	assert_int_equal(sess_try(&x, "einsum_bad_eq", 1, &err), ES_EINVAL);
	assert_non_null(strstr(err.msg, "offset 1"));
	assert_int_equal(sess_try(&x, "einsum_bad_out", 1, &err), ES_EINVAL);
	assert_non_null(strstr(err.msg, "'k'"));
}

static double box_iou(const float *a, const float *b)
{
	double ay1 = fmin(a[0], a[2]), ay2 = fmax(a[0], a[2]);
	double ax1 = fmin(a[1], a[3]), ax2 = fmax(a[1], a[3]);
	double by1 = fmin(b[0], b[2]), by2 = fmax(b[0], b[2]);
	double bx1 = fmin(b[1], b[3]), bx2 = fmax(b[1], b[3]);
	double ih = fmin(ay2, by2) - fmax(ay1, by1), iw = fmin(ax2, bx2) - fmax(ax1, bx1);
	if (ih <= 0 || iw <= 0)
		return 0;
	double inter = ih * iw;
	return inter / ((ay2 - ay1) * (ax2 - ax1) + (by2 - by1) * (bx2 - bx1) - inter);
}

static void test_nms(void **state)
{
	sess x;
	es_error err;
	es_tensor in[5], out[1];
	sess_open(&x, "nms_v11", 1);
	const int64_t nb = 2, nc = 3, n = 300;
	in[0] = mk(ES_DT_FLOAT, 3, (const int64_t[]){ nb, n, 4 });
	in[1] = mk(ES_DT_FLOAT, 3, (const int64_t[]){ nb, nc, n });
	in[2] = mk_i64(1, (const int64_t[]){ 20 }, true);
	in[3] = mk_f32(1, (const double[]){ 0.3 });
	in[4] = mk_f32(1, (const double[]){ 0.2 });
	float *bx = in[0].data, *sc = in[1].data;
	for (int64_t i = 0; i < nb * n; i++) {
		float y = (float)rnd_real(0, 10), xx = (float)rnd_real(0, 10);
		bx[i * 4] = y;
		bx[i * 4 + 1] = xx;
		bx[i * 4 + 2] = y + (float)rnd_real(-2, 2);
		bx[i * 4 + 3] = xx + (float)rnd_real(-2, 2);
	}
	for (int64_t i = 0; i < nb * nc * n; i++)
		sc[i] = (float)(rnd() % 50) / 50; /* many equal scores */
	assert_int_equal(run(&x, in, 5, out, &err), 0);
	uint64_t before = es_alloc_count();
	assert_int_equal(run(&x, in, 5, out, &err), 0);
	assert_int_equal(es_alloc_count(), before);
	/* reference: per (batch, class) order by score, then index; greedy */
	int64_t at = 0;
	const int64_t *sel = out[0].data;
	for (int64_t b = 0; b < nb; b++)
		for (int64_t c = 0; c < nc; c++) {
			const float *s = sc + (b * nc + c) * n;
			bool used[300] = { false };
			int64_t kept[20], nk = 0;
			for (;;) {
				int64_t best = -1;
				for (int64_t i = 0; i < n; i++)
					if (!used[i] && s[i] > 0.2f && (best < 0 || s[i] > s[best]))
						best = i;
				if (best < 0 || nk == 20)
					break;
				used[best] = true;
				bool drop = false;
				for (int64_t q = 0; q < nk; q++)
					drop |= box_iou(bx + (b * n + kept[q]) * 4,
							bx + (b * n + best) * 4) > 0.3;
				if (drop)
					continue;
				kept[nk++] = best;
				assert_true(at < out[0].dims[0]);
				assert_int_equal(sel[at * 3], b);
				assert_int_equal(sel[at * 3 + 1], c);
				assert_int_equal(sel[at * 3 + 2], best);
				at++;
			}
		}
	assert_int_equal(at, out[0].dims[0]);

	/* max 0: empty; NaN scores without a threshold do not upset the sort */
	es_tensor_free_data(&in[2]);
	in[2] = mk_i64(1, (const int64_t[]){ 0 }, true);
	assert_int_equal(run(&x, in, 5, out, &err), 0);
	assert_int_equal(out[0].dims[0], 0);
	es_tensor_free_data(&in[2]);
	in[2] = mk_i64(1, (const int64_t[]){ 5 }, true);
	for (int64_t i = 0; i < nb * nc * n; i += 3)
		sc[i] = NAN;
	es_tensor_free_data(&in[4]);
	in[4] = mk(ES_DT_FLOAT, 1, (const int64_t[]){ 0 }); /* empty: no threshold */
	assert_int_equal(run(&x, in, 5, out, &err), 0);
	assert_int_equal(out[0].dims[0], nb * nc * 5);
	/* hostile */
	es_tensor_free_data(&in[3]);
	in[3] = mk_f32(1, (const double[]){ 1.5 });
	expect_fail(&x, in, 5, ES_ERANGE, "iou_threshold");
	es_tensor_free_data(&in[3]);
	in[3] = mk_f32(1, (const double[]){ 0.5 });
	es_tensor_free_data(&in[1]);
	in[1] = mk(ES_DT_FLOAT, 3, (const int64_t[]){ nb, nc, n - 1 });
	expect_fail(&x, in, 5, ES_ESHAPE, "scores");
	for (int i = 0; i < 5; i++)
		es_tensor_free_data(&in[i]);
	sess_close(&x);
}

static void test_shrink(void **state)
{
	sess x;
	es_error err;
	es_tensor in, out[1];
	sess_open(&x, "shrink_int8", 1);
	in = mk(ES_DT_INT8, 1, (const int64_t[]){ 7 });
	static const int8_t xs[7] = { -128, -50, -2, -1, 1, 2, 127 };
	static const int8_t want[7] = { -28, 50, 98, 0, 0, -98, 27 };
	memcpy(in.data, xs, sizeof(xs));
	assert_int_equal(run(&x, &in, 1, out, &err), 0);
	assert_memory_equal(out[0].data, want, sizeof(want));
	es_tensor_free_data(&in);
	sess_close(&x);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reduce_all_kinds),
		cmocka_unit_test(test_reduce_dtypes),
		cmocka_unit_test(test_reduce_opset_rows),
		cmocka_unit_test(test_reduce_empty_sets),
		cmocka_unit_test(test_reduce_nan),
		cmocka_unit_test(test_reduce_threads),
		cmocka_unit_test(test_reduce_hostile),
		cmocka_unit_test(test_argmax_argmin),
		cmocka_unit_test(test_argmax_nan_threads_errors),
		cmocka_unit_test(test_topk),
		cmocka_unit_test(test_topk_errors),
		cmocka_unit_test(test_resize_modes),
		cmocka_unit_test(test_resize_dtypes_versions),
		cmocka_unit_test(test_resize_threads),
		cmocka_unit_test(test_resize_hostile),
		cmocka_unit_test(test_einsum),
		cmocka_unit_test(test_einsum_ellipsis),
		cmocka_unit_test(test_nms),
		cmocka_unit_test(test_shrink),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
