#include "broker/session.h"

#include <stdlib.h>
#include <string.h>

#include "authz/authz.h"
#include "broker/broker.h"
#include "broker/client.h"
#include "broker/msg.h"
#include "broker/publish.h"
#include "broker/route.h"
#include "broker/topic.h"
#include "config/config.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/hash.h"
#include "core/log.h"
#include "mqtt/mqtt.h"
#include "store/store.h"

static uint64_t id_hash(uint64_t id)
{
	return id * 0x9E3779B97F4A7C15ull;
}

static const struct cfg_mqtt *mq(const struct session *s)
{
	return &s->w->b->cfg->mqtt;
}

static struct store *st(const struct session *s)
{
	return s->stored ? s->w->b->store : NULL;
}

static void expiry_fired(struct timer *t);
static void will_fired(struct timer *t);

struct session *session_get(struct worker *w, const char *cid, size_t len)
{
	uint64_t h = hash_bytes(cid, len);
	hmap_for_hash(&w->sessions_by_cid, h, it) {
		struct session *s = container_of(it, struct session, by_cid);
		if (s->cid_len == len && memcmp(s->client_id, cid, len) == 0)
			return s;
	}
	return NULL;
}

struct session *session_by_id(struct worker *w, uint64_t id)
{
	hmap_for_hash(&w->sessions_by_id, id_hash(id), it) {
		struct session *s = container_of(it, struct session, by_id);
		if (s->id == id)
			return s;
	}
	return NULL;
}

struct session *session_create(struct worker *w, const char *cid, size_t len)
{
	struct session *s = xcalloc(1, sizeof *s);
	s->id = atomic_fetch_add(&w->b->next_session_id, 1);
	s->w = w;
	s->client_id = xstrndup(cid, len);
	s->cid_len = len;
	hmap_init(&s->subs);
	s->next_pid = 1;
	s->next_seq = 1;
	timer_init(&s->will_timer, will_fired);
	timer_init(&s->expiry_timer, expiry_fired);
	hmap_insert(&w->sessions_by_cid, &s->by_cid, hash_bytes(cid, len));
	hmap_insert(&w->sessions_by_id, &s->by_id, id_hash(s->id));
	return s;
}

/* ---- subscriptions ---- */

static uint64_t filter_hash(const char *f, size_t len)
{
	return hash_bytes(f, len);
}

static struct sess_sub *sub_find(const struct session *s, const char *full, size_t len)
{
	uint64_t h = filter_hash(full, len);
	hmap_for_hash(&s->subs, h, it) {
		struct sess_sub *e = container_of(it, struct sess_sub, hn);
		if (e->len == len && memcmp(e->filter, full, len) == 0)
			return e;
	}
	return NULL;
}

static const char *sub_real(const struct sess_sub *e, size_t *len)
{
	*len = e->len - e->real_off;
	return e->filter + e->real_off;
}

static const char *sub_group(const struct sess_sub *e)
{
	return e->group_len ? e->filter + e->group_off : NULL;
}

static struct sess_sub *sub_record(struct session *s, const char *full, size_t len, uint8_t options, uint32_t sub_id,
				   bool *created)
{
	struct sess_sub *e = sub_find(s, full, len);
	*created = false;
	if (!e) {
		struct topic_share sh;
		e = xcalloc(1, sizeof *e + len + 1);
		memcpy(e->filter, full, len);
		e->len = (uint16_t)len;
		if (topic_parse_share(full, len, &sh) == 1) {
			e->group_off = (uint16_t)(sh.group - full);
			e->group_len = (uint16_t)sh.group_len;
			e->real_off = (uint16_t)(sh.filter - full);
		}
		hmap_insert(&s->subs, &e->hn, filter_hash(full, len));
		*created = true;
	}
	e->options = options;
	e->sub_id = sub_id;
	return e;
}

