/* Asynchronous HTTP(S) client on libcurl's multi interface (see net/http.h).
 *
 * Threads
 *   One worker thread per client runs curl_multi_perform/curl_multi_poll over one multi
 *   handle (so one connection cache: keep-alive reuse, at most max_per_host connections
 *   per host). http_start, on any thread, copies the request into a struct http_call and
 *   appends it to the client's queue (hc->lock) and wakes the worker (curl_multi_wakeup);
 *   the worker creates the easy handle, so loop threads never pay for libcurl set-up.
 *
 * Completion and delivery
 *   A finished call is moved into one process-wide "ready" registry (ready_lock) tagged with
 *   its loop, and the loop gets loop_post(l, deliver_wake, l): the post carries the loop
 *   pointer, never the call. So a post that is dropped (loop_free of a stopped loop) leaks
 *   nothing, and http_client_free can purge calls whose loop will never run. The posted
 *   function takes every ready call of its loop and runs the callbacks.
 *
 * Cancel: a per-call atomic state
 *   RUNNING    queued or transferring; owned by the worker
 *   READY      in the registry (only changed under ready_lock)
 *   TAKEN      taken by a delivery pass on the loop's thread, callback not yet run
 *   DELIVERING callback running
 *   CANCELLED  http_cancel won; whoever holds the call frees it without a callback
 *   The worker moves RUNNING -> READY with a compare-and-swap under ready_lock; http_cancel
 *   (on the loop thread) moves RUNNING -> CANCELLED with a compare-and-swap (the worker then
 *   aborts the transfer and frees the call), unlinks and frees a READY call itself, and
 *   marks a TAKEN call CANCELLED (the delivery pass frees it). TAKEN and DELIVERING are only
 *   seen on the loop thread, the same thread that cancels, so once http_cancel returns the
 *   callback cannot run. Cancel from inside the call's own callback is a no-op.
 *
 * Shutdown (http_client_free)
 *   The worker stops and completes every outstanding call with status 0 "shutting down"
 *   (cancelled ones are just freed). Then free waits until those calls are delivered, up to
 *   shutdown_grace_ms: loops that run deliver them at once; when free runs on a loop thread
 *   it delivers that loop's calls itself. Calls still undelivered after the grace period
 *   belong to loops that stopped: they are dropped (freed, callbacks never run). After
 *   http_client_free returns no handle of the client may be used, and no callback of it
 *   starts later except those a delivery pass had already taken (free called from inside
 *   a callback, or a pass running on another loop at that moment). The rule for callers:
 *   free either while the loops run (callbacks get "shutting down") or after they stopped
 *   (callbacks dropped); a loop that still runs must process its inbox within the grace
 *   period, and must not be freed before the client when it has calls outstanding.
 *
 * Transfer options
 *   Redirects are not followed (a 3xx is returned as it is); http and https only; proxy
 *   environment variables are ignored; no "Expect: 100-continue"; User-Agent bulwark/<ver>.
 *   tls_sni: the URL's host is replaced by the SNI name and CURLOPT_CONNECT_TO sends the
 *   connection to the original host and port, so libcurl sends that name and (with
 *   tls_verify) checks the certificate against it, while a Host header keeps the original
 *   host. elapsed_ms counts from http_start, queueing included.
 */
#include "net/http.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/list.h"
#include "core/log.h"
#include "net/loop.h"
#include "version.h"

#define HTTP_DEFAULT_TIMEOUT_MS 15000u
#define HTTP_DEFAULT_MAX_RESPONSE ((size_t)4 * 1024 * 1024)
#define HTTP_DEFAULT_PER_HOST 8u
#define HTTP_MAX_TOTAL_CONNECTIONS 256L /* across all hosts; more transfers wait in libcurl */
#define HTTP_MAX_CACHED_CONNECTIONS 64L /* idle keep-alive connections kept for reuse */
#define HTTP_POLL_MS 1000

/* How long http_client_free waits for running loops to take their "shutting down" calls. */
static uint64_t shutdown_grace_ms = 1000;

enum call_state { ST_RUNNING, ST_READY, ST_TAKEN, ST_DELIVERING, ST_CANCELLED };

