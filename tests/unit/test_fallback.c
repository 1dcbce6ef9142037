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

#include <errno.h>
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

#define REPO ES_TEST_DATA_DIR "/serving/repo"
/* Upper bound of every wait: reaching it is a failure. */
#define WAIT_LIMIT_NS (20ull * 1000000000ull)
#define MAX_JOBS 16

/* ---- configuration ------------------------------------------------------------ */

typedef struct fixture {
	es_server_config cfg;
	es_metrics *metrics;
	es_server *srv;
	char dir[64]; /* control files */
} fixture;

static void fx_init(fixture *fx)
{
	memset(fx, 0, sizeof(*fx));
	es_config_defaults(&fx->cfg);
	fx->metrics = es_metrics_new();
	assert_non_null(fx->metrics);
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/es_fallback_XXXXXX");
	assert_non_null(mkdtemp(fx->dir));
}

/* Adds a device (the first call replaces the default CPU device). */
static es_device_config *fx_device(fixture *fx, const char *name, const char *backend,
				   int streams, int queue)
{
	es_server_config *cfg = &fx->cfg;
	es_device_config *d;
	if (cfg->n_devices == 1 && !strcmp(cfg->devices[0].name, "CPU") &&
	    strcmp(name, "CPU") && !cfg->devices[0].fallback) {
		d = &cfg->devices[0];
		free(d->name);
		free(d->backend);
	} else {
		cfg->devices = realloc(cfg->devices, (cfg->n_devices + 1) * sizeof(*d));
		assert_non_null(cfg->devices);
		d = &cfg->devices[cfg->n_devices++];
	}
	memset(d, 0, sizeof(*d));
	d->name = strdup(name);
	d->backend = strdup(backend);
	d->streams = streams;
	d->threads_per_stream = 1;
	d->max_queue_size = queue;
	return d;
}

/* Points d at a control file of fx's directory (created by fx_control). */
static void fx_fault_file(fixture *fx, es_device_config *d, const char *file)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/%s", fx->dir, file);
	d->fault_control = strdup(path);
}

static void fx_control(fixture *fx, const char *file, const char *json)
{
	char path[128], tmp[140];
	snprintf(path, sizeof(path), "%s/%s", fx->dir, file);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	FILE *f = fopen(tmp, "w");
	assert_non_null(f);
	fputs(json, f);
	assert_int_equal(fclose(f), 0);
	/* a new inode: the backend notices even within one mtime tick */
	assert_int_equal(rename(tmp, path), 0);
}

static void fx_model(fixture *fx, const char *device)
{
	es_server_config *cfg = &fx->cfg;
	cfg->models = realloc(cfg->models, (cfg->n_models + 1) * sizeof(*cfg->models));
	assert_non_null(cfg->models);
	es_model_config *m = &cfg->models[cfg->n_models++];
	memset(m, 0, sizeof(*m));
	m->name = strdup("multi");
	m->base_path = strdup(REPO "/multi");
	m->target_device = strdup(device);
	m->policy.kind = ES_POLICY_SPECIFIC;
	m->policy.versions = calloc(1, sizeof(int64_t));
	assert_non_null(m->policy.versions);
	m->policy.versions[0] = 1; /* output = input + 1 */
	m->policy.n_versions = 1;
	m->warmup = 0;
}

static void fx_start(fixture *fx)
{
	es_error err = { 0 };
	int rc = es_server_create(&fx->cfg, fx->metrics, &fx->srv, &err);
	if (rc)
		fail_msg("es_server_create: %d %s", rc, err.msg);
}

static void fx_free(fixture *fx)
{
	char cmd[128];
	es_server_destroy(fx->srv);
	es_config_free(&fx->cfg);
	es_metrics_free(fx->metrics);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx->dir);
	assert_int_equal(system(cmd), 0);
}

