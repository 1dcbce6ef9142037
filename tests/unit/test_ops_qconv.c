/*
 * Integer convolutions (ops/qconv.c): QLinearConv, ConvInteger and the
 * optimizer's QConv, checked against a plain reference written here.
 *
 * - Random problems: groups, depthwise, strides, asymmetric pads,
 *   dilation, 1x1, 1-D and 3-D, no input channels (y from B alone),
 *   per-tensor and per-channel w_scale, u8 and s8 x and y, u8 and s8 w,
 *   with and without B. Each problem runs with its quantization
 *   parameters as constants (oneDNN with the parameters baked, for s8
 *   weights with zero point 0 or u8 weights with 128) and as graph inputs
 *   (oneDNN with an int32 destination requantized in C, for the same
 *   weights); other weight zero points run the plain C reference. All are
 *   compared with the reference written here.
 * - QConv with channels_last 0 and 1, activation Relu and a residual Z.
 * - QConv against the float QDQ graph it replaces (DequantizeLinear ->
 *   Conv -> Add -> Relu -> QuantizeLinear, unoptimized).
 * - ConvInteger sums beyond 2^24 stay exact.
 * - Bad inputs fail with the right code and a message naming the node.
 *
 * Tolerance: the oneDNN path computes the requantization in float, the
 * reference here in double, so a value close to a rounding tie may land
 * one step apart: outputs may differ by 1 on at most 1% of the elements
 * (plus one); nothing may differ by more. The float QDQ graph gets the
 * same allowance for the same reason.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/model_int.h"
#include "engine/opt/opt.h"
#include "support/graph_builder.h"

/* ---- problem and reference ------------------------------------------------ */

struct problem {
	const char *op;       /* "QLinearConv", "ConvInteger", "QConv" */
	int nsp;
	int64_t n, c, m, group;
	int64_t in[3], k[3], s[3], d[3], pb[3], pe[3];
	es_dtype xdt, wdt, ydt;
	bool per_channel;     /* w_scale and w_zero_point of length m */
	bool bias;
	bool params_as_inputs; /* scales and zero points fed at run time */
	bool channels_last;   /* QConv */
	bool relu;            /* QConv */
	bool residual;        /* QConv: Z */
	int32_t w_zp;         /* the weight zero point; -1: random per channel */
	int spoil;            /* enum spoil: one input made invalid */
};

enum spoil { SP_NONE, SP_WSCALE_LEN, SP_Z_SHAPE, SP_YZP_I32, SP_B_I8, SP_WZP_TYPE };

/* The tensors of one problem, values as int32, layout NCHW / OIHW. */
struct data {
	int64_t out[3];
	int64_t nx, nw, ny;
	int32_t *x, *w, *z, *b, *wzp;
	int32_t x_zp, y_zp, z_zp;
	float x_scale, y_scale, z_scale;
	float *w_scale;
};

static uint64_t rng = 0x2545f4914f6cdd1dull;

static uint32_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 11);
}

static int32_t rnd_q(es_dtype dt)
{
	int32_t v = (int32_t)(rnd() % 256);
	return dt == ES_DT_UINT8 ? v : v - 128;
}

static int64_t sp_prod(const int64_t *v, int n)
{
	int64_t p = 1;
	for (int i = 0; i < n; i++)
		p *= v[i];
	return p;
}

static void make_data(const struct problem *p, struct data *d)
{
	memset(d, 0, sizeof(*d));
	for (int i = 0; i < p->nsp; i++)
		d->out[i] = (p->in[i] + p->pb[i] + p->pe[i] - ((p->k[i] - 1) * p->d[i] + 1)) /
			    p->s[i] + 1;
	d->nx = p->n * p->c * sp_prod(p->in, p->nsp);
	d->nw = p->m * (p->c / p->group) * sp_prod(p->k, p->nsp);
	d->ny = p->n * p->m * sp_prod(d->out, p->nsp);
	d->x = malloc((size_t)d->nx * sizeof(int32_t));
	d->w = malloc((size_t)d->nw * sizeof(int32_t));
	d->z = malloc((size_t)d->ny * sizeof(int32_t));
	d->b = malloc((size_t)p->m * sizeof(int32_t));
	d->wzp = malloc((size_t)p->m * sizeof(int32_t));
	d->w_scale = malloc((size_t)p->m * sizeof(float));
	assert_true(d->x && d->w && d->z && d->b && d->wzp && d->w_scale);
	for (int64_t i = 0; i < d->nx; i++)
		d->x[i] = rnd_q(p->xdt);
	for (int64_t i = 0; i < d->nw; i++)
		d->w[i] = rnd_q(p->wdt);
	for (int64_t i = 0; i < d->ny; i++)
		d->z[i] = rnd_q(p->ydt == ES_DT_INT32 ? ES_DT_UINT8 : p->ydt);
	for (int64_t i = 0; i < p->m; i++) {
		d->b[i] = p->bias ? (int32_t)(rnd() % 20001) - 10000 : 0;
		if (p->w_zp >= 0)
			d->wzp[i] = p->w_zp;
		else if (p->per_channel)
			d->wzp[i] = rnd_q(p->wdt) / 4 + (p->wdt == ES_DT_UINT8 ? 64 : 0);
		else
			d->wzp[i] = p->wdt == ES_DT_UINT8 ? 100 : -3;
		d->w_scale[i] = p->per_channel ? 0.002f + 0.001f * (float)(rnd() % 16) : 0.004f;
	}
	d->x_zp = rnd_q(p->xdt) / 2 + (p->xdt == ES_DT_UINT8 ? 64 : 0);
	d->y_zp = p->ydt == ES_DT_INT32 ? 0 : rnd_q(p->ydt) / 2 + (p->ydt == ES_DT_UINT8 ? 64 : 0);
	d->z_zp = p->ydt == ES_DT_INT32 ? 0 : rnd_q(p->ydt) / 2 + (p->ydt == ES_DT_UINT8 ? 64 : 0);
	d->x_scale = 0.02f;
	d->y_scale = 0.01f * (float)sp_prod(p->k, p->nsp) *
		     (float)(p->c >= p->group ? p->c / p->group : 1) / 8.0f;
	d->z_scale = 0.03f;
}

