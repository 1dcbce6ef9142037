/*
 * Tests of the `edgeserve` binary's command line and `edgeserve run`: the
 * real binary is started as a child process, as a user would.
 *
 * The binary is found next to the build's tests directory (the parent of
 * this test's own directory) or through ES_EDGESERVE; the model is the
 * ONNX backend test `node/test_add` from libonnx-testdata. Without either
 * the tests are skipped.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "edgeserve/engine.h"
#include "engine/io/npy.h"

#define ADD_CASE "/usr/share/libonnx-testdata/data/node/test_add"

static char binary[4096];
static char tmp_dir[64];
static char out_text[65536];
static char err_text[65536];

static int setup(void **state)
{
	(void)state;
	const char *env = getenv("ES_EDGESERVE");
	if (env) {
		snprintf(binary, sizeof(binary), "%s", env);
	} else {
		char self[4096];
		ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
		if (n > 0) {
			self[n] = '\0';
			/* build/tests/test_cli_run -> build/edgeserve */
			char *dir = dirname(dirname(self));
			snprintf(binary, sizeof(binary), "%s/edgeserve", dir);
		}
	}
	snprintf(tmp_dir, sizeof(tmp_dir), "/tmp/es_test_cli_XXXXXX");
	return mkdtemp(tmp_dir) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp_dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void require_binary_and_data(void)
{
	if (access(binary, X_OK) != 0) {
		print_message("edgeserve binary not found at '%s'; set ES_EDGESERVE\n",
			      binary);
		skip();
	}
	if (access(ADD_CASE "/model.onnx", R_OK) != 0) {
		print_message("libonnx-testdata is not installed\n");
		skip();
	}
}

static void slurp(const char *path, char *buf, size_t size)
{
	FILE *f = fopen(path, "rb");
	size_t n = 0;
	if (f) {
		n = fread(buf, 1, size - 1, f);
		fclose(f);
	}
	buf[n] = '\0';
}

/* Runs the binary with the NULL-terminated argument list; captures stdout
 * and stderr into out_text/err_text and returns the exit status. */
static int run_edgeserve(const char *first, ...)
{
	const char *argv[64];
	int argc = 0;
	va_list ap;
	argv[argc++] = binary;
	va_start(ap, first);
	for (const char *a = first; a && argc < 63; a = va_arg(ap, const char *))
		argv[argc++] = a;
	va_end(ap);
	argv[argc] = NULL;

	char out_path[128], err_path[128];
	snprintf(out_path, sizeof(out_path), "%s/stdout", tmp_dir);
	snprintf(err_path, sizeof(err_path), "%s/stderr", tmp_dir);
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int o = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		int e = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (o < 0 || e < 0)
			_exit(127);
		dup2(o, STDOUT_FILENO);
		dup2(e, STDERR_FILENO);
		execv(binary, (char *const *)argv);
		_exit(127);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	slurp(out_path, out_text, sizeof(out_text));
	slurp(err_path, err_text, sizeof(err_text));
	assert_true(WIFEXITED(status)); /* never a crash */
	return WEXITSTATUS(status);
}

static void expect_contains(const char *haystack, const char *needle)
{
	if (!strstr(haystack, needle))
		fail_msg("expected '%s' in:\n%s", needle, haystack);
}

/* Writes a tensor of `dt` and shape [3,4,5] filled with `value` as .npy. */
static const char *write_npy(const char *name, es_dtype dt, double value)
{
	static char path[4][256];
	static int next;
	char *p = path[next++ % 4];
	const int64_t dims[] = {3, 4, 5};
	es_tensor t;
	es_error err = {0};
	assert_int_equal(es_tensor_alloc(&t, dt, 3, dims, &err), 0);
	for (int64_t i = 0; i < 60; i++) {
		if (dt == ES_DT_FLOAT)
			((float *)t.data)[i] = (float)value;
		else
			((int64_t *)t.data)[i] = (int64_t)value;
	}
	snprintf(p, 256, "%s/%s", tmp_dir, name);
	assert_int_equal(es_npy_write(p, &t, &err), 0);
	es_tensor_free_data(&t);
	return p;
}

