/* Unit tests of the metrics registry and exposition (src/obs/metrics.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "edgeserve/engine.h"
#include "obs/metrics.h"

/* Renders r into a malloc'ed string (the caller frees it). */
static char *render(es_metrics *r)
{
	es_buf b = ES_BUF_INIT;
	assert_int_equal(es_metrics_render(r, &b), 0);
	es_buf_putc(&b, '\0');
	return es_buf_steal(&b, NULL);
}

/* Asserts that text holds line as a whole line. */
static void assert_line(const char *text, const char *line)
{
	size_t n = strlen(line);
	for (const char *p = text; (p = strstr(p, line)); p++) {
		if ((p == text || p[-1] == '\n') && p[n] == '\n')
			return;
	}
	fail_msg("line not found: %s\n--- exposition ---\n%s", line, text);
}

static void assert_no_line_starting(const char *text, const char *prefix)
{
	size_t n = strlen(prefix);
	for (const char *p = text; p; p = strchr(p, '\n')) {
		if (*p == '\n')
			p++;
		if (strncmp(p, prefix, n) == 0)
			fail_msg("unexpected line starting with %s\n%s", prefix, text);
	}
}

static void test_counter(void **state)
{
	(void)state;
	es_metrics *r = es_metrics_new();
	const char *labels[] = { "model", NULL };
	es_metric *m = es_metrics_counter(r, "t_requests_total", "Requests.", labels);
	assert_non_null(m);

	const char *a[] = { "a" };
	es_metric_child *c = es_metric_get(m, a);
	assert_non_null(c);
	assert_ptr_equal(es_metric_get(m, a), c);
	assert_true(es_metric_value(c) == 0);
	es_counter_add(c, 1);
	es_counter_add(c, 2.5);
	es_counter_add(c, -1);  /* a counter never goes down */
	es_counter_add(c, NAN); /* nor becomes NaN */
	es_gauge_set(c, 100);   /* wrong kind: ignored */
	es_gauge_add(c, 100);
	es_histogram_observe(c, 1);
	assert_true(es_metric_value(c) == 3.5);

	/* NULL children and families are no-ops */
	es_counter_add(NULL, 1);
	es_gauge_set(NULL, 1);
	es_gauge_add(NULL, 1);
	es_histogram_observe(NULL, 1);
	assert_null(es_metric_get(NULL, a));
	assert_true(es_metric_value(NULL) == 0);

	char *text = render(r);
	assert_line(text, "# HELP t_requests_total Requests.");
	assert_line(text, "# TYPE t_requests_total counter");
	assert_line(text, "t_requests_total{model=\"a\"} 3.5");
	free(text);
	es_metrics_free(r);
}

static void test_gauge(void **state)
{
	(void)state;
	es_metrics *r = es_metrics_new();
	const char *labels[] = { "device", NULL };
	es_metric *m = es_metrics_gauge(r, "t_queue_size", "Queued requests.", labels);
	const char *cpu[] = { "cpu" };
	es_metric_child *c = es_metric_get(m, cpu);
	es_gauge_set(c, 5);
	es_gauge_add(c, -7);
	assert_true(es_metric_value(c) == -2);
	es_counter_add(c, 10); /* wrong kind: ignored */
	assert_true(es_metric_value(c) == -2);

	char *text = render(r);
	assert_line(text, "# TYPE t_queue_size gauge");
	assert_line(text, "t_queue_size{device=\"cpu\"} -2");
	free(text);
	es_metrics_free(r);
}

