/* Topic names, filters and the topic tree. The contract is in topic.h.
 *
 * The tree
 * --------
 * One node per level; the root stands for "no level yet", so the key "a/b" is the node
 * root -> "a" -> "b" and the key "" is the root's child with an empty level.
 *
 * Children: up to SMALL_MAX children are kept in a singly linked list threaded through
 * the children's own hmap_node link (no extra storage: the link a child needs anyway for
 * its parent's hash table doubles as the list link). Comparing a candidate's level means
 * reading the child itself, with a list as with an array of child pointers, so the list
 * costs the same cache misses as an inline array and adds no bytes to any node. Adding a child
 * beyond SMALL_MAX moves the children into a struct hmap keyed by SipHash of the level
 * (core/hash.h: keys come from clients); a hashed node goes back to a list when it
 * drops to SMALL_MIN children, and its table is rebuilt smaller when it becomes sparse
 * (so walking the children stays proportional to their number).
 *
 * Keys: a node that was ever given a value slot (topic_tree_slot with create) stores
 * the whole key, and its level is the key's suffix; other nodes store only their level.
 * Callbacks receive the stored key directly: no reconstruction, no buffer, and a
 * callback may safely query another tree. An interior node that later becomes a key
 * ("a" inserted after "a/b") is reallocated once with the full key (re-pointing its
 * children at the new node).
 *
 * Memory per node: sizeof(struct node) == 48 bytes (checked below) plus the text (the
 * level, or the full key for key nodes), plus malloc's overhead (glibc: 8 bytes, size
 * rounded up to 16). A node with more than SMALL_MAX children also owns a struct hmap
 * (24 bytes) and 8-16 bytes of bucket array per child. Example: 100k filters
 * "devices/<12-char id>/status" cost about 64 (id node) + 96 (leaf with its 28-byte
 * key) + 8-16 (bucket) = ~170 bytes each, the values not included (measured: 176).
 * Flags on each node say whether it has a '+' or '#' child, so matching a name looks
 * those up only where they exist.
 *
 * Walks need no stack: every node points to its parent, and the next sibling of a child
 * is found from the child itself (next in the list, or next in its bucket chain, or the
 * first node of a later bucket). So matching neither recurses nor allocates, whatever
 * the depth of the keys (a 65535-byte key can have 65536 levels).
 *
 * Callbacks must not modify the tree they are called from (no slot creation, no prune).
 */
#include "broker/topic.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/hash.h"
#include "core/hmap.h"
#include "core/list.h"

#define SMALL_MAX 8 /* children kept in a list up to this many */
#define SMALL_MIN 4 /* a hashed node goes back to a list at this many */

enum {
	NODE_HASHED = 1 << 0,   /* children in kids.map, else in kids.list */
	NODE_FULLKEY = 1 << 1,  /* text holds the whole key: the node is (or was) a key */
	NODE_HAS_PLUS = 1 << 2, /* has a child "+" */
	NODE_HAS_HASH = 1 << 3, /* has a child "#" */
};

struct node {
	struct hmap_node link; /* in the parent's hmap, or next sibling in the parent's list */
	struct node *parent;   /* NULL for the root */
	void *value;
	union {
		struct hmap_node *list; /* first child; siblings chained through link.next */
		struct hmap *map;       /* NODE_HASHED */
	} kids;
	uint16_t text_len;  /* bytes in text */
	uint16_t level_len; /* this node's level is the last level_len bytes of text */
	uint8_t nsmall;     /* children in kids.list (0 when hashed) */
	uint8_t flags;
	char text[]; /* the level, or the whole key with NODE_FULLKEY; not NUL-terminated */
};
_Static_assert(sizeof(struct node) == 48, "keep struct node at 48 bytes");

struct topic_tree {
	struct node *root;
};

/* ---- names and filters ---- */

static size_t level_end(const char *s, size_t len, size_t pos)
{
	const char *slash = memchr(s + pos, '/', len - pos);
	return slash ? (size_t)(slash - s) : len;
}

/* Start of the level that ends at end (end is the index of its '/' or the length). */
static size_t level_start(const char *s, size_t end)
{
	const char *slash = end ? memrchr(s, '/', end) : NULL;
	return slash ? (size_t)(slash - s) + 1 : 0;
}

static bool is_wild(const char *lvl, size_t len, char w)
{
	return len == 1 && lvl[0] == w;
}

bool topic_name_valid(const char *t, size_t len)
{
	if (len < 1 || len > TOPIC_MAX_LEN)
		return false;
	return !memchr(t, '+', len) && !memchr(t, '#', len);
}