struct http_call {
	struct list link; /* hc->queue, the worker's active list, the ready registry, a delivery pass */
	atomic_int state; /* enum call_state */
	struct http_client *hc; /* dereferenced only while RUNNING (cancel's wake-up) */
	struct loop *loop;
	http_done_fn done;
	void *arg;
	uint64_t start_ms;
	/* Copy of the request. */
	char *method;
	char *url;
	char **headers; /* NULL-terminated */
	uint8_t *body;
	size_t body_len;
	uint64_t timeout_ms, connect_timeout_ms;
	size_t max_response;
	bool tls_verify;
	char *tls_ca_file, *tls_cert_file, *tls_key_file, *tls_sni;
	/* Worker side. */
	CURL *easy;
	bool in_multi;
	bool too_large;
	struct curl_slist *slist, *connect_to;
	char errbuf[CURL_ERROR_SIZE];
	/* Result. */
	int status;
	char *error;
	char *content_type;
	struct buf resp;
	uint64_t elapsed_ms;
};

struct http_client {
	CURLM *multi;
	pthread_t thread;
	pthread_mutex_t lock; /* protects queue, stopping, cancels */
	struct list queue;    /* calls handed to the worker */
	bool stopping;
	bool cancels;         /* some RUNNING call was cancelled: the worker scans its list */
	/* Worker thread only. */
	struct list active;   /* calls added to the multi handle */
	struct loop **wake;   /* loops to post to at the end of this round */
	size_t nwake, capwake;
};

/* The registry of finished calls waiting for their loop (see the top of the file). */
static pthread_mutex_t ready_lock = PTHREAD_MUTEX_INITIALIZER;
static struct list ready_calls = LIST_INIT(ready_calls);

/* ---- libcurl global state ---- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static bool curl_ok;

static void curl_init_once(void)
{
	CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
	curl_ok = rc == CURLE_OK;
	if (!curl_ok)
		log_error("http: curl_global_init: %s", curl_easy_strerror(rc));
}

static bool curl_ready(void)
{
	pthread_once(&curl_once, curl_init_once);
	return curl_ok;
}

/* ---- calls ---- */

static char *dup_or_null(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

static struct http_call *call_new(struct http_client *hc, const struct http_request *req, struct loop *l,
				  http_done_fn done, void *arg)
{
	struct http_call *c = xcalloc(1, sizeof *c);
	list_init(&c->link);
	atomic_init(&c->state, ST_RUNNING);
	c->hc = hc;
	c->loop = l;
	c->done = done;
	c->arg = arg;
	c->start_ms = clock_mono_ms();
	c->method = xstrdup(req->method && req->method[0] ? req->method : "GET");
	c->url = xstrdup(req->url ? req->url : "");
	size_t n = 0;
	while (req->headers && req->headers[n])
		n++;
	c->headers = xcalloc(n + 1, sizeof *c->headers);
	for (size_t i = 0; i < n; i++)
		c->headers[i] = xstrdup(req->headers[i]);
	if (req->body && req->body_len) {
		c->body = xmemdup(req->body, req->body_len);
		c->body_len = req->body_len;
	}
	c->timeout_ms = req->timeout_ms ? req->timeout_ms : HTTP_DEFAULT_TIMEOUT_MS;
	c->connect_timeout_ms = req->connect_timeout_ms ? req->connect_timeout_ms : c->timeout_ms;
	c->max_response = req->max_response ? req->max_response : HTTP_DEFAULT_MAX_RESPONSE;
	c->tls_verify = req->tls_verify;
	c->tls_ca_file = dup_or_null(req->tls_ca_file);
	c->tls_cert_file = dup_or_null(req->tls_cert_file);
	c->tls_key_file = dup_or_null(req->tls_key_file);
	c->tls_sni = req->tls_sni && req->tls_sni[0] ? xstrdup(req->tls_sni) : NULL;
	return c;
}

/* Release the libcurl side of a call (worker thread, or the http_get_sync caller). */
static void call_detach(struct http_call *c, CURLM *multi)
{
	if (c->easy) {
		if (c->in_multi)
			curl_multi_remove_handle(multi, c->easy);
		curl_easy_cleanup(c->easy);
	}
	c->easy = NULL;
	c->in_multi = false;
	curl_slist_free_all(c->slist);
	curl_slist_free_all(c->connect_to);
	c->slist = c->connect_to = NULL;
}

static void call_free(struct http_call *c)
{
	call_detach(c, NULL);
	free(c->method);
	free(c->url);
	for (char **h = c->headers; h && *h; h++)
		free(*h);
	free(c->headers);
	free(c->body);
	free(c->tls_ca_file);
	free(c->tls_cert_file);
	free(c->tls_key_file);
	free(c->tls_sni);
	free(c->error);
	free(c->content_type);
	buf_free(&c->resp);
	free(c);
}

/* Mark a call failed with a fixed reason (no response). */
static void call_fail(struct http_call *c, const char *why)
{
	c->status = 0;
	free(c->error);
	c->error = xstrdup(why);
	free(c->content_type);
	c->content_type = NULL;
	c->resp.len = 0;
	c->elapsed_ms = clock_mono_ms() - c->start_ms;
}

/* ---- logging ---- */

static void append_escaped(struct buf *b, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)p[i];
		if (ch <= 0x20 || ch >= 0x7f)
			buf_printf(b, "%%%02X", ch);
		else
			buf_append(b, &ch, 1);
	}
}

