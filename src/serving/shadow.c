/*
 * Shadow inference: a sampled request, once answered by its primary
 * version, is run again on the model's shadow version off the hot path and
 * the two sets of outputs are compared.
 *
 * The device worker that ran the primary hands it over in two steps: before
 * the primary's completion es_shadow_take copies the inputs and the primary
 * outputs in one allocation (the request's buffers belong to its client and
 * may go with the completion); after it, es_shadow_queue queues the copy on
 * the shadow version's device below every normal request
 * (es_sched_submit_low), so the answer leaves before any queueing or wake-up
 * happens. A full queue drops the copy at once (counted); the
 * primary is never blocked nor failed. The shadow run's completion, on a
 * worker of that device, compares output by output:
 *   - dtype and shape must be equal (else divergent: "dtype", "shape");
 *   - floating outputs (float, double, float16, bfloat16): an element
 *     diverges when |s - p| > atol + rtol * |p| (p primary, s shadow; NaN
 *     against NaN is equal, NaN against a number diverges); the pair's max
 *     absolute error, max relative error |s - p| / max(|p|, REL_TINY) and
 *     its worst element (the one furthest outside the tolerance) are kept;
 *   - integers and bool must be equal;
 *   - outputs shaped [C] or [N, C] (C >= 2) also compare the argmax of
 *     every row (top-1 agreement), counted on its own: a top-1 disagreement
 *     inside the tolerance does not make the pair divergent.
 * One event per shadow run goes to the rollout statistics (matched or
 * diverged, dropped, failed) for the guard rails; every divergent pair is
 * written to the divergence log, one JSON line each, rate-limited by a
 * token bucket (lines over the limit are counted and summarised in the next
 * line written).
 *
 * Lifetime: struct es_shadow_log is shared by the server and every shadow
 * run in flight (a reference count), so a run finishing after
 * es_shadow_stop still finds its log and metrics.
 */
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/fp16.h"
#include "base/status.h"
#include "obs/log.h"
#include "serving/serving_int.h"

/* Denominator floor of the relative error: keeps it finite where the
 * primary value is (close to) zero. */
#define REL_TINY 1e-12
/* Warnings about failed shadow runs: at most one per this many ns. */
#define FAIL_WARN_INTERVAL_NS 1000000000ull

/* edgeserve_shadow_max_abs_error buckets: 1e-9 to 1e3, a decade apart. */
static const double max_abs_buckets[] = {
	1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1e0, 1e1, 1e2, 1e3,
};

struct es_shadow_log {
	atomic_uint refs;      /* the server's, plus one per run in flight */
	pthread_mutex_t mu;    /* the token bucket and the writes */
	int fd;                /* the divergence log; -1: the server log */
	double rate;           /* lines per second (0: none are written) */
	double burst;          /* bucket size */
	double tokens;
	uint64_t refill_ns;    /* when tokens was last refilled */
	uint64_t suppressed;   /* lines dropped since the last one written */
	_Atomic uint64_t fail_warn_ns; /* last warning about a failed run */
	es_metric *f_requests, *f_divergent, *f_max_abs, *f_top1, *f_suppressed;
	es_metric_child *m_suppressed;
};

/* One shadow run in flight: the request queued on the shadow device and
 * the copies it compares against, all in one 64-byte aligned block. */
struct es_shadow_job {
	es_request req;          /* req.version: the shadow version (ours) */
	struct es_shadow_log *log;
	es_servable *m;
	int64_t primary_version;
	double atol, rtol;
	char *request_id;        /* "" when the primary had none */
	es_tensor *inputs;       /* copies of the primary's inputs */
	size_t n_inputs;
	es_tensor *primary;      /* copies of the primary's outputs */
	const char **names;      /* the primary's output names */
	size_t n_outputs;
};
typedef es_shadow_job shadow_job;

/* ---- the log object -------------------------------------------------------------- */

static void log_release(struct es_shadow_log *lg)
{
	if (!lg || atomic_fetch_sub(&lg->refs, 1) != 1)
		return;
	if (lg->fd >= 0)
		close(lg->fd);
	pthread_mutex_destroy(&lg->mu);
	free(lg);
}

