/*
 * `edgeserve bench URL --model M`: a closed-loop load generator for a
 * server speaking the KServe v2 REST protocol, in the spirit of Triton's
 * perf_analyzer.
 *
 * Setup: read the model's metadata (GET /v2/models/M[/versions/V]), build
 * one infer request body from input files or random data (JSON tensors, or
 * the binary tensor data extension with --binary), and send it once to make
 * sure the server accepts it. Then, for each concurrency level C, C threads
 * each keep one keep-alive connection busy with back-to-back requests for
 * the duration (or their share of --requests), timing every request on the
 * monotonic clock. Per level it prints throughput, latency percentiles of
 * the successful requests, the failures by HTTP status or kind, and how
 * many successful answers each model version gave (the response's
 * "model_version", found by a scan of the JSON header, not a parse).
 *
 * SIGINT stops the run early: the workers finish the request they have in
 * flight, the results so far are printed (the interrupted level included,
 * marked so) and the exit status is 130. A second SIGINT kills at once.
 *
 * Setup failures (server unreachable, unknown model, rejected request) exit
 * with status 1 and a message naming what failed; a level with errors is a
 * measurement, not a failure.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/fp16.h"
#include "base/status.h"
#include "cli/cli.h"
#include "cli/http_client.h"
#include "cli/inputs.h"
#include "edgeserve/engine.h"
#include "engine/io/npy.h"

#define PROG "edgeserve bench"
#define MAX_CONCURRENCY 1024
#define MAX_LEVELS 64
#define DEFAULT_TIMEOUT_MS 10000
#define CONNECT_BACKOFF_NS 10000000u /* after a failed connect, 10 ms */
#define MAX_STATUS 1000
#define WORKER_STACK ((size_t)256 << 10)
#define MAX_TALLY_VERSIONS 16 /* distinct model versions counted by name */
#define VERSION_NAME_MAX 24   /* longest version string kept, NUL included */
#define ES_CLI_EXIT_INTERRUPTED 130 /* 128 + SIGINT, as shells report it */

static const char bench_help[] =
	"usage: edgeserve bench URL --model NAME [OPTIONS]\n"
	"\n"
	"A closed-loop load generator for a KServe v2 REST server (edgeserve\n"
	"serve, Triton, OVMS, KServe runtimes). URL is http://HOST[:PORT], e.g.\n"
	"http://127.0.0.1:8000. It reads the model's metadata, builds one infer\n"
	"request, checks that the server accepts it, then for each concurrency\n"
	"level C runs C connections that each send requests back to back.\n"
	"\n"
	"model:\n"
	"  --model NAME         model to load (required)\n"
	"  --version V          model version (default: the server's choice)\n"
	"\n"
	"load:\n"
	"  --concurrency LIST   concurrency levels, e.g. 1,4,16 (default 1,4,16;\n"
	"                       each at most 1024)\n"
	"  --duration TIME      time per level: 10s, 500ms, 2m, 1h (default 10s)\n"
	"  --requests N         instead of a duration: N requests per level, split\n"
	"                       over the connections\n"
	"  --timeout-ms N       client-side limit per request, connect included\n"
	"                       (default 10000); a late request counts as 'timeout'\n"
	"\n"
	"request:\n"
	"  --input [NAME=]FILE  input NAME from FILE, an ONNX TensorProto (.pb) or\n"
	"                       a NumPy array (.npy); without NAME= the file goes\n"
	"                       to the next input not yet given. Repeat per input.\n"
	"  --random             fill every input not given with random data:\n"
	"                       floats in [-1, 1), integers in [0, 10), bools\n"
	"  --seed N             seed of the random data (default 0)\n"
	"  --shape NAME=DIMS    shape of input NAME (e.g. 1x3x224x224) for --random;\n"
	"                       dimensions the model leaves open are 1 otherwise\n"
	"  --binary             send tensors with the binary tensor data extension\n"
	"                       (Inference-Header-Content-Length) and ask for\n"
	"                       binary outputs\n"
	"\n"
	"output:\n"
	"  --json               print one JSON object instead of the table\n"
	"  -h, --help           show this help\n"
	"\n"
	"Per level: concurrency, requests (all that completed or failed), req/s\n"
	"(successful responses per second), p50/p90/p95/p99/max latency in ms of\n"
	"the successful requests (nearest rank), errors: HTTP statuses other\n"
	"than 2xx as STATUS:COUNT, 'conn' for connection failures, 'timeout' and\n"
	"'proto' (malformed responses), '-' for none; and versions: successful\n"
	"responses per answering model version (the response's \"model_version\")\n"
	"as VERSION:COUNT, e.g. 1:5012 2:331 ('unknown' when a response names\n"
	"none).\n"
	"\n"
	"Ctrl-C (SIGINT) stops early: requests in flight finish, the results so\n"
	"far are printed, the interrupted level marked; a second Ctrl-C kills.\n"
	"\n"
	"Options taking a value also accept --option=VALUE.\n"
	"Exit status: 0 the levels ran (even with errors); 1 setup failed (server\n"
	"unreachable, unknown model, request rejected); 2 bad command line;\n"
	"130 interrupted by SIGINT (the results so far were printed).\n";

/* ---- options ----------------------------------------------------------- */

typedef struct bench_opts {
	const char *url;
	const char *model;
	const char *version;
	int levels[MAX_LEVELS];
	size_t n_levels;
	uint64_t duration_ns; /* 0 in --requests mode */
	uint64_t requests;
	int timeout_ms;
	const char **input_specs; /* owned array of argv pointers */
	size_t n_input_specs;
	es_cli_shape *shapes; /* owned */
	size_t n_shapes;
	bool random;
	uint64_t seed;
	bool binary;
	bool json;
} bench_opts;

enum flag_id {
	FLAG_MODEL,
	FLAG_VERSION,
	FLAG_CONCURRENCY,
	FLAG_DURATION,
	FLAG_REQUESTS,
	FLAG_TIMEOUT,
	FLAG_INPUT,
	FLAG_RANDOM,
	FLAG_SEED,
	FLAG_SHAPE,
	FLAG_BINARY,
	FLAG_JSON,
	FLAG_HELP,
	FLAG_SHORT_HELP,
};

/* Indexed by enum flag_id. */
static const es_cli_flag bench_flags[] = {
	[FLAG_MODEL] = {"--model", true, false},
	[FLAG_VERSION] = {"--version", true, false},
	[FLAG_CONCURRENCY] = {"--concurrency", true, false},
	[FLAG_DURATION] = {"--duration", true, false},
	[FLAG_REQUESTS] = {"--requests", true, false},
	[FLAG_TIMEOUT] = {"--timeout-ms", true, false},
	[FLAG_INPUT] = {"--input", true, false},
	[FLAG_RANDOM] = {"--random", false, false},
	[FLAG_SEED] = {"--seed", true, false},
	[FLAG_SHAPE] = {"--shape", true, false},
	[FLAG_BINARY] = {"--binary", false, false},
	[FLAG_JSON] = {"--json", false, false},
	[FLAG_HELP] = {"--help", false, false},
	[FLAG_SHORT_HELP] = {"-h", false, false},
};

#define N_BENCH_FLAGS (sizeof(bench_flags) / sizeof(bench_flags[0]))

static int usage_error(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, PROG ": ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nRun 'edgeserve bench --help' for the options.\n");
	return ES_CLI_EXIT_USAGE;
}