/* The URL as logged: no user:password@, no query string or fragment, control bytes escaped. */
static char *url_for_log(const char *url)
{
	struct buf b = { 0 };
	const char *sch = strstr(url, "://");
	const char *auth = sch ? sch + 3 : url;
	const char *auth_end = auth + strcspn(auth, "/?#");
	const char *host = auth;
	for (const char *p = auth; p < auth_end; p++)
		if (*p == '@')
			host = p + 1;
	append_escaped(&b, url, (size_t)(auth - url));
	append_escaped(&b, host, (size_t)(auth_end - host));
	size_t plen = strcspn(auth_end, "?#");
	append_escaped(&b, auth_end, plen);
	if (auth_end[plen] == '?')
		buf_append_str(&b, "?...");
	buf_reserve(&b, 1);
	b.data[b.len] = 0;
	return (char *)b.data;
}

static void call_log(const struct http_call *c)
{
	if (!log_enabled(LOG_DEBUG))
		return;
	char *u = url_for_log(c->url);
	if (c->status)
		log_debug("http: %s %s -> %d (%zu bytes) in %" PRIu64 " ms", c->method, u, c->status, c->resp.len,
			  c->elapsed_ms);
	else
		log_debug("http: %s %s -> failed in %" PRIu64 " ms: %s", c->method, u, c->elapsed_ms,
			  c->error ? c->error : "?");
	free(u);
}

/* ---- transfer set-up ---- */

static size_t on_write(char *p, size_t size, size_t n, void *arg)
{
	struct http_call *c = arg;
	size_t len = size * n;
	if (len > c->max_response - c->resp.len) {
		c->too_large = true;
		return 0; /* != len: libcurl aborts with CURLE_WRITE_ERROR */
	}
	buf_append(&c->resp, p, len);
	return len;
}

static bool has_header(const struct http_call *c, const char *name)
{
	size_t n = strlen(name);
	for (char **h = c->headers; *h; h++)
		if (strncasecmp(*h, name, n) == 0 && ((*h)[n] == ':' || (*h)[n] == ';'))
			return true;
	return false;
}

static bool is_token(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (*s <= 0x20 || *s >= 0x7f || strchr("()<>@,;:\\\"/[]?={}", *s))
			return false;
	return true;
}

static bool is_hostname(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '.' ||
		      *s == '-' || *s == '_'))
			return false;
	return true;
}

static long ms_long(uint64_t ms)
{
	return ms > (uint64_t)LONG_MAX ? LONG_MAX : (long)ms;
}

/* tls_sni on an https URL: the URL's host becomes the SNI name (libcurl sends it and, with
 * tls_verify, checks the certificate against it), CURLOPT_CONNECT_TO sends the TCP
 * connection to the original host and port, and a Host header keeps the original host in
 * the request. Returns false with c->error set. */