static void free_data(struct data *d)
{
	free(d->x);
	free(d->w);
	free(d->z);
	free(d->b);
	free(d->wzp);
	free(d->w_scale);
}

static int32_t sat(es_dtype dt, double v)
{
	double lo = dt == ES_DT_UINT8 ? 0.0 : -128.0, hi = dt == ES_DT_UINT8 ? 255.0 : 127.0;
	return (int32_t)(v < lo ? lo : v > hi ? hi : v);
}

/* The expected output in NCHW, by the formulas in ops/qconv.c. */
static int32_t *reference(const struct problem *p, const struct data *d)
{
	int32_t *y = malloc((size_t)d->ny * sizeof(int32_t));
	assert_non_null(y);
	const int64_t cg = p->c / p->group, mg = p->m / p->group;
	const int64_t sp_in = sp_prod(p->in, p->nsp), sp_out = sp_prod(d->out, p->nsp);
	int64_t od[3] = { 1, 1, 1 }, kd[3] = { 1, 1, 1 }, id[3] = { 1, 1, 1 };
	for (int i = 0; i < p->nsp; i++) {
		od[3 - p->nsp + i] = d->out[i];
		kd[3 - p->nsp + i] = p->k[i];
		id[3 - p->nsp + i] = p->in[i];
	}
	int64_t s3[3] = { 1, 1, 1 }, d3[3] = { 1, 1, 1 }, pb3[3] = { 0, 0, 0 };
	for (int i = 0; i < p->nsp; i++) {
		s3[3 - p->nsp + i] = p->s[i];
		d3[3 - p->nsp + i] = p->d[i];
		pb3[3 - p->nsp + i] = p->pb[i];
	}
	for (int64_t n = 0; n < p->n; n++)
	for (int64_t m = 0; m < p->m; m++)
	for (int64_t o0 = 0; o0 < od[0]; o0++)
	for (int64_t o1 = 0; o1 < od[1]; o1++)
	for (int64_t o2 = 0; o2 < od[2]; o2++) {
		int64_t acc = p->bias ? d->b[m] : 0;
		int64_t grp = m / mg;
		for (int64_t c = 0; c < cg; c++)
		for (int64_t k0 = 0; k0 < kd[0]; k0++)
		for (int64_t k1 = 0; k1 < kd[1]; k1++)
		for (int64_t k2 = 0; k2 < kd[2]; k2++) {
			int64_t i0 = o0 * s3[0] - pb3[0] + k0 * d3[0];
			int64_t i1 = o1 * s3[1] - pb3[1] + k1 * d3[1];
			int64_t i2 = o2 * s3[2] - pb3[2] + k2 * d3[2];
			if (i0 < 0 || i0 >= id[0] || i1 < 0 || i1 >= id[1] || i2 < 0 || i2 >= id[2])
				continue;
			int64_t xi = (n * p->c + grp * cg + c) * sp_in + (i0 * id[1] + i1) * id[2] + i2;
			int64_t wi = ((m * cg + c) * kd[0] + k0) * kd[1] * kd[2] + k1 * kd[2] + k2;
			acc += (int64_t)(d->x[xi] - d->x_zp) * (d->w[wi] - d->wzp[m]);
		}
		int64_t yi = (n * p->m + m) * sp_out + (o0 * od[1] + o1) * od[2] + o2;
		if (p->ydt == ES_DT_INT32) {
			y[yi] = (int32_t)acc;
			continue;
		}
		double v = (double)acc * d->x_scale * d->w_scale[m];
		if (p->residual)
			v += (double)d->z_scale * (d->z[yi] - d->z_zp);
		if (p->relu && v < 0)
			v = 0;
		y[yi] = sat(p->ydt, nearbyint(v / d->y_scale) + d->y_zp);
	}
	return y;
}

/* ---- graphs ----------------------------------------------------------------- */

