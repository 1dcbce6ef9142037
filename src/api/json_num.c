/*
 * JSON number text <-> typed elements (see json_num.h).
 *
 * Integers are accumulated digit by digit with overflow checks, never
 * through a double. Floats take a fast exact path when the decimal
 * mantissa and the power of ten are both exactly representable (one IEEE
 * operation, hence one correct rounding), and strtof/strtod otherwise.
 * FP16/BF16 round from the double; when that double sits exactly on a
 * rounding midpoint of the small type, the decimal text decides which way
 * the true value lies, so the result is rounded once.
 *
 * Float32 output searches the fewest digits whose nearest decimal falls
 * inside the interval of reals that round to the float (computed in
 * double, where that interval's ends are exact), so it costs a handful of
 * multiplications instead of repeated snprintf/strtof round trips.
 */
#include "api/json_num.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fp16.h"

/* A validated JSON number split into its parts. */
struct dec {
	bool neg;
	const char *ip; /* integer digits */
	size_t in;
	const char *fp; /* fraction digits */
	size_t fn;
	int64_t exp;    /* exponent, saturated to +-1e12 */
};

/* Returns 0, or -1 when s is not a finite JSON number. */
static int dec_split(const char *s, size_t n, struct dec *d)
{
	const char *p = s, *end = s + n;

	memset(d, 0, sizeof(*d));
	if (p < end && *p == '-') {
		d->neg = true;
		p++;
	}
	d->ip = p;
	while (p < end && *p >= '0' && *p <= '9')
		p++;
	d->in = (size_t)(p - d->ip);
	if (!d->in)
		return -1;
	if (p < end && *p == '.') {
		d->fp = ++p;
		while (p < end && *p >= '0' && *p <= '9')
			p++;
		d->fn = (size_t)(p - d->fp);
		if (!d->fn)
			return -1;
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		bool eneg = false;
		p++;
		if (p < end && (*p == '+' || *p == '-'))
			eneg = *p++ == '-';
		if (p >= end)
			return -1;
		while (p < end && *p >= '0' && *p <= '9') {
			if (d->exp < 1000000000000LL)
				d->exp = d->exp * 10 + (*p - '0');
			p++;
		}
		if (eneg)
			d->exp = -d->exp;
	}
	return p == end ? 0 : -1;
}

static inline int dec_digit(const struct dec *d, size_t i)
{
	return i < d->in ? d->ip[i] - '0' : d->fp[i - d->in] - '0';
}

/* Magnitude of an exactly integral decimal: 0, ES_EINVAL, ES_ERANGE. */
static int dec_to_mag(const struct dec *d, uint64_t *mag)
{
	size_t total = d->in + d->fn;
	size_t first = 0, last;

	while (first < total && dec_digit(d, first) == 0)
		first++;
	if (first == total) {
		*mag = 0;
		return 0;
	}
	last = total - 1;
	while (dec_digit(d, last) == 0)
		last--;
	/* value = digits[first..last] * 10^e */
	int64_t e = d->exp - (int64_t)d->fn + (int64_t)(total - 1 - last);
	size_t k = last - first + 1;
	if (e < 0)
		return ES_EINVAL;
	if ((int64_t)k + e > 20)
		return ES_ERANGE;
	uint64_t v = 0;
	for (size_t i = first; i <= last; i++) {
		if (__builtin_mul_overflow(v, 10, &v) ||
		    __builtin_add_overflow(v, (uint64_t)dec_digit(d, i), &v))
			return ES_ERANGE;
	}
	for (int64_t i = 0; i < e; i++)
		if (__builtin_mul_overflow(v, 10, &v))
			return ES_ERANGE;
	*mag = v;
	return 0;
}