static bool setup_sni(struct http_call *c, CURLcode *first)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL, *port = NULL, *xport = NULL, *newurl = NULL;
	bool ok = false;
	if (!u)
		abort();
	CURLUcode uc = curl_url_set(u, CURLUPART_URL, c->url, 0);
	if (uc != CURLUE_OK) {
		c->error = xasprintf("invalid URL: %s", curl_url_strerror(uc));
		goto out;
	}
	if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK || strcasecmp(scheme, "https") != 0) {
		ok = true; /* no TLS, no SNI */
		goto out;
	}
	if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK) {
		c->error = xstrdup("invalid URL: no host");
		goto out;
	}
	if (strcasecmp(host, c->tls_sni) == 0) {
		ok = true;
		goto out;
	}
	(void)curl_url_get(u, CURLUPART_PORT, &xport, 0); /* only when the URL names one */
	if (curl_url_set(u, CURLUPART_HOST, c->tls_sni, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_URL, &newurl, 0) != CURLUE_OK) {
		c->error = xasprintf("invalid tls_sni \"%s\"", c->tls_sni);
		goto out;
	}
	char *ct = xasprintf("%s:%s:%s:%s", c->tls_sni, port, host, port);
	c->connect_to = curl_slist_append(NULL, ct);
	free(ct);
	if (!has_header(c, "Host")) {
		char *hh = xport ? xasprintf("Host: %s:%s", host, xport) : xasprintf("Host: %s", host);
		c->slist = curl_slist_append(c->slist, hh);
		free(hh);
	}
	CURLcode rc = curl_easy_setopt(c->easy, CURLOPT_URL, newurl);
	if (rc == CURLE_OK)
		rc = curl_easy_setopt(c->easy, CURLOPT_CONNECT_TO, c->connect_to);
	if (rc != CURLE_OK && *first == CURLE_OK)
		*first = rc;
	ok = true;
out:
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_free(xport);
	curl_free(newurl);
	curl_url_cleanup(u);
	return ok;
}

#define SET(opt, val)                                                    \
	do {                                                             \
		CURLcode rc_ = curl_easy_setopt(e, opt, val);            \
		if (rc_ != CURLE_OK && first == CURLE_OK) {              \
			first = rc_;                                     \
			what = #opt;                                     \
		}                                                        \
	} while (0)

/* Create and configure the call's easy handle. False with c->error set when the request is
 * invalid or libcurl refuses an option. */
