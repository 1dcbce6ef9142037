/* Device backends and fallback: the backend table, spill to the fallback by
 * queue depth and by expected wait, device errors retried once on the
 * fallback, the low-priority queue below normal requests, drain of low
 * requests, and the fault-injecting test backend (tests/support/) that
 * drives all of it. Every wait has a deadline; ordering is forced with
 * completions that hold their stream until the test lets go. */
#define _GNU_SOURCE /* SCHED_IDLE */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "obs/log.h"
#include "obs/metrics.h"
#include "serving/serving.h"
#include "serving/serving_int.h"
#include "support/faulty_backend.h"
#include "support/serving_fixture.h"

#define REPO ES_TEST_SERVING_REPO
#define MAX_JOBS 16

/* ---- configuration ------------------------------------------------------------ */

/* A server whose fault control files live in its scratch directory. */
typedef es_test_server fixture;

/* Points d at a control file of fx's directory (created by fx_control). */
static void fx_fault_file(fixture *fx, es_device_config *d, const char *file)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", fx->tmp, file);
	d->fault_control = strdup(path);
}

static void fx_control(fixture *fx, const char *file, const char *json)
{
	char path[512], tmp[520];
	snprintf(path, sizeof(path), "%s/%s", fx->tmp, file);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	FILE *f = fopen(tmp, "w");
	assert_non_null(f);
	fputs(json, f);
	assert_int_equal(fclose(f), 0);
	/* a new inode: the backend notices even within one mtime tick */
	assert_int_equal(rename(tmp, path), 0);
}

/* Model "multi" on device, version 1 only (output = input + 1). */
static void fx_model(fixture *fx, const char *device)
{
	static const int64_t v1[] = { 1 };
	es_model_config *m = es_test_cfg_model(&fx->cfg, "multi", REPO "/multi", device);
	es_test_policy_specific(m, v1, 1);
	m->warmup = 0;
}

static double fallback_count(fixture *fx, const char *device, const char *fallback,
			     const char *reason)
{
	static const char *const labels[] = { "device", "fallback", "reason", NULL };
	const char *values[] = { device, fallback, reason, NULL };
	return es_test_metric(fx, "counter", "edgeserve_fallback_total", labels, values);
}

static es_version *acquire(fixture *fx)
{
	return es_test_acquire(fx->srv, "multi", 1);
}

/* ---- requests ---------------------------------------------------------------------- */

typedef struct job {
	es_request r;
	es_test_sync *sy;
	es_tensor in;
	float data[6];
	bool block; /* hold the stream in complete() until the gate opens */
	bool done;
	int order;  /* 1-based completion rank */
	int status;
	char msg[ES_ERROR_MSG_MAX];
	char device[32];
	char reason[32]; /* fallback_reason, "" for none */
	float out0;
	bool bad_outputs;
	int stream;  /* r->stream when it completed */
	int policy;  /* scheduling policy of the thread that completed it */
} job;

static void on_complete(es_request *r, const es_tensor *outputs, size_t n)
{
	job *j = r->user;
	es_test_sync *sy = j->sy;
	/* no cmocka asserts on a worker thread: record, check later */
	j->status = r->status;
	j->stream = r->stream;
	j->policy = sched_getscheduler(0);
	snprintf(j->msg, sizeof(j->msg), "%s", r->err.msg);
	snprintf(j->device, sizeof(j->device), "%s", r->device ? r->device : "");
	snprintf(j->reason, sizeof(j->reason), "%s",
		 r->fallback_reason ? r->fallback_reason : "");
	j->bad_outputs = r->status == 0 ? !outputs || n != 1 : outputs || n;
	if (r->status == 0 && outputs && n == 1)
		j->out0 = ((const float *)outputs[0].data)[0];
	uint64_t until = es_now_ns() + ES_TEST_WAIT_LIMIT_NS;
	pthread_mutex_lock(&sy->mu);
	if (j->block)
		es_test_hold_at_gate(sy, until);
	j->order = ++sy->seq;
	j->done = true;
	es_test_sync_finish(sy);
	pthread_mutex_unlock(&sy->mu);
}

