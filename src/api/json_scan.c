/*
 * JSON tokenizer, tensor data decoder and allocation list (json_scan.h).
 */
#include "api/json_scan.h"

#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/json_num.h"
#include "base/alloc.h"
#include "base/status.h"

void es_js_init(es_js *js, const char *s, size_t n, es_error *err)
{
	js->base = s;
	js->p = s;
	js->end = s + n;
	js->depth = 0;
	js->err = err;
}

int es_js_fail(es_js *js, const char *what)
{
	if (js->p >= js->end)
		return es_error_set(js->err, ES_EPARSE,
				    "JSON parse error at byte %zu (end of input): %s",
				    (size_t)(js->end - js->base), what);
	return es_error_set(js->err, ES_EPARSE, "JSON parse error at byte %zu: %s",
			    (size_t)(js->p - js->base), what);
}

int es_js_peek(es_js *js)
{
	const char *p = js->p, *end = js->end;

	while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
		p++;
	js->p = p;
	return p < end ? (unsigned char)*p : -1;
}

int es_js_finish(es_js *js)
{
	if (es_js_peek(js) != -1)
		return es_js_fail(js, "unexpected data after the JSON value");
	return 0;
}

static int open_container(es_js *js, char c)
{
	if (es_js_peek(js) != c)
		return es_js_fail(js, c == '{' ? "expected an object" : "expected an array");
	if (js->depth >= ES_JS_MAX_DEPTH)
		return es_js_fail(js, "nesting deeper than 64");
	js->depth++;
	js->p++;
	return 0;
}

int es_js_obj_begin(es_js *js)
{
	return open_container(js, '{');
}

int es_js_arr_begin(es_js *js)
{
	return open_container(js, '[');
}

int es_js_obj_next(es_js *js, bool *first, es_js_str *key)
{
	int c = es_js_peek(js);
	int rc;

	if (c == '}') {
		js->p++;
		js->depth--;
		return 0;
	}
	if (!*first) {
		if (c != ',')
			return es_js_fail(js, "expected ',' or '}'");
		js->p++;
		c = es_js_peek(js);
	}
	*first = false;
	if (c != '"')
		return es_js_fail(js, "expected a string key");
	rc = es_js_string(js, key);
	if (rc)
		return rc;
	if (es_js_peek(js) != ':')
		return es_js_fail(js, "expected ':'");
	js->p++;
	return 1;
}

