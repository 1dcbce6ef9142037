/*
 * KServe v2 (Open Inference Protocol) REST codec: infer requests in JSON
 * with the binary tensor data extension, infer responses, error bodies.
 *
 * The request parser walks the JSON once with the tokenizer of
 * json_scan.h. "data" arrays decode straight into the typed tensor buffer
 * when the input's name, datatype and shape came before them (what every
 * client sends); otherwise their text span is validated, kept, and decoded
 * when the input object ends. Binary inputs point into the body.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/codec.h"
#include "api/json_num.h"
#include "api/json_scan.h"
#include "base/alloc.h"
#include "base/status.h"

/* Longest name printed in an error message. */
#define NAME_SHOW 100

static const struct {
	const char *name;
	es_dtype dt;
} v2_types[] = {
	{ "BOOL", ES_DT_BOOL },     { "UINT8", ES_DT_UINT8 },
	{ "UINT16", ES_DT_UINT16 }, { "UINT32", ES_DT_UINT32 },
	{ "UINT64", ES_DT_UINT64 }, { "INT8", ES_DT_INT8 },
	{ "INT16", ES_DT_INT16 },   { "INT32", ES_DT_INT32 },
	{ "INT64", ES_DT_INT64 },   { "FP16", ES_DT_FLOAT16 },
	{ "FP32", ES_DT_FLOAT },    { "FP64", ES_DT_DOUBLE },
	{ "BF16", ES_DT_BFLOAT16 }, { "BYTES", ES_DT_STRING },
};

es_dtype es_v2_dtype(const char *name)
{
	if (!name)
		return ES_DT_UNDEFINED;
	for (size_t i = 0; i < sizeof(v2_types) / sizeof(v2_types[0]); i++)
		if (!strcmp(name, v2_types[i].name))
			return v2_types[i].dt;
	return ES_DT_UNDEFINED;
}

const char *es_v2_datatype_name(es_dtype dt)
{
	for (size_t i = 0; i < sizeof(v2_types) / sizeof(v2_types[0]); i++)
		if (v2_types[i].dt == dt)
			return v2_types[i].name;
	return NULL;
}

/* ---- request parsing ------------------------------------------------------ */

struct input {
	es_v2_tensor t;
	bool has_shape;
	bool has_data;
	bool decoded;
	const char *data_at;    /* deferred "data" text */
	size_t data_len;
	int64_t binary_size;    /* -1: not a binary input */
	int64_t numel;
};

struct parser {
	es_js js;
	const char *body;
	size_t len;
	size_t json_len;
	void *mem;
	struct input *in;
	size_t n_in, cap_in;
	es_v2_output_req *out;
	size_t n_out, cap_out;
	bool binary_data_output;
	int64_t timeout_us;
	char *id;
	char *parameters;
	es_error *err;
};

/* "input 'name'" or "input 3" for messages. */
static void input_label(char *buf, size_t cap, const struct input *in, size_t idx)
{
	if (in->t.name)
		snprintf(buf, cap, "input '%.*s'", NAME_SHOW, in->t.name);
	else
		snprintf(buf, cap, "input %zu", idx);
}

static int grow(void **arr, size_t *cap, size_t n, size_t elem)
{
	if (n < *cap)
		return 0;
	size_t ncap = *cap ? *cap * 2 : 4, bytes;
	if (es_mul_size(ncap, elem, &bytes))
		return ES_ENOMEM;
	void *p = realloc(*arr, bytes);
	if (!p)
		return ES_ENOMEM;
	*arr = p;
	*cap = ncap;
	return 0;
}

enum param_kind { PARAMS_REQUEST, PARAMS_INPUT, PARAMS_OUTPUT };

static int param_int(struct parser *ps, const char *what, const char *key,
		     int64_t *out)
{
	const char *s;
	size_t n;
	int c = es_js_peek(&ps->js);

	if (c != '-' && (c < '0' || c > '9'))
		return es_error_set(ps->err, ES_EINVAL,
				    "%s: parameter '%s' must be a non-negative integer",
				    what, key);
	int rc = es_js_number(&ps->js, &s, &n);
	if (rc)
		return rc;
	rc = es_num_to_i64(s, n, out);
	if (rc || *out < 0)
		return es_error_set(ps->err, rc == ES_ERANGE ? ES_ERANGE : ES_EINVAL,
				    "%s: parameter '%s' must be a non-negative integer, got %.*s",
				    what, key, n > 40 ? 40 : (int)n, s);
	return 0;
}

