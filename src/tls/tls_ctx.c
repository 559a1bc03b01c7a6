/* Building a listener's TLS generation from its ssl_options (see tls_int.h).
 *
 * Every key of ssl_options maps onto the SSL_CTX as follows (EMQX semantics unless noted):
 *   versions            min/max protocol; the set must be contiguous. Listing tlsv1.1/tlsv1
 *                       sets OpenSSL's security level 0 for this listener (3.0 refuses them
 *                       at level 1), the schema already warns.
 *   ciphers             TLS <= 1.2 names via SSL_CTX_set_cipher_list, TLS 1.3 suites via
 *                       SSL_CTX_set_ciphersuites; IANA/RFC names are translated
 *                       (OPENSSL_cipher_name); an unknown name is an error naming it. 1.3 on
 *                       and no 1.3 suite listed: OpenSSL's default 1.3 suites stay (EMQX
 *                       prepends them). Only 1.3 suites listed while 1.2 is on: TLS <= 1.2 is
 *                       switched off for the listener with a warning (EMQX: those handshakes
 *                       fail for want of a cipher). Nothing usable for the enabled versions:
 *                       error. Unset: OpenSSL's DEFAULT, which already holds the PSK suites.
 *   honor_cipher_order  SSL_OP_CIPHER_SERVER_PREFERENCE (also orders the 1.3 suites).
 *   reuse_sessions      server session cache (TLS 1.2 session IDs; session_id_context is a
 *                       hash of the listener id) or SSL_SESS_CACHE_OFF. At most 3000 sessions
 *                       (OTP's default; ~20 MB with client certificates), 2 h lifetime. Each
 *                       generation has its own cache, so a reload (new CA bundle, new CRL)
 *                       never resumes an old session. A resumed session's certificate is
 *                       verified again (revocation) before the connection is used.
 *   session_tickets     disabled: no tickets (num_tickets 0, SSL_OP_NO_TICKET). stateless and
 *                       stateless_with_cert: one TLS 1.3 stateless ticket per full handshake.
 *                       OpenSSL always seals the client certificate into the ticket, so both
 *                       behave as EMQX's stateless_with_cert (the certificate, hence the
 *                       identity, is there after resumption). Tickets also allow RFC 5077
 *                       resumption for TLS 1.2 unless reuse_sessions = false.
 *                       stateful (Bulwark): one TLS 1.3 ticket that only names a session in
 *                       this generation's server cache (SSL_OP_NO_TICKET + num_tickets 1).
 *                       Resuming it skips decoding the client certificate again: ~180 us
 *                       against ~600 us for a stateless mTLS ticket (perf.md §2.7); the cost
 *                       is the cache's memory and one process only. Either kind: a resumed
 *                       connection gets a new ticket only past half the session's lifetime
 *                       (keep_young_ticket).
 *   handshake_timeout   not here: the client layer arms it (tls_server_handshake_timeout_ms).
 *   depth               SSL_CTX_set_verify_depth: intermediates between peer and anchor.
 *   dhfile              DH parameters (PEM) for DHE suites; without it OpenSSL picks
 *                       RFC 7919 groups matching the certificate's strength (dh_auto).
 *   partial_chain, verify_peer_ext_key_usage: tls_verify.c.
 *   managed_certs       one SSL_CTX per bundle, chosen by exact (case-insensitive) SNI match in
 *                       the servername callback; the first entry is the default.
 * The CA bundle is read once into one X509_STORE shared by the generation's contexts; when
 * the certfile holds the leaf alone, the chain is completed from it once, at build time.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "config/config.h"
#include "core/alloc.h"
#include "core/log.h"
#include "tls/tls.h"
#include "tls/tls_int.h"

void tls_gen_free(struct tls_gen *g);

struct tls_gen *tls_gen_of_ctx(const SSL_CTX *ctx)
{
	return ctx ? SSL_CTX_get_ex_data(ctx, tls_ex_gen_index()) : NULL;
}

struct tls_gen *tls_gen_of(const SSL *ssl)
{
	return ssl ? tls_gen_of_ctx(SSL_get_SSL_CTX(ssl)) : NULL;
}

/* Last OpenSSL error as text, prefixed by what we were doing. */
static void ssl_err(char *err, size_t errlen, const char *what, const char *path)
{
	unsigned long e = ERR_peek_last_error();
	char reason[256] = "unknown error";
	if (e)
		ERR_error_string_n(e, reason, sizeof reason);
	if (path)
		snprintf(err, errlen, "%s %s: %s", what, path, reason);
	else
		snprintf(err, errlen, "%s: %s", what, reason);
	ERR_clear_error();
}