/* A [3, 2] float request of value x for v. */
static void job_init(job *j, es_test_sync *sy, es_version *v, float x)
{
	memset(j, 0, sizeof(*j));
	j->sy = sy;
	for (int i = 0; i < 6; i++)
		j->data[i] = x;
	j->in.dtype = ES_DT_FLOAT;
	j->in.ndim = 2;
	j->in.dims[0] = 3;
	j->in.dims[1] = 2;
	j->in.data = j->data;
	j->in.nbytes = sizeof(j->data);
	j->r.version = v;
	j->r.inputs = &j->in;
	j->r.n_inputs = 1;
	j->r.complete = on_complete;
	j->r.user = j;
	j->r.id = "test";
}

static void submit(fixture *fx, job *j)
{
	es_error err = { 0 };
	int rc = es_server_submit(fx->srv, &j->r, &err);
	if (rc)
		fail_msg("submit: %d %s", rc, err.msg);
}

/* Holds the only stream of v's device: j runs, then waits in complete(). */
static void hold_stream(fixture *fx, es_test_sync *sy, job *j, es_version *v)
{
	job_init(j, sy, v, 0.0f);
	j->block = true;
	submit(fx, j);
	es_test_wait_blocked(sy, 1);
}

/* Submits n jobs from n threads released together. */
static void submit_concurrently(fixture *fx, job *jobs, int n)
{
	es_request *reqs[MAX_JOBS];
	assert_true(n <= MAX_JOBS);
	for (int i = 0; i < n; i++)
		reqs[i] = &jobs[i].r;
	es_test_submit_concurrently(fx->srv, reqs, n);
}

/* ---- the backend table ----------------------------------------------------------------- */

static void test_backend_table(void **state)
{
	assert_non_null(es_backend_find("cpu"));
	assert_string_equal(es_backend_find("cpu")->name, "cpu");
	assert_null(es_backend_find("faulty")); /* not in a plain build */
	assert_null(es_backend_find(NULL));
	assert_int_equal(es_faulty_backend_register(), 0);
	assert_ptr_equal(es_backend_find("faulty"), &es_faulty_backend);
	/* names are unique; "cpu" cannot be replaced */
	assert_int_equal(es_faulty_backend_register(), ES_EINVAL);
	es_backend cpu2 = es_faulty_backend;
	cpu2.name = "cpu";
	assert_int_equal(es_backend_register(&cpu2), ES_EINVAL);
	es_backend nameless = es_faulty_backend;
	nameless.name = "";
	assert_int_equal(es_backend_register(&nameless), ES_EINVAL);
	assert_int_equal(es_backend_register(NULL), ES_EINVAL);
}

static void test_unknown_backend_refused(void **state)
{
	fixture fx;
	es_error err = { 0 };
	es_test_server_init(&fx, "es_fallback");
	es_test_cfg_device(&fx.cfg, "NPU0", "nosuch", 1, 8);
	assert_int_not_equal(es_server_create(&fx.cfg, fx.metrics, &fx.srv, &err), 0);
	assert_null(fx.srv);
	assert_non_null(strstr(err.msg, "nosuch"));
	es_test_server_free(&fx);
}

/* ---- spill ------------------------------------------------------------------------------ */

