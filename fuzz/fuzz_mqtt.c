/* libFuzzer target for the MQTT codec (src/mqtt/).
 *
 * Input: byte 0 picks the connection's protocol version (3, 4 or 5 = byte % 3 + 3) and,
 * with its top bit, a small maximum packet size (256) instead of 1 MiB. The rest is a
 * client byte stream: it is framed and decoded packet by packet, as the broker does;
 * a successful CONNECT switches the stream to its version. Every packet that decodes
 * is re-encoded, framed and decoded again; the key fields must agree, and encoding
 * that second decode must reproduce the first encoding byte for byte. Any mismatch
 * aborts. Each body is decoded from an exact-size heap copy so that ASan catches a
 * read past its end. Decoded views must lie inside the body, and a decoded user_props
 * view must hold exactly the packet's 0x26 entries (user_prop_count, user_props_bytes).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "mqtt/mqtt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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

#define CHECK(cond)              \
	do {                     \
		if (!(cond))     \
			abort(); \
	} while (0)

static uint8_t decode(uint8_t version, uint8_t type, uint8_t flags, const uint8_t *body, size_t len, union pkt *u)
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
	abort(); /* mqtt_frame never reports type 0 */
}

/* A decoded view lies inside the body it came from. */
static void in_body(struct mqtt_str s, const uint8_t *body, size_t len)
{
	if (s.len == 0)
		return;
	CHECK(s.p >= body && s.len <= len && (size_t)(s.p - body) <= len - s.len);
}

