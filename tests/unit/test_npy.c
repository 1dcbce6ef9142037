/* Unit tests of the .npy reader and writer (src/engine/io/npy.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "edgeserve/engine.h"
#include "engine/io/npy.h"

static char tmp_dir[64];

static int setup_dir(void **state)
{
	(void)state;
	snprintf(tmp_dir, sizeof(tmp_dir), "/tmp/es_test_npy_XXXXXX");
	return mkdtemp(tmp_dir) ? 0 : -1;
}

static int remove_dir(void **state)
{
	(void)state;
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp_dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* Writes len bytes to tmp_dir/name and returns the path (static buffer). */
static const char *write_file(const char *name, const void *buf, size_t len)
{
	static char path[256];
	snprintf(path, sizeof(path), "%s/%s", tmp_dir, name);
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	if (len)
		assert_int_equal(fwrite(buf, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
	return path;
}

/*
 * Builds a version-1 .npy file around a header dict (padded like numpy
 * does) followed by data_len bytes of 0x01. Returns the total length; the
 * buffer is malloc'ed.
 */
static size_t build_npy(const char *dict, size_t data_len, unsigned char **out)
{
	size_t dict_len = strlen(dict);
	size_t total = 10 + dict_len + 1;
	size_t padded = (total + 63) / 64 * 64;
	size_t hl = padded - 10;
	unsigned char *b = malloc(padded + data_len + 1);
	assert_non_null(b);
	memcpy(b, "\x93NUMPY\x01\x00", 8);
	b[8] = (unsigned char)(hl & 0xff);
	b[9] = (unsigned char)(hl >> 8);
	memcpy(b + 10, dict, dict_len);
	memset(b + 10 + dict_len, ' ', padded - total);
	b[padded - 1] = '\n';
	memset(b + padded, 1, data_len);
	*out = b;
	return padded + data_len;
}

/* Asserts that the bytes are rejected with `code`, both from a file and
 * from memory, and that the error says something. */
static void expect_reject(const char *name, const void *buf, size_t len,
			  int code)
{
	es_tensor t;
	es_error err = {0};
	const char *path = write_file(name, buf, len);
	int rc = es_npy_read(path, &t, &err);
	if (rc != code)
		print_error("%s: es_npy_read returned %d (%s), expected %d\n",
			    name, rc, err.msg, code);
	assert_int_equal(rc, code);
	assert_true(strlen(err.msg) > 0);
	assert_null(t.data);

	memset(&err, 0, sizeof(err));
	rc = es_npy_parse(buf, len, &t, &err);
	if (rc != code)
		print_error("%s: es_npy_parse returned %d (%s), expected %d\n",
			    name, rc, err.msg, code);
	assert_int_equal(rc, code);
	assert_true(strlen(err.msg) > 0);
	assert_null(t.data);
}

static void expect_dict_reject(const char *name, const char *dict,
			       size_t data_len, int code)
{
	unsigned char *b;
	size_t len = build_npy(dict, data_len, &b);
	expect_reject(name, b, len, code);
	free(b);
}

/* ---- round trips ------------------------------------------------------- */

static const es_dtype all_dtypes[] = {
	ES_DT_FLOAT16, ES_DT_FLOAT,  ES_DT_DOUBLE, ES_DT_INT8,
	ES_DT_INT16,   ES_DT_INT32,  ES_DT_INT64,  ES_DT_UINT8,
	ES_DT_UINT16,  ES_DT_UINT32, ES_DT_UINT64, ES_DT_BOOL,
};

static void round_trip(es_dtype dt, int ndim, const int64_t *dims)
{
	es_tensor t, back;
	es_error err = {0};
	char path[256];

	assert_int_equal(es_tensor_alloc(&t, dt, ndim, dims, &err), 0);
	unsigned char *bytes = t.data;
	for (size_t i = 0; i < t.nbytes; i++)
		bytes[i] = dt == ES_DT_BOOL ? (unsigned char)(i % 3 == 0) :
					      (unsigned char)(i * 37 + 11);
	snprintf(path, sizeof(path), "%s/rt_%d_%d.npy", tmp_dir, (int)dt, ndim);
	int rc = es_npy_write(path, &t, &err);
	if (rc)
		print_error("write %s: %s\n", es_dtype_name(dt), err.msg);
	assert_int_equal(rc, 0);

	/* numpy aligns the data to 64 bytes; so do we. */
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(((size_t)st.st_size - t.nbytes) % 64, 0);

	rc = es_npy_read(path, &back, &err);
	if (rc)
		print_error("read %s: %s\n", es_dtype_name(dt), err.msg);
	assert_int_equal(rc, 0);
	assert_int_equal(back.dtype, dt);
	assert_int_equal(back.ndim, ndim);
	for (int i = 0; i < ndim; i++)
		assert_int_equal(back.dims[i], dims[i]);
	assert_int_equal(back.nbytes, t.nbytes);
	if (t.nbytes)
		assert_memory_equal(back.data, t.data, t.nbytes);
	es_tensor_free_data(&back);
	es_tensor_free_data(&t);
}

static void test_round_trip_every_dtype(void **state)
{
	(void)state;
	const int64_t dims3[] = {2, 3, 5};
	const int64_t dims1[] = {7};
	const int64_t dims_empty[] = {4, 0};
	for (size_t i = 0; i < sizeof(all_dtypes) / sizeof(all_dtypes[0]); i++) {
		round_trip(all_dtypes[i], 3, dims3);
		round_trip(all_dtypes[i], 1, dims1);
		round_trip(all_dtypes[i], 0, NULL);
		round_trip(all_dtypes[i], 2, dims_empty);
	}
}

static void test_round_trip_max_rank(void **state)
{
	(void)state;
	int64_t dims[ES_MAX_DIMS];
	for (int i = 0; i < ES_MAX_DIMS; i++)
		dims[i] = 2;
	round_trip(ES_DT_FLOAT, ES_MAX_DIMS, dims);
}

/* The exact bytes numpy 1.24 writes for np.arange(3, dtype='<i2') with
 * format versions 1.0, 2.0 and 3.0. */
static void test_reads_numpy_versions(void **state)
{
	(void)state;
	for (int version = 1; version <= 3; version++) {
		const char *dict = "{'descr': '<i2', 'fortran_order': False, 'shape': (3,), }";
		size_t pre = version == 1 ? 10 : 12;
		size_t total = pre + strlen(dict) + 1;
		size_t padded = (total + 63) / 64 * 64;
		size_t hl = padded - pre;
		unsigned char buf[256];
		memset(buf, ' ', sizeof(buf));
		memcpy(buf, "\x93NUMPY", 6);
		buf[6] = (unsigned char)version;
		buf[7] = 0;
		buf[8] = (unsigned char)hl;
		buf[9] = 0;
		buf[10] = buf[11] = 0; /* high bytes of the v2/v3 length */
		memcpy(buf + pre, dict, strlen(dict));
		buf[padded - 1] = '\n';
		const int16_t data[3] = {0, 1, 2};
		memcpy(buf + padded, data, sizeof(data));

		es_tensor t;
		es_error err = {0};
		const char *path = write_file("numpy.npy", buf, padded + sizeof(data));
		int rc = es_npy_read(path, &t, &err);
		if (rc)
			print_error("version %d: %s\n", version, err.msg);
		assert_int_equal(rc, 0);
		assert_int_equal(t.dtype, ES_DT_INT16);
		assert_int_equal(t.ndim, 1);
		assert_int_equal(t.dims[0], 3);
		assert_memory_equal(t.data, data, sizeof(data));
		es_tensor_free_data(&t);
	}
}

static void test_reads_scalar_bool_and_double_quotes(void **state)
{
	(void)state;
	unsigned char *b;
	size_t len = build_npy("{\"shape\": (), \"descr\": \"|b1\", \"fortran_order\": False}",
			       1, &b);
	es_tensor t;
	es_error err = {0};
	int rc = es_npy_parse(b, len, &t, &err);
	if (rc)
		print_error("%s\n", err.msg);
	assert_int_equal(rc, 0);
	assert_int_equal(t.dtype, ES_DT_BOOL);
	assert_int_equal(t.ndim, 0);
	assert_int_equal(t.nbytes, 1);
	assert_int_equal(((unsigned char *)t.data)[0], 1);
	es_tensor_free_data(&t);
	free(b);
}

/* ---- hostile files ----------------------------------------------------- */

static void test_rejects_bad_preamble(void **state)
{
	(void)state;
	expect_reject("empty.npy", "", 0, ES_EPARSE);
	expect_reject("short_magic.npy", "\x93NUM", 4, ES_EPARSE);
	expect_reject("bad_magic.npy", "\x93NUMPZ\x01\x00\x10\x00{}", 12, ES_EPARSE);
	expect_reject("text.npy", "hello world, not numpy", 22, ES_EPARSE);
	expect_reject("no_len.npy", "\x93NUMPY\x01\x00\x10", 9, ES_EPARSE);
	expect_reject("v2_no_len.npy", "\x93NUMPY\x02\x00\x10\x00\x00", 11, ES_EPARSE);
	expect_reject("version4.npy", "\x93NUMPY\x04\x00\x10\x00{}", 12, ES_EUNSUPPORTED);
	expect_reject("version0.npy", "\x93NUMPY\x00\x00\x10\x00{}", 12, ES_EUNSUPPORTED);
	expect_reject("minor.npy", "\x93NUMPY\x01\x01\x10\x00{}", 12, ES_EUNSUPPORTED);
	expect_reject("zero_header.npy", "\x93NUMPY\x01\x00\x00\x00", 10, ES_EPARSE);
	/* A v2 header length of 4 GiB must be refused before any allocation. */
	expect_reject("huge_header.npy", "\x93NUMPY\x02\x00\xff\xff\xff\xff{", 13,
		      ES_EPARSE);
	/* Header length says 0x100 bytes, the file has 2. */
	expect_reject("short_header.npy", "\x93NUMPY\x01\x00\x00\x01{}", 12,
		      ES_EPARSE);
}

static void test_rejects_every_truncation(void **state)
{
	(void)state;
	es_tensor t;
	es_error err;
	unsigned char *b;
	size_t len = build_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
			       24, &b);
	for (size_t cut = 0; cut < len; cut++) {
		memset(&err, 0, sizeof(err));
		assert_int_not_equal(es_npy_parse(b, cut, &t, &err), 0);
		assert_true(strlen(err.msg) > 0);
		assert_null(t.data);
		const char *path = write_file("cut.npy", b, cut);
		assert_int_not_equal(es_npy_read(path, &t, &err), 0);
		assert_null(t.data);
	}
	assert_int_equal(es_npy_parse(b, len, &t, &err), 0);
	es_tensor_free_data(&t);
	free(b);
}

static void test_rejects_bad_headers(void **state)
{
	(void)state;
	expect_dict_reject("fortran.npy",
			   "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }",
			   48, ES_EUNSUPPORTED);
	expect_dict_reject("big_endian.npy",
			   "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }",
			   24, ES_EUNSUPPORTED);
	expect_dict_reject("complex.npy",
			   "{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }",
			   16, ES_EUNSUPPORTED);
	expect_dict_reject("object.npy",
			   "{'descr': '|O', 'fortran_order': False, 'shape': (2,), }",
			   16, ES_EUNSUPPORTED);
	expect_dict_reject("f4_no_order.npy",
			   "{'descr': '|f4', 'fortran_order': False, 'shape': (2,), }",
			   8, ES_EUNSUPPORTED);
	expect_dict_reject("structured.npy",
			   "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }",
			   8, ES_EUNSUPPORTED);
	expect_dict_reject("nine_dims.npy",
			   "{'descr': '|u1', 'fortran_order': False, 'shape': (1, 1, 1, 1, 1, 1, 1, 1, 1), }",
			   1, ES_EUNSUPPORTED);
	expect_dict_reject("missing_shape.npy",
			   "{'descr': '<f4', 'fortran_order': False, }", 4,
			   ES_EPARSE);
	expect_dict_reject("missing_descr.npy",
			   "{'fortran_order': False, 'shape': (1,), }", 4,
			   ES_EPARSE);
	expect_dict_reject("duplicate.npy",
			   "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
			   4, ES_EPARSE);
	expect_dict_reject("unknown_key.npy",
			   "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}",
			   4, ES_EPARSE);
	expect_dict_reject("not_tuple.npy",
			   "{'descr': '<f4', 'fortran_order': False, 'shape': (1), }",
			   4, ES_EPARSE);
	expect_dict_reject("negative_dim.npy",
			   "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }",
			   4, ES_EPARSE);
	expect_dict_reject("unterminated.npy", "{'descr': '<f4", 4, ES_EPARSE);
	expect_dict_reject("no_brace.npy",
			   "'descr': '<f4', 'fortran_order': False, 'shape': (1,)",
			   4, ES_EPARSE);
	expect_dict_reject("trailing_text.npy",
			   "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), } x",
			   4, ES_EPARSE);
	expect_dict_reject("order_word.npy",
			   "{'descr': '<f4', 'fortran_order': 0, 'shape': (1,), }",
			   4, ES_EPARSE);
	expect_dict_reject("python_long.npy",
			   "{'descr': '<f4', 'fortran_order': False, 'shape': (1L,), }",
			   4, ES_EPARSE);
	expect_dict_reject("escape.npy",
			   "{'descr': '<f\\x34', 'fortran_order': False, 'shape': (1,), }",
			   4, ES_EPARSE);
	expect_dict_reject("empty.npy", "{}", 0, ES_EPARSE);
	expect_dict_reject("nested.npy",
			   "{'descr': '<f4', 'fortran_order': False, 'shape': ((1,),), }",
			   4, ES_EPARSE);

	/* A NUL byte inside the header. */
	unsigned char *b;
	size_t len = build_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
			       4, &b);
	b[20] = '\0';
	expect_reject("nul.npy", b, len, ES_EPARSE);
	free(b);
}

