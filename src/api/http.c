/*
 * libmicrohttpd glue: the daemon (epoll thread pool, suspend/resume), the
 * per-request context, body accumulation under the size limit, replies
 * with their headers, request metrics, the JSON-lines access log and the
 * lifecycle thread that runs reloads and rollbacks off the network threads.
 *
 * The request life cycle is described in api_int.h.
 */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "api/api_int.h"
#include "api/http.h"
#include "base/alloc.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/status.h"
#include "obs/log.h"

/* Per-connection memory microhttpd may use for headers and read buffers. */
#define CONN_MEMORY_LIMIT ((size_t)32 * 1024)
/* Alignment of the binary part of a request body. */
#define BODY_ALIGN ((size_t)64)
/* First allocation for a body of unknown length (chunked upload). */
#define BODY_INITIAL_CAP ((size_t)64 * 1024)
/* A body that is not wanted (the reply is an error decided from the
 * headers, or a chunked upload passed the limit) is read and dropped up to
 * this much, so the reply can be sent and the connection kept; beyond it
 * the connection is closed without a reply. */
#define DISCARD_MAX ((size_t)16 << 20)

static const char *const req_labels[] = {"model", "version", "api", "arm",
					  "status_class", "reason", NULL};
static const char *const model_api_labels[] = {"model", "api", NULL};
static const char *const model_api_arm_labels[] = {"model", "api", "arm", NULL};
static const char *const build_labels[] = {"version", "onednn", "openblas", NULL};
static const char *const api_names[] = {"", "kserve", "tfs"};

/* ---- status mapping ------------------------------------------------------ */

int es_api_status_of(int code)
{
	switch (code) {
	case ES_OK:
		return 200;
	case ES_EINVAL:
	case ES_EPARSE:
	case ES_ETYPE:
	case ES_ESHAPE:
	case ES_ERANGE:
	case ES_EUNSUPPORTED:
		return 400;
	case ES_ENOTFOUND:
		return 404;
	case ES_ETOOLARGE:
		return 413;
	case ES_EUNAVAILABLE:
	case ES_EBUSY:
	case ES_ECANCELED:
		return 503;
	case ES_ETIMEDOUT:
		return 504;
	default:
		return 500;
	}
}

static const char *reason_of(int status, int code)
{
	if (status < 400)
		return "ok";
	switch (code) {
	case ES_EBUSY:
		return "queue_full";
	case ES_ECANCELED:
		return "cancelled";
	case ES_ETIMEDOUT:
		return "deadline_exceeded";
	case ES_ETOOLARGE:
		return "too_large";
	case ES_EUNAVAILABLE:
		return "unavailable";
	case ES_ENOTFOUND:
		return "not_found";
	default:
		break;
	}
	switch (status) {
	case 404:
		return "not_found";
	case 409:
		return "conflict";
	case 413:
		return "too_large";
	case 503:
		return "unavailable";
	case 504:
		return "deadline_exceeded";
	default:
		return status < 500 ? "bad_request" : "internal";
	}
}

/* ---- replies ------------------------------------------------------------- */

void es_api_reply(api_ctx *c, int status, const char *content_type,
		  es_buf *body)
{
	es_buf_free(&c->resp);
	if (body) {
		c->resp = *body;
		*body = (es_buf)ES_BUF_INIT;
	}
	c->status = status;
	c->content_type = content_type;
	if (status < 400)
		c->code = 0;
	atomic_store(&c->phase, PH_READY);
}

static void reply_error_msg(api_ctx *c, int status, int code, const char *msg)
{
	es_buf b = ES_BUF_INIT;

	snprintf(c->errmsg, sizeof(c->errmsg), "%s", msg);
	c->resp_binary = false;
	if (es_encode_error(&b, msg) || b.failed) {
		es_buf_reset(&b);
		es_buf_puts(&b, "{\"error\":\"internal error\"}");
	}
	es_api_reply(c, status, "application/json", &b);
	c->code = code;
}

