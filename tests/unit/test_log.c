/* Unit tests of the JSON-lines log (src/obs/log.c), read back with cJSON. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "obs/log.h"

static char log_path[] = "/tmp/es_test_log_XXXXXX";
static int log_fd = -1;

static int setup_file(void **state)
{
	(void)state;
	int fd = mkstemp(log_path);
	if (fd < 0)
		return -1;
	close(fd);
	/* O_APPEND, as a log file would be opened */
	log_fd = open(log_path, O_WRONLY | O_APPEND);
	if (log_fd < 0)
		return -1;
	es_log_set_fd(log_fd);
	return 0;
}

static int remove_file(void **state)
{
	(void)state;
	es_log_set_fd(2);
	close(log_fd);
	unlink(log_path);
	return 0;
}

static int reset_file(void **state)
{
	(void)state;
	es_log_set_level(ES_LOG_INFO);
	return ftruncate(log_fd, 0);
}

/* Everything logged since the last reset (malloc'ed, NUL-terminated). */
static char *read_log(size_t *len)
{
	struct stat st;
	assert_int_equal(stat(log_path, &st), 0);
	char *text = malloc((size_t)st.st_size + 1);
	assert_non_null(text);
	FILE *f = fopen(log_path, "rb");
	assert_non_null(f);
	size_t n = fread(text, 1, (size_t)st.st_size, f);
	fclose(f);
	assert_int_equal(n, (size_t)st.st_size);
	text[n] = '\0';
	if (len)
		*len = n;
	return text;
}

/* Reads the one record logged since the last reset, checks it is a single
 * line within the record size, and parses it. */
static cJSON *read_one(char **raw)
{
	size_t len;
	char *text = read_log(&len);
	assert_true(len > 0);
	assert_true(len <= ES_LOGREC_MAX);
	assert_int_equal(text[len - 1], '\n');
	assert_ptr_equal(strchr(text, '\n'), text + len - 1);
	cJSON *j = cJSON_Parse(text);
	if (!j)
		fail_msg("not valid JSON: %s", text);
	assert_true(cJSON_IsObject(j));
	if (raw)
		*raw = text;
	else
		free(text);
	return j;
}

static const char *get_str(const cJSON *j, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
	if (!cJSON_IsString(v))
		fail_msg("field %s missing or not a string", key);
	return v->valuestring;
}

static bool is_truncated(const cJSON *j)
{
	return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "truncated"));
}

/* The log stamps records from CLOCK_REALTIME; time(2) may come from a
 * coarser clock that lags it near a second boundary, so compare against
 * the same clock. */
static time_t realtime_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec;
}

