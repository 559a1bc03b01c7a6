#include "net/loop.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"

#define TICK_MS 10u
#define WHEEL_BITS 12u
#define WHEEL_SLOTS (1u << WHEEL_BITS)
#define WHEEL_MASK (WHEEL_SLOTS - 1u)
#define MAX_EVENTS 256

struct post {
	struct post *next;
	void (*fn)(void *arg);
	void *arg;
};

struct loop {
	int id;
	int epfd;
	void *user;
	uint64_t now_ms;
	uint64_t base_ms;   /* monotonic ms at creation; ticks count from here */
	uint64_t cur_tick;  /* every slot up to and including this tick has been processed */
	size_t ntimers;
	struct list slots[WHEEL_SLOTS];
	uint64_t bitmap[WHEEL_SLOTS / 64];
	struct list deferred;
	/* inbox */
	struct loop_io wake;
	pthread_mutex_t inbox_lock;
	struct post *inbox_head, **inbox_tail;
	atomic_int notified;
	atomic_bool stop;
};

static _Thread_local struct loop *current_loop;

static uint64_t now_tick(const struct loop *l)
{
	return (l->now_ms - l->base_ms) / TICK_MS;
}

static size_t run_posts(struct loop *l);

static void inbox_drain(struct loop *l)
{
	uint64_t v;
	(void)!read(l->wake.fd, &v, sizeof v);
	atomic_store(&l->notified, 0);
	run_posts(l);
}

static size_t run_posts(struct loop *l)
{
	pthread_mutex_lock(&l->inbox_lock);
	struct post *p = l->inbox_head;
	l->inbox_head = NULL;
	l->inbox_tail = &l->inbox_head;
	pthread_mutex_unlock(&l->inbox_lock);
	size_t n = 0;
	while (p) {
		struct post *next = p->next;
		p->fn(p->arg);
		free(p);
		p = next;
		n++;
	}
	return n;
}

static void on_wake(struct loop_io *io, uint32_t events)
{
	(void)events;
	struct loop *l = container_of(io, struct loop, wake);
	inbox_drain(l);
}

struct loop *loop_new(int id)
{
	struct loop *l = xcalloc(1, sizeof *l);
	l->id = id;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0) {
		log_error("epoll_create1: %s", strerror(errno));
		abort();
	}
	l->now_ms = l->base_ms = clock_mono_ms();
	for (size_t i = 0; i < WHEEL_SLOTS; i++)
		list_init(&l->slots[i]);
	list_init(&l->deferred);
	pthread_mutex_init(&l->inbox_lock, NULL);
	l->inbox_tail = &l->inbox_head;
	l->wake.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (l->wake.fd < 0) {
		log_error("eventfd: %s", strerror(errno));
		abort();
	}
	l->wake.cb = on_wake;
	loop_add(l, &l->wake, EPOLLIN);
	return l;
}

void loop_free(struct loop *l)
{
	if (!l)
		return;
	struct post *p = l->inbox_head;
	while (p) {
		struct post *next = p->next;
		free(p);
		p = next;
	}
	close(l->wake.fd);
	close(l->epfd);
	pthread_mutex_destroy(&l->inbox_lock);
	free(l);
}

int loop_id(const struct loop *l)
{
	return l->id;
}

void loop_set_user(struct loop *l, void *user)
{
	l->user = user;
}

void *loop_user(const struct loop *l)
{
	return l->user;
}

struct loop *loop_current(void)
{
	return current_loop;
}

int loop_add(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = io };
	return epoll_ctl(l->epfd, EPOLL_CTL_ADD, io->fd, &ev);
}

int loop_mod(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = io };
	return epoll_ctl(l->epfd, EPOLL_CTL_MOD, io->fd, &ev);
}

void loop_del(struct loop *l, struct loop_io *io)
{
	if (io->fd >= 0)
		epoll_ctl(l->epfd, EPOLL_CTL_DEL, io->fd, NULL);
}

uint64_t loop_now(const struct loop *l)
{
	return l->now_ms;
}

void loop_stop(struct loop *l)
{
	atomic_store(&l->stop, true);
	uint64_t one = 1;
	(void)!write(l->wake.fd, &one, sizeof one);
}

void loop_post(struct loop *l, void (*fn)(void *arg), void *arg)
{
	struct post *p = xmalloc(sizeof *p);
	p->next = NULL;
	p->fn = fn;
	p->arg = arg;
	pthread_mutex_lock(&l->inbox_lock);
	*l->inbox_tail = p;
	l->inbox_tail = &p->next;
	pthread_mutex_unlock(&l->inbox_lock);
	/* Only the first post since the last drain pays for the eventfd write. */
	if (atomic_exchange(&l->notified, 1) == 0) {
		uint64_t one = 1;
		(void)!write(l->wake.fd, &one, sizeof one);
	}
}

static void run_deferred(struct loop *l);

size_t loop_drain(struct loop *l)
{
	struct loop *prev = current_loop;
	current_loop = l;
	size_t total = 0, n;
	do {
		n = run_posts(l);
		run_deferred(l);
		total += n;
	} while (n);
	current_loop = prev;
	return total;
}

