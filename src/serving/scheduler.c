/*
 * Devices and their scheduling: one bounded FIFO per device, `streams`
 * worker threads that pop the oldest request and run it on their own engine
 * session, and one reaper thread that completes queued requests whose
 * deadline passed, so their clients hear back at the deadline rather than
 * when a stream frees up.
 *
 * A request leaves the queue exactly once, under the device lock, taken by
 * a worker (which runs it or, if its deadline passed, times it out), by the
 * reaper (deadline) or by drain (cancel). Whoever takes it completes it,
 * except that a worker may hand a request that failed with a device error
 * to the fallback device's queue once, where the same rule applies again.
 * complete() always runs without any serving lock held, and no thread ever
 * holds two device locks.
 *
 * Each device runs requests through its backend (backend.c). A device with
 * a fallback spills new requests there when its own queue is deep or its
 * expected wait long, and retries device errors there once. Next to the
 * normal queue every device has a low-priority queue (shadow runs) served
 * by one more worker that runs at SCHED_IDLE priority (idle_main), so that
 * mirrored runs take only CPU time that client requests leave unused.
 */
#define _GNU_SOURCE /* SCHED_IDLE */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "base/status.h"
#include "obs/log.h"
#include "serving/serving_int.h"

/* Weight of the newest run in a device's mean service time. */
#define ES_SERVICE_EWMA_ALPHA 0.2

static void reaper_notify(es_server *s, uint64_t deadline);

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
	return d->queued == 0 && d->low_queued == 0 && d->active == 0 &&
	       d->completing == 0;
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

static void low_push(es_device *d, es_request *r)
{
	r->next = NULL;
	if (d->low_tail)
		d->low_tail->next = r;
	else
		d->low_head = r;
	d->low_tail = r;
	d->low_queued++;
}

static es_request *low_pop(es_device *d)
{
	es_request *r = d->low_head;
	d->low_head = r->next;
	if (!d->low_head)
		d->low_tail = NULL;
	r->next = NULL;
	d->low_queued--;
	return r;
}

es_device *es_sched_find_device(es_server *s, const char *name)
{
	for (size_t i = 0; i < s->n_devices; i++)
		if (!strcmp(s->devices[i].name, name))
			return &s->devices[i];
	return NULL;
}

/* True when d is the device running v's requests; otherwise d is that
 * device's fallback. */
static bool on_primary(const es_device *d, const es_version *v)
{
	return v->servable->dev == d;
}

/* The fallback of v's device can run v: it has sessions for it. */
static bool fallback_ready(const es_version *v)
{
	const es_device *d = v->servable->dev;
	return d->fallback && v->fb_sessions && v->n_fb_sessions == d->fallback->streams;
}

/* Counts one request handed to (or failed on) the fallback of primary. */
static void count_fallback(es_device *primary, const char *reason)
{
	es_metric_child *c = NULL;
	if (!strcmp(reason, "spill_queue"))
		c = primary->m_fallback_spill_queue;
	else if (!strcmp(reason, "spill_wait"))
		c = primary->m_fallback_spill_wait;
	else if (!strcmp(reason, "error"))
		c = primary->m_fallback_error;
	else
		c = primary->m_fallback_failed;
	es_counter_add(c, 1);
}

/* ---- completion ------------------------------------------------------------ */

/* The request will not be mirrored: drop the shadow reference it carries. */
static void drop_shadow(es_request *r)
{
	if (r->shadow) {
		es_version_release(r->shadow);
		r->shadow = NULL;
	}
}

/* Feeds the rollout statistics of r's arm (normal requests only). A request
 * that never ran (deadline) ends now. */
static void record_outcome(const es_request *r, bool ok)
{
	uint64_t end = r->t_end_ns ? r->t_end_ns : es_now_ns();
	double latency = r->t_enqueue_ns && end > r->t_enqueue_ns
		? (double)(end - r->t_enqueue_ns) / 1e9 : 0.0;
	es_rollout_record(r->version->servable, r->arm, ok, latency);
}

