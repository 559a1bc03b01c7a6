/* Connections: a socket, its transport (TCP or TLS), input leftovers and an output
 * queue, owned by exactly one loop at a time.
 *
 * Input: bytes are read into the loop's scratch buffer and handed to the owner's
 * on_data callback as one contiguous view; whatever the owner does not consume (a
 * partial packet) is kept in the connection's own small buffer and presented again,
 * prefixed, with the next bytes. An idle connection holds no input buffer.
 *
 * Output: the owner appends encoded packets to the output queue (conn_reserve /
 * conn_write). The queue is flushed once at the end of the loop iteration, so every
 * packet produced during one wakeup leaves in one writev (TCP) or in as few TLS
 * records as possible (one per 16 KB block). An idle connection holds no output block.
 *
 * PROXY protocol (listeners with proxy_protocol = true): before the transport handshake
 * the connection reads a PROXY v1/v2 header with plain reads that never go past it
 * (peek, then read exactly the header's bytes), bounded by proxy_protocol_timeout. Only
 * TCP peers in proxy_protocol_trusted may send one, and from them it is required; an
 * untrusted peer that sends one is refused, one that does not is a direct connection.
 * After a trusted header the connection's peer is the header's source address (logs,
 * access_rules, bans and peerhost see the real client) and conn_proxy() returns what the
 * header said, for the whole life of the connection (it migrates with it).
 *
 * Lifetime rule: a connection is never freed inside one of its own callbacks.
 * conn_close() marks it closing, stops all I/O and queues it; the free happens at the
 * end of the loop iteration, after the owner's on_close callback has run.
 */
#ifndef BW_CONN_H
#define BW_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "core/buf.h"
#include "core/list.h"
#include "net/loop.h"

struct conn;
struct proxy_info;
struct proxy_wait;

/* What the layer above the transport (the MQTT client) implements. */
struct conn_handler {
	/* The transport is ready for application data (after the TLS handshake, or at once for TCP). */
	void (*on_open)(struct conn *c);
	/* Bytes arrived: p[0..len) is everything not yet consumed. Return the number of
	 * bytes consumed (whole packets). Returning less keeps the rest for next time. */
	size_t (*on_data)(struct conn *c, const uint8_t *p, size_t len);
	/* The output queue dropped below the low watermark after having been above it. */
	void (*on_drain)(struct conn *c);
	/* The connection is closed and about to be freed (end of iteration); release
	 * everything that refers to it. `reason` is the text logged for the close. */
	void (*on_close)(struct conn *c, const char *reason);
	/* Free the object embedding the connection (called after on_close). */
	void (*free)(struct conn *c);
};

/* Result of a transport I/O call. */
enum tp_result {
	TP_OK,          /* n bytes transferred */
	TP_WANT_READ,   /* would block until readable */
	TP_WANT_WRITE,  /* would block until writable */
	TP_EOF,         /* orderly close by peer */
	TP_ERROR,       /* fatal; reason in the connection's error text */
};

/* A transport: TCP, TLS, later WebSocket. Session and protocol code never see errno
 * or OpenSSL; only these functions do. */
struct transport_ops {
	const char *name;
	/* Drive the transport's own handshake. TP_OK when done. */
	enum tp_result (*handshake)(struct conn *c);
	/* Read up to len bytes; *n set on TP_OK. */
	enum tp_result (*read)(struct conn *c, uint8_t *buf, size_t len, size_t *n);
	/* Write from iov; *n set on TP_OK (may be partial). */
	enum tp_result (*writev)(struct conn *c, const struct iovec *iov, int iovcnt, size_t *n);
	/* Start an orderly close (TLS close_notify); optional, never blocks. */
	void (*shutdown)(struct conn *c);
	/* Release transport state (the fd is closed by the connection). */
	void (*destroy)(struct conn *c);
};

enum conn_flag {
	CONN_OPEN = 1u << 0,            /* handshake done, on_open called */
	CONN_CLOSING = 1u << 1,         /* conn_close called; queued for free */
	CONN_CLOSE_AFTER_FLUSH = 1u << 2, /* stop reading; close once output is written */
	CONN_READ_WANTS_WRITE = 1u << 3,
	CONN_WRITE_WANTS_READ = 1u << 4,
	CONN_WRITE_BLOCKED = 1u << 5,   /* kernel buffer full; waiting for EPOLLOUT */
	CONN_READ_PAUSED = 1u << 6,     /* owner asked to stop reading */
	CONN_READ_PENDING = 1u << 7,    /* stopped reading on budget; resume next iteration */
	CONN_ABOVE_HIGH = 1u << 8,      /* output above the high watermark */
	CONN_LINGER = 1u << 9,          /* output done, half-closed, discarding input until EOF */
};

/* Output queue block. Data in [off, len) is waiting to be written. */
struct out_block {
	struct out_block *next;
	uint32_t off, len, cap;
	uint8_t data[];
};

