/* Runtime library versions (src/engine/runtime.c) and the minimum version
 * check (src/serving/runtime_check.c), including an LD_PRELOADed old
 * oneDNN (tests/shim/old_onednn.c) taking the place of the real one. */
#define _GNU_SOURCE /* environ */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "serving/runtime_check.h"

extern char **environ;

/* Defined in src/engine/runtime.c for this test; no header declares it. */
void es_openblas_parse_config(const char *config, es_runtime_versions *out);

#define PRINT_ENV "ES_TEST_PRINT_RUNTIME"
#define SHIM_NAME "libes_shim_old_onednn.so"

static void want_check(const es_runtime_versions *v, int code, const char *part)
{
	es_error err = { 0 };
	int rc = es_runtime_check(v, &err);
	if (rc != code)
		fail_msg("expected %d, got %d: %s", code, rc, err.msg);
	if (part && !strstr(err.msg, part))
		fail_msg("message lacks \"%s\": %s", part, err.msg);
}

static es_runtime_versions fabricated(int a, int b, int c, int x, int y, int z)
{
	es_runtime_versions v;
	memset(&v, 0, sizeof(v));
	v.onednn[0] = a;
	v.onednn[1] = b;
	v.onednn[2] = c;
	snprintf(v.onednn_str, sizeof(v.onednn_str), "%d.%d.%d", a, b, c);
	v.openblas[0] = x;
	v.openblas[1] = y;
	v.openblas[2] = z;
	snprintf(v.openblas_str, sizeof(v.openblas_str), "%d.%d.%d", x, y, z);
	strcpy(v.openblas_core, "Haswell");
	return v;
}

static void test_this_machine(void **state)
{
	es_runtime_versions v;
	es_engine_runtime_versions(&v);
	print_message("oneDNN %s, OpenBLAS %s (%s)\n", v.onednn_str, v.openblas_str,
		      v.openblas_core);
	assert_true(v.onednn[0] >= 2);
	assert_true(v.onednn_str[0]);
	assert_true(v.openblas_str[0]);
	assert_true(v.openblas_core[0]);
	/* the same answer every time */
	es_runtime_versions again;
	es_engine_runtime_versions(&again);
	assert_memory_equal(&v, &again, sizeof(v));
	want_check(&v, 0, NULL);
}

static void test_parse_openblas_config(void **state)
{
	es_runtime_versions v;
	memset(&v, 0x5a, sizeof(v));
	es_openblas_parse_config("OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Haswell MAX_THREADS=64",
				 &v);
	assert_string_equal(v.openblas_str, "0.3.21");
	assert_int_equal(v.openblas[0], 0);
	assert_int_equal(v.openblas[1], 3);
	assert_int_equal(v.openblas[2], 21);
	assert_string_equal(v.openblas_core, "Haswell");

	/* Debian 12's own string */
	es_openblas_parse_config(
		"OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY SkylakeX MAX_THREADS=64", &v);
	assert_string_equal(v.openblas_str, "0.3.21");
	assert_string_equal(v.openblas_core, "SkylakeX");

	/* a development version, extra spaces, no core */
	es_openblas_parse_config("  OpenBLAS   0.3.27.dev  USE_OPENMP SINGLE_THREADED", &v);
	assert_string_equal(v.openblas_str, "0.3.27.dev");
	assert_int_equal(v.openblas[1], 3);
	assert_int_equal(v.openblas[2], 27);
	assert_string_equal(v.openblas_core, "");

	/* major.minor only */
	es_openblas_parse_config("OpenBLAS 1.0 Zen", &v);
	assert_string_equal(v.openblas_str, "1.0");
	assert_int_equal(v.openblas[0], 1);
	assert_int_equal(v.openblas[2], 0);
	assert_string_equal(v.openblas_core, "Zen");

	/* unknown: zeros and "" */
	const char *unknown[] = { NULL, "", "OpenBLAS", "libblas 3.11.0", "OpenBLAS x.y.z Haswell",
				  "OpenBLAS 3 Haswell", "OpenBLAS .3.21", "OpenBLAS 123456789.3.21",
				  "openblas 0.3.21" };
	for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
		memset(&v, 0x5a, sizeof(v));
		es_openblas_parse_config(unknown[i], &v);
		assert_string_equal(v.openblas_str, "");
		assert_int_equal(v.openblas[0], 0);
		assert_int_equal(v.openblas[1], 0);
		assert_int_equal(v.openblas[2], 0);
		want_check(&v, ES_EUNSUPPORTED, "the OpenBLAS in use does not report a version");
	}

	/* long tokens are cut, control bytes made visible, a long string bounded */
	es_openblas_parse_config("OpenBLAS 0.3.21.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa "
				 "Core\x01With\x7fJunk_and_a_very_long_name_indeed", &v);
	assert_int_equal(strlen(v.openblas_str), sizeof(v.openblas_str) - 1);
	assert_int_equal(v.openblas[2], 21);
	assert_int_equal(strlen(v.openblas_core), sizeof(v.openblas_core) - 1);
	assert_memory_equal(v.openblas_core, "Core?With?Junk", 14);
	char *huge = malloc(100000);
	assert_non_null(huge);
	memset(huge, 'A', 99999);
	huge[99999] = '\0';
	memcpy(huge, "OpenBLAS 0.3.21 ", 16);
	es_openblas_parse_config(huge, &v);
	assert_string_equal(v.openblas_str, "0.3.21");
	free(huge);
}