static void *pack(es_dtype dt, const int32_t *v, int64_t n)
{
	void *buf = malloc((size_t)(n ? n : 1) * 4);
	assert_non_null(buf);
	for (int64_t i = 0; i < n; i++) {
		if (dt == ES_DT_UINT8)
			((uint8_t *)buf)[i] = (uint8_t)v[i];
		else if (dt == ES_DT_INT8)
			((int8_t *)buf)[i] = (int8_t)v[i];
		else
			((int32_t *)buf)[i] = v[i];
	}
	return buf;
}

/* NCHW -> NHWC (logical spatial dims flattened) and back. */
static int32_t *to_last(const int32_t *src, int64_t n, int64_t c, int64_t sp)
{
	int32_t *dst = malloc((size_t)(n * c * sp + 1) * sizeof(int32_t));
	assert_non_null(dst);
	for (int64_t i = 0; i < n; i++)
		for (int64_t j = 0; j < c; j++)
			for (int64_t q = 0; q < sp; q++)
				dst[(i * sp + q) * c + j] = src[(i * c + j) * sp + q];
	return dst;
}

static void import_es_domain(es_graph *g)
{
	es_opset_import *o = realloc(g->opsets, sizeof(*o) * (size_t)(g->n_opsets + 1));
	assert_non_null(o);
	g->opsets = o;
	o[g->n_opsets].domain = strdup(ES_DOMAIN);
	o[g->n_opsets].version = ES_DOMAIN_VERSION;
	g->n_opsets++;
}

/* Run-time feeds of one graph (at most 12). */
struct feeds {
	size_t n;
	es_tensor t[12];
	void *bufs[12];
};

static void feed(struct feeds *f, es_graph *g, int *in_v, const char *name, es_dtype dt,
		 int ndim, const int64_t *dims, const void *data, size_t esz)
{
	es_tensor *t = &f->t[f->n];
	memset(t, 0, sizeof(*t));
	t->dtype = dt;
	t->ndim = ndim;
	int64_t numel = 1;
	for (int i = 0; i < ndim; i++) {
		t->dims[i] = dims[i];
		numel *= dims[i];
	}
	t->nbytes = (size_t)numel * esz;
	f->bufs[f->n] = malloc(t->nbytes ? t->nbytes : 1);
	assert_non_null(f->bufs[f->n]);
	memcpy(f->bufs[f->n], data, t->nbytes);
	t->data = f->bufs[f->n];
	f->n++;
	*in_v = gb_input(g, name, dt, ndim, dims);
}

static void feeds_free(struct feeds *f)
{
	for (size_t i = 0; i < f->n; i++)
		free(f->bufs[i]);
}

static size_t esize(es_dtype dt)
{
	return dt == ES_DT_INT32 ? 4 : dt == ES_DT_FLOAT ? 4 : 1;
}

/* A parameter: a constant, or a graph input when the problem says so. */
static int param(es_graph *g, struct feeds *f, const struct problem *p, const char *name,
		 es_dtype dt, int ndim, const int64_t *dims, const void *data)
{
	int v;
	if (p->params_as_inputs)
		feed(f, g, &v, name, dt, ndim, dims, data, esize(dt));
	else
		v = gb_const(g, name, dt, ndim, dims, data);
	return v;
}

