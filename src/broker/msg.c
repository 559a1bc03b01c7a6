#include "broker/msg.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "mqtt/mqtt.h"

struct msg *msg_new(const char *topic, size_t topic_len, const uint8_t *props, size_t props_len,
		    const uint8_t *payload, size_t payload_len, uint8_t qos, bool retain)
{
	struct msg *m = xmalloc(sizeof *m + topic_len + props_len + payload_len);
	atomic_init(&m->refs, 1);
	m->qos = qos;
	m->retain = retain;
	m->topic_len = (uint16_t)topic_len;
	m->props_len = (uint32_t)props_len;
	m->payload_len = (uint32_t)payload_len;
	m->expiry_at = 0;
	m->publisher = 0;
	atomic_init(&m->store_id, 0);
	memcpy(m->data, topic, topic_len);
	if (props_len && props)
		memcpy(m->data + topic_len, props, props_len);
	if (payload_len)
		memcpy(m->data + topic_len + props_len, payload, payload_len);
	return m;
}

static void (*_Atomic release_hook)(void *arg, uint64_t store_id);
static void *_Atomic release_arg;

void msg_set_release_hook(void (*fn)(void *arg, uint64_t store_id), void *arg)
{
	if (fn) {
		atomic_store_explicit(&release_arg, arg, memory_order_relaxed);
		atomic_store_explicit(&release_hook, fn, memory_order_release);
	} else {
		atomic_store_explicit(&release_hook, NULL, memory_order_release);
	}
}

void msg_unref(struct msg *m)
{
	if (!m || atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) != 1)
		return;
	uint64_t id = atomic_load_explicit(&m->store_id, memory_order_relaxed);
	if (id) {
		void (*fn)(void *, uint64_t) = atomic_load_explicit(&release_hook, memory_order_acquire);
		if (fn)
			fn(atomic_load_explicit(&release_arg, memory_order_relaxed), id);
	}
	free(m);
}

static uint8_t *put_str(uint8_t *p, uint8_t id, struct mqtt_str s)
{
	*p++ = id;
	*p++ = (uint8_t)(s.len >> 8);
	*p++ = (uint8_t)s.len;
	if (s.len)
		memcpy(p, s.p, s.len);
	return p + s.len;
}

size_t msg_props_forward_size(const struct mqtt_props *p)
{
	size_t n = 0;
	if (p->present & MQTT_P_PAYLOAD_FORMAT)
		n += 2;
	if (p->present & MQTT_P_CONTENT_TYPE)
		n += 3 + p->content_type.len;
	if (p->present & MQTT_P_RESPONSE_TOPIC)
		n += 3 + p->response_topic.len;
	if (p->present & MQTT_P_CORRELATION_DATA)
		n += 3 + p->correlation_data.len;
	n += p->user_props_bytes;
	return n;
}

size_t msg_props_forward(const struct mqtt_props *p, uint8_t *out)
{
	uint8_t *o = out;
	if (p->present & MQTT_P_PAYLOAD_FORMAT) {
		*o++ = MQTT_PROP_PAYLOAD_FORMAT;
		*o++ = p->payload_format;
	}
	if (p->present & MQTT_P_CONTENT_TYPE)
		o = put_str(o, MQTT_PROP_CONTENT_TYPE, p->content_type);
	if (p->present & MQTT_P_RESPONSE_TOPIC)
		o = put_str(o, MQTT_PROP_RESPONSE_TOPIC, p->response_topic);
	if (p->present & MQTT_P_CORRELATION_DATA)
		o = put_str(o, MQTT_PROP_CORRELATION_DATA, p->correlation_data);
	if (p->user_props_bytes == p->user_props.len) {
		if (p->user_props.len)
			memcpy(o, p->user_props.p, p->user_props.len);
		o += p->user_props.len;
	} else {
		/* Other properties sit between the user properties: copy the 0x26 entries only. */
		size_t off = 0;
		struct mqtt_str k, v;
		while (mqtt_user_props_next(p->user_props, &off, &k, &v)) {
			*o++ = MQTT_PROP_USER_PROPERTY;
			*o++ = (uint8_t)(k.len >> 8);
			*o++ = (uint8_t)k.len;
			memcpy(o, k.p, k.len);
			o += k.len;
			*o++ = (uint8_t)(v.len >> 8);
			*o++ = (uint8_t)v.len;
			memcpy(o, v.p, v.len);
			o += v.len;
		}
	}
	return (size_t)(o - out);
}