static void test_check_versions(void **state)
{
	es_runtime_versions v;
	/* the minimums themselves and newer pass */
	v = fabricated(2, 6, 0, 0, 3, 21);
	want_check(&v, 0, NULL);
	v = fabricated(3, 0, 0, 0, 4, 0);
	want_check(&v, 0, NULL);
	v = fabricated(2, 10, 1, 1, 0, 0);
	want_check(&v, 0, NULL);

	v = fabricated(2, 5, 0, 0, 3, 21);
	want_check(&v, ES_EUNSUPPORTED,
		     "oneDNN 2.5.0 is older than 2.6.0, the oldest version edgeserve is tested "
		     "with; upgrade libdnnl2 or start with --allow_old_runtime to run anyway");
	v = fabricated(1, 99, 99, 0, 3, 21);
	want_check(&v, ES_EUNSUPPORTED, "oneDNN 1.99.99 is older than 2.6.0");
	v = fabricated(2, 6, 0, 0, 3, 20);
	want_check(&v, ES_EUNSUPPORTED,
		     "OpenBLAS 0.3.20 is older than 0.3.21, the oldest version edgeserve is "
		     "tested with; upgrade libopenblas0 or start with --allow_old_runtime");
	v = fabricated(2, 0, 0, 0, 2, 99);
	es_error err = { 0 };
	assert_int_equal(es_runtime_check(&v, &err), ES_EUNSUPPORTED);
	assert_int_equal(err.code, ES_EUNSUPPORTED);
	assert_non_null(strstr(err.msg, "oneDNN 2.0.0 is older"));
	assert_non_null(strstr(err.msg, "; OpenBLAS 0.2.99 is older"));

	/* a oneDNN that says 0.0.0 is as unknown as an unreadable OpenBLAS */
	v = fabricated(0, 0, 0, 0, 3, 21);
	want_check(&v, ES_EUNSUPPORTED, "the oneDNN in use does not report a version");
	assert_int_equal(es_runtime_check(NULL, &err), ES_EINVAL);
}

/* Child mode: prints what this process sees and exits (see main). */
static int print_runtime(void)
{
	es_runtime_versions v;
	es_error err = { 0 };
	es_engine_runtime_versions(&v);
	int rc = es_runtime_check(&v, &err);
	printf("onednn %s\nopenblas %s %s\ncheck %d %s\n", v.onednn_str, v.openblas_str,
	       v.openblas_core, rc, err.msg);
	return 0;
}

