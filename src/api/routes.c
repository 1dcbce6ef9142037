/*
 * URL routing and the endpoints that are not inference: health, server and
 * model metadata (KServe v2 and TF-Serving), model readiness, the OVMS
 * config view, the Prometheus exposition, and the lifecycle endpoints
 * (configuration reload, which runs on the reload thread, and rollback; see
 * api_int.h).
 *
 * Model names and versions from a URL are validated before any lookup, so
 * nothing a client writes in a path reaches the repository as a file name.
 * The model list can change while the server runs (a reload): endpoints
 * that walk it use one es_server_models snapshot.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"
#include "base/buf.h"
#include "base/status.h"

/* ---- routing ------------------------------------------------------------- */

#define MAX_SEGMENTS 8

typedef struct segment {
	const char *p;
	size_t n;
} segment;

static bool seg_is(const segment *s, const char *lit)
{
	size_t n = strlen(lit);
	return s->n == n && memcmp(s->p, lit, n) == 0;
}

void es_api_sanitize(char *out, size_t cap, const char *s)
{
	const size_t max_chars = 64;
	size_t o = 0, i = 0;

	if (cap == 0)
		return;
	for (; s[i] && i < max_chars && o + 1 < cap; i++) {
		unsigned char ch = (unsigned char)s[i];
		out[o++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
	}
	if (s[i] && o + 4 < cap) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
}

/* Sanitised copy of a segment for a message. */
static void seg_sanitize(char *out, size_t cap, const segment *s)
{
	char tmp[API_NAME_MAX + 8];
	size_t n = s->n < sizeof(tmp) - 1 ? s->n : sizeof(tmp) - 1;

	memcpy(tmp, s->p, n);
	tmp[n] = '\0';
	es_api_sanitize(out, cap, tmp);
}

static void route_bad(api_route *r, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void route_bad(api_route *r, int status, const char *fmt, ...)
{
	va_list ap;

	r->kind = R_BAD;
	r->status = status;
	va_start(ap, fmt);
	vsnprintf(r->msg, sizeof(r->msg), fmt, ap);
	va_end(ap);
}

static bool name_char_ok(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
}

/* Model names: [A-Za-z0-9_.-]+, at most API_NAME_MAX, not "." or "..". */
static bool route_model(api_route *r, const segment *s)
{
	char shown[96];

	seg_sanitize(shown, sizeof(shown), s);
	if (s->n == 0) {
		route_bad(r, 404, "model name is empty");
		return false;
	}
	if (s->n > API_NAME_MAX) {
		route_bad(r, 400, "invalid model name '%s': longer than %d characters",
			  shown, API_NAME_MAX);
		return false;
	}
	for (size_t i = 0; i < s->n; i++) {
		if (!name_char_ok(s->p[i])) {
			route_bad(r, 400,
				  "invalid model name '%s': only letters, digits, '_', '.' and '-' are allowed",
				  shown);
			return false;
		}
	}
	memcpy(r->model, s->p, s->n);
	r->model[s->n] = '\0';
	r->has_model = true;
	return true;
}

/* Versions: decimal, positive, fits int64. */
static bool route_version(api_route *r, const segment *s)
{
	char shown[96];
	int64_t v = 0;

	seg_sanitize(shown, sizeof(shown), s);
	if (s->n == 0 || s->n > 19)
		goto bad;
	for (size_t i = 0; i < s->n; i++) {
		char c = s->p[i];
		if (c < '0' || c > '9')
			goto bad;
		if (__builtin_mul_overflow(v, 10, &v) ||
		    __builtin_add_overflow(v, c - '0', &v))
			goto bad;
	}
	if (v <= 0)
		goto bad;
	r->version = v;
	return true;
bad:
	route_bad(r, 400,
		  "invalid version '%s' for model '%s': expected a positive integer",
		  shown, r->model);
	return false;
}

/* Splits "/a/b/c" into segments; false when there are too many. */
static bool split_path(const char *url, segment *segs, size_t *n_out)
{
	const char *p = url + 1;
	size_t n = 0;

	for (;;) {
		const char *slash = strchr(p, '/');
		size_t len = slash ? (size_t)(slash - p) : strlen(p);

		if (n == MAX_SEGMENTS)
			return false;
		segs[n].p = p;
		segs[n].n = len;
		n++;
		if (!slash)
			break;
		p = slash + 1;
	}
	*n_out = n;
	return true;
}

/* /v2/... */
static void route_v2(api_route *r, const segment *s, size_t n)
{
	if (n == 1) {
		r->kind = R_SERVER_META;
		return;
	}
	if (n == 3 && seg_is(&s[1], "health")) {
		if (seg_is(&s[2], "live"))
			r->kind = R_HEALTH_LIVE;
		else if (seg_is(&s[2], "ready"))
			r->kind = R_HEALTH_READY;
		return;
	}
	if (n < 3 || !seg_is(&s[1], "models"))
		return;
	if (!route_model(r, &s[2]))
		return;
	const segment *rest = s + 3;
	size_t nrest = n - 3;
	if (nrest >= 2 && seg_is(&rest[0], "versions")) {
		if (!route_version(r, &rest[1]))
			return;
		rest += 2;
		nrest -= 2;
	}
	if (nrest == 0) {
		r->kind = R_MODEL_META;
	} else if (nrest == 1 && seg_is(&rest[0], "ready")) {
		r->kind = R_MODEL_READY;
	} else if (nrest == 1 && seg_is(&rest[0], "infer")) {
		r->kind = R_MODEL_INFER;
		r->post = true;
	}
}

bool es_api_label_ok(const char *s, size_t n)
{
	if (n == 0 || n > API_LABEL_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		      (c >= '0' && c <= '9') || c == '_'))
			return false;
	}
	return true;
}

