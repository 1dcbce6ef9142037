/*
 * Server configuration: defaults, the OVMS-style config file, a scan of a
 * model repository directory, and validation.
 *
 * Every string and array in an es_server_config is malloc'ed and owned by
 * it; es_config_free frees them. Code that changes a field frees the old
 * value and stores a malloc'ed copy.
 *
 * Error messages name a file or directory by its last path component only:
 * a configuration reload sends them to the client that asked for it, and
 * messages that reach clients carry no host paths.
 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/status.h"
#include "obs/log.h"
#include "serving/serving_int.h"

/* A config file larger than this is certainly not a config file. */
#define CONFIG_MAX_BYTES ((size_t)16 << 20)
#define LOC_MAX 256
/* Per-model "warmup": inferences per stream, at most this many. */
#define WARMUP_MAX 1000
/* --file_system_poll_wait_seconds: at most a day. */
#define POLL_WAIT_MAX 86400

bool es_serving_name_ok(const char *name)
{
	if (!name || !name[0] || name[0] == '.')
		return false;
	size_t n = 0;
	for (const char *p = name; *p; p++, n++) {
		char c = *p;
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
		if (!ok || n >= ES_NAME_MAX)
			return false;
	}
	return true;
}

/* ---- defaults and freeing ------------------------------------------------- */

static int online_cpus(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	if (n < 1)
		return 1;
	return n > ES_MAX_STREAMS ? ES_MAX_STREAMS : (int)n;
}

/*
 * The default device is the CPU engine in latency mode: one stream whose
 * sessions use every core for intra-op threads (OpenVINO's default LATENCY
 * hint makes the same choice). Fewer threads competing for the cores also
 * lifts the server's request rate on small models (docs/performance.md).
 * For throughput under many concurrent requests, declare the device with
 * more streams.
 */
static int default_device(es_device_config *d)
{
	memset(d, 0, sizeof(*d));
	d->name = strdup("CPU");
	d->backend = strdup("cpu");
	d->streams = 1;
	d->threads_per_stream = online_cpus();
	d->max_queue_size = ES_DEFAULT_QUEUE_SIZE;
	return d->name && d->backend ? 0 : ES_ENOMEM;
}

/*
 * Allocation failures leave NULL strings or no device behind;
 * es_config_validate reports them, so this function needs no status.
 */
void es_config_defaults(es_server_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->rest_bind_address = strdup("127.0.0.1");
	cfg->rest_port = 8000;
	cfg->rest_workers = 0;
	cfg->max_request_bytes = (size_t)64 << 20;
	cfg->max_connections = 1024;
	cfg->connection_timeout_s = 60;
	cfg->default_timeout_ms = 30000;
	cfg->exit_timeout_s = 30;
	cfg->metrics_enable = true;
	cfg->log_level = strdup("INFO");
	cfg->poll_wait_s = 1;
	cfg->cache_dir = NULL;
	cfg->default_warmup = 1;
	cfg->devices = calloc(1, sizeof(*cfg->devices));
	if (cfg->devices) {
		cfg->n_devices = 1;
		default_device(&cfg->devices[0]);
	}
}

static void free_device(es_device_config *d)
{
	free(d->name);
	free(d->backend);
	memset(d, 0, sizeof(*d));
}

static void free_model(es_model_config *m)
{
	free(m->name);
	free(m->base_path);
	free(m->target_device);
	free(m->policy.versions);
	memset(m, 0, sizeof(*m));
}

static void free_devices(es_device_config *d, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free_device(&d[i]);
	free(d);
}

static void free_models(es_model_config *m, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free_model(&m[i]);
	free(m);
}

void es_config_free(es_server_config *cfg)
{
	if (!cfg)
		return;
	free(cfg->rest_bind_address);
	free(cfg->log_level);
	free(cfg->cache_dir);
	free_devices(cfg->devices, cfg->n_devices);
	free_models(cfg->models, cfg->n_models);
	memset(cfg, 0, sizeof(*cfg));
}

