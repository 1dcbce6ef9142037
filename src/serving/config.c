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
/* A device's spill_wait_ms: at most an hour. */
#define SPILL_WAIT_MAX_MS 3600000

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
	cfg->divergence_log = NULL;
	cfg->divergence_log_per_s = 10;
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
	free(d->fallback);
	free(d->fault_control);
	memset(d, 0, sizeof(*d));
}

static void free_model(es_model_config *m)
{
	free(m->name);
	free(m->base_path);
	free(m->target_device);
	free(m->policy.versions);
	for (size_t i = 0; i < m->n_labels; i++)
		free(m->labels[i].name);
	free(m->labels);
	free(m->canary.label);
	free(m->canary.user_header);
	free(m->canary.user_parameter);
	free(m->canary.salt);
	free(m->shadow.label);
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
	free(cfg->divergence_log);
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
		return es_error_set(err, ES_EINVAL, "%s: expected %s, got %.15g", loc,
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

/* A finite number in [min, max] (min excluded when min_open). */
static int get_double(const cJSON *j, const char *loc, double min, bool min_open,
		      double max, double *out, es_error *err)
{
	char range[96];
	snprintf(range, sizeof(range), "a number %s %g and <= %g", min_open ? ">" : ">=",
		 min, max);
	if (!cJSON_IsNumber(j))
		return wrong_type(err, loc, range, j);
	double v = j->valuedouble;
	if (!isfinite(v) || v < min || (min_open && v == min) || v > max)
		return es_error_set(err, ES_EINVAL, "%s: expected %s, got %g", loc, range, v);
	*out = v;
	return 0;
}

/* ---- rollouts ---------------------------------------------------------------- */

/* Rollout bounds and defaults (docs/rollouts.md). */
#define LABEL_NAME_MAX 63
#define KEY_SOURCE_MAX 127
#define SALT_MAX 255
#define GUARD_WINDOW_MAX 3600
#define GUARD_MIN_SAMPLES_MAX 1000000
#define SHADOW_QUEUE_MAX 65536
#define DEFAULT_GUARD_WINDOW_S 30
#define DEFAULT_GUARD_MIN_SAMPLES 50
#define DEFAULT_SHADOW_QUEUE 64
#define DEFAULT_SHADOW_ATOL 1e-4
#define DEFAULT_SHADOW_RTOL 1e-3
#define DEFAULT_SHADOW_INLINE_MAX_US 250
#define SHADOW_INLINE_MAX_US 1000000
/* Version numbers: JSON numbers are doubles, exact up to 2^53. */
#define VERSION_MAX ((int64_t)1 << 53)

/* [A-Za-z0-9_]{1,63} */
static bool label_name_ok(const char *s)
{
	size_t n = 0;
	if (!s || !s[0])
		return false;
	for (const char *p = s; *p; p++, n++) {
		char c = *p;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '_') || n >= LABEL_NAME_MAX)
			return false;
	}
	return true;
}

/* An HTTP header name or request parameter name: token characters,
 * 1..KEY_SOURCE_MAX of them. */
static bool key_source_ok(const char *s)
{
	size_t n = 0;
	if (!s || !s[0])
		return false;
	for (const char *p = s; *p; p++, n++) {
		char c = *p;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || strchr("!#$%&'*+-.^_`|~", c)) ||
		    n >= KEY_SOURCE_MAX)
			return false;
	}
	return true;
}

static int parse_labels(const cJSON *j, const char *loc, es_model_config *m, es_error *err)
{
	if (!cJSON_IsObject(j))
		return wrong_type(err, loc, "an object of label names to versions", j);
	int n = cJSON_GetArraySize(j);
	if (n > ES_MAX_LABELS)
		return es_error_set(err, ES_EINVAL, "%s: at most %d labels, got %d", loc,
				    ES_MAX_LABELS, n);
	m->labels = calloc((size_t)n + 1, sizeof(*m->labels));
	if (!m->labels)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	for (const cJSON *c = j->child; c; c = c->next) {
		char kloc[LOC_MAX];
		const char *name = c->string ? c->string : "";
		member_loc(kloc, loc, name);
		if (!label_name_ok(name))
			return es_error_set(err, ES_EINVAL,
					    "%s: label name '%.64s' is not valid (expected [A-Za-z0-9_]+, at most %d characters)",
					    loc, name, LABEL_NAME_MAX);
		for (size_t k = 0; k < m->n_labels; k++)
			if (!strcmp(m->labels[k].name, name))
				return es_error_set(err, ES_EINVAL, "%s: duplicate label '%s'",
						    loc, name);
		es_label_config *l = &m->labels[m->n_labels];
		int rc = get_int(c, kloc, 1, VERSION_MAX, &l->version, err);
		if (rc)
			return rc;
		if (!(l->name = strdup(name)))
			return es_error_set(err, ES_ENOMEM, "out of memory");
		m->n_labels++;
	}
	return 0;
}