static double fallback_count(fixture *fx, const char *device, const char *fallback,
			     const char *reason)
{
	static const char *const labels[] = { "device", "fallback", "reason", NULL };
	const char *values[] = { device, fallback, reason, NULL };
	es_metric *f = es_metrics_counter(fx->metrics, "edgeserve_fallback_total", "lookup",
					  labels);
	assert_non_null(f);
	return es_metric_value(es_metric_get(f, values));
}

static es_version *acquire(fixture *fx)
{
	es_error err = { 0 };
	es_version *v = NULL;
	es_servable *m = es_server_find_model(fx->srv, "multi");
	assert_non_null(m);
	if (es_servable_acquire(m, 1, &v, &err))
		fail_msg("acquire: %s", err.msg);
	return v;
}

/* ---- requests ---------------------------------------------------------------------- */

typedef struct sync {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int done;
	int blocked;
	bool gate_open;
	int seq; /* completion order */
} sync_t;

typedef struct job {
	es_request r;
	sync_t *sy;
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

static void sync_init(sync_t *sy)
{
	memset(sy, 0, sizeof(*sy));
	pthread_mutex_init(&sy->mu, NULL);
	pthread_condattr_t a;
	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_init(&sy->cv, &a);
	pthread_condattr_destroy(&a);
}

static void sync_destroy(sync_t *sy)
{
	pthread_cond_destroy(&sy->cv);
	pthread_mutex_destroy(&sy->mu);
}

static bool sync_wait(sync_t *sy, uint64_t until)
{
	struct timespec ts = { (time_t)(until / 1000000000ull), (long)(until % 1000000000ull) };
	return pthread_cond_timedwait(&sy->cv, &sy->mu, &ts) != ETIMEDOUT ||
	       es_now_ns() < until;
}

static void on_complete(es_request *r, const es_tensor *outputs, size_t n)
{
	job *j = r->user;
	sync_t *sy = j->sy;
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
	uint64_t until = es_now_ns() + WAIT_LIMIT_NS;
	pthread_mutex_lock(&sy->mu);
	if (j->block) {
		sy->blocked++;
		pthread_cond_broadcast(&sy->cv);
		while (!sy->gate_open && sync_wait(sy, until))
			;
	}
	j->order = ++sy->seq;
	j->done = true;
	sy->done++;
	pthread_cond_broadcast(&sy->cv);
	pthread_mutex_unlock(&sy->mu);
}

/* A [3, 2] float request of value x for v. */
static void job_init(job *j, sync_t *sy, es_version *v, float x)
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

static void wait_done(sync_t *sy, int n)
{
	uint64_t until = es_now_ns() + WAIT_LIMIT_NS;
	pthread_mutex_lock(&sy->mu);
	while (sy->done < n && sync_wait(sy, until))
		;
	int done = sy->done;
	pthread_mutex_unlock(&sy->mu);
	if (done < n)
		fail_msg("only %d of %d requests completed in time", done, n);
}

static void wait_blocked(sync_t *sy, int n)
{
	uint64_t until = es_now_ns() + WAIT_LIMIT_NS;
	pthread_mutex_lock(&sy->mu);
	while (sy->blocked < n && sync_wait(sy, until))
		;
	int blocked = sy->blocked;
	pthread_mutex_unlock(&sy->mu);
	if (blocked < n)
		fail_msg("only %d of %d requests reached their stream in time", blocked, n);
}

static void open_gate(sync_t *sy)
{
	pthread_mutex_lock(&sy->mu);
	sy->gate_open = true;
	pthread_cond_broadcast(&sy->cv);
	pthread_mutex_unlock(&sy->mu);
}

static void submit(fixture *fx, job *j)
{
	es_error err = { 0 };
	int rc = es_server_submit(fx->srv, &j->r, &err);
	if (rc)
		fail_msg("submit: %d %s", rc, err.msg);
}

/* Holds the only stream of v's device: j runs, then waits in complete(). */
static void hold_stream(fixture *fx, sync_t *sy, job *j, es_version *v)
{
	job_init(j, sy, v, 0.0f);
	j->block = true;
	submit(fx, j);
	wait_blocked(sy, 1);
}

typedef struct submitter {
	pthread_t thread;
	pthread_barrier_t *barrier;
	fixture *fx;
	job *j;
	int rc;
	es_error err;
} submitter;

static void *submit_main(void *arg)
{
	submitter *s = arg;
	pthread_barrier_wait(s->barrier);
	s->rc = es_server_submit(s->fx->srv, &s->j->r, &s->err);
	return NULL;
}

static void submit_concurrently(fixture *fx, job *jobs, int n)
{
	pthread_barrier_t barrier;
	submitter subs[MAX_JOBS];
	assert_true(n <= MAX_JOBS);
	pthread_barrier_init(&barrier, NULL, (unsigned)n);
	for (int i = 0; i < n; i++) {
		subs[i] = (submitter){ .barrier = &barrier, .fx = fx, .j = &jobs[i] };
		assert_int_equal(pthread_create(&subs[i].thread, NULL, submit_main, &subs[i]), 0);
	}
	for (int i = 0; i < n; i++) {
		pthread_join(subs[i].thread, NULL);
		if (subs[i].rc)
			fail_msg("submit %d: %d %s", i, subs[i].rc, subs[i].err.msg);
	}
	pthread_barrier_destroy(&barrier);
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
	fx_init(&fx);
	fx_device(&fx, "NPU0", "nosuch", 1, 8);
	assert_int_not_equal(es_server_create(&fx.cfg, fx.metrics, &fx.srv, &err), 0);
	assert_null(fx.srv);
	assert_non_null(strstr(err.msg, "nosuch"));
	fx_free(&fx);
}

/* ---- spill ------------------------------------------------------------------------------ */

/* NPU0 (one stream) spills to CPU (one stream) once one request waits. */
static void test_spill_by_queue_depth(void **state)
{
	fixture fx;
	sync_t sy;
	job hold, jobs[8];
	fx_init(&fx);
	es_device_config *npu = fx_device(&fx, "NPU0", "cpu", 1, 64);
	npu->fallback = strdup("CPU");
	npu->spill_queue_depth = 1;
	fx_device(&fx, "CPU", "cpu", 1, 64);
	fx_model(&fx, "NPU0");
	fx_start(&fx);
	sync_init(&sy);
	es_version *v = acquire(&fx);

	/* with NPU0's stream held, the first of the concurrent submissions
	 * waits on NPU0 and every later one finds one waiting: it spills */
	hold_stream(&fx, &sy, &hold, v);
	for (int i = 0; i < 8; i++)
		job_init(&jobs[i], &sy, v, (float)i);
	submit_concurrently(&fx, jobs, 8);
	wait_done(&sy, 7); /* the spilled ones finish while NPU0 is held */
	open_gate(&sy);
	wait_done(&sy, 9);

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
	sync_destroy(&sy);
	fx_free(&fx);
}

/* With the fallback full as well, the primary keeps what it has room for
 * and refuses the rest (503 as without a fallback). */
static void test_spill_when_fallback_full(void **state)
{
	fixture fx;
	sync_t sy;
	es_error err = { 0 };
	job hold_npu, hold_cpu, queued_cpu, a, b, c;
	fx_init(&fx);
	es_device_config *npu = fx_device(&fx, "NPU0", "cpu", 1, 2);
	npu->fallback = strdup("CPU");
	npu->spill_queue_depth = 1;
	fx_device(&fx, "CPU", "cpu", 1, 1);
	fx_model(&fx, "NPU0");
	fx_start(&fx);
	sync_init(&sy);
	es_version *v = acquire(&fx);

	hold_stream(&fx, &sy, &hold_npu, v);     /* NPU0 running */
	job_init(&a, &sy, v, 1.0f);
	submit(&fx, &a);                          /* NPU0 queue: 1 */
	job_init(&hold_cpu, &sy, v, 2.0f);
	hold_cpu.block = true;
	submit(&fx, &hold_cpu);                   /* spills, runs on CPU, held */
	wait_blocked(&sy, 2);
	job_init(&queued_cpu, &sy, v, 3.0f);
	submit(&fx, &queued_cpu);                 /* spills, CPU queue: 1 (full) */
	job_init(&b, &sy, v, 4.0f);
	submit(&fx, &b);                          /* CPU full: NPU0 queue 2 */
	job_init(&c, &sy, v, 5.0f);
	assert_int_equal(es_server_submit(fx.srv, &c.r, &err), ES_EBUSY);
	assert_non_null(strstr(err.msg, "NPU0"));
	assert_non_null(strstr(err.msg, "CPU"));
	open_gate(&sy);
	wait_done(&sy, 5);
	assert_string_equal(hold_cpu.reason, "spill_queue");
	assert_string_equal(queued_cpu.device, "CPU");
	assert_string_equal(b.device, "NPU0");
	assert_string_equal(b.reason, "");
	assert_int_equal(b.status, 0);
	assert_true(fallback_count(&fx, "NPU0", "CPU", "spill_queue") == 2);

	es_version_release(v);
	sync_destroy(&sy);
	fx_free(&fx);
}

/* The expected wait ((queued + active) * mean service time / streams) over
 * spill_wait_ms sends new requests to the fallback. */
static void test_spill_by_expected_wait(void **state)
{
	fixture fx;
	sync_t sy;
	job first, hold, late;
	fx_init(&fx);
	es_device_config *npu = fx_device(&fx, "NPU0", "faulty", 1, 64);
	npu->fallback = strdup("CPU");
	npu->spill_wait_ms = 10;
	fx_fault_file(&fx, npu, "npu.json");
	fx_device(&fx, "CPU", "cpu", 1, 64);
	fx_model(&fx, "NPU0");
	/* every NPU0 run takes at least 30 ms: the mean service time too */
	fx_control(&fx, "npu.json", "{\"rules\": [{\"model\": \"multi\", \"latency_ms\": 30}]}");
	fx_start(&fx);
	sync_init(&sy);
	es_version *v = acquire(&fx);

	/* nothing measured yet, nothing queued: stays */
	job_init(&first, &sy, v, 1.0f);
	submit(&fx, &first);
	wait_done(&sy, 1);
	assert_string_equal(first.device, "NPU0");
	/* the same stream ran `first` and now holds: the mean is known, and one
	 * request is active, so the expected wait is >= 30 ms > 10 ms */
	hold_stream(&fx, &sy, &hold, v);
	assert_string_equal(hold.reason, "");
	job_init(&late, &sy, v, 2.0f);
	submit(&fx, &late);
	wait_done(&sy, 2);
	assert_int_equal(late.status, 0);
	assert_string_equal(late.device, "CPU");
	assert_string_equal(late.reason, "spill_wait");
	assert_float_equal(late.out0, 3.0f, 0);
	open_gate(&sy);
	wait_done(&sy, 3);
	assert_true(fallback_count(&fx, "NPU0", "CPU", "spill_wait") == 1);
	assert_true(fallback_count(&fx, "NPU0", "CPU", "spill_queue") == 0);

	es_version_release(v);
	sync_destroy(&sy);
	fx_free(&fx);
}

/* ---- retries ------------------------------------------------------------------------------ */

static void test_device_error_retried_on_fallback(void **state)
{
	fixture fx;
	sync_t sy;
	job jobs[6];
	fx_init(&fx);
	es_device_config *npu = fx_device(&fx, "NPU0", "faulty", 1, 64);
	npu->fallback = strdup("CPU");
	fx_fault_file(&fx, npu, "npu.json");
	fx_device(&fx, "CPU", "cpu", 2, 64);
	fx_model(&fx, "NPU0");
	fx_control(&fx, "npu.json",
		   "{\"rules\": [{\"model\": \"multi\", \"version\": 1, \"error_every\": 1}]}");
	fx_start(&fx);
	sync_init(&sy);
	es_version *v = acquire(&fx);

	for (int i = 0; i < 6; i++)
		job_init(&jobs[i], &sy, v, (float)(10 * i));
	submit_concurrently(&fx, jobs, 6);
	wait_done(&sy, 6);
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
		wait_done(&sy, 7 + i);
		assert_int_equal(j.status, 0);
		assert_string_equal(j.device, i % 2 ? "CPU" : "NPU0");
		assert_string_equal(j.reason, i % 2 ? "error" : "");
	}
	assert_true(fallback_count(&fx, "NPU0", "CPU", "error") == 8);

	es_version_release(v);
	sync_destroy(&sy);
	fx_free(&fx);
}