void es_api_reply_error(api_ctx *c, int status, int code, const char *fmt, ...)
{
	char msg[ES_ERROR_MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	reply_error_msg(c, status, code, msg);
}

void es_api_fail(api_ctx *c, int code, const char *msg)
{
	reply_error_msg(c, es_api_status_of(code), code,
			msg && msg[0] ? msg : es_strerror(code));
}

/* ---- metrics and the access log ------------------------------------------ */

static double secs(uint64_t ns)
{
	return (double)ns / 1e9;
}

static void record_request(api_ctx *c, uint64_t now)
{
	es_http *h = c->h;
	uint64_t total_ns = now - c->t_recv_ns;
	const es_request *r = &c->req;
	int64_t version = c->version ? es_version_number(c->version) : c->route.version;
	uint64_t queue_ns = 0, infer_ns = 0;
	bool counted = c->api != API_OTHER;
	es_logrec lr;

	if (r->t_start_ns && r->t_enqueue_ns && r->t_start_ns >= r->t_enqueue_ns)
		queue_ns = r->t_start_ns - r->t_enqueue_ns;
	if (r->t_start_ns && r->t_end_ns >= r->t_start_ns)
		infer_ns = r->t_end_ns - r->t_start_ns;

	if (counted && h->m_requests) {
		char vbuf[24] = "";
		const char *model = c->stats ? es_servable_name(c->model) : "";
		const char *cls = c->status < 300 ? "2xx" : c->status < 500 ? "4xx" : "5xx";

		/* Label values come from the server's own names only, so a
		 * client cannot grow the label space with made-up models. */
		if (c->version)
			snprintf(vbuf, sizeof(vbuf), "%" PRId64, version);
		const char *arm = c->routed ? es_arm_name(c->req.arm) : "";
		const char *values[] = {model, vbuf, api_names[c->api], arm, cls,
					reason_of(c->status, c->code), NULL};
		es_counter_add(es_metric_get(h->m_requests, values), 1);
		if (c->stats) {
			es_histogram_observe(es_api_duration_child(h, c->stats, c->api,
								   c->routed ? (int)c->req.arm : -1),
					     secs(total_ns));
			if (c->parse_ns)
				es_histogram_observe(c->stats->parse[c->api], secs(c->parse_ns));
			if (c->encode_ns && c->status < 400)
				es_histogram_observe(c->stats->encode[c->api],
						     secs(c->encode_ns));
		}
	}

	es_log_level level = (counted || c->status >= 400) ? ES_LOG_INFO : ES_LOG_DEBUG;
	if (!es_log_begin(&lr, level, "request"))
		return;
	es_log_str(&lr, "id", c->id);
	es_log_str(&lr, "method", c->method);
	es_log_str(&lr, "path", c->path);
	if (c->route.has_model)
		es_log_str(&lr, "model", c->route.model);
	if (version)
		es_log_int(&lr, "version", version);
	if (c->routed)
		es_log_str(&lr, "arm", es_arm_name(r->arm));
	if (r->device)
		es_log_str(&lr, "device", r->device);
	if (r->fallback_reason)
		es_log_str(&lr, "fallback", r->fallback_reason);
	else if (c->model && counted)
		es_log_str(&lr, "device", es_servable_device(c->model));
	if (r->t_start_ns)
		es_log_int(&lr, "stream", r->stream);
	es_log_int(&lr, "status", c->status);
	if (c->status >= 400) {
		es_log_str(&lr, "reason", reason_of(c->status, c->code));
		es_log_str(&lr, "error", c->errmsg);
	}
	if (counted) {
		es_log_f64(&lr, "parse_s", secs(c->parse_ns));
		es_log_f64(&lr, "queue_s", secs(queue_ns));
		es_log_f64(&lr, "inference_s", secs(infer_ns));
		es_log_f64(&lr, "encode_s", secs(c->encode_ns));
	}
	es_log_f64(&lr, "total_s", secs(total_ns));
	if (r->t_start_ns) {
		es_log_int(&lr, "t_start", (int64_t)r->t_start_ns);
		es_log_int(&lr, "t_end", (int64_t)r->t_end_ns);
	}
	es_log_int(&lr, "bytes_in", (int64_t)c->body_len);
	es_log_int(&lr, "bytes_out", (int64_t)c->resp.len);
	es_log_end(&lr);
}

static const char *admin_action(api_route_kind k)
{
	switch (k) {
	case R_CONFIG_RELOAD: return "reload";
	case R_MODEL_ROLLBACK: return "rollback";
	case R_ADMIN_LABELS: return "label";
	case R_ADMIN_CANARY: return "canary";
	case R_ADMIN_KILL: return "kill";
	case R_ADMIN_UNKILL: return "unkill";
	default: return "other";
	}
}

/* The "admin" line of a lifecycle or rollout request (docs/lifecycle.md,
 * docs/rollouts.md): what was asked, by whom, and the outcome. */
static void log_admin(const api_ctx *c, uint64_t total_ns)
{
	es_logrec lr;
	/* 503 (shutting down) is routine; an internal failure is not */
	es_log_level level = c->status >= 500 && c->status != 503 ? ES_LOG_WARN
								    : ES_LOG_INFO;

	if (!es_log_begin(&lr, level, "admin"))
		return;
	es_log_str(&lr, "action", admin_action(c->route.kind));
	if (c->route.has_model)
		es_log_str(&lr, "model", c->route.model);
	es_log_str(&lr, "remote", c->remote);
	es_log_str(&lr, "method", c->method);
	es_log_int(&lr, "status", c->status);
	if (c->route.kind == R_CONFIG_RELOAD && c->status < 300)
		es_log_bool(&lr, "changed", c->reload_changed);
	if (c->rolled_back) {
		es_log_int(&lr, "from", c->rollback_from);
		es_log_int(&lr, "to", c->rollback_to);
	}
	if (c->admin_detail[0] && c->status < 300)
		es_log_str(&lr, "change", c->admin_detail);
	if (c->status >= 400)
		es_log_str(&lr, "error", c->errmsg);
	es_log_str(&lr, "id", c->id);
	es_log_f64(&lr, "total_s", secs(total_ns));
	es_log_end(&lr);
}

/* A request id is safe in a header when it is printable ASCII. */
static bool id_header_safe(const char *id)
{
	if (!id[0])
		return false;
	for (const char *p = id; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
			return false;
	return true;
}

/* Queues the prepared reply. Runs on the connection's network thread. */
static enum MHD_Result send_reply(api_ctx *c)
{
	es_http *h = c->h;
	struct MHD_Response *resp;
	enum MHD_Result ret;
	char num[32];
	uint64_t now = es_now_ns();

	record_request(c, now);
	if (es_api_route_is_admin(c->route.kind))
		log_admin(c, now - c->t_recv_ns);
	if (c->resp.len > 0 && !c->resp.failed) {
		size_t len;
		char *data = es_buf_steal(&c->resp, &len);

		resp = MHD_create_response_from_buffer_with_free_callback(len, data, free);
		if (!resp)
			free(data);
	} else {
		resp = MHD_create_response_from_buffer(0, (void *)"",
						       MHD_RESPMEM_PERSISTENT);
	}
	if (!resp)
		return MHD_NO;
	if (c->content_type)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
					c->content_type);
	if (c->resp_binary) {
		snprintf(num, sizeof(num), "%zu", c->resp_json_len);
		MHD_add_response_header(resp, "Inference-Header-Content-Length", num);
	}
	if (!c->id_cut && id_header_safe(c->id))
		MHD_add_response_header(resp, "X-Request-Id", c->id);
	if (c->routed)
		MHD_add_response_header(resp, "X-Edgeserve-Arm", es_arm_name(c->req.arm));
	if (c->status == 503)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1");
	if (c->status == 405 && c->allow)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, c->allow);
	if (atomic_load(&h->draining))
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
	ret = MHD_queue_response(c->conn, (unsigned int)c->status, resp);
	MHD_destroy_response(resp);
	atomic_store(&c->phase, PH_SENT);
	return ret;
}

