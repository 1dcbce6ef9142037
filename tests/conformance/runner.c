/*
 * es_conformance: runs the ONNX backend test data (as Debian's
 * libonnx-testdata ships it) through the engine and classifies each case.
 *
 * A case is a directory holding model.onnx and test_data_set_N/ folders of
 * input_<i>.pb and output_<i>.pb TensorProtos. Each case runs in its own
 * forked child with a time limit, so a crash or a hang is reported against
 * that case and the run goes on. The parent never calls the engine (it only
 * forks, reads results from pipes and counts), so forking is safe even
 * though the engine starts threads.
 *
 * Modes:
 *   --allowlist FILE   run only the listed cases; exit 1 unless all PASS
 *   --all              run every case and print the summary (the default)
 *   --write-passing F  write the sorted list of passing cases to F
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/fp16.h"
#include "base/status.h"
#include "edgeserve/engine.h"

#define DEFAULT_DATA_ROOT "/usr/share/libonnx-testdata/data"
#define DETAIL_MAX 480

static const char *const default_suites[] = {
	"node", "simple", "pytorch-converted", "pytorch-operator",
};
#define N_DEFAULT_SUITES (sizeof(default_suites) / sizeof(default_suites[0]))

typedef enum outcome {
	OUT_PASS,
	OUT_FAIL,
	OUT_UNSUPPORTED,
	OUT_ERROR,
	OUT_CRASH,
	OUT_TIMEOUT,
	OUT_MISSING, /* on the allowlist but not in the data */
	OUT_COUNT,
} outcome;

static const char *const outcome_names[OUT_COUNT] = {
	"PASS", "FAIL", "UNSUPPORTED", "ERROR", "CRASH", "TIMEOUT", "MISSING",
};

typedef struct test_case {
	char *id;  /* "suite/case" (owned) */
	char *dir; /* the case directory (owned) */
	size_t suite;
	bool selected;
	bool done;
	outcome result;
	char detail[DETAIL_MAX];
} test_case;

typedef struct config {
	const char *data_root;
	const char *allowlist;
	const char *write_passing;
	const char *filter;
	int jobs;
	int timeout_s;
	int threads;
	bool verbose;
	double rtol, atol;
} config;

/* ---- small helpers ----------------------------------------------------- */

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	char *s = malloc((size_t)n + 1);
	if (!s) {
		fprintf(stderr, "es_conformance: out of memory\n");
		exit(2);
	}
	va_start(ap, fmt);
	vsnprintf(s, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return s;
}

static bool is_file(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static bool is_dir(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Sorted names of the subdirectories of dir that start with prefix
 * (NULL: all). Returns the count; *out is owned by the caller. */
static size_t list_subdirs(const char *dir, const char *prefix, char ***out)
{
	DIR *d = opendir(dir);
	size_t n = 0, cap = 0;
	char **names = NULL;
	*out = NULL;
	if (!d)
		return 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		if (prefix && strncmp(e->d_name, prefix, strlen(prefix)) != 0)
			continue;
		char *path = xasprintf("%s/%s", dir, e->d_name);
		bool ok = is_dir(path);
		free(path);
		if (!ok)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			char **grown = realloc(names, cap * sizeof(*names));
			if (!grown) {
				fprintf(stderr, "es_conformance: out of memory\n");
				exit(2);
			}
			names = grown;
		}
		names[n++] = xasprintf("%s", e->d_name);
	}
	closedir(d);
	if (n)
		qsort(names, n, sizeof(*names), cmp_str);
	*out = names;
	return n;
}

