/* es_sgemm: row-major SGEMM on top of oneDNN's dnnl_sgemm. */
#include "engine/kernels/sgemm.h"

#include <string.h>

#include <oneapi/dnnl/dnnl.h>

#include "edgeserve/engine.h"

/* Below this many multiply-adds per matrix a batch is spread over threads
 * one matrix each, instead of letting oneDNN split every small matrix. */
#define SMALL_GEMM_MACS (1 << 18)

/* C = beta * C over an M x N block (the K == 0 case). */
static void scale_c(int64_t M, int64_t N, float beta, float *C, int64_t ldc)
{
	for (int64_t i = 0; i < M; i++) {
		float *row = C + i * ldc;
		if (beta == 0.0f) {
			memset(row, 0, (size_t)N * sizeof(float));
		} else if (beta != 1.0f) {
			for (int64_t j = 0; j < N; j++)
				row[j] *= beta;
		}
	}
}

static int check_args(bool transA, bool transB, int64_t M, int64_t N,
		      int64_t K, int64_t lda, int64_t ldb, int64_t ldc)
{
	if (M < 0 || N < 0 || K < 0)
		return ES_EINVAL;
	if (M == 0 || N == 0)
		return 0;
	if (ldc < N)
		return ES_EINVAL;
	if (K == 0)
		return 0;
	if (lda < (transA ? M : K) || ldb < (transB ? K : N))
		return ES_EINVAL;
	return 0;
}

/* The call itself, arguments already checked. */
static int sgemm_checked(bool transA, bool transB, int64_t M, int64_t N,
			 int64_t K, float alpha, const float *A, int64_t lda,
			 const float *B, int64_t ldb, float beta, float *C,
			 int64_t ldc)
{
	if (M == 0 || N == 0)
		return 0;
	if (K == 0 || alpha == 0.0f) {
		scale_c(M, N, beta, C, ldc);
		return 0;
	}
	dnnl_status_t st = dnnl_sgemm(transA ? 'T' : 'N', transB ? 'T' : 'N',
				      M, N, K, alpha, A, lda, B, ldb, beta, C,
				      ldc);
	return st == dnnl_success ? 0 : ES_EINTERNAL;
}

int es_sgemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K,
	     float alpha, const float *A, int64_t lda, const float *B,
	     int64_t ldb, float beta, float *C, int64_t ldc)
{
	int rc = check_args(transA, transB, M, N, K, lda, ldb, ldc);
	if (rc)
		return rc;
	return sgemm_checked(transA, transB, M, N, K, alpha, A, lda, B, ldb,
			     beta, C, ldc);
}

bool es_sgemm_spread_batches(int64_t M, int64_t N, int64_t K, int64_t batch,
			     int threads)
{
	int64_t mn, macs;
	if (threads <= 1 || batch <= 1)
		return false;
	if (__builtin_mul_overflow(M, N, &mn) || __builtin_mul_overflow(mn, K, &macs))
		macs = INT64_MAX;
	return batch >= threads || macs < SMALL_GEMM_MACS;
}

int es_sgemm_strided(bool transA, bool transB, int64_t M, int64_t N,
		     int64_t K, float alpha, const float *A, int64_t lda,
		     int64_t strideA, const float *B, int64_t ldb,
		     int64_t strideB, float beta, float *C, int64_t ldc,
		     int64_t strideC, int64_t batch, int threads)
{
	int rc = check_args(transA, transB, M, N, K, lda, ldb, ldc);
	if (rc)
		return rc;
	if (batch < 0 || strideA < 0 || strideB < 0 || strideC < 0)
		return ES_EINVAL;
	if (batch <= 1) {
		if (batch == 0)
			return 0;
		return sgemm_checked(transA, transB, M, N, K, alpha, A, lda, B,
				     ldb, beta, C, ldc);
	}

	bool spread = es_sgemm_spread_batches(M, N, K, batch, threads);
	int team = threads > 1 ? threads : 1;
	int failed = 0;

	#pragma omp parallel for num_threads(team) if(spread) reduction(|:failed) schedule(static)
	for (int64_t b = 0; b < batch; b++) {
		if (sgemm_checked(transA, transB, M, N, K, alpha,
				  A + b * strideA, lda, B + b * strideB, ldb,
				  beta, C + b * strideC, ldc))
			failed |= 1;
	}
	return failed ? ES_EINTERNAL : 0;
}
