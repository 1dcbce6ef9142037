/*
 * HTTP/1.1 client: URL parsing, an incremental response parser and
 * keep-alive connections with poll-based deadlines. See http_client.h.
 */
#include "cli/http_client.h"

#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/status.h"

#define RECV_BUF_SIZE 65536
#define DEFAULT_TIMEOUT_MS 30000
/* Body memory reserved up front from a Content-Length; more grows as the
 * bytes arrive, so a lying length costs nothing. */
#define BODY_PRERESERVE ((size_t)4 << 20)
/* Largest Content-Length or chunk size accepted at all (2^62). */
#define MAX_LENGTH_VALUE ((uint64_t)1 << 62)

/* ---- URLs -------------------------------------------------------------- */

int es_http_url_parse(const char *url, es_http_url *out, es_error *err)
{
	memset(out, 0, sizeof(*out));
	if (strncasecmp(url, "https://", 8) == 0)
		return es_error_set(err, ES_EINVAL,
				    "URL '%s': https is not supported (use http://)",
				    url);
	if (strncasecmp(url, "http://", 7) != 0)
		return es_error_set(err, ES_EINVAL,
				    "URL '%s': expected http://HOST[:PORT][/PREFIX]",
				    url);
	const char *p = url + 7;
	const char *host_end;
	const char *host = p;
	size_t host_len;
	if (*p == '[') {
		host = p + 1;
		host_end = strchr(host, ']');
		if (!host_end)
			return es_error_set(err, ES_EINVAL,
					    "URL '%s': IPv6 address without its closing ']'",
					    url);
		host_len = (size_t)(host_end - host);
		p = host_end + 1;
	} else {
		host_end = p + strcspn(p, ":/?#");
		host_len = (size_t)(host_end - host);
		p = host_end;
	}
	if (host_len == 0)
		return es_error_set(err, ES_EINVAL, "URL '%s': no host", url);
	if (host_len >= sizeof(out->host))
		return es_error_set(err, ES_EINVAL,
				    "URL '%s': host longer than %zu bytes", url,
				    sizeof(out->host) - 1);
	memcpy(out->host, host, host_len);

	if (*p == ':') {
		p++;
		size_t n = strspn(p, "0123456789");
		long port = n && n < 6 ? strtol(p, NULL, 10) : -1;
		if (port < 1 || port > 65535 || (p[n] && p[n] != '/' &&
						  p[n] != '?' && p[n] != '#'))
			return es_error_set(err, ES_EINVAL,
					    "URL '%s': port must be a number in [1, 65535]",
					    url);
		snprintf(out->port, sizeof(out->port), "%ld", port);
		p += n;
	} else if (*p && *p != '/' && *p != '?' && *p != '#') {
		return es_error_set(err, ES_EINVAL,
				    "URL '%s': unexpected '%c' after the host",
				    url, *p);
	} else {
		snprintf(out->port, sizeof(out->port), "80");
	}
	if (*p == '?' || *p == '#' || strpbrk(p, "?#"))
		return es_error_set(err, ES_EINVAL,
				    "URL '%s': a query or fragment is not allowed",
				    url);
	size_t prefix_len = strlen(p);
	while (prefix_len && p[prefix_len - 1] == '/')
		prefix_len--;
	if (prefix_len >= sizeof(out->prefix))
		return es_error_set(err, ES_EINVAL,
				    "URL '%s': path longer than %zu bytes", url,
				    sizeof(out->prefix) - 1);
	for (size_t i = 0; i < prefix_len; i++)
		if ((unsigned char)p[i] <= ' ' || p[i] == 0x7f)
			return es_error_set(err, ES_EINVAL,
					    "URL '%s': space or control character in the path",
					    url);
	memcpy(out->prefix, p, prefix_len);

	bool v6 = memchr(out->host, ':', host_len) != NULL;
	bool default_port = strcmp(out->port, "80") == 0;
	snprintf(out->authority, sizeof(out->authority), "%s%s%s%s%s",
		 v6 ? "[" : "", out->host, v6 ? "]" : "",
		 default_port ? "" : ":", default_port ? "" : out->port);
	return 0;
}

/* ---- responses --------------------------------------------------------- */

void es_http_response_init(es_http_response *r)
{
	memset(r, 0, offsetof(es_http_response, head));
	r->body = (es_buf)ES_BUF_INIT;
	r->content_length = -1;
	r->inference_header_length = -1;
	r->head[0] = '\0';
	r->n_headers = 0;
}

