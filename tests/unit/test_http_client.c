/*
 * Tests of the HTTP/1.1 client behind `edgeserve bench`: URL parsing, the
 * response parser (status line, headers, Content-Length and chunked bodies,
 * truncated and malformed responses, every byte split), and whole requests
 * over a socketpair and over a listening socket served by a scripted
 * server thread (keep-alive, reconnect, timeouts).
 *
 * The client lives in the edgeserve binary (src/cli), not in es_engine, so
 * its source is compiled into this test directly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/http_client.c"

/* ---- helpers ----------------------------------------------------------- */

static es_http_response *new_response(void)
{
	es_http_response *r = malloc(sizeof(*r));
	assert_non_null(r);
	es_http_response_init(r);
	return r;
}

static void free_response(es_http_response *r)
{
	es_http_response_free(r);
	free(r);
}

/* Feeds text in pieces of `step` bytes (0: all at once). Returns the final
 * feed result; *consumed_total counts the bytes the response used. */
static int feed_split(es_http_parser *p, const char *text, size_t len,
		      size_t step, size_t *consumed_total, es_error *err)
{
	size_t pos = 0;
	int rc = 0;
	*consumed_total = 0;
	if (step == 0)
		step = len ? len : 1;
	while (pos < len) {
		size_t n = len - pos < step ? len - pos : step;
		size_t used;
		rc = es_http_parser_feed(p, text + pos, n, &used, err);
		if (rc < 0)
			return rc;
		*consumed_total += used;
		if (rc == 1)
			return 1;
		assert_int_equal(used, n);
		pos += n;
	}
	return rc;
}

/* Parses a whole response given as one string, with every split size from
 * 1 byte to all at once; all must agree. Returns the all-at-once result. */
static int parse_all_splits(const char *text, es_http_response *r,
			    size_t max_body, es_error *err)
{
	size_t len = strlen(text);
	es_http_parser p;
	int want = 0;
	size_t want_used = 0;
	es_buf want_body = ES_BUF_INIT;
	for (size_t step = 1; step <= len + 1; step++) {
		size_t used;
		es_http_parser_init(&p, r, max_body, false);
		int rc = feed_split(&p, text, len, step > len ? 0 : step, &used,
				    err);
		if (step == 1) {
			want = rc;
			want_used = used;
			es_buf_append(&want_body, r->body.data ? r->body.data : "",
				      r->body.len);
		} else {
			assert_int_equal(rc, want);
			if (rc == 1) {
				assert_int_equal(used, want_used);
				assert_int_equal(r->body.len, want_body.len);
				assert_memory_equal(r->body.data ? r->body.data : "",
						    want_body.data ? want_body.data : "",
						    r->body.len);
			}
		}
	}
	es_buf_free(&want_body);
	es_http_parser_init(&p, r, max_body, false);
	size_t used;
	return feed_split(&p, text, len, 0, &used, err);
}

/* ---- URLs -------------------------------------------------------------- */

static void test_url_parse(void **state)
{
	(void)state;
	es_http_url u;
	es_error err = {0};

	assert_int_equal(es_http_url_parse("http://127.0.0.1:8000", &u, &err), 0);
	assert_string_equal(u.host, "127.0.0.1");
	assert_string_equal(u.port, "8000");
	assert_string_equal(u.prefix, "");
	assert_string_equal(u.authority, "127.0.0.1:8000");

	assert_int_equal(es_http_url_parse("http://localhost/", &u, &err), 0);
	assert_string_equal(u.port, "80");
	assert_string_equal(u.authority, "localhost");
	assert_string_equal(u.prefix, "");

	assert_int_equal(es_http_url_parse("HTTP://h:81/serving/edge/", &u, &err), 0);
	assert_string_equal(u.prefix, "/serving/edge");

	assert_int_equal(es_http_url_parse("http://[::1]:9000", &u, &err), 0);
	assert_string_equal(u.host, "::1");
	assert_string_equal(u.authority, "[::1]:9000");

	const char *bad[] = {
		"https://127.0.0.1:8000", "ftp://x", "127.0.0.1:8000",
		"http://", "http://:80", "http://h:0", "http://h:65536",
		"http://h:80x", "http://h:", "http://h/a?b=1", "http://h/#f",
		"http://[::1", "http://h/a b",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = es_http_url_parse(bad[i], &u, &err);
		if (rc != ES_EINVAL)
			fail_msg("URL '%s' was accepted", bad[i]);
		assert_non_null(strstr(err.msg, "URL"));
	}
	assert_non_null(strstr((es_http_url_parse("https://x", &u, &err), err.msg),
			       "https is not supported"));
}

