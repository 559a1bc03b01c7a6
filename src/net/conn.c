#include "net/conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "config/config.h"
#include "core/alloc.h"
#include "core/log.h"
#include "net/listener.h"
#include "net/proxy.h"

#define SCRATCH_SIZE (64u * 1024u)
#define READ_BUDGET (256u * 1024u) /* bytes read per connection per wakeup before yielding */
#define BLOCK_CACHE_MAX 64
#define IOV_BATCH 64
#define LINGER_MS 2000u
#define PROXY_PEEK 256u /* bytes peeked for a PROXY header; longer v2 headers are read exactly */

/* Per-thread state: every loop thread reads into one scratch buffer, recycles output
 * blocks through a small cache, and reaps closed connections at the end of an iteration. */
struct conn_thread {
	uint8_t *scratch;
	struct out_block *cache;
	int ncache;
	struct list zombies;
	struct loop_task reaper;
	bool init;
};

static _Thread_local struct conn_thread th;

/* A pending conn_migrate: departs at the end of the iteration. */
struct migration {
	struct loop_task task;
	struct conn *c;
	struct loop *to;
	void (*done)(struct conn *c, void *arg);
	void *arg;
	bool flush;
};

/* A connection waiting for its PROXY header (proxy_protocol listeners). */
struct proxy_wait {
	struct timer timer;     /* proxy_protocol_timeout */
	struct conn *c;
	bool trusted;           /* the TCP peer is in proxy_protocol_trusted */
	uint8_t *buf;           /* a v2 header longer than PROXY_PEEK, read exactly into here */
	size_t have, total;
};

static void reap(struct loop_task *t);
static void proxy_start(struct conn *c);
static void proxy_wait_free(struct conn *c);

void conn_thread_init(void)
{
	if (th.init)
		return;
	th.scratch = xmalloc(SCRATCH_SIZE);
	list_init(&th.zombies);
	list_init(&th.reaper.link);
	th.reaper.fn = reap;
	th.init = true;
}

void conn_thread_cleanup(void)
{
	if (!th.init)
		return;
	free(th.scratch);
	while (th.cache) {
		struct out_block *b = th.cache;
		th.cache = b->next;
		free(b);
	}
	th.init = false;
}

/* ---- output blocks ---- */

static struct out_block *block_new(size_t need)
{
	struct out_block *b;
	if (need <= CONN_BLOCK_SIZE && th.cache) {
		b = th.cache;
		th.cache = b->next;
		th.ncache--;
	} else {
		size_t cap = need <= CONN_BLOCK_SIZE ? CONN_BLOCK_SIZE : need;
		b = xmalloc(sizeof *b + cap);
		b->cap = (uint32_t)cap;
	}
	b->next = NULL;
	b->off = b->len = 0;
	return b;
}

static void block_free(struct out_block *b)
{
	if (b->cap == CONN_BLOCK_SIZE && th.init && th.ncache < BLOCK_CACHE_MAX) {
		b->next = th.cache;
		th.cache = b;
		th.ncache++;
		return;
	}
	free(b);
}

static void free_output(struct conn *c)
{
	while (c->out_head) {
		struct out_block *b = c->out_head;
		c->out_head = b->next;
		block_free(b);
	}
	c->out_tail = NULL;
	c->out_bytes = 0;
}

/* ---- lifecycle ---- */

static void on_event(struct loop_io *io, uint32_t events);
static void flush_task_fn(struct loop_task *t);
static void send_timer_fn(struct timer *t);
static uint64_t send_timeout_ms(const struct conn *c);
static void not_reading(struct conn *c, size_t pending, uint64_t ms);
static void close_on_error(struct conn *c, int e, const char *fallback);
static void read_task_fn(struct loop_task *t);

void conn_format_addr(const struct sockaddr *sa, char *out, size_t outlen)
{
	char host[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)sa;
		inet_ntop(AF_INET, &s4->sin_addr, host, sizeof host);
		port = ntohs(s4->sin_port);
		snprintf(out, outlen, "%s:%u", host, port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)sa;
		inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof host);
		port = ntohs(s6->sin6_port);
		snprintf(out, outlen, "[%s]:%u", host, port);
	} else {
		snprintf(out, outlen, "local");
	}
}

