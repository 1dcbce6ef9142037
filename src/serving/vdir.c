/* Version directory hash and settle fingerprint. */
#include "serving/vdir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "base/status.h"

#define READ_CHUNK ((size_t)1 << 20)

/* One thing found under the directory. */
typedef struct entry {
	char *rel;      /* relative path, '/' separated */
	struct stat st; /* the target's for followed links, else lstat's */
	char *link;     /* fingerprint: a link's target text, else NULL */
} entry;

typedef struct walk {
	const char *root;
	char *root_real;  /* realpath(root): links must resolve inside it */
	bool follow;      /* sha256: follow links, keep only regular files */
	entry *v;
	size_t n, cap;
	size_t seen;      /* entries met, for the count limit */
	/* directories on the current path, to refuse link loops */
	dev_t anc_dev[ES_VDIR_MAX_DEPTH + 1];
	ino_t anc_ino[ES_VDIR_MAX_DEPTH + 1];
	es_error *err;
} walk;

/* Returns a malloc'ed "a/b" (or b when a is empty), NULL when out of memory. */
static char *join(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	char *p = malloc(la + lb + 2);
	if (!p)
		return NULL;
	size_t at = 0;
	if (la) {
		memcpy(p, a, la);
		p[la] = '/';
		at = la + 1;
	}
	memcpy(p + at, b, lb + 1);
	return p;
}

static const char *shown(const char *rel)
{
	return *rel ? rel : ".";
}

static void free_entries(walk *w)
{
	for (size_t i = 0; i < w->n; i++) {
		free(w->v[i].rel);
		free(w->v[i].link);
	}
	free(w->v);
	w->v = NULL;
	w->n = w->cap = 0;
}

/* Takes ownership of rel and link (also on failure). */
static int push(walk *w, char *rel, const struct stat *st, char *link)
{
	if (w->n == w->cap) {
		size_t cap = w->cap ? w->cap * 2 : 64;
		entry *v = realloc(w->v, cap * sizeof(*v));
		if (!v) {
			free(rel);
			free(link);
			return es_error_set(w->err, ES_ENOMEM, "out of memory listing the version directory");
		}
		w->v = v;
		w->cap = cap;
	}
	w->v[w->n].rel = rel;
	w->v[w->n].st = *st;
	w->v[w->n].link = link;
	w->n++;
	return 0;
}

static bool inside_root(const walk *w, const char *real)
{
	size_t n = strlen(w->root_real);
	if (strncmp(real, w->root_real, n))
		return false;
	/* root "/" itself: everything is inside */
	if (n == 1 && w->root_real[0] == '/')
		return true;
	return real[n] == '\0' || real[n] == '/';
}

/* Reads a link's target text (fingerprint only): malloc'ed, NUL-terminated. */
static int read_link(walk *w, const char *full, const char *rel, char **out)
{
	char buf[PATH_MAX];
	ssize_t n = readlink(full, buf, sizeof(buf) - 1);
	if (n < 0)
		return es_error_set(w->err, ES_EIO, "cannot read link '%s': %s", rel,
				    strerror(errno));
	buf[n] = '\0';
	*out = strdup(buf);
	if (!*out)
		return es_error_set(w->err, ES_ENOMEM, "out of memory");
	return 0;
}

/* For sha256: decides what a link stands for. *st receives the target's
 * stat; errors for links that escape or dangle. */
static int resolve_link(walk *w, const char *full, const char *rel, struct stat *st)
{
	char *real = realpath(full, NULL);
	if (!real)
		return es_error_set(w->err, ES_EIO, "cannot resolve link '%s': %s", rel,
				    strerror(errno));
	bool ok = inside_root(w, real);
	free(real);
	if (!ok)
		return es_error_set(w->err, ES_EINVAL,
			"link '%s' points outside the version directory", rel);
	if (stat(full, st) != 0)
		return es_error_set(w->err, ES_EIO, "cannot resolve link '%s': %s", rel,
				    strerror(errno));
	return 0;
}

static int walk_dir(walk *w, const char *rel, int depth);

