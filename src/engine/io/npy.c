/*
 * NumPy .npy reader and writer.
 *
 * The file is: the magic "\x93NUMPY", a major and a minor version byte, the
 * header length (2 bytes little-endian in version 1, 4 bytes in versions 2
 * and 3), the header (a Python dict literal padded with spaces and ended
 * by '\n') and the raw array data. Everything before the data comes from
 * outside, so it is parsed by a small hand-written scanner that accepts
 * exactly the dict numpy writes and nothing that would need Python to
 * evaluate.
 */
#include "engine/io/npy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/alloc.h"
#include "base/status.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the .npy reader assumes a little-endian host"
#endif
_Static_assert(sizeof(size_t) >= sizeof(int64_t),
	       "dimensions are multiplied in size_t");

static const unsigned char npy_magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

/* What the header says about the array that follows. */
typedef struct npy_header {
	es_dtype dtype;
	int ndim;
	int64_t dims[ES_MAX_DIMS];
	size_t nbytes;
} npy_header;

/* One row per supported dtype: the type character and size numpy uses. */
static const struct {
	char kind;
	int size;
	es_dtype dtype;
} npy_types[] = {
	{'f', 2, ES_DT_FLOAT16}, {'f', 4, ES_DT_FLOAT},  {'f', 8, ES_DT_DOUBLE},
	{'i', 1, ES_DT_INT8},    {'i', 2, ES_DT_INT16},  {'i', 4, ES_DT_INT32},
	{'i', 8, ES_DT_INT64},   {'u', 1, ES_DT_UINT8},  {'u', 2, ES_DT_UINT16},
	{'u', 4, ES_DT_UINT32},  {'u', 8, ES_DT_UINT64}, {'b', 1, ES_DT_BOOL},
};

#define NPY_NTYPES (sizeof(npy_types) / sizeof(npy_types[0]))

/* ---- header scanner ---------------------------------------------------- */

typedef struct scanner {
	const char *p;
	const char *end;
} scanner;

static void skip_space(scanner *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' ||
				 *s->p == '\n' || *s->p == '\r'))
		s->p++;
}

static int expect_char(scanner *s, char c, const char *where, es_error *err)
{
	skip_space(s);
	if (s->p >= s->end)
		return es_error_set(err, ES_EPARSE,
				    "npy header: expected '%c' %s, found end of header",
				    c, where);
	if (*s->p != c)
		return es_error_set(err, ES_EPARSE,
				    "npy header: expected '%c' %s, found '%c'", c,
				    where, *s->p);
	s->p++;
	return 0;
}

/* Reads a quoted string without escapes into out (NUL-terminated). */
static int scan_string(scanner *s, char *out, size_t out_size, es_error *err)
{
	skip_space(s);
	if (s->p >= s->end || (*s->p != '\'' && *s->p != '"'))
		return es_error_set(err, ES_EPARSE,
				    "npy header: expected a quoted string");
	char quote = *s->p++;
	size_t n = 0;
	while (s->p < s->end && *s->p != quote) {
		unsigned char c = (unsigned char)*s->p;
		if (c == '\\' || c < 0x20 || c >= 0x7f)
			return es_error_set(err, ES_EPARSE,
					    "npy header: unexpected character 0x%02x in a string",
					    c);
		if (n + 1 >= out_size)
			return es_error_set(err, ES_EPARSE,
					    "npy header: string longer than %zu characters",
					    out_size - 1);
		out[n++] = (char)c;
		s->p++;
	}
	if (s->p >= s->end)
		return es_error_set(err, ES_EPARSE,
				    "npy header: unterminated string");
	s->p++; /* closing quote */
	out[n] = '\0';
	return 0;
}

static bool scan_word(scanner *s, const char *word)
{
	size_t n = strlen(word);
	if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
		return false;
	s->p += n;
	return true;
}

