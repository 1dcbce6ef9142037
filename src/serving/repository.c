/*
 * The model repository: servables (models), their numbered versions, the
 * lock-free version tables requests read, and the server object that ties
 * them to the devices of scheduler.c.
 */
#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/status.h"
#include "obs/log.h"
#include "serving/model_cache.h"
#include "serving/serving_int.h"

const char *es_version_state_name(es_version_state s)
{
	switch (s) {
	case ES_VS_START: return "START";
	case ES_VS_LOADING: return "LOADING";
	case ES_VS_AVAILABLE: return "AVAILABLE";
	case ES_VS_UNLOADING: return "UNLOADING";
	case ES_VS_END: return "END";
	case ES_VS_FAILED: return "FAILED";
	}
	return "UNKNOWN";
}

/* ---- versions -------------------------------------------------------------- */

static void report_ended(es_version *v)
{
	es_server *s = v->servable->srv;
	pthread_mutex_lock(&s->ended_mu);
	if (s->n_ended == s->cap_ended) {
		size_t ncap = s->cap_ended ? s->cap_ended * 2 : 16;
		es_ended *n = realloc(s->ended, ncap * sizeof(*n));
		if (n) {
			s->ended = n;
			s->cap_ended = ncap;
		}
	}
	if (s->n_ended < s->cap_ended) {
		s->ended[s->n_ended].m = v->servable;
		s->ended[s->n_ended].number = v->number;
		s->n_ended++;
		pthread_cond_signal(&s->ended_cv);
	}
	pthread_mutex_unlock(&s->ended_mu);
}

static void version_free(es_version *v)
{
	if (v->published && v->servable->srv->life_sync_ready)
		report_ended(v);
	for (int k = 0; k < v->n_sessions; k++)
		es_session_destroy(v->sessions[k]);
	free(v->sessions);
	for (int k = 0; k < v->n_fb_sessions; k++)
		es_session_destroy(v->fb_sessions[k]);
	free(v->fb_sessions);
	es_session_destroy(v->idle_session);
	es_model_release(v->model);
	free(v);
}

void es_version_retain(es_version *v)
{
	atomic_fetch_add(&v->refs, 1);
}

/* The last reference destroys the sessions and releases the engine model,
 * on whatever thread drops it. */
void es_version_release(es_version *v)
{
	if (v && atomic_fetch_sub(&v->refs, 1) == 1)
		version_free(v);
}

int64_t es_version_number(const es_version *v)
{
	return v->number;
}

es_model *es_version_model(const es_version *v)
{
	return v->model;
}

const es_servable *es_version_servable(const es_version *v)
{
	return v->servable;
}

/* ---- version tables ---------------------------------------------------------- */

static void table_free(es_vtable *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->n; i++)
		es_version_release(t->e[i].v);
	free(t);
}

/* Enters a read section; returns the current table (never NULL once the
 * servable exists). See serving_int.h for why this is safe. */
static es_vtable *table_read_lock(es_servable *m, unsigned *slot)
{
	for (;;) {
		unsigned e = atomic_load(&m->epoch);
		atomic_fetch_add(&m->readers[e & 1], 1);
		if (atomic_load(&m->epoch) == e) {
			*slot = e & 1;
			return atomic_load(&m->table);
		}
		/* a writer flipped the epoch in between: count under the new one */
		atomic_fetch_sub(&m->readers[e & 1], 1);
	}
}

static void table_read_unlock(es_servable *m, unsigned slot)
{
	atomic_fetch_sub(&m->readers[slot], 1);
}

/* Publishes nt and frees the previous table once no reader can hold it.
 * Caller holds write_mu. */
static void table_publish(es_servable *m, es_vtable *nt)
{
	es_vtable *old = atomic_exchange(&m->table, nt);
	unsigned e = atomic_load(&m->epoch);
	atomic_store(&m->epoch, e + 1);
	while (atomic_load(&m->readers[e & 1]) != 0)
		sched_yield();
	table_free(old);
}

