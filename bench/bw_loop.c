/* bw_loop.c: bwbench's worker threads.
 *
 * Each worker runs one epoll loop (edge-triggered) over the non-blocking client connections
 * it owns, and plays its share of the scenario:
 *   conn    `slots` (its share of -c): each slot opens a connection (TCP, TLS, CONNECT),
 *           waits for CONNACK, sends DISCONNECT + close_notify and starts the next one
 *           until -n connections have been started by all workers together;
 *   idle    opens its share of -n connections, at most its share of -c at a time, and
 *           holds them (PINGREQ every keepalive / 2) until the main thread says stop;
 *   p2p, fanout, fanin
 *           subscribers s with s % threads == id, publishers likewise. Publishers are kept
 *           on a run queue while they may send (one write of up to --batch PUBLISH packets
 *           per turn), and leave it when the socket is full (back on EPOLLOUT), when QoS 1
 *           has --inflight unacked messages (back on PUBACK), or when pacing / --rate says
 *           wait (rechecked every millisecond).
 *
 * Connection life: CS_TCP -> CS_TLS -> CS_CONNACK [-> CS_SUBACK] -> CS_READY -> CS_CLOSING
 * (DISCONNECT, close_notify, shutdown(SHUT_WR), wait for the broker's EOF, at most 2 s)
 * -> CS_DEAD. A connection is never freed inside its own event: conn_kill() closes the fd
 * and puts it on the worker's dead list, which is emptied after the event batch.
 *
 * Buffers: reads go to the worker's scratch buffer; an incomplete packet is kept in the
 * connection (rbuf). Output is queued in the connection's out buffer and written with one
 * write/SSL_write per flush, so acks and publishes are pipelined. Idle connections keep
 * neither buffer (and the client SSL_CTX uses SSL_MODE_RELEASE_BUFFERS).
 */
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include "bwbench.h"

#define SEQ_BITS 40
#define SEQ_MASK ((1ull << SEQ_BITS) - 1)
#define CLOSE_LINGER_NS 2000000000ull  /* wait this long for the broker's EOF after DISCONNECT */
#define WAIT_RECHECK_NS 1000000ull     /* publishers waiting on pacing / rate: recheck period */
#define STALL_NS 500000000ull          /* QoS 0 pacing: no progress this long = messages lost */
#define OUT_MAX (256u * 1024)          /* a publisher stops adding to a fuller out buffer */

enum conn_state { CS_TCP, CS_TLS, CS_CONNACK, CS_SUBACK, CS_READY, CS_CLOSING, CS_DEAD };
enum conn_role { ROLE_SLOT, ROLE_IDLE, ROLE_SUB, ROLE_PUB };
enum { WHY_ACK, WHY_WINDOW, WHY_RATE };

struct conn {
	int fd;
	uint8_t state, role;
	bool wblocked;          /* last write would block: wait for EPOLLOUT */
	bool read_wants_write;  /* SSL_read asked for a writable socket */
	bool on_closing;
	uint32_t idx;           /* slot / position in w->conns / subscriber / publisher index */
	SSL *ssl;
	uint8_t *out;           /* pending output: out[ohead .. ohead + olen) */
	uint32_t ohead, olen, ocap;
	uint8_t *rbuf;          /* incomplete packet carried to the next read */
	uint32_t rlen, rcap;
	uint64_t t0;            /* connect start; when closing: the linger deadline */
	struct conn *cprev, *cnext; /* closing list */
	struct worker *w;
};

struct slot {
	struct conn *c;
	SSL_SESSION *sess;  /* --resume: session of the slot's previous connection */
	bool retired;
};

struct worker {
	int id, epfd;
	struct wcount cnt;
	struct lat_res lat;
	uint8_t *scratch;
	size_t scratch_cap;
	uint64_t now;
	int phase;
	char err[256];
	uint64_t conn_seq;
	/* conn */
	struct slot *slots;
	uint32_t nslots;
	/* idle */
	struct conn **conns;
	uint32_t nconns, conns_cap;
	uint64_t quota, started;
	uint64_t last_ping;
	/* setup of idle / pub / sub connections */
	uint32_t pending, conc;
	/* pub/sub */
	uint32_t *my_subs, nmy_subs, next_sub;
	uint32_t *my_pubs, nmy_pubs, next_pub;
	bool pumping, stopping;
	struct pub **rq[2];
	uint32_t nrq[2];
	int rqcur;
	struct pub **waitq;     /* waiting for the subscriber side (pacing window) or --rate */
	uint32_t nwait;
	uint64_t next_wait_check;
	bool delivered;         /* this turn's events delivered messages: recheck the waiters */
	uint64_t dups, unexpected;
	/* connections */
	struct conn *closing;
	struct conn **dead;
	uint32_t ndead, dead_cap;
	uint64_t last_sweep;
};

static void cnt_add(_Atomic uint64_t *x, uint64_t d)
{
	atomic_store_explicit(x, atomic_load_explicit(x, memory_order_relaxed) + d, memory_order_relaxed);
}

static void cnt_sub(_Atomic uint64_t *x, uint64_t d)
{
	atomic_store_explicit(x, atomic_load_explicit(x, memory_order_relaxed) - d, memory_order_relaxed);
}

/* ---- output buffer ---- */

/* Room for n more bytes at the tail of c->out; returns where they go (caller adds to olen). */
static uint8_t *out_reserve(struct conn *c, size_t n)
{
	if (c->ohead + c->olen + n > c->ocap) {
		if (c->ohead) {
			memmove(c->out, c->out + c->ohead, c->olen);
			c->ohead = 0;
		}
		if (c->olen + n > c->ocap) {
			size_t cap = c->ocap ? c->ocap : 256;
			while (cap < c->olen + n)
				cap *= 2;
			c->out = xrealloc(c->out, cap);
			c->ocap = (uint32_t)cap;
		}
	}
	return c->out + c->ohead + c->olen;
}