static int parse_descr(const char *descr, es_dtype *out, es_error *err)
{
	char order = descr[0];
	if (order == '\0')
		return es_error_set(err, ES_EPARSE, "npy header: empty descr");
	if (order == '>')
		return es_error_set(err, ES_EUNSUPPORTED,
				    "npy: big-endian dtype '%s' is not supported (expected little-endian '<')",
				    descr);
	if (order != '<' && order != '|' && order != '=')
		return es_error_set(err, ES_EUNSUPPORTED,
				    "npy: dtype '%s' is not supported (expected one of <f2 <f4 <f8 |i1 <i2 <i4 <i8 |u1 <u2 <u4 <u8 |b1)",
				    descr);
	char kind = descr[1];
	const char *digits = descr + 2;
	int size = 0;
	if (kind == '\0' || *digits == '\0' || strlen(digits) > 2)
		goto unsupported;
	for (const char *d = digits; *d; d++) {
		if (*d < '0' || *d > '9')
			goto unsupported;
		size = size * 10 + (*d - '0');
	}
	for (size_t i = 0; i < NPY_NTYPES; i++) {
		if (npy_types[i].kind != kind || npy_types[i].size != size)
			continue;
		/* '|' means "byte order does not apply": only for 1-byte
		 * types, as numpy writes them. */
		if (order == '|' && size != 1)
			return es_error_set(err, ES_EUNSUPPORTED,
					    "npy: dtype '%s' has no byte order (expected '<%c%d')",
					    descr, kind, size);
		*out = npy_types[i].dtype;
		return 0;
	}
unsupported:
	return es_error_set(err, ES_EUNSUPPORTED,
			    "npy: dtype '%s' is not supported (expected one of <f2 <f4 <f8 |i1 <i2 <i4 <i8 |u1 <u2 <u4 <u8 |b1)",
			    descr);
}

/* Parses a non-negative decimal integer that fits int64. */
static int scan_dim(scanner *s, int64_t *out, es_error *err)
{
	skip_space(s);
	if (s->p < s->end && *s->p == '-')
		return es_error_set(err, ES_EPARSE,
				    "npy header: negative dimension in shape");
	if (s->p >= s->end || *s->p < '0' || *s->p > '9')
		return es_error_set(err, ES_EPARSE,
				    "npy header: expected a dimension in shape");
	int64_t v = 0;
	while (s->p < s->end && *s->p >= '0' && *s->p <= '9') {
		if (__builtin_mul_overflow(v, 10, &v) ||
		    __builtin_add_overflow(v, *s->p - '0', &v))
			return es_error_set(err, ES_ERANGE,
					    "npy header: dimension does not fit in 64 bits");
		s->p++;
	}
	*out = v;
	return 0;
}

static int parse_shape(scanner *s, npy_header *h, es_error *err)
{
	int rc = expect_char(s, '(', "to start the shape tuple", err);
	if (rc)
		return rc;
	int ndim = 0;
	bool trailing_comma = false;
	for (;;) {
		skip_space(s);
		if (s->p < s->end && *s->p == ')') {
			s->p++;
			break;
		}
		if (ndim == ES_MAX_DIMS)
			return es_error_set(err, ES_EUNSUPPORTED,
					    "npy: shape has more than %d dimensions",
					    ES_MAX_DIMS);
		rc = scan_dim(s, &h->dims[ndim], err);
		if (rc)
			return rc;
		ndim++;
		skip_space(s);
		if (s->p < s->end && *s->p == ',') {
			s->p++;
			trailing_comma = true;
			continue;
		}
		trailing_comma = false;
		rc = expect_char(s, ')', "to end the shape tuple", err);
		if (rc)
			return rc;
		break;
	}
	/* "(3)" is the integer 3 in Python, not a tuple. */
	if (ndim == 1 && !trailing_comma)
		return es_error_set(err, ES_EPARSE,
				    "npy header: shape '(n)' is not a tuple (expected '(n,)')");
	h->ndim = ndim;
	return 0;
}