/* Version labels: [A-Za-z0-9_]{1,API_LABEL_MAX}. */
static bool route_label(api_route *r, const segment *s)
{
	char shown[96];

	if (!es_api_label_ok(s->p, s->n)) {
		seg_sanitize(shown, sizeof(shown), s);
		route_bad(r, 400,
			  "invalid label '%s' for model '%s': expected 1 to %d letters, digits or '_'",
			  shown, r->model, API_LABEL_MAX);
		return false;
	}
	memcpy(r->label, s->p, s->n);
	r->label[s->n] = '\0';
	r->has_label = true;
	return true;
}

/* /v1/admin/models/{m}/{rollback,labels,canary,kill,unkill,rollout} */
static void route_admin(api_route *r, const segment *s, size_t n)
{
	static const struct {
		const char *verb;
		api_route_kind kind;
		bool post;
	} verbs[] = {
		{"rollback", R_MODEL_ROLLBACK, true},
		{"labels", R_ADMIN_LABELS, true},
		{"canary", R_ADMIN_CANARY, true},
		{"kill", R_ADMIN_KILL, true},
		{"unkill", R_ADMIN_UNKILL, true},
		{"rollout", R_ADMIN_ROLLOUT, false},
	};

	if (n != 5 || !seg_is(&s[2], "models"))
		return;
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
		if (!seg_is(&s[4], verbs[i].verb))
			continue;
		if (!route_model(r, &s[3]))
			return;
		r->kind = verbs[i].kind;
		r->post = verbs[i].post;
		return;
	}
}