/* ---- the request context ------------------------------------------------- */

static void set_request_id(api_ctx *c)
{
	es_http *h = c->h;
	const char *hdr = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND,
						      "X-Request-Id");

	if (hdr && hdr[0] && strlen(hdr) <= API_ID_MAX && id_header_safe(hdr)) {
		snprintf(c->id, sizeof(c->id), "%s", hdr);
		return;
	}
	uint64_t n = atomic_fetch_add(&h->next_id, 1);
	snprintf(c->id, sizeof(c->id), "%08" PRIx32 "%08" PRIx64, h->id_prefix, n);
}

/* The client's address as "ip:port" ("[ip]:port" for IPv6), for the
 * lifecycle log lines; "" when microhttpd does not say. */
static void set_remote(api_ctx *c)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(c->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	char host[NI_MAXHOST], port[NI_MAXSERV];
	socklen_t len;

	c->remote[0] = '\0';
	if (!ci || !ci->client_addr)
		return;
	switch (ci->client_addr->sa_family) {
	case AF_INET:
		len = sizeof(struct sockaddr_in);
		break;
	case AF_INET6:
		len = sizeof(struct sockaddr_in6);
		break;
	default:
		return;
	}
	if (getnameinfo(ci->client_addr, len, host, sizeof(host), port, sizeof(port),
			NI_NUMERICHOST | NI_NUMERICSERV) != 0)
		return;
	snprintf(c->remote, sizeof(c->remote),
		 ci->client_addr->sa_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
}

/* The path for logs and messages: printable ASCII, cut to fit. */
static void copy_path(char *out, size_t cap, const char *url)
{
	size_t o = 0;

	for (; *url && o + 1 < cap; url++) {
		unsigned char ch = (unsigned char)*url;
		out[o++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
	}
	out[o] = '\0';
}

static api_ctx *ctx_new(es_http *h, struct MHD_Connection *conn,
			const char *url, const char *method)
{
	api_ctx *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->h = h;
	c->conn = conn;
	c->t_recv_ns = es_now_ns();
	c->method = method;
	copy_path(c->path, sizeof(c->path), url ? url : "");
	atomic_init(&c->phase, PH_RECEIVING);
	c->req.stream = -1;
	set_request_id(c);
	atomic_fetch_add(&h->inflight, 1);
	es_gauge_add(h->inflight_gauge, 1);
	return c;
}

static void ctx_free(api_ctx *c)
{
	es_http *h = c->h;

	es_api_infer_cleanup(c);
	free(c->body_mem);
	es_buf_free(&c->resp);
	free(c);
	es_gauge_add(h->inflight_gauge, -1);
	atomic_fetch_sub(&h->inflight, 1);
}

/* Strict decimal parse of a header value. */
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

static bool method_is(const char *m, const char *lit)
{
	return m && strcmp(m, lit) == 0;
}

/*
 * Makes room for cap bytes of body. Binary tensors are used where they lie
 * in the body (no copy), so the body is placed at body_pad past a 64-byte
 * boundary: the first binary tensor then starts aligned.
 */
static bool body_reserve(api_ctx *c, size_t cap)
{
	void *mem;
	size_t total;

	if (es_add_size(cap, c->body_pad, &total) ||
	    posix_memalign(&mem, BODY_ALIGN, total))
		return false;
	if (c->body_len)
		memcpy((char *)mem + c->body_pad, c->body, c->body_len);
	free(c->body_mem);
	c->body_mem = mem;
	c->body = (char *)mem + c->body_pad;
	c->body_cap = cap;
	return true;
}

/* First handler call: route, method, size limit. Either prepares a reply
 * (phase PH_READY) or gets ready to receive a body. */
static void first_call(api_ctx *c, const char *url)
{
	es_http *h = c->h;
	api_route *r = &c->route;

	const char *cl = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND,
						     MHD_HTTP_HEADER_CONTENT_LENGTH);
	c->has_length = cl && parse_size(cl, &c->content_length);

	es_api_route_parse(url, r);
	if (es_api_route_is_admin(r->kind))
		set_remote(c); /* for the "admin" line, whatever the outcome */
	if (r->kind == R_MODEL_INFER)
		c->api = API_KSERVE;
	else if (r->kind == R_TFS_PREDICT)
		c->api = API_TFS;

	if (r->kind == R_BAD) {
		es_api_reply_error(c, r->status, 0, "%s", r->msg);
		return;
	}
	if (r->kind == R_NOT_FOUND) {
		char method[24];
		es_api_sanitize(method, sizeof(method), c->method ? c->method : "");
		es_api_reply_error(c, 404, ES_ENOTFOUND, "no such endpoint: %s %s",
				   method, c->path);
		return;
	}
	if (r->post ? !method_is(c->method, MHD_HTTP_METHOD_POST)
		    : !method_is(c->method, MHD_HTTP_METHOD_GET) &&
		      !method_is(c->method, MHD_HTTP_METHOD_HEAD)) {
		char method[24];
		es_api_sanitize(method, sizeof(method), c->method ? c->method : "");
		c->allow = r->post ? "POST" : "GET, HEAD";
		es_api_reply_error(c, 405, ES_EINVAL,
				   "method %s is not allowed on %s; use %s", method,
				   c->path, r->post ? "POST" : "GET");
		return;
	}
	if (!r->post) {
		es_api_handle_get(c);
		return;
	}
	if (es_api_route_is_admin(r->kind)) {
		/* Lifecycle: no body is wanted (one sent is dropped), except the
		 * small JSON of the rollout changes; the work starts once the
		 * request is complete. */
		if (atomic_load(&h->draining)) {
			es_api_reply_error(c, 503, ES_ECANCELED, "server is shutting down");
			return;
		}
		if (r->has_model && !es_api_resolve_model(c))
			return; /* unknown: 404 before the body */
		if (!es_api_route_admin_body(r->kind))
			return;
		c->want_body = true;
		c->body_limit = API_ADMIN_BODY_MAX;
		if (c->has_length && c->content_length > c->body_limit) {
			es_api_reply_error(c, 413, ES_ETOOLARGE,
					   "%s body of %" PRIu64 " bytes is larger than the limit of %zu bytes",
					   c->path, c->content_length, c->body_limit);
			return;
		}
		if (c->has_length && c->content_length > 0 &&
		    !body_reserve(c, (size_t)c->content_length + 1))
			es_api_reply_error(c, 503, ES_ENOMEM, "out of memory for a request body");
		return;
	}

	/* Inference: unknown models are refused before the body is read. */
	c->want_body = true;
	c->body_limit = h->cfg->max_request_bytes;
	if (!es_api_resolve_model(c))
		return;
	uint64_t len, json_len;
	const char *hl = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND,
						     "Inference-Header-Content-Length");
	if (hl && parse_size(hl, &json_len))
		c->body_pad = (BODY_ALIGN - (size_t)(json_len % BODY_ALIGN)) % BODY_ALIGN;
	if (c->has_length) {
		len = c->content_length;
		if (len > h->cfg->max_request_bytes) {
			es_api_reply_error(c, 413, ES_ETOOLARGE,
					   "request body of %" PRIu64 " bytes for model '%s' is larger than the limit of %zu bytes",
					   len, r->model, h->cfg->max_request_bytes);
			return;
		}
		if (len > 0 && !body_reserve(c, (size_t)len + 1)) {
			es_api_reply_error(c, 503, ES_ENOMEM,
					   "out of memory for a request body of %" PRIu64 " bytes",
					   len);
			return;
		}
	}
}

