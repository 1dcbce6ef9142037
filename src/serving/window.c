/*
 * Sliding windows of one-second slots (see window.h).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "serving/window.h"

int es_window_init(es_window *w, int seconds)
{
	memset(w, 0, sizeof(*w));
	if (seconds < 1 || seconds > ES_WINDOW_MAX_SECONDS)
		return ES_EINVAL;
	w->slots = calloc((size_t)seconds, sizeof(*w->slots));
	if (!w->slots)
		return ES_ENOMEM;
	for (int i = 0; i < seconds; i++)
		w->slots[i].sec = -1;
	w->n_slots = seconds;
	pthread_mutex_init(&w->mu, NULL);
	return 0;
}

void es_window_free(es_window *w)
{
	if (!w->slots)
		return;
	pthread_mutex_destroy(&w->mu);
	free(w->slots);
	memset(w, 0, sizeof(*w));
}

int es_window_resize(es_window *w, int seconds)
{
	if (seconds < 1 || seconds > ES_WINDOW_MAX_SECONDS)
		return ES_EINVAL;
	es_window_slot *n = calloc((size_t)seconds, sizeof(*n));
	if (!n)
		return ES_ENOMEM;
	for (int i = 0; i < seconds; i++)
		n[i].sec = -1;
	pthread_mutex_lock(&w->mu);
	es_window_slot *old = w->slots;
	w->slots = n;
	w->n_slots = seconds;
	pthread_mutex_unlock(&w->mu);
	free(old);
	return 0;
}

void es_window_clear(es_window *w)
{
	pthread_mutex_lock(&w->mu);
	for (int i = 0; i < w->n_slots; i++)
		w->slots[i].sec = -1;
	pthread_mutex_unlock(&w->mu);
}

int es_window_bucket(double latency_s)
{
	if (!(latency_s >= ES_WINDOW_MIN_S)) /* also NaN */
		return 0;
	double pos = log10(latency_s / ES_WINDOW_MIN_S) * ES_WINDOW_PER_DECADE;
	if (pos >= (double)(ES_WINDOW_BUCKETS - 2))
		return ES_WINDOW_BUCKETS - 1;
	return 1 + (int)pos;
}

void es_window_add(es_window *w, uint64_t now_ns, bool error, bool timed,
		   double latency_s)
{
	int64_t sec = (int64_t)(now_ns / 1000000000ull);
	int b = timed ? es_window_bucket(latency_s) : 0;
	pthread_mutex_lock(&w->mu);
	es_window_slot *s = &w->slots[sec % w->n_slots];
	if (s->sec != sec) {
		memset(s, 0, sizeof(*s));
		s->sec = sec;
	}
	s->count++;
	if (error)
		s->errors++;
	if (timed)
		s->hist[b]++;
	pthread_mutex_unlock(&w->mu);
}

void es_window_read(es_window *w, uint64_t now_ns, int seconds, es_window_stats *out)
{
	int64_t now = (int64_t)(now_ns / 1000000000ull);
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&w->mu);
	int span = seconds > 0 && seconds < w->n_slots ? seconds : w->n_slots;
	for (int i = 0; i < w->n_slots; i++) {
		const es_window_slot *s = &w->slots[i];
		if (s->sec < 0 || s->sec > now || s->sec <= now - span)
			continue;
		out->count += s->count;
		out->errors += s->errors;
		for (int b = 0; b < ES_WINDOW_BUCKETS; b++)
			out->hist[b] += s->hist[b];
	}
	pthread_mutex_unlock(&w->mu);
}

/* Lower and upper bound of bucket b, seconds. */
static void bucket_bounds(int b, double *lo, double *hi)
{
	if (b == 0) {
		*lo = 0;
		*hi = ES_WINDOW_MIN_S;
		return;
	}
	*lo = ES_WINDOW_MIN_S * pow(10.0, (double)(b - 1) / ES_WINDOW_PER_DECADE);
	*hi = ES_WINDOW_MIN_S * pow(10.0, (double)b / ES_WINDOW_PER_DECADE);
}

double es_window_quantile(const es_window_stats *st, double q)
{
	uint64_t total = 0;
	for (int b = 0; b < ES_WINDOW_BUCKETS; b++)
		total += st->hist[b];
	if (!total)
		return 0;
	if (q > 1)
		q = 1;
	double rank = q * (double)total, cum = 0;
	for (int b = 0; b < ES_WINDOW_BUCKETS; b++) {
		if (!st->hist[b])
			continue;
		double c = (double)st->hist[b];
		if (cum + c >= rank) {
			double f = (rank - cum) / c, lo, hi;
			if (b == ES_WINDOW_BUCKETS - 1) /* open-ended: its lower bound */
				return ES_WINDOW_MIN_S * pow(10.0, ES_WINDOW_DECADES);
			bucket_bounds(b, &lo, &hi);
			if (b == 0)
				return hi * f;
			return lo * pow(hi / lo, f); /* log-linear inside the bucket */
		}
		cum += c;
	}
	return 0; /* not reached: rank <= total */
}