static void test_histogram(void **state)
{
	(void)state;
	es_metrics *r = es_metrics_new();
	const char *labels[] = { "model", NULL };
	const double bounds[] = { 0.125, 1, 10 };
	es_metric *m = es_metrics_histogram(r, "t_wait_seconds", "Wait.", labels, bounds, 3);
	assert_non_null(m);
	const char *a[] = { "a" };
	es_metric_child *c = es_metric_get(m, a);

	/* a bound is inclusive: 0.125 counts in le="0.125" */
	const double obs[] = { 0.0625, 0.125, 0.5, 5, 100 };
	for (size_t i = 0; i < 5; i++)
		es_histogram_observe(c, obs[i]);
	es_counter_add(c, 1); /* wrong kind: ignored */
	es_gauge_set(c, 1);

	uint64_t count;
	double sum;
	es_histogram_read(c, &count, &sum);
	assert_int_equal(count, 5);
	assert_true(sum == 105.6875);
	assert_true(es_metric_value(c) == 0);
	es_histogram_read(NULL, &count, &sum);
	assert_int_equal(count, 0);

	char *text = render(r);
	assert_line(text, "# TYPE t_wait_seconds histogram");
	assert_line(text, "t_wait_seconds_bucket{model=\"a\",le=\"0.125\"} 2");
	assert_line(text, "t_wait_seconds_bucket{model=\"a\",le=\"1\"} 3");
	assert_line(text, "t_wait_seconds_bucket{model=\"a\",le=\"10\"} 4");
	assert_line(text, "t_wait_seconds_bucket{model=\"a\",le=\"+Inf\"} 5");
	assert_line(text, "t_wait_seconds_sum{model=\"a\"} 105.6875");
	assert_line(text, "t_wait_seconds_count{model=\"a\"} 5");
	free(text);

	/* NaN goes to +Inf only; an explicit +Inf bound is the implicit one */
	const double with_inf[] = { 1, INFINITY };
	es_metric *h2 = es_metrics_histogram(r, "t_other_seconds", "Other.", NULL, with_inf, 2);
	assert_non_null(h2);
	es_metric_child *c2 = es_metric_get(h2, NULL);
	es_histogram_observe(c2, NAN);
	es_histogram_observe(c2, -5);
	text = render(r);
	assert_line(text, "t_other_seconds_bucket{le=\"1\"} 1");
	assert_line(text, "t_other_seconds_bucket{le=\"+Inf\"} 2");
	assert_line(text, "t_other_seconds_sum NaN");
	assert_line(text, "t_other_seconds_count 2");
	free(text);
	es_metrics_free(r);
}

static void test_default_buckets(void **state)
{
	(void)state;
	assert_int_equal(es_metrics_default_buckets_n, 21);
	assert_true(es_metrics_default_buckets[0] == 1e-5);
	assert_true(es_metrics_default_buckets[es_metrics_default_buckets_n - 1] == 60);
	for (size_t i = 1; i < es_metrics_default_buckets_n; i++)
		assert_true(es_metrics_default_buckets[i] > es_metrics_default_buckets[i - 1]);

	es_metrics *r = es_metrics_new();
	es_metric *m = es_metrics_histogram(r, "t_seconds", "Default buckets.", NULL, NULL, 0);
	es_histogram_observe(es_metric_get(m, NULL), 0.003);
	char *text = render(r);
	assert_line(text, "t_seconds_bucket{le=\"1e-05\"} 0");
	assert_line(text, "t_seconds_bucket{le=\"2.5e-05\"} 0");
	assert_line(text, "t_seconds_bucket{le=\"0.0025\"} 0");
	assert_line(text, "t_seconds_bucket{le=\"0.005\"} 1");
	assert_line(text, "t_seconds_bucket{le=\"60\"} 1");
	assert_line(text, "t_seconds_bucket{le=\"+Inf\"} 1");
	assert_line(text, "t_seconds_count 1");
	free(text);
	es_metrics_free(r);
}

