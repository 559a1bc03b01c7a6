#include "tls/tls.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "config/config.h"
#include "core/alloc.h"
#include "core/log.h"

struct tls_server {
	pthread_rwlock_t lock; /* guards ctx: read for SSL_new, write for the swap */
	SSL_CTX *ctx;
	char *id;
	unsigned generation;
};

void tls_global_init(void)
{
	OPENSSL_init_ssl(OPENSSL_INIT_LOAD_SSL_STRINGS | OPENSSL_INIT_LOAD_CRYPTO_STRINGS, NULL);
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

static int password_cb(char *buf, int size, int rwflag, void *userdata)
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

static SSL_CTX *build_ctx(const struct cfg_ssl *cfg, const char *id, char *err, size_t errlen)
{
	ERR_clear_error();
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx) {
		ssl_err(err, errlen, "SSL_CTX_new", NULL);
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
	/* Idle connections give their record buffers back (~33 KB each). */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/* Each TLS 1.3 ticket costs ~240 us with mTLS; devices rarely resume. */
	SSL_CTX_set_num_tickets(ctx, 0);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)id, (unsigned)strlen(id));

	const char *files[3][2] = { { "certfile", cfg->certfile }, { "keyfile", cfg->keyfile },
				     { "cacertfile", cfg->cacertfile } };
	for (int i = 0; i < 3; i++) {
		if (files[i][1] && *files[i][1] && access(files[i][1], R_OK) != 0) {
			snprintf(err, errlen, "cannot read %s %s: %s", files[i][0], files[i][1], strerror(errno));
			goto fail;
		}
	}
	SSL_CTX_set_default_passwd_cb(ctx, password_cb);
	SSL_CTX_set_default_passwd_cb_userdata(ctx, cfg->password);
	if (SSL_CTX_use_certificate_chain_file(ctx, cfg->certfile) != 1) {
		ssl_err(err, errlen, "cannot load certfile", cfg->certfile);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, cfg->keyfile, SSL_FILETYPE_PEM) != 1) {
		ssl_err(err, errlen, "cannot load keyfile", cfg->keyfile);
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(err, errlen, "keyfile %s does not match certfile %s", cfg->keyfile, cfg->certfile);
		ERR_clear_error();
		goto fail;
	}
	/* The password is only needed while loading the key. */
	SSL_CTX_set_default_passwd_cb_userdata(ctx, NULL);

	if (cfg->cacertfile && *cfg->cacertfile) {
		/* Loaded once into the in-memory store: no disk lookups during handshakes. */
		if (SSL_CTX_load_verify_locations(ctx, cfg->cacertfile, NULL) != 1) {
			ssl_err(err, errlen, "cannot load cacertfile", cfg->cacertfile);
			goto fail;
		}
		STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->cacertfile);
		if (names)
			SSL_CTX_set_client_CA_list(ctx, names);
		ERR_clear_error();
	} else if (cfg->verify_peer) {
		snprintf(err, errlen, "verify = verify_peer needs a cacertfile to verify clients against");
		goto fail;
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
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

struct tls_server *tls_server_new(const struct cfg_ssl *cfg, const char *listener_id, char *err, size_t errlen)
{
	SSL_CTX *ctx = build_ctx(cfg, listener_id, err, errlen);
	if (!ctx)
		return NULL;
	struct tls_server *s = xcalloc(1, sizeof *s);
	pthread_rwlock_init(&s->lock, NULL);
	s->ctx = ctx;
	s->id = xstrdup(listener_id);
	s->generation = 1;
	return s;
}

void tls_server_free(struct tls_server *s)
{
	if (!s)
		return;
	SSL_CTX_free(s->ctx);
	pthread_rwlock_destroy(&s->lock);
	free(s->id);
	free(s);
}

bool tls_server_reload(struct tls_server *s, const struct cfg_ssl *cfg, char *err, size_t errlen)
{
	SSL_CTX *ctx = build_ctx(cfg, s->id, err, errlen);
	if (!ctx)
		return false;
	pthread_rwlock_wrlock(&s->lock);
	SSL_CTX *old = s->ctx;
	s->ctx = ctx;
	s->generation++;
	pthread_rwlock_unlock(&s->lock);
	SSL_CTX_free(old); /* live connections hold their own references */
	return true;
}

bool tls_check_config(const struct cfg_ssl *cfg, char *err, size_t errlen)
{
	SSL_CTX *ctx = build_ctx(cfg, "check", err, errlen);
	if (!ctx)
		return false;
	SSL_CTX_free(ctx);
	return true;
}

SSL *tls_server_new_ssl(struct tls_server *s, int fd)
{
	pthread_rwlock_rdlock(&s->lock);
	SSL *ssl = SSL_new(s->ctx);
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
		const char *reason = ec ? ERR_reason_error_string(ec) : NULL;
		long vr = SSL_get_verify_result(ssl);
		if (vr != X509_V_OK)
			snprintf(c->err, sizeof c->err, "tls %s failed: certificate verify failed (%s)", op,
				 X509_verify_cert_error_string(vr));
		else
			snprintf(c->err, sizeof c->err, "tls %s failed: %s", op, reason ? reason : "protocol error");
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
	if (r == 1)
		return TP_OK;
	enum tp_result res = map_error(c, ssl, r, "handshake");
	return res == TP_EOF ? TP_ERROR : res;
}

static enum tp_result tls_read(struct conn *c, uint8_t *buf, size_t len, size_t *n)
{
	SSL *ssl = c->tp_state;
	ERR_clear_error();
	errno = 0;
	int r = SSL_read(ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
	if (r > 0) {
		*n = (size_t)r;
		return TP_OK;
	}
	return map_error(c, ssl, r, "read");
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

void tls_conn_describe(const struct conn *c, char *out, size_t outlen)
{
	if (c->tp != &tls_transport || !c->tp_state) {
		snprintf(out, outlen, "tcp");
		return;
	}
	SSL *ssl = c->tp_state;
	snprintf(out, outlen, "%s %s", SSL_get_version(ssl), SSL_get_cipher_name(ssl));
}
