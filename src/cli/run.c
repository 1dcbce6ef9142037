/*
 * `edgeserve run MODEL.onnx`: load one model, feed it inputs from files or
 * random data, run it once, then time repeated runs and report latency
 * percentiles, throughput and (with --profile) per-node times, in the
 * spirit of OpenVINO's benchmark_app -pc.
 *
 * Everything from the command line and from input files is checked against
 * the model before the first run, so a mistake gives a message naming the
 * input, the expected and the actual value instead of an engine error.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fp16.h"
#include "base/status.h"
#include "cli/cli.h"
#include "cli/inputs.h"
#include "edgeserve/engine.h"
#include "engine/exec/exec.h"
#include "engine/io/npy.h"
#include "engine/ops/op.h"

#define PROG "edgeserve run"

static const char run_help[] =
	"usage: edgeserve run MODEL.onnx [OPTIONS]\n"
	"\n"
	"Loads an ONNX model, runs it once, then runs it --warmup times untimed\n"
	"and --iters times timed, and prints load time, first-run time, latency\n"
	"percentiles (nearest rank), throughput and the memory plan's arena.\n"
	"\n"
	"inputs:\n"
	"  --input [NAME=]FILE  feed model input NAME from FILE, an ONNX TensorProto\n"
	"                       (.pb) or a NumPy array (.npy); without NAME= the file\n"
	"                       goes to the next input not yet given, in model order.\n"
	"                       Repeat for each input.\n"
	"  --random             fill every input not given with random data of its\n"
	"                       dtype: floats uniform in [-1, 1), integers in [0, 10),\n"
	"                       bools 0 or 1\n"
	"  --seed N             seed of the random data (default 0)\n"
	"  --shape NAME=DIMS    shape of input NAME, e.g. 1x3x224x224: sets the\n"
	"                       dimensions the model leaves open for --random\n"
	"                       (otherwise 1 each); a file given for NAME must have\n"
	"                       this shape\n"
	"\n"
	"running:\n"
	"  --threads N          intra-op threads (default 0: one per core)\n"
	"  --warmup N           untimed runs after the first run (default 3)\n"
	"  --iters N            timed runs (default 20, at least 1)\n"
	"  --no-optimize        run the graph as written, without optimizer passes\n"
	"  --profile            add per-node and per-op-type time tables, measured\n"
	"                       over the timed runs\n"
	"  --compiled FILE      after the first run, write the model's compiled\n"
	"                       form (with the weights its kernels packed) to FILE,\n"
	"                       load it back, report that load time and its first\n"
	"                       run beside the ONNX ones, and time the compiled model\n"
	"\n"
	"The report also lists what the graph optimizer did at load: each pass\n"
	"with the node count before and after it, its rewrites and its time\n"
	"(\"optimizer\" block; \"optimizer\" array with --json).\n"
	"\n"
	"output:\n"
	"  --save-outputs DIR   write output i of the first run to DIR/output_<i>.pb\n"
	"                       (DIR is created if missing)\n"
	"  --json               print one JSON object on stdout instead of text\n"
	"  --list-ops           print the operators the engine implements, with\n"
	"                       their opset ranges, and exit (no MODEL needed)\n"
	"  -h, --help           show this help\n"
	"\n"
	"Options taking a value also accept --option=VALUE.\n"
	"Exit status: 0 success; 1 the model or an input was rejected, or a run\n"
	"failed; 2 bad command line.\n";

/* ---- options ----------------------------------------------------------- */

typedef struct run_opts {
	const char *model_path;
	const char **input_specs; /* --input values, in order (owned array) */
	size_t n_input_specs;
	es_cli_shape *shapes; /* owned array */
	size_t n_shapes;
	bool random;
	uint64_t seed;
	int threads;
	int warmup;
	int iters;
	bool optimize;
	bool profile;
	const char *save_dir;
	const char *compiled_path;
	bool json;
} run_opts;

enum flag_id {
	FLAG_INPUT,
	FLAG_SHAPE,
	FLAG_RANDOM,
	FLAG_SEED,
	FLAG_THREADS,
	FLAG_WARMUP,
	FLAG_ITERS,
	FLAG_NO_OPTIMIZE,
	FLAG_PROFILE,
	FLAG_SAVE_OUTPUTS,
	FLAG_COMPILED,
	FLAG_JSON,
	FLAG_LIST_OPS,
	FLAG_HELP,
	FLAG_SHORT_HELP,
};

/* Indexed by enum flag_id. */
static const es_cli_flag run_flags[] = {
	[FLAG_INPUT] = {"--input", true, false},
	[FLAG_SHAPE] = {"--shape", true, false},
	[FLAG_RANDOM] = {"--random", false, false},
	[FLAG_SEED] = {"--seed", true, false},
	[FLAG_THREADS] = {"--threads", true, false},
	[FLAG_WARMUP] = {"--warmup", true, false},
	[FLAG_ITERS] = {"--iters", true, false},
	[FLAG_NO_OPTIMIZE] = {"--no-optimize", false, false},
	[FLAG_PROFILE] = {"--profile", false, false},
	[FLAG_SAVE_OUTPUTS] = {"--save-outputs", true, false},
	[FLAG_COMPILED] = {"--compiled", true, false},
	[FLAG_JSON] = {"--json", false, false},
	[FLAG_LIST_OPS] = {"--list-ops", false, false},
	[FLAG_HELP] = {"--help", false, false},
	[FLAG_SHORT_HELP] = {"-h", false, false},
};

#define N_RUN_FLAGS (sizeof(run_flags) / sizeof(run_flags[0]))