int tls_password_cb(char *buf, int size, int rwflag, void *userdata)
{
	(void)rwflag;
	const char *pw = userdata;
	if (!pw)
		return 0;
	size_t n = strlen(pw);
	if (n > (size_t)size)
		n = (size_t)size;
	memcpy(buf, pw, n);
	return (int)n;
}

void tls_gen_free(struct tls_gen *g)
{
	if (!g)
		return;
	for (size_t i = 1; i < g->nctx; i++)
		SSL_CTX_free(g->ctxs[i]);
	for (size_t i = 0; i < g->nctx; i++) {
		free(g->sni[i]);
		free(g->bundle_dir[i]);
	}
	free(g->ctxs);
	free(g->sni);
	free(g->bundle_dir);
	X509_STORE_free(g->store);
	X509_STORE_free(g->anchors);
	sk_X509_pop_free(g->ca_rest, X509_free);
	for (size_t i = 0; i < g->n_eku_oids; i++)
		ASN1_OBJECT_free(g->eku_oids[i]);
	free(g->eku_oids);
	tls_psk_free(&g->psk_table);
	free(g);
}

/* ---- versions ---- */

static const struct { uint32_t bit; int version; const char *name; } version_table[] = {
	{ CFG_TLS_V1, TLS1_VERSION, "tlsv1" },
	{ CFG_TLS_V1_1, TLS1_1_VERSION, "tlsv1.1" },
	{ CFG_TLS_V1_2, TLS1_2_VERSION, "tlsv1.2" },
	{ CFG_TLS_V1_3, TLS1_3_VERSION, "tlsv1.3" },
};

static bool plan_versions(uint32_t bits, int *minv, int *maxv, char *names, size_t nameslen, char *err, size_t errlen)
{
	int lo = -1, hi = -1;
	size_t k = 0;
	names[0] = '\0';
	for (int i = 0; i < 4; i++) {
		if (!(bits & version_table[i].bit))
			continue;
		if (lo < 0)
			lo = i;
		hi = i;
		k += (size_t)snprintf(names + k, k < nameslen ? nameslen - k : 0, "%s%s", k ? "," : "", version_table[i].name);
	}
	if (lo < 0) {
		snprintf(err, errlen, "versions: no TLS version enabled");
		return false;
	}
	for (int i = lo; i <= hi; i++) {
		if (!(bits & version_table[i].bit)) {
			snprintf(err, errlen,
				 "versions must be a contiguous range: %s and %s are listed but %s is not (OpenSSL cannot "
				 "leave a version out in between)",
				 version_table[lo].name, version_table[hi].name, version_table[i].name);
			return false;
		}
	}
	*minv = version_table[lo].version;
	*maxv = version_table[hi].version;
	return true;
}

/* ---- ciphers ---- */

static bool is_sep(char c)
{
	return c == ':' || c == ',' || c == ' ';
}

char *tls_ciphers_translate(const char *list, char *bad, size_t badlen)
{
	struct buf out = { 0 };
	const char *p = list;
	while (*p) {
		while (*p && is_sep(*p))
			p++;
		const char *s = p;
		while (*p && !is_sep(*p))
			p++;
		size_t n = (size_t)(p - s);
		if (!n)
			continue;
		char tok[256];
		if (n >= sizeof tok) {
			snprintf(bad, badlen, "%.*s", (int)n, s);
			buf_free(&out);
			return NULL;
		}
		memcpy(tok, s, n);
		tok[n] = '\0';
		const char *name = tok;
		if (!strncmp(tok, "TLS_", 4) || !strncmp(tok, "SSL_", 4)) {
			name = OPENSSL_cipher_name(tok);
			if (!name || !strcmp(name, "(NONE)")) {
				snprintf(bad, badlen, "%s", tok);
				buf_free(&out);
				return NULL;
			}
		}
		if (out.len)
			buf_append(&out, ":", 1);
		buf_append_str(&out, name);
	}
	buf_append(&out, "", 1);
	return (char *)out.data;
}