/* One directory entry `name` of directory rel (full path dir_full). */
static int visit(walk *w, const char *dir_full, const char *rel, const char *name,
		 int depth)
{
	int rc;
	char *child_rel = join(rel, name);
	char *child_full = join(dir_full, name);
	char *link = NULL;
	struct stat st;
	if (!child_rel || !child_full) {
		rc = es_error_set(w->err, ES_ENOMEM, "out of memory");
		goto out_free;
	}
	if (++w->seen > ES_VDIR_MAX_FILES) {
		rc = es_error_set(w->err, ES_ETOOLARGE,
			"the version directory holds more than %d files", ES_VDIR_MAX_FILES);
		goto out_free;
	}
	if (lstat(child_full, &st) != 0) {
		rc = es_error_set(w->err, ES_EIO, "cannot stat '%s': %s", child_rel,
				  strerror(errno));
		goto out_free;
	}
	if (S_ISLNK(st.st_mode)) {
		rc = w->follow ? resolve_link(w, child_full, child_rel, &st)
			       : read_link(w, child_full, child_rel, &link);
		if (rc)
			goto out_free;
	}
	if (S_ISDIR(st.st_mode)) {
		if (depth + 1 > ES_VDIR_MAX_DEPTH) {
			rc = es_error_set(w->err, ES_ETOOLARGE,
				"'%s' is nested deeper than %d directories", child_rel,
				ES_VDIR_MAX_DEPTH);
			goto out_free;
		}
		for (int i = 0; i <= depth; i++)
			if (w->anc_dev[i] == st.st_dev && w->anc_ino[i] == st.st_ino) {
				rc = es_error_set(w->err, ES_EINVAL,
					"link '%s' makes a loop: it leads back to a directory above it",
					child_rel);
				goto out_free;
			}
		w->anc_dev[depth + 1] = st.st_dev;
		w->anc_ino[depth + 1] = st.st_ino;
		if (!w->follow) {
			char *copy = strdup(child_rel);
			if (!copy) {
				rc = es_error_set(w->err, ES_ENOMEM, "out of memory");
				goto out_free;
			}
			if ((rc = push(w, copy, &st, NULL)))
				goto out_free;
		}
		rc = walk_dir(w, child_rel, depth + 1);
		goto out_free;
	}
	if (w->follow && !S_ISREG(st.st_mode)) {
		rc = 0; /* fifos, sockets, devices hold no content to hash */
		goto out_free;
	}
	rc = push(w, child_rel, &st, link);
	child_rel = NULL;
	link = NULL;
out_free:
	free(link);
	free(child_full);
	free(child_rel);
	return rc;
}

static int walk_dir(walk *w, const char *rel, int depth)
{
	int rc = 0;
	char *full = *rel ? join(w->root, rel) : strdup(w->root);
	if (!full)
		return es_error_set(w->err, ES_ENOMEM, "out of memory");
	DIR *d = opendir(full);
	if (!d) {
		rc = es_error_set(w->err, ES_EIO, "cannot read directory '%s': %s",
				  shown(rel), strerror(errno));
		goto out_free_full;
	}
	for (;;) {
		errno = 0;
		struct dirent *de = readdir(d);
		if (!de) {
			if (errno)
				rc = es_error_set(w->err, ES_EIO, "cannot read directory '%s': %s",
						  shown(rel), strerror(errno));
			break;
		}
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if ((rc = visit(w, full, rel, de->d_name, depth)))
			break;
	}
	closedir(d);
out_free_full:
	free(full);
	return rc;
}

static int cmp_entry(const void *a, const void *b)
{
	/* strcmp compares as unsigned char: byte order */
	return strcmp(((const entry *)a)->rel, ((const entry *)b)->rel);
}

/* Lists dir into w (sorted by relative path). */
static int list_dir(walk *w, const char *dir, bool follow, struct stat *root_st,
		    es_error *err)
{
	memset(w, 0, sizeof(*w));
	w->root = dir;
	w->follow = follow;
	w->err = err;
	if (!dir || !*dir)
		return es_error_set(err, ES_EINVAL, "no version directory given");
	if (stat(dir, root_st) != 0)
		return es_error_set(err, ES_EIO, "cannot open the version directory: %s",
				    strerror(errno));
	if (!S_ISDIR(root_st->st_mode))
		return es_error_set(err, ES_EIO, "the version directory is not a directory");
	w->root_real = realpath(dir, NULL);
	if (!w->root_real)
		return es_error_set(err, ES_EIO, "cannot resolve the version directory: %s",
				    strerror(errno));
	w->anc_dev[0] = root_st->st_dev;
	w->anc_ino[0] = root_st->st_ino;
	int rc = walk_dir(w, "", 0);
	if (rc) {
		free_entries(w);
		free(w->root_real);
		w->root_real = NULL;
		return rc;
	}
	if (w->n > 1)
		qsort(w->v, w->n, sizeof(*w->v), cmp_entry);
	return 0;
}

static void put_u64le(uint8_t out[8], uint64_t x)
{
	for (int i = 0; i < 8; i++)
		out[i] = (uint8_t)(x >> (8 * i));
}

static int digest_fail(es_error *err)
{
	return es_error_set(err, ES_EINTERNAL, "SHA-256 (libcrypto) failed");
}

/* Feeds one file: path, NUL, size, bytes. The size is the one fstat gives
 * for the opened file; a file that grows or shrinks while it is read fails
 * rather than producing a hash of no consistent state. */
