/* libFuzzer target: arbitrary bytes as a compiled model file
 * (es_model_load_compiled), with the zero key and default options. Both
 * checksums are recomputed before loading, so mutations reach the header
 * checks and the payload parser instead of stopping at the checksum. A
 * model that loads is saved again and gets a session. Nothing may crash,
 * leak or read out of bounds.
 *
 * Seed: any compiled model written with a NULL key, e.g. from
 * tests/data/loader/relu.onnx (see docs/engine.md, "Compiled form"). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "edgeserve/engine.h"
#include "engine/cache/crc32c.h"
#include "engine/model_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int fd = -1, out_fd = -1;
	static char path[64];
	if (fd < 0) {
		fd = memfd_create("fuzz_compiled_model", 0);
		out_fd = memfd_create("fuzz_compiled_model_out", 0);
		if (fd < 0 || out_fd < 0)
			abort();
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	}
	uint8_t *buf = malloc(size ? size : 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	if (size >= ES_COMPILED_HEADER_SIZE) {
		put_le32(buf + ES_COMPILED_OFF_PAYLOAD_CRC,
			 es_crc32c(0, buf + ES_COMPILED_HEADER_SIZE,
				   size - ES_COMPILED_HEADER_SIZE));
		put_le32(buf + ES_COMPILED_OFF_HEADER_CRC,
			 es_crc32c(0, buf, ES_COMPILED_OFF_HEADER_CRC));
	}
	if (ftruncate(fd, 0) || (size && pwrite(fd, buf, size, 0) != (ssize_t)size))
		abort();
	free(buf);

	es_model *m = NULL;
	es_error err;
	if (es_model_load_compiled(path, NULL, NULL, &m, &err) == 0) {
		es_session *s = NULL;
		if (ftruncate(out_fd, 0) == 0 && lseek(out_fd, 0, SEEK_SET) == 0)
			(void)es_model_save_compiled(m, out_fd, NULL, &err);
		if (es_session_create(m, NULL, &s, &err) == 0)
			es_session_destroy(s);
		es_model_release(m);
	}
	return 0;
}