/* Appends n models (moved, not copied) to cfg->models. */
static int append_models(es_server_config *cfg, es_model_config *models, size_t n)
{
	size_t total, bytes;
	if (!n)
		return 0;
	if (es_add_size(cfg->n_models, n, &total) ||
	    es_mul_size(total, sizeof(*models), &bytes))
		return ES_ENOMEM;
	es_model_config *grown = realloc(cfg->models, bytes);
	if (!grown)
		return ES_ENOMEM;
	memcpy(&grown[cfg->n_models], models, n * sizeof(*models));
	cfg->models = grown;
	cfg->n_models = total;
	return 0;
}

/* ---- paths ---------------------------------------------------------------- */

/* Returns a malloc'ed "dir/name" (just name when dir is empty). */
static char *path_join(const char *dir, const char *name)
{
	size_t a = strlen(dir), b = strlen(name), n;
	if (es_add_size(a, b, &n) || es_add_size(n, 2, &n))
		return NULL;
	char *p = malloc(n);
	if (!p)
		return NULL;
	if (a)
		snprintf(p, n, "%s%s%s", dir, dir[a - 1] == '/' ? "" : "/", name);
	else
		snprintf(p, n, "%s", name);
	return p;
}

/* The directory part of path ("" for a bare file name), malloc'ed. */
static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');
	if (!slash)
		return strdup("");
	if (slash == path)
		return strdup("/");
	return es_strndup(path, (size_t)(slash - path));
}

/*
 * The last component of path, for messages: "config.json" for
 * "/etc/edgeserve/config.json", "models" for "/srv/models/". Points into
 * path, or at a constant; shown with "%.*s" and the length in *len.
 */
static const char *shown_name(const char *path, int *len)
{
	size_t n = strlen(path);
	while (n > 1 && path[n - 1] == '/')
		n--;
	size_t start = n;
	while (start > 0 && path[start - 1] != '/')
		start--;
	if (start == n) { /* "" or "/" */
		*len = (int)n;
		return path;
	}
	*len = n - start > INT_MAX ? INT_MAX : (int)(n - start);
	return path + start;
}

/* A copy of path without trailing slashes (but "/" stays "/"). */
static char *strip_slashes(const char *path)
{
	size_t n = strlen(path);
	while (n > 1 && path[n - 1] == '/')
		n--;
	return es_strndup(path, n);
}

/* ---- JSON helpers ---------------------------------------------------------- */

static const char *json_type(const cJSON *j)
{
	if (cJSON_IsString(j))
		return "a string";
	if (cJSON_IsNumber(j))
		return "a number";
	if (cJSON_IsBool(j))
		return "a boolean";
	if (cJSON_IsNull(j))
		return "null";
	if (cJSON_IsArray(j))
		return "an array";
	if (cJSON_IsObject(j))
		return "an object";
	return "an invalid value";
}

static int wrong_type(es_error *err, const char *loc, const char *expected,
		      const cJSON *j)
{
	return es_error_set(err, ES_EINVAL, "%s: expected %s, got %s",
			    loc[0] ? loc : "top level", expected, json_type(j));
}