/* /v1/... (TF-Serving and OVMS) */
static void route_v1(api_route *r, segment *s, size_t n)
{
	segment verb = {NULL, 0};

	if (n == 2 && seg_is(&s[1], "config")) {
		r->kind = R_CONFIG;
		return;
	}
	if (n == 3 && seg_is(&s[1], "config") && seg_is(&s[2], "reload")) {
		r->kind = R_CONFIG_RELOAD;
		r->post = true;
		return;
	}
	if (n >= 2 && seg_is(&s[1], "admin")) {
		route_admin(r, s, n);
		return;
	}
	if (n < 3 || !seg_is(&s[1], "models"))
		return;
	/* ":predict" rides on the last segment */
	const char *colon = memchr(s[n - 1].p, ':', s[n - 1].n);
	if (colon) {
		verb.p = colon + 1;
		verb.n = s[n - 1].n - (size_t)(colon + 1 - s[n - 1].p);
		s[n - 1].n = (size_t)(colon - s[n - 1].p);
	}
	if (!route_model(r, &s[2]))
		return;
	segment *rest = s + 3;
	size_t nrest = n - 3;
	if (nrest >= 2 && seg_is(&rest[0], "versions")) {
		if (!route_version(r, &rest[1]))
			return;
		rest += 2;
		nrest -= 2;
	} else if (nrest >= 2 && seg_is(&rest[0], "labels")) {
		if (!route_label(r, &rest[1]))
			return;
		rest += 2;
		nrest -= 2;
	}
	if (verb.p) {
		char shown[96];

		if (nrest == 0 && seg_is(&verb, "predict")) {
			r->kind = R_TFS_PREDICT;
			r->post = true;
			return;
		}
		if (nrest == 0) {
			seg_sanitize(shown, sizeof(shown), &verb);
			route_bad(r, 404, "model '%s': method ':%s' is not supported; only :predict is",
				  r->model, shown);
		}
		return;
	}
	if (nrest == 0)
		r->kind = R_TFS_STATUS;
	else if (nrest == 1 && seg_is(&rest[0], "metadata") && !r->has_label)
		r->kind = R_TFS_METADATA;
}

void es_api_route_parse(const char *url, api_route *r)
{
	segment s[MAX_SEGMENTS];
	size_t n;

	memset(r, 0, sizeof(*r));
	r->kind = R_NOT_FOUND;
	if (!url || url[0] != '/' || !split_path(url, s, &n))
		return;
	for (size_t i = 0; i < n; i++) {
		if (seg_is(&s[i], ".") || seg_is(&s[i], "..")) {
			route_bad(r, 400, "path segment '%.*s' is not allowed",
				  (int)s[i].n, s[i].p);
			return;
		}
	}
	if (n == 1 && seg_is(&s[0], "metrics"))
		r->kind = R_METRICS;
	else if (seg_is(&s[0], "v2"))
		route_v2(r, s, n);
	else if (seg_is(&s[0], "v1"))
		route_v1(r, s, n);
}

/* ---- helpers ------------------------------------------------------------- */

bool es_api_resolve_model(api_ctx *c)
{
	es_http *h = c->h;

	c->model = es_server_find_model(h->srv, c->route.model);
	if (!c->model) {
		es_api_reply_error(c, 404, ES_ENOTFOUND, "model '%s' not found",
				   c->route.model);
		return false;
	}
	c->stats = es_api_model_stats(h, c->model);
	return true;
}

/* The model's version statuses (malloc'ed array, *n entries), highest
 * first. NULL with *n = 0 when the model has none or memory ran out. */
static es_version_status *model_statuses(es_servable *m, size_t *n)
{
	es_version_status small[8];
	size_t total = es_servable_status(m, small, 8);
	es_version_status *all;

	*n = 0;
	if (total == 0)
		return NULL;
	all = calloc(total, sizeof(*all));
	if (!all)
		return NULL;
	if (total <= 8) {
		memcpy(all, small, total * sizeof(*all));
	} else {
		size_t again = es_servable_status(m, all, total);
		if (again < total)
			total = again;
	}
	*n = total;
	return all;
}

static void put_str(es_buf *b, const char *s)
{
	es_buf_json_str(b, s, strlen(s));
}

/* Who reads a version status list: TF-Serving's enum has no FAILED. */
typedef enum status_dialect {
	DIALECT_TFS,  /* GET /v1/models/m: FAILED shows as END */
	DIALECT_OVMS, /* GET /v1/config: FAILED as it is */
} status_dialect;

/* One ModelVersionStatus. A FAILED version carries error_code UNKNOWN and
 * its reason; TF-Serving has no FAILED state, so there it shows as END (as
 * OVMS does on that endpoint). */
static void put_version_status(es_buf *b, const es_version_status *st,
			       status_dialect dialect)
{
	bool failed = st->state == ES_VS_FAILED;
	const char *state = failed && dialect == DIALECT_TFS
				    ? "END" : es_version_state_name(st->state);

	es_buf_printf(b, "{\"version\":\"%" PRId64 "\",\"state\":\"%s\","
		      "\"status\":{\"error_code\":\"%s\",\"error_message\":",
		      st->version, state, failed ? "UNKNOWN" : "OK");
	put_str(b, failed ? st->reason : "");
	es_buf_puts(b, "}}");
}

