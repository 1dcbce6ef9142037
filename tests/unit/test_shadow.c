/* Shadow inference below HTTP: mirrored runs compared with the primary's
 * outputs (tolerance, NaN, dtype, shape, output count, top-1 agreement),
 * their metrics, the divergence log and its rate limit, drops when the
 * low-priority queue is full, and the server log when no divergence log is
 * configured. Most tests hand es_shadow_take a request with outputs they
 * prepared and queue the copy with es_shadow_queue after the request is
 * gone, exactly as a device worker does around a primary's completion. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cJSON.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/clock.h"
#include "obs/log.h"
#include "obs/metrics.h"
#include "serving/serving.h"
#include "serving/serving_int.h"
#include "support/faulty_backend.h"
#include "support/serving_fixture.h"

/* ---- files -------------------------------------------------------------------------- */

/* The whole file as a NUL-ended string (caller frees). */
static char *read_all(const char *path)
{
	es_buf b = ES_BUF_INIT;
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	char buf[4096];
	size_t n;
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		assert_int_equal(es_buf_append(&b, buf, n), 0);
	fclose(f);
	assert_int_equal(es_buf_append(&b, "", 0), 0);
	return es_buf_steal(&b, NULL);
}

/* Parses every line of the file as a JSON object (the file is JSON lines);
 * returns how many, filling at most max. */
static size_t read_lines(const char *path, cJSON **out, size_t max)
{
	char *text = read_all(path);
	size_t n = 0;
	for (char *line = text, *nl; *line; line = nl + 1) {
		nl = strchr(line, '\n');
		assert_non_null(nl); /* every line ends, none is cut */
		*nl = '\0';
		cJSON *j = cJSON_Parse(line);
		if (!j)
			fail_msg("not a JSON line: %s", line);
		assert_true(cJSON_IsObject(j));
		if (n < max)
			out[n] = j;
		else
			cJSON_Delete(j);
		n++;
	}
	free(text);
	return n;
}

static void free_lines(cJSON **lines, size_t n)
{
	for (size_t i = 0; i < n; i++)
		cJSON_Delete(lines[i]);
}

static double num_field(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	if (!cJSON_IsNumber(v))
		fail_msg("field '%s' is not a number", key);
	return v->valuedouble;
}

static const char *str_field(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	if (!cJSON_IsString(v))
		fail_msg("field '%s' is not a string", key);
	return v->valuestring;
}

/* ---- fixture -------------------------------------------------------------------------- */

typedef struct fixture {
	es_test_server s; /* s.tmp holds the repository and the log */
	char base[300];   /* the repository of model "m" */
	char log_path[300];
} fixture;

/*
 * A server with one sequential device and model "m" holding versions 1
 * (y = x + 1) and 2 (y = x + shadow_src), shadow version 2, the divergence
 * log in the fixture's directory. Change fx->s.cfg before fx_start.
 */
static void fx_init(fixture *fx, int shadow_src)
{
	memset(fx, 0, sizeof(*fx));
	es_test_server_init(&fx->s, "es_shadow");
	snprintf(fx->base, sizeof(fx->base), "%s/m", fx->s.tmp);
	snprintf(fx->log_path, sizeof(fx->log_path), "%s/divergence.jsonl", fx->s.tmp);
	assert_int_equal(mkdir(fx->base, 0755), 0);
	es_test_publish(fx->base, 1, 1);
	es_test_publish(fx->base, 2, shadow_src);

	es_server_config *cfg = &fx->s.cfg;
	cfg->divergence_log = strdup(fx->log_path);
	cfg->divergence_log_per_s = 1000;
	es_device_config *d = &cfg->devices[0];
	d->streams = 1;
	d->threads_per_stream = 1;
	d->max_queue_size = 64;
	es_model_config *mc = es_test_cfg_driven_model(cfg, fx->base);
	mc->policy.kind = ES_POLICY_ALL;
	mc->shadow.enabled = true;
	mc->shadow.version = 2;
	mc->shadow.fraction_bp = 10000;
	mc->shadow.queue_size = 64;
	mc->shadow.atol = 1e-4;
	mc->shadow.rtol = 1e-3;
}

static void fx_start(fixture *fx)
{
	es_test_server_start(&fx->s, "m");
	assert_true(es_servable_ready(fx->s.m, 1));
	assert_true(es_servable_ready(fx->s.m, 2));
}