/* One line per registry row: domain, op type, opset range. */
static void list_ops(void)
{
	size_t n = es_op_count();
	for (size_t i = 0; i < n; i++) {
		const es_op_def *d = es_op_at(i);
		char range[32];
		if (d->until)
			snprintf(range, sizeof(range), "%d-%d", d->since, d->until);
		else
			snprintf(range, sizeof(range), "%d+", d->since);
		printf("%-12s %-28s %s\n", d->domain && *d->domain ? d->domain : "ai.onnx",
		       d->op_type, range);
	}
}

static int usage_error(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, PROG ": ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nRun 'edgeserve run --help' for the options.\n");
	return ES_CLI_EXIT_USAGE;
}

static void free_opts(run_opts *o)
{
	es_cli_free_shapes(o->shapes, o->n_shapes);
	free(o->input_specs);
}

/* Returns -1 when parsing succeeded, otherwise the exit status. */
static int parse_args(int argc, char **argv, run_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->warmup = 3;
	o->iters = 20;
	o->optimize = true;
	o->input_specs = calloc((size_t)argc, sizeof(*o->input_specs));
	o->shapes = calloc((size_t)argc, sizeof(*o->shapes));
	if (!o->input_specs || !o->shapes) {
		fprintf(stderr, PROG ": out of memory\n");
		return ES_CLI_EXIT_FAILURE;
	}

	es_cli_opts sc;
	const char *value;
	int f;
	es_cli_opts_init(&sc, argc, argv, run_flags, N_RUN_FLAGS,
			 ES_CLI_OPTS_GNU, usage_error);
	while ((f = es_cli_opts_next(&sc, &value)) != ES_CLI_OPT_END) {
		if (f == ES_CLI_OPT_ERROR)
			return sc.exit_status;
		if (f == ES_CLI_OPT_POSITIONAL) {
			if (o->model_path)
				return usage_error("unexpected argument '%s' (the model is '%s')",
						   value, o->model_path);
			o->model_path = value;
			continue;
		}
		const char *flag = run_flags[f].name;

		long long n;
		switch ((enum flag_id)f) {
		case FLAG_HELP:
		case FLAG_SHORT_HELP:
			fputs(run_help, stdout);
			return ES_CLI_EXIT_OK;
		case FLAG_LIST_OPS:
			list_ops();
			return ES_CLI_EXIT_OK;
		case FLAG_INPUT:
			if (!*value)
				return usage_error("option '%s' needs a file",
						   flag);
			o->input_specs[o->n_input_specs++] = value;
			break;
		case FLAG_SHAPE:
			if (!es_cli_parse_shape(value, &o->shapes[o->n_shapes]))
				return usage_error("--shape '%s': expected NAME=DIMS such as x=1x3x224x224",
						   value);
			o->n_shapes++;
			break;
		case FLAG_RANDOM:
			o->random = true;
			break;
		case FLAG_SEED:
			if (!es_cli_parse_u64(value, 0, UINT64_MAX, &o->seed))
				return usage_error("--seed '%s': expected a non-negative integer",
						   value);
			break;
		case FLAG_THREADS:
			if (!es_cli_parse_int(value, 0, 4096, &n))
				return usage_error("--threads '%s': expected an integer in [0, 4096]",
						   value);
			o->threads = (int)n;
			break;
		case FLAG_WARMUP:
			if (!es_cli_parse_int(value, 0, 10000000, &n))
				return usage_error("--warmup '%s': expected an integer in [0, 10000000]",
						   value);
			o->warmup = (int)n;
			break;
		case FLAG_ITERS:
			if (!es_cli_parse_int(value, 1, 10000000, &n))
				return usage_error("--iters '%s': expected an integer in [1, 10000000]",
						   value);
			o->iters = (int)n;
			break;
		case FLAG_NO_OPTIMIZE:
			o->optimize = false;
			break;
		case FLAG_PROFILE:
			o->profile = true;
			break;
		case FLAG_SAVE_OUTPUTS:
			if (!*value)
				return usage_error("option '%s' needs a directory",
						   flag);
			o->save_dir = value;
			break;
		case FLAG_COMPILED:
			if (!*value)
				return usage_error("option '%s' needs a file name",
						   flag);
			o->compiled_path = value;
			break;
		case FLAG_JSON:
			o->json = true;
			break;
		}
	}
	if (!o->model_path)
		return usage_error("missing MODEL.onnx");
	const char *twice = es_cli_duplicate_shape(o->shapes, o->n_shapes);
	if (twice)
		return usage_error("--shape given twice for input '%s'", twice);
	return -1;
}

/* ---- helpers ----------------------------------------------------------- */

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double ns_to_ms(uint64_t ns)
{
	return (double)ns / 1e6;
}

/* The model's view of a shape: open dims print as their parameter name or
 * '?', an unknown rank as "[...]". */
static void format_info_dims(char *buf, size_t size, const es_value_info *vi)
{
	if (vi->ndim < 0) {
		snprintf(buf, size, "[...]");
		return;
	}
	size_t n = 0;
	n += (size_t)snprintf(buf + n, size - n, "[");
	for (int i = 0; i < vi->ndim && n < size; i++) {
		if (vi->dims[i] >= 0)
			n += (size_t)snprintf(buf + n, size - n, "%s%" PRId64,
					      i ? "," : "", vi->dims[i]);
		else
			n += (size_t)snprintf(buf + n, size - n, "%s%s",
					      i ? "," : "",
					      vi->dim_params[i] &&
							      vi->dim_params[i][0] ?
						      vi->dim_params[i] :
						      "?");
	}
	if (n < size)
		snprintf(buf + n, size - n, "]");
}

