/* The serving core: repository and version policies, acquire semantics,
 * input validation, device scheduling (sequential and parallel streams,
 * bounded queues, deadlines, drain) and its metrics. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "obs/log.h"
#include "obs/metrics.h"
#include "serving/serving.h"
#include "serving/serving_int.h"

#include "support/serving_fixture.h"

#define REPO ES_TEST_SERVING_REPO
#define EXAMPLES ES_TEST_DATA_DIR "/../../examples/models"

typedef es_test_server fixture;

/* ---- requests ---------------------------------------------------------------------- */

typedef struct job {
	es_request r;
	es_test_sync *sy;
	es_tensor in[2];
	void *data[2];
	bool block;      /* wait in complete until the gate opens */
	bool rendezvous; /* wait in complete until another request is inside */
	bool met;        /* the rendezvous happened */
	bool done;
	bool bad_outputs; /* outputs did not match the status */
	int status;
	char msg[ES_ERROR_MSG_MAX];
	uint64_t t_enqueue, t_start, t_end, t_done;
	int stream;
	size_t n_outputs;
	float out[8];
	int64_t out_dims[ES_MAX_DIMS];
	int out_ndim;
} job;

static void on_complete(es_request *r, const es_tensor *outputs, size_t n)
{
	job *j = r->user;
	es_test_sync *sy = j->sy;
	j->status = r->status;
	snprintf(j->msg, sizeof(j->msg), "%s", r->err.msg);
	j->t_enqueue = r->t_enqueue_ns;
	j->t_start = r->t_start_ns;
	j->t_end = r->t_end_ns;
	j->stream = r->stream;
	j->n_outputs = n;
	/* no cmocka asserts on a worker thread: record, check later */
	j->bad_outputs = r->status == 0 ? !outputs : outputs || n;
	if (r->status == 0 && outputs) {
		j->out_ndim = outputs[0].ndim;
		memcpy(j->out_dims, outputs[0].dims, sizeof(j->out_dims));
		size_t k = outputs[0].nbytes / sizeof(float);
		memcpy(j->out, outputs[0].data, (k < 8 ? k : 8) * sizeof(float));
	}
	uint64_t until = es_now_ns() + ES_TEST_WAIT_LIMIT_NS;
	pthread_mutex_lock(&sy->mu);
	if (j->block)
		es_test_hold_at_gate(sy, until);
	if (j->rendezvous) {
		sy->inside++;
		pthread_cond_broadcast(&sy->cv);
		while (sy->inside < 2 && es_test_sync_wait(sy, until))
			;
		j->met = sy->inside >= 2;
	}
	j->t_done = es_now_ns();
	j->done = true;
	es_test_sync_finish(sy);
	pthread_mutex_unlock(&sy->mu);
}

/* Prepares a request for a float model input of shape dims (values v). */
static void job_init(job *j, es_test_sync *sy, es_version *v, int ndim, const int64_t *dims,
		     float value)
{
	memset(j, 0, sizeof(*j));
	j->sy = sy;
	es_tensor *t = &j->in[0];
	t->dtype = ES_DT_FLOAT;
	t->ndim = ndim;
	size_t n = 1;
	for (int i = 0; i < ndim; i++) {
		t->dims[i] = dims[i];
		n *= (size_t)dims[i];
	}
	t->nbytes = n * sizeof(float);
	float *d = malloc(t->nbytes ? t->nbytes : 1);
	assert_non_null(d);
	for (size_t i = 0; i < n; i++)
		d[i] = value;
	t->data = d;
	j->data[0] = d;
	j->r.version = v;
	j->r.inputs = j->in;
	j->r.n_inputs = 1;
	j->r.complete = on_complete;
	j->r.user = j;
	j->r.id = "test";
}

static void job_free(job *j)
{
	assert_false(j->bad_outputs);
	free(j->data[0]);
	free(j->data[1]);
}

static size_t status_of(es_server *s, const char *model, es_version_status *st, size_t max)
{
	es_servable *m = es_server_find_model(s, model);
	assert_non_null(m);
	return es_servable_status(m, st, max);
}


/* ---- repository and policies --------------------------------------------------------- */

