/*
 * The executor's static memory plans (exec/session.c): one arena per
 * input-shape signature, reused on the same shapes, a new plan for new
 * shapes, at most ES_EXEC_MAX_PLANS of them, a safe fallback to the pool
 * when a run asks for something its plan did not record (a data-dependent
 * output size), no two buffers live at the same time sharing bytes, and
 * outputs equal to a run on the pool alone.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "edgeserve/engine.h"
#include "engine/exec/exec.h"
#include "support/graph_builder.h"

#define MAX_BUFS 4096

static es_exec_memory_info info_of(const es_session *s)
{
	es_exec_memory_info mi;
	es_session_memory_info(s, &mi);
	return mi;
}

/*
 * Walks the plan the last run of s used and fails when two buffers whose
 * lifetimes meet share a byte, or a buffer leaves the arena.
 */
static void assert_no_live_overlap(const es_session *s)
{
	es_exec_plan_buffer *b = calloc(MAX_BUFS, sizeof(*b));
	assert_non_null(b);
	size_t n = es_session_plan_buffers(s, b, MAX_BUFS);
	es_exec_memory_info mi = info_of(s);
	assert_true(n > 0);
	assert_true(n <= MAX_BUFS);
	assert_int_equal(n, mi.buffers);
	for (size_t i = 0; i < n; i++) {
		assert_true(b[i].first_node <= b[i].last_node);
		assert_true(b[i].offset % 64 == 0);
		assert_true(b[i].offset + b[i].bytes <= mi.arena_bytes);
		assert_true((uintptr_t)b[i].data % 64 == 0);
		for (size_t j = i + 1; j < n; j++) {
			bool live_together = b[i].first_node <= b[j].last_node &&
					     b[j].first_node <= b[i].last_node;
			if (!live_together || !b[i].bytes || !b[j].bytes)
				continue;
			bool disjoint = b[i].offset + b[i].bytes <= b[j].offset ||
					b[j].offset + b[j].bytes <= b[i].offset;
			if (!disjoint)
				fail_msg("buffers %zu [%zu, +%zu) nodes %d..%d and %zu [%zu, +%zu) nodes %d..%d overlap",
					 i, b[i].offset, b[i].bytes, b[i].first_node, b[i].last_node,
					 j, b[j].offset, b[j].bytes, b[j].first_node, b[j].last_node);
		}
	}
	/* sharing: the arena never needs more than every buffer side by side */
	assert_true(mi.arena_bytes <= mi.buffer_bytes);
	free(b);
}

/* ---- a small dynamic-batch model -------------------------------------------- */

/*
 * x [B, 16] -> Relu -> Add c -> Sigmoid -> Transpose -> Relu ->
 * Transpose -> Mul x -> Concat with the Add result -> output [B, 32],
 * plus a second output (the Sigmoid). In-place candidates, a transpose
 * that needs a new buffer, a value read by two nodes, two outputs.
 */
static es_model *chain_model(void)
{
	es_graph *g = gb_graph(17);
	const int64_t in_dims[] = { -1, 16 }, c_dims[] = { 16 };
	int x = gb_input(g, "x", ES_DT_FLOAT, 2, in_dims);
	float cv[16];
	for (int i = 0; i < 16; i++)
		cv[i] = 0.25f * (float)(i % 5) - 0.5f;
	int c = gb_const_f32(g, "c", 1, c_dims, cv);
	int r1 = gb_value(g, "r1", ES_DT_FLOAT), a1 = gb_value(g, "a1", ES_DT_FLOAT);
	int s1 = gb_value(g, "s1", ES_DT_FLOAT), t1 = gb_value(g, "t1", ES_DT_FLOAT);
	int r2 = gb_value(g, "r2", ES_DT_FLOAT), t2 = gb_value(g, "t2", ES_DT_FLOAT);
	int m1 = gb_value(g, "m1", ES_DT_FLOAT), y = gb_value(g, "y", ES_DT_FLOAT);
	gb_node(g, "Relu", "relu1", (int[]){ x }, 1, (int[]){ r1 }, 1);
	gb_node(g, "Add", "add", (int[]){ r1, c }, 2, (int[]){ a1 }, 1);
	gb_node(g, "Sigmoid", "sig", (int[]){ a1 }, 1, (int[]){ s1 }, 1);
	int n = gb_node(g, "Transpose", "tr1", (int[]){ s1 }, 1, (int[]){ t1 }, 1);
	gb_attr_ints(g, n, "perm", (const int64_t[]){ 1, 0 }, 2);
	gb_node(g, "Relu", "relu2", (int[]){ t1 }, 1, (int[]){ r2 }, 1);
	n = gb_node(g, "Transpose", "tr2", (int[]){ r2 }, 1, (int[]){ t2 }, 1);
	gb_attr_ints(g, n, "perm", (const int64_t[]){ 1, 0 }, 2);
	gb_node(g, "Mul", "mul", (int[]){ t2, x }, 2, (int[]){ m1 }, 1);
	n = gb_node(g, "Concat", "cat", (int[]){ m1, a1 }, 2, (int[]){ y }, 1);
	gb_attr_int(g, n, "axis", 1);
	gb_output(g, y);
	gb_output(g, s1);
	return gb_model(g, true);
}

