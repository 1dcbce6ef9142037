/*
 * TF-Serving REST :predict codec, row ("instances") and columnar
 * ("inputs") formats.
 *
 * Parsing first records, for every model input, the text span of its value
 * (one span per instance in the row format), then infers the shape of each
 * span from its nesting, checks that all instances agree, allocates the
 * tensor once and decodes the spans into it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/codec.h"
#include "api/json_num.h"
#include "api/json_scan.h"
#include "base/alloc.h"
#include "base/status.h"

#define NAME_SHOW 100

struct span {
	const char *at;
	size_t len;
	int depth; /* nesting depth of the value in the document */
};

struct tfs_parser {
	es_js js;
	const char *body;
	const es_tfs_input_info *info;
	size_t n_info;
	struct span *spans; /* [instance][input], row-major */
	size_t n_inst, cap_inst;
	void *mem;
	es_error *err;
};

static const char *type_label(es_dtype dt)
{
	const char *n = es_v2_datatype_name(dt);
	return n ? n : es_dtype_name(dt);
}

static int grow_instances(struct tfs_parser *ps)
{
	if (ps->n_inst < ps->cap_inst)
		return 0;
	size_t ncap = ps->cap_inst ? ps->cap_inst * 2 : 8, bytes;
	if (es_mul_size(ncap, ps->n_info, &bytes) ||
	    es_mul_size(bytes, sizeof(struct span), &bytes))
		return ES_ENOMEM;
	struct span *p = realloc(ps->spans, bytes);
	if (!p)
		return ES_ENOMEM;
	ps->spans = p;
	ps->cap_inst = ncap;
	return 0;
}

/* Records the value at the cursor as a span (validated by skipping it). */
static int take_span(struct tfs_parser *ps, struct span *sp)
{
	es_js *js = &ps->js;
	int rc;

	es_js_peek(js);
	sp->at = js->p;
	sp->depth = js->depth;
	rc = es_js_skip(js);
	sp->len = (size_t)(js->p - sp->at);
	return rc;
}

static int input_index(const struct tfs_parser *ps, const es_js_str *key)
{
	for (size_t i = 0; i < ps->n_info; i++)
		if (es_js_str_eq(key, ps->info[i].name))
			return (int)i;
	return -1;
}

/* An object keyed by input name: one span per input into row[]. */
static int parse_keyed(struct tfs_parser *ps, struct span *row, const char *where)
{
	es_js *js = &ps->js;
	es_js_str key;
	bool first = true;
	int rc;

	for (size_t i = 0; i < ps->n_info; i++)
		row[i].at = NULL;
	if ((rc = es_js_obj_begin(js)))
		return rc;
	while ((rc = es_js_obj_next(js, &first, &key)) > 0) {
		int idx = input_index(ps, &key);
		if (idx < 0)
			return es_error_set(ps->err, ES_EINVAL,
					    "%s: '%.*s' is not an input of the model",
					    where, key.n > NAME_SHOW ? NAME_SHOW : (int)key.n,
					    key.s);
		if (row[idx].at)
			return es_error_set(ps->err, ES_EINVAL,
					    "%s: input '%.*s' appears twice", where,
					    NAME_SHOW, ps->info[idx].name);
		if ((rc = take_span(ps, &row[idx])))
			return rc;
	}
	if (rc)
		return rc;
	for (size_t i = 0; i < ps->n_info; i++)
		if (!row[i].at)
			return es_error_set(ps->err, ES_EINVAL, "%s: input '%.*s' is missing",
					    where, NAME_SHOW, ps->info[i].name);
	return 0;
}

static int parse_instances(struct tfs_parser *ps)
{
	es_js *js = &ps->js;
	bool first = true;
	char where[64];
	int rc;

	if (es_js_peek(js) != '[')
		return es_error_set(ps->err, ES_EINVAL, "'instances' must be an array");
	if ((rc = es_js_arr_begin(js)))
		return rc;
	while ((rc = es_js_arr_next(js, &first)) > 0) {
		if (grow_instances(ps))
			return es_error_set(ps->err, ES_ENOMEM, "out of memory");
		struct span *row = &ps->spans[ps->n_inst * ps->n_info];
		snprintf(where, sizeof(where), "instance %zu", ps->n_inst);
		ps->n_inst++;
		if (es_js_peek(js) == '{') {
			rc = parse_keyed(ps, row, where);
		} else if (ps->n_info == 1) {
			rc = take_span(ps, &row[0]);
		} else {
			rc = es_error_set(ps->err, ES_EINVAL,
					  "%s: the model has %zu inputs, so each instance must be an object keyed by input name",
					  where, ps->n_info);
		}
		if (rc)
			return rc;
	}
	if (rc)
		return rc;
	if (!ps->n_inst)
		return es_error_set(ps->err, ES_EINVAL, "'instances' is empty");
	return 0;
}