/* Plain "-?[0-9]{1,18}": the common case, no split needed. */
static bool small_int(const char *s, size_t n, bool *neg, uint64_t *mag)
{
	size_t i = 0;
	uint64_t v = 0;

	*neg = false;
	if (n && s[0] == '-') {
		*neg = true;
		i = 1;
	}
	if (i == n || n - i > 18)
		return false;
	for (; i < n; i++) {
		unsigned c = (unsigned)(s[i] - '0');
		if (c > 9)
			return false;
		v = v * 10 + c;
	}
	*mag = v;
	return true;
}

int es_num_to_i64(const char *s, size_t n, int64_t *out)
{
	bool neg;
	uint64_t mag;

	if (!small_int(s, n, &neg, &mag)) {
		struct dec d;
		if (dec_split(s, n, &d))
			return ES_EINVAL;
		int rc = dec_to_mag(&d, &mag);
		if (rc)
			return rc;
		neg = d.neg;
	}
	if (neg) {
		if (mag > (uint64_t)INT64_MAX + 1)
			return ES_ERANGE;
		*out = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
	} else {
		if (mag > (uint64_t)INT64_MAX)
			return ES_ERANGE;
		*out = (int64_t)mag;
	}
	return 0;
}

int es_num_to_u64(const char *s, size_t n, uint64_t *out)
{
	bool neg;
	uint64_t mag;

	if (!small_int(s, n, &neg, &mag)) {
		struct dec d;
		if (dec_split(s, n, &d))
			return ES_EINVAL;
		int rc = dec_to_mag(&d, &mag);
		if (rc)
			return rc;
		neg = d.neg;
	}
	if (neg && mag)
		return ES_ERANGE;
	*out = mag;
	return 0;
}

/* NaN/Infinity spellings accepted in data: returns 1 and sets *v. */
static int nonfinite(const char *s, size_t n, double *v)
{
	if (n == 3 && !memcmp(s, "NaN", 3)) {
		*v = NAN;
		return 1;
	}
	if (n == 8 && !memcmp(s, "Infinity", 8)) {
		*v = INFINITY;
		return 1;
	}
	if (n == 9 && !memcmp(s, "-Infinity", 9)) {
		*v = -INFINITY;
		return 1;
	}
	return 0;
}

/*
 * Decimal mantissa (at most 19 significant digits) and power of ten.
 * Returns false when there are more digits than that.
 */
static bool dec_mantissa(const struct dec *d, uint64_t *m, int64_t *e10)
{
	size_t total = d->in + d->fn, i = 0, k = 0;
	uint64_t v = 0;

	while (i < total && dec_digit(d, i) == 0)
		i++;
	for (; i < total; i++, k++) {
		if (k == 19)
			return false;
		v = v * 10 + (uint64_t)dec_digit(d, i);
	}
	*m = v;
	*e10 = d->exp - (int64_t)d->fn;
	return true;
}

static const double pow10_d[] = {
	1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
	1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};
static const float pow10_f[] = {
	1e0f, 1e1f, 1e2f, 1e3f, 1e4f, 1e5f, 1e6f, 1e7f, 1e8f, 1e9f, 1e10f,
};

/* strtod/strtof need a terminator: copy the text (fixed stack buffer, the
 * heap for longer text). */
static int slow_parse(const char *s, size_t n, double *dv, float *fv)
{
	char stackbuf[64];
	char *t = stackbuf;

	if (n >= sizeof(stackbuf)) {
		t = malloc(n + 1);
		if (!t)
			return ES_ENOMEM;
	}
	memcpy(t, s, n);
	t[n] = '\0';
	if (dv)
		*dv = strtod(t, NULL);
	else
		*fv = strtof(t, NULL);
	if (t != stackbuf)
		free(t);
	return 0;
}

