/* Unit tests for the MQTT codec (src/mqtt/). Every decoder input is placed so that it
 * ends at an unreadable page (unit_guard_copy): a read past the end faults. */
#include "unit.h"

#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "mqtt/mqtt.h"

/* ---- helpers ---- */

#define B(...) (const uint8_t[]){ __VA_ARGS__ }, sizeof((const uint8_t[]){ __VA_ARGS__ })
#define S(lit) ((struct mqtt_str){ (const uint8_t *)(lit), sizeof(lit) - 1 })
#define MQTT_NAME 0x00, 0x04, 'M', 'Q', 'T', 'T'
#define MQISDP_NAME 0x00, 0x06, 'M', 'Q', 'I', 's', 'd', 'p'

enum { M = MQTT_RC_MALFORMED, PE = MQTT_RC_PROTOCOL_ERROR, OK = MQTT_RC_SUCCESS };

union pkt {
	struct mqtt_connect connect;
	struct mqtt_connack connack;
	struct mqtt_publish publish;
	struct mqtt_ack ack;
	struct mqtt_subscribe subscribe;
	struct mqtt_suback suback;
	struct mqtt_unsubscribe unsubscribe;
	struct mqtt_unsuback unsuback;
	struct mqtt_disconnect disconnect;
	struct mqtt_auth auth;
};

/* A decoded packet whose input lives at the end of a guard page. */
struct dec {
	void *base;
	size_t maplen;
	uint8_t rc;
	struct mqtt_fixed fx;
	union pkt u;
};

static uint8_t decode_body(uint8_t version, uint8_t type, uint8_t flags, const uint8_t *body, size_t len, union pkt *u)
{
	switch (type) {
	case MQTT_CONNECT:
		return mqtt_decode_connect(flags, body, len, &u->connect);
	case MQTT_CONNACK:
		return mqtt_decode_connack(version, flags, body, len, &u->connack);
	case MQTT_PUBLISH:
		return mqtt_decode_publish(version, flags, body, len, &u->publish);
	case MQTT_PUBACK:
	case MQTT_PUBREC:
	case MQTT_PUBREL:
	case MQTT_PUBCOMP:
		return mqtt_decode_ack(version, type, flags, body, len, &u->ack);
	case MQTT_SUBSCRIBE:
		return mqtt_decode_subscribe(version, flags, body, len, &u->subscribe);
	case MQTT_SUBACK:
		return mqtt_decode_suback(version, flags, body, len, &u->suback);
	case MQTT_UNSUBSCRIBE:
		return mqtt_decode_unsubscribe(version, flags, body, len, &u->unsubscribe);
	case MQTT_UNSUBACK:
		return mqtt_decode_unsuback(version, flags, body, len, &u->unsuback);
	case MQTT_PINGREQ:
	case MQTT_PINGRESP:
		return mqtt_decode_empty(flags, len);
	case MQTT_DISCONNECT:
		return mqtt_decode_disconnect(version, flags, body, len, &u->disconnect);
	case MQTT_AUTH:
		return mqtt_decode_auth(version, flags, body, len, &u->auth);
	}
	return 0xFF;
}

/* Decode a body (guard-placed copy). Release with dec_free. */
static uint8_t dec_body(struct dec *d, uint8_t version, uint8_t byte0, const uint8_t *body, size_t len)
{
	const uint8_t *g = unit_guard_copy(body, len, &d->base, &d->maplen);
	d->rc = decode_body(version, byte0 >> 4, byte0 & 0x0F, g, len, &d->u);
	return d->rc;
}

/* Frame a buffer that must hold exactly one complete packet, then decode its body. */
static uint8_t dec_pkt(struct dec *d, uint8_t version, const uint8_t *pkt, size_t n)
{
	uint8_t rc = 0xEE;
	memset(d, 0, sizeof *d);
	int r = mqtt_frame(pkt, n, UINT32_MAX, &d->fx, &rc);
	CHECK_EQ_INT(r, MQTT_PARSE_OK);
	if (r != MQTT_PARSE_OK)
		return 0xFE;
	CHECK_EQ_INT(d->fx.header_len + d->fx.remaining, n);
	CHECK_EQ_INT(d->fx.type, pkt[0] >> 4);
	CHECK_EQ_INT(d->fx.flags, pkt[0] & 0x0F);
	return dec_body(d, version, pkt[0], pkt + d->fx.header_len, d->fx.remaining);
}

static void dec_free(struct dec *d)
{
	if (d->base)
		unit_guard_free(d->base, d->maplen);
	d->base = NULL;
}

/* Reason code for a body given as bytes. */
static uint8_t rcb(uint8_t version, uint8_t byte0, const uint8_t *body, size_t len)
{
	struct dec d;
	memset(&d, 0, sizeof d);
	uint8_t rc = dec_body(&d, version, byte0, body, len);
	dec_free(&d);
	return rc;
}
#define RCB(ver, byte0, ...) rcb((ver), (byte0), B(__VA_ARGS__))

/* Reason code for a complete packet. */
static uint8_t rcp(uint8_t version, const uint8_t *pkt, size_t n)
{
	struct dec d;
	uint8_t rc = dec_pkt(&d, version, pkt, n);
	dec_free(&d);
	return rc;
}

static bool str_eq(struct mqtt_str a, struct mqtt_str b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}
/* s holds exactly the bytes of a string literal (which may contain NULs). */
#define str_is(s, lit) str_eq((s), S(lit))

static bool buf_is(const struct buf *b, const uint8_t *p, size_t n)
{
	return b->len == n && memcmp(b->data, p, n) == 0;
}
#define BUF_IS(b, ...) buf_is((b), B(__VA_ARGS__))

static void b_u8(struct buf *b, uint8_t v)
{
	buf_append(b, &v, 1);
}

static void b_u16(struct buf *b, uint16_t v)
{
	b_u8(b, (uint8_t)(v >> 8));
	b_u8(b, (uint8_t)v);
}

static void b_str(struct buf *b, const char *s)
{
	b_u16(b, (uint16_t)strlen(s));
	buf_append(b, s, strlen(s));
}

static void b_varint(struct buf *b, uint32_t v)
{
	uint8_t tmp[4];
	buf_append(b, tmp, (size_t)(mqtt_varint_put(tmp, v) - tmp));
}

static void b_props(struct buf *b, const uint8_t *props, size_t n)
{
	b_varint(b, (uint32_t)n);
	buf_append(b, props, n);
}

/* ---- spec vectors: complete packets ---- */

struct vec {
	const char *name;
	uint8_t version;
	const uint8_t *pkt;
	size_t n;
	/* Expected result of decoding the first k bytes of the body (k < body length):
	 * MALFORMED unless k is listed in ok[] (-1 terminated), pe[] (-1 terminated) or
	 * k >= ok_from (the payload of a PUBLISH; 0 = none). */
	int ok[4];
	int pe[2];
	int ok_from;
};

static const struct vec vecs[] = {
	{ "v311 CONNECT", 4, B(0x10, 0x0F, MQTT_NAME, 0x04, 0x02, 0x00, 0x3C, 0x00, 0x03, 'a', 'b', 'c'), { -1 }, { -1 }, 0 },
	{ "v31 CONNECT", 3, B(0x10, 0x11, MQISDP_NAME, 0x03, 0x02, 0x00, 0x3C, 0x00, 0x03, 'a', 'b', 'c'), { -1 }, { -1 }, 0 },
	{ "v311 CONNECT full", 4,
	  B(0x10, 0x1F, MQTT_NAME, 0x04, 0xEE, 0x00, 0x0A, 0x00, 0x02, 'c', '1', 0x00, 0x03, 'w', '/', 't', 0x00, 0x03,
	    'b', 'y', 'e', 0x00, 0x01, 'u', 0x00, 0x02, 0x01, 0x02),
	  { -1 }, { -1 }, 0 },
	{ "v5 CONNECT full", 5,
	  B(0x10, 0x37, MQTT_NAME, 0x05, 0xEE, 0x00, 0x0A, 0x0F, 0x11, 0x00, 0x00, 0x00, 0x78, 0x21, 0x00, 0x0A, 0x26,
	    0x00, 0x01, 'k', 0x00, 0x01, 'v', 0x00, 0x02, 'c', '1', 0x07, 0x01, 0x01, 0x18, 0x00, 0x00, 0x00, 0x05,
	    0x00, 0x03, 'w', '/', 't', 0x00, 0x03, 'b', 'y', 'e', 0x00, 0x01, 'u', 0x00, 0x02, 0x01, 0x02),
	  { -1 }, { -1 }, 0 },
	{ "v5 CONNECT min", 5, B(0x10, 0x10, MQTT_NAME, 0x05, 0x02, 0x00, 0x3C, 0x00, 0x00, 0x03, 'a', 'b', 'c'), { -1 }, { -1 }, 0 },
	{ "v311 CONNACK", 4, B(0x20, 0x02, 0x01, 0x00), { -1 }, { -1 }, 0 },
	{ "v31 CONNACK", 3, B(0x20, 0x02, 0x00, 0x05), { -1 }, { -1 }, 0 },
	{ "v5 CONNACK", 5,
	  B(0x20, 0x0E, 0x00, 0x00, 0x0B, 0x12, 0x00, 0x03, 'a', 'b', 'c', 0x22, 0x00, 0x0A, 0x24, 0x01),
	  { -1 }, { -1 }, 0 },
	{ "v5 CONNACK fail", 5, B(0x20, 0x03, 0x00, 0x87, 0x00), { -1 }, { -1 }, 0 },
	{ "v311 PUBLISH q0", 4, B(0x30, 0x07, 0x00, 0x03, 'a', '/', 'b', 'h', 'i'), { -1 }, { -1 }, 5 },
	{ "v311 PUBLISH q1", 4, B(0x32, 0x09, 0x00, 0x03, 'a', '/', 'b', 0x00, 0x0A, 'h', 'i'), { -1 }, { -1 }, 7 },
	{ "v311 PUBLISH q2 dup retain", 4, B(0x3D, 0x07, 0x00, 0x03, 'a', '/', 'b', 0x12, 0x34), { -1 }, { -1 }, 7 },
	{ "v31 PUBLISH q1", 3, B(0x32, 0x09, 0x00, 0x03, 'a', '/', 'b', 0x00, 0x0A, 'h', 'i'), { -1 }, { -1 }, 7 },
	{ "v5 PUBLISH props", 5,
	  B(0x34, 0x28, 0x00, 0x03, 'a', '/', 'b', 0x00, 0x0B, 0x1F, 0x02, 0x00, 0x00, 0x00, 0x3C, 0x03, 0x00, 0x04,
	    't', 'e', 'x', 't', 0x23, 0x00, 0x01, 0x26, 0x00, 0x01, 'x', 0x00, 0x01, 'y', 0x09, 0x00, 0x02, 0xCA, 0xFE,
	    0x08, 0x00, 0x01, 'r', 'p'),
	  { -1 }, { -1 }, 39 },
	{ "v5 PUBLISH alias", 5, B(0x30, 0x07, 0x00, 0x00, 0x03, 0x23, 0x00, 0x05, 'x'), { -1 }, { -1 }, 6 },
	{ "v5 PUBLISH q0 min", 5, B(0x30, 0x06, 0x00, 0x03, 'a', '/', 'b', 0x00), { -1 }, { -1 }, 6 },
	{ "v311 PUBACK", 4, B(0x40, 0x02, 0x00, 0x0A), { -1 }, { -1 }, 0 },
	{ "v311 PUBREC", 4, B(0x50, 0x02, 0x00, 0x0A), { -1 }, { -1 }, 0 },
	{ "v311 PUBREL", 4, B(0x62, 0x02, 0x00, 0x0A), { -1 }, { -1 }, 0 },
	{ "v311 PUBCOMP", 4, B(0x70, 0x02, 0x00, 0x0A), { -1 }, { -1 }, 0 },
	{ "v31 PUBREL dup", 3, B(0x6A, 0x02, 0x00, 0x0A), { -1 }, { -1 }, 0 },
	{ "v5 PUBACK short", 5, B(0x40, 0x02, 0x00, 0x0A), { -1 }, { -1 }, 0 },
	{ "v5 PUBACK rc", 5, B(0x40, 0x03, 0x00, 0x0A, 0x10), { 2, -1 }, { -1 }, 0 },
	{ "v5 PUBREC props", 5, B(0x50, 0x09, 0x00, 0x0A, 0x87, 0x05, 0x1F, 0x00, 0x02, 'n', 'o'), { 2, 3, -1 }, { -1 }, 0 },
	{ "v5 PUBREL rc", 5, B(0x62, 0x03, 0x00, 0x0A, 0x92), { 2, -1 }, { -1 }, 0 },
	{ "v5 PUBCOMP empty props", 5, B(0x70, 0x04, 0x00, 0x0A, 0x00, 0x00), { 2, 3, -1 }, { -1 }, 0 },
	{ "v311 SUBSCRIBE", 4, B(0x82, 0x0C, 0x00, 0x01, 0x00, 0x03, 'a', '/', 'b', 0x01, 0x00, 0x01, '#', 0x02), { 8, -1 }, { 2, -1 }, 0 },
	{ "v31 SUBSCRIBE dup", 3, B(0x8A, 0x0C, 0x00, 0x01, 0x00, 0x03, 'a', '/', 'b', 0x01, 0x00, 0x01, '#', 0x02), { 8, -1 }, { 2, -1 }, 0 },
	{ "v5 SUBSCRIBE", 5,
	  B(0x82, 0x17, 0x00, 0x01, 0x0A, 0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v', 0x0B, 0x81, 0x01, 0x00, 0x03, 'a', '/',
	    'b', 0x2D, 0x00, 0x01, '#', 0x00),
	  { 19, -1 }, { 13, -1 }, 0 },
	{ "v311 SUBACK", 4, B(0x90, 0x04, 0x00, 0x01, 0x01, 0x80), { 3, -1 }, { 2, -1 }, 0 },
	{ "v5 SUBACK", 5, B(0x90, 0x05, 0x00, 0x01, 0x00, 0x02, 0x8F), { 4, -1 }, { 3, -1 }, 0 },
	{ "v311 UNSUBSCRIBE", 4, B(0xA2, 0x0A, 0x00, 0x02, 0x00, 0x03, 'a', '/', 'b', 0x00, 0x01, '#'), { 7, -1 }, { 2, -1 }, 0 },
	{ "v5 UNSUBSCRIBE", 5, B(0xA2, 0x08, 0x00, 0x02, 0x00, 0x00, 0x03, 'a', '/', 'b'), { -1 }, { 3, -1 }, 0 },
	{ "v311 UNSUBACK", 4, B(0xB0, 0x02, 0x00, 0x02), { -1 }, { -1 }, 0 },
	{ "v5 UNSUBACK", 5, B(0xB0, 0x04, 0x00, 0x02, 0x00, 0x11), { -1 }, { 3, -1 }, 0 },
	{ "PINGREQ", 4, B(0xC0, 0x00), { -1 }, { -1 }, 0 },
	{ "PINGRESP", 5, B(0xD0, 0x00), { -1 }, { -1 }, 0 },
	{ "v311 DISCONNECT", 4, B(0xE0, 0x00), { -1 }, { -1 }, 0 },
	{ "v5 DISCONNECT short", 5, B(0xE0, 0x00), { -1 }, { -1 }, 0 },
	{ "v5 DISCONNECT rc", 5, B(0xE0, 0x01, 0x04), { 0, -1 }, { -1 }, 0 },
	{ "v5 DISCONNECT props", 5, B(0xE0, 0x0B, 0x8E, 0x09, 0x11, 0x00, 0x00, 0x00, 0x00, 0x1F, 0x00, 0x01, 'x'), { 0, 1, -1 }, { -1 }, 0 },
	{ "v5 AUTH short", 5, B(0xF0, 0x00), { -1 }, { -1 }, 0 },
	{ "v5 AUTH", 5,
	  B(0xF0, 0x0F, 0x18, 0x0D, 0x15, 0x00, 0x05, 'S', 'C', 'R', 'A', 'M', 0x16, 0x00, 0x02, 0x01, 0x02),
	  { 0, 1, -1 }, { -1 }, 0 },
};
#define NVECS (sizeof vecs / sizeof vecs[0])

static const struct vec *vec_named(const char *name)
{
	for (size_t i = 0; i < NVECS; i++)
		if (strcmp(vecs[i].name, name) == 0)
			return &vecs[i];
	abort();
}
#define VP(name) vec_named(name)->pkt, vec_named(name)->n

static bool listed(const int *l, int k)
{
	for (; *l >= 0; l++)
		if (*l == k)
			return true;
	return false;
}

static uint8_t expected_prefix_rc(const struct vec *v, int k)
{
	if (listed(v->ok, k) || (v->ok_from && k >= v->ok_from))
		return OK;
	if (listed(v->pe, k))
		return PE;
	return M;
}

TEST(vectors_decode)
{
	for (size_t i = 0; i < NVECS; i++) {
		uint8_t rc = rcp(vecs[i].version, vecs[i].pkt, vecs[i].n);
		if (rc != OK)
			fprintf(stderr, "vector %s: rc 0x%02x\n", vecs[i].name, rc);
		CHECK_EQ_INT(rc, OK);
	}
}

