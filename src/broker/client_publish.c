/* PUBLISH in both directions and the acknowledgement flows. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"
#include "broker/client.h"
#include "broker/msg.h"
#include "broker/publish.h"
#include "broker/session.h"
#include "broker/topic.h"
#include "config/config.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/hash.h"
#include "core/list.h"
#include "core/log.h"
#include "mqtt/mqtt.h"
#include "store/store.h"

/* Inbound topic aliases may pin at most this many bytes of topic per connection. */
#define ALIAS_BYTES_MAX (1u << 20)

struct alias_in {
	struct hmap_node hn; /* first: client_free_aliases frees through it */
	uint16_t alias;
	uint16_t len;
	char topic[];
};

struct alias_out {
	struct hmap_node hn;
	uint16_t alias;
	uint16_t len;
	char topic[];
};

static const struct cfg_mqtt *mq(const struct client *c)
{
	return &c->w->b->cfg->mqtt;
}

static void send_ack(struct client *c, uint8_t type, uint16_t pid, uint8_t rc)
{
	uint8_t pkt[4];
	size_t n = 4;
	pkt[0] = (uint8_t)(type << 4) | (type == MQTT_PUBREL ? 0x02 : 0);
	pkt[2] = (uint8_t)(pid >> 8);
	pkt[3] = (uint8_t)pid;
	if (c->version == MQTT_V5 && rc != 0) {
		pkt[1] = 3;
		uint8_t *p = conn_reserve(&c->conn, 5);
		memcpy(p, pkt, 4);
		p[4] = rc;
		conn_commit(&c->conn, 5);
		return;
	}
	pkt[1] = 2;
	conn_write(&c->conn, pkt, n);
}

/* ---- held-back acknowledgements ----
 *
 * With a store, the PUBACK/PUBREC of a QoS 1/2 PUBLISH waits until every write the message
 * caused (retained row, deliveries to persistent sessions, the QoS 2 packet id) is committed
 * and synced, so that a crash never loses a message its publisher saw acknowledged. One
 * ack_wait per PUBLISH, queued on its connection in PUBLISH order; parts: the publisher's
 * own worker (a store_notify after its writes, or nothing to wait for) plus one per
 * delivery handed to another worker (done once that worker has queued its writes and they
 * are committed). Releases run on the publisher's loop; only `parts` and `failed` are
 * shared. A part whose writes a store error dropped marks the wait failed: see ack_failed.
 * SUBACK and UNSUBACK of a persistent session queue here too, with their encoded packet
 * (client_send_when_stored): one part, the subscription writes of their own worker. */

struct ack_queue {
	struct list q;  /* struct ack_wait.link, oldest first */
	uint32_t n;     /* entries in q */
	bool full;      /* n reached acks_limit: reading paused until half of them are out */
};

/* How many acknowledgements a connection may have held back before its packets stop being
 * read: the client's in-flight window (Receive Maximum, which v3 clients do not know), with
 * room for the pipelining of clients that ignore it. Memory per connection stays bounded
 * while the store catches up; the client sees TCP back-pressure, nothing is refused. */
#define ACKS_HELD_MIN 1024u

static uint32_t acks_limit(const struct client *c)
{
	uint32_t w = mq(c)->max_inflight;
	return w > ACKS_HELD_MIN ? w : ACKS_HELD_MIN;
}

bool client_acks_full(const struct client *c)
{
	return c->acks && c->acks->full;
}

/* A held SUBACK / UNSUBACK, and what follows it (retained messages for a SUBSCRIBE). */
struct ack_packet {
	void (*then)(struct client *c, void *arg);
	void (*drop)(void *arg);
	void *arg;
	size_t len;
	uint8_t data[];
};

struct ack_wait {
	struct list link;   /* in c->acks->q while the connection is open */
	struct ack_packet *pkt; /* NULL: a PUBACK/PUBREC/PUBCOMP from type, pid, rc */
	struct client *c;   /* NULL once the connection closed */
	struct loop *loop;  /* the publisher's loop */
	atomic_uint parts;  /* parts not done yet */
	atomic_bool failed; /* a store write of the message was dropped */
	uint16_t pid;
	uint8_t type, rc;
};