static void test_rejects_shape_overflow(void **state)
{
	(void)state;
	/* 2^32 * 2^32 elements overflow 64 bits. */
	expect_dict_reject("overflow.npy",
			   "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }",
			   4, ES_ERANGE);
	/* 2^62 elements fit int64 but not times 4 bytes. */
	expect_dict_reject("overflow_bytes.npy",
			   "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904,), }",
			   4, ES_ERANGE);
	/* A dimension that does not fit 64 bits at all. */
	expect_dict_reject("dim_digits.npy",
			   "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,), }",
			   4, ES_ERANGE);
}

static void test_rejects_data_size_mismatch(void **state)
{
	(void)state;
	/* 10 floats need 40 bytes; only 8 are there. */
	expect_dict_reject("short_data.npy",
			   "{'descr': '<f4', 'fortran_order': False, 'shape': (10,), }",
			   8, ES_EPARSE);
	/* A terabyte shape on a tiny file is refused before allocating. */
	expect_dict_reject("huge_shape.npy",
			   "{'descr': '<f8', 'fortran_order': False, 'shape': (1099511627776,), }",
			   8, ES_EPARSE);
	expect_dict_reject("trailing_data.npy",
			   "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
			   12, ES_EPARSE);
	/* Bool elements must be 0 or 1 (build_npy fills with 0x01, then
	 * one byte is spoiled). */
	unsigned char *b;
	size_t len = build_npy("{'descr': '|b1', 'fortran_order': False, 'shape': (4,), }",
			       4, &b);
	b[len - 2] = 7;
	expect_reject("bad_bool.npy", b, len, ES_EPARSE);
	free(b);
}