static void register_metrics(struct es_shadow_log *lg, es_metrics *r)
{
	static const char *const mr[] = { "model", "result", NULL };
	static const char *const mo[] = { "model", "output", NULL };
	static const char *const m1[] = { "model", NULL };
	if (!r)
		return;
	lg->f_requests = es_metrics_counter(r, "edgeserve_shadow_requests_total",
		"Shadow runs by result: compared (every output within tolerance), diverged (at least one output outside it), dropped (the shadow queue was full or the server stopping), failed (the shadow run failed).",
		mr);
	lg->f_divergent = es_metrics_counter(r, "edgeserve_shadow_divergent_outputs_total",
		"Output tensors of shadow runs outside the tolerance (or of another dtype or shape) compared with the primary.",
		mo);
	lg->f_max_abs = es_metrics_histogram(r, "edgeserve_shadow_max_abs_error",
		"Largest absolute difference between a shadow output and the primary's, per compared output tensor (non-finite differences are not observed).",
		m1, max_abs_buckets, sizeof(max_abs_buckets) / sizeof(max_abs_buckets[0]));
	lg->f_top1 = es_metrics_counter(r, "edgeserve_shadow_top1_disagreements_total",
		"Rows of classification-shaped outputs ([C] or [N, C]) whose argmax differs between shadow and primary.",
		m1);
	lg->f_suppressed = es_metrics_counter(r, "edgeserve_shadow_log_suppressed_total",
		"Divergence log lines not written because of the rate limit.", NULL);
	lg->m_suppressed = es_metric_get(lg->f_suppressed, NULL);
}

int es_shadow_start(es_server *s, const es_server_config *cfg, es_error *err)
{
	if (cfg->divergence_log_per_s < 0)
		return es_error_set(err, ES_EINVAL,
				    "divergence_log_per_s: expected 0 or more lines a second, got %d",
				    cfg->divergence_log_per_s);
	if (cfg->divergence_log && !cfg->divergence_log[0])
		return es_error_set(err, ES_EINVAL,
				    "divergence_log: expected a file path, got an empty string");
	struct es_shadow_log *lg = calloc(1, sizeof(*lg));
	if (!lg)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	lg->fd = -1;
	if (pthread_mutex_init(&lg->mu, NULL)) {
		free(lg);
		return es_error_set(err, ES_ENOMEM, "cannot create a mutex");
	}
	atomic_init(&lg->refs, 1);
	atomic_init(&lg->fail_warn_ns, 0);
	if (cfg->divergence_log) {
		lg->fd = open(cfg->divergence_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
			      0644);
		if (lg->fd < 0) {
			int e = errno;
			log_release(lg);
			/* the operator's own setting, reported at startup */
			return es_error_set(err, ES_EINVAL,
					    "divergence_log: cannot open '%s' for appending: %s",
					    cfg->divergence_log, strerror(e));
		}
	}
	lg->rate = cfg->divergence_log_per_s;
	lg->burst = lg->rate; /* one second's worth */
	lg->tokens = lg->burst;
	lg->refill_ns = es_now_ns();
	register_metrics(lg, s->metrics);
	s->shadow_log = lg;
	return 0;
}

void es_shadow_stop(es_server *s)
{
	/* runs still in flight hold their own reference */
	log_release(s->shadow_log);
	s->shadow_log = NULL;
}

/* ---- counting ------------------------------------------------------------------ */

static void count_result(struct es_shadow_log *lg, const es_servable *m, const char *result)
{
	const char *labels[] = { m->name, result, NULL };
	es_counter_add(es_metric_get(lg->f_requests, labels), 1);
}

/* Warns about a failed shadow run, at most once a second: a shadow version
 * that cannot run the traffic would otherwise fill the log. */
static void warn_failed(struct es_shadow_log *lg, const es_servable *m, int64_t version,
			const char *request_id, const es_error *e)
{
	uint64_t now = es_now_ns(), last = atomic_load(&lg->fail_warn_ns);
	if (last && now - last < FAIL_WARN_INTERVAL_NS)
		return;
	if (!atomic_compare_exchange_strong(&lg->fail_warn_ns, &last, now))
		return; /* another thread warns */
	es_logrec r;
	if (!es_log_begin(&r, ES_LOG_WARN, "shadow_failed"))
		return;
	es_log_str(&r, "model", m->name);
	es_log_int(&r, "shadow_version", version);
	es_log_str(&r, "request_id", request_id);
	es_log_str(&r, "error", e->msg[0] ? e->msg : es_strerror(e->code));
	es_log_str(&r, "note", "further failures within a second are counted, not logged");
	es_log_end(&r);
}

/* ---- the job ---------------------------------------------------------------------- */

static void job_free(shadow_job *j)
{
	struct es_shadow_log *lg = j->log;
	es_version_release(j->req.version);
	es_aligned_free(j);
	log_release(lg);
}

/* Reserves n bytes at the next ES_ALIGN boundary of *off; returns where
 * they start, or SIZE_MAX (and sets *overflow) when a size does not fit. */
