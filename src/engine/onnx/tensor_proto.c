/* ONNX TensorProto <-> es_tensor, including external data files. */
#include "engine/onnx/onnx_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/status.h"

int es_onnx_read_file(const char *path, uint8_t **buf, size_t *len,
		      es_error *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return es_error_set(err, ES_EIO, "cannot open '%s': %s", path,
				    strerror(errno));
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return es_error_set(err, ES_EIO, "'%s' is not a regular file", path);
	}
	size_t size = (size_t)st.st_size;
	uint8_t *p = malloc(size ? size : 1);
	if (!p) {
		close(fd);
		return es_error_set(err, ES_ENOMEM, "cannot allocate %zu bytes to read '%s'",
				    size, path);
	}
	size_t got = 0;
	while (got < size) {
		ssize_t r = read(fd, p + got, size - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			free(p);
			close(fd);
			return es_error_set(err, ES_EIO, "cannot read '%s'", path);
		}
		got += (size_t)r;
	}
	close(fd);
	*buf = p;
	*len = size;
	return 0;
}

int es_onnx_map_file(const char *path, void **map, size_t *len, es_error *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return es_error_set(err, ES_EIO, "cannot open '%s': %s", path,
				    strerror(errno));
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return es_error_set(err, ES_EIO, "'%s' is not a regular file", path);
	}
	*len = (size_t)st.st_size;
	if (*len == 0) {
		close(fd);
		*map = NULL;
		return 0;
	}
	void *p = mmap(NULL, *len, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		return es_error_set(err, ES_EIO, "cannot map '%s': %s", path, strerror(errno));
	*map = p;
	return 0;
}

void es_onnx_unmap_file(void *map, size_t len)
{
	if (map)
		munmap(map, len);
}

/* protobuf-c allocator: big blocks (weights in raw_data) come 2 MiB aligned
 * on huge pages, so the tensor can adopt them without another copy. */
static void *pb_alloc(void *data, size_t size)
{
	(void)data;
	return size >= ES_HUGE_THRESHOLD ? es_aligned_alloc(size) : malloc(size);
}

static void pb_free(void *data, void *p)
{
	(void)data;
	free(p);
}

ProtobufCAllocator es_onnx_pb_allocator = { pb_alloc, pb_free, NULL };

/* Which typed field of TensorProto holds a dtype's values. */
enum field { F_NONE, F_FLOAT, F_INT32, F_INT64, F_DOUBLE, F_UINT64 };

static enum field typed_field(es_dtype dt)
{
	switch (dt) {
	case ES_DT_FLOAT: return F_FLOAT;
	case ES_DT_INT32: case ES_DT_INT16: case ES_DT_INT8:
	case ES_DT_UINT16: case ES_DT_UINT8: case ES_DT_BOOL:
	case ES_DT_FLOAT16: case ES_DT_BFLOAT16:
		return F_INT32;
	case ES_DT_INT64: return F_INT64;
	case ES_DT_DOUBLE: return F_DOUBLE;
	case ES_DT_UINT32: case ES_DT_UINT64: return F_UINT64;
	default: return F_NONE;
	}
}

/*
 * Resolves an external data location relative to base_dir and refuses
 * anything that escapes it: absolute paths, ".." components, and symlinks
 * whose target lies outside. *out is malloc'ed.
 */
