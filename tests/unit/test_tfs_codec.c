/* Unit tests of the TF-Serving REST codec (src/api/tfs_codec.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/codec.h"

static const es_tfs_input_info one_fp32[] = { { "x", ES_DT_FLOAT, -1 } };
static const es_tfs_input_info two[] = {
	{ "a", ES_DT_INT64, 2 },
	{ "b", ES_DT_STRING, -1 },
};

static int parse(const char *json, const es_tfs_input_info *info, size_t n,
		 es_tfs_request *r, es_error *err)
{
	int rc = es_tfs_parse_predict(json, strlen(json), info, n, r, err);
	if (rc)
		print_message("error: %s\n", err->msg);
	return rc;
}

static void check_dims(const es_tensor *t, int ndim, ...)
{
	va_list ap;
	assert_int_equal(t->ndim, ndim);
	va_start(ap, ndim);
	for (int i = 0; i < ndim; i++)
		assert_int_equal(t->dims[i], va_arg(ap, int));
	va_end(ap);
}

static void expect_error(const char *json, const es_tfs_input_info *info, size_t n,
			 int code, const char *f1, const char *f2)
{
	es_tfs_request r;
	es_error err = { 0 };
	int rc = es_tfs_parse_predict(json, strlen(json), info, n, &r, &err);
	if (rc != code)
		print_error("rc %d (%s), expected %d\n", rc, err.msg, code);
	assert_int_equal(rc, code);
	assert_null(r.mem);
	assert_null(r.tensors);
	if (f1 && !strstr(err.msg, f1))
		print_error("message '%s' lacks '%s'\n", err.msg, f1);
	assert_true(!f1 || strstr(err.msg, f1));
	if (f2 && !strstr(err.msg, f2))
		print_error("message '%s' lacks '%s'\n", err.msg, f2);
	assert_true(!f2 || strstr(err.msg, f2));
}

static void test_row_one_input(void **state)
{
	(void)state;
	es_tfs_request r;
	es_error err;
	assert_int_equal(parse("{\"instances\":[[1,2],[3,4.5],[5,6]]}", one_fp32, 1, &r, &err), 0);
	assert_false(r.columnar);
	assert_int_equal(r.n_tensors, 1);
	check_dims(&r.tensors[0], 2, 3, 2);
	assert_int_equal(r.tensors[0].dtype, ES_DT_FLOAT);
	assert_int_equal(r.tensors[0].nbytes, 24);
	float *f = r.tensors[0].data;
	assert_true(f[0] == 1 && f[3] == 4.5f && f[5] == 6);
	es_tfs_request_free(&r);

	/* scalar instances */
	assert_int_equal(parse("{\"signature_name\":\"serving_default\",\"instances\":[1,2,3]}",
			       one_fp32, 1, &r, &err), 0);
	check_dims(&r.tensors[0], 1, 3);
	es_tfs_request_free(&r);

	/* object instances also work with one input */
	assert_int_equal(parse("{\"instances\":[{\"x\":[1,2]},{\"x\":[3,4]}]}", one_fp32, 1, &r, &err), 0);
	check_dims(&r.tensors[0], 2, 2, 2);
	es_tfs_request_free(&r);
}

static void test_row_several_inputs(void **state)
{
	(void)state;
	es_tfs_request r;
	es_error err;
	assert_int_equal(parse("{\"instances\":[{\"a\":[1,9223372036854775807],\"b\":\"hi\"},"
			       "{\"b\":\"\",\"a\":[-9223372036854775808,4]}]}",
			       two, 2, &r, &err), 0);
	assert_int_equal(r.n_tensors, 2);
	check_dims(&r.tensors[0], 2, 2, 2);
	int64_t *a = r.tensors[0].data;
	assert_true(a[0] == 1 && a[1] == INT64_MAX && a[2] == INT64_MIN && a[3] == 4);
	check_dims(&r.tensors[1], 1, 2);
	const unsigned char expect[] = { 2, 0, 0, 0, 'h', 'i', 0, 0, 0, 0 };
	assert_int_equal(r.tensors[1].nbytes, sizeof(expect));
	assert_memory_equal(r.tensors[1].data, expect, sizeof(expect));
	es_tfs_request_free(&r);
}

