/* Private to src/mqtt/: the bounds-checked byte reader used by every decoder, the
 * property contexts shared by the property decoder and the encoders, and small
 * big-endian writers. Nothing here allocates or keeps state.
 */
#ifndef BW_MQTT_INTERNAL_H
#define BW_MQTT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "mqtt/mqtt.h"

/* Largest value a Variable Byte Integer can hold (four bytes). */
#define MQTT_VARINT_MAX 268435455u

/* The unread part of a field. Every read checks n before p moves; a failed read
 * leaves the reader untouched. */
struct rd {
	const uint8_t *p;
	size_t n;
};

static inline bool rd_u8(struct rd *r, uint8_t *v)
{
	if (r->n < 1)
		return false;
	*v = r->p[0];
	r->p += 1;
	r->n -= 1;
	return true;
}

static inline bool rd_u16(struct rd *r, uint16_t *v)
{
	if (r->n < 2)
		return false;
	*v = (uint16_t)((r->p[0] << 8) | r->p[1]);
	r->p += 2;
	r->n -= 2;
	return true;
}

static inline bool rd_u32(struct rd *r, uint32_t *v)
{
	if (r->n < 4)
		return false;
	*v = ((uint32_t)r->p[0] << 24) | ((uint32_t)r->p[1] << 16) | ((uint32_t)r->p[2] << 8) | r->p[3];
	r->p += 4;
	r->n -= 4;
	return true;
}

/* Two-byte length followed by that many bytes (Binary Data, or a string before its
 * UTF-8 check). Both the prefix and the data are checked against r->n first. */
static inline bool rd_bin(struct rd *r, struct mqtt_str *s)
{
	if (r->n < 2)
		return false;
	size_t len = ((size_t)r->p[0] << 8) | r->p[1];
	if (r->n - 2 < len)
		return false;
	s->p = r->p + 2;
	s->len = (uint32_t)len;
	r->p += 2 + len;
	r->n -= 2 + len;
	return true;
}

/* A UTF-8 Encoded String: rd_bin plus mqtt_utf8_valid. */
static inline bool rd_utf8(struct rd *r, struct mqtt_str *s)
{
	struct rd t = *r;
	if (!rd_bin(&t, s) || !mqtt_utf8_valid(s->p, s->len))
		return false;
	*r = t;
	return true;
}

/* A Variable Byte Integer inside a body. Returns false (malformed) when it is cut
 * short, longer than four bytes or not minimally encoded. */
bool mqtt_rd_varint(struct rd *r, uint32_t *v);

/* Record the first protocol error seen while decoding continues: a packet that
 * cannot be parsed is MALFORMED even when an earlier field was a protocol error. */
static inline void note_pe(uint8_t *pe, uint8_t rc)
{
	if (!*pe)
		*pe = rc;
}

/* Where a property block sits: the columns of the MQTT 5 §2.2.2.2 table. */
enum {
	MQTT_PC_CONNECT = 1u << 0,
	MQTT_PC_WILL = 1u << 1,
	MQTT_PC_CONNACK = 1u << 2,
	MQTT_PC_PUBLISH = 1u << 3,
	MQTT_PC_ACK = 1u << 4, /* PUBACK, PUBREC, PUBREL, PUBCOMP */
	MQTT_PC_SUBSCRIBE = 1u << 5,
	MQTT_PC_SUBACK = 1u << 6,
	MQTT_PC_UNSUBSCRIBE = 1u << 7,
	MQTT_PC_UNSUBACK = 1u << 8,
	MQTT_PC_DISCONNECT = 1u << 9,
	MQTT_PC_AUTH = 1u << 10,
	MQTT_PC_ANY = (1u << 11) - 1,
};

/* Decode a property block (length varint + properties) at r for context ctx into
 * *out (cleared first) and move r past it. Returns MQTT_RC_SUCCESS or
 * MQTT_RC_MALFORMED; protocol errors (duplicates, out-of-range values, a Subscription
 * Identifier in a PUBLISH, Authentication Data without a Method) are noted in *pe. */
uint8_t mqtt_props_decode(struct rd *r, unsigned ctx, struct mqtt_props *out, uint8_t *pe);
/* Size of the property block an encoder writes for ctx: only properties the table
 * allows there; Subscription Identifiers only for PUBLISH (all) and SUBSCRIBE (one). */
size_t mqtt_props_size_ctx(const struct mqtt_props *props, unsigned ctx);
/* Write that block at p; returns the byte after it. */
uint8_t *mqtt_props_put_ctx(uint8_t *p, const struct mqtt_props *props, unsigned ctx);

static inline uint8_t *put_u16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
	return p + 2;
}

static inline uint8_t *put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
	return p + 4;
}

/* Strings and binary data longer than 65535 bytes cannot be encoded; encoders clamp
 * them to 65535 so that the packet they write stays self-consistent. */
static inline uint32_t str_len_clamped(struct mqtt_str s)
{
	return s.len > 65535 ? 65535 : s.len;
}

static inline size_t str_size(struct mqtt_str s)
{
	return 2 + (size_t)str_len_clamped(s);
}

static inline uint8_t *put_str(uint8_t *p, struct mqtt_str s)
{
	uint32_t len = str_len_clamped(s);
	p = put_u16(p, (uint16_t)len);
	if (len)
		memcpy(p, s.p, len);
	return p + len;
}

#endif