static int setup_error(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

static int setup_error(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, PROG ": ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return ES_CLI_EXIT_FAILURE;
}

/* "10s", "500ms", "2m", "1.5s", "10" (seconds) -> ns; > 0 and <= 1 day. */
static bool parse_duration(const char *text, uint64_t *out_ns)
{
	char *end;
	if ((*text < '0' || *text > '9') && *text != '.')
		return false;
	errno = 0;
	double v = strtod(text, &end);
	if (errno || end == text || !isfinite(v) || v <= 0)
		return false;
	double scale;
	if (*end == '\0' || strcmp(end, "s") == 0)
		scale = 1e9;
	else if (strcmp(end, "ms") == 0)
		scale = 1e6;
	else if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0)
		scale = 60e9;
	else if (strcmp(end, "h") == 0)
		scale = 3600e9;
	else if (strcmp(end, "us") == 0)
		scale = 1e3;
	else
		return false;
	double ns = v * scale;
	if (ns < 1e6 || ns > 86400e9)
		return false;
	*out_ns = (uint64_t)ns;
	return true;
}

/* "1,4,16" */
static bool parse_levels(const char *text, bench_opts *o)
{
	const char *p = text;
	o->n_levels = 0;
	while (*p) {
		if (o->n_levels == MAX_LEVELS || *p < '0' || *p > '9')
			return false;
		errno = 0;
		char *end;
		long v = strtol(p, &end, 10);
		if (errno || v < 1 || v > MAX_CONCURRENCY)
			return false;
		o->levels[o->n_levels++] = (int)v;
		p = end;
		if (*p == ',') {
			p++;
			if (!*p)
				return false;
		} else if (*p) {
			return false;
		}
	}
	return o->n_levels > 0;
}

static void free_opts(bench_opts *o)
{
	es_cli_free_shapes(o->shapes, o->n_shapes);
	free(o->input_specs);
}

/* Returns -1 when parsing succeeded, otherwise the exit status. */
static int parse_args(int argc, char **argv, bench_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->levels[0] = 1;
	o->levels[1] = 4;
	o->levels[2] = 16;
	o->n_levels = 3;
	o->duration_ns = 10000000000ull;
	o->timeout_ms = DEFAULT_TIMEOUT_MS;
	o->input_specs = calloc((size_t)argc, sizeof(*o->input_specs));
	o->shapes = calloc((size_t)argc, sizeof(*o->shapes));
	if (!o->input_specs || !o->shapes) {
		fprintf(stderr, PROG ": out of memory\n");
		return ES_CLI_EXIT_FAILURE;
	}
	bool have_duration = false, have_requests = false;
	es_cli_opts sc;
	const char *value;
	int f;
	es_cli_opts_init(&sc, argc, argv, bench_flags, N_BENCH_FLAGS,
			 ES_CLI_OPTS_GNU, usage_error);
	while ((f = es_cli_opts_next(&sc, &value)) != ES_CLI_OPT_END) {
		if (f == ES_CLI_OPT_ERROR)
			return sc.exit_status;
		if (f == ES_CLI_OPT_POSITIONAL) {
			if (o->url)
				return usage_error("unexpected argument '%s' (the URL is '%s')",
						   value, o->url);
			o->url = value;
			continue;
		}

		uint64_t n;
		switch ((enum flag_id)f) {
		case FLAG_HELP:
		case FLAG_SHORT_HELP:
			fputs(bench_help, stdout);
			return ES_CLI_EXIT_OK;
		case FLAG_MODEL:
			if (!*value)
				return usage_error("--model needs a name");
			o->model = value;
			break;
		case FLAG_VERSION:
			if (!es_cli_parse_u64(value, 1, INT64_MAX, &n))
				return usage_error("--version '%s': expected a positive integer",
						   value);
			o->version = value;
			break;
		case FLAG_CONCURRENCY:
			if (!parse_levels(value, o))
				return usage_error("--concurrency '%s': expected a comma-separated list of integers in [1, %d], e.g. 1,4,16",
						   value, MAX_CONCURRENCY);
			break;
		case FLAG_DURATION:
			if (!parse_duration(value, &o->duration_ns))
				return usage_error("--duration '%s': expected a time from 1ms to 1 day such as 10s, 500ms or 2m",
						   value);
			have_duration = true;
			break;
		case FLAG_REQUESTS:
			if (!es_cli_parse_u64(value, 1, 1000000000, &o->requests))
				return usage_error("--requests '%s': expected an integer in [1, 1000000000]",
						   value);
			have_requests = true;
			break;
		case FLAG_TIMEOUT:
			if (!es_cli_parse_u64(value, 1, 3600000, &n))
				return usage_error("--timeout-ms '%s': expected an integer in [1, 3600000]",
						   value);
			o->timeout_ms = (int)n;
			break;
		case FLAG_INPUT:
			if (!*value)
				return usage_error("--input needs a file");
			o->input_specs[o->n_input_specs++] = value;
			break;
		case FLAG_RANDOM:
			o->random = true;
			break;
		case FLAG_SEED:
			if (!es_cli_parse_u64(value, 0, UINT64_MAX, &o->seed))
				return usage_error("--seed '%s': expected a non-negative integer",
						   value);
			break;
		case FLAG_SHAPE:
			if (!es_cli_parse_shape(value, &o->shapes[o->n_shapes]))
				return usage_error("--shape '%s': expected NAME=DIMS such as x=1x3x224x224",
						   value);
			o->n_shapes++;
			break;
		case FLAG_BINARY:
			o->binary = true;
			break;
		case FLAG_JSON:
			o->json = true;
			break;
		}
	}
	if (!o->url)
		return usage_error("missing URL (e.g. http://127.0.0.1:8000)");
	if (!o->model)
		return usage_error("missing --model NAME");
	if (have_duration && have_requests)
		return usage_error("--duration and --requests exclude each other");
	if (have_requests)
		o->duration_ns = 0;
	const char *twice = es_cli_duplicate_shape(o->shapes, o->n_shapes);
	if (twice)
		return usage_error("--shape given twice for input '%s'", twice);
	return -1;
}

/* ---- KServe v2 datatypes ------------------------------------------------ */

static const struct {
	const char *name;
	es_dtype dtype;
} v2_types[] = {
	{"BOOL", ES_DT_BOOL},     {"UINT8", ES_DT_UINT8},
	{"UINT16", ES_DT_UINT16}, {"UINT32", ES_DT_UINT32},
	{"UINT64", ES_DT_UINT64}, {"INT8", ES_DT_INT8},
	{"INT16", ES_DT_INT16},   {"INT32", ES_DT_INT32},
	{"INT64", ES_DT_INT64},   {"FP16", ES_DT_FLOAT16},
	{"FP32", ES_DT_FLOAT},    {"FP64", ES_DT_DOUBLE},
	{"BF16", ES_DT_BFLOAT16}, {"BYTES", ES_DT_STRING},
};

static es_dtype v2_dtype(const char *name)
{
	for (size_t i = 0; i < sizeof(v2_types) / sizeof(v2_types[0]); i++)
		if (strcmp(v2_types[i].name, name) == 0)
			return v2_types[i].dtype;
	return ES_DT_UNDEFINED;
}

/* ---- model metadata ---------------------------------------------------- */

typedef struct model_input {
	char name[256];
	char datatype[16];
	es_dtype dtype;
	int ndim; /* -1: the metadata gave no shape */
	int64_t dims[ES_MAX_DIMS]; /* -1: open */
	es_tensor tensor;          /* the data sent; owned */
	const char *file;          /* source, or NULL for random data */
} model_input;

typedef struct model_meta {
	char versions[128]; /* "1, 2" as the server lists them */
	model_input *inputs;
	size_t n_inputs;
} model_meta;

static void free_meta(model_meta *m)
{
	for (size_t i = 0; i < m->n_inputs; i++)
		es_tensor_free_data(&m->inputs[i].tensor);
	free(m->inputs);
	m->inputs = NULL;
	m->n_inputs = 0;
}

/* Copies a JSON string into a fixed field; false when it does not fit. */
static bool copy_str(char *dst, size_t size, const cJSON *item)
{
	if (!cJSON_IsString(item) || !item->valuestring)
		return false;
	size_t n = strlen(item->valuestring);
	if (n >= size)
		return false;
	memcpy(dst, item->valuestring, n + 1);
	return true;
}