static es_tensor batch_input(int64_t batch, float *buf)
{
	es_tensor t = { .dtype = ES_DT_FLOAT, .ndim = 2, .dims = { batch, 16 },
			.data = buf, .nbytes = (size_t)batch * 16 * sizeof(float) };
	for (int64_t i = 0; i < batch * 16; i++)
		buf[i] = (float)((i * 29) % 23 - 11) / 7.0f;
	return t;
}

/* Runs s and a pool-only session p on the same input and compares every
 * output byte for byte (the same kernels on the same data). */
static void run_both(es_session *s, es_session *p, const es_tensor *in, size_t n_in,
		     size_t n_out)
{
	es_tensor a[4], b[4];
	es_error err = { 0 };
	assert_true(n_out <= 4);
	if (es_session_run(s, in, n_in, a, &err))
		fail_msg("planned run: %s", err.msg);
	if (es_session_run(p, in, n_in, b, &err))
		fail_msg("pool run: %s", err.msg);
	for (size_t o = 0; o < n_out; o++) {
		assert_int_equal(a[o].dtype, b[o].dtype);
		assert_int_equal(a[o].ndim, b[o].ndim);
		assert_int_equal(a[o].nbytes, b[o].nbytes);
		assert_memory_equal(a[o].dims, b[o].dims, (size_t)a[o].ndim * sizeof(int64_t));
		if (a[o].nbytes)
			assert_memory_equal(a[o].data, b[o].data, a[o].nbytes);
	}
}

static void sessions(es_model *m, int threads, es_session **s, es_session **p)
{
	es_error err = { 0 };
	es_session_options opts = { .threads = threads };
	assert_int_equal(es_session_create(m, &opts, s, &err), 0);
	assert_int_equal(es_session_create(m, &opts, p, &err), 0);
	es_exec_set_planning(*p, false);
}

/* ---- tests --------------------------------------------------------------------- */

static void test_same_shapes_reuse_the_plan(void **state)
{
	(void)state;
	es_model *m = chain_model();
	es_session *s, *p;
	sessions(m, 1, &s, &p);
	float buf[8 * 16];
	es_tensor in = batch_input(8, buf);

	/* the first run records, from the pool */
	run_both(s, p, &in, 1, 2);
	es_exec_memory_info mi = info_of(s);
	assert_false(mi.last_run_planned);
	assert_int_equal(mi.plans, 1);
	assert_int_equal(mi.plans_built, 1);
	for (int i = 0; i < 5; i++) {
		run_both(s, p, &in, 1, 2);
		mi = info_of(s);
		assert_true(mi.last_run_planned);
		assert_int_equal(mi.plans_built, 1);
		assert_int_equal(mi.plan_misses, 0);
		/* planned runs give the pool back */
		assert_int_equal(mi.pool_bytes, 0);
	}
	assert_true(mi.arena_bytes > 0);
	assert_true(mi.recorded_pool_bytes > 0);
	assert_true(mi.arena_bytes <= mi.recorded_pool_bytes);
	assert_no_live_overlap(s);
	/* the pool-only session never planned */
	es_exec_memory_info pi = info_of(p);
	assert_false(pi.last_run_planned);
	assert_int_equal(pi.plans, 0);
	assert_int_equal(pi.plans_built, 0);
	es_session_destroy(s);
	es_session_destroy(p);
	es_model_release(m);
}

static void test_new_signature_new_plan(void **state)
{
	(void)state;
	es_model *m = chain_model();
	es_session *s, *p;
	sessions(m, 1, &s, &p);
	float b2[2 * 16], b5[5 * 16];
	es_tensor in2 = batch_input(2, b2), in5 = batch_input(5, b5);

	run_both(s, p, &in2, 1, 2);
	run_both(s, p, &in2, 1, 2);
	size_t arena2 = info_of(s).arena_bytes;
	run_both(s, p, &in5, 1, 2); /* records the second signature */
	es_exec_memory_info mi = info_of(s);
	assert_false(mi.last_run_planned);
	assert_int_equal(mi.plans, 2);
	assert_int_equal(mi.plans_built, 2);
	run_both(s, p, &in5, 1, 2);
	mi = info_of(s);
	assert_true(mi.last_run_planned);
	assert_true(mi.arena_bytes > arena2);
	assert_no_live_overlap(s);
	/* back to the first: its plan is still there */
	run_both(s, p, &in2, 1, 2);
	mi = info_of(s);
	assert_true(mi.last_run_planned);
	assert_int_equal(mi.arena_bytes, arena2);
	assert_int_equal(mi.plans_built, 2);
	assert_int_equal(mi.plan_misses, 0);
	es_session_destroy(s);
	es_session_destroy(p);
	es_model_release(m);
}

