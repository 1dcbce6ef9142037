/*
 * Stands in for an old oneDNN: LD_PRELOAD this library and dnnl_version()
 * reports 2.0.0, which es_runtime_check refuses. Only dnnl_version is
 * replaced; every other oneDNN call still reaches the real library.
 *
 *   LD_PRELOAD=build/tests/libes_shim_old_onednn.so build/edgeserve serve ...
 *
 * (An ASan build also needs ASAN_OPTIONS=verify_asan_link_order=0.)
 */
#include <oneapi/dnnl/dnnl.h>

const dnnl_version_t *dnnl_version(void)
{
	static const dnnl_version_t old = {
		.major = 2,
		.minor = 0,
		.patch = 0,
		.hash = "es_shim_old_onednn",
		.cpu_runtime = DNNL_RUNTIME_OMP,
		.gpu_runtime = DNNL_RUNTIME_NONE,
	};
	return &old;
}
