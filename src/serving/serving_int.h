/*
 * Private structures of the serving core, shared by config.c, repository.c
 * and scheduler.c. Nothing outside src/serving/ includes this file.
 *
 * Locking, from outside in (a thread never takes an earlier lock while
 * holding a later one):
 *   es_server.reload_mu   serialises repository polls and reloads (held
 *                         across loads)
 *   es_servable.life_mu   a model's lifecycle bookkeeping: marks, previous
 *                         and default versions (held briefly, never across
 *                         a load, so a rollback is never kept waiting)
 *   es_servable.write_mu  serialises version table writers (load, unload)
 *   es_server.reaper_mu   the reaper's sleep and its planned wake-up
 *   es_device.mu          one device's queue, counters and workers
 *   es_server.ended_mu, es_server.poll_mu   leaves
 * Readers of a version table take no lock (see "version tables" below).
 */
#ifndef ES_SERVING_SERVING_INT_H
#define ES_SERVING_SERVING_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "obs/log.h"
#include "serving/serving.h"

/* Queue capacity of a device that sets no max_queue_size and whose models
 * give no nireq hint. */
#define ES_DEFAULT_QUEUE_SIZE 1024
/* Upper bounds accepted from configuration. */
#define ES_MAX_STREAMS 256
#define ES_MAX_THREADS 1024
#define ES_MAX_QUEUE_SIZE (1 << 24)
#define ES_NAME_MAX 255
/* The reaper never rescans the queues more often than this (ns), so a burst
 * of expiring requests costs at most one scan per interval. */
#define ES_REAPER_MIN_INTERVAL_NS 1000000ull

/* Model and device names: [A-Za-z0-9_.-]{1,255}, not starting with '.'. */
bool es_serving_name_ok(const char *name);

/*
 * Rewrites a load error so that it names no host path: base_path becomes
 * the model name ("classifier/2/model.onnx") and any other absolute path is
 * cut to its last component. msg holds cap bytes.
 */
void es_serving_scrub_paths(char *msg, size_t cap, const char *base_path,
			    const char *name);

/* ---- devices (scheduler.c) ------------------------------------------------ */

typedef struct es_device es_device;

typedef struct es_worker {
	es_device *dev;
	int index;          /* stream number: sessions[index] of each version */
	pthread_t thread;
	bool started;
	es_tensor *outputs; /* room for the outputs of the model being run */
	size_t outputs_cap;
	struct es_shadow_job *shadow; /* a copy to run or queue after the primary */
} es_worker;

struct es_device {
	es_server *srv;
	char *name;
	char *backend;
	int streams;
	int threads;  /* intra-op threads of each stream session (resolved) */
	int capacity; /* queue bound (resolved) */

	pthread_mutex_t mu;
	pthread_cond_t work_cv; /* workers: something queued, or stop */
	pthread_cond_t idle_cv; /* drain: queued, active and completing hit 0 */
	bool sync_ready;        /* mu and the condvars are initialised */
	es_request *head, *tail; /* FIFO through es_request.next */
	int queued;
	int active;      /* requests running on a stream */
	int completing;  /* taken off the queue, complete() not returned yet */
	bool accepting;  /* false once draining */
	bool stop;       /* workers exit */

	es_worker *workers; /* streams entries */

	/* backend (es_backend_find(backend)) and its per-device state */
	const es_backend *be;
	void *be_state;
	/* fallback: spill when queued >= spill_depth or the expected wait
	 * (queued + active) * ewma_service_s / streams > spill_wait_s; a device
	 * error is retried once there */
	es_device *fallback;
	int spill_depth;
	double spill_wait_s;
	double ewma_service_s;  /* mean run time, exponentially weighted (mu) */
	/* low-priority queue (shadow runs): taken only when the normal queue is
	 * empty; bounded by the capacity given at es_sched_submit_low */
	es_request *low_head, *low_tail;
	int low_queued;
	/* the low queue's own worker: a thread at SCHED_IDLE priority (its
	 * intra-op threads inherit it), so that a shadow run only ever uses
	 * CPU time no client request wants; it runs on a session of its own
	 * per version (es_version.idle_session) */
	pthread_cond_t low_cv;
	es_worker idle_worker;
	es_metric_child *m_fallback_spill_queue, *m_fallback_spill_wait,
		*m_fallback_error, *m_fallback_failed;
	/* shadow runs by where they ran: a stream right after the primary's
	 * answer, or the idle worker */
	es_metric_child *m_shadow_stream, *m_shadow_idle;

	es_metric_child *m_queue_size, *m_capacity, *m_active, *m_streams,
		*m_rejections;
};

/* Creates every configured device with its queue and stream workers, and
 * the reaper thread. On failure everything started is stopped again. */
