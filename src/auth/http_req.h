/* What the HTTP backends share (the authenticator auth/authn_http.c and the
 * authorization source authz/source_http.c), prefix http_req_:
 *
 *   - the request settings and their reading: method (get | post, default post), url
 *     (placeholders in the path and query only, rendered URL-escaped), headers (EMQX's
 *     defaults fill the names not given: accept, cache-control, connection, keep-alive and
 *     for POST content-type: application/json; a GET must not carry content-type, a POST's
 *     must be JSON or a form), body (a JSON object of rendered strings and literals, or a
 *     form; with GET the query string), request_timeout, connect_timeout, pool_size,
 *     enable_pipelining (accepted), ssl { ... }, max_retries / retry_interval / pool_type
 *     (warning);
 *   - building one request from those settings and a template lookup;
 *   - the HTTP client of an instance with its requests in flight, so that stopping it
 *     answers every one exactly once.
 */
#ifndef BW_HTTP_REQ_H
#define BW_HTTP_REQ_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/authn_http_util.h"
#include "auth/template.h"
#include "config/cfgread.h"
#include "core/buf.h"
#include "core/list.h"
#include "net/http.h"

struct loop;

enum http_req_body_kind { HTTP_REQ_BODY_TEMPLATE, HTTP_REQ_BODY_LITERAL, HTTP_REQ_BODY_OBJECT };

struct http_req_body_item {
	struct tmpl *key;
	enum http_req_body_kind kind;
	struct tmpl *value;                  /* HTTP_REQ_BODY_TEMPLATE */
	char *literal;                       /* HTTP_REQ_BODY_LITERAL: JSON text of a number, boolean or null */
	struct http_req_body_item *children; /* HTTP_REQ_BODY_OBJECT */
	size_t nchildren;
};

/* How a backend differs. */
struct http_req_kind {
	const char *const *vars;     /* the placeholders allowed */
	uint64_t request_timeout_ms; /* default request_timeout */
	const char *url_required;    /* "url is required for ..." */
	const char *not_utf8;        /* why a body value that is not UTF-8 fails the request */
};

struct http_req_cfg {
	atomic_int refs;             /* the parser's reference and one per instance */
	const struct http_req_kind *kind;
	bool post;
	bool form;                   /* POST body as application/x-www-form-urlencoded */
	char *url;
	char *url_base;              /* "scheme://authority" */
	struct tmpl *url_rest;       /* path, query and fragment */
	struct authn_http_header *headers;
	size_t nheaders;
	struct tmpl **header_tmpl;
	struct http_req_body_item *body;
	size_t nbody;
	uint64_t request_timeout_ms;
	uint64_t connect_timeout_ms;
	uint32_t pool_size;
	struct authn_http_ssl ssl;
	/* Parse-time only. */
	const struct hocon_member *headers_m, *body_m;
};

/* CFG_F_CUSTOM readers whose target is a struct http_req_cfg (see HTTP_REQ_FIELDS). */
bool http_req_read_skip(struct cfg_reader *r, const struct hocon_member *m, void *target);
bool http_req_read_method(struct cfg_reader *r, const struct hocon_member *m, void *target);
bool http_req_read_url(struct cfg_reader *r, const struct hocon_member *m, void *target);
bool http_req_read_defer(struct cfg_reader *r, const struct hocon_member *m, void *target);
bool http_req_read_ssl(struct cfg_reader *r, const struct hocon_member *m, void *target);
bool http_req_read_pipelining(struct cfg_reader *r, const struct hocon_member *m, void *target);

/* The field-table lines every HTTP backend has (the core's keys are the backend's). */
#define HTTP_REQ_FIELDS                                                                                   \
	{ "method", CFG_F_CUSTOM, 0, 0, 0, NULL, http_req_read_method },                                  \
	{ "url", CFG_F_CUSTOM, 0, 0, 0, NULL, http_req_read_url },                                        \
	{ "headers", CFG_F_CUSTOM, 0, 0, 0, NULL, http_req_read_defer },                                  \
	{ "body", CFG_F_CUSTOM, 0, 0, 0, NULL, http_req_read_defer },                                     \
	{ "request_timeout", CFG_F_DURATION_MS, offsetof(struct http_req_cfg, request_timeout_ms), 0, 0, NULL, NULL }, \
	{ "connect_timeout", CFG_F_DURATION_MS, offsetof(struct http_req_cfg, connect_timeout_ms), 0, 0, NULL, NULL }, \
	{ "pool_size", CFG_F_U32, offsetof(struct http_req_cfg, pool_size), 1, 1024, NULL, NULL },        \
	{ "enable_pipelining", CFG_F_CUSTOM, 0, 0, 0, NULL, http_req_read_pipelining },                   \
	{ "ssl", CFG_F_CUSTOM, 0, 0, 0, NULL, http_req_read_ssl },                                        \
	{ "max_retries", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },                                            \
	{ "retry_interval", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },                                         \
	{ "pool_type", CFG_F_IGNORED, 0, 0, 0, NULL, NULL }

/* Read the backend object m through fields (target: the new struct http_req_cfg) and
 * check it (kind must outlive the config). A config with one reference, or NULL with the
 * error set. */
struct http_req_cfg *http_req_parse(struct cfg_reader *r, const struct hocon_member *m, const struct cfg_field *fields,
				    const struct http_req_kind *kind);
/* Take / drop a reference; the last unref frees. NULL is ignored by unref. */
void http_req_cfg_ref(struct http_req_cfg *c);
void http_req_cfg_unref(struct http_req_cfg *c);

/* The request for one call, placeholders from fn(arg): url and body (NUL-terminated), hdrs
 * ("name: value", NULL-terminated, free with http_req_free_headers; set also on failure).
 * False with *why when it cannot be built (a body value not UTF-8, a header value with
 * CR, LF or NUL). */
bool http_req_build(const struct http_req_cfg *c, tmpl_lookup_fn fn, void *arg, struct buf *url, struct buf *body,
		    char ***hdrs, const char **why);
void http_req_free_headers(char **hdrs);

/* An instance's HTTP client and its requests in flight. */
struct http_req_client {
	struct http_client *hc;
	struct loop *main_loop;      /* where answers go for a caller off any loop */
	pthread_mutex_t lock;        /* protects pending */
	struct list pending;
};

/* Start rc with c->pool_size connections. False when the HTTP client cannot start. */
bool http_req_client_init(struct http_req_client *rc, const struct http_req_cfg *c, struct loop *main_loop);
/* Send the built request (c's method, timeouts and ssl; answers above max_response bytes
 * fail) and call done(arg, response) on the current loop (else the main loop). */
void http_req_client_start(struct http_req_client *rc, const struct http_req_cfg *c, const struct buf *url,
			   const struct buf *body, char **hdrs, size_t max_response,
			   void (*done)(void *arg, const struct http_response *resp), void *arg);
/* Stop rc: requests in flight complete on loops that still run; those of loops that
 * stopped are handed to abandon(arg) here. */
void http_req_client_fini(struct http_req_client *rc, void (*abandon)(void *arg));

#endif
