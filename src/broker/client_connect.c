/* CONNECT -> CONNACK, session attach and takeover, DISCONNECT.
 *
 * Steps, each in its own function: decode and check the packet (check_connect), work
 * out the client's identity and limits into a connect_req, hand the connection to the
 * worker owning the client ID (migrate), then attach to the session there
 * (complete_connect) and answer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <openssl/crypto.h>

#include "auth/attrs_init.h"
#include "auth/auth.h"
#include "bans/bans.h"
#include "broker/broker.h"
#include "broker/client.h"
#include "broker/msg.h"
#include "broker/publish.h"
#include "broker/session.h"
#include "broker/topic.h"
#include "config/config.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"
#include "mqtt/mqtt.h"
#include "net/listener.h"
#include "net/proxy.h"
#include "tls/identity.h"
#include "tls/revoke.h"
#include "tls/tls.h"

static void auth_expired(struct timer *t);

/* What CONNECT asked for, kept while the connection moves to its session's worker. */
struct connect_req {
	bool clean_start;
	bool assigned_id;
	uint32_t session_expiry;
	struct msg *will;
	uint32_t will_delay;
	uint32_t will_expiry;            /* seconds from the will's publication; 0 = never */
	struct revoke_wait *revoke_wait; /* revocation check before CONNACK, while running */
	struct auth_attempt *auth;       /* authentication, from start to CONNACK */
	uint8_t *password;               /* CONNECT's password (copied: the read buffer moves on) */
	size_t password_len;
	bool has_password;
	char *auth_method;               /* v5 enhanced authentication */
	uint8_t *auth_data;
	size_t auth_data_len;
	uint8_t *final_auth_data;        /* sent in CONNACK (SCRAM server-final) */
	size_t final_auth_data_len;
};

static const struct cfg_mqtt *mq(const struct client *c)
{
	return &c->w->b->cfg->mqtt;
}

void client_connect_req_free(struct client *c)
{
	if (!c->pending)
		return;
	struct connect_req *req = c->pending;
	if (req->revoke_wait)
		revoke_cancel(req->revoke_wait);
	auth_cancel(req->auth);
	if (req->password)
		OPENSSL_cleanse(req->password, req->password_len);
	free(req->password);
	free(req->auth_method);
	free(req->auth_data);
	free(req->final_auth_data);
	msg_unref(c->pending->will);
	free(c->pending);
	c->pending = NULL;
}

/* Refuse the connection with a CONNACK in the client's dialect, then close. */
static void refuse(struct client *c, uint8_t rc5, const char *why)
{
	char name[128];
	const char *id = c->client_id ? client_safe(c->client_id, strlen(c->client_id), name, sizeof name)
				      : c->conn.peer_str;
	log_info("client %s from %s refused: %s (%s)", id, c->conn.peer_str, why, mqtt_rc_str(rc5));
	c->quiet_close = true;
	struct buf b = { 0 };
	if (c->version == MQTT_V5) {
		struct mqtt_props props = { 0 };
		props.present = MQTT_P_REASON_STRING;
		props.reason_string.p = (const uint8_t *)why;
		props.reason_string.len = (uint32_t)strlen(why);
		mqtt_encode_connack(&b, MQTT_V5, false, rc5, &props);
	} else {
		mqtt_encode_connack(&b, c->version ? c->version : MQTT_V311, false, mqtt_rc_to_v3_connack(rc5), NULL);
	}
	conn_write(&c->conn, b.data, b.len);
	buf_free(&b);
	conn_close_after_flush(&c->conn, why);
}

static char *assign_client_id(size_t *len)
{
	uint8_t rnd[8];
	if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
		memset(rnd, 0, sizeof rnd);
	char *id = xmalloc(8 + 16 + 1);
	int n = snprintf(id, 8 + 16 + 1, "bulwark-");
	for (size_t i = 0; i < sizeof rnd; i++)
		n += snprintf(id + n, 3, "%02x", rnd[i]);
	*len = (size_t)n;
	return id;
}

/* Substitute ${clientid} and ${username} in the listener's mountpoint. Unknown or
 * missing values stay literal, as in EMQX. */
static void resolve_mountpoint(struct client *c)
{
	const char *tpl = c->conn.listener->cfg->mountpoint;
	if (!tpl || !*tpl)
		return;
	struct buf b = { 0 };
	for (const char *p = tpl; *p;) {
		if (strncmp(p, "${clientid}", 11) == 0 && c->client_id) {
			buf_append_str(&b, c->client_id);
			p += 11;
		} else if (strncmp(p, "${username}", 11) == 0 && c->username) {
			buf_append_str(&b, c->username);
			p += 11;
		} else {
			buf_append(&b, p, 1);
			p++;
		}
	}
	c->mp_len = b.len;
	buf_append(&b, "", 1);
	c->mountpoint = (char *)b.data;
}

