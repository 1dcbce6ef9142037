/*
 * The rollout admin endpoints (docs/rollouts.md):
 *   POST /v1/admin/models/{m}/labels  {"label": "canary", "version": 2}
 *   POST /v1/admin/models/{m}/canary  {"fraction_bp": 500, "killed": false,
 *                                      "version": 3}   (any non-empty subset)
 *   POST /v1/admin/models/{m}/kill, /unkill
 *   GET  /v1/admin/models/{m}/rollout
 * They run on the network thread: every change is an atomic swap or flag
 * in the serving core (src/serving/rollout.c), never a load. Bodies are
 * small JSON objects (at most API_ADMIN_BODY_MAX bytes); unknown keys and
 * values of the wrong kind are 400 naming the field.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"
#include "api/json_scan.h"
#include "base/buf.h"
#include "base/status.h"

/* ---- body parsing ---------------------------------------------------------- */

/* An integer value in [lo, hi]; 400 naming field otherwise. */
static bool body_int(api_ctx *c, es_js *js, const char *field, int64_t lo,
		     int64_t hi, int64_t *out)
{
	const char *s;
	size_t n;
	int64_t v = 0;
	bool neg = false;
	size_t i = 0;

	if (es_js_peek(js) != '-' && (es_js_peek(js) < '0' || es_js_peek(js) > '9'))
		goto bad;
	if (es_js_number(js, &s, &n))
		goto bad;
	if (n && s[0] == '-') {
		neg = true;
		i = 1;
	}
	if (i == n)
		goto bad;
	for (; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			goto bad;
		if (__builtin_mul_overflow(v, 10, &v) ||
		    __builtin_add_overflow(v, s[i] - '0', &v))
			goto bad;
	}
	if (neg)
		v = -v;
	if (v < lo || v > hi)
		goto bad;
	*out = v;
	return true;
bad:
	es_api_reply_error(c, 400, ES_EINVAL,
			   "model '%s': \"%s\" must be an integer from %" PRId64 " to %" PRId64,
			   c->route.model, field, lo, hi);
	return false;
}

/* Opens the body's top-level object; 400 when the body is not one. */
static bool body_open(api_ctx *c, es_js *js, es_error *err)
{
	es_js_init(js, c->body ? c->body : "", c->body_len, err);
	if (es_js_peek(js) != '{') {
		es_api_reply_error(c, 400, ES_EINVAL,
				   "model '%s': the body must be a JSON object", c->route.model);
		return false;
	}
	if (es_js_obj_begin(js)) {
		es_api_reply_error(c, 400, ES_EPARSE, "model '%s': %s", c->route.model,
				   err->msg);
		return false;
	}
	return true;
}

/* After the members: trailing bytes, or a parse error in the loop. */
static bool body_close(api_ctx *c, es_js *js, int rc, es_error *err)
{
	if (rc == 0)
		rc = es_js_finish(js);
	if (rc) {
		es_api_reply_error(c, 400, ES_EPARSE, "model '%s': %s", c->route.model,
				   err->msg[0] ? err->msg : "malformed JSON body");
		return false;
	}
	return true;
}

static void unknown_key(api_ctx *c, const es_js_str *key, const char *expected)
{
	char raw[80], shown[96];
	size_t n = key->n < sizeof(raw) - 1 ? key->n : sizeof(raw) - 1;

	memcpy(raw, key->s, n);
	raw[n] = '\0';
	es_api_sanitize(shown, sizeof(shown), raw);
	es_api_reply_error(c, 400, ES_EINVAL, "model '%s': unknown key \"%s\"; expected %s",
			   c->route.model, shown, expected);
}

/* HTTP status of a rollout change the serving core refused. */
static void fail_change(api_ctx *c, int rc, const es_error *err)
{
	const char *msg = err->msg[0] ? err->msg : es_strerror(rc);

	if (rc == ES_EUNAVAILABLE)
		es_api_reply_error(c, 409, rc, "%s", msg);
	else
		es_api_fail(c, rc, msg);
}

/* ---- replies --------------------------------------------------------------- */

static void put_str(es_buf *b, const char *s)
{
	es_buf_json_str(b, s, strlen(s));
}

static void reply_json(api_ctx *c, es_buf *b)
{
	if (b->failed) {
		es_buf_free(b);
		es_api_reply_error(c, 500, ES_ENOMEM, "out of memory building the reply");
		return;
	}
	es_api_reply(c, 200, "application/json", b);
}

static void put_ms(es_buf *b, const char *name, double seconds)
{
	es_buf_printf(b, ",\"%s\":%.3f", name, seconds * 1e3);
}