void loop_defer(struct loop *l, struct loop_task *t)
{
	if (list_linked(&t->link))
		return;
	list_push_back(&l->deferred, &t->link);
}

void loop_defer_cancel(struct loop_task *t)
{
	if (list_linked(&t->link))
		list_del_init(&t->link);
}

/* ---- timers ---- */

void timer_init(struct timer *t, void (*cb)(struct timer *t))
{
	list_init(&t->link);
	t->expires_tick = 0;
	t->loop = NULL;
	t->cb = cb;
}

static void slot_mark(struct loop *l, size_t slot)
{
	l->bitmap[slot / 64] |= 1ull << (slot % 64);
}

static void slot_insert(struct loop *l, struct timer *t)
{
	size_t slot = t->expires_tick & WHEEL_MASK;
	list_push_back(&l->slots[slot], &t->link);
	slot_mark(l, slot);
}

void timer_arm(struct loop *l, struct timer *t, uint64_t delay_ms)
{
	timer_cancel(t);
	l->ntimers++;
	uint64_t ticks = (delay_ms + TICK_MS - 1) / TICK_MS;
	if (ticks == 0)
		ticks = 1;
	/* Ticks count from cur_tick, the last processed one, so nothing lands in the past. */
	uint64_t base = now_tick(l);
	if (base < l->cur_tick)
		base = l->cur_tick;
	t->expires_tick = base + ticks;
	t->loop = l;
	slot_insert(l, t);
}

void timer_cancel(struct timer *t)
{
	if (!timer_armed(t))
		return;
	list_del_init(&t->link);
	if (t->loop && t->loop->ntimers)
		t->loop->ntimers--;
	/* The slot's bitmap bit is cleared lazily when the slot is next processed. */
}

uint64_t timer_remaining_ms(const struct loop *l, const struct timer *t)
{
	uint64_t tick = now_tick(l);
	return t->expires_tick > tick ? (t->expires_tick - tick) * TICK_MS : 0;
}

static void run_slot(struct loop *l, size_t slot, uint64_t tick)
{
	struct list due;
	list_init(&due);
	list_splice_back(&due, &l->slots[slot]);
	l->bitmap[slot / 64] &= ~(1ull << (slot % 64));
	while (!list_empty(&due)) {
		struct timer *t = list_first(&due, struct timer, link);
		list_del_init(&t->link);
		if (t->expires_tick <= tick) {
			l->ntimers--;
			t->cb(t);
		} else {
			slot_insert(l, t); /* a later round of the wheel */
		}
	}
}

static void run_timers(struct loop *l)
{
	uint64_t tick = now_tick(l);
	if (tick <= l->cur_tick)
		return;
	uint64_t from = l->cur_tick + 1;
	if (tick - from >= WHEEL_SLOTS)
		from = tick - WHEEL_SLOTS + 1; /* every slot is visited once anyway */
	for (uint64_t k = from; k <= tick; k++) {
		size_t slot = k & WHEEL_MASK;
		if (l->bitmap[slot / 64] & (1ull << (slot % 64)))
			run_slot(l, slot, tick);
	}
	l->cur_tick = tick;
}

/* Milliseconds until the next non-empty slot, or -1 when no timer is armed. */
static int next_timeout(const struct loop *l)
{
	if (l->ntimers == 0)
		return -1;
	uint64_t start = l->cur_tick + 1;
	for (uint64_t d = 0; d < WHEEL_SLOTS;) {
		size_t slot = (start + d) & WHEEL_MASK;
		uint64_t word = l->bitmap[slot / 64] >> (slot % 64);
		if (word) {
			d += (uint64_t)__builtin_ctzll(word);
			uint64_t due_ms = l->base_ms + (start + d) * TICK_MS;
			return due_ms > l->now_ms ? (int)(due_ms - l->now_ms) : 0;
		}
		d += 64 - slot % 64;
	}
	return (int)(WHEEL_SLOTS * TICK_MS);
}

static void run_deferred(struct loop *l)
{
	/* Tasks may defer more tasks; those run in the same pass. */
	while (!list_empty(&l->deferred)) {
		struct loop_task *t = list_first(&l->deferred, struct loop_task, link);
		list_del_init(&t->link);
		t->fn(t);
	}
}

void loop_run(struct loop *l)
{
	struct epoll_event evs[MAX_EVENTS];
	current_loop = l;
	while (!atomic_load(&l->stop)) {
		int timeout = list_empty(&l->deferred) ? next_timeout(l) : 0;
		int n = epoll_wait(l->epfd, evs, MAX_EVENTS, timeout);
		if (n < 0 && errno != EINTR) {
			log_error("epoll_wait: %s", strerror(errno));
			abort();
		}
		l->now_ms = clock_mono_ms();
		for (int i = 0; i < n; i++) {
			struct loop_io *io = evs[i].data.ptr;
			io->cb(io, evs[i].events);
		}
		run_timers(l);
		run_deferred(l);
	}
	run_deferred(l);
	current_loop = NULL;
}