/* Appends a body chunk. False: close the connection. */
static bool accept_body(api_ctx *c, const char *data, size_t n)
{
	size_t limit = c->body_limit;
	size_t need;

	if (es_add_size(c->body_len, n, &need) || need > limit) {
		/* chunked upload past the limit: drop it, reply at the end */
		c->too_large = true;
		c->discarded = need;
		free(c->body_mem);
		c->body_mem = c->body = NULL;
		c->body_cap = 0;
		return true;
	}
	if (need + 1 > c->body_cap) {
		size_t cap = c->body_cap ? c->body_cap : BODY_INITIAL_CAP;
		while (cap < need + 1)
			cap = cap > limit / 2 ? limit + 1 : cap * 2;
		if (!body_reserve(c, cap))
			return false;
	}
	memcpy(c->body + c->body_len, data, n);
	c->body_len = need;
	c->body[need] = '\0';
	return true;
}

/*
 * True when a request body is still incomplete and the client has already
 * closed its side. microhttpd 0.9.75 under epoll misses a FIN that arrives
 * together with the last data it reads (it takes a short read as "no more
 * data" and waits for an edge that never comes), which would keep an
 * aborted request in flight until the connection timeout. A body that can
 * no longer be completed is worth one non-blocking peek per chunk.
 */
