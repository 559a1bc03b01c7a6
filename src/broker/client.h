/* A client connection speaking MQTT: the protocol state machine on top of a
 * connection (net/conn.h), attached to a session (session.h) once CONNECT succeeds.
 *
 * Life: accepted (CL_NEW: only CONNECT is acceptable, the idle timer runs) ->
 * CONNECT decoded and checked (CL_CONNECTING: reading paused while the connection
 * migrates to its session's worker) -> CONNACK sent (CL_CONNECTED: keepalive runs) ->
 * closed (on_close detaches from the session; the will is handled there).
 */
#ifndef BW_CLIENT_H
#define BW_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/client_attrs.h"
#include "authz/authz.h"
#include "core/hmap.h"
#include "net/conn.h"
#include "net/ratelimit.h"

struct worker;
struct session;
struct cert_ref;
struct listener;
struct msg;
struct dlv;

/* What the client's certificate (or a trusted PROXY header) says about it, kept for the
 * connection's life: placeholders (${cert_common_name}, ${cert_subject}), takeover identity
 * checks and live revocation rechecks. */
struct client_cert {
	char *cn;                /* NULL when the certificate has no CN */
	char *dn;
	char *issuer_dn;         /* NULL for a PROXY-reported identity */
	bool via_proxy;
	bool ocsp_retained;      /* revoke_ocsp_retain was called */
	uint8_t nrefs;
	struct cert_ref *refs;   /* verified chain, leaf first, for revoke_is_revoked */
};

/* Per-connection limiter state (listener messages_rate / bytes_rate), allocated when the first
 * packet after CONNACK arrives on a listener that has such limits. */
struct client_rl {
	struct rl_bucket msgs, bytes;
	struct timer timer;          /* resumes reading once the buckets allow it */
	bool paused;                 /* reading paused by the limiter */
	struct client *owner;
};

enum client_state {
	CL_NEW,
	CL_CONNECTING,      /* checks running (revocation, authentication) or moving to its worker */
	CL_AUTHENTICATING,  /* MQTT 5 enhanced authentication: AUTH packets are being exchanged */
	CL_CONNECTED,
};

struct client {
	struct conn conn;            /* first member: a conn * is a client * */
	struct worker *w;
	struct list wlink;           /* in w->clients: every connection this worker owns */
	struct session *sess;
	uint8_t state;
	uint8_t version;             /* 3, 4, 5 once CONNECT is decoded */
	bool normal_disconnect;      /* DISCONNECT received: no will (unless 0x04) */
	bool will_on_disconnect;     /* DISCONNECT 0x04 */
	bool problem_info;           /* v5 Request Problem Information */
	bool quiet_close;            /* the close was already logged (refused CONNECT) */
	uint16_t keepalive;          /* effective, seconds (0 = none) */
	uint16_t recv_max;           /* client's Receive Maximum */
	uint16_t alias_max_out;      /* client's Topic Alias Maximum */
	uint16_t next_alias_out;
	uint32_t max_packet_out;     /* client's Maximum Packet Size, 0 = unlimited */
	uint32_t session_expiry_at_connect;
	char *client_id;             /* owned copy (also in the session) */
	char *username;              /* NULL when none (may hold binary bytes when mapped from crt) */
	size_t username_len;
	struct client_cert *cert;    /* NULL without a verified certificate identity */
	bool is_superuser;           /* from authentication: bypasses authorization */
	char *authn_acl;             /* ACL rules granted by authentication (JSON), or NULL */
	int64_t authn_acl_expire_at; /* when that ACL stops applying (wall seconds), 0 = never */
	struct client_attrs attrs;   /* mqtt.client_attrs_init, then the authentication result's */
	struct authz_subject *authz; /* authorization's view of the client; NULL = everything allowed */
	struct authz_wait authz_wait;        /* a pending asynchronous authorization check */
	struct authz_stash *authz_stash;     /* the packet waiting for it (reading paused meanwhile) */
	int64_t authn_expire_at;     /* wall seconds when authentication expires, 0 = never */
	struct timer expire_timer;   /* disconnects at authn_expire_at */
	char *mountpoint;            /* resolved, NULL when none */
	size_t mp_len;
	struct timer timer;          /* idle timeout before CONNECT, then keepalive */
	uint64_t last_rx_ms;
	struct hmap alias_in;        /* inbound topic aliases */
	struct hmap alias_out;       /* outbound: topic -> alias */
	size_t alias_bytes;
	struct connect_req *pending; /* CONNECT parameters while CL_CONNECTING */
	uint64_t connected_at;       /* wall seconds */
	struct client_rl *rl;        /* NULL when the listener limits neither messages nor bytes */
	struct ack_queue *acks;      /* PUBACK/PUBREC held back until durable (client_publish.c), or NULL */
};

static inline struct client *client_of(struct conn *c)
{
	return (struct client *)(void *)c;
}

/* Accept callback for listeners (net/listener.h). */
void client_accept(struct listener *li, struct loop *l, int fd, const struct sockaddr *peer, socklen_t peerlen);

