/*
 * JSON number text <-> typed tensor elements, exactly.
 *
 * Parsing works on the source text of one number (JSON grammar already
 * checked by the tokenizer, see json_scan.h), so 64-bit integers keep every
 * digit and floats are rounded once, correctly, to the target type (FP16 and
 * BF16 included). Formatting prints the shortest text that reads back to the
 * same value. Locale: the C locale is assumed ('.' as decimal point); the
 * server never calls setlocale.
 */
#ifndef ES_API_JSON_NUM_H
#define ES_API_JSON_NUM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "edgeserve/engine.h"

/*
 * Integer conversions accept any JSON number whose value is an exact
 * integer ("3", "3.0", "3e2", "-0"). Return 0, ES_EINVAL when the value has
 * a fractional part, ES_ERANGE when it does not fit.
 */
int es_num_to_i64(const char *s, size_t n, int64_t *out);
int es_num_to_u64(const char *s, size_t n, uint64_t *out);

/*
 * Float conversions round to nearest even from the decimal text (one
 * rounding: "1.00048828125000001" becomes the FP16 above 1, not 1). They
 * also accept "NaN", "Infinity" and "-Infinity". A finite number too large
 * for the type returns ES_ERANGE; underflow goes to zero or a subnormal.
 */
int es_num_to_f32(const char *s, size_t n, float *out);
int es_num_to_f64(const char *s, size_t n, double *out);
int es_num_to_f16(const char *s, size_t n, uint16_t *out);
int es_num_to_bf16(const char *s, size_t n, uint16_t *out);

/* Round to nearest even from a double (no decimal tie information). */
uint16_t es_double_to_half(double d);
uint16_t es_double_to_bf16(double d);

#define ES_NUM_FMT_MAX 40

/*
 * Shortest text that strtof/strtod reads back to the same bits, written
 * NUL-terminated into buf (ES_NUM_FMT_MAX bytes); returns its length, or 0
 * for NaN and infinities (JSON has no literal for them). Integral values
 * below 1e7 (float) / 1e15 (double) print as plain integers ("3", "-0").
 * float: the fewest significant digits (1..9) that round-trip, plain for
 * decimal exponents -4..8, else d.ddde+XX ("1.1", "1e-45",
 * "3.4028235e+38"). double: the first of %.15g, %.16g, %.17g that
 * round-trips.
 */
size_t es_fmt_f32(char *buf, float f);
size_t es_fmt_f64(char *buf, double d);
size_t es_fmt_i64(char *buf, int64_t v);
size_t es_fmt_u64(char *buf, uint64_t v);

/*
 * Appends element idx of a dense tensor's data as a JSON value: numbers
 * exactly, BOOL as true/false, FP16/BF16 as their float value, NaN and
 * infinities as the strings "NaN", "Infinity", "-Infinity" (what the
 * request parser accepts). dtype must be a fixed-size type.
 */
int es_json_put_elem(es_buf *b, es_dtype dt, const void *data, size_t idx);

/*
 * Appends count = product(dims) elements starting at data as JSON values,
 * nested as dims/ndim say (ndim 0: one bare value; ndim 1: a flat array).
 * nbytes is what data holds; *used (may be NULL) receives the bytes the
 * elements took, so a caller can walk a tensor row by row. For
 * ES_DT_STRING, data is the 4-byte-LE-length-prefixed serialisation and
 * each element prints as a JSON string (invalid UTF-8 as U+FFFD). Returns
 * 0, ES_ENOMEM, or ES_EINVAL when dt has no JSON form or data is shorter
 * than the elements (or a string length runs past it).
 */
int es_json_put_values(es_buf *b, es_dtype dt, const void *data, size_t nbytes,
		       const int64_t *dims, int ndim, size_t *used);

#endif
