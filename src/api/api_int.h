/*
 * Private to src/api: the HTTP server state, the per-request context and
 * the helpers shared by http.c (libmicrohttpd glue, replies, metrics, the
 * access log, the reload thread), routes.c (URL routing, the small GET
 * endpoints and the lifecycle endpoints) and infer.c (KServe v2 infer and
 * TF-Serving predict).
 *
 * Life of one request (one api_ctx):
 *   1. first access-handler call (headers only): the context is created,
 *      the URL routed, the method and Content-Length checked. GET routes
 *      reply at once; an oversized body gets 413 before anything is read.
 *   2. body calls: the body is appended to ctx->body, bounded by
 *      max_request_bytes (chunked uploads are checked as they grow).
 *   3. final call: infer.c parses the body, resolves the model version,
 *      suspends the connection and submits an es_request. A request in a
 *      device queue holds no thread.
 *   4. the device worker's completion callback encodes the reply into the
 *      context and resumes the connection; it is the last code to touch the
 *      context on that thread.
 *   5. microhttpd calls the handler again; the prepared reply is queued
 *      (reply_send: headers, metrics, access log).
 *   6. request-completed notification: the context is freed.
 *
 * Lifecycle requests (POST /v1/config/reload, POST /v1/admin/models/m/
 * rollback) drop their body, if any. A rollback is a table swap under a
 * short lock and is answered at step 3 on the network thread. A reload may
 * load models for seconds, which no network thread may wait for: at step 3
 * its context is queued for the reload thread (http.c) instead of a
 * device; that thread runs one reload at a time, in arrival order, and
 * step 4 happens there.
 */
#ifndef ES_API_API_INT_H
#define ES_API_API_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <microhttpd.h>

#include "api/codec.h"
#include "api/http.h"
#include "base/buf.h"
#include "edgeserve/engine.h"
#include "obs/metrics.h"
#include "serving/serving.h"

#define API_NAME_MAX 128     /* longest model name accepted in a URL */
#define API_PATH_LOG_MAX 256 /* longest path kept for the access log */
#define API_ID_MAX 128       /* longest request id kept (longer ids are cut) */
#define API_REMOTE_MAX 64    /* "ip:port" or "[ipv6]:port" of the client */
#define API_LABEL_MAX 63     /* longest version label (es_rollout_report) */
#define API_USER_KEY_MAX 256 /* longest canary user key (header or parameter) */
#define API_ADMIN_BODY_MAX ((size_t)64 * 1024) /* admin request bodies */

/* ---- routing ------------------------------------------------------------- */

typedef enum api_route_kind {
	R_NOT_FOUND = 0,
	R_HEALTH_LIVE,
	R_HEALTH_READY,
	R_SERVER_META,  /* GET /v2 */
	R_MODEL_META,   /* GET /v2/models/m[/versions/v] */
	R_MODEL_READY,  /* GET /v2/models/m[/versions/v]/ready */
	R_MODEL_INFER,  /* POST /v2/models/m[/versions/v]/infer */
	R_TFS_STATUS,   /* GET /v1/models/m[/versions/v|/labels/l] */
	R_TFS_METADATA, /* GET /v1/models/m[/versions/v]/metadata */
	R_TFS_PREDICT,  /* POST /v1/models/m[/versions/v|/labels/l]:predict */
	R_CONFIG,       /* GET /v1/config */
	R_CONFIG_RELOAD, /* POST /v1/config/reload */
	R_MODEL_ROLLBACK, /* POST /v1/admin/models/m/rollback */
	R_ADMIN_LABELS,   /* POST /v1/admin/models/m/labels (JSON body) */
	R_ADMIN_CANARY,   /* POST /v1/admin/models/m/canary (JSON body) */
	R_ADMIN_KILL,     /* POST /v1/admin/models/m/kill */
	R_ADMIN_UNKILL,   /* POST /v1/admin/models/m/unkill */
	R_ADMIN_ROLLOUT,  /* GET /v1/admin/models/m/rollout */
	R_METRICS,      /* GET /metrics */
	R_BAD,          /* the URL names something invalid: status + msg */
} api_route_kind;

typedef struct api_route {
	api_route_kind kind;
	bool post;               /* the route takes POST (else GET/HEAD) */
	char model[API_NAME_MAX + 1];
	bool has_model;
	int64_t version;         /* 0 = the default version */
	char label[API_LABEL_MAX + 1]; /* /labels/{l}: a valid label name */
	bool has_label;
	int status;              /* R_BAD: 400 or 404 */
	char msg[320];           /* R_BAD: the reason, safe to send */
} api_route;

