/*
 * Operator family: elementwise.
 *
 * Unary math and activations, binary arithmetic / comparison / logic with
 * multidirectional (numpy) broadcasting, the variadic Max/Min/Sum/Mean,
 * Where, Clip, Cast and CastLike.
 *
 * Layout of this file:
 *   1. dtype lists and scalar helpers
 *   2. the broadcasting engine (shape, plan, strided execution)
 *   3. binary operators
 *   4. variadic operators
 *   5. Where
 *   6. unary operators and Clip
 *   7. Cast and CastLike
 *   8. the op table
 *
 * Typed inner loops are generated from X-macro dtype lists. Each list entry
 * is (suffix, dtype, storage type S, compute type C, wide unsigned type U,
 * load, store): float16 and bfloat16 are stored as uint16_t and computed
 * in float; integer arithmetic that may overflow is done in U (wrapping,
 * never undefined behaviour) and converted back.
 */
#include <float.h>
#include <limits.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <tgmath.h>

#include "base/fp16.h"
#include "engine/ops/families.h"
#include "engine/ops/op_util.h"
#include "engine/opt/opt.h"

/* Below this many elements a kernel runs on one thread. */
#define PAR_MIN_ELEMS (1 << 15)
/* Elements handed to one call of an inner loop when splitting a long run. */
#define CHUNK_ELEMS (1 << 14)

/* ---- 1. dtype lists and scalar helpers ---------------------------------- */

#define ID(v) (v)
#define LD_BOOL(v) ((uint8_t)((v) != 0))

/*      op  sfx   dtype           S         C       U         load              store */
#define TYPES_F32_F64(X, OP)                                                              \
	X(OP, f32, ES_DT_FLOAT, float, float, float, ID, ID)                              \
	X(OP, f64, ES_DT_DOUBLE, double, double, double, ID, ID)
#define TYPES_HALF(X, OP)                                                                 \
	X(OP, f16, ES_DT_FLOAT16, uint16_t, float, float, es_half_to_float, es_float_to_half) \
	X(OP, bf16, ES_DT_BFLOAT16, uint16_t, float, float, es_bf16_to_float, es_float_to_bf16)
#define TYPES_FLOAT(X, OP) TYPES_F32_F64(X, OP) TYPES_HALF(X, OP)
#define TYPES_SINT(X, OP)                                                                 \
	X(OP, i8, ES_DT_INT8, int8_t, int8_t, uint32_t, ID, ID)                           \
	X(OP, i16, ES_DT_INT16, int16_t, int16_t, uint32_t, ID, ID)                       \
	X(OP, i32, ES_DT_INT32, int32_t, int32_t, uint32_t, ID, ID)                       \
	X(OP, i64, ES_DT_INT64, int64_t, int64_t, uint64_t, ID, ID)
#define TYPES_UINT(X, OP)                                                                 \
	X(OP, u8, ES_DT_UINT8, uint8_t, uint8_t, uint32_t, ID, ID)                        \
	X(OP, u16, ES_DT_UINT16, uint16_t, uint16_t, uint32_t, ID, ID)                    \
	X(OP, u32, ES_DT_UINT32, uint32_t, uint32_t, uint32_t, ID, ID)                    \
	X(OP, u64, ES_DT_UINT64, uint64_t, uint64_t, uint64_t, ID, ID)
#define TYPES_BOOL(X, OP) X(OP, b, ES_DT_BOOL, uint8_t, uint8_t, uint32_t, LD_BOOL, ID)
#define TYPES_INT(X, OP) TYPES_SINT(X, OP) TYPES_UINT(X, OP)

/* Designated initializer entry "[dtype] = OP_sfx," for dispatch tables. */
#define FN_ENTRY(OP, sfx, dt, S, C, U, LD, ST) [dt] = OP##_##sfx,

/* dt can index the per-dtype tables */
static bool dt_valid(es_dtype dt)
{
	return (unsigned)dt < ES_DT_COUNT;
}

static bool same_shape(int ndim, const int64_t *dims, const es_tensor *t)
{
	if (t->ndim != ndim)
		return false;
	for (int d = 0; d < ndim; d++)
		if (t->dims[d] != dims[d])
			return false;
	return true;
}

/* Element i of an integer tensor as int64 (uint64 above INT64_MAX
 * saturates). */
static int64_t elem_get_i64(es_dtype dt, const void *p, int64_t i)
{
	switch (dt) {
	case ES_DT_INT8: return ((const int8_t *)p)[i];
	case ES_DT_INT16: return ((const int16_t *)p)[i];
	case ES_DT_INT32: return ((const int32_t *)p)[i];
	case ES_DT_INT64: return ((const int64_t *)p)[i];
	case ES_DT_UINT8: return ((const uint8_t *)p)[i];
	case ES_DT_UINT16: return ((const uint16_t *)p)[i];
	case ES_DT_UINT32: return ((const uint32_t *)p)[i];
	case ES_DT_UINT64: {
		uint64_t v = ((const uint64_t *)p)[i];
		return v > INT64_MAX ? INT64_MAX : (int64_t)v;
	}
	case ES_DT_BOOL: return ((const uint8_t *)p)[i] != 0;
	default: return (int64_t)es_op_load_f64(dt, p, i);
	}
}

/* ---- 2. the broadcasting engine ----------------------------------------- */

#define BC_MAX_IN 3

/*
 * An inner loop over n elements: out[i] = f(in[0][i * inc[0]], ...).
 * inc[j] is 1 when operand j advances with the output, 0 when it is
 * broadcast along this run. out may alias an operand whose inc is 1.
 */
typedef void (*bc_fn)(int64_t n, void *out, const void *const *in,
		      const int64_t *inc, const void *ctx);

/*
 * The iteration plan: the output shape with size-1 dims dropped and
 * adjacent dims merged while every operand is either broadcast on both or
 * contiguous on both. Equal shapes collapse to one dim; [N,C] + [C] to two
 * (the bias add); x + scalar to one with the scalar's inc 0.
 */
typedef struct bc_plan {
	int nin;
	int ndim;                              /* >= 1 */
	int64_t dims[ES_MAX_DIMS];
	int64_t stride[BC_MAX_IN][ES_MAX_DIMS]; /* in elements; 0: broadcast */
	int64_t numel;
} bc_plan;

/*
 * Output shape of multidirectional broadcasting of ins[0..n). Fails with
 * ES_ESHAPE naming the input shapes when they are incompatible.
 */
static int bc_shape(es_kctx *k, int n, const es_tensor *const *ins,
		    int *ndim_out, int64_t *dims)
{
	int ndim = 0;
	for (int j = 0; j < n; j++)
		if (ins[j]->ndim > ndim)
			ndim = ins[j]->ndim;
	for (int d = 0; d < ndim; d++) {
		int64_t size = 1;
		for (int j = 0; j < n; j++) {
			const es_tensor *t = ins[j];
			int td = d - (ndim - t->ndim);
			if (td < 0 || t->dims[td] == 1)
				continue;
			if (size == 1) {
				size = t->dims[td];
			} else if (t->dims[td] != size) {
				char msg[256];
				size_t pos = 0;
				for (int q = 0; q < n && pos < sizeof(msg); q++) {
					char sb[128];
					pos += (size_t)snprintf(msg + pos, sizeof(msg) - pos,
						"%sinput %d %s", q ? (q == n - 1 ? " and " : ", ") : "",
						q, es_op_fmt_shape(sb, sizeof(sb), ins[q]));
				}
				return es_kctx_fail(k, ES_ESHAPE,
					"cannot broadcast %s (dimension %d: %lld vs %lld)",
					msg, d - ndim, (long long)size,
					(long long)t->dims[td]);
			}
		}
		dims[d] = size;
	}
	*ndim_out = ndim;
	return 0;
}

/* Builds a plan for ins broadcast to (ndim, dims); ins must be compatible
 * with that shape (checked by bc_shape or by the caller). */
static void bc_plan_make(bc_plan *p, int ndim, const int64_t *dims, int nin,
			 const es_tensor *const *ins)
{
	/* broadcast flags per kept output dim and operand */
	bool bcast[ES_MAX_DIMS][BC_MAX_IN];
	int64_t kept[ES_MAX_DIMS];
	int nk = 0;

	p->nin = nin;
	p->numel = 1;
	for (int d = 0; d < ndim; d++)
		p->numel *= dims[d];
	for (int d = 0; d < ndim; d++) {
		if (dims[d] == 1)
			continue;
		for (int j = 0; j < nin; j++) {
			int td = d - (ndim - ins[j]->ndim);
			bcast[nk][j] = td < 0 || ins[j]->dims[td] == 1;
		}
		kept[nk++] = dims[d];
	}
	/* merge neighbours with identical broadcast patterns */
	int nd = 0;
	bool pat[ES_MAX_DIMS][BC_MAX_IN];
	for (int d = 0; d < nk; d++) {
		bool same = nd > 0;
		for (int j = 0; same && j < nin; j++)
			same = pat[nd - 1][j] == bcast[d][j];
		if (same) {
			p->dims[nd - 1] *= kept[d];
		} else {
			p->dims[nd] = kept[d];
			for (int j = 0; j < nin; j++)
				pat[nd][j] = bcast[d][j];
			nd++;
		}
	}
	if (nd == 0) { /* scalar output */
		p->dims[0] = 1;
		for (int j = 0; j < nin; j++)
			pat[0][j] = false;
		nd = 1;
	}
	p->ndim = nd;
	for (int j = 0; j < nin; j++) {
		int64_t s = 1;
		for (int d = nd - 1; d >= 0; d--) {
			p->stride[j][d] = pat[d][j] ? 0 : s;
			if (!pat[d][j])
				s *= p->dims[d];
		}
	}
}

/* Offsets (in elements) of each operand at the start of output row `row`
 * (a row is one run of the innermost plan dim). */
static void bc_row_offsets(const bc_plan *p, int64_t row, int64_t *off)
{
	for (int j = 0; j < p->nin; j++)
		off[j] = 0;
	for (int d = p->ndim - 2; d >= 0; d--) {
		int64_t idx = row % p->dims[d];
		row /= p->dims[d];
		for (int j = 0; j < p->nin; j++)
			off[j] += idx * p->stride[j][d];
	}
}

typedef struct bc_args {
	const bc_plan *plan;
	bc_fn fn;
	const void *ctx;
	char *out;
	size_t osize;
	const char *in[BC_MAX_IN];
	size_t isize[BC_MAX_IN];
} bc_args;