static void put_model_status_list(es_buf *b, const es_version_status *st,
				  size_t n, int64_t only_version,
				  status_dialect dialect)
{
	bool first = true;

	es_buf_puts(b, "{\"model_version_status\":[");
	for (size_t i = 0; i < n; i++) {
		if (only_version && st[i].version != only_version)
			continue;
		if (!first)
			es_buf_putc(b, ',');
		first = false;
		put_version_status(b, &st[i], dialect);
	}
	es_buf_puts(b, "]}");
}

static void reply_json(api_ctx *c, int status, es_buf *b)
{
	if (b->failed) {
		es_buf_free(b);
		es_api_reply_error(c, 500, ES_ENOMEM, "out of memory building the reply");
		return;
	}
	es_api_reply(c, status, "application/json", b);
}

/* Takes a version reference for the metadata endpoints. */
static es_version *acquire(api_ctx *c)
{
	es_version *v = NULL;
	es_error err = {0};
	int rc = es_servable_acquire(c->model, c->route.version, &v, &err);

	if (rc) {
		es_api_fail(c, rc, err.msg[0] ? err.msg : es_strerror(rc));
		return NULL;
	}
	return v;
}

/* ---- KServe v2 ----------------------------------------------------------- */

static void handle_ready(api_ctx *c)
{
	es_http *h = c->h;

	if (atomic_load(&h->draining)) {
		es_api_reply_error(c, 503, ES_EUNAVAILABLE, "server is shutting down");
		return;
	}
	if (!es_server_ready(h->srv)) {
		const es_model_list *models = es_server_models(h->srv);
		for (size_t i = 0; i < models->n; i++) {
			es_servable *m = models->m[i];
			if (!es_servable_ready(m, 0)) {
				es_api_reply_error(c, 503, ES_EUNAVAILABLE,
						   "not ready: model '%s' has no available version",
						   es_servable_name(m));
				return;
			}
		}
		es_api_reply_error(c, 503, ES_EUNAVAILABLE, "not ready");
		return;
	}
	es_api_reply(c, 200, NULL, NULL);
}

static void handle_server_meta(api_ctx *c)
{
	es_buf b = ES_BUF_INIT;

	es_buf_puts(&b, "{\"name\":\"edgeserve\",\"version\":\"" ES_ENGINE_VERSION
			"\",\"extensions\":[\"binary_tensor_data\"],"
			"\"runtime\":{\"onednn\":");
	put_str(&b, c->h->onednn);
	es_buf_puts(&b, ",\"openblas\":");
	put_str(&b, c->h->openblas);
	es_buf_puts(&b, "}}");
	reply_json(c, 200, &b);
}

static void put_shape(es_buf *b, const es_value_info *vi)
{
	es_buf_putc(b, '[');
	if (vi->ndim < 0) {
		es_buf_puts(b, "-1");
	} else {
		for (int d = 0; d < vi->ndim; d++)
			es_buf_printf(b, "%s%" PRId64, d ? "," : "",
				      vi->dims[d] < 0 ? (int64_t)-1 : vi->dims[d]);
	}
	es_buf_putc(b, ']');
}

static void put_v2_tensor_meta(es_buf *b, const es_value_info *vi)
{
	const char *dt = vi->dtype == ES_DT_STRING ? "BYTES" :
			 es_v2_datatype_name(vi->dtype);

	es_buf_puts(b, "{\"name\":");
	put_str(b, vi->name);
	es_buf_puts(b, ",\"datatype\":");
	put_str(b, dt ? dt : "UNKNOWN");
	es_buf_puts(b, ",\"shape\":");
	put_shape(b, vi);
	es_buf_putc(b, '}');
}