static void free_names(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* ---- one case, in the child ------------------------------------------- */

typedef struct case_result {
	outcome kind;
	char detail[DETAIL_MAX];
} case_result;

static outcome set_result(case_result *r, outcome kind, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static outcome set_result(case_result *r, outcome kind, const char *fmt, ...)
{
	va_list ap;
	r->kind = kind;
	va_start(ap, fmt);
	vsnprintf(r->detail, sizeof(r->detail), fmt, ap);
	va_end(ap);
	return kind;
}

/* An engine error: ES_EUNSUPPORTED is "not yet supported", anything else
 * an error. */
static outcome engine_failure(case_result *r, int rc, const es_error *err,
			      const char *stage)
{
	return set_result(r, rc == ES_EUNSUPPORTED ? OUT_UNSUPPORTED : OUT_ERROR,
			  "%s: %s", stage,
			  err->msg[0] ? err->msg : es_strerror(rc));
}

static void format_dims(char *buf, size_t size, const es_tensor *t)
{
	size_t n = (size_t)snprintf(buf, size, "[");
	for (int i = 0; i < t->ndim && n < size; i++)
		n += (size_t)snprintf(buf + n, size - n, "%s%" PRId64,
				      i ? "," : "", t->dims[i]);
	if (n < size)
		snprintf(buf + n, size - n, "]");
}

static bool is_float_type(es_dtype dt)
{
	return dt == ES_DT_FLOAT || dt == ES_DT_DOUBLE ||
	       dt == ES_DT_FLOAT16 || dt == ES_DT_BFLOAT16;
}

static double float_at(const es_tensor *t, int64_t i)
{
	switch (t->dtype) {
	case ES_DT_FLOAT: return ((const float *)t->data)[i];
	case ES_DT_DOUBLE: return ((const double *)t->data)[i];
	case ES_DT_FLOAT16: return es_half_to_float(((const uint16_t *)t->data)[i]);
	case ES_DT_BFLOAT16: return es_bf16_to_float(((const uint16_t *)t->data)[i]);
	default: return 0;
	}
}

/* Integers (and bools) widened for exact comparison and printing. */
static bool int_at(const es_tensor *t, int64_t i, int64_t *s, uint64_t *u)
{
	*s = 0;
	*u = 0;
	switch (t->dtype) {
	case ES_DT_INT8: *s = ((const int8_t *)t->data)[i]; return true;
	case ES_DT_INT16: *s = ((const int16_t *)t->data)[i]; return true;
	case ES_DT_INT32: *s = ((const int32_t *)t->data)[i]; return true;
	case ES_DT_INT64: *s = ((const int64_t *)t->data)[i]; return true;
	case ES_DT_UINT8: *u = ((const uint8_t *)t->data)[i]; return false;
	case ES_DT_UINT16: *u = ((const uint16_t *)t->data)[i]; return false;
	case ES_DT_UINT32: *u = ((const uint32_t *)t->data)[i]; return false;
	case ES_DT_UINT64: *u = ((const uint64_t *)t->data)[i]; return false;
	case ES_DT_BOOL: *u = ((const uint8_t *)t->data)[i] != 0; return false;
	default: return false;
	}
}

static bool float_close(double actual, double expected, const config *cfg)
{
	if (isnan(expected))
		return isnan(actual);
	if (isinf(expected))
		return actual == expected;
	if (!isfinite(actual))
		return false;
	return fabs(actual - expected) <= cfg->atol + cfg->rtol * fabs(expected);
}

/* Compares one output; fills r and returns false on a mismatch. */
static bool compare_output(size_t idx, const char *name, const es_tensor *exp,
			   const es_tensor *got, const config *cfg,
			   case_result *r)
{
	char want[160], have[160];
	if (exp->dtype != got->dtype) {
		set_result(r, OUT_FAIL, "output %zu '%s': dtype expected %s, got %s",
			   idx, name, es_dtype_name(exp->dtype),
			   es_dtype_name(got->dtype));
		return false;
	}
	format_dims(want, sizeof(want), exp);
	format_dims(have, sizeof(have), got);
	bool same_shape = exp->ndim == got->ndim;
	for (int d = 0; same_shape && d < exp->ndim; d++)
		same_shape = exp->dims[d] == got->dims[d];
	if (!same_shape) {
		set_result(r, OUT_FAIL, "output %zu '%s': shape expected %s, got %s",
			   idx, name, want, have);
		return false;
	}
	if (exp->dtype == ES_DT_STRING) {
		set_result(r, OUT_UNSUPPORTED,
			   "output %zu '%s': string outputs are not compared",
			   idx, name);
		return false;
	}
	int64_t n = es_tensor_numel(exp);
	if (n > 0 && (!got->data || got->nbytes < exp->nbytes)) {
		set_result(r, OUT_FAIL,
			   "output %zu '%s': engine returned %zu bytes for shape %s, expected %zu",
			   idx, name, got->nbytes, have, exp->nbytes);
		return false;
	}
	int64_t first = -1, bad = 0;
	double max_err = 0;
	for (int64_t i = 0; i < n; i++) {
		bool ok;
		if (is_float_type(exp->dtype)) {
			double a = float_at(got, i), b = float_at(exp, i);
			ok = float_close(a, b, cfg);
			if (!ok && isfinite(a) && isfinite(b) &&
			    fabs(a - b) > max_err)
				max_err = fabs(a - b);
		} else {
			int64_t sa, sb;
			uint64_t ua, ub;
			int_at(got, i, &sa, &ua);
			int_at(exp, i, &sb, &ub);
			ok = sa == sb && ua == ub;
		}
		if (!ok) {
			if (first < 0)
				first = i;
			bad++;
		}
	}
	if (first < 0)
		return true;
	if (is_float_type(exp->dtype)) {
		set_result(r, OUT_FAIL,
			   "output %zu '%s' %s: element %" PRId64 " expected %.9g, got %.9g (%" PRId64 " of %" PRId64 " differ, max abs error %.3g)",
			   idx, name, want, first, float_at(exp, first),
			   float_at(got, first), bad, n, max_err);
	} else {
		int64_t sa, sb;
		uint64_t ua, ub;
		bool is_signed = int_at(exp, first, &sb, &ub);
		int_at(got, first, &sa, &ua);
		if (is_signed)
			set_result(r, OUT_FAIL,
				   "output %zu '%s' %s: element %" PRId64 " expected %" PRId64 ", got %" PRId64 " (%" PRId64 " of %" PRId64 " differ)",
				   idx, name, want, first, sb, sa, bad, n);
		else
			set_result(r, OUT_FAIL,
				   "output %zu '%s' %s: element %" PRId64 " expected %" PRIu64 ", got %" PRIu64 " (%" PRId64 " of %" PRId64 " differ)",
				   idx, name, want, first, ub, ua, bad, n);
	}
	return false;
}

/* Counts input_<i>.pb (or output_<i>.pb) files from 0 up. */
static size_t count_pb(const char *dir, const char *kind)
{
	size_t n = 0;
	for (;; n++) {
		char *path = xasprintf("%s/%s_%zu.pb", dir, kind, n);
		bool ok = is_file(path);
		free(path);
		if (!ok)
			return n;
	}
}

static void free_tensors(es_tensor *t, size_t n)
{
	for (size_t i = 0; t && i < n; i++)
		es_tensor_free_data(&t[i]);
	free(t);
}

/*
 * numpy has no bfloat16, so the ONNX test data stores bfloat16 tensors as
 * UINT16 TensorProtos holding the raw bits. Where the model says bfloat16,
 * read them as what they are.
 */
static void bf16_from_uint16(es_tensor *t, const es_value_info *vi)
{
	if (vi && vi->dtype == ES_DT_BFLOAT16 && t->dtype == ES_DT_UINT16)
		t->dtype = ES_DT_BFLOAT16;
}

static outcome run_data_set(es_model *model, es_session *session,
			    const char *set_dir, const char *set_name,
			    const config *cfg, case_result *r)
{
	size_t n_in = count_pb(set_dir, "input");
	size_t n_exp = count_pb(set_dir, "output");
	size_t model_in = es_model_num_inputs(model);
	size_t model_out = es_model_num_outputs(model);
	es_tensor *inputs = NULL, *expected = NULL, *outputs = NULL;
	es_error err;
	int rc;

	es_error_clear(&err);
	if (n_in != model_in)
		return set_result(r, OUT_ERROR,
				  "%s has %zu input files, the model has %zu inputs",
				  set_name, n_in, model_in);
	if (n_exp != model_out)
		return set_result(r, OUT_ERROR,
				  "%s has %zu output files, the model has %zu outputs",
				  set_name, n_exp, model_out);
	inputs = calloc(n_in + 1, sizeof(*inputs));
	expected = calloc(n_exp + 1, sizeof(*expected));
	outputs = calloc(model_out + 1, sizeof(*outputs));
	if (!inputs || !expected || !outputs) {
		set_result(r, OUT_ERROR, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n_in; i++) {
		char *path = xasprintf("%s/input_%zu.pb", set_dir, i);
		rc = es_tensor_read_pb(path, &inputs[i], NULL, &err);
		free(path);
		if (rc) {
			char stage[64];
			snprintf(stage, sizeof(stage), "reading %s/input_%zu.pb",
				 set_name, i);
			engine_failure(r, rc, &err, stage);
			goto out;
		}
		bf16_from_uint16(&inputs[i], es_model_input(model, i));
	}
	for (size_t i = 0; i < n_exp; i++) {
		char *path = xasprintf("%s/output_%zu.pb", set_dir, i);
		rc = es_tensor_read_pb(path, &expected[i], NULL, &err);
		free(path);
		if (rc) {
			char stage[64];
			snprintf(stage, sizeof(stage), "reading %s/output_%zu.pb",
				 set_name, i);
			engine_failure(r, rc, &err, stage);
			goto out;
		}
		bf16_from_uint16(&expected[i], es_model_output(model, i));
	}
	rc = es_session_run(session, inputs, n_in, outputs, &err);
	if (rc) {
		engine_failure(r, rc, &err, "run");
		goto out;
	}
	for (size_t i = 0; i < n_exp; i++)
		if (!compare_output(i, es_model_output(model, i)->name,
				    &expected[i], &outputs[i], cfg, r))
			goto out;
	set_result(r, OUT_PASS, "%s", "");
out:
	free_tensors(inputs, n_in);
	free_tensors(expected, n_exp);
	free(outputs); /* output data is owned by the session */
	return r->kind;
}

static void run_case(const test_case *c, const config *cfg, case_result *r)
{
	es_model *model = NULL;
	es_session *session = NULL;
	es_error err;
	char **sets = NULL;
	size_t n_sets = 0;
	int rc;

	es_error_clear(&err);
	char *model_path = xasprintf("%s/model.onnx", c->dir);
	es_model_options mopts = {.no_optimize = false};
	rc = es_model_load(model_path, &mopts, &model, &err);
	free(model_path);
	if (rc) {
		engine_failure(r, rc, &err, "load");
		return;
	}
	es_session_options sopts = {.threads = cfg->threads, .profile = false};
	rc = es_session_create(model, &sopts, &session, &err);
	if (rc) {
		engine_failure(r, rc, &err, "session");
		goto out_release_model;
	}
	n_sets = list_subdirs(c->dir, "test_data_set_", &sets);
	if (n_sets == 0) {
		set_result(r, OUT_ERROR, "no test_data_set_* directory");
		goto out_destroy_session;
	}
	for (size_t i = 0; i < n_sets; i++) {
		char *set_dir = xasprintf("%s/%s", c->dir, sets[i]);
		outcome o = run_data_set(model, session, set_dir, sets[i], cfg, r);
		free(set_dir);
		if (o != OUT_PASS)
			break;
	}
	free_names(sets, n_sets);
out_destroy_session:
	es_session_destroy(session);
out_release_model:
	es_model_release(model);
}

/* The child: run the case, write "KIND detail" to fd, exit. */
static void __attribute__((noreturn))
child_main(const test_case *c, const config *cfg, int fd)
{
	struct rlimit no_core = {0, 0};
	setrlimit(RLIMIT_CORE, &no_core);
	int devnull = open("/dev/null", O_WRONLY);
	if (devnull >= 0) {
		dup2(devnull, STDOUT_FILENO);
		close(devnull);
	}
	case_result r = {.kind = OUT_ERROR};
	run_case(c, cfg, &r);
	/* One line: messages may hold newlines. */
	for (char *p = r.detail; *p; p++)
		if (*p == '\n' || *p == '\r' || *p == '\t')
			*p = ' ';
	char line[DETAIL_MAX + 32];
	int n = snprintf(line, sizeof(line), "%s %s", outcome_names[r.kind],
			 r.detail);
	if (n > (int)sizeof(line) - 1)
		n = (int)sizeof(line) - 1;
	ssize_t off = 0;
	while (off < n) {
		ssize_t w = write(fd, line + off, (size_t)(n - off));
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		off += w;
	}
	close(fd);
	_exit(0);
}

/* ---- the parent: scheduling children ---------------------------------- */

typedef struct worker {
	pid_t pid;
	int fd;
	test_case *c;
	double deadline;
	char buf[DETAIL_MAX + 32];
	size_t len;
} worker;

static void finish_case(test_case *c, outcome kind, const char *detail,
			const config *cfg)
{
	c->done = true;
	c->result = kind;
	snprintf(c->detail, sizeof(c->detail), "%s", detail);
	if (cfg->verbose) {
		printf("%-11s %s%s%s\n", outcome_names[kind], c->id,
		       detail[0] ? ": " : "", detail);
		fflush(stdout);
	}
}

/* Turns what the child wrote and how it ended into a result. */
static void collect(worker *w, int status, const config *cfg)
{
	w->buf[w->len] = '\0';
	if (WIFSIGNALED(status)) {
		char detail[96];
		snprintf(detail, sizeof(detail), "killed by signal %d (%s)",
			 WTERMSIG(status), strsignal(WTERMSIG(status)));
		finish_case(w->c, OUT_CRASH, detail, cfg);
		return;
	}
	for (int k = 0; k < OUT_COUNT; k++) {
		size_t n = strlen(outcome_names[k]);
		if (strncmp(w->buf, outcome_names[k], n) == 0 &&
		    (w->buf[n] == ' ' || w->buf[n] == '\0')) {
			finish_case(w->c, (outcome)k,
				    w->buf[n] ? w->buf + n + 1 : "", cfg);
			return;
		}
	}
	char detail[96];
	snprintf(detail, sizeof(detail), "exited with status %d without a result",
		 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	finish_case(w->c, OUT_CRASH, detail, cfg);
}

static bool spawn(worker *w, test_case *c, const config *cfg)
{
	int fds[2];
	if (pipe(fds) != 0) {
		finish_case(c, OUT_ERROR, "pipe failed", cfg);
		return false;
	}
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid < 0) {
		close(fds[0]);
		close(fds[1]);
		finish_case(c, OUT_ERROR, "fork failed", cfg);
		return false;
	}
	if (pid == 0) {
		close(fds[0]);
		child_main(c, cfg, fds[1]);
	}
	/* Close the write end here, or the next child would inherit it and
	 * this pipe would never report end-of-file. */
	close(fds[1]);
	w->pid = pid;
	w->fd = fds[0];
	w->c = c;
	w->len = 0;
	w->deadline = now_s() + cfg->timeout_s;
	return true;
}

static void run_all(test_case *cases, size_t n_cases, const config *cfg)
{
	int jobs = cfg->jobs;
	worker *workers = calloc((size_t)jobs, sizeof(*workers));
	struct pollfd *pfds = calloc((size_t)jobs, sizeof(*pfds));
	int *slot_of = calloc((size_t)jobs, sizeof(*slot_of));
	if (!workers || !pfds || !slot_of) {
		fprintf(stderr, "es_conformance: out of memory\n");
		exit(2);
	}
	for (int i = 0; i < jobs; i++)
		workers[i].pid = 0;

	size_t next = 0;
	int running = 0;
	for (;;) {
		for (int i = 0; i < jobs && next < n_cases; i++) {
			if (workers[i].pid)
				continue;
			while (next < n_cases && !cases[next].selected)
				next++;
			if (next == n_cases)
				break;
			if (spawn(&workers[i], &cases[next], cfg))
				running++;
			next++;
		}
		while (next < n_cases && !cases[next].selected)
			next++;
		if (running == 0 && next == n_cases)
			break;
		if (running == 0)
			continue;

		int np = 0;
		double now = now_s(), soonest = now + 1.0;
		for (int i = 0; i < jobs; i++) {
			if (!workers[i].pid)
				continue;
			pfds[np].fd = workers[i].fd;
			pfds[np].events = POLLIN;
			pfds[np].revents = 0;
			slot_of[np++] = i;
			if (workers[i].deadline < soonest)
				soonest = workers[i].deadline;
		}
		int wait_ms = (int)((soonest - now) * 1000) + 1;
		if (wait_ms < 1)
			wait_ms = 1;
		int pr = poll(pfds, (nfds_t)np, wait_ms);
		if (pr < 0 && errno != EINTR) {
			perror("es_conformance: poll");
			exit(2);
		}
		for (int k = 0; pr > 0 && k < np; k++) {
			if (!pfds[k].revents)
				continue;
			worker *w = &workers[slot_of[k]];
			char chunk[512];
			ssize_t got = read(w->fd, chunk, sizeof(chunk));
			if (got < 0 && errno == EINTR)
				continue;
			if (got > 0) {
				size_t room = sizeof(w->buf) - 1 - w->len;
				size_t take = (size_t)got < room ? (size_t)got : room;
				memcpy(w->buf + w->len, chunk, take);
				w->len += take;
				continue;
			}
			/* End of file: the child is exiting. */
			int status = 0;
			close(w->fd);
			while (waitpid(w->pid, &status, 0) < 0 && errno == EINTR)
				;
			collect(w, status, cfg);
			w->pid = 0;
			running--;
		}
		now = now_s();
		for (int i = 0; i < jobs; i++) {
			worker *w = &workers[i];
			if (!w->pid || now < w->deadline)
				continue;
			kill(w->pid, SIGKILL);
			while (waitpid(w->pid, NULL, 0) < 0 && errno == EINTR)
				;
			close(w->fd);
			char detail[64];
			snprintf(detail, sizeof(detail), "no result after %d s",
				 cfg->timeout_s);
			finish_case(w->c, OUT_TIMEOUT, detail, cfg);
			w->pid = 0;
			running--;
		}
	}
	free(workers);
	free(pfds);
	free(slot_of);
}

/* ---- case discovery, allowlist, reports -------------------------------- */

static test_case *discover(const config *cfg, size_t *n_out)
{
	test_case *cases = NULL;
	size_t n = 0, cap = 0;
	for (size_t s = 0; s < N_DEFAULT_SUITES; s++) {
		char *suite_dir = xasprintf("%s/%s", cfg->data_root,
					    default_suites[s]);
		char **names;
		size_t k = list_subdirs(suite_dir, NULL, &names);
		if (k == 0)
			fprintf(stderr, "es_conformance: warning: no cases in %s\n",
				suite_dir);
		for (size_t i = 0; i < k; i++) {
			char *dir = xasprintf("%s/%s", suite_dir, names[i]);
			char *model = xasprintf("%s/model.onnx", dir);
			bool ok = is_file(model);
			free(model);
			if (!ok) {
				free(dir);
				continue;
			}
			if (n == cap) {
				cap = cap ? cap * 2 : 256;
				test_case *grown = realloc(cases, cap * sizeof(*cases));
				if (!grown) {
					fprintf(stderr, "es_conformance: out of memory\n");
					exit(2);
				}
				cases = grown;
			}
			memset(&cases[n], 0, sizeof(cases[n]));
			cases[n].id = xasprintf("%s/%s", default_suites[s], names[i]);
			cases[n].dir = dir;
			cases[n].suite = s;
			n++;
		}
		free_names(names, k);
		free(suite_dir);
	}
	*n_out = n;
	return cases;
}

/* Reads the allowlist: one "suite/case" per line, '#' starts a comment.
 * Returns the entries (owned by the caller) or exits on an I/O error. */
static char **read_allowlist(const char *path, size_t *n_out)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		fprintf(stderr, "es_conformance: cannot open allowlist '%s': %s\n",
			path, strerror(errno));
		exit(2);
	}
	char **entries = NULL;
	size_t n = 0, cap = 0;
	char line[1024];
	unsigned lineno = 0;
	while (fgets(line, sizeof(line), f)) {
		lineno++;
		char *hash = strchr(line, '#');
		if (hash)
			*hash = '\0';
		char *s = line, *e;
		while (*s == ' ' || *s == '\t')
			s++;
		e = s + strlen(s);
		while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' ||
				 e[-1] == '\r'))
			*--e = '\0';
		if (!*s)
			continue;
		if (!strchr(s, '/') || strchr(s, ' ')) {
			fprintf(stderr, "es_conformance: %s:%u: expected 'suite/case', got '%s'\n",
				path, lineno, s);
			exit(2);
		}
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			char **grown = realloc(entries, cap * sizeof(*entries));
			if (!grown) {
				fprintf(stderr, "es_conformance: out of memory\n");
				exit(2);
			}
			entries = grown;
		}
		entries[n++] = xasprintf("%s", s);
	}
	fclose(f);
	*n_out = n;
	return entries;
}

