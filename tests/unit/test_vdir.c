/* Version directory hash and fingerprint (src/serving/vdir.c). */
#define _GNU_SOURCE /* nftw, mkdtemp */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "serving/vdir.h"

/* ---- files ------------------------------------------------------------------------ */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void rm_rf(const char *path)
{
	nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void path_of(char *out, const char *dir, const char *rel)
{
	int n = snprintf(out, PATH_MAX, "%s/%s", dir, rel);
	assert_true(n > 0 && n < PATH_MAX);
}

/* Writes dir/rel, creating the directories on the way. */
static void put(const char *dir, const char *rel, const void *data, size_t len)
{
	char path[PATH_MAX];
	path_of(path, dir, rel);
	for (char *p = path + strlen(dir) + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		assert_true(mkdir(path, 0755) == 0 || errno == EEXIST);
		*p = '/';
	}
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static void new_dir(char out[PATH_MAX])
{
	strcpy(out, "/tmp/es_vdir_XXXXXX");
	assert_non_null(mkdtemp(out));
}

static void set_mtime(const char *dir, const char *rel, time_t sec, long nsec)
{
	char path[PATH_MAX];
	path_of(path, dir, rel);
	struct timespec ts[2] = { { sec, nsec }, { sec, nsec } };
	assert_int_equal(utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW), 0);
}

/* ---- the known layout ------------------------------------------------------------ */

typedef struct known_file {
	const char *rel;
	const uint8_t *data;
	size_t len;
} known_file;

static uint8_t deep_bytes[3000];

/* In byte order of the paths. Walking directory by directory would give
 * "a/b.txt" before "a-b" and "a.txt"; the hash orders whole paths. */
static known_file known[] = {
	{ "Z", (const uint8_t *)"upper", 5 },
	{ "a-b", (const uint8_t *)"dash", 4 },
	{ "a.txt", (const uint8_t *)"hello\n", 6 },
	{ "a/b.txt", (const uint8_t *)"nested\n", 7 },
	{ "dir/sub/deep.bin", deep_bytes, sizeof(deep_bytes) },
	{ "empty", (const uint8_t *)"", 0 },
};
#define N_KNOWN (sizeof(known) / sizeof(known[0]))

/*
 * The digest of that layout, computed independently with Python's hashlib:
 *   files = {"Z": b"upper", "a-b": b"dash", "a.txt": b"hello\n",
 *            "a/b.txt": b"nested\n",
 *            "dir/sub/deep.bin": bytes((i * 7) % 251 for i in range(3000)),
 *            "empty": b""}
 *   h = hashlib.sha256()
 *   for p in sorted(files, key=str.encode):
 *       h.update(p.encode() + b"\0" + struct.pack("<Q", len(files[p])) + files[p])
 *   h.hexdigest()
 */
#define KNOWN_DIGEST "08e13421151a0ed1f5090c4155890b8df05e6c836adc075c96e7a51f6d2dcf40"

static void make_known(char dir[PATH_MAX])
{
	for (size_t i = 0; i < sizeof(deep_bytes); i++)
		deep_bytes[i] = (uint8_t)((i * 7) % 251);
	new_dir(dir);
	/* written out of order on purpose */
	for (size_t i = N_KNOWN; i-- > 0;)
		put(dir, known[i].rel, known[i].data, known[i].len);
}

/* The same computation over the table, straight through libcrypto. */
static void reference_digest(char hex[65])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	assert_non_null(ctx);
	assert_true(EVP_DigestInit_ex(ctx, EVP_sha256(), NULL));
	for (size_t i = 0; i < N_KNOWN; i++) {
		uint8_t size[8];
		for (int b = 0; b < 8; b++)
			size[b] = (uint8_t)((uint64_t)known[i].len >> (8 * b));
		assert_true(EVP_DigestUpdate(ctx, known[i].rel, strlen(known[i].rel) + 1));
		assert_true(EVP_DigestUpdate(ctx, size, 8));
		assert_true(EVP_DigestUpdate(ctx, known[i].data, known[i].len));
	}
	uint8_t md[32];
	unsigned int len;
	assert_true(EVP_DigestFinal_ex(ctx, md, &len));
	assert_int_equal(len, 32);
	EVP_MD_CTX_free(ctx);
	es_hex(md, 32, hex);
}

