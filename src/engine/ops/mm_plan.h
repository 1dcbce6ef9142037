/*
 * The shapes of one numpy-style matrix product (MatMul, QLinearMatMul,
 * MatMulInteger): A [..., M, K] (or [K]) times B [..., K, N] (or [K]),
 * batch dimensions broadcast multidirectionally. Shared by gemm.c and
 * qmatmul.c so both ops agree on every corner case.
 */
#ifndef ES_ENGINE_OPS_MM_PLAN_H
#define ES_ENGINE_OPS_MM_PLAN_H

#include <stdint.h>

#include "engine/ops/op.h"

typedef struct es_mm_shape {
	int64_t M, N, K;
	int nb;                      /* broadcast batch rank */
	int64_t batch;               /* product of out batch dims */
	int64_t bdims[ES_MAX_DIMS];  /* out batch dims */
	int64_t a_bstride[ES_MAX_DIMS], b_bstride[ES_MAX_DIMS]; /* 0: bcast */
	int64_t a_batch, b_batch;    /* number of matrices in A, B */
	int ndim;
	int64_t dims[ES_MAX_DIMS];   /* output shape */
} es_mm_shape;

/*
 * Plans A x B into *s: inner dimensions must agree, batch dimensions
 * broadcast. Fails through es_kctx_fail (ES_ESHAPE naming both shapes,
 * ES_ERANGE when element counts or the broadcast batch overflow).
 */
int es_mm_plan(es_kctx *k, const es_tensor *A, const es_tensor *B,
	       es_mm_shape *s);

/* Element offsets of output batch b's matrices in A and B. */
void es_mm_offsets(const es_mm_shape *s, int64_t b, int64_t *oa, int64_t *ob);

#endif