void conn_init(struct conn *c, struct loop *l, int fd, const struct transport_ops *tp, void *tp_state,
	       const struct conn_handler *h, struct listener *li, const struct sockaddr *peer, socklen_t peerlen)
{
	c->io.fd = fd;
	c->io.cb = on_event;
	c->loop = l;
	c->tp = tp;
	c->tp_state = tp_state;
	c->h = h;
	c->listener = li;
	c->flags = 0;
	memset(&c->peer, 0, sizeof c->peer);
	if (peer && peerlen <= sizeof c->peer)
		memcpy(&c->peer, peer, peerlen);
	conn_format_addr((const struct sockaddr *)&c->peer, c->peer_str, sizeof c->peer_str);
	c->rbuf = (struct buf){ 0 };
	c->out_head = c->out_tail = NULL;
	c->out_bytes = 0;
	list_init(&c->flush_task.link);
	c->flush_task.fn = flush_task_fn;
	list_init(&c->read_task.link);
	c->read_task.fn = read_task_fn;
	list_init(&c->zombie_link);
	c->close_reason = NULL;
	c->migration = NULL;
	c->err[0] = '\0';
	c->bytes_in = c->bytes_out = 0;
	c->pwait = NULL;
	c->proxy = NULL;
	timer_init(&c->linger_timer, NULL);
	timer_init(&c->send_timer, send_timer_fn);
	c->wprogress_ms = 0;
	c->out_max = 0;
	/* TCP_NODELAY and TCP_USER_TIMEOUT (send_timeout) come with the socket from its listener
	 * (listener_open): Linux copies them into every accepted socket. */
	loop_add(l, &c->io, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET);
	if (li && li->cfg && li->cfg->proxy_protocol)
		proxy_start(c);
	/* Start the handshake (TLS may need to wait for the ClientHello; TCP is done); on a
	 * proxy_protocol listener, read the PROXY header first. */
	loop_defer(l, &c->read_task);
}

static void reap(struct loop_task *t)
{
	(void)t;
	while (!list_empty(&th.zombies)) {
		struct conn *c = list_first(&th.zombies, struct conn, zombie_link);
		list_del_init(&c->zombie_link);
		c->h->on_close(c, c->close_reason ? c->close_reason : "closed");
		if (c->tp->destroy)
			c->tp->destroy(c);
		if (c->io.fd >= 0)
			close(c->io.fd);
		c->io.fd = -1;
		free_output(c);
		buf_free(&c->rbuf);
		proxy_wait_free(c);
		free(c->proxy);
		c->proxy = NULL;
		c->h->free(c);
	}
}

void conn_close(struct conn *c, const char *reason)
{
	if (c->flags & CONN_CLOSING)
		return;
	c->flags |= CONN_CLOSING;
	if (!c->close_reason || !(c->flags & CONN_CLOSE_AFTER_FLUSH))
		c->close_reason = reason;
	if (c->migration) {
		loop_defer_cancel(&c->migration->task);
		free(c->migration);
		c->migration = NULL;
	}
	loop_del(c->loop, &c->io);
	loop_defer_cancel(&c->flush_task);
	loop_defer_cancel(&c->read_task);
	timer_cancel(&c->linger_timer);
	timer_cancel(&c->send_timer);
	if (c->pwait)
		timer_cancel(&c->pwait->timer);
	list_push_back(&th.zombies, &c->zombie_link);
	loop_defer(c->loop, &th.reaper);
}

static void linger_expired(struct timer *t)
{
	struct conn *c = container_of(t, struct conn, linger_timer);
	conn_close(c, c->close_reason);
}

/* Output is written: half-close and discard input until the peer closes (or a grace
 * period ends), so a final CONNACK/DISCONNECT is not destroyed by a reset caused by
 * unread input. */
static void start_linger(struct conn *c)
{
	if (c->flags & CONN_LINGER)
		return;
	c->flags |= CONN_LINGER;
	if (c->tp->shutdown && (c->flags & CONN_OPEN))
		c->tp->shutdown(c);
	shutdown(c->io.fd, SHUT_WR);
	c->linger_timer.cb = linger_expired;
	timer_arm(c->loop, &c->linger_timer, LINGER_MS);
	loop_defer(c->loop, &c->read_task);
}

