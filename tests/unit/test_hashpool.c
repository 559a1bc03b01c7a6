/* Unit tests for the hashing pool (src/auth/hashpool.c): bounded admission (full ->
 * false at once), done callbacks on the loop (loop_post) or on the pool thread, FIFO
 * order, backlog, and shutdown with queued and running jobs. */
#include "auth/hashpool.c"

#include <stdatomic.h>
#include <time.h>

#include "unit.h"

/* A gate the test opens to let blocked jobs finish. */
static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static bool gate_open;
static atomic_int started, worked, dones, dones_on_loop, dones_on_pool;
static struct loop *test_loop;
static pthread_t main_thread;

static void gate_reset(void)
{
	pthread_mutex_lock(&gate_mu);
	gate_open = false;
	pthread_mutex_unlock(&gate_mu);
	atomic_store(&started, 0);
	atomic_store(&worked, 0);
	atomic_store(&dones, 0);
	atomic_store(&dones_on_loop, 0);
	atomic_store(&dones_on_pool, 0);
}

static void gate_release(void)
{
	pthread_mutex_lock(&gate_mu);
	gate_open = true;
	pthread_cond_broadcast(&gate_cv);
	pthread_mutex_unlock(&gate_mu);
}

static void blocking_work(void *arg)
{
	(void)arg;
	atomic_fetch_add(&started, 1);
	pthread_mutex_lock(&gate_mu);
	while (!gate_open)
		pthread_cond_wait(&gate_cv, &gate_mu);
	pthread_mutex_unlock(&gate_mu);
	atomic_fetch_add(&worked, 1);
}

static void quick_work(void *arg)
{
	(void)arg;
	atomic_fetch_add(&worked, 1);
}

static void count_done(void *arg)
{
	(void)arg;
	atomic_fetch_add(&dones, 1);
	if (test_loop && loop_current() == test_loop)
		atomic_fetch_add(&dones_on_loop, 1);
	if (!pthread_equal(pthread_self(), main_thread) && loop_current() == NULL)
		atomic_fetch_add(&dones_on_pool, 1);
}

