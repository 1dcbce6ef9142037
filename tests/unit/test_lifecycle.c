/* The model lifecycle below HTTP: reconciling with the repository, settle
 * checks, availability-preserving swaps, unload after the last reference,
 * keep_previous and rollback, failed versions not retried until their files
 * change, configuration reload, and the compiled-model cache. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/clock.h"
#include "obs/log.h"
#include "obs/metrics.h"
#include "serving/serving.h"
#include "serving/serving_int.h"
#include "support/serving_fixture.h"

#define SRC ES_TEST_SERVING_REPO "/multi"

static const es_actor TEST_ACTOR = { "test", NULL };

/* ---- files ---------------------------------------------------------------------- */

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
}

static void unpublish(const char *base, int v)
{
	char dir[4096], gone[4096];
	snprintf(dir, sizeof(dir), "%s/%d", base, v);
	snprintf(gone, sizeof(gone), "%s/.gone-%d", base, v);
	assert_int_equal(rename(dir, gone), 0);
	es_test_rm_rf(gone);
}

/* ---- fixture ---------------------------------------------------------------------- */

typedef struct fixture {
	es_test_server s; /* s.tmp holds the repository and the cache */
	char base[300];   /* the repository of model "m" */
	char cache[300];
} fixture;

static void fx_init(fixture *fx, bool keep_previous)
{
	memset(fx, 0, sizeof(*fx));
	es_test_server_init(&fx->s, "es_lifecycle");
	snprintf(fx->base, sizeof(fx->base), "%s/m", fx->s.tmp);
	snprintf(fx->cache, sizeof(fx->cache), "%s/cache", fx->s.tmp);
	assert_int_equal(mkdir(fx->base, 0755), 0);
	/* the tests drive every reconcile */
	es_model_config *mc = es_test_cfg_driven_model(&fx->s.cfg, fx->base);
	mc->keep_previous = keep_previous;
}

static void fx_start(fixture *fx)
{
	es_test_server_start(&fx->s, "m");
}

static bool reload(fixture *fx)
{
	bool changed = false;
	es_error err = { 0 };
	int rc = es_server_reload(fx->s.srv, &TEST_ACTOR, &changed, &err);
	if (rc)
		fail_msg("es_server_reload: %d %s", rc, err.msg);
	return changed;
}

static es_version_status status_of(fixture *fx, int64_t v)
{
	es_version_status st[64];
	size_t n = es_servable_status(fx->s.m, st, 64);
	for (size_t i = 0; i < n && i < 64; i++)
		if (st[i].version == v)
			return st[i];
	es_version_status none = { .version = 0, .state = ES_VS_START, .reason = "absent" };
	return none;
}

/* Waits (bounded) for version v to reach state st: END comes from another
 * thread once the last reference is dropped. */
static void wait_state(fixture *fx, int64_t v, es_version_state st)
{
	uint64_t limit = es_now_ns() + ES_TEST_WAIT_LIMIT_NS;
	while (status_of(fx, v).state != st) {
		if (es_now_ns() > limit)
			fail_msg("version %lld: state %s, expected %s", (long long)v,
				 es_version_state_name(status_of(fx, v).state),
				 es_version_state_name(st));
		sched_yield();
	}
}

/* Runs the default version on x = 0 and returns y[0] (1 or 2: which model). */
typedef struct answer {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done;
	float y;
	int status;
} answer;

static void on_done(es_request *r, const es_tensor *out, size_t n)
{
	answer *a = r->user;
	pthread_mutex_lock(&a->mu);
	a->status = r->status;
	a->y = r->status == 0 && n ? ((const float *)out[0].data)[0] : -1.0f;
	a->done = true;
	pthread_cond_signal(&a->cv);
	pthread_mutex_unlock(&a->mu);
}

static float infer_default(fixture *fx, int64_t *version_out)
{
	es_version *v = NULL;
	es_error err = { 0 };
	assert_int_equal(es_servable_acquire(fx->s.m, 0, &v, &err), 0);
	*version_out = es_version_number(v);
	float x[2] = { 0, 0 };
	es_tensor in = { .dtype = ES_DT_FLOAT, .ndim = 2, .dims = { 1, 2 }, .data = x,
			 .nbytes = sizeof(x) };
	answer a = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };
	es_request r = { .version = v, .inputs = &in, .n_inputs = 1, .complete = on_done,
			 .user = &a };
	assert_int_equal(es_server_submit(fx->s.srv, &r, &err), 0);
	pthread_mutex_lock(&a.mu);
	while (!a.done)
		pthread_cond_wait(&a.cv, &a.mu);
	pthread_mutex_unlock(&a.mu);
	es_version_release(v);
	assert_int_equal(a.status, 0);
	return a.y;
}

