#include "broker/route.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "broker/topic.h"
#include "core/alloc.h"
#include "core/hmap.h"
#include "core/list.h"

/* An ordinary subscription on a filter, indexed by session id. */
struct sub_ent {
	struct hmap_node hn;
	uint64_t sess_id;
	uint32_t sub_id;
	uint16_t worker;
	uint8_t options;
};

struct member {
	uint64_t sess_id;
	uint32_t sub_id;
	uint16_t worker;
	uint8_t options;
	atomic_bool online;
};

struct share_group {
	char *name;
	size_t nlen;
	struct member *m;
	size_t n, cap;
	atomic_uint rr; /* advanced under the read lock */
};

/* The value stored in the topic tree for one filter. */
struct route_node {
	struct hmap subs;
	struct share_group *groups;
	size_t ngroups;
};

struct route_table {
	pthread_rwlock_t lock;
	struct topic_tree *tree;
};

static uint64_t sess_hash(uint64_t id)
{
	/* Session ids are ours (sequential), not attacker-chosen: a multiplicative mix will do. */
	return id * 0x9E3779B97F4A7C15ull;
}

static void node_free(void *v)
{
	struct route_node *rn = v;
	for (struct hmap_node *n = hmap_steal(&rn->subs), *next; n; n = next) {
		next = n->next;
		free(container_of(n, struct sub_ent, hn));
	}
	for (size_t i = 0; i < rn->ngroups; i++) {
		free(rn->groups[i].name);
		free(rn->groups[i].m);
	}
	free(rn->groups);
	free(rn);
}

struct route_table *route_new(void)
{
	struct route_table *rt = xcalloc(1, sizeof *rt);
	pthread_rwlock_init(&rt->lock, NULL);
	rt->tree = topic_tree_new();
	return rt;
}

void route_free(struct route_table *rt)
{
	if (!rt)
		return;
	topic_tree_free(rt->tree, node_free);
	pthread_rwlock_destroy(&rt->lock);
	free(rt);
}

static struct sub_ent *find_sub(struct route_node *rn, uint64_t sess_id)
{
	uint64_t h = sess_hash(sess_id);
	hmap_for_hash(&rn->subs, h, it) {
		struct sub_ent *e = container_of(it, struct sub_ent, hn);
		if (e->sess_id == sess_id)
			return e;
	}
	return NULL;
}

static struct share_group *find_group(struct route_node *rn, const char *g, size_t glen)
{
	for (size_t i = 0; i < rn->ngroups; i++)
		if (rn->groups[i].nlen == glen && memcmp(rn->groups[i].name, g, glen) == 0)
			return &rn->groups[i];
	return NULL;
}

static struct member *find_member(struct share_group *sg, uint64_t sess_id)
{
	for (size_t i = 0; i < sg->n; i++)
		if (sg->m[i].sess_id == sess_id)
			return &sg->m[i];
	return NULL;
}

bool route_subscribe(struct route_table *rt, const char *filter, size_t flen, const char *group, size_t glen,
		     uint64_t sess_id, uint16_t worker, uint8_t options, uint32_t sub_id, bool online)
{
	bool created = false;
	pthread_rwlock_wrlock(&rt->lock);
	void **slot = topic_tree_slot(rt->tree, filter, flen, true);
	struct route_node *rn = *slot;
	if (!rn) {
		rn = xcalloc(1, sizeof *rn);
		hmap_init(&rn->subs);
		*slot = rn;
	}
	if (!group) {
		struct sub_ent *e = find_sub(rn, sess_id);
		if (!e) {
			e = xcalloc(1, sizeof *e);
			e->sess_id = sess_id;
			hmap_insert(&rn->subs, &e->hn, sess_hash(sess_id));
			created = true;
		}
		e->worker = worker;
		e->options = options;
		e->sub_id = sub_id;
	} else {
		struct share_group *sg = find_group(rn, group, glen);
		if (!sg) {
			rn->groups = xrealloc(rn->groups, (rn->ngroups + 1) * sizeof *rn->groups);
			sg = &rn->groups[rn->ngroups++];
			memset(sg, 0, sizeof *sg);
			sg->name = xstrndup(group, glen);
			sg->nlen = glen;
			atomic_init(&sg->rr, 0);
		}
		struct member *m = find_member(sg, sess_id);
		if (!m) {
			if (sg->n == sg->cap) {
				sg->cap = sg->cap ? sg->cap * 2 : 4;
				sg->m = xrealloc(sg->m, sg->cap * sizeof *sg->m);
			}
			m = &sg->m[sg->n++];
			m->sess_id = sess_id;
			atomic_init(&m->online, online);
			created = true;
		}
		m->worker = worker;
		m->options = options;
		m->sub_id = sub_id;
		atomic_store(&m->online, online);
	}
	pthread_rwlock_unlock(&rt->lock);
	return created;
}

