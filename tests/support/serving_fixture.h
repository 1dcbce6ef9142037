/*
 * Fixtures shared by the serving unit tests (tests/unit/test_serving.c,
 * test_fallback.c, test_shadow.c, test_lifecycle.c, test_rollout.c): a
 * server built from a configuration the test edits, metric lookups, model
 * repository files, and the completion sync that lets a test hold a device
 * stream until it opens a gate. Every helper fails the running cmocka test
 * itself, so call them from the test's thread only, except where a comment
 * says otherwise. Each test keeps what is its own (the fixture's model, the
 * fields its completions record) and builds on these.
 */
#ifndef ES_TESTS_SERVING_FIXTURE_H
#define ES_TESTS_SERVING_FIXTURE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "obs/metrics.h"
#include "serving/serving.h"
#include "serving/serving_int.h"

/* Upper bound of every wait in the tests: reaching it is a failure, not a
 * way to let a race settle. */
#define ES_TEST_WAIT_LIMIT_NS (20ull * 1000000000ull)

/* Where the model repositories of tests/data/serving live. */
#define ES_TEST_SERVING_REPO ES_TEST_DATA_DIR "/serving/repo"

/* ---- server ------------------------------------------------------------------ */

/* A server plus what it was made from. */
typedef struct es_test_server {
	es_server_config cfg; /* edit between init and start */
	es_metrics *metrics;
	es_server *srv;       /* NULL until es_test_server_start */
	es_servable *m;       /* the model named at start, NULL if none was */
	char tmp[256];        /* scratch directory, "" if the test asked for none */
} es_test_server;

/* Default configuration and an empty metrics registry. With a tmp_prefix,
 * also creates the scratch directory /tmp/<tmp_prefix>_XXXXXX in fx->tmp,
 * which es_test_server_free removes. */
void es_test_server_init(es_test_server *fx, const char *tmp_prefix);

/* Creates the server from fx->cfg; with a model name, also finds that
 * model into fx->m. Fails the test on any error. */
void es_test_server_start(es_test_server *fx, const char *model);

/* Destroys the server, frees the configuration and the metrics, and removes
 * the scratch directory (failing the test if it stays). */
void es_test_server_free(es_test_server *fx);

/* The value of the "counter" or "gauge" series name{labels=values}; 0 for
 * a series nobody has touched. labels and values are NULL-terminated (NULL
 * for none). */
double es_test_metric(es_test_server *fx, const char *kind, const char *name,
		      const char *const *labels, const char *const *values);

/* A reference to version (0: the default) of the model; fails the test
 * when there is none. The caller releases it. */
es_version *es_test_acquire(es_server *srv, const char *model, int64_t version);

/* ---- configuration ------------------------------------------------------------- */

/* Adds a device with the given backend; the first custom device replaces
 * the default "CPU" one. The returned device stays cfg's. */
es_device_config *es_test_cfg_device(es_server_config *cfg, const char *name,
				     const char *backend, int streams, int queue);

/* Adds a model (latest version only, no warmup setting, on the default
 * device when device is NULL). The returned model stays cfg's. */
es_model_config *es_test_cfg_model(es_server_config *cfg, const char *name,
				   const char *base_path, const char *device);

/* Model "m" at base_path in a server that the test drives: the repository
 * is not polled (the test reconciles) and nothing warms up. The returned
 * model (latest version only, as es_test_cfg_model) stays cfg's. */
es_model_config *es_test_cfg_driven_model(es_server_config *cfg, const char *base_path);

/* Serves exactly versions v[0..n) of m. */
void es_test_policy_specific(es_model_config *m, const int64_t *v, size_t n);

/* ---- files --------------------------------------------------------------------- */

void es_test_copy_file(const char *from, const char *to);

/* Removes path and everything below it; a missing path is no error. */
void es_test_rm_rf(const char *path);

/* Publishes version v of the model repository base: a copy of
 * tests/data/serving/repo/multi/<src>/model.onnx (src 1: y = x + 1,
 * 2: y = x + 2, 3: not an ONNX file), written under a staging name and
 * renamed into place so that a running server never sees half of it. */
void es_test_publish(const char *base, int v, int src);

/* ---- completions ------------------------------------------------------------------ */

/* What the completions of a test's requests share with the test. All
 * fields are guarded by mu. */
typedef struct es_test_sync {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int done;       /* completions finished */
	int blocked;    /* completions that reached es_test_hold_at_gate */
	bool gate_open;
	int seq;        /* free for the completions' own use: ranks */
	int inside;     /* free for the completions' own use: rendezvous */
} es_test_sync;

void es_test_sync_init(es_test_sync *sy);
void es_test_sync_destroy(es_test_sync *sy);

/* Waits (holding sy->mu) for sy->cv; false once the monotonic time until
 * (es_now_ns) has passed. Safe on any thread. */
bool es_test_sync_wait(es_test_sync *sy, uint64_t until);

/* In a completion, holding sy->mu: counts the request as blocked and waits
 * until the gate opens or until passes. Safe on any thread. */
void es_test_hold_at_gate(es_test_sync *sy, uint64_t until);

/* In a completion, holding sy->mu: counts it as done and wakes the test.
 * Safe on any thread. */
void es_test_sync_finish(es_test_sync *sy);

/* Wait (bounded by ES_TEST_WAIT_LIMIT_NS) until n completions are done, or
 * n are blocked at the gate; fail the test otherwise. */
void es_test_wait_done(es_test_sync *sy, int n);
void es_test_wait_blocked(es_test_sync *sy, int n);

/* Lets every completion held at the gate, and every later one, go on. */
void es_test_open_gate(es_test_sync *sy);

/* es_server_drain on a thread of its own, while the test watches. */
typedef struct es_test_drainer {
	pthread_t thread;
	es_server *srv;
	int64_t timeout_ms;
	size_t cancelled; /* what es_server_drain returned, after the join */
} es_test_drainer;

void es_test_drain_start(es_test_drainer *d, es_server *srv, int64_t timeout_ms);

/* Waits for the drain to return; then d->cancelled is its result. */
void es_test_drain_join(es_test_drainer *d);

/* The most requests es_test_submit_concurrently takes. */
#define ES_TEST_MAX_CONCURRENT 16

/* Submits reqs[0..n) from n threads released together; fails the test if
 * a submit fails. */
void es_test_submit_concurrently(es_server *srv, es_request *const *reqs, int n);

#endif
