/* Pre-flight validation cases and warmup (src/serving/preflight.c). Models
 * are built here with the ONNX protobuf bindings (Identity graphs of any
 * signature) or taken from tests/data/serving/repo; case files are written
 * at test time with es_tensor_write_pb. */
#define _GNU_SOURCE /* nftw, mkdtemp */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "onnx/onnx.pb-c.h"
#include "serving/preflight.h"

#define REPO ES_TEST_DATA_DIR "/serving/repo"

/* ---- files ------------------------------------------------------------------------ */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void rm_rf(const char *path)
{
	nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void path_of(char *out, const char *dir, const char *rel)
{
	int n = snprintf(out, PATH_MAX, "%s/%s", dir, rel);
	assert_true(n > 0 && n < PATH_MAX);
}

/* mkdir -p dir/rel */
static void make_dirs(const char *dir, const char *rel)
{
	char path[PATH_MAX];
	path_of(path, dir, rel);
	for (char *p = path + strlen(dir) + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		assert_true(mkdir(path, 0755) == 0 || errno == EEXIST);
		*p = '/';
	}
	assert_true(mkdir(path, 0755) == 0 || errno == EEXIST);
}

static void write_bytes(const char *dir, const char *rel, const void *data, size_t len)
{
	char path[PATH_MAX];
	path_of(path, dir, rel);
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static void write_text(const char *dir, const char *rel, const char *text)
{
	write_bytes(dir, rel, text, strlen(text));
}

/* Writes a TensorProto (name may be "" for none) to dir/rel. */
static void write_pb(const char *dir, const char *rel, const char *name, es_dtype dt,
		     int ndim, const int64_t *dims, const void *data)
{
	es_tensor t = { .dtype = dt, .ndim = ndim, .data = (void *)data };
	size_t n = 1;
	for (int d = 0; d < ndim; d++) {
		t.dims[d] = dims[d];
		n *= (size_t)dims[d];
	}
	t.nbytes = n * es_dtype_size(dt);
	char path[PATH_MAX];
	path_of(path, dir, rel);
	es_error err = { 0 };
	if (es_tensor_write_pb(path, &t, name, &err))
		fail_msg("es_tensor_write_pb %s: %s", rel, err.msg);
}

static void write_f32(const char *dir, const char *rel, const char *name, int ndim,
		      const int64_t *dims, const float *v)
{
	write_pb(dir, rel, name, ES_DT_FLOAT, ndim, dims, v);
}

/* A fresh empty version directory; the caller removes it with rm_rf. */
static void new_vdir(char out[PATH_MAX])
{
	strcpy(out, "/tmp/es_preflight_XXXXXX");
	assert_non_null(mkdtemp(out));
}

/* ---- models -------------------------------------------------------------------- */

typedef struct io_spec {
	const char *in;  /* input name */
	const char *out; /* output name: out = Identity(in) */
	es_dtype dtype;
	int ndim;        /* -1: rank unknown */
	int64_t dims[4]; /* -1: symbolic "batch" */
} io_spec;

/* A model of Identity nodes, one per spec; the caller releases it. */
static es_model *identity_model(const io_spec *spec, size_t n)
{
	Onnx__ValueInfoProto vi[8], *vip_in[4], *vip_out[4];
	Onnx__TypeProto tp[8];
	Onnx__TypeProto__Tensor tt[8];
	Onnx__TensorShapeProto shp[8];
	Onnx__TensorShapeProto__Dimension dim[8][4], *dimp[8][4];
	Onnx__NodeProto node[4], *nodep[4];
	char *node_in[4], *node_out[4];
	assert_true(n <= 4);
	for (size_t i = 0; i < 2 * n; i++) {
		const io_spec *s = &spec[i % n];
		bool is_in = i < n;
		onnx__value_info_proto__init(&vi[i]);
		onnx__type_proto__init(&tp[i]);
		onnx__type_proto__tensor__init(&tt[i]);
		vi[i].name = (char *)(is_in ? s->in : s->out);
		vi[i].type = &tp[i];
		tp[i].value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
		tp[i].tensor_type = &tt[i];
		tt[i].has_elem_type = 1;
		tt[i].elem_type = (int32_t)s->dtype;
		if (s->ndim >= 0) {
			onnx__tensor_shape_proto__init(&shp[i]);
			tt[i].shape = &shp[i];
			shp[i].n_dim = (size_t)s->ndim;
			shp[i].dim = dimp[i];
			for (int d = 0; d < s->ndim; d++) {
				onnx__tensor_shape_proto__dimension__init(&dim[i][d]);
				dimp[i][d] = &dim[i][d];
				if (s->dims[d] < 0) {
					dim[i][d].value_case =
						ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
					dim[i][d].dim_param = "batch";
				} else {
					dim[i][d].value_case =
						ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
					dim[i][d].dim_value = s->dims[d];
				}
			}
		}
		if (is_in)
			vip_in[i] = &vi[i];
		else
			vip_out[i - n] = &vi[i];
	}
	for (size_t i = 0; i < n; i++) {
		onnx__node_proto__init(&node[i]);
		nodep[i] = &node[i];
		node_in[i] = (char *)spec[i].in;
		node_out[i] = (char *)spec[i].out;
		node[i].op_type = "Identity";
		node[i].n_input = 1;
		node[i].input = &node_in[i];
		node[i].n_output = 1;
		node[i].output = &node_out[i];
	}
	Onnx__GraphProto g;
	onnx__graph_proto__init(&g);
	g.name = "identity";
	g.n_node = n;
	g.node = nodep;
	g.n_input = n;
	g.input = vip_in;
	g.n_output = n;
	g.output = vip_out;
	Onnx__OperatorSetIdProto opset, *opsetp = &opset;
	onnx__operator_set_id_proto__init(&opset);
	opset.domain = "";
	opset.has_version = 1;
	opset.version = 13;
	Onnx__ModelProto m;
	onnx__model_proto__init(&m);
	m.has_ir_version = 1;
	m.ir_version = 8;
	m.n_opset_import = 1;
	m.opset_import = &opsetp;
	m.graph = &g;
	size_t len = onnx__model_proto__get_packed_size(&m);
	uint8_t *buf = malloc(len);
	assert_non_null(buf);
	onnx__model_proto__pack(&m, buf);
	es_model *model = NULL;
	es_error err = { 0 };
	if (es_model_load_buffer(buf, len, NULL, NULL, &model, &err))
		fail_msg("identity model: %s", err.msg);
	free(buf);
	return model;
}

static es_model *repo_model(const char *rel)
{
	char path[PATH_MAX];
	path_of(path, REPO, rel);
	es_model *m = NULL;
	es_error err = { 0 };
	if (es_model_load(path, NULL, &m, &err))
		fail_msg("load %s: %s", rel, err.msg);
	return m;
}

/* A model, a session on it and a version directory. */
typedef struct fixture {
	es_model *model;
	es_session *session;
	char vdir[PATH_MAX];
	size_t n_cases;
	es_error err;
} fixture;

static void fx_init(fixture *fx, es_model *m)
{
	memset(fx, 0, sizeof(*fx));
	fx->model = m;
	es_session_options opt = { .threads = 1 };
	if (es_session_create(m, &opt, &fx->session, &fx->err))
		fail_msg("session: %s", fx->err.msg);
	new_vdir(fx->vdir);
}

static void fx_free(fixture *fx)
{
	es_session_destroy(fx->session);
	es_model_release(fx->model);
	rm_rf(fx->vdir);
}

static int validate(fixture *fx)
{
	memset(&fx->err, 0, sizeof(fx->err));
	fx->n_cases = 99;
	return es_preflight_validate(fx->model, fx->session, fx->vdir, &fx->n_cases, &fx->err);
}

static void expect_ok(fixture *fx, size_t n_cases)
{
	int rc = validate(fx);
	if (rc)
		fail_msg("expected success, got %d: %s", rc, fx->err.msg);
	assert_int_equal(fx->n_cases, n_cases);
}

/* Fails unless validation fails with code and a message holding every
 * given part (NULL-terminated) and never the absolute directory. */
static void expect_fail(fixture *fx, int code, ...)
{
	int rc = validate(fx);
	if (rc != code)
		fail_msg("expected %d, got %d: %s", code, rc, fx->err.msg);
	assert_int_equal(fx->err.code, code);
	va_list ap;
	va_start(ap, code);
	for (const char *part; (part = va_arg(ap, const char *));)
		if (!strstr(fx->err.msg, part))
			fail_msg("message lacks \"%s\": %s", part, fx->err.msg);
	va_end(ap);
	if (strstr(fx->err.msg, fx->vdir) || strstr(fx->err.msg, "/tmp/"))
		fail_msg("message names an absolute path: %s", fx->err.msg);
}

static const io_spec prob_spec = { "x", "prob", ES_DT_FLOAT, 2, { 1, 4 } };
static const int64_t dims_1x4[] = { 1, 4 };

/* ---- validation ---------------------------------------------------------------- */

static void test_no_validation_dir(void **state)
{
	fixture fx;
	fx_init(&fx, identity_model(&prob_spec, 1));
	expect_ok(&fx, 0);
	/* a validation that is not a directory is a mistake */
	write_text(fx.vdir, "validation", "not a directory");
	expect_fail(&fx, ES_EINVAL, "'validation' is not a directory", NULL);
	fx_free(&fx);
}

static void test_empty_validation_dir(void **state)
{
	fixture fx;
	fx_init(&fx, identity_model(&prob_spec, 1));
	make_dirs(fx.vdir, "validation");
	write_text(fx.vdir, "validation/README", "cases go here\n");
	expect_fail(&fx, ES_EINVAL, "'validation' holds no validation case", NULL);
	fx_free(&fx);
}

/* The repository's "fixed" model: a [2,3] float, b [3] int64 -> y = a + 1,
 * c = b. Inputs and outputs bound by order (unnamed tensors). */
static void write_fixed_case(const char *vdir, const char *dir, const char *in_a_name,
			     const char *in_b_name, float y_delta, int64_t c_delta)
{
	static const int64_t da[] = { 2, 3 }, db[] = { 3 };
	const float a[6] = { 0.5f, -1, 2, 3.25f, 100, -0.125f };
	const int64_t b[3] = { 7, -9, 1ll << 40 };
	float y[6];
	int64_t c[3];
	for (int i = 0; i < 6; i++)
		y[i] = a[i] + 1 + y_delta;
	for (int i = 0; i < 3; i++)
		c[i] = b[i] + c_delta;
	char rel[256];
	make_dirs(vdir, dir);
	snprintf(rel, sizeof(rel), "%s/input_0.pb", dir);
	write_f32(vdir, rel, in_a_name, 2, da, a);
	snprintf(rel, sizeof(rel), "%s/input_1.pb", dir);
	write_pb(vdir, rel, in_b_name, ES_DT_INT64, 1, db, b);
	snprintf(rel, sizeof(rel), "%s/output_0.pb", dir);
	write_f32(vdir, rel, "", 2, da, y);
	snprintf(rel, sizeof(rel), "%s/output_1.pb", dir);
	write_pb(vdir, rel, "", ES_DT_INT64, 1, db, c);
}

static void test_passing_single_case(void **state)
{
	fixture fx;
	fx_init(&fx, repo_model("fixed/1/model.onnx"));
	/* within the default tolerance (1e-4 + 1e-4 * |y|) */
	write_fixed_case(fx.vdir, "validation", "", "", 5e-5f, 0);
	expect_ok(&fx, 1);
	fx_free(&fx);
}

static void test_passing_several_cases(void **state)
{
	fixture fx;
	fx_init(&fx, repo_model("fixed/1/model.onnx"));
	write_fixed_case(fx.vdir, "validation/test_data_set_0", "", "", 0, 0);
	write_fixed_case(fx.vdir, "validation/test_data_set_1", "", "", 0, 0);
	write_text(fx.vdir, "validation/README.md", "ignored\n");
	make_dirs(fx.vdir, "validation/.hidden"); /* ignored */
	expect_ok(&fx, 2);
	/* the second case fails: cases run in name order, all of them */
	write_fixed_case(fx.vdir, "validation/test_data_set_1", "", "", 0, 1);
	expect_fail(&fx, ES_EINVAL, "validation case 'test_data_set_1': output 'c' element 0 (of 3)",
		    "is 7 but expected 8", "int64 outputs must match exactly", "3 of 3 elements differ",
		    NULL);
	fx_free(&fx);
}

static void test_failing_output_message(void **state)
{
	fixture fx;
	fx_init(&fx, identity_model(&prob_spec, 1));
	float x[4] = { 0.25f, 0.125f, 0.5312f, 0 };
	float want[4] = { 0.25f, 0.125f, 0.5101f, 0 };
	make_dirs(fx.vdir, "validation/test_data_set_0");
	write_f32(fx.vdir, "validation/test_data_set_0/input_0.pb", "x", 2, dims_1x4, x);
	write_f32(fx.vdir, "validation/test_data_set_0/output_0.pb", "prob", 2, dims_1x4, want);
	expect_fail(&fx, ES_EINVAL,
		    "validation case 'test_data_set_0': output 'prob' element 2 (of 4) is 0.5312 "
		    "but expected 0.5101 (error 0.0211, tolerance 0.000151)", NULL);
	/* exactly one element is off: no count appended */
	assert_null(strstr(fx.err.msg, "elements differ"));
	fx_free(&fx);
}

static void test_nan_and_inf(void **state)
{
	fixture fx;
	fx_init(&fx, identity_model(&prob_spec, 1));
	make_dirs(fx.vdir, "validation");
	float x[4] = { NAN, INFINITY, -INFINITY, 1 };
	write_f32(fx.vdir, "validation/input_0.pb", "", 2, dims_1x4, x);
	/* NaN matches NaN (any payload), infinities match themselves */
	float want_ok[4] = { -NAN, INFINITY, -INFINITY, 1 };
	write_f32(fx.vdir, "validation/output_0.pb", "", 2, dims_1x4, want_ok);
	expect_ok(&fx, 1);
	/* a number where NaN is expected */
	float want_nan[4] = { NAN, INFINITY, -INFINITY, NAN };
	write_f32(fx.vdir, "validation/output_0.pb", "", 2, dims_1x4, want_nan);
	expect_fail(&fx, ES_EINVAL, "element 3 (of 4) is 1 but expected nan", NULL);
	/* NaN where a number is expected */
	float want_num[4] = { 0, INFINITY, -INFINITY, 1 };
	write_f32(fx.vdir, "validation/output_0.pb", "", 2, dims_1x4, want_num);
	expect_fail(&fx, ES_EINVAL, "element 0 (of 4) is nan but expected 0", NULL);
	/* an infinity is never "close" to a large number */
	float want_big[4] = { NAN, 3e38f, -INFINITY, 1 };
	write_f32(fx.vdir, "validation/output_0.pb", "", 2, dims_1x4, want_big);
	write_text(fx.vdir, "validation/tolerance.json", "{\"atol\": 1e30, \"rtol\": 1}");
	expect_fail(&fx, ES_EINVAL, "element 1 (of 4) is inf but expected 3e+38", NULL);
	fx_free(&fx);
}

static void test_integer_exact(void **state)
{
	static const io_spec spec[] = {
		{ "i", "o", ES_DT_INT64, 1, { 3 } },
		{ "u", "v", ES_DT_UINT8, 1, { 3 } },
		{ "p", "q", ES_DT_BOOL, 1, { 3 } },
	};
	static const int64_t d3[] = { 3 };
	fixture fx;
	fx_init(&fx, identity_model(spec, 3));
	make_dirs(fx.vdir, "validation");
	int64_t i[3] = { INT64_MIN, 5, INT64_MAX };
	uint8_t u[3] = { 0, 255, 7 }, p[3] = { 1, 0, 1 };
	write_pb(fx.vdir, "validation/input_0.pb", "", ES_DT_INT64, 1, d3, i);
	write_pb(fx.vdir, "validation/input_1.pb", "", ES_DT_UINT8, 1, d3, u);
	write_pb(fx.vdir, "validation/input_2.pb", "", ES_DT_BOOL, 1, d3, p);
	write_pb(fx.vdir, "validation/output_0.pb", "", ES_DT_INT64, 1, d3, i);
	write_pb(fx.vdir, "validation/output_1.pb", "", ES_DT_UINT8, 1, d3, u);
	write_pb(fx.vdir, "validation/output_2.pb", "", ES_DT_BOOL, 1, d3, p);
	expect_ok(&fx, 1);
	/* a tolerance does not apply to integers */
	write_text(fx.vdir, "validation/tolerance.json", "{\"atol\": 100, \"rtol\": 1}");
	int64_t i_off[3] = { INT64_MIN, 6, INT64_MAX };
	write_pb(fx.vdir, "validation/output_0.pb", "", ES_DT_INT64, 1, d3, i_off);
	expect_fail(&fx, ES_EINVAL, "output 'o' element 1 (of 3) is 5 but expected 6",
		    "int64 outputs must match exactly", NULL);
	write_pb(fx.vdir, "validation/output_0.pb", "", ES_DT_INT64, 1, d3, i);
	uint8_t u_off[3] = { 0, 254, 7 };
	write_pb(fx.vdir, "validation/output_1.pb", "", ES_DT_UINT8, 1, d3, u_off);
	expect_fail(&fx, ES_EINVAL, "output 'v' element 1 (of 3) is 255 but expected 254", NULL);
	write_pb(fx.vdir, "validation/output_1.pb", "", ES_DT_UINT8, 1, d3, u);
	uint8_t p_off[3] = { 1, 1, 1 };
	write_pb(fx.vdir, "validation/output_2.pb", "", ES_DT_BOOL, 1, d3, p_off);
	expect_fail(&fx, ES_EINVAL, "output 'q' element 1 (of 3) is 0 but expected 1",
		    "bool outputs must match exactly", NULL);
	fx_free(&fx);
}

static void test_dtype_and_shape_mismatch(void **state)
{
	fixture fx;
	fx_init(&fx, repo_model("fixed/1/model.onnx"));
	write_fixed_case(fx.vdir, "validation", "", "", 0, 0);
	static const int64_t d23[] = { 2, 3 }, d32[] = { 3, 2 };
	const int32_t y_i32[6] = { 0 };
	write_pb(fx.vdir, "validation/output_0.pb", "", ES_DT_INT32, 2, d23, y_i32);
	expect_fail(&fx, ES_EINVAL,
		    "validation case 'validation': output 'y' is float [2,3] but "
		    "'validation/output_0.pb' expects int32 [2,3]", NULL);
	const float y_t[6] = { 0 };
	write_f32(fx.vdir, "validation/output_0.pb", "", 2, d32, y_t);
	expect_fail(&fx, ES_EINVAL,
		    "output 'y' has shape [2,3] but 'validation/output_0.pb' expects [3,2]", NULL);
	fx_free(&fx);
}

static void test_tolerance_file(void **state)
{
	fixture fx;
	fx_init(&fx, identity_model(&prob_spec, 1));
	make_dirs(fx.vdir, "validation");
	float x[4] = { 1, 2, 3, 4 };
	float want[4] = { 1, 2, 3.01f, 4 }; /* 0.01 off */
	write_f32(fx.vdir, "validation/input_0.pb", "", 2, dims_1x4, x);
	write_f32(fx.vdir, "validation/output_0.pb", "", 2, dims_1x4, want);
	expect_fail(&fx, ES_EINVAL, "element 2 (of 4) is 3 but expected 3.01", NULL);

	/* global atol, global rtol (0.01 / 3.01 < 0.004), per-output override */
	write_text(fx.vdir, "validation/tolerance.json", "{\"atol\": 0.02}");
	expect_ok(&fx, 1);
	write_text(fx.vdir, "validation/tolerance.json", "{\"atol\": 0, \"rtol\": 0.004}");
	expect_ok(&fx, 1);
	write_text(fx.vdir, "validation/tolerance.json",
		   "{\"atol\": 0, \"rtol\": 0, \"outputs\": {\"prob\": {\"atol\": 0.011}}}");
	expect_ok(&fx, 1);
	/* an override keeps the global value of the key it does not give */
	write_text(fx.vdir, "validation/tolerance.json",
		   "{\"rtol\": 0.004, \"outputs\": {\"prob\": {\"atol\": 0}}}");
	expect_ok(&fx, 1);
	write_text(fx.vdir, "validation/tolerance.json",
		   "{\"atol\": 1, \"outputs\": {\"prob\": {\"atol\": 0.001, \"rtol\": 0}}}");
	expect_fail(&fx, ES_EINVAL, "tolerance 0.001", NULL);

	/* malformed files, each named by its relative path */
	write_text(fx.vdir, "validation/tolerance.json", "{\"atol\": 1e-4,");
	expect_fail(&fx, ES_EPARSE, "'validation/tolerance.json' is not valid JSON", NULL);
	write_text(fx.vdir, "validation/tolerance.json", "[1, 2]");
	expect_fail(&fx, ES_EINVAL, "'validation/tolerance.json'", "must be a JSON object", NULL);
	write_text(fx.vdir, "validation/tolerance.json", "{\"atol\": 1e-4, \"atoll\": 1}");
	expect_fail(&fx, ES_EINVAL, "'validation/tolerance.json': unknown key 'atoll'", NULL);
	write_text(fx.vdir, "validation/tolerance.json", "{\"outputs\": {\"prob\": {\"tol\": 1}}}");
	expect_fail(&fx, ES_EINVAL, "unknown key 'tol' in outputs.'prob'", NULL);
	write_text(fx.vdir, "validation/tolerance.json", "{\"outputs\": {\"logits\": {}}}");
	expect_fail(&fx, ES_EINVAL, "'outputs' names 'logits', which is not an output", NULL);
	write_text(fx.vdir, "validation/tolerance.json", "{\"atol\": -1}");
	expect_fail(&fx, ES_EINVAL, "'atol' in the top level must be a finite number >= 0", NULL);
	write_text(fx.vdir, "validation/tolerance.json", "{\"rtol\": \"0.1\"}");
	expect_fail(&fx, ES_EINVAL, "'rtol' in the top level must be a number", NULL);
	write_text(fx.vdir, "validation/tolerance.json", "{\"atol\": 1, \"atol\": 2}");
	expect_fail(&fx, ES_EINVAL, "key 'atol' appears twice", NULL);
	write_text(fx.vdir, "validation/tolerance.json", "{\"outputs\": []}");
	expect_fail(&fx, ES_EINVAL, "'outputs' must be an object", NULL);
	write_bytes(fx.vdir, "validation/tolerance.json", "{\"a\0tol\": 1}", 11);
	expect_fail(&fx, ES_EPARSE, "not valid JSON", NULL);
	fx_free(&fx);
}

static void test_binding_by_name_and_order(void **state)
{
	fixture fx;
	fx_init(&fx, repo_model("fixed/1/model.onnx"));
	/* by order */
	write_fixed_case(fx.vdir, "validation/by_order", "", "", 0, 0);
	/* by name: input_0.pb holds "b" and input_1.pb "a" */
	static const int64_t da[] = { 2, 3 }, db[] = { 3 };
	const float a[6] = { 1, 2, 3, 4, 5, 6 }, y[6] = { 2, 3, 4, 5, 6, 7 };
	const int64_t b[3] = { 1, 2, 3 };
	make_dirs(fx.vdir, "validation/by_name");
	write_pb(fx.vdir, "validation/by_name/input_0.pb", "b", ES_DT_INT64, 1, db, b);
	write_f32(fx.vdir, "validation/by_name/input_1.pb", "a", 2, da, a);
	write_pb(fx.vdir, "validation/by_name/output_0.pb", "c", ES_DT_INT64, 1, db, b);
	write_f32(fx.vdir, "validation/by_name/output_1.pb", "y", 2, da, y);
	/* a name that is not the model's falls back to the index */
	make_dirs(fx.vdir, "validation/other_names");
	write_f32(fx.vdir, "validation/other_names/input_0.pb", "a:0", 2, da, a);
	write_pb(fx.vdir, "validation/other_names/input_1.pb", "b:0", ES_DT_INT64, 1, db, b);
	write_f32(fx.vdir, "validation/other_names/output_0.pb", "Identity:0", 2, da, y);
	expect_ok(&fx, 3);
	/* two files for one input */
	write_f32(fx.vdir, "validation/other_names/input_1.pb", "a", 2, da, a);
	expect_fail(&fx, ES_EINVAL,
		    "'validation/other_names/input_0.pb' and 'validation/other_names/input_1.pb' "
		    "both give input 'a'", NULL);
	fx_free(&fx);
}

static void test_subset_of_outputs(void **state)
{
	fixture fx;
	fx_init(&fx, repo_model("fixed/1/model.onnx"));
	write_fixed_case(fx.vdir, "validation", "", "", 0, 0);
	char path[PATH_MAX];
	path_of(path, fx.vdir, "validation/output_0.pb");
	assert_int_equal(unlink(path), 0);
	expect_ok(&fx, 1); /* only 'c' checked */
	/* and a wrong 'y' no longer matters: there is none */
	path_of(path, fx.vdir, "validation/output_1.pb");
	assert_int_equal(unlink(path), 0);
	expect_fail(&fx, ES_EINVAL, "validation case 'validation' has no output_<k>.pb in 'validation'",
		    NULL);
	fx_free(&fx);
}

static void test_missing_and_misnamed_files(void **state)
{
	fixture fx;
	fx_init(&fx, repo_model("fixed/1/model.onnx"));
	write_fixed_case(fx.vdir, "validation/test_data_set_0", "", "", 0, 0);
	char path[PATH_MAX];
	path_of(path, fx.vdir, "validation/test_data_set_0/input_1.pb");
	assert_int_equal(unlink(path), 0);
	expect_fail(&fx, ES_EINVAL,
		    "validation case 'test_data_set_0': no file gives input 'b' (expected "
		    "'validation/test_data_set_0/input_1.pb', or a file whose tensor is named 'b')",
		    NULL);
	/* an index the model does not have */
	static const int64_t db[] = { 3 };
	const int64_t b[3] = { 7, -9, 1ll << 40 };
	write_pb(fx.vdir, "validation/test_data_set_0/input_2.pb", "", ES_DT_INT64, 1, db, b);
	expect_fail(&fx, ES_EINVAL, "'validation/test_data_set_0/input_2.pb': the model has 2 inputs",
		    NULL);
	path_of(path, fx.vdir, "validation/test_data_set_0/input_2.pb");
	assert_int_equal(unlink(path), 0);
	write_pb(fx.vdir, "validation/test_data_set_0/input_1.pb", "", ES_DT_INT64, 1, db, b);
	expect_ok(&fx, 1);
	/* misnamed case files */
	const char *bad[] = { "input_01.pb", "input_x.pb", "output_1.npy", "input_.pb",
			      "output_99999999.pb" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char rel[128], want[512];
		snprintf(rel, sizeof(rel), "validation/test_data_set_0/%s", bad[i]);
		write_text(fx.vdir, rel, "x");
		snprintf(want, sizeof(want), "'%s': a case file must be named input_<k>.pb", rel);
		expect_fail(&fx, ES_EINVAL, want, NULL);
		path_of(path, fx.vdir, rel);
		assert_int_equal(unlink(path), 0);
	}
	/* a case directory without case files */
	make_dirs(fx.vdir, "validation/notes");
	write_text(fx.vdir, "validation/notes/README", "x");
	expect_fail(&fx, ES_EINVAL, "'validation/notes' holds no input_<k>.pb or output_<k>.pb", NULL);
	fx_free(&fx);
}

static void test_malformed_pb(void **state)
{
	fixture fx;
	fx_init(&fx, identity_model(&prob_spec, 1));
	make_dirs(fx.vdir, "validation/case");
	float x[4] = { 1, 2, 3, 4 };
	write_f32(fx.vdir, "validation/case/input_0.pb", "", 2, dims_1x4, x);
	write_text(fx.vdir, "validation/case/output_0.pb", "this is not a TensorProto at all");
	expect_fail(&fx, ES_EPARSE, "'validation/case/output_0.pb'", NULL);
	/* a directory where a file should be */
	char path[PATH_MAX];
	path_of(path, fx.vdir, "validation/case/output_0.pb");
	assert_int_equal(unlink(path), 0);
	make_dirs(fx.vdir, "validation/case/output_0.pb");
	expect_fail(&fx, ES_EIO, "'validation/case/output_0.pb' is not a regular file", NULL);
	rm_rf(path);
	/* over the size limit (a sparse file: nothing is written) */
	path_of(path, fx.vdir, "validation/case/output_0.pb");
	int fd = open(path, O_CREAT | O_WRONLY, 0644);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)ES_PREFLIGHT_MAX_FILE_BYTES + 1), 0);
	close(fd);
	expect_fail(&fx, ES_ETOOLARGE, "'validation/case/output_0.pb' is 1073741825 bytes", NULL);
	assert_int_equal(unlink(path), 0);

	/* random bytes and truncations of a valid file never crash */
	write_f32(fx.vdir, "validation/case/output_0.pb", "prob", 2, dims_1x4, x);
	uint8_t good[256];
	path_of(path, fx.vdir, "validation/case/output_0.pb");
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	size_t good_len = fread(good, 1, sizeof(good), f);
	fclose(f);
	expect_ok(&fx, 1);
	srand(1234);
	for (int round = 0; round < 300; round++) {
		uint8_t buf[256];
		size_t len = good_len;
		memcpy(buf, good, len);
		if (round < (int)good_len) {
			len = (size_t)round; /* every truncation */
		} else {
			for (int k = 0; k < 1 + round % 8; k++)
				buf[(size_t)rand() % len] = (uint8_t)rand();
		}
		write_bytes(fx.vdir, "validation/case/output_0.pb", buf, len);
		int rc = validate(&fx);
		assert_true(rc == 0 || rc == ES_EPARSE || rc == ES_EINVAL ||
			    rc == ES_EUNSUPPORTED || rc == ES_ERANGE);
		assert_null(strstr(fx.err.msg, "/tmp/"));
	}
	fx_free(&fx);
}

