/* Asynchronous HTTP(S) client for the broker's outbound calls: CRL distribution points,
 * OCSP responders, and (later) HTTP authentication/authorization backends and JWKS.
 *
 * Built on libcurl's multi interface, running on its own thread, so no loop thread ever
 * blocks on the network. A request is started from any thread; its completion callback
 * runs on the loop the caller names (through loop_post), exactly once, unless the call
 * was cancelled first. Connections to the same host are kept alive and reused.
 */
#ifndef BW_HTTP_H
#define BW_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct loop;
struct http_client;
struct http_call;

struct http_request {
	const char *method;              /* "GET" (default when NULL), "POST", "PUT", ... */
	const char *url;                 /* http:// or https:// */
	const char *const *headers;      /* "Name: value" strings, NULL-terminated; may be NULL */
	const void *body;                /* request body (copied), may be NULL */
	size_t body_len;
	uint64_t timeout_ms;             /* whole request; 0 = 15 s */
	uint64_t connect_timeout_ms;     /* 0 = timeout_ms */
	size_t max_response;             /* larger bodies fail the call; 0 = 4 MB */
	/* TLS for https:// URLs. */
	bool tls_verify;                 /* verify the server certificate and name (default false, as EMQX) */
	const char *tls_ca_file;         /* CA bundle for verification; NULL = system default */
	const char *tls_cert_file;       /* client certificate, optional */
	const char *tls_key_file;
	const char *tls_sni;             /* server name to send/verify instead of the URL host, optional */
};

struct http_response {
	int status;                      /* HTTP status, or 0 when the request failed before a response */
	const char *error;               /* why it failed (timeout, refused, too large, ...) when status is 0 */
	const char *content_type;        /* may be NULL */
	const uint8_t *body;             /* valid during the callback only */
	size_t body_len;
	uint64_t elapsed_ms;
};

/* Runs on the loop given to http_start; resp is valid during the call only. */
typedef void (*http_done_fn)(void *arg, const struct http_response *resp);

/* Start the client's thread. max_per_host bounds concurrent connections to one host
 * (0 = 8). Returns NULL with a log line if libcurl cannot be initialised. */
struct http_client *http_client_new(unsigned max_per_host);
/* Stop the thread; outstanding calls complete with status 0 "shutting down" on their loops
 * if those still run, or are dropped (callbacks not run) when freeing after loops stopped. */
void http_client_free(struct http_client *hc);

/* Start a request; everything in req is copied. done(arg, resp) runs later on loop l.
 * Returns a handle usable with http_cancel until done has run. */
struct http_call *http_start(struct http_client *hc, const struct http_request *req, struct loop *l, http_done_fn done,
			     void *arg);
/* Cancel a call: after this returns (called on loop l's thread), done will not run. */
void http_cancel(struct http_call *call);

/* Blocking GET for start-up and tools (not on a loop thread). Returns the status (0 on
 * failure, with err filled) and a malloc'd body in *body / *len. */
int http_get_sync(struct http_client *hc, const char *url, uint64_t timeout_ms, uint8_t **body, size_t *len, char *err,
		  size_t errlen);

/* Added with the implementation (net/http.c); no declarations changed:
 *   - Redirects are not followed: a 3xx is returned as the status. Only http and https;
 *     http_proxy & co. are ignored. Headers containing CR or LF fail the call.
 *   - A response body is NUL-terminated (body[body_len] == 0) for convenience; a failed
 *     call (status 0) has no body and no content_type. elapsed_ms includes queueing.
 *   - http_start with l or done NULL runs the request, discards the result, returns NULL.
 *   - Shutdown rule: free the client either while the callers' loops still run (callbacks
 *     get status 0 "shutting down"; when free runs on a loop thread, that loop's callbacks
 *     run inside http_client_free) or after they stopped (callbacks dropped). A loop that
 *     has not run its posts within 1 s counts as stopped. After http_client_free returns no
 *     handle of the client may be used. Free the client before the loops it posts to.
 *   - http_get_sync: hc may be NULL; the body limit is the default 4 MB; *body is released
 *     with free(). */

#endif