/* Rows [r0, r1), stepping the multi-index incrementally. */
static void bc_exec_rows(const bc_args *a, int64_t r0, int64_t r1)
{
	const bc_plan *p = a->plan;
	int64_t inner = p->dims[p->ndim - 1];
	int64_t idx[ES_MAX_DIMS], off[BC_MAX_IN], inc[BC_MAX_IN];
	const void *ptr[BC_MAX_IN];
	int64_t row = r0;

	if (r0 >= r1)
		return;
	for (int d = p->ndim - 2; d >= 0; d--) {
		idx[d] = row % p->dims[d];
		row /= p->dims[d];
	}
	bc_row_offsets(p, r0, off);
	for (int j = 0; j < p->nin; j++)
		inc[j] = p->stride[j][p->ndim - 1];
	for (int64_t r = r0; r < r1; r++) {
		for (int j = 0; j < p->nin; j++)
			ptr[j] = a->in[j] + off[j] * (int64_t)a->isize[j];
		a->fn(inner, a->out + r * inner * (int64_t)a->osize, ptr, inc,
		      a->ctx);
		for (int d = p->ndim - 2; d >= 0; d--) {
			for (int j = 0; j < p->nin; j++)
				off[j] += p->stride[j][d];
			if (++idx[d] < p->dims[d])
				break;
			for (int j = 0; j < p->nin; j++)
				off[j] -= p->stride[j][d] * p->dims[d];
			idx[d] = 0;
		}
	}
}

/* One piece of a long row: row `row`, columns [c0, c0 + len). */
static void bc_exec_piece(const bc_args *a, int64_t row, int64_t c0,
			  int64_t len)
{
	const bc_plan *p = a->plan;
	int64_t inner = p->dims[p->ndim - 1];
	int64_t off[BC_MAX_IN], inc[BC_MAX_IN];
	const void *ptr[BC_MAX_IN];

	bc_row_offsets(p, row, off);
	for (int j = 0; j < p->nin; j++) {
		inc[j] = p->stride[j][p->ndim - 1];
		ptr[j] = a->in[j] + (off[j] + c0 * inc[j]) * (int64_t)a->isize[j];
	}
	a->fn(len, a->out + (row * inner + c0) * (int64_t)a->osize, ptr, inc,
	      a->ctx);
}

/*
 * Runs fn over the plan. Long rows (equal shapes, scalar operands) are cut
 * into CHUNK_ELEMS pieces so every thread gets work; short rows are handed
 * out as contiguous row ranges.
 */
static void bc_exec(const es_kctx *k, const bc_args *a)
{
	const bc_plan *p = a->plan;
	int64_t inner = p->dims[p->ndim - 1];
	int64_t rows, nt = es_op_threads(k, p->numel, PAR_MIN_ELEMS);

	if (p->numel == 0)
		return;
	rows = p->numel / inner;
	if (nt > 1 && inner >= 2 * CHUNK_ELEMS) {
		int64_t per_row = (inner + CHUNK_ELEMS - 1) / CHUNK_ELEMS;
		int64_t pieces = rows * per_row;
		ES_PARALLEL_FOR(nt, true, q, pieces, {
			int64_t c0 = (q % per_row) * CHUNK_ELEMS;
			int64_t len = inner - c0 < CHUNK_ELEMS ? inner - c0 : CHUNK_ELEMS;
			bc_exec_piece(a, q / per_row, c0, len);
		});
	} else if (nt > 1 && rows > 1) {
		ES_PARALLEL_REGION(nt, true, {
			int64_t t = omp_get_thread_num(), T = omp_get_num_threads();
			int64_t base = rows / T, rem = rows % T;
			int64_t r0 = t * base + (t < rem ? t : rem);
			int64_t r1 = r0 + base + (t < rem);
			bc_exec_rows(a, r0, r1);
		});
	} else {
		bc_exec_rows(a, 0, rows);
	}
}

/*
 * Gives output 0 its buffer, sharing input `cands[i]`'s buffer when that
 * input has the output's shape and element size (the executor decides).
 */
static int ew_output(es_kctx *k, es_dtype dt, int ndim, const int64_t *dims,
		     int ncand, const int *cands)
{
	for (int i = 0; i < ncand; i++) {
		const es_tensor *t = es_kin(k, cands[i]);
		bool inplace = false;
		if (!t || es_dtype_size(t->dtype) != es_dtype_size(dt) ||
		    !same_shape(ndim, dims, t))
			continue;
		return es_kctx_output_inplace(k, 0, cands[i], dt, ndim, dims,
					      &inplace);
	}
	return es_kctx_output(k, 0, dt, ndim, dims);
}

/* Runs fn on operands ins broadcast to the output tensor out. */
static void bc_apply(const es_kctx *k, es_tensor *out, int nin,
		     const es_tensor *const *ins, bc_fn fn, const void *ctx)
{
	bc_plan plan;
	bc_args a = { .plan = &plan, .fn = fn, .ctx = ctx };

	bc_plan_make(&plan, out->ndim, out->dims, nin, ins);
	a.out = out->data;
	a.osize = es_dtype_size(out->dtype);
	for (int j = 0; j < nin; j++) {
		a.in[j] = ins[j]->data;
		a.isize[j] = es_dtype_size(ins[j]->dtype);
	}
	bc_exec(k, &a);
}

/* ---- 3. binary operators ------------------------------------------------ */

/*
 * The binary loop: the four inc patterns get their own loop so the common
 * cases (equal shapes, scalar on either side) vectorise.
 */
#define BIN_LOOP(S, OS, C, LD, ST, EXPR)                                   \
	OS *o = out;                                                       \
	const S *pa = in[0], *pb = in[1];                                  \
	(void)ctx;                                                         \
	if (inc[0] && inc[1]) {                                            \
		for (int64_t i = 0; i < n; i++) {                          \
			C x = LD(pa[i]), y = LD(pb[i]);                    \
			o[i] = ST(EXPR);                                   \
		}                                                          \
	} else if (inc[0]) {                                               \
		C y = LD(pb[0]);                                           \
		for (int64_t i = 0; i < n; i++) {                          \
			C x = LD(pa[i]);                                   \
			o[i] = ST(EXPR);                                   \
		}                                                          \
	} else if (inc[1]) {                                               \
		C x = LD(pa[0]);                                           \
		for (int64_t i = 0; i < n; i++) {                          \
			C y = LD(pb[i]);                                   \
			o[i] = ST(EXPR);                                   \
		}                                                          \
	} else {                                                           \
		C x = LD(pa[0]), y = LD(pb[0]);                            \
		OS v = ST(EXPR);                                           \
		for (int64_t i = 0; i < n; i++)                            \
			o[i] = v;                                          \
	}

/* Arithmetic: output has the input type. OP(x, y, S, C, U) */
#define BIN_FN(OP, sfx, dt, S, C, U, LD, ST)                                 \
	static void OP##_##sfx(int64_t n, void *out, const void *const *in,  \
			       const int64_t *inc, const void *ctx)          \
	{                                                                    \
		BIN_LOOP(S, S, C, LD, ST, OP(x, y, S, C, U))                 \
	}
/* Comparison and logic: bool output. */
#define CMP_FN(OP, sfx, dt, S, C, U, LD, ST)                                 \
	static void OP##_##sfx(int64_t n, void *out, const void *const *in,  \
			       const int64_t *inc, const void *ctx)          \
	{                                                                    \
		BIN_LOOP(S, uint8_t, C, LD, ID, (uint8_t)OP(x, y, S, C, U))  \
	}

#define ADDF(x, y, S, C, U) ((x) + (y))
#define SUBF(x, y, S, C, U) ((x) - (y))
#define MULF(x, y, S, C, U) ((x) * (y))
#define DIVF(x, y, S, C, U) ((x) / (y))
#define ADDI(x, y, S, C, U) ((C)((U)(x) + (U)(y)))
#define SUBI(x, y, S, C, U) ((C)((U)(x) - (U)(y)))
#define MULI(x, y, S, C, U) ((C)((U)(x) * (U)(y)))
/* Integer division truncates; zero divisors are rejected before the loop,
 * and INT_MIN / -1 wraps to INT_MIN instead of trapping. */
#define DIVS(x, y, S, C, U) ((y) == -1 ? (C)(0 - (U)(x)) : (C)((x) / (y)))
#define DIVU(x, y, S, C, U) ((C)((x) / (y)))
/* Mod: fmod=1 is C's remainder (sign of the dividend), fmod=0 Python's
 * (sign of the divisor). */
#define FMODF(x, y, S, C, U) (fmod((x), (y)))
#define FMODS(x, y, S, C, U) ((y) == -1 ? (C)0 : (C)((x) % (y)))
#define MODU(x, y, S, C, U) ((C)((x) % (y)))
#define MODS(x, y, S, C, U) (py_mod_i64((x), (y)))
/* x^2 (LayerNorm exports square with Pow) is exactly x * x, and far
 * cheaper than pow. */
#define POWF(x, y, S, C, U) ((y) == 2 ? (x) * (x) : pow((x), (y)))
#define POWS(x, y, S, C, U) ((C)ipow_u64((uint64_t)(x), (int64_t)(y), (x) < 0))
#define POWU(x, y, S, C, U) ((C)ipow_u64((uint64_t)(x), (int64_t)(y), false))
#define PRELUF(x, y, S, C, U) ((x) < 0 ? (y) * (x) : (x))
#define PRELUS(x, y, S, C, U) ((x) < 0 ? (C)((U)(x) * (U)(y)) : (x))
#define PRELUU(x, y, S, C, U) ((void)(y), (x))
/* Max/Min propagate NaN like numpy. */
#define MAXF(x, y, S, C, U) (((x) != (x) || (x) > (y)) ? (x) : (y))
#define MINF(x, y, S, C, U) (((x) != (x) || (x) < (y)) ? (x) : (y))
#define MAXI(x, y, S, C, U) ((x) > (y) ? (x) : (y))
#define MINI(x, y, S, C, U) ((x) < (y) ? (x) : (y))
#define SHL(x, y, S, C, U) ((y) >= 8 * sizeof(S) ? (C)0 : (C)((U)(x) << (y)))
#define SHR(x, y, S, C, U) ((y) >= 8 * sizeof(S) ? (C)0 : (C)((x) >> (y)))
#define EQ(x, y, S, C, U) ((x) == (y))
#define LT(x, y, S, C, U) ((x) < (y))
#define GT(x, y, S, C, U) ((x) > (y))
#define LE(x, y, S, C, U) ((x) <= (y))
#define GE(x, y, S, C, U) ((x) >= (y))
#define AND(x, y, S, C, U) ((x) && (y))
#define OR(x, y, S, C, U) ((x) || (y))
#define XOR(x, y, S, C, U) ((x) != (y))

static inline int64_t py_mod_i64(int64_t x, int64_t y)
{
	int64_t r = y == -1 ? 0 : x % y;
	if (r != 0 && ((r < 0) != (y < 0)))
		r += y;
	return r;
}

/*
 * Integer power by squaring, wrapping like repeated multiplication.
 * A negative exponent gives the truncated 1 / x^-e: 1 for x == 1, +-1 for
 * x == -1, 0 otherwise.
 */