void es_http_response_reset(es_http_response *r)
{
	r->status = 0;
	r->minor_version = 0;
	r->keep_alive = false;
	r->chunked = false;
	r->content_length = -1;
	r->inference_header_length = -1;
	es_buf_reset(&r->body);
	r->head_len = 0;
	r->head[0] = '\0';
	r->n_headers = 0;
}

void es_http_response_free(es_http_response *r)
{
	es_buf_free(&r->body);
	es_http_response_reset(r);
}

const char *es_http_response_header(const es_http_response *r,
				    const char *name, size_t *len)
{
	size_t name_len = strlen(name);
	for (size_t i = 0; i < r->n_headers; i++) {
		const es_http_header *h = &r->headers[i];
		if (h->name_len == name_len &&
		    strncasecmp(r->head + h->name_off, name, name_len) == 0) {
			if (len)
				*len = h->value_len;
			return r->head + h->value_off;
		}
	}
	return NULL;
}

/* ---- the parser -------------------------------------------------------- */

void es_http_parser_init(es_http_parser *p, es_http_response *resp,
			 size_t max_body, bool head_request)
{
	memset(p, 0, sizeof(*p));
	p->state = ES_HTTP_PS_HEAD;
	p->resp = resp;
	p->max_body = max_body ? max_body : ES_HTTP_DEFAULT_MAX_BODY;
	p->head_request = head_request;
	es_http_response_reset(resp);
}

