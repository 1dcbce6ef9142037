/* The GEMM library choice from what oneDNN and OpenBLAS report: ranks,
 * ties, the override and its validation, and the live process's choice
 * being one of the two with a reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <oneapi/dnnl/dnnl_types.h>

#include "engine/kernels/gemm_select.h"

static es_gemm_choice decide(int isa, const char *core, const char *env)
{
	es_gemm_choice c;
	es_gemm_decide(isa, core, env, &c);
	return c;
}

static void test_ranks_and_ties(void **state)
{
	(void)state;
	/* this machine's case: AVX-512 oneDNN, OpenBLAS on its Haswell kernel */
	es_gemm_choice c = decide(dnnl_cpu_isa_avx512_core_bf16, "Haswell", NULL);
	assert_int_equal(c.lib, ES_GEMM_ONEDNN);
	assert_int_equal(c.onednn_rank, 3);
	assert_int_equal(c.openblas_rank, 2);
	assert_non_null(strstr(c.reason, "onednn: oneDNN uses AVX-512, OpenBLAS (Haswell) AVX2+FMA"));
	/* equal ranks: oneDNN */
	assert_int_equal(decide(dnnl_cpu_isa_avx512_core, "SkylakeX", NULL).lib, ES_GEMM_ONEDNN);
	assert_int_equal(decide(dnnl_cpu_isa_avx2, "Zen", NULL).lib, ES_GEMM_ONEDNN);
	/* OpenBLAS only when it uses wider vectors than oneDNN will */
	c = decide(dnnl_cpu_isa_avx2, "CooperLake", NULL);
	assert_int_equal(c.lib, ES_GEMM_OPENBLAS);
	assert_non_null(strstr(c.reason, "openblas: oneDNN uses AVX2+FMA, OpenBLAS (CooperLake) AVX-512"));
	assert_int_equal(decide(dnnl_cpu_isa_avx, "haswell", NULL).lib, ES_GEMM_OPENBLAS);
	assert_int_equal(decide(dnnl_cpu_isa_sse41, "Sandybridge", NULL).lib, ES_GEMM_OPENBLAS);
	/* unknown cores rank lowest */
	c = decide(dnnl_cpu_isa_sse41, "", NULL);
	assert_int_equal(c.lib, ES_GEMM_ONEDNN);
	assert_non_null(strstr(c.reason, "unknown core"));
	assert_int_equal(decide(dnnl_cpu_isa_sse41, NULL, NULL).lib, ES_GEMM_ONEDNN);
	assert_int_equal(decide(dnnl_cpu_isa_sse41, "Nehalem", NULL).lib, ES_GEMM_ONEDNN);
	assert_int_equal(decide(dnnl_cpu_isa_avx512_mic, "Haswell", NULL).lib, ES_GEMM_ONEDNN);
}

static void test_override(void **state)
{
	(void)state;
	es_gemm_choice c = decide(dnnl_cpu_isa_avx512_core, "Haswell", "openblas");
	assert_int_equal(c.lib, ES_GEMM_OPENBLAS);
	assert_string_equal(c.reason, "openblas: set by ES_GEMM_LIBRARY");
	assert_int_equal(decide(dnnl_cpu_isa_avx, "SkylakeX", "onednn").lib, ES_GEMM_ONEDNN);
	/* anything else is ignored, and the reason says so */
	c = decide(dnnl_cpu_isa_avx512_core, "Haswell", "mkl");
	assert_int_equal(c.lib, ES_GEMM_ONEDNN);
	assert_non_null(strstr(c.reason, "ES_GEMM_LIBRARY='mkl' ignored"));
}

static void test_process_choice(void **state)
{
	(void)state;
	const es_gemm_choice *c = es_gemm_choice_get();
	assert_non_null(c);
	assert_true(c->lib == ES_GEMM_ONEDNN || c->lib == ES_GEMM_OPENBLAS);
	assert_ptr_equal(c, es_gemm_choice_get()); /* made once */
	assert_non_null(strstr(c->reason, es_gemm_lib_name(c->lib)));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ranks_and_ties),
		cmocka_unit_test(test_override),
		cmocka_unit_test(test_process_choice),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