static void out_put(struct conn *c, const void *p, size_t n)
{
	memcpy(out_reserve(c, n), p, n);
	c->olen += (uint32_t)n;
}

/* ---- errors ---- */

/* Describes the last OpenSSL failure (e = SSL_get_error) in w->err. */
static const char *ssl_errstr(struct conn *c, int e, int ret)
{
	struct worker *w = c->w;
	unsigned long err = ERR_get_error();
	if (err) {
		char buf[200];
		ERR_error_string_n(err, buf, sizeof buf);
		long v = SSL_get_verify_result(c->ssl);
		if (v != X509_V_OK)
			snprintf(w->err, sizeof w->err, "%s (verify: %s)", buf, X509_verify_cert_error_string(v));
		else
			snprintf(w->err, sizeof w->err, "%s", buf);
	} else if (e == SSL_ERROR_SYSCALL) {
		snprintf(w->err, sizeof w->err, "%s",
			 ret == 0 || errno == 0 ? "connection closed by the broker" : strerror(errno));
	} else if (e == SSL_ERROR_ZERO_RETURN) {
		snprintf(w->err, sizeof w->err, "connection closed by the broker (close_notify)");
	} else {
		snprintf(w->err, sizeof w->err, "SSL error %d", e);
	}
	ERR_clear_error();
	return w->err;
}

/* "connection", "idle connection", "subscriber 3", "publisher 0" (for messages). */
static const char *role_name(const struct conn *c)
{
	static __thread char buf[48];
	static const char *names[] = { "connection", "idle connection", "subscriber", "publisher" };
	if (c->role == ROLE_SUB || c->role == ROLE_PUB)
		snprintf(buf, sizeof buf, "%s %u", names[c->role], c->idx);
	else
		snprintf(buf, sizeof buf, "%s", names[c->role]);
	return buf;
}

static const char *state_name(const struct conn *c)
{
	static const char *names[] = { "during TCP connect", "during the TLS handshake", "waiting for CONNACK",
				       "waiting for SUBACK", "connected", "while closing", "" };
	return names[c->state];
}

static void closing_remove(struct worker *w, struct conn *c)
{
	if (!c->on_closing)
		return;
	if (c->cprev)
		c->cprev->cnext = c->cnext;
	else
		w->closing = c->cnext;
	if (c->cnext)
		c->cnext->cprev = c->cprev;
	c->on_closing = false;
	cnt_sub(&w->cnt.closing, 1);
}

static bool conn_is_setup(const struct conn *c)
{
	return c->state < CS_READY;
}

/* Unlinks c from the role that owns it. */
static void role_detach(struct conn *c)
{
	struct worker *w = c->w;
	switch (c->role) {
	case ROLE_SLOT:
		if (w->slots[c->idx].c == c)
			w->slots[c->idx].c = NULL;
		break;
	case ROLE_IDLE:
		if (conn_is_setup(c))
			w->pending--;
		else if (c->idx < w->nconns && w->conns[c->idx] == c)
			w->conns[c->idx] = NULL;
		break;
	case ROLE_SUB:
	case ROLE_PUB: {
		struct conn **slot = c->role == ROLE_SUB ? &g.subs[c->idx].c : &g.pubs[c->idx].c;
		if (conn_is_setup(c))
			w->pending--;
		if (*slot == c)
			*slot = NULL;
		break;
	}
	}
}

/* Closes c now (no goodbye) and queues it for freeing after the event batch. */
static void conn_kill(struct conn *c)
{
	struct worker *w = c->w;
	if (c->state == CS_DEAD)
		return;
	role_detach(c);
	closing_remove(w, c);
	if (c->ssl)
		SSL_free(c->ssl);
	c->ssl = NULL;
	close(c->fd);
	free(c->out);
	free(c->rbuf);
	c->out = c->rbuf = NULL;
	c->olen = c->ocap = c->rlen = c->rcap = 0;
	c->state = CS_DEAD;
	if (w->ndead == w->dead_cap) {
		w->dead_cap = w->dead_cap ? w->dead_cap * 2 : 64;
		w->dead = xrealloc(w->dead, w->dead_cap * sizeof *w->dead);
	}
	w->dead[w->ndead++] = c;
	cnt_sub(&w->cnt.open, 1);
}

/* A failed connection ends the run if it was a publisher or subscriber, or if more than
 * --max-fail conn / idle connections failed. */
static void count_failure(struct worker *w, uint8_t role)
{
	if (role == ROLE_SUB || role == ROLE_PUB) {
		atomic_store(&g.abort, true);
		return;
	}
	cnt_add(&w->cnt.fail, 1);
	if (atomic_fetch_add(&g.nfail, 1) + 1 > g.o.max_fail)
		atomic_store(&g.abort, true);
}

/* A connection failed: the first message is kept for the report, see count_failure. */
__attribute__((format(printf, 2, 3))) static void conn_fail(struct conn *c, const char *fmt, ...)
{
	if (c->state == CS_CLOSING || c->state == CS_DEAD) {
		conn_kill(c);
		return;
	}
	char msg[300];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	bench_error("%s: %s (%s)", role_name(c), msg, state_name(c));
	count_failure(c->w, c->role);
	conn_kill(c);
}

/* ---- I/O ---- */

/* Writes c's pending output: 1 = all written, 0 = would block (wait for EPOLLOUT),
 * -1 = error (message in w->err). */
