/* MQTT 3.1, 3.1.1 and 5.0 codec.
 *
 * Decoding is a pure function over bytes: no allocation, no syscalls, no globals.
 * Every string, binary field, payload and property block in a decoded packet is a
 * view (struct mqtt_str) pointing into the caller's input buffer, valid as long as
 * that buffer is. Every length is checked against what is left of its enclosing
 * field before any pointer moves.
 *
 * Two steps:
 *   1. mqtt_frame() finds one packet in a byte stream: complete / need more / error.
 *   2. mqtt_decode_<type>() decodes the body (the Remaining Length bytes) of a framed
 *      packet. It returns MQTT_RC_SUCCESS or the v5 reason code that describes the
 *      failure (MQTT_RC_MALFORMED, MQTT_RC_PROTOCOL_ERROR, ...), which the broker
 *      sends in DISCONNECT/CONNACK for v5 clients.
 *
 * Encoding appends complete packets to a struct buf (core/buf.h). Properties are
 * written only for version 5 and silently omitted for 3/4.
 */
#ifndef BW_MQTT_H
#define BW_MQTT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

enum mqtt_version {
	MQTT_V31 = 3,  /* protocol name "MQIsdp" */
	MQTT_V311 = 4, /* protocol name "MQTT" */
	MQTT_V5 = 5,   /* protocol name "MQTT" */
};

enum mqtt_type {
	MQTT_CONNECT = 1,
	MQTT_CONNACK = 2,
	MQTT_PUBLISH = 3,
	MQTT_PUBACK = 4,
	MQTT_PUBREC = 5,
	MQTT_PUBREL = 6,
	MQTT_PUBCOMP = 7,
	MQTT_SUBSCRIBE = 8,
	MQTT_SUBACK = 9,
	MQTT_UNSUBSCRIBE = 10,
	MQTT_UNSUBACK = 11,
	MQTT_PINGREQ = 12,
	MQTT_PINGRESP = 13,
	MQTT_DISCONNECT = 14,
	MQTT_AUTH = 15,
};

/* MQTT 5 reason codes. v3 CONNACK return codes are separate (enum mqtt_v3_connack). */
enum mqtt_rc {
	MQTT_RC_SUCCESS = 0x00, /* also: normal disconnection, granted QoS 0 */
	MQTT_RC_GRANTED_QOS1 = 0x01,
	MQTT_RC_GRANTED_QOS2 = 0x02,
	MQTT_RC_DISCONNECT_WITH_WILL = 0x04,
	MQTT_RC_NO_MATCHING_SUBSCRIBERS = 0x10,
	MQTT_RC_NO_SUBSCRIPTION_EXISTED = 0x11,
	MQTT_RC_CONTINUE_AUTHENTICATION = 0x18,
	MQTT_RC_REAUTHENTICATE = 0x19,
	MQTT_RC_UNSPECIFIED = 0x80,
	MQTT_RC_MALFORMED = 0x81,
	MQTT_RC_PROTOCOL_ERROR = 0x82,
	MQTT_RC_IMPL_SPECIFIC = 0x83,
	MQTT_RC_UNSUPPORTED_VERSION = 0x84,
	MQTT_RC_CLIENT_ID_NOT_VALID = 0x85,
	MQTT_RC_BAD_USERNAME_OR_PASSWORD = 0x86,
	MQTT_RC_NOT_AUTHORIZED = 0x87,
	MQTT_RC_SERVER_UNAVAILABLE = 0x88,
	MQTT_RC_SERVER_BUSY = 0x89,
	MQTT_RC_BANNED = 0x8A,
	MQTT_RC_SERVER_SHUTTING_DOWN = 0x8B,
	MQTT_RC_BAD_AUTH_METHOD = 0x8C,
	MQTT_RC_KEEP_ALIVE_TIMEOUT = 0x8D,
	MQTT_RC_SESSION_TAKEN_OVER = 0x8E,
	MQTT_RC_TOPIC_FILTER_INVALID = 0x8F,
	MQTT_RC_TOPIC_NAME_INVALID = 0x90,
	MQTT_RC_PACKET_ID_IN_USE = 0x91,
	MQTT_RC_PACKET_ID_NOT_FOUND = 0x92,
	MQTT_RC_RECEIVE_MAX_EXCEEDED = 0x93,
	MQTT_RC_TOPIC_ALIAS_INVALID = 0x94,
	MQTT_RC_PACKET_TOO_LARGE = 0x95,
	MQTT_RC_MESSAGE_RATE_TOO_HIGH = 0x96,
	MQTT_RC_QUOTA_EXCEEDED = 0x97,
	MQTT_RC_ADMINISTRATIVE_ACTION = 0x98,
	MQTT_RC_PAYLOAD_FORMAT_INVALID = 0x99,
	MQTT_RC_RETAIN_NOT_SUPPORTED = 0x9A,
	MQTT_RC_QOS_NOT_SUPPORTED = 0x9B,
	MQTT_RC_USE_ANOTHER_SERVER = 0x9C,
	MQTT_RC_SERVER_MOVED = 0x9D,
	MQTT_RC_SHARED_SUB_NOT_SUPPORTED = 0x9E,
	MQTT_RC_CONNECTION_RATE_EXCEEDED = 0x9F,
	MQTT_RC_MAX_CONNECT_TIME = 0xA0,
	MQTT_RC_SUB_IDS_NOT_SUPPORTED = 0xA1,
	MQTT_RC_WILDCARD_SUBS_NOT_SUPPORTED = 0xA2,
};

