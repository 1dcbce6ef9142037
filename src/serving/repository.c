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

static void version_free(es_version *v)
{
	for (int k = 0; k < v->n_sessions; k++)
		es_session_destroy(v->sessions[k]);
	free(v->sessions);
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

/* Republishes an identical copy of the table (tests of the grace period;
 * the unit of work of a future reload). */
int es_serving_table_touch(es_servable *m)
{
	pthread_mutex_lock(&m->write_mu);
	es_vtable *cur = atomic_load(&m->table);
	es_vtable *t = malloc(sizeof(*t) + cur->n * sizeof(t->e[0]));
	if (!t) {
		pthread_mutex_unlock(&m->write_mu);
		return ES_ENOMEM;
	}
	t->n = cur->n;
	for (size_t i = 0; i < cur->n; i++) {
		t->e[i] = cur->e[i];
		if (t->e[i].v)
			es_version_retain(t->e[i].v);
	}
	table_publish(m, t);
	pthread_mutex_unlock(&m->write_mu);
	return 0;
}

static void set_state_metric(es_servable *m, int64_t number, es_version_state st)
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

/*
 * Sets version `number`'s entry (adding it, in order, when missing) to state
 * st with reason (NULL: ""), and v (the new table takes over the caller's
 * reference; NULL to drop the entry's version). Takes write_mu.
 */
static int table_set(es_servable *m, int64_t number, es_version_state st,
		     const char *reason, es_version *v)
{
	pthread_mutex_lock(&m->write_mu);
	es_vtable *cur = atomic_load(&m->table);
	size_t n = cur ? cur->n : 0;
	bool present = false;
	for (size_t i = 0; i < n; i++)
		if (cur->e[i].number == number)
			present = true;
	size_t nn = n + (present ? 0 : 1);
	es_vtable *t = calloc(1, sizeof(*t) + nn * sizeof(t->e[0]));
	if (!t) {
		pthread_mutex_unlock(&m->write_mu);
		es_version_release(v);
		return ES_ENOMEM;
	}
	size_t o = 0;
	bool placed = false;
	for (size_t i = 0; i <= n; i++) {
		if (!present && !placed && (i == n || cur->e[i].number < number)) {
			t->e[o].number = number;
			t->e[o].state = st;
			snprintf(t->e[o].reason, sizeof(t->e[o].reason), "%s", reason ? reason : "");
			t->e[o].v = v;
			o++;
			placed = true;
		}
		if (i == n)
			break;
		t->e[o] = cur->e[i];
		if (cur->e[i].number == number) {
			t->e[o].state = st;
			snprintf(t->e[o].reason, sizeof(t->e[o].reason), "%s", reason ? reason : "");
			t->e[o].v = v;
		} else if (t->e[o].v) {
			/* the old table keeps its own reference until it is freed */
			es_version_retain(t->e[o].v);
		}
		o++;
	}
	t->n = o;
	table_publish(m, t);
	set_state_metric(m, number, st);
	pthread_mutex_unlock(&m->write_mu);
	return 0;
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

static int cmp_desc(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? 1 : x > y ? -1 : 0;
}

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

/* Version numbers under base (directories holding model.onnx), highest
 * first. *out is malloc'ed. */
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

static void log_load(es_log_level level, const es_servable *m, int64_t number,
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

/* Loads one version: the engine model and one session per device stream. */
static int version_create(es_servable *m, int64_t number, es_version **out,
			  es_error *err)
{
	es_device *dev = m->dev;
	es_server *s = m->srv;
	int rc;
	char *path = version_path(m->base_path, number, "model.onnx");
	es_version *v = calloc(1, sizeof(*v));
	if (!path || !v) {
		rc = es_error_set(err, ES_ENOMEM, "out of memory");
		goto out_free;
	}
	atomic_init(&v->refs, 1);
	v->servable = m;
	v->number = number;
	if ((rc = es_model_load(path, NULL, &v->model, err)))
		goto out_free;
	v->sessions = calloc((size_t)dev->streams, sizeof(*v->sessions));
	if (!v->sessions) {
		rc = es_error_set(err, ES_ENOMEM, "out of memory");
		goto out_free;
	}
	es_session_options so = { .threads = dev->threads };
	for (int k = 0; k < dev->streams; k++, v->n_sessions++)
		if ((rc = es_session_create(v->model, &so, &v->sessions[k], err)))
			goto out_free;
	if (s->metrics) {
		char ver[24];
		snprintf(ver, sizeof(ver), "%lld", (long long)number);
		const char *labels[] = { m->name, ver, dev->name, NULL };
		v->m_queue_wait = es_metric_get(s->f_queue_wait, labels);
		v->m_inference = es_metric_get(s->f_inference, labels);
	}
	free(path);
	*out = v;
	return 0;
out_free:
	if (v)
		version_free(v);
	free(path);
	return rc;
}

static void load_version(es_servable *m, int64_t number)
{
	es_server *s = m->srv;
	es_error err = { 0 };
	es_version *v = NULL;
	uint64_t t0 = es_now_ns();

	log_load(ES_LOG_INFO, m, number, "start", ES_VS_LOADING, -1, NULL);
	table_set(m, number, ES_VS_LOADING, NULL, NULL);
	int rc = version_create(m, number, &v, &err);
	double seconds = (double)(es_now_ns() - t0) / 1e9;
	if (rc) {
		if (!err.msg[0])
			snprintf(err.msg, sizeof(err.msg), "%s", es_strerror(rc));
		es_serving_scrub_paths(err.msg, sizeof(err.msg), m->base_path, m->name);
		table_set(m, number, ES_VS_FAILED, err.msg, NULL);
		es_counter_add(m->m_load_failures, 1);
		log_load(ES_LOG_ERROR, m, number, "failed", ES_VS_FAILED, seconds, err.msg);
		return;
	}
	if (table_set(m, number, ES_VS_AVAILABLE, NULL, v)) {
		es_counter_add(m->m_load_failures, 1);
		log_load(ES_LOG_ERROR, m, number, "failed", ES_VS_FAILED, seconds,
			 "out of memory");
		return;
	}
	if (s->f_load_seconds) {
		char ver[24];
		snprintf(ver, sizeof(ver), "%lld", (long long)number);
		const char *labels[] = { m->name, ver, NULL };
		es_gauge_set(es_metric_get(s->f_load_seconds, labels), seconds);
	}
	log_load(ES_LOG_INFO, m, number, "end", ES_VS_AVAILABLE, seconds, NULL);
}

static void fail_version(es_servable *m, int64_t number, const char *reason)
{
	table_set(m, number, ES_VS_FAILED, reason, NULL);
	es_counter_add(m->m_load_failures, 1);
	log_load(ES_LOG_ERROR, m, number, "failed", ES_VS_FAILED, -1, reason);
}

/*
 * Applies the version policy to what is on disk and loads the chosen
 * versions, highest first (so the default version is ready soonest).
 */
static void servable_load(es_servable *m)
{
	es_error err = { 0 };
	int64_t *disk = NULL;
	size_t n_disk = 0;
	if (list_versions(m, &disk, &n_disk, &err)) {
		es_serving_scrub_paths(err.msg, sizeof(err.msg), m->base_path, m->name);
		es_counter_add(m->m_load_failures, 1);
		es_log_msg(ES_LOG_ERROR, "model_load", "%s", err.msg);
		return;
	}
	const es_version_policy *p = &m->policy;
	if (p->kind == ES_POLICY_SPECIFIC) {
		int64_t *want = malloc((p->n_versions + 1) * sizeof(*want));
		if (!want)
			goto out;
		memcpy(want, p->versions, p->n_versions * sizeof(*want));
		qsort(want, p->n_versions, sizeof(*want), cmp_desc);
		for (size_t i = 0; i < p->n_versions; i++)
			table_set(m, want[i], ES_VS_START, NULL, NULL);
		for (size_t i = 0; i < p->n_versions; i++) {
			bool on_disk = false;
			for (size_t k = 0; k < n_disk; k++)
				if (disk[k] == want[i])
					on_disk = true;
			if (on_disk) {
				load_version(m, want[i]);
				continue;
			}
			char *dir = version_path(m->base_path, want[i], "");
			fail_version(m, want[i], is_dir(dir)
				     ? "version directory has no model.onnx"
				     : "version directory not found");
			free(dir);
		}
		free(want);
		goto out;
	}
	size_t n = n_disk;
	if (p->kind == ES_POLICY_LATEST && (size_t)p->num_versions < n)
		n = (size_t)p->num_versions;
	for (size_t i = 0; i < n; i++)
		table_set(m, disk[i], ES_VS_START, NULL, NULL);
	for (size_t i = 0; i < n; i++)
		load_version(m, disk[i]);
	if (!n)
		es_log_msg(ES_LOG_WARN, "model_load", "model '%s' has no version directory with a model.onnx",
			   m->name);
out:
	free(disk);
}

/* ---- servables -------------------------------------------------------------------- */

static void servable_free(es_servable *m)
{
	if (!m)
		return;
	table_free(atomic_load(&m->table));
	pthread_mutex_destroy(&m->write_mu);
	free(m->policy.versions);
	free(m->name);
	free(m->base_path);
	free(m);
}

static int servable_create(es_server *s, const es_server_config *cfg,
			   const es_model_config *mc, es_servable **out, es_error *err)
{
	es_servable *m = calloc(1, sizeof(*m));
	if (!m)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	m->srv = s;
	pthread_mutex_init(&m->write_mu, NULL);
	atomic_init(&m->epoch, 0);
	atomic_init(&m->readers[0], 0);
	atomic_init(&m->readers[1], 0);
	m->table = calloc(1, sizeof(es_vtable)); /* empty: no versions yet */
	m->name = strdup(mc->name);
	m->base_path = strdup(mc->base_path);
	m->policy = mc->policy;
	m->policy.versions = NULL;
	if (mc->policy.n_versions) {
		m->policy.versions = malloc(mc->policy.n_versions * sizeof(int64_t));
		if (m->policy.versions)
			memcpy(m->policy.versions, mc->policy.versions,
			       mc->policy.n_versions * sizeof(int64_t));
	}
	if (!m->table || !m->name || !m->base_path ||
	    (mc->policy.n_versions && !m->policy.versions)) {
		servable_free(m);
		return es_error_set(err, ES_ENOMEM, "out of memory");
	}
	m->dev = es_sched_find_device(s, mc->target_device ? mc->target_device
				      : cfg->devices[0].name);
	if (!m->dev) {
		servable_free(m);
		return es_error_set(err, ES_EINVAL, "model '%s': unknown target_device", mc->name);
	}
	if (s->metrics) {
		const char *l1[] = { m->name, NULL };
		const char *l2[] = { m->name, m->dev->name, NULL };
		m->m_load_failures = es_metric_get(s->f_load_failures, l1);
		m->m_deadline = es_metric_get(s->f_deadline, l2);
	}
	*out = m;
	return 0;
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
	for (size_t i = 0; i < t->n; i++) {
		const es_vt_entry *e = &t->e[i];
		if (version ? e->number == version : e->state == ES_VS_AVAILABLE) {
			hit = e;
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

/* ---- the server ---------------------------------------------------------------------- */

static void register_metrics(es_server *s)
{
	static const char *const mvd[] = { "model", "version", "device", NULL };
	static const char *const dev[] = { "device", NULL };
	static const char *const md[] = { "model", "device", NULL };
	static const char *const mv[] = { "model", "version", NULL };
	static const char *const mvs[] = { "model", "version", "state", NULL };
	static const char *const mo[] = { "model", NULL };
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
		"Time taken to load a model version.", mv);
	s->f_version_state = es_metrics_gauge(r, "edgeserve_model_version_state",
		"Model version state: 1 for the current state, 0 otherwise.", mvs);
	s->f_load_failures = es_metrics_counter(r, "edgeserve_model_load_failures_total",
		"Model versions that failed to load.", mo);
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
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	s->ncpu = ncpu < 1 ? 1 : ncpu > ES_MAX_THREADS ? ES_MAX_THREADS : (int)ncpu;
	atomic_init(&s->draining, false);
	register_metrics(s);
	if ((rc = es_sched_start(s, cfg, err)))
		goto fail;
	s->models = calloc(cfg->n_models + 1, sizeof(*s->models));
	if (!s->models) {
		rc = es_error_set(err, ES_ENOMEM, "out of memory");
		goto fail;
	}
	for (size_t i = 0; i < cfg->n_models; i++) {
		if ((rc = servable_create(s, cfg, &cfg->models[i], &s->models[i], err)))
			goto fail;
		s->n_models++;
	}
	for (size_t i = 0; i < s->n_models; i++)
		servable_load(s->models[i]);
	*out = s;
	return 0;
fail:
	es_server_destroy(s);
	return rc;
}

void es_server_destroy(es_server *s)
{
	if (!s)
		return;
	es_server_drain(s, 0);
	es_sched_stop(s);
	for (size_t i = 0; i < s->n_models; i++)
		servable_free(s->models[i]);
	free(s->models);
	free(s);
}

bool es_server_ready(es_server *s)
{
	if (atomic_load(&s->draining))
		return false;
	for (size_t i = 0; i < s->n_models; i++)
		if (!es_servable_ready(s->models[i], 0))
			return false;
	return true;
}

size_t es_server_num_models(const es_server *s)
{
	return s->n_models;
}

es_servable *es_server_model_at(es_server *s, size_t i)
{
	return i < s->n_models ? s->models[i] : NULL;
}

es_servable *es_server_find_model(es_server *s, const char *name)
{
	if (!name)
		return NULL;
	for (size_t i = 0; i < s->n_models; i++)
		if (!strcmp(s->models[i]->name, name))
			return s->models[i];
	return NULL;
}