static void complete_error(es_request *r)
{
	drop_shadow(r);
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
	record_outcome(r, false);
	complete_error(r);
}

static void complete_cancelled(es_device *d, es_request *r)
{
	const es_version *v = r->version;
	(void)d;
	r->status = ES_ECANCELED;
	es_error_set(&r->err, ES_ECANCELED,
		     "model '%s' version %lld: cancelled, the server is shutting down",
		     v->servable->name, (long long)v->number);
	complete_error(r);
}

/* ---- workers ----------------------------------------------------------------- */

/*
 * Hands r, which failed with a device error on its primary device, to the
 * fallback's queue. Returns true when queued (r now belongs to the
 * fallback); false when the fallback cannot take it (draining or full), in
 * which case r->err says so as well.
 */
static bool retry_on_fallback(es_device *d, es_request *r)
{
	es_device *fb = d->fallback;
	uint64_t deadline = r->deadline_ns;
	const char *why = NULL;
	pthread_mutex_lock(&fb->mu);
	if (!fb->accepting)
		why = "the server is shutting down";
	else if (fb->queued >= fb->capacity)
		why = "its queue is full";
	if (!why) {
		/* counted before it can complete: whoever sees the answer sees
		 * the count */
		count_fallback(d, "error");
		/* t_enqueue_ns stays: the client's latency, the rollout
		 * statistics and the queue wait on the fallback all count from
		 * the first enqueue */
		r->fallback_reason = "error";
		r->device = fb->name;
		r->status = 0;
		queue_push(fb, r);
		pthread_cond_signal(&fb->work_cv);
	}
	pthread_mutex_unlock(&fb->mu);
	if (why) {
		es_error_prefix(&r->err, "not retried on fallback device '%s' (%s)", fb->name,
				why);
		return false;
	}
	/* from here on r may already be completed and gone */
	if (deadline)
		reaper_notify(d->srv, deadline);
	return true;
}

/* Runs r on worker w's stream through the device's backend and completes
 * it, or hands it to the fallback (a device error on the primary). Returns
 * the time the backend ran (s), 0 when it did not. low: r came from the
 * low-priority queue (no rollout statistics, no shadow, no retry). */