static bool is_tchar(unsigned char c)
{
	/* RFC 9110 token characters */
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9'))
		return true;
	return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Decimal digits only, no sign, no spaces; at most MAX_LENGTH_VALUE. */
static bool parse_length(const char *s, size_t len, uint64_t *out)
{
	uint64_t v = 0;
	if (len == 0 || len > 19)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	if (v > MAX_LENGTH_VALUE)
		return false;
	*out = v;
	return true;
}

/* Does the comma-separated list in value contain token (case-insensitive)? */
static bool list_has_token(const char *value, size_t len, const char *token)
{
	size_t tlen = strlen(token);
	size_t i = 0;
	while (i < len) {
		while (i < len && (value[i] == ' ' || value[i] == '\t' ||
				   value[i] == ','))
			i++;
		size_t start = i;
		while (i < len && value[i] != ',')
			i++;
		size_t end = i;
		while (end > start && (value[end - 1] == ' ' ||
				       value[end - 1] == '\t'))
			end--;
		if (end - start == tlen &&
		    strncasecmp(value + start, token, tlen) == 0)
			return true;
	}
	return false;
}

/* Is the last coding of a Transfer-Encoding list "chunked"? */
static bool last_coding_is_chunked(const char *value, size_t len)
{
	while (len && (value[len - 1] == ' ' || value[len - 1] == '\t'))
		len--;
	size_t start = len;
	while (start && value[start - 1] != ',')
		start--;
	while (start < len && (value[start] == ' ' || value[start] == '\t'))
		start++;
	return len - start == 7 && strncasecmp(value + start, "chunked", 7) == 0;
}

/* Parses resp->head[0, head_len): the status line and the header lines
 * (each ending in LF, optionally CR LF), then decides how the body is
 * delimited. */
static int parse_head(es_http_parser *p, es_error *err)
{
	es_http_response *r = p->resp;
	const char *h = r->head;
	size_t n = r->head_len;
	size_t pos = 0;

	/* status line: HTTP/1.x SP 3DIGIT [SP reason] */
	const char *eol = memchr(h, '\n', n);
	if (!eol)
		return es_error_set(err, ES_EPARSE, "response without a status line");
	size_t line_len = (size_t)(eol - h);
	if (line_len && h[line_len - 1] == '\r')
		line_len--;
	if (line_len < 12 || memcmp(h, "HTTP/1.", 7) != 0 || h[7] < '0' ||
	    h[7] > '9' || h[8] != ' ' || h[9] < '1' || h[9] > '9' ||
	    h[10] < '0' || h[10] > '9' || h[11] < '0' || h[11] > '9' ||
	    (line_len > 12 && h[12] != ' ')) {
		char shown[64];
		size_t k = line_len < 40 ? line_len : 40;
		for (size_t i = 0; i < k; i++)
			shown[i] = (h[i] >= ' ' && h[i] < 0x7f) ? h[i] : '?';
		shown[k] = '\0';
		return es_error_set(err, ES_EPARSE,
				    "malformed status line: expected 'HTTP/1.x NNN reason', got '%s%s'",
				    shown, line_len > 40 ? "..." : "");
	}
	r->minor_version = h[7] - '0';
	r->status = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');
	pos = (size_t)(eol - h) + 1;

	bool have_length = false, have_te = false, te_chunked = false;
	bool conn_close = false, conn_keep_alive = false;
	uint64_t length = 0;
	r->n_headers = 0;
	for (;;) {
		if (pos >= n)
			return es_error_set(err, ES_EPARSE,
					    "response head does not end with an empty line");
		eol = memchr(h + pos, '\n', n - pos);
		if (!eol)
			return es_error_set(err, ES_EPARSE,
					    "response header line without its line end");
		size_t start = pos;
		size_t end = (size_t)(eol - h);
		pos = end + 1;
		if (end > start && h[end - 1] == '\r')
			end--;
		if (end == start)
			break; /* the blank line */
		if (h[start] == ' ' || h[start] == '\t')
			return es_error_set(err, ES_EPARSE,
					    "folded response header line (obsolete line folding is not accepted)");
		size_t colon = start;
		while (colon < end && is_tchar((unsigned char)h[colon]))
			colon++;
		if (colon == start || colon == end || h[colon] != ':')
			return es_error_set(err, ES_EPARSE,
					    "malformed response header line %zu: expected 'Name: value'",
					    r->n_headers + 1);
		size_t vs = colon + 1, ve = end;
		while (vs < ve && (h[vs] == ' ' || h[vs] == '\t'))
			vs++;
		while (ve > vs && (h[ve - 1] == ' ' || h[ve - 1] == '\t'))
			ve--;
		for (size_t i = vs; i < ve; i++)
			if ((h[i] < ' ' && h[i] != '\t') || h[i] == 0x7f)
				return es_error_set(err, ES_EPARSE,
						    "control character in response header '%.*s'",
						    (int)(colon - start), h + start);
		if (r->n_headers == ES_HTTP_MAX_HEADERS)
			return es_error_set(err, ES_ETOOLARGE,
					    "response has more than %d header lines",
					    ES_HTTP_MAX_HEADERS);
		es_http_header *hd = &r->headers[r->n_headers++];
		/* head is at most ES_HTTP_MAX_HEAD (16 KiB) bytes: fits uint16 */
		hd->name_off = (uint16_t)start;
		hd->name_len = (uint16_t)(colon - start);
		hd->value_off = (uint16_t)vs;
		hd->value_len = (uint16_t)(ve - vs);

		const char *name = h + start;
		size_t name_len = colon - start;
		const char *value = h + vs;
		size_t value_len = ve - vs;
#define NAME_IS(lit) (name_len == sizeof(lit) - 1 && \
		      strncasecmp(name, lit, sizeof(lit) - 1) == 0)
		if (NAME_IS("content-length")) {
			uint64_t v;
			if (!parse_length(value, value_len, &v))
				return es_error_set(err, ES_EPARSE,
						    "bad Content-Length '%.*s': expected a decimal number of bytes",
						    (int)(value_len > 32 ? 32 : value_len),
						    value);
			if (have_length && v != length)
				return es_error_set(err, ES_EPARSE,
						    "two different Content-Length headers (%" PRIu64 " and %" PRIu64 ")",
						    length, v);
			have_length = true;
			length = v;
		} else if (NAME_IS("transfer-encoding")) {
			have_te = true;
			/* only the last header's last coding counts */
			te_chunked = last_coding_is_chunked(value, value_len);
		} else if (NAME_IS("connection")) {
			if (list_has_token(value, value_len, "close"))
				conn_close = true;
			if (list_has_token(value, value_len, "keep-alive"))
				conn_keep_alive = true;
		} else if (NAME_IS("inference-header-content-length")) {
			uint64_t v;
			if (!parse_length(value, value_len, &v))
				return es_error_set(err, ES_EPARSE,
						    "bad Inference-Header-Content-Length '%.*s'",
						    (int)(value_len > 32 ? 32 : value_len),
						    value);
			r->inference_header_length = (int64_t)v;
		}
#undef NAME_IS
	}

	r->keep_alive = r->minor_version >= 1 ? !conn_close :
						(conn_keep_alive && !conn_close);
	if (r->status == 101)
		return es_error_set(err, ES_EPARSE,
				    "unexpected 101 Switching Protocols (no upgrade was asked for)");
	if ((r->status >= 100 && r->status < 200) || r->status == 204 ||
	    r->status == 304 || p->head_request) {
		p->state = ES_HTTP_PS_DONE;
		if (have_length && !p->head_request)
			r->content_length = (int64_t)length;
		return 0;
	}
	if (have_te) {
		/* Transfer-Encoding overrides Content-Length (RFC 9112 6.3). */
		if (te_chunked) {
			r->chunked = true;
			p->state = ES_HTTP_PS_CHUNK_SIZE;
			p->line_len = 0;
		} else {
			r->keep_alive = false;
			p->state = ES_HTTP_PS_BODY_EOF;
		}
		return 0;
	}
	if (have_length) {
		if (length > p->max_body)
			return es_error_set(err, ES_ETOOLARGE,
					    "response body of %" PRIu64 " bytes is over the limit of %zu",
					    length, p->max_body);
		r->content_length = (int64_t)length;
		p->remaining = length;
		size_t pre = length < BODY_PRERESERVE ? (size_t)length :
							BODY_PRERESERVE;
		if (es_buf_reserve(&r->body, pre))
			return es_error_set(err, ES_ENOMEM, "out of memory");
		p->state = length ? ES_HTTP_PS_BODY_LENGTH : ES_HTTP_PS_DONE;
		return 0;
	}
	/* No length at all: the body runs to the end of the connection. */
	r->keep_alive = false;
	p->state = ES_HTTP_PS_BODY_EOF;
	return 0;
}

