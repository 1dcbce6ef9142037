#include "base/alloc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static atomic_uint_fast64_t alloc_count;

void *es_aligned_alloc(size_t size)
{
	void *p = NULL;
	if (size == 0)
		size = ES_ALIGN;
	/* round up so the size is a multiple of the alignment */
	size_t rounded = (size + ES_ALIGN - 1) & ~(size_t)(ES_ALIGN - 1);
	if (rounded < size)
		return NULL;
	if (posix_memalign(&p, ES_ALIGN, rounded) != 0)
		return NULL;
	atomic_fetch_add_explicit(&alloc_count, 1, memory_order_relaxed);
	return p;
}

void *es_aligned_calloc(size_t size)
{
	void *p = es_aligned_alloc(size);
	if (p)
		memset(p, 0, size ? size : ES_ALIGN);
	return p;
}

void es_aligned_free(void *p)
{
	free(p);
}

uint64_t es_alloc_count(void)
{
	return atomic_load_explicit(&alloc_count, memory_order_relaxed);
}

char *es_strdup(const char *s)
{
	return s ? strdup(s) : NULL;
}

char *es_strndup(const char *s, size_t n)
{
	return s ? strndup(s, n) : NULL;
}