static void test_escaping(void **state)
{
	(void)state;
	es_metrics *r = es_metrics_new();
	const char *labels[] = { "model", "version", NULL };
	es_metric *m = es_metrics_counter(r, "t_esc_total", "Help with \\ and\nnewline \"q\".",
					  labels);
	const char *v[] = { "a\\b\"c\nd", "x\ty" };
	es_counter_add(es_metric_get(m, v), 1);
	const char *bad_utf8[] = { "m\xff\xc3(", "\xe2\x82\xac" };
	es_counter_add(es_metric_get(m, bad_utf8), 2);
	/* NULL values stand for empty ones */
	const char *nulls[] = { NULL, NULL };
	es_counter_add(es_metric_get(m, nulls), 3);
	assert_ptr_equal(es_metric_get(m, NULL), es_metric_get(m, nulls));

	char *text = render(r);
	/* HELP escapes backslash and newline, not the quote */
	assert_line(text, "# HELP t_esc_total Help with \\\\ and\\nnewline \"q\".");
	assert_line(text, "t_esc_total{model=\"a\\\\b\\\"c\\nd\",version=\"x\ty\"} 1");
	/* invalid UTF-8 becomes U+FFFD; valid multibyte passes */
	assert_line(text, "t_esc_total{model=\"m\xef\xbf\xbd\xef\xbf\xbd(\",version=\"\xe2\x82\xac\"} 2");
	assert_line(text, "t_esc_total{model=\"\",version=\"\"} 3");
	free(text);
	es_metrics_free(r);
}

static void test_name_validation(void **state)
{
	(void)state;
	es_metrics *r = es_metrics_new();
	const char *bad_names[] = { "", "1abc", "a-b", "a b", "a.b", "é" };
	for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++)
		assert_null(es_metrics_gauge(r, bad_names[i], "h", NULL));
	assert_null(es_metrics_gauge(r, NULL, "h", NULL));
	assert_non_null(es_metrics_gauge(r, "a:b_C1", "h", NULL));
	assert_non_null(es_metrics_gauge(r, "_x", "h", NULL));

	/* HELP is required */
	assert_null(es_metrics_gauge(r, "no_help", NULL, NULL));
	assert_null(es_metrics_gauge(r, "no_help", "", NULL));

	const char *reserved[] = { "__name", NULL };
	const char *digit[] = { "1a", NULL };
	const char *colon[] = { "a:b", NULL };
	const char *empty[] = { "", NULL };
	const char *dup[] = { "a", "b", "a", NULL };
	const char *le[] = { "model", "le", NULL };
	assert_null(es_metrics_gauge(r, "g1", "h", reserved));
	assert_null(es_metrics_gauge(r, "g2", "h", digit));
	assert_null(es_metrics_gauge(r, "g3", "h", colon));
	assert_null(es_metrics_gauge(r, "g4", "h", empty));
	assert_null(es_metrics_gauge(r, "g5", "h", dup));
	assert_null(es_metrics_histogram(r, "h1", "h", le, NULL, 0));
	assert_non_null(es_metrics_gauge(r, "g6", "h", le)); /* le is fine outside histograms */

	const double descending[] = { 1, 0.5 };
	const double equal[] = { 1, 1 };
	const double nan[] = { NAN };
	const double neg_inf[] = { -INFINITY, 1 };
	assert_null(es_metrics_histogram(r, "h2", "h", NULL, descending, 2));
	assert_null(es_metrics_histogram(r, "h3", "h", NULL, equal, 2));
	assert_null(es_metrics_histogram(r, "h4", "h", NULL, nan, 1));
	assert_null(es_metrics_histogram(r, "h5", "h", NULL, neg_inf, 2));
	/* no explicit bounds: only +Inf */
	es_metric *only_inf = es_metrics_histogram(r, "h6", "h", NULL, descending, 0);
	assert_non_null(only_inf);
	es_histogram_observe(es_metric_get(only_inf, NULL), 3);

	assert_null(es_metrics_counter(NULL, "x_total", "h", NULL));
	char *text = render(r);
	assert_line(text, "h6_bucket{le=\"+Inf\"} 1");
	assert_no_line_starting(text, "# HELP g1 ");
	free(text);
	es_metrics_free(r);
	es_metrics_free(NULL);
}