static void handle_model_meta(api_ctx *c)
{
	es_version *v = acquire(c);
	es_buf b = ES_BUF_INIT;
	es_version_status *st;
	size_t n_st;
	bool first = true;

	if (!v)
		return;
	es_model *m = es_version_model(v);
	st = model_statuses(c->model, &n_st);
	es_buf_puts(&b, "{\"name\":");
	put_str(&b, es_servable_name(c->model));
	es_buf_puts(&b, ",\"versions\":[");
	for (size_t i = 0; i < n_st; i++) {
		if (st[i].state != ES_VS_AVAILABLE)
			continue;
		es_buf_printf(&b, "%s\"%" PRId64 "\"", first ? "" : ",", st[i].version);
		first = false;
	}
	es_buf_puts(&b, "],\"platform\":\"onnx\",\"inputs\":[");
	for (size_t i = 0; i < es_model_num_inputs(m); i++) {
		if (i)
			es_buf_putc(&b, ',');
		put_v2_tensor_meta(&b, es_model_input(m, i));
	}
	es_buf_puts(&b, "],\"outputs\":[");
	for (size_t i = 0; i < es_model_num_outputs(m); i++) {
		if (i)
			es_buf_putc(&b, ',');
		put_v2_tensor_meta(&b, es_model_output(m, i));
	}
	es_buf_puts(&b, "]}");
	free(st);
	es_version_release(v);
	reply_json(c, 200, &b);
}

/* Finds one version's status; false (and a 404 prepared) when the model
 * has no such version. */
static bool find_version(api_ctx *c, es_version_status *out)
{
	size_t n;
	es_version_status *st = model_statuses(c->model, &n);
	bool found = false;

	for (size_t i = 0; i < n; i++) {
		if (st[i].version == c->route.version) {
			*out = st[i];
			found = true;
			break;
		}
	}
	free(st);
	if (!found)
		es_api_reply_error(c, 404, ES_ENOTFOUND,
				   "model '%s' has no version %" PRId64,
				   c->route.model, c->route.version);
	return found;
}

static void handle_model_ready(api_ctx *c)
{
	es_version_status st;

	if (c->route.version && !find_version(c, &st))
		return;
	if (es_servable_ready(c->model, c->route.version)) {
		es_api_reply(c, 200, NULL, NULL);
		return;
	}
	if (c->route.version)
		es_api_reply_error(c, 503, ES_EUNAVAILABLE,
				   "model '%s' version %" PRId64 " is not ready: state %s",
				   c->route.model, c->route.version,
				   es_version_state_name(st.state));
	else
		es_api_reply_error(c, 503, ES_EUNAVAILABLE,
				   "model '%s' has no available version", c->route.model);
}

/* ---- TF-Serving ---------------------------------------------------------- */

static void handle_tfs_status(api_ctx *c)
{
	es_version_status one;
	es_version_status *st;
	size_t n;
	es_buf b = ES_BUF_INIT;

	if (c->route.version && !find_version(c, &one))
		return;
	st = model_statuses(c->model, &n);
	put_model_status_list(&b, st, n, c->route.version, DIALECT_TFS);
	free(st);
	reply_json(c, 200, &b);
}

/* GET /v1/models/m/labels/l: the status of the version the label points
 * at (TF-Serving); 404 naming the label when the model has no such label. */
static void handle_label_status(api_ctx *c)
{
	es_rollout_report *rep = calloc(1, sizeof(*rep));
	int64_t version = 0;
	es_version_status *st;
	size_t n;
	es_buf b = ES_BUF_INIT;
	int rc;

	if (!rep) {
		es_api_reply_error(c, 503, ES_ENOMEM, "out of memory");
		return;
	}
	rc = es_servable_rollout_report(c->model, rep);
	if (rc) {
		free(rep);
		es_api_fail(c, rc, NULL);
		return;
	}
	for (size_t i = 0; i < rep->n_labels && i < ES_MAX_LABELS; i++)
		if (strcmp(rep->label_names[i], c->route.label) == 0)
			version = rep->label_versions[i];
	free(rep);
	if (!version) {
		es_api_reply_error(c, 404, ES_ENOTFOUND, "model '%s' has no label '%s'",
				   c->route.model, c->route.label);
		return;
	}
	st = model_statuses(c->model, &n);
	put_model_status_list(&b, st, n, version, DIALECT_TFS);
	free(st);
	reply_json(c, 200, &b);
}