/* The "error" member of a {"error": "..."} body, shortened and made
 * printable; or the start of the body itself. */
static void server_message(const es_http_response *r, char *out, size_t size)
{
	out[0] = '\0';
	if (r->body.len == 0)
		return;
	size_t json_len = r->body.len;
	if (r->inference_header_length >= 0 &&
	    (uint64_t)r->inference_header_length < json_len)
		json_len = (size_t)r->inference_header_length;
	cJSON *doc = cJSON_ParseWithLength(r->body.data, json_len);
	const cJSON *e = doc ? cJSON_GetObjectItemCaseSensitive(doc, "error") :
			       NULL;
	const char *text = cJSON_IsString(e) ? e->valuestring : r->body.data;
	size_t text_len = cJSON_IsString(e) ? strlen(text) : r->body.len;
	size_t k = 0;
	for (size_t i = 0; i < text_len && k + 4 < size; i++) {
		unsigned char c = (unsigned char)text[i];
		out[k++] = (c >= ' ' && c != 0x7f) || c >= 0x80 ? (char)c : ' ';
	}
	if (k + 4 >= size && text_len > k) {
		memcpy(out + k, "...", 3);
		k += 3;
	}
	out[k] = '\0';
	cJSON_Delete(doc);
}

static void version_path(const bench_opts *o, char *buf, size_t size,
			 const char *tail)
{
	if (o->version)
		snprintf(buf, size, "/v2/models/%s/versions/%s%s", o->model,
			 o->version, tail);
	else
		snprintf(buf, size, "/v2/models/%s%s", o->model, tail);
}

/* Model names go into the path as they are; refuse what would change its
 * meaning rather than percent-encoding silently. */
static bool model_name_ok(const char *name)
{
	for (const char *p = name; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if (c <= ' ' || c == 0x7f || c == '/' || c == '?' || c == '#' ||
		    c == '%')
			return false;
	}
	return strlen(name) < 256;
}

static int parse_meta(const bench_opts *o, const es_http_response *r,
		      model_meta *m, es_error *err)
{
	int rc = ES_EPARSE;
	cJSON *doc = cJSON_ParseWithLength(r->body.data, r->body.len);
	if (!doc || !cJSON_IsObject(doc)) {
		es_error_set(err, ES_EPARSE,
			     "model metadata of '%s' is not a JSON object",
			     o->model);
		goto out;
	}
	const cJSON *versions = cJSON_GetObjectItemCaseSensitive(doc, "versions");
	if (cJSON_IsArray(versions)) {
		size_t k = 0;
		const cJSON *v;
		cJSON_ArrayForEach(v, versions)
		{
			if (cJSON_IsString(v) && k + 2 < sizeof(m->versions))
				k += (size_t)snprintf(m->versions + k,
						      sizeof(m->versions) - k,
						      "%s%s", k ? ", " : "",
						      v->valuestring);
			if (k >= sizeof(m->versions))
				break;
		}
	}
	const cJSON *inputs = cJSON_GetObjectItemCaseSensitive(doc, "inputs");
	if (!cJSON_IsArray(inputs)) {
		es_error_set(err, ES_EPARSE,
			     "model metadata of '%s' has no \"inputs\" array",
			     o->model);
		goto out;
	}
	int n = cJSON_GetArraySize(inputs);
	if (n <= 0 || n > 1024) {
		es_error_set(err, ES_EPARSE,
			     "model metadata of '%s' lists %d inputs (expected 1 to 1024)",
			     o->model, n);
		goto out;
	}
	m->inputs = calloc((size_t)n, sizeof(*m->inputs));
	if (!m->inputs) {
		rc = es_error_set(err, ES_ENOMEM, "out of memory");
		goto out;
	}
	m->n_inputs = (size_t)n;
	for (int i = 0; i < n; i++) {
		const cJSON *in = cJSON_GetArrayItem(inputs, i);
		model_input *mi = &m->inputs[i];
		if (!copy_str(mi->name, sizeof(mi->name),
			      cJSON_GetObjectItemCaseSensitive(in, "name"))) {
			es_error_set(err, ES_EPARSE,
				     "model metadata of '%s': input %d has no usable \"name\"",
				     o->model, i);
			goto out;
		}
		if (!copy_str(mi->datatype, sizeof(mi->datatype),
			      cJSON_GetObjectItemCaseSensitive(in, "datatype")) ||
		    (mi->dtype = v2_dtype(mi->datatype)) == ES_DT_UNDEFINED) {
			es_error_set(err, ES_EPARSE,
				     "model metadata of '%s': input '%s' has no known \"datatype\" (expected BOOL, INT8..INT64, UINT8..UINT64, FP16, FP32, FP64 or BYTES)",
				     o->model, mi->name);
			goto out;
		}
		const cJSON *shape = cJSON_GetObjectItemCaseSensitive(in, "shape");
		if (!shape) {
			mi->ndim = -1;
			continue;
		}
		int nd = cJSON_IsArray(shape) ? cJSON_GetArraySize(shape) : -1;
		if (nd < 0 || nd > ES_MAX_DIMS) {
			es_error_set(err, ES_EPARSE,
				     "model metadata of '%s': input '%s' \"shape\" is not an array of at most %d dimensions",
				     o->model, mi->name, ES_MAX_DIMS);
			goto out;
		}
		mi->ndim = nd;
		for (int d = 0; d < nd; d++) {
			const cJSON *dim = cJSON_GetArrayItem(shape, d);
			double v = cJSON_IsNumber(dim) ? dim->valuedouble : -2;
			if (v < -1 || v > 9.0e15 || v != floor(v)) {
				es_error_set(err, ES_EPARSE,
					     "model metadata of '%s': input '%s' dimension %d is not an integer >= -1",
					     o->model, mi->name, d);
				goto out;
			}
			mi->dims[d] = (int64_t)v;
		}
	}
	rc = 0;
out:
	cJSON_Delete(doc);
	return rc;
}

/* ---- input tensors ----------------------------------------------------- */

static int check_shape(const model_input *mi, const char *what, int ndim,
		       const int64_t *dims, es_error *err)
{
	char want[256], got[256];
	if (mi->ndim < 0)
		return 0;
	es_cli_format_dims(want, sizeof(want), mi->ndim, mi->dims);
	es_cli_format_dims(got, sizeof(got), ndim, dims);
	if (mi->ndim != ndim)
		return es_error_set(err, ES_ESHAPE,
				    "input '%s' %s: expected rank %d %s (-1 is open), got rank %d %s",
				    mi->name, what, mi->ndim, want, ndim, got);
	for (int i = 0; i < ndim; i++)
		if (mi->dims[i] >= 0 && mi->dims[i] != dims[i])
			return es_error_set(err, ES_ESHAPE,
					    "input '%s' %s: dimension %d expected %" PRId64 ", got %" PRId64 " (expected %s, got %s)",
					    mi->name, what, i, mi->dims[i],
					    dims[i], want, got);
	return 0;
}

static const char *meta_input_name(const void *model, size_t i)
{
	return ((const model_meta *)model)->inputs[i].name;
}

/* Assigns --input files (NAME=FILE by name, FILE to the next free input)
 * and checks the --shape names. */
static int assign_input_files(const bench_opts *o, model_meta *m,
			      es_error *err)
{
	char label[300];
	snprintf(label, sizeof(label), "model '%s'", o->model);
	const es_cli_input_list list = { m, m->n_inputs, meta_input_name,
					 label };
	const char **files = calloc(m->n_inputs ? m->n_inputs : 1,
				    sizeof(*files));
	if (!files)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	int rc = es_cli_assign_inputs(&list, o->input_specs, o->n_input_specs,
				      files, err);
	if (rc == 0)
		rc = es_cli_check_shape_names(&list, o->shapes, o->n_shapes,
					      err);
	for (size_t i = 0; i < m->n_inputs; i++)
		m->inputs[i].file = files[i];
	free(files);
	return rc;
}

