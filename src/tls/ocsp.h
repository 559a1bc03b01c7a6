/* OCSP stapling of a listener's own certificate (ssl_options.ocsp, as EMQX):
 * a response is fetched from responder_url at start and every refresh_interval (retry
 * after 5 s on error), validated (signature against issuer_pem, status good, not expired),
 * cached, and stapled into handshakes whose ClientHello asks for it (status_request).
 * Without a valid cached response the handshake goes on without a staple.
 */
#ifndef BW_OCSP_H
#define BW_OCSP_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

struct cfg_ssl;
struct http_client;
struct loop;
struct ocsp_stapler;

/* Load the leaf of ssl->certfile and ssl->ocsp.issuer_pem, start fetching. NULL + err on
 * unreadable files. */
struct ocsp_stapler *ocsp_stapler_new(const struct cfg_ssl *ssl, const char *listener_id, struct http_client *http,
				      struct loop *main_loop, char *err, size_t errlen);
/* Staple from this stapler on handshakes of ctx (sets the status callback). */
void ocsp_stapler_attach(struct ocsp_stapler *st, SSL_CTX *ctx);
/* The certificate was reloaded: re-read the files and fetch again. */
bool ocsp_stapler_reload(struct ocsp_stapler *st, const struct cfg_ssl *ssl, char *err, size_t errlen);
void ocsp_stapler_free(struct ocsp_stapler *st);

#endif