/* Routes a decoded URL path (no query string). Never fails: unknown paths
 * give R_NOT_FOUND, invalid names or versions R_BAD with a message. */
void es_api_route_parse(const char *url, api_route *out);

/* The routes that change the server (lifecycle and rollouts), logged as
 * "admin" lines with the client's address. */
static inline bool es_api_route_is_admin(api_route_kind k)
{
	return k == R_CONFIG_RELOAD || k == R_MODEL_ROLLBACK ||
	       k == R_ADMIN_LABELS || k == R_ADMIN_CANARY || k == R_ADMIN_KILL ||
	       k == R_ADMIN_UNKILL;
}

/* The admin routes whose JSON body is read (the others drop theirs). */
static inline bool es_api_route_admin_body(api_route_kind k)
{
	return k == R_ADMIN_LABELS || k == R_ADMIN_CANARY;
}

/* Label names: [A-Za-z0-9_]{1,API_LABEL_MAX}. */
bool es_api_label_ok(const char *s, size_t n);

/* Copies s into out (size cap) for use inside a message: at most 64
 * characters, non-printable bytes as '?', "..." when cut. */
void es_api_sanitize(char *out, size_t cap, const char *s);

/* ---- server state -------------------------------------------------------- */

typedef enum api_kind {
	API_OTHER = 0, /* health, metadata, metrics: not counted per model */
	API_KSERVE = 1,
	API_TFS = 2,
} api_kind;

/* Metric children looked up once per model and api. One per servable,
 * made on first use and kept in the servable's ext slot (es_servable_ext);
 * the server frees it with the servable. */
typedef struct api_model_stats {
	const es_servable *model;
	/* indexed by api_kind, then arm + 1 (0: the request never got an arm);
	 * made on first use, so only arms that happen have series */
	_Atomic(es_metric_child *) duration[3][ES_ARM_COUNT + 1];
	es_metric_child *parse[3];
	es_metric_child *encode[3];
} api_model_stats;

typedef struct api_ctx api_ctx;

struct es_http {
	const es_server_config *cfg;
	es_server *srv;
	es_metrics *metrics; /* NULL: metrics disabled */
	struct MHD_Daemon *daemon;
	MHD_socket quiesced_fd; /* listen socket after es_http_quiesce */
	int port;
	atomic_bool draining;
	atomic_long inflight;
	atomic_uint_fast64_t next_id;
	uint32_t id_prefix;
	/* metric families (NULL when metrics are disabled) */
	es_metric *m_requests;
	es_metric *m_duration;
	es_metric *m_parse;
	es_metric *m_encode;
	es_metric_child *inflight_gauge;
	/* runtime library versions (es_engine_runtime_versions), for GET /v2 */
	char onednn[32];
	char openblas[32];
	/* the reload thread: started on the first reload request, runs the
	 * queued contexts one at a time; reload_mu guards the rest */
	pthread_mutex_t reload_mu;
	pthread_cond_t reload_cv;
	api_ctx *reload_head, *reload_tail;
	bool reload_started;
	bool reload_stop;
	pthread_t reload_thread;
};

/* ---- one request --------------------------------------------------------- */

typedef enum api_phase {
	PH_RECEIVING = 0, /* headers seen, body arriving */
	PH_WAITING,       /* submitted, connection suspended */
	PH_READY,         /* reply prepared, not yet queued */
	PH_SENT,          /* reply queued to microhttpd */
} api_phase;

struct api_ctx {
	es_http *h;
	struct MHD_Connection *conn;
	uint64_t t_recv_ns;       /* headers received (es_now_ns) */
	const char *method;       /* microhttpd's string, valid for the request */
	char path[API_PATH_LOG_MAX + 1];
	api_route route;
	api_kind api;
	es_servable *model;       /* NULL until resolved */
	api_model_stats *stats;   /* NULL when not a known model */
	char id[API_ID_MAX + 1];  /* request id (KServe id, X-Request-Id or ours) */
	bool id_cut;              /* id is a cut-down copy: not echoed as a header */
	bool want_body;           /* the body is kept (inference); else dropped */
	size_t body_limit;        /* the largest body kept */

	/* body: body = body_mem + body_pad, placed so that the binary part
	 * (at Inference-Header-Content-Length) starts 64-byte aligned */
	char *body;
	char *body_mem;
	size_t body_pad;
	size_t body_len;
	size_t body_cap;          /* usable bytes from body */
	size_t discarded;         /* bytes dropped after the limit was passed */
	uint64_t received;        /* body bytes seen so far (kept or dropped) */
	uint64_t content_length;  /* announced body length */
	bool has_length;          /* false: chunked (or no body) */
	bool too_large;

