/* The hashing pool (hashpool.h): a fixed set of threads taking jobs from one FIFO under a
 * mutex. Admission is bounded: at most threads + queue_max jobs are in the pool at once
 * (running or waiting), so a job is accepted while a thread is idle or the queue has room,
 * and refused at once otherwise. */
#include "auth/hashpool.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/alloc.h"
#include "core/list.h"
#include "core/log.h"
#include "net/loop.h"

struct job {
	struct list link;
	void (*work)(void *arg);
	void (*done)(void *arg);
	void (*drop)(void *arg);
	struct loop *loop;
	void *arg;
};

struct hashpool {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct list queue;     /* waiting jobs, oldest first */
	size_t waiting;        /* length of queue */
	size_t running;        /* jobs taken by a thread and not finished */
	size_t limit;          /* threads + queue_max */
	bool stopping;
	unsigned nthreads;
	pthread_t *threads;
};

static void *pool_thread(void *arg)
{
	struct hashpool *p = arg;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->stopping && list_empty(&p->queue))
			pthread_cond_wait(&p->cv, &p->mu);
		if (p->stopping)
			break;
		struct job *j = list_first(&p->queue, struct job, link);
		list_del_init(&j->link);
		p->waiting--;
		p->running++;
		pthread_mutex_unlock(&p->mu);

		j->work(j->arg);
		if (j->done) {
			if (j->loop)
				loop_post(j->loop, j->done, j->arg);
			else
				j->done(j->arg);
		}
		free(j);

		pthread_mutex_lock(&p->mu);
		p->running--;
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

struct hashpool *hashpool_new(unsigned threads, size_t queue_max)
{
	if (threads == 0)
		threads = 1;
	struct hashpool *p = xcalloc(1, sizeof *p);
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	list_init(&p->queue);
	p->limit = threads + queue_max;
	p->threads = xcalloc(threads, sizeof *p->threads);
	/* Pool threads never take signals: the main thread reads them through a signalfd. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (unsigned i = 0; i < threads; i++) {
		if (pthread_create(&p->threads[i], NULL, pool_thread, p) != 0) {
			log_error("hashing pool: cannot start thread %u of %u", i + 1, threads);
			break;
		}
		char name[16];
		snprintf(name, sizeof name, "bw-hash-%u", i);
		pthread_setname_np(p->threads[i], name);
		p->nthreads++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (p->nthreads == 0) {
		hashpool_free(p);
		return NULL;
	}
	p->limit = p->nthreads + queue_max;
	return p;
}

void hashpool_free(struct hashpool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->stopping = true;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	for (unsigned i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	while (!list_empty(&p->queue)) {
		struct job *j = list_first(&p->queue, struct job, link);
		list_del_init(&j->link);
		if (j->drop)
			j->drop(j->arg);
		free(j);
	}
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	free(p->threads);
	free(p);
}

bool hashpool_submit(struct hashpool *p, void (*work)(void *arg), struct loop *l, void (*done)(void *arg), void *arg)
{
	return hashpool_submit_drop(p, work, l, done, NULL, arg);
}

bool hashpool_submit_drop(struct hashpool *p, void (*work)(void *arg), struct loop *l, void (*done)(void *arg),
			  void (*drop)(void *arg), void *arg)
{
	struct job *j = xmalloc(sizeof *j);
	j->work = work;
	j->done = done;
	j->drop = drop;
	j->loop = l;
	j->arg = arg;
	list_init(&j->link);
	pthread_mutex_lock(&p->mu);
	bool ok = !p->stopping && p->waiting + p->running < p->limit;
	if (ok) {
		list_push_back(&p->queue, &j->link);
		p->waiting++;
		pthread_cond_signal(&p->cv);
	}
	pthread_mutex_unlock(&p->mu);
	if (!ok)
		free(j);
	return ok;
}

size_t hashpool_backlog(struct hashpool *p)
{
	pthread_mutex_lock(&p->mu);
	size_t n = p->waiting + p->running;
	pthread_mutex_unlock(&p->mu);
	return n;
}
