/* Retained messages: one per topic, in a topic tree keyed by topic name, guarded by a
 * mutex. Setting an empty payload clears the topic. Expired messages are dropped when
 * met. Changes are persisted by retain_put when given the store.
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
/* Store m (taking a new reference) as the retained message of its topic, or clear the
 * topic when m has an empty payload. Returns true when something changed. With st, the
 * change is queued to the store under the same lock (so the store sees concurrent puts
 * to one topic in the order memory does) and before the replaced message is released. */
bool retain_put(struct retain_store *rs, struct msg *m, struct store *st);
/* Collect (referenced) retained messages matching filter into *out (xrealloc'd array);
 * returns the count. Caller unrefs each and frees the array. */
size_t retain_match(struct retain_store *rs, const char *filter, size_t flen, int64_t now_s, struct msg ***out);
size_t retain_count(struct retain_store *rs);

#endif