static void test_columnar(void **state)
{
	(void)state;
	es_tfs_request r;
	es_error err;
	assert_int_equal(parse("{\"inputs\":[[1,2,3],[4,5,6]]}", one_fp32, 1, &r, &err), 0);
	assert_true(r.columnar);
	check_dims(&r.tensors[0], 2, 2, 3);
	es_tfs_request_free(&r);

	assert_int_equal(parse("{\"inputs\":7.5}", one_fp32, 1, &r, &err), 0);
	check_dims(&r.tensors[0], 0);
	assert_true(*(float *)r.tensors[0].data == 7.5f);
	es_tfs_request_free(&r);

	assert_int_equal(parse("{\"inputs\":{\"b\":[\"p\",\"q\",\"r\"],\"a\":[[1,2],[3,4]]}}",
			       two, 2, &r, &err), 0);
	check_dims(&r.tensors[0], 2, 2, 2);
	check_dims(&r.tensors[1], 1, 3);
	assert_int_equal(r.tensors[1].nbytes, 15);
	es_tfs_request_free(&r);
}

static void test_errors(void **state)
{
	(void)state;
	expect_error("{\"instances\":[[1,2],[3]]}", one_fp32, 1, ES_EINVAL,
		     "input 'x'", "instance 1 has shape [1], instance 0 has [2]");
	expect_error("{\"instances\":[[[1,2],[3]]]}", one_fp32, 1, ES_EINVAL,
		     "input 'x'", "ragged");
	expect_error("{\"instances\":[{\"a\":[1,2]}]}", two, 2, ES_EINVAL,
		     "instance 0", "input 'b' is missing");
	expect_error("{\"instances\":[{\"a\":[1,2],\"b\":\"x\",\"c\":1}]}", two, 2, ES_EINVAL,
		     "instance 0", "'c' is not an input");
	expect_error("{\"instances\":[[1,2]]}", two, 2, ES_EINVAL,
		     "instance 0", "object keyed by input name");
	expect_error("{\"inputs\":[1,2]}", two, 2, ES_EINVAL,
		     "'inputs' must be an object", NULL);
	expect_error("{\"instances\":[1],\"inputs\":[1]}", one_fp32, 1, ES_EINVAL,
		     "exactly one of", NULL);
	expect_error("{\"instances\":[]}", one_fp32, 1, ES_EINVAL, "'instances' is empty", NULL);
	expect_error("{\"signature_name\":\"other\",\"instances\":[1]}", one_fp32, 1, ES_EINVAL,
		     "signature_name 'other'", NULL);
	expect_error("{}", one_fp32, 1, ES_EINVAL, "neither 'instances'", NULL);
	/* rank check: a has ndim 2 */
	expect_error("{\"inputs\":{\"a\":[1,2],\"b\":\"s\"}}", two, 2, ES_EINVAL,
		     "input 'a'", "expects 2 dimensions, the request gives 1");
	expect_error("{\"instances\":[\"a\"]}", one_fp32, 1, ES_EINVAL,
		     "input 'x'", "not a number");
	expect_error("{\"instances\":[{\"a\":[1,2.5],\"b\":\"s\"}]}", two, 2, ES_EINVAL,
		     "input 'a'", "2.5 is not an integer");
	expect_error("{\"instances\":[{\"a\":[1,2],\"b\":3}]}", two, 2, ES_EINVAL,
		     "input 'b'", "expected a string");
	expect_error("{\"instances\":[[{\"x\":1}]]}", one_fp32, 1, ES_EINVAL,
		     "input 'x'", "got an object");
	expect_error("{\"instances\":[[[[[[[[[1]]]]]]]]]}", one_fp32, 1, ES_EINVAL,
		     "input 'x'", "more than 8");
	expect_error("{\"instances\":[1,2]", one_fp32, 1, ES_EPARSE, "JSON parse error", NULL);
	expect_error("[1]", one_fp32, 1, ES_EPARSE, "JSON object", NULL);

	/* nesting 1000 deep */
	size_t n = 1000;
	char *s = malloc(2 * n + 32);
	strcpy(s, "{\"instances\":");
	size_t at = strlen(s);
	for (size_t i = 0; i < n; i++)
		s[at++] = '[';
	s[at++] = '1';
	for (size_t i = 0; i < n; i++)
		s[at++] = ']';
	strcpy(s + at, "}");
	expect_error(s, one_fp32, 1, ES_EPARSE, "nesting deeper than 64", NULL);
	free(s);

	/* every prefix fails cleanly */
	const char *ok = "{\"instances\":[{\"a\":[1,2],\"b\":\"x\\n\"},{\"a\":[3,4],\"b\":\"y\"}]}";
	for (size_t i = 0; i < strlen(ok); i++) {
		char *cut = malloc(i ? i : 1);
		memcpy(cut, ok, i);
		es_tfs_request r;
		es_error err;
		assert_true(es_tfs_parse_predict(cut, i, two, 2, &r, &err) < 0);
		free(cut);
	}
}