static bool call_prepare(struct http_call *c)
{
	if (!is_token(c->method)) {
		c->error = xstrdup("invalid method");
		return false;
	}
	for (char **h = c->headers; *h; h++) {
		if (strpbrk(*h, "\r\n")) {
			c->error = xstrdup("invalid header (contains CR or LF)");
			return false;
		}
	}
	if (c->tls_sni && !is_hostname(c->tls_sni)) {
		c->error = xasprintf("invalid tls_sni \"%s\"", c->tls_sni);
		return false;
	}
	CURL *e = curl_easy_init();
	if (!e) {
		c->error = xstrdup("cannot create a transfer (curl_easy_init failed)");
		return false;
	}
	c->easy = e;
	CURLcode first = CURLE_OK;
	const char *what = NULL;

	for (char **h = c->headers; *h; h++)
		c->slist = curl_slist_append(c->slist, *h);
	if (!has_header(c, "Expect"))
		c->slist = curl_slist_append(c->slist, "Expect:"); /* no 100-continue round trip */

	SET(CURLOPT_PRIVATE, (void *)c);
	SET(CURLOPT_ERRORBUFFER, c->errbuf);
	SET(CURLOPT_URL, c->url);
	SET(CURLOPT_PROTOCOLS_STR, "http,https");
	SET(CURLOPT_NOSIGNAL, 1L);
	SET(CURLOPT_NOPROGRESS, 1L);
	SET(CURLOPT_FOLLOWLOCATION, 0L); /* redirects are returned to the caller, never followed */
	SET(CURLOPT_PROXY, "");          /* ignore http_proxy & co. from the environment */
	SET(CURLOPT_TIMEOUT_MS, ms_long(c->timeout_ms));
	SET(CURLOPT_CONNECTTIMEOUT_MS, ms_long(c->connect_timeout_ms));
	SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)(c->max_response > (size_t)INT64_MAX ? INT64_MAX
									      : (int64_t)c->max_response));
	SET(CURLOPT_WRITEFUNCTION, on_write);
	SET(CURLOPT_WRITEDATA, (void *)c);
	SET(CURLOPT_USERAGENT, "bulwark/" BULWARK_VERSION);

	if (strcmp(c->method, "HEAD") == 0) {
		SET(CURLOPT_NOBODY, 1L);
	} else if (strcmp(c->method, "GET") == 0 && !c->body_len) {
		SET(CURLOPT_HTTPGET, 1L);
	} else {
		bool with_body = c->body_len || strcmp(c->method, "POST") == 0 || strcmp(c->method, "PUT") == 0 ||
				 strcmp(c->method, "PATCH") == 0;
		if (with_body) {
			SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->body_len);
			SET(CURLOPT_POSTFIELDS, c->body ? (const char *)c->body : "");
		}
		if (strcmp(c->method, "POST") != 0)
			SET(CURLOPT_CUSTOMREQUEST, c->method);
	}

	if (c->tls_verify) {
		SET(CURLOPT_SSL_VERIFYPEER, 1L);
		SET(CURLOPT_SSL_VERIFYHOST, 2L);
		if (c->tls_ca_file)
			SET(CURLOPT_CAINFO, c->tls_ca_file);
	} else {
		SET(CURLOPT_SSL_VERIFYPEER, 0L);
		SET(CURLOPT_SSL_VERIFYHOST, 0L);
	}
	if (c->tls_cert_file)
		SET(CURLOPT_SSLCERT, c->tls_cert_file);
	if (c->tls_key_file)
		SET(CURLOPT_SSLKEY, c->tls_key_file);
	if (c->tls_sni && !setup_sni(c, &first))
		return false;
	SET(CURLOPT_HTTPHEADER, c->slist);

	if (first != CURLE_OK) {
		c->error = xasprintf("%s: %s", what ? what : "curl_easy_setopt", curl_easy_strerror(first));
		return false;
	}
	return true;
}

#undef SET

/* Fill the result from a finished transfer and release the libcurl side. */
static void call_finish(struct http_call *c, CURLcode rc, CURLM *multi)
{
	c->elapsed_ms = clock_mono_ms() - c->start_ms;
	long code = 0;
	if (rc == CURLE_OK && !c->too_large) {
		curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &code);
		char *ct = NULL;
		curl_easy_getinfo(c->easy, CURLINFO_CONTENT_TYPE, &ct);
		c->content_type = dup_or_null(ct);
		c->status = (int)code;
		if (!code)
			c->error = xstrdup("no HTTP status in the response");
	} else if (c->too_large || rc == CURLE_FILESIZE_EXCEEDED) {
		c->error = xasprintf("response larger than %zu bytes", c->max_response);
	} else {
		size_t n = strlen(c->errbuf);
		while (n && (c->errbuf[n - 1] == '\n' || c->errbuf[n - 1] == '\r'))
			c->errbuf[--n] = 0;
		c->error = n ? xasprintf("%s: %s", curl_easy_strerror(rc), c->errbuf) : xstrdup(curl_easy_strerror(rc));
	}
	if (!c->status)
		c->resp.len = 0;
	call_detach(c, multi);
	call_log(c);
}

/* ---- delivery ---- */

/* Hand a finished call to its loop's registry. Returns the loop to wake, or NULL when the
 * call was cancelled meanwhile (then it is freed here) or has no loop. */
static struct loop *make_ready(struct http_call *c)
{
	struct loop *l = c->loop;
	if (!l || !c->done) {
		call_free(c);
		return NULL;
	}
	pthread_mutex_lock(&ready_lock);
	int expect = ST_RUNNING;
	bool ok = atomic_compare_exchange_strong(&c->state, &expect, ST_READY);
	if (ok)
		list_push_back(&ready_calls, &c->link);
	pthread_mutex_unlock(&ready_lock);
	if (!ok) {
		call_free(c);
		return NULL;
	}
	return l;
}

/* Run the callbacks of l's ready calls (only those of client `only` when not NULL). On l's
 * thread. */
