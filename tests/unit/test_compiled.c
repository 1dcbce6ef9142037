/*
 * The compiled model form: every model of the test data round-trips to the
 * same graph and the same outputs, stale headers name the field, damaged
 * files fail cleanly (never a crash), writes report ENOSPC, and a model
 * outlives the files it came from.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <oneapi/dnnl/dnnl.h>

#include "edgeserve/engine.h"
#include "engine/cache/crc32c.h"
#include "engine/model_int.h"
#include "onnx/onnx.pb-c.h"

static char tmp_dir[] = "/tmp/es_compiled_XXXXXX";
static const uint8_t key_a[ES_COMPILED_KEY_BYTES] = { 0xa1, 0xa2, 0xa3, 31, [31] = 7 };
static const uint8_t key_b[ES_COMPILED_KEY_BYTES] = { 0xb1, 0xb2, 0xb3, 31, [31] = 7 };

static const char *tmp_path(const char *name)
{
	static char buf[4][4096];
	static int next;
	char *p = buf[next++ % 4];
	snprintf(p, sizeof(buf[0]), "%s/%s", tmp_dir, name);
	return p;
}

static int setup(void **state)
{
	(void)state;
	return mkdtemp(tmp_dir) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	DIR *d = opendir(tmp_dir);
	struct dirent *e;
	while (d && (e = readdir(d)))
		if (e->d_name[0] != '.')
			unlink(tmp_path(e->d_name));
	if (d)
		closedir(d);
	rmdir(tmp_dir);
	return 0;
}

/* ---- files --------------------------------------------------------------- */

static void save_compiled(const es_model *m, const char *path, const uint8_t *key)
{
	es_error err = { 0 };
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	int rc = es_model_save_compiled(m, fd, key, &err);
	if (rc)
		fail_msg("save %s: %d %s", path, rc, err.msg);
	assert_int_equal(close(fd), 0);
}

static uint8_t *read_whole(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	*len = (size_t)ftell(f);
	fseek(f, 0, SEEK_SET);
	uint8_t *buf = malloc(*len + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, *len, f), *len);
	fclose(f);
	return buf;
}

