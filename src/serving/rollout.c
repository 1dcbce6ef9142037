/*
 * Rollouts inside the server: version labels, the canary arm chosen by a
 * stable hash of a user key, the kill switch, shadow sampling, per-arm
 * sliding windows, and the guard-rail thread that trips the kill switch by
 * itself (docs/rollouts.md).
 *
 * The request path (es_servable_route, es_rollout_record) takes no lock but
 * a window's: the settings are an immutable object published through an
 * atomic pointer, and the kill switch is one atomic flag. A writer (label
 * move, canary update, reload) builds a new settings object under the
 * rollout's mutex and swaps it in. Retired settings objects are kept until
 * the servable is freed (at server end): they are small and change rarely,
 * so readers never need a grace period.
 *
 * Locks: the model's life_mu (to check that a version is AVAILABLE), then
 * es_rollout.mu (settings writers), then kill_mu; window mutexes are
 * leaves.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "base/status.h"
#include "obs/log.h"
#include "serving/serving_int.h"
#include "serving/window.h"

typedef struct es_rollout es_rollout;

#define LABEL_MAX 64
#define KEY_SOURCE_MAX 128
#define SALT_MAX 256
/* Defaults of a canary and a shadow given without these settings. */
#define DEFAULT_GUARD_WINDOW_S 30
#define DEFAULT_GUARD_MIN_SAMPLES 50
#define DEFAULT_SHADOW_QUEUE 64
#define DEFAULT_SHADOW_ATOL 1e-4
#define DEFAULT_SHADOW_INLINE_MAX_S 250e-6
#define DEFAULT_SHADOW_RTOL 1e-3

typedef struct ro_label {
	char name[LABEL_MAX];
	int64_t version;
} ro_label;

/* Immutable once published. */
typedef struct es_rollout_settings {
	size_t n_labels;
	ro_label labels[ES_MAX_LABELS];
	bool canary;
	int64_t canary_version;       /* 0 when canary_label names it */
	char canary_label[LABEL_MAX];
	int fraction_bp;
	char user_header[KEY_SOURCE_MAX];
	char user_parameter[KEY_SOURCE_MAX];
	char salt[SALT_MAX];
	size_t salt_len;
	bool keyless_hash_id;
	es_guard_config guard;        /* window_s and min_samples resolved */
	bool shadow;
	int64_t shadow_version;       /* 0 when shadow_label names it */
	char shadow_label[LABEL_MAX];
	int shadow_fraction_bp;
	es_shadow_params shadow_params;
	struct es_rollout_settings *retired_next;
} es_rollout_settings;

struct es_rollout {
	_Atomic(es_rollout_settings *) cur;
	pthread_mutex_t mu;            /* writers of cur; everything below to kill_mu */
	es_rollout_settings *retired;  /* earlier settings, freed with the servable */
	es_rollout_settings *cfg;      /* as configured (labels unresolved) */
	bool cfg_killed;
	/* configured labels whose version was not AVAILABLE yet */
	ro_label pending[ES_MAX_LABELS];
	bool pending_logged[ES_MAX_LABELS];
	size_t n_pending;

	/* the kill switch: the flag is read on every request */
	atomic_bool killed;
	pthread_mutex_t kill_mu;
	char kill_reason[256];

	/* statistics */
	es_window arms[ES_ARM_COUNT];
	es_window divergence; /* shadow pairs of the canary: compared, diverged */
	int window_s;         /* mu */
	atomic_uint_fast64_t sh_sampled, sh_dropped, sh_failed, sh_matched, sh_diverged;

	es_metric_child *m_killed, *m_fraction, *m_label_moves;
};

const char *es_arm_name(es_arm a)
{
	switch (a) {
	case ES_ARM_DEFAULT: return "default";
	case ES_ARM_STABLE: return "stable";
	case ES_ARM_CANARY: return "canary";
	case ES_ARM_PINNED: return "pinned";
	case ES_ARM_LABEL: return "label";
	case ES_ARM_COUNT: break;
	}
	return "unknown";
}

/* ---- helpers --------------------------------------------------------------- */

static bool label_name_ok(const char *s)
{
	if (!s || !s[0])
		return false;
	size_t n = 0;
	for (const char *p = s; *p; p++, n++) {
		char c = *p;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '_') || n + 1 >= LABEL_MAX)
			return false;
	}
	return true;
}

static const ro_label *label_find(const es_rollout_settings *st, const char *name)
{
	for (size_t i = 0; i < st->n_labels; i++)
		if (!strcmp(st->labels[i].name, name))
			return &st->labels[i];
	return NULL;
}

static int64_t label_version(const es_rollout_settings *st, const char *name)
{
	const ro_label *l = label_find(st, name);
	return l ? l->version : 0;
}

/* The canary's version now (0: none configured, or its label unset). */
static int64_t canary_of(const es_rollout_settings *st)
{
	if (!st->canary)
		return 0;
	return st->canary_label[0] ? label_version(st, st->canary_label) : st->canary_version;
}

static int64_t shadow_of(const es_rollout_settings *st)
{
	if (!st->shadow)
		return 0;
	return st->shadow_label[0] ? label_version(st, st->shadow_label) : st->shadow_version;
}

/* 64-bit FNV-1a over salt, a 0 byte and key, then murmur3's fmix64 so that
 * the low digits (hash % 10000) are well mixed. */
static uint64_t key_hash(const char *salt, size_t salt_len, const char *key, size_t key_len)
{
	const uint64_t prime = 1099511628211ull;
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < salt_len; i++)
		h = (h ^ (unsigned char)salt[i]) * prime;
	h = (h ^ 0u) * prime;
	for (size_t i = 0; i < key_len; i++)
		h = (h ^ (unsigned char)key[i]) * prime;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 33;
	return h;
}