static void deliver_loop(struct loop *l, const struct http_client *only)
{
	struct list taken;
	list_init(&taken);
	pthread_mutex_lock(&ready_lock);
	list_for_each_safe(pos, &ready_calls) {
		struct http_call *c = container_of(pos, struct http_call, link);
		if (c->loop != l || (only && c->hc != only))
			continue;
		list_del_init(pos);
		atomic_store(&c->state, ST_TAKEN);
		list_push_back(&taken, pos);
	}
	pthread_mutex_unlock(&ready_lock);
	while (!list_empty(&taken)) {
		struct http_call *c = list_first(&taken, struct http_call, link);
		list_del_init(&c->link);
		int expect = ST_TAKEN;
		if (atomic_compare_exchange_strong(&c->state, &expect, ST_DELIVERING)) {
			buf_reserve(&c->resp, 1);
			c->resp.data[c->resp.len] = 0; /* convenience: the body is NUL-terminated */
			struct http_response r = {
				.status = c->status,
				.error = c->status ? NULL : (c->error ? c->error : "failed"),
				.content_type = c->content_type,
				.body = c->resp.data,
				.body_len = c->resp.len,
				.elapsed_ms = c->elapsed_ms,
			};
			c->done(c->arg, &r);
		}
		call_free(c);
	}
}

static void deliver_wake(void *arg)
{
	deliver_loop(arg, NULL);
}

/* ---- the worker ---- */

static void wake_add(struct http_client *hc, struct loop *l)
{
	if (!l)
		return;
	for (size_t i = 0; i < hc->nwake; i++)
		if (hc->wake[i] == l)
			return;
	if (hc->nwake == hc->capwake) {
		hc->capwake = hc->capwake ? hc->capwake * 2 : 8;
		hc->wake = xrealloc(hc->wake, hc->capwake * sizeof *hc->wake);
	}
	hc->wake[hc->nwake++] = l;
}

static void wake_flush(struct http_client *hc)
{
	for (size_t i = 0; i < hc->nwake; i++)
		loop_post(hc->wake[i], deliver_wake, hc->wake[i]);
	hc->nwake = 0;
}

/* Start the transfers handed over since the last round. */
static void intake(struct http_client *hc, struct list *incoming)
{
	while (!list_empty(incoming)) {
		struct http_call *c = list_first(incoming, struct http_call, link);
		list_del_init(&c->link);
		if (atomic_load(&c->state) == ST_CANCELLED) {
			call_free(c);
			continue;
		}
		if (!call_prepare(c)) {
			call_detach(c, hc->multi);
			c->elapsed_ms = clock_mono_ms() - c->start_ms;
			call_log(c);
			wake_add(hc, make_ready(c));
			continue;
		}
		CURLMcode mc = curl_multi_add_handle(hc->multi, c->easy);
		if (mc != CURLM_OK) {
			call_detach(c, hc->multi);
			call_fail(c, curl_multi_strerror(mc));
			call_log(c);
			wake_add(hc, make_ready(c));
			continue;
		}
		c->in_multi = true;
		list_push_back(&hc->active, &c->link);
	}
}

/* Abort and free the transfers whose calls were cancelled. */
static void reap_cancelled(struct http_client *hc)
{
	list_for_each_safe(pos, &hc->active) {
		struct http_call *c = container_of(pos, struct http_call, link);
		if (atomic_load(&c->state) != ST_CANCELLED)
			continue;
		list_del_init(pos);
		call_detach(c, hc->multi);
		if (log_enabled(LOG_DEBUG)) {
			char *u = url_for_log(c->url);
			log_debug("http: %s %s cancelled after %" PRIu64 " ms", c->method, u,
				  clock_mono_ms() - c->start_ms);
			free(u);
		}
		call_free(c);
	}
}

