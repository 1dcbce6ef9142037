#include "base/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *es_strerror(int code)
{
	switch (code) {
	case ES_OK: return "ok";
	case ES_EINVAL: return "invalid argument";
	case ES_ENOMEM: return "out of memory";
	case ES_EIO: return "i/o error";
	case ES_EPARSE: return "parse error";
	case ES_EUNSUPPORTED: return "unsupported";
	case ES_ESHAPE: return "shape mismatch";
	case ES_ETYPE: return "type mismatch";
	case ES_ERANGE: return "out of range";
	case ES_ENOTFOUND: return "not found";
	case ES_EGRAPH: return "invalid graph";
	case ES_EINTERNAL: return "internal error";
	case ES_EUNAVAILABLE: return "unavailable";
	case ES_EBUSY: return "busy";
	case ES_ETIMEDOUT: return "deadline exceeded";
	case ES_ECANCELED: return "cancelled";
	case ES_ETOOLARGE: return "too large";
	case ES_ESTALE: return "stale compiled form";
	default: return "unknown error";
	}
}

int es_error_set(es_error *err, int code, const char *fmt, ...)
{
	if (err) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
		va_end(ap);
		err->code = code;
	}
	return code;
}

int es_error_prefix(es_error *err, const char *fmt, ...)
{
	if (!err)
		return ES_EINTERNAL;
	char prefix[ES_ERROR_MSG_MAX];
	char old[ES_ERROR_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	memcpy(old, err->msg, sizeof(old));
	size_t pl = strnlen(prefix, sizeof(err->msg) - 1);
	memcpy(err->msg, prefix, pl);
	size_t at = pl;
	if (at + 2 < sizeof(err->msg)) {
		err->msg[at++] = ':';
		err->msg[at++] = ' ';
	}
	size_t room = sizeof(err->msg) - 1 - at;
	size_t ol = strnlen(old, room);
	memcpy(err->msg + at, old, ol);
	err->msg[at + ol] = '\0';
	return err->code;
}

void es_error_clear(es_error *err)
{
	if (err) {
		err->code = 0;
		err->msg[0] = '\0';
	}
}