/* The report of es_servable_rollout_report as JSON (docs/rollouts.md). */
static void put_report(es_buf *b, const char *model, const es_rollout_report *r)
{
	es_buf_puts(b, "{\"model\":");
	put_str(b, model);
	es_buf_puts(b, ",\"labels\":{");
	for (size_t i = 0; i < r->n_labels && i < ES_MAX_LABELS; i++) {
		if (i)
			es_buf_putc(b, ',');
		put_str(b, r->label_names[i]);
		es_buf_printf(b, ":%" PRId64, r->label_versions[i]);
	}
	es_buf_puts(b, "},\"canary\":");
	if (r->canary) {
		es_buf_printf(b, "{\"version\":%" PRId64 ",\"fraction_bp\":%d,\"killed\":%s,"
			      "\"kill_reason\":",
			      r->arms[ES_ARM_CANARY].version, r->fraction_bp,
			      r->killed ? "true" : "false");
		put_str(b, r->killed ? r->kill_reason : "");
		es_buf_putc(b, '}');
	} else {
		es_buf_puts(b, "null");
	}
	es_buf_printf(b, ",\"window_seconds\":%d,\"arms\":{", r->window_s);
	for (int a = 0; a < ES_ARM_COUNT; a++) {
		const es_arm_report *ar = &r->arms[a];

		if (a)
			es_buf_putc(b, ',');
		put_str(b, es_arm_name((es_arm)a));
		es_buf_printf(b, ":{\"version\":%" PRId64 ",\"requests\":%" PRIu64
			      ",\"errors\":%" PRIu64 ",\"error_rate\":%.6f",
			      ar->version, ar->requests, ar->errors, ar->error_rate);
		put_ms(b, "p50_ms", ar->p50_s);
		put_ms(b, "p95_ms", ar->p95_s);
		put_ms(b, "p99_ms", ar->p99_s);
		es_buf_putc(b, '}');
	}
	es_buf_puts(b, "},\"shadow\":");
	if (r->shadow)
		es_buf_printf(b, "{\"version\":%" PRId64 ",\"fraction_bp\":%d,\"sampled\":%" PRIu64
			      ",\"compared\":%" PRIu64 ",\"divergent\":%" PRIu64
			      ",\"dropped\":%" PRIu64 "}",
			      r->shadow_version, r->shadow_fraction_bp, r->shadow_sampled,
			      r->shadow_compared, r->shadow_divergent, r->shadow_dropped);
	else
		es_buf_puts(b, "null");
	es_buf_putc(b, '}');
}

/* 200 with the model's rollout report. */
static void reply_report(api_ctx *c)
{
	es_rollout_report *r = calloc(1, sizeof(*r));
	es_buf b = ES_BUF_INIT;
	int rc;

	if (!r) {
		es_api_reply_error(c, 503, ES_ENOMEM, "out of memory");
		return;
	}
	rc = es_servable_rollout_report(c->model, r);
	if (rc) {
		free(r);
		es_api_fail(c, rc, NULL);
		return;
	}
	put_report(&b, es_servable_name(c->model), r);
	free(r);
	reply_json(c, &b);
}

/* ---- the endpoints ----------------------------------------------------------- */

/* POST .../labels {"label": "canary", "version": 2}: version 0 or null
 * removes the label. */
static void handle_labels(api_ctx *c, const es_actor *who)
{
	char label[API_LABEL_MAX + 1] = "";
	bool has_label = false, has_version = false;
	int64_t version = 0;
	es_error err = {0};
	es_js_str key, val;
	bool first = true;
	es_js js;
	es_buf b = ES_BUF_INIT;
	int rc;

	if (!body_open(c, &js, &err))
		return;
	while ((rc = es_js_obj_next(&js, &first, &key)) > 0) {
		if (es_js_str_eq(&key, "label")) {
			char raw[API_LABEL_MAX * 2 + 8], shown[96];
			size_t n;

			if (es_js_peek(&js) != '"') {
				es_api_reply_error(c, 400, ES_EINVAL,
						   "model '%s': \"label\" must be a string",
						   c->route.model);
				return;
			}
			if ((rc = es_js_string(&js, &val)))
				break;
			n = val.n < sizeof(raw) - 1 ? val.n : sizeof(raw) - 1;
			memcpy(raw, val.s, n);
			raw[n] = '\0';
			if (val.esc || !es_api_label_ok(val.s, val.n)) {
				es_api_sanitize(shown, sizeof(shown), raw);
				es_api_reply_error(c, 400, ES_EINVAL,
						   "model '%s': invalid \"label\" '%s': expected 1 to %d letters, digits or '_'",
						   c->route.model, shown, API_LABEL_MAX);
				return;
			}
			memcpy(label, val.s, val.n);
			label[val.n] = '\0';
			has_label = true;
		} else if (es_js_str_eq(&key, "version")) {
			has_version = true;
			if (es_js_peek(&js) == 'n') {
				if ((rc = es_js_skip(&js)))
					break;
				version = 0;
			} else if (!body_int(c, &js, "version", 0, INT64_MAX, &version)) {
				return;
			}
		} else {
			unknown_key(c, &key, "\"label\" and \"version\"");
			return;
		}
	}
	if (!body_close(c, &js, rc, &err))
		return;
	if (!has_label || !has_version) {
		es_api_reply_error(c, 400, ES_EINVAL,
				   "model '%s': the body needs \"%s\" (expected {\"label\": \"canary\", \"version\": 2}; version 0 or null removes the label)",
				   c->route.model, has_label ? "version" : "label");
		return;
	}
	rc = es_servable_set_label(c->model, label, version, who, &err);
	if (rc) {
		fail_change(c, rc, &err);
		return;
	}
	snprintf(c->admin_detail, sizeof(c->admin_detail), "label %s -> %" PRId64,
		 label, version);
	es_buf_puts(&b, "{\"model\":");
	put_str(&b, es_servable_name(c->model));
	es_buf_puts(&b, ",\"label\":");
	put_str(&b, label);
	if (version)
		es_buf_printf(&b, ",\"version\":%" PRId64 "}", version);
	else
		es_buf_puts(&b, ",\"version\":null}");
	reply_json(c, &b);
}