/* Does the TLS <= 1.2 cipher string token select anything (at security level 0)? */
static bool cipher_token_known(SSL_CTX *scratch, const char *tok)
{
	if (strchr("!-+@", tok[0]))
		return true; /* operators remove, reorder or set options: nothing to look up */
	bool ok = SSL_CTX_set_cipher_list(scratch, tok) == 1;
	ERR_clear_error();
	return ok;
}

static bool suite13_known(SSL_CTX *scratch, const char *name)
{
	if (SSL_CTX_set_ciphersuites(scratch, name) != 1) {
		ERR_clear_error();
		return false;
	}
	STACK_OF(SSL_CIPHER) *sk = SSL_CTX_get_ciphers(scratch);
	for (int i = 0; sk && i < sk_SSL_CIPHER_num(sk); i++) {
		const SSL_CIPHER *c = sk_SSL_CIPHER_value(sk, i);
		const char *std = SSL_CIPHER_standard_name(c);
		if (std && !strcmp(std, name) && !strcmp(SSL_CIPHER_get_version(c), "TLSv1.3"))
			return true;
	}
	return false;
}

static int cipher_min_version(const SSL_CIPHER *c)
{
	const char *v = SSL_CIPHER_get_version(c);
	if (!strcmp(v, "TLSv1.3"))
		return TLS1_3_VERSION;
	if (!strcmp(v, "TLSv1.2"))
		return TLS1_2_VERSION;
	if (!strcmp(v, "TLSv1.1"))
		return TLS1_1_VERSION;
	return TLS1_VERSION; /* "TLSv1.0", "SSLv3" */
}

static bool is_psk_cipher(const SSL_CIPHER *c)
{
	int kx = SSL_CIPHER_get_kx_nid(c);
	return kx == NID_kx_psk || kx == NID_kx_ecdhe_psk || kx == NID_kx_dhe_psk || kx == NID_kx_rsa_psk;
}

/* What the generation's contexts get, decided once. */
struct plan {
	int minv, maxv;
	bool seclevel0;
	char *list12;          /* NULL: OpenSSL's default */
	char *suites13;        /* NULL: OpenSSL's default */
	EVP_PKEY *dh;          /* dhfile, NULL: auto */
	unsigned char sid[32]; /* session_id_context */
	STACK_OF(X509_NAME) *ca_names;
};

static void plan_free(struct plan *p)
{
	free(p->list12);
	free(p->suites13);
	EVP_PKEY_free(p->dh);
	sk_X509_NAME_pop_free(p->ca_names, X509_NAME_free);
}

