/* SUBSCRIBE / UNSUBSCRIBE and retained-message delivery on subscribe. */
#include <stdlib.h>
#include <string.h>

#include "authz/authz.h"
#include "broker/broker.h"
#include "broker/client.h"
#include "broker/msg.h"
#include "broker/retain.h"
#include "broker/session.h"
#include "broker/topic.h"
#include "config/config.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/log.h"
#include "mqtt/mqtt.h"
#include "store/store.h"

static const struct cfg_mqtt *mq(const struct client *c)
{
	return &c->w->b->cfg->mqtt;
}

/* The filter as the session records it: mountpoint applied inside any $share/<group>/ prefix.
 * Returns a fresh string; real and real_len point at the filter proper within it. */
static char *mount_filter(const struct client *c, const char *f, size_t len, const struct topic_share *sh,
			  size_t *out_len, const char **real, size_t *real_len)
{
	struct buf b = { 0 };
	size_t real_off;
	if (sh) {
		buf_append_str(&b, "$share/");
		buf_append(&b, sh->group, sh->group_len);
		buf_append(&b, "/", 1);
		real_off = b.len;
		buf_append(&b, c->mountpoint ? c->mountpoint : "", c->mp_len);
		buf_append(&b, sh->filter, sh->filter_len);
	} else {
		real_off = 0;
		buf_append(&b, c->mountpoint ? c->mountpoint : "", c->mp_len);
		buf_append(&b, f, len);
	}
	*out_len = b.len;
	buf_append(&b, "", 1);
	*real = (const char *)b.data + real_off;
	*real_len = *out_len - real_off;
	return (char *)b.data;
}

static unsigned levels(const char *t, size_t len)
{
	unsigned n = 1;
	for (size_t i = 0; i < len; i++)
		n += t[i] == '/';
	return n;
}

/* Check one SUBSCRIBE entry; returns 0 or a v5 reason code (>= 0x80). */
static uint8_t check_filter(const struct client *c, const char *f, size_t len, uint8_t options, int shared,
			    const struct topic_share *sh)
{
	const struct cfg_mqtt *m = mq(c);
	if (shared < 0)
		return MQTT_RC_TOPIC_FILTER_INVALID;
	const char *real = shared ? sh->filter : f;
	size_t rlen = shared ? sh->filter_len : len;
	if (!topic_filter_valid(real, rlen))
		return MQTT_RC_TOPIC_FILTER_INVALID;
	if (m->max_topic_levels && levels(real, rlen) > m->max_topic_levels)
		return MQTT_RC_TOPIC_FILTER_INVALID;
	if (shared && !m->shared_subscription)
		return MQTT_RC_SHARED_SUB_NOT_SUPPORTED;
	if (!m->wildcard_subscription && topic_filter_has_wildcard(real, rlen))
		return MQTT_RC_WILDCARD_SUBS_NOT_SUPPORTED;
	(void)options;
	return 0;
}

struct retained_req {
	char *filter;
	size_t len;
	uint8_t qos;
	uint32_t sub_id;
};

/* Retained messages found for a new subscription, on their way to the session. With
 * authorization, each one's topic is checked (subscribe, QoS granted) before delivery: a
 * wildcard subscription may be allowed while some topics under it are not. A check that
 * asks a backend continues when the answer is in; the session is looked up again by id,
 * so a client that left meanwhile is harmless. */
struct retained_job {
	struct worker *w;
	uint64_t sess_id;
	struct authz_subject *subj;  /* NULL: no authorization */
	struct authz_wait wait;
	struct msg **msgs;
	uint8_t *qos;                /* delivery QoS */
	uint8_t *sub_qos;            /* the subscription's QoS (what authorization was asked) */
	uint32_t *sub_id;
	size_t n, next;
};

static void retained_job_free(struct retained_job *j)
{
	for (size_t i = j->next; i < j->n; i++)
		msg_unref(j->msgs[i]);
	free(j->msgs);
	free(j->qos);
	free(j->sub_qos);
	free(j->sub_id);
	authz_subject_unref(j->subj);
	free(j);
}