static void *worker_main(void *arg)
{
	struct http_client *hc = arg;
	struct list incoming;
	list_init(&incoming);
	for (;;) {
		pthread_mutex_lock(&hc->lock);
		bool stop = hc->stopping, cancels = hc->cancels;
		hc->cancels = false;
		list_splice_back(&incoming, &hc->queue);
		pthread_mutex_unlock(&hc->lock);
		if (stop)
			break;
		intake(hc, &incoming);
		if (cancels)
			reap_cancelled(hc);
		int running = 0;
		curl_multi_perform(hc->multi, &running);
		CURLMsg *m;
		int left;
		while ((m = curl_multi_info_read(hc->multi, &left))) {
			if (m->msg != CURLMSG_DONE)
				continue;
			struct http_call *c = NULL;
			CURLcode rc = m->data.result; /* m is invalid once the handle is removed */
			curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&c);
			list_del_init(&c->link);
			call_finish(c, rc, hc->multi);
			wake_add(hc, make_ready(c));
		}
		wake_flush(hc);
		curl_multi_poll(hc->multi, NULL, 0, HTTP_POLL_MS, NULL);
	}
	/* Shutting down: every outstanding call completes with "shutting down". */
	list_splice_back(&incoming, &hc->active);
	while (!list_empty(&incoming)) {
		struct http_call *c = list_first(&incoming, struct http_call, link);
		list_del_init(&c->link);
		call_detach(c, hc->multi);
		call_fail(c, "shutting down");
		wake_add(hc, make_ready(c));
	}
	wake_flush(hc);
	return NULL;
}

/* ---- public API ---- */

struct http_client *http_client_new(unsigned max_per_host)
{
	if (!curl_ready())
		return NULL;
	struct http_client *hc = xcalloc(1, sizeof *hc);
	hc->multi = curl_multi_init();
	if (!hc->multi) {
		log_error("http: curl_multi_init failed");
		free(hc);
		return NULL;
	}
	long per_host = max_per_host ? (long)max_per_host : (long)HTTP_DEFAULT_PER_HOST;
	long total = HTTP_MAX_TOTAL_CONNECTIONS > per_host ? HTTP_MAX_TOTAL_CONNECTIONS : per_host;
	curl_multi_setopt(hc->multi, CURLMOPT_MAX_HOST_CONNECTIONS, per_host);
	curl_multi_setopt(hc->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, total);
	curl_multi_setopt(hc->multi, CURLMOPT_MAXCONNECTS, HTTP_MAX_CACHED_CONNECTIONS);
	pthread_mutex_init(&hc->lock, NULL);
	list_init(&hc->queue);
	list_init(&hc->active);
	/* The worker takes no signals: they belong to the broker's signalfd. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	int err = pthread_create(&hc->thread, NULL, worker_main, hc);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err) {
		log_error("http: cannot start the client thread: %s", strerror(err));
		curl_multi_cleanup(hc->multi);
		pthread_mutex_destroy(&hc->lock);
		free(hc);
		return NULL;
	}
	return hc;
}

void http_client_free(struct http_client *hc)
{
	if (!hc)
		return;
	pthread_mutex_lock(&hc->lock);
	hc->stopping = true;
	pthread_mutex_unlock(&hc->lock);
	curl_multi_wakeup(hc->multi);
	pthread_join(hc->thread, NULL);

	/* Wait for running loops to take their "shutting down" calls; drop the rest. */
	uint64_t deadline = clock_mono_ms() + shutdown_grace_ms;
	struct loop *cur = loop_current();
	size_t dropped = 0;
	for (;;) {
		if (cur)
			deliver_loop(cur, hc);
		size_t left = 0;
		struct list drop;
		list_init(&drop);
		pthread_mutex_lock(&ready_lock);
		list_for_each(pos, &ready_calls)
			if (container_of(pos, struct http_call, link)->hc == hc)
				left++;
		if (left && clock_mono_ms() >= deadline) {
			list_for_each_safe(pos, &ready_calls) {
				if (container_of(pos, struct http_call, link)->hc != hc)
					continue;
				list_del_init(pos);
				list_push_back(&drop, pos);
			}
		}
		pthread_mutex_unlock(&ready_lock);
		while (!list_empty(&drop)) {
			struct http_call *c = list_first(&drop, struct http_call, link);
			list_del_init(&c->link);
			call_free(c);
			dropped++;
		}
		if (!left || dropped)
			break;
		usleep(1000);
	}
	if (dropped)
		log_debug("http: dropped %zu calls whose loops did not run within %" PRIu64 " ms", dropped,
			  shutdown_grace_ms);
	/* A concurrent http_cancel wakes the worker under hc->lock: let it finish. */
	pthread_mutex_lock(&hc->lock);
	pthread_mutex_unlock(&hc->lock);
	curl_multi_cleanup(hc->multi);
	pthread_mutex_destroy(&hc->lock);
	free(hc->wake);
	free(hc);
}