static bool plan_ciphers(const struct cfg_listener *l, const char *vnames, bool psk, bool warn, struct plan *p,
			 char *err, size_t errlen)
{
	const struct cfg_ssl *cfg = &l->ssl;
	bool en12 = p->minv < TLS1_3_VERSION, en13 = p->maxv >= TLS1_3_VERSION;
	SSL_CTX *scratch = NULL;
	bool ok = false;
	if (!cfg->ciphers && !cfg->ciphersuites)
		return true;
	scratch = SSL_CTX_new(TLS_server_method());
	if (!scratch) {
		ssl_err(err, errlen, "SSL_CTX_new", NULL);
		return false;
	}
	SSL_CTX_set_security_level(scratch, 0);
	if (cfg->ciphers) {
		char bad[256];
		p->list12 = tls_ciphers_translate(cfg->ciphers, bad, sizeof bad);
		if (!p->list12) {
			snprintf(err, errlen, "ciphers: unknown cipher %s", bad);
			goto out;
		}
		/* Each name must exist: OpenSSL itself ignores unknown names in a list. */
		char *copy = xstrdup(cfg->ciphers), *save = NULL;
		for (char *tok = strtok_r(copy, ":, ", &save); tok; tok = strtok_r(NULL, ":, ", &save)) {
			char b2[8];
			char *one = tls_ciphers_translate(tok, b2, sizeof b2);
			bool known = one && cipher_token_known(scratch, one);
			free(one);
			if (!known) {
				snprintf(err, errlen, "ciphers: unknown cipher %s", tok);
				free(copy);
				goto out;
			}
		}
		free(copy);
	}
	if (cfg->ciphersuites) {
		char *copy = xstrdup(cfg->ciphersuites), *save = NULL;
		for (char *tok = strtok_r(copy, ":, ", &save); tok; tok = strtok_r(NULL, ":, ", &save)) {
			if (!suite13_known(scratch, tok)) {
				snprintf(err, errlen, "ciphers: unknown TLS 1.3 cipher suite %s", tok);
				free(copy);
				goto out;
			}
		}
		free(copy);
		p->suites13 = xstrdup(cfg->ciphersuites);
	}
	if (!en13 && !cfg->ciphers) {
		snprintf(err, errlen, "ciphers lists only TLS 1.3 suites (%s) but versions does not enable tlsv1.3",
			 cfg->ciphersuites);
		goto out;
	}
	if (!en12 && !cfg->ciphersuites && warn)
		log_warn("listener %s: ciphers lists only TLS <= 1.2 ciphers, which versions = [tlsv1.3] never "
			 "uses; the default TLS 1.3 suites apply",
			 l->id);
	if (en12 && !cfg->ciphers) {
		/* Only 1.3 suites were listed: TLS <= 1.2 handshakes could not agree on a cipher. */
		if (warn)
			log_warn("listener %s: ciphers lists no TLS 1.2 cipher: TLS 1.2 and older are switched "
				 "off for this listener",
				 l->id);
		p->minv = TLS1_3_VERSION;
		en12 = false;
	}
	if (en12) {
		if (SSL_CTX_set_cipher_list(scratch, p->list12) != 1) {
			snprintf(err, errlen, "ciphers: no usable TLS 1.2 cipher in %s", cfg->ciphers);
			ERR_clear_error();
			goto out;
		}
		int top12 = p->maxv < TLS1_2_VERSION ? p->maxv : TLS1_2_VERSION;
		bool usable = false, has_psk = false;
		STACK_OF(SSL_CIPHER) *sk = SSL_CTX_get_ciphers(scratch);
		for (int i = 0; sk && i < sk_SSL_CIPHER_num(sk); i++) {
			const SSL_CIPHER *c = sk_SSL_CIPHER_value(sk, i);
			int mv = cipher_min_version(c);
			if (mv >= TLS1_3_VERSION)
				continue;
			if (mv <= top12)
				usable = true;
			if (is_psk_cipher(c))
				has_psk = true;
		}
		if (!usable) {
			if (!en13) {
				snprintf(err, errlen, "ciphers: none of %s works with versions [%s]", cfg->ciphers, vnames);
				goto out;
			}
			if (warn)
				log_warn("listener %s: none of the listed TLS <= 1.2 ciphers works with the enabled "
					 "versions; TLS 1.2 and older are switched off for this listener",
					 l->id);
			p->minv = TLS1_3_VERSION;
		}
		if (psk && !has_psk && warn)
			log_warn("listener %s: psk_authentication is enabled but ciphers lists no PSK cipher suite: "
				 "PSK clients cannot connect here",
				 l->id);
	}
	ok = true;
out:
	SSL_CTX_free(scratch);
	return ok;
}

/* ---- CA bundle ---- */

/* Read every certificate of cacertfile, in file order. An empty file gives an empty stack. */
static STACK_OF(X509) *read_certs(const char *path, const char *what, char *err, size_t errlen)
{
	BIO *b = BIO_new_file(path, "r");
	if (!b) {
		snprintf(err, errlen, "cannot read %s %s: %s", what, path, strerror(errno));
		ERR_clear_error();
		return NULL;
	}
	STACK_OF(X509) *sk = sk_X509_new_null();
	for (;;) {
		X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
		if (!x)
			break;
		sk_X509_push(sk, x);
	}
	unsigned long e = ERR_peek_last_error();
	BIO_free(b);
	if (e && !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)) {
		ssl_err(err, errlen, "cannot load", path);
		char tmp[400];
		snprintf(tmp, sizeof tmp, "%s", err);
		snprintf(err, errlen, "%s %s", what, tmp);
		sk_X509_pop_free(sk, X509_free);
		return NULL;
	}
	ERR_clear_error();
	return sk;
}

