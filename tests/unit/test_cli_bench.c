/*
 * Tests of `edgeserve bench` beyond its HTTP client (test_http_client.c):
 * the scan for the answering model version, the per-version tally and its
 * text and JSON forms, the error counts of --json, and SIGINT (results so
 * far, exit status 130), the last ones by running the binary against a
 * scripted server thread.
 *
 * bench.c and the two files it needs live in the edgeserve binary, not in
 * es_engine, so their sources are compiled into this test directly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/http_client.c"
#undef DEFAULT_TIMEOUT_MS
#include "cli/inputs.c"
#include "cli/opts.c"
#include "cli/bench.c"

/* ---- the scan for "model_version" --------------------------------------- */

static bool scan(const char *body, char *out, size_t size)
{
	return find_model_version(body, strlen(body), out, size);
}

static void test_find_model_version(void **state)
{
	(void)state;
	char v[VERSION_NAME_MAX + 1];

	assert_true(scan("{\"model_name\":\"m\",\"model_version\":\"12\",\"outputs\":[]}",
			 v, sizeof(v)));
	assert_string_equal(v, "12");
	/* whitespace around the colon, a bare number */
	assert_true(scan("{\"model_version\" :\n \"3\"}", v, sizeof(v)));
	assert_string_equal(v, "3");
	assert_true(scan("{\"model_version\": 42, \"outputs\":[]}", v, sizeof(v)));
	assert_string_equal(v, "42");
	/* the text used as a value first, the member after it */
	assert_true(scan("{\"id\":\"model_version\",\"model_version\":\"5\"}", v,
			 sizeof(v)));
	assert_string_equal(v, "5");
	/* a non-numeric version string is kept as it is */
	assert_true(scan("{\"model_version\":\"v2-beta\"}", v, sizeof(v)));
	assert_string_equal(v, "v2-beta");

	/* absent, empty, escaped, unterminated, too long */
	assert_false(scan("{\"model_name\":\"m\",\"outputs\":[]}", v, sizeof(v)));
	assert_false(scan("{\"model_version\":\"\"}", v, sizeof(v)));
	assert_false(scan("{\"model_version\":\"a\\\"b\"}", v, sizeof(v)));
	assert_false(scan("{\"model_version\":\"7", v, sizeof(v)));
	assert_false(scan("{\"model_version\":null}", v, sizeof(v)));
	assert_false(scan("{\"model_version\":\"1234567890123456789012345678901\"}", v,
			  sizeof(v)));
	assert_false(scan("{\"model_version\":1234567890123456789012345678901}", v,
			  sizeof(v)));
	assert_false(scan("", v, sizeof(v)));
	assert_false(scan("\"model_version\"", v, sizeof(v)));

	/* only the JSON part of a binary answer is looked at */
	static const char bin[] = "{\"outputs\":[]}\"model_version\":\"9\"";
	assert_false(find_model_version(bin, 14, v, sizeof(v)));
	assert_true(find_model_version(bin, sizeof(bin) - 1, v, sizeof(v)));
}

/* ---- the tally ----------------------------------------------------------- */

static void test_tally(void **state)
{
	(void)state;
	version_tally a, b;
	char text[512];
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));

	format_versions(&a, text, sizeof(text));
	assert_string_equal(text, "-");

	tally_add(&a, "10", 3);
	tally_add(&a, "2", 5);
	tally_add(&a, NULL, 1);
	tally_add(&b, "2", 1);
	tally_add(&b, "1", 7);
	tally_add(&b, "beta", 2);
	tally_merge(&a, &b);
	format_versions(&a, text, sizeof(text));
	/* numbers by value (2 before 10), then names */
	assert_string_equal(text, "1:7 2:6 10:3 beta:2 unknown:1");

	/* more versions than the table holds: the rest is "other" */
	memset(&a, 0, sizeof(a));
	for (int i = 1; i <= MAX_TALLY_VERSIONS + 3; i++) {
		char name[16];
		snprintf(name, sizeof(name), "%d", i);
		tally_add(&a, name, 1);
	}
	assert_int_equal(a.n, MAX_TALLY_VERSIONS);
	assert_int_equal(a.other, 3);
	format_versions(&a, text, sizeof(text));
	assert_non_null(strstr(text, "1:1 2:1 3:1"));
	assert_non_null(strstr(text, " other:3"));
}

/* ---- the binary against a scripted server ------------------------------ */

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
		for (int up = 0; up < 2; up++) {
			char *slash = strrchr(self, '/');
			if (!slash)
				return false;
			*slash = '\0';
		}
		snprintf(out, size, "%s/edgeserve", self);
	}
	return access(out, X_OK) == 0;
}

/*
 * A server that takes one connection at a time (bench opens one for the
 * setup, closes it, then one per worker: concurrency 1 here) and answers
 * GET with the metadata of model "m" and the k-th POST (k = 0 is bench's
 * probe) with script(k).
 */