static void digest_of(const char *dir, char hex[65])
{
	uint8_t md[32];
	es_error err = { 0 };
	int rc = es_vdir_sha256(dir, md, &err);
	if (rc)
		fail_msg("es_vdir_sha256: %d %s", rc, err.msg);
	es_hex(md, 32, hex);
}

/* Fails unless hashing dir fails with code and a message holding part and
 * no absolute path. */
static void expect_sha_fail(const char *dir, int code, const char *part)
{
	uint8_t md[32];
	es_error err = { 0 };
	int rc = es_vdir_sha256(dir, md, &err);
	if (rc != code)
		fail_msg("expected %d, got %d: %s", code, rc, err.msg);
	if (!strstr(err.msg, part))
		fail_msg("message lacks \"%s\": %s", part, err.msg);
	if (strstr(err.msg, "/tmp/"))
		fail_msg("message names an absolute path: %s", err.msg);
}

/* ---- sha256 ---------------------------------------------------------------------- */

static void test_hex(void **state)
{
	const uint8_t b[] = { 0x00, 0x0f, 0xa5, 0xff };
	char out[9];
	es_hex(b, 4, out);
	assert_string_equal(out, "000fa5ff");
	es_hex(b, 0, out);
	assert_string_equal(out, "");
}

static void test_known_layout(void **state)
{
	char dir[PATH_MAX], hex[65], ref[65];
	make_known(dir);
	reference_digest(ref);
	assert_string_equal(ref, KNOWN_DIGEST);
	digest_of(dir, hex);
	assert_string_equal(hex, KNOWN_DIGEST);
	/* the same path with a trailing slash */
	char slash[PATH_MAX + 2];
	snprintf(slash, sizeof(slash), "%s/", dir);
	digest_of(slash, hex);
	assert_string_equal(hex, KNOWN_DIGEST);
	rm_rf(dir);
}

static void test_changes(void **state)
{
	char dir[PATH_MAX], hex[65], path[PATH_MAX], other[PATH_MAX];
	make_known(dir);

	/* metadata alone changes nothing: mtimes, an empty directory, a fifo */
	set_mtime(dir, "a.txt", 1000, 1);
	path_of(path, dir, "empty_dir");
	assert_int_equal(mkdir(path, 0755), 0);
	path_of(path, dir, "fifo");
	assert_int_equal(mkfifo(path, 0644), 0);
	digest_of(dir, hex);
	assert_string_equal(hex, KNOWN_DIGEST);

	/* one byte */
	put(dir, "dir/sub/deep.bin", deep_bytes, sizeof(deep_bytes));
	deep_bytes[2999] ^= 1;
	put(dir, "dir/sub/deep.bin", deep_bytes, sizeof(deep_bytes));
	digest_of(dir, hex);
	assert_string_not_equal(hex, KNOWN_DIGEST);
	deep_bytes[2999] ^= 1;
	put(dir, "dir/sub/deep.bin", deep_bytes, sizeof(deep_bytes));
	digest_of(dir, hex);
	assert_string_equal(hex, KNOWN_DIGEST);

	/* a name */
	path_of(path, dir, "a.txt");
	path_of(other, dir, "a.tXt");
	assert_int_equal(rename(path, other), 0);
	digest_of(dir, hex);
	assert_string_not_equal(hex, KNOWN_DIGEST);
	assert_int_equal(rename(other, path), 0);

	/* moving bytes from one file to the next (sizes are hashed) */
	put(dir, "Z", "uppe", 4);
	put(dir, "a-b", "rdash", 5);
	digest_of(dir, hex);
	assert_string_not_equal(hex, KNOWN_DIGEST);
	put(dir, "Z", "upper", 5);
	put(dir, "a-b", "dash", 4);

	/* a new empty file */
	put(dir, "a/new", "", 0);
	digest_of(dir, hex);
	assert_string_not_equal(hex, KNOWN_DIGEST);
	path_of(path, dir, "a/new");
	assert_int_equal(unlink(path), 0);
	digest_of(dir, hex);
	assert_string_equal(hex, KNOWN_DIGEST);
	rm_rf(dir);
}