void es_serving_state_metric(es_servable *m, int64_t number, es_version_state st)
{
	es_server *s = m->srv;
	char ver[24];
	if (!s->f_version_state)
		return;
	snprintf(ver, sizeof(ver), "%lld", (long long)number);
	for (int k = ES_VS_START; k <= ES_VS_FAILED; k++) {
		const char *labels[] = { m->name, ver,
					 es_version_state_name((es_version_state)k), NULL };
		es_gauge_set(es_metric_get(s->f_version_state, labels), k == (int)st ? 1 : 0);
	}
}

int es_table_edit(es_servable *m, es_table_edit_fn fn, void *ctx)
{
	pthread_mutex_lock(&m->write_mu);
	es_vtable *cur = atomic_load(&m->table);
	size_t n = cur ? cur->n : 0;
	es_vtable *t = calloc(1, sizeof(*t) + (n + 1) * sizeof(t->e[0]));
	if (!t) {
		pthread_mutex_unlock(&m->write_mu);
		return ES_ENOMEM;
	}
	t->n = n;
	t->pinned = cur ? cur->pinned : 0;
	for (size_t i = 0; i < n; i++) {
		t->e[i] = cur->e[i];
		if (t->e[i].v)
			es_version_retain(t->e[i].v);
	}
	int rc = fn(t, ctx);
	if (rc) {
		for (size_t i = 0; i < t->n; i++)
			es_version_release(t->e[i].v);
		free(t);
	} else {
		table_publish(m, t);
	}
	pthread_mutex_unlock(&m->write_mu);
	return rc;
}

static int touch_fn(es_vtable *t, void *ctx)
{
	(void)t;
	(void)ctx;
	return 0;
}

/* Republishes an identical copy of the table (tests of the grace period). */
int es_serving_table_touch(es_servable *m)
{
	return es_table_edit(m, touch_fn, NULL);
}

typedef struct set_ctx {
	int64_t number;
	es_version_state st;
	const char *reason;
	es_version *v;
	bool taken;
} set_ctx;

es_vt_entry *es_table_entry(es_vtable *t, int64_t number)
{
	size_t i = 0;
	while (i < t->n && t->e[i].number > number)
		i++;
	if (i == t->n || t->e[i].number != number) {
		memmove(&t->e[i + 1], &t->e[i], (t->n - i) * sizeof(t->e[0]));
		memset(&t->e[i], 0, sizeof(t->e[i]));
		t->e[i].number = number;
		t->n++;
	}
	return &t->e[i];
}

static int set_fn(es_vtable *t, void *ctx)
{
	set_ctx *c = ctx;
	es_vt_entry *e = es_table_entry(t, c->number);
	es_version_release(e->v);
	e->v = c->v;
	c->taken = true;
	e->state = c->st;
	snprintf(e->reason, sizeof(e->reason), "%s", c->reason ? c->reason : "");
	if (e->v)
		e->v->published = e->v->published || c->st == ES_VS_AVAILABLE;
	return 0;
}

int es_table_set(es_servable *m, int64_t number, es_version_state st,
		 const char *reason, es_version *v)
{
	set_ctx c = { number, st, reason, v, false };
	int rc = es_table_edit(m, set_fn, &c);
	if (!c.taken)
		es_version_release(v);
	if (!rc)
		es_serving_state_metric(m, number, st);
	return rc;
}

int64_t es_table_default(const es_vtable *t)
{
	/* (an AVAILABLE entry of a published table always holds its version;
	 * snapshots carry the states without the references) */
	if (t->pinned)
		for (size_t i = 0; i < t->n; i++)
			if (t->e[i].number == t->pinned && t->e[i].state == ES_VS_AVAILABLE)
				return t->pinned;
	for (size_t i = 0; i < t->n; i++)
		if (t->e[i].state == ES_VS_AVAILABLE)
			return t->e[i].number;
	return 0;
}

