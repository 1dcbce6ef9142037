/*
 * Operator family: conv (Conv, ConvTranspose), opsets 1..17, and the
 * optimizer's FusedConv (ES_DOMAIN: Conv + bias + residual + activation,
 * optionally channels-last; see the FusedConv section below).
 *
 * float runs through oneDNN: the primitive is created for the actual
 * problem on first run and cached in the node state (a few entries keyed
 * by the resolved geometry, so a shape change creates a new entry and a
 * shape seen before reuses its own). The primitive picks its preferred
 * weight layout; when W is a model constant it is packed into that layout
 * once, when the entry is created. double, and anything oneDNN rejects
 * (more than 3 spatial dims, odd paddings, empty channels), runs the plain
 * C reference in this file; float16/bfloat16 convert to float and back.
 *
 * The node state is shared by every session of a model, so the cache is
 * guarded by a mutex and entries are reference counted: an entry evicted
 * while another session executes it is freed by the last user. An entry
 * also keeps the oneDNN memory objects of its last run (one run at a time
 * takes them; a concurrent run of the same entry makes temporary ones),
 * so steady-state runs create none.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "engine/cache/crc32c.h"
#include "engine/kernels/dnnl_util.h"
#include "engine/ops/conv_ref.h"
#include "engine/ops/families.h"
#include "engine/ops/op_util.h"
#include "engine/opt/opt.h"

#define MAX_SP ES_CONV_MAX_SP
#define CACHE_SLOTS 4

/* ---- reference implementation ------------------------------------------ */

static int64_t prod(const int64_t *v, int n)
{
	int64_t p = 1;
	for (int i = 0; i < n; i++)
		p *= v[i];
	return p;
}

/* Advances a row-major multi-index `c` over the box `lim`. */
static inline void odometer_next(int64_t *c, const int64_t *lim, int n)
{
	for (int d = n - 1; d >= 0; d--) {
		if (++c[d] < lim[d])
			return;
		c[d] = 0;
	}
}

/*
 * Offset (row-major inside one input plane) of the input element that
 * output position `oc` reads through kernel tap `kc`, or -1 when that
 * element is padding (or, for the transposed case, no input maps there).
 */
static inline int64_t ref_input_offset(const es_conv_geom *g,
				       const int64_t *oc, const int64_t *kc)
{
	int64_t off = 0;
	for (int d = 0; d < g->nsp; d++) {
		int64_t p;
		if (!g->transpose) {
			p = oc[d] * g->stride[d] - g->pad_begin[d] +
			    kc[d] * g->dilation[d];
		} else {
			int64_t t = oc[d] + g->pad_begin[d] - kc[d] * g->dilation[d];
			if (t < 0 || t % g->stride[d])
				return -1;
			p = t / g->stride[d];
		}
		if (p < 0 || p >= g->in[d])
			return -1;
		off = off * g->in[d] + p;
	}
	return off;
}

/* One output plane (image n, output channel m; plane = n * g->m + m). */
#define DEFINE_REF_PLANE(NAME, T)                                             \
	static void NAME(const es_conv_geom *g, const T *x, const T *w,      \
			 const T *b, T *y, int64_t plane)                     \
	{                                                                     \
		const int64_t sp_in = prod(g->in, g->nsp);                    \
		const int64_t sp_out = prod(g->out, g->nsp);                  \
		const int64_t k_sz = prod(g->kernel, g->nsp);                 \
		const int64_t cg = g->c / g->group, mg = g->m / g->group;     \
		const int64_t n = plane / g->m, m = plane % g->m;             \
		const int64_t gi = m / mg;                                    \
		const T *xg = x + (n * g->c + gi * cg) * sp_in;               \
		T *yp = y + plane * sp_out;                                   \
		int64_t oc[MAX_SP] = { 0 };                                   \
		for (int64_t o = 0; o < sp_out; o++) {                        \
			double acc = b ? (double)b[m] : 0.0;                  \
			int64_t kc[MAX_SP] = { 0 };                           \
			for (int64_t kk = 0; kk < k_sz; kk++) {               \
				int64_t off = ref_input_offset(g, oc, kc);    \
				odometer_next(kc, g->kernel, g->nsp);         \
				if (off < 0)                                  \
					continue;                             \
				for (int64_t c = 0; c < cg; c++) {            \
					int64_t wi = g->transpose ?           \
						((gi * cg + c) * mg + m - gi * mg) * k_sz + kk : \
						(m * cg + c) * k_sz + kk;     \
					acc += (double)xg[c * sp_in + off] *  \
					       (double)w[wi];                 \
				}                                             \
			}                                                     \
			yp[o] = (T)acc;                                       \
			odometer_next(oc, g->out, g->nsp);                    \
		}                                                             \
	}

DEFINE_REF_PLANE(ref_plane_f32, float)
DEFINE_REF_PLANE(ref_plane_f64, double)

static bool ref_parallel(const es_conv_geom *g, int threads)
{
	/* rough work estimate: threads only pay off on bigger problems */
	double work = (double)g->n * g->m * prod(g->out, g->nsp) *
		      prod(g->kernel, g->nsp) * (g->c / g->group);
	return threads > 1 && work > 65536.0;
}

void es_conv_ref_f32(const es_conv_geom *g, const float *x, const float *w,
		     const float *b, float *y, int threads)
{
	const int64_t planes = g->n * g->m;
	if (threads < 1)
		threads = 1;
	ES_PARALLEL_FOR(threads, ref_parallel(g, threads), p, planes, {
		ref_plane_f32(g, x, w, b, y, p);
	});
}

void es_conv_ref_f64(const es_conv_geom *g, const double *x, const double *w,
		     const double *b, double *y, int threads)
{
	const int64_t planes = g->n * g->m;
	if (threads < 1)
		threads = 1;
	ES_PARALLEL_FOR(threads, ref_parallel(g, threads), p, planes, {
		ref_plane_f64(g, x, w, b, y, p);
	});
}

/* ---- oneDNN path --------------------------------------------------------- */

/* Activation a FusedConv applies last (ONNX semantics, each exactly one
 * oneDNN eltwise algorithm). */
enum conv_act { ACT_NONE = 0, ACT_RELU, ACT_CLIP, ACT_LEAKY_RELU };

/*
 * What a primitive does besides the convolution, and the activation
 * layout. Part of the cache key: zero-filled before use so it compares
 * bytewise.
 */
struct conv_post {
	bool channels_last; /* X and Y are (n, spatial..., c) */
	bool sum;           /* Y = conv + Y's previous contents (residual Z) */
	int act;            /* enum conv_act */
	float alpha, beta;  /* Clip min/max, LeakyRelu alpha */
};

/* What a cached primitive is made for: the cache key, and the key packed
 * weights carry into the compiled form. Zero-filled, compared bytewise. */
struct conv_pkey {
	es_conv_geom geom;
	struct conv_post post;
	int32_t has_bias;
	int32_t threads; /* 0 in stored keys (see pkey_make) */
};

/* A created oneDNN (de)convolution primitive and the layouts it works on. */
struct dnnl_conv {
	dnnl_primitive_t prim;
	bool has_bias;
	bool pack_w; /* the primitive wants W in wei_md, not the ONNX layout */
	dnnl_memory_desc_t src_md, dst_md, bias_md;
	dnnl_memory_desc_t wei_user_md; /* ONNX layout of W */
	dnnl_memory_desc_t wei_md;      /* the primitive's layout of W */
	dnnl_memory_desc_t scratch_md;
	size_t wei_bytes, scratch_bytes;
	/* a generic oneDNN implementation (gemm-based or reference): on
	 * NCHW activations such a primitive is several times slower than the
	 * channels-last one, transposes included */
	bool generic_impl;
	/* a Winograd primitive of a channels-last problem: it works on
	 * 16-channel blocks (src_md and dst_md are nChw16c), so a run moves X
	 * (and Y's previous contents for a sum) into blocks and Y back */
	bool wino;
};

static void dnnl_conv_destroy(struct dnnl_conv *dc)
{
	if (dc->prim)
		dnnl_primitive_destroy(dc->prim);
	dc->prim = NULL;
}

static int dnnl_fail(es_error *err, const char *what, dnnl_status_t s)
{
	return es_error_set(err, ES_EUNSUPPORTED, "oneDNN %s: %s", what,
			    es_dnnl_strstatus(s));
}

/* Describes W in its ONNX layout with oneDNN's logical dims:
 * [g,] out-channels, in-channels, kernel... */
static dnnl_status_t weights_user_md(dnnl_memory_desc_t *md, const es_conv_geom *g,
				     int64_t *wdims, int *wnd)
{
	const int64_t k_sz = prod(g->kernel, g->nsp);
	const int64_t cg = g->c / g->group, mg = g->m / g->group;
	int64_t wstr[DNNL_MAX_NDIMS];
	int lead = g->group > 1 ? 1 : 0;
	int nd = lead + 2 + g->nsp;

	if (lead) {
		wdims[0] = g->group;
		wstr[0] = cg * mg * k_sz;
	}
	wdims[lead] = mg;
	wdims[lead + 1] = cg;
	if (!g->transpose) { /* (m, c/g, k...) */
		wstr[lead] = cg * k_sz;
		wstr[lead + 1] = k_sz;
	} else { /* (c, m/g, k...): out-channels vary faster than in-channels */
		wstr[lead] = k_sz;
		wstr[lead + 1] = mg * k_sz;
	}
	int64_t s = 1;
	for (int d = g->nsp - 1; d >= 0; d--) {
		wdims[lead + 2 + d] = g->kernel[d];
		wstr[lead + 2 + d] = s;
		s *= g->kernel[d];
	}
	*wnd = nd;
	return es_dnnl_md_strided(md, nd, wdims, wstr, dnnl_f32);
}