bool session_sub_add(struct session *s, const char *full, size_t len, uint8_t options, uint32_t sub_id)
{
	bool fresh;
	struct sess_sub *e = sub_record(s, full, len, options, sub_id, &fresh);
	size_t rlen;
	const char *real = sub_real(e, &rlen);
	bool created = route_subscribe(s->w->b->routes, real, rlen, sub_group(e), e->group_len, s->id,
				       (uint16_t)s->w->id, options, sub_id, s->client != NULL);
	if (st(s))
		store_sub_put(st(s), s->client_id, e->filter, options, sub_id);
	return created || fresh;
}

static void sub_unroute(struct session *s, struct sess_sub *e)
{
	size_t rlen;
	const char *real = sub_real(e, &rlen);
	route_unsubscribe(s->w->b->routes, real, rlen, sub_group(e), e->group_len, s->id);
}

bool session_sub_del(struct session *s, const char *full, size_t len)
{
	struct sess_sub *e = sub_find(s, full, len);
	if (!e)
		return false;
	sub_unroute(s, e);
	hmap_remove(&s->subs, &e->hn);
	if (st(s))
		store_sub_del(st(s), s->client_id, e->filter);
	free(e);
	return true;
}

bool session_sub_has(const struct session *s, const char *full, size_t len)
{
	return sub_find(s, full, len) != NULL;
}

size_t session_sub_count(const struct session *s)
{
	return s->subs.count;
}

void session_restore_sub(struct session *s, const char *full, size_t len, uint8_t options, uint32_t sub_id)
{
	bool fresh;
	struct sess_sub *e = sub_record(s, full, len, options, sub_id, &fresh);
	size_t rlen;
	const char *real = sub_real(e, &rlen);
	route_subscribe(s->w->b->routes, real, rlen, sub_group(e), e->group_len, s->id, (uint16_t)s->w->id, options,
			sub_id, false);
}

static void set_shared_online(struct session *s, bool online)
{
	hmap_for_each(&s->subs, it) {
		struct sess_sub *e = container_of(it, struct sess_sub, hn);
		if (!e->group_len)
			continue;
		size_t rlen;
		const char *real = sub_real(e, &rlen);
		route_set_online(s->w->b->routes, real, rlen, sub_group(e), e->group_len, s->id, online);
	}
}

/* ---- persistence of the whole session ---- */

/* fresh: d is new (enqueue), so no row of it exists yet. */
static void persist_dlv_as(struct session *s, const struct dlv *d, bool fresh)
{
	struct store *so = st(s);
	if (!so)
		return;
	uint64_t mid = d->msg ? store_msg_ref(so, d->msg) : 0;
	store_dlv_put(so, s->client_id, d->seq, mid, d->qos, d->flags, d->sub_id, d->pid, fresh);
}

static void persist_dlv(struct session *s, const struct dlv *d)
{
	persist_dlv_as(s, d, false);
}

static void unpersist_dlv(struct session *s, const struct dlv *d)
{
	if (st(s))
		store_dlv_del(st(s), s->client_id, d->seq);
}

static struct dlv *q_at(struct session *s, uint32_t i)
{
	return &s->q[(s->q_head + i) % s->q_cap];
}

/* Write everything the session holds (it just became persistent). */
static void persist_all(struct session *s)
{
	struct store *so = s->w->b->store;
	store_session_put(so, s->client_id, s->expiry_interval, s->proto, s->disconnected_at);
	hmap_for_each(&s->subs, it) {
		struct sess_sub *e = container_of(it, struct sess_sub, hn);
		store_sub_put(so, s->client_id, e->filter, e->options, e->sub_id);
	}
	for (uint32_t i = 0; i < s->n_inflight; i++)
		persist_dlv(s, &s->inflight[i]);
	for (uint32_t i = 0; i < s->q_len; i++)
		persist_dlv(s, q_at(s, i));
	for (uint32_t i = 0; i < s->n_rel; i++)
		store_rel_put(so, s->client_id, s->rel[i]);
}