/* Head state: copies bytes into resp->head until the blank line. Returns
 * the number of bytes used, or a negative code. */
static long feed_head(es_http_parser *p, const char *data, size_t len,
		      es_error *err)
{
	es_http_response *r = p->resp;
	size_t room = ES_HTTP_MAX_HEAD - r->head_len;
	size_t take = len < room ? len : room;
	memcpy(r->head + r->head_len, data, take);
	size_t old_len = r->head_len;
	r->head_len += take;
	r->head[r->head_len] = '\0';

	/* Find "\n\n" or "\n\r\n" starting a little before the new bytes. */
	size_t i = p->scan;
	size_t end = 0;
	for (; i < r->head_len; i++) {
		if (r->head[i] != '\n')
			continue;
		if (i + 1 < r->head_len && r->head[i + 1] == '\n') {
			end = i + 2;
			break;
		}
		if (i + 2 < r->head_len && r->head[i + 1] == '\r' &&
		    r->head[i + 2] == '\n') {
			end = i + 3;
			break;
		}
	}
	if (!end) {
		/* keep the last two bytes in the next scan window */
		p->scan = r->head_len >= 2 ? r->head_len - 2 : 0;
		if (r->head_len == ES_HTTP_MAX_HEAD)
			return es_error_set(err, ES_ETOOLARGE,
					    "response head is over %d bytes without an empty line",
					    ES_HTTP_MAX_HEAD);
		return (long)take;
	}
	r->head_len = end;
	r->head[end] = '\0';
	int rc = parse_head(p, err);
	if (rc)
		return rc;
	long used = (long)(end - old_len);
	if (r->status >= 100 && r->status < 200) {
		/* interim response: forget it, parse the next one */
		es_http_response_reset(r);
		p->scan = 0;
		p->state = ES_HTTP_PS_HEAD;
	}
	return used;
}

/* Collects one line (up to LF) into p->line. Returns bytes used; sets
 * *done when the line is complete (p->line holds it without CR LF). */
static long feed_line(es_http_parser *p, const char *data, size_t len,
		      bool *done, es_error *err)
{
	const char *lf = memchr(data, '\n', len);
	size_t take = lf ? (size_t)(lf - data) + 1 : len;
	size_t content = lf ? take - 1 : take;
	if (p->line_len + content >= sizeof(p->line))
		return es_error_set(err, ES_EPARSE,
				    "chunk size line over %d bytes",
				    ES_HTTP_MAX_CHUNK_LINE);
	memcpy(p->line + p->line_len, data, content);
	p->line_len += content;
	*done = lf != NULL;
	if (*done) {
		if (p->line_len && p->line[p->line_len - 1] == '\r')
			p->line_len--;
		p->line[p->line_len] = '\0';
	}
	return (long)take;
}