static void test_reregistration(void **state)
{
	(void)state;
	es_metrics *r = es_metrics_new();
	const char *ab[] = { "a", "b", NULL };
	const char *ba[] = { "b", "a", NULL };
	const char *a[] = { "a", NULL };
	es_metric *c = es_metrics_counter(r, "x_total", "h", ab);
	assert_non_null(c);
	assert_ptr_equal(es_metrics_counter(r, "x_total", "other help", ab), c);
	assert_null(es_metrics_gauge(r, "x_total", "h", ab));
	assert_null(es_metrics_counter(r, "x_total", "h", ba));
	assert_null(es_metrics_counter(r, "x_total", "h", a));
	assert_null(es_metrics_counter(r, "x_total", "h", NULL));

	es_metric *h = es_metrics_histogram(r, "d_seconds", "h", NULL, NULL, 0);
	assert_ptr_equal(es_metrics_histogram(r, "d_seconds", "h", NULL,
					      es_metrics_default_buckets,
					      es_metrics_default_buckets_n), h);
	const double other[] = { 1, 2 };
	assert_null(es_metrics_histogram(r, "d_seconds", "h", NULL, other, 2));

	/* a histogram's series names belong to it */
	assert_null(es_metrics_gauge(r, "d_seconds_count", "h", NULL));
	assert_null(es_metrics_counter(r, "d_seconds_sum", "h", NULL));
	assert_null(es_metrics_gauge(r, "d_seconds_bucket", "h", NULL));
	assert_non_null(es_metrics_gauge(r, "y_count", "h", NULL));
	assert_null(es_metrics_histogram(r, "y", "h", NULL, NULL, 0));
	es_metrics_free(r);
}

static void test_empty_families(void **state)
{
	(void)state;
	es_metrics *r = es_metrics_new();
	const char *labels[] = { "device", NULL };
	assert_non_null(es_metrics_gauge(r, "t_inflight", "In flight.", NULL));
	assert_non_null(es_metrics_counter(r, "t_labeled_total", "Labeled.", labels));
	assert_non_null(es_metrics_histogram(r, "t_h_seconds", "H.", NULL, NULL, 0));
	char *text = render(r);
	/* no labels: the one child exists from registration on */
	assert_line(text, "t_inflight 0");
	assert_line(text, "t_h_seconds_count 0");
	assert_line(text, "t_h_seconds_sum 0");
	/* labels but no children yet: HELP and TYPE only */
	assert_line(text, "# TYPE t_labeled_total counter");
	assert_no_line_starting(text, "t_labeled_total");
	free(text);
	es_metrics_free(r);
}

static void test_number_format(void **state)
{
	(void)state;
	es_metrics *r = es_metrics_new();
	const char *labels[] = { "k", NULL };
	es_metric *m = es_metrics_gauge(r, "t_num", "Numbers.", labels);
	static const struct {
		const char *k;
		double v;
		const char *want;
	} cases[] = {
		{ "int", 123456789012.0, "123456789012" },
		{ "neg", -3, "-3" },
		{ "negzero", -0.0, "0" },
		{ "tenth", 0.1, "0.1" },
		{ "half", 1.5, "1.5" },
		{ "big", 1e20, "1e+20" },
		{ "small", 2.5e-5, "2.5e-05" },
		{ "pinf", INFINITY, "+Inf" },
		{ "ninf", -INFINITY, "-Inf" },
		{ "nan", NAN, "NaN" },
	};
	size_t n = sizeof(cases) / sizeof(cases[0]);
	for (size_t i = 0; i < n; i++) {
		const char *v[] = { cases[i].k };
		es_gauge_set(es_metric_get(m, v), cases[i].v);
	}
	const char *third[] = { "third" };
	es_gauge_set(es_metric_get(m, third), 1.0 / 3);

	char *text = render(r);
	char line[128];
	for (size_t i = 0; i < n; i++) {
		snprintf(line, sizeof(line), "t_num{k=\"%s\"} %s", cases[i].k, cases[i].want);
		assert_line(text, line);
	}
	/* non-integral values read back exactly */
	const char *p = strstr(text, "t_num{k=\"third\"} ");
	assert_non_null(p);
	assert_true(strtod(p + strlen("t_num{k=\"third\"} "), NULL) == 1.0 / 3);
	free(text);
	es_metrics_free(r);
}