static bool build_store(struct tls_gen *g, struct plan *p, char *err, size_t errlen)
{
	const struct cfg_ssl *cfg = &g->l->ssl;
	if (!cfg->cacertfile || !*cfg->cacertfile) {
		if (cfg->verify_peer) {
			snprintf(err, errlen, "verify = verify_peer needs a cacertfile to verify clients against");
			return false;
		}
		return true;
	}
	STACK_OF(X509) *certs = read_certs(cfg->cacertfile, "cacertfile", err, errlen);
	if (!certs)
		return false;
	int n = sk_X509_num(certs);
	bool ok = false;
	if (n == 0 && cfg->verify_peer) {
		snprintf(err, errlen, "cacertfile %s holds no certificate: no client certificate could be verified",
			 cfg->cacertfile);
		goto out;
	}
	if (n == 0) {
		ok = true;
		goto out;
	}
	/* In memory, once: handshakes never look anything up on disk. */
	g->store = X509_STORE_new();
	p->ca_names = sk_X509_NAME_new_null();
	for (int i = 0; i < n; i++) {
		X509 *x = sk_X509_value(certs, i);
		if (!X509_STORE_add_cert(g->store, x)) {
			unsigned long e = ERR_peek_last_error();
			if (ERR_GET_REASON(e) != X509_R_CERT_ALREADY_IN_HASH_TABLE) {
				ssl_err(err, errlen, "cannot load cacertfile", cfg->cacertfile);
				goto out;
			}
			ERR_clear_error();
		}
		X509_NAME *nm = X509_NAME_dup(X509_get_subject_name(x));
		if (nm)
			sk_X509_NAME_push(p->ca_names, nm);
	}
	if (cfg->partial_chain != CFG_PARTIAL_CHAIN_OFF) {
		int k = cfg->partial_chain == CFG_PARTIAL_CHAIN_LAST_TWO ? 2 : 1;
		if (k > n)
			k = n;
		g->anchors = X509_STORE_new();
		g->ca_rest = sk_X509_new_null();
		for (int i = 0; i < n; i++) {
			X509 *x = sk_X509_value(certs, i);
			if (i >= n - k) {
				X509_STORE_add_cert(g->anchors, x);
			} else {
				X509_up_ref(x);
				sk_X509_push(g->ca_rest, x);
			}
		}
		ERR_clear_error();
	}
	ok = true;
out:
	sk_X509_pop_free(certs, X509_free);
	return ok;
}

/* ---- one context ---- */

static int servername_cb(SSL *ssl, int *al, void *arg)
{
	(void)al;
	struct tls_gen *g = arg;
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	if (!name || !*name)
		return SSL_TLSEXT_ERR_OK;
	for (size_t i = 0; i < g->nctx; i++) {
		if (g->sni[i] && strcasecmp(g->sni[i], name) == 0) {
			if (i != 0 && !SSL_set_SSL_CTX(ssl, g->ctxs[i]))
				return SSL_TLSEXT_ERR_ALERT_FATAL;
			break;
		}
	}
	return SSL_TLSEXT_ERR_OK; /* unknown name: the default certificate */
}

/* A resumed TLS 1.3 connection gets a new ticket only once the session it resumed is past
 * half its lifetime. Until then the ticket the client holds stays valid (no early data here,
 * so OpenSSL does not make tickets single-use) and a new one would only cost the server: a
 * session copy, a cache entry and a record (~40 us stateful; ~200 us stateless with mTLS,
 * where the client certificate is sealed into every ticket). A client that keeps
 * reconnecting still never falls back to a full handshake. OpenSSL reads num_tickets right
 * after the client's Finished, in the same call that read it: the info callback is the only
 * place between the two. */
static void keep_young_ticket(const SSL *cssl, int where, int ret)
{
	(void)ret;
	if (!(where & SSL_CB_ACCEPT_LOOP) || SSL_get_state(cssl) != TLS_ST_SR_FINISHED || !SSL_session_reused(cssl))
		return;
	SSL *ssl = (SSL *)cssl; /* the callback's SSL is the connection's own, passed const */
	SSL_SESSION *sess = SSL_get_session(ssl);
	if (!sess || SSL_version(ssl) < TLS1_3_VERSION)
		return;
	long age = (long)time(NULL) - SSL_SESSION_get_time(sess);
	if (age >= 0 && age < SSL_SESSION_get_timeout(sess) / 2)
		SSL_set_num_tickets(ssl, 0);
}