/* "1a2B[;ext][ ]" -> size */
static int parse_chunk_size(const char *line, size_t len, uint64_t *out,
			    es_error *err)
{
	uint64_t v = 0;
	size_t i = 0;
	for (; i < len; i++) {
		char c = line[i];
		int d;
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			d = c - 'A' + 10;
		else
			break;
		if (v > (MAX_LENGTH_VALUE >> 4))
			return es_error_set(err, ES_EPARSE,
					    "chunk size '%.*s' is too large",
					    (int)(len > 32 ? 32 : len), line);
		v = (v << 4) | (uint64_t)d;
	}
	if (i == 0)
		goto bad;
	while (i < len && (line[i] == ' ' || line[i] == '\t'))
		i++;
	if (i < len && line[i] != ';')
		goto bad;
	*out = v;
	return 0;
bad:
	return es_error_set(err, ES_EPARSE,
			    "malformed chunk size line '%.*s': expected hex digits",
			    (int)(len > 32 ? 32 : len), line);
}

static int append_body(es_http_parser *p, const char *data, size_t len,
		       es_error *err)
{
	es_buf *b = &p->resp->body;
	if (len > p->max_body - b->len)
		return es_error_set(err, ES_ETOOLARGE,
				    "response body is over the limit of %zu bytes",
				    p->max_body);
	if (es_buf_append(b, data, len))
		return es_error_set(err, ES_ENOMEM, "out of memory");
	return 0;
}

int es_http_parser_feed(es_http_parser *p, const char *data, size_t len,
			size_t *consumed, es_error *err)
{
	size_t pos = 0;
	int rc;
	*consumed = 0;
	while (p->state != ES_HTTP_PS_DONE) {
		if (pos == len && p->state != ES_HTTP_PS_DONE) {
			*consumed = pos;
			return 0;
		}
		const char *d = data + pos;
		size_t n = len - pos;
		long used;
		bool line_done;
		switch (p->state) {
		case ES_HTTP_PS_HEAD:
			used = feed_head(p, d, n, err);
			if (used < 0)
				return (int)used;
			pos += (size_t)used;
			break;
		case ES_HTTP_PS_BODY_LENGTH: {
			size_t take = n < p->remaining ? n : (size_t)p->remaining;
			rc = append_body(p, d, take, err);
			if (rc)
				return rc;
			pos += take;
			p->remaining -= take;
			if (!p->remaining)
				p->state = ES_HTTP_PS_DONE;
			break;
		}
		case ES_HTTP_PS_BODY_EOF:
			rc = append_body(p, d, n, err);
			if (rc)
				return rc;
			pos += n;
			break;
		case ES_HTTP_PS_CHUNK_SIZE: {
			used = feed_line(p, d, n, &line_done, err);
			if (used < 0)
				return (int)used;
			pos += (size_t)used;
			if (!line_done)
				break;
			uint64_t size = 0;
			rc = parse_chunk_size(p->line, p->line_len, &size, err);
			if (rc)
				return rc;
			p->line_len = 0;
			if (size > p->max_body - p->resp->body.len)
				return es_error_set(err, ES_ETOOLARGE,
						    "response body is over the limit of %zu bytes",
						    p->max_body);
			if (size == 0) {
				p->state = ES_HTTP_PS_TRAILERS;
				p->trailer_len = 0;
			} else {
				p->remaining = size;
				p->state = ES_HTTP_PS_CHUNK_DATA;
			}
			break;
		}
		case ES_HTTP_PS_CHUNK_DATA: {
			size_t take = n < p->remaining ? n : (size_t)p->remaining;
			rc = append_body(p, d, take, err);
			if (rc)
				return rc;
			pos += take;
			p->remaining -= take;
			if (!p->remaining) {
				p->state = ES_HTTP_PS_CHUNK_DATA_END;
				p->line_len = 0;
			}
			break;
		}
		case ES_HTTP_PS_CHUNK_DATA_END:
			used = feed_line(p, d, n, &line_done, err);
			if (used < 0)
				return (int)used;
			pos += (size_t)used;
			if (!line_done)
				break;
			if (p->line_len != 0)
				return es_error_set(err, ES_EPARSE,
						    "chunk data longer than its size line said");
			p->state = ES_HTTP_PS_CHUNK_SIZE;
			break;
		case ES_HTTP_PS_TRAILERS:
			/* Trailer fields are skipped; an empty line ends them.
			 * line_len counts the current line's bytes. */
			while (pos < len) {
				char c = data[pos++];
				if (++p->trailer_len > ES_HTTP_MAX_HEAD)
					return es_error_set(err, ES_ETOOLARGE,
							    "chunked trailer over %d bytes",
							    ES_HTTP_MAX_HEAD);
				if (c == '\n') {
					if (p->line_len == 0) {
						p->state = ES_HTTP_PS_DONE;
						break;
					}
					p->line_len = 0;
				} else if (c != '\r') {
					p->line_len++;
				}
			}
			break;
		case ES_HTTP_PS_DONE:
			break;
		}
	}
	*consumed = pos;
	return 1;
}