/* Builds the problem's graph (node "qc"); x (and Z) are graph inputs. */
static es_graph *build(const struct problem *p, const struct data *d, struct feeds *f)
{
	es_graph *g = gb_graph(13);
	int nd = p->nsp + 2;
	int64_t xdims[5], wdims[5], ydims[5], mdim = p->m;
	const int64_t sp_in = sp_prod(p->in, p->nsp), sp_out = sp_prod(d->out, p->nsp);
	xdims[0] = p->n;
	xdims[1] = p->c;
	ydims[0] = p->n;
	ydims[1] = p->m;
	wdims[0] = p->m;
	wdims[1] = p->c / p->group;
	for (int i = 0; i < p->nsp; i++) {
		xdims[2 + i] = p->in[i];
		ydims[2 + i] = d->out[i];
		wdims[2 + i] = p->k[i];
	}
	int32_t *xv = d->x, *zv = d->z;
	if (p->channels_last) {
		xv = to_last(d->x, p->n, p->c, sp_in);
		zv = to_last(d->z, p->n, p->m, sp_out);
		for (int i = 0; i < p->nsp; i++) {
			xdims[1 + i] = p->in[i];
			ydims[1 + i] = d->out[i];
		}
		xdims[nd - 1] = p->c;
		ydims[nd - 1] = p->m;
	}
	memset(f, 0, sizeof(*f));
	int in[12];
	int n_in;
	void *xb = pack(p->xdt, xv, d->nx);
	feed(f, g, &in[0], "x", p->xdt, nd, xdims, xb, 1);
	free(xb);
	void *wb = pack(p->wdt, d->w, d->nw);
	int64_t nch = p->per_channel ? p->m : 1;
	int wzp_nd = p->per_channel ? 1 : 0;
	int64_t nws = p->spoil == SP_WSCALE_LEN ? p->m - 2 : nch;
	int ws_nd = p->spoil == SP_WSCALE_LEN ? 1 : wzp_nd;
	es_dtype yzp_dt = p->spoil == SP_YZP_I32 ? ES_DT_INT32 : p->ydt;
	es_dtype wzp_dt = p->spoil == SP_WZP_TYPE ? (p->wdt == ES_DT_INT8 ? ES_DT_UINT8 : ES_DT_INT8) :
			  p->wdt;
	if (p->spoil == SP_Z_SHAPE)
		ydims[nd - 1]--;
	int32_t xzp = d->x_zp, yzp = d->y_zp, zzp = d->z_zp;
	void *xzpb = pack(p->xdt, &xzp, 1), *yzpb = pack(yzp_dt, &yzp, 1);
	void *zzpb = pack(p->ydt, &zzp, 1);
	void *wzpb = pack(wzp_dt, d->wzp, p->m);

	if (!strcmp(p->op, "ConvInteger")) {
		in[1] = gb_const(g, "w", p->wdt, nd, wdims, wb);
		in[2] = param(g, f, p, "x_zero_point", p->xdt, 0, NULL, xzpb);
		in[3] = param(g, f, p, "w_zero_point", wzp_dt, wzp_nd, &nch, wzpb);
		n_in = 4;
	} else {
		in[1] = param(g, f, p, "x_scale", ES_DT_FLOAT, 0, NULL, &d->x_scale);
		in[2] = param(g, f, p, "x_zero_point", p->xdt, 0, NULL, xzpb);
		in[3] = gb_const(g, "w", p->wdt, nd, wdims, wb);
		in[4] = param(g, f, p, "w_scale", ES_DT_FLOAT, ws_nd, &nws, d->w_scale);
		in[5] = param(g, f, p, "w_zero_point", wzp_dt, wzp_nd, &nch, wzpb);
		in[6] = param(g, f, p, "y_scale", ES_DT_FLOAT, 0, NULL, &d->y_scale);
		in[7] = param(g, f, p, "y_zero_point", yzp_dt, 0, NULL, yzpb);
		n_in = 8;
		if (p->bias || p->residual) {
			es_dtype bdt = p->spoil == SP_B_I8 ? ES_DT_INT8 : ES_DT_INT32;
			void *bb = pack(bdt, d->b, p->m);
			in[8] = p->bias ? gb_const(g, "B", bdt, 1, &mdim, bb) : -1;
			free(bb);
			n_in = 9;
		}
		if (p->residual) {
			void *zb = pack(p->ydt, zv, d->ny);
			feed(f, g, &in[9], "Z", p->ydt, nd, ydims, zb, 1);
			free(zb);
			in[10] = param(g, f, p, "z_scale", ES_DT_FLOAT, 0, NULL, &d->z_scale);
			in[11] = param(g, f, p, "z_zero_point", p->ydt, 0, NULL, zzpb);
			n_in = 12;
		}
	}
	int y = gb_value(g, "y", p->ydt);
	bool internal = !strcmp(p->op, "QConv");
	int node = gb_node_in(g, internal ? ES_DOMAIN : "", p->op, "qc", in, n_in, &y, 1);
	int64_t pads[6], strides[3], dil[3], ks[3];
	for (int i = 0; i < p->nsp; i++) {
		pads[i] = p->pb[i];
		pads[p->nsp + i] = p->pe[i];
		strides[i] = p->s[i];
		dil[i] = p->d[i];
		ks[i] = p->k[i];
	}
	gb_attr_ints(g, node, "pads", pads, (size_t)(2 * p->nsp));
	gb_attr_ints(g, node, "strides", strides, (size_t)p->nsp);
	gb_attr_ints(g, node, "dilations", dil, (size_t)p->nsp);
	gb_attr_ints(g, node, "kernel_shape", ks, (size_t)p->nsp);
	gb_attr_int(g, node, "group", p->group);
	if (internal) {
		gb_attr_int(g, node, "channels_last", p->channels_last);
		gb_attr_string(g, node, "activation", p->relu ? "Relu" : "");
		import_es_domain(g);
	}
	gb_output(g, y);
	if (xv != d->x)
		free(xv);
	if (zv != d->z)
		free(zv);
	free(wb);
	free(xzpb);
	free(yzpb);
	free(zzpb);
	free(wzpb);
	return g;
}

static int32_t out_at(const es_tensor *t, int64_t i)
{
	switch (t->dtype) {
	case ES_DT_UINT8: return ((const uint8_t *)t->data)[i];
	case ES_DT_INT8: return ((const int8_t *)t->data)[i];
	default: return ((const int32_t *)t->data)[i];
	}
}

/* got (the node's layout) against want (NCHW): exact, or off by one on a
 * few elements when `loose`. */