void session_set_expiry(struct session *s, uint32_t seconds)
{
	s->expiry_interval = seconds;
	struct store *so = s->w->b->store;
	if (!so)
		return;
	if (seconds > 0 && !s->stored) {
		s->stored = true;
		persist_all(s);
	} else if (seconds > 0) {
		store_session_put(so, s->client_id, s->expiry_interval, s->proto, s->disconnected_at);
	} else if (s->stored) {
		store_session_del(so, s->client_id);
		s->stored = false;
	}
}

/* ---- will ---- */

void session_set_will(struct session *s, struct msg *m, uint32_t delay, uint32_t expiry, struct authz_subject *subj)
{
	timer_cancel(&s->will_timer);
	if (s->will)
		msg_unref(s->will);
	authz_subject_unref(s->will_authz);
	s->will = m;
	s->will_authz = m && subj ? authz_subject_ref(subj) : NULL;
	s->will_delay = delay;
	s->will_expiry = expiry;
}

void session_publish_will(struct session *s)
{
	struct msg *m = s->will;
	if (!m)
		return;
	struct authz_subject *subj = s->will_authz;
	s->will = NULL;
	s->will_authz = NULL;
	timer_cancel(&s->will_timer);
	if (s->will_expiry)
		m->expiry_at = clock_wall_s() + s->will_expiry; /* only the session holds m yet */
	log_debug("publishing will of %s on %.*s", s->client_id, (int)m->topic_len, msg_topic(m));
	broker_publish_will(s->w, s->client_id, m, subj);
}

static void will_fired(struct timer *t)
{
	struct session *s = container_of(t, struct session, will_timer);
	session_publish_will(s);
}

/* ---- delivery ---- */

static uint32_t window(const struct session *s)
{
	uint32_t w = mq(s)->max_inflight ? mq(s)->max_inflight : 65535;
	if (s->client && s->client->recv_max && s->client->recv_max < w)
		w = s->client->recv_max;
	return w;
}

static bool online(const struct session *s)
{
	return s->client && s->client->state == CL_CONNECTED && !conn_closing(&s->client->conn);
}

static void drop(struct session *s, const char *why)
{
	s->dropped++;
	atomic_fetch_add_explicit(&s->w->stats.msgs_dropped, 1, memory_order_relaxed);
	log_debug("session %s: message dropped (%s)", s->client_id, why);
}

static void q_grow(struct session *s)
{
	uint32_t ncap = s->q_cap ? s->q_cap * 2 : 8;
	struct dlv *nq = xmalloc(ncap * sizeof *nq);
	for (uint32_t i = 0; i < s->q_len; i++)
		nq[i] = *q_at(s, i);
	free(s->q);
	s->q = nq;
	s->q_cap = ncap;
	s->q_head = 0;
}

static void q_pop(struct session *s, struct dlv *out)
{
	*out = s->q[s->q_head];
	s->q_head = (s->q_head + 1) % s->q_cap;
	s->q_len--;
}

static void enqueue(struct session *s, const struct dlv *d)
{
	uint32_t max = mq(s)->max_mqueue_len;
	if (max && s->q_len >= max) {
		struct dlv old;
		q_pop(s, &old); /* full: drop the oldest, as EMQX does */
		unpersist_dlv(s, &old);
		msg_unref(old.msg);
		drop(s, "message queue full");
	}
	if (s->q_len == s->q_cap)
		q_grow(s);
	*q_at(s, s->q_len) = *d;
	s->q_len++;
	persist_dlv_as(s, d, true);
}

static bool pid_in_use(const struct session *s, uint16_t pid)
{
	for (uint32_t i = 0; i < s->n_inflight; i++)
		if (s->inflight[i].pid == pid)
			return true;
	return false;
}