int es_http_parser_eof(const es_http_parser *p, es_error *err)
{
	const es_http_response *r = p->resp;
	switch (p->state) {
	case ES_HTTP_PS_DONE:
	case ES_HTTP_PS_BODY_EOF:
		return 1;
	case ES_HTTP_PS_HEAD:
		if (r->head_len == 0)
			return es_error_set(err, ES_EIO,
					    "connection closed before a response");
		return es_error_set(err, ES_EPARSE,
				    "connection closed inside the response head (after %zu bytes)",
				    r->head_len);
	case ES_HTTP_PS_BODY_LENGTH:
		return es_error_set(err, ES_EPARSE,
				    "connection closed after %zu of %" PRId64 " body bytes",
				    r->body.len, r->content_length);
	default:
		return es_error_set(err, ES_EPARSE,
				    "connection closed inside the chunked body (after %zu bytes)",
				    r->body.len);
	}
}

/* ---- connections ------------------------------------------------------- */

struct es_http_client {
	es_http_url url;
	int fd;
	int timeout_ms;
	size_t max_body;
	bool reused; /* the open connection already carried a response */
	uint64_t connects;
	struct sockaddr_storage addr; /* last address that connected */
	socklen_t addr_len;
	es_buf req_head; /* request line and headers, rebuilt per request */
	es_http_parser parser;
	char *rbuf;
};

int es_http_client_create(const es_http_url *url, int timeout_ms,
			  size_t max_body, es_http_client **out, es_error *err)
{
	es_http_client *c = calloc(1, sizeof(*c));
	if (!c)
		goto out_nomem;
	c->rbuf = malloc(RECV_BUF_SIZE);
	if (!c->rbuf)
		goto out_free_client;
	c->url = *url;
	c->fd = -1;
	c->timeout_ms = timeout_ms > 0 ? timeout_ms : DEFAULT_TIMEOUT_MS;
	c->max_body = max_body ? max_body : ES_HTTP_DEFAULT_MAX_BODY;
	c->req_head = (es_buf)ES_BUF_INIT;
	*out = c;
	return 0;

out_free_client:
	free(c);
out_nomem:
	return es_error_set(err, ES_ENOMEM, "out of memory");
}

void es_http_client_close(es_http_client *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->reused = false;
}

void es_http_client_destroy(es_http_client *c)
{
	if (!c)
		return;
	es_http_client_close(c);
	es_buf_free(&c->req_head);
	free(c->rbuf);
	free(c);
}

uint64_t es_http_client_connects(const es_http_client *c)
{
	return c->connects;
}

bool es_http_client_connected(const es_http_client *c)
{
	return c->fd >= 0;
}

void es_http_client_adopt_fd(es_http_client *c, int fd)
{
	es_http_client_close(c);
	c->fd = fd;
	c->connects++;
}

/* Milliseconds left until deadline_ns, at least 0 (rounded up). */
static int ms_left(uint64_t deadline_ns)
{
	uint64_t now = es_now_ns();
	if (now >= deadline_ns)
		return 0;
	uint64_t ms = (deadline_ns - now + 999999) / 1000000;
	return ms > 0x7fffffff ? 0x7fffffff : (int)ms;
}

/* Waits for events on fd; 0 when ready, ES_ETIMEDOUT, or ES_EIO. */
static int wait_fd(int fd, short events, uint64_t deadline_ns, es_error *err)
{
	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = events};
		int left = ms_left(deadline_ns);
		if (left == 0)
			return es_error_set(err, ES_ETIMEDOUT, "timed out");
		int n = poll(&pfd, 1, left);
		if (n > 0)
			return 0;
		if (n == 0)
			continue; /* ms_left decides */
		if (errno != EINTR)
			return es_error_set(err, ES_EIO, "poll: %s",
					    strerror(errno));
	}
}