static double counter(fixture *fx, const char *name)
{
	static const char *const labels[] = { "model", NULL };
	static const char *const values[] = { "m", NULL };
	return es_test_metric(&fx->s, "counter", name, labels, values);
}

/* ---- tests ---------------------------------------------------------------------- */

static void test_new_version_swaps_and_old_one_ends(void **state)
{
	fixture fx;
	int64_t v;
	(void)state;
	fx_init(&fx, false);
	es_test_publish(fx.base, 1, 1);
	fx_start(&fx);
	assert_int_equal(status_of(&fx, 1).state, ES_VS_AVAILABLE);
	assert_true(infer_default(&fx, &v) == 1.0f);
	assert_int_equal(v, 1);

	/* a request holding version 1 across the swap */
	es_version *held = NULL;
	es_error err = { 0 };
	assert_int_equal(es_servable_acquire(fx.s.m, 1, &held, &err), 0);

	es_test_publish(fx.base, 2, 2);
	assert_true(reload(&fx));
	assert_int_equal(status_of(&fx, 2).state, ES_VS_AVAILABLE);
	assert_int_equal(es_servable_default_version(fx.s.m), 2);
	assert_true(infer_default(&fx, &v) == 2.0f);
	assert_int_equal(v, 2);
	/* no new request reaches version 1, but the held one is still whole */
	assert_int_equal(status_of(&fx, 1).state, ES_VS_UNLOADING);
	es_version *again = NULL;
	assert_int_equal(es_servable_acquire(fx.s.m, 1, &again, &err), ES_EUNAVAILABLE);
	assert_non_null(strstr(err.msg, "UNLOADING"));
	assert_int_equal(es_model_num_inputs(es_version_model(held)), 1);
	es_version_release(held);
	wait_state(&fx, 1, ES_VS_END);
	assert_true(counter(&fx, "edgeserve_model_default_changes_total") >= 2);

	/* rollback needs keep_previous */
	es_rollback_result rb;
	assert_int_equal(es_servable_rollback(fx.s.m, &TEST_ACTOR, &rb, &err), ES_EUNAVAILABLE);
	assert_non_null(strstr(err.msg, "keep_previous"));
	/* nothing changed: a second reload says so */
	assert_false(reload(&fx));
	es_test_server_free(&fx.s);
}

static void test_keep_previous_and_rollback(void **state)
{
	fixture fx;
	int64_t v;
	es_error err = { 0 };
	es_rollback_result rb;
	(void)state;
	fx_init(&fx, true);
	es_test_publish(fx.base, 1, 1);
	fx_start(&fx);
	/* no swap yet: nothing to roll back to */
	assert_int_equal(es_servable_rollback(fx.s.m, &TEST_ACTOR, &rb, &err), ES_EUNAVAILABLE);

	es_test_publish(fx.base, 2, 2);
	assert_true(reload(&fx));
	assert_int_equal(es_servable_default_version(fx.s.m), 2);
	assert_int_equal(status_of(&fx, 1).state, ES_VS_AVAILABLE); /* kept */

	assert_int_equal(es_servable_rollback(fx.s.m, &TEST_ACTOR, &rb, &err), 0);
	assert_int_equal(rb.from, 2);
	assert_int_equal(rb.to, 1);
	assert_int_equal(es_servable_default_version(fx.s.m), 1);
	assert_true(infer_default(&fx, &v) == 1.0f);
	assert_int_equal(v, 1);
	wait_state(&fx, 2, ES_VS_END);
	assert_int_equal(counter(&fx, "edgeserve_model_rollbacks_total"), 1);
	/* a second rollback has nothing left */
	assert_int_equal(es_servable_rollback(fx.s.m, &TEST_ACTOR, &rb, &err), ES_EUNAVAILABLE);

	/* the rolled-back version is not loaded again while it is on disk */
	reload(&fx);
	assert_int_equal(status_of(&fx, 2).state, ES_VS_END);
	assert_int_equal(es_servable_default_version(fx.s.m), 1);

	/* a newer version ends the rollback */
	es_test_publish(fx.base, 3, 2);
	assert_true(reload(&fx));
	assert_int_equal(es_servable_default_version(fx.s.m), 3);
	assert_int_equal(status_of(&fx, 1).state, ES_VS_AVAILABLE); /* kept again */
	assert_int_equal(es_servable_rollback(fx.s.m, &TEST_ACTOR, &rb, &err), 0);
	assert_int_equal(rb.from, 3);
	assert_int_equal(rb.to, 1);
	es_test_server_free(&fx.s);
}

