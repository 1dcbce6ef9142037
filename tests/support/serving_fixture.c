/* Fixtures shared by the serving unit tests (serving_fixture.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "support/serving_fixture.h"

/* ---- server ------------------------------------------------------------------ */

void es_test_server_init(es_test_server *fx, const char *tmp_prefix)
{
	memset(fx, 0, sizeof(*fx));
	if (tmp_prefix) {
		int n = snprintf(fx->tmp, sizeof(fx->tmp), "/tmp/%s_XXXXXX", tmp_prefix);
		assert_true(n > 0 && (size_t)n < sizeof(fx->tmp));
		assert_non_null(mkdtemp(fx->tmp));
	}
	es_config_defaults(&fx->cfg);
	/* no repository poll in the background: each test drives the syncs it
	 * means (a poll during a slow, sanitized run would load versions the
	 * startup sync did not) */
	fx->cfg.poll_wait_s = 0;
	fx->metrics = es_metrics_new();
	assert_non_null(fx->metrics);
}

void es_test_server_start(es_test_server *fx, const char *model)
{
	es_error err = { 0 };
	int rc = es_server_create(&fx->cfg, fx->metrics, &fx->srv, &err);
	if (rc)
		fail_msg("es_server_create: %d %s", rc, err.msg);
	if (model) {
		fx->m = es_server_find_model(fx->srv, model);
		assert_non_null(fx->m);
	}
}

void es_test_server_free(es_test_server *fx)
{
	es_server_destroy(fx->srv);
	es_config_free(&fx->cfg);
	es_metrics_free(fx->metrics);
	if (fx->tmp[0]) {
		es_test_rm_rf(fx->tmp);
		struct stat st;
		if (lstat(fx->tmp, &st) == 0 || errno != ENOENT)
			fail_msg("scratch directory %s not removed", fx->tmp);
	}
}

double es_test_metric(es_test_server *fx, const char *kind, const char *name,
		      const char *const *labels, const char *const *values)
{
	es_metric *f = NULL;
	if (!strcmp(kind, "counter"))
		f = es_metrics_counter(fx->metrics, name, "lookup", labels);
	else if (!strcmp(kind, "gauge"))
		f = es_metrics_gauge(fx->metrics, name, "lookup", labels);
	else
		fail_msg("metric kind '%s': expected counter or gauge", kind);
	assert_non_null(f);
	return es_metric_value(es_metric_get(f, values));
}

es_version *es_test_acquire(es_server *srv, const char *model, int64_t version)
{
	es_error err = { 0 };
	es_version *v = NULL;
	es_servable *m = es_server_find_model(srv, model);
	assert_non_null(m);
	int rc = es_servable_acquire(m, version, &v, &err);
	if (rc)
		fail_msg("acquire %s/%lld: %d %s", model, (long long)version, rc, err.msg);
	return v;
}

/* ---- configuration ------------------------------------------------------------- */