static bool client_gone(api_ctx *c)
{
	const union MHD_ConnectionInfo *ci;
	char byte;

	if (c->has_length && c->received >= c->content_length)
		return false; /* complete: a half-close after it is legitimate */
	if (!c->has_length &&
	    !MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND,
					 MHD_HTTP_HEADER_TRANSFER_ENCODING))
		return false; /* no body at all */
	ci = MHD_get_connection_info(c->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
	if (!ci)
		return false;
	return recv(ci->connect_fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

/* A body announced larger than we are willing to read only to drop it. */
static bool body_too_big_to_drop(const api_ctx *c)
{
	return c->has_length && c->content_length > DISCARD_MAX;
}

/*
 * microhttpd calls this for every request: once with the headers, once per
 * body chunk, once when the request is complete, and once more after each
 * resume. A reply queued on the first call makes microhttpd close the
 * connection (it will not read the body), so replies wait for the final
 * call, except 413, whose body we do not want to read at all.
 */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
				  const char *url, const char *method,
				  const char *version, const char *upload_data,
				  size_t *upload_data_size, void **con_cls)
{
	es_http *h = cls;
	api_ctx *c = *con_cls;

	if (!c) {
		c = ctx_new(h, conn, url, method);
		if (!c) {
			es_log_msg(ES_LOG_WARN, "http_error",
				   "out of memory for a request context: connection closed");
			return MHD_NO;
		}
		*con_cls = c;
		first_call(c, url);
		if (atomic_load(&c->phase) == PH_READY &&
		    (c->status == 413 || body_too_big_to_drop(c)))
			return send_reply(c);
		return client_gone(c) ? MHD_NO : MHD_YES;
	}
	if (*upload_data_size) {
		size_t n = *upload_data_size;
		*upload_data_size = 0;
		c->received += n;
		if (atomic_load(&c->phase) == PH_RECEIVING && c->want_body &&
		    !c->too_large) {
			if (!accept_body(c, upload_data, n)) {
				es_log_msg(ES_LOG_WARN, "http_error",
					   "request %s: out of memory for a body of %" PRIu64 " bytes: connection closed",
					   c->id, c->received);
				return MHD_NO;
			}
		} else if (es_add_size(c->discarded, n, &c->discarded) ||
			   c->discarded > DISCARD_MAX) {
			/* the reply is decided already: the body is read and
			 * dropped so the connection stays usable, up to a
			 * bound */
			es_log_msg(ES_LOG_INFO, "http_close",
				   "request %s: more than %zu bytes of unwanted body: connection closed",
				   c->id, DISCARD_MAX);
			return MHD_NO;
		}
		return client_gone(c) ? MHD_NO : MHD_YES;
	}
	switch (atomic_load(&c->phase)) {
	case PH_RECEIVING:
		if (c->too_large) {
			es_api_reply_error(c, 413, ES_ETOOLARGE,
					   "request body for model '%s' is larger than the limit of %zu bytes",
					   c->route.model, c->body_limit);
			return send_reply(c);
		}
		if (c->route.kind == R_MODEL_ROLLBACK) {
			es_api_handle_rollback(c);
			return send_reply(c);
		}
		if (es_api_route_is_admin(c->route.kind) &&
		    c->route.kind != R_CONFIG_RELOAD) {
			es_api_handle_rollout_admin(c);
			return send_reply(c);
		}
		if (c->route.kind == R_CONFIG_RELOAD ? es_api_reload_start(c)
						     : es_api_infer_start(c))
			return MHD_YES; /* suspended: c belongs to the worker now */
		return send_reply(c);
	case PH_READY:
		return send_reply(c);
	case PH_WAITING:
	case PH_SENT:
	default:
		return MHD_YES;
	}
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	api_ctx *c = *con_cls;

	if (!c)
		return;
	*con_cls = NULL;
	if (atomic_load(&c->phase) == PH_WAITING) {
		/* Cannot happen while every submitted request completes before
		 * the daemon stops; leaking beats a use-after-free. */
		es_log_msg(ES_LOG_ERROR, "http_error",
			   "request %s ended while still queued", c->id);
		return;
	}
	if (atomic_load(&c->phase) != PH_SENT) {
		es_logrec lr;
		if (es_log_begin(&lr, ES_LOG_DEBUG, "request_aborted")) {
			es_log_str(&lr, "id", c->id);
			es_log_str(&lr, "path", c->path);
			es_log_int(&lr, "bytes_in", (int64_t)c->body_len);
			es_log_end(&lr);
		}
	}
	ctx_free(c);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[512];
	size_t n;

	static const char *const client_side[] = {
		"closed by remote side", "has been disconnected",
		"socket is closed", "timed out", "reported internal error",
		NULL,
	};
	es_log_level level = ES_LOG_WARN;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
		msg[--n] = '\0';
	/* Clients that go away (and our own refusals, which log their own
	 * line first) are routine: DEBUG, not WARNING. */
	for (size_t i = 0; client_side[i]; i++)
		if (strstr(msg, client_side[i]))
			level = ES_LOG_DEBUG;
	es_log_msg(level, "http_error", "%s", msg);
}

static int hex_digit(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/*
 * Percent-decoding of the URL, in place. Unlike microhttpd's own, "%00"
 * stays as it is: decoded, it would cut the path short ("/m%00/infer"
 * would route as "/m"); kept, it fails name validation. Malformed escapes
 * are kept literally too.
 */
static size_t unescape_url(void *cls, struct MHD_Connection *conn, char *s)
{
	char *out = s;
	const char *in = s;

	while (*in) {
		int hi, lo;
		if (in[0] == '%' && (hi = hex_digit(in[1])) >= 0 &&
		    (lo = hex_digit(in[2])) >= 0 && (hi | lo) != 0) {
			*out++ = (char)(hi * 16 + lo);
			in += 3;
		} else {
			*out++ = *in++;
		}
	}
	*out = '\0';
	return (size_t)(out - s);
}

/* ---- the reload thread --------------------------------------------------- */

/*
 * Reloads run here, one at a time in arrival order: a reload loads models
 * for as long as that takes, which no network thread may wait for, and
 * reloads are serialised inside the serving core anyway. The connection
 * stays suspended meanwhile; like a device worker, this thread prepares
 * the reply and resumes the connection as its last touch of the context.
 * The thread starts with the first reload request and ends at
 * es_http_stop.
 */
static void *reload_main(void *arg)
{
	es_http *h = arg;

	pthread_mutex_lock(&h->reload_mu);
	for (;;) {
		while (!h->reload_head && !h->reload_stop)
			pthread_cond_wait(&h->reload_cv, &h->reload_mu);
		api_ctx *c = h->reload_head;
		if (!c)
			break; /* stopping, nothing left */
		h->reload_head = c->reload_next;
		if (!h->reload_head)
			h->reload_tail = NULL;
		c->reload_next = NULL;
		bool stopping = h->reload_stop;
		pthread_mutex_unlock(&h->reload_mu);

		struct MHD_Connection *conn = c->conn;
		if (stopping || atomic_load(&h->draining))
			es_api_reply_error(c, 503, ES_ECANCELED, "server is shutting down");
		else
			es_api_handle_reload(c);
		MHD_resume_connection(conn); /* c may be freed from here on */

		pthread_mutex_lock(&h->reload_mu);
	}
	pthread_mutex_unlock(&h->reload_mu);
	return NULL;
}

bool es_api_reload_start(api_ctx *c)
{
	es_http *h = c->h;
	bool queued = false;

	if (atomic_load(&h->draining)) {
		es_api_reply_error(c, 503, ES_ECANCELED, "server is shutting down");
		return false;
	}
	/* suspended before it is queued: the thread may resume it at once */
	atomic_store(&c->phase, PH_WAITING);
	MHD_suspend_connection(c->conn);
	pthread_mutex_lock(&h->reload_mu);
	if (!h->reload_stop && !h->reload_started &&
	    pthread_create(&h->reload_thread, NULL, reload_main, h) == 0)
		h->reload_started = true;
	if (!h->reload_stop && h->reload_started) {
		if (h->reload_tail)
			h->reload_tail->reload_next = c;
		else
			h->reload_head = c;
		h->reload_tail = c;
		pthread_cond_signal(&h->reload_cv);
		queued = true;
	}
	bool stopping = h->reload_stop;
	pthread_mutex_unlock(&h->reload_mu);
	if (!queued) {
		if (stopping)
			es_api_reply_error(c, 503, ES_ECANCELED, "server is shutting down");
		else
			es_api_reply_error(c, 503, ES_ENOMEM,
					   "cannot start the reload thread; try again");
		MHD_resume_connection(c->conn);
	}
	return true;
}

/* Answers every queued (not yet running) reload 503: the server is going
 * away. Safe from any thread. */
static void reload_cancel_queued(es_http *h)
{
	api_ctx *c;

	pthread_mutex_lock(&h->reload_mu);
	c = h->reload_head;
	h->reload_head = h->reload_tail = NULL;
	pthread_mutex_unlock(&h->reload_mu);
	while (c) {
		api_ctx *next = c->reload_next;
		struct MHD_Connection *conn = c->conn;

		c->reload_next = NULL;
		es_api_reply_error(c, 503, ES_ECANCELED, "server is shutting down");
		MHD_resume_connection(conn); /* c may be freed from here on */
		c = next;
	}
}

/* Stops the reload thread: what is queued is answered 503; a running
 * reload finishes first (it cannot be interrupted). */
static void reload_thread_stop(es_http *h)
{
	bool started;

	pthread_mutex_lock(&h->reload_mu);
	h->reload_stop = true;
	started = h->reload_started;
	pthread_cond_broadcast(&h->reload_cv);
	pthread_mutex_unlock(&h->reload_mu);
	if (started)
		pthread_join(h->reload_thread, NULL);
}

/* ---- daemon -------------------------------------------------------------- */

static int open_listen_socket(const char *addr, int port, int *fd_out,
			      es_error *err)
{
	struct addrinfo hints, *res = NULL;
	char service[16];
	int fd, rc, one = 1;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	snprintf(service, sizeof(service), "%d", port);
	rc = getaddrinfo(addr, service, &hints, &res);
	if (rc != 0 || !res)
		return es_error_set(err, ES_EINVAL,
				    "--rest_bind_address '%s': not an address this host can bind (%s)",
				    addr, gai_strerror(rc));
	fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, res->ai_protocol);
	if (fd < 0) {
		rc = es_error_set(err, ES_EIO, "cannot create a socket: %s",
				  strerror(errno));
		goto out_free;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, res->ai_addr, res->ai_addrlen) != 0) {
		rc = es_error_set(err, ES_EIO, "cannot bind %s:%d: %s", addr, port,
				  strerror(errno));
		goto out_close;
	}
	if (listen(fd, SOMAXCONN) != 0) {
		rc = es_error_set(err, ES_EIO, "cannot listen on %s:%d: %s", addr,
				  port, strerror(errno));
		goto out_close;
	}
	*fd_out = fd;
	freeaddrinfo(res);
	return 0;
out_close:
	close(fd);
out_free:
	freeaddrinfo(res);
	return rc;
}

