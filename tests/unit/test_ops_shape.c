/*
 * The shape and transform operator families (ops/shape.c, ops/transform.c).
 *
 * - Golden cases: tests/data/ops/shape/golden/<case>/ holds a one-node
 *   model, its inputs and the outputs numpy computed (gen.py there). They
 *   cover old opset versions, dtypes and edge cases the ONNX node tests do
 *   not. Each runs with and without load-time folding, on 1 and 2 threads,
 *   and a second run must allocate nothing.
 * - Hostile inputs: out-of-range indices, impossible shapes, sizes that
 *   overflow. Each must fail with the right code and a message naming the
 *   node and the offending value, and leave the session usable.
 * - Random shapes against reference loops written here (Transpose, Slice,
 *   Pad, Gather, Concat, Tile, Expand), some large enough for the threaded
 *   paths.
 */
#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "base/alloc.h"
#include "base/fp16.h"
#include "edgeserve/engine.h"

#define MAX_IO 6

/* ---- where the data is ---------------------------------------------------- */

static char dir_buf[4096];

/* tests/data/ops/shape, from the build's ES_TEST_DATA_DIR or else next to
 * this file. */
static const char *data_dir(void)
{
	if (dir_buf[0])
		return dir_buf;
#ifdef ES_TEST_DATA_DIR
	snprintf(dir_buf, sizeof(dir_buf), "%s/ops/shape", ES_TEST_DATA_DIR);
#else
	const char *f = __FILE__;
	const char *slash = strrchr(f, '/');
	int len = slash ? (int)(slash - f) : 1;
	snprintf(dir_buf, sizeof(dir_buf), "%.*s/../data/ops/shape", len, slash ? f : ".");
#endif
	return dir_buf;
}

static const char *path_of(char *buf, size_t n, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static const char *path_of(char *buf, size_t n, const char *fmt, ...)
{
	int at = snprintf(buf, n, "%s/", data_dir());
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf + at, n - (size_t)at, fmt, ap);
	va_end(ap);
	return buf;
}

static bool file_exists(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0;
}

/* ---- tensors ---------------------------------------------------------------- */

#define DIMS(...) ((const int64_t[]){ __VA_ARGS__ })
#define I64S(...) ((const int64_t[]){ __VA_ARGS__ })

static es_tensor mk(es_dtype dt, int ndim, const int64_t *dims, const void *vals)
{
	es_tensor t;
	es_error e = { 0 };
	assert_int_equal(es_tensor_alloc(&t, dt, ndim, dims, &e), 0);
	if (vals && t.nbytes)
		memcpy(t.data, vals, t.nbytes);
	return t;
}

static void free_all(es_tensor *t, int n)
{
	for (int i = 0; i < n; i++)
		es_tensor_free_data(&t[i]);
}

static double get_d(const es_tensor *t, int64_t i)
{
	switch (t->dtype) {
	case ES_DT_FLOAT: return ((const float *)t->data)[i];
	case ES_DT_DOUBLE: return ((const double *)t->data)[i];
	case ES_DT_FLOAT16: return es_half_to_float(((const uint16_t *)t->data)[i]);
	case ES_DT_BFLOAT16: return es_bf16_to_float(((const uint16_t *)t->data)[i]);
	default: return 0;
	}
}

static bool is_float(es_dtype dt)
{
	return dt == ES_DT_FLOAT || dt == ES_DT_DOUBLE || dt == ES_DT_FLOAT16 ||
	       dt == ES_DT_BFLOAT16;
}

/* Compares got with want (dtype, shape, values; floats |a-b| <= 1e-7 +
 * 1e-3 |b|, NaN equal to NaN). On mismatch writes why. */
static bool tensors_match(const es_tensor *got, const es_tensor *want, char *why,
			  size_t n)
{
	if (got->dtype != want->dtype) {
		snprintf(why, n, "dtype %s, expected %s", es_dtype_name(got->dtype),
			 es_dtype_name(want->dtype));
		return false;
	}
	bool same = got->ndim == want->ndim;
	for (int d = 0; same && d < got->ndim; d++)
		same = got->dims[d] == want->dims[d];
	if (!same) {
		snprintf(why, n, "rank %d dims[0..] %lld,%lld, expected rank %d dims %lld,%lld",
			 got->ndim, got->ndim > 0 ? (long long)got->dims[0] : -1,
			 got->ndim > 1 ? (long long)got->dims[1] : -1, want->ndim,
			 want->ndim > 0 ? (long long)want->dims[0] : -1,
			 want->ndim > 1 ? (long long)want->dims[1] : -1);
		return false;
	}
	int64_t numel = es_tensor_numel(want);
	if (!is_float(want->dtype)) {
		if (numel && memcmp(got->data, want->data, want->nbytes)) {
			size_t esz = es_dtype_size(want->dtype);
			for (int64_t i = 0; i < numel; i++)
				if (memcmp((const char *)got->data + i * esz,
					   (const char *)want->data + i * esz, esz)) {
					snprintf(why, n, "element %lld differs", (long long)i);
					break;
				}
			return false;
		}
		return true;
	}
	for (int64_t i = 0; i < numel; i++) {
		double g = get_d(got, i), w = get_d(want, i);
		if (isnan(w) && isnan(g))
			continue;
		if (!(fabs(g - w) <= 1e-7 + 1e-3 * fabs(w))) {
			snprintf(why, n, "element %lld: %g, expected %g", (long long)i, g, w);
			return false;
		}
	}
	return true;
}

/* ---- sessions --------------------------------------------------------------- */

typedef struct sess {
	es_model *m;
	es_session *s;
} sess;