/* The store could not write what a PUBACK/PUBREC would vouch for (disk full, I/O error):
 * MQTT 5 answers 0x80 (unspecified error); MQTT 3 cannot say no, so the connection is
 * closed and the client resends after reconnecting. A QoS 2 flow ends here: the packet id
 * is forgotten, so a resend is routed again. A PUBCOMP is sent anyway: the release is done
 * in memory, and neither version can report a failure there (docs/DURABILITY.md). */
static void ack_failed(struct client *c, struct ack_wait *aw)
{
	if (aw->type == MQTT_PUBCOMP) {
		send_ack(c, aw->type, aw->pid, aw->rc);
		return;
	}
	if (aw->type == MQTT_PUBREC && c->sess)
		session_rel_del(c->sess, aw->pid);
	if (c->version == MQTT_V5)
		send_ack(c, aw->type, aw->pid, MQTT_RC_UNSPECIFIED);
	else
		client_disconnect(c, MQTT_RC_UNSPECIFIED, "message not stored (store write error), cannot acknowledge it");
}

static void ack_wait_free(struct ack_wait *aw)
{
	if (aw->pkt && aw->pkt->drop)
		aw->pkt->drop(aw->pkt->arg);
	free(aw->pkt);
	free(aw);
}

/* A subscription the store failed to write still works in memory (its SUBACK says so), like
 * a PUBREL's release: only its copy on disk is missing (docs/DURABILITY.md). */
static void ack_send_packet(struct client *c, struct ack_wait *aw)
{
	struct ack_packet *p = aw->pkt;
	conn_write(&c->conn, p->data, p->len);
	if (p->then)
		p->then(c, p->arg);
	p->drop = NULL; /* arg is then's now */
}

static void acks_flush(struct client *c)
{
	struct ack_queue *aq = c->acks;
	while (!list_empty(&aq->q)) {
		struct ack_wait *aw = list_first(&aq->q, struct ack_wait, link);
		if (atomic_load_explicit(&aw->parts, memory_order_acquire))
			break;
		list_del_init(&aw->link);
		aq->n--;
		if (!conn_closing(&c->conn)) {
			if (aw->pkt)
				ack_send_packet(c, aw);
			else if (atomic_load_explicit(&aw->failed, memory_order_relaxed))
				ack_failed(c, aw);
			else
				send_ack(c, aw->type, aw->pid, aw->rc);
		}
		ack_wait_free(aw);
	}
	if (aq->full && aq->n <= acks_limit(c) / 2 && !conn_closing(&c->conn)) {
		aq->full = false;
		client_read_resume(c);
	}
}

/* New ack_wait at the tail of c's queue with one part (the caller's). */
static struct ack_wait *ack_wait_new(struct client *c, uint8_t type, uint16_t pid, uint8_t rc)
{
	if (!c->acks) {
		c->acks = xcalloc(1, sizeof *c->acks);
		list_init(&c->acks->q);
	}
	struct ack_wait *aw = xcalloc(1, sizeof *aw);
	aw->c = c;
	aw->loop = c->conn.loop;
	atomic_init(&aw->parts, 1);
	atomic_init(&aw->failed, false);
	aw->type = type;
	aw->pid = pid;
	aw->rc = rc;
	list_push_back(&c->acks->q, &aw->link);
	if (++c->acks->n >= acks_limit(c) && !c->acks->full) {
		c->acks->full = true;
		conn_pause_read(&c->conn);
	}
	return aw;
}

/* On the publisher's loop: one part is done. */
static void ack_part_release(void *arg)
{
	struct ack_wait *aw = arg;
	if (atomic_fetch_sub_explicit(&aw->parts, 1, memory_order_acq_rel) != 1)
		return;
	if (!aw->c)
		ack_wait_free(aw); /* the connection is gone: nobody to acknowledge */
	else
		acks_flush(aw->c);
}