/* CONNACK return codes for MQTT 3.1 / 3.1.1. */
enum mqtt_v3_connack {
	MQTT_V3_ACCEPTED = 0,
	MQTT_V3_BAD_PROTOCOL_VERSION = 1,
	MQTT_V3_IDENTIFIER_REJECTED = 2,
	MQTT_V3_SERVER_UNAVAILABLE = 3,
	MQTT_V3_BAD_USERNAME_OR_PASSWORD = 4,
	MQTT_V3_NOT_AUTHORIZED = 5,
};

/* Short name of a reason code ("malformed packet"), for log lines. */
const char *mqtt_rc_str(uint8_t rc);
/* Name of a packet type ("PUBLISH"), or "RESERVED". */
const char *mqtt_type_str(uint8_t type);
/* Map a v5 CONNACK reason code to the closest v3 return code (0x86->4, 0x87->5, 0x8A->5,
 * 0x84->1, 0x85->2, 0x88/0x89->3, other failures->5 or 3 as the 3.1.1 table suggests). */
uint8_t mqtt_rc_to_v3_connack(uint8_t rc);

/* A view into the input: a UTF-8 string, binary data or a raw byte range. */
struct mqtt_str {
	const uint8_t *p;
	uint32_t len;
};

/* MQTT 5 property identifiers. */
enum mqtt_prop_id {
	MQTT_PROP_PAYLOAD_FORMAT = 0x01,          /* byte */
	MQTT_PROP_MESSAGE_EXPIRY = 0x02,          /* u32 */
	MQTT_PROP_CONTENT_TYPE = 0x03,            /* utf8 */
	MQTT_PROP_RESPONSE_TOPIC = 0x08,          /* utf8 */
	MQTT_PROP_CORRELATION_DATA = 0x09,        /* binary */
	MQTT_PROP_SUBSCRIPTION_ID = 0x0B,         /* varint (1..268435455) */
	MQTT_PROP_SESSION_EXPIRY = 0x11,          /* u32 */
	MQTT_PROP_ASSIGNED_CLIENT_ID = 0x12,      /* utf8 */
	MQTT_PROP_SERVER_KEEP_ALIVE = 0x13,       /* u16 */
	MQTT_PROP_AUTH_METHOD = 0x15,             /* utf8 */
	MQTT_PROP_AUTH_DATA = 0x16,               /* binary */
	MQTT_PROP_REQUEST_PROBLEM_INFO = 0x17,    /* byte 0/1 */
	MQTT_PROP_WILL_DELAY = 0x18,              /* u32 */
	MQTT_PROP_REQUEST_RESPONSE_INFO = 0x19,   /* byte 0/1 */
	MQTT_PROP_RESPONSE_INFO = 0x1A,           /* utf8 */
	MQTT_PROP_SERVER_REFERENCE = 0x1C,        /* utf8 */
	MQTT_PROP_REASON_STRING = 0x1F,           /* utf8 */
	MQTT_PROP_RECEIVE_MAXIMUM = 0x21,         /* u16, must be > 0 */
	MQTT_PROP_TOPIC_ALIAS_MAXIMUM = 0x22,     /* u16 */
	MQTT_PROP_TOPIC_ALIAS = 0x23,             /* u16, must be > 0 */
	MQTT_PROP_MAXIMUM_QOS = 0x24,             /* byte 0/1 */
	MQTT_PROP_RETAIN_AVAILABLE = 0x25,        /* byte 0/1 */
	MQTT_PROP_USER_PROPERTY = 0x26,           /* utf8 pair, may repeat */
	MQTT_PROP_MAXIMUM_PACKET_SIZE = 0x27,     /* u32, must be > 0 */
	MQTT_PROP_WILDCARD_SUB_AVAILABLE = 0x28,  /* byte 0/1 */
	MQTT_PROP_SUB_ID_AVAILABLE = 0x29,        /* byte 0/1 */
	MQTT_PROP_SHARED_SUB_AVAILABLE = 0x2A,    /* byte 0/1 */
};

