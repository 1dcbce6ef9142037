/* Versions of the runtime libraries, as the loaded libraries report them. */
#include "edgeserve/engine.h"

#include <ctype.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <oneapi/dnnl/dnnl.h>

/* Reads an OpenBLAS config string ("OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY
 * Haswell MAX_THREADS=64") into out's openblas fields: zeros and "" for
 * what it does not say. Never reads more than 512 bytes of config (may be
 * NULL). Not in engine.h: exported only for tests/unit/test_runtime_check.c,
 * which declares it the same way. */
void es_openblas_parse_config(const char *config, es_runtime_versions *out);

/*
 * OpenBLAS exports these without a header that declares them. The config
 * call is a strong reference on purpose: with --as-needed (Debian's
 * default) a library referenced only weakly is dropped from the program,
 * and the version would read as unknown. openblas_get_corename is weak:
 * it is newer and optional. All calls go through the dynamic symbol table
 * (shared libraries), so an LD_PRELOADed library that defines them takes
 * their place.
 */
extern char *openblas_get_config(void);
extern char *openblas_get_corename(void) __attribute__((weak));

/* Longest config string we look at; OpenBLAS's own buffer is 256 bytes. */
#define CONFIG_MAX 512

/* Build options OpenBLAS lists in its config string, none a core name. */
static bool is_build_option(const char *tok, size_t len)
{
	static const char *const options[] = {
		"DYNAMIC_ARCH", "DYNAMIC_OLDER", "NO_AFFINITY", "NO_LAPACK",
		"NO_LAPACKE", "NO_CBLAS", "USE64BITINT", "USE_OPENMP", "USE_TLS",
		"SINGLE_THREADED", "SMP", "NO_AVX", "NO_AVX2", "NO_AVX512",
	};
	if (memchr(tok, '=', len))
		return true; /* MAX_THREADS=64 and the like */
	for (size_t i = 0; i < sizeof(options) / sizeof(options[0]); i++)
		if (strlen(options[i]) == len && !memcmp(tok, options[i], len))
			return true;
	return false;
}

/* Parses "1.2.3" (patch optional, anything after it ignored) into v. */
static bool parse_version(const char *s, size_t len, int v[3])
{
	int part = 0;
	size_t i = 0;
	v[0] = v[1] = v[2] = 0;
	while (part < 3) {
		if (i >= len || !isdigit((unsigned char)s[i]))
			return part >= 2;
		long x = 0;
		while (i < len && isdigit((unsigned char)s[i])) {
			x = x * 10 + (s[i] - '0');
			if (x > 99999)
				return false;
			i++;
		}
		v[part++] = (int)x;
		if (i >= len || s[i] != '.')
			break;
		i++;
	}
	return part >= 2;
}

static void copy_token(char *dst, size_t cap, const char *tok, size_t len)
{
	if (len >= cap)
		len = cap - 1;
	for (size_t i = 0; i < len; i++)
		dst[i] = isprint((unsigned char)tok[i]) ? tok[i] : '?';
	dst[len] = '\0';
}

void es_openblas_parse_config(const char *config, es_runtime_versions *out)
{
	out->openblas_str[0] = '\0';
	out->openblas_core[0] = '\0';
	memset(out->openblas, 0, sizeof(out->openblas));
	if (!config)
		return;
	size_t n = strnlen(config, CONFIG_MAX);
	const char *end = config + n;
	const char *p = config;
	int token = 0;
	while (p < end) {
		while (p < end && isspace((unsigned char)*p))
			p++;
		const char *tok = p;
		while (p < end && !isspace((unsigned char)*p))
			p++;
		size_t len = (size_t)(p - tok);
		if (!len)
			break;
		if (token == 0 && !(len == 8 && !memcmp(tok, "OpenBLAS", 8)))
			return; /* not the string we know how to read */
		if (token == 1) {
			int v[3];
			if (parse_version(tok, len, v)) {
				memcpy(out->openblas, v, sizeof(v));
				copy_token(out->openblas_str, sizeof(out->openblas_str), tok, len);
			}
		} else if (token >= 2 && !out->openblas_core[0] && !is_build_option(tok, len)) {
			copy_token(out->openblas_core, sizeof(out->openblas_core), tok, len);
		}
		token++;
	}
}

static es_runtime_versions cached;
static pthread_once_t cached_once = PTHREAD_ONCE_INIT;

/* openblas_get_config formats into one static buffer: call it once. */
static void read_versions(void)
{
	const dnnl_version_t *dv = dnnl_version();
	if (dv) {
		cached.onednn[0] = dv->major;
		cached.onednn[1] = dv->minor;
		cached.onednn[2] = dv->patch;
		snprintf(cached.onednn_str, sizeof(cached.onednn_str), "%d.%d.%d",
			 dv->major, dv->minor, dv->patch);
	}
	es_openblas_parse_config(openblas_get_config(), &cached);
	if (openblas_get_corename) {
		const char *core = openblas_get_corename();
		if (core && *core)
			copy_token(cached.openblas_core, sizeof(cached.openblas_core), core,
				   strnlen(core, sizeof(cached.openblas_core) - 1));
	}
}

void es_engine_runtime_versions(es_runtime_versions *out)
{
	pthread_once(&cached_once, read_versions);
	*out = cached;
}
