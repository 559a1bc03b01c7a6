/* Internals shared by src/tls/tls*.c: a listener's TLS generation, per-connection
 * verification state, and the helpers the pieces use from each other. Not for use outside
 * src/tls/ (and the unit tests).
 *
 * A generation is everything built from one read of a listener's settings and files: one
 * SSL_CTX per certificate (the listener's certfile, or one per managed bundle), the CA
 * store they share, the partial_chain anchors, the EKU requirement and the PSK table. The
 * first SSL_CTX (ctxs[0], the default certificate) owns the generation through its ex_data:
 * the generation is freed when the last SSL made from it is gone, so a reload never pulls
 * anything from under a handshake in progress. Everything in a generation is read-only
 * once built, so worker threads share it without locks.
 */
#ifndef BW_TLS_INT_H
#define BW_TLS_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "core/buf.h"

struct cfg_listener;
struct cfg_managed_cert;
struct tls_deps;
struct revoke;

/* ---- PSK (tls_psk.c) ---- */

struct tls_psk_entry {
	char *identity;
	uint8_t *secret;
	size_t secret_len;
};

/* Identities sorted by strcmp, for bsearch. */
struct tls_psk_table {
	struct tls_psk_entry *v;
	size_t n;
};

/* Parse psk_authentication.init_file text: one "identity<sep>secret" per line (split at the
 * first sep; a trailing CR is dropped; blank lines are skipped). The secret's bytes are the
 * key, as in EMQX. name is used in messages ("name:line: why"). False with err on the first
 * malformed line (no separator, empty identity or secret, identity over PSK_MAX_IDENTITY_LEN
 * (256) bytes, secret over PSK_MAX_PSK_LEN (512) bytes, duplicate identity). */
bool tls_psk_parse(const char *text, size_t len, const char *name, const char *sep, struct tls_psk_table *t, char *err,
		   size_t errlen);
/* Read and parse a file. */
bool tls_psk_load(const char *path, const char *sep, struct tls_psk_table *t, char *err, size_t errlen);
const struct tls_psk_entry *tls_psk_find(const struct tls_psk_table *t, const char *identity);
void tls_psk_free(struct tls_psk_table *t);
/* SSL_CTX_set_psk_server_callback callback: looks the identity up in the generation of the
 * SSL's context (TLS <= 1.2 only). */
unsigned int tls_psk_server_cb(SSL *ssl, const char *identity, unsigned char *psk, unsigned int max_psk_len);

/* ---- a generation (tls_ctx.c) ---- */

struct tls_gen {
	const struct cfg_listener *l;
	struct revoke *revoke;        /* NULL: no revocation checks */
	unsigned number;
	SSL_CTX **ctxs;               /* [0] default; the generation holds references to [1..nctx) */
	char **sni;                   /* server name per ctx (NULL: default only) */
	char **bundle_dir;            /* managed bundle folder per ctx, NULL for certfile */
	size_t nctx;
	X509_STORE *store;            /* cacertfile, shared by every ctx; NULL without one */
	X509_STORE *anchors;          /* partial_chain: the last one or two certificates of cacertfile */
	STACK_OF(X509) *ca_rest;      /* the other cacertfile certificates (chain building helpers) */
	uint32_t eku_bits;            /* verify_peer_ext_key_usage */
	ASN1_OBJECT **eku_oids;
	size_t n_eku_oids;
	bool eku_check;
	bool psk;                     /* PSK callback installed */
	struct tls_psk_table psk_table;
	char versions[48];            /* "tlsv1.2,tlsv1.3", for messages */
};

/* Build a generation for l. check: validation only (warnings are logged; no OCSP). On
 * failure NULL and a one-line reason in err. The caller owns one reference to
 * g->ctxs[0]; SSL_CTX_free of that context (after every SSL made from it) frees g. */
struct tls_gen *tls_gen_build(const struct cfg_listener *l, const struct tls_deps *deps, unsigned number, bool check,
			      char *err, size_t errlen);