static void test_removed_version_falls_back(void **state)
{
	fixture fx;
	int64_t v;
	(void)state;
	fx_init(&fx, true);
	es_test_publish(fx.base, 1, 1);
	fx_start(&fx);
	es_test_publish(fx.base, 2, 2);
	reload(&fx);
	assert_int_equal(es_servable_default_version(fx.s.m), 2);
	unpublish(fx.base, 2);
	assert_true(reload(&fx));
	/* version 1 was kept: the switch back needs no load */
	assert_int_equal(es_servable_default_version(fx.s.m), 1);
	assert_true(infer_default(&fx, &v) == 1.0f);
	wait_state(&fx, 2, ES_VS_END);
	assert_non_null(strstr(status_of(&fx, 2).reason, "removed"));
	es_test_server_free(&fx.s);
}

static void test_failed_version_leaves_serving_untouched(void **state)
{
	fixture fx;
	int64_t v;
	(void)state;
	fx_init(&fx, false);
	es_test_publish(fx.base, 1, 1);
	fx_start(&fx);
	es_test_publish(fx.base, 2, 3); /* not an ONNX file */
	reload(&fx);
	es_version_status st = status_of(&fx, 2);
	assert_int_equal(st.state, ES_VS_FAILED);
	assert_true(st.reason[0] != '\0');
	assert_null(strstr(st.reason, fx.s.tmp)); /* no host path */
	assert_int_equal(es_servable_default_version(fx.s.m), 1);
	assert_true(infer_default(&fx, &v) == 1.0f);
	assert_int_equal(status_of(&fx, 1).state, ES_VS_AVAILABLE);
	es_version *x = NULL;
	es_error err = { 0 };
	assert_int_equal(es_servable_acquire(fx.s.m, 2, &x, &err), ES_EUNAVAILABLE);
	double failures = counter(&fx, "edgeserve_model_load_failures_total");
	assert_true(failures >= 1);

	/* the same files are not retried */
	reload(&fx);
	assert_true(counter(&fx, "edgeserve_model_load_failures_total") == failures);

	/* fixed files are */
	char path[4096];
	snprintf(path, sizeof(path), "%s/2/model.onnx", fx.base);
	es_test_copy_file(SRC "/2/model.onnx", path);
	struct timespec ts[2] = { { 0, UTIME_NOW }, { 0, UTIME_NOW } };
	utimensat(AT_FDCWD, path, ts, 0);
	assert_true(reload(&fx));
	assert_int_equal(status_of(&fx, 2).state, ES_VS_AVAILABLE);
	assert_int_equal(es_servable_default_version(fx.s.m), 2);
	es_test_server_free(&fx.s);
}

static void test_poll_waits_for_files_to_settle(void **state)
{
	fixture fx;
	(void)state;
	fx_init(&fx, false);
	es_test_publish(fx.base, 1, 1);
	fx_start(&fx);
	es_test_publish(fx.base, 2, 2);
	es_actor who = { "poll", NULL };
	pthread_mutex_lock(&fx.s.srv->reload_mu);
	/* first sight: remembered, not loaded */
	es_life_sync(fx.s.m, ES_SYNC_POLL, &who);
	assert_string_equal(status_of(&fx, 2).reason, "absent");
	/* the file changes between polls: still not loaded */
	char path[4096];
	snprintf(path, sizeof(path), "%s/2/extra.txt", fx.base);
	write_text(path, "still copying");
	es_life_sync(fx.s.m, ES_SYNC_POLL, &who);
	assert_string_equal(status_of(&fx, 2).reason, "absent");
	/* unchanged since the last poll: loaded */
	es_life_sync(fx.s.m, ES_SYNC_POLL, &who);
	pthread_mutex_unlock(&fx.s.srv->reload_mu);
	assert_int_equal(status_of(&fx, 2).state, ES_VS_AVAILABLE);
	assert_int_equal(es_servable_default_version(fx.s.m), 2);
	es_test_server_free(&fx.s);
}