TEST(vectors_prefixes)
{
	for (size_t i = 0; i < NVECS; i++) {
		const struct vec *v = &vecs[i];
		struct mqtt_fixed fx;
		uint8_t rc;
		/* Every proper prefix of the packet: the framer wants more. */
		for (size_t k = 0; k < v->n; k++) {
			void *base;
			size_t maplen;
			const uint8_t *g = unit_guard_copy(v->pkt, k, &base, &maplen);
			int r = mqtt_frame(g, k, UINT32_MAX, &fx, &rc);
			if (r != MQTT_PARSE_NEED_MORE)
				fprintf(stderr, "vector %s: frame prefix %zu -> %d\n", v->name, k, r);
			CHECK_EQ_INT(r, MQTT_PARSE_NEED_MORE);
			unit_guard_free(base, maplen);
		}
		/* The whole packet, followed by the start of another: exactly this packet. */
		uint8_t twice[128];
		CHECK(v->n * 2 <= sizeof twice);
		memcpy(twice, v->pkt, v->n);
		memcpy(twice + v->n, v->pkt, v->n);
		CHECK_EQ_INT(mqtt_frame(twice, v->n * 2, UINT32_MAX, &fx, &rc), MQTT_PARSE_OK);
		CHECK_EQ_INT(fx.header_len + fx.remaining, v->n);
		CHECK_EQ_INT(mqtt_frame(twice, v->n + 1, UINT32_MAX, &fx, &rc), MQTT_PARSE_OK);
		/* Every truncated body: MALFORMED unless the prefix is itself a valid packet. */
		size_t hl = fx.header_len;
		for (size_t k = 0; k < fx.remaining; k++) {
			uint8_t want = expected_prefix_rc(v, (int)k);
			uint8_t got = rcb(v->version, v->pkt[0], v->pkt + hl, k);
			if (got != want)
				fprintf(stderr, "vector %s: body prefix %zu -> 0x%02x, want 0x%02x\n", v->name, k, got, want);
			CHECK_EQ_INT(got, want);
		}
	}
}

TEST(vectors_fields)
{
	struct dec d;

	CHECK_EQ_INT(dec_pkt(&d, 4, VP("v311 CONNECT")), OK);
	CHECK_EQ_INT(d.u.connect.version, MQTT_V311);
	CHECK(d.u.connect.clean_start);
	CHECK_EQ_INT(d.u.connect.keepalive, 60);
	CHECK(str_is(d.u.connect.client_id, "abc"));
	CHECK(!d.u.connect.will && !d.u.connect.has_username && !d.u.connect.has_password);
	dec_free(&d);

	CHECK_EQ_INT(dec_pkt(&d, 3, VP("v31 CONNECT")), OK);
	CHECK_EQ_INT(d.u.connect.version, MQTT_V31);
	CHECK(str_is(d.u.connect.client_id, "abc"));
	dec_free(&d);

	CHECK_EQ_INT(dec_pkt(&d, 4, VP("v311 CONNECT full")), OK);
	{
		struct mqtt_connect *c = &d.u.connect;
		CHECK(c->will && c->will_retain && c->will_qos == 1 && c->has_username && c->has_password);
		CHECK(str_is(c->client_id, "c1") && str_is(c->will_topic, "w/t") && str_is(c->will_payload, "bye"));
		CHECK(str_is(c->username, "u") && str_is(c->password, "\x01\x02"));
		CHECK_EQ_INT(c->keepalive, 10);
	}
	dec_free(&d);

	CHECK_EQ_INT(dec_pkt(&d, 5, VP("v5 CONNECT full")), OK);
	{
		struct mqtt_connect *c = &d.u.connect;
		CHECK_EQ_INT(c->version, MQTT_V5);
		CHECK_EQ_INT(c->props.present, MQTT_P_SESSION_EXPIRY | MQTT_P_RECEIVE_MAXIMUM);
		CHECK_EQ_INT(c->props.session_expiry, 120);
		CHECK_EQ_INT(c->props.receive_maximum, 10);
		CHECK_EQ_INT(c->props.user_prop_count, 1);
		CHECK_EQ_INT(c->props.user_props.len, 7);
		CHECK_EQ_INT(c->will_props.present, MQTT_P_PAYLOAD_FORMAT | MQTT_P_WILL_DELAY);
		CHECK_EQ_INT(c->will_props.payload_format, 1);
		CHECK_EQ_INT(c->will_props.will_delay, 5);
		CHECK(str_is(c->client_id, "c1") && str_is(c->will_topic, "w/t") && str_is(c->will_payload, "bye"));
		CHECK(str_is(c->username, "u") && str_is(c->password, "\x01\x02"));
	}
	dec_free(&d);

	CHECK_EQ_INT(dec_pkt(&d, 4, VP("v311 CONNACK")), OK);
	CHECK(d.u.connack.session_present);
	CHECK_EQ_INT(d.u.connack.rc, 0);
	dec_free(&d);

	CHECK_EQ_INT(dec_pkt(&d, 3, VP("v31 CONNACK")), OK);
	CHECK(!d.u.connack.session_present);
	CHECK_EQ_INT(d.u.connack.rc, MQTT_V3_NOT_AUTHORIZED);
	dec_free(&d);

	CHECK_EQ_INT(dec_pkt(&d, 5, VP("v5 CONNACK")), OK);
	{
		struct mqtt_props *p = &d.u.connack.props;
		CHECK_EQ_INT(p->present, MQTT_P_ASSIGNED_CLIENT_ID | MQTT_P_TOPIC_ALIAS_MAXIMUM | MQTT_P_MAXIMUM_QOS);
		CHECK(str_is(p->assigned_client_id, "abc"));
		CHECK_EQ_INT(p->topic_alias_maximum, 10);
		CHECK_EQ_INT(p->maximum_qos, 1);
	}
	dec_free(&d);

	CHECK_EQ_INT(dec_pkt(&d, 4, VP("v311 PUBLISH q1")), OK);
	CHECK_EQ_INT(d.u.publish.qos, 1);
	CHECK(!d.u.publish.dup && !d.u.publish.retain);
	CHECK(str_is(d.u.publish.topic, "a/b"));
	CHECK_EQ_INT(d.u.publish.packet_id, 10);
	CHECK(str_is(d.u.publish.payload, "hi"));
	dec_free(&d);

	CHECK_EQ_INT(dec_pkt(&d, 4, VP("v311 PUBLISH q2 dup retain")), OK);
	CHECK_EQ_INT(d.u.publish.qos, 2);
	CHECK(d.u.publish.dup && d.u.publish.retain);
	CHECK_EQ_INT(d.u.publish.packet_id, 0x1234);
	CHECK_EQ_INT(d.u.publish.payload.len, 0);
	dec_free(&d);

	CHECK_EQ_INT(dec_pkt(&d, 5, VP("v5 PUBLISH props")), OK);
	{
		struct mqtt_publish *m = &d.u.publish;
		CHECK_EQ_INT(m->qos, 2);
		CHECK_EQ_INT(m->packet_id, 11);
		CHECK_EQ_INT(m->props.present, MQTT_P_MESSAGE_EXPIRY | MQTT_P_CONTENT_TYPE | MQTT_P_TOPIC_ALIAS |
						       MQTT_P_CORRELATION_DATA | MQTT_P_RESPONSE_TOPIC);
		CHECK_EQ_INT(m->props.message_expiry, 60);
		CHECK(str_is(m->props.content_type, "text"));
		CHECK_EQ_INT(m->props.topic_alias, 1);
		CHECK(str_is(m->props.correlation_data, "\xCA\xFE"));
		CHECK(str_is(m->props.response_topic, "r"));
		CHECK_EQ_INT(m->props.user_prop_count, 1);
		CHECK(str_is(m->payload, "p"));
	}
	dec_free(&d);

	CHECK_EQ_INT(dec_pkt(&d, 5, VP("v5 PUBLISH alias")), OK);
	CHECK_EQ_INT(d.u.publish.topic.len, 0);
	CHECK_EQ_INT(d.u.publish.props.topic_alias, 5);
	CHECK(str_is(d.u.publish.payload, "x"));
	dec_free(&d);

	CHECK_EQ_INT(dec_pkt(&d, 5, VP("v5 PUBACK rc")), OK);
	CHECK_EQ_INT(d.u.ack.packet_id, 10);
	CHECK_EQ_INT(d.u.ack.rc, MQTT_RC_NO_MATCHING_SUBSCRIBERS);
	dec_free(&d);

	CHECK_EQ_INT(dec_pkt(&d, 5, VP("v5 PUBREC props")), OK);
	CHECK_EQ_INT(d.u.ack.rc, MQTT_RC_NOT_AUTHORIZED);
	CHECK(str_is(d.u.ack.props.reason_string, "no"));
	dec_free(&d);

	CHECK_EQ_INT(dec_pkt(&d, 4, VP("v311 SUBSCRIBE")), OK);
	{
		struct mqtt_subscribe *s = &d.u.subscribe;
		struct mqtt_str f;
		uint8_t o;
		size_t off = 0;
		CHECK_EQ_INT(s->packet_id, 1);
		CHECK_EQ_INT(s->count, 2);
		CHECK(mqtt_subscribe_next(s, &off, &f, &o) && str_is(f, "a/b") && o == 1);
		CHECK(mqtt_subscribe_next(s, &off, &f, &o) && str_is(f, "#") && o == 2);
		CHECK(!mqtt_subscribe_next(s, &off, &f, &o));
	}
	dec_free(&d);

	CHECK_EQ_INT(dec_pkt(&d, 5, VP("v5 SUBSCRIBE")), OK);
	{
		struct mqtt_subscribe *s = &d.u.subscribe;
		struct mqtt_str f;
		uint8_t o;
		size_t off = 0;
		CHECK_EQ_INT(s->count, 2);
		CHECK(s->props.present & MQTT_P_SUBSCRIPTION_ID);
		CHECK_EQ_INT(s->props.n_sub_ids, 1);
		CHECK_EQ_INT(s->props.sub_ids[0], 129);
		CHECK_EQ_INT(s->props.user_prop_count, 1);
		CHECK(mqtt_subscribe_next(s, &off, &f, &o) && str_is(f, "a/b") && o == 0x2D);
		CHECK_EQ_INT(o & MQTT_SUBOPT_QOS_MASK, 1);
		CHECK(o & MQTT_SUBOPT_NO_LOCAL);
		CHECK(o & MQTT_SUBOPT_RETAIN_AS_PUBLISHED);
		CHECK_EQ_INT((o & MQTT_SUBOPT_RETAIN_HANDLING_MASK) >> MQTT_SUBOPT_RETAIN_HANDLING_SHIFT, 2);
		CHECK(mqtt_subscribe_next(s, &off, &f, &o) && str_is(f, "#") && o == 0);
		CHECK(!mqtt_subscribe_next(s, &off, &f, &o));
	}
	dec_free(&d);

	CHECK_EQ_INT(dec_pkt(&d, 5, VP("v5 SUBACK")), OK);
	CHECK(str_is(d.u.suback.codes, "\x02\x8F"));
	dec_free(&d);

	CHECK_EQ_INT(dec_pkt(&d, 4, VP("v311 UNSUBSCRIBE")), OK);
	{
		struct mqtt_str f;
		size_t off = 0;
		CHECK_EQ_INT(d.u.unsubscribe.count, 2);
		CHECK(mqtt_unsubscribe_next(&d.u.unsubscribe, &off, &f) && str_is(f, "a/b"));
		CHECK(mqtt_unsubscribe_next(&d.u.unsubscribe, &off, &f) && str_is(f, "#"));
		CHECK(!mqtt_unsubscribe_next(&d.u.unsubscribe, &off, &f));
	}
	dec_free(&d);

	CHECK_EQ_INT(dec_pkt(&d, 5, VP("v5 UNSUBACK")), OK);
	CHECK(str_is(d.u.unsuback.codes, "\x11"));
	dec_free(&d);

	CHECK_EQ_INT(dec_pkt(&d, 5, VP("v5 DISCONNECT rc")), OK);
	CHECK_EQ_INT(d.u.disconnect.rc, MQTT_RC_DISCONNECT_WITH_WILL);
	CHECK_EQ_INT(d.u.disconnect.props.present, 0);
	dec_free(&d);

	CHECK_EQ_INT(dec_pkt(&d, 5, VP("v5 DISCONNECT props")), OK);
	CHECK_EQ_INT(d.u.disconnect.rc, MQTT_RC_SESSION_TAKEN_OVER);
	CHECK(str_is(d.u.disconnect.props.reason_string, "x"));
	CHECK(d.u.disconnect.props.present & MQTT_P_SESSION_EXPIRY);
	dec_free(&d);

	CHECK_EQ_INT(dec_pkt(&d, 5, VP("v5 AUTH")), OK);
	CHECK_EQ_INT(d.u.auth.rc, MQTT_RC_CONTINUE_AUTHENTICATION);
	CHECK(str_is(d.u.auth.props.auth_method, "SCRAM"));
	CHECK(str_is(d.u.auth.props.auth_data, "\x01\x02"));
	dec_free(&d);
}

/* ---- framing ---- */

static int frame_g(const uint8_t *p, size_t n, uint32_t max, struct mqtt_fixed *fx, uint8_t *rc)
{
	void *base;
	size_t maplen;
	const uint8_t *g = unit_guard_copy(p, n, &base, &maplen);
	*rc = 0xEE;
	int r = mqtt_frame(g, n, max, fx, rc);
	unit_guard_free(base, maplen);
	return r;
}
#define FRAME(max, ...) frame_g(B(__VA_ARGS__), (max), &fx, &rc)

TEST(frame_errors)
{
	struct mqtt_fixed fx;
	uint8_t rc;

	CHECK_EQ_INT(frame_g(NULL, 0, UINT32_MAX, &fx, &rc), MQTT_PARSE_NEED_MORE);
	CHECK_EQ_INT(FRAME(UINT32_MAX, 0x30), MQTT_PARSE_NEED_MORE);
	/* packet type 0 is reserved */
	CHECK_EQ_INT(FRAME(UINT32_MAX, 0x00), MQTT_PARSE_ERROR);
	CHECK_EQ_INT(rc, M);
	CHECK_EQ_INT(FRAME(UINT32_MAX, 0x0F, 0x00), MQTT_PARSE_ERROR);
	CHECK_EQ_INT(rc, M);
	/* a Remaining Length cut short wants more */
	CHECK_EQ_INT(FRAME(UINT32_MAX, 0x30, 0x80), MQTT_PARSE_NEED_MORE);
	CHECK_EQ_INT(FRAME(UINT32_MAX, 0x30, 0xFF, 0xFF), MQTT_PARSE_NEED_MORE);
	CHECK_EQ_INT(FRAME(UINT32_MAX, 0x30, 0xFF, 0xFF, 0xFF), MQTT_PARSE_NEED_MORE);
	/* five-byte varints are malformed, even before the fifth byte arrives */
	CHECK_EQ_INT(FRAME(UINT32_MAX, 0x30, 0x80, 0x80, 0x80, 0x80), MQTT_PARSE_ERROR);
	CHECK_EQ_INT(rc, M);
	CHECK_EQ_INT(FRAME(UINT32_MAX, 0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F), MQTT_PARSE_ERROR);
	CHECK_EQ_INT(rc, M);
	CHECK_EQ_INT(FRAME(UINT32_MAX, 0x30, 0x80, 0x80, 0x80, 0x80, 0x01), MQTT_PARSE_ERROR);
	CHECK_EQ_INT(rc, M);
	/* overlong (non-minimal) encodings */
	CHECK_EQ_INT(FRAME(UINT32_MAX, 0x30, 0x80, 0x00), MQTT_PARSE_ERROR);
	CHECK_EQ_INT(rc, M);
	CHECK_EQ_INT(FRAME(UINT32_MAX, 0x30, 0x81, 0x00, 0x00), MQTT_PARSE_ERROR);
	CHECK_EQ_INT(rc, M);
	CHECK_EQ_INT(FRAME(UINT32_MAX, 0x30, 0xFF, 0x80, 0x00), MQTT_PARSE_ERROR);
	CHECK_EQ_INT(rc, M);
	CHECK_EQ_INT(FRAME(UINT32_MAX, 0x30, 0x80, 0x80, 0x80, 0x00), MQTT_PARSE_ERROR);
	CHECK_EQ_INT(rc, M);
	CHECK_EQ_INT(FRAME(UINT32_MAX, 0xC0, 0x80, 0x00), MQTT_PARSE_ERROR);
	CHECK_EQ_INT(rc, M);
	/* too large: reported from the header alone */
	CHECK_EQ_INT(FRAME(1000, 0x30, 0xFF, 0x7F), MQTT_PARSE_ERROR);
	CHECK_EQ_INT(rc, MQTT_RC_PACKET_TOO_LARGE);
	CHECK_EQ_INT(FRAME(UINT32_MAX, 0x30, 0xFF, 0x7F), MQTT_PARSE_NEED_MORE);
	CHECK_EQ_INT(FRAME(100, 0x30, 0xFF, 0xFF, 0xFF, 0x7F), MQTT_PARSE_ERROR);
	CHECK_EQ_INT(rc, MQTT_RC_PACKET_TOO_LARGE);
	/* the limit counts the whole packet: 2 + 5 = 7 */
	CHECK_EQ_INT(FRAME(7, 0x30, 0x05, 0x00, 0x01, 'a', 'x', 'y'), MQTT_PARSE_OK);
	CHECK_EQ_INT(fx.type, MQTT_PUBLISH);
	CHECK_EQ_INT(fx.header_len, 2);
	CHECK_EQ_INT(fx.remaining, 5);
	CHECK_EQ_INT(FRAME(6, 0x30, 0x05, 0x00, 0x01, 'a', 'x', 'y'), MQTT_PARSE_ERROR);
	CHECK_EQ_INT(rc, MQTT_RC_PACKET_TOO_LARGE);
	CHECK_EQ_INT(FRAME(6, 0x30, 0x05), MQTT_PARSE_ERROR);
	CHECK_EQ_INT(rc, MQTT_RC_PACKET_TOO_LARGE);
	CHECK_EQ_INT(FRAME(2, 0xC0, 0x00), MQTT_PARSE_OK);
	CHECK_EQ_INT(FRAME(1, 0xC0, 0x00), MQTT_PARSE_ERROR);
	CHECK_EQ_INT(rc, MQTT_RC_PACKET_TOO_LARGE);
	/* flags are reported, not judged */
	CHECK_EQ_INT(FRAME(UINT32_MAX, 0xCF, 0x00), MQTT_PARSE_OK);
	CHECK_EQ_INT(fx.flags, 0x0F);
	CHECK_EQ_INT(fx.type, MQTT_PINGREQ);
}