static void test_latest_policy(void **state)
{
	fixture fx;
	es_error err = { 0 };
	es_version_status st[8];
	es_test_server_init(&fx, NULL);
	es_test_cfg_model(&fx.cfg, "multi", REPO "/multi", NULL)->policy.num_versions = 2;
	es_test_server_start(&fx, NULL);

	/* versions on disk: 1, 2, 3 (corrupt); 0, 007, abc, 4 are not versions */
	assert_int_equal(status_of(fx.srv, "multi", st, 8), 2);
	assert_int_equal(st[0].version, 3);
	assert_int_equal(st[0].state, ES_VS_FAILED);
	assert_true(st[0].reason[0] != '\0');
	/* the reason names the file relative to the repository, never the host path */
	assert_null(strstr(st[0].reason, ES_TEST_DATA_DIR));
	assert_null(strstr(st[0].reason, "/work"));
	assert_int_equal(st[1].version, 2);
	assert_int_equal(st[1].state, ES_VS_AVAILABLE);
	assert_string_equal(st[1].reason, "");

	es_servable *m = es_server_find_model(fx.srv, "multi");
	assert_string_equal(es_servable_name(m), "multi");
	assert_string_equal(es_servable_device(m), "CPU");
	es_version *v = NULL;
	/* default: highest AVAILABLE, skipping the FAILED 3 */
	assert_int_equal(es_servable_acquire(m, 0, &v, &err), 0);
	assert_int_equal(es_version_number(v), 2);
	assert_ptr_equal(es_version_servable(v), m);
	assert_int_equal(es_model_num_inputs(es_version_model(v)), 1);
	es_version_release(v);
	assert_int_equal(es_servable_acquire(m, 3, &v, &err), ES_EUNAVAILABLE);
	assert_non_null(strstr(err.msg, "model 'multi' version 3"));
	assert_int_equal(es_servable_acquire(m, 1, &v, &err), ES_ENOTFOUND);
	assert_non_null(strstr(err.msg, "model 'multi' has no version 1"));
	assert_int_equal(es_servable_acquire(m, 42, &v, &err), ES_ENOTFOUND);
	assert_true(es_servable_ready(m, 0));
	assert_true(es_servable_ready(m, 2));
	assert_false(es_servable_ready(m, 3));
	assert_false(es_servable_ready(m, 1));
	assert_true(es_server_ready(fx.srv));
	assert_int_equal(es_server_num_models(fx.srv), 1);
	assert_ptr_equal(es_server_model_at(fx.srv, 0), m);
	assert_null(es_server_model_at(fx.srv, 1));
	assert_null(es_server_find_model(fx.srv, "nope"));

	/* metrics: states and the load failure */
	static const char *const mvs[] = { "model", "version", "state", NULL };
	static const char *const mo[] = { "model", NULL };
	const char *failed3[] = { "multi", "3", "FAILED", NULL };
	const char *avail3[] = { "multi", "3", "AVAILABLE", NULL };
	const char *avail2[] = { "multi", "2", "AVAILABLE", NULL };
	const char *multi[] = { "multi", NULL };
	assert_true(es_test_metric(&fx, "gauge", "edgeserve_model_version_state", mvs, failed3) == 1);
	assert_true(es_test_metric(&fx, "gauge", "edgeserve_model_version_state", mvs, avail3) == 0);
	assert_true(es_test_metric(&fx, "gauge", "edgeserve_model_version_state", mvs, avail2) == 1);
	assert_true(es_test_metric(&fx, "counter", "edgeserve_model_load_failures_total", mo, multi) == 1);
	es_test_server_free(&fx);
}

static void test_all_policy(void **state)
{
	fixture fx;
	es_version_status st[8];
	es_test_server_init(&fx, NULL);
	es_test_cfg_model(&fx.cfg, "multi", REPO "/multi", NULL)->policy.kind = ES_POLICY_ALL;
	es_test_server_start(&fx, NULL);
	assert_int_equal(status_of(fx.srv, "multi", st, 8), 3);
	assert_int_equal(st[0].version, 3);
	assert_int_equal(st[0].state, ES_VS_FAILED);
	assert_int_equal(st[1].version, 2);
	assert_int_equal(st[1].state, ES_VS_AVAILABLE);
	assert_int_equal(st[2].version, 1);
	assert_int_equal(st[2].state, ES_VS_AVAILABLE);
	/* max limits what is filled, not what is counted */
	assert_int_equal(status_of(fx.srv, "multi", st, 1), 3);
	es_version *v = es_test_acquire(fx.srv, "multi", 1);
	assert_int_equal(es_version_number(v), 1);
	es_version_release(v);
	es_test_server_free(&fx);
}

static void test_specific_policy(void **state)
{
	fixture fx;
	es_version_status st[8];
	es_error err = { 0 };
	static const int64_t want[] = { 1, 3, 7, 4 };
	es_test_server_init(&fx, NULL);
	es_test_policy_specific(es_test_cfg_model(&fx.cfg, "multi", REPO "/multi", NULL), want, 4);
	es_test_server_start(&fx, NULL);
	assert_int_equal(status_of(fx.srv, "multi", st, 8), 4);
	assert_int_equal(st[0].version, 7);
	assert_int_equal(st[0].state, ES_VS_FAILED);
	assert_string_equal(st[0].reason, "version directory not found");
	assert_int_equal(st[1].version, 4);
	assert_int_equal(st[1].state, ES_VS_FAILED);
	assert_string_equal(st[1].reason, "version directory has no model.onnx");
	assert_int_equal(st[2].version, 3);
	assert_int_equal(st[2].state, ES_VS_FAILED);
	assert_int_equal(st[3].version, 1);
	assert_int_equal(st[3].state, ES_VS_AVAILABLE);
	es_servable *m = es_server_find_model(fx.srv, "multi");
	es_version *v = NULL;
	assert_int_equal(es_servable_acquire(m, 0, &v, &err), 0);
	assert_int_equal(es_version_number(v), 1);
	es_version_release(v);
	assert_int_equal(es_servable_acquire(m, 2, &v, &err), ES_ENOTFOUND);
	assert_int_equal(es_servable_acquire(m, 7, &v, &err), ES_EUNAVAILABLE);
	es_test_server_free(&fx);
}

