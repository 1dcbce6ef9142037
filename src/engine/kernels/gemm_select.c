/* The float GEMM library choice (gemm_select.h). */
#include "engine/kernels/gemm_select.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <oneapi/dnnl/dnnl.h>

#include "edgeserve/engine.h"

const char *es_gemm_lib_name(es_gemm_lib lib)
{
	return lib == ES_GEMM_OPENBLAS ? "openblas" : "onednn";
}

/* oneDNN ISA values are bit sets growing with the ISA (dnnl_types.h). */
static int onednn_rank(int isa)
{
	if ((isa & dnnl_cpu_isa_avx512_core) == dnnl_cpu_isa_avx512_core ||
	    (isa & dnnl_cpu_isa_avx512_mic) == dnnl_cpu_isa_avx512_mic)
		return 3;
	if ((isa & dnnl_cpu_isa_avx2) == dnnl_cpu_isa_avx2)
		return 2;
	if ((isa & dnnl_cpu_isa_avx) == dnnl_cpu_isa_avx)
		return 1;
	return 0;
}

/* OpenBLAS x86-64 kernel families by the vector FMA they use. */
static int openblas_rank(const char *core)
{
	static const char *const avx512[] = { "SkylakeX", "CooperLake", "SapphireRapids" };
	static const char *const fma256[] = { "Haswell", "Zen", "Excavator", "Steamroller",
					      "Piledriver" };
	static const char *const avx256[] = { "Sandybridge", "Bulldozer" };
	if (!core || !*core)
		return 0;
	for (size_t i = 0; i < sizeof(avx512) / sizeof(avx512[0]); i++)
		if (!strcasecmp(core, avx512[i]))
			return 3;
	for (size_t i = 0; i < sizeof(fma256) / sizeof(fma256[0]); i++)
		if (!strcasecmp(core, fma256[i]))
			return 2;
	for (size_t i = 0; i < sizeof(avx256) / sizeof(avx256[0]); i++)
		if (!strcasecmp(core, avx256[i]))
			return 1;
	return 0;
}

static const char *rank_name(int r)
{
	static const char *const names[] = { "SSE or unknown", "AVX", "AVX2+FMA", "AVX-512" };
	return names[r < 0 || r > 3 ? 0 : r];
}

void es_gemm_decide(int onednn_isa, const char *openblas_core, const char *env,
		    es_gemm_choice *out)
{
	memset(out, 0, sizeof(*out));
	out->onednn_rank = onednn_rank(onednn_isa);
	out->openblas_rank = openblas_rank(openblas_core);
	const char *core = openblas_core && *openblas_core ? openblas_core : "unknown core";
	if (env && (!strcmp(env, "onednn") || !strcmp(env, "openblas"))) {
		out->lib = !strcmp(env, "openblas") ? ES_GEMM_OPENBLAS : ES_GEMM_ONEDNN;
		snprintf(out->reason, sizeof(out->reason), "%s: set by ES_GEMM_LIBRARY", env);
		return;
	}
	out->lib = out->openblas_rank > out->onednn_rank ? ES_GEMM_OPENBLAS : ES_GEMM_ONEDNN;
	snprintf(out->reason, sizeof(out->reason), "%s: oneDNN uses %s, OpenBLAS (%s) %s%s%s%s",
		 es_gemm_lib_name(out->lib), rank_name(out->onednn_rank), core,
		 rank_name(out->openblas_rank),
		 env && *env ? "; ES_GEMM_LIBRARY='" : "", env && *env ? env : "",
		 env && *env ? "' ignored (onednn or openblas)" : "");
}

static es_gemm_choice choice;
static pthread_once_t choice_once = PTHREAD_ONCE_INIT;

static void choose(void)
{
	es_runtime_versions v;
	es_engine_runtime_versions(&v);
	es_gemm_decide((int)dnnl_get_effective_cpu_isa(), v.openblas_core,
		       getenv("ES_GEMM_LIBRARY"), &choice);
}

const es_gemm_choice *es_gemm_choice_get(void)
{
	pthread_once(&choice_once, choose);
	return &choice;
}