static int param_bool(struct parser *ps, const char *what, const char *key, bool *out)
{
	int c = es_js_peek(&ps->js);
	if (c != 't' && c != 'f')
		return es_error_set(ps->err, ES_EINVAL,
				    "%s: parameter '%s' must be true or false", what, key);
	return es_js_bool(&ps->js, out);
}

/*
 * A "parameters" object: recognised keys are read into the parser or the
 * input/output, everything is kept as text in *text.
 */
static int parse_params(struct parser *ps, enum param_kind kind, const char *what,
			void *target, char **text)
{
	es_js *js = &ps->js;
	es_js_str key;
	bool first = true;
	int rc;

	if (es_js_peek(js) != '{')
		return es_error_set(ps->err, ES_EINVAL, "%s: 'parameters' must be an object",
				    what);
	const char *start = js->p;
	if ((rc = es_js_obj_begin(js)))
		return rc;
	while ((rc = es_js_obj_next(js, &first, &key)) > 0) {
		if (kind == PARAMS_REQUEST && es_js_str_eq(&key, "binary_data_output"))
			rc = param_bool(ps, what, "binary_data_output", &ps->binary_data_output);
		else if (kind == PARAMS_REQUEST && es_js_str_eq(&key, "timeout"))
			rc = param_int(ps, what, "timeout", &ps->timeout_us);
		else if (kind == PARAMS_INPUT && es_js_str_eq(&key, "binary_data_size"))
			rc = param_int(ps, what, "binary_data_size",
				       &((struct input *)target)->binary_size);
		else if (kind == PARAMS_OUTPUT && es_js_str_eq(&key, "binary_data")) {
			es_v2_output_req *o = target;
			rc = param_bool(ps, what, "binary_data", &o->binary);
			o->has_binary = true;
		} else
			rc = es_js_skip(js);
		if (rc)
			return rc;
	}
	if (rc)
		return rc;
	size_t n = (size_t)(js->p - start);
	char *t = es_mem_alloc(&ps->mem, n + 1);
	if (!t)
		return es_error_set(ps->err, ES_ENOMEM, "out of memory");
	memcpy(t, start, n);
	t[n] = '\0';
	*text = t;
	return 0;
}

static int parse_string_field(struct parser *ps, const char *what,
			      const char *field, char **out)
{
	es_js_str str;
	int rc;

	if (es_js_peek(&ps->js) != '"')
		return es_error_set(ps->err, ES_EINVAL, "%s: '%s' must be a string",
				    what, field);
	if ((rc = es_js_string(&ps->js, &str)))
		return rc;
	rc = es_mem_strdup(&ps->mem, &str, out);
	if (rc == ES_ENOMEM)
		return es_error_set(ps->err, rc, "out of memory");
	if (rc)
		return es_error_set(ps->err, rc, "%s: '%s' contains a NUL character",
				    what, field);
	return 0;
}

static int parse_shape(struct parser *ps, struct input *in, const char *what)
{
	es_js *js = &ps->js;
	bool first = true;
	int rc;

	if (es_js_peek(js) != '[')
		return es_error_set(ps->err, ES_EINVAL,
				    "%s: 'shape' must be an array of integers", what);
	if ((rc = es_js_arr_begin(js)))
		return rc;
	in->t.ndim = 0;
	while ((rc = es_js_arr_next(js, &first)) > 0) {
		const char *s;
		size_t n;
		int64_t v;
		int c = es_js_peek(js);
		if (c != '-' && (c < '0' || c > '9'))
			return es_error_set(ps->err, ES_EINVAL,
					    "%s: 'shape' must be an array of integers", what);
		if ((rc = es_js_number(js, &s, &n)))
			return rc;
		if (in->t.ndim == ES_MAX_DIMS)
			return es_error_set(ps->err, ES_ERANGE,
					    "%s: shape has more than %d dimensions",
					    what, ES_MAX_DIMS);
		rc = es_num_to_i64(s, n, &v);
		if (rc == ES_EINVAL)
			return es_error_set(ps->err, ES_EINVAL,
					    "%s: shape[%d] is %.*s, expected an integer",
					    what, in->t.ndim, n > 40 ? 40 : (int)n, s);
		if (rc || v < 0)
			return es_error_set(ps->err, ES_ERANGE,
					    "%s: shape[%d] is %.*s, expected a non-negative integer",
					    what, in->t.ndim, n > 40 ? 40 : (int)n, s);
		in->t.dims[in->t.ndim++] = v;
	}
	if (rc)
		return rc;
	in->has_shape = true;
	return 0;
}