TEST(varint_boundaries)
{
	static const uint32_t vals[] = { 0, 1, 127, 128, 16383, 16384, 2097151, 2097152, 268435455 };
	static const size_t sizes[] = { 1, 1, 1, 2, 2, 3, 3, 4, 4 };
	for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
		uint8_t hdr[6] = { 0x30 };
		CHECK_EQ_INT(mqtt_varint_size(vals[i]), sizes[i]);
		uint8_t *end = mqtt_varint_put(hdr + 1, vals[i]);
		size_t hl = (size_t)(end - hdr);
		CHECK_EQ_INT(hl, 1 + sizes[i]);
		/* the framer reads back exactly this value: a limit one byte short trips */
		struct mqtt_fixed fx;
		uint8_t rc;
		uint64_t total = hl + vals[i];
		CHECK_EQ_INT(frame_g(hdr, hl, (uint32_t)(total - 1), &fx, &rc), MQTT_PARSE_ERROR);
		CHECK_EQ_INT(rc, MQTT_RC_PACKET_TOO_LARGE);
		CHECK_EQ_INT(fx.remaining, vals[i]);
		CHECK_EQ_INT(fx.header_len, hl);
		int r = frame_g(hdr, hl, (uint32_t)total, &fx, &rc);
		CHECK_EQ_INT(r, vals[i] == 0 ? MQTT_PARSE_OK : MQTT_PARSE_NEED_MORE);
	}
	uint8_t tmp[4];
	CHECK_EQ_INT(mqtt_varint_put(tmp, 321) - tmp, 2);
	CHECK(tmp[0] == 0xC1 && tmp[1] == 0x02);
	CHECK_EQ_INT(mqtt_varint_put(tmp, 268435455) - tmp, 4);
	CHECK(tmp[0] == 0xFF && tmp[1] == 0xFF && tmp[2] == 0xFF && tmp[3] == 0x7F);
}

TEST(frame_big_body)
{
	/* a 2-megabyte PUBLISH framed from a stream fed in pieces */
	size_t rem = 2097152;
	uint8_t *p = calloc(1, rem + 5);
	p[0] = 0x30;
	mqtt_varint_put(p + 1, (uint32_t)rem);
	p[5] = 0x00;
	p[6] = 0x01;
	p[7] = 'a';
	struct mqtt_fixed fx;
	uint8_t rc;
	CHECK_EQ_INT(mqtt_frame(p, 5, UINT32_MAX, &fx, &rc), MQTT_PARSE_NEED_MORE);
	CHECK_EQ_INT(mqtt_frame(p, rem + 4, UINT32_MAX, &fx, &rc), MQTT_PARSE_NEED_MORE);
	CHECK_EQ_INT(mqtt_frame(p, rem + 5, UINT32_MAX, &fx, &rc), MQTT_PARSE_OK);
	CHECK_EQ_INT(fx.header_len, 5);
	CHECK_EQ_INT(fx.remaining, rem);
	struct mqtt_publish m;
	CHECK_EQ_INT(mqtt_decode_publish(4, 0, p + 5, rem, &m), OK);
	CHECK_EQ_INT(m.payload.len, rem - 3);
	free(p);
}

/* ---- UTF-8 ---- */

static bool u8ok(const char *s, size_t n)
{
	void *base;
	size_t maplen;
	const uint8_t *g = unit_guard_copy(s, n, &base, &maplen);
	bool ok = mqtt_utf8_valid(g, n);
	unit_guard_free(base, maplen);
	return ok;
}
#define U8OK(lit) u8ok((lit), sizeof(lit) - 1)

TEST(utf8)
{
	CHECK(U8OK(""));
	CHECK(U8OK("abc/def"));
	CHECK(U8OK("\x01\x1F\x7F"));             /* control characters: SHOULD NOT, not MUST NOT */
	CHECK(U8OK("\xC2\x80"));                 /* U+0080 */
	CHECK(U8OK("\xDF\xBF"));                 /* U+07FF */
	CHECK(U8OK("\xE0\xA0\x80"));             /* U+0800 */
	CHECK(U8OK("\xED\x9F\xBF"));             /* U+D7FF */
	CHECK(U8OK("\xEE\x80\x80"));             /* U+E000 */
	CHECK(U8OK("\xEF\xBB\xBF"));             /* U+FEFF, kept as is */
	CHECK(U8OK("\xEF\xBF\xBF"));             /* U+FFFF, a non-character: allowed */
	CHECK(U8OK("\xF0\x90\x80\x80"));         /* U+10000 */
	CHECK(U8OK("\xF4\x8F\xBF\xBF"));         /* U+10FFFF */
	CHECK(U8OK("h\xC3\xA9llo w\xC3\xB6rld \xE2\x82\xAC \xF0\x9F\x98\x80"));

	CHECK(!U8OK("\x00"));                    /* U+0000 */
	CHECK(!U8OK("a\x00" "b"));
	CHECK(!U8OK("\xC0\x80"));                /* overlong U+0000 */
	CHECK(!U8OK("\xC1\xBF"));                /* overlong 2-byte */
	CHECK(!U8OK("\xE0\x80\x80"));            /* overlong 3-byte */
	CHECK(!U8OK("\xE0\x9F\xBF"));
	CHECK(!U8OK("\xF0\x80\x80\x80"));        /* overlong 4-byte */
	CHECK(!U8OK("\xF0\x8F\xBF\xBF"));
	CHECK(!U8OK("\xED\xA0\x80"));            /* U+D800 */
	CHECK(!U8OK("\xED\xBF\xBF"));            /* U+DFFF */
	CHECK(!U8OK("\xED\xB0\x80"));            /* U+DC00 */
	CHECK(!U8OK("\xF4\x90\x80\x80"));        /* U+110000 */
	CHECK(!U8OK("\xF5\x80\x80\x80"));
	CHECK(!U8OK("\xF8\x88\x80\x80\x80"));    /* 5-byte form */
	CHECK(!U8OK("\xFE"));
	CHECK(!U8OK("\xFF"));
	CHECK(!U8OK("\x80"));                    /* lone continuation bytes */
	CHECK(!U8OK("a\xBF"));
	CHECK(!U8OK("\xC2"));                    /* truncated sequences, at the guard page */
	CHECK(!U8OK("\xE0\xA0"));
	CHECK(!U8OK("\xF0\x90\x80"));
	CHECK(!U8OK("\xE1\x80"));
	CHECK(!U8OK("\xC2\x41"));                /* bad continuation bytes */
	CHECK(!U8OK("\xE1\x80\x41"));
	CHECK(!U8OK("\xE1\xC0\x80"));
	CHECK(!U8OK("\xF1\x80\x80\x41"));
	CHECK(!U8OK("\xF1\x80\xC0\x80"));
}

/* ---- CONNECT ---- */

TEST(connect_errors)
{
	struct dec d;

	/* unsupported protocol name / level pairs; version is still reported */
	CHECK_EQ_INT(dec_body(&d, 0, 0x10, B(MQTT_NAME, 0x03, 0x02, 0x00, 0x3C, 0x00, 0x01, 'c')),
		     MQTT_RC_UNSUPPORTED_VERSION);
	CHECK_EQ_INT(d.u.connect.version, 3);
	dec_free(&d);
	CHECK_EQ_INT(dec_body(&d, 0, 0x10, B(MQISDP_NAME, 0x04, 0x02, 0x00, 0x3C, 0x00, 0x01, 'c')),
		     MQTT_RC_UNSUPPORTED_VERSION);
	CHECK_EQ_INT(d.u.connect.version, 4);
	dec_free(&d);
	CHECK_EQ_INT(dec_body(&d, 0, 0x10, B(MQTT_NAME, 0x06, 0x02, 0x00, 0x3C, 0x00, 0x01, 'c')),
		     MQTT_RC_UNSUPPORTED_VERSION);
	CHECK_EQ_INT(d.u.connect.version, 6);
	dec_free(&d);
	CHECK_EQ_INT(dec_body(&d, 0, 0x10, B(MQTT_NAME, 0x00)), MQTT_RC_UNSUPPORTED_VERSION);
	CHECK_EQ_INT(d.u.connect.version, 0);
	dec_free(&d);
	CHECK_EQ_INT(RCB(0, 0x10, 0x00, 0x04, 'm', 'q', 't', 't', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x01, 'c'),
		     MQTT_RC_UNSUPPORTED_VERSION);
	CHECK_EQ_INT(RCB(0, 0x10, 0x00, 0x04, 'H', 'T', 'T', 'P', 0x04), MQTT_RC_UNSUPPORTED_VERSION);
	CHECK_EQ_INT(RCB(0, 0x10, 0x00, 0x00, 0x04), MQTT_RC_UNSUPPORTED_VERSION);
	/* name or level missing: malformed */
	CHECK_EQ_INT(RCB(0, 0x10, MQTT_NAME), M);
	CHECK_EQ_INT(RCB(0, 0x10, 0x00, 0x05, 'M', 'Q', 'T', 'T'), M);

	/* fixed-header flags must be 0; the version is known by then */
	CHECK_EQ_INT(dec_body(&d, 0, 0x12, B(MQTT_NAME, 0x04, 0x02, 0x00, 0x3C, 0x00, 0x01, 'c')), M);
	CHECK_EQ_INT(d.u.connect.version, 4);
	dec_free(&d);
	/* reserved connect flag bit 0 (3.1.1 and 5; unused in 3.1) */
	CHECK_EQ_INT(RCB(0, 0x10, MQTT_NAME, 0x04, 0x03, 0x00, 0x3C, 0x00, 0x01, 'c'), M);
	CHECK_EQ_INT(RCB(0, 0x10, MQTT_NAME, 0x05, 0x03, 0x00, 0x3C, 0x00, 0x00, 0x01, 'c'), M);
	CHECK_EQ_INT(RCB(0, 0x10, MQISDP_NAME, 0x03, 0x03, 0x00, 0x3C, 0x00, 0x01, 'c'), OK);
	/* will QoS 3 */
	CHECK_EQ_INT(RCB(0, 0x10, MQTT_NAME, 0x04, 0x1E, 0x00, 0x3C, 0x00, 0x01, 'c', 0x00, 0x01, 't', 0x00, 0x00), M);
	CHECK_EQ_INT(RCB(0, 0x10, MQTT_NAME, 0x04, 0x1A, 0x00, 0x3C, 0x00, 0x01, 'c'), M);
	/* will QoS / will retain without the will flag */
	CHECK_EQ_INT(RCB(0, 0x10, MQTT_NAME, 0x04, 0x0A, 0x00, 0x3C, 0x00, 0x01, 'c'), PE);
	CHECK_EQ_INT(RCB(0, 0x10, MQTT_NAME, 0x04, 0x12, 0x00, 0x3C, 0x00, 0x01, 'c'), PE);
	CHECK_EQ_INT(RCB(0, 0x10, MQTT_NAME, 0x04, 0x22, 0x00, 0x3C, 0x00, 0x01, 'c'), PE);
	CHECK_EQ_INT(RCB(0, 0x10, MQTT_NAME, 0x05, 0x22, 0x00, 0x3C, 0x00, 0x00, 0x01, 'c'), PE);
	/* ... but a truncated packet is malformed even so */
	CHECK_EQ_INT(RCB(0, 0x10, MQTT_NAME, 0x04, 0x22, 0x00, 0x3C, 0x00, 0x02, 'c'), M);
	/* password without user name: v3.1.1 and v3.1 protocol error, v5 fine */
	CHECK_EQ_INT(RCB(0, 0x10, MQTT_NAME, 0x04, 0x42, 0x00, 0x3C, 0x00, 0x01, 'c', 0x00, 0x01, 'p'), PE);
	CHECK_EQ_INT(RCB(0, 0x10, MQISDP_NAME, 0x03, 0x42, 0x00, 0x3C, 0x00, 0x01, 'c', 0x00, 0x01, 'p'), PE);
	CHECK_EQ_INT(dec_body(&d, 0, 0x10, B(MQTT_NAME, 0x05, 0x42, 0x00, 0x3C, 0x00, 0x00, 0x01, 'c', 0x00, 0x01, 'p')), OK);
	CHECK(d.u.connect.has_password && !d.u.connect.has_username && str_is(d.u.connect.password, "p"));
	dec_free(&d);
	/* fields the flags announce must be there; nothing may follow */
	CHECK_EQ_INT(RCB(0, 0x10, MQTT_NAME, 0x04, 0x06, 0x00, 0x3C, 0x00, 0x01, 'c'), M);
	CHECK_EQ_INT(RCB(0, 0x10, MQTT_NAME, 0x04, 0x06, 0x00, 0x3C, 0x00, 0x01, 'c', 0x00, 0x01, 't'), M);
	CHECK_EQ_INT(RCB(0, 0x10, MQTT_NAME, 0x04, 0x82, 0x00, 0x3C, 0x00, 0x01, 'c'), M);
	CHECK_EQ_INT(RCB(0, 0x10, MQTT_NAME, 0x04, 0xC2, 0x00, 0x3C, 0x00, 0x01, 'c', 0x00, 0x01, 'u'), M);
	CHECK_EQ_INT(RCB(0, 0x10, MQTT_NAME, 0x04, 0x02, 0x00, 0x3C, 0x00, 0x01, 'c', 0x00), M);
	CHECK_EQ_INT(RCB(0, 0x10, MQTT_NAME, 0x04, 0x02, 0x00, 0x3C), M);
	CHECK_EQ_INT(RCB(0, 0x10, MQTT_NAME, 0x05, 0x02, 0x00, 0x3C, 0x00, 0x01, 'c'), M); /* v5 needs props */
	CHECK_EQ_INT(RCB(0, 0x10, MQTT_NAME, 0x05, 0x02, 0x00, 0x3C, 0x05, 0x00, 0x01, 'c'), M);
	/* empty client id is the broker's business */
	CHECK_EQ_INT(RCB(0, 0x10, MQTT_NAME, 0x04, 0x02, 0x00, 0x3C, 0x00, 0x00), OK);
	/* UTF-8 in client id, will topic, user name; binary will payload and password are not checked */
	CHECK_EQ_INT(RCB(0, 0x10, MQTT_NAME, 0x04, 0x02, 0x00, 0x3C, 0x00, 0x01, 0x00), M);
	CHECK_EQ_INT(RCB(0, 0x10, MQTT_NAME, 0x04, 0x02, 0x00, 0x3C, 0x00, 0x02, 0xC0, 0x80), M);
	CHECK_EQ_INT(RCB(0, 0x10, MQTT_NAME, 0x04, 0x06, 0x00, 0x3C, 0x00, 0x01, 'c', 0x00, 0x03, 0xED, 0xA0, 0x80,
			 0x00, 0x00), M);
	CHECK_EQ_INT(RCB(0, 0x10, MQTT_NAME, 0x04, 0x82, 0x00, 0x3C, 0x00, 0x01, 'c', 0x00, 0x01, 0xFF), M);
	CHECK_EQ_INT(RCB(0, 0x10, MQTT_NAME, 0x04, 0xC6, 0x00, 0x3C, 0x00, 0x01, 'c', 0x00, 0x01, 't', 0x00, 0x02, 0xFF,
			 0x00, 0x00, 0x01, 'u', 0x00, 0x02, 0xC0, 0x80), OK);
	/* v5 will properties are separate from connect properties */
	CHECK_EQ_INT(RCB(0, 0x10, MQTT_NAME, 0x05, 0x06, 0x00, 0x3C, 0x00, 0x00, 0x01, 'c', 0x05, 0x18, 0x00, 0x00,
			 0x00, 0x01, 0x00, 0x01, 't', 0x00, 0x00), OK);
	CHECK_EQ_INT(RCB(0, 0x10, MQTT_NAME, 0x05, 0x06, 0x00, 0x3C, 0x05, 0x18, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01,
			 'c', 0x00, 0x00, 0x01, 't', 0x00, 0x00), M);
	CHECK_EQ_INT(RCB(0, 0x10, MQTT_NAME, 0x05, 0x06, 0x00, 0x3C, 0x00, 0x00, 0x01, 'c', 0x05, 0x11, 0x00, 0x00,
			 0x00, 0x01, 0x00, 0x01, 't', 0x00, 0x00), M);
}