static uint16_t alloc_pid(struct session *s)
{
	for (;;) {
		uint16_t pid = s->next_pid++;
		if (s->next_pid == 0)
			s->next_pid = 1;
		if (pid && !pid_in_use(s, pid))
			return pid;
	}
}

static void inflight_remove(struct session *s, uint32_t i)
{
	struct dlv *d = &s->inflight[i];
	unpersist_dlv(s, d);
	msg_unref(d->msg);
	memmove(d, d + 1, (s->n_inflight - i - 1) * sizeof *d);
	s->n_inflight--;
}

/* Put a QoS 1/2 delivery in flight and send it. */
static void send_inflight(struct session *s, struct dlv d)
{
	if (s->n_inflight == s->cap_inflight) {
		s->cap_inflight = s->cap_inflight ? s->cap_inflight * 2 : 4;
		s->inflight = xrealloc(s->inflight, s->cap_inflight * sizeof *s->inflight);
	}
	d.pid = alloc_pid(s);
	uint32_t i = s->n_inflight++;
	s->inflight[i] = d;
	if (!client_send_dlv(s->client, &s->inflight[i], false)) {
		drop(s, "larger than the client's maximum packet size");
		inflight_remove(s, i);
		return;
	}
	s->inflight[i].flags |= DLV_SENT;
	persist_dlv(s, &s->inflight[i]);
}

/* Send a QoS 0 delivery now; consumes the delivery's reference. */
static void send_qos0(struct session *s, struct dlv *d)
{
	if (client_congested(s->client))
		drop(s, "client output congested");
	else if (!client_send_dlv(s->client, d, false))
		drop(s, "larger than the client's maximum packet size");
	msg_unref(d->msg);
}

void session_deliver(struct session *s, struct msg *m, uint8_t qos, uint8_t flags, uint32_t sub_id)
{
	if (msg_expired(m, clock_wall_s())) {
		drop(s, "expired");
		return;
	}
	if (mq(s)->ignore_loop_deliver && m->publisher == s->id && s->proto < MQTT_V5)
		return;
	struct dlv d = { .msg = msg_ref(m), .sub_id = sub_id, .seq = s->next_seq++, .qos = qos, .flags = flags };
	if (s->next_seq == 0)
		s->next_seq = 1;
	atomic_fetch_add_explicit(&s->w->stats.msgs_out, 1, memory_order_relaxed);
	if (qos == 0) {
		if (online(s) && s->q_len == 0) {
			send_qos0(s, &d);
		} else if (online(s) || (session_persistent(s) && mq(s)->mqueue_store_qos0)) {
			enqueue(s, &d);
		} else {
			msg_unref(d.msg);
			drop(s, "QoS 0 for an offline session");
		}
		return;
	}
	if (online(s) && s->q_len == 0 && s->n_inflight < window(s))
		send_inflight(s, d);
	else
		enqueue(s, &d);
}

void session_pump(struct session *s)
{
	int64_t now = clock_wall_s();
	while (online(s) && s->q_len) {
		struct dlv *head = q_at(s, 0);
		if (head->qos > 0 && s->n_inflight >= window(s))
			break;
		if (head->qos == 0 && client_congested(s->client))
			break;
		struct dlv d;
		q_pop(s, &d);
		if (d.msg && msg_expired(d.msg, now)) {
			unpersist_dlv(s, &d);
			msg_unref(d.msg);
			drop(s, "expired in queue");
			continue;
		}
		if (d.qos == 0) {
			unpersist_dlv(s, &d);
			send_qos0(s, &d);
		} else {
			send_inflight(s, d);
		}
	}
}

void session_resend(struct session *s)
{
	for (uint32_t i = 0; i < s->n_inflight && online(s); i++) {
		struct dlv *d = &s->inflight[i];
		if (!(d->flags & DLV_PUBREL) && d->msg && msg_expired(d->msg, clock_wall_s())) {
			drop(s, "expired in flight");
			inflight_remove(s, i--);
			continue;
		}
		if (!client_send_dlv(s->client, d, (d->flags & DLV_SENT) != 0)) {
			drop(s, "larger than the client's maximum packet size");
			inflight_remove(s, i--);
			continue;
		}
		if (!(d->flags & DLV_SENT)) {
			d->flags |= DLV_SENT;
			persist_dlv(s, d);
		}
	}
	session_pump(s);
}

