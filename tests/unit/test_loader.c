/* Loader and graph validation: every rejection names what was wrong. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "edgeserve/engine.h"

static char path_buf[4096];

static const char *data(const char *name)
{
	snprintf(path_buf, sizeof(path_buf), "%s/loader/%s", ES_TEST_DATA_DIR, name);
	return path_buf;
}

/* Loads a model expected to fail; checks the code and that the message
 * contains every given fragment. */
static void expect_fail(const char *file, int code, ...)
{
	es_model *m = NULL;
	es_error err = { 0 };
	int rc = es_model_load(data(file), NULL, &m, &err);
	if (rc != code)
		fail_msg("%s: expected code %d, got %d (%s)", file, code, rc, err.msg);
	assert_null(m);
	va_list ap;
	va_start(ap, code);
	const char *frag;
	while ((frag = va_arg(ap, const char *)))
		if (!strstr(err.msg, frag))
			fail_msg("%s: message '%s' lacks '%s'", file, err.msg, frag);
	va_end(ap);
}

static void test_cycle(void **state)
{
	(void)state;
	expect_fail("cycle.onnx", ES_EGRAPH, "cycle", "Relu", NULL);
}

static void test_undefined_input(void **state)
{
	(void)state;
	expect_fail("undefined_input.onnx", ES_EGRAPH, "lonely", "nowhere", NULL);
}

static void test_duplicate_output(void **state)
{
	(void)state;
	expect_fail("duplicate_output.onnx", ES_EGRAPH, "second", "'y'", "first", NULL);
}

static void test_unsupported_listed_once_each(void **state)
{
	(void)state;
	es_model *m = NULL;
	es_error err = { 0 };
	assert_int_equal(es_model_load(data("unsupported.onnx"), NULL, &m, &err),
			 ES_EUNSUPPORTED);
	assert_non_null(strstr(err.msg, "2 unsupported operators"));
	assert_non_null(strstr(err.msg, "FancyOp"));
	assert_non_null(strstr(err.msg, "OtherOp"));
	/* FancyOp appears twice in the graph but is named once */
	const char *first = strstr(err.msg, "FancyOp");
	assert_null(strstr(first + 1, "FancyOp"));
}

static void test_dtype_mismatch(void **state)
{
	(void)state;
	expect_fail("dtype_mismatch.onnx", ES_ETYPE, "mixed_add", "int64", "float", NULL);
}

static void test_dims_overflow(void **state)
{
	(void)state;
	expect_fail("dims_overflow.onnx", ES_ERANGE, "'w'", NULL);
}

static void test_short_raw_data(void **state)
{
	(void)state;
	expect_fail("short_raw.onnx", ES_EPARSE, "'w'", "8 bytes", "16", NULL);
}

static void test_truncated(void **state)
{
	(void)state;
	expect_fail("truncated.onnx", ES_EPARSE, "not a valid ONNX model", NULL);
}

static void test_missing_file(void **state)
{
	(void)state;
	expect_fail("no_such_model.onnx", ES_EIO, "no_such_model.onnx", NULL);
}

static void test_external_data_inside(void **state)
{
	(void)state;
	es_model *m = NULL;
	es_error err = { 0 };
	int rc = es_model_load(data("external_ok.onnx"), NULL, &m, &err);
	/* Add may not be registered in every build of this test; the external
	 * data itself must have been accepted, so any failure is about ops */
	if (rc) {
		assert_int_equal(rc, ES_EUNSUPPORTED);
		return;
	}
	es_model_release(m);
}

static void test_external_data_escapes(void **state)
{
	(void)state;
	expect_fail("external_dotdot.onnx", ES_EINVAL, "leaves the model directory", NULL);
	expect_fail("external_abs.onnx", ES_EINVAL, "absolute", NULL);
	expect_fail("external_missing.onnx", ES_EIO, "nope.bin", NULL);
}

static void test_external_symlink_out(void **state)
{
	(void)state;
	char dir[] = "/tmp/es_loader_XXXXXX";
	assert_non_null(mkdtemp(dir));
	char src[4096], dst[4096], link[4096];
	snprintf(dst, sizeof(dst), "%s/model.onnx", dir);
	snprintf(link, sizeof(link), "%s/weights.bin", dir);
	snprintf(src, sizeof(src), "%s", data("external_ok.onnx"));
	FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
	assert_non_null(in);
	assert_non_null(out);
	char buf[4096];
	size_t n;
	while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
		assert_int_equal(fwrite(buf, 1, n, out), n);
	fclose(in);
	fclose(out);
	assert_int_equal(symlink(data("weights.bin"), link), 0);

	es_model *m = NULL;
	es_error err = { 0 };
	assert_int_equal(es_model_load(dst, NULL, &m, &err), ES_EINVAL);
	assert_non_null(strstr(err.msg, "outside the model directory"));
	unlink(link);
	unlink(dst);
	rmdir(dir);
}

static void test_garbage_buffers(void **state)
{
	(void)state;
	/* random bytes must never crash the parser */
	unsigned seed = 12345;
	unsigned char buf[512];
	for (int round = 0; round < 2000; round++) {
		size_t len = (size_t)(rand_r(&seed) % sizeof(buf));
		for (size_t i = 0; i < len; i++)
			buf[i] = (unsigned char)rand_r(&seed);
		es_model *m = NULL;
		es_error err = { 0 };
		if (es_model_load_buffer(buf, len, NULL, NULL, &m, &err) == 0)
			es_model_release(m);
		else
			assert_true(err.msg[0] != '\0');
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cycle),
		cmocka_unit_test(test_undefined_input),
		cmocka_unit_test(test_duplicate_output),
		cmocka_unit_test(test_unsupported_listed_once_each),
		cmocka_unit_test(test_dtype_mismatch),
		cmocka_unit_test(test_dims_overflow),
		cmocka_unit_test(test_short_raw_data),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_external_data_inside),
		cmocka_unit_test(test_external_data_escapes),
		cmocka_unit_test(test_external_symlink_out),
		cmocka_unit_test(test_garbage_buffers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