/* A per-thread xorshift64* draw in 0..9999 for shadow sampling. */
static int shadow_draw(void)
{
	static _Thread_local uint64_t x;
	if (!x) {
		x = es_now_ns() ^ (uint64_t)(uintptr_t)&x ^ 0x9e3779b97f4a7c15ull;
		if (!x)
			x = 1;
	}
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	return (int)((x * 0x2545f4914f6cdd1dull) % 10000u);
}

static void copy_str(char *dst, size_t cap, const char *src, const char *dflt)
{
	snprintf(dst, cap, "%s", src && src[0] ? src : dflt);
}

static void log_actor(es_logrec *r, const es_actor *who)
{
	es_log_str(r, "actor", who && who->who ? who->who : "server");
	if (who && who->remote)
		es_log_str(r, "remote", who->remote);
}

/* Settings from a model's configuration; labels as configured (the caller
 * resolves them). */
static void settings_from_config(es_rollout_settings *st, const es_servable *m,
				 const es_model_config *mc)
{
	memset(st, 0, sizeof(*st));
	for (size_t i = 0; i < mc->n_labels && st->n_labels < ES_MAX_LABELS; i++) {
		ro_label *l = &st->labels[st->n_labels++];
		copy_str(l->name, sizeof(l->name), mc->labels[i].name, "");
		l->version = mc->labels[i].version;
	}
	const es_canary_config *c = &mc->canary;
	st->canary = c->enabled;
	if (c->enabled) {
		st->canary_version = c->label ? 0 : c->version;
		copy_str(st->canary_label, sizeof(st->canary_label), c->label, "");
		st->fraction_bp = c->fraction_bp;
		copy_str(st->user_header, sizeof(st->user_header), c->user_header, "X-User-Id");
		copy_str(st->user_parameter, sizeof(st->user_parameter), c->user_parameter,
			 "user_id");
		copy_str(st->salt, sizeof(st->salt), c->salt, m->name);
		st->salt_len = strlen(st->salt);
		st->keyless_hash_id = c->keyless_hash_id;
		st->guard = c->guard;
	}
	if (st->guard.window_s <= 0)
		st->guard.window_s = DEFAULT_GUARD_WINDOW_S;
	if (st->guard.window_s > ES_WINDOW_MAX_SECONDS)
		st->guard.window_s = ES_WINDOW_MAX_SECONDS;
	if (st->guard.min_samples <= 0)
		st->guard.min_samples = DEFAULT_GUARD_MIN_SAMPLES;
	const es_shadow_config *sh = &mc->shadow;
	st->shadow = sh->enabled;
	st->shadow_params.queue_size = DEFAULT_SHADOW_QUEUE;
	st->shadow_params.atol = DEFAULT_SHADOW_ATOL;
	st->shadow_params.rtol = DEFAULT_SHADOW_RTOL;
	st->shadow_params.inline_max_s = DEFAULT_SHADOW_INLINE_MAX_S;
	if (sh->enabled) {
		st->shadow_version = sh->label ? 0 : sh->version;
		copy_str(st->shadow_label, sizeof(st->shadow_label), sh->label, "");
		st->shadow_fraction_bp = sh->fraction_bp;
		if (sh->queue_size > 0)
			st->shadow_params.queue_size = sh->queue_size;
		if (sh->atol >= 0)
			st->shadow_params.atol = sh->atol;
		if (sh->rtol >= 0)
			st->shadow_params.rtol = sh->rtol;
		if (sh->inline_max_us >= 0)
			st->shadow_params.inline_max_s = sh->inline_max_us / 1e6;
	}
}

static bool settings_equal(const es_rollout_settings *a, const es_rollout_settings *b)
{
	if (a->n_labels != b->n_labels)
		return false;
	for (size_t i = 0; i < a->n_labels; i++)
		if (strcmp(a->labels[i].name, b->labels[i].name) ||
		    a->labels[i].version != b->labels[i].version)
			return false;
	return a->canary == b->canary && a->canary_version == b->canary_version &&
	       !strcmp(a->canary_label, b->canary_label) && a->fraction_bp == b->fraction_bp &&
	       !strcmp(a->user_header, b->user_header) &&
	       !strcmp(a->user_parameter, b->user_parameter) && !strcmp(a->salt, b->salt) &&
	       a->keyless_hash_id == b->keyless_hash_id &&
	       a->guard.window_s == b->guard.window_s &&
	       a->guard.min_samples == b->guard.min_samples &&
	       a->guard.max_error_rate == b->guard.max_error_rate &&
	       a->guard.max_p95_ratio == b->guard.max_p95_ratio &&
	       a->guard.max_divergence_rate == b->guard.max_divergence_rate &&
	       a->shadow == b->shadow && a->shadow_version == b->shadow_version &&
	       !strcmp(a->shadow_label, b->shadow_label) &&
	       a->shadow_fraction_bp == b->shadow_fraction_bp &&
	       a->shadow_params.queue_size == b->shadow_params.queue_size &&
	       a->shadow_params.atol == b->shadow_params.atol &&
	       a->shadow_params.rtol == b->shadow_params.rtol &&
	       a->shadow_params.inline_max_s == b->shadow_params.inline_max_s;
}

/* Publishes nst (caller holds ro->mu); the old settings are kept. */
static void settings_publish(es_rollout *ro, es_rollout_settings *nst)
{
	es_rollout_settings *old = atomic_exchange(&ro->cur, nst);
	if (old) {
		old->retired_next = ro->retired;
		ro->retired = old;
	}
}

