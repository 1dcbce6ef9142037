/* Minimum runtime library versions. */
#include "serving/runtime_check.h"

#include <stdio.h>
#include <string.h>

#include "base/status.h"

#define ALLOW_HINT "start with --allow_old_runtime to run anyway"

static int cmp_version(const int a[3], const int b[3])
{
	for (int i = 0; i < 3; i++)
		if (a[i] != b[i])
			return a[i] < b[i] ? -1 : 1;
	return 0;
}

static bool is_unknown(const int v[3])
{
	return v[0] == 0 && v[1] == 0 && v[2] == 0;
}

/* Appends one library's verdict to msg (joined by "; "); returns 1 when it
 * fails. */
static int check_one(char *msg, size_t cap, const char *lib, const char *package,
		     const int have[3], const char *have_str, const int min[3])
{
	char line[ES_ERROR_MSG_MAX];
	if (is_unknown(have) || !have_str[0]) {
		snprintf(line, sizeof(line),
			 "the %s in use does not report a version edgeserve can read "
			 "(\"%s\"); edgeserve is tested with %d.%d.%d or newer: install "
			 "%s or " ALLOW_HINT,
			 lib, have_str, min[0], min[1], min[2], package);
	} else if (cmp_version(have, min) < 0) {
		snprintf(line, sizeof(line),
			 "%s %s is older than %d.%d.%d, the oldest version edgeserve is "
			 "tested with; upgrade %s or " ALLOW_HINT,
			 lib, have_str, min[0], min[1], min[2], package);
	} else {
		return 0;
	}
	/* join with "; ", cutting what does not fit */
	size_t at = strlen(msg);
	const char *parts[2] = { at ? "; " : "", line };
	for (int i = 0; i < 2; i++) {
		size_t len = strlen(parts[i]);
		if (len > cap - 1 - at)
			len = cap - 1 - at;
		memcpy(msg + at, parts[i], len);
		at += len;
	}
	msg[at] = '\0';
	return 1;
}

int es_runtime_check(const es_runtime_versions *v, es_error *err)
{
	static const int min_onednn[3] = { ES_MIN_ONEDNN_MAJOR, ES_MIN_ONEDNN_MINOR,
					   ES_MIN_ONEDNN_PATCH };
	static const int min_openblas[3] = { ES_MIN_OPENBLAS_MAJOR, ES_MIN_OPENBLAS_MINOR,
					     ES_MIN_OPENBLAS_PATCH };
	char msg[ES_ERROR_MSG_MAX] = "";
	int failed = 0;
	if (!v)
		return es_error_set(err, ES_EINVAL, "no runtime versions given");
	failed += check_one(msg, sizeof(msg), "oneDNN", "libdnnl2", v->onednn,
			    v->onednn_str, min_onednn);
	failed += check_one(msg, sizeof(msg), "OpenBLAS", "libopenblas0", v->openblas,
			    v->openblas_str, min_openblas);
	if (!failed)
		return 0;
	return es_error_set(err, ES_EUNSUPPORTED, "%s", msg);
}
