/*
 * Metrics registry and Prometheus text exposition.
 *
 * A family (counter, gauge or histogram) has a name, a HELP text and a
 * fixed list of label names; a child is one combination of label values.
 * Children are created on first use and live as long as the registry, so a
 * caller may look one up once and keep the pointer (the hot path then only
 * does atomic adds). Updates are lock-free; lookups and rendering take the
 * family's lock. Names follow Prometheus conventions: base units (seconds,
 * bytes), counters end in _total. The exposition passes
 * `promtool check metrics`.
 */
#ifndef ES_OBS_METRICS_H
#define ES_OBS_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

typedef struct es_metrics es_metrics;
typedef struct es_metric es_metric;             /* a family */
typedef struct es_metric_child es_metric_child; /* one label combination */

/* Default histogram buckets, seconds: 10 µs to 60 s (ES_DEFAULT_BUCKETS_N). */
extern const double es_metrics_default_buckets[];
extern const size_t es_metrics_default_buckets_n;

es_metrics *es_metrics_new(void);
void es_metrics_free(es_metrics *r);

/* Register a family. label_names is NULL-terminated (NULL for none); the
 * strings are copied. Registering an existing name with the same type and
 * labels returns the existing family; a conflict returns NULL. */
es_metric *es_metrics_counter(es_metrics *r, const char *name, const char *help,
			      const char *const *label_names);
es_metric *es_metrics_gauge(es_metrics *r, const char *name, const char *help,
			    const char *const *label_names);
/* buckets: ascending upper bounds (+Inf is implicit); NULL for the default. */
es_metric *es_metrics_histogram(es_metrics *r, const char *name, const char *help,
				const char *const *label_names,
				const double *buckets, size_t n_buckets);

/* The child for these label values (as many as the family has label names;
 * NULL for a family without labels). Values are copied and escaped on
 * output. Returns NULL only when out of memory or on a NULL family. */
es_metric_child *es_metric_get(es_metric *m, const char *const *label_values);

/* Updates; all accept a NULL child (no-op), so failed lookups cost nothing. */
void es_counter_add(es_metric_child *c, double v); /* v >= 0 */
void es_gauge_set(es_metric_child *c, double v);
void es_gauge_add(es_metric_child *c, double v);   /* v may be negative */
void es_histogram_observe(es_metric_child *c, double v);

/* Reads back a counter or gauge value (tests, admin endpoints). */
double es_metric_value(const es_metric_child *c);
/* Histogram count and sum. */
void es_histogram_read(const es_metric_child *c, uint64_t *count, double *sum);

/* A function run at the start of every render, to refresh gauges that are
 * cheaper to compute at scrape time (queue sizes, version states). */
void es_metrics_on_collect(es_metrics *r, void (*fn)(void *ctx), void *ctx);

/* Appends the whole registry in Prometheus text format 0.0.4. */
int es_metrics_render(es_metrics *r, es_buf *out);

#endif
