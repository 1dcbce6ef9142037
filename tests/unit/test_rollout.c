/* Rollouts below HTTP: arm choice by user hash, the kill switch, labels,
 * the stable arm, shadow sampling, sliding windows and percentiles, guard
 * rails and the report. The model repository is tests/data/serving/repo/
 * multi with the "all" policy: versions 1 and 2 load, 3 is not an ONNX file
 * and stays FAILED, so the default version is 2. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "obs/log.h"
#include "obs/metrics.h"
#include "serving/serving.h"
#include "serving/serving_int.h"
#include "serving/window.h"
#include "support/serving_fixture.h"

#define REPO ES_TEST_SERVING_REPO "/multi"

static const es_actor TEST_ACTOR = { "test", "127.0.0.1" };

/* ---- fixture ---------------------------------------------------------------- */

typedef es_test_server fixture;

/* Model "m" of REPO, every version; returns it to be changed before fx_start. */
static es_model_config *fx_init(fixture *fx)
{
	es_test_server_init(fx, NULL);
	es_model_config *mc = es_test_cfg_driven_model(&fx->cfg, REPO);
	mc->policy.kind = ES_POLICY_ALL;
	return mc;
}

static void set_canary(es_model_config *mc, int64_t version, int fraction_bp)
{
	mc->canary.enabled = true;
	mc->canary.version = version;
	mc->canary.fraction_bp = fraction_bp;
}

static void add_label(es_model_config *mc, const char *name, int64_t version)
{
	mc->labels = realloc(mc->labels, (mc->n_labels + 1) * sizeof(*mc->labels));
	assert_non_null(mc->labels);
	mc->labels[mc->n_labels].name = strdup(name);
	mc->labels[mc->n_labels].version = version;
	mc->n_labels++;
}

static void fx_start(fixture *fx)
{
	es_test_server_start(fx, "m");
	assert_true(es_servable_ready(fx->m, 1));
	assert_true(es_servable_ready(fx->m, 2));
	assert_int_equal(es_servable_default_version(fx->m), 2);
}

/* Routes one request; returns its arm, *version the version number. */
static es_arm route(fixture *fx, const char *key, int64_t *version)
{
	es_route_in in = { 0 };
	es_route_out out;
	es_error err = { 0 };
	in.user_key = key;
	in.user_key_len = key ? strlen(key) : 0;
	int rc = es_servable_route(fx->m, &in, &out, &err);
	if (rc)
		fail_msg("route: %d %s", rc, err.msg);
	if (version)
		*version = es_version_number(out.version);
	es_version_release(out.version);
	es_version_release(out.shadow);
	return out.arm;
}

static void canary_update(fixture *fx, es_canary_update u)
{
	es_error err = { 0 };
	int rc = es_servable_canary_update(fx->m, &u, &TEST_ACTOR, &err);
	if (rc)
		fail_msg("canary update: %d %s", rc, err.msg);
}

/* ---- arms --------------------------------------------------------------------- */

static void test_arm_names(void **state)
{
	(void)state;
	assert_string_equal(es_arm_name(ES_ARM_DEFAULT), "default");
	assert_string_equal(es_arm_name(ES_ARM_STABLE), "stable");
	assert_string_equal(es_arm_name(ES_ARM_CANARY), "canary");
	assert_string_equal(es_arm_name(ES_ARM_PINNED), "pinned");
	assert_string_equal(es_arm_name(ES_ARM_LABEL), "label");
}

static void test_no_canary_default_and_pinned(void **state)
{
	(void)state;
	fixture fx;
	fx_init(&fx);
	fx_start(&fx);
	int64_t v = 0;
	assert_int_equal(route(&fx, "alice", &v), ES_ARM_DEFAULT);
	assert_int_equal(v, 2);

	es_route_in in = { .version = 1 };
	es_route_out out;
	es_error err = { 0 };
	assert_int_equal(es_servable_route(fx.m, &in, &out, &err), 0);
	assert_int_equal(out.arm, ES_ARM_PINNED);
	assert_int_equal(es_version_number(out.version), 1);
	assert_null(out.shadow);
	es_version_release(out.version);
	/* a pinned version that is not AVAILABLE: as es_servable_acquire */
	in.version = 3;
	assert_int_equal(es_servable_route(fx.m, &in, &out, &err), ES_EUNAVAILABLE);
	in.version = 9;
	assert_int_equal(es_servable_route(fx.m, &in, &out, &err), ES_ENOTFOUND);

	char header[64], param[64];
	es_servable_user_key_source(fx.m, header, sizeof(header), param, sizeof(param));
	assert_string_equal(header, "");
	assert_string_equal(param, "");
	/* no canary: updates are refused */
	es_canary_update u = { .set_fraction = true, .fraction_bp = 10 };
	assert_int_equal(es_servable_canary_update(fx.m, &u, &TEST_ACTOR, &err), ES_EINVAL);
	assert_non_null(strstr(err.msg, "model 'm' has no canary configured"));
	es_test_server_free(&fx);
}

