/*
 * `edgeserve serve`: the model server. Builds the server configuration from
 * OVMS-style flags (a model repository, a config file or one model), loads
 * the models, serves HTTP, and shuts down gracefully on SIGTERM/SIGINT:
 * readiness false at once, no new connections, queued and running requests
 * finish and are answered (bounded by --exit_timeout_seconds), exit 0.
 *
 * Signals go through a self-pipe: the handler only writes the signal number
 * to a pipe (it may run on any thread, including ones that libraries
 * started before main), and the main thread does the work.
 *
 * Before anything loads, the runtime libraries actually loaded (oneDNN,
 * OpenBLAS) are checked against the oldest tested ones. The server keeps a
 * config reader that reads again whatever it was started from, for
 * POST /v1/config/reload (docs/lifecycle.md).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/http.h"
#include "base/alloc.h"
#include "base/clock.h"
#include "base/status.h"
#include "cli/cli.h"
#include "edgeserve/engine.h"
#include "obs/log.h"
#include "obs/metrics.h"
#include "serving/runtime_check.h"
#include "serving/serving.h"

#define PROG "edgeserve serve"
#define DEFAULT_REPOSITORY "examples/models"

typedef struct serve_opts {
	const char *repository;
	const char *config_path;
	const char *model_name;
	const char *model_path;
	const char *bind_address;
	const char *log_level;
	long long rest_port;          /* -1: not given */
	long long rest_workers;       /* -1: not given */
	long long max_connections;    /* -1: not given */
	long long connection_timeout; /* -1: not given */
	long long default_timeout_ms; /* -1: not given */
	long long exit_timeout_s;     /* -1: not given */
	uint64_t max_request_bytes;   /* 0: not given */
	int metrics_enable;           /* -1: not given, else 0/1 */
	long long poll_wait_s;        /* -1: not given */
	const char *cache_dir;        /* NULL: not given */
	const char *divergence_log;   /* NULL: not given */
	long long warmup_inferences;  /* -1: not given */
	bool allow_old_runtime;
} serve_opts;

