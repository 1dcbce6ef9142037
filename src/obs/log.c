/*
 * Structured JSON-lines logging.
 *
 * A record is built in the caller's fixed-size es_logrec (no allocation)
 * and leaves with one write(2). The body may use the buffer up to
 * BODY_MAX; the tail room after it always holds `,"truncated":true}\n`,
 * so a record that did not fit still ends as a valid JSON object. Fields
 * are never cut in the middle of an escape or of a UTF-8 sequence: a string
 * value that does not fit is shortened and closed, any other field that
 * does not fit is dropped, and every later field is dropped as well (the
 * record is an exact prefix of what was asked for, plus the flag).
 */
#include "obs/log.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/clock.h"

static const char truncated_tail[] = ",\"truncated\":true";
#define TAIL_MAX (sizeof(truncated_tail) - 1 + 2) /* plus "}\n" */
#define BODY_MAX (ES_LOGREC_MAX - TAIL_MAX)

static _Atomic int log_level = ES_LOG_INFO;
static _Atomic int log_fd = 2;

static const char *const level_names[] = { "DEBUG", "INFO", "WARNING", "ERROR" };

void es_log_set_level(es_log_level level)
{
	atomic_store_explicit(&log_level, (int)level, memory_order_relaxed);
}

es_log_level es_log_get_level(void)
{
	return (es_log_level)atomic_load_explicit(&log_level, memory_order_relaxed);
}

int es_log_parse_level(const char *name, es_log_level *out)
{
	static const struct {
		const char *name;
		es_log_level level;
	} names[] = {
		{ "DEBUG", ES_LOG_DEBUG }, { "INFO", ES_LOG_INFO },
		{ "WARNING", ES_LOG_WARN }, { "WARN", ES_LOG_WARN },
		{ "ERROR", ES_LOG_ERROR }, { "OFF", ES_LOG_OFF },
	};
	if (!name)
		return -1;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcasecmp(name, names[i].name) == 0) {
			if (out)
				*out = names[i].level;
			return 0;
		}
	}
	return -1;
}

void es_log_set_fd(int fd)
{
	atomic_store_explicit(&log_fd, fd, memory_order_relaxed);
}

/* ---- building a record ------------------------------------------------- */

static bool put_raw(es_logrec *r, const char *s, size_t n)
{
	if (n > BODY_MAX - r->len)
		return false;
	memcpy(r->buf + r->len, s, n);
	r->len += n;
	return true;
}

/*
 * Appends s[0..n) as a JSON string literal: quote, backslash and control
 * characters escaped, invalid UTF-8 bytes as U+FFFD. When the whole string
 * does not fit: with `shorten`, as many whole characters as fit are kept,
 * the literal is closed and the record marked truncated; without it,
 * nothing is appended. Returns false when nothing was appended.
 */
static bool put_json_str(es_logrec *r, const char *s, size_t n, bool shorten)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)s;
	size_t start = r->len;

	if (BODY_MAX - r->len < 2) /* room for "" at least */
		return false;
	r->buf[r->len++] = '"';
	for (size_t i = 0; i < n;) {
		unsigned char c = p[i];
		char esc[6];
		const char *unit = esc;
		size_t in = 1, out;

		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			out = 2;
		} else if (c == '\n' || c == '\r' || c == '\t') {
			esc[0] = '\\';
			esc[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
			out = 2;
		} else if (c < 0x20) {
			memcpy(esc, "\\u00", 4);
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			out = 6;
		} else if (c < 0x80) {
			unit = (const char *)p + i;
			out = 1;
		} else if ((in = es_utf8_len(p + i, n - i))) {
			unit = (const char *)p + i;
			out = in;
		} else {
			in = 1;
			unit = "\\ufffd";
			out = 6;
		}
		/* keep one byte for the closing quote */
		if (out + 1 > BODY_MAX - r->len) {
			if (!shorten) {
				r->len = start;
				return false;
			}
			r->truncated = true;
			break;
		}
		memcpy(r->buf + r->len, unit, out);
		r->len += out;
		i += in;
	}
	r->buf[r->len++] = '"';
	return true;
}

/* Appends `,"key":`; false (and the record truncated) when it does not fit
 * or the record is already truncated. */
static bool begin_field(es_logrec *r, const char *key, size_t *mark)
{
	if (!r || r->truncated)
		return false;
	*mark = r->len;
	if (!key)
		key = "";
	if (put_raw(r, ",", 1) && put_json_str(r, key, strlen(key), false) &&
	    put_raw(r, ":", 1))
		return true;
	r->len = *mark;
	r->truncated = true;
	return false;
}

/* Appends a field's literal value, or removes the whole field. */
static void put_value(es_logrec *r, size_t mark, const char *s, size_t n)
{
	if (!put_raw(r, s, n)) {
		r->len = mark;
		r->truncated = true;
	}
}