/* Describes an activation tensor of logical dims (n, c, spatial...) stored
 * channels-last: (n, spatial..., c). */
static dnnl_status_t md_channels_last(dnnl_memory_desc_t *md, int nd,
				      const int64_t *dims)
{
	int64_t str[DNNL_MAX_NDIMS];
	int64_t s = dims[1] > 0 ? dims[1] : 1;
	str[1] = 1;
	for (int d = nd - 1; d >= 2; d--) {
		str[d] = s;
		s *= dims[d] > 0 ? dims[d] : 1;
	}
	str[0] = s;
	return es_dnnl_md_strided(md, nd, dims, str, dnnl_f32);
}

/* Attaches post's sum and activation as oneDNN post-ops to attr. */
static dnnl_status_t set_post_ops(dnnl_primitive_attr_t attr,
				  const struct conv_post *post)
{
	dnnl_post_ops_t po = NULL;
	dnnl_status_t s;

	if (!post->sum && post->act == ACT_NONE)
		return dnnl_success;
	if ((s = dnnl_post_ops_create(&po)))
		return s;
	if (post->sum && (s = dnnl_post_ops_append_sum(po, 1.0f)))
		goto out;
	switch (post->act) {
	case ACT_RELU:
		s = dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f);
		break;
	case ACT_LEAKY_RELU:
		s = dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, post->alpha, 0.0f);
		break;
	case ACT_CLIP:
		s = dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_clip,
						 post->alpha, post->beta);
		break;
	default:
		break;
	}
	if (!s)
		s = dnnl_primitive_attr_set_post_ops(attr, po);
out:
	dnnl_post_ops_destroy(po);
	return s;
}

/*
 * Whether a channels-last problem may take oneDNN's Winograd convolution
 * (F(2x2,3x3) or F(4x4,3x3) on AVX-512, 16-channel blocks): 3x3, stride
 * 1, no dilation, no groups, channels in whole blocks. It does 2.25-4x
 * fewer multiplications than the direct algorithm; measured on ResNet
 * layers with one thread, 1.3-2.2x faster than the direct channels-last
 * primitive, the moves in and out of blocks included. Its rounding
 * differs from the direct algorithm's by about 1e-6 of the largest
 * output (docs/engine.md). ES_CONV_WINOGRAD=0 in the environment turns
 * it off (read once).
 */
static atomic_ulong wino_runs;

uint64_t es_conv_winograd_runs(void)
{
	return atomic_load_explicit(&wino_runs, memory_order_relaxed);
}

static bool wino_eligible(const es_conv_geom *g)
{
	static int enabled = -1;
	if (enabled < 0) {
		const char *e = getenv("ES_CONV_WINOGRAD");
		enabled = !(e && !strcmp(e, "0"));
	}
	return enabled && g->nsp == 2 && g->group == 1 &&
	       g->kernel[0] == 3 && g->kernel[1] == 3 &&
	       g->stride[0] == 1 && g->stride[1] == 1 &&
	       g->dilation[0] == 1 && g->dilation[1] == 1 &&
	       g->c % 16 == 0 && g->m % 16 == 0;
}

/* Creates the primitive for problem g with the extras in post (ignored
 * for the transposed case, which has none). Returns 0 or ES_EUNSUPPORTED
 * with the reason in err (the caller then runs the reference). */
static int dnnl_conv_create(struct dnnl_conv *dc, const es_conv_geom *g,
			    bool has_bias, const struct conv_post *post,
			    es_error *err)
{
	dnnl_engine_t eng = es_dnnl_engine();
	dnnl_primitive_attr_t attr = NULL;
	dnnl_primitive_desc_t pd = NULL;
	dnnl_memory_desc_t wei_any;
	int64_t sdims[DNNL_MAX_NDIMS], ddims[DNNL_MAX_NDIMS], wdims[DNNL_MAX_NDIMS];
	dnnl_dims_t strides, dil, pl, pr;
	dnnl_status_t s;
	int wnd, rc = 0;

	memset(dc, 0, sizeof(*dc));
	dc->has_bias = has_bias;
	if (!eng)
		return es_error_set(err, ES_EUNSUPPORTED, "oneDNN CPU engine unavailable");
	if (g->nsp < 1 || g->nsp > 3)
		return es_error_set(err, ES_EUNSUPPORTED,
				    "oneDNN handles 1 to 3 spatial dims, not %d", g->nsp);
	if (g->n < 1 || g->c < 1 || g->m < 1)
		return es_error_set(err, ES_EUNSUPPORTED, "empty tensor");

	const int nd = g->nsp + 2;
	sdims[0] = g->n;
	sdims[1] = g->c;
	ddims[0] = g->n;
	ddims[1] = g->m;
	for (int d = 0; d < g->nsp; d++) {
		sdims[2 + d] = g->in[d];
		ddims[2 + d] = g->out[d];
		strides[d] = g->stride[d];
		dil[d] = g->dilation[d] - 1; /* oneDNN counts the gaps */
		pl[d] = g->pad_begin[d];
		pr[d] = g->pad_end[d];
	}
	if (post->channels_last) {
		if ((s = md_channels_last(&dc->src_md, nd, sdims)) ||
		    (s = md_channels_last(&dc->dst_md, nd, ddims)))
			return dnnl_fail(err, "memory descriptor", s);
	} else if ((s = es_dnnl_md_plain(&dc->src_md, nd, sdims, dnnl_f32)) ||
		   (s = es_dnnl_md_plain(&dc->dst_md, nd, ddims, dnnl_f32))) {
		return dnnl_fail(err, "memory descriptor", s);
	}
	if ((s = es_dnnl_md_plain(&dc->bias_md, 1, &g->m, dnnl_f32)) ||
	    (s = weights_user_md(&dc->wei_user_md, g, wdims, &wnd)))
		return dnnl_fail(err, "memory descriptor", s);
	s = dnnl_memory_desc_init_by_tag(&wei_any, wnd, wdims, dnnl_f32,
					 dnnl_format_tag_any);
	if (s)
		return dnnl_fail(err, "weights descriptor", s);

	if (!g->transpose && post->channels_last && wino_eligible(g)) {
		if ((s = dnnl_primitive_attr_create(&attr)) ||
		    (s = dnnl_primitive_attr_set_scratchpad_mode(attr,
				dnnl_scratchpad_mode_user)) ||
		    (s = set_post_ops(attr, post))) {
			rc = dnnl_fail(err, "attributes", s);
			goto out_free_attr;
		}
		dnnl_memory_desc_t bsrc, bdst;
		dnnl_convolution_desc_t cd;
		if (!dnnl_memory_desc_init_by_tag(&bsrc, nd, sdims, dnnl_f32, dnnl_nChw16c) &&
		    !dnnl_memory_desc_init_by_tag(&bdst, nd, ddims, dnnl_f32, dnnl_nChw16c) &&
		    !dnnl_dilated_convolution_forward_desc_init(&cd, dnnl_forward_inference,
				dnnl_convolution_winograd, &bsrc, &wei_any,
				has_bias ? &dc->bias_md : NULL, &bdst, strides, dil, pl, pr) &&
		    !dnnl_primitive_desc_create(&pd, &cd, attr, eng, NULL)) {
			dc->src_md = bsrc;
			dc->dst_md = bdst;
			dc->wino = true;
			s = dnnl_success;
		} else {
			dnnl_primitive_attr_destroy(attr);
			attr = NULL;
			pd = NULL;
		}
	}
	if (dc->wino) {
		/* created above */
	} else if (!g->transpose) {
		dnnl_convolution_desc_t cd;
		s = dnnl_dilated_convolution_forward_desc_init(&cd,
			dnnl_forward_inference, dnnl_convolution_direct,
			&dc->src_md, &wei_any, has_bias ? &dc->bias_md : NULL,
			&dc->dst_md, strides, dil, pl, pr);
		if (s)
			return dnnl_fail(err, "convolution descriptor", s);
		if ((s = dnnl_primitive_attr_create(&attr)) ||
		    (s = dnnl_primitive_attr_set_scratchpad_mode(attr,
				dnnl_scratchpad_mode_user)) ||
		    (s = set_post_ops(attr, post))) {
			rc = dnnl_fail(err, "attributes", s);
			goto out_free_attr;
		}
		s = dnnl_primitive_desc_create(&pd, &cd, attr, eng, NULL);
	} else {
		dnnl_deconvolution_desc_t dd;
		if (post->channels_last || post->sum || post->act != ACT_NONE)
			return es_error_set(err, ES_EUNSUPPORTED,
					    "no fused extras for ConvTranspose");
		s = dnnl_dilated_deconvolution_forward_desc_init(&dd,
			dnnl_forward_inference, dnnl_deconvolution_direct,
			&dc->src_md, &wei_any, has_bias ? &dc->bias_md : NULL,
			&dc->dst_md, strides, dil, pl, pr);
		if (s)
			return dnnl_fail(err, "deconvolution descriptor", s);
		if ((s = dnnl_primitive_attr_create(&attr)) ||
		    (s = dnnl_primitive_attr_set_scratchpad_mode(attr,
				dnnl_scratchpad_mode_user))) {
			rc = dnnl_fail(err, "attributes", s);
			goto out_free_attr;
		}
		s = dnnl_primitive_desc_create(&pd, &dd, attr, eng, NULL);
	}
	if (s) {
		rc = dnnl_fail(err, "primitive descriptor", s);
		goto out_free_attr;
	}
	s = dnnl_primitive_create(&dc->prim, pd);
	if (s) {
		dc->prim = NULL;
		rc = dnnl_fail(err, "primitive", s);
		goto out_free_pd;
	}
	const dnnl_memory_desc_t *md;
	md = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
	if (!md) {
		rc = es_error_set(err, ES_EUNSUPPORTED, "oneDNN: no weights layout");
		dnnl_conv_destroy(dc);
		goto out_free_pd;
	}
	dc->wei_md = *md;
	dc->wei_bytes = dnnl_memory_desc_get_size(&dc->wei_md);
	dc->pack_w = !dnnl_memory_desc_equal(&dc->wei_md, &dc->wei_user_md);
	md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
	if (md) {
		dc->scratch_md = *md;
		dc->scratch_bytes = dnnl_memory_desc_get_size(md);
	}
	const char *impl = NULL;
	if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success &&
	    impl)
		dc->generic_impl = strstr(impl, "gemm") || !strncmp(impl, "ref", 3);
