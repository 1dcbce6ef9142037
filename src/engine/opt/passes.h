/*
 * The optimizer's passes, one es_pass each (opt.h says what a pass may do).
 * Each has its own unit test (tests/unit/test_opt_*.c) that builds a small
 * graph, runs the pass alone with es_opt_run_passes and checks the node
 * counts before and after and the outputs against the unoptimized graph.
 */
#ifndef ES_ENGINE_OPT_PASSES_H
#define ES_ENGINE_OPT_PASSES_H

#include "engine/opt/opt.h"

/* basic.c: Identity, and Dropout whose mask output nobody reads
 * (inference: Dropout passes its input through). */
extern const es_pass es_pass_eliminate_identity;

/* fuse_conv.c: Conv + BatchNormalization folding; Conv [+ Add]
 * [+ Relu | Clip | LeakyRelu] into FusedConv. */
extern const es_pass es_pass_conv_bn_fold;
extern const es_pass es_pass_fuse_conv;

/* fuse_qdq.c: QDQ chains around Conv, Add and MaxPool into int8 operators
 * (QConv, QAdd, MaxPool on uint8/int8). */
extern const es_pass es_pass_fuse_qdq;

/* layout.c: channels-last regions of 2-D convolutions; cancelling
 * Transpose pairs. */
extern const es_pass es_pass_layout_nhwc;
extern const es_pass es_pass_transpose_cleanup;

/* fuse_norm.c: LayerNormalization from its decomposed export (ReduceMean,
 * Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add). */
extern const es_pass es_pass_fuse_layernorm;

/* fuse_gelu.c: the erf GELU's Div, Erf, Add, Mul, Mul into one ES_DOMAIN
 * Gelu. */
extern const es_pass es_pass_fuse_gelu;

/* fuse_qdq_matmul.c: DequantizeLinear -> MatMul / Gemm [-> QuantizeLinear]
 * with constant int8 weights into one ES_DOMAIN QGemm (int8 product). */
extern const es_pass es_pass_fuse_qdq_matmul;

/* fuse_matmul.c: MatMul + bias Add [+ Relu or Gelu] and Gemm [+ Relu or
 * Gelu] with a constant B into one ES_DOMAIN FusedMatMul. */
extern const es_pass es_pass_fuse_matmul;

/* fuse_bmm.c: MatMul of two computed tensors with the Transposes (and a
 * scalar scale) around it into one ES_DOMAIN BatchMatMul reading and
 * writing through strides. */
extern const es_pass es_pass_fuse_bmm;

#endif