/* Share of 10,000 distinct keys on the canary, in basis points. */
static int canary_share_bp(fixture *fx)
{
	int canary = 0;
	char key[32];
	for (int i = 0; i < 10000; i++) {
		snprintf(key, sizeof(key), "user-%d", i);
		int64_t v;
		es_arm a = route(fx, key, &v);
		assert_true(a == ES_ARM_CANARY || a == ES_ARM_STABLE);
		assert_int_equal(v, a == ES_ARM_CANARY ? 2 : 1);
		canary += a == ES_ARM_CANARY;
	}
	return canary;
}

static void test_hash_split(void **state)
{
	(void)state;
	fixture fx;
	set_canary(fx_init(&fx), 2, 100);
	fx_start(&fx);
	char header[64], param[64];
	es_servable_user_key_source(fx.m, header, sizeof(header), param, sizeof(param));
	assert_string_equal(header, "X-User-Id");
	assert_string_equal(param, "user_id");

	static const int fractions[] = { 100, 500, 5000 };
	for (size_t f = 0; f < 3; f++) {
		canary_update(&fx, (es_canary_update){ .set_fraction = true,
						       .fraction_bp = fractions[f] });
		int share = canary_share_bp(&fx);
		if (abs(share - fractions[f]) > 100)
			fail_msg("fraction %d bp: %d of 10000 keys on the canary", fractions[f],
				 share);
	}
	/* the same key always gets the same arm */
	char key[32];
	for (int i = 0; i < 200; i++) {
		snprintf(key, sizeof(key), "sticky-%d", i);
		es_arm first = route(&fx, key, NULL);
		for (int k = 0; k < 5; k++)
			assert_int_equal(route(&fx, key, NULL), first);
	}
	/* keys keep their arm as the fraction grows: a canary user stays one */
	canary_update(&fx, (es_canary_update){ .set_fraction = true, .fraction_bp = 1000 });
	int was_canary[1000];
	for (int i = 0; i < 1000; i++) {
		snprintf(key, sizeof(key), "grow-%d", i);
		was_canary[i] = route(&fx, key, NULL) == ES_ARM_CANARY;
	}
	canary_update(&fx, (es_canary_update){ .set_fraction = true, .fraction_bp = 3000 });
	for (int i = 0; i < 1000; i++) {
		snprintf(key, sizeof(key), "grow-%d", i);
		if (was_canary[i])
			assert_int_equal(route(&fx, key, NULL), ES_ARM_CANARY);
	}
	/* fractions outside 0..10000 are refused */
	es_error err = { 0 };
	es_canary_update bad = { .set_fraction = true, .fraction_bp = 10001 };
	assert_int_equal(es_servable_canary_update(fx.m, &bad, &TEST_ACTOR, &err), ES_EINVAL);
	assert_non_null(strstr(err.msg, "fraction_bp: expected 0..10000 basis points, got 10001"));
	es_test_server_free(&fx);
}

static void test_salt_changes_assignment(void **state)
{
	(void)state;
	fixture a, b;
	set_canary(fx_init(&a), 2, 5000);
	es_model_config *mb = fx_init(&b);
	set_canary(mb, 2, 5000);
	mb->canary.salt = strdup("another experiment");
	fx_start(&a);
	fx_start(&b);
	int differ = 0;
	char key[32];
	for (int i = 0; i < 1000; i++) {
		snprintf(key, sizeof(key), "user-%d", i);
		differ += route(&a, key, NULL) != route(&b, key, NULL);
	}
	/* independent halves: about 500 keys differ */
	assert_in_range(differ, 350, 650);
	es_test_server_free(&a);
	es_test_server_free(&b);
}

