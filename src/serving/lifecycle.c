/*
 * Model version lifecycle: reconciling loaded versions with the repository
 * and the version policy, loading (cache, compile, pre-flight validation,
 * warmup) off the request path, publishing by table swap, unloading once the
 * last request lets go, rollback, configuration reload, and the two threads
 * that drive it (the repository poll and the END reporter).
 *
 * Who may run what: es_life_sync and reloads hold the server's reload_mu, so
 * one of them runs at a time, across their loads. Everything that reads or
 * changes a model's lifecycle bookkeeping (marks, default and previous
 * version) holds that model's life_mu, briefly: never during a load, so a
 * rollback is applied at once even while a new version loads.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "base/clock.h"
#include "base/status.h"
#include "obs/log.h"
#include "serving/model_cache.h"
#include "serving/preflight.h"
#include "serving/serving_int.h"
#include "serving/vdir.h"

/* END and FAILED entries kept in a table for the operators to see; older
 * ones (lowest numbers first) are dropped. */
#define MAX_FINISHED_ENTRIES 32

/* ---- repository listing ------------------------------------------------------ */

/* A version directory name: digits only, no leading zero, value >= 1. */
static bool parse_version(const char *s, int64_t *out)
{
	int64_t v = 0;
	if (!s[0] || s[0] == '0')
		return false;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return false;
		if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, *p - '0', &v))
			return false;
	}
	*out = v;
	return true;
}

static char *version_path(const char *base, int64_t number, const char *file)
{
	size_t n = strlen(base) + strlen(file) + 32;
	char *p = malloc(n);
	if (p)
		snprintf(p, n, "%s/%lld%s%s", base, (long long)number, file[0] ? "/" : "", file);
	return p;
}

static bool is_regular(const char *path)
{
	struct stat st;
	return path && !stat(path, &st) && S_ISREG(st.st_mode);
}

static bool is_dir(const char *path)
{
	struct stat st;
	return path && !stat(path, &st) && S_ISDIR(st.st_mode);
}

static int cmp_desc(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? 1 : x > y ? -1 : 0;
}

/* Version numbers under the base path (directories holding a model.onnx),
 * highest first. */
static int list_versions(const es_servable *m, int64_t **out, size_t *n_out,
			 es_error *err)
{
	int64_t *v = NULL;
	size_t n = 0, cap = 0;
	DIR *d = opendir(m->base_path);
	if (!d)
		return es_error_set(err, ES_EIO, "model '%s': cannot open base path: %s",
				    m->name, strerror(errno));
	for (struct dirent *e; (e = readdir(d));) {
		int64_t num;
		if (!parse_version(e->d_name, &num))
			continue;
		char *model = version_path(m->base_path, num, "model.onnx");
		bool ok = is_regular(model);
		free(model);
		if (!ok)
			continue;
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 8;
			int64_t *nv = realloc(v, ncap * sizeof(*v));
			if (!nv) {
				free(v);
				closedir(d);
				return es_error_set(err, ES_ENOMEM, "out of memory");
			}
			v = nv;
			cap = ncap;
		}
		v[n++] = num;
	}
	closedir(d);
	if (n)
		qsort(v, n, sizeof(*v), cmp_desc);
	*out = v;
	*n_out = n;
	return 0;
}

static bool contains(const int64_t *v, size_t n, int64_t x)
{
	for (size_t i = 0; i < n; i++)
		if (v[i] == x)
			return true;
	return false;
}

/* The versions the policy picks from cand (highest first), into out. */
static size_t policy_pick(const es_version_policy *p, const int64_t *cand, size_t n,
			  int64_t *out)
{
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		bool take = p->kind == ES_POLICY_ALL ||
			    (p->kind == ES_POLICY_LATEST && k < (size_t)p->num_versions) ||
			    (p->kind == ES_POLICY_SPECIFIC &&
			     contains(p->versions, p->n_versions, cand[i]));
		if (take)
			out[k++] = cand[i];
	}
	return k;
}

/* ---- marks -------------------------------------------------------------------- */

/* Caller holds life_mu. NULL only when out of memory. */
static es_vmark *mark_get(es_servable *m, int64_t number)
{
	for (size_t i = 0; i < m->n_marks; i++)
		if (m->marks[i].number == number)
			return &m->marks[i];
	if (m->n_marks == m->cap_marks) {
		size_t ncap = m->cap_marks ? m->cap_marks * 2 : 8;
		es_vmark *n = realloc(m->marks, ncap * sizeof(*n));
		if (!n)
			return NULL;
		m->marks = n;
		m->cap_marks = ncap;
	}
	es_vmark *k = &m->marks[m->n_marks++];
	memset(k, 0, sizeof(*k));
	k->number = number;
	return k;
}

static const es_vmark *mark_find(const es_servable *m, int64_t number)
{
	for (size_t i = 0; i < m->n_marks; i++)
		if (m->marks[i].number == number)
			return &m->marks[i];
	return NULL;
}

/* ---- table helpers -------------------------------------------------------------- */

static const es_vt_entry *entry_of(const es_vtable *t, int64_t number)
{
	for (size_t i = 0; t && i < t->n; i++)
		if (t->e[i].number == number)
			return &t->e[i];
	return NULL;
}

