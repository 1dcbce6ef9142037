/*
 * Devices and their scheduling: one bounded FIFO per device, `streams`
 * worker threads that pop the oldest request and run it on their own engine
 * session, and one reaper thread that completes queued requests whose
 * deadline passed, so their clients hear back at the deadline rather than
 * when a stream frees up.
 *
 * A request leaves the queue exactly once, under the device lock, taken by
 * a worker (which runs it or, if its deadline passed, times it out), by the
 * reaper (deadline) or by drain (cancel). Whoever takes it completes it.
 * complete() always runs without any serving lock held.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "base/status.h"
#include "obs/log.h"
#include "serving/serving_int.h"

/* ---- helpers ------------------------------------------------------------- */

static void abs_timespec(uint64_t ns, struct timespec *ts)
{
	ts->tv_sec = (time_t)(ns / 1000000000ull);
	ts->tv_nsec = (long)(ns % 1000000000ull);
}

static int cond_init_monotonic(pthread_cond_t *cv)
{
	pthread_condattr_t a;
	int rc = pthread_condattr_init(&a);
	if (rc)
		return rc;
	rc = pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	if (!rc)
		rc = pthread_cond_init(cv, &a);
	pthread_condattr_destroy(&a);
	return rc;
}

static bool device_idle(const es_device *d)
{
	return d->queued == 0 && d->active == 0 && d->completing == 0;
}

/* Caller holds d->mu. */
static void maybe_signal_idle(es_device *d)
{
	if (device_idle(d))
		pthread_cond_broadcast(&d->idle_cv);
}

static void queue_push(es_device *d, es_request *r)
{
	r->next = NULL;
	if (d->tail)
		d->tail->next = r;
	else
		d->head = r;
	d->tail = r;
	d->queued++;
	es_gauge_set(d->m_queue_size, d->queued);
}

static es_request *queue_pop(es_device *d)
{
	es_request *r = d->head;
	d->head = r->next;
	if (!d->head)
		d->tail = NULL;
	r->next = NULL;
	d->queued--;
	es_gauge_set(d->m_queue_size, d->queued);
	return r;
}

es_device *es_sched_find_device(es_server *s, const char *name)
{
	for (size_t i = 0; i < s->n_devices; i++)
		if (!strcmp(s->devices[i].name, name))
			return &s->devices[i];
	return NULL;
}

/* ---- completion ------------------------------------------------------------ */

static void complete_error(es_request *r)
{
	r->complete(r, NULL, 0);
}

static void complete_expired(es_device *d, es_request *r, uint64_t now)
{
	const es_version *v = r->version;
	double waited_ms = (double)(now - r->t_enqueue_ns) / 1e6;
	r->status = ES_ETIMEDOUT;
	es_error_set(&r->err, ES_ETIMEDOUT,
		     "model '%s' version %lld on device '%s': deadline exceeded while queued (waited %.1f ms)",
		     v->servable->name, (long long)v->number, d->name, waited_ms);
	es_counter_add(v->servable->m_deadline, 1);
	complete_error(r);
}

static void complete_cancelled(es_device *d, es_request *r)
{
	const es_version *v = r->version;
	r->status = ES_ECANCELED;
	es_error_set(&r->err, ES_ECANCELED,
		     "model '%s' version %lld: cancelled, the server is shutting down",
		     v->servable->name, (long long)v->number);
	complete_error(r);
}

/* ---- workers ----------------------------------------------------------------- */