static void test_error_on_both_devices(void **state)
{
	fixture fx;
	sync_t sy;
	job j;
	fx_init(&fx);
	es_device_config *npu = fx_device(&fx, "NPU0", "faulty", 1, 64);
	npu->fallback = strdup("GPU0");
	fx_fault_file(&fx, npu, "npu.json");
	es_device_config *gpu = fx_device(&fx, "GPU0", "faulty", 1, 64);
	fx_fault_file(&fx, gpu, "gpu.json");
	fx_model(&fx, "NPU0");
	fx_control(&fx, "npu.json", "{\"rules\": [{\"model\": \"multi\", \"error_every\": 1}]}");
	fx_control(&fx, "gpu.json", "{\"rules\": [{\"model\": \"multi\", \"error_every\": 1}]}");
	fx_start(&fx);
	sync_init(&sy);
	es_version *v = acquire(&fx);

	job_init(&j, &sy, v, 1.0f);
	submit(&fx, &j);
	wait_done(&sy, 1);
	assert_false(j.bad_outputs);
	assert_int_equal(j.status, ES_EINTERNAL);
	assert_non_null(strstr(j.msg, "injected device error"));
	assert_non_null(strstr(j.msg, "GPU0")); /* the fallback's error */
	assert_string_equal(j.device, "GPU0");
	assert_string_equal(j.reason, "error");
	assert_true(fallback_count(&fx, "NPU0", "GPU0", "error") == 1);
	assert_true(fallback_count(&fx, "NPU0", "GPU0", "failed") == 1);

	es_version_release(v);
	sync_destroy(&sy);
	fx_free(&fx);
}