static es_version *acquire(fixture *fx, int64_t number)
{
	return es_test_acquire(fx->s.srv, "m", number);
}

/* ---- metrics -------------------------------------------------------------------------- */

static double counter(fixture *fx, const char *name, const char *const *labels,
		      const char *const *values)
{
	return es_test_metric(&fx->s, "counter", name, labels, values);
}

static double shadow_requests(fixture *fx, const char *result)
{
	static const char *const labels[] = { "model", "result", NULL };
	const char *values[] = { "m", result, NULL };
	return counter(fx, "edgeserve_shadow_requests_total", labels, values);
}

/* edgeserve_shadow_runs_total of the fixture's device for worker "stream"
 * or "idle". */
static double shadow_runs(fixture *fx, const char *worker)
{
	static const char *const labels[] = { "device", "worker", NULL };
	const char *values[] = { fx->s.cfg.devices[0].name, worker, NULL };
	return counter(fx, "edgeserve_shadow_runs_total", labels, values);
}

static double shadow_total(fixture *fx)
{
	return shadow_requests(fx, "compared") + shadow_requests(fx, "diverged") +
	       shadow_requests(fx, "dropped") + shadow_requests(fx, "failed");
}

static double divergent_outputs(fixture *fx, const char *output)
{
	static const char *const labels[] = { "model", "output", NULL };
	const char *values[] = { "m", output, NULL };
	return counter(fx, "edgeserve_shadow_divergent_outputs_total", labels, values);
}

static double top1_disagreements(fixture *fx)
{
	static const char *const labels[] = { "model", NULL };
	const char *values[] = { "m", NULL };
	return counter(fx, "edgeserve_shadow_top1_disagreements_total", labels, values);
}

static double suppressed(fixture *fx)
{
	return counter(fx, "edgeserve_shadow_log_suppressed_total", NULL, NULL);
}

/* The value of one sample line of the exposition ("name{labels} value"). */
static double exposition_value(fixture *fx, const char *series)
{
	es_buf b = ES_BUF_INIT;
	assert_int_equal(es_metrics_render(fx->s.metrics, &b), 0);
	char want[512];
	snprintf(want, sizeof(want), "\n%s ", series);
	const char *p = strstr(b.data, want);
	if (!p)
		fail_msg("no series %s in the exposition", series);
	double v = strtod(p + strlen(want), NULL);
	es_buf_free(&b);
	return v;
}

/* Waits until `finished` shadow runs have a result. */
static void wait_results(fixture *fx, double finished)
{
	uint64_t until = es_now_ns() + ES_TEST_WAIT_LIMIT_NS;
	while (shadow_total(fx) < finished) {
		if (es_now_ns() > until)
			fail_msg("only %.0f of %.0f shadow runs finished", shadow_total(fx),
				 finished);
		sched_yield();
	}
	assert_true(shadow_total(fx) == finished);
}

/* ---- offering ----------------------------------------------------------------------------- */

/* A [rows, 2] float tensor over data. */
static es_tensor tensor_f32(float *data, int64_t rows)
{
	es_tensor t = { .dtype = ES_DT_FLOAT, .ndim = 2, .dims = { rows, 2 }, .data = data,
			.nbytes = (size_t)rows * 2 * sizeof(float) };
	return t;
}

/*
 * Mirrors one request of version 1 with input x (rows x 2) onto the shadow
 * version, the primary having answered `primary` (n outputs), as a device
 * worker does around a primary's completion. The take takes its shadow
 * reference.
 */
static void offer(fixture *fx, const char *id, float *x, int64_t rows,
		  const es_tensor *primary, size_t n)
{
	es_tensor in = tensor_f32(x, rows);
	es_request r;
	memset(&r, 0, sizeof(r));
	r.version = acquire(fx, 1);
	r.shadow = acquire(fx, 2);
	r.inputs = &in;
	r.n_inputs = 1;
	r.arm = ES_ARM_DEFAULT;
	r.id = id;
	es_shadow_job *j = es_shadow_take(fx->s.srv, &r, primary, n);
	assert_null(r.shadow);
	/* the request and its buffers go with the primary's completion */
	es_version_release(r.version);
	memset(&in, 0xa5, sizeof(in));
	memset(&r, 0xa5, sizeof(r));
	es_shadow_queue(fx->s.srv, j);
}