void conn_close_after_flush(struct conn *c, const char *reason)
{
	if (conn_closing(c))
		return;
	c->flags |= CONN_CLOSE_AFTER_FLUSH;
	c->close_reason = reason;
	c->linger_timer.cb = linger_expired;
	timer_arm(c->loop, &c->linger_timer, LINGER_MS);
	if (c->out_head)
		loop_defer(c->loop, &c->flush_task);
	else
		start_linger(c);
}

void conn_pause_read(struct conn *c)
{
	c->flags |= CONN_READ_PAUSED;
}

void conn_resume_read(struct conn *c)
{
	if (!(c->flags & CONN_READ_PAUSED))
		return;
	c->flags &= ~CONN_READ_PAUSED;
	/* Edge-triggered: data that arrived while paused raises no new event. */
	if (!conn_closing(c))
		loop_defer(c->loop, &c->read_task);
}

/* ---- output ---- */

uint8_t *conn_reserve(struct conn *c, size_t n)
{
	struct out_block *t = c->out_tail;
	if (!t || t->cap - t->len < n) {
		struct out_block *b = block_new(n);
		if (t)
			t->next = b;
		else
			c->out_head = b;
		c->out_tail = t = b;
	}
	return t->data + t->len;
}

void conn_commit(struct conn *c, size_t n)
{
	c->out_tail->len += (uint32_t)n;
	c->out_bytes += n;
	if (c->out_bytes > CONN_OUT_HIGH)
		c->flags |= CONN_ABOVE_HIGH;
	if (!(c->flags & CONN_CLOSING))
		loop_defer(c->loop, &c->flush_task);
}

void conn_write(struct conn *c, const void *p, size_t n)
{
	const uint8_t *src = p;
	while (n) {
		struct out_block *t = c->out_tail;
		size_t room = t ? t->cap - t->len : 0;
		if (!room) {
			conn_reserve(c, n < CONN_BLOCK_SIZE ? n : CONN_BLOCK_SIZE);
			t = c->out_tail;
			room = t->cap - t->len;
		}
		size_t k = n < room ? n : room;
		memcpy(t->data + t->len, src, k);
		conn_commit(c, k);
		src += k;
		n -= k;
	}
}

static void consume_output(struct conn *c, size_t n)
{
	c->out_bytes -= n;
	c->bytes_out += n;
	while (n) {
		struct out_block *b = c->out_head;
		size_t avail = b->len - b->off;
		if (n < avail) {
			b->off += (uint32_t)n;
			return;
		}
		n -= avail;
		c->out_head = b->next;
		if (!c->out_head)
			c->out_tail = NULL;
		block_free(b);
	}
}

void conn_flush(struct conn *c)
{
	if ((c->flags & (CONN_CLOSING | CONN_LINGER)) || !(c->flags & CONN_OPEN))
		return;
	c->flags &= ~(CONN_WRITE_BLOCKED | CONN_WRITE_WANTS_READ);
	bool progress = false;
	while (c->out_head) {
		struct iovec iov[IOV_BATCH];
		int cnt = 0;
		for (struct out_block *b = c->out_head; b && cnt < IOV_BATCH; b = b->next) {
			if (b->len == b->off)
				continue;
			iov[cnt].iov_base = b->data + b->off;
			iov[cnt].iov_len = b->len - b->off;
			cnt++;
		}
		if (!cnt) {
			free_output(c);
			break;
		}
		size_t n = 0;
		errno = 0;
		enum tp_result r = c->tp->writev(c, iov, cnt, &n);
		int e = errno;
		if (r == TP_OK) {
			consume_output(c, n);
			progress = true;
			continue;
		}
		if (r == TP_WANT_WRITE) {
			c->flags |= CONN_WRITE_BLOCKED;
			break;
		}
		if (r == TP_WANT_READ) {
			c->flags |= CONN_WRITE_WANTS_READ;
			break;
		}
		close_on_error(c, e, "write failed");
		return;
	}
	if (c->out_head) {
		/* Blocked: a peer that stopped reading is cut after send_timeout without progress,
		 * or at once when its backlog passes the owner's hard bound. */
		if (c->out_max && c->out_bytes > c->out_max) {
			uint64_t now = loop_now(c->loop);
			not_reading(c, c->out_bytes, timer_armed(&c->send_timer) ? now - c->wprogress_ms : 0);
			return;
		}
		uint64_t to = send_timeout_ms(c);
		if (progress || !timer_armed(&c->send_timer))
			c->wprogress_ms = loop_now(c->loop);
		if (to && !timer_armed(&c->send_timer))
			timer_arm(c->loop, &c->send_timer, to);
	} else if (timer_armed(&c->send_timer)) {
		timer_cancel(&c->send_timer);
	}
	if ((c->flags & CONN_ABOVE_HIGH) && c->out_bytes < CONN_OUT_LOW) {
		c->flags &= ~CONN_ABOVE_HIGH;
		if (c->h->on_drain && !conn_closing(c))
			c->h->on_drain(c);
	}
	if (!c->out_head && (c->flags & CONN_CLOSE_AFTER_FLUSH))
		start_linger(c);
}