/* ---- status line and headers ------------------------------------------- */

static void test_status_line(void **state)
{
	(void)state;
	es_http_response *r = new_response();
	es_error err = {0};

	assert_int_equal(parse_all_splits("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
					  r, 0, &err), 1);
	assert_int_equal(r->status, 200);
	assert_int_equal(r->minor_version, 1);
	assert_true(r->keep_alive);

	/* no reason phrase, LF-only line ends */
	assert_int_equal(parse_all_splits("HTTP/1.1 503\nContent-Length: 0\n\n",
					  r, 0, &err), 1);
	assert_int_equal(r->status, 503);

	/* HTTP/1.0 closes unless asked to keep alive */
	assert_int_equal(parse_all_splits("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
					  r, 0, &err), 1);
	assert_false(r->keep_alive);
	assert_int_equal(parse_all_splits("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n",
					  r, 0, &err), 1);
	assert_true(r->keep_alive);
	assert_int_equal(parse_all_splits("HTTP/1.1 200 OK\r\nConnection: foo, close\r\nContent-Length: 0\r\n\r\n",
					  r, 0, &err), 1);
	assert_false(r->keep_alive);

	const char *bad[] = {
		"HTTP/2 200 OK\r\n\r\n",
		"HTTP/1.1 20 OK\r\n\r\n",
		"HTTP/1.1 2000 OK\r\n\r\n",
		"HTTP/1.1 abc OK\r\n\r\n",
		"HTTP/1.1  200 OK\r\n\r\n",
		"HTTP/1.1 200OK\r\n\r\n",
		"ICY 200 OK\r\n\r\n",
		"\r\n\r\n",
		"HTTP/1.1 099 x\r\n\r\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = parse_all_splits(bad[i], r, 0, &err);
		if (rc != ES_EPARSE)
			fail_msg("status line %zu accepted (rc %d)", i, rc);
	}
	assert_non_null(strstr(err.msg, "status line"));
	free_response(r);
}

static void test_headers(void **state)
{
	(void)state;
	es_http_response *r = new_response();
	es_error err = {0};
	size_t len;

	assert_int_equal(parse_all_splits("HTTP/1.1 200 OK\r\n"
					  "content-type:application/json \r\n"
					  "X-Empty:\r\n"
					  "Inference-Header-Content-Length: \t 12\r\n"
					  "Content-Length: 2\r\n"
					  "Content-Length: 2\r\n"
					  "\r\nhi",
					  r, 0, &err), 1);
	const char *v = es_http_response_header(r, "Content-Type", &len);
	assert_non_null(v);
	assert_int_equal(len, strlen("application/json"));
	assert_memory_equal(v, "application/json", len);
	v = es_http_response_header(r, "x-empty", &len);
	assert_non_null(v);
	assert_int_equal(len, 0);
	assert_null(es_http_response_header(r, "missing", &len));
	assert_int_equal(r->inference_header_length, 12);
	assert_int_equal(r->content_length, 2);
	assert_int_equal(r->body.len, 2);
	assert_memory_equal(r->body.data, "hi", 2);

	const char *bad[] = {
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi",
		"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1e3\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
		"HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n",
		"HTTP/1.1 200 OK\r\n: empty name\r\n\r\n",
		"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX: a\x01b\r\n\r\n",
		"HTTP/1.1 200 OK\r\nInference-Header-Content-Length: x\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\n\r\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = parse_all_splits(bad[i], r, 0, &err);
		if (rc != ES_EPARSE)
			fail_msg("bad head %zu accepted (rc %d)", i, rc);
	}
	free_response(r);
}

