/*
 * Version directories as a whole: a content hash (the key of a version's
 * compiled form, and what tells two copies of a version apart) and a cheap
 * fingerprint that tells whether a directory is still being written.
 *
 * Error messages name files by their path relative to the version
 * directory, never by an absolute path.
 */
#ifndef ES_SERVING_VDIR_H
#define ES_SERVING_VDIR_H

#include <stddef.h>
#include <stdint.h>

#include "edgeserve/engine.h"

/* A version directory may nest at most this many directories below itself
 * and hold at most this many entries (files, directories, links). */
#define ES_VDIR_MAX_DEPTH 32
#define ES_VDIR_MAX_FILES 100000

/*
 * SHA-256 over every regular file under dir, recursively, in byte order of
 * their relative paths ("a/b", '/' separated, no leading "./"): for each
 * file its relative path, a NUL, its size as a u64 little endian, then its
 * bytes. Directories only contribute the files they hold; other file types
 * (fifos, sockets, devices) are skipped. Symbolic links are followed when
 * they resolve inside dir (a link to a file there is hashed under the
 * link's own path); a link that leaves dir or makes a loop is ES_EINVAL,
 * one that does not resolve ES_EIO, both naming the link.
 * Errors: ES_EIO naming the relative path that could not be read (or that
 * changed size while it was read), ES_ETOOLARGE past ES_VDIR_MAX_DEPTH or
 * ES_VDIR_MAX_FILES, ES_ENOMEM.
 */
int es_vdir_sha256(const char *dir, uint8_t out[32], es_error *err);

/*
 * A cheap fingerprint of dir that reads no file: the relative path, type,
 * size and mtime (ns) of dir itself and of everything under it (links are
 * not followed; their target text is included), hashed to 64 bits. Any
 * file created, removed, renamed, resized or touched changes it.
 * *newest_mtime_ns (may be NULL) receives the newest mtime seen, dir's own
 * included, as ns since the epoch. Errors as es_vdir_sha256 (no link is an
 * error here).
 */
int es_vdir_fingerprint(const char *dir, uint64_t *fp, uint64_t *newest_mtime_ns,
			es_error *err);

/* Writes bytes as 2n lower-case hex digits and a NUL to out (2n+1 bytes). */
void es_hex(const uint8_t *bytes, size_t n, char *out);

#endif