out_free_pd:
	dnnl_primitive_desc_destroy(pd);
out_free_attr:
	if (attr)
		dnnl_primitive_attr_destroy(attr);
	return rc;
}

/*
 * Memory objects bound to one primitive, kept between runs: creating them
 * costs two allocations each, rebinding a buffer (set_data_handle) none.
 * bound[i] is the buffer mem[i] wraps.
 */
struct dnnl_conv_mems {
	dnnl_memory_t mem[5];
	const void *bound[5];
};

static void conv_mems_destroy(struct dnnl_conv_mems *m)
{
	for (int i = 0; i < 5; i++) {
		if (m->mem[i])
			dnnl_memory_destroy(m->mem[i]);
		m->mem[i] = NULL;
		m->bound[i] = NULL;
	}
}

/* Executes dc. w is in dc->wei_md's layout; scratch has scratch_bytes.
 * keep (may be NULL: temporary objects) holds the memory objects. */
static int dnnl_conv_exec(const struct dnnl_conv *dc, const float *x,
			  const float *w, const float *b, float *y,
			  void *scratch, struct dnnl_conv_mems *keep, es_error *err)
{
	dnnl_stream_t strm = es_dnnl_stream();
	struct dnnl_conv_mems local;
	struct dnnl_conv_mems *m = keep ? keep : &local;
	dnnl_exec_arg_t args[5];
	dnnl_status_t s;
	int n = 0;

	if (!keep)
		memset(&local, 0, sizeof(local));
	if (!strm)
		return es_error_set(err, ES_EUNSUPPORTED, "oneDNN stream unavailable");
	if ((s = es_dnnl_bind(&m->mem[0], &m->bound[0], &dc->src_md, x)))
		goto out;
	args[n++] = (dnnl_exec_arg_t){ DNNL_ARG_SRC, m->mem[0] };
	if ((s = es_dnnl_bind(&m->mem[1], &m->bound[1], &dc->wei_md, w)))
		goto out;
	args[n++] = (dnnl_exec_arg_t){ DNNL_ARG_WEIGHTS, m->mem[1] };
	if ((s = es_dnnl_bind(&m->mem[2], &m->bound[2], &dc->dst_md, y)))
		goto out;
	args[n++] = (dnnl_exec_arg_t){ DNNL_ARG_DST, m->mem[2] };
	if (dc->has_bias) {
		if ((s = es_dnnl_bind(&m->mem[3], &m->bound[3], &dc->bias_md, b)))
			goto out;
		args[n++] = (dnnl_exec_arg_t){ DNNL_ARG_BIAS, m->mem[3] };
	}
	if (dc->scratch_bytes) {
		if ((s = es_dnnl_bind(&m->mem[4], &m->bound[4], &dc->scratch_md, scratch)))
			goto out;
		args[n++] = (dnnl_exec_arg_t){ DNNL_ARG_SCRATCHPAD, m->mem[4] };
	}
	s = dnnl_primitive_execute(dc->prim, strm, n, args);
	if (s == dnnl_success)
		s = dnnl_stream_wait(strm);
out:
	if (!keep)
		conv_mems_destroy(&local);
	else if (s != dnnl_success)
		conv_mems_destroy(keep); /* rebuilt from scratch next time */
	if (s != dnnl_success)
		return dnnl_fail(err, "execution", s);
	return 0;
}

int es_conv_dnnl_f32(const es_conv_geom *g, const float *x, const float *w,
		     const float *b, float *y, int threads, es_error *err)
{
	struct dnnl_conv dc;
	void *packed = NULL, *scratch = NULL;
	int rc;

	struct conv_post none;
	memset(&none, 0, sizeof(none));
	es_dnnl_set_threads(threads);
	rc = dnnl_conv_create(&dc, g, b != NULL, &none, err);
	if (rc)
		return rc;
	if (dc.pack_w) {
		packed = es_aligned_alloc(dc.wei_bytes);
		if (!packed) {
			rc = es_error_set(err, ES_ENOMEM, "out of memory packing weights");
			goto out_destroy;
		}
		dnnl_status_t s = es_dnnl_reorder(&dc.wei_user_md, w, &dc.wei_md, packed);
		if (s) {
			rc = dnnl_fail(err, "weight reorder", s);
			goto out_free;
		}
		w = packed;
	}
	if (dc.scratch_bytes) {
		scratch = es_aligned_alloc(dc.scratch_bytes);
		if (!scratch) {
			rc = es_error_set(err, ES_ENOMEM, "out of memory for scratchpad");
			goto out_free;
		}
	}
	rc = dnnl_conv_exec(&dc, x, w, b, y, scratch, NULL, err);
out_free:
	es_aligned_free(scratch);
	es_aligned_free(packed);
out_destroy:
	dnnl_conv_destroy(&dc);
	return rc;
}

/* ---- node state and primitive cache -------------------------------------- */

/* One cached problem. use_ref marks a problem oneDNN rejected. */
struct conv_prim {
	atomic_int refs;
	es_conv_geom geom;
	struct conv_post post;
	bool has_bias;
	bool use_ref;
	/* the OpenMP team size it was made for: oneDNN fixes a primitive's
	 * thread count when it creates it, so sessions of one model with
	 * different counts (a device's streams, a one-thread shadow session)
	 * each get their own entry */
	int threads;
	struct dnnl_conv dc;
	float *packed_w; /* W packed into dc.wei_md once (constant W only) */
	bool packed_borrowed; /* packed_w lies in a compiled form's mapping */
	uint64_t last_use;
	atomic_flag mems_busy; /* a run is using mems */
	struct dnnl_conv_mems mems;
};

struct conv_state {
	bool transpose;
	int nsp;          /* spatial rank the attributes fix; 0: none do */
	int64_t group;
	es_auto_pad auto_pad;
	bool has_kernel_shape, has_output_shape;
	int64_t kernel_shape[MAX_SP];
	int64_t strides[MAX_SP];
	int64_t dilations[MAX_SP];
	int64_t pads[2 * MAX_SP];
	int64_t output_padding[MAX_SP];
	int64_t output_shape[MAX_SP + 2];
	int output_shape_len;

	/* FusedConv: layout and activation (sum is decided per run) */
	bool channels_last;
	int act; /* enum conv_act */
	float act_alpha, act_beta;

	bool w_const;     /* W is a model constant */
	float *w_f32;     /* constant float16/bfloat16 W converted once */

	/* weights packed by an earlier process, from the compiled form
	 * (es.packed_weights.* attributes, see conv_save_attrs) */
	struct conv_adopt {
		struct conv_pkey key;
		dnnl_memory_desc_t md;
		const void *data;
		size_t bytes;
		uint32_t crc;  /* CRC-32C of data, from the blob's header */
		int verified;  /* 0 not yet, 1 data matches crc, -1 it does not */
	} adopt[CACHE_SLOTS];
	int n_adopt;

	pthread_mutex_t lock;
	struct conv_prim *cache[CACHE_SLOTS];
	uint64_t clock; /* ticks per lookup, for LRU eviction */
};

static void prim_put(struct conv_prim *e)
{
	if (!e || atomic_fetch_sub(&e->refs, 1) != 1)
		return;
	conv_mems_destroy(&e->mems);
	dnnl_conv_destroy(&e->dc);
	if (!e->packed_borrowed)
		es_aligned_free(e->packed_w);
	free(e);
}

static atomic_ulong adopted_weights;

uint64_t es_conv_adopted_weights(void)
{
	return atomic_load_explicit(&adopted_weights, memory_order_relaxed);
}

/* The key packed weights are stored under: the problem, not the thread
 * count (the weights' bytes depend only on the layout, which is compared
 * on its own; threads stays 0 in the stored key). */
static void pkey_make(struct conv_pkey *k, const es_conv_geom *g,
		      const struct conv_post *post, bool has_bias)
{
	memset(k, 0, sizeof(*k));
	k->geom = *g;
	k->post = *post;
	k->has_bias = has_bias;
}

/* Weights an earlier process packed for this problem, in exactly the
 * layout this oneDNN asks for now, whose bytes match their checksum (the
 * compiled form's own checksum does not cover them; checked on first
 * use, under st->lock). */
static const struct conv_adopt *find_adopt(struct conv_state *st,
					   const struct conv_prim *e)
{
	struct conv_pkey k;
	pkey_make(&k, &e->geom, &e->post, e->has_bias);
	for (int i = 0; i < st->n_adopt; i++) {
		struct conv_adopt *a = &st->adopt[i];
		if (memcmp(&a->key, &k, sizeof(k)) || a->bytes != e->dc.wei_bytes ||
		    !dnnl_memory_desc_equal(&a->md, &e->dc.wei_md) ||
		    memcmp(&a->md, &e->dc.wei_md, sizeof(a->md)))
			continue;
		if (!a->verified)
			a->verified = es_crc32c(0, a->data, a->bytes) == a->crc ? 1 : -1;
		return a->verified > 0 ? a : NULL;
	}
	return NULL;
}