typedef struct fake_server {
	int listen_fd;
	char port[16];
	atomic_int posts;
	void (*script)(int fd, int k);
	pthread_t thread;
} fake_server;

static void write_all(int fd, const void *data, size_t len)
{
	const char *p = data;
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n <= 0)
			return;
		p += n;
		len -= (size_t)n;
	}
}

/* status 200 or 503; bin (may be NULL) follows json as binary data. */
static void respond(int fd, int status, const char *json, const char *bin)
{
	char head[512];
	size_t jl = strlen(json), bl = bin ? strlen(bin) : 0;
	int n = snprintf(head, sizeof(head),
			 "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
			 "Content-Length: %zu\r\n",
			 status, status == 200 ? "OK" : "Service Unavailable", jl + bl);
	if (bin)
		n += snprintf(head + n, sizeof(head) - (size_t)n,
			      "Inference-Header-Content-Length: %zu\r\n", jl);
	n += snprintf(head + n, sizeof(head) - (size_t)n, "\r\n");
	write_all(fd, head, (size_t)n);
	write_all(fd, json, jl);
	if (bin)
		write_all(fd, bin, bl);
}

/* Reads one request; returns 'G' (GET), 'P' (POST) or 0 at EOF. */
static int read_one(int fd)
{
	static __thread char buf[65536];
	size_t len = 0;
	char *end = NULL;
	while (!end) {
		if (len == sizeof(buf) - 1)
			return 0;
		ssize_t n = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
		if (n <= 0)
			return 0;
		len += (size_t)n;
		buf[len] = '\0';
		end = strstr(buf, "\r\n\r\n");
	}
	size_t head = (size_t)(end + 4 - buf), body = 0;
	const char *cl = strstr(buf, "Content-Length: ");
	if (cl && cl < end)
		body = strtoul(cl + 16, NULL, 10);
	while (len < head + body) {
		char sink[4096];
		size_t want = head + body - len;
		ssize_t n = recv(fd, sink, want < sizeof(sink) ? want : sizeof(sink), 0);
		if (n <= 0)
			return 0;
		len += (size_t)n;
	}
	return buf[0] == 'G' ? 'G' : 'P';
}

static void *fake_main(void *arg)
{
	fake_server *s = arg;
	for (;;) {
		int fd = accept(s->listen_fd, NULL, NULL);
		if (fd < 0)
			return NULL; /* the test shut the listener down */
		int kind;
		while ((kind = read_one(fd)) != 0) {
			if (kind == 'G')
				respond(fd, 200,
					"{\"name\":\"m\",\"versions\":[\"1\",\"2\"],\"inputs\":"
					"[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[-1,2]}]}",
					NULL);
			else
				s->script(fd, atomic_fetch_add(&s->posts, 1));
		}
		close(fd);
	}
}

static void fake_start(fake_server *s, void (*script)(int, int))
{
	memset(s, 0, sizeof(*s));
	s->script = script;
	s->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(s->listen_fd >= 0);
	struct sockaddr_in a = {0};
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(s->listen_fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(s->listen_fd, 8), 0);
	socklen_t len = sizeof(a);
	assert_int_equal(getsockname(s->listen_fd, (struct sockaddr *)&a, &len), 0);
	snprintf(s->port, sizeof(s->port), "%u", ntohs(a.sin_port));
	assert_int_equal(pthread_create(&s->thread, NULL, fake_main, s), 0);
}

static void fake_stop(fake_server *s)
{
	shutdown(s->listen_fd, SHUT_RDWR); /* wakes accept */
	pthread_join(s->thread, NULL);
	close(s->listen_fd);
}

/* Starts the binary with args; *out_fd reads its stdout and stderr. */
static pid_t spawn(const char *binary, const char *port, const char *const *args,
		   int *out_fd)
{
	char url[64];
	const char *argv[32];
	int k = 0;
	snprintf(url, sizeof(url), "http://127.0.0.1:%s", port);
	argv[k++] = binary;
	argv[k++] = "bench";
	argv[k++] = url;
	for (int i = 0; args[i] && k < 31; i++)
		argv[k++] = args[i];
	argv[k] = NULL;
	int p[2];
	assert_int_equal(pipe(p), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(p[1], 1);
		dup2(p[1], 2);
		close(p[0]);
		close(p[1]);
		execv(binary, (char *const *)argv);
		_exit(127);
	}
	close(p[1]);
	*out_fd = p[0];
	return pid;
}