static int parse_columnar(struct tfs_parser *ps)
{
	ps->n_inst = 0;
	if (grow_instances(ps))
		return es_error_set(ps->err, ES_ENOMEM, "out of memory");
	ps->n_inst = 1;
	if (es_js_peek(&ps->js) == '{')
		return parse_keyed(ps, ps->spans, "'inputs'");
	if (ps->n_info != 1)
		return es_error_set(ps->err, ES_EINVAL,
				    "the model has %zu inputs, so 'inputs' must be an object keyed by input name",
				    ps->n_info);
	return take_span(ps, &ps->spans[0]);
}

static int shape_of(struct tfs_parser *ps, const struct span *sp, int64_t *dims,
		    int *ndim, const char *what)
{
	es_js sub;
	es_js_init(&sub, sp->at, sp->len, ps->err);
	sub.base = ps->body;
	sub.depth = sp->depth;
	return es_js_infer_shape(&sub, dims, ndim, what);
}

/* Builds tensor i from its spans. */
static int build_tensor(struct tfs_parser *ps, size_t i, bool columnar,
			es_tensor *t)
{
	const es_tfs_input_info *info = &ps->info[i];
	int64_t dims[ES_MAX_DIMS], d2[ES_MAX_DIMS];
	int ndim, n2;
	char what[NAME_SHOW + 32], shape[128], shape2[128];
	int rc;

	snprintf(what, sizeof(what), "input '%.*s'", NAME_SHOW, info->name);
	if (info->dtype != ES_DT_STRING && !es_dtype_size(info->dtype))
		return es_error_set(ps->err, ES_EUNSUPPORTED,
				    "%s: the model's type %s has no JSON form", what,
				    es_dtype_name(info->dtype));
	if ((rc = shape_of(ps, &ps->spans[i], dims, &ndim, what)))
		return rc;
	for (size_t k = 1; k < ps->n_inst; k++) {
		if ((rc = shape_of(ps, &ps->spans[k * ps->n_info + i], d2, &n2, what)))
			return rc;
		if (n2 != ndim || memcmp(d2, dims, (size_t)ndim * sizeof(int64_t))) {
			es_js_shape_str(shape, sizeof(shape), dims, ndim);
			es_js_shape_str(shape2, sizeof(shape2), d2, n2);
			return es_error_set(ps->err, ES_EINVAL,
					    "%s: instance %zu has shape %s, instance 0 has %s; all instances must have the same shape",
					    what, k, shape2, shape);
		}
	}
	/* full shape: the batch of instances in front (row format) */
	memset(t, 0, sizeof(*t));
	int off = columnar ? 0 : 1;
	if (ndim + off > ES_MAX_DIMS)
		return es_error_set(ps->err, ES_EINVAL, "%s: more than %d dimensions",
				    what, ES_MAX_DIMS);
	if (!columnar)
		t->dims[0] = (int64_t)ps->n_inst;
	memcpy(t->dims + off, dims, (size_t)ndim * sizeof(int64_t));
	t->ndim = ndim + off;
	t->dtype = info->dtype;
	if (info->ndim >= 0 && info->ndim != t->ndim) {
		es_js_shape_str(shape, sizeof(shape), t->dims, t->ndim);
		return es_error_set(ps->err, ES_EINVAL,
				    "%s: the model expects %d dimensions, the request gives %d (shape %s)",
				    what, info->ndim, t->ndim, shape);
	}
	size_t esz = es_dtype_size(t->dtype);
	int64_t numel, inst_numel;
	if (es_shape_numel(t->dims, t->ndim, esz ? esz : 1, &numel) ||
	    es_shape_numel(dims, ndim, 1, &inst_numel))
		return es_error_set(ps->err, ES_ERANGE, "%s: too many elements", what);

	es_js_sink sink = {
		.dtype = t->dtype,
		.what = what,
		.type_name = type_label(t->dtype),
	};
	es_buf strings = ES_BUF_INIT;
	if (t->dtype == ES_DT_STRING) {
		sink.strings = &strings;
	} else {
		t->nbytes = (size_t)numel * esz;
		sink.data = es_mem_alloc_aligned(&ps->mem, t->nbytes);
		if (!sink.data)
			return es_error_set(ps->err, ES_ENOMEM, "out of memory");
	}
	/* one instance at a time, into consecutive elements */
	for (size_t k = 0; k < ps->n_inst; k++) {
		const struct span *sp = &ps->spans[k * ps->n_info + i];
		es_js sub;
		es_js_init(&sub, sp->at, sp->len, ps->err);
		sub.base = ps->body;
		sub.depth = sp->depth;
		sink.numel = sink.count + inst_numel;
		if ((rc = es_js_decode_data(&sub, dims, ndim, false, &sink))) {
			es_buf_free(&strings);
			return rc;
		}
	}
	if (t->dtype == ES_DT_STRING) {
		if (!strings.data && es_buf_reserve(&strings, 0))
			return es_error_set(ps->err, ES_ENOMEM, "out of memory");
		t->nbytes = strings.len;
		t->data = es_buf_steal(&strings, NULL);
		if (es_mem_adopt(&ps->mem, t->data))
			return es_error_set(ps->err, ES_ENOMEM, "out of memory");
	} else {
		t->data = sink.data;
	}
	return 0;
}

