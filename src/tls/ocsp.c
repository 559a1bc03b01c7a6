/* OCSP stapling of a listener's own certificate (see ocsp.h).
 *
 * The stapler lives on the main loop: fetches, timers and reloads run there. Handshakes
 * on worker threads read the cached response under a mutex and staple a copy. Each
 * SSL_CTX the stapler is attached to holds a reference (released by OpenSSL's ex_data
 * free callback when the context goes), so an old context generation still serving
 * handshakes never sees a freed stapler; ocsp_stapler_free stops fetching and drops the
 * owner's reference.
 */
#include "tls/ocsp.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>

#include "config/config.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"
#include "net/http.h"
#include "net/loop.h"
#include "tls/ocsp_util.h"

#define STAPLE_RETRY_MS 5000u
#define STAPLE_MIN_REFRESH_MS 60000u

struct ocsp_stapler {
	_Atomic int refs;          /* the owner + one per attached SSL_CTX + queued posts */
	char *id;                  /* listener id, for logs */
	struct http_client *http;
	struct loop *main;
	/* main loop: */
	char *url;
	uint64_t refresh_ms, timeout_ms;
	X509 *leaf, *issuer;
	OCSP_CERTID *cid;
	struct timer timer;
	struct http_call *call;
	bool stopped;
	bool failing;
	/* under lock (read by handshakes): */
	pthread_mutex_t lock;
	uint8_t *resp;
	size_t resp_len;
	int64_t valid_until;       /* Unix seconds */
};

/* Unit tests replace these. */
static struct http_call *(*st_http_start)(struct http_client *hc, const struct http_request *req, struct loop *l,
					  http_done_fn done, void *arg) = http_start;
static void (*st_http_cancel)(struct http_call *call) = http_cancel;
static int64_t (*st_now)(void) = clock_wall_s;

static int ex_index = -1;
static pthread_once_t ex_once = PTHREAD_ONCE_INIT;

static void stapler_unref(struct ocsp_stapler *st)
{
	if (atomic_fetch_sub(&st->refs, 1) != 1)
		return;
	X509_free(st->leaf);
	X509_free(st->issuer);
	OCSP_CERTID_free(st->cid);
	free(st->resp);
	free(st->url);
	free(st->id);
	pthread_mutex_destroy(&st->lock);
	free(st);
}

static void ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	if (ptr)
		stapler_unref(ptr);
}

static void ex_init(void)
{
	ex_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, ex_free);
}

static X509 *first_cert(const char *path, char *err, size_t errlen, const char *what)
{
	char ebuf[256];
	if (!path || !*path) {
		snprintf(err, errlen, "OCSP stapling needs %s", what);
		return NULL;
	}
	BIO *b = BIO_new_file(path, "r");
	X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	BIO_free(b);
	if (!x)
		snprintf(err, errlen, "%s %s: %s", what, path, ocsp_util_ssl_error(ebuf, sizeof ebuf));
	ERR_clear_error();
	return x;
}

