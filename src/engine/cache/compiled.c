/*
 * The compiled form of a model: the graph exactly as es_model_load leaves
 * it (Constant nodes and constant subgraphs folded, nodes in topological
 * order), written as one file that loads back without decoding protobuf or
 * copying weights.
 *
 * File = a fixed header (format, engine version, CPU features, options,
 * key, payload length and checksums) followed by the payload: a head with
 * a table of sections, fixed-size little-endian records (values, tensors,
 * nodes, attributes, ...), a string table, attribute arrays and, at
 * 64-byte aligned offsets, the constant data. Loading maps the file
 * read-only and points constant tensors straight into the mapping; the
 * graph keeps the mapping (es_graph.backing) and unmaps it when freed.
 * docs/engine.md ("Compiled form") has the byte layout.
 *
 * Everything read from the file is checked before use: offsets, lengths
 * and counts against the payload, value indices against the value table,
 * and the bytes copied out (strings, attribute arrays) against the size of
 * the sections they come from, so a malformed file cannot make the loader
 * allocate more than a few times its own size.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <oneapi/dnnl/dnnl.h>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include "base/alloc.h"
#include "base/status.h"
#include "engine/cache/crc32c.h"
#include "engine/model_int.h"
#include "engine/ops/op.h"

/* ---- header -------------------------------------------------------------- */

#define MAGIC "ESCMODEL"
#define MAGIC_LEN 8
#define OFF_HEADER_SIZE 12   /* u32 */
#define ENGINE_LEN 32
#define CPU_LEN 160
#define OFF_OPTIONS_RESERVED 216 /* 24 bytes, zero: room for more options */
#define OPTIONS_RESERVED_LEN 24
#define OFF_RESERVED 292     /* 24 bytes, zero */
#define RESERVED_LEN 24

#define OPT_NO_OPTIMIZE 1u   /* bit 0 of the options word */
#define KNOWN_OPTIONS OPT_NO_OPTIMIZE

_Static_assert(sizeof(ES_ENGINE_VERSION) <= ENGINE_LEN,
	       "the engine version must fit its header field");
_Static_assert(ES_COMPILED_OFF_HEADER_CRC + 4 == ES_COMPILED_HEADER_SIZE,
	       "the header checksum is the header's last field");
_Static_assert(ES_COMPILED_HEADER_SIZE % ES_ALIGN == 0,
	       "the payload (and so the data area) must stay 64-byte aligned");

/* ---- payload ------------------------------------------------------------- */

/* Sections, in the order the writer lays them out. */
enum {
	S_VALUES, S_TENSORS, S_NODES, S_ATTRS, S_NODE_IO, S_GRAPH_INPUTS,
	S_GRAPH_OUTPUTS, S_OPSETS, S_ARRAYS, S_STRINGS, S_DATA, N_SECT
};

/* Record sizes in bytes (1 for the byte areas). */
#define VALUE_REC 152
#define TENSOR_REC 88
#define NODE_REC 56
#define ATTR_REC 56
#define OPSET_REC 16

static const size_t rec_size[N_SECT] = {
	[S_VALUES] = VALUE_REC, [S_TENSORS] = TENSOR_REC, [S_NODES] = NODE_REC,
	[S_ATTRS] = ATTR_REC, [S_NODE_IO] = 4, [S_GRAPH_INPUTS] = 4,
	[S_GRAPH_OUTPUTS] = 4, [S_OPSETS] = OPSET_REC, [S_ARRAYS] = 1,
	[S_STRINGS] = 1, [S_DATA] = 1,
};

static const char *const sect_name[N_SECT] = {
	[S_VALUES] = "value table", [S_TENSORS] = "tensor table",
	[S_NODES] = "node table", [S_ATTRS] = "attribute table",
	[S_NODE_IO] = "node input/output list", [S_GRAPH_INPUTS] = "graph input list",
	[S_GRAPH_OUTPUTS] = "graph output list", [S_OPSETS] = "opset table",
	[S_ARRAYS] = "attribute array area", [S_STRINGS] = "string table",
	[S_DATA] = "data area",
};

/* Payload head: model opset (i64), graph name (string ref), then per
 * section its offset in the payload and its record count (u64 each). */
#define P_OPSET 0
#define P_GRAPH_NAME 8
#define P_SECTIONS 16
#define HEAD_SIZE (P_SECTIONS + 16 * N_SECT)

/* A string ref is (u32 offset, u32 length) into the string table, where
 * the string's bytes are followed by a NUL; offset NO_STRING is NULL. */
#define NO_STRING 0xFFFFFFFFu
#define NO_TENSOR 0xFFFFFFFFu

/* value record */
#define V_NAME 0
#define V_DTYPE 8
#define V_NDIM 12
#define V_DIMS 16         /* i64[8] */
#define V_DIM_PARAMS 80   /* string ref[8] */
#define V_FLAGS 144
#define V_TENSOR 148
#define VF_INPUT 1u
#define VF_OUTPUT 2u
#define VF_CONSTANT 4u

/* tensor record */
#define T_DTYPE 0
#define T_NDIM 4
#define T_DIMS 8          /* i64[8] */
#define T_DATA_OFF 72     /* in the payload, 64-byte aligned, in S_DATA */
#define T_NBYTES 80

/* node record */
#define N_NAME 0
#define N_OP_TYPE 8
#define N_DOMAIN 16
#define N_N_INPUTS 24
#define N_N_OUTPUTS 28
#define N_N_ATTRS 32
#define N_RESERVED 36
#define N_IO_START 40     /* first entry in S_NODE_IO: inputs, then outputs */
#define N_ATTR_START 48   /* first record in S_ATTRS */

/* attribute record */
#define A_NAME 0
#define A_TYPE 8
#define A_F 12            /* float bits */
#define A_I 16
#define A_S 24            /* string ref (STRING) */
#define A_TENSOR 32       /* tensor index (TENSOR) or NO_TENSOR */
#define A_RESERVED 36
#define A_N 40            /* element count (FLOATS, INTS, STRINGS; STRING: as held) */
#define A_ARRAY_OFF 48    /* byte offset in S_ARRAYS */

/* opset record */
#define O_DOMAIN 0
#define O_VERSION 8

/* The loader's limits, kept by the writer too so that what it writes
 * always loads. */
#define MAX_NODE_IO 4096
#define MAX_NODE_ATTRS 4096

/* ---- little-endian fields ------------------------------------------------ */

static void put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p)
{
	return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

static int32_t get_i32(const uint8_t *p)
{
	return (int32_t)get_u32(p);
}

static int64_t get_i64(const uint8_t *p)
{
	return (int64_t)get_u64(p);
}

static size_t align_up(size_t v, size_t a)
{
	return (v + a - 1) & ~(a - 1);
}

/* ---- engine facts -------------------------------------------------------- */

const char *es_engine_version(void)
{
	return ES_ENGINE_VERSION;
}

static char cpu_line[CPU_LEN];
static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;

static const char *onednn_isa_name(dnnl_cpu_isa_t isa, char *buf, size_t len)
{
	switch (isa) {
	case dnnl_cpu_isa_all: return "all";
	case dnnl_cpu_isa_sse41: return "sse41";
	case dnnl_cpu_isa_avx: return "avx";
	case dnnl_cpu_isa_avx2: return "avx2";
	case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
	case dnnl_cpu_isa_avx512_mic: return "avx512_mic";
	case dnnl_cpu_isa_avx512_mic_4ops: return "avx512_mic_4ops";
	case dnnl_cpu_isa_avx512_core: return "avx512_core";
	case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
	case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
	case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
	default:
		snprintf(buf, len, "0x%x", (unsigned)isa);
		return buf;
	}
}

#if defined(__x86_64__) && defined(__clang__)
/* clang's __builtin_cpu_supports knows neither f16c nor amx-tile: ask
 * cpuid, and the OS (XCR0) whether it saves the registers involved. */
static uint64_t read_xcr0(void)
{
	uint32_t lo, hi;
	__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	return (uint64_t)hi << 32 | lo;
}

static bool cpuid_f16c(void)
{
	unsigned a, b, c, d;
	if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27)) /* OSXSAVE */)
		return false;
	return (c & (1u << 29)) && (read_xcr0() & 0x6) == 0x6;
}

