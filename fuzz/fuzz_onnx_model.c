/* libFuzzer target: arbitrary bytes as an ONNX model, then as a
 * TensorProto. Nothing may crash, leak or read out of bounds. */
#include <stddef.h>
#include <stdint.h>

#include "edgeserve/engine.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	es_model *m = NULL;
	es_error err;
	if (es_model_load_buffer(data, size, NULL, NULL, &m, &err) == 0) {
		es_session *s = NULL;
		if (es_session_create(m, NULL, &s, &err) == 0)
			es_session_destroy(s);
		es_model_release(m);
	}
	es_tensor t;
	char *name = NULL;
	if (es_tensor_parse_pb(data, size, &t, &name, &err) == 0) {
		es_tensor_free_data(&t);
		__builtin_free(name);
	}
	return 0;
}
