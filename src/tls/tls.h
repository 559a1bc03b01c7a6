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
#include <stdint.h>

#include <openssl/ssl.h>

#include "net/conn.h"

struct buf;
struct config;
struct cfg_ssl;
struct cfg_listener;
struct cfg_psk;
struct revoke;
struct http_client;
struct loop;

/* A listener's TLS server state. */
struct tls_server;

/* What a TLS server needs from the rest of the broker. */
struct tls_deps {
	struct revoke *revoke;       /* revocation service, NULL = no revocation checks */
	struct http_client *http;    /* for OCSP stapling fetches */
	struct loop *main_loop;      /* stapling timers and fetch completions */
	const char *data_dir;        /* managed_certs bundles: <data_dir>/certs/<namespace>/<bundle>/ */
	const struct cfg_psk *psk;   /* psk_authentication (global) */
};

/* Build the first generation for listener l (l->ssl; l must outlive the server). On
 * failure returns NULL and writes a one-line reason to err. */
struct tls_server *tls_server_new(const struct cfg_listener *l, const struct tls_deps *deps, char *err, size_t errlen);
void tls_server_free(struct tls_server *s);
/* Rebuild from the same settings (files re-read: certificate, key, CA bundle, managed
 * bundles, PSK file). On failure the previous generation keeps serving, false is returned
 * and err says why. */
bool tls_server_reload(struct tls_server *s, char *err, size_t errlen);
/* A new server-side SSL for an accepted socket, from the current generation. */
SSL *tls_server_new_ssl(struct tls_server *s, int fd);
/* Every file the server reads (for the change watcher): calls fn for each path. */
void tls_server_files(struct tls_server *s, void (*fn)(void *arg, const char *path), void *arg);
/* ssl_options.handshake_timeout: how long an accepted connection may take to finish the
 * TLS handshake (the client layer arms the timer). */
uint64_t tls_server_handshake_timeout_ms(const struct tls_server *s);

/* Validate listener l's TLS settings (files load, key matches certificate, ciphers
 * and versions are usable, managed bundles exist) without keeping anything; for --check
 * and before start-up creates anything. */
bool tls_check_config(const struct cfg_listener *l, const struct tls_deps *deps, char *err, size_t errlen);

/* The TLS transport; the connection's tp_state is the SSL *. */
extern const struct transport_ops tls_transport;

/* The verified peer certificate of a TLS connection (a reference the caller must
 * X509_free), or NULL when none was presented / the connection is not TLS. */
X509 *tls_conn_peer_cert(const struct conn *c);
/* The verified chain, leaf first (not a copy: valid until tls_conn_release_peer), or NULL. */
STACK_OF(X509) *tls_conn_verified_chain(const struct conn *c);
/* The connection is established (CONNECT handled): free the client certificate, its chain
 * and the verification details (~6 KB per idle mTLS connection). tls_conn_peer_cert and
 * tls_conn_verified_chain return NULL afterwards. */
void tls_conn_release_peer(struct conn *c);
/* True when the handshake's revocation check needs the network (REVOKE_PENDING): the
 * client must call revoke_check_async before CONNACK. */
bool tls_conn_revocation_pending(const struct conn *c);
/* The server name the client sent (SNI), or NULL. */
const char *tls_conn_sni(const struct conn *c);
/* The PSK identity of a connection that authenticated with psk_authentication, or NULL
 * (valid while the connection lives). */
const char *tls_conn_psk_identity(const struct conn *c);
/* Negotiated protocol/cipher, for logs ("TLSv1.3 TLS_AES_256_GCM_SHA384"). */
void tls_conn_describe(const struct conn *c, char *out, size_t outlen);

/* `bulwark ctl certs ...` (argv[0] = "certs"): manage the managed_certs bundles under
 * <data_dir>/certs/. Grammar:
 *   certs list [NAMESPACE]
 *   certs add [NAMESPACE/]NAME --chain FILE --key FILE [--ca FILE] [--key-password-file FILE]
 *   certs replace [NAMESPACE/]NAME --chain FILE --key FILE [--ca FILE] [--key-password-file FILE]
 *   certs delete [NAMESPACE/]NAME [--force]
 * NAMESPACE defaults to "global". add/replace validate the files (PEM certificates, the key
 * matches the first certificate) and write them atomically (temporary file, fsync, rename;
 * key files 0600). cfg (may be NULL) names the listeners using a bundle: delete refuses a
 * bundle in use unless --force. The text to print is appended to out; returns success.
 * After a successful add/replace/delete the caller reloads TLS so new handshakes use it. */
bool tls_bundles_ctl(const char *data_dir, const struct config *cfg, int argc, char **argv, struct buf *out);

/* Process-wide OpenSSL set-up; call once before threads start. */
void tls_global_init(void);

#endif