static void test_link_outside_refused(void **state)
{
	fixture fx;
	fx_init(&fx, identity_model(&prob_spec, 1));
	char outside[PATH_MAX];
	new_vdir(outside);
	float x[4] = { 1, 2, 3, 4 };
	write_f32(outside, "secret.pb", "", 2, dims_1x4, x);
	make_dirs(fx.vdir, "validation");
	write_f32(fx.vdir, "validation/input_0.pb", "", 2, dims_1x4, x);
	char target[PATH_MAX], link_path[PATH_MAX];
	path_of(target, outside, "secret.pb");
	path_of(link_path, fx.vdir, "validation/output_0.pb");
	assert_int_equal(symlink(target, link_path), 0);
	expect_fail(&fx, ES_EINVAL,
		    "'validation/output_0.pb' is a link that leads outside the version directory",
		    NULL);
	/* a link that stays inside is fine */
	assert_int_equal(unlink(link_path), 0);
	assert_int_equal(symlink("input_0.pb", link_path), 0);
	expect_ok(&fx, 1);
	/* a validation/ that is a link out: not even its names are listed */
	char vpath[PATH_MAX];
	path_of(vpath, fx.vdir, "validation");
	rm_rf(vpath);
	assert_int_equal(symlink(outside, vpath), 0);
	expect_fail(&fx, ES_EINVAL,
		    "'validation' is a link that leads outside the version directory", NULL);
	rm_rf(outside);
	fx_free(&fx);
}

