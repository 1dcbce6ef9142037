/*
 * Single-precision GEMM for the kernels, backed by oneDNN's matmul
 * primitive (cached per calling thread and call shape, see sgemm.c).
 *
 * All matrices are row-major. op(X) is X or its transpose:
 *     C = alpha * op(A) * op(B) + beta * C
 * with op(A) M x K, op(B) K x N and C M x N. lda/ldb/ldc are row strides in
 * elements of the matrices as stored (A is M x K, or K x M when transA).
 *
 * Threads: oneDNN (OpenMP runtime) uses omp_get_max_threads() of the calling
 * thread; the session sets it with omp_set_num_threads. Inside an OpenMP
 * parallel region a call runs on the calling thread only.
 */
#ifndef ES_ENGINE_KERNELS_SGEMM_H
#define ES_ENGINE_KERNELS_SGEMM_H

#include <stdbool.h>
#include <stdint.h>

/*
 * C = alpha * op(A) * op(B) + beta * C. With beta == 0, C is only written
 * (NaNs already in C do not propagate). M, N or K may be 0. Returns 0,
 * ES_EINVAL for negative sizes or too small leading dimensions, or
 * ES_EINTERNAL when oneDNN fails.
 */
int es_sgemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K,
	     float alpha, const float *A, int64_t lda, const float *B,
	     int64_t ldb, float beta, float *C, int64_t ldc);

/*
 * `batch` independent GEMMs with the same sizes: matrix b of A starts at
 * A + b * strideA (likewise B, C). A stride of 0 reuses one matrix for every
 * batch (broadcasting); strideC must not make outputs overlap. When the
 * matrices are small and threads > 1, the batches are spread over an
 * OpenMP team of `threads`; otherwise each GEMM uses oneDNN's own threads.
 * Returns as es_sgemm.
 */
int es_sgemm_strided(bool transA, bool transB, int64_t M, int64_t N,
		     int64_t K, float alpha, const float *A, int64_t lda,
		     int64_t strideA, const float *B, int64_t ldb,
		     int64_t strideB, float beta, float *C, int64_t ldc,
		     int64_t strideC, int64_t batch, int threads);

/*
 * Policy shared by batched callers: true when `batch` GEMMs of M x N x K
 * should be spread over `threads` one matrix per thread (each then runs
 * single-threaded inside the team) rather than run one after the other
 * with oneDNN threading each.
 */
bool es_sgemm_spread_batches(int64_t M, int64_t N, int64_t K, int64_t batch,
			     int threads);

#endif
