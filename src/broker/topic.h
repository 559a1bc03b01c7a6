/* Topic names, topic filters and the topic tree.
 *
 * Pure code: no locking (callers serialise access to a tree), no I/O.
 *
 * A topic tree maps slash-separated keys to one opaque value per key. The same
 * structure serves two indexes:
 *   - the subscription index stores topic *filters* as keys ("a/+/c", "a/#") and is
 *     queried with a topic *name*: topic_tree_match_name() visits every stored filter
 *     that matches the name;
 *   - the retained index stores topic *names* as keys and is queried with a filter:
 *     topic_tree_match_filter() visits every stored name the filter matches.
 * Both follow MQTT's rules: '+' matches exactly one level (possibly empty), '#' matches
 * the parent level and any number of levels below it ("a/#" matches "a", "a/b", "a/b/c"),
 * and a filter whose first level is '+' or '#' does not match a name whose first level
 * starts with '$'.
 *
 * Keys are byte strings (not NUL-terminated); empty levels are legal ("a//b", "/a").
 * Child lookup is a hash table per node once a node has more than a few children, so
 * a node with 100k children ("devices/<id>/...") costs O(1) per level.
 */
#ifndef BW_TOPIC_H
#define BW_TOPIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* True for a valid PUBLISH topic name: 1..65535 bytes, no '+' or '#'. (UTF-8 validity
 * is the codec's job.) */
bool topic_name_valid(const char *t, size_t len);
/* True for a valid subscription filter: 1..65535 bytes; '+' only as a whole level;
 * '#' only as the whole last level. */
bool topic_filter_valid(const char *f, size_t len);
/* True when the filter contains '+' or '#'. */
bool topic_filter_has_wildcard(const char *f, size_t len);
/* True when filter f matches topic name t (both already valid). */
bool topic_match(const char *f, size_t flen, const char *t, size_t tlen);

/* A shared subscription "$share/<group>/<filter>". */
struct topic_share {
	const char *group;
	size_t group_len;
	const char *filter;
	size_t filter_len;
};
/* Classify a subscription filter:
 *   returns 0 for an ordinary filter (share untouched),
 *   returns 1 for a valid shared subscription and fills *share (views into f),
 *   returns -1 for an invalid "$share/..." (empty group, group containing '+' or '#',
 *   missing or invalid filter). "$share" alone or "$sharex/..." are ordinary filters. */
int topic_parse_share(const char *f, size_t len, struct topic_share *share);

struct topic_tree;

/* Create / destroy a tree. topic_tree_free calls free_value(value) on every stored
 * value when free_value is not NULL. */
struct topic_tree *topic_tree_new(void);
void topic_tree_free(struct topic_tree *t, void (*free_value)(void *value));

/* The value slot for key, created (holding NULL) when create is true and it does not
 * exist. Returns NULL when it does not exist and create is false. The pointer stays
 * valid until the key's node is removed by topic_tree_prune. */
void **topic_tree_slot(struct topic_tree *t, const char *key, size_t len, bool create);
/* Value stored for key, or NULL. */
void *topic_tree_get(const struct topic_tree *t, const char *key, size_t len);
/* After setting a key's value to NULL, call this to free the node and any ancestors
 * left with no value and no children. Harmless when the key does not exist or still
 * holds a value. */
void topic_tree_prune(struct topic_tree *t, const char *key, size_t len);
/* Number of keys holding a non-NULL value. */
size_t topic_tree_count(const struct topic_tree *t);

/* Callback for matches: the stored key (a transient view: copy it to keep it) and its
 * value. Return false to stop the walk early. */
typedef bool (*topic_visit_fn)(void *arg, const char *key, size_t key_len, void *value);

/* Visit every stored filter matching topic name `name`. Only non-NULL values are
 * visited. Returns false if a callback stopped the walk. */
bool topic_tree_match_name(const struct topic_tree *t, const char *name, size_t len, topic_visit_fn fn, void *arg);
/* Visit every stored name matched by `filter` (with the '$' rule). Only non-NULL values. */
bool topic_tree_match_filter(const struct topic_tree *t, const char *filter, size_t len, topic_visit_fn fn, void *arg);
/* Visit every stored key with a non-NULL value, in no particular order. */
bool topic_tree_walk(const struct topic_tree *t, topic_visit_fn fn, void *arg);

/* Added with the implementation (topic.c): the longest name, filter or tree key, the MQTT
 * limit for a UTF-8 string. A tree never stores a longer key: topic_tree_slot returns NULL
 * for one even when create is true, and topic_tree_get / topic_tree_prune find nothing. */
#define TOPIC_MAX_LEN 65535
/* Also from the implementation: a visit callback must not modify the tree it is called from
 * (no topic_tree_slot with create, no topic_tree_prune); reading it, and setting values through
 * topic_tree_slot with create false, is fine.
 * topic_tree_count walks the whole tree (O(nodes)): for statistics, not for hot paths.
 * The read-only calls (topic_tree_get, _count, _walk, _match_name, _match_filter, and
 * topic_tree_slot with create false) never write to the tree, so they may run concurrently
 * with each other under a reader lock. */

#endif
