/*
 * The fault-injecting test backend (see faulty_backend.h for the control
 * file). One state per device: the control file's path, the rules of its
 * last good read with their run counts, and per-session output buffers for
 * biased outputs.
 *
 * Biased outputs are written to buffers of our own rather than in place:
 * a session's output may be a constant of the model or alias an input, and
 * changing those would corrupt the model or the caller's data. A session
 * runs one request at a time, so its buffers are only ever used by one
 * thread; they stay valid until that session's next run, as es_session_run
 * promises for its own.
 */
#include "support/faulty_backend.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "base/status.h"
#include "obs/log.h"

#define FAULT_MAX_LATENCY_MS 60000
#define FAULT_MAX_FILE_BYTES (1 << 20)
#define FAULT_MAX_RULES 256

typedef struct fault_rule {
	char *model;
	int64_t version;      /* 0: every version */
	int64_t error_every;  /* 0: never */
	int latency_ms;
	double output_bias;
	uint64_t runs;        /* matching runs since the file was read */
} fault_rule;

/* Where a session's biased outputs live. */
typedef struct bias_slot {
	const es_session *session;
	size_t n;
	void **data;
	size_t *cap;
} bias_slot;

/* What the control file looked like when last read. */
typedef struct file_id {
	bool exists;
	struct timespec mtime;
	off_t size;
	ino_t ino;
} file_id;

typedef struct faulty_state {
	char *device;
	char *path; /* NULL: no control file configured */
	pthread_mutex_t mu;
	bool read_once;
	file_id seen;
	fault_rule *rules;
	size_t n_rules;
	bias_slot *slots;
	size_t n_slots;
} faulty_state;

/* What one run must do, copied out of the matching rule. */
typedef struct fault_action {
	bool fail;
	int latency_ms;
	double output_bias;
} fault_action;

static void rules_free(fault_rule *rules, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(rules[i].model);
	free(rules);
}

/* ---- the control file ------------------------------------------------------ */

static int read_file(const char *path, char **out, es_error *err)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return es_error_set(err, ES_EIO, "cannot open: %s", strerror(errno));
	char *buf = malloc(FAULT_MAX_FILE_BYTES + 1);
	if (!buf) {
		fclose(f);
		return es_error_set(err, ES_ENOMEM, "out of memory");
	}
	size_t n = fread(buf, 1, FAULT_MAX_FILE_BYTES + 1, f);
	int failed = ferror(f);
	fclose(f);
	if (failed) {
		free(buf);
		return es_error_set(err, ES_EIO, "read error");
	}
	if (n > FAULT_MAX_FILE_BYTES) {
		free(buf);
		return es_error_set(err, ES_ETOOLARGE, "larger than %d bytes",
				    FAULT_MAX_FILE_BYTES);
	}
	buf[n] = '\0';
	*out = buf;
	return 0;
}

static int rule_int(const cJSON *j, const char *loc, const char *key, int64_t min,
		    int64_t max, int64_t *out, es_error *err)
{
	if (!cJSON_IsNumber(j) || j->valuedouble != floor(j->valuedouble))
		return es_error_set(err, ES_EPARSE, "%s.%s: expected an integer", loc, key);
	if (j->valuedouble < (double)min || j->valuedouble > (double)max)
		return es_error_set(err, ES_EPARSE, "%s.%s: expected %lld..%lld, got %g", loc,
				    key, (long long)min, (long long)max, j->valuedouble);
	*out = (int64_t)j->valuedouble;
	return 0;
}

static int parse_rule(const cJSON *o, size_t index, fault_rule *r, es_error *err)
{
	char loc[48];
	snprintf(loc, sizeof(loc), "rules[%zu]", index);
	if (!cJSON_IsObject(o))
		return es_error_set(err, ES_EPARSE, "%s: expected an object", loc);
	for (const cJSON *c = o->child; c; c = c->next) {
		int64_t v = 0;
		int rc = 0;
		if (!strcmp(c->string, "model")) {
			if (!cJSON_IsString(c) || !c->valuestring[0])
				return es_error_set(err, ES_EPARSE,
						    "%s.model: expected a model name", loc);
			free(r->model);
			if (!(r->model = strdup(c->valuestring)))
				return es_error_set(err, ES_ENOMEM, "out of memory");
		} else if (!strcmp(c->string, "version")) {
			rc = rule_int(c, loc, "version", 0, INT64_MAX / 2, &v, err);
			r->version = v;
		} else if (!strcmp(c->string, "error_every")) {
			rc = rule_int(c, loc, "error_every", 0, INT32_MAX, &v, err);
			r->error_every = v;
		} else if (!strcmp(c->string, "latency_ms")) {
			rc = rule_int(c, loc, "latency_ms", 0, FAULT_MAX_LATENCY_MS, &v, err);
			r->latency_ms = (int)v;
		} else if (!strcmp(c->string, "output_bias")) {
			if (!cJSON_IsNumber(c) || !isfinite(c->valuedouble))
				return es_error_set(err, ES_EPARSE,
						    "%s.output_bias: expected a finite number", loc);
			r->output_bias = c->valuedouble;
		} else {
			return es_error_set(err, ES_EPARSE,
					    "%s: unknown key '%.64s' (expected model, version, error_every, latency_ms, output_bias)",
					    loc, c->string);
		}
		if (rc)
			return rc;
	}
	if (!r->model)
		return es_error_set(err, ES_EPARSE, "%s: no \"model\"", loc);
	return 0;
}

