/*
 * A small HTTP/1.1 client over POSIX sockets, for `edgeserve bench` and the
 * command-line tools that talk to a running server.
 *
 * One es_http_client is one keep-alive TCP connection to one host, used by
 * one thread at a time: es_http_client_request sends a request and reads the
 * whole response (Content-Length, chunked, or read-until-close bodies),
 * connecting again when the server closed the connection. Every wait goes
 * through poll with the request's deadline, so a stuck server costs at most
 * the timeout.
 *
 * The response parser (es_http_parser) is separate from the sockets so it
 * can be fed arbitrary byte splits in tests. Nothing a server sends is
 * trusted: the header section is bounded (ES_HTTP_MAX_HEAD bytes,
 * ES_HTTP_MAX_HEADERS lines), bodies are bounded by the caller's limit, and
 * every length and chunk size is parsed with overflow checks.
 */
#ifndef ES_CLI_HTTP_CLIENT_H
#define ES_CLI_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "edgeserve/engine.h"

#define ES_HTTP_MAX_HEAD 16384     /* status line + headers + blank line */
#define ES_HTTP_MAX_HEADERS 64     /* header lines kept per response */
#define ES_HTTP_MAX_CHUNK_LINE 256 /* "1a2b;ext=..." line of a chunk */
#define ES_HTTP_DEFAULT_MAX_BODY ((size_t)1 << 30)

/* ---- URLs -------------------------------------------------------------- */

/* http://HOST[:PORT][/PREFIX]; HOST may be a bracketed IPv6 literal. */
typedef struct es_http_url {
	char host[256];   /* without brackets */
	char port[8];     /* "80" when absent */
	char prefix[512]; /* path before the API's own paths, no trailing '/' */
	char authority[272]; /* HOST[:PORT] as the Host header wants it */
} es_http_url;

/* Parses url into out. ES_EINVAL (message says what is wrong) for another
 * scheme (https is not supported), an empty host, a bad port, a query or
 * fragment, or parts too long for the fields above. */
int es_http_url_parse(const char *url, es_http_url *out, es_error *err);

/* ---- responses and their parser ---------------------------------------- */

typedef struct es_http_header {
	uint16_t name_off, name_len;   /* into es_http_response.head */
	uint16_t value_off, value_len;
} es_http_header;

/* One parsed response. Big (the header bytes live inside it): allocate it,
 * do not put it on a small stack. body is owned (es_http_response_free). */
typedef struct es_http_response {
	int status;        /* 100..999 */
	int minor_version; /* HTTP/1.<minor> */
	bool keep_alive;   /* the connection may carry another request */
	bool chunked;
	int64_t content_length;          /* -1 when absent */
	int64_t inference_header_length; /* Inference-Header-Content-Length, -1 */
	es_buf body;       /* decoded (de-chunked) body */
	size_t head_len;
	char head[ES_HTTP_MAX_HEAD + 1]; /* raw status line and headers */
	size_t n_headers;
	es_http_header headers[ES_HTTP_MAX_HEADERS];
} es_http_response;

void es_http_response_init(es_http_response *r);
/* Forgets the previous response, keeps the body's memory. */
void es_http_response_reset(es_http_response *r);
void es_http_response_free(es_http_response *r);

/* Value of header `name` (case-insensitive), or NULL; *len receives its
 * length (values are not NUL-terminated). The first one wins. */
const char *es_http_response_header(const es_http_response *r,
				    const char *name, size_t *len);

enum es_http_parse_state {
	ES_HTTP_PS_HEAD,
	ES_HTTP_PS_BODY_LENGTH,
	ES_HTTP_PS_BODY_EOF, /* no length: the body ends when the peer closes */
	ES_HTTP_PS_CHUNK_SIZE,
	ES_HTTP_PS_CHUNK_DATA,
	ES_HTTP_PS_CHUNK_DATA_END,
	ES_HTTP_PS_TRAILERS,
	ES_HTTP_PS_DONE,
};