static int sess_open(sess *x, const char *path, bool no_optimize, int threads,
		     es_error *err)
{
	es_model_options mo = { .no_optimize = no_optimize };
	es_session_options so = { .threads = threads };
	memset(x, 0, sizeof(*x));
	int rc = es_model_load(path, &mo, &x->m, err);
	if (rc)
		return rc;
	rc = es_session_create(x->m, &so, &x->s, err);
	if (rc) {
		es_model_release(x->m);
		x->m = NULL;
	}
	return rc;
}

static void sess_close(sess *x)
{
	if (x->s)
		es_session_destroy(x->s);
	if (x->m)
		es_model_release(x->m);
	memset(x, 0, sizeof(*x));
}

/* Opens tests/data/ops/shape/<name>.onnx or fails the test. */
static void open_named(sess *x, const char *name, int threads)
{
	char p[4096];
	es_error err = { 0 };
	int rc = sess_open(x, path_of(p, sizeof(p), "%s.onnx", name), false, threads, &err);
	if (rc)
		fail_msg("%s: load failed: %s", name, err.msg);
}

static int sess_run(sess *x, const es_tensor *in, size_t n, es_tensor *out,
		    es_error *err)
{
	memset(err, 0, sizeof(*err));
	return es_session_run(x->s, in, n, out, err);
}

/* Runs and expects failure `code` with a message naming the node (op type)
 * and containing `needle` (when not NULL). */
static void expect_fail(sess *x, const es_tensor *in, size_t n, int code,
			const char *op, const char *needle)
{
	es_tensor out[MAX_IO];
	es_error err;
	int rc = sess_run(x, in, n, out, &err);
	if (rc != code)
		fail_msg("%s: expected %d (%s), got %d: %s", op, code, es_strerror(code), rc,
			 err.msg);
	assert_int_equal(err.code, code);
	if (!strstr(err.msg, "node '") || !strstr(err.msg, op))
		fail_msg("%s: message does not name the node: %s", op, err.msg);
	if (needle && !strstr(err.msg, needle))
		fail_msg("%s: message lacks \"%s\": %s", op, needle, err.msg);
}

/* Runs and expects success; out holds session-owned results. */
static void expect_ok(sess *x, const es_tensor *in, size_t n, es_tensor *out)
{
	es_error err;
	int rc = sess_run(x, in, n, out, &err);
	if (rc)
		fail_msg("run failed (%d): %s", rc, err.msg);
}

/* ---- golden cases ----------------------------------------------------------- */

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs one golden case in one configuration; returns false (and prints
 * why) on any mismatch. */
static bool run_golden(const char *name, const es_tensor *in, int n_in,
		       const es_tensor *want, int n_out, bool no_optimize, int threads)
{
	char p[4096], why[256];
	es_error err = { 0 };
	sess x;
	es_tensor got[MAX_IO];
	const char *cfg = no_optimize ? "no_optimize" : "optimize";

	if (sess_open(&x, path_of(p, sizeof(p), "golden/%s/model.onnx", name),
		      no_optimize, threads, &err)) {
		print_message("golden %s (%s): load: %s\n", name, cfg, err.msg);
		return false;
	}
	bool ok = true;
	if ((int)es_model_num_inputs(x.m) != n_in || (int)es_model_num_outputs(x.m) != n_out) {
		print_message("golden %s: model has %zu inputs / %zu outputs, data %d / %d\n",
			      name, es_model_num_inputs(x.m), es_model_num_outputs(x.m), n_in, n_out);
		ok = false;
		goto out;
	}
	for (int run = 0; run < 2 && ok; run++) {
		uint64_t allocs = es_alloc_count();
		if (sess_run(&x, in, (size_t)n_in, got, &err)) {
			print_message("golden %s (%s, %d threads): run: %s\n", name, cfg, threads,
				      err.msg);
			ok = false;
			break;
		}
		/* a steady-state run allocates nothing */
		if (run == 1 && es_alloc_count() != allocs) {
			print_message("golden %s (%s): second run allocated %llu blocks\n", name,
				      cfg, (unsigned long long)(es_alloc_count() - allocs));
			ok = false;
		}
		for (int o = 0; o < n_out; o++)
			if (!tensors_match(&got[o], &want[o], why, sizeof(why))) {
				print_message("golden %s (%s, %d threads): output %d: %s\n", name,
					      cfg, threads, o, why);
				ok = false;
			}
	}
out:
	sess_close(&x);
	return ok;
}

static void test_golden(void **state)
{
	(void)state;
	char p[4096];
	DIR *d = opendir(path_of(p, sizeof(p), "golden"));
	if (!d)
		fail_msg("cannot open %s", p);
	char *names[512];
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)) && n < 512)
		if (de->d_name[0] != '.')
			names[n++] = strdup(de->d_name);
	closedir(d);
	qsort(names, (size_t)n, sizeof(names[0]), cmp_names);
	assert_true(n >= 100);

	int failures = 0;
	for (int c = 0; c < n; c++) {
		es_tensor in[MAX_IO], want[MAX_IO];
		int n_in = 0, n_out = 0;
		es_error err = { 0 };
		for (; n_in < MAX_IO; n_in++) {
			path_of(p, sizeof(p), "golden/%s/input_%d.pb", names[c], n_in);
			if (!file_exists(p))
				break;
			if (es_tensor_read_pb(p, &in[n_in], NULL, &err))
				fail_msg("%s: %s", p, err.msg);
		}
		for (; n_out < MAX_IO; n_out++) {
			path_of(p, sizeof(p), "golden/%s/output_%d.pb", names[c], n_out);
			if (!file_exists(p))
				break;
			if (es_tensor_read_pb(p, &want[n_out], NULL, &err))
				fail_msg("%s: %s", p, err.msg);
		}
		assert_true(n_out > 0);
		failures += !run_golden(names[c], in, n_in, want, n_out, false, 2);
		failures += !run_golden(names[c], in, n_in, want, n_out, true, 1);
		free_all(in, n_in);
		free_all(want, n_out);
		free(names[c]);
	}
	if (failures)
		fail_msg("%d golden configurations failed", failures);
}