static void test_head_limits(void **state)
{
	(void)state;
	es_http_response *r = new_response();
	es_error err = {0};
	es_http_parser p;
	size_t used;

	/* too many header lines */
	es_buf b = ES_BUF_INIT;
	es_buf_puts(&b, "HTTP/1.1 200 OK\r\n");
	for (int i = 0; i <= ES_HTTP_MAX_HEADERS; i++)
		es_buf_printf(&b, "X-%d: %d\r\n", i, i);
	es_buf_puts(&b, "Content-Length: 0\r\n\r\n");
	es_http_parser_init(&p, r, 0, false);
	assert_int_equal(es_http_parser_feed(&p, b.data, b.len, &used, &err),
			 ES_ETOOLARGE);

	/* a head that never ends: stops at the bound, in any split */
	es_buf_reset(&b);
	es_buf_puts(&b, "HTTP/1.1 200 OK\r\n");
	while (b.len < ES_HTTP_MAX_HEAD + 100)
		es_buf_puts(&b, "X-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
	for (size_t step = 1; step < 5000; step = step * 3 + 1) {
		es_http_parser_init(&p, r, 0, false);
		assert_int_equal(feed_split(&p, b.data, b.len, step, &used, &err),
				 ES_ETOOLARGE);
		assert_non_null(strstr(err.msg, "over"));
	}
	es_buf_free(&b);

	/* body over the caller's limit, by Content-Length and by chunks */
	assert_int_equal(parse_all_splits("HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world",
					  r, 10, &err), ES_ETOOLARGE);
	assert_int_equal(parse_all_splits("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
					  "6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n",
					  r, 10, &err), ES_ETOOLARGE);
	assert_int_equal(parse_all_splits("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhelloworld",
					  r, 10, &err), 1);
	free_response(r);
}

/* ---- bodies ------------------------------------------------------------ */

static void test_content_length_body(void **state)
{
	(void)state;
	es_http_response *r = new_response();
	es_error err = {0};

	const char *two = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
			  "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
	es_http_parser p;
	size_t used;
	es_http_parser_init(&p, r, 0, false);
	assert_int_equal(es_http_parser_feed(&p, two, strlen(two), &used, &err), 1);
	assert_int_equal(used, strlen("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"));
	assert_memory_equal(r->body.data, "hello", 5);
	/* the rest is the next response */
	es_http_parser_init(&p, r, 0, false);
	assert_int_equal(es_http_parser_feed(&p, two + used, strlen(two) - used,
					     &used, &err), 1);
	assert_int_equal(r->status, 404);
	assert_int_equal(r->body.len, 0);

	/* 204 and 304 have no body whatever the headers say */
	assert_int_equal(parse_all_splits("HTTP/1.1 204 No Content\r\n\r\n", r, 0, &err), 1);
	assert_int_equal(r->body.len, 0);
	assert_true(r->keep_alive);

	/* the answer to HEAD has no body either */
	es_http_parser_init(&p, r, 0, true);
	const char *head = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
	assert_int_equal(es_http_parser_feed(&p, head, strlen(head), &used, &err), 1);
	assert_int_equal(r->body.len, 0);

	/* interim 100 Continue responses are skipped */
	assert_int_equal(parse_all_splits("HTTP/1.1 100 Continue\r\n\r\n"
					  "HTTP/1.1 100 Continue\r\nX: y\r\n\r\n"
					  "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
					  r, 0, &err), 1);
	assert_int_equal(r->status, 201);
	assert_memory_equal(r->body.data, "ok", 2);
	assert_null(es_http_response_header(r, "X", NULL));

	/* binary body bytes, NULs included */
	static const char bin[] = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n\0\1\0\2";
	es_http_parser_init(&p, r, 0, false);
	assert_int_equal(es_http_parser_feed(&p, bin, sizeof(bin) - 1, &used, &err), 1);
	assert_int_equal(r->body.len, 4);
	assert_memory_equal(r->body.data, "\0\1\0\2", 4);
	free_response(r);
}

static void test_chunked_body(void **state)
{
	(void)state;
	es_http_response *r = new_response();
	es_error err = {0};

	assert_int_equal(parse_all_splits("HTTP/1.1 200 OK\r\n"
					  "Transfer-Encoding: chunked\r\n"
					  "Content-Length: 999\r\n" /* ignored */
					  "\r\n"
					  "5\r\nhello\r\n"
					  "1;name=value\r\n \r\n"
					  "A \r\n0123456789\r\n"
					  "0\r\n"
					  "X-Trailer: 1\r\n"
					  "\r\n",
					  r, 0, &err), 1);
	assert_true(r->chunked);
	assert_true(r->keep_alive);
	assert_int_equal(r->body.len, 16);
	assert_memory_equal(r->body.data, "hello 0123456789", 16);

	/* bare LF line ends, upper-case hex, no trailers */
	assert_int_equal(parse_all_splits("HTTP/1.1 200 OK\nTransfer-Encoding: gzip, Chunked\n\n"
					  "1F\n0123456789abcdef0123456789abcde\n0\n\n",
					  r, 0, &err), 1);
	assert_int_equal(r->body.len, 31);

	/* a following response stays unconsumed */
	const char *two = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
			  "2\r\nok\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n";
	es_http_parser p;
	size_t used;
	es_http_parser_init(&p, r, 0, false);
	assert_int_equal(es_http_parser_feed(&p, two, strlen(two), &used, &err), 1);
	assert_string_equal(two + used, "HTTP/1.1 200 OK\r\n");

	const char *bad[] = {
		/* no hex digits */
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		/* junk after the size */
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5x\r\nhello\r\n0\r\n\r\n",
		/* data longer than the size */
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n",
		/* a size that overflows 64 bits */
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
		/* a negative size */
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = parse_all_splits(bad[i], r, 0, &err);
		if (rc != ES_EPARSE)
			fail_msg("bad chunked body %zu accepted (rc %d)", i, rc);
	}

	/* an endless chunk-size line is refused at its bound */
	es_buf b = ES_BUF_INIT;
	es_buf_puts(&b, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;");
	for (int i = 0; i < ES_HTTP_MAX_CHUNK_LINE; i++)
		es_buf_putc(&b, 'e');
	es_http_parser_init(&p, r, 0, false);
	assert_int_equal(es_http_parser_feed(&p, b.data, b.len, &used, &err),
			 ES_EPARSE);
	es_buf_free(&b);
	free_response(r);
}

static void test_truncated(void **state)
{
	(void)state;
	es_http_response *r = new_response();
	es_error err = {0};
	es_http_parser p;
	size_t used;

	/* nothing at all: a connection error, not a protocol error */
	es_http_parser_init(&p, r, 0, false);
	assert_int_equal(es_http_parser_eof(&p, &err), ES_EIO);

	const struct {
		const char *text;
		const char *msg;
	} cut[] = {
		{"HTTP/1.1 200 OK\r\nContent-Len", "inside the response head"},
		{"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", "after 5 of 10 body bytes"},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", "inside the chunked body"},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", "inside the chunked body"},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n", "inside the chunked body"},
	};
	for (size_t i = 0; i < sizeof(cut) / sizeof(cut[0]); i++) {
		es_http_parser_init(&p, r, 0, false);
		assert_int_equal(es_http_parser_feed(&p, cut[i].text,
						     strlen(cut[i].text), &used,
						     &err), 0);
		assert_int_equal(es_http_parser_eof(&p, &err), ES_EPARSE);
		if (!strstr(err.msg, cut[i].msg))
			fail_msg("case %zu: message '%s' lacks '%s'", i, err.msg,
				 cut[i].msg);
	}

	/* without a length, the close ends the body */
	const char *eof_body = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it";
	es_http_parser_init(&p, r, 0, false);
	assert_int_equal(es_http_parser_feed(&p, eof_body, strlen(eof_body),
					     &used, &err), 0);
	assert_false(r->keep_alive);
	assert_int_equal(es_http_parser_eof(&p, &err), 1);
	assert_int_equal(r->body.len, 9);
	free_response(r);
}

/* ---- over sockets ------------------------------------------------------ */

/* A scripted server: for each connection it accepts, it reads `n` requests
 * and answers each with the next canned response, then closes (or, with
 * `silent`, reads one request and never answers). */
typedef struct script_conn {
	const char *responses[4];
	int n;
	bool silent;
} script_conn;

typedef struct script {
	int listen_fd; /* -1: use fd */
	int fd;        /* one end of a socketpair */
	script_conn conns[4];
	int n_conns;
	char requests[8][2048]; /* the raw requests received, in order */
	int n_requests;
} script;

/* Reads one request (head + Content-Length body). false on EOF. */
static bool read_request(int fd, char *out, size_t size)
{
	size_t n = 0;
	for (;;) {
		if (n + 1 >= size)
			return false;
		ssize_t k = recv(fd, out + n, 1, 0);
		if (k <= 0)
			return false;
		n++;
		out[n] = '\0';
		if (n >= 4 && memcmp(out + n - 4, "\r\n\r\n", 4) == 0)
			break;
	}
	const char *cl = strstr(out, "Content-Length:");
	size_t body = cl ? strtoul(cl + 15, NULL, 10) : 0;
	while (body > 0) {
		if (n + 1 >= size)
			return false;
		ssize_t k = recv(fd, out + n, 1, 0);
		if (k <= 0)
			return false;
		n++;
		body--;
	}
	out[n] = '\0';
	return true;
}

static void *script_main(void *arg)
{
	script *s = arg;
	for (int c = 0; c < s->n_conns; c++) {
		int fd = s->listen_fd >= 0 ? accept(s->listen_fd, NULL, NULL) :
					     s->fd;
		if (fd < 0)
			return NULL;
		const script_conn *sc = &s->conns[c];
		int n = sc->silent ? 1 : sc->n;
		for (int i = 0; i < n; i++) {
			if (!read_request(fd, s->requests[s->n_requests & 7],
					  sizeof(s->requests[0])))
				break;
			s->n_requests++;
			if (sc->silent) {
				char buf[16];
				/* wait for the client to give up */
				while (recv(fd, buf, sizeof(buf), 0) > 0)
					;
				break;
			}
			const char *resp = sc->responses[i];
			send(fd, resp, strlen(resp), MSG_NOSIGNAL);
		}
		close(fd);
	}
	return NULL;
}

static int listen_any(char *port, size_t size)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	struct sockaddr_in a = {0};
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(fd, 8), 0);
	socklen_t len = sizeof(a);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	snprintf(port, size, "%u", ntohs(a.sin_port));
	return fd;
}