static size_t reserve(size_t *off, size_t n, bool *overflow)
{
	size_t at;
	if (*overflow || es_add_size(*off, ES_ALIGN - 1, &at))
		goto fail;
	at &= ~(size_t)(ES_ALIGN - 1);
	if (es_add_size(at, n, off))
		goto fail;
	return at;
fail:
	*overflow = true;
	return SIZE_MAX;
}

static const char *output_name(const es_model *model, size_t i)
{
	const es_value_info *info = i < es_model_num_outputs(model)
		? es_model_output(model, i) : NULL;
	return info && info->name ? info->name : "";
}

/*
 * Lays out (block NULL: only sizes) or fills the job of one mirrored
 * request: one block holding the job, the tensor arrays, the request id,
 * the output names and every tensor's data, each at a 64-byte boundary.
 * Returns the block size; sets *overflow when that does not fit a size_t.
 */
static size_t job_layout(char *block, const es_request *r, const es_tensor *outputs,
			 size_t n_outputs, bool *overflow)
{
	const char *id = r->id ? r->id : "";
	size_t off = 0, sz = 0;
	shadow_job *j = (shadow_job *)block;

	reserve(&off, sizeof(shadow_job), overflow);
	*overflow |= es_mul_size(r->n_inputs, sizeof(es_tensor), &sz);
	size_t at_in = reserve(&off, sz, overflow);
	*overflow |= es_mul_size(n_outputs, sizeof(es_tensor), &sz);
	size_t at_out = reserve(&off, sz, overflow);
	*overflow |= es_mul_size(n_outputs, sizeof(char *), &sz);
	size_t at_names = reserve(&off, sz, overflow);
	size_t at_id = reserve(&off, strlen(id) + 1, overflow);
	if (block) {
		memset(j, 0, sizeof(*j));
		j->inputs = (es_tensor *)(block + at_in);
		j->n_inputs = r->n_inputs;
		j->primary = (es_tensor *)(block + at_out);
		j->names = (const char **)(block + at_names);
		j->n_outputs = n_outputs;
		j->request_id = block + at_id;
		memcpy(j->request_id, id, strlen(id) + 1);
	}
	for (size_t i = 0; i < n_outputs; i++) {
		const char *name = output_name(r->version->model, i);
		size_t at = reserve(&off, strlen(name) + 1, overflow);
		if (block) {
			memcpy(block + at, name, strlen(name) + 1);
			j->names[i] = block + at;
		}
	}
	for (size_t i = 0; i < r->n_inputs; i++) {
		size_t at = reserve(&off, r->inputs[i].nbytes, overflow);
		if (block) {
			j->inputs[i] = r->inputs[i];
			j->inputs[i].data = block + at;
			if (r->inputs[i].nbytes)
				memcpy(block + at, r->inputs[i].data, r->inputs[i].nbytes);
		}
	}
	for (size_t i = 0; i < n_outputs; i++) {
		size_t at = reserve(&off, outputs[i].nbytes, overflow);
		if (block) {
			j->primary[i] = outputs[i];
			j->primary[i].data = block + at;
			if (outputs[i].nbytes)
				memcpy(block + at, outputs[i].data, outputs[i].nbytes);
		}
	}
	return off;
}

/* The job for r (copies of its inputs and of the primary outputs), owned by
 * the caller (job_free); NULL when out of memory or too large. */
static shadow_job *job_new(const es_request *r, const es_tensor *outputs,
			   size_t n_outputs)
{
	bool overflow = false;
	size_t size = job_layout(NULL, r, outputs, n_outputs, &overflow);
	if (overflow)
		return NULL;
	char *block = es_aligned_alloc(size);
	if (!block)
		return NULL;
	job_layout(block, r, outputs, n_outputs, &overflow);
	return (shadow_job *)block;
}

/* ---- comparison ------------------------------------------------------------------------ */

/* A value of the worst element, printed as an integer when it is one. */
typedef struct cmp_value {
	enum { VAL_F64, VAL_I64, VAL_U64 } kind;
	double f;
	int64_t i;
	uint64_t u;
} cmp_value;

/* What comparing one output pair found. */
typedef struct pair_result {
	const char *reason;   /* NULL: within tolerance; "count", "dtype",
			       * "shape", "value" */
	bool values;          /* element values were compared */
	double max_abs, max_rel;
	int64_t worst;        /* flat index of the worst element, -1: none */
	cmp_value pv, sv;     /* primary and shadow value there */
	bool top1;            /* top-1 applies (classification-shaped) */
	int64_t top1_rows, top1_disagree;
} pair_result;

static bool dtype_is_float(es_dtype dt)
{
	return dt == ES_DT_FLOAT || dt == ES_DT_DOUBLE || dt == ES_DT_FLOAT16 ||
	       dt == ES_DT_BFLOAT16;
}