static void write_whole(const char *path, const void *buf, size_t len)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(buf, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static void copy_file(const char *from, const char *to)
{
	size_t len;
	uint8_t *buf = read_whole(from, &len);
	write_whole(to, buf, len);
	free(buf);
}

static void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* Recomputes both checksums, so a change reaches the parser behind them. */
static void fix_checksums(uint8_t *buf, size_t len)
{
	if (len < ES_COMPILED_HEADER_SIZE)
		return;
	/* the part the payload checksum covers, as the header says (at most
	 * what the file has) */
	uint64_t checked = get_le64(buf + ES_COMPILED_OFF_CHECKED_LEN);
	if (checked > len - ES_COMPILED_HEADER_SIZE)
		checked = len - ES_COMPILED_HEADER_SIZE;
	put_le32(buf + ES_COMPILED_OFF_PAYLOAD_CRC,
		 es_crc32c(0, buf + ES_COMPILED_HEADER_SIZE, (size_t)checked));
	put_le32(buf + ES_COMPILED_OFF_HEADER_CRC,
		 es_crc32c(0, buf, ES_COMPILED_OFF_HEADER_CRC));
}

/* ---- comparing models ------------------------------------------------------ */

static void assert_str_eq_or_null(const char *a, const char *b)
{
	if (!a || !b)
		assert_ptr_equal(a, b);
	else
		assert_string_equal(a, b);
}

static void assert_tensor_eq(const es_tensor *a, const es_tensor *b)
{
	assert_int_equal(a->dtype, b->dtype);
	assert_int_equal(a->ndim, b->ndim);
	for (int d = 0; d < a->ndim; d++)
		assert_int_equal(a->dims[d], b->dims[d]);
	assert_int_equal(a->nbytes, b->nbytes);
	if (a->nbytes)
		assert_memory_equal(a->data, b->data, a->nbytes);
}

/* The compiled graph is the loaded graph: every field that load produced. */
static void assert_models_eq(const es_model *ma, const es_model *mb)
{
	const es_graph *a = ma->graph, *b = mb->graph;
	assert_int_equal(ma->opset, mb->opset);
	assert_str_eq_or_null(a->name, b->name);
	assert_int_equal(a->n_opsets, b->n_opsets);
	for (int i = 0; i < a->n_opsets; i++) {
		assert_string_equal(a->opsets[i].domain, b->opsets[i].domain);
		assert_int_equal(a->opsets[i].version, b->opsets[i].version);
	}
	assert_int_equal(a->n_inputs, b->n_inputs);
	assert_int_equal(a->n_outputs, b->n_outputs);
	for (int i = 0; i < a->n_inputs; i++)
		assert_int_equal(a->inputs[i], b->inputs[i]);
	for (int i = 0; i < a->n_outputs; i++)
		assert_int_equal(a->outputs[i], b->outputs[i]);
	assert_int_equal(a->n_values, b->n_values);
	for (int v = 0; v < a->n_values; v++) {
		const es_value *x = &a->values[v], *y = &b->values[v];
		assert_string_equal(x->name, y->name);
		assert_int_equal(x->dtype, y->dtype);
		assert_int_equal(x->ndim, y->ndim);
		for (int d = 0; d < ES_MAX_DIMS; d++) {
			assert_int_equal(x->dims[d], y->dims[d]);
			assert_str_eq_or_null(x->dim_params[d], y->dim_params[d]);
		}
		assert_int_equal(x->is_input, y->is_input);
		assert_int_equal(x->is_output, y->is_output);
		assert_int_equal(x->producer, y->producer);
		assert_int_equal(x->n_consumers, y->n_consumers);
		assert_int_equal(!x->constant, !y->constant);
		if (x->constant) {
			assert_tensor_eq(x->constant, y->constant);
			/* used in place from the mapping, aligned */
			assert_true(es_graph_borrows(b, y->constant->data));
			assert_int_equal((uintptr_t)y->constant->data % 64, 0);
		}
	}
	assert_int_equal(a->n_nodes, b->n_nodes);
	for (int n = 0; n < a->n_nodes; n++) {
		const es_node *x = &a->nodes[n], *y = &b->nodes[n];
		assert_string_equal(x->name, y->name);
		assert_string_equal(x->op_type, y->op_type);
		assert_string_equal(x->domain, y->domain);
		assert_ptr_equal(x->op, y->op);
		assert_int_equal(x->opset, y->opset);
		assert_int_equal(x->n_inputs, y->n_inputs);
		assert_int_equal(x->n_outputs, y->n_outputs);
		for (int i = 0; i < x->n_inputs; i++)
			assert_int_equal(x->inputs[i], y->inputs[i]);
		for (int o = 0; o < x->n_outputs; o++)
			assert_int_equal(x->outputs[o], y->outputs[o]);
		assert_int_equal(x->n_attrs, y->n_attrs);
		for (int i = 0; i < x->n_attrs; i++) {
			const es_attr *p = &x->attrs[i], *q = &y->attrs[i];
			assert_string_equal(p->name, q->name);
			assert_int_equal(p->type, q->type);
			assert_memory_equal(&p->f, &q->f, sizeof(float));
			assert_int_equal(p->i, q->i);
			assert_str_eq_or_null(p->s, q->s);
			assert_int_equal(p->n, q->n);
			assert_int_equal(!p->t, !q->t);
			if (p->t)
				assert_tensor_eq(p->t, q->t);
			assert_int_equal(!p->floats, !q->floats);
			if (p->floats && p->n)
				assert_memory_equal(p->floats, q->floats, p->n * sizeof(float));
			assert_int_equal(!p->ints, !q->ints);
			if (p->ints && p->n)
				assert_memory_equal(p->ints, q->ints, p->n * sizeof(int64_t));
			assert_int_equal(!p->strings, !q->strings);
			for (size_t k = 0; p->strings && k < p->n; k++)
				assert_string_equal(p->strings[k], q->strings[k]);
		}
	}
	for (size_t i = 0; i < es_model_num_inputs(ma); i++) {
		const es_value_info *x = es_model_input(ma, i), *y = es_model_input(mb, i);
		assert_string_equal(x->name, y->name);
		for (int d = 0; d < ES_MAX_DIMS; d++)
			assert_str_eq_or_null(x->dim_params[d], y->dim_params[d]);
	}
}

/* ---- running ----------------------------------------------------------------- */

#define MAX_IO 16

typedef struct inputs {
	es_tensor t[MAX_IO];
	size_t n;
} inputs;

static void free_inputs(inputs *in)
{
	for (size_t i = 0; i < in->n; i++)
		es_tensor_free_data(&in->t[i]);
	in->n = 0;
}

static void fill_random(es_tensor *t, unsigned *seed)
{
	static const uint16_t halves[] = { 0x0000, 0x3c00, 0xbc00, 0x3800, 0x4000, 0xc200 };
	size_t n = (size_t)es_tensor_numel(t);
	for (size_t i = 0; i < n; i++) {
		int r = rand_r(seed);
		float f = (float)(r % 2001 - 1000) / 250.0f;
		switch (t->dtype) {
		case ES_DT_FLOAT: ((float *)t->data)[i] = f; break;
		case ES_DT_DOUBLE: ((double *)t->data)[i] = f; break;
		case ES_DT_FLOAT16: case ES_DT_BFLOAT16:
			((uint16_t *)t->data)[i] = t->dtype == ES_DT_FLOAT16
				? halves[r % 6] : (uint16_t)(0x3f80 + (r % 64));
			break;
		case ES_DT_BOOL: ((uint8_t *)t->data)[i] = r & 1; break;
		default: {
			/* small non-negative integers: mostly valid indices */
			size_t esz = es_dtype_size(t->dtype);
			uint64_t v = (uint64_t)(r % 3);
			memcpy((char *)t->data + i * esz, &v, esz); /* little-endian */
			break;
		}
		}
	}
}

/* The model's inputs: dir/input_<k>.pb when the model has them (the golden
 * layout), else random data with every open dimension set to 2. */
static void make_inputs(const es_model *m, const char *dir, unsigned seed, inputs *in)
{
	in->n = es_model_num_inputs(m);
	assert_true(in->n <= MAX_IO);
	for (size_t i = 0; i < in->n; i++) {
		const es_value_info *info = es_model_input(m, i);
		char path[4096];
		if (dir)
			snprintf(path, sizeof(path), "%s/input_%zu.pb", dir, i);
		if (dir && access(path, R_OK) == 0) {
			es_error err = { 0 };
			char *name = NULL;
			if (es_tensor_read_pb(path, &in->t[i], &name, &err) == 0) {
				free(name);
				continue;
			}
		}
		int ndim = info->ndim < 0 ? 2 : info->ndim;
		int64_t dims[ES_MAX_DIMS];
		for (int d = 0; d < ndim; d++)
			dims[d] = info->ndim < 0 || info->dims[d] < 0 ? 2 : info->dims[d];
		es_error err = { 0 };
		assert_int_equal(es_tensor_alloc(&in->t[i], info->dtype, ndim, dims, &err), 0);
		fill_random(&in->t[i], &seed);
	}
}

/* Runs both models on the same inputs: the same status and message, or the
 * same outputs byte for byte. */
static void assert_same_runs(es_model *ma, es_model *mb, const inputs *in)
{
	es_session *sa = NULL, *sb = NULL;
	es_session_options so = { .threads = 1 };
	es_error ea = { 0 }, eb = { 0 };
	es_tensor oa[MAX_IO], ob[MAX_IO];
	size_t n_out = es_model_num_outputs(ma);
	assert_true(n_out <= MAX_IO);
	assert_int_equal(es_session_create(ma, &so, &sa, &ea), 0);
	assert_int_equal(es_session_create(mb, &so, &sb, &eb), 0);
	for (int round = 0; round < 2; round++) {
		int ra = es_session_run(sa, in->t, in->n, oa, &ea);
		int rb = es_session_run(sb, in->t, in->n, ob, &eb);
		assert_int_equal(ra, rb);
		if (ra) {
			assert_string_equal(ea.msg, eb.msg);
			continue;
		}
		for (size_t o = 0; o < n_out; o++)
			assert_tensor_eq(&oa[o], &ob[o]);
	}
	es_session_destroy(sa);
	es_session_destroy(sb);
}

/* ONNX load vs compiled load of one file with both option sets. Returns
 * false when the ONNX file itself does not load (test data for errors). */
static bool round_trip(const char *onnx_path, const char *inputs_dir)
{
	bool loaded = false;
	for (int variant = 0; variant < 2; variant++) {
		es_model_options opts = { .no_optimize = variant == 1 };
		es_model *ma = NULL, *mb = NULL;
		es_error err = { 0 };
		if (es_model_load(onnx_path, &opts, &ma, &err))
			continue;
		loaded = true;
		const char *esc = tmp_path("round_trip.esc");
		save_compiled(ma, esc, key_a);
		int rc = es_model_load_compiled(esc, &opts, key_a, &mb, &err);
		if (rc)
			fail_msg("%s (no_optimize=%d): compiled load failed: %d %s", onnx_path,
				 variant, rc, err.msg);
		assert_models_eq(ma, mb);
		inputs in;
		make_inputs(ma, inputs_dir, 1234u + (unsigned)variant, &in);
		assert_same_runs(ma, mb, &in);
		free_inputs(&in);
		es_model_release(ma);
		es_model_release(mb);
		unlink(esc);
	}
	return loaded;
}

static void walk(const char *dir, int *n_models, int *n_loaded)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char path[4096];
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		struct stat st;
		if (stat(path, &st))
			continue;
		if (S_ISDIR(st.st_mode)) {
			walk(path, n_models, n_loaded);
			continue;
		}
		size_t len = strlen(e->d_name);
		if (len < 5 || strcmp(e->d_name + len - 5, ".onnx"))
			continue;
		(*n_models)++;
		/* golden cases keep their inputs next to model.onnx */
		*n_loaded += round_trip(path, strcmp(e->d_name, "model.onnx") ? NULL : dir);
	}
	closedir(d);
}