static double run_request(es_worker *w, es_request *r, uint64_t t_start, bool low)
{
	es_device *d = w->dev;
	es_server *s = d->srv;
	es_version *v = r->version;
	es_servable *m = v->servable;
	size_t n_out = es_model_num_outputs(v->model);
	bool primary = on_primary(d, v);
	es_metric_child *m_wait = v->m_queue_wait, *m_run = v->m_inference;
	es_session *session = NULL;
	double busy_s = 0;

	/* keep v (and so the session owning the outputs) alive through
	 * complete(), even if the caller drops its reference in there */
	es_version_retain(v);
	r->stream = w->index;
	r->t_start_ns = t_start;
	r->device = d->name;
	if (!primary && s->metrics) {
		char ver[24];
		snprintf(ver, sizeof(ver), "%lld", (long long)v->number);
		const char *labels[] = { m->name, ver, d->name, NULL };
		m_wait = es_metric_get(s->f_queue_wait, labels);
		m_run = es_metric_get(s->f_inference, labels);
	}
	es_histogram_observe(m_wait, (double)(t_start - r->t_enqueue_ns) / 1e9);

	if (low && w->index >= 0) {
		/* a mirrored run a stream takes while its device is idle */
		session = primary && w->index < v->n_sessions ? v->sessions[w->index] : NULL;
	} else if (low) {
		/* the idle worker's own session of v, made on first use */
		if (!v->idle_session && primary) {
			/* one thread: a mirrored run needs no speed, and a
			 * single idle thread is the least to preempt */
			es_session_options so = { .threads = 1 };
			es_error serr = { 0 };
			if (es_session_create(v->model, &so, &v->idle_session, &serr))
				es_log_msg(ES_LOG_WARN, "shadow_session",
					   "model '%s' version %lld: cannot create a session for low-priority runs: %s",
					   m->name, (long long)v->number, serr.msg);
		}
		session = v->idle_session;
	} else if (primary) {
		session = w->index < v->n_sessions ? v->sessions[w->index] : NULL;
	} else if (fallback_ready(v)) {
		session = v->fb_sessions[w->index];
	}
	if (!session) {
		/* queued here only by the checks in submit and retry */
		r->t_end_ns = es_now_ns();
		r->status = es_error_set(&r->err, ES_EINTERNAL,
					 "model '%s' version %lld: no session on device '%s'",
					 m->name, (long long)v->number, d->name);
		goto out_failed;
	}
	if (n_out > w->outputs_cap) {
		es_tensor *grown = realloc(w->outputs, n_out * sizeof(*grown));
		if (!grown) {
			r->t_end_ns = es_now_ns();
			r->status = es_error_set(&r->err, ES_ENOMEM, "out of memory");
			goto out_failed;
		}
		w->outputs = grown;
		w->outputs_cap = n_out;
	}
	memset(w->outputs, 0, n_out * sizeof(*w->outputs));
	es_error_clear(&r->err);
	es_backend_run br = {
		.model = m->name,
		.version = v->number,
		.device = d->name,
		.session = session,
		.inputs = r->inputs,
		.n_inputs = r->n_inputs,
		.outputs = w->outputs,
		.n_outputs = n_out,
	};
	int rc = d->be->run(d->be_state, &br, &r->err);
	r->t_end_ns = es_now_ns();
	busy_s = (double)(r->t_end_ns - t_start) / 1e9;
	es_histogram_observe(m_run, busy_s);
	if (!rc) {
		r->status = 0;
		es_shadow_job *shadow = NULL;
		if (!low) {
			record_outcome(r, true);
			if (r->shadow) /* takes r->shadow */
				shadow = es_shadow_take(s, r, w->outputs, n_out);
		}
		drop_shadow(r);
		r->complete(r, w->outputs, n_out);
		w->shadow = shadow; /* r may be gone: the job has copies */
		goto out;
	}
	if (!r->err.msg[0])
		es_error_set(&r->err, rc, "%s", es_strerror(rc));
	r->err.code = rc;
	r->status = rc;
	es_log_msg(ES_LOG_WARN, "inference_failed",
		   "model '%s' version %lld on device '%s'%s: %s", m->name,
		   (long long)v->number, d->name, primary ? "" : " (fallback)", r->err.msg);
	if (!low) {
		if (primary && fallback_ready(v)) {
			if (retry_on_fallback(d, r))
				goto out;
			count_fallback(d, "failed");
		} else if (!primary) {
			count_fallback(m->dev, "failed");
		}
	}
out_failed:
	if (!low)
		record_outcome(r, false);
	complete_error(r);
out:
	es_version_release(v);
	return busy_s;
}

/*
 * The shadow copy of the request worker w just answered (its run took
 * busy_s): a cheap one (a primary run within the model's shadow
 * inline_max_us, default 250 us) runs right here on the stream's own
 * session when the shadow version is on this device and no request waits
 * for it; anything else goes to the device's low-priority queue and its
 * idle worker. For a short run the hand-over to the idle
 * thread (waking it, and preempting it again for every hand-off of the
 * next requests) costs the primary more than the run itself, which ends
 * before the client's next request usually arrives; a long one must not
 * sit in front of that request.
 */
