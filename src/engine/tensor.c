/* dtype facts and plain tensor helpers of the public API. */
#include <string.h>

#include "base/alloc.h"
#include "base/status.h"
#include "edgeserve/engine.h"

size_t es_dtype_size(es_dtype dt)
{
	switch (dt) {
	case ES_DT_FLOAT: return 4;
	case ES_DT_UINT8: return 1;
	case ES_DT_INT8: return 1;
	case ES_DT_UINT16: return 2;
	case ES_DT_INT16: return 2;
	case ES_DT_INT32: return 4;
	case ES_DT_INT64: return 8;
	case ES_DT_BOOL: return 1;
	case ES_DT_FLOAT16: return 2;
	case ES_DT_DOUBLE: return 8;
	case ES_DT_UINT32: return 4;
	case ES_DT_UINT64: return 8;
	case ES_DT_BFLOAT16: return 2;
	default: return 0;
	}
}

const char *es_dtype_name(es_dtype dt)
{
	switch (dt) {
	case ES_DT_FLOAT: return "float";
	case ES_DT_UINT8: return "uint8";
	case ES_DT_INT8: return "int8";
	case ES_DT_UINT16: return "uint16";
	case ES_DT_INT16: return "int16";
	case ES_DT_INT32: return "int32";
	case ES_DT_INT64: return "int64";
	case ES_DT_STRING: return "string";
	case ES_DT_BOOL: return "bool";
	case ES_DT_FLOAT16: return "float16";
	case ES_DT_DOUBLE: return "double";
	case ES_DT_UINT32: return "uint32";
	case ES_DT_UINT64: return "uint64";
	case ES_DT_BFLOAT16: return "bfloat16";
	default: return "undefined";
	}
}

int64_t es_tensor_numel(const es_tensor *t)
{
	int64_t n = 1;
	for (int i = 0; i < t->ndim; i++)
		n *= t->dims[i];
	return n;
}

int es_shape_numel(const int64_t *dims, int ndim, size_t elem_size,
		   int64_t *numel_out)
{
	int64_t n = 1;
	if (ndim < 0 || ndim > ES_MAX_DIMS)
		return ES_ERANGE;
	for (int i = 0; i < ndim; i++) {
		if (dims[i] < 0)
			return ES_ERANGE;
		if (__builtin_mul_overflow(n, dims[i], &n))
			return ES_ERANGE;
	}
	size_t bytes;
	if (es_mul_size((size_t)n, elem_size ? elem_size : 1, &bytes) ||
	    bytes > (size_t)INT64_MAX)
		return ES_ERANGE;
	*numel_out = n;
	return 0;
}

int es_tensor_alloc(es_tensor *t, es_dtype dt, int ndim, const int64_t *dims,
		    es_error *err)
{
	int64_t numel;
	size_t esz = es_dtype_size(dt);
	memset(t, 0, sizeof(*t));
	if (!esz)
		return es_error_set(err, ES_EUNSUPPORTED,
				    "tensor type %s is not supported", es_dtype_name(dt));
	if (es_shape_numel(dims, ndim, esz, &numel))
		return es_error_set(err, ES_ERANGE,
				    "tensor shape has a negative dimension, more than %d dimensions, or too many elements",
				    ES_MAX_DIMS);
	t->dtype = dt;
	t->ndim = ndim;
	if (ndim > 0)
		memcpy(t->dims, dims, (size_t)ndim * sizeof(int64_t));
	t->nbytes = (size_t)numel * esz;
	t->data = es_aligned_calloc(t->nbytes);
	if (!t->data)
		return es_error_set(err, ES_ENOMEM,
				    "cannot allocate %zu bytes for a tensor", t->nbytes);
	return 0;
}

void es_tensor_free_data(es_tensor *t)
{
	if (t && t->data) {
		es_aligned_free(t->data);
		t->data = NULL;
	}
}