static inline uint64_t ipow_u64(uint64_t x, int64_t e, bool neg_base)
{
	uint64_t r = 1;
	if (e < 0) {
		if (x == 1)
			return 1;
		if (neg_base && x == UINT64_MAX) /* x == -1 in two's complement */
			return (e & 1) ? UINT64_MAX : 1;
		return 0;
	}
	while (e) {
		if (e & 1)
			r *= x;
		x *= x;
		e >>= 1;
	}
	return r;
}

TYPES_FLOAT(BIN_FN, ADDF) TYPES_INT(BIN_FN, ADDI)
TYPES_FLOAT(BIN_FN, SUBF) TYPES_INT(BIN_FN, SUBI)
TYPES_FLOAT(BIN_FN, MULF) TYPES_INT(BIN_FN, MULI)
TYPES_FLOAT(BIN_FN, DIVF) TYPES_SINT(BIN_FN, DIVS) TYPES_UINT(BIN_FN, DIVU)
TYPES_FLOAT(BIN_FN, FMODF) TYPES_SINT(BIN_FN, FMODS) TYPES_SINT(BIN_FN, MODS)
TYPES_UINT(BIN_FN, MODU)
TYPES_FLOAT(BIN_FN, POWF) TYPES_SINT(BIN_FN, POWS) TYPES_UINT(BIN_FN, POWU)
TYPES_FLOAT(BIN_FN, PRELUF) TYPES_SINT(BIN_FN, PRELUS) TYPES_UINT(BIN_FN, PRELUU)
TYPES_FLOAT(BIN_FN, MAXF) TYPES_INT(BIN_FN, MAXI)
TYPES_FLOAT(BIN_FN, MINF) TYPES_INT(BIN_FN, MINI)
TYPES_UINT(BIN_FN, SHL) TYPES_UINT(BIN_FN, SHR)
TYPES_FLOAT(CMP_FN, EQ) TYPES_INT(CMP_FN, EQ) TYPES_BOOL(CMP_FN, EQ)
TYPES_FLOAT(CMP_FN, LT) TYPES_INT(CMP_FN, LT)
TYPES_FLOAT(CMP_FN, GT) TYPES_INT(CMP_FN, GT)
TYPES_FLOAT(CMP_FN, LE) TYPES_INT(CMP_FN, LE)
TYPES_FLOAT(CMP_FN, GE) TYPES_INT(CMP_FN, GE)
TYPES_BOOL(CMP_FN, AND) TYPES_BOOL(CMP_FN, OR) TYPES_BOOL(CMP_FN, XOR)

enum bin_flags {
	BIN_BOOL_OUT = 1 << 0,   /* comparison / logic */
	BIN_INT_DIVISOR = 1 << 1, /* integer zero divisor is an error */
	BIN_MIXED_POW = 1 << 2,  /* exponent may have another dtype */
};

typedef struct bin_desc {
	const char *name;
	unsigned flags;
	bc_fn fns[ES_DT_COUNT];
	const bc_fn *alt; /* Mod fmod=0 integer loops */
} bin_desc;

static const bc_fn pymod_fns[ES_DT_COUNT] = {
	TYPES_SINT(FN_ENTRY, MODS) TYPES_UINT(FN_ENTRY, MODU)
};

static const bin_desc bin_descs[] = {
	{ "Add", 0, { TYPES_FLOAT(FN_ENTRY, ADDF) TYPES_INT(FN_ENTRY, ADDI) }, NULL },
	{ "Sub", 0, { TYPES_FLOAT(FN_ENTRY, SUBF) TYPES_INT(FN_ENTRY, SUBI) }, NULL },
	{ "Mul", 0, { TYPES_FLOAT(FN_ENTRY, MULF) TYPES_INT(FN_ENTRY, MULI) }, NULL },
	{ "Div", BIN_INT_DIVISOR,
	  { TYPES_FLOAT(FN_ENTRY, DIVF) TYPES_SINT(FN_ENTRY, DIVS)
	    TYPES_UINT(FN_ENTRY, DIVU) }, NULL },
	{ "Mod", BIN_INT_DIVISOR,
	  { TYPES_FLOAT(FN_ENTRY, FMODF) TYPES_SINT(FN_ENTRY, FMODS)
	    TYPES_UINT(FN_ENTRY, MODU) }, pymod_fns },
	{ "Pow", BIN_MIXED_POW,
	  { TYPES_FLOAT(FN_ENTRY, POWF) TYPES_SINT(FN_ENTRY, POWS)
	    TYPES_UINT(FN_ENTRY, POWU) }, NULL },
	{ "PRelu", 0, { TYPES_FLOAT(FN_ENTRY, PRELUF) TYPES_SINT(FN_ENTRY, PRELUS)
	    TYPES_UINT(FN_ENTRY, PRELUU) }, NULL },
	{ "BitShift", 0, { TYPES_UINT(FN_ENTRY, SHL) }, NULL },
	{ "Equal", BIN_BOOL_OUT,
	  { TYPES_FLOAT(FN_ENTRY, EQ) TYPES_INT(FN_ENTRY, EQ) TYPES_BOOL(FN_ENTRY, EQ) }, NULL },
	{ "Less", BIN_BOOL_OUT, { TYPES_FLOAT(FN_ENTRY, LT) TYPES_INT(FN_ENTRY, LT) }, NULL },
	{ "Greater", BIN_BOOL_OUT, { TYPES_FLOAT(FN_ENTRY, GT) TYPES_INT(FN_ENTRY, GT) }, NULL },
	{ "LessOrEqual", BIN_BOOL_OUT, { TYPES_FLOAT(FN_ENTRY, LE) TYPES_INT(FN_ENTRY, LE) }, NULL },
	{ "GreaterOrEqual", BIN_BOOL_OUT, { TYPES_FLOAT(FN_ENTRY, GE) TYPES_INT(FN_ENTRY, GE) }, NULL },
	{ "And", BIN_BOOL_OUT, { TYPES_BOOL(FN_ENTRY, AND) }, NULL },
	{ "Or", BIN_BOOL_OUT, { TYPES_BOOL(FN_ENTRY, OR) }, NULL },
	{ "Xor", BIN_BOOL_OUT, { TYPES_BOOL(FN_ENTRY, XOR) }, NULL },
};

static const bc_fn shr_fns[ES_DT_COUNT] = { TYPES_UINT(FN_ENTRY, SHR) };

typedef struct bin_state {
	const bin_desc *desc;
	const bc_fn *fns;     /* desc->fns, or the variant chosen by attributes */
	bool fmod;            /* Mod */
	bool prelu;           /* slope broadcasts to X only */
	bool prelu_channel;   /* opset < 7: a 1-D slope runs along axis 1 */
	/* opset < 7: explicit broadcast=1 with optional axis */
	bool legacy;
	int64_t broadcast;
	bool has_axis;
	int64_t axis;
} bin_state;

static const bin_desc *find_bin_desc(const char *op_type)
{
	for (size_t i = 0; i < sizeof(bin_descs) / sizeof(bin_descs[0]); i++)
		if (!strcmp(bin_descs[i].name, op_type))
			return &bin_descs[i];
	return NULL;
}

enum bin_variant {
	BIN_NUMPY,        /* opset >= 7: multidirectional broadcasting */
	BIN_LEGACY,       /* opset < 7: broadcast / axis attributes */
	BIN_PRELU_LEGACY, /* PRelu opset < 7: per-channel slope */
};

static int bin_init_common(es_op_init_ctx *c, void **state,
			   enum bin_variant variant)
{
	const es_node *node = c->node;
	const bin_desc *desc = find_bin_desc(node->op_type);
	bin_state *s;
	int rc;

	if (!desc)
		return es_error_set(c->err, ES_EINTERNAL,
				    "node '%s': no binary kernel for %s",
				    node->name, node->op_type);
	s = es_op_state_alloc(c, sizeof(*s));
	if (!s)
		return ES_ENOMEM;
	s->desc = desc;
	s->fns = desc->fns;
	s->prelu = !strcmp(desc->name, "PRelu");
	if (!strcmp(desc->name, "Mod")) {
		int64_t fmod_attr;
		rc = es_node_attr_int(node, "fmod", 0, &fmod_attr, c->err);
		if (rc)
			goto out_free;
		if (fmod_attr != 0 && fmod_attr != 1) {
			rc = es_error_set(c->err, ES_EINVAL,
				"node '%s': attribute fmod must be 0 or 1, got %lld",
				node->name, (long long)fmod_attr);
			goto out_free;
		}
		s->fmod = fmod_attr;
		if (!s->fmod)
			s->fns = desc->alt;
	} else if (!strcmp(desc->name, "BitShift")) {
		const char *dir;
		rc = es_node_attr_string(node, "direction", NULL, &dir, c->err);
		if (rc)
			goto out_free;
		if (dir && !strcmp(dir, "RIGHT")) {
			s->fns = shr_fns;
		} else if (!dir || strcmp(dir, "LEFT")) {
			rc = es_error_set(c->err, ES_EINVAL,
				"node '%s': attribute direction must be \"LEFT\" or \"RIGHT\", got %s%s%s",
				node->name, dir ? "\"" : "", dir ? dir : "nothing",
				dir ? "\"" : "");
			goto out_free;
		}
	}
	s->prelu_channel = variant == BIN_PRELU_LEGACY;
	if (variant == BIN_LEGACY) {
		s->legacy = true;
		rc = es_node_attr_int(node, "broadcast", 0, &s->broadcast, c->err);
		if (rc)
			goto out_free;
		s->has_axis = es_node_attr(node, "axis") != NULL;
		rc = es_node_attr_int(node, "axis", 0, &s->axis, c->err);
		if (rc)
			goto out_free;
	}
	*state = s;
	return 0;
out_free:
	free(s);
	return rc;
}

static int bin_init(es_op_init_ctx *c, void **state)
{
	return bin_init_common(c, state, BIN_NUMPY);
}

static int bin_init_legacy(es_op_init_ctx *c, void **state)
{
	return bin_init_common(c, state, BIN_LEGACY);
}

static int prelu_init_legacy(es_op_init_ctx *c, void **state)
{
	return bin_init_common(c, state, BIN_PRELU_LEGACY);
}

/*
 * Opset < 7 broadcasting: with broadcast=0 the shapes must be equal; with
 * broadcast=1, B's shape matches a contiguous run of A's dims starting at
 * `axis` (default: the trailing dims). *bview gets B's dims padded with 1s
 * so the numpy engine does the rest.
 */
