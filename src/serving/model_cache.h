/*
 * The compiled-model cache (--cache_dir): compiled forms of model versions
 * kept on disk so that a restart reads them back instead of compiling.
 *
 * A blob is named by the SHA-256 of its key: the SHA-256 of the version
 * directory's files, the engine version, the CPU features and the model
 * options (all also stored in the blob's header, which the engine checks).
 * Blobs that do not match, are truncated or fail their checksum are
 * counted, deleted and rebuilt. Writes go to a temporary file that is
 * fsynced and renamed into place. Problems with the directory itself
 * (missing permissions, full disk) cost only the caching: they are logged
 * as warnings and loads go on without it.
 */
#ifndef ES_SERVING_MODEL_CACHE_H
#define ES_SERVING_MODEL_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "edgeserve/engine.h"
#include "obs/metrics.h"

typedef struct es_mcache es_mcache;

/* What a load learnt, for es_mcache_store after the version is published. */
typedef struct es_mcache_ticket {
	bool hashed;            /* files_sha256 is valid */
	uint8_t files_sha256[32];
	char blob[4096];        /* the blob's path ("" without a cache) */
	bool store;             /* compiled now: worth storing */
	bool hit;
	bool invalid;           /* a blob was there but unusable */
	double compile_s;       /* time of the compile or the cache read */
} es_mcache_ticket;

/*
 * Opens (creating it when missing) the cache directory and removes
 * temporary files left by crashed servers. Never fails for file-system
 * reasons: the cache then works read-only or not at all, with a warning.
 * Returns NULL only when out of memory.
 */
es_mcache *es_mcache_open(const char *dir, es_metrics *metrics);
void es_mcache_close(es_mcache *c);

/*
 * Loads the model of version_dir (model.onnx), from the cache when a valid
 * blob is there, otherwise by compiling it. c may be NULL (no cache).
 * model_name labels the metrics and log lines. Errors are those of the
 * compile (the cache's own problems are only logged).
 */
int es_mcache_load(es_mcache *c, const char *model_name, int64_t version,
		   const char *version_dir, const es_model_options *opts,
		   es_model **out, es_mcache_ticket *t, es_error *err);

/* Writes m's compiled form when the load compiled it (t->store). */
void es_mcache_store(es_mcache *c, const char *model_name, int64_t version,
		     const es_mcache_ticket *t, const es_model *m,
		     const es_model_options *opts);

#endif
