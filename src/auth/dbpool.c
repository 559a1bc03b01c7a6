/* Generic backend connection pool (see dbpool.h).
 *
 * Locking: one mutex per pool protects the queue, the live list, every job's state
 * fields and the health fields. Backend callbacks (connect, run, close, done, release)
 * are never called with the mutex held, except interrupt(), which must be cheap.
 *
 * A job's life: submit puts it on `queue` (FIFO, waiting for a thread) and on `live`
 * (every job not yet answered, in deadline order: all jobs of a pool share one timeout,
 * so submission order is deadline order). A worker takes it off `queue` and runs it; the
 * answer goes out through done() by whoever comes first: the worker with the result, or
 * the watchdog at the deadline. References (refs) decide who calls release(): the
 * execution holds one (the worker, or the watchdog for a job that never left the queue),
 * a done() in progress on the watchdog holds another.
 */
#include "auth/dbpool.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/list.h"
#include "core/log.h"

#define BACKOFF_MIN_MS 250
#define BACKOFF_MAX_MS 4000
#define ERRLEN 200

struct pjob {
	struct list qlink;  /* in p->queue while waiting for a thread */
	struct list alink;  /* in p->live until answered */
	void *job;
	uint64_t deadline;  /* clock_mono_ms() */
	unsigned refs;
	bool running;       /* a worker took it */
	bool completed;     /* done() was called or is being called */
};

struct worker {
	struct dbpool *p;
	pthread_t th;
	bool started;
	void *conn;   /* owned by this worker's thread */
	bool in_run;  /* under p->mu: run() may be in progress on conn */
};

struct dbpool {
	const struct dbpool_backend *be;
	void *ctx;
	char *id, *target;
	uint64_t timeout_ms;
	size_t queue_max;

	pthread_mutex_t mu;
	pthread_cond_t work_cv; /* workers: a job was queued, or stop */
	pthread_cond_t dog_cv;  /* watchdog: a job went live, or stop */
	struct list queue, live;
	size_t nqueued, nlive;
	bool stopping;

	/* backend health, under mu */
	bool down, ever_up;
	uint64_t retry_at;
	unsigned backoff_ms;
	char last_err[ERRLEN];

	unsigned nworkers;
	struct worker *w;
	pthread_t dog;
	bool dog_started;
};

const char *dbpool_rc_str(enum dbpool_rc rc)
{
	switch (rc) {
	case DBPOOL_OK: return "ok";
	case DBPOOL_ERR_QUERY: return "query error";
	case DBPOOL_ERR_CONN: return "connection error";
	case DBPOOL_TIMEOUT: return "timeout";
	case DBPOOL_DOWN: return "backend down";
	case DBPOOL_SHUTDOWN: return "shutting down";
	}
	return "?";
}

static void deadline_ts(uint64_t ms, struct timespec *ts)
{
	ts->tv_sec = (time_t)(ms / 1000);
	ts->tv_nsec = (long)(ms % 1000) * 1000000L;
}

/* Drop one reference (mu held). True when the caller must release the job. */
static bool unref_locked(struct pjob *j)
{
	return --j->refs == 0;
}

static void release_job(struct dbpool *p, struct pjob *j)
{
	p->be->release(p->ctx, j->job);
	free(j);
}

/* ---- health ---- */

static void note_down(struct dbpool *p, const char *why)
{
	uint64_t now = clock_mono_ms();
	pthread_mutex_lock(&p->mu);
	if (!p->down) {
		p->down = true;
		p->backoff_ms = BACKOFF_MIN_MS;
		log_warn("%s: %s %s is unreachable: %s (requests fail until it is back)", p->id, p->be->name, p->target,
			 why);
	} else if (now >= p->retry_at) {
		p->backoff_ms = p->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : p->backoff_ms * 2;
	}
	if (p->retry_at < now + p->backoff_ms)
		p->retry_at = now + p->backoff_ms;
	snprintf(p->last_err, sizeof p->last_err, "%s", why);
	pthread_mutex_unlock(&p->mu);
}