static int legacy_bcast_view(es_kctx *k, const bin_state *s,
			     const es_tensor *a, const es_tensor *b,
			     es_tensor *bview)
{
	char sa[128], sb[128];
	int64_t axis;

	*bview = *b;
	if (!s->broadcast) {
		if (!same_shape(a->ndim, a->dims, b))
			return es_kctx_fail(k, ES_ESHAPE,
				"input 1 shape %s must equal input 0 shape %s (broadcast=0)",
				es_op_fmt_shape(sb, sizeof(sb), b), es_op_fmt_shape(sa, sizeof(sa), a));
		return 0;
	}
	axis = s->has_axis ? s->axis : a->ndim - b->ndim;
	if (axis < 0)
		axis += a->ndim;
	if (axis < 0 || axis + b->ndim > a->ndim)
		return es_kctx_fail(k, ES_ESHAPE,
			"input 1 shape %s does not fit input 0 shape %s at axis %lld",
			es_op_fmt_shape(sb, sizeof(sb), b), es_op_fmt_shape(sa, sizeof(sa), a),
			(long long)(s->has_axis ? s->axis : axis));
	bview->ndim = a->ndim;
	for (int d = 0; d < a->ndim; d++)
		bview->dims[d] = 1;
	for (int d = 0; d < b->ndim; d++) {
		if (b->dims[d] != 1 && b->dims[d] != a->dims[axis + d])
			return es_kctx_fail(k, ES_ESHAPE,
				"input 1 shape %s does not match input 0 shape %s at axis %lld",
				es_op_fmt_shape(sb, sizeof(sb), b),
				es_op_fmt_shape(sa, sizeof(sa), a), (long long)axis);
		bview->dims[axis + d] = b->dims[d];
	}
	return 0;
}

/* Rejects zero divisors for integer Div and Mod (division by zero is
 * undefined in C and has no sensible integer result). */
static int check_int_divisor(es_kctx *k, const es_tensor *b, int64_t n)
{
	size_t es = es_dtype_size(b->dtype);
	const unsigned char *p = b->data;
	for (int64_t i = 0; i < n; i++) {
		bool zero = true;
		for (size_t q = 0; q < es; q++)
			zero &= p[i * es + q] == 0;
		if (zero)
			return es_kctx_fail(k, ES_EINVAL,
				"division by zero: input 1 (%s) holds 0 at flat index %lld",
				es_dtype_name(b->dtype), (long long)i);
	}
	return 0;
}

/* Pow with different base and exponent dtypes (opset >= 12). */
typedef struct pow_ctx {
	es_dtype xt, yt;
} pow_ctx;

static void pow_mixed(int64_t n, void *out, const void *const *in,
		      const int64_t *inc, const void *ctx)
{
	const pow_ctx *p = ctx;
	bool ints = !es_op_is_float(p->xt) && !es_op_is_float(p->yt);
	for (int64_t i = 0; i < n; i++) {
		if (ints) {
			int64_t x = elem_get_i64(p->xt, in[0], i * inc[0]);
			int64_t y = elem_get_i64(p->yt, in[1], i * inc[1]);
			es_op_store_i64(p->xt, out, i,
					(int64_t)ipow_u64((uint64_t)x, y, x < 0));
		} else {
			double x = es_op_load_f64(p->xt, in[0], i * inc[0]);
			double y = es_op_load_f64(p->yt, in[1], i * inc[1]);
			es_op_store_f64(p->xt, out, i, pow(x, y));
		}
	}
}

static int bin_run(es_kctx *k)
{
	const bin_state *s = k->state;
	const bin_desc *desc = s->desc;
	const es_tensor *a = es_kin(k, 0), *b = es_kin(k, 1);
	const es_tensor *ins[2];
	es_tensor bview;
	es_tensor *out;
	int64_t dims[ES_MAX_DIMS];
	int ndim = 0, rc;
	bc_fn fn;
	pow_ctx pctx = { a ? a->dtype : ES_DT_UNDEFINED, ES_DT_UNDEFINED };
	static const int cands[] = { 0, 1 };

	if (!a || !b)
		return es_kctx_fail(k, ES_EINVAL, "%s needs 2 inputs", desc->name);
	if (!strcmp(desc->name, "Mod") && !s->fmod && es_op_is_float(a->dtype))
		return es_kctx_fail(k, ES_EINVAL,
			"Mod: attribute fmod must be 1 for floating-point input type %s",
			es_dtype_name(a->dtype));
	fn = dt_valid(a->dtype) ? s->fns[a->dtype] : NULL;
	if (!fn)
		return es_kctx_fail(k, ES_ETYPE, "%s: input 0 has unsupported type %s",
				    desc->name, es_dtype_name(a->dtype));
	if (a->dtype != b->dtype) {
		if (!(desc->flags & BIN_MIXED_POW) || !dt_valid(b->dtype) ||
		    !desc->fns[b->dtype])
			return es_kctx_fail(k, ES_ETYPE,
				"%s: input 1 has type %s, expected %s (type of input 0)",
				desc->name, es_dtype_name(b->dtype),
				es_dtype_name(a->dtype));
		pctx.xt = a->dtype;
		pctx.yt = b->dtype;
		fn = pow_mixed;
	}
	if ((desc->flags & BIN_INT_DIVISOR) && !es_op_is_float(b->dtype)) {
		rc = check_int_divisor(k, b, es_tensor_numel(b));
		if (rc)
			return rc;
	}

	if (s->legacy) {
		rc = legacy_bcast_view(k, s, a, b, &bview);
		if (rc)
			return rc;
		b = &bview;
	} else if (s->prelu_channel && a->ndim >= 2 && b->ndim >= 1 &&
		   b->ndim < a->ndim && es_tensor_numel(b) != 1 &&
		   b->dims[0] == a->dims[1]) {
		/* Caffe2-style PRelu: slope [C] (or [C,1,..]) is per channel */
		bview = *b;
		bview.ndim = a->ndim - 1;
		for (int d = 0; d < bview.ndim; d++)
			bview.dims[d] = d < b->ndim ? b->dims[d] : 1;
		b = &bview;
	}
	ins[0] = a;
	ins[1] = b;
	rc = bc_shape(k, 2, ins, &ndim, dims);
	if (rc)
		return rc;
	if (s->prelu && !same_shape(ndim, dims, a)) {
		char sa[128], sb[128];
		return es_kctx_fail(k, ES_ESHAPE,
			"PRelu: slope shape %s does not broadcast to X shape %s",
			es_op_fmt_shape(sb, sizeof(sb), b), es_op_fmt_shape(sa, sizeof(sa), a));
	}
	rc = ew_output(k, (desc->flags & BIN_BOOL_OUT) ? ES_DT_BOOL : a->dtype,
		       ndim, dims, 2, cands);
	if (rc)
		return rc;
	out = k->outputs[0];
	bc_apply(k, out, 2, ins, fn, &pctx);
	return 0;
}

/* ---- 4. variadic operators ---------------------------------------------- */

typedef struct var_desc {
	const char *name;
	bool mean;
	bc_fn fns[ES_DT_COUNT];
} var_desc;

static const var_desc var_descs[] = {
	{ "Max", false, { TYPES_FLOAT(FN_ENTRY, MAXF) TYPES_INT(FN_ENTRY, MAXI) } },
	{ "Min", false, { TYPES_FLOAT(FN_ENTRY, MINF) TYPES_INT(FN_ENTRY, MINI) } },
	{ "Sum", false, { TYPES_FLOAT(FN_ENTRY, ADDF) TYPES_INT(FN_ENTRY, ADDI) } },
	{ "Mean", true, { TYPES_FLOAT(FN_ENTRY, ADDF) } },
};

static int var_init(es_op_init_ctx *c, void **state)
{
	for (size_t i = 0; i < sizeof(var_descs) / sizeof(var_descs[0]); i++) {
		if (!strcmp(var_descs[i].name, c->node->op_type)) {
			*state = (void *)&var_descs[i];
			return 0;
		}
	}
	return es_error_set(c->err, ES_EINTERNAL, "node '%s': no variadic kernel for %s",
			    c->node->name, c->node->op_type);
}

/* Multiplies every element by 1/n (Mean). */
static void scale_inplace(const es_kctx *k, es_tensor *t, double f)
{
	int64_t n = es_tensor_numel(t);
	int nt = es_op_threads(k, n, PAR_MIN_ELEMS);
	switch (t->dtype) {
	case ES_DT_FLOAT: {
		float *p = t->data, ff = (float)f;
		ES_PARALLEL_FOR(nt, true, i, n, {
			p[i] *= ff;
		});
		break;
	}
	case ES_DT_DOUBLE: {
		double *p = t->data;
		ES_PARALLEL_FOR(nt, true, i, n, {
			p[i] *= f;
		});
		break;
	}
	default:
		for (int64_t i = 0; i < n; i++)
			es_op_store_f64(t->dtype, t->data, i,
					es_op_load_f64(t->dtype, t->data, i) * f);
		break;
	}
}

static int var_run(es_kctx *k)
{
	const var_desc *desc = k->state;
	const es_tensor *ins[2];
	int64_t dims[ES_MAX_DIMS];
	int ndim = 0, rc, n = k->n_inputs;
	int cands[2], ncand = 0;
	const es_tensor *in0 = es_kin(k, 0);
	es_tensor *out;
	bc_fn fn;

	if (n < 1 || !in0)
		return es_kctx_fail(k, ES_EINVAL, "%s needs at least one input",
				    desc->name);
	for (int i = 0; i < n; i++) {
		const es_tensor *t = es_kin(k, i);
		if (!t)
			return es_kctx_fail(k, ES_EINVAL, "%s: input %d is missing",
					    desc->name, i);
		if (t->dtype != in0->dtype)
			return es_kctx_fail(k, ES_ETYPE,
				"%s: input %d has type %s, expected %s (type of input 0)",
				desc->name, i, es_dtype_name(t->dtype),
				es_dtype_name(in0->dtype));
	}
	fn = dt_valid(in0->dtype) ? desc->fns[in0->dtype] : NULL;
	if (!fn)
		return es_kctx_fail(k, ES_ETYPE, "%s: unsupported input type %s",
				    desc->name, es_dtype_name(in0->dtype));
	if (n == 1)
		return es_kctx_output_alias(k, 0, 0, in0->ndim, in0->dims);
	rc = bc_shape(k, n, k->inputs, &ndim, dims);
	if (rc)
		return rc;
	/*
	 * Only inputs 0 and 1 may share the output buffer: the first step
	 * reads both before writing, later inputs are read after the output
	 * was written. And only if no later input is the same buffer.
	 */
	for (int c = 0; c < 2; c++) {
		bool dup = false;
		for (int i = 2; i < n; i++)
			dup |= k->inputs[i]->data == k->inputs[c]->data;
		if (!dup)
			cands[ncand++] = c;
	}
	rc = ew_output(k, in0->dtype, ndim, dims, ncand, cands);
	if (rc)
		return rc;
	out = k->outputs[0];
	ins[0] = k->inputs[0];
	ins[1] = k->inputs[1];
	bc_apply(k, out, 2, ins, fn, NULL);
	for (int i = 2; i < n; i++) {
		ins[0] = out;
		ins[1] = k->inputs[i];
		bc_apply(k, out, 2, ins, fn, NULL);
	}
	if (desc->mean)
		scale_inplace(k, out, 1.0 / n);
	return 0;
}

/* ---- 5. Where ----------------------------------------------------------- */

