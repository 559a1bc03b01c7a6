/* Encoders: each appends one complete packet to a struct buf.
 *
 * They write what the decoders accept: fixed-header flags as the spec fixes them, the
 * v5 short forms of acks, DISCONNECT and AUTH, and only the properties the §2.2.2.2
 * table allows in the packet (others set in `present` are skipped; Subscription
 * Identifiers are written for PUBLISH, at most one for SUBSCRIBE). The user_props view
 * is written verbatim, whatever it holds. A few MUSTs are
 * enforced rather than passed through: DUP is written only with QoS > 0, v3 option
 * bytes carry only the QoS bits and v5 ones never the reserved bits 6-7, Session
 * Present is cleared on a failed CONNACK, and the will QoS/retain bits only go out
 * with a will. Values themselves (a QoS of 3, a Topic Alias of 0, an invalid reason
 * code) are the caller's to get right.
 *
 * Sizes: strings and binary fields longer than 65535 bytes are clamped to 65535. A
 * packet whose Remaining Length would exceed 268435455 cannot be represented; callers
 * bound sizes first (mqtt_publish_size is there for PUBLISH).
 */
#include <stdlib.h>
#include <string.h>

#include "mqtt/internal.h"
#include "mqtt/mqtt.h"

/* Reserve the whole packet in b, write the fixed header, return where the body goes. */
static uint8_t *begin(struct buf *b, uint8_t byte0, size_t rem, size_t *total)
{
	*total = 1 + mqtt_varint_size((uint32_t)rem) + rem;
	uint8_t *p = buf_reserve(b, *total);
	*p++ = byte0;
	return mqtt_varint_put(p, (uint32_t)rem);
}

/* Commit the packet. A size computation that disagrees with what was written is a
 * bug in this file; stop rather than put a corrupt packet on the wire. */
static size_t commit(struct buf *b, const uint8_t *end, size_t total)
{
	if (end != b->data + b->len + total)
		abort();
	b->len += total;
	return total;
}

static uint8_t *put_bytes(uint8_t *p, const void *src, size_t n)
{
	if (n)
		memcpy(p, src, n);
	return p + n;
}

size_t mqtt_encode_connect(struct buf *b, const struct mqtt_connect *c)
{
	bool v5 = c->version == MQTT_V5;
	struct mqtt_str name = { (const uint8_t *)(c->version == MQTT_V31 ? "MQIsdp" : "MQTT"),
				 c->version == MQTT_V31 ? 6 : 4 };
	uint8_t cf = 0;
	if (c->clean_start)
		cf |= 0x02;
	if (c->will) {
		cf |= 0x04 | (uint8_t)((c->will_qos & 0x03) << 3);
		if (c->will_retain)
			cf |= 0x20;
	}
	if (c->has_password)
		cf |= 0x40;
	if (c->has_username)
		cf |= 0x80;

	size_t rem = str_size(name) + 1 + 1 + 2 + str_size(c->client_id);
	if (v5)
		rem += mqtt_props_size_ctx(&c->props, MQTT_PC_CONNECT);
	if (c->will) {
		if (v5)
			rem += mqtt_props_size_ctx(&c->will_props, MQTT_PC_WILL);
		rem += str_size(c->will_topic) + str_size(c->will_payload);
	}
	if (c->has_username)
		rem += str_size(c->username);
	if (c->has_password)
		rem += str_size(c->password);

	size_t total;
	uint8_t *p = begin(b, MQTT_CONNECT << 4, rem, &total);
	p = put_str(p, name);
	*p++ = c->version;
	*p++ = cf;
	p = put_u16(p, c->keepalive);
	if (v5)
		p = mqtt_props_put_ctx(p, &c->props, MQTT_PC_CONNECT);
	p = put_str(p, c->client_id);
	if (c->will) {
		if (v5)
			p = mqtt_props_put_ctx(p, &c->will_props, MQTT_PC_WILL);
		p = put_str(p, c->will_topic);
		p = put_str(p, c->will_payload);
	}
	if (c->has_username)
		p = put_str(p, c->username);
	if (c->has_password)
		p = put_str(p, c->password);
	return commit(b, p, total);
}