static void test_no_available_version(void **state)
{
	fixture fx;
	es_version_status st[4];
	es_error err = { 0 };
	es_test_server_init(&fx, NULL);
	es_test_cfg_model(&fx.cfg, "multi", REPO "/multi", NULL); /* latest 1: the corrupt 3 */
	es_test_cfg_model(&fx.cfg, "ghost", REPO "/does-not-exist", NULL);
	es_test_cfg_model(&fx.cfg, "slow", REPO "/slow", NULL);
	es_test_server_start(&fx, NULL); /* failures do not stop the server */
	assert_int_equal(status_of(fx.srv, "multi", st, 4), 1);
	assert_int_equal(st[0].state, ES_VS_FAILED);
	assert_int_equal(status_of(fx.srv, "ghost", st, 4), 0);
	es_version *v = NULL;
	assert_int_equal(es_servable_acquire(es_server_find_model(fx.srv, "multi"), 0, &v, &err),
			 ES_EUNAVAILABLE);
	assert_int_equal(es_servable_acquire(es_server_find_model(fx.srv, "ghost"), 0, &v, &err),
			 ES_EUNAVAILABLE);
	assert_false(es_servable_ready(es_server_find_model(fx.srv, "multi"), 0));
	assert_true(es_servable_ready(es_server_find_model(fx.srv, "slow"), 0));
	assert_false(es_server_ready(fx.srv));
	es_test_server_free(&fx);
}

static void test_invalid_config_rejected(void **state)
{
	fixture fx;
	es_error err = { 0 };
	es_test_server_init(&fx, NULL);
	es_test_cfg_model(&fx.cfg, "a", REPO "/multi", "NPU9");
	assert_int_equal(es_server_create(&fx.cfg, fx.metrics, &fx.srv, &err), ES_EINVAL);
	assert_non_null(strstr(err.msg, "NPU9"));
	fx.srv = NULL;
	es_test_server_free(&fx);
}

/* ---- inference through the queue --------------------------------------------------------- */

static void test_examples_inference(void **state)
{
	fixture fx;
	es_error err = { 0 };
	es_test_sync sy;
	job j;
	es_test_server_init(&fx, NULL);
	assert_int_equal(es_config_scan_repository(EXAMPLES, &fx.cfg, &err), 0);
	es_test_server_start(&fx, NULL);
	assert_true(es_server_ready(fx.srv));
	es_test_sync_init(&sy);

	es_version *v = es_test_acquire(fx.srv, "classifier", 0);
	assert_int_equal(es_version_number(v), 2);
	static const int64_t dims[] = { 1, 4 };
	job_init(&j, &sy, v, 2, dims, 0.5f);
	assert_int_equal(es_server_submit(fx.srv, &j.r, &err), 0);
	es_test_wait_done(&sy, 1);
	assert_int_equal(j.status, 0);
	assert_int_equal(j.n_outputs, 1);
	assert_int_equal(j.out_ndim, 2);
	assert_int_equal(j.out_dims[0], 1);
	assert_int_equal(j.out_dims[1], 3);
	assert_float_equal(j.out[0] + j.out[1] + j.out[2], 1.0, 1e-5);
	assert_true(j.t_enqueue > 0 && j.t_start >= j.t_enqueue && j.t_end >= j.t_start);
	assert_true(j.stream >= 0);
	assert_string_equal(j.r.device, "CPU");
	es_version_release(v);
	job_free(&j);

	/* the histograms saw it */
	static const char *const mvd[] = { "model", "version", "device", NULL };
	const char *vals[] = { "classifier", "2", "CPU", NULL };
	uint64_t count = 0;
	double sum = 0;
	es_histogram_read(es_metric_get(es_metrics_histogram(fx.metrics,
		"edgeserve_queue_wait_seconds", "lookup", mvd, NULL, 0), vals), &count, &sum);
	assert_int_equal(count, 1);
	es_histogram_read(es_metric_get(es_metrics_histogram(fx.metrics,
		"edgeserve_inference_duration_seconds", "lookup", mvd, NULL, 0), vals), &count, &sum);
	assert_int_equal(count, 1);
	assert_true(sum > 0);

	/* settle the active count (a stream is busy until complete returns) */
	assert_int_equal(es_server_drain(fx.srv, 10000), 0);
	es_buf b = ES_BUF_INIT;
	assert_int_equal(es_metrics_render(fx.metrics, &b), 0);
	static const char *const families[] = {
		"edgeserve_queue_wait_seconds_bucket", "edgeserve_inference_duration_seconds_count",
		"edgeserve_queue_size{device=\"CPU\"} 0", "edgeserve_queue_capacity{device=\"CPU\"}",
		"edgeserve_device_active_requests{device=\"CPU\"} 0", "edgeserve_device_streams",
		"edgeserve_model_load_seconds{model=\"scaler\",version=\"1\"}",
		"edgeserve_model_version_state{model=\"classifier\",version=\"2\",state=\"AVAILABLE\"} 1",
		"edgeserve_model_version_state{model=\"classifier\",version=\"2\",state=\"LOADING\"} 0",
	};
	for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++)
		if (!strstr(b.data, families[i]))
			fail_msg("'%s' missing from the exposition:\n%s", families[i], b.data);
	es_buf_free(&b);
	es_test_sync_destroy(&sy);
	es_test_server_free(&fx);
}