static void print_summary(const test_case *cases, size_t n_cases,
			  size_t n_missing)
{
	size_t counts[N_DEFAULT_SUITES][OUT_COUNT];
	size_t totals[OUT_COUNT];
	memset(counts, 0, sizeof(counts));
	memset(totals, 0, sizeof(totals));
	for (size_t i = 0; i < n_cases; i++) {
		if (!cases[i].selected || !cases[i].done)
			continue;
		counts[cases[i].suite][cases[i].result]++;
		totals[cases[i].result]++;
	}
	printf("\n%-18s %6s %7s %7s %14s %7s %8s %8s\n", "suite", "run",
	       "passed", "failed", "not supported", "errors", "crashed",
	       "timeouts");
	for (size_t s = 0; s <= N_DEFAULT_SUITES; s++) {
		const size_t *c = s < N_DEFAULT_SUITES ? counts[s] : totals;
		size_t run = 0;
		for (int k = 0; k < OUT_COUNT; k++)
			run += c[k];
		printf("%-18s %6zu %7zu %7zu %14zu %7zu %8zu %8zu\n",
		       s < N_DEFAULT_SUITES ? default_suites[s] : "total", run,
		       c[OUT_PASS], c[OUT_FAIL], c[OUT_UNSUPPORTED],
		       c[OUT_ERROR], c[OUT_CRASH], c[OUT_TIMEOUT]);
	}
	if (n_missing)
		printf("%zu allowlisted case(s) are not in the test data\n",
		       n_missing);
}