size_t mqtt_encode_connack(struct buf *b, uint8_t version, bool session_present, uint8_t rc,
			   const struct mqtt_props *props)
{
	bool failed = version == MQTT_V5 ? rc >= 0x80 : rc != 0;
	uint8_t af = (session_present && !failed && version != MQTT_V31) ? 0x01 : 0x00;
	size_t rem = 2;
	if (version == MQTT_V5)
		rem += mqtt_props_size_ctx(props, MQTT_PC_CONNACK);
	size_t total;
	uint8_t *p = begin(b, MQTT_CONNACK << 4, rem, &total);
	*p++ = af;
	*p++ = rc;
	if (version == MQTT_V5)
		p = mqtt_props_put_ctx(p, props, MQTT_PC_CONNACK);
	return commit(b, p, total);
}

static size_t publish_rem(uint8_t version, const struct mqtt_publish *m)
{
	size_t rem = str_size(m->topic) + (m->qos ? 2 : 0) + m->payload.len;
	if (version == MQTT_V5)
		rem += mqtt_props_size_ctx(&m->props, MQTT_PC_PUBLISH);
	return rem;
}

size_t mqtt_publish_size(uint8_t version, const struct mqtt_publish *p)
{
	size_t rem = publish_rem(version, p);
	return 1 + mqtt_varint_size((uint32_t)rem) + rem;
}

size_t mqtt_encode_publish(struct buf *b, uint8_t version, const struct mqtt_publish *m)
{
	uint8_t byte0 = (uint8_t)(MQTT_PUBLISH << 4 | (m->qos & 0x03) << 1);
	if (m->dup && m->qos)
		byte0 |= 0x08;
	if (m->retain)
		byte0 |= 0x01;
	size_t total;
	uint8_t *p = begin(b, byte0, publish_rem(version, m), &total);
	p = put_str(p, m->topic);
	if (m->qos)
		p = put_u16(p, m->packet_id);
	if (version == MQTT_V5)
		p = mqtt_props_put_ctx(p, &m->props, MQTT_PC_PUBLISH);
	p = put_bytes(p, m->payload.p, m->payload.len);
	return commit(b, p, total);
}

/* v5 reason code + properties tail shared by acks, DISCONNECT and AUTH: nothing when
 * rc is 0 and there are no properties, the reason code alone when there are none,
 * both otherwise. Returns its size; writes it when p is not NULL. */
static size_t rc_props_tail(uint8_t *p, uint8_t rc, const struct mqtt_props *props, unsigned ctx, uint8_t **end)
{
	size_t psz = mqtt_props_size_ctx(props, ctx);
	size_t n = psz == 1 ? (rc ? 1 : 0) : 1 + psz;
	if (p) {
		if (n)
			*p++ = rc;
		if (n > 1)
			p = mqtt_props_put_ctx(p, props, ctx);
		*end = p;
	}
	return n;
}

size_t mqtt_encode_ack(struct buf *b, uint8_t version, uint8_t type, uint16_t packet_id, uint8_t rc,
		       const struct mqtt_props *props)
{
	size_t rem = 2;
	if (version == MQTT_V5)
		rem += rc_props_tail(NULL, rc, props, MQTT_PC_ACK, NULL);
	size_t total;
	uint8_t *p = begin(b, (uint8_t)(type << 4 | (type == MQTT_PUBREL ? 0x2 : 0x0)), rem, &total);
	p = put_u16(p, packet_id);
	if (version == MQTT_V5)
		rc_props_tail(p, rc, props, MQTT_PC_ACK, &p);
	return commit(b, p, total);
}