/* ---- CONNACK ---- */

TEST(connack_errors)
{
	CHECK_EQ_INT(RCB(4, 0x21, 0x00, 0x00), M);                    /* flags */
	CHECK_EQ_INT(RCB(4, 0x20, 0x02, 0x00), M);                    /* reserved ack flag bits */
	CHECK_EQ_INT(RCB(5, 0x20, 0x80, 0x00, 0x00), M);
	CHECK_EQ_INT(RCB(3, 0x20, 0x02, 0x00), OK);                   /* 3.1: byte unused */
	CHECK_EQ_INT(RCB(4, 0x20, 0x00, 0x06), PE);                   /* v3 return code > 5 */
	CHECK_EQ_INT(RCB(3, 0x20, 0x00, 0x06), PE);
	CHECK_EQ_INT(RCB(4, 0x20, 0x01, 0x05), PE);                   /* session present on refusal */
	CHECK_EQ_INT(RCB(5, 0x20, 0x01, 0x87, 0x00), PE);
	CHECK_EQ_INT(RCB(5, 0x20, 0x01, 0x00, 0x00), OK);
	CHECK_EQ_INT(RCB(5, 0x20, 0x00, 0x01, 0x00), PE);             /* not a CONNACK reason code */
	CHECK_EQ_INT(RCB(5, 0x20, 0x00, 0x8E, 0x00), PE);
	CHECK_EQ_INT(RCB(5, 0x20, 0x00, 0x9F, 0x00), OK);
	CHECK_EQ_INT(RCB(4, 0x20, 0x00, 0x00, 0x00), M);              /* trailing */
	CHECK_EQ_INT(RCB(5, 0x20, 0x00, 0x00), M);                    /* v5 needs props */
	CHECK_EQ_INT(RCB(5, 0x20, 0x00, 0x00, 0x00, 0x00), M);
	CHECK_EQ_INT(RCB(4, 0x20, 0x00), M);
}

/* ---- PUBLISH ---- */

TEST(publish_errors)
{
	for (uint8_t v = 3; v <= 5; v++) {
		bool v5 = v == 5;
		/* QoS 3 */
		CHECK_EQ_INT(v5 ? RCB(v, 0x36, 0x00, 0x01, 't', 0x00, 0x01, 0x00) : RCB(v, 0x36, 0x00, 0x01, 't', 0x00, 0x01), M);
		CHECK_EQ_INT(v5 ? RCB(v, 0x37, 0x00, 0x01, 't', 0x00, 0x01, 0x00) : RCB(v, 0x37, 0x00, 0x01, 't', 0x00, 0x01), M);
		/* DUP with QoS 0 */
		CHECK_EQ_INT(v5 ? RCB(v, 0x38, 0x00, 0x01, 't', 0x00) : RCB(v, 0x38, 0x00, 0x01, 't'), M);
		CHECK_EQ_INT(v5 ? RCB(v, 0x3A, 0x00, 0x01, 't', 0x00, 0x01, 0x00) : RCB(v, 0x3A, 0x00, 0x01, 't', 0x00, 0x01), OK);
		/* packet id 0 with QoS > 0 */
		CHECK_EQ_INT(v5 ? RCB(v, 0x32, 0x00, 0x01, 't', 0x00, 0x00, 0x00) : RCB(v, 0x32, 0x00, 0x01, 't', 0x00, 0x00), PE);
		CHECK_EQ_INT(v5 ? RCB(v, 0x34, 0x00, 0x01, 't', 0x00, 0x00, 0x00) : RCB(v, 0x34, 0x00, 0x01, 't', 0x00, 0x00), PE);
		/* topic length beyond the body */
		CHECK_EQ_INT(RCB(v, 0x30, 0x00, 0x05, 'a', 'b'), M);
		CHECK_EQ_INT(RCB(v, 0x30, 0x00), M);
		CHECK_EQ_INT(rcb(v, 0x30, NULL, 0), M);
		CHECK_EQ_INT(RCB(v, 0x32, 0x00, 0x01, 't', 0x00), M);  /* packet id cut short */
		/* topic must be UTF-8 */
		CHECK_EQ_INT(v5 ? RCB(v, 0x30, 0x00, 0x01, 0x00, 0x00) : RCB(v, 0x30, 0x00, 0x01, 0x00), M);
		CHECK_EQ_INT(v5 ? RCB(v, 0x30, 0x00, 0x02, 0xC0, 0xAF, 0x00) : RCB(v, 0x30, 0x00, 0x02, 0xC0, 0xAF), M);
		/* empty topic without alias */
		CHECK_EQ_INT(v5 ? RCB(v, 0x30, 0x00, 0x00, 0x00, 'x') : RCB(v, 0x30, 0x00, 0x00, 'x'), PE);
		/* the payload is anything, including nothing */
		CHECK_EQ_INT(v5 ? RCB(v, 0x30, 0x00, 0x01, 't', 0x00, 0x00, 0xFF, 0xC0) : RCB(v, 0x30, 0x00, 0x01, 't', 0x00, 0xFF, 0xC0), OK);
	}
	/* v5 only */
	CHECK_EQ_INT(RCB(5, 0x30, 0x00, 0x01, 't', 0x02, 0x0B, 0x01), PE);           /* subscription id */
	CHECK_EQ_INT(RCB(5, 0x30, 0x00, 0x01, 't', 0x03, 0x23, 0x00, 0x00), PE);     /* topic alias 0 */
	CHECK_EQ_INT(RCB(5, 0x30, 0x00, 0x00, 0x03, 0x23, 0x00, 0x00), PE);
	CHECK_EQ_INT(RCB(5, 0x30, 0x00, 0x01, 't', 0x05, 0x23, 0x00, 0x01), M);      /* props beyond body */
	CHECK_EQ_INT(RCB(5, 0x30, 0x00, 0x01, 't'), M);                             /* props missing */
	/* in v3 the byte after the topic is payload */
	CHECK_EQ_INT(RCB(4, 0x30, 0x00, 0x01, 't', 0x02, 0x0B, 0x01), OK);
	/* v5 malformation after a protocol error wins */
	CHECK_EQ_INT(RCB(5, 0x32, 0x00, 0x01, 't', 0x00, 0x00, 0x02, 0x0B), M);
}

/* ---- PUBACK / PUBREC / PUBREL / PUBCOMP ---- */

TEST(ack_errors)
{
	static const uint8_t types[] = { MQTT_PUBACK, MQTT_PUBREC, MQTT_PUBREL, MQTT_PUBCOMP };
	for (size_t i = 0; i < 4; i++) {
		uint8_t t = types[i], f = t == MQTT_PUBREL ? 0x2 : 0x0, b0 = (uint8_t)(t << 4 | f);
		for (uint8_t v = 3; v <= 5; v++) {
			CHECK_EQ_INT(RCB(v, b0, 0x00, 0x01), OK);
			CHECK_EQ_INT(RCB(v, (uint8_t)(t << 4 | (f ^ 0x2)), 0x00, 0x01), M);  /* flags */
			CHECK_EQ_INT(RCB(v, (uint8_t)(b0 | 0x1), 0x00, 0x01), M);
			CHECK_EQ_INT(RCB(v, b0, 0x00), M);
			CHECK_EQ_INT(rcb(v, b0, NULL, 0), M);
			CHECK_EQ_INT(RCB(v, b0, 0x00, 0x00), PE);                          /* packet id 0 */
		}
		CHECK_EQ_INT(RCB(4, b0, 0x00, 0x01, 0x00), M);                             /* v3: exactly 2 */
		CHECK_EQ_INT(RCB(5, b0, 0x00, 0x01, 0x00), OK);
		CHECK_EQ_INT(RCB(5, b0, 0x00, 0x01, 0x80 + (t >= MQTT_PUBREL ? 0x12 : 0)), OK);
		CHECK_EQ_INT(RCB(5, b0, 0x00, 0x01, 0x01), PE);                            /* not an ack code */
		CHECK_EQ_INT(RCB(5, b0, 0x00, 0x01, 0x00, 0x00), OK);
		CHECK_EQ_INT(RCB(5, b0, 0x00, 0x01, 0x00, 0x00, 0x00), M);                 /* trailing */
		CHECK_EQ_INT(RCB(5, b0, 0x00, 0x01, 0x00, 0x02, 0x1F), M);                 /* props beyond */
		CHECK_EQ_INT(RCB(5, b0, 0x00, 0x01, 0x00, 0x07, 0x26, 0x00, 0x01, 'a', 0x00, 0x01, 'b'), OK);
		CHECK_EQ_INT(RCB(5, b0, 0x00, 0x01, 0x00, 0x02, 0x01, 0x01), M);           /* not allowed */
	}
	/* PUBACK/PUBREC codes vs PUBREL/PUBCOMP codes */
	CHECK_EQ_INT(RCB(5, 0x40, 0x00, 0x01, 0x10), OK);
	CHECK_EQ_INT(RCB(5, 0x40, 0x00, 0x01, 0x92), PE);
	CHECK_EQ_INT(RCB(5, 0x62, 0x00, 0x01, 0x10), PE);
	CHECK_EQ_INT(RCB(5, 0x70, 0x00, 0x01, 0x92), OK);
	CHECK_EQ_INT(RCB(5, 0x50, 0x00, 0x01, 0x99), OK);
	/* 3.1 PUBREL may carry DUP; not later versions */
	CHECK_EQ_INT(RCB(3, 0x6A, 0x00, 0x01), OK);
	CHECK_EQ_INT(RCB(4, 0x6A, 0x00, 0x01), M);
	CHECK_EQ_INT(RCB(5, 0x6A, 0x00, 0x01), M);
	/* the ack decoder rejects a non-ack type */
	struct mqtt_ack a;
	CHECK_EQ_INT(mqtt_decode_ack(4, MQTT_PUBLISH, 0, (const uint8_t *)"\x00\x01", 2, &a), M);
}

/* ---- SUBSCRIBE / SUBACK / UNSUBSCRIBE / UNSUBACK ---- */

TEST(subscribe_errors)
{
	/* flags must be 0x2 (3.1 also allows DUP) */
	CHECK_EQ_INT(RCB(4, 0x80, 0x00, 0x01, 0x00, 0x01, 't', 0x00), M);
	CHECK_EQ_INT(RCB(4, 0x83, 0x00, 0x01, 0x00, 0x01, 't', 0x00), M);
	CHECK_EQ_INT(RCB(4, 0x8A, 0x00, 0x01, 0x00, 0x01, 't', 0x00), M);
	CHECK_EQ_INT(RCB(5, 0x80, 0x00, 0x01, 0x00, 0x00, 0x01, 't', 0x00), M);
	CHECK_EQ_INT(RCB(3, 0x8A, 0x00, 0x01, 0x00, 0x01, 't', 0x00), OK);
	CHECK_EQ_INT(RCB(3, 0x80, 0x00, 0x01, 0x00, 0x01, 't', 0x00), M);
	/* no entries */
	CHECK_EQ_INT(RCB(4, 0x82, 0x00, 0x01), PE);
	CHECK_EQ_INT(RCB(5, 0x82, 0x00, 0x01, 0x00), PE);
	/* packet id 0 */
	CHECK_EQ_INT(RCB(4, 0x82, 0x00, 0x00, 0x00, 0x01, 't', 0x00), PE);
	CHECK_EQ_INT(RCB(5, 0x82, 0x00, 0x00, 0x00, 0x00, 0x01, 't', 0x00), PE);
	/* v3 options: only QoS bits, QoS 0..2 */
	CHECK_EQ_INT(RCB(4, 0x82, 0x00, 0x01, 0x00, 0x01, 't', 0x02), OK);
	CHECK_EQ_INT(RCB(4, 0x82, 0x00, 0x01, 0x00, 0x01, 't', 0x03), M);
	CHECK_EQ_INT(RCB(4, 0x82, 0x00, 0x01, 0x00, 0x01, 't', 0x04), M);
	CHECK_EQ_INT(RCB(4, 0x82, 0x00, 0x01, 0x00, 0x01, 't', 0x80), M);
	CHECK_EQ_INT(RCB(3, 0x82, 0x00, 0x01, 0x00, 0x01, 't', 0x10), M);
	/* v5 options */
	CHECK_EQ_INT(RCB(5, 0x82, 0x00, 0x01, 0x00, 0x00, 0x01, 't', 0x2E), OK);
	CHECK_EQ_INT(RCB(5, 0x82, 0x00, 0x01, 0x00, 0x00, 0x01, 't', 0x40), M);   /* reserved bit 6 */
	CHECK_EQ_INT(RCB(5, 0x82, 0x00, 0x01, 0x00, 0x00, 0x01, 't', 0x80), M);   /* reserved bit 7 */
	CHECK_EQ_INT(RCB(5, 0x82, 0x00, 0x01, 0x00, 0x00, 0x01, 't', 0x30), PE);  /* retain handling 3 */
	CHECK_EQ_INT(RCB(5, 0x82, 0x00, 0x01, 0x00, 0x00, 0x01, 't', 0x03), PE);  /* QoS 3 */
	CHECK_EQ_INT(RCB(5, 0x82, 0x00, 0x01, 0x00, 0x00, 0x09, '$', 's', 'h', 'a', 'r', 'e', '/', 'g', '/', 0x04), PE);
	CHECK_EQ_INT(RCB(5, 0x82, 0x00, 0x01, 0x00, 0x00, 0x09, '$', 's', 'h', 'a', 'r', 'e', '/', 'g', '/', 0x00), OK);
	CHECK_EQ_INT(RCB(5, 0x82, 0x00, 0x01, 0x00, 0x00, 0x06, '$', 's', 'h', 'a', 'r', 'e', 0x04), OK);
	/* a malformed later entry beats an earlier protocol error */
	CHECK_EQ_INT(RCB(5, 0x82, 0x00, 0x01, 0x00, 0x00, 0x01, 't', 0x30, 0x00, 0x01, 't', 0x40), M);
	/* entry lengths */
	CHECK_EQ_INT(RCB(4, 0x82, 0x00, 0x01, 0x00, 0x01, 't'), M);               /* options missing */
	CHECK_EQ_INT(RCB(4, 0x82, 0x00, 0x01, 0x00, 0x03, 't', 0x00), M);
	CHECK_EQ_INT(RCB(4, 0x82, 0x00, 0x01, 0x00, 0x01, 't', 0x00, 0x00), M);
	CHECK_EQ_INT(RCB(4, 0x82, 0x00), M);
	CHECK_EQ_INT(RCB(4, 0x82, 0x00, 0x01, 0x00, 0x01, 0xFF, 0x00), M);        /* UTF-8 */
	/* empty filter: the broker's topic check answers it */
	CHECK_EQ_INT(RCB(4, 0x82, 0x00, 0x01, 0x00, 0x00, 0x00), OK);
	/* subscription identifier: at most one, not 0 */
	CHECK_EQ_INT(RCB(5, 0x82, 0x00, 0x01, 0x04, 0x0B, 0x01, 0x0B, 0x02, 0x00, 0x01, 't', 0x00), PE);
	CHECK_EQ_INT(RCB(5, 0x82, 0x00, 0x01, 0x02, 0x0B, 0x00, 0x00, 0x01, 't', 0x00), PE);
	CHECK_EQ_INT(RCB(5, 0x82, 0x00, 0x01, 0x05, 0x0B, 0xFF, 0xFF, 0xFF, 0x7F, 0x00, 0x01, 't', 0x00), OK);
	CHECK_EQ_INT(RCB(5, 0x82, 0x00, 0x01, 0x03, 0x0B, 0x80, 0x00, 0x00, 0x01, 't', 0x00), M);  /* overlong */
	CHECK_EQ_INT(RCB(5, 0x82, 0x00, 0x01, 0x06, 0x0B, 0x80, 0x80, 0x80, 0x80, 0x01, 0x00, 0x01, 't', 0x00), M);
	CHECK_EQ_INT(RCB(5, 0x82, 0x00, 0x01, 0x02, 0x0B, 0x80), M);
}