/* Assigns --input files, reads them or makes random data, and checks them
 * against the metadata. */
static int prepare_inputs(const bench_opts *o, model_meta *m, es_error *err)
{
	char names[512];
	int rc;

	rc = assign_input_files(o, m, err);
	if (rc)
		return rc;
	if (!o->random) {
		size_t n = 0;
		names[0] = '\0';
		for (size_t i = 0; i < m->n_inputs && n < sizeof(names); i++) {
			const model_input *mi = &m->inputs[i];
			if (mi->file)
				continue;
			char dims[128];
			if (mi->ndim >= 0)
				es_cli_format_dims(dims, sizeof(dims), mi->ndim, mi->dims);
			else
				snprintf(dims, sizeof(dims), "[...]");
			n += (size_t)snprintf(names + n, sizeof(names) - n,
					      "%s'%s' (%s %s)", n ? ", " : "",
					      mi->name, mi->datatype, dims);
		}
		if (n)
			return es_error_set(err, ES_EINVAL,
					    "no data for input %s: give --input NAME=FILE or --random",
					    names);
	}

	for (size_t i = 0; i < m->n_inputs; i++) {
		model_input *mi = &m->inputs[i];
		const es_cli_shape *shape =
			es_cli_find_shape(o->shapes, o->n_shapes, mi->name);
		if (mi->dtype == ES_DT_STRING)
			return es_error_set(err, ES_EUNSUPPORTED,
					    "input '%s' has datatype BYTES, which bench cannot send yet",
					    mi->name);
		if (mi->file) {
			char what[300];
			snprintf(what, sizeof(what), "from '%s'", mi->file);
			rc = es_cli_read_tensor_file(mi->file, &mi->tensor, err);
			if (rc)
				return es_error_prefix(err, "input '%s': cannot read '%s'",
						       mi->name, mi->file);
			if (mi->tensor.dtype != mi->dtype)
				return es_error_set(err, ES_ETYPE,
						    "input '%s' %s: expected datatype %s, the file holds %s",
						    mi->name, what, mi->datatype,
						    es_dtype_name(mi->tensor.dtype));
			rc = check_shape(mi, what, mi->tensor.ndim,
					 mi->tensor.dims, err);
			if (rc)
				return rc;
			if (shape && (shape->ndim != mi->tensor.ndim ||
				      memcmp(shape->dims, mi->tensor.dims,
					     sizeof(int64_t) * (size_t)shape->ndim)))
				return es_error_set(err, ES_ESHAPE,
						    "input '%s' %s: --shape disagrees with the file's shape",
						    mi->name, what);
			continue;
		}
		int ndim;
		int64_t dims[ES_MAX_DIMS];
		if (shape) {
			rc = check_shape(mi, "--shape", shape->ndim, shape->dims,
					 err);
			if (rc)
				return rc;
			ndim = shape->ndim;
			memcpy(dims, shape->dims, sizeof(dims));
		} else {
			if (mi->ndim < 0)
				return es_error_set(err, ES_ESHAPE,
						    "input '%s': the metadata gives no shape; use --shape %s=DIMS",
						    mi->name, mi->name);
			ndim = mi->ndim;
			for (int d = 0; d < ndim; d++)
				dims[d] = mi->dims[d] >= 0 ? mi->dims[d] : 1;
		}
		rc = es_tensor_alloc(&mi->tensor, mi->dtype, ndim, dims, err);
		if (rc)
			return es_error_prefix(err, "input '%s'", mi->name);
		rc = es_cli_fill_random(&mi->tensor, o->seed, i, err);
		if (rc)
			return es_error_prefix(err, "input '%s'", mi->name);
	}
	return 0;
}

/* ---- the request body -------------------------------------------------- */

/* Appends t's elements as a flat JSON array. Non-finite floats cannot be
 * written in JSON: ES_EINVAL naming the element. */
static int append_json_data(es_buf *b, const model_input *mi, es_error *err)
{
	const es_tensor *t = &mi->tensor;
	int64_t n = es_tensor_numel(t);
	es_buf_putc(b, '[');
	for (int64_t i = 0; i < n; i++) {
		double f = 0;
		bool is_float = false;
		if (i)
			es_buf_putc(b, ',');
		switch (t->dtype) {
		case ES_DT_FLOAT:
			f = ((const float *)t->data)[i];
			is_float = true;
			break;
		case ES_DT_DOUBLE:
			f = ((const double *)t->data)[i];
			is_float = true;
			break;
		case ES_DT_FLOAT16:
			f = es_half_to_float(((const uint16_t *)t->data)[i]);
			is_float = true;
			break;
		case ES_DT_BFLOAT16:
			f = es_bf16_to_float(((const uint16_t *)t->data)[i]);
			is_float = true;
			break;
		case ES_DT_BOOL:
			es_buf_puts(b, ((const uint8_t *)t->data)[i] ? "true" :
								      "false");
			break;
		case ES_DT_INT8: es_buf_printf(b, "%d", ((const int8_t *)t->data)[i]); break;
		case ES_DT_UINT8: es_buf_printf(b, "%u", ((const uint8_t *)t->data)[i]); break;
		case ES_DT_INT16: es_buf_printf(b, "%d", ((const int16_t *)t->data)[i]); break;
		case ES_DT_UINT16: es_buf_printf(b, "%u", ((const uint16_t *)t->data)[i]); break;
		case ES_DT_INT32: es_buf_printf(b, "%" PRId32, ((const int32_t *)t->data)[i]); break;
		case ES_DT_UINT32: es_buf_printf(b, "%" PRIu32, ((const uint32_t *)t->data)[i]); break;
		case ES_DT_INT64: es_buf_printf(b, "%" PRId64, ((const int64_t *)t->data)[i]); break;
		case ES_DT_UINT64: es_buf_printf(b, "%" PRIu64, ((const uint64_t *)t->data)[i]); break;
		default:
			return es_error_set(err, ES_EUNSUPPORTED,
					    "input '%s': cannot send datatype %s",
					    mi->name, mi->datatype);
		}
		if (is_float) {
			if (!isfinite(f))
				return es_error_set(err, ES_EINVAL,
						    "input '%s' element %" PRId64 " is %g, which JSON cannot carry (use --binary)",
						    mi->name, i, f);
			/* 9 significant digits read back to the same float32,
			 * 17 to the same double */
			es_buf_printf(b, t->dtype == ES_DT_DOUBLE ? "%.17g" : "%.9g", f);
		}
	}
	es_buf_putc(b, ']');
	return 0;
}

/*
 * Builds the infer body: {"inputs":[{"name","shape","datatype","data"}]},
 * or with binary, tensors as "parameters":{"binary_data_size":N} followed
 * by their raw bytes in input order and "binary_data_output":true. The
 * caller owns body (es_buf_free); *json_len is the JSON part's length.
 */
static int build_body(const bench_opts *o, const model_meta *m, es_buf *body,
		      size_t *json_len, es_error *err)
{
	int rc;
	es_buf_puts(body, "{\"inputs\":[");
	for (size_t i = 0; i < m->n_inputs; i++) {
		const model_input *mi = &m->inputs[i];
		const es_tensor *t = &mi->tensor;
		es_buf_puts(body, i ? ",{\"name\":" : "{\"name\":");
		es_buf_json_str(body, mi->name, strlen(mi->name));
		es_buf_puts(body, ",\"shape\":[");
		for (int d = 0; d < t->ndim; d++)
			es_buf_printf(body, "%s%" PRId64, d ? "," : "", t->dims[d]);
		es_buf_printf(body, "],\"datatype\":\"%s\",", mi->datatype);
		if (o->binary) {
			es_buf_printf(body,
				      "\"parameters\":{\"binary_data_size\":%zu}}",
				      t->nbytes);
		} else {
			es_buf_puts(body, "\"data\":");
			rc = append_json_data(body, mi, err);
			if (rc)
				return rc;
			es_buf_putc(body, '}');
		}
	}
	es_buf_puts(body, "]");
	if (o->binary)
		es_buf_puts(body, ",\"parameters\":{\"binary_data_output\":true}");
	es_buf_puts(body, "}");
	*json_len = body->len;
	if (o->binary)
		for (size_t i = 0; i < m->n_inputs; i++)
			es_buf_append(body, m->inputs[i].tensor.data,
				      m->inputs[i].tensor.nbytes);
	if (body->failed)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	return 0;
}