es_vtable *es_table_snapshot(es_servable *m)
{
	unsigned slot;
	es_vtable *t = table_read_lock(m, &slot);
	es_vtable *c = malloc(sizeof(*c) + t->n * sizeof(c->e[0]));
	if (c) {
		memcpy(c, t, sizeof(*c) + t->n * sizeof(c->e[0]));
		for (size_t i = 0; i < c->n; i++)
			c->e[i].v = NULL; /* a copy of the facts, no references */
	}
	table_read_unlock(m, slot);
	return c;
}

int64_t es_servable_default_version(es_servable *m)
{
	unsigned slot;
	es_vtable *t = table_read_lock(m, &slot);
	int64_t d = es_table_default(t);
	table_read_unlock(m, slot);
	return d;
}

/* ---- loading ------------------------------------------------------------------ */

/*
 * Rewrites msg so that it names no host path: occurrences of base_path
 * become the model name (so "classifier/2/model.onnx" stays meaningful),
 * and any other absolute path is cut to its last component.
 */
void es_serving_scrub_paths(char *msg, size_t cap, const char *base_path, const char *name)
{
	char out[ES_ERROR_MSG_MAX];
	size_t o = 0, bl = strlen(base_path);
	const char *p = msg;
	while (*p && o + 1 < sizeof(out)) {
		bool at_token = p == msg || strchr(" '\"(:=`", p[-1]);
		if (bl && at_token && !strncmp(p, base_path, bl) &&
		    (p[bl] == '/' || p[bl] == '\0' || strchr(" '\"),;`", p[bl]))) {
			o += (size_t)snprintf(out + o, sizeof(out) - o, "%s", name);
			if (o >= sizeof(out))
				o = sizeof(out) - 1;
			p += bl;
			continue;
		}
		if (*p == '/' && at_token) {
			const char *end = p;
			while (*end && !strchr(" '\"),;`", *end))
				end++;
			const char *last = p;
			for (const char *q = p; q < end; q++)
				if (*q == '/' && q + 1 < end)
					last = q + 1;
			if (last == p)
				last = p + 1;
			while (last < end && o + 1 < sizeof(out))
				out[o++] = *last++;
			p = end;
			continue;
		}
		out[o++] = *p++;
	}
	out[o] = '\0';
	snprintf(msg, cap, "%s", out);
}

void es_serving_log_load(es_log_level level, const es_servable *m, int64_t number,
		     const char *phase, es_version_state st, double seconds,
		     const char *reason)
{
	es_logrec r;
	if (!es_log_begin(&r, level, "model_load"))
		return;
	es_log_str(&r, "model", m->name);
	es_log_int(&r, "version", number);
	es_log_str(&r, "device", m->dev->name);
	es_log_str(&r, "phase", phase);
	es_log_str(&r, "state", es_version_state_name(st));
	if (seconds >= 0)
		es_log_f64(&r, "duration_s", seconds);
	if (reason)
		es_log_str(&r, "reason", reason);
	es_log_end(&r);
}

/* ---- servables -------------------------------------------------------------------- */

static void servable_free(es_servable *m)
{
	if (!m)
		return;
	es_rollout_free(m);
	table_free(atomic_load(&m->table));
	pthread_mutex_destroy(&m->write_mu);
	pthread_mutex_destroy(&m->life_mu);
	void *ext = atomic_load(&m->ext);
	if (ext && m->srv->ext_free)
		m->srv->ext_free(ext);
	free(m->marks);
	free(m->policy.versions);
	free(m->name);
	free(m->base_path);
	free(m);
}

/* Remembers m for destruction at server end. */
static int keep_servable(es_server *s, es_servable *m)
{
	if (s->n_all == s->cap_all) {
		size_t ncap = s->cap_all ? s->cap_all * 2 : 8;
		es_servable **n = realloc(s->all, ncap * sizeof(*n));
		if (!n)
			return ES_ENOMEM;
		s->all = n;
		s->cap_all = ncap;
	}
	s->all[s->n_all++] = m;
	return 0;
}

