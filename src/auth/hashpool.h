/* The hashing pool: a bounded set of threads for slow password work (bcrypt, pbkdf2 with
 * many iterations), so a burst of CONNECTs with such users never delays other clients'
 * messages on the loop threads.
 *
 * At most `threads` threads (the broker uses cores - 1, at least 1) and a bounded queue.
 * When the queue is full, submitting fails at once: the caller refuses the CONNECT with
 * "server busy" (0x89 / 3) instead of letting work pile up.
 */
#ifndef BW_HASHPOOL_H
#define BW_HASHPOOL_H

#include <stdbool.h>
#include <stddef.h>

struct loop;
struct hashpool;

/* Start the pool. */
struct hashpool *hashpool_new(unsigned threads, size_t queue_max);
/* Stop the threads; queued jobs are dropped (their done callbacks are not run). */
void hashpool_free(struct hashpool *p);

/* Run work(arg) on a pool thread, then done(arg) on loop l (through loop_post; with l
 * NULL, done runs on the pool thread right after work). Returns false, running nothing,
 * when the queue is full. work must not touch loop-owned state. */
bool hashpool_submit(struct hashpool *p, void (*work)(void *arg), struct loop *l, void (*done)(void *arg), void *arg);

/* Jobs waiting or running (for status output). */
size_t hashpool_backlog(struct hashpool *p);

/* ---- Added after the original interface (hashpool.c owner). ---- */

/* hashpool_submit with a drop callback: when hashpool_free discards the job before it ran,
 * drop(arg) runs instead (on the thread calling hashpool_free, after the pool threads have
 * stopped), so the submitter can answer and release what arg holds. drop NULL behaves
 * like hashpool_submit. */
bool hashpool_submit_drop(struct hashpool *p, void (*work)(void *arg), struct loop *l, void (*done)(void *arg),
			  void (*drop)(void *arg), void *arg);

#endif