static es_version_state state_of(const es_vtable *t, int64_t number, bool *present)
{
	const es_vt_entry *e = entry_of(t, number);
	*present = e != NULL;
	return e ? e->state : ES_VS_START;
}

static void log_actor(es_logrec *r, const es_actor *who)
{
	es_log_str(r, "actor", who && who->who ? who->who : "server");
	if (who && who->remote)
		es_log_str(r, "remote", who->remote);
}

/*
 * After a table change (caller holds life_mu): when the default version
 * moved, remember the one it left (if still loaded) for rollback, log the
 * change with who caused it, and count it.
 */
static void note_default(es_servable *m, const char *cause, const es_actor *who)
{
	es_vtable *t = es_table_snapshot(m);
	if (!t)
		return;
	int64_t d = es_table_default(t), old = m->cur_default;
	if (d == old) {
		free(t);
		return;
	}
	bool present;
	if (old && state_of(t, old, &present) == ES_VS_AVAILABLE && present)
		m->prev_default = old;
	else if (m->prev_default == d)
		m->prev_default = 0;
	m->cur_default = d;
	free(t);
	es_counter_add(m->m_default_changes, 1);
	es_logrec r;
	if (es_log_begin(&r, ES_LOG_INFO, "default_version_changed")) {
		es_log_str(&r, "model", m->name);
		es_log_int(&r, "from", old);
		es_log_int(&r, "to", d);
		es_log_str(&r, "cause", cause);
		log_actor(&r, who);
		es_log_end(&r);
	}
}

typedef struct publish_ctx {
	int64_t number;
	es_version *v;
	int64_t pin_from;
	bool taken;
} publish_ctx;

/* The version becomes AVAILABLE; a version newer than the one a rollback
 * retired ends the rollback. */
static int publish_fn(es_vtable *t, void *ctx)
{
	publish_ctx *c = ctx;
	es_vt_entry *e = es_table_entry(t, c->number);
	es_version_release(e->v);
	e->v = c->v;
	e->state = ES_VS_AVAILABLE;
	e->reason[0] = '\0';
	c->v->published = true;
	c->taken = true;
	if (t->pinned && c->pin_from && c->number > c->pin_from)
		t->pinned = 0;
	return 0;
}

typedef struct pin_ctx {
	int64_t retire;
	int64_t pin;
	char reason[128];
} pin_ctx;

static int rollback_fn(es_vtable *t, void *ctx)
{
	pin_ctx *c = ctx;
	for (size_t i = 0; i < t->n; i++) {
		if (t->e[i].number != c->retire)
			continue;
		es_version_release(t->e[i].v);
		t->e[i].v = NULL;
		t->e[i].state = ES_VS_UNLOADING;
		snprintf(t->e[i].reason, sizeof(t->e[i].reason), "%s", c->reason);
	}
	t->pinned = c->pin;
	return 0;
}

/* Drops the oldest END and FAILED entries of versions no longer on disk
 * beyond MAX_FINISHED_ENTRIES. */
static int prune_fn(es_vtable *t, void *ctx)
{
	(void)ctx;
	size_t finished = 0;
	for (size_t i = 0; i < t->n; i++)
		if (t->e[i].state == ES_VS_END && !t->e[i].v)
			finished++;
	if (finished <= MAX_FINISHED_ENTRIES)
		return ES_ENOTFOUND; /* nothing to do: do not publish */
	size_t drop = finished - MAX_FINISHED_ENTRIES, o = 0;
	for (size_t i = t->n; i-- > 0;) {
		if (drop && t->e[i].state == ES_VS_END && !t->e[i].v) {
			t->e[i].number = 0; /* mark */
			drop--;
		}
	}
	for (size_t i = 0; i < t->n; i++)
		if (t->e[i].number)
			t->e[o++] = t->e[i];
	t->n = o;
	return 0;
}

/* ---- loading one version -------------------------------------------------------- */

static void set_load_seconds(es_servable *m, int64_t number, double seconds)
{
	es_server *s = m->srv;
	if (!s->f_load_seconds)
		return;
	char ver[24];
	snprintf(ver, sizeof(ver), "%lld", (long long)number);
	const char *labels[] = { m->name, ver, NULL };
	es_gauge_set(es_metric_get(s->f_load_seconds, labels), seconds);
}

/* The engine model (from the cache or compiled) and one session per
 * stream of the model's device. */
