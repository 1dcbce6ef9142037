/*
 * Which library runs the engine's float GEMMs, chosen at run time from what
 * the libraries themselves report: oneDNN's effective CPU ISA
 * (dnnl_get_effective_cpu_isa) and the kernel family OpenBLAS picked for
 * this processor (openblas_get_corename). Each is ranked by the widest
 * fused multiply-add it will use; OpenBLAS is chosen only when its rank is
 * higher (ties go to oneDNN, which measured faster on every shape the
 * benchmark models use, docs/engine.md "GEMM library"). No CPU model list:
 * a machine where Debian's OpenBLAS does use AVX-512 and oneDNN is limited
 * (e.g. by ONEDNN_MAX_CPU_ISA) gets OpenBLAS.
 *
 * The environment variable ES_GEMM_LIBRARY ("onednn" or "openblas")
 * overrides the choice, for measurements and tests; any other value is
 * ignored with the reason saying so.
 */
#ifndef ES_ENGINE_KERNELS_GEMM_SELECT_H
#define ES_ENGINE_KERNELS_GEMM_SELECT_H

typedef enum es_gemm_lib {
	ES_GEMM_ONEDNN = 0,
	ES_GEMM_OPENBLAS = 1,
} es_gemm_lib;

typedef struct es_gemm_choice {
	es_gemm_lib lib;
	int onednn_rank, openblas_rank; /* 0 none/SSE, 1 AVX, 2 AVX2+FMA, 3 AVX-512 */
	char reason[192];               /* one line for logs and `edgeserve run` */
} es_gemm_choice;

/* The process's choice, made once (thread-safe). */
const es_gemm_choice *es_gemm_choice_get(void);

/* The decision itself, for tests: onednn_isa is a dnnl_cpu_isa_t value,
 * openblas_core the core name ("" or NULL: unknown), env the override
 * (NULL: none). */
void es_gemm_decide(int onednn_isa, const char *openblas_core, const char *env,
		    es_gemm_choice *out);

/* "onednn" / "openblas". */
const char *es_gemm_lib_name(es_gemm_lib lib);

#endif