api_model_stats *es_api_model_stats(es_http *h, es_servable *m)
{
	api_model_stats *st, *kept;

	if (!h->metrics || !m)
		return NULL;
	st = es_servable_ext(m, NULL); /* a read: the slot is set only once */
	if (st)
		return st;
	st = calloc(1, sizeof(*st));
	if (!st)
		return NULL;
	st->model = m;
	for (int a = API_KSERVE; a <= API_TFS; a++) {
		const char *lv[] = {es_servable_name(m), api_names[a], NULL};
		const char *lva[] = {es_servable_name(m), api_names[a],
				     es_arm_name(ES_ARM_DEFAULT), NULL};
		/* the arm of a model without a canary: its series exist from
		 * the start, as before arms were labelled */
		atomic_init(&st->duration[a][ES_ARM_DEFAULT + 1],
			    es_metric_get(h->m_duration, lva));
		st->parse[a] = es_metric_get(h->m_parse, lv);
		st->encode[a] = es_metric_get(h->m_encode, lv);
	}
	/* two threads may race to make them: the first one set wins (the
	 * children are the same, the registry hands out one per label set) */
	kept = es_servable_ext(m, st);
	if (kept != st)
		free(st);
	return kept;
}

es_metric_child *es_api_duration_child(es_http *h, api_model_stats *st,
				       api_kind api, int arm)
{
	es_metric_child *child;
	int slot = arm + 1;

	if (!h->m_duration || !st || api <= API_OTHER || api > API_TFS || slot < 0 ||
	    slot > ES_ARM_COUNT)
		return NULL;
	child = atomic_load(&st->duration[api][slot]);
	if (child)
		return child;
	const char *lv[] = {es_servable_name(st->model), api_names[api],
			    arm >= 0 ? es_arm_name((es_arm)arm) : "", NULL};
	/* the registry hands out one child per label set: racing threads
	 * store the same pointer */
	child = es_metric_get(h->m_duration, lv);
	atomic_store(&st->duration[api][slot], child);
	return child;
}