int es_num_to_f64(const char *s, size_t n, double *out)
{
	struct dec d;
	uint64_t m;
	int64_t e10;
	double v;

	if (nonfinite(s, n, out))
		return 0;
	if (dec_split(s, n, &d))
		return ES_EINVAL;
	bool fits = dec_mantissa(&d, &m, &e10);
	if (fits && m == 0) {
		v = 0; /* any exponent */
	} else if (fits && m <= (1ULL << 53) && e10 >= -22 && e10 <= 22) {
		v = (double)m;
		if (e10 < 0)
			v /= pow10_d[-e10];
		else
			v *= pow10_d[e10];
	} else {
		int rc = slow_parse(s, n, &v, NULL);
		if (rc)
			return rc;
		v = fabs(v);
	}
	if (isinf(v))
		return ES_ERANGE;
	*out = d.neg ? -v : v;
	return 0;
}

/* Whether d (finite, >= 0) lies exactly halfway between two floats. */
static bool float_midpoint(double d)
{
	float f = (float)d;
	if ((double)f == d || isinf(f))
		return false;
	float g = nextafterf(f, d > (double)f ? INFINITY : 0.0f);
	return ((double)f + (double)g) / 2 == d;
}

int es_num_to_f32(const char *s, size_t n, float *out)
{
	struct dec d;
	uint64_t m;
	int64_t e10;
	float v;
	double dv;

	if (nonfinite(s, n, &dv)) {
		*out = (float)dv;
		return 0;
	}
	if (dec_split(s, n, &d))
		return ES_EINVAL;
	bool fits = dec_mantissa(&d, &m, &e10);
	if (fits && m == 0) {
		v = 0; /* any exponent */
	} else if (fits && m <= (1ULL << 24) && e10 >= -10 && e10 <= 10) {
		/* both operands exact in float: one correctly rounded op */
		v = (float)m;
		if (e10 < 0)
			v /= pow10_f[-e10];
		else
			v *= pow10_f[e10];
	} else if (fits && m <= (1ULL << 53) && e10 >= -22 && e10 <= 22 &&
		   !float_midpoint(dv = e10 < 0 ? (double)m / pow10_d[-e10] :
				   (double)m * pow10_d[e10])) {
		/* dv is the correctly rounded double. Rounding it again to
		 * float gives the correctly rounded float unless dv sits
		 * exactly on a float midpoint (then the decimal may lie on
		 * either side of it: strtof decides). */
		v = (float)dv;
	} else {
		int rc = slow_parse(s, n, NULL, &v);
		if (rc)
			return rc;
		v = fabsf(v);
	}
	if (isinf(v))
		return ES_ERANGE;
	*out = d.neg ? -v : v;
	return 0;
}

/*
 * Sign of |decimal text| - a, for a finite a > 0 whose exact decimal
 * expansion has at most 121 significant digits (true for every rounding
 * midpoint of FP16 and BF16).
 */
static int dec_cmp(const char *s, size_t n, double a)
{
	char buf[160];
	struct dec d;

	if (dec_split(s, n, &d))
		return 0;
	int len = snprintf(buf, sizeof(buf), "%.120e", a);
	if (len <= 0 || (size_t)len >= sizeof(buf))
		return 0;
	/* buf: D.DDD...e[+-]XX, value 0.DDDD x 10^(XX+1) */
	const char *e = strchr(buf, 'e');
	if (!e)
		return 0;
	long bexp = strtol(e + 1, NULL, 10) + 1;
	char bdig[128];
	size_t bn = 0;
	for (const char *p = buf; p < e; p++)
		if (*p >= '0' && *p <= '9')
			bdig[bn++] = *p;

	size_t total = d.in + d.fn, first = 0;
	while (first < total && dec_digit(&d, first) == 0)
		first++;
	if (first == total)
		return -1; /* text is zero, a is not */
	int64_t texp = (int64_t)(total - first) - (int64_t)d.fn + d.exp;
	if (texp != bexp)
		return texp > bexp ? 1 : -1;
	size_t tn = total - first;
	size_t len2 = tn > bn ? tn : bn;
	for (size_t i = 0; i < len2; i++) {
		int td = i < tn ? dec_digit(&d, first + i) : 0;
		int bd = i < bn ? bdig[i] - '0' : 0;
		if (td != bd)
			return td > bd ? 1 : -1;
	}
	return 0;
}