/* Checks datatype and shape once both are known; sets numel. */
static int check_type_shape(struct parser *ps, struct input *in, const char *what)
{
	char shape[128];

	in->t.dtype = es_v2_dtype(in->t.datatype);
	if (in->t.dtype == ES_DT_UNDEFINED)
		return es_error_set(ps->err, ES_EINVAL,
				    "%s: unknown datatype '%.40s' (expected BOOL, UINT8..UINT64, INT8..INT64, FP16, FP32, FP64, BF16 or BYTES)",
				    what, in->t.datatype);
	size_t esz = es_dtype_size(in->t.dtype);
	if (es_shape_numel(in->t.dims, in->t.ndim, esz ? esz : 1, &in->numel)) {
		es_js_shape_str(shape, sizeof(shape), in->t.dims, in->t.ndim);
		return es_error_set(ps->err, ES_ERANGE,
				    "%s: shape %s has too many elements", what, shape);
	}
	return 0;
}

/* Decodes the "data" value at the cursor of js into the input. */
static int decode_input_data(struct parser *ps, es_js *js, struct input *in,
			     const char *what)
{
	es_js_sink sink = {
		.dtype = in->t.dtype,
		.numel = in->numel,
		.what = what,
		.type_name = in->t.datatype,
	};
	es_buf strings = ES_BUF_INIT;
	char shape[128];
	int rc;

	/* Every element takes at least one byte of text (two for strings):
	 * refuse before allocating for a shape the text cannot fill. */
	size_t left = (size_t)(js->end - js->p);
	if ((uint64_t)in->numel > left / (in->t.dtype == ES_DT_STRING ? 2 : 1) &&
	    in->numel > 1) {
		int64_t have;
		es_js_shape_str(shape, sizeof(shape), in->t.dims, in->t.ndim);
		if (es_js_count_values(js, &have) == 0)
			return es_error_set(ps->err, ES_EINVAL,
					    "%s: data has %lld elements, shape %s needs %lld",
					    what, (long long)have, shape, (long long)in->numel);
		return es_error_set(ps->err, ES_EINVAL,
				    "%s: shape %s needs %lld elements, more than the data holds",
				    what, shape, (long long)in->numel);
	}
	if (in->t.dtype == ES_DT_STRING) {
		sink.strings = &strings;
	} else {
		size_t nbytes = (size_t)in->numel * es_dtype_size(in->t.dtype);
		sink.data = es_mem_alloc_aligned(&ps->mem, nbytes);
		if (!sink.data)
			return es_error_set(ps->err, ES_ENOMEM, "out of memory");
		in->t.nbytes = nbytes;
	}
	rc = es_js_decode_data(js, in->t.dims, in->t.ndim, true, &sink);
	if (rc) {
		es_buf_free(&strings);
		return rc;
	}
	if (in->t.dtype == ES_DT_STRING) {
		in->t.nbytes = strings.len;
		if (!strings.data && es_buf_reserve(&strings, 0))
			return es_error_set(ps->err, ES_ENOMEM, "out of memory");
		in->t.data = es_buf_steal(&strings, NULL);
		if (es_mem_adopt(&ps->mem, in->t.data))
			return es_error_set(ps->err, ES_ENOMEM, "out of memory");
	} else {
		in->t.data = sink.data;
	}
	in->decoded = true;
	return 0;
}