/* Presence bits for struct mqtt_props.present. */
enum mqtt_prop_bit {
	MQTT_P_PAYLOAD_FORMAT = 1u << 0,
	MQTT_P_MESSAGE_EXPIRY = 1u << 1,
	MQTT_P_CONTENT_TYPE = 1u << 2,
	MQTT_P_RESPONSE_TOPIC = 1u << 3,
	MQTT_P_CORRELATION_DATA = 1u << 4,
	MQTT_P_SUBSCRIPTION_ID = 1u << 5,
	MQTT_P_SESSION_EXPIRY = 1u << 6,
	MQTT_P_ASSIGNED_CLIENT_ID = 1u << 7,
	MQTT_P_SERVER_KEEP_ALIVE = 1u << 8,
	MQTT_P_AUTH_METHOD = 1u << 9,
	MQTT_P_AUTH_DATA = 1u << 10,
	MQTT_P_REQUEST_PROBLEM_INFO = 1u << 11,
	MQTT_P_WILL_DELAY = 1u << 12,
	MQTT_P_REQUEST_RESPONSE_INFO = 1u << 13,
	MQTT_P_RESPONSE_INFO = 1u << 14,
	MQTT_P_SERVER_REFERENCE = 1u << 15,
	MQTT_P_REASON_STRING = 1u << 16,
	MQTT_P_RECEIVE_MAXIMUM = 1u << 17,
	MQTT_P_TOPIC_ALIAS_MAXIMUM = 1u << 18,
	MQTT_P_TOPIC_ALIAS = 1u << 19,
	MQTT_P_MAXIMUM_QOS = 1u << 20,
	MQTT_P_RETAIN_AVAILABLE = 1u << 21,
	MQTT_P_MAXIMUM_PACKET_SIZE = 1u << 22,
	MQTT_P_WILDCARD_SUB_AVAILABLE = 1u << 23,
	MQTT_P_SUB_ID_AVAILABLE = 1u << 24,
	MQTT_P_SHARED_SUB_AVAILABLE = 1u << 25,
};

#define MQTT_MAX_SUB_IDS 16 /* subscription identifiers carried on one outgoing PUBLISH */

/* Decoded (or to-be-encoded) MQTT 5 properties. Only fields whose bit is set in
 * `present` are meaningful. User properties are kept as one raw view of their encoded
 * entries (id, key, value), in order: decoded, it runs from the first 0x26 entry to the
 * end of the last, and other properties a sender put between them stay inside it
 * (user_props_bytes counts the 0x26 bytes alone: equal to user_props.len when the view is
 * one clean run). Walk it with mqtt_user_props_next. Encoders write the view verbatim. */