static void compare(const struct problem *p, const struct data *d, const es_tensor *got,
		    const int32_t *want, bool loose)
{
	assert_int_equal(got->dtype, p->ydt);
	int64_t numel = 1;
	for (int i = 0; i < got->ndim; i++)
		numel *= got->dims[i];
	assert_int_equal(numel, d->ny);
	const int64_t sp_out = sp_prod(d->out, p->nsp);
	int64_t off_by_one = 0;
	for (int64_t n = 0; n < p->n; n++)
		for (int64_t m = 0; m < p->m; m++)
			for (int64_t q = 0; q < sp_out; q++) {
				int64_t wi = (n * p->m + m) * sp_out + q;
				int64_t gi = p->channels_last ? (n * sp_out + q) * p->m + m : wi;
				int32_t a = out_at(got, gi), b = want[wi];
				if (a == b)
					continue;
				if (!loose || abs(a - b) > 1)
					fail_msg("%s: element n=%lld m=%lld pos=%lld: got %d, want %d",
						 p->op, (long long)n, (long long)m, (long long)q, a, b);
				off_by_one++;
			}
	if (off_by_one > d->ny / 100 + 1)
		fail_msg("%s: %lld of %lld elements off by one", p->op, (long long)off_by_one,
			 (long long)d->ny);
}

/* Runs p with constant and with run-time parameters; both must match the
 * reference. */
static void check(struct problem p)
{
	struct data d;
	make_data(&p, &d);
	int32_t *want = reference(&p, &d);
	for (int variant = 0; variant < 2; variant++) {
		struct feeds f;
		es_tensor out;
		es_error err = { 0 };
		p.params_as_inputs = variant == 1;
		es_model *m = gb_model(build(&p, &d, &f), true);
		int rc = gb_run(m, f.t, f.n, &out, &err);
		if (rc)
			fail_msg("%s run: %s", p.op, err.msg);
		compare(&p, &d, &out, want, p.ydt != ES_DT_INT32);
		free(out.data);
		feeds_free(&f);
		es_model_release(m);
	}
	free(want);
	free_data(&d);
}

static struct problem conv2d(const char *op, int64_t n, int64_t c, int64_t m, int64_t h,
			     int64_t w, int64_t k, int64_t group)
{
	struct problem p;
	memset(&p, 0, sizeof(p));
	p.op = op;
	p.nsp = 2;
	p.n = n;
	p.c = c;
	p.m = m;
	p.group = group;
	p.in[0] = h;
	p.in[1] = w;
	for (int i = 0; i < 3; i++) {
		p.k[i] = k;
		p.s[i] = 1;
		p.d[i] = 1;
		p.pb[i] = p.pe[i] = k / 2;
	}
	p.xdt = ES_DT_UINT8;
	p.wdt = ES_DT_INT8;
	p.ydt = !strcmp(op, "ConvInteger") ? ES_DT_INT32 : ES_DT_UINT8;
	return p;
}

/* ---- tests -------------------------------------------------------------------- */

static void test_qlinearconv_shapes(void **state)
{
	(void)state;
	struct problem p = conv2d("QLinearConv", 1, 16, 32, 9, 11, 3, 1);
	check(p); /* s8 w, zp 0, per tensor, no B */
	p.bias = true;
	p.per_channel = true;
	check(p);
	p.xdt = ES_DT_INT8; /* s8 x, s8 y, stride 2, asymmetric pads */
	p.ydt = ES_DT_INT8;
	p.s[0] = p.s[1] = 2;
	p.pb[0] = 0;
	p.pe[1] = 2;
	check(p);

	p = conv2d("QLinearConv", 2, 12, 12, 8, 8, 3, 12); /* depthwise */
	p.bias = true;
	p.per_channel = true;
	check(p);
	p = conv2d("QLinearConv", 1, 8, 12, 10, 7, 3, 4); /* groups, dilation */
	p.d[0] = p.d[1] = 2;
	p.bias = true;
	check(p);
	p = conv2d("QLinearConv", 1, 0, 4, 5, 5, 3, 1); /* no input channels: y from B */
	p.bias = true;
	check(p);
	p = conv2d("QLinearConv", 1, 24, 40, 5, 5, 1, 1); /* 1x1 */
	p.per_channel = true;
	check(p);

	/* u8 weights with zero point 128 (oneDNN after a shift) and with
	 * random zero points (reference) */
	p = conv2d("QLinearConv", 1, 8, 16, 7, 7, 3, 1);
	p.wdt = ES_DT_UINT8;
	p.w_zp = 128;
	p.bias = true;
	check(p);
	p.w_zp = -1;
	p.per_channel = true;
	check(p);
	/* s8 weights with nonzero zero points (reference) */
	p.wdt = ES_DT_INT8;
	check(p);
}

static void test_qlinearconv_ranks(void **state)
{
	(void)state;
	struct problem p = conv2d("QLinearConv", 1, 6, 5, 13, 1, 3, 1);
	p.nsp = 1; /* 1-D, stride 2 */
	p.s[0] = 2;
	p.bias = true;
	check(p);
	p = conv2d("QLinearConv", 1, 4, 6, 5, 6, 3, 2);
	p.nsp = 3; /* 3-D with groups */
	p.in[2] = 4;
	p.per_channel = true;
	p.xdt = ES_DT_INT8;
	check(p);
}