/* Without a fallback a device error reaches the client as it is. */
static void test_error_without_fallback(void **state)
{
	fixture fx;
	sync_t sy;
	job j;
	fx_init(&fx);
	es_device_config *npu = fx_device(&fx, "NPU0", "faulty", 1, 64);
	fx_fault_file(&fx, npu, "npu.json");
	fx_model(&fx, "NPU0");
	fx_control(&fx, "npu.json", "{\"rules\": [{\"model\": \"multi\", \"error_every\": 1}]}");
	fx_start(&fx);
	sync_init(&sy);
	es_version *v = acquire(&fx);
	job_init(&j, &sy, v, 1.0f);
	submit(&fx, &j);
	wait_done(&sy, 1);
	assert_int_equal(j.status, ES_EINTERNAL);
	assert_non_null(strstr(j.msg, "injected device error"));
	assert_string_equal(j.device, "NPU0");
	assert_string_equal(j.reason, "");
	es_version_release(v);
	sync_destroy(&sy);
	fx_free(&fx);
}

/* ---- the faulty backend's control file ---------------------------------------------------------- */

static void run_one(fixture *fx, sync_t *sy, es_version *v, job *j, int n_done)
{
	job_init(j, sy, v, 1.0f);
	submit(fx, j);
	wait_done(sy, n_done);
	assert_false(j->bad_outputs);
}

