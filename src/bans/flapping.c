/* Flapping detection (bans.h): per-worker connect counters by client ID. Each worker owns
 * the client IDs that hash to it, so its table is only ever touched by its own thread. */
#include "bans/bans_int.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/hash.h"
#include "core/list.h"

struct flap_ent {
	struct hmap_node node;
	uint64_t start_ms; /* first connect of the current window */
	uint32_t count;
	size_t len;
	char id[];
};

void flapping_init(struct bans *b, const struct cfg_flapping *cfg, int nworkers)
{
	b->flap = *cfg;
	if (b->flap.max_count == 0)
		b->flap.max_count = 1;
	if (b->flap.window_time_ms == 0)
		b->flap.window_time_ms = 1;
	b->nworkers = nworkers > 0 ? nworkers : 0;
	if (b->nworkers) {
		b->flaps = xcalloc((size_t)b->nworkers, sizeof *b->flaps);
		for (int i = 0; i < b->nworkers; i++)
			hmap_init(&b->flaps[i].map);
	}
}

static void flap_free_chain(struct hmap_node *n)
{
	while (n) {
		struct hmap_node *next = n->next;
		free(container_of(n, struct flap_ent, node));
		n = next;
	}
}

void flapping_free(struct bans *b)
{
	for (int i = 0; i < b->nworkers; i++)
		flap_free_chain(hmap_steal(&b->flaps[i].map));
	free(b->flaps);
	b->flaps = NULL;
	b->nworkers = 0;
}

static bool window_over(const struct bans *b, const struct flap_ent *e, uint64_t now_ms)
{
	return now_ms - e->start_ms > b->flap.window_time_ms;
}

/* Drop entries whose window is over, at most once per window (at least once a second). */
static void gc(struct bans *b, struct flap_table *t, uint64_t now_ms)
{
	if (now_ms < t->next_gc_ms)
		return;
	uint64_t w = b->flap.window_time_ms < 1000 ? 1000 : b->flap.window_time_ms;
	t->next_gc_ms = now_ms + w < now_ms ? UINT64_MAX : now_ms + w;
	struct hmap_node *keep = NULL, *drop = NULL;
	for (struct hmap_node *it = hmap_steal(&t->map), *next; it; it = next) {
		next = it->next;
		if (window_over(b, container_of(it, struct flap_ent, node), now_ms)) {
			it->next = drop;
			drop = it;
		} else {
			it->next = keep;
			keep = it;
		}
	}
	for (struct hmap_node *it = keep, *next; it; it = next) {
		next = it->next;
		hmap_insert(&t->map, it, it->hash);
	}
	flap_free_chain(drop);
}

bool flapping_count(struct bans *b, int worker, const char *cid, uint64_t now_ms, uint32_t *count)
{
	if (!b->flap.enable || worker < 0 || worker >= b->nworkers)
		return false;
	struct flap_table *t = &b->flaps[worker];
	gc(b, t, now_ms);
	size_t len = strlen(cid);
	uint64_t h = hash_bytes(cid, len);
	struct flap_ent *e = NULL;
	hmap_for_hash(&t->map, h, it) {
		struct flap_ent *x = container_of(it, struct flap_ent, node);
		if (x->len == len && memcmp(x->id, cid, len) == 0) {
			e = x;
			break;
		}
	}
	if (!e) {
		e = xmalloc(sizeof *e + len + 1);
		memcpy(e->id, cid, len + 1);
		e->len = len;
		e->start_ms = now_ms;
		e->count = 0;
		hmap_insert(&t->map, &e->node, h);
	} else if (window_over(b, e, now_ms)) {
		e->start_ms = now_ms;
		e->count = 0;
	}
	e->count++;
	*count = e->count;
	if (e->count <= b->flap.max_count)
		return false;
	/* Flapping: the ban takes over; counting starts again when it ends. */
	hmap_remove(&t->map, &e->node);
	free(e);
	return true;
}