static int resolve_external(const char *base_dir, const char *location,
			    const char *tname, char **out, es_error *err)
{
	if (!base_dir)
		return es_error_set(err, ES_EINVAL,
			"tensor '%s': external data '%s' needs a model directory",
			tname, location);
	if (location[0] == '/' || location[0] == '\\')
		return es_error_set(err, ES_EINVAL,
			"tensor '%s': external data location '%s' is absolute; it must be relative to the model directory",
			tname, location);
	const char *p = location;
	while (*p) {
		const char *slash = strpbrk(p, "/\\");
		size_t len = slash ? (size_t)(slash - p) : strlen(p);
		if (len == 2 && p[0] == '.' && p[1] == '.')
			return es_error_set(err, ES_EINVAL,
				"tensor '%s': external data location '%s' leaves the model directory",
				tname, location);
		p += len;
		if (*p)
			p++;
	}
	char base_real[PATH_MAX], file_real[PATH_MAX];
	if (!realpath(base_dir, base_real))
		return es_error_set(err, ES_EIO, "tensor '%s': model directory not accessible",
				    tname);
	size_t need = strlen(base_real) + 1 + strlen(location) + 1;
	char *joined = malloc(need);
	if (!joined)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	snprintf(joined, need, "%s/%s", base_real, location);
	if (!realpath(joined, file_real)) {
		free(joined);
		return es_error_set(err, ES_EIO,
			"tensor '%s': external data file '%s' not found", tname, location);
	}
	free(joined);
	size_t bl = strlen(base_real);
	if (strncmp(file_real, base_real, bl) != 0 || file_real[bl] != '/')
		return es_error_set(err, ES_EINVAL,
			"tensor '%s': external data file '%s' resolves outside the model directory",
			tname, location);
	*out = strdup(file_real);
	return *out ? 0 : es_error_set(err, ES_ENOMEM, "out of memory");
}

static int parse_u64(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	if (!s || !*s || *s == '-')
		return -1;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end)
		return -1;
	*out = v;
	return 0;
}

static int load_external(const Onnx__TensorProto *tp, const char *base_dir,
			 es_tensor *t, const char *tname, es_error *err)
{
	const char *location = NULL;
	uint64_t offset = 0, length = 0;
	bool has_length = false;
	for (size_t i = 0; i < tp->n_external_data; i++) {
		const Onnx__StringStringEntryProto *e = tp->external_data[i];
		if (!e->key || !e->value)
			continue;
		if (!strcmp(e->key, "location"))
			location = e->value;
		else if (!strcmp(e->key, "offset") && parse_u64(e->value, &offset))
			return es_error_set(err, ES_EPARSE,
				"tensor '%s': bad external data offset '%s'", tname, e->value);
		else if (!strcmp(e->key, "length")) {
			if (parse_u64(e->value, &length))
				return es_error_set(err, ES_EPARSE,
					"tensor '%s': bad external data length '%s'", tname, e->value);
			has_length = true;
		}
	}
	if (!location)
		return es_error_set(err, ES_EPARSE,
			"tensor '%s': external data without a location", tname);
	if (has_length && length != t->nbytes)
		return es_error_set(err, ES_EPARSE,
			"tensor '%s': external data length %llu does not match its shape (%zu bytes)",
			tname, (unsigned long long)length, t->nbytes);
	char *path;
	int rc = resolve_external(base_dir, location, tname, &path, err);
	if (rc)
		return rc;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	free(path);
	if (fd < 0)
		return es_error_set(err, ES_EIO,
			"tensor '%s': cannot open external data '%s'", tname, location);
	struct stat st;
	if (fstat(fd, &st) || (uint64_t)st.st_size < offset ||
	    (uint64_t)st.st_size - offset < t->nbytes) {
		close(fd);
		return es_error_set(err, ES_EPARSE,
			"tensor '%s': external data '%s' is shorter than offset %llu + %zu bytes",
			tname, location, (unsigned long long)offset, t->nbytes);
	}
	size_t got = 0;
	while (got < t->nbytes) {
		ssize_t r = pread(fd, (char *)t->data + got, t->nbytes - got,
				  (off_t)(offset + got));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			close(fd);
			return es_error_set(err, ES_EIO,
				"tensor '%s': cannot read external data '%s'", tname, location);
		}
		got += (size_t)r;
	}
	close(fd);
	return 0;
}