static void print_help(FILE *out)
{
	es_server_config d;

	es_config_defaults(&d);
	fprintf(out,
		"usage: edgeserve serve [OPTIONS]\n"
		"\n"
		"Serves ONNX models over HTTP: KServe v2 REST (/v2/...), TF-Serving REST\n"
		"(/v1/models/...), the OVMS config view (/v1/config) and Prometheus metrics\n"
		"(/metrics). Logs are JSON lines on stderr; the \"server_ready\" line carries\n"
		"the port, which is also printed on stdout (\"edgeserve: serving on URL\").\n"
		"POST /v1/config/reload reads the configuration again and applies it;\n"
		"POST /v1/admin/models/NAME/rollback goes back to a model's previous version\n"
		"(see docs/lifecycle.md). Labels, canaries with a kill switch, shadow runs\n"
		"and device fallback are set in the config file and moved with\n"
		"/v1/admin/models/NAME/{labels,canary,kill,unkill,rollout} (docs/rollouts.md).\n"
		"\n"
		"what to serve (one of these; with none, ./" DEFAULT_REPOSITORY " is served\n"
		"when it exists):\n"
		"  --model_repository_path DIR  every subdirectory of DIR is a model and every\n"
		"                               numeric subdirectory of a model a version (the\n"
		"                               highest is served); DIR/config.json, when it\n"
		"                               exists, is read instead, as --config_path\n"
		"  --config_path FILE           OVMS-style config file: \"model_config_list\"\n"
		"                               plus our \"devices\" (see docs/serving.md)\n"
		"  --model_name NAME --model_path DIR\n"
		"                               one model; DIR holds its numeric version\n"
		"                               directories (NAME defaults to DIR's last part)\n"
		"\n"
		"network:\n"
		"  --rest_port N                HTTP port (default %d; 0 picks a free port)\n"
		"  --rest_bind_address ADDR     address to listen on (default %s)\n"
		"  --rest_workers N             network threads (default %d: one per core)\n"
		"  --max_connections N          open connections at most (default %d)\n"
		"  --max_request_bytes N        largest request body, bytes; a K, M or G\n"
		"                               suffix multiplies by 1024^1..3 (default %zu);\n"
		"                               larger bodies get 413\n"
		"  --connection_timeout_seconds N\n"
		"                               close connections idle this long (default %d)\n"
		"\n"
		"model lifecycle (docs/lifecycle.md):\n"
		"  --file_system_poll_wait_seconds N\n"
		"                               every N seconds, look for version directories\n"
		"                               added or removed and load or unload them\n"
		"                               (default %d; 0: off; at most 86400)\n"
		"  --cache_dir DIR              keep the compiled form of every loaded version\n"
		"                               in DIR, so that a restart reads it back instead\n"
		"                               of compiling again (default: no cache)\n"
		"  --warmup_inferences N        inferences run on every stream before a version\n"
		"                               serves, for models whose config sets no\n"
		"                               \"warmup\" (default %d; 0..1000)\n"
		"  --allow_old_runtime [true|false]\n"
		"                               start even when the oneDNN or OpenBLAS library\n"
		"                               loaded is older than the oldest tested one\n"
		"                               (default false: refuse to start)\n"
		"\n"
		"rollouts (docs/rollouts.md):\n"
		"  --divergence_log FILE        append a JSON line for each shadow run whose\n"
		"                               outputs diverge from the primary's (at most %d\n"
		"                               lines a second; the rest are counted); default:\n"
		"                               \"shadow_divergence\" lines in the server log\n"
		"\n"
		"behaviour:\n"
		"  --default_timeout_ms N       request deadline (default %" PRId64 "; 0: none);\n"
		"                               a KServe \"timeout\" parameter (microseconds) may\n"
		"                               lower it for one request, never raise it\n"
		"  --exit_timeout_seconds N     on SIGTERM/SIGINT, how long queued and running\n"
		"                               requests may take before they are cancelled\n"
		"                               (default %d)\n"
		"  --metrics_enable [true|false]\n"
		"                               serve /metrics (default %s)\n"
		"  --log_level LEVEL            DEBUG, INFO, WARNING or ERROR (default %s)\n"
		"  -h, --help                   show this help\n"
		"\n"
		"Options taking a value also accept --option=VALUE.\n"
		"Exit status: 0 after a clean shutdown; 1 the server could not start (bad\n"
		"config, port in use, runtime libraries too old); 2 bad command line.\n",
		d.rest_port, d.rest_bind_address ? d.rest_bind_address : "127.0.0.1",
		d.rest_workers, d.max_connections, d.max_request_bytes,
		d.connection_timeout_s, d.poll_wait_s, d.default_warmup,
		d.divergence_log_per_s, d.default_timeout_ms, d.exit_timeout_s,
		d.metrics_enable ? "true" : "false", d.log_level ? d.log_level : "INFO");
	es_config_free(&d);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, PROG ": ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nRun '" PROG " --help' for the options.\n");
	return ES_CLI_EXIT_USAGE;
}

static bool parse_int(const char *text, long long min, long long max, long long *out)
{
	char *end;
	long long v;

	if (!text || !*text)
		return false;
	errno = 0;
	v = strtoll(text, &end, 10);
	if (errno || *end || v < min || v > max)
		return false;
	*out = v;
	return true;
}

/* Bytes with an optional K/M/G (binary) suffix. */
static bool parse_bytes(const char *text, uint64_t *out)
{
	char *end;
	unsigned long long v;
	uint64_t mul = 1;

	if (!text || *text < '0' || *text > '9')
		return false;
	errno = 0;
	v = strtoull(text, &end, 10);
	if (errno)
		return false;
	switch (*end) {
	case '\0':
		break;
	case 'k': case 'K':
		mul = 1ull << 10;
		end++;
		break;
	case 'm': case 'M':
		mul = 1ull << 20;
		end++;
		break;
	case 'g': case 'G':
		mul = 1ull << 30;
		end++;
		break;
	default:
		return false;
	}
	if (*end == 'i')
		end++;
	if (*end == 'B' || *end == 'b')
		end++;
	if (*end || __builtin_mul_overflow((uint64_t)v, mul, out) || *out == 0)
		return false;
	return true;
}