static const char *tf_dtype(es_dtype dt)
{
	switch (dt) {
	case ES_DT_FLOAT: return "DT_FLOAT";
	case ES_DT_UINT8: return "DT_UINT8";
	case ES_DT_INT8: return "DT_INT8";
	case ES_DT_UINT16: return "DT_UINT16";
	case ES_DT_INT16: return "DT_INT16";
	case ES_DT_INT32: return "DT_INT32";
	case ES_DT_INT64: return "DT_INT64";
	case ES_DT_STRING: return "DT_STRING";
	case ES_DT_BOOL: return "DT_BOOL";
	case ES_DT_FLOAT16: return "DT_HALF";
	case ES_DT_DOUBLE: return "DT_DOUBLE";
	case ES_DT_UINT32: return "DT_UINT32";
	case ES_DT_UINT64: return "DT_UINT64";
	case ES_DT_BFLOAT16: return "DT_BFLOAT16";
	default: return "DT_INVALID";
	}
}

static void put_tf_tensor_info(es_buf *b, const es_value_info *vi)
{
	put_str(b, vi->name);
	es_buf_puts(b, ":{\"dtype\":\"");
	es_buf_puts(b, tf_dtype(vi->dtype));
	es_buf_puts(b, "\",\"tensor_shape\":{\"dim\":[");
	for (int d = 0; d < vi->ndim; d++) {
		es_buf_printf(b, "%s{\"size\":\"%" PRId64 "\",\"name\":", d ? "," : "",
			      vi->dims[d] < 0 ? (int64_t)-1 : vi->dims[d]);
		put_str(b, vi->dim_params[d] ? vi->dim_params[d] : "");
		es_buf_putc(b, '}');
	}
	es_buf_printf(b, "],\"unknown_rank\":%s},\"name\":",
		      vi->ndim < 0 ? "true" : "false");
	put_str(b, vi->name);
	es_buf_putc(b, '}');
}

static void handle_tfs_metadata(api_ctx *c)
{
	es_version *v = acquire(c);
	es_buf b = ES_BUF_INIT;

	if (!v)
		return;
	es_model *m = es_version_model(v);
	es_buf_puts(&b, "{\"model_spec\":{\"name\":");
	put_str(&b, es_servable_name(c->model));
	es_buf_printf(&b, ",\"signature_name\":\"\",\"version\":\"%" PRId64 "\"},"
		      "\"metadata\":{\"signature_def\":{\"signature_def\":"
		      "{\"serving_default\":{\"inputs\":{",
		      es_version_number(v));
	for (size_t i = 0; i < es_model_num_inputs(m); i++) {
		if (i)
			es_buf_putc(&b, ',');
		put_tf_tensor_info(&b, es_model_input(m, i));
	}
	es_buf_puts(&b, "},\"outputs\":{");
	for (size_t i = 0; i < es_model_num_outputs(m); i++) {
		if (i)
			es_buf_putc(&b, ',');
		put_tf_tensor_info(&b, es_model_output(m, i));
	}
	es_buf_puts(&b, "},\"method_name\":\"tensorflow/serving/predict\"}}}}}");
	es_version_release(v);
	reply_json(c, 200, &b);
}

/* ---- OVMS config and metrics ------------------------------------------------ */

/* The GET /v1/config body (OVMS shape) as a reply with the given status:
 * every model served now, every version with its state. */
static void reply_config(api_ctx *c, int status)
{
	const es_model_list *models = es_server_models(c->h->srv);
	es_buf b = ES_BUF_INIT;

	es_buf_putc(&b, '{');
	for (size_t i = 0; i < models->n; i++) {
		es_servable *m = models->m[i];
		size_t n;
		es_version_status *st = model_statuses(m, &n);

		if (i)
			es_buf_putc(&b, ',');
		put_str(&b, es_servable_name(m));
		es_buf_putc(&b, ':');
		put_model_status_list(&b, st, n, 0, DIALECT_OVMS);
		free(st);
	}
	es_buf_putc(&b, '}');
	reply_json(c, status, &b);
}

static void handle_config(api_ctx *c)
{
	reply_config(c, 200);
}