TEST(unsubscribe_errors)
{
	CHECK_EQ_INT(RCB(4, 0xA0, 0x00, 0x01, 0x00, 0x01, 't'), M);
	CHECK_EQ_INT(RCB(4, 0xA3, 0x00, 0x01, 0x00, 0x01, 't'), M);
	CHECK_EQ_INT(RCB(3, 0xAA, 0x00, 0x01, 0x00, 0x01, 't'), OK);
	CHECK_EQ_INT(RCB(4, 0xAA, 0x00, 0x01, 0x00, 0x01, 't'), M);
	CHECK_EQ_INT(RCB(4, 0xA2, 0x00, 0x01), PE);
	CHECK_EQ_INT(RCB(5, 0xA2, 0x00, 0x01, 0x00), PE);
	CHECK_EQ_INT(RCB(4, 0xA2, 0x00, 0x00, 0x00, 0x01, 't'), PE);
	CHECK_EQ_INT(RCB(4, 0xA2, 0x00, 0x01, 0x00, 0x02, 't'), M);
	CHECK_EQ_INT(RCB(4, 0xA2, 0x00, 0x01, 0x00, 0x01, 't', 0x00), M);
	CHECK_EQ_INT(RCB(4, 0xA2, 0x00, 0x01, 0x00, 0x01, 0x80), M);
	CHECK_EQ_INT(RCB(5, 0xA2, 0x00, 0x01, 0x02, 0x0B, 0x01, 0x00, 0x01, 't'), M);  /* no sub id here */
	CHECK_EQ_INT(RCB(5, 0xA2, 0x00, 0x01, 0x07, 0x26, 0x00, 0x01, 'a', 0x00, 0x01, 'b', 0x00, 0x01, 't'), OK);
}

TEST(suback_unsuback_errors)
{
	CHECK_EQ_INT(RCB(4, 0x92, 0x00, 0x01, 0x00), M);
	CHECK_EQ_INT(RCB(4, 0x90, 0x00, 0x01), PE);
	CHECK_EQ_INT(RCB(4, 0x90, 0x00, 0x00, 0x00), PE);
	CHECK_EQ_INT(RCB(4, 0x90, 0x00, 0x01, 0x03), PE);
	CHECK_EQ_INT(RCB(4, 0x90, 0x00, 0x01, 0x87), PE);
	CHECK_EQ_INT(RCB(5, 0x90, 0x00, 0x01, 0x00, 0x87), OK);
	CHECK_EQ_INT(RCB(5, 0x90, 0x00, 0x01, 0x00, 0x10), PE);
	CHECK_EQ_INT(RCB(5, 0x90, 0x00, 0x01, 0x00), PE);
	CHECK_EQ_INT(RCB(5, 0x90, 0x00, 0x01), M);
	CHECK_EQ_INT(RCB(4, 0x90, 0x00), M);

	CHECK_EQ_INT(RCB(4, 0xB2, 0x00, 0x01), M);
	CHECK_EQ_INT(RCB(4, 0xB0, 0x00, 0x00), PE);
	CHECK_EQ_INT(RCB(4, 0xB0, 0x00, 0x01, 0x00), M);    /* v3: no payload */
	CHECK_EQ_INT(RCB(5, 0xB0, 0x00, 0x01, 0x00), PE);   /* v5: codes required */
	CHECK_EQ_INT(RCB(5, 0xB0, 0x00, 0x01, 0x00, 0x02), PE);
	CHECK_EQ_INT(RCB(5, 0xB0, 0x00, 0x01, 0x00, 0x11, 0x8F, 0x00), OK);
	CHECK_EQ_INT(RCB(5, 0xB0, 0x00, 0x01), M);
}

/* ---- PINGREQ / PINGRESP / DISCONNECT / AUTH ---- */

TEST(small_packet_errors)
{
	CHECK_EQ_INT(mqtt_decode_empty(0, 0), OK);
	CHECK_EQ_INT(mqtt_decode_empty(1, 0), M);
	CHECK_EQ_INT(mqtt_decode_empty(0, 1), M);
	CHECK_EQ_INT(RCB(4, 0xC0, 0x00), M);
	CHECK_EQ_INT(RCB(4, 0xD8, 0x00), M);

	CHECK_EQ_INT(rcb(4, 0xE0, NULL, 0), OK);
	CHECK_EQ_INT(rcb(3, 0xE0, NULL, 0), OK);
	CHECK_EQ_INT(rcb(4, 0xE2, NULL, 0), M);
	CHECK_EQ_INT(RCB(4, 0xE0, 0x00), M);               /* v3 DISCONNECT must be empty */
	CHECK_EQ_INT(rcb(5, 0xE1, NULL, 0), M);
	CHECK_EQ_INT(RCB(5, 0xE0, 0x00), OK);
	CHECK_EQ_INT(RCB(5, 0xE0, 0x01), PE);              /* not a DISCONNECT reason */
	CHECK_EQ_INT(RCB(5, 0xE0, 0x8B), OK);
	CHECK_EQ_INT(RCB(5, 0xE0, 0x00, 0x00), OK);
	CHECK_EQ_INT(RCB(5, 0xE0, 0x00, 0x00, 0x00), M);
	CHECK_EQ_INT(RCB(5, 0xE0, 0x00, 0x01), M);
	CHECK_EQ_INT(RCB(5, 0xE0, 0x00, 0x02, 0x01, 0x01), M);      /* payload format: not here */
	CHECK_EQ_INT(RCB(5, 0xE0, 0x00, 0x04, 0x1C, 0x00, 0x01, 's'), OK);

	CHECK_EQ_INT(rcb(5, 0xF0, NULL, 0), OK);
	CHECK_EQ_INT(rcb(4, 0xF0, NULL, 0), M);            /* type 15 is reserved before v5 */
	CHECK_EQ_INT(rcb(5, 0xF1, NULL, 0), M);
	CHECK_EQ_INT(RCB(5, 0xF0, 0x18), OK);
	CHECK_EQ_INT(RCB(5, 0xF0, 0x19, 0x00), OK);
	CHECK_EQ_INT(RCB(5, 0xF0, 0x04), PE);
	CHECK_EQ_INT(RCB(5, 0xF0, 0x18, 0x04, 0x16, 0x00, 0x01, 0x01), PE);   /* data without method */
	CHECK_EQ_INT(RCB(5, 0xF0, 0x18, 0x05, 0x11, 0x00, 0x00, 0x00, 0x00), M);
	CHECK_EQ_INT(RCB(5, 0xF0, 0x18, 0x00, 0x00), M);
}

/* ---- properties: the MQTT 5 §2.2.2.2 table, transcribed independently ---- */

enum ctx {
	C_CONNECT, C_WILL, C_CONNACK, C_PUBLISH, C_PUBACK, C_PUBREC, C_PUBREL, C_PUBCOMP,
	C_SUBSCRIBE, C_SUBACK, C_UNSUBSCRIBE, C_UNSUBACK, C_DISCONNECT, C_AUTH, C_N
};
static const char *const ctx_names[C_N] = {
	"CONNECT", "will", "CONNACK", "PUBLISH", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP",
	"SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "DISCONNECT", "AUTH",
};

/* Decode a v5 packet of the given context carrying property entries props[0..n). */
static uint8_t ctx_rc(int ctx, const uint8_t *props, size_t n)
{
	struct buf b = { 0 };
	uint8_t byte0 = 0;
	switch (ctx) {
	case C_CONNECT:
		byte0 = 0x10;
		buf_append(&b, B(MQTT_NAME, 0x05, 0x02, 0x00, 0x3C));
		b_props(&b, props, n);
		b_str(&b, "c");
		break;
	case C_WILL:
		byte0 = 0x10;
		buf_append(&b, B(MQTT_NAME, 0x05, 0x06, 0x00, 0x3C, 0x00));
		b_str(&b, "c");
		b_props(&b, props, n);
		b_str(&b, "t");
		b_str(&b, "");
		break;
	case C_CONNACK:
		byte0 = 0x20;
		buf_append(&b, B(0x00, 0x00));
		b_props(&b, props, n);
		break;
	case C_PUBLISH:
		byte0 = 0x30;
		b_str(&b, "t");
		b_props(&b, props, n);
		break;
	case C_PUBACK:
	case C_PUBREC:
	case C_PUBREL:
	case C_PUBCOMP:
		byte0 = (uint8_t)((MQTT_PUBACK + ctx - C_PUBACK) << 4 | (ctx == C_PUBREL ? 2 : 0));
		b_u16(&b, 1);
		b_u8(&b, 0);
		b_props(&b, props, n);
		break;
	case C_SUBSCRIBE:
		byte0 = 0x82;
		b_u16(&b, 1);
		b_props(&b, props, n);
		b_str(&b, "t");
		b_u8(&b, 0);
		break;
	case C_SUBACK:
		byte0 = 0x90;
		b_u16(&b, 1);
		b_props(&b, props, n);
		b_u8(&b, 0);
		break;
	case C_UNSUBSCRIBE:
		byte0 = 0xA2;
		b_u16(&b, 1);
		b_props(&b, props, n);
		b_str(&b, "t");
		break;
	case C_UNSUBACK:
		byte0 = 0xB0;
		b_u16(&b, 1);
		b_props(&b, props, n);
		b_u8(&b, 0);
		break;
	case C_DISCONNECT:
		byte0 = 0xE0;
		b_u8(&b, 0);
		b_props(&b, props, n);
		break;
	case C_AUTH:
		byte0 = 0xF0;
		b_u8(&b, 0);
		b_props(&b, props, n);
		break;
	}
	uint8_t rc = rcb(5, byte0, b.data, b.len);
	buf_free(&b);
	return rc;
}

#define CX(c) (1u << (c))
#define ACKS (CX(C_PUBACK) | CX(C_PUBREC) | CX(C_PUBREL) | CX(C_PUBCOMP))
#define ALLC ((1u << C_N) - 1)

struct pspec {
	uint8_t id;
	const uint8_t *val; /* a valid value */
	size_t vlen;
	unsigned ctxs;
};

static const struct pspec pspecs[] = {
	{ 0x01, B(0x01), CX(C_PUBLISH) | CX(C_WILL) },
	{ 0x02, B(0x00, 0x00, 0x00, 0x01), CX(C_PUBLISH) | CX(C_WILL) },
	{ 0x03, B(0x00, 0x01, 'a'), CX(C_PUBLISH) | CX(C_WILL) },
	{ 0x08, B(0x00, 0x01, 'a'), CX(C_PUBLISH) | CX(C_WILL) },
	{ 0x09, B(0x00, 0x01, 0xFF), CX(C_PUBLISH) | CX(C_WILL) },
	{ 0x0B, B(0x01), CX(C_PUBLISH) | CX(C_SUBSCRIBE) },
	{ 0x11, B(0x00, 0x00, 0x00, 0x01), CX(C_CONNECT) | CX(C_CONNACK) | CX(C_DISCONNECT) },
	{ 0x12, B(0x00, 0x01, 'a'), CX(C_CONNACK) },
	{ 0x13, B(0x00, 0x01), CX(C_CONNACK) },
	{ 0x15, B(0x00, 0x01, 'a'), CX(C_CONNECT) | CX(C_CONNACK) | CX(C_AUTH) },
	{ 0x16, B(0x00, 0x01, 0xFF), CX(C_CONNECT) | CX(C_CONNACK) | CX(C_AUTH) },
	{ 0x17, B(0x01), CX(C_CONNECT) },
	{ 0x18, B(0x00, 0x00, 0x00, 0x01), CX(C_WILL) },
	{ 0x19, B(0x01), CX(C_CONNECT) },
	{ 0x1A, B(0x00, 0x01, 'a'), CX(C_CONNACK) },
	{ 0x1C, B(0x00, 0x01, 'a'), CX(C_CONNACK) | CX(C_DISCONNECT) },
	{ 0x1F, B(0x00, 0x01, 'a'),
	  CX(C_CONNACK) | ACKS | CX(C_SUBACK) | CX(C_UNSUBACK) | CX(C_DISCONNECT) | CX(C_AUTH) },
	{ 0x21, B(0x00, 0x01), CX(C_CONNECT) | CX(C_CONNACK) },
	{ 0x22, B(0x00, 0x01), CX(C_CONNECT) | CX(C_CONNACK) },
	{ 0x23, B(0x00, 0x01), CX(C_PUBLISH) },
	{ 0x24, B(0x01), CX(C_CONNACK) },
	{ 0x25, B(0x01), CX(C_CONNACK) },
	{ 0x26, B(0x00, 0x01, 'a', 0x00, 0x01, 'b'), ALLC },
	{ 0x27, B(0x00, 0x00, 0x00, 0x01), CX(C_CONNECT) | CX(C_CONNACK) },
	{ 0x28, B(0x01), CX(C_CONNACK) },
	{ 0x29, B(0x01), CX(C_CONNACK) },
	{ 0x2A, B(0x01), CX(C_CONNACK) },
};
#define NPSPECS (sizeof pspecs / sizeof pspecs[0])

static size_t entry(uint8_t *out, const struct pspec *ps)
{
	out[0] = ps->id;
	memcpy(out + 1, ps->val, ps->vlen);
	return 1 + ps->vlen;
}

TEST(props_allowed_table)
{
	for (size_t i = 0; i < NPSPECS; i++) {
		const struct pspec *ps = &pspecs[i];
		uint8_t e[16];
		size_t n = entry(e, ps);
		for (int c = 0; c < C_N; c++) {
			uint8_t want;
			if (!(ps->ctxs & CX(c)))
				want = M; /* not allowed in this packet: MALFORMED */
			else if (ps->id == 0x0B && c == C_PUBLISH)
				want = PE; /* client PUBLISH with a subscription identifier */
			else if (ps->id == 0x16)
				want = PE; /* authentication data without a method */
			else
				want = OK;
			uint8_t got = ctx_rc(c, e, n);
			if (got != want)
				fprintf(stderr, "property 0x%02x in %s: 0x%02x, want 0x%02x\n", ps->id, ctx_names[c], got, want);
			CHECK_EQ_INT(got, want);
		}
	}
	/* with a method, data is fine */
	CHECK_EQ_INT(ctx_rc(C_CONNECT, B(0x15, 0x00, 0x01, 'm', 0x16, 0x00, 0x01, 0xFF)), OK);
	CHECK_EQ_INT(ctx_rc(C_AUTH, B(0x16, 0x00, 0x00, 0x15, 0x00, 0x01, 'm')), OK);
	/* unknown identifiers, including ones that look like multi-byte varints */
	static const uint8_t unknown[] = { 0x00, 0x04, 0x05, 0x07, 0x0A, 0x0C, 0x10, 0x14, 0x1B, 0x1D, 0x1E, 0x20,
					   0x2B, 0x7F, 0x80, 0x81, 0xA6, 0xFF };
	for (size_t i = 0; i < sizeof unknown; i++)
		for (int c = 0; c < C_N; c++)
			CHECK_EQ_INT(ctx_rc(c, (uint8_t[]){ unknown[i], 0x01 }, 2), M);
}

TEST(props_duplicates)
{
	for (size_t i = 0; i < NPSPECS; i++) {
		const struct pspec *ps = &pspecs[i];
		uint8_t e[40];
		size_t n = entry(e, ps);
		n += entry(e + n, ps);
		int c = ps->id == 0x0B ? C_SUBSCRIBE : __builtin_ctz(ps->ctxs);
		uint8_t want = ps->id == 0x26 ? OK : PE;
		uint8_t got = ctx_rc(c, e, n);
		if (got != want)
			fprintf(stderr, "duplicate 0x%02x in %s: 0x%02x\n", ps->id, ctx_names[c], got);
		CHECK_EQ_INT(got, want);
	}
	/* duplicates anywhere in the block, and a malformed entry afterwards still wins */
	CHECK_EQ_INT(ctx_rc(C_PUBLISH, B(0x02, 0, 0, 0, 1, 0x26, 0, 0, 0, 0, 0x02, 0, 0, 0, 2)), PE);
	CHECK_EQ_INT(ctx_rc(C_PUBLISH, B(0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2, 0x12, 0, 0)), M);
}