/* Offers x with the primary output y = x + shift (what version 1 answers
 * for shift 1). */
static void offer_shifted(fixture *fx, const char *id, const float *x4, float shift)
{
	float x[4], y[4];
	memcpy(x, x4, sizeof(x));
	for (int i = 0; i < 4; i++)
		y[i] = x[i] + shift;
	es_tensor out = tensor_f32(y, 2);
	offer(fx, id, x, 2, &out, 1);
}

static const float X[4] = { 0.5f, -1.25f, 3.0f, 4.0f };

/* ---- tests ----------------------------------------------------------------------------------- */

static void test_identical_versions_never_diverge(void **state)
{
	fixture fx;
	fx_init(&fx, 1); /* versions 1 and 2 are both y = x + 1 */
	fx_start(&fx);
	for (int i = 0; i < 5; i++)
		offer_shifted(&fx, "same", X, 1.0f);
	wait_results(&fx, 5);

	assert_true(shadow_requests(&fx, "compared") == 5);
	assert_true(shadow_requests(&fx, "diverged") == 0);
	assert_true(shadow_requests(&fx, "dropped") == 0);
	assert_true(shadow_requests(&fx, "failed") == 0);
	assert_true(divergent_outputs(&fx, "y") == 0);
	assert_true(top1_disagreements(&fx) == 0);
	/* every pair's max abs error observed, all of them 0 */
	assert_true(exposition_value(&fx, "edgeserve_shadow_max_abs_error_count{model=\"m\"}") == 5);
	assert_true(exposition_value(&fx, "edgeserve_shadow_max_abs_error_bucket{model=\"m\",le=\"1e-09\"}") == 5);
	assert_true(exposition_value(&fx, "edgeserve_shadow_max_abs_error_sum{model=\"m\"}") == 0);
	/* nothing logged */
	cJSON *lines[1];
	assert_int_equal(read_lines(fx.log_path, lines, 1), 0);
	es_test_server_free(&fx.s);
}

static void test_shifted_version_diverges_and_is_logged(void **state)
{
	fixture fx;
	fx_init(&fx, 2); /* shadow y = x + 2 against the primary's x + 1 */
	fx_start(&fx);
	offer_shifted(&fx, "req-42", X, 1.0f);
	wait_results(&fx, 1);

	assert_true(shadow_requests(&fx, "diverged") == 1);
	assert_true(shadow_requests(&fx, "compared") == 0);
	assert_true(divergent_outputs(&fx, "y") == 1);
	/* adding a constant keeps every row's argmax */
	assert_true(top1_disagreements(&fx) == 0);
	/* the max abs error (1) lands in the le="1" bucket, not below */
	assert_true(exposition_value(&fx, "edgeserve_shadow_max_abs_error_bucket{model=\"m\",le=\"0.1\"}") == 0);
	assert_true(exposition_value(&fx, "edgeserve_shadow_max_abs_error_bucket{model=\"m\",le=\"1\"}") == 1);
	assert_true(exposition_value(&fx, "edgeserve_shadow_max_abs_error_sum{model=\"m\"}") == 1);

	cJSON *lines[4];
	assert_int_equal(read_lines(fx.log_path, lines, 4), 1);
	cJSON *l = lines[0];
	assert_non_null(strstr(str_field(l, "ts"), "T"));
	assert_string_equal(str_field(l, "request_id"), "req-42");
	assert_string_equal(str_field(l, "model"), "m");
	assert_true(num_field(l, "primary_version") == 1);
	assert_true(num_field(l, "shadow_version") == 2);
	assert_string_equal(str_field(l, "output"), "y");
	assert_string_equal(str_field(l, "reason"), "value");
	/* primary y = [1.5, -0.25, 4, 5]: every element is 1 off, and the
	 * tolerance (atol + rtol * |primary|) is tightest at |-0.25| */
	assert_true(num_field(l, "worst_index") == 1);
	assert_float_equal(num_field(l, "primary_value"), -0.25, 1e-6);
	assert_float_equal(num_field(l, "shadow_value"), 0.75, 1e-6);
	assert_float_equal(num_field(l, "max_abs_error"), 1.0, 1e-6);
	assert_float_equal(num_field(l, "max_rel_error"), 4.0, 1e-5);
	assert_float_equal(num_field(l, "atol"), 1e-4, 1e-12);
	assert_float_equal(num_field(l, "rtol"), 1e-3, 1e-12);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(l, "top1_agree")));
	assert_null(cJSON_GetObjectItemCaseSensitive(l, "suppressed"));
	free_lines(lines, 1);
	es_test_server_free(&fx.s);
}