typedef struct reason_count {
	const char *detail;
	size_t count;
} reason_count;

static int cmp_reason(const void *a, const void *b)
{
	const reason_count *x = a, *y = b;
	if (x->count != y->count)
		return x->count < y->count ? 1 : -1;
	return strcmp(x->detail, y->detail);
}

/* The most common "not supported" messages: the engine's to-do list. */
static void print_unsupported_reasons(const test_case *cases, size_t n_cases,
				      size_t limit)
{
	reason_count *rc = calloc(n_cases + 1, sizeof(*rc));
	size_t n = 0;
	if (!rc)
		return;
	for (size_t i = 0; i < n_cases; i++) {
		if (!cases[i].done || cases[i].result != OUT_UNSUPPORTED)
			continue;
		size_t k;
		for (k = 0; k < n; k++)
			if (strcmp(rc[k].detail, cases[i].detail) == 0)
				break;
		if (k == n)
			rc[n++].detail = cases[i].detail;
		rc[k].count++;
	}
	if (n) {
		qsort(rc, n, sizeof(*rc), cmp_reason);
		printf("\nmost common reasons for 'not supported':\n");
		for (size_t k = 0; k < n && k < limit; k++)
			printf("%6zu  %s\n", rc[k].count, rc[k].detail);
	}
	free(rc);
}