/*
 * Rounds d to a binary format with mbits stored mantissa bits, normal
 * exponents emin..emax and the given bias, to nearest even. When d lies
 * exactly on a midpoint and text is given, the text decides the direction.
 */
static uint16_t round_small(double d, int mbits, int emin, int emax, int bias,
			    uint16_t qnan, const char *s, size_t n)
{
	uint16_t sign = signbit(d) ? 0x8000 : 0;
	uint16_t expmask = (uint16_t)(((1u << (15 - mbits)) - 1) << mbits);
	double a = fabs(d);
	int e;

	if (isnan(d))
		return sign | qnan;
	if (isinf(d))
		return sign | expmask;
	if (a == 0)
		return sign;
	frexp(a, &e);
	int E = e - 1; /* a in [2^E, 2^(E+1)) */
	int E2 = E < emin ? emin : E;
	double scaled = ldexp(a, mbits - E2); /* < 2^(mbits+1), exact */
	double r = floor(scaled);
	double frac = scaled - r;
	uint32_t mant = (uint32_t)r;
	bool up = frac > 0.5;
	if (frac == 0.5) {
		int c = s ? dec_cmp(s, n, a) : 0;
		up = c > 0 || (c == 0 && (mant & 1));
	}
	if (up)
		mant++;
	if (mant >> (mbits + 1)) {
		mant >>= 1;
		E2++;
	}
	if (mant < (1u << mbits)) /* subnormal (or zero) */
		return sign | (uint16_t)mant;
	if (E2 > emax)
		return sign | expmask;
	return sign | (uint16_t)(((uint32_t)(E2 + bias) << mbits) |
				 (mant & ((1u << mbits) - 1)));
}

uint16_t es_double_to_half(double d)
{
	return round_small(d, 10, -14, 15, 15, 0x7e00, NULL, 0);
}

uint16_t es_double_to_bf16(double d)
{
	return round_small(d, 7, -126, 127, 127, 0x7fc0, NULL, 0);
}

int es_num_to_f16(const char *s, size_t n, uint16_t *out)
{
	double d;
	int rc = es_num_to_f64(s, n, &d);
	if (rc)
		return rc;
	uint16_t h = round_small(d, 10, -14, 15, 15, 0x7e00, s, n);
	if ((h & 0x7fff) == 0x7c00 && isfinite(d))
		return ES_ERANGE;
	*out = h;
	return 0;
}

int es_num_to_bf16(const char *s, size_t n, uint16_t *out)
{
	double d;
	int rc = es_num_to_f64(s, n, &d);
	if (rc)
		return rc;
	uint16_t h = round_small(d, 7, -126, 127, 127, 0x7fc0, s, n);
	if ((h & 0x7fff) == 0x7f80 && isfinite(d))
		return ES_ERANGE;
	*out = h;
	return 0;
}

/* ---- formatting ---------------------------------------------------------- */

size_t es_fmt_u64(char *buf, uint64_t v)
{
	char tmp[24];
	size_t n = 0;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (size_t i = 0; i < n; i++)
		buf[i] = tmp[n - 1 - i];
	buf[n] = '\0';
	return n;
}

size_t es_fmt_i64(char *buf, int64_t v)
{
	if (v < 0) {
		buf[0] = '-';
		return 1 + es_fmt_u64(buf + 1, (uint64_t)0 - (uint64_t)v);
	}
	return es_fmt_u64(buf, (uint64_t)v);
}

/*
 * Writes (neg ? -1 : 1) * N * 10^k like %g would at the precision of N's
 * digits: plain notation for exponents -4..8, else d.ddde+XX.
 */
