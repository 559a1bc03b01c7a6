/* What a client certificate says about who the client is (SPEC §3, EMQX's formats):
 *   cn  = every subject CN value, joined with ","
 *   dn  = the subject as RFC 4514, most specific RDN first, no spaces, formatted exactly as
 *         EMQX's esockd/rabbit_ssl do (attribute names CN, SN, GIVENNAME, ..., UID; unknown
 *         types in dotted decimal; '+' inside a multi-valued RDN in certificate order;
 *         a leading space or '#', a trailing space and  " + , ; < > \  backslash-escaped;
 *         bytes below 0x20 or from 0x7E up as \XX, uppercase hex of the UTF-8 bytes)
 *   crt = the DER bytes, pem = base64 of the DER (no armour, no line breaks),
 *   md5 = lowercase hex MD5 of the DER.
 * Pure functions over OpenSSL objects; no I/O.
 */
#ifndef BW_IDENTITY_H
#define BW_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>

#include "config/config.h"

/* Subject/issuer name as the `dn` string (fresh allocation). */
char *identity_dn(const X509_NAME *name);
/* All CN values joined with "," (fresh allocation), or NULL when the name has no CN. */
char *identity_cn(const X509_NAME *name);
/* The value peer_cert_as_* maps to (fresh allocation, *len set; for crt these are binary
 * bytes), or NULL when undefined (no CN for cn; CFG_PEER_CERT_DISABLED). */
char *identity_map(X509 *cert, enum cfg_peer_cert_as how, size_t *len);
/* True when s[0..len) holds a control character: bytes 0x00-0x1F, 0x7F, or the UTF-8
 * encodings of U+0080-U+009F (EMQX 6's guard against CRLF injection into backends). */
bool identity_has_control(const char *s, size_t len);
/* Check every subject attribute value and the DNS/email/URI subject alternative names of
 * cert for control characters; false with the offending field named in why. */
bool identity_fields_clean(X509 *cert, char *why, size_t whylen);

/* ---- Subject alternative names (mqtt.client_attrs_init's cert_san.*) ---- */

#define IDENTITY_SANS_MAX 256 /* entries kept per kind */

/* The leaf certificate's subject alternative names by kind, in certificate order: each a
 * NULL-terminated array of n NUL-terminated strings (NULL when there are none). IP addresses
 * are text (inet_ntop: 192.0.2.1, 2001:db8::1). Entries holding a NUL byte, IP entries of
 * another length than 4 or 16 bytes, and other name kinds are skipped. */
struct identity_sans {
	char **dns, **ip, **email, **uri;
	size_t n_dns, n_ip, n_email, n_uri;
};

/* Fill *out (zeroed first) from cert's subjectAltName extension; owner frees with identity_sans_free. */
void identity_sans_get(X509 *cert, struct identity_sans *out);
/* Free the contents of s (s itself is the caller's) and zero it. */
void identity_sans_free(struct identity_sans *s);

#endif