static void test_keyless(void **state)
{
	(void)state;
	fixture fx;
	set_canary(fx_init(&fx), 2, 10000);
	fx_start(&fx);
	/* no key: stable, even at 100 % */
	assert_int_equal(route(&fx, NULL, NULL), ES_ARM_STABLE);
	assert_int_equal(route(&fx, "", NULL), ES_ARM_STABLE);
	es_test_server_free(&fx);

	es_model_config *mc = fx_init(&fx);
	set_canary(mc, 2, 5000);
	mc->canary.keyless_hash_id = true;
	fx_start(&fx);
	int canary = 0;
	char id[32];
	for (int i = 0; i < 1000; i++) {
		snprintf(id, sizeof(id), "req-%d", i);
		es_route_in in = { .request_id = id };
		es_route_out out;
		es_error err = { 0 };
		assert_int_equal(es_servable_route(fx.m, &in, &out, &err), 0);
		canary += out.arm == ES_ARM_CANARY;
		es_version_release(out.version);
	}
	assert_in_range(canary, 400, 600);
	es_test_server_free(&fx);
}

static void test_kill_switch(void **state)
{
	(void)state;
	fixture fx;
	set_canary(fx_init(&fx), 2, 10000);
	fx_start(&fx);
	static const char *const mo[] = { "model", NULL };
	const char *mv[] = { "m", NULL };
	assert_int_equal(route(&fx, "alice", NULL), ES_ARM_CANARY);
	assert_true(es_test_metric(&fx, "gauge", "edgeserve_canary_fraction_bp", mo, mv) == 10000);

	canary_update(&fx, (es_canary_update){ .set_killed = true, .killed = true });
	/* the very next request */
	int64_t v;
	assert_int_equal(route(&fx, "alice", &v), ES_ARM_STABLE);
	assert_int_equal(v, 1);
	es_rollout_report rep;
	assert_int_equal(es_servable_rollout_report(fx.m, &rep), 0);
	assert_true(rep.killed);
	assert_non_null(strstr(rep.kill_reason, "killed by test from 127.0.0.1"));
	assert_true(es_test_metric(&fx, "gauge", "edgeserve_canary_killed", mo, mv) == 1);
	assert_true(es_test_metric(&fx, "gauge", "edgeserve_canary_fraction_bp", mo, mv) == 0);

	canary_update(&fx, (es_canary_update){ .set_killed = true, .killed = false });
	assert_int_equal(route(&fx, "alice", NULL), ES_ARM_CANARY);
	assert_int_equal(es_servable_rollout_report(fx.m, &rep), 0);
	assert_false(rep.killed);
	assert_string_equal(rep.kill_reason, "");
	assert_true(es_test_metric(&fx, "gauge", "edgeserve_canary_killed", mo, mv) == 0);
	es_test_server_free(&fx);

	/* "kill_switch": true in the configuration starts killed */
	es_model_config *mc = fx_init(&fx);
	set_canary(mc, 2, 10000);
	mc->canary.killed = true;
	fx_start(&fx);
	assert_int_equal(route(&fx, "alice", NULL), ES_ARM_STABLE);
	assert_int_equal(es_servable_rollout_report(fx.m, &rep), 0);
	assert_true(rep.killed);
	assert_non_null(strstr(rep.kill_reason, "configuration"));
	es_test_server_free(&fx);
}

static void test_stable_never_the_canary(void **state)
{
	(void)state;
	fixture fx;
	/* the canary is the default (newest) version: stable is the highest
	 * other AVAILABLE version */
	es_model_config *mc = fx_init(&fx);
	set_canary(mc, 2, 0);
	add_label(mc, "stable", 2); /* even a "stable" label on it is passed over */
	fx_start(&fx);
	int64_t v;
	for (int i = 0; i < 20; i++) {
		char key[16];
		snprintf(key, sizeof(key), "k%d", i);
		assert_int_equal(route(&fx, key, &v), ES_ARM_STABLE);
		assert_int_equal(v, 1);
	}
	es_rollout_report rep;
	assert_int_equal(es_servable_rollout_report(fx.m, &rep), 0);
	assert_int_equal(rep.arms[ES_ARM_STABLE].version, 1);
	assert_int_equal(rep.arms[ES_ARM_CANARY].version, 2);
	es_test_server_free(&fx);

	/* an older canary: stable is the default */
	set_canary(fx_init(&fx), 1, 0);
	fx_start(&fx);
	assert_int_equal(route(&fx, "x", &v), ES_ARM_STABLE);
	assert_int_equal(v, 2);
	/* a canary version that is not AVAILABLE sends its share to stable */
	canary_update(&fx, (es_canary_update){ .set_fraction = true, .fraction_bp = 10000 });
	assert_int_equal(route(&fx, "x", &v), ES_ARM_CANARY);
	assert_int_equal(v, 1);
	es_error err = { 0 };
	es_canary_update u = { .set_version = true, .version = 3 };
	assert_int_equal(es_servable_canary_update(fx.m, &u, &TEST_ACTOR, &err), ES_EUNAVAILABLE);
	assert_non_null(strstr(err.msg, "version 3 is not available (state FAILED)"));
	u.version = 9;
	assert_int_equal(es_servable_canary_update(fx.m, &u, &TEST_ACTOR, &err), ES_ENOTFOUND);
	u.version = 2;
	canary_update(&fx, u);
	assert_int_equal(route(&fx, "x", &v), ES_ARM_CANARY);
	assert_int_equal(v, 2);
	es_test_server_free(&fx);
}