/* Build the will message; returns 0 or a v5 reason code to refuse with. */
static uint8_t make_will(struct client *c, const struct mqtt_connect *cp, struct connect_req *req)
{
	if (!cp->will)
		return 0;
	const char *t = (const char *)cp->will_topic.p;
	size_t tlen = cp->will_topic.len;
	if (!topic_name_valid(t, tlen))
		return MQTT_RC_TOPIC_NAME_INVALID;
	if (cp->will_qos > mq(c)->max_qos_allowed)
		return MQTT_RC_QOS_NOT_SUPPORTED;
	if (cp->will_retain && !mq(c)->retain_available)
		return MQTT_RC_RETAIN_NOT_SUPPORTED;
	size_t mlen;
	char *mounted = client_mount(c, t, tlen, &mlen);
	if (mlen > 65535) {
		free(mounted);
		return MQTT_RC_TOPIC_NAME_INVALID;
	}
	size_t plen = 0;
	uint8_t *props = NULL;
	if (c->version == MQTT_V5) {
		plen = msg_props_forward_size(&cp->will_props);
		props = xmalloc(plen ? plen : 1);
		msg_props_forward(&cp->will_props, props);
	}
	struct msg *m = msg_new(mounted, mlen, props, plen, cp->will_payload.p, cp->will_payload.len, cp->will_qos,
				cp->will_retain);
	free(mounted);
	free(props);
	/* MQTT-3.1.3.2-4: the will's lifetime counts from when it is published, not from CONNECT. */
	if (c->version == MQTT_V5 && (cp->will_props.present & MQTT_P_MESSAGE_EXPIRY))
		req->will_expiry = cp->will_props.message_expiry;
	else
		req->will_expiry = mq(c)->message_expiry_interval_s;
	if (c->version == MQTT_V5 && (cp->will_props.present & MQTT_P_WILL_DELAY))
		req->will_delay = cp->will_props.will_delay;
	req->will = m;
	return 0;
}

/* Decide the client ID: the certificate's when peer_cert_as_clientid maps one, else
 * CONNECT's (assigned when empty, as each version allows); use_username_as_clientid then
 * overrides either (EMQX's precedence). Returns 0 or a v5 reason code. */
static uint8_t pick_client_id(struct client *c, const struct mqtt_connect *cp, struct connect_req *req, char *mapped)
{
	size_t len;
	free(c->client_id);
	c->client_id = NULL;
	if (mq(c)->use_username_as_clientid && c->username && c->username_len) {
		free(mapped);
		c->client_id = xstrndup(c->username, c->username_len);
		req->assigned_id = cp->client_id.len == 0; /* MQTT-3.1.3-7: tell the client its ID */
		len = c->username_len;
	} else if (mapped) {
		c->client_id = mapped;
		len = strlen(mapped);
		req->assigned_id = cp->client_id.len == 0 || cp->client_id.len != len ||
				   memcmp(cp->client_id.p, mapped, len) != 0;
	} else if (cp->client_id.len == 0) {
		if (c->version == MQTT_V31)
			return MQTT_RC_CLIENT_ID_NOT_VALID; /* 3.1 requires 1..23 bytes */
		if (c->version == MQTT_V311 && !cp->clean_start)
			return MQTT_RC_CLIENT_ID_NOT_VALID; /* MQTT-3.1.3-8 */
		c->client_id = assign_client_id(&len);
		req->assigned_id = true;
	} else {
		len = cp->client_id.len;
		c->client_id = xstrndup((const char *)cp->client_id.p, len);
		if (memchr(c->client_id, '\0', len))
			return MQTT_RC_CLIENT_ID_NOT_VALID;
	}
	if (len == 0 || strlen(c->client_id) != len || len > mq(c)->max_clientid_len)
		return MQTT_RC_CLIENT_ID_NOT_VALID;
	return 0;
}

/* The client's certificate identity: from a verified TLS client certificate, or from a
 * trusted PROXY v2 header that reports a verified certificate (CN only; DN = CN). Returns
 * false (refuse) when a certificate field holds control characters. */