TEST(props_ranges)
{
	/* byte flags other than 0/1 */
	CHECK_EQ_INT(ctx_rc(C_PUBLISH, B(0x01, 0x02)), PE);      /* payload format */
	CHECK_EQ_INT(ctx_rc(C_WILL, B(0x01, 0xFF)), PE);
	CHECK_EQ_INT(ctx_rc(C_PUBLISH, B(0x01, 0x00)), OK);
	CHECK_EQ_INT(ctx_rc(C_CONNECT, B(0x17, 0x02)), PE);      /* request problem information */
	CHECK_EQ_INT(ctx_rc(C_CONNECT, B(0x17, 0x00)), OK);
	CHECK_EQ_INT(ctx_rc(C_CONNECT, B(0x19, 0x02)), PE);      /* request response information */
	CHECK_EQ_INT(ctx_rc(C_CONNACK, B(0x24, 0x02)), PE);      /* maximum QoS */
	CHECK_EQ_INT(ctx_rc(C_CONNACK, B(0x24, 0x00)), OK);
	CHECK_EQ_INT(ctx_rc(C_CONNACK, B(0x25, 0x02)), PE);      /* retain available */
	CHECK_EQ_INT(ctx_rc(C_CONNACK, B(0x28, 0x02)), PE);      /* wildcard subscription available */
	CHECK_EQ_INT(ctx_rc(C_CONNACK, B(0x29, 0x02)), PE);      /* subscription identifiers available */
	CHECK_EQ_INT(ctx_rc(C_CONNACK, B(0x2A, 0x02)), PE);      /* shared subscription available */
	/* zero where zero is not allowed */
	CHECK_EQ_INT(ctx_rc(C_CONNECT, B(0x21, 0x00, 0x00)), PE); /* receive maximum */
	CHECK_EQ_INT(ctx_rc(C_CONNACK, B(0x21, 0x00, 0x00)), PE);
	CHECK_EQ_INT(ctx_rc(C_CONNECT, B(0x27, 0x00, 0x00, 0x00, 0x00)), PE); /* maximum packet size */
	CHECK_EQ_INT(ctx_rc(C_CONNECT, B(0x27, 0xFF, 0xFF, 0xFF, 0xFF)), OK);
	CHECK_EQ_INT(ctx_rc(C_PUBLISH, B(0x23, 0x00, 0x00)), PE); /* topic alias */
	CHECK_EQ_INT(ctx_rc(C_SUBSCRIBE, B(0x0B, 0x00)), PE);     /* subscription identifier */
	CHECK_EQ_INT(ctx_rc(C_SUBSCRIBE, B(0x0B, 0xFF, 0xFF, 0xFF, 0x7F)), OK);
	/* zero is fine for these */
	CHECK_EQ_INT(ctx_rc(C_CONNECT, B(0x22, 0x00, 0x00)), OK);
	CHECK_EQ_INT(ctx_rc(C_CONNACK, B(0x13, 0x00, 0x00)), OK);
	CHECK_EQ_INT(ctx_rc(C_CONNECT, B(0x11, 0x00, 0x00, 0x00, 0x00)), OK);
	CHECK_EQ_INT(ctx_rc(C_PUBLISH, B(0x02, 0x00, 0x00, 0x00, 0x00)), OK);
	CHECK_EQ_INT(ctx_rc(C_WILL, B(0x18, 0x00, 0x00, 0x00, 0x00)), OK);
}

TEST(props_malformed)
{
	/* values cut short at the end of the property block */
	CHECK_EQ_INT(ctx_rc(C_PUBLISH, B(0x01)), M);
	CHECK_EQ_INT(ctx_rc(C_PUBLISH, B(0x23, 0x00)), M);
	CHECK_EQ_INT(ctx_rc(C_PUBLISH, B(0x02, 0x00, 0x00, 0x00)), M);
	CHECK_EQ_INT(ctx_rc(C_PUBLISH, B(0x03, 0x00)), M);
	CHECK_EQ_INT(ctx_rc(C_PUBLISH, B(0x03, 0x00, 0x02, 'a')), M);
	CHECK_EQ_INT(ctx_rc(C_PUBLISH, B(0x09, 0x00, 0x02, 0x01)), M);
	CHECK_EQ_INT(ctx_rc(C_PUBLISH, B(0x26, 0x00, 0x01, 'a')), M);
	CHECK_EQ_INT(ctx_rc(C_PUBLISH, B(0x26, 0x00, 0x01, 'a', 0x00, 0x02, 'b')), M);
	CHECK_EQ_INT(ctx_rc(C_SUBSCRIBE, B(0x0B, 0x81)), M);
	/* a string value may not run past the block into the rest of the packet */
	CHECK_EQ_INT(rcb(5, 0x30, B(0x00, 0x01, 't', 0x03, 0x03, 0x00, 0x02, 'a', 'b')), M);
	/* property length: beyond the packet, overlong, five bytes, cut short */
	CHECK_EQ_INT(RCB(5, 0x30, 0x00, 0x01, 't', 0x02, 0x01), M);
	CHECK_EQ_INT(RCB(5, 0x30, 0x00, 0x01, 't', 0x80, 0x00), M);
	CHECK_EQ_INT(RCB(5, 0x30, 0x00, 0x01, 't', 0x82, 0x00, 0x01, 0x01, 'x'), M);
	CHECK_EQ_INT(RCB(5, 0x30, 0x00, 0x01, 't', 0x80, 0x80, 0x80, 0x80, 0x00), M);
	CHECK_EQ_INT(RCB(5, 0x30, 0x00, 0x01, 't', 0xFF, 0xFF, 0xFF, 0xFF, 0x7F), M);
	CHECK_EQ_INT(RCB(5, 0x40, 0x00, 0x01, 0x00, 0x80), M);
	CHECK_EQ_INT(RCB(5, 0x40, 0x00, 0x01, 0x00, 0xFF, 0xFF, 0xFF, 0x7F), M);
	/* UTF-8 in string properties and both halves of a user property; binary is free */
	CHECK_EQ_INT(ctx_rc(C_PUBLISH, B(0x03, 0x00, 0x01, 0xFF)), M);
	CHECK_EQ_INT(ctx_rc(C_PUBLISH, B(0x08, 0x00, 0x02, 0xC0, 0x80)), M);
	CHECK_EQ_INT(ctx_rc(C_CONNACK, B(0x12, 0x00, 0x03, 0xED, 0xA0, 0x80)), M);
	CHECK_EQ_INT(ctx_rc(C_CONNACK, B(0x1A, 0x00, 0x01, 0x00)), M);
	CHECK_EQ_INT(ctx_rc(C_CONNACK, B(0x1C, 0x00, 0x01, 0x80)), M);
	CHECK_EQ_INT(ctx_rc(C_PUBACK, B(0x1F, 0x00, 0x01, 0x00)), M);
	CHECK_EQ_INT(ctx_rc(C_CONNECT, B(0x15, 0x00, 0x01, 0xFE)), M);
	CHECK_EQ_INT(ctx_rc(C_PUBLISH, B(0x26, 0x00, 0x01, 0xFF, 0x00, 0x01, 'b')), M);
	CHECK_EQ_INT(ctx_rc(C_PUBLISH, B(0x26, 0x00, 0x01, 'a', 0x00, 0x01, 0xFF)), M);
	CHECK_EQ_INT(ctx_rc(C_PUBLISH, B(0x09, 0x00, 0x02, 0xC0, 0x80)), OK);
	CHECK_EQ_INT(ctx_rc(C_CONNECT, B(0x15, 0x00, 0x01, 'm', 0x16, 0x00, 0x02, 0xC0, 0x80)), OK);
}

/* ---- user properties ---- */

TEST(user_props)
{
	/* three user properties in one run, other properties before and after */
	const uint8_t pkt[] = { 0x30, 0x28, 0x00, 0x01, 't', 0x22,
				0x02, 0x00, 0x00, 0x00, 0x3C,
				0x26, 0x00, 0x02, 'k', '1', 0x00, 0x02, 'v', '1',
				0x26, 0x00, 0x02, 'k', '2', 0x00, 0x00,
				0x26, 0x00, 0x00, 0x00, 0x03, 'v', '3', '3',
				0x23, 0x00, 0x07,
				0x01, 0x01,
				'P', 'L' };
	CHECK_EQ_INT(sizeof pkt, 2 + 0x28);
	struct dec d;
	CHECK_EQ_INT(dec_pkt(&d, 5, pkt, sizeof pkt), OK);
	struct mqtt_publish *m = &d.u.publish;
	CHECK_EQ_INT(m->props.user_prop_count, 3);
	CHECK_EQ_INT(m->props.present, MQTT_P_MESSAGE_EXPIRY | MQTT_P_PAYLOAD_FORMAT | MQTT_P_TOPIC_ALIAS);
	CHECK_EQ_INT(m->props.message_expiry, 60);
	CHECK_EQ_INT(m->props.payload_format, 1);
	CHECK_EQ_INT(m->props.topic_alias, 7);
	CHECK(str_is(m->payload, "PL"));
	/* the view is exactly the 0x26 entries, back to back */
	CHECK_EQ_INT(m->props.user_props.len, 9 + 7 + 8);
	CHECK(m->props.user_props.p == d.u.publish.topic.p + 1 + 1 + 5);
	struct mqtt_str k, v;
	size_t off = 0;
	CHECK(mqtt_user_props_next(m->props.user_props, &off, &k, &v));
	CHECK(str_is(k, "k1") && str_is(v, "v1"));
	CHECK(mqtt_user_props_next(m->props.user_props, &off, &k, &v));
	CHECK(str_is(k, "k2") && str_is(v, ""));
	CHECK(mqtt_user_props_next(m->props.user_props, &off, &k, &v));
	CHECK(str_is(k, "") && str_is(v, "v33"));
	CHECK(!mqtt_user_props_next(m->props.user_props, &off, &k, &v));
	CHECK(!mqtt_user_props_next(m->props.user_props, &off, &k, &v));

	/* forwarding: present properties in identifier order, then the view verbatim */
	struct buf b = { 0 };
	mqtt_encode_publish(&b, 5, m);
	CHECK(BUF_IS(&b, 0x30, 0x28, 0x00, 0x01, 't', 0x22,
		     0x01, 0x01,
		     0x02, 0x00, 0x00, 0x00, 0x3C,
		     0x23, 0x00, 0x07,
		     0x26, 0x00, 0x02, 'k', '1', 0x00, 0x02, 'v', '1',
		     0x26, 0x00, 0x02, 'k', '2', 0x00, 0x00,
		     0x26, 0x00, 0x00, 0x00, 0x03, 'v', '3', '3',
		     'P', 'L'));
	CHECK_EQ_INT(mqtt_publish_size(5, m), b.len);
	struct dec d2;
	CHECK_EQ_INT(dec_pkt(&d2, 5, b.data, b.len), OK);
	CHECK(str_eq(d2.u.publish.props.user_props, m->props.user_props));
	CHECK_EQ_INT(d2.u.publish.props.user_prop_count, 3);
	dec_free(&d2);
	buf_free(&b);
	dec_free(&d);

	/* user properties split by another property: valid MQTT, accepted; the view spans them
	 * and user_props_bytes counts the 0x26 entries alone */
	CHECK_EQ_INT(ctx_rc(C_PUBLISH, B(0x26, 0, 1, 'a', 0, 1, 'b', 0x02, 0, 0, 0, 1, 0x26, 0, 1, 'c', 0, 1, 'd')), OK);
	CHECK_EQ_INT(ctx_rc(C_CONNECT, B(0x26, 0, 0, 0, 0, 0x11, 0, 0, 0, 1, 0x26, 0, 0, 0, 0)), OK);
	CHECK_EQ_INT(ctx_rc(C_WILL, B(0x26, 0, 0, 0, 0, 0x18, 0, 0, 0, 1, 0x26, 0, 0, 0, 0)), OK);
	CHECK_EQ_INT(ctx_rc(C_DISCONNECT, B(0x26, 0, 0, 0, 0, 0x1F, 0, 0, 0x26, 0, 0, 0, 0)), OK);
	{
		static const uint8_t pub[] = { 0x00, 0x01, 't', 0x13, 0x26, 0, 1, 'a', 0, 1, 'b', 0x02, 0, 0, 0, 1,
					       0x26, 0, 1, 'c', 0, 1, 'd', 'P' };
		struct mqtt_publish ip;
		CHECK_EQ_INT(mqtt_decode_publish(5, 0, pub, sizeof pub, &ip), OK);
		CHECK_EQ_INT(ip.props.user_prop_count, 2);
		CHECK_EQ_INT(ip.props.user_props.len, 19);
		CHECK_EQ_INT(ip.props.user_props_bytes, 14);
		CHECK(ip.props.present & MQTT_P_MESSAGE_EXPIRY);
		size_t uo = 0;
		struct mqtt_str uk, uv;
		int un = 0;
		while (mqtt_user_props_next(ip.props.user_props, &uo, &uk, &uv))
			un++;
		CHECK_EQ_INT(un, 2);
	}
	/* ... and a malformed packet is still malformed, a protocol error first still wins */
	CHECK_EQ_INT(ctx_rc(C_PUBLISH, B(0x26, 0, 0, 0, 0, 0x01, 1, 0x26, 0, 0, 0, 0, 0x12, 0, 0)), M);
	CHECK_EQ_INT(ctx_rc(C_PUBLISH, B(0x01, 2, 0x26, 0, 0, 0, 0, 0x01, 1, 0x26, 0, 0, 0, 0)), PE);
	CHECK_EQ_INT(ctx_rc(C_PUBLISH, B(0x26, 0, 0, 0, 0, 0x26, 0, 0, 0, 0, 0x01, 1)), OK);

	/* the iterator skips other properties in a view a caller built (the broker keeps all
	 * forwardable properties in one block), and the encoder writes such a view as is */
	struct mqtt_str fwd = S("\x01\x01\x26\x00\x01" "a\x00\x01" "b\x03\x00\x02" "ct\x26\x00\x00\x00\x00");
	int n = 0;
	off = 0;
	while (mqtt_user_props_next(fwd, &off, &k, &v))
		n++;
	CHECK_EQ_INT(n, 2);
	CHECK_EQ_INT(off, fwd.len);
	struct mqtt_publish fp = { .topic = S("t"), .payload = S("x") };
	fp.props.user_props = fwd;
	fp.props.present = MQTT_P_MESSAGE_EXPIRY;
	fp.props.message_expiry = 9;
	fp.props.n_sub_ids = 1;
	fp.props.sub_ids[0] = 5;
	mqtt_encode_publish(&b, 5, &fp);
	CHECK_EQ_INT(b.len, mqtt_publish_size(5, &fp));
	CHECK_EQ_INT(b.len, 2 + 3 + 1 + 5 + fwd.len + 2 + 1);
	CHECK(memcmp(b.data + 2 + 3 + 1 + 5, fwd.p, fwd.len) == 0);
	buf_free(&b);

	/* an empty view */
	off = 0;
	CHECK(!mqtt_user_props_next((struct mqtt_str){ NULL, 0 }, &off, &k, &v));
	/* a view cut short stops the walk without reading past it */
	static const uint8_t cut[] = { 0x26, 0x00, 0x01, 'a', 0x00, 0x01, 'b', 0x26, 0x00, 0x05, 'a' };
	for (size_t len = 0; len <= sizeof cut; len++) {
		void *base;
		size_t maplen;
		const uint8_t *g = unit_guard_copy(cut, len, &base, &maplen);
		off = 0;
		n = 0;
		while (mqtt_user_props_next((struct mqtt_str){ g, (uint32_t)len }, &off, &k, &v))
			n++;
		CHECK_EQ_INT(n, len >= 7 ? 1 : 0);
		unit_guard_free(base, maplen);
	}
	/* unknown identifiers stop it too */
	off = 0;
	CHECK(!mqtt_user_props_next(S("\x00\x26\x00\x00\x00\x00"), &off, &k, &v));
}

TEST(user_prop_append)
{
	struct buf up = { 0 };
	mqtt_user_prop_append(&up, "region", 6, "eu", 2);
	mqtt_user_prop_append(&up, "", 0, "", 0);
	mqtt_user_prop_append(&up, "k", 1, "v\xC3\xA9", 3);
	CHECK(BUF_IS(&up, 0x26, 0x00, 0x06, 'r', 'e', 'g', 'i', 'o', 'n', 0x00, 0x02, 'e', 'u',
		     0x26, 0x00, 0x00, 0x00, 0x00,
		     0x26, 0x00, 0x01, 'k', 0x00, 0x03, 'v', 0xC3, 0xA9));
	struct mqtt_props props = { 0 };
	props.user_props = (struct mqtt_str){ up.data, (uint32_t)up.len };
	props.user_prop_count = 3;
	struct buf b = { 0 };
	mqtt_encode_ack(&b, 5, MQTT_PUBACK, 9, 0, &props);
	struct dec d;
	CHECK_EQ_INT(dec_pkt(&d, 5, b.data, b.len), OK);
	CHECK_EQ_INT(d.u.ack.props.user_prop_count, 3);
	CHECK(str_eq(d.u.ack.props.user_props, props.user_props));
	struct mqtt_str k, v;
	size_t off = 0;
	CHECK(mqtt_user_props_next(d.u.ack.props.user_props, &off, &k, &v) && str_is(k, "region") && str_is(v, "eu"));
	CHECK(mqtt_user_props_next(d.u.ack.props.user_props, &off, &k, &v) && k.len == 0 && v.len == 0);
	CHECK(mqtt_user_props_next(d.u.ack.props.user_props, &off, &k, &v) && str_is(k, "k") && str_is(v, "v\xC3\xA9"));
	CHECK(!mqtt_user_props_next(d.u.ack.props.user_props, &off, &k, &v));
	dec_free(&d);
	buf_free(&b);
	buf_free(&up);
}

/* ---- encoders: exact bytes against the spec vectors, then decode again ---- */

#define ENC_IS_VEC(b, name) buf_is((b), VP(name))