/* A copy of the current settings to change (caller holds ro->mu). */
static es_rollout_settings *settings_copy(es_rollout *ro)
{
	es_rollout_settings *n = malloc(sizeof(*n));
	if (n) {
		memcpy(n, atomic_load(&ro->cur), sizeof(*n));
		n->retired_next = NULL;
	}
	return n;
}

static es_version_state state_in(const es_vtable *t, int64_t version)
{
	for (size_t i = 0; i < t->n; i++)
		if (t->e[i].number == version)
			return t->e[i].state;
	return ES_VS_START;
}

/* True when version is AVAILABLE in table snapshot t. */
static bool snapshot_available(const es_vtable *t, int64_t version, bool *present)
{
	*present = false;
	for (size_t i = 0; t && i < t->n; i++)
		if (t->e[i].number == version) {
			*present = true;
			return t->e[i].state == ES_VS_AVAILABLE;
		}
	return false;
}

static void label_put(es_rollout_settings *st, const char *name, int64_t version)
{
	for (size_t i = 0; i < st->n_labels; i++)
		if (!strcmp(st->labels[i].name, name)) {
			if (version) {
				st->labels[i].version = version;
			} else {
				memmove(&st->labels[i], &st->labels[i + 1],
					(st->n_labels - i - 1) * sizeof(st->labels[0]));
				st->n_labels--;
			}
			return;
		}
	if (version && st->n_labels < ES_MAX_LABELS) {
		ro_label *l = &st->labels[st->n_labels++];
		snprintf(l->name, sizeof(l->name), "%s", name);
		l->version = version;
	}
}

static void pending_drop(es_rollout *ro, const char *name)
{
	for (size_t i = 0; i < ro->n_pending; i++)
		if (!strcmp(ro->pending[i].name, name)) {
			memmove(&ro->pending[i], &ro->pending[i + 1],
				(ro->n_pending - i - 1) * sizeof(ro->pending[0]));
			memmove(&ro->pending_logged[i], &ro->pending_logged[i + 1],
				(ro->n_pending - i - 1) * sizeof(ro->pending_logged[0]));
			ro->n_pending--;
			return;
		}
}

static void log_label_moved(const es_servable *m, const char *label, int64_t from,
			    int64_t to, const es_actor *who)
{
	es_logrec r;
	if (es_log_begin(&r, ES_LOG_INFO, "label_moved")) {
		es_log_str(&r, "model", m->name);
		es_log_str(&r, "label", label);
		es_log_int(&r, "from", from);
		es_log_int(&r, "to", to);
		log_actor(&r, who);
		es_log_end(&r);
	}
}

/* ---- the kill switch ---------------------------------------------------------- */

/*
 * Turns the kill switch on or off with a reason; returns true when it
 * changed. Turning it off forgets the canary's window and divergence pairs,
 * so the guard rails judge the canary on fresh traffic only.
 */
static bool set_killed(es_servable *m, bool killed, const char *reason, const es_actor *who)
{
	es_rollout *ro = m->ro;
	pthread_mutex_lock(&ro->kill_mu);
	bool was = atomic_load(&ro->killed);
	if (was != killed) {
		atomic_store(&ro->killed, killed);
		snprintf(ro->kill_reason, sizeof(ro->kill_reason), "%s", killed ? reason : "");
	}
	pthread_mutex_unlock(&ro->kill_mu);
	if (was == killed)
		return false;
	if (!killed) {
		es_window_clear(&ro->arms[ES_ARM_CANARY]);
		es_window_clear(&ro->divergence);
	}
	es_gauge_set(ro->m_killed, killed ? 1 : 0);
	es_logrec r;
	if (es_log_begin(&r, ES_LOG_WARN, "kill_switch")) {
		es_log_str(&r, "model", m->name);
		es_log_bool(&r, "killed", killed);
		if (killed)
			es_log_str(&r, "reason", reason);
		log_actor(&r, who);
		es_log_end(&r);
	}
	return true;
}

/* ---- settings lifecycle --------------------------------------------------------- */

static void register_metrics(es_server *s)
{
	static const char *const mo[] = { "model", NULL };
	static const char *const mr[] = { "model", "reason", NULL };
	if (!s->metrics || s->f_label_moves)
		return;
	s->f_canary_killed = es_metrics_gauge(s->metrics, "edgeserve_canary_killed",
		"1 while a model's canary kill switch is on (admin, config or a guard rail), else 0.",
		mo);
	s->f_guard_trips = es_metrics_counter(s->metrics, "edgeserve_canary_guard_trips_total",
		"Times a guard rail tripped a canary's kill switch, by the threshold crossed.",
		mr);
	s->f_canary_fraction = es_metrics_gauge(s->metrics, "edgeserve_canary_fraction_bp",
		"Share of keyed traffic sent to the canary, basis points (0 while killed).", mo);
	s->f_label_moves = es_metrics_counter(s->metrics, "edgeserve_label_moves_total",
		"Times a version label was set, moved or removed.", mo);
}

static void fraction_metric(es_servable *m)
{
	es_rollout *ro = m->ro;
	const es_rollout_settings *st = atomic_load(&ro->cur);
	es_gauge_set(ro->m_fraction,
		     st->canary && !atomic_load(&ro->killed) ? st->fraction_bp : 0);
}