static void test_record_fields(void **state)
{
	(void)state;
	es_logrec r;
	time_t before = realtime_s();
	assert_true(es_log_begin(&r, ES_LOG_INFO, "request"));
	es_log_str(&r, "model", "mlp");
	es_log_int(&r, "status", 200);
	es_log_f64(&r, "total_s", 0.0012);
	es_log_bool(&r, "ok", true);
	es_log_bool(&r, "cached", false);
	es_log_strn(&r, "id", "abcdef", 3);
	es_log_end(&r);

	char *raw;
	cJSON *j = read_one(&raw);
	/* ts, level and event first, then the fields in order */
	assert_memory_equal(raw, "{\"ts\":\"", 7);
	const char *order[] = { "\"level\":\"INFO\"", "\"event\":\"request\"", "\"model\":\"mlp\"",
				"\"status\":200", "\"total_s\":0.0012", "\"ok\":true",
				"\"cached\":false", "\"id\":\"abc\"}" };
	const char *prev = raw;
	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		const char *p = strstr(raw, order[i]);
		if (!p || p < prev)
			fail_msg("%s missing or out of order in %s", order[i], raw);
		prev = p;
	}
	assert_null(strstr(raw, "truncated"));

	/* RFC 3339 UTC with microseconds: 2026-11-23T23:59:59.123456Z */
	const char *ts = get_str(j, "ts");
	assert_int_equal(strlen(ts), 27);
	const char *shape = "dddd-dd-ddTdd:dd:dd.ddddddZ";
	for (size_t i = 0; i < 27; i++) {
		if (shape[i] == 'd')
			assert_true(ts[i] >= '0' && ts[i] <= '9');
		else
			assert_int_equal(ts[i], shape[i]);
	}
	struct tm now;
	time_t after = realtime_s();
	int y, mo, d, h, mi, sec;
	assert_int_equal(sscanf(ts, "%d-%d-%dT%d:%d:%d", &y, &mo, &d, &h, &mi, &sec), 6);
	/* UTC: the same calendar second as gmtime at the start or the end */
	bool match = false;
	for (time_t t = before; t <= after; t++) {
		gmtime_r(&t, &now);
		match |= now.tm_year + 1900 == y && now.tm_mon + 1 == mo && now.tm_mday == d &&
			 now.tm_hour == h && now.tm_min == mi && now.tm_sec == sec;
	}
	assert_true(match);

	assert_string_equal(get_str(j, "level"), "INFO");
	assert_string_equal(get_str(j, "event"), "request");
	assert_int_equal(cJSON_GetObjectItem(j, "status")->valueint, 200);
	assert_true(cJSON_GetObjectItem(j, "total_s")->valuedouble == 0.0012);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "ok")));
	assert_true(cJSON_IsFalse(cJSON_GetObjectItem(j, "cached")));
	cJSON_Delete(j);
	free(raw);
}

static void test_levels(void **state)
{
	(void)state;
	es_logrec r;
	static const struct {
		es_log_level level;
		const char *name;
	} names[] = {
		{ ES_LOG_DEBUG, "DEBUG" },
		{ ES_LOG_INFO, "INFO" },
		{ ES_LOG_WARN, "WARNING" },
		{ ES_LOG_ERROR, "ERROR" },
	};
	es_log_set_level(ES_LOG_DEBUG);
	assert_int_equal(es_log_get_level(), ES_LOG_DEBUG);
	for (size_t i = 0; i < 4; i++) {
		assert_int_equal(ftruncate(log_fd, 0), 0);
		assert_true(es_log_begin(&r, names[i].level, "e"));
		es_log_end(&r);
		cJSON *j = read_one(NULL);
		assert_string_equal(get_str(j, "level"), names[i].name);
		cJSON_Delete(j);
	}

	/* below the level: begin says no and nothing is written */
	assert_int_equal(ftruncate(log_fd, 0), 0);
	es_log_set_level(ES_LOG_WARN);
	assert_int_equal(es_log_get_level(), ES_LOG_WARN);
	assert_false(es_log_begin(&r, ES_LOG_DEBUG, "e"));
	assert_false(es_log_begin(&r, ES_LOG_INFO, "e"));
	es_log_msg(ES_LOG_INFO, "e", "filtered %d", 1);
	size_t len;
	free(read_log(&len));
	assert_int_equal(len, 0);
	assert_true(es_log_begin(&r, ES_LOG_WARN, "e"));
	assert_true(es_log_begin(&r, ES_LOG_ERROR, "e"));

	es_log_set_level(ES_LOG_OFF);
	assert_false(es_log_begin(&r, ES_LOG_ERROR, "e"));
	es_log_set_level(ES_LOG_DEBUG);
	/* OFF is a threshold, not a level to log at */
	assert_false(es_log_begin(&r, ES_LOG_OFF, "e"));
	assert_false(es_log_begin(&r, (es_log_level)17, "e"));
	assert_false(es_log_begin(NULL, ES_LOG_ERROR, "e"));
}