/* ---- answering versions ------------------------------------------------ */

/*
 * Successful responses per model version. A handful of versions answer in
 * any real run (the default one, the next during a swap), so a small table
 * searched linearly is enough; versions past its room are counted as
 * "other" rather than dropped.
 */
typedef struct version_tally {
	char name[MAX_TALLY_VERSIONS][VERSION_NAME_MAX];
	uint64_t count[MAX_TALLY_VERSIONS];
	size_t n;
	uint64_t unknown; /* 2xx responses that name no version */
	uint64_t other;   /* versions past the table's room, or too long */
} version_tally;

/* Adds count answers of version name (NULL: the response named none). */
static void tally_add(version_tally *t, const char *name, uint64_t count)
{
	if (!name) {
		t->unknown += count;
		return;
	}
	for (size_t i = 0; i < t->n; i++)
		if (strcmp(t->name[i], name) == 0) {
			t->count[i] += count;
			return;
		}
	if (t->n == MAX_TALLY_VERSIONS || strlen(name) >= VERSION_NAME_MAX) {
		t->other += count;
		return;
	}
	snprintf(t->name[t->n], VERSION_NAME_MAX, "%s", name);
	t->count[t->n++] = count;
}

static void tally_merge(version_tally *into, const version_tally *from)
{
	for (size_t i = 0; i < from->n; i++)
		tally_add(into, from->name[i], from->count[i]);
	into->unknown += from->unknown;
	into->other += from->other;
}

/* Order of the output: numbers by value, then other names by strcmp. */
static int cmp_version_name(const char *a, const char *b)
{
	char *ea, *eb;
	errno = 0;
	unsigned long long va = strtoull(a, &ea, 10);
	unsigned long long vb = strtoull(b, &eb, 10);
	bool na = *a && !*ea && !errno, nb = *b && !*eb && !errno;
	if (na && nb)
		return va < vb ? -1 : va > vb;
	if (na != nb)
		return na ? -1 : 1;
	return strcmp(a, b);
}

/* Indices of t's versions in output order; returns how many. */
static size_t tally_order(const version_tally *t, size_t *idx)
{
	for (size_t i = 0; i < t->n; i++) {
		size_t k = i;
		while (k > 0 && cmp_version_name(t->name[idx[k - 1]], t->name[i]) > 0) {
			idx[k] = idx[k - 1];
			k--;
		}
		idx[k] = i;
	}
	return t->n;
}

/*
 * Finds the "model_version" member of a KServe v2 response's JSON header
 * (data, len: the JSON part only) and copies its value into out. A scan,
 * not a parse: an answer's outputs can be megabytes of numbers, and the
 * member comes first in every server we know. Accepts a string or a bare
 * number; false when there is none or it is not a plain value that fits.
 */
static bool find_model_version(const char *data, size_t len, char *out,
			       size_t size)
{
	static const char key[] = "\"model_version\"";
	const size_t key_len = sizeof(key) - 1;
	const char *p = data, *end = data + len;
	while ((size_t)(end - p) >= key_len) {
		const char *q = memchr(p, '"', (size_t)(end - p) - key_len + 1);
		if (!q)
			return false;
		if (memcmp(q, key, key_len) != 0) {
			p = q + 1;
			continue;
		}
		p = q + key_len;
		while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
			p++;
		if (p == end || *p != ':')
			continue; /* the text "model_version" used as a value */
		p++;
		while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
			p++;
		bool quoted = p < end && *p == '"';
		if (quoted)
			p++;
		size_t n = 0;
		while (p + n < end && n + 1 < size) {
			char c = p[n];
			if (quoted ? c == '"' : !(c >= '0' && c <= '9'))
				break;
			if (quoted && (c == '\\' || (unsigned char)c < ' '))
				return false;
			n++;
		}
		if (n == 0 || p + n == end)
			return false;
		/* a string not closed here, or a number longer than out */
		if (quoted ? p[n] != '"' : (p[n] >= '0' && p[n] <= '9'))
			return false;
		memcpy(out, p, n);
		out[n] = '\0';
		return true;
	}
	return false;
}

/* Counts one successful response by the version it names. */
static void tally_response(version_tally *t, const es_http_response *r)
{
	char version[VERSION_NAME_MAX + 1];
	size_t json_len = r->body.len;
	if (r->inference_header_length >= 0 &&
	    (uint64_t)r->inference_header_length < json_len)
		json_len = (size_t)r->inference_header_length;
	if (!r->body.data) {
		tally_add(t, NULL, 1);
		return;
	}
	if (find_model_version(r->body.data, json_len, version, sizeof(version)))
		tally_add(t, version, 1);
	else
		tally_add(t, NULL, 1);
}

/* ---- load --------------------------------------------------------------- */

/* Set by the SIGINT handler; workers stop sending when they see it. */
static atomic_int bench_interrupted;

static void on_sigint(int sig)
{
	(void)sig;
	atomic_store(&bench_interrupted, 1);
}

/* First SIGINT: stop gracefully; the handler resets itself (SA_RESETHAND),
 * so a second one kills as usual. */
static void install_sigint(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_sigint;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESETHAND;
	sigaction(SIGINT, &sa, NULL);
}

typedef struct level_run {
	const es_http_url *url;
	const es_http_request *req;
	int timeout_ms;
	/* The start gate: workers connect, count themselves ready and
	 * wait; the main thread then sets the clock and opens the gate. */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int ready;
	bool go;
	bool abort; /* a worker could not be started: nobody runs */
	uint64_t start_ns;
	uint64_t deadline_ns; /* duration mode; 0 in requests mode */
} level_run;

typedef struct worker {
	pthread_t thread;
	level_run *run;
	uint64_t quota; /* requests mode: this worker's share */
	uint64_t *lat_ns; /* latencies of the 2xx responses */
	size_t n_lat, cap_lat;
	uint64_t requests;
	uint64_t status_count[MAX_STATUS]; /* non-2xx statuses */
	uint64_t conn_errors, timeouts, proto_errors;
	uint64_t connects;
	version_tally versions; /* of the 2xx responses */
	bool interrupted;       /* stopped by SIGINT before its end */
	uint64_t end_ns;
	int setup_rc; /* ES_ENOMEM when the worker could not start */
} worker;

static bool push_latency(worker *w, uint64_t ns)
{
	if (w->n_lat == w->cap_lat) {
		size_t cap = w->cap_lat ? w->cap_lat * 2 : 4096;
		uint64_t *p = realloc(w->lat_ns, cap * sizeof(*p));
		if (!p)
			return false;
		w->lat_ns = p;
		w->cap_lat = cap;
	}
	w->lat_ns[w->n_lat++] = ns;
	return true;
}