static int conn_flush(struct conn *c)
{
	while (c->olen) {
		long n;
		if (c->ssl) {
			ERR_clear_error();
			int r = SSL_write(c->ssl, c->out + c->ohead, c->olen > INT_MAX ? INT_MAX : (int)c->olen);
			if (r <= 0) {
				int e = SSL_get_error(c->ssl, r);
				if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
					c->wblocked = true;
					return 0;
				}
				ssl_errstr(c, e, r);
				return -1;
			}
			n = r;
		} else {
			n = send(c->fd, c->out + c->ohead, c->olen, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				if (errno == EAGAIN || errno == EWOULDBLOCK) {
					c->wblocked = true;
					return 0;
				}
				snprintf(c->w->err, sizeof c->w->err, "%s", strerror(errno));
				return -1;
			}
		}
		c->ohead += (uint32_t)n;
		c->olen -= (uint32_t)n;
	}
	c->ohead = 0;
	c->wblocked = false;
	if (c->role == ROLE_IDLE || c->role == ROLE_SLOT) {
		free(c->out);
		c->out = NULL;
		c->ocap = 0;
	}
	return 1;
}

/* Reads into buf: bytes (> 0), 0 = the broker closed, -1 = nothing more for now,
 * -2 = error (message in w->err). */
static long conn_recv(struct conn *c, uint8_t *buf, size_t len)
{
	if (!c->ssl) {
		for (;;) {
			ssize_t n = recv(c->fd, buf, len, 0);
			if (n >= 0)
				return n;
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return -1;
			snprintf(c->w->err, sizeof c->w->err, "%s", strerror(errno));
			return -2;
		}
	}
	ERR_clear_error();
	int n = SSL_read(c->ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
	if (n > 0)
		return n;
	int e = SSL_get_error(c->ssl, n);
	if (e == SSL_ERROR_WANT_READ)
		return -1;
	if (e == SSL_ERROR_WANT_WRITE) {
		c->read_wants_write = true;
		return -1;
	}
	if (e == SSL_ERROR_ZERO_RETURN)
		return 0;
	ssl_errstr(c, e, n);
	return -2;
}

/* CS_CLOSING: discard whatever arrives until the broker's EOF. */
static void conn_drain(struct conn *c)
{
	for (;;) {
		ssize_t n = recv(c->fd, c->w->scratch, c->w->scratch_cap, 0);
		if (n > 0)
			continue;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		conn_kill(c); /* EOF or reset: done */
		return;
	}
}

/* Says goodbye: DISCONNECT, TLS close_notify (keeps the session resumable), FIN, then waits
 * for the broker's EOF (at most CLOSE_LINGER_NS) so neither side sends a reset. */
static void conn_close(struct conn *c)
{
	struct worker *w = c->w;
	if (c->state == CS_CLOSING || c->state == CS_DEAD)
		return;
	if (c->state == CS_READY || c->state == CS_SUBACK || c->state == CS_CONNACK) {
		uint8_t b[2];
		out_put(c, b, mqtt_enc_empty(b, MQTT_DISCONNECT));
		if (conn_flush(c) < 0) {
			conn_kill(c);
			return;
		}
	}
	if (c->ssl && SSL_is_init_finished(c->ssl)) {
		ERR_clear_error();
		SSL_shutdown(c->ssl);
		ERR_clear_error();
	}
	shutdown(c->fd, SHUT_WR);
	role_detach(c);
	c->state = CS_CLOSING;
	c->t0 = w->now + CLOSE_LINGER_NS;
	c->cprev = NULL;
	c->cnext = w->closing;
	if (w->closing)
		w->closing->cprev = c;
	w->closing = c;
	c->on_closing = true;
	cnt_add(&w->cnt.closing, 1);
	conn_drain(c);
}

/* ---- publishers ---- */

/* Puts p on the run queue unless it is queued already (run or wait queue). */
static void runq_add(struct worker *w, struct pub *p)
{
	if (p->sched != SCHED_NONE)
		return;
	p->sched = SCHED_RUN;
	w->rq[w->rqcur][w->nrq[w->rqcur]++] = p;
}

static void waitq_add(struct worker *w, struct pub *p)
{
	if (p->sched == SCHED_WAIT)
		return;
	p->sched = SCHED_WAIT;
	w->waitq[w->nwait++] = p;
}

/* How many of p's messages its subscriber side has received: p2p its pair, fanout the
 * slowest subscriber. fanin: the broker hands the group's messages out in turn (across all
 * publishers), so each member should get 1/S of them: p's share of S times what the slowest
 * member received from everyone. */
static uint64_t pub_progress(const struct pub *p)
{
	switch (g.o.scenario) {
	case SC_P2P:
		return atomic_load_explicit(&g.subs[p->idx].tr[0].recv, memory_order_relaxed);
	case SC_FANOUT: {
		uint64_t m = UINT64_MAX;
		for (uint32_t s = 0; s < g.nsubs; s++) {
			uint64_t v = atomic_load_explicit(&g.subs[s].tr[p->idx].recv, memory_order_relaxed);
			if (v < m)
				m = v;
		}
		return m;
	}
	default: {
		uint64_t m = UINT64_MAX;
		for (uint32_t s = 0; s < g.nsubs; s++) {
			uint64_t v = atomic_load_explicit(&g.subs[s].recv_total, memory_order_relaxed);
			if (v < m)
				m = v;
		}
		return m * g.nsubs / g.npubs;
	}
	}
}

/* How many messages p may send now (0: *why says what it waits for). A publisher held back
 * by the pacing window or by QoS 1 acks resumes only when it may send a full batch
 * (min(--batch, limit / 2)): hysteresis, so that a slow broker does not turn the publisher
 * into one write per message. */
static uint64_t pub_allowance(struct worker *w, struct pub *p, int *why)
{
	uint64_t a = UINT64_MAX;
	if (g.o.qos) {
		uint64_t need = g.o.inflight / 2 < g.o.batch ? g.o.inflight / 2 : g.o.batch;
		a = g.o.inflight - p->inflight;
		if (a == 0 || a < need) {
			*why = WHY_ACK;
			return 0;
		}
	}
	/* Pacing: at most g.pub_window messages ahead of the subscriber side. */
	uint64_t need = g.pub_window / 2 < g.o.batch ? g.pub_window / 2 : g.o.batch;
	if (need == 0)
		need = 1;
	if (p->allow_until - p->sent < need) {
		uint64_t prog = pub_progress(p);
		p->allow_until = prog + p->credit + g.pub_window;
		if (p->allow_until < p->sent)
			p->allow_until = p->sent;
		if (p->allow_until - p->sent < need) {
			if (!p->stall_since || prog != p->last_prog) {
				p->last_prog = prog;
				p->stall_since = w->now;
			} else if (w->now - p->stall_since > STALL_NS) {
				/* Nothing arrived for STALL_NS: what is missing was lost; go on. */
				p->credit = p->sent - prog;
				p->allow_until = p->sent + g.pub_window;
				p->stall_since = 0;
				cnt_add(&w->cnt.stalls, 1);
			}
			if (p->allow_until - p->sent < need) {
				*why = WHY_WINDOW;
				return 0;
			}
		}
		p->stall_since = 0;
	}
	if (p->allow_until - p->sent < a)
		a = p->allow_until - p->sent;
	if (g.o.rate > 0) {
		if (w->now < p->t0) {
			*why = WHY_RATE;
			return 0;
		}
		uint64_t due = (uint64_t)((double)(w->now - p->t0) * g.o.rate / 1e9) + 1;
		if (due <= p->sent) {
			*why = WHY_RATE;
			return 0;
		}
		if (due - p->sent < a)
			a = due - p->sent;
	}
	return a;
}

/* One turn of a publisher: encode up to --batch PUBLISH packets and write them at once. */
static void pub_pump(struct worker *w, struct pub *p)
{
	struct conn *c = p->c;
	p->sched = SCHED_NONE;
	if (!c || c->state != CS_READY || c->wblocked || c->olen >= OUT_MAX)
		return;
	int why = WHY_ACK;
	uint64_t a = pub_allowance(w, p, &why);
	if (!a) {
		if (why != WHY_ACK)
			waitq_add(w, p);
		return;
	}
	if (a > g.o.batch)
		a = g.o.batch;
	size_t msg = p->hdr_len + g.o.size;
	uint8_t *o = out_reserve(c, a * msg);
	uint64_t ts = now_ns();
	for (uint64_t i = 0; i < a; i++) {
		memcpy(o, p->hdr, p->hdr_len);
		if (g.o.qos) {
			if (++p->next_pid == 0)
				p->next_pid = 1;
			o[p->pid_off] = p->next_pid >> 8;
			o[p->pid_off + 1] = p->next_pid & 0xff;
		}
		uint8_t *pl = o + p->hdr_len;
		uint64_t sw = ((uint64_t)p->idx << SEQ_BITS) | p->sent++;
		memcpy(pl, &ts, 8);
		memcpy(pl + 8, &sw, 8);
		memset(pl + 16, 0, g.o.size - 16);
		o += msg;
	}
	c->olen += (uint32_t)(a * msg);
	if (g.o.qos)
		p->inflight += (uint32_t)a;
	cnt_add(&w->cnt.published, a);
	int r = conn_flush(c);
	if (r < 0) {
		conn_fail(c, "write: %s", w->err);
		return;
	}
	if (r > 0)
		runq_add(w, p); /* more next turn; blocked: EPOLLOUT puts it back */
}

/* ---- received packets ---- */

static struct track *sub_track(struct sub *s, uint32_t pub)
{
	if (g.o.scenario == SC_P2P)
		return pub == s->idx ? &s->tr[0] : NULL;
	return pub < s->ntr ? &s->tr[pub] : NULL;
}

/* Marks sequence number seq as received (duplicates counted) and counts it for pacing. */
static void track_mark(struct worker *w, struct track *t, uint64_t seq)
{
	uint64_t word = seq >> 6;
	if (word >= t->nwords) {
		uint64_t n = t->nwords ? t->nwords : 64;
		while (n <= word)
			n *= 2;
		t->bits = xrealloc(t->bits, n * sizeof *t->bits);
		memset(t->bits + t->nwords, 0, (n - t->nwords) * sizeof *t->bits);
		t->nwords = (uint32_t)n;
	}
	uint64_t bit = 1ull << (seq & 63);
	if (t->bits[word] & bit)
		w->dups++;
	else
		t->bits[word] |= bit;
	cnt_add(&t->recv, 1);
}

static void on_publish(struct conn *c, const struct mqtt_pkt *pk)
{
	struct worker *w = c->w;
	struct mqtt_publish m;
	if (c->role != ROLE_SUB || !mqtt_dec_publish(pk, g.o.mqtt, &m)) {
		conn_fail(c, "unexpected or malformed PUBLISH");
		return;
	}
	if (m.qos == 1) {
		uint8_t a[4];
		out_put(c, a, mqtt_enc_puback(a, m.pid));
	}
	cnt_add(&w->cnt.delivered, 1);
	w->delivered = true;
	if (m.payload_len < 16) {
		w->unexpected++;
		return;
	}
	uint64_t ts, sw;
	memcpy(&ts, m.payload, 8);
	memcpy(&sw, m.payload + 8, 8);
	struct track *t = sub_track(&g.subs[c->idx], (uint32_t)(sw >> SEQ_BITS));
	if (!t) {
		w->unexpected++;
		return;
	}
	track_mark(w, t, sw & SEQ_MASK);
	cnt_add(&g.subs[c->idx].recv_total, 1);
	if (w->phase == PH_MEASURE)
		lat_add(&w->lat, w->now > ts ? w->now - ts : 0);
}

static void on_puback(struct conn *c)
{
	struct worker *w = c->w;
	if (c->role != ROLE_PUB) {
		conn_fail(c, "unexpected PUBACK");
		return;
	}
	struct pub *p = &g.pubs[c->idx];
	if (p->inflight)
		p->inflight--;
	cnt_add(&w->cnt.acked, 1);
	if (p->sched == SCHED_NONE && w->pumping)
		runq_add(w, p);
}

static void client_id(struct conn *c, char *buf, size_t cap)
{
	switch (c->role) {
	case ROLE_SLOT:
		snprintf(buf, cap, "%s-c%d-%llu", g.o.prefix, c->w->id, (unsigned long long)c->w->conn_seq++);
		break;
	case ROLE_IDLE:
		snprintf(buf, cap, "%s-i%d-%llu", g.o.prefix, c->w->id, (unsigned long long)c->w->conn_seq++);
		break;
	case ROLE_SUB:
		snprintf(buf, cap, "%s-s%u", g.o.prefix, c->idx);
		break;
	default:
		snprintf(buf, cap, "%s-p%u", g.o.prefix, c->idx);
		break;
	}
}

static void became_ready(struct conn *c)
{
	c->state = CS_READY;
	c->w->pending--;
	cnt_add(&c->w->cnt.ready, 1);
}

static void on_connack(struct conn *c)
{
	struct worker *w = c->w;
	switch (c->role) {
	case ROLE_SLOT: {
		struct slot *sl = &w->slots[c->idx];
		lat_add(&w->lat, w->now - c->t0);
		cnt_add(&w->cnt.ok, 1);
		atomic_store_explicit(&w->cnt.last_ok_ns, w->now, memory_order_relaxed);
		if (g.o.resume && c->ssl) {
			/* TLS 1.3 tickets came before CONNACK; keep the newest session if usable. */
			SSL_SESSION *s = SSL_get1_session(c->ssl);
			if (sl->sess)
				SSL_SESSION_free(sl->sess);
			sl->sess = NULL;
			if (s && SSL_SESSION_is_resumable(s))
				sl->sess = s;
			else if (s)
				SSL_SESSION_free(s);
		}
		c->state = CS_READY;
		conn_close(c);
		break;
	}
	case ROLE_IDLE:
		lat_add(&w->lat, w->now - c->t0);
		cnt_add(&w->cnt.ok, 1);
		became_ready(c);
		if (w->nconns == w->conns_cap) {
			w->conns_cap = w->conns_cap ? w->conns_cap * 2 : 1024;
			w->conns = xrealloc(w->conns, w->conns_cap * sizeof *w->conns);
		}
		c->idx = w->nconns;
		w->conns[w->nconns++] = c;
		break;
	case ROLE_SUB: {
		static const char *filters[] = { [SC_FANOUT] = "bench/fan", [SC_FANIN] = "$share/g/bench/in/#" };
		char topic[48];
		const char *f = topic;
		if (g.o.scenario == SC_P2P)
			snprintf(topic, sizeof topic, "bench/p2p/%u", c->idx);
		else
			f = filters[g.o.scenario];
		uint8_t b[96];
		out_put(c, b, mqtt_enc_subscribe(b, g.o.mqtt, 1, f, g.o.qos));
		c->state = CS_SUBACK;
		break;
	}
	case ROLE_PUB:
		became_ready(c);
		g.pubs[c->idx].ready = true;
		break;
	}
}

static void on_packet(struct conn *c, const struct mqtt_pkt *pk)
{
	switch (c->state) {
	case CS_CONNACK: {
		int rc = pk->type == MQTT_CONNACK ? mqtt_dec_connack(pk, g.o.mqtt) : -2;
		if (rc == -2)
			conn_fail(c, "got packet type %d instead of CONNACK", pk->type);
		else if (rc != 0)
			conn_fail(c, "CONNACK refused the connection: code 0x%02x", rc);
		else
			on_connack(c);
		return;
	}
	case CS_SUBACK: {
		int rc = pk->type == MQTT_SUBACK ? mqtt_dec_suback(pk, g.o.mqtt) : -2;
		if (rc == -2) {
			conn_fail(c, "got packet type %d instead of SUBACK", pk->type);
		} else if (rc < 0 || rc >= 0x80) {
			conn_fail(c, "SUBACK refused the subscription: code 0x%02x", rc & 0xff);
		} else {
			became_ready(c);
			g.subs[c->idx].ready = true;
		}
		return;
	}
	default:
		break;
	}
	switch (pk->type) {
	case MQTT_PUBLISH:
		on_publish(c, pk);
		break;
	case MQTT_PUBACK:
		on_puback(c);
		break;
	case MQTT_PINGRESP:
		break;
	case MQTT_DISCONNECT:
		conn_fail(c, "the broker sent DISCONNECT (reason 0x%02x)", pk->len ? pk->body[0] : 0);
		break;
	default:
		conn_fail(c, "unexpected packet type %d", pk->type);
		break;
	}
}

/* Handles every complete packet in buf; returns the bytes used. */
static size_t conn_packets(struct conn *c, const uint8_t *buf, size_t have)
{
	size_t off = 0;
	while (off < have) {
		struct mqtt_pkt pk;
		long n = mqtt_frame(buf + off, have - off, &pk);
		if (n == 0)
			break;
		if (n < 0) {
			conn_fail(c, "malformed packet from the broker");
			return off;
		}
		off += (size_t)n;
		on_packet(c, &pk);
		if (c->state == CS_DEAD || c->state == CS_CLOSING)
			break;
	}
	return off;
}

/* Reads everything available (edge-triggered) and handles it; flushes the acks it queued. */
static void conn_read(struct conn *c)
{
	struct worker *w = c->w;
	uint8_t *buf = w->scratch;
	size_t have = 0;
	if (c->rlen) {
		memcpy(buf, c->rbuf, c->rlen);
		have = c->rlen;
		c->rlen = 0;
	}
	c->read_wants_write = false;
	for (;;) {
		size_t room = w->scratch_cap - have;
		if (!room) {
			conn_fail(c, "packet larger than the read buffer");
			return;
		}
		long n = conn_recv(c, buf + have, room);
		if (n == -1)
			break;
		if (n == 0) {
			conn_fail(c, "the broker closed the connection");
			return;
		}
		if (n < 0) {
			conn_fail(c, "read: %s", w->err);
			return;
		}
		have += (size_t)n;
		w->now = now_ns();
		size_t used = conn_packets(c, buf, have);
		if (c->state == CS_DEAD)
			return;
		if (c->state == CS_CLOSING) {
			conn_drain(c);
			return;
		}
		memmove(buf, buf + used, have - used);
		have -= used;
		if (c->olen >= 65536 && !c->wblocked && conn_flush(c) < 0) {
			conn_fail(c, "write: %s", w->err);
			return;
		}
		/* Plain TCP: a short read emptied the socket (new data raises a new edge). */
		if (!c->ssl && (size_t)n < room)
			break;
	}
	if (have) {
		if (have > c->rcap) {
			c->rbuf = xrealloc(c->rbuf, have);
			c->rcap = (uint32_t)have;
		}
		memcpy(c->rbuf, buf, have);
		c->rlen = (uint32_t)have;
	} else if (c->rbuf && (c->role == ROLE_IDLE || c->role == ROLE_SLOT)) {
		free(c->rbuf);
		c->rbuf = NULL;
		c->rcap = 0;
	}
	if (c->olen && !c->wblocked && conn_flush(c) < 0)
		conn_fail(c, "write: %s", w->err);
}

/* TCP (and TLS) is up: send CONNECT. */
static void conn_send_connect(struct conn *c)
{
	char cid[96];
	uint8_t b[192];
	client_id(c, cid, sizeof cid);
	out_put(c, b, mqtt_enc_connect(b, g.o.mqtt, cid, g.o.keepalive, g.o.persistent));
	c->state = CS_CONNACK;
	if (conn_flush(c) < 0) {
		conn_fail(c, "write: %s", c->w->err);
		return;
	}
	conn_read(c); /* edge-triggered: the handshake may have left data behind */
}

static void conn_handshake(struct conn *c)
{
	ERR_clear_error();
	int r = SSL_connect(c->ssl);
	if (r == 1) {
		if (SSL_session_reused(c->ssl))
			cnt_add(&c->w->cnt.resumed, 1);
		conn_send_connect(c);
		return;
	}
	int e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		return;
	conn_fail(c, "TLS: %s", ssl_errstr(c, e, r));
}

static void conn_tcp_up(struct conn *c)
{
	if (!g.ssl_ctx) {
		conn_send_connect(c);
		return;
	}
	c->ssl = SSL_new(g.ssl_ctx);
	if (!c->ssl || !SSL_set_fd(c->ssl, c->fd)) {
		conn_fail(c, "SSL_new failed");
		return;
	}
	SSL_set_connect_state(c->ssl);
	if (c->role == ROLE_SLOT && c->w->slots[c->idx].sess)
		SSL_set_session(c->ssl, c->w->slots[c->idx].sess);
	c->state = CS_TLS;
	conn_handshake(c);
}

static void conn_event(struct conn *c, uint32_t ev)
{
	switch (c->state) {
	case CS_DEAD:
		return;
	case CS_TCP: {
		int err = 0;
		socklen_t l = sizeof err;
		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0)
			err = errno;
		if (err) {
			conn_fail(c, "connect: %s", strerror(err));
			return;
		}
		if (ev & (EPOLLERR | EPOLLHUP)) {
			conn_fail(c, "connect: connection closed");
			return;
		}
		if (ev & EPOLLOUT)
			conn_tcp_up(c);
		return;
	}
	case CS_TLS:
		conn_handshake(c);
		return;
	case CS_CLOSING:
		conn_drain(c);
		return;
	default:
		break;
	}
	if ((ev & EPOLLOUT) && c->wblocked) {
		int r = conn_flush(c);
		if (r < 0) {
			conn_fail(c, "write: %s", c->w->err);
			return;
		}
		if (r > 0 && c->role == ROLE_PUB && c->w->pumping)
			runq_add(c->w, &g.pubs[c->idx]);
	}
	if ((ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) || ((ev & EPOLLOUT) && c->read_wants_write))
		conn_read(c);
}