static void test_labels(void **state)
{
	(void)state;
	fixture fx;
	es_model_config *mc = fx_init(&fx);
	add_label(mc, "stable", 1);
	add_label(mc, "later", 3); /* FAILED: logged and left unset */
	fx_start(&fx);
	static const char *const mo[] = { "model", NULL };
	const char *mv[] = { "m", NULL };
	es_rollout_report rep;
	assert_int_equal(es_servable_rollout_report(fx.m, &rep), 0);
	assert_int_equal(rep.n_labels, 1);
	assert_string_equal(rep.label_names[0], "stable");
	assert_int_equal(rep.label_versions[0], 1);
	double moves = es_test_metric(&fx, "counter", "edgeserve_label_moves_total", mo, mv);
	assert_true(moves == 1);

	es_route_in in = { .label = "stable" };
	es_route_out out;
	es_error err = { 0 };
	assert_int_equal(es_servable_route(fx.m, &in, &out, &err), 0);
	assert_int_equal(out.arm, ES_ARM_LABEL);
	assert_int_equal(es_version_number(out.version), 1);
	es_version_release(out.version);
	in.label = "later";
	assert_int_equal(es_servable_route(fx.m, &in, &out, &err), ES_ENOTFOUND);
	assert_non_null(strstr(err.msg, "model 'm' has no label 'later'"));

	/* moves take effect on the next request */
	assert_int_equal(es_servable_set_label(fx.m, "beta", 2, &TEST_ACTOR, &err), 0);
	in.label = "beta";
	assert_int_equal(es_servable_route(fx.m, &in, &out, &err), 0);
	assert_int_equal(es_version_number(out.version), 2);
	es_version_release(out.version);
	assert_int_equal(es_servable_set_label(fx.m, "beta", 1, &TEST_ACTOR, &err), 0);
	assert_int_equal(es_servable_route(fx.m, &in, &out, &err), 0);
	assert_int_equal(es_version_number(out.version), 1);
	es_version_release(out.version);
	assert_true(es_test_metric(&fx, "counter", "edgeserve_label_moves_total", mo, mv) == 3);

	/* refused: nothing changes */
	assert_int_equal(es_servable_set_label(fx.m, "beta", 3, &TEST_ACTOR, &err), ES_EUNAVAILABLE);
	assert_non_null(strstr(err.msg, "version 3 is not available (state FAILED)"));
	assert_non_null(strstr(err.msg, "label 'beta'"));
	assert_int_equal(es_servable_set_label(fx.m, "beta", 9, &TEST_ACTOR, &err), ES_ENOTFOUND);
	assert_non_null(strstr(err.msg, "model 'm' has no version 9"));
	assert_int_equal(es_servable_set_label(fx.m, "be-ta", 1, &TEST_ACTOR, &err), ES_EINVAL);
	assert_non_null(strstr(err.msg, "label 'be-ta' is not valid"));
	assert_int_equal(es_servable_set_label(fx.m, "beta", -1, &TEST_ACTOR, &err), ES_EINVAL);
	assert_int_equal(es_servable_route(fx.m, &in, &out, &err), 0);
	assert_int_equal(es_version_number(out.version), 1);
	es_version_release(out.version);
	assert_true(es_test_metric(&fx, "counter", "edgeserve_label_moves_total", mo, mv) == 3);

	/* removal */
	assert_int_equal(es_servable_set_label(fx.m, "beta", 0, &TEST_ACTOR, &err), 0);
	assert_int_equal(es_servable_route(fx.m, &in, &out, &err), ES_ENOTFOUND);
	assert_int_equal(es_servable_set_label(fx.m, "beta", 0, &TEST_ACTOR, &err), ES_ENOTFOUND);

	/* the "stable" label chooses the stable arm of a canary */
	es_test_server_free(&fx);
	mc = fx_init(&fx);
	add_label(mc, "stable", 1);
	add_label(mc, "canary", 2);
	set_canary(mc, 0, 10000);
	mc->canary.label = strdup("canary");
	fx_start(&fx);
	int64_t v;
	assert_int_equal(route(&fx, "u", &v), ES_ARM_CANARY);
	assert_int_equal(v, 2);
	/* the canary follows its label */
	assert_int_equal(es_servable_set_label(fx.m, "canary", 1, &TEST_ACTOR, &err), 0);
	assert_int_equal(route(&fx, "u", &v), ES_ARM_CANARY);
	assert_int_equal(v, 1);
	/* now the canary is 1, "stable" on 1 is passed over: the default, 2 */
	assert_int_equal(es_servable_set_label(fx.m, "stable", 1, &TEST_ACTOR, &err), 0);
	canary_update(&fx, (es_canary_update){ .set_killed = true, .killed = true });
	assert_int_equal(route(&fx, "u", &v), ES_ARM_STABLE);
	assert_int_equal(v, 2);
	es_test_server_free(&fx);
}