static void test_tolerance_is_respected(void **state)
{
	fixture fx;
	fx_init(&fx, 2);
	fx.s.cfg.models[0].shadow.atol = 1.5; /* the shift (1) is inside */
	fx.s.cfg.models[0].shadow.rtol = 0;
	fx_start(&fx);
	offer_shifted(&fx, "inside", X, 1.0f);
	wait_results(&fx, 1);
	assert_true(shadow_requests(&fx, "compared") == 1);
	assert_true(shadow_requests(&fx, "diverged") == 0);
	assert_true(divergent_outputs(&fx, "y") == 0);

	/* a primary 2 away from the shadow's x + 2 is outside */
	offer_shifted(&fx, "outside", X, 0.0f);
	wait_results(&fx, 2);
	assert_true(shadow_requests(&fx, "diverged") == 1);
	cJSON *lines[2];
	assert_int_equal(read_lines(fx.log_path, lines, 2), 1);
	assert_string_equal(str_field(lines[0], "request_id"), "outside");
	assert_float_equal(num_field(lines[0], "max_abs_error"), 2.0, 1e-6);
	assert_float_equal(num_field(lines[0], "atol"), 1.5, 1e-12);
	free_lines(lines, 1);
	es_test_server_free(&fx.s);
}

static void test_relative_tolerance(void **state)
{
	fixture fx;
	fx_init(&fx, 2);
	fx.s.cfg.models[0].shadow.atol = 0;
	fx.s.cfg.models[0].shadow.rtol = 0.1; /* 1 off is within 10 % of >= 10 */
	fx_start(&fx);
	static const float big[4] = { 20, 30, 40, 50 }, small[4] = { 1, 2, 3, 4 };
	offer_shifted(&fx, "big", big, 1.0f);
	wait_results(&fx, 1);
	assert_true(shadow_requests(&fx, "compared") == 1);
	offer_shifted(&fx, "small", small, 1.0f);
	wait_results(&fx, 2);
	assert_true(shadow_requests(&fx, "diverged") == 1);
	es_test_server_free(&fx.s);
}

static void test_top1_disagreement_counted_apart(void **state)
{
	fixture fx;
	fx_init(&fx, 2);
	fx.s.cfg.models[0].shadow.atol = 10; /* values always within */
	fx_start(&fx);
	/* shadow: rows [2.5, 0.75] (argmax 0) and [5, 6] (argmax 1) */
	float x[4] = { 0.5f, -1.25f, 3.0f, 4.0f };
	float y[4] = { 0.5f, 1.0f, 5.0f, 6.0f }; /* row 0 argmax 1: disagrees */
	es_tensor out = tensor_f32(y, 2);
	offer(&fx, "top1", x, 2, &out, 1);
	wait_results(&fx, 1);
	assert_true(top1_disagreements(&fx) == 1); /* one row of two */
	assert_true(shadow_requests(&fx, "compared") == 1);
	assert_true(divergent_outputs(&fx, "y") == 0);

	/* all rows agree */
	float y2[4] = { 2.0f, 1.0f, 5.0f, 6.5f };
	out = tensor_f32(y2, 2);
	offer(&fx, "top1-agree", x, 2, &out, 1);
	wait_results(&fx, 2);
	assert_true(top1_disagreements(&fx) == 1);
	cJSON *lines[1];
	assert_int_equal(read_lines(fx.log_path, lines, 1), 0);
	es_test_server_free(&fx.s);
}

