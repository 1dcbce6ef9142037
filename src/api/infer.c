/*
 * Inference over HTTP: KServe v2 infer and TF-Serving predict.
 *
 * On the network thread: parse the body (codec.h), match inputs and
 * requested outputs against the model version, compute the deadline,
 * suspend the connection and submit. On the device worker thread, in the
 * completion callback: encode the outputs (they are valid only during the
 * callback) into the context and resume the connection. The network
 * thread then queues the prepared reply (http.c).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"
#include "base/alloc.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/status.h"
#include "api/json_scan.h"

#define NAMES_MAX 200 /* room for a list of names inside a message */

/* "a, b, c" from the model's input or output names, cut to fit. */
static void join_names(char *out, size_t cap, const es_model *m, bool inputs)
{
	size_t n = inputs ? es_model_num_inputs(m) : es_model_num_outputs(m);
	size_t o = 0;

	out[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		const es_value_info *vi = inputs ? es_model_input(m, i) : es_model_output(m, i);
		int w = snprintf(out + o, cap - o, "%s'%s'", i ? ", " : "", vi->name);
		if (w < 0 || (size_t)w >= cap - o) {
			if (cap > 4)
				memcpy(out + cap - 4, "...", 4);
			return;
		}
		o += (size_t)w;
	}
}

static bool parse_size(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (!s || !*s)
		return false;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return false;
		if (__builtin_mul_overflow(v, 10, &v) ||
		    __builtin_add_overflow(v, (uint64_t)(*s - '0'), &v))
			return false;
	}
	*out = v;
	return true;
}

/* An error from a lower layer, prefixed with the model when its message
 * does not name it already. */
static void fail_model(api_ctx *c, int code, const char *msg)
{
	if (!msg || !msg[0])
		msg = es_strerror(code);
	if (strstr(msg, "model '")) {
		es_api_fail(c, code, msg);
		return;
	}
	if (c->version)
		es_api_reply_error(c, es_api_status_of(code), code,
				   "model '%s' version %" PRId64 ": %s", c->route.model,
				   es_version_number(c->version), msg);
	else
		es_api_reply_error(c, es_api_status_of(code), code, "model '%s': %s",
				   c->route.model, msg);
}

static bool alloc_outputs(api_ctx *c, size_t n)
{
	size_t k = n ? n : 1;

	c->out_index = calloc(k, sizeof(*c->out_index));
	c->out_binary = calloc(k, sizeof(*c->out_binary));
	c->outs = calloc(k, sizeof(*c->outs));
	c->n_out = n;
	if (!c->out_index || !c->out_binary || !c->outs) {
		es_api_reply_error(c, 503, ES_ENOMEM, "out of memory");
		return false;
	}
	return true;
}

/* KServe v2: body -> c->v2, c->inputs in model order, output selection. */
/*
 * Binary tensors are used where they lie in the body. The body is placed so
 * the first starts 64-byte aligned, but one after an odd-sized tensor may
 * not be aligned for its element type: kernels read typed pointers, so such
 * inputs are copied once into one aligned block (freed with the request).
 */
static bool align_binary_inputs(api_ctx *c, size_t n_in)
{
	size_t total = 0;
	for (size_t i = 0; i < n_in; i++) {
		const es_tensor *t = &c->inputs[i];
		size_t esz = es_dtype_size(t->dtype);
		if (esz > 1 && ((uintptr_t)t->data % esz) != 0)
			total += (t->nbytes + ES_ALIGN - 1) & ~(size_t)(ES_ALIGN - 1);
	}
	if (!total)
		return true;
	c->input_copy = es_aligned_alloc(total);
	if (!c->input_copy)
		return false;
	size_t off = 0;
	for (size_t i = 0; i < n_in; i++) {
		es_tensor *t = &c->inputs[i];
		size_t esz = es_dtype_size(t->dtype);
		if (esz <= 1 || ((uintptr_t)t->data % esz) == 0)
			continue;
		memcpy(c->input_copy + off, t->data, t->nbytes);
		t->data = c->input_copy + off;
		off += (t->nbytes + ES_ALIGN - 1) & ~(size_t)(ES_ALIGN - 1);
	}
	return true;
}