/*
 * Writes "2026-11-23T23:59:59.123456Z" (27 bytes, no NUL) for a realtime
 * clock reading. Each thread keeps the text of the last second it
 * formatted, so most records only format the microseconds.
 */
static size_t format_ts(char *out, uint64_t wall_ns)
{
	static _Thread_local time_t cached_sec = -1;
	/* "2026-11-23T23:59:59"; sized for any int the format could print */
	static _Thread_local char cached[64];
	time_t sec = (time_t)(wall_ns / 1000000000u);
	unsigned usec = (unsigned)(wall_ns % 1000000000u / 1000u);

	if (sec != cached_sec) {
		struct tm tm;
		gmtime_r(&sec, &tm);
		snprintf(cached, sizeof(cached), "%04d-%02d-%02dT%02d:%02d:%02d",
			 (tm.tm_year + 1900) % 10000, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
			 tm.tm_min, tm.tm_sec);
		cached_sec = sec;
	}
	memcpy(out, cached, 19);
	out[19] = '.';
	for (int i = 25; i >= 20; i--) {
		out[i] = (char)('0' + usec % 10);
		usec /= 10;
	}
	out[26] = 'Z';
	return 27;
}

bool es_log_begin(es_logrec *r, es_log_level level, const char *event)
{
	if ((int)level < atomic_load_explicit(&log_level, memory_order_relaxed) ||
	    level >= ES_LOG_OFF || (int)level < 0 || !r)
		return false;

	/* far below BODY_MAX: the header always fits */
	memcpy(r->buf, "{\"ts\":\"", 7);
	r->len = 7 + format_ts(r->buf + 7, es_wall_ns());
	r->len += (size_t)sprintf(r->buf + r->len, "\",\"level\":\"%s\",\"event\":",
				  level_names[level]);
	r->truncated = false;
	if (!event)
		event = "";
	put_json_str(r, event, strlen(event), true);
	return true;
}

void es_log_strn(es_logrec *r, const char *key, const char *value, size_t len)
{
	size_t mark;
	if (!begin_field(r, key, &mark))
		return;
	if (!value) {
		put_value(r, mark, "null", 4);
	} else if (!put_json_str(r, value, len, true)) {
		r->len = mark;
		r->truncated = true;
	}
}

void es_log_str(es_logrec *r, const char *key, const char *value)
{
	es_log_strn(r, key, value, value ? strlen(value) : 0);
}

void es_log_int(es_logrec *r, const char *key, int64_t value)
{
	size_t mark;
	char num[24];
	if (!begin_field(r, key, &mark))
		return;
	int n = snprintf(num, sizeof(num), "%lld", (long long)value);
	put_value(r, mark, num, (size_t)n);
}

void es_log_f64(es_logrec *r, const char *key, double value)
{
	size_t mark;
	char num[32];
	int n = 0;
	if (!begin_field(r, key, &mark))
		return;
	if (!isfinite(value)) {
		put_value(r, mark, "null", 4); /* JSON has no NaN or Infinity */
		return;
	}
	/* the shortest form that reads back as the same double */
	for (int prec = 15; prec <= 17; prec++) {
		n = snprintf(num, sizeof(num), "%.*g", prec, value);
		if (strtod(num, NULL) == value)
			break;
	}
	put_value(r, mark, num, (size_t)n);
}

void es_log_bool(es_logrec *r, const char *key, bool value)
{
	size_t mark;
	if (!begin_field(r, key, &mark))
		return;
	if (value)
		put_value(r, mark, "true", 4);
	else
		put_value(r, mark, "false", 5);
}

void es_log_end(es_logrec *r)
{
	if (!r)
		return;
	/* the tail room past BODY_MAX is reserved for exactly this */
	if (r->truncated) {
		memcpy(r->buf + r->len, truncated_tail, sizeof(truncated_tail) - 1);
		r->len += sizeof(truncated_tail) - 1;
	}
	r->buf[r->len++] = '}';
	r->buf[r->len++] = '\n';

	int fd = atomic_load_explicit(&log_fd, memory_order_relaxed);
	size_t off = 0;
	/* One write per record; the loop only finishes a short write or
	 * retries a signal-interrupted one. A log that cannot be written is
	 * dropped: logging never fails the caller. */
	while (off < r->len) {
		ssize_t w = write(fd, r->buf + off, r->len - off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		off += (size_t)w;
	}
}

void es_log_msg(es_log_level level, const char *event, const char *fmt, ...)
{
	es_logrec r;
	char msg[ES_LOGREC_MAX];
	va_list ap;

	if (!es_log_begin(&r, level, event))
		return;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	size_t len = (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1;
	es_log_strn(&r, "msg", msg, len);
	if (len < (size_t)n)
		r.truncated = true;
	es_log_end(&r);
}