static int read_config(void *ctx, es_server_config *cfg, es_error *err)
{
	const es_server_config *src = ctx;
	/* a copy of what the test prepared */
	cfg->models = calloc(src->n_models + 1, sizeof(*cfg->models));
	for (size_t i = 0; i < src->n_models; i++) {
		es_model_config *d = &cfg->models[i];
		*d = src->models[i];
		d->name = strdup(src->models[i].name);
		d->base_path = strdup(src->models[i].base_path);
		d->target_device = src->models[i].target_device ? strdup(src->models[i].target_device) : NULL;
		d->policy.versions = NULL;
		d->policy.n_versions = 0;
		if (d->policy.kind == ES_POLICY_SPECIFIC)
			d->policy.kind = ES_POLICY_ALL;
	}
	cfg->n_models = src->n_models;
	if (src->n_devices != cfg->n_devices) {
		(void)err;
		es_device_config *dv = realloc(cfg->devices, src->n_devices * sizeof(*dv));
		cfg->devices = dv;
		for (size_t i = cfg->n_devices; i < src->n_devices; i++) {
			dv[i] = src->devices[i];
			dv[i].name = strdup(src->devices[i].name);
			dv[i].backend = strdup(src->devices[i].backend);
		}
		cfg->n_devices = src->n_devices;
	}
	return 0;
}

static void test_reload_adds_and_removes_models(void **state)
{
	fixture fx;
	es_error err = { 0 };
	bool changed;
	(void)state;
	fx_init(&fx, false);
	es_test_publish(fx.base, 1, 1);
	fx_start(&fx);

	es_server_config next;
	es_config_defaults(&next);
	next.models = calloc(2, sizeof(*next.models));
	next.n_models = 2;
	next.models[0].name = strdup("m");
	next.models[0].base_path = strdup(fx.base);
	next.models[0].policy.kind = ES_POLICY_LATEST;
	next.models[0].policy.num_versions = 1;
	next.models[0].warmup = -1;
	next.models[1].name = strdup("other");
	next.models[1].base_path = strdup(fx.base);
	next.models[1].policy.kind = ES_POLICY_LATEST;
	next.models[1].policy.num_versions = 1;
	next.models[1].warmup = -1;
	es_server_set_config_reader(fx.s.srv, read_config, &next);

	const es_model_list *before = es_server_models(fx.s.srv);
	assert_int_equal(es_server_reload(fx.s.srv, &TEST_ACTOR, &changed, &err), 0);
	assert_true(changed);
	assert_int_equal(es_server_models(fx.s.srv)->n, 2);
	assert_int_equal(before->n, 1); /* an old snapshot stays valid */
	es_servable *other = es_server_find_model(fx.s.srv, "other");
	assert_non_null(other);
	assert_true(es_servable_ready(other, 0));
	assert_true(es_server_find_model(fx.s.srv, "m") == fx.s.m); /* unchanged: kept */

	/* the same file again: nothing to do */
	assert_int_equal(es_server_reload(fx.s.srv, &TEST_ACTOR, &changed, &err), 0);
	assert_false(changed);

	/* a device change is refused and nothing is applied */
	es_device_config *dv = realloc(next.devices, 2 * sizeof(*dv));
	next.devices = dv;
	memset(&dv[1], 0, sizeof(dv[1]));
	dv[1].name = strdup("NPU0");
	dv[1].backend = strdup("cpu");
	dv[1].streams = 1;
	dv[1].max_queue_size = 16;
	next.n_devices = 2;
	next.n_models = 1;
	assert_int_equal(es_server_reload(fx.s.srv, &TEST_ACTOR, &changed, &err), ES_EINVAL);
	assert_non_null(strstr(err.msg, "devices"));
	assert_int_equal(es_server_models(fx.s.srv)->n, 2);
	next.n_devices = 1;

	/* removing a model */
	assert_int_equal(es_server_reload(fx.s.srv, &TEST_ACTOR, &changed, &err), 0);
	assert_true(changed);
	assert_int_equal(es_server_models(fx.s.srv)->n, 1);
	assert_null(es_server_find_model(fx.s.srv, "other"));
	assert_false(es_servable_ready(other, 0)); /* retired, still valid memory */

	next.n_models = 2;
	next.n_devices = 2;
	es_config_free(&next);
	es_test_server_free(&fx.s);
}