/* Formats a location into out (LOC_MAX bytes); long ones are cut. */
static void loc_fmt(char *out, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void loc_fmt(char *out, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(out, LOC_MAX, fmt, ap);
	va_end(ap);
}

/* Location of a member: "loc.key" (or "key" at the top). */
static void member_loc(char *out, const char *loc, const char *key)
{
	if (loc[0])
		loc_fmt(out, "%s.%.64s", loc, key);
	else
		loc_fmt(out, "%.64s", key);
}

/*
 * Checks that j is an object whose keys are all in `known` (NULL-terminated)
 * and appear once each.
 */
static int check_object(const cJSON *j, const char *loc,
			const char *const *known, es_error *err)
{
	if (!cJSON_IsObject(j))
		return wrong_type(err, loc, "an object", j);
	for (const cJSON *c = j->child; c; c = c->next) {
		const char *key = c->string ? c->string : "";
		bool ok = false;
		for (size_t k = 0; known[k]; k++)
			if (!strcmp(key, known[k]))
				ok = true;
		if (!ok)
			return es_error_set(err, ES_EINVAL, "%s: unknown key '%.64s'",
					    loc[0] ? loc : "top level", key);
		for (const cJSON *p = j->child; p != c; p = p->next)
			if (p->string && !strcmp(p->string, key))
				return es_error_set(err, ES_EINVAL,
						    "%s: duplicate key '%.64s'",
						    loc[0] ? loc : "top level", key);
	}
	return 0;
}

static int get_int(const cJSON *j, const char *loc, int64_t min, int64_t max,
		   int64_t *out, es_error *err)
{
	char range[96];
	snprintf(range, sizeof(range), "an integer from %lld to %lld",
		 (long long)min, (long long)max);
	if (!cJSON_IsNumber(j))
		return wrong_type(err, loc, range, j);
	double v = j->valuedouble;
	if (!isfinite(v) || v != floor(v) || v < (double)min || v > (double)max)
		return es_error_set(err, ES_EINVAL, "%s: expected %s, got %g", loc,
				    range, v);
	*out = (int64_t)v;
	return 0;
}

static int get_int32(const cJSON *j, const char *loc, int min, int max,
		     int *out, es_error *err)
{
	int64_t v;
	int rc = get_int(j, loc, min, max, &v, err);
	if (!rc)
		*out = (int)v;
	return rc;
}

/* A non-empty string, copied into *out (replacing what was there). */
static int get_string(const cJSON *j, const char *loc, char **out, es_error *err)
{
	if (!cJSON_IsString(j) || !j->valuestring)
		return wrong_type(err, loc, "a string", j);
	if (!j->valuestring[0])
		return es_error_set(err, ES_EINVAL, "%s: must not be empty", loc);
	char *s = strdup(j->valuestring);
	if (!s)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	free(*out);
	*out = s;
	return 0;
}

static int get_bool(const cJSON *j, const char *loc, bool *out, es_error *err)
{
	if (!cJSON_IsBool(j))
		return wrong_type(err, loc, "a boolean (true or false)", j);
	*out = cJSON_IsTrue(j);
	return 0;
}

static int missing(es_error *err, const char *loc, const char *key)
{
	return es_error_set(err, ES_EINVAL, "%s: missing required key '%s'", loc, key);
}

/* ---- the config file ------------------------------------------------------- */

static int parse_policy(const cJSON *j, const char *loc, es_version_policy *p,
			es_error *err)
{
	static const char *const kinds[] = { "latest", "specific", "all", NULL };
	char kloc[LOC_MAX], vloc[LOC_MAX];
	int rc = check_object(j, loc, kinds, err);
	if (rc)
		return rc;
	if (cJSON_GetArraySize(j) != 1)
		return es_error_set(err, ES_EINVAL,
				    "%s: expected exactly one of 'latest', 'specific', 'all', got %d keys",
				    loc, cJSON_GetArraySize(j));
	const cJSON *k = j->child;
	member_loc(kloc, loc, k->string);
	free(p->versions);
	memset(p, 0, sizeof(*p));

	if (!strcmp(k->string, "all")) {
		static const char *const none[] = { NULL };
		p->kind = ES_POLICY_ALL;
		return check_object(k, kloc, none, err);
	}
	if (!strcmp(k->string, "latest")) {
		static const char *const keys[] = { "num_versions", NULL };
		p->kind = ES_POLICY_LATEST;
		p->num_versions = 1;
		if ((rc = check_object(k, kloc, keys, err)))
			return rc;
		const cJSON *n = cJSON_GetObjectItemCaseSensitive(k, "num_versions");
		member_loc(vloc, kloc, "num_versions");
		return n ? get_int32(n, vloc, 1, INT_MAX, &p->num_versions, err) : 0;
	}
	static const char *const keys[] = { "versions", NULL };
	p->kind = ES_POLICY_SPECIFIC;
	if ((rc = check_object(k, kloc, keys, err)))
		return rc;
	const cJSON *list = cJSON_GetObjectItemCaseSensitive(k, "versions");
	member_loc(vloc, kloc, "versions");
	if (!list)
		return missing(err, kloc, "versions");
	if (!cJSON_IsArray(list))
		return wrong_type(err, vloc, "an array of version numbers", list);
	int n = cJSON_GetArraySize(list);
	if (n < 1)
		return es_error_set(err, ES_EINVAL, "%s: must list at least one version", vloc);
	p->versions = calloc((size_t)n, sizeof(*p->versions));
	if (!p->versions)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	int i = 0;
	for (const cJSON *v = list->child; v; v = v->next, i++) {
		char iloc[LOC_MAX];
		loc_fmt(iloc, "%s[%d]", vloc, i);
		/* JSON numbers are doubles: integers are exact up to 2^53 */
		if ((rc = get_int(v, iloc, 1, (int64_t)1 << 53, &p->versions[i], err)))
			return rc;
		p->n_versions++;
	}
	return 0;
}

static int parse_model(const cJSON *j, const char *loc, const char *config_dir,
		       es_model_config *m, es_error *err)
{
	static const char *const keys[] = { "name", "base_path", "model_version_policy",
					    "target_device", "nireq", "keep_previous",
					    "warmup", NULL };
	char kloc[LOC_MAX];
	int rc = check_object(j, loc, keys, err);
	if (rc)
		return rc;
	m->policy.kind = ES_POLICY_LATEST;
	m->policy.num_versions = 1;
	m->keep_previous = false;
	m->warmup = -1; /* the server's --warmup_inferences */
	for (const cJSON *c = j->child; c; c = c->next) {
		member_loc(kloc, loc, c->string);
		if (!strcmp(c->string, "name"))
			rc = get_string(c, kloc, &m->name, err);
		else if (!strcmp(c->string, "base_path"))
			rc = get_string(c, kloc, &m->base_path, err);
		else if (!strcmp(c->string, "model_version_policy"))
			rc = parse_policy(c, kloc, &m->policy, err);
		else if (!strcmp(c->string, "target_device"))
			rc = get_string(c, kloc, &m->target_device, err);
		else if (!strcmp(c->string, "nireq"))
			rc = get_int32(c, kloc, 0, ES_MAX_QUEUE_SIZE, &m->nireq, err);
		else if (!strcmp(c->string, "keep_previous"))
			rc = get_bool(c, kloc, &m->keep_previous, err);
		else if (!strcmp(c->string, "warmup"))
			rc = get_int32(c, kloc, 0, WARMUP_MAX, &m->warmup, err);
		if (rc)
			return rc;
	}
	if (!m->name)
		return missing(err, loc, "name");
	if (!m->base_path)
		return missing(err, loc, "base_path");

	char *clean = strip_slashes(m->base_path);
	if (!clean)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	free(m->base_path);
	m->base_path = clean;
	if (clean[0] != '/' && config_dir[0]) {
		char *abs = path_join(config_dir, clean);
		if (!abs)
			return es_error_set(err, ES_ENOMEM, "out of memory");
		free(m->base_path);
		m->base_path = abs;
	}
	return 0;
}

static int parse_device(const cJSON *j, const char *loc, es_device_config *d,
			es_error *err)
{
	static const char *const keys[] = { "name", "backend", "streams",
					    "threads_per_stream", "max_queue_size", NULL };
	char kloc[LOC_MAX];
	int rc = check_object(j, loc, keys, err);
	if (rc)
		return rc;
	d->streams = 1;
	d->threads_per_stream = 0; /* cores / streams */
	d->max_queue_size = 0;     /* resolved after all models are read */
	for (const cJSON *c = j->child; c; c = c->next) {
		member_loc(kloc, loc, c->string);
		if (!strcmp(c->string, "name"))
			rc = get_string(c, kloc, &d->name, err);
		else if (!strcmp(c->string, "backend"))
			rc = get_string(c, kloc, &d->backend, err);
		else if (!strcmp(c->string, "streams"))
			rc = get_int32(c, kloc, 1, ES_MAX_STREAMS, &d->streams, err);
		else if (!strcmp(c->string, "threads_per_stream"))
			rc = get_int32(c, kloc, 0, ES_MAX_THREADS,
				       &d->threads_per_stream, err);
		else if (!strcmp(c->string, "max_queue_size"))
			rc = get_int32(c, kloc, 1, ES_MAX_QUEUE_SIZE,
				       &d->max_queue_size, err);
		if (rc)
			return rc;
	}
	if (!d->name)
		return missing(err, loc, "name");
	if (!d->backend && !(d->backend = strdup("cpu")))
		return es_error_set(err, ES_ENOMEM, "out of memory");
	return 0;
}

/* Reads a whole file (at most CONFIG_MAX_BYTES) into a NUL-terminated buffer. */
static int read_file(const char *path, char **out, size_t *len, es_error *err)
{
	int shown_len;
	const char *shown = shown_name(path, &shown_len);
	FILE *f = fopen(path, "rb");
	if (!f)
		return es_error_set(err, ES_EIO, "cannot open config file '%.*s': %s",
				    shown_len, shown, strerror(errno));
	char *buf = NULL;
	size_t n = 0, cap = 0;
	int rc = 0;
	for (;;) {
		if (n + 4096 + 1 > cap) {
			size_t ncap = cap ? cap * 2 : 8192;
			char *nb = realloc(buf, ncap);
			if (!nb) {
				rc = es_error_set(err, ES_ENOMEM, "out of memory");
				goto out_close;
			}
			buf = nb;
			cap = ncap;
		}
		size_t got = fread(buf + n, 1, cap - n - 1, f);
		n += got;
		if (n > CONFIG_MAX_BYTES) {
			rc = es_error_set(err, ES_ETOOLARGE,
					  "config file '%.*s' is larger than %zu bytes",
					  shown_len, shown, CONFIG_MAX_BYTES);
			goto out_close;
		}
		if (got == 0)
			break;
	}
	if (ferror(f)) {
		rc = es_error_set(err, ES_EIO, "cannot read config file '%.*s': %s",
				  shown_len, shown, strerror(errno));
		goto out_close;
	}
	buf[n] = '\0';
	*out = buf;
	*len = n;
	buf = NULL;
out_close:
	fclose(f);
	free(buf);
	return rc;
}

/* "line L, column C" of a byte offset. */
static void text_position(const char *buf, size_t off, int *line, int *col)
{
	*line = 1;
	*col = 1;
	for (size_t i = 0; i < off && buf[i]; i++) {
		if (buf[i] == '\n') {
			(*line)++;
			*col = 1;
		} else {
			(*col)++;
		}
	}
}

/*
 * A device declared without max_queue_size takes the largest nireq of the
 * models bound to it (OVMS's per-model request count, read here as how many
 * requests may wait), else ES_DEFAULT_QUEUE_SIZE.
 */
static void resolve_queue_sizes(es_device_config *devs, size_t n_devs,
				const es_model_config *models, size_t n_models)
{
	for (size_t d = 0; d < n_devs; d++) {
		if (devs[d].max_queue_size > 0)
			continue;
		int hint = 0;
		for (size_t i = 0; i < n_models; i++) {
			const char *t = models[i].target_device;
			bool bound = t ? !strcmp(t, devs[d].name) : d == 0;
			if (bound && models[i].nireq > hint)
				hint = models[i].nireq;
		}
		devs[d].max_queue_size = hint > 0 ? hint : ES_DEFAULT_QUEUE_SIZE;
	}
}

int es_config_load_file(const char *path, es_server_config *cfg, es_error *err)
{
	static const char *const top_keys[] = { "model_config_list", "devices", NULL };
	char *text = NULL, *config_dir = NULL;
	size_t len = 0;
	es_model_config *models = NULL;
	es_device_config *devices = NULL;
	size_t n_models = 0, n_devices = 0;
	bool have_devices = false;
	cJSON *root = NULL;
	int shown_len;
	const char *shown = shown_name(path, &shown_len);
	int rc = read_file(path, &text, &len, err);
	if (rc)
		return rc;

	const char *end = NULL;
	root = cJSON_ParseWithLengthOpts(text, len, &end, false);
	if (!root) {
		int line, col;
		size_t off = end && end >= text ? (size_t)(end - text) : 0;
		text_position(text, off, &line, &col);
		rc = es_error_set(err, ES_EPARSE,
				  "config file '%.*s': invalid JSON at line %d, column %d",
				  shown_len, shown, line, col);
		goto out;
	}
	if ((rc = check_object(root, "", top_keys, err)))
		goto out_prefix;
	if (!(config_dir = dir_of(path))) {
		rc = es_error_set(err, ES_ENOMEM, "out of memory");
		goto out;
	}

	const cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "model_config_list");
	if (list) {
		if (!cJSON_IsArray(list)) {
			rc = wrong_type(err, "model_config_list", "an array", list);
			goto out_prefix;
		}
		int n = cJSON_GetArraySize(list);
		models = calloc((size_t)n + 1, sizeof(*models));
		if (!models) {
			rc = es_error_set(err, ES_ENOMEM, "out of memory");
			goto out;
		}
		int i = 0;
		for (const cJSON *e = list->child; e; e = e->next, i++) {
			static const char *const wrap[] = { "config", NULL };
			char loc[LOC_MAX];
			loc_fmt(loc, "model_config_list[%d]", i);
			if ((rc = check_object(e, loc, wrap, err)))
				goto out_prefix;
			const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "config");
			if (!c) {
				rc = missing(err, loc, "config");
				goto out_prefix;
			}
			loc_fmt(loc, "model_config_list[%d].config", i);
			n_models++;
			if ((rc = parse_model(c, loc, config_dir, &models[i], err)))
				goto out_prefix;
		}
	}

	const cJSON *devs = cJSON_GetObjectItemCaseSensitive(root, "devices");
	if (devs) {
		if (!cJSON_IsArray(devs)) {
			rc = wrong_type(err, "devices", "an array", devs);
			goto out_prefix;
		}
		int n = cJSON_GetArraySize(devs);
		if (n < 1) {
			rc = es_error_set(err, ES_EINVAL, "devices: at least one device is required");
			goto out_prefix;
		}
		devices = calloc((size_t)n, sizeof(*devices));
		if (!devices) {
			rc = es_error_set(err, ES_ENOMEM, "out of memory");
			goto out;
		}
		have_devices = true;
		int i = 0;
		for (const cJSON *e = devs->child; e; e = e->next, i++) {
			char loc[LOC_MAX];
			loc_fmt(loc, "devices[%d]", i);
			n_devices++;
			if ((rc = parse_device(e, loc, &devices[i], err)))
				goto out_prefix;
		}
	}

	/* commit: nothing in cfg changes unless the whole file was good */
	if ((rc = append_models(cfg, models, n_models))) {
		rc = es_error_set(err, ES_ENOMEM, "out of memory");
		goto out;
	}
	free(models);
	models = NULL;
	n_models = 0;
	if (have_devices) {
		free_devices(cfg->devices, cfg->n_devices);
		cfg->devices = devices;
		cfg->n_devices = n_devices;
		devices = NULL;
		n_devices = 0;
	}
	resolve_queue_sizes(cfg->devices, cfg->n_devices, cfg->models, cfg->n_models);
	goto out;