static void test_case_limit(void **state)
{
	fixture fx;
	fx_init(&fx, identity_model(&prob_spec, 1));
	for (int i = 0; i <= ES_PREFLIGHT_MAX_CASES; i++) {
		char rel[64];
		snprintf(rel, sizeof(rel), "validation/case_%03d", i);
		make_dirs(fx.vdir, rel);
	}
	expect_fail(&fx, ES_ETOOLARGE, "'validation' holds 65 validation cases; at most 64", NULL);
	fx_free(&fx);
}

/* ---- warmup ------------------------------------------------------------------------ */

static void test_warmup_symbolic_dims(void **state)
{
	/* x [batch, 3] float and n [batch] int64 */
	static const io_spec spec[] = {
		{ "x", "y", ES_DT_FLOAT, 2, { -1, 3 } },
		{ "n", "m", ES_DT_INT64, 1, { -1 } },
	};
	es_model *m = identity_model(spec, 2);
	es_session *s[2];
	es_error err = { 0 };
	es_session_options opt = { .threads = 1, .profile = true };
	for (int i = 0; i < 2; i++)
		assert_int_equal(es_session_create(m, &opt, &s[i], &err), 0);
	char vdir[PATH_MAX];
	new_vdir(vdir);
	int rc = es_preflight_warmup(m, s, 2, 3, vdir, &err);
	if (rc)
		fail_msg("warmup: %s", err.msg);
	for (int i = 0; i < 2; i++) {
		const es_node_profile *prof;
		size_t n = es_session_profile(s[i], &prof);
		uint64_t calls = 0;
		for (size_t k = 0; k < n; k++)
			calls += prof[k].calls;
		/* 3 runs of however many nodes the optimized graph kept */
		assert_int_equal(calls % 3, 0);
		es_session_profile_reset(s[i]);
	}
	/* nothing to do */
	assert_int_equal(es_preflight_warmup(m, s, 2, 0, vdir, &err), 0);
	assert_int_equal(es_preflight_warmup(m, s, 0, 3, vdir, &err), 0);
	/* a missing session */
	es_session *none[1] = { NULL };
	assert_int_equal(es_preflight_warmup(m, none, 1, 1, vdir, &err), ES_EINVAL);
	/* without a version directory */
	assert_int_equal(es_preflight_warmup(m, s, 2, 1, NULL, &err), 0);
	for (int i = 0; i < 2; i++)
		es_session_destroy(s[i]);
	es_model_release(m);
	rm_rf(vdir);
}