#define WHERE_FN(sfx, S)                                                     \
	static void where_##sfx(int64_t n, void *out, const void *const *in, \
				const int64_t *inc, const void *ctx)         \
	{                                                                    \
		S *o = out;                                                  \
		const uint8_t *c = in[0];                                    \
		const S *x = in[1], *y = in[2];                              \
		(void)ctx;                                                   \
		if (inc[0] && inc[1] && inc[2]) {                            \
			for (int64_t i = 0; i < n; i++)                      \
				o[i] = c[i] ? x[i] : y[i];                   \
		} else {                                                     \
			for (int64_t i = 0; i < n; i++)                      \
				o[i] = c[i * inc[0]] ? x[i * inc[1]]         \
						     : y[i * inc[2]];        \
		}                                                            \
	}
WHERE_FN(1, uint8_t)
WHERE_FN(2, uint16_t)
WHERE_FN(4, uint32_t)
WHERE_FN(8, uint64_t)

static int where_run(es_kctx *k)
{
	const es_tensor *c = es_kin(k, 0), *x = es_kin(k, 1), *y = es_kin(k, 2);
	const es_tensor *ins[3] = { c, x, y };
	int64_t dims[ES_MAX_DIMS];
	int ndim = 0, rc;
	bc_fn fn;
	static const int cands[] = { 1, 2 };

	if (!c || !x || !y)
		return es_kctx_fail(k, ES_EINVAL, "Where needs 3 inputs");
	if (c->dtype != ES_DT_BOOL)
		return es_kctx_fail(k, ES_ETYPE,
			"Where: input 0 (condition) has type %s, expected bool",
			es_dtype_name(c->dtype));
	if (x->dtype != y->dtype)
		return es_kctx_fail(k, ES_ETYPE,
			"Where: input 2 (Y) has type %s, expected %s (type of X)",
			es_dtype_name(y->dtype), es_dtype_name(x->dtype));
	switch (es_dtype_size(x->dtype)) {
	case 1: fn = where_1; break;
	case 2: fn = where_2; break;
	case 4: fn = where_4; break;
	case 8: fn = where_8; break;
	default:
		return es_kctx_fail(k, ES_EUNSUPPORTED,
				    "Where: type %s is not supported",
				    es_dtype_name(x->dtype));
	}
	rc = bc_shape(k, 3, ins, &ndim, dims);
	if (rc)
		return rc;
	rc = ew_output(k, x->dtype, ndim, dims, 2, cands);
	if (rc)
		return rc;
	bc_apply(k, k->outputs[0], 3, ins, fn, NULL);
	return 0;
}

/* ---- 6. unary operators and Clip ---------------------------------------- */

typedef struct un_params {
	float alpha, beta, gamma;
	bool detect_neg, detect_pos; /* IsInf */
	/* Clip bounds, stored in the input's dtype */
	bool has_lo, has_hi;
	uint64_t lo, hi;
} un_params;

typedef void (*un_fn)(int64_t n, void *out, const void *in,
		      const un_params *p);

/* OP(x, C, U, p): x is the value in compute type C. */
#define UN_FN(OP, sfx, dt, S, C, U, LD, ST)                                  \
	static void OP##_##sfx(int64_t n, void *out, const void *in,         \
			       const un_params *p)                           \
	{                                                                    \
		S *o = out;                                                  \
		const S *a = in;                                             \
		(void)p;                                                     \
		for (int64_t i = 0; i < n; i++) {                            \
			C x = LD(a[i]);                                      \
			o[i] = ST(OP(x, C, U, p));                           \
		}                                                            \
	}
/* Predicates with bool output. */
#define UNB_FN(OP, sfx, dt, S, C, U, LD, ST)                                 \
	static void OP##_##sfx(int64_t n, void *out, const void *in,         \
			       const un_params *p)                           \
	{                                                                    \
		uint8_t *o = out;                                            \
		const S *a = in;                                             \
		(void)p;                                                     \
		for (int64_t i = 0; i < n; i++) {                            \
			C x = LD(a[i]);                                      \
			o[i] = (uint8_t)(OP(x, C, U, p));                    \
		}                                                            \
	}
/* Integer inputs computed in double and converted back (Erf). */
#define UND_FN(OP, sfx, dt, S, C, U, LD, ST)                                 \
	static void OP##_##sfx(int64_t n, void *out, const void *in,         \
			       const un_params *p)                           \
	{                                                                    \
		S *o = out;                                                  \
		const S *a = in;                                             \
		(void)p;                                                     \
		for (int64_t i = 0; i < n; i++)                              \
			o[i] = es_op_f2i_##sfx(OP((double)a[i], double, U, p)); \
	}
/* Clip: bounds are stored in the input's dtype; absent bounds don't clip.
 * NaN passes through; min > max gives max, as numpy.clip. */
#define CLIP_FN(OP, sfx, dt, S, C, U, LD, ST)                                \
	static void OP##_##sfx(int64_t n, void *out, const void *in,         \
			       const un_params *p)                           \
	{                                                                    \
		S *o = out, slo, shi;                                        \
		const S *a = in;                                             \
		memcpy(&slo, &p->lo, sizeof(S));                             \
		memcpy(&shi, &p->hi, sizeof(S));                             \
		C lo = LD(slo), hi = LD(shi);                                \
		bool hl = p->has_lo, hh = p->has_hi;                         \
		for (int64_t i = 0; i < n; i++) {                            \
			C x = LD(a[i]);                                      \
			if (hl && x < lo)                                    \
				x = lo;                                      \
			if (hh && x > hi)                                    \
				x = hi;                                      \
			o[i] = ST(x);                                        \
		}                                                            \
	}

#define K(C, v) ((C)(v))
#define SQRT(x, C, U, p) sqrt(x)
#define EXP(x, C, U, p) exp(x)
#define LOG(x, C, U, p) log(x)
#define NEGF(x, C, U, p) (-(x))
#define NEGI(x, C, U, p) ((C)(0 - (U)(x)))
#define ABSF(x, C, U, p) fabs(x)
#define ABSS(x, C, U, p) ((x) < 0 ? (C)(0 - (U)(x)) : (x))
#define ABSU(x, C, U, p) (x)
#define RECIP(x, C, U, p) (K(C, 1) / (x))
#define ERF(x, C, U, p) erf(x)
#define TANH(x, C, U, p) tanh(x)
/* exp of a non-positive argument only: no overflow for large |x| */
#define SIGMOID(x, C, U, p) ((x) >= 0 ? K(C, 1) / (K(C, 1) + exp(-(x))) \
				      : exp(x) / (K(C, 1) + exp(x)))
#define RELU(x, C, U, p) ((x) < 0 ? K(C, 0) : (x))
/* the exact (erf) GELU: the optimizer's fused Gelu (fuse_gelu.c) */
#define GELU(x, C, U, p) (K(C, 0.5) * (x) * (K(C, 1) + erf((x) * K(C, 0.70710678118654752440))))
#define LEAKY(x, C, U, p) ((x) < 0 ? K(C, p->alpha) * (x) : (x))
#define ELU(x, C, U, p) ((x) < 0 ? K(C, p->alpha) * expm1(x) : (x))
#define SELU(x, C, U, p) \
	(K(C, p->gamma) * ((x) <= 0 ? K(C, p->alpha) * expm1(x) : (x)))
#define CELU(x, C, U, p) \
	((x) > 0 ? (x) : K(C, p->alpha) * expm1((x) / K(C, p->alpha)))
#define THRELU(x, C, U, p) ((x) > K(C, p->alpha) ? (x) : K(C, 0))
#define SOFTPLUS(x, C, U, p) \
	((x) > 0 ? (x) + log1p(exp(-(x))) : log1p(exp(x)))
#define SOFTSIGN(x, C, U, p) ((x) / (K(C, 1) + fabs(x)))
#define SAT01(v, C) ((v) < 0 ? K(C, 0) : (v) > 1 ? K(C, 1) : (v))
#define HSIGMOID(x, C, U, p) SAT01(K(C, p->alpha) * (x) + K(C, p->beta), C)
#define HSWISH(x, C, U, p) ((x) * SAT01((x) / K(C, 6) + K(C, 0.5), C))
#define FLOOR(x, C, U, p) floor(x)
#define CEIL(x, C, U, p) ceil(x)
#define ROUND(x, C, U, p) nearbyint(x) /* half to even in the default mode */
#define SIGNF(x, C, U, p) ((x) > 0 ? K(C, 1) : (x) < 0 ? K(C, -1) : (x))
#define SIGNS(x, C, U, p) ((x) > 0 ? K(C, 1) : (x) < 0 ? K(C, -1) : K(C, 0))
#define SIGNU(x, C, U, p) ((x) > 0 ? K(C, 1) : K(C, 0))
#define SIN(x, C, U, p) sin(x)
#define COS(x, C, U, p) cos(x)
#define TAN(x, C, U, p) tan(x)
#define ASIN(x, C, U, p) asin(x)
#define ACOS(x, C, U, p) acos(x)
#define ATAN(x, C, U, p) atan(x)
#define SINH(x, C, U, p) sinh(x)
#define COSH(x, C, U, p) cosh(x)
#define ASINH(x, C, U, p) asinh(x)
#define ACOSH(x, C, U, p) acosh(x)
#define ATANH(x, C, U, p) atanh(x)
#define ISNAN(x, C, U, p) ((x) != (x))
#define ISINF(x, C, U, p) (isinf(x) && ((x) > 0 ? p->detect_pos : p->detect_neg))
#define NOT(x, C, U, p) (!(x))

TYPES_FLOAT(UN_FN, SQRT) TYPES_FLOAT(UN_FN, EXP) TYPES_FLOAT(UN_FN, LOG)
TYPES_FLOAT(UN_FN, NEGF) TYPES_SINT(UN_FN, NEGI)
TYPES_FLOAT(UN_FN, ABSF) TYPES_SINT(UN_FN, ABSS) TYPES_UINT(UN_FN, ABSU)
TYPES_FLOAT(UN_FN, RECIP) TYPES_FLOAT(UN_FN, ERF) TYPES_INT(UND_FN, ERF)
TYPES_FLOAT(UN_FN, TANH) TYPES_FLOAT(UN_FN, SIGMOID)
TYPES_FLOAT(UN_FN, RELU) TYPES_SINT(UN_FN, RELU) TYPES_FLOAT(UN_FN, GELU)
TYPES_FLOAT(UN_FN, LEAKY) TYPES_FLOAT(UN_FN, ELU) TYPES_FLOAT(UN_FN, SELU)
TYPES_FLOAT(UN_FN, CELU) TYPES_FLOAT(UN_FN, THRELU)
TYPES_FLOAT(UN_FN, SOFTPLUS) TYPES_FLOAT(UN_FN, SOFTSIGN)
TYPES_FLOAT(UN_FN, HSIGMOID) TYPES_FLOAT(UN_FN, HSWISH)
TYPES_FLOAT(UN_FN, FLOOR) TYPES_FLOAT(UN_FN, CEIL) TYPES_FLOAT(UN_FN, ROUND)
TYPES_FLOAT(UN_FN, SIGNF) TYPES_SINT(UN_FN, SIGNS) TYPES_UINT(UN_FN, SIGNU)
TYPES_FLOAT(UN_FN, SIN) TYPES_FLOAT(UN_FN, COS) TYPES_FLOAT(UN_FN, TAN)
TYPES_FLOAT(UN_FN, ASIN) TYPES_FLOAT(UN_FN, ACOS) TYPES_FLOAT(UN_FN, ATAN)
TYPES_FLOAT(UN_FN, SINH) TYPES_FLOAT(UN_FN, COSH)
TYPES_FLOAT(UN_FN, ASINH) TYPES_FLOAT(UN_FN, ACOSH) TYPES_FLOAT(UN_FN, ATANH)
TYPES_FLOAT(UNB_FN, ISNAN) TYPES_FLOAT(UNB_FN, ISINF) TYPES_BOOL(UN_FN, NOT)
TYPES_FLOAT(CLIP_FN, CLIP) TYPES_INT(CLIP_FN, CLIP)