/* Non-blocking connect to one address, bounded by deadline_ns. Returns the
 * fd or a negative code; *sys_errno receives the failure's errno. */
static int connect_addr(const struct sockaddr *sa, socklen_t len,
			uint64_t deadline_ns, int *sys_errno)
{
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
			0);
	if (fd < 0) {
		*sys_errno = errno;
		return ES_EIO;
	}
	if (connect(fd, sa, len) != 0) {
		if (errno != EINPROGRESS) {
			*sys_errno = errno;
			goto out_close;
		}
		if (wait_fd(fd, POLLOUT, deadline_ns, NULL)) {
			*sys_errno = ETIMEDOUT;
			close(fd);
			return ES_ETIMEDOUT;
		}
		int so_error = 0;
		socklen_t sl = sizeof(so_error);
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &sl) != 0)
			so_error = errno;
		if (so_error) {
			*sys_errno = so_error;
			goto out_close;
		}
	}
	int one = 1;
	/* small request/response exchanges: do not wait for Nagle */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;

out_close:
	close(fd);
	return ES_EIO;
}

static int connect_deadline(es_http_client *c, uint64_t deadline_ns,
			    es_error *err)
{
	int sys_errno = 0;
	int fd;
	es_http_client_close(c);

	/* Reconnecting (the common case under load) skips the resolver. */
	if (c->addr_len) {
		fd = connect_addr((const struct sockaddr *)&c->addr, c->addr_len,
				  deadline_ns, &sys_errno);
		if (fd >= 0)
			goto out_connected;
	}

	struct addrinfo hints = {0}, *res = NULL;
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	int gai = getaddrinfo(c->url.host, c->url.port, &hints, &res);
	if (gai != 0)
		return es_error_set(err, ES_EIO, "cannot resolve '%s': %s",
				    c->url.host, gai_strerror(gai));
	fd = ES_EIO;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		fd = connect_addr(ai->ai_addr, ai->ai_addrlen, deadline_ns,
				  &sys_errno);
		if (fd >= 0) {
			if (ai->ai_addrlen <= sizeof(c->addr)) {
				memcpy(&c->addr, ai->ai_addr, ai->ai_addrlen);
				c->addr_len = ai->ai_addrlen;
			}
			break;
		}
		if (fd == ES_ETIMEDOUT)
			break;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		if (fd == ES_ETIMEDOUT)
			return es_error_set(err, ES_ETIMEDOUT,
					    "cannot connect to %s: timed out after %d ms",
					    c->url.authority, c->timeout_ms);
		return es_error_set(err, ES_EIO, "cannot connect to %s: %s",
				    c->url.authority,
				    sys_errno ? strerror(sys_errno) : "no address");
	}

out_connected:
	c->fd = fd;
	c->connects++;
	c->reused = false;
	return 0;
}

int es_http_client_connect(es_http_client *c, es_error *err)
{
	uint64_t deadline = es_now_ns() + (uint64_t)c->timeout_ms * 1000000u;
	return connect_deadline(c, deadline, err);
}

static int build_head(es_http_client *c, const es_http_request *req,
		      es_error *err)
{
	es_buf *b = &c->req_head;
	es_buf_reset(b);
	es_buf_printf(b, "%s %s%s HTTP/1.1\r\nHost: %s\r\n", req->method,
		      c->url.prefix, req->path, c->url.authority);
	if (req->content_type)
		es_buf_printf(b, "Content-Type: %s\r\n", req->content_type);
	if (req->body_len || strcmp(req->method, "GET") != 0)
		es_buf_printf(b, "Content-Length: %zu\r\n", req->body_len);
	if (req->inference_header_length >= 0)
		es_buf_printf(b, "Inference-Header-Content-Length: %" PRId64 "\r\n",
			      req->inference_header_length);
	es_buf_puts(b, "\r\n");
	if (b->failed)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	return 0;
}