void client_ack_part_add(struct ack_wait *aw)
{
	atomic_fetch_add_explicit(&aw->parts, 1, memory_order_relaxed);
}

void client_ack_part_done(void *arg, bool durable)
{
	struct ack_wait *aw = arg;
	if (!durable)
		atomic_store_explicit(&aw->failed, true, memory_order_relaxed);
	loop_post(aw->loop, ack_part_release, aw); /* the post orders the store before the release */
}

/* The caller's part of aw: done now when this thread queued no write since ops, else once
 * the store has committed what it queued. */
static void ack_part_local(struct client *c, struct ack_wait *aw, uint64_t ops)
{
	struct store *st = c->w->b->store;
	if (st && store_thread_ops() != ops)
		store_notify(st, ops, client_ack_part_done, aw);
	else
		ack_part_release(aw);
}

/* Nothing held back: a packet that waits for nothing else may go out at once. */
static bool acks_idle(const struct client *c)
{
	return !c->acks || list_empty(&c->acks->q);
}

/* An acknowledgement that waits for nothing but those before it. */
static void send_ack_ordered(struct client *c, uint8_t type, uint16_t pid, uint8_t rc)
{
	if (acks_idle(c)) {
		send_ack(c, type, pid, rc);
		return;
	}
	struct ack_wait *aw = ack_wait_new(c, type, pid, rc);
	ack_part_release(aw);
}

void client_send_when_stored(struct client *c, uint64_t ops, const void *pkt, size_t len,
			     void (*then)(struct client *c, void *arg), void (*drop)(void *arg), void *arg)
{
	struct store *st = c->w->b->store;
	bool wrote = st && store_thread_ops() != ops;
	if (!wrote && acks_idle(c)) {
		conn_write(&c->conn, pkt, len);
		if (then)
			then(c, arg);
		return;
	}
	struct ack_wait *aw = ack_wait_new(c, 0, 0, 0);
	aw->pkt = xmalloc(sizeof *aw->pkt + len);
	aw->pkt->then = then;
	aw->pkt->drop = drop;
	aw->pkt->arg = arg;
	aw->pkt->len = len;
	memcpy(aw->pkt->data, pkt, len);
	ack_part_local(c, aw, ops);
}

void client_acks_close(struct client *c)
{
	struct ack_queue *aq = c->acks;
	if (!aq)
		return;
	while (!list_empty(&aq->q)) {
		struct ack_wait *aw = list_first(&aq->q, struct ack_wait, link);
		list_del_init(&aw->link);
		aw->c = NULL;
		if (!atomic_load_explicit(&aw->parts, memory_order_acquire))
			ack_wait_free(aw);
	}
	free(aq);
	c->acks = NULL;
}

/* ---- inbound topic aliases ---- */

static struct alias_in *alias_in_find(struct client *c, uint16_t alias)
{
	hmap_for_hash(&c->alias_in, alias, it) {
		struct alias_in *a = container_of(it, struct alias_in, hn);
		if (a->alias == alias)
			return a;
	}
	return NULL;
}

static bool alias_in_set(struct client *c, uint16_t alias, const char *t, size_t len)
{
	struct alias_in *old = alias_in_find(c, alias);
	if (old && old->len == len && memcmp(old->topic, t, len) == 0)
		return true;
	if (c->alias_bytes + len > ALIAS_BYTES_MAX)
		return false;
	if (old) {
		hmap_remove(&c->alias_in, &old->hn);
		c->alias_bytes -= old->len;
		free(old);
	}
	struct alias_in *a = xmalloc(sizeof *a + len);
	a->alias = alias;
	a->len = (uint16_t)len;
	memcpy(a->topic, t, len);
	hmap_insert(&c->alias_in, &a->hn, alias);
	c->alias_bytes += len;
	return true;
}

static unsigned topic_levels(const char *t, size_t len)
{
	unsigned n = 1;
	for (size_t i = 0; i < len; i++)
		n += t[i] == '/';
	return n;
}

