/* Revocation of client certificates: CRL files, CRLs fetched from distribution points,
 * and OCSP for client certificates (SPEC §3 decision table, §4).
 *
 * One process-wide service. Its data:
 *   - per listener, the CRLs of its `crlfile` list (loaded at start, reloaded on SIGHUP,
 *     ctl reload or file change; a reload that fails keeps the previous set);
 *   - a cache of CRLs fetched over HTTP from certificates' CRL Distribution Points
 *     (`enable_crl_check`), keyed by URL, at most crl_cache.capacity URLs (oldest evicted),
 *     each refreshed every crl_cache.refresh_interval;
 *   - a cache of OCSP answers for client certificates (`ocsp_client`), keyed by CertID,
 *     kept until the answer's nextUpdate, and refreshed while a live connection uses it.
 *
 * Where decisions happen:
 *   1. In the TLS handshake (the verify callback, at depth 0 with the chain verified):
 *      revoke_check_handshake decides synchronously from what is in memory. A revoked
 *      certificate fails the handshake. A check that needs the network is not waited for:
 *      the verdict is PENDING and the connection carries on.
 *   2. Before CONNACK: revoke_check_async completes PENDING checks (fetching a CRL on a
 *      cache miss, asking the OCSP responder) within crl_cache.http_timeout /
 *      ocsp_client.timeout; the CONNACK waits for it (the handshake never does).
 *   3. On live connections: whenever revocation data changes (a CRL refresh, a crlfile
 *      reload, an OCSP answer saying revoked), the change callback runs on the main loop;
 *      the broker then asks revoke_is_revoked for every live TLS connection and closes the
 *      revoked ones.
 *
 * Fail modes: crl_cache.fail_mode (CRLs) and ocsp_client.fail_mode (OCSP). "open" (the
 * default): an unreachable or expired CRL, or no OCSP answer, logs a warning and does not
 * refuse (the last good CRL keeps being used); "closed": it refuses. An OCSP answer of
 * "unknown" is a failure (refused in closed mode, warned in open mode).
 *
 * Thread safety: revoke_check_handshake and revoke_is_revoked run on worker threads while
 * the main thread updates the data; the implementation synchronises internally.
 */
#ifndef BW_REVOKE_H
#define BW_REVOKE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>

struct config;
struct cfg_listener;
struct http_client;
struct loop;
struct revoke;
struct revoke_wait;

enum revoke_verdict {
	REVOKE_GOOD,     /* not revoked according to every source that applies */
	REVOKE_REVOKED,  /* listed in a CRL, or OCSP said revoked */
	REVOKE_FAILED,   /* a source could not answer and fail_mode = closed says refuse */
	REVOKE_PENDING,  /* handshake only: a source needs the network; decide before CONNACK */
};

/* A compact reference to one certificate of a verified chain, kept per live connection so
 * it can be rechecked later without keeping the certificate. */
struct cert_ref {
	uint8_t issuer_hash[20]; /* SHA-1 of the issuer's DER-encoded subject name */
	uint8_t key_hash[20];    /* SHA-1 of the issuer's public key (OCSP CertID) */
	uint8_t serial[20];
	uint8_t serial_len;
};

/* Fill refs[0..n) for the first n certificates of chain (leaf first); returns how many. */
size_t revoke_refs_from_chain(STACK_OF(X509) *chain, struct cert_ref *refs, size_t n);

/* Create the service for cfg (uses cfg->crl_cache and each listener's ssl_options);
 * fetches run on http, timers and change notifications on main_loop. Loads every
 * listener's crlfile set: returns NULL with err ("file: reason") when one cannot be read. */
struct revoke *revoke_new(const struct config *cfg, struct http_client *http, struct loop *main_loop, char *err,
			  size_t errlen);
void revoke_free(struct revoke *rv);

/* Reload every listener's crlfile set. Per listener, a set that fails to load keeps the
 * previous one; report lines ("listener ssl:x: ...") are appended to *report. Returns
 * false when anything failed. Fires the change callback when something changed. */
bool revoke_reload_files(struct revoke *rv, char **report);

/* Called on main_loop whenever revocation data changed. */
void revoke_on_change(struct revoke *rv, void (*fn)(void *arg), void *arg);

/* Handshake check for listener l's verified chain in sctx (call at depth 0 when the
 * chain verified). why gets a short reason for logs ("revoked by CRL <issuer>", "CRL of
 * <issuer> expired (fail_mode closed)"). */
enum revoke_verdict revoke_check_handshake(struct revoke *rv, const struct cfg_listener *l, X509_STORE_CTX *sctx,
					   char *why, size_t whylen);
/* The same for a chain already verified (leaf first): a resumed session's. */
enum revoke_verdict revoke_check_chain(struct revoke *rv, const struct cfg_listener *l, STACK_OF(X509) *chain,
				       char *why, size_t whylen);

/* Before CONNACK: finish the checks that need the network for chain (leaf first, as
 * SSL_get0_verified_chain returns it). done runs on loop `on` exactly once with the final
 * verdict (never PENDING), unless revoke_cancel was called first on that loop's thread.
 * When nothing needs the network, done still runs (on the next iteration). The handle is
 * spent once done has run (do not cancel it then); why is valid during the call only. */
struct revoke_wait *revoke_check_async(struct revoke *rv, const struct cfg_listener *l, STACK_OF(X509) *chain,
				       struct loop *on, void (*done)(void *arg, enum revoke_verdict v, const char *why),
				       void *arg);
void revoke_cancel(struct revoke_wait *w);

/* Live recheck: is any certificate in refs (leaf first; only refs[0] unless the listener
 * has crl_check_chain) now revoked by a CRL or a cached OCSP answer? Never touches the
 * network. why says by what. */
bool revoke_is_revoked(struct revoke *rv, const struct cfg_listener *l, const struct cert_ref *refs, size_t n,
		       char *why, size_t whylen);

/* A live connection started / stopped using an OCSP-checked certificate: while in use,
 * its OCSP answer is refreshed at nextUpdate (at least every refresh interval), so a
 * revocation reaches live connections. Cheap; call from any thread. */
void revoke_ocsp_retain(struct revoke *rv, const struct cert_ref *leaf);
void revoke_ocsp_release(struct revoke *rv, const struct cert_ref *leaf);

/* Addition: every crlfile path of every listener, for the file-change watcher (a change
 * should lead to revoke_reload_files, as SIGHUP does). */
void revoke_files(struct revoke *rv, void (*fn)(void *arg, const char *path), void *arg);

#endif