void es_api_model_stats_all(es_http *h)
{
	const es_model_list *models;

	if (!h->metrics)
		return;
	models = es_server_models(h->srv);
	for (size_t i = 0; i < models->n; i++)
		es_api_model_stats(h, models->m[i]);
}

static int register_metrics(es_http *h, es_error *err)
{
	es_metrics *m = h->metrics;
	es_metric *inflight, *build;

	h->m_requests = es_metrics_counter(m, "edgeserve_requests_total",
		"Inference requests (KServe v2 infer, TF-Serving predict) by model, version, api, rollout arm, status class and reason.",
		req_labels);
	h->m_duration = es_metrics_histogram(m, "edgeserve_request_duration_seconds",
		"Time from request headers received to response queued, in seconds, by model, api and rollout arm.",
		model_api_arm_labels, NULL, 0);
	h->m_parse = es_metrics_histogram(m, "edgeserve_request_parse_duration_seconds",
		"Time to parse and validate an inference request body, in seconds.",
		model_api_labels, NULL, 0);
	h->m_encode = es_metrics_histogram(m, "edgeserve_request_encode_duration_seconds",
		"Time to encode an inference response, in seconds.",
		model_api_labels, NULL, 0);
	inflight = es_metrics_gauge(m, "edgeserve_http_inflight_requests",
		"HTTP requests received and not yet answered.", NULL);
	build = es_metrics_gauge(m, "edgeserve_build_info",
		"Build information: the edgeserve version and the versions of the oneDNN and OpenBLAS libraries loaded; the value is always 1.",
		build_labels);
	if (!h->m_requests || !h->m_duration || !h->m_parse || !h->m_encode ||
	    !inflight || !build)
		return es_error_set(err, ES_EINTERNAL,
				    "cannot register the HTTP metric families");
	h->inflight_gauge = es_metric_get(inflight, NULL);
	const char *bv[] = {ES_ENGINE_VERSION, h->onednn, h->openblas, NULL};
	es_gauge_set(es_metric_get(build, bv), 1);

	es_api_model_stats_all(h);
	return 0;
}

static int cpu_count(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (int)n : 1;
}

