/* bw_mqtt.c: bwbench's minimal MQTT codec, 3.1.1 (version 4) and 5.
 *
 * Only what a benchmark client needs: it encodes CONNECT (clean session, no credentials,
 * no will), SUBSCRIBE (one filter), PUBLISH, PUBACK, PINGREQ and DISCONNECT, and decodes
 * CONNACK, SUBACK, PUBLISH and the framing of everything else. Pure functions over bytes;
 * MQTT 5 packets carry no properties and received properties are skipped.
 */
#include <string.h>

#include "bwbench.h"

/* Writes a Remaining Length varint; returns its size. */
static size_t put_varint(uint8_t *out, uint32_t v)
{
	size_t n = 0;
	do {
		uint8_t b = v & 0x7f;
		v >>= 7;
		out[n++] = b | (v ? 0x80 : 0);
	} while (v);
	return n;
}

/* Reads a varint of at most 4 bytes: bytes used, 0 = need more, -1 = malformed. */
static int get_varint(const uint8_t *p, size_t len, uint32_t *v)
{
	uint32_t x = 0;
	for (int i = 0; i < 4; i++) {
		if ((size_t)i >= len)
			return 0;
		x |= (uint32_t)(p[i] & 0x7f) << (7 * i);
		if (!(p[i] & 0x80)) {
			*v = x;
			return i + 1;
		}
	}
	return -1;
}

static size_t put_u16(uint8_t *out, uint16_t v)
{
	out[0] = v >> 8;
	out[1] = v & 0xff;
	return 2;
}

static size_t put_str(uint8_t *out, const char *s)
{
	size_t n = strlen(s);
	put_u16(out, (uint16_t)n);
	memcpy(out + 2, s, n);
	return n + 2;
}

long mqtt_frame(const uint8_t *p, size_t len, struct mqtt_pkt *pkt)
{
	if (len < 2)
		return 0;
	uint32_t rl;
	int n = get_varint(p + 1, len - 1, &rl);
	if (n <= 0)
		return n;
	size_t total = 1 + (size_t)n + rl;
	if (len < total)
		return 0;
	pkt->type = p[0] >> 4;
	pkt->flags = p[0] & 0x0f;
	pkt->body = p + 1 + n;
	pkt->len = rl;
	return (long)total;
}

size_t mqtt_enc_connect(uint8_t *out, int version, const char *cid, uint16_t keepalive, bool persistent)
{
	size_t cidn = strlen(cid);
	uint8_t nprops = version == 5 && persistent ? 5 : 0; /* Session Expiry Interval */
	uint32_t rl = 10 + (version == 5 ? 1u + nprops : 0) + 2 + (uint32_t)cidn;
	size_t o = 0;
	out[o++] = MQTT_CONNECT << 4;
	o += put_varint(out + o, rl);
	o += put_str(out + o, "MQTT");
	out[o++] = (uint8_t)version;
	out[o++] = persistent ? 0x00 : 0x02; /* clean session / clean start */
	o += put_u16(out + o, keepalive);
	if (version == 5) {
		out[o++] = nprops;
		if (nprops) {
			out[o++] = 0x11;
			o += put_u16(out + o, 0);
			o += put_u16(out + o, 3600);
		}
	}
	o += put_str(out + o, cid);
	return o;
}

size_t mqtt_enc_subscribe(uint8_t *out, int version, uint16_t pid, const char *filter, int qos)
{
	uint32_t rl = 2 + (version == 5 ? 1 : 0) + 2 + (uint32_t)strlen(filter) + 1;
	size_t o = 0;
	out[o++] = (MQTT_SUBSCRIBE << 4) | 0x02;
	o += put_varint(out + o, rl);
	o += put_u16(out + o, pid);
	if (version == 5)
		out[o++] = 0;
	o += put_str(out + o, filter);
	out[o++] = (uint8_t)qos;
	return o;
}

size_t mqtt_enc_publish_hdr(uint8_t *out, int version, const char *topic, int qos, uint32_t payload_len,
			    size_t *pid_off)
{
	uint32_t rl = 2 + (uint32_t)strlen(topic) + (qos ? 2 : 0) + (version == 5 ? 1 : 0) + payload_len;
	size_t o = 0;
	out[o++] = (uint8_t)((MQTT_PUBLISH << 4) | (qos << 1));
	o += put_varint(out + o, rl);
	o += put_str(out + o, topic);
	*pid_off = o;
	if (qos)
		o += put_u16(out + o, 0);
	if (version == 5)
		out[o++] = 0;
	return o;
}

size_t mqtt_enc_puback(uint8_t *out, uint16_t pid)
{
	out[0] = MQTT_PUBACK << 4;
	out[1] = 2;
	put_u16(out + 2, pid);
	return 4;
}

size_t mqtt_enc_empty(uint8_t *out, int type)
{
	out[0] = (uint8_t)(type << 4);
	out[1] = 0;
	return 2;
}

/* Skips an MQTT 5 property block at *o; false if it does not fit. */
static bool skip_props(const struct mqtt_pkt *pkt, uint32_t *o)
{
	uint32_t plen;
	int n = get_varint(pkt->body + *o, pkt->len - *o, &plen);
	if (n <= 0 || plen > pkt->len - *o - (uint32_t)n)
		return false;
	*o += (uint32_t)n + plen;
	return true;
}

int mqtt_dec_connack(const struct mqtt_pkt *pkt, int version)
{
	(void)version;
	if (pkt->type != MQTT_CONNACK || pkt->len < 2)
		return -1;
	return pkt->body[1];
}

int mqtt_dec_suback(const struct mqtt_pkt *pkt, int version)
{
	if (pkt->type != MQTT_SUBACK || pkt->len < 3)
		return -1;
	uint32_t o = 2;
	if (version == 5 && !skip_props(pkt, &o))
		return -1;
	if (o >= pkt->len)
		return -1;
	return pkt->body[o];
}

bool mqtt_dec_publish(const struct mqtt_pkt *pkt, int version, struct mqtt_publish *out)
{
	const uint8_t *b = pkt->body;
	uint32_t len = pkt->len, o = 0;
	out->qos = (pkt->flags >> 1) & 3;
	if (out->qos == 3 || len < 2)
		return false;
	out->topic_len = (uint16_t)(b[0] << 8 | b[1]);
	o = 2;
	if (out->topic_len > len - o)
		return false;
	out->topic = b + o;
	o += out->topic_len;
	out->pid = 0;
	if (out->qos) {
		if (len - o < 2)
			return false;
		out->pid = (uint16_t)(b[o] << 8 | b[o + 1]);
		o += 2;
	}
	if (version == 5 && !skip_props(pkt, &o))
		return false;
	out->payload = b + o;
	out->payload_len = len - o;
	return true;
}