static SSL_CTX *new_ctx(struct tls_gen *g, const struct plan *p, char *err, size_t errlen)
{
	const struct cfg_ssl *cfg = &g->l->ssl;
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx) {
		ssl_err(err, errlen, "SSL_CTX_new", NULL);
		return NULL;
	}
	SSL_CTX_set_ex_data(ctx, tls_ex_gen_index(), g);
	if (p->seclevel0)
		SSL_CTX_set_security_level(ctx, 0);
	SSL_CTX_set_min_proto_version(ctx, p->minv);
	SSL_CTX_set_max_proto_version(ctx, p->maxv);
	uint64_t opts = SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION;
	if (cfg->honor_cipher_order)
		opts |= SSL_OP_CIPHER_SERVER_PREFERENCE;
	else
		SSL_CTX_clear_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
	bool tickets = cfg->session_tickets != CFG_TICKETS_DISABLED && p->maxv >= TLS1_3_VERSION;
	bool stateful = tickets && cfg->session_tickets == CFG_TICKETS_STATEFUL;
	if (!tickets || stateful)
		opts |= SSL_OP_NO_TICKET; /* with 1.3 and the cache on: stateful tickets */
	SSL_CTX_set_options(ctx, opts);
	/* Idle connections give their record buffers back (~33 KB each). */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/* One read() for every record that has arrived instead of two per record (header, then
	 * body): a stream of small PUBLISH records costs one syscall per wakeup. Idle connections
	 * still hold no buffer (released when empty). */
	SSL_CTX_set_read_ahead(ctx, 1);
	/* Each TLS 1.3 ticket costs ~240 us with mTLS (perf.md §2.7): none, or exactly one. */
	SSL_CTX_set_num_tickets(ctx, tickets ? 1 : 0);
	if (tickets)
		SSL_CTX_set_info_callback(ctx, keep_young_ticket);
	SSL_CTX_set_session_cache_mode(ctx, cfg->reuse_sessions ? SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_AUTO_CLEAR
								: SSL_SESS_CACHE_OFF);
	/* ~6.7 KB per cached mTLS session (perf.md §2.7): OTP's server default of 3000, not OpenSSL's 20480. */
	SSL_CTX_sess_set_cache_size(ctx, 3000);
	SSL_CTX_set_session_id_context(ctx, p->sid, sizeof p->sid);
	if (tickets && !stateful)
		SSL_CTX_set_session_ticket_cb(ctx, NULL, tls_ticket_decrypt_cb, g);
	if (p->list12 && SSL_CTX_set_cipher_list(ctx, p->list12) != 1) {
		ssl_err(err, errlen, "ciphers: no usable cipher in", cfg->ciphers);
		goto fail;
	}
	if (p->suites13 && SSL_CTX_set_ciphersuites(ctx, p->suites13) != 1) {
		ssl_err(err, errlen, "ciphers: no usable TLS 1.3 suite in", cfg->ciphersuites);
		goto fail;
	}
	if (p->dh) {
		EVP_PKEY_up_ref(p->dh);
		if (SSL_CTX_set0_tmp_dh_pkey(ctx, p->dh) != 1) {
			EVP_PKEY_free(p->dh);
			ssl_err(err, errlen, "dhfile: cannot use the DH parameters of", cfg->dhfile);
			goto fail;
		}
	} else {
		SSL_CTX_set_dh_auto(ctx, 1);
	}
	if (g->store) {
		SSL_CTX_set1_cert_store(ctx, g->store);
		if (cfg->verify_peer && p->ca_names) {
			STACK_OF(X509_NAME) *names = SSL_dup_CA_list(p->ca_names);
			if (names)
				SSL_CTX_set_client_CA_list(ctx, names);
		}
	}
	int mode = SSL_VERIFY_NONE;
	if (cfg->verify_peer) {
		mode = SSL_VERIFY_PEER;
		if (cfg->fail_if_no_peer_cert)
			mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
	}
	SSL_CTX_set_verify(ctx, mode, NULL);
	/* depth = intermediates allowed between the peer and the trust anchor (OpenSSL's meaning too). */
	SSL_CTX_set_verify_depth(ctx, (int)cfg->depth);
	SSL_CTX_set_cert_verify_callback(ctx, tls_verify_cert_cb, g);
	if (g->eku_check)
		SSL_CTX_set_purpose(ctx, X509_PURPOSE_ANY);
	if (g->psk)
		SSL_CTX_set_psk_server_callback(ctx, tls_psk_server_cb);
	ERR_clear_error();
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