/* Opens a connection (non-blocking) for role / idx; NULL if it failed at once. */
static struct conn *conn_start(struct worker *w, uint8_t role, uint32_t idx)
{
	struct conn *c = xcalloc(1, sizeof *c);
	c->role = role;
	c->idx = idx;
	c->w = w;
	c->t0 = now_ns();
	c->state = CS_TCP;
	c->fd = socket(g.dst.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		bench_error("%s: socket: %s%s", role_name(c), strerror(errno),
			    errno == EMFILE ? " (descriptor limit reached)" : "");
		count_failure(w, role);
		if (role != ROLE_SLOT)
			w->pending--;
		free(c);
		return NULL;
	}
	cnt_add(&w->cnt.open, 1);
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (g.nsrc) {
		const struct sockaddr_storage *sa = &g.src[atomic_fetch_add(&g.src_rr, 1) % (uint64_t)g.nsrc];
		socklen_t sl = sa->ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
		setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
		if (bind(c->fd, (const struct sockaddr *)sa, sl) < 0) {
			conn_fail(c, "bind source address: %s", strerror(errno));
			return NULL;
		}
	}
	if (connect(c->fd, (const struct sockaddr *)&g.dst, g.dst_len) < 0 && errno != EINPROGRESS) {
		conn_fail(c, "connect: %s%s", strerror(errno),
			  errno == EADDRNOTAVAIL ? " (out of source ports: use --src-addrs)" : "");
		return NULL;
	}
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c };
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
		conn_fail(c, "epoll_ctl: %s", strerror(errno));
		return NULL;
	}
	return c;
}