out_prefix:
	es_error_prefix(err, "config file '%.*s'", shown_len, shown);
out:
	free_models(models, n_models);
	free_devices(devices, n_devices);
	cJSON_Delete(root);
	free(config_dir);
	free(text);
	return rc;
}

/* ---- repository scan -------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int es_config_scan_repository(const char *dir, es_server_config *cfg, es_error *err)
{
	char **names = NULL;
	size_t n = 0, cap = 0;
	es_model_config *models = NULL;
	size_t n_models = 0;
	int rc = 0;
	DIR *d = opendir(dir);
	if (!d) {
		int shown_len;
		const char *shown = shown_name(dir, &shown_len);
		return es_error_set(err, ES_EIO, "cannot open model repository '%.*s': %s",
				    shown_len, shown, strerror(errno));
	}
	for (struct dirent *e; (e = readdir(d));) {
		if (!es_serving_name_ok(e->d_name))
			continue; /* ".", "..", hidden entries, odd names */
		char *path = path_join(dir, e->d_name);
		struct stat st;
		if (!path) {
			rc = es_error_set(err, ES_ENOMEM, "out of memory");
			goto out;
		}
		if (stat(path, &st) || !S_ISDIR(st.st_mode)) {
			free(path);
			continue;
		}
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			char **nn = realloc(names, ncap * sizeof(*names));
			if (!nn) {
				free(path);
				rc = es_error_set(err, ES_ENOMEM, "out of memory");
				goto out;
			}
			names = nn;
			cap = ncap;
		}
		names[n++] = path;
	}
	/* directory order is arbitrary; models are listed by name */
	if (n)
		qsort(names, n, sizeof(*names), cmp_str);
	models = calloc(n + 1, sizeof(*models));
	if (!models) {
		rc = es_error_set(err, ES_ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++, n_models++) {
		es_model_config *m = &models[i];
		m->name = strdup(strrchr(names[i], '/') ? strrchr(names[i], '/') + 1 : names[i]);
		m->base_path = strdup(names[i]);
		m->policy.kind = ES_POLICY_LATEST;
		m->policy.num_versions = 1;
		m->warmup = -1;
		if (!m->name || !m->base_path) {
			n_models++;
			rc = es_error_set(err, ES_ENOMEM, "out of memory");
			goto out;
		}
	}
	if (append_models(cfg, models, n_models)) {
		rc = es_error_set(err, ES_ENOMEM, "out of memory");
		goto out;
	}
	free(models);
	models = NULL;
	n_models = 0;
out:
	free_models(models, n_models);
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	closedir(d);
	return rc;
}