enum opt_id {
	O_REPO, O_CONFIG, O_MODEL_NAME, O_MODEL_PATH, O_PORT, O_BIND, O_WORKERS,
	O_MAX_CONN, O_MAX_BYTES, O_CONN_TIMEOUT, O_DEFAULT_TIMEOUT, O_EXIT_TIMEOUT,
	O_METRICS, O_LOG_LEVEL, O_POLL_WAIT, O_CACHE_DIR, O_WARMUP, O_OLD_RUNTIME,
	O_DIVERGENCE_LOG, O_HELP, O_SHORT_HELP,
};

/* Indexed by enum opt_id. metrics_enable and allow_old_runtime may be bare
 * flags, as in OVMS. */
static const es_cli_flag options[] = {
	[O_REPO] = {"--model_repository_path", true, false},
	[O_CONFIG] = {"--config_path", true, false},
	[O_MODEL_NAME] = {"--model_name", true, false},
	[O_MODEL_PATH] = {"--model_path", true, false},
	[O_PORT] = {"--rest_port", true, false},
	[O_BIND] = {"--rest_bind_address", true, false},
	[O_WORKERS] = {"--rest_workers", true, false},
	[O_MAX_CONN] = {"--max_connections", true, false},
	[O_MAX_BYTES] = {"--max_request_bytes", true, false},
	[O_CONN_TIMEOUT] = {"--connection_timeout_seconds", true, false},
	[O_DEFAULT_TIMEOUT] = {"--default_timeout_ms", true, false},
	[O_EXIT_TIMEOUT] = {"--exit_timeout_seconds", true, false},
	[O_METRICS] = {"--metrics_enable", true, true},
	[O_LOG_LEVEL] = {"--log_level", true, false},
	[O_POLL_WAIT] = {"--file_system_poll_wait_seconds", true, false},
	[O_CACHE_DIR] = {"--cache_dir", true, false},
	[O_WARMUP] = {"--warmup_inferences", true, false},
	[O_OLD_RUNTIME] = {"--allow_old_runtime", true, true},
	[O_DIVERGENCE_LOG] = {"--divergence_log", true, false},
	[O_HELP] = {"--help", false, false},
	[O_SHORT_HELP] = {"-h", false, false},
};

#define N_OPTIONS (sizeof(options) / sizeof(options[0]))

/* Returns -1 when all is well (and the server should start), otherwise the
 * exit status. */