bool session_ack(struct session *s, uint8_t type, uint16_t pid, uint8_t rc)
{
	uint32_t i;
	for (i = 0; i < s->n_inflight; i++)
		if (s->inflight[i].pid == pid)
			break;
	if (i == s->n_inflight)
		return false;
	struct dlv *d = &s->inflight[i];
	switch (type) {
	case MQTT_PUBACK:
		if (d->qos != 1)
			return false;
		inflight_remove(s, i);
		break;
	case MQTT_PUBREC:
		if (d->qos != 2)
			return false;
		if (rc >= 0x80) {
			inflight_remove(s, i); /* the receiver refused it: the flow ends here */
			break;
		}
		if (!(d->flags & DLV_PUBREL)) {
			/* The row stops referring to the message before the message is released:
			 * the last release queues the deletion of its row. */
			struct msg *m = d->msg;
			d->flags |= DLV_PUBREL;
			d->msg = NULL;
			persist_dlv(s, d);
			msg_unref(m);
		}
		client_send_dlv(s->client, d, false); /* PUBREL */
		return true;
	case MQTT_PUBCOMP:
		if (!(d->flags & DLV_PUBREL))
			return false;
		inflight_remove(s, i);
		break;
	default:
		return false;
	}
	session_pump(s);
	return true;
}

void session_restore_dlv(struct session *s, uint32_t seq, struct msg *m, uint8_t qos, uint8_t flags, uint32_t sub_id,
			 uint16_t pid)
{
	struct dlv d = { .msg = m, .sub_id = sub_id, .seq = seq, .pid = pid, .qos = qos, .flags = flags };
	if (seq >= s->next_seq)
		s->next_seq = seq + 1;
	if (pid) {
		if (s->n_inflight == s->cap_inflight) {
			s->cap_inflight = s->cap_inflight ? s->cap_inflight * 2 : 4;
			s->inflight = xrealloc(s->inflight, s->cap_inflight * sizeof *s->inflight);
		}
		s->inflight[s->n_inflight++] = d;
		if (pid >= s->next_pid)
			s->next_pid = (uint16_t)(pid + 1 ? pid + 1 : 1);
	} else {
		if (s->q_len == s->q_cap)
			q_grow(s);
		*q_at(s, s->q_len) = d;
		s->q_len++;
	}
}

/* ---- inbound QoS 2 ---- */

bool session_rel_has(struct session *s, uint16_t pid)
{
	for (uint32_t i = 0; i < s->n_rel; i++)
		if (s->rel[i] == pid)
			return true;
	return false;
}

static void rel_remove_at(struct session *s, uint32_t i)
{
	if (st(s))
		store_rel_del(st(s), s->client_id, s->rel[i]);
	s->rel[i] = s->rel[s->n_rel - 1];
	s->rel_at[i] = s->rel_at[s->n_rel - 1];
	s->n_rel--;
}

bool session_rel_add(struct session *s, uint16_t pid, uint64_t now_ms)
{
	uint32_t max = mq(s)->max_awaiting_rel;
	if (max && s->n_rel >= max) {
		/* Forget packet ids whose PUBREL never came within await_rel_timeout. */
		uint64_t limit = mq(s)->await_rel_timeout_ms;
		for (uint32_t i = 0; i < s->n_rel;) {
			if (now_ms - s->rel_at[i] >= limit)
				rel_remove_at(s, i);
			else
				i++;
		}
		if (s->n_rel >= max)
			return false;
	}
	if (s->n_rel == s->cap_rel) {
		s->cap_rel = s->cap_rel ? s->cap_rel * 2 : 4;
		s->rel = xrealloc(s->rel, s->cap_rel * sizeof *s->rel);
		s->rel_at = xrealloc(s->rel_at, s->cap_rel * sizeof *s->rel_at);
	}
	s->rel[s->n_rel] = pid;
	s->rel_at[s->n_rel] = now_ms;
	s->n_rel++;
	if (st(s))
		store_rel_put(st(s), s->client_id, pid);
	return true;
}