/* ---- hostile inputs --------------------------------------------------------- */

static void test_gather_out_of_range(void **state)
{
	(void)state;
	sess x;
	es_tensor out[MAX_IO];
	float data[6] = { 0, 1, 2, 3, 4, 5 };
	es_tensor in[2] = { mk(ES_DT_FLOAT, 2, DIMS(3, 2), data),
			    mk(ES_DT_INT64, 1, DIMS(2), I64S(1, 3)) };
	open_named(&x, "err_gather", 1);
	expect_fail(&x, in, 2, ES_ERANGE, "Gather", "indices[1] = 3 is out of range [-3, 2]");
	((int64_t *)in[1].data)[0] = INT64_MIN;
	expect_fail(&x, in, 2, ES_ERANGE, "Gather", "-9223372036854775808");
	/* the session still works */
	((int64_t *)in[1].data)[0] = -3;
	((int64_t *)in[1].data)[1] = 2;
	expect_ok(&x, in, 2, out);
	assert_int_equal(out[0].ndim, 2);
	const float *y = out[0].data;
	assert_true(y[0] == 0 && y[1] == 1 && y[2] == 4 && y[3] == 5);
	sess_close(&x);
	free_all(in, 2);

	/* int32 indices on axis 1 */
	es_tensor in2[2] = { mk(ES_DT_FLOAT, 2, DIMS(3, 2), data),
			     mk(ES_DT_INT32, 1, DIMS(1), (const int32_t[]){ -3 }) };
	open_named(&x, "err_gather_i32", 1);
	expect_fail(&x, in2, 2, ES_ERANGE, "Gather", "[-2, 1]");
	sess_close(&x);
	free_all(in2, 2);
}

static void test_nd_and_elements_out_of_range(void **state)
{
	(void)state;
	sess x;
	es_tensor out[MAX_IO];
	float data[6] = { 0 };

	es_tensor g[2] = { mk(ES_DT_FLOAT, 2, DIMS(3, 2), data),
			   mk(ES_DT_INT64, 2, DIMS(1, 2), I64S(2, 2)) };
	open_named(&x, "err_gathernd", 1);
	expect_fail(&x, g, 2, ES_ERANGE, "GatherND", "= 2 is out of range [-2, 1]");
	((int64_t *)g[1].data)[0] = -4;
	((int64_t *)g[1].data)[1] = 0;
	expect_fail(&x, g, 2, ES_ERANGE, "GatherND", "-4");
	((int64_t *)g[1].data)[0] = -3;
	expect_ok(&x, g, 2, out);
	sess_close(&x);
	free_all(g, 2);

	es_tensor s[3] = { mk(ES_DT_FLOAT, 2, DIMS(3, 2), data),
			   mk(ES_DT_INT64, 2, DIMS(1, 1), I64S(3)),
			   mk(ES_DT_FLOAT, 2, DIMS(1, 2), (const float[]){ 7, 8 }) };
	open_named(&x, "err_scatternd", 1);
	expect_fail(&x, s, 3, ES_ERANGE, "ScatterND", "[-3, 2]");
	((int64_t *)s[1].data)[0] = -1;
	expect_ok(&x, s, 3, out);
	assert_true(((const float *)out[0].data)[4] == 7 && ((const float *)out[0].data)[5] == 8);
	sess_close(&x);
	free_all(s, 3);

	es_tensor ge[2] = { mk(ES_DT_FLOAT, 2, DIMS(3, 2), data),
			    mk(ES_DT_INT32, 2, DIMS(1, 2), (const int32_t[]){ 0, 3 }) };
	open_named(&x, "err_gather_elements", 1);
	expect_fail(&x, ge, 2, ES_ERANGE, "GatherElements", "indices[1] = 3");
	sess_close(&x);
	free_all(ge, 2);

	es_tensor se[3] = { mk(ES_DT_FLOAT, 2, DIMS(3, 2), data),
			    mk(ES_DT_INT64, 2, DIMS(1, 2), I64S(2, 0)),
			    mk(ES_DT_FLOAT, 2, DIMS(1, 2), NULL) };
	open_named(&x, "err_scatter_elements", 1);
	expect_fail(&x, se, 3, ES_ERANGE, "ScatterElements", "[-2, 1]");
	sess_close(&x);
	free_all(se, 3);
}

static void test_reshape_errors(void **state)
{
	(void)state;
	sess x;
	es_tensor out[MAX_IO];
	es_tensor in[2] = { mk(ES_DT_FLOAT, 2, DIMS(2, 3), NULL),
			    mk(ES_DT_INT64, 1, DIMS(2), I64S(4, 2)) };
	open_named(&x, "err_reshape", 1);
	expect_fail(&x, in, 2, ES_ESHAPE, "Reshape", "(6 elements)");
	memcpy(in[1].data, I64S(-1, -1), 16);
	expect_fail(&x, in, 2, ES_ESHAPE, "Reshape", "more than one -1");
	memcpy(in[1].data, I64S(-2, 3), 16);
	expect_fail(&x, in, 2, ES_ESHAPE, "Reshape", "-2");
	memcpy(in[1].data, I64S(-1, 4), 16);
	expect_fail(&x, in, 2, ES_ESHAPE, "Reshape", "cannot be inferred");
	memcpy(in[1].data, I64S(INT64_MAX, 4), 16);
	expect_fail(&x, in, 2, ES_ERANGE, "Reshape", NULL);
	es_tensor in3[2] = { in[0], mk(ES_DT_INT64, 1, DIMS(3), I64S(0, 0, 0)) };
	expect_fail(&x, in3, 2, ES_ESHAPE, "Reshape", "copies input dimension 2");
	memcpy(in[1].data, I64S(3, -1), 16);
	expect_ok(&x, in, 2, out);
	assert_int_equal(out[0].dims[0], 3);
	assert_int_equal(out[0].dims[1], 2);
	sess_close(&x);
	es_tensor_free_data(&in3[1]);
	free_all(in, 2);
}

