/* Unit tests of the KServe v2 codec (src/api/kserve_codec.c) and the JSON
 * number helpers it relies on (src/api/json_num.c, src/api/json_scan.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/codec.h"
#include "api/json_num.h"
#include "base/fp16.h"

/* ---- helpers ------------------------------------------------------------ */

static int parse(const char *json, es_v2_request *r, es_error *err)
{
	size_t n = strlen(json);
	return es_v2_parse_request(json, n, n, r, err);
}

/* A one-input request. */
static char *one_input(const char *datatype, const char *shape, const char *data)
{
	size_t cap = strlen(data) + strlen(shape) + 200;
	char *s = malloc(cap);
	assert_non_null(s);
	snprintf(s, cap,
		 "{\"inputs\":[{\"name\":\"x\",\"shape\":%s,\"datatype\":\"%s\",\"data\":%s}]}",
		 shape, datatype, data);
	return s;
}

/* Encodes t as the only output and returns the text of its "data" value
 * (malloc'ed). */
static char *encode_data(const es_tensor *t)
{
	es_buf b = ES_BUF_INIT;
	size_t json_len = 0;
	es_v2_output o = { .name = "y", .tensor = t, .binary = false };
	assert_int_equal(es_v2_encode_response(&b, &json_len, "m", 1, NULL, NULL, &o, 1), 0);
	assert_int_equal(json_len, b.len);
	const char *d = strstr(b.data, "\"data\":");
	assert_non_null(d);
	d += 7;
	size_t n = strlen(d);
	assert_true(n >= 3);
	/* the response ends with "}]}" */
	char *out = strndup(d, n - 3);
	es_buf_free(&b);
	return out;
}

static es_tensor as_tensor(const es_v2_tensor *v)
{
	es_tensor t;
	memset(&t, 0, sizeof(t));
	t.dtype = v->dtype;
	t.ndim = v->ndim;
	memcpy(t.dims, v->dims, sizeof(t.dims));
	t.data = v->data;
	t.nbytes = v->nbytes;
	return t;
}

/* Parses one input and checks that encoding it prints `expect`. */
static void roundtrip(const char *datatype, const char *shape, const char *data,
		      const char *expect)
{
	es_v2_request r;
	es_error err = { 0 };
	char *req = one_input(datatype, shape, data);
	int rc = parse(req, &r, &err);
	if (rc)
		print_error("parse %s: %s\n", datatype, err.msg);
	assert_int_equal(rc, 0);
	assert_int_equal(r.n_inputs, 1);
	assert_string_equal(r.inputs[0].datatype, datatype);
	es_tensor t = as_tensor(&r.inputs[0]);
	char *got = encode_data(&t);
	if (strcmp(got, expect))
		print_error("%s: got %s, expected %s\n", datatype, got, expect);
	assert_string_equal(got, expect);
	free(got);
	es_v2_request_free(&r);
	free(req);
}

/* Expects parsing to fail with code and a message containing each of the
 * NULL-terminated fragments. */
static void expect_error(const char *body, size_t len, size_t json_len, int code, ...)
{
	es_v2_request r;
	es_error err = { 0 };
	int rc = es_v2_parse_request(body, len, json_len, &r, &err);
	if (rc != code)
		print_error("rc %d (%s), expected %d\n", rc, err.msg, code);
	assert_int_equal(rc, code);
	assert_null(r.inputs);
	assert_null(r.mem);
	va_list ap;
	va_start(ap, code);
	const char *frag;
	while ((frag = va_arg(ap, const char *))) {
		if (!strstr(err.msg, frag))
			print_error("message '%s' lacks '%s'\n", err.msg, frag);
		assert_non_null(strstr(err.msg, frag));
	}
	va_end(ap);
}

#define EXPECT_ERR(json, code, ...) \
	expect_error(json, strlen(json), strlen(json), code, __VA_ARGS__, (const char *)NULL)

/* ---- datatypes ---------------------------------------------------------- */

static void test_dtype_names(void **state)
{
	(void)state;
	static const char *names[] = { "BOOL", "UINT8", "UINT16", "UINT32", "UINT64",
				       "INT8", "INT16", "INT32", "INT64", "FP16",
				       "FP32", "FP64", "BF16", "BYTES" };
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		es_dtype dt = es_v2_dtype(names[i]);
		assert_int_not_equal(dt, ES_DT_UNDEFINED);
		assert_string_equal(es_v2_datatype_name(dt), names[i]);
	}
	assert_int_equal(es_v2_dtype("BOOL"), ES_DT_BOOL);
	assert_int_equal(es_v2_dtype("FP16"), ES_DT_FLOAT16);
	assert_int_equal(es_v2_dtype("FP32"), ES_DT_FLOAT);
	assert_int_equal(es_v2_dtype("BYTES"), ES_DT_STRING);
	assert_int_equal(es_v2_dtype("fp32"), ES_DT_UNDEFINED);
	assert_int_equal(es_v2_dtype("FP8"), ES_DT_UNDEFINED);
	assert_int_equal(es_v2_dtype(NULL), ES_DT_UNDEFINED);
	assert_null(es_v2_datatype_name(ES_DT_UNDEFINED));
}

static void test_roundtrip_ints(void **state)
{
	(void)state;
	roundtrip("BOOL", "[4]", "[true,false,1,0]", "[true,false,true,false]");
	roundtrip("UINT8", "[3]", "[0,7,255]", "[0,7,255]");
	roundtrip("INT8", "[3]", "[-128,0,127]", "[-128,0,127]");
	roundtrip("UINT16", "[2]", "[0,65535]", "[0,65535]");
	roundtrip("INT16", "[2]", "[-32768,32767]", "[-32768,32767]");
	roundtrip("UINT32", "[2]", "[0,4294967295]", "[0,4294967295]");
	roundtrip("INT32", "[2]", "[-2147483648,2147483647]", "[-2147483648,2147483647]");
	roundtrip("INT64", "[4]",
		  "[-9223372036854775808,9223372036854775807,9007199254740993,-1]",
		  "[-9223372036854775808,9223372036854775807,9007199254740993,-1]");
	roundtrip("UINT64", "[3]", "[0,18446744073709551615,9007199254740993]",
		  "[0,18446744073709551615,9007199254740993]");
	/* exact integers in other spellings */
	roundtrip("INT32", "[4]", "[3.0,1e2,-0,2500e-2]", "[3,100,0,25]");
	roundtrip("INT64", "[1]", "[92233720368547758.07e2]", "[9223372036854775807]");
}