static int parse_args(int argc, char **argv, serve_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->rest_port = o->rest_workers = o->max_connections = -1;
	o->connection_timeout = o->default_timeout_ms = o->exit_timeout_s = -1;
	o->metrics_enable = -1;
	o->poll_wait_s = o->warmup_inferences = -1;

	es_cli_opts sc;
	const char *value;
	int k;
	es_cli_opts_init(&sc, argc, argv, options, N_OPTIONS, ES_CLI_OPTS_OVMS,
			 usage_error);
	while ((k = es_cli_opts_next(&sc, &value)) != ES_CLI_OPT_END) {
		if (k == ES_CLI_OPT_ERROR)
			return sc.exit_status;
		if (k == ES_CLI_OPT_POSITIONAL)
			return usage_error("unexpected argument '%s'", value);

		long long n;
		switch ((enum opt_id)k) {
		case O_HELP:
		case O_SHORT_HELP:
			print_help(stdout);
			return ES_CLI_EXIT_OK;
		case O_REPO:
			o->repository = value;
			break;
		case O_CONFIG:
			o->config_path = value;
			break;
		case O_MODEL_NAME:
			o->model_name = value;
			break;
		case O_MODEL_PATH:
			o->model_path = value;
			break;
		case O_BIND:
			if (!*value)
				return usage_error("--rest_bind_address: empty address");
			o->bind_address = value;
			break;
		case O_LOG_LEVEL: {
			es_log_level lvl;
			if (es_log_parse_level(value, &lvl) != 0)
				return usage_error("--log_level '%s': expected DEBUG, INFO, WARNING or ERROR",
						   value);
			o->log_level = value;
			break;
		}
		case O_METRICS:
			o->metrics_enable = es_cli_parse_bool(value);
			if (o->metrics_enable < 0)
				return usage_error("--metrics_enable '%s': expected true or false",
						   value);
			break;
		case O_MAX_BYTES:
			if (!parse_bytes(value, &o->max_request_bytes) ||
			    o->max_request_bytes > SIZE_MAX / 2)
				return usage_error("--max_request_bytes '%s': expected a positive byte count such as 1048576 or 64M",
						   value);
			break;
		case O_PORT:
			if (!parse_int(value, 0, 65535, &n))
				return usage_error("--rest_port '%s': expected 0..65535", value);
			o->rest_port = n;
			break;
		case O_WORKERS:
			if (!parse_int(value, 0, 1024, &n))
				return usage_error("--rest_workers '%s': expected 0..1024 (0: one per core)",
						   value);
			o->rest_workers = n;
			break;
		case O_MAX_CONN:
			if (!parse_int(value, 1, 1000000, &n))
				return usage_error("--max_connections '%s': expected 1..1000000", value);
			o->max_connections = n;
			break;
		case O_CONN_TIMEOUT:
			if (!parse_int(value, 1, 86400, &n))
				return usage_error("--connection_timeout_seconds '%s': expected 1..86400",
						   value);
			o->connection_timeout = n;
			break;
		case O_DEFAULT_TIMEOUT:
			if (!parse_int(value, 0, INT64_MAX / 1000000, &n))
				return usage_error("--default_timeout_ms '%s': expected a number of milliseconds (0: none)",
						   value);
			o->default_timeout_ms = n;
			break;
		case O_EXIT_TIMEOUT:
			if (!parse_int(value, 0, 86400, &n))
				return usage_error("--exit_timeout_seconds '%s': expected 0..86400", value);
			o->exit_timeout_s = n;
			break;
		case O_POLL_WAIT:
			if (!parse_int(value, 0, 86400, &n))
				return usage_error("--file_system_poll_wait_seconds '%s': expected 0..86400 (0: no polling)",
						   value);
			o->poll_wait_s = n;
			break;
		case O_CACHE_DIR:
			if (!*value)
				return usage_error("--cache_dir: empty directory name");
			o->cache_dir = value;
			break;
		case O_WARMUP:
			if (!parse_int(value, 0, 1000, &n))
				return usage_error("--warmup_inferences '%s': expected 0..1000", value);
			o->warmup_inferences = n;
			break;
		case O_OLD_RUNTIME: {
			int b = es_cli_parse_bool(value);
			if (b < 0)
				return usage_error("--allow_old_runtime '%s': expected true or false",
						   value);
			o->allow_old_runtime = b == 1;
			break;
		}
		case O_DIVERGENCE_LOG:
			if (!*value)
				return usage_error("--divergence_log: empty file name");
			o->divergence_log = value;
			break;
		}
	}

	if (o->config_path && (o->repository || o->model_name || o->model_path))
		return usage_error("--config_path cannot be combined with --model_repository_path, --model_name or --model_path");
	if (o->repository && (o->model_name || o->model_path))
		return usage_error("--model_repository_path cannot be combined with --model_name or --model_path");
	if (o->model_name && !o->model_path)
		return usage_error("--model_name needs --model_path DIR (the directory holding the model's version directories)");
	return -1;
}