static void test_size_overflow(void **state)
{
	(void)state;
	sess x;
	es_tensor out[MAX_IO];
	const int64_t big = (int64_t)1 << 40;

	es_tensor e[2] = { mk(ES_DT_FLOAT, 1, DIMS(1), NULL),
			   mk(ES_DT_INT64, 1, DIMS(2), I64S(big, big)) };
	open_named(&x, "err_expand", 1);
	expect_fail(&x, e, 2, ES_ERANGE, "Expand", "too large");
	memcpy(e[1].data, I64S(INT64_MAX, 2), 16);
	expect_fail(&x, e, 2, ES_ERANGE, "Expand", NULL);
	memcpy(e[1].data, I64S(-1, 2), 16);
	expect_fail(&x, e, 2, ES_EINVAL, "Expand", "negative");
#ifndef __SANITIZE_ADDRESS__ /* ASan aborts on such requests by default */
	/* representable but absurd (2^58 bytes): fails cleanly, never crashes */
	memcpy(e[1].data, I64S((int64_t)1 << 28, (int64_t)1 << 28), 16);
	{
		es_error err;
		int rc = sess_run(&x, e, 2, out, &err);
		assert_true(rc == ES_ENOMEM || rc == ES_ERANGE);
	}
#endif
	memcpy(e[1].data, I64S(2, 3), 16);
	expect_ok(&x, e, 2, out);
	assert_int_equal(es_tensor_numel(&out[0]), 6);
	sess_close(&x);
	free_all(e, 2);

	es_tensor c[1] = { mk(ES_DT_INT64, 1, DIMS(2), I64S((int64_t)1 << 62, 4)) };
	open_named(&x, "err_cos", 1);
	expect_fail(&x, c, 1, ES_ERANGE, "ConstantOfShape", "too large");
	memcpy(c[0].data, I64S(3, -1), 16);
	expect_fail(&x, c, 1, ES_EINVAL, "ConstantOfShape", "negative");
	sess_close(&x);
	free_all(c, 1);

	es_tensor t[2] = { mk(ES_DT_FLOAT, 2, DIMS(2, 2), NULL),
			   mk(ES_DT_INT64, 1, DIMS(2), I64S((int64_t)1 << 62, (int64_t)1 << 62)) };
	open_named(&x, "err_tile", 1);
	expect_fail(&x, t, 2, ES_ERANGE, "Tile", NULL);
	memcpy(t[1].data, I64S(-1, 1), 16);
	expect_fail(&x, t, 2, ES_EINVAL, "Tile", "negative");
	sess_close(&x);
	free_all(t, 2);

	es_tensor r[3] = { mk(ES_DT_INT64, 0, NULL, I64S(0)),
			   mk(ES_DT_INT64, 0, NULL, I64S(INT64_MAX)),
			   mk(ES_DT_INT64, 0, NULL, I64S(1)) };
	open_named(&x, "err_range", 1);
	expect_fail(&x, r, 3, ES_ERANGE, "Range", NULL);
	*(int64_t *)r[0].data = INT64_MIN;
	expect_fail(&x, r, 3, ES_ERANGE, "Range", "too many");
	*(int64_t *)r[2].data = 0;
	expect_fail(&x, r, 3, ES_EINVAL, "Range", "delta");
	*(int64_t *)r[0].data = INT64_MAX - 2;
	*(int64_t *)r[2].data = 2;
	expect_ok(&x, r, 3, out);
	assert_int_equal(out[0].dims[0], 1);
	assert_true(((const int64_t *)out[0].data)[0] == INT64_MAX - 2);
	*(int64_t *)r[0].data = INT64_MAX;
	*(int64_t *)r[1].data = INT64_MIN;
	*(int64_t *)r[2].data = INT64_MIN;
	expect_ok(&x, r, 3, out);
	assert_int_equal(out[0].dims[0], 2);
	assert_true(((const int64_t *)out[0].data)[1] == -1);
	sess_close(&x);
	free_all(r, 3);

	es_tensor rf[3] = { mk(ES_DT_FLOAT, 0, NULL, (const float[]){ 0 }),
			    mk(ES_DT_FLOAT, 0, NULL, (const float[]){ 1e30f }),
			    mk(ES_DT_FLOAT, 0, NULL, (const float[]){ 1e-30f }) };
	open_named(&x, "err_range_f", 1);
	expect_fail(&x, rf, 3, ES_ERANGE, "Range", "too many");
	*(float *)rf[2].data = 0;
	expect_fail(&x, rf, 3, ES_EINVAL, "Range", "delta");
	*(float *)rf[2].data = INFINITY;
	expect_fail(&x, rf, 3, ES_EINVAL, "Range", "finite");
	sess_close(&x);
	free_all(rf, 3);

	es_tensor o[3] = { mk(ES_DT_INT64, 1, DIMS(2), I64S(0, 1)),
			   mk(ES_DT_INT64, 0, NULL, I64S(0)),
			   mk(ES_DT_FLOAT, 1, DIMS(2), (const float[]){ 0, 1 }) };
	open_named(&x, "err_onehot", 1);
	expect_fail(&x, o, 3, ES_EINVAL, "OneHot", "depth");
	*(int64_t *)o[1].data = (int64_t)1 << 62;
	expect_fail(&x, o, 3, ES_ERANGE, "OneHot", "too large");
	sess_close(&x);
	free_all(o, 3);

	es_tensor p[2] = { mk(ES_DT_FLOAT, 2, DIMS(2, 2), NULL),
			   mk(ES_DT_INT64, 1, DIMS(4), I64S(-3, 0, 0, 0)) };
	open_named(&x, "err_pad", 1);
	expect_fail(&x, p, 2, ES_EINVAL, "Pad", "remove more");
	memcpy(p[1].data, I64S(INT64_MAX, 0, 1, 0), 32);
	expect_fail(&x, p, 2, ES_ERANGE, "Pad", "overflows");
	memcpy(p[1].data, I64S(1, 0, 0), 24);
	{
		es_tensor p3[2] = { p[0], mk(ES_DT_INT64, 1, DIMS(3), I64S(1, 0, 0)) };
		expect_fail(&x, p3, 2, ES_EINVAL, "Pad", "expected 4");
		es_tensor_free_data(&p3[1]);
	}
	sess_close(&x);
	free_all(p, 2);
}

