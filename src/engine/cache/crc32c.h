/*
 * CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of
 * the compiled model form. Uses the SSE4.2 crc32 instruction on three
 * interleaved streams when the CPU has it (about 8 bytes per cycle), a
 * portable slicing-by-8 table otherwise.
 */
#ifndef ES_ENGINE_CACHE_CRC32C_H
#define ES_ENGINE_CACHE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/*
 * Extends crc (the CRC-32C of the bytes before buf; 0 for none) over
 * buf[0..len) and returns the CRC-32C of the whole, so a message can be
 * checksummed in pieces: es_crc32c(es_crc32c(0, a, n), b, m) equals the
 * checksum of a followed by b. The CRC-32C of "123456789" is 0xE3069283.
 */
uint32_t es_crc32c(uint32_t crc, const void *buf, size_t len);

/* The same with the portable code only (tests compare the two). */
uint32_t es_crc32c_portable(uint32_t crc, const void *buf, size_t len);

/*
 * The CRC-32C of A followed by B from crc_a = es_crc32c(0, A, .) and
 * crc_b = es_crc32c(0, B, len_b), without reading either: crc_a is carried
 * over len_b zero bytes by multiplying it with x^(8 len_b) modulo the
 * polynomial (square-and-multiply over precomputed x^(2^k)).
 */
uint32_t es_crc32c_combine(uint32_t crc_a, uint32_t crc_b, size_t len_b);

/*
 * es_crc32c(0, buf, len) computed by `threads` threads on consecutive
 * parts (combined with es_crc32c_combine); one thread below 4 MiB or when
 * a thread cannot be started. Reading a freshly mapped file is bounded by
 * how fast pages reach the CPU the first time, which two cores do faster
 * than one.
 */
uint32_t es_crc32c_parallel(const void *buf, size_t len, int threads);

#endif
