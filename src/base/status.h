/* Status codes and the es_error message helper shared by every layer. */
#ifndef ES_BASE_STATUS_H
#define ES_BASE_STATUS_H

#include "edgeserve/engine.h"

/* Formats a message into err (when err is not NULL), sets err->code and
 * returns code, so callers can write `return es_error_set(err, ES_EINVAL,
 * "...")`. */
int es_error_set(es_error *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Prepends "prefix: " to an existing message (keeps the code). Returns the
 * code. */
int es_error_prefix(es_error *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

void es_error_clear(es_error *err);

#endif