/* Parses text into rules (owned by the caller). */
static int parse_rules(const char *text, fault_rule **out, size_t *n_out, es_error *err)
{
	int rc = 0;
	fault_rule *rules = NULL;
	size_t n = 0;
	cJSON *root = cJSON_Parse(text);
	if (!root)
		return es_error_set(err, ES_EPARSE, "not valid JSON");
	if (!cJSON_IsObject(root)) {
		rc = es_error_set(err, ES_EPARSE, "expected a JSON object");
		goto out_free_json;
	}
	const cJSON *list = NULL;
	for (const cJSON *c = root->child; c; c = c->next) {
		if (strcmp(c->string, "rules")) {
			rc = es_error_set(err, ES_EPARSE, "unknown key '%.64s' (expected rules)",
					  c->string);
			goto out_free_json;
		}
		list = c;
	}
	if (!list || !cJSON_IsArray(list)) {
		rc = es_error_set(err, ES_EPARSE, "rules: expected an array");
		goto out_free_json;
	}
	size_t count = (size_t)cJSON_GetArraySize(list);
	if (count > FAULT_MAX_RULES) {
		rc = es_error_set(err, ES_EPARSE, "rules: expected at most %d, got %zu",
				  FAULT_MAX_RULES, count);
		goto out_free_json;
	}
	if (count && !(rules = calloc(count, sizeof(*rules)))) {
		rc = es_error_set(err, ES_ENOMEM, "out of memory");
		goto out_free_json;
	}
	for (const cJSON *c = list->child; c; c = c->next, n++)
		if ((rc = parse_rule(c, n, &rules[n], err))) {
			n++; /* free the partial rule too */
			goto out_free_rules;
		}
	*out = rules;
	*n_out = n;
	cJSON_Delete(root);
	return 0;
out_free_rules:
	rules_free(rules, n);
out_free_json:
	cJSON_Delete(root);
	return rc;
}

