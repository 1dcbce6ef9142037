/*
 * The serving core: configuration, model repository with numbered versions,
 * devices with bounded queues and stream workers, and the request that
 * flows through them. It knows nothing about HTTP: src/api/ turns wire
 * formats into es_request objects and back.
 *
 * Threads: the api layer calls es_server_* from network threads; device
 * workers run requests and call es_request.complete on the worker thread.
 * The version table is read without a lock on every request (an atomic
 * pointer per model, swapped when versions change).
 */
#ifndef ES_SERVING_SERVING_H
#define ES_SERVING_SERVING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "edgeserve/engine.h"
#include "obs/metrics.h"

/* ---- configuration ------------------------------------------------------- */

typedef enum es_policy_kind {
	ES_POLICY_LATEST = 0, /* the num_versions highest versions (default 1) */
	ES_POLICY_SPECIFIC,   /* exactly the listed versions */
	ES_POLICY_ALL,        /* every version on disk */
} es_policy_kind;

typedef struct es_version_policy {
	es_policy_kind kind;
	int num_versions;  /* LATEST */
	int64_t *versions; /* SPECIFIC (owned) */
	size_t n_versions;
} es_version_policy;

typedef struct es_device_config {
	char *name;              /* "CPU" by default */
	char *backend;           /* "cpu" (the engine); others only when a
				  * backend of that name is registered */
	int streams;             /* concurrent executions; 1 = strictly sequential */
	int threads_per_stream;  /* intra-op threads of each stream's sessions */
	int max_queue_size;      /* bounded queue; a full queue rejects at once */
	/* fallback (docs/rollouts.md) */
	char *fallback;          /* device taking spill and retries; NULL none */
	int spill_queue_depth;   /* spill when this many wait already (0: off) */
	int spill_wait_ms;       /* spill when the expected wait is longer (0: off) */
	char *fault_control;     /* "faulty" test backend: its control file */
} es_device_config;

/* A version label: "stable", "canary", any [A-Za-z0-9_]+. */
typedef struct es_label_config {
	char *name;
	int64_t version;
} es_label_config;

/* Guard rails of a canary: any threshold crossed over the window (with at
 * least min_samples canary requests) trips the kill switch. 0 = off. */
typedef struct es_guard_config {
	int window_s;               /* default 30 */
	int min_samples;            /* default 50 */
	double max_error_rate;      /* canary errors / canary requests */
	double max_p95_ratio;       /* canary p95 / stable p95 */
	double max_divergence_rate; /* divergent / compared shadow pairs of the canary */
} es_guard_config;

typedef struct es_canary_config {
	bool enabled;
	int64_t version;      /* the canary version, or 0 when label is set */
	char *label;          /* a label naming it (moves with the label) */
	int fraction_bp;      /* share of keyed traffic, 0..10000 basis points */
	char *user_header;    /* default "X-User-Id" */
	char *user_parameter; /* default "user_id" (KServe request parameter) */
	char *salt;           /* default: the model name */
	bool keyless_hash_id; /* requests without a key: false -> stable,
			       * true -> hashed by request id */
	bool killed;          /* start with the kill switch on */
	es_guard_config guard;
} es_canary_config;

typedef struct es_shadow_config {
	bool enabled;
	int64_t version;  /* the shadow version, or 0 when label is set */
	char *label;
	int fraction_bp;  /* share of primary requests mirrored, 0..10000 */
	int queue_size;   /* pending shadow runs at most (default 64); more are
			   * dropped and counted */
	double atol, rtol; /* divergence tolerance (defaults 1e-4, 1e-3) */
	int inline_max_us; /* a copy whose primary ran at most this long runs on
			    * the stream that answered it when the device is idle
			    * (config default 250; 0: always the low-priority
			    * worker) */
} es_shadow_config;