es_servable *es_servable_new(es_server *s, const es_model_config *mc,
			     const char *default_device, es_error *err)
{
	es_servable *m = calloc(1, sizeof(*m));
	if (!m) {
		es_error_set(err, ES_ENOMEM, "out of memory");
		return NULL;
	}
	m->srv = s;
	pthread_mutex_init(&m->write_mu, NULL);
	pthread_mutex_init(&m->life_mu, NULL);
	atomic_init(&m->epoch, 0);
	atomic_init(&m->readers[0], 0);
	atomic_init(&m->readers[1], 0);
	atomic_init(&m->ext, NULL);
	m->table = calloc(1, sizeof(es_vtable)); /* empty: no versions yet */
	m->name = strdup(mc->name);
	m->base_path = strdup(mc->base_path);
	m->policy = mc->policy;
	m->policy.versions = NULL;
	m->keep_previous = mc->keep_previous;
	m->warmup = mc->warmup >= 0 ? mc->warmup : s->default_warmup;
	if (mc->policy.n_versions) {
		m->policy.versions = malloc(mc->policy.n_versions * sizeof(int64_t));
		if (m->policy.versions)
			memcpy(m->policy.versions, mc->policy.versions,
			       mc->policy.n_versions * sizeof(int64_t));
	}
	if (!m->table || !m->name || !m->base_path ||
	    (mc->policy.n_versions && !m->policy.versions)) {
		servable_free(m);
		es_error_set(err, ES_ENOMEM, "out of memory");
		return NULL;
	}
	m->dev = es_sched_find_device(s, mc->target_device ? mc->target_device
				      : default_device);
	if (!m->dev) {
		servable_free(m);
		es_error_set(err, ES_EINVAL, "model '%s': unknown target_device", mc->name);
		return NULL;
	}
	if (es_rollout_init(m, mc, err)) {
		servable_free(m);
		return NULL;
	}
	if (keep_servable(s, m)) {
		servable_free(m);
		es_error_set(err, ES_ENOMEM, "out of memory");
		return NULL;
	}
	if (s->metrics) {
		const char *l1[] = { m->name, NULL };
		const char *l2[] = { m->name, m->dev->name, NULL };
		const char *lo[] = { m->name, "onnx", NULL };
		const char *lc[] = { m->name, "cache", NULL };
		m->m_load_failures = es_metric_get(s->f_load_failures, l1);
		m->m_deadline = es_metric_get(s->f_deadline, l2);
		m->m_default_changes = es_metric_get(s->f_default_changes, l1);
		m->m_rollbacks = es_metric_get(s->f_rollbacks, l1);
		m->m_compile_onnx = es_metric_get(s->f_compile, lo);
		m->m_compile_cache = es_metric_get(s->f_compile, lc);
	}
	return m;
}

void *es_servable_ext(es_servable *m, void *val)
{
	void *expected = NULL;
	if (atomic_compare_exchange_strong(&m->ext, &expected, val))
		return val;
	return expected;
}

void es_server_set_ext_free(es_server *s, void (*free_fn)(void *))
{
	s->ext_free = free_fn;
}

const char *es_servable_name(const es_servable *m)
{
	return m->name;
}

const char *es_servable_device(const es_servable *m)
{
	return m->dev->name;
}

size_t es_servable_status(es_servable *m, es_version_status *out, size_t max)
{
	unsigned slot;
	es_vtable *t = table_read_lock(m, &slot);
	size_t n = t->n;
	for (size_t i = 0; i < n && i < max; i++) {
		out[i].version = t->e[i].number;
		out[i].state = t->e[i].state;
		memcpy(out[i].reason, t->e[i].reason, sizeof(out[i].reason));
	}
	table_read_unlock(m, slot);
	return n;
}