static int parse_guard(const cJSON *j, const char *loc, es_guard_config *g, es_error *err)
{
	static const char *const keys[] = { "window_seconds", "min_samples", "max_error_rate",
					    "max_p95_ratio", "max_divergence_rate", NULL };
	char kloc[LOC_MAX];
	int rc = check_object(j, loc, keys, err);
	for (const cJSON *c = j->child; !rc && c; c = c->next) {
		member_loc(kloc, loc, c->string);
		if (!strcmp(c->string, "window_seconds"))
			rc = get_int32(c, kloc, 1, GUARD_WINDOW_MAX, &g->window_s, err);
		else if (!strcmp(c->string, "min_samples"))
			rc = get_int32(c, kloc, 1, GUARD_MIN_SAMPLES_MAX, &g->min_samples, err);
		else if (!strcmp(c->string, "max_error_rate"))
			rc = get_double(c, kloc, 0, false, 1, &g->max_error_rate, err);
		else if (!strcmp(c->string, "max_p95_ratio"))
			rc = get_double(c, kloc, 1, true, 1e9, &g->max_p95_ratio, err);
		else if (!strcmp(c->string, "max_divergence_rate"))
			rc = get_double(c, kloc, 0, false, 1, &g->max_divergence_rate, err);
	}
	return rc;
}

/* "version" or "label" (exactly one) of a canary or a shadow. */
static int parse_target(const cJSON *j, const char *loc, int64_t *version, char **label,
			es_error *err)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "version");
	const cJSON *l = cJSON_GetObjectItemCaseSensitive(j, "label");
	char kloc[LOC_MAX];
	if (!v == !l)
		return es_error_set(err, ES_EINVAL,
				    "%s: expected exactly one of 'version' and 'label', got %s",
				    loc, v ? "both" : "neither");
	if (v) {
		member_loc(kloc, loc, "version");
		return get_int(v, kloc, 1, VERSION_MAX, version, err);
	}
	member_loc(kloc, loc, "label");
	int rc = get_string(l, kloc, label, err);
	if (!rc && !label_name_ok(*label))
		rc = es_error_set(err, ES_EINVAL,
				  "%s: '%.64s' is not a valid label name (expected [A-Za-z0-9_]+, at most %d characters)",
				  kloc, *label, LABEL_NAME_MAX);
	return rc;
}

static int parse_canary(const cJSON *j, const char *loc, es_canary_config *c, es_error *err)
{
	static const char *const keys[] = { "version", "label", "fraction_bp", "user_header",
					    "user_parameter", "salt", "keyless", "kill_switch",
					    "guard", NULL };
	char kloc[LOC_MAX];
	int rc = check_object(j, loc, keys, err);
	if (rc || (rc = parse_target(j, loc, &c->version, &c->label, err)))
		return rc;
	c->enabled = true;
	c->guard.window_s = DEFAULT_GUARD_WINDOW_S;
	c->guard.min_samples = DEFAULT_GUARD_MIN_SAMPLES;
	for (const cJSON *e = j->child; !rc && e; e = e->next) {
		member_loc(kloc, loc, e->string);
		if (!strcmp(e->string, "fraction_bp")) {
			rc = get_int32(e, kloc, 0, 10000, &c->fraction_bp, err);
		} else if (!strcmp(e->string, "user_header")) {
			rc = get_string(e, kloc, &c->user_header, err);
			if (!rc && !key_source_ok(c->user_header))
				rc = es_error_set(err, ES_EINVAL,
						  "%s: '%.64s' is not a valid HTTP header name (at most %d token characters)",
						  kloc, c->user_header, KEY_SOURCE_MAX);
		} else if (!strcmp(e->string, "user_parameter")) {
			rc = get_string(e, kloc, &c->user_parameter, err);
			if (!rc && !key_source_ok(c->user_parameter))
				rc = es_error_set(err, ES_EINVAL,
						  "%s: '%.64s' is not a valid parameter name (at most %d token characters)",
						  kloc, c->user_parameter, KEY_SOURCE_MAX);
		} else if (!strcmp(e->string, "salt")) {
			rc = get_string(e, kloc, &c->salt, err);
			if (!rc && strlen(c->salt) > SALT_MAX)
				rc = es_error_set(err, ES_EINVAL,
						  "%s: at most %d characters, got %zu", kloc,
						  SALT_MAX, strlen(c->salt));
		} else if (!strcmp(e->string, "keyless")) {
			if (!cJSON_IsString(e) || !e->valuestring)
				rc = wrong_type(err, kloc, "\"stable\" or \"request_id\"", e);
			else if (!strcmp(e->valuestring, "stable"))
				c->keyless_hash_id = false;
			else if (!strcmp(e->valuestring, "request_id"))
				c->keyless_hash_id = true;
			else
				rc = es_error_set(err, ES_EINVAL,
						  "%s: expected \"stable\" or \"request_id\", got '%.32s'",
						  kloc, e->valuestring);
		} else if (!strcmp(e->string, "kill_switch")) {
			rc = get_bool(e, kloc, &c->killed, err);
		} else if (!strcmp(e->string, "guard")) {
			rc = parse_guard(e, kloc, &c->guard, err);
		}
	}
	return rc;
}