/* ---- validation --------------------------------------------------------------- */

static int validate_policy(const es_model_config *m, es_error *err)
{
	const es_version_policy *p = &m->policy;
	switch (p->kind) {
	case ES_POLICY_LATEST:
		if (p->num_versions < 1)
			return es_error_set(err, ES_EINVAL,
					    "model '%s': latest policy num_versions must be >= 1, got %d",
					    m->name, p->num_versions);
		return 0;
	case ES_POLICY_SPECIFIC:
		if (!p->n_versions || !p->versions)
			return es_error_set(err, ES_EINVAL,
					    "model '%s': specific policy lists no versions", m->name);
		for (size_t i = 0; i < p->n_versions; i++) {
			if (p->versions[i] < 1)
				return es_error_set(err, ES_EINVAL,
						    "model '%s': version numbers must be >= 1, got %lld",
						    m->name, (long long)p->versions[i]);
			for (size_t k = 0; k < i; k++)
				if (p->versions[k] == p->versions[i])
					return es_error_set(err, ES_EINVAL,
							    "model '%s': version %lld is listed twice",
							    m->name, (long long)p->versions[i]);
		}
		return 0;
	case ES_POLICY_ALL:
		return 0;
	}
	return es_error_set(err, ES_EINVAL, "model '%s': unknown version policy %d",
			    m->name, (int)p->kind);
}