static void test_children_stable_and_ordered(void **state)
{
	(void)state;
	es_metrics *r = es_metrics_new();
	const char *labels[] = { "model", "version", NULL };
	es_metric *m = es_metrics_counter(r, "t_many_total", "Many.", labels);
	enum { N = 1000 };
	es_metric_child **kids = calloc(N, sizeof(*kids));
	char model[32];
	for (int i = 0; i < N; i++) {
		snprintf(model, sizeof(model), "m%d", i);
		const char *v[] = { model, i % 2 ? "1" : "2" };
		kids[i] = es_metric_get(m, v);
		assert_non_null(kids[i]);
		es_counter_add(kids[i], i);
	}
	/* the table grew many times; pointers stayed */
	for (int i = 0; i < N; i++) {
		snprintf(model, sizeof(model), "m%d", i);
		const char *v[] = { model, i % 2 ? "1" : "2" };
		assert_ptr_equal(es_metric_get(m, v), kids[i]);
		assert_true(es_metric_value(kids[i]) == i);
	}
	char *text = render(r);
	const char *first = strstr(text, "t_many_total{model=\"m0\",version=\"2\"} 0\n");
	const char *second = strstr(text, "t_many_total{model=\"m1\",version=\"1\"} 1\n");
	const char *last = strstr(text, "t_many_total{model=\"m999\",version=\"1\"} 999\n");
	assert_non_null(first);
	assert_non_null(second);
	assert_non_null(last);
	assert_true(first < second && second < last);
	free(text);
	free(kids);
	es_metrics_free(r);
}

struct collect_log {
	char order[16];
	int n;
	es_metric_child *gauge;
};

static void collect_a(void *ctx)
{
	struct collect_log *log = ctx;
	log->order[log->n++] = 'a';
	es_gauge_set(log->gauge, log->n);
}

static void collect_b(void *ctx)
{
	struct collect_log *log = ctx;
	log->order[log->n++] = 'b';
}

static void test_on_collect(void **state)
{
	(void)state;
	es_metrics *r = es_metrics_new();
	struct collect_log log = { { 0 }, 0, NULL };
	log.gauge = es_metric_get(es_metrics_gauge(r, "t_collected", "Set at scrape.", NULL),
				  NULL);
	es_metrics_on_collect(r, collect_a, &log);
	es_metrics_on_collect(r, collect_b, &log);
	es_metrics_on_collect(r, NULL, &log); /* ignored */

	char *text = render(r);
	assert_string_equal(log.order, "ab");
	assert_line(text, "t_collected 1"); /* set before the families were written */
	free(text);
	text = render(r);
	assert_string_equal(log.order, "abab");
	assert_line(text, "t_collected 3");
	free(text);

	es_buf b = ES_BUF_INIT;
	assert_int_equal(es_metrics_render(NULL, &b), ES_EINVAL);
	assert_int_equal(es_metrics_render(r, NULL), ES_EINVAL);
	es_metrics_free(r);
}

/* ---- concurrency ------------------------------------------------------- */

enum { THREADS = 4, ITERS = 100000 };

