#include "tls/tls.h"

#include <errno.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "config/config.h"
#include "core/alloc.h"
#include "core/log.h"
#include "net/listener.h"
#include "tls/ocsp.h"
#include "tls/tls_int.h"

struct tls_server {
	pthread_rwlock_t lock; /* guards ctx/gen: read for SSL_new and tls_server_files, write for the swap */
	SSL_CTX *ctx;          /* the current generation's default context (owns gen) */
	struct tls_gen *gen;
	const struct cfg_listener *l;
	struct tls_deps deps;
	struct ocsp_stapler *stapler; /* ocsp.enable_ocsp_stapling */
	char *id;
	unsigned generation;
	_Atomic int64_t next_flush; /* when expired sessions are next dropped from the cache */
};

/* Session cache housekeeping, at most once a minute. OpenSSL's own (every 255th handshake a
 * walk of the whole cache under its write lock, ~2 % of a resumed connect) is off
 * (SSL_SESS_CACHE_NO_AUTO_CLEAR); the cache stays bounded by its size either way. */
static void flush_expired_sessions(struct tls_server *s, SSL_CTX *ctx)
{
	int64_t now = (int64_t)time(NULL), due = atomic_load_explicit(&s->next_flush, memory_order_relaxed);
	if (now < due || !atomic_compare_exchange_strong(&s->next_flush, &due, now + 60))
		return;
	SSL_CTX_flush_sessions(ctx, (long)now);
}

void tls_global_init(void)
{
	OPENSSL_init_ssl(OPENSSL_INIT_LOAD_SSL_STRINGS | OPENSSL_INIT_LOAD_CRYPTO_STRINGS, NULL);
	tls_ex_init();
}

/* Stapling needs the issuer certificate to load; checked without starting any fetch. */
static bool check_ocsp_files(const struct cfg_ssl *ssl, char *err, size_t errlen)
{
	if (!ssl->ocsp.enable_ocsp_stapling)
		return true;
	if (!ssl->ocsp.issuer_pem || !ssl->ocsp.responder_url) {
		snprintf(err, errlen, "ocsp.enable_ocsp_stapling needs ocsp.responder_url and ocsp.issuer_pem");
		return false;
	}
	BIO *b = BIO_new_file(ssl->ocsp.issuer_pem, "r");
	if (!b) {
		snprintf(err, errlen, "cannot read ocsp.issuer_pem %s: %s", ssl->ocsp.issuer_pem, strerror(errno));
		ERR_clear_error();
		return false;
	}
	X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
	BIO_free(b);
	ERR_clear_error();
	if (!x) {
		snprintf(err, errlen, "ocsp.issuer_pem %s holds no PEM certificate", ssl->ocsp.issuer_pem);
		return false;
	}
	X509_free(x);
	return true;
}

struct tls_server *tls_server_new(const struct cfg_listener *l, const struct tls_deps *deps, char *err, size_t errlen)
{
	tls_ex_init();
	struct tls_gen *g = tls_gen_build(l, deps, 1, false, err, errlen);
	if (!g)
		return NULL;
	struct tls_server *s = xcalloc(1, sizeof *s);
	pthread_rwlock_init(&s->lock, NULL);
	s->ctx = g->ctxs[0];
	s->gen = g;
	s->l = l;
	if (deps)
		s->deps = *deps;
	s->id = xstrdup(l->id);
	s->generation = 1;
	if (l->ssl.ocsp.enable_ocsp_stapling) {
		char e2[400];
		s->stapler = ocsp_stapler_new(&l->ssl, l->id, s->deps.http, s->deps.main_loop, e2, sizeof e2);
		if (!s->stapler) {
			snprintf(err, errlen, "ocsp stapling: %s", e2);
			tls_server_free(s);
			return NULL;
		}
		ocsp_stapler_attach(s->stapler, s->ctx);
	}
	return s;
}