/* ---- main.c ------------------------------------------------------------ */

static void test_top_level_help_and_version(void **state)
{
	(void)state;
	require_binary_and_data();
	assert_int_equal(run_edgeserve("--help", NULL), 0);
	expect_contains(out_text, "run ");
	assert_int_equal(run_edgeserve("--version", NULL), 0);
	expect_contains(out_text, ES_ENGINE_VERSION);
	assert_int_equal(run_edgeserve(NULL), 2);
}

static void test_unknown_command_and_flag(void **state)
{
	(void)state;
	require_binary_and_data();
	assert_int_equal(run_edgeserve("frobnicate", NULL), 2);
	expect_contains(err_text, "'frobnicate'");
	assert_int_equal(run_edgeserve("--frob", NULL), 2);
	expect_contains(err_text, "'--frob'");
	assert_int_equal(run_edgeserve("run", ADD_CASE "/model.onnx", "--frob", NULL), 2);
	expect_contains(err_text, "'--frob'");
	assert_int_equal(run_edgeserve("run", ADD_CASE "/model.onnx", "--iters", "0", NULL), 2);
	expect_contains(err_text, "--iters");
	assert_int_equal(run_edgeserve("run", NULL), 2);
}

/* ---- run.c ------------------------------------------------------------- */

static void test_run_help(void **state)
{
	(void)state;
	require_binary_and_data();
	assert_int_equal(run_edgeserve("run", "--help", NULL), 0);
	static const char *const flags[] = {
		"--input", "--random", "--seed", "--shape", "--threads",
		"--warmup", "--iters", "--profile", "--save-outputs", "--json",
		"--no-optimize", "--compiled",
	};
	for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
		expect_contains(out_text, flags[i]);
}

static void test_run_pb_inputs_json(void **state)
{
	(void)state;
	require_binary_and_data();
	int rc = run_edgeserve("run", ADD_CASE "/model.onnx", "--input",
			       "x=" ADD_CASE "/test_data_set_0/input_0.pb",
			       "--input", ADD_CASE "/test_data_set_0/input_1.pb",
			       "--iters", "5", "--warmup", "1", "--json",
			       "--profile", NULL);
	if (rc)
		fail_msg("exit %d: %s", rc, err_text);
	/* One JSON object and nothing else on stdout. */
	assert_int_equal(out_text[0], '{');
	size_t n = strlen(out_text);
	assert_true(n > 2 && out_text[n - 2] == '}' && out_text[n - 1] == '\n');
	static const char *const keys[] = {
		"\"model\":", "\"load_ms\":", "\"first_run_ms\":", "\"p50_ms\":",
		"\"p90_ms\":", "\"p99_ms\":", "\"min_ms\":", "\"max_ms\":",
		"\"mean_ms\":", "\"throughput_per_s\":", "\"threads\":",
		"\"iters\":5", "\"profile\":[{\"name\":", "\"op_type\":\"Add\"",
		"\"optimizer\":[{\"pass\":", "\"nodes_before\":", "\"changes\":",
	};
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		expect_contains(out_text, keys[i]);
}

static void test_run_text_report(void **state)
{
	(void)state;
	require_binary_and_data();
	int rc = run_edgeserve("run", ADD_CASE "/model.onnx", "--random",
			       "--seed", "7", "--iters", "3", "--profile", NULL);
	if (rc)
		fail_msg("exit %d: %s", rc, err_text);
	static const char *const parts[] = {
		"model ", "input 0", "x  float [3,4,5]", "output 0", "load ",
		"first run", "p50", "p90", "p99", "throughput", "threads",
		"per-node profile", "per-op-type summary", "optimizer ", " passes, ",
		"nodes", "changes",
	};
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
		expect_contains(out_text, parts[i]);

	/* without the optimizer the block says so */
	rc = run_edgeserve("run", ADD_CASE "/model.onnx", "--random", "--iters", "1",
			   "--no-optimize", NULL);
	if (rc)
		fail_msg("exit %d: %s", rc, err_text);
	expect_contains(out_text, "optimizer    off");
}