static void test_versions_run_their_own_model(void **state)
{
	fixture fx;
	es_error err = { 0 };
	es_test_sync sy;
	job j1, j2;
	static const int64_t dims[] = { 3, 2 };
	es_test_server_init(&fx, NULL);
	es_test_cfg_model(&fx.cfg, "multi", REPO "/multi", NULL)->policy.kind = ES_POLICY_ALL;
	es_test_server_start(&fx, NULL);
	es_test_sync_init(&sy);
	es_version *v1 = es_test_acquire(fx.srv, "multi", 1), *v2 = es_test_acquire(fx.srv, "multi", 2);
	job_init(&j1, &sy, v1, 2, dims, 10.0f);
	job_init(&j2, &sy, v2, 2, dims, 10.0f);
	assert_int_equal(es_server_submit(fx.srv, &j1.r, &err), 0);
	assert_int_equal(es_server_submit(fx.srv, &j2.r, &err), 0);
	es_test_wait_done(&sy, 2);
	assert_int_equal(j1.status, 0);
	assert_int_equal(j2.status, 0);
	assert_float_equal(j1.out[5], 11.0, 0);
	assert_float_equal(j2.out[5], 12.0, 0);
	es_version_release(v1);
	es_version_release(v2);
	job_free(&j1);
	job_free(&j2);
	es_test_sync_destroy(&sy);
	es_test_server_free(&fx);
}

static void test_submit_validates_inputs(void **state)
{
	fixture fx;
	es_error err;
	es_test_sync sy;
	job j;
	es_test_server_init(&fx, NULL);
	es_test_cfg_model(&fx.cfg, "fixed", REPO "/fixed", NULL);
	es_test_server_start(&fx, NULL);
	es_test_sync_init(&sy);
	es_version *v = es_test_acquire(fx.srv, "fixed", 0);

	/* inputs: a float [2,3], b int64 [3] */
	float a[6] = { 0, 1, 2, 3, 4, 5 };
	int64_t b[3] = { 7, 8, 9 };
	static const int64_t adims[] = { 2, 3 };
	job_init(&j, &sy, v, 2, adims, 0);
	j.in[1] = (es_tensor){ .dtype = ES_DT_INT64, .ndim = 1, .dims = { 3 },
			       .data = b, .nbytes = sizeof(b) };
	memcpy(j.in[0].data, a, sizeof(a));

#define EXPECT_SUBMIT(code, needle) do {                                            \
		memset(&err, 0, sizeof(err));                                           \
		int rc_ = es_server_submit(fx.srv, &j.r, &err);                         \
		if (rc_ != (code) || !strstr(err.msg, needle))                          \
			fail_msg("submit: rc %d '%s', expected %d '%s'", rc_, err.msg,  \
				 (code), needle);                                       \
	} while (0)

	j.r.n_inputs = 1;
	EXPECT_SUBMIT(ES_EINVAL, "model 'fixed' version 1: expected 2 inputs, got 1");
	j.r.n_inputs = 2;

	j.in[1].dtype = ES_DT_INT32;
	EXPECT_SUBMIT(ES_ETYPE, "model 'fixed' input 'b': expected datatype int64, got int32");
	j.in[1].dtype = ES_DT_INT64;

	j.in[0].ndim = 3;
	j.in[0].dims[2] = 1;
	EXPECT_SUBMIT(ES_ESHAPE, "model 'fixed' input 'a': expected shape [2,3] (2 dimensions), got [2,3,1] (3 dimensions)");
	j.in[0].ndim = 2;

	j.in[0].dims[1] = 4;
	j.in[0].dims[0] = 1;
	j.in[0].nbytes = 4 * sizeof(float);
	EXPECT_SUBMIT(ES_ESHAPE, "model 'fixed' input 'a': dimension 0: expected 2, got 1");
	j.in[0].dims[0] = 2;
	EXPECT_SUBMIT(ES_ESHAPE, "dimension 1: expected 3, got 4");
	j.in[0].dims[1] = 3;

	j.in[0].nbytes = 20;
	EXPECT_SUBMIT(ES_EINVAL, "model 'fixed' input 'a': expected 24 bytes of data for shape [2,3] of float, got 20");
	j.in[0].nbytes = 24;

	j.in[0].ndim = 9;
	EXPECT_SUBMIT(ES_ESHAPE, "expected at most 8 dimensions, got 9");
	j.in[0].ndim = 2;

	j.in[1].dims[0] = -3;
	EXPECT_SUBMIT(ES_ESHAPE, "input 'b': dimension 0 is negative");
	j.in[1].dims[0] = 3;

	j.in[1].data = NULL;
	EXPECT_SUBMIT(ES_EINVAL, "input 'b': no data");
	j.in[1].data = b;

	j.r.version = NULL;
	EXPECT_SUBMIT(ES_EINVAL, "invalid request");
	j.r.version = v;

	/* nothing was completed for the rejected submissions */
	assert_int_equal(sy.done, 0);

	memset(&err, 0, sizeof(err));
	assert_int_equal(es_server_submit(fx.srv, &j.r, &err), 0);
	es_test_wait_done(&sy, 1);
	assert_int_equal(j.status, 0);
	assert_int_equal(j.n_outputs, 2);
	assert_float_equal(j.out[5], 6.0, 0);
	es_version_release(v);
	free(j.data[0]);
	es_test_sync_destroy(&sy);
	es_test_server_free(&fx);
#undef EXPECT_SUBMIT
}

/* ---- device scheduling ---------------------------------------------------------------------- */

#define SLOW_BATCH 128
#define N_CONCURRENT 8

/* Submits n jobs from n threads released together. */
static void submit_concurrently(es_server *srv, job *jobs, int n)
{
	es_request *reqs[N_CONCURRENT];
	assert_true(n <= N_CONCURRENT);
	for (int i = 0; i < n; i++)
		reqs[i] = &jobs[i].r;
	es_test_submit_concurrently(srv, reqs, n);
}

static int cmp_enqueue(const void *a, const void *b)
{
	const job *x = *(job *const *)a, *y = *(job *const *)b;
	return x->t_enqueue < y->t_enqueue ? -1 : x->t_enqueue > y->t_enqueue;
}