static void test_plans_bounded_lru(void **state)
{
	(void)state;
	es_model *m = chain_model();
	es_session *s, *p;
	sessions(m, 1, &s, &p);
	float buf[16 * 16];
	const int n_sig = ES_EXEC_MAX_PLANS + 2;

	/* every signature twice: recorded, then planned */
	for (int b = 1; b <= n_sig; b++) {
		es_tensor in = batch_input(b, buf);
		run_both(s, p, &in, 1, 2);
		run_both(s, p, &in, 1, 2);
		es_exec_memory_info mi = info_of(s);
		assert_true(mi.last_run_planned);
		assert_true(mi.plans <= ES_EXEC_MAX_PLANS);
		assert_int_equal(mi.plans_built, (uint64_t)b);
	}
	assert_int_equal(info_of(s).plans, ES_EXEC_MAX_PLANS);
	/* the most recent signature is held ... */
	es_tensor last = batch_input(n_sig, buf);
	run_both(s, p, &last, 1, 2);
	assert_true(info_of(s).last_run_planned);
	assert_int_equal(info_of(s).plans_built, (uint64_t)n_sig);
	/* ... the least recently used was dropped: recorded again */
	es_tensor first = batch_input(1, buf);
	run_both(s, p, &first, 1, 2);
	es_exec_memory_info mi = info_of(s);
	assert_false(mi.last_run_planned);
	assert_int_equal(mi.plans_built, (uint64_t)n_sig + 1);
	assert_int_equal(mi.plans, ES_EXEC_MAX_PLANS);
	run_both(s, p, &first, 1, 2);
	assert_true(info_of(s).last_run_planned);
	assert_no_live_overlap(s);
	es_session_destroy(s);
	es_session_destroy(p);
	es_model_release(m);
}

/* ---- a data-dependent model: NonZero ------------------------------------------- */

/* x [8] -> NonZero -> [1, k] int64 -> Cast float -> Neg -> y; and x -> Relu. */
static es_model *nonzero_model(void)
{
	es_graph *g = gb_graph(17);
	const int64_t in_dims[] = { 8 };
	int x = gb_input(g, "x", ES_DT_FLOAT, 1, in_dims);
	int nz = gb_value(g, "nz", ES_DT_INT64), f = gb_value(g, "f", ES_DT_FLOAT);
	int y = gb_value(g, "y", ES_DT_FLOAT), r = gb_value(g, "r", ES_DT_FLOAT);
	gb_node(g, "Relu", "relu", (int[]){ x }, 1, (int[]){ r }, 1);
	gb_node(g, "NonZero", "nonzero", (int[]){ x }, 1, (int[]){ nz }, 1);
	int n = gb_node(g, "Cast", "cast", (int[]){ nz }, 1, (int[]){ f }, 1);
	gb_attr_int(g, n, "to", ES_DT_FLOAT);
	gb_node(g, "Neg", "neg", (int[]){ f }, 1, (int[]){ y }, 1);
	gb_output(g, y);
	gb_output(g, r);
	return gb_model(g, true);
}

/* Runs with `count` non-zeros among the 8 inputs and checks y lists their
 * negated positions. */
static void run_nonzero(es_session *s, int count)
{
	float x[8] = { 0 };
	for (int i = 0; i < count; i++)
		x[7 - i] = 1.0f + (float)i;
	es_tensor in = { .dtype = ES_DT_FLOAT, .ndim = 1, .dims = { 8 }, .data = x,
			 .nbytes = sizeof(x) };
	es_tensor out[2];
	es_error err = { 0 };
	if (es_session_run(s, &in, 1, out, &err))
		fail_msg("run: %s", err.msg);
	assert_int_equal(out[0].ndim, 2);
	assert_int_equal(out[0].dims[0], 1);
	assert_int_equal(out[0].dims[1], count);
	const float *y = out[0].data;
	for (int i = 0; i < count; i++)
		assert_true(y[i] == -(float)(8 - count + i));
	const float *r = out[1].data;
	for (int i = 0; i < 8; i++)
		assert_true(r[i] == x[i]);
}