static int write_passing(const char *path, const test_case *cases,
			 size_t n_cases)
{
	const char **ids = calloc(n_cases + 1, sizeof(*ids));
	size_t n = 0;
	if (!ids)
		return -1;
	for (size_t i = 0; i < n_cases; i++)
		if (cases[i].done && cases[i].result == OUT_PASS)
			ids[n++] = cases[i].id;
	qsort(ids, n, sizeof(*ids), cmp_str);
	FILE *f = fopen(path, "w");
	if (!f) {
		fprintf(stderr, "es_conformance: cannot write '%s': %s\n", path,
			strerror(errno));
		free(ids);
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%s\n", ids[i]);
	int rc = fclose(f) == 0 ? 0 : -1;
	if (rc)
		fprintf(stderr, "es_conformance: cannot write '%s'\n", path);
	else
		printf("wrote %zu passing case(s) to %s\n", n, path);
	free(ids);
	return rc;
}

/* ---- command line ------------------------------------------------------ */

static const char usage_text[] =
	"usage: es_conformance [--all | --allowlist FILE] [OPTIONS]\n"
	"\n"
	"Runs the ONNX backend test cases under DIR/{node,simple,pytorch-converted,\n"
	"pytorch-operator}, each in a forked child with a time limit, and prints\n"
	"passed / failed / not supported / errors / crashed / timeouts per suite.\n"
	"\n"
	"  --all                 run every case (the default); exit 0\n"
	"  --allowlist FILE      run only the cases listed in FILE (one suite/case\n"
	"                        per line, '#' comments); exit 1 if any is not PASS\n"
	"  --write-passing FILE  write the sorted list of passing cases to FILE\n"
	"  --filter SUBSTR       only cases whose suite/case name contains SUBSTR\n"
	"  --data DIR            test data root (default " DEFAULT_DATA_ROOT ")\n"
	"  -j N                  parallel cases (default 2)\n"
	"  --timeout SEC         time limit of one case (default 20)\n"
	"  --threads N           engine threads per case (default 1)\n"
	"  --rtol X, --atol X    float tolerance |a-b| <= atol + rtol*|b|\n"
	"                        (default rtol 1e-3, atol 1e-7)\n"
	"  -v, --verbose         print one line per case\n"
	"  -h, --help            show this help\n";

static int usage_error(const char *what, const char *arg)
{
	fprintf(stderr, "es_conformance: %s '%s'\n%s", what, arg, usage_text);
	return 2;
}

static bool parse_pos_int(const char *s, int max, int *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || !*s || *end || v < 1 || v > max)
		return false;
	*out = (int)v;
	return true;
}