/* Which attributes an op reads into un_params (alpha, beta, gamma). */
typedef struct un_attr {
	const char *name;
	float def;
} un_attr;

typedef struct un_desc {
	const char *name;
	bool bool_out;
	un_attr attrs[3]; /* alpha, beta, gamma; name NULL when unused */
	un_fn fns[ES_DT_COUNT];
} un_desc;

#define NOATTR { { NULL, 0 }, { NULL, 0 }, { NULL, 0 } }
#define ALPHA(v) { { "alpha", v }, { NULL, 0 }, { NULL, 0 } }

static const un_desc un_descs[] = {
	{ "Sqrt", false, NOATTR, { TYPES_FLOAT(FN_ENTRY, SQRT) } },
	{ "Exp", false, NOATTR, { TYPES_FLOAT(FN_ENTRY, EXP) } },
	{ "Log", false, NOATTR, { TYPES_FLOAT(FN_ENTRY, LOG) } },
	{ "Neg", false, NOATTR, { TYPES_FLOAT(FN_ENTRY, NEGF) TYPES_SINT(FN_ENTRY, NEGI) } },
	{ "Abs", false, NOATTR,
	  { TYPES_FLOAT(FN_ENTRY, ABSF) TYPES_SINT(FN_ENTRY, ABSS) TYPES_UINT(FN_ENTRY, ABSU) } },
	{ "Reciprocal", false, NOATTR, { TYPES_FLOAT(FN_ENTRY, RECIP) } },
	{ "Erf", false, NOATTR, { TYPES_FLOAT(FN_ENTRY, ERF) TYPES_INT(FN_ENTRY, ERF) } },
	{ "Tanh", false, NOATTR, { TYPES_FLOAT(FN_ENTRY, TANH) } },
	{ "Sigmoid", false, NOATTR, { TYPES_FLOAT(FN_ENTRY, SIGMOID) } },
	{ "Relu", false, NOATTR, { TYPES_FLOAT(FN_ENTRY, RELU) TYPES_SINT(FN_ENTRY, RELU) } },
	{ "Gelu", false, NOATTR, { TYPES_FLOAT(FN_ENTRY, GELU) } },
	{ "LeakyRelu", false, ALPHA(0.01f), { TYPES_FLOAT(FN_ENTRY, LEAKY) } },
	{ "Elu", false, ALPHA(1.0f), { TYPES_FLOAT(FN_ENTRY, ELU) } },
	{ "Selu", false, { { "alpha", 1.67326319217681884765625f }, { NULL, 0 },
			   { "gamma", 1.05070102214813232421875f } },
	  { TYPES_FLOAT(FN_ENTRY, SELU) } },
	{ "Celu", false, ALPHA(1.0f), { TYPES_FLOAT(FN_ENTRY, CELU) } },
	{ "ThresholdedRelu", false, ALPHA(1.0f), { TYPES_FLOAT(FN_ENTRY, THRELU) } },
	{ "Softplus", false, NOATTR, { TYPES_FLOAT(FN_ENTRY, SOFTPLUS) } },
	{ "Softsign", false, NOATTR, { TYPES_FLOAT(FN_ENTRY, SOFTSIGN) } },
	{ "HardSigmoid", false, { { "alpha", 0.2f }, { "beta", 0.5f }, { NULL, 0 } },
	  { TYPES_FLOAT(FN_ENTRY, HSIGMOID) } },
	{ "HardSwish", false, NOATTR, { TYPES_FLOAT(FN_ENTRY, HSWISH) } },
	{ "Floor", false, NOATTR, { TYPES_FLOAT(FN_ENTRY, FLOOR) } },
	{ "Ceil", false, NOATTR, { TYPES_FLOAT(FN_ENTRY, CEIL) } },
	{ "Round", false, NOATTR, { TYPES_FLOAT(FN_ENTRY, ROUND) } },
	{ "Sign", false, NOATTR, { TYPES_FLOAT(FN_ENTRY, SIGNF) TYPES_SINT(FN_ENTRY, SIGNS)
	    TYPES_UINT(FN_ENTRY, SIGNU) } },
	{ "Sin", false, NOATTR, { TYPES_FLOAT(FN_ENTRY, SIN) } },
	{ "Cos", false, NOATTR, { TYPES_FLOAT(FN_ENTRY, COS) } },
	{ "Tan", false, NOATTR, { TYPES_FLOAT(FN_ENTRY, TAN) } },
	{ "Asin", false, NOATTR, { TYPES_FLOAT(FN_ENTRY, ASIN) } },
	{ "Acos", false, NOATTR, { TYPES_FLOAT(FN_ENTRY, ACOS) } },
	{ "Atan", false, NOATTR, { TYPES_FLOAT(FN_ENTRY, ATAN) } },
	{ "Sinh", false, NOATTR, { TYPES_FLOAT(FN_ENTRY, SINH) } },
	{ "Cosh", false, NOATTR, { TYPES_FLOAT(FN_ENTRY, COSH) } },
	{ "Asinh", false, NOATTR, { TYPES_FLOAT(FN_ENTRY, ASINH) } },
	{ "Acosh", false, NOATTR, { TYPES_FLOAT(FN_ENTRY, ACOSH) } },
	{ "Atanh", false, NOATTR, { TYPES_FLOAT(FN_ENTRY, ATANH) } },
	{ "IsNaN", true, NOATTR, { TYPES_FLOAT(FN_ENTRY, ISNAN) } },
	{ "IsInf", true, NOATTR, { TYPES_FLOAT(FN_ENTRY, ISINF) } },
	{ "Not", false, NOATTR, { TYPES_BOOL(FN_ENTRY, NOT) } },
	{ "Clip", false, NOATTR, { TYPES_FLOAT(FN_ENTRY, CLIP) TYPES_INT(FN_ENTRY, CLIP) } },
};

typedef struct un_state {
	const un_desc *desc;
	un_params p;
	bool clip;
	/* Clip opset < 11: float bounds from attributes */
	bool clip_attrs;
	bool attr_has_lo, attr_has_hi;
	float attr_lo, attr_hi;
} un_state;

enum un_variant {
	UN_PLAIN,
	UN_SELU1,  /* Selu-1: the documented rounded defaults */
	UN_CLIP1,  /* Clip-1: min/max attributes, absent means unbounded */
	UN_CLIP6,  /* Clip-6: min/max attributes defaulting to -+FLT_MAX */
};

static int un_init_common(es_op_init_ctx *c, void **state,
			  enum un_variant variant)
{
	const es_node *node = c->node;
	const un_desc *desc = NULL;
	un_state *s;
	float *dst[3];
	int rc;

	for (size_t i = 0; i < sizeof(un_descs) / sizeof(un_descs[0]); i++)
		if (!strcmp(un_descs[i].name, node->op_type))
			desc = &un_descs[i];
	if (!desc)
		return es_error_set(c->err, ES_EINTERNAL,
				    "node '%s': no unary kernel for %s",
				    node->name, node->op_type);
	s = es_op_state_alloc(c, sizeof(*s));
	if (!s)
		return ES_ENOMEM;
	s->desc = desc;
	dst[0] = &s->p.alpha;
	dst[1] = &s->p.beta;
	dst[2] = &s->p.gamma;
	for (int a = 0; a < 3; a++) {
		float def = desc->attrs[a].def;
		if (!desc->attrs[a].name)
			continue;
		if (variant == UN_SELU1 && a == 0)
			def = 1.6732f;
		if (variant == UN_SELU1 && a == 2)
			def = 1.0507f;
		rc = es_node_attr_float(node, desc->attrs[a].name, def, dst[a], c->err);
		if (rc)
			goto out_free;
	}
	if (!strcmp(desc->name, "IsInf")) {
		int64_t neg, pos;
		rc = es_node_attr_int(node, "detect_negative", 1, &neg, c->err);
		if (!rc)
			rc = es_node_attr_int(node, "detect_positive", 1, &pos, c->err);
		if (rc)
			goto out_free;
		s->p.detect_neg = neg != 0;
		s->p.detect_pos = pos != 0;
	}
	s->clip = !strcmp(desc->name, "Clip");
	if (variant == UN_CLIP1 || variant == UN_CLIP6) {
		s->clip_attrs = true;
		s->attr_has_lo = variant == UN_CLIP6 || es_node_attr(node, "min");
		s->attr_has_hi = variant == UN_CLIP6 || es_node_attr(node, "max");
		rc = es_node_attr_float(node, "min", -FLT_MAX, &s->attr_lo, c->err);
		if (!rc)
			rc = es_node_attr_float(node, "max", FLT_MAX, &s->attr_hi, c->err);
		if (rc)
			goto out_free;
	}
	*state = s;
	return 0;
out_free:
	free(s);
	return rc;
}

static int un_init(es_op_init_ctx *c, void **state)
{
	return un_init_common(c, state, UN_PLAIN);
}

static int selu1_init(es_op_init_ctx *c, void **state)
{
	return un_init_common(c, state, UN_SELU1);
}

static int clip1_init(es_op_init_ctx *c, void **state)
{
	return un_init_common(c, state, UN_CLIP1);
}

static int clip6_init(es_op_init_ctx *c, void **state)
{
	return un_init_common(c, state, UN_CLIP6);
}

