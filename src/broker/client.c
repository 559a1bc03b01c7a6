#include "broker/client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker/broker.h"
#include "broker/msg.h"
#include "broker/session.h"
#include "config/config.h"
#include "core/alloc.h"
#include "core/log.h"
#include "mqtt/mqtt.h"
#include "net/listener.h"
#include "tls/revoke.h"
#include "tls/tls.h"

/* Before CONNECT succeeds a client may not make us buffer much: a CONNECT larger than
 * this (will payload included) is refused before its body is read. */
#define PRE_CONNECT_MAX (256u * 1024u)

static const struct cfg_mqtt *mq(const struct client *c)
{
	return &c->w->b->cfg->mqtt;
}

const char *client_safe(const char *s, size_t len, char *buf, size_t buflen)
{
	size_t o = 0;
	for (size_t i = 0; i < len && o + 5 < buflen; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch < 0x20 || ch == 0x7f) {
			o += (size_t)snprintf(buf + o, buflen - o, "\\x%02x", ch);
		} else {
			buf[o++] = (char)ch;
		}
	}
	if (o >= buflen)
		o = buflen - 1;
	buf[o] = '\0';
	return buf;
}

/* A name for log lines: the client ID once known, else the peer address. */
static const char *who(const struct client *c, char *buf, size_t buflen)
{
	if (c->client_id)
		return client_safe(c->client_id, strlen(c->client_id), buf, buflen);
	snprintf(buf, buflen, "%s", c->conn.peer_str);
	return buf;
}

/* ---- timers ---- */

/* Reading is held back by flow control: the rate limiter, or acknowledgements waiting for
 * the store. The client is being slowed down, not silent. */
static bool flow_held(const struct client *c)
{
	return (c->rl && c->rl->paused) || client_acks_full(c);
}

static void on_timer(struct timer *t)
{
	struct client *c = container_of(t, struct client, timer);
	char name[128];
	if (!(c->conn.flags & CONN_OPEN)) {
		if (c->conn.listener->tls) {
			log_info("connection from %s on %s: TLS handshake not finished within handshake_timeout, closing",
				 c->conn.peer_str, c->conn.listener->id);
			conn_close(&c->conn, "TLS handshake timeout");
		} else {
			log_info("connection from %s on %s: not ready within idle_timeout (PROXY header?), closing",
				 c->conn.peer_str, c->conn.listener->id);
			conn_close(&c->conn, "idle timeout before CONNECT");
		}
		return;
	}
	if (c->state != CL_CONNECTED) {
		log_info("client %s: no CONNECT within idle_timeout, closing", c->conn.peer_str);
		conn_close(&c->conn, "idle timeout before CONNECT");
		return;
	}
	uint64_t limit = (uint64_t)((double)c->keepalive * mq(c)->keepalive_multiplier * 1000.0);
	uint64_t idle = loop_now(c->conn.loop) - c->last_rx_ms;
	if (flow_held(c))
		idle = 0; /* we hold the packets it sent (rate limiter, store behind): not idle */
	if (idle < limit) {
		timer_arm(c->conn.loop, &c->timer, limit - idle);
		return;
	}
	log_info("client %s: keepalive timeout (%us x %.2f), closing", who(c, name, sizeof name), c->keepalive,
		 mq(c)->keepalive_multiplier);
	client_disconnect(c, MQTT_RC_KEEP_ALIVE_TIMEOUT, "keepalive timeout");
}

void client_arm_keepalive(struct client *c)
{
	timer_cancel(&c->timer);
	if (c->keepalive) {
		uint64_t limit = (uint64_t)((double)c->keepalive * mq(c)->keepalive_multiplier * 1000.0);
		timer_arm(c->conn.loop, &c->timer, limit ? limit : 1);
	}
}

/* ---- closing ---- */

static void send_disconnect(struct client *c, uint8_t rc, const char *why)
{
	struct mqtt_props props = { 0 };
	if (why && c->problem_info) {
		props.present |= MQTT_P_REASON_STRING;
		props.reason_string.p = (const uint8_t *)why;
		props.reason_string.len = (uint32_t)strlen(why);
	}
	struct buf b = { 0 };
	mqtt_encode_disconnect(&b, MQTT_V5, rc, &props);
	conn_write(&c->conn, b.data, b.len);
	buf_free(&b);
}