struct mqtt_props {
	uint32_t present;
	uint8_t payload_format;
	uint8_t request_problem_info;
	uint8_t request_response_info;
	uint8_t maximum_qos;
	uint8_t retain_available;
	uint8_t wildcard_sub_available;
	uint8_t sub_id_available;
	uint8_t shared_sub_available;
	uint16_t server_keep_alive;
	uint16_t receive_maximum;
	uint16_t topic_alias_maximum;
	uint16_t topic_alias;
	uint32_t message_expiry;
	uint32_t session_expiry;
	uint32_t will_delay;
	uint32_t maximum_packet_size;
	struct mqtt_str content_type;
	struct mqtt_str response_topic;
	struct mqtt_str correlation_data;
	struct mqtt_str assigned_client_id;
	struct mqtt_str auth_method;
	struct mqtt_str auth_data;
	struct mqtt_str response_info;
	struct mqtt_str server_reference;
	struct mqtt_str reason_string;
	struct mqtt_str user_props; /* decode: points into the input; encode: written verbatim */
	uint32_t user_prop_count;
	uint32_t user_props_bytes;  /* decode: bytes of the 0x26 entries within user_props */
	/* Subscription identifiers: one on SUBSCRIBE; up to MQTT_MAX_SUB_IDS on an outgoing
	 * PUBLISH (encode only; an incoming client PUBLISH carrying one is a protocol error). */
	uint8_t n_sub_ids;
	uint32_t sub_ids[MQTT_MAX_SUB_IDS];
};

/* Iterate user properties in a user_props view. *off starts at 0. Returns true and
 * fills key/value while entries remain. The view was validated by the decoder. */
bool mqtt_user_props_next(struct mqtt_str user_props, size_t *off, struct mqtt_str *key, struct mqtt_str *value);
/* Append one encoded user property (0x26, key, value) to a buf; used to build a
 * user_props view for encoding. */
void mqtt_user_prop_append(struct buf *b, const char *key, size_t klen, const char *val, size_t vlen);

/* ---- framing ---- */

enum mqtt_parse {
	MQTT_PARSE_OK = 0,
	MQTT_PARSE_NEED_MORE = 1,
	MQTT_PARSE_ERROR = -1,
};

struct mqtt_fixed {
	uint8_t type;        /* upper nibble of byte 0 */
	uint8_t flags;       /* lower nibble of byte 0 */
	uint8_t header_len;  /* 2..5: byte 0 plus the Remaining Length varint */
	uint32_t remaining;  /* Remaining Length */
};

/* Find one packet at the start of p[0..len).
 * OK: *out describes it; the packet spans header_len + remaining bytes, which are all present.
 * NEED_MORE: not enough bytes yet (a Remaining Length cut short is NEED_MORE).
 * ERROR: *rc = MQTT_RC_MALFORMED for a varint longer than 4 bytes or an overlong (non-minimal)
 *        encoding; MQTT_RC_PACKET_TOO_LARGE when header_len + remaining > max_size (reported as
 *        soon as the Remaining Length is known, before the body has arrived);
 *        MQTT_RC_MALFORMED for packet type 0.
 * Fixed-header flag checks belong to the body decoders, which receive the flags. */
int mqtt_frame(const uint8_t *p, size_t len, uint32_t max_size, struct mqtt_fixed *out, uint8_t *rc);

/* ---- decoded packets ---- */

struct mqtt_connect {
	uint8_t version;            /* enum mqtt_version */
	bool clean_start;           /* v3: Clean Session */
	uint16_t keepalive;
	struct mqtt_str client_id;
	bool has_username, has_password;
	struct mqtt_str username;
	struct mqtt_str password;   /* binary */
	bool will;
	uint8_t will_qos;
	bool will_retain;
	struct mqtt_str will_topic;
	struct mqtt_str will_payload; /* binary */
	struct mqtt_props props;      /* v5 CONNECT properties */
	struct mqtt_props will_props; /* v5 will properties */
};

struct mqtt_connack {
	bool session_present;
	uint8_t rc; /* v5 reason code or v3 return code, as on the wire */
	struct mqtt_props props;
};

struct mqtt_publish {
	uint8_t qos;
	bool dup;
	bool retain;
	struct mqtt_str topic;    /* may be empty in v5 when a Topic Alias is used */
	uint16_t packet_id;       /* 0 for QoS 0 */
	struct mqtt_props props;
	struct mqtt_str payload;  /* binary */
};

/* PUBACK, PUBREC, PUBREL, PUBCOMP. */
struct mqtt_ack {
	uint16_t packet_id;
	uint8_t rc; /* 0 when absent (v3 always, v5 when Remaining Length is 2) */
	struct mqtt_props props;
};

