/* The subscription index: which sessions want which topics.
 *
 * One table for the whole broker, a topic tree (topic.h) of filters guarded by a
 * read-write lock: PUBLISH takes the read lock only long enough to copy the matching
 * subscriptions into a per-thread hit list; SUBSCRIBE/UNSUBSCRIBE take the write lock.
 * Each filter node holds the ordinary subscriptions on it and its shared-subscription
 * groups ($share/<group>/<filter>); a group delivers each message to one member, round
 * robin, preferring members whose session is connected.
 */
#ifndef BW_ROUTE_H
#define BW_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct route_table;

/* One subscription matched by a topic. */
struct route_hit {
	uint64_t sess_id;
	uint32_t sub_id;   /* v5 subscription identifier, 0 = none */
	uint16_t worker;
	uint8_t options;   /* SUBSCRIBE options byte (QoS, no-local, retain-as-published, retain handling) */
	bool shared;
};

struct route_hits {
	struct route_hit *v;
	size_t n, cap;
};

struct route_table *route_new(void);
void route_free(struct route_table *rt);

/* Add or update a subscription. `filter` is the topic filter proper (for a shared
 * subscription, the part after $share/<group>/); group is NULL for ordinary ones.
 * Returns true when the subscription did not exist before (retain handling 1). */
bool route_subscribe(struct route_table *rt, const char *filter, size_t flen, const char *group, size_t glen,
		     uint64_t sess_id, uint16_t worker, uint8_t options, uint32_t sub_id, bool online);
/* Remove a subscription; returns false when it did not exist. */
bool route_unsubscribe(struct route_table *rt, const char *filter, size_t flen, const char *group, size_t glen,
		       uint64_t sess_id);
/* Mark a session's membership in a shared group connected or not (for member choice). */
void route_set_online(struct route_table *rt, const char *filter, size_t flen, const char *group, size_t glen,
		      uint64_t sess_id, bool online);
/* Collect every subscription matching topic into hits (cleared first): all ordinary
 * subscriptions, and one chosen member per shared group. */
void route_match(struct route_table *rt, const char *topic, size_t tlen, struct route_hits *hits);
/* Number of filters with at least one subscription. */
size_t route_count(struct route_table *rt);
void route_hits_free(struct route_hits *h);

#endif