static bool dtype_is_int(es_dtype dt)
{
	switch (dt) {
	case ES_DT_UINT8: case ES_DT_INT8: case ES_DT_UINT16: case ES_DT_INT16:
	case ES_DT_INT32: case ES_DT_INT64: case ES_DT_UINT32: case ES_DT_UINT64:
	case ES_DT_BOOL:
		return true;
	default:
		return false;
	}
}

static double load_f(const es_tensor *t, int64_t k)
{
	switch (t->dtype) {
	case ES_DT_FLOAT: return ((const float *)t->data)[k];
	case ES_DT_DOUBLE: return ((const double *)t->data)[k];
	case ES_DT_FLOAT16: return es_half_to_float(((const uint16_t *)t->data)[k]);
	case ES_DT_BFLOAT16: return es_bf16_to_float(((const uint16_t *)t->data)[k]);
	default: return NAN;
	}
}

/* An integer or bool element (uint64 kept unsigned). */
static cmp_value load_i(const es_tensor *t, int64_t k)
{
	cmp_value v = { .kind = VAL_I64 };
	const void *d = t->data;
	switch (t->dtype) {
	case ES_DT_UINT8: v.i = ((const uint8_t *)d)[k]; break;
	case ES_DT_BOOL: v.i = ((const uint8_t *)d)[k] != 0; break;
	case ES_DT_INT8: v.i = ((const int8_t *)d)[k]; break;
	case ES_DT_UINT16: v.i = ((const uint16_t *)d)[k]; break;
	case ES_DT_INT16: v.i = ((const int16_t *)d)[k]; break;
	case ES_DT_INT32: v.i = ((const int32_t *)d)[k]; break;
	case ES_DT_UINT32: v.i = ((const uint32_t *)d)[k]; break;
	case ES_DT_INT64: v.i = ((const int64_t *)d)[k]; break;
	case ES_DT_UINT64:
		v.kind = VAL_U64;
		v.u = ((const uint64_t *)d)[k];
		break;
	default: break;
	}
	return v;
}

static double value_f64(const cmp_value *v)
{
	return v->kind == VAL_F64 ? v->f : v->kind == VAL_I64 ? (double)v->i : (double)v->u;
}

static bool same_shape(const es_tensor *a, const es_tensor *b)
{
	if (a->ndim != b->ndim)
		return false;
	for (int d = 0; d < a->ndim; d++)
		if (a->dims[d] != b->dims[d])
			return false;
	return true;
}

/* Element count of t when its shape and byte size agree; -1 otherwise. */
static int64_t checked_numel(const es_tensor *t)
{
	int64_t n;
	size_t elem = es_dtype_size(t->dtype);
	if (!elem || t->ndim < 0 || t->ndim > ES_MAX_DIMS ||
	    es_shape_numel(t->dims, t->ndim, elem, &n) || (size_t)n * elem != t->nbytes ||
	    (n && !t->data))
		return -1;
	return n;
}

static void compare_floats(const es_tensor *p, const es_tensor *s, int64_t n,
			   double atol, double rtol, pair_result *res)
{
	double worst_excess = -INFINITY;
	for (int64_t k = 0; k < n; k++) {
		double b = load_f(p, k), a = load_f(s, k);
		double diff, excess;
		bool bad;
		if (isnan(a) || isnan(b)) {
			bad = isnan(a) != isnan(b);
			diff = bad ? INFINITY : 0;
			excess = bad ? INFINITY : -INFINITY;
		} else if (a == b) { /* equal infinities included */
			diff = 0;
			bad = false;
			excess = -(atol + rtol * fabs(b));
		} else if (isinf(a) || isinf(b)) {
			diff = INFINITY;
			bad = true;
			excess = INFINITY;
		} else {
			double tol = atol + rtol * fabs(b);
			diff = fabs(a - b);
			bad = diff > tol;
			excess = diff - tol;
		}
		double rel = diff / fmax(fabs(b), REL_TINY);
		if (diff > res->max_abs)
			res->max_abs = diff;
		if (rel > res->max_rel)
			res->max_rel = rel;
		if (bad && !res->reason)
			res->reason = "value";
		/* the worst element: furthest outside (or least inside) the
		 * tolerance; the first of equals */
		if (res->worst < 0 || excess > worst_excess) {
			worst_excess = excess;
			res->worst = k;
			res->pv = (cmp_value){ .kind = VAL_F64, .f = b };
			res->sv = (cmp_value){ .kind = VAL_F64, .f = a };
		}
	}
}