/* ---- scenario ticks (once per loop turn) ---- */

/* conn: keep every slot busy until -n connections were started. Returns false when done. */
static bool tick_conn(struct worker *w)
{
	bool busy = false;
	for (uint32_t i = 0; i < w->nslots; i++) {
		struct slot *sl = &w->slots[i];
		if (!sl->c && !sl->retired) {
			if (atomic_fetch_add(&g.next_conn, 1) >= g.o.n)
				sl->retired = true;
			else
				sl->c = conn_start(w, ROLE_SLOT, i);
		}
		if (!sl->retired || sl->c)
			busy = true;
	}
	return busy || w->closing;
}

/* Sends PINGREQ on every ready connection of the list. */
static void ping_all(struct worker *w, struct conn **cs, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		struct conn *c = cs[i];
		if (!c || c->state != CS_READY)
			continue;
		uint8_t b[2];
		out_put(c, b, mqtt_enc_empty(b, MQTT_PINGREQ));
		if (!c->wblocked && conn_flush(c) < 0)
			conn_fail(c, "write: %s", w->err);
	}
}

static bool tick_idle(struct worker *w, int ph)
{
	if (ph == PH_STOP) {
		if (!w->stopping) {
			w->stopping = true;
			for (uint32_t i = 0; i < w->nconns; i++)
				if (w->conns[i])
					conn_close(w->conns[i]);
		}
		return w->closing != NULL;
	}
	while (w->pending < w->conc && w->started < w->quota) {
		w->started++;
		w->pending++;
		conn_start(w, ROLE_IDLE, 0);
	}
	uint64_t ka = (uint64_t)g.o.keepalive * 1000000000ull / 2;
	if (ka && w->now - w->last_ping > ka) {
		w->last_ping = w->now;
		ping_all(w, w->conns, w->nconns);
	}
	return true;
}

