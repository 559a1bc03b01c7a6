/* Body decoders for every MQTT packet type, versions 3.1, 3.1.1 and 5.0.
 *
 * Reason codes returned (see also props.c for properties). Where the spec names the
 * class we follow it; where it only says "MUST" we say which rule we applied.
 *
 * MQTT_RC_MALFORMED — the packet cannot be parsed:
 *   - any length (string, binary, property block, packet id, reason code) running past
 *     its enclosing field, or bytes left over after the last field;
 *   - a Variable Byte Integer inside the body that is cut short, longer than four bytes
 *     or not minimally encoded (MQTT-1.5.5-1);
 *   - invalid UTF-8 in a string, including U+0000, surrogates, overlong forms and code
 *     points above U+10FFFF (MQTT-1.5.4-1/2); binary data is not checked;
 *   - fixed-header flags other than the ones the spec fixes (MQTT-2.1.3-1); for PUBLISH,
 *     QoS 3 (MQTT-3.3.1-4) and DUP set with QoS 0 (MQTT-3.3.1-2: DUP is a fixed-header
 *     flag, and §2.1.3 makes invalid flags a Malformed Packet — in both 3.1.1 and 5);
 *   - CONNECT: the reserved flag bit 0 set (MQTT-3.1.2-3; not checked for 3.1, whose
 *     spec leaves the bit unused), Will QoS 3 (MQTT-3.1.2-14 / §3.1.2.6);
 *   - SUBSCRIBE: v3 options with bits 2-7 set or QoS 3 (MQTT-3.8.3-4 of 3.1.1); v5
 *     options with reserved bits 6-7 set (MQTT-3.8.3-5);
 *   - CONNACK: acknowledge flags bits 1-7 set (3.1.1 and 5; 3.1 has no such field);
 *   - AUTH on a connection that is not version 5 (packet type 15 is reserved there).
 *
 * MQTT_RC_PROTOCOL_ERROR — the packet parses but breaks a rule:
 *   - a Packet Identifier of 0 where one is carried (PUBLISH QoS>0, SUBSCRIBE,
 *     UNSUBSCRIBE and every ack: MQTT-2.2.1-3; an ack echoes a non-zero id);
 *   - SUBSCRIBE / UNSUBSCRIBE without entries (MQTT-3.8.3-3, MQTT-3.10.3-2), SUBACK /
 *     v5 UNSUBACK without reason codes;
 *   - CONNECT: Will QoS or Will Retain set with the Will Flag clear (MQTT-3.1.2-11/13);
 *     v3.1 and v3.1.1 password flag without the user name flag (MQTT-3.1.2-22);
 *   - v5 SUBSCRIBE: Retain Handling 3, Maximum QoS 3 (v5 §3.8.3.1 names both Protocol
 *     Errors), No Local on a shared subscription "$share/..." (MQTT-3.8.3-4);
 *   - PUBLISH: a zero-length topic without a Topic Alias (v5 §3.3.2.1; in v3 topics must
 *     be at least one character, MQTT-4.7.3-1); Topic Alias 0 and a Subscription
 *     Identifier (props.c);
 *   - a reason code that the spec does not list for the packet (v5 acks, CONNACK,
 *     SUBACK, UNSUBACK, DISCONNECT, AUTH; v3 CONNACK return codes above 5 and SUBACK
 *     codes other than 0, 1, 2, 0x80); CONNACK with Session Present set and a failure
 *     code (MQTT-3.2.2-4 of 3.1.1, MQTT-3.2.2-6 of 5).
 *
 * MQTT_RC_UNSUPPORTED_VERSION — CONNECT with a protocol name/level pair other than
 *   MQIsdp/3, MQTT/4, MQTT/5.
 *
 * Other properties between user properties are valid and accepted: the user_props view
 * then spans them (see props.c).
 *
 * A protocol error does not stop decoding: a packet that turns out not to parse further
 * on is MALFORMED, otherwise the first such error found is returned.
 *
 * Version 3.1 leniency: its spec lets the DUP flag be set on a re-sent SUBSCRIBE,
 * UNSUBSCRIBE or PUBREL, so for version 3 those accept flags 0xA as well as 0x2.
 *
 * Left to the broker (not codec concerns): topic name/filter syntax (topic.h), client
 * identifier rules, the Authentication Method being present in AUTH, Topic Alias
 * against the negotiated maximum, Payload Format Indicator 1 with non-UTF-8 payload.
 */
