/* Client certificate verification for TLS listeners.
 *
 * OpenSSL's chain verification runs as usual (cacertfile store, depth, the ssl_client
 * purpose), wrapped by a certificate-verify callback that adds what EMQX's verify_fun and
 * partial_chain do, and Bulwark's revocation:
 *
 *   partial_chain   EMQX's meaning: the last (true / cacert_from_cacertfile) or one of the last
 *                   two (two_cacerts_from_cacertfile) certificates of cacertfile are trust
 *                   anchors even when they are intermediates. A chain that reaches a root in
 *                   cacertfile is accepted as always; one that cannot is verified a second time
 *                   against a store holding only those anchors (X509_V_FLAG_PARTIAL_CHAIN on that
 *                   store only), so no other intermediate of cacertfile ever becomes an anchor
 *                   (OpenSSL's own flag would make every certificate of the store one).
 *   extKeyUsage     verify_peer_ext_key_usage: the leaf must carry an extendedKeyUsage
 *                   extension with every listed usage/OID ("extKeyUsage not set" /
 *                   "extKeyUsage unmatched"). The listener then verifies with purpose "any" so
 *                   OpenSSL's sslclient purpose check does not refuse first. Without the option
 *                   OpenSSL's sslclient purpose check stays on: a leaf whose extendedKeyUsage
 *                   lacks clientAuth (or whose keyUsage/nsCertType forbid it) is refused, which
 *                   is stricter than EMQX (it checks nothing unless the option is set).
 *   revocation      revoke_check_handshake at depth 0 once the chain verified.
 *
 * The first failure is kept in the SSL's ex_data (reason, depth, subject) for the
 * handshake error text.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "config/config.h"
#include "core/alloc.h"
#include "tls/revoke.h"
#include "tls/tls_int.h"

void tls_gen_free(struct tls_gen *g); /* tls_ctx.c */

static pthread_once_t ex_once = PTHREAD_ONCE_INIT;
static int gen_idx = -1, owner_idx = -1, info_idx = -1, sess_chain_idx = -1;

static void info_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	(void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
	struct tls_conn_info *ci = ptr;
	if (!ci)
		return;
	sk_X509_pop_free(ci->chain, X509_free);
	free(ci);
}

static void owner_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	(void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
	if (ptr)
		tls_gen_free(ptr);
}

/* A session's verified chain (SSL_SESSION ex_data): set when a full handshake verified
 * the peer, so resuming that session (from this generation's cache) need not build and
 * verify the chain again. Follows the session through ssl_session_dup (TLS 1.3 tickets). */
static void chain_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	(void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
	if (ptr)
		sk_X509_pop_free(ptr, X509_free);
}

static int chain_dup(CRYPTO_EX_DATA *to, const CRYPTO_EX_DATA *from, void **from_d, int idx, long argl, void *argp)
{
	(void)to, (void)from, (void)idx, (void)argl, (void)argp;
	if (*from_d) {
		*from_d = X509_chain_up_ref(*from_d);
		if (!*from_d)
			return 0;
	}
	return 1;
}

static void ex_init_once(void)
{
	gen_idx = SSL_CTX_get_ex_new_index(0, "bulwark generation", NULL, NULL, NULL);
	owner_idx = SSL_CTX_get_ex_new_index(0, "bulwark generation owner", NULL, NULL, owner_free);
	info_idx = SSL_get_ex_new_index(0, "bulwark connection", NULL, NULL, info_free);
	sess_chain_idx = SSL_SESSION_get_ex_new_index(0, "bulwark verified chain", NULL, chain_dup, chain_free);
}

void tls_ex_init(void)
{
	pthread_once(&ex_once, ex_init_once);
}

int tls_ex_gen_index(void)
{
	tls_ex_init();
	return gen_idx;
}

int tls_ex_gen_owner_index(void)
{
	tls_ex_init();
	return owner_idx;
}

struct tls_conn_info *tls_conn_info_of(const SSL *ssl, bool create)
{
	tls_ex_init();
	struct tls_conn_info *ci = SSL_get_ex_data(ssl, info_idx);
	if (!ci && create) {
		ci = xcalloc(1, sizeof *ci);
		if (!SSL_set_ex_data((SSL *)ssl, info_idx, ci)) {
			free(ci);
			return NULL;
		}
	}
	return ci;
}