static void rollout_destroy(es_rollout *ro)
{
	if (!ro)
		return;
	for (int a = 0; a < ES_ARM_COUNT; a++)
		es_window_free(&ro->arms[a]);
	es_window_free(&ro->divergence);
	free(atomic_load(&ro->cur));
	for (es_rollout_settings *r = ro->retired, *next; r; r = next) {
		next = r->retired_next;
		free(r);
	}
	free(ro->cfg);
	pthread_mutex_destroy(&ro->mu);
	pthread_mutex_destroy(&ro->kill_mu);
	free(ro);
}

int es_rollout_init(es_servable *m, const es_model_config *mc, es_error *err)
{
	es_server *s = m->srv;
	es_rollout *ro = calloc(1, sizeof(*ro));
	es_rollout_settings *st = calloc(1, sizeof(*st));
	es_rollout_settings *cfg = calloc(1, sizeof(*cfg));
	if (!ro || !st || !cfg) {
		free(ro);
		free(st);
		free(cfg);
		return es_error_set(err, ES_ENOMEM, "out of memory");
	}
	pthread_mutex_init(&ro->mu, NULL);
	pthread_mutex_init(&ro->kill_mu, NULL);
	settings_from_config(cfg, m, mc);
	*st = *cfg;
	/* no version is loaded yet: every configured label waits for
	 * es_rollout_sync */
	st->n_labels = 0;
	for (size_t i = 0; i < cfg->n_labels; i++)
		ro->pending[ro->n_pending++] = cfg->labels[i];
	ro->cfg = cfg;
	ro->cfg_killed = mc->canary.enabled && mc->canary.killed;
	atomic_init(&ro->cur, st);
	atomic_init(&ro->killed, ro->cfg_killed);
	if (ro->cfg_killed)
		snprintf(ro->kill_reason, sizeof(ro->kill_reason),
			 "kill_switch set in the configuration");
	atomic_init(&ro->sh_sampled, 0);
	atomic_init(&ro->sh_dropped, 0);
	atomic_init(&ro->sh_failed, 0);
	atomic_init(&ro->sh_matched, 0);
	atomic_init(&ro->sh_diverged, 0);
	ro->window_s = st->guard.window_s;
	int rc = 0;
	for (int a = 0; a < ES_ARM_COUNT && !rc; a++)
		rc = es_window_init(&ro->arms[a], ro->window_s);
	if (!rc)
		rc = es_window_init(&ro->divergence, ro->window_s);
	if (rc) {
		rollout_destroy(ro);
		return es_error_set(err, rc, "model '%s': cannot set up rollout statistics: %s",
				    m->name, es_strerror(rc));
	}
	register_metrics(s);
	if (s->metrics) {
		const char *l1[] = { m->name, NULL };
		ro->m_killed = es_metric_get(s->f_canary_killed, l1);
		ro->m_fraction = es_metric_get(s->f_canary_fraction, l1);
		ro->m_label_moves = es_metric_get(s->f_label_moves, l1);
	}
	m->ro = ro;
	es_gauge_set(ro->m_killed, ro->cfg_killed ? 1 : 0);
	fraction_metric(m);
	return 0;
}

void es_rollout_free(es_servable *m)
{
	rollout_destroy(m->ro);
	m->ro = NULL;
}

bool es_rollout_changed(es_servable *m, const es_model_config *mc)
{
	es_rollout *ro = m->ro;
	es_rollout_settings *n = malloc(sizeof(*n));
	if (!ro || !n) {
		free(n);
		return false;
	}
	settings_from_config(n, m, mc);
	pthread_mutex_lock(&ro->mu);
	bool changed = !settings_equal(n, ro->cfg) ||
		       ro->cfg_killed != (mc->canary.enabled && mc->canary.killed);
	pthread_mutex_unlock(&ro->mu);
	free(n);
	return changed;
}

/*
 * Applies a changed configuration: the labels become exactly the configured
 * ones (those on a version not AVAILABLE now wait for es_rollout_sync), the
 * canary and shadow settings are replaced, and the kill switch follows the
 * configuration only when its kill_switch value changed (an admin's or a
 * guard rail's kill survives unrelated reloads).
 */
int es_rollout_update(es_servable *m, const es_model_config *mc, es_error *err)
{
	es_rollout *ro = m->ro;
	es_rollout_settings *cfg = malloc(sizeof(*cfg)), *st = malloc(sizeof(*st));
	if (!ro || !cfg || !st) {
		free(cfg);
		free(st);
		return es_error_set(err, ES_ENOMEM, "out of memory");
	}
	settings_from_config(cfg, m, mc);
	*st = *cfg;
	st->n_labels = 0;
	bool cfg_killed = mc->canary.enabled && mc->canary.killed;

	pthread_mutex_lock(&m->life_mu);
	es_vtable *t = es_table_snapshot(m);
	pthread_mutex_lock(&ro->mu);
	if (st->guard.window_s != ro->window_s) {
		int rc = 0;
		for (int a = 0; a < ES_ARM_COUNT && !rc; a++)
			rc = es_window_resize(&ro->arms[a], st->guard.window_s);
		if (!rc)
			rc = es_window_resize(&ro->divergence, st->guard.window_s);
		if (!rc)
			ro->window_s = st->guard.window_s;
		else
			st->guard.window_s = ro->window_s; /* keep the old length */
	}
	const es_rollout_settings *old = atomic_load(&ro->cur);
	ro->n_pending = 0;
	for (size_t i = 0; i < cfg->n_labels; i++) {
		bool present;
		const ro_label *l = &cfg->labels[i];
		if (t && snapshot_available(t, l->version, &present)) {
			label_put(st, l->name, l->version);
			int64_t from = label_version(old, l->name);
			if (from != l->version) {
				es_counter_add(ro->m_label_moves, 1);
				es_actor who = { "config", NULL };
				log_label_moved(m, l->name, from, l->version, &who);
			}
		} else {
			ro->pending_logged[ro->n_pending] = false;
			ro->pending[ro->n_pending++] = *l;
		}
	}
	for (size_t i = 0; i < old->n_labels; i++)
		if (!label_find(cfg, old->labels[i].name)) {
			es_counter_add(ro->m_label_moves, 1);
			es_actor who = { "config", NULL };
			log_label_moved(m, old->labels[i].name, old->labels[i].version, 0, &who);
		}
	settings_publish(ro, st);
	free(ro->cfg);
	ro->cfg = cfg;
	bool kill_changed = cfg_killed != ro->cfg_killed;
	ro->cfg_killed = cfg_killed;
	pthread_mutex_unlock(&ro->mu);
	pthread_mutex_unlock(&m->life_mu);
	free(t);

	es_actor who = { "config", NULL };
	if (!st->canary)
		set_killed(m, false, "", &who);
	else if (kill_changed)
		set_killed(m, cfg_killed, "kill_switch set in the configuration", &who);
	fraction_metric(m);
	es_logrec r;
	if (es_log_begin(&r, ES_LOG_INFO, "canary_updated")) {
		es_log_str(&r, "model", m->name);
		es_log_bool(&r, "canary", st->canary);
		if (st->canary) {
			es_log_int(&r, "version", canary_of(st));
			es_log_int(&r, "fraction_bp", st->fraction_bp);
		}
		es_log_bool(&r, "shadow", st->shadow);
		log_actor(&r, &who);
		es_log_end(&r);
	}
	return 0;
}

