#include "base/alloc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

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
	/* Large buffers (weights, activations) start on a 2 MiB boundary and
	 * ask for transparent huge pages: first touch then costs one fault
	 * per 2 MiB instead of one per 4 KiB. */
	size_t align = rounded >= ES_HUGE_THRESHOLD ? ES_HUGE_PAGE : ES_ALIGN;
	if (posix_memalign(&p, align, rounded) != 0)
		return NULL;
	if (align == ES_HUGE_PAGE)
		madvise(p, rounded & ~(size_t)(ES_HUGE_PAGE - 1), MADV_HUGEPAGE);
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