typedef struct es_http_parser {
	enum es_http_parse_state state;
	es_http_response *resp;
	size_t max_body;
	bool head_request;  /* the request was HEAD: no body follows */
	size_t scan;        /* head bytes already searched for the blank line */
	uint64_t remaining; /* of Content-Length or of the current chunk */
	size_t line_len;    /* bytes in line (chunk size or trailer line) */
	size_t trailer_len; /* trailer bytes so far (bounded by MAX_HEAD) */
	char line[ES_HTTP_MAX_CHUNK_LINE];
} es_http_parser;

/* Starts parsing a new response into resp (which is reset). max_body 0
 * means ES_HTTP_DEFAULT_MAX_BODY. */
void es_http_parser_init(es_http_parser *p, es_http_response *resp,
			 size_t max_body, bool head_request);

/*
 * Feeds len bytes. Returns 1 when the response is complete (*consumed says
 * how many of the bytes belonged to it; the rest start the next response),
 * 0 when it needs more bytes (all were consumed), or a negative code:
 * ES_EPARSE for a malformed status line, header, length or chunk,
 * ES_ETOOLARGE when the head or the body passes its bound. 1xx interim
 * responses are skipped.
 */
int es_http_parser_feed(es_http_parser *p, const char *data, size_t len,
			size_t *consumed, es_error *err);

/* The peer closed the connection. Returns 1 when that completes the
 * response (a body delimited by the close), ES_EIO when nothing of a
 * response had arrived, ES_EPARSE when it was cut short (the message says
 * where: in the head, after N of M body bytes, inside a chunk). */
int es_http_parser_eof(const es_http_parser *p, es_error *err);

/* ---- connections ------------------------------------------------------- */

typedef struct es_http_client es_http_client;

typedef struct es_http_request {
	const char *method;       /* "GET", "POST", ... */
	const char *path;         /* absolute path, e.g. "/v2/models/m/infer" */
	const char *content_type; /* NULL: no Content-Type header */
	const void *body;
	size_t body_len;          /* Content-Length is sent for every non-GET */
	int64_t inference_header_length; /* >= 0: send the header */
} es_http_request;

/*
 * Creates a client for url (not yet connected; the first request connects).
 * timeout_ms bounds connect and each whole request (<= 0: 30 s). max_body
 * bounds response bodies (0: ES_HTTP_DEFAULT_MAX_BODY). The caller owns
 * *out (es_http_client_destroy). ES_ENOMEM only.
 */
int es_http_client_create(const es_http_url *url, int timeout_ms,
			  size_t max_body, es_http_client **out, es_error *err);

/* Connects now (closing any previous connection). ES_EIO with the reason
 * ("cannot resolve", "connection refused") or ES_ETIMEDOUT. */
int es_http_client_connect(es_http_client *c, es_error *err);

/* For tests: uses an already connected socket fd (the client owns it). */
void es_http_client_adopt_fd(es_http_client *c, int fd);

/*
 * Sends req and reads the response into resp (any status is a success of
 * the exchange). Connects when not connected. When a kept-alive connection
 * turns out to be closed before any byte of the response came back, an
 * idempotent request (GET, HEAD, PUT, DELETE, OPTIONS) is sent once more on
 * a new connection: the server closed the connection while it was idle.
 * A POST is never repeated (the server may have acted on it); that failure
 * is ES_EIO like any other. Errors: ES_EIO
 * (connect failed, connection reset or closed), ES_ETIMEDOUT, ES_EPARSE
 * (malformed or truncated response), ES_ETOOLARGE, ES_ENOMEM. After an error
 * the connection is closed; the next request reconnects.
 */
int es_http_client_request(es_http_client *c, const es_http_request *req,
			   es_http_response *resp, es_error *err);

/* Closes the connection (the next request reconnects). */
void es_http_client_close(es_http_client *c);
void es_http_client_destroy(es_http_client *c);

/* Connections opened so far (the first one included). */
uint64_t es_http_client_connects(const es_http_client *c);

/* Is a connection open now (kept alive from the last exchange)? */
bool es_http_client_connected(const es_http_client *c);

#endif