static void test_convinteger(void **state)
{
	(void)state;
	struct problem p = conv2d("ConvInteger", 1, 8, 16, 9, 9, 3, 1);
	check(p); /* s8 w, zp 0 */
	p.wdt = ES_DT_UINT8;
	p.w_zp = -1; /* u8 w with per-channel zero points */
	p.per_channel = true;
	check(p);
	p.w_zp = 128;
	p.per_channel = false;
	p.group = 2;
	check(p);
}

/* Sums past 2^24 (where a float accumulator would round) stay exact. */
static void test_convinteger_large_sums(void **state)
{
	(void)state;
	struct problem p = conv2d("ConvInteger", 1, 64, 16, 6, 6, 3, 1);
	struct data d;
	make_data(&p, &d);
	for (int64_t i = 0; i < d.nx; i++)
		d.x[i] = 255 - (int32_t)(i % 3);
	for (int64_t i = 0; i < d.nw; i++)
		d.w[i] = -128 + (int32_t)(i % 2);
	for (int64_t i = 0; i < p.m; i++)
		d.wzp[i] = 0;
	d.x_zp = 0;
	/* constant and run-time zero points (oneDNN), then a weight zero
	 * point of 1 (the reference) */
	for (int variant = 0; variant < 3; variant++) {
		if (variant == 2)
			for (int64_t i = 0; i < p.m; i++)
				d.wzp[i] = 1;
		int32_t *want = reference(&p, &d);
		bool big = false;
		for (int64_t i = 0; i < d.ny; i++)
			big |= abs(want[i]) > (1 << 24);
		assert_true(big);
		struct feeds f;
		es_tensor out;
		es_error err = { 0 };
		p.params_as_inputs = variant == 1;
		es_model *m = gb_model(build(&p, &d, &f), true);
		assert_int_equal(gb_run(m, f.t, f.n, &out, &err), 0);
		compare(&p, &d, &out, want, false);
		free(out.data);
		feeds_free(&f);
		es_model_release(m);
		free(want);
	}
	free_data(&d);
}

static void test_qconv_layouts(void **state)
{
	(void)state;
	for (int cl = 0; cl < 2; cl++) {
		struct problem p = conv2d("QConv", 1, 16, 24, 9, 9, 3, 1);
		p.channels_last = cl;
		p.bias = true;
		p.per_channel = true;
		check(p);
		p.relu = true;
		check(p);
		p.residual = true; /* Z + Relu */
		check(p);
		p.relu = false; /* Z alone, s8 y, stride 2 */
		p.ydt = ES_DT_INT8;
		p.s[0] = p.s[1] = 2;
		check(p);
		p = conv2d("QConv", 2, 8, 8, 6, 6, 3, 8); /* depthwise, Z */
		p.channels_last = cl;
		p.residual = true;
		p.relu = true;
		check(p);
		p = conv2d("QConv", 1, 8, 8, 6, 6, 3, 1); /* 1-D, reference */
		p.nsp = 1;
		p.channels_last = cl;
		p.residual = true;
		p.relu = true;
		p.wdt = ES_DT_UINT8;
		p.w_zp = 7;
		check(p);
	}
}

/*
 * QConv against the float graph it replaces: DQ(x) -> Conv(DQ(w), B) ->
 * Add(DQ(Z)) -> Relu -> Q, unoptimized.
 */
