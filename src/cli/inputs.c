/*
 * Model inputs from the command line, shared by `edgeserve run` and
 * `edgeserve bench`; see inputs.h.
 */
#include "cli/inputs.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fp16.h"
#include "base/status.h"
#include "engine/io/npy.h"

/* ---- option values ----------------------------------------------------- */

bool es_cli_parse_u64(const char *text, uint64_t min, uint64_t max,
		      uint64_t *out)
{
	char *end;
	if (*text < '0' || *text > '9')
		return false;
	errno = 0;
	unsigned long long v = strtoull(text, &end, 10);
	if (errno || *end || v < min || v > max)
		return false;
	*out = v;
	return true;
}

bool es_cli_parse_int(const char *text, long long min, long long max,
		      long long *out)
{
	char *end;
	if (!*text || (*text == '-' && min >= 0))
		return false;
	errno = 0;
	long long v = strtoll(text, &end, 10);
	if (errno || *end || v < min || v > max)
		return false;
	*out = v;
	return true;
}

/* ---- --shape ----------------------------------------------------------- */

bool es_cli_parse_shape(const char *spec, es_cli_shape *out)
{
	const char *eq = strchr(spec, '=');
	if (!eq || eq == spec)
		return false;
	out->ndim = 0;
	const char *p = eq + 1;
	while (*p) {
		if (out->ndim == ES_MAX_DIMS || *p < '0' || *p > '9')
			return false;
		errno = 0;
		char *end;
		long long v = strtoll(p, &end, 10);
		if (errno || v < 0)
			return false;
		out->dims[out->ndim++] = v;
		p = end;
		if (*p == 'x' || *p == 'X' || *p == ',') {
			p++;
			if (!*p)
				return false;
		} else if (*p) {
			return false;
		}
	}
	out->name = es_strndup(spec, (size_t)(eq - spec));
	return out->name != NULL;
}

void es_cli_free_shapes(es_cli_shape *shapes, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(shapes[i].name);
	free(shapes);
}

const es_cli_shape *es_cli_find_shape(const es_cli_shape *shapes, size_t n,
				      const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(shapes[i].name, name) == 0)
			return &shapes[i];
	return NULL;
}

const char *es_cli_duplicate_shape(const es_cli_shape *shapes, size_t n)
{
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < i; j++)
			if (strcmp(shapes[i].name, shapes[j].name) == 0)
				return shapes[i].name;
	return NULL;
}

void es_cli_format_dims(char *buf, size_t size, int ndim, const int64_t *dims)
{
	size_t n = 0;
	n += (size_t)snprintf(buf + n, size - n, "[");
	for (int i = 0; i < ndim && n < size; i++)
		n += (size_t)snprintf(buf + n, size - n, "%s%" PRId64,
				      i ? "," : "", dims[i]);
	if (n < size)
		snprintf(buf + n, size - n, "]");
}

/* ---- tensor data ------------------------------------------------------- */

static bool has_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n >= m && strcasecmp(s + n - m, suffix) == 0;
}

int es_cli_read_tensor_file(const char *file, es_tensor *t, es_error *err)
{
	if (has_suffix(file, ".npy"))
		return es_npy_read(file, t, err);
	if (has_suffix(file, ".pb"))
		return es_tensor_read_pb(file, t, NULL, err);
	return es_error_set(err, ES_EINVAL,
			    "unknown file type (expected a .pb or .npy file)");
}

static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15u);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
	return z ^ (z >> 31);
}

