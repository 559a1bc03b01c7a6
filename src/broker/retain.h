/* Retained messages: one per topic, in a topic tree keyed by topic name, guarded by a
 * mutex. Setting an empty payload clears the topic. Expired messages are dropped when
 * met. Once retain_persist_to names the store, every change is written there too.
 */
#ifndef BW_RETAIN_H
#define BW_RETAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct msg;
struct retain_store;
struct store;

struct retain_store *retain_new(void);
void retain_free(struct retain_store *rs);
/* From now on persist changes to st (set after the retained messages were loaded from it). */
void retain_persist_to(struct retain_store *rs, struct store *st);
/* Store m (taking a new reference) as the retained message of its topic, or clear the
 * topic when m has an empty payload. Returns true when something changed. The change is
 * queued to the store under the same lock (so the store sees concurrent puts to one topic
 * in the order memory does) and before the replaced message is released. */
bool retain_put(struct retain_store *rs, struct msg *m);
/* Collect (referenced) retained messages matching filter into *out (xrealloc'd array);
 * returns the count. Caller unrefs each and frees the array. Expired ones met on the way
 * are removed (from the store too). */
size_t retain_match(struct retain_store *rs, const char *filter, size_t flen, int64_t now_s, struct msg ***out);
size_t retain_count(struct retain_store *rs);

#endif