static void retained_deliver(struct retained_job *j, size_t i)
{
	struct session *s = session_by_id(j->w, j->sess_id);
	if (s)
		session_deliver(s, j->msgs[i], j->qos[i], DLV_RETAIN, j->sub_id[i]);
}

static void retained_answered(void *arg, enum authz_verdict v);

/* Deliver from j->next on; returns false while waiting for an answer. */
static bool retained_run(struct retained_job *j)
{
	for (; j->next < j->n; j->next++) {
		size_t i = j->next;
		if (j->subj) {
			const struct authz_client *cl = authz_subject_client(j->subj);
			const struct msg *m = j->msgs[i];
			const char *t = msg_topic(m);
			size_t tlen = m->topic_len, mp = cl->mountpoint ? strlen(cl->mountpoint) : 0;
			if (mp && tlen >= mp && memcmp(t, cl->mountpoint, mp) == 0) {
				t += mp;
				tlen -= mp;
			}
			struct authz_action a = { .type = AUTHZ_SUBSCRIBE, .topic = t, .topic_len = tlen, .qos = j->sub_qos[i] };
			enum authz_verdict v = authz_check(j->subj, &a, j->w->loop, &j->wait, retained_answered, j);
			if (v == AUTHZ_PENDING)
				return false;
			if (v != AUTHZ_ALLOW) {
				msg_unref(j->msgs[i]);
				continue;
			}
		}
		retained_deliver(j, i);
		msg_unref(j->msgs[i]);
	}
	return true;
}

static void retained_answered(void *arg, enum authz_verdict v)
{
	struct retained_job *j = arg;
	if (v == AUTHZ_ALLOW)
		retained_deliver(j, j->next);
	msg_unref(j->msgs[j->next]);
	j->next++;
	if (retained_run(j))
		retained_job_free(j);
}

static void send_retained(struct client *c, struct retained_req *rq, size_t n)
{
	int64_t now = clock_wall_s();
	struct retained_job *j = xcalloc(1, sizeof *j);
	j->w = c->w;
	j->sess_id = c->sess ? c->sess->id : 0;
	j->subj = c->authz ? authz_subject_ref(c->authz) : NULL;
	for (size_t i = 0; i < n; i++) {
		struct msg **msgs = NULL;
		size_t k = retain_match(c->w->b->retained, rq[i].filter, rq[i].len, now, &msgs);
		if (k) {
			j->msgs = xrealloc(j->msgs, (j->n + k) * sizeof *j->msgs);
			j->qos = xrealloc(j->qos, j->n + k);
			j->sub_qos = xrealloc(j->sub_qos, j->n + k);
			j->sub_id = xrealloc(j->sub_id, (j->n + k) * sizeof *j->sub_id);
		}
		for (size_t x = 0; x < k; x++) {
			uint8_t mqos = msgs[x]->qos, q;
			if (mq(c)->upgrade_qos)
				q = mqos > rq[i].qos ? mqos : rq[i].qos;
			else
				q = mqos < rq[i].qos ? mqos : rq[i].qos;
			j->msgs[j->n] = msgs[x];
			j->qos[j->n] = q;
			j->sub_qos[j->n] = rq[i].qos;
			j->sub_id[j->n] = rq[i].sub_id;
			j->n++;
		}
		free(msgs);
		free(rq[i].filter);
	}
	if (retained_run(j))
		retained_job_free(j);
}

/* Retained messages to send once the SUBACK is out (client_send_when_stored). */
struct retained_later {
	struct retained_req *rq;
	size_t n;
};

static void retained_later_drop(void *arg)
{
	struct retained_later *rl = arg;
	for (size_t i = 0; i < rl->n; i++)
		free(rl->rq[i].filter);
	free(rl->rq);
	free(rl);
}