static void test_run_npy_inputs_and_save_outputs(void **state)
{
	(void)state;
	require_binary_and_data();
	const char *x = write_npy("x.npy", ES_DT_FLOAT, 1.5);
	const char *y = write_npy("y.npy", ES_DT_FLOAT, 2.0);
	char x_arg[300], y_arg[300], out_dir[128];
	snprintf(x_arg, sizeof(x_arg), "x=%s", x);
	snprintf(y_arg, sizeof(y_arg), "y=%s", y);
	snprintf(out_dir, sizeof(out_dir), "%s/saved/deeper", tmp_dir);
	int rc = run_edgeserve("run", ADD_CASE "/model.onnx", "--input", y_arg,
			       "--input", x_arg, "--iters", "1",
			       "--save-outputs", out_dir, NULL);
	if (rc)
		fail_msg("exit %d: %s", rc, err_text);

	char path[256];
	snprintf(path, sizeof(path), "%s/output_0.pb", out_dir);
	es_tensor t;
	char *name = NULL;
	es_error err = {0};
	assert_int_equal(es_tensor_read_pb(path, &t, &name, &err), 0);
	assert_string_equal(name, "sum");
	assert_int_equal(t.dtype, ES_DT_FLOAT);
	assert_int_equal(t.ndim, 3);
	for (int i = 0; i < 60; i++)
		assert_true(((float *)t.data)[i] == 3.5f);
	free(name);
	es_tensor_free_data(&t);
}

/* --compiled: the compiled form is written, loaded back, timed, and the runs
 * use the model loaded from it (same outputs as the ONNX model). */
static void test_run_compiled_round_trip(void **state)
{
	(void)state;
	require_binary_and_data();
	const char *x = write_npy("cx.npy", ES_DT_FLOAT, 0.25);
	const char *y = write_npy("cy.npy", ES_DT_FLOAT, -4.0);
	char x_arg[300], y_arg[300], esc[128], out_dir[128];
	snprintf(x_arg, sizeof(x_arg), "x=%s", x);
	snprintf(y_arg, sizeof(y_arg), "y=%s", y);
	snprintf(esc, sizeof(esc), "%s/add.esc", tmp_dir);
	snprintf(out_dir, sizeof(out_dir), "%s/compiled_out", tmp_dir);
	int rc = run_edgeserve("run", ADD_CASE "/model.onnx", "--input", x_arg,
			       "--input", y_arg, "--iters", "2", "--json",
			       "--compiled", esc, "--save-outputs", out_dir, NULL);
	if (rc)
		fail_msg("exit %d: %s", rc, err_text);
	expect_contains(out_text, "\"compiled_load_ms\":");
	expect_contains(out_text, "\"compiled_bytes\":");
	struct stat st;
	assert_int_equal(stat(esc, &st), 0);
	assert_true(st.st_size > 0);

	/* the file is a compiled form the engine loads on its own */
	static const uint8_t key[ES_COMPILED_KEY_BYTES];
	es_model *m = NULL;
	es_error err = {0};
	if (es_model_load_compiled(esc, NULL, key, &m, &err) != 0)
		fail_msg("%s", err.msg);
	assert_int_equal(es_model_num_inputs(m), 2);
	es_model_release(m);

	char path[256];
	snprintf(path, sizeof(path), "%s/output_0.pb", out_dir);
	es_tensor t;
	char *name = NULL;
	assert_int_equal(es_tensor_read_pb(path, &t, &name, &err), 0);
	for (int i = 0; i < 60; i++)
		assert_true(((float *)t.data)[i] == -3.75f);
	free(name);
	es_tensor_free_data(&t);

	/* the text report names the file and its share of the ONNX load */
	rc = run_edgeserve("run", ADD_CASE "/model.onnx", "--random", "--iters", "1",
			   "--compiled", esc, NULL);
	if (rc)
		fail_msg("exit %d: %s", rc, err_text);
	expect_contains(out_text, "compiled ");
	expect_contains(out_text, "add.esc");
	expect_contains(out_text, "% of the ONNX load");

	/* a file that cannot be created is named */
	assert_int_equal(run_edgeserve("run", ADD_CASE "/model.onnx", "--random",
				       "--compiled", "/nonexistent/dir/m.esc", NULL), 1);
	expect_contains(err_text, "/nonexistent/dir/m.esc");
	assert_int_equal(run_edgeserve("run", ADD_CASE "/model.onnx", "--compiled=",
				       NULL), 2);
	expect_contains(err_text, "--compiled");
}