static void test_warmup_unknown_rank(void **state)
{
	static const io_spec spec = { "x", "y", ES_DT_FLOAT, -1, { 0 } };
	es_model *m = identity_model(&spec, 1);
	es_session *s;
	es_error err = { 0 };
	assert_int_equal(es_session_create(m, NULL, &s, &err), 0);
	char vdir[PATH_MAX];
	new_vdir(vdir);
	int rc = es_preflight_warmup(m, &s, 1, 2, vdir, &err);
	assert_int_equal(rc, ES_EUNSUPPORTED);
	assert_non_null(strstr(err.msg, "cannot make up a warmup input for 'x': the model does "
					"not fix its rank"));
	assert_non_null(strstr(err.msg, "validation/input_0.pb"));
	/* a validation case gives the input: warmup uses it (any rank) */
	make_dirs(vdir, "validation/test_data_set_0");
	static const int64_t d[] = { 2, 1, 2 };
	const float x[4] = { 1, 2, 3, 4 };
	write_f32(vdir, "validation/test_data_set_0/input_0.pb", "x", 3, d, x);
	write_f32(vdir, "validation/test_data_set_0/output_0.pb", "y", 3, d, x);
	rc = es_preflight_warmup(m, &s, 1, 2, vdir, &err);
	if (rc)
		fail_msg("warmup: %s", err.msg);
	size_t n_cases = 0;
	rc = es_preflight_validate(m, s, vdir, &n_cases, &err);
	if (rc)
		fail_msg("validate: %s", err.msg);
	assert_int_equal(n_cases, 1);
	/* a broken case breaks warmup too, with the same message */
	write_text(vdir, "validation/test_data_set_0/input_0.pb", "garbage");
	assert_int_equal(es_preflight_warmup(m, &s, 1, 1, vdir, &err), ES_EPARSE);
	assert_non_null(strstr(err.msg, "'validation/test_data_set_0/input_0.pb'"));
	es_session_destroy(s);
	es_model_release(m);
	rm_rf(vdir);
}