static void compare_ints(const es_tensor *p, const es_tensor *s, int64_t n,
			 pair_result *res)
{
	for (int64_t k = 0; k < n; k++) {
		cmp_value b = load_i(p, k), a = load_i(s, k);
		bool equal = a.kind == VAL_U64 ? a.u == b.u : a.i == b.i;
		if (equal) {
			if (res->worst < 0) {
				res->worst = k;
				res->pv = b;
				res->sv = a;
			}
			continue;
		}
		double diff = fabs(value_f64(&a) - value_f64(&b));
		double rel = diff / fmax(fabs(value_f64(&b)), REL_TINY);
		if (res->max_rel < rel)
			res->max_rel = rel;
		/* the largest difference is the worst element */
		if (!res->reason || diff > res->max_abs) {
			res->worst = k;
			res->pv = b;
			res->sv = a;
		}
		if (diff > res->max_abs)
			res->max_abs = diff;
		res->reason = "value";
	}
}

/* Greater for the argmax: a NaN beats any number (as numpy's argmax). */
static bool argmax_greater(double x, double best)
{
	if (isnan(best))
		return false;
	return isnan(x) || x > best;
}

static int64_t row_argmax(const es_tensor *t, int64_t row, int64_t c)
{
	int64_t best = 0;
	double best_v = 0;
	bool is_float = dtype_is_float(t->dtype);
	for (int64_t k = 0; k < c; k++) {
		cmp_value iv;
		double v;
		if (is_float) {
			v = load_f(t, row * c + k);
		} else {
			iv = load_i(t, row * c + k);
			v = value_f64(&iv);
		}
		if (k == 0 || argmax_greater(v, best_v)) {
			best = k;
			best_v = v;
		}
	}
	return best;
}

/* Top-1 of outputs shaped [C] or [N, C] with C >= 2 (not bool). */
static void compare_top1(const es_tensor *p, const es_tensor *s, pair_result *res)
{
	if (p->dtype == ES_DT_BOOL || (p->ndim != 1 && p->ndim != 2))
		return;
	int64_t c = p->dims[p->ndim - 1];
	int64_t rows = p->ndim == 2 ? p->dims[0] : 1;
	if (c < 2 || rows < 1)
		return;
	res->top1 = true;
	res->top1_rows = rows;
	for (int64_t r = 0; r < rows; r++)
		if (row_argmax(p, r, c) != row_argmax(s, r, c))
			res->top1_disagree++;
}

static void compare_pair(const es_tensor *p, const es_tensor *s, double atol,
			 double rtol, pair_result *res)
{
	memset(res, 0, sizeof(*res));
	res->worst = -1;
	if (p->dtype != s->dtype) {
		res->reason = "dtype";
		return;
	}
	int64_t np = checked_numel(p), ns = checked_numel(s);
	if (!same_shape(p, s) || np < 0 || ns != np) {
		res->reason = "shape";
		return;
	}
	res->values = true;
	if (dtype_is_float(p->dtype)) {
		compare_floats(p, s, np, atol, rtol, res);
	} else if (dtype_is_int(p->dtype)) {
		compare_ints(p, s, np, res);
	} else if (memcmp(p->data, s->data, p->nbytes)) {
		res->reason = "value"; /* a type without arithmetic: bytes */
	}
	if (dtype_is_float(p->dtype) || dtype_is_int(p->dtype))
		compare_top1(p, s, res);
}

/* ---- the divergence log -------------------------------------------------------------- */

/* One divergent pair, as logged. */
typedef struct div_line {
	const shadow_job *j;
	int64_t shadow_version;
	const char *output;
	const es_tensor *p, *s; /* NULL when the side has no such output */
	const pair_result *res;
} div_line;

static void format_shape(char *out, size_t cap, const es_tensor *t)
{
	size_t o = (size_t)snprintf(out, cap, "[");
	for (int d = 0; t && d < t->ndim && o < cap; d++)
		o += (size_t)snprintf(out + o, cap - o, "%s%" PRId64, d ? "," : "", t->dims[d]);
	if (o < cap)
		snprintf(out + o, cap - o, "]");
}

/* "2026-11-23T23:59:59.123456Z" */
static void format_ts(char *out, size_t cap)
{
	uint64_t ns = es_wall_ns();
	time_t sec = (time_t)(ns / 1000000000u);
	struct tm tm;
	gmtime_r(&sec, &tm);
	snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%06uZ", (tm.tm_year + 1900) % 10000,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		 (unsigned)(ns % 1000000000u / 1000u));
}

