/* Executor: dynamic shapes, input checks, profiling, and no allocation in a
 * steady-state run. Every malloc family call made by edgeserve's own code is
 * counted through the linker's --wrap (see tests/CMakeLists.txt). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "edgeserve/engine.h"

/* ---- allocation counting ------------------------------------------------- */
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
int __real_posix_memalign(void **p, size_t a, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t m);
void *__wrap_realloc(void *p, size_t n);
int __wrap_posix_memalign(void **p, size_t a, size_t n);

static unsigned long n_allocs;

void *__wrap_malloc(size_t n) { n_allocs++; return __real_malloc(n); }
void *__wrap_calloc(size_t n, size_t m) { n_allocs++; return __real_calloc(n, m); }
void *__wrap_realloc(void *p, size_t n) { n_allocs++; return __real_realloc(p, n); }
int __wrap_posix_memalign(void **p, size_t a, size_t n) { n_allocs++; return __real_posix_memalign(p, a, n); }

static char path_buf[4096];

static const char *example(const char *rel)
{
	snprintf(path_buf, sizeof(path_buf), "%s/../../examples/models/%s", ES_TEST_DATA_DIR, rel);
	return path_buf;
}

static es_model *load(const char *path)
{
	es_model *m = NULL;
	es_error err = { 0 };
	if (es_model_load(path, NULL, &m, &err))
		fail_msg("load %s: %s", path, err.msg);
	return m;
}

static void fill(es_tensor *t, float *buf, int64_t rows, int64_t cols, float seed)
{
	t->dtype = ES_DT_FLOAT;
	t->ndim = 2;
	t->dims[0] = rows;
	t->dims[1] = cols;
	t->data = buf;
	t->nbytes = (size_t)(rows * cols) * sizeof(float);
	for (int64_t i = 0; i < rows * cols; i++)
		buf[i] = seed + 0.37f * (float)(i % 7) - 0.11f * (float)(i % 3);
}

/* Runs a model and returns the number of allocations made by the runs
 * after the first two (which may set up pools and primitive caches). */
static unsigned long steady_allocs(const char *path, int64_t rows, int64_t cols)
{
	unsigned long at_start = n_allocs;
	es_model *m = load(path);
	/* the counter sees the engine's allocations: loading makes some */
	assert_true(n_allocs > at_start);
	es_session *s = NULL;
	es_error err = { 0 };
	es_session_options opt = { .threads = 1 };
	assert_int_equal(es_session_create(m, &opt, &s, &err), 0);
	float buf[64 * 8];
	es_tensor in, out[4];
	fill(&in, buf, rows, cols, 0.5f);
	for (int i = 0; i < 2; i++)
		assert_int_equal(es_session_run(s, &in, 1, out, &err), 0);
	unsigned long before = n_allocs;
	for (int i = 0; i < 20; i++)
		assert_int_equal(es_session_run(s, &in, 1, out, &err), 0);
	unsigned long made = n_allocs - before;
	es_session_destroy(s);
	es_model_release(m);
	return made;
}

static void test_steady_state_allocates_nothing(void **state)
{
	(void)state;
	assert_int_equal(steady_allocs(example("classifier/1/model.onnx"), 8, 4), 0);
	assert_int_equal(steady_allocs(example("scaler/1/model.onnx"), 5, 8), 0);
}