static void test_socketpair_exchange(void **state)
{
	(void)state;
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	static script s;
	memset(&s, 0, sizeof(s));
	s.listen_fd = -1;
	s.fd = sv[1];
	s.n_conns = 1;
	s.conns[0].n = 3;
	s.conns[0].responses[0] = "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"ok\":true}";
	s.conns[0].responses[1] = "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"
				  "Transfer-Encoding: chunked\r\n\r\n"
				  "4\r\n{\"er\r\n9\r\nror\":\"x\"}\r\n0\r\n\r\n";
	s.conns[0].responses[2] = "HTTP/1.1 200 OK\r\nInference-Header-Content-Length: 2\r\n"
				  "Content-Length: 6\r\nConnection: close\r\n\r\n{}\1\2\3\4";
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, script_main, &s), 0);

	es_http_url url;
	es_error err = {0};
	assert_int_equal(es_http_url_parse("http://example.test:8000/pre", &url, &err), 0);
	es_http_client *c = NULL;
	assert_int_equal(es_http_client_create(&url, 2000, 0, &c, &err), 0);
	es_http_client_adopt_fd(c, sv[0]);
	es_http_response *r = new_response();

	es_http_request get = {.method = "GET", .path = "/v2/models/m",
			       .inference_header_length = -1};
	assert_int_equal(es_http_client_request(c, &get, r, &err), 0);
	assert_int_equal(r->status, 200);
	assert_string_equal(r->body.data, "{\"ok\":true}");

	static const char body[] = "{\"inputs\":[]}";
	es_http_request post = {.method = "POST", .path = "/v2/models/m/infer",
				.content_type = "application/json",
				.body = body, .body_len = sizeof(body) - 1,
				.inference_header_length = -1};
	assert_int_equal(es_http_client_request(c, &post, r, &err), 0);
	assert_int_equal(r->status, 503);
	assert_string_equal(r->body.data, "{\"error\":\"x\"}");

	post.inference_header_length = 5;
	assert_int_equal(es_http_client_request(c, &post, r, &err), 0);
	assert_int_equal(r->status, 200);
	assert_int_equal(r->inference_header_length, 2);
	assert_int_equal(r->body.len, 6);
	assert_false(r->keep_alive);
	/* all three on the one connection */
	assert_int_equal(es_http_client_connects(c), 1);

	pthread_join(t, NULL);
	assert_int_equal(s.n_requests, 3);
	assert_string_equal(s.requests[0],
			    "GET /pre/v2/models/m HTTP/1.1\r\nHost: example.test:8000\r\n\r\n");
	assert_string_equal(s.requests[1],
			    "POST /pre/v2/models/m/infer HTTP/1.1\r\nHost: example.test:8000\r\n"
			    "Content-Type: application/json\r\nContent-Length: 13\r\n\r\n"
			    "{\"inputs\":[]}");
	assert_non_null(strstr(s.requests[2], "\r\nInference-Header-Content-Length: 5\r\n"));
	free_response(r);
	es_http_client_destroy(c);
}