struct conn {
	struct loop_io io;
	struct loop *loop;
	const struct transport_ops *tp;
	void *tp_state;                 /* SSL * for TLS */
	const struct conn_handler *h;
	struct listener *listener;
	uint32_t flags;
	struct sockaddr_storage peer;
	char peer_str[56];              /* "1.2.3.4:5678" or "[::1]:5678" */
	struct buf rbuf;                /* unconsumed input (usually empty, then unallocated) */
	struct out_block *out_head, *out_tail;
	size_t out_bytes;               /* bytes queued */
	struct loop_task flush_task;    /* queued when output is pending */
	struct loop_task read_task;     /* queued when reading stopped on budget */
	struct list zombie_link;        /* in the loop's close list while CLOSING */
	struct timer linger_timer;      /* bounds close-after-flush and lingering */
	struct timer send_timer;        /* armed while writes are blocked: the send_timeout cut-off */
	uint64_t wprogress_ms;          /* loop time of the last write progress while blocked */
	size_t out_max;                 /* hard bound on queued output (0 = none), set by the owner */
	const char *close_reason;
	struct migration *migration;    /* pending conn_migrate, until it departs */
	char err[384];                  /* transport error text (TLS verify failures name the certificate) */
	uint64_t bytes_in, bytes_out;
	struct proxy_wait *pwait;       /* while a PROXY header is awaited, else NULL */
	struct proxy_info *proxy;       /* header from a trusted proxy, NULL when none; freed with c */
};

/* Output queue limits (bytes). Above high, owners should stop producing optional output
 * (QoS 0 drops); on_drain fires when it falls below low again.
 * A connection whose writes make no progress for its listener's tcp_options.send_timeout
 * while output is pending (queued here, or held by the kernel: TCP_USER_TIMEOUT), or whose
 * queued output exceeds out_max, is not reading: it is closed ("not reading: N bytes pending
 * for S seconds"); no DISCONNECT, it would not be read. */
#define CONN_OUT_HIGH (1u << 20)
#define CONN_OUT_LOW (256u << 10)
#define CONN_BLOCK_SIZE (16384u - 64u)

/* Initialise a connection around an accepted, non-blocking socket and register it with
 * loop l (edge-triggered). The transport handshake starts at once. */
void conn_init(struct conn *c, struct loop *l, int fd, const struct transport_ops *tp, void *tp_state,
	       const struct conn_handler *h, struct listener *li, const struct sockaddr *peer, socklen_t peerlen);

/* Contiguous space for n bytes at the end of the output queue; commit with conn_commit.
 * Flushing is scheduled automatically. */
uint8_t *conn_reserve(struct conn *c, size_t n);
/* Mark n bytes (at most what was reserved) as written into the reserved space. */
void conn_commit(struct conn *c, size_t n);
/* Append bytes to the output queue. */
void conn_write(struct conn *c, const void *p, size_t n);
/* Write what can be written now (normally automatic at end of iteration). */
void conn_flush(struct conn *c);

/* Close now: stop I/O and queue the free. Output still queued is discarded. Idempotent. */
void conn_close(struct conn *c, const char *reason);
/* Stop reading, write what is queued (a final CONNACK or DISCONNECT), then close.
 * Gives up and closes after a short grace period. */
void conn_close_after_flush(struct conn *c, const char *reason);
/* Read and hand to the owner whatever has already arrived, now (same thread only). Used
 * before a takeover so a DISCONNECT or acks the old connection already sent count. */
void conn_read_now(struct conn *c);
/* Pause / resume reading (back-pressure from the owner). */
void conn_pause_read(struct conn *c);
void conn_resume_read(struct conn *c);

static inline bool conn_closing(const struct conn *c)
{
	return (c->flags & (CONN_CLOSING | CONN_CLOSE_AFTER_FLUSH)) != 0;
}

/* Hand the connection to loop `to`, where done(c, arg) runs once it is registered there.
 * Reading stops at once; the connection departs at the end of the current iteration (so
 * the read loop that called the owner can stash unconsumed bytes first), taking its
 * buffered input and pending output with it. After this call the caller must not touch c
 * except to close it (which cancels the move). */
void conn_migrate(struct conn *c, struct loop *to, void (*done)(struct conn *c, void *arg), void *arg);

/* Per-thread setup/teardown of the scratch read buffer and block cache. */
void conn_thread_init(void);
void conn_thread_cleanup(void);

/* The plain TCP transport. */
extern const struct transport_ops conn_tcp_transport;

/* The PROXY header a trusted proxy sent before this connection's data (v1, v2, also a v2
 * LOCAL health check: info->local / command_local), or NULL when there was none. Owned by
 * the connection, valid until it is freed, on whichever loop it lives. */
const struct proxy_info *conn_proxy(const struct conn *c);
/* The client certificate identity a trusted proxy vouched for: the CN from the v2 SSL TLV
 * when the proxy says the client presented a certificate and it verified (verify == 0);
 * else NULL. The DN to use is the same string (EMQX: DN = CN, no SANs). Owned by c. */
const char *conn_proxy_cn(const struct conn *c);

/* Format a socket address as "1.2.3.4:5678" / "[::1]:5678". */
void conn_format_addr(const struct sockaddr *sa, char *out, size_t outlen);

#endif