/* KServe v2, before the version is known: body -> c->v2, request id. */
static bool parse_kserve(api_ctx *c)
{
	const char *model = c->route.model;
	size_t json_len = c->body_len;
	es_error err = {0};
	int rc;

	const char *hl = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND,
						     "Inference-Header-Content-Length");
	if (hl) {
		uint64_t v;
		char shown[96];

		es_api_sanitize(shown, sizeof(shown), hl);
		if (!parse_size(hl, &v)) {
			es_api_reply_error(c, 400, ES_EINVAL,
					   "model '%s': Inference-Header-Content-Length '%s' is not a byte count",
					   model, shown);
			return false;
		}
		if (v > c->body_len) {
			es_api_reply_error(c, 400, ES_EINVAL,
					   "model '%s': Inference-Header-Content-Length %" PRIu64 " is larger than the body (%zu bytes)",
					   model, v, c->body_len);
			return false;
		}
		json_len = (size_t)v;
	}
	rc = es_v2_parse_request(c->body ? c->body : "", c->body_len, json_len,
				 &c->v2, &err);
	if (rc) {
		fail_model(c, rc, err.msg);
		return false;
	}
	c->have_v2 = true;
	if (c->v2.id) {
		snprintf(c->id, sizeof(c->id), "%s", c->v2.id);
		c->id_cut = strlen(c->v2.id) > API_ID_MAX;
	}
	return true;
}

/* KServe v2, with the version chosen: c->inputs in model order, output
 * selection. */
