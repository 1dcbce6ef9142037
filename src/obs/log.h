/*
 * Structured logging: one JSON object per line on stderr (or a file).
 *
 *   es_logrec r;
 *   if (es_log_begin(&r, ES_LOG_INFO, "request")) {
 *           es_log_str(&r, "model", name);
 *           es_log_int(&r, "status", 200);
 *           es_log_f64(&r, "total_s", 0.0012);
 *           es_log_end(&r);
 *   }
 *
 * Each line has "ts" (RFC 3339 UTC with microseconds), "level" and "event"
 * first, then the fields in order. A record is written with a single
 * write(2), so lines from different threads never interleave. Records
 * below the current level cost one comparison (es_log_begin returns false).
 */
#ifndef ES_OBS_LOG_H
#define ES_OBS_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum es_log_level {
	ES_LOG_DEBUG = 0,
	ES_LOG_INFO = 1,
	ES_LOG_WARN = 2,
	ES_LOG_ERROR = 3,
	ES_LOG_OFF = 4,
} es_log_level;

#define ES_LOGREC_MAX 4096

typedef struct es_logrec {
	char buf[ES_LOGREC_MAX];
	size_t len;
	bool truncated;
} es_logrec;

void es_log_set_level(es_log_level level);
es_log_level es_log_get_level(void);
/* "DEBUG"/"INFO"/"WARNING"/"ERROR"/"OFF" (case-insensitive; "WARN" too).
 * Returns 0, or -1 for an unknown name. */
int es_log_parse_level(const char *name, es_log_level *out);
/* Lines go to fd (default 2). */
void es_log_set_fd(int fd);

bool es_log_begin(es_logrec *r, es_log_level level, const char *event);
void es_log_str(es_logrec *r, const char *key, const char *value);
void es_log_strn(es_logrec *r, const char *key, const char *value, size_t len);
void es_log_int(es_logrec *r, const char *key, int64_t value);
void es_log_f64(es_logrec *r, const char *key, double value);
void es_log_bool(es_logrec *r, const char *key, bool value);
void es_log_end(es_logrec *r);

/* One-liner for a message: {"ts":..,"level":..,"event":event,"msg":...}. */
void es_log_msg(es_log_level level, const char *event, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