/* Clip-11+: min/max come from optional scalar inputs of the input's type. */
static int clip_bounds(es_kctx *k, const un_state *s, es_dtype dt,
		       un_params *p)
{
	static const char *const names[] = { "min", "max" };
	if (s->clip_attrs) {
		p->has_lo = s->attr_has_lo;
		p->has_hi = s->attr_has_hi;
		es_op_store_f64(dt, &p->lo, 0, s->attr_lo);
		es_op_store_f64(dt, &p->hi, 0, s->attr_hi);
		return 0;
	}
	for (int i = 1; i <= 2; i++) {
		const es_tensor *t = es_kin(k, i);
		bool *has = i == 1 ? &p->has_lo : &p->has_hi;
		uint64_t *v = i == 1 ? &p->lo : &p->hi;
		*has = false;
		if (!t)
			continue;
		if (t->dtype != dt)
			return es_kctx_fail(k, ES_ETYPE,
				"Clip: input %d (%s) has type %s, expected %s",
				i, names[i - 1], es_dtype_name(t->dtype),
				es_dtype_name(dt));
		if (es_tensor_numel(t) != 1) {
			char sb[128];
			return es_kctx_fail(k, ES_ESHAPE,
				"Clip: input %d (%s) must be a scalar, got shape %s",
				i, names[i - 1], es_op_fmt_shape(sb, sizeof(sb), t));
		}
		memcpy(v, t->data, es_dtype_size(dt));
		*has = true;
	}
	return 0;
}

static int un_run(es_kctx *k)
{
	const un_state *s = k->state;
	const un_desc *desc = s->desc;
	const es_tensor *x = es_kin(k, 0);
	const un_params *pp = &s->p;
	un_params clip;
	es_tensor *out;
	int64_t n, nchunks;
	size_t isz, osz;
	es_dtype odt;
	un_fn fn;
	int rc, nt;
	static const int cands[] = { 0 };

	if (!x)
		return es_kctx_fail(k, ES_EINVAL, "%s needs an input", desc->name);
	fn = dt_valid(x->dtype) ? desc->fns[x->dtype] : NULL;
	if (!fn)
		return es_kctx_fail(k, ES_ETYPE, "%s: unsupported input type %s",
				    desc->name, es_dtype_name(x->dtype));
	if (s->clip) {
		clip = s->p;
		rc = clip_bounds(k, s, x->dtype, &clip);
		if (rc)
			return rc;
		pp = &clip;
	}
	odt = desc->bool_out ? ES_DT_BOOL : x->dtype;
	rc = ew_output(k, odt, x->ndim, x->dims, 1, cands);
	if (rc)
		return rc;
	out = k->outputs[0];
	n = es_tensor_numel(x);
	isz = es_dtype_size(x->dtype);
	osz = es_dtype_size(odt);
	nchunks = (n + CHUNK_ELEMS - 1) / CHUNK_ELEMS;
	nt = es_op_threads(k, n, PAR_MIN_ELEMS);
	ES_PARALLEL_FOR(nt, true, q, nchunks, {
		int64_t off = q * CHUNK_ELEMS;
		int64_t len = n - off < CHUNK_ELEMS ? n - off : CHUNK_ELEMS;
		fn(len, (char *)out->data + off * (int64_t)osz,
		   (const char *)x->data + off * (int64_t)isz, pp);
	});
	return 0;
}

/* ---- 7. Cast and CastLike ----------------------------------------------- */

/*
 * One loop per (source, destination) pair. Sources load into their compute
 * type (float for float16/bfloat16, 0/1 for bool); the destination's
 * conversion depends on whether the source is a float (saturating f2i) or
 * an integer (C conversion, wrapping like numpy's astype).
 */
typedef void (*cast_fn)(int64_t n, void *out, const void *in);

#define CV_FLT_f32(v) ((float)(v))
#define CV_FLT_f64(v) ((double)(v))
#define CV_FLT_f16(v) es_float_to_half((float)(v))
#define CV_FLT_bf16(v) es_float_to_bf16((float)(v))
#define CV_FLT_i8(v) es_op_f2i_i8(v)
#define CV_FLT_i16(v) es_op_f2i_i16(v)
#define CV_FLT_i32(v) es_op_f2i_i32(v)
#define CV_FLT_i64(v) es_op_f2i_i64(v)
#define CV_FLT_u8(v) es_op_f2i_u8(v)
#define CV_FLT_u16(v) es_op_f2i_u16(v)
#define CV_FLT_u32(v) es_op_f2i_u32(v)
#define CV_FLT_u64(v) es_op_f2i_u64(v)
#define CV_FLT_b(v) ((uint8_t)((v) != 0))
#define CV_INT_f32(v) ((float)(v))
#define CV_INT_f64(v) ((double)(v))
#define CV_INT_f16(v) es_float_to_half((float)(v))
#define CV_INT_bf16(v) es_float_to_bf16((float)(v))
#define CV_INT_i8(v) ((int8_t)(v))
#define CV_INT_i16(v) ((int16_t)(v))
#define CV_INT_i32(v) ((int32_t)(v))
#define CV_INT_i64(v) ((int64_t)(v))
#define CV_INT_u8(v) ((uint8_t)(v))
#define CV_INT_u16(v) ((uint16_t)(v))
#define CV_INT_u32(v) ((uint32_t)(v))
#define CV_INT_u64(v) ((uint64_t)(v))
#define CV_INT_b(v) ((uint8_t)((v) != 0))

/*        src-args                              dst sfx  dst dtype  dst S */
#define CAST_DSTS(X, ...)                                  \
	X(__VA_ARGS__, f32, ES_DT_FLOAT, float)            \
	X(__VA_ARGS__, f64, ES_DT_DOUBLE, double)          \
	X(__VA_ARGS__, f16, ES_DT_FLOAT16, uint16_t)       \
	X(__VA_ARGS__, bf16, ES_DT_BFLOAT16, uint16_t)     \
	X(__VA_ARGS__, i8, ES_DT_INT8, int8_t)             \
	X(__VA_ARGS__, i16, ES_DT_INT16, int16_t)          \
	X(__VA_ARGS__, i32, ES_DT_INT32, int32_t)          \
	X(__VA_ARGS__, i64, ES_DT_INT64, int64_t)          \
	X(__VA_ARGS__, u8, ES_DT_UINT8, uint8_t)           \
	X(__VA_ARGS__, u16, ES_DT_UINT16, uint16_t)        \
	X(__VA_ARGS__, u32, ES_DT_UINT32, uint32_t)        \
	X(__VA_ARGS__, u64, ES_DT_UINT64, uint64_t)        \
	X(__VA_ARGS__, b, ES_DT_BOOL, uint8_t)

/* Source list: CAT is FLT or INT (which conversion family applies). */
#define CAST_SRCS(X)                                                              \
	X(f32, ES_DT_FLOAT, float, ID, FLT)                                       \
	X(f64, ES_DT_DOUBLE, double, ID, FLT)                                     \
	X(f16, ES_DT_FLOAT16, uint16_t, es_half_to_float, FLT)                    \
	X(bf16, ES_DT_BFLOAT16, uint16_t, es_bf16_to_float, FLT)                  \
	X(i8, ES_DT_INT8, int8_t, ID, INT)                                        \
	X(i16, ES_DT_INT16, int16_t, ID, INT)                                     \
	X(i32, ES_DT_INT32, int32_t, ID, INT)                                     \
	X(i64, ES_DT_INT64, int64_t, ID, INT)                                     \
	X(u8, ES_DT_UINT8, uint8_t, ID, INT)                                      \
	X(u16, ES_DT_UINT16, uint16_t, ID, INT)                                   \
	X(u32, ES_DT_UINT32, uint32_t, ID, INT)                                   \
	X(u64, ES_DT_UINT64, uint64_t, ID, INT)                                   \
	X(b, ES_DT_BOOL, uint8_t, LD_BOOL, INT)

#define CAST_FN(ss, sdt, SS, SLD, CAT, ds, ddt, DS)                         \
	static void cast_##ss##_##ds(int64_t n, void *out, const void *in)  \
	{                                                                   \
		DS *o = out;                                                \
		const SS *a = in;                                           \
		for (int64_t i = 0; i < n; i++)                             \
			o[i] = CV_##CAT##_##ds(SLD(a[i]));                  \
	}
#define CAST_SRC_FNS(ss, sdt, SS, SLD, CAT) CAST_DSTS(CAST_FN, ss, sdt, SS, SLD, CAT)
CAST_SRCS(CAST_SRC_FNS)

#define CAST_ENTRY(ss, sdt, SS, SLD, CAT, ds, ddt, DS) [ddt] = cast_##ss##_##ds,
#define CAST_ROW(ss, sdt, SS, SLD, CAT) [sdt] = { CAST_DSTS(CAST_ENTRY, ss, sdt, SS, SLD, CAT) },
static const cast_fn cast_fns[ES_DT_COUNT][ES_DT_COUNT] = { CAST_SRCS(CAST_ROW) };

typedef struct cast_state {
	es_dtype to;
} cast_state;

/* Cast-1 spells `to` as a string ("FLOAT", "INT64", ...). */
static int dtype_from_name(const char *name, es_dtype *out)
{
	static const struct {
		const char *name;
		es_dtype dt;
	} names[] = {
		{ "FLOAT", ES_DT_FLOAT }, { "UINT8", ES_DT_UINT8 },
		{ "INT8", ES_DT_INT8 }, { "UINT16", ES_DT_UINT16 },
		{ "INT16", ES_DT_INT16 }, { "INT32", ES_DT_INT32 },
		{ "INT64", ES_DT_INT64 }, { "STRING", ES_DT_STRING },
		{ "BOOL", ES_DT_BOOL }, { "FLOAT16", ES_DT_FLOAT16 },
		{ "DOUBLE", ES_DT_DOUBLE }, { "UINT32", ES_DT_UINT32 },
		{ "UINT64", ES_DT_UINT64 }, { "BFLOAT16", ES_DT_BFLOAT16 },
	};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (!strcasecmp(names[i].name, name)) {
			*out = names[i].dt;
			return 0;
		}
	}
	return ES_EINVAL;
}

static int cast_init(es_op_init_ctx *c, void **state)
{
	const es_node *node = c->node;
	const es_attr *a = es_node_attr(node, "to");
	cast_state *s;
	es_dtype to;

	if (!a)
		return es_error_set(c->err, ES_EINVAL,
				    "node '%s': Cast needs attribute 'to'", node->name);
	if (a->type == ES_ATTR_STRING) {
		if (dtype_from_name(a->s ? a->s : "", &to))
			return es_error_set(c->err, ES_EINVAL,
				"node '%s': attribute 'to' names unknown type \"%s\"",
				node->name, a->s ? a->s : "");
	} else if (a->type == ES_ATTR_INT) {
		if (a->i <= 0 || a->i >= ES_DT_COUNT ||
		    (a->i != ES_DT_STRING && es_dtype_size((es_dtype)a->i) == 0))
			return es_error_set(c->err, ES_EUNSUPPORTED,
				"node '%s': attribute 'to' = %lld is not a supported type",
				node->name, (long long)a->i);
		to = (es_dtype)a->i;
	} else {
		return es_error_set(c->err, ES_EINVAL,
			"node '%s': attribute 'to' must be an int (or a string before opset 6)",
			node->name);
	}
	if (to == ES_DT_STRING)
		return es_error_set(c->err, ES_EUNSUPPORTED,
			"node '%s': Cast to string is not supported", node->name);
	s = es_op_state_alloc(c, sizeof(*s));
	if (!s)
		return ES_ENOMEM;
	s->to = to;
	*state = s;
	return 0;
}

