/* Intrusive circular doubly linked list. Embed a struct list in the element and
 * recover the element with container_of. An empty list points to itself. */
#ifndef BW_LIST_H
#define BW_LIST_H

#include <stdbool.h>
#include <stddef.h>

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

struct list {
	struct list *prev, *next;
};

#define LIST_INIT(name) { &(name), &(name) }

static inline void list_init(struct list *l)
{
	l->prev = l->next = l;
}

static inline bool list_empty(const struct list *l)
{
	return l->next == l;
}

/* True when the node is linked into some list (requires list_init/list_del_init use). */
static inline bool list_linked(const struct list *n)
{
	return n->next != n && n->next != NULL;
}

static inline void list_insert_between(struct list *n, struct list *prev, struct list *next)
{
	n->prev = prev;
	n->next = next;
	prev->next = n;
	next->prev = n;
}

static inline void list_push_back(struct list *l, struct list *n)
{
	list_insert_between(n, l->prev, l);
}

static inline void list_push_front(struct list *l, struct list *n)
{
	list_insert_between(n, l, l->next);
}

/* Unlink n and leave it self-linked, so list_linked() is false and a second del is harmless. */
static inline void list_del_init(struct list *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = n->next = n;
}

/* Move every element of src to the end of dst; src becomes empty. */
static inline void list_splice_back(struct list *dst, struct list *src)
{
	if (list_empty(src))
		return;
	struct list *first = src->next, *last = src->prev;
	first->prev = dst->prev;
	dst->prev->next = first;
	last->next = dst;
	dst->prev = last;
	list_init(src);
}

#define list_first(l, type, member) container_of((l)->next, type, member)
#define list_for_each(pos, l) for (struct list *pos = (l)->next; pos != (l); pos = pos->next)
#define list_for_each_safe(pos, l) \
	for (struct list *pos = (l)->next, *pos##_next = pos->next; pos != (l); pos = pos##_next, pos##_next = pos->next)

#endif