/* JSON has no NaN or infinities: those are written as strings. */
static void buf_f64(es_buf *b, double v)
{
	if (isnan(v)) {
		es_buf_puts(b, "\"nan\"");
	} else if (isinf(v)) {
		es_buf_puts(b, v > 0 ? "\"inf\"" : "\"-inf\"");
	} else {
		char num[32];
		for (int prec = 15; prec <= 17; prec++) {
			snprintf(num, sizeof(num), "%.*g", prec, v);
			if (strtod(num, NULL) == v)
				break;
		}
		es_buf_puts(b, num);
	}
}

static void buf_value(es_buf *b, const cmp_value *v)
{
	if (v->kind == VAL_I64)
		es_buf_printf(b, "%" PRId64, v->i);
	else if (v->kind == VAL_U64)
		es_buf_printf(b, "%" PRIu64, v->u);
	else
		buf_f64(b, v->f);
}

static void buf_key(es_buf *b, const char *key)
{
	es_buf_putc(b, ',');
	es_buf_json_str(b, key, strlen(key));
	es_buf_putc(b, ':');
}

static void buf_str_field(es_buf *b, const char *key, const char *v)
{
	buf_key(b, key);
	es_buf_json_str(b, v, strlen(v));
}

/* Appends the line's fields after "ts" (each starts with a comma). */
static void line_to_buf(es_buf *b, const div_line *l, uint64_t suppressed)
{
	const shadow_job *j = l->j;
	const pair_result *res = l->res;
	char shape[200];
	buf_str_field(b, "request_id", j->request_id);
	buf_str_field(b, "model", j->m->name);
	buf_key(b, "primary_version");
	es_buf_printf(b, "%" PRId64, j->primary_version);
	buf_key(b, "shadow_version");
	es_buf_printf(b, "%" PRId64, l->shadow_version);
	buf_str_field(b, "output", l->output);
	buf_str_field(b, "reason", res->reason);
	if (!strcmp(res->reason, "dtype")) {
		buf_str_field(b, "primary_dtype", l->p ? es_dtype_name(l->p->dtype) : "");
		buf_str_field(b, "shadow_dtype", l->s ? es_dtype_name(l->s->dtype) : "");
	}
	if (!strcmp(res->reason, "shape")) {
		format_shape(shape, sizeof(shape), l->p);
		buf_str_field(b, "primary_shape", shape);
		format_shape(shape, sizeof(shape), l->s);
		buf_str_field(b, "shadow_shape", shape);
	}
	buf_key(b, "worst_index");
	if (res->worst >= 0)
		es_buf_printf(b, "%" PRId64, res->worst);
	else
		es_buf_puts(b, "null");
	buf_key(b, "primary_value");
	if (res->worst >= 0)
		buf_value(b, &res->pv);
	else
		es_buf_puts(b, "null");
	buf_key(b, "shadow_value");
	if (res->worst >= 0)
		buf_value(b, &res->sv);
	else
		es_buf_puts(b, "null");
	buf_key(b, "max_abs_error");
	if (res->values)
		buf_f64(b, res->max_abs);
	else
		es_buf_puts(b, "null");
	buf_key(b, "max_rel_error");
	if (res->values)
		buf_f64(b, res->max_rel);
	else
		es_buf_puts(b, "null");
	buf_key(b, "atol");
	buf_f64(b, j->atol);
	buf_key(b, "rtol");
	buf_f64(b, j->rtol);
	buf_key(b, "top1_agree");
	es_buf_puts(b, !res->top1 ? "null" : res->top1_disagree ? "false" : "true");
	if (suppressed) {
		buf_key(b, "suppressed");
		es_buf_printf(b, "%" PRIu64, suppressed);
	}
}

static void write_all(int fd, const char *p, size_t n)
{
	/* one write for the line; the loop only finishes a short write */
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return; /* the log never fails a request */
		}
		p += w;
		n -= (size_t)w;
	}
}