static void sleep_ns(uint64_t ns)
{
	struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000u),
			      .tv_nsec = (long)(ns % 1000000000u)};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static void *worker_main(void *arg)
{
	worker *w = arg;
	level_run *run = w->run;
	es_http_client *client = NULL;
	es_http_response *resp = malloc(sizeof(*resp));
	es_error err;

	if (resp)
		es_http_response_init(resp);
	/* room for the whole quota, up to 8 MiB; more grows as needed */
	size_t prealloc = w->quota < ((size_t)1 << 20) ? (size_t)w->quota :
							 ((size_t)1 << 20);
	if (!resp || es_http_client_create(run->url, run->timeout_ms, 0, &client,
					   &err) ||
	    (prealloc && !(w->lat_ns = malloc(prealloc * sizeof(uint64_t))))) {
		w->setup_rc = ES_ENOMEM;
	} else {
		w->cap_lat = prealloc;
		/* Connect before the clock starts; a failure here is retried
		 * (and counted) by the first request. */
		es_http_client_connect(client, &err);
	}
	pthread_mutex_lock(&run->lock);
	run->ready++;
	pthread_cond_broadcast(&run->cond);
	while (!run->go)
		pthread_cond_wait(&run->cond, &run->lock);
	bool abort_run = run->abort;
	pthread_mutex_unlock(&run->lock);
	if (w->setup_rc || abort_run)
		goto out;

	for (;;) {
		if (atomic_load(&bench_interrupted)) {
			w->interrupted = true;
			break;
		}
		if (run->deadline_ns) {
			if (es_now_ns() >= run->deadline_ns)
				break;
		} else if (w->requests == w->quota) {
			break;
		}
		bool had_connection = es_http_client_connected(client);
		uint64_t t0 = es_now_ns();
		int rc = es_http_client_request(client, run->req, resp, &err);
		uint64_t t1 = es_now_ns();
		w->requests++;
		if (rc == 0) {
			if (resp->status >= 200 && resp->status < 300) {
				if (!push_latency(w, t1 - t0)) {
					w->setup_rc = ES_ENOMEM;
					break;
				}
				tally_response(&w->versions, resp);
			} else if (resp->status < MAX_STATUS) {
				w->status_count[resp->status]++;
			}
		} else if (rc == ES_ETIMEDOUT) {
			w->timeouts++;
		} else if (rc == ES_EIO) {
			w->conn_errors++;
			/* A refused connect returns at once: do not spin on a
			 * server that is down. */
			if (!had_connection &&
			    es_http_client_connects(client) == w->connects)
				sleep_ns(CONNECT_BACKOFF_NS);
		} else {
			w->proto_errors++;
		}
		w->connects = es_http_client_connects(client);
	}
out:
	w->end_ns = es_now_ns();
	w->connects = client ? es_http_client_connects(client) : 0;
	es_http_client_destroy(client);
	if (resp) {
		es_http_response_free(resp);
		free(resp);
	}
	return NULL;
}

typedef struct level_result {
	int concurrency;
	uint64_t requests;
	uint64_t ok;
	double seconds;
	double throughput;
	double mean_ms, p50_ms, p90_ms, p95_ms, p99_ms, max_ms;
	uint64_t status_count[MAX_STATUS];
	uint64_t conn_errors, timeouts, proto_errors;
	uint64_t connects;
	version_tally versions;
	bool interrupted; /* SIGINT stopped this level early */
} level_result;

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted values. */
static double percentile_ms(const uint64_t *v, size_t n, double p)
{
	size_t rank = (size_t)ceil(p / 100.0 * (double)n);
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return (double)v[rank - 1] / 1e6;
}

static int run_level(const bench_opts *o, const es_http_url *url,
		     const es_http_request *req, int concurrency,
		     level_result *res, es_error *err)
{
	int rc = 0;
	level_run run = {.url = url, .req = req, .timeout_ms = o->timeout_ms};
	worker *workers = calloc((size_t)concurrency, sizeof(*workers));
	uint64_t *all = NULL;
	int started = 0;

	memset(res, 0, sizeof(*res));
	res->concurrency = concurrency;
	if (!workers)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	pthread_mutex_init(&run.lock, NULL);
	pthread_cond_init(&run.cond, NULL);
	/* Workers need little stack; up to 1024 of them should not reserve
	 * 8 MiB each. */
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, WORKER_STACK);
	/* SIGINT goes to this thread only (workers inherit the blocked mask):
	 * a worker's poll is then never cut short by it. */
	sigset_t sigint, old_mask;
	sigemptyset(&sigint);
	sigaddset(&sigint, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigint, &old_mask);
	for (int i = 0; i < concurrency; i++) {
		worker *w = &workers[i];
		w->run = &run;
		if (!o->duration_ns)
			w->quota = o->requests / (uint64_t)concurrency +
				   ((uint64_t)i < o->requests % (uint64_t)concurrency);
		int prc = pthread_create(&w->thread, &attr, worker_main, w);
		if (prc) {
			rc = es_error_set(err, ES_ENOMEM,
					  "cannot start thread %d of %d: %s", i + 1,
					  concurrency, strerror(prc));
			break;
		}
		started++;
	}
	pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
	pthread_attr_destroy(&attr);
	pthread_mutex_lock(&run.lock);
	while (run.ready < started)
		pthread_cond_wait(&run.cond, &run.lock);
	run.start_ns = es_now_ns();
	run.deadline_ns = o->duration_ns ? run.start_ns + o->duration_ns : 0;
	run.abort = rc != 0;
	run.go = true;
	pthread_cond_broadcast(&run.cond);
	pthread_mutex_unlock(&run.lock);
	for (int i = 0; i < started; i++)
		pthread_join(workers[i].thread, NULL);
	pthread_cond_destroy(&run.cond);
	pthread_mutex_destroy(&run.lock);
	if (rc)
		goto out;

	uint64_t end = run.start_ns;
	size_t n_ok = 0;
	for (int i = 0; i < concurrency; i++) {
		worker *w = &workers[i];
		if (w->setup_rc) {
			rc = es_error_set(err, ES_ENOMEM, "out of memory in a worker");
			goto out;
		}
		if (w->end_ns > end)
			end = w->end_ns;
		n_ok += w->n_lat;
		res->requests += w->requests;
		for (int s = 0; s < MAX_STATUS; s++)
			res->status_count[s] += w->status_count[s];
		res->conn_errors += w->conn_errors;
		res->timeouts += w->timeouts;
		res->proto_errors += w->proto_errors;
		res->connects += w->connects;
		tally_merge(&res->versions, &w->versions);
		res->interrupted |= w->interrupted;
	}
	res->ok = n_ok;
	res->seconds = (double)(end - run.start_ns) / 1e9;
	res->throughput = res->seconds > 0 ? (double)n_ok / res->seconds : 0;
	if (n_ok) {
		all = malloc(n_ok * sizeof(*all));
		if (!all) {
			rc = es_error_set(err, ES_ENOMEM, "out of memory");
			goto out;
		}
		size_t k = 0;
		double sum = 0;
		for (int i = 0; i < concurrency; i++) {
			if (!workers[i].n_lat)
				continue;
			memcpy(all + k, workers[i].lat_ns,
			       workers[i].n_lat * sizeof(*all));
			k += workers[i].n_lat;
		}
		qsort(all, n_ok, sizeof(*all), cmp_u64);
		for (size_t i = 0; i < n_ok; i++)
			sum += (double)all[i];
		res->mean_ms = sum / (double)n_ok / 1e6;
		res->p50_ms = percentile_ms(all, n_ok, 50);
		res->p90_ms = percentile_ms(all, n_ok, 90);
		res->p95_ms = percentile_ms(all, n_ok, 95);
		res->p99_ms = percentile_ms(all, n_ok, 99);
		res->max_ms = (double)all[n_ok - 1] / 1e6;
	}
out:
	for (int i = 0; i < concurrency; i++)
		free(workers[i].lat_ns);
	free(workers);
	free(all);
	return rc;
}

/* ---- output ------------------------------------------------------------ */