static int parse_shadow(const cJSON *j, const char *loc, es_shadow_config *sh, es_error *err)
{
	static const char *const keys[] = { "version", "label", "fraction_bp", "queue_size",
					    "atol", "rtol", "inline_max_us", NULL };
	char kloc[LOC_MAX];
	int rc = check_object(j, loc, keys, err);
	if (rc || (rc = parse_target(j, loc, &sh->version, &sh->label, err)))
		return rc;
	sh->enabled = true;
	sh->queue_size = DEFAULT_SHADOW_QUEUE;
	sh->atol = DEFAULT_SHADOW_ATOL;
	sh->rtol = DEFAULT_SHADOW_RTOL;
	sh->inline_max_us = DEFAULT_SHADOW_INLINE_MAX_US;
	for (const cJSON *e = j->child; !rc && e; e = e->next) {
		member_loc(kloc, loc, e->string);
		if (!strcmp(e->string, "fraction_bp"))
			rc = get_int32(e, kloc, 0, 10000, &sh->fraction_bp, err);
		else if (!strcmp(e->string, "queue_size"))
			rc = get_int32(e, kloc, 1, SHADOW_QUEUE_MAX, &sh->queue_size, err);
		else if (!strcmp(e->string, "atol"))
			rc = get_double(e, kloc, 0, false, 1e30, &sh->atol, err);
		else if (!strcmp(e->string, "rtol"))
			rc = get_double(e, kloc, 0, false, 1e30, &sh->rtol, err);
		else if (!strcmp(e->string, "inline_max_us"))
			rc = get_int32(e, kloc, 0, SHADOW_INLINE_MAX_US, &sh->inline_max_us, err);
	}
	return rc;
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
					    "warmup", "version_labels", "canary", "shadow",
					    NULL };
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
		else if (!strcmp(c->string, "version_labels"))
			rc = parse_labels(c, kloc, m, err);
		else if (!strcmp(c->string, "canary"))
			rc = parse_canary(c, kloc, &m->canary, err);
		else if (!strcmp(c->string, "shadow"))
			rc = parse_shadow(c, kloc, &m->shadow, err);
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
					    "threads_per_stream", "max_queue_size", "fallback",
					    "spill_queue_depth", "spill_wait_ms", "fault_control",
					    NULL };
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
		else if (!strcmp(c->string, "fallback"))
			rc = get_string(c, kloc, &d->fallback, err);
		else if (!strcmp(c->string, "spill_queue_depth"))
			rc = get_int32(c, kloc, 0, ES_MAX_QUEUE_SIZE, &d->spill_queue_depth, err);
		else if (!strcmp(c->string, "spill_wait_ms"))
			rc = get_int32(c, kloc, 0, SPILL_WAIT_MAX_MS, &d->spill_wait_ms, err);
		else if (!strcmp(c->string, "fault_control"))
			rc = get_string(c, kloc, &d->fault_control, err);
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

/* The device d names as its fallback (NULL: none or not configured). */
static const es_device_config *fallback_of(const es_server_config *cfg,
					   const es_device_config *d)
{
	if (!d->fallback)
		return NULL;
	for (size_t i = 0; i < cfg->n_devices; i++)
		if (cfg->devices[i].name && !strcmp(cfg->devices[i].name, d->fallback))
			return &cfg->devices[i];
	return NULL;
}

/* Fallback (another configured device, no cycle), spill bounds and the
 * fault-injecting backend's control file. */