struct http_call *http_start(struct http_client *hc, const struct http_request *req, struct loop *l, http_done_fn done,
			     void *arg)
{
	struct http_call *c = call_new(hc, req, l, done, arg);
	/* Without a loop or a callback the result is discarded and the call freed by the worker
	 * at any time: no handle is returned then. */
	struct http_call *handle = l && done ? c : NULL;
	pthread_mutex_lock(&hc->lock);
	bool stopping = hc->stopping;
	if (!stopping)
		list_push_back(&hc->queue, &c->link);
	pthread_mutex_unlock(&hc->lock);
	if (stopping) {
		call_fail(c, "shutting down");
		struct loop *wl = make_ready(c);
		if (wl)
			loop_post(wl, deliver_wake, wl);
		return handle;
	}
	curl_multi_wakeup(hc->multi);
	return handle;
}

void http_cancel(struct http_call *c)
{
	if (!c)
		return;
	for (;;) {
		int s = atomic_load(&c->state);
		if (s == ST_RUNNING) {
			/* The worker owns it: mark it, and let the worker abort the transfer and free it. */
			struct http_client *hc = c->hc;
			pthread_mutex_lock(&hc->lock);
			int expect = ST_RUNNING;
			bool ok = atomic_compare_exchange_strong(&c->state, &expect, ST_CANCELLED);
			if (ok) {
				hc->cancels = true;
				curl_multi_wakeup(hc->multi);
			}
			pthread_mutex_unlock(&hc->lock);
			if (ok)
				return;
			/* It just became READY: take it out of the registry below. */
		} else if (s == ST_READY) {
			pthread_mutex_lock(&ready_lock);
			bool mine = atomic_load(&c->state) == ST_READY;
			if (mine)
				list_del_init(&c->link);
			pthread_mutex_unlock(&ready_lock);
			if (mine) {
				call_free(c);
				return;
			}
		} else if (s == ST_TAKEN) {
			/* In a delivery pass on this thread: it frees the call without a callback. */
			int expect = ST_TAKEN;
			if (atomic_compare_exchange_strong(&c->state, &expect, ST_CANCELLED))
				return;
		} else {
			return; /* DELIVERING (cancel from its own callback) or already CANCELLED */
		}
	}
}

int http_get_sync(struct http_client *hc, const char *url, uint64_t timeout_ms, uint8_t **body, size_t *len, char *err,
		  size_t errlen)
{
	if (body)
		*body = NULL;
	if (len)
		*len = 0;
	if (err && errlen)
		err[0] = 0;
	if (!curl_ready()) {
		if (err && errlen)
			snprintf(err, errlen, "libcurl cannot be initialised");
		return 0;
	}
	if (loop_current())
		log_warn("http: http_get_sync called on a loop thread (it blocks the loop)");
	struct http_request req = { .method = "GET", .url = url, .timeout_ms = timeout_ms };
	struct http_call *c = call_new(hc, &req, NULL, NULL, NULL);
	if (call_prepare(c)) {
		CURLcode rc = curl_easy_perform(c->easy);
		call_finish(c, rc, NULL);
	} else {
		call_detach(c, NULL);
		c->elapsed_ms = clock_mono_ms() - c->start_ms;
		call_log(c);
	}
	int status = c->status;
	if (status) {
		buf_reserve(&c->resp, 1);
		c->resp.data[c->resp.len] = 0;
		if (len)
			*len = c->resp.len;
		if (body) {
			*body = c->resp.data;
			c->resp.data = NULL;
			c->resp.len = c->resp.cap = 0;
		}
	} else if (err && errlen) {
		snprintf(err, errlen, "%s", c->error ? c->error : "failed");
	}
	call_free(c);
	return status;
}
