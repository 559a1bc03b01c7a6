/* Authorization of a client's PUBLISH and SUBSCRIBE (authz/authz.h does the deciding).
 *
 * Most answers come at once (cache, acl.conf, built-in rules). When a source must ask a
 * backend, the packet being handled is copied aside, reading pauses, and once the answer
 * arrives the packet is handled again from the start: this time every question it asks is
 * answered from the answers recorded for it. So packet handlers stay straight-line code,
 * packets keep their order, and nothing is half-applied while a backend thinks.
 */
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "broker/broker.h"
#include "broker/client.h"
#include "config/config.h"
#include "core/alloc.h"
#include "core/log.h"
#include "mqtt/mqtt.h"
#include "net/listener.h"

struct authz_answer {
	uint8_t type, qos;
	bool retain;
	enum authz_verdict v;
	size_t len;
	char *topic;
};

struct authz_stash {
	uint8_t type, flags;
	uint8_t *body;
	size_t len;
	struct authz_answer *answers; /* answers recorded for this packet */
	size_t nanswers;
	bool waiting;                 /* a check is in flight */
};

static void peer_text(const struct sockaddr_storage *ss, char *host, size_t hostlen, uint16_t *port)
{
	host[0] = '\0';
	*port = 0;
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const void *)ss;
		inet_ntop(AF_INET, &s4->sin_addr, host, (socklen_t)hostlen);
		*port = ntohs(s4->sin_port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const void *)ss;
		inet_ntop(AF_INET6, &s6->sin6_addr, host, (socklen_t)hostlen);
		*port = ntohs(s6->sin6_port);
	}
}

static struct authz_subject *subject_of(struct client *c)
{
	struct authz *z = c->w->b->authz;
	char host[INET6_ADDRSTRLEN];
	struct authz_client cl;
	memset(&cl, 0, sizeof cl);
	peer_text(&c->conn.peer, host, sizeof host, &cl.peerport);
	cl.username = c->username;
	cl.username_len = c->username_len;
	cl.clientid = c->client_id;
	cl.peerhost = host;
	memcpy(&cl.peer, &c->conn.peer, sizeof cl.peer);
	cl.cert_common_name = c->cert ? c->cert->cn : NULL;
	cl.cert_subject = c->cert ? c->cert->dn : NULL;
	cl.listener = c->conn.listener->cfg->id;
	cl.zone = "default";
	cl.mountpoint = c->mountpoint;
	cl.attrs = &c->attrs;
	cl.proto_version = c->version;
	cl.is_superuser = c->is_superuser;
	cl.authn_acl_expire_at = c->authn_acl_expire_at;
	return authz_subject_new(z, &cl, c->authn_acl);
}

void client_authz_init(struct client *c)
{
	struct authz *z = c->w->b->authz;
	if (!z || c->authz || (authz_trivial(z) && !c->authn_acl))
		return;
	c->authz = subject_of(c);
}

struct authz_subject *client_will_subject(struct client *c)
{
	if (c->authz)
		return authz_subject_ref(c->authz);
	return c->w->b->authz ? subject_of(c) : NULL;
}

static void stash_free(struct authz_stash *st)
{
	if (!st)
		return;
	for (size_t i = 0; i < st->nanswers; i++)
		free(st->answers[i].topic);
	free(st->answers);
	free(st->body);
	free(st);
}

void client_authz_release(struct client *c)
{
	authz_wait_cancel(&c->authz_wait);
	stash_free(c->authz_stash);
	c->authz_stash = NULL;
	authz_subject_unref(c->authz);
	c->authz = NULL;
}

bool client_authz_waiting(const struct client *c)
{
	return c->authz_stash && c->authz_stash->waiting;
}

static const struct authz_answer *find_answer(const struct authz_stash *st, const struct authz_action *a)
{
	for (size_t i = 0; st && i < st->nanswers; i++) {
		const struct authz_answer *x = &st->answers[i];
		if (x->type == a->type && x->qos == a->qos && x->retain == a->retain && x->len == a->topic_len &&
		    memcmp(x->topic, a->topic, a->topic_len) == 0)
			return x;
	}
	return NULL;
}

/* The answer arrived: record it and handle the stashed packet again. */
static void answered(void *arg, enum authz_verdict v)
{
	struct client *c = arg;
	struct authz_stash *st = c->authz_stash;
	st->waiting = false;
	st->answers[st->nanswers - 1].v = v;
	if (conn_closing(&c->conn))
		return;
	if (st->type == MQTT_PUBLISH)
		client_handle_publish(c, st->flags, st->body, st->len);
	else
		client_handle_subscribe(c, st->flags, st->body, st->len);
	/* Still the same stash and not waiting again: the packet is done. */
	if (c->authz_stash == st && !st->waiting) {
		c->authz_stash = NULL;
		stash_free(st);
		client_read_resume(c);
	}
}

enum authz_verdict client_authorize(struct client *c, const struct authz_action *a, uint8_t type, uint8_t flags,
				    const uint8_t *body, size_t len)
{
	if (!c->authz)
		return AUTHZ_ALLOW;
	const struct authz_answer *x = find_answer(c->authz_stash, a);
	if (x)
		return x->v;
	enum authz_verdict v = authz_check(c->authz, a, c->conn.loop, &c->authz_wait, answered, c);
	if (v != AUTHZ_PENDING)
		return v;
	struct authz_stash *st = c->authz_stash;
	if (!st) {
		st = xcalloc(1, sizeof *st);
		st->type = type;
		st->flags = flags;
		st->body = xmemdup(body, len ? len : 1);
		st->len = len;
		c->authz_stash = st;
	}
	st->answers = xrealloc(st->answers, (st->nanswers + 1) * sizeof *st->answers);
	struct authz_answer *n = &st->answers[st->nanswers++];
	n->type = (uint8_t)a->type;
	n->qos = a->qos;
	n->retain = a->retain;
	n->v = AUTHZ_DENY;
	n->len = a->topic_len;
	n->topic = xmemdup(a->topic, a->topic_len ? a->topic_len : 1);
	st->waiting = true;
	conn_pause_read(&c->conn);
	return AUTHZ_PENDING;
}

bool client_authz_deny_action(struct client *c, const char *what)
{
	if (!c->w->b->authz || !authz_disconnect_on_deny(c->w->b->authz))
		return false;
	client_disconnect(c, MQTT_RC_NOT_AUTHORIZED, what);
	return true;
}