static int hash_file(walk *w, EVP_MD_CTX *ctx, const entry *e, uint8_t *buf)
{
	int rc = 0;
	char *full = join(w->root, e->rel);
	if (!full)
		return es_error_set(w->err, ES_ENOMEM, "out of memory");
	int fd = open(full, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = es_error_set(w->err, ES_EIO, "cannot open '%s': %s", e->rel,
				  strerror(errno));
		goto out_free_full;
	}
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		rc = es_error_set(w->err, ES_EIO, "'%s' is no longer a regular file", e->rel);
		goto out_close;
	}
	(void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	uint64_t size = (uint64_t)st.st_size;
	uint8_t size_le[8];
	put_u64le(size_le, size);
	if (!EVP_DigestUpdate(ctx, e->rel, strlen(e->rel) + 1) ||
	    !EVP_DigestUpdate(ctx, size_le, sizeof(size_le))) {
		rc = digest_fail(w->err);
		goto out_close;
	}
	uint64_t done = 0;
	for (;;) {
		/* one byte more than expected at the end detects growth */
		size_t want = READ_CHUNK;
		if (size - done < want)
			want = (size_t)(size - done) + 1;
		ssize_t r = read(fd, buf, want);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = es_error_set(w->err, ES_EIO, "cannot read '%s': %s", e->rel,
					  strerror(errno));
			goto out_close;
		}
		if (r == 0)
			break;
		if ((uint64_t)r > size - done) {
			rc = es_error_set(w->err, ES_EIO,
				"'%s' grew while it was being hashed", e->rel);
			goto out_close;
		}
		if (!EVP_DigestUpdate(ctx, buf, (size_t)r)) {
			rc = digest_fail(w->err);
			goto out_close;
		}
		done += (uint64_t)r;
	}
	if (done != size)
		rc = es_error_set(w->err, ES_EIO,
			"'%s' shrank while it was being hashed (%llu of %llu bytes)",
			e->rel, (unsigned long long)done, (unsigned long long)size);
out_close:
	close(fd);
out_free_full:
	free(full);
	return rc;
}

int es_vdir_sha256(const char *dir, uint8_t out[32], es_error *err)
{
	walk w;
	struct stat root_st;
	int rc = list_dir(&w, dir, true, &root_st, err);
	if (rc)
		return rc;
	uint8_t *buf = malloc(READ_CHUNK);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	if (!buf || !ctx) {
		rc = es_error_set(err, ES_ENOMEM, "out of memory");
		goto out_free;
	}
	if (!EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
		rc = digest_fail(err);
		goto out_free;
	}
	for (size_t i = 0; i < w.n; i++)
		if ((rc = hash_file(&w, ctx, &w.v[i], buf)))
			goto out_free;
	unsigned int len = 0;
	if (!EVP_DigestFinal_ex(ctx, out, &len) || len != 32)
		rc = digest_fail(err);
out_free:
	EVP_MD_CTX_free(ctx);
	free(buf);
	free_entries(&w);
	free(w.root_real);
	return rc;
}

static uint64_t mtime_ns(const struct stat *st)
{
	return (uint64_t)st->st_mtim.tv_sec * 1000000000ull + (uint64_t)st->st_mtim.tv_nsec;
}

static char type_char(mode_t m)
{
	if (S_ISREG(m))
		return 'f';
	if (S_ISDIR(m))
		return 'd';
	if (S_ISLNK(m))
		return 'l';
	return 'o';
}

/* type, path, NUL, size, mtime, and for links the target text and a NUL */
static int feed_entry(EVP_MD_CTX *ctx, const char *rel, const struct stat *st,
		      const char *link)
{
	uint8_t num[16];
	char type = type_char(st->st_mode);
	put_u64le(num, (uint64_t)st->st_size);
	put_u64le(num + 8, mtime_ns(st));
	if (!EVP_DigestUpdate(ctx, &type, 1) ||
	    !EVP_DigestUpdate(ctx, rel, strlen(rel) + 1) ||
	    !EVP_DigestUpdate(ctx, num, sizeof(num)))
		return -1;
	if (link && !EVP_DigestUpdate(ctx, link, strlen(link) + 1))
		return -1;
	return 0;
}

int es_vdir_fingerprint(const char *dir, uint64_t *fp, uint64_t *newest_mtime_ns,
			es_error *err)
{
	walk w;
	struct stat root_st;
	int rc = list_dir(&w, dir, false, &root_st, err);
	if (rc)
		return rc;
	uint64_t newest = mtime_ns(&root_st);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	if (!ctx) {
		rc = es_error_set(err, ES_ENOMEM, "out of memory");
		goto out_free;
	}
	if (!EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) ||
	    feed_entry(ctx, ".", &root_st, NULL)) {
		rc = digest_fail(err);
		goto out_free;
	}
	for (size_t i = 0; i < w.n; i++) {
		if (feed_entry(ctx, w.v[i].rel, &w.v[i].st, w.v[i].link)) {
			rc = digest_fail(err);
			goto out_free;
		}
		if (mtime_ns(&w.v[i].st) > newest)
			newest = mtime_ns(&w.v[i].st);
	}
	uint8_t md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	if (!EVP_DigestFinal_ex(ctx, md, &len) || len < 8) {
		rc = digest_fail(err);
		goto out_free;
	}
	uint64_t h = 0;
	for (int i = 0; i < 8; i++)
		h |= (uint64_t)md[i] << (8 * i);
	*fp = h;
	if (newest_mtime_ns)
		*newest_mtime_ns = newest;
out_free:
	EVP_MD_CTX_free(ctx);
	free_entries(&w);
	free(w.root_real);
	return rc;
}

void es_hex(const uint8_t *bytes, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[bytes[i] >> 4];
		out[2 * i + 1] = digits[bytes[i] & 15];
	}
	out[2 * n] = '\0';
}
