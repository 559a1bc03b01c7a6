/* A small generic connection pool for blocking database clients (hiredis, libpq,
 * libmariadb), so that no loop thread ever waits for a backend.
 *
 *   - `threads` pool threads, each owning at most one connection, opened lazily on its
 *     first job and reopened after errors;
 *   - one bounded FIFO of jobs; dbpool_submit never blocks (a short mutex hold) and fails
 *     at once when the queue is full;
 *   - a per-job deadline (submission + timeout_ms): a job still waiting, or still running,
 *     at its deadline completes with DBPOOL_TIMEOUT (a watchdog thread enforces it, so a
 *     backend stuck in a read cannot hold the answer back);
 *   - backend health: a failed connect marks the backend down; while down, jobs fail at
 *     once with the last error until the retry time (exponential backoff, 250 ms .. 4 s),
 *     then a connect is tried again. Down/up transitions are logged once each, never per
 *     job;
 *   - dbpool_free stops cleanly: queued jobs complete with DBPOOL_SHUTDOWN, running ones
 *     are interrupted and complete normally, threads are joined, connections closed.
 *
 * Every submitted job gets exactly one done() call, on a pool thread (a worker or the
 * watchdog), then exactly one release() call once no thread uses it any more. After a
 * TIMEOUT done(), the backend's run() may still be working on the job: done() must only
 * read what run() does not write.
 */
#ifndef BW_DBPOOL_H
#define BW_DBPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dbpool;

enum dbpool_rc {
	DBPOOL_OK,        /* run() produced its answer (stored in the job) */
	DBPOOL_ERR_QUERY, /* the backend answered with an error; the connection stays usable */
	DBPOOL_ERR_CONN,  /* the connection failed during the job; it is closed */
	DBPOOL_TIMEOUT,   /* the deadline passed (waiting for a thread, connecting or running) */
	DBPOOL_DOWN,      /* the backend cannot be reached (connect failed, or in backoff) */
	DBPOOL_SHUTDOWN,  /* the pool stopped before the job ran */
};

/* What a backend provides. ctx is the pointer given to dbpool_new; conn what connect()
 * returned. deadline_ms is on clock_mono_ms(). err receives a short reason on failure
 * (no credentials). All callbacks run on pool threads. */
struct dbpool_backend {
	const char *name; /* "redis", "postgresql", "mysql": for log lines */
	/* Open a connection by deadline_ms, or NULL with err filled. */
	void *(*connect)(void *ctx, uint64_t deadline_ms, char *err, size_t errlen);
	/* Run job on conn, answering by deadline_ms when possible. Must not close conn. */
	enum dbpool_rc (*run)(void *ctx, void *conn, void *job, uint64_t deadline_ms, char *err, size_t errlen);
	void (*close)(void *ctx, void *conn);
	/* Cheap check without I/O: may conn take another job? */
	bool (*healthy)(void *ctx, void *conn);
	/* Optional: called from another thread while run() is in progress on conn (at
	 * shutdown): make it return soon, e.g. shutdown(2) on its socket. conn stays valid for
	 * the duration of the call. */
	void (*interrupt)(void *ctx, void *conn);
	/* The job's outcome: exactly once per submitted job. err is "" for DBPOOL_OK. */
	void (*done)(void *ctx, void *job, enum dbpool_rc rc, const char *err);
	/* The job is no longer used by the pool: free it. Exactly once, after done(). */
	void (*release)(void *ctx, void *job);
};

struct dbpool_cfg {
	const char *id;      /* for log lines: "password_based:redis" */
	const char *target;  /* for log lines: "127.0.0.1:6379" */
	unsigned threads;    /* 1.. */
	size_t queue_max;    /* jobs waiting (not running) at most */
	uint64_t timeout_ms; /* per-job deadline after submission */
};

/* Start the pool's threads (connections open lazily). be and ctx must outlive the pool. */
struct dbpool *dbpool_new(const struct dbpool_backend *be, void *ctx, const struct dbpool_cfg *cfg);
/* Stop and free the pool (see above). Not from a pool thread. NULL is ignored. */
void dbpool_free(struct dbpool *p);
/* Queue job. Returns false, calling nothing, when the queue is full or the pool stops;
 * the caller still owns job then. Never blocks. Thread-safe. */
bool dbpool_submit(struct dbpool *p, void *job);
/* Jobs waiting or running (status output, tests). */
size_t dbpool_backlog(struct dbpool *p);
/* True when the last connect attempt failed and none succeeded since. */
bool dbpool_is_down(struct dbpool *p);
/* A text for an rc ("timeout", ...). */
const char *dbpool_rc_str(enum dbpool_rc rc);

#endif
