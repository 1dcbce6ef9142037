/*
 * The HTTP front end: libmicrohttpd in epoll thread-pool mode with
 * suspend/resume, serving KServe v2 REST, TF-Serving REST, the OVMS
 * config endpoint and Prometheus metrics on top of the serving core.
 *
 * Network threads parse requests and encode small replies; inference is
 * submitted to the serving core and the connection is suspended until a
 * device worker completes it (see api_int.h for the request life cycle).
 *
 * Shutdown, in this order (src/cli/serve.c):
 *   es_http_begin_shutdown   readiness false, replies close their connection
 *   es_http_quiesce          stop accepting connections
 *   es_server_drain          queued and running requests finish
 *   es_http_wait_idle        their replies are sent
 *   es_http_stop             close what is left, free everything
 */
#ifndef ES_API_HTTP_H
#define ES_API_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "edgeserve/engine.h"
#include "obs/metrics.h"
#include "serving/serving.h"

typedef struct es_http es_http;

/*
 * Starts the daemon on cfg->rest_bind_address:cfg->rest_port (0 picks a
 * free port: see es_http_port) with cfg->rest_workers network threads
 * (0: one per core). cfg and srv must outlive the returned object; metrics
 * may be NULL (then /metrics answers 404 and nothing is recorded). Errors:
 * ES_EINVAL for a bad bind address, ES_EIO when the socket cannot be bound,
 * ES_ENOMEM.
 */
int es_http_start(const es_server_config *cfg, es_server *srv,
		  es_metrics *metrics, es_http **out, es_error *err);

/* The port actually bound. */
int es_http_port(const es_http *h);

/* Readiness turns false (/v2/health/ready answers 503) and every reply
 * from now on closes its connection. Safe from any thread. */
void es_http_begin_shutdown(es_http *h);

/* Stops accepting new connections; open ones are still served. */
void es_http_quiesce(es_http *h);

/* Requests that have begun (headers received) and whose reply is not yet
 * sent. */
size_t es_http_inflight(const es_http *h);

/* Waits until no request is in flight or timeout_ms passed. Returns the
 * number still in flight. */
size_t es_http_wait_idle(es_http *h, int64_t timeout_ms);

/* Stops the daemon (closing every connection) and frees h. Every request
 * submitted to the serving core must have completed (es_server_drain). */
void es_http_stop(es_http *h);

#endif