TEST(roundtrip_connect)
{
	struct buf b = { 0 };
	struct dec d;

	struct mqtt_connect c = { .version = MQTT_V311, .clean_start = true, .keepalive = 60, .client_id = S("abc") };
	CHECK_EQ_INT(mqtt_encode_connect(&b, &c), 17);
	CHECK(ENC_IS_VEC(&b, "v311 CONNECT"));
	b.len = 0;
	c.version = MQTT_V31;
	mqtt_encode_connect(&b, &c);
	CHECK(ENC_IS_VEC(&b, "v31 CONNECT"));
	b.len = 0;
	c.version = MQTT_V5;
	mqtt_encode_connect(&b, &c);
	CHECK(ENC_IS_VEC(&b, "v5 CONNECT min"));
	b.len = 0;

	struct mqtt_connect f = {
		.version = MQTT_V311, .clean_start = true, .keepalive = 10, .client_id = S("c1"),
		.will = true, .will_qos = 1, .will_retain = true, .will_topic = S("w/t"), .will_payload = S("bye"),
		.has_username = true, .username = S("u"), .has_password = true, .password = S("\x01\x02"),
	};
	mqtt_encode_connect(&b, &f);
	CHECK(ENC_IS_VEC(&b, "v311 CONNECT full"));
	b.len = 0;
	f.version = MQTT_V5;
	f.props.present = MQTT_P_SESSION_EXPIRY | MQTT_P_RECEIVE_MAXIMUM;
	f.props.session_expiry = 120;
	f.props.receive_maximum = 10;
	f.props.user_props = S("\x26\x00\x01k\x00\x01v");
	f.props.user_prop_count = 1;
	f.will_props.present = MQTT_P_WILL_DELAY | MQTT_P_PAYLOAD_FORMAT;
	f.will_props.will_delay = 5;
	f.will_props.payload_format = 1;
	size_t n = mqtt_encode_connect(&b, &f);
	CHECK(ENC_IS_VEC(&b, "v5 CONNECT full"));
	CHECK_EQ_INT(n, b.len);
	CHECK_EQ_INT(dec_pkt(&d, 5, b.data, b.len), OK);
	{
		struct mqtt_connect *g = &d.u.connect;
		CHECK(g->version == 5 && g->clean_start && g->keepalive == 10 && str_eq(g->client_id, f.client_id));
		CHECK(g->will && g->will_qos == 1 && g->will_retain && str_eq(g->will_topic, f.will_topic));
		CHECK(str_eq(g->will_payload, f.will_payload) && str_eq(g->username, f.username));
		CHECK(str_eq(g->password, f.password) && g->has_username && g->has_password);
		CHECK(g->props.present == f.props.present && g->props.session_expiry == 120 && g->props.receive_maximum == 10);
		CHECK(str_eq(g->props.user_props, f.props.user_props) && g->props.user_prop_count == 1);
		CHECK(g->will_props.present == f.will_props.present && g->will_props.will_delay == 5);
	}
	dec_free(&d);
	b.len = 0;

	/* props are ignored for v3; will bits only with a will; disallowed properties skipped */
	f.version = MQTT_V311;
	mqtt_encode_connect(&b, &f);
	CHECK(ENC_IS_VEC(&b, "v311 CONNECT full"));
	b.len = 0;
	struct mqtt_connect w = { .version = MQTT_V5, .keepalive = 60, .client_id = S("abc"), .clean_start = true,
				  .will_qos = 2, .will_retain = true };
	w.props.present = MQTT_P_TOPIC_ALIAS | MQTT_P_MAXIMUM_QOS;
	w.props.topic_alias = 3;
	mqtt_encode_connect(&b, &w);
	CHECK(ENC_IS_VEC(&b, "v5 CONNECT min"));
	CHECK_EQ_INT(rcp(5, b.data, b.len), OK);
	b.len = 0;
	/* password without user name is fine in v5 */
	struct mqtt_connect pw = { .version = MQTT_V5, .client_id = S(""), .has_password = true, .password = S("pw") };
	mqtt_encode_connect(&b, &pw);
	CHECK_EQ_INT(dec_pkt(&d, 5, b.data, b.len), OK);
	CHECK(d.u.connect.has_password && str_is(d.u.connect.password, "pw") && d.u.connect.client_id.len == 0);
	dec_free(&d);
	buf_free(&b);
}

TEST(roundtrip_connack)
{
	struct buf b = { 0 };
	struct dec d;
	CHECK_EQ_INT(mqtt_encode_connack(&b, 4, true, 0, NULL), 4);
	CHECK(ENC_IS_VEC(&b, "v311 CONNACK"));
	b.len = 0;
	mqtt_encode_connack(&b, 3, true, MQTT_V3_NOT_AUTHORIZED, NULL);
	CHECK(ENC_IS_VEC(&b, "v31 CONNACK"));
	b.len = 0;
	mqtt_encode_connack(&b, 4, true, MQTT_V3_NOT_AUTHORIZED, NULL); /* session present cleared */
	CHECK(BUF_IS(&b, 0x20, 0x02, 0x00, 0x05));
	b.len = 0;
	mqtt_encode_connack(&b, 5, true, MQTT_RC_NOT_AUTHORIZED, NULL);
	CHECK(ENC_IS_VEC(&b, "v5 CONNACK fail"));
	b.len = 0;
	struct mqtt_props p = { 0 };
	p.present = MQTT_P_ASSIGNED_CLIENT_ID | MQTT_P_TOPIC_ALIAS_MAXIMUM | MQTT_P_MAXIMUM_QOS;
	p.assigned_client_id = S("abc");
	p.topic_alias_maximum = 10;
	p.maximum_qos = 1;
	mqtt_encode_connack(&b, 5, false, 0, &p);
	CHECK(ENC_IS_VEC(&b, "v5 CONNACK"));
	CHECK_EQ_INT(dec_pkt(&d, 5, b.data, b.len), OK);
	CHECK(!d.u.connack.session_present && d.u.connack.rc == 0);
	CHECK(d.u.connack.props.present == p.present && str_is(d.u.connack.props.assigned_client_id, "abc"));
	dec_free(&d);
	b.len = 0;
	mqtt_encode_connack(&b, 5, true, 0, NULL);
	CHECK(BUF_IS(&b, 0x20, 0x03, 0x01, 0x00, 0x00));
	CHECK_EQ_INT(dec_pkt(&d, 5, b.data, b.len), OK);
	CHECK(d.u.connack.session_present);
	dec_free(&d);
	buf_free(&b);
}

TEST(roundtrip_publish)
{
	struct buf b = { 0 };
	struct dec d;
	struct mqtt_publish m = { .topic = S("a/b"), .payload = S("hi") };
	CHECK_EQ_INT(mqtt_encode_publish(&b, 4, &m), 9);
	CHECK(ENC_IS_VEC(&b, "v311 PUBLISH q0"));
	CHECK_EQ_INT(mqtt_publish_size(4, &m), 9);
	b.len = 0;
	m.dup = true; /* never with QoS 0 */
	mqtt_encode_publish(&b, 4, &m);
	CHECK(ENC_IS_VEC(&b, "v311 PUBLISH q0"));
	b.len = 0;
	m.dup = false;
	m.qos = 1;
	m.packet_id = 10;
	mqtt_encode_publish(&b, 4, &m);
	CHECK(ENC_IS_VEC(&b, "v311 PUBLISH q1"));
	b.len = 0;
	mqtt_encode_publish(&b, 3, &m);
	CHECK(ENC_IS_VEC(&b, "v31 PUBLISH q1"));
	b.len = 0;
	struct mqtt_publish q2 = { .qos = 2, .dup = true, .retain = true, .topic = S("a/b"), .packet_id = 0x1234 };
	mqtt_encode_publish(&b, 4, &q2);
	CHECK(ENC_IS_VEC(&b, "v311 PUBLISH q2 dup retain"));
	CHECK_EQ_INT(dec_pkt(&d, 4, b.data, b.len), OK);
	CHECK(d.u.publish.qos == 2 && d.u.publish.dup && d.u.publish.retain && d.u.publish.packet_id == 0x1234);
	dec_free(&d);
	b.len = 0;
	struct mqtt_publish al = { .payload = S("x") };
	al.props.present = MQTT_P_TOPIC_ALIAS;
	al.props.topic_alias = 5;
	mqtt_encode_publish(&b, 5, &al);
	CHECK(ENC_IS_VEC(&b, "v5 PUBLISH alias"));
	b.len = 0;
	/* props ignored for v3 */
	mqtt_encode_publish(&b, 4, &al);
	CHECK(BUF_IS(&b, 0x30, 0x03, 0x00, 0x00, 'x'));
	b.len = 0;

	/* v5 with every PUBLISH property */
	struct mqtt_publish p5 = { .qos = 1, .packet_id = 7, .retain = true, .topic = S("s/t"), .payload = S("\x00\xFF") };
	p5.props.present = MQTT_P_PAYLOAD_FORMAT | MQTT_P_MESSAGE_EXPIRY | MQTT_P_CONTENT_TYPE | MQTT_P_RESPONSE_TOPIC |
			   MQTT_P_CORRELATION_DATA | MQTT_P_TOPIC_ALIAS;
	p5.props.payload_format = 1;
	p5.props.message_expiry = 0x01020304;
	p5.props.content_type = S("application/json");
	p5.props.response_topic = S("re/ply");
	p5.props.correlation_data = S("\x00\x01\x02");
	p5.props.topic_alias = 0xFFFF;
	p5.props.user_props = S("\x26\x00\x01" "a\x00\x01" "b");
	p5.props.user_prop_count = 1;
	size_t n = mqtt_encode_publish(&b, 5, &p5);
	CHECK_EQ_INT(n, b.len);
	CHECK_EQ_INT(mqtt_publish_size(5, &p5), b.len);
	CHECK_EQ_INT(dec_pkt(&d, 5, b.data, b.len), OK);
	{
		struct mqtt_publish *g = &d.u.publish;
		CHECK(g->qos == 1 && g->packet_id == 7 && g->retain && !g->dup && str_eq(g->topic, p5.topic));
		CHECK(str_eq(g->payload, p5.payload));
		CHECK_EQ_INT(g->props.present, p5.props.present);
		CHECK(g->props.payload_format == 1 && g->props.message_expiry == 0x01020304 && g->props.topic_alias == 0xFFFF);
		CHECK(str_eq(g->props.content_type, p5.props.content_type));
		CHECK(str_eq(g->props.response_topic, p5.props.response_topic));
		CHECK(str_eq(g->props.correlation_data, p5.props.correlation_data));
		CHECK(str_eq(g->props.user_props, p5.props.user_props));
	}
	dec_free(&d);
	b.len = 0;

	/* outgoing subscription identifiers: after user properties, in order */
	struct mqtt_publish s = { .topic = S("t") };
	s.props.n_sub_ids = 3;
	s.props.sub_ids[0] = 1;
	s.props.sub_ids[1] = 200;
	s.props.sub_ids[2] = 268435455;
	s.props.user_props = S("\x26\x00\x00\x00\x00");
	mqtt_encode_publish(&b, 5, &s);
	CHECK(BUF_IS(&b, 0x30, 0x13, 0x00, 0x01, 't', 0x0F, 0x26, 0x00, 0x00, 0x00, 0x00, 0x0B, 0x01, 0x0B, 0xC8, 0x01,
		     0x0B, 0xFF, 0xFF, 0xFF, 0x7F));
	CHECK_EQ_INT(mqtt_publish_size(5, &s), b.len);
	CHECK_EQ_INT(rcp(5, b.data, b.len), PE); /* a server may send them; a client may not */
	b.len = 0;
	s.props.n_sub_ids = 200; /* clamped to MQTT_MAX_SUB_IDS */
	for (int i = 0; i < MQTT_MAX_SUB_IDS; i++)
		s.props.sub_ids[i] = 1;
	mqtt_encode_publish(&b, 5, &s);
	CHECK_EQ_INT(b.len, 2 + 3 + 1 + 5 + 2 * MQTT_MAX_SUB_IDS);
	CHECK_EQ_INT(mqtt_publish_size(5, &s), b.len);
	b.len = 0;

	/* a long topic and payload: two-byte Remaining Length */
	static char topic[300], payload[1000];
	memset(topic, 'a', sizeof topic);
	memset(payload, 0xAB, sizeof payload);
	struct mqtt_publish big = { .qos = 2, .packet_id = 65535, .topic = { (const uint8_t *)topic, sizeof topic },
				    .payload = { (const uint8_t *)payload, sizeof payload } };
	n = mqtt_encode_publish(&b, 5, &big);
	CHECK_EQ_INT(n, 1 + 2 + 2 + 300 + 2 + 1 + 1000);
	CHECK_EQ_INT(mqtt_publish_size(5, &big), n);
	CHECK_EQ_INT(dec_pkt(&d, 5, b.data, b.len), OK);
	CHECK(str_eq(d.u.publish.topic, big.topic) && str_eq(d.u.publish.payload, big.payload));
	CHECK_EQ_INT(d.u.publish.packet_id, 65535);
	dec_free(&d);
	b.len = 0;

	/* strings longer than 65535 are clamped, and the packet stays consistent */
	static char huge[70000];
	memset(huge, 'z', sizeof huge);
	struct mqtt_publish hz = { .topic = { (const uint8_t *)huge, sizeof huge }, .payload = S("p") };
	n = mqtt_encode_publish(&b, 4, &hz);
	CHECK_EQ_INT(n, mqtt_publish_size(4, &hz));
	CHECK_EQ_INT(dec_pkt(&d, 4, b.data, b.len), OK);
	CHECK_EQ_INT(d.u.publish.topic.len, 65535);
	CHECK(str_is(d.u.publish.payload, "p"));
	dec_free(&d);
	buf_free(&b);
}

TEST(roundtrip_acks)
{
	struct buf b = { 0 };
	struct dec d;
	static const char *const v3names[] = { "v311 PUBACK", "v311 PUBREC", "v311 PUBREL", "v311 PUBCOMP" };
	for (uint8_t t = MQTT_PUBACK; t <= MQTT_PUBCOMP; t++) {
		CHECK_EQ_INT(mqtt_encode_ack(&b, 4, t, 10, 0x80, NULL), 4); /* v3 ignores rc and props */
		CHECK(ENC_IS_VEC(&b, v3names[t - MQTT_PUBACK]));
		CHECK_EQ_INT(dec_pkt(&d, 4, b.data, b.len), OK);
		CHECK_EQ_INT(d.u.ack.packet_id, 10);
		dec_free(&d);
		b.len = 0;
		mqtt_encode_ack(&b, 5, t, 10, 0, NULL);
		CHECK_EQ_INT(b.len, 4);
		CHECK_EQ_INT(rcp(5, b.data, b.len), OK);
		b.len = 0;
	}
	mqtt_encode_ack(&b, 5, MQTT_PUBACK, 10, MQTT_RC_NO_MATCHING_SUBSCRIBERS, NULL);
	CHECK(ENC_IS_VEC(&b, "v5 PUBACK rc"));
	b.len = 0;
	struct mqtt_props p = { .present = MQTT_P_REASON_STRING, .reason_string = S("no") };
	mqtt_encode_ack(&b, 5, MQTT_PUBREC, 10, MQTT_RC_NOT_AUTHORIZED, &p);
	CHECK(ENC_IS_VEC(&b, "v5 PUBREC props"));
	CHECK_EQ_INT(dec_pkt(&d, 5, b.data, b.len), OK);
	CHECK(d.u.ack.rc == MQTT_RC_NOT_AUTHORIZED && str_is(d.u.ack.props.reason_string, "no"));
	dec_free(&d);
	b.len = 0;
	mqtt_encode_ack(&b, 5, MQTT_PUBREL, 10, MQTT_RC_PACKET_ID_NOT_FOUND, NULL);
	CHECK(ENC_IS_VEC(&b, "v5 PUBREL rc"));
	b.len = 0;
	/* reason string with rc 0: the long form */
	mqtt_encode_ack(&b, 5, MQTT_PUBCOMP, 10, 0, &p);
	CHECK(BUF_IS(&b, 0x70, 0x09, 0x00, 0x0A, 0x00, 0x05, 0x1F, 0x00, 0x02, 'n', 'o'));
	b.len = 0;
	/* empty props, or only properties an ack cannot carry: the short form */
	struct mqtt_props empty = { 0 };
	mqtt_encode_ack(&b, 5, MQTT_PUBCOMP, 10, 0, &empty);
	CHECK(BUF_IS(&b, 0x70, 0x02, 0x00, 0x0A));
	b.len = 0;
	struct mqtt_props bad = { .present = MQTT_P_SESSION_EXPIRY | MQTT_P_TOPIC_ALIAS, .topic_alias = 1 };
	mqtt_encode_ack(&b, 5, MQTT_PUBACK, 10, 0, &bad);
	CHECK(BUF_IS(&b, 0x40, 0x02, 0x00, 0x0A));
	buf_free(&b);
}

