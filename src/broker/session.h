/* Sessions: the state that outlives a connection (MQTT "session state").
 *
 * A session is owned by one worker (broker.h: the client ID's owner) and touched only on
 * that worker's thread. It holds the session's subscriptions, the outbound deliveries
 * in flight (sent, awaiting PUBACK/PUBREC/PUBCOMP) and queued (not yet sent: window
 * full or client offline), the inbound QoS 2 packet ids awaiting PUBREL, the will
 * message and the expiry and will-delay timers. A persistent session (expiry interval
 * > 0) mirrors every change into the store.
 *
 * Outbound flow: session_deliver() puts a delivery in flight at once when the client is
 * connected and its window (min(client Receive Maximum, mqtt.max_inflight)) has room,
 * otherwise queues it (bounded by mqtt.max_mqueue_len, dropping the oldest). Every ack
 * frees a slot and session_pump() moves queued deliveries into flight.
 */
#ifndef BW_SESSION_H
#define BW_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/hmap.h"
#include "net/loop.h"

struct worker;
struct client;
struct msg;

/* Delivery flags (also persisted). */
#define DLV_RETAIN 0x01 /* send with the RETAIN flag set */
#define DLV_SENT 0x02   /* sent at least once: a resend carries DUP */
#define DLV_PUBREL 0x04 /* QoS 2: PUBREC received, PUBREL owed */

/* One delivery owed to the session's client. */
struct dlv {
	struct msg *msg; /* NULL in the PUBREL stage */
	uint32_t sub_id;
	uint32_t seq;    /* store record id within the session */
	uint16_t pid;    /* packet id once in flight, else 0 */
	uint8_t qos;
	uint8_t flags;
};

/* The session's own record of a subscription, keyed by the full filter as subscribed
 * (after the mountpoint), e.g. "a/+/c" or "$share/g/a/+/c". */
struct sess_sub {
	struct hmap_node hn;
	uint32_t sub_id;
	uint8_t options;
	uint16_t group_off, group_len; /* shared: the group name within filter */
	uint16_t real_off;             /* start of the real filter within filter */
	uint16_t len;
	char filter[];
};

struct session {
	struct hmap_node by_cid;
	struct hmap_node by_id;
	uint64_t id;
	struct worker *w;
	char *client_id;
	size_t cid_len;
	struct client *client;       /* NULL while disconnected */
	uint32_t expiry_interval;    /* seconds; UINT32_MAX = never expires */
	uint8_t proto;               /* protocol version of the last connection */
	bool stored;                 /* a session record exists in the store */
	struct hmap subs;            /* struct sess_sub */
	struct dlv *inflight;        /* in send order */
	uint32_t n_inflight, cap_inflight;
	struct dlv *q;               /* ring buffer */
	uint32_t q_head, q_len, q_cap;
	uint32_t next_seq;
	uint16_t next_pid;
	uint16_t *rel;               /* inbound QoS 2 packet ids awaiting PUBREL */
	uint64_t *rel_at;            /* when each arrived (loop ms), for await_rel_timeout */
	uint32_t n_rel, cap_rel;
	struct msg *will;
	struct authz_subject *will_authz; /* who published the will, checked when it is sent */
	uint32_t will_delay;
	uint32_t will_expiry;        /* the will's Message Expiry Interval, from its publication */
	struct timer will_timer;
	struct timer expiry_timer;
	int64_t disconnected_at;     /* wall seconds, 0 while connected */
	uint64_t dropped;            /* deliveries dropped (queue full, too large, expired) */
};

/* Look up by client ID / session id on worker w. */
struct session *session_get(struct worker *w, const char *cid, size_t len);
struct session *session_by_id(struct worker *w, uint64_t id);
/* Create an empty session for cid on w. */
struct session *session_create(struct worker *w, const char *cid, size_t len);
/* End a session: remove its subscriptions, drop its deliveries, delete it from the store,
 * publish a pending delayed will at once, free it. The client must be detached. */
void session_destroy(struct session *s);

/* Free a session's memory only (shutdown: the store keeps it). Subscriptions are not
 * unrouted; the route table is freed as a whole. */
void session_free(struct session *s);

/* Attach a connected client (resuming or fresh). Cancels expiry and a pending will. */
void session_attach(struct session *s, struct client *c);
/* The client went away. publish_will: the connection ended without a normal DISCONNECT
 * (or with 0x04), so the will is due (now, or after its delay). Then the session ends
 * (expiry 0) or its expiry timer starts. */
void session_detach(struct session *s, bool publish_will);
/* Set the expiry interval (from CONNECT or DISCONNECT), persisting as needed. */
void session_set_expiry(struct session *s, uint32_t seconds);
/* Replace the will (m may be NULL); takes the reference. delay: Will Delay Interval;
 * expiry: its Message Expiry Interval, counted from publication (0 = never). subj (may be
 * NULL: no authorization) is the publisher as authorization sees it; a new reference is taken. */
void session_set_will(struct session *s, struct msg *m, uint32_t delay, uint32_t expiry, struct authz_subject *subj);
/* Publish the pending will now (if any) and forget it. */
void session_publish_will(struct session *s);

/* A message for this session (qos already min(published, granted)). Takes a new reference. */
void session_deliver(struct session *s, struct msg *m, uint8_t qos, uint8_t flags, uint32_t sub_id);
/* After attaching a resumed session: resend everything in flight (DUP), then pump. */
void session_resend(struct session *s);
/* Move queued deliveries into flight while the window allows. */
void session_pump(struct session *s);
/* PUBACK / PUBREC / PUBCOMP from the client. Returns false when the packet id is unknown
 * (the caller answers a stray PUBREC with PUBREL 0x92). */
bool session_ack(struct session *s, uint8_t type, uint16_t pid, uint8_t rc);

/* Inbound QoS 2 bookkeeping. rel_has: already received (a duplicate); rel_add: record
 * (false when max_awaiting_rel is reached); rel_del: PUBREL received (false if unknown). */
bool session_rel_has(struct session *s, uint16_t pid);
bool session_rel_add(struct session *s, uint16_t pid, uint64_t now_ms);
bool session_rel_del(struct session *s, uint16_t pid);

/* Subscriptions. session_sub_add returns true when it was new. `full` is the filter as
 * subscribed (mountpoint applied), possibly "$share/g/...". */
bool session_sub_add(struct session *s, const char *full, size_t len, uint8_t options, uint32_t sub_id);
bool session_sub_del(struct session *s, const char *full, size_t len);
size_t session_sub_count(const struct session *s);
bool session_sub_has(const struct session *s, const char *full, size_t len);

/* True when the session keeps state after disconnect. */
static inline bool session_persistent(const struct session *s)
{
	return s->expiry_interval > 0;
}

/* Restore path (store load at start-up; single-threaded). */
void session_restore_dlv(struct session *s, uint32_t seq, struct msg *m, uint8_t qos, uint8_t flags, uint32_t sub_id,
			 uint16_t pid);
void session_restore_sub(struct session *s, const char *full, size_t len, uint8_t options, uint32_t sub_id);

#endif
