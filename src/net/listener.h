/* Listening sockets. One socket per configured listener, registered in every worker
 * loop with EPOLLEXCLUSIVE, so the kernel wakes one worker per incoming connection and
 * TLS handshakes spread over all cores. Accepting applies the listener's access_rules
 * and max_connections before anything is allocated for the client.
 */
#ifndef BW_LISTENER_H
#define BW_LISTENER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "net/loop.h"
#include "net/ratelimit.h"

struct cfg_listener;
struct tls_server;
struct listener;

/* Called on the accepting loop's thread with a non-blocking, TCP_NODELAY socket that
 * passed the access rules and the connection limit. Takes ownership of fd. */
typedef void (*listener_accept_fn)(struct listener *li, struct loop *l, int fd, const struct sockaddr *peer,
				   socklen_t peerlen);

struct listener_reg {
	struct loop_io io;
	struct listener *li;
	struct loop *loop;
	int spare_fd; /* kept open to shed connections cleanly on EMFILE */
	struct timer rl_timer; /* max_conn_rate: re-registers the socket once tokens are back */
	bool rl_paused;        /* deregistered from this loop until rl_timer fires */
};

struct listener {
	const struct cfg_listener *cfg;
	const char *id;              /* "tcp:default" */
	int fd;
	struct tls_server *tls;      /* ssl listeners */
	atomic_ulong nconns;         /* live connections accepted here */
	atomic_ulong refused;        /* refused by access rules or max_connections */
	listener_accept_fn on_accept;
	struct listener_reg *regs;
	int nregs;
	/* Rate limits from the config (see net/ratelimit.h). max_conn_rate is one bucket shared by
	 * every worker (conn_lock); messages/bytes are per connection (the client keeps the
	 * buckets, these are their parameters). */
	bool conn_limited, msg_limited, bytes_limited;
	struct rl_params conn_rl, msg_rl, bytes_rl;
	pthread_mutex_t conn_lock;
	struct rl_bucket conn_bucket;
	atomic_ulong conn_delayed; /* times a worker stopped accepting for max_conn_rate */
};

/* Create, bind and listen. On failure returns false with a one-line reason in err. */
bool listener_open(struct listener *li, const struct cfg_listener *cfg, listener_accept_fn on_accept, char *err,
		   size_t errlen);
/* Register in each loop (call before the loops run, from the main thread). */
void listener_attach(struct listener *li, struct loop **loops, int n);
/* Stop accepting: deregister from every loop (each call must run on that loop's thread,
 * or after the loops have stopped) and close the socket. */
void listener_close(struct listener *li);
/* Does this listener limit messages or bytes per connection? */
static inline bool listener_conn_limited(const struct listener *li)
{
	return li->msg_limited || li->bytes_limited;
}
/* A connection accepted by this listener has gone. */
static inline void listener_conn_closed(struct listener *li)
{
	atomic_fetch_sub(&li->nconns, 1);
}
/* True when access_rules allow the peer address (first match wins; default allow). */
bool listener_access_allowed(const struct cfg_listener *cfg, const struct sockaddr *peer);
/* True when the TCP peer is in proxy_protocol_trusted (may send a PROXY header). */
bool listener_proxy_trusted(const struct cfg_listener *cfg, const struct sockaddr *peer);

#endif
