/* MQTT 5 properties: decoding with the §2.2.2.2 table, encoding, user properties.
 *
 * Error mapping (applies to every decoder in src/mqtt/):
 *   MQTT_RC_MALFORMED       a property identifier that is unknown or not allowed in the
 *                           packet (or will) it appears in — the spec allows "Protocol Error
 *                           or Malformed Packet" there; we always say MALFORMED, because the
 *                           identifier tells us how to parse what follows and we cannot trust
 *                           that; a value cut short; a property length beyond the packet; bad
 *                           UTF-8 in a string property.
 *   MQTT_RC_PROTOCOL_ERROR  a single-instance property appearing twice; a value out of its
 *                           range (the spec calls all of these Protocol Errors: Payload Format,
 *                           Request Problem/Response Information, Maximum QoS and the four
 *                           "available" flags above 1; Receive Maximum, Maximum Packet Size,
 *                           Topic Alias or Subscription Identifier equal to 0); a Subscription
 *                           Identifier in a PUBLISH (this decoder serves the server side, where
 *                           a client PUBLISH must not carry one, MQTT-3.3.4-6); Authentication
 *                           Data without an Authentication Method.
 * A protocol error does not stop decoding: a packet that turns out not to parse further on
 * is MALFORMED, otherwise the first protocol error is returned.
 *
 * User properties: the decoded user_props view runs from the first 0x26 entry to the end
 * of the last one. The spec lets a sender put other properties between user properties,
 * so the view may contain them; user_props_bytes counts the 0x26 bytes alone, and when it
 * equals the view's length the view is one clean run that can be copied verbatim.
 * mqtt_user_props_next skips any non-0x26 entry it meets. Encoders write a user_props view
 * verbatim.
 */
#include <stddef.h>
#include <string.h>

#include "mqtt/internal.h"
#include "mqtt/mqtt.h"

enum prop_type {
	PT_NONE = 0,
	PT_BYTE,   /* every byte property is a 0/1 flag */
	PT_U16,
	PT_U32,
	PT_VARINT, /* Subscription Identifier: kept in sub_ids[], not at off */
	PT_UTF8,
	PT_BIN,
	PT_PAIR,   /* User Property: kept in the user_props view, not at off */
};

struct prop_info {
	uint8_t type;
	bool nonzero;   /* 0 is out of range */
	uint16_t ctx;   /* MQTT_PC_* where the property may appear */
	uint32_t bit;   /* MQTT_P_* presence bit */
	size_t off;     /* offset of the value in struct mqtt_props */
};

#define PROP(id_, type_, nz_, ctx_, bit_, field_) \
	[id_] = { (type_), (nz_), (ctx_), (bit_), offsetof(struct mqtt_props, field_) }

#define PROP_NPROPS 0x2B