static bool ready_to_decode(const struct input *in)
{
	return in->t.name && in->t.datatype && in->has_shape && in->binary_size < 0;
}

static int parse_input(struct parser *ps, struct input *in, size_t idx)
{
	es_js *js = &ps->js;
	es_js_str key;
	bool first = true;
	bool seen_name = false, seen_type = false, seen_params = false;
	char what[NAME_SHOW + 32];
	int rc;

	input_label(what, sizeof(what), in, idx);
	if (es_js_peek(js) != '{')
		return es_error_set(ps->err, ES_EINVAL, "%s: must be an object", what);
	if ((rc = es_js_obj_begin(js)))
		return rc;
	while ((rc = es_js_obj_next(js, &first, &key)) > 0) {
		bool dup = false;
		if (es_js_str_eq(&key, "name")) {
			dup = seen_name;
			seen_name = true;
			if (!dup && !(rc = parse_string_field(ps, what, "name", &in->t.name)))
				input_label(what, sizeof(what), in, idx);
		} else if (es_js_str_eq(&key, "datatype")) {
			dup = seen_type;
			seen_type = true;
			if (!dup)
				rc = parse_string_field(ps, what, "datatype", &in->t.datatype);
		} else if (es_js_str_eq(&key, "shape")) {
			dup = in->has_shape;
			if (!dup)
				rc = parse_shape(ps, in, what);
		} else if (es_js_str_eq(&key, "parameters")) {
			dup = seen_params;
			seen_params = true;
			if (!dup)
				rc = parse_params(ps, PARAMS_INPUT, what, in, &in->t.parameters);
		} else if (es_js_str_eq(&key, "data")) {
			dup = in->has_data;
			in->has_data = true;
			if (dup) {
			} else if (ready_to_decode(in)) {
				rc = check_type_shape(ps, in, what);
				if (!rc)
					rc = decode_input_data(ps, js, in, what);
			} else {
				/* keep the text; decode when the object is complete */
				es_js_peek(js);
				in->data_at = js->p;
				rc = es_js_skip(js);
				in->data_len = (size_t)(js->p - in->data_at);
			}
		} else {
			rc = es_js_skip(js);
		}
		if (dup)
			return es_error_set(ps->err, ES_EINVAL, "%s: duplicate key '%.*s'",
					    what, (int)key.n, key.s);
		if (rc)
			return rc;
	}
	if (rc)
		return rc;

	if (!in->t.name)
		return es_error_set(ps->err, ES_EINVAL, "%s has no 'name'", what);
	if (!in->t.datatype)
		return es_error_set(ps->err, ES_EINVAL, "%s has no 'datatype'", what);
	if (!in->has_shape)
		return es_error_set(ps->err, ES_EINVAL, "%s has no 'shape'", what);
	if (!in->decoded && (rc = check_type_shape(ps, in, what)))
		return rc;
	if (in->has_data && in->binary_size >= 0)
		return es_error_set(ps->err, ES_EINVAL,
				    "%s has both 'data' and a binary_data_size parameter",
				    what);
	if (!in->has_data && in->binary_size < 0)
		return es_error_set(ps->err, ES_EINVAL,
				    "%s has neither 'data' nor a binary_data_size parameter",
				    what);
	if (in->has_data && !in->decoded) {
		es_js sub;
		es_js_init(&sub, in->data_at, in->data_len, ps->err);
		sub.base = ps->body;
		sub.depth = js->depth + 1;
		rc = decode_input_data(ps, &sub, in, what);
	}
	return rc;
}

static int parse_inputs(struct parser *ps)
{
	es_js *js = &ps->js;
	bool first = true;
	int rc;

	if (es_js_peek(js) != '[')
		return es_error_set(ps->err, ES_EINVAL, "'inputs' must be an array");
	if ((rc = es_js_arr_begin(js)))
		return rc;
	while ((rc = es_js_arr_next(js, &first)) > 0) {
		if (grow((void **)&ps->in, &ps->cap_in, ps->n_in, sizeof(*ps->in)))
			return es_error_set(ps->err, ES_ENOMEM, "out of memory");
		struct input *in = &ps->in[ps->n_in++];
		memset(in, 0, sizeof(*in));
		in->binary_size = -1;
		if ((rc = parse_input(ps, in, ps->n_in - 1)))
			return rc;
	}
	return rc;
}