void tls_name_str(const X509_NAME *name, char *out, size_t outlen)
{
	if (!outlen)
		return;
	out[0] = '\0';
	if (!name)
		return;
	BIO *b = BIO_new(BIO_s_mem());
	if (!b)
		return;
	/* RFC 2253/4514, most specific first, ',' without spaces; control and non-ASCII bytes escaped. */
	X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253);
	char *p;
	long n = BIO_get_mem_data(b, &p);
	if (n < 0)
		n = 0;
	size_t k = (size_t)n < outlen - 1 ? (size_t)n : outlen - 1;
	for (size_t i = 0; i < k; i++) {
		unsigned char ch = (unsigned char)p[i];
		out[i] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch; /* belt and braces: never raw control bytes */
	}
	out[k] = '\0';
	BIO_free(b);
}

/* ---- extendedKeyUsage ---- */

enum tls_eku_result tls_eku_match(X509 *cert, uint32_t bits, ASN1_OBJECT *const *oids, size_t n_oids)
{
	static const struct { uint32_t bit; int nid; } known[] = {
		{ CFG_EKU_CLIENT_AUTH, NID_client_auth }, { CFG_EKU_SERVER_AUTH, NID_server_auth },
		{ CFG_EKU_CODE_SIGNING, NID_code_sign },  { CFG_EKU_EMAIL_PROTECTION, NID_email_protect },
		{ CFG_EKU_TIME_STAMPING, NID_time_stamp }, { CFG_EKU_OCSP_SIGNING, NID_OCSP_sign },
	};
	int crit = -1;
	EXTENDED_KEY_USAGE *eku = X509_get_ext_d2i(cert, NID_ext_key_usage, &crit, NULL);
	if (!eku)
		return crit == -1 ? TLS_EKU_NOT_SET : TLS_EKU_UNMATCHED; /* -2: repeated; >= 0: undecodable */
	bool all = true;
	int n = sk_ASN1_OBJECT_num(eku);
	for (size_t k = 0; k < sizeof known / sizeof known[0] && all; k++) {
		if (!(bits & known[k].bit))
			continue;
		bool found = false;
		for (int i = 0; i < n && !found; i++)
			found = OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, i)) == known[k].nid;
		all = found;
	}
	for (size_t k = 0; k < n_oids && all; k++) {
		bool found = false;
		for (int i = 0; i < n && !found; i++)
			found = OBJ_cmp(sk_ASN1_OBJECT_value(eku, i), oids[k]) == 0;
		all = found;
	}
	EXTENDED_KEY_USAGE_free(eku);
	return all ? TLS_EKU_OK : TLS_EKU_UNMATCHED;
}

/* ---- recording failures ---- */

static void record(SSL *ssl, const char *reason, X509 *cert, int depth)
{
	if (!ssl)
		return;
	struct tls_conn_info *ci = tls_conn_info_of(ssl, true);
	if (!ci || ci->failed)
		return;
	ci->failed = true;
	ci->depth = depth;
	snprintf(ci->reason, sizeof ci->reason, "%s", reason);
	if (cert)
		tls_name_str(X509_get_subject_name(cert), ci->subject, sizeof ci->subject);
	else
		snprintf(ci->subject, sizeof ci->subject, "(unknown)");
}

static bool anchor_error(int e)
{
	switch (e) {
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
	case X509_V_ERR_CERT_UNTRUSTED:
		return true;
	default:
		return false;
	}
}

static bool retry_partial(int e)
{
	return anchor_error(e) || e == X509_V_ERR_CERT_CHAIN_TOO_LONG || e == X509_V_ERR_PATH_LENGTH_EXCEEDED;
}

/* The text for an X509_V_ERR_* code. */
static void reason_of(const struct tls_gen *g, int e, char *out, size_t outlen)
{
	const char *s = X509_verify_cert_error_string(e);
	if (anchor_error(e))
		snprintf(out, outlen, "unknown CA: %s", s);
	else if (e == X509_V_ERR_CERT_CHAIN_TOO_LONG || e == X509_V_ERR_PATH_LENGTH_EXCEEDED)
		snprintf(out, outlen, "%s (depth = %u)", s, g ? g->l->ssl.depth : 0u);
	else if (e == X509_V_ERR_INVALID_PURPOSE)
		snprintf(out, outlen, "%s (not a TLS client certificate)", s);
	else
		snprintf(out, outlen, "%s", s);
}