static const struct prop_info props_tab[PROP_NPROPS] = {
	PROP(MQTT_PROP_PAYLOAD_FORMAT, PT_BYTE, false, MQTT_PC_PUBLISH | MQTT_PC_WILL, MQTT_P_PAYLOAD_FORMAT,
	     payload_format),
	PROP(MQTT_PROP_MESSAGE_EXPIRY, PT_U32, false, MQTT_PC_PUBLISH | MQTT_PC_WILL, MQTT_P_MESSAGE_EXPIRY,
	     message_expiry),
	PROP(MQTT_PROP_CONTENT_TYPE, PT_UTF8, false, MQTT_PC_PUBLISH | MQTT_PC_WILL, MQTT_P_CONTENT_TYPE,
	     content_type),
	PROP(MQTT_PROP_RESPONSE_TOPIC, PT_UTF8, false, MQTT_PC_PUBLISH | MQTT_PC_WILL, MQTT_P_RESPONSE_TOPIC,
	     response_topic),
	PROP(MQTT_PROP_CORRELATION_DATA, PT_BIN, false, MQTT_PC_PUBLISH | MQTT_PC_WILL, MQTT_P_CORRELATION_DATA,
	     correlation_data),
	PROP(MQTT_PROP_SUBSCRIPTION_ID, PT_VARINT, true, MQTT_PC_PUBLISH | MQTT_PC_SUBSCRIBE, MQTT_P_SUBSCRIPTION_ID,
	     sub_ids),
	PROP(MQTT_PROP_SESSION_EXPIRY, PT_U32, false, MQTT_PC_CONNECT | MQTT_PC_CONNACK | MQTT_PC_DISCONNECT,
	     MQTT_P_SESSION_EXPIRY, session_expiry),
	PROP(MQTT_PROP_ASSIGNED_CLIENT_ID, PT_UTF8, false, MQTT_PC_CONNACK, MQTT_P_ASSIGNED_CLIENT_ID,
	     assigned_client_id),
	PROP(MQTT_PROP_SERVER_KEEP_ALIVE, PT_U16, false, MQTT_PC_CONNACK, MQTT_P_SERVER_KEEP_ALIVE,
	     server_keep_alive),
	PROP(MQTT_PROP_AUTH_METHOD, PT_UTF8, false, MQTT_PC_CONNECT | MQTT_PC_CONNACK | MQTT_PC_AUTH,
	     MQTT_P_AUTH_METHOD, auth_method),
	PROP(MQTT_PROP_AUTH_DATA, PT_BIN, false, MQTT_PC_CONNECT | MQTT_PC_CONNACK | MQTT_PC_AUTH, MQTT_P_AUTH_DATA,
	     auth_data),
	PROP(MQTT_PROP_REQUEST_PROBLEM_INFO, PT_BYTE, false, MQTT_PC_CONNECT, MQTT_P_REQUEST_PROBLEM_INFO,
	     request_problem_info),
	PROP(MQTT_PROP_WILL_DELAY, PT_U32, false, MQTT_PC_WILL, MQTT_P_WILL_DELAY, will_delay),
	PROP(MQTT_PROP_REQUEST_RESPONSE_INFO, PT_BYTE, false, MQTT_PC_CONNECT, MQTT_P_REQUEST_RESPONSE_INFO,
	     request_response_info),
	PROP(MQTT_PROP_RESPONSE_INFO, PT_UTF8, false, MQTT_PC_CONNACK, MQTT_P_RESPONSE_INFO, response_info),
	PROP(MQTT_PROP_SERVER_REFERENCE, PT_UTF8, false, MQTT_PC_CONNACK | MQTT_PC_DISCONNECT,
	     MQTT_P_SERVER_REFERENCE, server_reference),
	PROP(MQTT_PROP_REASON_STRING, PT_UTF8, false,
	     MQTT_PC_CONNACK | MQTT_PC_ACK | MQTT_PC_SUBACK | MQTT_PC_UNSUBACK | MQTT_PC_DISCONNECT | MQTT_PC_AUTH,
	     MQTT_P_REASON_STRING, reason_string),
	PROP(MQTT_PROP_RECEIVE_MAXIMUM, PT_U16, true, MQTT_PC_CONNECT | MQTT_PC_CONNACK, MQTT_P_RECEIVE_MAXIMUM,
	     receive_maximum),
	PROP(MQTT_PROP_TOPIC_ALIAS_MAXIMUM, PT_U16, false, MQTT_PC_CONNECT | MQTT_PC_CONNACK,
	     MQTT_P_TOPIC_ALIAS_MAXIMUM, topic_alias_maximum),
	PROP(MQTT_PROP_TOPIC_ALIAS, PT_U16, true, MQTT_PC_PUBLISH, MQTT_P_TOPIC_ALIAS, topic_alias),
	PROP(MQTT_PROP_MAXIMUM_QOS, PT_BYTE, false, MQTT_PC_CONNACK, MQTT_P_MAXIMUM_QOS, maximum_qos),
	PROP(MQTT_PROP_RETAIN_AVAILABLE, PT_BYTE, false, MQTT_PC_CONNACK, MQTT_P_RETAIN_AVAILABLE, retain_available),
	PROP(MQTT_PROP_USER_PROPERTY, PT_PAIR, false, MQTT_PC_ANY, 0, user_props),
	PROP(MQTT_PROP_MAXIMUM_PACKET_SIZE, PT_U32, true, MQTT_PC_CONNECT | MQTT_PC_CONNACK,
	     MQTT_P_MAXIMUM_PACKET_SIZE, maximum_packet_size),
	PROP(MQTT_PROP_WILDCARD_SUB_AVAILABLE, PT_BYTE, false, MQTT_PC_CONNACK, MQTT_P_WILDCARD_SUB_AVAILABLE,
	     wildcard_sub_available),
	PROP(MQTT_PROP_SUB_ID_AVAILABLE, PT_BYTE, false, MQTT_PC_CONNACK, MQTT_P_SUB_ID_AVAILABLE, sub_id_available),
	PROP(MQTT_PROP_SHARED_SUB_AVAILABLE, PT_BYTE, false, MQTT_PC_CONNACK, MQTT_P_SHARED_SUB_AVAILABLE,
	     shared_sub_available),
};