/* Read the leaf and the issuer; on success they replace the stapler's (main loop). */
static bool load_certs(struct ocsp_stapler *st, const struct cfg_ssl *ssl, char *err, size_t errlen)
{
	X509 *leaf = first_cert(ssl->certfile, err, errlen, "certfile");
	if (!leaf)
		return false;
	X509 *issuer = first_cert(ssl->ocsp.issuer_pem, err, errlen, "ocsp.issuer_pem");
	if (!issuer) {
		X509_free(leaf);
		return false;
	}
	if (X509_check_issued(issuer, leaf) != X509_V_OK)
		log_warn("listener %s: ocsp.issuer_pem %s is not the issuer of certfile %s; responses will not validate",
			 st->id, ssl->ocsp.issuer_pem, ssl->certfile);
	OCSP_CERTID *cid = OCSP_cert_to_id(EVP_sha1(), leaf, issuer);
	ERR_clear_error();
	if (!cid) {
		snprintf(err, errlen, "cannot build the OCSP CertID of %s", ssl->certfile);
		X509_free(leaf);
		X509_free(issuer);
		return false;
	}
	bool same = st->leaf && X509_cmp(st->leaf, leaf) == 0 && st->issuer && X509_cmp(st->issuer, issuer) == 0;
	X509_free(st->leaf);
	X509_free(st->issuer);
	OCSP_CERTID_free(st->cid);
	st->leaf = leaf;
	st->issuer = issuer;
	st->cid = cid;
	if (!same) {
		pthread_mutex_lock(&st->lock);
		free(st->resp);
		st->resp = NULL;
		st->resp_len = 0;
		st->valid_until = 0;
		pthread_mutex_unlock(&st->lock);
	}
	free(st->url);
	st->url = xstrdup(ssl->ocsp.responder_url ? ssl->ocsp.responder_url : "");
	st->refresh_ms = ssl->ocsp.refresh_interval_ms < STAPLE_MIN_REFRESH_MS ? STAPLE_MIN_REFRESH_MS
									      : ssl->ocsp.refresh_interval_ms;
	st->timeout_ms = ssl->ocsp.refresh_http_timeout_ms ? ssl->ocsp.refresh_http_timeout_ms : 15000;
	return true;
}

static void fetch(struct ocsp_stapler *st);

static void timer_cb(struct timer *t)
{
	fetch(container_of(t, struct ocsp_stapler, timer));
}

static void fetch_done(void *arg, const struct http_response *resp)
{
	struct ocsp_stapler *st = arg;
	char err[512];
	struct ocsp_answer ans;
	bool ok = false;
	st->call = NULL;
	if (resp->status != 200) {
		if (resp->status)
			snprintf(err, sizeof err, "HTTP status %d", resp->status);
		else
			snprintf(err, sizeof err, "%s", resp->error ? resp->error : "request failed");
	} else if (ocsp_util_check_response(resp->body, resp->body_len, st->cid, st->issuer, NULL, NULL, NULL, &ans, err,
					    sizeof err)) {
		if (ans.status == V_OCSP_CERTSTATUS_GOOD)
			ok = true;
		else
			snprintf(err, sizeof err, "the responder says the certificate is %s",
				 OCSP_cert_status_str(ans.status));
	}
	if (ok) {
		int64_t until = ans.next_update ? ans.next_update : st_now() + (int64_t)(st->refresh_ms / 1000) + 300;
		uint8_t *copy = xmemdup(resp->body, resp->body_len);
		pthread_mutex_lock(&st->lock);
		free(st->resp);
		st->resp = copy;
		st->resp_len = resp->body_len;
		st->valid_until = until;
		pthread_mutex_unlock(&st->lock);
		if (st->failing)
			log_info("listener %s: OCSP staple fetched from %s again", st->id, st->url);
		else
			log_debug("listener %s: OCSP staple fetched from %s", st->id, st->url);
		st->failing = false;
		timer_arm(st->main, &st->timer, st->refresh_ms);
	} else {
		log_warn("listener %s: OCSP staple from %s: %s; retrying in %us", st->id, st->url, err,
			 STAPLE_RETRY_MS / 1000);
		st->failing = true;
		timer_arm(st->main, &st->timer, STAPLE_RETRY_MS);
	}
}

/* Main loop: ask the responder now. */
static void fetch(struct ocsp_stapler *st)
{
	if (st->stopped || st->call || !st->http || !st->main)
		return;
	timer_cancel(&st->timer);
	uint8_t *der = NULL;
	size_t len = 0;
	char err[256];
	if (!ocsp_util_build_request(X509_get0_serialNumber(st->leaf), st->issuer, false, &der, &len, NULL, NULL, err,
				     sizeof err)) {
		log_warn("listener %s: OCSP staple: %s", st->id, err);
		timer_arm(st->main, &st->timer, STAPLE_RETRY_MS);
		return;
	}
	static const char *const headers[] = { "Content-Type: application/ocsp-request",
					       "Accept: application/ocsp-response", NULL };
	struct http_request req = { .method = "POST", .url = st->url, .headers = headers, .body = der, .body_len = len,
				    .timeout_ms = st->timeout_ms, .max_response = 1u << 20 };
	st->call = st_http_start(st->http, &req, st->main, fetch_done, st);
	free(der);
	if (!st->call)
		timer_arm(st->main, &st->timer, STAPLE_RETRY_MS);
}