static bool parse_nonneg_double(const char *s, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || !*s || *end || !(v >= 0) || !isfinite(v))
		return false;
	*out = v;
	return true;
}

int main(int argc, char **argv)
{
	config cfg = {
		.data_root = DEFAULT_DATA_ROOT,
		.jobs = 2,
		.timeout_s = 20,
		.threads = 1,
		.rtol = 1e-3,
		.atol = 1e-7,
	};
	bool all = false;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		bool takes = strcmp(a, "--allowlist") == 0 ||
			     strcmp(a, "--write-passing") == 0 ||
			     strcmp(a, "--filter") == 0 ||
			     strcmp(a, "--data") == 0 || strcmp(a, "-j") == 0 ||
			     strcmp(a, "--timeout") == 0 ||
			     strcmp(a, "--threads") == 0 ||
			     strcmp(a, "--rtol") == 0 || strcmp(a, "--atol") == 0;
		if (takes && !v)
			return usage_error("missing value for", a);
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			fputs(usage_text, stdout);
			return 0;
		} else if (strcmp(a, "--all") == 0) {
			all = true;
		} else if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
			cfg.verbose = true;
		} else if (strcmp(a, "--allowlist") == 0) {
			cfg.allowlist = v;
		} else if (strcmp(a, "--write-passing") == 0) {
			cfg.write_passing = v;
		} else if (strcmp(a, "--filter") == 0) {
			cfg.filter = v;
		} else if (strcmp(a, "--data") == 0) {
			cfg.data_root = v;
		} else if (strcmp(a, "-j") == 0) {
			if (!parse_pos_int(v, 256, &cfg.jobs))
				return usage_error("-j needs a number in [1, 256], got", v);
		} else if (strcmp(a, "--timeout") == 0) {
			if (!parse_pos_int(v, 86400, &cfg.timeout_s))
				return usage_error("--timeout needs seconds in [1, 86400], got", v);
		} else if (strcmp(a, "--threads") == 0) {
			if (!parse_pos_int(v, 4096, &cfg.threads))
				return usage_error("--threads needs a number in [1, 4096], got", v);
		} else if (strcmp(a, "--rtol") == 0) {
			if (!parse_nonneg_double(v, &cfg.rtol))
				return usage_error("--rtol needs a number >= 0, got", v);
		} else if (strcmp(a, "--atol") == 0) {
			if (!parse_nonneg_double(v, &cfg.atol))
				return usage_error("--atol needs a number >= 0, got", v);
		} else {
			return usage_error("unknown option", a);
		}
		if (takes)
			i++;
	}
	if (all && cfg.allowlist)
		return usage_error("--all and --allowlist exclude each other:",
				   "--all");

	size_t n_cases;
	test_case *cases = discover(&cfg, &n_cases);

	/* Select: the allowlist (if any), then the filter. */
	char **allow = NULL;
	size_t n_allow = 0;
	test_case *missing = NULL;
	size_t n_missing = 0;
	if (cfg.allowlist) {
		allow = read_allowlist(cfg.allowlist, &n_allow);
		missing = calloc(n_allow + 1, sizeof(*missing));
		if (!missing) {
			fprintf(stderr, "es_conformance: out of memory\n");
			return 2;
		}
		for (size_t a = 0; a < n_allow; a++) {
			if (cfg.filter && !strstr(allow[a], cfg.filter))
				continue;
			size_t i;
			for (i = 0; i < n_cases; i++)
				if (strcmp(cases[i].id, allow[a]) == 0)
					break;
			if (i < n_cases) {
				cases[i].selected = true;
			} else {
				missing[n_missing].id = allow[a];
				missing[n_missing].result = OUT_MISSING;
				n_missing++;
			}
		}
	} else {
		for (size_t i = 0; i < n_cases; i++)
			cases[i].selected = !cfg.filter ||
					    strstr(cases[i].id, cfg.filter);
	}

	size_t n_selected = 0;
	for (size_t i = 0; i < n_cases; i++)
		n_selected += cases[i].selected;
	if (cfg.allowlist)
		printf("es_conformance: %zu allowlisted case(s) from %s, data in %s\n",
		       n_allow, cfg.allowlist, cfg.data_root);
	else
		printf("es_conformance: %zu case(s) in %s\n", n_selected,
		       cfg.data_root);
	fflush(stdout);

	double t0 = now_s();
	run_all(cases, n_cases, &cfg);
	double elapsed = now_s() - t0;

	print_summary(cases, n_cases, n_missing);
	printf("time: %.1f s with -j %d\n", elapsed, cfg.jobs);
	if (!cfg.allowlist)
		print_unsupported_reasons(cases, n_cases, 40);

	int status = 0;
	if (cfg.write_passing && write_passing(cfg.write_passing, cases, n_cases))
		status = 2;
	if (cfg.allowlist) {
		size_t bad = n_missing;
		for (size_t i = 0; i < n_cases; i++)
			bad += cases[i].selected && cases[i].result != OUT_PASS;
		if (bad) {
			printf("\n%zu allowlisted case(s) did not pass:\n", bad);
			for (size_t i = 0; i < n_cases; i++)
				if (cases[i].selected && cases[i].result != OUT_PASS)
					printf("  %-11s %s%s%s\n",
					       outcome_names[cases[i].result],
					       cases[i].id,
					       cases[i].detail[0] ? ": " : "",
					       cases[i].detail);
			for (size_t i = 0; i < n_missing; i++)
				printf("  %-11s %s: not in the test data\n",
				       outcome_names[OUT_MISSING], missing[i].id);
			status = 1;
		} else {
			printf("all %zu allowlisted case(s) pass\n", n_selected);
		}
	}

	for (size_t i = 0; i < n_cases; i++) {
		free(cases[i].id);
		free(cases[i].dir);
	}
	free(cases);
	for (size_t a = 0; a < n_allow; a++)
		free(allow[a]);
	free(allow);
	free(missing);
	return status;
}