bool es_servable_ready(es_servable *m, int64_t version)
{
	unsigned slot;
	bool ready = false;
	es_vtable *t = table_read_lock(m, &slot);
	for (size_t i = 0; i < t->n; i++) {
		if (version && t->e[i].number != version)
			continue;
		if (t->e[i].state == ES_VS_AVAILABLE) {
			ready = true;
			break;
		}
	}
	table_read_unlock(m, slot);
	return ready;
}

int es_servable_acquire(es_servable *m, int64_t version, es_version **out,
			es_error *err)
{
	unsigned slot;
	int rc = 0;
	const es_vt_entry *hit = NULL;
	es_vtable *t = table_read_lock(m, &slot);
	int64_t want = version ? version : es_table_default(t);
	for (size_t i = 0; want && i < t->n; i++) {
		if (t->e[i].number == want) {
			hit = &t->e[i];
			break;
		}
	}
	if (!hit) {
		if (version)
			rc = es_error_set(err, ES_ENOTFOUND, "model '%s' has no version %lld",
					  m->name, (long long)version);
		else
			rc = es_error_set(err, ES_EUNAVAILABLE,
					  "model '%s' has no available version", m->name);
	} else if (hit->state != ES_VS_AVAILABLE || !hit->v) {
		rc = es_error_set(err, ES_EUNAVAILABLE,
				  "model '%s' version %lld is not available (state %s)",
				  m->name, (long long)hit->number,
				  es_version_state_name(hit->state));
	} else {
		/* the table's reference keeps v alive while we are a reader */
		es_version_retain(hit->v);
		*out = hit->v;
	}
	table_read_unlock(m, slot);
	return rc;
}

static const es_vt_entry *available_entry(const es_vtable *t, int64_t number)
{
	for (size_t i = 0; number && i < t->n; i++)
		if (t->e[i].number == number)
			return t->e[i].state == ES_VS_AVAILABLE && t->e[i].v ? &t->e[i] : NULL;
	return NULL;
}

int es_servable_acquire_stable(es_servable *m, int64_t preferred, int64_t exclude,
			       es_version **out, es_error *err)
{
	unsigned slot;
	int rc = 0;
	es_vtable *t = table_read_lock(m, &slot);
	const es_vt_entry *hit = NULL;
	if (preferred != exclude)
		hit = available_entry(t, preferred);
	int64_t d = es_table_default(t);
	if (!hit && d != exclude)
		hit = available_entry(t, d);
	for (size_t i = 0; !hit && i < t->n; i++) /* highest first */
		if (t->e[i].number != exclude)
			hit = available_entry(t, t->e[i].number);
	if (hit) {
		es_version_retain(hit->v);
		*out = hit->v;
	} else if (exclude) {
		rc = es_error_set(err, ES_EUNAVAILABLE,
				  "model '%s' has no stable version available (no AVAILABLE version other than the canary version %lld)",
				  m->name, (long long)exclude);
	} else {
		rc = es_error_set(err, ES_EUNAVAILABLE, "model '%s' has no available version",
				  m->name);
	}
	table_read_unlock(m, slot);
	return rc;
}

/* ---- the server ---------------------------------------------------------------------- */