static void test_shadow_sampling(void **state)
{
	(void)state;
	fixture fx;
	es_model_config *mc = fx_init(&fx);
	mc->shadow.enabled = true;
	mc->shadow.version = 1;
	mc->shadow.fraction_bp = 10000;
	mc->shadow.queue_size = 5;
	mc->shadow.atol = 0.25;
	mc->shadow.rtol = 0;
	fx_start(&fx);
	es_shadow_params sp;
	es_rollout_shadow_params(fx.m, &sp);
	assert_int_equal(sp.queue_size, 5);
	assert_true(sp.atol == 0.25 && sp.rtol == 0);

	es_route_in in = { 0 };
	es_route_out out;
	es_error err = { 0 };
	assert_int_equal(es_servable_route(fx.m, &in, &out, &err), 0);
	assert_int_equal(es_version_number(out.version), 2);
	assert_non_null(out.shadow);
	assert_int_equal(es_version_number(out.shadow), 1);
	es_version_release(out.version);
	es_version_release(out.shadow);
	/* never a shadow of the shadow version itself */
	in.version = 1;
	assert_int_equal(es_servable_route(fx.m, &in, &out, &err), 0);
	assert_null(out.shadow);
	es_version_release(out.version);

	es_rollout_shadow_event(fx.m, 1, ES_SHADOW_DROPPED);
	es_rollout_shadow_event(fx.m, 1, ES_SHADOW_MATCHED);
	es_rollout_shadow_event(fx.m, 1, ES_SHADOW_DIVERGED);
	es_rollout_shadow_event(fx.m, 1, ES_SHADOW_FAILED);
	es_rollout_report rep;
	assert_int_equal(es_servable_rollout_report(fx.m, &rep), 0);
	assert_true(rep.shadow);
	assert_int_equal(rep.shadow_version, 1);
	assert_int_equal(rep.shadow_fraction_bp, 10000);
	assert_int_equal(rep.shadow_sampled, 1);
	assert_int_equal(rep.shadow_dropped, 1);
	assert_int_equal(rep.shadow_compared, 2);
	assert_int_equal(rep.shadow_divergent, 1);
	es_test_server_free(&fx);

	/* sampling follows the fraction */
	mc = fx_init(&fx);
	mc->shadow.enabled = true;
	mc->shadow.version = 1;
	mc->shadow.fraction_bp = 2500;
	fx_start(&fx);
	int sampled = 0;
	for (int i = 0; i < 4000; i++) {
		es_route_in none = { 0 };
		assert_int_equal(es_servable_route(fx.m, &none, &out, &err), 0);
		sampled += out.shadow != NULL;
		es_version_release(out.version);
		es_version_release(out.shadow);
	}
	assert_in_range(sampled, 800, 1200);
	es_test_server_free(&fx);
}

/* ---- windows -------------------------------------------------------------------- */