static int validate_device_rollout(const es_server_config *cfg, const es_device_config *d,
				   es_error *err)
{
	if (d->fallback) {
		if (!strcmp(d->fallback, d->name))
			return es_error_set(err, ES_EINVAL,
					    "device '%s': fallback: a device cannot be its own fallback",
					    d->name);
		if (!fallback_of(cfg, d))
			return es_error_set(err, ES_EINVAL,
					    "device '%s': fallback '%.64s' is not a configured device",
					    d->name, d->fallback);
		/* follow the chain: it must end within n_devices steps */
		const es_device_config *f = d;
		for (size_t steps = 0; f && steps <= cfg->n_devices; steps++) {
			f = fallback_of(cfg, f);
			if (f == d)
				return es_error_set(err, ES_EINVAL,
						    "device '%s': fallback '%s' leads back to '%s' (fallbacks must not form a cycle)",
						    d->name, d->fallback, d->name);
		}
	}
	if (d->spill_queue_depth < 0 || d->spill_queue_depth > ES_MAX_QUEUE_SIZE)
		return es_error_set(err, ES_EINVAL,
				    "device '%s': spill_queue_depth: expected 0..%d, got %d",
				    d->name, ES_MAX_QUEUE_SIZE, d->spill_queue_depth);
	if (d->spill_wait_ms < 0 || d->spill_wait_ms > SPILL_WAIT_MAX_MS)
		return es_error_set(err, ES_EINVAL,
				    "device '%s': spill_wait_ms: expected 0..%d, got %d",
				    d->name, SPILL_WAIT_MAX_MS, d->spill_wait_ms);
	if ((d->spill_queue_depth || d->spill_wait_ms) && !d->fallback)
		return es_error_set(err, ES_EINVAL,
				    "device '%s': spill_queue_depth and spill_wait_ms need a fallback device to spill to",
				    d->name);
	if (d->fault_control && strcmp(d->backend, "faulty"))
		return es_error_set(err, ES_EINVAL,
				    "device '%s': fault_control is only meaningful for backend 'faulty', not '%.32s'",
				    d->name, d->backend);
	if (d->fault_control && !d->fault_control[0])
		return es_error_set(err, ES_EINVAL, "device '%s': fault_control: must not be empty",
				    d->name);
	return 0;
}

static bool has_label(const es_model_config *m, const char *name)
{
	for (size_t i = 0; i < m->n_labels; i++)
		if (m->labels[i].name && !strcmp(m->labels[i].name, name))
			return true;
	return false;
}