static bool cpuid_amx_tile(void)
{
	unsigned a, b, c, d;
	if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27)))
		return false;
	if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
		return false;
	return (d & (1u << 24)) && (read_xcr0() & 0x60000) == 0x60000;
}
#define HAS_F16C() cpuid_f16c()
#define HAS_AMX_TILE() cpuid_amx_tile()
#else
#define HAS_F16C() __builtin_cpu_supports("f16c")
#define HAS_AMX_TILE() __builtin_cpu_supports("amx-tile")
#endif

static void append(size_t *at, const char *s)
{
	size_t len = strlen(s);
	if (*at + len < sizeof(cpu_line)) {
		memcpy(cpu_line + *at, s, len + 1);
		*at += len;
	}
}

static void detect_cpu(void)
{
	size_t at = 0;
	char buf[32];
#if defined(__x86_64__)
	append(&at, "x86_64");
	if (__builtin_cpu_supports("avx2"))
		append(&at, " avx2");
	if (__builtin_cpu_supports("fma"))
		append(&at, " fma");
	if (__builtin_cpu_supports("avx512f"))
		append(&at, " avx512f");
	if (__builtin_cpu_supports("avx512bw"))
		append(&at, " avx512bw");
	if (__builtin_cpu_supports("avx512vl"))
		append(&at, " avx512vl");
	if (__builtin_cpu_supports("avx512vnni"))
		append(&at, " avx512_vnni");
	if (__builtin_cpu_supports("avx512bf16"))
		append(&at, " avx512_bf16");
	if (HAS_AMX_TILE())
		append(&at, " amx_tile");
	if (HAS_F16C())
		append(&at, " f16c");
#elif defined(__aarch64__)
	append(&at, "aarch64");
#else
	append(&at, "unknown-arch");
#endif
	append(&at, "; onednn isa ");
	append(&at, onednn_isa_name(dnnl_get_effective_cpu_isa(), buf, sizeof(buf)));
	/* kernels store weights packed in oneDNN's layouts (save_attrs):
	 * another oneDNN release may choose other layouts */
	const dnnl_version_t *v = dnnl_version();
	snprintf(buf, sizeof(buf), " %d.%d.%d", v->major, v->minor, v->patch);
	append(&at, buf);
}

const char *es_engine_cpu_features(void)
{
	pthread_once(&cpu_once, detect_cpu);
	return cpu_line;
}

static uint64_t options_word(const es_model_options *o)
{
	return o && o->no_optimize ? OPT_NO_OPTIMIZE : 0;
}

/* ---- writing ------------------------------------------------------------- */

/*
 * The writer walks the graph twice with the same code: first to measure
 * (meta == NULL: records go to a scratch buffer, cursors only count), then
 * to fill the metadata buffer laid out from those counts. Tensors are
 * collected in the first walk; their data is streamed after the metadata.
 */
typedef struct writer {
	const es_graph *g;
	uint8_t *meta;              /* NULL while measuring */
	size_t sect_off[N_SECT];    /* payload offsets of the sections */
	size_t cur[N_SECT];         /* records (or bytes) emitted so far */
	const es_tensor **tensors;  /* in tensor-table order */
	size_t n_tensors, cap_tensors;
	size_t *tensor_off;         /* payload offset of each tensor's data */
	bool *stored;               /* false: same bytes as an earlier tensor */
	/* per tensor (collected in the first walk): data of a kernel-saved
	 * attribute, stored after every other tensor's, outside the part
	 * the payload checksum covers (its kernel checks it) */
	bool *saved;
	size_t cap_saved;
	bool in_saved_attr;         /* put_attr is storing a kernel-saved one */
	uint8_t scratch[VALUE_REC];
	/* per node: the attributes its kernel saves (op->save_attrs), asked
	 * once before both walks so they see the same set */
	es_attr **extra;
	int *n_extra;
	es_error *err;
} writer;

static bool saved_attr_name(const char *name)
{
	return name && !strncmp(name, ES_SAVED_ATTR_PREFIX, strlen(ES_SAVED_ATTR_PREFIX));
}

/* Asks every kernel with a save_attrs hook for its attributes. */
static int collect_saved_attrs(writer *w)
{
	const es_graph *g = w->g;
	w->extra = calloc((size_t)g->n_nodes + 1, sizeof(*w->extra));
	w->n_extra = calloc((size_t)g->n_nodes + 1, sizeof(*w->n_extra));
	if (!w->extra || !w->n_extra)
		return es_error_set(w->err, ES_ENOMEM, "out of memory");
	for (int n = 0; n < g->n_nodes; n++) {
		const es_node *node = &g->nodes[n];
		if (!node->op || !node->op->save_attrs || !node->state)
			continue;
		int rc = node->op->save_attrs(node->state, node, &w->extra[n],
					      &w->n_extra[n], w->err);
		if (rc)
			return rc;
		for (int a = 0; a < w->n_extra[n]; a++)
			if (!saved_attr_name(w->extra[n][a].name))
				return es_error_set(w->err, ES_EINTERNAL,
					"node '%s': kernel attribute '%s' lacks the '%s' prefix",
					node->name, w->extra[n][a].name, ES_SAVED_ATTR_PREFIX);
	}
	return 0;
}

static void free_saved_attrs(writer *w)
{
	for (int n = 0; w->extra && n < w->g->n_nodes; n++) {
		for (int a = 0; a < w->n_extra[n]; a++)
			es_attr_clear(w->g, &w->extra[n][a]);
		free(w->extra[n]);
	}
	free(w->extra);
	free(w->n_extra);
}

static uint8_t *next_rec(writer *w, int s)
{
	size_t i = w->cur[s]++;
	if (!w->meta) {
		memset(w->scratch, 0, sizeof(w->scratch));
		return w->scratch;
	}
	return w->meta + w->sect_off[s] + i * rec_size[s];
}

/* Appends s (with its NUL) to the string table and stores its ref. */
static void put_str(writer *w, uint8_t *ref, const char *s)
{
	if (!s) {
		put_u32(ref, NO_STRING);
		put_u32(ref + 4, 0);
		return;
	}
	size_t len = strlen(s);
	size_t at = w->cur[S_STRINGS];
	if (w->meta)
		memcpy(w->meta + w->sect_off[S_STRINGS] + at, s, len + 1);
	w->cur[S_STRINGS] += len + 1;
	/* the string table's size is checked against u32 after measuring */
	put_u32(ref, (uint32_t)at);
	put_u32(ref + 4, (uint32_t)len);
}

static uint64_t put_array(writer *w, const void *data, size_t bytes)
{
	size_t at = align_up(w->cur[S_ARRAYS], 8);
	if (w->meta && data && bytes)
		memcpy(w->meta + w->sect_off[S_ARRAYS] + at, data, bytes);
	w->cur[S_ARRAYS] = at + bytes;
	return at;
}