static void stop_pubsub(struct worker *w)
{
	for (uint32_t i = 0; i < w->nmy_pubs; i++)
		if (g.pubs[w->my_pubs[i]].c)
			conn_close(g.pubs[w->my_pubs[i]].c);
	for (uint32_t i = 0; i < w->nmy_subs; i++)
		if (g.subs[w->my_subs[i]].c)
			conn_close(g.subs[w->my_subs[i]].c);
}

static bool tick_pubsub(struct worker *w, int ph)
{
	if (ph == PH_STOP) {
		if (!w->stopping) {
			w->stopping = true;
			w->pumping = false;
			stop_pubsub(w);
		}
		return w->closing != NULL;
	}
	while (ph >= PH_SUBS && w->pending < w->conc && w->next_sub < w->nmy_subs) {
		uint32_t s = w->my_subs[w->next_sub++];
		w->pending++;
		g.subs[s].c = conn_start(w, ROLE_SUB, s);
	}
	while (ph >= PH_PUBS && w->pending < w->conc && w->next_pub < w->nmy_pubs) {
		uint32_t p = w->my_pubs[w->next_pub++];
		w->pending++;
		g.pubs[p].c = conn_start(w, ROLE_PUB, p);
	}
	/* Subscribers that only receive would be cut after 1.5 x keepalive: ping everyone. */
	uint64_t ka = (uint64_t)g.o.keepalive * 1000000000ull / 2;
	if (ka && w->now - w->last_ping > ka) {
		w->last_ping = w->now;
		for (uint32_t i = 0; i < w->nmy_subs; i++)
			ping_all(w, &g.subs[w->my_subs[i]].c, 1);
		for (uint32_t i = 0; i < w->nmy_pubs; i++)
			ping_all(w, &g.pubs[w->my_pubs[i]].c, 1);
	}
	if (ph == PH_WARMUP || ph == PH_MEASURE) {
		if (!w->pumping) {
			w->pumping = true;
			for (uint32_t i = 0; i < w->nmy_pubs; i++) {
				struct pub *p = &g.pubs[w->my_pubs[i]];
				/* --rate: stagger the publishers over one period */
				if (g.o.rate > 0)
					p->t0 = g.t_warmup_ns + (uint64_t)(1e9 / g.o.rate * p->idx / g.npubs);
				runq_add(w, p);
			}
		}
		/* Waiting publishers get another turn when this worker's subscribers received
		 * something (progress on this thread) or every millisecond (other threads, --rate). */
		if (w->nwait && (w->delivered || w->now >= w->next_wait_check)) {
			w->delivered = false;
			w->next_wait_check = w->now + WAIT_RECHECK_NS;
			uint32_t n = w->nwait;
			w->nwait = 0;
			for (uint32_t i = 0; i < n; i++) {
				w->waitq[i]->sched = SCHED_NONE;
				runq_add(w, w->waitq[i]);
			}
		}
		int cur = w->rqcur;
		uint32_t n = w->nrq[cur];
		w->rqcur ^= 1;
		w->nrq[w->rqcur] = 0;
		for (uint32_t i = 0; i < n; i++)
			pub_pump(w, w->rq[cur][i]);
	} else if (w->pumping) {
		/* drain: no more publishing */
		w->pumping = false;
		for (int q = 0; q < 2; q++) {
			for (uint32_t i = 0; i < w->nrq[q]; i++)
				w->rq[q][i]->sched = SCHED_NONE;
			w->nrq[q] = 0;
		}
		for (uint32_t i = 0; i < w->nwait; i++)
			w->waitq[i]->sched = SCHED_NONE;
		w->nwait = 0;
	}
	return true;
}