static void record_ctx(const struct tls_gen *g, SSL *ssl, X509_STORE_CTX *c)
{
	int e = X509_STORE_CTX_get_error(c);
	int depth = X509_STORE_CTX_get_error_depth(c);
	X509 *cert = X509_STORE_CTX_get_current_cert(c);
	if (!cert) {
		STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(c);
		if (chain && depth >= 0 && depth < sk_X509_num(chain))
			cert = sk_X509_value(chain, depth);
		else
			cert = X509_STORE_CTX_get0_cert(c);
	}
	if (e == X509_V_OK)
		e = X509_V_ERR_UNSPECIFIED;
	char reason[128];
	reason_of(g, e, reason, sizeof reason);
	record(ssl, reason, cert, depth);
}

static void fail_ctx(X509_STORE_CTX *c, int e, X509 *leaf)
{
	X509_STORE_CTX_set_error(c, e);
	X509_STORE_CTX_set_error_depth(c, 0);
	X509_STORE_CTX_set_current_cert(c, leaf);
}

/* partial_chain: verify again with only the anchors trusted. > 0 verified (sctx now holds
 * that chain), 0 refused (*c2out keeps the context for the reason), < 0 internal error. */
static int verify_partial(const struct tls_gen *g, SSL *ssl, X509_STORE_CTX *sctx, X509_STORE_CTX **c2out)
{
	X509 *leaf = X509_STORE_CTX_get0_cert(sctx);
	STACK_OF(X509) *peer = X509_STORE_CTX_get0_untrusted(sctx);
	STACK_OF(X509) *untrusted = peer ? sk_X509_dup(peer) : sk_X509_new_null();
	X509_STORE_CTX *c2 = X509_STORE_CTX_new();
	int r = -1;
	if (!untrusted || !c2)
		goto out;
	for (int i = 0; g->ca_rest && i < sk_X509_num(g->ca_rest); i++)
		sk_X509_push(untrusted, sk_X509_value(g->ca_rest, i));
	if (!X509_STORE_CTX_init(c2, g->anchors, leaf, untrusted))
		goto out;
	X509_VERIFY_PARAM *p2 = X509_STORE_CTX_get0_param(c2);
	X509_VERIFY_PARAM_set1(p2, X509_STORE_CTX_get0_param(sctx));
	X509_VERIFY_PARAM_set_flags(p2, X509_V_FLAG_PARTIAL_CHAIN);
	if (ssl)
		X509_STORE_CTX_set_ex_data(c2, SSL_get_ex_data_X509_STORE_CTX_idx(), ssl);
	r = X509_verify_cert(c2) > 0 ? 1 : 0;
	if (r > 0) {
		X509_STORE_CTX_set0_verified_chain(sctx, X509_STORE_CTX_get1_chain(c2));
		X509_STORE_CTX_set_error(sctx, X509_V_OK);
		X509_STORE_CTX_set_error_depth(sctx, 0);
		X509_STORE_CTX_set_current_cert(sctx, leaf);
	} else {
		*c2out = c2;
		c2 = NULL;
	}
out:
	X509_STORE_CTX_free(c2);
	sk_X509_free(untrusted);
	ERR_clear_error();
	return r;
}

/* Act on a revocation verdict for leaf: 0 (refused, recorded) or 1. sctx may be NULL. */
static int apply_revocation(SSL *ssl, X509_STORE_CTX *sctx, X509 *leaf, enum revoke_verdict v, const char *why)
{
	if (v == REVOKE_REVOKED || v == REVOKE_FAILED) {
		bool revoked = v == REVOKE_REVOKED;
		char reason[128];
		if (sctx)
			fail_ctx(sctx, revoked ? X509_V_ERR_CERT_REVOKED : X509_V_ERR_UNABLE_TO_GET_CRL, leaf);
		snprintf(reason, sizeof reason, "%s%s%s%s", revoked ? "certificate revoked" : "revocation check failed",
			 *why ? " (" : "", why, *why ? ")" : "");
		record(ssl, reason, leaf, 0);
		return 0;
	}
	if (v == REVOKE_PENDING) {
		struct tls_conn_info *ci = ssl ? tls_conn_info_of(ssl, true) : NULL;
		if (ci)
			ci->revocation_pending = true;
	}
	return 1;
}