static bool load_cert_identity(struct client *c, X509 **leaf_out, char *why, size_t whylen)
{
	*leaf_out = NULL;
	X509 *leaf = tls_conn_peer_cert(&c->conn);
	if (leaf) {
		if (!identity_fields_clean(leaf, why, whylen)) {
			X509_free(leaf);
			return false;
		}
		struct client_cert *cc = xcalloc(1, sizeof *cc);
		cc->cn = identity_cn(X509_get_subject_name(leaf));
		cc->dn = identity_dn(X509_get_subject_name(leaf));
		cc->issuer_dn = identity_dn(X509_get_issuer_name(leaf));
		STACK_OF(X509) *chain = tls_conn_verified_chain(&c->conn);
		if (chain && c->w->b->revoke) {
			struct cert_ref refs[8];
			size_t n = revoke_refs_from_chain(chain, refs, 8);
			cc->refs = xmemdup(refs, n * sizeof refs[0]);
			cc->nrefs = (uint8_t)n;
		}
		c->cert = cc;
		*leaf_out = leaf;
		return true;
	}
	/* Behind a TLS-terminating proxy (a trusted PROXY v2 header reporting a verified client
	 * certificate): its CN is the identity; the DN is the CN, as the header carries no DN. */
	const char *pcn = conn_proxy_cn(&c->conn);
	if (pcn) {
		if (identity_has_control(pcn, strlen(pcn))) {
			snprintf(why, whylen, "certificate CN from the PROXY header contains control characters");
			return false;
		}
		struct client_cert *cc = xcalloc(1, sizeof *cc);
		cc->cn = xstrdup(pcn);
		cc->dn = xstrdup(pcn);
		cc->via_proxy = true;
		c->cert = cc;
	}
	return true;
}

/* mqtt.client_attrs_init: attributes from the decided identity and the certificate, before
 * authentication (EMQX order), so authenticators and authorization can use them. */
static void init_client_attrs(struct client *c, const struct mqtt_connect *cp, X509 *leaf)
{
	const struct attrs_init_cfg *ai = c->w->b->cfg->attrs_init;
	if (!ai || !ai->n)
		return;
	struct identity_sans sans;
	if (leaf)
		identity_sans_get(leaf, &sans);
	struct attrs_init_input in = {
		.clientid = c->client_id,
		.username = c->username,
		.username_len = c->username_len,
		.cn = c->cert ? c->cert->cn : NULL,
		.dn = c->cert ? c->cert->dn : NULL,
		.sans = leaf ? &sans : NULL,
		.zone = "default",
		.listener = c->conn.listener->cfg->id,
		.peersni = tls_conn_sni(&c->conn),
	};
	if (c->version == MQTT_V5)
		in.user_props = cp->props.user_props;
	attrs_init_eval(ai, &in, &c->attrs);
	if (leaf)
		identity_sans_free(&sans);
}

/* The value a peer_cert_as_* setting maps to, or NULL when undefined. */
static char *mapped_value(const struct client *c, X509 *leaf, enum cfg_peer_cert_as how, size_t *len)
{
	if (how == CFG_PEER_CERT_DISABLED)
		return NULL;
	if (leaf)
		return identity_map(leaf, how, len);
	if (c->cert && c->cert->via_proxy && (how == CFG_PEER_CERT_CN || how == CFG_PEER_CERT_DN)) {
		*len = strlen(c->cert->cn);
		return xstrdup(c->cert->cn);
	}
	return NULL;
}