static void test_warmup_run_error_named(void **state)
{
	/* a case whose input has the wrong type: the run fails, and says so */
	es_model *m = identity_model(&prob_spec, 1);
	es_session *s;
	es_error err = { 0 };
	assert_int_equal(es_session_create(m, NULL, &s, &err), 0);
	char vdir[PATH_MAX];
	new_vdir(vdir);
	make_dirs(vdir, "validation");
	const int32_t xi[4] = { 1, 2, 3, 4 };
	write_pb(vdir, "validation/input_0.pb", "", ES_DT_INT32, 2, dims_1x4, xi);
	write_pb(vdir, "validation/output_0.pb", "", ES_DT_INT32, 2, dims_1x4, xi);
	int rc = es_preflight_warmup(m, &s, 1, 2, vdir, &err);
	assert_int_equal(rc, ES_ETYPE);
	assert_non_null(strstr(err.msg, "warmup run 1 of 2 on session 0: input 'x'"));
	size_t n_cases;
	rc = es_preflight_validate(m, s, vdir, &n_cases, &err);
	assert_int_equal(rc, ES_ETYPE);
	assert_non_null(strstr(err.msg, "validation case 'validation': the run failed: input 'x'"));
	es_session_destroy(s);
	es_model_release(m);
	rm_rf(vdir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_validation_dir),
		cmocka_unit_test(test_empty_validation_dir),
		cmocka_unit_test(test_passing_single_case),
		cmocka_unit_test(test_passing_several_cases),
		cmocka_unit_test(test_failing_output_message),
		cmocka_unit_test(test_nan_and_inf),
		cmocka_unit_test(test_integer_exact),
		cmocka_unit_test(test_dtype_and_shape_mismatch),
		cmocka_unit_test(test_tolerance_file),
		cmocka_unit_test(test_binding_by_name_and_order),
		cmocka_unit_test(test_subset_of_outputs),
		cmocka_unit_test(test_missing_and_misnamed_files),
		cmocka_unit_test(test_malformed_pb),
		cmocka_unit_test(test_link_outside_refused),
		cmocka_unit_test(test_case_limit),
		cmocka_unit_test(test_warmup_symbolic_dims),
		cmocka_unit_test(test_warmup_unknown_rank),
		cmocka_unit_test(test_warmup_run_error_named),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