#include <string.h>

#include "mqtt/internal.h"
#include "mqtt/mqtt.h"

/* What is left after the last field: nothing, or the packet is malformed. */
static uint8_t finish(const struct rd *r, uint8_t pe)
{
	if (r->n)
		return MQTT_RC_MALFORMED;
	return pe;
}

static bool req_flags_ok(uint8_t version, uint8_t flags)
{
	return flags == 0x2 || (version == MQTT_V31 && flags == 0xA);
}

static bool in_list(uint8_t rc, const uint8_t *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (list[i] == rc)
			return true;
	return false;
}

#define IN(rc, ...) in_list((rc), (const uint8_t[]){ __VA_ARGS__ }, sizeof((const uint8_t[]){ __VA_ARGS__ }))

static bool connack_rc_ok(uint8_t rc)
{
	return IN(rc, 0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95,
		  0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F);
}

static bool ack_rc_ok(uint8_t type, uint8_t rc)
{
	if (type == MQTT_PUBACK || type == MQTT_PUBREC)
		return IN(rc, 0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99);
	return rc == 0x00 || rc == 0x92; /* PUBREL, PUBCOMP */
}

static bool suback_rc_ok(uint8_t version, uint8_t rc)
{
	if (version != MQTT_V5)
		return IN(rc, 0x00, 0x01, 0x02, 0x80);
	return IN(rc, 0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2);
}

static bool unsuback_rc_ok(uint8_t rc)
{
	return IN(rc, 0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91);
}

static bool disconnect_rc_ok(uint8_t rc)
{
	/* Both directions: the union of the client's and the server's codes. */
	return IN(rc, 0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94,
		  0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2);
}

static bool auth_rc_ok(uint8_t rc)
{
	return rc == 0x00 || rc == 0x18 || rc == 0x19;
}

static bool str_eq(struct mqtt_str s, const char *lit)
{
	size_t n = strlen(lit);
	return s.len == n && memcmp(s.p, lit, n) == 0;
}

uint8_t mqtt_decode_connect(uint8_t flags, const uint8_t *body, size_t len, struct mqtt_connect *out)
{
	memset(out, 0, sizeof *out);
	struct rd r = { body, len };
	struct mqtt_str name;
	uint8_t level, cf, pe = 0;

	if (!rd_bin(&r, &name) || !rd_u8(&r, &level))
		return MQTT_RC_MALFORMED;
	out->version = level;
	if (!(str_eq(name, "MQTT") && (level == MQTT_V311 || level == MQTT_V5)) &&
	    !(str_eq(name, "MQIsdp") && level == MQTT_V31))
		return MQTT_RC_UNSUPPORTED_VERSION;
	if (flags != 0)
		return MQTT_RC_MALFORMED;

	if (!rd_u8(&r, &cf))
		return MQTT_RC_MALFORMED;
	if (level != MQTT_V31 && (cf & 0x01))
		return MQTT_RC_MALFORMED;
	out->clean_start = cf & 0x02;
	out->will = cf & 0x04;
	out->will_qos = (cf >> 3) & 0x03;
	out->will_retain = cf & 0x20;
	out->has_password = cf & 0x40;
	out->has_username = cf & 0x80;
	if (out->will_qos == 3)
		return MQTT_RC_MALFORMED;
	if (!out->will && (out->will_qos || out->will_retain))
		note_pe(&pe, MQTT_RC_PROTOCOL_ERROR);
	if (level != MQTT_V5 && out->has_password && !out->has_username)
		note_pe(&pe, MQTT_RC_PROTOCOL_ERROR);

	if (!rd_u16(&r, &out->keepalive))
		return MQTT_RC_MALFORMED;
	if (level == MQTT_V5 && mqtt_props_decode(&r, MQTT_PC_CONNECT, &out->props, &pe))
		return MQTT_RC_MALFORMED;
	if (!rd_utf8(&r, &out->client_id))
		return MQTT_RC_MALFORMED;
	if (out->will) {
		if (level == MQTT_V5 && mqtt_props_decode(&r, MQTT_PC_WILL, &out->will_props, &pe))
			return MQTT_RC_MALFORMED;
		if (!rd_utf8(&r, &out->will_topic) || !rd_bin(&r, &out->will_payload))
			return MQTT_RC_MALFORMED;
	}
	if (out->has_username && !rd_utf8(&r, &out->username))
		return MQTT_RC_MALFORMED;
	if (out->has_password && !rd_bin(&r, &out->password))
		return MQTT_RC_MALFORMED;
	return finish(&r, pe);
}