typedef struct es_model_config {
	char *name;
	char *base_path;     /* directory holding numeric version subdirectories */
	es_version_policy policy;
	char *target_device; /* device name; NULL = the first device */
	int nireq;           /* OVMS compatibility: accepted, used as queue size
			      * hint when the device sets none */
	bool keep_previous;  /* keep the previous default version loaded for
			      * an instant rollback (default false) */
	int warmup;          /* inferences per stream before a version is
			      * AVAILABLE; -1 = the server's default */
	/* rollouts (docs/rollouts.md) */
	es_label_config *labels; /* "version_labels" */
	size_t n_labels;
	es_canary_config canary;
	es_shadow_config shadow;
} es_model_config;

typedef struct es_server_config {
	/* network */
	char *rest_bind_address;  /* default "127.0.0.1" */
	int rest_port;            /* default 8000; 0 = pick a free port */
	int rest_workers;         /* network threads; 0 = one per core */
	size_t max_request_bytes; /* default 64 MiB; larger bodies get 413 */
	int max_connections;      /* default 1024 */
	int connection_timeout_s; /* idle keep-alive / slow header timeout, default 60 */
	/* behaviour */
	int64_t default_timeout_ms; /* request deadline; default 30000 */
	int exit_timeout_s;         /* graceful shutdown bound; default 30 */
	bool metrics_enable;        /* default true */
	char *log_level;            /* "INFO" */
	/* lifecycle */
	int poll_wait_s;            /* --file_system_poll_wait_seconds: watch the
				     * repository every N s (default 1; 0 off) */
	char *cache_dir;            /* compiled-model cache; NULL = none */
	int default_warmup;         /* warmup runs when a model sets none (1) */
	char *divergence_log;       /* shadow divergences, JSON lines; NULL: the
				     * server log */
	int divergence_log_per_s;   /* at most this many lines a second (10) */
	/* what to serve */
	es_device_config *devices; /* at least one after loading defaults */
	size_t n_devices;
	es_model_config *models;
	size_t n_models;
} es_server_config;

/* Fills cfg with defaults (one CPU device, no models). */
void es_config_defaults(es_server_config *cfg);
/*
 * Reads an OVMS-style config file:
 *   {"model_config_list": [{"config": {"name": "m", "base_path": "dir",
 *     "model_version_policy": {"latest": {"num_versions": 2}},
 *     "target_device": "CPU", "nireq": 4}}],
 *    "devices": [{"name": "NPU0", "backend": "cpu", "streams": 1,
 *     "threads_per_stream": 1, "max_queue_size": 16}]}
 * Relative base_paths are relative to the config file's directory. Unknown
 * keys anywhere are an error naming the key and where it was found.
 */
int es_config_load_file(const char *path, es_server_config *cfg, es_error *err);
/* Adds one model per subdirectory of dir (policy latest 1). */
int es_config_scan_repository(const char *dir, es_server_config *cfg, es_error *err);
/* Checks names (models [A-Za-z0-9_.-]+, unique), devices, policies. */
int es_config_validate(const es_server_config *cfg, es_error *err);
void es_config_free(es_server_config *cfg);

/* ---- server, models, versions -------------------------------------------- */

typedef enum es_version_state {
	ES_VS_START = 0,
	ES_VS_LOADING,
	ES_VS_AVAILABLE,
	ES_VS_UNLOADING,
	ES_VS_END,
	ES_VS_FAILED,
} es_version_state;

/* "START", "LOADING", "AVAILABLE", "UNLOADING", "END", "FAILED". */
const char *es_version_state_name(es_version_state s);

typedef struct es_server es_server;
typedef struct es_servable es_servable; /* a model: name + versions */
typedef struct es_version es_version;   /* one loaded version (refcounted) */

typedef struct es_version_status {
	int64_t version;
	es_version_state state;
	char reason[256]; /* FAILED: why; otherwise "" */
} es_version_status;

/*
 * Creates devices and their workers, then loads every configured model's
 * versions per policy (synchronously). A version that fails to load is
 * FAILED with its reason; it does not stop the server. metrics may be NULL.
 * The server keeps pointers into cfg: cfg must outlive it.
 */
int es_server_create(const es_server_config *cfg, es_metrics *metrics,
		     es_server **out, es_error *err);
