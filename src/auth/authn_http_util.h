/* Pieces shared by the authenticators that talk HTTP (auth/authn_http.c, and the JWKS
 * fetcher of auth/authn_jwt.c), kept free of broker state so they can be unit tested:
 *
 *   - the EMQX client `ssl { ... }` block and `headers { ... }` map readers (cfgread.h
 *     errors, file:line);
 *   - escaping for request bodies and query strings;
 *   - turning an HTTP authentication answer into a struct authn_result (EMQX §4.6).
 */
#ifndef BW_AUTHN_HTTP_UTIL_H
#define BW_AUTHN_HTTP_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/authn.h"
#include "config/cfgread.h"
#include "core/buf.h"

struct http_request;

/* EMQX client TLS options (`ssl { enable, verify, cacertfile, certfile, keyfile,
 * server_name_indication }`; versions/ciphers/depth/... are accepted with a warning). */
struct authn_http_ssl {
	bool enable;          /* false: an https:// URL still uses TLS, without verification */
	bool verify_peer;     /* verify = verify_peer (default verify_none, EMQX legacy) */
	char *cacertfile;     /* CA bundle for verify_peer; NULL = the system's */
	char *certfile;       /* client certificate (mutual TLS), optional */
	char *keyfile;
	char *sni;            /* server_name_indication; NULL = the URL's host ("disable" too) */
};

/* Read an `ssl` object into s (zeroed first). Files named must be readable. */
bool authn_http_ssl_parse(struct cfg_reader *r, const struct hocon_member *m, struct authn_http_ssl *s);
void authn_http_ssl_free(struct authn_http_ssl *s);
/* Fill req's tls_* fields from s (pointers into s). */
void authn_http_ssl_apply(const struct authn_http_ssl *s, struct http_request *req);

/* One configured header: lower-case name and the value text as written. */
struct authn_http_header {
	char *name;
	char *value;
};

/* Read a `headers` object (name = "value"): names are lower-cased (EMQX), values must be
 * strings (numbers and booleans are taken as their text); CR, LF or NUL are refused. Appends
 * to *v / *n, replacing an entry of the same name. */
bool authn_http_headers_parse(struct cfg_reader *r, const struct hocon_member *m, struct authn_http_header **v,
			      size_t *n);
void authn_http_headers_free(struct authn_http_header *v, size_t n);
/* The index of header name (lower case) in v, or -1. */
int authn_http_header_find(const struct authn_http_header *v, size_t n, const char *name);

/* Append s[0..n) escaped as the inside of a JSON string. False (out partly appended) when s
 * is not valid UTF-8: a JSON body cannot carry it faithfully. */
bool authn_http_json_escape(struct buf *out, const char *s, size_t n);
/* Append s[0..n) percent-encoded: everything but A-Z a-z 0-9 - . _ ~ becomes %XX. */
void authn_http_url_escape(struct buf *out, const char *s, size_t n);

/* Copy s into out (NUL-terminated, truncated to outlen - 1) with bytes outside printable
 * ASCII replaced by '?': for untrusted text in log lines and result reasons. Returns out. */
char *authn_http_printable(char *out, size_t outlen, const char *s);
/* The value of hex digit c (0-9, a-f, A-F), or -1. */
int authn_http_hexval(int c);

/* An HTTP authentication answer as a result (EMQX 5.8 §4.6), now = wall-clock seconds:
 *   204 -> ALLOW (not superuser);
 *   200 with application/json or application/x-www-form-urlencoded -> `result`:
 *       allow -> ALLOW with is_superuser, acl, expire_at, client_attrs, clientid_override;
 *       deny -> DENY 0x86; ignore (or no result) -> IGNORE;
 *     with allow, an `acl` that is neither a rule array nor a v1 {pub,sub,all} object, or an
 *     `expire_at` that is not a number of seconds in the future -> DENY 0x86;
 *   anything else (status 0 = no answer, other statuses, another content type, a body that
 *   does not parse, an unknown result) -> AUTHN_ERROR.
 * res is filled completely (heap fields malloc'd, owned by the caller). */
void authn_http_parse_response(int status, const char *content_type, const uint8_t *body, size_t len, int64_t now,
			       struct authn_result *res);
/* Free the heap fields of a result that is not handed to authn_done. */
void authn_http_result_clear(struct authn_result *res);

#endif
