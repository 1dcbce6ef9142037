/*
 * Device backends: a fixed table of at most ES_MAX_BACKENDS entries, filled
 * before the server starts (es_backend_register) and only read afterwards,
 * so lookups take no lock. "cpu", the engine itself, is always present;
 * test builds add a fault-injecting backend (tests/support/), which the
 * edgeserve binary never contains.
 */
#include <pthread.h>
#include <string.h>

#include "base/status.h"
#include "serving/serving_int.h"

#define ES_MAX_BACKENDS 8

/* ---- the built-in engine backend ------------------------------------------ */

static int cpu_open(const es_device_config *cfg, void **state, es_error *err)
{
	(void)cfg;
	(void)err;
	*state = NULL;
	return 0;
}

static void cpu_close(void *state)
{
	(void)state;
}

static int cpu_run(void *state, const es_backend_run *r, es_error *err)
{
	(void)state;
	return es_session_run(r->session, r->inputs, r->n_inputs, r->outputs, err);
}

static const es_backend cpu_backend = {
	.name = "cpu",
	.open = cpu_open,
	.close = cpu_close,
	.run = cpu_run,
};

/* ---- the table ------------------------------------------------------------- */

static pthread_mutex_t table_mu = PTHREAD_MUTEX_INITIALIZER;
static const es_backend *table[ES_MAX_BACKENDS] = { &cpu_backend };
static size_t n_table = 1;

/*
 * Registers b (which must stay valid for the process's life) under b->name.
 * Call before es_server_create. Returns ES_EINVAL for a backend without a
 * name or run function or for a name already registered, ES_ERANGE when
 * the table is full.
 */
int es_backend_register(const es_backend *b)
{
	if (!b || !b->name || !b->name[0] || !b->run)
		return ES_EINVAL;
	int rc = 0;
	pthread_mutex_lock(&table_mu);
	for (size_t i = 0; i < n_table; i++) {
		if (!strcmp(table[i]->name, b->name)) {
			rc = ES_EINVAL;
			goto out_unlock;
		}
	}
	if (n_table == ES_MAX_BACKENDS) {
		rc = ES_ERANGE;
		goto out_unlock;
	}
	table[n_table++] = b;
out_unlock:
	pthread_mutex_unlock(&table_mu);
	return rc;
}

/* The backend registered as name, or NULL. The result lives as long as the
 * process. */
const es_backend *es_backend_find(const char *name)
{
	const es_backend *found = NULL;
	if (!name)
		return NULL;
	pthread_mutex_lock(&table_mu);
	for (size_t i = 0; i < n_table; i++) {
		if (!strcmp(table[i]->name, name)) {
			found = table[i];
			break;
		}
	}
	pthread_mutex_unlock(&table_mu);
	return found;
}