static void send_connack(struct client *c, bool present, bool assigned)
{
	struct buf b = { 0 };
	if (c->version != MQTT_V5) {
		mqtt_encode_connack(&b, c->version, present, MQTT_V3_ACCEPTED, NULL);
	} else {
		const struct cfg_mqtt *m = mq(c);
		struct mqtt_props p = { 0 };
		if (assigned) {
			p.present |= MQTT_P_ASSIGNED_CLIENT_ID;
			p.assigned_client_id.p = (const uint8_t *)c->client_id;
			p.assigned_client_id.len = (uint32_t)strlen(c->client_id);
		}
		if (m->max_inflight && m->max_inflight < 65535) {
			p.present |= MQTT_P_RECEIVE_MAXIMUM;
			p.receive_maximum = (uint16_t)m->max_inflight;
		}
		p.present |= MQTT_P_MAXIMUM_PACKET_SIZE;
		p.maximum_packet_size = m->max_packet_size;
		if (m->max_topic_alias) {
			p.present |= MQTT_P_TOPIC_ALIAS_MAXIMUM;
			p.topic_alias_maximum = m->max_topic_alias;
		}
		if (!m->retain_available) {
			p.present |= MQTT_P_RETAIN_AVAILABLE;
			p.retain_available = 0;
		}
		if (m->max_qos_allowed < 2) {
			p.present |= MQTT_P_MAXIMUM_QOS;
			p.maximum_qos = m->max_qos_allowed;
		}
		if (!m->wildcard_subscription) {
			p.present |= MQTT_P_WILDCARD_SUB_AVAILABLE;
			p.wildcard_sub_available = 0;
		}
		if (!m->shared_subscription) {
			p.present |= MQTT_P_SHARED_SUB_AVAILABLE;
			p.shared_sub_available = 0;
		}
		if (m->server_keepalive_s) {
			p.present |= MQTT_P_SERVER_KEEP_ALIVE;
			p.server_keep_alive = (uint16_t)m->server_keepalive_s;
		}
		const struct connect_req *req = c->pending;
		if (req && req->auth_method) {
			p.present |= MQTT_P_AUTH_METHOD;
			p.auth_method.p = (const uint8_t *)req->auth_method;
			p.auth_method.len = (uint32_t)strlen(req->auth_method);
			if (req->final_auth_data) {
				p.present |= MQTT_P_AUTH_DATA;
				p.auth_data.p = req->final_auth_data;
				p.auth_data.len = (uint32_t)req->final_auth_data_len;
			}
		}
		mqtt_encode_connack(&b, MQTT_V5, present, MQTT_RC_SUCCESS, &p);
	}
	conn_write(&c->conn, b.data, b.len);
	buf_free(&b);
}

/* The live connection of session s is replaced by a new one. The old connection gets
 * DISCONNECT 0x8E (v5) and is closed. Its will is sent now when it has no delay or the
 * new connection starts clean (the session ends); otherwise the resumed session cancels it. */
static void take_over(struct session *s, struct client *newc, bool clean_start)
{
	struct client *old = s->client;
	char name[128];
	log_info("client %s: session taken over by a new connection from %s (old connection from %s)",
		 client_safe(s->client_id, s->cid_len, name, sizeof name), newc->conn.peer_str, old->conn.peer_str);
	old->sess = NULL;
	old->w->nclients--;
	old->normal_disconnect = true; /* its session moves on: on_close must not detach again */
	client_disconnect(old, MQTT_RC_SESSION_TAKEN_OVER, "session taken over");
	s->client = NULL;
	if (s->will && (s->will_delay == 0 || clean_start))
		session_publish_will(s);
	else
		session_set_will(s, NULL, 0, 0, NULL);
}