static void test_parse_level(void **state)
{
	(void)state;
	static const struct {
		const char *name;
		es_log_level level;
	} ok[] = {
		{ "DEBUG", ES_LOG_DEBUG }, { "debug", ES_LOG_DEBUG }, { "INFO", ES_LOG_INFO },
		{ "Info", ES_LOG_INFO },   { "WARNING", ES_LOG_WARN }, { "warn", ES_LOG_WARN },
		{ "ERROR", ES_LOG_ERROR }, { "error", ES_LOG_ERROR }, { "OFF", ES_LOG_OFF },
		{ "off", ES_LOG_OFF },
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		es_log_level l = (es_log_level)99;
		assert_int_equal(es_log_parse_level(ok[i].name, &l), 0);
		assert_int_equal(l, ok[i].level);
	}
	const char *bad[] = { "", "verbose", "TRACE", "INFO ", "warnings", "3" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		es_log_level l = ES_LOG_ERROR;
		assert_int_equal(es_log_parse_level(bad[i], &l), -1);
		assert_int_equal(l, ES_LOG_ERROR); /* untouched */
	}
	es_log_level l;
	assert_int_equal(es_log_parse_level(NULL, &l), -1);
}

static void test_escaping(void **state)
{
	(void)state;
	es_logrec r;
	assert_true(es_log_begin(&r, ES_LOG_INFO, "ev\"ent\n"));
	es_log_str(&r, "ctrl", "q\" b\\ n\n r\r t\t x\x01 y\x1f del\x7f");
	es_log_str(&r, "utf8", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
	es_log_str(&r, "bad", "a\xff" "b\xc3(" "c\xed\xa0\x80" "d\xc0\xaf" "e\xf4\x90\x80\x80" "f\xe2\x82");
	es_log_str(&r, "k\"e\\y\x02", "v");
	es_log_strn(&r, "nul", "a\0b", 3);
	es_log_str(&r, "none", NULL);
	es_log_str(&r, NULL, "no key");
	es_log_end(&r);

	char *raw;
	cJSON *j = read_one(&raw);
	assert_string_equal(get_str(j, "event"), "ev\"ent\n");
	assert_string_equal(get_str(j, "ctrl"), "q\" b\\ n\n r\r t\t x\x01 y\x1f del\x7f");
	assert_string_equal(get_str(j, "utf8"), "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
	/* every invalid byte is one U+FFFD: stray, truncated, surrogate,
	 * overlong, beyond U+10FFFF */
#define FFFD "\xef\xbf\xbd"
	assert_string_equal(get_str(j, "bad"),
			    "a" FFFD "b" FFFD "(c" FFFD FFFD FFFD "d" FFFD FFFD
			    "e" FFFD FFFD FFFD FFFD "f" FFFD FFFD);
#undef FFFD
	assert_string_equal(get_str(j, "k\"e\\y\x02"), "v");
	assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "none")));
	assert_string_equal(get_str(j, ""), "no key");
	/* control characters leave as escapes, never raw */
	assert_non_null(strstr(raw, "\\u0001"));
	assert_non_null(strstr(raw, "\"nul\":\"a\\u0000b\""));
	for (const char *p = raw; *p != '\n'; p++)
		assert_true((unsigned char)*p >= 0x20);
	cJSON_Delete(j);
	free(raw);
}

static void test_numbers(void **state)
{
	(void)state;
	es_logrec r;
	assert_true(es_log_begin(&r, ES_LOG_INFO, "n"));
	es_log_int(&r, "min", INT64_MIN);
	es_log_int(&r, "max", INT64_MAX);
	es_log_int(&r, "zero", 0);
	es_log_f64(&r, "nan", NAN);
	es_log_f64(&r, "inf", INFINITY);
	es_log_f64(&r, "ninf", -INFINITY);
	es_log_f64(&r, "tenth", 0.1);
	es_log_f64(&r, "third", 1.0 / 3);
	es_log_f64(&r, "huge", 1e300);
	es_log_f64(&r, "tiny", 5e-324);
	es_log_f64(&r, "int", 42);
	es_log_end(&r);

	char *raw;
	cJSON *j = read_one(&raw);
	assert_non_null(strstr(raw, "\"min\":-9223372036854775808,"));
	assert_non_null(strstr(raw, "\"max\":9223372036854775807,"));
	assert_non_null(strstr(raw, "\"zero\":0,"));
	assert_non_null(strstr(raw, "\"int\":42}"));
	assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "nan")));
	assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "inf")));
	assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "ninf")));
	assert_non_null(strstr(raw, "\"tenth\":0.1,"));
	assert_true(cJSON_GetObjectItem(j, "third")->valuedouble == 1.0 / 3);
	assert_true(cJSON_GetObjectItem(j, "huge")->valuedouble == 1e300);
	assert_true(cJSON_GetObjectItem(j, "tiny")->valuedouble == 5e-324);
	cJSON_Delete(j);
	free(raw);
}