static bool is_dir(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Adds the model of --model_name/--model_path to cfg. */
static int add_single_model(es_server_config *cfg, const char *name,
			    const char *path, es_error *err)
{
	char *derived = NULL;
	es_model_config *models;

	if (!name) {
		/* the directory's last component */
		size_t len = strlen(path);
		while (len > 1 && path[len - 1] == '/')
			len--;
		size_t start = len;
		while (start > 0 && path[start - 1] != '/')
			start--;
		derived = es_strndup(path + start, len - start);
		if (!derived)
			return es_error_set(err, ES_ENOMEM, "out of memory");
		name = derived;
	}
	models = realloc(cfg->models, (cfg->n_models + 1) * sizeof(*models));
	if (!models) {
		free(derived);
		return es_error_set(err, ES_ENOMEM, "out of memory");
	}
	cfg->models = models;
	es_model_config *mc = &models[cfg->n_models];
	memset(mc, 0, sizeof(*mc));
	mc->name = derived ? derived : es_strdup(name);
	mc->base_path = es_strdup(path);
	mc->policy.kind = ES_POLICY_LATEST;
	mc->policy.num_versions = 1;
	mc->warmup = -1; /* --warmup_inferences */
	cfg->n_models++;
	if (!mc->name || !mc->base_path)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	return 0;
}

static int replace_str(char **dst, const char *src)
{
	char *copy = es_strdup(src);

	if (!copy)
		return ES_ENOMEM;
	free(*dst);
	*dst = copy;
	return 0;
}

/* Command-line settings override the defaults (and the file). */
static int apply_opts(es_server_config *cfg, const serve_opts *o)
{
	if (o->bind_address && replace_str(&cfg->rest_bind_address, o->bind_address))
		return ES_ENOMEM;
	if (o->log_level && replace_str(&cfg->log_level, o->log_level))
		return ES_ENOMEM;
	if (o->rest_port >= 0)
		cfg->rest_port = (int)o->rest_port;
	if (o->rest_workers >= 0)
		cfg->rest_workers = (int)o->rest_workers;
	if (o->max_connections >= 0)
		cfg->max_connections = (int)o->max_connections;
	if (o->connection_timeout >= 0)
		cfg->connection_timeout_s = (int)o->connection_timeout;
	if (o->default_timeout_ms >= 0)
		cfg->default_timeout_ms = o->default_timeout_ms;
	if (o->exit_timeout_s >= 0)
		cfg->exit_timeout_s = (int)o->exit_timeout_s;
	if (o->max_request_bytes)
		cfg->max_request_bytes = (size_t)o->max_request_bytes;
	if (o->metrics_enable >= 0)
		cfg->metrics_enable = o->metrics_enable == 1;
	if (o->poll_wait_s >= 0)
		cfg->poll_wait_s = (int)o->poll_wait_s;
	if (o->warmup_inferences >= 0)
		cfg->default_warmup = (int)o->warmup_inferences;
	if (o->cache_dir && replace_str(&cfg->cache_dir, o->cache_dir))
		return ES_ENOMEM;
	if (o->divergence_log && replace_str(&cfg->divergence_log, o->divergence_log))
		return ES_ENOMEM;
	return 0;
}

/* A repository directory: DIR/config.json when it exists (the repository
 * describes itself), otherwise every subdirectory is a model. announce:
 * log which one (at startup; a reload does not repeat it). */
static int load_repository(const char *dir, es_server_config *cfg, bool announce,
			   es_error *err)
{
	size_t len = strlen(dir);
	char *path = malloc(len + sizeof("/config.json"));
	struct stat st;
	int rc;

	if (!path)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	memcpy(path, dir, len);
	memcpy(path + len, "/config.json", sizeof("/config.json"));
	if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
		if (announce)
			es_log_msg(ES_LOG_INFO, "config",
				   "using the repository's config file %s", path);
		rc = es_config_load_file(path, cfg, err);
	} else {
		rc = es_config_scan_repository(dir, cfg, err);
	}
	free(path);
	return rc;
}

/* Loads what to serve into cfg (models, and the devices of a config file).
 * announce: log where the models come from (at startup). */
static int load_models(es_server_config *cfg, const serve_opts *o, bool announce,
		       es_error *err)
{
	if (o->config_path)
		return es_config_load_file(o->config_path, cfg, err);
	if (o->model_path)
		return add_single_model(cfg, o->model_name, o->model_path, err);
	if (o->repository)
		return load_repository(o->repository, cfg, announce, err);
	if (announce)
		es_log_msg(ES_LOG_INFO, "config",
			   "no model flags given: serving the example repository ./%s",
			   DEFAULT_REPOSITORY);
	return load_repository(DEFAULT_REPOSITORY, cfg, announce, err);
}

/*
 * The server's config reader (es_config_reader_fn): reads again what the
 * server was started from (the --config_path file, the repository's
 * config.json or a scan of the repository, the --model_name/--model_path
 * model) into cfg, which the server created with defaults and owns. ctx is
 * the serve_opts, alive as long as the server. Runs on the thread that
 * asked for the reload; the messages name no host directory (config.c).
 */
static int reread_config(void *ctx, es_server_config *cfg, es_error *err)
{
	const serve_opts *o = ctx;
	int rc = load_models(cfg, o, false, err);

	if (!rc)
		rc = es_config_validate(cfg, err);
	return rc;
}

/*
 * Refuses runtime libraries older than the tested ones, unless
 * --allow_old_runtime: then a warning, and the server starts. Fills rv for
 * the server_ready line. Returns 0 to go on.
 */