static void start_post(void *arg)
{
	struct ocsp_stapler *st = arg;
	fetch(st);
	stapler_unref(st);
}

/* Fetch on the main loop: now when called there, else at its next wakeup. */
static void schedule_fetch(struct ocsp_stapler *st)
{
	if (!st->http || !st->main)
		return;
	struct loop *cur = loop_current();
	if (cur == st->main) {
		if (st->call) {
			st_http_cancel(st->call);
			st->call = NULL;
		}
		fetch(st);
		return;
	}
	atomic_fetch_add(&st->refs, 1);
	loop_post(st->main, start_post, st);
}

struct ocsp_stapler *ocsp_stapler_new(const struct cfg_ssl *ssl, const char *listener_id, struct http_client *http,
				      struct loop *main_loop, char *err, size_t errlen)
{
	struct ocsp_stapler *st = xcalloc(1, sizeof *st);
	atomic_init(&st->refs, 1);
	pthread_mutex_init(&st->lock, NULL);
	st->id = xstrdup(listener_id ? listener_id : "?");
	st->http = http;
	st->main = main_loop;
	timer_init(&st->timer, timer_cb);
	if (!load_certs(st, ssl, err, errlen)) {
		stapler_unref(st);
		return NULL;
	}
	schedule_fetch(st);
	return st;
}

static int status_cb(SSL *s, void *arg)
{
	struct ocsp_stapler *st = arg;
	unsigned char *copy = NULL;
	size_t len = 0;
	int64_t now = st_now();
	pthread_mutex_lock(&st->lock);
	if (st->resp && st->valid_until >= now) {
		copy = OPENSSL_malloc(st->resp_len);
		if (copy) {
			memcpy(copy, st->resp, st->resp_len);
			len = st->resp_len;
		}
	}
	pthread_mutex_unlock(&st->lock);
	if (!copy)
		return SSL_TLSEXT_ERR_NOACK;
	if (!SSL_set_tlsext_status_ocsp_resp(s, copy, (long)len)) {
		OPENSSL_free(copy);
		return SSL_TLSEXT_ERR_NOACK;
	}
	return SSL_TLSEXT_ERR_OK;
}

void ocsp_stapler_attach(struct ocsp_stapler *st, SSL_CTX *ctx)
{
	if (!st || !ctx)
		return;
	pthread_once(&ex_once, ex_init);
	if (ex_index < 0)
		return;
	struct ocsp_stapler *prev = SSL_CTX_get_ex_data(ctx, ex_index);
	if (prev == st)
		return;
	atomic_fetch_add(&st->refs, 1);
	SSL_CTX_set_ex_data(ctx, ex_index, st);
	if (prev)
		stapler_unref(prev);
	SSL_CTX_set_tlsext_status_cb(ctx, status_cb);
	SSL_CTX_set_tlsext_status_arg(ctx, st);
}

bool ocsp_stapler_reload(struct ocsp_stapler *st, const struct cfg_ssl *ssl, char *err, size_t errlen)
{
	if (!load_certs(st, ssl, err, errlen))
		return false;
	schedule_fetch(st);
	return true;
}

void ocsp_stapler_free(struct ocsp_stapler *st)
{
	if (!st)
		return;
	st->stopped = true;
	timer_cancel(&st->timer);
	if (st->call) {
		st_http_cancel(st->call);
		st->call = NULL;
	}
	stapler_unref(st);
}