void es_rollout_sync(es_servable *m)
{
	es_rollout *ro = m->ro;
	if (!ro)
		return;
	pthread_mutex_lock(&m->life_mu);
	pthread_mutex_lock(&ro->mu);
	if (!ro->n_pending) {
		pthread_mutex_unlock(&ro->mu);
		pthread_mutex_unlock(&m->life_mu);
		return;
	}
	es_vtable *t = es_table_snapshot(m);
	es_rollout_settings *st = t ? settings_copy(ro) : NULL;
	bool moved = false;
	es_actor who = { "config", NULL };
	for (size_t i = 0; st && i < ro->n_pending;) {
		const ro_label *l = &ro->pending[i];
		bool present;
		if (snapshot_available(t, l->version, &present)) {
			int64_t from = label_version(st, l->name);
			label_put(st, l->name, l->version);
			es_counter_add(ro->m_label_moves, 1);
			log_label_moved(m, l->name, from, l->version, &who);
			moved = true;
			pending_drop(ro, l->name);
			continue;
		}
		if (!ro->pending_logged[i]) {
			ro->pending_logged[i] = true;
			es_logrec r;
			if (es_log_begin(&r, ES_LOG_ERROR, "label_unresolved")) {
				es_log_str(&r, "model", m->name);
				es_log_str(&r, "label", l->name);
				es_log_int(&r, "version", l->version);
				es_log_str(&r, "state", present ? es_version_state_name(state_in(t, l->version))
								: "absent");
				es_log_str(&r, "reason",
					   "the label's version is not AVAILABLE: the label stays unset until it is");
				es_log_end(&r);
			}
		}
		i++;
	}
	if (moved)
		settings_publish(ro, st);
	else
		free(st);
	pthread_mutex_unlock(&ro->mu);
	pthread_mutex_unlock(&m->life_mu);
	free(t);
}

void es_rollout_shadow_params(es_servable *m, es_shadow_params *out)
{
	if (!m->ro) {
		out->queue_size = DEFAULT_SHADOW_QUEUE;
		out->atol = DEFAULT_SHADOW_ATOL;
		out->rtol = DEFAULT_SHADOW_RTOL;
		out->inline_max_s = DEFAULT_SHADOW_INLINE_MAX_S;
		return;
	}
	*out = atomic_load(&m->ro->cur)->shadow_params;
}

/* ---- routing ------------------------------------------------------------------ */

/* Acquires a label's version; errors name the label. */
static int acquire_label(es_servable *m, const es_rollout_settings *st, const char *label,
			 es_version **out, es_error *err)
{
	const ro_label *l = label_find(st, label);
	if (!l)
		return es_error_set(err, ES_ENOTFOUND, "model '%s' has no label '%.64s'",
				    m->name, label);
	es_error e = { 0 };
	if (es_servable_acquire(m, l->version, out, &e))
		return es_error_set(err, ES_EUNAVAILABLE,
				    "model '%s' label '%s' points at version %lld, which is not available",
				    m->name, l->name, (long long)l->version);
	return 0;
}

int es_servable_route(es_servable *m, const es_route_in *in, es_route_out *out,
		      es_error *err)
{
	es_rollout *ro = m->ro;
	const es_rollout_settings *st = atomic_load(&ro->cur);
	int rc;
	out->version = NULL;
	out->shadow = NULL;
	out->arm = ES_ARM_DEFAULT;

	if (in->version) {
		out->arm = ES_ARM_PINNED;
		rc = es_servable_acquire(m, in->version, &out->version, err);
	} else if (in->label) {
		out->arm = ES_ARM_LABEL;
		rc = acquire_label(m, st, in->label, &out->version, err);
	} else if (st->canary) {
		int64_t cv = canary_of(st);
		bool to_canary = false;
		if (cv && st->fraction_bp > 0 && !atomic_load(&ro->killed)) {
			const char *key = in->user_key;
			size_t len = in->user_key_len;
			if ((!key || !len) && st->keyless_hash_id && in->request_id) {
				key = in->request_id;
				len = strlen(key);
			}
			if (key && len)
				to_canary = key_hash(st->salt, st->salt_len, key, len) % 10000u <
					    (uint64_t)st->fraction_bp;
		}
		/* a canary that is not AVAILABLE sends its share to stable */
		if (to_canary && !es_servable_acquire(m, cv, &out->version, NULL)) {
			out->arm = ES_ARM_CANARY;
			rc = 0;
		} else {
			out->arm = ES_ARM_STABLE;
			rc = es_servable_acquire_stable(m, label_version(st, "stable"), cv,
							&out->version, err);
		}
	} else {
		rc = es_servable_acquire(m, 0, &out->version, err);
	}
	if (rc)
		return rc;

	int64_t sv = shadow_of(st);
	if (sv && st->shadow_fraction_bp > 0 && sv != out->version->number &&
	    shadow_draw() < st->shadow_fraction_bp &&
	    !es_servable_acquire(m, sv, &out->shadow, NULL))
		es_rollout_shadow_event(m, sv, ES_SHADOW_SAMPLED);
	return 0;
}