bool topic_filter_valid(const char *f, size_t len)
{
	if (len < 1 || len > TOPIC_MAX_LEN)
		return false;
	for (size_t pos = 0;;) {
		size_t end = level_end(f, len, pos);
		const char *lvl = f + pos;
		size_t n = end - pos;
		if (!is_wild(lvl, n, '+') && memchr(lvl, '+', n))
			return false;
		if (memchr(lvl, '#', n) && !(is_wild(lvl, n, '#') && end == len))
			return false;
		if (end == len)
			return true;
		pos = end + 1;
	}
}

bool topic_filter_has_wildcard(const char *f, size_t len)
{
	return memchr(f, '+', len) || memchr(f, '#', len);
}

bool topic_match(const char *f, size_t flen, const char *t, size_t tlen)
{
	if (tlen > 0 && t[0] == '$' && flen > 0 && (f[0] == '+' || f[0] == '#'))
		return false;
	size_t i = 0, j = 0;
	for (;;) {
		size_t fe = level_end(f, flen, i), te = level_end(t, tlen, j);
		if (is_wild(f + i, fe - i, '#'))
			return true;
		if (!is_wild(f + i, fe - i, '+') && (fe - i != te - j || memcmp(f + i, t + j, fe - i) != 0))
			return false;
		bool fdone = fe == flen, tdone = te == tlen;
		if (fdone || tdone) {
			if (fdone && tdone)
				return true;
			/* The name ran out first: "a/#" still matches "a" (its parent level). */
			return tdone && flen - fe == 2 && f[fe + 1] == '#';
		}
		i = fe + 1;
		j = te + 1;
	}
}

int topic_parse_share(const char *f, size_t len, struct topic_share *share)
{
	static const char prefix[] = "$share/";
	size_t plen = sizeof prefix - 1;
	if (len < plen || memcmp(f, prefix, plen) != 0)
		return 0;
	const char *group = f + plen;
	const char *slash = memchr(group, '/', len - plen);
	if (!slash)
		return -1; /* "$share/g": no filter */
	size_t glen = (size_t)(slash - group);
	if (glen == 0 || memchr(group, '+', glen) || memchr(group, '#', glen))
		return -1;
	const char *filter = slash + 1;
	size_t flen = len - plen - glen - 1;
	if (!topic_filter_valid(filter, flen))
		return -1;
	share->group = group;
	share->group_len = glen;
	share->filter = filter;
	share->filter_len = flen;
	return 1;
}

/* ---- nodes ---- */

static struct node *node_of(struct hmap_node *h)
{
	return h ? container_of(h, struct node, link) : NULL;
}

static const char *node_level(const struct node *n)
{
	return n->text + n->text_len - n->level_len;
}

static bool level_eq(const struct node *n, const char *lvl, size_t len)
{
	return n->level_len == len && memcmp(node_level(n), lvl, len) == 0;
}

static bool node_is(const struct node *n, char w)
{
	return n->level_len == 1 && node_level(n)[0] == w;
}

static bool node_is_dollar(const struct node *n)
{
	return n->level_len > 0 && node_level(n)[0] == '$';
}

static bool has_kids(const struct node *n)
{
	return (n->flags & NODE_HASHED) ? n->kids.map->count > 0 : n->kids.list != NULL;
}

static struct node *new_node(const char *text, size_t text_len, size_t level_len, uint8_t flags)
{
	struct node *n = xmalloc(offsetof(struct node, text) + text_len);
	n->link.next = NULL;
	n->link.hash = 0;
	n->parent = NULL;
	n->value = NULL;
	n->kids.list = NULL;
	n->text_len = (uint16_t)text_len;
	n->level_len = (uint16_t)level_len;
	n->nsmall = 0;
	n->flags = flags;
	if (text_len)
		memcpy(n->text, text, text_len);
	return n;
}

static uint64_t level_hash(const struct node *c)
{
	return hash_bytes(node_level(c), c->level_len);
}

static struct node *find_child(const struct node *n, const char *lvl, size_t len)
{
	if (n->flags & NODE_HASHED) {
		uint64_t h = hash_bytes(lvl, len);
		hmap_for_hash(n->kids.map, h, it) {
			struct node *c = node_of(it);
			if (level_eq(c, lvl, len))
				return c;
		}
		return NULL;
	}
	for (struct hmap_node *it = n->kids.list; it; it = it->next) {
		struct node *c = node_of(it);
		if (level_eq(c, lvl, len))
			return c;
	}
	return NULL;
}

static struct node *plus_child(const struct node *n)
{
	return (n->flags & NODE_HAS_PLUS) ? find_child(n, "+", 1) : NULL;
}