/* The same fields through the server log (event "shadow_divergence"). */
static void line_to_server_log(const div_line *l, uint64_t suppressed)
{
	const shadow_job *j = l->j;
	const pair_result *res = l->res;
	char shape[200];
	es_logrec r;
	if (!es_log_begin(&r, ES_LOG_WARN, "shadow_divergence"))
		return;
	es_log_str(&r, "request_id", j->request_id);
	es_log_str(&r, "model", j->m->name);
	es_log_int(&r, "primary_version", j->primary_version);
	es_log_int(&r, "shadow_version", l->shadow_version);
	es_log_str(&r, "output", l->output);
	es_log_str(&r, "reason", res->reason);
	if (!strcmp(res->reason, "dtype")) {
		es_log_str(&r, "primary_dtype", l->p ? es_dtype_name(l->p->dtype) : "");
		es_log_str(&r, "shadow_dtype", l->s ? es_dtype_name(l->s->dtype) : "");
	}
	if (!strcmp(res->reason, "shape")) {
		format_shape(shape, sizeof(shape), l->p);
		es_log_str(&r, "primary_shape", shape);
		format_shape(shape, sizeof(shape), l->s);
		es_log_str(&r, "shadow_shape", shape);
	}
	if (res->worst >= 0) {
		const cmp_value *vals[2] = { &res->pv, &res->sv };
		const char *keys[2] = { "primary_value", "shadow_value" };
		es_log_int(&r, "worst_index", res->worst);
		for (int k = 0; k < 2; k++) {
			const cmp_value *v = vals[k];
			if (v->kind == VAL_I64)
				es_log_int(&r, keys[k], v->i);
			else if (v->kind == VAL_U64 && v->u <= INT64_MAX)
				es_log_int(&r, keys[k], (int64_t)v->u);
			else if (v->kind == VAL_U64)
				es_log_f64(&r, keys[k], (double)v->u);
			else if (isfinite(v->f))
				es_log_f64(&r, keys[k], v->f);
			else
				es_log_str(&r, keys[k], isnan(v->f) ? "nan" : v->f > 0 ? "inf" : "-inf");
		}
	}
	if (res->values) {
		if (isfinite(res->max_abs))
			es_log_f64(&r, "max_abs_error", res->max_abs);
		else
			es_log_str(&r, "max_abs_error", "inf");
		if (isfinite(res->max_rel))
			es_log_f64(&r, "max_rel_error", res->max_rel);
		else
			es_log_str(&r, "max_rel_error", "inf");
	}
	es_log_f64(&r, "atol", j->atol);
	es_log_f64(&r, "rtol", j->rtol);
	if (res->top1)
		es_log_bool(&r, "top1_agree", res->top1_disagree == 0);
	if (suppressed)
		es_log_int(&r, "suppressed", (int64_t)suppressed);
	es_log_end(&r);
}

/* Takes a token for one line; false (counted) when the bucket is empty.
 * Caller holds lg->mu. */
static bool take_token(struct es_shadow_log *lg)
{
	uint64_t now = es_now_ns();
	if (now > lg->refill_ns) {
		lg->tokens += (double)(now - lg->refill_ns) / 1e9 * lg->rate;
		if (lg->tokens > lg->burst)
			lg->tokens = lg->burst;
		lg->refill_ns = now;
	}
	if (lg->tokens >= 1) {
		lg->tokens -= 1;
		return true;
	}
	lg->suppressed++;
	es_counter_add(lg->m_suppressed, 1);
	return false;
}

static void log_divergence(struct es_shadow_log *lg, const div_line *l)
{
	es_buf b = ES_BUF_INIT;
	char ts[64];
	if (lg->fd >= 0) {
		/* built outside the lock; "suppressed" is appended under it */
		format_ts(ts, sizeof(ts));
		es_buf_puts(&b, "{\"ts\":");
		es_buf_json_str(&b, ts, strlen(ts));
		line_to_buf(&b, l, 0);
	}
	pthread_mutex_lock(&lg->mu);
	if (take_token(lg)) {
		uint64_t suppressed = lg->suppressed;
		lg->suppressed = 0;
		if (lg->fd < 0) {
			line_to_server_log(l, suppressed);
		} else {
			if (suppressed) {
				buf_key(&b, "suppressed");
				es_buf_printf(&b, "%" PRIu64, suppressed);
			}
			es_buf_puts(&b, "}\n");
			if (!b.failed)
				write_all(lg->fd, b.data, b.len);
		}
	}
	pthread_mutex_unlock(&lg->mu);
	es_buf_free(&b);
}

/* ---- the shadow run's completion ---------------------------------------------------------- */

