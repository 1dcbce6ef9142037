/* Server configuration: defaults, the OVMS-style file, repository scan,
 * validation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "serving/serving.h"

#define REPO ES_TEST_DATA_DIR "/serving/repo"

/* ---- a scratch directory per test ------------------------------------------ */

/* snprintf without gcc's truncation analysis: these paths are short. */
static void fmt(char *out, size_t n, const char *f, ...) __attribute__((format(printf, 3, 4)));
static void fmt(char *out, size_t n, const char *f, ...)
{
	va_list ap;
	va_start(ap, f);
	vsnprintf(out, n, f, ap);
	va_end(ap);
}

typedef struct scratch {
	char dir[PATH_MAX];
	char files[16][PATH_MAX];
	int n_files;
	char dirs[16][PATH_MAX];
	int n_dirs;
} scratch;

static int scratch_setup(void **state)
{
	scratch *s = calloc(1, sizeof(*s));
	assert_non_null(s);
	fmt(s->dir, sizeof(s->dir), "/tmp/es_test_config.XXXXXX");
	assert_non_null(mkdtemp(s->dir));
	*state = s;
	return 0;
}

static int scratch_teardown(void **state)
{
	scratch *s = *state;
	for (int i = s->n_files - 1; i >= 0; i--)
		unlink(s->files[i]);
	for (int i = s->n_dirs - 1; i >= 0; i--)
		rmdir(s->dirs[i]);
	rmdir(s->dir);
	free(s);
	return 0;
}

static const char *scratch_mkdir(scratch *s, const char *rel)
{
	char *p = s->dirs[s->n_dirs++];
	fmt(p, PATH_MAX, "%s/%s", s->dir, rel);
	assert_int_equal(mkdir(p, 0755), 0);
	return p;
}

