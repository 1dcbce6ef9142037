/*
 * Metrics registry and Prometheus text exposition (format 0.0.4).
 *
 * A registry is a list of families in registration order. A family owns a
 * small chained hash map from label values to children, guarded by the
 * family's mutex, and an insertion-ordered list of the same children that
 * the renderer walks. Children are never freed before the registry, so
 * callers may keep the pointers es_metric_get returns.
 *
 * Values live in atomics and are updated without locks: a counter or gauge
 * is a double kept in an _Atomic uint64_t (a CAS loop adds to it); a
 * histogram has one atomic count per bucket (not cumulative: the renderer
 * accumulates), an atomic count and an atomic double sum.
 */
#include "obs/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgeserve/engine.h"

/* Seconds: 10 µs to 60 s in 1-2.5-5 steps, then 30 and 60 for slow loads. */
const double es_metrics_default_buckets[] = {
	1e-5, 2.5e-5, 5e-5,
	1e-4, 2.5e-4, 5e-4,
	1e-3, 2.5e-3, 5e-3,
	1e-2, 2.5e-2, 5e-2,
	0.1, 0.25, 0.5,
	1, 2.5, 5,
	10, 30, 60,
};
const size_t es_metrics_default_buckets_n =
	sizeof(es_metrics_default_buckets) / sizeof(es_metrics_default_buckets[0]);

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

static const char *const type_names[] = { "counter", "gauge", "histogram" };

/* Children sit on their own cache lines: the update paths of two hot
 * children never share one. */
#define CHILD_ALIGN 64

struct es_metric_child {
	/* Hot: updated lock-free. */
	_Atomic uint64_t value; /* counter, gauge: bits of a double */
	_Atomic uint64_t count; /* histogram: observations */
	_Atomic uint64_t sum;   /* histogram: bits of a double */
	/* Cold: written once, under the family lock, before publication. */
	const es_metric *family;
	es_metric_child *hash_next;
	es_metric_child *order_next;
	uint64_t hash;
	char **values; /* raw label values, compared on lookup */
	char *labels;  /* rendered `a="x",b="y"` with escapes; "" without labels */
	/* histogram: n_bounds + 1 per-bucket counts, the last one for +Inf */
	_Atomic uint64_t buckets[];
};

struct es_metric {
	es_metric *next; /* registration order */
	enum metric_type type;
	char *name;
	char *header; /* "# HELP ...\n# TYPE ...\n", escaped once */
	size_t n_labels;
	char **label_names;
	double *bounds; /* histogram upper bounds, ascending, +Inf implicit */
	size_t n_bounds;

	pthread_mutex_t lock; /* guards everything below */
	es_metric_child **table;
	size_t table_cap; /* power of two */
	size_t n_children;
	es_metric_child *first, *last;
};

struct collector {
	void (*fn)(void *ctx);
	void *ctx;
};

struct es_metrics {
	pthread_mutex_t lock; /* families and collectors */
	/* One render at a time, so collect callbacks never race each other. */
	pthread_mutex_t render_lock;
	es_metric *first, *last;
	struct collector *collectors;
	size_t n_collectors, cap_collectors;
};

/* ---- doubles in atomics ------------------------------------------------ */

static inline uint64_t f64_bits(double v)
{
	uint64_t u;
	memcpy(&u, &v, sizeof(u));
	return u;
}

static inline double bits_f64(uint64_t u)
{
	double v;
	memcpy(&v, &u, sizeof(v));
	return v;
}

static inline void atomic_add_f64(_Atomic uint64_t *p, double v)
{
	uint64_t old = atomic_load_explicit(p, memory_order_relaxed);
	while (!atomic_compare_exchange_weak_explicit(p, &old, f64_bits(bits_f64(old) + v),
						      memory_order_relaxed,
						      memory_order_relaxed))
		;
}

static inline double atomic_load_f64(const _Atomic uint64_t *p)
{
	/* C11 atomic_load takes a non-const pointer in older headers. */
	return bits_f64(atomic_load_explicit((_Atomic uint64_t *)p, memory_order_relaxed));
}

/* ---- names and escaping ------------------------------------------------ */