/* Builds a cache entry for g. Returns NULL only when out of memory. */
static struct conv_prim *prim_build(struct conv_state *st,
				    const es_conv_geom *g, bool has_bias,
				    const struct conv_post *post,
				    const float *w, int threads)
{
	struct conv_prim *e = calloc(1, sizeof(*e));
	es_error why;

	if (!e)
		return NULL;
	atomic_flag_clear(&e->mems_busy);
	e->geom = *g;
	e->post = *post;
	e->has_bias = has_bias;
	e->threads = threads;
	es_dnnl_set_threads(threads);
	if (dnnl_conv_create(&e->dc, g, has_bias, post, &why)) {
		e->use_ref = true;
		return e;
	}
	const struct conv_adopt *a;
	if (e->dc.pack_w && st->w_const && (a = find_adopt(st, e))) {
		/* read-only: the primitive only reads its weights */
		e->packed_w = (float *)a->data;
		e->packed_borrowed = true;
		atomic_fetch_add_explicit(&adopted_weights, 1, memory_order_relaxed);
	} else if (e->dc.pack_w && st->w_const) {
		e->packed_w = es_aligned_alloc(e->dc.wei_bytes);
		if (!e->packed_w ||
		    es_dnnl_reorder(&e->dc.wei_user_md, w, &e->dc.wei_md, e->packed_w)) {
			es_aligned_free(e->packed_w);
			e->packed_w = NULL;
			dnnl_conv_destroy(&e->dc);
			e->use_ref = true;
		}
	}
	return e;
}

/* Returns the cache entry for g with a reference held (prim_put), creating
 * it on first sight; NULL when out of memory. */
static struct conv_prim *prim_get(struct conv_state *st, const es_conv_geom *g,
				  bool has_bias, const struct conv_post *post,
				  const float *w, int threads)
{
	struct conv_prim *e = NULL;
	int victim = 0;

	pthread_mutex_lock(&st->lock);
	st->clock++;
	for (int i = 0; i < CACHE_SLOTS; i++) {
		struct conv_prim *c = st->cache[i];
		if (c && c->has_bias == has_bias && c->threads == threads &&
		    !memcmp(&c->geom, g, sizeof(*g)) &&
		    !memcmp(&c->post, post, sizeof(*post))) {
			e = c;
			break;
		}
		if (!c || (st->cache[victim] &&
			   c->last_use < st->cache[victim]->last_use))
			victim = i;
	}
	if (!e) {
		e = prim_build(st, g, has_bias, post, w, threads);
		if (e) {
			prim_put(st->cache[victim]);
			atomic_init(&e->refs, 1); /* the cache's reference */
			st->cache[victim] = e;
		}
	}
	if (e) {
		e->last_use = st->clock;
		atomic_fetch_add(&e->refs, 1);
	}
	pthread_mutex_unlock(&st->lock);
	return e;
}

/* ---- attributes ----------------------------------------------------------- */

static int attr_ints(const es_op_init_ctx *c, const char *name, int64_t *out,
		     size_t max, int *count, bool *present)
{
	const int64_t *v = NULL;
	size_t n = 0;
	int rc = es_node_attr_ints(c->node, name, &v, &n, c->err);
	if (rc)
		return rc;
	*present = n > 0; /* an empty list means the default */
	if (n > max)
		return es_error_set(c->err, ES_EINVAL,
				    "%s node '%s': attribute %s has %zu values, at most %zu supported",
				    c->node->op_type, c->node->name, name, n, max);
	for (size_t i = 0; i < n; i++)
		out[i] = v[i];
	*count = (int)n;
	return 0;
}

/* Every spatial attribute must agree on the spatial rank. */
static int agree_rank(const es_op_init_ctx *c, const char *name, int n,
		      int *nsp, const char **nsp_from)
{
	if (*nsp_from && *nsp != n)
		return es_error_set(c->err, ES_EINVAL,
				    "%s node '%s': attribute %s describes %d spatial dims but %s describes %d",
				    c->node->op_type, c->node->name, name, n, *nsp_from, *nsp);
	*nsp = n;
	*nsp_from = name;
	return 0;
}

static void conv_fini(void *state)
{
	struct conv_state *st = state;
	if (!st)
		return;
	for (int i = 0; i < CACHE_SLOTS; i++)
		prim_put(st->cache[i]);
	es_aligned_free(st->w_f32);
	pthread_mutex_destroy(&st->lock);
	free(st);
}

static int conv_init_common(es_op_init_ctx *c, void **state, bool transpose)
{
	struct conv_state *st = es_op_state_alloc(c, sizeof(*st));
	const char *nsp_from = NULL;
	int nsp = 0, n, rc;
	bool present;

	if (!st)
		return ES_ENOMEM;
	st->transpose = transpose;
	pthread_mutex_init(&st->lock, NULL);
	for (int i = 0; i < MAX_SP; i++) {
		st->strides[i] = 1;
		st->dilations[i] = 1;
	}

	if ((rc = es_node_attr_int(c->node, "group", 1, &st->group, c->err)))
		goto out_fail;
	if (st->group < 1) {
		rc = es_error_set(c->err, ES_EINVAL,
				  "%s node '%s': attribute group is %lld, must be >= 1",
				  c->node->op_type, c->node->name, (long long)st->group);
		goto out_fail;
	}
	if ((rc = es_op_attr_auto_pad(c, &st->auto_pad)))
		goto out_fail;

	if ((rc = attr_ints(c, "kernel_shape", st->kernel_shape, MAX_SP, &n, &present)))
		goto out_fail;
	st->has_kernel_shape = present;
	if (present && ((rc = agree_rank(c, "kernel_shape", n, &nsp, &nsp_from)) ||
			(rc = es_op_attr_check_min(c, "kernel_shape", st->kernel_shape, n, 1))))
		goto out_fail;

	if ((rc = attr_ints(c, "strides", st->strides, MAX_SP, &n, &present)))
		goto out_fail;
	if (present && ((rc = agree_rank(c, "strides", n, &nsp, &nsp_from)) ||
			(rc = es_op_attr_check_min(c, "strides", st->strides, n, 1))))
		goto out_fail;

	if ((rc = attr_ints(c, "dilations", st->dilations, MAX_SP, &n, &present)))
		goto out_fail;
	if (present && ((rc = agree_rank(c, "dilations", n, &nsp, &nsp_from)) ||
			(rc = es_op_attr_check_min(c, "dilations", st->dilations, n, 1))))
		goto out_fail;

	if ((rc = attr_ints(c, "pads", st->pads, 2 * MAX_SP, &n, &present)))
		goto out_fail;
	if (present) {
		if (n % 2) {
			rc = es_error_set(c->err, ES_EINVAL,
					  "%s node '%s': attribute pads has %d values, expected 2 per spatial axis",
					  c->node->op_type, c->node->name, n);
			goto out_fail;
		}
		if ((rc = agree_rank(c, "pads", n / 2, &nsp, &nsp_from)) ||
		    (rc = es_op_attr_check_min(c, "pads", st->pads, n, 0)))
			goto out_fail;
	}

	if (transpose) {
		if ((rc = attr_ints(c, "output_padding", st->output_padding, MAX_SP, &n, &present)))
			goto out_fail;
		if (present && ((rc = agree_rank(c, "output_padding", n, &nsp, &nsp_from)) ||
				(rc = es_op_attr_check_min(c, "output_padding",
							   st->output_padding, n, 0))))
			goto out_fail;

		if ((rc = attr_ints(c, "output_shape", st->output_shape, MAX_SP + 2,
				    &st->output_shape_len, &present)))
			goto out_fail;
		st->has_output_shape = present;
		/* Some exporters write the full (N, C, spatial...) shape; only
		 * the spatial tail is used, settled at run time against X. */
		if (present && (rc = es_op_attr_check_min(c, "output_shape", st->output_shape,
							  st->output_shape_len, 1)))
			goto out_fail;
	}
	st->nsp = nsp;

	/* W is packed per problem when the primitive is created; remember
	 * whether it is constant so that happens once. */
	const es_tensor *w = es_init_const_input(c, 1);
	st->w_const = w != NULL;
	if (w && (w->dtype == ES_DT_FLOAT16 || w->dtype == ES_DT_BFLOAT16)) {
		int64_t cnt = es_tensor_numel(w);
		size_t bytes;
		if (cnt < 0 || es_mul_size((size_t)cnt, sizeof(float), &bytes)) {
			rc = es_error_set(c->err, ES_ERANGE, "%s node '%s': W too large",
					  c->node->op_type, c->node->name);
			goto out_fail;
		}
		st->w_f32 = es_aligned_alloc(bytes);
		if (!st->w_f32) {
			rc = es_error_set(c->err, ES_ENOMEM, "out of memory");
			goto out_fail;
		}
		es_op_half_to_f32(w->dtype, w->data, st->w_f32, cnt);
	}
	*state = st;
	return 0;

out_fail:
	conv_fini(st);
	return rc;
}

static int conv_init(es_op_init_ctx *c, void **state)
{
	return conv_init_common(c, state, false);
}

static int convtr_init(es_op_init_ctx *c, void **state)
{
	return conv_init_common(c, state, true);
}

/* ---- run ---------------------------------------------------------------- */

/* Messages name the input or attribute, the expected and the actual value;
 * es_kctx_fail adds the node. */
