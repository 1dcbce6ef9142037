/* A growable byte buffer for building responses, logs and expositions. */
#ifndef ES_BASE_BUF_H
#define ES_BASE_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

typedef struct es_buf {
	char *data; /* NUL-terminated when len > 0 or after any append */
	size_t len;
	size_t cap;
	int failed; /* set when an append ran out of memory; later appends are no-ops */
} es_buf;

#define ES_BUF_INIT { NULL, 0, 0, 0 }

/* Makes room for `extra` more bytes (plus a NUL). 0 or ES_ENOMEM. */
int es_buf_reserve(es_buf *b, size_t extra);
int es_buf_append(es_buf *b, const void *data, size_t len);
int es_buf_puts(es_buf *b, const char *s);
int es_buf_putc(es_buf *b, char c);
int es_buf_printf(es_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int es_buf_vprintf(es_buf *b, const char *fmt, va_list ap);
/* Appends s as a JSON string literal with quotes and escapes (control
 * characters, quote, backslash; invalid UTF-8 bytes become U+FFFD). */
int es_buf_json_str(es_buf *b, const char *s, size_t len);
void es_buf_reset(es_buf *b); /* len = 0, keeps memory */
void es_buf_free(es_buf *b);
/* Hands the data to the caller (who frees it with free) and resets b. */
char *es_buf_steal(es_buf *b, size_t *len);

/* Length of the valid UTF-8 sequence at the start of s[0..n): 1 to 4, or 0
 * when the bytes there are not one (a bad lead or continuation byte, a
 * sequence cut off by n, an overlong form, a surrogate or a code point
 * beyond U+10FFFF). n must be at least 1. */
size_t es_utf8_len(const unsigned char *s, size_t n);

#endif