static int check_runtime(const serve_opts *o, es_runtime_versions *rv)
{
	es_error err = {0};
	es_logrec lr;

	es_engine_runtime_versions(rv);
	if (es_runtime_check(rv, &err) == 0)
		return 0;
	if (!err.msg[0])
		snprintf(err.msg, sizeof(err.msg), "the runtime libraries are older than the tested ones");
	if (!o->allow_old_runtime) {
		es_log_msg(ES_LOG_ERROR, "startup_error", "%s", err.msg);
		fprintf(stderr, PROG ": %s\n", err.msg);
		return -1;
	}
	if (es_log_begin(&lr, ES_LOG_WARN, "runtime_check")) {
		es_log_str(&lr, "msg", err.msg);
		es_log_str(&lr, "onednn", rv->onednn_str);
		es_log_str(&lr, "openblas", rv->openblas_str);
		es_log_bool(&lr, "allow_old_runtime", true);
		es_log_end(&lr);
	}
	return 0;
}

static int sig_pipe[2] = {-1, -1};

/* Async-signal-safe: one write(2) of the signal number. */
static void on_signal(int sig)
{
	int saved = errno;
	unsigned char b = (unsigned char)sig;
	ssize_t n = write(sig_pipe[1], &b, 1);

	(void)n; /* a full pipe already holds a pending signal */
	errno = saved;
}