int es_tfs_parse_predict(const char *body, size_t len,
			 const es_tfs_input_info *inputs, size_t n_inputs,
			 es_tfs_request *out, es_error *err)
{
	struct tfs_parser ps;
	es_js *js = &ps.js;
	es_js_str key;
	bool first = true, seen_sig = false, seen_data = false, columnar = false;
	int rc;

	memset(out, 0, sizeof(*out));
	memset(&ps, 0, sizeof(ps));
	ps.body = body ? body : "";
	ps.info = inputs;
	ps.n_info = n_inputs;
	ps.err = err;
	es_js_init(js, ps.body, body ? len : 0, err);
	if (!n_inputs)
		return es_error_set(err, ES_EINVAL, "the model has no inputs");

	if (es_js_peek(js) != '{') {
		rc = es_js_peek(js) == -1 ? es_js_fail(js, "empty request body") :
			es_error_set(err, ES_EPARSE, "the request body must be a JSON object");
		goto fail;
	}
	if ((rc = es_js_obj_begin(js)))
		goto fail;
	while ((rc = es_js_obj_next(js, &first, &key)) > 0) {
		if (es_js_str_eq(&key, "signature_name")) {
			es_js_str sig;
			if (seen_sig) {
				rc = es_error_set(err, ES_EINVAL, "duplicate key 'signature_name'");
				goto fail;
			}
			seen_sig = true;
			if (es_js_peek(js) != '"') {
				rc = es_error_set(err, ES_EINVAL, "'signature_name' must be a string");
				goto fail;
			}
			if ((rc = es_js_string(js, &sig)))
				goto fail;
			if (!es_js_str_eq(&sig, "serving_default")) {
				rc = es_error_set(err, ES_EINVAL,
						  "signature_name '%.*s' is unknown (the model has 'serving_default')",
						  sig.n > NAME_SHOW ? NAME_SHOW : (int)sig.n, sig.s);
				goto fail;
			}
		} else if (es_js_str_eq(&key, "instances") || es_js_str_eq(&key, "inputs")) {
			if (seen_data) {
				rc = es_error_set(err, ES_EINVAL,
						  "give exactly one of 'instances' (row format) and 'inputs' (columnar format)");
				goto fail;
			}
			seen_data = true;
			columnar = es_js_str_eq(&key, "inputs");
			rc = columnar ? parse_columnar(&ps) : parse_instances(&ps);
		} else {
			rc = es_js_skip(js);
		}
		if (rc)
			goto fail;
	}
	if (rc || (rc = es_js_finish(js)))
		goto fail;
	if (!seen_data) {
		rc = es_error_set(err, ES_EINVAL,
				  "the request has neither 'instances' (row format) nor 'inputs' (columnar format)");
		goto fail;
	}

	out->tensors = es_mem_alloc(&ps.mem, n_inputs * sizeof(*out->tensors));
	if (!out->tensors) {
		rc = es_error_set(err, ES_ENOMEM, "out of memory");
		goto fail;
	}
	for (size_t i = 0; i < n_inputs; i++)
		if ((rc = build_tensor(&ps, i, columnar, &out->tensors[i])))
			goto fail;
	out->columnar = columnar;
	out->n_tensors = n_inputs;
	out->mem = ps.mem;
	free(ps.spans);
	return 0;

fail:
	free(ps.spans);
	es_mem_free(&ps.mem);
	memset(out, 0, sizeof(*out));
	return rc;
}