static void test_sequential_device_never_overlaps(void **state)
{
	fixture fx;
	es_test_sync sy;
	job jobs[N_CONCURRENT];
	job *order[N_CONCURRENT];
	static const int64_t dims[] = { SLOW_BATCH, 256 };
	es_test_server_init(&fx, NULL);
	es_test_cfg_device(&fx.cfg, "NPU0", "cpu", 1, 64);
	es_test_cfg_model(&fx.cfg, "slow", REPO "/slow", "NPU0");
	es_test_server_start(&fx, NULL);
	es_test_sync_init(&sy);
	es_version *v = es_test_acquire(fx.srv, "slow", 0);
	for (int i = 0; i < N_CONCURRENT; i++) {
		job_init(&jobs[i], &sy, v, 2, dims, 1.0f);
		order[i] = &jobs[i];
	}
	submit_concurrently(fx.srv, jobs, N_CONCURRENT);
	es_test_wait_done(&sy, N_CONCURRENT);

	qsort(order, N_CONCURRENT, sizeof(order[0]), cmp_enqueue);
	for (int i = 0; i < N_CONCURRENT; i++) {
		job *j = order[i];
		assert_int_equal(j->status, 0);
		assert_int_equal(j->stream, 0);
		assert_true(j->t_start >= j->t_enqueue && j->t_end > j->t_start);
		/* the output of 16 MatMuls by a 1/256 matrix of ones is still 1 */
		assert_float_equal(j->out[0], 1.0, 1e-4);
		if (i == 0)
			continue;
		job *p = order[i - 1];
		/* FIFO: started in enqueue order; sequential: the previous one
		 * had ended (its completion too) before this one started */
		if (!(p->t_end <= j->t_start && p->t_done <= j->t_start))
			fail_msg("request %d [%llu, %llu] overlaps request %d starting at %llu",
				 i - 1, (unsigned long long)p->t_start, (unsigned long long)p->t_end,
				 i, (unsigned long long)j->t_start);
	}
	/* a stream counts as active until complete() returns: drain waits for
	 * that, so the counters below are settled */
	assert_int_equal(es_server_drain(fx.srv, 10000), 0);
	es_device_status ds[2];
	assert_int_equal(es_server_devices(fx.srv, ds, 2), 1);
	assert_string_equal(ds[0].name, "NPU0");
	assert_string_equal(ds[0].backend, "cpu");
	assert_int_equal(ds[0].streams, 1);
	assert_int_equal(ds[0].max_queue_size, 64);
	assert_int_equal(ds[0].queue_size, 0);
	assert_int_equal(ds[0].active, 0);

	es_version_release(v);
	for (int i = 0; i < N_CONCURRENT; i++)
		job_free(&jobs[i]);
	es_test_sync_destroy(&sy);
	es_test_server_free(&fx);
}

static void test_two_streams_run_in_parallel(void **state)
{
	fixture fx;
	es_test_sync sy;
	job jobs[2];
	static const int64_t dims[] = { SLOW_BATCH, 256 };
	es_test_server_init(&fx, NULL);
	es_test_cfg_device(&fx.cfg, "DUAL", "cpu", 2, 64);
	es_test_cfg_model(&fx.cfg, "slow", REPO "/slow", "DUAL");
	es_test_server_start(&fx, NULL);
	es_test_sync_init(&sy);
	es_version *v = es_test_acquire(fx.srv, "slow", 0);
	for (int i = 0; i < 2; i++) {
		job_init(&jobs[i], &sy, v, 2, dims, 1.0f);
		/* each completion waits until the other request is in the
		 * device too: only two streams working at once get both past */
		jobs[i].rendezvous = true;
	}
	submit_concurrently(fx.srv, jobs, 2);
	es_test_wait_done(&sy, 2);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(jobs[i].status, 0);
		assert_true(jobs[i].met);
	}
	assert_int_not_equal(jobs[0].stream, jobs[1].stream);
	/* their device time [t_start, completion] overlaps */
	assert_true(jobs[0].t_start < jobs[1].t_done && jobs[1].t_start < jobs[0].t_done);
	es_version_release(v);
	for (int i = 0; i < 2; i++)
		job_free(&jobs[i]);
	es_test_sync_destroy(&sy);
	es_test_server_free(&fx);
}