/* Checks a shape (from a file or --shape) against the model's input. */
static int check_shape(const es_value_info *vi, const char *what, int ndim,
		       const int64_t *dims, es_error *err)
{
	char want[256], got[256];
	format_info_dims(want, sizeof(want), vi);
	es_cli_format_dims(got, sizeof(got), ndim, dims);
	if (vi->ndim >= 0 && vi->ndim != ndim)
		return es_error_set(err, ES_ESHAPE,
				    "input '%s' %s: expected rank %d %s, got rank %d %s",
				    vi->name, what, vi->ndim, want, ndim, got);
	for (int i = 0; vi->ndim >= 0 && i < ndim; i++)
		if (vi->dims[i] >= 0 && vi->dims[i] != dims[i])
			return es_error_set(err, ES_ESHAPE,
					    "input '%s' %s: dimension %d expected %" PRId64 ", got %" PRId64 " (expected %s, got %s)",
					    vi->name, what, i, vi->dims[i],
					    dims[i], want, got);
	return 0;
}

/* ---- inputs ------------------------------------------------------------ */

typedef struct input_slot {
	es_tensor tensor;    /* data owned (es_tensor_free_data) when loaded */
	const char *file;    /* source file, or NULL for random data */
	bool loaded;
} input_slot;

static const char *model_input_name(const void *model, size_t i)
{
	return es_model_input(model, i)->name;
}

/* Assigns the --input files to model inputs: NAME=FILE by name, a bare
 * FILE to the next input not yet given. */
static int assign_input_files(const es_model *m, const run_opts *o,
			      input_slot *slots, es_error *err)
{
	size_t n_inputs = es_model_num_inputs(m);
	const es_cli_input_list list = { m, n_inputs, model_input_name,
					 "the model" };
	const char **files = calloc(n_inputs ? n_inputs : 1, sizeof(*files));
	if (!files)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	int rc = es_cli_assign_inputs(&list, o->input_specs, o->n_input_specs,
				      files, err);
	if (rc == 0)
		rc = es_cli_check_shape_names(&list, o->shapes, o->n_shapes,
					      err);
	for (size_t i = 0; i < n_inputs; i++)
		slots[i].file = files[i];
	free(files);
	return rc;
}

static int prepare_inputs(const es_model *m, run_opts *o, input_slot *slots,
			  es_error *err)
{
	size_t n_inputs = es_model_num_inputs(m);
	char names[512];
	int rc;

	rc = assign_input_files(m, o, slots, err);
	if (rc)
		return rc;

	/* Name every missing input at once rather than one per attempt. */
	if (!o->random) {
		size_t n = 0;
		names[0] = '\0';
		for (size_t i = 0; i < n_inputs && n < sizeof(names); i++) {
			if (slots[i].file)
				continue;
			const es_value_info *vi = es_model_input(m, i);
			char dims[128];
			format_info_dims(dims, sizeof(dims), vi);
			n += (size_t)snprintf(names + n, sizeof(names) - n,
					      "%s'%s' (%s %s)", n ? ", " : "",
					      vi->name, es_dtype_name(vi->dtype),
					      dims);
		}
		if (n)
			return es_error_set(err, ES_EINVAL,
					    "no data for input %s: give --input NAME=FILE or --random",
					    names);
	}

	for (size_t i = 0; i < n_inputs; i++) {
		const es_value_info *vi = es_model_input(m, i);
		const es_cli_shape *shape =
			es_cli_find_shape(o->shapes, o->n_shapes, vi->name);
		input_slot *slot = &slots[i];
		char what[256];

		if (slot->file) {
			snprintf(what, sizeof(what), "from '%s'", slot->file);
			rc = es_cli_read_tensor_file(slot->file, &slot->tensor, err);
			if (rc)
				return es_error_prefix(err, "input '%s': cannot read '%s'",
						       vi->name, slot->file);
			slot->loaded = true;
			if (vi->dtype != ES_DT_UNDEFINED &&
			    slot->tensor.dtype != vi->dtype)
				return es_error_set(err, ES_ETYPE,
						    "input '%s' %s: expected dtype %s, got %s",
						    vi->name, what,
						    es_dtype_name(vi->dtype),
						    es_dtype_name(slot->tensor.dtype));
			rc = check_shape(vi, what, slot->tensor.ndim,
					 slot->tensor.dims, err);
			if (rc)
				return rc;
			if (shape) {
				char want[256], got[256];
				es_cli_format_dims(want, sizeof(want), shape->ndim,
					    shape->dims);
				es_cli_format_dims(got, sizeof(got), slot->tensor.ndim,
					    slot->tensor.dims);
				if (shape->ndim != slot->tensor.ndim ||
				    memcmp(shape->dims, slot->tensor.dims,
					   sizeof(int64_t) * (size_t)shape->ndim))
					return es_error_set(err, ES_ESHAPE,
							    "input '%s' %s: --shape says %s, the file holds %s",
							    vi->name, what, want,
							    got);
			}
			continue;
		}

		/* Random data: the model's shape with open dims set to 1,
		 * or --shape. */
		int ndim;
		int64_t dims[ES_MAX_DIMS];
		if (shape) {
			rc = check_shape(vi, "--shape", shape->ndim, shape->dims,
					 err);
			if (rc)
				return rc;
			ndim = shape->ndim;
			memcpy(dims, shape->dims, sizeof(dims));
		} else {
			if (vi->ndim < 0)
				return es_error_set(err, ES_ESHAPE,
						    "input '%s': the model does not fix its rank; give --shape %s=DIMS",
						    vi->name, vi->name);
			ndim = vi->ndim;
			for (int d = 0; d < ndim; d++)
				dims[d] = vi->dims[d] >= 0 ? vi->dims[d] : 1;
		}
		if (vi->dtype == ES_DT_UNDEFINED || es_dtype_size(vi->dtype) == 0)
			return es_error_set(err, ES_EUNSUPPORTED,
					    "input '%s': cannot make random data of dtype %s",
					    vi->name, es_dtype_name(vi->dtype));
		rc = es_tensor_alloc(&slot->tensor, vi->dtype, ndim, dims, err);
		if (rc)
			return es_error_prefix(err, "input '%s'", vi->name);
		slot->loaded = true;
		/* Each input gets its own stream, so adding an input file does
		 * not change the random data of the others. */
		rc = es_cli_fill_random(&slot->tensor, o->seed, i, err);
		if (rc)
			return es_error_prefix(err, "input '%s'", vi->name);
	}
	return 0;
}