struct worker {
	es_metric *counter, *gauge, *hist;
	int id;
	es_metric_child *own;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	const char *shared[] = { "shared" };
	char name[16];
	snprintf(name, sizeof(name), "t%d", w->id);
	const char *own[] = { name };
	/* look-ups race with each other and with creation */
	es_metric_child *c = es_metric_get(w->counter, shared);
	es_metric_child *g = es_metric_get(w->gauge, shared);
	es_metric_child *h = es_metric_get(w->hist, shared);
	w->own = es_metric_get(w->counter, own);
	for (int i = 0; i < ITERS; i++) {
		es_counter_add(c, 1);
		es_gauge_add(g, (i & 1) ? -1 : 2);
		es_histogram_observe(h, (i & 1) ? 0.5 : 2);
		es_counter_add(w->own, 1);
		if (i % 1000 == 0) {
			/* new children while others update and render */
			char extra[32];
			snprintf(extra, sizeof(extra), "t%d-%d", w->id, i);
			const char *ev[] = { extra };
			es_counter_add(es_metric_get(w->counter, ev), 1);
		}
	}
	return NULL;
}

struct scraper {
	es_metrics *r;
	atomic_int stop;
	int renders;
};

static void *scraper_main(void *arg)
{
	struct scraper *s = arg;
	es_buf b = ES_BUF_INIT;
	while (!atomic_load(&s->stop)) {
		es_buf_reset(&b);
		if (es_metrics_render(s->r, &b) == 0)
			s->renders++;
	}
	es_buf_free(&b);
	return NULL;
}

static void test_concurrency(void **state)
{
	(void)state;
	es_metrics *r = es_metrics_new();
	const char *labels[] = { "who", NULL };
	const double bounds[] = { 1 };
	struct worker w[THREADS];
	pthread_t t[THREADS], scrape_thread;
	struct scraper s = { r, 0, 0 };
	es_metric *counter = es_metrics_counter(r, "t_ops_total", "Ops.", labels);
	es_metric *gauge = es_metrics_gauge(r, "t_level", "Level.", labels);
	es_metric *hist = es_metrics_histogram(r, "t_op_seconds", "Op time.", labels, bounds, 1);

	assert_int_equal(pthread_create(&scrape_thread, NULL, scraper_main, &s), 0);
	for (int i = 0; i < THREADS; i++) {
		w[i] = (struct worker){ counter, gauge, hist, i, NULL };
		assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
	}
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	atomic_store(&s.stop, 1);
	pthread_join(scrape_thread, NULL);

	const char *shared[] = { "shared" };
	assert_true(es_metric_value(es_metric_get(counter, shared)) == THREADS * ITERS);
	assert_true(es_metric_value(es_metric_get(gauge, shared)) == THREADS * ITERS / 2);
	uint64_t count;
	double sum;
	es_histogram_read(es_metric_get(hist, shared), &count, &sum);
	assert_int_equal(count, THREADS * ITERS);
	assert_true(sum == THREADS * ITERS / 2 * 2.5);
	for (int i = 0; i < THREADS; i++)
		assert_true(es_metric_value(w[i].own) == ITERS);

	char *text = render(r);
	char line[128];
	snprintf(line, sizeof(line), "t_ops_total{who=\"shared\"} %d", THREADS * ITERS);
	assert_line(text, line);
	snprintf(line, sizeof(line), "t_op_seconds_bucket{who=\"shared\",le=\"1\"} %d",
		 THREADS * ITERS / 2);
	assert_line(text, line);
	snprintf(line, sizeof(line), "t_op_seconds_bucket{who=\"shared\",le=\"+Inf\"} %d",
		 THREADS * ITERS);
	assert_line(text, line);
	snprintf(line, sizeof(line), "t_ops_total{who=\"t3-99000\"} 1");
	assert_line(text, line);
	free(text);
	es_metrics_free(r);
}

/* ---- promtool ---------------------------------------------------------- */

/*
 * Writes text to a temporary file and runs `promtool check metrics` on it.
 * Returns promtool's exit status (0 clean, 3 lint findings, 1 unparsable);
 * its output goes to *report (malloc'ed).
 */