static bool prepare_kserve(api_ctx *c, const es_model *m)
{
	const char *model = c->route.model;
	int64_t ver = es_version_number(c->version);
	char names[NAMES_MAX];

	/* inputs, by name, into model order */
	size_t n_in = es_model_num_inputs(m);
	for (size_t j = 0; j < c->v2.n_inputs; j++) {
		const char *name = c->v2.inputs[j].name;
		char shown[96];

		es_api_sanitize(shown, sizeof(shown), name ? name : "");
		if (!name || es_model_input_index(m, name) < 0) {
			join_names(names, sizeof(names), m, true);
			es_api_reply_error(c, 400, ES_EINVAL,
					   "model '%s' version %" PRId64 " has no input '%s'; its inputs are %s",
					   model, ver, shown, names);
			return false;
		}
		/* duplicates were rejected by the codec */
	}
	c->inputs = calloc(n_in ? n_in : 1, sizeof(*c->inputs));
	if (!c->inputs) {
		es_api_reply_error(c, 503, ES_ENOMEM, "out of memory");
		return false;
	}
	for (size_t i = 0; i < n_in; i++) {
		const es_value_info *vi = es_model_input(m, i);
		const es_v2_tensor *t = NULL;

		for (size_t j = 0; j < c->v2.n_inputs; j++) {
			if (strcmp(c->v2.inputs[j].name, vi->name) == 0) {
				t = &c->v2.inputs[j];
				break;
			}
		}
		if (!t) {
			join_names(names, sizeof(names), m, true);
			es_api_reply_error(c, 400, ES_EINVAL,
					   "model '%s' version %" PRId64 ": input '%s' is missing; the model expects %s",
					   model, ver, vi->name, names);
			return false;
		}
		if (t->dtype != vi->dtype) {
			const char *want = es_v2_datatype_name(vi->dtype);
			es_api_reply_error(c, 400, ES_ETYPE,
					   "model '%s' version %" PRId64 " input '%s': expected datatype %s, got %s",
					   model, ver, vi->name, want ? want : es_dtype_name(vi->dtype),
					   es_v2_datatype_name(t->dtype) ? es_v2_datatype_name(t->dtype)
									   : es_dtype_name(t->dtype));
			return false;
		}
		es_tensor *dst = &c->inputs[i];
		dst->dtype = t->dtype;
		dst->ndim = t->ndim;
		memcpy(dst->dims, t->dims, sizeof(dst->dims));
		dst->data = t->data;
		dst->nbytes = t->nbytes;
	}
	if (!align_binary_inputs(c, n_in)) {
		es_api_reply_error(c, 503, ES_ENOMEM, "out of memory");
		return false;
	}

	/* outputs: all in model order, or the requested ones in their order */
	size_t n_model_out = es_model_num_outputs(m);
	size_t n_out = c->v2.n_outputs ? c->v2.n_outputs : n_model_out;
	if (!alloc_outputs(c, n_out))
		return false;
	for (size_t k = 0; k < n_out; k++) {
		if (!c->v2.n_outputs) {
			c->out_index[k] = k;
			c->out_binary[k] = c->v2.binary_data_output;
		} else {
			const es_v2_output_req *o = &c->v2.outputs[k];
			int idx = o->name ? es_model_output_index(m, o->name) : -1;
			char shown[96];

			es_api_sanitize(shown, sizeof(shown), o->name ? o->name : "");
			if (idx < 0) {
				join_names(names, sizeof(names), m, false);
				es_api_reply_error(c, 400, ES_EINVAL,
						   "model '%s' version %" PRId64 " has no output '%s'; its outputs are %s",
						   model, ver, shown, names);
				return false;
			}
			for (size_t q = 0; q < k; q++) {
				if (c->out_index[q] == (size_t)idx) {
					es_api_reply_error(c, 400, ES_EINVAL,
							   "model '%s': output '%s' is requested twice",
							   model, shown);
					return false;
				}
			}
			c->out_index[k] = (size_t)idx;
			c->out_binary[k] = o->has_binary ? o->binary
							 : c->v2.binary_data_output;
		}
		if (c->out_binary[k])
			c->any_binary = true;
	}
	c->req.inputs = c->inputs;
	c->req.n_inputs = n_in;
	return true;
}

/* TF-Serving predict: body -> c->tfs (tensors in model order). */
static bool prepare_tfs(api_ctx *c, const es_model *m)
{
	size_t n_in = es_model_num_inputs(m);
	es_tfs_input_info *infos = calloc(n_in ? n_in : 1, sizeof(*infos));
	es_error err = {0};
	int rc;

	if (!infos) {
		es_api_reply_error(c, 503, ES_ENOMEM, "out of memory");
		return false;
	}
	for (size_t i = 0; i < n_in; i++) {
		const es_value_info *vi = es_model_input(m, i);
		infos[i].name = vi->name;
		infos[i].dtype = vi->dtype;
		infos[i].ndim = vi->ndim;
	}
	rc = es_tfs_parse_predict(c->body ? c->body : "", c->body_len, infos, n_in,
				  &c->tfs, &err);
	free(infos);
	if (rc) {
		fail_model(c, rc, err.msg);
		return false;
	}
	c->have_tfs = true;

	size_t n_out = es_model_num_outputs(m);
	if (!alloc_outputs(c, n_out))
		return false;
	for (size_t k = 0; k < n_out; k++)
		c->out_index[k] = k;
	c->req.inputs = c->tfs.tensors;
	c->req.n_inputs = c->tfs.n_tensors;
	return true;
}

/* Absolute deadline: --default_timeout_ms, lowered (never raised) by the
 * KServe "timeout" parameter in microseconds. 0 = none. */
