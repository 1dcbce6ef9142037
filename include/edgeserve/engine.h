/*
 * edgeserve engine: the public C API of the ONNX CPU engine.
 *
 * The engine knows nothing about HTTP or serving. A model is loaded once
 * (es_model_load), shared read-only and refcounted; each concurrent user
 * creates its own session (es_session_create) and runs it (es_session_run).
 *
 * Errors: every fallible function returns 0 on success or a negative ES_E*
 * code, and fills an es_error (when one is passed) with a message that
 * names the offending input, the expected and the actual value.
 */
#ifndef EDGESERVE_ENGINE_H
#define EDGESERVE_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ES_ENGINE_VERSION "0.1.0"

/* ---- status codes ------------------------------------------------------ */
enum {
	ES_OK = 0,
	ES_EINVAL = -1,       /* bad argument or bad input data */
	ES_ENOMEM = -2,       /* allocation failed */
	ES_EIO = -3,          /* file could not be read or written */
	ES_EPARSE = -4,       /* malformed file (protobuf, npy, json) */
	ES_EUNSUPPORTED = -5, /* valid but not implemented (op, dtype) */
	ES_ESHAPE = -6,       /* shape mismatch */
	ES_ETYPE = -7,        /* dtype mismatch */
	ES_ERANGE = -8,       /* overflow, index out of range */
	ES_ENOTFOUND = -9,    /* unknown name */
	ES_EGRAPH = -10,      /* invalid graph structure */
	ES_EINTERNAL = -11,   /* a bug in edgeserve */
	/* serving */
	ES_EUNAVAILABLE = -12, /* model or version not ready */
	ES_EBUSY = -13,        /* queue full */
	ES_ETIMEDOUT = -14,    /* deadline passed */
	ES_ECANCELED = -15,    /* shut down or cancelled */
	ES_ETOOLARGE = -16,    /* over a configured limit */
	ES_ESTALE = -17,       /* a compiled form built for another engine,
				* CPU, option set or source */
};

#define ES_ERROR_MSG_MAX 512

/* A human-readable failure. Messages never hold pointers or paths outside
 * the model directory. */
typedef struct es_error {
	int code;
	char msg[ES_ERROR_MSG_MAX];
} es_error;

/* Returns a short constant name for a status code ("invalid argument"). */
const char *es_strerror(int code);

/* ---- data types (numbered as ONNX TensorProto.DataType) ---------------- */
typedef enum es_dtype {
	ES_DT_UNDEFINED = 0,
	ES_DT_FLOAT = 1,
	ES_DT_UINT8 = 2,
	ES_DT_INT8 = 3,
	ES_DT_UINT16 = 4,
	ES_DT_INT16 = 5,
	ES_DT_INT32 = 6,
	ES_DT_INT64 = 7,
	ES_DT_STRING = 8,
	ES_DT_BOOL = 9,
	ES_DT_FLOAT16 = 10,
	ES_DT_DOUBLE = 11,
	ES_DT_UINT32 = 12,
	ES_DT_UINT64 = 13,
	ES_DT_BFLOAT16 = 16,
} es_dtype;

#define ES_DT_COUNT 17

/* Size in bytes of one element; 0 for UNDEFINED, STRING and unknown codes. */
size_t es_dtype_size(es_dtype dt);
/* ONNX spelling of the type ("float", "int64", ...); "undefined" if unknown. */
const char *es_dtype_name(es_dtype dt);

/* ---- tensors ----------------------------------------------------------- */
#define ES_MAX_DIMS 8

/*
 * A dense tensor: dtype, shape and a pointer to row-major data.
 * The struct never owns its data implicitly: whoever filled `data` says who
 * frees it (see the function that returned it). A scalar has ndim == 0 and
 * one element.
 */
typedef struct es_tensor {
	es_dtype dtype;
	int ndim;
	int64_t dims[ES_MAX_DIMS];
	void *data;
	size_t nbytes; /* numel * dtype size */
} es_tensor;

/* Number of elements (product of dims; 1 for a scalar). Dims are assumed
 * validated (non-negative, product fits); see es_shape_numel for checking. */