static void test_int64_exact_values(void **state)
{
	(void)state;
	es_v2_request r;
	es_error err;
	char *req = one_input("INT64", "[3]",
			      "[-9223372036854775808,9223372036854775807,9007199254740993]");
	assert_int_equal(parse(req, &r, &err), 0);
	int64_t *v = r.inputs[0].data;
	assert_true(v[0] == INT64_MIN);
	assert_true(v[1] == INT64_MAX);
	assert_true(v[2] == 9007199254740993LL);
	assert_int_equal(r.inputs[0].nbytes, 24);
	es_v2_request_free(&r);
	free(req);

	req = one_input("UINT64", "[1]", "[18446744073709551615]");
	assert_int_equal(parse(req, &r, &err), 0);
	assert_true(*(uint64_t *)r.inputs[0].data == UINT64_MAX);
	es_v2_request_free(&r);
	free(req);
}

static void test_roundtrip_floats(void **state)
{
	(void)state;
	roundtrip("FP32", "[6]", "[1.1,-0.5,3,0.1,3.4028235e38,-0.0]",
		  "[1.1,-0.5,3,0.1,3.4028235e+38,-0]");
	roundtrip("FP32", "[3]", "[1.17549435e-38,1.4e-45,16777216]",
		  "[1.1754944e-38,1e-45,16777216]");
	roundtrip("FP64", "[5]", "[0.1,1e300,-2.5,0.30000000000000004,5e-324]",
		  "[0.1,1e+300,-2.5,0.30000000000000004,4.94065645841247e-324]");
	roundtrip("FP32", "[3]", "[0e300,-0e-400,0.000e99999999999999999999]", "[0,-0,0]");
	roundtrip("FP64", "[2]", "[0e300,-0.0e-400]", "[0,-0]");
	roundtrip("FP16", "[1]", "[0e400]", "[0]");
	roundtrip("FP32", "[3]", "[\"NaN\",\"Infinity\",\"-Infinity\"]", "[\"NaN\",\"Infinity\",\"-Infinity\"]");
	roundtrip("FP64", "[2]", "[\"NaN\",\"-Infinity\"]", "[\"NaN\",\"-Infinity\"]");
	EXPECT_ERR("{\"inputs\":[{\"name\":\"x\",\"shape\":[2],\"datatype\":\"FP32\",\"data\":[1,NaN]}]}",
		   ES_EPARSE, "no NaN or Infinity literal", "\"NaN\"");
	EXPECT_ERR("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP64\",\"data\":[-Infinity]}]}",
		   ES_EPARSE, "no NaN or Infinity literal");
	EXPECT_ERR("{\"inputs\":[{\"data\":[Infinity],\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP64\"}]}",
		   ES_EPARSE, "unexpected character");
	roundtrip("BF16", "[3]", "[1.5,-2,3.0e38]", "[1.5,-2,3.0040553e+38]");
}

static void test_fp32_prints_short(void **state)
{
	(void)state;
	char buf[ES_NUM_FMT_MAX];
	es_fmt_f32(buf, 1.1f);
	assert_string_equal(buf, "1.1");
	es_fmt_f32(buf, 0.3f);
	assert_string_equal(buf, "0.3");
	es_fmt_f32(buf, 123456.7f);
	assert_string_equal(buf, "123456.7");
	es_fmt_f64(buf, 0.1);
	assert_string_equal(buf, "0.1");
	assert_int_equal(es_fmt_f32(buf, NAN), 0);
	assert_int_equal(es_fmt_f64(buf, -INFINITY), 0);

	/* random bit patterns read back exactly */
	srand(1234);
	for (int i = 0; i < 200000; i++) {
		uint32_t bits = ((uint32_t)rand() << 16) ^ (uint32_t)rand();
		float f, g;
		memcpy(&f, &bits, 4);
		if (!isfinite(f))
			continue;
		size_t n = es_fmt_f32(buf, f);
		assert_true(n > 0 && n < ES_NUM_FMT_MAX);
		assert_int_equal(es_num_to_f32(buf, n, &g), 0);
		assert_memory_equal(&f, &g, 4);
	}
	for (int i = 0; i < 100000; i++) {
		uint64_t bits = ((uint64_t)rand() << 42) ^ ((uint64_t)rand() << 21) ^
				(uint64_t)rand();
		double d, e;
		memcpy(&d, &bits, 8);
		if (!isfinite(d))
			continue;
		size_t n = es_fmt_f64(buf, d);
		assert_int_equal(es_num_to_f64(buf, n, &e), 0);
		assert_memory_equal(&d, &e, 8);
	}
}

/* The exact fast path of the float parser agrees with strtof/strtod. */
static void test_float_parse_matches_libc(void **state)
{
	(void)state;
	char buf[64];
	srand(99);
	for (int i = 0; i < 200000; i++) {
		int digits = 1 + rand() % 20;
		int point = rand() % (digits + 1);
		int exp = rand() % 41 - 20;
		size_t n = 0;
		if (rand() & 1)
			buf[n++] = '-';
		for (int d = 0; d < digits; d++) {
			if (d == point && d > 0)
				buf[n++] = '.';
			buf[n++] = (char)((d == 0 ? '1' + rand() % 9 : '0' + rand() % 10));
		}
		if (rand() & 1)
			n += (size_t)sprintf(buf + n, "e%d", exp);
		buf[n] = '\0';
		float f;
		double d;
		float ef = strtof(buf, NULL);
		double ed = strtod(buf, NULL);
		if (isinf(ef)) {
			assert_int_equal(es_num_to_f32(buf, n, &f), ES_ERANGE);
			continue;
		}
		assert_int_equal(es_num_to_f32(buf, n, &f), 0);
		assert_int_equal(es_num_to_f64(buf, n, &d), 0);
		if (memcmp(&f, &ef, 4))
			print_error("%s: %a vs strtof %a\n", buf, (double)f, (double)ef);
		assert_memory_equal(&f, &ef, 4);
		assert_memory_equal(&d, &ed, 8);
	}
}

