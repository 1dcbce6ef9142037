/*
 * gemm_limit: the machine's fp32 GEMM limit, measured the way the engine's
 * big kernels reach it: oneDNN's dnnl_sgemm on square matrices.
 *
 *   es_gemm_limit [--size N] [--threads "1 2"] [--seconds S]
 *
 * For each thread count it runs C = A * B (N x N, row-major, default
 * N = 1024) repeatedly for about S seconds (default 1) after two warm-up
 * calls, and prints one line per thread count:
 *
 *   gemm_limit size 1024 threads 1 best_gflops 201.3 median_gflops 198.7 calls 190
 *
 * "best" is the fastest single call (2*N^3 FLOPs over its wall time), the
 * figure to compare a model's GFLOP/s with. A benchmark tool for
 * bench/engine/run.sh, not a test: it exits non-zero only when it cannot
 * run (bad option, no memory, oneDNN error).
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <oneapi/dnnl/dnnl.h>

#define MAX_THREAD_COUNTS 16

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static int usage(const char *msg, const char *arg)
{
	fprintf(stderr, "es_gemm_limit: %s '%s'\n"
		"usage: es_gemm_limit [--size N] [--threads \"1 2\"] [--seconds S]\n",
		msg, arg ? arg : "");
	return 2;
}

static int parse_int(const char *s, long lo, long hi, long *out)
{
	char *end;
	long v = strtol(s, &end, 10);
	if (end == s || *end || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

/* Times calls of one N^3 sgemm with `threads` OpenMP threads for about
 * `seconds`; prints the result line. Returns 0, or 1 on a oneDNN error. */
static int measure(const float *a, const float *b, float *c, long n,
		   int threads, double seconds)
{
	enum { MAX_CALLS = 100000 };
	static double gflops[MAX_CALLS];
	double flops = 2.0 * (double)n * (double)n * (double)n;
	int calls = 0;

	omp_set_num_threads(threads);
	for (int w = 0; w < 2; w++)
		if (dnnl_sgemm('N', 'N', n, n, n, 1.0f, a, n, b, n, 0.0f, c, n) !=
		    dnnl_success)
			goto fail;
	double end = now_s() + seconds;
	while (calls < MAX_CALLS && (calls < 5 || now_s() < end)) {
		double t0 = now_s();
		if (dnnl_sgemm('N', 'N', n, n, n, 1.0f, a, n, b, n, 0.0f, c, n) !=
		    dnnl_success)
			goto fail;
		double dt = now_s() - t0;
		gflops[calls++] = dt > 0 ? flops / dt * 1e-9 : 0.0;
	}
	qsort(gflops, (size_t)calls, sizeof(double), cmp_double);
	printf("gemm_limit size %ld threads %d best_gflops %.1f median_gflops %.1f calls %d\n",
	       n, threads, gflops[calls - 1], gflops[calls / 2], calls);
	return 0;
fail:
	fprintf(stderr, "es_gemm_limit: dnnl_sgemm failed (size %ld, %d threads)\n",
		n, threads);
	return 1;
}

int main(int argc, char **argv)
{
	long n = 1024, seconds_tenths = 10;
	int thread_counts[MAX_THREAD_COUNTS] = {1, 2};
	int n_counts = 2;

	for (int i = 1; i < argc; i++) {
		const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
		long v;
		if (!strcmp(opt, "-h") || !strcmp(opt, "--help")) {
			printf("usage: es_gemm_limit [--size N] [--threads \"1 2\"] [--seconds S]\n");
			return 0;
		}
		if (!val)
			return usage("option needs a value:", opt);
		i++;
		if (!strcmp(opt, "--size")) {
			if (parse_int(val, 16, 8192, &n))
				return usage("--size expects an integer in [16, 8192], got", val);
		} else if (!strcmp(opt, "--seconds")) {
			char *end;
			double s = strtod(val, &end);
			if (end == val || *end || !(s > 0 && s <= 600))
				return usage("--seconds expects a number in (0, 600], got", val);
			seconds_tenths = (long)(s * 10 + 0.5);
			if (seconds_tenths < 1)
				seconds_tenths = 1;
		} else if (!strcmp(opt, "--threads")) {
			char buf[256], *save = NULL;
			snprintf(buf, sizeof(buf), "%s", val);
			n_counts = 0;
			for (char *tok = strtok_r(buf, " ,", &save); tok;
			     tok = strtok_r(NULL, " ,", &save)) {
				if (n_counts == MAX_THREAD_COUNTS || parse_int(tok, 1, 4096, &v))
					return usage("--threads expects up to 16 integers in [1, 4096], got", val);
				thread_counts[n_counts++] = (int)v;
			}
			if (!n_counts)
				return usage("--threads expects a list of integers, got", val);
		} else {
			return usage("unknown option", opt);
		}
	}

	size_t bytes = (size_t)n * (size_t)n * sizeof(float);
	float *a = aligned_alloc(64, bytes), *b = aligned_alloc(64, bytes),
	      *c = aligned_alloc(64, bytes);
	int rc = 0;
	if (!a || !b || !c) {
		fprintf(stderr, "es_gemm_limit: out of memory for three %ld x %ld matrices\n",
			n, n);
		rc = 1;
		goto out_free;
	}
	/* small deterministic values: no denormals, no overflow */
	for (size_t i = 0; i < (size_t)n * (size_t)n; i++) {
		a[i] = (float)((i * 7u) % 13u) * 0.01f - 0.06f;
		b[i] = (float)((i * 5u) % 11u) * 0.01f - 0.05f;
	}
	for (int t = 0; t < n_counts && !rc; t++)
		rc = measure(a, b, c, n, thread_counts[t], (double)seconds_tenths / 10.0);
out_free:
	free(a);
	free(b);
	free(c);
	return rc;
}
