/* An application message: one immutable, reference-counted allocation shared by every
 * delivery of it, on every worker thread. Topic, forwardable v5 properties and payload
 * live inline after the header.
 *
 * "Forwardable properties" are the encoded MQTT 5 property entries that travel with
 * the message unchanged from publisher to subscriber: payload format indicator,
 * content type, response topic, correlation data and user properties, in wire format
 * (id byte + value), back to back. Message expiry is kept as an absolute time instead,
 * because the remaining interval is what gets forwarded.
 */
#ifndef BW_MSG_H
#define BW_MSG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mqtt_props;

struct msg {
	atomic_uint refs;
	uint8_t qos;             /* QoS as published */
	bool retain;             /* RETAIN flag as published */
	uint16_t topic_len;
	uint32_t props_len;      /* forwardable property bytes */
	uint32_t payload_len;
	int64_t expiry_at;       /* wall-clock seconds when it expires; 0 = never */
	uint64_t publisher;      /* publishing session id (no-local), 0 = none */
	_Atomic uint64_t store_id; /* row id once persisted, 0 = not stored */
	char data[];             /* topic, props, payload */
};

static inline const char *msg_topic(const struct msg *m)
{
	return m->data;
}

static inline const uint8_t *msg_props(const struct msg *m)
{
	return (const uint8_t *)m->data + m->topic_len;
}

static inline const uint8_t *msg_payload(const struct msg *m)
{
	return (const uint8_t *)m->data + m->topic_len + m->props_len;
}

/* Allocate a message with refs = 1. With props NULL, props_len bytes are left for the
 * caller to fill (msg_props_forward straight into place). */
struct msg *msg_new(const char *topic, size_t topic_len, const uint8_t *props, size_t props_len,
		    const uint8_t *payload, size_t payload_len, uint8_t qos, bool retain);
/* Build the forwardable property bytes from decoded PUBLISH/will properties into out
 * (which must have room for msg_props_forward_size bytes). Returns bytes written. */
size_t msg_props_forward(const struct mqtt_props *p, uint8_t *out);
/* Size msg_props_forward would write. */
size_t msg_props_forward_size(const struct mqtt_props *p);

static inline struct msg *msg_ref(struct msg *m)
{
	atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
	return m;
}

void msg_unref(struct msg *m);

/* Called by msg_unref (on whichever thread drops the last reference) with the row id of
 * a stored message nothing refers to any more: no delivery, no retained entry, so its row
 * can go. The broker sets it to queue the deletion while it runs and clears it (NULL)
 * before freeing sessions at shutdown, whose stored rows must stay. */
void msg_set_release_hook(void (*fn)(void *arg, uint64_t store_id), void *arg);

/* True when the message has expired at wall time now_s. expiry_at is whole seconds
 * (publication second + interval), so the interval has surely passed only once the clock
 * is past it: a message never dies early, at most a second late. */
static inline bool msg_expired(const struct msg *m, int64_t now_s)
{
	return m->expiry_at && now_s > m->expiry_at;
}

#endif
