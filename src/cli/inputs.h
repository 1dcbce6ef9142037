/*
 * Model inputs from the command line, shared by `edgeserve run` and
 * `edgeserve bench`: integer option values, `--shape NAME=DIMS`,
 * `--input [NAME=]FILE` assignment, reading .pb/.npy files into tensors
 * and seeded random data.
 */
#ifndef ES_CLI_INPUTS_H
#define ES_CLI_INPUTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "edgeserve/engine.h"

/* One --shape NAME=DIMS. */
typedef struct es_cli_shape {
	char *name; /* owned */
	int ndim;
	int64_t dims[ES_MAX_DIMS];
} es_cli_shape;

/* The inputs of a model as the command sees them (a loaded es_model or
 * server metadata), for matching --input and --shape names. */
typedef struct es_cli_input_list {
	const void *model;
	size_t n_inputs;
	/* Name of input i, borrowed from model. */
	const char *(*name)(const void *model, size_t i);
	/* How messages call the model: "the model", "model 'resnet'". */
	const char *label;
} es_cli_input_list;

/* Parses a decimal integer in [min, max] starting with a digit; the whole
 * text must be used. False otherwise; *out is set only on success. */
bool es_cli_parse_u64(const char *text, uint64_t min, uint64_t max,
		      uint64_t *out);

/* Parses a decimal integer in [min, max] (strtoll syntax); the whole text
 * must be used, and a '-' is refused when min >= 0. */
bool es_cli_parse_int(const char *text, long long min, long long max,
		      long long *out);

/* Parses NAME=DIMS where DIMS is like 1x3x224x224 (or 1,3,224,224); an
 * empty DIMS means a scalar. On success out->name is a new string the
 * caller frees (es_cli_free_shapes); false on bad syntax or no memory. */
bool es_cli_parse_shape(const char *spec, es_cli_shape *out);

/* Frees the names of shapes[0..n) and the array itself. */
void es_cli_free_shapes(es_cli_shape *shapes, size_t n);

/* The shape given for input `name`, borrowed from shapes, or NULL. */
const es_cli_shape *es_cli_find_shape(const es_cli_shape *shapes, size_t n,
				      const char *name);

/* The first input name that two of shapes[0..n) share, or NULL. */
const char *es_cli_duplicate_shape(const es_cli_shape *shapes, size_t n);

/* Writes dims as "[1,3,224,224]" ("[]" for a scalar), truncated to size. */
void es_cli_format_dims(char *buf, size_t size, int ndim, const int64_t *dims);

/* Reads an ONNX TensorProto (.pb) or a NumPy array (.npy), chosen by the
 * file's suffix, into t; the caller frees t's data (es_tensor_free_data).
 * ES_EINVAL for another suffix, else the reader's error. */
int es_cli_read_tensor_file(const char *file, es_tensor *t, es_error *err);

/* Fills the allocated tensor t with random data of its dtype: floats
 * uniform in [-1, 1), integers in [0, 10), bools 0 or 1. Input number
 * `index` gets its own stream derived from seed, so one input's data does
 * not depend on the others. ES_EUNSUPPORTED for other dtypes. */
int es_cli_fill_random(es_tensor *t, uint64_t seed, size_t index,
		       es_error *err);

/* Assigns the --input specs to inputs: NAME=FILE to input NAME (unless no
 * input has that name and a file called "NAME=FILE" exists), a bare FILE
 * to the next input without a file. files[0..in->n_inputs) must start
 * NULL; files[i] becomes input i's file, borrowed from specs. ES_ENOTFOUND
 * for an unknown name, ES_EINVAL for too many files or an input given
 * twice, ES_ENOMEM. */
int es_cli_assign_inputs(const es_cli_input_list *in, const char *const *specs,
			 size_t n_specs, const char **files, es_error *err);

/* ES_ENOTFOUND naming the first of shapes[0..n) that is no input's name;
 * else 0. */
int es_cli_check_shape_names(const es_cli_input_list *in,
			     const es_cli_shape *shapes, size_t n,
			     es_error *err);

#endif