static bool worker_tick(struct worker *w)
{
	int ph = atomic_load_explicit(&g.phase, memory_order_acquire);
	w->phase = ph;
	if (w->closing && w->now - w->last_sweep > 100000000ull) {
		w->last_sweep = w->now;
		for (struct conn *c = w->closing, *next; c; c = next) {
			next = c->cnext;
			if (w->now > c->t0)
				conn_kill(c);
		}
	}
	switch (g.o.scenario) {
	case SC_CONN:
		return tick_conn(w);
	case SC_IDLE:
		return tick_idle(w, ph);
	default:
		return tick_pubsub(w, ph);
	}
}

static int worker_timeout(struct worker *w)
{
	if (w->nrq[w->rqcur])
		return 0;
	if (w->nwait)
		return 1;
	if (g.o.scenario == SC_IDLE && !w->closing && !w->pending)
		return 50;
	return 10;
}

static void reap(struct worker *w)
{
	for (uint32_t i = 0; i < w->ndead; i++)
		free(w->dead[i]);
	w->ndead = 0;
}

void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct epoll_event evs[256];
	w->last_ping = now_ns();
	for (;;) {
		w->now = now_ns();
		if (atomic_load(&g.abort))
			break;
		if (!worker_tick(w))
			break;
		reap(w);
		int n = epoll_wait(w->epfd, evs, 256, worker_timeout(w));
		if (n < 0 && errno != EINTR) {
			bench_error("epoll_wait: %s", strerror(errno));
			atomic_store(&g.abort, true);
			break;
		}
		w->now = now_ns();
		for (int i = 0; i < n; i++)
			conn_event(evs[i].data.ptr, evs[i].events);
		reap(w);
	}
	reap(w);
	return NULL;
}