static uint16_t h16(const char *s)
{
	uint16_t h = 0;
	assert_int_equal(es_num_to_f16(s, strlen(s), &h), 0);
	return h;
}

static void test_fp16(void **state)
{
	(void)state;
	assert_int_equal(h16("65504"), 0x7bff);
	assert_int_equal(h16("-65504"), 0xfbff);
	assert_int_equal(h16("65519.99"), 0x7bff);
	assert_int_equal(h16("6.103515625e-05"), 0x0400);   /* min normal */
	assert_int_equal(h16("5.960464477539063e-08"), 0x0001); /* min subnormal */
	assert_int_equal(h16("2.98023223876953125e-08"), 0x0000); /* tie to even: 0 */
	assert_int_equal(h16("2.98023223876953126e-08"), 0x0001); /* just above */
	assert_int_equal(h16("1.00048828125"), 0x3c00);     /* tie to even: 1 */
	assert_int_equal(h16("1.00048828125000001"), 0x3c01); /* above the tie */
	assert_int_equal(h16("1.00146484375"), 0x3c02);     /* tie, odd below: up */
	assert_int_equal(h16("1.00146484374999999"), 0x3c01);
	assert_int_equal(h16("0.1"), 0x2e66);
	assert_int_equal(h16("-0"), 0x8000);
	assert_int_equal(h16("1e-30"), 0x0000);
	assert_int_equal(h16("NaN") & 0x7c00, 0x7c00);
	assert_int_equal(h16("-Infinity"), 0xfc00);
	uint16_t h;
	assert_int_equal(es_num_to_f16("65520", 5, &h), ES_ERANGE);
	assert_int_equal(es_num_to_f16("1e10", 4, &h), ES_ERANGE);

	/* every half prints and parses back to itself; the double path agrees
	 * with fp16.h on the float value */
	char buf[ES_NUM_FMT_MAX];
	for (uint32_t i = 0; i < 0x10000; i++) {
		float f = es_half_to_float((uint16_t)i);
		if (isnan(f))
			continue;
		assert_int_equal(es_double_to_half(f), i);
		if (isinf(f))
			continue;
		size_t n = es_fmt_f32(buf, f);
		assert_int_equal(es_num_to_f16(buf, n, &h), 0);
		assert_int_equal(h, i);
	}
	/* random floats: same rounding as the float converter */
	srand(7);
	for (int i = 0; i < 200000; i++) {
		uint32_t bits = ((uint32_t)rand() << 16) ^ (uint32_t)rand();
		float f;
		memcpy(&f, &bits, 4);
		if (isnan(f))
			continue;
		assert_int_equal(es_double_to_half(f), es_float_to_half(f));
	}

	roundtrip("FP16", "[6]", "[65504,-0.5,0.1,6.103515625e-05,5.960464477539063e-08,1.00048828125000001]",
		  "[65504,-0.5,0.099975586,6.1035156e-05,5.9604645e-08,1.0009766]");
	EXPECT_ERR("{\"inputs\":[{\"name\":\"h\",\"shape\":[2],\"datatype\":\"FP16\",\"data\":[1,70000]}]}",
		   ES_ERANGE, "input 'h'", "element 1", "70000", "FP16");
}

static void test_bytes_json(void **state)
{
	(void)state;
	es_v2_request r;
	es_error err;
	const char *req = "{\"inputs\":[{\"name\":\"s\",\"shape\":[3],\"datatype\":\"BYTES\","
			  "\"data\":[\"abc\",\"\",\"\\u00e9\\u0000\\ud83d\\ude00\"]}]}";
	assert_int_equal(parse(req, &r, &err), 0);
	const unsigned char expect[] = { 3, 0, 0, 0, 'a', 'b', 'c', 0, 0, 0, 0,
					 7, 0, 0, 0, 0xc3, 0xa9, 0, 0xf0, 0x9f, 0x98, 0x80 };
	assert_int_equal(r.inputs[0].nbytes, sizeof(expect));
	assert_memory_equal(r.inputs[0].data, expect, sizeof(expect));
	assert_int_equal(r.inputs[0].dtype, ES_DT_STRING);
	es_tensor t = as_tensor(&r.inputs[0]);
	char *got = encode_data(&t);
	assert_string_equal(got, "[\"abc\",\"\",\"\xc3\xa9\\u0000\xf0\x9f\x98\x80\"]");
	free(got);
	es_v2_request_free(&r);

	/* invalid UTF-8 in an output prints safely */
	const unsigned char bad[] = { 2, 0, 0, 0, 0xff, '"' };
	es_tensor bt = { .dtype = ES_DT_STRING, .ndim = 1, .dims = { 1 },
			 .data = (void *)bad, .nbytes = sizeof(bad) };
	got = encode_data(&bt);
	assert_string_equal(got, "[\"\\ufffd\\\"\"]");
	free(got);
}

/* ---- nesting ------------------------------------------------------------ */

static void test_nested_and_flat(void **state)
{
	(void)state;
	roundtrip("INT32", "[2,3]", "[[1,2,3],[4,5,6]]", "[1,2,3,4,5,6]");
	roundtrip("INT32", "[2,3]", "[1,2,3,4,5,6]", "[1,2,3,4,5,6]");
	roundtrip("FP32", "[2,1,2]", "[[[1,2]],[[3,4]]]", "[1,2,3,4]");
	roundtrip("INT32", "[]", "7", "[7]");
	roundtrip("INT32", "[]", "[7]", "[7]");
	roundtrip("INT32", "[0,3]", "[]", "[]");
	roundtrip("INT32", "[2,0]", "[[],[]]", "[]");

	EXPECT_ERR("{\"inputs\":[{\"name\":\"x\",\"shape\":[2,3],\"datatype\":\"INT32\",\"data\":[[1,2],[3,4,5,6]]}]}",
		   ES_EINVAL, "input 'x'", "does not match shape [2,3]", "2 elements, expected 3");
	EXPECT_ERR("{\"inputs\":[{\"name\":\"x\",\"shape\":[2,3],\"datatype\":\"INT32\",\"data\":[[1,2,3,4,5,6]]}]}",
		   ES_EINVAL, "input 'x'", "shape [2,3]");
	EXPECT_ERR("{\"inputs\":[{\"name\":\"x\",\"shape\":[2,3],\"datatype\":\"INT32\",\"data\":[1,2,3,[4],5,6]}]}",
		   ES_EINVAL, "input 'x'", "mixes values and arrays");
	EXPECT_ERR("{\"inputs\":[{\"name\":\"x\",\"shape\":[2],\"datatype\":\"INT32\",\"data\":[[1],[2]]}]}",
		   ES_EINVAL, "input 'x'", "nested deeper than shape [2]");
	EXPECT_ERR("{\"inputs\":[{\"name\":\"x\",\"shape\":[3],\"datatype\":\"INT32\",\"data\":5}]}",
		   ES_EINVAL, "input 'x'", "must be an array");
}

