/*
 * Wire codecs: KServe v2 (JSON and the binary tensor extension) and
 * TF-Serving REST, between HTTP bodies and tensors. Pure functions: no
 * sockets, no threads, no serving state, so they are unit-tested and
 * fuzzed on their own.
 *
 * Memory: a parsed request owns one allocation list (es_v2_request_free
 * frees everything). Tensor data of binary inputs points into the body the
 * caller passed (no copy); the body must outlive the parsed request. JSON
 * data is decoded straight into a typed buffer, one copy.
 */
#ifndef ES_API_CODEC_H
#define ES_API_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "edgeserve/engine.h"

/* KServe v2 datatype names <-> engine dtypes. BYTES has no engine dtype:
 * es_v2_dtype returns ES_DT_STRING for it, ES_DT_UNDEFINED if unknown. */
es_dtype es_v2_dtype(const char *name);
const char *es_v2_datatype_name(es_dtype dt); /* "FP32"...; NULL if none */

typedef struct es_v2_tensor {
	char *name;
	char *datatype;     /* as sent: "FP32", "INT64", "BYTES", ... */
	es_dtype dtype;     /* ES_DT_STRING for BYTES */
	int ndim;
	int64_t dims[ES_MAX_DIMS];
	void *data;         /* elements; for BYTES the 4-byte-LE-length-prefixed
			     * serialisation of the elements */
	size_t nbytes;
	bool from_binary;   /* data points into the request body */
	char *parameters;   /* the tensor's "parameters" object as JSON text, or NULL */
} es_v2_tensor;

typedef struct es_v2_output_req {
	char *name;
	bool binary;        /* parameters.binary_data */
	bool has_binary;    /* binary_data was given explicitly */
} es_v2_output_req;

typedef struct es_v2_request {
	char *id;                 /* NULL when absent */
	char *parameters;         /* request "parameters" object as JSON text, or NULL */
	es_v2_tensor *inputs;
	size_t n_inputs;
	es_v2_output_req *outputs; /* NULL/0: all outputs */
	size_t n_outputs;
	bool binary_data_output;  /* parameters.binary_data_output */
	int64_t timeout_us;       /* parameters.timeout (µs) if given, else -1 */
	void *mem;                /* private allocation list */
} es_v2_request;

/*
 * Parses an infer request. body/len is the whole HTTP body; json_len is the
 * Inference-Header-Content-Length value (or len when the header is absent).
 * Binary tensor data follows the JSON, in input order, for inputs whose
 * parameters carry binary_data_size. Checks everything: JSON syntax (nesting
 * deeper than 64 is rejected), datatype names, shape values (non-negative,
 * product fits, rank <= ES_MAX_DIMS), data element count vs shape, value
 * ranges for integer types (INT64/UINT64 exact over their whole range),
 * binary sizes vs shape and vs the bytes present, BYTES length prefixes
 * inside their buffer. Errors are ES_EINVAL/ES_EPARSE/ES_ERANGE with a
 * message naming the input and the expected and actual values.
 */
int es_v2_parse_request(const char *body, size_t len, size_t json_len,
			es_v2_request *out, es_error *err);
void es_v2_request_free(es_v2_request *r);

/* One output to encode. */
typedef struct es_v2_output {
	const char *name;
	const es_tensor *tensor;
	bool binary;
} es_v2_output;

/*
 * Encodes an infer response into out: the JSON document
 *   {"model_name":..,"model_version":"N","id":..,"parameters":{..},
 *    "outputs":[{"name":..,"datatype":..,"shape":[..],"data":[..]} or
 *               {..,"parameters":{"binary_data_size":N}}]}
 * followed by the binary outputs' raw bytes. *json_len receives the JSON
 * part's length (send it as Inference-Header-Content-Length when any output
 * is binary). Floats print in the shortest form that reads back to the same
 * float32/float64 ("1.1", not 1.1000000238418579); FP16 is converted to its
 * float value; INT64/UINT64 print exactly. parameters_json (may be NULL) is
 * inserted verbatim as the response "parameters" object.
 */
int es_v2_encode_response(es_buf *out, size_t *json_len, const char *model_name,
			  int64_t version, const char *id,
			  const char *parameters_json,
			  const es_v2_output *outputs, size_t n_outputs);

/* {"error": "..."} with the message JSON-escaped. */
int es_encode_error(es_buf *out, const char *message);

/* ---- TF-Serving REST ------------------------------------------------------ */

/* What the TF-Serving codec needs to know about the model's inputs. */
typedef struct es_tfs_input_info {
	const char *name;
	es_dtype dtype;
	int ndim; /* -1 unknown */
} es_tfs_input_info;

typedef struct es_tfs_request {
	bool columnar;       /* "inputs" (columnar) vs "instances" (row) */
	es_tensor *tensors;  /* in model input order; data owned by mem */
	size_t n_tensors;
	void *mem;
} es_tfs_request;

/*
 * Parses a :predict body ({"instances": [...]} or {"inputs": ...}; an
 * optional "signature_name" is accepted and must be "serving_default" if
 * given). With one model input, instances may be plain values; with several,
 * each instance is an object keyed by input name. Values are converted to
 * the model input's dtype; shapes come from the nesting (row format: the
 * batch is the number of instances). Errors name the input and what was
 * expected.
 */
int es_tfs_parse_predict(const char *body, size_t len,
			 const es_tfs_input_info *inputs, size_t n_inputs,
			 es_tfs_request *out, es_error *err);
void es_tfs_request_free(es_tfs_request *r);

/* {"predictions": ...} (row: one entry per batch row; with one output the
 * row's value, else an object keyed by output name) or {"outputs": ...}
 * (columnar: the tensor, or an object keyed by name). */
int es_tfs_encode_predict(es_buf *out, bool columnar, const es_v2_output *outputs,
			  size_t n_outputs);

#endif
