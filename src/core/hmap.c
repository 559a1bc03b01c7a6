#include "core/hmap.h"

#include <stdlib.h>

#include "core/alloc.h"

void hmap_init(struct hmap *m)
{
	m->buckets = NULL;
	m->mask = 0;
	m->count = 0;
}

void hmap_destroy(struct hmap *m)
{
	free(m->buckets);
	hmap_init(m);
}

static void grow(struct hmap *m)
{
	size_t n = m->buckets ? (m->mask + 1) * 2 : 4;
	struct hmap_node **nb = xcalloc(n, sizeof *nb);
	if (m->buckets) {
		for (size_t i = 0; i <= m->mask; i++) {
			struct hmap_node *it = m->buckets[i];
			while (it) {
				struct hmap_node *next = it->next;
				size_t b = it->hash & (n - 1);
				it->next = nb[b];
				nb[b] = it;
				it = next;
			}
		}
		free(m->buckets);
	}
	m->buckets = nb;
	m->mask = n - 1;
}

void hmap_insert(struct hmap *m, struct hmap_node *n, uint64_t hash)
{
	if (!m->buckets || m->count >= m->mask + 1)
		grow(m);
	n->hash = hash;
	struct hmap_node **b = &m->buckets[hash & m->mask];
	n->next = *b;
	*b = n;
	m->count++;
}

void hmap_remove(struct hmap *m, struct hmap_node *n)
{
	if (!m->buckets)
		return;
	for (struct hmap_node **pp = &m->buckets[n->hash & m->mask]; *pp; pp = &(*pp)->next) {
		if (*pp == n) {
			*pp = n->next;
			n->next = NULL;
			m->count--;
			return;
		}
	}
}

struct hmap_node *hmap_steal(struct hmap *m)
{
	struct hmap_node *all = NULL;
	for (size_t i = 0; m->buckets && i <= m->mask; i++) {
		struct hmap_node *it = m->buckets[i];
		while (it) {
			struct hmap_node *next = it->next;
			it->next = all;
			all = it;
			it = next;
		}
	}
	hmap_destroy(m);
	return all;
}