static void note_up(struct dbpool *p)
{
	pthread_mutex_lock(&p->mu);
	if (p->down)
		log_warn("%s: %s %s is reachable again", p->id, p->be->name, p->target);
	else if (!p->ever_up)
		log_info("%s: connected to %s %s", p->id, p->be->name, p->target);
	p->down = false;
	p->ever_up = true;
	p->backoff_ms = BACKOFF_MIN_MS;
	pthread_mutex_unlock(&p->mu);
}

bool dbpool_is_down(struct dbpool *p)
{
	pthread_mutex_lock(&p->mu);
	bool d = p->down;
	pthread_mutex_unlock(&p->mu);
	return d;
}

/* ---- workers ---- */

static bool stopping(struct dbpool *p)
{
	pthread_mutex_lock(&p->mu);
	bool s = p->stopping;
	pthread_mutex_unlock(&p->mu);
	return s;
}

static void close_conn(struct worker *w)
{
	if (w->conn) {
		w->p->be->close(w->p->ctx, w->conn);
		w->conn = NULL;
	}
}

/* Open the worker's connection, unless the backend is down and not due for a retry. */
static enum dbpool_rc open_conn(struct worker *w, uint64_t deadline, char *err, size_t errlen)
{
	struct dbpool *p = w->p;
	pthread_mutex_lock(&p->mu);
	if (p->stopping) {
		pthread_mutex_unlock(&p->mu);
		snprintf(err, errlen, "shutting down");
		return DBPOOL_SHUTDOWN;
	}
	if (p->down && clock_mono_ms() < p->retry_at) {
		snprintf(err, errlen, "%s", p->last_err);
		pthread_mutex_unlock(&p->mu);
		return DBPOOL_DOWN;
	}
	pthread_mutex_unlock(&p->mu);
	char cerr[ERRLEN] = "";
	void *c = p->be->connect(p->ctx, deadline, cerr, sizeof cerr);
	if (!c) {
		if (!cerr[0])
			snprintf(cerr, sizeof cerr, "cannot connect");
		note_down(p, cerr);
		snprintf(err, errlen, "%s", cerr);
		return DBPOOL_DOWN;
	}
	note_up(p);
	w->conn = c;
	return DBPOOL_OK;
}

static enum dbpool_rc execute(struct worker *w, struct pjob *j, char *err, size_t errlen)
{
	struct dbpool *p = w->p;
	for (int attempt = 0;; attempt++) {
		if (clock_mono_ms() >= j->deadline) {
			snprintf(err, errlen, "timed out after %llu ms", (unsigned long long)p->timeout_ms);
			return DBPOOL_TIMEOUT;
		}
		if (w->conn && !p->be->healthy(p->ctx, w->conn))
			close_conn(w);
		bool fresh = false;
		if (!w->conn) {
			enum dbpool_rc rc = open_conn(w, j->deadline, err, errlen);
			if (rc != DBPOOL_OK)
				return rc;
			fresh = true;
		}
		pthread_mutex_lock(&p->mu);
		if (p->stopping) {
			pthread_mutex_unlock(&p->mu);
			snprintf(err, errlen, "shutting down");
			return DBPOOL_SHUTDOWN;
		}
		w->in_run = true;
		pthread_mutex_unlock(&p->mu);

		enum dbpool_rc rc = p->be->run(p->ctx, w->conn, j->job, j->deadline, err, errlen);

		pthread_mutex_lock(&p->mu);
		w->in_run = false;
		pthread_mutex_unlock(&p->mu);
		if (rc == DBPOOL_ERR_CONN || !p->be->healthy(p->ctx, w->conn))
			close_conn(w);
		/* A connection that served earlier jobs may have gone stale (server restart,
		 * idle timeout): one more try on a fresh one. */
		if (rc == DBPOOL_ERR_CONN && !fresh && attempt == 0 && !stopping(p)) {
			log_debug("%s: %s connection lost (%s); reconnecting", p->id, p->be->name, err);
			continue;
		}
		return rc;
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct dbpool *p = w->p;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->stopping && list_empty(&p->queue))
			pthread_cond_wait(&p->work_cv, &p->mu);
		if (p->stopping)
			break;
		struct pjob *j = list_first(&p->queue, struct pjob, qlink);
		list_del_init(&j->qlink);
		p->nqueued--;
		j->running = true;
		pthread_mutex_unlock(&p->mu);