uint8_t mqtt_decode_connack(uint8_t version, uint8_t flags, const uint8_t *body, size_t len,
			    struct mqtt_connack *out)
{
	memset(out, 0, sizeof *out);
	struct rd r = { body, len };
	uint8_t af, pe = 0;

	if (flags != 0)
		return MQTT_RC_MALFORMED;
	if (!rd_u8(&r, &af) || !rd_u8(&r, &out->rc))
		return MQTT_RC_MALFORMED;
	if (version == MQTT_V31) {
		/* 3.1: the first byte is unused; there is no Session Present. */
		if (out->rc > MQTT_V3_NOT_AUTHORIZED)
			note_pe(&pe, MQTT_RC_PROTOCOL_ERROR);
		return finish(&r, pe);
	}
	if (af & 0xFE)
		return MQTT_RC_MALFORMED;
	out->session_present = af & 0x01;
	if (version == MQTT_V5) {
		if (mqtt_props_decode(&r, MQTT_PC_CONNACK, &out->props, &pe))
			return MQTT_RC_MALFORMED;
		if (!connack_rc_ok(out->rc))
			note_pe(&pe, MQTT_RC_PROTOCOL_ERROR);
		if (out->session_present && out->rc >= 0x80)
			note_pe(&pe, MQTT_RC_PROTOCOL_ERROR);
	} else {
		if (out->rc > MQTT_V3_NOT_AUTHORIZED)
			note_pe(&pe, MQTT_RC_PROTOCOL_ERROR);
		if (out->session_present && out->rc != 0)
			note_pe(&pe, MQTT_RC_PROTOCOL_ERROR);
	}
	return finish(&r, pe);
}

uint8_t mqtt_decode_publish(uint8_t version, uint8_t flags, const uint8_t *body, size_t len,
			    struct mqtt_publish *out)
{
	memset(out, 0, sizeof *out);
	struct rd r = { body, len };
	uint8_t pe = 0;

	out->retain = flags & 0x01;
	out->qos = (flags >> 1) & 0x03;
	out->dup = flags & 0x08;
	if (out->qos == 3)
		return MQTT_RC_MALFORMED;
	if (out->dup && out->qos == 0)
		return MQTT_RC_MALFORMED;

	if (!rd_utf8(&r, &out->topic))
		return MQTT_RC_MALFORMED;
	if (out->qos) {
		if (!rd_u16(&r, &out->packet_id))
			return MQTT_RC_MALFORMED;
		if (out->packet_id == 0)
			note_pe(&pe, MQTT_RC_PROTOCOL_ERROR);
	}
	if (version == MQTT_V5 && mqtt_props_decode(&r, MQTT_PC_PUBLISH, &out->props, &pe))
		return MQTT_RC_MALFORMED;
	if (out->topic.len == 0 && !(out->props.present & MQTT_P_TOPIC_ALIAS))
		note_pe(&pe, MQTT_RC_PROTOCOL_ERROR);
	out->payload.p = r.p;
	out->payload.len = (uint32_t)r.n;
	return pe;
}

uint8_t mqtt_decode_ack(uint8_t version, uint8_t type, uint8_t flags, const uint8_t *body, size_t len,
			struct mqtt_ack *out)
{
	memset(out, 0, sizeof *out);
	struct rd r = { body, len };
	uint8_t pe = 0;

	if (type < MQTT_PUBACK || type > MQTT_PUBCOMP)
		return MQTT_RC_MALFORMED;
	if (type == MQTT_PUBREL ? !req_flags_ok(version, flags) : flags != 0)
		return MQTT_RC_MALFORMED;
	if (!rd_u16(&r, &out->packet_id))
		return MQTT_RC_MALFORMED;
	if (out->packet_id == 0)
		note_pe(&pe, MQTT_RC_PROTOCOL_ERROR);
	if (version == MQTT_V5 && r.n > 0) {
		rd_u8(&r, &out->rc);
		if (r.n > 0 && mqtt_props_decode(&r, MQTT_PC_ACK, &out->props, &pe))
			return MQTT_RC_MALFORMED;
		if (!ack_rc_ok(type, out->rc))
			note_pe(&pe, MQTT_RC_PROTOCOL_ERROR);
	}
	return finish(&r, pe);
}