static int parse_output(struct parser *ps, es_v2_output_req *o, size_t idx)
{
	es_js *js = &ps->js;
	es_js_str key;
	bool first = true, seen_params = false;
	char what[NAME_SHOW + 32];
	char *params = NULL;
	int rc;

	snprintf(what, sizeof(what), "output %zu", idx);
	if (es_js_peek(js) != '{')
		return es_error_set(ps->err, ES_EINVAL, "%s: must be an object", what);
	if ((rc = es_js_obj_begin(js)))
		return rc;
	while ((rc = es_js_obj_next(js, &first, &key)) > 0) {
		if (es_js_str_eq(&key, "name")) {
			if (o->name)
				return es_error_set(ps->err, ES_EINVAL,
						    "%s: duplicate key 'name'", what);
			if ((rc = parse_string_field(ps, what, "name", &o->name)))
				return rc;
			snprintf(what, sizeof(what), "output '%.*s'", NAME_SHOW, o->name);
		} else if (es_js_str_eq(&key, "parameters")) {
			if (seen_params)
				return es_error_set(ps->err, ES_EINVAL,
						    "%s: duplicate key 'parameters'", what);
			seen_params = true;
			rc = parse_params(ps, PARAMS_OUTPUT, what, o, &params);
		} else {
			rc = es_js_skip(js);
		}
		if (rc)
			return rc;
	}
	if (rc)
		return rc;
	if (!o->name)
		return es_error_set(ps->err, ES_EINVAL, "%s has no 'name'", what);
	return 0;
}