static void test_nan_dtype_shape_and_count(void **state)
{
	fixture fx;
	fx_init(&fx, 2);
	fx_start(&fx);

	/* NaN against NaN is equal: input NaN gives the shadow NaN too */
	float xn[4] = { NAN, 1.0f, 2.0f, 3.0f };
	float yn[4] = { NAN, 3.0f, 4.0f, 5.0f };
	es_tensor out = tensor_f32(yn, 2);
	offer(&fx, "nan-nan", xn, 2, &out, 1);
	wait_results(&fx, 1);
	assert_true(shadow_requests(&fx, "compared") == 1);

	/* NaN against a number diverges; the worst element shows it */
	float x[4] = { 0.5f, -1.25f, 3.0f, 4.0f };
	float y[4] = { 2.5f, 0.75f, NAN, 6.0f };
	out = tensor_f32(y, 2);
	offer(&fx, "nan", x, 2, &out, 1);
	wait_results(&fx, 2);
	assert_true(shadow_requests(&fx, "diverged") == 1);

	/* another dtype */
	int64_t yi[4] = { 2, 0, 5, 6 };
	es_tensor ti = { .dtype = ES_DT_INT64, .ndim = 2, .dims = { 2, 2 }, .data = yi,
			 .nbytes = sizeof(yi) };
	offer(&fx, "dtype", x, 2, &ti, 1);
	/* another shape */
	float ys[4] = { 2.5f, 0.75f, 5.0f, 6.0f };
	es_tensor ts = { .dtype = ES_DT_FLOAT, .ndim = 2, .dims = { 1, 4 }, .data = ys,
			 .nbytes = sizeof(ys) };
	offer(&fx, "shape", x, 2, &ts, 1);
	/* the primary had no output where the shadow has one */
	offer(&fx, "count", x, 2, NULL, 0);
	wait_results(&fx, 5);
	assert_true(shadow_requests(&fx, "diverged") == 4);
	assert_true(divergent_outputs(&fx, "y") == 4);

	cJSON *lines[8];
	size_t n = read_lines(fx.log_path, lines, 8);
	assert_int_equal(n, 4);
	/* one stream: the runs finished in the order they were offered */
	assert_string_equal(str_field(lines[0], "request_id"), "nan");
	assert_string_equal(str_field(lines[0], "reason"), "value");
	assert_true(num_field(lines[0], "worst_index") == 2);
	assert_string_equal(str_field(lines[0], "primary_value"), "nan");
	assert_float_equal(num_field(lines[0], "shadow_value"), 5.0, 1e-6);
	assert_string_equal(str_field(lines[0], "max_abs_error"), "inf");

	assert_string_equal(str_field(lines[1], "request_id"), "dtype");
	assert_string_equal(str_field(lines[1], "reason"), "dtype");
	assert_string_equal(str_field(lines[1], "primary_dtype"), "int64");
	assert_string_equal(str_field(lines[1], "shadow_dtype"), "float");
	assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(lines[1], "worst_index")));

	assert_string_equal(str_field(lines[2], "reason"), "shape");
	assert_string_equal(str_field(lines[2], "primary_shape"), "[1,4]");
	assert_string_equal(str_field(lines[2], "shadow_shape"), "[2,2]");

	assert_string_equal(str_field(lines[3], "reason"), "count");
	assert_string_equal(str_field(lines[3], "output"), "y");
	free_lines(lines, n);
	es_test_server_free(&fx.s);
}

/* ---- drops ---------------------------------------------------------------------------------------- */

/* The primary requests' completions: the blocking one holds the device's
 * only stream at the gate. */
typedef struct gate {
	es_test_sync sy;
	int status[2];
	float y0[2];
} gate;

typedef struct primary_req {
	es_request r;
	gate *g;
	int index;
	bool block;
	es_tensor in;
	float x[2];
} primary_req;

static void primary_complete(es_request *r, const es_tensor *outputs, size_t n)
{
	primary_req *p = r->user;
	gate *g = p->g;
	uint64_t until = es_now_ns() + ES_TEST_WAIT_LIMIT_NS;
	pthread_mutex_lock(&g->sy.mu);
	p->g->status[p->index] = r->status;
	if (r->status == 0 && n == 1)
		memcpy(g->y0, outputs[0].data, sizeof(g->y0));
	if (p->block) /* hold the device's only stream until the test opens the gate */
		es_test_hold_at_gate(&g->sy, until);
	es_test_sync_finish(&g->sy);
	pthread_mutex_unlock(&g->sy.mu);
}

