/* Private interface of the ONNX loader (protobuf-c generated bindings). */
#ifndef ES_ENGINE_ONNX_INT_H
#define ES_ENGINE_ONNX_INT_H

#include <stddef.h>
#include <stdint.h>

#include "edgeserve/engine.h"
#include "engine/ir/graph.h"
#include "onnx/onnx.pb-c.h"

/* Reads a whole regular file into a malloc'ed buffer. */
int es_onnx_read_file(const char *path, uint8_t **buf, size_t *len,
		      es_error *err);

/* Converts a TensorProto into a freshly allocated tensor (caller frees the
 * data). base_dir confines external data; NULL forbids it. A large raw_data
 * buffer is moved out of tp instead of copied. */
int es_onnx_tensor_from_proto(Onnx__TensorProto *tp, const char *base_dir,
			      es_tensor *t, es_error *err);

/* Maps a file read-only (unmap with es_onnx_unmap_file). */
int es_onnx_map_file(const char *path, void **map, size_t *len, es_error *err);
void es_onnx_unmap_file(void *map, size_t len);

/* The allocator protobuf-c decodes models with (see tensor_proto.c). A
 * tensor may adopt a large raw_data buffer from a decoded message by taking
 * the pointer and clearing it in the message. */
extern ProtobufCAllocator es_onnx_pb_allocator;

/* Parses a serialized ModelProto into a new graph (*out, owned by the caller)
 * with opset imports, initializers as constants, inputs, outputs, nodes and
 * attributes. The graph is not yet finalized. */
int es_onnx_load_graph(const void *buf, size_t len, const char *base_dir,
		       es_graph **out, es_error *err);

#endif