/*
 * Stops accepting requests (es_server_submit returns ES_ECANCELED), lets
 * queued and running requests finish for at most timeout_ms, cancels what
 * is left (completing them with ES_ECANCELED). Returns the number of
 * requests cancelled.
 */
size_t es_server_drain(es_server *s, int64_t timeout_ms);
void es_server_destroy(es_server *s);

/* True when every model has at least one AVAILABLE version. */
bool es_server_ready(es_server *s);

/* Equivalent to es_server_models(s)->n and ->m[i] (NULL past the end); two
 * calls may see different lists while a reload runs: prefer the snapshot. */
size_t es_server_num_models(es_server *s);
es_servable *es_server_model_at(es_server *s, size_t i);
es_servable *es_server_find_model(es_server *s, const char *name);
const char *es_servable_name(const es_servable *m);
const char *es_servable_device(const es_servable *m);
/* Fills up to max entries (highest version first); returns the total. */
size_t es_servable_status(es_servable *m, es_version_status *out, size_t max);
/* Ready: the given version (0: the default one) is AVAILABLE. */
bool es_servable_ready(es_servable *m, int64_t version);

/*
 * Takes a reference on a version for one request. version 0 means the
 * default: the highest AVAILABLE version. Errors (with a message naming the
 * model and version): ES_ENOTFOUND for a version the model does not have,
 * ES_EUNAVAILABLE for one that exists but is not AVAILABLE.
 */
int es_servable_acquire(es_servable *m, int64_t version, es_version **out,
			es_error *err);
void es_version_retain(es_version *v);
void es_version_release(es_version *v);
int64_t es_version_number(const es_version *v);
es_model *es_version_model(const es_version *v); /* engine model: inputs, outputs */
const es_servable *es_version_servable(const es_version *v);

/* ---- requests ------------------------------------------------------------ */

/* Which rollout arm a request took (es_servable_route, docs/rollouts.md). */
typedef enum es_arm {
	ES_ARM_DEFAULT = 0, /* no canary configured: the default version */
	ES_ARM_STABLE,      /* canary configured, this request on stable */
	ES_ARM_CANARY,
	ES_ARM_PINNED,      /* the URL named a version */
	ES_ARM_LABEL,       /* the request named a label */
	ES_ARM_COUNT
} es_arm;
/* "default", "stable", "canary", "pinned", "label". */
const char *es_arm_name(es_arm a);

typedef struct es_request es_request;

/* Called exactly once per submitted request, on a device worker thread
 * (or on the submitting thread if submission fails after acceptance is not
 * possible: see es_server_submit). On success status == 0 and outputs are
 * the model's outputs in model order, valid only during the call. Otherwise
 * outputs is NULL, n_outputs 0 and r->err says why (ES_ETIMEDOUT when the
 * deadline passed in the queue, ES_ECANCELED at shutdown, an engine error
 * from the run). */
typedef void (*es_request_complete_fn)(es_request *r, const es_tensor *outputs,
				       size_t n_outputs);

struct es_request {
	/* set by the caller before es_server_submit */
	es_version *version;      /* reference held by the caller */
	const es_tensor *inputs;  /* model input order; data owned by the caller */
	size_t n_inputs;
	uint64_t deadline_ns;     /* absolute, es_now_ns() clock; 0 = none */
	es_arm arm;               /* from es_servable_route (stats by arm) */
	es_version *shadow;       /* from es_servable_route: the scheduler takes
				   * this reference (mirrors the request after a
				   * successful primary run, or drops it) */
	es_request_complete_fn complete;
	void *user;
	const char *id;           /* request id for logs (may be NULL) */
	/* filled by the scheduler (es_now_ns clock) */
	uint64_t t_enqueue_ns;
	uint64_t t_start_ns;      /* device began this request (0 if never) */
	uint64_t t_end_ns;
	int stream;               /* which stream ran it */
	const char *device;       /* device name (the fallback's when it ran there) */
	const char *fallback_reason; /* "spill_queue", "spill_wait", "error", or NULL */
	int status;
	es_error err;
	/* scheduler private */
	es_request *next;
};