static struct node *hash_child(const struct node *n)
{
	return (n->flags & NODE_HAS_HASH) ? find_child(n, "#", 1) : NULL;
}

/* First node in bucket b or a later one. */
static struct node *bucket_scan(const struct hmap *m, size_t b)
{
	if (!m->buckets)
		return NULL;
	for (; b <= m->mask; b++)
		if (m->buckets[b])
			return node_of(m->buckets[b]);
	return NULL;
}

static struct node *first_child(const struct node *n)
{
	if (n->flags & NODE_HASHED)
		return bucket_scan(n->kids.map, 0);
	return node_of(n->kids.list);
}

/* The child after c in its parent's iteration order, or NULL. */
static struct node *next_sibling(const struct node *c)
{
	if (c->link.next)
		return node_of(c->link.next);
	const struct node *p = c->parent;
	if (!(p->flags & NODE_HASHED))
		return NULL;
	return bucket_scan(p->kids.map, (c->link.hash & p->kids.map->mask) + 1);
}

/* c or the first sibling after it that is not skipped by the '$' rule. */
static struct node *skip_dollar(struct node *c, bool skip)
{
	while (c && skip && node_is_dollar(c))
		c = next_sibling(c);
	return c;
}

static void to_hashed(struct node *p)
{
	struct hmap *m = xmalloc(sizeof *m);
	hmap_init(m);
	struct hmap_node *it = p->kids.list;
	while (it) {
		struct hmap_node *next = it->next;
		hmap_insert(m, it, level_hash(node_of(it)));
		it = next;
	}
	p->kids.map = m;
	p->nsmall = 0;
	p->flags |= NODE_HASHED;
}

/* Move every child of p from its hmap into a fresh list or a fresh (smaller) hmap. */
static void rehome_kids(struct node *p, bool to_list)
{
	struct hmap *old = p->kids.map;
	struct hmap *m = NULL;
	struct hmap_node *list = NULL;
	size_t n = 0;
	if (!to_list) {
		m = xmalloc(sizeof *m);
		hmap_init(m);
	}
	for (size_t b = 0; old->buckets && b <= old->mask; b++) {
		struct hmap_node *it = old->buckets[b];
		while (it) {
			struct hmap_node *next = it->next;
			if (to_list) {
				it->next = list;
				list = it;
				n++;
			} else {
				hmap_insert(m, it, it->hash);
			}
			it = next;
		}
	}
	hmap_destroy(old);
	free(old);
	if (to_list) {
		p->kids.list = list;
		p->nsmall = (uint8_t)n;
		p->flags &= (uint8_t)~NODE_HASHED;
	} else {
		p->kids.map = m;
	}
}

static void add_child(struct node *p, struct node *c)
{
	c->parent = p;
	if (node_is(c, '+'))
		p->flags |= NODE_HAS_PLUS;
	else if (node_is(c, '#'))
		p->flags |= NODE_HAS_HASH;
	if (!(p->flags & NODE_HASHED) && p->nsmall == SMALL_MAX)
		to_hashed(p);
	if (p->flags & NODE_HASHED) {
		hmap_insert(p->kids.map, &c->link, level_hash(c));
		return;
	}
	c->link.next = p->kids.list;
	p->kids.list = &c->link;
	p->nsmall++;
}

static void remove_child(struct node *p, struct node *c)
{
	if (node_is(c, '+'))
		p->flags &= (uint8_t)~NODE_HAS_PLUS;
	else if (node_is(c, '#'))
		p->flags &= (uint8_t)~NODE_HAS_HASH;
	if (p->flags & NODE_HASHED) {
		struct hmap *m = p->kids.map;
		hmap_remove(m, &c->link);
		if (m->count <= SMALL_MIN)
			rehome_kids(p, true);
		else if (m->mask + 1 > 64 && m->count * 16 < m->mask + 1)
			rehome_kids(p, false);
	} else {
		for (struct hmap_node **pp = &p->kids.list; *pp; pp = &(*pp)->next) {
			if (*pp == &c->link) {
				*pp = c->link.next;
				p->nsmall--;
				break;
			}
		}
	}
	c->link.next = NULL;
	c->parent = NULL;
}