static int promtool_check(const char *text, char **report)
{
	if (system("command -v promtool >/dev/null 2>&1") != 0)
		fail_msg("promtool not found: it comes with Debian's prometheus package, "
			 "which the project's setup script installs");

	char in_path[] = "/tmp/es_test_metrics_XXXXXX";
	int fd = mkstemp(in_path);
	assert_true(fd >= 0);
	size_t len = strlen(text);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	close(fd);
	char out_path[] = "/tmp/es_test_promtool_XXXXXX";
	fd = mkstemp(out_path);
	assert_true(fd >= 0);
	close(fd);

	char cmd[256];
	snprintf(cmd, sizeof(cmd), "promtool check metrics < '%s' > '%s' 2>&1", in_path, out_path);
	int status = system(cmd);
	assert_true(WIFEXITED(status));

	FILE *f = fopen(out_path, "r");
	assert_non_null(f);
	char *out = calloc(1, 65536);
	size_t n = fread(out, 1, 65535, f);
	out[n] = '\0';
	fclose(f);
	unlink(in_path);
	unlink(out_path);
	*report = out;
	return WEXITSTATUS(status);
}

/* Every family of the serving brief, with the labels it names. */
static void register_serving_families(es_metrics *r)
{
	const char *req_labels[] = { "model", "version", "api", "arm", "status_class",
				     "reason", NULL };
	const char *model_api[] = { "model", "api", NULL };
	const char *model_api_arm[] = { "model", "api", "arm", NULL };
	const char *mvd[] = { "model", "version", "device", NULL };
	const char *dev[] = { "device", NULL };
	const char *md[] = { "model", "device", NULL };
	const char *mv[] = { "model", "version", NULL };
	const char *mvs[] = { "model", "version", "state", NULL };
	const char *model[] = { "model", NULL };
	const char *version[] = { "version", NULL };

	es_metric *req = es_metrics_counter(r, "edgeserve_requests_total",
					    "Requests answered, by model, version, API, status class and reason.",
					    req_labels);
	const char *ok[] = { "mlp", "1", "kserve", "canary", "2xx", "ok" };
	const char *bad[] = { "we\"ird\\name\n", "2", "tfs", "", "4xx", "bad_request" };
	es_counter_add(es_metric_get(req, ok), 12);
	es_counter_add(es_metric_get(req, bad), 1);

	const char *hist_names[] = { "edgeserve_request_duration_seconds",
				     "edgeserve_request_parse_duration_seconds",
				     "edgeserve_request_encode_duration_seconds" };
	for (size_t i = 0; i < 3; i++) {
		/* the total duration is split by rollout arm too */
		es_metric *h = es_metrics_histogram(r, hist_names[i], "Request stage time.",
						    i == 0 ? model_api_arm : model_api, NULL, 0);
		const char *v[] = { "mlp", "kserve", "stable" };
		es_histogram_observe(es_metric_get(h, v), 0.00042);
		es_histogram_observe(es_metric_get(h, v), 75); /* past the last bound */
	}
	es_gauge_set(es_metric_get(es_metrics_gauge(r, "edgeserve_http_inflight_requests",
						    "HTTP requests being served.", NULL), NULL), 3);
	const char *ver[] = { "0.1.0" };
	es_gauge_set(es_metric_get(es_metrics_gauge(r, "edgeserve_build_info",
						    "Build information; the value is 1.", version),
				   ver), 1);

	const char *cpu_mvd[] = { "mlp", "1", "cpu" };
	es_histogram_observe(es_metric_get(es_metrics_histogram(r, "edgeserve_queue_wait_seconds",
								 "Time requests wait in the device queue.",
								 mvd, NULL, 0), cpu_mvd), 1e-6);
	es_histogram_observe(es_metric_get(es_metrics_histogram(r,
								 "edgeserve_inference_duration_seconds",
								 "Time the engine runs a request.", mvd,
								 NULL, 0), cpu_mvd), 0.0123);
	const char *cpu[] = { "cpu" };
	es_gauge_set(es_metric_get(es_metrics_gauge(r, "edgeserve_queue_size",
						    "Requests waiting in the device queue.", dev),
				   cpu), 0);
	es_gauge_set(es_metric_get(es_metrics_gauge(r, "edgeserve_queue_capacity",
						    "Capacity of the device queue.", dev), cpu), 64);
	es_gauge_set(es_metric_get(es_metrics_gauge(r, "edgeserve_device_active_requests",
						    "Requests running on the device.", dev), cpu), 1);
	es_gauge_set(es_metric_get(es_metrics_gauge(r, "edgeserve_device_streams",
						    "Execution streams of the device.", dev), cpu), 2);
	es_counter_add(es_metric_get(es_metrics_counter(r, "edgeserve_queue_rejections_total",
							"Requests rejected because the device queue was full.",
							dev), cpu), 4);
	const char *mlp_cpu[] = { "mlp", "cpu" };
	es_counter_add(es_metric_get(es_metrics_counter(r, "edgeserve_deadline_exceeded_total",
							"Requests dropped because their deadline passed.",
							md), mlp_cpu), 2);
	const char *mlp_1[] = { "mlp", "1" };
	es_gauge_set(es_metric_get(es_metrics_gauge(r, "edgeserve_model_load_seconds",
						    "Time the last load of a model version took.",
						    mv), mlp_1), 0.095);
	es_metric *state = es_metrics_gauge(r, "edgeserve_model_version_state",
					    "1 for the current state of a model version, 0 otherwise.",
					    mvs);
	const char *states[] = { "START", "LOADING", "AVAILABLE", "UNLOADING", "END", "FAILED" };
	for (size_t i = 0; i < 6; i++) {
		const char *v[] = { "mlp", "1", states[i] };
		es_gauge_set(es_metric_get(state, v), i == 2);
	}
	const char *mlp[] = { "mlp" };
	es_counter_add(es_metric_get(es_metrics_counter(r, "edgeserve_model_load_failures_total",
							"Failed loads of model versions.", model),
				     mlp), 0);
	/* a family whose children do not exist yet */
	assert_non_null(es_metrics_counter(r, "edgeserve_test_unused_total", "Never used.",
					   model));
}

