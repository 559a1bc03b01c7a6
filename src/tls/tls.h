/* TLS for listeners: building an SSL_CTX from a listener's ssl_options, swapping it
 * atomically on reload, and the TLS transport used by connections.
 *
 * One SSL_CTX per listener per configuration generation. New handshakes take the
 * current generation; established connections keep the one they started with
 * (each SSL holds a reference), so a reload never drops a connection. A reload that
 * fails keeps the previous generation.
 */
#ifndef BW_TLS_H
#define BW_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

#include "net/conn.h"

struct cfg_ssl;

/* A listener's TLS server state. */
struct tls_server;

/* Build the first generation from cfg (a copy of the settings is not taken: cfg must
 * outlive the server). On failure returns NULL and writes a one-line reason to err. */
struct tls_server *tls_server_new(const struct cfg_ssl *cfg, const char *listener_id, char *err, size_t errlen);
void tls_server_free(struct tls_server *s);
/* Rebuild from cfg (files re-read). On failure the previous generation keeps serving,
 * false is returned and err says why. */
bool tls_server_reload(struct tls_server *s, const struct cfg_ssl *cfg, char *err, size_t errlen);
/* A new server-side SSL for an accepted socket, from the current generation. */
SSL *tls_server_new_ssl(struct tls_server *s, int fd);

/* Validate an ssl_options block (files load, key matches certificate) without
 * keeping anything; for --check. */
bool tls_check_config(const struct cfg_ssl *cfg, char *err, size_t errlen);

/* The TLS transport; the connection's tp_state is the SSL *. */
extern const struct transport_ops tls_transport;

/* The verified peer certificate of a TLS connection (a reference the caller must
 * X509_free), or NULL when none was presented / the connection is not TLS. */
X509 *tls_conn_peer_cert(const struct conn *c);
/* Negotiated protocol/cipher, for logs ("TLSv1.3 TLS_AES_256_GCM_SHA384"). */
void tls_conn_describe(const struct conn *c, char *out, size_t outlen);

/* Process-wide OpenSSL set-up; call once before threads start. */
void tls_global_init(void);

#endif