/* A long string value is shortened on a character boundary, closed, and
 * the fields after it are dropped. */
static void check_long_value(const char *unit, const char *escaped_unit)
{
	size_t ulen = strlen(unit);
	size_t n = 3 * ES_LOGREC_MAX / ulen;
	char *value = malloc(n * ulen + 1);
	for (size_t i = 0; i < n; i++)
		memcpy(value + i * ulen, unit, ulen);
	value[n * ulen] = '\0';

	assert_int_equal(ftruncate(log_fd, 0), 0);
	es_logrec r;
	assert_true(es_log_begin(&r, ES_LOG_ERROR, "long"));
	es_log_str(&r, "before", "kept");
	es_log_str(&r, "value", value);
	es_log_int(&r, "after", 1);
	es_log_end(&r);

	char *raw;
	cJSON *j = read_one(&raw);
	assert_true(is_truncated(j));
	assert_string_equal(get_str(j, "before"), "kept");
	const char *got = get_str(j, "value");
	size_t got_len = strlen(got);
	assert_true(got_len > 0);
	assert_true(got_len % ulen == 0); /* whole characters only */
	assert_memory_equal(got, value, got_len);
	assert_null(cJSON_GetObjectItem(j, "after"));
	/* the record used the space it had */
	assert_true(strlen(raw) > ES_LOGREC_MAX - 32);
	assert_non_null(strstr(raw, escaped_unit));
	cJSON_Delete(j);
	free(raw);
	free(value);
}

static void test_truncated_value(void **state)
{
	(void)state;
	check_long_value("x", "xxx");
	check_long_value("\x01", "\\u0001");           /* 6-byte escapes */
	check_long_value("\"", "\\\"");                /* 2-byte escapes */
	check_long_value("\xe2\x82\xac", "\xe2\x82\xac"); /* 3-byte UTF-8 */
}

static void test_truncated_fields(void **state)
{
	(void)state;
	es_logrec r;
	assert_true(es_log_begin(&r, ES_LOG_INFO, "many"));
	char key[32];
	for (int i = 0; i < 1000; i++) {
		snprintf(key, sizeof(key), "field_%d", i);
		es_log_int(&r, key, i);
	}
	es_log_end(&r);
	cJSON *j = read_one(NULL);
	assert_true(is_truncated(j));
	/* an exact prefix of the fields asked for */
	int present = 0;
	while (present < 1000) {
		snprintf(key, sizeof(key), "field_%d", present);
		const cJSON *v = cJSON_GetObjectItem(j, key);
		if (!v)
			break;
		assert_int_equal(v->valueint, present);
		present++;
	}
	assert_true(present > 100 && present < 1000);
	for (int i = present; i < 1000; i++) {
		snprintf(key, sizeof(key), "field_%d", i);
		assert_null(cJSON_GetObjectItem(j, key));
	}
	cJSON_Delete(j);

	/* a key that cannot fit drops its field; a later small one stays out */
	assert_int_equal(ftruncate(log_fd, 0), 0);
	char *long_key = malloc(2 * ES_LOGREC_MAX);
	memset(long_key, 'k', 2 * ES_LOGREC_MAX - 1);
	long_key[2 * ES_LOGREC_MAX - 1] = '\0';
	assert_true(es_log_begin(&r, ES_LOG_INFO, "key"));
	es_log_int(&r, long_key, 1);
	es_log_bool(&r, "small", true);
	es_log_f64(&r, "f", 1.5);
	es_log_str(&r, "s", "x");
	es_log_end(&r);
	j = read_one(NULL);
	assert_true(is_truncated(j));
	assert_null(cJSON_GetObjectItem(j, "small"));
	assert_null(cJSON_GetObjectItem(j, "s"));
	assert_string_equal(get_str(j, "event"), "key");
	cJSON_Delete(j);

	/* so does an event name that long */
	assert_int_equal(ftruncate(log_fd, 0), 0);
	assert_true(es_log_begin(&r, ES_LOG_INFO, long_key));
	es_log_int(&r, "n", 1);
	es_log_end(&r);
	j = read_one(NULL);
	assert_true(is_truncated(j));
	assert_memory_equal(get_str(j, "event"), long_key, 1000);
	assert_null(cJSON_GetObjectItem(j, "n"));
	cJSON_Delete(j);
	free(long_key);
}

