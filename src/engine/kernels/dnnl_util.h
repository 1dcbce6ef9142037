/*
 * Shared oneDNN helpers: the process-wide CPU engine, a per-thread stream,
 * plain memory descriptors and one-shot reorders.
 *
 * oneDNN is built with the OpenMP runtime: a primitive runs on the OpenMP
 * team of the calling thread, so callers set that thread's team size with
 * es_dnnl_set_threads before executing.
 */
#ifndef ES_ENGINE_KERNELS_DNNL_UTIL_H
#define ES_ENGINE_KERNELS_DNNL_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include <oneapi/dnnl/dnnl.h>

/* The process-wide CPU engine, created on first use (thread-safe). NULL if
 * oneDNN could not create it; callers then fall back to plain C. */
dnnl_engine_t es_dnnl_engine(void);

/* The calling thread's in-order stream on es_dnnl_engine(), created on
 * first use and destroyed when the thread exits. NULL on failure. */
dnnl_stream_t es_dnnl_stream(void);

/* Sets the OpenMP team size of the calling thread (threads >= 1). */
void es_dnnl_set_threads(int threads);

/* Short text for a oneDNN status ("unimplemented", ...). */
const char *es_dnnl_strstatus(dnnl_status_t s);

/* A dense row-major descriptor of `ndims` dims (the abc... layout). */
dnnl_status_t es_dnnl_md_plain(dnnl_memory_desc_t *md, int ndims,
			       const int64_t *dims, dnnl_data_type_t dt);

/* A descriptor of logical dims `dims` whose elements sit at the element
 * strides `strides` (for layouts whose logical order differs from the
 * memory order, e.g. ONNX ConvTranspose weights). */
dnnl_status_t es_dnnl_md_strided(dnnl_memory_desc_t *md, int ndims,
				 const int64_t *dims, const int64_t *strides,
				 dnnl_data_type_t dt);

/* Wraps a caller-owned buffer in a memory object (the caller destroys the
 * object with dnnl_memory_destroy; the buffer stays the caller's). */
dnnl_status_t es_dnnl_memory(dnnl_memory_t *mem, const dnnl_memory_desc_t *md,
			     const void *buf);

/* *mem wrapping buf (laid out as md): created on first use, rebound with
 * dnnl_memory_set_data_handle when buf changed (no allocation), *bound
 * remembering the buffer. Kernels keep (mem, bound) pairs per cached
 * primitive so a steady-state run creates no memory objects. */
dnnl_status_t es_dnnl_bind(dnnl_memory_t *mem, const void **bound,
			   const dnnl_memory_desc_t *md, const void *buf);

/* Copies src (laid out as src_md) into dst (laid out as dst_md) on the
 * calling thread's stream, e.g. to pack weights into a primitive's blocked
 * layout. Both describe the same logical tensor. */
dnnl_status_t es_dnnl_reorder(const dnnl_memory_desc_t *src_md, const void *src,
			      const dnnl_memory_desc_t *dst_md, void *dst);

#endif