static uint64_t deadline_of(const api_ctx *c)
{
	uint64_t timeout_ns = 0, t;
	int64_t ms = c->h->cfg->default_timeout_ms;

	if (ms > 0 && __builtin_mul_overflow((uint64_t)ms, 1000000ull, &timeout_ns))
		timeout_ns = UINT64_MAX / 2;
	if (c->have_v2 && c->v2.timeout_us > 0) {
		if (__builtin_mul_overflow((uint64_t)c->v2.timeout_us, 1000ull, &t))
			t = UINT64_MAX / 2;
		if (!timeout_ns || t < timeout_ns)
			timeout_ns = t;
	}
	if (!timeout_ns)
		return 0;
	if (__builtin_add_overflow(c->t_recv_ns, timeout_ns, &t))
		return 0;
	return t;
}

/* ---- completion (device worker thread) ----------------------------------- */

static void encode_reply(api_ctx *c, const es_tensor *outputs, size_t n_outputs)
{
	const es_model *m = es_version_model(c->version);
	uint64_t t0 = es_now_ns();
	es_buf b = ES_BUF_INIT;
	size_t json_len = 0;
	int rc;

	for (size_t k = 0; k < c->n_out; k++) {
		size_t idx = c->out_index[k];
		if (idx >= n_outputs) {
			es_api_reply_error(c, 500, ES_EINTERNAL,
					   "model '%s': the run returned %zu outputs, expected %zu",
					   c->route.model, n_outputs, es_model_num_outputs(m));
			return;
		}
		c->outs[k].name = es_model_output(m, idx)->name;
		c->outs[k].tensor = &outputs[idx];
		c->outs[k].binary = c->out_binary[k];
	}
	if (c->api == API_KSERVE)
		rc = es_v2_encode_response(&b, &json_len, es_servable_name(c->model),
					   es_version_number(c->version), c->v2.id,
					   c->resp_params ? c->resp_params : c->v2.parameters,
					   c->outs, c->n_out);
	else
		rc = es_tfs_encode_predict(&b, c->tfs.columnar, c->outs, c->n_out);
	c->encode_ns = es_now_ns() - t0;
	if (rc || b.failed) {
		es_buf_free(&b);
		es_api_reply_error(c, rc == ES_ENOMEM || b.failed ? 503 : 500,
				   rc ? rc : ES_ENOMEM,
				   "model '%s' version %" PRId64 ": cannot encode the outputs (%s)",
				   c->route.model, es_version_number(c->version),
				   es_strerror(rc ? rc : ES_ENOMEM));
		return;
	}
	if (c->api == API_KSERVE && c->any_binary) {
		c->resp_binary = true;
		c->resp_json_len = json_len;
		es_api_reply(c, 200, "application/octet-stream", &b);
	} else {
		es_api_reply(c, 200, "application/json", &b);
	}
}

static void infer_done(es_request *r, const es_tensor *outputs, size_t n_outputs)
{
	api_ctx *c = r->user;
	struct MHD_Connection *conn = c->conn;

	if (r->status == 0 && outputs)
		encode_reply(c, outputs, n_outputs);
	else
		fail_model(c, r->status ? r->status : r->err.code, r->err.msg);
	/* The last touch of c on this thread: once resumed, the network
	 * thread sends the reply and may free c. */
	MHD_resume_connection(conn);
}

/* ---- choosing the version: labels, canary arm, shadow -------------------- */

/* What a request says about its version besides the URL. */
typedef struct route_hints {
	char label[API_LABEL_MAX + 1];
	bool has_label;
	char key[API_USER_KEY_MAX + 1]; /* the canary's user key */
	size_t key_len;
	bool has_key;
} route_hints;

/* Decoded copy of a JSON string token into out (cap bytes with the NUL);
 * false when it does not fit. */
static bool js_str_copy(const es_js_str *str, char *out, size_t cap, size_t *len)
{
	char *tmp;
	size_t n;

	if (!str->esc) {
		if (str->n >= cap)
			return false;
		memcpy(out, str->s, str->n);
		out[str->n] = '\0';
		*len = str->n;
		return true;
	}
	tmp = malloc(str->n + 1);
	if (!tmp)
		return false;
	n = es_js_unescape(str, tmp);
	if (n >= cap) {
		free(tmp);
		return false;
	}
	memcpy(out, tmp, n);
	out[n] = '\0';
	free(tmp);
	*len = n;
	return true;
}