static void test_dynamic_batch_rows_independent(void **state)
{
	(void)state;
	es_model *m = load(example("classifier/2/model.onnx"));
	es_session *s = NULL;
	es_error err = { 0 };
	assert_int_equal(es_session_create(m, NULL, &s, &err), 0);
	float batch[5 * 4], one[4], expect[5][3];
	es_tensor in, out;
	fill(&in, batch, 5, 4, -0.25f);
	assert_int_equal(es_session_run(s, &in, 1, &out, &err), 0);
	assert_int_equal(out.ndim, 2);
	assert_int_equal(out.dims[0], 5);
	assert_int_equal(out.dims[1], 3);
	memcpy(expect, out.data, sizeof(expect));
	/* each row alone gives the same probabilities, and they sum to 1 */
	for (int r = 0; r < 5; r++) {
		es_tensor row = in;
		memcpy(one, batch + r * 4, sizeof(one));
		row.dims[0] = 1;
		row.data = one;
		row.nbytes = sizeof(one);
		assert_int_equal(es_session_run(s, &row, 1, &out, &err), 0);
		assert_int_equal(out.dims[0], 1);
		const float *p = out.data;
		float sum = 0;
		for (int c = 0; c < 3; c++) {
			assert_float_equal(p[c], expect[r][c], 1e-6);
			sum += p[c];
		}
		assert_float_equal(sum, 1.0, 1e-5);
	}
	es_session_destroy(s);
	es_model_release(m);
}

static void test_bad_inputs_are_named(void **state)
{
	(void)state;
	es_model *m = load(example("classifier/1/model.onnx"));
	es_session *s = NULL;
	es_error err = { 0 };
	assert_int_equal(es_session_create(m, NULL, &s, &err), 0);
	float buf[12];
	es_tensor in, out;

	fill(&in, buf, 3, 4, 0);
	in.dtype = ES_DT_INT32;
	assert_int_equal(es_session_run(s, &in, 1, &out, &err), ES_ETYPE);
	assert_non_null(strstr(err.msg, "'input'"));
	assert_non_null(strstr(err.msg, "float"));

	fill(&in, buf, 4, 3, 0); /* second dim must be 4 */
	assert_int_equal(es_session_run(s, &in, 1, &out, &err), ES_ESHAPE);
	assert_non_null(strstr(err.msg, "dimension 1 must be 4, got 3"));

	fill(&in, buf, 3, 4, 0);
	in.ndim = 3;
	in.dims[2] = 1;
	assert_int_equal(es_session_run(s, &in, 1, &out, &err), ES_ESHAPE);
	assert_non_null(strstr(err.msg, "rank"));

	fill(&in, buf, 3, 4, 0);
	in.nbytes = 8;
	assert_int_equal(es_session_run(s, &in, 1, &out, &err), ES_ESHAPE);

	fill(&in, buf, 3, 4, 0);
	in.dims[0] = INT64_MAX / 2;
	assert_int_equal(es_session_run(s, &in, 1, &out, &err), ES_ERANGE);

	assert_int_equal(es_session_run(s, &in, 2, &out, &err), ES_EINVAL);

	/* the session still works afterwards */
	fill(&in, buf, 3, 4, 0);
	assert_int_equal(es_session_run(s, &in, 1, &out, &err), 0);
	es_session_destroy(s);
	es_model_release(m);
}

static void test_profile_counts_calls(void **state)
{
	(void)state;
	/* as written: the optimizer passes may fuse nodes (Gemm + Relu) */
	es_model_options no = { .no_optimize = true };
	es_model *m = NULL;
	es_error err = { 0 };
	if (es_model_load(example("classifier/1/model.onnx"), &no, &m, &err))
		fail_msg("load: %s", err.msg);
	es_session *s = NULL;
	es_session_options opt = { .threads = 1, .profile = true };
	assert_int_equal(es_session_create(m, &opt, &s, &err), 0);
	float buf[8];
	es_tensor in, out;
	fill(&in, buf, 2, 4, 1);
	for (int i = 0; i < 3; i++)
		assert_int_equal(es_session_run(s, &in, 1, &out, &err), 0);
	const es_node_profile *p;
	size_t n = es_session_profile(s, &p);
	assert_int_equal(n, 4);
	assert_string_equal(p[0].name, "fc1");
	assert_string_equal(p[0].op_type, "Gemm");
	for (size_t i = 0; i < n; i++)
		assert_int_equal(p[i].calls, 3);
	es_session_profile_reset(s);
	n = es_session_profile(s, &p);
	assert_int_equal(p[0].calls, 0);
	es_session_destroy(s);
	es_model_release(m);
}