static int version_create(es_servable *m, int64_t number, const char *dir,
			  es_version **out, es_mcache_ticket *t, es_error *err)
{
	es_device *dev = m->dev;
	es_server *s = m->srv;
	int rc;
	es_version *v = calloc(1, sizeof(*v));
	if (!v)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	atomic_init(&v->refs, 1);
	v->servable = m;
	v->number = number;
	if ((rc = es_mcache_load(s->cache, m->name, number, dir, NULL, &v->model, t, err)))
		goto fail;
	es_histogram_observe(t->hit ? m->m_compile_cache : m->m_compile_onnx, t->compile_s);
	v->sessions = calloc((size_t)dev->streams, sizeof(*v->sessions));
	if (!v->sessions) {
		rc = es_error_set(err, ES_ENOMEM, "out of memory");
		goto fail;
	}
	es_session_options so = { .threads = dev->threads };
	for (int k = 0; k < dev->streams; k++, v->n_sessions++)
		if ((rc = es_session_create(v->model, &so, &v->sessions[k], err)))
			goto fail;
	/* the fallback device runs spilled and retried requests of this
	 * version on sessions of its own streams and thread count */
	if (dev->fallback) {
		es_device *fb = dev->fallback;
		v->fb_sessions = calloc((size_t)fb->streams, sizeof(*v->fb_sessions));
		if (!v->fb_sessions) {
			rc = es_error_set(err, ES_ENOMEM, "out of memory");
			goto fail;
		}
		es_session_options fso = { .threads = fb->threads };
		for (int k = 0; k < fb->streams; k++, v->n_fb_sessions++)
			if ((rc = es_session_create(v->model, &fso, &v->fb_sessions[k], err)))
				goto fail;
	}
	if (s->metrics) {
		char ver[24];
		snprintf(ver, sizeof(ver), "%lld", (long long)number);
		const char *labels[] = { m->name, ver, dev->name, NULL };
		v->m_queue_wait = es_metric_get(s->f_queue_wait, labels);
		v->m_inference = es_metric_get(s->f_inference, labels);
	}
	*out = v;
	return 0;
fail:
	es_version_release(v);
	return rc;
}

typedef enum load_result {
	LOAD_OK,
	LOAD_FAILED,
	LOAD_UNSETTLED, /* files changed during the load: try again later */
} load_result;

/*
 * Loads, validates and warms up one version, then publishes it. The entry
 * must already be START (the caller marked it). fp is the listing the
 * decision was made on (POLL mode: compared again after the load).
 */
static load_result load_one(es_servable *m, int64_t number, es_sync_mode mode,
			    uint64_t fp, const es_actor *who)
{
	es_server *s = m->srv;
	es_error err = { 0 };
	es_version *v = NULL;
	es_mcache_ticket ticket;
	size_t n_cases = 0;
	int warmup;
	char *dir = version_path(m->base_path, number, "");
	uint64_t t0 = es_now_ns();

	pthread_mutex_lock(&m->life_mu);
	warmup = m->warmup;
	pthread_mutex_unlock(&m->life_mu);

	es_serving_log_load(ES_LOG_INFO, m, number, "start", ES_VS_LOADING, -1, NULL);
	es_table_set(m, number, ES_VS_LOADING, NULL, NULL);
	int rc = dir ? version_create(m, number, dir, &v, &ticket, &err)
		     : es_error_set(&err, ES_ENOMEM, "out of memory");
	if (!rc)
		rc = es_preflight_validate(v->model, v->sessions[0], dir, &n_cases, &err);
	/* one run at a time, so that a shutdown does not wait for all of them */
	for (int k = 0; !rc && k < warmup; k++) {
		if (atomic_load(&s->draining))
			rc = es_error_set(&err, ES_ECANCELED,
					  "load cancelled: the server is shutting down");
		else
			rc = es_preflight_warmup(v->model, v->sessions, v->n_sessions, 1, dir,
						 &err);
		if (!rc && v->n_fb_sessions)
			rc = es_preflight_warmup(v->model, v->fb_sessions, v->n_fb_sessions, 1,
						 dir, &err);
	}
	if (mode == ES_SYNC_POLL) {
		uint64_t fp2 = 0, newest;
		es_error ferr = { 0 };
		if (es_vdir_fingerprint(dir, &fp2, &newest, &ferr) || fp2 != fp) {
			es_version_release(v);
			pthread_mutex_lock(&m->life_mu);
			es_vmark *k = mark_get(m, number);
			if (k) {
				k->seen = true;
				k->seen_fp = fp2;
			}
			es_table_set(m, number, ES_VS_START,
				     "files changed while loading: trying again at the next poll", NULL);
			pthread_mutex_unlock(&m->life_mu);
			es_serving_log_load(ES_LOG_WARN, m, number, "unsettled", ES_VS_START,
					    (double)(es_now_ns() - t0) / 1e9,
					    "files changed while loading: trying again at the next poll");
			free(dir);
			return LOAD_UNSETTLED;
		}
	}
	double seconds = (double)(es_now_ns() - t0) / 1e9;
	if (rc) {
		es_version_release(v);
		if (!err.msg[0])
			snprintf(err.msg, sizeof(err.msg), "%s", es_strerror(rc));
		es_serving_scrub_paths(err.msg, sizeof(err.msg), m->base_path, m->name);
		pthread_mutex_lock(&m->life_mu);
		es_vmark *k = mark_get(m, number);
		if (k) {
			k->failed = true;
			k->failed_fp = fp;
		}
		es_table_set(m, number, ES_VS_FAILED, err.msg, NULL);
		pthread_mutex_unlock(&m->life_mu);
		es_counter_add(m->m_load_failures, 1);
		es_serving_log_load(ES_LOG_ERROR, m, number, "failed", ES_VS_FAILED, seconds,
				    err.msg);
		free(dir);
		return LOAD_FAILED;
	}

	es_version_retain(v); /* ours, for the cache write after publishing */
	pthread_mutex_lock(&m->life_mu);
	es_vmark *k = mark_get(m, number);
	if (k)
		k->failed = false;
	publish_ctx pc = { number, v, m->pin_from, false };
	rc = es_table_edit(m, publish_fn, &pc);
	if (!pc.taken)
		es_version_release(v);
	if (!rc) {
		es_serving_state_metric(m, number, ES_VS_AVAILABLE);
		note_default(m, "new version available", who);
	}
	pthread_mutex_unlock(&m->life_mu);

	set_load_seconds(m, number, seconds);
	if (s->f_warmup && warmup > 0) {
		char ver[24];
		snprintf(ver, sizeof(ver), "%lld", (long long)number);
		const char *labels[] = { m->name, ver, NULL };
		es_counter_add(es_metric_get(s->f_warmup, labels),
			       (uint64_t)warmup *
				       (uint64_t)(v->n_sessions + v->n_fb_sessions));
	}
	es_logrec r;
	if (es_log_begin(&r, rc ? ES_LOG_ERROR : ES_LOG_INFO, "model_load")) {
		es_log_str(&r, "model", m->name);
		es_log_int(&r, "version", number);
		es_log_str(&r, "device", m->dev->name);
		es_log_str(&r, "phase", rc ? "failed" : "end");
		es_log_str(&r, "state", rc ? "FAILED" : "AVAILABLE");
		es_log_f64(&r, "duration_s", seconds);
		es_log_f64(&r, "compile_s", ticket.compile_s);
		es_log_str(&r, "source", ticket.hit ? "cache" : "onnx");
		es_log_int(&r, "validation_cases", (int64_t)n_cases);
		es_log_int(&r, "warmup_runs", warmup);
		if (rc)
			es_log_str(&r, "reason", "out of memory");
		es_log_end(&r);
	}
	if (!rc)
		es_mcache_store(s->cache, m->name, number, &ticket, v->model, NULL);
	es_version_release(v);
	free(dir);
	return rc ? LOAD_FAILED : LOAD_OK;
}