/* An integer token: -?[0-9]+ (no fraction, no exponent). */
static bool integer_token(const char *s, size_t n)
{
	size_t i = 0;

	if (n && s[0] == '-')
		i = 1;
	if (i == n)
		return false;
	for (; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return true;
}

/*
 * Reads "version_label" and the canary's user key parameter (key_param,
 * "" for none) from the KServe request "parameters" (JSON text the codec
 * has validated). The key is a string or an integer (its decimal text, so
 * 42 and "42" are the same user). Prepares a 400 and returns false for a
 * value of the wrong kind, a bad label name or an oversized key.
 */
static bool hints_from_params(api_ctx *c, const char *key_param, route_hints *hn)
{
	const char *text = c->v2.parameters;
	es_error err = {0};
	es_js js;
	es_js_str key, val;
	bool first = true;
	char shown[96];
	int rc;

	if (!text)
		return true;
	es_js_init(&js, text, strlen(text), &err);
	if ((rc = es_js_obj_begin(&js)))
		goto bad_json;
	while ((rc = es_js_obj_next(&js, &first, &key)) > 0) {
		if (es_js_str_eq(&key, "version_label")) {
			size_t n;

			if (es_js_peek(&js) != '"') {
				es_api_reply_error(c, 400, ES_EINVAL,
						   "model '%s': parameter 'version_label' must be a string",
						   c->route.model);
				return false;
			}
			if ((rc = es_js_string(&js, &val)))
				goto bad_json;
			if (!js_str_copy(&val, hn->label, sizeof(hn->label), &n) ||
			    !es_api_label_ok(hn->label, n)) {
				char raw[API_LABEL_MAX * 2 + 8];
				size_t cut = val.n < sizeof(raw) - 1 ? val.n : sizeof(raw) - 1;

				memcpy(raw, val.s, cut);
				raw[cut] = '\0';
				es_api_sanitize(shown, sizeof(shown), raw);
				es_api_reply_error(c, 400, ES_EINVAL,
						   "model '%s': invalid label '%s' in parameter 'version_label': expected 1 to %d letters, digits or '_'",
						   c->route.model, shown, API_LABEL_MAX);
				return false;
			}
			hn->has_label = true;
		} else if (key_param[0] && es_js_str_eq(&key, key_param)) {
			int ch = es_js_peek(&js);

			es_api_sanitize(shown, sizeof(shown), key_param);
			if (ch == '"') {
				if ((rc = es_js_string(&js, &val)))
					goto bad_json;
				if (!js_str_copy(&val, hn->key, sizeof(hn->key), &hn->key_len)) {
					es_api_reply_error(c, 400, ES_EINVAL,
							   "model '%s': parameter '%s' is longer than %d bytes",
							   c->route.model, shown, API_USER_KEY_MAX);
					return false;
				}
			} else if (ch == '-' || (ch >= '0' && ch <= '9')) {
				const char *num;
				size_t n;

				if ((rc = es_js_number(&js, &num, &n)))
					goto bad_json;
				if (!integer_token(num, n) || n > API_USER_KEY_MAX) {
					es_api_reply_error(c, 400, ES_EINVAL,
							   "model '%s': parameter '%s' must be a string or an integer, got %.*s",
							   c->route.model, shown,
							   (int)(n < 32 ? n : 32), num);
					return false;
				}
				memcpy(hn->key, num, n);
				hn->key[n] = '\0';
				hn->key_len = n;
			} else {
				es_api_reply_error(c, 400, ES_EINVAL,
						   "model '%s': parameter '%s' must be a string or an integer",
						   c->route.model, shown);
				return false;
			}
			/* an empty key is no key: such requests go where keyless
			 * ones go */
			hn->has_key = hn->key_len > 0;
		} else if ((rc = es_js_skip(&js))) {
			goto bad_json;
		}
	}
	if (rc == 0)
		return true;
bad_json:
	/* cannot happen for text the codec accepted; kept as a real check */
	es_api_reply_error(c, 400, ES_EPARSE, "model '%s': request 'parameters': %s",
			   c->route.model, err.msg[0] ? err.msg : "malformed JSON");
	return false;
}

/*
 * Gathers the label and user key of a request: the label from the URL
 * (TF-Serving /labels/l) or the KServe "version_label" parameter; the key
 * from the model's key header (case-insensitive) or else its KServe
 * parameter. Prepares an error reply and returns false on bad input.
 */
static bool gather_hints(api_ctx *c, route_hints *hn)
{
	char header[128], param[128];
	const char *hv = NULL;

	memset(hn, 0, sizeof(*hn));
	if (c->route.has_label) {
		snprintf(hn->label, sizeof(hn->label), "%s", c->route.label);
		hn->has_label = true;
	}
	es_servable_user_key_source(c->model, header, sizeof(header), param,
				    sizeof(param));
	if (header[0])
		hv = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, header);
	if (hv && hv[0]) {
		size_t n = strlen(hv);
		char shown[96];

		if (n > API_USER_KEY_MAX) {
			es_api_sanitize(shown, sizeof(shown), header);
			es_api_reply_error(c, 400, ES_EINVAL,
					   "model '%s': header '%s' is longer than %d bytes",
					   c->route.model, shown, API_USER_KEY_MAX);
			return false;
		}
		memcpy(hn->key, hv, n + 1);
		hn->key_len = n;
		hn->has_key = true;
	}
	if (c->api != API_KSERVE)
		return true;
	/* the header wins over the parameter; the label is read either way */
	route_hints from_params;
	memset(&from_params, 0, sizeof(from_params));
	if (!hints_from_params(c, hn->has_key ? "" : param, &from_params))
		return false;
	if (from_params.has_label && !hn->has_label) {
		memcpy(hn->label, from_params.label, sizeof(hn->label));
		hn->has_label = true;
	}
	if (from_params.has_key) {
		memcpy(hn->key, from_params.key, from_params.key_len + 1);
		hn->key_len = from_params.key_len;
		hn->has_key = true;
	}
	return true;
}