static bool is_alpha_(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* [a-zA-Z_:][a-zA-Z0-9_:]* */
static bool valid_metric_name(const char *s)
{
	if (!s || !*s || !(is_alpha_(*s) || *s == ':'))
		return false;
	for (s++; *s; s++)
		if (!(is_alpha_(*s) || is_digit(*s) || *s == ':'))
			return false;
	return true;
}

/* [a-zA-Z_][a-zA-Z0-9_]*, and names starting with __ are reserved. */
static bool valid_label_name(const char *s)
{
	if (!s || !*s || !is_alpha_(*s) || (s[0] == '_' && s[1] == '_'))
		return false;
	for (s++; *s; s++)
		if (!(is_alpha_(*s) || is_digit(*s)))
			return false;
	return true;
}

/*
 * Appends s escaped for the text format: backslash and newline always,
 * the double quote too inside a label value. The parser rejects label
 * values that are not UTF-8, so invalid bytes become U+FFFD.
 */
static void put_escaped(es_buf *b, const char *s, bool quote)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s);
	size_t i = 0;

	while (i < n) {
		size_t run = i;
		/* copy plain runs in one go */
		while (run < n && p[run] >= 0x20 && p[run] < 0x80 && p[run] != '\\' &&
		       !(quote && p[run] == '"'))
			run++;
		if (run > i) {
			es_buf_append(b, p + i, run - i);
			i = run;
			continue;
		}
		unsigned char c = p[i];
		if (c == '\\') {
			es_buf_puts(b, "\\\\");
			i++;
		} else if (c == '"') {
			es_buf_puts(b, "\\\"");
			i++;
		} else if (c == '\n') {
			es_buf_puts(b, "\\n");
			i++;
		} else if (c < 0x80) {
			/* other control characters are legal as they are */
			es_buf_putc(b, (char)c);
			i++;
		} else {
			size_t len = es_utf8_len(p + i, n - i);
			if (len) {
				es_buf_append(b, p + i, len);
				i += len;
			} else {
				es_buf_puts(b, "\xef\xbf\xbd");
				i++;
			}
		}
	}
}

/*
 * A sample value or le bound as Prometheus parses it: integral values
 * without exponent, others in the shortest form that reads back exactly,
 * and +Inf, -Inf, NaN spelled as the format wants.
 */
static void format_number(char out[32], double v)
{
	if (isnan(v)) {
		strcpy(out, "NaN");
	} else if (isinf(v)) {
		strcpy(out, v > 0 ? "+Inf" : "-Inf");
	} else if (v == 0) {
		strcpy(out, "0"); /* also for -0 */
	} else if (v == trunc(v) && fabs(v) < 9007199254740992.0) {
		snprintf(out, 32, "%.0f", v);
	} else {
		for (int prec = 15; prec <= 17; prec++) {
			snprintf(out, 32, "%.*g", prec, v);
			if (strtod(out, NULL) == v)
				break;
		}
	}
}

/* ---- registry ---------------------------------------------------------- */

es_metrics *es_metrics_new(void)
{
	es_metrics *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	pthread_mutex_init(&r->lock, NULL);
	pthread_mutex_init(&r->render_lock, NULL);
	return r;
}

static void child_free(es_metric_child *c, size_t n_labels)
{
	if (c->values)
		for (size_t i = 0; i < n_labels; i++)
			free(c->values[i]);
	free(c->values);
	free(c->labels);
	free(c);
}