static void test_socketpair_truncated_and_timeout(void **state)
{
	(void)state;
	es_http_url url;
	es_error err = {0};
	es_http_client *c = NULL;
	es_http_response *r = new_response();
	es_http_request get = {.method = "GET", .path = "/x",
			       .inference_header_length = -1};
	assert_int_equal(es_http_url_parse("http://h:1", &url, &err), 0);
	assert_int_equal(es_http_client_create(&url, 300, 0, &c, &err), 0);

	/* the server closes in the middle of the body */
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	static script s;
	memset(&s, 0, sizeof(s));
	s.listen_fd = -1;
	s.fd = sv[1];
	s.n_conns = 1;
	s.conns[0].n = 1;
	s.conns[0].responses[0] = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial";
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, script_main, &s), 0);
	es_http_client_adopt_fd(c, sv[0]);
	assert_int_equal(es_http_client_request(c, &get, r, &err), ES_EPARSE);
	assert_non_null(strstr(err.msg, "after 7 of 100 body bytes"));
	pthread_join(t, NULL);

	/* the server never answers */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	memset(&s, 0, sizeof(s));
	s.listen_fd = -1;
	s.fd = sv[1];
	s.n_conns = 1;
	s.conns[0].silent = true;
	assert_int_equal(pthread_create(&t, NULL, script_main, &s), 0);
	es_http_client_adopt_fd(c, sv[0]);
	uint64_t t0 = es_now_ns();
	assert_int_equal(es_http_client_request(c, &get, r, &err), ES_ETIMEDOUT);
	uint64_t ms = (es_now_ns() - t0) / 1000000;
	assert_true(ms >= 250 && ms < 2000);
	assert_non_null(strstr(err.msg, "within 300 ms"));
	/* the client closed its end: the silent server sees EOF and ends */
	pthread_join(t, NULL);
	free_response(r);
	es_http_client_destroy(c);
}