static void take_shadow(es_worker *w, double busy_s)
{
	es_device *d = w->dev;
	es_shadow_job *j = w->shadow;
	w->shadow = NULL;
	pthread_mutex_lock(&d->mu);
	bool idle = !d->head && !d->stop;
	pthread_mutex_unlock(&d->mu);
	double inline_max_s = 0;
	es_request *r = idle ? es_shadow_request(j, &inline_max_s) : NULL;
	if (r && busy_s > 0 && busy_s <= inline_max_s && r->version->servable->dev == d) {
		es_counter_add(d->m_shadow_stream, 1);
		run_request(w, r, es_now_ns(), true); /* its completion frees j */
	} else
		es_shadow_queue(d->srv, j);
}

/* A stream worker: runs the normal queue. */
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
		bool low = false;
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

		double busy_s = run_request(w, r, now, low);
		if (w->shadow)
			take_shadow(w, busy_s);

		pthread_mutex_lock(&d->mu);
		if (busy_s > 0) /* 0: nothing ran */
			d->ewma_service_s = d->ewma_service_s > 0
				? (1.0 - ES_SERVICE_EWMA_ALPHA) * d->ewma_service_s +
					  ES_SERVICE_EWMA_ALPHA * busy_s
				: busy_s;
		d->active--;
		es_gauge_set(d->m_active, d->active);
		maybe_signal_idle(d);
	}
	pthread_mutex_unlock(&d->mu);
	return NULL;
}

/*
 * The idle worker: runs the low-priority queue (shadow runs) on a thread
 * scheduled with SCHED_IDLE, whose OpenMP team inherits the policy, so the
 * kernel gives it only CPU time that the stream workers and the network
 * threads leave unused: a mirrored run never delays a client's request by
 * more than the cache and memory traffic it causes. It does not count as
 * one of the device's streams, nor in its service-time average.
 */
static void *idle_main(void *arg)
{
	es_worker *w = arg;
	es_device *d = w->dev;
	struct sched_param sp = { 0 };
	int prc = pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp);
	if (prc)
		es_log_msg(ES_LOG_WARN, "shadow_priority",
			   "device '%s': cannot lower the priority of low-priority runs (%s); they compete with requests",
			   d->name, strerror(prc));
	pthread_mutex_lock(&d->mu);
	for (;;) {
		while (!d->low_head && !d->stop)
			pthread_cond_wait(&d->low_cv, &d->mu);
		if (!d->low_head)
			break;
		es_request *r = low_pop(d);
		d->active++;
		pthread_mutex_unlock(&d->mu);
		es_counter_add(d->m_shadow_idle, 1);
		run_request(w, r, es_now_ns(), true);
		pthread_mutex_lock(&d->mu);
		d->active--;
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
		       int default_threads, es_error *err)
{
	d->srv = s;
	d->name = strdup(dc->name);
	d->backend = strdup(dc->backend ? dc->backend : "cpu");
	if (!d->name || !d->backend)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	d->streams = dc->streams;
	d->threads = dc->threads_per_stream > 0 ? dc->threads_per_stream : default_threads;
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
	if (pthread_cond_init(&d->low_cv, NULL)) {
		pthread_cond_destroy(&d->idle_cv);
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
		const char *stream[] = { d->name, "stream", NULL };
		const char *idle[] = { d->name, "idle", NULL };
		d->m_shadow_stream = es_metric_get(s->f_shadow_runs, stream);
		d->m_shadow_idle = es_metric_get(s->f_shadow_runs, idle);
		es_gauge_set(d->m_queue_size, 0);
		es_gauge_set(d->m_active, 0);
		es_gauge_set(d->m_capacity, d->capacity);
		es_gauge_set(d->m_streams, d->streams);
	}
	const es_backend *be = es_backend_find(d->backend);
	if (!be)
		return es_error_set(err, ES_EINVAL,
				    "device '%s': backend '%s' is not available in this build",
				    d->name, d->backend);
	void *state = NULL;
	if (be->open) {
		int rc = be->open(dc, &state, err);
		if (rc) {
			es_error_prefix(err, "device '%s': backend '%s'", d->name, d->backend);
			return rc;
		}
	}
	/* set only once open succeeded: es_sched_stop closes what is set */
	d->be_state = state;
	d->be = be;
	return 0;
}