static bool str_eq(struct mqtt_str a, struct mqtt_str b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

static void props_in_body(const struct mqtt_props *p, const uint8_t *body, size_t len)
{
	in_body(p->content_type, body, len);
	in_body(p->response_topic, body, len);
	in_body(p->correlation_data, body, len);
	in_body(p->assigned_client_id, body, len);
	in_body(p->auth_method, body, len);
	in_body(p->auth_data, body, len);
	in_body(p->response_info, body, len);
	in_body(p->server_reference, body, len);
	in_body(p->reason_string, body, len);
	in_body(p->user_props, body, len);
	/* the view runs from the first 0x26 entry to the end of the last (other properties may
	 * sit between them, props.c): the iterator agrees with the count, the 0x26 entries add
	 * up to user_props_bytes and it walks to the view's end, every key and value is UTF-8 */
	size_t off = 0, bytes = 0;
	uint32_t n = 0;
	struct mqtt_str k, v;
	while (mqtt_user_props_next(p->user_props, &off, &k, &v)) {
		CHECK(mqtt_utf8_valid(k.p, k.len) && mqtt_utf8_valid(v.p, v.len));
		bytes += 5 + (size_t)k.len + v.len;
		n++;
	}
	CHECK(n == p->user_prop_count && bytes == p->user_props_bytes && off == p->user_props.len);
	CHECK(p->n_sub_ids <= 1);
}

static void props_eq(const struct mqtt_props *a, const struct mqtt_props *b)
{
	CHECK(a->present == b->present);
	uint32_t pr = a->present;
	CHECK(!(pr & MQTT_P_PAYLOAD_FORMAT) || a->payload_format == b->payload_format);
	CHECK(!(pr & MQTT_P_REQUEST_PROBLEM_INFO) || a->request_problem_info == b->request_problem_info);
	CHECK(!(pr & MQTT_P_REQUEST_RESPONSE_INFO) || a->request_response_info == b->request_response_info);
	CHECK(!(pr & MQTT_P_MAXIMUM_QOS) || a->maximum_qos == b->maximum_qos);
	CHECK(!(pr & MQTT_P_RETAIN_AVAILABLE) || a->retain_available == b->retain_available);
	CHECK(!(pr & MQTT_P_WILDCARD_SUB_AVAILABLE) || a->wildcard_sub_available == b->wildcard_sub_available);
	CHECK(!(pr & MQTT_P_SUB_ID_AVAILABLE) || a->sub_id_available == b->sub_id_available);
	CHECK(!(pr & MQTT_P_SHARED_SUB_AVAILABLE) || a->shared_sub_available == b->shared_sub_available);
	CHECK(!(pr & MQTT_P_SERVER_KEEP_ALIVE) || a->server_keep_alive == b->server_keep_alive);
	CHECK(!(pr & MQTT_P_RECEIVE_MAXIMUM) || a->receive_maximum == b->receive_maximum);
	CHECK(!(pr & MQTT_P_TOPIC_ALIAS_MAXIMUM) || a->topic_alias_maximum == b->topic_alias_maximum);
	CHECK(!(pr & MQTT_P_TOPIC_ALIAS) || a->topic_alias == b->topic_alias);
	CHECK(!(pr & MQTT_P_MESSAGE_EXPIRY) || a->message_expiry == b->message_expiry);
	CHECK(!(pr & MQTT_P_SESSION_EXPIRY) || a->session_expiry == b->session_expiry);
	CHECK(!(pr & MQTT_P_WILL_DELAY) || a->will_delay == b->will_delay);
	CHECK(!(pr & MQTT_P_MAXIMUM_PACKET_SIZE) || a->maximum_packet_size == b->maximum_packet_size);
	CHECK(!(pr & MQTT_P_CONTENT_TYPE) || str_eq(a->content_type, b->content_type));
	CHECK(!(pr & MQTT_P_RESPONSE_TOPIC) || str_eq(a->response_topic, b->response_topic));
	CHECK(!(pr & MQTT_P_CORRELATION_DATA) || str_eq(a->correlation_data, b->correlation_data));
	CHECK(!(pr & MQTT_P_ASSIGNED_CLIENT_ID) || str_eq(a->assigned_client_id, b->assigned_client_id));
	CHECK(!(pr & MQTT_P_AUTH_METHOD) || str_eq(a->auth_method, b->auth_method));
	CHECK(!(pr & MQTT_P_AUTH_DATA) || str_eq(a->auth_data, b->auth_data));
	CHECK(!(pr & MQTT_P_RESPONSE_INFO) || str_eq(a->response_info, b->response_info));
	CHECK(!(pr & MQTT_P_SERVER_REFERENCE) || str_eq(a->server_reference, b->server_reference));
	CHECK(!(pr & MQTT_P_REASON_STRING) || str_eq(a->reason_string, b->reason_string));
	CHECK(a->n_sub_ids == b->n_sub_ids);
	for (size_t i = 0; i < a->n_sub_ids; i++)
		CHECK(a->sub_ids[i] == b->sub_ids[i]);
	/* user properties: same pairs in the same order (the views may differ when other
	 * properties sat between user properties in the original) */
	CHECK(a->user_prop_count == b->user_prop_count);
	size_t oa = 0, ob = 0;
	struct mqtt_str ka, va, kb, vb;
	for (;;) {
		bool ha = mqtt_user_props_next(a->user_props, &oa, &ka, &va);
		bool hb = mqtt_user_props_next(b->user_props, &ob, &kb, &vb);
		CHECK(ha == hb);
		if (!ha)
			break;
		CHECK(str_eq(ka, kb) && str_eq(va, vb));
	}
}

/* Views of a decoded packet must lie inside its body. */
static void views_in_body(uint8_t type, const union pkt *u, const uint8_t *body, size_t len)
{
	switch (type) {
	case MQTT_CONNECT:
		in_body(u->connect.client_id, body, len);
		in_body(u->connect.username, body, len);
		in_body(u->connect.password, body, len);
		in_body(u->connect.will_topic, body, len);
		in_body(u->connect.will_payload, body, len);
		props_in_body(&u->connect.props, body, len);
		props_in_body(&u->connect.will_props, body, len);
		CHECK(mqtt_utf8_valid(u->connect.client_id.p, u->connect.client_id.len));
		break;
	case MQTT_CONNACK:
		props_in_body(&u->connack.props, body, len);
		break;
	case MQTT_PUBLISH:
		in_body(u->publish.topic, body, len);
		in_body(u->publish.payload, body, len);
		props_in_body(&u->publish.props, body, len);
		CHECK(mqtt_utf8_valid(u->publish.topic.p, u->publish.topic.len));
		CHECK(u->publish.qos <= 2 && (u->publish.qos == 0) == (u->publish.packet_id == 0));
		break;
	case MQTT_PUBACK:
	case MQTT_PUBREC:
	case MQTT_PUBREL:
	case MQTT_PUBCOMP:
		props_in_body(&u->ack.props, body, len);
		CHECK(u->ack.packet_id != 0);
		break;
	case MQTT_SUBSCRIBE:
		in_body(u->subscribe.entries, body, len);
		props_in_body(&u->subscribe.props, body, len);
		CHECK(u->subscribe.count >= 1);
		break;
	case MQTT_SUBACK:
		in_body(u->suback.codes, body, len);
		props_in_body(&u->suback.props, body, len);
		break;
	case MQTT_UNSUBSCRIBE:
		in_body(u->unsubscribe.entries, body, len);
		props_in_body(&u->unsubscribe.props, body, len);
		CHECK(u->unsubscribe.count >= 1);
		break;
	case MQTT_UNSUBACK:
		in_body(u->unsuback.codes, body, len);
		props_in_body(&u->unsuback.props, body, len);
		break;
	case MQTT_DISCONNECT:
		props_in_body(&u->disconnect.props, body, len);
		break;
	case MQTT_AUTH:
		props_in_body(&u->auth.props, body, len);
		break;
	}
}

/* Encode a decoded packet; returns the encoder's reported size. */
static size_t encode(struct buf *b, uint8_t version, uint8_t type, const union pkt *u)
{
	size_t n = 0, i = 0, off = 0;
	struct mqtt_str *filters;
	uint8_t *opts;
	switch (type) {
	case MQTT_CONNECT:
		return mqtt_encode_connect(b, &u->connect);
	case MQTT_CONNACK:
		return mqtt_encode_connack(b, version, u->connack.session_present, u->connack.rc, &u->connack.props);
	case MQTT_PUBLISH:
		n = mqtt_encode_publish(b, version, &u->publish);
		CHECK(n == mqtt_publish_size(version, &u->publish));
		return n;
	case MQTT_PUBACK:
	case MQTT_PUBREC:
	case MQTT_PUBREL:
	case MQTT_PUBCOMP:
		return mqtt_encode_ack(b, version, type, u->ack.packet_id, u->ack.rc, &u->ack.props);
	case MQTT_SUBSCRIBE:
		filters = calloc(u->subscribe.count, sizeof *filters);
		opts = calloc(u->subscribe.count, 1);
		CHECK(filters && opts);
		while (mqtt_subscribe_next(&u->subscribe, &off, &filters[i], &opts[i])) {
			CHECK(i < u->subscribe.count);
			i++;
		}
		CHECK(i == u->subscribe.count);
		n = mqtt_encode_subscribe(b, version, u->subscribe.packet_id, &u->subscribe.props, filters, opts, i);
		free(filters);
		free(opts);
		return n;
	case MQTT_SUBACK:
		return mqtt_encode_suback(b, version, u->suback.packet_id, &u->suback.props, u->suback.codes.p,
					  u->suback.codes.len);
	case MQTT_UNSUBSCRIBE:
		filters = calloc(u->unsubscribe.count, sizeof *filters);
		CHECK(filters);
		while (mqtt_unsubscribe_next(&u->unsubscribe, &off, &filters[i])) {
			CHECK(i < u->unsubscribe.count);
			i++;
		}
		CHECK(i == u->unsubscribe.count);
		n = mqtt_encode_unsubscribe(b, version, u->unsubscribe.packet_id, &u->unsubscribe.props, filters, i);
		free(filters);
		return n;
	case MQTT_UNSUBACK:
		return mqtt_encode_unsuback(b, version, u->unsuback.packet_id, &u->unsuback.props, u->unsuback.codes.p,
					    u->unsuback.codes.len);
	case MQTT_PINGREQ:
	case MQTT_PINGRESP:
		return mqtt_encode_empty(b, type);
	case MQTT_DISCONNECT:
		return mqtt_encode_disconnect(b, version, u->disconnect.rc, &u->disconnect.props);
	case MQTT_AUTH:
		return mqtt_encode_auth(b, u->auth.rc, &u->auth.props);
	}
	abort();
}

static void entries_eq(const struct mqtt_subscribe *a, const struct mqtt_subscribe *b)
{
	CHECK(a->packet_id == b->packet_id && a->count == b->count);
	size_t oa = 0, ob = 0;
	struct mqtt_str fa, fb;
	uint8_t pa, pb;
	while (mqtt_subscribe_next(a, &oa, &fa, &pa)) {
		CHECK(mqtt_subscribe_next(b, &ob, &fb, &pb));
		CHECK(str_eq(fa, fb) && pa == pb);
	}
	CHECK(!mqtt_subscribe_next(b, &ob, &fb, &pb));
}

static void pkt_eq(uint8_t type, const union pkt *a, const union pkt *b)
{
	switch (type) {
	case MQTT_CONNECT: {
		const struct mqtt_connect *x = &a->connect, *y = &b->connect;
		CHECK(x->version == y->version && x->clean_start == y->clean_start && x->keepalive == y->keepalive);
		CHECK(str_eq(x->client_id, y->client_id));
		CHECK(x->has_username == y->has_username && x->has_password == y->has_password);
		CHECK(str_eq(x->username, y->username) && str_eq(x->password, y->password));
		CHECK(x->will == y->will && x->will_qos == y->will_qos && x->will_retain == y->will_retain);
		CHECK(str_eq(x->will_topic, y->will_topic) && str_eq(x->will_payload, y->will_payload));
		props_eq(&x->props, &y->props);
		props_eq(&x->will_props, &y->will_props);
		break;
	}
	case MQTT_CONNACK:
		CHECK(a->connack.session_present == b->connack.session_present && a->connack.rc == b->connack.rc);
		props_eq(&a->connack.props, &b->connack.props);
		break;
	case MQTT_PUBLISH: {
		const struct mqtt_publish *x = &a->publish, *y = &b->publish;
		CHECK(x->qos == y->qos && x->dup == y->dup && x->retain == y->retain && x->packet_id == y->packet_id);
		CHECK(str_eq(x->topic, y->topic) && str_eq(x->payload, y->payload));
		props_eq(&x->props, &y->props);
		break;
	}
	case MQTT_PUBACK:
	case MQTT_PUBREC:
	case MQTT_PUBREL:
	case MQTT_PUBCOMP:
		CHECK(a->ack.packet_id == b->ack.packet_id && a->ack.rc == b->ack.rc);
		props_eq(&a->ack.props, &b->ack.props);
		break;
	case MQTT_SUBSCRIBE:
		entries_eq(&a->subscribe, &b->subscribe);
		props_eq(&a->subscribe.props, &b->subscribe.props);
		break;
	case MQTT_SUBACK:
		CHECK(a->suback.packet_id == b->suback.packet_id && str_eq(a->suback.codes, b->suback.codes));
		props_eq(&a->suback.props, &b->suback.props);
		break;
	case MQTT_UNSUBSCRIBE: {
		CHECK(a->unsubscribe.packet_id == b->unsubscribe.packet_id && a->unsubscribe.count == b->unsubscribe.count);
		size_t oa = 0, ob = 0;
		struct mqtt_str fa, fb;
		while (mqtt_unsubscribe_next(&a->unsubscribe, &oa, &fa)) {
			CHECK(mqtt_unsubscribe_next(&b->unsubscribe, &ob, &fb));
			CHECK(str_eq(fa, fb));
		}
		CHECK(!mqtt_unsubscribe_next(&b->unsubscribe, &ob, &fb));
		props_eq(&a->unsubscribe.props, &b->unsubscribe.props);
		break;
	}
	case MQTT_UNSUBACK:
		CHECK(a->unsuback.packet_id == b->unsuback.packet_id && str_eq(a->unsuback.codes, b->unsuback.codes));
		props_eq(&a->unsuback.props, &b->unsuback.props);
		break;
	case MQTT_DISCONNECT:
		CHECK(a->disconnect.rc == b->disconnect.rc);
		props_eq(&a->disconnect.props, &b->disconnect.props);
		break;
	case MQTT_AUTH:
		CHECK(a->auth.rc == b->auth.rc);
		props_eq(&a->auth.props, &b->auth.props);
		break;
	}
}

/* Frame one complete packet that must fill buf exactly, and decode it. */
static void reframe(const struct buf *b, uint8_t version, uint8_t type, union pkt *out)
{
	struct mqtt_fixed fx;
	uint8_t rc;
	CHECK(mqtt_frame(b->data, b->len, UINT32_MAX, &fx, &rc) == MQTT_PARSE_OK);
	CHECK(fx.type == type && fx.header_len + fx.remaining == b->len);
	CHECK(decode(version, fx.type, fx.flags, b->data + fx.header_len, fx.remaining, out) == MQTT_RC_SUCCESS);
}

/* The packet's property block; CONNECT's will properties in *second. */
static struct mqtt_props *props_of(uint8_t type, union pkt *u, struct mqtt_props **second)
{
	*second = NULL;
	switch (type) {
	case MQTT_CONNECT:
		*second = &u->connect.will_props;
		return &u->connect.props;
	case MQTT_CONNACK: return &u->connack.props;
	case MQTT_PUBLISH: return &u->publish.props;
	case MQTT_PUBACK:
	case MQTT_PUBREC:
	case MQTT_PUBREL:
	case MQTT_PUBCOMP: return &u->ack.props;
	case MQTT_SUBSCRIBE: return &u->subscribe.props;
	case MQTT_SUBACK: return &u->suback.props;
	case MQTT_UNSUBSCRIBE: return &u->unsubscribe.props;
	case MQTT_UNSUBACK: return &u->unsuback.props;
	case MQTT_DISCONNECT: return &u->disconnect.props;
	case MQTT_AUTH: return &u->auth.props;
	}
	return NULL;
}

/* Encoders write a user_props view verbatim (the broker's forwardable properties ride in
 * it). A decoded view with other properties between the user properties is copied entry
 * by entry first, as the broker does (msg_props_forward). */
static void clean_user_props(struct mqtt_props *p, struct buf *store)
{
	if (!p || p->user_props_bytes == p->user_props.len)
		return;
	size_t off = 0;
	struct mqtt_str k, v;
	while (mqtt_user_props_next(p->user_props, &off, &k, &v))
		mqtt_user_prop_append(store, (const char *)k.p, k.len, (const char *)v.p, v.len);
	CHECK(store->len == p->user_props_bytes);
	p->user_props.p = store->data;
	p->user_props.len = (uint32_t)store->len;
}

static void roundtrip(uint8_t version, uint8_t type, const union pkt *orig)
{
	struct buf e1 = { 0 }, e2 = { 0 }, up1 = { 0 }, up2 = { 0 };
	union pkt d1, d2, copy = *orig;
	const union pkt *u = &copy;
	struct mqtt_props *second;
	clean_user_props(props_of(type, &copy, &second), &up1);
	clean_user_props(second, &up2);
	uint8_t v = type == MQTT_CONNECT ? u->connect.version : version;

	CHECK(encode(&e1, v, type, u) == e1.len);
	reframe(&e1, v, type, &d1);
	pkt_eq(type, u, &d1);
	CHECK(encode(&e2, v, type, &d1) == e2.len);
	CHECK(e1.len == e2.len && memcmp(e1.data, e2.data, e1.len) == 0);
	reframe(&e2, v, type, &d2);
	pkt_eq(type, &d1, &d2);
	buf_free(&e1);
	buf_free(&e2);
	buf_free(&up1);
	buf_free(&up2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t version = (uint8_t)(3 + data[0] % 3);
	uint32_t max_size = (data[0] & 0x80) ? 256 : 1u << 20;
	data++;
	size--;

	while (size > 0) {
		struct mqtt_fixed fx;
		uint8_t rc = 0xEE;
		int r = mqtt_frame(data, size, max_size, &fx, &rc);
		if (r == MQTT_PARSE_NEED_MORE)
			break;
		if (r == MQTT_PARSE_ERROR) {
			CHECK(rc == MQTT_RC_MALFORMED || rc == MQTT_RC_PACKET_TOO_LARGE);
			break;
		}
		CHECK(r == MQTT_PARSE_OK && fx.type >= 1 && fx.type <= 15);
		size_t n = (size_t)fx.header_len + fx.remaining;
		CHECK(fx.header_len >= 2 && fx.header_len <= 5 && n <= size && n <= max_size);

		uint8_t *body = malloc(fx.remaining ? fx.remaining : 1);
		CHECK(body);
		memcpy(body, data + fx.header_len, fx.remaining);
		union pkt u;
		uint8_t drc = decode(version, fx.type, fx.flags, body, fx.remaining, &u);
		CHECK(drc == MQTT_RC_SUCCESS || drc >= 0x80);
		CHECK(mqtt_rc_str(drc) != NULL && mqtt_type_str(fx.type) != NULL);
		if (drc == MQTT_RC_SUCCESS) {
			views_in_body(fx.type, &u, body, fx.remaining);
			roundtrip(version, fx.type, &u);
			if (fx.type == MQTT_CONNECT)
				version = u.connect.version;
		}
		free(body);
		data += n;
		size -= n;
	}
	return 0;
}