static bool same_str(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* mqtt.takeover_requires_same_identity: the certificate identity (issuer DN + subject DN)
 * of a connection taking over a live session must be the owner's. */
static bool same_identity(const struct client *a, const struct client *b)
{
	const struct client_cert *x = a->cert, *y = b->cert;
	if (!x || !y)
		return !x && !y;
	return same_str(x->issuer_dn, y->issuer_dn) && same_str(x->dn, y->dn);
}

static void complete_connect(struct client *c)
{
	struct connect_req *req = c->pending;
	struct worker *w = c->w;
	size_t cid_len = strlen(c->client_id);
	char banned[300]; /* bans again (auth may have changed the identity), then flapping detection */
	if (bans_connected(w->b->bans, w->id, c->client_id, c->username, c->username_len,
			   (const struct sockaddr *)&c->conn.peer, banned, sizeof banned)) {
		refuse(c, MQTT_RC_BANNED, banned);
		return;
	}
	struct session *s = session_get(w, c->client_id, cid_len);
	if (s && s->client) {
		/* Whatever the old connection already sent (a DISCONNECT, acks) counts first; that
		 * may end the session, so look it up again. */
		conn_read_now(&s->client->conn);
		s = session_get(w, c->client_id, cid_len);
	}
	if (s && s->client && mq(c)->takeover_requires_same_identity && !same_identity(s->client, c)) {
		refuse(c, MQTT_RC_NOT_AUTHORIZED, "client ID in use by a connection with another certificate identity");
		return;
	}
	if (s && s->client)
		take_over(s, c, req->clean_start);
	if (s && req->clean_start) {
		session_destroy(s);
		s = NULL;
	}
	bool present = s != NULL;
	if (!s)
		s = session_create(w, c->client_id, cid_len);
	session_attach(s, c);
	c->sess = s;
	uint32_t expiry = req->session_expiry;
	if (c->version != MQTT_V5)
		expiry = req->clean_start ? 0 : mq(c)->session_expiry_interval_s;
	c->session_expiry_at_connect = expiry;
	session_set_expiry(s, expiry);
	client_authz_init(c);
	struct authz_subject *will_subj = req->will ? client_will_subject(c) : NULL;
	session_set_will(s, req->will, req->will_delay, req->will_expiry, will_subj);
	authz_subject_unref(will_subj);
	req->will = NULL;
	c->state = CL_CONNECTED;
	c->connected_at = (uint64_t)clock_wall_s();
	w->nclients++;
	atomic_fetch_add_explicit(&w->stats.connects, 1, memory_order_relaxed);
	send_connack(c, present && c->version >= MQTT_V311, req->assigned_id);
	char name[128];
	log_info("client %s connected from %s on %s (MQTT %s, clean_start=%d, keepalive=%u, session present=%d)",
		 client_safe(c->client_id, cid_len, name, sizeof name), c->conn.peer_str, c->conn.listener->id,
		 c->version == MQTT_V5 ? "5.0" : c->version == MQTT_V311 ? "3.1.1" : "3.1", req->clean_start,
		 c->keepalive, present);
	client_connect_req_free(c);
	client_arm_keepalive(c);
	if (c->authn_expire_at) {
		int64_t left = c->authn_expire_at - clock_wall_s();
		c->expire_timer.cb = auth_expired;
		timer_arm(c->conn.loop, &c->expire_timer, left > 0 ? (uint64_t)left * 1000u : 1);
	}
	if (c->cert && c->cert->nrefs && c->conn.listener->cfg->ssl.ocsp_client.enable && c->w->b->revoke) {
		revoke_ocsp_retain(c->w->b->revoke, &c->cert->refs[0]);
		c->cert->ocsp_retained = true;
	}
	/* What the connection needs of its certificate is in c->cert now. */
	tls_conn_release_peer(&c->conn);
	if (present)
		session_resend(s);
	conn_resume_read(&c->conn);
}

static void after_migrate(struct conn *conn, void *arg)
{
	(void)arg;
	struct client *c = client_of(conn);
	c->w = worker_current();
	list_push_back(&c->w->clients, &c->wlink);
	if (c->w->stopping) {
		conn_close(conn, "server shutting down");
		return;
	}
	complete_connect(c);
}

static void start_auth(struct client *c);

/* Hand the connection to the worker owning its client ID (or stay), then attach. */
static void route_to_owner(struct client *c)
{
	struct worker *owner = broker_owner(c->w->b, c->client_id, strlen(c->client_id));
	if (owner == c->w) {
		complete_connect(c);
		return;
	}
	timer_cancel(&c->timer);
	list_del_init(&c->wlink); /* the new owner lists it on arrival */
	conn_pause_read(&c->conn);
	conn_migrate(&c->conn, owner->loop, after_migrate, NULL);
}

static void revocation_done(void *arg, enum revoke_verdict v, const char *why)
{
	struct client *c = arg;
	c->pending->revoke_wait = NULL;
	conn_resume_read(&c->conn);
	if (v == REVOKE_GOOD) {
		start_auth(c);
		return;
	}
	char msg[300];
	snprintf(msg, sizeof msg, "%s: %s", v == REVOKE_REVOKED ? "certificate revoked" : "revocation check failed",
		 why && *why ? why : "no detail");
	refuse(c, MQTT_RC_NOT_AUTHORIZED, msg);
}

static void auth_expired(struct timer *t)
{
	struct client *c = container_of(t, struct client, expire_timer);
	char name[128];
	log_info("client %s: authentication expired, disconnecting",
		 c->client_id ? client_safe(c->client_id, strlen(c->client_id), name, sizeof name) : c->conn.peer_str);
	client_disconnect(c, MQTT_RC_NOT_AUTHORIZED, "authentication expired");
}

/* Send AUTH (continue authentication) with the authenticator's data. */
static void send_auth_continue(struct client *c, const uint8_t *data, size_t len)
{
	struct mqtt_props p;
	memset(&p, 0, sizeof p);
	p.present = MQTT_P_AUTH_METHOD;
	p.auth_method.p = (const uint8_t *)c->pending->auth_method;
	p.auth_method.len = (uint32_t)strlen(c->pending->auth_method);
	if (data) {
		p.present |= MQTT_P_AUTH_DATA;
		p.auth_data.p = data;
		p.auth_data.len = (uint32_t)len;
	}
	struct buf b = { 0 };
	mqtt_encode_auth(&b, MQTT_RC_CONTINUE_AUTHENTICATION, &p);
	conn_write(&c->conn, b.data, b.len);
	buf_free(&b);
}

/* Apply an accepted authentication: superuser, granted ACL and attributes, expiry, a
 * client ID override. Returns false (refused) when the override is not a valid ID. */
static bool accept_auth(struct client *c, struct auth_outcome *o)
{
	c->is_superuser = o->is_superuser;
	free(c->authn_acl);
	c->authn_acl = o->acl;
	c->authn_acl_expire_at = o->acl_expire_at;
	o->acl = NULL;
	if (o->client_attrs && !client_attrs_merge_json(&c->attrs, o->client_attrs))
		log_warn("client %s: client_attrs from authentication is not a JSON object; ignored", c->conn.peer_str);
	if (o->expire_at) {
		int64_t left = o->expire_at - clock_wall_s();
		if (left <= 0) {
			refuse(c, MQTT_RC_NOT_AUTHORIZED, "authentication already expired");
			return false;
		}
		c->authn_expire_at = o->expire_at;
	}
	if (o->clientid_override && *o->clientid_override) {
		size_t len = strlen(o->clientid_override);
		if (len > mq(c)->max_clientid_len) {
			refuse(c, MQTT_RC_CLIENT_ID_NOT_VALID, "client ID override from authentication is too long");
			return false;
		}
		free(c->client_id);
		c->client_id = o->clientid_override;
		o->clientid_override = NULL;
		c->pending->assigned_id = true; /* v5: tell the client its new ID */
	}
	if (o->auth_data) {
		c->pending->final_auth_data = o->auth_data;
		c->pending->final_auth_data_len = o->auth_data_len;
		o->auth_data = NULL;
	}
	return true;
}

static void auth_done(void *arg, struct auth_outcome *o)
{
	struct client *c = arg;
	struct connect_req *req = c->pending;
	switch (o->verdict) {
	case AUTHN_CONTINUE:
		c->state = CL_AUTHENTICATING;
		send_auth_continue(c, o->auth_data, o->auth_data_len);
		conn_resume_read(&c->conn);
		break;
	case AUTHN_ALLOW:
		auth_cancel(req->auth);
		req->auth = NULL;
		c->state = CL_CONNECTING;
		conn_resume_read(&c->conn);
		if (accept_auth(c, o))
			route_to_owner(c);
		break;
	default: {
		auth_cancel(req->auth);
		req->auth = NULL;
		char why[300];
		snprintf(why, sizeof why, "authentication failed (%s%s%s)", o->by, o->reason[0] ? ": " : "", o->reason);
		refuse(c, o->rc ? o->rc : MQTT_RC_NOT_AUTHORIZED, why);
		break;
	}
	}
	free(o->acl);
	free(o->client_attrs);
	free(o->clientid_override);
	free(o->auth_data);
}

/* Run the authentication chain of the client's listener (unless enable_authn = false or
 * the chain is empty), then go on to the session's worker. */
static void start_auth(struct client *c)
{
	struct connect_req *req = c->pending;
	const struct cfg_listener *lc = c->conn.listener->cfg;
	struct auth_system *sys = c->w->b->auth;
	struct auth_chain *chain = sys ? auth_chain_for(sys, lc) : NULL;
	if (lc->enable_authn == CFG_AUTHN_FALSE || !chain || auth_chain_empty(chain)) {
		if (req->auth_method) {
			refuse(c, MQTT_RC_BAD_AUTH_METHOD, "no authenticator handles this authentication method");
			return;
		}
		route_to_owner(c);
		return;
	}
	char host[INET6_ADDRSTRLEN] = "";
	uint16_t port = 0;
	const struct sockaddr *sa = (const struct sockaddr *)&c->conn.peer;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const void *)sa;
		inet_ntop(AF_INET, &s4->sin_addr, host, sizeof host);
		port = ntohs(s4->sin_port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const void *)sa;
		inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof host);
		port = ntohs(s6->sin6_port);
	}
	struct authn_request r = {
		.username = c->username,
		.username_len = c->username_len,
		.password = req->has_password ? req->password : NULL,
		.password_len = req->password_len,
		.client_id = c->client_id,
		.peerhost = host,
		.peerport = port,
		.cert_subject = c->cert ? c->cert->dn : NULL,
		.cert_common_name = c->cert ? c->cert->cn : NULL,
		.cert_verified = c->cert != NULL,
		.listener = lc->id,
		.attrs = &c->attrs,
		.proto_version = c->version,
		.auth_method = req->auth_method,
		.auth_data = req->auth_data,
		.auth_data_len = req->auth_data_len,
	};
	conn_pause_read(&c->conn);
	req->auth = auth_start(chain, &r, c->conn.loop, auth_done, c);
}