static void test_data_before_shape(void **state)
{
	(void)state;
	es_v2_request r;
	es_error err;
	const char *req = "{\"inputs\":[{\"data\":[[1.5,2],[3,4]],\"name\":\"x\",\"datatype\":\"FP32\","
			  "\"shape\":[2,2]}],\"id\":\"r1\"}";
	assert_int_equal(parse(req, &r, &err), 0);
	float *f = r.inputs[0].data;
	assert_true(f[0] == 1.5f && f[3] == 4.0f);
	assert_string_equal(r.id, "r1");
	es_v2_request_free(&r);

	EXPECT_ERR("{\"inputs\":[{\"data\":[1,2,3],\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[2]}]}",
		   ES_EINVAL, "input 'x'", "data has 3 elements, shape [2] needs 2");
	EXPECT_ERR("{\"inputs\":[{\"data\":[1,2,3],\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[4]}]}",
		   ES_EINVAL, "input 'x'", "data has 3 elements, shape [4] needs 4");
}

/* ---- request fields --------------------------------------------------------- */

static void test_request_fields(void **state)
{
	(void)state;
	es_v2_request r;
	es_error err;
	const char *req =
		"{\"id\":\"abc\",\"model_name\":\"ignored\",\"parameters\":{\"timeout\":2500,"
		"\"binary_data_output\":true,\"x\":[1,{\"y\":null}]},"
		"\"inputs\":[{\"name\":\"a\",\"shape\":[1],\"datatype\":\"INT8\","
		"\"parameters\":{\"content_type\":\"np\"},\"data\":[1]},"
		"{\"name\":\"b\",\"shape\":[1],\"datatype\":\"UINT8\",\"data\":[2]}],"
		"\"outputs\":[{\"name\":\"o1\",\"parameters\":{\"binary_data\":false}},"
		"{\"name\":\"o2\"}]}";
	assert_int_equal(parse(req, &r, &err), 0);
	assert_string_equal(r.id, "abc");
	assert_string_equal(r.parameters,
			    "{\"timeout\":2500,\"binary_data_output\":true,\"x\":[1,{\"y\":null}]}");
	assert_true(r.binary_data_output);
	assert_int_equal(r.timeout_us, 2500);
	assert_int_equal(r.n_inputs, 2);
	assert_string_equal(r.inputs[0].name, "a");
	assert_string_equal(r.inputs[0].parameters, "{\"content_type\":\"np\"}");
	assert_null(r.inputs[1].parameters);
	assert_false(r.inputs[0].from_binary);
	assert_int_equal(r.n_outputs, 2);
	assert_string_equal(r.outputs[0].name, "o1");
	assert_true(r.outputs[0].has_binary);
	assert_false(r.outputs[0].binary);
	assert_string_equal(r.outputs[1].name, "o2");
	assert_false(r.outputs[1].has_binary);
	es_v2_request_free(&r);

	/* defaults */
	assert_int_equal(parse("{\"inputs\":[]}", &r, &err), 0);
	assert_null(r.id);
	assert_null(r.parameters);
	assert_int_equal(r.timeout_us, -1);
	assert_false(r.binary_data_output);
	assert_null(r.outputs);
	es_v2_request_free(&r);
	es_v2_request_free(&r); /* twice is harmless */

	EXPECT_ERR("{\"inputs\":[],\"parameters\":{\"timeout\":-5}}", ES_EINVAL, "timeout",
		   "non-negative integer");
	EXPECT_ERR("{\"inputs\":[],\"parameters\":{\"timeout\":1.5}}", ES_EINVAL, "timeout");
	EXPECT_ERR("{\"inputs\":[],\"parameters\":{\"binary_data_output\":1}}", ES_EINVAL,
		   "binary_data_output", "true or false");
	EXPECT_ERR("{\"inputs\":[],\"outputs\":[{\"name\":\"a\"},{\"name\":\"a\"}]}", ES_EINVAL,
		   "output 'a'", "more than once");
	EXPECT_ERR("{\"inputs\":[],\"outputs\":[{\"parameters\":{}}]}", ES_EINVAL, "output 0",
		   "no 'name'");
	EXPECT_ERR("{\"inputs\":[],\"id\":5}", ES_EINVAL, "'id' must be a string");
	EXPECT_ERR("{\"inputs\":[],\"inputs\":[]}", ES_EINVAL, "duplicate key 'inputs'");
	EXPECT_ERR("{\"id\":\"x\"}", ES_EINVAL, "no 'inputs'");
}

/* ---- binary extension ------------------------------------------------------- */

/* json + binary parts into one malloc'ed body. */
static char *body_of(const char *json, const void *bin, size_t bin_len, size_t *len)
{
	size_t jl = strlen(json);
	char *b = malloc(jl + bin_len + 1);
	assert_non_null(b);
	memcpy(b, json, jl);
	if (bin_len)
		memcpy(b + jl, bin, bin_len);
	*len = jl + bin_len;
	return b;
}