static void test_window_buckets_and_quantiles(void **state)
{
	(void)state;
	assert_int_equal(es_window_bucket(0), 0);
	assert_int_equal(es_window_bucket(5e-6), 0);
	assert_int_equal(es_window_bucket(1e-5), 1);
	assert_int_equal(es_window_bucket(1e-4 * 1.0001), 9);
	assert_int_equal(es_window_bucket(1e3), ES_WINDOW_BUCKETS - 1);

	es_window w;
	assert_int_equal(es_window_init(&w, 0), ES_EINVAL);
	assert_int_equal(es_window_init(&w, 3), 0);
	uint64_t t0 = 1000ull * 1000000000ull;
	for (int i = 1; i <= 1000; i++)
		es_window_add(&w, t0, i % 10 == 0, true, i * 1e-4); /* 0.1 .. 100 ms */
	es_window_stats st;
	es_window_read(&w, t0, 0, &st);
	assert_int_equal(st.count, 1000);
	assert_int_equal(st.errors, 100);
	static const double qs[] = { 0.5, 0.95, 0.99 };
	for (int k = 0; k < 3; k++) {
		double want = qs[k] * 0.1, got = es_window_quantile(&st, qs[k]);
		if (got < want / 1.2 || got > want * 1.2)
			fail_msg("q%.2f: %g s, expected about %g s", qs[k], got, want);
	}
	/* the window slides: 3 s later those samples are gone */
	es_window_add(&w, t0 + 2000000000ull, false, true, 0.5);
	es_window_read(&w, t0 + 2000000000ull, 0, &st);
	assert_int_equal(st.count, 1001);
	es_window_read(&w, t0 + 2000000000ull, 1, &st); /* the last second only */
	assert_int_equal(st.count, 1);
	es_window_read(&w, t0 + 3000000000ull, 0, &st);
	assert_int_equal(st.count, 1);
	assert_true(es_window_quantile(&st, 0.5) > 0.4 && es_window_quantile(&st, 0.5) < 0.6);
	es_window_read(&w, t0 + 5000000000ull, 0, &st);
	assert_int_equal(st.count, 0);
	assert_true(es_window_quantile(&st, 0.5) == 0);
	/* the slot of t0 reused for t0 + 3 s starts empty (the sample of
	 * t0 + 2 s is still in the window) */
	es_window_add(&w, t0 + 3000000000ull, true, true, 1e-3);
	es_window_read(&w, t0 + 3000000000ull, 0, &st);
	assert_int_equal(st.count, 2);
	assert_int_equal(st.errors, 1);
	assert_int_equal(es_window_resize(&w, 10), 0);
	es_window_read(&w, t0 + 3000000000ull, 0, &st);
	assert_int_equal(st.count, 0);
	es_window_free(&w);
}

static void test_report_windows(void **state)
{
	(void)state;
	fixture fx;
	es_model_config *mc = fx_init(&fx);
	set_canary(mc, 2, 2500);
	mc->canary.guard.window_s = 60;
	add_label(mc, "stable", 1);
	fx_start(&fx);
	for (int i = 1; i <= 100; i++) {
		es_rollout_record(fx.m, ES_ARM_STABLE, true, i * 1e-3);
		es_rollout_record(fx.m, ES_ARM_CANARY, i <= 90, 2 * i * 1e-3);
	}
	es_rollout_record(fx.m, ES_ARM_PINNED, false, 0.5);
	es_rollout_record(fx.m, ES_ARM_COUNT, false, 0.5); /* ignored */
	es_rollout_report rep;
	assert_int_equal(es_servable_rollout_report(fx.m, &rep), 0);
	assert_true(rep.canary);
	assert_int_equal(rep.fraction_bp, 2500);
	assert_false(rep.killed);
	assert_int_equal(rep.window_s, 60);
	assert_int_equal(rep.n_labels, 1);
	assert_int_equal(rep.arms[ES_ARM_DEFAULT].version, 2);
	assert_int_equal(rep.arms[ES_ARM_STABLE].version, 1);
	assert_int_equal(rep.arms[ES_ARM_CANARY].version, 2);
	const es_arm_report *s = &rep.arms[ES_ARM_STABLE], *c = &rep.arms[ES_ARM_CANARY];
	assert_int_equal(s->requests, 100);
	assert_int_equal(s->errors, 0);
	assert_true(s->error_rate == 0);
	assert_int_equal(c->requests, 100);
	assert_int_equal(c->errors, 10);
	assert_true(c->error_rate > 0.0999 && c->error_rate < 0.1001);
	assert_true(s->p50_s > 0.05 / 1.2 && s->p50_s < 0.05 * 1.2);
	assert_true(s->p95_s > 0.095 / 1.2 && s->p95_s < 0.095 * 1.2);
	assert_true(s->p99_s > 0.099 / 1.2 && s->p99_s < 0.099 * 1.2);
	assert_true(c->p95_s > 0.19 / 1.2 && c->p95_s < 0.19 * 1.2);
	assert_int_equal(rep.arms[ES_ARM_PINNED].requests, 1);
	assert_int_equal(rep.arms[ES_ARM_PINNED].errors, 1);
	assert_int_equal(rep.arms[ES_ARM_LABEL].requests, 0);
	assert_false(rep.shadow);
	es_test_server_free(&fx);
}