static int cast_to(es_kctx *k, es_dtype to)
{
	const es_tensor *x = es_kin(k, 0);
	es_tensor *out;
	cast_fn fn;
	int64_t n, nchunks;
	size_t isz, osz;
	int rc, nt;

	if (!x)
		return es_kctx_fail(k, ES_EINVAL, "Cast needs an input");
	if (x->dtype == ES_DT_STRING || to == ES_DT_STRING)
		return es_kctx_fail(k, ES_EUNSUPPORTED,
				    "cast from %s to %s: string tensors are not supported",
				    es_dtype_name(x->dtype), es_dtype_name(to));
	fn = dt_valid(x->dtype) && dt_valid(to) ? cast_fns[x->dtype][to] : NULL;
	if (!fn)
		return es_kctx_fail(k, ES_EUNSUPPORTED, "cast from %s to %s is not supported",
				    es_dtype_name(x->dtype), es_dtype_name(to));
	if (x->dtype == to)
		return es_kctx_output_alias(k, 0, 0, x->ndim, x->dims);
	if (es_dtype_size(x->dtype) == es_dtype_size(to)) {
		static const int cands[] = { 0 };
		rc = ew_output(k, to, x->ndim, x->dims, 1, cands);
	} else {
		rc = es_kctx_output(k, 0, to, x->ndim, x->dims);
	}
	if (rc)
		return rc;
	out = k->outputs[0];
	n = es_tensor_numel(x);
	isz = es_dtype_size(x->dtype);
	osz = es_dtype_size(to);
	nchunks = (n + CHUNK_ELEMS - 1) / CHUNK_ELEMS;
	nt = es_op_threads(k, n, PAR_MIN_ELEMS);
	ES_PARALLEL_FOR(nt, true, q, nchunks, {
		int64_t off = q * CHUNK_ELEMS;
		int64_t len = n - off < CHUNK_ELEMS ? n - off : CHUNK_ELEMS;
		fn(len, (char *)out->data + off * (int64_t)osz,
		   (const char *)x->data + off * (int64_t)isz);
	});
	return 0;
}

static int cast_run(es_kctx *k)
{
	const cast_state *s = k->state;
	return cast_to(k, s->to);
}

static int castlike_run(es_kctx *k)
{
	const es_tensor *target = es_kin(k, 1);
	if (!target)
		return es_kctx_fail(k, ES_EINVAL, "CastLike needs input 1 (target_type)");
	return cast_to(k, target->dtype);
}

/* ---- 8. the op table ---------------------------------------------------- */

#define T_F ES_T_FLOATS
#define T_NUM ES_T_NUMERIC
#define T_INT (ES_T_SINTS | ES_T_UINTS)
#define T_ALL ES_T_ALL
#define T_BOOL ES_T(ES_DT_BOOL)
#define T_SNUM (ES_T_FLOATS | ES_T_SINTS)
#define T_POW (ES_T_FLOATS | ES_T(ES_DT_INT32) | ES_T(ES_DT_INT64))
#define ALL_SAME 0xffffffffu

#define ROWF(name, s, u, nmin, nmax, tys, same, ot, odt, i, f, r)             \
	{ .domain = "", .op_type = name, .since = s, .until = u,              \
	  .min_inputs = nmin, .max_inputs = nmax, .min_outputs = 1,           \
	  .max_outputs = 1, .types = tys, .same_type_inputs = same,           \
	  .out_type = ot, .out_dtype = odt, .init = i, .fini = f, .run = r }
/* Rows whose init allocates a state freed by es_op_state_free. */
#define ROW(name, s, u, nmin, nmax, tys, same, ot, odt, i, r) \
	ROWF(name, s, u, nmin, nmax, tys, same, ot, odt, i, es_op_state_free, r)
#define UNARY(name, s, tys) \
	ROW(name, s, 0, 1, 1, tys, 0, ES_OUT_SAME, ES_DT_UNDEFINED, un_init, un_run)
#define PRED(name, s, tys) \
	ROW(name, s, 0, 1, 1, tys, 0, ES_OUT_FIXED, ES_DT_BOOL, un_init, un_run)
/* Binary rows: legacy (explicit broadcast attribute) until opset 6. */
#define BINARY(name, s, u, tys, same, i)                                     \
	ROW(name, s, u, 2, 2, tys, same, ES_OUT_SAME, ES_DT_UNDEFINED, i, bin_run)
#define ARITH(name)                                      \
	BINARY(name, 1, 6, T_NUM, 0x3, bin_init_legacy), \
	BINARY(name, 7, 0, T_NUM, 0x3, bin_init)
#define COMPARE(name, s, u, tys, i)                                          \
	ROW(name, s, u, 2, 2, tys, 0x3, ES_OUT_FIXED, ES_DT_BOOL, i, bin_run)
#define VARIADIC(name, tys)                                                  \
	ROWF(name, 1, 0, 1, ES_VARIADIC, tys, ALL_SAME, ES_OUT_SAME,          \
	     ES_DT_UNDEFINED, var_init, NULL, var_run)

static const es_op_def defs[] = {
	ARITH("Add"), ARITH("Sub"), ARITH("Mul"), ARITH("Div"),
	BINARY("Pow", 1, 6, T_F, 0x3, bin_init_legacy),
	BINARY("Pow", 7, 11, T_F, 0x3, bin_init),
	BINARY("Pow", 12, 0, T_POW, 0x1, bin_init),
	BINARY("Mod", 10, 0, T_NUM, 0x3, bin_init),
	BINARY("BitShift", 11, 0, ES_T_UINTS, 0x3, bin_init),
	BINARY("PRelu", 1, 6, T_F, 0x3, prelu_init_legacy),
	BINARY("PRelu", 7, 0, T_F | T_INT, 0x3, bin_init),
	COMPARE("Equal", 1, 6, T_ALL, bin_init_legacy),
	COMPARE("Equal", 7, 0, T_ALL, bin_init),
	COMPARE("Less", 1, 6, T_NUM, bin_init_legacy),
	COMPARE("Less", 7, 0, T_NUM, bin_init),
	COMPARE("Greater", 1, 6, T_NUM, bin_init_legacy),
	COMPARE("Greater", 7, 0, T_NUM, bin_init),
	COMPARE("LessOrEqual", 12, 0, T_NUM, bin_init),
	COMPARE("GreaterOrEqual", 12, 0, T_NUM, bin_init),
	COMPARE("And", 1, 6, T_BOOL, bin_init_legacy),
	COMPARE("And", 7, 0, T_BOOL, bin_init),
	COMPARE("Or", 1, 6, T_BOOL, bin_init_legacy),
	COMPARE("Or", 7, 0, T_BOOL, bin_init),
	COMPARE("Xor", 1, 6, T_BOOL, bin_init_legacy),
	COMPARE("Xor", 7, 0, T_BOOL, bin_init),
	VARIADIC("Max", T_NUM), VARIADIC("Min", T_NUM),
	VARIADIC("Sum", T_NUM), VARIADIC("Mean", T_F),
	{ .domain = "", .op_type = "Where", .since = 9, .min_inputs = 3,
	  .max_inputs = 3, .min_outputs = 1, .max_outputs = 1, .types = T_BOOL,
	  .same_type_inputs = 0, .out_type = ES_OUT_INPUT1, .run = where_run },
	ROW("Cast", 1, 5, 1, 1, T_ALL, 0, ES_OUT_UNKNOWN, ES_DT_UNDEFINED,
	    cast_init, cast_run),
	ROW("Cast", 6, 0, 1, 1, T_ALL, 0, ES_OUT_ATTR_TO, ES_DT_UNDEFINED,
	    cast_init, cast_run),
	{ .domain = "", .op_type = "CastLike", .since = 15, .min_inputs = 2,
	  .max_inputs = 2, .min_outputs = 1, .max_outputs = 1, .types = T_ALL,
	  .out_type = ES_OUT_INPUT1, .run = castlike_run },
	ROW("Clip", 1, 5, 1, 1, T_F, 0, ES_OUT_SAME, ES_DT_UNDEFINED, clip1_init, un_run),
	ROW("Clip", 6, 10, 1, 1, T_F, 0, ES_OUT_SAME, ES_DT_UNDEFINED, clip6_init, un_run),
	ROW("Clip", 11, 0, 1, 3, T_NUM, 0x7, ES_OUT_SAME, ES_DT_UNDEFINED, un_init, un_run),
	UNARY("Sqrt", 1, T_F), UNARY("Exp", 1, T_F), UNARY("Log", 1, T_F),
	UNARY("Neg", 1, T_SNUM), UNARY("Abs", 1, T_NUM),
	UNARY("Reciprocal", 1, T_F), UNARY("Erf", 9, T_NUM),
	UNARY("Tanh", 1, T_F), UNARY("Sigmoid", 1, T_F), UNARY("Relu", 1, T_SNUM),
	/* the optimizer's fused GELU (fuse_gelu.c) */
	{ .domain = ES_DOMAIN, .op_type = "Gelu", .since = 1, .min_inputs = 1,
	  .max_inputs = 1, .min_outputs = 1, .max_outputs = 1, .types = T_F,
	  .out_type = ES_OUT_SAME, .init = un_init, .fini = es_op_state_free,
	  .run = un_run },
	UNARY("LeakyRelu", 1, T_F), UNARY("Elu", 1, T_F),
	ROW("Selu", 1, 5, 1, 1, T_F, 0, ES_OUT_SAME, ES_DT_UNDEFINED, selu1_init, un_run),
	UNARY("Selu", 6, T_F),
	UNARY("Celu", 12, T_F), UNARY("ThresholdedRelu", 10, T_F),
	UNARY("Softplus", 1, T_F), UNARY("Softsign", 1, T_F),
	UNARY("HardSigmoid", 1, T_F), UNARY("HardSwish", 14, T_F),
	UNARY("Floor", 1, T_F), UNARY("Ceil", 1, T_F), UNARY("Round", 11, T_F),
	UNARY("Sign", 9, T_NUM),
	UNARY("Sin", 7, T_F), UNARY("Cos", 7, T_F), UNARY("Tan", 7, T_F),
	UNARY("Asin", 7, T_F), UNARY("Acos", 7, T_F), UNARY("Atan", 7, T_F),
	UNARY("Sinh", 9, T_F), UNARY("Cosh", 9, T_F), UNARY("Asinh", 9, T_F),
	UNARY("Acosh", 9, T_F), UNARY("Atanh", 9, T_F),
	PRED("IsNaN", 9, T_F), PRED("IsInf", 10, T_F),
	UNARY("Not", 1, T_BOOL),
};

const es_op_table es_ops_elementwise = { defs, sizeof(defs) / sizeof(defs[0]) };