static void retained_later_send(struct client *c, void *arg)
{
	struct retained_later *rl = arg;
	send_retained(c, rl->rq, rl->n); /* frees the filters */
	free(rl->rq);
	free(rl);
}

/* Ask authorization about every valid filter of a SUBSCRIBE before anything is applied.
 * Returns false when the packet must not be handled now: an answer is pending (the packet
 * is handled again once it is in) or the client was disconnected (deny_action). Otherwise
 * *allowed is NULL (everything allowed) or holds one flag per entry. */
static bool authorize_filters(struct client *c, const struct mqtt_subscribe *sp, uint8_t flags, const uint8_t *body,
			      size_t len, uint8_t **allowed)
{
	*allowed = NULL;
	if (!c->authz)
		return true;
	uint8_t *ok = xmalloc(sp->count);
	bool denied = false;
	size_t off = 0;
	struct mqtt_str f;
	uint8_t options;
	for (uint32_t i = 0; mqtt_subscribe_next(sp, &off, &f, &options); i++) {
		ok[i] = 1;
		struct topic_share sh;
		int shared = topic_parse_share((const char *)f.p, f.len, &sh);
		if (check_filter(c, (const char *)f.p, f.len, options, shared, &sh))
			continue; /* refused anyway */
		struct authz_action a = { .type = AUTHZ_SUBSCRIBE,
					  .topic = shared == 1 ? sh.filter : (const char *)f.p,
					  .topic_len = shared == 1 ? sh.filter_len : f.len,
					  .qos = options & MQTT_SUBOPT_QOS_MASK };
		enum authz_verdict v = client_authorize(c, &a, MQTT_SUBSCRIBE, flags, body, len);
		if (v == AUTHZ_PENDING) {
			free(ok);
			return false;
		}
		if (v != AUTHZ_ALLOW) {
			ok[i] = 0;
			denied = true;
		}
	}
	if (denied && client_authz_deny_action(c, "subscribe not authorized")) {
		free(ok);
		return false;
	}
	*allowed = ok;
	return true;
}