void es_servable_user_key_source(es_servable *m, char *header, size_t hcap, char *param,
				 size_t pcap)
{
	const es_rollout_settings *st = atomic_load(&m->ro->cur);
	if (hcap)
		snprintf(header, hcap, "%s", st->canary ? st->user_header : "");
	if (pcap)
		snprintf(param, pcap, "%s", st->canary ? st->user_parameter : "");
}

/* ---- admin changes ----------------------------------------------------------- */

/* Checks (caller holds life_mu) that version is AVAILABLE; errors name what. */
static int check_available(es_servable *m, int64_t version, const char *what, es_error *err)
{
	es_vtable *t = es_table_snapshot(m);
	if (!t)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	bool present;
	int rc = 0;
	if (!snapshot_available(t, version, &present)) {
		if (!present)
			rc = es_error_set(err, ES_ENOTFOUND,
					  "model '%s' has no version %lld (%s)", m->name,
					  (long long)version, what);
		else
			for (size_t i = 0; i < t->n; i++)
				if (t->e[i].number == version)
					rc = es_error_set(err, ES_EUNAVAILABLE,
							  "model '%s' version %lld is not available (state %s): %s",
							  m->name, (long long)version,
							  es_version_state_name(t->e[i].state), what);
	}
	free(t);
	return rc;
}

int es_servable_set_label(es_servable *m, const char *label, int64_t version,
			  const es_actor *who, es_error *err)
{
	es_rollout *ro = m->ro;
	char what[128];
	if (!label_name_ok(label))
		return es_error_set(err, ES_EINVAL,
				    "label '%.64s' is not valid (expected [A-Za-z0-9_]+, at most %d characters)",
				    label ? label : "", LABEL_MAX - 1);
	if (version < 0)
		return es_error_set(err, ES_EINVAL,
				    "label '%s': version must be >= 1 (or 0 to remove it), got %lld",
				    label, (long long)version);
	snprintf(what, sizeof(what), "label '%s' may only point at an AVAILABLE version", label);
	pthread_mutex_lock(&m->life_mu);
	int rc = version ? check_available(m, version, what, err) : 0;
	if (rc) {
		pthread_mutex_unlock(&m->life_mu);
		return rc;
	}
	pthread_mutex_lock(&ro->mu);
	const es_rollout_settings *cur = atomic_load(&ro->cur);
	int64_t from = label_version(cur, label);
	if (!version && !from) {
		rc = es_error_set(err, ES_ENOTFOUND, "model '%s' has no label '%s'", m->name, label);
	} else if (version && !from && cur->n_labels >= ES_MAX_LABELS) {
		rc = es_error_set(err, ES_ETOOLARGE,
				  "model '%s' has %d labels already, the most allowed", m->name,
				  ES_MAX_LABELS);
	} else if (from != version) {
		es_rollout_settings *st = settings_copy(ro);
		if (!st) {
			rc = es_error_set(err, ES_ENOMEM, "out of memory");
		} else {
			label_put(st, label, version);
			settings_publish(ro, st);
		}
	}
	/* an operator's choice replaces a configured label still waiting */
	if (!rc)
		pending_drop(ro, label);
	pthread_mutex_unlock(&ro->mu);
	pthread_mutex_unlock(&m->life_mu);
	if (!rc && from != version) {
		es_counter_add(ro->m_label_moves, 1);
		log_label_moved(m, label, from, version, who);
	}
	return rc;
}