/* ---- reconcile -------------------------------------------------------------------- */

typedef struct unload_ctx {
	const int64_t *keep;
	size_t n_keep;
	const int64_t *disk;
	size_t n_disk;
	const es_version_policy *policy;
	const char *why;
	int64_t unloaded[64];
	size_t n_unloaded;
	bool changed;
} unload_ctx;

/* Takes loaded versions outside keep out of service, and turns START and
 * FAILED entries whose directories are gone (and that the policy does not
 * name) into END. */
static int unload_fn(es_vtable *t, void *ctx)
{
	unload_ctx *c = ctx;
	for (size_t i = 0; i < t->n; i++) {
		es_vt_entry *e = &t->e[i];
		bool on_disk = contains(c->disk, c->n_disk, e->number);
		if (e->state == ES_VS_AVAILABLE && e->v && !contains(c->keep, c->n_keep, e->number)) {
			es_version_release(e->v);
			e->v = NULL;
			e->state = ES_VS_UNLOADING;
			snprintf(e->reason, sizeof(e->reason), "%s",
				 on_disk ? "retired by the version policy"
					 : "removed from the repository");
			if (c->n_unloaded < 64)
				c->unloaded[c->n_unloaded++] = e->number;
			c->changed = true;
		} else if ((e->state == ES_VS_FAILED || e->state == ES_VS_START) && !on_disk &&
			   !(c->policy->kind == ES_POLICY_SPECIFIC &&
			     contains(c->policy->versions, c->policy->n_versions, e->number))) {
			e->state = ES_VS_END;
			snprintf(e->reason, sizeof(e->reason), "removed from the repository");
			c->changed = true;
		}
	}
	return c->changed ? 0 : ES_ENOTFOUND;
}

/* Remembers a listing problem so that polls log it once, not every time;
 * "" clears it. Returns true when msg differs from the last one. */