/* NPU0 (one stream) spills to CPU (one stream) once one request waits. */
static void test_spill_by_queue_depth(void **state)
{
	fixture fx;
	es_test_sync sy;
	job hold, jobs[8];
	es_test_server_init(&fx, "es_fallback");
	es_device_config *npu = es_test_cfg_device(&fx.cfg, "NPU0", "cpu", 1, 64);
	npu->fallback = strdup("CPU");
	npu->spill_queue_depth = 1;
	es_test_cfg_device(&fx.cfg, "CPU", "cpu", 1, 64);
	fx_model(&fx, "NPU0");
	es_test_server_start(&fx, NULL);
	es_test_sync_init(&sy);
	es_version *v = acquire(&fx);

	/* with NPU0's stream held, the first of the concurrent submissions
	 * waits on NPU0 and every later one finds one waiting: it spills */
	hold_stream(&fx, &sy, &hold, v);
	for (int i = 0; i < 8; i++)
		job_init(&jobs[i], &sy, v, (float)i);
	submit_concurrently(&fx, jobs, 8);
	es_test_wait_done(&sy, 7); /* the spilled ones finish while NPU0 is held */
	es_test_open_gate(&sy);
	es_test_wait_done(&sy, 9);

	int on_npu = 0, on_cpu = 0;
	for (int i = 0; i < 8; i++) {
		job *j = &jobs[i];
		assert_false(j->bad_outputs);
		assert_int_equal(j->status, 0);
		assert_float_equal(j->out0, (float)i + 1.0f, 0);
		if (!strcmp(j->device, "CPU")) {
			on_cpu++;
			assert_string_equal(j->reason, "spill_queue");
		} else {
			on_npu++;
			assert_string_equal(j->device, "NPU0");
			assert_string_equal(j->reason, "");
		}
	}
	assert_int_equal(on_npu, 1);
	assert_int_equal(on_cpu, 7);
	assert_string_equal(hold.device, "NPU0");
	assert_true(fallback_count(&fx, "NPU0", "CPU", "spill_queue") == 7);
	assert_true(fallback_count(&fx, "NPU0", "CPU", "error") == 0);

	es_version_release(v);
	es_test_sync_destroy(&sy);
	es_test_server_free(&fx);
}

/* With the fallback full as well, the primary keeps what it has room for
 * and refuses the rest (503 as without a fallback). */
static void test_spill_when_fallback_full(void **state)
{
	fixture fx;
	es_test_sync sy;
	es_error err = { 0 };
	job hold_npu, hold_cpu, queued_cpu, a, b, c;
	es_test_server_init(&fx, "es_fallback");
	es_device_config *npu = es_test_cfg_device(&fx.cfg, "NPU0", "cpu", 1, 2);
	npu->fallback = strdup("CPU");
	npu->spill_queue_depth = 1;
	es_test_cfg_device(&fx.cfg, "CPU", "cpu", 1, 1);
	fx_model(&fx, "NPU0");
	es_test_server_start(&fx, NULL);
	es_test_sync_init(&sy);
	es_version *v = acquire(&fx);

	hold_stream(&fx, &sy, &hold_npu, v);     /* NPU0 running */
	job_init(&a, &sy, v, 1.0f);
	submit(&fx, &a);                          /* NPU0 queue: 1 */
	job_init(&hold_cpu, &sy, v, 2.0f);
	hold_cpu.block = true;
	submit(&fx, &hold_cpu);                   /* spills, runs on CPU, held */
	es_test_wait_blocked(&sy, 2);
	job_init(&queued_cpu, &sy, v, 3.0f);
	submit(&fx, &queued_cpu);                 /* spills, CPU queue: 1 (full) */
	job_init(&b, &sy, v, 4.0f);
	submit(&fx, &b);                          /* CPU full: NPU0 queue 2 */
	job_init(&c, &sy, v, 5.0f);
	assert_int_equal(es_server_submit(fx.srv, &c.r, &err), ES_EBUSY);
	assert_non_null(strstr(err.msg, "NPU0"));
	assert_non_null(strstr(err.msg, "CPU"));
	es_test_open_gate(&sy);
	es_test_wait_done(&sy, 5);
	assert_string_equal(hold_cpu.reason, "spill_queue");
	assert_string_equal(queued_cpu.device, "CPU");
	assert_string_equal(b.device, "NPU0");
	assert_string_equal(b.reason, "");
	assert_int_equal(b.status, 0);
	assert_true(fallback_count(&fx, "NPU0", "CPU", "spill_queue") == 2);

	es_version_release(v);
	es_test_sync_destroy(&sy);
	es_test_server_free(&fx);
}

/* The expected wait ((queued + active) * mean service time / streams) over
 * spill_wait_ms sends new requests to the fallback. */
