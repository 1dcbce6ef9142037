/* libFuzzer target: a TF-Serving :predict body. The first byte picks the
 * model's inputs (one or two, their types and ranks); parsed tensors are
 * encoded back in both formats. Nothing may crash, leak or read out of
 * bounds. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const es_dtype types[8] = {
	ES_DT_FLOAT, ES_DT_INT64, ES_DT_STRING, ES_DT_BOOL,
	ES_DT_FLOAT16, ES_DT_UINT8, ES_DT_DOUBLE, ES_DT_UINT64,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t sel = data[0];
	es_tfs_input_info info[2] = {
		{ "x", types[sel & 7], (sel & 0x40) ? 2 : -1 },
		{ "y", types[(sel >> 3) & 7], -1 },
	};
	size_t n_info = (sel & 0x80) ? 2 : 1;
	size_t len = size - 1;
	char *body = malloc(len ? len : 1);
	if (!body)
		return 0;
	memcpy(body, data + 1, len);

	es_tfs_request r;
	es_error err;
	if (es_tfs_parse_predict(body, len, info, n_info, &r, &err) == 0) {
		es_v2_output o[2];
		for (size_t i = 0; i < r.n_tensors; i++) {
			o[i].name = info[i].name;
			o[i].tensor = &r.tensors[i];
			o[i].binary = false;
		}
		es_buf b = ES_BUF_INIT;
		if (es_tfs_encode_predict(&b, true, o, r.n_tensors) != 0)
			__builtin_trap();
		es_buf_free(&b);
		/* row format: all tensors share the batch dim when parsed as rows */
		int rc = es_tfs_encode_predict(&b, false, o, r.n_tensors);
		if (!r.columnar && rc != 0)
			__builtin_trap();
		es_buf_free(&b);
		es_tfs_request_free(&r);
	}
	free(body);
	return 0;
}