static void family_free(es_metric *m)
{
	es_metric_child *c = m->first;
	while (c) {
		es_metric_child *next = c->order_next;
		child_free(c, m->n_labels);
		c = next;
	}
	if (m->label_names)
		for (size_t i = 0; i < m->n_labels; i++)
			free(m->label_names[i]);
	free(m->label_names);
	free(m->table);
	free(m->bounds);
	free(m->header);
	free(m->name);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

void es_metrics_free(es_metrics *r)
{
	if (!r)
		return;
	es_metric *m = r->first;
	while (m) {
		es_metric *next = m->next;
		family_free(m);
		m = next;
	}
	free(r->collectors);
	pthread_mutex_destroy(&r->render_lock);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

void es_metrics_on_collect(es_metrics *r, void (*fn)(void *ctx), void *ctx)
{
	if (!r || !fn)
		return;
	pthread_mutex_lock(&r->lock);
	if (r->n_collectors == r->cap_collectors) {
		size_t cap = r->cap_collectors ? 2 * r->cap_collectors : 4;
		struct collector *p = realloc(r->collectors, cap * sizeof(*p));
		if (!p)
			goto out_unlock;
		r->collectors = p;
		r->cap_collectors = cap;
	}
	r->collectors[r->n_collectors++] = (struct collector){ fn, ctx };
out_unlock:
	pthread_mutex_unlock(&r->lock);
}

/* name == base followed by suffix */
static bool is_suffixed(const char *name, const char *base, const char *suffix)
{
	size_t n = strlen(base);
	return strncmp(name, base, n) == 0 && strcmp(name + n, suffix) == 0;
}

/* A histogram x also writes x_bucket, x_sum and x_count: another family
 * with one of those names would make the exposition ambiguous. */
static bool hist_shadows(const char *hist, const char *other)
{
	return is_suffixed(other, hist, "_bucket") || is_suffixed(other, hist, "_sum") ||
	       is_suffixed(other, hist, "_count");
}

static bool same_shape(const es_metric *m, enum metric_type type, size_t n_labels,
		       const char *const *label_names, const double *bounds, size_t n_bounds)
{
	if (m->type != type || m->n_labels != n_labels || m->n_bounds != n_bounds)
		return false;
	for (size_t i = 0; i < n_labels; i++)
		if (strcmp(m->label_names[i], label_names[i]) != 0)
			return false;
	for (size_t i = 0; i < n_bounds; i++)
		if (m->bounds[i] != bounds[i])
			return false;
	return true;
}

static char *build_header(const char *name, const char *help, enum metric_type type)
{
	es_buf b = ES_BUF_INIT;
	es_buf_printf(&b, "# HELP %s ", name);
	put_escaped(&b, help, false);
	es_buf_printf(&b, "\n# TYPE %s %s\n", name, type_names[type]);
	if (b.failed) {
		es_buf_free(&b);
		return NULL;
	}
	return es_buf_steal(&b, NULL);
}

static es_metric_child *lookup_or_create(es_metric *m, const char *const *values);

/*
 * Checks and copies a family and links it into r; returns the existing
 * family for an identical registration, NULL on invalid input, a conflict
 * or out of memory.
 */
static es_metric *register_family(es_metrics *r, enum metric_type type, const char *name,
				  const char *help, const char *const *label_names,
				  const double *buckets, size_t n_buckets)
{
	size_t n_labels = 0;
	size_t n_bounds = 0;
	es_metric *m = NULL;

	if (!r || !valid_metric_name(name) || !help || !*help)
		return NULL;
	if (label_names) {
		for (; label_names[n_labels]; n_labels++) {
			const char *l = label_names[n_labels];
			if (!valid_label_name(l) ||
			    (type == METRIC_HISTOGRAM && strcmp(l, "le") == 0))
				return NULL;
			for (size_t j = 0; j < n_labels; j++)
				if (strcmp(label_names[j], l) == 0)
					return NULL;
		}
	}
	if (type == METRIC_HISTOGRAM) {
		if (!buckets) {
			buckets = es_metrics_default_buckets;
			n_buckets = es_metrics_default_buckets_n;
		}
		/* an explicit trailing +Inf is the implicit one */
		n_bounds = n_buckets;
		if (n_bounds && isinf(buckets[n_bounds - 1]) && buckets[n_bounds - 1] > 0)
			n_bounds--;
		for (size_t i = 0; i < n_bounds; i++)
			if (!isfinite(buckets[i]) || (i && !(buckets[i] > buckets[i - 1])))
				return NULL;
	}

	pthread_mutex_lock(&r->lock);
	for (es_metric *e = r->first; e; e = e->next) {
		if (strcmp(e->name, name) == 0) {
			if (same_shape(e, type, n_labels, label_names, buckets, n_bounds))
				m = e;
			goto out_unlock;
		}
		if ((e->type == METRIC_HISTOGRAM && hist_shadows(e->name, name)) ||
		    (type == METRIC_HISTOGRAM && hist_shadows(name, e->name)))
			goto out_unlock;
	}

	m = calloc(1, sizeof(*m));
	if (!m)
		goto out_unlock;
	pthread_mutex_init(&m->lock, NULL);
	m->type = type;
	m->n_labels = n_labels;
	m->n_bounds = n_bounds;
	m->name = strdup(name);
	m->header = build_header(name, help, type);
	m->table_cap = 8;
	m->table = calloc(m->table_cap, sizeof(*m->table));
	if (!m->name || !m->header || !m->table)
		goto out_free;
	if (n_labels) {
		m->label_names = calloc(n_labels, sizeof(char *));
		if (!m->label_names)
			goto out_free;
		for (size_t i = 0; i < n_labels; i++)
			if (!(m->label_names[i] = strdup(label_names[i])))
				goto out_free;
	}
	if (n_bounds) {
		size_t size;
		if (__builtin_mul_overflow(n_bounds, sizeof(double), &size) ||
		    !(m->bounds = malloc(size)))
			goto out_free;
		memcpy(m->bounds, buckets, size);
	}
	/* A family without labels has exactly one child: create it now so
	 * the family shows its zero value from the first scrape on. */
	if (!n_labels && !lookup_or_create(m, NULL))
		goto out_free;

	if (r->last)
		r->last->next = m;
	else
		r->first = m;
	r->last = m;
	goto out_unlock;

out_free:
	family_free(m);
	m = NULL;
out_unlock:
	pthread_mutex_unlock(&r->lock);
	return m;
}

es_metric *es_metrics_counter(es_metrics *r, const char *name, const char *help,
			      const char *const *label_names)
{
	return register_family(r, METRIC_COUNTER, name, help, label_names, NULL, 0);
}

es_metric *es_metrics_gauge(es_metrics *r, const char *name, const char *help,
			    const char *const *label_names)
{
	return register_family(r, METRIC_GAUGE, name, help, label_names, NULL, 0);
}

es_metric *es_metrics_histogram(es_metrics *r, const char *name, const char *help,
				const char *const *label_names,
				const double *buckets, size_t n_buckets)
{
	return register_family(r, METRIC_HISTOGRAM, name, help, label_names, buckets,
			       n_buckets);
}

/* ---- children ---------------------------------------------------------- */

/* A NULL array or element stands for empty values. */
static const char *label_value(const char *const *values, size_t i)
{
	return values && values[i] ? values[i] : "";
}

/* FNV-1a over the values, each with its NUL, so ("ab","") != ("a","b"). */
static uint64_t hash_values(const char *const *values, size_t n)
{
	uint64_t h = 14695981039346656037ull;
	for (size_t i = 0; i < n; i++) {
		const unsigned char *s = (const unsigned char *)label_value(values, i);
		do {
			h ^= *s;
			h *= 1099511628211ull;
		} while (*s++);
	}
	return h;
}

static bool child_matches(const es_metric_child *c, uint64_t hash,
			  const char *const *values, size_t n)
{
	if (c->hash != hash)
		return false;
	for (size_t i = 0; i < n; i++)
		if (strcmp(c->values[i], label_value(values, i)) != 0)
			return false;
	return true;
}

static es_metric_child *child_new(const es_metric *m, uint64_t hash, const char *const *values)
{
	size_t n_slots = m->type == METRIC_HISTOGRAM ? m->n_bounds + 1 : 0;
	size_t size;
	es_metric_child *c;
	es_buf labels = ES_BUF_INIT;

	if (__builtin_mul_overflow(n_slots, sizeof(c->buckets[0]), &size) ||
	    __builtin_add_overflow(size, sizeof(*c), &size))
		return NULL;
	if (posix_memalign((void **)&c, CHILD_ALIGN, size))
		return NULL;
	memset(c, 0, size); /* all-zero bits are 0.0 and count 0 */
	c->family = m;
	c->hash = hash;
	if (m->n_labels) {
		c->values = calloc(m->n_labels, sizeof(char *));
		if (!c->values)
			goto out_free;
	}
	for (size_t i = 0; i < m->n_labels; i++) {
		const char *v = label_value(values, i);
		if (!(c->values[i] = strdup(v)))
			goto out_free;
		es_buf_printf(&labels, "%s%s=\"", i ? "," : "", m->label_names[i]);
		put_escaped(&labels, v, true);
		es_buf_putc(&labels, '"');
	}
	/* an exact-size copy: there may be many children */
	c->labels = labels.failed ? NULL : strdup(labels.data ? labels.data : "");
	es_buf_free(&labels);
	if (!c->labels)
		goto out_free;
	return c;

out_free:
	es_buf_free(&labels);
	child_free(c, m->n_labels);
	return NULL;
}

/* Doubles the hash table; on failure the old one stays (longer chains). */
static void grow_table(es_metric *m)
{
	size_t cap = m->table_cap * 2;
	es_metric_child **t = calloc(cap, sizeof(*t));
	if (!t)
		return;
	for (size_t i = 0; i < m->table_cap; i++) {
		es_metric_child *c = m->table[i];
		while (c) {
			es_metric_child *next = c->hash_next;
			size_t slot = c->hash & (cap - 1);
			c->hash_next = t[slot];
			t[slot] = c;
			c = next;
		}
	}
	free(m->table);
	m->table = t;
	m->table_cap = cap;
}

/* Caller holds m->lock (or owns m exclusively). */
static es_metric_child *lookup_or_create(es_metric *m, const char *const *values)
{
	uint64_t hash = hash_values(values, m->n_labels);
	es_metric_child *c;

	for (c = m->table[hash & (m->table_cap - 1)]; c; c = c->hash_next)
		if (child_matches(c, hash, values, m->n_labels))
			return c;

	c = child_new(m, hash, values);
	if (!c)
		return NULL;
	if ((m->n_children + 1) * 4 > m->table_cap * 3)
		grow_table(m);
	size_t slot = hash & (m->table_cap - 1);
	c->hash_next = m->table[slot];
	m->table[slot] = c;
	if (m->last)
		m->last->order_next = c;
	else
		m->first = c;
	m->last = c;
	m->n_children++;
	return c;
}

es_metric_child *es_metric_get(es_metric *m, const char *const *label_values)
{
	if (!m)
		return NULL;
	pthread_mutex_lock(&m->lock);
	es_metric_child *c = lookup_or_create(m, label_values);
	pthread_mutex_unlock(&m->lock);
	return c;
}

/* ---- updates ----------------------------------------------------------- */

/* Updates of the wrong kind (a gauge set on a counter, an observation on a
 * gauge) are ignored: they would break the family's semantics or, for
 * histograms, touch buckets the child does not have. */

void es_counter_add(es_metric_child *c, double v)
{
	/* also rejects NaN: a counter only goes up */
	if (!c || c->family->type != METRIC_COUNTER || !(v >= 0))
		return;
	atomic_add_f64(&c->value, v);
}

void es_gauge_set(es_metric_child *c, double v)
{
	if (!c || c->family->type != METRIC_GAUGE)
		return;
	atomic_store_explicit(&c->value, f64_bits(v), memory_order_relaxed);
}

void es_gauge_add(es_metric_child *c, double v)
{
	if (!c || c->family->type != METRIC_GAUGE)
		return;
	atomic_add_f64(&c->value, v);
}

void es_histogram_observe(es_metric_child *c, double v)
{
	if (!c || c->family->type != METRIC_HISTOGRAM)
		return;
	const double *bounds = c->family->bounds;
	/* first bound >= v; NaN and values above every bound land in +Inf */
	size_t lo = 0, hi = c->family->n_bounds;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (v <= bounds[mid])
			hi = mid;
		else
			lo = mid + 1;
	}
	if (isnan(v))
		lo = c->family->n_bounds;
	atomic_fetch_add_explicit(&c->buckets[lo], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&c->count, 1, memory_order_relaxed);
	atomic_add_f64(&c->sum, v);
}

double es_metric_value(const es_metric_child *c)
{
	if (!c || c->family->type == METRIC_HISTOGRAM)
		return 0;
	return atomic_load_f64(&c->value);
}

void es_histogram_read(const es_metric_child *c, uint64_t *count, double *sum)
{
	uint64_t n = 0;
	double s = 0;
	if (c && c->family->type == METRIC_HISTOGRAM) {
		n = atomic_load_explicit((_Atomic uint64_t *)&c->count, memory_order_relaxed);
		s = atomic_load_f64(&c->sum);
	}
	if (count)
		*count = n;
	if (sum)
		*sum = s;
}

/* ---- exposition -------------------------------------------------------- */

/* name{labels} value, or name value when there are no labels. */
static void put_sample(es_buf *b, const char *name, const char *suffix, const char *labels,
		       double v)
{
	char num[32];
	format_number(num, v);
	if (*labels)
		es_buf_printf(b, "%s%s{%s} %s\n", name, suffix, labels, num);
	else
		es_buf_printf(b, "%s%s %s\n", name, suffix, num);
}

static void render_histogram(es_buf *b, const es_metric *m, es_metric_child *c)
{
	const char *sep = *c->labels ? "," : "";
	char num[32];
	uint64_t cum = 0;

	for (size_t i = 0; i <= m->n_bounds; i++) {
		cum += atomic_load_explicit(&c->buckets[i], memory_order_relaxed);
		if (i < m->n_bounds)
			format_number(num, m->bounds[i]);
		else
			strcpy(num, "+Inf");
		es_buf_printf(b, "%s_bucket{%s%sle=\"%s\"} %llu\n", m->name, c->labels, sep,
			      num, (unsigned long long)cum);
	}
	put_sample(b, m->name, "_sum", c->labels, atomic_load_f64(&c->sum));
	/* _count from the buckets just read, so it always equals le="+Inf"
	 * even while observations race with the scrape */
	es_buf_printf(b, "%s_count%s%s%s %llu\n", m->name, *c->labels ? "{" : "", c->labels,
		      *c->labels ? "}" : "", (unsigned long long)cum);
}

static void render_family(es_buf *b, es_metric *m)
{
	/*
	 * Children are only appended. Take the list head and length under
	 * the lock, then walk that many nodes without it: every order_next
	 * followed was written before the unlock. So the renderer never
	 * holds the lock that request threads need for lookups while it
	 * formats.
	 */
	pthread_mutex_lock(&m->lock);
	es_metric_child *c = m->first;
	size_t n = m->n_children;
	pthread_mutex_unlock(&m->lock);

	es_buf_puts(b, m->header);
	for (size_t i = 0; i < n; i++) {
		if (m->type == METRIC_HISTOGRAM)
			render_histogram(b, m, c);
		else
			put_sample(b, m->name, "", c->labels, atomic_load_f64(&c->value));
		/* not past the n-th: its order_next may be changing now */
		if (i + 1 < n)
			c = c->order_next;
	}
}

int es_metrics_render(es_metrics *r, es_buf *out)
{
	struct collector *collectors = NULL;
	size_t n_collectors;

	if (!r || !out)
		return ES_EINVAL;

	pthread_mutex_lock(&r->render_lock);

	/* Run the callbacks without r->lock: they may look up children or
	 * even register families. */
	pthread_mutex_lock(&r->lock);
	n_collectors = r->n_collectors;
	if (n_collectors) {
		collectors = malloc(n_collectors * sizeof(*collectors));
		if (collectors)
			memcpy(collectors, r->collectors, n_collectors * sizeof(*collectors));
		else
			n_collectors = 0;
	}
	pthread_mutex_unlock(&r->lock);
	for (size_t i = 0; i < n_collectors; i++)
		collectors[i].fn(collectors[i].ctx);
	free(collectors);

	pthread_mutex_lock(&r->lock);
	for (es_metric *m = r->first; m; m = m->next)
		render_family(out, m);
	pthread_mutex_unlock(&r->lock);

	pthread_mutex_unlock(&r->render_lock);
	return out->failed ? ES_ENOMEM : 0;
}