/* Authorization said no: QoS 0 is dropped; QoS 1/2 get PUBACK/PUBREC 0x87 in MQTT 5 and a
 * plain acknowledgement in MQTT 3 (which cannot say no); or, with deny_action =
 * disconnect, DISCONNECT 0x87. */
static void publish_denied(struct client *c, const struct mqtt_publish *p)
{
	atomic_fetch_add_explicit(&c->w->stats.msgs_dropped, 1, memory_order_relaxed);
	if (client_authz_deny_action(c, "publish not authorized"))
		return;
	uint8_t rc = c->version == MQTT_V5 ? MQTT_RC_NOT_AUTHORIZED : 0;
	if (p->qos == 1)
		send_ack_ordered(c, MQTT_PUBACK, p->packet_id, rc);
	else if (p->qos == 2)
		send_ack_ordered(c, MQTT_PUBREC, p->packet_id, rc);
}

void client_handle_publish(struct client *c, uint8_t flags, const uint8_t *body, size_t len)
{
	struct mqtt_publish p;
	uint8_t rc = mqtt_decode_publish(c->version, flags, body, len, &p);
	if (rc) {
		client_protocol_error(c, rc, "malformed PUBLISH");
		return;
	}
	const struct cfg_mqtt *m = mq(c);
	const char *topic = (const char *)p.topic.p;
	size_t tlen = p.topic.len;
	if (c->version == MQTT_V5 && (p.props.present & MQTT_P_TOPIC_ALIAS)) {
		uint16_t alias = p.props.topic_alias;
		if (alias == 0 || alias > m->max_topic_alias) {
			client_protocol_error(c, MQTT_RC_TOPIC_ALIAS_INVALID, "topic alias out of range");
			return;
		}
		if (tlen) {
			if (!alias_in_set(c, alias, topic, tlen)) {
				client_protocol_error(c, MQTT_RC_QUOTA_EXCEEDED, "too much memory in topic aliases");
				return;
			}
		} else {
			struct alias_in *a = alias_in_find(c, alias);
			if (!a) {
				client_protocol_error(c, MQTT_RC_PROTOCOL_ERROR, "unknown topic alias");
				return;
			}
			topic = a->topic;
			tlen = a->len;
		}
	}
	if (!topic_name_valid(topic, tlen) || (m->max_topic_levels && topic_levels(topic, tlen) > m->max_topic_levels)) {
		client_protocol_error(c, tlen ? MQTT_RC_TOPIC_NAME_INVALID : MQTT_RC_PROTOCOL_ERROR,
				      "invalid topic name in PUBLISH");
		return;
	}
	if (p.qos > m->max_qos_allowed) {
		client_protocol_error(c, MQTT_RC_QOS_NOT_SUPPORTED, "PUBLISH QoS above max_qos_allowed");
		return;
	}
	if (p.retain && !m->retain_available) {
		client_protocol_error(c, MQTT_RC_RETAIN_NOT_SUPPORTED, "retained PUBLISH while retain is unavailable");
		return;
	}
	struct authz_action act = { .type = AUTHZ_PUBLISH, .topic = topic, .topic_len = tlen, .qos = p.qos,
				    .retain = p.retain };
	enum authz_verdict av = client_authorize(c, &act, MQTT_PUBLISH, flags, body, len);
	if (av == AUTHZ_PENDING)
		return; /* handled again once the answer is in */
	if (av != AUTHZ_ALLOW) {
		publish_denied(c, &p);
		return;
	}
	struct session *s = c->sess;
	struct store *st = c->w->b->store;
	uint64_t ops = store_thread_ops();
	if (p.qos == 2) {
		if (session_rel_has(s, p.packet_id)) {
			/* Duplicate: already routed, maybe by an earlier connection whose writes are
			 * still on their way to the disk. */
			if (st)
				store_notify(st, ops, client_ack_part_done, ack_wait_new(c, MQTT_PUBREC, p.packet_id, 0));
			else
				send_ack(c, MQTT_PUBREC, p.packet_id, 0);
			return;
		}
		if (c->version == MQTT_V5 && m->max_inflight && s->n_rel >= m->max_inflight) {
			client_protocol_error(c, MQTT_RC_RECEIVE_MAX_EXCEEDED, "more QoS 2 messages in flight than Receive Maximum");
			return;
		}
		if (!session_rel_add(s, p.packet_id, loop_now(c->conn.loop))) {
			if (c->version == MQTT_V5) {
				send_ack_ordered(c, MQTT_PUBREC, p.packet_id, MQTT_RC_RECEIVE_MAX_EXCEEDED);
			} else {
				/* A v3 PUBREC cannot say "refused": it would promise delivery. */
				client_protocol_error(c, MQTT_RC_RECEIVE_MAX_EXCEEDED, "more than max_awaiting_rel QoS 2 messages awaiting PUBREL");
			}
			return;
		}
	}
	size_t mlen;
	char *mounted = c->mp_len ? client_mount(c, topic, tlen, &mlen) : NULL;
	if (mounted && mlen > 65535) {
		free(mounted);
		client_protocol_error(c, MQTT_RC_TOPIC_NAME_INVALID, "topic too long with mountpoint");
		return;
	}
	size_t plen = c->version == MQTT_V5 ? msg_props_forward_size(&p.props) : 0;
	struct msg *msg = msg_new(mounted ? mounted : topic, mounted ? mlen : tlen, NULL, plen, p.payload.p,
				  p.payload.len, p.qos, p.retain);
	free(mounted);
	if (plen)
		msg_props_forward(&p.props, (uint8_t *)msg->data + msg->topic_len);
	msg->publisher = s->id;
	if (c->version == MQTT_V5 && (p.props.present & MQTT_P_MESSAGE_EXPIRY))
		msg->expiry_at = clock_wall_s() + p.props.message_expiry;
	else if (m->message_expiry_interval_s)
		msg->expiry_at = clock_wall_s() + m->message_expiry_interval_s;
	/* With a store the acknowledgement waits for the writes this message causes (see
	 * "held-back acknowledgements" above); without one, or for QoS 0, nothing waits. */
	struct ack_wait *aw = NULL;
	if (p.qos && st) {
		aw = ack_wait_new(c, p.qos == 1 ? MQTT_PUBACK : MQTT_PUBREC, p.packet_id, 0);
		c->w->cur_ack = aw;
	}
	size_t n = broker_publish(c->w, msg, c);
	c->w->cur_ack = NULL;
	msg_unref(msg);
	uint8_t arc = n ? MQTT_RC_SUCCESS : MQTT_RC_NO_MATCHING_SUBSCRIBERS;
	if (aw) {
		aw->rc = arc;
		ack_part_local(c, aw, ops);
	} else if (p.qos == 1) {
		send_ack_ordered(c, MQTT_PUBACK, p.packet_id, arc);
	} else if (p.qos == 2) {
		send_ack_ordered(c, MQTT_PUBREC, p.packet_id, arc);
	}
}