static const struct prop_info *prop_lookup(uint8_t id)
{
	if (id >= PROP_NPROPS || props_tab[id].type == PT_NONE)
		return NULL;
	return &props_tab[id];
}

uint8_t mqtt_props_decode(struct rd *r, unsigned ctx, struct mqtt_props *out, uint8_t *pe)
{
	memset(out, 0, sizeof *out);
	uint32_t plen;
	if (!mqtt_rd_varint(r, &plen) || plen > r->n)
		return MQTT_RC_MALFORMED;
	struct rd pr = { r->p, plen };
	r->p += plen;
	r->n -= plen;

	const uint8_t *ufirst = NULL, *uend = NULL;
	while (pr.n) {
		const uint8_t *start = pr.p;
		uint8_t id, b;
		uint16_t w = 0;
		uint32_t num = 0;
		struct mqtt_str s = { 0 }, s2;
		rd_u8(&pr, &id);
		const struct prop_info *pi = prop_lookup(id);
		if (!pi || !(pi->ctx & ctx))
			return MQTT_RC_MALFORMED;
		switch (pi->type) {
		case PT_BYTE:
			if (!rd_u8(&pr, &b))
				return MQTT_RC_MALFORMED;
			num = b;
			break;
		case PT_U16:
			if (!rd_u16(&pr, &w))
				return MQTT_RC_MALFORMED;
			num = w;
			break;
		case PT_U32:
			if (!rd_u32(&pr, &num))
				return MQTT_RC_MALFORMED;
			break;
		case PT_VARINT:
			if (!mqtt_rd_varint(&pr, &num))
				return MQTT_RC_MALFORMED;
			break;
		case PT_UTF8:
			if (!rd_utf8(&pr, &s))
				return MQTT_RC_MALFORMED;
			break;
		case PT_BIN:
			if (!rd_bin(&pr, &s))
				return MQTT_RC_MALFORMED;
			break;
		case PT_PAIR:
			if (!rd_utf8(&pr, &s) || !rd_utf8(&pr, &s2))
				return MQTT_RC_MALFORMED;
			break;
		}

		if (id == MQTT_PROP_USER_PROPERTY) {
			if (!ufirst)
				ufirst = start;
			uend = pr.p;
			out->user_prop_count++;
			out->user_props_bytes += (uint32_t)(pr.p - start);
			continue;
		}
		if (id == MQTT_PROP_SUBSCRIPTION_ID && (ctx & MQTT_PC_PUBLISH)) {
			note_pe(pe, MQTT_RC_PROTOCOL_ERROR);
			continue;
		}
		if (out->present & pi->bit) {
			note_pe(pe, MQTT_RC_PROTOCOL_ERROR);
			continue;
		}
		if ((pi->type == PT_BYTE && num > 1) || (pi->nonzero && num == 0)) {
			note_pe(pe, MQTT_RC_PROTOCOL_ERROR);
			continue;
		}
		out->present |= pi->bit;
		uint8_t *field = (uint8_t *)out + pi->off;
		switch (pi->type) {
		case PT_BYTE:
			*field = (uint8_t)num;
			break;
		case PT_U16:
			memcpy(field, &w, sizeof w);
			break;
		case PT_U32:
			memcpy(field, &num, sizeof num);
			break;
		case PT_VARINT:
			out->sub_ids[0] = num;
			out->n_sub_ids = 1;
			break;
		case PT_UTF8:
		case PT_BIN:
			memcpy(field, &s, sizeof s);
			break;
		}
	}
	if ((out->present & MQTT_P_AUTH_DATA) && !(out->present & MQTT_P_AUTH_METHOD))
		note_pe(pe, MQTT_RC_PROTOCOL_ERROR);
	if (ufirst) {
		out->user_props.p = ufirst;
		out->user_props.len = (uint32_t)(uend - ufirst);
	}
	return MQTT_RC_SUCCESS;
}