/* The generation an SSL_CTX of it belongs to. */
struct tls_gen *tls_gen_of_ctx(const SSL_CTX *ctx);
/* The generation of an SSL (through its current context). */
struct tls_gen *tls_gen_of(const SSL *ssl);
/* Translate a ':'-separated cipher list to OpenSSL names: IANA/RFC names ("TLS_ECDHE_..."
 * or "SSL_...") become OpenSSL's, other entries are kept. Returns a fresh string, or NULL
 * with the first unknown IANA name copied to bad. */
char *tls_ciphers_translate(const char *list, char *bad, size_t badlen);

/* ---- verification (tls_verify.c) ---- */

/* What a connection's handshake verification found (SSL ex_data; allocated on demand). */
struct tls_conn_info {
	bool failed;                  /* a certificate was refused */
	bool revocation_pending;      /* revoke_check_handshake said PENDING */
	int depth;                    /* where it failed */
	char reason[128];             /* "certificate has expired", "extKeyUsage unmatched", ... */
	char subject[256];            /* DN of the refused certificate (RFC 4514, escaped) */
	STACK_OF(X509) *chain;        /* verified chain (owned), until tls_conn_release_peer */
};

enum tls_eku_result { TLS_EKU_OK, TLS_EKU_NOT_SET, TLS_EKU_UNMATCHED };

/* One-time ex_data indices (idempotent, thread-safe). */
void tls_ex_init(void);
int tls_ex_gen_index(void);
int tls_ex_gen_owner_index(void);
/* The connection's info, creating it when create is set (NULL otherwise when absent). */
struct tls_conn_info *tls_conn_info_of(const SSL *ssl, bool create);
/* Free the connection's info (tls_conn_release_peer: nothing refers to it any more). */
void tls_conn_info_drop(SSL *ssl);
/* Does cert's extendedKeyUsage contain every usage in bits (CFG_EKU_*) and every oid? */
enum tls_eku_result tls_eku_match(X509 *cert, uint32_t bits, ASN1_OBJECT *const *oids, size_t n_oids);
/* SSL_CTX_set_cert_verify_callback callback (arg: the generation): chain verification with
 * partial_chain, then EKU and revocation at depth 0; records the first failure. */
int tls_verify_cert_cb(X509_STORE_CTX *sctx, void *arg);
/* A resumed session skipped verification: verify its peer certificate again now (chain,
 * EKU, revocation), so a revoked certificate cannot come back through resumption and the
 * verified chain is available. True when there is nothing to check or it passed. */
bool tls_verify_resumed(SSL *ssl);
/* SSL_CTX_set_session_ticket_cb decrypt callback: a ticket whose certificate no longer
 * verifies against the current generation is ignored (full handshake instead). */
SSL_TICKET_RETURN tls_ticket_decrypt_cb(SSL *ssl, SSL_SESSION *ss, const unsigned char *keyname, size_t keyname_length,
					SSL_TICKET_STATUS status, void *arg);
/* The handshake failure text for c->err ("certificate verify failed: ... (subject ..., depth
 * N)"), from the recorded failure or OpenSSL's error queue. */
void tls_describe_failure(SSL *ssl, unsigned long ossl_err, char *out, size_t outlen);
/* RFC 4514 rendering of a name (escaped, no raw control bytes) into out. */
void tls_name_str(const X509_NAME *name, char *out, size_t outlen);

/* ---- managed certificate bundles (tls_bundles.c) ---- */

/* <data_dir>/certs/<ns>/<name> (fresh allocation). */
char *tls_bundle_dir(const char *data_dir, const char *ns, const char *name);
/* Load <dir>/chain.pem and <dir>/key.pem (with <dir>/key-password when present) into ctx.
 * label names the bundle in messages ("global/example-cert-1"). */
bool tls_bundle_load(SSL_CTX *ctx, const char *dir, const char *label, char *err, size_t errlen);

/* OpenSSL passphrase callback: userdata is the NUL-terminated password (or NULL). */
int tls_password_cb(char *buf, int size, int rwflag, void *userdata);

#endif