static void test_shape_errors(void **state)
{
	(void)state;
	sess x;
	es_tensor out[MAX_IO];
	es_error err = { 0 };
	char path[4096];

	es_tensor sq[2] = { mk(ES_DT_FLOAT, 2, DIMS(1, 2), NULL), mk(ES_DT_INT64, 1, DIMS(1), I64S(1)) };
	open_named(&x, "err_squeeze", 1);
	expect_fail(&x, sq, 2, ES_ESHAPE, "Squeeze", "its size is 2");
	*(int64_t *)sq[1].data = 2;
	expect_fail(&x, sq, 2, ES_EINVAL, "Squeeze", "out of range");
	*(int64_t *)sq[1].data = -2;
	expect_ok(&x, sq, 2, out);
	assert_int_equal(out[0].ndim, 1);
	sess_close(&x);
	free_all(sq, 2);

	es_tensor us[2] = { mk(ES_DT_FLOAT, 4, DIMS(1, 2, 1, 2), NULL),
			    mk(ES_DT_INT64, 1, DIMS(5), I64S(0, 1, 2, 3, 4)) };
	open_named(&x, "err_unsqueeze", 1);
	expect_fail(&x, us, 2, ES_EUNSUPPORTED, "Unsqueeze", "rank 9");
	es_tensor us2[2] = { us[0], mk(ES_DT_INT64, 1, DIMS(2), I64S(0, -6)) };
	expect_fail(&x, us2, 2, ES_EINVAL, "Unsqueeze", "twice");
	es_tensor_free_data(&us2[1]);
	sess_close(&x);
	free_all(us, 2);

	es_tensor sp[1] = { mk(ES_DT_FLOAT, 1, DIMS(5), NULL) };
	open_named(&x, "err_split", 1);
	expect_fail(&x, sp, 1, ES_ESHAPE, "Split", "evenly");
	sess_close(&x);
	free_all(sp, 1);

	es_tensor cc[2] = { mk(ES_DT_FLOAT, 2, DIMS(2, 2), NULL), mk(ES_DT_FLOAT, 2, DIMS(3, 1), NULL) };
	open_named(&x, "err_concat", 1);
	expect_fail(&x, cc, 2, ES_ESHAPE, "Concat", "input 1 has shape [3,1]");
	sess_close(&x);
	free_all(cc, 2);

	es_tensor sl[5] = { mk(ES_DT_FLOAT, 2, DIMS(4, 4), NULL), mk(ES_DT_INT64, 1, DIMS(1), I64S(0)),
			    mk(ES_DT_INT64, 1, DIMS(1), I64S(4)), mk(ES_DT_INT64, 1, DIMS(1), I64S(0)),
			    mk(ES_DT_INT64, 1, DIMS(1), I64S(0)) };
	open_named(&x, "err_slice", 1);
	expect_fail(&x, sl, 5, ES_EINVAL, "Slice", "steps[0] is 0");
	*(int64_t *)sl[4].data = 1;
	*(int64_t *)sl[3].data = 2;
	expect_fail(&x, sl, 5, ES_EINVAL, "Slice", "out of range");
	*(int64_t *)sl[3].data = -1;
	*(int64_t *)sl[1].data = INT64_MIN;
	*(int64_t *)sl[2].data = INT64_MAX;
	expect_ok(&x, sl, 5, out);
	assert_int_equal(out[0].dims[1], 4);
	sess_close(&x);
	free_all(sl, 5);

	es_tensor cp[2] = { mk(ES_DT_FLOAT, 2, DIMS(2, 2), NULL),
			    mk(ES_DT_BOOL, 1, DIMS(3), (const uint8_t[]){ 1, 0, 1 }) };
	open_named(&x, "err_compress", 1);
	expect_fail(&x, cp, 2, ES_ERANGE, "Compress", "condition[2]");
	sess_close(&x);
	free_all(cp, 2);

	es_tensor ds[1] = { mk(ES_DT_FLOAT, 4, DIMS(1, 3, 2, 2), NULL) };
	open_named(&x, "err_depthtospace", 1);
	expect_fail(&x, ds, 1, ES_ESHAPE, "DepthToSpace", "not divisible");
	sess_close(&x);
	free_all(ds, 1);

	es_tensor dr[3] = { mk(ES_DT_FLOAT, 1, DIMS(2), (const float[]){ 1, 2 }),
			    mk(ES_DT_FLOAT, 0, NULL, (const float[]){ 0.5f }),
			    mk(ES_DT_BOOL, 0, NULL, (const uint8_t[]){ 1 }) };
	open_named(&x, "err_dropout_train", 1);
	expect_fail(&x, dr, 3, ES_EUNSUPPORTED, "Dropout", "training_mode");
	*(uint8_t *)dr[2].data = 0;
	expect_ok(&x, dr, 3, out);
	assert_true(((const float *)out[0].data)[1] == 2);
	sess_close(&x);
	free_all(dr, 3);

	es_tensor cs[2] = { mk(ES_DT_FLOAT, 2, DIMS(2, 2), NULL), mk(ES_DT_INT64, 0, NULL, I64S(5)) };
	open_named(&x, "err_cumsum_axis", 1);
	expect_fail(&x, cs, 2, ES_EINVAL, "CumSum", "axis=5");
	sess_close(&x);
	free_all(cs, 2);

	/* a bad attribute fails at load, naming node and attribute */
	int rc = sess_open(&x, path_of(path, sizeof(path), "err_transpose_perm.onnx"), false, 1, &err);
	assert_int_equal(rc, ES_EINVAL);
	assert_non_null(strstr(err.msg, "perm"));
	sess_close(&x);
}