static void count_drop(void *arg)
{
	atomic_fetch_add((atomic_int *)arg, 1);
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* Wait up to 5 s for *v to reach want. */
static bool wait_for(atomic_int *v, int want)
{
	for (int i = 0; i < 5000; i++) {
		if (atomic_load(v) >= want)
			return true;
		sleep_ms(1);
	}
	return false;
}

TEST(bounded_queue_refuses_when_full)
{
	gate_reset();
	/* 1 thread + 2 queued: the fourth submission is refused at once */
	struct hashpool *p = hashpool_new(1, 2);
	CHECK(p != NULL);
	CHECK(hashpool_submit(p, blocking_work, NULL, count_done, NULL));
	CHECK(wait_for(&started, 1));
	CHECK(hashpool_submit(p, blocking_work, NULL, count_done, NULL));
	CHECK(hashpool_submit(p, blocking_work, NULL, count_done, NULL));
	CHECK_EQ_INT(hashpool_backlog(p), 3);
	CHECK(!hashpool_submit(p, quick_work, NULL, count_done, NULL));
	CHECK(!hashpool_submit(p, quick_work, NULL, count_done, NULL));
	CHECK_EQ_INT(hashpool_backlog(p), 3);
	gate_release();
	CHECK(wait_for(&dones, 3));
	CHECK_EQ_INT(atomic_load(&worked), 3);
	CHECK_EQ_INT(atomic_load(&dones_on_pool), 3);
	/* room again */
	for (int i = 0; i < 100 && hashpool_backlog(p) != 0; i++)
		sleep_ms(1);
	CHECK_EQ_INT(hashpool_backlog(p), 0);
	CHECK(hashpool_submit(p, quick_work, NULL, count_done, NULL));
	CHECK(wait_for(&dones, 4));
	hashpool_free(p);
}

TEST(idle_threads_accept_without_queue)
{
	gate_reset();
	/* queue_max 0: only as many jobs as idle threads */
	struct hashpool *p = hashpool_new(2, 0);
	CHECK(hashpool_submit(p, blocking_work, NULL, count_done, NULL));
	CHECK(hashpool_submit(p, blocking_work, NULL, count_done, NULL));
	CHECK(!hashpool_submit(p, blocking_work, NULL, count_done, NULL));
	CHECK(wait_for(&started, 2)); /* both run at once: two threads */
	gate_release();
	CHECK(wait_for(&dones, 2));
	hashpool_free(p);
}

static void *loop_thread(void *arg)
{
	loop_run(arg);
	return NULL;
}

TEST(done_runs_on_the_loop)
{
	gate_reset();
	test_loop = loop_new(7);
	pthread_t t;
	pthread_create(&t, NULL, loop_thread, test_loop);
	struct hashpool *p = hashpool_new(2, 16);
	for (int i = 0; i < 10; i++)
		CHECK(hashpool_submit(p, quick_work, test_loop, count_done, NULL));
	CHECK(wait_for(&dones, 10));
	CHECK_EQ_INT(atomic_load(&dones_on_loop), 10);
	CHECK_EQ_INT(atomic_load(&worked), 10);
	hashpool_free(p);
	loop_stop(test_loop);
	pthread_join(t, NULL);
	loop_free(test_loop);
	test_loop = NULL;
}

/* FIFO: with one thread, jobs run in submission order. */
static int order[8], norder;
static pthread_mutex_t order_mu = PTHREAD_MUTEX_INITIALIZER;

static void record_work(void *arg)
{
	pthread_mutex_lock(&order_mu);
	order[norder++] = (int)(intptr_t)arg;
	pthread_mutex_unlock(&order_mu);
}

TEST(fifo_order)
{
	gate_reset();
	norder = 0;
	struct hashpool *p = hashpool_new(1, 8);
	CHECK(hashpool_submit(p, blocking_work, NULL, count_done, NULL));
	CHECK(wait_for(&started, 1));
	for (int i = 0; i < 5; i++)
		CHECK(hashpool_submit(p, record_work, NULL, count_done, (void *)(intptr_t)i));
	gate_release();
	CHECK(wait_for(&dones, 6));
	CHECK_EQ_INT(norder, 5);
	for (int i = 0; i < 5; i++)
		CHECK_EQ_INT(order[i], i);
	hashpool_free(p);
}

static void *release_later(void *arg)
{
	(void)arg;
	sleep_ms(100);
	gate_release();
	return NULL;
}

TEST(shutdown_drops_queued_jobs)
{
	gate_reset();
	struct hashpool *p = hashpool_new(1, 10);
	CHECK(hashpool_submit(p, blocking_work, NULL, count_done, NULL));
	CHECK(wait_for(&started, 1));
	for (int i = 0; i < 5; i++)
		CHECK(hashpool_submit(p, quick_work, NULL, count_done, NULL));
	/* open the gate a little later, from another thread, while free waits for the thread */
	pthread_t t;
	pthread_create(&t, NULL, release_later, NULL);
	hashpool_free(p);
	pthread_join(t, NULL);
	/* the running job finished (and reported); the queued ones never ran */
	CHECK_EQ_INT(atomic_load(&worked), 1);
	CHECK_EQ_INT(atomic_load(&dones), 1);
	/* with a drop callback, each discarded job is handed back */
	gate_reset();
	static atomic_int drops;
	atomic_store(&drops, 0);
	p = hashpool_new(1, 10);
	CHECK(hashpool_submit_drop(p, blocking_work, NULL, count_done, count_drop, &drops));
	CHECK(wait_for(&started, 1));
	for (int i = 0; i < 4; i++)
		CHECK(hashpool_submit_drop(p, quick_work, NULL, count_done, count_drop, &drops));
	pthread_create(&t, NULL, release_later, NULL);
	hashpool_free(p);
	pthread_join(t, NULL);
	CHECK_EQ_INT(atomic_load(&worked), 1);
	CHECK_EQ_INT(atomic_load(&dones), 1);
	CHECK_EQ_INT(atomic_load(&drops), 4);
	/* an idle pool stops at once */
	p = hashpool_new(3, 1);
	hashpool_free(p);
	hashpool_free(NULL);
}

int main(void)
{
	main_thread = pthread_self();
	RUN(bounded_queue_refuses_when_full);
	RUN(idle_threads_accept_without_queue);
	RUN(done_runs_on_the_loop);
	RUN(fifo_order);
	RUN(shutdown_drops_queued_jobs);
	return unit_summary();
}