static void test_qconv_equals_qdq(void **state)
{
	(void)state;
	struct problem p = conv2d("QConv", 1, 32, 32, 12, 12, 3, 1);
	p.bias = true;
	p.per_channel = true;
	p.residual = true;
	p.relu = true;
	struct data d;
	make_data(&p, &d);

	/* the QConv */
	struct feeds f;
	es_tensor qout, fout;
	es_error err = { 0 };
	es_model *mq = gb_model(build(&p, &d, &f), true);
	if (gb_run(mq, f.t, f.n, &qout, &err))
		fail_msg("QConv: %s", err.msg);
	es_model_release(mq);

	/* the float graph on the same x and Z */
	es_graph *g = gb_graph(13);
	int64_t xdims[4] = { p.n, p.c, p.in[0], p.in[1] };
	int64_t ydims[4] = { p.n, p.m, d.out[0], d.out[1] };
	int64_t wdims[4] = { p.m, p.c, p.k[0], p.k[1] }, mdim = p.m;
	int x = gb_input(g, "x", p.xdt, 4, xdims);
	int z = gb_input(g, "Z", p.ydt, 4, ydims);
	float *wf = malloc((size_t)d.nw * sizeof(float)), *bf = malloc((size_t)p.m * sizeof(float));
	assert_true(wf && bf);
	const int64_t per_m = d.nw / p.m;
	for (int64_t i = 0; i < d.nw; i++)
		wf[i] = (float)(d.w[i] - d.wzp[i / per_m]) * d.w_scale[i / per_m];
	for (int64_t i = 0; i < p.m; i++)
		bf[i] = (float)d.b[i] * d.x_scale * d.w_scale[i];
	int32_t zps[3] = { d.x_zp, d.y_zp, d.z_zp };
	void *xzp = pack(p.xdt, &zps[0], 1), *yzp = pack(p.ydt, &zps[1], 1);
	void *zzp = pack(p.ydt, &zps[2], 1);
	int xs = gb_scalar_f32(g, "xs", d.x_scale), ys = gb_scalar_f32(g, "ys", d.y_scale);
	int zs = gb_scalar_f32(g, "zs", d.z_scale);
	int xz = gb_const(g, "xzp", p.xdt, 0, NULL, xzp), yz = gb_const(g, "yzp", p.ydt, 0, NULL, yzp);
	int zz = gb_const(g, "zzp", p.ydt, 0, NULL, zzp);
	int w = gb_const_f32(g, "wf", 4, wdims, wf), b = gb_const_f32(g, "bf", 1, &mdim, bf);
	int xf = gb_value(g, "xf", ES_DT_FLOAT), zf = gb_value(g, "zf", ES_DT_FLOAT);
	int cv = gb_value(g, "cv", ES_DT_FLOAT), sum = gb_value(g, "sum", ES_DT_FLOAT);
	int act = gb_value(g, "act", ES_DT_FLOAT), y = gb_value(g, "y", p.ydt);
	int n;
	n = gb_node(g, "DequantizeLinear", "dqx", (int[]){ x, xs, xz }, 3, &xf, 1);
	n = gb_node(g, "DequantizeLinear", "dqz", (int[]){ z, zs, zz }, 3, &zf, 1);
	n = gb_node(g, "Conv", "conv", (int[]){ xf, w, b }, 3, &cv, 1);
	gb_attr_ints(g, n, "pads", (int64_t[]){ 1, 1, 1, 1 }, 4);
	n = gb_node(g, "Add", "add", (int[]){ cv, zf }, 2, &sum, 1);
	n = gb_node(g, "Relu", "relu", (int[]){ sum }, 1, &act, 1);
	n = gb_node(g, "QuantizeLinear", "q", (int[]){ act, ys, yz }, 3, &y, 1);
	(void)n;
	gb_output(g, y);
	es_model *mf = gb_model(g, true);
	es_tensor fin[2] = { f.t[0], f.t[1] }; /* x, Z: the QConv graph's inputs */
	assert_int_equal(es_model_input_index(mf, "Z"), 1);
	if (gb_run(mf, fin, 2, &fout, &err))
		fail_msg("float graph: %s", err.msg);
	es_model_release(mf);

	int64_t off = 0;
	for (int64_t i = 0; i < d.ny; i++) {
		int32_t a = out_at(&qout, i), c = out_at(&fout, i);
		if (abs(a - c) > 1)
			fail_msg("element %lld: QConv %d, float graph %d", (long long)i, a, c);
		off += a != c;
	}
	if (off > d.ny / 100 + 1)
		fail_msg("%lld of %lld elements off by one", (long long)off, (long long)d.ny);
	free(qout.data);
	free(fout.data);
	free(wf);
	free(bf);
	free(xzp);
	free(yzp);
	free(zzp);
	feeds_free(&f);
	free_data(&d);
}

/* Two threads give the single-thread answer on both paths (oneDNN's
 * primitive is made per team size; the reference splits the planes). */
static void test_two_threads(void **state)
{
	(void)state;
	for (int variant = 0; variant < 2; variant++) {
		struct problem p = conv2d("QConv", 2, 32, 48, 14, 14, 3, 1);
		p.channels_last = true;
		p.bias = true;
		p.per_channel = true;
		p.residual = true;
		p.relu = true;
		p.params_as_inputs = variant == 1;
		struct data d;
		struct feeds f;
		make_data(&p, &d);
		int32_t *want = reference(&p, &d);
		es_model *m = gb_model(build(&p, &d, &f), true);
		es_session_options so = { .threads = 2 };
		es_session *s = NULL;
		es_error err = { 0 };
		assert_int_equal(es_session_create(m, &so, &s, &err), 0);
		for (int run = 0; run < 2; run++) {
			es_tensor out[1];
			if (es_session_run(s, f.t, f.n, out, &err))
				fail_msg("run: %s", err.msg);
			compare(&p, &d, &out[0], want, true);
		}
		es_session_destroy(s);
		es_model_release(m);
		feeds_free(&f);
		free(want);
		free_data(&d);
	}
}

/* ---- bad inputs --------------------------------------------------------------- */

/* Builds p after `spoil` modified the data or problem; the load or the run
 * must fail with `code` and a message naming node "qc" and `what`. */
static void expect_fail(struct problem p, void (*spoil)(struct problem *, struct data *),
			int code, const char *what)
{
	struct data d;
	struct feeds f;
	make_data(&p, &d);
	spoil(&p, &d);
	es_model *m = NULL;
	es_error err = { 0 };
	int rc = gb_model_err(build(&p, &d, &f), true, &m, &err);
	if (!rc) {
		es_tensor out;
		rc = gb_run(m, f.t, f.n, &out, &err);
		if (!rc)
			free(out.data);
		es_model_release(m);
	}
	if (rc != code)
		fail_msg("expected code %d, got %d (%s)", code, rc, err.msg);
	if (!strstr(err.msg, "qc") || !strstr(err.msg, what))
		fail_msg("message '%s' should name node qc and '%s'", err.msg, what);
	feeds_free(&f);
	free_data(&d);
}