static void test_rejects_unreadable_paths(void **state)
{
	(void)state;
	es_tensor t;
	es_error err = {0};
	char path[256];
	snprintf(path, sizeof(path), "%s/does_not_exist.npy", tmp_dir);
	assert_int_equal(es_npy_read(path, &t, &err), ES_EIO);
	assert_true(strlen(err.msg) > 0);
	assert_int_equal(es_npy_read(tmp_dir, &t, &err), ES_EIO);
}

/* Flipping header bytes must never crash (the sanitizer build checks
 * memory safety); each result is either a clean error or a valid tensor. */
static void test_header_byte_flips_are_safe(void **state)
{
	(void)state;
	unsigned char *b;
	size_t len = build_npy("{'descr': '<i4', 'fortran_order': False, 'shape': (2, 2), }",
			       16, &b);
	static const unsigned char repl[] = {'\0', '(', ')', ',', '\'', '9', '}',
					     '{', 0xff, ' ', 'x', '\n'};
	for (size_t pos = 0; pos < 10 + 70; pos++) {
		for (size_t k = 0; k < sizeof(repl); k++) {
			unsigned char saved = b[pos];
			b[pos] = repl[k];
			es_tensor t;
			es_error err = {0};
			int rc = es_npy_parse(b, len, &t, &err);
			if (rc == 0) {
				assert_int_equal((size_t)es_tensor_numel(&t) *
							 es_dtype_size(t.dtype),
						 t.nbytes);
				es_tensor_free_data(&t);
			} else {
				assert_true(strlen(err.msg) > 0);
				assert_null(t.data);
			}
			b[pos] = saved;
		}
	}
	free(b);
}

