#include "broker/broker.h"

#include <stdlib.h>
#include <string.h>

#include "broker/client.h"
#include "broker/msg.h"
#include "broker/publish.h"
#include "broker/retain.h"
#include "broker/route.h"
#include "broker/session.h"
#include "config/config.h"
#include "core/alloc.h"
#include "core/hash.h"
#include "core/log.h"
#include "mqtt/mqtt.h"
#include "store/store.h"

struct worker *worker_current(void)
{
	struct loop *l = loop_current();
	return l ? loop_user(l) : NULL;
}

struct worker *broker_owner(struct broker *b, const char *client_id, size_t len)
{
	return &b->workers[hash_bytes(client_id, len) % (uint64_t)b->nworkers];
}

/* ---- cross-worker deliveries ---- */

struct batch {
	struct worker *to;
	struct xdlv *items;
	size_t n;
};

static void batch_arrive(void *arg)
{
	struct batch *bt = arg;
	struct worker *w = bt->to;
	struct store *st = w->b->store;
	for (size_t i = 0; i < bt->n; i++) {
		struct xdlv *x = &bt->items[i];
		struct session *s = session_by_id(w, x->sess_id);
		uint64_t ops = store_thread_ops();
		if (s)
			session_deliver(s, x->msg, x->qos, x->flags, x->sub_id);
		msg_unref(x->msg);
		/* The publisher's acknowledgement waits for what this delivery wrote. */
		if (x->aw) {
			if (st && store_thread_ops() != ops)
				store_notify(st, ops, client_ack_part_done, x->aw);
			else
				client_ack_part_done(x->aw, true);
		}
	}
	free(bt->items);
	free(bt);
}

/* End of iteration: one post per destination worker carries everything routed to it. */
static void outboxes_flush(struct loop_task *t)
{
	struct worker *w = container_of(t, struct worker, outbox_task);
	for (int d = 0; d < w->b->nworkers; d++) {
		struct outbox *ob = &w->outboxes[d];
		if (!ob->n)
			continue;
		struct batch *bt = xmalloc(sizeof *bt);
		bt->to = &w->b->workers[d];
		bt->items = ob->items;
		bt->n = ob->n;
		ob->items = NULL;
		ob->n = ob->cap = 0;
		loop_post(bt->to->loop, batch_arrive, bt);
	}
}

void worker_outbox_init(struct worker *w)
{
	w->outboxes = xcalloc((size_t)w->b->nworkers, sizeof *w->outboxes);
	list_init(&w->outbox_task.link);
	w->outbox_task.fn = outboxes_flush;
}

void worker_dispatch(struct worker *w, uint16_t dest, uint64_t sess_id, struct msg *m, uint8_t qos, uint8_t flags,
		     uint32_t sub_id)
{
	if (dest == (uint16_t)w->id) {
		struct session *s = session_by_id(w, sess_id);
		if (s)
			session_deliver(s, m, qos, flags, sub_id);
		return;
	}
	struct outbox *ob = &w->outboxes[dest];
	if (ob->n == ob->cap) {
		ob->cap = ob->cap ? ob->cap * 2 : 64;
		ob->items = xrealloc(ob->items, ob->cap * sizeof *ob->items);
	}
	ob->items[ob->n++] = (struct xdlv){ .msg = msg_ref(m), .sess_id = sess_id, .sub_id = sub_id, .qos = qos,
					    .flags = flags, .aw = w->cur_ack };
	if (w->cur_ack)
		client_ack_part_add(w->cur_ack);
	loop_defer(w->loop, &w->outbox_task);
}

/* ---- publish ---- */

#define HIT_DEPTH 4
static _Thread_local struct route_hits tl_hits[HIT_DEPTH];
static _Thread_local int tl_depth;

size_t broker_publish(struct worker *w, struct msg *m, struct client *from)
{
	(void)from;
	struct broker *b = w->b;
	const struct cfg_mqtt *mq = &b->cfg->mqtt;
	if (m->retain && mq->retain_available)
		retain_put(b->retained, m);
	struct route_hits local = { 0 };
	struct route_hits *hits = tl_depth < HIT_DEPTH ? &tl_hits[tl_depth] : &local;
	tl_depth++;
	route_match(b->routes, msg_topic(m), m->topic_len, hits);
	size_t delivered = 0;
	for (size_t i = 0; i < hits->n; i++) {
		const struct route_hit *h = &hits->v[i];
		if ((h->options & MQTT_SUBOPT_NO_LOCAL) && !h->shared && m->publisher && h->sess_id == m->publisher)
			continue;
		uint8_t subq = h->options & MQTT_SUBOPT_QOS_MASK;
		/* upgrade_qos: the higher of the two, as EMQX (emqx_session:enrich_subopts). */
		uint8_t qos = mq->upgrade_qos ? (m->qos > subq ? m->qos : subq) : (m->qos < subq ? m->qos : subq);
		uint8_t flags = ((h->options & MQTT_SUBOPT_RETAIN_AS_PUBLISHED) && m->retain) ? DLV_RETAIN : 0;
		worker_dispatch(w, h->worker, h->sess_id, m, qos, flags, h->sub_id);
		delivered++;
	}
	tl_depth--;
	if (hits == &local)
		route_hits_free(&local);
	atomic_fetch_add_explicit(&w->stats.msgs_in, 1, memory_order_relaxed);
	return delivered;
}

void broker_publish_thread_cleanup(void)
{
	for (int i = 0; i < HIT_DEPTH; i++)
		route_hits_free(&tl_hits[i]);
}