static void test_queue_full_rejects_at_once(void **state)
{
	fixture fx;
	es_error err = { 0 };
	es_test_sync sy;
	job jobs[4];
	static const int64_t dims[] = { 1, 2 };
	es_test_server_init(&fx, NULL);
	es_test_cfg_device(&fx.cfg, "NPU0", "cpu", 1, 2);
	es_test_cfg_model(&fx.cfg, "multi", REPO "/multi", "NPU0")->policy.kind = ES_POLICY_ALL;
	es_test_server_start(&fx, NULL);
	es_test_sync_init(&sy);
	es_version *v = es_test_acquire(fx.srv, "multi", 0);
	for (int i = 0; i < 4; i++)
		job_init(&jobs[i], &sy, v, 2, dims, (float)i);
	jobs[0].block = true;

	/* the only stream is held by job 0, the queue takes two more */
	assert_int_equal(es_server_submit(fx.srv, &jobs[0].r, &err), 0);
	es_test_wait_blocked(&sy, 1);
	assert_int_equal(es_server_submit(fx.srv, &jobs[1].r, &err), 0);
	assert_int_equal(es_server_submit(fx.srv, &jobs[2].r, &err), 0);
	es_device_status ds;
	es_server_devices(fx.srv, &ds, 1);
	assert_int_equal(ds.queue_size, 2);
	assert_int_equal(ds.active, 1);
	uint64_t t0 = es_now_ns();
	assert_int_equal(es_server_submit(fx.srv, &jobs[3].r, &err), ES_EBUSY);
	assert_true(es_now_ns() - t0 < 1000000000ull); /* at once, not after a wait */
	assert_string_equal(err.msg, "device 'NPU0' queue is full (2 requests)");

	static const char *const dev[] = { "device", NULL };
	const char *npu[] = { "NPU0", NULL };
	assert_true(es_test_metric(&fx, "counter", "edgeserve_queue_rejections_total", dev, npu) == 1);
	assert_true(es_test_metric(&fx, "gauge", "edgeserve_queue_size", dev, npu) == 2);
	assert_true(es_test_metric(&fx, "gauge", "edgeserve_device_active_requests", dev, npu) == 1);
	assert_true(es_test_metric(&fx, "gauge", "edgeserve_queue_capacity", dev, npu) == 2);
	assert_true(es_test_metric(&fx, "gauge", "edgeserve_device_streams", dev, npu) == 1);

	es_test_open_gate(&sy);
	es_test_wait_done(&sy, 3);
	for (int i = 0; i < 3; i++)
		assert_int_equal(jobs[i].status, 0);
	assert_false(jobs[3].done);
	/* room again */
	assert_int_equal(es_server_submit(fx.srv, &jobs[3].r, &err), 0);
	es_test_wait_done(&sy, 4);
	assert_int_equal(jobs[3].status, 0);
	assert_float_equal(jobs[3].out[0], 3.0 + 2.0, 0);

	es_version_release(v);
	for (int i = 0; i < 4; i++)
		job_free(&jobs[i]);
	es_test_sync_destroy(&sy);
	es_test_server_free(&fx);
}

static void test_past_deadline_never_runs(void **state)
{
	fixture fx;
	es_error err = { 0 };
	es_test_sync sy;
	job j;
	static const int64_t dims[] = { 1, 2 };
	es_test_server_init(&fx, NULL);
	es_test_cfg_model(&fx.cfg, "multi", REPO "/multi", NULL)->policy.kind = ES_POLICY_ALL;
	es_test_server_start(&fx, NULL);
	es_test_sync_init(&sy);
	es_version *v = es_test_acquire(fx.srv, "multi", 1);
	job_init(&j, &sy, v, 2, dims, 1.0f);
	j.r.deadline_ns = es_now_ns() - 1;
	assert_int_equal(es_server_submit(fx.srv, &j.r, &err), 0);
	es_test_wait_done(&sy, 1);
	assert_int_equal(j.status, ES_ETIMEDOUT);
	assert_int_equal(j.t_start, 0);
	assert_int_equal(j.t_end, 0);
	assert_non_null(strstr(j.msg, "deadline exceeded while queued (waited "));
	assert_non_null(strstr(j.msg, "model 'multi' version 1"));

	static const char *const md[] = { "model", "device", NULL };
	const char *vals[] = { "multi", "CPU", NULL };
	assert_true(es_test_metric(&fx, "counter", "edgeserve_deadline_exceeded_total", md, vals) == 1);
	es_version_release(v);
	job_free(&j);
	es_test_sync_destroy(&sy);
	es_test_server_free(&fx);
}

static void test_reaper_answers_at_the_deadline(void **state)
{
	fixture fx;
	es_error err = { 0 };
	es_test_sync sy;
	job hold, late, fine;
	static const int64_t dims[] = { 1, 2 };
	es_test_server_init(&fx, NULL);
	es_test_cfg_device(&fx.cfg, "NPU0", "cpu", 1, 8);
	es_test_cfg_model(&fx.cfg, "multi", REPO "/multi", "NPU0")->policy.kind = ES_POLICY_ALL;
	es_test_server_start(&fx, NULL);
	es_test_sync_init(&sy);
	es_version *v = es_test_acquire(fx.srv, "multi", 2);
	job_init(&hold, &sy, v, 2, dims, 0);
	job_init(&late, &sy, v, 2, dims, 0);
	job_init(&fine, &sy, v, 2, dims, 0);
	hold.block = true;
	assert_int_equal(es_server_submit(fx.srv, &hold.r, &err), 0);
	es_test_wait_blocked(&sy, 1);

	/* the stream stays busy; `late` must still hear back at its deadline */
	uint64_t deadline = es_now_ns() + 30 * 1000000ull;
	late.r.deadline_ns = deadline;
	fine.r.deadline_ns = es_now_ns() + ES_TEST_WAIT_LIMIT_NS * 2;
	assert_int_equal(es_server_submit(fx.srv, &late.r, &err), 0);
	assert_int_equal(es_server_submit(fx.srv, &fine.r, &err), 0);
	es_test_wait_done(&sy, 1);
	assert_true(late.done);
	assert_false(hold.done);
	assert_false(fine.done);
	assert_int_equal(late.status, ES_ETIMEDOUT);
	assert_int_equal(late.t_start, 0);
	assert_true(late.t_done >= deadline);
	es_device_status ds;
	es_server_devices(fx.srv, &ds, 1);
	assert_int_equal(ds.queue_size, 1); /* `fine` still waits its turn */

	es_test_open_gate(&sy);
	es_test_wait_done(&sy, 3);
	assert_int_equal(hold.status, 0);
	assert_int_equal(fine.status, 0);
	assert_true(fine.t_start > 0);
	es_version_release(v);
	job_free(&hold);
	job_free(&late);
	job_free(&fine);
	es_test_sync_destroy(&sy);
	es_test_server_free(&fx);
}

