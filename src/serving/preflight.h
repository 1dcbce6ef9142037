/*
 * Pre-flight checks of a loaded version before it is published: known-good
 * cases shipped with the version, and warmup runs so the first request
 * does not pay for first-run allocations and JIT.
 *
 * A version directory may hold known-good cases:
 *   <version>/validation/input_<k>.pb, output_<k>.pb          one case
 *   <version>/validation/<case>/input_<k>.pb, output_<k>.pb   several cases
 *                                       (e.g. the ONNX test_data_set_0/)
 *   <version>/validation/tolerance.json  optional:
 *       {"atol": 1e-4, "rtol": 1e-4, "outputs": {"prob": {"atol": 1e-3}}}
 * Files are ONNX TensorProtos. A file binds to the model's input (output)
 * of its tensor's name when that name is one, else to the k-th one in
 * model order. A case gives every input and at least one output; only the
 * outputs it gives are checked. Files are named in messages by their path
 * relative to the version directory, never by an absolute path.
 */
#ifndef ES_SERVING_PREFLIGHT_H
#define ES_SERVING_PREFLIGHT_H

#include <stddef.h>

#include "edgeserve/engine.h"

#define ES_PREFLIGHT_MAX_CASES 64
#define ES_PREFLIGHT_MAX_FILE_BYTES ((size_t)1 << 30) /* each .pb */
#define ES_PREFLIGHT_DEFAULT_ATOL 1e-4
#define ES_PREFLIGHT_DEFAULT_RTOL 1e-4

/*
 * Runs every validation case of version_dir on session (a session of
 * model) and compares the outputs: floating outputs within atol +
 * rtol * |expected| (a NaN expected matches only NaN; infinities match
 * exactly), integer and bool outputs exactly. Cases run in this order: the
 * files directly in validation/ (case name "validation"), then case
 * directories in byte order of their names.
 *
 * Returns 0 when every case passes or there is no validation/ directory.
 * *n_cases_out (may be NULL) receives the number of cases found (0 when
 * none). Errors, each message naming the case and the file:
 *   ES_EINVAL    a case fails ("validation case 'test_data_set_0': output
 *                'prob' element 17 (of 1000) is 0.5312 but expected 0.5101
 *                (error 0.0211, tolerance 0.000151)"), or dtype or shape
 *                differ (both named), or a file is missing, misnamed, binds
 *                to an input already given, is a link leading out of
 *                version_dir, or tolerance.json has an unknown key or a bad
 *                value (the key is named);
 *   ES_EPARSE    a .pb that is not a TensorProto, tolerance.json not JSON;
 *   ES_EIO       a file that cannot be read;
 *   ES_ETOOLARGE more than ES_PREFLIGHT_MAX_CASES cases or a .pb larger
 *                than ES_PREFLIGHT_MAX_FILE_BYTES;
 *   an engine error from the run, prefixed with the case.
 */
int es_preflight_validate(es_model *model, es_session *session, const char *version_dir,
			  size_t *n_cases_out, es_error *err);

/*
 * Runs `runs` inferences on each of n_sessions sessions of model (runs <= 0:
 * nothing). Inputs: those of the first validation case when version_dir
 * has one (the outputs are not checked here), else zero-filled inputs with
 * every dimension the model leaves open set to 1. An input whose rank the
 * model leaves open cannot be made up: ES_EUNSUPPORTED naming it, unless a
 * validation case gives it. Errors of reading the case as for
 * es_preflight_validate; an engine error is prefixed with the session and
 * run.
 */
int es_preflight_warmup(es_model *model, es_session **sessions, int n_sessions, int runs,
			const char *version_dir, es_error *err);

#endif