int es_cli_fill_random(es_tensor *t, uint64_t seed, size_t index,
		       es_error *err)
{
	uint64_t state = seed ^ ((uint64_t)(index + 1) * 0xd1b54a32d192ed03u);
	int64_t n = es_tensor_numel(t);
	for (int64_t i = 0; i < n; i++) {
		uint64_t r = splitmix64(&state);
		/* 24 random bits give a float in [0, 1); 53 a double. */
		float uf = (float)(r >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f;
		double ud = (double)(r >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0;
		uint64_t small = r % 10;
		switch (t->dtype) {
		case ES_DT_FLOAT: ((float *)t->data)[i] = uf; break;
		case ES_DT_DOUBLE: ((double *)t->data)[i] = ud; break;
		case ES_DT_FLOAT16: ((uint16_t *)t->data)[i] = es_float_to_half(uf); break;
		case ES_DT_BFLOAT16: ((uint16_t *)t->data)[i] = es_float_to_bf16(uf); break;
		case ES_DT_INT8: ((int8_t *)t->data)[i] = (int8_t)small; break;
		case ES_DT_UINT8: ((uint8_t *)t->data)[i] = (uint8_t)small; break;
		case ES_DT_INT16: ((int16_t *)t->data)[i] = (int16_t)small; break;
		case ES_DT_UINT16: ((uint16_t *)t->data)[i] = (uint16_t)small; break;
		case ES_DT_INT32: ((int32_t *)t->data)[i] = (int32_t)small; break;
		case ES_DT_UINT32: ((uint32_t *)t->data)[i] = (uint32_t)small; break;
		case ES_DT_INT64: ((int64_t *)t->data)[i] = (int64_t)small; break;
		case ES_DT_UINT64: ((uint64_t *)t->data)[i] = small; break;
		case ES_DT_BOOL: ((uint8_t *)t->data)[i] = (uint8_t)(r >> 63); break;
		default:
			return es_error_set(err, ES_EUNSUPPORTED,
					    "cannot make random data of dtype %s",
					    es_dtype_name(t->dtype));
		}
	}
	return 0;
}

/* ---- --input and --shape names ----------------------------------------- */

static int input_index(const es_cli_input_list *in, const char *name)
{
	for (size_t i = 0; i < in->n_inputs; i++)
		if (strcmp(in->name(in->model, i), name) == 0)
			return (int)i;
	return -1;
}

/* "'x', 'y'", or "none". */
static void list_input_names(const es_cli_input_list *in, char *buf,
			     size_t size)
{
	size_t n = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < in->n_inputs && n < size; i++)
		n += (size_t)snprintf(buf + n, size - n, "%s'%s'", i ? ", " : "",
				      in->name(in->model, i));
	if (in->n_inputs == 0)
		snprintf(buf, size, "none");
}

int es_cli_assign_inputs(const es_cli_input_list *in, const char *const *specs,
			 size_t n_specs, const char **files, es_error *err)
{
	size_t next = 0;
	char names[512];

	for (size_t k = 0; k < n_specs; k++) {
		const char *spec = specs[k];
		const char *eq = strchr(spec, '=');
		int idx = -1;
		const char *file = spec;
		if (eq) {
			char *name = es_strndup(spec, (size_t)(eq - spec));
			if (!name)
				return es_error_set(err, ES_ENOMEM, "out of memory");
			idx = input_index(in, name);
			if (idx >= 0) {
				file = eq + 1;
			} else if (access(spec, F_OK) != 0) {
				/* Neither an input name nor a file called
				 * "a=b": most likely a misspelt name. */
				list_input_names(in, names, sizeof(names));
				es_error_set(err, ES_ENOTFOUND,
					     "--input '%s': %s has no input named '%s' (inputs: %s)",
					     spec, in->label, name, names);
				free(name);
				return ES_ENOTFOUND;
			}
			free(name);
		}
		if (idx < 0) {
			while (next < in->n_inputs && files[next])
				next++;
			if (next == in->n_inputs)
				return es_error_set(err, ES_EINVAL,
						    "--input '%s': %s has only %zu input(s) and all are already given",
						    spec, in->label, in->n_inputs);
			idx = (int)next;
		}
		if (files[idx])
			return es_error_set(err, ES_EINVAL,
					    "input '%s' is given twice ('%s' and '%s')",
					    in->name(in->model, (size_t)idx),
					    files[idx], file);
		files[idx] = file;
	}
	return 0;
}

int es_cli_check_shape_names(const es_cli_input_list *in,
			     const es_cli_shape *shapes, size_t n,
			     es_error *err)
{
	char names[512];
	for (size_t i = 0; i < n; i++) {
		if (input_index(in, shapes[i].name) < 0) {
			list_input_names(in, names, sizeof(names));
			return es_error_set(err, ES_ENOTFOUND,
					    "--shape: %s has no input named '%s' (inputs: %s)",
					    in->label, shapes[i].name, names);
		}
	}
	return 0;
}