static void test_cache_hit_after_restart_and_invalid_blob(void **state)
{
	fixture fx;
	int64_t v;
	(void)state;
	fx_init(&fx, false);
	es_test_publish(fx.base, 1, 1);
	fx.s.cfg.cache_dir = strdup(fx.cache);
	fx_start(&fx);
	assert_int_equal(counter(&fx, "edgeserve_model_cache_misses_total"), 1);
	assert_int_equal(counter(&fx, "edgeserve_model_cache_hits_total"), 0);
	es_server_destroy(fx.s.srv);
	es_metrics_free(fx.s.metrics);

	/* one blob, no temporary files */
	char blob[4096] = "";
	DIR *d = opendir(fx.cache);
	assert_non_null(d);
	int blobs = 0;
	for (struct dirent *e; (e = readdir(d));) {
		if (e->d_name[0] == '.')
			continue;
		assert_non_null(strstr(e->d_name, ".escm"));
		snprintf(blob, sizeof(blob), "%s/%s", fx.cache, e->d_name);
		blobs++;
	}
	closedir(d);
	assert_int_equal(blobs, 1);

	fx.s.metrics = es_metrics_new();
	fx_start(&fx);
	assert_int_equal(counter(&fx, "edgeserve_model_cache_hits_total"), 1);
	assert_int_equal(counter(&fx, "edgeserve_model_cache_misses_total"), 0);
	assert_true(infer_default(&fx, &v) == 1.0f);
	es_server_destroy(fx.s.srv);
	es_metrics_free(fx.s.metrics);

	/* flip a byte in the middle */
	int fd = open(blob, O_RDWR);
	assert_true(fd >= 0);
	off_t size = lseek(fd, 0, SEEK_END);
	unsigned char b;
	assert_int_equal(pread(fd, &b, 1, size / 2), 1);
	b ^= 0x5a;
	assert_int_equal(pwrite(fd, &b, 1, size / 2), 1);
	close(fd);

	fx.s.metrics = es_metrics_new();
	fx_start(&fx);
	assert_int_equal(counter(&fx, "edgeserve_model_cache_invalid_total"), 1);
	assert_int_equal(counter(&fx, "edgeserve_model_cache_misses_total"), 1);
	assert_true(infer_default(&fx, &v) == 1.0f);
	es_server_destroy(fx.s.srv);
	es_metrics_free(fx.s.metrics);

	/* rebuilt: the next start hits again */
	fx.s.metrics = es_metrics_new();
	fx_start(&fx);
	assert_int_equal(counter(&fx, "edgeserve_model_cache_hits_total"), 1);
	assert_int_equal(counter(&fx, "edgeserve_model_cache_invalid_total"), 0);
	es_test_server_free(&fx.s);
}

static void test_unusable_cache_dir_still_loads(void **state)
{
	fixture fx;
	int64_t v;
	(void)state;
	fx_init(&fx, false);
	es_test_publish(fx.base, 1, 1);
	/* a regular file where the directory should be */
	write_text(fx.cache, "not a directory");
	fx.s.cfg.cache_dir = strdup(fx.cache);
	fx_start(&fx);
	assert_true(infer_default(&fx, &v) == 1.0f);
	assert_int_equal(counter(&fx, "edgeserve_model_cache_hits_total"), 0);
	es_test_server_free(&fx.s);
}

int main(void)
{
	es_log_set_level(ES_LOG_ERROR);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_new_version_swaps_and_old_one_ends),
		cmocka_unit_test(test_keep_previous_and_rollback),
		cmocka_unit_test(test_removed_version_falls_back),
		cmocka_unit_test(test_failed_version_leaves_serving_untouched),
		cmocka_unit_test(test_poll_waits_for_files_to_settle),
		cmocka_unit_test(test_reload_adds_and_removes_models),
		cmocka_unit_test(test_cache_hit_after_restart_and_invalid_blob),
		cmocka_unit_test(test_unusable_cache_dir_still_loads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