static void run_request(es_worker *w, es_request *r, uint64_t t_start)
{
	es_device *d = w->dev;
	es_version *v = r->version;
	size_t n_out = es_model_num_outputs(v->model);

	/* keep v (and so the session owning the outputs) alive through
	 * complete(), even if the caller drops its reference in there */
	es_version_retain(v);
	r->stream = w->index;
	r->t_start_ns = t_start;
	es_histogram_observe(v->m_queue_wait, (double)(t_start - r->t_enqueue_ns) / 1e9);

	if (n_out > w->outputs_cap) {
		es_tensor *grown = realloc(w->outputs, n_out * sizeof(*grown));
		if (!grown) {
			r->t_end_ns = es_now_ns();
			r->status = es_error_set(&r->err, ES_ENOMEM, "out of memory");
			complete_error(r);
			goto out;
		}
		w->outputs = grown;
		w->outputs_cap = n_out;
	}
	memset(w->outputs, 0, n_out * sizeof(*w->outputs));
	int rc = es_session_run(v->sessions[w->index], r->inputs, r->n_inputs,
				w->outputs, &r->err);
	r->t_end_ns = es_now_ns();
	es_histogram_observe(v->m_inference, (double)(r->t_end_ns - t_start) / 1e9);
	if (rc) {
		if (!r->err.msg[0])
			es_error_set(&r->err, rc, "%s", es_strerror(rc));
		r->err.code = rc;
		r->status = rc;
		es_log_msg(ES_LOG_WARN, "inference_failed", "model '%s' version %lld on device '%s': %s",
			   v->servable->name, (long long)v->number, d->name, r->err.msg);
		complete_error(r);
	} else {
		r->status = 0;
		r->complete(r, w->outputs, n_out);
	}
out:
	es_version_release(v);
}

static void *worker_main(void *arg)
{
	es_worker *w = arg;
	es_device *d = w->dev;
	pthread_mutex_lock(&d->mu);
	for (;;) {
		while (!d->head && !d->stop)
			pthread_cond_wait(&d->work_cv, &d->mu);
		if (!d->head)
			break; /* stop, and nothing left */
		es_request *r = queue_pop(d);
		uint64_t now = es_now_ns();
		if (r->deadline_ns && now >= r->deadline_ns) {
			/* never run a request its client has given up on */
			d->completing++;
			pthread_mutex_unlock(&d->mu);
			complete_expired(d, r, now);
			pthread_mutex_lock(&d->mu);
			d->completing--;
			maybe_signal_idle(d);
			continue;
		}
		d->active++;
		es_gauge_set(d->m_active, d->active);
		pthread_mutex_unlock(&d->mu);

		run_request(w, r, now);

		pthread_mutex_lock(&d->mu);
		d->active--;
		es_gauge_set(d->m_active, d->active);
		maybe_signal_idle(d);
	}
	pthread_mutex_unlock(&d->mu);
	return NULL;
}

/* ---- the reaper ----------------------------------------------------------------- */

/* Completes every queued request whose deadline is at or before now.
 * Returns the earliest deadline still queued (UINT64_MAX for none). */
static uint64_t reap_all(es_server *s, uint64_t now)
{
	uint64_t next = UINT64_MAX;
	for (size_t i = 0; i < s->n_devices; i++) {
		es_device *d = &s->devices[i];
		es_request *expired = NULL, **tail = &expired;
		int n = 0;
		pthread_mutex_lock(&d->mu);
		es_request *prev = NULL;
		for (es_request *r = d->head; r;) {
			es_request *nx = r->next;
			if (r->deadline_ns && r->deadline_ns <= now) {
				if (prev)
					prev->next = nx;
				else
					d->head = nx;
				if (d->tail == r)
					d->tail = prev;
				r->next = NULL;
				*tail = r;
				tail = &r->next;
				d->queued--;
				n++;
			} else {
				if (r->deadline_ns && r->deadline_ns < next)
					next = r->deadline_ns;
				prev = r;
			}
			r = nx;
		}
		if (n) {
			d->completing += n;
			es_gauge_set(d->m_queue_size, d->queued);
		}
		pthread_mutex_unlock(&d->mu);
		if (!n)
			continue;
		for (es_request *r = expired; r;) {
			es_request *nx = r->next; /* r may be freed by complete */
			complete_expired(d, r, now);
			r = nx;
		}
		pthread_mutex_lock(&d->mu);
		d->completing -= n;
		maybe_signal_idle(d);
		pthread_mutex_unlock(&d->mu);
	}
	return next;
}