/* ---- setup ---- */

/* Splits total over nworkers: worker id's share. */
static uint64_t share(uint64_t total, int id, int nworkers)
{
	return total / (uint64_t)nworkers + ((uint64_t)id < total % (uint64_t)nworkers ? 1 : 0);
}

struct worker *worker_new(int id)
{
	struct worker *w = xcalloc(1, sizeof *w);
	w->id = id;
	w->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (w->epfd < 0) {
		perror("bwbench: epoll_create1");
		exit(2);
	}
	w->scratch_cap = 256 * 1024 + 2 * ((size_t)g.o.size + 1024);
	w->scratch = xcalloc(1, w->scratch_cap);
	int T = g.nworkers;
	lat_init(&w->lat, (uint32_t)(g.o.lat_samples / (uint32_t)T + 1), (uint64_t)id + 1);
	w->conc = (uint32_t)share(g.o.conc, id, T);
	if (!w->conc)
		w->conc = 1;
	switch (g.o.scenario) {
	case SC_CONN:
		w->nslots = (uint32_t)share(g.o.conc, id, T);
		w->slots = xcalloc(w->nslots, sizeof *w->slots);
		break;
	case SC_IDLE:
		w->quota = share(g.o.n, id, T);
		break;
	default:
		w->my_subs = xcalloc(g.nsubs / (uint32_t)T + 1, sizeof *w->my_subs);
		for (uint32_t s = (uint32_t)id; s < g.nsubs; s += (uint32_t)T)
			w->my_subs[w->nmy_subs++] = s;
		w->my_pubs = xcalloc(g.npubs / (uint32_t)T + 1, sizeof *w->my_pubs);
		for (uint32_t p = (uint32_t)id; p < g.npubs; p += (uint32_t)T)
			w->my_pubs[w->nmy_pubs++] = p;
		for (int q = 0; q < 2; q++)
			w->rq[q] = xcalloc(w->nmy_pubs + 1, sizeof(struct pub *));
		w->waitq = xcalloc(w->nmy_pubs + 1, sizeof(struct pub *));
		break;
	}
	return w;
}

struct wcount *worker_counts(struct worker *w)
{
	return &w->cnt;
}

struct lat_res *worker_lat(struct worker *w)
{
	return &w->lat;
}

void worker_dups(struct worker *w, uint64_t *dups, uint64_t *unexpected)
{
	*dups = w->dups;
	*unexpected = w->unexpected;
}

void worker_free(struct worker *w)
{
	for (uint32_t i = 0; i < w->nslots; i++)
		if (w->slots[i].sess)
			SSL_SESSION_free(w->slots[i].sess);
	free(w->slots);
	free(w->conns);
	free(w->my_subs);
	free(w->my_pubs);
	free(w->rq[0]);
	free(w->rq[1]);
	free(w->waitq);
	free(w->dead);
	free(w->scratch);
	lat_free(&w->lat);
	close(w->epfd);
	free(w);
}