static void test_data_dependent_falls_back(void **state)
{
	(void)state;
	es_model *m = nonzero_model();
	es_session *s = NULL;
	es_error err = { 0 };
	es_session_options opts = { .threads = 1 };
	assert_int_equal(es_session_create(m, &opts, &s, &err), 0);

	run_nonzero(s, 3); /* records */
	run_nonzero(s, 3); /* planned */
	es_exec_memory_info mi = info_of(s);
	assert_true(mi.last_run_planned);
	assert_int_equal(mi.plan_misses, 0);
	/* same input shape, another output size: the plan does not hold */
	run_nonzero(s, 5);
	mi = info_of(s);
	assert_false(mi.last_run_planned);
	assert_int_equal(mi.plan_misses, 1);
	run_nonzero(s, 5); /* recorded again */
	run_nonzero(s, 5); /* planned */
	mi = info_of(s);
	assert_true(mi.last_run_planned);
	assert_int_equal(mi.plans_built, 2);
	run_nonzero(s, 2); /* the second miss: the signature stays on the pool */
	mi = info_of(s);
	assert_int_equal(mi.plan_misses, ES_EXEC_MAX_PLAN_MISSES);
	for (int i = 0; i < 4; i++) {
		run_nonzero(s, i % 2 ? 6 : 1);
		mi = info_of(s);
		assert_false(mi.last_run_planned);
		assert_int_equal(mi.plans_built, 2);
		assert_int_equal(mi.plan_misses, ES_EXEC_MAX_PLAN_MISSES);
	}
	es_session_destroy(s);
	es_model_release(m);
}

/* ---- real models ------------------------------------------------------------------ */

static void check_file_model(const char *file, int ndim, const int64_t *dims,
			     int threads)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/alloc/%s", ES_TEST_DATA_DIR, file);
	es_model *m = NULL;
	es_error err = { 0 };
	if (es_model_load(path, NULL, &m, &err))
		fail_msg("%s: %s", file, err.msg);
	es_session *s, *p;
	sessions(m, threads, &s, &p);
	es_tensor in = gb_rand_tensor(ndim, dims);
	for (int i = 0; i < 4; i++)
		run_both(s, p, &in, 1, es_model_num_outputs(m));
	es_exec_memory_info mi = info_of(s);
	assert_true(mi.last_run_planned);
	assert_int_equal(mi.plan_misses, 0);
	assert_true(mi.arena_bytes <= mi.recorded_pool_bytes);
	assert_no_live_overlap(s);
	print_message("%s, %d thread(s): arena %zu bytes, %zu buffers of %zu bytes, pool %zu bytes\n",
		      file, threads, mi.arena_bytes, mi.buffers, mi.buffer_bytes,
		      mi.recorded_pool_bytes);
	free(in.data);
	es_session_destroy(s);
	es_session_destroy(p);
	es_model_release(m);
}

static void test_cnn_planned_equals_pool(void **state)
{
	(void)state;
	static const int64_t dims[] = { 1, 3, 48, 48 };
	check_file_model("cnn.onnx", 4, dims, 1);
	check_file_model("cnn.onnx", 4, dims, 2);
}

static void test_encoder_planned_equals_pool(void **state)
{
	(void)state;
	static const int64_t dims[] = { 1, 16, 32 };
	check_file_model("encoder.onnx", 3, dims, 1);
	check_file_model("encoder.onnx", 3, dims, 2);
}

/* Turning plans off drops them at the next run; turning them on again
 * records anew. */
static void test_planning_switch(void **state)
{
	(void)state;
	es_model *m = chain_model();
	es_session *s, *p;
	sessions(m, 1, &s, &p);
	float buf[4 * 16];
	es_tensor in = batch_input(4, buf);
	run_both(s, p, &in, 1, 2);
	run_both(s, p, &in, 1, 2);
	assert_true(info_of(s).last_run_planned);
	es_exec_set_planning(s, false);
	run_both(s, p, &in, 1, 2);
	assert_false(info_of(s).last_run_planned);
	assert_int_equal(info_of(s).plans, 0);
	es_exec_set_planning(s, true);
	run_both(s, p, &in, 1, 2);
	run_both(s, p, &in, 1, 2);
	assert_true(info_of(s).last_run_planned);
	assert_int_equal(info_of(s).plans_built, 2);
	es_session_destroy(s);
	es_session_destroy(p);
	es_model_release(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_same_shapes_reuse_the_plan),
		cmocka_unit_test(test_new_signature_new_plan),
		cmocka_unit_test(test_plans_bounded_lru),
		cmocka_unit_test(test_data_dependent_falls_back),
		cmocka_unit_test(test_cnn_planned_equals_pool),
		cmocka_unit_test(test_encoder_planned_equals_pool),
		cmocka_unit_test(test_planning_switch),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