#define FAIL(k, code, ...) es_kctx_fail(k, code, __VA_ARGS__)

static int64_t floor_half(int64_t t)
{
	return t >= 0 ? t / 2 : -((-t + 1) / 2);
}

/* Resolves strides, dilations, pads and output size of Conv (transpose
 * false) or ConvTranspose into g, checking every product for overflow. */
static int conv_geometry(es_kctx *k, const struct conv_state *st,
			 const es_tensor *x, const es_tensor *w,
			 const es_tensor *b, es_conv_geom *g)
{
	const char *op = st->transpose ? "ConvTranspose" : "Conv";
	const int nd = x->ndim;

	memset(g, 0, sizeof(*g));
	g->transpose = st->transpose;
	if (nd < 3)
		return FAIL(k, ES_ESHAPE,
			    "input X has rank %d, %s expects (N, C, D1, ...) of rank >= 3",
			    nd, op);
	if (w->ndim != nd)
		return FAIL(k, ES_ESHAPE, "input W has rank %d, expected %d (the rank of X)",
			    w->ndim, nd);
	const int nsp = nd - 2;
	if (st->nsp && st->nsp != nsp)
		return FAIL(k, ES_ESHAPE,
			    "the attributes describe %d spatial dims but input X has %d (rank %d)",
			    st->nsp, nsp, nd);
	g->nsp = nsp;
	g->n = x->dims[0];
	g->c = x->dims[1];
	g->group = st->group;

	if (!st->transpose) {
		int64_t need;
		g->m = w->dims[0];
		if (__builtin_mul_overflow(w->dims[1], st->group, &need))
			return FAIL(k, ES_ESHAPE,
				    "input W has %lld channels per group (dim 1) and group is %lld: their product overflows (X has %lld channels)",
				    (long long)w->dims[1], (long long)st->group, (long long)g->c);
		if (need != g->c)
			return FAIL(k, ES_ESHAPE,
				    "input W has %lld channels per group (dim 1) and group is %lld, so X needs %lld channels, but X has %lld",
				    (long long)w->dims[1], (long long)st->group,
				    (long long)need, (long long)g->c);
		if (g->m % st->group)
			return FAIL(k, ES_ESHAPE,
				    "input W has %lld output channels (dim 0), not a multiple of group %lld",
				    (long long)g->m, (long long)st->group);
	} else {
		if (w->dims[0] != g->c)
			return FAIL(k, ES_ESHAPE,
				    "input W has %lld input channels (dim 0), expected %lld (the channels of X)",
				    (long long)w->dims[0], (long long)g->c);
		if (g->c % st->group)
			return FAIL(k, ES_ESHAPE,
				    "input X has %lld channels, not a multiple of group %lld",
				    (long long)g->c, (long long)st->group);
		if (__builtin_mul_overflow(w->dims[1], st->group, &g->m))
			return FAIL(k, ES_ERANGE, "output channels W.dims[1] * group overflow");
	}
	if (b) {
		if (b->ndim != 1 || b->dims[0] != g->m)
			return FAIL(k, ES_ESHAPE,
				    "input B must be 1-D of size %lld (output channels), got rank %d with %lld elements",
				    (long long)g->m, b->ndim, (long long)es_tensor_numel(b));
	}

	int out_shape_off = 0;
	if (st->transpose && st->has_output_shape) {
		if (st->output_shape_len == nsp + 2)
			out_shape_off = 2;
		else if (st->output_shape_len != nsp)
			return FAIL(k, ES_ESHAPE,
				    "attribute output_shape has %d values, expected %d (spatial dims of X)",
				    st->output_shape_len, nsp);
	}

	for (int d = 0; d < nsp; d++) {
		const int64_t in = x->dims[2 + d];
		const int64_t kd = w->dims[2 + d];
		const int64_t s = st->strides[d], dil = st->dilations[d];
		int64_t ext, t, out, pb, pe, full = 0;

		g->in[d] = in;
		g->kernel[d] = kd;
		g->stride[d] = s;
		g->dilation[d] = dil;
		if (kd < 1)
			return FAIL(k, ES_ESHAPE, "input W has kernel size %lld on spatial axis %d, expected >= 1",
				    (long long)kd, d);
		if (st->has_kernel_shape && st->kernel_shape[d] != kd)
			return FAIL(k, ES_ESHAPE,
				    "attribute kernel_shape[%d] is %lld but input W has %lld there",
				    d, (long long)st->kernel_shape[d], (long long)kd);
		if (__builtin_mul_overflow(kd - 1, dil, &ext) || __builtin_add_overflow(ext, 1, &ext))
			return FAIL(k, ES_ERANGE, "kernel extent on axis %d overflows", d);

		if (!st->transpose) {
			switch (st->auto_pad) {
			case ES_AUTO_PAD_NOTSET:
				pb = st->pads[d];
				pe = st->pads[nsp + d];
				break;
			case ES_AUTO_PAD_VALID:
				pb = pe = 0;
				break;
			default: /* SAME_*: out = ceil(in / s) */
				if (es_op_same_pads(in, s, ext, st->auto_pad == ES_AUTO_PAD_SAME_UPPER,
						    &pb, &pe))
					return FAIL(k, ES_ERANGE, "padding on axis %d overflows", d);
				break;
			}
			if (__builtin_add_overflow(in, pb, &t) || __builtin_add_overflow(t, pe, &t))
				return FAIL(k, ES_ERANGE, "padded size on axis %d overflows", d);
			t -= ext;
			if (t < 0)
				return FAIL(k, ES_ESHAPE,
					    "output size on spatial axis %d would be <= 0: input %lld + pads %lld + %lld is smaller than the dilated kernel %lld",
					    d, (long long)in, (long long)pb, (long long)pe, (long long)ext);
			out = t / s + 1;
		} else {
			const int64_t opad = st->output_padding[d];
			/* full = s*(in-1) + output_padding + ext */
			if (in < 1)
				return FAIL(k, ES_ESHAPE, "input X has size %lld on spatial axis %d, expected >= 1",
					    (long long)in, d);
			if (__builtin_mul_overflow(in - 1, s, &full) ||
			    __builtin_add_overflow(full, opad, &full) ||
			    __builtin_add_overflow(full, ext, &full))
				return FAIL(k, ES_ERANGE, "output size on axis %d overflows", d);
			if (st->has_output_shape) {
				out = st->output_shape[out_shape_off + d];
				t = full - out;
				if (st->auto_pad == ES_AUTO_PAD_SAME_UPPER) {
					pb = floor_half(t);
					pe = t - pb;
				} else {
					pe = floor_half(t);
					pb = t - pe;
				}
			} else if (st->auto_pad == ES_AUTO_PAD_SAME_UPPER ||
				   st->auto_pad == ES_AUTO_PAD_SAME_LOWER) {
				/* pad so that out = in * s (never pad negatively) */
				int64_t target;
				if (__builtin_mul_overflow(in, s, &target))
					return FAIL(k, ES_ERANGE, "output size on axis %d overflows", d);
				t = full - target;
				if (t < 0)
					t = 0;
				if (st->auto_pad == ES_AUTO_PAD_SAME_UPPER) {
					pb = t / 2;
					pe = t - pb;
				} else {
					pe = t / 2;
					pb = t - pe;
				}
				out = full - t;
			} else {
				if (st->auto_pad == ES_AUTO_PAD_VALID) {
					pb = pe = 0;
				} else {
					pb = st->pads[d];
					pe = st->pads[nsp + d];
				}
				if (__builtin_add_overflow(pb, pe, &t))
					return FAIL(k, ES_ERANGE, "pads on axis %d overflow", d);
				out = full - t;
			}
			if (out < 1)
				return FAIL(k, ES_ESHAPE,
					    "output size on spatial axis %d would be %lld (<= 0): stride %lld * (input %lld - 1) + output_padding %lld + dilated kernel %lld - pads %lld - %lld",
					    d, (long long)out, (long long)s, (long long)in,
					    (long long)opad, (long long)ext, (long long)pb, (long long)pe);
		}
		g->out[d] = out;
		g->pad_begin[d] = pb;
		/* transposed: the end padding that yields `out` without
		 * output_padding (negative when the output is extended) */
		g->pad_end[d] = st->transpose ? full - st->output_padding[d] - pb - out : pe;
	}
	return 0;
}

static float *scratch_f32(es_kctx *k, int64_t n);
static bool conv_dnnl_try(es_kctx *k, struct conv_state *st, const es_conv_geom *g,
			  const struct conv_post *post, const float *x,
			  const float *w, const float *b, float *y);

/* dst[i][p][c] = src[i][c][p] for n images (reverse with the roles of c
 * and p swapped): 32 x 32 tiles, parallel over tiles. */
static void transpose_planes(const float *src, float *dst, int64_t n, int64_t rows,
			     int64_t cols, int threads)
{
	const int64_t T = 32, rt = (rows + T - 1) / T, ct = (cols + T - 1) / T;
	const int64_t tiles = n * rt * ct;
	ES_PARALLEL_FOR(threads, n * rows * cols > 65536, t, tiles, {
		const int64_t i = t / (rt * ct), r0 = t / ct % rt * T, c0 = t % ct * T;
		const int64_t r1 = r0 + T < rows ? r0 + T : rows, c1 = c0 + T < cols ? c0 + T : cols;
		const float *s = src + i * rows * cols;
		float *d = dst + i * rows * cols;
		for (int64_t r = r0; r < r1; r++)
			for (int64_t c = c0; c < c1; c++)
				d[c * rows + r] = s[r * cols + c];
	});
}