static size_t put_decimal(char *buf, bool neg, uint64_t N, int k)
{
	char dig[24];
	size_t q = es_fmt_u64(dig, N), n = 0;

	while (q > 1 && dig[q - 1] == '0') {
		q--;
		k++;
	}
	int x = (int)q - 1 + k; /* exponent of the first digit */
	if (neg)
		buf[n++] = '-';
	if (x >= -4 && x < 9) {
		if (x < 0) {
			buf[n++] = '0';
			buf[n++] = '.';
			for (int i = 0; i < -x - 1; i++)
				buf[n++] = '0';
			memcpy(buf + n, dig, q);
			n += q;
		} else {
			for (int i = 0; i <= x; i++)
				buf[n++] = (size_t)i < q ? dig[i] : '0';
			if (q > (size_t)x + 1) {
				buf[n++] = '.';
				memcpy(buf + n, dig + x + 1, q - (size_t)x - 1);
				n += q - (size_t)x - 1;
			}
		}
	} else {
		buf[n++] = dig[0];
		if (q > 1) {
			buf[n++] = '.';
			memcpy(buf + n, dig + 1, q - 1);
			n += q - 1;
		}
		n += (size_t)snprintf(buf + n, 8, "e%c%02d", x < 0 ? '-' : '+', x < 0 ? -x : x);
	}
	buf[n] = '\0';
	return n;
}

/* 10^k for -66 <= k <= 66 in double: exact up to 22, otherwise within
 * two roundings. */
static double p10d(int k)
{
	unsigned u = k < 0 ? (unsigned)-k : (unsigned)k;
	double v;

	if (u > 66)
		u = 66;
	if (u <= 22)
		v = pow10_d[u];
	else if (u <= 44)
		v = pow10_d[22] * pow10_d[u - 22];
	else
		v = pow10_d[22] * pow10_d[22] * pow10_d[u - 44];
	return k < 0 ? 1 / v : v;
}

/*
 * The candidate for float32 text with p significant digits: |f| rounded
 * to p digits, as r * 10^-s. Returns 1 if it reads back as f, 0 if not.
 * The ends of the interval of reals that round to f are exact doubles (25
 * bits); the candidate's relative error is below 1e-15, far inside the
 * interval's relative width (> 5e-8), so only candidates within 1e-15 of
 * an end need strtof to decide.
 */
struct f32_short {
	float f;
	double a, lo, hi;
	int e10;
	char *buf;
};

static int f32_try(struct f32_short *st, int p, double *r_out, int *s_out)
{
	int s = p - 1 - st->e10; /* a * 10^s has p digits before the point */
	double sc = s >= 0 ? st->a * p10d(s) : st->a / p10d(-s);
	double r = nearbyint(sc);
	double c = s >= 0 ? r / p10d(s) : r * p10d(-s);
	double margin = c * 1e-15;

	*r_out = r;
	*s_out = s;
	if (c > st->lo + margin && c < st->hi - margin)
		return 1;
	if (c < st->lo - margin || c > st->hi + margin)
		return 0;
	put_decimal(st->buf, false, (uint64_t)r, -s);
	return strtof(st->buf, NULL) == fabsf(st->f);
}

/*
 * Shortest float32 text: the fewest significant digits p (1..9) whose
 * nearest p-digit decimal reads back to f, found by bisection (9 digits
 * always do).
 */