/* ---- random shapes against reference loops ------------------------------- */

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint64_t rnd(void)
{
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 0x2545F4914F6CDD1Dull;
}

static int64_t irand(int64_t lo, int64_t hi)
{
	return lo + (int64_t)(rnd() % (uint64_t)(hi - lo + 1));
}

static es_tensor rand_f32(int ndim, const int64_t *dims)
{
	es_tensor t = mk(ES_DT_FLOAT, ndim, dims, NULL);
	float *p = t.data;
	for (int64_t i = 0; i < es_tensor_numel(&t); i++)
		p[i] = (float)irand(-1000, 1000) / 8.0f;
	return t;
}

/* Linear offset of coordinate c in a row-major tensor of dims. */
static int64_t offset_of(const int64_t *c, const int64_t *dims, int nd)
{
	int64_t off = 0;
	for (int d = 0; d < nd; d++)
		off = off * dims[d] + c[d];
	return off;
}

/* Advances coordinate c over dims; false after the last one. */
static bool next_coord(int64_t *c, const int64_t *dims, int nd)
{
	for (int d = nd - 1; d >= 0; d--) {
		if (++c[d] < dims[d])
			return true;
		c[d] = 0;
	}
	return false;
}

static void check_f32(const es_tensor *got, const float *want, int nd, const int64_t *dims,
		      const char *what)
{
	if (got->ndim != nd)
		fail_msg("%s: rank %d, expected %d", what, got->ndim, nd);
	for (int d = 0; d < nd; d++)
		if (got->dims[d] != dims[d])
			fail_msg("%s: dim %d is %lld, expected %lld", what, d,
				 (long long)got->dims[d], (long long)dims[d]);
	int64_t n = es_tensor_numel(got);
	for (int64_t i = 0; i < n; i++)
		if (((const float *)got->data)[i] != want[i])
			fail_msg("%s: element %lld is %g, expected %g", what, (long long)i,
				 ((const float *)got->data)[i], want[i]);
}

static void test_random_transpose(void **state)
{
	(void)state;
	static const struct {
		const char *model;
		int perm[3];
	} cases[] = {
		{ "rand_transpose_021", { 0, 2, 1 } }, { "rand_transpose_201", { 2, 0, 1 } },
		{ "rand_transpose_120", { 1, 2, 0 } }, { "rand_transpose_210", { 2, 1, 0 } },
	};
	for (size_t ci = 0; ci < sizeof(cases) / sizeof(cases[0]); ci++) {
		sess x;
		open_named(&x, cases[ci].model, 4);
		for (int it = 0; it < 12; it++) {
			int64_t dims[3];
			for (int d = 0; d < 3; d++)
				dims[d] = it == 0 ? 1 : it < 10 ? irand(1, 9) : irand(40, 90);
			if (it == 3)
				dims[1] = 1;
			es_tensor in = rand_f32(3, dims), out[MAX_IO];
			int64_t od[3], c[3] = { 0 }, ic[3];
			for (int d = 0; d < 3; d++)
				od[d] = dims[cases[ci].perm[d]];
			float *want = malloc((size_t)es_tensor_numel(&in) * sizeof(float));
			int64_t i = 0;
			do {
				for (int d = 0; d < 3; d++)
					ic[cases[ci].perm[d]] = c[d];
				want[i++] = ((const float *)in.data)[offset_of(ic, dims, 3)];
			} while (next_coord(c, od, 3));
			expect_ok(&x, &in, 1, out);
			check_f32(&out[0], want, 3, od, cases[ci].model);
			free(want);
			es_tensor_free_data(&in);
		}
		sess_close(&x);
	}

	/* 4-D uint8, perm [0,3,1,2] (NHWC -> NCHW) */
	sess x;
	open_named(&x, "rand_transpose_4d_u8", 3);
	for (int it = 0; it < 6; it++) {
		int64_t dims[4] = { irand(1, 3), irand(1, 40), irand(1, 40), irand(1, 17) };
		es_tensor in = mk(ES_DT_UINT8, 4, dims, NULL), out[MAX_IO];
		uint8_t *p = in.data;
		for (int64_t i = 0; i < es_tensor_numel(&in); i++)
			p[i] = (uint8_t)rnd();
		expect_ok(&x, &in, 1, out);
		int64_t c[4] = { 0 }, od[4] = { dims[0], dims[3], dims[1], dims[2] }, i = 0;
		do {
			int64_t ic[4] = { c[0], c[2], c[3], c[1] };
			if (((const uint8_t *)out[0].data)[i++] != p[offset_of(ic, dims, 4)])
				fail_msg("transpose u8: element %lld", (long long)(i - 1));
		} while (next_coord(c, od, 4));
		es_tensor_free_data(&in);
	}
	sess_close(&x);
}

/*
 * CPython's slice index adjustment, as an independent statement of the
 * Slice clamping rules, with the one place where the ONNX spec differs:
 * for a negative step a start still negative after adding the length
 * clamps to 0 (spec: "[0, dims-1] for negative stepping", as onnxruntime
 * does), where Python uses -1 (an empty slice). Returns the count.
 */