/* Links d to the fallback its configuration names (all devices exist). */
static int device_link_fallback(es_server *s, es_device *d, const es_device_config *dc,
				es_error *err)
{
	if (dc->spill_queue_depth < 0 || dc->spill_queue_depth > ES_MAX_QUEUE_SIZE)
		return es_error_set(err, ES_EINVAL,
				    "device '%s': spill_queue_depth: expected 0..%d, got %d",
				    d->name, ES_MAX_QUEUE_SIZE, dc->spill_queue_depth);
	if (dc->spill_wait_ms < 0)
		return es_error_set(err, ES_EINVAL,
				    "device '%s': spill_wait_ms: expected 0 or more, got %d",
				    d->name, dc->spill_wait_ms);
	if (!dc->fallback)
		return 0;
	es_device *fb = es_sched_find_device(s, dc->fallback);
	if (!fb)
		return es_error_set(err, ES_EINVAL,
				    "device '%s': fallback: no device is named '%.64s'",
				    d->name, dc->fallback);
	if (fb == d)
		return es_error_set(err, ES_EINVAL,
				    "device '%s': fallback: a device cannot be its own fallback",
				    d->name);
	d->fallback = fb;
	d->spill_depth = dc->spill_queue_depth;
	d->spill_wait_s = (double)dc->spill_wait_ms / 1000.0;
	if (s->metrics) {
		const char *sq[] = { d->name, fb->name, "spill_queue", NULL };
		const char *sw[] = { d->name, fb->name, "spill_wait", NULL };
		const char *er[] = { d->name, fb->name, "error", NULL };
		const char *fa[] = { d->name, fb->name, "failed", NULL };
		d->m_fallback_spill_queue = es_metric_get(s->f_fallback, sq);
		d->m_fallback_spill_wait = es_metric_get(s->f_fallback, sw);
		d->m_fallback_error = es_metric_get(s->f_fallback, er);
		d->m_fallback_failed = es_metric_get(s->f_fallback, fa);
	}
	return 0;
}

/*
 * Intra-op threads of a stream whose device leaves threads_per_stream open:
 * the cores the explicit settings leave, shared by every such stream of
 * every device (at least 1), so that all streams busy at once (a device
 * and its fallback under overload) do not ask for more threads than there
 * are cores: OpenMP teams spinning at barriers on oversubscribed cores
 * run many times slower (docs/engine.md, "Threading"). Warns when the
 * explicit settings alone oversubscribe.
 */