static int parse_header(const char *text, size_t len, npy_header *h,
			es_error *err)
{
	scanner s = {text, text + len};
	bool have_descr = false, have_order = false, have_shape = false;
	int rc;

	memset(h, 0, sizeof(*h));
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)text[i];
		if (c >= 0x7f || (c < 0x20 && c != '\n' && c != '\t' && c != '\r'))
			return es_error_set(err, ES_EPARSE,
					    "npy header: non-text byte 0x%02x at offset %zu",
					    c, i);
	}
	rc = expect_char(&s, '{', "at the start of the header", err);
	if (rc)
		return rc;
	for (;;) {
		char key[32];
		skip_space(&s);
		if (s.p < s.end && *s.p == '}') {
			s.p++;
			break;
		}
		rc = scan_string(&s, key, sizeof(key), err);
		if (rc)
			return rc;
		rc = expect_char(&s, ':', "after a key", err);
		if (rc)
			return rc;
		skip_space(&s);
		if (strcmp(key, "descr") == 0) {
			char descr[16];
			if (have_descr)
				goto duplicate;
			have_descr = true;
			if (s.p < s.end && *s.p == '[')
				return es_error_set(err, ES_EUNSUPPORTED,
						    "npy: structured dtypes are not supported");
			rc = scan_string(&s, descr, sizeof(descr), err);
			if (rc)
				return rc;
			rc = parse_descr(descr, &h->dtype, err);
			if (rc)
				return rc;
		} else if (strcmp(key, "fortran_order") == 0) {
			if (have_order)
				goto duplicate;
			have_order = true;
			if (scan_word(&s, "True"))
				return es_error_set(err, ES_EUNSUPPORTED,
						    "npy: fortran_order True is not supported (save the array in C order, e.g. np.ascontiguousarray)");
			if (!scan_word(&s, "False"))
				return es_error_set(err, ES_EPARSE,
						    "npy header: fortran_order must be True or False");
		} else if (strcmp(key, "shape") == 0) {
			if (have_shape)
				goto duplicate;
			have_shape = true;
			rc = parse_shape(&s, h, err);
			if (rc)
				return rc;
		} else {
			return es_error_set(err, ES_EPARSE,
					    "npy header: unknown key '%s' (expected descr, fortran_order, shape)",
					    key);
		}
		skip_space(&s);
		if (s.p < s.end && *s.p == ',') {
			s.p++;
			continue;
		}
		rc = expect_char(&s, '}', "to end the header", err);
		if (rc)
			return rc;
		break;
	}
	skip_space(&s);
	if (s.p != s.end)
		return es_error_set(err, ES_EPARSE,
				    "npy header: unexpected text after the dict");
	if (!have_descr || !have_order || !have_shape)
		return es_error_set(err, ES_EPARSE,
				    "npy header: missing key '%s'",
				    !have_descr ? "descr" :
				    !have_order ? "fortran_order" : "shape");

	size_t nbytes = es_dtype_size(h->dtype);
	for (int i = 0; i < h->ndim; i++) {
		if (h->dims[i] < 0 ||
		    es_mul_size(nbytes, (size_t)h->dims[i], &nbytes))
			return es_error_set(err, ES_ERANGE,
					    "npy: shape is too large (element count times element size overflows)");
	}
	/* Also keep the element count itself within int64 for es_tensor. */
	if (nbytes > (size_t)INT64_MAX)
		return es_error_set(err, ES_ERANGE, "npy: shape is too large");
	h->nbytes = nbytes;
	return 0;

duplicate:
	return es_error_set(err, ES_EPARSE, "npy header: duplicate key");
}

/*
 * Parses the preamble (magic, version, header length) from the first bytes
 * of a file. *preamble_len is 10 for version 1 and 12 otherwise; when
 * `avail` is shorter than that, *preamble_len says how much is needed.
 */
static int parse_preamble(const unsigned char *buf, size_t avail,
			  size_t *preamble_len, size_t *header_len,
			  es_error *err)
{
	size_t magic_len = avail < sizeof(npy_magic) ? avail : sizeof(npy_magic);
	if (memcmp(buf, npy_magic, magic_len) != 0)
		return es_error_set(err, ES_EPARSE,
				    "npy: bad magic (not a .npy file)");
	if (avail < 8)
		return es_error_set(err, ES_EPARSE,
				    "npy: file is truncated (%zu bytes, the preamble needs at least 10)",
				    avail);
	unsigned major = buf[6], minor = buf[7];
	if (major < 1 || major > 3 || minor != 0)
		return es_error_set(err, ES_EUNSUPPORTED,
				    "npy: format version %u.%u is not supported (expected 1.0, 2.0 or 3.0)",
				    major, minor);
	size_t need = major == 1 ? 10 : 12;
	*preamble_len = need;
	if (avail < need)
		return es_error_set(err, ES_EPARSE,
				    "npy: file is truncated in the preamble (%zu of %zu bytes)",
				    avail, need);
	size_t hl;
	if (major == 1)
		hl = (size_t)buf[8] | (size_t)buf[9] << 8;
	else
		hl = (size_t)buf[8] | (size_t)buf[9] << 8 |
		     (size_t)buf[10] << 16 | (size_t)buf[11] << 24;
	if (hl == 0)
		return es_error_set(err, ES_EPARSE, "npy: empty header");
	if (hl > ES_NPY_MAX_HEADER)
		return es_error_set(err, ES_EPARSE,
				    "npy: header of %zu bytes exceeds the limit of %d",
				    hl, ES_NPY_MAX_HEADER);
	*header_len = hl;
	return 0;
}