static void test_round_trip_test_data(void **state)
{
	(void)state;
	int n_models = 0, n_loaded = 0;
	walk(ES_TEST_DATA_DIR, &n_models, &n_loaded);
	walk(ES_TEST_DATA_DIR "/../../examples/models", &n_models, &n_loaded);
	print_message("round trip: %d of %d models load and match\n", n_loaded, n_models);
	assert_true(n_loaded >= 100);
}

/* ---- models built here ------------------------------------------------------ */

static void *arena[1024];
static size_t n_arena;

static void *A(size_t size)
{
	void *p = calloc(1, size ? size : 1);
	assert_non_null(p);
	assert_true(n_arena < sizeof(arena) / sizeof(arena[0]));
	arena[n_arena++] = p;
	return p;
}

static void arena_free(void)
{
	while (n_arena)
		free(arena[--n_arena]);
}

static Onnx__TypeProto *tensor_type(int elem, int ndim, const int64_t *dims,
				    const char *const *params)
{
	Onnx__TypeProto *tp = A(sizeof(*tp));
	Onnx__TypeProto__Tensor *tt = A(sizeof(*tt));
	Onnx__TensorShapeProto *sh = A(sizeof(*sh));
	onnx__type_proto__init(tp);
	onnx__type_proto__tensor__init(tt);
	onnx__tensor_shape_proto__init(sh);
	sh->n_dim = (size_t)ndim;
	sh->dim = A((size_t)ndim * sizeof(*sh->dim));
	for (int d = 0; d < ndim; d++) {
		Onnx__TensorShapeProto__Dimension *dm = A(sizeof(*dm));
		onnx__tensor_shape_proto__dimension__init(dm);
		if (params && params[d]) {
			dm->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
			dm->dim_param = (char *)params[d];
		} else {
			dm->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
			dm->dim_value = dims[d];
		}
		sh->dim[d] = dm;
	}
	tt->has_elem_type = 1;
	tt->elem_type = elem;
	tt->shape = sh;
	tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
	tp->tensor_type = tt;
	return tp;
}

static Onnx__ValueInfoProto *vinfo(const char *name, int elem, int ndim,
				   const int64_t *dims, const char *const *params)
{
	Onnx__ValueInfoProto *v = A(sizeof(*v));
	onnx__value_info_proto__init(v);
	v->name = (char *)name;
	v->type = tensor_type(elem, ndim, dims, params);
	return v;
}

static Onnx__TensorProto *tproto(const char *name, int dt, int ndim, const int64_t *dims,
				 const void *data, size_t nbytes)
{
	Onnx__TensorProto *t = A(sizeof(*t));
	onnx__tensor_proto__init(t);
	t->name = (char *)name;
	t->has_data_type = 1;
	t->data_type = dt;
	t->n_dims = (size_t)ndim;
	t->dims = A((size_t)ndim * sizeof(int64_t));
	memcpy(t->dims, dims, (size_t)ndim * sizeof(int64_t));
	t->has_raw_data = 1;
	t->raw_data.len = nbytes;
	t->raw_data.data = A(nbytes);
	memcpy(t->raw_data.data, data, nbytes);
	return t;
}

static Onnx__AttributeProto *attr(const char *name, int type)
{
	Onnx__AttributeProto *a = A(sizeof(*a));
	onnx__attribute_proto__init(a);
	a->name = (char *)name;
	if (type >= 0) {
		a->has_type = 1;
		a->type = (Onnx__AttributeProto__AttributeType)type;
	}
	return a;
}

static Onnx__NodeProto *node(const char *name, const char *op, const char *in0,
			     const char *in1, const char *out, Onnx__AttributeProto **attrs,
			     size_t n_attrs)
{
	Onnx__NodeProto *n = A(sizeof(*n));
	onnx__node_proto__init(n);
	n->name = (char *)name;
	n->op_type = (char *)op;
	n->input = A(2 * sizeof(char *));
	if (in0)
		n->input[n->n_input++] = (char *)in0;
	if (in1)
		n->input[n->n_input++] = (char *)in1;
	n->output = A(sizeof(char *));
	n->output[0] = (char *)out;
	n->n_output = 1;
	n->attribute = attrs;
	n->n_attribute = n_attrs;
	return n;
}

