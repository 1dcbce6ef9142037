/*
 * Counts every heap allocation of a process, in all its libraries (oneDNN,
 * OpenBLAS and the OpenMP runtime included): LD_PRELOAD this library and
 * malloc, calloc, realloc, posix_memalign, aligned_alloc, memalign, valloc,
 * pvalloc and mmap are counted, then passed on to the next definition
 * (glibc's, or the sanitizer runtime's in an ASan build: the shim never
 * allocates itself, so it composes with ASan).
 *
 *   LD_PRELOAD=build/tests/libes_shim_alloc_count.so build/tests/test_alloc
 *
 * The program reads the counters through es_alloc_shim_counts, looked up
 * with dlsym(RTLD_DEFAULT, ...) so it also runs (and can say it is not
 * being counted) without the shim. free is passed on uncounted (it only
 * has to keep the blocks of the bootstrap arena below from the real free).
 *
 * (An ASan build also needs ASAN_OPTIONS=verify_asan_link_order=0.)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

/* The counters, in this order. */
enum {
	SHIM_MALLOC,
	SHIM_CALLOC,
	SHIM_REALLOC,
	SHIM_POSIX_MEMALIGN,
	SHIM_ALIGNED_ALLOC,
	SHIM_MEMALIGN,
	SHIM_VALLOC,
	SHIM_PVALLOC,
	SHIM_MMAP,
	SHIM_N
};

static atomic_ulong counts[SHIM_N];

/* Where the call came from (the object holding the caller's code). */
enum {
	ORIGIN_PROGRAM, /* the executable itself: edgeserve's code */
	ORIGIN_GOMP,    /* the OpenMP runtime */
	ORIGIN_DNNL,    /* oneDNN */
	ORIGIN_CXX,     /* the C++ runtime: operator new, called by oneDNN */
	ORIGIN_BLAS,    /* OpenBLAS */
	ORIGIN_LIBC,    /* the C library (strdup, fopen...) */
	ORIGIN_OTHER,   /* any other library (sanitizer runtimes included) */
	ORIGIN_N
};

static atomic_ulong origins[ORIGIN_N];

/* Copies the counters (up to n of them, in the order above) to out and
 * returns how many the shim has. */
size_t es_alloc_shim_counts(unsigned long *out, size_t n);
size_t es_alloc_shim_counts(unsigned long *out, size_t n)
{
	for (size_t i = 0; i < n && i < SHIM_N; i++)
		out[i] = atomic_load_explicit(&counts[i], memory_order_relaxed);
	return SHIM_N;
}

/* Copies the per-origin counters (order above) to out; returns how many. */
size_t es_alloc_shim_origins(unsigned long *out, size_t n);
size_t es_alloc_shim_origins(unsigned long *out, size_t n)
{
	for (size_t i = 0; i < n && i < ORIGIN_N; i++)
		out[i] = atomic_load_explicit(&origins[i], memory_order_relaxed);
	return ORIGIN_N;
}

static int starts_with(const char *s, const char *prefix)
{
	while (*prefix)
		if (*s++ != *prefix++)
			return 0;
	return 1;
}

/* dladdr only reads the loader's maps (no allocation). No libc string
 * functions here: a sanitizer runtime intercepts them. */
static int origin_of(const void *caller)
{
	Dl_info info;
	if (!caller || !dladdr(caller, &info) || !info.dli_fname)
		return ORIGIN_OTHER;
	const char *f = info.dli_fname;
	for (const char *c = info.dli_fname; *c; c++)
		if (*c == '/')
			f = c + 1;
	if (starts_with(f, "libgomp"))
		return ORIGIN_GOMP;
	if (starts_with(f, "libdnnl"))
		return ORIGIN_DNNL;
	if (starts_with(f, "libstdc++"))
		return ORIGIN_CXX;
	if (starts_with(f, "libopenblas") || starts_with(f, "libblas"))
		return ORIGIN_BLAS;
	if (starts_with(f, "libc.so"))
		return ORIGIN_LIBC;
	if (starts_with(f, "lib") || starts_with(f, "ld-linux"))
		return ORIGIN_OTHER;
	return ORIGIN_PROGRAM;
}

static void count_from(int which, const void *caller)
{
	atomic_fetch_add_explicit(&counts[which], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&origins[origin_of(caller)], 1, memory_order_relaxed);
}

/* Counts call `which` of the function using it, from its caller. */
#define count(which) count_from((which), __builtin_return_address(0))

/*
 * The next definitions, resolved on first use. dlsym itself may allocate,
 * and so may the loader while a sanitizer runtime resolves its own symbols
 * before we can resolve ours: until every next function is known, requests
 * are served from a static arena (never freed: free ignores its blocks)
 * and not counted.
 */
static void *(*next_malloc)(size_t);
static void *(*next_calloc)(size_t, size_t);
static void *(*next_realloc)(void *, size_t);
static int (*next_posix_memalign)(void **, size_t, size_t);
static void *(*next_aligned_alloc)(size_t, size_t);
static void *(*next_memalign)(size_t, size_t);
static void *(*next_valloc)(size_t);
static void *(*next_pvalloc)(size_t);
static void (*next_free)(void *);