static void test_spill_by_expected_wait(void **state)
{
	fixture fx;
	es_test_sync sy;
	job first, hold, late;
	es_test_server_init(&fx, "es_fallback");
	es_device_config *npu = es_test_cfg_device(&fx.cfg, "NPU0", "faulty", 1, 64);
	npu->fallback = strdup("CPU");
	npu->spill_wait_ms = 10;
	fx_fault_file(&fx, npu, "npu.json");
	es_test_cfg_device(&fx.cfg, "CPU", "cpu", 1, 64);
	fx_model(&fx, "NPU0");
	/* every NPU0 run takes at least 30 ms: the mean service time too */
	fx_control(&fx, "npu.json", "{\"rules\": [{\"model\": \"multi\", \"latency_ms\": 30}]}");
	es_test_server_start(&fx, NULL);
	es_test_sync_init(&sy);
	es_version *v = acquire(&fx);

	/* nothing measured yet, nothing queued: stays */
	job_init(&first, &sy, v, 1.0f);
	submit(&fx, &first);
	es_test_wait_done(&sy, 1);
	assert_string_equal(first.device, "NPU0");
	/* the same stream ran `first` and now holds: the mean is known, and one
	 * request is active, so the expected wait is >= 30 ms > 10 ms */
	hold_stream(&fx, &sy, &hold, v);
	assert_string_equal(hold.reason, "");
	job_init(&late, &sy, v, 2.0f);
	submit(&fx, &late);
	es_test_wait_done(&sy, 2);
	assert_int_equal(late.status, 0);
	assert_string_equal(late.device, "CPU");
	assert_string_equal(late.reason, "spill_wait");
	assert_float_equal(late.out0, 3.0f, 0);
	es_test_open_gate(&sy);
	es_test_wait_done(&sy, 3);
	assert_true(fallback_count(&fx, "NPU0", "CPU", "spill_wait") == 1);
	assert_true(fallback_count(&fx, "NPU0", "CPU", "spill_queue") == 0);

	es_version_release(v);
	es_test_sync_destroy(&sy);
	es_test_server_free(&fx);
}

/* ---- retries ------------------------------------------------------------------------------ */

static void test_device_error_retried_on_fallback(void **state)
{
	fixture fx;
	es_test_sync sy;
	job jobs[6];
	es_test_server_init(&fx, "es_fallback");
	es_device_config *npu = es_test_cfg_device(&fx.cfg, "NPU0", "faulty", 1, 64);
	npu->fallback = strdup("CPU");
	fx_fault_file(&fx, npu, "npu.json");
	es_test_cfg_device(&fx.cfg, "CPU", "cpu", 2, 64);
	fx_model(&fx, "NPU0");
	fx_control(&fx, "npu.json",
		   "{\"rules\": [{\"model\": \"multi\", \"version\": 1, \"error_every\": 1}]}");
	es_test_server_start(&fx, NULL);
	es_test_sync_init(&sy);
	es_version *v = acquire(&fx);

	for (int i = 0; i < 6; i++)
		job_init(&jobs[i], &sy, v, (float)(10 * i));
	submit_concurrently(&fx, jobs, 6);
	es_test_wait_done(&sy, 6);
	for (int i = 0; i < 6; i++) {
		assert_false(jobs[i].bad_outputs);
		assert_int_equal(jobs[i].status, 0);
		assert_float_equal(jobs[i].out0, (float)(10 * i) + 1.0f, 0);
		assert_string_equal(jobs[i].device, "CPU");
		assert_string_equal(jobs[i].reason, "error");
	}
	assert_true(fallback_count(&fx, "NPU0", "CPU", "error") == 6);
	assert_true(fallback_count(&fx, "NPU0", "CPU", "failed") == 0);

	/* error_every 2: every second NPU0 run fails; a changed file restarts
	 * the count */
	fx_control(&fx, "npu.json",
		   "{\"rules\": [{\"model\": \"multi\", \"error_every\": 2}]}");
	for (int i = 0; i < 4; i++) {
		job j;
		job_init(&j, &sy, v, 1.0f);
		submit(&fx, &j);
		es_test_wait_done(&sy, 7 + i);
		assert_int_equal(j.status, 0);
		assert_string_equal(j.device, i % 2 ? "CPU" : "NPU0");
		assert_string_equal(j.reason, i % 2 ? "error" : "");
	}
	assert_true(fallback_count(&fx, "NPU0", "CPU", "error") == 8);

	es_version_release(v);
	es_test_sync_destroy(&sy);
	es_test_server_free(&fx);
}