static void *reaper_main(void *arg)
{
	es_server *s = arg;
	pthread_mutex_lock(&s->reaper_mu);
	while (!s->reaper_stop) {
		uint64_t wake = atomic_load(&s->reaper_wake_ns);
		uint64_t now = es_now_ns();
		if (now < wake) {
			if (wake == UINT64_MAX) {
				pthread_cond_wait(&s->reaper_cv, &s->reaper_mu);
			} else {
				struct timespec ts;
				abs_timespec(wake, &ts);
				pthread_cond_timedwait(&s->reaper_cv, &s->reaper_mu, &ts);
			}
			continue;
		}
		/*
		 * Submitters enqueue first, then lower reaper_wake_ns if their
		 * deadline is earlier. Resetting it before the scan means a
		 * request the scan misses has lowered it again by the time we
		 * merge our own result below.
		 */
		atomic_store(&s->reaper_wake_ns, UINT64_MAX);
		pthread_mutex_unlock(&s->reaper_mu);
		uint64_t next = reap_all(s, es_now_ns());
		if (next != UINT64_MAX && next < now + ES_REAPER_MIN_INTERVAL_NS)
			next = now + ES_REAPER_MIN_INTERVAL_NS;
		pthread_mutex_lock(&s->reaper_mu);
		if (next < atomic_load(&s->reaper_wake_ns))
			atomic_store(&s->reaper_wake_ns, next);
	}
	pthread_mutex_unlock(&s->reaper_mu);
	return NULL;
}

/* Makes sure the reaper wakes up by `deadline`. */
static void reaper_notify(es_server *s, uint64_t deadline)
{
	if (deadline >= atomic_load(&s->reaper_wake_ns))
		return;
	pthread_mutex_lock(&s->reaper_mu);
	if (deadline < atomic_load(&s->reaper_wake_ns)) {
		atomic_store(&s->reaper_wake_ns, deadline);
		pthread_cond_signal(&s->reaper_cv);
	}
	pthread_mutex_unlock(&s->reaper_mu);
}

/* ---- start and stop ------------------------------------------------------------------ */

static int device_init(es_server *s, es_device *d, const es_device_config *dc,
		       es_error *err)
{
	d->srv = s;
	d->name = strdup(dc->name);
	d->backend = strdup(dc->backend ? dc->backend : "cpu");
	if (!d->name || !d->backend)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	d->streams = dc->streams;
	d->threads = dc->threads_per_stream;
	if (d->threads <= 0) {
		d->threads = s->ncpu / d->streams;
		if (d->threads < 1)
			d->threads = 1;
	}
	d->capacity = dc->max_queue_size > 0 ? dc->max_queue_size : ES_DEFAULT_QUEUE_SIZE;
	d->accepting = true;
	if (pthread_mutex_init(&d->mu, NULL))
		return es_error_set(err, ES_ENOMEM, "cannot create a mutex");
	if (pthread_cond_init(&d->work_cv, NULL)) {
		pthread_mutex_destroy(&d->mu);
		return es_error_set(err, ES_ENOMEM, "cannot create a condition variable");
	}
	if (cond_init_monotonic(&d->idle_cv)) {
		pthread_cond_destroy(&d->work_cv);
		pthread_mutex_destroy(&d->mu);
		return es_error_set(err, ES_ENOMEM, "cannot create a condition variable");
	}
	d->sync_ready = true;
	d->workers = calloc((size_t)d->streams, sizeof(*d->workers));
	if (!d->workers)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	if (s->metrics) {
		const char *labels[] = { d->name, NULL };
		d->m_queue_size = es_metric_get(s->f_queue_size, labels);
		d->m_capacity = es_metric_get(s->f_queue_capacity, labels);
		d->m_active = es_metric_get(s->f_active, labels);
		d->m_streams = es_metric_get(s->f_streams, labels);
		d->m_rejections = es_metric_get(s->f_rejections, labels);
		es_gauge_set(d->m_queue_size, 0);
		es_gauge_set(d->m_active, 0);
		es_gauge_set(d->m_capacity, d->capacity);
		es_gauge_set(d->m_streams, d->streams);
	}
	return 0;
}