static int default_stream_threads(const es_server *s, const es_server_config *cfg)
{
	long fixed = 0, open_streams = 0;
	for (size_t i = 0; i < cfg->n_devices; i++) {
		const es_device_config *dc = &cfg->devices[i];
		if (dc->threads_per_stream > 0)
			fixed += (long)dc->streams * dc->threads_per_stream;
		else
			open_streams += dc->streams;
	}
	long left = (long)s->ncpu - fixed;
	int per = open_streams > 0 && left / open_streams >= 1 ? (int)(left / open_streams) : 1;
	long total = fixed + open_streams * per;
	if (total > s->ncpu)
		es_log_msg(ES_LOG_WARN, "threads_oversubscribed",
			   "the devices' streams use %ld intra-op threads on %d cores when all run at once; lower threads_per_stream or streams",
			   total, s->ncpu);
	return per;
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
	int default_threads = default_stream_threads(s, cfg);
	for (size_t i = 0; i < cfg->n_devices; i++) {
		/* counted first: es_sched_stop frees what a failed init left */
		s->n_devices++;
		if ((rc = device_init(s, &s->devices[i], &cfg->devices[i], default_threads,
				      err)))
			return rc;
	}
	for (size_t i = 0; i < s->n_devices; i++)
		if ((rc = device_link_fallback(s, &s->devices[i], &cfg->devices[i], err)))
			return rc;
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
		es_worker *iw = &d->idle_worker;
		iw->dev = d;
		iw->index = -1;
		if (pthread_create(&iw->thread, NULL, idle_main, iw))
			return es_error_set(err, ES_ENOMEM,
					    "device '%s': cannot start the low-priority worker", d->name);
		iw->started = true;
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
			pthread_cond_broadcast(&d->low_cv);
			pthread_mutex_unlock(&d->mu);
		}
		if (d->idle_worker.started)
			pthread_join(d->idle_worker.thread, NULL);
		free(d->idle_worker.outputs);
		for (int k = 0; d->workers && k < d->streams; k++) {
			if (d->workers[k].started)
				pthread_join(d->workers[k].thread, NULL);
			free(d->workers[k].outputs);
		}
		free(d->workers);
		if (d->be && d->be->close)
			d->be->close(d->be_state);
		d->be = NULL;
		d->be_state = NULL;
		if (d->sync_ready) {
			pthread_cond_destroy(&d->low_cv);
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

/*
 * Whether a new request for device d should go to its fallback instead, and
 * why (NULL: stay). Caller holds d->mu.
 */
static const char *spill_reason(const es_device *d)
{
	if (d->spill_depth > 0 && d->queued >= d->spill_depth)
		return "spill_queue";
	if (d->spill_wait_s > 0 && d->ewma_service_s > 0) {
		double wait_s = (double)(d->queued + d->active) * d->ewma_service_s /
				(double)d->streams;
		if (wait_s > d->spill_wait_s)
			return "spill_wait";
	}
	return NULL;
}

/* Queues r on fb (d's fallback) for reason. Returns false when fb cannot
 * take it now. */
static bool spill_to(es_device *d, es_device *fb, es_request *r, const char *reason)
{
	pthread_mutex_lock(&fb->mu);
	if (!fb->accepting || fb->queued >= fb->capacity) {
		pthread_mutex_unlock(&fb->mu);
		return false;
	}
	count_fallback(d, reason); /* before anyone can see r complete */
	r->device = fb->name;
	r->fallback_reason = reason;
	r->t_enqueue_ns = es_now_ns();
	queue_push(fb, r);
	pthread_cond_signal(&fb->work_cv);
	pthread_mutex_unlock(&fb->mu);
	return true;
}

/* A request the scheduler refuses still owns its shadow reference: drop it
 * (es_request.shadow: the scheduler takes that reference in every case). */
static int refuse(es_request *r, int rc)
{
	drop_shadow(r);
	return rc;
}

int es_server_submit(es_server *s, es_request *r, es_error *err)
{
	if (!r || !r->version || !r->complete) {
		if (r)
			drop_shadow(r);
		return es_error_set(err, ES_EINVAL, "invalid request: no version or completion");
	}
	es_version *v = r->version;
	if (!v->servable || v->servable->srv != s)
		return refuse(r, es_error_set(err, ES_EINVAL,
					      "invalid request: version of another server"));
	int rc = check_inputs(v, r, err);
	if (rc)
		return refuse(r, rc);
	es_device *d = v->servable->dev;
	r->t_enqueue_ns = 0;
	r->t_start_ns = 0;
	r->t_end_ns = 0;
	r->stream = -1;
	r->device = d->name;
	r->fallback_reason = NULL;
	r->status = 0;
	es_error_clear(&r->err);
	r->next = NULL;

	uint64_t deadline = r->deadline_ns;
	const char *spill = NULL;
	pthread_mutex_lock(&d->mu);
	if (d->accepting && fallback_ready(v))
		spill = spill_reason(d);
	if (spill) {
		/* never two device locks at once: decide, then move over */
		pthread_mutex_unlock(&d->mu);
		if (spill_to(d, d->fallback, r, spill))
			goto queued;
		/* the fallback is full as well: the primary takes it if it can */
		pthread_mutex_lock(&d->mu);
	}
	if (!d->accepting) {
		pthread_mutex_unlock(&d->mu);
		return refuse(r, es_error_set(err, ES_ECANCELED,
					      "model '%s': the server is shutting down",
					      v->servable->name));
	}
	if (d->queued >= d->capacity) {
		pthread_mutex_unlock(&d->mu);
		es_counter_add(d->m_rejections, 1);
		es_rollout_record(v->servable, r->arm, false, 0.0);
		if (spill)
			return refuse(r, es_error_set(err, ES_EBUSY,
						      "device '%s' queue is full (%d requests) and so is its fallback '%s'",
						      d->name, d->capacity, d->fallback->name));
		return refuse(r, es_error_set(err, ES_EBUSY,
					      "device '%s' queue is full (%d requests)",
					      d->name, d->capacity));
	}
	/* stamped under the lock, so enqueue times follow queue order */
	r->t_enqueue_ns = es_now_ns();
	queue_push(d, r);
	pthread_cond_signal(&d->work_cv);
	pthread_mutex_unlock(&d->mu);
queued:
	/* from here on r may already be completed and gone */
	if (deadline)
		reaper_notify(s, deadline);
	return 0;
}

/*
 * Queues r below every normal request of its version's device: workers take
 * it only when the normal queue is empty. Its deadline is not enforced (the
 * reaper never looks at this queue); it is neither spilled nor retried on a
 * fallback, and does not count in the rollout statistics.
 */
int es_sched_submit_low(es_server *s, es_request *r, int capacity, es_error *err)
{
	if (!r || !r->version || !r->complete) {
		if (r)
			drop_shadow(r);
		return es_error_set(err, ES_EINVAL, "invalid request: no version or completion");
	}
	drop_shadow(r); /* a mirrored run is never mirrored again */
	es_version *v = r->version;
	if (!v->servable || v->servable->srv != s)
		return es_error_set(err, ES_EINVAL, "invalid request: version of another server");
	if (capacity <= 0)
		return es_error_set(err, ES_EINVAL,
				    "low-priority queue capacity: expected 1 or more, got %d",
				    capacity);
	int rc = check_inputs(v, r, err);
	if (rc)
		return rc;
	es_device *d = v->servable->dev;
	r->t_enqueue_ns = 0;
	r->t_start_ns = 0;
	r->t_end_ns = 0;
	r->stream = -1;
	r->device = d->name;
	r->fallback_reason = NULL;
	r->status = 0;
	es_error_clear(&r->err);
	r->next = NULL;

	pthread_mutex_lock(&d->mu);
	if (!d->accepting) {
		pthread_mutex_unlock(&d->mu);
		return es_error_set(err, ES_ECANCELED, "model '%s': the server is shutting down",
				    v->servable->name);
	}
	if (d->low_queued >= capacity) {
		pthread_mutex_unlock(&d->mu);
		return es_error_set(err, ES_EBUSY,
				    "device '%s' low-priority queue is full (%d requests)",
				    d->name, capacity);
	}
	r->t_enqueue_ns = es_now_ns();
	low_push(d, r);
	pthread_cond_signal(&d->low_cv);
	pthread_mutex_unlock(&d->mu);
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
		es_request *list = d->head, *low = d->low_head;
		int n = d->queued + d->low_queued;
		d->head = d->tail = NULL;
		d->low_head = d->low_tail = NULL;
		d->queued = 0;
		d->low_queued = 0;
		d->completing += n;
		es_gauge_set(d->m_queue_size, 0);
		pthread_mutex_unlock(&d->mu);
		for (es_request *r = list; r;) {
			es_request *nx = r->next; /* r may be freed by complete */
			complete_cancelled(d, r);
			r = nx;
		}
		for (es_request *r = low; r;) {
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