/* Everything a peer certificate goes through, on a prepared store context. */
static int verify_ctx(struct tls_gen *g, SSL *ssl, X509_STORE_CTX *sctx)
{
	int ok = X509_verify_cert(sctx);
	/* No anchor found, or the chain to the root is too long: an anchor nearer the leaf may do. */
	if (ok <= 0 && g->anchors && retry_partial(X509_STORE_CTX_get_error(sctx))) {
		X509_STORE_CTX *c2 = NULL;
		int r = verify_partial(g, ssl, sctx, &c2);
		if (r > 0) {
			ok = 1;
		} else if (c2) {
			int e2 = X509_STORE_CTX_get_error(c2);
			if (!retry_partial(e2)) {
				/* The anchor was found; something else is wrong (expired, too long, ...). */
				record_ctx(g, ssl, c2);
				X509_STORE_CTX_set_error(sctx, e2 == X509_V_OK ? X509_V_ERR_UNSPECIFIED : e2);
			}
			X509_STORE_CTX_free(c2);
		}
	}
	if (ok <= 0) {
		record_ctx(g, ssl, sctx);
		return 0;
	}
	X509 *leaf = X509_STORE_CTX_get0_cert(sctx);
	if (g->eku_check) {
		enum tls_eku_result er = tls_eku_match(leaf, g->eku_bits, g->eku_oids, g->n_eku_oids);
		if (er != TLS_EKU_OK) {
			fail_ctx(sctx, X509_V_ERR_INVALID_PURPOSE, leaf);
			record(ssl, er == TLS_EKU_NOT_SET ? "extKeyUsage not set" : "extKeyUsage unmatched", leaf, 0);
			return 0;
		}
	}
	if (g->revoke) {
		char why[200] = "";
		X509_STORE_CTX_set_error_depth(sctx, 0);
		X509_STORE_CTX_set_current_cert(sctx, leaf);
		enum revoke_verdict v = revoke_check_handshake(g->revoke, g->l, sctx, why, sizeof why);
		return apply_revocation(ssl, sctx, leaf, v, why);
	}
	return 1;
}

int tls_verify_cert_cb(X509_STORE_CTX *sctx, void *arg)
{
	struct tls_gen *g = arg;
	SSL *ssl = X509_STORE_CTX_get_ex_data(sctx, SSL_get_ex_data_X509_STORE_CTX_idx());
	int ok = verify_ctx(g, ssl, sctx);
	if (ok > 0 && ssl) {
		/* Keep the verified chain ourselves rather than in the SSL (OpenSSL would hold it,
		 * with the leaf, for the connection's life): the client layer takes what it needs
		 * at CONNECT, then tls_conn_release_peer frees it with the certificate. */
		struct tls_conn_info *ci = tls_conn_info_of(ssl, true);
		if (ci) {
			sk_X509_pop_free(ci->chain, X509_free);
			ci->chain = X509_STORE_CTX_get1_chain(sctx);
			X509_STORE_CTX_set0_verified_chain(sctx, NULL);
			SSL_SESSION *ss = SSL_get_session(ssl);
			STACK_OF(X509) *keep = ss && ci->chain ? X509_chain_up_ref(ci->chain) : NULL;
			if (keep) {
				sk_X509_pop_free(SSL_SESSION_get_ex_data(ss, sess_chain_idx), X509_free);
				if (!SSL_SESSION_set_ex_data(ss, sess_chain_idx, keep))
					sk_X509_pop_free(keep, X509_free);
			}
		}
	}
	return ok;
}

void tls_conn_info_drop(SSL *ssl)
{
	tls_ex_init();
	struct tls_conn_info *ci = SSL_get_ex_data(ssl, info_idx);
	if (!ci)
		return;
	SSL_set_ex_data(ssl, info_idx, NULL);
	sk_X509_pop_free(ci->chain, X509_free);
	free(ci);
}

/* The first certificate of chain, from depth from on, outside its validity period at *at
 * (NULL: now): its X509_V_ERR code, and its depth in *depth; X509_V_OK when there is none. */
static int period_error(STACK_OF(X509) *chain, const time_t *at, int from, int *depth)
{
	for (int i = from; i < sk_X509_num(chain); i++) {
		X509 *x = sk_X509_value(chain, i);
		int nb = X509_cmp_time(X509_get0_notBefore(x), (time_t *)at);
		int na = X509_cmp_time(X509_get0_notAfter(x), (time_t *)at);
		int err = nb == 0   ? X509_V_ERR_ERROR_IN_CERT_NOT_BEFORE_FIELD
			  : nb > 0  ? X509_V_ERR_CERT_NOT_YET_VALID
			  : na == 0 ? X509_V_ERR_ERROR_IN_CERT_NOT_AFTER_FIELD
			  : na < 0  ? X509_V_ERR_CERT_HAS_EXPIRED
				    : X509_V_OK;
		if (err != X509_V_OK) {
			*depth = i;
			return err;
		}
	}
	return X509_V_OK;
}