static void register_metrics(es_server *s)
{
	static const char *const mvd[] = { "model", "version", "device", NULL };
	static const char *const dev[] = { "device", NULL };
	static const char *const md[] = { "model", "device", NULL };
	static const char *const mv[] = { "model", "version", NULL };
	static const char *const mvs[] = { "model", "version", "state", NULL };
	static const char *const mo[] = { "model", NULL };
	static const char *const ms[] = { "model", "source", NULL };
	static const char *const dfr[] = { "device", "fallback", "reason", NULL };
	static const char *const dw[] = { "device", "worker", NULL };
	es_metrics *r = s->metrics;
	if (!r)
		return;
	s->f_queue_wait = es_metrics_histogram(r, "edgeserve_queue_wait_seconds",
		"Time requests waited in a device queue before a stream started them.",
		mvd, NULL, 0);
	s->f_inference = es_metrics_histogram(r, "edgeserve_inference_duration_seconds",
		"Time a device stream spent running a request.", mvd, NULL, 0);
	s->f_queue_size = es_metrics_gauge(r, "edgeserve_queue_size",
		"Requests waiting in a device queue.", dev);
	s->f_queue_capacity = es_metrics_gauge(r, "edgeserve_queue_capacity",
		"Capacity of a device queue; a full queue rejects requests.", dev);
	s->f_active = es_metrics_gauge(r, "edgeserve_device_active_requests",
		"Requests running on a device now.", dev);
	s->f_streams = es_metrics_gauge(r, "edgeserve_device_streams",
		"Concurrent execution streams of a device.", dev);
	s->f_rejections = es_metrics_counter(r, "edgeserve_queue_rejections_total",
		"Requests rejected because a device queue was full.", dev);
	s->f_deadline = es_metrics_counter(r, "edgeserve_deadline_exceeded_total",
		"Requests whose deadline passed while they were queued.", md);
	s->f_load_seconds = es_metrics_gauge(r, "edgeserve_model_load_seconds",
		"Time taken to load a model version: compile or cache read, validation and warmup.",
		mv);
	s->f_version_state = es_metrics_gauge(r, "edgeserve_model_version_state",
		"Model version state: 1 for the current state, 0 otherwise.", mvs);
	s->f_load_failures = es_metrics_counter(r, "edgeserve_model_load_failures_total",
		"Model versions that failed to load.", mo);
	s->f_default_changes = es_metrics_counter(r, "edgeserve_model_default_changes_total",
		"Times the version answering requests without a version changed.", mo);
	s->f_rollbacks = es_metrics_counter(r, "edgeserve_model_rollbacks_total",
		"Rollbacks to the previous default version.", mo);
	s->f_warmup = es_metrics_counter(r, "edgeserve_model_warmup_inferences_total",
		"Warmup inferences run on a model version before it became AVAILABLE (not counted in the inference histograms).",
		mv);
	s->f_compile = es_metrics_histogram(r, "edgeserve_model_compile_duration_seconds",
		"Time to compile a model version from ONNX (source onnx) or read its compiled form from the cache (source cache).",
		ms, NULL, 0);
	s->f_fallback = es_metrics_counter(r, "edgeserve_fallback_total",
		"Requests a device handed to its fallback device, by reason: spill_queue and spill_wait (the primary was too busy), error (a device error retried there), failed (the fallback failed them too). The fallback rate is the reliability signal to alert on.",
		dfr);
	s->f_shadow_runs = es_metrics_counter(r, "edgeserve_shadow_runs_total",
		"Shadow runs a device started, by worker: stream (a short run taken by the stream that answered the primary, its device idle) or idle (the low-priority worker).",
		dw);
}

int es_server_publish_models(es_server *s, es_model_list *l)
{
	if (s->n_lists == s->cap_lists) {
		size_t ncap = s->cap_lists ? s->cap_lists * 2 : 4;
		es_model_list **n = realloc(s->lists, ncap * sizeof(*n));
		if (!n) {
			free(l);
			return ES_ENOMEM;
		}
		s->lists = n;
		s->cap_lists = ncap;
	}
	s->lists[s->n_lists++] = l;
	atomic_store(&s->models, l);
	return 0;
}