/* The shared-subscription prefix; No Local on such a filter is a protocol error. */
static bool is_shared(struct mqtt_str f)
{
	return f.len >= 7 && memcmp(f.p, "$share/", 7) == 0;
}

uint8_t mqtt_decode_subscribe(uint8_t version, uint8_t flags, const uint8_t *body, size_t len,
			      struct mqtt_subscribe *out)
{
	memset(out, 0, sizeof *out);
	struct rd r = { body, len };
	uint8_t pe = 0;

	if (!req_flags_ok(version, flags))
		return MQTT_RC_MALFORMED;
	if (!rd_u16(&r, &out->packet_id))
		return MQTT_RC_MALFORMED;
	if (out->packet_id == 0)
		note_pe(&pe, MQTT_RC_PROTOCOL_ERROR);
	if (version == MQTT_V5 && mqtt_props_decode(&r, MQTT_PC_SUBSCRIBE, &out->props, &pe))
		return MQTT_RC_MALFORMED;

	out->entries.p = r.p;
	out->entries.len = (uint32_t)r.n;
	while (r.n) {
		struct mqtt_str filter;
		uint8_t opt;
		if (!rd_utf8(&r, &filter) || !rd_u8(&r, &opt))
			return MQTT_RC_MALFORMED;
		if (version == MQTT_V5) {
			if (opt & 0xC0)
				return MQTT_RC_MALFORMED;
			if ((opt & MQTT_SUBOPT_RETAIN_HANDLING_MASK) >> MQTT_SUBOPT_RETAIN_HANDLING_SHIFT == 3)
				note_pe(&pe, MQTT_RC_PROTOCOL_ERROR);
			if ((opt & MQTT_SUBOPT_QOS_MASK) == 3)
				note_pe(&pe, MQTT_RC_PROTOCOL_ERROR);
			if ((opt & MQTT_SUBOPT_NO_LOCAL) && is_shared(filter))
				note_pe(&pe, MQTT_RC_PROTOCOL_ERROR);
		} else {
			if ((opt & ~MQTT_SUBOPT_QOS_MASK) || (opt & MQTT_SUBOPT_QOS_MASK) == 3)
				return MQTT_RC_MALFORMED;
		}
		out->count++;
	}
	if (out->count == 0)
		note_pe(&pe, MQTT_RC_PROTOCOL_ERROR);
	return pe;
}

bool mqtt_subscribe_next(const struct mqtt_subscribe *s, size_t *off, struct mqtt_str *filter, uint8_t *options)
{
	if (*off >= s->entries.len)
		return false;
	struct rd r = { s->entries.p + *off, s->entries.len - *off };
	if (!rd_bin(&r, filter) || !rd_u8(&r, options))
		return false;
	*off = s->entries.len - r.n;
	return true;
}

uint8_t mqtt_decode_suback(uint8_t version, uint8_t flags, const uint8_t *body, size_t len,
			   struct mqtt_suback *out)
{
	memset(out, 0, sizeof *out);
	struct rd r = { body, len };
	uint8_t pe = 0;

	if (flags != 0)
		return MQTT_RC_MALFORMED;
	if (!rd_u16(&r, &out->packet_id))
		return MQTT_RC_MALFORMED;
	if (out->packet_id == 0)
		note_pe(&pe, MQTT_RC_PROTOCOL_ERROR);
	if (version == MQTT_V5 && mqtt_props_decode(&r, MQTT_PC_SUBACK, &out->props, &pe))
		return MQTT_RC_MALFORMED;
	out->codes.p = r.p;
	out->codes.len = (uint32_t)r.n;
	if (r.n == 0)
		note_pe(&pe, MQTT_RC_PROTOCOL_ERROR);
	for (size_t i = 0; i < r.n; i++)
		if (!suback_rc_ok(version, r.p[i]))
			note_pe(&pe, MQTT_RC_PROTOCOL_ERROR);
	return pe;
}

uint8_t mqtt_decode_unsubscribe(uint8_t version, uint8_t flags, const uint8_t *body, size_t len,
				struct mqtt_unsubscribe *out)
{
	memset(out, 0, sizeof *out);
	struct rd r = { body, len };
	uint8_t pe = 0;