int es_sched_start(es_server *s, const es_server_config *cfg, es_error *err)
{
	int rc;
	atomic_init(&s->reaper_wake_ns, UINT64_MAX);
	if (pthread_mutex_init(&s->reaper_mu, NULL))
		return es_error_set(err, ES_ENOMEM, "cannot create a mutex");
	if (cond_init_monotonic(&s->reaper_cv)) {
		pthread_mutex_destroy(&s->reaper_mu);
		return es_error_set(err, ES_ENOMEM, "cannot create a condition variable");
	}
	s->reaper_sync_ready = true;

	s->devices = calloc(cfg->n_devices, sizeof(*s->devices));
	if (!s->devices)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	for (size_t i = 0; i < cfg->n_devices; i++) {
		/* counted first: es_sched_stop frees what a failed init left */
		s->n_devices++;
		if ((rc = device_init(s, &s->devices[i], &cfg->devices[i], err)))
			return rc;
	}
	for (size_t i = 0; i < s->n_devices; i++) {
		es_device *d = &s->devices[i];
		for (int k = 0; k < d->streams; k++) {
			es_worker *w = &d->workers[k];
			w->dev = d;
			w->index = k;
			if (pthread_create(&w->thread, NULL, worker_main, w))
				return es_error_set(err, ES_ENOMEM,
						    "device '%s': cannot start stream %d",
						    d->name, k);
			w->started = true;
		}
	}
	if (pthread_create(&s->reaper, NULL, reaper_main, s))
		return es_error_set(err, ES_ENOMEM, "cannot start the deadline reaper");
	s->reaper_started = true;
	return 0;
}

void es_sched_stop(es_server *s)
{
	if (s->reaper_started) {
		pthread_mutex_lock(&s->reaper_mu);
		s->reaper_stop = true;
		pthread_cond_signal(&s->reaper_cv);
		pthread_mutex_unlock(&s->reaper_mu);
		pthread_join(s->reaper, NULL);
		s->reaper_started = false;
	}
	for (size_t i = 0; i < s->n_devices; i++) {
		es_device *d = &s->devices[i];
		if (d->sync_ready) {
			pthread_mutex_lock(&d->mu);
			d->stop = true;
			pthread_cond_broadcast(&d->work_cv);
			pthread_mutex_unlock(&d->mu);
		}
		for (int k = 0; d->workers && k < d->streams; k++) {
			if (d->workers[k].started)
				pthread_join(d->workers[k].thread, NULL);
			free(d->workers[k].outputs);
		}
		free(d->workers);
		if (d->sync_ready) {
			pthread_cond_destroy(&d->idle_cv);
			pthread_cond_destroy(&d->work_cv);
			pthread_mutex_destroy(&d->mu);
		}
		free(d->name);
		free(d->backend);
	}
	free(s->devices);
	s->devices = NULL;
	s->n_devices = 0;
	if (s->reaper_sync_ready) {
		pthread_cond_destroy(&s->reaper_cv);
		pthread_mutex_destroy(&s->reaper_mu);
		s->reaper_sync_ready = false;
	}
}

/* ---- submission ------------------------------------------------------------------------- */

static void format_shape(char *out, size_t cap, const int64_t *dims, int ndim)
{
	size_t o = 0;
	o += (size_t)snprintf(out, cap, "[");
	for (int i = 0; i < ndim && o < cap; i++)
		o += (size_t)snprintf(out + o, cap - o, "%s%lld", i ? "," : "",
				      (long long)dims[i]);
	if (o < cap)
		snprintf(out + o, cap - o, "]");
}