/* ---- guard rails ------------------------------------------------------------------ */

static es_model_config *guarded(fixture *fx)
{
	es_model_config *mc = fx_init(fx);
	set_canary(mc, 2, 5000);
	mc->canary.guard.window_s = 5;
	mc->canary.guard.min_samples = 20;
	return mc;
}

static void test_guard_error_rate(void **state)
{
	(void)state;
	fixture fx;
	guarded(&fx)->canary.guard.max_error_rate = 0.2;
	fx_start(&fx);
	/* below min_samples: a 100 % error rate is not enough */
	for (int i = 0; i < 19; i++)
		es_rollout_record(fx.m, ES_ARM_CANARY, false, 1e-3);
	assert_false(es_rollout_guard_check(fx.m));
	es_rollout_report rep;
	assert_int_equal(es_servable_rollout_report(fx.m, &rep), 0);
	assert_false(rep.killed);
	/* the twentieth sample makes the burst count */
	es_rollout_record(fx.m, ES_ARM_CANARY, false, 1e-3);
	assert_true(es_rollout_guard_check(fx.m));
	assert_false(es_rollout_guard_check(fx.m)); /* once */
	assert_int_equal(es_servable_rollout_report(fx.m, &rep), 0);
	assert_true(rep.killed);
	assert_non_null(strstr(rep.kill_reason, "error_rate"));
	assert_int_equal(route(&fx, "anyone", NULL), ES_ARM_STABLE);
	/* the canary stays loaded for inspection */
	assert_true(es_servable_ready(fx.m, 2));
	static const char *const mr[] = { "model", "reason", NULL };
	const char *vals[] = { "m", "error_rate", NULL };
	assert_true(es_test_metric(&fx, "counter", "edgeserve_canary_guard_trips_total", mr, vals) == 1);
	static const char *const mo[] = { "model", NULL };
	const char *mv[] = { "m", NULL };
	assert_true(es_test_metric(&fx, "gauge", "edgeserve_canary_killed", mo, mv) == 1);

	/* re-arming starts from a clean canary window */
	canary_update(&fx, (es_canary_update){ .set_killed = true, .killed = false });
	assert_false(es_rollout_guard_check(fx.m));
	/* healthy traffic does not trip */
	for (int i = 0; i < 100; i++)
		es_rollout_record(fx.m, ES_ARM_CANARY, i % 10 != 0, 1e-3);
	assert_false(es_rollout_guard_check(fx.m));
	es_test_server_free(&fx);
}

static void test_guard_thread_trips(void **state)
{
	(void)state;
	fixture fx;
	guarded(&fx)->canary.guard.max_error_rate = 0.5;
	fx_start(&fx);
	for (int i = 0; i < 50; i++)
		es_rollout_record(fx.m, ES_ARM_CANARY, false, 1e-3);
	/* the thread checks once a second */
	uint64_t limit = es_now_ns() + ES_TEST_WAIT_LIMIT_NS;
	es_rollout_report rep;
	for (;;) {
		assert_int_equal(es_servable_rollout_report(fx.m, &rep), 0);
		if (rep.killed)
			break;
		if (es_now_ns() > limit)
			fail_msg("the guard thread did not trip the kill switch");
		/* poll the condition; the 5 s window keeps the burst meanwhile */
		nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
	}
	assert_non_null(strstr(rep.kill_reason, "error_rate"));
	es_test_server_free(&fx);
}

