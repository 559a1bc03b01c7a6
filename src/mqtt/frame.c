/* Framing and primitives: the fixed header, Variable Byte Integers and UTF-8 checks. */
#include "mqtt/internal.h"
#include "mqtt/mqtt.h"

int mqtt_frame(const uint8_t *p, size_t len, uint32_t max_size, struct mqtt_fixed *out, uint8_t *rc)
{
	uint8_t dummy;
	if (!rc)
		rc = &dummy;
	*rc = MQTT_RC_SUCCESS;
	if (len < 1)
		return MQTT_PARSE_NEED_MORE;
	if ((p[0] >> 4) == 0) {
		*rc = MQTT_RC_MALFORMED;
		return MQTT_PARSE_ERROR;
	}

	/* Remaining Length: at most four bytes, minimally encoded (MQTT-1.5.5). */
	uint32_t remaining = 0;
	size_t i;
	for (i = 0; i < 4; i++) {
		if (1 + i >= len)
			return MQTT_PARSE_NEED_MORE;
		uint8_t c = p[1 + i];
		remaining |= (uint32_t)(c & 0x7F) << (7 * i);
		if (!(c & 0x80))
			break;
	}
	if (i == 4) { /* the fourth byte still had its continuation bit */
		*rc = MQTT_RC_MALFORMED;
		return MQTT_PARSE_ERROR;
	}
	if (i > 0 && p[1 + i] == 0) { /* a zero last byte: the same value fits in fewer bytes */
		*rc = MQTT_RC_MALFORMED;
		return MQTT_PARSE_ERROR;
	}

	size_t header_len = 2 + i;
	/* Filled as soon as the Remaining Length is known, so a caller can log an oversize
	 * packet; meaningful to the caller only with MQTT_PARSE_OK. */
	out->type = p[0] >> 4;
	out->flags = p[0] & 0x0F;
	out->header_len = (uint8_t)header_len;
	out->remaining = remaining;
	if ((uint64_t)header_len + remaining > max_size) {
		*rc = MQTT_RC_PACKET_TOO_LARGE;
		return MQTT_PARSE_ERROR;
	}
	if (len - header_len < remaining)
		return MQTT_PARSE_NEED_MORE;
	return MQTT_PARSE_OK;
}

bool mqtt_rd_varint(struct rd *r, uint32_t *v)
{
	uint32_t val = 0;
	for (size_t i = 0; i < 4; i++) {
		if (i >= r->n)
			return false;
		uint8_t c = r->p[i];
		val |= (uint32_t)(c & 0x7F) << (7 * i);
		if (!(c & 0x80)) {
			if (i > 0 && c == 0)
				return false;
			r->p += i + 1;
			r->n -= i + 1;
			*v = val;
			return true;
		}
	}
	return false;
}

size_t mqtt_varint_size(uint32_t v)
{
	if (v < 128)
		return 1;
	if (v < 16384)
		return 2;
	if (v < 2097152)
		return 3;
	return 4;
}

/* Values above 268435455 cannot be encoded; callers bound packet sizes first (see
 * mqtt_publish_size). Such a value is written modulo 2^28 in four bytes, so the output
 * is at least a well-formed varint of the size mqtt_varint_size reported. */
uint8_t *mqtt_varint_put(uint8_t *p, uint32_t v)
{
	v &= MQTT_VARINT_MAX;
	size_t n = mqtt_varint_size(v);
	for (size_t i = 0; i < n; i++) {
		uint8_t c = v & 0x7F;
		v >>= 7;
		if (i + 1 < n)
			c |= 0x80;
		*p++ = c;
	}
	return p;
}

bool mqtt_utf8_valid(const uint8_t *s, size_t len)
{
	size_t i = 0;
	while (i < len) {
		uint8_t c = s[i];
		if (c < 0x80) {
			if (c == 0)
				return false; /* U+0000 [MQTT-1.5.4-2] */
			i++;
			continue;
		}
		size_t need;
		uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
		if (c < 0xC2) {
			return false; /* stray continuation byte, or overlong C0/C1 lead */
		} else if (c < 0xE0) {
			need = 1;
		} else if (c < 0xF0) {
			need = 2;
			if (c == 0xE0)
				lo = 0xA0; /* overlong three-byte form */
			else if (c == 0xED)
				hi = 0x9F; /* U+D800..U+DFFF surrogates [MQTT-1.5.4-1] */
		} else if (c < 0xF5) {
			need = 3;
			if (c == 0xF0)
				lo = 0x90; /* overlong four-byte form */
			else if (c == 0xF4)
				hi = 0x8F; /* above U+10FFFF */
		} else {
			return false;
		}
		if (len - i - 1 < need)
			return false;
		if (s[i + 1] < lo || s[i + 1] > hi)
			return false;
		for (size_t k = 2; k <= need; k++)
			if ((s[i + k] & 0xC0) != 0x80)
				return false;
		i += need + 1;
	}
	return true;
}