/* ---- saving outputs ---------------------------------------------------- */

/* mkdir -p */
static int make_dirs(const char *path, es_error *err)
{
	char *copy = es_strdup(path);
	if (!copy)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	for (char *p = copy + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char c = *p;
		*p = '\0';
		if (mkdir(copy, 0777) != 0 && errno != EEXIST) {
			es_error_set(err, ES_EIO, "cannot create directory '%s': %s",
				     copy, strerror(errno));
			free(copy);
			return ES_EIO;
		}
		*p = c;
		if (c == '\0')
			break;
	}
	free(copy);
	struct stat st;
	if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
		return es_error_set(err, ES_EIO, "'%s' is not a directory", path);
	return 0;
}

static int save_outputs(const char *dir, const es_model *m,
			const es_tensor *outputs, size_t n, es_error *err)
{
	int rc = make_dirs(dir, err);
	if (rc)
		return rc;
	size_t len = strlen(dir) + 32;
	char *path = malloc(len);
	if (!path)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		snprintf(path, len, "%s/output_%zu.pb", dir, i);
		rc = es_tensor_write_pb(path, &outputs[i],
					es_model_output(m, i)->name, err);
		if (rc) {
			es_error_prefix(err, "cannot write '%s'", path);
			break;
		}
	}
	free(path);
	return rc;
}

/* ---- statistics -------------------------------------------------------- */

typedef struct latency_stats {
	double p50, p90, p99, min, max, mean, total_ms;
} latency_stats;

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* Nearest rank: the smallest sample with at least pct% of samples at or
 * below it. samples is sorted in place. */
static double percentile(const double *sorted, size_t n, unsigned pct)
{
	size_t rank = (pct * n + 99) / 100;
	if (rank < 1)
		rank = 1;
	return sorted[rank - 1];
}

static void compute_stats(double *samples, size_t n, latency_stats *s)
{
	qsort(samples, n, sizeof(double), cmp_double);
	s->total_ms = 0;
	for (size_t i = 0; i < n; i++)
		s->total_ms += samples[i];
	s->p50 = percentile(samples, n, 50);
	s->p90 = percentile(samples, n, 90);
	s->p99 = percentile(samples, n, 99);
	s->min = samples[0];
	s->max = samples[n - 1];
	s->mean = s->total_ms / (double)n;
}

/* ---- profile ----------------------------------------------------------- */

typedef struct op_summary {
	const char *op_type;
	size_t nodes;
	uint64_t calls;
	uint64_t total_ns;
} op_summary;

typedef struct profile_view {
	const es_node_profile **nodes; /* sorted by total_ns, descending */
	size_t n_nodes;
	op_summary *ops; /* sorted by total_ns, descending */
	size_t n_ops;
	uint64_t total_ns;
} profile_view;

static int cmp_node_desc(const void *a, const void *b)
{
	const es_node_profile *x = *(const es_node_profile *const *)a;
	const es_node_profile *y = *(const es_node_profile *const *)b;
	if (x->total_ns != y->total_ns)
		return x->total_ns < y->total_ns ? 1 : -1;
	return strcmp(x->name ? x->name : "", y->name ? y->name : "");
}

static int cmp_op_desc(const void *a, const void *b)
{
	const op_summary *x = a, *y = b;
	if (x->total_ns != y->total_ns)
		return x->total_ns < y->total_ns ? 1 : -1;
	return strcmp(x->op_type, y->op_type);
}