static void test_listen_reconnect(void **state)
{
	(void)state;
	char port[16];
	static script s;
	memset(&s, 0, sizeof(s));
	s.listen_fd = listen_any(port, sizeof(port));
	s.n_conns = 4;
	/* 1: answers with Connection: close */
	s.conns[0].n = 1;
	s.conns[0].responses[0] = "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\na";
	/* 2: keeps alive, but closes after one response (idle close) */
	s.conns[1].n = 1;
	s.conns[1].responses[0] = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb";
	/* 3: the retried request lands here */
	s.conns[2].n = 1;
	s.conns[2].responses[0] = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nc";
	/* 4: one response, then an idle close a POST runs into */
	s.conns[3].n = 1;
	s.conns[3].responses[0] = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nd";
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, script_main, &s), 0);

	char text[64];
	snprintf(text, sizeof(text), "http://127.0.0.1:%s", port);
	es_http_url url;
	es_error err = {0};
	es_http_client *c = NULL;
	es_http_response *r = new_response();
	es_http_request get = {.method = "GET", .path = "/v2/health/ready",
			       .inference_header_length = -1};
	assert_int_equal(es_http_url_parse(text, &url, &err), 0);
	assert_int_equal(es_http_client_create(&url, 2000, 0, &c, &err), 0);

	assert_int_equal(es_http_client_request(c, &get, r, &err), 0);
	assert_string_equal(r->body.data, "a");
	assert_int_equal(es_http_client_request(c, &get, r, &err), 0);
	assert_string_equal(r->body.data, "b");
	/* give the server time to close connection 2 while it is idle */
	usleep(50000);
	assert_int_equal(es_http_client_request(c, &get, r, &err), 0);
	assert_string_equal(r->body.data, "c");
	assert_int_equal(es_http_client_connects(c), 3);

	/* a POST is not repeated when the kept-alive connection is gone:
	 * the server might have acted on it */
	es_http_request post = {.method = "POST", .path = "/v2/models/m/infer",
				.body = "{}", .body_len = 2,
				.inference_header_length = -1};
	es_http_client_close(c);
	assert_int_equal(es_http_client_request(c, &post, r, &err), 0);
	assert_string_equal(r->body.data, "d");
	usleep(50000);
	assert_int_equal(es_http_client_request(c, &post, r, &err), ES_EIO);
	assert_int_equal(es_http_client_connects(c), 4);
	pthread_join(t, NULL);
	assert_int_equal(s.n_requests, 4);
	close(s.listen_fd);

	/* nothing listens there any more: a connection error */
	assert_int_equal(es_http_client_request(c, &get, r, &err), ES_EIO);
	assert_non_null(strstr(err.msg, "cannot connect to 127.0.0.1:"));
	free_response(r);
	es_http_client_destroy(c);
}