/* Reallocate interior node n so it stores the whole key; returns the new node. */
static struct node *make_key_node(struct node *n, const char *key, size_t len)
{
	struct node *k = new_node(key, len, n->level_len, (uint8_t)(n->flags | NODE_FULLKEY));
	struct node *p = n->parent;
	k->parent = p;
	k->value = n->value;
	k->kids = n->kids;
	k->nsmall = n->nsmall;
	if (p->flags & NODE_HASHED) {
		uint64_t h = n->link.hash;
		hmap_remove(p->kids.map, &n->link);
		hmap_insert(p->kids.map, &k->link, h);
	} else {
		for (struct hmap_node **pp = &p->kids.list; *pp; pp = &(*pp)->next) {
			if (*pp == &n->link) {
				k->link.next = n->link.next;
				*pp = &k->link;
				break;
			}
		}
	}
	if (k->flags & NODE_HASHED) {
		hmap_for_each(k->kids.map, it)
			node_of(it)->parent = k;
	} else {
		for (struct hmap_node *it = k->kids.list; it; it = it->next)
			node_of(it)->parent = k;
	}
	free(n);
	return k;
}

static void free_node(struct node *n, void (*free_value)(void *value))
{
	if (free_value && n->value)
		free_value(n->value);
	if (n->flags & NODE_HASHED) {
		hmap_destroy(n->kids.map);
		free(n->kids.map);
	}
	free(n);
}

/* ---- the tree ---- */

struct topic_tree *topic_tree_new(void)
{
	struct topic_tree *t = xmalloc(sizeof *t);
	t->root = new_node(NULL, 0, 0, 0);
	return t;
}

void topic_tree_free(struct topic_tree *t, void (*free_value)(void *value))
{
	if (!t)
		return;
	/* Post-order without a stack: free a node once all its children are gone. The next
	 * sibling is read before a node is freed; siblings are freed in iteration order, so
	 * the rest of the parent's list or buckets is still intact. */
	struct node *root = t->root, *n = root;
	for (struct node *c; (c = first_child(n));)
		n = c;
	while (n != root) {
		struct node *p = n->parent, *s = next_sibling(n);
		free_node(n, free_value);
		if (s) {
			n = s;
			for (struct node *c; (c = first_child(n));)
				n = c;
		} else {
			n = p;
		}
	}
	free_node(root, free_value);
	free(t);
}

/* The node for key (a key node or an interior one), or NULL. */
static struct node *lookup(const struct topic_tree *t, const char *key, size_t len)
{
	if (len > TOPIC_MAX_LEN)
		return NULL;
	struct node *n = t->root;
	for (size_t pos = 0;;) {
		size_t end = level_end(key, len, pos);
		n = find_child(n, key + pos, end - pos);
		if (!n || end == len)
			return n;
		pos = end + 1;
	}
}

void **topic_tree_slot(struct topic_tree *t, const char *key, size_t len, bool create)
{
	if (len > TOPIC_MAX_LEN)
		return NULL;
	struct node *n = t->root;
	for (size_t pos = 0;;) {
		size_t end = level_end(key, len, pos);
		bool last = end == len;
		struct node *c = find_child(n, key + pos, end - pos);
		if (!c) {
			if (!create)
				return NULL;
			if (last)
				c = new_node(key, len, end - pos, NODE_FULLKEY);
			else
				c = new_node(key + pos, end - pos, end - pos, 0);
			add_child(n, c);
		}
		n = c;
		if (last)
			break;
		pos = end + 1;
	}
	if (!(n->flags & NODE_FULLKEY)) {
		/* An interior node: it is not a key yet. */
		if (!create)
			return NULL;
		n = make_key_node(n, key, len);
	}
	return &n->value;
}

void *topic_tree_get(const struct topic_tree *t, const char *key, size_t len)
{
	struct node *n = lookup(t, key, len);
	return n ? n->value : NULL;
}

void topic_tree_prune(struct topic_tree *t, const char *key, size_t len)
{
	struct node *n = lookup(t, key, len);
	while (n && n != t->root && !n->value && !has_kids(n)) {
		struct node *p = n->parent;
		remove_child(p, n);
		free_node(n, NULL);
		n = p;
	}
}

static bool visit(const struct node *n, topic_visit_fn fn, void *arg)
{
	return fn(arg, n->text, n->text_len, n->value);
}

/* The node after n in a pre-order walk of top's descendants (top excluded), or NULL.
 * With skip_top_dollar, top's children whose level starts with '$' are left out. */
static struct node *walk_next(const struct node *top, struct node *n, bool skip_top_dollar)
{
	struct node *c = first_child(n);
	if (n == top)
		return skip_dollar(c, skip_top_dollar);
	if (c)
		return c;
	for (; n != top; n = n->parent) {
		struct node *s = next_sibling(n);
		if (n->parent == top)
			s = skip_dollar(s, skip_top_dollar);
		if (s)
			return s;
	}
	return NULL;
}

