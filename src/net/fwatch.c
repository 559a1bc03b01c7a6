#include "net/fwatch.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/log.h"
#include "net/loop.h"

#define SETTLE_MS 300u

struct watched {
	int wd;
	char *dir;
	char *name;
};

struct fwatch {
	struct loop_io io;
	struct loop *loop;
	struct timer settle;
	void (*fn)(void *arg);
	void *arg;
	struct watched *v;
	size_t n;
};

static void settled(struct timer *t)
{
	struct fwatch *w = container_of(t, struct fwatch, settle);
	w->fn(w->arg);
}

static void on_inotify(struct loop_io *io, uint32_t events)
{
	(void)events;
	struct fwatch *w = container_of(io, struct fwatch, io);
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	bool hit = false;
	for (;;) {
		ssize_t n = read(io->fd, buf, sizeof buf);
		if (n <= 0)
			break;
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *ev = (const struct inotify_event *)(void *)p;
			for (size_t i = 0; i < w->n && ev->len; i++)
				if (w->v[i].wd == ev->wd && strcmp(w->v[i].name, ev->name) == 0)
					hit = true;
			p += sizeof *ev + ev->len;
		}
	}
	if (hit)
		timer_arm(w->loop, &w->settle, SETTLE_MS);
}

struct fwatch *fwatch_new(struct loop *l, void (*fn)(void *arg), void *arg)
{
	int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (fd < 0) {
		log_warn("cannot watch certificate files for changes (inotify: %s); use SIGHUP or ctl reload",
			 strerror(errno));
		return NULL;
	}
	struct fwatch *w = xcalloc(1, sizeof *w);
	w->io.fd = fd;
	w->io.cb = on_inotify;
	w->loop = l;
	w->fn = fn;
	w->arg = arg;
	timer_init(&w->settle, settled);
	loop_add(l, &w->io, EPOLLIN);
	return w;
}

bool fwatch_add(struct fwatch *w, const char *path)
{
	if (!w || !path || !*path)
		return false;
	char *d = xstrdup(path), *b = xstrdup(path);
	char *dir = dirname(d), *name = basename(b);
	int wd = inotify_add_watch(w->io.fd, dir, IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_ATTRIB);
	bool ok = wd >= 0;
	if (ok) {
		w->v = xrealloc(w->v, (w->n + 1) * sizeof *w->v);
		w->v[w->n].wd = wd;
		w->v[w->n].dir = xstrdup(dir);
		w->v[w->n].name = xstrdup(name);
		w->n++;
	} else {
		log_warn("cannot watch %s for changes: %s", dir, strerror(errno));
	}
	free(d);
	free(b);
	return ok;
}

void fwatch_free(struct fwatch *w)
{
	if (!w)
		return;
	timer_cancel(&w->settle);
	loop_del(w->loop, &w->io);
	close(w->io.fd);
	for (size_t i = 0; i < w->n; i++) {
		free(w->v[i].dir);
		free(w->v[i].name);
	}
	free(w->v);
	free(w);
}