/*
 * The KServe reply's "parameters": the request's own (echoed, as before)
 * with "arm" set to this request's arm. Members of the request called
 * "arm" are replaced. False when memory ran out.
 */
static bool build_reply_params(api_ctx *c)
{
	const char *text = c->v2.parameters;
	es_buf b = ES_BUF_INIT;
	bool first = true, any = false;
	es_error err = {0};
	es_js_str key;
	es_js js;
	int rc = 0;

	es_buf_putc(&b, '{');
	if (text) {
		es_js_init(&js, text, strlen(text), &err);
		rc = es_js_obj_begin(&js);
		while (!rc && (rc = es_js_obj_next(&js, &first, &key)) > 0) {
			es_js_peek(&js); /* to the value's first byte */
			const char *v0 = js.p;
			if ((rc = es_js_skip(&js)))
				break;
			rc = 0;
			if (es_js_str_eq(&key, "arm"))
				continue;
			if (any)
				es_buf_putc(&b, ',');
			/* the key as written, quotes included */
			es_buf_append(&b, key.s - 1, key.n + 2);
			es_buf_putc(&b, ':');
			es_buf_append(&b, v0, (size_t)(js.p - v0));
			any = true;
		}
	}
	if (rc < 0) {
		/* not an object we can read: answer with the arm alone */
		es_buf_reset(&b);
		es_buf_putc(&b, '{');
		any = false;
	}
	es_buf_printf(&b, "%s\"arm\":\"%s\"}", any ? "," : "", es_arm_name(c->req.arm));
	if (b.failed) {
		es_buf_free(&b);
		return false;
	}
	size_t len;
	c->resp_params = es_buf_steal(&b, &len);
	return c->resp_params != NULL;
}