/* The listener's tcp_options.send_timeout (0 = never cut for lack of progress). */
static uint64_t send_timeout_ms(const struct conn *c)
{
	const struct cfg_listener *cfg = c->listener ? c->listener->cfg : NULL;
	if (!cfg || !cfg->send_timeout_close || cfg->send_timeout_ms == UINT64_MAX)
		return 0;
	return cfg->send_timeout_ms;
}

/* The peer does not read what we send (pending bytes, queued here and in the kernel, for ms
 * without progress): close (a DISCONNECT would not be read either). */
static void not_reading(struct conn *c, size_t pending, uint64_t ms)
{
	snprintf(c->err, sizeof c->err, "not reading: %zu bytes pending for %llu.%01llu seconds", pending,
		 (unsigned long long)(ms / 1000), (unsigned long long)(ms % 1000 / 100));
	log_warn("connection %s (listener %s): %s%s, closing", c->peer_str, c->listener ? c->listener->id : "-",
		 c->err, c->out_max && c->out_bytes > c->out_max ? " (above the output bound)" : "");
	conn_close(c, c->err);
}

/* Bytes the kernel still holds for the peer (unsent or unacknowledged). */
static size_t kernel_outq(const struct conn *c)
{
	int q = 0;
	return ioctl(c->io.fd, SIOCOUTQ, &q) == 0 && q > 0 ? (size_t)q : 0;
}

/* A transport call failed (errno e saved right after it): close. ETIMEDOUT there means the
 * kernel gave up after TCP_USER_TIMEOUT (send_timeout) of undelivered output: not reading. */
static void close_on_error(struct conn *c, int e, const char *fallback)
{
	if (send_timeout_ms(c) && (e == ETIMEDOUT || strstr(c->err, strerror(ETIMEDOUT))))
		not_reading(c, c->out_bytes + kernel_outq(c), send_timeout_ms(c));
	else
		conn_close(c, c->err[0] ? c->err : fallback);
}

static void send_timer_fn(struct timer *t)
{
	struct conn *c = container_of(t, struct conn, send_timer);
	if (conn_closing(c) || !c->out_head || !(c->flags & (CONN_WRITE_BLOCKED | CONN_WRITE_WANTS_READ)))
		return; /* drained (or closing on its own); re-armed when writes block again */
	uint64_t to = send_timeout_ms(c), now = loop_now(c->loop);
	if (!to)
		return;
	uint64_t idle = now - c->wprogress_ms;
	if (idle >= to)
		not_reading(c, c->out_bytes + kernel_outq(c), idle);
	else
		timer_arm(c->loop, t, to - idle);
}

static void flush_task_fn(struct loop_task *t)
{
	conn_flush(container_of(t, struct conn, flush_task));
}

/* ---- input ---- */