/* The last step of X509_verify_cert for a resumed session: validity periods only. The
 * signatures were checked when this generation made the session (its cache and its ticket
 * keys die with it, so a session always comes from the same CA store): only time and
 * revocation can have changed since. Skips one signature verification per certificate
 * (~55 us each with ECDSA P-256, a fifth of a resumed handshake). */
static int verify_times_only(X509_STORE_CTX *ctx)
{
	X509_VERIFY_PARAM *vp = X509_STORE_CTX_get0_param(ctx);
	unsigned long flags = X509_VERIFY_PARAM_get_flags(vp);
	if (flags & X509_V_FLAG_NO_CHECK_TIME)
		return 1;
	time_t at = X509_VERIFY_PARAM_get_time(vp);
	time_t *ptime = (flags & X509_V_FLAG_USE_CHECK_TIME) ? &at : NULL;
	STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(ctx);
	int (*cb)(int, X509_STORE_CTX *) = X509_STORE_CTX_get_verify_cb(ctx);
	int depth, err;
	for (int from = 0; (err = period_error(chain, ptime, from, &depth)) != X509_V_OK; from = depth + 1) {
		X509_STORE_CTX_set_error(ctx, err);
		X509_STORE_CTX_set_error_depth(ctx, depth);
		X509_STORE_CTX_set_current_cert(ctx, sk_X509_value(chain, depth));
		if (!cb || !cb(0, ctx))
			return 0;
	}
	return 1;
}

/* Verify a session's peer certificate against g now; on success the chain is kept in the
 * connection's info. */
static bool verify_session_cert(struct tls_gen *g, SSL *ssl, X509 *peer, STACK_OF(X509) *untrusted)
{
	X509_STORE_CTX *c = X509_STORE_CTX_new();
	bool ok = false;
	if (!c || !X509_STORE_CTX_init(c, g->store, peer, untrusted)) {
		record(ssl, "out of memory verifying a resumed session", peer, 0);
		goto out;
	}
	X509_STORE_CTX_set_default(c, "ssl_client");
	X509_VERIFY_PARAM *p = X509_STORE_CTX_get0_param(c);
	X509_VERIFY_PARAM_set_auth_level(p, SSL_get_security_level(ssl));
	X509_VERIFY_PARAM_set1(p, SSL_get0_param(ssl));
	X509_STORE_CTX_set_ex_data(c, SSL_get_ex_data_X509_STORE_CTX_idx(), ssl);
	X509_STORE_CTX_set_verify(c, verify_times_only);
	if (verify_ctx(g, ssl, c) > 0) {
		struct tls_conn_info *ci = tls_conn_info_of(ssl, true);
		if (ci) {
			sk_X509_pop_free(ci->chain, X509_free);
			ci->chain = X509_STORE_CTX_get1_chain(c);
		}
		ok = true;
	}
out:
	X509_STORE_CTX_free(c);
	ERR_clear_error();
	return ok;
}

/* A session from this generation's cache carries the chain its full handshake verified
 * (same CA store, same partial_chain and EKU settings): what can have changed since is the
 * clock and revocation. On success the chain becomes the connection's. */
static bool resumed_chain_ok(struct tls_gen *g, SSL *ssl, STACK_OF(X509) *chain)
{
	int depth, err = period_error(chain, NULL, 0, &depth);
	if (err != X509_V_OK) {
		record(ssl, X509_verify_cert_error_string(err), sk_X509_value(chain, depth), depth);
		return false;
	}
	X509 *leaf = sk_X509_value(chain, 0);
	if (g->revoke) {
		char why[200] = "";
		enum revoke_verdict v = revoke_check_chain(g->revoke, g->l, chain, why, sizeof why);
		if (!apply_revocation(ssl, NULL, leaf, v, why))
			return false;
	}
	struct tls_conn_info *ci = tls_conn_info_of(ssl, true);
	if (ci) {
		sk_X509_pop_free(ci->chain, X509_free);
		ci->chain = X509_chain_up_ref(chain);
	}
	return true;
}