/* Chooses the version (es_servable_route): c->version, the arm and a shadow
 * reference in c->req. Prepares an error reply and returns false. */
static bool route_request(api_ctx *c)
{
	route_hints hn;
	es_route_in in;
	es_route_out out = {NULL, ES_ARM_DEFAULT, NULL};
	es_error err = {0};
	int rc;

	if (!gather_hints(c, &hn))
		return false;
	memset(&in, 0, sizeof(in));
	in.version = c->route.version;
	in.label = hn.has_label ? hn.label : NULL;
	in.user_key = hn.has_key ? hn.key : NULL;
	in.user_key_len = hn.has_key ? hn.key_len : 0;
	in.request_id = c->id;
	rc = es_servable_route(c->model, &in, &out, &err);
	if (rc) {
		c->version = NULL;
		fail_model(c, rc, err.msg);
		return false;
	}
	c->version = out.version;
	c->req.arm = out.arm;
	c->req.shadow = out.shadow;
	c->routed = true;
	if (c->api == API_KSERVE && !build_reply_params(c)) {
		es_api_reply_error(c, 503, ES_ENOMEM, "out of memory");
		return false;
	}
	return true;
}

/* Drops the shadow reference of a request that will not run. */
static void drop_shadow(api_ctx *c)
{
	if (c->req.shadow) {
		es_version_release(c->req.shadow);
		c->req.shadow = NULL;
	}
}

/* ---- entry points -------------------------------------------------------- */

bool es_api_infer_start(api_ctx *c)
{
	es_http *h = c->h;
	es_error err = {0};
	uint64_t t0 = es_now_ns();
	int rc;

	/* KServe: the body may name a label or carry the user key, so it is
	 * parsed before the version is chosen; the inputs are matched after. */
	if (c->api == API_KSERVE && !parse_kserve(c)) {
		c->parse_ns = es_now_ns() - t0;
		return false;
	}
	if (!route_request(c)) {
		c->parse_ns = es_now_ns() - t0;
		drop_shadow(c);
		return false;
	}
	const es_model *m = es_version_model(c->version);
	if (c->api == API_KSERVE ? !prepare_kserve(c, m) : !prepare_tfs(c, m)) {
		c->parse_ns = es_now_ns() - t0;
		drop_shadow(c);
		return false;
	}
	c->parse_ns = es_now_ns() - t0;

	c->req.version = c->version;
	c->req.deadline_ns = deadline_of(c);
	c->req.complete = infer_done;
	c->req.user = c;
	c->req.id = c->id;

	atomic_store(&c->phase, PH_WAITING);
	MHD_suspend_connection(c->conn);
	rc = es_server_submit(h->srv, &c->req, &err);
	if (rc) {
		/* refused at once (bad input, queue full, shutting down): the
		 * shadow reference is still ours; the reply is ready, resume to
		 * send it */
		drop_shadow(c);
		fail_model(c, rc, err.msg);
		MHD_resume_connection(c->conn);
	}
	return true;
}

void es_api_infer_cleanup(api_ctx *c)
{
	if (c->have_v2)
		es_v2_request_free(&c->v2);
	if (c->have_tfs)
		es_tfs_request_free(&c->tfs);
	c->have_v2 = c->have_tfs = false;
	free(c->inputs);
	es_aligned_free(c->input_copy);
	c->input_copy = NULL;
	free(c->out_index);
	free(c->out_binary);
	free(c->outs);
	c->inputs = NULL;
	c->out_index = NULL;
	c->out_binary = NULL;
	c->outs = NULL;
	free(c->resp_params);
	c->resp_params = NULL;
	if (c->version) {
		es_version_release(c->version);
		c->version = NULL;
	}
}