void client_disconnect(struct client *c, uint8_t rc, const char *why)
{
	if (conn_closing(&c->conn))
		return;
	if (c->version == MQTT_V5 && c->state == CL_CONNECTED)
		send_disconnect(c, rc, why);
	/* The session ends (or goes offline) now; the socket may linger a little while the
	 * last packet drains, but the will and session expiry do not wait for that. */
	client_detach(c, why);
	conn_close_after_flush(&c->conn, why);
}

void client_protocol_error(struct client *c, uint8_t rc, const char *what)
{
	char name[128];
	log_info("client %s: %s (%s), closing", who(c, name, sizeof name), what, mqtt_rc_str(rc));
	client_disconnect(c, rc, what);
}

void client_kick(struct client *c)
{
	char name[128];
	log_info("client %s: kicked by administrator", who(c, name, sizeof name));
	client_disconnect(c, MQTT_RC_ADMINISTRATIVE_ACTION, "kicked by administrator");
}

/* ---- aliases ---- */

/* Alias entries (client_publish.c) start with their hmap_node, so they are freed through it. */
void client_free_aliases(struct client *c)
{
	struct hmap *maps[2] = { &c->alias_in, &c->alias_out };
	for (int i = 0; i < 2; i++) {
		for (struct hmap_node *n = hmap_steal(maps[i]), *next; n; n = next) {
			next = n->next;
			free(n); /* hn is the first member of both alias structs */
		}
	}
	c->alias_bytes = 0;
}

/* ---- connection callbacks ---- */

static void on_open(struct conn *conn)
{
	struct client *c = client_of(conn);
	/* The handshake is done: what is left of idle_timeout now bounds the wait for CONNECT. */
	if (c->state == CL_NEW) {
		uint64_t idle = mq(c)->idle_timeout_ms, spent = loop_now(conn->loop) - c->last_rx_ms;
		timer_arm(conn->loop, &c->timer, idle > spent ? idle - spent : 1);
	}
	if (log_enabled(LOG_DEBUG)) {
		char d[96];
		tls_conn_describe(conn, d, sizeof d);
		log_debug("connection from %s on %s (%s)", conn->peer_str, conn->listener->id, d);
	}
	(void)c;
}

static void dispatch(struct client *c, const struct mqtt_fixed *fx, const uint8_t *body)
{
	if (c->state == CL_AUTHENTICATING) {
		if (fx->type == MQTT_AUTH)
			client_handle_auth(c, fx->flags, body, fx->remaining);
		else
			client_protocol_error(c, MQTT_RC_PROTOCOL_ERROR, "packet other than AUTH during authentication");
		return;
	}
	if (c->state == CL_NEW) {
		if (fx->type != MQTT_CONNECT) {
			log_info("client %s: first packet is %s, not CONNECT; closing", c->conn.peer_str,
				 mqtt_type_str(fx->type));
			conn_close(&c->conn, "first packet not CONNECT");
			return;
		}
		client_handle_connect(c, fx->flags, body, fx->remaining);
		return;
	}
	switch (fx->type) {
	case MQTT_PUBLISH:
		client_handle_publish(c, fx->flags, body, fx->remaining);
		break;
	case MQTT_PUBACK:
	case MQTT_PUBREC:
	case MQTT_PUBREL:
	case MQTT_PUBCOMP:
		client_handle_ack(c, fx->type, fx->flags, body, fx->remaining);
		break;
	case MQTT_SUBSCRIBE:
		client_handle_subscribe(c, fx->flags, body, fx->remaining);
		break;
	case MQTT_UNSUBSCRIBE:
		client_handle_unsubscribe(c, fx->flags, body, fx->remaining);
		break;
	case MQTT_PINGREQ: {
		uint8_t rc = mqtt_decode_empty(fx->flags, fx->remaining);
		if (rc) {
			client_protocol_error(c, rc, "malformed PINGREQ");
			return;
		}
		static const uint8_t pingresp[2] = { MQTT_PINGRESP << 4, 0 };
		conn_write(&c->conn, pingresp, sizeof pingresp);
		break;
	}
	case MQTT_DISCONNECT:
		client_handle_disconnect(c, fx->flags, body, fx->remaining);
		break;
	case MQTT_CONNECT:
		client_protocol_error(c, MQTT_RC_PROTOCOL_ERROR, "second CONNECT");
		break;
	case MQTT_AUTH:
		if (c->version == MQTT_V5)
			client_protocol_error(c, MQTT_RC_PROTOCOL_ERROR, "AUTH without enhanced authentication");
		else
			client_protocol_error(c, MQTT_RC_MALFORMED, "AUTH packet in MQTT 3");
		break;
	default:
		client_protocol_error(c, MQTT_RC_PROTOCOL_ERROR, "packet type a client must not send");
		break;
	}
}

