/*
 * Sliding windows of one-second slots: request counts, errors and a
 * log-scale latency histogram, for the per-arm rollout report and the
 * canary guard rails (rollout.c).
 *
 * Buckets: bucket 0 holds latencies below 10 µs, buckets 1..56 eight per
 * decade from 10 µs to 100 s, bucket 57 everything from 100 s up. A
 * percentile is interpolated log-linearly inside its bucket, so it is
 * within one bucket's width (a factor 10^(1/8), about 1.33) of the truth.
 *
 * Threads: one small mutex per window; adding a sample costs a lock, a
 * log10 and a few increments.
 */
#ifndef ES_SERVING_WINDOW_H
#define ES_SERVING_WINDOW_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define ES_WINDOW_PER_DECADE 8
#define ES_WINDOW_DECADES 7 /* 1e-5 s .. 1e2 s */
#define ES_WINDOW_BUCKETS (ES_WINDOW_PER_DECADE * ES_WINDOW_DECADES + 2)
#define ES_WINDOW_MIN_S 1e-5
#define ES_WINDOW_MAX_SECONDS 3600

typedef struct es_window_slot {
	int64_t sec;     /* which second this slot counts (monotonic clock) */
	uint64_t count;  /* samples */
	uint64_t errors; /* of which failed (or diverged, for shadow pairs) */
	uint32_t hist[ES_WINDOW_BUCKETS];
} es_window_slot;

typedef struct es_window {
	pthread_mutex_t mu;
	int n_slots;
	es_window_slot *slots; /* n_slots, indexed by sec % n_slots */
} es_window;

/* What a window held over its last seconds. */
typedef struct es_window_stats {
	uint64_t count;
	uint64_t errors;
	uint64_t hist[ES_WINDOW_BUCKETS];
} es_window_stats;

/* seconds: 1..ES_WINDOW_MAX_SECONDS. ES_EINVAL or ES_ENOMEM. */
int es_window_init(es_window *w, int seconds);
void es_window_free(es_window *w);
/* Changes the length (and forgets every sample). ES_ENOMEM leaves w as it
 * was. */
int es_window_resize(es_window *w, int seconds);
/* Forgets every sample. */
void es_window_clear(es_window *w);
/* One sample at now_ns (es_now_ns clock). timed: latency_s goes into the
 * histogram. */
void es_window_add(es_window *w, uint64_t now_ns, bool error, bool timed,
		   double latency_s);
/* Sums the slots of the last `seconds` seconds up to now_ns (the whole
 * window when seconds is 0 or longer than it). */
void es_window_read(es_window *w, uint64_t now_ns, int seconds, es_window_stats *out);
/* The q-quantile (0 < q <= 1) of the latencies in st, seconds; 0 when it
 * holds none. */
double es_window_quantile(const es_window_stats *st, double q);
/* Bucket of a latency (exposed for tests). */
int es_window_bucket(double latency_s);

#endif