static int put_tensor(writer *w, const es_tensor *t, uint32_t *index,
		      const char *holder_kind, const char *holder)
{
	size_t i = w->cur[S_TENSORS];
	int64_t numel;
	/* the loader accepts exactly this, so check it here too */
	if (t->ndim < 0 || t->ndim > ES_MAX_DIMS || !es_dtype_size(t->dtype) ||
	    es_shape_numel(t->dims, t->ndim, es_dtype_size(t->dtype), &numel) ||
	    (size_t)numel * es_dtype_size(t->dtype) != t->nbytes ||
	    (t->nbytes && !t->data))
		return es_error_set(w->err, ES_EINTERNAL,
			"%s '%s': constant tensor is malformed", holder_kind, holder);
	if (i >= NO_TENSOR)
		return es_error_set(w->err, ES_ETOOLARGE,
			"model has more than %u constant tensors", NO_TENSOR - 1);
	uint8_t *r = next_rec(w, S_TENSORS);
	if (!w->meta) {
		if (w->n_tensors == w->cap_tensors) {
			size_t cap = w->cap_tensors ? 2 * w->cap_tensors : 64;
			const es_tensor **p = realloc(w->tensors, cap * sizeof(*p));
			if (!p)
				return es_error_set(w->err, ES_ENOMEM, "out of memory");
			w->tensors = p;
			w->cap_tensors = cap;
		}
		if (w->n_tensors >= w->cap_saved) {
			size_t cap = w->cap_tensors;
			bool *sv = realloc(w->saved, cap * sizeof(*sv));
			if (!sv)
				return es_error_set(w->err, ES_ENOMEM, "out of memory");
			w->saved = sv;
			w->cap_saved = cap;
		}
		w->saved[w->n_tensors] = w->in_saved_attr;
		w->tensors[w->n_tensors++] = t;
	}
	put_u32(r + T_DTYPE, (uint32_t)t->dtype);
	put_u32(r + T_NDIM, (uint32_t)t->ndim);
	for (int d = 0; d < ES_MAX_DIMS; d++)
		put_u64(r + T_DIMS + 8 * d, (uint64_t)(d < t->ndim ? t->dims[d] : 0));
	put_u64(r + T_DATA_OFF, w->meta ? w->tensor_off[i] : 0);
	put_u64(r + T_NBYTES, t->nbytes);
	*index = (uint32_t)i;
	return 0;
}

static int put_attr(writer *w, const es_node *n, const es_attr *a)
{
	uint8_t *r = next_rec(w, S_ATTRS);
	uint32_t ti = NO_TENSOR, fbits;
	uint64_t off = 0;
	int rc;

	switch (a->type) {
	case ES_ATTR_GRAPH:
	case ES_ATTR_GRAPHS:
		return es_error_set(w->err, ES_EUNSUPPORTED,
			"node '%s' (%s): attribute '%s' holds a graph, which the compiled form does not store",
			n->name, n->op_type, a->name);
	case ES_ATTR_TENSOR:
		if (!a->t)
			return es_error_set(w->err, ES_EINTERNAL,
				"node '%s': tensor attribute '%s' is empty", n->name, a->name);
		w->in_saved_attr = saved_attr_name(a->name);
		rc = put_tensor(w, a->t, &ti, "node", n->name);
		w->in_saved_attr = false;
		if (rc)
			return rc;
		break;
	case ES_ATTR_FLOATS:
		off = put_array(w, a->floats, a->n * sizeof(float));
		break;
	case ES_ATTR_INTS:
		off = put_array(w, a->ints, a->n * sizeof(int64_t));
		break;
	case ES_ATTR_STRINGS: {
		/* an array of string refs, reserved (zeroed), then filled */
		off = put_array(w, NULL, a->n * 8);
		for (size_t i = 0; i < a->n; i++) {
			uint8_t ref[8];
			put_str(w, ref, a->strings[i]);
			if (w->meta)
				memcpy(w->meta + w->sect_off[S_ARRAYS] + off + 8 * i, ref, 8);
		}
		break;
	}
	default:
		if ((unsigned)a->type > ES_ATTR_TYPE_PROTOS)
			return es_error_set(w->err, ES_EUNSUPPORTED,
				"node '%s': attribute '%s' has unknown type %d",
				n->name, a->name, (int)a->type);
		break;
	}
	put_str(w, r + A_NAME, a->name);
	put_u32(r + A_TYPE, (uint32_t)a->type);
	memcpy(&fbits, &a->f, 4);
	put_u32(r + A_F, fbits);
	put_u64(r + A_I, (uint64_t)a->i);
	put_str(w, r + A_S, a->type == ES_ATTR_STRING ? a->s : NULL);
	put_u32(r + A_TENSOR, ti);
	put_u64(r + A_N, a->type == ES_ATTR_STRING || a->type == ES_ATTR_FLOATS ||
			 a->type == ES_ATTR_INTS || a->type == ES_ATTR_STRINGS ? a->n : 0);
	put_u64(r + A_ARRAY_OFF, off);
	return 0;
}

static int put_graph(writer *w, uint8_t *head, int64_t opset)
{
	const es_graph *g = w->g;
	int rc;

	put_u64(head + P_OPSET, (uint64_t)opset);
	put_str(w, head + P_GRAPH_NAME, g->name);
	for (int i = 0; i < g->n_opsets; i++) {
		uint8_t *r = next_rec(w, S_OPSETS);
		put_str(w, r + O_DOMAIN, g->opsets[i].domain);
		put_u64(r + O_VERSION, (uint64_t)g->opsets[i].version);
	}
	for (int i = 0; i < g->n_inputs; i++)
		put_u32(next_rec(w, S_GRAPH_INPUTS), (uint32_t)g->inputs[i]);
	for (int i = 0; i < g->n_outputs; i++)
		put_u32(next_rec(w, S_GRAPH_OUTPUTS), (uint32_t)g->outputs[i]);
	for (int v = 0; v < g->n_values; v++) {
		const es_value *val = &g->values[v];
		uint8_t *r = next_rec(w, S_VALUES);
		uint32_t ti = NO_TENSOR, flags = 0;
		if ((unsigned)val->dtype >= 32 || val->ndim < -1 || val->ndim > ES_MAX_DIMS)
			return es_error_set(w->err, ES_EUNSUPPORTED,
				"value '%s': type code %d or rank %d cannot be stored",
				val->name, (int)val->dtype, val->ndim);
		if (val->constant) {
			if ((rc = put_tensor(w, val->constant, &ti, "value", val->name)))
				return rc;
			flags |= VF_CONSTANT;
		}
		flags |= val->is_input ? VF_INPUT : 0;
		flags |= val->is_output ? VF_OUTPUT : 0;
		put_str(w, r + V_NAME, val->name);
		put_u32(r + V_DTYPE, (uint32_t)val->dtype);
		put_u32(r + V_NDIM, (uint32_t)val->ndim);
		for (int d = 0; d < ES_MAX_DIMS; d++) {
			if (val->dims[d] < -1)
				return es_error_set(w->err, ES_EUNSUPPORTED,
					"value '%s': dimension %d is %lld", val->name, d,
					(long long)val->dims[d]);
			put_u64(r + V_DIMS + 8 * d, (uint64_t)val->dims[d]);
			put_str(w, r + V_DIM_PARAMS + 8 * d, val->dim_params[d]);
		}
		put_u32(r + V_FLAGS, flags);
		put_u32(r + V_TENSOR, ti);
	}
	for (int n = 0; n < g->n_nodes; n++) {
		const es_node *node = &g->nodes[n];
		/* the node's own attributes, less kernel-saved ones of an
		 * earlier save: the kernel's current set replaces those */
		int n_attrs = w->n_extra[n];
		for (int a = 0; a < node->n_attrs; a++)
			n_attrs += !saved_attr_name(node->attrs[a].name);
		if (node->n_inputs < 0 || node->n_inputs > MAX_NODE_IO ||
		    node->n_outputs < 0 || node->n_outputs > MAX_NODE_IO ||
		    node->n_attrs < 0 || n_attrs > MAX_NODE_ATTRS)
			return es_error_set(w->err, ES_EUNSUPPORTED,
				"node '%s' (%s): more than %d inputs, outputs or attributes",
				node->name, node->op_type, MAX_NODE_IO);
		uint8_t *r = next_rec(w, S_NODES);
		put_str(w, r + N_NAME, node->name);
		put_str(w, r + N_OP_TYPE, node->op_type);
		put_str(w, r + N_DOMAIN, node->domain);
		put_u32(r + N_N_INPUTS, (uint32_t)node->n_inputs);
		put_u32(r + N_N_OUTPUTS, (uint32_t)node->n_outputs);
		put_u32(r + N_N_ATTRS, (uint32_t)n_attrs);
		put_u64(r + N_IO_START, w->cur[S_NODE_IO]);
		put_u64(r + N_ATTR_START, w->cur[S_ATTRS]);
		for (int i = 0; i < node->n_inputs; i++)
			put_u32(next_rec(w, S_NODE_IO), (uint32_t)node->inputs[i]);
		for (int o = 0; o < node->n_outputs; o++)
			put_u32(next_rec(w, S_NODE_IO), (uint32_t)node->outputs[o]);
		for (int a = 0; a < node->n_attrs; a++)
			if (!saved_attr_name(node->attrs[a].name) &&
			    (rc = put_attr(w, node, &node->attrs[a])))
				return rc;
		for (int a = 0; a < w->n_extra[n]; a++)
			if ((rc = put_attr(w, node, &w->extra[n][a])))
				return rc;
	}
	return 0;
}