static bool list_error_changed(es_servable *m, const char *msg)
{
	uint64_t h = 1469598103934665603ull;
	for (const char *p = msg; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ull;
	if (!*msg)
		h = 0;
	pthread_mutex_lock(&m->life_mu);
	bool changed = m->list_err != h;
	m->list_err = h;
	pthread_mutex_unlock(&m->life_mu);
	return changed;
}

bool es_life_sync(es_servable *m, es_sync_mode mode, const es_actor *who)
{
	es_error err = { 0 };
	int64_t *disk = NULL;
	size_t n_disk = 0;
	bool changed = false;

	if (list_versions(m, &disk, &n_disk, &err)) {
		es_serving_scrub_paths(err.msg, sizeof(err.msg), m->base_path, m->name);
		if (mode != ES_SYNC_POLL || list_error_changed(m, err.msg)) {
			es_counter_add(m->m_load_failures, 1);
			es_log_msg(ES_LOG_ERROR, "model_load", "%s", err.msg);
		}
		n_disk = 0;
	} else if (mode == ES_SYNC_POLL) {
		list_error_changed(m, "");
	}

	/* listings of the directories that may be loaded (no lock: file I/O) */
	uint64_t *fps = calloc(n_disk + 1, sizeof(*fps));
	int64_t *cand = calloc(n_disk + 1, sizeof(*cand));
	int64_t *pick = calloc(n_disk + 1, sizeof(*pick));
	int64_t *to_load = calloc(n_disk + 1, sizeof(*to_load));
	uint64_t *to_load_fp = calloc(n_disk + 1, sizeof(*to_load_fp));
	if (!fps || !cand || !pick || !to_load || !to_load_fp)
		goto out;
	es_vtable *t = es_table_snapshot(m);
	if (!t)
		goto out;
	for (size_t i = 0; i < n_disk; i++) {
		bool present;
		es_version_state st = state_of(t, disk[i], &present);
		if (present && (st == ES_VS_AVAILABLE || st == ES_VS_LOADING))
			continue;
		char *dir = version_path(m->base_path, disk[i], "");
		uint64_t newest;
		es_error ferr = { 0 };
		if (!dir || es_vdir_fingerprint(dir, &fps[i], &newest, &ferr))
			fps[i] = 0;
		free(dir);
	}

	pthread_mutex_lock(&m->life_mu);
	/* forget what we knew of directories that are gone */
	for (size_t i = 0; i < m->n_marks;) {
		if (!contains(disk, n_disk, m->marks[i].number)) {
			m->marks[i] = m->marks[--m->n_marks];
			continue;
		}
		i++;
	}
	size_t n_cand = 0, n_load = 0;
	for (size_t i = 0; i < n_disk; i++) {
		bool present;
		es_version_state st = state_of(t, disk[i], &present);
		const es_vmark *k = mark_find(m, disk[i]);
		if (k && k->rolled_back)
			continue;
		if (present && st == ES_VS_AVAILABLE) {
			cand[n_cand++] = disk[i];
			continue;
		}
		if (present && st == ES_VS_LOADING)
			continue;
		if (k && k->failed && k->failed_fp == fps[i])
			continue; /* same files that failed before */
		if (mode == ES_SYNC_POLL) {
			es_vmark *w = mark_get(m, disk[i]);
			bool settled = w && w->seen && w->seen_fp == fps[i] && fps[i];
			if (w) {
				w->seen = true;
				w->seen_fp = fps[i];
			}
			if (!settled)
				continue;
		}
		cand[n_cand++] = disk[i];
	}
	size_t n_pick = policy_pick(&m->policy, cand, n_cand, pick);
	for (size_t i = 0; i < n_pick; i++) {
		bool present;
		es_version_state st = state_of(t, pick[i], &present);
		if (present && st == ES_VS_AVAILABLE)
			continue;
		for (size_t k = 0; k < n_disk; k++)
			if (disk[k] == pick[i])
				to_load_fp[n_load] = fps[k];
		to_load[n_load++] = pick[i];
		es_table_set(m, pick[i], ES_VS_START, NULL, NULL);
	}
	/* versions a specific policy names that are not there */
	if (m->policy.kind == ES_POLICY_SPECIFIC) {
		for (size_t i = 0; i < m->policy.n_versions; i++) {
			int64_t want = m->policy.versions[i];
			bool present;
			es_version_state st = state_of(t, want, &present);
			if (contains(disk, n_disk, want) || (present && st == ES_VS_FAILED))
				continue;
			char *dir = version_path(m->base_path, want, "");
			const char *why = is_dir(dir) ? "version directory has no model.onnx"
						      : "version directory not found";
			free(dir);
			es_table_set(m, want, ES_VS_FAILED, why, NULL);
			es_counter_add(m->m_load_failures, 1);
			es_serving_log_load(ES_LOG_ERROR, m, want, "failed", ES_VS_FAILED, -1, why);
			changed = true;
		}
	}
	pthread_mutex_unlock(&m->life_mu);
	free(t);

	for (size_t i = 0; i < n_load && !atomic_load(&m->srv->draining); i++)
		if (load_one(m, to_load[i], mode, to_load_fp[i], who) != LOAD_UNSETTLED)
			changed = true;

	/* what stays loaded: the policy over what is AVAILABLE now, the
	 * previous default when kept for rollback, a rollback's pin */
	pthread_mutex_lock(&m->life_mu);
	t = es_table_snapshot(m);
	if (t) {
		n_cand = 0;
		for (size_t i = 0; i < n_disk; i++) {
			bool present;
			const es_vmark *k = mark_find(m, disk[i]);
			if (state_of(t, disk[i], &present) == ES_VS_AVAILABLE && present &&
			    !(k && k->rolled_back))
				cand[n_cand++] = disk[i];
		}
		n_pick = policy_pick(&m->policy, cand, n_cand, pick);
		int64_t keep[66];
		size_t n_keep = 0;
		for (size_t i = 0; i < n_pick && n_keep < 64; i++)
			keep[n_keep++] = pick[i];
		if (m->keep_previous && m->prev_default && contains(disk, n_disk, m->prev_default))
			keep[n_keep++] = m->prev_default;
		if (t->pinned && contains(disk, n_disk, t->pinned))
			keep[n_keep++] = t->pinned;
		unload_ctx uc = { keep, n_keep, disk, n_disk, &m->policy, NULL, { 0 }, 0, false };
		if (es_table_edit(m, unload_fn, &uc) == 0) {
			changed = true;
			for (size_t i = 0; i < uc.n_unloaded; i++) {
				es_serving_state_metric(m, uc.unloaded[i], ES_VS_UNLOADING);
				es_serving_log_load(ES_LOG_INFO, m, uc.unloaded[i], "unload",
						    ES_VS_UNLOADING, -1,
						    contains(disk, n_disk, uc.unloaded[i])
						    ? "retired by the version policy"
						    : "removed from the repository");
			}
			note_default(m, "version unloaded", who);
		}
		es_table_edit(m, prune_fn, NULL);
		free(t);
	}
	pthread_mutex_unlock(&m->life_mu);
	if (mode == ES_SYNC_STARTUP && !n_disk && m->policy.kind != ES_POLICY_SPECIFIC)
		es_log_msg(ES_LOG_WARN, "model_load",
			   "model '%s' has no version directory with a model.onnx", m->name);
out:
	free(fps);
	free(cand);
	free(pick);
	free(to_load);
	free(to_load_fp);
	free(disk);
	/* labels configured for a version that has only now become AVAILABLE */
	es_rollout_sync(m);
	return changed;
}

/* ---- rollback ------------------------------------------------------------------------ */

int es_servable_rollback(es_servable *m, const es_actor *who,
			 es_rollback_result *out, es_error *err)
{
	int rc = 0;
	pthread_mutex_lock(&m->life_mu);
	es_vtable *t = es_table_snapshot(m);
	if (!t) {
		pthread_mutex_unlock(&m->life_mu);
		return es_error_set(err, ES_ENOMEM, "out of memory");
	}
	int64_t cur = es_table_default(t), prev = m->prev_default;
	bool present;
	if (m->retired) {
		rc = es_error_set(err, ES_EUNAVAILABLE, "model '%s' is being removed", m->name);
	} else if (!cur) {
		rc = es_error_set(err, ES_EUNAVAILABLE,
				  "model '%s' has no available version to roll back from", m->name);
	} else if (!m->keep_previous) {
		rc = es_error_set(err, ES_EUNAVAILABLE,
				  "model '%s' keeps no previous version loaded (set \"keep_previous\": true in its config to allow rollback)",
				  m->name);
	} else if (!prev || prev == cur || state_of(t, prev, &present) != ES_VS_AVAILABLE ||
		   !present) {
		rc = es_error_set(err, ES_EUNAVAILABLE,
				  "model '%s' has no previous version loaded to roll back to from version %lld (none has been replaced since it started, or the previous one was already rolled back to or removed)",
				  m->name, (long long)cur);
	}
	free(t);
	if (rc) {
		pthread_mutex_unlock(&m->life_mu);
		return rc;
	}
	es_vmark *k = mark_get(m, cur);
	if (!k) {
		pthread_mutex_unlock(&m->life_mu);
		return es_error_set(err, ES_ENOMEM, "out of memory");
	}
	k->rolled_back = true;
	pin_ctx pc = { cur, prev, "" };
	snprintf(pc.reason, sizeof(pc.reason), "rolled back to version %lld", (long long)prev);
	rc = es_table_edit(m, rollback_fn, &pc);
	if (rc) {
		k->rolled_back = false;
		pthread_mutex_unlock(&m->life_mu);
		return es_error_set(err, rc, "out of memory");
	}
	m->pin_from = cur;
	es_serving_state_metric(m, cur, ES_VS_UNLOADING);
	note_default(m, "rollback", who);
	m->prev_default = 0;
	pthread_mutex_unlock(&m->life_mu);

	es_counter_add(m->m_rollbacks, 1);
	es_logrec r;
	if (es_log_begin(&r, ES_LOG_INFO, "rollback")) {
		es_log_str(&r, "model", m->name);
		es_log_int(&r, "from", cur);
		es_log_int(&r, "to", prev);
		log_actor(&r, who);
		es_log_end(&r);
	}
	out->from = cur;
	out->to = prev;
	return 0;
}

/* ---- retiring a model ------------------------------------------------------------------ */

static int retire_fn(es_vtable *t, void *ctx)
{
	(void)ctx;
	for (size_t i = 0; i < t->n; i++) {
		es_vt_entry *e = &t->e[i];
		if (e->v) {
			es_version_release(e->v);
			e->v = NULL;
			e->state = ES_VS_UNLOADING;
		} else if (e->state != ES_VS_UNLOADING) {
			e->state = ES_VS_END;
		}
		snprintf(e->reason, sizeof(e->reason), "model removed from the configuration");
	}
	t->pinned = 0;
	return 0;
}

void es_life_retire(es_servable *m, const es_actor *who)
{
	pthread_mutex_lock(&m->life_mu);
	m->retired = true;
	es_table_edit(m, retire_fn, NULL);
	note_default(m, "model removed from the configuration", who);
	pthread_mutex_unlock(&m->life_mu);
	es_logrec r;
	if (es_log_begin(&r, ES_LOG_INFO, "model_removed")) {
		es_log_str(&r, "model", m->name);
		log_actor(&r, who);
		es_log_end(&r);
	}
}

/* ---- reload --------------------------------------------------------------------------------- */

static bool str_eq(const char *a, const char *b)
{
	return (!a && !b) || (a && b && !strcmp(a, b));
}

/* Devices cannot change at run time: name, backend and sizes must match. */
static int check_devices(const es_server *s, const es_server_config *nc, es_error *err)
{
	const es_server_config *oc = s->cfg;
	if (!oc)
		return 0;
	if (nc->n_devices != oc->n_devices)
		return es_error_set(err, ES_EINVAL,
				    "devices cannot change without a restart (%zu configured now, %zu in the file)",
				    oc->n_devices, nc->n_devices);
	for (size_t i = 0; i < nc->n_devices; i++) {
		const es_device_config *a = &oc->devices[i], *b = &nc->devices[i];
		if (!str_eq(a->name, b->name) || !str_eq(a->backend, b->backend) ||
		    a->streams != b->streams || a->threads_per_stream != b->threads_per_stream ||
		    a->max_queue_size != b->max_queue_size || !str_eq(a->fallback, b->fallback) ||
		    a->spill_queue_depth != b->spill_queue_depth ||
		    a->spill_wait_ms != b->spill_wait_ms ||
		    !str_eq(a->fault_control, b->fault_control))
			return es_error_set(err, ES_EINVAL,
					    "devices cannot change without a restart (device '%s' differs)",
					    b->name ? b->name : "?");
	}
	return 0;
}

static bool policy_eq(const es_version_policy *a, const es_version_policy *b)
{
	if (a->kind != b->kind)
		return false;
	if (a->kind == ES_POLICY_LATEST)
		return a->num_versions == b->num_versions;
	if (a->kind == ES_POLICY_SPECIFIC)
		return a->n_versions == b->n_versions &&
		       !memcmp(a->versions, b->versions, a->n_versions * sizeof(int64_t));
	return true;
}

/* Applies a changed policy, keep_previous or warmup to m (same files, same
 * device). Returns true when something differed. */
static bool update_settings(es_servable *m, const es_model_config *mc, int default_warmup)
{
	bool changed = false;
	int warmup = mc->warmup >= 0 ? mc->warmup : default_warmup;
	pthread_mutex_lock(&m->life_mu);
	if (!policy_eq(&m->policy, &mc->policy)) {
		int64_t *vs = NULL;
		if (mc->policy.n_versions) {
			vs = malloc(mc->policy.n_versions * sizeof(*vs));
			if (vs)
				memcpy(vs, mc->policy.versions, mc->policy.n_versions * sizeof(*vs));
		}
		if (!mc->policy.n_versions || vs) {
			free(m->policy.versions);
			m->policy = mc->policy;
			m->policy.versions = vs;
			changed = true;
		}
	}
	if (m->keep_previous != mc->keep_previous || m->warmup != warmup) {
		m->keep_previous = mc->keep_previous;
		m->warmup = warmup;
		changed = true;
	}
	pthread_mutex_unlock(&m->life_mu);
	/* labels, canary and shadow (es_rollout_update takes life_mu itself) */
	if (es_rollout_changed(m, mc)) {
		es_error rerr = { 0 };
		if (es_rollout_update(m, mc, &rerr))
			es_log_msg(ES_LOG_ERROR, "config_reload",
				   "model '%s': rollout settings not applied: %s", m->name,
				   rerr.msg);
		else
			changed = true;
	}
	return changed;
}

int es_server_reload(es_server *s, const es_actor *who, bool *changed, es_error *err)
{
	es_server_config nc;
	int rc = 0;
	*changed = false;
	if (atomic_load(&s->draining))
		return es_error_set(err, ES_ECANCELED, "the server is shutting down");
	pthread_mutex_lock(&s->reload_mu);
	const es_model_list *cur = es_server_models(s);
	if (!s->reader) {
		for (size_t i = 0; i < cur->n; i++)
			*changed |= es_life_sync(cur->m[i], ES_SYNC_RELOAD, who);
		pthread_mutex_unlock(&s->reload_mu);
		return 0;
	}
	es_config_defaults(&nc);
	if ((rc = s->reader(s->reader_ctx, &nc, err)) || (rc = es_config_validate(&nc, err)) ||
	    (rc = check_devices(s, &nc, err))) {
		es_config_free(&nc);
		pthread_mutex_unlock(&s->reload_mu);
		es_logrec r;
		if (es_log_begin(&r, ES_LOG_ERROR, "config_reload")) {
			es_log_str(&r, "result", "rejected");
			es_log_str(&r, "reason", err ? err->msg : "");
			log_actor(&r, who);
			es_log_end(&r);
		}
		return rc;
	}
	es_model_list *nl = calloc(1, sizeof(*nl) + (nc.n_models + 1) * sizeof(nl->m[0]));
	bool *kept = calloc(cur->n + 1, sizeof(*kept));
	bool membership = false;
	if (!nl || !kept) {
		rc = es_error_set(err, ES_ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < nc.n_models; i++) {
		const es_model_config *mc = &nc.models[i];
		const char *devname = mc->target_device ? mc->target_device : nc.devices[0].name;
		es_servable *old = NULL;
		size_t oi = 0;
		for (; oi < cur->n; oi++)
			if (!strcmp(cur->m[oi]->name, mc->name)) {
				old = cur->m[oi];
				break;
			}
		if (old && !strcmp(old->base_path, mc->base_path) &&
		    !strcmp(old->dev->name, devname)) {
			kept[oi] = true;
			*changed |= update_settings(old, mc, s->default_warmup);
			nl->m[nl->n++] = old;
			continue;
		}
		es_error merr = { 0 };
		es_servable *m = es_servable_new(s, mc, nc.devices[0].name, &merr);
		if (!m) {
			es_log_msg(ES_LOG_ERROR, "config_reload", "model '%s': %s", mc->name, merr.msg);
			if (old) {
				kept[oi] = true; /* keep serving the old one */
				nl->m[nl->n++] = old;
			}
			continue;
		}
		/* the new one loads before the list changes; the old one (not
		 * kept) is retired after */
		es_life_sync(m, ES_SYNC_RELOAD, who);
		nl->m[nl->n++] = m;
		membership = true;
		es_logrec r;
		if (es_log_begin(&r, ES_LOG_INFO, "model_added")) {
			es_log_str(&r, "model", m->name);
			es_log_bool(&r, "replaces", old != NULL);
			log_actor(&r, who);
			es_log_end(&r);
		}
	}
	for (size_t i = 0; i < cur->n; i++)
		if (!kept[i])
			membership = true;
	const es_model_list *old = cur;
	if (membership) {
		rc = es_server_publish_models(s, nl);
		nl = NULL; /* taken, even on failure */
		if (rc) {
			rc = es_error_set(err, rc, "out of memory");
			goto out;
		}
		*changed = true;
		for (size_t i = 0; i < old->n; i++)
			if (!kept[i])
				es_life_retire(old->m[i], who);
	}
	for (size_t i = 0; i < old->n; i++)
		if (kept[i])
			*changed |= es_life_sync(old->m[i], ES_SYNC_RELOAD, who);
out:
	free(nl);
	free(kept);
	es_config_free(&nc);
	pthread_mutex_unlock(&s->reload_mu);
	es_logrec r;
	if (!rc && es_log_begin(&r, ES_LOG_INFO, "config_reload")) {
		es_log_str(&r, "result", *changed ? "applied" : "unchanged");
		log_actor(&r, who);
		es_log_end(&r);
	}
	return rc;
}

/* ---- threads ---------------------------------------------------------------------------------- */

typedef struct end_ctx {
	int64_t number;
	bool done;
} end_ctx;

static int end_fn(es_vtable *t, void *ctx)
{
	end_ctx *c = ctx;
	for (size_t i = 0; i < t->n; i++)
		if (t->e[i].number == c->number && t->e[i].state == ES_VS_UNLOADING && !t->e[i].v) {
			t->e[i].state = ES_VS_END;
			c->done = true;
			return 0;
		}
	return ES_ENOTFOUND;
}

static void *end_main(void *arg)
{
	es_server *s = arg;
	pthread_mutex_lock(&s->ended_mu);
	for (;;) {
		while (!s->n_ended && !s->ended_stop)
			pthread_cond_wait(&s->ended_cv, &s->ended_mu);
		if (s->ended_stop)
			break;
		es_ended e = s->ended[--s->n_ended];
		pthread_mutex_unlock(&s->ended_mu);
		pthread_mutex_lock(&e.m->life_mu);
		end_ctx c = { e.number, false };
		es_table_edit(e.m, end_fn, &c);
		if (c.done)
			es_serving_state_metric(e.m, e.number, ES_VS_END);
		pthread_mutex_unlock(&e.m->life_mu);
		if (c.done)
			es_serving_log_load(ES_LOG_INFO, e.m, e.number, "unloaded", ES_VS_END, -1, NULL);
		pthread_mutex_lock(&s->ended_mu);
	}
	pthread_mutex_unlock(&s->ended_mu);
	return NULL;
}

static void *poll_main(void *arg)
{
	es_server *s = arg;
	es_actor who = { "poll", NULL };
	pthread_mutex_lock(&s->poll_mu);
	for (;;) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += s->poll_wait_s;
		while (!s->poll_stop) {
			int rc = pthread_cond_timedwait(&s->poll_cv, &s->poll_mu, &ts);
			if (rc == ETIMEDOUT)
				break;
		}
		if (s->poll_stop)
			break;
		pthread_mutex_unlock(&s->poll_mu);
		pthread_mutex_lock(&s->reload_mu);
		const es_model_list *l = es_server_models(s);
		for (size_t i = 0; i < l->n && !atomic_load(&s->draining); i++)
			es_life_sync(l->m[i], ES_SYNC_POLL, &who);
		pthread_mutex_unlock(&s->reload_mu);
		pthread_mutex_lock(&s->poll_mu);
	}
	pthread_mutex_unlock(&s->poll_mu);
	return NULL;
}

int es_life_start(es_server *s, es_error *err)
{
	pthread_condattr_t a;
	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_destroy(&s->poll_cv);
	pthread_cond_init(&s->poll_cv, &a);
	pthread_condattr_destroy(&a);
	if (pthread_create(&s->ender, NULL, end_main, s))
		return es_error_set(err, ES_ENOMEM, "cannot start the lifecycle thread");
	s->ended_started = true;
	if (s->poll_wait_s > 0) {
		if (pthread_create(&s->poller, NULL, poll_main, s))
			return es_error_set(err, ES_ENOMEM, "cannot start the repository poll thread");
		s->poll_started = true;
	}
	return 0;
}

void es_life_stop(es_server *s)
{
	if (s->poll_started) {
		pthread_mutex_lock(&s->poll_mu);
		s->poll_stop = true;
		pthread_cond_broadcast(&s->poll_cv);
		pthread_mutex_unlock(&s->poll_mu);
		pthread_join(s->poller, NULL);
		s->poll_started = false;
	}
	if (s->ended_started) {
		pthread_mutex_lock(&s->ended_mu);
		s->ended_stop = true;
		pthread_cond_broadcast(&s->ended_cv);
		pthread_mutex_unlock(&s->ended_mu);
		pthread_join(s->ender, NULL);
		s->ended_started = false;
	}
}