static void linger_read(struct conn *c)
{
	for (;;) {
		ssize_t n = read(c->io.fd, th.scratch, SCRATCH_SIZE);
		if (n > 0)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		conn_close(c, c->close_reason);
		return;
	}
}

/* ---- PROXY protocol phase ---- */

const struct proxy_info *conn_proxy(const struct conn *c)
{
	return c->proxy;
}

const char *conn_proxy_cn(const struct conn *c)
{
	return c->proxy ? proxy_verified_cn(c->proxy) : NULL;
}

/* Client-influenced text (SNI, CN) made safe for a log line. */
static const char *log_safe(const char *s, char *buf, size_t cap)
{
	size_t o = 0;
	for (; *s && o + 5 < cap; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch < 0x20 || ch == 0x7f || ch == '\\')
			o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", ch);
		else
			buf[o++] = (char)ch;
	}
	buf[o < cap ? o : cap - 1] = '\0';
	return buf;
}

static void proxy_timeout(struct timer *t)
{
	struct proxy_wait *pw = container_of(t, struct proxy_wait, timer);
	struct conn *c = pw->c;
	unsigned long long ms = (unsigned long long)c->listener->cfg->proxy_protocol_timeout_ms;
	if (pw->trusted)
		log_warn("listener %s: no complete PROXY header from %s within proxy_protocol_timeout (%llu ms), closing",
			 c->listener->id, c->peer_str, ms);
	else
		log_info("listener %s: nothing usable from %s within proxy_protocol_timeout (%llu ms), closing",
			 c->listener->id, c->peer_str, ms);
	conn_close(c, "PROXY header timeout");
}

static void proxy_start(struct conn *c)
{
	const struct cfg_listener *cfg = c->listener->cfg;
	struct proxy_wait *pw = xcalloc(1, sizeof *pw);
	pw->c = c;
	pw->trusted = listener_proxy_trusted(cfg, (const struct sockaddr *)&c->peer);
	timer_init(&pw->timer, proxy_timeout);
	if (cfg->proxy_protocol_timeout_ms)
		timer_arm(c->loop, &pw->timer, cfg->proxy_protocol_timeout_ms);
	c->pwait = pw;
}

static void proxy_wait_free(struct conn *c)
{
	struct proxy_wait *pw = c->pwait;
	if (!pw)
		return;
	timer_cancel(&pw->timer);
	free(pw->buf);
	free(pw);
	c->pwait = NULL;
}

static void proxy_io_error(struct conn *c, int err)
{
	snprintf(c->err, sizeof c->err, "read: %s", strerror(err));
	conn_close(c, c->err);
}

static void proxy_invalid(struct conn *c, const char *why)
{
	log_warn("listener %s: invalid PROXY header from %s: %s, closing", c->listener->id, c->peer_str, why);
	conn_close(c, "invalid PROXY header");
}

/* Remove exactly n already-peeked bytes from the socket. */
static bool proxy_consume(struct conn *c, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = read(c->io.fd, th.scratch, n - got);
		if (r > 0) {
			got += (size_t)r;
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			proxy_io_error(c, errno);
		else
			conn_close(c, "PROXY header vanished from the socket");
		return false;
	}
	return true;
}

/* A valid header from a trusted peer: adopt the client address, keep the information. */
static bool proxy_accept(struct conn *c, const struct proxy_info *info, size_t used)
{
	const struct listener *li = c->listener;
	char via[sizeof c->peer_str];
	memcpy(via, c->peer_str, sizeof via);
	struct proxy_info *keep = xmalloc(sizeof *keep);
	*keep = *info;
	keep->via = c->peer;
	c->proxy = keep;
	c->bytes_in += used;
	if (!info->local) {
		memset(&c->peer, 0, sizeof c->peer);
		memcpy(&c->peer, &info->src, info->src_len);
		conn_format_addr((const struct sockaddr *)&c->peer, c->peer_str, sizeof c->peer_str);
		/* access_rules were checked against the proxy at accept; now against the client. */
		if (!listener_access_allowed(li->cfg, (const struct sockaddr *)&c->peer)) {
			log_info("listener %s: connection from %s (via proxy %s) refused by access_rules", li->id,
				 c->peer_str, via);
			atomic_fetch_add(&c->listener->refused, 1);
			conn_close(c, "refused by access_rules");
			return false;
		}
	}
	if (log_enabled(LOG_DEBUG)) {
		char sni[2 * PROXY_AUTHORITY_MAX], cn[2 * PROXY_CN_MAX];
		log_debug("listener %s: PROXY v%u header from %s: %s%s%s%s%s%s%s", li->id, info->version, via,
			  info->command_local ? "LOCAL (health check)" : info->local ? "no client address" : "client ",
			  info->local ? "" : c->peer_str, info->has_authority ? ", sni " : "",
			  info->has_authority ? log_safe(info->authority, sni, sizeof sni) : "",
			  info->has_ssl ? (info->cert_verified ? ", verified certificate" :
					   info->cert_presented ? ", UNVERIFIED certificate" : ", TLS") : "",
			  info->has_cn ? " cn " : "", info->has_cn ? log_safe(info->cn, cn, sizeof cn) : "");
	}
	proxy_wait_free(c);
	return true;
}

