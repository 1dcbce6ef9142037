/*
 * Refuses to serve on runtime libraries older than the ones edgeserve is
 * tested with: an older oneDNN or OpenBLAS may compute differently or
 * miss kernels the engine picks by CPU feature.
 */
#ifndef ES_SERVING_RUNTIME_CHECK_H
#define ES_SERVING_RUNTIME_CHECK_H

#include "edgeserve/engine.h"

/* Minimum versions this project is tested with (Debian 12): oneDNN 2.6.0,
 * OpenBLAS 0.3.21. */
#define ES_MIN_ONEDNN_MAJOR 2
#define ES_MIN_ONEDNN_MINOR 6
#define ES_MIN_ONEDNN_PATCH 0
#define ES_MIN_OPENBLAS_MAJOR 0
#define ES_MIN_OPENBLAS_MINOR 3
#define ES_MIN_OPENBLAS_PATCH 21

/*
 * Checks the versions es_engine_runtime_versions reported. Returns 0 when
 * every library is at least the minimum; else ES_EUNSUPPORTED with a
 * message naming each library that fails, e.g. "oneDNN 2.5.0 is older than
 * 2.6.0, the oldest version edgeserve is tested with; upgrade libdnnl2 or
 * start with --allow_old_runtime to run anyway". A version that is unknown
 * (OpenBLAS's config string unreadable, oneDNN reporting 0.0.0) fails with
 * its own message.
 */
int es_runtime_check(const es_runtime_versions *v, es_error *err);

#endif