int es_js_arr_next(es_js *js, bool *first)
{
	int c = es_js_peek(js);

	if (c == ']') {
		js->p++;
		js->depth--;
		return 0;
	}
	if (!*first) {
		if (c != ',')
			return es_js_fail(js, "expected ',' or ']'");
		js->p++;
		c = es_js_peek(js);
		if (c == ']')
			return es_js_fail(js, "expected a value after ','");
	}
	*first = false;
	return 1;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Reads 4 hex digits at p (bounds checked by the caller). */
static int hex4(const char *p)
{
	int v = 0;
	for (int i = 0; i < 4; i++) {
		int h = hexval(p[i]);
		if (h < 0)
			return -1;
		v = v * 16 + h;
	}
	return v;
}

int es_js_string(es_js *js, es_js_str *out)
{
	const char *p, *end = js->end;

	if (es_js_peek(js) != '"')
		return es_js_fail(js, "expected a string");
	p = ++js->p;
	out->s = p;
	out->esc = false;
	for (;;) {
		while (p < end && *p != '"' && *p != '\\' && (unsigned char)*p >= 0x20)
			p++;
		if (p >= end) {
			js->p = end;
			return es_js_fail(js, "unterminated string");
		}
		if (*p == '"')
			break;
		if (*p != '\\') {
			js->p = p;
			return es_js_fail(js, "control character in a string");
		}
		out->esc = true;
		if (end - p < 2) {
			js->p = end;
			return es_js_fail(js, "unterminated string");
		}
		switch (p[1]) {
		case '"': case '\\': case '/': case 'b': case 'f': case 'n':
		case 'r': case 't':
			p += 2;
			break;
		case 'u': {
			int cp = end - p >= 6 ? hex4(p + 2) : -1;
			if (cp < 0) {
				js->p = p;
				return es_js_fail(js, "bad \\u escape");
			}
			if (cp >= 0xdc00 && cp <= 0xdfff) {
				js->p = p;
				return es_js_fail(js, "unpaired surrogate in \\u escape");
			}
			if (cp >= 0xd800 && cp <= 0xdbff) {
				int lo = end - p >= 12 && p[6] == '\\' && p[7] == 'u' ?
					hex4(p + 8) : -1;
				if (lo < 0xdc00 || lo > 0xdfff) {
					js->p = p;
					return es_js_fail(js, "unpaired surrogate in \\u escape");
				}
				p += 12;
			} else {
				p += 6;
			}
			break;
		}
		default:
			js->p = p;
			return es_js_fail(js, "bad escape in a string");
		}
	}
	out->n = (size_t)(p - out->s);
	js->p = p + 1;
	return 0;
}

static bool isdig(const char *p, const char *end)
{
	return p < end && *p >= '0' && *p <= '9';
}

static bool match(const char *p, const char *end, const char *lit, size_t n)
{
	return (size_t)(end - p) >= n && !memcmp(p, lit, n);
}

int es_js_number(es_js *js, const char **s, size_t *n)
{
	const char *p, *end = js->end, *start;

	es_js_peek(js);
	p = start = js->p;
	if (p < end && *p == '-')
		p++;
	if (!isdig(p, end))
		return es_js_fail(js, "expected a number");
	if (*p == '0')
		p++;
	else
		while (isdig(p, end))
			p++;
	if (p < end && *p == '.') {
		p++;
		if (!isdig(p, end)) {
			js->p = p;
			return es_js_fail(js, "expected a digit after '.'");
		}
		while (isdig(p, end))
			p++;
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		p++;
		if (p < end && (*p == '+' || *p == '-'))
			p++;
		if (!isdig(p, end)) {
			js->p = p;
			return es_js_fail(js, "expected a digit in the exponent");
		}
		while (isdig(p, end))
			p++;
	}
	*s = start;
	*n = (size_t)(p - start);
	js->p = p;
	return 0;
}

int es_js_bool(es_js *js, bool *out)
{
	int c = es_js_peek(js);

	if (c == 't' && match(js->p, js->end, "true", 4)) {
		js->p += 4;
		*out = true;
		return 0;
	}
	if (c == 'f' && match(js->p, js->end, "false", 5)) {
		js->p += 5;
		*out = false;
		return 0;
	}
	return es_js_fail(js, "expected true or false");
}

int es_js_skip(es_js *js)
{
	int c = es_js_peek(js), rc;
	bool first = true;
	es_js_str str;

	switch (c) {
	case '{':
		if ((rc = es_js_obj_begin(js)))
			return rc;
		while ((rc = es_js_obj_next(js, &first, &str)) > 0)
			if ((rc = es_js_skip(js)))
				return rc;
		return rc;
	case '[':
		if ((rc = es_js_arr_begin(js)))
			return rc;
		while ((rc = es_js_arr_next(js, &first)) > 0)
			if ((rc = es_js_skip(js)))
				return rc;
		return rc;
	case '"':
		return es_js_string(js, &str);
	case 't':
	case 'f': {
		bool b;
		return es_js_bool(js, &b);
	}
	case 'n':
		if (match(js->p, js->end, "null", 4)) {
			js->p += 4;
			return 0;
		}
		return es_js_fail(js, "unexpected token");
	case -1:
		return es_js_fail(js, "expected a value");
	default: {
		const char *s;
		size_t n;
		if (c == '-' || (c >= '0' && c <= '9'))
			return es_js_number(js, &s, &n);
		return es_js_fail(js, "unexpected character");
	}
	}
}

static size_t put_utf8(char *d, uint32_t cp)
{
	if (cp < 0x80) {
		d[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		d[0] = (char)(0xc0 | (cp >> 6));
		d[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		d[0] = (char)(0xe0 | (cp >> 12));
		d[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		d[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	d[0] = (char)(0xf0 | (cp >> 18));
	d[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	d[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	d[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* The token was validated by es_js_string: escapes are well formed. */
size_t es_js_unescape(const es_js_str *str, char *dst)
{
	const char *p = str->s, *end = str->s + str->n;
	char *d = dst;

	if (!str->esc) {
		memcpy(dst, str->s, str->n);
		return str->n;
	}
	while (p < end) {
		if (*p != '\\') {
			*d++ = *p++;
			continue;
		}
		char c = p[1];
		p += 2;
		switch (c) {
		case 'b': *d++ = '\b'; break;
		case 'f': *d++ = '\f'; break;
		case 'n': *d++ = '\n'; break;
		case 'r': *d++ = '\r'; break;
		case 't': *d++ = '\t'; break;
		case 'u': {
			uint32_t cp = (uint32_t)hex4(p);
			p += 4;
			if (cp >= 0xd800 && cp <= 0xdbff) {
				uint32_t lo = (uint32_t)hex4(p + 2);
				p += 6;
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
			}
			d += put_utf8(d, cp);
			break;
		}
		default: *d++ = c; break;
		}
	}
	return (size_t)(d - dst);
}

bool es_js_str_eq(const es_js_str *str, const char *lit)
{
	size_t n = strlen(lit);

	if (!str->esc)
		return str->n == n && !memcmp(str->s, lit, n);
	if (str->n < n)
		return false;
	char *tmp = malloc(str->n);
	if (!tmp)
		return false;
	size_t m = es_js_unescape(str, tmp);
	bool eq = m == n && !memcmp(tmp, lit, n);
	free(tmp);
	return eq;
}

/* ---- allocation list ------------------------------------------------------ */

struct mem_node {
	struct mem_node *next;
	void *ptr;  /* adopted or aligned block; NULL when the payload is inline */
	int aligned;
	alignas(max_align_t) unsigned char payload[];
};

static void *mem_push(void **mem, size_t payload, void *ptr, int aligned)
{
	size_t size;
	if (es_add_size(sizeof(struct mem_node), payload, &size))
		return NULL;
	struct mem_node *n = malloc(size);
	if (!n)
		return NULL;
	n->next = *mem;
	n->ptr = ptr;
	n->aligned = aligned;
	*mem = n;
	return ptr ? ptr : n->payload;
}

void *es_mem_alloc(void **mem, size_t n)
{
	return mem_push(mem, n, NULL, 0);
}

void *es_mem_alloc_aligned(void **mem, size_t n)
{
	void *p = es_aligned_alloc(n);
	if (!p)
		return NULL;
	if (!mem_push(mem, 0, p, 1)) {
		es_aligned_free(p);
		return NULL;
	}
	return p;
}

int es_mem_adopt(void **mem, void *p)
{
	if (!p)
		return 0;
	if (!mem_push(mem, 0, p, 0)) {
		free(p);
		return ES_ENOMEM;
	}
	return 0;
}

void es_mem_free(void **mem)
{
	struct mem_node *n = *mem;
	while (n) {
		struct mem_node *next = n->next;
		if (n->ptr) {
			if (n->aligned)
				es_aligned_free(n->ptr);
			else
				free(n->ptr);
		}
		free(n);
		n = next;
	}
	*mem = NULL;
}

int es_mem_strdup(void **mem, const es_js_str *str, char **out)
{
	char *d = es_mem_alloc(mem, str->n + 1);
	if (!d)
		return ES_ENOMEM;
	size_t n = es_js_unescape(str, d);
	d[n] = '\0';
	if (memchr(d, '\0', n))
		return ES_EINVAL;
	*out = d;
	return 0;
}

/* ---- tensor data ------------------------------------------------------- */

void es_js_shape_str(char *buf, size_t cap, const int64_t *dims, int ndim)
{
	size_t at = 0;
	int n;

	if (!cap)
		return;
	buf[0] = '\0';
	n = snprintf(buf, cap, "[");
	at = n > 0 ? (size_t)n : 0;
	for (int i = 0; i < ndim && at < cap; i++) {
		n = snprintf(buf + at, cap - at, "%s%lld", i ? "," : "", (long long)dims[i]);
		if (n < 0)
			return;
		at += (size_t)n;
	}
	if (at < cap)
		snprintf(buf + at, cap - at, "]");
}

static const char *token_kind(int c)
{
	switch (c) {
	case '{': return "an object";
	case '[': return "an array";
	case '"': return "a string";
	case 't': case 'f': return "a boolean";
	case 'n': return "null";
	case -1: return "the end of input";
	default: return "a number";
	}
}

static int leaf_error(es_js *js, es_js_sink *k, int code, const char *s, size_t n,
		      const char *problem)
{
	int show = n > 40 ? 40 : (int)n;
	return es_error_set(js->err, code, "%s: element %lld: %.*s%s %s", k->what,
			    (long long)k->count, show, s, n > 40 ? "..." : "",
			    problem);
}

static int put_int(es_js *js, es_js_sink *k, const char *s, size_t n)
{
	void *dst = k->data;
	int64_t i = k->count;
	int64_t v = 0;
	uint64_t u = 0;
	int rc;
	char prob[64];

	if (k->dtype == ES_DT_UINT64 || k->dtype == ES_DT_UINT32 ||
	    k->dtype == ES_DT_UINT16 || k->dtype == ES_DT_UINT8)
		rc = es_num_to_u64(s, n, &u);
	else
		rc = es_num_to_i64(s, n, &v);
	if (rc == ES_EINVAL) {
		snprintf(prob, sizeof(prob), "is not an integer (%s)", k->type_name);
		return leaf_error(js, k, ES_EINVAL, s, n, prob);
	}
	switch (k->dtype) {
	case ES_DT_INT8:
		if (!rc && (v < INT8_MIN || v > INT8_MAX))
			rc = ES_ERANGE;
		if (!rc)
			((int8_t *)dst)[i] = (int8_t)v;
		break;
	case ES_DT_INT16:
		if (!rc && (v < INT16_MIN || v > INT16_MAX))
			rc = ES_ERANGE;
		if (!rc)
			((int16_t *)dst)[i] = (int16_t)v;
		break;
	case ES_DT_INT32:
		if (!rc && (v < INT32_MIN || v > INT32_MAX))
			rc = ES_ERANGE;
		if (!rc)
			((int32_t *)dst)[i] = (int32_t)v;
		break;
	case ES_DT_INT64:
		if (!rc)
			((int64_t *)dst)[i] = v;
		break;
	case ES_DT_UINT8:
		if (!rc && u > UINT8_MAX)
			rc = ES_ERANGE;
		if (!rc)
			((uint8_t *)dst)[i] = (uint8_t)u;
		break;
	case ES_DT_UINT16:
		if (!rc && u > UINT16_MAX)
			rc = ES_ERANGE;
		if (!rc)
			((uint16_t *)dst)[i] = (uint16_t)u;
		break;
	case ES_DT_UINT32:
		if (!rc && u > UINT32_MAX)
			rc = ES_ERANGE;
		if (!rc)
			((uint32_t *)dst)[i] = (uint32_t)u;
		break;
	case ES_DT_UINT64:
		if (!rc)
			((uint64_t *)dst)[i] = u;
		break;
	default:
		return ES_EINTERNAL;
	}
	if (rc) {
		snprintf(prob, sizeof(prob), "is out of range for %s", k->type_name);
		return leaf_error(js, k, ES_ERANGE, s, n, prob);
	}
	return 0;
}

static int put_float(es_js *js, es_js_sink *k, const char *s, size_t n)
{
	int64_t i = k->count;
	int rc;

	switch (k->dtype) {
	case ES_DT_FLOAT:
		rc = es_num_to_f32(s, n, (float *)k->data + i);
		break;
	case ES_DT_DOUBLE:
		rc = es_num_to_f64(s, n, (double *)k->data + i);
		break;
	case ES_DT_FLOAT16:
		rc = es_num_to_f16(s, n, (uint16_t *)k->data + i);
		break;
	case ES_DT_BFLOAT16:
		rc = es_num_to_bf16(s, n, (uint16_t *)k->data + i);
		break;
	default:
		return ES_EINTERNAL;
	}
	if (rc == ES_ENOMEM)
		return es_error_set(js->err, ES_ENOMEM, "out of memory");
	if (rc) {
		char prob[64];
		snprintf(prob, sizeof(prob), "is out of range for %s", k->type_name);
		return leaf_error(js, k, ES_ERANGE, s, n, prob);
	}
	return 0;
}

static bool is_float_type(es_dtype dt)
{
	return dt == ES_DT_FLOAT || dt == ES_DT_DOUBLE || dt == ES_DT_FLOAT16 ||
	       dt == ES_DT_BFLOAT16;
}

/* One scalar element at the cursor into the sink. */
static int decode_leaf(es_js *js, es_js_sink *k)
{
	int c = es_js_peek(js);
	const char *s;
	size_t n;
	int rc;
	char prob[96];

	if (k->dtype == ES_DT_STRING) {
		es_js_str str;
		if (c != '"')
			goto wrong_kind;
		if ((rc = es_js_string(js, &str)))
			return rc;
		if (str.n > UINT32_MAX)
			return es_error_set(js->err, ES_ERANGE,
					    "%s: element %lld: string longer than 4 GiB",
					    k->what, (long long)k->count);
		if (es_buf_reserve(k->strings, 4 + str.n))
			return es_error_set(js->err, ES_ENOMEM, "out of memory");
		char *dst = k->strings->data + k->strings->len;
		uint32_t len32 = (uint32_t)es_js_unescape(&str, dst + 4);
		memcpy(dst, &len32, 4); /* little-endian host */
		k->strings->len += 4 + len32;
		k->count++;
		return 0;
	}
	if (k->dtype == ES_DT_BOOL) {
		bool b;
		if (c == 't' || c == 'f') {
			if ((rc = es_js_bool(js, &b)))
				return rc;
		} else if (c == '-' || (c >= '0' && c <= '9')) {
			int64_t v;
			if ((rc = es_js_number(js, &s, &n)))
				return rc;
			if (es_num_to_i64(s, n, &v) || (v != 0 && v != 1))
				return leaf_error(js, k, ES_EINVAL, s, n,
						  "is not a BOOL (true, false, 0 or 1)");
			b = v == 1;
		} else {
			goto wrong_kind;
		}
		((uint8_t *)k->data)[k->count++] = b;
		return 0;
	}
	if (is_float_type(k->dtype)) {
		if (c == '"') {
			/* "NaN", "Infinity", "-Infinity" as strings */
			es_js_str str;
			if ((rc = es_js_string(js, &str)))
				return rc;
			if (str.esc || (!es_js_str_eq(&str, "NaN") &&
					!es_js_str_eq(&str, "Infinity") &&
					!es_js_str_eq(&str, "-Infinity")))
				return leaf_error(js, k, ES_EINVAL, str.s, str.n,
						  "is not a number (strings allowed: NaN, Infinity, -Infinity)");
			if ((rc = put_float(js, k, str.s, str.n)))
				return rc;
			k->count++;
			return 0;
		}
		if (c == 'N' || c == 'I' ||
		    (c == '-' && js->end - js->p > 1 && js->p[1] == 'I'))
			return es_js_fail(js, "JSON has no NaN or Infinity literal; send the strings \"NaN\", \"Infinity\" or \"-Infinity\"");
		if (c != '-' && (c < '0' || c > '9'))
			goto wrong_kind;
		if ((rc = es_js_number(js, &s, &n)))
			return rc;
		if ((rc = put_float(js, k, s, n)))
			return rc;
		k->count++;
		return 0;
	}
	if (c != '-' && (c < '0' || c > '9'))
		goto wrong_kind;
	if ((rc = es_js_number(js, &s, &n)))
		return rc;
	if ((rc = put_int(js, k, s, n)))
		return rc;
	k->count++;
	return 0;

wrong_kind:
	if (c == '{' || c == '[' || c == '"' || c == 't' || c == 'f' || c == 'n' ||
	    c == '-' || (c >= '0' && c <= '9'))
		snprintf(prob, sizeof(prob), "expected %s for %s, got %s",
			 k->dtype == ES_DT_STRING ? "a string" :
			 k->dtype == ES_DT_BOOL ? "true or false" : "a number",
			 k->type_name, token_kind(c));
	else
		return es_js_fail(js, "unexpected character");
	return es_error_set(js->err, ES_EINVAL, "%s: element %lld: %s", k->what,
			    (long long)k->count, prob);
}

static int count_error(es_js *js, es_js_sink *k, const int64_t *dims, int ndim)
{
	char shape[128];
	es_js_shape_str(shape, sizeof(shape), dims, ndim);
	return es_error_set(js->err, ES_EINVAL,
			    "%s: data has %lld elements, shape %s needs %lld",
			    k->what, (long long)k->count, shape, (long long)k->numel);
}

int es_js_decode_data(es_js *js, const int64_t *dims, int ndim, bool allow_flat,
		      es_js_sink *k)
{
	/* mode: 0 not yet known, 1 flat, 2 nested per dims */
	int mode = ndim <= 1 ? 2 : 0;
	int max_depth = ndim < 1 ? 1 : ndim; /* arrays deeper than this fail */
	int64_t counts[ES_MAX_DIMS + 1];
	int depth = 0;
	bool need_value = true; /* after '[' or ',' */
	char shape[128];
	int rc = 0;

	if (es_js_peek(js) != '[') {
		if (k->numel - k->count != 1) {
			es_js_shape_str(shape, sizeof(shape), dims, ndim);
			rc = es_error_set(js->err, ES_EINVAL,
					  "%s: data must be an array (shape %s)",
					  k->what, shape);
			goto out;
		}
		rc = decode_leaf(js, k);
		goto out;
	}
	for (;;) {
		int c = es_js_peek(js);
		if (c == '[' && need_value) {
			if (depth >= max_depth || (mode == 1 && depth >= 1)) {
				es_js_shape_str(shape, sizeof(shape), dims, ndim);
				rc = es_error_set(js->err, ES_EINVAL,
						  mode == 1 ?
						  "%s: data mixes values and arrays (shape %s)" :
						  "%s: data is nested deeper than shape %s",
						  k->what, shape);
				goto out;
			}
			if (js->depth + depth >= ES_JS_MAX_DEPTH) {
				rc = es_js_fail(js, "nesting deeper than 64");
				goto out;
			}
			if (depth == 1 && mode == 0)
				mode = 2; /* an array inside the top one: nested */
			js->p++;
			counts[++depth] = 0;
			need_value = true;
			continue;
		}
		if (c == ']' && need_value && counts[depth] > 0) {
			rc = es_js_fail(js, "expected a value after ','");
			goto out;
		}
		if (c == ']') {
			js->p++;
			if (mode == 2 && ndim >= 2 && counts[depth] != dims[depth - 1]) {
				es_js_shape_str(shape, sizeof(shape), dims, ndim);
				rc = es_error_set(js->err, ES_EINVAL,
						  "%s: data nesting does not match shape %s: an array at depth %d has %lld elements, expected %lld",
						  k->what, shape, depth,
						  (long long)counts[depth],
						  (long long)dims[depth - 1]);
				goto out;
			}
			if (--depth == 0)
				break;
			counts[depth]++;
			need_value = false;
			continue;
		}
		if (!need_value) {
			if (c != ',') {
				rc = es_js_fail(js, "expected ',' or ']'");
				goto out;
			}
			js->p++;
			need_value = true;
			continue;
		}
		/* a scalar element */
		if (mode == 0) {
			/* depth is 1 here: a first leaf at the top is flat data */
			if (!allow_flat) {
				es_js_shape_str(shape, sizeof(shape), dims, ndim);
				rc = es_error_set(js->err, ES_EINVAL,
						  "%s: data nesting does not match shape %s: a value at depth 1",
						  k->what, shape);
				goto out;
			}
			mode = 1;
		}
		if (mode == 2 && depth != max_depth) {
			es_js_shape_str(shape, sizeof(shape), dims, ndim);
			rc = es_error_set(js->err, ES_EINVAL,
					  "%s: data nesting does not match shape %s: a value at depth %d, expected %d",
					  k->what, shape, depth, max_depth);
			goto out;
		}
		if (k->count >= k->numel) {
			/* too many: keep counting to report how many */
			if ((rc = es_js_skip(js)))
				goto out;
			k->count++;
		} else if ((rc = decode_leaf(js, k))) {
			goto out;
		}
		counts[depth]++;
		need_value = false;
	}
	if (k->count != k->numel)
		rc = count_error(js, k, dims, ndim);
out:
	return rc;
}

int es_js_count_values(const es_js *src, int64_t *count)
{
	es_js js = *src;
	es_error scratch;
	int depth = 0, rc;
	int64_t n = 0;

	js.err = &scratch;
	do {
		int c = es_js_peek(&js);
		if (c == '[') {
			if ((rc = es_js_arr_begin(&js)))
				return rc;
			depth++;
		} else if (c == ']' && depth > 0) {
			js.p++;
			js.depth--;
			depth--;
		} else if (c == ',' && depth > 0) {
			js.p++;
		} else {
			if ((rc = es_js_skip(&js)))
				return rc;
			n++;
		}
	} while (depth > 0);
	*count = n;
	return 0;
}

int es_js_infer_shape(es_js *js, int64_t *dims, int *ndim_out, const char *what)
{
	int64_t counts[ES_MAX_DIMS + 1];
	bool known[ES_MAX_DIMS + 1] = { false };
	int ndim = -1, depth = 0;
	bool need_value = true;
	int rc = 0;

	int c = es_js_peek(js);
	if (c != '[') {
		if (c == '{') {
			rc = es_error_set(js->err, ES_EINVAL,
					  "%s: expected a value or an array, got an object", what);
			goto out;
		}
		*ndim_out = 0;
		rc = es_js_skip(js);
		goto out;
	}
	for (;;) {
		c = es_js_peek(js);
		if (c == '[' && need_value) {
			if (depth >= ES_MAX_DIMS) {
				rc = es_error_set(js->err, ES_EINVAL,
						  "%s: more than %d levels of nesting",
						  what, ES_MAX_DIMS);
				goto out;
			}
			if (ndim >= 0 && depth >= ndim)
				goto ragged;
			if (js->depth + depth >= ES_JS_MAX_DEPTH) {
				rc = es_js_fail(js, "nesting deeper than 64");
				goto out;
			}
			js->p++;
			counts[++depth] = 0;
			continue;
		}
		if (c == ']' && need_value && counts[depth] > 0) {
			rc = es_js_fail(js, "expected a value after ','");
			goto out;
		}
		if (c == ']') {
			js->p++;
			int64_t n = counts[depth];
			if (ndim < 0)
				ndim = depth; /* an empty array ends the nesting */
			if (known[depth] && dims[depth - 1] != n)
				goto ragged;
			dims[depth - 1] = n;
			known[depth] = true;
			if (--depth == 0)
				break;
			counts[depth]++;
			need_value = false;
			continue;
		}
		if (!need_value) {
			if (c != ',') {
				rc = es_js_fail(js, "expected ',' or ']'");
				goto out;
			}
			js->p++;
			need_value = true;
			continue;
		}
		if (c == '{') {
			rc = es_error_set(js->err, ES_EINVAL,
					  "%s: expected a value or an array, got an object", what);
			goto out;
		}
		if (ndim < 0)
			ndim = depth;
		else if (depth != ndim)
			goto ragged;
		if ((rc = es_js_skip(js)))
			goto out;
		counts[depth]++;
		need_value = false;
	}
	*ndim_out = ndim;
	goto out;
ragged:
	rc = es_error_set(js->err, ES_EINVAL,
			  "%s: arrays are ragged (every array at one depth must have the same length and values must all be at the same depth)",
			  what);
out:
	return rc;
}