static void test_run_rejects_bad_inputs(void **state)
{
	(void)state;
	require_binary_and_data();
	const char *xi = write_npy("xi.npy", ES_DT_INT64, 1);
	char arg[300];

	/* Wrong dtype: names the input, expected and actual. */
	snprintf(arg, sizeof(arg), "x=%s", xi);
	assert_int_equal(run_edgeserve("run", ADD_CASE "/model.onnx", "--input",
				       arg, "--random", NULL), 1);
	expect_contains(err_text, "'x'");
	expect_contains(err_text, "float");
	expect_contains(err_text, "int64");

	/* An input not given, without --random. */
	assert_int_equal(run_edgeserve("run", ADD_CASE "/model.onnx", "--input",
				       ADD_CASE "/test_data_set_0/input_0.pb",
				       NULL), 1);
	expect_contains(err_text, "'y'");

	/* An unknown input name. */
	assert_int_equal(run_edgeserve("run", ADD_CASE "/model.onnx", "--input",
				       "nosuch=a.npy", "--random", NULL), 1);
	expect_contains(err_text, "'nosuch'");

	/* An unreadable file is named. */
	snprintf(arg, sizeof(arg), "x=%s/missing.npy", tmp_dir);
	assert_int_equal(run_edgeserve("run", ADD_CASE "/model.onnx", "--input",
				       arg, "--random", NULL), 1);
	expect_contains(err_text, "missing.npy");

	/* A hostile .npy is an error, not a crash. */
	char bad[256];
	snprintf(bad, sizeof(bad), "%s/bad.npy", tmp_dir);
	FILE *f = fopen(bad, "wb");
	assert_non_null(f);
	fputs("\x93NUMPY\x01\x00\x40\x00{'descr': '<f4', 'shape': (99999999999,", f);
	fclose(f);
	snprintf(arg, sizeof(arg), "x=%s", bad);
	assert_int_equal(run_edgeserve("run", ADD_CASE "/model.onnx", "--input",
				       arg, "--random", NULL), 1);
	expect_contains(err_text, "bad.npy");

	/* Wrong fixed dimension through --shape. */
	assert_int_equal(run_edgeserve("run", ADD_CASE "/model.onnx", "--random",
				       "--shape", "x=3x4x6", NULL), 1);
	expect_contains(err_text, "'x'");

	/* A model that does not exist. */
	assert_int_equal(run_edgeserve("run", "/nonexistent/model.onnx", NULL), 1);
	expect_contains(err_text, "/nonexistent/model.onnx");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_top_level_help_and_version),
		cmocka_unit_test(test_unknown_command_and_flag),
		cmocka_unit_test(test_run_help),
		cmocka_unit_test(test_run_pb_inputs_json),
		cmocka_unit_test(test_run_text_report),
		cmocka_unit_test(test_run_npy_inputs_and_save_outputs),
		cmocka_unit_test(test_run_compiled_round_trip),
		cmocka_unit_test(test_run_rejects_bad_inputs),
	};
	return cmocka_run_group_tests_name("cli_run", tests, setup, teardown);
}