/*
 * Validates inputs against the version's model (count, dtype, shape) and
 * queues the request on the version's device. Returns 0 when queued
 * (complete will be called later), or an error without calling complete:
 * ES_EINVAL/ES_ETYPE/ES_ESHAPE for bad inputs (message names the input,
 * expected and actual), ES_EBUSY when the device queue is full,
 * ES_ECANCELED while draining.
 */
int es_server_submit(es_server *s, es_request *r, es_error *err);

/* ---- lifecycle ------------------------------------------------------------
 *
 * A version goes START -> LOADING -> AVAILABLE -> UNLOADING -> END, or to
 * FAILED with a reason. Loading (hash, compile or read the compiled-model
 * cache, pre-flight validation, warmup) happens off the request path; the
 * version is published by one atomic table swap when it is ready. A version
 * leaving service is taken out of the table at once (UNLOADING) and freed
 * when the last request holding it finishes (END).
 *
 * The default version of a model (what version 0 means) is the highest
 * AVAILABLE one, unless a rollback pinned it.
 */

/* Who asked for a lifecycle change, for the log ("repository poll",
 * "config reload from 127.0.0.1", ...). */
typedef struct es_actor {
	const char *who;    /* "api", "poll", "startup" */
	const char *remote; /* client address, or NULL */
} es_actor;

/*
 * Where the configuration comes from, so that a reload can read it again:
 * fills cfg (already defaulted by the caller) with the models; the server
 * settings of the new cfg are ignored except its models.
 */
typedef int (*es_config_reader_fn)(void *ctx, es_server_config *cfg, es_error *err);
void es_server_set_config_reader(es_server *s, es_config_reader_fn fn, void *ctx);

/*
 * Re-reads the configuration and applies it: models added, removed or
 * changed (base_path, target_device, version policy, keep_previous,
 * warmup), then every model's versions reconciled with the repository.
 * Nothing is applied when the new configuration is invalid (err names the
 * problem; no host paths) or changes devices (they need a restart).
 * *changed tells whether anything was loaded, unloaded, added or removed.
 * Serialised with the repository poll; may take as long as the loads.
 */
int es_server_reload(es_server *s, const es_actor *who, bool *changed,
		     es_error *err);

/* Result of a rollback. */
typedef struct es_rollback_result {
	int64_t from; /* the default version before */
	int64_t to;   /* the default version now */
} es_rollback_result;

/*
 * Makes the previous default version (kept loaded by keep_previous) the
 * default at once and retires the current one, which will not be loaded
 * again while its directory exists (until a restart). Fails with
 * ES_EUNAVAILABLE when no previous version is loaded (the message says
 * why). A version newer than the retired one ends the rollback when it
 * becomes AVAILABLE.
 */
int es_servable_rollback(es_servable *m, const es_actor *who,
			 es_rollback_result *out, es_error *err);
/* The version requests without a version get now (0: none available). */
int64_t es_servable_default_version(es_servable *m);

/* Models served now: a snapshot that stays valid for the server's life. */
typedef struct es_model_list {
	size_t n;
	es_servable *m[];
} es_model_list;
const es_model_list *es_server_models(es_server *s);

/*
 * One pointer per model for the layer above (the api keeps its per-model
 * metric children there). Set once: returns the value in place, which is
 * val if the slot was empty. free_fn (set once per server, may be NULL) is
 * called on every set slot when the server is destroyed.
 */
void *es_servable_ext(es_servable *m, void *val);
void es_server_set_ext_free(es_server *s, void (*free_fn)(void *));

/* ---- rollouts: labels, canary, kill switch, shadow (docs/rollouts.md) -----
 * (es_arm and es_arm_name are declared above es_request, which uses them) */

typedef struct es_route_in {
	int64_t version;        /* from the URL; wins over everything (0: none) */
	const char *label;      /* TF-Serving /labels/{l}, KServe parameter
				 * "version_label"; NULL: none */
	const char *user_key;   /* the canary key; NULL: none */
	size_t user_key_len;
	const char *request_id; /* hashed instead when the canary says so */
} es_route_in;