void client_handle_auth(struct client *c, uint8_t flags, const uint8_t *body, size_t len)
{
	struct mqtt_auth a;
	uint8_t rc = mqtt_decode_auth(c->version, flags, body, len, &a);
	if (rc) {
		refuse(c, rc, "malformed AUTH");
		return;
	}
	struct connect_req *req = c->pending;
	const struct mqtt_props *p = &a.props;
	if (a.rc != MQTT_RC_CONTINUE_AUTHENTICATION || !(p->present & MQTT_P_AUTH_METHOD) ||
	    p->auth_method.len != strlen(req->auth_method) ||
	    memcmp(p->auth_method.p, req->auth_method, p->auth_method.len) != 0) {
		refuse(c, MQTT_RC_PROTOCOL_ERROR, "AUTH does not continue the authentication in progress");
		return;
	}
	c->state = CL_CONNECTING;
	conn_pause_read(&c->conn);
	auth_step(req->auth, (p->present & MQTT_P_AUTH_DATA) ? p->auth_data.p : NULL,
		  (p->present & MQTT_P_AUTH_DATA) ? p->auth_data.len : 0);
}

/* Start the pre-CONNACK revocation check when the handshake left one pending (a CRL to
 * fetch) or the listener checks client certificates with OCSP. Returns true when the
 * connect now waits for revocation_done. */