es_device_config *es_test_cfg_device(es_server_config *cfg, const char *name,
				     const char *backend, int streams, int queue)
{
	es_device_config *d;
	if (cfg->n_devices == 1 && !strcmp(cfg->devices[0].name, "CPU") &&
	    strcmp(name, "CPU") && !cfg->devices[0].fallback) {
		/* the first custom device replaces the default */
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

es_model_config *es_test_cfg_model(es_server_config *cfg, const char *name,
				   const char *base_path, const char *device)
{
	cfg->models = realloc(cfg->models, (cfg->n_models + 1) * sizeof(*cfg->models));
	assert_non_null(cfg->models);
	es_model_config *m = &cfg->models[cfg->n_models++];
	memset(m, 0, sizeof(*m));
	m->name = strdup(name);
	m->base_path = strdup(base_path);
	m->target_device = device ? strdup(device) : NULL;
	m->policy.kind = ES_POLICY_LATEST;
	m->policy.num_versions = 1;
	return m;
}

es_model_config *es_test_cfg_driven_model(es_server_config *cfg, const char *base_path)
{
	cfg->poll_wait_s = 0;
	cfg->default_warmup = 0;
	es_model_config *m = es_test_cfg_model(cfg, "m", base_path, NULL);
	m->warmup = -1;
	return m;
}

void es_test_policy_specific(es_model_config *m, const int64_t *v, size_t n)
{
	m->policy.kind = ES_POLICY_SPECIFIC;
	m->policy.versions = calloc(n, sizeof(int64_t));
	assert_non_null(m->policy.versions);
	memcpy(m->policy.versions, v, n * sizeof(int64_t));
	m->policy.n_versions = n;
}

/* ---- files --------------------------------------------------------------------- */

void es_test_copy_file(const char *from, const char *to)
{
	FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
	assert_non_null(in);
	assert_non_null(out);
	char buf[65536];
	size_t n;
	while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
		assert_int_equal(fwrite(buf, 1, n, out), n);
	fclose(in);
	assert_int_equal(fclose(out), 0);
}

void es_test_rm_rf(const char *path)
{
	DIR *d = opendir(path);
	if (d) {
		for (struct dirent *e; (e = readdir(d));) {
			if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
				continue;
			char sub[4096];
			snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
			es_test_rm_rf(sub);
		}
		closedir(d);
		rmdir(path);
	} else {
		unlink(path);
	}
}

void es_test_publish(const char *base, int v, int src)
{
	char stage[1024], dir[1024], from[4096], to[1100];
	snprintf(stage, sizeof(stage), "%s/.staging-%d", base, v);
	snprintf(dir, sizeof(dir), "%s/%d", base, v);
	assert_int_equal(mkdir(stage, 0755), 0);
	snprintf(from, sizeof(from), ES_TEST_SERVING_REPO "/multi/%d/model.onnx", src);
	snprintf(to, sizeof(to), "%s/model.onnx", stage);
	es_test_copy_file(from, to);
	assert_int_equal(rename(stage, dir), 0);
}

/* ---- completions ------------------------------------------------------------------ */

void es_test_sync_init(es_test_sync *sy)
{
	memset(sy, 0, sizeof(*sy));
	pthread_mutex_init(&sy->mu, NULL);
	pthread_condattr_t a;
	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC); /* es_now_ns's clock */
	pthread_cond_init(&sy->cv, &a);
	pthread_condattr_destroy(&a);
}

void es_test_sync_destroy(es_test_sync *sy)
{
	pthread_cond_destroy(&sy->cv);
	pthread_mutex_destroy(&sy->mu);
}

bool es_test_sync_wait(es_test_sync *sy, uint64_t until)
{
	struct timespec ts = { (time_t)(until / 1000000000ull), (long)(until % 1000000000ull) };
	return pthread_cond_timedwait(&sy->cv, &sy->mu, &ts) != ETIMEDOUT ||
	       es_now_ns() < until;
}

void es_test_hold_at_gate(es_test_sync *sy, uint64_t until)
{
	sy->blocked++;
	pthread_cond_broadcast(&sy->cv);
	while (!sy->gate_open && es_test_sync_wait(sy, until))
		;
}

void es_test_sync_finish(es_test_sync *sy)
{
	sy->done++;
	pthread_cond_broadcast(&sy->cv);
}

void es_test_wait_done(es_test_sync *sy, int n)
{
	uint64_t until = es_now_ns() + ES_TEST_WAIT_LIMIT_NS;
	pthread_mutex_lock(&sy->mu);
	while (sy->done < n && es_test_sync_wait(sy, until))
		;
	int done = sy->done;
	pthread_mutex_unlock(&sy->mu);
	if (done < n)
		fail_msg("only %d of %d requests completed in time", done, n);
}

void es_test_wait_blocked(es_test_sync *sy, int n)
{
	uint64_t until = es_now_ns() + ES_TEST_WAIT_LIMIT_NS;
	pthread_mutex_lock(&sy->mu);
	while (sy->blocked < n && es_test_sync_wait(sy, until))
		;
	int blocked = sy->blocked;
	pthread_mutex_unlock(&sy->mu);
	if (blocked < n)
		fail_msg("only %d of %d requests reached their stream in time", blocked, n);
}

void es_test_open_gate(es_test_sync *sy)
{
	pthread_mutex_lock(&sy->mu);
	sy->gate_open = true;
	pthread_cond_broadcast(&sy->cv);
	pthread_mutex_unlock(&sy->mu);
}

typedef struct submitter {
	pthread_t thread;
	pthread_barrier_t *barrier;
	es_server *srv;
	es_request *r;
	int rc;
	es_error err;
} submitter;

static void *submit_main(void *arg)
{
	submitter *sub = arg;
	pthread_barrier_wait(sub->barrier);
	sub->rc = es_server_submit(sub->srv, sub->r, &sub->err);
	return NULL;
}

void es_test_submit_concurrently(es_server *srv, es_request *const *reqs, int n)
{
	pthread_barrier_t barrier;
	submitter subs[ES_TEST_MAX_CONCURRENT];
	assert_true(n > 0 && n <= ES_TEST_MAX_CONCURRENT);
	pthread_barrier_init(&barrier, NULL, (unsigned)n);
	for (int i = 0; i < n; i++) {
		subs[i] = (submitter){ .barrier = &barrier, .srv = srv, .r = reqs[i] };
		assert_int_equal(pthread_create(&subs[i].thread, NULL, submit_main, &subs[i]), 0);
	}
	for (int i = 0; i < n; i++) {
		pthread_join(subs[i].thread, NULL);
		if (subs[i].rc)
			fail_msg("submit %d: %d %s", i, subs[i].rc, subs[i].err.msg);
	}
	pthread_barrier_destroy(&barrier);
}

static void *drain_main(void *arg)
{
	es_test_drainer *d = arg;
	d->cancelled = es_server_drain(d->srv, d->timeout_ms);
	return NULL;
}

void es_test_drain_start(es_test_drainer *d, es_server *srv, int64_t timeout_ms)
{
	*d = (es_test_drainer){ .srv = srv, .timeout_ms = timeout_ms };
	assert_int_equal(pthread_create(&d->thread, NULL, drain_main, d), 0);
}

void es_test_drain_join(es_test_drainer *d)
{
	assert_int_equal(pthread_join(d->thread, NULL), 0);
}