void client_handle_ack(struct client *c, uint8_t type, uint8_t flags, const uint8_t *body, size_t len)
{
	struct mqtt_ack a;
	uint8_t rc = mqtt_decode_ack(c->version, type, flags, body, len, &a);
	if (rc) {
		client_protocol_error(c, rc, "malformed acknowledgement");
		return;
	}
	struct session *s = c->sess;
	if (type == MQTT_PUBREL) {
		/* PUBCOMP waits until the packet id's release is durable: after a crash a stale id
		 * would make the broker take the client's next PUBLISH with that id for a resend
		 * and drop it. */
		uint64_t ops = store_thread_ops();
		bool known = session_rel_del(s, a.packet_id);
		uint8_t prc = known ? 0 : MQTT_RC_PACKET_ID_NOT_FOUND;
		if (c->w->b->store && store_thread_ops() != ops)
			ack_part_local(c, ack_wait_new(c, MQTT_PUBCOMP, a.packet_id, prc), ops);
		else
			send_ack_ordered(c, MQTT_PUBCOMP, a.packet_id, prc);
		return;
	}
	if (!session_ack(s, type, a.packet_id, a.rc)) {
		if (type == MQTT_PUBREC)
			send_ack(c, MQTT_PUBREL, a.packet_id, MQTT_RC_PACKET_ID_NOT_FOUND);
		else
			log_debug("client %s: %s for unknown packet id %u", c->client_id, mqtt_type_str(type),
				  a.packet_id);
	}
}