void client_handle_subscribe(struct client *c, uint8_t flags, const uint8_t *body, size_t len)
{
	struct mqtt_subscribe sp;
	uint8_t rc = mqtt_decode_subscribe(c->version, flags, body, len, &sp);
	if (rc) {
		client_protocol_error(c, rc, "malformed SUBSCRIBE");
		return;
	}
	uint32_t sub_id = (c->version == MQTT_V5 && (sp.props.present & MQTT_P_SUBSCRIPTION_ID)) ? sp.props.sub_ids[0] : 0;
	uint8_t *allowed = NULL;
	if (!authorize_filters(c, &sp, flags, body, len, &allowed))
		return; /* waiting for an authorization answer, or disconnected */
	uint64_t ops = store_thread_ops(); /* the SUBACK waits for the subscriptions' writes */
	uint8_t *codes = xmalloc(sp.count);
	struct retained_req *rq = xmalloc(sp.count * sizeof *rq);
	size_t nrq = 0;
	size_t off = 0;
	struct mqtt_str f;
	uint8_t options;
	const struct cfg_mqtt *m = mq(c);
	for (uint32_t i = 0; mqtt_subscribe_next(&sp, &off, &f, &options); i++) {
		struct topic_share sh;
		int shared = topic_parse_share((const char *)f.p, f.len, &sh);
		if (shared == 1 && (options & MQTT_SUBOPT_NO_LOCAL) && c->version == MQTT_V5) {
			client_protocol_error(c, MQTT_RC_PROTOCOL_ERROR, "no-local on a shared subscription");
			goto out;
		}
		uint8_t err = check_filter(c, (const char *)f.p, f.len, options, shared, &sh);
		if (!err && allowed && !allowed[i])
			err = MQTT_RC_NOT_AUTHORIZED;
		size_t flen;
		const char *real;
		size_t rlen;
		char *full = NULL;
		if (!err) {
			full = mount_filter(c, (const char *)f.p, f.len, shared == 1 ? &sh : NULL, &flen, &real, &rlen);
			if (m->max_subscriptions && session_sub_count(c->sess) >= m->max_subscriptions &&
			    !session_sub_has(c->sess, full, flen))
				err = MQTT_RC_QUOTA_EXCEEDED;
			if (flen > 65535)
				err = MQTT_RC_TOPIC_FILTER_INVALID;
		}
		if (err) {
			char buf[128];
			log_info("client %s: subscription to %s refused (%s)", c->client_id,
				 client_safe((const char *)f.p, f.len, buf, sizeof buf), mqtt_rc_str(err));
			codes[i] = c->version == MQTT_V5 ? err : 0x80;
			free(full);
			continue;
		}
		uint8_t qos = options & MQTT_SUBOPT_QOS_MASK;
		if (qos > m->max_qos_allowed)
			qos = m->max_qos_allowed;
		uint8_t opts = (uint8_t)((options & ~MQTT_SUBOPT_QOS_MASK) | qos);
		bool created = session_sub_add(c->sess, full, flen, opts, sub_id);
		codes[i] = qos;
		uint8_t rh = (options & MQTT_SUBOPT_RETAIN_HANDLING_MASK) >> MQTT_SUBOPT_RETAIN_HANDLING_SHIFT;
		if (shared != 1 && m->retain_available && (rh == 0 || (rh == 1 && created))) {
			rq[nrq].filter = xstrndup(real, rlen);
			rq[nrq].len = rlen;
			rq[nrq].qos = qos;
			rq[nrq].sub_id = sub_id;
			nrq++;
		}
		free(full);
	}
	struct buf b = { 0 };
	mqtt_encode_suback(&b, c->version, sp.packet_id, NULL, codes, sp.count);
	struct retained_later *rl = NULL;
	if (nrq) {
		rl = xmalloc(sizeof *rl);
		rl->rq = rq;
		rl->n = nrq;
		rq = NULL;
		nrq = 0;
	}
	client_send_when_stored(c, ops, b.data, b.len, rl ? retained_later_send : NULL, rl ? retained_later_drop : NULL,
				rl);
	buf_free(&b);
out:
	for (size_t i = 0; i < nrq; i++)
		free(rq[i].filter);
	free(rq);
	free(codes);
	free(allowed);
}

void client_handle_unsubscribe(struct client *c, uint8_t flags, const uint8_t *body, size_t len)
{
	struct mqtt_unsubscribe up;
	uint8_t rc = mqtt_decode_unsubscribe(c->version, flags, body, len, &up);
	if (rc) {
		client_protocol_error(c, rc, "malformed UNSUBSCRIBE");
		return;
	}
	uint64_t ops = store_thread_ops();
	uint8_t *codes = xmalloc(up.count);
	size_t off = 0;
	struct mqtt_str f;
	for (uint32_t i = 0; mqtt_unsubscribe_next(&up, &off, &f); i++) {
		struct topic_share sh;
		int shared = topic_parse_share((const char *)f.p, f.len, &sh);
		if (check_filter(c, (const char *)f.p, f.len, 0, shared, &sh) == MQTT_RC_TOPIC_FILTER_INVALID) {
			codes[i] = MQTT_RC_TOPIC_FILTER_INVALID;
			continue;
		}
		size_t flen, rlen;
		const char *real;
		char *full = mount_filter(c, (const char *)f.p, f.len, shared == 1 ? &sh : NULL, &flen, &real, &rlen);
		codes[i] = session_sub_del(c->sess, full, flen) ? MQTT_RC_SUCCESS : MQTT_RC_NO_SUBSCRIPTION_EXISTED;
		free(full);
	}
	struct buf b = { 0 };
	mqtt_encode_unsuback(&b, c->version, up.packet_id, NULL, codes, up.count);
	client_send_when_stored(c, ops, b.data, b.len, NULL, NULL, NULL);
	buf_free(&b);
	free(codes);
}