static void test_binary_inputs(void **state)
{
	(void)state;
	const char *json =
		"{\"inputs\":[{\"name\":\"a\",\"shape\":[2,2],\"datatype\":\"FP32\","
		"\"parameters\":{\"binary_data_size\":16}},"
		"{\"name\":\"j\",\"shape\":[1],\"datatype\":\"INT64\",\"data\":[9223372036854775807]},"
		"{\"name\":\"s\",\"shape\":[2],\"datatype\":\"BYTES\","
		"\"parameters\":{\"binary_data_size\":13}},"
		"{\"name\":\"b\",\"shape\":[3],\"datatype\":\"BOOL\","
		"\"parameters\":{\"binary_data_size\":3}}]}";
	unsigned char bin[16 + 13 + 3];
	float fv[4] = { 1.5f, -2, 3, 4 };
	memcpy(bin, fv, 16);
	const unsigned char sv[13] = { 2, 0, 0, 0, 'h', 'i', 3, 0, 0, 0, 'a', 'b', 'c' };
	memcpy(bin + 16, sv, 13);
	bin[29] = 1;
	bin[30] = 0;
	bin[31] = 1;
	size_t len;
	char *body = body_of(json, bin, sizeof(bin), &len);
	size_t jl = strlen(json);
	es_v2_request r;
	es_error err;
	int rc = es_v2_parse_request(body, len, jl, &r, &err);
	if (rc)
		print_error("%s\n", err.msg);
	assert_int_equal(rc, 0);
	assert_int_equal(r.n_inputs, 4);
	/* zero copy: the data points into the body */
	assert_ptr_equal(r.inputs[0].data, body + jl);
	assert_true(r.inputs[0].from_binary);
	assert_int_equal(r.inputs[0].nbytes, 16);
	assert_false(r.inputs[1].from_binary);
	assert_ptr_equal(r.inputs[2].data, body + jl + 16);
	assert_int_equal(r.inputs[2].nbytes, 13);
	assert_int_equal(r.inputs[2].dtype, ES_DT_STRING);
	assert_ptr_equal(r.inputs[3].data, body + jl + 29);

	/* encode the same tensors back as JSON */
	es_tensor t = as_tensor(&r.inputs[0]);
	char *got = encode_data(&t);
	assert_string_equal(got, "[1.5,-2,3,4]");
	free(got);
	t = as_tensor(&r.inputs[2]);
	got = encode_data(&t);
	assert_string_equal(got, "[\"hi\",\"abc\"]");
	free(got);
	t = as_tensor(&r.inputs[3]);
	got = encode_data(&t);
	assert_string_equal(got, "[true,false,true]");
	free(got);
	es_v2_request_free(&r);
	free(body);
}

static void expect_bin_error(const char *json, const void *bin, size_t bin_len,
			     const char *f1, const char *f2)
{
	size_t len;
	char *body = body_of(json, bin, bin_len, &len);
	expect_error(body, len, strlen(json), ES_EINVAL, f1, f2, (const char *)NULL);
	free(body);
}

static void test_binary_errors(void **state)
{
	(void)state;
	unsigned char zeros[64] = { 0 };
	const char *fp = "{\"inputs\":[{\"name\":\"a\",\"shape\":[2],\"datatype\":\"FP32\","
			 "\"parameters\":{\"binary_data_size\":8}}]}";
	/* size vs shape */
	expect_bin_error("{\"inputs\":[{\"name\":\"a\",\"shape\":[3],\"datatype\":\"FP32\","
			 "\"parameters\":{\"binary_data_size\":8}}]}", zeros, 8,
			 "input 'a'", "binary_data_size is 8, shape [3] of FP32 needs 12 bytes");
	/* fewer bytes than announced */
	expect_bin_error(fp, zeros, 4, "input 'a'", "only 4 bytes");
	/* extra bytes */
	expect_bin_error(fp, zeros, 12, "12 bytes after the JSON", "add up to 8");
	/* binary bytes but no binary input */
	expect_bin_error("{\"inputs\":[{\"name\":\"a\",\"shape\":[1],\"datatype\":\"FP32\","
			 "\"data\":[1]}]}", zeros, 4, "4 bytes after the JSON", "add up to 0");
	/* both data and binary */
	expect_bin_error("{\"inputs\":[{\"name\":\"a\",\"shape\":[2],\"datatype\":\"FP32\","
			 "\"data\":[1,2],\"parameters\":{\"binary_data_size\":8}}]}", zeros, 8,
			 "input 'a'", "both 'data' and a binary_data_size");
	/* BYTES length past its buffer */
	const unsigned char s1[] = { 200, 0, 0, 0, 'x', 'y' };
	expect_bin_error("{\"inputs\":[{\"name\":\"s\",\"shape\":[1],\"datatype\":\"BYTES\","
			 "\"parameters\":{\"binary_data_size\":6}}]}", s1, sizeof(s1),
			 "input 's'", "length 200 runs past");
	/* BYTES length prefix cut */
	const unsigned char s2[] = { 1, 0, 0, 0, 'x', 1, 0 };
	expect_bin_error("{\"inputs\":[{\"name\":\"s\",\"shape\":[2],\"datatype\":\"BYTES\","
			 "\"parameters\":{\"binary_data_size\":7}}]}", s2, sizeof(s2),
			 "input 's'", "ends inside its 4-byte length");
	/* BYTES count */
	const unsigned char s3[] = { 1, 0, 0, 0, 'x', 0, 0, 0, 0 };
	expect_bin_error("{\"inputs\":[{\"name\":\"s\",\"shape\":[1],\"datatype\":\"BYTES\","
			 "\"parameters\":{\"binary_data_size\":9}}]}", s3, sizeof(s3),
			 "input 's'", "holds 2 BYTES elements, shape [1] needs 1");
	expect_bin_error("{\"inputs\":[{\"name\":\"s\",\"shape\":[3],\"datatype\":\"BYTES\","
			 "\"parameters\":{\"binary_data_size\":9}}]}", s3, sizeof(s3),
			 "input 's'", "holds 2 BYTES elements, shape [3] needs 3");
	/* BOOL bytes other than 0 and 1 */
	const unsigned char bools[] = { 1, 0, 2 };
	expect_bin_error("{\"inputs\":[{\"name\":\"b\",\"shape\":[3],\"datatype\":\"BOOL\","
			 "\"parameters\":{\"binary_data_size\":3}}]}", bools, sizeof(bools),
			 "input 'b'", "BOOL element 2 is 2");
	/* binary_data_size not an integer */
	expect_bin_error("{\"inputs\":[{\"name\":\"a\",\"shape\":[2],\"datatype\":\"FP32\","
			 "\"parameters\":{\"binary_data_size\":\"8\"}}]}", zeros, 8,
			 "input 'a'", "binary_data_size");
	/* header length larger than the body */
	const char *j = "{\"inputs\":[]}";
	expect_error(j, strlen(j), strlen(j) + 1, ES_EINVAL,
		     "Inference-Header-Content-Length", "larger than the body",
		     (const char *)NULL);
	/* header length cutting the JSON */
	expect_error(j, strlen(j), 5, ES_EPARSE, "JSON parse error", (const char *)NULL);
}