int es_servable_canary_update(es_servable *m, const es_canary_update *u,
			      const es_actor *who, es_error *err)
{
	es_rollout *ro = m->ro;
	int rc = 0;
	if (u->set_fraction && (u->fraction_bp < 0 || u->fraction_bp > 10000))
		return es_error_set(err, ES_EINVAL,
				    "fraction_bp: expected 0..10000 basis points, got %d",
				    u->fraction_bp);
	if (u->set_version && u->version < 1)
		return es_error_set(err, ES_EINVAL, "canary version: expected >= 1, got %lld",
				    (long long)u->version);
	pthread_mutex_lock(&m->life_mu);
	pthread_mutex_lock(&ro->mu);
	const es_rollout_settings *cur = atomic_load(&ro->cur);
	int64_t old_version = canary_of(cur);
	int old_fraction = cur->fraction_bp;
	if (!cur->canary) {
		rc = es_error_set(err, ES_EINVAL,
				  "model '%s' has no canary configured (add \"canary\" to its config)",
				  m->name);
	} else if (u->set_version) {
		rc = check_available(m, u->version,
				     "a canary may only be an AVAILABLE version", err);
	}
	es_rollout_settings *st = NULL;
	if (!rc && (u->set_fraction || u->set_version)) {
		st = settings_copy(ro);
		if (!st) {
			rc = es_error_set(err, ES_ENOMEM, "out of memory");
		} else {
			if (u->set_fraction)
				st->fraction_bp = u->fraction_bp;
			if (u->set_version) {
				st->canary_version = u->version;
				st->canary_label[0] = '\0';
			}
			settings_publish(ro, st);
		}
	}
	int64_t new_version = canary_of(atomic_load(&ro->cur));
	int new_fraction = atomic_load(&ro->cur)->fraction_bp;
	pthread_mutex_unlock(&ro->mu);
	pthread_mutex_unlock(&m->life_mu);
	if (rc)
		return rc;

	if (new_version != old_version) {
		/* statistics of another version say nothing of this one */
		es_window_clear(&ro->arms[ES_ARM_CANARY]);
		es_window_clear(&ro->divergence);
	}
	if (u->set_killed) {
		char reason[256];
		snprintf(reason, sizeof(reason), "killed by %s%s%s",
			 who && who->who ? who->who : "server",
			 who && who->remote ? " from " : "", who && who->remote ? who->remote : "");
		set_killed(m, u->killed, reason, who);
	}
	fraction_metric(m);
	es_logrec r;
	if (es_log_begin(&r, ES_LOG_INFO, "canary_updated")) {
		es_log_str(&r, "model", m->name);
		es_log_int(&r, "version_from", old_version);
		es_log_int(&r, "version", new_version);
		es_log_int(&r, "fraction_bp_from", old_fraction);
		es_log_int(&r, "fraction_bp", new_fraction);
		es_log_bool(&r, "killed", atomic_load(&ro->killed));
		log_actor(&r, who);
		es_log_end(&r);
	}
	return 0;
}

/* ---- statistics ----------------------------------------------------------------- */

void es_rollout_record(es_servable *m, es_arm arm, bool ok, double latency_s)
{
	es_rollout *ro = m->ro;
	if (!ro || (unsigned)arm >= ES_ARM_COUNT)
		return;
	es_window_add(&ro->arms[arm], es_now_ns(), !ok, true, latency_s);
}

void es_rollout_shadow_event(es_servable *m, int64_t shadow_version, es_shadow_event ev)
{
	es_rollout *ro = m->ro;
	if (!ro)
		return;
	switch (ev) {
	case ES_SHADOW_SAMPLED: atomic_fetch_add(&ro->sh_sampled, 1); return;
	case ES_SHADOW_DROPPED: atomic_fetch_add(&ro->sh_dropped, 1); return;
	case ES_SHADOW_FAILED: atomic_fetch_add(&ro->sh_failed, 1); return;
	case ES_SHADOW_MATCHED: atomic_fetch_add(&ro->sh_matched, 1); break;
	case ES_SHADOW_DIVERGED: atomic_fetch_add(&ro->sh_diverged, 1); break;
	}
	/* only pairs that ran the canary count for its divergence guard */
	const es_rollout_settings *st = atomic_load(&ro->cur);
	int64_t cv = canary_of(st);
	if (cv && cv == shadow_version)
		es_window_add(&ro->divergence, es_now_ns(), ev == ES_SHADOW_DIVERGED, false, 0);
}

static void arm_report(es_window *w, uint64_t now, es_arm_report *a)
{
	es_window_stats ws;
	es_window_read(w, now, 0, &ws);
	a->requests = ws.count;
	a->errors = ws.errors;
	a->error_rate = ws.count ? (double)ws.errors / (double)ws.count : 0;
	a->p50_s = es_window_quantile(&ws, 0.50);
	a->p95_s = es_window_quantile(&ws, 0.95);
	a->p99_s = es_window_quantile(&ws, 0.99);
}

int es_servable_rollout_report(es_servable *m, es_rollout_report *out)
{
	es_rollout *ro = m->ro;
	const es_rollout_settings *st = atomic_load(&ro->cur);
	uint64_t now = es_now_ns();
	memset(out, 0, sizeof(*out));
	out->n_labels = st->n_labels;
	for (size_t i = 0; i < st->n_labels; i++) {
		snprintf(out->label_names[i], sizeof(out->label_names[i]), "%s",
			 st->labels[i].name);
		out->label_versions[i] = st->labels[i].version;
	}
	out->canary = st->canary;
	out->fraction_bp = st->fraction_bp;
	pthread_mutex_lock(&ro->kill_mu);
	out->killed = atomic_load(&ro->killed);
	snprintf(out->kill_reason, sizeof(out->kill_reason), "%s", ro->kill_reason);
	pthread_mutex_unlock(&ro->kill_mu);
	pthread_mutex_lock(&ro->mu);
	out->window_s = ro->window_s;
	pthread_mutex_unlock(&ro->mu);
	for (int a = 0; a < ES_ARM_COUNT; a++)
		arm_report(&ro->arms[a], now, &out->arms[a]);
	int64_t cv = canary_of(st);
	out->arms[ES_ARM_DEFAULT].version = es_servable_default_version(m);
	if (st->canary) {
		es_version *v = NULL;
		if (!es_servable_acquire_stable(m, label_version(st, "stable"), cv, &v, NULL)) {
			out->arms[ES_ARM_STABLE].version = v->number;
			es_version_release(v);
		}
		out->arms[ES_ARM_CANARY].version = cv && es_servable_ready(m, cv) ? cv : 0;
	}
	out->shadow = st->shadow;
	out->shadow_version = shadow_of(st);
	out->shadow_fraction_bp = st->shadow_fraction_bp;
	out->shadow_sampled = atomic_load(&ro->sh_sampled);
	out->shadow_compared = atomic_load(&ro->sh_matched) + atomic_load(&ro->sh_diverged);
	out->shadow_divergent = atomic_load(&ro->sh_diverged);
	out->shadow_dropped = atomic_load(&ro->sh_dropped);
	return 0;
}