int es_onnx_tensor_from_proto(Onnx__TensorProto *tp, const char *base_dir,
			      es_tensor *t, es_error *err)
{
	const char *tname = tp->name && *tp->name ? tp->name : "(unnamed)";
	es_dtype dt = (es_dtype)(tp->has_data_type ? tp->data_type : 0);
	size_t esz = es_dtype_size(dt);
	int rc = 0;

	memset(t, 0, sizeof(*t));
	if (!esz)
		return es_error_set(err, ES_EUNSUPPORTED,
			"tensor '%s': data type %d (%s) is not supported", tname,
			(int)dt, es_dtype_name(dt));
	if (tp->n_dims > ES_MAX_DIMS)
		return es_error_set(err, ES_EUNSUPPORTED,
			"tensor '%s': %zu dimensions, at most %d supported", tname,
			tp->n_dims, ES_MAX_DIMS);
	if (tp->segment)
		return es_error_set(err, ES_EUNSUPPORTED,
			"tensor '%s': segmented tensors are not supported", tname);
	int64_t numel;
	if (es_shape_numel(tp->dims, (int)tp->n_dims, esz, &numel))
		return es_error_set(err, ES_ERANGE,
			"tensor '%s': dimensions are negative or their product overflows",
			tname);
	t->dtype = dt;
	t->ndim = (int)tp->n_dims;
	for (size_t d = 0; d < tp->n_dims; d++)
		t->dims[d] = tp->dims[d];
	t->nbytes = (size_t)numel * esz;
	bool external = tp->has_data_location &&
		tp->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
	if (!external && tp->has_raw_data && tp->raw_data.len == t->nbytes &&
	    t->nbytes >= ES_HUGE_THRESHOLD &&
	    ((uintptr_t)tp->raw_data.data % ES_ALIGN) == 0) {
		/* adopt the decoder's buffer (see pb_alloc) */
		t->data = tp->raw_data.data;
		tp->raw_data.data = NULL;
		tp->raw_data.len = 0;
		return 0;
	}
	/* every byte is written below: no need to zero */
	t->data = es_aligned_alloc(t->nbytes);
	if (!t->data)
		return es_error_set(err, ES_ENOMEM,
			"tensor '%s': cannot allocate %zu bytes", tname, t->nbytes);

	if (external) {
		rc = load_external(tp, base_dir, t, tname, err);
		goto done;
	}
	if (tp->has_raw_data) {
		if (tp->raw_data.len != t->nbytes) {
			rc = es_error_set(err, ES_EPARSE,
				"tensor '%s': raw_data has %zu bytes, shape and type need %zu",
				tname, tp->raw_data.len, t->nbytes);
			goto done;
		}
		if (t->nbytes)
			memcpy(t->data, tp->raw_data.data, t->nbytes);
		goto done;
	}

	size_t n = (size_t)numel;
	size_t have;
	switch (typed_field(dt)) {
	case F_FLOAT: have = tp->n_float_data; break;
	case F_INT32: have = tp->n_int32_data; break;
	case F_INT64: have = tp->n_int64_data; break;
	case F_DOUBLE: have = tp->n_double_data; break;
	case F_UINT64: have = tp->n_uint64_data; break;
	default: have = 0; break;
	}
	if (have != n) {
		rc = es_error_set(err, ES_EPARSE,
			"tensor '%s': holds %zu values, its shape needs %zu", tname,
			have, n);
		goto done;
	}
	for (size_t i = 0; i < n; i++) {
		void *d = (char *)t->data + i * esz;
		switch (dt) {
		case ES_DT_FLOAT: ((float *)d)[0] = tp->float_data[i]; break;
		case ES_DT_DOUBLE: ((double *)d)[0] = tp->double_data[i]; break;
		case ES_DT_INT64: ((int64_t *)d)[0] = tp->int64_data[i]; break;
		case ES_DT_INT32: ((int32_t *)d)[0] = tp->int32_data[i]; break;
		case ES_DT_INT16: ((int16_t *)d)[0] = (int16_t)tp->int32_data[i]; break;
		case ES_DT_INT8: ((int8_t *)d)[0] = (int8_t)tp->int32_data[i]; break;
		case ES_DT_UINT16: case ES_DT_FLOAT16: case ES_DT_BFLOAT16:
			((uint16_t *)d)[0] = (uint16_t)tp->int32_data[i]; break;
		case ES_DT_UINT8: ((uint8_t *)d)[0] = (uint8_t)tp->int32_data[i]; break;
		case ES_DT_BOOL: ((uint8_t *)d)[0] = tp->int32_data[i] != 0; break;
		case ES_DT_UINT32: ((uint32_t *)d)[0] = (uint32_t)tp->uint64_data[i]; break;
		case ES_DT_UINT64: ((uint64_t *)d)[0] = tp->uint64_data[i]; break;
		default: break;
		}
	}
	rc = 0;
done:
	if (rc)
		es_tensor_free_data(t);
	return rc;
}

