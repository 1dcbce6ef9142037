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

#endif