static void test_binary_outputs(void **state)
{
	(void)state;
	float f[3] = { 1, 2, 3 };
	int64_t iv[2] = { INT64_MIN, 5 };
	const unsigned char sv[] = { 1, 0, 0, 0, 'z' };
	es_tensor a = { .dtype = ES_DT_FLOAT, .ndim = 1, .dims = { 3 }, .data = f, .nbytes = 12 };
	es_tensor b = { .dtype = ES_DT_INT64, .ndim = 2, .dims = { 1, 2 }, .data = iv, .nbytes = 16 };
	es_tensor s = { .dtype = ES_DT_STRING, .ndim = 1, .dims = { 1 }, .data = (void *)sv,
			.nbytes = sizeof(sv) };
	es_v2_output outs[3] = {
		{ .name = "a", .tensor = &a, .binary = true },
		{ .name = "b", .tensor = &b, .binary = false },
		{ .name = "s", .tensor = &s, .binary = true },
	};
	es_buf buf = ES_BUF_INIT;
	size_t jl = 0;
	assert_int_equal(es_v2_encode_response(&buf, &jl, "mlp", 2, "req-1",
					       "{\"k\":1}", outs, 3), 0);
	const char *expect =
		"{\"model_name\":\"mlp\",\"model_version\":\"2\",\"id\":\"req-1\","
		"\"parameters\":{\"k\":1},\"outputs\":["
		"{\"name\":\"a\",\"datatype\":\"FP32\",\"shape\":[3],\"parameters\":{\"binary_data_size\":12}},"
		"{\"name\":\"b\",\"datatype\":\"INT64\",\"shape\":[1,2],\"data\":[-9223372036854775808,5]},"
		"{\"name\":\"s\",\"datatype\":\"BYTES\",\"shape\":[1],\"parameters\":{\"binary_data_size\":5}}]}";
	assert_int_equal(jl, strlen(expect));
	assert_memory_equal(buf.data, expect, jl);
	assert_int_equal(buf.len, jl + 12 + 5);
	assert_memory_equal(buf.data + jl, f, 12);
	assert_memory_equal(buf.data + jl + 12, sv, 5);

	/* the response parses back as a request-shaped document would not; but
	 * its binary part feeds a request parser: build one from it */
	es_buf_free(&buf);

	/* no id, no version, no parameters */
	assert_int_equal(es_v2_encode_response(&buf, &jl, "m", -1, NULL, NULL, outs + 1, 1), 0);
	assert_string_equal(buf.data,
			    "{\"model_name\":\"m\",\"outputs\":[{\"name\":\"b\",\"datatype\":\"INT64\","
			    "\"shape\":[1,2],\"data\":[-9223372036854775808,5]}]}");
	es_buf_reset(&buf);

	/* a tensor whose data is shorter than its shape is refused */
	es_tensor bad = a;
	bad.nbytes = 8;
	es_v2_output o = { .name = "bad", .tensor = &bad };
	buf.len = 0;
	assert_int_equal(es_v2_encode_response(&buf, &jl, "m", 1, NULL, NULL, &o, 1), ES_EINVAL);
	assert_int_equal(buf.len, 0);
	es_tensor noname = { .dtype = ES_DT_UNDEFINED, .ndim = 0 };
	o.tensor = &noname;
	assert_int_equal(es_v2_encode_response(&buf, &jl, "m", 1, NULL, NULL, &o, 1), ES_EINVAL);
	es_buf_free(&buf);
}

static void test_encode_error(void **state)
{
	(void)state;
	es_buf b = ES_BUF_INIT;
	assert_int_equal(es_encode_error(&b, "input 'x\"': bad\n"), 0);
	assert_string_equal(b.data, "{\"error\":\"input 'x\\\"': bad\\n\"}");
	es_buf_free(&b);
}

/* ---- hostile input -------------------------------------------------------- */