static int build_profile(const es_session *s, profile_view *pv, es_error *err)
{
	const es_node_profile *entries;
	size_t n = es_session_profile(s, &entries);

	memset(pv, 0, sizeof(*pv));
	pv->nodes = calloc(n ? n : 1, sizeof(*pv->nodes));
	pv->ops = calloc(n ? n : 1, sizeof(*pv->ops));
	if (!pv->nodes || !pv->ops) {
		free(pv->nodes);
		free(pv->ops);
		return es_error_set(err, ES_ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < n; i++) {
		const es_node_profile *e = &entries[i];
		const char *op = e->op_type ? e->op_type : "";
		pv->nodes[pv->n_nodes++] = e;
		pv->total_ns += e->total_ns;
		size_t k;
		for (k = 0; k < pv->n_ops; k++)
			if (strcmp(pv->ops[k].op_type, op) == 0)
				break;
		if (k == pv->n_ops)
			pv->ops[pv->n_ops++].op_type = op;
		pv->ops[k].nodes++;
		pv->ops[k].calls += e->calls;
		pv->ops[k].total_ns += e->total_ns;
	}
	qsort(pv->nodes, pv->n_nodes, sizeof(*pv->nodes), cmp_node_desc);
	qsort(pv->ops, pv->n_ops, sizeof(*pv->ops), cmp_op_desc);
	return 0;
}

static void free_profile(profile_view *pv)
{
	free(pv->nodes);
	free(pv->ops);
}

static double share_pct(uint64_t part, uint64_t total)
{
	return total ? 100.0 * (double)part / (double)total : 0.0;
}

static double avg_us(uint64_t total_ns, uint64_t calls)
{
	return calls ? (double)total_ns / 1e3 / (double)calls : 0.0;
}

/* Prints s in a column of `width`, cutting long names with "..." */
static void print_cell(const char *s, int width)
{
	int len = (int)strlen(s);
	if (len <= width)
		printf("%-*s", width, s);
	else
		printf("%.*s...", width - 3, s);
}

static void print_profile_text(const profile_view *pv, int iters)
{
	int name_w = 4;
	int op_w = 7;
	for (size_t i = 0; i < pv->n_nodes; i++) {
		const es_node_profile *e = pv->nodes[i];
		int nl = e->name ? (int)strlen(e->name) : 0;
		int ol = e->op_type ? (int)strlen(e->op_type) : 0;
		name_w = nl > name_w ? nl : name_w;
		op_w = ol > op_w ? ol : op_w;
	}
	name_w = name_w > 48 ? 48 : name_w;
	op_w = op_w > 24 ? 24 : op_w;

	printf("\nper-node profile (%d timed runs, sorted by total time)\n",
	       iters);
	print_cell("node", name_w);
	printf("  ");
	print_cell("op type", op_w);
	printf("  %8s  %12s  %10s  %6s\n", "calls", "total us", "avg us",
	       "share");
	for (size_t i = 0; i < pv->n_nodes; i++) {
		const es_node_profile *e = pv->nodes[i];
		print_cell(e->name ? e->name : "", name_w);
		printf("  ");
		print_cell(e->op_type ? e->op_type : "", op_w);
		printf("  %8" PRIu64 "  %12.1f  %10.2f  %5.1f%%\n", e->calls,
		       (double)e->total_ns / 1e3, avg_us(e->total_ns, e->calls),
		       share_pct(e->total_ns, pv->total_ns));
	}

	printf("\nper-op-type summary\n");
	print_cell("op type", op_w);
	printf("  %6s  %8s  %12s  %10s  %6s\n", "nodes", "calls", "total us",
	       "avg us", "share");
	for (size_t i = 0; i < pv->n_ops; i++) {
		const op_summary *s = &pv->ops[i];
		print_cell(s->op_type, op_w);
		printf("  %6zu  %8" PRIu64 "  %12.1f  %10.2f  %5.1f%%\n",
		       s->nodes, s->calls, (double)s->total_ns / 1e3,
		       avg_us(s->total_ns, s->calls),
		       share_pct(s->total_ns, pv->total_ns));
	}
	printf("%-*s  %6s  %8s  %12.1f\n", op_w, "total", "", "",
	       (double)pv->total_ns / 1e3);
}

/* ---- JSON -------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s, or 0 if it is not valid. */
static size_t utf8_seq_len(const unsigned char *s)
{
	unsigned c = s[0];
	size_t n;
	uint32_t cp;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		cp = c & 0x07;
	} else {
		return 0;
	}
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

/* Writes s as a JSON string; invalid UTF-8 becomes U+FFFD. */
static void json_str(FILE *f, const char *s)
{
	const unsigned char *p = (const unsigned char *)(s ? s : "");
	fputc('"', f);
	while (*p) {
		unsigned c = *p;
		if (c == '"' || c == '\\') {
			fputc('\\', f);
			fputc((int)c, f);
			p++;
		} else if (c < 0x20) {
			switch (c) {
			case '\n': fputs("\\n", f); break;
			case '\r': fputs("\\r", f); break;
			case '\t': fputs("\\t", f); break;
			case '\b': fputs("\\b", f); break;
			case '\f': fputs("\\f", f); break;
			default: fprintf(f, "\\u%04x", c); break;
			}
			p++;
		} else {
			size_t n = utf8_seq_len(p);
			if (n == 0) {
				fputs("\\ufffd", f);
				p++;
			} else {
				fwrite(p, 1, n, f);
				p += n;
			}
		}
	}
	fputc('"', f);
}

/* JSON has no NaN or infinity. */
static void json_num(FILE *f, double v)
{
	if (isfinite(v))
		fprintf(f, "%.6f", v);
	else
		fputs("null", f);
}

static void json_dims(FILE *f, int ndim, const int64_t *dims)
{
	fputc('[', f);
	for (int i = 0; i < ndim; i++)
		fprintf(f, "%s%" PRId64, i ? "," : "", dims[i]);
	fputc(']', f);
}

/* ---- the command ------------------------------------------------------- */

typedef struct run_result {
	double load_ms;
	double compiled_load_ms; /* --compiled: loading the compiled form */
	double compiled_first_run_ms; /* and its first run */
	long long compiled_bytes;
	const es_model *onnx_model; /* --compiled: the model the ONNX load made */
	double session_ms;
	double first_run_ms;
	latency_stats lat;
	int threads; /* what the session was asked for, 0 resolved */
	es_tensor *out_shapes; /* dtype and dims of the first run's outputs */
	profile_view profile;
	bool have_profile;
	es_exec_memory_info mem; /* the executor's memory plan after the runs */
} run_result;

/* The optimizer block: one line per pass that ran at load. */
static void print_optimizer_text(const es_model *m)
{
	size_t n = es_model_opt_passes(m);
	es_opt_pass_info first, last, p;
	if (n == 0 || es_model_opt_pass(m, 0, &first) ||
	    es_model_opt_pass(m, n - 1, &last)) {
		printf("optimizer    off\n");
		return;
	}
	double ms = 0;
	int changes = 0, width = 4;
	for (size_t i = 0; i < n; i++) {
		if (es_model_opt_pass(m, i, &p))
			continue;
		ms += p.ms;
		changes += p.changes;
		int len = (int)strlen(p.name);
		if (len > width)
			width = len > 40 ? 40 : len;
	}
	printf("optimizer    %zu passes, %d -> %d nodes, %d changes, %.3f ms\n", n,
	       first.nodes_before, last.nodes_after, changes, ms);
	printf("  %-*s  %16s  %7s  %9s\n", width, "pass", "before -> after", "changes", "ms");
	for (size_t i = 0; i < n; i++) {
		if (es_model_opt_pass(m, i, &p))
			continue;
		printf("  %-*.*s  %6d -> %-6d  %7d  %9.3f\n", width, width, p.name,
		       p.nodes_before, p.nodes_after, p.changes, p.ms);
	}
}

static void print_text(const run_opts *o, const es_model *m,
		       const input_slot *slots, const run_result *r)
{
	char dims[256];
	size_t n_in = es_model_num_inputs(m), n_out = es_model_num_outputs(m);

	printf("model        %s\n", o->model_path);
	printf("opset        %" PRId64 ", %zu nodes%s\n", es_model_opset(m),
	       es_model_num_nodes(m), o->optimize ? "" : " (not optimized)");
	for (size_t i = 0; i < n_in; i++) {
		const es_value_info *vi = es_model_input(m, i);
		es_cli_format_dims(dims, sizeof(dims), slots[i].tensor.ndim,
			    slots[i].tensor.dims);
		printf("input %-6zu %s  %s %s  from %s\n", i, vi->name,
		       es_dtype_name(slots[i].tensor.dtype), dims,
		       slots[i].file ? slots[i].file : "random data");
	}
	for (size_t i = 0; i < n_out; i++) {
		es_cli_format_dims(dims, sizeof(dims), r->out_shapes[i].ndim,
			    r->out_shapes[i].dims);
		printf("output %-5zu %s  %s %s\n", i, es_model_output(m, i)->name,
		       es_dtype_name(r->out_shapes[i].dtype), dims);
	}
	/* what the optimizer did when the ONNX file was loaded (the compiled
	 * form's own load finds nothing left to do) */
	print_optimizer_text(r->onnx_model ? r->onnx_model : m);
	printf("load         %.3f ms\n", r->load_ms);
	if (o->compiled_path)
		printf("compiled     %.3f ms to load %s (%.1f MB), %.1f %% of the ONNX load;\n"
		       "             its first run %.3f ms\n",
		       r->compiled_load_ms, o->compiled_path,
		       (double)r->compiled_bytes / 1e6,
		       r->load_ms > 0 ? 100.0 * r->compiled_load_ms / r->load_ms : 0.0,
		       r->compiled_first_run_ms);
	printf("session      %.3f ms\n", r->session_ms);
	printf("first run    %.3f ms\n", r->first_run_ms);
	printf("threads      %d%s\n", r->threads,
	       o->threads == 0 ? " (one per core)" : "");
	printf("warmup       %d runs\n", o->warmup);
	printf("iterations   %d runs in %.3f ms\n", o->iters, r->lat.total_ms);
	/* Enough decimals to show three significant digits of the fastest
	 * run, so microsecond models do not print as 0.000. */
	int dec = 3;
	if (r->lat.min > 0 && r->lat.min < 1)
		dec += (int)ceil(-log10(r->lat.min));
	dec = dec > 6 ? 6 : dec;
	printf("latency ms   p50 %.*f  p90 %.*f  p99 %.*f  min %.*f  max %.*f  mean %.*f\n",
	       dec, r->lat.p50, dec, r->lat.p90, dec, r->lat.p99, dec,
	       r->lat.min, dec, r->lat.max, dec, r->lat.mean);
	printf("throughput   %.2f runs/s\n",
	       r->lat.total_ms > 0 ? (double)o->iters * 1e3 / r->lat.total_ms : 0.0);
	if (r->mem.last_run_planned)
		printf("memory       arena %.1f KiB (%zu buffers, %.1f KiB unshared; pool before the plan %.1f KiB; plan misses %llu)\n",
		       (double)r->mem.arena_bytes / 1024.0, r->mem.buffers,
		       (double)r->mem.buffer_bytes / 1024.0,
		       (double)r->mem.recorded_pool_bytes / 1024.0,
		       (unsigned long long)r->mem.plan_misses);
	else
		printf("memory       no plan (pool %.1f KiB)\n",
		       (double)r->mem.pool_bytes / 1024.0);
	if (o->save_dir)
		printf("outputs      saved to %s\n", o->save_dir);
	if (r->have_profile)
		print_profile_text(&r->profile, o->iters);
}

static void print_json(const run_opts *o, const es_model *m,
		       const input_slot *slots, const run_result *r)
{
	FILE *f = stdout;
	size_t n_in = es_model_num_inputs(m), n_out = es_model_num_outputs(m);

	fputs("{\"model\":", f);
	json_str(f, o->model_path);
	fprintf(f, ",\"opset\":%" PRId64 ",\"nodes\":%zu,\"optimize\":%s",
		es_model_opset(m), es_model_num_nodes(m),
		o->optimize ? "true" : "false");
	fputs(",\"inputs\":[", f);
	for (size_t i = 0; i < n_in; i++) {
		fputs(i ? ",{\"name\":" : "{\"name\":", f);
		json_str(f, es_model_input(m, i)->name);
		fputs(",\"dtype\":", f);
		json_str(f, es_dtype_name(slots[i].tensor.dtype));
		fputs(",\"shape\":", f);
		json_dims(f, slots[i].tensor.ndim, slots[i].tensor.dims);
		fputs(",\"source\":", f);
		if (slots[i].file)
			json_str(f, slots[i].file);
		else
			fputs("\"random\"", f);
		fputc('}', f);
	}
	fputs("],\"outputs\":[", f);
	for (size_t i = 0; i < n_out; i++) {
		fputs(i ? ",{\"name\":" : "{\"name\":", f);
		json_str(f, es_model_output(m, i)->name);
		fputs(",\"dtype\":", f);
		json_str(f, es_dtype_name(r->out_shapes[i].dtype));
		fputs(",\"shape\":", f);
		json_dims(f, r->out_shapes[i].ndim, r->out_shapes[i].dims);
		fputc('}', f);
	}
	fputs("],\"optimizer\":[", f);
	const es_model *om = r->onnx_model ? r->onnx_model : m;
	for (size_t i = 0; i < es_model_opt_passes(om); i++) {
		es_opt_pass_info p;
		if (es_model_opt_pass(om, i, &p))
			continue;
		fputs(i ? ",{\"pass\":" : "{\"pass\":", f);
		json_str(f, p.name);
		fprintf(f, ",\"nodes_before\":%d,\"nodes_after\":%d,\"changes\":%d,\"ms\":",
			p.nodes_before, p.nodes_after, p.changes);
		json_num(f, p.ms);
		fputc('}', f);
	}
	fputs("],\"load_ms\":", f);
	json_num(f, r->load_ms);
	if (o->compiled_path) {
		fputs(",\"compiled_load_ms\":", f);
		json_num(f, r->compiled_load_ms);
		fprintf(f, ",\"compiled_bytes\":%lld", r->compiled_bytes);
		fputs(",\"compiled_first_run_ms\":", f);
		json_num(f, r->compiled_first_run_ms);
	}
	fputs(",\"session_ms\":", f);
	json_num(f, r->session_ms);
	fputs(",\"first_run_ms\":", f);
	json_num(f, r->first_run_ms);
	fputs(",\"p50_ms\":", f);
	json_num(f, r->lat.p50);
	fputs(",\"p90_ms\":", f);
	json_num(f, r->lat.p90);
	fputs(",\"p99_ms\":", f);
	json_num(f, r->lat.p99);
	fputs(",\"min_ms\":", f);
	json_num(f, r->lat.min);
	fputs(",\"max_ms\":", f);
	json_num(f, r->lat.max);
	fputs(",\"mean_ms\":", f);
	json_num(f, r->lat.mean);
	fputs(",\"throughput_per_s\":", f);
	json_num(f, r->lat.total_ms > 0 ? (double)o->iters * 1e3 / r->lat.total_ms : 0.0);
	fprintf(f, ",\"threads\":%d,\"warmup\":%d,\"iters\":%d", r->threads,
		o->warmup, o->iters);
	if (r->have_profile) {
		const profile_view *pv = &r->profile;
		fputs(",\"profile\":[", f);
		for (size_t i = 0; i < pv->n_nodes; i++) {
			const es_node_profile *e = pv->nodes[i];
			fputs(i ? ",{\"name\":" : "{\"name\":", f);
			json_str(f, e->name);
			fputs(",\"op_type\":", f);
			json_str(f, e->op_type);
			fprintf(f, ",\"calls\":%" PRIu64 ",\"total_us\":", e->calls);
			json_num(f, (double)e->total_ns / 1e3);
			fputs(",\"avg_us\":", f);
			json_num(f, avg_us(e->total_ns, e->calls));
			fputs(",\"share_pct\":", f);
			json_num(f, share_pct(e->total_ns, pv->total_ns));
			fputc('}', f);
		}
		fputs("],\"profile_by_op\":[", f);
		for (size_t i = 0; i < pv->n_ops; i++) {
			const op_summary *s = &pv->ops[i];
			fputs(i ? ",{\"op_type\":" : "{\"op_type\":", f);
			json_str(f, s->op_type);
			fprintf(f, ",\"nodes\":%zu,\"calls\":%" PRIu64 ",\"total_us\":",
				s->nodes, s->calls);
			json_num(f, (double)s->total_ns / 1e3);
			fputs(",\"avg_us\":", f);
			json_num(f, avg_us(s->total_ns, s->calls));
			fputs(",\"share_pct\":", f);
			json_num(f, share_pct(s->total_ns, pv->total_ns));
			fputc('}', f);
		}
		fputc(']', f);
	}
	fputs("}\n", f);
}

/*
 * --compiled: writes m's compiled form to path, loads it back (timed) and
 * swaps *m for the model loaded from it; *onnx gets the model loaded from
 * the ONNX file (the caller releases it). The file is written and read by
 * this command alone, so its key is a fixed one.
 */
static int compile_round_trip(const char *path, const es_model_options *mopts,
			      es_model **m, es_model **onnx, run_result *r,
			      es_error *err)
{
	static const uint8_t key[ES_COMPILED_KEY_BYTES];
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return es_error_set(err, ES_EIO, "--compiled: cannot create '%s': %s",
				    path, strerror(errno));
	int rc = es_model_save_compiled(*m, fd, key, err);
	struct stat st;
	if (!rc && fstat(fd, &st) == 0)
		r->compiled_bytes = (long long)st.st_size;
	if (close(fd) != 0 && !rc)
		rc = es_error_set(err, ES_EIO, "--compiled: cannot write '%s': %s",
				  path, strerror(errno));
	if (rc) {
		es_error_prefix(err, "--compiled: cannot save '%s'", path);
		return rc;
	}
	es_model *loaded = NULL;
	uint64_t t0 = now_ns();
	if ((rc = es_model_load_compiled(path, mopts, key, &loaded, err)) != 0) {
		es_error_prefix(err, "--compiled: cannot load '%s' back", path);
		return rc;
	}
	r->compiled_load_ms = ns_to_ms(now_ns() - t0);
	*onnx = *m;
	*m = loaded;
	return 0;
}

static int fail(const es_error *err)
{
	fprintf(stderr, PROG ": %s\n", err->msg[0] ? err->msg : es_strerror(err->code));
	return ES_CLI_EXIT_FAILURE;
}

int es_cli_run(int argc, char **argv)
{
	run_opts o;
	run_result r;
	es_error err;
	es_model *model = NULL, *onnx_model = NULL;
	es_session *session = NULL;
	input_slot *slots = NULL;
	es_tensor *inputs = NULL, *outputs = NULL;
	double *samples = NULL;
	size_t n_in = 0, n_out = 0;
	uint64_t t0;
	int status;

	memset(&r, 0, sizeof(r));
	es_error_clear(&err);
	status = parse_args(argc, argv, &o);
	if (status >= 0)
		goto out_free_opts;
	status = ES_CLI_EXIT_FAILURE;

	es_model_options mopts = {.no_optimize = !o.optimize};
	t0 = now_ns();
	if (es_model_load(o.model_path, &mopts, &model, &err) != 0) {
		es_error_prefix(&err, "cannot load '%s'", o.model_path);
		status = fail(&err);
		goto out_free_opts;
	}
	r.load_ms = ns_to_ms(now_ns() - t0);

	n_in = es_model_num_inputs(model);
	n_out = es_model_num_outputs(model);
	slots = calloc(n_in ? n_in : 1, sizeof(*slots));
	inputs = calloc(n_in ? n_in : 1, sizeof(*inputs));
	outputs = calloc(n_out ? n_out : 1, sizeof(*outputs));
	r.out_shapes = calloc(n_out ? n_out : 1, sizeof(*r.out_shapes));
	samples = calloc((size_t)o.iters, sizeof(*samples));
	if (!slots || !inputs || !outputs || !r.out_shapes || !samples) {
		es_error_set(&err, ES_ENOMEM, "out of memory");
		status = fail(&err);
		goto out_free_inputs;
	}
	if (prepare_inputs(model, &o, slots, &err) != 0) {
		status = fail(&err);
		goto out_free_inputs;
	}
	for (size_t i = 0; i < n_in; i++)
		inputs[i] = slots[i].tensor;

	es_session_options sopts = {.threads = o.threads, .profile = o.profile};
	t0 = now_ns();
	if (es_session_create(model, &sopts, &session, &err) != 0) {
		es_error_prefix(&err, "cannot create a session");
		status = fail(&err);
		goto out_free_inputs;
	}
	r.session_ms = ns_to_ms(now_ns() - t0);
	r.threads = o.threads;
	if (r.threads <= 0) {
		long cores = sysconf(_SC_NPROCESSORS_ONLN);
		r.threads = cores > 0 ? (int)cores : 1;
	}

	t0 = now_ns();
	if (es_session_run(session, inputs, n_in, outputs, &err) != 0) {
		es_error_prefix(&err, "first run failed");
		status = fail(&err);
		goto out_destroy_session;
	}
	r.first_run_ms = ns_to_ms(now_ns() - t0);
	for (size_t i = 0; i < n_out; i++) {
		r.out_shapes[i] = outputs[i];
		r.out_shapes[i].data = NULL; /* only dtype and dims are kept */
	}
	if (o.save_dir &&
	    save_outputs(o.save_dir, model, outputs, n_out, &err) != 0) {
		status = fail(&err);
		goto out_destroy_session;
	}
	if (o.compiled_path) {
		/* after the first run, so the compiled form carries what the
		 * kernels prepared then (packed weights); the rest runs on the
		 * model loaded from it */
		if (compile_round_trip(o.compiled_path, &mopts, &model, &onnx_model, &r,
				       &err) != 0) {
			status = fail(&err);
			goto out_destroy_session;
		}
		r.onnx_model = onnx_model;
		es_session_destroy(session);
		session = NULL;
		if (es_session_create(model, &sopts, &session, &err) != 0) {
			es_error_prefix(&err, "cannot create a session of the compiled model");
			status = fail(&err);
			goto out_free_inputs;
		}
		t0 = now_ns();
		if (es_session_run(session, inputs, n_in, outputs, &err) != 0) {
			es_error_prefix(&err, "first run of the compiled model failed");
			status = fail(&err);
			goto out_destroy_session;
		}
		r.compiled_first_run_ms = ns_to_ms(now_ns() - t0);
	}

	for (int i = 0; i < o.warmup; i++) {
		if (es_session_run(session, inputs, n_in, outputs, &err) != 0) {
			es_error_prefix(&err, "warmup run %d failed", i + 1);
			status = fail(&err);
			goto out_destroy_session;
		}
	}
	if (o.profile)
		es_session_profile_reset(session);
	for (int i = 0; i < o.iters; i++) {
		t0 = now_ns();
		if (es_session_run(session, inputs, n_in, outputs, &err) != 0) {
			es_error_prefix(&err, "timed run %d failed", i + 1);
			status = fail(&err);
			goto out_destroy_session;
		}
		samples[i] = ns_to_ms(now_ns() - t0);
	}
	compute_stats(samples, (size_t)o.iters, &r.lat);
	es_session_memory_info(session, &r.mem);
	if (o.profile) {
		if (build_profile(session, &r.profile, &err) != 0) {
			status = fail(&err);
			goto out_destroy_session;
		}
		r.have_profile = true;
	}

	if (o.json)
		print_json(&o, model, slots, &r);
	else
		print_text(&o, model, slots, &r);
	if (fflush(stdout) != 0) {
		fprintf(stderr, PROG ": cannot write the report: %s\n",
			strerror(errno));
		status = ES_CLI_EXIT_FAILURE;
	} else {
		status = ES_CLI_EXIT_OK;
	}

	if (r.have_profile)
		free_profile(&r.profile);
out_destroy_session:
	if (session)
		es_session_destroy(session);
out_free_inputs:
	for (size_t i = 0; slots && i < n_in; i++)
		if (slots[i].loaded)
			es_tensor_free_data(&slots[i].tensor);
	free(slots);
	free(inputs);
	free(outputs);
	free(r.out_shapes);
	free(samples);
	if (model)
		es_model_release(model);
	if (onnx_model)
		es_model_release(onnx_model);
out_free_opts:
	free_opts(&o);
	return status;
}