struct mqtt_subscribe {
	uint16_t packet_id;
	struct mqtt_props props; /* at most one subscription identifier */
	struct mqtt_str entries; /* raw (filter, options) list, validated; walk with mqtt_subscribe_next */
	uint32_t count;          /* >= 1 */
};

/* Subscription option bits (the options byte of a SUBSCRIBE entry). */
#define MQTT_SUBOPT_QOS_MASK 0x03
#define MQTT_SUBOPT_NO_LOCAL 0x04
#define MQTT_SUBOPT_RETAIN_AS_PUBLISHED 0x08
#define MQTT_SUBOPT_RETAIN_HANDLING_SHIFT 4
#define MQTT_SUBOPT_RETAIN_HANDLING_MASK 0x30

/* Walk SUBSCRIBE entries; *off starts at 0. */
bool mqtt_subscribe_next(const struct mqtt_subscribe *s, size_t *off, struct mqtt_str *filter, uint8_t *options);

struct mqtt_suback {
	uint16_t packet_id;
	struct mqtt_props props;
	struct mqtt_str codes; /* one byte per entry */
};

struct mqtt_unsubscribe {
	uint16_t packet_id;
	struct mqtt_props props;
	struct mqtt_str entries; /* raw filter list, validated */
	uint32_t count;          /* >= 1 */
};

/* Walk UNSUBSCRIBE filters; *off starts at 0. */
bool mqtt_unsubscribe_next(const struct mqtt_unsubscribe *u, size_t *off, struct mqtt_str *filter);

struct mqtt_unsuback {
	uint16_t packet_id;
	struct mqtt_props props;
	struct mqtt_str codes; /* v5 only; empty for v3 */
};

/* DISCONNECT (both directions) and AUTH. */
struct mqtt_disconnect {
	uint8_t rc; /* 0 when absent */
	struct mqtt_props props;
};

struct mqtt_auth {
	uint8_t rc; /* 0 when absent */
	struct mqtt_props props;
};

/* Body decoders. `flags` is the low nibble of the fixed header, `body`/`len` the
 * Remaining Length bytes. `version` is the connection's protocol version (CONNECT
 * determines it itself). Each returns MQTT_RC_SUCCESS or a reason code >= 0x80
 * (the full mapping is stated at the top of decode.c and props.c):
 *   MQTT_RC_MALFORMED       bad lengths or varints, bad UTF-8 (incl. U+0000, surrogates,
 *                           overlong), wrong fixed-header flags (incl. PUBLISH QoS 3, DUP
 *                           with QoS 0), trailing bytes, the reserved CONNECT flag, will QoS 3,
 *                           reserved subscription-option bits, a property not allowed in
 *                           this packet
 *   MQTT_RC_PROTOCOL_ERROR  a single-instance property repeated, a property value out of
 *                           range (payload format 2, receive maximum 0, ...), packet id 0
 *                           where one is required, an empty SUBSCRIBE/UNSUBSCRIBE, v3
 *                           password without username, will QoS/retain without the will
 *                           flag, v5 retain handling 3, a client PUBLISH carrying a
 *                           subscription identifier, an empty topic without a topic alias
 *   MQTT_RC_UNSUPPORTED_VERSION  CONNECT with an unknown protocol name/level pair
 * A protocol error does not stop decoding: a packet that is also malformed further on
 * returns MQTT_RC_MALFORMED. For CONNECT, out->version is filled as soon as it is known,
 * so the caller can answer in the right dialect even when the rest fails. */
uint8_t mqtt_decode_connect(uint8_t flags, const uint8_t *body, size_t len, struct mqtt_connect *out);
uint8_t mqtt_decode_connack(uint8_t version, uint8_t flags, const uint8_t *body, size_t len, struct mqtt_connack *out);
uint8_t mqtt_decode_publish(uint8_t version, uint8_t flags, const uint8_t *body, size_t len, struct mqtt_publish *out);
/* type is MQTT_PUBACK/PUBREC/PUBREL/PUBCOMP (PUBREL requires flags 0x2, the others 0). */
uint8_t mqtt_decode_ack(uint8_t version, uint8_t type, uint8_t flags, const uint8_t *body, size_t len, struct mqtt_ack *out);
uint8_t mqtt_decode_subscribe(uint8_t version, uint8_t flags, const uint8_t *body, size_t len, struct mqtt_subscribe *out);
uint8_t mqtt_decode_suback(uint8_t version, uint8_t flags, const uint8_t *body, size_t len, struct mqtt_suback *out);
uint8_t mqtt_decode_unsubscribe(uint8_t version, uint8_t flags, const uint8_t *body, size_t len, struct mqtt_unsubscribe *out);
uint8_t mqtt_decode_unsuback(uint8_t version, uint8_t flags, const uint8_t *body, size_t len, struct mqtt_unsuback *out);
/* PINGREQ / PINGRESP: flags must be 0 and len 0. */
uint8_t mqtt_decode_empty(uint8_t flags, size_t len);
uint8_t mqtt_decode_disconnect(uint8_t version, uint8_t flags, const uint8_t *body, size_t len, struct mqtt_disconnect *out);
uint8_t mqtt_decode_auth(uint8_t version, uint8_t flags, const uint8_t *body, size_t len, struct mqtt_auth *out);