		char err[ERRLEN] = "";
		enum dbpool_rc rc = execute(w, j, err, sizeof err);

		pthread_mutex_lock(&p->mu);
		j->running = false;
		bool answer = !j->completed;
		j->completed = true;
		if (list_linked(&j->alink)) {
			list_del_init(&j->alink);
			p->nlive--;
		}
		pthread_mutex_unlock(&p->mu);
		if (answer) {
			char msg[ERRLEN + 64] = "";
			if (rc != DBPOOL_OK)
				snprintf(msg, sizeof msg, "%s %s: %s", p->be->name, p->target, err[0] ? err : dbpool_rc_str(rc));
			p->be->done(p->ctx, j->job, rc, msg);
		}
		pthread_mutex_lock(&p->mu);
		if (unref_locked(j)) {
			pthread_mutex_unlock(&p->mu);
			release_job(p, j);
			pthread_mutex_lock(&p->mu);
		}
	}
	pthread_mutex_unlock(&p->mu);
	close_conn(w);
	return NULL;
}

/* ---- watchdog: answers jobs at their deadline ---- */

static void *dog_main(void *arg)
{
	struct dbpool *p = arg;
	pthread_mutex_lock(&p->mu);
	while (!p->stopping) {
		if (list_empty(&p->live)) {
			pthread_cond_wait(&p->dog_cv, &p->mu);
			continue;
		}
		struct pjob *j = list_first(&p->live, struct pjob, alink);
		if (clock_mono_ms() < j->deadline) {
			struct timespec ts;
			deadline_ts(j->deadline, &ts);
			pthread_cond_timedwait(&p->dog_cv, &p->mu, &ts);
			continue;
		}
		list_del_init(&j->alink);
		p->nlive--;
		j->completed = true;
		bool waiting = list_linked(&j->qlink);
		if (waiting) {
			/* Never ran: the watchdog takes over the execution's reference. */
			list_del_init(&j->qlink);
			p->nqueued--;
		} else {
			j->refs++;
		}
		pthread_mutex_unlock(&p->mu);
		char msg[ERRLEN + 64];
		snprintf(msg, sizeof msg, "%s %s: timed out after %llu ms%s", p->be->name, p->target,
			 (unsigned long long)p->timeout_ms, waiting ? " waiting for a free connection" : "");
		p->be->done(p->ctx, j->job, DBPOOL_TIMEOUT, msg);
		pthread_mutex_lock(&p->mu);
		if (unref_locked(j)) {
			pthread_mutex_unlock(&p->mu);
			release_job(p, j);
			pthread_mutex_lock(&p->mu);
		}
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

/* ---- public ---- */

struct dbpool *dbpool_new(const struct dbpool_backend *be, void *ctx, const struct dbpool_cfg *cfg)
{
	struct dbpool *p = xcalloc(1, sizeof *p);
	p->be = be;
	p->ctx = ctx;
	p->id = xstrdup(cfg->id ? cfg->id : be->name);
	p->target = xstrdup(cfg->target ? cfg->target : "");
	p->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : 5000;
	p->queue_max = cfg->queue_max ? cfg->queue_max : 1024;
	p->backoff_ms = BACKOFF_MIN_MS;
	list_init(&p->queue);
	list_init(&p->live);
	pthread_mutex_init(&p->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&p->work_cv, NULL);
	pthread_cond_init(&p->dog_cv, &ca);
	pthread_condattr_destroy(&ca);

	p->nworkers = cfg->threads ? cfg->threads : 1;
	p->w = xcalloc(p->nworkers, sizeof *p->w);
	for (unsigned i = 0; i < p->nworkers; i++) {
		p->w[i].p = p;
		int e = pthread_create(&p->w[i].th, NULL, worker_main, &p->w[i]);
		if (e)
			log_error("%s: cannot start pool thread %u: %s", p->id, i + 1, strerror(e));
		p->w[i].started = e == 0;
	}
	int e = pthread_create(&p->dog, NULL, dog_main, p);
	if (e)
		log_error("%s: cannot start the pool's watchdog thread: %s", p->id, strerror(e));
	p->dog_started = e == 0;
	return p;
}

bool dbpool_submit(struct dbpool *p, void *job)
{
	struct pjob *j = xcalloc(1, sizeof *j);
	j->job = job;
	j->refs = 1;
	pthread_mutex_lock(&p->mu);
	j->deadline = clock_mono_ms() + p->timeout_ms; /* under the lock: `live` stays in deadline order */
	if (p->stopping || p->nqueued >= p->queue_max) {
		pthread_mutex_unlock(&p->mu);
		free(j);
		return false;
	}
	bool first = list_empty(&p->live);
	list_push_back(&p->queue, &j->qlink);
	list_push_back(&p->live, &j->alink);
	p->nqueued++;
	p->nlive++;
	pthread_cond_signal(&p->work_cv);
	if (first)
		pthread_cond_signal(&p->dog_cv);
	pthread_mutex_unlock(&p->mu);
	return true;
}

size_t dbpool_backlog(struct dbpool *p)
{
	pthread_mutex_lock(&p->mu);
	size_t n = p->nlive;
	pthread_mutex_unlock(&p->mu);
	return n;
}

void dbpool_free(struct dbpool *p)
{
	if (!p)
		return;
	struct list dropped;
	list_init(&dropped);
	pthread_mutex_lock(&p->mu);
	p->stopping = true;
	while (!list_empty(&p->queue)) {
		struct pjob *j = list_first(&p->queue, struct pjob, qlink);
		list_del_init(&j->qlink);
		list_del_init(&j->alink);
		p->nqueued--;
		p->nlive--;
		j->completed = true;
		list_push_back(&dropped, &j->qlink);
	}
	for (unsigned i = 0; i < p->nworkers; i++)
		if (p->w[i].in_run && p->w[i].conn && p->be->interrupt)
			p->be->interrupt(p->ctx, p->w[i].conn);
	pthread_cond_broadcast(&p->work_cv);
	pthread_cond_broadcast(&p->dog_cv);
	pthread_mutex_unlock(&p->mu);

	while (!list_empty(&dropped)) {
		struct pjob *j = list_first(&dropped, struct pjob, qlink);
		list_del_init(&j->qlink);
		char msg[ERRLEN];
		snprintf(msg, sizeof msg, "%s %s: shutting down", p->be->name, p->target);
		p->be->done(p->ctx, j->job, DBPOOL_SHUTDOWN, msg);
		release_job(p, j);
	}
	for (unsigned i = 0; i < p->nworkers; i++)
		if (p->w[i].started)
			pthread_join(p->w[i].th, NULL);
	if (p->dog_started)
		pthread_join(p->dog, NULL);
	/* Jobs the watchdog was about to time out when it stopped are answered by their
	 * workers, which have all finished: nothing is left. */
	pthread_cond_destroy(&p->work_cv);
	pthread_cond_destroy(&p->dog_cv);
	pthread_mutex_destroy(&p->mu);
	free(p->w);
	free(p->id);
	free(p->target);
	free(p);
}
