/* Event loop: one per worker thread (epoll, edge-triggered for connections).
 *
 * A loop owns:
 *   - file descriptors registered with loop_add (struct loop_io embedded in the owner);
 *   - a timer wheel (10 ms ticks, 4096 slots, a bitmap of non-empty slots), so arming,
 *     re-arming and cancelling are O(1) and an idle loop sleeps until the next timer;
 *   - an inbox for messages from other threads (loop_post), drained once per wakeup;
 *   - end-of-iteration hooks (loop_defer): work batched during one wakeup (flushing
 *     output queues, freeing closed connections, handing deliveries to other loops)
 *     runs once, after every ready event has been handled.
 * Everything except loop_post and loop_stop must be called on the loop's own thread.
 */
#ifndef BW_LOOP_H
#define BW_LOOP_H

#include <stdbool.h>
#include <stdint.h>

#include "core/list.h"

struct loop;

/* A registered descriptor. Embed in the owning object; cb gets the epoll events. */
struct loop_io {
	int fd;
	void (*cb)(struct loop_io *io, uint32_t events);
};

/* A timer. Embed, initialise once with timer_init, then arm/cancel freely. */
struct timer {
	struct list link;      /* in a wheel slot while armed */
	uint64_t expires_tick; /* absolute tick (10 ms units) */
	struct loop *loop;     /* the loop it is armed on */
	void (*cb)(struct timer *t);
};

/* A deferred task run at the end of the current iteration (or the next one). */
struct loop_task {
	struct list link;
	void (*fn)(struct loop_task *t);
};

/* Create a loop; id is a small integer naming the worker (used in logs and routing). */
struct loop *loop_new(int id);
/* Free a stopped loop. Registered fds are not closed; pending posts are dropped. */
void loop_free(struct loop *l);
int loop_id(const struct loop *l);
/* Opaque pointer for the loop's owner (the broker worker). */
void loop_set_user(struct loop *l, void *user);
void *loop_user(const struct loop *l);
/* The loop running on the calling thread, or NULL. */
struct loop *loop_current(void);

/* Register / change / remove a descriptor (events are EPOLLIN, EPOLLOUT, EPOLLET, ...).
 * Return 0 or -1 with errno. */
int loop_add(struct loop *l, struct loop_io *io, uint32_t events);
int loop_mod(struct loop *l, struct loop_io *io, uint32_t events);
void loop_del(struct loop *l, struct loop_io *io);

/* Run until loop_stop. */
void loop_run(struct loop *l);
/* Ask a loop to return from loop_run; safe from any thread. */
void loop_stop(struct loop *l);

/* Monotonic milliseconds, cached at the start of each wakeup. */
uint64_t loop_now(const struct loop *l);

/* Timers: delay in milliseconds, rounded up to the 10 ms tick. Re-arming an armed
 * timer moves it. Callbacks run on the loop thread and may re-arm their timer. */
void timer_init(struct timer *t, void (*cb)(struct timer *t));
void timer_arm(struct loop *l, struct timer *t, uint64_t delay_ms);
void timer_cancel(struct timer *t);
static inline bool timer_armed(const struct timer *t)
{
	return list_linked(&t->link);
}
/* Milliseconds until an armed timer fires (0 if due); meaningless when unarmed. */
uint64_t timer_remaining_ms(const struct loop *l, const struct timer *t);

/* Run fn(arg) on loop l's thread at its next wakeup; safe from any thread. Posts from
 * one thread to one loop run in order. */
void loop_post(struct loop *l, void (*fn)(void *arg), void *arg);

/* Run every pending post and deferred task now; for shutdown, after the loop's thread
 * has stopped, so that nothing posted to it is lost. Returns the number of posts run. */
size_t loop_drain(struct loop *l);

/* Queue t to run at the end of this iteration (once; queuing a queued task is a no-op).
 * Initialise t->link with list_init before first use. */
void loop_defer(struct loop *l, struct loop_task *t);
/* Cancel a queued task (no-op when not queued). */
void loop_defer_cancel(struct loop_task *t);

#endif