static int64_t py_slice(int64_t len, int64_t start, int64_t stop, int64_t step,
			int64_t *first)
{
	if (start < 0) {
		start += len;
		if (start < 0)
			start = step < 0 && len > 0 ? 0 : step < 0 ? -1 : 0;
	} else if (start >= len) {
		start = step < 0 ? len - 1 : len;
	}
	if (stop < 0) {
		stop += len;
		if (stop < 0)
			stop = step < 0 ? -1 : 0;
	} else if (stop >= len) {
		stop = step < 0 ? len - 1 : len;
	}
	*first = start;
	if (step < 0)
		return stop < start ? (start - stop - 1) / (-step) + 1 : 0;
	return start < stop ? (stop - start - 1) / step + 1 : 0;
}

static int64_t pick_pos(int64_t dim)
{
	switch (irand(0, 9)) {
	case 0: return INT64_MAX;
	case 1: return INT64_MIN;
	default: return irand(-dim - 3, dim + 3);
	}
}

static void test_random_slice(void **state)
{
	(void)state;
	sess x;
	open_named(&x, "rand_slice", 4);
	for (int it = 0; it < 300; it++) {
		int64_t dims[3];
		for (int d = 0; d < 3; d++)
			dims[d] = it < 290 ? irand(0, 7) : irand(50, 80);
		int64_t starts[3], ends[3], axes[3], steps[3];
		int perm[3] = { 0, 1, 2 };
		for (int d = 2; d > 0; d--) {
			int j = (int)irand(0, d), t = perm[d];
			perm[d] = perm[j];
			perm[j] = t;
		}
		for (int i = 0; i < 3; i++) {
			int64_t len = dims[perm[i]];
			axes[i] = irand(0, 1) ? perm[i] : perm[i] - 3;
			starts[i] = pick_pos(len);
			ends[i] = pick_pos(len);
			do
				steps[i] = irand(-3, 3);
			while (!steps[i]);
			if (it >= 290)
				steps[i] = 1 + (int64_t)(i == 0);
		}
		es_tensor in[5] = { rand_f32(3, dims), mk(ES_DT_INT64, 1, DIMS(3), starts),
				    mk(ES_DT_INT64, 1, DIMS(3), ends), mk(ES_DT_INT64, 1, DIMS(3), axes),
				    mk(ES_DT_INT64, 1, DIMS(3), steps) };
		es_tensor out[MAX_IO];
		int64_t first[3] = { 0, 0, 0 }, step[3] = { 1, 1, 1 }, od[3];
		memcpy(od, dims, sizeof(od));
		for (int i = 0; i < 3; i++) {
			int a = perm[i];
			od[a] = py_slice(dims[a], starts[i], ends[i], steps[i], &first[a]);
			step[a] = steps[i];
		}
		int64_t n = od[0] * od[1] * od[2];
		float *want = malloc((size_t)(n ? n : 1) * sizeof(float));
		if (n) {
			int64_t c[3] = { 0 }, ic[3], i = 0;
			do {
				for (int d = 0; d < 3; d++)
					ic[d] = first[d] + c[d] * step[d];
				want[i++] = ((const float *)in[0].data)[offset_of(ic, dims, 3)];
			} while (next_coord(c, od, 3));
		}
		expect_ok(&x, in, 5, out);
		check_f32(&out[0], want, 3, od, "slice");
		free(want);
		free_all(in, 5);
	}
	sess_close(&x);
}

/* numpy's pad index mapping, written as repeated reflection */
static int64_t ref_pad_src(int64_t j, int64_t n, const char *mode)
{
	if (!strcmp(mode, "edge"))
		return j < 0 ? 0 : j >= n ? n - 1 : j;
	if (!strcmp(mode, "wrap"))
		return ((j % n) + n) % n;
	if (n == 1)
		return 0;
	while (j < 0 || j >= n)
		j = j < 0 ? -j : 2 * (n - 1) - j;
	return j;
}

static void test_random_pad(void **state)
{
	(void)state;
	static const char *const modes[] = { "constant", "reflect", "edge", "wrap" };
	for (int mi = 0; mi < 4; mi++) {
		char name[64];
		sess x;
		snprintf(name, sizeof(name), "rand_pad_%s", modes[mi]);
		open_named(&x, name, 4);
		for (int it = 0; it < 60; it++) {
			int64_t dims[3], pads[6], od[3], crop[3], len[3], lead[3];
			for (int d = 0; d < 3; d++) {
				dims[d] = it < 55 ? irand(1, 6) : irand(30, 70);
				/* crop at most len-1 in total, pad up to 7 (or 2*dim) */
				int64_t pb = irand(-(dims[d] - 1), 7);
				int64_t left = dims[d] - 1 - (pb < 0 ? -pb : 0);
				int64_t pe = irand(-left, 7);
				pads[d] = pb;
				pads[d + 3] = pe;
				od[d] = dims[d] + pb + pe;
				crop[d] = pb < 0 ? -pb : 0;
				lead[d] = pb > 0 ? pb : 0;
				len[d] = dims[d] - crop[d] - (pe < 0 ? -pe : 0);
			}
			float value = (float)irand(-9, 9);
			es_tensor in[3] = { rand_f32(3, dims), mk(ES_DT_INT64, 1, DIMS(6), pads),
					    mk(ES_DT_FLOAT, 0, NULL, &value) };
			es_tensor out[MAX_IO];
			int64_t n = od[0] * od[1] * od[2], c[3] = { 0 }, i = 0;
			float *want = malloc((size_t)n * sizeof(float));
			do {
				int64_t ic[3];
				bool is_value = false;
				for (int d = 0; d < 3; d++) {
					int64_t j = c[d] - lead[d];
					if (j < 0 || j >= len[d]) {
						if (mi == 0)
							is_value = true;
						else
							j = ref_pad_src(j, len[d], modes[mi]);
					}
					ic[d] = crop[d] + j;
				}
				want[i++] = is_value ? value :
					    ((const float *)in[0].data)[offset_of(ic, dims, 3)];
			} while (next_coord(c, od, 3));
			expect_ok(&x, in, 3, out);
			check_f32(&out[0], want, 3, od, name);
			free(want);
			free_all(in, 3);
		}
		sess_close(&x);
	}
}