/*
 * An NCHW 2-D problem whose NCHW primitive is a generic implementation:
 * X to channels-last scratch, the channels-last primitive (same extras),
 * Y back. False (Y untouched) when that primitive is no better or scratch
 * runs out.
 */
static bool conv_via_channels_last(es_kctx *k, struct conv_state *st,
				   const es_conv_geom *g, const struct conv_post *post,
				   const float *x, const float *w, const float *b, float *y)
{
	struct conv_post cl = *post;
	const int64_t hw_in = g->in[0] * g->in[1], hw_out = g->out[0] * g->out[1];
	int64_t nx, ny;
	size_t bx, by;

	cl.channels_last = true;
	if (__builtin_mul_overflow(g->n * g->c, hw_in, &nx) ||
	    __builtin_mul_overflow(g->n * g->m, hw_out, &ny) ||
	    es_mul_size((size_t)nx, sizeof(float), &bx) ||
	    es_mul_size((size_t)ny, sizeof(float), &by))
		return false;
	struct conv_prim *e = prim_get(st, g, b != NULL, &cl, w, k->threads);
	bool usable = e && !e->use_ref && !e->dc.generic_impl;
	prim_put(e);
	if (!usable)
		return false;
	float *xt = es_kctx_scratch(k, bx ? bx : sizeof(float));
	float *yt = es_kctx_scratch(k, by ? by : sizeof(float));
	if (!xt || !yt)
		return false;
	transpose_planes(x, xt, g->n, g->c, hw_in, k->threads);
	if (!conv_dnnl_try(k, st, g, &cl, xt, w, b, yt))
		return false;
	transpose_planes(yt, y, g->n, hw_out, g->m, k->threads);
	return true;
}

/*
 * Channels-last (n, h, w, c) to 16-channel blocks (n, c/16, h, w, 16) and
 * back, for the Winograd primitive; c is a multiple of 16. Each position's
 * channels move as whole 64-byte blocks.
 */
static void cl_to_blocks(const float *src, float *dst, int64_t n, int64_t hw,
			 int64_t c, int threads)
{
	const int64_t cb = c / 16;
	ES_PARALLEL_FOR(threads, n * hw * c > 65536, r, n * cb, {
		const int64_t img = r / cb, blk = r % cb;
		const float *s = src + img * hw * c + blk * 16;
		float *d = dst + r * hw * 16;
		for (int64_t p = 0; p < hw; p++)
			memcpy(d + p * 16, s + p * c, 16 * sizeof(float));
	});
}

static void blocks_to_cl(const float *src, float *dst, int64_t n, int64_t hw,
			 int64_t c, int threads)
{
	const int64_t cb = c / 16;
	ES_PARALLEL_FOR(threads, n * hw * c > 65536, r, n * cb, {
		const int64_t img = r / cb, blk = r % cb;
		const float *s = src + r * hw * 16;
		float *d = dst + img * hw * c + blk * 16;
		for (int64_t p = 0; p < hw; p++)
			memcpy(d + p * c, s + p * 16, 16 * sizeof(float));
	});
}

/*
 * Runs the float problem through oneDNN (the cached primitive for g and
 * post). Returns true when Y is complete; false when oneDNN rejects the
 * problem or scratch ran out, leaving Y's contents as they were (the
 * caller then computes it another way).
 */
static bool conv_dnnl_try(es_kctx *k, struct conv_state *st, const es_conv_geom *g,
			  const struct conv_post *post, const float *x,
			  const float *w, const float *b, float *y)
{
	struct conv_prim *e = NULL;
	const float *wp = w;
	void *scratch = NULL;
	bool done = false;
	es_error why;

	if (g->n > 0 && g->c > 0)
		e = prim_get(st, g, b != NULL, post, w, k->threads);
	if (!e || e->use_ref)
		goto out;
	if (e->dc.generic_impl && !post->channels_last && !post->sum && !g->transpose &&
	    g->nsp == 2 && conv_via_channels_last(k, st, g, post, x, w, b, y)) {
		done = true;
		goto out;
	}
	if (e->dc.pack_w) {
		if (e->packed_w) {
			wp = e->packed_w;
		} else {
			float *buf = es_kctx_scratch(k, e->dc.wei_bytes);
			if (!buf)
				goto out;
			es_dnnl_set_threads(k->threads);
			if (es_dnnl_reorder(&e->dc.wei_user_md, w, &e->dc.wei_md, buf))
				goto out;
			wp = buf;
		}
	}
	if (e->dc.scratch_bytes) {
		scratch = es_kctx_scratch(k, e->dc.scratch_bytes);
		if (!scratch)
			goto out;
	}
	const float *xe = x;
	float *ye = y;
	const int64_t hw_in = g->in[0] * g->in[1], hw_out = g->out[0] * g->out[1];
	if (e->dc.wino) {
		float *xb = scratch_f32(k, g->n * g->c * hw_in);
		float *yb = scratch_f32(k, g->n * g->m * hw_out);
		if (!xb || !yb)
			goto out;
		cl_to_blocks(x, xb, g->n, hw_in, g->c, k->threads);
		if (post->sum)
			cl_to_blocks(y, yb, g->n, hw_out, g->m, k->threads);
		xe = xb;
		ye = yb;
	}
	es_dnnl_set_threads(k->threads);
	/* the entry's memory objects serve one run at a time; a session
	 * running the same problem concurrently uses temporary ones */
	bool mine = !atomic_flag_test_and_set(&e->mems_busy);
	done = dnnl_conv_exec(&e->dc, xe, wp, b, ye, scratch, mine ? &e->mems : NULL,
			      &why) == 0;
	if (mine)
		atomic_flag_clear(&e->mems_busy);
	if (done && e->dc.wino) {
		blocks_to_cl(ye, y, g->n, hw_out, g->m, k->threads);
		atomic_fetch_add_explicit(&wino_runs, 1, memory_order_relaxed);
	}
out:
	prim_put(e);
	return done;
}

/* float problem in the ONNX layout: oneDNN through the cache, else the
 * reference. */
static int conv_f32(es_kctx *k, struct conv_state *st, const es_conv_geom *g,
		    const float *x, const float *w, const float *b, float *y)
{
	struct conv_post none;
	memset(&none, 0, sizeof(none));
	if (!conv_dnnl_try(k, st, g, &none, x, w, b, y))
		es_conv_ref_f32(g, x, w, b, y, k->threads);
	return 0;
}

static void to_f32(const es_tensor *t, float *dst)
{
	es_op_half_to_f32(t->dtype, t->data, dst, es_tensor_numel(t));
}

static float *scratch_f32(es_kctx *k, int64_t n)
{
	size_t bytes;
	if (n < 0 || es_mul_size((size_t)n, sizeof(float), &bytes))
		return NULL;
	return es_kctx_scratch(k, bytes ? bytes : sizeof(float));
}

static int conv_run(es_kctx *k)
{
	struct conv_state *st = k->state;
	const es_tensor *x = es_kin(k, 0), *w = es_kin(k, 1), *b = es_kin(k, 2);
	int64_t ydims[ES_MAX_DIMS];
	es_conv_geom g;
	int rc;

	if (!x || !w)
		return FAIL(k, ES_EINVAL, "inputs X and W are required");
	if (!es_op_is_float(x->dtype))
		return FAIL(k, ES_ETYPE, "input X has type %s, expected float, double or float16",
			    es_dtype_name(x->dtype));
	if (w->dtype != x->dtype || (b && b->dtype != x->dtype))
		return FAIL(k, ES_ETYPE, "inputs W (%s) and B (%s) must have the type of X (%s)",
			    es_dtype_name(w->dtype), b ? es_dtype_name(b->dtype) : "absent",
			    es_dtype_name(x->dtype));
	if ((rc = conv_geometry(k, st, x, w, b, &g)))
		return rc;

	ydims[0] = g.n;
	ydims[1] = g.m;
	for (int d = 0; d < g.nsp; d++)
		ydims[2 + d] = g.out[d];
	if ((rc = es_kctx_output(k, 0, x->dtype, x->ndim, ydims)))
		return rc;
	es_tensor *y = k->outputs[0];
	int64_t ny = es_tensor_numel(y);
	if (ny == 0)
		return 0;

	switch (x->dtype) {
	case ES_DT_FLOAT:
		return conv_f32(k, st, &g, x->data, w->data, b ? b->data : NULL, y->data);
	case ES_DT_DOUBLE:
		es_conv_ref_f64(&g, x->data, w->data, b ? b->data : NULL, y->data, k->threads);
		return 0;
	default: {
		float *xf = scratch_f32(k, es_tensor_numel(x));
		float *wf = st->w_f32;
		float *bf = NULL;
		float *yf = scratch_f32(k, ny);
		if (!wf) {
			wf = scratch_f32(k, es_tensor_numel(w));
			if (wf)
				to_f32(w, wf);
		}
		if (b && (bf = scratch_f32(k, g.m)))
			to_f32(b, bf);
		if (!xf || !wf || !yf || (b && !bf))
			return FAIL(k, ES_ENOMEM, "out of scratch memory");
		to_f32(x, xf);
		if ((rc = conv_f32(k, st, &g, xf, wf, bf, yf)))
			return rc;
		es_op_f32_to_half(y->dtype, yf, y->data, ny);
		return 0;
	}
	}
}

/* ---- FusedConv (ES_DOMAIN) ------------------------------------------------ */