void es_tfs_request_free(es_tfs_request *r)
{
	if (!r)
		return;
	es_mem_free(&r->mem);
	memset(r, 0, sizeof(*r));
}

/* ---- encoding --------------------------------------------------------------- */

/* Appends rows [row, row+1) of output o (row < 0: the whole tensor). */
static int put_tensor(es_buf *b, const es_v2_output *o, size_t *offset, bool whole)
{
	const es_tensor *t = o->tensor;
	int rc;
	size_t used = 0;

	if (whole)
		return es_json_put_values(b, t->dtype, t->data, t->nbytes, t->dims,
					  t->ndim, NULL);
	rc = es_json_put_values(b, t->dtype, (const char *)t->data + *offset,
				t->nbytes - *offset, t->dims + 1, t->ndim - 1, &used);
	*offset += used;
	return rc;
}

int es_tfs_encode_predict(es_buf *out, bool columnar, const es_v2_output *outputs,
			  size_t n_outputs)
{
	size_t start = out->len;
	size_t *offsets = NULL;
	int rc = 0;

	for (size_t i = 0; i < n_outputs; i++)
		if (!outputs[i].tensor)
			return ES_EINVAL;
	if (columnar) {
		es_buf_puts(out, "{\"outputs\":");
		if (n_outputs == 1) {
			if ((rc = put_tensor(out, &outputs[0], NULL, true)))
				goto fail;
		} else {
			es_buf_putc(out, '{');
			for (size_t i = 0; i < n_outputs; i++) {
				const char *nm = outputs[i].name ? outputs[i].name : "";
				if (i)
					es_buf_putc(out, ',');
				es_buf_json_str(out, nm, strlen(nm));
				es_buf_putc(out, ':');
				if ((rc = put_tensor(out, &outputs[i], NULL, true)))
					goto fail;
			}
			es_buf_putc(out, '}');
		}
		es_buf_putc(out, '}');
		goto done;
	}

	/* row format: every output needs the same batch dimension */
	int64_t batch = 0;
	for (size_t i = 0; i < n_outputs; i++) {
		const es_tensor *t = outputs[i].tensor;
		if (t->ndim < 1 || (i && t->dims[0] != batch)) {
			rc = ES_EINVAL;
			goto fail;
		}
		batch = t->dims[0];
	}
	offsets = calloc(n_outputs ? n_outputs : 1, sizeof(*offsets));
	if (!offsets) {
		rc = ES_ENOMEM;
		goto fail;
	}
	es_buf_puts(out, "{\"predictions\":[");
	for (int64_t r = 0; r < batch; r++) {
		if (r)
			es_buf_putc(out, ',');
		if (n_outputs == 1) {
			if ((rc = put_tensor(out, &outputs[0], &offsets[0], false)))
				goto fail;
			continue;
		}
		es_buf_putc(out, '{');
		for (size_t i = 0; i < n_outputs; i++) {
			const char *nm = outputs[i].name ? outputs[i].name : "";
			if (i)
				es_buf_putc(out, ',');
			es_buf_json_str(out, nm, strlen(nm));
			es_buf_putc(out, ':');
			if ((rc = put_tensor(out, &outputs[i], &offsets[i], false)))
				goto fail;
		}
		es_buf_putc(out, '}');
	}
	es_buf_puts(out, "]}");
done:
	free(offsets);
	if (out->failed) {
		rc = ES_ENOMEM;
		goto fail_nofree;
	}
	return 0;

fail:
	free(offsets);
fail_nofree:
	if (out->failed)
		rc = ES_ENOMEM;
	if (out->data) {
		out->len = start;
		out->data[start] = '\0';
	}
	return rc;
}