static const char *scratch_write(scratch *s, const char *rel, const char *text)
{
	char *p = s->files[s->n_files++];
	fmt(p, PATH_MAX, "%s/%s", s->dir, rel);
	FILE *f = fopen(p, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	return p;
}

/* Loads `text` as a config file; returns the status, err holds the message. */
static int load_text(scratch *s, const char *text, es_server_config *cfg, es_error *err)
{
	const char *path = scratch_write(s, "config.json", text);
	es_config_defaults(cfg);
	memset(err, 0, sizeof(*err));
	return es_config_load_file(path, cfg, err);
}

/* Expects loading `text` to fail with a message containing `needle`. */
static void expect_error(void **state, const char *text, const char *needle)
{
	es_server_config cfg;
	es_error err;
	int rc = load_text(*state, text, &cfg, &err);
	if (rc == 0 || !strstr(err.msg, needle))
		fail_msg("config %s\n  rc %d, message '%s'\n  expected a message with '%s'",
			 text, rc, err.msg, needle);
	/* messages may reach clients (a reload): the file by its name only */
	scratch *sc = *state;
	if (strstr(err.msg, sc->dir) || strstr(err.msg, "/tmp"))
		fail_msg("message '%s' names the config file's directory", err.msg);
	/* a failed load changes nothing */
	assert_int_equal(cfg.n_models, 0);
	assert_int_equal(cfg.n_devices, 1);
	assert_string_equal(cfg.devices[0].name, "CPU");
	es_config_free(&cfg);
	scratch *s = *state;
	unlink(s->files[--s->n_files]);
}

/* ---- defaults ---------------------------------------------------------------- */

static void test_defaults(void **state)
{
	es_server_config cfg;
	es_error err = { 0 };
	es_config_defaults(&cfg);
	assert_string_equal(cfg.rest_bind_address, "127.0.0.1");
	assert_int_equal(cfg.rest_port, 8000);
	assert_int_equal(cfg.default_timeout_ms, 30000);
	assert_true(cfg.metrics_enable);
	assert_string_equal(cfg.log_level, "INFO");
	assert_int_equal(cfg.n_devices, 1);
	assert_string_equal(cfg.devices[0].name, "CPU");
	assert_string_equal(cfg.devices[0].backend, "cpu");
	assert_true(cfg.devices[0].streams >= 1);
	assert_true(cfg.devices[0].max_queue_size >= 1);
	assert_int_equal(cfg.n_models, 0);
	assert_int_equal(cfg.poll_wait_s, 1);
	assert_null(cfg.cache_dir);
	assert_int_equal(cfg.default_warmup, 1);
	assert_int_equal(es_config_validate(&cfg, &err), 0);
	cfg.cache_dir = strdup("/var/cache/edgeserve"); /* freed by es_config_free */
	es_config_free(&cfg);
	assert_null(cfg.devices);
	assert_null(cfg.cache_dir);
	assert_null(cfg.rest_bind_address);
	es_config_free(&cfg); /* twice is harmless */
}

/* ---- the OVMS file ------------------------------------------------------------ */

static void test_load_ovms_file(void **state)
{
	scratch *s = *state;
	es_server_config cfg;
	es_error err;
	int rc = load_text(s,
		"{\n"
		"  \"model_config_list\": [\n"
		"    {\"config\": {\"name\": \"resnet\", \"base_path\": \"models/resnet\",\n"
		"                \"model_version_policy\": {\"latest\": {\"num_versions\": 2}},\n"
		"                \"target_device\": \"NPU0\", \"nireq\": 4}},\n"
		"    {\"config\": {\"name\": \"bert\", \"base_path\": \"/opt/models/bert/\",\n"
		"                \"model_version_policy\": {\"specific\": {\"versions\": [1, 3]}}}},\n"
		"    {\"config\": {\"name\": \"mlp\", \"base_path\": \"./mlp\",\n"
		"                \"model_version_policy\": {\"all\": {}}}},\n"
		"    {\"config\": {\"name\": \"plain\", \"base_path\": \"plain\",\n"
		"                \"model_version_policy\": {\"latest\": {}}}}\n"
		"  ],\n"
		"  \"devices\": [\n"
		"    {\"name\": \"CPU\", \"backend\": \"cpu\", \"streams\": 2,\n"
		"     \"threads_per_stream\": 1, \"max_queue_size\": 32},\n"
		"    {\"name\": \"NPU0\", \"streams\": 1}\n"
		"  ]\n"
		"}\n", &cfg, &err);
	assert_int_equal(rc, 0);
	assert_int_equal(cfg.n_models, 4);
	char want[PATH_MAX];

	es_model_config *m = &cfg.models[0];
	assert_string_equal(m->name, "resnet");
	fmt(want, sizeof(want), "%s/models/resnet", s->dir);
	assert_string_equal(m->base_path, want); /* relative to the file */
	assert_int_equal(m->policy.kind, ES_POLICY_LATEST);
	assert_int_equal(m->policy.num_versions, 2);
	assert_string_equal(m->target_device, "NPU0");
	assert_int_equal(m->nireq, 4);

	m = &cfg.models[1];
	assert_string_equal(m->base_path, "/opt/models/bert"); /* absolute kept */
	assert_int_equal(m->policy.kind, ES_POLICY_SPECIFIC);
	assert_int_equal(m->policy.n_versions, 2);
	assert_int_equal(m->policy.versions[0], 1);
	assert_int_equal(m->policy.versions[1], 3);
	assert_null(m->target_device);

	m = &cfg.models[2];
	fmt(want, sizeof(want), "%s/./mlp", s->dir);
	assert_string_equal(m->base_path, want);
	assert_int_equal(m->policy.kind, ES_POLICY_ALL);

	m = &cfg.models[3];
	assert_int_equal(m->policy.kind, ES_POLICY_LATEST);
	assert_int_equal(m->policy.num_versions, 1);

	/* the file's devices replace the default one */
	assert_int_equal(cfg.n_devices, 2);
	assert_string_equal(cfg.devices[0].name, "CPU");
	assert_int_equal(cfg.devices[0].streams, 2);
	assert_int_equal(cfg.devices[0].threads_per_stream, 1);
	assert_int_equal(cfg.devices[0].max_queue_size, 32);
	assert_string_equal(cfg.devices[1].name, "NPU0");
	assert_string_equal(cfg.devices[1].backend, "cpu");
	assert_int_equal(cfg.devices[1].streams, 1);
	/* no max_queue_size: the nireq of its model is the hint */
	assert_int_equal(cfg.devices[1].max_queue_size, 4);

	assert_int_equal(es_config_validate(&cfg, &err), 0);
	es_config_free(&cfg);
}

/* keep_previous and warmup: per-model lifecycle keys (docs/lifecycle.md) */
static void test_lifecycle_keys(void **state)
{
	es_server_config cfg;
	es_error err;
	int rc = load_text(*state,
		"{\"model_config_list\": [\n"
		"  {\"config\": {\"name\": \"a\", \"base_path\": \"/m/a\"}},\n"
		"  {\"config\": {\"name\": \"b\", \"base_path\": \"/m/b\",\n"
		"              \"keep_previous\": true, \"warmup\": 0}},\n"
		"  {\"config\": {\"name\": \"c\", \"base_path\": \"/m/c\",\n"
		"              \"keep_previous\": false, \"warmup\": 1000}},\n"
		"  {\"config\": {\"warmup\": 7, \"name\": \"d\", \"base_path\": \"/m/d\"}}\n"
		"]}\n", &cfg, &err);
	assert_int_equal(rc, 0);
	assert_int_equal(cfg.n_models, 4);
	/* absent: no rollback copy, the server's default warmup */
	assert_false(cfg.models[0].keep_previous);
	assert_int_equal(cfg.models[0].warmup, -1);
	assert_true(cfg.models[1].keep_previous);
	assert_int_equal(cfg.models[1].warmup, 0);
	assert_false(cfg.models[2].keep_previous);
	assert_int_equal(cfg.models[2].warmup, 1000);
	assert_false(cfg.models[3].keep_previous);
	assert_int_equal(cfg.models[3].warmup, 7);
	assert_int_equal(es_config_validate(&cfg, &err), 0);
	es_config_free(&cfg);
}

static void test_lifecycle_keys_invalid(void **state)
{
	expect_error(state,
		"{\"model_config_list\": [{\"config\": {\"name\": \"m\", \"base_path\": \"p\","
		" \"keep_previous\": 1}}]}",
		"model_config_list[0].config.keep_previous: expected a boolean (true or false), got a number");
	expect_error(state,
		"{\"model_config_list\": [{\"config\": {\"name\": \"m\", \"base_path\": \"p\","
		" \"keep_previous\": \"true\"}}]}",
		"keep_previous: expected a boolean (true or false), got a string");
	expect_error(state,
		"{\"model_config_list\": [{\"config\": {\"name\": \"m\", \"base_path\": \"p\","
		" \"warmup\": 1001}}]}",
		"model_config_list[0].config.warmup: expected an integer from 0 to 1000, got 1001");
	/* -1 is how the server says "not set"; the file cannot say it */
	expect_error(state,
		"{\"model_config_list\": [{\"config\": {\"name\": \"m\", \"base_path\": \"p\","
		" \"warmup\": -1}}]}",
		"warmup: expected an integer from 0 to 1000, got -1");
	expect_error(state,
		"{\"model_config_list\": [{\"config\": {\"name\": \"m\", \"base_path\": \"p\","
		" \"warmup\": 2.5}}]}",
		"warmup: expected an integer from 0 to 1000, got 2.5");
	expect_error(state,
		"{\"model_config_list\": [{\"config\": {\"name\": \"m\", \"base_path\": \"p\","
		" \"warmup\": \"3\"}}]}",
		"warmup: expected an integer from 0 to 1000, got a string");
	expect_error(state,
		"{\"model_config_list\": [{\"config\": {\"name\": \"m\", \"base_path\": \"p\","
		" \"warmup\": 1, \"warmup\": 2}}]}",
		"model_config_list[0].config: duplicate key 'warmup'");
	/* near misses are unknown keys, named with their location */
	expect_error(state,
		"{\"model_config_list\": [{\"config\": {\"name\": \"m\", \"base_path\": \"p\","
		" \"keep_previos\": true}}]}",
		"model_config_list[0].config: unknown key 'keep_previos'");
	expect_error(state,
		"{\"model_config_list\": [{\"config\": {\"name\": \"m\", \"base_path\": \"p\"}},"
		" {\"config\": {\"name\": \"n\", \"base_path\": \"p\", \"warmup_inferences\": 1}}]}",
		"model_config_list[1].config: unknown key 'warmup_inferences'");
	/* server settings are flags, not file keys */
	expect_error(state, "{\"model_config_list\": [], \"cache_dir\": \"/tmp/c\"}",
		     "top level: unknown key 'cache_dir'");
}

/* Messages name the config file by its last component: a reload sends them
 * to the client that asked, and no host path may reach a client. */
static void test_messages_name_no_directories(void **state)
{
	scratch *s = *state;
	es_server_config cfg;
	es_error err;
	char dir_slash[PATH_MAX];

	fmt(dir_slash, sizeof(dir_slash), "%s/", s->dir);
	assert_int_equal(load_text(s, "{\"model_config_list\": 3}", &cfg, &err), ES_EINVAL);
	assert_non_null(strstr(err.msg, "config file 'config.json': model_config_list: expected an array"));
	assert_null(strstr(err.msg, s->dir));
	es_config_free(&cfg);

	assert_int_equal(load_text(s, "{\"model_config_list\": [", &cfg, &err), ES_EPARSE);
	assert_non_null(strstr(err.msg, "config file 'config.json': invalid JSON at line 1"));
	assert_null(strstr(err.msg, s->dir));
	es_config_free(&cfg);

	/* a directory given as the file: it opens but cannot be read */
	es_config_defaults(&cfg);
	memset(&err, 0, sizeof(err));
	assert_int_not_equal(es_config_load_file(dir_slash, &cfg, &err), 0);
	assert_null(strstr(err.msg, s->dir));
	es_config_free(&cfg);

	es_config_defaults(&cfg);
	memset(&err, 0, sizeof(err));
	assert_int_equal(es_config_scan_repository("/nonexistent/where/models/", &cfg, &err),
			 ES_EIO);
	assert_non_null(strstr(err.msg, "cannot open model repository 'models'"));
	assert_null(strstr(err.msg, "/nonexistent"));
	es_config_free(&cfg);
}

static void test_load_appends_to_existing_models(void **state)
{
	scratch *s = *state;
	es_server_config cfg;
	es_error err = { 0 };
	es_config_defaults(&cfg);
	assert_int_equal(es_config_scan_repository(REPO, &cfg, &err), 0);
	size_t before = cfg.n_models;
	const char *path = scratch_write(s, "c.json",
		"{\"model_config_list\": [{\"config\": {\"name\": \"x\", \"base_path\": \"/x\"}}]}");
	assert_int_equal(es_config_load_file(path, &cfg, &err), 0);
	assert_int_equal(cfg.n_models, before + 1);
	assert_string_equal(cfg.models[before].name, "x");
	/* no devices key: the default device stays */
	assert_int_equal(cfg.n_devices, 1);
	assert_string_equal(cfg.devices[0].name, "CPU");
	es_config_free(&cfg);
}

static void test_default_queue_size_without_hint(void **state)
{
	es_server_config cfg;
	es_error err;
	assert_int_equal(load_text(*state,
		"{\"devices\": [{\"name\": \"D\"}]}", &cfg, &err), 0);
	assert_int_equal(cfg.devices[0].max_queue_size, 1024);
	assert_int_equal(cfg.devices[0].streams, 1);
	assert_int_equal(cfg.devices[0].threads_per_stream, 0);
	es_config_free(&cfg);
}

static void test_unknown_keys_named_with_location(void **state)
{
	expect_error(state,
		"{\"model_config_list\": [{\"config\": {\"nam\": \"m\", \"base_path\": \"p\"}}]}",
		"model_config_list[0].config: unknown key 'nam'");
	expect_error(state,
		"{\"model_config_list\": [{\"config\": {\"name\": \"m\", \"base_path\": \"p\"}},"
		" {\"config\": {\"name\": \"n\", \"base_path\": \"p\", \"batch_size\": 1}}]}",
		"model_config_list[1].config: unknown key 'batch_size'");
	expect_error(state, "{\"model_config_list\": [], \"monitoring\": {}}",
		     "top level: unknown key 'monitoring'");
	expect_error(state,
		"{\"model_config_list\": [{\"cfg\": {}}]}",
		"model_config_list[0]: unknown key 'cfg'");
	expect_error(state,
		"{\"model_config_list\": [{\"config\": {\"name\": \"m\", \"base_path\": \"p\","
		" \"model_version_policy\": {\"latest\": {\"num_version\": 2}}}}]}",
		"model_config_list[0].config.model_version_policy.latest: unknown key 'num_version'");
	expect_error(state,
		"{\"model_config_list\": [{\"config\": {\"name\": \"m\", \"base_path\": \"p\","
		" \"model_version_policy\": {\"newest\": {}}}}]}",
		"model_config_list[0].config.model_version_policy: unknown key 'newest'");
	expect_error(state,
		"{\"model_config_list\": [{\"config\": {\"name\": \"m\", \"base_path\": \"p\","
		" \"model_version_policy\": {\"all\": {\"x\": 1}}}}]}",
		"model_config_list[0].config.model_version_policy.all: unknown key 'x'");
	expect_error(state, "{\"devices\": [{\"name\": \"D\", \"stream\": 2}]}",
		     "devices[0]: unknown key 'stream'");
}

static void test_wrong_types(void **state)
{
	expect_error(state, "[]", "top level: expected an object, got an array");
	expect_error(state, "{\"model_config_list\": {}}",
		     "model_config_list: expected an array, got an object");
	expect_error(state, "{\"model_config_list\": [5]}",
		     "model_config_list[0]: expected an object, got a number");
	expect_error(state,
		"{\"model_config_list\": [{\"config\": {\"name\": 7, \"base_path\": \"p\"}}]}",
		"model_config_list[0].config.name: expected a string, got a number");
	expect_error(state,
		"{\"model_config_list\": [{\"config\": {\"name\": \"m\", \"base_path\": \"p\", \"nireq\": \"4\"}}]}",
		"model_config_list[0].config.nireq: expected an integer");
	expect_error(state,
		"{\"model_config_list\": [{\"config\": {\"name\": \"m\", \"base_path\": \"p\", \"nireq\": 1.5}}]}",
		"model_config_list[0].config.nireq: expected an integer from 0 to");
	expect_error(state,
		"{\"model_config_list\": [{\"config\": {\"name\": \"m\", \"base_path\": \"p\","
		" \"model_version_policy\": {\"specific\": {\"versions\": [1, \"3\"]}}}}]}",
		"model_config_list[0].config.model_version_policy.specific.versions[1]: expected an integer");
	expect_error(state,
		"{\"model_config_list\": [{\"config\": {\"name\": \"m\", \"base_path\": \"p\","
		" \"model_version_policy\": {\"specific\": {\"versions\": 3}}}}]}",
		"versions: expected an array of version numbers, got a number");
	expect_error(state,
		"{\"model_config_list\": [{\"config\": {\"name\": \"m\", \"base_path\": \"p\","
		" \"model_version_policy\": {\"specific\": {\"versions\": [0]}}}}]}",
		"versions[0]: expected an integer from 1 to");
	expect_error(state,
		"{\"model_config_list\": [{\"config\": {\"name\": \"m\", \"base_path\": \"p\","
		" \"model_version_policy\": {\"latest\": {\"num_versions\": 0}}}}]}",
		"latest.num_versions: expected an integer from 1 to");
	expect_error(state,
		"{\"model_config_list\": [{\"config\": {\"name\": \"m\", \"base_path\": \"p\","
		" \"model_version_policy\": \"latest\"}}]}",
		"model_version_policy: expected an object, got a string");
	expect_error(state, "{\"devices\": [{\"name\": \"D\", \"streams\": 0}]}",
		     "devices[0].streams: expected an integer from 1 to");
	expect_error(state, "{\"devices\": [{\"name\": \"D\", \"streams\": true}]}",
		     "devices[0].streams: expected an integer from 1 to 256, got a boolean");
	expect_error(state, "{\"devices\": [{\"name\": \"D\", \"max_queue_size\": 0}]}",
		     "devices[0].max_queue_size: expected an integer from 1 to");
	expect_error(state, "{\"devices\": []}", "devices: at least one device is required");
}

static void test_missing_and_malformed(void **state)
{
	expect_error(state, "{\"model_config_list\": [{\"config\": {\"name\": \"m\"}}]}",
		     "model_config_list[0].config: missing required key 'base_path'");
	expect_error(state, "{\"model_config_list\": [{\"config\": {\"base_path\": \"p\"}}]}",
		     "model_config_list[0].config: missing required key 'name'");
	expect_error(state, "{\"model_config_list\": [{}]}",
		     "model_config_list[0]: missing required key 'config'");
	expect_error(state, "{\"model_config_list\": [{\"config\": {\"name\": \"\", \"base_path\": \"p\"}}]}",
		     "model_config_list[0].config.name: must not be empty");
	expect_error(state, "{\"devices\": [{\"streams\": 1}]}",
		     "devices[0]: missing required key 'name'");
	expect_error(state,
		"{\"model_config_list\": [{\"config\": {\"name\": \"m\", \"base_path\": \"p\","
		" \"model_version_policy\": {\"latest\": {}, \"all\": {}}}}]}",
		"expected exactly one of 'latest', 'specific', 'all'");
	expect_error(state,
		"{\"model_config_list\": [{\"config\": {\"name\": \"m\", \"name\": \"n\", \"base_path\": \"p\"}}]}",
		"model_config_list[0].config: duplicate key 'name'");
	expect_error(state, "{\n  \"model_config_list\": [\n    {\"config\": }\n]}",
		     "invalid JSON at line 3, column 16");
	expect_error(state, "", "invalid JSON at line 1");
}

static void test_missing_file(void **state)
{
	es_server_config cfg;
	es_error err = { 0 };
	es_config_defaults(&cfg);
	assert_int_equal(es_config_load_file("/nonexistent/edgeserve.json", &cfg, &err), ES_EIO);
	assert_non_null(strstr(err.msg, "cannot open config file 'edgeserve.json'"));
	assert_null(strstr(err.msg, "/nonexistent"));
	memset(&err, 0, sizeof(err));
	assert_int_equal(es_config_load_file("edgeserve-missing.json", &cfg, &err), ES_EIO);
	assert_non_null(strstr(err.msg, "cannot open config file 'edgeserve-missing.json'"));
	es_config_free(&cfg);
}

/* ---- repository scan ------------------------------------------------------------ */

static void test_scan_repository(void **state)
{
	scratch *s = *state;
	es_server_config cfg;
	es_error err = { 0 };
	scratch_mkdir(s, "zeta");
	scratch_mkdir(s, "alpha");
	scratch_mkdir(s, "my.model-2_b");
	scratch_mkdir(s, ".hidden");
	scratch_mkdir(s, "bad name");
	scratch_write(s, "config.json", "{}");
	scratch_write(s, "notes.txt", "not a model");

	es_config_defaults(&cfg);
	assert_int_equal(es_config_scan_repository(s->dir, &cfg, &err), 0);
	assert_int_equal(cfg.n_models, 3);
	assert_string_equal(cfg.models[0].name, "alpha");
	assert_string_equal(cfg.models[1].name, "my.model-2_b");
	assert_string_equal(cfg.models[2].name, "zeta");
	char want[PATH_MAX];
	fmt(want, sizeof(want), "%s/alpha", s->dir);
	assert_string_equal(cfg.models[0].base_path, want);
	for (size_t i = 0; i < cfg.n_models; i++) {
		assert_int_equal(cfg.models[i].policy.kind, ES_POLICY_LATEST);
		assert_int_equal(cfg.models[i].policy.num_versions, 1);
		assert_null(cfg.models[i].target_device);
		assert_false(cfg.models[i].keep_previous);
		assert_int_equal(cfg.models[i].warmup, -1);
	}
	assert_int_equal(es_config_validate(&cfg, &err), 0);
	es_config_free(&cfg);

	es_config_defaults(&cfg);
	assert_int_equal(es_config_scan_repository(ES_TEST_DATA_DIR "/../../examples/models",
						   &cfg, &err), 0);
	assert_int_equal(cfg.n_models, 2);
	assert_string_equal(cfg.models[0].name, "classifier");
	assert_string_equal(cfg.models[1].name, "scaler");
	es_config_free(&cfg);

	es_config_defaults(&cfg);
	assert_int_equal(es_config_scan_repository("/nonexistent/models", &cfg, &err), ES_EIO);
	es_config_free(&cfg);
}

/* ---- validation ------------------------------------------------------------------- */

static es_model_config *add_model(es_server_config *cfg, const char *name)
{
	cfg->models = realloc(cfg->models, (cfg->n_models + 1) * sizeof(*cfg->models));
	assert_non_null(cfg->models);
	es_model_config *m = &cfg->models[cfg->n_models++];
	memset(m, 0, sizeof(*m));
	m->name = strdup(name);
	m->base_path = strdup("/models/x");
	m->policy.kind = ES_POLICY_LATEST;
	m->policy.num_versions = 1;
	return m;
}

static void expect_invalid(es_server_config *cfg, const char *needle)
{
	es_error err = { 0 };
	int rc = es_config_validate(cfg, &err);
	if (rc == 0 || !strstr(err.msg, needle))
		fail_msg("rc %d, message '%s', expected '%s'", rc, err.msg, needle);
}

static void test_validate(void **state)
{
	es_server_config cfg;
	es_error err = { 0 };

	es_config_defaults(&cfg);
	add_model(&cfg, "a");
	add_model(&cfg, "a");
	expect_invalid(&cfg, "model name 'a' is used twice");
	es_config_free(&cfg);

	es_config_defaults(&cfg);
	add_model(&cfg, "../etc");
	expect_invalid(&cfg, "name '../etc' is not valid");
	es_config_free(&cfg);

	es_config_defaults(&cfg);
	add_model(&cfg, ".hidden");
	expect_invalid(&cfg, "is not valid");
	es_config_free(&cfg);

	es_config_defaults(&cfg);
	add_model(&cfg, "m")->target_device = strdup("GPU");
	expect_invalid(&cfg, "model 'm': target_device 'GPU' is not a configured device");
	es_config_free(&cfg);

	es_config_defaults(&cfg);
	es_model_config *m = add_model(&cfg, "m");
	m->policy.kind = ES_POLICY_SPECIFIC;
	m->policy.versions = calloc(2, sizeof(int64_t));
	m->policy.versions[0] = 2;
	m->policy.versions[1] = 2;
	m->policy.n_versions = 2;
	expect_invalid(&cfg, "version 2 is listed twice");
	m->policy.versions[1] = 0;
	expect_invalid(&cfg, "version numbers must be >= 1");
	m->policy.n_versions = 0;
	expect_invalid(&cfg, "specific policy lists no versions");
	m->policy.kind = ES_POLICY_LATEST;
	m->policy.num_versions = 0;
	expect_invalid(&cfg, "num_versions must be >= 1");
	m->policy.num_versions = 3;
	assert_int_equal(es_config_validate(&cfg, &err), 0);
	m->warmup = -2;
	expect_invalid(&cfg, "model 'm': warmup: expected 0..1000");
	m->warmup = 1001;
	expect_invalid(&cfg, "model 'm': warmup: expected 0..1000");
	m->warmup = -1;
	assert_int_equal(es_config_validate(&cfg, &err), 0);
	m->warmup = 0;
	assert_int_equal(es_config_validate(&cfg, &err), 0);
	free(m->base_path);
	m->base_path = NULL;
	expect_invalid(&cfg, "model 'm': base_path is not set");
	es_config_free(&cfg);

	es_config_defaults(&cfg);
	cfg.devices[0].streams = 0;
	expect_invalid(&cfg, "device 'CPU': streams");
	cfg.devices[0].streams = 1;
	cfg.devices[0].max_queue_size = 0;
	expect_invalid(&cfg, "device 'CPU': max_queue_size");
	cfg.devices[0].max_queue_size = 1;
	free(cfg.devices[0].backend);
	cfg.devices[0].backend = strdup("tpu");
	expect_invalid(&cfg, "backend: expected 'cpu' or another registered backend, got 'tpu'");
	es_config_free(&cfg);

	es_config_defaults(&cfg);
	cfg.devices = realloc(cfg.devices, 2 * sizeof(*cfg.devices));
	cfg.devices[1] = cfg.devices[0];
	cfg.devices[1].name = strdup("CPU");
	cfg.devices[1].backend = strdup("cpu");
	cfg.n_devices = 2;
	expect_invalid(&cfg, "device name 'CPU' is used twice");
	es_config_free(&cfg);

	es_config_defaults(&cfg);
	cfg.rest_port = 70000;
	expect_invalid(&cfg, "rest_port");
	cfg.rest_port = 0;
	free(cfg.log_level);
	cfg.log_level = strdup("LOUD");
	expect_invalid(&cfg, "log_level");
	free(cfg.log_level);
	cfg.log_level = strdup("debug");
	cfg.default_timeout_ms = 0;
	expect_invalid(&cfg, "default_timeout_ms");
	cfg.default_timeout_ms = 5;
	assert_int_equal(es_config_validate(&cfg, &err), 0);
	cfg.poll_wait_s = -1;
	expect_invalid(&cfg, "file_system_poll_wait_seconds: expected 0..86400, got -1");
	cfg.poll_wait_s = 86401;
	expect_invalid(&cfg, "file_system_poll_wait_seconds");
	cfg.poll_wait_s = 0; /* polling off */
	assert_int_equal(es_config_validate(&cfg, &err), 0);
	cfg.default_warmup = 1001;
	expect_invalid(&cfg, "warmup_inferences: expected 0..1000, got 1001");
	cfg.default_warmup = 0;
	assert_int_equal(es_config_validate(&cfg, &err), 0);
	cfg.cache_dir = strdup("");
	expect_invalid(&cfg, "cache_dir: must not be empty");
	free(cfg.cache_dir);
	cfg.cache_dir = strdup("/var/cache/edgeserve");
	assert_int_equal(es_config_validate(&cfg, &err), 0);
	es_config_free(&cfg);
}

/* ---- rollouts: labels, canary, shadow, device fallback ---------------------- */

static void test_rollout_keys(void **state)
{
	es_server_config cfg;
	es_error err;
	int rc = load_text(*state,
		"{\"model_config_list\": [\n"
		"  {\"config\": {\"name\": \"a\", \"base_path\": \"/m/a\",\n"
		"    \"version_labels\": {\"stable\": 1, \"canary\": 2, \"Exp_3\": 3},\n"
		"    \"canary\": {\"label\": \"canary\", \"fraction_bp\": 500,\n"
		"      \"user_header\": \"X-Customer\", \"user_parameter\": \"customer\",\n"
		"      \"salt\": \"s1\", \"keyless\": \"request_id\", \"kill_switch\": true,\n"
		"      \"guard\": {\"window_seconds\": 10, \"min_samples\": 20,\n"
		"        \"max_error_rate\": 0.05, \"max_p95_ratio\": 1.5,\n"
		"        \"max_divergence_rate\": 0.01}},\n"
		"    \"shadow\": {\"version\": 2, \"fraction_bp\": 10000, \"queue_size\": 8, \"inline_max_us\": 0,\n"
		"      \"atol\": 0.5, \"rtol\": 0}}},\n"
		"  {\"config\": {\"name\": \"b\", \"base_path\": \"/m/b\",\n"
		"    \"canary\": {\"version\": 4}, \"shadow\": {\"version\": 4}}}\n"
		"]}\n", &cfg, &err);
	if (rc)
		fail_msg("load: %s", err.msg);
	const es_model_config *a = &cfg.models[0], *b = &cfg.models[1];
	assert_int_equal(a->n_labels, 3);
	assert_string_equal(a->labels[0].name, "stable");
	assert_int_equal(a->labels[0].version, 1);
	assert_string_equal(a->labels[2].name, "Exp_3");
	assert_int_equal(a->labels[2].version, 3);
	assert_true(a->canary.enabled);
	assert_int_equal(a->canary.version, 0);
	assert_string_equal(a->canary.label, "canary");
	assert_int_equal(a->canary.fraction_bp, 500);
	assert_string_equal(a->canary.user_header, "X-Customer");
	assert_string_equal(a->canary.user_parameter, "customer");
	assert_string_equal(a->canary.salt, "s1");
	assert_true(a->canary.keyless_hash_id);
	assert_true(a->canary.killed);
	assert_int_equal(a->canary.guard.window_s, 10);
	assert_int_equal(a->canary.guard.min_samples, 20);
	assert_true(a->canary.guard.max_error_rate == 0.05);
	assert_true(a->canary.guard.max_p95_ratio == 1.5);
	assert_true(a->canary.guard.max_divergence_rate == 0.01);
	assert_true(a->shadow.enabled);
	assert_int_equal(a->shadow.version, 2);
	assert_int_equal(a->shadow.fraction_bp, 10000);
	assert_int_equal(a->shadow.queue_size, 8);
	assert_int_equal(a->shadow.inline_max_us, 0);
	assert_true(a->shadow.atol == 0.5 && a->shadow.rtol == 0);
	/* defaults */
	assert_true(b->canary.enabled);
	assert_int_equal(b->canary.version, 4);
	assert_null(b->canary.label);
	assert_int_equal(b->canary.fraction_bp, 0);
	assert_null(b->canary.user_header); /* the server's X-User-Id */
	assert_false(b->canary.keyless_hash_id);
	assert_false(b->canary.killed);
	assert_int_equal(b->canary.guard.window_s, 30);
	assert_int_equal(b->canary.guard.min_samples, 50);
	assert_true(b->canary.guard.max_error_rate == 0 && b->canary.guard.max_p95_ratio == 0);
	assert_int_equal(b->shadow.queue_size, 64);
	assert_int_equal(b->shadow.inline_max_us, 250);
	assert_true(b->shadow.atol == 1e-4 && b->shadow.rtol == 1e-3);
	assert_int_equal(cfg.divergence_log_per_s, 10);
	assert_int_equal(es_config_validate(&cfg, &err), 0);
	es_config_free(&cfg);
}

#define M1 "{\"model_config_list\": [{\"config\": {\"name\": \"m\", \"base_path\": \"p\", "

static void test_rollout_keys_invalid(void **state)
{
	expect_error(state, M1 "\"version_labels\": {\"st-able\": 1}}}]}",
		     "model_config_list[0].config.version_labels: label name 'st-able' is not valid");
	expect_error(state, M1 "\"version_labels\": {\"stable\": 0}}}]}",
		     "version_labels.stable: expected an integer from 1 to");
	expect_error(state, M1 "\"version_labels\": {\"stable\": \"1\"}}}]}",
		     "version_labels.stable: expected an integer from 1 to 9007199254740992, got a string");
	expect_error(state, M1 "\"version_labels\": [1]}}]}",
		     "version_labels: expected an object of label names to versions, got an array");
	expect_error(state, M1 "\"canary\": {\"fraction_bp\": 100}}}]}",
		     "config.canary: expected exactly one of 'version' and 'label', got neither");
	expect_error(state, M1 "\"canary\": {\"version\": 2, \"label\": \"x\"}}}]}",
		     "config.canary: expected exactly one of 'version' and 'label', got both");
	expect_error(state, M1 "\"canary\": {\"version\": 2, \"fraction_bp\": 10001}}}]}",
		     "canary.fraction_bp: expected an integer from 0 to 10000, got 10001");
	expect_error(state, M1 "\"canary\": {\"version\": 2, \"keyless\": \"random\"}}}]}",
		     "canary.keyless: expected \"stable\" or \"request_id\", got 'random'");
	expect_error(state, M1 "\"canary\": {\"version\": 2, \"user_header\": \"X User\"}}}]}",
		     "canary.user_header: 'X User' is not a valid HTTP header name");
	expect_error(state, M1 "\"canary\": {\"version\": 2, \"kill_switch\": 1}}}]}",
		     "canary.kill_switch: expected a boolean (true or false), got a number");
	expect_error(state, M1 "\"canary\": {\"version\": 2, \"guard\": {\"window_seconds\": 0}}}}]}",
		     "canary.guard.window_seconds: expected an integer from 1 to 3600, got 0");
	expect_error(state, M1 "\"canary\": {\"version\": 2, \"guard\": {\"min_samples\": 1000001}}}}]}",
		     "canary.guard.min_samples: expected an integer from 1 to 1000000, got 1000001");
	expect_error(state, M1 "\"canary\": {\"version\": 2, \"guard\": {\"max_error_rate\": 1.5}}}}]}",
		     "canary.guard.max_error_rate: expected a number >= 0 and <= 1, got 1.5");
	expect_error(state, M1 "\"canary\": {\"version\": 2, \"guard\": {\"max_p95_ratio\": 1}}}}]}",
		     "canary.guard.max_p95_ratio: expected a number > 1 and <= 1e+09, got 1");
	expect_error(state, M1 "\"canary\": {\"version\": 2, \"guard\": {\"max_divergence\": 0.1}}}}]}",
		     "model_config_list[0].config.canary.guard: unknown key 'max_divergence'");
	expect_error(state, M1 "\"canary\": {\"version\": 2, \"fraction\": 5}}}]}",
		     "model_config_list[0].config.canary: unknown key 'fraction'");
	expect_error(state, M1 "\"shadow\": {\"version\": 2, \"queue_size\": 0}}}]}",
		     "shadow.queue_size: expected an integer from 1 to 65536, got 0");
	expect_error(state, M1 "\"shadow\": {\"version\": 2, \"inline_max_us\": -1}}}]}",
		     "shadow.inline_max_us: expected an integer from 0 to 1000000, got -1");
	expect_error(state, M1 "\"shadow\": {\"version\": 2, \"atol\": -1}}}]}",
		     "shadow.atol: expected a number >= 0");
	expect_error(state, M1 "\"shadow\": {\"label\": \"bad-name\"}}}]}",
		     "shadow.label: 'bad-name' is not a valid label name");
	expect_error(state, M1 "\"shadow\": {\"version\": 2, \"tolerance\": 1}}}]}",
		     "model_config_list[0].config.shadow: unknown key 'tolerance'");
	expect_error(state,
		"{\"devices\": [{\"name\": \"A\", \"fallback\": 3}]}",
		"devices[0].fallback: expected a string, got a number");
	expect_error(state,
		"{\"devices\": [{\"name\": \"A\", \"spill_queue_depth\": -1}]}",
		"devices[0].spill_queue_depth: expected an integer from 0 to");
	expect_error(state,
		"{\"devices\": [{\"name\": \"A\", \"spill_wait\": 5}]}",
		"devices[0]: unknown key 'spill_wait'");
}

static void test_rollout_validate(void **state)
{
	es_server_config cfg;
	es_error err;
	/* parsed fine, refused by validation (which also guards configs built in code) */
	int rc = load_text(*state, M1 "\"version_labels\": {\"stable\": 1},"
			   " \"canary\": {\"label\": \"canary\"}}}]}", &cfg, &err);
	assert_int_equal(rc, 0);
	expect_invalid(&cfg, "model 'm': canary.label 'canary' is not one of the model's version_labels");
	es_config_free(&cfg);

	rc = load_text(*state, M1 "\"shadow\": {\"label\": \"exp\"}}}]}", &cfg, &err);
	assert_int_equal(rc, 0);
	expect_invalid(&cfg, "model 'm': shadow.label 'exp' is not one of the model's version_labels");
	es_config_free(&cfg);

	rc = load_text(*state, "{\"devices\": [{\"name\": \"A\", \"fallback\": \"A\"}]}", &cfg, &err);
	assert_int_equal(rc, 0);
	expect_invalid(&cfg, "device 'A': fallback: a device cannot be its own fallback");
	es_config_free(&cfg);

	rc = load_text(*state, "{\"devices\": [{\"name\": \"A\", \"fallback\": \"B\"}]}", &cfg, &err);
	assert_int_equal(rc, 0);
	expect_invalid(&cfg, "device 'A': fallback 'B' is not a configured device");
	es_config_free(&cfg);

	rc = load_text(*state, "{\"devices\": [{\"name\": \"A\", \"fallback\": \"B\"},"
			   " {\"name\": \"B\", \"fallback\": \"C\"}, {\"name\": \"C\", \"fallback\": \"A\"}]}",
			   &cfg, &err);
	assert_int_equal(rc, 0);
	expect_invalid(&cfg, "device 'A': fallback 'B' leads back to 'A' (fallbacks must not form a cycle)");
	es_config_free(&cfg);

	rc = load_text(*state, "{\"devices\": [{\"name\": \"A\", \"spill_queue_depth\": 4}]}", &cfg,
		       &err);
	assert_int_equal(rc, 0);
	expect_invalid(&cfg, "device 'A': spill_queue_depth and spill_wait_ms need a fallback device");
	es_config_free(&cfg);

	rc = load_text(*state, "{\"devices\": [{\"name\": \"A\", \"fault_control\": \"/tmp/f\"}]}",
		       &cfg, &err);
	assert_int_equal(rc, 0);
	expect_invalid(&cfg, "device 'A': fault_control is only meaningful for backend 'faulty', not 'cpu'");
	es_config_free(&cfg);

	/* the fault-injecting backend exists only where a test registered it */
	rc = load_text(*state, "{\"devices\": [{\"name\": \"A\", \"backend\": \"faulty\"}]}", &cfg,
		       &err);
	assert_int_equal(rc, 0);
	if (!es_backend_find("faulty"))
		expect_invalid(&cfg, "device 'A': backend: expected 'cpu' or another registered backend, got 'faulty'");
	es_config_free(&cfg);

	/* a good chain: A spills to B, B to C */
	rc = load_text(*state, "{\"devices\": [{\"name\": \"A\", \"fallback\": \"B\","
			   " \"spill_queue_depth\": 4, \"spill_wait_ms\": 50},"
			   " {\"name\": \"B\", \"fallback\": \"C\"}, {\"name\": \"C\"}]}", &cfg, &err);
	assert_int_equal(rc, 0);
	assert_string_equal(cfg.devices[0].fallback, "B");
	assert_int_equal(cfg.devices[0].spill_queue_depth, 4);
	assert_int_equal(cfg.devices[0].spill_wait_ms, 50);
	assert_int_equal(es_config_validate(&cfg, &err), 0);
	es_config_free(&cfg);

	/* configs built in code: 0 guard window and sizes mean the defaults */
	es_config_defaults(&cfg);
	es_model_config *m = add_model(&cfg, "m");
	m->canary.enabled = true;
	m->canary.version = 2;
	assert_int_equal(es_config_validate(&cfg, &err), 0);
	m->canary.fraction_bp = -1;
	expect_invalid(&cfg, "model 'm': canary.fraction_bp: expected 0..10000, got -1");
	m->canary.fraction_bp = 100;
	m->canary.guard.max_p95_ratio = 0.5;
	expect_invalid(&cfg, "canary.guard.max_p95_ratio: expected a ratio > 1 (or 0: off), got 0.5");
	m->canary.guard.max_p95_ratio = 0;
	m->canary.label = strdup("x");
	expect_invalid(&cfg, "model 'm': canary: expected exactly one of a version (>= 1) and a label");
	es_config_free(&cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test_setup_teardown(test_load_ovms_file, scratch_setup, scratch_teardown),
		cmocka_unit_test_setup_teardown(test_lifecycle_keys, scratch_setup, scratch_teardown),
		cmocka_unit_test_setup_teardown(test_lifecycle_keys_invalid,
						scratch_setup, scratch_teardown),
		cmocka_unit_test_setup_teardown(test_messages_name_no_directories,
						scratch_setup, scratch_teardown),
		cmocka_unit_test_setup_teardown(test_load_appends_to_existing_models,
						scratch_setup, scratch_teardown),
		cmocka_unit_test_setup_teardown(test_default_queue_size_without_hint,
						scratch_setup, scratch_teardown),
		cmocka_unit_test_setup_teardown(test_unknown_keys_named_with_location,
						scratch_setup, scratch_teardown),
		cmocka_unit_test_setup_teardown(test_wrong_types, scratch_setup, scratch_teardown),
		cmocka_unit_test_setup_teardown(test_missing_and_malformed,
						scratch_setup, scratch_teardown),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test_setup_teardown(test_scan_repository, scratch_setup, scratch_teardown),
		cmocka_unit_test(test_validate),
		cmocka_unit_test_setup_teardown(test_rollout_keys, scratch_setup, scratch_teardown),
		cmocka_unit_test_setup_teardown(test_rollout_keys_invalid, scratch_setup,
						scratch_teardown),
		cmocka_unit_test_setup_teardown(test_rollout_validate, scratch_setup,
						scratch_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