static void test_encode(void **state)
{
	(void)state;
	float f[6] = { 1.1f, 2, 3, 4, 5, 6.5f };
	int64_t iv[2] = { INT64_MAX, -1 };
	es_tensor a = { .dtype = ES_DT_FLOAT, .ndim = 2, .dims = { 2, 3 }, .data = f, .nbytes = 24 };
	es_tensor b = { .dtype = ES_DT_INT64, .ndim = 1, .dims = { 2 }, .data = iv, .nbytes = 16 };
	const unsigned char sv[] = { 1, 0, 0, 0, 'p', 2, 0, 0, 0, 'q', 'r' };
	es_tensor s = { .dtype = ES_DT_STRING, .ndim = 1, .dims = { 2 }, .data = (void *)sv,
			.nbytes = sizeof(sv) };
	es_v2_output outs[3] = { { .name = "a", .tensor = &a }, { .name = "b", .tensor = &b },
				 { .name = "s", .tensor = &s } };
	es_buf buf = ES_BUF_INIT;

	assert_int_equal(es_tfs_encode_predict(&buf, false, outs, 1), 0);
	assert_string_equal(buf.data, "{\"predictions\":[[1.1,2,3],[4,5,6.5]]}");
	es_buf_reset(&buf);
	assert_int_equal(es_tfs_encode_predict(&buf, false, outs, 3), 0);
	assert_string_equal(buf.data,
			    "{\"predictions\":[{\"a\":[1.1,2,3],\"b\":9223372036854775807,\"s\":\"p\"},"
			    "{\"a\":[4,5,6.5],\"b\":-1,\"s\":\"qr\"}]}");
	es_buf_reset(&buf);
	assert_int_equal(es_tfs_encode_predict(&buf, true, outs, 1), 0);
	assert_string_equal(buf.data, "{\"outputs\":[[1.1,2,3],[4,5,6.5]]}");
	es_buf_reset(&buf);
	assert_int_equal(es_tfs_encode_predict(&buf, true, outs + 1, 2), 0);
	assert_string_equal(buf.data, "{\"outputs\":{\"b\":[9223372036854775807,-1],\"s\":[\"p\",\"qr\"]}}");
	es_buf_reset(&buf);

	/* zero-size and scalar tensors in columnar form */
	es_tensor z = { .dtype = ES_DT_FLOAT, .ndim = 3, .dims = { 2, 0, 4 }, .data = f, .nbytes = 0 };
	es_tensor sc = { .dtype = ES_DT_BOOL, .ndim = 0, .data = (void *)sv, .nbytes = 1 };
	es_v2_output zo[2] = { { .name = "z", .tensor = &z }, { .name = "c", .tensor = &sc } };
	assert_int_equal(es_tfs_encode_predict(&buf, true, zo, 2), 0);
	assert_string_equal(buf.data, "{\"outputs\":{\"z\":[[],[]],\"c\":true}}");
	es_buf_reset(&buf);

	/* row format needs equal batch sizes and a batch dimension */
	es_tensor c = { .dtype = ES_DT_INT64, .ndim = 1, .dims = { 3 }, .data = iv, .nbytes = 24 };
	es_v2_output bad[2] = { { .name = "a", .tensor = &a }, { .name = "c", .tensor = &c } };
	buf.len = 0;
	assert_int_equal(es_tfs_encode_predict(&buf, false, bad, 2), ES_EINVAL);
	assert_int_equal(buf.len, 0);
	assert_int_equal(es_tfs_encode_predict(&buf, false, zo + 1, 1), ES_EINVAL);
	es_buf_free(&buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_row_one_input),
		cmocka_unit_test(test_row_several_inputs),
		cmocka_unit_test(test_columnar),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_encode),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