static bool load_certfile(SSL_CTX *ctx, const struct cfg_ssl *cfg, char *err, size_t errlen)
{
	const char *files[2][2] = { { "certfile", cfg->certfile }, { "keyfile", cfg->keyfile } };
	for (int i = 0; i < 2; i++) {
		if (!files[i][1] || !*files[i][1]) {
			snprintf(err, errlen, "%s is not set", files[i][0]);
			return false;
		}
		if (access(files[i][1], R_OK) != 0) {
			snprintf(err, errlen, "cannot read %s %s: %s", files[i][0], files[i][1], strerror(errno));
			return false;
		}
	}
	SSL_CTX_set_default_passwd_cb(ctx, tls_password_cb);
	SSL_CTX_set_default_passwd_cb_userdata(ctx, cfg->password);
	bool ok = false;
	if (SSL_CTX_use_certificate_chain_file(ctx, cfg->certfile) != 1) {
		ssl_err(err, errlen, "cannot load certfile", cfg->certfile);
		goto out;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, cfg->keyfile, SSL_FILETYPE_PEM) != 1) {
		unsigned long e = ERR_peek_last_error();
		if (ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH) {
			snprintf(err, errlen, "keyfile %s does not match certfile %s", cfg->keyfile, cfg->certfile);
			ERR_clear_error();
			goto out;
		}
		ssl_err(err, errlen, "cannot load keyfile", cfg->keyfile);
		goto out;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(err, errlen, "keyfile %s does not match certfile %s", cfg->keyfile, cfg->certfile);
		ERR_clear_error();
		goto out;
	}
	ok = true;
out:
	/* The password is only needed while loading the key. */
	SSL_CTX_set_default_passwd_cb(ctx, NULL);
	SSL_CTX_set_default_passwd_cb_userdata(ctx, NULL);
	return ok;
}

/* A certfile with the leaf alone: complete its chain from the CA store now rather than in
 * every handshake (OpenSSL would build it per handshake otherwise). */
static void complete_chain(SSL_CTX *ctx)
{
	STACK_OF(X509) *chain = NULL;
	if (SSL_CTX_get0_chain_certs(ctx, &chain) == 1 && chain && sk_X509_num(chain) > 0)
		return;
	if (!SSL_CTX_get_cert_store(ctx))
		return;
	SSL_CTX_build_cert_chain(ctx, SSL_BUILD_CHAIN_FLAG_NO_ROOT | SSL_BUILD_CHAIN_FLAG_IGNORE_ERROR);
	ERR_clear_error();
}

static bool load_dhfile(const char *path, EVP_PKEY **out, char *err, size_t errlen)
{
	BIO *b = BIO_new_file(path, "r");
	if (!b) {
		snprintf(err, errlen, "cannot read dhfile %s: %s", path, strerror(errno));
		ERR_clear_error();
		return false;
	}
	EVP_PKEY *dh = PEM_read_bio_Parameters(b, NULL);
	BIO_free(b);
	if (!dh || !EVP_PKEY_is_a(dh, "DH")) {
		EVP_PKEY_free(dh);
		ERR_clear_error();
		snprintf(err, errlen, "dhfile %s holds no DH parameters (expected PEM \"DH PARAMETERS\")", path);
		return false;
	}
	*out = dh;
	return true;
}

