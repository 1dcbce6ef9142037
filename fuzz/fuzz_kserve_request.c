/* libFuzzer target: a KServe v2 infer request body. The first 2 bytes
 * (little-endian) give the Inference-Header-Content-Length, possibly larger
 * than the body; the rest is the body. Parsed requests are encoded back as
 * a response, half of the tensors as binary outputs. Nothing may crash,
 * leak or read out of bounds. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	size_t json_len = (size_t)data[0] | (size_t)data[1] << 8;
	size_t len = size - 2;
	/* an exact-size copy so ASan catches any read past the body */
	char *body = malloc(len ? len : 1);
	if (!body)
		return 0;
	memcpy(body, data + 2, len);
	if (json_len > len && (data[0] & 1))
		json_len = len; /* mostly exercise the no-header case too */

	es_v2_request r;
	es_error err;
	if (es_v2_parse_request(body, len, json_len, &r, &err) == 0) {
		es_tensor *t = calloc(r.n_inputs + 1, sizeof(*t));
		es_v2_output *o = calloc(r.n_inputs + 1, sizeof(*o));
		if (t && o) {
			for (size_t i = 0; i < r.n_inputs; i++) {
				const es_v2_tensor *in = &r.inputs[i];
				t[i].dtype = in->dtype;
				t[i].ndim = in->ndim;
				memcpy(t[i].dims, in->dims, sizeof(t[i].dims));
				t[i].data = in->data;
				t[i].nbytes = in->nbytes;
				o[i].name = in->name;
				o[i].tensor = &t[i];
				o[i].binary = (i & 1) != 0;
			}
			es_buf b = ES_BUF_INIT;
			size_t jl;
			if (es_v2_encode_response(&b, &jl, "m", 1, r.id, r.parameters, o,
						  r.n_inputs) != 0)
				__builtin_trap(); /* parsed tensors always encode */
			es_buf_free(&b);
			es_tfs_encode_predict(&b, true, o, r.n_inputs);
			es_buf_free(&b);
		}
		free(t);
		free(o);
		es_v2_request_free(&r);
	} else {
		es_buf b = ES_BUF_INIT;
		es_encode_error(&b, err.msg);
		es_buf_free(&b);
	}
	free(body);
	return 0;
}
