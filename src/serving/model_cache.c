/*
 * The compiled-model cache; see model_cache.h for what it promises.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "base/clock.h"
#include "base/status.h"
#include "obs/log.h"
#include "serving/model_cache.h"
#include "serving/vdir.h"

#define BLOB_SUFFIX ".escm"
#define TMP_PREFIX ".tmp-"

struct es_mcache {
	char *dir;
	bool readable;
	bool writable;
	atomic_uint seq; /* temporary file names */
	es_metric *f_hits, *f_misses, *f_invalid, *f_write_failures;
};

static void warn(const char *event, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void warn(const char *event, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	es_log_msg(ES_LOG_WARN, event, "%s", msg);
}

static void count(es_metric *f, const char *model)
{
	const char *labels[] = { model, NULL };
	if (f)
		es_counter_add(es_metric_get(f, labels), 1);
}

/* ".tmp-<pid>-<seq>.escm": removed when <pid> is not a live process. */
static void remove_stale_temps(es_mcache *c)
{
	DIR *d = opendir(c->dir);
	if (!d)
		return;
	for (struct dirent *e; (e = readdir(d));) {
		if (strncmp(e->d_name, TMP_PREFIX, strlen(TMP_PREFIX)))
			continue;
		char *end;
		long pid = strtol(e->d_name + strlen(TMP_PREFIX), &end, 10);
		if (pid > 0 && *end == '-' && pid != (long)getpid() &&
		    !(kill((pid_t)pid, 0) == -1 && errno == ESRCH))
			continue; /* a live server may still be writing it */
		if (unlinkat(dirfd(d), e->d_name, 0) == 0)
			es_log_msg(ES_LOG_INFO, "cache_cleanup",
				   "removed the unfinished cache file %s", e->d_name);
	}
	closedir(d);
}

es_mcache *es_mcache_open(const char *dir, es_metrics *metrics)
{
	es_mcache *c = calloc(1, sizeof(*c));
	if (!c || !(c->dir = strdup(dir))) {
		free(c);
		return NULL;
	}
	atomic_init(&c->seq, 0);
	static const char *const mo[] = { "model", NULL };
	if (metrics) {
		c->f_hits = es_metrics_counter(metrics, "edgeserve_model_cache_hits_total",
			"Model versions loaded from the compiled-model cache.", mo);
		c->f_misses = es_metrics_counter(metrics, "edgeserve_model_cache_misses_total",
			"Model versions compiled because the cache had no blob for them.", mo);
		c->f_invalid = es_metrics_counter(metrics, "edgeserve_model_cache_invalid_total",
			"Cache blobs found unusable (stale, truncated or corrupt) and rebuilt.", mo);
		c->f_write_failures = es_metrics_counter(metrics,
			"edgeserve_model_cache_write_failures_total",
			"Compiled forms that could not be written to the cache.", mo);
	}
	if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
		warn("cache_unavailable", "cache directory '%s' cannot be created (%s): loading without the compiled-model cache",
		     dir, strerror(errno));
		return c;
	}
	struct stat st;
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
		warn("cache_unavailable", "cache path '%s' is not a directory: loading without the compiled-model cache",
		     dir);
		return c;
	}
	c->readable = access(dir, R_OK | X_OK) == 0;
	c->writable = access(dir, W_OK | X_OK) == 0;
	if (!c->readable)
		warn("cache_unavailable", "cache directory '%s' is not readable: loading without the compiled-model cache",
		     dir);
	else if (!c->writable)
		warn("cache_readonly", "cache directory '%s' is not writable: cached blobs are read, new ones are not written",
		     dir);
	if (c->writable)
		remove_stale_temps(c);
	es_log_msg(ES_LOG_INFO, "cache_open", "compiled-model cache in '%s' (%s)", dir,
		   c->writable ? "read-write" : c->readable ? "read-only" : "disabled");
	return c;
}

void es_mcache_close(es_mcache *c)
{
	if (!c)
		return;
	free(c->dir);
	free(c);
}

/* The blob name: SHA-256 of everything the compiled form depends on. */
static int blob_path(const es_mcache *c, const uint8_t files[32],
		     const es_model_options *opts, char *out, size_t cap)
{
	static const char tag[] = "edgeserve compiled-model cache key 1";
	const char *ver = es_engine_version(), *cpu = es_engine_cpu_features();
	char optstr[64];
	uint8_t key[32];
	unsigned int klen = 0;
	snprintf(optstr, sizeof(optstr), "no_optimize=%d", opts && opts->no_optimize ? 1 : 0);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	if (!md)
		return ES_ENOMEM;
	int ok = EVP_DigestInit_ex(md, EVP_sha256(), NULL) &&
		 EVP_DigestUpdate(md, tag, sizeof(tag)) &&
		 EVP_DigestUpdate(md, files, 32) &&
		 EVP_DigestUpdate(md, ver, strlen(ver) + 1) &&
		 EVP_DigestUpdate(md, cpu, strlen(cpu) + 1) &&
		 EVP_DigestUpdate(md, optstr, strlen(optstr) + 1) &&
		 EVP_DigestFinal_ex(md, key, &klen);
	EVP_MD_CTX_free(md);
	if (!ok || klen != 32)
		return ES_EINTERNAL;
	char hex[65];
	es_hex(key, 32, hex);
	int n = snprintf(out, cap, "%s/%s%s", c->dir, hex, BLOB_SUFFIX);
	return n < 0 || (size_t)n >= cap ? ES_ERANGE : 0;
}