int64_t es_tensor_numel(const es_tensor *t);

/* Checked product of dims: ES_ERANGE on negative dims or int64 overflow,
 * and also when numel * elem_size would overflow size_t. */
int es_shape_numel(const int64_t *dims, int ndim, size_t elem_size,
		   int64_t *numel_out);

/* Allocates a tensor's data (64-byte aligned, zeroed) for the given shape.
 * The caller owns t->data and frees it with es_tensor_free_data. */
int es_tensor_alloc(es_tensor *t, es_dtype dt, int ndim, const int64_t *dims,
		    es_error *err);
void es_tensor_free_data(es_tensor *t);

/* Reads an ONNX TensorProto (a .pb file as in the ONNX backend test data).
 * On success the caller owns t->data (es_tensor_free_data); *name_out, when
 * not NULL, receives a malloc'ed copy of the tensor's name ("" if none). */
int es_tensor_read_pb(const char *path, es_tensor *t, char **name_out,
		      es_error *err);
/* Writes t as a TensorProto named `name` to path. */
int es_tensor_write_pb(const char *path, const es_tensor *t, const char *name,
		       es_error *err);
/* Same as es_tensor_read_pb from a memory buffer. */
int es_tensor_parse_pb(const void *buf, size_t len, es_tensor *t,
		       char **name_out, es_error *err);

/* ---- models ------------------------------------------------------------ */
typedef struct es_model es_model;
typedef struct es_session es_session;

/* Description of one graph input or output. dims[i] < 0 means the
 * dimension is not fixed by the model (dim_params[i] may name it). ndim is
 * -1 when the rank itself is unknown. */
typedef struct es_value_info {
	const char *name;
	es_dtype dtype;
	int ndim;
	int64_t dims[ES_MAX_DIMS];
	const char *dim_params[ES_MAX_DIMS];
} es_value_info;

typedef struct es_model_options {
	bool no_optimize; /* run the graph as written: no folding, no fusion */
} es_model_options;

/* Loads and validates an ONNX model file. External data files are resolved
 * relative to the model's directory and must stay inside it. On success the
 * caller holds one reference (es_model_release). */
int es_model_load(const char *path, const es_model_options *opts,
		  es_model **out, es_error *err);
/* Same from a buffer; external data is then rejected unless base_dir is
 * given. */
int es_model_load_buffer(const void *buf, size_t len, const char *base_dir,
			 const es_model_options *opts, es_model **out,
			 es_error *err);
void es_model_retain(es_model *m);
void es_model_release(es_model *m);

size_t es_model_num_inputs(const es_model *m);
size_t es_model_num_outputs(const es_model *m);
const es_value_info *es_model_input(const es_model *m, size_t i);
const es_value_info *es_model_output(const es_model *m, size_t i);
/* Index of the input named `name`, or -1. */
int es_model_input_index(const es_model *m, const char *name);
int es_model_output_index(const es_model *m, const char *name);
/* Number of nodes after optimization. */
size_t es_model_num_nodes(const es_model *m);
/* Highest opset imported for the default ONNX domain. */
int64_t es_model_opset(const es_model *m);

/* What the graph optimizer did to a model at load, pass by pass, in the
 * order the passes ran. */
typedef struct es_opt_pass_info {
	const char *name;  /* the pass, e.g. "conv_bn_fold"; owned by the engine */
	int nodes_before;  /* node count when the pass started */
	int nodes_after;   /* and when it ended (after compaction) */
	int changes;       /* rewrites the pass counted */
	double ms;         /* wall time the pass took */
} es_opt_pass_info;

/* Number of optimizer passes that ran when m was loaded (0 when it was
 * loaded with no_optimize). */
size_t es_model_opt_passes(const es_model *m);
/* Fills *info with pass i (0 <= i < es_model_opt_passes(m)); ES_ERANGE
 * when i is past the last pass. */
int es_model_opt_pass(const es_model *m, size_t i, es_opt_pass_info *info);