/* Parse the property entry at v[*off] without validating strings (the view was
 * validated when it was decoded or built). On success *off moves past the entry.
 * Returns false at the end of the view or at anything that does not fit. */
static bool entry_next(struct mqtt_str v, size_t *off, uint8_t *id, struct mqtt_str *a, struct mqtt_str *b)
{
	if (*off >= v.len)
		return false;
	struct rd r = { v.p + *off, v.len - *off };
	uint8_t pid, u8;
	uint16_t u16;
	uint32_t u32;
	rd_u8(&r, &pid);
	const struct prop_info *pi = prop_lookup(pid);
	if (!pi)
		return false;
	bool ok = false;
	switch (pi->type) {
	case PT_BYTE:
		ok = rd_u8(&r, &u8);
		break;
	case PT_U16:
		ok = rd_u16(&r, &u16);
		break;
	case PT_U32:
		ok = rd_u32(&r, &u32);
		break;
	case PT_VARINT:
		ok = mqtt_rd_varint(&r, &u32);
		break;
	case PT_UTF8:
	case PT_BIN:
		ok = rd_bin(&r, a);
		break;
	case PT_PAIR:
		ok = rd_bin(&r, a) && rd_bin(&r, b);
		break;
	}
	if (!ok)
		return false;
	*id = pid;
	*off = v.len - r.n;
	return true;
}

bool mqtt_user_props_next(struct mqtt_str user_props, size_t *off, struct mqtt_str *key, struct mqtt_str *value)
{
	uint8_t id;
	struct mqtt_str a, b;
	while (entry_next(user_props, off, &id, &a, &b)) {
		if (id == MQTT_PROP_USER_PROPERTY) {
			*key = a;
			*value = b;
			return true;
		}
	}
	return false;
}

void mqtt_user_prop_append(struct buf *b, const char *key, size_t klen, const char *val, size_t vlen)
{
	if (klen > 65535)
		klen = 65535;
	if (vlen > 65535)
		vlen = 65535;
	size_t n = 5 + klen + vlen;
	uint8_t *p = buf_reserve(b, n);
	*p++ = MQTT_PROP_USER_PROPERTY;
	p = put_u16(p, (uint16_t)klen);
	if (klen)
		memcpy(p, key, klen);
	p += klen;
	p = put_u16(p, (uint16_t)vlen);
	if (vlen)
		memcpy(p, val, vlen);
	b->len += n;
}

/* The user_props view is written verbatim; a NULL view counts as empty. */
static size_t user_props_len(const struct mqtt_props *props)
{
	return props->user_props.p ? props->user_props.len : 0;
}