static int check_input(const es_servable *m, const es_value_info *info,
		       const es_tensor *t, es_error *err)
{
	char want[200], got[200];
	if (t->dtype != info->dtype)
		return es_error_set(err, ES_ETYPE,
				    "model '%s' input '%s': expected datatype %s, got %s",
				    m->name, info->name, es_dtype_name(info->dtype),
				    es_dtype_name(t->dtype));
	if (t->ndim < 0 || t->ndim > ES_MAX_DIMS)
		return es_error_set(err, ES_ESHAPE,
				    "model '%s' input '%s': expected at most %d dimensions, got %d",
				    m->name, info->name, ES_MAX_DIMS, t->ndim);
	format_shape(got, sizeof(got), t->dims, t->ndim);
	if (info->ndim >= 0)
		format_shape(want, sizeof(want), info->dims, info->ndim);
	else
		snprintf(want, sizeof(want), "any shape");
	if (info->ndim >= 0 && t->ndim != info->ndim)
		return es_error_set(err, ES_ESHAPE,
				    "model '%s' input '%s': expected shape %s (%d dimensions), got %s (%d dimensions)",
				    m->name, info->name, want, info->ndim, got, t->ndim);
	for (int i = 0; i < t->ndim; i++) {
		if (t->dims[i] < 0)
			return es_error_set(err, ES_ESHAPE,
					    "model '%s' input '%s': dimension %d is negative in shape %s",
					    m->name, info->name, i, got);
		if (info->ndim >= 0 && info->dims[i] >= 0 && t->dims[i] != info->dims[i])
			return es_error_set(err, ES_ESHAPE,
					    "model '%s' input '%s': dimension %d: expected %lld, got %lld (expected shape %s, got %s; -1 is any size)",
					    m->name, info->name, i, (long long)info->dims[i],
					    (long long)t->dims[i], want, got);
	}
	size_t elem = es_dtype_size(t->dtype);
	if (!elem)
		return es_error_set(err, ES_ETYPE,
				    "model '%s' input '%s': datatype %s is not supported",
				    m->name, info->name, es_dtype_name(t->dtype));
	int64_t numel;
	if (es_shape_numel(t->dims, t->ndim, elem, &numel))
		return es_error_set(err, ES_ERANGE,
				    "model '%s' input '%s': shape %s is too large",
				    m->name, info->name, got);
	size_t nbytes = (size_t)numel * elem; /* checked by es_shape_numel */
	if (t->nbytes != nbytes)
		return es_error_set(err, ES_EINVAL,
				    "model '%s' input '%s': expected %zu bytes of data for shape %s of %s, got %zu",
				    m->name, info->name, nbytes, got,
				    es_dtype_name(t->dtype), t->nbytes);
	if (nbytes && !t->data)
		return es_error_set(err, ES_EINVAL, "model '%s' input '%s': no data",
				    m->name, info->name);
	return 0;
}

static int check_inputs(const es_version *v, const es_request *r, es_error *err)
{
	const es_servable *m = v->servable;
	size_t n = es_model_num_inputs(v->model);
	if (r->n_inputs != n)
		return es_error_set(err, ES_EINVAL,
				    "model '%s' version %lld: expected %zu inputs, got %zu",
				    m->name, (long long)v->number, n, r->n_inputs);
	if (n && !r->inputs)
		return es_error_set(err, ES_EINVAL, "model '%s': no inputs given", m->name);
	for (size_t i = 0; i < n; i++) {
		int rc = check_input(m, es_model_input(v->model, i), &r->inputs[i], err);
		if (rc)
			return rc;
	}
	return 0;
}

int es_server_submit(es_server *s, es_request *r, es_error *err)
{
	if (!r || !r->version || !r->complete)
		return es_error_set(err, ES_EINVAL, "invalid request: no version or completion");
	es_version *v = r->version;
	if (!v->servable || v->servable->srv != s)
		return es_error_set(err, ES_EINVAL, "invalid request: version of another server");
	int rc = check_inputs(v, r, err);
	if (rc)
		return rc;
	es_device *d = v->servable->dev;
	r->t_enqueue_ns = 0;
	r->t_start_ns = 0;
	r->t_end_ns = 0;
	r->stream = -1;
	r->device = d->name;
	r->status = 0;
	es_error_clear(&r->err);
	r->next = NULL;

	uint64_t deadline = r->deadline_ns;
	pthread_mutex_lock(&d->mu);
	if (!d->accepting) {
		pthread_mutex_unlock(&d->mu);
		return es_error_set(err, ES_ECANCELED,
				    "model '%s': the server is shutting down",
				    v->servable->name);
	}
	if (d->queued >= d->capacity) {
		pthread_mutex_unlock(&d->mu);
		es_counter_add(d->m_rejections, 1);
		return es_error_set(err, ES_EBUSY, "device '%s' queue is full (%d requests)",
				    d->name, d->capacity);
	}
	/* stamped under the lock, so enqueue times follow queue order */
	r->t_enqueue_ns = es_now_ns();
	queue_push(d, r);
	pthread_cond_signal(&d->work_cv);
	pthread_mutex_unlock(&d->mu);
	/* from here on r may already be completed and gone */
	if (deadline)
		reaper_notify(s, deadline);
	return 0;
}