int es_sched_start(es_server *s, const es_server_config *cfg, es_error *err);
/* Joins workers and the reaper and frees the devices. Queues must be empty
 * (es_server_drain first). Safe on a partially started server. */
void es_sched_stop(es_server *s);
es_device *es_sched_find_device(es_server *s, const char *name);

/* ---- versions and version tables (repository.c) ---------------------------
 *
 * Every model has an atomic pointer to an immutable version table. A writer
 * (holding write_mu) copies the table, changes the copy and publishes it by
 * swapping the pointer; the old table is freed, and the version references
 * it held dropped, only after a grace period in which every reader that may
 * have loaded the old pointer has left.
 *
 * Readers are counted in one of two counters chosen by the parity of an
 * epoch (the scheme of sleepable RCU with a counter flip):
 *   reader: e = epoch; readers[e&1]++; if (epoch != e) { undo; retry }
 *           t = table; ... use t ...; readers[e&1]--
 *   writer: old = exchange(table, new); e = epoch; epoch = e + 1;
 *           wait until readers[e&1] == 0; free old
 * All accesses are sequentially consistent. A reader that got `old` loaded
 * the table before the exchange, so its increment and its check of the
 * epoch came before the writer's flip: it counted itself under the parity
 * the writer then waits on (had it seen an older epoch, the previous
 * writer's flip would have followed its increment and that writer would
 * have waited for it). Readers arriving after the flip use the other
 * counter, so the wait ends even under constant traffic. Readers hold a
 * table only to look an entry up and take a reference on its version, so
 * writers wait nanoseconds.
 */

typedef struct es_vt_entry {
	int64_t number;
	es_version_state state;
	char reason[256];
	es_version *v; /* set while the version is loaded: the table's reference */
} es_vt_entry;

typedef struct es_vtable {
	size_t n;
	int64_t pinned;  /* default version chosen by a rollback; 0: none */
	es_vt_entry e[]; /* highest version first */
} es_vtable;

/* Publishes a copy of m's current table through the normal writer path. */
int es_serving_table_touch(es_servable *m);

struct es_version {
	atomic_uint refs;
	es_servable *servable; /* valid while the server lives */
	int64_t number;
	es_model *model;
	es_session **sessions; /* one per stream of the model's device */
	int n_sessions;
	es_session **fb_sessions; /* one per stream of that device's fallback */
	int n_fb_sessions;
	es_session *idle_session; /* low-priority runs (created on first use by
				   * the device's idle worker, the only user) */
	bool published;        /* was AVAILABLE: its end is reported */
	es_metric_child *m_queue_wait, *m_inference;
};

/* What the lifecycle remembers about one version number (life_mu). */
typedef struct es_vmark {
	int64_t number;
	bool seen;           /* seen_fp holds the listing of the last poll */
	uint64_t seen_fp;
	bool failed;         /* failed with these files: not retried until
			      * they change */
	uint64_t failed_fp;
	bool rolled_back;    /* retired by a rollback: not loaded again while
			      * its directory exists */
	bool on_disk;        /* in the last listing */
} es_vmark;

struct es_servable {
	es_server *srv;
	char *name;
	char *base_path;
	es_version_policy policy; /* a copy; versions owned (life_mu) */
	es_device *dev;
	bool keep_previous;       /* life_mu */
	int warmup;               /* resolved run count (life_mu) */

	_Atomic(es_vtable *) table;
	atomic_uint epoch;
	atomic_uint readers[2];
	pthread_mutex_t write_mu;

	/* lifecycle, under life_mu */
	pthread_mutex_t life_mu;
	int64_t cur_default;  /* default version after the last table change */
	int64_t prev_default; /* the default before it, kept for rollback */
	int64_t pin_from;     /* the version a rollback retired (0: none) */
	es_vmark *marks;
	size_t n_marks, cap_marks;
	bool retired;         /* removed from the configuration */
	uint64_t list_err;    /* hash of the last listing error (0: none) */

	_Atomic(void *) ext;  /* es_servable_ext */

	struct es_rollout *ro; /* labels, canary, kill switch, shadow, windows
				* (rollout.c) */

	es_metric_child *m_load_failures, *m_deadline, *m_default_changes,
		*m_rollbacks, *m_compile_onnx, *m_compile_cache;
};

/* A version that ended (its last reference dropped), reported to the
 * lifecycle thread so its table entry can say END. */
typedef struct es_ended {
	es_servable *m;
	int64_t number;
} es_ended;

struct es_mcache;

struct es_server {
	const es_server_config *cfg; /* what it was started with */
	es_metrics *metrics;
	int ncpu;
	atomic_bool draining;