/*
 * FusedConv: Y = act(Conv(X, W, B) + Z), made by the optimizer
 * (opt/fuse_conv.c, opt/layout.c). Inputs X, W, B (optional), Z
 * (optional residual); ONNX Conv's attributes plus
 *   activation      "" | "Relu" | "Clip" | "LeakyRelu"
 *   activation_min, activation_max   Clip bounds (default -inf, +inf)
 *   alpha           LeakyRelu slope (default 0.01)
 *   channels_last   0/1: X, Z, Y are (N, H, W, C) instead of (N, C, H, W)
 *                   (2-D convolutions only)
 * float only. With Z of Y's shape the sum and the activation are oneDNN
 * post-ops and Y's buffer starts as Z (shared with Z when nothing else
 * reads it). A Z of another shape that broadcasts (the optimizer could
 * not see the shapes) is added after the convolution, broadcasting; the
 * output then has the broadcast shape, as the unfused Add would.
 */

/*
 * Packed weights in the compiled form. When a model is saved, each cache
 * entry holding packed weights becomes one uint8 tensor attribute
 * "es.packed_weights.<i>" of its node:
 *     0   "ESPW", u32 version 2, u32 key bytes, u32 descriptor bytes,
 *         u64 data offset, u64 data bytes, u32 CRC-32C of the data (the
 *         rest of 64 bytes zero)
 *     64  the entry's struct conv_pkey, then its dnnl_memory_desc_t
 *     data offset (64-aligned): the weights as the primitive reads them
 * A model loaded from the compiled form adopts them at its first run of
 * that problem, without packing, reading them in place from the file's
 * mapping, but only when the key matches and this oneDNN wants exactly
 * that layout (the descriptor compares equal) and the data matches its
 * CRC (the compiled form stores these tensors after the part its own
 * checksum covers, so a load does not read them: they are checked at
 * adoption); anything else in such an attribute is ignored and the
 * weights are packed as usual.
 */
#define PW_HEAD 64
#define PW_VERSION 2u

static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static size_t pw_data_off(void)
{
	return (PW_HEAD + sizeof(struct conv_pkey) + sizeof(dnnl_memory_desc_t) + 63) & ~(size_t)63;
}

static int conv_save_attrs(void *state, const es_node *node, es_attr **out, int *n,
			   es_error *err)
{
	struct conv_state *st = state;
	es_attr *attrs = calloc(CACHE_SLOTS, sizeof(*attrs));
	int rc = 0, count = 0;

	(void)node;
	*out = NULL;
	*n = 0;
	if (!attrs)
		return es_error_set(err, ES_ENOMEM, "out of memory");
	pthread_mutex_lock(&st->lock);
	for (int i = 0; i < CACHE_SLOTS && !rc; i++) {
		const struct conv_prim *e = st->cache[i];
		if (!e || e->use_ref || !e->dc.pack_w || !e->packed_w)
			continue;
		struct conv_pkey key;
		pkey_make(&key, &e->geom, &e->post, e->has_bias);
		/* entries of other thread counts usually want the same layout:
		 * keep one copy */
		bool dup = false;
		for (int j = 0; j < count && !dup; j++) {
			const uint8_t *o = attrs[j].t->data;
			dup = !memcmp(o + PW_HEAD, &key, sizeof(key)) &&
			      !memcmp(o + PW_HEAD + sizeof(key), &e->dc.wei_md, sizeof(e->dc.wei_md));
		}
		if (dup)
			continue;
		const size_t off = pw_data_off();
		es_attr *a = &attrs[count];
		int64_t total = (int64_t)(off + e->dc.wei_bytes);
		char name[40];
		snprintf(name, sizeof(name), ES_SAVED_ATTR_PREFIX "packed_weights.%d", count);
		a->type = ES_ATTR_TENSOR;
		count++; /* cleared on failure */
		if (!(a->name = strdup(name)) || !(a->t = calloc(1, sizeof(*a->t)))) {
			rc = es_error_set(err, ES_ENOMEM, "out of memory");
			break;
		}
		if ((rc = es_tensor_alloc(a->t, ES_DT_UINT8, 1, &total, err)))
			break;
		uint8_t *b = a->t->data;
		memset(b, 0, off);
		memcpy(b, "ESPW", 4);
		put32(b + 4, PW_VERSION);
		put32(b + 8, (uint32_t)sizeof(key));
		put32(b + 12, (uint32_t)sizeof(dnnl_memory_desc_t));
		put64(b + 16, off);
		put64(b + 24, e->dc.wei_bytes);
		put32(b + 32, es_crc32c(0, e->packed_w, e->dc.wei_bytes));
		memcpy(b + PW_HEAD, &key, sizeof(key));
		memcpy(b + PW_HEAD + sizeof(key), &e->dc.wei_md, sizeof(e->dc.wei_md));
		memcpy(b + off, e->packed_w, e->dc.wei_bytes);
	}
	pthread_mutex_unlock(&st->lock);
	if (rc) {
		for (int i = 0; i < count; i++)
			es_attr_clear(NULL, &attrs[i]);
		free(attrs);
		return rc;
	}
	if (!count) {
		free(attrs);
		return 0;
	}
	*out = attrs;
	*n = count;
	return 0;
}

/* Reads the node's es.packed_weights.* attributes into st->adopt (see
 * above); malformed ones are skipped. */
static void read_packed_attrs(struct conv_state *st, const es_node *node)
{
	const size_t off = pw_data_off();
	for (int i = 0; i < node->n_attrs && st->n_adopt < CACHE_SLOTS; i++) {
		const es_attr *a = &node->attrs[i];
		if (!a->name || strncmp(a->name, ES_SAVED_ATTR_PREFIX "packed_weights.",
					strlen(ES_SAVED_ATTR_PREFIX "packed_weights.")) ||
		    a->type != ES_ATTR_TENSOR || !a->t || a->t->dtype != ES_DT_UINT8 ||
		    !a->t->data || a->t->nbytes < off)
			continue;
		const uint8_t *b = a->t->data;
		if (memcmp(b, "ESPW", 4) || get32(b + 4) != PW_VERSION ||
		    get32(b + 8) != sizeof(struct conv_pkey) ||
		    get32(b + 12) != sizeof(dnnl_memory_desc_t) || get64(b + 16) != off ||
		    get64(b + 24) != a->t->nbytes - off || ((uintptr_t)(b + off) & 63))
			continue;
		struct conv_adopt *ad = &st->adopt[st->n_adopt++];
		memcpy(&ad->key, b + PW_HEAD, sizeof(ad->key));
		memcpy(&ad->md, b + PW_HEAD + sizeof(ad->key), sizeof(ad->md));
		ad->data = b + off;
		ad->bytes = a->t->nbytes - off;
		ad->crc = get32(b + 32);
		ad->verified = 0;
	}
}

static int fused_init(es_op_init_ctx *c, void **state)
{
	const es_node *node = c->node;
	const char *act;
	int64_t cl;
	int rc = conv_init_common(c, state, false);
	if (rc)
		return rc;
	struct conv_state *st = *state;

	if ((rc = es_node_attr_int(node, "channels_last", 0, &cl, c->err)) ||
	    (rc = es_node_attr_string(node, "activation", "", &act, c->err)))
		goto out_fail;
	if (cl != 0 && cl != 1) {
		rc = es_error_set(c->err, ES_EINVAL,
				  "FusedConv node '%s': attribute channels_last is %lld, expected 0 or 1",
				  node->name, (long long)cl);
		goto out_fail;
	}
	st->channels_last = cl == 1;
	if (st->channels_last && st->nsp && st->nsp != 2) {
		rc = es_error_set(c->err, ES_EINVAL,
				  "FusedConv node '%s': channels_last needs 2 spatial dims, the attributes describe %d",
				  node->name, st->nsp);
		goto out_fail;
	}
	if (!act[0]) {
		st->act = ACT_NONE;
	} else if (!strcmp(act, "Relu")) {
		st->act = ACT_RELU;
	} else if (!strcmp(act, "LeakyRelu")) {
		st->act = ACT_LEAKY_RELU;
		if ((rc = es_node_attr_float(node, "alpha", 0.01f, &st->act_alpha, c->err)))
			goto out_fail;
	} else if (!strcmp(act, "Clip")) {
		st->act = ACT_CLIP;
		if ((rc = es_node_attr_float(node, "activation_min", -INFINITY,
					     &st->act_alpha, c->err)) ||
		    (rc = es_node_attr_float(node, "activation_max", INFINITY,
					     &st->act_beta, c->err)))
			goto out_fail;
		if (isnan(st->act_alpha) || isnan(st->act_beta) || st->act_alpha > st->act_beta) {
			rc = es_error_set(c->err, ES_EINVAL,
					  "FusedConv node '%s': Clip bounds [%g, %g] must be ordered numbers",
					  node->name, (double)st->act_alpha, (double)st->act_beta);
			goto out_fail;
		}
	} else {
		rc = es_error_set(c->err, ES_EINVAL,
				  "FusedConv node '%s': attribute activation is '%s', expected '', 'Relu', 'Clip' or 'LeakyRelu'",
				  node->name, act);
		goto out_fail;
	}
	if (st->w_const)
		read_packed_attrs(st, node);
	return 0;

out_fail:
	conv_fini(st);
	*state = NULL;
	return rc;
}

static void apply_act(const struct conv_state *st, float *y, int64_t n)
{
	const float a = st->act_alpha, b = st->act_beta;
	switch (st->act) {
	case ACT_RELU:
		for (int64_t i = 0; i < n; i++)
			y[i] = y[i] > 0.0f ? y[i] : 0.0f;
		break;
	case ACT_LEAKY_RELU:
		for (int64_t i = 0; i < n; i++)
			y[i] = y[i] >= 0.0f ? y[i] : a * y[i];
		break;
	case ACT_CLIP:
		for (int64_t i = 0; i < n; i++) { /* min(max(y, a), b), as ONNX */
			float v = y[i] < a ? a : y[i];
			y[i] = v > b ? b : v;
		}
		break;
	default:
		break;
	}
}

