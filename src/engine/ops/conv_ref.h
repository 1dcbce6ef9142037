/*
 * Conv / ConvTranspose geometry and the two implementations behind the
 * kernels in conv.c: a plain C reference (direct loops, any spatial rank)
 * and the oneDNN path. Exposed so the unit tests can check one against the
 * other on random problems.
 */
#ifndef ES_ENGINE_OPS_CONV_REF_H
#define ES_ENGINE_OPS_CONV_REF_H

#include <stdbool.h>
#include <stdint.h>

#include "edgeserve/engine.h"

#define ES_CONV_MAX_SP (ES_MAX_DIMS - 2)

/*
 * One resolved convolution problem. All arrays hold `nsp` spatial entries.
 * Layouts are ONNX's: X (n, c, in...), Y (n, m, out...), and
 *   Conv:          W (m, c/group, kernel...)
 *   ConvTranspose: W (c, m/group, kernel...)
 * For Conv, out[i] = (in + pad_begin + pad_end - ((kernel-1)*dilation+1))
 * / stride + 1. For ConvTranspose, output element o along an axis receives
 * input i through kernel tap t when o = i*stride + t*dilation - pad_begin,
 * and out = (in-1)*stride + (kernel-1)*dilation+1 - pad_begin - pad_end:
 * pad_end is the ONNX end pad minus output_padding, and either pad may be
 * negative when output_padding or output_shape extend the output.
 * Unused array tails must be zero (geometries are compared bytewise).
 */
typedef struct es_conv_geom {
	bool transpose;
	int nsp;
	int64_t n, c, m, group;
	int64_t in[ES_CONV_MAX_SP];
	int64_t out[ES_CONV_MAX_SP];
	int64_t kernel[ES_CONV_MAX_SP];
	int64_t stride[ES_CONV_MAX_SP];
	int64_t dilation[ES_CONV_MAX_SP];
	int64_t pad_begin[ES_CONV_MAX_SP];
	int64_t pad_end[ES_CONV_MAX_SP];
} es_conv_geom;

/* Reference convolution (or transposed convolution when g->transpose):
 * Y = conv(X, W) + B. b may be NULL (no bias). Accumulates in double.
 * Parallel over (n, m) with up to `threads` OpenMP threads. */
void es_conv_ref_f32(const es_conv_geom *g, const float *x, const float *w,
		     const float *b, float *y, int threads);
void es_conv_ref_f64(const es_conv_geom *g, const double *x, const double *w,
		     const double *b, double *y, int threads);

/*
 * Runs the problem once through oneDNN (no caching): creates the
 * primitive, packs the weights if it wants another layout, executes and
 * frees everything. Returns 0, or ES_EUNSUPPORTED (err says why) when
 * oneDNN rejects the problem: callers then use the reference.
 */
int es_conv_dnnl_f32(const es_conv_geom *g, const float *x, const float *w,
		     const float *b, float *y, int threads, es_error *err);

/* How many convolutions ran on oneDNN's Winograd algorithm in this
 * process (FusedConv channels-last, see conv.c); for tests. */
uint64_t es_conv_winograd_runs(void);
/* How many primitives adopted weights packed by an earlier process from a
 * compiled form instead of packing them (FusedConv); for tests. */
uint64_t es_conv_adopted_weights(void);

#endif