static void test_fault_control_file(void **state)
{
	fixture fx;
	sync_t sy;
	job j;
	int n = 0;
	fx_init(&fx);
	es_device_config *npu = fx_device(&fx, "NPU0", "faulty", 1, 64);
	fx_fault_file(&fx, npu, "npu.json");
	fx_model(&fx, "NPU0");
	fx_start(&fx);
	sync_init(&sy);
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
	char path[128];
	snprintf(path, sizeof(path), "%s/npu.json", fx.dir);
	assert_int_equal(unlink(path), 0);
	run_one(&fx, &sy, v, &j, ++n);
	assert_int_equal(j.status, 0);
	assert_float_equal(j.out0, 2.0f, 0);

	es_version_release(v);
	sync_destroy(&sy);
	fx_free(&fx);
}

/* ---- the low-priority queue ------------------------------------------------------------------------ */

/* The low queue (shadow runs) has its own worker at SCHED_IDLE priority: it
 * runs while every stream is busy, never on a stream, and is bounded by the
 * capacity its caller gives. */
static void test_low_queue_has_its_own_idle_worker(void **state)
{
	fixture fx;
	sync_t sy;
	es_error err = { 0 };
	job hold, low1, low2, low3, low4, n1;
	(void)state;
	fx_init(&fx);
	fx_device(&fx, "NPU0", "cpu", 1, 64);
	fx_model(&fx, "NPU0");
	fx_start(&fx);
	sync_init(&sy);
	es_version *v = acquire(&fx);

	hold_stream(&fx, &sy, &hold, v);
	/* the only stream is held: a low run still completes */
	job_init(&low1, &sy, v, 1.0f);
	assert_int_equal(es_sched_submit_low(fx.srv, &low1.r, 2, &err), 0);
	wait_done(&sy, 1);
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
	wait_blocked(&sy, 2);
	job_init(&low3, &sy, v, 3.0f);
	job_init(&low4, &sy, v, 4.0f);
	assert_int_equal(es_sched_submit_low(fx.srv, &low3.r, 1, &err), 0);
	assert_int_equal(es_sched_submit_low(fx.srv, &low4.r, 1, &err), ES_EBUSY);
	assert_non_null(strstr(err.msg, "NPU0"));
	/* normal requests run on the stream, never on the idle worker */
	job_init(&n1, &sy, v, 5.0f);
	submit(&fx, &n1);
	open_gate(&sy);
	wait_done(&sy, 5);
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
	sync_destroy(&sy);
	fx_free(&fx);
}