	if (!req_flags_ok(version, flags))
		return MQTT_RC_MALFORMED;
	if (!rd_u16(&r, &out->packet_id))
		return MQTT_RC_MALFORMED;
	if (out->packet_id == 0)
		note_pe(&pe, MQTT_RC_PROTOCOL_ERROR);
	if (version == MQTT_V5 && mqtt_props_decode(&r, MQTT_PC_UNSUBSCRIBE, &out->props, &pe))
		return MQTT_RC_MALFORMED;
	out->entries.p = r.p;
	out->entries.len = (uint32_t)r.n;
	while (r.n) {
		struct mqtt_str filter;
		if (!rd_utf8(&r, &filter))
			return MQTT_RC_MALFORMED;
		out->count++;
	}
	if (out->count == 0)
		note_pe(&pe, MQTT_RC_PROTOCOL_ERROR);
	return pe;
}

bool mqtt_unsubscribe_next(const struct mqtt_unsubscribe *u, size_t *off, struct mqtt_str *filter)
{
	if (*off >= u->entries.len)
		return false;
	struct rd r = { u->entries.p + *off, u->entries.len - *off };
	if (!rd_bin(&r, filter))
		return false;
	*off = u->entries.len - r.n;
	return true;
}

uint8_t mqtt_decode_unsuback(uint8_t version, uint8_t flags, const uint8_t *body, size_t len,
			     struct mqtt_unsuback *out)
{
	memset(out, 0, sizeof *out);
	struct rd r = { body, len };
	uint8_t pe = 0;

	if (flags != 0)
		return MQTT_RC_MALFORMED;
	if (!rd_u16(&r, &out->packet_id))
		return MQTT_RC_MALFORMED;
	if (out->packet_id == 0)
		note_pe(&pe, MQTT_RC_PROTOCOL_ERROR);
	if (version != MQTT_V5)
		return finish(&r, pe);
	if (mqtt_props_decode(&r, MQTT_PC_UNSUBACK, &out->props, &pe))
		return MQTT_RC_MALFORMED;
	out->codes.p = r.p;
	out->codes.len = (uint32_t)r.n;
	if (r.n == 0)
		note_pe(&pe, MQTT_RC_PROTOCOL_ERROR);
	for (size_t i = 0; i < r.n; i++)
		if (!unsuback_rc_ok(r.p[i]))
			note_pe(&pe, MQTT_RC_PROTOCOL_ERROR);
	return pe;
}

uint8_t mqtt_decode_empty(uint8_t flags, size_t len)
{
	return flags == 0 && len == 0 ? MQTT_RC_SUCCESS : MQTT_RC_MALFORMED;
}

/* DISCONNECT and AUTH share their v5 layout: nothing (reason 0, no properties), a
 * reason code alone, or a reason code and a property block. */
static uint8_t decode_rc_props(const uint8_t *body, size_t len, unsigned ctx, uint8_t *rc,
			       struct mqtt_props *props, uint8_t *pe)
{
	struct rd r = { body, len };
	if (r.n == 0)
		return MQTT_RC_SUCCESS;
	rd_u8(&r, rc);
	if (r.n > 0 && mqtt_props_decode(&r, ctx, props, pe))
		return MQTT_RC_MALFORMED;
	return r.n ? MQTT_RC_MALFORMED : MQTT_RC_SUCCESS;
}

uint8_t mqtt_decode_disconnect(uint8_t version, uint8_t flags, const uint8_t *body, size_t len,
			       struct mqtt_disconnect *out)
{
	memset(out, 0, sizeof *out);
	uint8_t pe = 0;
	if (flags != 0)
		return MQTT_RC_MALFORMED;
	if (version != MQTT_V5)
		return len == 0 ? MQTT_RC_SUCCESS : MQTT_RC_MALFORMED;
	if (decode_rc_props(body, len, MQTT_PC_DISCONNECT, &out->rc, &out->props, &pe))
		return MQTT_RC_MALFORMED;
	if (!disconnect_rc_ok(out->rc))
		note_pe(&pe, MQTT_RC_PROTOCOL_ERROR);
	return pe;
}

uint8_t mqtt_decode_auth(uint8_t version, uint8_t flags, const uint8_t *body, size_t len, struct mqtt_auth *out)
{
	memset(out, 0, sizeof *out);
	uint8_t pe = 0;
	if (version != MQTT_V5 || flags != 0)
		return MQTT_RC_MALFORMED;
	if (decode_rc_props(body, len, MQTT_PC_AUTH, &out->rc, &out->props, &pe))
		return MQTT_RC_MALFORMED;
	if (!auth_rc_ok(out->rc))
		note_pe(&pe, MQTT_RC_PROTOCOL_ERROR);
	return pe;
}