bool tls_verify_resumed(SSL *ssl)
{
	if (!SSL_session_reused(ssl) || !(SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER))
		return true;
	X509 *peer = SSL_get0_peer_certificate(ssl);
	struct tls_gen *g = tls_gen_of(ssl);
	if (!peer || !g || !g->store)
		return true;
	struct tls_conn_info *ci = tls_conn_info_of(ssl, false);
	if (ci && ci->chain)
		return true; /* checked when the ticket was accepted */
	STACK_OF(X509) *chain = SSL_SESSION_get_ex_data(SSL_get_session(ssl), sess_chain_idx);
	if (chain && sk_X509_value(chain, 0) == peer)
		return resumed_chain_ok(g, ssl, chain);
	return verify_session_cert(g, ssl, peer, SSL_get_peer_cert_chain(ssl));
}

SSL_TICKET_RETURN tls_ticket_decrypt_cb(SSL *ssl, SSL_SESSION *ss, const unsigned char *keyname, size_t keyname_length,
					SSL_TICKET_STATUS status, void *arg)
{
	(void)keyname, (void)keyname_length;
	struct tls_gen *g = arg;
	switch (status) {
	case SSL_TICKET_SUCCESS:
	case SSL_TICKET_SUCCESS_RENEW:
		break;
	case SSL_TICKET_EMPTY:
	case SSL_TICKET_NO_DECRYPT:
		return SSL_TICKET_RETURN_IGNORE_RENEW;
	default:
		return SSL_TICKET_RETURN_IGNORE;
	}
	/* reuse_sessions = false: no TLS 1.2 resumption, also not through an RFC 5077 ticket. */
	if (SSL_version(ssl) < TLS1_3_VERSION && !g->l->ssl.reuse_sessions)
		return SSL_TICKET_RETURN_IGNORE;
	X509 *peer = ss ? SSL_SESSION_get0_peer(ss) : NULL;
	if (peer && g->store && (SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER)) {
		if (!verify_session_cert(g, ssl, peer, NULL)) {
			/* Forget it: the full handshake that follows verifies (and reports) afresh. */
			struct tls_conn_info *ci = tls_conn_info_of(ssl, false);
			if (ci) {
				ci->failed = false;
				ci->revocation_pending = false;
				ci->reason[0] = ci->subject[0] = '\0';
			}
			return SSL_TICKET_RETURN_IGNORE_RENEW;
		}
	}
	return status == SSL_TICKET_SUCCESS_RENEW ? SSL_TICKET_RETURN_USE_RENEW : SSL_TICKET_RETURN_USE;
}

/* ---- failure text ---- */

static void escape_into(const char *s, char *out, size_t outlen)
{
	size_t k = 0;
	for (; s && *s && k + 5 < outlen; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch < 0x20 || ch >= 0x7f || ch == '"' || ch == '\\')
			k += (size_t)snprintf(out + k, outlen - k, "\\x%02X", ch);
		else
			out[k++] = (char)ch;
	}
	out[k] = '\0';
}

void tls_describe_failure(SSL *ssl, unsigned long e, char *out, size_t outlen)
{
	struct tls_conn_info *ci = tls_conn_info_of(ssl, false);
	if (ci && ci->failed) {
		if (ci->subject[0])
			snprintf(out, outlen, "certificate verify failed: %s (subject %s, depth %d)", ci->reason, ci->subject,
				 ci->depth);
		else
			snprintf(out, outlen, "%s", ci->reason);
		return;
	}
	int r = e ? ERR_GET_REASON(e) : 0;
	const char *lib_reason = e ? ERR_reason_error_string(e) : NULL;
	struct tls_gen *g = tls_gen_of(ssl);
	long vr = SSL_get_verify_result(ssl);
	if (r == SSL_R_CERTIFICATE_VERIFY_FAILED && vr != X509_V_OK) {
		char reason[128];
		reason_of(g, (int)vr, reason, sizeof reason);
		snprintf(out, outlen, "certificate verify failed: %s", reason);
	} else if (r == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
		snprintf(out, outlen, "no client certificate (fail_if_no_peer_cert = true)");
	} else if (r == SSL_R_UNSUPPORTED_PROTOCOL && g) {
		snprintf(out, outlen, "unsupported protocol (listener versions: %s)", g->versions);
	} else {
		snprintf(out, outlen, "%s", lib_reason ? lib_reason : "protocol error");
	}
	const char *id = SSL_get_psk_identity(ssl);
	if (id && *id) {
		char safe[80];
		escape_into(id, safe, sizeof safe);
		size_t n = strlen(out);
		if (n < outlen)
			snprintf(out + n, outlen - n, " (PSK identity \"%s\": wrong secret?)", safe);
	}
}