static void test_links(void **state)
{
	char dir[PATH_MAX], hex[65], path[PATH_MAX], outside[PATH_MAX];
	make_known(dir);
	digest_of(dir, hex);

	/* a link inside counts as a file of the target's bytes under its own
	 * name: the same digest as a copy */
	char copy_dir[PATH_MAX], with_copy[65];
	make_known(copy_dir);
	put(copy_dir, "link.txt", "hello\n", 6);
	digest_of(copy_dir, with_copy);
	path_of(path, dir, "link.txt");
	assert_int_equal(symlink("a.txt", path), 0);
	digest_of(dir, hex);
	assert_string_equal(hex, with_copy);
	assert_int_equal(unlink(path), 0);
	rm_rf(copy_dir);

	/* a directory link inside is followed too */
	path_of(path, dir, "dir2");
	assert_int_equal(symlink("dir", path), 0);
	digest_of(dir, hex);
	assert_string_not_equal(hex, KNOWN_DIGEST);
	assert_int_equal(unlink(path), 0);

	/* a link out of the directory, absolute or relative */
	new_dir(outside);
	put(outside, "secret", "s", 1);
	char target[PATH_MAX];
	path_of(target, outside, "secret");
	path_of(path, dir, "a/escape");
	assert_int_equal(symlink(target, path), 0);
	expect_sha_fail(dir, ES_EINVAL, "link 'a/escape' points outside the version directory");
	assert_int_equal(unlink(path), 0);
	assert_int_equal(symlink("../..", path), 0);
	expect_sha_fail(dir, ES_EINVAL, "link 'a/escape' points outside the version directory");
	assert_int_equal(unlink(path), 0);
	/* a link to the directory's parent, through the directory's name */
	assert_int_equal(symlink("..", path), 0);
	expect_sha_fail(dir, ES_EINVAL, "link 'a/escape' makes a loop");
	assert_int_equal(unlink(path), 0);
	/* dangling */
	assert_int_equal(symlink("nowhere", path), 0);
	expect_sha_fail(dir, ES_EIO, "cannot resolve link 'a/escape'");
	assert_int_equal(unlink(path), 0);

	digest_of(dir, hex);
	assert_string_equal(hex, KNOWN_DIGEST);
	rm_rf(outside);
	rm_rf(dir);
}

static void test_limits_and_errors(void **state)
{
	char dir[PATH_MAX], path[PATH_MAX];
	new_dir(dir);
	/* 33 nested directories */
	char rel[PATH_MAX] = "";
	for (int i = 0; i <= ES_VDIR_MAX_DEPTH; i++)
		strcat(rel, i ? "/d" : "d");
	strcat(rel, "/f");
	put(dir, rel, "x", 1);
	expect_sha_fail(dir, ES_ETOOLARGE, "is nested deeper than 32 directories");
	uint64_t fp;
	es_error err = { 0 };
	assert_int_equal(es_vdir_fingerprint(dir, &fp, NULL, &err), ES_ETOOLARGE);
	rm_rf(dir);

	/* 32 are fine */
	new_dir(dir);
	rel[0] = '\0';
	for (int i = 0; i < ES_VDIR_MAX_DEPTH; i++)
		strcat(rel, i ? "/d" : "d");
	strcat(rel, "/f");
	put(dir, rel, "x", 1);
	uint8_t md[32];
	assert_int_equal(es_vdir_sha256(dir, md, &err), 0);
	rm_rf(dir);

	/* too many files (on tmpfs when there is one: 100001 files on a disk
	 * take long to make and remove) */
	strcpy(dir, "/dev/shm/es_vdir_XXXXXX");
	if (!mkdtemp(dir))
		new_dir(dir);
	for (int i = 0; i <= ES_VDIR_MAX_FILES; i++) {
		char name[32];
		snprintf(name, sizeof(name), "f%d", i);
		path_of(path, dir, name);
		int fd = open(path, O_CREAT | O_WRONLY, 0644);
		assert_true(fd >= 0);
		close(fd);
	}
	expect_sha_fail(dir, ES_ETOOLARGE, "more than 100000 files");
	rm_rf(dir);

	/* not a directory, or none */
	new_dir(dir);
	put(dir, "file", "x", 1);
	path_of(path, dir, "file");
	expect_sha_fail(path, ES_EIO, "not a directory");
	path_of(path, dir, "missing");
	expect_sha_fail(path, ES_EIO, "cannot open the version directory");
	assert_int_equal(es_vdir_fingerprint(path, &fp, NULL, &err), ES_EIO);
	assert_null(strstr(err.msg, "/tmp/"));
	expect_sha_fail("", ES_EINVAL, "no version directory");

	/* a file that cannot be read (root reads everything: skip there) */
	if (geteuid() != 0) {
		put(dir, "sub/locked", "x", 1);
		path_of(path, dir, "sub/locked");
		assert_int_equal(chmod(path, 0), 0);
		expect_sha_fail(dir, ES_EIO, "cannot open 'sub/locked'");
	}
	rm_rf(dir);
}