/* initial-exec: static TLS, read without a call into the loader, which
 * may be in the middle of resolving symbols when we are first called */
static _Thread_local int resolving __attribute__((tls_model("initial-exec")));
static atomic_int resolved; /* two threads may resolve at once: harmless */
static _Alignas(4096) unsigned char boot_arena[256 * 1024];
static atomic_size_t boot_used;

/* align: a power of two; 0 means 64 */
static void *boot_alloc(size_t n, size_t align)
{
	if (align < 64)
		align = 64;
	if (align > 4096 || n > sizeof(boot_arena))
		return NULL;
	size_t need = (n + align - 1 + 63) & ~(size_t)63;
	size_t at = atomic_fetch_add(&boot_used, need);
	if (at + need > sizeof(boot_arena))
		return NULL;
	uintptr_t p = (uintptr_t)(boot_arena + at);
	return (void *)((p + align - 1) & ~(uintptr_t)(align - 1));
}

static int in_boot_arena(const void *p)
{
	return (const unsigned char *)p >= boot_arena &&
	       (const unsigned char *)p < boot_arena + sizeof(boot_arena);
}

/* Returns whether the next functions are known. */
static int resolve(void)
{
	if (atomic_load_explicit(&resolved, memory_order_acquire))
		return 1;
	if (resolving)
		return 0;
	resolving = 1;
	next_calloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "calloc");
	next_realloc = (void *(*)(void *, size_t))dlsym(RTLD_NEXT, "realloc");
	next_posix_memalign = (int (*)(void **, size_t, size_t))dlsym(RTLD_NEXT, "posix_memalign");
	next_aligned_alloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "aligned_alloc");
	next_memalign = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "memalign");
	next_valloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "valloc");
	next_pvalloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "pvalloc");
	next_free = (void (*)(void *))dlsym(RTLD_NEXT, "free");
	next_malloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "malloc");
	resolving = 0;
	if (!next_malloc || !next_calloc || !next_realloc || !next_posix_memalign ||
	    !next_aligned_alloc || !next_memalign || !next_valloc || !next_pvalloc ||
	    !next_free)
		return 0;
	atomic_store_explicit(&resolved, 1, memory_order_release);
	return 1;
}

void *malloc(size_t n)
{
	if (!resolve())
		return boot_alloc(n, 0);
	count(SHIM_MALLOC);
	return next_malloc(n);
}

void *calloc(size_t n, size_t size)
{
	if (!resolve()) {
		size_t bytes;
		if (__builtin_mul_overflow(n, size, &bytes))
			return NULL;
		return boot_alloc(bytes, 0); /* static storage, never reused: zero */
	}
	count(SHIM_CALLOC);
	return next_calloc(n, size);
}

void free(void *p)
{
	if (!p || in_boot_arena(p))
		return;
	if (resolve())
		next_free(p);
}

void *realloc(void *p, size_t n)
{
	if (!resolve() || in_boot_arena(p)) {
		void *q = resolve() ? next_malloc(n) : boot_alloc(n, 0);
		if (q && p) {
			/* a boot block's size is unknown: copy what can exist */
			size_t left = (size_t)(boot_arena + sizeof(boot_arena) -
					       (unsigned char *)p);
			memcpy(q, p, n < left ? n : left);
		}
		count(SHIM_REALLOC);
		return q;
	}
	count(SHIM_REALLOC);
	return next_realloc(p, n);
}

int posix_memalign(void **p, size_t align, size_t n)
{
	if (!resolve()) {
		*p = boot_alloc(n, align);
		return *p ? 0 : ENOMEM;
	}
	count(SHIM_POSIX_MEMALIGN);
	return next_posix_memalign(p, align, n);
}

void *aligned_alloc(size_t align, size_t n)
{
	if (!resolve())
		return boot_alloc(n, align);
	count(SHIM_ALIGNED_ALLOC);
	return next_aligned_alloc(align, n);
}

void *memalign(size_t align, size_t n)
{
	if (!resolve())
		return boot_alloc(n, align);
	count(SHIM_MEMALIGN);
	return next_memalign(align, n);
}

void *valloc(size_t n)
{
	if (!resolve())
		return boot_alloc(n, 4096);
	count(SHIM_VALLOC);
	return next_valloc(n);
}

void *pvalloc(size_t n)
{
	if (!resolve())
		return boot_alloc((n + 4095) & ~(size_t)4095, 4096);
	count(SHIM_PVALLOC);
	return next_pvalloc(n);
}

/* mmap through the system call: glibc's own allocator and thread stacks
 * use its internal mmap and are not seen here, but a library mapping
 * memory itself (a JIT, a large buffer) is. */
void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	count(SHIM_MMAP);
	return (void *)syscall(SYS_mmap, addr, len, prot, flags, fd, off);
}