/* Checks bool payloads, which must hold only 0 and 1. */
static int check_bool_data(const es_tensor *t, es_error *err)
{
	const unsigned char *b = t->data;
	for (size_t i = 0; i < t->nbytes; i++)
		if (b[i] > 1)
			return es_error_set(err, ES_EPARSE,
					    "npy: bool element %zu has byte value %u (expected 0 or 1)",
					    i, b[i]);
	return 0;
}

static int check_data_len(const npy_header *h, size_t have, es_error *err)
{
	if (have < h->nbytes)
		return es_error_set(err, ES_EPARSE,
				    "npy: data is truncated: the shape needs %zu bytes, the file has %zu",
				    h->nbytes, have);
	if (have > h->nbytes)
		return es_error_set(err, ES_EPARSE,
				    "npy: %zu bytes of trailing data after the array",
				    have - h->nbytes);
	return 0;
}

int es_npy_parse(const void *buf, size_t len, es_tensor *t, es_error *err)
{
	const unsigned char *b = buf;
	size_t pre = 0, hl = 0;
	npy_header h;
	int rc;

	memset(t, 0, sizeof(*t));
	rc = parse_preamble(b, len, &pre, &hl, err);
	if (rc)
		return rc;
	if (len - pre < hl)
		return es_error_set(err, ES_EPARSE,
				    "npy: header is truncated (%zu of %zu bytes)",
				    len - pre, hl);
	rc = parse_header((const char *)b + pre, hl, &h, err);
	if (rc)
		return rc;
	rc = check_data_len(&h, len - pre - hl, err);
	if (rc)
		return rc;
	rc = es_tensor_alloc(t, h.dtype, h.ndim, h.dims, err);
	if (rc)
		return rc;
	if (h.nbytes)
		memcpy(t->data, b + pre + hl, h.nbytes);
	if (h.dtype == ES_DT_BOOL && (rc = check_bool_data(t, err)) != 0) {
		es_tensor_free_data(t);
		memset(t, 0, sizeof(*t));
		return rc;
	}
	return 0;
}

int es_npy_read(const char *path, es_tensor *t, es_error *err)
{
	unsigned char pre_buf[12];
	char *header = NULL;
	size_t pre = 0, hl = 0, got;
	npy_header h;
	struct stat st;
	FILE *f;
	int rc;

	memset(t, 0, sizeof(*t));
	f = fopen(path, "rb");
	if (!f)
		return es_error_set(err, ES_EIO, "cannot open: %s",
				    strerror(errno));
	if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
		rc = es_error_set(err, ES_EIO, "not a regular file");
		goto out_close;
	}
	got = fread(pre_buf, 1, sizeof(pre_buf), f);
	rc = parse_preamble(pre_buf, got, &pre, &hl, err);
	if (rc)
		goto out_close;
	if (fseek(f, (long)pre, SEEK_SET) != 0) {
		rc = es_error_set(err, ES_EIO, "cannot seek: %s",
				  strerror(errno));
		goto out_close;
	}
	header = malloc(hl);
	if (!header) {
		rc = es_error_set(err, ES_ENOMEM, "npy: out of memory");
		goto out_close;
	}
	got = fread(header, 1, hl, f);
	if (got != hl) {
		rc = es_error_set(err, ES_EPARSE,
				  "npy: header is truncated (%zu of %zu bytes)",
				  got, hl);
		goto out_free_header;
	}
	rc = parse_header(header, hl, &h, err);
	if (rc)
		goto out_free_header;
	/* Compare with the file size before allocating, so a hostile shape
	 * cannot make us allocate more than the file holds. */
	rc = check_data_len(&h, (size_t)st.st_size - pre - hl, err);
	if (rc)
		goto out_free_header;
	rc = es_tensor_alloc(t, h.dtype, h.ndim, h.dims, err);
	if (rc)
		goto out_free_header;
	if (h.nbytes && fread(t->data, 1, h.nbytes, f) != h.nbytes) {
		rc = es_error_set(err, ES_EIO,
				  "npy: data could not be read completely");
		goto out_free_tensor;
	}
	if (h.dtype == ES_DT_BOOL && (rc = check_bool_data(t, err)) != 0)
		goto out_free_tensor;
	free(header);
	fclose(f);
	return 0;