void tls_server_free(struct tls_server *s)
{
	if (!s)
		return;
	SSL_CTX_free(s->ctx); /* frees the generation once no connection uses it */
	if (s->stapler)
		ocsp_stapler_free(s->stapler);
	pthread_rwlock_destroy(&s->lock);
	free(s->id);
	free(s);
}

bool tls_server_reload(struct tls_server *s, char *err, size_t errlen)
{
	struct tls_gen *g = tls_gen_build(s->l, &s->deps, s->generation + 1, false, err, errlen);
	if (!g)
		return false;
	SSL_CTX *ctx = g->ctxs[0];
	if (s->stapler) {
		char e2[400];
		if (!ocsp_stapler_reload(s->stapler, &s->l->ssl, e2, sizeof e2)) {
			snprintf(err, errlen, "ocsp stapling: %s", e2);
			SSL_CTX_free(ctx);
			return false;
		}
		ocsp_stapler_attach(s->stapler, ctx);
	}
	pthread_rwlock_wrlock(&s->lock);
	SSL_CTX *old = s->ctx;
	s->ctx = ctx;
	s->gen = g;
	s->generation++;
	pthread_rwlock_unlock(&s->lock);
	SSL_CTX_free(old); /* live connections and handshakes hold their own references */
	return true;
}

uint64_t tls_server_handshake_timeout_ms(const struct tls_server *s)
{
	return s->l->ssl.handshake_timeout_ms;
}

void tls_server_files(struct tls_server *s, void (*fn)(void *arg, const char *path), void *arg)
{
	const struct cfg_ssl *ssl = &s->l->ssl;
	const char *files[] = { ssl->cacertfile, ssl->dhfile, ssl->ocsp.enable_ocsp_stapling ? ssl->ocsp.issuer_pem : NULL };
	if (!ssl->n_managed_certs) {
		if (ssl->certfile && *ssl->certfile)
			fn(arg, ssl->certfile);
		if (ssl->keyfile && *ssl->keyfile)
			fn(arg, ssl->keyfile);
	}
	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
		if (files[i] && *files[i])
			fn(arg, files[i]);
	pthread_rwlock_rdlock(&s->lock);
	struct tls_gen *g = s->gen;
	if (g->psk && s->deps.psk && s->deps.psk->init_file)
		fn(arg, s->deps.psk->init_file);
	for (size_t i = 0; i < g->nctx; i++) {
		if (!g->bundle_dir[i])
			continue;
		static const char *const names[] = { "chain.pem", "key.pem", "key-password" };
		for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
			char *p = xasprintf("%s/%s", g->bundle_dir[i], names[k]);
			fn(arg, p);
			free(p);
		}
	}
	pthread_rwlock_unlock(&s->lock);
}

bool tls_check_config(const struct cfg_listener *l, const struct tls_deps *deps, char *err, size_t errlen)
{
	tls_ex_init();
	struct tls_gen *g = tls_gen_build(l, deps, 0, true, err, errlen);
	if (!g)
		return false;
	SSL_CTX_free(g->ctxs[0]);
	return check_ocsp_files(&l->ssl, err, errlen);
}

SSL *tls_server_new_ssl(struct tls_server *s, int fd)
{
	pthread_rwlock_rdlock(&s->lock);
	SSL *ssl = SSL_new(s->ctx);
	flush_expired_sessions(s, s->ctx);
	pthread_rwlock_unlock(&s->lock);
	if (!ssl)
		return NULL;
	if (SSL_set_fd(ssl, fd) != 1) {
		SSL_free(ssl);
		return NULL;
	}
	SSL_set_accept_state(ssl);
	return ssl;
}

/* ---- transport ---- */

/* The connection's error text for a refused handshake. When it does not fit c->err, the
 * whole reason is logged here as well (the client layer logs c->err). */