static void neg_x_scale(struct problem *p, struct data *d)
{
	(void)p;
	d->x_scale = -1.0f;
}

static void nan_w_scale(struct problem *p, struct data *d)
{
	(void)p;
	d->w_scale[1] = NAN;
}

static void no_change(struct problem *p, struct data *d)
{
	(void)p;
	(void)d;
}

static void test_bad_inputs(void **state)
{
	(void)state;
	struct problem p = conv2d("QLinearConv", 1, 8, 8, 5, 5, 3, 1);
	expect_fail(p, neg_x_scale, ES_EINVAL, "x_scale");
	p.params_as_inputs = true; /* the same checks at run time */
	expect_fail(p, neg_x_scale, ES_EINVAL, "x_scale");
	p.per_channel = true;
	expect_fail(p, nan_w_scale, ES_EINVAL, "w_scale");
	p.params_as_inputs = false;
	expect_fail(p, nan_w_scale, ES_EINVAL, "w_scale");

	/* channels of x not matching w and group */
	p = conv2d("QLinearConv", 1, 8, 8, 5, 5, 3, 3);
	p.c = 9;
	p.group = 1;
	struct data d;
	make_data(&p, &d);
	struct feeds f;
	es_graph *g = build(&p, &d, &f);
	/* the node says group 3, w has 9 channels per group */
	for (int a = 0; a < g->nodes[0].n_attrs; a++)
		if (!strcmp(g->nodes[0].attrs[a].name, "group"))
			g->nodes[0].attrs[a].i = 3;
	es_model *m = gb_model(g, true);
	es_tensor out;
	es_error err = { 0 };
	assert_int_equal(gb_run(m, f.t, f.n, &out, &err), ES_ESHAPE);
	assert_non_null(strstr(err.msg, "qc"));
	assert_non_null(strstr(err.msg, "group"));
	es_model_release(m);
	feeds_free(&f);
	free_data(&d);
}

/* Inputs of the wrong dtype or shape, as constants and as graph inputs. */
static void test_bad_tensors(void **state)
{
	(void)state;
	static const struct {
		int spoil;
		int code;
		const char *what;
	} cases[] = {
		{ SP_WSCALE_LEN, ES_ESHAPE, "w_scale" },
		{ SP_Z_SHAPE, ES_ESHAPE, "Z" },
		{ SP_YZP_I32, ES_ETYPE, "y_zero_point" },
		{ SP_B_I8, ES_ETYPE, "B" },
		{ SP_WZP_TYPE, ES_ETYPE, "w_zero_point" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		for (int as_inputs = 0; as_inputs < 2; as_inputs++) {
			struct problem p = conv2d("QConv", 1, 8, 8, 5, 5, 3, 1);
			p.bias = true;
			p.per_channel = true;
			p.residual = true;
			p.channels_last = true;
			p.params_as_inputs = as_inputs;
			p.spoil = cases[i].spoil;
			expect_fail(p, no_change, cases[i].code, cases[i].what);
		}
	}
	struct problem p = conv2d("ConvInteger", 1, 8, 8, 5, 5, 3, 1);
	p.spoil = SP_WZP_TYPE;
	expect_fail(p, no_change, ES_ETYPE, "w_zero_point");
}

static void test_bad_attributes(void **state)
{
	(void)state;
	struct problem p = conv2d("QConv", 1, 8, 8, 5, 5, 3, 1);
	struct data d;
	struct feeds f;
	make_data(&p, &d);
	es_graph *g = build(&p, &d, &f);
	for (int a = 0; a < g->nodes[0].n_attrs; a++)
		if (!strcmp(g->nodes[0].attrs[a].name, "activation")) {
			free(g->nodes[0].attrs[a].s);
			g->nodes[0].attrs[a].s = strdup("Gelu");
		}
	es_model *m = NULL;
	es_error err = { 0 };
	assert_int_equal(gb_model_err(g, true, &m, &err), ES_EINVAL);
	assert_non_null(strstr(err.msg, "qc"));
	assert_non_null(strstr(err.msg, "Gelu"));
	feeds_free(&f);
	free_data(&d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_qlinearconv_shapes),
		cmocka_unit_test(test_qlinearconv_ranks),
		cmocka_unit_test(test_convinteger),
		cmocka_unit_test(test_convinteger_large_sums),
		cmocka_unit_test(test_qconv_layouts),
		cmocka_unit_test(test_qconv_equals_qdq),
		cmocka_unit_test(test_two_threads),
		cmocka_unit_test(test_bad_inputs),
		cmocka_unit_test(test_bad_tensors),
		cmocka_unit_test(test_bad_attributes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