/* Runs this test binary again with extra environment entries; returns its
 * standard output (malloc'ed). */
static char *run_self(const char *const *extra, size_t n_extra)
{
	size_t n_env = 0;
	while (environ[n_env])
		n_env++;
	char **env = calloc(n_env + n_extra + 1, sizeof(*env));
	assert_non_null(env);
	size_t k = 0;
	for (size_t i = 0; i < n_env; i++) {
		bool replaced = false;
		for (size_t j = 0; j < n_extra; j++) {
			size_t name_len = strcspn(extra[j], "=");
			if (!strncmp(environ[i], extra[j], name_len + 1))
				replaced = true;
		}
		if (!replaced)
			env[k++] = environ[i];
	}
	for (size_t j = 0; j < n_extra; j++)
		env[k++] = (char *)extra[j];
	env[k] = NULL;

	int fds[2];
	assert_int_equal(pipe(fds), 0);
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
	posix_spawn_file_actions_addclose(&fa, fds[0]);
	char *argv[] = { "test_runtime_check", NULL };
	pid_t pid;
	assert_int_equal(posix_spawn(&pid, "/proc/self/exe", &fa, NULL, argv, env), 0);
	posix_spawn_file_actions_destroy(&fa);
	close(fds[1]);
	free(env);
	size_t cap = 4096, len = 0;
	char *out = malloc(cap);
	assert_non_null(out);
	for (;;) {
		ssize_t r = read(fds[0], out + len, cap - 1 - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		len += (size_t)r;
		if (len + 1 == cap) {
			cap *= 2;
			out = realloc(out, cap);
			assert_non_null(out);
		}
	}
	out[len] = '\0';
	close(fds[0]);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("child failed (status %d): %s", status, out);
	return out;
}

/* The shim is built next to this test (tests/ of the build tree). */
static void test_preloaded_old_onednn(void **state)
{
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	assert_true(n > 0);
	exe[n] = '\0';
	char *slash = strrchr(exe, '/');
	assert_non_null(slash);
	*slash = '\0';
	char preload[PATH_MAX + 64];
	snprintf(preload, sizeof(preload), "LD_PRELOAD=%s/%s", exe, SHIM_NAME);
	if (access(preload + strlen("LD_PRELOAD="), R_OK) != 0)
		skip(); /* the shim target was not built */

	/* the real library, as a control */
	const char *plain[] = { PRINT_ENV "=1" };
	char *out = run_self(plain, 1);
	es_runtime_versions v;
	es_engine_runtime_versions(&v);
	char want[128];
	snprintf(want, sizeof(want), "onednn %s\n", v.onednn_str);
	if (!strstr(out, want))
		fail_msg("plain run: %s", out);
	assert_non_null(strstr(out, "check 0"));
	free(out);

	/* a preloaded library wins over the linked oneDNN. An ASan runtime
	 * insists on coming first in the library list; it need not here. */
	const char *asan = getenv("ASAN_OPTIONS");
	char asan_opts[1024];
	snprintf(asan_opts, sizeof(asan_opts), "ASAN_OPTIONS=%s%sverify_asan_link_order=0",
		 asan ? asan : "", asan && *asan ? ":" : "");
	const char *shimmed[] = { PRINT_ENV "=1", preload, asan_opts };
	out = run_self(shimmed, 3);
	if (!strstr(out, "onednn 2.0.0\n"))
		fail_msg("preloaded run: %s", out);
	assert_non_null(strstr(out, "check -5 oneDNN 2.0.0 is older than 2.6.0, the oldest version "
				    "edgeserve is tested with; upgrade libdnnl2 or start with "
				    "--allow_old_runtime to run anyway"));
	free(out);
}

int main(void)
{
	if (getenv(PRINT_ENV))
		return print_runtime();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_this_machine),
		cmocka_unit_test(test_parse_openblas_config),
		cmocka_unit_test(test_check_versions),
		cmocka_unit_test(test_preloaded_old_onednn),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