	/* inference */
	es_version *version;      /* reference, released when freed */
	bool routed;              /* req.arm is this request's arm */
	char *resp_params;        /* KServe reply "parameters": the request's
				   * echo plus "arm" (malloc'ed) */
	es_request req;
	es_tensor *inputs;        /* model input order (KServe); views, not owned */
	char *input_copy;         /* aligned copies of misaligned binary inputs */
	es_v2_request v2;
	bool have_v2;
	es_tfs_request tfs;
	bool have_tfs;
	size_t *out_index;        /* selected outputs: model output indexes */
	bool *out_binary;
	es_v2_output *outs;       /* scratch for the encoder */
	size_t n_out;
	bool any_binary;
	uint64_t parse_ns;
	uint64_t encode_ns;

	/* lifecycle requests */
	char remote[API_REMOTE_MAX]; /* the client, "ip:port" ("" if unknown) */
	api_ctx *reload_next;     /* reload thread queue */
	bool reload_changed;      /* reload succeeded: something changed */
	bool rolled_back;         /* rollback succeeded: from, to are set */
	int64_t rollback_from;
	int64_t rollback_to;
	char admin_detail[160];   /* rollout admin: what changed, for the log */

	/* reply */
	atomic_int phase;
	int status;               /* HTTP status */
	int code;                 /* ES_E* behind an error reply (0 for success) */
	es_buf resp;
	const char *content_type;
	size_t resp_json_len;     /* Inference-Header-Content-Length when binary */
	bool resp_binary;
	const char *allow;        /* 405: the Allow header */
	char errmsg[ES_ERROR_MSG_MAX]; /* error replies: the message, for the log */
};

/* ---- replies (http.c) ---------------------------------------------------- */

/* Prepares a reply with body (taken: body is reset) and content type. */
void es_api_reply(api_ctx *c, int status, const char *content_type,
		  es_buf *body);
/* Prepares {"error": msg} with an explicit HTTP status; code is the ES_E*
 * behind it (selects the metric reason), 0 to derive it from status. */
void es_api_reply_error(api_ctx *c, int status, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Prepares {"error": msg} with the status that goes with an ES_E* code. */
void es_api_fail(api_ctx *c, int code, const char *msg);
/* HTTP status for an ES_E* code (400/404/413/503/504/500). */
int es_api_status_of(int code);

/* ---- per-model metric children (http.c) ---------------------------------- */

/* m's request metric children, made on first use (NULL when metrics are
 * disabled or memory ran out). Safe from any thread. */
api_model_stats *es_api_model_stats(es_http *h, es_servable *m);
/* Makes them for every model served now (at start and after a reload), so
 * that their series exist before the first request. */
void es_api_model_stats_all(es_http *h);

/* ---- endpoints ----------------------------------------------------------- */

/* routes.c: the GET endpoints; prepare a reply. */
void es_api_handle_get(api_ctx *c);
/* routes.c: POST /v1/admin/models/m/rollback; prepares a reply. */
void es_api_handle_rollback(api_ctx *c);
/* admin.c: POST /v1/admin/models/m/{labels,canary,kill,unkill} with the
 * whole body received; prepares a reply. */
void es_api_handle_rollout_admin(api_ctx *c);
/* admin.c: GET /v1/admin/models/m/rollout (model resolved). */
void es_api_handle_rollout_report(api_ctx *c);
/* api metric: the duration histogram child of (model stats, api, arm);
 * arm < 0 for a request that never got one. NULL without metrics. */
es_metric_child *es_api_duration_child(es_http *h, api_model_stats *st,
				       api_kind api, int arm);
/* routes.c: POST /v1/config/reload; prepares a reply. Runs on the reload
 * thread: takes as long as the loads it causes. */
void es_api_handle_reload(api_ctx *c);
/* Resolves ctx->route.model to ctx->model (and stats); prepares a 404 and
 * returns false when the model does not exist. */
bool es_api_resolve_model(api_ctx *c);

/* infer.c: with the whole body received, either prepares an error reply
 * and returns false, or suspends the connection, submits the request and
 * returns true: the reply then comes from the completion callback, which
 * may already be running, so the caller must not touch ctx any more. */
bool es_api_infer_start(api_ctx *c);
/* Releases what infer.c holds in ctx. */
void es_api_infer_cleanup(api_ctx *c);

/* http.c: with the whole reload request received, either prepares an error
 * reply (shutting down) and returns false, or suspends the connection,
 * queues the context for the reload thread and returns true: the reply
 * then comes from that thread, and the caller must not touch ctx any more. */
bool es_api_reload_start(api_ctx *c);

#endif