int es_http_start(const es_server_config *cfg, es_server *srv,
		  es_metrics *metrics, es_http **out, es_error *err)
{
	es_http *h;
	int fd = -1, rc;
	unsigned int workers, limit, timeout;

	*out = NULL;
	h = calloc(1, sizeof(*h));
	if (!h)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	h->cfg = cfg;
	h->srv = srv;
	h->metrics = metrics;
	h->quiesced_fd = MHD_INVALID_SOCKET;
	atomic_init(&h->draining, false);
	atomic_init(&h->inflight, 0);
	atomic_init(&h->next_id, 1);
	if (getrandom(&h->id_prefix, sizeof(h->id_prefix), GRND_NONBLOCK) !=
	    (ssize_t)sizeof(h->id_prefix))
		h->id_prefix = (uint32_t)(es_wall_ns() ^ (uint64_t)getpid());
	es_runtime_versions rv;
	es_engine_runtime_versions(&rv);
	snprintf(h->onednn, sizeof(h->onednn), "%s", rv.onednn_str);
	snprintf(h->openblas, sizeof(h->openblas), "%s", rv.openblas_str);
	if (pthread_mutex_init(&h->reload_mu, NULL) != 0) {
		free(h);
		return es_error_set(err, ES_ENOMEM, "cannot create a mutex");
	}
	if (pthread_cond_init(&h->reload_cv, NULL) != 0) {
		pthread_mutex_destroy(&h->reload_mu);
		free(h);
		return es_error_set(err, ES_ENOMEM, "cannot create a condition variable");
	}
	/* per-model api stats live in the servables' ext slots */
	es_server_set_ext_free(srv, free);

	if (metrics) {
		rc = register_metrics(h, err);
		if (rc)
			goto out_free;
	}
	if (cfg->rest_port < 0 || cfg->rest_port > 65535) {
		rc = es_error_set(err, ES_EINVAL,
				  "--rest_port %d: expected 0..65535", cfg->rest_port);
		goto out_free;
	}
	rc = open_listen_socket(cfg->rest_bind_address ? cfg->rest_bind_address
						       : "127.0.0.1",
				cfg->rest_port, &fd, err);
	if (rc)
		goto out_free;

	workers = (unsigned int)(cfg->rest_workers > 0 ? cfg->rest_workers : cpu_count());
	limit = (unsigned int)(cfg->max_connections > 0 ? cfg->max_connections : 1024);
	timeout = (unsigned int)(cfg->connection_timeout_s > 0 ? cfg->connection_timeout_s : 60);
	/* With a pool of one, microhttpd runs a single internal thread. */
	h->daemon = MHD_start_daemon(
		MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME |
			MHD_USE_ERROR_LOG,
		0, NULL, NULL, on_request, h,
		MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h,
		MHD_OPTION_LISTEN_SOCKET, fd,
		MHD_OPTION_THREAD_POOL_SIZE, workers > 1 ? workers : 0u,
		MHD_OPTION_CONNECTION_LIMIT, limit,
		MHD_OPTION_CONNECTION_TIMEOUT, timeout,
		MHD_OPTION_CONNECTION_MEMORY_LIMIT, CONN_MEMORY_LIMIT,
		MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
		MHD_OPTION_UNESCAPE_CALLBACK, unescape_url, h,
		MHD_OPTION_END);
	if (!h->daemon) {
		close(fd);
		rc = es_error_set(err, ES_EIO,
				  "cannot start the HTTP daemon (see the http_error log lines)");
		goto out_free;
	}
	const union MHD_DaemonInfo *info =
		MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
	h->port = info ? (int)info->port : cfg->rest_port;
	*out = h;
	return 0;
out_free:
	pthread_cond_destroy(&h->reload_cv);
	pthread_mutex_destroy(&h->reload_mu);
	free(h);
	return rc;
}

int es_http_port(const es_http *h)
{
	return h->port;
}

void es_http_begin_shutdown(es_http *h)
{
	atomic_store(&h->draining, true);
	/* a reload that has not started will not: answer it now rather than
	 * after the one running */
	reload_cancel_queued(h);
}

void es_http_quiesce(es_http *h)
{
	MHD_socket fd;

	if (h->quiesced_fd != MHD_INVALID_SOCKET)
		return;
	fd = MHD_quiesce_daemon(h->daemon);
	if (fd == MHD_INVALID_SOCKET)
		return;
	h->quiesced_fd = fd;
	/* The socket stays open until the daemon stops, but must not go on
	 * completing handshakes nobody will accept: shutting a listening
	 * socket down makes new connections fail at once. */
	shutdown(fd, SHUT_RDWR);
}

size_t es_http_inflight(const es_http *h)
{
	long n = atomic_load(&((es_http *)h)->inflight);
	return n > 0 ? (size_t)n : 0;
}

size_t es_http_wait_idle(es_http *h, int64_t timeout_ms)
{
	uint64_t deadline = es_now_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000ull;
	struct timespec ts = {0, 5 * 1000 * 1000};

	while (es_http_inflight(h) > 0 && es_now_ns() < deadline)
		nanosleep(&ts, NULL);
	return es_http_inflight(h);
}

void es_http_stop(es_http *h)
{
	if (!h)
		return;
	/* before the daemon goes: the thread resumes connections */
	reload_thread_stop(h);
	MHD_stop_daemon(h->daemon);
	if (h->quiesced_fd != MHD_INVALID_SOCKET)
		close(h->quiesced_fd);
	pthread_cond_destroy(&h->reload_cv);
	pthread_mutex_destroy(&h->reload_mu);
	free(h);
}