/* ---- compiled form ------------------------------------------------------ */
/*
 * A model's compiled form is what loading produced: the validated and
 * optimized graph with every constant (folded ones included). Loading it
 * back skips decoding and optimizing the ONNX file; constant data is used
 * in place from a read-only mapping of the compiled file, so the file must
 * not be modified while a model loaded from it lives (replace it by
 * renaming a new file over it instead).
 *
 * The file starts with a header holding the format version, the engine
 * version, the CPU features the compiled form depends on, the model
 * options it was built with and a 32-byte key chosen by the caller (the
 * server stores the SHA-256 of the version's files there). A checksum
 * covers everything after the header except data kernels saved for
 * themselves (packed weights), which sits at the end and which each kernel
 * checks against a checksum of its own before using it. docs/engine.md
 * describes the layout.
 */
#define ES_COMPILED_KEY_BYTES 32

/* The engine version, ES_ENGINE_VERSION. */
const char *es_engine_version(void);
/* The CPU facts a compiled form depends on, as one line, e.g.
 * "x86_64 avx2 fma avx512f avx512bw avx512vl avx512_vnni; onednn isa
 * avx512_core_vnni". The same for the life of the process. */
const char *es_engine_cpu_features(void);

/* Versions of the runtime libraries the engine uses, as they report them
 * at run time (not the headers it was built with). */
typedef struct es_runtime_versions {
	int onednn[3];        /* major, minor, patch */
	char onednn_str[32];  /* "2.6.3" */
	char openblas_str[32];/* "0.3.21", or "" when it does not say */
	int openblas[3];      /* zeros when unknown */
	char openblas_core[32]; /* the kernel family it chose, e.g. "Haswell" */
} es_runtime_versions;
void es_engine_runtime_versions(es_runtime_versions *out);

/*
 * Writes m's compiled form to fd (a regular file open for writing,
 * positioned at 0). key is stored in the header. Writes everything or
 * fails with ES_EIO naming the errno (ENOSPC: "No space left on device");
 * it neither fsyncs nor closes fd.
 */
int es_model_save_compiled(const es_model *m, int fd,
			   const uint8_t key[ES_COMPILED_KEY_BYTES],
			   es_error *err);
/*
 * Loads a compiled form written by es_model_save_compiled. opts must be the
 * options the file was built with (NULL = defaults). Fails with
 * ES_ESTALE when the header names another format version, engine version,
 * CPU features, options or key; ES_EPARSE when the file is truncated,
 * fails its checksum or is malformed (the message says which); ES_EIO
 * when it cannot be read. Never crashes on any file content.
 */
int es_model_load_compiled(const char *path, const es_model_options *opts,
			   const uint8_t key[ES_COMPILED_KEY_BYTES],
			   es_model **out, es_error *err);

/* ---- sessions ---------------------------------------------------------- */
typedef struct es_session_options {
	int threads;  /* intra-op threads; <= 0 means one per core */
	bool profile; /* collect per-node timings */
} es_session_options;

/* Creates a session on a model (takes its own reference on m). */
int es_session_create(es_model *m, const es_session_options *opts,
		      es_session **out, es_error *err);
void es_session_destroy(es_session *s);

/*
 * Runs the model. inputs[i] is the model's i-th input (es_model_input order)
 * and must match its dtype and the fixed dims. outputs must have room for
 * es_model_num_outputs(m) tensors; on success each is filled with a shape
 * and a data pointer owned by the session, valid until the next run or
 * destroy. The session is not thread-safe: one run at a time.
 */
int es_session_run(es_session *s, const es_tensor *inputs, size_t n_inputs,
		   es_tensor *outputs, es_error *err);

/* Per-node profile of all runs since the session was created (or reset). */
typedef struct es_node_profile {
	const char *name;
	const char *op_type;
	uint64_t calls;
	uint64_t total_ns;
} es_node_profile;

/* Returns the number of entries; *out points into the session. */
size_t es_session_profile(const es_session *s, const es_node_profile **out);
void es_session_profile_reset(es_session *s);

#ifdef __cplusplus
}
#endif
#endif
