#include "net/listener.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "config/config.h"
#include "core/alloc.h"
#include "core/log.h"
#include "net/conn.h"

#define ACCEPT_BATCH 32

bool listener_access_allowed(const struct cfg_listener *cfg, const struct sockaddr *peer)
{
	for (size_t i = 0; i < cfg->n_access_rules; i++) {
		const struct cfg_access_rule *r = &cfg->access_rules[i];
		if (r->all || cfg_cidr_match(&r->cidr, peer))
			return r->allow;
	}
	return true;
}

bool listener_proxy_trusted(const struct cfg_listener *cfg, const struct sockaddr *peer)
{
	for (size_t i = 0; i < cfg->n_proxy_trusted; i++) {
		if (cfg_cidr_match(&cfg->proxy_trusted[i], peer))
			return true;
	}
	return false;
}

bool listener_open(struct listener *li, const struct cfg_listener *cfg, listener_accept_fn on_accept, char *err,
		   size_t errlen)
{
	li->cfg = cfg;
	li->id = cfg->id;
	li->on_accept = on_accept;
	atomic_init(&li->nconns, 0);
	atomic_init(&li->refused, 0);
	atomic_init(&li->conn_delayed, 0);
	li->conn_limited = cfg->max_conn_rate > 0;
	li->msg_limited = cfg->messages_rate > 0;
	li->bytes_limited = cfg->bytes_rate > 0;
	if (li->conn_limited)
		rl_params_init(&li->conn_rl, cfg->max_conn_rate, cfg->max_conn_burst);
	if (li->msg_limited)
		rl_params_init(&li->msg_rl, cfg->messages_rate, cfg->messages_burst);
	if (li->bytes_limited)
		rl_params_init(&li->bytes_rl, cfg->bytes_rate, cfg->bytes_burst);
	pthread_mutex_init(&li->conn_lock, NULL);
	/* Full; last_ms 0 means the first refill (at any loop time) just keeps it full. */
	rl_bucket_init(&li->conn_bucket, &li->conn_rl, 0);
	int fam = cfg->bind.ss_family;
	int fd = socket(fam, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "listener %s: socket: %s", cfg->id, strerror(errno));
		return false;
	}
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (fam == AF_INET6) {
		/* "[::]:1883" means both families, as users expect. */
		int zero = 0;
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
	}
	if (fam == AF_INET || fam == AF_INET6) {
		/* Accepted sockets inherit both (Linux), which saves two syscalls per connection. */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		/* Output the kernel holds but cannot send (the peer's window stays shut, or nothing
		 * is acknowledged) counts against send_timeout too: the kernel aborts the connection
		 * with ETIMEDOUT (conn.c reports it as not reading). */
		if (cfg->send_timeout_close && cfg->send_timeout_ms != UINT64_MAX) {
			unsigned int ut = cfg->send_timeout_ms > INT_MAX ? INT_MAX : (unsigned int)cfg->send_timeout_ms;
			if (setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof ut) != 0)
				log_warn("listener %s: TCP_USER_TIMEOUT: %s", cfg->id, strerror(errno));
		}
	}
	if (bind(fd, (const struct sockaddr *)&cfg->bind, cfg->bind_len) < 0) {
		snprintf(err, errlen, "listener %s: cannot bind %s: %s", cfg->id, cfg->bind_str, strerror(errno));
		close(fd);
		return false;
	}
	if (listen(fd, 4096) < 0) {
		snprintf(err, errlen, "listener %s: listen on %s: %s", cfg->id, cfg->bind_str, strerror(errno));
		close(fd);
		return false;
	}
	li->fd = fd;
	return true;
}

static void shed_one(struct listener_reg *r)
{
	/* Out of descriptors: free the spare, accept and close one connection so the
	 * backlog does not wake us forever, then take the spare back. */
	if (r->spare_fd >= 0) {
		close(r->spare_fd);
		int fd = accept4(r->li->fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0)
			close(fd);
		r->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	}
}

/* max_conn_rate: one token per accepted connection, from the bucket every worker shares. */
static bool conn_token_take(struct listener *li, uint64_t now, uint64_t *wait_ms)
{
	pthread_mutex_lock(&li->conn_lock);
	bool ok = rl_bucket_take(&li->conn_bucket, &li->conn_rl, now, 1);
	if (!ok)
		*wait_ms = rl_bucket_wait_ms(&li->conn_bucket, &li->conn_rl);
	pthread_mutex_unlock(&li->conn_lock);
	return ok;
}