/* Writes all of buf, through short writes and EINTR. */
static int write_all(int fd, const void *buf, size_t len, es_error *err)
{
	const uint8_t *p = buf;
	while (len) {
		ssize_t r = write(fd, p, len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return es_error_set(err, ES_EIO, "cannot write compiled model: %s",
					    strerror(errno));
		if (r == 0)
			return es_error_set(err, ES_EIO,
					    "cannot write compiled model: write made no progress");
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

static const uint8_t zeros[ES_ALIGN];

typedef struct tensor_key {
	size_t nbytes;
	uint32_t crc;
	size_t index;
} tensor_key;

static int cmp_tensor_key(const void *pa, const void *pb)
{
	const tensor_key *a = pa, *b = pb;
	if (a->nbytes != b->nbytes)
		return a->nbytes < b->nbytes ? -1 : 1;
	if (a->crc != b->crc)
		return a->crc < b->crc ? -1 : 1;
	return a->index < b->index ? -1 : a->index > b->index;
}

/*
 * Finds constants with the same bytes, which then share one copy in the
 * data area (the data is read-only once loaded). Folding makes them: an
 * exporter that shares one initializer between layers through Identity
 * nodes gets one folded copy per layer. Sets w->stored[i] for the first
 * of each set and *dup_of[i] to that first one.
 */
static int find_duplicates(writer *w, size_t *dup_of)
{
	tensor_key *keys = calloc(w->n_tensors + 1, sizeof(*keys));
	if (!keys)
		return es_error_set(w->err, ES_ENOMEM, "out of memory");
	for (size_t i = 0; i < w->n_tensors; i++) {
		keys[i].nbytes = w->tensors[i]->nbytes;
		keys[i].crc = es_crc32c(0, w->tensors[i]->data, keys[i].nbytes);
		keys[i].index = i;
	}
	qsort(keys, w->n_tensors, sizeof(*keys), cmp_tensor_key);
	for (size_t i = 0; i < w->n_tensors; i++) {
		size_t me = keys[i].index;
		dup_of[me] = me;
		w->stored[me] = true;
		/* earlier members of this (size, crc) run, lowest index first */
		for (size_t j = i; j-- > 0 && keys[j].nbytes == keys[i].nbytes &&
				     keys[j].crc == keys[i].crc;) {
			size_t other = keys[j].index;
			if (w->stored[other] && w->saved[other] == w->saved[me] &&
			    !memcmp(w->tensors[other]->data, w->tensors[me]->data, keys[i].nbytes)) {
				dup_of[me] = other;
				w->stored[me] = false;
			}
		}
	}
	free(keys);
	return 0;
}

int es_model_save_compiled(const es_model *m, int fd,
			   const uint8_t key[ES_COMPILED_KEY_BYTES],
			   es_error *err)
{
	writer w = { .g = m->graph, .err = err };
	uint8_t head_scratch[HEAD_SIZE];
	uint8_t header[ES_COMPILED_HEADER_SIZE];
	size_t *dup_of = NULL;
	int rc;

	if ((rc = collect_saved_attrs(&w)))
		goto out_free;
	/* measure */
	memset(head_scratch, 0, sizeof(head_scratch));
	if ((rc = put_graph(&w, head_scratch, m->opset)))
		goto out_free;
	if (w.cur[S_STRINGS] >= NO_STRING) {
		rc = es_error_set(err, ES_ETOOLARGE,
			"model names and strings take %zu bytes, the compiled form holds at most 4 GiB",
			w.cur[S_STRINGS]);
		goto out_free;
	}

	/* lay out: head, the sections, then the data area */
	size_t counts[N_SECT], at = HEAD_SIZE;
	memcpy(counts, w.cur, sizeof(counts));
	for (int s = 0; s < S_DATA; s++) {
		w.sect_off[s] = at;
		at = align_up(at + counts[s] * rec_size[s], 8);
	}
	size_t meta_len = align_up(at, ES_ALIGN);
	w.sect_off[S_DATA] = meta_len;
	w.tensor_off = calloc(w.n_tensors + 1, sizeof(size_t));
	w.stored = calloc(w.n_tensors + 1, sizeof(bool));
	dup_of = calloc(w.n_tensors + 1, sizeof(size_t));
	w.meta = calloc(1, meta_len);
	if (!w.tensor_off || !w.stored || !dup_of || !w.meta) {
		rc = es_error_set(err, ES_ENOMEM, "out of memory");
		goto out_free;
	}
	if ((rc = find_duplicates(&w, dup_of)))
		goto out_free;
	/* tensor indices ascend in the table, and a duplicate's first copy
	 * has the lower index, so its offset is known when needed */
	size_t data_len = 0, checked_len = 0;
	for (int round = 0; round < 2; round++) {
		/* the kernel-saved attributes' data last, after checked_len */
		for (size_t i = 0; i < w.n_tensors; i++) {
			if (w.saved[i] != (round == 1))
				continue;
			if (!w.stored[i]) {
				w.tensor_off[i] = w.tensor_off[dup_of[i]];
				continue;
			}
			w.tensor_off[i] = meta_len + data_len;
			data_len += align_up(w.tensors[i]->nbytes, ES_ALIGN);
		}
		if (round == 0)
			checked_len = meta_len + data_len;
	}
	counts[S_DATA] = data_len;

	/* fill */
	memset(w.cur, 0, sizeof(w.cur));
	uint8_t *head = w.meta;
	if ((rc = put_graph(&w, head, m->opset)))
		goto out_free;
	for (int s = 0; s < N_SECT; s++) {
		put_u64(head + P_SECTIONS + 16 * s, w.sect_off[s]);
		put_u64(head + P_SECTIONS + 16 * s + 8, counts[s]);
	}

	/* checksum the checked part as it will be written (the tensors in
	 * offset order: non-saved ones first, in table order) */
	uint32_t crc = es_crc32c(0, w.meta, meta_len);
	for (size_t i = 0; i < w.n_tensors; i++) {
		const es_tensor *t = w.tensors[i];
		if (!w.stored[i] || w.saved[i])
			continue;
		crc = es_crc32c(crc, t->data, t->nbytes);
		crc = es_crc32c(crc, zeros, align_up(t->nbytes, ES_ALIGN) - t->nbytes);
	}

	memset(header, 0, sizeof(header));
	memcpy(header, MAGIC, MAGIC_LEN);
	put_u32(header + ES_COMPILED_OFF_FORMAT, ES_COMPILED_FORMAT_VERSION);
	put_u32(header + OFF_HEADER_SIZE, ES_COMPILED_HEADER_SIZE);
	memcpy(header + ES_COMPILED_OFF_ENGINE, ES_ENGINE_VERSION, sizeof(ES_ENGINE_VERSION));
	const char *cpu = es_engine_cpu_features();
	if (strlen(cpu) >= CPU_LEN) {
		rc = es_error_set(err, ES_EINTERNAL, "CPU feature line too long for the header");
		goto out_free;
	}
	memcpy(header + ES_COMPILED_OFF_CPU, cpu, strlen(cpu));
	put_u64(header + ES_COMPILED_OFF_OPTIONS, options_word(&m->opts));
	if (key)
		memcpy(header + ES_COMPILED_OFF_KEY, key, ES_COMPILED_KEY_BYTES);
	put_u64(header + ES_COMPILED_OFF_PAYLOAD_LEN, meta_len + data_len);
	put_u32(header + ES_COMPILED_OFF_PAYLOAD_CRC, crc);
	put_u64(header + ES_COMPILED_OFF_CHECKED_LEN, checked_len);
	put_u32(header + ES_COMPILED_OFF_HEADER_CRC,
		es_crc32c(0, header, ES_COMPILED_OFF_HEADER_CRC));

	if ((rc = write_all(fd, header, sizeof(header), err)) ||
	    (rc = write_all(fd, w.meta, meta_len, err)))
		goto out_free;
	for (int round = 0; round < 2; round++) {
		for (size_t i = 0; i < w.n_tensors; i++) {
			const es_tensor *t = w.tensors[i];
			if (!w.stored[i] || w.saved[i] != (round == 1))
				continue;
			if ((rc = write_all(fd, t->data, t->nbytes, err)) ||
			    (rc = write_all(fd, zeros, align_up(t->nbytes, ES_ALIGN) - t->nbytes,
					    err)))
				goto out_free;
		}
	}
	rc = 0;
out_free:
	free_saved_attrs(&w);
	free(w.meta);
	free(w.tensor_off);
	free(w.stored);
	free(dup_of);
	free(w.tensors);
	free(w.saved);
	return rc;
}

/* ---- reading ------------------------------------------------------------- */

#define BAD(r, ...) es_error_set((r)->err, ES_EPARSE, "compiled model: " __VA_ARGS__)

typedef struct reader {
	const uint8_t *p;            /* payload */
	uint64_t len;
	uint64_t sect_off[N_SECT];
	uint64_t count[N_SECT];
	const uint8_t *sect[N_SECT];
	uint64_t string_budget;      /* bytes strings may still copy out */
	uint64_t array_budget;
	es_tensor *tensors;          /* parsed tensor table (data in the mapping) */
	bool *unchecked;             /* per tensor: data after the checked part */
	uint64_t checked;            /* payload bytes the checksum covered */
	es_graph *g;
	es_error *err;
} reader;

/* Copies the string ref at ref into *out (NULL when the ref says so and
 * nullable). item/index/field name the place for the error message. */
static int read_str(reader *r, const uint8_t *ref, bool nullable, char **out,
		    const char *item, uint64_t index, const char *field)
{
	uint32_t off = get_u32(ref), len = get_u32(ref + 4);
	*out = NULL;
	if (off == NO_STRING) {
		if (nullable && len == 0)
			return 0;
		return BAD(r, "%s %llu %s is missing", item, (unsigned long long)index, field);
	}
	uint64_t end = (uint64_t)off + len;
	if (end >= r->count[S_STRINGS])
		return BAD(r, "%s %llu %s offset out of range", item,
			   (unsigned long long)index, field);
	const char *s = (const char *)r->sect[S_STRINGS] + off;
	if (s[len] != '\0' || memchr(s, '\0', len))
		return BAD(r, "%s %llu %s is not a NUL-terminated string of %u bytes",
			   item, (unsigned long long)index, field, len);
	if ((uint64_t)len + 1 > r->string_budget)
		return BAD(r, "%s %llu %s: strings are referenced more often than the string table allows",
			   item, (unsigned long long)index, field);
	r->string_budget -= (uint64_t)len + 1;
	*out = malloc((size_t)len + 1);
	if (!*out)
		return es_error_set(r->err, ES_ENOMEM, "out of memory");
	memcpy(*out, s, (size_t)len + 1);
	return 0;
}

static int read_sections(reader *r)
{
	if (r->len < HEAD_SIZE)
		return BAD(r, "payload of %llu bytes is shorter than its head (%d)",
			   (unsigned long long)r->len, HEAD_SIZE);
	for (int s = 0; s < N_SECT; s++) {
		uint64_t off = get_u64(r->p + P_SECTIONS + 16 * s);
		uint64_t count = get_u64(r->p + P_SECTIONS + 16 * s + 8);
		uint64_t bytes;
		if (__builtin_mul_overflow(count, (uint64_t)rec_size[s], &bytes) ||
		    off < HEAD_SIZE || off > r->len || bytes > r->len - off)
			return BAD(r, "%s (offset %llu, %llu records) lies outside the payload",
				   sect_name[s], (unsigned long long)off,
				   (unsigned long long)count);
		if (off % (s == S_DATA ? ES_ALIGN : 8))
			return BAD(r, "%s offset %llu is not aligned", sect_name[s],
				   (unsigned long long)off);
		r->sect_off[s] = off;
		r->count[s] = count;
		r->sect[s] = r->p + off;
	}
	/* the IR counts with int */
	static const int int_counted[] = { S_VALUES, S_NODES, S_ATTRS, S_NODE_IO,
					   S_GRAPH_INPUTS, S_GRAPH_OUTPUTS, S_OPSETS };
	for (size_t i = 0; i < sizeof(int_counted) / sizeof(int_counted[0]); i++)
		if (r->count[int_counted[i]] >= INT_MAX)
			return BAD(r, "%s has too many records", sect_name[int_counted[i]]);
	if (r->count[S_TENSORS] >= NO_TENSOR)
		return BAD(r, "tensor table has too many records");
	r->string_budget = r->count[S_STRINGS];
	r->array_budget = r->count[S_ARRAYS];
	return 0;
}

static int read_tensors(reader *r)
{
	uint64_t n = r->count[S_TENSORS];
	r->tensors = calloc(n + 1, sizeof(es_tensor));
	r->unchecked = calloc(n + 1, sizeof(bool));
	if (!r->tensors || !r->unchecked)
		return es_error_set(r->err, ES_ENOMEM, "out of memory");
	uint64_t data_lo = r->sect_off[S_DATA];
	uint64_t data_hi = data_lo + r->count[S_DATA];
	if (r->checked < data_lo || r->checked > data_hi)
		return BAD(r, "the checked part ends at %llu, outside the data area [%llu, %llu]",
			   (unsigned long long)r->checked, (unsigned long long)data_lo,
			   (unsigned long long)data_hi);
	for (uint64_t i = 0; i < n; i++) {
		const uint8_t *rec = r->sect[S_TENSORS] + i * TENSOR_REC;
		es_tensor *t = &r->tensors[i];
		int32_t dt = get_i32(rec + T_DTYPE), ndim = get_i32(rec + T_NDIM);
		size_t esz = dt > 0 ? es_dtype_size((es_dtype)dt) : 0;
		if (!esz)
			return BAD(r, "tensor %llu has unsupported type code %d",
				   (unsigned long long)i, dt);
		if (ndim < 0 || ndim > ES_MAX_DIMS)
			return BAD(r, "tensor %llu has rank %d, outside 0..%d",
				   (unsigned long long)i, ndim, ES_MAX_DIMS);
		t->dtype = (es_dtype)dt;
		t->ndim = ndim;
		for (int d = 0; d < ndim; d++)
			t->dims[d] = get_i64(rec + T_DIMS + 8 * d);
		int64_t numel;
		if (es_shape_numel(t->dims, ndim, esz, &numel))
			return BAD(r, "tensor %llu has a negative dimension or too many elements",
				   (unsigned long long)i);
		uint64_t off = get_u64(rec + T_DATA_OFF), nbytes = get_u64(rec + T_NBYTES);
		if (nbytes != (uint64_t)numel * esz)
			return BAD(r, "tensor %llu holds %llu bytes, its shape needs %llu",
				   (unsigned long long)i, (unsigned long long)nbytes,
				   (unsigned long long)((uint64_t)numel * esz));
		if (off < data_lo || off > data_hi || nbytes > data_hi - off)
			return BAD(r, "tensor %llu data offset out of range", (unsigned long long)i);
		if (off % ES_ALIGN)
			return BAD(r, "tensor %llu data offset %llu is not 64-byte aligned",
				   (unsigned long long)i, (unsigned long long)off);
		if (off < r->checked && nbytes > r->checked - off)
			return BAD(r, "tensor %llu straddles the end of the checked part",
				   (unsigned long long)i);
		r->unchecked[i] = nbytes && off >= r->checked;
		/* borrowed from the read-only mapping: never written, never freed */
		t->data = (void *)(uintptr_t)(r->p + off);
		t->nbytes = (size_t)nbytes;
	}
	return 0;
}

/* A fresh copy of tensor table entry `index` for a holder. */
static int take_tensor(reader *r, uint32_t index, es_tensor **out,
		       const char *item, uint64_t item_index, bool may_be_unchecked)
{
	if (index >= r->count[S_TENSORS])
		return BAD(r, "%s %llu tensor index %u out of range", item,
			   (unsigned long long)item_index, index);
	/* only a kernel-saved attribute's data may lie outside the
	 * checksummed part: its kernel verifies it before use */
	if (r->unchecked[index] && !may_be_unchecked)
		return BAD(r, "%s %llu reads tensor %u, which lies outside the checksummed part",
			   item, (unsigned long long)item_index, index);
	*out = malloc(sizeof(es_tensor));
	if (!*out)
		return es_error_set(r->err, ES_ENOMEM, "out of memory");
	**out = r->tensors[index];
	return 0;
}

static int read_values(reader *r)
{
	es_graph *g = r->g;
	uint64_t n = r->count[S_VALUES];
	int rc;
	g->values = calloc(n + 1, sizeof(es_value));
	if (!g->values)
		return es_error_set(r->err, ES_ENOMEM, "out of memory");
	g->n_values = g->cap_values = (int)n;
	for (uint64_t v = 0; v < n; v++) {
		const uint8_t *rec = r->sect[S_VALUES] + v * VALUE_REC;
		es_value *val = &g->values[v];
		val->producer = -1;
		if ((rc = read_str(r, rec + V_NAME, false, &val->name, "value", v, "name")))
			return rc;
		int32_t dt = get_i32(rec + V_DTYPE), ndim = get_i32(rec + V_NDIM);
		if (dt < 0 || dt >= 32)
			return BAD(r, "value %llu has type code %d", (unsigned long long)v, dt);
		if (ndim < -1 || ndim > ES_MAX_DIMS)
			return BAD(r, "value %llu has rank %d, outside -1..%d",
				   (unsigned long long)v, ndim, ES_MAX_DIMS);
		val->dtype = (es_dtype)dt;
		val->ndim = ndim;
		for (int d = 0; d < ES_MAX_DIMS; d++) {
			val->dims[d] = get_i64(rec + V_DIMS + 8 * d);
			if (val->dims[d] < -1)
				return BAD(r, "value %llu dimension %d is %lld",
					   (unsigned long long)v, d, (long long)val->dims[d]);
			if ((rc = read_str(r, rec + V_DIM_PARAMS + 8 * d, true,
					   &val->dim_params[d], "value", v, "dimension name")))
				return rc;
		}
		uint32_t flags = get_u32(rec + V_FLAGS), ti = get_u32(rec + V_TENSOR);
		if (flags & ~(VF_INPUT | VF_OUTPUT | VF_CONSTANT))
			return BAD(r, "value %llu has unknown flags 0x%x", (unsigned long long)v, flags);
		if ((flags & VF_INPUT) && (flags & VF_CONSTANT))
			return BAD(r, "value %llu is both a graph input and a constant",
				   (unsigned long long)v);
		if (flags & VF_CONSTANT) {
			if ((rc = take_tensor(r, ti, &val->constant, "value", v, false)))
				return rc;
		} else if (ti != NO_TENSOR) {
			return BAD(r, "value %llu has a tensor but is not a constant",
				   (unsigned long long)v);
		}
		val->is_input = flags & VF_INPUT;
		val->is_output = flags & VF_OUTPUT;
	}
	return 0;
}

/* Graph inputs or outputs: each listed value carries the flag, each value
 * with the flag is listed exactly once. */
static int read_io_list(reader *r, int s, int **list, int *n_list, bool inputs)
{
	es_graph *g = r->g;
	uint64_t n = r->count[s];
	const char *what = inputs ? "graph input" : "graph output";
	int flagged = 0, rc = 0;
	for (int v = 0; v < g->n_values; v++)
		flagged += inputs ? g->values[v].is_input : g->values[v].is_output;
	if ((uint64_t)flagged != n)
		return BAD(r, "%d values are marked as %ss but the list has %llu", flagged,
			   what, (unsigned long long)n);
	*list = calloc(n + 1, sizeof(int));
	bool *listed = calloc((size_t)g->n_values + 1, sizeof(bool));
	if (!*list || !listed) {
		free(listed);
		return es_error_set(r->err, ES_ENOMEM, "out of memory");
	}
	for (uint64_t i = 0; i < n; i++) {
		int32_t v = get_i32(r->sect[s] + 4 * i);
		if (v < 0 || v >= g->n_values) {
			rc = BAD(r, "%s %llu value index %d out of range", what,
				 (unsigned long long)i, v);
			break;
		}
		const es_value *val = &g->values[v];
		if (!(inputs ? val->is_input : val->is_output)) {
			rc = BAD(r, "%s %llu ('%s') is not marked as one", what,
				 (unsigned long long)i, val->name);
			break;
		}
		if (listed[v]) {
			rc = BAD(r, "%s '%s' is listed twice", what, val->name);
			break;
		}
		if (inputs && !es_dtype_size(val->dtype)) {
			rc = BAD(r, "graph input '%s' has unsupported type code %d",
				 val->name, (int)val->dtype);
			break;
		}
		listed[v] = true;
		(*list)[i] = v;
		*n_list = (int)i + 1;
	}
	free(listed);
	return rc;
}

static int read_array(reader *r, const uint8_t *rec, size_t elem, void **out,
		      uint64_t node, const char *attr)
{
	uint64_t n = get_u64(rec + A_N), off = get_u64(rec + A_ARRAY_OFF), bytes;
	if (__builtin_mul_overflow(n, (uint64_t)elem, &bytes) ||
	    off > r->count[S_ARRAYS] || bytes > r->count[S_ARRAYS] - off)
		return BAD(r, "node %llu attribute '%s': array out of range",
			   (unsigned long long)node, attr);
	if (bytes > r->array_budget)
		return BAD(r, "node %llu attribute '%s': arrays are referenced more often than their area allows",
			   (unsigned long long)node, attr);
	r->array_budget -= bytes;
	*out = malloc(bytes ? (size_t)bytes : 1);
	if (!*out)
		return es_error_set(r->err, ES_ENOMEM, "out of memory");
	if (bytes)
		memcpy(*out, r->sect[S_ARRAYS] + off, (size_t)bytes);
	return 0;
}

static int read_attr(reader *r, const uint8_t *rec, es_attr *a, uint64_t node,
		     uint64_t index)
{
	void *arr;
	int rc;
	if ((rc = read_str(r, rec + A_NAME, false, &a->name, "attribute", index, "name")))
		return rc;
	if (!a->name[0])
		return BAD(r, "attribute %llu has an empty name", (unsigned long long)index);
	uint32_t type = get_u32(rec + A_TYPE), fbits = get_u32(rec + A_F);
	if (type > ES_ATTR_TYPE_PROTOS || type == ES_ATTR_GRAPH || type == ES_ATTR_GRAPHS)
		return BAD(r, "node %llu attribute '%s' has type %u, which is not stored",
			   (unsigned long long)node, a->name, type);
	a->type = (es_attr_type)type;
	memcpy(&a->f, &fbits, 4);
	a->i = get_i64(rec + A_I);
	if ((rc = read_str(r, rec + A_S, type != ES_ATTR_STRING, &a->s, "attribute",
			   index, "string")))
		return rc;
	if (type != ES_ATTR_STRING && a->s)
		return BAD(r, "attribute %llu has a string but is not of type string",
			   (unsigned long long)index);
	uint32_t ti = get_u32(rec + A_TENSOR);
	if (type == ES_ATTR_TENSOR) {
		if ((rc = take_tensor(r, ti, &a->t, "attribute", index,
				      saved_attr_name(a->name))))
			return rc;
	} else if (ti != NO_TENSOR) {
		return BAD(r, "attribute %llu has a tensor but is not of type tensor",
			   (unsigned long long)index);
	}
	uint64_t n = get_u64(rec + A_N);
	switch (type) {
	case ES_ATTR_STRING:
		a->n = (size_t)n;
		break;
	case ES_ATTR_FLOATS:
		if ((rc = read_array(r, rec, sizeof(float), &arr, node, a->name)))
			return rc;
		a->floats = arr;
		a->n = (size_t)n;
		break;
	case ES_ATTR_INTS:
		if ((rc = read_array(r, rec, sizeof(int64_t), &arr, node, a->name)))
			return rc;
		a->ints = arr;
		a->n = (size_t)n;
		break;
	case ES_ATTR_STRINGS: {
		if ((rc = read_array(r, rec, 8, &arr, node, a->name)))
			return rc;
		uint8_t *refs = arr;
		a->strings = calloc((size_t)n + 1, sizeof(char *));
		if (!a->strings) {
			free(refs);
			return es_error_set(r->err, ES_ENOMEM, "out of memory");
		}
		a->n = (size_t)n;
		for (uint64_t i = 0; i < n && !rc; i++)
			rc = read_str(r, refs + 8 * i, false, &a->strings[i], "attribute",
				      index, "list string");
		free(refs);
		if (rc)
			return rc;
		break;
	}
	default:
		if (n)
			return BAD(r, "attribute %llu of type %u has %llu elements",
				   (unsigned long long)index, type, (unsigned long long)n);
		break;
	}
	return 0;
}

static int read_nodes(reader *r)
{
	es_graph *g = r->g;
	uint64_t n = r->count[S_NODES], io_cur = 0, attr_cur = 0;
	int rc;
	g->nodes = calloc(n + 1, sizeof(es_node));
	if (!g->nodes)
		return es_error_set(r->err, ES_ENOMEM, "out of memory");
	g->n_nodes = g->cap_nodes = (int)n;
	for (uint64_t k = 0; k < n; k++) {
		const uint8_t *rec = r->sect[S_NODES] + k * NODE_REC;
		es_node *node = &g->nodes[k];
		if ((rc = read_str(r, rec + N_NAME, false, &node->name, "node", k, "name")) ||
		    (rc = read_str(r, rec + N_OP_TYPE, false, &node->op_type, "node", k, "op type")) ||
		    (rc = read_str(r, rec + N_DOMAIN, false, &node->domain, "node", k, "domain")))
			return rc;
		if (!node->op_type[0])
			return BAD(r, "node %llu has an empty op type", (unsigned long long)k);
		uint32_t n_in = get_u32(rec + N_N_INPUTS), n_out = get_u32(rec + N_N_OUTPUTS);
		uint32_t n_attrs = get_u32(rec + N_N_ATTRS);
		if (n_in > MAX_NODE_IO || n_out > MAX_NODE_IO || n_attrs > MAX_NODE_ATTRS ||
		    get_u32(rec + N_RESERVED))
			return BAD(r, "node %llu ('%s') has %u inputs, %u outputs and %u attributes (at most %d each)",
				   (unsigned long long)k, node->name, n_in, n_out, n_attrs,
				   MAX_NODE_IO);
		/* each node's entries follow the previous node's: nothing is
		 * shared, so nothing is copied twice */
		if (get_u64(rec + N_IO_START) != io_cur ||
		    n_in + n_out > r->count[S_NODE_IO] - io_cur)
			return BAD(r, "node %llu ('%s') input/output list out of range",
				   (unsigned long long)k, node->name);
		if (get_u64(rec + N_ATTR_START) != attr_cur ||
		    n_attrs > r->count[S_ATTRS] - attr_cur)
			return BAD(r, "node %llu ('%s') attribute list out of range",
				   (unsigned long long)k, node->name);
		node->inputs = calloc((size_t)n_in + 1, sizeof(int));
		node->outputs = calloc((size_t)n_out + 1, sizeof(int));
		node->attrs = calloc((size_t)n_attrs + 1, sizeof(es_attr));
		if (!node->inputs || !node->outputs || !node->attrs)
			return es_error_set(r->err, ES_ENOMEM, "out of memory");
		node->n_inputs = (int)n_in;
		node->n_outputs = (int)n_out;
		node->n_attrs = (int)n_attrs;
		for (uint32_t i = 0; i < n_in + n_out; i++) {
			int32_t v = get_i32(r->sect[S_NODE_IO] + 4 * (io_cur + i));
			if (v < -1 || v >= g->n_values)
				return BAD(r, "node %llu ('%s') %s %u value index %d out of range",
					   (unsigned long long)k, node->name,
					   i < n_in ? "input" : "output",
					   i < n_in ? i : i - n_in, v);
			if (i < n_in)
				node->inputs[i] = v;
			else
				node->outputs[i - n_in] = v;
		}
		io_cur += n_in + n_out;
		for (uint32_t a = 0; a < n_attrs; a++, attr_cur++)
			if ((rc = read_attr(r, r->sect[S_ATTRS] + attr_cur * ATTR_REC,
					    &node->attrs[a], k, attr_cur)))
				return rc;
	}
	if (io_cur != r->count[S_NODE_IO] || attr_cur != r->count[S_ATTRS])
		return BAD(r, "the node table leaves %llu input/output entries and %llu attributes unused",
			   (unsigned long long)(r->count[S_NODE_IO] - io_cur),
			   (unsigned long long)(r->count[S_ATTRS] - attr_cur));
	return 0;
}

static int read_graph(reader *r, int64_t *opset)
{
	es_graph *g = r->g;
	int rc;
	if ((rc = read_sections(r)) || (rc = read_tensors(r)))
		return rc;
	if ((rc = read_str(r, r->p + P_GRAPH_NAME, false, &g->name, "graph", 0, "name")))
		return rc;
	*opset = get_i64(r->p + P_OPSET);
	uint64_t n_opsets = r->count[S_OPSETS];
	g->opsets = calloc(n_opsets + 1, sizeof(es_opset_import));
	if (!g->opsets)
		return es_error_set(r->err, ES_ENOMEM, "out of memory");
	for (uint64_t i = 0; i < n_opsets; i++) {
		const uint8_t *rec = r->sect[S_OPSETS] + i * OPSET_REC;
		if ((rc = read_str(r, rec + O_DOMAIN, false, &g->opsets[i].domain, "opset", i,
				   "domain")))
			return rc;
		g->opsets[i].version = get_i64(rec + O_VERSION);
		g->n_opsets = (int)i + 1;
	}
	if ((rc = read_values(r)) ||
	    (rc = read_io_list(r, S_GRAPH_INPUTS, &g->inputs, &g->n_inputs, true)) ||
	    (rc = read_io_list(r, S_GRAPH_OUTPUTS, &g->outputs, &g->n_outputs, false)) ||
	    (rc = read_nodes(r)))
		return rc;
	if (g->n_outputs == 0)
		return BAD(r, "graph has no outputs");
	if (*opset != es_graph_opset(g, ""))
		return BAD(r, "model opset %lld does not match its opset imports (%lld)",
			   (long long)*opset, (long long)es_graph_opset(g, ""));
	return 0;
}

/* Header field check: a NUL-terminated string padded with NULs. */
static bool field_is_padded_string(const uint8_t *p, size_t len)
{
	const uint8_t *nul = memchr(p, 0, len);
	if (!nul)
		return false;
	for (const uint8_t *q = nul; q < p + len; q++)
		if (*q)
			return false;
	return true;
}

static bool all_zero(const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i])
			return false;
	return true;
}

static int check_header(const uint8_t *h, uint64_t size, const es_model_options *opts,
			const uint8_t *key, es_error *err)
{
	const int hs = ES_COMPILED_HEADER_SIZE;
	if (size < ES_COMPILED_OFF_FORMAT + 4)
		return es_error_set(err, ES_EPARSE,
			"compiled model: truncated: %llu bytes, the header alone takes %d",
			(unsigned long long)size, hs);
	if (memcmp(h, MAGIC, MAGIC_LEN))
		return es_error_set(err, ES_EPARSE,
			"compiled model: bad magic (not a compiled model file)");
	uint32_t format = get_u32(h + ES_COMPILED_OFF_FORMAT);
	if (format != ES_COMPILED_FORMAT_VERSION)
		return es_error_set(err, ES_ESTALE,
			"compiled model: format version differs: file %u, this engine %d",
			format, ES_COMPILED_FORMAT_VERSION);
	if (size < (uint64_t)hs)
		return es_error_set(err, ES_EPARSE,
			"compiled model: truncated: %llu bytes, the header alone takes %d",
			(unsigned long long)size, hs);
	if (get_u32(h + OFF_HEADER_SIZE) != (uint32_t)hs)
		return es_error_set(err, ES_EPARSE,
			"compiled model: header size %u, format version %d has %d",
			get_u32(h + OFF_HEADER_SIZE), ES_COMPILED_FORMAT_VERSION, hs);
	uint32_t hcrc = es_crc32c(0, h, ES_COMPILED_OFF_HEADER_CRC);
	if (hcrc != get_u32(h + ES_COMPILED_OFF_HEADER_CRC))
		return es_error_set(err, ES_EPARSE,
			"compiled model: header checksum mismatch (stored 0x%08x, computed 0x%08x)",
			get_u32(h + ES_COMPILED_OFF_HEADER_CRC), hcrc);
	if (!field_is_padded_string(h + ES_COMPILED_OFF_ENGINE, ENGINE_LEN) ||
	    !field_is_padded_string(h + ES_COMPILED_OFF_CPU, CPU_LEN) ||
	    !all_zero(h + OFF_OPTIONS_RESERVED, OPTIONS_RESERVED_LEN) ||
	    !all_zero(h + OFF_RESERVED, RESERVED_LEN))
		return es_error_set(err, ES_EPARSE,
			"compiled model: malformed header (string fields must be NUL-padded, reserved bytes zero)");

	/* staleness: each field named, strings with both values */
	const char *engine = (const char *)h + ES_COMPILED_OFF_ENGINE;
	if (strcmp(engine, ES_ENGINE_VERSION))
		return es_error_set(err, ES_ESTALE,
			"compiled model: engine version differs: file '%s', this engine '%s'",
			engine, ES_ENGINE_VERSION);
	const char *cpu = (const char *)h + ES_COMPILED_OFF_CPU;
	if (strcmp(cpu, es_engine_cpu_features()))
		return es_error_set(err, ES_ESTALE,
			"compiled model: CPU features differ: file '%s', this machine '%s'",
			cpu, es_engine_cpu_features());
	uint64_t file_opts = get_u64(h + ES_COMPILED_OFF_OPTIONS);
	if (file_opts != options_word(opts)) {
		if (file_opts & ~(uint64_t)KNOWN_OPTIONS)
			return es_error_set(err, ES_ESTALE,
				"compiled model: options differ: file has option bits 0x%llx this engine does not know",
				(unsigned long long)file_opts);
		return es_error_set(err, ES_ESTALE,
			"compiled model: options differ: file built with no_optimize=%d, loading with no_optimize=%d",
			(int)(file_opts & OPT_NO_OPTIMIZE), opts && opts->no_optimize);
	}
	static const uint8_t zero_key[ES_COMPILED_KEY_BYTES];
	if (memcmp(h + ES_COMPILED_OFF_KEY, key ? key : zero_key, ES_COMPILED_KEY_BYTES))
		return es_error_set(err, ES_ESTALE,
			"compiled model: key differs (it was compiled from other source files)");

	uint64_t plen = get_u64(h + ES_COMPILED_OFF_PAYLOAD_LEN);
	if (plen != size - (uint64_t)hs)
		return es_error_set(err, ES_EPARSE,
			"compiled model: %s: header says %llu payload bytes, the file has %llu",
			plen > size - (uint64_t)hs ? "truncated" : "trailing bytes",
			(unsigned long long)plen, (unsigned long long)(size - (uint64_t)hs));
	/* every core: the first pass over a fresh mapping is the load's
	 * largest cost (docs/engine.md, "Checksum") */
	uint64_t checked = get_u64(h + ES_COMPILED_OFF_CHECKED_LEN);
	if (checked > plen)
		return es_error_set(err, ES_EPARSE,
			"compiled model: the checksum covers %llu bytes of a %llu-byte payload",
			(unsigned long long)checked, (unsigned long long)plen);
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	uint32_t crc = es_crc32c_parallel(h + hs, (size_t)checked,
					  cores > 1 ? (int)(cores < 4 ? cores : 4) : 1);
	if (crc != get_u32(h + ES_COMPILED_OFF_PAYLOAD_CRC))
		return es_error_set(err, ES_EPARSE,
			"compiled model: payload checksum mismatch (stored 0x%08x, computed 0x%08x)",
			get_u32(h + ES_COMPILED_OFF_PAYLOAD_CRC), crc);
	return 0;
}

int es_model_load_compiled(const char *path, const es_model_options *opts,
			   const uint8_t key[ES_COMPILED_KEY_BYTES],
			   es_model **out, es_error *err)
{
	es_error local;
	struct stat st;
	int rc;
	if (!err)
		err = &local;
	es_error_clear(err);

	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return es_error_set(err, ES_EIO, "cannot open compiled model '%s': %s", path,
				    strerror(errno));
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return es_error_set(err, ES_EIO, "compiled model '%s' is not a regular file", path);
	}
	size_t size = (size_t)st.st_size;
	if (size < ES_COMPILED_HEADER_SIZE) {
		/* too short to map usefully; read what is there for the message */
		uint8_t h[ES_COMPILED_HEADER_SIZE];
		ssize_t got;
		do
			got = pread(fd, h, size, 0);
		while (got < 0 && errno == EINTR);
		close(fd);
		if (got != (ssize_t)size)
			return es_error_set(err, ES_EIO, "cannot read compiled model '%s'", path);
		rc = check_header(h, size, opts, key, err);
		return rc ? rc : es_error_set(err, ES_EINTERNAL, "compiled model: short header accepted");
	}
	void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
	close(fd);
	if (map == MAP_FAILED)
		return es_error_set(err, ES_EIO, "cannot map compiled model '%s': %s", path,
				    strerror(errno));
	if ((rc = check_header(map, size, opts, key, err))) {
		munmap(map, size);
		return rc;
	}

	reader r = {
		.p = (const uint8_t *)map + ES_COMPILED_HEADER_SIZE,
		.len = size - ES_COMPILED_HEADER_SIZE,
		.checked = get_u64((const uint8_t *)map + ES_COMPILED_OFF_CHECKED_LEN),
		.err = err,
	};
	r.g = es_graph_new();
	if (!r.g) {
		munmap(map, size);
		return es_error_set(err, ES_ENOMEM, "out of memory");
	}
	/* from here on the graph owns the mapping */
	r.g->backing = map;
	r.g->backing_len = size;
	int64_t opset = 0;
	rc = read_graph(&r, &opset);
	free(r.tensors);
	free(r.unchecked);
	if (rc) {
		es_graph_free(r.g);
		return rc;
	}
	rc = es_model_from_graph(r.g, NULL, opts, out, err);
	/* the checksum matched, so a graph the pipeline rejects was written
	 * wrong or crafted: still a malformed file */
	if (rc && rc != ES_ENOMEM) {
		es_error_prefix(err, "compiled model");
		err->code = ES_EPARSE;
		rc = ES_EPARSE;
	}
	return rc;
}