static bool start_revocation_check(struct client *c)
{
	struct revoke *rv = c->w->b->revoke;
	const struct cfg_listener *lc = c->conn.listener->cfg;
	if (!rv || !c->cert || c->cert->via_proxy)
		return false;
	if (!tls_conn_revocation_pending(&c->conn) && !lc->ssl.ocsp_client.enable)
		return false;
	STACK_OF(X509) *chain = tls_conn_verified_chain(&c->conn);
	if (!chain)
		return false;
	conn_pause_read(&c->conn);
	c->pending->revoke_wait = revoke_check_async(rv, lc, chain, c->conn.loop, revocation_done, c);
	return true;
}

void client_handle_connect(struct client *c, uint8_t flags, const uint8_t *body, size_t len)
{
	struct mqtt_connect cp;
	memset(&cp, 0, sizeof cp);
	uint8_t rc = mqtt_decode_connect(flags, body, len, &cp);
	if (cp.version == MQTT_V31 || cp.version == MQTT_V311 || cp.version == MQTT_V5)
		c->version = cp.version;
	if (rc) {
		if (rc == MQTT_RC_UNSUPPORTED_VERSION) {
			/* Answer in 3.1.1 form, which every client version understands. */
			c->version = MQTT_V311;
			refuse(c, MQTT_RC_UNSUPPORTED_VERSION, "unsupported protocol version");
		} else if (c->version == MQTT_V5) {
			refuse(c, rc, "malformed CONNECT");
		} else {
			log_info("client %s: malformed CONNECT (%s), closing", c->conn.peer_str, mqtt_rc_str(rc));
			conn_close(&c->conn, "malformed CONNECT");
		}
		return;
	}
	struct connect_req *req = xcalloc(1, sizeof *req);
	c->pending = req;
	req->clean_start = cp.clean_start;
	if (cp.client_id.len) /* for log lines until the final client ID is decided */
		c->client_id = xstrndup((const char *)cp.client_id.p, cp.client_id.len);
	const struct cfg_listener *lc = c->conn.listener->cfg;
	const struct cfg_mqtt *m = mq(c);

	/* Certificate identity first: it may decide username and client ID. */
	X509 *leaf = NULL;
	char why[256];
	if (!load_cert_identity(c, &leaf, why, sizeof why)) {
		refuse(c, MQTT_RC_NOT_AUTHORIZED, why);
		return;
	}
	size_t ulen = 0, clen = 0;
	char *user = mapped_value(c, leaf, m->peer_cert_as_username, &ulen);
	char *cid = mapped_value(c, leaf, m->peer_cert_as_clientid, &clen);
	bool mapping = m->peer_cert_as_username != CFG_PEER_CERT_DISABLED ||
		       m->peer_cert_as_clientid != CFG_PEER_CERT_DISABLED;
	if (mapping && lc->enable_authn == CFG_AUTHN_FALSE &&
	    ((m->peer_cert_as_username != CFG_PEER_CERT_DISABLED && !user) ||
	     (m->peer_cert_as_clientid != CFG_PEER_CERT_DISABLED && !cid))) {
		/* Certificate-only listener: a client without the mapped field may not choose its own
		 * identity. */
		free(user);
		free(cid);
		X509_free(leaf);
		refuse(c, MQTT_RC_NOT_AUTHORIZED,
		       c->cert ? "the client certificate lacks the field mapped to the identity"
			       : "a client certificate is required on this listener");
		return;
	}
	if (user) {
		c->username = user;
		c->username_len = ulen;
	} else if (cp.has_username) {
		c->username = xstrndup((const char *)cp.username.p, cp.username.len);
		c->username_len = cp.username.len;
	}
	rc = pick_client_id(c, &cp, req, cid);
	if (rc) {
		X509_free(leaf);
		refuse(c, rc, "client identifier not valid");
		return;
	}
	init_client_attrs(c, &cp, leaf);
	X509_free(leaf);
	if (cp.has_password) {
		req->has_password = true;
		req->password = xmemdup(cp.password.p, cp.password.len ? cp.password.len : 1);
		req->password_len = cp.password.len;
	}
	if (c->version == MQTT_V5 && (cp.props.present & MQTT_P_AUTH_METHOD)) {
		req->auth_method = xstrndup((const char *)cp.props.auth_method.p, cp.props.auth_method.len);
		if (cp.props.present & MQTT_P_AUTH_DATA) {
			req->auth_data = xmemdup(cp.props.auth_data.p, cp.props.auth_data.len ? cp.props.auth_data.len : 1);
			req->auth_data_len = cp.props.auth_data.len;
		}
	}
	if (lc->enable_authn == CFG_AUTHN_QUICK_DENY_ANONYMOUS && !c->username_len) {
		refuse(c, MQTT_RC_NOT_AUTHORIZED, "anonymous clients are denied on this listener");
		return;
	}
	resolve_mountpoint(c);
	rc = make_will(c, &cp, req);
	if (rc) {
		refuse(c, rc, "will message refused");
		return;
	}
	c->keepalive = cp.keepalive;
	c->recv_max = 65535;
	if (c->version == MQTT_V5) {
		const struct mqtt_props *p = &cp.props;
		if (p->present & MQTT_P_SESSION_EXPIRY)
			req->session_expiry = p->session_expiry;
		if (p->present & MQTT_P_RECEIVE_MAXIMUM)
			c->recv_max = p->receive_maximum;
		if (p->present & MQTT_P_TOPIC_ALIAS_MAXIMUM)
			c->alias_max_out = p->topic_alias_maximum;
		if (p->present & MQTT_P_MAXIMUM_PACKET_SIZE)
			c->max_packet_out = p->maximum_packet_size;
		c->problem_info = !(p->present & MQTT_P_REQUEST_PROBLEM_INFO) || p->request_problem_info;
		if (m->server_keepalive_s)
			c->keepalive = (uint16_t)m->server_keepalive_s;
	}
	if (bans_check(c->w->b->bans, c->client_id, c->username, c->username_len,
		       (const struct sockaddr *)&c->conn.peer, why, sizeof why)) {
		refuse(c, MQTT_RC_BANNED, why);
		return;
	}
	c->state = CL_CONNECTING;
	/* Checks that need the network answer before CONNACK; reading waits meanwhile. */
	if (start_revocation_check(c))
		return;
	start_auth(c);
}