int es_tensor_parse_pb(const void *buf, size_t len, es_tensor *t,
		       char **name_out, es_error *err)
{
	Onnx__TensorProto *tp = onnx__tensor_proto__unpack(&es_onnx_pb_allocator, len, buf);
	if (!tp)
		return es_error_set(err, ES_EPARSE, "not a valid ONNX TensorProto");
	int rc = es_onnx_tensor_from_proto(tp, NULL, t, err);
	if (!rc && name_out) {
		*name_out = strdup(tp->name ? tp->name : "");
		if (!*name_out) {
			es_tensor_free_data(t);
			rc = es_error_set(err, ES_ENOMEM, "out of memory");
		}
	}
	onnx__tensor_proto__free_unpacked(tp, &es_onnx_pb_allocator);
	return rc;
}

int es_tensor_read_pb(const char *path, es_tensor *t, char **name_out,
		      es_error *err)
{
	uint8_t *buf;
	size_t len;
	int rc = es_onnx_read_file(path, &buf, &len, err);
	if (rc)
		return rc;
	rc = es_tensor_parse_pb(buf, len, t, name_out, err);
	free(buf);
	if (rc)
		es_error_prefix(err, "%s", path);
	return rc;
}

int es_tensor_write_pb(const char *path, const es_tensor *t, const char *name,
		       es_error *err)
{
	Onnx__TensorProto tp = ONNX__TENSOR_PROTO__INIT;
	int64_t dims[ES_MAX_DIMS];
	if (t->ndim < 0 || t->ndim > ES_MAX_DIMS || !es_dtype_size(t->dtype))
		return es_error_set(err, ES_EINVAL, "cannot write tensor '%s': bad type or rank",
				    name ? name : "");
	for (int i = 0; i < t->ndim; i++)
		dims[i] = t->dims[i];
	tp.n_dims = (size_t)t->ndim;
	tp.dims = dims;
	tp.has_data_type = 1;
	tp.data_type = (int32_t)t->dtype;
	tp.name = (char *)(name ? name : "");
	tp.has_raw_data = 1;
	tp.raw_data.len = t->nbytes;
	tp.raw_data.data = t->data;

	size_t len = onnx__tensor_proto__get_packed_size(&tp);
	uint8_t *buf = malloc(len ? len : 1);
	if (!buf)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	onnx__tensor_proto__pack(&tp, buf);
	char tmp[PATH_MAX];
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
		free(buf);
		return es_error_set(err, ES_EINVAL, "path too long: '%s'", path);
	}
	FILE *f = fopen(tmp, "wb");
	if (!f) {
		free(buf);
		return es_error_set(err, ES_EIO, "cannot create '%s': %s", path, strerror(errno));
	}
	size_t wrote = fwrite(buf, 1, len, f);
	free(buf);
	if (fclose(f) != 0 || wrote != len || rename(tmp, path) != 0) {
		unlink(tmp);
		return es_error_set(err, ES_EIO, "cannot write '%s'", path);
	}
	return 0;
}