size_t mqtt_encode_subscribe(struct buf *b, uint8_t version, uint16_t packet_id, const struct mqtt_props *props,
			     const struct mqtt_str *filters, const uint8_t *options, size_t n)
{
	bool v5 = version == MQTT_V5;
	uint8_t optmask = v5 ? 0x3F : MQTT_SUBOPT_QOS_MASK;
	size_t rem = 2 + (v5 ? mqtt_props_size_ctx(props, MQTT_PC_SUBSCRIBE) : 0);
	for (size_t i = 0; i < n; i++)
		rem += str_size(filters[i]) + 1;
	size_t total;
	uint8_t *p = begin(b, MQTT_SUBSCRIBE << 4 | 0x2, rem, &total);
	p = put_u16(p, packet_id);
	if (v5)
		p = mqtt_props_put_ctx(p, props, MQTT_PC_SUBSCRIBE);
	for (size_t i = 0; i < n; i++) {
		p = put_str(p, filters[i]);
		*p++ = options[i] & optmask;
	}
	return commit(b, p, total);
}

/* SUBACK and UNSUBACK: packet id, v5 properties, one code per entry. */
static size_t encode_codes_ack(struct buf *b, uint8_t byte0, bool v5, unsigned ctx, uint16_t packet_id,
			       const struct mqtt_props *props, const uint8_t *codes, size_t n)
{
	size_t rem = 2 + n + (v5 ? mqtt_props_size_ctx(props, ctx) : 0);
	size_t total;
	uint8_t *p = begin(b, byte0, rem, &total);
	p = put_u16(p, packet_id);
	if (v5)
		p = mqtt_props_put_ctx(p, props, ctx);
	p = put_bytes(p, codes, n);
	return commit(b, p, total);
}

size_t mqtt_encode_suback(struct buf *b, uint8_t version, uint16_t packet_id, const struct mqtt_props *props,
			  const uint8_t *codes, size_t n)
{
	bool v5 = version == MQTT_V5;
	return encode_codes_ack(b, MQTT_SUBACK << 4, v5, MQTT_PC_SUBACK, packet_id, props, codes, n);
}

size_t mqtt_encode_unsubscribe(struct buf *b, uint8_t version, uint16_t packet_id, const struct mqtt_props *props,
			       const struct mqtt_str *filters, size_t n)
{
	bool v5 = version == MQTT_V5;
	size_t rem = 2 + (v5 ? mqtt_props_size_ctx(props, MQTT_PC_UNSUBSCRIBE) : 0);
	for (size_t i = 0; i < n; i++)
		rem += str_size(filters[i]);
	size_t total;
	uint8_t *p = begin(b, MQTT_UNSUBSCRIBE << 4 | 0x2, rem, &total);
	p = put_u16(p, packet_id);
	if (v5)
		p = mqtt_props_put_ctx(p, props, MQTT_PC_UNSUBSCRIBE);
	for (size_t i = 0; i < n; i++)
		p = put_str(p, filters[i]);
	return commit(b, p, total);
}

size_t mqtt_encode_unsuback(struct buf *b, uint8_t version, uint16_t packet_id, const struct mqtt_props *props,
			    const uint8_t *codes, size_t n)
{
	bool v5 = version == MQTT_V5;
	return encode_codes_ack(b, MQTT_UNSUBACK << 4, v5, MQTT_PC_UNSUBACK, packet_id, props, codes, v5 ? n : 0);
}

size_t mqtt_encode_empty(struct buf *b, uint8_t type)
{
	size_t total;
	uint8_t *p = begin(b, (uint8_t)(type << 4), 0, &total);
	return commit(b, p, total);
}

static size_t encode_rc_props(struct buf *b, uint8_t byte0, uint8_t rc, const struct mqtt_props *props,
			      unsigned ctx)
{
	size_t total;
	uint8_t *p = begin(b, byte0, rc_props_tail(NULL, rc, props, ctx, NULL), &total);
	rc_props_tail(p, rc, props, ctx, &p);
	return commit(b, p, total);
}

size_t mqtt_encode_disconnect(struct buf *b, uint8_t version, uint8_t rc, const struct mqtt_props *props)
{
	if (version != MQTT_V5)
		return mqtt_encode_empty(b, MQTT_DISCONNECT);
	return encode_rc_props(b, MQTT_DISCONNECT << 4, rc, props, MQTT_PC_DISCONNECT);
}

size_t mqtt_encode_auth(struct buf *b, uint8_t rc, const struct mqtt_props *props)
{
	return encode_rc_props(b, MQTT_AUTH << 4, rc, props, MQTT_PC_AUTH);
}