/* True when s is well-formed MQTT UTF-8 (no U+0000, no surrogates, no overlong forms). */
bool mqtt_utf8_valid(const uint8_t *s, size_t len);

/* ---- encoding ---- */

/* Size of the Remaining Length varint for v (1..4). */
size_t mqtt_varint_size(uint32_t v);
/* Write v as a varint at p, return the byte after it. */
uint8_t *mqtt_varint_put(uint8_t *p, uint32_t v);
/* Encoded size of a property block including its length prefix (0 for version < 5 callers
 * should not call this). props may be NULL: size 1 (an empty block). */
size_t mqtt_props_size(const struct mqtt_props *props);
/* Write a property block (length varint + properties) at p; returns the byte after it. */
uint8_t *mqtt_props_put(uint8_t *p, const struct mqtt_props *props);

/* Every encoder appends one complete packet to b and returns its total size.
 * `props` may be NULL; it is ignored for versions 3/4. */
size_t mqtt_encode_connect(struct buf *b, const struct mqtt_connect *c);
size_t mqtt_encode_connack(struct buf *b, uint8_t version, bool session_present, uint8_t rc, const struct mqtt_props *props);
/* PUBLISH: qos, dup, retain, topic, packet_id (written when qos > 0), payload, props. */
size_t mqtt_encode_publish(struct buf *b, uint8_t version, const struct mqtt_publish *p);
/* Size the PUBLISH would take, for checking against a client's Maximum Packet Size. */
size_t mqtt_publish_size(uint8_t version, const struct mqtt_publish *p);
/* PUBACK/PUBREC/PUBREL/PUBCOMP. v5: the reason code and properties are omitted when rc is 0
 * and props is NULL or empty (the 2-byte short form). */
size_t mqtt_encode_ack(struct buf *b, uint8_t version, uint8_t type, uint16_t packet_id, uint8_t rc, const struct mqtt_props *props);
/* SUBSCRIBE: n filters with their option bytes. */
size_t mqtt_encode_subscribe(struct buf *b, uint8_t version, uint16_t packet_id, const struct mqtt_props *props,
			     const struct mqtt_str *filters, const uint8_t *options, size_t n);
/* SUBACK: n reason codes (v3: 0,1,2 or 0x80). */
size_t mqtt_encode_suback(struct buf *b, uint8_t version, uint16_t packet_id, const struct mqtt_props *props,
			  const uint8_t *codes, size_t n);
size_t mqtt_encode_unsubscribe(struct buf *b, uint8_t version, uint16_t packet_id, const struct mqtt_props *props,
			       const struct mqtt_str *filters, size_t n);
/* UNSUBACK: v5 carries n reason codes; v3 ignores codes/props. */
size_t mqtt_encode_unsuback(struct buf *b, uint8_t version, uint16_t packet_id, const struct mqtt_props *props,
			    const uint8_t *codes, size_t n);
/* PINGREQ / PINGRESP. */
size_t mqtt_encode_empty(struct buf *b, uint8_t type);
/* DISCONNECT: v5 writes reason code and props (short form when rc 0 and no props);
 * v3 writes the 2-byte packet. */
size_t mqtt_encode_disconnect(struct buf *b, uint8_t version, uint8_t rc, const struct mqtt_props *props);
size_t mqtt_encode_auth(struct buf *b, uint8_t rc, const struct mqtt_props *props);

#endif