/* ---- guard rails ------------------------------------------------------------------ */

/* Checks one model's canary against its guard rails; trips the kill switch
 * when a threshold is crossed (returns true then). */
static bool guard_check(es_servable *m, uint64_t now)
{
	es_rollout *ro = m->ro;
	if (!ro || atomic_load(&ro->killed))
		return false;
	const es_rollout_settings *st = atomic_load(&ro->cur);
	const es_guard_config *g = &st->guard;
	int64_t cv = canary_of(st);
	if (!st->canary || !cv)
		return false;
	if (g->max_error_rate <= 0 && g->max_p95_ratio <= 0 && g->max_divergence_rate <= 0)
		return false;
	es_window_stats c, s, d;
	es_window_read(&ro->arms[ES_ARM_CANARY], now, g->window_s, &c);
	const char *reason = NULL;
	double value = 0, threshold = 0;
	uint64_t samples = 0;
	if (c.count >= (uint64_t)g->min_samples) {
		double er = (double)c.errors / (double)c.count;
		if (g->max_error_rate > 0 && er > g->max_error_rate) {
			reason = "error_rate";
			value = er;
			threshold = g->max_error_rate;
			samples = c.count;
		}
		if (!reason && g->max_p95_ratio > 0) {
			es_window_read(&ro->arms[ES_ARM_STABLE], now, g->window_s, &s);
			double cp = es_window_quantile(&c, 0.95), sp = es_window_quantile(&s, 0.95);
			if (s.count >= (uint64_t)g->min_samples && sp > 0 &&
			    cp / sp > g->max_p95_ratio) {
				reason = "p95_ratio";
				value = cp / sp;
				threshold = g->max_p95_ratio;
				samples = c.count;
			}
		}
	}
	if (!reason && g->max_divergence_rate > 0) {
		es_window_read(&ro->divergence, now, g->window_s, &d);
		double dr = d.count ? (double)d.errors / (double)d.count : 0;
		if (d.count >= (uint64_t)g->min_samples && dr > g->max_divergence_rate) {
			reason = "divergence_rate";
			value = dr;
			threshold = g->max_divergence_rate;
			samples = d.count;
		}
	}
	if (!reason)
		return false;
	char why[256];
	snprintf(why, sizeof(why),
		 "guard rail: %s %.4g > %.4g over %d s (%llu samples) on canary version %lld",
		 reason, value, threshold, g->window_s, (unsigned long long)samples,
		 (long long)cv);
	es_actor who = { "guard", NULL };
	if (!set_killed(m, true, why, &who))
		return false; /* someone else killed it meanwhile */
	fraction_metric(m);
	es_server *srv = m->srv;
	if (srv->f_guard_trips) {
		const char *labels[] = { m->name, reason, NULL };
		es_counter_add(es_metric_get(srv->f_guard_trips, labels), 1);
	}
	es_logrec r;
	if (es_log_begin(&r, ES_LOG_ERROR, "guard_tripped")) {
		es_log_str(&r, "model", m->name);
		es_log_int(&r, "canary_version", cv);
		es_log_str(&r, "reason", reason);
		es_log_f64(&r, "value", value);
		es_log_f64(&r, "threshold", threshold);
		es_log_int(&r, "samples", (int64_t)samples);
		es_log_int(&r, "window_s", g->window_s);
		es_log_end(&r);
	}
	return true;
}

bool es_rollout_guard_check(es_servable *m)
{
	return guard_check(m, es_now_ns());
}

static void *guard_main(void *arg)
{
	es_server *s = arg;
	pthread_mutex_lock(&s->guard_mu);
	while (!s->guard_stop) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += 1;
		while (!s->guard_stop)
			if (pthread_cond_timedwait(&s->guard_cv, &s->guard_mu, &ts) == ETIMEDOUT)
				break;
		if (s->guard_stop)
			break;
		pthread_mutex_unlock(&s->guard_mu);
		const es_model_list *l = es_server_models(s);
		uint64_t now = es_now_ns();
		for (size_t i = 0; i < l->n; i++)
			guard_check(l->m[i], now);
		pthread_mutex_lock(&s->guard_mu);
	}
	pthread_mutex_unlock(&s->guard_mu);
	return NULL;
}

int es_rollout_start(es_server *s, es_error *err)
{
	pthread_condattr_t a;
	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_mutex_init(&s->guard_mu, NULL);
	pthread_cond_init(&s->guard_cv, &a);
	pthread_condattr_destroy(&a);
	s->guard_sync_ready = true;
	s->guard_stop = false;
	if (pthread_create(&s->guard, NULL, guard_main, s))
		return es_error_set(err, ES_ENOMEM, "cannot start the canary guard-rail thread");
	s->guard_started = true;
	return 0;
}

void es_rollout_stop(es_server *s)
{
	if (!s->guard_sync_ready)
		return;
	if (s->guard_started) {
		pthread_mutex_lock(&s->guard_mu);
		s->guard_stop = true;
		pthread_cond_broadcast(&s->guard_cv);
		pthread_mutex_unlock(&s->guard_mu);
		pthread_join(s->guard, NULL);
		s->guard_started = false;
	}
	pthread_mutex_destroy(&s->guard_mu);
	pthread_cond_destroy(&s->guard_cv);
	s->guard_sync_ready = false;
}
