/* IEEE half and bfloat16 conversions (round to nearest even). */
#ifndef ES_BASE_FP16_H
#define ES_BASE_FP16_H

#include <stdint.h>
#include <string.h>

static inline float es_half_to_float(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	uint32_t exp = (h >> 10) & 0x1f;
	uint32_t mant = h & 0x3ff;
	uint32_t bits;
	if (exp == 0) {
		if (mant == 0) {
			bits = sign;
		} else { /* subnormal: normalise */
			exp = 127 - 15 + 1;
			while (!(mant & 0x400)) {
				mant <<= 1;
				exp--;
			}
			mant &= 0x3ff;
			bits = sign | (exp << 23) | (mant << 13);
		}
	} else if (exp == 0x1f) {
		bits = sign | 0x7f800000u | (mant << 13);
	} else {
		bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
	}
	float f;
	memcpy(&f, &bits, sizeof(f));
	return f;
}

static inline uint16_t es_float_to_half(float f)
{
	uint32_t x;
	memcpy(&x, &f, sizeof(x));
	uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
	uint32_t absx = x & 0x7fffffffu;
	if (absx >= 0x7f800000u) /* inf or nan */
		return sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0);
	if (absx >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
		return sign | 0x7c00;
	if (absx < 0x38800000u) { /* below the smallest normal half */
		if (absx < 0x33000000u) /* below half the smallest subnormal */
			return sign;
		/* value = m * 2^(e-150) with the implicit bit; the half subnormal
		 * unit is 2^-24, so drop (126 - e) bits, rounding to even. */
		uint32_t e = absx >> 23;
		uint32_t m = (absx & 0x7fffff) | 0x800000;
		uint32_t sh = 126 - e;
		uint32_t q = m >> sh;
		uint32_t rem = m & ((1u << sh) - 1);
		uint32_t halfway = 1u << (sh - 1);
		if (rem > halfway || (rem == halfway && (q & 1)))
			q++;
		return sign | (uint16_t)q;
	}
	/* normal: rebias exponent, round mantissa to 10 bits */
	uint32_t r = absx + 0xfff + ((absx >> 13) & 1) - (112u << 23);
	return sign | (uint16_t)(r >> 13);
}

static inline float es_bf16_to_float(uint16_t b)
{
	uint32_t bits = (uint32_t)b << 16;
	float f;
	memcpy(&f, &bits, sizeof(f));
	return f;
}

static inline uint16_t es_float_to_bf16(float f)
{
	uint32_t x;
	memcpy(&x, &f, sizeof(x));
	if ((x & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((x >> 16) | 0x40);
	x += 0x7fff + ((x >> 16) & 1);
	return (uint16_t)(x >> 16);
}

#endif