static void test_promtool_clean(void **state)
{
	(void)state;
	es_metrics *r = es_metrics_new();
	register_serving_families(r);
	char *text = render(r);
	char *report = NULL;
	int rc = promtool_check(text, &report);
	if (rc != 0)
		fail_msg("promtool check metrics exited %d:\n%s\n--- exposition ---\n%s", rc,
			 report, text);
	free(report);
	free(text);
	es_metrics_free(r);
}

/* The check above only means something if promtool does find problems. */
static void test_promtool_catches_findings(void **state)
{
	(void)state;
	es_metrics *r = es_metrics_new();
	es_counter_add(es_metric_get(es_metrics_counter(r, "t_requests", "No _total suffix.", NULL),
				     NULL), 1);
	char *text = render(r);
	char *report = NULL;
	int rc = promtool_check(text, &report);
	if (rc != 3)
		fail_msg("expected promtool's lint status 3, got %d:\n%s", rc, report);
	assert_non_null(strstr(report, "_total"));
	free(report);
	free(text);
	es_metrics_free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_counter),
		cmocka_unit_test(test_gauge),
		cmocka_unit_test(test_histogram),
		cmocka_unit_test(test_default_buckets),
		cmocka_unit_test(test_escaping),
		cmocka_unit_test(test_name_validation),
		cmocka_unit_test(test_reregistration),
		cmocka_unit_test(test_empty_families),
		cmocka_unit_test(test_number_format),
		cmocka_unit_test(test_children_stable_and_ordered),
		cmocka_unit_test(test_on_collect),
		cmocka_unit_test(test_concurrency),
		cmocka_unit_test(test_promtool_clean),
		cmocka_unit_test(test_promtool_catches_findings),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