static void on_rl_timer(struct timer *t)
{
	struct client_rl *rl = container_of(t, struct client_rl, timer);
	struct client *c = rl->owner;
	if (!rl->paused || conn_closing(&c->conn))
		return;
	rl->paused = false;
	client_read_resume(c);
}

void client_read_resume(struct client *c)
{
	if (client_authz_waiting(c) || flow_held(c))
		return; /* whoever holds it resumes when done */
	conn_resume_read(&c->conn);
}

/* Listener messages_rate / bytes_rate: may this packet be handled now? When not, reading
 * pauses (the packet and everything after it stay buffered) until the buckets allow it. */
static bool rl_admit(struct client *c, const struct mqtt_fixed *fx)
{
	struct listener *li = c->conn.listener;
	uint64_t now = loop_now(c->conn.loop);
	struct client_rl *rl = c->rl;
	if (!rl) {
		rl = c->rl = xcalloc(1, sizeof *rl);
		rl->owner = c;
		timer_init(&rl->timer, on_rl_timer);
		rl_bucket_init(&rl->msgs, &li->msg_rl, now);
		rl_bucket_init(&rl->bytes, &li->bytes_rl, now);
	}
	uint64_t size = fx->header_len + fx->remaining, wait = 0;
	bool ok = true;
	if (li->bytes_limited && !rl_bucket_take(&rl->bytes, &li->bytes_rl, now, size)) {
		ok = false;
		wait = rl_bucket_wait_ms(&rl->bytes, &li->bytes_rl);
	}
	if (ok && li->msg_limited && fx->type == MQTT_PUBLISH && !rl_bucket_take(&rl->msgs, &li->msg_rl, now, 1)) {
		ok = false;
		wait = rl_bucket_wait_ms(&rl->msgs, &li->msg_rl);
		if (li->bytes_limited)
			rl_bucket_put(&rl->bytes, &li->bytes_rl, size); /* not handled after all */
	}
	if (ok)
		return true;
	rl->paused = true;
	conn_pause_read(&c->conn);
	timer_arm(c->conn.loop, &rl->timer, wait ? wait : 1);
	return false;
}

static size_t on_data(struct conn *conn, const uint8_t *p, size_t len)
{
	struct client *c = client_of(conn);
	c->last_rx_ms = loop_now(conn->loop);
	size_t off = 0;
	while (off < len && c->state != CL_CONNECTING && !conn_closing(conn) && !client_authz_waiting(c) &&
	       !flow_held(c)) {
		struct mqtt_fixed fx;
		uint8_t rc = 0;
		uint32_t max = mq(c)->max_packet_size;
		if (c->state == CL_NEW && max > PRE_CONNECT_MAX)
			max = PRE_CONNECT_MAX;
		int r = mqtt_frame(p + off, len - off, max, &fx, &rc);
		if (r == MQTT_PARSE_NEED_MORE)
			break;
		if (r == MQTT_PARSE_ERROR) {
			if (c->state == CL_NEW) {
				log_info("client %s: %s before CONNECT, closing", conn->peer_str,
					 rc == MQTT_RC_PACKET_TOO_LARGE ? "packet too large" : "malformed packet");
				conn_close(conn, "bad first packet");
			} else {
				client_protocol_error(c, rc, rc == MQTT_RC_PACKET_TOO_LARGE ? "packet exceeds max_packet_size"
											    : "malformed fixed header");
			}
			break;
		}
		if (c->state == CL_CONNECTED && listener_conn_limited(conn->listener) && !rl_admit(c, &fx))
			break; /* this packet and the rest wait in the connection's buffer */
		const uint8_t *body = p + off + fx.header_len;
		off += fx.header_len + fx.remaining;
		dispatch(c, &fx, body);
	}
	return off;
}

static void on_drain(struct conn *conn)
{
	struct client *c = client_of(conn);
	if (c->sess && c->state == CL_CONNECTED)
		session_pump(c->sess);
}

void client_detach(struct client *c, const char *reason)
{
	struct session *s = c->sess;
	if (!s || s->client != c)
		return;
	char name[128];
	bool will = !c->normal_disconnect || c->will_on_disconnect;
	log_info("client %s disconnected: %s", who(c, name, sizeof name), reason);
	c->w->nclients--;
	atomic_fetch_add_explicit(&c->w->stats.disconnects, 1, memory_order_relaxed);
	c->sess = NULL;
	session_detach(s, will);
}

