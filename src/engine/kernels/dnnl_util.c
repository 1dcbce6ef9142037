/* Shared oneDNN helpers (see dnnl_util.h). */
#include "engine/kernels/dnnl_util.h"

#include <omp.h>
#include <pthread.h>

#include <oneapi/dnnl/dnnl_debug.h>

static pthread_once_t dnnl_once = PTHREAD_ONCE_INIT;
static dnnl_engine_t cpu_engine;
static pthread_key_t stream_key;
static int stream_key_ok;

static void stream_free(void *p)
{
	dnnl_stream_destroy((dnnl_stream_t)p);
}

static void dnnl_setup(void)
{
	if (dnnl_engine_create(&cpu_engine, dnnl_cpu, 0) != dnnl_success)
		cpu_engine = NULL;
	stream_key_ok = pthread_key_create(&stream_key, stream_free) == 0;
}

dnnl_engine_t es_dnnl_engine(void)
{
	pthread_once(&dnnl_once, dnnl_setup);
	return cpu_engine;
}

dnnl_stream_t es_dnnl_stream(void)
{
	dnnl_engine_t eng = es_dnnl_engine();
	if (!eng || !stream_key_ok)
		return NULL;
	dnnl_stream_t s = pthread_getspecific(stream_key);
	if (s)
		return s;
	if (dnnl_stream_create(&s, eng, dnnl_stream_default_flags) != dnnl_success)
		return NULL;
	if (pthread_setspecific(stream_key, s) != 0) {
		dnnl_stream_destroy(s);
		return NULL;
	}
	return s;
}

void es_dnnl_set_threads(int threads)
{
	if (threads < 1)
		threads = 1;
	/* the ICV is per calling thread; only touch it when it differs */
	if (omp_get_max_threads() != threads)
		omp_set_num_threads(threads);
}

const char *es_dnnl_strstatus(dnnl_status_t s)
{
	return dnnl_status2str(s);
}

dnnl_status_t es_dnnl_md_plain(dnnl_memory_desc_t *md, int ndims,
			       const int64_t *dims, dnnl_data_type_t dt)
{
	dnnl_dims_t d, st;
	if (ndims < 1 || ndims > DNNL_MAX_NDIMS)
		return dnnl_invalid_arguments;
	int64_t stride = 1;
	for (int i = ndims - 1; i >= 0; i--) {
		d[i] = dims[i];
		st[i] = stride;
		stride *= dims[i] > 0 ? dims[i] : 1;
	}
	return dnnl_memory_desc_init_by_strides(md, ndims, d, dt, st);
}

dnnl_status_t es_dnnl_md_strided(dnnl_memory_desc_t *md, int ndims,
				 const int64_t *dims, const int64_t *strides,
				 dnnl_data_type_t dt)
{
	dnnl_dims_t d, st;
	if (ndims < 1 || ndims > DNNL_MAX_NDIMS)
		return dnnl_invalid_arguments;
	for (int i = 0; i < ndims; i++) {
		d[i] = dims[i];
		st[i] = strides[i];
	}
	return dnnl_memory_desc_init_by_strides(md, ndims, d, dt, st);
}

dnnl_status_t es_dnnl_memory(dnnl_memory_t *mem, const dnnl_memory_desc_t *md,
			     const void *buf)
{
	dnnl_engine_t eng = es_dnnl_engine();
	if (!eng)
		return dnnl_runtime_error;
	/* oneDNN takes a non-const handle; inputs are only read */
	return dnnl_memory_create(mem, md, eng, (void *)buf);
}

dnnl_status_t es_dnnl_bind(dnnl_memory_t *mem, const void **bound,
			   const dnnl_memory_desc_t *md, const void *buf)
{
	dnnl_status_t s;
	if (!*mem) {
		if ((s = es_dnnl_memory(mem, md, buf)))
			return s;
	} else if (*bound != buf) {
		/* oneDNN takes a non-const handle; inputs are only read */
		if ((s = dnnl_memory_set_data_handle(*mem, (void *)buf)))
			return s;
	}
	*bound = buf;
	return dnnl_success;
}

dnnl_status_t es_dnnl_reorder(const dnnl_memory_desc_t *src_md, const void *src,
			      const dnnl_memory_desc_t *dst_md, void *dst)
{
	dnnl_engine_t eng = es_dnnl_engine();
	dnnl_stream_t strm = es_dnnl_stream();
	dnnl_primitive_desc_t pd = NULL;
	dnnl_primitive_t prim = NULL;
	dnnl_memory_t msrc = NULL, mdst = NULL;
	dnnl_status_t st;

	if (!eng || !strm)
		return dnnl_runtime_error;
	st = dnnl_reorder_primitive_desc_create(&pd, src_md, eng, dst_md, eng, NULL);
	if (st != dnnl_success)
		return st;
	st = dnnl_primitive_create(&prim, pd);
	if (st != dnnl_success)
		goto out_free_pd;
	st = es_dnnl_memory(&msrc, src_md, src);
	if (st != dnnl_success)
		goto out_free_prim;
	st = es_dnnl_memory(&mdst, dst_md, dst);
	if (st != dnnl_success)
		goto out_free_src;
	dnnl_exec_arg_t args[2] = {
		{ DNNL_ARG_FROM, msrc },
		{ DNNL_ARG_TO, mdst },
	};
	st = dnnl_primitive_execute(prim, strm, 2, args);
	if (st == dnnl_success)
		st = dnnl_stream_wait(strm);
	dnnl_memory_destroy(mdst);
out_free_src:
	dnnl_memory_destroy(msrc);
out_free_prim:
	dnnl_primitive_destroy(prim);
out_free_pd:
	dnnl_primitive_desc_destroy(pd);
	return st;
}