static void primary_submit(fixture *fx, primary_req *p, gate *g, int index, bool block)
{
	memset(p, 0, sizeof(*p));
	p->g = g;
	p->index = index;
	p->block = block;
	p->x[0] = 1.0f;
	p->x[1] = 2.0f;
	p->in = (es_tensor){ .dtype = ES_DT_FLOAT, .ndim = 2, .dims = { 1, 2 }, .data = p->x,
			     .nbytes = sizeof(p->x) };
	p->r.version = acquire(fx, 1);
	p->r.inputs = &p->in;
	p->r.n_inputs = 1;
	p->r.complete = primary_complete;
	p->r.user = p;
	p->r.id = "primary";
	es_error err = { 0 };
	int rc = es_server_submit(fx->s.srv, &p->r, &err);
	if (rc)
		fail_msg("submit: %s", err.msg);
}

/* Device requests running now (the held stream and the idle worker's run). */
static int device_active(fixture *fx)
{
	es_device_status ds[1];
	assert_int_equal(es_server_devices(fx->s.srv, ds, 1), 1);
	return ds[0].active;
}

static void test_full_low_queue_drops_and_primary_unaffected(void **state)
{
	fixture fx;
	gate g;
	primary_req blocker, next;
	fx_init(&fx, 2);
	/* shadow runs (version 2) take 300 ms on the fault-injecting backend,
	 * so that the idle worker is still busy while the queue fills */
	char ctl[600];
	snprintf(ctl, sizeof(ctl), "%s/faults.json", fx.s.tmp);
	FILE *f = fopen(ctl, "w");
	assert_non_null(f);
	fputs("{\"rules\": [{\"model\": \"m\", \"version\": 2, \"latency_ms\": 300}]}\n", f);
	assert_int_equal(fclose(f), 0);
	es_device_config *d = &fx.s.cfg.devices[0];
	free(d->backend);
	d->backend = strdup("faulty");
	d->fault_control = strdup(ctl);
	fx.s.cfg.models[0].shadow.queue_size = 1;
	fx_start(&fx);
	es_test_sync_init(&g.sy);

	/* the only stream is busy until the gate opens */
	primary_submit(&fx, &blocker, &g, 0, true);
	es_test_wait_blocked(&g.sy, 1);

	/* the first shadow run starts on the idle worker at once, stream or
	 * not ... */
	offer_shifted(&fx, "mirror", X, 1.0f);
	uint64_t until = es_now_ns() + ES_TEST_WAIT_LIMIT_NS;
	while (device_active(&fx) < 2) {
		if (es_now_ns() > until)
			fail_msg("the shadow run did not start while the stream was held");
		sched_yield();
	}
	/* ... the next one fits the queue, the two after it are dropped at
	 * once, and a normal request still queues */
	uint64_t t0 = es_now_ns();
	for (int i = 0; i < 3; i++)
		offer_shifted(&fx, "mirror", X, 1.0f);
	assert_true(shadow_requests(&fx, "dropped") == 2);
	primary_submit(&fx, &next, &g, 1, false);
	/* offers never wait for the device (it is still held) */
	assert_true(es_now_ns() - t0 < ES_TEST_WAIT_LIMIT_NS);
	pthread_mutex_lock(&g.sy.mu);
	assert_int_equal(g.sy.done, 0);
	pthread_mutex_unlock(&g.sy.mu);
	es_test_open_gate(&g.sy);
	es_test_wait_done(&g.sy, 2);
	pthread_mutex_lock(&g.sy.mu);
	assert_int_equal(g.sy.done, 2);
	assert_int_equal(g.status[0], 0);
	assert_int_equal(g.status[1], 0);
	assert_float_equal(g.y0[0], 2.0, 1e-6); /* x + 1 */
	assert_float_equal(g.y0[1], 3.0, 1e-6);
	pthread_mutex_unlock(&g.sy.mu);

	wait_results(&fx, 4);
	assert_true(shadow_requests(&fx, "diverged") == 2); /* the running and the queued one */
	assert_true(shadow_requests(&fx, "dropped") == 2);
	es_version_release(blocker.r.version);
	es_version_release(next.r.version);
	es_test_server_free(&fx.s);
	es_test_sync_destroy(&g.sy);
}

/* ---- the log ---------------------------------------------------------------------------------------- */

