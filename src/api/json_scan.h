/*
 * A small JSON tokenizer for request bodies, with a decoder that turns
 * tensor "data" arrays straight into typed buffers (no DOM node per
 * element), and the per-request allocation list the codecs use.
 *
 * The cursor never reads past end, needs no NUL terminator, and limits
 * container nesting to ES_JS_MAX_DEPTH (the only recursion, es_js_skip, is
 * bounded by it). Syntax errors are ES_EPARSE "JSON parse error at byte N:
 * ..."; the data decoder reports ES_EINVAL/ES_ERANGE naming the tensor.
 */
#ifndef ES_API_JSON_SCAN_H
#define ES_API_JSON_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "edgeserve/engine.h"

#define ES_JS_MAX_DEPTH 64

typedef struct es_js {
	const char *base;  /* start of the document: offsets in messages */
	const char *p;
	const char *end;
	int depth;         /* open containers */
	es_error *err;
} es_js;

/* A string token as it appears in the source (between the quotes). */
typedef struct es_js_str {
	const char *s;
	size_t n;
	bool esc; /* contains escapes: use es_js_unescape */
} es_js_str;

void es_js_init(es_js *js, const char *s, size_t n, es_error *err);
/* ES_EPARSE with the current byte offset and `what`. */
int es_js_fail(es_js *js, const char *what);
/* Skips whitespace; returns the next byte or -1 at the end. */
int es_js_peek(es_js *js);
/* Fails unless only whitespace remains. */
int es_js_finish(es_js *js);

/*
 * Containers. Iterate with
 *	bool first = true;
 *	while ((rc = es_js_obj_next(js, &first, &key)) > 0) { parse value }
 * _next returns 1 for another member (for objects the key and ':' are
 * consumed), 0 after the closing bracket, or a negative error.
 */
int es_js_obj_begin(es_js *js);
int es_js_obj_next(es_js *js, bool *first, es_js_str *key);
int es_js_arr_begin(es_js *js);
int es_js_arr_next(es_js *js, bool *first);

int es_js_string(es_js *js, es_js_str *out);
/* A number token (grammar checked); *s points into the source. */
int es_js_number(es_js *js, const char **s, size_t *n);
int es_js_bool(es_js *js, bool *out);
/* Skips (and validates) one value of any kind. */
int es_js_skip(es_js *js);

/* Decoded bytes of a string token into dst (room for str->n bytes, which
 * is always enough); returns the decoded length. */
size_t es_js_unescape(const es_js_str *str, char *dst);
/* Whether the decoded string equals lit. */
bool es_js_str_eq(const es_js_str *str, const char *lit);

/* ---- allocation list: everything a parsed request owns ----------------- */

/* *mem starts NULL. Allocations live until es_mem_free(mem). */
void *es_mem_alloc(void **mem, size_t n);
void *es_mem_alloc_aligned(void **mem, size_t n); /* 64-byte aligned */
/* Takes ownership of a malloc'ed block; frees it and fails on ENOMEM. */
int es_mem_adopt(void **mem, void *p);
void es_mem_free(void **mem);
/* Decoded copy of a string token, NUL-terminated. Fails with ES_EINVAL if
 * it holds a NUL byte (names and ids cannot). */
int es_mem_strdup(void **mem, const es_js_str *str, char **out);

/* ---- tensor data ------------------------------------------------------- */

typedef struct es_js_sink {
	es_dtype dtype;     /* ES_DT_STRING: strings, else a fixed-size type */
	void *data;         /* fixed types: numel elements */
	int64_t numel;
	es_buf *strings;    /* ES_DT_STRING: 4-byte-LE length + bytes appended */
	int64_t count;      /* elements decoded so far */
	const char *what;   /* "input 'x'" for messages */
	const char *type_name; /* "FP32" etc. for messages */
} es_js_sink;

/*
 * Decodes one "data" value into sink. The nesting must follow dims/ndim
 * exactly, or (allow_flat) be one flat array; a bare scalar is accepted
 * when the shape holds exactly one element. Element count must equal
 * sink->numel. Errors name sink->what, the element index and the value.
 */
int es_js_decode_data(es_js *js, const int64_t *dims, int ndim, bool allow_flat,
		      es_js_sink *sink);

/*
 * Number of non-array values inside the value at the cursor (1 for a
 * scalar), without moving js. Fails on malformed JSON.
 */
int es_js_count_values(const es_js *js, int64_t *count);

/*
 * Shape of a value made of regularly nested arrays (a scalar has ndim 0).
 * Ragged nesting, objects inside, or more than ES_MAX_DIMS levels fail,
 * naming what. Consumes the value.
 */
int es_js_infer_shape(es_js *js, int64_t *dims, int *ndim, const char *what);

/* "[2,3]" into buf (for messages). */
void es_js_shape_str(char *buf, size_t cap, const int64_t *dims, int ndim);

#endif