/* "503:12 504:3 conn:2" or "-" */
static void format_errors(const level_result *r, char *buf, size_t size)
{
	size_t n = 0;
	buf[0] = '\0';
	for (int s = 0; s < MAX_STATUS && n < size; s++)
		if (r->status_count[s])
			n += (size_t)snprintf(buf + n, size - n, "%s%d:%" PRIu64,
					      n ? " " : "", s, r->status_count[s]);
	if (r->conn_errors && n < size)
		n += (size_t)snprintf(buf + n, size - n, "%sconn:%" PRIu64,
				      n ? " " : "", r->conn_errors);
	if (r->timeouts && n < size)
		n += (size_t)snprintf(buf + n, size - n, "%stimeout:%" PRIu64,
				      n ? " " : "", r->timeouts);
	if (r->proto_errors && n < size)
		n += (size_t)snprintf(buf + n, size - n, "%sproto:%" PRIu64,
				      n ? " " : "", r->proto_errors);
	if (n == 0)
		snprintf(buf, size, "-");
}

/* "1:5012 2:331 unknown:3" or "-" */
static void format_versions(const version_tally *t, char *buf, size_t size)
{
	size_t idx[MAX_TALLY_VERSIONS];
	size_t n = 0, count = tally_order(t, idx);
	buf[0] = '\0';
	for (size_t i = 0; i < count && n < size; i++)
		n += (size_t)snprintf(buf + n, size - n, "%s%s:%" PRIu64,
				      n ? " " : "", t->name[idx[i]],
				      t->count[idx[i]]);
	if (t->unknown && n < size)
		n += (size_t)snprintf(buf + n, size - n, "%sunknown:%" PRIu64,
				      n ? " " : "", t->unknown);
	if (t->other && n < size)
		n += (size_t)snprintf(buf + n, size - n, "%sother:%" PRIu64,
				      n ? " " : "", t->other);
	if (n == 0)
		snprintf(buf, size, "-");
}

static void print_table_header(void)
{
	printf("%11s %9s %11s %9s %9s %9s %9s %9s  %-10s  %s\n", "concurrency",
	       "requests", "req/s", "p50(ms)", "p90(ms)", "p95(ms)", "p99(ms)",
	       "max(ms)", "errors", "versions");
}

static void print_level_row(const level_result *r)
{
	char errors[1024], versions[1024];
	format_errors(r, errors, sizeof(errors));
	format_versions(&r->versions, versions, sizeof(versions));
	if (r->ok)
		printf("%11d %9" PRIu64 " %11.1f %9.3f %9.3f %9.3f %9.3f %9.3f  %-10s  %s\n",
		       r->concurrency, r->requests, r->throughput, r->p50_ms,
		       r->p90_ms, r->p95_ms, r->p99_ms, r->max_ms, errors,
		       versions);
	else
		printf("%11d %9" PRIu64 " %11.1f %9s %9s %9s %9s %9s  %-10s  %s\n",
		       r->concurrency, r->requests, r->throughput, "-", "-", "-",
		       "-", "-", errors, versions);
	if (r->interrupted)
		printf("(interrupted: the level above stopped early; later levels did not run)\n");
	fflush(stdout);
}

static void print_json(const bench_opts *o, const model_meta *m,
		       const char *served_version, size_t body_len,
		       const level_result *levels, size_t n_levels,
		       bool interrupted)
{
	es_buf b = ES_BUF_INIT;
	es_buf_puts(&b, "{\"url\":");
	es_buf_json_str(&b, o->url, strlen(o->url));
	es_buf_puts(&b, ",\"model\":");
	es_buf_json_str(&b, o->model, strlen(o->model));
	es_buf_puts(&b, ",\"version\":");
	if (served_version[0])
		es_buf_json_str(&b, served_version, strlen(served_version));
	else
		es_buf_puts(&b, "null");
	es_buf_printf(&b, ",\"binary\":%s,\"body_bytes\":%zu,\"inputs\":[",
		      o->binary ? "true" : "false", body_len);
	for (size_t i = 0; i < m->n_inputs; i++) {
		const model_input *mi = &m->inputs[i];
		es_buf_puts(&b, i ? ",{\"name\":" : "{\"name\":");
		es_buf_json_str(&b, mi->name, strlen(mi->name));
		es_buf_printf(&b, ",\"datatype\":\"%s\",\"shape\":[", mi->datatype);
		for (int d = 0; d < mi->tensor.ndim; d++)
			es_buf_printf(&b, "%s%" PRId64, d ? "," : "",
				      mi->tensor.dims[d]);
		es_buf_puts(&b, "],\"source\":");
		if (mi->file)
			es_buf_json_str(&b, mi->file, strlen(mi->file));
		else
			es_buf_puts(&b, "\"random\"");
		es_buf_putc(&b, '}');
	}
	es_buf_puts(&b, "],");
	if (o->duration_ns)
		es_buf_printf(&b, "\"duration_s\":%.3f,", (double)o->duration_ns / 1e9);
	else
		es_buf_printf(&b, "\"requests_per_level\":%" PRIu64 ",", o->requests);
	es_buf_printf(&b, "\"timeout_ms\":%d,\"interrupted\":%s,\"levels\":[",
		      o->timeout_ms, interrupted ? "true" : "false");
	for (size_t i = 0; i < n_levels; i++) {
		const level_result *r = &levels[i];
		es_buf_printf(&b,
			      "%s{\"concurrency\":%d,\"requests\":%" PRIu64
			      ",\"ok\":%" PRIu64 ",\"seconds\":%.6f,"
			      "\"throughput\":%.3f,\"connections\":%" PRIu64 ",",
			      i ? "," : "", r->concurrency, r->requests, r->ok,
			      r->seconds, r->throughput, r->connects);
		if (r->ok)
			es_buf_printf(&b,
				      "\"latency_ms\":{\"mean\":%.6f,\"p50\":%.6f,"
				      "\"p90\":%.6f,\"p95\":%.6f,\"p99\":%.6f,"
				      "\"max\":%.6f},",
				      r->mean_ms, r->p50_ms, r->p90_ms, r->p95_ms,
				      r->p99_ms, r->max_ms);
		else
			es_buf_puts(&b, "\"latency_ms\":null,");
		es_buf_puts(&b, "\"errors\":{");
		bool first = true;
		for (int s = 0; s < MAX_STATUS; s++)
			if (r->status_count[s]) {
				es_buf_printf(&b, "%s\"%d\":%" PRIu64,
					      first ? "" : ",", s,
					      r->status_count[s]);
				first = false;
			}
		const struct {
			const char *name;
			uint64_t count;
		} kinds[] = {{"conn", r->conn_errors},
			     {"timeout", r->timeouts},
			     {"proto", r->proto_errors}};
		for (size_t k = 0; k < 3; k++)
			if (kinds[k].count) {
				es_buf_printf(&b, "%s\"%s\":%" PRIu64,
					      first ? "" : ",", kinds[k].name,
					      kinds[k].count);
				first = false;
			}
		/* every request that did not succeed, so that "no errors"
		 * is stated rather than inferred from an empty object */
		es_buf_printf(&b, "},\"failed\":%" PRIu64 ",\"versions\":{",
			      r->requests - r->ok);
		size_t idx[MAX_TALLY_VERSIONS];
		size_t nv = tally_order(&r->versions, idx);
		for (size_t k = 0; k < nv; k++) {
			es_buf_puts(&b, k ? "," : "");
			es_buf_json_str(&b, r->versions.name[idx[k]],
					strlen(r->versions.name[idx[k]]));
			es_buf_printf(&b, ":%" PRIu64, r->versions.count[idx[k]]);
		}
		first = nv == 0;
		if (r->versions.unknown) {
			es_buf_printf(&b, "%s\"unknown\":%" PRIu64, first ? "" : ",",
				      r->versions.unknown);
			first = false;
		}
		if (r->versions.other)
			es_buf_printf(&b, "%s\"other\":%" PRIu64, first ? "" : ",",
				      r->versions.other);
		es_buf_printf(&b, "},\"interrupted\":%s}",
			      r->interrupted ? "true" : "false");
	}
	es_buf_puts(&b, "]}\n");
	if (!b.failed)
		fputs(b.data, stdout);
	else
		fprintf(stderr, PROG ": out of memory\n");
	es_buf_free(&b);
}