static bool node_empty(const struct route_node *rn)
{
	return rn->subs.count == 0 && rn->ngroups == 0;
}

bool route_unsubscribe(struct route_table *rt, const char *filter, size_t flen, const char *group, size_t glen,
		       uint64_t sess_id)
{
	bool found = false;
	pthread_rwlock_wrlock(&rt->lock);
	void **slot = topic_tree_slot(rt->tree, filter, flen, false);
	struct route_node *rn = slot ? *slot : NULL;
	if (!rn)
		goto out;
	if (!group) {
		struct sub_ent *e = find_sub(rn, sess_id);
		if (e) {
			hmap_remove(&rn->subs, &e->hn);
			free(e);
			found = true;
		}
	} else {
		struct share_group *sg = find_group(rn, group, glen);
		struct member *m = sg ? find_member(sg, sess_id) : NULL;
		if (m) {
			size_t i = (size_t)(m - sg->m);
			memmove(&sg->m[i], &sg->m[i + 1], (sg->n - i - 1) * sizeof *sg->m);
			sg->n--;
			found = true;
			if (sg->n == 0) {
				size_t gi = (size_t)(sg - rn->groups);
				free(sg->name);
				free(sg->m);
				memmove(&rn->groups[gi], &rn->groups[gi + 1], (rn->ngroups - gi - 1) * sizeof *rn->groups);
				rn->ngroups--;
			}
		}
	}
	if (node_empty(rn)) {
		*slot = NULL;
		node_free(rn);
		topic_tree_prune(rt->tree, filter, flen);
	}
out:
	pthread_rwlock_unlock(&rt->lock);
	return found;
}

void route_set_online(struct route_table *rt, const char *filter, size_t flen, const char *group, size_t glen,
		      uint64_t sess_id, bool online)
{
	pthread_rwlock_rdlock(&rt->lock);
	struct route_node *rn = topic_tree_get(rt->tree, filter, flen);
	struct share_group *sg = rn ? find_group(rn, group, glen) : NULL;
	struct member *m = sg ? find_member(sg, sess_id) : NULL;
	if (m)
		atomic_store(&m->online, online);
	pthread_rwlock_unlock(&rt->lock);
}

static struct route_hit *hit_push(struct route_hits *h)
{
	if (h->n == h->cap) {
		h->cap = h->cap ? h->cap * 2 : 16;
		h->v = xrealloc(h->v, h->cap * sizeof *h->v);
	}
	return &h->v[h->n++];
}

/* Round robin over the group, preferring connected members. */
static struct member *pick_member(struct share_group *sg)
{
	unsigned start = atomic_fetch_add_explicit(&sg->rr, 1, memory_order_relaxed);
	for (size_t k = 0; k < sg->n; k++) {
		struct member *m = &sg->m[(start + k) % sg->n];
		if (atomic_load_explicit(&m->online, memory_order_relaxed))
			return m;
	}
	return &sg->m[start % sg->n];
}

static bool collect(void *arg, const char *key, size_t key_len, void *value)
{
	(void)key;
	(void)key_len;
	struct route_hits *h = arg;
	struct route_node *rn = value;
	hmap_for_each(&rn->subs, it) {
		struct sub_ent *e = container_of(it, struct sub_ent, hn);
		struct route_hit *x = hit_push(h);
		x->sess_id = e->sess_id;
		x->sub_id = e->sub_id;
		x->worker = e->worker;
		x->options = e->options;
		x->shared = false;
	}
	for (size_t i = 0; i < rn->ngroups; i++) {
		struct share_group *sg = &rn->groups[i];
		if (!sg->n)
			continue;
		struct member *m = pick_member(sg);
		struct route_hit *x = hit_push(h);
		x->sess_id = m->sess_id;
		x->sub_id = m->sub_id;
		x->worker = m->worker;
		x->options = m->options;
		x->shared = true;
	}
	return true;
}

void route_match(struct route_table *rt, const char *topic, size_t tlen, struct route_hits *hits)
{
	hits->n = 0;
	pthread_rwlock_rdlock(&rt->lock);
	topic_tree_match_name(rt->tree, topic, tlen, collect, hits);
	pthread_rwlock_unlock(&rt->lock);
}

size_t route_count(struct route_table *rt)
{
	pthread_rwlock_rdlock(&rt->lock);
	size_t n = topic_tree_count(rt->tree);
	pthread_rwlock_unlock(&rt->lock);
	return n;
}

void route_hits_free(struct route_hits *h)
{
	free(h->v);
	h->v = NULL;
	h->n = h->cap = 0;
}