int es_server_create(const es_server_config *cfg, es_metrics *metrics,
		     es_server **out, es_error *err)
{
	int rc = es_config_validate(cfg, err);
	if (rc)
		return rc;
	es_server *s = calloc(1, sizeof(*s));
	if (!s)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	s->metrics = metrics;
	s->cfg = cfg;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	s->ncpu = ncpu < 1 ? 1 : ncpu > ES_MAX_THREADS ? ES_MAX_THREADS : (int)ncpu;
	s->poll_wait_s = cfg->poll_wait_s;
	s->default_warmup = cfg->default_warmup;
	atomic_init(&s->draining, false);
	pthread_mutex_init(&s->reload_mu, NULL);
	pthread_mutex_init(&s->poll_mu, NULL);
	pthread_cond_init(&s->poll_cv, NULL);
	pthread_mutex_init(&s->ended_mu, NULL);
	pthread_cond_init(&s->ended_cv, NULL);
	s->life_sync_ready = true;
	register_metrics(s);
	if (cfg->cache_dir && !(s->cache = es_mcache_open(cfg->cache_dir, metrics))) {
		rc = es_error_set(err, ES_ENOMEM, "out of memory");
		goto fail;
	}
	if ((rc = es_sched_start(s, cfg, err)))
		goto fail;
	if ((rc = es_shadow_start(s, cfg, err)))
		goto fail;
	es_model_list *l = calloc(1, sizeof(*l) + (cfg->n_models + 1) * sizeof(l->m[0]));
	if (!l || es_server_publish_models(s, l)) {
		rc = es_error_set(err, ES_ENOMEM, "out of memory");
		goto fail;
	}
	for (size_t i = 0; i < cfg->n_models; i++) {
		es_servable *m = es_servable_new(s, &cfg->models[i], cfg->devices[0].name, err);
		if (!m) {
			rc = err ? err->code : ES_ENOMEM;
			goto fail;
		}
		l->m[l->n++] = m;
	}
	if ((rc = es_life_start(s, err)))
		goto fail;
	if ((rc = es_rollout_start(s, err)))
		goto fail;
	es_actor who = { "startup", NULL };
	pthread_mutex_lock(&s->reload_mu);
	for (size_t i = 0; i < l->n; i++)
		es_life_sync(l->m[i], ES_SYNC_STARTUP, &who);
	pthread_mutex_unlock(&s->reload_mu);
	*out = s;
	return 0;
fail:
	es_server_destroy(s);
	return rc;
}

void es_server_set_config_reader(es_server *s, es_config_reader_fn fn, void *ctx)
{
	s->reader = fn;
	s->reader_ctx = ctx;
}

void es_server_destroy(es_server *s)
{
	if (!s)
		return;
	es_server_drain(s, 0);
	es_shadow_stop(s); /* shadow runs still in flight keep the log alive */
	es_rollout_stop(s);
	es_life_stop(s);
	es_sched_stop(s);
	for (size_t i = 0; i < s->n_all; i++)
		servable_free(s->all[i]);
	free(s->all);
	for (size_t i = 0; i < s->n_lists; i++)
		free(s->lists[i]);
	free(s->lists);
	free(s->ended);
	es_mcache_close(s->cache);
	if (s->life_sync_ready) {
		pthread_mutex_destroy(&s->reload_mu);
		pthread_mutex_destroy(&s->poll_mu);
		pthread_cond_destroy(&s->poll_cv);
		pthread_mutex_destroy(&s->ended_mu);
		pthread_cond_destroy(&s->ended_cv);
	}
	free(s);
}

bool es_server_ready(es_server *s)
{
	if (atomic_load(&s->draining))
		return false;
	const es_model_list *l = es_server_models(s);
	for (size_t i = 0; i < l->n; i++)
		if (!es_servable_ready(l->m[i], 0))
			return false;
	return true;
}

static const es_model_list empty_list = { 0 };

const es_model_list *es_server_models(es_server *s)
{
	const es_model_list *l = atomic_load(&s->models);
	return l ? l : &empty_list;
}

size_t es_server_num_models(es_server *s)
{
	return es_server_models(s)->n;
}

es_servable *es_server_model_at(es_server *s, size_t i)
{
	const es_model_list *l = es_server_models(s);
	return i < l->n ? l->m[i] : NULL;
}

es_servable *es_server_find_model(es_server *s, const char *name)
{
	if (!name)
		return NULL;
	const es_model_list *l = es_server_models(s);
	for (size_t i = 0; i < l->n; i++)
		if (!strcmp(l->m[i]->name, name))
			return l->m[i];
	return NULL;
}