static void test_rate_limit_suppresses_and_counts(void **state)
{
	fixture fx;
	enum { BURST = 8 };
	fx_init(&fx, 2);
	fx.s.cfg.divergence_log_per_s = 1;
	fx_start(&fx);
	uint64_t t0 = es_now_ns();
	for (int i = 0; i < BURST; i++)
		offer_shifted(&fx, "burst", X, 1.0f);
	wait_results(&fx, BURST);
	double elapsed_s = (double)(es_now_ns() - t0) / 1e9;
	assert_true(shadow_requests(&fx, "diverged") == BURST);

	cJSON *lines[BURST + 2];
	size_t n = read_lines(fx.log_path, lines, BURST + 2);
	/* a bucket of one line, refilled at one a second */
	assert_true(n >= 1);
	assert_true((double)n <= 1 + elapsed_s + 1e-9);
	assert_true((double)n + suppressed(&fx) == BURST);
	free_lines(lines, n);

	/* a second later a line gets through and tells how many were not
	 * written since the previous one (the refill is the behaviour
	 * under test, so this waits on the clock) */
	struct timespec pause = { 1, 100000000 };
	nanosleep(&pause, NULL);
	offer_shifted(&fx, "after", X, 1.0f);
	wait_results(&fx, BURST + 1);
	size_t n2 = read_lines(fx.log_path, lines, BURST + 2);
	assert_int_equal(n2, n + 1);
	assert_string_equal(str_field(lines[n2 - 1], "request_id"), "after");
	double reported = 0;
	for (size_t i = 0; i < n2; i++) {
		const cJSON *s = cJSON_GetObjectItemCaseSensitive(lines[i], "suppressed");
		if (s)
			reported += s->valuedouble;
	}
	/* every suppressed line is summarised in a later line written */
	assert_true(suppressed(&fx) >= 1);
	assert_true(reported == suppressed(&fx));
	free_lines(lines, n2);
	es_test_server_free(&fx.s);
}

static void test_server_log_without_divergence_log(void **state)
{
	fixture fx;
	char path[400];
	fx_init(&fx, 2);
	free(fx.s.cfg.divergence_log);
	fx.s.cfg.divergence_log = NULL;
	fx_start(&fx);
	snprintf(path, sizeof(path), "%s/server.log", fx.s.tmp);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	es_log_set_fd(fd);
	offer_shifted(&fx, "to-server-log", X, 1.0f);
	wait_results(&fx, 1);
	es_log_set_fd(2);
	close(fd);

	cJSON *lines[16];
	size_t n = read_lines(path, lines, 16);
	const cJSON *hit = NULL;
	for (size_t i = 0; i < n; i++)
		if (!strcmp(str_field(lines[i], "event"), "shadow_divergence"))
			hit = lines[i];
	assert_non_null(hit);
	assert_string_equal(str_field(hit, "request_id"), "to-server-log");
	assert_string_equal(str_field(hit, "output"), "y");
	assert_true(num_field(hit, "worst_index") == 1);
	assert_float_equal(num_field(hit, "primary_value"), -0.25, 1e-6);
	assert_float_equal(num_field(hit, "shadow_value"), 0.75, 1e-6);
	free_lines(lines, n < 16 ? n : 16);
	es_test_server_free(&fx.s);
}

static void test_unopenable_divergence_log_fails_create(void **state)
{
	fixture fx;
	fx_init(&fx, 1);
	free(fx.s.cfg.divergence_log);
	fx.s.cfg.divergence_log = strdup("/nonexistent-es-dir/divergence.jsonl");
	es_error err = { 0 };
	es_server *srv = NULL;
	int rc = es_server_create(&fx.s.cfg, fx.s.metrics, &srv, &err);
	assert_int_not_equal(rc, 0);
	assert_null(srv);
	assert_non_null(strstr(err.msg, "divergence_log"));
	assert_non_null(strstr(err.msg, "cannot open"));
	es_test_server_free(&fx.s);
}

/* ---- through the scheduler ------------------------------------------------------------------------- */

/*
 * A routed request with a shadow, submitted like any request: the
 * scheduler mirrors it after the answer. inline_max_us 0 sends every copy to
 * the idle worker; a bound no run reaches (1 s) lets the stream that
 * answered take it, its device being idle. The metric says which ran it.
 */