/* Reads fd to EOF into out; waits for pid; returns its exit status. */
static int collect(pid_t pid, int fd, char *out, size_t size)
{
	size_t n = 0;
	ssize_t got;
	while (n + 1 < size && (got = read(fd, out + n, size - 1 - n)) > 0)
		n += (size_t)got;
	out[n] = '\0';
	close(fd);
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

#define ANSWER(v) "{\"model_name\":\"m\",\"model_version\":\"" v "\",\"outputs\":[]}"

/* probe: 1; then 1, 2 (spaced), 503, none, 2 (binary), 1 (after "id") */
static void mixed_script(int fd, int k)
{
	switch (k % 7) {
	case 0:
	case 1: respond(fd, 200, ANSWER("1"), NULL); break;
	case 2: respond(fd, 200, "{\"model_name\":\"m\", \"model_version\" : \"2\", \"outputs\":[]}", NULL); break;
	case 3: respond(fd, 503, "{\"error\":\"model 'm' version 2 is UNLOADING\"}", NULL); break;
	case 4: respond(fd, 200, "{\"model_name\":\"m\",\"outputs\":[]}", NULL); break;
	case 5: respond(fd, 200, ANSWER("2"), "\"model_version\":\"9\""); break;
	default: respond(fd, 200, "{\"id\":\"q\",\"model_version\":\"1\",\"outputs\":[{\"data\":[1]}]}", NULL); break;
	}
}

static void steady_script(int fd, int k)
{
	(void)k;
	respond(fd, 200, ANSWER("7"), NULL);
}

static void test_bench_versions_and_errors(void **state)
{
	(void)state;
	char binary[4096];
	static char out[65536];
	if (!find_binary(binary, sizeof(binary)))
		skip();
	fake_server s;
	int fd;

	/* JSON: versions tallied, the 503 by status, failed counted */
	fake_start(&s, mixed_script);
	const char *json_args[] = {"--model", "m", "--random", "--concurrency", "1",
				   "--requests", "6", "--json", NULL};
	pid_t pid = spawn(binary, s.port, json_args, &fd);
	int status = collect(pid, fd, out, sizeof(out));
	fake_stop(&s);
	if (status != 0)
		fail_msg("bench exited %d: %s", status, out);
	assert_non_null(strstr(out, "\"concurrency\":1,\"requests\":6,\"ok\":5,"));
	assert_non_null(strstr(out, "\"errors\":{\"503\":1},\"failed\":1,"
				    "\"versions\":{\"1\":2,\"2\":2,\"unknown\":1},"
				    "\"interrupted\":false}"));
	assert_non_null(strstr(out, "\"timeout_ms\":10000,\"interrupted\":false,"));

	/* the table: an errors column and a versions column */
	fake_start(&s, mixed_script);
	const char *text_args[] = {"--model", "m", "--random", "--concurrency", "1",
				   "--requests", "6", NULL};
	pid = spawn(binary, s.port, text_args, &fd);
	status = collect(pid, fd, out, sizeof(out));
	fake_stop(&s);
	if (status != 0)
		fail_msg("bench exited %d: %s", status, out);
	assert_non_null(strstr(out, "errors      versions\n"));
	assert_non_null(strstr(out, "503:1       1:2 2:2 unknown:1\n"));

	/* no errors at all: said explicitly */
	fake_start(&s, steady_script);
	const char *ok_args[] = {"--model", "m", "--random", "--concurrency", "1",
				 "--requests", "5", "--json", NULL};
	pid = spawn(binary, s.port, ok_args, &fd);
	status = collect(pid, fd, out, sizeof(out));
	fake_stop(&s);
	if (status != 0)
		fail_msg("bench exited %d: %s", status, out);
	assert_non_null(strstr(out, "\"errors\":{},\"failed\":0,\"versions\":{\"7\":5},"));
}

static void test_bench_sigint(void **state)
{
	(void)state;
	char binary[4096];
	static char out[65536];
	if (!find_binary(binary, sizeof(binary)))
		skip();
	fake_server s;
	int fd;
	fake_start(&s, steady_script);
	const char *args[] = {"--model", "m", "--random", "--concurrency", "1,2",
			      "--duration", "10m", "--json", NULL};
	pid_t pid = spawn(binary, s.port, args, &fd);
	/* wait until the level runs (bounded: 30 s), then interrupt */
	for (int i = 0; i < 3000 && atomic_load(&s.posts) < 20; i++)
		poll(NULL, 0, 10);
	assert_true(atomic_load(&s.posts) >= 20);
	kill(pid, SIGINT);
	int status = collect(pid, fd, out, sizeof(out));
	fake_stop(&s);
	if (status != ES_CLI_EXIT_INTERRUPTED)
		fail_msg("bench exited %d after SIGINT: %s", status, out);
	/* the results so far: one level, marked, nothing lost */
	assert_non_null(strstr(out, "\"interrupted\":true,\"levels\":[{\"concurrency\":1,"));
	assert_non_null(strstr(out, "\"errors\":{},\"failed\":0,\"versions\":{\"7\":"));
	assert_null(strstr(out, "\"concurrency\":2,"));
	assert_non_null(strstr(out, "\"interrupted\":true}]}"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_find_model_version),
		cmocka_unit_test(test_tally),
		cmocka_unit_test(test_bench_versions_and_errors),
		cmocka_unit_test(test_bench_sigint),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