/* ---- outbound ---- */

static struct alias_out *alias_out_find(struct client *c, const char *t, size_t len, uint64_t h)
{
	hmap_for_hash(&c->alias_out, h, it) {
		struct alias_out *a = container_of(it, struct alias_out, hn);
		if (a->len == len && memcmp(a->topic, t, len) == 0)
			return a;
	}
	return NULL;
}

bool client_send_dlv(struct client *c, struct dlv *d, bool dup)
{
	if (d->flags & DLV_PUBREL) {
		send_ack(c, MQTT_PUBREL, d->pid, 0);
		return true;
	}
	const struct msg *m = d->msg;
	const char *topic = msg_topic(m);
	size_t tlen = m->topic_len;
	if (c->mp_len && tlen >= c->mp_len && memcmp(topic, c->mountpoint, c->mp_len) == 0) {
		topic += c->mp_len;
		tlen -= c->mp_len;
	}
	struct mqtt_publish p;
	memset(&p, 0, sizeof p);
	p.qos = d->qos;
	p.dup = dup && d->qos > 0;
	p.retain = (d->flags & DLV_RETAIN) != 0;
	p.topic.p = (const uint8_t *)topic;
	p.topic.len = (uint32_t)tlen;
	p.packet_id = d->qos ? d->pid : 0;
	p.payload.p = msg_payload(m);
	p.payload.len = m->payload_len;
	struct alias_out *alias = NULL;
	uint16_t new_alias = 0;
	uint64_t ah = 0;
	if (c->version == MQTT_V5) {
		/* The message's forwardable properties travel verbatim (see broker/msg.h). */
		p.props.user_props.p = msg_props(m);
		p.props.user_props.len = m->props_len;
		if (m->expiry_at) {
			int64_t left = m->expiry_at - clock_wall_s();
			p.props.present |= MQTT_P_MESSAGE_EXPIRY;
			p.props.message_expiry = left > 0 ? (uint32_t)left : 1;
		}
		if (d->sub_id) {
			p.props.n_sub_ids = 1;
			p.props.sub_ids[0] = d->sub_id;
		}
		if (c->alias_max_out && tlen) {
			ah = hash_bytes(topic, tlen);
			alias = alias_out_find(c, topic, tlen, ah);
			p.props.present |= MQTT_P_TOPIC_ALIAS;
			if (alias) {
				p.props.topic_alias = alias->alias;
				p.topic.len = 0;
			} else if (c->next_alias_out < c->alias_max_out) {
				new_alias = ++c->next_alias_out;
				p.props.topic_alias = new_alias;
			} else {
				p.props.present &= ~MQTT_P_TOPIC_ALIAS;
			}
		}
	}
	size_t size = mqtt_publish_size(c->version, &p);
	if (c->max_packet_out && size > c->max_packet_out) {
		if (new_alias)
			c->next_alias_out--;
		return false;
	}
	if (new_alias) {
		struct alias_out *a = xmalloc(sizeof *a + tlen);
		a->alias = new_alias;
		a->len = (uint16_t)tlen;
		memcpy(a->topic, topic, tlen);
		hmap_insert(&c->alias_out, &a->hn, ah);
	}
	uint8_t *dst = conn_reserve(&c->conn, size);
	struct buf view = { .data = dst, .len = 0, .cap = size };
	mqtt_encode_publish(&view, c->version, &p);
	conn_commit(&c->conn, view.len);
	return true;
}