static size_t fmt_f32_short(char *buf, float f)
{
	struct f32_short st = { .f = f, .buf = buf };
	uint32_t bits, nb;
	float af, prev, next;

	memcpy(&bits, &f, 4);
	bool neg = bits >> 31;
	bits &= 0x7fffffffu;
	memcpy(&af, &bits, 4);
	nb = bits - 1;
	memcpy(&prev, &nb, 4);
	st.a = af;
	st.lo = (st.a + prev) / 2;
	if (bits + 1 == 0x7f800000u) {
		st.hi = (st.a + 0x1p128) / 2;
	} else {
		nb = bits + 1;
		memcpy(&next, &nb, 4);
		st.hi = (st.a + next) / 2;
	}
	st.e10 = (int)floor(log10(st.a));
	/* make 10^e10 <= a < 10^(e10+1) hold despite log10's rounding (only
	 * shortness depends on it: every candidate is verified) */
	if (st.a >= p10d(st.e10 + 1))
		st.e10++;
	else if (st.a < p10d(st.e10))
		st.e10--;

	int lo = 1, hi = 9, s, best_s = 0;
	double r, best_r = 0;
	if (!f32_try(&st, 9, &best_r, &best_s))
		return (size_t)snprintf(buf, ES_NUM_FMT_MAX, "%.9g", (double)f);
	while (lo < hi) {
		int mid = (lo + hi) / 2;
		if (f32_try(&st, mid, &r, &s)) {
			hi = mid;
			best_r = r;
			best_s = s;
		} else {
			lo = mid + 1;
		}
	}
	return put_decimal(buf, neg, (uint64_t)best_r, -best_s);
}

size_t es_fmt_f32(char *buf, float f)
{
	if (!isfinite(f))
		return 0;
	if (fabsf(f) < 1e7f && f == truncf(f)) {
		if (f == 0 && signbit(f)) {
			memcpy(buf, "-0", 3);
			return 2;
		}
		return es_fmt_i64(buf, (int64_t)f);
	}
	return fmt_f32_short(buf, f);
}

size_t es_fmt_f64(char *buf, double d)
{
	if (!isfinite(d))
		return 0;
	if (fabs(d) < 1e15 && d == trunc(d)) {
		if (d == 0 && signbit(d)) {
			memcpy(buf, "-0", 3);
			return 2;
		}
		return es_fmt_i64(buf, (int64_t)d);
	}
	/* formatted in a local array: GCC's sanitizer builds otherwise warn
	 * (falsely) about a null destination */
	char out[ES_NUM_FMT_MAX];
	int len = 0;
	for (int prec = 15; prec <= 17; prec++) {
		len = snprintf(out, sizeof(out), "%.*g", prec, d);
		if (strtod(out, NULL) == d)
			break;
	}
	if (len < 0 || len >= (int)sizeof(out))
		return 0;
	memcpy(buf, out, (size_t)len + 1);
	return (size_t)len;
}

static inline uint16_t load_u16(const unsigned char *p)
{
	uint16_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}

int es_json_put_elem(es_buf *b, es_dtype dt, const void *data, size_t idx)
{
	const unsigned char *p = (const unsigned char *)data;
	char tmp[ES_NUM_FMT_MAX];
	size_t n;
	double special = 0;

	switch (dt) {
	case ES_DT_BOOL:
		return p[idx] ? es_buf_append(b, "true", 4) : es_buf_append(b, "false", 5);
	case ES_DT_UINT8:
		n = es_fmt_u64(tmp, p[idx]);
		break;
	case ES_DT_INT8:
		n = es_fmt_i64(tmp, (int8_t)p[idx]);
		break;
	case ES_DT_UINT16:
		n = es_fmt_u64(tmp, load_u16(p + 2 * idx));
		break;
	case ES_DT_INT16:
		n = es_fmt_i64(tmp, (int16_t)load_u16(p + 2 * idx));
		break;
	case ES_DT_UINT32: {
		uint32_t v;
		memcpy(&v, p + 4 * idx, 4);
		n = es_fmt_u64(tmp, v);
		break;
	}
	case ES_DT_INT32: {
		int32_t v;
		memcpy(&v, p + 4 * idx, 4);
		n = es_fmt_i64(tmp, v);
		break;
	}
	case ES_DT_UINT64: {
		uint64_t v;
		memcpy(&v, p + 8 * idx, 8);
		n = es_fmt_u64(tmp, v);
		break;
	}
	case ES_DT_INT64: {
		int64_t v;
		memcpy(&v, p + 8 * idx, 8);
		n = es_fmt_i64(tmp, v);
		break;
	}
	case ES_DT_FLOAT: {
		float v;
		memcpy(&v, p + 4 * idx, 4);
		n = es_fmt_f32(tmp, v);
		special = v;
		break;
	}
	case ES_DT_DOUBLE: {
		double v;
		memcpy(&v, p + 8 * idx, 8);
		n = es_fmt_f64(tmp, v);
		special = v;
		break;
	}
	case ES_DT_FLOAT16:
		special = es_half_to_float(load_u16(p + 2 * idx));
		n = es_fmt_f32(tmp, (float)special);
		break;
	case ES_DT_BFLOAT16:
		special = es_bf16_to_float(load_u16(p + 2 * idx));
		n = es_fmt_f32(tmp, (float)special);
		break;
	default:
		return ES_EINVAL;
	}
	if (!n) {
		/* JSON has no literal for these: the same strings the request
		 * parser accepts */
		if (isnan(special))
			return es_buf_append(b, "\"NaN\"", 5);
		return special > 0 ? es_buf_append(b, "\"Infinity\"", 10)
				   : es_buf_append(b, "\"-Infinity\"", 11);
	}
	return es_buf_append(b, tmp, n);
}