struct tls_gen *tls_gen_build(const struct cfg_listener *l, const struct tls_deps *deps, unsigned number, bool check,
			      char *err, size_t errlen)
{
	const struct cfg_ssl *cfg = &l->ssl;
	tls_ex_init();
	ERR_clear_error();
	struct plan p = { 0 };
	struct tls_gen *g = xcalloc(1, sizeof *g);
	g->l = l;
	g->revoke = deps ? deps->revoke : NULL;
	g->number = number;
	size_t n = cfg->n_managed_certs ? cfg->n_managed_certs : 1;
	g->ctxs = xcalloc(n, sizeof *g->ctxs);
	g->sni = xcalloc(n, sizeof *g->sni);
	g->bundle_dir = xcalloc(n, sizeof *g->bundle_dir);
	g->nctx = n;
	bool owned = false;

	if (!plan_versions(cfg->versions, &p.minv, &p.maxv, g->versions, sizeof g->versions, err, errlen))
		goto fail;
	p.seclevel0 = (cfg->versions & (CFG_TLS_V1 | CFG_TLS_V1_1)) != 0;
	EVP_Digest(l->id, strlen(l->id), p.sid, NULL, EVP_sha256(), NULL);

	const struct cfg_psk *psk = deps ? deps->psk : NULL;
	bool psk_on = psk && psk->enable && p.minv < TLS1_3_VERSION;
	if (!plan_ciphers(l, g->versions, psk_on, check, &p, err, errlen))
		goto fail;
	psk_on = psk_on && p.minv < TLS1_3_VERSION;
	if (psk_on) {
		if (!psk->init_file) {
			snprintf(err, errlen, "psk_authentication.enable needs psk_authentication.init_file");
			goto fail;
		}
		if (!tls_psk_load(psk->init_file, psk->separator ? psk->separator : ":", &g->psk_table, err, errlen))
			goto fail;
		g->psk = true;
		if (check && cfg->verify_peer && cfg->fail_if_no_peer_cert)
			log_warn("listener %s: psk_authentication is enabled: clients with a PSK identity connect here "
				 "without a certificate (PSK cipher suites, TLS 1.2)", l->id);
	}
	if (cfg->dhfile && *cfg->dhfile && !load_dhfile(cfg->dhfile, &p.dh, err, errlen))
		goto fail;
	if (!build_store(g, &p, err, errlen))
		goto fail;
	if (cfg->verify_peer && (cfg->ext_key_usage || cfg->n_ext_key_usage_oids)) {
		g->eku_check = true;
		g->eku_bits = cfg->ext_key_usage;
		g->eku_oids = xcalloc(cfg->n_ext_key_usage_oids + 1, sizeof *g->eku_oids);
		for (size_t i = 0; i < cfg->n_ext_key_usage_oids; i++) {
			ASN1_OBJECT *o = OBJ_txt2obj(cfg->ext_key_usage_oids[i], 1);
			if (!o) {
				snprintf(err, errlen, "verify_peer_ext_key_usage: bad OID %s", cfg->ext_key_usage_oids[i]);
				ERR_clear_error();
				goto fail;
			}
			g->eku_oids[g->n_eku_oids++] = o;
		}
	}

	for (size_t i = 0; i < n; i++) {
		SSL_CTX *ctx = new_ctx(g, &p, err, errlen);
		if (!ctx)
			goto fail;
		g->ctxs[i] = ctx;
		if (cfg->n_managed_certs) {
			const struct cfg_managed_cert *mc = &cfg->managed_certs[i];
			const char *data_dir = deps && deps->data_dir ? deps->data_dir : "data";
			const char *ns = mc->ns ? mc->ns : "global";
			char label[300];
			snprintf(label, sizeof label, "%s/%s", ns, mc->bundle_name);
			g->bundle_dir[i] = tls_bundle_dir(data_dir, ns, mc->bundle_name);
			g->sni[i] = mc->sni && *mc->sni ? xstrdup(mc->sni) : NULL;
			char e2[400];
			if (!tls_bundle_load(ctx, g->bundle_dir[i], label, e2, sizeof e2)) {
				snprintf(err, errlen, "managed_certs: %s", e2);
				goto fail;
			}
			if (check)
				for (size_t k = 0; k < i; k++)
					if (g->sni[i] && g->sni[k] && !strcasecmp(g->sni[i], g->sni[k]))
						log_warn("listener %s: managed_certs entries %zu and %zu have the same sni %s; "
							 "entry %zu wins",
							 l->id, k + 1, i + 1, g->sni[i], k + 1);
		} else if (!load_certfile(ctx, cfg, err, errlen)) {
			goto fail;
		}
		complete_chain(ctx);
	}
	if (n > 1 || cfg->n_managed_certs)
		SSL_CTX_set_tlsext_servername_callback(g->ctxs[0], servername_cb);
	SSL_CTX_set_tlsext_servername_arg(g->ctxs[0], g);
	if (!SSL_CTX_set_ex_data(g->ctxs[0], tls_ex_gen_owner_index(), g)) {
		ssl_err(err, errlen, "SSL_CTX_set_ex_data", NULL);
		goto fail;
	}
	owned = true;
	plan_free(&p);
	ERR_clear_error();
	return g;
fail:
	plan_free(&p);
	if (!owned) {
		SSL_CTX *first = g->ctxs[0];
		if (first)
			SSL_CTX_set_ex_data(first, tls_ex_gen_index(), NULL);
		tls_gen_free(g); /* contexts 1..n */
		SSL_CTX_free(first);
	}
	ERR_clear_error();
	return NULL;
}