static void test_errors(void **state)
{
	(void)state;
	EXPECT_ERR("{\"inputs\":[{\"name\":\"x\",\"shape\":[2],\"datatype\":\"FP8\",\"data\":[1,2]}]}",
		   ES_EINVAL, "input 'x'", "unknown datatype 'FP8'");
	EXPECT_ERR("{\"inputs\":[{\"shape\":[2],\"datatype\":\"FP32\",\"data\":[1,2]}]}",
		   ES_EINVAL, "input 0 has no 'name'");
	EXPECT_ERR("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"data\":[1,2]}]}",
		   ES_EINVAL, "input 'x' has no 'shape'");
	EXPECT_ERR("{\"inputs\":[{\"name\":\"x\",\"shape\":[2],\"data\":[1,2]}]}",
		   ES_EINVAL, "input 'x' has no 'datatype'");
	EXPECT_ERR("{\"inputs\":[{\"name\":\"x\",\"shape\":[2],\"datatype\":\"FP32\"}]}",
		   ES_EINVAL, "input 'x' has neither 'data'");
	EXPECT_ERR("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\",\"data\":[1]},"
		   "{\"name\":\"y\",\"shape\":[1],\"datatype\":\"FP32\",\"data\":[1]},"
		   "{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\",\"data\":[1]}]}",
		   ES_EINVAL, "input 'x' appears more than once");
	EXPECT_ERR("{\"inputs\":[{\"name\":\"x\",\"shape\":[2,-3],\"datatype\":\"FP32\",\"data\":[]}]}",
		   ES_ERANGE, "input 'x'", "shape[1] is -3");
	EXPECT_ERR("{\"inputs\":[{\"name\":\"x\",\"shape\":[1,1,1,1,1,1,1,1,1],\"datatype\":\"FP32\",\"data\":[1]}]}",
		   ES_ERANGE, "input 'x'", "more than 8 dimensions");
	EXPECT_ERR("{\"inputs\":[{\"name\":\"x\",\"shape\":[4294967296,4294967296],\"datatype\":\"FP32\",\"data\":[1]}]}",
		   ES_ERANGE, "input 'x'", "too many elements");
	EXPECT_ERR("{\"inputs\":[{\"name\":\"x\",\"shape\":[3037000500,3037000500],\"datatype\":\"INT8\",\"data\":[1]}]}",
		   ES_ERANGE, "input 'x'", "too many elements");
	EXPECT_ERR("{\"inputs\":[{\"name\":\"x\",\"shape\":[99999999999999999999],\"datatype\":\"FP32\",\"data\":[1]}]}",
		   ES_ERANGE, "input 'x'", "shape[0]");
	EXPECT_ERR("{\"inputs\":[{\"name\":\"x\",\"shape\":[1000000],\"datatype\":\"FP32\",\"data\":[1,2]}]}",
		   ES_EINVAL, "input 'x'", "data has 2 elements, shape [1000000] needs 1000000");
	EXPECT_ERR("{\"inputs\":[{\"name\":\"x\",\"shape\":[1,8],\"datatype\":\"FP32\",\"data\":[]}]}",
		   ES_EINVAL, "input 'x'", "data has 0 elements, shape [1,8] needs 8");
	EXPECT_ERR("{\"inputs\":[{\"name\":\"x\",\"shape\":[9],\"datatype\":\"BYTES\",\"data\":[\"a\",[\"b\"],{}]}]}",
		   ES_EINVAL, "input 'x'", "data has 3 elements, shape [9] needs 9");
	EXPECT_ERR("{\"inputs\":[{\"name\":\"x\",\"shape\":[2],\"datatype\":\"INT64\",\"data\":[1,9223372036854775808]}]}",
		   ES_ERANGE, "input 'x'", "element 1", "9223372036854775808", "out of range for INT64");
	EXPECT_ERR("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"UINT64\",\"data\":[18446744073709551616]}]}",
		   ES_ERANGE, "input 'x'", "element 0", "18446744073709551616");
	EXPECT_ERR("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"UINT32\",\"data\":[-1]}]}",
		   ES_ERANGE, "input 'x'", "element 0", "-1", "UINT32");
	EXPECT_ERR("{\"inputs\":[{\"name\":\"x\",\"shape\":[2],\"datatype\":\"UINT8\",\"data\":[1,256]}]}",
		   ES_ERANGE, "input 'x'", "element 1", "256", "UINT8");
	EXPECT_ERR("{\"inputs\":[{\"name\":\"x\",\"shape\":[2],\"datatype\":\"INT32\",\"data\":[1,1.5]}]}",
		   ES_EINVAL, "input 'x'", "element 1", "1.5 is not an integer");
	EXPECT_ERR("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"INT32\",\"data\":[1e999999999999999]}]}",
		   ES_ERANGE, "input 'x'", "element 0");
	EXPECT_ERR("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\",\"data\":[1e39]}]}",
		   ES_ERANGE, "input 'x'", "element 0", "1e39", "FP32");
	EXPECT_ERR("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP64\",\"data\":[1e309]}]}",
		   ES_ERANGE, "input 'x'", "FP64");
	EXPECT_ERR("{\"inputs\":[{\"name\":\"x\",\"shape\":[2],\"datatype\":\"FP32\",\"data\":[1,\"a\"]}]}",
		   ES_EINVAL, "input 'x'", "element 1", "not a number");
	EXPECT_ERR("{\"inputs\":[{\"name\":\"x\",\"shape\":[2],\"datatype\":\"FP32\",\"data\":[1,null]}]}",
		   ES_EINVAL, "input 'x'", "element 1", "got null");
	EXPECT_ERR("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"BOOL\",\"data\":[2]}]}",
		   ES_EINVAL, "input 'x'", "is not a BOOL");
	EXPECT_ERR("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"BYTES\",\"data\":[1]}]}",
		   ES_EINVAL, "input 'x'", "expected a string for BYTES, got a number");
	EXPECT_ERR("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"INT32\",\"data\":[true]}]}",
		   ES_EINVAL, "input 'x'", "expected a number for INT32, got a boolean");
	EXPECT_ERR("{\"inputs\":[{\"name\":\"a\\u0000b\",\"shape\":[1],\"datatype\":\"INT32\",\"data\":[1]}]}",
		   ES_EINVAL, "'name' contains a NUL");
	EXPECT_ERR("{\"inputs\":[{\"name\":\"x\",\"name\":\"y\"}]}", ES_EINVAL,
		   "duplicate key 'name'");
	EXPECT_ERR("{\"inputs\":{}}", ES_EINVAL, "'inputs' must be an array");
	EXPECT_ERR("[1,2]", ES_EPARSE, "must be a JSON object");
	EXPECT_ERR("", ES_EPARSE, "empty request body");
	EXPECT_ERR("{\"inputs\":[]} x", ES_EPARSE, "after the JSON value");
	EXPECT_ERR("{\"inputs\":[1,]}", ES_EINVAL, "input 0: must be an object");
	EXPECT_ERR("{\"inputs\":[],}", ES_EPARSE, "expected a string key");
	EXPECT_ERR("{\"inputs\":[{\"name\":\"x\",\"shape\":[2],\"datatype\":\"INT32\",\"data\":[1,]}]}",
		   ES_EPARSE, "expected a value after ','");
	EXPECT_ERR("{\"inputs\":[],\"x\":01}", ES_EPARSE, "byte 18");
	EXPECT_ERR("{\"inputs\":[],\"x\":\"\\ud800\"}", ES_EPARSE, "unpaired surrogate");
	EXPECT_ERR("{\"inputs\":[],\"x\":\"\\q\"}", ES_EPARSE, "bad escape");
	EXPECT_ERR("{\"inputs\":[],\"x\":tru}", ES_EPARSE, "expected true or false");
	EXPECT_ERR("{\"inputs\":[],\"x\":NaN}", ES_EPARSE, "unexpected character");

	/* NUL bytes: inside a string, between tokens, after the document */
	static const char nul1[] = "{\"inputs\":[],\"x\":\"a\0b\"}";
	expect_error(nul1, sizeof(nul1) - 1, sizeof(nul1) - 1, ES_EPARSE,
		     "control character", (const char *)NULL);
	static const char nul2[] = "{\"inputs\":[]\0}";
	expect_error(nul2, sizeof(nul2) - 1, sizeof(nul2) - 1, ES_EPARSE,
		     "byte 12", (const char *)NULL);
	static const char nul3[] = "{\"inputs\":[]}\0";
	expect_error(nul3, sizeof(nul3) - 1, sizeof(nul3) - 1, ES_EPARSE,
		     "after the JSON value", (const char *)NULL);
}