/* Visit the values of every descendant of top. */
static bool visit_below(struct node *top, bool skip_top_dollar, topic_visit_fn fn, void *arg)
{
	for (struct node *n = walk_next(top, top, skip_top_dollar); n; n = walk_next(top, n, skip_top_dollar))
		if (n->value && !visit(n, fn, arg))
			return false;
	return true;
}

static bool count_one(void *arg, const char *key, size_t key_len, void *value)
{
	(*(size_t *)arg)++;
	return true;
}

size_t topic_tree_count(const struct topic_tree *t)
{
	size_t n = 0;
	visit_below(t->root, false, count_one, &n);
	return n;
}

bool topic_tree_walk(const struct topic_tree *t, topic_visit_fn fn, void *arg)
{
	return visit_below(t->root, false, fn, arg);
}

/* Matching walks the tree depth first with (n, pos): n has matched the query's levels
 * before pos, and pos is where the next query level starts (len + 1 once the query is
 * used up). When n's subtree is done, a backtrack step climbs to the next alternative,
 * recovering each ancestor's pos by scanning back to the previous '/'. */

/* match_name: n's subtree is done. Alternatives left: the '+' sibling of an exact match. */
static bool name_backtrack(const struct node *root, const char *name, bool dollar, struct node **np,
			   size_t *posp)
{
	struct node *n = *np;
	size_t pos = *posp;
	while (n != root) {
		struct node *p = n->parent;
		if (!node_is(n, '+') && !(p == root && dollar)) {
			struct node *plus = plus_child(p);
			if (plus) {
				*np = plus; /* consumes the same level: pos stays */
				*posp = pos;
				return true;
			}
		}
		pos = level_start(name, pos - 1);
		n = p;
	}
	return false;
}

bool topic_tree_match_name(const struct topic_tree *t, const char *name, size_t len, topic_visit_fn fn,
			   void *arg)
{
	struct node *root = t->root, *n = root;
	bool dollar = len > 0 && name[0] == '$'; /* no wildcard matches a first level "$..." */
	size_t pos = 0;
	for (;;) {
		if (pos > len) {
			/* Name used up: n itself, and "n/#" (which matches its parent level). */
			struct node *h = hash_child(n);
			if (n->value && !visit(n, fn, arg))
				return false;
			if (h && h->value && !visit(h, fn, arg))
				return false;
		} else {
			bool wild = !(n == root && dollar);
			size_t end = level_end(name, len, pos);
			struct node *h = wild ? hash_child(n) : NULL;
			if (h && h->value && !visit(h, fn, arg))
				return false;
			struct node *next = find_child(n, name + pos, end - pos);
			if (!next && wild)
				next = plus_child(n);
			if (next) {
				n = next;
				pos = end + 1;
				continue;
			}
		}
		if (!name_backtrack(root, name, dollar, &n, &pos))
			return true;
	}
}

/* match_filter: n's subtree is done. Alternatives left: the next sibling under a '+'. */
static bool filter_backtrack(const struct node *root, const char *f, struct node **np, size_t *posp)
{
	struct node *n = *np;
	size_t pos = *posp;
	while (n != root) {
		struct node *p = n->parent;
		size_t start = level_start(f, pos - 1);
		if (is_wild(f + start, pos - 1 - start, '+')) {
			struct node *s = skip_dollar(next_sibling(n), p == root);
			if (s) {
				*np = s;
				*posp = pos;
				return true;
			}
		}
		pos = start;
		n = p;
	}
	return false;
}

bool topic_tree_match_filter(const struct topic_tree *t, const char *filter, size_t len, topic_visit_fn fn,
			     void *arg)
{
	struct node *root = t->root, *n = root;
	size_t pos = 0;
	for (;;) {
		struct node *next = NULL;
		size_t end = 0;
		if (pos > len) {
			if (n->value && !visit(n, fn, arg))
				return false;
		} else {
			end = level_end(filter, len, pos);
			const char *lvl = filter + pos;
			if (is_wild(lvl, end - pos, '#')) {
				/* The parent level (the root is not a key) and everything below. */
				if (n != root && n->value && !visit(n, fn, arg))
					return false;
				if (!visit_below(n, n == root, fn, arg))
					return false;
			} else if (is_wild(lvl, end - pos, '+')) {
				next = skip_dollar(first_child(n), n == root);
			} else {
				next = find_child(n, lvl, end - pos);
			}
		}
		if (next) {
			n = next;
			pos = end + 1;
			continue;
		}
		if (!filter_backtrack(root, filter, &n, &pos))
			return true;
	}
}