static bool file_id_eq(const file_id *a, const file_id *b)
{
	if (a->exists != b->exists)
		return false;
	if (!a->exists)
		return true;
	return a->size == b->size && a->ino == b->ino &&
	       a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

/* Re-reads the control file when it changed since the last read. Caller
 * holds st->mu. */
static void refresh_rules(faulty_state *st)
{
	struct stat sb;
	file_id now = { 0 };
	if (stat(st->path, &sb) == 0) {
		now.exists = true;
		now.mtime = sb.st_mtim;
		now.size = sb.st_size;
		now.ino = sb.st_ino;
	}
	if (st->read_once && file_id_eq(&now, &st->seen))
		return;
	st->read_once = true;
	st->seen = now;
	rules_free(st->rules, st->n_rules);
	st->rules = NULL;
	st->n_rules = 0;
	if (!now.exists) {
		es_log_msg(ES_LOG_WARN, "fault_control",
			   "device '%s': fault control file '%s' is missing: no faults injected",
			   st->device, st->path);
		return;
	}
	es_error err = { 0 };
	char *text = NULL;
	int rc = read_file(st->path, &text, &err);
	if (!rc)
		rc = parse_rules(text, &st->rules, &st->n_rules, &err);
	free(text);
	if (rc) {
		es_log_msg(ES_LOG_WARN, "fault_control",
			   "device '%s': fault control file '%s' ignored, no faults injected: %s",
			   st->device, st->path, err.msg);
		return;
	}
	es_log_msg(ES_LOG_INFO, "fault_control", "device '%s': %zu fault rules from '%s'",
		   st->device, st->n_rules, st->path);
}

/* What the run of model/version must do now (counts the run). */
static fault_action next_action(faulty_state *st, const char *model, int64_t version)
{
	fault_action a = { 0 };
	if (!st->path)
		return a;
	pthread_mutex_lock(&st->mu);
	refresh_rules(st);
	for (size_t i = 0; i < st->n_rules; i++) {
		fault_rule *r = &st->rules[i];
		if (strcmp(r->model, model) || (r->version && r->version != version))
			continue;
		r->runs++;
		a.fail = r->error_every > 0 && r->runs % (uint64_t)r->error_every == 0;
		a.latency_ms = r->latency_ms;
		a.output_bias = r->output_bias;
		break;
	}
	pthread_mutex_unlock(&st->mu);
	return a;
}

/* ---- biased outputs -------------------------------------------------------------- */

/* The buffer slot of session, with room for n outputs. Caller holds st->mu. */
static bias_slot *slot_for(faulty_state *st, const es_session *session, size_t n)
{
	bias_slot *s = NULL;
	for (size_t i = 0; i < st->n_slots; i++)
		if (st->slots[i].session == session)
			s = &st->slots[i];
	if (!s) {
		bias_slot *grown = realloc(st->slots, (st->n_slots + 1) * sizeof(*grown));
		if (!grown)
			return NULL;
		st->slots = grown;
		s = &st->slots[st->n_slots++];
		memset(s, 0, sizeof(*s));
		s->session = session;
	}
	if (s->n < n) {
		void **data = realloc(s->data, n * sizeof(*data));
		if (!data)
			return NULL;
		s->data = data;
		size_t *cap = realloc(s->cap, n * sizeof(*cap));
		if (!cap)
			return NULL;
		s->cap = cap;
		for (size_t i = s->n; i < n; i++) {
			s->data[i] = NULL;
			s->cap[i] = 0;
		}
		s->n = n;
	}
	return s;
}

/* Replaces every float output of r by a biased copy. */
static int apply_bias(faulty_state *st, const es_backend_run *r, double bias,
		      es_error *err)
{
	size_t n = r->n_outputs;
	pthread_mutex_lock(&st->mu);
	bias_slot *slot = slot_for(st, r->session, n);
	/* the arrays stay put when another session's slot is added (only the
	 * slot records move), and only this session's runner changes them */
	void **data = slot ? slot->data : NULL;
	size_t *cap = slot ? slot->cap : NULL;
	pthread_mutex_unlock(&st->mu);
	if (!slot)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	for (size_t o = 0; o < n; o++) {
		es_tensor *t = &r->outputs[o];
		if ((t->dtype != ES_DT_FLOAT && t->dtype != ES_DT_DOUBLE) || !t->nbytes)
			continue;
		if (cap[o] < t->nbytes) {
			void *grown = realloc(data[o], t->nbytes);
			if (!grown)
				return es_error_set(err, ES_ENOMEM, "out of memory");
			data[o] = grown;
			cap[o] = t->nbytes;
		}
		memcpy(data[o], t->data, t->nbytes);
		if (t->dtype == ES_DT_FLOAT) {
			float *f = data[o];
			for (size_t i = 0; i < t->nbytes / sizeof(float); i++)
				f[i] += (float)bias;
		} else {
			double *f = data[o];
			for (size_t i = 0; i < t->nbytes / sizeof(double); i++)
				f[i] += bias;
		}
		t->data = data[o];
	}
	return 0;
}

/* ---- the backend -------------------------------------------------------------------- */

static int faulty_open(const es_device_config *cfg, void **state, es_error *err)
{
	faulty_state *st = calloc(1, sizeof(*st));
	if (!st)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	st->device = strdup(cfg->name ? cfg->name : "?");
	if (!st->device)
		goto out_nomem;
	if (cfg->fault_control && !(st->path = strdup(cfg->fault_control)))
		goto out_nomem;
	if (pthread_mutex_init(&st->mu, NULL))
		goto out_nomem;
	if (!st->path)
		es_log_msg(ES_LOG_WARN, "fault_control",
			   "device '%s': backend 'faulty' without a fault_control file: no faults injected",
			   st->device);
	*state = st;
	return 0;
out_nomem:
	free(st->path);
	free(st->device);
	free(st);
	return es_error_set(err, ES_ENOMEM, "out of memory");
}

static void faulty_close(void *state)
{
	faulty_state *st = state;
	if (!st)
		return;
	for (size_t i = 0; i < st->n_slots; i++) {
		for (size_t o = 0; o < st->slots[i].n; o++)
			free(st->slots[i].data[o]);
		free(st->slots[i].data);
		free(st->slots[i].cap);
	}
	free(st->slots);
	rules_free(st->rules, st->n_rules);
	pthread_mutex_destroy(&st->mu);
	free(st->path);
	free(st->device);
	free(st);
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

static int faulty_run(void *state, const es_backend_run *r, es_error *err)
{
	faulty_state *st = state;
	fault_action a = next_action(st, r->model, r->version);
	if (a.latency_ms > 0)
		sleep_ms(a.latency_ms);
	if (a.fail)
		return es_error_set(err, ES_EINTERNAL,
				    "injected device error (device '%s', model '%s' version %lld)",
				    st->device, r->model, (long long)r->version);
	int rc = es_session_run(r->session, r->inputs, r->n_inputs, r->outputs, err);
	if (rc || a.output_bias == 0.0)
		return rc;
	return apply_bias(st, r, a.output_bias, err);
}

const es_backend es_faulty_backend = {
	.name = "faulty",
	.open = faulty_open,
	.close = faulty_close,
	.run = faulty_run,
};

int es_faulty_backend_register(void)
{
	return es_backend_register(&es_faulty_backend);
}
