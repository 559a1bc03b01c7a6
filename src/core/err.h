/* Internal error codes, one enum generated with its strings.
 * MQTT reason codes are a separate type (mqtt/mqtt.h); do not mix them. */
#ifndef BW_ERR_H
#define BW_ERR_H

#define BW_ERRORS(X)                                             \
	X(BW_OK, "ok")                                           \
	X(BW_ERR_NOMEM, "out of memory")                         \
	X(BW_ERR_IO, "i/o error")                                \
	X(BW_ERR_AGAIN, "try again")                             \
	X(BW_ERR_CLOSED, "connection closed")                    \
	X(BW_ERR_PROTOCOL, "protocol error")                     \
	X(BW_ERR_CONFIG, "configuration error")                  \
	X(BW_ERR_TLS, "tls error")                               \
	X(BW_ERR_STORE, "store error")                           \
	X(BW_ERR_NOTFOUND, "not found")                          \
	X(BW_ERR_EXISTS, "already exists")                       \
	X(BW_ERR_INVALID, "invalid argument")                    \
	X(BW_ERR_LIMIT, "limit reached")

enum bw_err {
#define BW_ERR_ENUM(name, str) name,
	BW_ERRORS(BW_ERR_ENUM)
#undef BW_ERR_ENUM
};

/* Human-readable string for an error code. */
const char *bw_strerror(enum bw_err e);

#endif