static int install_signals(void)
{
	struct sigaction sa;

	if (pipe(sig_pipe) != 0)
		return -1;
	fcntl(sig_pipe[0], F_SETFD, FD_CLOEXEC);
	fcntl(sig_pipe[1], F_SETFD, FD_CLOEXEC);
	fcntl(sig_pipe[1], F_SETFL, O_NONBLOCK);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	if (sigaction(SIGTERM, &sa, NULL) || sigaction(SIGINT, &sa, NULL))
		return -1;
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

/* Blocks until a shutdown signal arrives; returns its number. */
static int wait_signal(void)
{
	unsigned char b;

	for (;;) {
		ssize_t n = read(sig_pipe[0], &b, 1);
		if (n == 1)
			return b;
		if (n < 0 && errno != EINTR)
			return SIGTERM; /* cannot happen; shut down anyway */
	}
}

static void *force_exit_thread(void *arg)
{
	int sig = wait_signal();

	es_log_msg(ES_LOG_ERROR, "shutdown_forced",
		   "second signal %d: exiting without waiting for requests", sig);
	_exit(ES_CLI_EXIT_FAILURE);
	return NULL;
}

static const char *signal_name(int sig)
{
	return sig == SIGTERM ? "SIGTERM" : sig == SIGINT ? "SIGINT" : "signal";
}

int es_cli_serve(int argc, char **argv)
{
	es_server_config cfg;
	serve_opts o;
	es_error err = {0};
	es_metrics *metrics = NULL;
	es_server *srv = NULL;
	es_http *http = NULL;
	es_log_level level = ES_LOG_INFO;
	int rc, sig, status = ES_CLI_EXIT_FAILURE;

	rc = parse_args(argc, argv, &o);
	if (rc >= 0)
		return rc;
	if (!o.config_path && !o.repository && !o.model_path &&
	    !is_dir(DEFAULT_REPOSITORY))
		return usage_error("nothing to serve: give --model_repository_path DIR, --config_path FILE or --model_name NAME --model_path DIR (without them, ./%s is served when it exists in the current directory)",
				   DEFAULT_REPOSITORY);

	es_config_defaults(&cfg);
	if (apply_opts(&cfg, &o)) {
		fprintf(stderr, PROG ": out of memory\n");
		goto out_config;
	}
	if (cfg.log_level && es_log_parse_level(cfg.log_level, &level) == 0)
		es_log_set_level(level);

	rc = load_models(&cfg, &o, true, &err);
	/* the file may not touch the network settings, but be sure */
	if (!rc && apply_opts(&cfg, &o))
		rc = es_error_set(&err, ES_ENOMEM, "out of memory");
	if (!rc)
		rc = es_config_validate(&cfg, &err);
	if (rc) {
		es_log_msg(ES_LOG_ERROR, "config_error", "%s", err.msg);
		fprintf(stderr, PROG ": %s\n", err.msg);
		goto out_config;
	}

	es_runtime_versions rv;
	if (check_runtime(&o, &rv) != 0)
		goto out_config;

	/* Before the models load: a signal during a long load then stops
	 * the server cleanly once it is up. */
	if (install_signals() != 0) {
		fprintf(stderr, PROG ": cannot install signal handlers: %s\n",
			strerror(errno));
		goto out_config;
	}

	if (cfg.metrics_enable) {
		metrics = es_metrics_new();
		if (!metrics) {
			fprintf(stderr, PROG ": out of memory\n");
			goto out_config;
		}
	}
	uint64_t t0 = es_now_ns();
	rc = es_server_create(&cfg, metrics, &srv, &err);
	if (rc) {
		es_log_msg(ES_LOG_ERROR, "startup_error", "%s", err.msg);
		fprintf(stderr, PROG ": %s\n", err.msg);
		goto out_metrics;
	}
	es_server_set_config_reader(srv, reread_config, &o);
	rc = es_http_start(&cfg, srv, metrics, &http, &err);
	if (rc) {
		es_log_msg(ES_LOG_ERROR, "startup_error", "%s", err.msg);
		fprintf(stderr, PROG ": %s\n", err.msg);
		goto out_server;
	}

	es_logrec lr;
	if (es_log_begin(&lr, ES_LOG_INFO, "server_ready")) {
		es_log_str(&lr, "address", cfg.rest_bind_address ? cfg.rest_bind_address
								 : "127.0.0.1");
		es_log_int(&lr, "port", es_http_port(http));
		es_log_int(&lr, "models", (int64_t)es_server_models(srv)->n);
		es_log_bool(&lr, "ready", es_server_ready(srv));
		es_log_bool(&lr, "metrics", metrics != NULL);
		es_log_f64(&lr, "startup_s", (double)(es_now_ns() - t0) / 1e9);
		es_log_str(&lr, "version", ES_ENGINE_VERSION);
		es_log_str(&lr, "onednn", rv.onednn_str);
		es_log_str(&lr, "openblas", rv.openblas_str);
		es_log_end(&lr);
	}

	/* On stdout too, whatever the log level, for scripts that start the
	 * server with --rest_port 0. */
	printf("edgeserve: serving on http://%s:%d\n",
	       cfg.rest_bind_address ? cfg.rest_bind_address : "127.0.0.1",
	       es_http_port(http));
	fflush(stdout);

	sig = wait_signal();

	pthread_t force;
	if (pthread_create(&force, NULL, force_exit_thread, NULL) == 0)
		pthread_detach(force);

	uint64_t t_stop = es_now_ns();
	int64_t budget_ms = (int64_t)cfg.exit_timeout_s * 1000;
	if (es_log_begin(&lr, ES_LOG_INFO, "shutdown_begin")) {
		es_log_str(&lr, "signal", signal_name(sig));
		es_log_int(&lr, "inflight", (int64_t)es_http_inflight(http));
		es_log_int(&lr, "exit_timeout_s", cfg.exit_timeout_s);
		es_log_end(&lr);
	}
	es_http_begin_shutdown(http);
	es_http_quiesce(http);
	size_t cancelled = es_server_drain(srv, budget_ms);
	/* The replies of the drained requests still have to be written;
	 * give them what is left of the budget, and at least a second. */
	int64_t spent_ms = (int64_t)((es_now_ns() - t_stop) / 1000000);
	int64_t left_ms = budget_ms - spent_ms;
	size_t unanswered = es_http_wait_idle(http, left_ms > 1000 ? left_ms : 1000);
	es_http_stop(http);
	http = NULL;
	if (es_log_begin(&lr, ES_LOG_INFO, "shutdown_complete")) {
		es_log_int(&lr, "cancelled", (int64_t)cancelled);
		es_log_int(&lr, "unanswered", (int64_t)unanswered);
		es_log_f64(&lr, "duration_s", (double)(es_now_ns() - t_stop) / 1e9);
		es_log_end(&lr);
	}
	status = ES_CLI_EXIT_OK;

out_server:
	es_server_destroy(srv);
out_metrics:
	if (metrics)
		es_metrics_free(metrics);
out_config:
	es_config_free(&cfg);
	return status;
}