static size_t sub_id_count(const struct mqtt_props *props, unsigned ctx)
{
	size_t n = props->n_sub_ids > MQTT_MAX_SUB_IDS ? MQTT_MAX_SUB_IDS : props->n_sub_ids;
	if (ctx & MQTT_PC_PUBLISH)
		return n;
	if (ctx & MQTT_PC_SUBSCRIBE)
		return n ? 1 : 0;
	return 0;
}

/* True when property id is written by the "present" pass for ctx. */
static bool writes(const struct mqtt_props *props, unsigned ctx, uint8_t id, const struct prop_info *pi)
{
	return pi && id != MQTT_PROP_USER_PROPERTY && id != MQTT_PROP_SUBSCRIPTION_ID && (pi->ctx & ctx) &&
	       (props->present & pi->bit);
}

static size_t props_body_size(const struct mqtt_props *props, unsigned ctx)
{
	if (!props)
		return 0;
	size_t n = 0;
	for (uint8_t id = 1; id < PROP_NPROPS; id++) {
		const struct prop_info *pi = prop_lookup(id);
		if (!writes(props, ctx, id, pi))
			continue;
		const uint8_t *field = (const uint8_t *)props + pi->off;
		struct mqtt_str s;
		switch (pi->type) {
		case PT_BYTE:
			n += 2;
			break;
		case PT_U16:
			n += 3;
			break;
		case PT_U32:
			n += 5;
			break;
		case PT_UTF8:
		case PT_BIN:
			memcpy(&s, field, sizeof s);
			n += 1 + str_size(s);
			break;
		}
	}
	n += user_props_len(props);
	size_t k = sub_id_count(props, ctx);
	for (size_t i = 0; i < k; i++)
		n += 1 + mqtt_varint_size(props->sub_ids[i] & MQTT_VARINT_MAX);
	return n;
}

size_t mqtt_props_size_ctx(const struct mqtt_props *props, unsigned ctx)
{
	size_t n = props_body_size(props, ctx);
	return mqtt_varint_size((uint32_t)n) + n;
}

uint8_t *mqtt_props_put_ctx(uint8_t *p, const struct mqtt_props *props, unsigned ctx)
{
	size_t body = props_body_size(props, ctx);
	p = mqtt_varint_put(p, (uint32_t)body);
	if (!props)
		return p;
	for (uint8_t id = 1; id < PROP_NPROPS; id++) {
		const struct prop_info *pi = prop_lookup(id);
		if (!writes(props, ctx, id, pi))
			continue;
		const uint8_t *field = (const uint8_t *)props + pi->off;
		uint16_t w = 0;
		uint32_t d;
		struct mqtt_str s;
		*p++ = id;
		switch (pi->type) {
		case PT_BYTE:
			*p++ = *field;
			break;
		case PT_U16:
			memcpy(&w, field, sizeof w);
			p = put_u16(p, w);
			break;
		case PT_U32:
			memcpy(&d, field, sizeof d);
			p = put_u32(p, d);
			break;
		case PT_UTF8:
		case PT_BIN:
			memcpy(&s, field, sizeof s);
			p = put_str(p, s);
			break;
		}
	}
	if (user_props_len(props)) {
		memcpy(p, props->user_props.p, props->user_props.len);
		p += props->user_props.len;
	}
	size_t k = sub_id_count(props, ctx);
	for (size_t i = 0; i < k; i++) {
		*p++ = MQTT_PROP_SUBSCRIPTION_ID;
		p = mqtt_varint_put(p, props->sub_ids[i]);
	}
	return p;
}

size_t mqtt_props_size(const struct mqtt_props *props)
{
	return mqtt_props_size_ctx(props, MQTT_PC_ANY);
}

uint8_t *mqtt_props_put(uint8_t *p, const struct mqtt_props *props)
{
	return mqtt_props_put_ctx(p, props, MQTT_PC_ANY);
}
