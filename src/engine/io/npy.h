/*
 * NumPy .npy files: a strict reader and a writer for dense tensors.
 *
 * Supported: format versions 1.0, 2.0 and 3.0; little-endian (or
 * byte-order-free) dtypes f2 f4 f8 i1 i2 i4 i8 u1 u2 u4 u8 b1; C order only.
 * The header is parsed as the small Python dict literal numpy writes
 * ({'descr': ..., 'fortran_order': ..., 'shape': (...)}); anything else is
 * rejected with a message saying what was wrong. Error messages never
 * contain the file's path: callers that want it prefix it themselves.
 */
#ifndef ES_ENGINE_IO_NPY_H
#define ES_ENGINE_IO_NPY_H

#include "edgeserve/engine.h"

/* Largest header (the dict text after the length field) the reader accepts.
 * numpy itself writes a few hundred bytes at most. */
#define ES_NPY_MAX_HEADER 65536

/*
 * Reads the .npy file at path into t. On success the caller owns t->data
 * and frees it with es_tensor_free_data. On failure t is left zeroed.
 * Errors: ES_EIO (cannot open/read, not a regular file), ES_EPARSE (bad
 * magic, malformed or truncated header, data size not matching the shape,
 * bool bytes other than 0/1), ES_EUNSUPPORTED (big-endian or unsupported
 * dtype, fortran_order True, more than ES_MAX_DIMS dims, version other than
 * 1-3), ES_ERANGE (shape product overflows), ES_ENOMEM.
 */
int es_npy_read(const char *path, es_tensor *t, es_error *err);

/* Same as es_npy_read from a memory buffer holding a whole .npy file. */
int es_npy_parse(const void *buf, size_t len, es_tensor *t, es_error *err);

/*
 * Writes t to path as a version 1.0 .npy file whose data starts on a
 * 64-byte boundary, as numpy writes it. Errors: ES_EUNSUPPORTED for dtypes .npy cannot hold here (string,
 * bfloat16), ES_EINVAL for an inconsistent tensor, ES_EIO (a partly written
 * file is removed).
 */
int es_npy_write(const char *path, const es_tensor *t, es_error *err);

#endif