/* POST .../canary {"fraction_bp": 500, "killed": false, "version": 3}. */
static void handle_canary(api_ctx *c, const es_actor *who)
{
	es_canary_update u;
	es_error err = {0};
	es_js_str key;
	bool first = true;
	es_js js;
	int64_t v;
	int rc;

	memset(&u, 0, sizeof(u));
	if (!body_open(c, &js, &err))
		return;
	while ((rc = es_js_obj_next(&js, &first, &key)) > 0) {
		if (es_js_str_eq(&key, "fraction_bp")) {
			if (!body_int(c, &js, "fraction_bp", 0, 10000, &v))
				return;
			u.set_fraction = true;
			u.fraction_bp = (int)v;
		} else if (es_js_str_eq(&key, "version")) {
			if (!body_int(c, &js, "version", 1, INT64_MAX, &v))
				return;
			u.set_version = true;
			u.version = v;
		} else if (es_js_str_eq(&key, "killed")) {
			int ch = es_js_peek(&js);
			if (ch != 't' && ch != 'f') {
				es_api_reply_error(c, 400, ES_EINVAL,
						   "model '%s': \"killed\" must be true or false",
						   c->route.model);
				return;
			}
			if ((rc = es_js_bool(&js, &u.killed)))
				break;
			u.set_killed = true;
		} else {
			unknown_key(c, &key, "\"fraction_bp\", \"killed\" and \"version\"");
			return;
		}
	}
	if (!body_close(c, &js, rc, &err))
		return;
	if (!u.set_fraction && !u.set_killed && !u.set_version) {
		es_api_reply_error(c, 400, ES_EINVAL,
				   "model '%s': the body sets nothing; give any of \"fraction_bp\" (0..10000), \"killed\" (true/false), \"version\"",
				   c->route.model);
		return;
	}
	rc = es_servable_canary_update(c->model, &u, who, &err);
	if (rc) {
		fail_change(c, rc, &err);
		return;
	}
	int o = 0;
	if (u.set_fraction)
		o += snprintf(c->admin_detail + o, sizeof(c->admin_detail) - (size_t)o,
			      "fraction_bp %d ", u.fraction_bp);
	if (u.set_killed && o < (int)sizeof(c->admin_detail))
		o += snprintf(c->admin_detail + o, sizeof(c->admin_detail) - (size_t)o,
			      "killed %s ", u.killed ? "true" : "false");
	if (u.set_version && o < (int)sizeof(c->admin_detail))
		snprintf(c->admin_detail + o, sizeof(c->admin_detail) - (size_t)o,
			 "version %" PRId64, u.version);
	reply_report(c);
}

/* POST .../kill and .../unkill: the kill switch on or off. */
static void handle_kill(api_ctx *c, const es_actor *who, bool killed)
{
	es_canary_update u;
	es_error err = {0};
	int rc;

	memset(&u, 0, sizeof(u));
	u.set_killed = true;
	u.killed = killed;
	rc = es_servable_canary_update(c->model, &u, who, &err);
	if (rc) {
		fail_change(c, rc, &err);
		return;
	}
	snprintf(c->admin_detail, sizeof(c->admin_detail), "killed %s",
		 killed ? "true" : "false");
	reply_report(c);
}

void es_api_handle_rollout_admin(api_ctx *c)
{
	es_actor who = {"api", c->remote[0] ? c->remote : NULL};

	if (atomic_load(&c->h->draining)) {
		es_api_reply_error(c, 503, ES_ECANCELED, "server is shutting down");
		return;
	}
	if (!c->model && !es_api_resolve_model(c))
		return;
	switch (c->route.kind) {
	case R_ADMIN_LABELS:
		handle_labels(c, &who);
		break;
	case R_ADMIN_CANARY:
		handle_canary(c, &who);
		break;
	case R_ADMIN_KILL:
		handle_kill(c, &who, true);
		break;
	case R_ADMIN_UNKILL:
		handle_kill(c, &who, false);
		break;
	default:
		es_api_reply_error(c, 500, ES_EINTERNAL, "no handler for this route");
		break;
	}
}

void es_api_handle_rollout_report(api_ctx *c)
{
	reply_report(c);
}