static const char *base_name(const char *path)
{
	const char *s = strrchr(path, '/');
	return s ? s + 1 : path;
}

int es_mcache_load(es_mcache *c, const char *model_name, int64_t version,
		   const char *version_dir, const es_model_options *opts,
		   es_model **out, es_mcache_ticket *t, es_error *err)
{
	memset(t, 0, sizeof(*t));
	char path[4096];
	if (snprintf(path, sizeof(path), "%s/model.onnx", version_dir) >= (int)sizeof(path))
		return es_error_set(err, ES_ERANGE, "model path too long");
	if (c && c->readable) {
		es_error herr = { 0 };
		uint64_t th = es_now_ns();
		if (es_vdir_sha256(version_dir, t->files_sha256, &herr) == 0) {
			t->hashed = true;
			es_log_msg(ES_LOG_DEBUG, "cache_hash", "model '%s' version %lld: files hashed in %.3f s",
				   model_name, (long long)version,
				   (double)(es_now_ns() - th) / 1e9);
		} else {
			warn("cache_skipped", "model '%s' version %lld: cannot hash the version's files (%s): loading without the cache",
			     model_name, (long long)version, herr.msg);
		}
	}
	if (t->hashed && blob_path(c, t->files_sha256, opts, t->blob, sizeof(t->blob)) == 0) {
		struct stat st;
		if (stat(t->blob, &st) == 0) {
			es_error lerr = { 0 };
			uint64_t t0 = es_now_ns();
			int rc = es_model_load_compiled(t->blob, opts, t->files_sha256, out, &lerr);
			if (rc == 0) {
				t->hit = true;
				t->compile_s = (double)(es_now_ns() - t0) / 1e9;
				count(c->f_hits, model_name);
				es_logrec r;
				if (es_log_begin(&r, ES_LOG_INFO, "cache_hit")) {
					es_log_str(&r, "model", model_name);
					es_log_int(&r, "version", version);
					es_log_str(&r, "blob", base_name(t->blob));
					es_log_f64(&r, "duration_s", t->compile_s);
					es_log_end(&r);
				}
				return 0;
			}
			t->invalid = true;
			count(c->f_invalid, model_name);
			warn("cache_invalid", "model '%s' version %lld: cache blob %s is unusable (%s): compiling again",
			     model_name, (long long)version, base_name(t->blob), lerr.msg);
			if (c->writable)
				unlink(t->blob);
		}
		count(c->f_misses, model_name);
		t->store = c->writable;
	}
	uint64_t t0 = es_now_ns();
	int rc = es_model_load(path, opts, out, err);
	t->compile_s = (double)(es_now_ns() - t0) / 1e9;
	return rc;
}

static int write_all_and_sync(int fd, const es_model *m, const uint8_t key[32],
			      es_error *err)
{
	int rc = es_model_save_compiled(m, fd, key, err);
	if (rc)
		return rc;
	if (fsync(fd) != 0)
		return es_error_set(err, ES_EIO, "fsync: %s", strerror(errno));
	return 0;
}

void es_mcache_store(es_mcache *c, const char *model_name, int64_t version,
		     const es_mcache_ticket *t, const es_model *m,
		     const es_model_options *opts)
{
	if (!c || !t->store || !t->blob[0])
		return;
	char tmp[4096 + 64];
	unsigned seq = atomic_fetch_add(&c->seq, 1);
	snprintf(tmp, sizeof(tmp), "%s/" TMP_PREFIX "%ld-%u" BLOB_SUFFIX, c->dir,
		 (long)getpid(), seq);
	uint64_t t0 = es_now_ns();
	es_logrec r;
	if (es_log_begin(&r, ES_LOG_INFO, "cache_write")) {
		es_log_str(&r, "model", model_name);
		es_log_int(&r, "version", version);
		es_log_str(&r, "phase", "start");
		es_log_str(&r, "blob", base_name(t->blob));
		es_log_str(&r, "temp", base_name(tmp));
		es_log_end(&r);
	}
	es_error err = { 0 };
	int rc = 0;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		rc = es_error_set(&err, ES_EIO, "cannot create a temporary file: %s", strerror(errno));
	} else {
		rc = write_all_and_sync(fd, m, t->files_sha256, &err);
		if (close(fd) != 0 && !rc)
			rc = es_error_set(&err, ES_EIO, "close: %s", strerror(errno));
		if (!rc && rename(tmp, t->blob) != 0)
			rc = es_error_set(&err, ES_EIO, "rename: %s", strerror(errno));
		if (rc)
			unlink(tmp);
	}
	if (!rc) {
		/* make the rename itself durable */
		int dfd = open(c->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd >= 0) {
			fsync(dfd);
			close(dfd);
		}
	}
	(void)opts;
	double secs = (double)(es_now_ns() - t0) / 1e9;
	if (rc) {
		count(c->f_write_failures, model_name);
		warn("cache_write_failed", "model '%s' version %lld: the compiled form was not cached: %s",
		     model_name, (long long)version, err.msg);
		return;
	}
	struct stat st;
	if (es_log_begin(&r, ES_LOG_INFO, "cache_write")) {
		es_log_str(&r, "model", model_name);
		es_log_int(&r, "version", version);
		es_log_str(&r, "phase", "end");
		es_log_str(&r, "blob", base_name(t->blob));
		if (stat(t->blob, &st) == 0)
			es_log_int(&r, "bytes", (int64_t)st.st_size);
		es_log_f64(&r, "duration_s", secs);
		es_log_end(&r);
	}
}
