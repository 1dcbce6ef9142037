/* Allocation helpers: aligned buffers and overflow-checked sizes. */
#ifndef ES_BASE_ALLOC_H
#define ES_BASE_ALLOC_H

#include <stddef.h>
#include <stdint.h>

#define ES_ALIGN 64
#define ES_HUGE_PAGE ((size_t)2 << 20)
#define ES_HUGE_THRESHOLD ((size_t)4 << 20)

/* 64-byte aligned allocation (2 MiB aligned and backed by huge pages when
 * large); free with es_aligned_free (or free). size 0 returns a valid
 * minimal block. */
void *es_aligned_alloc(size_t size);
void *es_aligned_calloc(size_t size);
void es_aligned_free(void *p);

/* Counts every es_aligned_alloc/calloc since start (for the tests that prove
 * steady-state runs allocate nothing). */
uint64_t es_alloc_count(void);

/* strdup that returns NULL on NULL input. */
char *es_strdup(const char *s);
char *es_strndup(const char *s, size_t n);

/* *out = a * b; returns nonzero on overflow. */
static inline int es_mul_size(size_t a, size_t b, size_t *out)
{
	return __builtin_mul_overflow(a, b, out);
}
static inline int es_add_size(size_t a, size_t b, size_t *out)
{
	return __builtin_add_overflow(a, b, out);
}

#endif