static int parse_outputs(struct parser *ps)
{
	es_js *js = &ps->js;
	bool first = true;
	int rc;

	if (es_js_peek(js) != '[')
		return es_error_set(ps->err, ES_EINVAL, "'outputs' must be an array");
	if ((rc = es_js_arr_begin(js)))
		return rc;
	while ((rc = es_js_arr_next(js, &first)) > 0) {
		if (grow((void **)&ps->out, &ps->cap_out, ps->n_out, sizeof(*ps->out)))
			return es_error_set(ps->err, ES_ENOMEM, "out of memory");
		es_v2_output_req *o = &ps->out[ps->n_out++];
		memset(o, 0, sizeof(*o));
		if ((rc = parse_output(ps, o, ps->n_out - 1)))
			return rc;
	}
	return rc;
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* First name that occurs twice, or NULL. O(n log n): a hostile request may
 * carry many thousands of names. */
static const char *find_duplicate(char **names, size_t n, int *rc)
{
	*rc = 0;
	if (n < 2)
		return NULL;
	char **sorted = malloc(n * sizeof(*sorted));
	if (!sorted) {
		*rc = ES_ENOMEM;
		return NULL;
	}
	memcpy(sorted, names, n * sizeof(*sorted));
	qsort(sorted, n, sizeof(*sorted), cmp_name);
	const char *dup = NULL;
	for (size_t i = 1; i < n && !dup; i++)
		if (!strcmp(sorted[i - 1], sorted[i]))
			dup = sorted[i];
	free(sorted);
	return dup;
}

static int check_duplicates(struct parser *ps)
{
	size_t n = ps->n_in > ps->n_out ? ps->n_in : ps->n_out;
	if (n < 2)
		return 0;
	char **names = malloc(n * sizeof(*names));
	const char *dup;
	int rc;

	if (!names)
		return es_error_set(ps->err, ES_ENOMEM, "out of memory");
	for (size_t i = 0; i < ps->n_in; i++)
		names[i] = ps->in[i].t.name;
	dup = find_duplicate(names, ps->n_in, &rc);
	if (dup) {
		rc = es_error_set(ps->err, ES_EINVAL, "input '%.*s' appears more than once",
				  NAME_SHOW, dup);
		goto out;
	}
	if (rc)
		goto out;
	for (size_t i = 0; i < ps->n_out; i++)
		names[i] = ps->out[i].name;
	dup = find_duplicate(names, ps->n_out, &rc);
	if (dup)
		rc = es_error_set(ps->err, ES_EINVAL,
				  "output '%.*s' is requested more than once", NAME_SHOW, dup);
out:
	if (rc == ES_ENOMEM)
		es_error_set(ps->err, rc, "out of memory");
	free(names);
	return rc;
}

/* Validates a BYTES binary buffer: exactly numel length-prefixed elements. */
static int check_bytes_buffer(struct parser *ps, const struct input *in,
			      const unsigned char *p, size_t size, const char *what)
{
	size_t off = 0;
	int64_t count = 0;

	while (off < size) {
		uint32_t l;
		if (size - off < 4)
			return es_error_set(ps->err, ES_EINVAL,
					    "%s: BYTES element %lld: binary data ends inside its 4-byte length",
					    what, (long long)count);
		memcpy(&l, p + off, 4);
		off += 4;
		if (l > size - off)
			return es_error_set(ps->err, ES_EINVAL,
					    "%s: BYTES element %lld: length %u runs past the input's binary data (%zu bytes left)",
					    what, (long long)count, l, size - off);
		off += l;
		count++;
	}
	if (count != in->numel) {
		char shape[128];
		es_js_shape_str(shape, sizeof(shape), in->t.dims, in->t.ndim);
		return es_error_set(ps->err, ES_EINVAL,
				    "%s: binary data holds %lld BYTES elements, shape %s needs %lld",
				    what, (long long)count, shape, (long long)in->numel);
	}
	return 0;
}

static int attach_binary(struct parser *ps)
{
	size_t off = ps->json_len;
	char what[NAME_SHOW + 32];
	int rc;

	for (size_t i = 0; i < ps->n_in; i++) {
		struct input *in = &ps->in[i];
		if (in->binary_size < 0)
			continue;
		input_label(what, sizeof(what), in, i);
		size_t left = ps->len - off;
		if ((uint64_t)in->binary_size > left)
			return es_error_set(ps->err, ES_EINVAL,
					    "%s: binary_data_size is %lld but only %zu bytes of binary data are left in the body",
					    what, (long long)in->binary_size, left);
		size_t size = (size_t)in->binary_size;
		const unsigned char *p = (const unsigned char *)ps->body + off;
		if (in->t.dtype == ES_DT_STRING) {
			if ((rc = check_bytes_buffer(ps, in, p, size, what)))
				return rc;
		} else {
			size_t need = (size_t)in->numel * es_dtype_size(in->t.dtype);
			if (size != need) {
				char shape[128];
				es_js_shape_str(shape, sizeof(shape), in->t.dims, in->t.ndim);
				return es_error_set(ps->err, ES_EINVAL,
						    "%s: binary_data_size is %zu, shape %s of %s needs %zu bytes",
						    what, size, shape, in->t.datatype, need);
			}
			/* BOOL is one byte 0 or 1; the data is used in place, so
			 * other values are refused rather than normalised */
			for (size_t k = 0; in->t.dtype == ES_DT_BOOL && k < size; k++)
				if (p[k] > 1)
					return es_error_set(ps->err, ES_EINVAL,
							    "%s: BOOL element %zu is %u in the binary data, expected 0 or 1",
							    what, k, p[k]);
		}
		in->t.data = (void *)p;
		in->t.nbytes = size;
		in->t.from_binary = true;
		off += size;
	}
	if (off != ps->len)
		return es_error_set(ps->err, ES_EINVAL,
				    "the body has %zu bytes after the JSON header, the binary inputs' binary_data_size add up to %zu",
				    ps->len - ps->json_len, off - ps->json_len);
	return 0;
}

static int parse_top(struct parser *ps)
{
	es_js *js = &ps->js;
	es_js_str key;
	bool first = true;
	bool seen_id = false, seen_params = false, seen_in = false, seen_out = false;
	int rc;

	if (es_js_peek(js) != '{') {
		if (es_js_peek(js) == -1)
			return es_js_fail(js, "empty request body");
		return es_error_set(ps->err, ES_EPARSE,
				    "the request body must be a JSON object");
	}
	if ((rc = es_js_obj_begin(js)))
		return rc;
	while ((rc = es_js_obj_next(js, &first, &key)) > 0) {
		bool *seen = NULL;
		if (es_js_str_eq(&key, "id"))
			seen = &seen_id;
		else if (es_js_str_eq(&key, "parameters"))
			seen = &seen_params;
		else if (es_js_str_eq(&key, "inputs"))
			seen = &seen_in;
		else if (es_js_str_eq(&key, "outputs"))
			seen = &seen_out;
		if (seen && *seen)
			return es_error_set(ps->err, ES_EINVAL,
					    "duplicate key '%.*s' in the request",
					    (int)key.n, key.s);
		if (seen)
			*seen = true;
		if (seen == &seen_id)
			rc = parse_string_field(ps, "request", "id", &ps->id);
		else if (seen == &seen_params)
			rc = parse_params(ps, PARAMS_REQUEST, "request", NULL,
					  &ps->parameters);
		else if (seen == &seen_in)
			rc = parse_inputs(ps);
		else if (seen == &seen_out)
			rc = parse_outputs(ps);
		else
			rc = es_js_skip(js);
		if (rc)
			return rc;
	}
	if (rc)
		return rc;
	if ((rc = es_js_finish(js)))
		return rc;
	if (!seen_in)
		return es_error_set(ps->err, ES_EINVAL, "the request has no 'inputs'");
	return 0;
}

int es_v2_parse_request(const char *body, size_t len, size_t json_len,
			es_v2_request *out, es_error *err)
{
	struct parser ps;
	int rc;

	memset(out, 0, sizeof(*out));
	out->timeout_us = -1;
	if (!body && len)
		return es_error_set(err, ES_EINVAL, "no request body");
	if (json_len > len)
		return es_error_set(err, ES_EINVAL,
				    "Inference-Header-Content-Length is %zu, larger than the body (%zu bytes)",
				    json_len, len);
	memset(&ps, 0, sizeof(ps));
	ps.body = body;
	ps.len = len;
	ps.json_len = json_len;
	ps.timeout_us = -1;
	ps.err = err;
	es_js_init(&ps.js, body ? body : "", json_len, err);

	if ((rc = parse_top(&ps)))
		goto fail;
	if ((rc = check_duplicates(&ps)))
		goto fail;
	if ((rc = attach_binary(&ps)))
		goto fail;

	if (ps.n_in) {
		out->inputs = es_mem_alloc(&ps.mem, ps.n_in * sizeof(*out->inputs));
		if (!out->inputs) {
			rc = es_error_set(err, ES_ENOMEM, "out of memory");
			goto fail;
		}
		for (size_t i = 0; i < ps.n_in; i++)
			out->inputs[i] = ps.in[i].t;
	}
	if (ps.n_out) {
		out->outputs = es_mem_alloc(&ps.mem, ps.n_out * sizeof(*out->outputs));
		if (!out->outputs) {
			rc = es_error_set(err, ES_ENOMEM, "out of memory");
			goto fail;
		}
		memcpy(out->outputs, ps.out, ps.n_out * sizeof(*out->outputs));
	}
	out->n_inputs = ps.n_in;
	out->n_outputs = ps.n_out;
	out->id = ps.id;
	out->parameters = ps.parameters;
	out->binary_data_output = ps.binary_data_output;
	out->timeout_us = ps.timeout_us;
	out->mem = ps.mem;
	free(ps.in);
	free(ps.out);
	return 0;

fail:
	es_mem_free(&ps.mem);
	free(ps.in);
	free(ps.out);
	memset(out, 0, sizeof(*out));
	out->timeout_us = -1;
	return rc;
}

void es_v2_request_free(es_v2_request *r)
{
	if (!r)
		return;
	es_mem_free(&r->mem);
	memset(r, 0, sizeof(*r));
	r->timeout_us = -1;
}

/* ---- response encoding ------------------------------------------------- */

/* Bytes of the tensor's data to send: checks data against the shape. */
static int output_bytes(const es_v2_output *o, size_t *nbytes)
{
	const es_tensor *t = o->tensor;
	size_t esz = es_dtype_size(t->dtype);
	int64_t numel;

	if (es_shape_numel(t->dims, t->ndim, esz ? esz : 1, &numel))
		return ES_EINVAL;
	if (t->dtype == ES_DT_STRING) {
		/* walk the serialisation: numel elements, exactly */
		const unsigned char *p = t->data;
		size_t off = 0;
		for (int64_t i = 0; i < numel; i++) {
			uint32_t l;
			if (t->nbytes - off < 4)
				return ES_EINVAL;
			memcpy(&l, p + off, 4);
			off += 4;
			if (l > t->nbytes - off)
				return ES_EINVAL;
			off += l;
		}
		*nbytes = off;
		return 0;
	}
	size_t need = (size_t)numel * esz;
	if (t->nbytes < need || (need && !t->data))
		return ES_EINVAL;
	*nbytes = need;
	return 0;
}

int es_v2_encode_response(es_buf *out, size_t *json_len, const char *model_name,
			  int64_t version, const char *id,
			  const char *parameters_json,
			  const es_v2_output *outputs, size_t n_outputs)
{
	size_t start = out->len;
	int rc = 0;

	es_buf_puts(out, "{\"model_name\":");
	es_buf_json_str(out, model_name ? model_name : "",
			model_name ? strlen(model_name) : 0);
	if (version >= 0)
		es_buf_printf(out, ",\"model_version\":\"%lld\"", (long long)version);
	if (id) {
		es_buf_puts(out, ",\"id\":");
		es_buf_json_str(out, id, strlen(id));
	}
	if (parameters_json && parameters_json[0]) {
		es_buf_puts(out, ",\"parameters\":");
		es_buf_puts(out, parameters_json);
	}
	es_buf_puts(out, ",\"outputs\":[");
	for (size_t i = 0; i < n_outputs; i++) {
		const es_v2_output *o = &outputs[i];
		const es_tensor *t = o->tensor;
		const char *dtname = t ? es_v2_datatype_name(t->dtype) : NULL;
		size_t nbytes;

		if (!dtname || output_bytes(o, &nbytes)) {
			rc = ES_EINVAL;
			goto fail;
		}
		es_buf_puts(out, i ? ",{\"name\":" : "{\"name\":");
		es_buf_json_str(out, o->name ? o->name : "", o->name ? strlen(o->name) : 0);
		es_buf_printf(out, ",\"datatype\":\"%s\",\"shape\":[", dtname);
		for (int d = 0; d < t->ndim; d++)
			es_buf_printf(out, d ? ",%lld" : "%lld", (long long)t->dims[d]);
		if (o->binary) {
			es_buf_printf(out, "],\"parameters\":{\"binary_data_size\":%zu}}", nbytes);
			continue;
		}
		es_buf_puts(out, "],\"data\":");
		int64_t numel;
		es_shape_numel(t->dims, t->ndim, 1, &numel);
		if ((rc = es_json_put_values(out, t->dtype, t->data, nbytes, &numel, 1,
					     NULL)))
			goto fail;
		es_buf_putc(out, '}');
	}
	es_buf_puts(out, "]}");
	if (out->failed) {
		rc = ES_ENOMEM;
		goto fail;
	}
	*json_len = out->len - start;
	for (size_t i = 0; i < n_outputs; i++) {
		size_t nbytes;
		if (!outputs[i].binary)
			continue;
		output_bytes(&outputs[i], &nbytes);
		if ((rc = es_buf_append(out, outputs[i].tensor->data, nbytes)))
			goto fail;
	}
	return 0;

fail:
	if (out->failed)
		rc = ES_ENOMEM;
	if (out->data) {
		out->len = start;
		out->data[start] = '\0';
	}
	return rc;
}

int es_encode_error(es_buf *out, const char *message)
{
	es_buf_puts(out, "{\"error\":");
	es_buf_json_str(out, message ? message : "", message ? strlen(message) : 0);
	return es_buf_putc(out, '}');
}