	es_device *devices;
	size_t n_devices;
	_Atomic(es_model_list *) models; /* what is served now */
	es_model_list **lists;           /* every list ever published; freed
					  * at destroy (readers keep none) */
	size_t n_lists, cap_lists;
	es_servable **all;               /* every servable ever created */
	size_t n_all, cap_all;
	void (*ext_free)(void *);

	/* lifecycle */
	int poll_wait_s;
	int default_warmup;
	struct es_mcache *cache;         /* NULL: no compiled-model cache */
	es_config_reader_fn reader;
	void *reader_ctx;
	pthread_mutex_t reload_mu;
	/* the poll thread sleeps on poll_cv until the next poll or stop */
	pthread_mutex_t poll_mu;
	pthread_cond_t poll_cv;
	bool poll_stop;
	bool poll_started;
	pthread_t poller;
	/* the end thread marks ended versions END */
	pthread_mutex_t ended_mu;
	pthread_cond_t ended_cv;
	es_ended *ended;
	size_t n_ended, cap_ended;
	bool ended_stop;
	bool ended_started;
	pthread_t ender;
	bool life_sync_ready;

	/* rollouts: the guard-rail thread (rollout.c) */
	pthread_mutex_t guard_mu;
	pthread_cond_t guard_cv;
	bool guard_sync_ready; /* guard_mu and guard_cv are initialised */
	bool guard_stop;
	bool guard_started;
	pthread_t guard;
	es_metric *f_canary_killed, *f_guard_trips, *f_canary_fraction,
		*f_label_moves; /* registered by the first es_rollout_init */
	/* shadow runs (shadow.c): divergence log and its rate limit */
	struct es_shadow_log *shadow_log;

	/* The reaper completes queued requests whose deadline passed. It sleeps
	 * until reaper_wake_ns; a submitter with an earlier deadline lowers it
	 * and signals. */
	pthread_mutex_t reaper_mu;
	pthread_cond_t reaper_cv;
	bool reaper_sync_ready;
	bool reaper_stop;
	bool reaper_started;
	pthread_t reaper;
	_Atomic uint64_t reaper_wake_ns;

	/* metric families (NULL without a registry) */
	es_metric *f_queue_wait, *f_inference, *f_queue_size, *f_queue_capacity,
		*f_active, *f_streams, *f_rejections, *f_deadline,
		*f_load_seconds, *f_version_state, *f_load_failures,
		*f_default_changes, *f_rollbacks, *f_compile, *f_warmup,
		*f_fallback, *f_shadow_runs;
};

/* ---- rollouts (rollout.c) --------------------------------------------------
 *
 * Per model: labels, the canary (version or label, fraction, key source,
 * salt, kill switch, guard rails), the shadow settings, and sliding-window
 * statistics per arm. Settings are read on every request without a lock
 * (an immutable settings object swapped atomically, like version tables);
 * the kill switch is one atomic flag.
 */
struct es_rollout;
/* Called by es_servable_new (settings from mc) and on reload when the
 * model's rollout settings changed. */
int es_rollout_init(es_servable *m, const es_model_config *mc, es_error *err);
int es_rollout_update(es_servable *m, const es_model_config *mc, es_error *err);
void es_rollout_free(es_servable *m);
/* True when mc's rollout settings differ from m's. */
bool es_rollout_changed(es_servable *m, const es_model_config *mc);
/* Scheduler: one request of arm finished (ok or not; latency from
 * enqueue to end), or was refused for a full queue (ok false). */
void es_rollout_record(es_servable *m, es_arm arm, bool ok, double latency_s);
typedef enum es_shadow_event {
	ES_SHADOW_SAMPLED,   /* a request was chosen for mirroring */
	ES_SHADOW_DROPPED,   /* the shadow queue was full */
	ES_SHADOW_FAILED,    /* the shadow run failed */
	ES_SHADOW_MATCHED,   /* compared, within tolerance */
	ES_SHADOW_DIVERGED,  /* compared, outside tolerance */
} es_shadow_event;
void es_rollout_shadow_event(es_servable *m, int64_t shadow_version,
			     es_shadow_event ev);
/* The guard-rail thread: evaluates every canary once a second. */
int es_rollout_start(es_server *s, es_error *err);
void es_rollout_stop(es_server *s);
/* Evaluates m's guard rails now, as the thread does once a second; true
 * when this call tripped the kill switch (tests). */
bool es_rollout_guard_check(es_servable *m);
/* End of every es_life_sync: labels from the configuration whose version was
 * not AVAILABLE are tried again (set when it is now; logged once if not).
 * Takes life_mu, then the rollout's own settings mutex (a leaf). */