static void test_error_on_both_devices(void **state)
{
	fixture fx;
	es_test_sync sy;
	job j;
	es_test_server_init(&fx, "es_fallback");
	es_device_config *npu = es_test_cfg_device(&fx.cfg, "NPU0", "faulty", 1, 64);
	npu->fallback = strdup("GPU0");
	fx_fault_file(&fx, npu, "npu.json");
	es_device_config *gpu = es_test_cfg_device(&fx.cfg, "GPU0", "faulty", 1, 64);
	fx_fault_file(&fx, gpu, "gpu.json");
	fx_model(&fx, "NPU0");
	fx_control(&fx, "npu.json", "{\"rules\": [{\"model\": \"multi\", \"error_every\": 1}]}");
	fx_control(&fx, "gpu.json", "{\"rules\": [{\"model\": \"multi\", \"error_every\": 1}]}");
	es_test_server_start(&fx, NULL);
	es_test_sync_init(&sy);
	es_version *v = acquire(&fx);

	job_init(&j, &sy, v, 1.0f);
	submit(&fx, &j);
	es_test_wait_done(&sy, 1);
	assert_false(j.bad_outputs);
	assert_int_equal(j.status, ES_EINTERNAL);
	assert_non_null(strstr(j.msg, "injected device error"));
	assert_non_null(strstr(j.msg, "GPU0")); /* the fallback's error */
	assert_string_equal(j.device, "GPU0");
	assert_string_equal(j.reason, "error");
	assert_true(fallback_count(&fx, "NPU0", "GPU0", "error") == 1);
	assert_true(fallback_count(&fx, "NPU0", "GPU0", "failed") == 1);

	es_version_release(v);
	es_test_sync_destroy(&sy);
	es_test_server_free(&fx);
}

/* Without a fallback a device error reaches the client as it is. */
static void test_error_without_fallback(void **state)
{
	fixture fx;
	es_test_sync sy;
	job j;
	es_test_server_init(&fx, "es_fallback");
	es_device_config *npu = es_test_cfg_device(&fx.cfg, "NPU0", "faulty", 1, 64);
	fx_fault_file(&fx, npu, "npu.json");
	fx_model(&fx, "NPU0");
	fx_control(&fx, "npu.json", "{\"rules\": [{\"model\": \"multi\", \"error_every\": 1}]}");
	es_test_server_start(&fx, NULL);
	es_test_sync_init(&sy);
	es_version *v = acquire(&fx);
	job_init(&j, &sy, v, 1.0f);
	submit(&fx, &j);
	es_test_wait_done(&sy, 1);
	assert_int_equal(j.status, ES_EINTERNAL);
	assert_non_null(strstr(j.msg, "injected device error"));
	assert_string_equal(j.device, "NPU0");
	assert_string_equal(j.reason, "");
	es_version_release(v);
	es_test_sync_destroy(&sy);
	es_test_server_free(&fx);
}

/* ---- the faulty backend's control file ---------------------------------------------------------- */

static void run_one(fixture *fx, es_test_sync *sy, es_version *v, job *j, int n_done)
{
	job_init(j, sy, v, 1.0f);
	submit(fx, j);
	es_test_wait_done(sy, n_done);
	assert_false(j->bad_outputs);
}