static void test_drain_finishes_running_cancels_queued(void **state)
{
	fixture fx;
	es_error err = { 0 };
	es_test_sync sy;
	job jobs[3], after;
	static const int64_t dims[] = { 1, 2 };
	es_test_server_init(&fx, NULL);
	es_test_cfg_device(&fx.cfg, "NPU0", "cpu", 1, 8);
	es_test_cfg_model(&fx.cfg, "multi", REPO "/multi", "NPU0")->policy.kind = ES_POLICY_ALL;
	es_test_server_start(&fx, NULL);
	es_test_sync_init(&sy);
	es_version *v = es_test_acquire(fx.srv, "multi", 1);
	for (int i = 0; i < 3; i++)
		job_init(&jobs[i], &sy, v, 2, dims, 1.0f);
	job_init(&after, &sy, v, 2, dims, 1.0f);
	jobs[0].block = true;
	assert_int_equal(es_server_submit(fx.srv, &jobs[0].r, &err), 0);
	es_test_wait_blocked(&sy, 1);
	assert_int_equal(es_server_submit(fx.srv, &jobs[1].r, &err), 0);
	assert_int_equal(es_server_submit(fx.srv, &jobs[2].r, &err), 0);

	/* the running request outlives the drain timeout: the queued ones are
	 * cancelled, then drain waits for the running one */
	es_test_drainer d;
	es_test_drain_start(&d, fx.srv, 20);
	es_test_wait_done(&sy, 2);
	assert_int_equal(jobs[1].status, ES_ECANCELED);
	assert_int_equal(jobs[2].status, ES_ECANCELED);
	assert_int_equal(jobs[1].t_start, 0);
	assert_non_null(strstr(jobs[1].msg, "shutting down"));
	assert_false(jobs[0].done);
	assert_false(es_server_ready(fx.srv));
	assert_int_equal(es_server_submit(fx.srv, &after.r, &err), ES_ECANCELED);

	es_test_open_gate(&sy);
	es_test_drain_join(&d);
	/* drain returned only after the in-flight request completed */
	assert_true(jobs[0].done);
	assert_int_equal(jobs[0].status, 0);
	assert_float_equal(jobs[0].out[0], 2.0, 0);
	assert_int_equal(d.cancelled, 2);
	assert_false(after.done);

	es_version_release(v);
	for (int i = 0; i < 3; i++)
		job_free(&jobs[i]);
	job_free(&after);
	es_test_sync_destroy(&sy);
	es_test_server_free(&fx);
}

static void test_drain_lets_queue_finish(void **state)
{
	fixture fx;
	es_error err = { 0 };
	es_test_sync sy;
	job jobs[6];
	static const int64_t dims[] = { SLOW_BATCH, 256 };
	es_test_server_init(&fx, NULL);
	es_test_cfg_device(&fx.cfg, "NPU0", "cpu", 1, 8);
	es_test_cfg_model(&fx.cfg, "slow", REPO "/slow", "NPU0");
	es_test_server_start(&fx, NULL);
	es_test_sync_init(&sy);
	es_version *v = es_test_acquire(fx.srv, "slow", 0);
	for (int i = 0; i < 6; i++) {
		job_init(&jobs[i], &sy, v, 2, dims, 1.0f);
		assert_int_equal(es_server_submit(fx.srv, &jobs[i].r, &err), 0);
	}
	/* a generous timeout: everything queued finishes, nothing is cancelled */
	assert_int_equal(es_server_drain(fx.srv, 60000), 0);
	for (int i = 0; i < 6; i++) {
		assert_true(jobs[i].done);
		assert_int_equal(jobs[i].status, 0);
	}
	assert_int_equal(es_server_drain(fx.srv, 0), 0); /* again: nothing to do */
	es_version_release(v);
	for (int i = 0; i < 6; i++)
		job_free(&jobs[i]);
	es_test_sync_destroy(&sy);
	es_test_server_free(&fx);
}

static void test_load_errors_name_no_host_path(void **state)
{
	char msg[ES_ERROR_MSG_MAX];
	snprintf(msg, sizeof(msg), "cannot open '/srv/models/resnet/3/model.onnx': Permission denied");
	es_serving_scrub_paths(msg, sizeof(msg), "/srv/models/resnet", "resnet");
	assert_string_equal(msg, "cannot open 'resnet/3/model.onnx': Permission denied");

	snprintf(msg, sizeof(msg), "data file /etc/secret/weights.bin (from /srv/x) missing");
	es_serving_scrub_paths(msg, sizeof(msg), "/srv/models/resnet", "resnet");
	assert_string_equal(msg, "data file weights.bin (from x) missing");

	/* a short relative base path only matches a whole path prefix */
	snprintf(msg, sizeof(msg), "model 'm/1/model.onnx': bad model m");
	es_serving_scrub_paths(msg, sizeof(msg), "m", "mine");
	assert_string_equal(msg, "model 'mine/1/model.onnx': bad model mine");
	snprintf(msg, sizeof(msg), "mm/1 and m2/1 stay");
	es_serving_scrub_paths(msg, sizeof(msg), "m", "mine");
	assert_string_equal(msg, "mm/1 and m2/1 stay");
}

