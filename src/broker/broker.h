/* The broker: worker threads, their sessions, and the shared indexes.
 *
 * Threading model (read this before touching anything in src/broker/):
 *   - N worker threads, each running one event loop (net/loop.h). Every listener is
 *     registered in every loop, so accepts and TLS handshakes spread over all workers.
 *   - Sessions are partitioned by client ID: the session for client ID X always lives on
 *     worker hash(X) % N ("its owner"). After CONNECT is decoded on the accepting worker,
 *     the connection migrates to the owner (net/conn.h conn_migrate) before it attaches
 *     to its session. So takeover, session state, inflight windows and queues are only
 *     ever touched by one thread, without locks.
 *   - The subscription index (route.h) and the retained store (retain.h) are shared and
 *     locked; a PUBLISH is matched on the publisher's worker, and deliveries for
 *     sessions on other workers go into per-destination outboxes handed over once per
 *     loop iteration (one loop_post per destination per wakeup, not per message).
 *   - The main thread runs signals, the control socket and start-up/shutdown.
 */
#ifndef BW_BROKER_H
#define BW_BROKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/hmap.h"
#include "net/loop.h"

struct config;
struct listener;
struct route_table;
struct retain_store;
struct store;
struct msg;
struct session;
struct revoke;
struct http_client;
struct auth_system;
struct hashpool;
struct bans;

/* A delivery travelling to another worker. */
struct xdlv {
	struct msg *msg;   /* one reference owned by the delivery */
	uint64_t sess_id;
	uint32_t sub_id;
	uint8_t qos;
	uint8_t flags;     /* DLV_RETAIN */
	struct ack_wait *aw; /* a publisher's held-back acknowledgement this delivery is part of, or NULL */
};

struct outbox {
	struct xdlv *items;
	size_t n, cap;
};

struct worker_stats {
	atomic_ulong msgs_in, msgs_out, msgs_dropped, connects, disconnects;
};

struct worker {
	int id;
	struct broker *b;
	struct loop *loop;
	pthread_t thread;
	struct hmap sessions_by_cid;   /* struct session.by_cid */
	struct hmap sessions_by_id;    /* struct session.by_id */
	size_t nclients;               /* connections currently attached to sessions here */
	struct list clients;           /* every client connection owned by this worker (struct client.wlink) */
	struct outbox *outboxes;       /* [nworkers], indexed by destination */
	struct loop_task outbox_task;  /* hands outboxes over at the end of the iteration */
	struct worker_stats stats;
	struct ack_wait *cur_ack;      /* while routing a client's QoS 1/2 PUBLISH: its acknowledgement */
	bool stopping;
};

struct broker {
	struct config *cfg;
	int nworkers;
	struct worker *workers;
	struct route_table *routes;
	struct retain_store *retained;
	struct store *store;           /* NULL: no persistence */
	struct revoke *revoke;         /* NULL when no listener checks revocation */
	struct http_client *http;      /* outbound HTTP (CRL/OCSP fetches, auth backends) */
	struct hashpool *hashpool;     /* slow password hashing */
	struct auth_system *auth;      /* authentication chains */
	struct bans *bans;             /* banned clients, flapping detection (bans/bans.h) */
	struct authz *authz;           /* authorization sources */
	struct listener *listeners;
	size_t nlisteners;
	atomic_uint_fast64_t next_session_id;
	atomic_bool stopping;
};

/* The worker running on the calling thread (NULL off worker threads). */
struct worker *worker_current(void);
/* The worker owning the session for a client ID. */
struct worker *broker_owner(struct broker *b, const char *client_id, size_t len);
/* Queue a delivery for a session on another worker (or deliver at once if it is ours).
 * Takes a new reference on m. */
void worker_dispatch(struct worker *w, uint16_t dest, uint64_t sess_id, struct msg *m, uint8_t qos, uint8_t flags,
		     uint32_t sub_id);

/* Allocate a worker's outboxes (one per destination worker). */
void worker_outbox_init(struct worker *w);

/* Run the broker with cfg until SIGTERM/SIGINT; returns the process exit status. */
int broker_main(struct config *cfg, const char *config_path);

#endif