static void conn_token_put(struct listener *li)
{
	pthread_mutex_lock(&li->conn_lock);
	rl_bucket_put(&li->conn_bucket, &li->conn_rl, 1);
	pthread_mutex_unlock(&li->conn_lock);
}

static void on_rl_timer(struct timer *t)
{
	struct listener_reg *r = container_of(t, struct listener_reg, rl_timer);
	if (!r->rl_paused)
		return;
	r->rl_paused = false;
	/* Level-triggered: connections waiting in the backlog wake us at once. */
	loop_add(r->loop, &r->io, EPOLLIN | EPOLLEXCLUSIVE);
}

/* Out of connection tokens: stop accepting on this loop (connections wait in the kernel
 * backlog) until the bucket has refilled. EPOLLEXCLUSIVE registrations cannot be modified,
 * so the socket is removed from this loop's epoll and added back by the timer. */
static void pause_accepting(struct listener_reg *r, uint64_t wait_ms)
{
	if (!r->rl_paused) {
		r->rl_paused = true;
		loop_del(r->loop, &r->io);
		atomic_fetch_add(&r->li->conn_delayed, 1);
	}
	timer_arm(r->loop, &r->rl_timer, wait_ms ? wait_ms : 1);
}

static void on_listen_event(struct loop_io *io, uint32_t events)
{
	(void)events;
	struct listener_reg *r = container_of(io, struct listener_reg, io);
	struct listener *li = r->li;
	for (int i = 0; i < ACCEPT_BATCH; i++) {
		struct sockaddr_storage ss;
		socklen_t slen = sizeof ss;
		uint64_t wait_ms = 0;
		if (li->conn_limited && !conn_token_take(li, loop_now(r->loop), &wait_ms)) {
			pause_accepting(r, wait_ms);
			return;
		}
		int fd = accept4(li->fd, (struct sockaddr *)&ss, &slen, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0 && li->conn_limited)
			conn_token_put(li); /* nothing accepted: the token was not used */
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE) {
				log_warn("listener %s: out of file descriptors, shedding a connection", li->id);
				shed_one(r);
			} else if (errno != EAGAIN && errno != EWOULDBLOCK) {
				log_warn("listener %s: accept: %s", li->id, strerror(errno));
			}
			return;
		}
		if (!listener_access_allowed(li->cfg, (struct sockaddr *)&ss)) {
			char peer[64];
			conn_format_addr((struct sockaddr *)&ss, peer, sizeof peer);
			log_info("listener %s: connection from %s refused by access_rules", li->id, peer);
			atomic_fetch_add(&li->refused, 1);
			close(fd);
			continue;
		}
		unsigned long n = atomic_fetch_add(&li->nconns, 1) + 1;
		if (li->cfg->max_connections && n > li->cfg->max_connections) {
			atomic_fetch_sub(&li->nconns, 1);
			atomic_fetch_add(&li->refused, 1);
			char peer[64];
			conn_format_addr((struct sockaddr *)&ss, peer, sizeof peer);
			log_warn("listener %s: max_connections (%llu) reached, refusing %s", li->id,
				 (unsigned long long)li->cfg->max_connections, peer);
			close(fd);
			continue;
		}
		li->on_accept(li, r->loop, fd, (struct sockaddr *)&ss, slen);
	}
}

void listener_attach(struct listener *li, struct loop **loops, int n)
{
	li->regs = xcalloc((size_t)n, sizeof *li->regs);
	li->nregs = n;
	for (int i = 0; i < n; i++) {
		struct listener_reg *r = &li->regs[i];
		r->li = li;
		r->loop = loops[i];
		r->io.fd = li->fd;
		r->io.cb = on_listen_event;
		r->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		timer_init(&r->rl_timer, on_rl_timer);
		r->rl_paused = false;
		/* Level-triggered + EPOLLEXCLUSIVE: one worker per wakeup, none starve. */
		loop_add(loops[i], &r->io, EPOLLIN | EPOLLEXCLUSIVE);
	}
}

void listener_close(struct listener *li)
{
	for (int i = 0; i < li->nregs; i++) {
		timer_cancel(&li->regs[i].rl_timer);
		if (!li->regs[i].rl_paused)
			loop_del(li->regs[i].loop, &li->regs[i].io);
		li->regs[i].rl_paused = false;
		if (li->regs[i].spare_fd >= 0)
			close(li->regs[i].spare_fd);
	}
	free(li->regs);
	li->regs = NULL;
	li->nregs = 0;
	if (li->fd >= 0)
		close(li->fd);
	li->fd = -1;
}