/* ---- writer errors ----------------------------------------------------- */

static void test_write_rejects_bad_tensors(void **state)
{
	(void)state;
	es_error err = {0};
	char path[256];
	snprintf(path, sizeof(path), "%s/w.npy", tmp_dir);

	es_tensor t;
	const int64_t dims[] = {2};
	assert_int_equal(es_tensor_alloc(&t, ES_DT_FLOAT, 1, dims, &err), 0);

	es_tensor bad = t;
	bad.dtype = ES_DT_BFLOAT16;
	assert_int_equal(es_npy_write(path, &bad, &err), ES_EUNSUPPORTED);
	bad = t;
	bad.dtype = ES_DT_STRING;
	assert_int_equal(es_npy_write(path, &bad, &err), ES_EUNSUPPORTED);
	bad = t;
	bad.nbytes = 4; /* shape says 8 */
	assert_int_equal(es_npy_write(path, &bad, &err), ES_EINVAL);
	bad = t;
	bad.ndim = ES_MAX_DIMS + 1;
	assert_int_equal(es_npy_write(path, &bad, &err), ES_EINVAL);
	bad = t;
	bad.dims[0] = -2;
	assert_int_not_equal(es_npy_write(path, &bad, &err), 0);
	assert_int_not_equal(access(path, F_OK), 0);

	snprintf(path, sizeof(path), "%s/no/such/dir/w.npy", tmp_dir);
	assert_int_equal(es_npy_write(path, &t, &err), ES_EIO);
	assert_true(strlen(err.msg) > 0);
	es_tensor_free_data(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip_every_dtype),
		cmocka_unit_test(test_round_trip_max_rank),
		cmocka_unit_test(test_reads_numpy_versions),
		cmocka_unit_test(test_reads_scalar_bool_and_double_quotes),
		cmocka_unit_test(test_rejects_bad_preamble),
		cmocka_unit_test(test_rejects_every_truncation),
		cmocka_unit_test(test_rejects_bad_headers),
		cmocka_unit_test(test_rejects_shape_overflow),
		cmocka_unit_test(test_rejects_data_size_mismatch),
		cmocka_unit_test(test_rejects_unreadable_paths),
		cmocka_unit_test(test_header_byte_flips_are_safe),
		cmocka_unit_test(test_write_rejects_bad_tensors),
	};
	return cmocka_run_group_tests_name("npy", tests, setup_dir, remove_dir);
}