static void test_fault_control_file(void **state)
{
	fixture fx;
	es_test_sync sy;
	job j;
	int n = 0;
	es_test_server_init(&fx, "es_fallback");
	es_device_config *npu = es_test_cfg_device(&fx.cfg, "NPU0", "faulty", 1, 64);
	fx_fault_file(&fx, npu, "npu.json");
	fx_model(&fx, "NPU0");
	es_test_server_start(&fx, NULL);
	es_test_sync_init(&sy);
	es_version *v = acquire(&fx);

	/* missing: the engine's result */
	run_one(&fx, &sy, v, &j, ++n);
	assert_int_equal(j.status, 0);
	assert_float_equal(j.out0, 2.0f, 0);
	/* output drift */
	fx_control(&fx, "npu.json",
		   "{\"rules\": [{\"model\": \"multi\", \"output_bias\": 0.5}]}");
	run_one(&fx, &sy, v, &j, ++n);
	assert_int_equal(j.status, 0);
	assert_float_equal(j.out0, 2.5f, 1e-6);
	/* a rule of another version or model does not apply */
	fx_control(&fx, "npu.json",
		   "{\"rules\": [{\"model\": \"multi\", \"version\": 2, \"error_every\": 1},"
		   " {\"model\": \"other\", \"error_every\": 1}]}");
	run_one(&fx, &sy, v, &j, ++n);
	assert_int_equal(j.status, 0);
	assert_float_equal(j.out0, 2.0f, 0);
	/* malformed (an unknown key): no faults */
	fx_control(&fx, "npu.json",
		   "{\"rules\": [{\"model\": \"multi\", \"error_every\": 1, \"bogus\": 1}]}");
	run_one(&fx, &sy, v, &j, ++n);
	assert_int_equal(j.status, 0);
	fx_control(&fx, "npu.json", "{\"rules\": [{\"model\": \"multi\", \"error_every\": -1}]}");
	run_one(&fx, &sy, v, &j, ++n);
	assert_int_equal(j.status, 0);
	fx_control(&fx, "npu.json", "not json");
	run_one(&fx, &sy, v, &j, ++n);
	assert_int_equal(j.status, 0);
	/* valid again: every run fails */
	fx_control(&fx, "npu.json", "{\"rules\": [{\"model\": \"multi\", \"error_every\": 1}]}");
	run_one(&fx, &sy, v, &j, ++n);
	assert_int_equal(j.status, ES_EINTERNAL);
	/* error_every 0: never */
	fx_control(&fx, "npu.json", "{\"rules\": [{\"model\": \"multi\", \"error_every\": 0}]}");
	run_one(&fx, &sy, v, &j, ++n);
	assert_int_equal(j.status, 0);
	/* removed: no faults */
	char path[512];
	snprintf(path, sizeof(path), "%s/npu.json", fx.tmp);
	assert_int_equal(unlink(path), 0);
	run_one(&fx, &sy, v, &j, ++n);
	assert_int_equal(j.status, 0);
	assert_float_equal(j.out0, 2.0f, 0);

	es_version_release(v);
	es_test_sync_destroy(&sy);
	es_test_server_free(&fx);
}

/* ---- the low-priority queue ------------------------------------------------------------------------ */

/* The low queue (shadow runs) has its own worker at SCHED_IDLE priority: it
 * runs while every stream is busy, never on a stream, and is bounded by the
 * capacity its caller gives. */