/* Readers acquire and release while the table is republished: the
 * grace period must never free a table or version a reader still uses
 * (run under ASan/TSan to make this test bite). */
typedef struct churn {
	es_servable *m;
	atomic_bool stop;
	atomic_long acquired;
} churn;

static void *churn_reader(void *arg)
{
	churn *c = arg;
	es_error err;
	while (!atomic_load(&c->stop)) {
		es_version *v = NULL;
		if (es_servable_acquire(c->m, 0, &v, &err) == 0) {
			if (es_version_number(v) != 2)
				abort();
			es_version_release(v);
			atomic_fetch_add(&c->acquired, 1);
		}
		es_version_status st[4];
		if (es_servable_status(c->m, st, 4) < 2)
			abort();
	}
	return NULL;
}

static void test_version_table_swaps_under_readers(void **state)
{
	fixture fx;
	es_test_server_init(&fx, NULL);
	es_test_cfg_model(&fx.cfg, "multi", REPO "/multi", NULL)->policy.num_versions = 2;
	es_test_server_start(&fx, NULL);
	es_servable *m = es_server_find_model(fx.srv, "multi");
	churn c = { .m = m };
	atomic_init(&c.stop, false);
	atomic_init(&c.acquired, 0);
	pthread_t th[3];
	for (int i = 0; i < 3; i++)
		assert_int_equal(pthread_create(&th[i], NULL, churn_reader, &c), 0);
	/* republish the same states many times, as a reload would */
	es_version_status st[4];
	for (int i = 0; i < 2000; i++) {
		assert_int_equal(es_serving_table_touch(m), 0);
		if (i == 1000) {
			/* let the readers make progress at least once */
			while (atomic_load(&c.acquired) == 0)
				sched_yield();
		}
	}
	atomic_store(&c.stop, true);
	for (int i = 0; i < 3; i++)
		pthread_join(th[i], NULL);
	assert_true(atomic_load(&c.acquired) > 0);
	assert_int_equal(es_servable_status(m, st, 4), 2);
	assert_int_equal(st[1].state, ES_VS_AVAILABLE);
	es_test_server_free(&fx);
}

static int quiet(void **state)
{
	es_log_set_level(ES_LOG_OFF);
	return 0;
}

/* Default intra-op threads: the cores explicit settings leave, shared by
 * every stream that leaves threads_per_stream open, across devices (a
 * device and its fallback both busy must not oversubscribe the cores). */
static int default_threads_for(int open_streams_a, int open_streams_b, int fixed_streams,
			       int fixed_threads, int *ncpu, int *fixed_out)
{
	es_test_server fx;
	es_test_server_init(&fx, NULL);
	es_device_config *a = es_test_cfg_device(&fx.cfg, "A", "cpu", open_streams_a, 8);
	a->threads_per_stream = 0;
	es_device_config *b = es_test_cfg_device(&fx.cfg, "B", "cpu", open_streams_b, 8);
	b->threads_per_stream = 0;
	if (fixed_streams) {
		es_device_config *c = es_test_cfg_device(&fx.cfg, "C", "cpu", fixed_streams, 8);
		c->threads_per_stream = fixed_threads;
	}
	es_test_server_start(&fx, NULL);
	es_server *s = fx.srv;
	*ncpu = s->ncpu;
	int t = s->devices[0].threads;
	assert_int_equal(s->devices[1].threads, t);
	*fixed_out = fixed_streams ? s->devices[2].threads : 0;
	es_test_server_free(&fx);
	return t;
}

static void test_default_threads_share_cores(void **state)
{
	(void)state;
	int ncpu, fixed;
	int t = default_threads_for(1, 1, 0, 0, &ncpu, &fixed);
	assert_int_equal(t, ncpu / 2 >= 1 ? ncpu / 2 : 1);
	t = default_threads_for(2, 1, 0, 0, &ncpu, &fixed);
	assert_int_equal(t, ncpu / 3 >= 1 ? ncpu / 3 : 1);
	/* explicit settings are kept and counted first */
	t = default_threads_for(1, 1, 1, 1, &ncpu, &fixed);
	assert_int_equal(fixed, 1);
	assert_int_equal(t, (ncpu - 1) / 2 >= 1 ? (ncpu - 1) / 2 : 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_latest_policy),
		cmocka_unit_test(test_default_threads_share_cores),
		cmocka_unit_test(test_all_policy),
		cmocka_unit_test(test_specific_policy),
		cmocka_unit_test(test_no_available_version),
		cmocka_unit_test(test_invalid_config_rejected),
		cmocka_unit_test(test_examples_inference),
		cmocka_unit_test(test_versions_run_their_own_model),
		cmocka_unit_test(test_submit_validates_inputs),
		cmocka_unit_test(test_sequential_device_never_overlaps),
		cmocka_unit_test(test_two_streams_run_in_parallel),
		cmocka_unit_test(test_queue_full_rejects_at_once),
		cmocka_unit_test(test_past_deadline_never_runs),
		cmocka_unit_test(test_reaper_answers_at_the_deadline),
		cmocka_unit_test(test_drain_finishes_running_cancels_queued),
		cmocka_unit_test(test_drain_lets_queue_finish),
		cmocka_unit_test(test_load_errors_name_no_host_path),
		cmocka_unit_test(test_version_table_swaps_under_readers),
	};
	return cmocka_run_group_tests(tests, quiet, NULL);
}