static void test_log_msg(void **state)
{
	(void)state;
	es_log_msg(ES_LOG_WARN, "startup", "listening on %s:%d", "127.0.0.1", 8000);
	cJSON *j = read_one(NULL);
	assert_string_equal(get_str(j, "level"), "WARNING");
	assert_string_equal(get_str(j, "event"), "startup");
	assert_string_equal(get_str(j, "msg"), "listening on 127.0.0.1:8000");
	assert_false(is_truncated(j));
	cJSON_Delete(j);

	assert_int_equal(ftruncate(log_fd, 0), 0);
	es_log_msg(ES_LOG_ERROR, "big", "%0*d", 3 * ES_LOGREC_MAX, 7);
	j = read_one(NULL);
	assert_true(is_truncated(j));
	assert_true(strlen(get_str(j, "msg")) > ES_LOGREC_MAX / 2);
	cJSON_Delete(j);
}

enum { THREADS = 4, RECORDS = 2000 };

static void *writer_main(void *arg)
{
	int id = (int)(intptr_t)arg;
	char text[301];
	memset(text, 'a' + id, 300);
	text[300] = '\0';
	for (int i = 0; i < RECORDS; i++) {
		es_logrec r;
		if (!es_log_begin(&r, ES_LOG_INFO, "concurrent"))
			continue;
		es_log_int(&r, "thread", id);
		es_log_int(&r, "i", i);
		es_log_str(&r, "text", text);
		es_log_end(&r);
	}
	return NULL;
}

static void test_concurrent_lines(void **state)
{
	(void)state;
	pthread_t t[THREADS];
	for (int i = 0; i < THREADS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, writer_main, (void *)(intptr_t)i), 0);
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);

	char *text = read_log(NULL);
	int lines = 0, per_thread[THREADS] = { 0 };
	char *save = NULL;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		cJSON *j = cJSON_Parse(line);
		if (!j)
			fail_msg("line %d is not JSON: %.80s", lines, line);
		int id = cJSON_GetObjectItem(j, "thread")->valueint;
		assert_true(id >= 0 && id < THREADS);
		assert_int_equal(cJSON_GetObjectItem(j, "i")->valueint, per_thread[id]);
		assert_int_equal(strlen(get_str(j, "text")), 300);
		assert_int_equal(get_str(j, "text")[0], 'a' + id);
		per_thread[id]++;
		lines++;
		cJSON_Delete(j);
	}
	assert_int_equal(lines, THREADS * RECORDS);
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_record_fields, reset_file),
		cmocka_unit_test_setup(test_levels, reset_file),
		cmocka_unit_test_setup(test_parse_level, reset_file),
		cmocka_unit_test_setup(test_escaping, reset_file),
		cmocka_unit_test_setup(test_numbers, reset_file),
		cmocka_unit_test_setup(test_truncated_value, reset_file),
		cmocka_unit_test_setup(test_truncated_fields, reset_file),
		cmocka_unit_test_setup(test_log_msg, reset_file),
		cmocka_unit_test_setup(test_concurrent_lines, reset_file),
	};
	return cmocka_run_group_tests(tests, setup_file, remove_file);
}