/* Labels, canary and shadow of one model. */
static int validate_model_rollout(const es_model_config *m, es_error *err)
{
	if (m->n_labels > ES_MAX_LABELS || (m->n_labels && !m->labels))
		return es_error_set(err, ES_EINVAL, "model '%s': version_labels: at most %d labels",
				    m->name, ES_MAX_LABELS);
	for (size_t i = 0; i < m->n_labels; i++) {
		const es_label_config *l = &m->labels[i];
		if (!label_name_ok(l->name))
			return es_error_set(err, ES_EINVAL,
					    "model '%s': version_labels: label name '%.64s' is not valid (expected [A-Za-z0-9_]+, at most %d characters)",
					    m->name, l->name ? l->name : "", LABEL_NAME_MAX);
		if (l->version < 1)
			return es_error_set(err, ES_EINVAL,
					    "model '%s': version_labels.%s: expected a version >= 1, got %lld",
					    m->name, l->name, (long long)l->version);
		for (size_t k = 0; k < i; k++)
			if (!strcmp(m->labels[k].name, l->name))
				return es_error_set(err, ES_EINVAL,
						    "model '%s': version_labels: label '%s' is given twice",
						    m->name, l->name);
	}
	const es_canary_config *c = &m->canary;
	if (c->enabled) {
		if (!c->label == !c->version)
			return es_error_set(err, ES_EINVAL,
					    "model '%s': canary: expected exactly one of a version (>= 1) and a label",
					    m->name);
		if (c->version < 0)
			return es_error_set(err, ES_EINVAL,
					    "model '%s': canary.version: expected >= 1, got %lld",
					    m->name, (long long)c->version);
		if (c->label && !has_label(m, c->label))
			return es_error_set(err, ES_EINVAL,
					    "model '%s': canary.label '%.64s' is not one of the model's version_labels",
					    m->name, c->label);
		if (c->fraction_bp < 0 || c->fraction_bp > 10000)
			return es_error_set(err, ES_EINVAL,
					    "model '%s': canary.fraction_bp: expected 0..10000, got %d",
					    m->name, c->fraction_bp);
		if (c->user_header && !key_source_ok(c->user_header))
			return es_error_set(err, ES_EINVAL,
					    "model '%s': canary.user_header '%.64s' is not a valid HTTP header name",
					    m->name, c->user_header);
		if (c->user_parameter && !key_source_ok(c->user_parameter))
			return es_error_set(err, ES_EINVAL,
					    "model '%s': canary.user_parameter '%.64s' is not a valid parameter name",
					    m->name, c->user_parameter);
		if (c->salt && strlen(c->salt) > SALT_MAX)
			return es_error_set(err, ES_EINVAL,
					    "model '%s': canary.salt: at most %d characters, got %zu",
					    m->name, SALT_MAX, strlen(c->salt));
		const es_guard_config *g = &c->guard;
		/* (0 in a config built in code: the default) */
		if (g->window_s < 0 || g->window_s > GUARD_WINDOW_MAX)
			return es_error_set(err, ES_EINVAL,
					    "model '%s': canary.guard.window_seconds: expected 1..%d, got %d",
					    m->name, GUARD_WINDOW_MAX, g->window_s);
		if (g->min_samples < 0 || g->min_samples > GUARD_MIN_SAMPLES_MAX)
			return es_error_set(err, ES_EINVAL,
					    "model '%s': canary.guard.min_samples: expected 1..%d, got %d",
					    m->name, GUARD_MIN_SAMPLES_MAX, g->min_samples);
		if (!(g->max_error_rate >= 0 && g->max_error_rate <= 1))
			return es_error_set(err, ES_EINVAL,
					    "model '%s': canary.guard.max_error_rate: expected 0..1, got %g",
					    m->name, g->max_error_rate);
		if (!(g->max_p95_ratio == 0 || (g->max_p95_ratio > 1 && isfinite(g->max_p95_ratio))))
			return es_error_set(err, ES_EINVAL,
					    "model '%s': canary.guard.max_p95_ratio: expected a ratio > 1 (or 0: off), got %g",
					    m->name, g->max_p95_ratio);
		if (!(g->max_divergence_rate >= 0 && g->max_divergence_rate <= 1))
			return es_error_set(err, ES_EINVAL,
					    "model '%s': canary.guard.max_divergence_rate: expected 0..1, got %g",
					    m->name, g->max_divergence_rate);
	}
	const es_shadow_config *sh = &m->shadow;
	if (sh->enabled) {
		if (!sh->label == !sh->version || sh->version < 0)
			return es_error_set(err, ES_EINVAL,
					    "model '%s': shadow: expected exactly one of a version (>= 1) and a label",
					    m->name);
		if (sh->label && !has_label(m, sh->label))
			return es_error_set(err, ES_EINVAL,
					    "model '%s': shadow.label '%.64s' is not one of the model's version_labels",
					    m->name, sh->label);
		if (sh->fraction_bp < 0 || sh->fraction_bp > 10000)
			return es_error_set(err, ES_EINVAL,
					    "model '%s': shadow.fraction_bp: expected 0..10000, got %d",
					    m->name, sh->fraction_bp);
		if (sh->queue_size < 0 || sh->queue_size > SHADOW_QUEUE_MAX)
			return es_error_set(err, ES_EINVAL,
					    "model '%s': shadow.queue_size: expected 1..%d, got %d",
					    m->name, SHADOW_QUEUE_MAX, sh->queue_size);
		if (!(sh->atol >= 0 && isfinite(sh->atol)) || !(sh->rtol >= 0 && isfinite(sh->rtol)))
			return es_error_set(err, ES_EINVAL,
					    "model '%s': shadow: atol and rtol must be finite and >= 0, got %g and %g",
					    m->name, sh->atol, sh->rtol);
	}
	return 0;
}

int es_config_validate(const es_server_config *cfg, es_error *err)
{
	es_log_level level;
	int rc;
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
	if (cfg->divergence_log && !cfg->divergence_log[0])
		return es_error_set(err, ES_EINVAL, "divergence_log: must not be empty");
	if (cfg->divergence_log_per_s < 0)
		return es_error_set(err, ES_EINVAL, "divergence_log_per_s: expected >= 0, got %d",
				    cfg->divergence_log_per_s);

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
		if (!d->backend || !es_backend_find(d->backend))
			return es_error_set(err, ES_EINVAL,
					    "device '%s': backend: expected 'cpu' or another registered backend, got '%.32s'",
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
		if ((rc = validate_device_rollout(cfg, d, err)))
			return rc;
	}

	for (size_t i = 0; i < cfg->n_models; i++) {
		const es_model_config *m = &cfg->models[i];
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
		if ((rc = validate_policy(m, err)) || (rc = validate_model_rollout(m, err)))
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