int es_config_validate(const es_server_config *cfg, es_error *err)
{
	es_log_level level;
	if (!cfg->rest_bind_address || !cfg->rest_bind_address[0])
		return es_error_set(err, ES_EINVAL, "rest_bind_address is not set");
	if (cfg->rest_port < 0 || cfg->rest_port > 65535)
		return es_error_set(err, ES_EINVAL, "rest_port: expected 0..65535, got %d",
				    cfg->rest_port);
	if (cfg->rest_workers < 0 || cfg->rest_workers > ES_MAX_THREADS)
		return es_error_set(err, ES_EINVAL, "rest_workers: expected 0..%d, got %d",
				    ES_MAX_THREADS, cfg->rest_workers);
	if (cfg->max_request_bytes < 1)
		return es_error_set(err, ES_EINVAL, "max_request_bytes must be >= 1");
	if (cfg->max_connections < 1)
		return es_error_set(err, ES_EINVAL, "max_connections: expected >= 1, got %d",
				    cfg->max_connections);
	if (cfg->connection_timeout_s < 0)
		return es_error_set(err, ES_EINVAL, "connection_timeout_s: expected >= 0, got %d",
				    cfg->connection_timeout_s);
	if (cfg->default_timeout_ms < 1)
		return es_error_set(err, ES_EINVAL, "default_timeout_ms: expected >= 1, got %lld",
				    (long long)cfg->default_timeout_ms);
	if (cfg->exit_timeout_s < 0)
		return es_error_set(err, ES_EINVAL, "exit_timeout_s: expected >= 0, got %d",
				    cfg->exit_timeout_s);
	if (!cfg->log_level || es_log_parse_level(cfg->log_level, &level))
		return es_error_set(err, ES_EINVAL,
				    "log_level: expected DEBUG, INFO, WARNING, ERROR or OFF, got '%.32s'",
				    cfg->log_level ? cfg->log_level : "");
	if (cfg->poll_wait_s < 0 || cfg->poll_wait_s > POLL_WAIT_MAX)
		return es_error_set(err, ES_EINVAL,
				    "file_system_poll_wait_seconds: expected 0..%d, got %d",
				    POLL_WAIT_MAX, cfg->poll_wait_s);
	if (cfg->default_warmup < 0 || cfg->default_warmup > WARMUP_MAX)
		return es_error_set(err, ES_EINVAL,
				    "warmup_inferences: expected 0..%d, got %d",
				    WARMUP_MAX, cfg->default_warmup);
	if (cfg->cache_dir && !cfg->cache_dir[0])
		return es_error_set(err, ES_EINVAL, "cache_dir: must not be empty");

	if (!cfg->n_devices || !cfg->devices)
		return es_error_set(err, ES_EINVAL, "no devices are configured");
	for (size_t i = 0; i < cfg->n_devices; i++) {
		const es_device_config *d = &cfg->devices[i];
		if (!es_serving_name_ok(d->name))
			return es_error_set(err, ES_EINVAL,
					    "devices[%zu]: name '%.64s' is not valid (expected [A-Za-z0-9_.-]+, not starting with '.')",
					    i, d->name ? d->name : "");
		for (size_t k = 0; k < i; k++)
			if (!strcmp(cfg->devices[k].name, d->name))
				return es_error_set(err, ES_EINVAL,
						    "devices[%zu]: device name '%s' is used twice",
						    i, d->name);
		if (!d->backend || strcmp(d->backend, "cpu"))
			return es_error_set(err, ES_EINVAL,
					    "device '%s': backend: expected 'cpu', got '%.32s'",
					    d->name, d->backend ? d->backend : "");
		if (d->streams < 1 || d->streams > ES_MAX_STREAMS)
			return es_error_set(err, ES_EINVAL,
					    "device '%s': streams: expected 1..%d, got %d",
					    d->name, ES_MAX_STREAMS, d->streams);
		if (d->threads_per_stream < 0 || d->threads_per_stream > ES_MAX_THREADS)
			return es_error_set(err, ES_EINVAL,
					    "device '%s': threads_per_stream: expected 0..%d, got %d",
					    d->name, ES_MAX_THREADS, d->threads_per_stream);
		if (d->max_queue_size < 1 || d->max_queue_size > ES_MAX_QUEUE_SIZE)
			return es_error_set(err, ES_EINVAL,
					    "device '%s': max_queue_size: expected 1..%d, got %d",
					    d->name, ES_MAX_QUEUE_SIZE, d->max_queue_size);
	}

	for (size_t i = 0; i < cfg->n_models; i++) {
		const es_model_config *m = &cfg->models[i];
		int rc;
		if (!es_serving_name_ok(m->name))
			return es_error_set(err, ES_EINVAL,
					    "models[%zu]: name '%.64s' is not valid (expected [A-Za-z0-9_.-]+, not starting with '.')",
					    i, m->name ? m->name : "");
		for (size_t k = 0; k < i; k++)
			if (!strcmp(cfg->models[k].name, m->name))
				return es_error_set(err, ES_EINVAL,
						    "model name '%s' is used twice", m->name);
		if (!m->base_path || !m->base_path[0])
			return es_error_set(err, ES_EINVAL, "model '%s': base_path is not set",
					    m->name);
		if ((rc = validate_policy(m, err)))
			return rc;
		if (m->nireq < 0)
			return es_error_set(err, ES_EINVAL, "model '%s': nireq: expected >= 0, got %d",
					    m->name, m->nireq);
		if (m->warmup < -1 || m->warmup > WARMUP_MAX)
			return es_error_set(err, ES_EINVAL,
					    "model '%s': warmup: expected 0..%d (or -1: the server's default), got %d",
					    m->name, WARMUP_MAX, m->warmup);
		if (m->target_device) {
			bool found = false;
			for (size_t d = 0; d < cfg->n_devices; d++)
				if (!strcmp(cfg->devices[d].name, m->target_device))
					found = true;
			if (!found)
				return es_error_set(err, ES_EINVAL,
						    "model '%s': target_device '%.64s' is not a configured device",
						    m->name, m->target_device);
		}
	}
	return 0;
}