/* The optimizer report: one entry per pass that ran, node counts chained
 * pass to pass and ending at the model's node count; none without the
 * optimizer. */
static void test_optimizer_report(void **state)
{
	(void)state;
	es_model *m = load(ES_TEST_DATA_DIR "/alloc/cnn.onnx");
	size_t n = es_model_opt_passes(m);
	assert_true(n >= 1);
	es_opt_pass_info p, prev;
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(es_model_opt_pass(m, i, &p), 0);
		assert_non_null(p.name);
		assert_true(p.name[0] != '\0');
		assert_true(p.nodes_before > 0 && p.nodes_after > 0);
		assert_true(p.changes >= 0 && p.ms >= 0);
		if (i)
			assert_int_equal(p.nodes_before, prev.nodes_after);
		prev = p;
	}
	assert_int_equal((size_t)prev.nodes_after, es_model_num_nodes(m));
	assert_int_equal(es_model_opt_pass(m, n, &p), ES_ERANGE);
	es_model_release(m);

	es_model_options no = { .no_optimize = true };
	es_error err = { 0 };
	assert_int_equal(es_model_load(ES_TEST_DATA_DIR "/alloc/cnn.onnx", &no, &m, &err), 0);
	assert_int_equal(es_model_opt_passes(m), 0);
	assert_int_equal(es_model_opt_pass(m, 0, &p), ES_ERANGE);
	es_model_release(m);
}

/* Runs cnn.onnx (tests/data/alloc) on a [1,3,hw,hw] input with `threads`
 * threads and copies the 10 outputs to y. */
static void run_cnn(int threads, int64_t hw, float y[10])
{
	es_model *m = load(ES_TEST_DATA_DIR "/alloc/cnn.onnx");
	es_session *s = NULL;
	es_error err = { 0 };
	es_session_options opt = { .threads = threads };
	assert_int_equal(es_session_create(m, &opt, &s, &err), 0);
	size_t numel = (size_t)(3 * hw * hw);
	float *x = malloc(numel * sizeof(float));
	assert_non_null(x);
	for (size_t i = 0; i < numel; i++)
		x[i] = (float)((i * 37) % 17) / 17.0f - 0.5f;
	es_tensor in = { .dtype = ES_DT_FLOAT, .ndim = 4, .dims = { 1, 3, hw, hw },
			 .data = x, .nbytes = numel * sizeof(float) };
	es_tensor out;
	for (int i = 0; i < 2; i++)
		if (es_session_run(s, &in, 1, &out, &err))
			fail_msg("cnn %d threads: %s", threads, err.msg);
	assert_int_equal(out.nbytes, 10 * sizeof(float));
	memcpy(y, out.data, 10 * sizeof(float));
	free(x);
	es_session_destroy(s);
	es_model_release(m);
}

/* Every node gets its own thread count (small ones one thread, large ones
 * the session's): the results do not depend on it, at sizes where a run
 * mixes both kinds of nodes and where all are small. */
static void test_thread_counts_same_results(void **state)
{
	(void)state;
	static const int64_t sizes[] = { 8, 32, 96 };
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		float one[10], two[10], four[10];
		run_cnn(1, sizes[i], one);
		run_cnn(2, sizes[i], two);
		run_cnn(4, sizes[i], four);
		for (int c = 0; c < 10; c++) {
			assert_float_equal(one[c], two[c], 1e-5);
			assert_float_equal(one[c], four[c], 1e-5);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_steady_state_allocates_nothing),
		cmocka_unit_test(test_dynamic_batch_rows_independent),
		cmocka_unit_test(test_bad_inputs_are_named),
		cmocka_unit_test(test_profile_counts_calls),
		cmocka_unit_test(test_optimizer_report),
		cmocka_unit_test(test_thread_counts_same_results),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
