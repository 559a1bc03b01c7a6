/* Intrusive chained hash map. Embed a struct hmap_node in the element; the caller
 * hashes its own key and compares keys while walking a bucket. Grows by doubling. */
#ifndef BW_HMAP_H
#define BW_HMAP_H

#include <stddef.h>
#include <stdint.h>

struct hmap_node {
	struct hmap_node *next;
	uint64_t hash;
};

struct hmap {
	struct hmap_node **buckets;
	size_t mask; /* nbuckets - 1, nbuckets a power of two; 0 when unallocated */
	size_t count;
};

void hmap_init(struct hmap *m);
/* Free the bucket array (not the elements). */
void hmap_destroy(struct hmap *m);
void hmap_insert(struct hmap *m, struct hmap_node *n, uint64_t hash);
void hmap_remove(struct hmap *m, struct hmap_node *n);
/* First node in the bucket for hash (compare n->hash and key yourself), or NULL. */
static inline struct hmap_node *hmap_bucket(const struct hmap *m, uint64_t hash)
{
	return m->buckets ? m->buckets[hash & m->mask] : NULL;
}

/* Empty the map and return all its nodes chained through ->next (so the caller can free
 * them while walking); the bucket array is freed. */
struct hmap_node *hmap_steal(struct hmap *m);

/* Iterate nodes whose hash equals h. */
#define hmap_for_hash(m, h, it) \
	for (struct hmap_node *it = hmap_bucket((m), (h)); it; it = it->next) if (it->hash == (h))

/* Visit every node; fn may not modify the map. */
#define hmap_for_each(m, it)                                                      \
	for (size_t it##_b = 0; (m)->buckets && it##_b <= (m)->mask; it##_b++)    \
		for (struct hmap_node *it = (m)->buckets[it##_b]; it; it = it->next)

#endif