static void test_guard_p95_ratio(void **state)
{
	(void)state;
	fixture fx;
	guarded(&fx)->canary.guard.max_p95_ratio = 2;
	fx_start(&fx);
	for (int i = 0; i < 100; i++)
		es_rollout_record(fx.m, ES_ARM_CANARY, true, 10e-3);
	/* stable below min_samples: no comparison */
	for (int i = 0; i < 19; i++)
		es_rollout_record(fx.m, ES_ARM_STABLE, true, 1e-3);
	assert_false(es_rollout_guard_check(fx.m));
	es_rollout_record(fx.m, ES_ARM_STABLE, true, 1e-3);
	assert_true(es_rollout_guard_check(fx.m));
	es_rollout_report rep;
	assert_int_equal(es_servable_rollout_report(fx.m, &rep), 0);
	assert_non_null(strstr(rep.kill_reason, "p95_ratio"));
	es_test_server_free(&fx);

	guarded(&fx)->canary.guard.max_p95_ratio = 2;
	fx_start(&fx);
	for (int i = 0; i < 100; i++) {
		es_rollout_record(fx.m, ES_ARM_CANARY, true, 1.5e-3);
		es_rollout_record(fx.m, ES_ARM_STABLE, true, 1e-3);
	}
	assert_false(es_rollout_guard_check(fx.m));
	es_test_server_free(&fx);
}

static void test_guard_divergence(void **state)
{
	(void)state;
	fixture fx;
	guarded(&fx)->canary.guard.max_divergence_rate = 0.1;
	fx_start(&fx);
	/* pairs of another version do not count for the canary */
	for (int i = 0; i < 100; i++)
		es_rollout_shadow_event(fx.m, 1, ES_SHADOW_DIVERGED);
	assert_false(es_rollout_guard_check(fx.m));
	for (int i = 0; i < 15; i++)
		es_rollout_shadow_event(fx.m, 2, ES_SHADOW_DIVERGED);
	assert_false(es_rollout_guard_check(fx.m)); /* 15 < min_samples */
	for (int i = 0; i < 5; i++)
		es_rollout_shadow_event(fx.m, 2, ES_SHADOW_MATCHED);
	assert_true(es_rollout_guard_check(fx.m));
	es_rollout_report rep;
	assert_int_equal(es_servable_rollout_report(fx.m, &rep), 0);
	assert_non_null(strstr(rep.kill_reason, "divergence_rate"));
	es_test_server_free(&fx);
}

/* ---- configuration changes --------------------------------------------------------- */

static void test_update_from_config(void **state)
{
	(void)state;
	fixture fx;
	es_model_config *mc = fx_init(&fx);
	set_canary(mc, 2, 0);
	fx_start(&fx);
	es_model_config nc = *mc; /* shallow: only scalar fields change below */
	assert_false(es_rollout_changed(fx.m, &nc));
	nc.canary.fraction_bp = 10000;
	assert_true(es_rollout_changed(fx.m, &nc));
	es_error err = { 0 };
	assert_int_equal(es_rollout_update(fx.m, &nc, &err), 0);
	assert_false(es_rollout_changed(fx.m, &nc));
	assert_int_equal(route(&fx, "u", NULL), ES_ARM_CANARY);
	/* an admin kill survives a reload that does not touch kill_switch */
	canary_update(&fx, (es_canary_update){ .set_killed = true, .killed = true });
	nc.canary.guard.window_s = 7;
	assert_true(es_rollout_changed(fx.m, &nc));
	assert_int_equal(es_rollout_update(fx.m, &nc, &err), 0);
	es_rollout_report rep;
	assert_int_equal(es_servable_rollout_report(fx.m, &rep), 0);
	assert_true(rep.killed);
	assert_int_equal(rep.window_s, 7);
	/* removing the canary: default arm again */
	nc.canary.enabled = false;
	assert_int_equal(es_rollout_update(fx.m, &nc, &err), 0);
	assert_int_equal(route(&fx, "u", NULL), ES_ARM_DEFAULT);
	assert_int_equal(es_servable_rollout_report(fx.m, &rep), 0);
	assert_false(rep.canary);
	assert_false(rep.killed);
	es_test_server_free(&fx);
}

int main(void)
{
	es_log_set_level(ES_LOG_OFF);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_arm_names),
		cmocka_unit_test(test_no_canary_default_and_pinned),
		cmocka_unit_test(test_hash_split),
		cmocka_unit_test(test_salt_changes_assignment),
		cmocka_unit_test(test_keyless),
		cmocka_unit_test(test_kill_switch),
		cmocka_unit_test(test_stable_never_the_canary),
		cmocka_unit_test(test_labels),
		cmocka_unit_test(test_shadow_sampling),
		cmocka_unit_test(test_window_buckets_and_quantiles),
		cmocka_unit_test(test_report_windows),
		cmocka_unit_test(test_guard_error_rate),
		cmocka_unit_test(test_guard_thread_trips),
		cmocka_unit_test(test_guard_p95_ratio),
		cmocka_unit_test(test_guard_divergence),
		cmocka_unit_test(test_update_from_config),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