/* (n, c, hw) <-> (n, hw, c) for the channels-last fallbacks. */
static void to_channels_first(const float *src, float *dst, int64_t n, int64_t c,
			      int64_t hw)
{
	for (int64_t i = 0; i < n; i++)
		for (int64_t p = 0; p < hw; p++)
			for (int64_t j = 0; j < c; j++)
				dst[(i * c + j) * hw + p] = src[(i * hw + p) * c + j];
}

static void to_channels_last(const float *src, float *dst, int64_t n, int64_t c,
			     int64_t hw)
{
	for (int64_t i = 0; i < n; i++)
		for (int64_t j = 0; j < c; j++)
			for (int64_t p = 0; p < hw; p++)
				dst[(i * hw + p) * c + j] = src[(i * c + j) * hw + p];
}

/* Y = conv(X, W) + B in the node's layout, without the extras. */
static int fused_plain(es_kctx *k, struct conv_state *st, const es_conv_geom *g,
		       const float *x, const float *w, const float *b, float *y)
{
	struct conv_post post;
	memset(&post, 0, sizeof(post));
	post.channels_last = st->channels_last;
	if (conv_dnnl_try(k, st, g, &post, x, w, b, y))
		return 0;
	if (!st->channels_last) {
		es_conv_ref_f32(g, x, w, b, y, k->threads);
		return 0;
	}
	const int64_t hw_in = g->in[0] * g->in[1], hw_out = g->out[0] * g->out[1];
	float *xc = scratch_f32(k, g->n * g->c * hw_in);
	float *yc = scratch_f32(k, g->n * g->m * hw_out);
	if (!xc || !yc)
		return FAIL(k, ES_ENOMEM, "out of scratch memory");
	to_channels_first(x, xc, g->n, g->c, hw_in);
	es_conv_ref_f32(g, xc, w, b, yc, k->threads);
	to_channels_last(yc, y, g->n, g->m, hw_out);
	return 0;
}

/* out (dims od, rank nd) = a + z, both broadcasting to od (numpy rules;
 * a and z have rank nd here, padded with leading 1s by the caller). */
static void add_broadcast(float *out, const int64_t *od, int nd, const float *a,
			  const int64_t *ad, const float *z, const int64_t *zd)
{
	int64_t as[ES_MAX_DIMS], zs[ES_MAX_DIMS], idx[ES_MAX_DIMS] = { 0 };
	int64_t sa = 1, sz = 1, total = 1;
	for (int d = nd - 1; d >= 0; d--) {
		as[d] = ad[d] == 1 ? 0 : sa;
		zs[d] = zd[d] == 1 ? 0 : sz;
		sa *= ad[d];
		sz *= zd[d];
		total *= od[d];
	}
	for (int64_t i = 0; i < total; i++) {
		int64_t ia = 0, iz = 0;
		for (int d = 0; d < nd; d++) {
			ia += idx[d] * as[d];
			iz += idx[d] * zs[d];
		}
		out[i] = a[ia] + z[iz];
		odometer_next(idx, od, nd);
	}
}

static int fused_run(es_kctx *k)
{
	struct conv_state *st = k->state;
	const es_tensor *x = es_kin(k, 0), *w = es_kin(k, 1), *b = es_kin(k, 2);
	const es_tensor *z = es_kin(k, 3);
	int64_t ydims[ES_MAX_DIMS];
	es_conv_geom g;
	es_tensor xv;
	int rc;

	if (!x || !w)
		return FAIL(k, ES_EINVAL, "inputs X and W are required");
	if (x->dtype != ES_DT_FLOAT || w->dtype != ES_DT_FLOAT ||
	    (b && b->dtype != ES_DT_FLOAT) || (z && z->dtype != ES_DT_FLOAT))
		return FAIL(k, ES_ETYPE,
			    "inputs X (%s), W (%s), B (%s) and Z (%s) must be float",
			    es_dtype_name(x->dtype), es_dtype_name(w->dtype),
			    b ? es_dtype_name(b->dtype) : "absent",
			    z ? es_dtype_name(z->dtype) : "absent");
	xv = *x;
	if (st->channels_last) {
		if (x->ndim != 4)
			return FAIL(k, ES_ESHAPE,
				    "input X has rank %d, channels_last expects (N, H, W, C) of rank 4",
				    x->ndim);
		xv.dims[1] = x->dims[3];
		xv.dims[2] = x->dims[1];
		xv.dims[3] = x->dims[2];
	}
	if ((rc = conv_geometry(k, st, &xv, w, b, &g)))
		return rc;

	const int nd = x->ndim;
	ydims[0] = g.n;
	if (st->channels_last) {
		ydims[1] = g.out[0];
		ydims[2] = g.out[1];
		ydims[3] = g.m;
	} else {
		ydims[1] = g.m;
		for (int d = 0; d < g.nsp; d++)
			ydims[2 + d] = g.out[d];
	}
	int64_t ny;
	if ((rc = es_shape_numel(ydims, nd, sizeof(float), &ny)))
		return FAIL(k, rc, "output size overflows");

	const float *xd = x->data, *wd = w->data, *bd = b ? b->data : NULL;
	bool same = z && z->ndim == nd && !memcmp(z->dims, ydims, sizeof(int64_t) * (size_t)nd);
	struct conv_post post;
	memset(&post, 0, sizeof(post));
	post.channels_last = st->channels_last;
	post.act = st->act;
	post.alpha = st->act_alpha;
	post.beta = st->act_beta;

	if (!z || same) {
		bool inplace = false;
		if (z && k->node->inputs[3] != k->node->inputs[0])
			rc = es_kctx_output_inplace(k, 0, 3, ES_DT_FLOAT, nd, ydims, &inplace);
		else
			rc = es_kctx_output(k, 0, ES_DT_FLOAT, nd, ydims);
		if (rc)
			return rc;
		float *y = k->outputs[0]->data;
		if (ny == 0)
			return 0;
		if (z && !inplace)
			memcpy(y, z->data, (size_t)ny * sizeof(float));
		post.sum = z != NULL;
		if (conv_dnnl_try(k, st, &g, &post, xd, wd, bd, y))
			return 0;
		float *t = y;
		if (z && !(t = scratch_f32(k, ny)))
			return FAIL(k, ES_ENOMEM, "out of scratch memory");
		if ((rc = fused_plain(k, st, &g, xd, wd, bd, t)))
			return rc;
		if (z)
			for (int64_t i = 0; i < ny; i++)
				y[i] += t[i];
		apply_act(st, y, ny);
		return 0;
	}

	/* Z of another shape: the Add broadcasts */
	int64_t od[ES_MAX_DIMS], ad[ES_MAX_DIMS], zd[ES_MAX_DIMS];
	const int on = z->ndim > nd ? z->ndim : nd;
	for (int d = 0; d < on; d++) {
		int ia = d - (on - nd), iz = d - (on - z->ndim);
		ad[d] = ia >= 0 ? ydims[ia] : 1;
		zd[d] = iz >= 0 ? z->dims[iz] : 1;
		if (ad[d] != zd[d] && ad[d] != 1 && zd[d] != 1)
			return FAIL(k, ES_ESHAPE,
				    "input Z (the residual added to the convolution) has dim %lld on axis %d, which does not broadcast with the convolution's %lld",
				    (long long)zd[d], d, (long long)ad[d]);
		od[d] = ad[d] == 1 ? zd[d] : ad[d];
	}
	if ((rc = es_kctx_output(k, 0, ES_DT_FLOAT, on, od)))
		return rc;
	es_tensor *y = k->outputs[0];
	int64_t nout = es_tensor_numel(y);
	if (nout == 0)
		return 0;
	float *t = scratch_f32(k, ny);
	if (!t)
		return FAIL(k, ES_ENOMEM, "out of scratch memory");
	if (ny > 0 && (rc = fused_plain(k, st, &g, xd, wd, bd, t)))
		return rc;
	add_broadcast(y->data, od, on, t, ad, z->data, zd);
	apply_act(st, y->data, nout);
	return 0;
}

#define CONV_INPUTS (ES_T(ES_DT_FLOAT) | ES_T(ES_DT_DOUBLE) | ES_T(ES_DT_FLOAT16) | ES_T(ES_DT_BFLOAT16))

static const es_op_def defs[] = {
	{
		.domain = "", .op_type = "Conv", .since = 1,
		.min_inputs = 2, .max_inputs = 3, .min_outputs = 1, .max_outputs = 1,
		.types = CONV_INPUTS, .same_type_inputs = 0x6, .out_type = ES_OUT_SAME,
		.init = conv_init, .fini = conv_fini, .run = conv_run,
	},
	{
		.domain = "", .op_type = "ConvTranspose", .since = 1,
		.min_inputs = 2, .max_inputs = 3, .min_outputs = 1, .max_outputs = 1,
		.types = CONV_INPUTS, .same_type_inputs = 0x6, .out_type = ES_OUT_SAME,
		.init = convtr_init, .fini = conv_fini, .run = conv_run,
	},
	{
		.domain = ES_DOMAIN, .op_type = "FusedConv", .since = 1,
		.min_inputs = 2, .max_inputs = 4, .min_outputs = 1, .max_outputs = 1,
		.types = ES_T(ES_DT_FLOAT), .same_type_inputs = 0xe, .out_type = ES_OUT_SAME,
		.init = fused_init, .fini = conv_fini, .run = fused_run,
		.save_attrs = conv_save_attrs,
	},
};

const es_op_table es_ops_conv = { defs, sizeof(defs) / sizeof(defs[0]) };
