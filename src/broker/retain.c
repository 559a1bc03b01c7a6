#include "broker/retain.h"

#include <pthread.h>
#include <stdlib.h>

#include "broker/msg.h"
#include "broker/topic.h"
#include "core/alloc.h"
#include "store/store.h"

struct retain_store {
	pthread_mutex_t lock;
	struct topic_tree *tree; /* topic name -> struct msg * */
	struct store *store;     /* changes are persisted here, NULL = not */
};

static void unref_value(void *v)
{
	msg_unref(v);
}

struct retain_store *retain_new(void)
{
	struct retain_store *rs = xcalloc(1, sizeof *rs);
	pthread_mutex_init(&rs->lock, NULL);
	rs->tree = topic_tree_new();
	return rs;
}

void retain_free(struct retain_store *rs)
{
	if (!rs)
		return;
	topic_tree_free(rs->tree, unref_value);
	pthread_mutex_destroy(&rs->lock);
	free(rs);
}

void retain_persist_to(struct retain_store *rs, struct store *st)
{
	rs->store = st;
}

bool retain_put(struct retain_store *rs, struct msg *m)
{
	struct store *st = rs->store;
	bool changed = false;
	struct msg *old = NULL;
	pthread_mutex_lock(&rs->lock);
	if (m->payload_len == 0) {
		void **slot = topic_tree_slot(rs->tree, msg_topic(m), m->topic_len, false);
		if (slot && *slot) {
			old = *slot;
			*slot = NULL;
			topic_tree_prune(rs->tree, msg_topic(m), m->topic_len);
			changed = true;
			if (st)
				store_retain_del(st, msg_topic(m), m->topic_len);
		}
	} else {
		void **slot = topic_tree_slot(rs->tree, msg_topic(m), m->topic_len, true);
		old = *slot;
		*slot = msg_ref(m);
		changed = true;
		if (st)
			store_retain_put(st, m);
	}
	pthread_mutex_unlock(&rs->lock);
	/* After the store write that stops referring to it: releasing the last reference
	 * queues the deletion of its stored row (msg_set_release_hook). */
	msg_unref(old);
	return changed;
}

struct match_ctx {
	struct msg **v;
	size_t n, cap;
	int64_t now;
	struct msg **expired;
	size_t nexpired, capexpired;
};

static void push(struct msg ***v, size_t *n, size_t *cap, struct msg *m)
{
	if (*n == *cap) {
		*cap = *cap ? *cap * 2 : 8;
		*v = xrealloc(*v, *cap * sizeof **v);
	}
	(*v)[(*n)++] = m;
}

static bool on_match(void *arg, const char *key, size_t key_len, void *value)
{
	(void)key;
	(void)key_len;
	struct match_ctx *mc = arg;
	struct msg *m = value;
	if (msg_expired(m, mc->now))
		push(&mc->expired, &mc->nexpired, &mc->capexpired, m);
	else
		push(&mc->v, &mc->n, &mc->cap, msg_ref(m));
	return true;
}

size_t retain_match(struct retain_store *rs, const char *filter, size_t flen, int64_t now_s, struct msg ***out)
{
	struct match_ctx mc = { .now = now_s };
	pthread_mutex_lock(&rs->lock);
	topic_tree_match_filter(rs->tree, filter, flen, on_match, &mc);
	/* Expired retained messages are dropped when met. */
	for (size_t i = 0; i < mc.nexpired; i++) {
		struct msg *m = mc.expired[i];
		void **slot = topic_tree_slot(rs->tree, msg_topic(m), m->topic_len, false);
		if (slot && *slot == m) {
			*slot = NULL;
			topic_tree_prune(rs->tree, msg_topic(m), m->topic_len);
			if (rs->store)
				store_retain_del(rs->store, msg_topic(m), m->topic_len);
			msg_unref(m);
		}
	}
	pthread_mutex_unlock(&rs->lock);
	free(mc.expired);
	*out = mc.v;
	return mc.n;
}

size_t retain_count(struct retain_store *rs)
{
	pthread_mutex_lock(&rs->lock);
	size_t n = topic_tree_count(rs->tree);
	pthread_mutex_unlock(&rs->lock);
	return n;
}