static void set_handshake_error(struct conn *c, const char *why)
{
	char full[640];
	int n = snprintf(full, sizeof full, "tls handshake failed: %s", why);
	snprintf(c->err, sizeof c->err, "%s", full);
	if (n >= (int)sizeof c->err)
		log_info("connection from %s on %s: %s", c->peer_str, c->listener ? c->listener->id : "?", full);
}

/* Translate an SSL_get_error result; fills the connection's error text on failure. */
static enum tp_result map_error(struct conn *c, SSL *ssl, int ret, const char *op)
{
	int e = SSL_get_error(ssl, ret);
	switch (e) {
	case SSL_ERROR_WANT_READ:
		return TP_WANT_READ;
	case SSL_ERROR_WANT_WRITE:
		return TP_WANT_WRITE;
	case SSL_ERROR_ZERO_RETURN:
		return TP_EOF;
	case SSL_ERROR_SYSCALL:
		if (ERR_peek_error() == 0) {
			if (errno == 0 || errno == ECONNRESET || errno == EPIPE) {
				snprintf(c->err, sizeof c->err, "tls %s: connection closed by peer", op);
				return errno == 0 ? TP_EOF : TP_ERROR;
			}
			snprintf(c->err, sizeof c->err, "tls %s: %s", op, strerror(errno));
			return TP_ERROR;
		}
		/* fall through */
	default: {
		unsigned long ec = ERR_peek_last_error();
		if (!strcmp(op, "handshake") && ERR_GET_REASON(ec) == SSL_R_UNEXPECTED_EOF_WHILE_READING &&
		    BIO_number_read(SSL_get_rbio(ssl)) == 0) {
			/* Closed before sending a single byte: a port probe, not a refused handshake (no error text, so
			 * the client layer logs it at debug level only). */
			c->err[0] = '\0';
			ERR_clear_error();
			return TP_ERROR;
		}
		if (!strcmp(op, "handshake")) {
			char why[512];
			tls_describe_failure(ssl, ec, why, sizeof why);
			set_handshake_error(c, why);
		} else {
			const char *reason = ec ? ERR_reason_error_string(ec) : NULL;
			snprintf(c->err, sizeof c->err, "tls %s failed: %s", op, reason ? reason : "protocol error");
		}
		ERR_clear_error();
		return TP_ERROR;
	}
	}
}

static enum tp_result tls_handshake(struct conn *c)
{
	SSL *ssl = c->tp_state;
	ERR_clear_error();
	errno = 0;
	int r = SSL_do_handshake(ssl);
	if (r == 1) {
		/* A resumed session skipped certificate verification: check it again (revocation). */
		if (!tls_verify_resumed(ssl)) {
			char why[512];
			tls_describe_failure(ssl, 0, why, sizeof why);
			set_handshake_error(c, why);
			return TP_ERROR;
		}
		return TP_OK;
	}
	enum tp_result res = map_error(c, ssl, r, "handshake");
	return res == TP_EOF ? TP_ERROR : res;
}

