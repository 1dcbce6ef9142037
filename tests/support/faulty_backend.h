/*
 * "faulty": a test-only device backend that injects device errors, latency
 * and output drift on command, so that tests can drive device fallback,
 * shadow divergence and guard rails. Never linked into the edgeserve binary:
 * tests register it themselves, and the edgeserve_faulty test binary
 * registers it before running the normal command line.
 *
 * A device using it names a control file (es_device_config.fault_control):
 *
 *   {"rules": [{"model": "m", "version": 2, "error_every": 1,
 *               "latency_ms": 30, "output_bias": 0.5}]}
 *
 * A rule applies to runs of model "model" (and of "version" only, when
 * given and not 0); the first matching rule wins. error_every N fails every
 * N-th matching run with ES_EINTERNAL "injected device error" (1: all,
 * 0: none); latency_ms sleeps before the run; output_bias is added to every
 * float element of the outputs after the real run. The file is read again
 * whenever its modification time or size changes, which restarts the
 * error_every counts. A missing or malformed file means no faults (logged
 * once per change). Without rules the backend runs the engine unchanged.
 */
#ifndef ES_TESTS_FAULTY_BACKEND_H
#define ES_TESTS_FAULTY_BACKEND_H

#include "serving/serving.h"

/* The backend's table entry ("faulty"). */
extern const es_backend es_faulty_backend;

/* Registers "faulty" (before es_server_create). 0, or the error of
 * es_backend_register (a second call fails: the name is taken). */
int es_faulty_backend_register(void);

#endif