out_free_tensor:
	es_tensor_free_data(t);
	memset(t, 0, sizeof(*t));
out_free_header:
	free(header);
out_close:
	fclose(f);
	return rc;
}

/* ---- writer ------------------------------------------------------------ */

static const char *npy_descr(es_dtype dt)
{
	switch (dt) {
	case ES_DT_FLOAT16: return "<f2";
	case ES_DT_FLOAT: return "<f4";
	case ES_DT_DOUBLE: return "<f8";
	case ES_DT_INT8: return "|i1";
	case ES_DT_INT16: return "<i2";
	case ES_DT_INT32: return "<i4";
	case ES_DT_INT64: return "<i8";
	case ES_DT_UINT8: return "|u1";
	case ES_DT_UINT16: return "<u2";
	case ES_DT_UINT32: return "<u4";
	case ES_DT_UINT64: return "<u8";
	case ES_DT_BOOL: return "|b1";
	default: return NULL;
	}
}

int es_npy_write(const char *path, const es_tensor *t, es_error *err)
{
	/* Room for the preamble, the dict and ES_MAX_DIMS 20-digit dims, plus
	 * padding to 64 bytes. */
	char header[512];
	const char *descr = npy_descr(t->dtype);
	int64_t numel;
	int rc;

	if (!descr)
		return es_error_set(err, ES_EUNSUPPORTED,
				    "npy: dtype %s cannot be written to .npy",
				    es_dtype_name(t->dtype));
	if (t->ndim < 0 || t->ndim > ES_MAX_DIMS)
		return es_error_set(err, ES_EINVAL, "npy: tensor rank %d is invalid",
				    t->ndim);
	rc = es_shape_numel(t->dims, t->ndim, es_dtype_size(t->dtype), &numel);
	if (rc)
		return es_error_set(err, rc, "npy: tensor shape is invalid");
	if ((size_t)numel * es_dtype_size(t->dtype) != t->nbytes ||
	    (t->nbytes && !t->data))
		return es_error_set(err, ES_EINVAL,
				    "npy: tensor holds %zu bytes, its shape needs %zu",
				    t->nbytes,
				    (size_t)numel * es_dtype_size(t->dtype));

	char shape[ES_MAX_DIMS * 22 + 4];
	size_t n = 0;
	shape[n++] = '(';
	for (int i = 0; i < t->ndim; i++)
		n += (size_t)snprintf(shape + n, sizeof(shape) - n, "%s%lld",
				      i ? ", " : "", (long long)t->dims[i]);
	if (t->ndim == 1)
		shape[n++] = ',';
	shape[n++] = ')';
	shape[n] = '\0';

	/* Version 1 preamble: 10 bytes. The header grows by spaces until the
	 * data starts on a 64-byte boundary, then ends in '\n'. */
	int dict_len = snprintf(header + 10, sizeof(header) - 10,
				"{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
				descr, shape);
	size_t total = 10 + (size_t)dict_len + 1;
	size_t padded = (total + 63) / 64 * 64;
	size_t hl = padded - 10;
	memcpy(header, npy_magic, sizeof(npy_magic));
	header[6] = 1;
	header[7] = 0;
	header[8] = (char)(hl & 0xff);
	header[9] = (char)(hl >> 8);
	memset(header + 10 + dict_len, ' ', padded - total);
	header[padded - 1] = '\n';

	FILE *f = fopen(path, "wb");
	if (!f)
		return es_error_set(err, ES_EIO, "cannot create: %s",
				    strerror(errno));
	if (fwrite(header, 1, padded, f) != padded ||
	    (t->nbytes && fwrite(t->data, 1, t->nbytes, f) != t->nbytes)) {
		rc = es_error_set(err, ES_EIO, "cannot write: %s",
				  strerror(errno));
		fclose(f);
		remove(path);
		return rc;
	}
	if (fclose(f) != 0) {
		rc = es_error_set(err, ES_EIO, "cannot write: %s",
				  strerror(errno));
		remove(path);
		return rc;
	}
	return 0;
}