void client_handle_disconnect(struct client *c, uint8_t flags, const uint8_t *body, size_t len)
{
	struct mqtt_disconnect d;
	uint8_t rc = mqtt_decode_disconnect(c->version, flags, body, len, &d);
	if (rc) {
		client_protocol_error(c, rc, "malformed DISCONNECT");
		return;
	}
	if (c->version == MQTT_V5 && (d.props.present & MQTT_P_SESSION_EXPIRY) && c->sess) {
		if (c->session_expiry_at_connect == 0 && d.props.session_expiry != 0) {
			client_protocol_error(c, MQTT_RC_PROTOCOL_ERROR, "session expiry set in DISCONNECT after 0 in CONNECT");
			return;
		}
		session_set_expiry(c->sess, d.props.session_expiry);
	}
	c->normal_disconnect = true;
	/* Only reason 0x00 discards the will (MQTT-3.14.4-3); v3 DISCONNECT decodes as 0. */
	c->will_on_disconnect = (d.rc != MQTT_RC_SUCCESS);
	const char *why = d.rc == 0 ? "client sent DISCONNECT" : mqtt_rc_str(d.rc);
	/* Detach now, not when the close is reaped: a reconnect handled later in this same
	 * loop iteration must find the session free, without a will to publish. */
	client_detach(c, why);
	conn_close(&c->conn, why);
}