/* ---- setup ------------------------------------------------------------- */

/* GET metadata; a clear message for each way it can fail. */
static int fetch_meta(const bench_opts *o, es_http_client *client,
		      es_http_response *resp, model_meta *m)
{
	char path[700];
	char msg[300];
	es_error err = {0};
	version_path(o, path, sizeof(path), "");
	es_http_request req = {.method = "GET", .path = path,
			       .inference_header_length = -1};
	int rc = es_http_client_request(client, &req, resp, &err);
	if (rc)
		return setup_error("cannot read the metadata of model '%s' from %s: %s",
				   o->model, o->url, err.msg);
	if (resp->status == 404) {
		server_message(resp, msg, sizeof(msg));
		if (o->version)
			return setup_error("model '%s' version %s not found on %s%s%s",
					   o->model, o->version, o->url,
					   msg[0] ? ": " : "", msg);
		return setup_error("model '%s' not found on %s%s%s", o->model,
				   o->url, msg[0] ? ": " : "", msg);
	}
	if (resp->status != 200) {
		server_message(resp, msg, sizeof(msg));
		return setup_error("metadata of model '%s' from %s: HTTP %d%s%s",
				   o->model, o->url, resp->status,
				   msg[0] ? ": " : "", msg);
	}
	rc = parse_meta(o, resp, m, &err);
	if (rc)
		return setup_error("%s", err.msg);
	return 0;
}

/* Sends the request once; the server must answer 200. Records the model
 * version it reports. */
static int probe(const bench_opts *o, es_http_client *client,
		 const es_http_request *req, es_http_response *resp,
		 char *served_version, size_t size)
{
	char msg[300];
	es_error err = {0};
	int rc = es_http_client_request(client, req, resp, &err);
	if (rc)
		return setup_error("first infer request to model '%s' failed: %s",
				   o->model, err.msg);
	if (resp->status != 200) {
		server_message(resp, msg, sizeof(msg));
		return setup_error("model '%s' rejected the first infer request: HTTP %d%s%s",
				   o->model, resp->status, msg[0] ? ": " : "",
				   msg);
	}
	size_t json_len = resp->body.len;
	if (resp->inference_header_length >= 0 &&
	    (uint64_t)resp->inference_header_length <= json_len)
		json_len = (size_t)resp->inference_header_length;
	cJSON *doc = cJSON_ParseWithLength(resp->body.data, json_len);
	const cJSON *v = doc ? cJSON_GetObjectItemCaseSensitive(doc, "model_version") :
			       NULL;
	if (!doc || !cJSON_GetObjectItemCaseSensitive(doc, "outputs")) {
		cJSON_Delete(doc);
		return setup_error("model '%s': the answer to the first infer request is not a KServe v2 response (no \"outputs\")",
				   o->model);
	}
	served_version[0] = '\0';
	if (cJSON_IsString(v))
		snprintf(served_version, size, "%s", v->valuestring);
	cJSON_Delete(doc);
	return 0;
}

static void print_intro(const bench_opts *o, const model_meta *m,
			const char *served_version, size_t body_len)
{
	printf("edgeserve bench: %s model '%s' version %s%s\n", o->url, o->model,
	       served_version[0] ? served_version : "?",
	       o->version ? "" : " (server's choice)");
	printf("request: %s body of %zu bytes;", o->binary ? "binary" : "JSON",
	       body_len);
	for (size_t i = 0; i < m->n_inputs; i++) {
		const model_input *mi = &m->inputs[i];
		char dims[256];
		es_cli_format_dims(dims, sizeof(dims), mi->tensor.ndim, mi->tensor.dims);
		printf("%s %s %s %s (%s)", i ? "," : "", mi->name, mi->datatype,
		       dims, mi->file ? mi->file : "random");
	}
	printf("\n");
	if (o->duration_ns)
		printf("each level: %.3g s, timeout %d ms per request\n\n",
		       (double)o->duration_ns / 1e9, o->timeout_ms);
	else
		printf("each level: %" PRIu64 " requests, timeout %d ms per request\n\n",
		       o->requests, o->timeout_ms);
	fflush(stdout);
}

int es_cli_bench(int argc, char **argv)
{
	bench_opts o;
	es_http_url url;
	es_error err = {0};
	model_meta meta = {0};
	es_http_client *client = NULL;
	es_http_response *resp = NULL;
	es_buf body = ES_BUF_INIT;
	level_result *results = NULL;
	char served_version[64] = "";
	size_t json_len = 0;
	int status = parse_args(argc, argv, &o);
	if (status >= 0)
		goto out_free_opts;
	status = ES_CLI_EXIT_FAILURE;

	if (es_http_url_parse(o.url, &url, &err)) {
		status = usage_error("%s", err.msg);
		goto out_free_opts;
	}
	if (!model_name_ok(o.model)) {
		status = usage_error("--model '%s': a model name cannot hold '/', '?', '#', '%%', spaces or control characters",
				     o.model);
		goto out_free_opts;
	}
	resp = malloc(sizeof(*resp));
	if (!resp || es_http_client_create(&url, o.timeout_ms, 0, &client, &err)) {
		setup_error("out of memory");
		goto out_free;
	}
	es_http_response_init(resp);
	if (es_http_client_connect(client, &err)) {
		setup_error("server %s is unreachable: %s", o.url, err.msg);
		goto out_free;
	}
	if (fetch_meta(&o, client, resp, &meta))
		goto out_free;
	if (prepare_inputs(&o, &meta, &err)) {
		setup_error("model '%s': %s", o.model, err.msg);
		goto out_free;
	}
	if (build_body(&o, &meta, &body, &json_len, &err)) {
		setup_error("%s", err.msg);
		goto out_free;
	}

	char path[700];
	version_path(&o, path, sizeof(path), "/infer");
	es_http_request req = {
		.method = "POST",
		.path = path,
		.content_type = o.binary ? "application/octet-stream" :
					   "application/json",
		.body = body.data,
		.body_len = body.len,
		.inference_header_length = o.binary ? (int64_t)json_len : -1,
	};
	if (probe(&o, client, &req, resp, served_version, sizeof(served_version)))
		goto out_free;
	es_http_client_close(client);

	results = calloc(o.n_levels, sizeof(*results));
	if (!results) {
		setup_error("out of memory");
		goto out_free;
	}
	if (!o.json) {
		print_intro(&o, &meta, served_version, body.len);
		print_table_header();
	}
	install_sigint();
	size_t n_run = 0;
	bool interrupted = false;
	for (size_t i = 0; i < o.n_levels && !interrupted; i++) {
		if (run_level(&o, &url, &req, o.levels[i], &results[i], &err)) {
			setup_error("concurrency %d: %s", o.levels[i], err.msg);
			goto out_free;
		}
		n_run++;
		interrupted = results[i].interrupted;
		if (!o.json)
			print_level_row(&results[i]);
	}
	/* a SIGINT between levels leaves nothing marked: say so all the same */
	if (!interrupted && atomic_load(&bench_interrupted)) {
		interrupted = true;
		if (!o.json)
			printf("(interrupted: later levels did not run)\n");
	}
	if (o.json)
		print_json(&o, &meta, served_version, body.len, results, n_run,
			   interrupted);
	status = interrupted ? ES_CLI_EXIT_INTERRUPTED : ES_CLI_EXIT_OK;

out_free:
	free(results);
	es_buf_free(&body);
	free_meta(&meta);
	es_http_client_destroy(client);
	if (resp) {
		es_http_response_free(resp);
		free(resp);
	}
out_free_opts:
	free_opts(&o);
	return status;
}