typedef struct drainer {
	pthread_t thread;
	es_server *srv;
	size_t cancelled;
} drainer;

static void *drain_main(void *arg)
{
	drainer *d = arg;
	d->cancelled = es_server_drain(d->srv, 0);
	return NULL;
}

static void test_drain_cancels_low(void **state)
{
	fixture fx;
	sync_t sy;
	es_error err = { 0 };
	job busy, low1, low2, late;
	drainer dr;
	(void)state;
	fx_init(&fx);
	fx_device(&fx, "NPU0", "cpu", 1, 64);
	fx_model(&fx, "NPU0");
	fx_start(&fx);
	sync_init(&sy);
	es_version *v = acquire(&fx);

	/* the idle worker is held by one low run; two more wait behind it */
	job_init(&busy, &sy, v, 0.0f);
	busy.block = true;
	assert_int_equal(es_sched_submit_low(fx.srv, &busy.r, 8, &err), 0);
	wait_blocked(&sy, 1);
	job_init(&low1, &sy, v, 1.0f);
	job_init(&low2, &sy, v, 2.0f);
	assert_int_equal(es_sched_submit_low(fx.srv, &low1.r, 8, &err), 0);
	assert_int_equal(es_sched_submit_low(fx.srv, &low2.r, 8, &err), 0);
	dr.srv = fx.srv;
	assert_int_equal(pthread_create(&dr.thread, NULL, drain_main, &dr), 0);
	/* the waiting ones are cancelled while the held one still runs */
	wait_done(&sy, 2);
	assert_int_equal(low1.status, ES_ECANCELED);
	assert_int_equal(low2.status, ES_ECANCELED);
	assert_false(busy.done);
	/* nothing new is taken */
	job_init(&late, &sy, v, 3.0f);
	assert_int_equal(es_sched_submit_low(fx.srv, &late.r, 8, &err), ES_ECANCELED);
	open_gate(&sy);
	pthread_join(dr.thread, NULL);
	assert_int_equal(dr.cancelled, 2);
	assert_int_equal(busy.status, 0);

	es_version_release(v);
	sync_destroy(&sy);
	fx_free(&fx);
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