static void handle_metrics(api_ctx *c)
{
	es_buf b = ES_BUF_INIT;

	if (!c->h->metrics) {
		es_api_reply_error(c, 404, ES_ENOTFOUND,
				   "metrics are disabled (--metrics_enable false)");
		return;
	}
	if (es_metrics_render(c->h->metrics, &b) || b.failed) {
		es_buf_free(&b);
		es_api_reply_error(c, 500, ES_ENOMEM, "could not render the metrics");
		return;
	}
	es_api_reply(c, 200, "text/plain; version=0.0.4; charset=utf-8", &b);
}

/* ---- lifecycle ------------------------------------------------------------- */

/* HTTP status of a failed reload: the configuration is the problem (400)
 * unless the server is shutting down or out of resources. */
static int reload_status_of(int code)
{
	switch (code) {
	case ES_ECANCELED:
	case ES_EUNAVAILABLE:
	case ES_EBUSY:
	case ES_ENOMEM:
		return 503;
	case ES_EINTERNAL:
		return 500;
	default:
		return 400;
	}
}

/* POST /v1/config/reload: 200 nothing changed, 201 something did (both with
 * the GET /v1/config body), 400 a bad configuration (nothing applied). */
void es_api_handle_reload(api_ctx *c)
{
	es_http *h = c->h;
	es_actor who = {"api", c->remote[0] ? c->remote : NULL};
	es_error err = {0};
	bool changed = false;
	int rc = es_server_reload(h->srv, &who, &changed, &err);

	if (rc) {
		es_api_reply_error(c, reload_status_of(rc), rc, "%s",
				   err.msg[0] ? err.msg : es_strerror(rc));
		return;
	}
	c->reload_changed = changed;
	if (changed)
		es_api_model_stats_all(h); /* series for models just added */
	reply_config(c, changed ? 201 : 200);
}

/* POST /v1/admin/models/{m}/rollback: 200 {"model","from","to"}; 409 when
 * no previous version is loaded; 404 unknown model. The serving core holds
 * the model's lifecycle lock only briefly (never during a load), so this
 * runs on the network thread. */
void es_api_handle_rollback(api_ctx *c)
{
	es_actor who = {"api", c->remote[0] ? c->remote : NULL};
	es_rollback_result res = {0, 0};
	es_error err = {0};
	es_buf b = ES_BUF_INIT;
	int rc;

	if (atomic_load(&c->h->draining)) {
		es_api_reply_error(c, 503, ES_ECANCELED, "server is shutting down");
		return;
	}
	if (!c->model && !es_api_resolve_model(c))
		return;
	rc = es_servable_rollback(c->model, &who, &res, &err);
	if (rc == ES_EUNAVAILABLE) {
		es_api_reply_error(c, 409, 0, "%s",
				   err.msg[0] ? err.msg : "no previous version is loaded");
		return;
	}
	if (rc) {
		es_api_fail(c, rc, err.msg);
		return;
	}
	c->rolled_back = true;
	c->rollback_from = res.from;
	c->rollback_to = res.to;
	es_buf_puts(&b, "{\"model\":");
	put_str(&b, es_servable_name(c->model));
	es_buf_printf(&b, ",\"from\":%" PRId64 ",\"to\":%" PRId64 "}", res.from, res.to);
	reply_json(c, 200, &b);
}

void es_api_handle_get(api_ctx *c)
{
	switch (c->route.kind) {
	case R_HEALTH_LIVE:
		es_api_reply(c, 200, NULL, NULL);
		return;
	case R_HEALTH_READY:
		handle_ready(c);
		return;
	case R_SERVER_META:
		handle_server_meta(c);
		return;
	case R_CONFIG:
		handle_config(c);
		return;
	case R_METRICS:
		handle_metrics(c);
		return;
	default:
		break;
	}
	if (!es_api_resolve_model(c))
		return;
	switch (c->route.kind) {
	case R_MODEL_META:
		handle_model_meta(c);
		break;
	case R_MODEL_READY:
		handle_model_ready(c);
		break;
	case R_TFS_STATUS:
		if (c->route.has_label)
			handle_label_status(c);
		else
			handle_tfs_status(c);
		break;
	case R_ADMIN_ROLLOUT:
		es_api_handle_rollout_report(c);
		break;
	case R_TFS_METADATA:
		handle_tfs_metadata(c);
		break;
	default:
		es_api_reply_error(c, 500, ES_EINTERNAL, "no handler for this route");
		break;
	}
}
