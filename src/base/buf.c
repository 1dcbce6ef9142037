#include "base/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgeserve/engine.h"

int es_buf_reserve(es_buf *b, size_t extra)
{
	if (b->failed)
		return ES_ENOMEM;
	size_t need = b->len + extra + 1;
	if (need < b->len) {
		b->failed = 1;
		return ES_ENOMEM;
	}
	if (need <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < need) {
		if (cap > SIZE_MAX / 2) {
			cap = need;
			break;
		}
		cap *= 2;
	}
	char *p = realloc(b->data, cap);
	if (!p) {
		b->failed = 1;
		return ES_ENOMEM;
	}
	b->data = p;
	b->cap = cap;
	return 0;
}

int es_buf_append(es_buf *b, const void *data, size_t len)
{
	if (es_buf_reserve(b, len))
		return ES_ENOMEM;
	if (len)
		memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = '\0';
	return 0;
}

int es_buf_puts(es_buf *b, const char *s)
{
	return es_buf_append(b, s, strlen(s));
}

int es_buf_putc(es_buf *b, char c)
{
	return es_buf_append(b, &c, 1);
}

int es_buf_vprintf(es_buf *b, const char *fmt, va_list ap)
{
	va_list ap2;
	va_copy(ap2, ap);
	int n = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	if (n < 0 || es_buf_reserve(b, (size_t)n))
		return ES_ENOMEM;
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	b->len += (size_t)n;
	return 0;
}

int es_buf_printf(es_buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int rc = es_buf_vprintf(b, fmt, ap);
	va_end(ap);
	return rc;
}

size_t es_utf8_len(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	size_t len;
	uint32_t cp;
	if (c < 0x80)
		return 1;
	if ((c & 0xe0) == 0xc0) { len = 2; cp = c & 0x1f; }
	else if ((c & 0xf0) == 0xe0) { len = 3; cp = c & 0x0f; }
	else if ((c & 0xf8) == 0xf0) { len = 4; cp = c & 0x07; }
	else return 0;
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	/* overlong forms, surrogates, beyond U+10FFFF */
	if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
	    (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

int es_buf_json_str(es_buf *b, const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	if (es_buf_putc(b, '"'))
		return ES_ENOMEM;
	size_t i = 0;
	while (i < len) {
		unsigned char c = p[i];
		if (c == '"' || c == '\\') {
			char esc[2] = { '\\', (char)c };
			es_buf_append(b, esc, 2);
			i++;
		} else if (c < 0x20) {
			switch (c) {
			case '\n': es_buf_puts(b, "\\n"); break;
			case '\r': es_buf_puts(b, "\\r"); break;
			case '\t': es_buf_puts(b, "\\t"); break;
			default: es_buf_printf(b, "\\u%04x", c); break;
			}
			i++;
		} else if (c < 0x80) {
			es_buf_putc(b, (char)c);
			i++;
		} else {
			size_t n = es_utf8_len(p + i, len - i);
			if (n) {
				es_buf_append(b, p + i, n);
				i += n;
			} else {
				es_buf_puts(b, "\\ufffd");
				i++;
			}
		}
	}
	return es_buf_putc(b, '"');
}

void es_buf_reset(es_buf *b)
{
	b->len = 0;
	b->failed = 0;
	if (b->data)
		b->data[0] = '\0';
}

void es_buf_free(es_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
	b->failed = 0;
}

char *es_buf_steal(es_buf *b, size_t *len)
{
	char *d = b->data;
	if (len)
		*len = b->len;
	b->data = NULL;
	b->len = b->cap = 0;
	return d;
}