TEST(roundtrip_subscribe)
{
	struct buf b = { 0 };
	struct dec d;
	const struct mqtt_str filters[] = { S("a/b"), S("#") };
	const uint8_t opts3[] = { 1, 2 };
	CHECK_EQ_INT(mqtt_encode_subscribe(&b, 4, 1, NULL, filters, opts3, 2), 14);
	CHECK(ENC_IS_VEC(&b, "v311 SUBSCRIBE"));
	b.len = 0;
	const uint8_t opts3x[] = { 0xFD, 0x3E }; /* v3: only the QoS bits go out */
	mqtt_encode_subscribe(&b, 3, 1, NULL, filters, opts3x, 2);
	CHECK(ENC_IS_VEC(&b, "v311 SUBSCRIBE"));
	b.len = 0;

	struct mqtt_props p = { .present = MQTT_P_SUBSCRIPTION_ID, .n_sub_ids = 1, .sub_ids = { 129 } };
	p.user_props = S("\x26\x00\x01k\x00\x01v");
	p.user_prop_count = 1;
	const uint8_t opts5[] = { 0xED, 0x00 }; /* reserved bits 6-7 never go out */
	mqtt_encode_subscribe(&b, 5, 1, &p, filters, opts5, 2);
	CHECK(ENC_IS_VEC(&b, "v5 SUBSCRIBE"));
	b.len = 0;
	p.n_sub_ids = 3; /* at most one on SUBSCRIBE */
	p.sub_ids[1] = 5;
	p.sub_ids[2] = 6;
	mqtt_encode_subscribe(&b, 5, 1, &p, filters, opts5, 2);
	CHECK(ENC_IS_VEC(&b, "v5 SUBSCRIBE"));
	CHECK_EQ_INT(dec_pkt(&d, 5, b.data, b.len), OK);
	CHECK(d.u.subscribe.props.n_sub_ids == 1 && d.u.subscribe.props.sub_ids[0] == 129);
	CHECK_EQ_INT(d.u.subscribe.count, 2);
	dec_free(&d);
	buf_free(&b);
}

TEST(roundtrip_suback_unsub)
{
	struct buf b = { 0 };
	struct dec d;
	CHECK_EQ_INT(mqtt_encode_suback(&b, 4, 1, NULL, (const uint8_t[]){ 0x01, 0x80 }, 2), 6);
	CHECK(ENC_IS_VEC(&b, "v311 SUBACK"));
	b.len = 0;
	mqtt_encode_suback(&b, 5, 1, NULL, (const uint8_t[]){ 0x02, 0x8F }, 2);
	CHECK(ENC_IS_VEC(&b, "v5 SUBACK"));
	b.len = 0;
	struct mqtt_props rs = { .present = MQTT_P_REASON_STRING, .reason_string = S("why") };
	mqtt_encode_suback(&b, 5, 3, &rs, (const uint8_t[]){ 0x00, 0x01, 0x02, 0xA2 }, 4);
	CHECK_EQ_INT(dec_pkt(&d, 5, b.data, b.len), OK);
	CHECK(d.u.suback.packet_id == 3 && str_is(d.u.suback.codes, "\x00\x01\x02\xA2"));
	CHECK(str_is(d.u.suback.props.reason_string, "why"));
	dec_free(&d);
	b.len = 0;

	const struct mqtt_str filters[] = { S("a/b"), S("#") };
	mqtt_encode_unsubscribe(&b, 4, 2, NULL, filters, 2);
	CHECK(ENC_IS_VEC(&b, "v311 UNSUBSCRIBE"));
	b.len = 0;
	mqtt_encode_unsubscribe(&b, 5, 2, NULL, filters, 1);
	CHECK(ENC_IS_VEC(&b, "v5 UNSUBSCRIBE"));
	b.len = 0;
	mqtt_encode_unsuback(&b, 4, 2, &rs, (const uint8_t[]){ 0x11 }, 1);
	CHECK(ENC_IS_VEC(&b, "v311 UNSUBACK"));
	b.len = 0;
	mqtt_encode_unsuback(&b, 5, 2, NULL, (const uint8_t[]){ 0x11 }, 1);
	CHECK(ENC_IS_VEC(&b, "v5 UNSUBACK"));
	b.len = 0;
	mqtt_encode_unsuback(&b, 5, 2, &rs, (const uint8_t[]){ 0x00, 0x8F }, 2);
	CHECK_EQ_INT(dec_pkt(&d, 5, b.data, b.len), OK);
	CHECK(str_is(d.u.unsuback.codes, "\x00\x8F") && str_is(d.u.unsuback.props.reason_string, "why"));
	dec_free(&d);
	buf_free(&b);
}

TEST(roundtrip_small)
{
	struct buf b = { 0 };
	struct dec d;
	CHECK_EQ_INT(mqtt_encode_empty(&b, MQTT_PINGREQ), 2);
	CHECK(ENC_IS_VEC(&b, "PINGREQ"));
	b.len = 0;
	mqtt_encode_empty(&b, MQTT_PINGRESP);
	CHECK(ENC_IS_VEC(&b, "PINGRESP"));
	b.len = 0;
	struct mqtt_props rs = { .present = MQTT_P_REASON_STRING, .reason_string = S("x") };
	mqtt_encode_disconnect(&b, 4, MQTT_RC_SERVER_SHUTTING_DOWN, &rs);
	CHECK(ENC_IS_VEC(&b, "v311 DISCONNECT"));
	b.len = 0;
	mqtt_encode_disconnect(&b, 5, 0, NULL);
	CHECK(ENC_IS_VEC(&b, "v5 DISCONNECT short"));
	b.len = 0;
	mqtt_encode_disconnect(&b, 5, MQTT_RC_DISCONNECT_WITH_WILL, NULL);
	CHECK(ENC_IS_VEC(&b, "v5 DISCONNECT rc"));
	b.len = 0;
	rs.present |= MQTT_P_SESSION_EXPIRY;
	rs.session_expiry = 0;
	mqtt_encode_disconnect(&b, 5, MQTT_RC_SESSION_TAKEN_OVER, &rs);
	CHECK(ENC_IS_VEC(&b, "v5 DISCONNECT props"));
	b.len = 0;
	mqtt_encode_disconnect(&b, 5, 0, &rs); /* rc 0 with properties: rc is written */
	CHECK_EQ_INT(dec_pkt(&d, 5, b.data, b.len), OK);
	CHECK(d.u.disconnect.rc == 0 && str_is(d.u.disconnect.props.reason_string, "x"));
	CHECK_EQ_INT(b.data[2], 0x00);
	dec_free(&d);
	b.len = 0;
	CHECK_EQ_INT(mqtt_encode_auth(&b, 0, NULL), 2);
	CHECK(ENC_IS_VEC(&b, "v5 AUTH short"));
	b.len = 0;
	struct mqtt_props au = { .present = MQTT_P_AUTH_METHOD | MQTT_P_AUTH_DATA };
	au.auth_method = S("SCRAM");
	au.auth_data = S("\x01\x02");
	mqtt_encode_auth(&b, MQTT_RC_CONTINUE_AUTHENTICATION, &au);
	CHECK(ENC_IS_VEC(&b, "v5 AUTH"));
	b.len = 0;
	mqtt_encode_auth(&b, MQTT_RC_REAUTHENTICATE, NULL);
	CHECK(BUF_IS(&b, 0xF0, 0x01, 0x19));
	buf_free(&b);
}

/* Every property set: each encoder must still produce a packet its decoder accepts. */
static void fill_all_props(struct mqtt_props *p)
{
	memset(p, 0, sizeof *p);
	p->present = (1u << 26) - 1;
	p->payload_format = 1;
	p->request_problem_info = 1;
	p->request_response_info = 1;
	p->maximum_qos = 1;
	p->retain_available = 1;
	p->wildcard_sub_available = 1;
	p->sub_id_available = 1;
	p->shared_sub_available = 1;
	p->server_keep_alive = 30;
	p->receive_maximum = 100;
	p->topic_alias_maximum = 10;
	p->topic_alias = 2;
	p->message_expiry = 3600;
	p->session_expiry = 7200;
	p->will_delay = 10;
	p->maximum_packet_size = 1 << 20;
	p->content_type = S("ct");
	p->response_topic = S("rt");
	p->correlation_data = S("\x01");
	p->assigned_client_id = S("id");
	p->auth_method = S("m");
	p->auth_data = S("d");
	p->response_info = S("ri");
	p->server_reference = S("sr");
	p->reason_string = S("rs");
	p->user_props = S("\x26\x00\x01k\x00\x01v");
	p->user_prop_count = 1;
}

TEST(encoders_filter_props)
{
	struct mqtt_props p;
	fill_all_props(&p);
	struct buf b = { 0 };
	const struct mqtt_str f = S("t");
	uint8_t opt = 1, code = 0;

	struct mqtt_connect c = { .version = 5, .client_id = S("c"), .will = true, .will_topic = S("w") };
	c.props = p;
	c.will_props = p;
	mqtt_encode_connect(&b, &c);
	CHECK_EQ_INT(rcp(5, b.data, b.len), OK);
	b.len = 0;
	mqtt_encode_connack(&b, 5, false, 0, &p);
	CHECK_EQ_INT(rcp(5, b.data, b.len), OK);
	b.len = 0;
	struct mqtt_publish m = { .topic = S("t"), .props = p };
	mqtt_encode_publish(&b, 5, &m);
	CHECK_EQ_INT(rcp(5, b.data, b.len), OK);
	CHECK_EQ_INT(mqtt_publish_size(5, &m), b.len);
	b.len = 0;
	for (uint8_t t = MQTT_PUBACK; t <= MQTT_PUBCOMP; t++) {
		mqtt_encode_ack(&b, 5, t, 1, 0, &p);
		CHECK_EQ_INT(rcp(5, b.data, b.len), OK);
		b.len = 0;
	}
	p.n_sub_ids = 1;
	p.sub_ids[0] = 42;
	mqtt_encode_subscribe(&b, 5, 1, &p, &f, &opt, 1);
	CHECK_EQ_INT(rcp(5, b.data, b.len), OK);
	b.len = 0;
	mqtt_encode_suback(&b, 5, 1, &p, &code, 1);
	CHECK_EQ_INT(rcp(5, b.data, b.len), OK);
	b.len = 0;
	mqtt_encode_unsubscribe(&b, 5, 1, &p, &f, 1);
	CHECK_EQ_INT(rcp(5, b.data, b.len), OK);
	b.len = 0;
	mqtt_encode_unsuback(&b, 5, 1, &p, &code, 1);
	CHECK_EQ_INT(rcp(5, b.data, b.len), OK);
	b.len = 0;
	mqtt_encode_disconnect(&b, 5, 0, &p);
	CHECK_EQ_INT(rcp(5, b.data, b.len), OK);
	b.len = 0;
	mqtt_encode_auth(&b, 0, &p);
	CHECK_EQ_INT(rcp(5, b.data, b.len), OK);
	buf_free(&b);
}

TEST(props_size_put)
{
	uint8_t out[512];
	CHECK_EQ_INT(mqtt_props_size(NULL), 1);
	CHECK_EQ_INT(mqtt_props_put(out, NULL) - out, 1);
	CHECK_EQ_INT(out[0], 0);
	struct mqtt_props p = { 0 };
	CHECK_EQ_INT(mqtt_props_size(&p), 1);
	fill_all_props(&p);
	p.n_sub_ids = 2;
	p.sub_ids[0] = 1;
	p.sub_ids[1] = 16384;
	size_t n = mqtt_props_size(&p);
	CHECK(n < sizeof out);
	CHECK_EQ_INT(mqtt_props_put(out, &p) - out, n);
	/* every property once, in identifier order, then user properties, then sub ids */
	CHECK_EQ_INT(out[0], n - 1); /* body < 128: one length byte */
	CHECK_EQ_INT(out[1], MQTT_PROP_PAYLOAD_FORMAT);
	CHECK_EQ_INT(out[n - 13], MQTT_PROP_USER_PROPERTY);
	CHECK(memcmp(out + n - 6, "\x0B\x01\x0B\x80\x80\x01", 6) == 0);
	/* the block decodes in any context that allows everything it holds: check the
	 * public writer's output parses as a sequence of well-formed entries */
	struct mqtt_str view = { out + 1, (uint32_t)(n - 1) };
	size_t off = 0;
	struct mqtt_str k, v;
	CHECK(mqtt_user_props_next(view, &off, &k, &v) && str_is(k, "k") && str_is(v, "v"));
	CHECK_EQ_INT(off, n - 7); /* view offsets start after the length byte */
	CHECK(!mqtt_user_props_next(view, &off, &k, &v));
	CHECK_EQ_INT(off, n - 1);
}

/* ---- names ---- */

TEST(names)
{
	CHECK_STR(mqtt_rc_str(0x00), "success");
	CHECK_STR(mqtt_rc_str(0x81), "malformed packet");
	CHECK_STR(mqtt_rc_str(0x82), "protocol error");
	CHECK_STR(mqtt_rc_str(0x95), "packet too large");
	CHECK_STR(mqtt_rc_str(0xA2), "wildcard subscriptions not supported");
	CHECK_STR(mqtt_rc_str(0x03), "unknown reason code");
	CHECK_STR(mqtt_rc_str(0xFF), "unknown reason code");
	for (int rc = 0; rc < 256; rc++)
		CHECK(mqtt_rc_str((uint8_t)rc) != NULL);
	CHECK_STR(mqtt_type_str(0), "RESERVED");
	CHECK_STR(mqtt_type_str(1), "CONNECT");
	CHECK_STR(mqtt_type_str(3), "PUBLISH");
	CHECK_STR(mqtt_type_str(6), "PUBREL");
	CHECK_STR(mqtt_type_str(10), "UNSUBSCRIBE");
	CHECK_STR(mqtt_type_str(15), "AUTH");
	CHECK_STR(mqtt_type_str(16), "RESERVED");
	CHECK_STR(mqtt_type_str(255), "RESERVED");

	CHECK_EQ_INT(mqtt_rc_to_v3_connack(0x00), MQTT_V3_ACCEPTED);
	CHECK_EQ_INT(mqtt_rc_to_v3_connack(0x84), MQTT_V3_BAD_PROTOCOL_VERSION);
	CHECK_EQ_INT(mqtt_rc_to_v3_connack(0x85), MQTT_V3_IDENTIFIER_REJECTED);
	CHECK_EQ_INT(mqtt_rc_to_v3_connack(0x88), MQTT_V3_SERVER_UNAVAILABLE);
	CHECK_EQ_INT(mqtt_rc_to_v3_connack(0x89), MQTT_V3_SERVER_UNAVAILABLE);
	CHECK_EQ_INT(mqtt_rc_to_v3_connack(0x86), MQTT_V3_BAD_USERNAME_OR_PASSWORD);
	CHECK_EQ_INT(mqtt_rc_to_v3_connack(0x87), MQTT_V3_NOT_AUTHORIZED);
	CHECK_EQ_INT(mqtt_rc_to_v3_connack(0x8A), MQTT_V3_NOT_AUTHORIZED);
	CHECK_EQ_INT(mqtt_rc_to_v3_connack(0x8C), MQTT_V3_NOT_AUTHORIZED);
	CHECK_EQ_INT(mqtt_rc_to_v3_connack(0x81), MQTT_V3_NOT_AUTHORIZED);
	CHECK_EQ_INT(mqtt_rc_to_v3_connack(0x80), MQTT_V3_SERVER_UNAVAILABLE);
	CHECK_EQ_INT(mqtt_rc_to_v3_connack(0x97), MQTT_V3_SERVER_UNAVAILABLE);
	CHECK_EQ_INT(mqtt_rc_to_v3_connack(0x9C), MQTT_V3_SERVER_UNAVAILABLE);
	CHECK_EQ_INT(mqtt_rc_to_v3_connack(0x9F), MQTT_V3_SERVER_UNAVAILABLE);
	for (int rc = 0x80; rc < 256; rc++) {
		uint8_t v3 = mqtt_rc_to_v3_connack((uint8_t)rc);
		CHECK(v3 >= 1 && v3 <= 5);
	}
}

/* ---- regressions found by fuzz/fuzz_mqtt.c ----
 * None so far: the target has run millions of inputs (every type, all three versions,
 * re-encode/re-decode equality) without a finding. Add each crashing input here as a
 * TEST with the exact expected reason code. */

int main(void)
{
	RUN(vectors_decode);
	RUN(vectors_prefixes);
	RUN(vectors_fields);
	RUN(frame_errors);
	RUN(varint_boundaries);
	RUN(frame_big_body);
	RUN(utf8);
	RUN(connect_errors);
	RUN(connack_errors);
	RUN(publish_errors);
	RUN(ack_errors);
	RUN(subscribe_errors);
	RUN(unsubscribe_errors);
	RUN(suback_unsuback_errors);
	RUN(small_packet_errors);
	RUN(props_allowed_table);
	RUN(props_duplicates);
	RUN(props_ranges);
	RUN(props_malformed);
	RUN(user_props);
	RUN(user_prop_append);
	RUN(roundtrip_connect);
	RUN(roundtrip_connack);
	RUN(roundtrip_publish);
	RUN(roundtrip_acks);
	RUN(roundtrip_subscribe);
	RUN(roundtrip_suback_unsub);
	RUN(roundtrip_small);
	RUN(encoders_filter_props);
	RUN(props_size_put);
	RUN(names);
	return unit_summary();
}