static void test_low_queue_has_its_own_idle_worker(void **state)
{
	fixture fx;
	es_test_sync sy;
	es_error err = { 0 };
	job hold, low1, low2, low3, low4, n1;
	(void)state;
	es_test_server_init(&fx, "es_fallback");
	es_test_cfg_device(&fx.cfg, "NPU0", "cpu", 1, 64);
	fx_model(&fx, "NPU0");
	es_test_server_start(&fx, NULL);
	es_test_sync_init(&sy);
	es_version *v = acquire(&fx);

	hold_stream(&fx, &sy, &hold, v);
	/* the only stream is held: a low run still completes */
	job_init(&low1, &sy, v, 1.0f);
	assert_int_equal(es_sched_submit_low(fx.srv, &low1.r, 2, &err), 0);
	es_test_wait_done(&sy, 1);
	assert_true(low1.done);
	assert_false(hold.done);
	assert_int_equal(low1.status, 0);
	assert_float_equal(low1.out0, 2.0f, 0); /* y = x + 1 */
	assert_int_equal(low1.stream, -1);      /* not a stream */
	assert_int_equal(low1.policy, SCHED_IDLE);

	/* hold the idle worker too: the low queue is bounded */
	job_init(&low2, &sy, v, 2.0f);
	low2.block = true;
	assert_int_equal(es_sched_submit_low(fx.srv, &low2.r, 2, &err), 0);
	es_test_wait_blocked(&sy, 2);
	job_init(&low3, &sy, v, 3.0f);
	job_init(&low4, &sy, v, 4.0f);
	assert_int_equal(es_sched_submit_low(fx.srv, &low3.r, 1, &err), 0);
	assert_int_equal(es_sched_submit_low(fx.srv, &low4.r, 1, &err), ES_EBUSY);
	assert_non_null(strstr(err.msg, "NPU0"));
	/* normal requests run on the stream, never on the idle worker */
	job_init(&n1, &sy, v, 5.0f);
	submit(&fx, &n1);
	es_test_open_gate(&sy);
	es_test_wait_done(&sy, 5);
	assert_int_equal(n1.status, 0);
	assert_int_equal(n1.stream, 0);
	assert_true(n1.policy != SCHED_IDLE);
	assert_int_equal(low3.status, 0);
	assert_float_equal(low3.out0, 4.0f, 0);
	assert_int_equal(low3.policy, SCHED_IDLE);

	es_device_status ds[1];
	assert_int_equal(es_server_devices(fx.srv, ds, 1), 1);
	assert_int_equal(ds[0].queue_size, 0);

	es_version_release(v);
	es_test_sync_destroy(&sy);
	es_test_server_free(&fx);
}

static void test_drain_cancels_low(void **state)
{
	fixture fx;
	es_test_sync sy;
	es_error err = { 0 };
	job busy, low1, low2, late;
	es_test_drainer dr;
	(void)state;
	es_test_server_init(&fx, "es_fallback");
	es_test_cfg_device(&fx.cfg, "NPU0", "cpu", 1, 64);
	fx_model(&fx, "NPU0");
	es_test_server_start(&fx, NULL);
	es_test_sync_init(&sy);
	es_version *v = acquire(&fx);

	/* the idle worker is held by one low run; two more wait behind it */
	job_init(&busy, &sy, v, 0.0f);
	busy.block = true;
	assert_int_equal(es_sched_submit_low(fx.srv, &busy.r, 8, &err), 0);
	es_test_wait_blocked(&sy, 1);
	job_init(&low1, &sy, v, 1.0f);
	job_init(&low2, &sy, v, 2.0f);
	assert_int_equal(es_sched_submit_low(fx.srv, &low1.r, 8, &err), 0);
	assert_int_equal(es_sched_submit_low(fx.srv, &low2.r, 8, &err), 0);
	es_test_drain_start(&dr, fx.srv, 0);
	/* the waiting ones are cancelled while the held one still runs */
	es_test_wait_done(&sy, 2);
	assert_int_equal(low1.status, ES_ECANCELED);
	assert_int_equal(low2.status, ES_ECANCELED);
	assert_false(busy.done);
	/* nothing new is taken */
	job_init(&late, &sy, v, 3.0f);
	assert_int_equal(es_sched_submit_low(fx.srv, &late.r, 8, &err), ES_ECANCELED);
	es_test_open_gate(&sy);
	es_test_drain_join(&dr);
	assert_int_equal(dr.cancelled, 2);
	assert_int_equal(busy.status, 0);

	es_version_release(v);
	es_test_sync_destroy(&sy);
	es_test_server_free(&fx);
}

int main(void)
{
	es_log_set_level(ES_LOG_ERROR);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_backend_table),
		cmocka_unit_test(test_unknown_backend_refused),
		cmocka_unit_test(test_spill_by_queue_depth),
		cmocka_unit_test(test_spill_when_fallback_full),
		cmocka_unit_test(test_spill_by_expected_wait),
		cmocka_unit_test(test_device_error_retried_on_fallback),
		cmocka_unit_test(test_error_on_both_devices),
		cmocka_unit_test(test_error_without_fallback),
		cmocka_unit_test(test_fault_control_file),
		cmocka_unit_test(test_low_queue_has_its_own_idle_worker),
		cmocka_unit_test(test_drain_cancels_low),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
