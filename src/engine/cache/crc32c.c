/*
 * CRC-32C. The CRC register is a linear function of (register, data) over
 * GF(2), which is what makes the fast path work: three streams of the
 * same length L are checksummed independently (the crc32 instruction has a
 * latency of three cycles but starts one per cycle), then joined with
 *
 *     crc(r, A B) = shift_L(crc(r, A)) ^ crc(0, B)
 *
 * where shift_L(r) is the register after L zero bytes, a 32x32 bit matrix
 * kept as four 256-entry tables.
 */
#include "engine/cache/crc32c.h"

#include <pthread.h>
#include <stdbool.h>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

#define POLY 0x82F63B78u /* reflected Castagnoli polynomial */

/* Block lengths of the three-way path: LONG for the bulk, SHORT for the
 * rest; multiples of 8. */
#define LONG_BLOCK 8192
#define SHORT_BLOCK 256

static uint32_t table[8][256];     /* slicing-by-8 */
static uint32_t shift_long[4][256]; /* shift_LONG_BLOCK, by byte of r */
static uint32_t shift_short[4][256];
static bool have_sse42;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static uint64_t load_le64(const unsigned char *p)
{
	return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 |
	       (uint64_t)p[3] << 24 | (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 |
	       (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
}

/* Register update without the initial and final inversion. */
static uint32_t portable_reg(uint32_t r, const unsigned char *p, size_t len)
{
	while (len && ((uintptr_t)p & 7)) {
		r = (r >> 8) ^ table[0][(r ^ *p++) & 0xff];
		len--;
	}
	for (; len >= 8; len -= 8, p += 8) {
		uint64_t w = load_le64(p) ^ r;
		r = table[7][w & 0xff] ^ table[6][(w >> 8) & 0xff] ^
		    table[5][(w >> 16) & 0xff] ^ table[4][(w >> 24) & 0xff] ^
		    table[3][(w >> 32) & 0xff] ^ table[2][(w >> 40) & 0xff] ^
		    table[1][(w >> 48) & 0xff] ^ table[0][w >> 56];
	}
	while (len--)
		r = (r >> 8) ^ table[0][(r ^ *p++) & 0xff];
	return r;
}

#if defined(__x86_64__)

static uint32_t apply_shift(uint32_t op[4][256], uint32_t r)
{
	return op[0][r & 0xff] ^ op[1][(r >> 8) & 0xff] ^
	       op[2][(r >> 16) & 0xff] ^ op[3][r >> 24];
}

/* Register after `len` (a multiple of 8) zero bytes, with the instruction. */
__attribute__((target("sse4.2")))
static uint32_t hw_zeros(uint32_t r, size_t len)
{
	uint64_t c = r;
	for (size_t i = 0; i < len; i += 8)
		c = _mm_crc32_u64(c, 0);
	return (uint32_t)c;
}

/* The tables of shift_len: by linearity, the image of any register is the
 * XOR of the images of its set bits. */
static void build_shift(uint32_t op[4][256], size_t len)
{
	uint32_t basis[32];
	for (int bit = 0; bit < 32; bit++)
		basis[bit] = hw_zeros(1u << bit, len);
	for (int k = 0; k < 4; k++)
		for (int b = 0; b < 256; b++) {
			uint32_t v = 0;
			for (int j = 0; j < 8; j++)
				if (b & (1 << j))
					v ^= basis[8 * k + j];
			op[k][b] = v;
		}
}

__attribute__((target("sse4.2")))
static uint32_t hw_reg(uint32_t r, const unsigned char *p, size_t len)
{
	uint64_t c0;
	while (len >= 3 * LONG_BLOCK) {
		uint64_t c1 = 0, c2 = 0, v0, v1, v2;
		c0 = r;
		for (size_t i = 0; i < LONG_BLOCK; i += 8) {
			__builtin_memcpy(&v0, p + i, 8);
			__builtin_memcpy(&v1, p + LONG_BLOCK + i, 8);
			__builtin_memcpy(&v2, p + 2 * LONG_BLOCK + i, 8);
			c0 = _mm_crc32_u64(c0, v0);
			c1 = _mm_crc32_u64(c1, v1);
			c2 = _mm_crc32_u64(c2, v2);
		}
		r = apply_shift(shift_long, (uint32_t)c0) ^ (uint32_t)c1;
		r = apply_shift(shift_long, r) ^ (uint32_t)c2;
		p += 3 * LONG_BLOCK;
		len -= 3 * LONG_BLOCK;
	}
	while (len >= 3 * SHORT_BLOCK) {
		uint64_t c1 = 0, c2 = 0, v0, v1, v2;
		c0 = r;
		for (size_t i = 0; i < SHORT_BLOCK; i += 8) {
			__builtin_memcpy(&v0, p + i, 8);
			__builtin_memcpy(&v1, p + SHORT_BLOCK + i, 8);
			__builtin_memcpy(&v2, p + 2 * SHORT_BLOCK + i, 8);
			c0 = _mm_crc32_u64(c0, v0);
			c1 = _mm_crc32_u64(c1, v1);
			c2 = _mm_crc32_u64(c2, v2);
		}
		r = apply_shift(shift_short, (uint32_t)c0) ^ (uint32_t)c1;
		r = apply_shift(shift_short, r) ^ (uint32_t)c2;
		p += 3 * SHORT_BLOCK;
		len -= 3 * SHORT_BLOCK;
	}
	c0 = r;
	for (; len >= 8; len -= 8, p += 8) {
		uint64_t v;
		__builtin_memcpy(&v, p, 8);
		c0 = _mm_crc32_u64(c0, v);
	}
	r = (uint32_t)c0;
	while (len--)
		r = _mm_crc32_u8(r, *p++);
	return r;
}

#endif /* __x86_64__ */

static void init_tables(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ POLY : c >> 1;
		table[0][i] = c;
	}
	for (int k = 1; k < 8; k++)
		for (int i = 0; i < 256; i++)
			table[k][i] = (table[k - 1][i] >> 8) ^ table[0][table[k - 1][i] & 0xff];
#if defined(__x86_64__)
	have_sse42 = __builtin_cpu_supports("sse4.2");
	if (have_sse42) {
		build_shift(shift_long, LONG_BLOCK);
		build_shift(shift_short, SHORT_BLOCK);
	}
#endif
}

uint32_t es_crc32c_portable(uint32_t crc, const void *buf, size_t len)
{
	pthread_once(&init_once, init_tables);
	return ~portable_reg(~crc, buf, len);
}

uint32_t es_crc32c(uint32_t crc, const void *buf, size_t len)
{
	pthread_once(&init_once, init_tables);
#if defined(__x86_64__)
	if (have_sse42)
		return ~hw_reg(~crc, buf, len);
#endif
	return ~portable_reg(~crc, buf, len);
}

/* ---- combining ------------------------------------------------------------ */

/* a * b modulo the polynomial, both reflected (bit 31 is x^0). */
static uint32_t mul_mod(uint32_t a, uint32_t b)
{
	uint32_t prod = 0;
	for (uint32_t m = 1u << 31; m; m >>= 1) {
		if (a & m)
			prod ^= b;
		b = (b & 1) ? (b >> 1) ^ POLY : b >> 1;
	}
	return prod;
}

static uint32_t x_pow2k[64]; /* x^(2^k) modulo the polynomial */
static pthread_once_t pow_once = PTHREAD_ONCE_INIT;

static void init_powers(void)
{
	x_pow2k[0] = 1u << 30; /* x^1 */
	for (int k = 1; k < 64; k++)
		x_pow2k[k] = mul_mod(x_pow2k[k - 1], x_pow2k[k - 1]);
}

uint32_t es_crc32c_combine(uint32_t crc_a, uint32_t crc_b, size_t len_b)
{
	pthread_once(&pow_once, init_powers);
	/* x^(8 len_b): the bits of len_b, each power of two shifted by 3 */
	uint32_t p = 1u << 31; /* x^0 */
	uint64_t n = (uint64_t)len_b;
	for (int k = 3; n && k < 64; k++, n >>= 1)
		if (n & 1)
			p = mul_mod(x_pow2k[k], p);
	return mul_mod(p, crc_a) ^ crc_b;
}

struct crc_part {
	const unsigned char *p;
	size_t len;
	uint32_t crc;
};

static void *crc_part_run(void *arg)
{
	struct crc_part *c = arg;
	c->crc = es_crc32c(0, c->p, c->len);
	return NULL;
}

#define PARALLEL_MIN (4u << 20)
#define MAX_PARTS 8

uint32_t es_crc32c_parallel(const void *buf, size_t len, int threads)
{
	if (threads > MAX_PARTS)
		threads = MAX_PARTS;
	if (threads < 2 || len < PARALLEL_MIN)
		return es_crc32c(0, buf, len);
	struct crc_part part[MAX_PARTS];
	pthread_t tid[MAX_PARTS];
	bool started[MAX_PARTS] = { false };
	size_t each = len / (size_t)threads;
	for (int i = 0; i < threads; i++) {
		part[i].p = (const unsigned char *)buf + (size_t)i * each;
		part[i].len = i == threads - 1 ? len - (size_t)i * each : each;
	}
	for (int i = 1; i < threads; i++)
		started[i] = pthread_create(&tid[i], NULL, crc_part_run, &part[i]) == 0;
	crc_part_run(&part[0]);
	uint32_t crc = part[0].crc;
	for (int i = 1; i < threads; i++) {
		if (started[i])
			pthread_join(tid[i], NULL);
		else
			crc_part_run(&part[i]);
		crc = es_crc32c_combine(crc, part[i].crc, part[i].len);
	}
	return crc;
}