static enum tp_result tls_read(struct conn *c, uint8_t *buf, size_t len, size_t *n)
{
	SSL *ssl = c->tp_state;
	ERR_clear_error();
	errno = 0;
	int r = SSL_read(ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
	if (r <= 0)
		return map_error(c, ssl, r, "read");
	/* SSL_read returns one record at a time. With read_ahead on, one read() brought every
	 * record that had arrived: hand them all to the owner in one call (one MQTT parse pass
	 * over many small PUBLISH records) instead of one call per record. Stops at the first
	 * partial record (no syscall is spent on it: SSL_has_pending is false then only when
	 * nothing is buffered; a partial record ends in WANT_READ, which is not an error here). */
	size_t total = (size_t)r;
	while (total < len && SSL_has_pending(ssl)) {
		size_t room = len - total;
		r = SSL_read(ssl, buf + total, room > INT32_MAX ? INT32_MAX : (int)room);
		if (r <= 0) {
			ERR_clear_error();
			break; /* the next call reports it (WANT_READ, EOF or the error) */
		}
		total += (size_t)r;
	}
	*n = total;
	return TP_OK;
}

static enum tp_result tls_writev(struct conn *c, const struct iovec *iov, int iovcnt, size_t *n)
{
	SSL *ssl = c->tp_state;
	size_t total = 0;
	for (int i = 0; i < iovcnt; i++) {
		/* One SSL_write per output block: every block (<= 16 KB) becomes one record. A
		 * retried write passes the same pointer; the block only grows after it, and
		 * SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER tolerates a longer length. */
		ERR_clear_error();
		errno = 0;
		int len = iov[i].iov_len > INT32_MAX ? INT32_MAX : (int)iov[i].iov_len;
		int r = SSL_write(ssl, iov[i].iov_base, len);
		if (r > 0) {
			total += (size_t)r;
			if (r < len)
				break;
			continue;
		}
		enum tp_result res = map_error(c, ssl, r, "write");
		if (total && (res == TP_WANT_READ || res == TP_WANT_WRITE))
			break;
		return res;
	}
	*n = total;
	return TP_OK;
}

static void tls_shutdown(struct conn *c)
{
	SSL *ssl = c->tp_state;
	ERR_clear_error();
	SSL_shutdown(ssl); /* one attempt to send close_notify; never waits */
	ERR_clear_error();
}

static void tls_destroy(struct conn *c)
{
	SSL *ssl = c->tp_state;
	if (!ssl)
		return;
	/* OpenSSL drops a session from the cache when its SSL is freed without a close_notify
	 * exchange; connections rarely end that way, and RFC 5246 no longer asks for it. */
	if (SSL_is_init_finished(ssl))
		SSL_set_shutdown(ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
	SSL_set_quiet_shutdown(ssl, 1);
	SSL_free(ssl);
	c->tp_state = NULL;
}

const struct transport_ops tls_transport = {
	.name = "tls",
	.handshake = tls_handshake,
	.read = tls_read,
	.writev = tls_writev,
	.shutdown = tls_shutdown,
	.destroy = tls_destroy,
};

X509 *tls_conn_peer_cert(const struct conn *c)
{
	if (c->tp != &tls_transport || !c->tp_state)
		return NULL;
	return SSL_get1_peer_certificate(c->tp_state);
}

STACK_OF(X509) *tls_conn_verified_chain(const struct conn *c)
{
	if (c->tp != &tls_transport || !c->tp_state)
		return NULL;
	STACK_OF(X509) *chain = SSL_get0_verified_chain(c->tp_state);
	if (chain && sk_X509_num(chain) > 0)
		return chain;
	struct tls_conn_info *ci = tls_conn_info_of(c->tp_state, false);
	return ci && ci->chain && sk_X509_num(ci->chain) > 0 ? ci->chain : NULL;
}

/* SSL_set_session switches the SSL back to its SSL_CTX's method when they differ, and
 * after negotiation the SSL runs the version's own method (TLS_server_method's ctx does
 * not): the switch frees the record state and the connection can no longer encrypt. So the
 * swap happens while the SSL belongs, for an instant, to a bare context built on the
 * negotiated method. One per method, made on first use, kept for the process's life. */
static pthread_mutex_t bare_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	const SSL_METHOD *method;
	SSL_CTX *ctx;
} bare_ctx[8];

static SSL_CTX *bare_ctx_for(const SSL_METHOD *m)
{
	/* Almost every connection negotiates the same version: each thread remembers its last
	 * answer, so the lock is taken once per thread and method, not once per connection. */
	static _Thread_local const SSL_METHOD *last_m;
	static _Thread_local SSL_CTX *last_ctx;
	if (m == last_m)
		return last_ctx;
	SSL_CTX *ctx = NULL;
	pthread_mutex_lock(&bare_lock);
	for (size_t i = 0; i < sizeof bare_ctx / sizeof bare_ctx[0]; i++) {
		if (bare_ctx[i].method == m) {
			ctx = bare_ctx[i].ctx;
			break;
		}
		if (!bare_ctx[i].method) {
			ctx = SSL_CTX_new(m);
			if (ctx) {
				bare_ctx[i].method = m;
				bare_ctx[i].ctx = ctx;
			}
			break;
		}
	}
	pthread_mutex_unlock(&bare_lock);
	if (ctx) {
		last_m = m;
		last_ctx = ctx;
	}
	return ctx;
}

void tls_conn_release_peer(struct conn *c)
{
	if (c->tp != &tls_transport || !c->tp_state)
		return;
	SSL *ssl = c->tp_state;
	tls_conn_info_drop(ssl); /* our copy of the verified chain (tls_verify_cert_cb) */
	/* The session holds the decoded client certificate (~5.5 KB with its key) for as long as
	 * the connection lives. Swap in a session that only names the cipher and the version,
	 * all an established connection reads from it. Not when the client negotiated a max
	 * fragment length (kept in the session, and there is no setter for it). */
	SSL_SESSION *old = SSL_get_session(ssl);
	if (!old || !SSL_SESSION_get0_peer(old) ||
	    SSL_SESSION_get_max_fragment_length(old) != TLSEXT_max_fragment_length_DISABLED)
		return;
	SSL_CTX *home = SSL_get_SSL_CTX(ssl);
	const SSL_METHOD *m = SSL_get_ssl_method(ssl);
	SSL_CTX *bare = m == SSL_CTX_get_ssl_method(home) ? home : bare_ctx_for(m);
	SSL_SESSION *slim = bare ? SSL_SESSION_new() : NULL;
	if (slim && SSL_SESSION_set_cipher(slim, SSL_SESSION_get0_cipher(old)) == 1 &&
	    SSL_SESSION_set_protocol_version(slim, SSL_SESSION_get_protocol_version(old)) == 1) {
		SSL_CTX_up_ref(home); /* SSL_set_SSL_CTX drops the SSL's reference to it */
		if (bare == home || SSL_set_SSL_CTX(ssl, bare) == bare) {
			/* SSL_set_session drops the current session from the cache unless a
			 * close_notify was sent: pretend one was, so a cached session stays resumable. */
			int sd = SSL_get_shutdown(ssl);
			SSL_set_shutdown(ssl, sd | SSL_SENT_SHUTDOWN);
			SSL_set_session(ssl, slim);
			SSL_set_shutdown(ssl, sd);
			if (bare != home)
				SSL_set_SSL_CTX(ssl, home);
		}
		SSL_CTX_free(home);
	}
	SSL_SESSION_free(slim);
	ERR_clear_error();
}

bool tls_conn_revocation_pending(const struct conn *c)
{
	if (c->tp != &tls_transport || !c->tp_state)
		return false;
	struct tls_conn_info *ci = tls_conn_info_of(c->tp_state, false);
	return ci && ci->revocation_pending;
}

const char *tls_conn_sni(const struct conn *c)
{
	if (c->tp != &tls_transport || !c->tp_state)
		return NULL;
	const char *s = SSL_get_servername(c->tp_state, TLSEXT_NAMETYPE_host_name);
	return s && *s ? s : NULL;
}

const char *tls_conn_psk_identity(const struct conn *c)
{
	if (c->tp != &tls_transport || !c->tp_state)
		return NULL;
	const char *s = SSL_get_psk_identity(c->tp_state);
	return s && *s ? s : NULL;
}

void tls_conn_describe(const struct conn *c, char *out, size_t outlen)
{
	if (c->tp != &tls_transport || !c->tp_state) {
		snprintf(out, outlen, "tcp");
		return;
	}
	SSL *ssl = c->tp_state;
	snprintf(out, outlen, "%s %s", SSL_get_version(ssl), SSL_get_cipher_name(ssl));
}