/* ---- drain and status ----------------------------------------------------------------------- */

size_t es_server_drain(es_server *s, int64_t timeout_ms)
{
	size_t cancelled = 0;
	atomic_store(&s->draining, true);
	for (size_t i = 0; i < s->n_devices; i++) {
		es_device *d = &s->devices[i];
		if (!d->sync_ready)
			continue;
		pthread_mutex_lock(&d->mu);
		d->accepting = false;
		pthread_mutex_unlock(&d->mu);
	}

	/* let queued and running requests finish, up to the timeout */
	uint64_t now = es_now_ns(), until = now;
	if (timeout_ms > 0) {
		uint64_t span = (uint64_t)timeout_ms > UINT64_MAX / 2000000ull
			? UINT64_MAX / 2 : (uint64_t)timeout_ms * 1000000ull;
		until = now + span;
	}
	for (size_t i = 0; i < s->n_devices; i++) {
		es_device *d = &s->devices[i];
		struct timespec ts;
		if (!d->sync_ready)
			continue;
		abs_timespec(until, &ts);
		pthread_mutex_lock(&d->mu);
		while (!device_idle(d) && es_now_ns() < until)
			if (pthread_cond_timedwait(&d->idle_cv, &d->mu, &ts) == ETIMEDOUT)
				break;
		pthread_mutex_unlock(&d->mu);
	}

	/* cancel what is still queued */
	for (size_t i = 0; i < s->n_devices; i++) {
		es_device *d = &s->devices[i];
		if (!d->sync_ready)
			continue;
		pthread_mutex_lock(&d->mu);
		es_request *list = d->head;
		int n = d->queued;
		d->head = d->tail = NULL;
		d->queued = 0;
		d->completing += n;
		es_gauge_set(d->m_queue_size, 0);
		pthread_mutex_unlock(&d->mu);
		for (es_request *r = list; r;) {
			es_request *nx = r->next;
			complete_cancelled(d, r);
			r = nx;
		}
		cancelled += (size_t)n;
		pthread_mutex_lock(&d->mu);
		d->completing -= n;
		maybe_signal_idle(d);
		pthread_mutex_unlock(&d->mu);
	}

	/* a running inference cannot be interrupted: wait for it */
	for (size_t i = 0; i < s->n_devices; i++) {
		es_device *d = &s->devices[i];
		if (!d->sync_ready)
			continue;
		pthread_mutex_lock(&d->mu);
		while (!device_idle(d))
			pthread_cond_wait(&d->idle_cv, &d->mu);
		pthread_mutex_unlock(&d->mu);
	}
	if (cancelled)
		es_log_msg(ES_LOG_WARN, "drain", "cancelled %zu queued requests", cancelled);
	return cancelled;
}

size_t es_server_devices(es_server *s, es_device_status *out, size_t max)
{
	for (size_t i = 0; i < s->n_devices && i < max; i++) {
		es_device *d = &s->devices[i];
		out[i].name = d->name;
		out[i].backend = d->backend;
		out[i].streams = d->streams;
		out[i].max_queue_size = d->capacity;
		pthread_mutex_lock(&d->mu);
		out[i].queue_size = d->queued;
		out[i].active = d->active;
		pthread_mutex_unlock(&d->mu);
	}
	return s->n_devices;
}