/* ---- fingerprint ---------------------------------------------------------------- */

static uint64_t fingerprint(const char *dir, uint64_t *newest)
{
	uint64_t fp = 0;
	es_error err = { 0 };
	int rc = es_vdir_fingerprint(dir, &fp, newest, &err);
	if (rc)
		fail_msg("es_vdir_fingerprint: %d %s", rc, err.msg);
	return fp;
}

static void test_fingerprint(void **state)
{
	char dir[PATH_MAX], path[PATH_MAX], other[PATH_MAX];
	make_known(dir);
	/* fixed times everywhere, so that the newest is known */
	const char *all[] = { "Z", "a-b", "a.txt", "a/b.txt", "a", "dir/sub/deep.bin",
			      "dir/sub", "dir", "empty" };
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		set_mtime(dir, all[i], 1000000 + (time_t)i, 5);
	set_mtime(dir, ".", 1000000, 0);
	uint64_t newest = 0;
	uint64_t fp0 = fingerprint(dir, &newest);
	assert_int_equal(newest, (1000000ull + 8) * 1000000000ull + 5);
	assert_int_equal(fingerprint(dir, NULL), fp0);

	/* touch: a new mtime, and the newest follows it */
	set_mtime(dir, "a/b.txt", 2000000, 7);
	uint64_t fp1 = fingerprint(dir, &newest);
	assert_true(fp1 != fp0);
	assert_int_equal(newest, 2000000ull * 1000000000ull + 7);
	/* nanoseconds count */
	set_mtime(dir, "a/b.txt", 2000000, 8);
	uint64_t fp2 = fingerprint(dir, NULL);
	assert_true(fp2 != fp1);
	/* back to the same times: the same fingerprint */
	set_mtime(dir, "a/b.txt", 1000000 + 3, 5);
	assert_int_equal(fingerprint(dir, NULL), fp0);

	/* a size change that keeps the mtime */
	path_of(path, dir, "a.txt");
	assert_int_equal(truncate(path, 3), 0);
	set_mtime(dir, "a.txt", 1000000 + 2, 5);
	uint64_t fp3 = fingerprint(dir, NULL);
	assert_true(fp3 != fp0);
	assert_int_equal(truncate(path, 6), 0);
	set_mtime(dir, "a.txt", 1000000 + 2, 5);
	assert_int_equal(fingerprint(dir, NULL), fp0);

	/* a rename (directory times restored: only the name differs) */
	path_of(other, dir, "a.TXT");
	assert_int_equal(rename(path, other), 0);
	set_mtime(dir, ".", 1000000, 0);
	assert_true(fingerprint(dir, NULL) != fp0);
	assert_int_equal(rename(other, path), 0);
	set_mtime(dir, ".", 1000000, 0);
	assert_int_equal(fingerprint(dir, NULL), fp0);

	/* new entries of any kind, with the directory's time restored */
	path_of(path, dir, "dir/sub/empty_dir");
	assert_int_equal(mkdir(path, 0755), 0);
	set_mtime(dir, "dir/sub", 1000000 + 6, 5);
	set_mtime(dir, "dir/sub/empty_dir", 1000, 0);
	assert_true(fingerprint(dir, NULL) != fp0);
	assert_int_equal(rmdir(path), 0);
	set_mtime(dir, "dir/sub", 1000000 + 6, 5);
	assert_int_equal(fingerprint(dir, NULL), fp0);

	/* links are not followed, and any link is fine here; their text counts */
	path_of(path, dir, "out");
	assert_int_equal(symlink("/etc", path), 0);
	set_mtime(dir, "out", 1000, 0);
	set_mtime(dir, ".", 1000000, 0);
	uint64_t fp4 = fingerprint(dir, &newest);
	assert_true(fp4 != fp0);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(symlink("/usr", path), 0);
	set_mtime(dir, "out", 1000, 0);
	set_mtime(dir, ".", 1000000, 0);
	assert_true(fingerprint(dir, NULL) != fp4);
	rm_rf(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hex),
		cmocka_unit_test(test_known_layout),
		cmocka_unit_test(test_changes),
		cmocka_unit_test(test_links),
		cmocka_unit_test(test_limits_and_errors),
		cmocka_unit_test(test_fingerprint),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