static char *deep(const char *prefix, int levels, const char *suffix)
{
	size_t pl = strlen(prefix), sl = strlen(suffix);
	char *s = malloc(pl + 2 * (size_t)levels + sl + 8);
	assert_non_null(s);
	memcpy(s, prefix, pl);
	size_t n = pl;
	for (int i = 0; i < levels; i++)
		s[n++] = '[';
	s[n++] = '1';
	for (int i = 0; i < levels; i++)
		s[n++] = ']';
	memcpy(s + n, suffix, sl + 1);
	return s;
}

static void test_deep_nesting(void **state)
{
	(void)state;
	/* 1000 deep in an unknown key, in parameters, and in data */
	char *s = deep("{\"inputs\":[],\"junk\":", 1000, "}");
	EXPECT_ERR(s, ES_EPARSE, "nesting deeper than 64");
	free(s);
	s = deep("{\"inputs\":[],\"parameters\":{\"a\":", 1000, "}}");
	EXPECT_ERR(s, ES_EPARSE, "nesting deeper than 64");
	free(s);
	s = deep("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\",\"data\":", 1000, "}]}");
	EXPECT_ERR(s, ES_EINVAL, "input 'x'", "nested deeper than shape [1]");
	free(s);
	s = deep("{\"inputs\":[{\"data\":", 1000, ",\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\"}]}");
	EXPECT_ERR(s, ES_EPARSE, "nesting deeper than 64");
	free(s);
	/* exactly 64 levels is fine, 65 is not */
	s = deep("{\"inputs\":[],\"junk\":", 63, "}");
	es_v2_request r;
	es_error err;
	assert_int_equal(parse(s, &r, &err), 0);
	es_v2_request_free(&r);
	free(s);
	s = deep("{\"inputs\":[],\"junk\":", 64, "}");
	EXPECT_ERR(s, ES_EPARSE, "nesting deeper than 64");
	free(s);
}

/* Every prefix of valid requests fails cleanly (run under ASan in CI). */
static void test_truncated(void **state)
{
	(void)state;
	const char *reqs[] = {
		"{\"id\":\"a\\u00e9\",\"parameters\":{\"timeout\":5,\"x\":[true,null,-1.5e3]},"
		"\"inputs\":[{\"name\":\"x\",\"shape\":[2,2],\"datatype\":\"FP32\",\"data\":[[1.5,2],[3,4e-2]]},"
		"{\"data\":[\"a\",\"b\"],\"name\":\"s\",\"shape\":[2],\"datatype\":\"BYTES\"}],"
		"\"outputs\":[{\"name\":\"y\",\"parameters\":{\"binary_data\":true}}]}",
		"{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\",\"data\":[1]}]}",
		"{\"inputs\":[{\"name\":\"x\",\"shape\":[3],\"datatype\":\"INT64\",\"data\":[1,-9223372036854775808,7]}]}",
	};
	for (size_t k = 0; k < sizeof(reqs) / sizeof(reqs[0]); k++) {
		size_t n = strlen(reqs[k]);
		es_v2_request r;
		es_error err;
		assert_int_equal(es_v2_parse_request(reqs[k], n, n, &r, &err), 0);
		es_v2_request_free(&r);
		for (size_t i = 0; i < n; i++) {
			/* a copy of exactly i bytes so ASan sees any overread */
			char *cut = malloc(i ? i : 1);
			memcpy(cut, reqs[k], i);
			int rc = es_v2_parse_request(cut, i, i, &r, &err);
			assert_true(rc < 0);
			assert_null(r.mem);
			free(cut);
			/* and as a header length that cuts the JSON short */
			rc = es_v2_parse_request(reqs[k], n, i, &r, &err);
			assert_true(rc < 0);
			assert_null(r.mem);
		}
	}
}

static void test_large_tensor(void **state)
{
	(void)state;
	/* 1M floats, flat */
	size_t n = 1000000;
	es_buf b = ES_BUF_INIT;
	es_buf_puts(&b, "{\"inputs\":[{\"name\":\"x\",\"shape\":[1000,1000],\"datatype\":\"FP32\",\"data\":[");
	for (size_t i = 0; i < n; i++)
		es_buf_printf(&b, i ? ",%.9g" : "%.9g", (double)((float)i * 0.25f));
	es_buf_puts(&b, "]}]}");
	es_v2_request r;
	es_error err;
	assert_int_equal(es_v2_parse_request(b.data, b.len, b.len, &r, &err), 0);
	float *f = r.inputs[0].data;
	assert_true(f[999999] == 999999 * 0.25f);
	assert_int_equal((uintptr_t)f % 64, 0);
	es_v2_request_free(&r);
	es_buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dtype_names),
		cmocka_unit_test(test_roundtrip_ints),
		cmocka_unit_test(test_int64_exact_values),
		cmocka_unit_test(test_roundtrip_floats),
		cmocka_unit_test(test_fp32_prints_short),
		cmocka_unit_test(test_float_parse_matches_libc),
		cmocka_unit_test(test_fp16),
		cmocka_unit_test(test_bytes_json),
		cmocka_unit_test(test_nested_and_flat),
		cmocka_unit_test(test_data_before_shape),
		cmocka_unit_test(test_request_fields),
		cmocka_unit_test(test_binary_inputs),
		cmocka_unit_test(test_binary_errors),
		cmocka_unit_test(test_binary_outputs),
		cmocka_unit_test(test_encode_error),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_deep_nesting),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_large_tensor),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