/* A v2 header too long to peek: read exactly its bytes into pw->buf. */
static bool proxy_read_long(struct conn *c)
{
	struct proxy_wait *pw = c->pwait;
	while (pw->have < pw->total) {
		ssize_t r = read(c->io.fd, pw->buf + pw->have, pw->total - pw->have);
		if (r > 0) {
			pw->have += (size_t)r;
			continue;
		}
		if (r == 0) {
			log_warn("listener %s: %s closed the connection inside its PROXY header", c->listener->id,
				 c->peer_str);
			conn_close(c, "closed by peer inside the PROXY header");
			return false;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return false;
		proxy_io_error(c, errno);
		return false;
	}
	struct proxy_info info;
	size_t used = 0;
	const char *why = NULL;
	enum proxy_result r = proxy_parse(pw->buf, pw->total, &info, &used, &why);
	if (r != PROXY_OK || used != pw->total) {
		proxy_invalid(c, why ? why : "inconsistent length");
		return false;
	}
	return proxy_accept(c, &info, used);
}

/* Advance the PROXY phase. True when it is over and the transport handshake may start;
 * false while waiting for more bytes or when the connection was closed. */
static bool proxy_step(struct conn *c)
{
	struct proxy_wait *pw = c->pwait;
	const char *lid = c->listener->id;
	if (pw->buf)
		return proxy_read_long(c);
	uint8_t peek[PROXY_PEEK];
	ssize_t n;
	do {
		n = recv(c->io.fd, peek, sizeof peek, MSG_PEEK);
	} while (n < 0 && errno == EINTR);
	if (n < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			proxy_io_error(c, errno);
		return false;
	}
	if (n == 0) {
		/* A load balancer's TCP health check: connect, close. Not news. */
		log_debug("listener %s: %s closed the connection before any data", lid, c->peer_str);
		conn_close(c, "closed by peer before the PROXY header");
		return false;
	}
	size_t len = (size_t)n;
	switch (proxy_detect(peek, len)) {
	case PROXY_DETECT_MORE:
		return false;
	case PROXY_DETECT_NONE:
		if (!pw->trusted) {
			proxy_wait_free(c); /* a direct client */
			return true;
		}
		log_warn("listener %s: connection from %s (a proxy_protocol_trusted address) did not start with a "
			 "PROXY header, closing", lid, c->peer_str);
		conn_close(c, "no PROXY header");
		return false;
	default:
		break;
	}
	if (!pw->trusted) {
		log_warn("listener %s: PROXY header from untrusted address %s refused", lid, c->peer_str);
		conn_close(c, "PROXY header from an untrusted address");
		return false;
	}
	struct proxy_info info;
	size_t used = 0;
	const char *why = NULL;
	enum proxy_result r = proxy_parse(peek, len, &info, &used, &why);
	if (r == PROXY_INVALID) {
		proxy_invalid(c, why);
		return false;
	}
	if (r == PROXY_NEED_MORE) {
		if (used > sizeof peek) {
			pw->total = used;
			pw->buf = xmalloc(used);
			pw->have = 0;
			return proxy_read_long(c);
		}
		return false; /* edge-triggered: the next segment raises a new event */
	}
	if (!proxy_consume(c, used))
		return false;
	return proxy_accept(c, &info, used);
}

static bool do_handshake(struct conn *c)
{
	if (!c->tp->handshake) {
		c->flags |= CONN_OPEN;
	} else {
		enum tp_result r = c->tp->handshake(c);
		if (r == TP_WANT_READ || r == TP_WANT_WRITE)
			return false;
		if (r != TP_OK) {
			conn_close(c, c->err[0] ? c->err : "handshake failed");
			return false;
		}
		c->flags |= CONN_OPEN;
	}
	c->h->on_open(c);
	if (c->out_head)
		loop_defer(c->loop, &c->flush_task);
	return !conn_closing(c);
}

static void do_read(struct conn *c)
{
	size_t budget = READ_BUDGET;
	c->flags &= ~(CONN_READ_WANTS_WRITE | CONN_READ_PENDING);
	while (!(c->flags & (CONN_CLOSING | CONN_CLOSE_AFTER_FLUSH | CONN_READ_PAUSED))) {
		uint8_t *dst;
		size_t cap;
		if (c->rbuf.len) {
			size_t want = c->rbuf.len < 4096 ? 4096 : c->rbuf.len;
			buf_reserve(&c->rbuf, want);
			dst = c->rbuf.data + c->rbuf.len;
			cap = c->rbuf.cap - c->rbuf.len;
		} else {
			dst = th.scratch;
			cap = SCRATCH_SIZE;
		}
		size_t n = 0;
		errno = 0;
		enum tp_result r = c->tp->read(c, dst, cap, &n);
		int e = errno;
		if (r == TP_WANT_READ)
			return;
		if (r == TP_WANT_WRITE) {
			c->flags |= CONN_READ_WANTS_WRITE;
			return;
		}
		if (r == TP_EOF) {
			conn_close(c, "closed by peer");
			return;
		}
		if (r == TP_ERROR) {
			close_on_error(c, e, "read failed");
			return;
		}
		c->bytes_in += n;
		if (c->rbuf.len) {
			c->rbuf.len += n;
			size_t used = c->h->on_data(c, c->rbuf.data, c->rbuf.len);
			if (c->flags & CONN_CLOSING)
				return;
			if (used >= c->rbuf.len)
				buf_free(&c->rbuf); /* idle connections hold no input buffer */
			else
				buf_consume(&c->rbuf, used);
		} else {
			size_t used = c->h->on_data(c, th.scratch, n);
			if (c->flags & CONN_CLOSING)
				return;
			if (used < n)
				buf_append(&c->rbuf, th.scratch + used, n - used);
		}
		if (n >= budget) {
			c->flags |= CONN_READ_PENDING;
			loop_defer(c->loop, &c->read_task);
			return;
		}
		budget -= n;
	}
}

/* Hand buffered input (left over from before a pause or a migration) to the owner. */
static void replay_buffered(struct conn *c)
{
	if (!c->rbuf.len || (c->flags & (CONN_CLOSING | CONN_CLOSE_AFTER_FLUSH | CONN_READ_PAUSED)))
		return;
	size_t used = c->h->on_data(c, c->rbuf.data, c->rbuf.len);
	if (c->flags & CONN_CLOSING)
		return;
	if (used >= c->rbuf.len)
		buf_free(&c->rbuf);
	else
		buf_consume(&c->rbuf, used);
}

#define EV_REPLAY (1u << 31) /* internal: present buffered input first */

static void service(struct conn *c, uint32_t events)
{
	if (c->flags & CONN_CLOSING)
		return;
	if (c->flags & CONN_LINGER) {
		linger_read(c);
		return;
	}
	if (!(c->flags & CONN_OPEN)) {
		if (c->pwait && !proxy_step(c))
			return;
		if (!do_handshake(c))
			return;
		events |= EPOLLIN;
	}
	if ((c->flags & CONN_READ_PAUSED) && (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && !(events & EV_REPLAY)) {
		/* The peer went away while we were not reading (a CONNECT being authenticated):
		 * close now, so the work done for it can be dropped — unless it left bytes we have
		 * not read yet (packets pipelined before closing), which still count. */
		int pending = 0;
		if ((events & (EPOLLHUP | EPOLLERR)) || (ioctl(c->io.fd, FIONREAD, &pending) == 0 && pending == 0)) {
			conn_close(c, "closed by peer");
			return;
		}
	}
	bool readable = events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR);
	bool writable = events & (EPOLLOUT | EPOLLHUP | EPOLLERR);
	if (writable && (c->flags & CONN_READ_WANTS_WRITE))
		readable = true;
	if ((writable && (c->flags & CONN_WRITE_BLOCKED)) || (readable && (c->flags & CONN_WRITE_WANTS_READ)))
		conn_flush(c);
	if (events & EV_REPLAY)
		replay_buffered(c);
	if (readable)
		do_read(c);
}

void conn_read_now(struct conn *c)
{
	if (c->flags & CONN_OPEN)
		service(c, EPOLLIN | EV_REPLAY);
}

static void on_event(struct loop_io *io, uint32_t events)
{
	service(container_of(io, struct conn, io), events & ~EV_REPLAY);
}

static void read_task_fn(struct loop_task *t)
{
	service(container_of(t, struct conn, read_task), EPOLLIN | EV_REPLAY);
}

/* ---- migration ---- */

static void migrate_arrive(void *arg)
{
	struct migration *m = arg;
	struct conn *c = m->c;
	c->loop = loop_current();
	c->flags &= ~CONN_READ_PAUSED;
	loop_add(c->loop, &c->io, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET);
	if (m->flush || c->out_head)
		loop_defer(c->loop, &c->flush_task);
	m->done(c, m->arg);
	free(m);
	/* Edge-triggered registration reports current readiness, but buffered bytes need a nudge. */
	if (!conn_closing(c) && !(c->flags & CONN_READ_PAUSED))
		loop_defer(c->loop, &c->read_task);
}

static void migrate_depart(struct loop_task *t)
{
	struct migration *m = container_of(t, struct migration, task);
	struct conn *c = m->c;
	c->migration = NULL;
	m->flush = list_linked(&c->flush_task.link);
	loop_del(c->loop, &c->io);
	loop_defer_cancel(&c->flush_task);
	loop_defer_cancel(&c->read_task);
	timer_cancel(&c->linger_timer);
	timer_cancel(&c->send_timer);
	loop_post(m->to, migrate_arrive, m);
}

void conn_migrate(struct conn *c, struct loop *to, void (*done)(struct conn *c, void *arg), void *arg)
{
	struct migration *m = xmalloc(sizeof *m);
	list_init(&m->task.link);
	m->task.fn = migrate_depart;
	m->c = c;
	m->to = to;
	m->done = done;
	m->arg = arg;
	m->flush = false;
	c->migration = m;
	c->flags |= CONN_READ_PAUSED;
	loop_defer(c->loop, &m->task);
}

/* ---- TCP transport ---- */

static enum tp_result tcp_read(struct conn *c, uint8_t *buf, size_t len, size_t *n)
{
	for (;;) {
		ssize_t r = read(c->io.fd, buf, len);
		if (r > 0) {
			*n = (size_t)r;
			return TP_OK;
		}
		if (r == 0)
			return TP_EOF;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return TP_WANT_READ;
		snprintf(c->err, sizeof c->err, "read: %s", strerror(errno));
		return TP_ERROR;
	}
}

static enum tp_result tcp_writev(struct conn *c, const struct iovec *iov, int iovcnt, size_t *n)
{
	for (;;) {
		ssize_t r = writev(c->io.fd, iov, iovcnt);
		if (r >= 0) {
			*n = (size_t)r;
			return r > 0 ? TP_OK : TP_WANT_WRITE;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return TP_WANT_WRITE;
		snprintf(c->err, sizeof c->err, "write: %s", strerror(errno));
		return TP_ERROR;
	}
}

const struct transport_ops conn_tcp_transport = {
	.name = "tcp",
	.handshake = NULL,
	.read = tcp_read,
	.writev = tcp_writev,
	.shutdown = NULL,
	.destroy = NULL,
};