static void on_close(struct conn *conn, const char *reason)
{
	struct client *c = client_of(conn);
	char name[128];
	timer_cancel(&c->timer);
	timer_cancel(&c->expire_timer);
	authz_wait_cancel(&c->authz_wait);
	if (list_linked(&c->wlink))
		list_del_init(&c->wlink);
	if (c->sess) {
		client_detach(c, reason);
	} else if (c->quiet_close) {
		/* already logged (a refused CONNECT) */
	} else if (c->state == CL_NEW) {
		/* A port probe (connect, close) is not news; a failed TLS handshake or garbage is. */
		if (conn->err[0] || conn->bytes_in)
			log_info("connection from %s on %s closed before CONNECT: %s", conn->peer_str,
				 conn->listener->id, reason);
		else
			log_debug("connection from %s closed before CONNECT: %s", conn->peer_str, reason);
	} else if (c->state == CL_CONNECTING || !c->normal_disconnect) {
		log_info("client %s closed: %s", who(c, name, sizeof name), reason);
	}
	client_connect_req_free(c);
	listener_conn_closed(conn->listener);
	client_free_aliases(c);
	client_acks_close(c);
	if (c->cert) {
		if (c->cert->ocsp_retained)
			revoke_ocsp_release(c->w->b->revoke, &c->cert->refs[0]);
		free(c->cert->cn);
		free(c->cert->dn);
		free(c->cert->issuer_dn);
		free(c->cert->refs);
		free(c->cert);
		c->cert = NULL;
	}
}

static void client_free(struct conn *conn)
{
	struct client *c = client_of(conn);
	free(c->client_id);
	free(c->username);
	free(c->mountpoint);
	free(c->authn_acl);
	client_attrs_clear(&c->attrs);
	client_authz_release(c);
	if (c->rl) {
		timer_cancel(&c->rl->timer);
		free(c->rl);
	}
	free(c);
}

static const struct conn_handler client_handler = {
	.on_open = on_open,
	.on_data = on_data,
	.on_drain = on_drain,
	.on_close = on_close,
	.free = client_free,
};

void client_accept(struct listener *li, struct loop *l, int fd, const struct sockaddr *peer, socklen_t peerlen)
{
	struct worker *w = loop_user(l);
	if (w->stopping) {
		close(fd);
		listener_conn_closed(li);
		return;
	}
	const struct transport_ops *tp = &conn_tcp_transport;
	void *state = NULL;
	if (li->tls) {
		state = tls_server_new_ssl(li->tls, fd);
		if (!state) {
			log_warn("listener %s: cannot create a TLS session for a new connection", li->id);
			close(fd);
			listener_conn_closed(li);
			return;
		}
		tp = &tls_transport;
	}
	struct client *c = xcalloc(1, sizeof *c);
	c->w = w;
	list_push_back(&w->clients, &c->wlink);
	c->state = CL_NEW;
	hmap_init(&c->alias_in);
	hmap_init(&c->alias_out);
	timer_init(&c->timer, on_timer);
	timer_init(&c->expire_timer, NULL);
	conn_init(&c->conn, l, fd, tp, state, &client_handler, li, peer, peerlen);
	/* Output a reading client can legitimately have queued: QoS 0 up to the high watermark,
	 * a full inflight window of the largest packets, acks. Beyond that it is not reading. */
	c->conn.out_max = (size_t)((uint64_t)(mq(c)->max_inflight + 1) * mq(c)->max_packet_size + 4ull * CONN_OUT_HIGH);
	c->last_rx_ms = loop_now(l);
	/* TLS: the handshake has its own deadline; idle_timeout then runs until CONNECT. */
	uint64_t first = li->tls ? li->cfg->ssl.handshake_timeout_ms : mq(c)->idle_timeout_ms;
	timer_arm(l, &c->timer, first);
}

bool client_congested(const struct client *c)
{
	return (c->conn.flags & CONN_ABOVE_HIGH) != 0;
}

char *client_mount(const struct client *c, const char *topic, size_t len, size_t *out_len)
{
	size_t n = c->mp_len + len;
	char *s = xmalloc(n + 1);
	if (c->mp_len)
		memcpy(s, c->mountpoint, c->mp_len);
	memcpy(s + c->mp_len, topic, len);
	s[n] = '\0';
	*out_len = n;
	return s;
}