typedef struct es_route_out {
	es_version *version;    /* a reference (es_version_release) */
	es_arm arm;
	es_version *shadow;     /* a reference when sampled for shadow, else NULL */
} es_route_out;

/*
 * Chooses the version of one request: a pinned version, else a label, else
 * the canary arm by a stable hash of salt and user key (unless the kill
 * switch is on), else stable (the "stable" label when set, otherwise the
 * default version). Errors as es_servable_acquire; an unknown label is
 * ES_ENOTFOUND, a label on a version that is not AVAILABLE ES_EUNAVAILABLE,
 * both naming the label. A canary whose version is not AVAILABLE sends its
 * share to stable.
 */
int es_servable_route(es_servable *m, const es_route_in *in, es_route_out *out,
		      es_error *err);

/* Where this model's requests carry the canary key (copied, NUL-ended;
 * "" when no canary is configured). */
void es_servable_user_key_source(es_servable *m, char *header, size_t hcap,
				 char *param, size_t pcap);

/* Points label at version (0: removes the label). The version must be
 * AVAILABLE; ES_EUNAVAILABLE/ES_ENOTFOUND otherwise, nothing changed. */
int es_servable_set_label(es_servable *m, const char *label, int64_t version,
			  const es_actor *who, es_error *err);

typedef struct es_canary_update {
	bool set_fraction;
	int fraction_bp;
	bool set_killed;
	bool killed;          /* true: all traffic to stable at once */
	bool set_version;
	int64_t version;      /* new canary version (must be AVAILABLE) */
} es_canary_update;
/* Changes the canary; ES_EINVAL when the model has no canary configured. */
int es_servable_canary_update(es_servable *m, const es_canary_update *u,
			      const es_actor *who, es_error *err);

typedef struct es_arm_report {
	int64_t version;     /* the arm's version now (0: none) */
	uint64_t requests;   /* in the window */
	uint64_t errors;
	double error_rate;
	double p50_s, p95_s, p99_s;
} es_arm_report;

#define ES_MAX_LABELS 32
typedef struct es_rollout_report {
	size_t n_labels;
	char label_names[ES_MAX_LABELS][64];
	int64_t label_versions[ES_MAX_LABELS];
	bool canary;          /* a canary is configured */
	int fraction_bp;
	bool killed;
	char kill_reason[256]; /* why (admin, config, or the guard rail's reason) */
	int window_s;
	es_arm_report arms[ES_ARM_COUNT];
	bool shadow;
	int64_t shadow_version;
	int shadow_fraction_bp;
	uint64_t shadow_sampled, shadow_compared, shadow_divergent, shadow_dropped;
} es_rollout_report;
int es_servable_rollout_report(es_servable *m, es_rollout_report *out);

/* ---- backends ---------------------------------------------------------------
 *
 * A device's backend runs one request on one of its streams. "cpu" (the
 * engine) is built in; test builds register a fault-injecting one before
 * the server starts (never in the edgeserve binary).
 */
typedef struct es_backend_run {
	const char *model;
	int64_t version;
	const char *device;
	es_session *session;
	const es_tensor *inputs;
	size_t n_inputs;
	es_tensor *outputs;   /* as es_session_run */
	size_t n_outputs;     /* the model's output count (room in outputs) */
} es_backend_run;

typedef struct es_backend {
	const char *name;
	/* called once per device using it; *state is passed to run */
	int (*open)(const es_device_config *cfg, void **state, es_error *err);
	void (*close)(void *state);
	/* 0 or an error; an error is a device error (retried on the fallback) */
	int (*run)(void *state, const es_backend_run *r, es_error *err);
} es_backend;
/* Registers a backend (before es_server_create). At most 8. */
int es_backend_register(const es_backend *b);
const es_backend *es_backend_find(const char *name);

/* Per-device facts for metadata and metrics. */
typedef struct es_device_status {
	const char *name;
	const char *backend;
	int streams;
	int queue_size;     /* requests waiting now */
	int max_queue_size;
	int active;         /* requests running now */
} es_device_status;

size_t es_server_devices(es_server *s, es_device_status *out, size_t max);

#endif