/* Appends element at *off of a string serialisation, advancing *off. */
static int put_string_elem(es_buf *b, const unsigned char *p, size_t nbytes,
			   size_t *off)
{
	uint32_t slen;

	if (nbytes - *off < 4)
		return ES_EINVAL;
	memcpy(&slen, p + *off, 4); /* little-endian hosts only (x86-64, arm64) */
	*off += 4;
	if (slen > nbytes - *off)
		return ES_EINVAL;
	int rc = es_buf_json_str(b, (const char *)p + *off, slen);
	*off += slen;
	return rc;
}

int es_json_put_values(es_buf *b, es_dtype dt, const void *data, size_t nbytes,
		       const int64_t *dims, int ndim, size_t *used)
{
	const unsigned char *p = (const unsigned char *)data;
	bool is_str = dt == ES_DT_STRING;
	size_t esz = es_dtype_size(dt);
	int64_t count;
	int64_t idx[ES_MAX_DIMS] = { 0 };
	size_t off = 0;
	int rc = 0;

	if (!is_str && !esz)
		return ES_EINVAL;
	if (es_shape_numel(dims, ndim, esz ? esz : 1, &count))
		return ES_EINVAL;
	if (!is_str && (size_t)count * esz > nbytes)
		return ES_EINVAL;

	/* Zero elements: print the nesting down to the first zero dim. */
	int levels = ndim;
	if (count == 0) {
		levels = 0;
		while (dims[levels] != 0)
			levels++;
		/* levels arrays of dims[0..levels) around empty arrays; the
		 * product is not bounded by the (zero) element count */
		count = 1;
		for (int k = 0; k < levels; k++)
			if (__builtin_mul_overflow(count, dims[k], &count) ||
			    count > ((int64_t)1 << 26))
				return ES_EINVAL;
	}
	for (int k = 0; k < levels; k++)
		es_buf_putc(b, '[');
	for (int64_t i = 0; i < count; i++) {
		if (i > 0) {
			int closes = 0;
			for (int k = levels - 1; k >= 0; k--) {
				if (++idx[k] < dims[k])
					break;
				idx[k] = 0;
				closes++;
			}
			for (int k = 0; k < closes; k++)
				es_buf_putc(b, ']');
			es_buf_putc(b, ',');
			for (int k = 0; k < closes; k++)
				es_buf_putc(b, '[');
		}
		if (levels < ndim) {
			es_buf_append(b, "[]", 2);
			continue;
		}
		if (is_str)
			rc = put_string_elem(b, p, nbytes, &off);
		else
			rc = es_json_put_elem(b, dt, p, (size_t)i);
		if (rc)
			return rc;
	}
	for (int k = 0; k < levels; k++)
		es_buf_putc(b, ']');
	if (b->failed)
		return ES_ENOMEM;
	if (used)
		*used = is_str ? off : (size_t)count * esz;
	return 0;
}
