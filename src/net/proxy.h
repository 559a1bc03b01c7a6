/* PROXY protocol (HAProxy's proxy-protocol.txt), versions 1 and 2: a pure parser over
 * bytes, like the MQTT codec. No allocation, no system calls, no global state.
 *
 *   v1: one line of text, at most 107 bytes with its CRLF:
 *       "PROXY TCP4 192.0.2.1 198.51.100.2 56324 1883\r\n", "PROXY TCP6 ...", "PROXY UNKNOWN ...\r\n"
 *   v2: a 16-byte binary header (12-byte signature, version/command, family/protocol,
 *       big-endian length) followed by `length` bytes: the address block, then TLVs.
 *       Understood TLVs: PP2_TYPE_AUTHORITY (the client's SNI), PP2_TYPE_CRC32C
 *       (checked), PP2_TYPE_SSL (client flags, verify result, and the sub-TLVs
 *       SSL_VERSION, SSL_CN, SSL_CIPHER, SSL_SIG_ALG, SSL_KEY_ALG). Others are skipped,
 *       but every length is checked against its enclosing length.
 *
 * Identity rule (SPEC §4): a header gives a certificate identity only when the proxy
 * says the client used TLS, presented a certificate, and the verify result is 0; then the
 * CN is the identity (DN = CN, no SANs, as EMQX). proxy_verified_cn() applies that rule.
 */
#ifndef BW_PROXY_H
#define BW_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define PROXY_V1_MAX 107u               /* longest v1 line, CRLF included */
#define PROXY_V2_HDR 16u                /* fixed part of a v2 header */
#define PROXY_V2_MAX (16u + 65535u)     /* longest v2 header */
#define PROXY_AUTHORITY_MAX 255u        /* longest PP2_TYPE_AUTHORITY accepted (a DNS name) */
#define PROXY_CN_MAX 256u               /* longest SSL_CN accepted: 64 characters of UTF-8 */

/* v2 wire constants. */
#define PP2_CMD_LOCAL 0x0
#define PP2_CMD_PROXY 0x1
#define PP2_TYPE_ALPN 0x01
#define PP2_TYPE_AUTHORITY 0x02
#define PP2_TYPE_CRC32C 0x03
#define PP2_TYPE_NOOP 0x04
#define PP2_TYPE_UNIQUE_ID 0x05
#define PP2_TYPE_SSL 0x20
#define PP2_SUBTYPE_SSL_VERSION 0x21
#define PP2_SUBTYPE_SSL_CN 0x22
#define PP2_SUBTYPE_SSL_CIPHER 0x23
#define PP2_SUBTYPE_SSL_SIG_ALG 0x24
#define PP2_SUBTYPE_SSL_KEY_ALG 0x25
#define PP2_TYPE_NETNS 0x30
#define PP2_CLIENT_SSL 0x01
#define PP2_CLIENT_CERT_CONN 0x02
#define PP2_CLIENT_CERT_SESS 0x04

/* The 12-byte v2 signature. */
extern const uint8_t proxy_v2_signature[12];

/* What the start of a stream is. */
enum proxy_detect {
	PROXY_DETECT_MORE,  /* the bytes so far are a prefix of a signature: wait */
	PROXY_DETECT_NONE,  /* not a PROXY header (MQTT, TLS, anything else) */
	PROXY_DETECT_V1,    /* starts with "PROXY" */
	PROXY_DETECT_V2,    /* starts with the 12-byte v2 signature */
};

enum proxy_result {
	PROXY_OK,           /* a complete, valid header */
	PROXY_NEED_MORE,    /* a valid prefix of a header */
	PROXY_INVALID,      /* not a valid header */
};

/* What a header says. Strings are NUL-terminated; lengths exclude the NUL. */
struct proxy_info {
	uint8_t version;                  /* 1 or 2 */
	bool local;                       /* no client address: v2 LOCAL, v1 UNKNOWN, v2 UNSPEC/UNIX/UDP
					   * family; use the connection's own endpoints */
	bool command_local;               /* v2 LOCAL command (a health check): no identity either */
	struct sockaddr_storage src, dst; /* the client and the address it connected to (when !local) */
	socklen_t src_len, dst_len;
	bool has_authority;               /* PP2_TYPE_AUTHORITY present */
	char authority[PROXY_AUTHORITY_MAX + 1];
	size_t authority_len;
	bool has_ssl;                     /* PP2_TYPE_SSL present */
	bool ssl;                         /* PP2_CLIENT_SSL: the client connected over TLS */
	bool cert_presented;              /* PP2_CLIENT_CERT_CONN or PP2_CLIENT_CERT_SESS */
	bool cert_verified;               /* ssl, cert_presented and verify == 0 */
	uint32_t verify;                  /* the verify field (0 = verified) */
	bool has_cn;                      /* PP2_SUBTYPE_SSL_CN present */
	char cn[PROXY_CN_MAX + 1];
	size_t cn_len;
	char ssl_version[32];             /* informational, truncated; "" when absent */
	char cipher[64];                  /* informational, truncated; "" when absent */
	struct sockaddr_storage via;      /* not from the header: the connection layer sets it to the
					   * proxy's own TCP address (proxy_parse leaves it zeroed) */
};

/* Classify the first len bytes of a connection. Pure; reads at most 12 bytes. */
enum proxy_detect proxy_detect(const uint8_t *p, size_t len);

/* Parse the header at p[0..len).
 *   PROXY_OK:        *used = the header's length (the bytes to consume); *out filled.
 *   PROXY_NEED_MORE: p is a valid prefix; *used = the total length once it is known (v2
 *                    after 16 bytes), else 0. Reads only p[0..len).
 *   PROXY_INVALID:   *err = a static reason ("bad v2 signature", ...).
 * *out is zeroed first on every call; err may be NULL. */
enum proxy_result proxy_parse(const uint8_t *p, size_t len, struct proxy_info *out, size_t *used,
			      const char **err);

/* The certificate identity the header gives: the CN when the client used TLS, presented a
 * certificate that the proxy verified (verify == 0) and the CN is not empty; else NULL.
 * The string belongs to info. */
const char *proxy_verified_cn(const struct proxy_info *info);

/* CRC32c (Castagnoli, RFC 4960 appendix B) of p[0..len), continuing from crc (start with 0). */
uint32_t proxy_crc32c(uint32_t crc, const uint8_t *p, size_t len);

#endif