bool session_rel_del(struct session *s, uint16_t pid)
{
	for (uint32_t i = 0; i < s->n_rel; i++) {
		if (s->rel[i] == pid) {
			rel_remove_at(s, i);
			return true;
		}
	}
	return false;
}

/* ---- attach / detach / end ---- */

void session_attach(struct session *s, struct client *c)
{
	timer_cancel(&s->expiry_timer);
	/* Reconnected within the will delay: the will of the previous connection is not sent. */
	if (timer_armed(&s->will_timer))
		session_set_will(s, NULL, 0, 0, NULL);
	s->client = c;
	s->proto = c->version;
	s->disconnected_at = 0;
	set_shared_online(s, true);
}

static void expiry_fired(struct timer *t)
{
	struct session *s = container_of(t, struct session, expiry_timer);
	log_info("session %s expired", s->client_id);
	session_destroy(s);
}

void session_detach(struct session *s, bool want_will)
{
	s->client = NULL;
	set_shared_online(s, false);
	if (!want_will)
		session_set_will(s, NULL, 0, 0, NULL);
	if (s->expiry_interval == 0) {
		session_destroy(s); /* publishes a due will at once */
		return;
	}
	if (s->will) {
		if (s->will_delay == 0)
			session_publish_will(s);
		else
			timer_arm(s->w->loop, &s->will_timer,
				  (uint64_t)(s->will_delay < s->expiry_interval ? s->will_delay : s->expiry_interval) * 1000u);
	}
	s->disconnected_at = clock_wall_s();
	if (st(s))
		store_session_put(st(s), s->client_id, s->expiry_interval, s->proto, s->disconnected_at);
	if (s->expiry_interval != UINT32_MAX)
		timer_arm(s->w->loop, &s->expiry_timer, (uint64_t)s->expiry_interval * 1000u);
}

static void free_state(struct session *s)
{
	for (uint32_t i = 0; i < s->n_inflight; i++)
		msg_unref(s->inflight[i].msg);
	for (uint32_t i = 0; i < s->q_len; i++)
		msg_unref(q_at(s, i)->msg);
	free(s->inflight);
	free(s->q);
	free(s->rel);
	free(s->rel_at);
	msg_unref(s->will);
	s->will = NULL;
	authz_subject_unref(s->will_authz);
	s->will_authz = NULL;
	timer_cancel(&s->will_timer);
	timer_cancel(&s->expiry_timer);
	hmap_remove(&s->w->sessions_by_cid, &s->by_cid);
	hmap_remove(&s->w->sessions_by_id, &s->by_id);
	free(s->client_id);
}

void session_free(struct session *s)
{
	for (struct hmap_node *n = hmap_steal(&s->subs), *next; n; n = next) {
		next = n->next;
		free(container_of(n, struct sess_sub, hn));
	}
	free_state(s);
	free(s);
}

void session_destroy(struct session *s)
{
	struct worker *w = s->w;
	if (s->will)
		session_publish_will(s); /* the session ends before the will delay did */
	timer_cancel(&s->expiry_timer);
	for (struct hmap_node *n = hmap_steal(&s->subs), *next; n; n = next) {
		next = n->next;
		struct sess_sub *e = container_of(n, struct sess_sub, hn);
		sub_unroute(s, e);
		free(e);
	}
	if (s->stored)
		store_session_del(w->b->store, s->client_id);
	free_state(s);
	free(s);
}