/* Sends head and body. ES_EIO with *sys_errno set, or ES_ETIMEDOUT. */
static int send_all(es_http_client *c, const es_http_request *req,
		    uint64_t deadline_ns, int *sys_errno, es_error *err)
{
	struct iovec iov[2];
	iov[0].iov_base = c->req_head.data;
	iov[0].iov_len = c->req_head.len;
	iov[1].iov_base = (void *)req->body;
	iov[1].iov_len = req->body ? req->body_len : 0;
	int iovcnt = iov[1].iov_len ? 2 : 1;
	struct iovec *v = iov;
	while (iovcnt) {
		struct msghdr msg = {0};
		msg.msg_iov = v;
		msg.msg_iovlen = (size_t)iovcnt;
		ssize_t n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				int rc = wait_fd(c->fd, POLLOUT, deadline_ns, err);
				if (rc)
					return rc;
				continue;
			}
			*sys_errno = errno;
			return es_error_set(err, ES_EIO, "send to %s: %s",
					    c->url.authority, strerror(errno));
		}
		size_t sent = (size_t)n;
		while (iovcnt && sent >= v->iov_len) {
			sent -= v->iov_len;
			v++;
			iovcnt--;
		}
		if (iovcnt) {
			v->iov_base = (char *)v->iov_base + sent;
			v->iov_len -= sent;
		}
	}
	return 0;
}

/* One attempt on the current connection. *nothing_back is set when the
 * connection failed before any response byte arrived (retry candidate). */
static int exchange(es_http_client *c, const es_http_request *req,
		    es_http_response *resp, uint64_t deadline_ns,
		    bool *nothing_back, es_error *err)
{
	int sys_errno = 0;
	bool head = strcmp(req->method, "HEAD") == 0;
	size_t received = 0;
	int rc;

	*nothing_back = false;
	rc = send_all(c, req, deadline_ns, &sys_errno, err);
	if (rc) {
		*nothing_back = rc == ES_EIO;
		return rc;
	}
	es_http_parser_init(&c->parser, resp, c->max_body, head);
	for (;;) {
		rc = wait_fd(c->fd, POLLIN, deadline_ns, err);
		if (rc) {
			if (rc == ES_ETIMEDOUT)
				es_error_set(err, ES_ETIMEDOUT,
					     "no complete response from %s within %d ms",
					     c->url.authority, c->timeout_ms);
			return rc;
		}
		ssize_t n = recv(c->fd, c->rbuf, RECV_BUF_SIZE, 0);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN ||
			    errno == EWOULDBLOCK)
				continue;
			*nothing_back = received == 0;
			return es_error_set(err, ES_EIO, "receive from %s: %s",
					    c->url.authority, strerror(errno));
		}
		if (n == 0) {
			rc = es_http_parser_eof(&c->parser, err);
			if (rc == 1) {
				resp->keep_alive = false;
				return 0;
			}
			*nothing_back = received == 0;
			return rc;
		}
		received += (size_t)n;
		size_t used;
		rc = es_http_parser_feed(&c->parser, c->rbuf, (size_t)n, &used,
					 err);
		if (rc < 0)
			return rc;
		if (rc == 1) {
			/* Bytes after the response were not asked for: do not
			 * trust this connection with another request. */
			if (used != (size_t)n)
				resp->keep_alive = false;
			return 0;
		}
	}
}

/* RFC 9110 9.2.2: only these may be retried without knowing more. */
static bool is_idempotent(const char *method)
{
	static const char *const methods[] = {"GET", "HEAD", "PUT", "DELETE",
					      "OPTIONS", "TRACE"};
	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
		if (strcmp(method, methods[i]) == 0)
			return true;
	return false;
}

int es_http_client_request(es_http_client *c, const es_http_request *req,
			   es_http_response *resp, es_error *err)
{
	uint64_t deadline = es_now_ns() + (uint64_t)c->timeout_ms * 1000000u;
	int rc = build_head(c, req, err);
	if (rc)
		return rc;
	for (int attempt = 0;; attempt++) {
		bool was_reused = c->reused;
		if (c->fd < 0) {
			rc = connect_deadline(c, deadline, err);
			if (rc)
				return rc;
		}
		bool nothing_back;
		rc = exchange(c, req, resp, deadline, &nothing_back, err);
		if (rc == 0) {
			if (resp->keep_alive)
				c->reused = true;
			else
				es_http_client_close(c);
			return 0;
		}
		es_http_client_close(c);
		/* A kept-alive connection the server closed while idle:
		 * the request never reached it, send it again once. */
		if (!(attempt == 0 && was_reused && nothing_back &&
		      is_idempotent(req->method)))
			return rc;
	}
}