/* ---- the edgeserve bench command against the scripted server ----------- */

/* The binary next to the build's tests directory, or $ES_EDGESERVE. */
static bool find_binary(char *out, size_t size)
{
	const char *env = getenv("ES_EDGESERVE");
	if (env) {
		snprintf(out, size, "%s", env);
	} else {
		char self[2048];
		ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
		if (n <= 0)
			return false;
		self[n] = '\0';
		char *slash = strrchr(self, '/');
		if (!slash)
			return false;
		*slash = '\0';
		slash = strrchr(self, '/');
		if (!slash)
			return false;
		*slash = '\0';
		snprintf(out, size, "%s/edgeserve", self);
	}
	return access(out, X_OK) == 0;
}

/* Runs cmd, captures stdout+stderr into out; returns the exit status. */
static int run_capture(const char *cmd, char *out, size_t size)
{
	FILE *f = popen(cmd, "r");
	assert_non_null(f);
	size_t n = fread(out, 1, size - 1, f);
	out[n] = '\0';
	int st = pclose(f);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

#define META_BODY "{\"name\":\"m\",\"versions\":[\"3\"],\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[-1,2]}]}"
#define INFER_BODY "{\"model_name\":\"m\",\"model_version\":\"3\",\"outputs\":[]}"

static void test_bench_command(void **state)
{
	(void)state;
	char binary[4096], port[16], cmd[8192];
	static char out[65536];
	if (!find_binary(binary, sizeof(binary)))
		skip();

	static script s;
	memset(&s, 0, sizeof(s));
	s.listen_fd = listen_any(port, sizeof(port));
	s.n_conns = 2;
	/* setup: metadata and the probe on one connection */
	s.conns[0].n = 2;
	static char meta[512], infer[512], chunked[512];
	snprintf(meta, sizeof(meta), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%s",
		 strlen(META_BODY), META_BODY);
	snprintf(infer, sizeof(infer), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%s",
		 strlen(INFER_BODY), INFER_BODY);
	snprintf(chunked, sizeof(chunked),
		 "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%zx\r\n%s\r\n0\r\n\r\n",
		 strlen(INFER_BODY), INFER_BODY);
	s.conns[0].responses[0] = meta;
	s.conns[0].responses[1] = infer;
	/* the one worker: 200, 503, chunked 200 */
	s.conns[1].n = 3;
	s.conns[1].responses[0] = infer;
	s.conns[1].responses[1] = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\n{}";
	s.conns[1].responses[2] = chunked;
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, script_main, &s), 0);
	snprintf(cmd, sizeof(cmd),
		 "'%s' bench http://127.0.0.1:%s --model m --random --shape x=4x2 "
		 "--concurrency 1 --requests 3 --json 2>&1", binary, port);
	int status = run_capture(cmd, out, sizeof(out));
	pthread_join(t, NULL);
	if (status != 0)
		fail_msg("bench exited %d: %s", status, out);
	assert_non_null(strstr(out, "\"version\":\"3\""));
	assert_non_null(strstr(out, "\"shape\":[4,2]"));
	assert_non_null(strstr(out, "\"concurrency\":1,\"requests\":3,\"ok\":2,"));
	assert_non_null(strstr(out, "\"errors\":{\"503\":1}"));
	/* the request carried the random tensor of the asked shape */
	assert_non_null(strstr(s.requests[1], "POST /v2/models/m/infer HTTP/1.1\r\n"));
	assert_non_null(strstr(s.requests[1],
			       "{\"inputs\":[{\"name\":\"x\",\"shape\":[4,2],\"datatype\":\"FP32\",\"data\":["));
	assert_string_equal(s.requests[1], s.requests[2]);

	/* an unknown model is a setup error that names it */
	memset(&s, 0, sizeof(s));
	s.listen_fd = listen_any(port, sizeof(port));
	s.n_conns = 1;
	s.conns[0].n = 1;
	s.conns[0].responses[0] = "HTTP/1.1 404 Not Found\r\nContent-Length: 32\r\n\r\n"
				  "{\"error\":\"model 'zz' not found\"}";
	assert_int_equal(pthread_create(&t, NULL, script_main, &s), 0);
	snprintf(cmd, sizeof(cmd), "'%s' bench http://127.0.0.1:%s --model zz --random 2>&1",
		 binary, port);
	status = run_capture(cmd, out, sizeof(out));
	pthread_join(t, NULL);
	close(s.listen_fd);
	assert_int_equal(status, 1);
	assert_non_null(strstr(out, "model 'zz' not found on http://127.0.0.1:"));

	/* nobody listening: unreachable, exit 1 */
	snprintf(cmd, sizeof(cmd), "'%s' bench http://127.0.0.1:%s --model zz --random 2>&1",
		 binary, port);
	assert_int_equal(run_capture(cmd, out, sizeof(out)), 1);
	assert_non_null(strstr(out, "is unreachable"));
	close(s.listen_fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_url_parse),
		cmocka_unit_test(test_status_line),
		cmocka_unit_test(test_headers),
		cmocka_unit_test(test_head_limits),
		cmocka_unit_test(test_content_length_body),
		cmocka_unit_test(test_chunked_body),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_socketpair_exchange),
		cmocka_unit_test(test_socketpair_truncated_and_timeout),
		cmocka_unit_test(test_listen_reconnect),
		cmocka_unit_test(test_bench_command),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