static void mirrored_by_scheduler(int inline_max_us, const char *worker, const char *other)
{
	fixture fx;
	gate g;
	primary_req p;
	fx_init(&fx, 2);
	fx.s.cfg.models[0].shadow.inline_max_us = inline_max_us;
	fx_start(&fx);
	es_test_sync_init(&g.sy);

	/* every request sampled (fraction 10000): routed with its shadow */
	es_route_in in = { 0 };
	es_route_out out = { 0 };
	es_error err = { 0 };
	/* version 1 pinned: the default would be the highest, the shadow
	 * version itself, which is never mirrored onto itself */
	in.version = 1;
	int rc = es_servable_route(fx.s.m, &in, &out, &err);
	if (rc)
		fail_msg("route: %s", err.msg);
	assert_int_equal(es_version_number(out.version), 1);
	assert_non_null(out.shadow);
	assert_int_equal(es_version_number(out.shadow), 2);
	es_version_release(out.version);

	memset(&p, 0, sizeof(p));
	p.g = &g;
	p.x[0] = 1.0f;
	p.x[1] = 2.0f;
	p.in = (es_tensor){ .dtype = ES_DT_FLOAT, .ndim = 2, .dims = { 1, 2 }, .data = p.x,
			    .nbytes = sizeof(p.x) };
	p.r.version = acquire(&fx, 1);
	p.r.shadow = out.shadow; /* the scheduler takes it */
	p.r.inputs = &p.in;
	p.r.n_inputs = 1;
	p.r.complete = primary_complete;
	p.r.user = &p;
	p.r.id = "routed";
	rc = es_server_submit(fx.s.srv, &p.r, &err);
	if (rc)
		fail_msg("submit: %s", err.msg);
	wait_results(&fx, 1);
	assert_true(shadow_requests(&fx, "diverged") == 1);
	es_test_wait_done(&g.sy, 1);
	pthread_mutex_lock(&g.sy.mu);
	assert_int_equal(g.sy.done, 1);
	assert_int_equal(g.status[0], 0);
	pthread_mutex_unlock(&g.sy.mu);

	cJSON *lines[2];
	assert_int_equal(read_lines(fx.log_path, lines, 2), 1);
	assert_string_equal(str_field(lines[0], "request_id"), "routed");
	assert_float_equal(num_field(lines[0], "primary_value"), 2.0, 1e-6);
	assert_float_equal(num_field(lines[0], "shadow_value"), 3.0, 1e-6);
	free_lines(lines, 1);

	es_rollout_report rep;
	assert_int_equal(es_servable_rollout_report(fx.s.m, &rep), 0);
	assert_true(rep.shadow);
	assert_int_equal(rep.shadow_divergent, 1);
	assert_true(shadow_runs(&fx, worker) == 1);
	assert_true(shadow_runs(&fx, other) == 0);
	es_version_release(p.r.version);
	es_test_server_free(&fx.s);
	es_test_sync_destroy(&g.sy);
}

static void test_sampled_request_is_mirrored_by_the_idle_worker(void **state)
{
	(void)state;
	mirrored_by_scheduler(0, "idle", "stream");
}

static void test_cheap_shadow_runs_on_the_answering_stream(void **state)
{
	(void)state;
	mirrored_by_scheduler(1000000, "stream", "idle");
}

int main(void)
{
	if (es_faulty_backend_register() != 0) {
		fprintf(stderr, "cannot register the faulty backend\n");
		return 1;
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_identical_versions_never_diverge),
		cmocka_unit_test(test_shifted_version_diverges_and_is_logged),
		cmocka_unit_test(test_tolerance_is_respected),
		cmocka_unit_test(test_relative_tolerance),
		cmocka_unit_test(test_top1_disagreement_counted_apart),
		cmocka_unit_test(test_nan_dtype_shape_and_count),
		cmocka_unit_test(test_full_low_queue_drops_and_primary_unaffected),
		cmocka_unit_test(test_rate_limit_suppresses_and_counts),
		cmocka_unit_test(test_server_log_without_divergence_log),
		cmocka_unit_test(test_unopenable_divergence_log_fails_create),
		cmocka_unit_test(test_sampled_request_is_mirrored_by_the_idle_worker),
		cmocka_unit_test(test_cheap_shadow_runs_on_the_answering_stream),
	};
	es_log_set_level(ES_LOG_WARN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