/* Send one delivery as a PUBLISH (or PUBREL in that stage); dup marks a resend.
 * Returns false when it could not be sent and was dropped (too large for the client). */
bool client_send_dlv(struct client *c, struct dlv *d, bool dup);
/* Whether QoS 0 output should be dropped now (output queue above its high watermark). */
bool client_congested(const struct client *c);
/* Disconnect with a v5 reason code (DISCONNECT sent to v5 clients; v3 just closed). */
void client_disconnect(struct client *c, uint8_t rc, const char *why);
/* Detach from the session now (DISCONNECT received, or the connection is closing): the will
 * is due unless the client said a normal DISCONNECT. Idempotent. */
void client_detach(struct client *c, const char *reason);
/* Kick (administrative): DISCONNECT 0x98, will published. */
void client_kick(struct client *c);

/* Packet handlers (client_*.c), called by the dispatcher with a framed packet body. */
void client_handle_connect(struct client *c, uint8_t flags, const uint8_t *body, size_t len);
void client_handle_publish(struct client *c, uint8_t flags, const uint8_t *body, size_t len);
void client_handle_ack(struct client *c, uint8_t type, uint8_t flags, const uint8_t *body, size_t len);
void client_handle_subscribe(struct client *c, uint8_t flags, const uint8_t *body, size_t len);
void client_handle_unsubscribe(struct client *c, uint8_t flags, const uint8_t *body, size_t len);
void client_handle_disconnect(struct client *c, uint8_t flags, const uint8_t *body, size_t len);
void client_handle_auth(struct client *c, uint8_t flags, const uint8_t *body, size_t len);
/* Release CONNECT parameters held while connecting (safe when none). */
void client_connect_req_free(struct client *c);
/* Shared helpers between the client_*.c files. */
void client_protocol_error(struct client *c, uint8_t rc, const char *what);
void client_arm_keepalive(struct client *c);
void client_free_aliases(struct client *c);
/* The connection closes: forget its held-back acknowledgements (those still waiting for a
 * commit are freed when it comes). */
void client_acks_close(struct client *c);

/* Held-back acknowledgements (client_publish.c): the PUBACK/PUBREC of a QoS 1/2 PUBLISH
 * goes out once every store write the message caused is durable, in PUBLISH order. A
 * delivery routed to another worker is one more part of the wait. SUBACK and UNSUBACK
 * wait for their subscription writes in the same queue (client_send_when_stored). */
struct ack_wait;
/* True while so many acknowledgements are held back that reading is paused. */
bool client_acks_full(const struct client *c);
/* Resume reading after a pause, unless something else still holds it (an authorization
 * check, the rate limiter, held-back acknowledgements). */
void client_read_resume(struct client *c);
/* Add a part (publisher's loop thread, while routing). */
void client_ack_part_add(struct ack_wait *aw);
/* A part is done (its writes are finished, or it made none); durable is false when a write
 * error dropped one of them (the acknowledgement then reports a failure). Any thread (the
 * store thread through store_notify): posts to the publisher's loop. */
void client_ack_part_done(void *aw, bool durable);
/* Write pkt (an encoded SUBACK or UNSUBACK, copied) once the store writes this thread queued
 * since its store_thread_ops() was `ops` are durable, in order with the acknowledgements
 * held back before it; then call then(c, arg). At once when there is nothing to wait for.
 * If the connection closes first, drop(arg) instead. then and drop may be NULL. */
void client_send_when_stored(struct client *c, uint64_t ops, const void *pkt, size_t len,
			     void (*then)(struct client *c, void *arg), void (*drop)(void *arg), void *arg);
/* Apply the mountpoint: returns a fresh string mountpoint+topic (or a copy). */
char *client_mount(const struct client *c, const char *topic, size_t len, size_t *out_len);
/* Authorization (client_authz.c). Build the client's subject once it is authenticated
 * (complete_connect). */
void client_authz_init(struct client *c);
/* The subject a will message is checked with when it is published (bans, authorization):
 * the client's own, or one made for the will when authorization is trivial. A reference. */
struct authz_subject *client_will_subject(struct client *c);
/* Release the subject, a pending check and a stashed packet (on close). */
void client_authz_release(struct client *c);
/* Is action a allowed for this client? ALLOW / DENY at once, or PENDING: the check runs
 * asynchronously, the packet (type, flags, body) is kept and reading paused; once the
 * answer is in, the packet is handled again from the start (and this call then answers
 * at once). The caller must return without side effects on PENDING. */
enum authz_verdict client_authorize(struct client *c, const struct authz_action *a, uint8_t type, uint8_t flags,
				    const uint8_t *body, size_t len);
/* True while a packet waits for an authorization answer (no further packet is handled). */
bool client_authz_waiting(const struct client *c);
/* The reaction to a denied action when deny_action = disconnect: DISCONNECT 0x87. Returns
 * true when the client was disconnected. */
bool client_authz_deny_action(struct client *c, const char *what);
/* Log-safe rendering of a client-supplied string (control bytes escaped). */
const char *client_safe(const char *s, size_t len, char *buf, size_t buflen);

#endif