static void compare_outputs(shadow_job *j, const es_tensor *outs, size_t n_outs)
{
	struct es_shadow_log *lg = j->log;
	int64_t shadow_version = j->req.version->number;
	const es_model *sm = j->req.version->model;
	size_t n = j->n_outputs > n_outs ? j->n_outputs : n_outs;
	bool diverged = false;
	const char *m1[] = { j->m->name, NULL };
	es_metric_child *c_max_abs = es_metric_get(lg->f_max_abs, m1);
	es_metric_child *c_top1 = NULL;

	for (size_t i = 0; i < n; i++) {
		pair_result res;
		const es_tensor *p = i < j->n_outputs ? &j->primary[i] : NULL;
		const es_tensor *s = i < n_outs ? &outs[i] : NULL;
		const char *name = p ? j->names[i] : output_name(sm, i);
		if (p && s) {
			compare_pair(p, s, j->atol, j->rtol, &res);
		} else {
			/* one side has more outputs than the other */
			memset(&res, 0, sizeof(res));
			res.worst = -1;
			res.reason = "count";
		}
		if (res.values && isfinite(res.max_abs))
			es_histogram_observe(c_max_abs, res.max_abs);
		if (res.top1_disagree) {
			if (!c_top1)
				c_top1 = es_metric_get(lg->f_top1, m1);
			es_counter_add(c_top1, (double)res.top1_disagree);
		}
		if (!res.reason)
			continue;
		diverged = true;
		const char *mo[] = { j->m->name, name, NULL };
		es_counter_add(es_metric_get(lg->f_divergent, mo), 1);
		div_line line = { j, shadow_version, name, p, s, &res };
		log_divergence(lg, &line);
	}
	count_result(lg, j->m, diverged ? "diverged" : "compared");
	es_rollout_shadow_event(j->m, shadow_version,
				diverged ? ES_SHADOW_DIVERGED : ES_SHADOW_MATCHED);
}

static void shadow_done(es_request *r, const es_tensor *outputs, size_t n_outputs)
{
	shadow_job *j = r->user;
	if (r->status == 0 && outputs) {
		compare_outputs(j, outputs, n_outputs);
	} else if (r->status == ES_ECANCELED) {
		/* the server stopped before the run: nothing was compared */
		count_result(j->log, j->m, "dropped");
		es_rollout_shadow_event(j->m, r->version->number, ES_SHADOW_DROPPED);
	} else {
		count_result(j->log, j->m, "failed");
		es_rollout_shadow_event(j->m, r->version->number, ES_SHADOW_FAILED);
		warn_failed(j->log, j->m, r->version->number, j->request_id, &r->err);
	}
	job_free(j);
}

/* ---- the hand-over ---------------------------------------------------------------------------- */

es_shadow_job *es_shadow_take(es_server *s, es_request *r, const es_tensor *outputs,
			      size_t n_outputs)
{
	es_version *sv = r->shadow;
	if (!sv)
		return NULL;
	r->shadow = NULL;
	es_servable *m = sv->servable;
	struct es_shadow_log *lg = s->shadow_log;
	if (!lg) { /* not started (or stopping): nothing can be compared */
		es_version_release(sv);
		return NULL;
	}
	shadow_job *j = r->version && (outputs || !n_outputs) && (r->inputs || !r->n_inputs)
		? job_new(r, outputs, n_outputs) : NULL;
	if (!j) {
		/* out of memory (or nothing to copy): dropped like a full queue,
		 * never the primary's problem */
		count_result(lg, m, "dropped");
		es_rollout_shadow_event(m, sv->number, ES_SHADOW_DROPPED);
		es_version_release(sv);
		return NULL;
	}
	atomic_fetch_add(&lg->refs, 1);
	j->log = lg;
	j->m = m;
	j->primary_version = r->version->number;
	j->req.version = sv; /* the job's reference from here on */
	j->req.inputs = j->inputs;
	j->req.n_inputs = j->n_inputs;
	j->req.deadline_ns = 0;
	j->req.arm = r->arm;
	j->req.shadow = NULL;
	j->req.complete = shadow_done;
	j->req.user = j;
	j->req.id = j->request_id;
	return j;
}

static void job_params(shadow_job *j, es_shadow_params *params)
{
	es_rollout_shadow_params(j->m, params);
	j->atol = params->atol;
	j->rtol = params->rtol;
}

es_request *es_shadow_request(es_shadow_job *j, double *inline_max_s)
{
	es_shadow_params params;
	job_params(j, &params);
	*inline_max_s = params.inline_max_s;
	return &j->req;
}

void es_shadow_queue(es_server *s, es_shadow_job *j)
{
	if (!j)
		return;
	struct es_shadow_log *lg = j->log;
	es_servable *m = j->m;
	es_version *sv = j->req.version;
	es_shadow_params params;
	job_params(j, &params);

	es_error err = { 0 };
	int rc = es_sched_submit_low(s, &j->req, params.queue_size, &err);
	if (rc == 0)
		return; /* shadow_done frees j */
	if (rc == ES_EBUSY || rc == ES_ECANCELED) {
		count_result(lg, m, "dropped");
		es_rollout_shadow_event(m, sv->number, ES_SHADOW_DROPPED);
	} else {
		/* e.g. a shadow version whose inputs differ from the primary's */
		count_result(lg, m, "failed");
		es_rollout_shadow_event(m, sv->number, ES_SHADOW_FAILED);
		warn_failed(lg, m, sv->number, j->request_id, &err);
	}
	job_free(j);
}