static uint8_t *pack_model(Onnx__GraphProto *g, size_t *len)
{
	Onnx__ModelProto m;
	Onnx__OperatorSetIdProto os, *osp = &os;
	onnx__model_proto__init(&m);
	onnx__operator_set_id_proto__init(&os);
	os.domain = "";
	os.has_version = 1;
	os.version = 17;
	m.has_ir_version = 1;
	m.ir_version = 8;
	m.n_opset_import = 1;
	m.opset_import = &osp;
	m.graph = g;
	*len = onnx__model_proto__get_packed_size(&m);
	uint8_t *buf = A(*len);
	onnx__model_proto__pack(&m, buf);
	return buf;
}

/*
 * x[batch, 3] -> Mul(x, w + c) -> Relu (with an attribute of every type)
 * -> y, and Shape(x) -> s. c comes from a Constant node and w + c is folded
 * at load, so the compiled form holds both kinds of constants.
 */
static es_model *build_every_attr_model(bool with_graph_attr, const es_model_options *opts)
{
	static const int64_t d3[] = { 3 }, d2[] = { 2 }, dx[] = { 0, 3 };
	static const char *const px[] = { "batch", NULL };
	static const float w[] = { 1, 2, 3 }, c[] = { 0.5f, 0.25f, -4 };
	static const int64_t tt[] = { 4, 5 };
	static float fs[] = { 1.5f, -2 };
	static int64_t is[] = { 3, -4, 5 };

	Onnx__GraphProto *g = A(sizeof(*g));
	onnx__graph_proto__init(g);
	g->name = "every_attr";
	g->n_input = 1;
	g->input = A(sizeof(*g->input));
	g->input[0] = vinfo("x", ES_DT_FLOAT, 2, dx, px);
	g->n_output = 2;
	g->output = A(2 * sizeof(*g->output));
	g->output[0] = vinfo("y", ES_DT_FLOAT, 2, dx, px);
	g->output[1] = vinfo("s", ES_DT_INT64, 1, d2, NULL);
	g->n_initializer = 1;
	g->initializer = A(sizeof(*g->initializer));
	g->initializer[0] = tproto("w", ES_DT_FLOAT, 1, d3, w, sizeof(w));

	Onnx__AttributeProto **ca = A(sizeof(*ca));
	ca[0] = attr("value", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR);
	ca[0]->t = tproto("", ES_DT_FLOAT, 1, d3, c, sizeof(c));

	size_t n_ra = 0;
	Onnx__AttributeProto **ra = A(16 * sizeof(*ra));
	Onnx__AttributeProto *a;
	a = ra[n_ra++] = attr("alpha_f", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
	a->has_f = 1;
	a->f = 0.25f;
	a = ra[n_ra++] = attr("count_i", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
	a->has_i = 1;
	a->i = -7;
	a = ra[n_ra++] = attr("mode_s", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);
	a->has_s = 1;
	a->s.data = (uint8_t *)"hello";
	a->s.len = 5;
	a = ra[n_ra++] = attr("table_t", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR);
	a->t = tproto("tt", ES_DT_INT64, 1, d2, tt, sizeof(tt));
	a = ra[n_ra++] = attr("scales_fs", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS);
	a->n_floats = 2;
	a->floats = fs;
	a = ra[n_ra++] = attr("axes_is", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
	a->n_ints = 3;
	a->ints = is;
	a = ra[n_ra++] = attr("names_ss", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS);
	a->n_strings = 3;
	a->strings = A(3 * sizeof(ProtobufCBinaryData));
	a->strings[0] = (ProtobufCBinaryData){ 1, (uint8_t *)"a" };
	a->strings[1] = (ProtobufCBinaryData){ 2, (uint8_t *)"bc" };
	a->strings[2] = (ProtobufCBinaryData){ 0, NULL };
	a = ra[n_ra++] = attr("empty_ints", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
	/* the kinds the IR keeps as typed markers */
	a = ra[n_ra++] = attr("sparse", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__SPARSE_TENSOR);
	a->sparse_tensor = A(sizeof(*a->sparse_tensor));
	onnx__sparse_tensor_proto__init(a->sparse_tensor);
	a = ra[n_ra++] = attr("type", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TYPE_PROTO);
	a->tp = tensor_type(ES_DT_FLOAT, 1, d3, NULL);
	a = ra[n_ra++] = attr("tensors", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSORS);
	a->n_tensors = 1;
	a->tensors = A(sizeof(*a->tensors));
	a->tensors[0] = tproto("t0", ES_DT_FLOAT, 1, d3, w, sizeof(w));
	a = ra[n_ra++] = attr("sparses", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__SPARSE_TENSORS);
	a = ra[n_ra++] = attr("types", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TYPE_PROTOS);
	a = ra[n_ra++] = attr("untyped", -1); /* IR < 2 style, nothing set */
	if (with_graph_attr) {
		a = ra[n_ra++] = attr("body", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH);
		a->g = A(sizeof(*a->g));
		onnx__graph_proto__init(a->g);
	}

	g->n_node = 5;
	g->node = A(5 * sizeof(*g->node));
	g->node[0] = node("const_c", "Constant", NULL, NULL, "c", ca, 1);
	g->node[1] = node("add_wc", "Add", "w", "c", "wc", NULL, 0);
	g->node[2] = node("mul", "Mul", "x", "wc", "xw", NULL, 0);
	g->node[3] = node("relu_attrs", "Relu", "xw", NULL, "y", ra, n_ra);
	g->node[4] = node("shape", "Shape", "x", NULL, "s", NULL, 0);

	size_t len;
	uint8_t *buf = pack_model(g, &len);
	es_model *m = NULL;
	es_error err = { 0 };
	int rc = es_model_load_buffer(buf, len, NULL, opts, &m, &err);
	arena_free();
	if (rc)
		fail_msg("building the test model: %d %s", rc, err.msg);
	return m;
}

static void test_every_attribute_type(void **state)
{
	(void)state;
	for (int variant = 0; variant < 2; variant++) {
		es_model_options opts = { .no_optimize = variant == 1 };
		es_model *ma = build_every_attr_model(false, &opts), *mb = NULL;
		es_error err = { 0 };
		const char *esc = tmp_path("every_attr.esc");
		save_compiled(ma, esc, key_a);
		assert_int_equal(es_model_load_compiled(esc, &opts, key_a, &mb, &err), 0);
		assert_models_eq(ma, mb);

		/* the test model really holds what it is meant to cover */
		const es_graph *g = mb->graph;
		int relu = -1;
		for (int n = 0; n < g->n_nodes; n++)
			if (!strcmp(g->nodes[n].name, "relu_attrs"))
				relu = n;
		assert_true(relu >= 0);
		const es_node *r = &g->nodes[relu];
		assert_int_equal(r->n_attrs, 14);
		bool seen[ES_ATTR_TYPE_PROTOS + 1] = { false };
		for (int i = 0; i < r->n_attrs; i++)
			seen[r->attrs[i].type] = true;
		for (int t = 0; t <= ES_ATTR_TYPE_PROTOS; t++)
			if (t != ES_ATTR_GRAPH && t != ES_ATTR_GRAPHS)
				assert_true(seen[t]);
		const es_attr *s = es_node_attr(r, "mode_s");
		assert_string_equal(s->s, "hello");
		const es_attr *ss = es_node_attr(r, "names_ss");
		assert_int_equal(ss->n, 3);
		assert_string_equal(ss->strings[1], "bc");
		assert_string_equal(ss->strings[2], "");
		const es_attr *t = es_node_attr(r, "table_t");
		assert_int_equal(((const int64_t *)t->t->data)[1], 5);
		assert_true(es_graph_borrows(g, t->t->data));
		/* the symbolic dimension survives */
		assert_string_equal(es_model_input(mb, 0)->dim_params[0], "batch");
		assert_int_equal(es_model_input(mb, 0)->dims[0], -1);
		/* folded: only Mul, Relu and Shape remain when optimizing */
		assert_int_equal(es_model_num_nodes(mb), variant ? 4 : 3);
		int wc = es_graph_find_value(g, "wc");
		assert_true(wc >= 0);
		assert_int_equal(!g->values[wc].constant, variant == 1);

		inputs in;
		make_inputs(ma, NULL, 99, &in);
		assert_same_runs(ma, mb, &in);
		free_inputs(&in);
		es_model_release(ma);
		es_model_release(mb);
	}
}

/* An initializer shared through Identity nodes folds into one copy per
 * use; the compiled form stores those bytes once. */
static void test_identical_constants_stored_once(void **state)
{
	(void)state;
	static const int64_t dw[] = { 1024 };
	static float w[1024];
	for (int i = 0; i < 1024; i++)
		w[i] = (float)i * 0.5f;
	Onnx__GraphProto *g = A(sizeof(*g));
	onnx__graph_proto__init(g);
	g->name = "shared";
	g->n_input = 1;
	g->input = A(sizeof(*g->input));
	g->input[0] = vinfo("x", ES_DT_FLOAT, 1, dw, NULL);
	g->n_output = 1;
	g->output = A(sizeof(*g->output));
	g->output[0] = vinfo("y", ES_DT_FLOAT, 1, dw, NULL);
	g->n_initializer = 1;
	g->initializer = A(sizeof(*g->initializer));
	g->initializer[0] = tproto("w", ES_DT_FLOAT, 1, dw, w, sizeof(w));
	g->n_node = 4;
	g->node = A(4 * sizeof(*g->node));
	g->node[0] = node("id1", "Identity", "w", NULL, "w1", NULL, 0);
	g->node[1] = node("id2", "Identity", "w", NULL, "w2", NULL, 0);
	g->node[2] = node("add", "Add", "x", "w1", "xw", NULL, 0);
	g->node[3] = node("mul", "Mul", "xw", "w2", "y", NULL, 0);
	size_t len;
	uint8_t *buf = pack_model(g, &len);
	es_model *ma = NULL, *mb = NULL;
	es_error err = { 0 };
	assert_int_equal(es_model_load_buffer(buf, len, NULL, NULL, &ma, &err), 0);
	arena_free();
	const char *esc = tmp_path("shared.esc");
	save_compiled(ma, esc, key_a);
	struct stat st;
	assert_int_equal(stat(esc, &st), 0);
	assert_true((size_t)st.st_size < 2 * sizeof(w)); /* three constants, one copy */
	assert_int_equal(es_model_load_compiled(esc, NULL, key_a, &mb, &err), 0);
	assert_models_eq(ma, mb);
	const es_graph *gb = mb->graph;
	const es_tensor *c1 = gb->values[es_graph_find_value(gb, "w1")].constant;
	const es_tensor *c2 = gb->values[es_graph_find_value(gb, "w2")].constant;
	assert_non_null(c1);
	assert_non_null(c2);
	assert_ptr_equal(c1->data, c2->data);
	inputs in;
	make_inputs(ma, NULL, 17, &in);
	assert_same_runs(ma, mb, &in);
	free_inputs(&in);
	es_model_release(ma);
	es_model_release(mb);
}

/* The pipeline both load paths share: a Constant node it rejects after it
 * already folded one and kept another node must leave a graph that frees
 * each node once (ASan checks). */
static void test_constant_fold_failure_frees_once(void **state)
{
	(void)state;
	static const int64_t d3[] = { 3 };
	static const float c[] = { 1, 2, 3 };
	Onnx__GraphProto *g = A(sizeof(*g));
	onnx__graph_proto__init(g);
	g->name = "bad_constant";
	g->n_input = 1;
	g->input = A(sizeof(*g->input));
	g->input[0] = vinfo("x", ES_DT_FLOAT, 1, d3, NULL);
	g->n_output = 1;
	g->output = A(sizeof(*g->output));
	g->output[0] = vinfo("y", ES_DT_FLOAT, 1, d3, NULL);
	Onnx__AttributeProto **good = A(sizeof(*good));
	good[0] = attr("value", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR);
	good[0]->t = tproto("", ES_DT_FLOAT, 1, d3, c, sizeof(c));
	Onnx__AttributeProto **bad = A(2 * sizeof(*bad));
	bad[0] = attr("value_int", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
	bad[0]->has_i = 1;
	bad[1] = attr("value_float", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
	bad[1]->has_f = 1;
	g->n_node = 4;
	g->node = A(4 * sizeof(*g->node));
	g->node[0] = node("c_good", "Constant", NULL, NULL, "c", good, 1);
	g->node[1] = node("relu", "Relu", "x", NULL, "r", NULL, 0);
	g->node[2] = node("c_bad", "Constant", NULL, NULL, "k", bad, 2);
	g->node[3] = node("add", "Add", "r", "c", "y", NULL, 0);
	size_t len;
	uint8_t *buf = pack_model(g, &len);
	es_model *m = NULL;
	es_error err = { 0 };
	assert_int_equal(es_model_load_buffer(buf, len, NULL, NULL, &m, &err), ES_EGRAPH);
	assert_null(m);
	assert_non_null(strstr(err.msg, "c_bad"));
	arena_free();
}

static void test_graph_attribute_rejected_at_save(void **state)
{
	(void)state;
	es_model *m = build_every_attr_model(true, NULL);
	es_error err = { 0 };
	int fd = open(tmp_path("graph_attr.esc"), O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(es_model_save_compiled(m, fd, key_a, &err), ES_EUNSUPPORTED);
	assert_non_null(strstr(err.msg, "relu_attrs"));
	assert_non_null(strstr(err.msg, "body"));
	assert_non_null(strstr(err.msg, "graph"));
	close(fd);
	es_model_release(m);
}

/* ---- staleness ------------------------------------------------------------- */

static const char *relu_path(void)
{
	return ES_TEST_DATA_DIR "/loader/relu.onnx";
}

/* Compiles relu.onnx to `name` in the temp dir and returns its path. */
static const char *compile_relu(const char *name, const uint8_t *key)
{
	es_model *m = NULL;
	es_error err = { 0 };
	assert_int_equal(es_model_load(relu_path(), NULL, &m, &err), 0);
	const char *path = tmp_path(name);
	save_compiled(m, path, key);
	es_model_release(m);
	return path;
}

static void expect_load(const char *path, const es_model_options *opts, const uint8_t *key,
			int code, ...)
{
	es_model *m = NULL;
	es_error err = { 0 };
	int rc = es_model_load_compiled(path, opts, key, &m, &err);
	if (rc != code)
		fail_msg("expected %d, got %d (%s)", code, rc, err.msg);
	assert_null(m);
	assert_int_equal(err.code, code);
	va_list ap;
	va_start(ap, code);
	const char *frag;
	while ((frag = va_arg(ap, const char *)))
		if (!strstr(err.msg, frag))
			fail_msg("message '%s' lacks '%s'", err.msg, frag);
	va_end(ap);
}

/* Rewrites a header string field and its checksum. */
static void patch_field(const char *path, size_t off, size_t field_len, const char *value)
{
	size_t len;
	uint8_t *buf = read_whole(path, &len);
	memset(buf + off, 0, field_len);
	memcpy(buf + off, value, strlen(value));
	fix_checksums(buf, len);
	write_whole(path, buf, len);
	free(buf);
}

static void test_stale_fields_named(void **state)
{
	(void)state;
	const char *path = compile_relu("stale.esc", key_a);
	es_model *m = NULL;
	es_error err = { 0 };
	assert_int_equal(es_model_load_compiled(path, NULL, key_a, &m, &err), 0);
	es_model_release(m);

	expect_load(path, NULL, key_b, ES_ESTALE, "key", NULL);
	expect_load(path, NULL, NULL, ES_ESTALE, "key", NULL);
	es_model_options no_opt = { .no_optimize = true };
	expect_load(path, &no_opt, key_a, ES_ESTALE, "options", "no_optimize=0",
		    "no_optimize=1", NULL);

	patch_field(path, ES_COMPILED_OFF_ENGINE, 32, "9.9.9");
	expect_load(path, NULL, key_a, ES_ESTALE, "engine version", "'9.9.9'",
		    "'" ES_ENGINE_VERSION "'", NULL);

	path = compile_relu("stale_cpu.esc", key_a);
	patch_field(path, ES_COMPILED_OFF_CPU, 160, "x86_64 sse2; onednn isa sse41");
	expect_load(path, NULL, key_a, ES_ESTALE, "CPU features",
		    "'x86_64 sse2; onednn isa sse41'", es_engine_cpu_features(), NULL);

	path = compile_relu("stale_format.esc", key_a);
	size_t len;
	uint8_t *buf = read_whole(path, &len);
	buf[ES_COMPILED_OFF_FORMAT] = ES_COMPILED_FORMAT_VERSION + 1;
	fix_checksums(buf, len);
	write_whole(path, buf, len);
	free(buf);
	char newer[8];
	snprintf(newer, sizeof(newer), "%d", ES_COMPILED_FORMAT_VERSION + 1);
	expect_load(path, NULL, key_a, ES_ESTALE, "format version", newer, NULL);

	/* NULL key on both sides is the zero key */
	path = compile_relu("zero_key.esc", NULL);
	static const uint8_t zero[ES_COMPILED_KEY_BYTES];
	assert_int_equal(es_model_load_compiled(path, NULL, zero, &m, &err), 0);
	es_model_release(m);
	expect_load(path, NULL, key_a, ES_ESTALE, "key", NULL);
}

static void test_options_round_trip(void **state)
{
	(void)state;
	es_model_options no_opt = { .no_optimize = true };
	es_model *m = NULL;
	es_error err = { 0 };
	assert_int_equal(es_model_load(relu_path(), &no_opt, &m, &err), 0);
	const char *path = tmp_path("no_opt.esc");
	save_compiled(m, path, key_a);
	es_model_release(m);
	expect_load(path, NULL, key_a, ES_ESTALE, "options", NULL);
	assert_int_equal(es_model_load_compiled(path, &no_opt, key_a, &m, &err), 0);
	es_model_release(m);
}

/* ---- damage --------------------------------------------------------------- */

static void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/*
 * Only kernel-saved attributes' data may lie after the part the payload
 * checksum covers: a file without them is checked whole; moving the end
 * of the checked part back over a constant, or past the payload, is
 * malformed. (Kernel-saved data in that tail: test_opt_layout.c.)
 */
static void test_unchecked_tail(void **state)
{
	(void)state;
	es_model *ma = build_every_attr_model(false, NULL);
	const char *path = tmp_path("tail.esc");
	save_compiled(ma, path, key_a);
	es_model_release(ma);
	size_t len;
	uint8_t *buf = read_whole(path, &len);
	uint64_t checked = get_le64(buf + ES_COMPILED_OFF_CHECKED_LEN);
	assert_int_equal(checked, len - ES_COMPILED_HEADER_SIZE);

	const char *bad = tmp_path("tail_bad.esc");
	put_le64(buf + ES_COMPILED_OFF_CHECKED_LEN, checked - 64);
	fix_checksums(buf, len);
	write_whole(bad, buf, len);
	expect_load(bad, NULL, key_a, ES_EPARSE, "check", NULL);

	put_le64(buf + ES_COMPILED_OFF_CHECKED_LEN, checked + 1);
	fix_checksums(buf, len);
	write_whole(bad, buf, len);
	expect_load(bad, NULL, key_a, ES_EPARSE, "checksum covers", NULL);
	free(buf);
}

static void test_truncated_at_every_offset(void **state)
{
	(void)state;
	es_model *ma = build_every_attr_model(false, NULL);
	const char *path = tmp_path("trunc.esc");
	save_compiled(ma, path, key_a);
	es_model_release(ma);
	size_t len;
	uint8_t *buf = read_whole(path, &len);
	const char *cut = tmp_path("cut.esc");
	for (size_t n = 0; n < len; n++) {
		write_whole(cut, buf, n);
		es_model *m = NULL;
		es_error err = { 0 };
		int rc = es_model_load_compiled(cut, NULL, key_a, &m, &err);
		if (rc != ES_EPARSE)
			fail_msg("truncated to %zu of %zu bytes: %d (%s)", n, len, rc, err.msg);
		assert_null(m);
		assert_true(err.msg[0] != '\0');
	}
	/* and one byte too many */
	uint8_t *longer = malloc(len + 1);
	assert_non_null(longer);
	memcpy(longer, buf, len);
	longer[len] = 0;
	write_whole(cut, longer, len + 1);
	expect_load(cut, NULL, key_a, ES_EPARSE, "trailing", NULL);
	free(longer);
	free(buf);
}

static void test_flipped_bytes(void **state)
{
	(void)state;
	es_model *ma = build_every_attr_model(false, NULL);
	const char *path = tmp_path("flip.esc");
	save_compiled(ma, path, key_a);
	size_t len;
	uint8_t *buf = read_whole(path, &len);
	const char *bad = tmp_path("flipped.esc");
	inputs in;
	make_inputs(ma, NULL, 5, &in);
	int accepted = 0;
	for (int repaired = 0; repaired < 2; repaired++) {
		for (size_t i = 0; i < len; i++) {
			uint8_t *copy = malloc(len);
			assert_non_null(copy);
			memcpy(copy, buf, len);
			copy[i] ^= repaired ? (uint8_t)(1u << (i % 8)) : 0xff;
			if (repaired)
				fix_checksums(copy, len);
			write_whole(bad, copy, len);
			free(copy);
			es_model *m = NULL;
			es_error err = { 0 };
			int rc = es_model_load_compiled(bad, NULL, key_a, &m, &err);
			if (!repaired) {
				/* the checksums catch every flip the header
				 * checks do not */
				if (rc != ES_EPARSE && rc != ES_ESTALE)
					fail_msg("byte %zu flipped: %d (%s)", i, rc, err.msg);
				continue;
			}
			/* behind valid checksums the parser must still hold */
			if (rc == 0) {
				accepted++;
				es_session *s = NULL;
				es_tensor out[MAX_IO];
				if (es_session_create(m, NULL, &s, &err) == 0) {
					if (es_model_num_inputs(m) == in.n)
						(void)es_session_run(s, in.t, in.n, out, &err);
					es_session_destroy(s);
				}
				es_model_release(m);
				continue;
			}
			if (rc != ES_EPARSE && rc != ES_ESTALE)
				fail_msg("byte %zu bit %zu flipped (checksums fixed): %d (%s)",
					 i, i % 8, rc, err.msg);
			assert_null(m);
		}
	}
	print_message("bit flips behind valid checksums: %d of %zu still load\n", accepted, len);
	free_inputs(&in);
	free(buf);
	es_model_release(ma);
}

static void test_malformed_payload_messages(void **state)
{
	(void)state;
	const char *path = compile_relu("malformed.esc", key_a);
	size_t len;
	uint8_t *buf = read_whole(path, &len);
	uint8_t *payload = buf + ES_COMPILED_HEADER_SIZE;
	/* payload head: opset, graph name, then (offset, count) per section;
	 * the value table is section 0 */
	uint64_t values = get_le64(payload + 16);
	put_le32(payload + values, 0xfffffff0u); /* value 0: name offset */
	fix_checksums(buf, len);
	write_whole(path, buf, len);
	expect_load(path, NULL, key_a, ES_EPARSE, "compiled model: value 0 name offset out of range",
		    NULL);

	/* a section past the end */
	free(buf);
	path = compile_relu("malformed2.esc", key_a);
	buf = read_whole(path, &len);
	payload = buf + ES_COMPILED_HEADER_SIZE;
	put_le32(payload + 16 + 16 * 1 + 8, 0x7fffffff); /* tensor table count */
	fix_checksums(buf, len);
	write_whole(path, buf, len);
	expect_load(path, NULL, key_a, ES_EPARSE, "tensor table", "outside the payload", NULL);

	/* a bad payload checksum and a bad header checksum */
	free(buf);
	path = compile_relu("malformed3.esc", key_a);
	buf = read_whole(path, &len);
	buf[len - 1] ^= 1;
	write_whole(path, buf, len);
	expect_load(path, NULL, key_a, ES_EPARSE, "payload checksum", NULL);
	buf[len - 1] ^= 1;
	buf[ES_COMPILED_OFF_PAYLOAD_LEN + 7] ^= 0x10;
	write_whole(path, buf, len);
	expect_load(path, NULL, key_a, ES_EPARSE, "header checksum", NULL);
	memcpy(buf, "NOTMODEL", 8);
	write_whole(path, buf, len);
	expect_load(path, NULL, key_a, ES_EPARSE, "magic", NULL);
	free(buf);

	write_whole(path, "", 0);
	expect_load(path, NULL, key_a, ES_EPARSE, "truncated", NULL);
	expect_load(tmp_path("does_not_exist.esc"), NULL, key_a, ES_EIO, "cannot open", NULL);
	expect_load(tmp_dir, NULL, key_a, ES_EIO, NULL);
}

/* ---- files and devices ------------------------------------------------------ */

static void test_full_device(void **state)
{
	(void)state;
	int fd = open("/dev/full", O_WRONLY);
	if (fd < 0)
		skip();
	es_model *m = build_every_attr_model(false, NULL);
	es_error err = { 0 };
	assert_int_equal(es_model_save_compiled(m, fd, key_a, &err), ES_EIO);
	assert_non_null(strstr(err.msg, "No space"));
	close(fd);
	es_model_release(m);
}

static void test_source_deleted(void **state)
{
	(void)state;
	/* the model with external weights: both files go away */
	const char *onnx = tmp_path("external_ok.onnx");
	const char *weights = tmp_path("weights.bin");
	copy_file(ES_TEST_DATA_DIR "/loader/external_ok.onnx", onnx);
	copy_file(ES_TEST_DATA_DIR "/loader/weights.bin", weights);
	es_model *ma = NULL, *mb = NULL;
	es_error err = { 0 };
	assert_int_equal(es_model_load(onnx, NULL, &ma, &err), 0);
	const char *esc = tmp_path("external.esc");
	save_compiled(ma, esc, key_a);
	assert_int_equal(unlink(onnx), 0);
	assert_int_equal(unlink(weights), 0);
	assert_int_equal(es_model_load_compiled(esc, NULL, key_a, &mb, &err), 0);
	assert_models_eq(ma, mb);
	inputs in;
	make_inputs(ma, NULL, 3, &in);
	assert_same_runs(ma, mb, &in);
	free_inputs(&in);
	es_model_release(ma);
	es_model_release(mb);
}

static void test_model_outlives_unlinked_file(void **state)
{
	(void)state;
	es_model *ma = build_every_attr_model(false, NULL), *mb = NULL;
	es_error err = { 0 };
	const char *esc = tmp_path("unlinked.esc");
	save_compiled(ma, esc, key_a);
	assert_int_equal(es_model_load_compiled(esc, NULL, key_a, &mb, &err), 0);
	assert_int_equal(unlink(esc), 0);
	/* a new file under the same name does not disturb the loaded one */
	write_whole(esc, "garbage", 7);
	inputs in;
	make_inputs(ma, NULL, 11, &in);
	assert_same_runs(ma, mb, &in);
	free_inputs(&in);
	es_model_release(ma);
	es_model_release(mb);
}

/* ---- engine facts and checksum -------------------------------------------- */

static void test_engine_facts(void **state)
{
	(void)state;
	assert_string_equal(es_engine_version(), ES_ENGINE_VERSION);
	const char *cpu = es_engine_cpu_features();
	assert_non_null(cpu);
	assert_ptr_equal(cpu, es_engine_cpu_features());
	assert_non_null(strstr(cpu, "; onednn isa "));
	/* ends with the oneDNN release (packed weights are in its layouts) */
	{
		const dnnl_version_t *v = dnnl_version();
		char want[32];
		snprintf(want, sizeof(want), " %d.%d.%d", v->major, v->minor, v->patch);
		size_t lc = strlen(cpu), lw = strlen(want);
		assert_true(lc > lw && !strcmp(cpu + lc - lw, want));
	}
#if defined(__x86_64__)
	assert_int_equal(strncmp(cpu, "x86_64", 6), 0);
#endif
	assert_null(strchr(cpu, '\n'));
	assert_true(strlen(cpu) < 160);
	assert_string_equal(es_strerror(ES_ESTALE), "stale compiled form");
}

static void test_crc32c(void **state)
{
	(void)state;
	assert_int_equal(es_crc32c(0, "123456789", 9), 0xe3069283u);
	assert_int_equal(es_crc32c_portable(0, "123456789", 9), 0xe3069283u);
	assert_int_equal(es_crc32c(0, "", 0), 0);
	/* all block paths, odd offsets and lengths, and pieces */
	size_t n = 3 * 8192 * 2 + 3 * 256 + 77;
	uint8_t *buf = malloc(n + 8);
	assert_non_null(buf);
	unsigned seed = 42;
	for (size_t i = 0; i < n + 8; i++)
		buf[i] = (uint8_t)rand_r(&seed);
	for (int round = 0; round < 200; round++) {
		size_t off = (size_t)rand_r(&seed) % 8;
		size_t len = round < 100 ? (size_t)rand_r(&seed) % n : n - (size_t)round;
		size_t cut = len ? (size_t)rand_r(&seed) % len : 0;
		uint32_t whole = es_crc32c(0, buf + off, len);
		assert_int_equal(whole, es_crc32c_portable(0, buf + off, len));
		assert_int_equal(whole, es_crc32c(es_crc32c(0, buf + off, cut),
						  buf + off + cut, len - cut));
		/* combined from two independent checksums */
		assert_int_equal(whole, es_crc32c_combine(es_crc32c(0, buf + off, cut),
							  es_crc32c(0, buf + off + cut, len - cut),
							  len - cut));
	}
	free(buf);

	/* the parallel form over sizes around its threshold and odd splits */
	size_t big = (5u << 20) + 13;
	uint8_t *b2 = malloc(big);
	assert_non_null(b2);
	for (size_t i = 0; i < big; i++)
		b2[i] = (uint8_t)(i * 2654435761u >> 13);
	for (int threads = 1; threads <= 5; threads++) {
		assert_int_equal(es_crc32c_parallel(b2, big, threads), es_crc32c(0, b2, big));
		assert_int_equal(es_crc32c_parallel(b2, 4096, threads), es_crc32c(0, b2, 4096));
	}
	free(b2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_engine_facts),
		cmocka_unit_test(test_crc32c),
		cmocka_unit_test(test_every_attribute_type),
		cmocka_unit_test(test_identical_constants_stored_once),
		cmocka_unit_test(test_constant_fold_failure_frees_once),
		cmocka_unit_test(test_graph_attribute_rejected_at_save),
		cmocka_unit_test(test_stale_fields_named),
		cmocka_unit_test(test_options_round_trip),
		cmocka_unit_test(test_truncated_at_every_offset),
		cmocka_unit_test(test_unchecked_tail),
		cmocka_unit_test(test_flipped_bytes),
		cmocka_unit_test(test_malformed_payload_messages),
		cmocka_unit_test(test_full_device),
		cmocka_unit_test(test_source_deleted),
		cmocka_unit_test(test_model_outlives_unlinked_file),
		cmocka_unit_test(test_round_trip_test_data),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