void es_rollout_sync(es_servable *m);
/* The shadow settings shadow.c needs per model (defaults when none). */
typedef struct es_shadow_params {
	int queue_size;
	double atol, rtol;
	double inline_max_s; /* es_shadow_config.inline_max_us in seconds */
} es_shadow_params;
void es_rollout_shadow_params(es_servable *m, es_shadow_params *out);
/* repository.c, for the stable arm: takes a reference on preferred when it
 * is AVAILABLE and not exclude, else on the default version when it is not
 * exclude, else on the highest AVAILABLE version other than exclude (0s:
 * none). ES_EUNAVAILABLE (message names the model) when there is none. */
int es_servable_acquire_stable(es_servable *m, int64_t preferred, int64_t exclude,
			       es_version **out, es_error *err);

/* ---- shadow runs (shadow.c) ---------------------------------------------------- */

/* Starts the divergence log (cfg->divergence_log) and metrics. */
int es_shadow_start(es_server *s, const es_server_config *cfg, es_error *err);
void es_shadow_stop(es_server *s);
/*
 * Shadow hand-over, in two steps around the primary's completion.
 * es_shadow_take (device worker, after r ran successfully and before
 * r->complete): takes r->shadow's reference and clears it, copies r's inputs
 * and the primary outputs; NULL when r has no shadow or the copy failed
 * (counted as dropped). es_shadow_queue (after r->complete; NULL is a no-op):
 * queues the copy on the shadow version's device below every normal request
 * (es_sched_submit_low; a full queue drops it, counted). The run's outputs
 * are compared with the primary's: per output, max absolute and relative
 * error, top-1 agreement for [N, classes] outputs.
 */
typedef struct es_shadow_job es_shadow_job;
es_shadow_job *es_shadow_take(es_server *s, es_request *r, const es_tensor *outputs,
			      size_t n_outputs);
void es_shadow_queue(es_server *s, es_shadow_job *j);
/* The request of job j, ready to run where the caller runs it (instead of
 * es_shadow_queue); its completion compares and frees j. *inline_max_s
 * gets the model's shadow inline_max_us in seconds. */
es_request *es_shadow_request(es_shadow_job *j, double *inline_max_s);

/* ---- scheduler additions (scheduler.c) -------------------------------------------- */

/* Queues r on r->version's device's low-priority queue; ES_EBUSY when that
 * queue already holds capacity requests, ES_ECANCELED while draining.
 * r->complete is called as for es_server_submit (drain cancels them). */
int es_sched_submit_low(es_server *s, es_request *r, int capacity, es_error *err);

/* ---- lifecycle (lifecycle.c) ---------------------------------------------- */

/* How a reconcile found the versions it loads. */
typedef enum es_sync_mode {
	ES_SYNC_STARTUP, /* files taken as complete */
	ES_SYNC_RELOAD,  /* files taken as complete */
	ES_SYNC_POLL,    /* new directories must settle first */
} es_sync_mode;

/* Brings m's loaded versions in line with its policy and the disk. Caller
 * holds s->reload_mu. Returns true when anything was loaded or unloaded. */
bool es_life_sync(es_servable *m, es_sync_mode mode, const es_actor *who);
/* Starts the poll and end threads; es_life_stop joins them. */
int es_life_start(es_server *s, es_error *err);
void es_life_stop(es_server *s);
/* Takes every version of m out of service (configuration removal). */
void es_life_retire(es_servable *m, const es_actor *who);

/* ---- repository.c internals used by lifecycle.c ---------------------------- */

/* Edits m's table under write_mu: fn changes the copy t (which has room for
 * one more entry than the current table, t->n set to the current count).
 * Returns fn's result; the copy is published only when it returns 0. */
typedef int (*es_table_edit_fn)(es_vtable *t, void *ctx);
int es_table_edit(es_servable *m, es_table_edit_fn fn, void *ctx);
/* Inside an edit: version number's entry of t, inserted in order (zeroed)
 * when missing; t has room for one more entry. */
es_vt_entry *es_table_entry(es_vtable *t, int64_t number);
/* Sets version number's entry (added in order when missing) to st with
 * reason and v (taking over the caller's reference; NULL drops the entry's
 * version). */
int es_table_set(es_servable *m, int64_t number, es_version_state st,
		 const char *reason, es_version *v);
/* Updates edgeserve_model_version_state for one version. */
void es_serving_state_metric(es_servable *m, int64_t number, es_version_state st);
/* The version requests without one get from table t (0: none). */
int64_t es_table_default(const es_vtable *t);
/* Reads m's table (a reader section) and copies what fn needs. */
es_vtable *es_table_snapshot(es_servable *m);
void es_serving_log_load(es_log_level level, const es_servable *m, int64_t number,
			 const char *phase, es_version_state st, double seconds,
			 const char *reason);
es_servable *es_servable_new(es_server *s, const es_model_config *mc,
			     const char *default_device, es_error *err);
/* Publishes a model list (takes ownership of l). Caller holds reload_mu. */
int es_server_publish_models(es_server *s, es_model_list *l);

#endif