static void test_random_gather_concat_tile_expand(void **state)
{
	(void)state;
	sess g, c, t, e;
	open_named(&g, "rand_gather", 4);
	open_named(&c, "rand_concat", 4);
	open_named(&t, "rand_tile", 4);
	open_named(&e, "rand_expand", 4);
	for (int it = 0; it < 40; it++) {
		bool big = it >= 36;
		int64_t dims[3] = { irand(1, big ? 40 : 5), irand(1, big ? 60 : 5),
				    irand(1, big ? 50 : 5) };
		es_tensor x = rand_f32(3, dims), out[MAX_IO];
		const float *xs = x.data;

		/* Gather axis 1 */
		int64_t ni = irand(0, big ? 300 : 6);
		es_tensor idx = mk(ES_DT_INT64, 1, &ni, NULL);
		for (int64_t i = 0; i < ni; i++)
			((int64_t *)idx.data)[i] = irand(-dims[1], dims[1] - 1);
		es_tensor gin[2] = { x, idx };
		int64_t god[3] = { dims[0], ni, dims[2] }, cc[3] = { 0 }, k = 0;
		float *want = malloc((size_t)(dims[0] * (ni ? ni : 1) * dims[2]) * sizeof(float));
		if (ni) {
			do {
				int64_t v = ((int64_t *)idx.data)[cc[1]];
				int64_t ic[3] = { cc[0], v < 0 ? v + dims[1] : v, cc[2] };
				want[k++] = xs[offset_of(ic, dims, 3)];
			} while (next_coord(cc, god, 3));
		}
		expect_ok(&g, gin, 2, out);
		check_f32(&out[0], want, 3, god, "gather");
		free(want);
		es_tensor_free_data(&idx);

		/* Concat axis 2 with a second tensor [a, b, e] */
		int64_t zd[3] = { dims[0], dims[1], irand(0, big ? 30 : 4) };
		es_tensor z = rand_f32(3, zd);
		es_tensor cin[2] = { x, z };
		int64_t cod[3] = { dims[0], dims[1], dims[2] + zd[2] };
		want = malloc((size_t)(cod[0] * cod[1] * cod[2]) * sizeof(float));
		memset(cc, 0, sizeof(cc));
		k = 0;
		do {
			int64_t ic[3] = { cc[0], cc[1], cc[2] };
			if (cc[2] < dims[2]) {
				want[k++] = xs[offset_of(ic, dims, 3)];
			} else {
				ic[2] -= dims[2];
				want[k++] = ((const float *)z.data)[offset_of(ic, zd, 3)];
			}
		} while (next_coord(cc, cod, 3));
		expect_ok(&c, cin, 2, out);
		check_f32(&out[0], want, 3, cod, "concat");
		free(want);
		es_tensor_free_data(&z);

		/* Tile */
		int64_t reps[3] = { irand(0, 3), irand(1, 3), irand(1, big ? 2 : 4) };
		es_tensor tin[2] = { x, mk(ES_DT_INT64, 1, DIMS(3), reps) };
		int64_t tod[3] = { dims[0] * reps[0], dims[1] * reps[1], dims[2] * reps[2] };
		int64_t tn = tod[0] * tod[1] * tod[2];
		want = malloc((size_t)(tn ? tn : 1) * sizeof(float));
		memset(cc, 0, sizeof(cc));
		k = 0;
		if (tn) {
			do {
				int64_t ic[3] = { cc[0] % dims[0], cc[1] % dims[1], cc[2] % dims[2] };
				want[k++] = xs[offset_of(ic, dims, 3)];
			} while (next_coord(cc, tod, 3));
		}
		expect_ok(&t, tin, 2, out);
		check_f32(&out[0], want, 3, tod, "tile");
		free(want);
		es_tensor_free_data(&tin[1]);
		es_tensor_free_data(&x);

		/* Expand: some input axes of size 1 broadcast, shape may say 1
		 * where the input is larger */
		int64_t xd[3], shp[3], eod[3];
		for (int d = 0; d < 3; d++) {
			int64_t full = irand(1, big ? 60 : 5);
			switch (irand(0, 2)) {
			case 0: xd[d] = 1; shp[d] = full; break;
			case 1: xd[d] = full; shp[d] = 1; break;
			default: xd[d] = full; shp[d] = full; break;
			}
			eod[d] = full;
		}
		es_tensor ex = rand_f32(3, xd);
		es_tensor ein[2] = { ex, mk(ES_DT_INT64, 1, DIMS(3), shp) };
		want = malloc((size_t)(eod[0] * eod[1] * eod[2]) * sizeof(float));
		memset(cc, 0, sizeof(cc));
		k = 0;
		do {
			int64_t ic[3];
			for (int d = 0; d < 3; d++)
				ic[d] = xd[d] == 1 ? 0 : cc[d];
			want[k++] = ((const float *)ex.data)[offset_of(ic, xd, 3)];
		} while (next_coord(cc, eod, 3));
		expect_ok(&e, ein, 2, out);
		check_f32(&out[0], want, 3, eod, "expand");
		free(want);
		free_all(ein, 2);
	}
	sess_close(&g);
	sess_close(&c);
	sess_close(&t);
	sess_close(&e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_golden),
		cmocka_unit_test(test_gather_out_of_range),
		cmocka_unit_test(test_nd_and_elements_out_of_range),
		cmocka_unit_test(test_reshape_errors),
		cmocka_unit_test(test_size_overflow),
		cmocka_unit_test(test_shape_errors),
		cmocka_unit_test(test_random_transpose),
		cmocka_unit_test(test_random_slice),
		cmocka_unit_test(test_random_pad),
		cmocka_unit_test(test_random_gather_concat_tile_expand),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
