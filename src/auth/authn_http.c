/* `mechanism = password_based, backend = http` (EMQX 5.8, reference/emqx.md §4.2, §4.6).
 *
 * Config keys (besides mechanism/backend/enable, read by the chain core):
 *   method            get | post (default post)
 *   url               required; http:// or https://. The path and query may hold
 *                     placeholders (tmpl_authn_vars), rendered URL-escaped; the scheme, host and
 *                     port may not.
 *   headers           map name = "value" (values may hold placeholders). Names are lower-cased.
 *                     EMQX's defaults fill the names not given: accept: application/json,
 *                     cache-control: no-cache, connection: keep-alive,
 *                     keep-alive: "timeout=30, max=1000", and for POST content-type:
 *                     application/json. A GET must not carry content-type (config error); a
 *                     POST's content-type must be application/json or
 *                     application/x-www-form-urlencoded.
 *   body              map (keys and string values are templates; numbers/booleans/null are
 *                     literals; objects nest for a JSON body). POST: a JSON object whose
 *                     rendered values are JSON strings, or a form body with the form
 *                     content-type; GET: appended to the URL as a query string.
 *   request_timeout   5s: the whole request, connection included
 *   connect_timeout   15s (bounded by request_timeout)
 *   pool_size         8: concurrent connections to the server (this authenticator has its own
 *                     HTTP client, so its pool is its own)
 *   enable_pipelining accepted and ignored (libcurl multiplexes on its own)
 *   max_retries, retry_interval, pool_type: EMQX settings not used (warning)
 *   ssl { enable, verify, cacertfile, certfile, keyfile, server_name_indication }
 *
 * Behaviour: a client without a password, or in enhanced authentication, is ignored (the
 * password-based rule). The answer is read by authn_http_parse_response (auth/authn_http_util.h):
 * 204 allow; 200 JSON/form `result` allow|deny|ignore (+ is_superuser, acl, expire_at,
 * client_attrs, clientid_override); anything else, a timeout, a refused connection, or a
 * credential that cannot be put in a JSON body (not UTF-8) -> AUTHN_ERROR, which the chain turns
 * into ignore or deny (authentication_settings.ignore_backend_failures).
 *
 * Threads: authenticate() runs on the client's worker loop, builds the request and starts it
 * on this authenticator's HTTP client; the answer comes back on the same loop, where
 * authn_done is called. Nothing blocks. Credentials are never logged (libcurl's debug line
 * shows the URL without its query string; do not put ${password} in the path).
 */
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/authn.h"
#include "auth/authn_http_util.h"
#include "auth/template.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/list.h"
#include "core/log.h"
#include "net/http.h"
#include "net/loop.h"

#define HTTP_AUTHN_MAX_RESPONSE (1024u * 1024u)

enum body_kind { BODY_TEMPLATE, BODY_LITERAL, BODY_OBJECT };

struct body_item {
	struct tmpl *key;
	enum body_kind kind;
	struct tmpl *value;          /* BODY_TEMPLATE */
	char *literal;               /* BODY_LITERAL: JSON text of a number, boolean or null */
	struct body_item *children;  /* BODY_OBJECT */
	size_t nchildren;
};

struct http_cfg {
	atomic_int refs;             /* the core's reference and one per instance */
	bool post;
	bool form;                   /* POST body as application/x-www-form-urlencoded */
	char *url;
	char *url_base;              /* "scheme://authority" */
	struct tmpl *url_rest;       /* path, query and fragment */
	struct authn_http_header *headers;
	size_t nheaders;
	struct tmpl **header_tmpl;
	struct body_item *body;
	size_t nbody;
	uint64_t request_timeout_ms;
	uint64_t connect_timeout_ms;
	uint32_t pool_size;
	struct authn_http_ssl ssl;
	/* Parse-time only. */
	const struct hocon_member *method_m, *headers_m, *body_m;
};

struct authn {
	struct http_cfg *cfg;
	char *id;
	struct http_client *hc;
	struct loop *main_loop;
	pthread_mutex_t lock;        /* protects pending */
	struct list pending;         /* struct pending_call, requests in flight */
};

struct pending_call {
	struct list link;
	struct authn *a;
	struct authn_call *call;
};

/* ---- configuration ---- */

static void body_free(struct body_item *v, size_t n)
{
	for (size_t i = 0; v && i < n; i++) {
		tmpl_free(v[i].key);
		tmpl_free(v[i].value);
		free(v[i].literal);
		body_free(v[i].children, v[i].nchildren);
	}
	free(v);
}

static void cfg_unref(struct http_cfg *c)
{
	if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
		return;
	free(c->url);
	free(c->url_base);
	tmpl_free(c->url_rest);
	for (size_t i = 0; c->header_tmpl && i < c->nheaders; i++)
		tmpl_free(c->header_tmpl[i]);
	free(c->header_tmpl);
	authn_http_headers_free(c->headers, c->nheaders);
	body_free(c->body, c->nbody);
	authn_http_ssl_free(&c->ssl);
	free(c);
}

static void free_config(void *p)
{
	cfg_unref(p);
}

static bool skip_key(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	return true; /* read by the chain core */
}

static bool custom_url(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	struct http_cfg *c = target;
	if (!cfgr_string(r, m, &c->url))
		return false;
	const char *u = c->url;
	const char *sep = strstr(u, "://");
	if (!sep || !((sep - u == 4 && strncasecmp(u, "http", 4) == 0) || (sep - u == 5 && strncasecmp(u, "https", 5) == 0)))
		return cfgr_fail(r, m, "expected an http:// or https:// URL");
	const char *auth = sep + 3;
	size_t alen = strcspn(auth, "/?#");
	if (!alen)
		return cfgr_fail(r, m, "the URL has no host");
	const char *host_end = auth + alen;
	for (const char *p = u; p < host_end; p++)
		if (p[0] == '$' && p[1] == '{')
			return cfgr_fail(r, m, "placeholders are allowed in the path and query only, not in the scheme, host or port");
	for (const char *p = u; *p; p++)
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p == 0x7f)
			return cfgr_fail(r, m, "the URL contains a space or control character");
	free(c->url_base);
	tmpl_free(c->url_rest);
	c->url_base = xstrndup(u, (size_t)(host_end - u));
	c->url_rest = tmpl_parse(host_end, tmpl_authn_vars);
	return true;
}

static bool custom_method(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	static const char *const names[] = { "get", "post", NULL };
	int v = 1;
	if (!cfgr_enum(r, m, names, &v))
		return false;
	((struct http_cfg *)target)->post = v == 1;
	return true;
}

static bool custom_defer(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	struct http_cfg *c = target;
	if (strcmp(m->key, "headers") == 0)
		c->headers_m = m;
	else
		c->body_m = m;
	return true;
}

static bool custom_ssl(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	struct http_cfg *c = target;
	authn_http_ssl_free(&c->ssl);
	return authn_http_ssl_parse(r, m, &c->ssl);
}

static bool custom_pipelining(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	/* EMQX: a positive integer (5.x, default 100) or a boolean (4.x); accepted, not used. */
	const char *s = cfgr_scalar(m->value);
	if (!s)
		return cfgr_fail(r, m, "expected a boolean or a positive integer");
	return true;
}

#define HF(f) offsetof(struct http_cfg, f)
static const struct cfg_field http_fields[] = {
	{ "mechanism", CFG_F_CUSTOM, 0, 0, 0, NULL, skip_key },
	{ "backend", CFG_F_CUSTOM, 0, 0, 0, NULL, skip_key },
	{ "enable", CFG_F_CUSTOM, 0, 0, 0, NULL, skip_key },
	{ "method", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_method },
	{ "url", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_url },
	{ "headers", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_defer },
	{ "body", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_defer },
	{ "request_timeout", CFG_F_DURATION_MS, HF(request_timeout_ms), 0, 0, NULL, NULL },
	{ "connect_timeout", CFG_F_DURATION_MS, HF(connect_timeout_ms), 0, 0, NULL, NULL },
	{ "pool_size", CFG_F_U32, HF(pool_size), 1, 1024, NULL, NULL },
	{ "enable_pipelining", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_pipelining },
	{ "ssl", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_ssl },
	{ "max_retries", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "retry_interval", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "pool_type", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

/* Body members of obj into *v; nested objects only where allowed (a JSON body). */
static bool parse_body(struct cfg_reader *r, const struct hocon_member *m, bool nest, struct body_item **v, size_t *n)
{
	const struct hocon_node *obj = m->value;
	if (obj->type != HOCON_OBJECT)
		return cfgr_fail(r, m, "expected an object { key = \"value\", ... }, got %s", hocon_type_str(obj->type));
	*v = xcalloc(obj->n ? obj->n : 1, sizeof **v);
	*n = 0;
	for (size_t i = 0; i < obj->n; i++) {
		const struct hocon_member *bm = &obj->members[i];
		const struct hocon_node *val = bm->value;
		struct body_item *it = &(*v)[*n];
		size_t old = cfgr_path_push(r, bm->key);
		bool ok = true;
		if (val->type == HOCON_STRING) {
			it->kind = BODY_TEMPLATE;
			it->value = tmpl_parse(val->str, tmpl_authn_vars);
		} else if (val->type == HOCON_NUMBER || val->type == HOCON_BOOL || val->type == HOCON_NULL) {
			it->kind = BODY_LITERAL;
			it->literal = xstrdup(val->type == HOCON_NULL ? "null" : val->str);
			if (val->type == HOCON_NUMBER) { /* HOCON numbers are JSON numbers but for a leading '+' or '.' */
				json_error_t je;
				json_t *j = json_loads(val->str, JSON_DECODE_ANY, &je);
				if (!j) {
					free(it->literal);
					it->literal = NULL;
					ok = cfgr_fail(r, bm, "not a JSON number: %s", val->str);
				}
				json_decref(j);
			}
		} else if (val->type == HOCON_OBJECT && nest) {
			it->kind = BODY_OBJECT;
			ok = parse_body(r, bm, true, &it->children, &it->nchildren);
		} else {
			ok = cfgr_fail(r, bm, "expected a string%s, got %s", nest ? ", number, boolean or object" : "",
				       hocon_type_str(val->type));
		}
		cfgr_path_pop(r, old);
		if (ok)
			it->key = tmpl_parse(bm->key, tmpl_authn_vars);
		(*n)++;
		if (!ok)
			return false;
	}
	return true;
}

static const char *const default_headers[][2] = {
	{ "accept", "application/json" },
	{ "cache-control", "no-cache" },
	{ "connection", "keep-alive" },
	{ "keep-alive", "timeout=30, max=1000" },
};

static void add_header(struct http_cfg *c, const char *name, const char *value)
{
	c->headers = xrealloc(c->headers, (c->nheaders + 1) * sizeof *c->headers);
	c->headers[c->nheaders].name = xstrdup(name);
	c->headers[c->nheaders].value = xstrdup(value);
	c->nheaders++;
}

static void *parse(struct cfg_reader *r, const struct hocon_member *m)
{
	struct http_cfg *c = xcalloc(1, sizeof *c);
	atomic_init(&c->refs, 1);
	c->post = true;
	c->request_timeout_ms = 5000;
	c->connect_timeout_ms = 15000;
	c->pool_size = 8;
	if (!cfgr_load_fields(r, m, m->value, http_fields, c))
		goto fail;
	if (!c->url) {
		cfgr_fail(r, m, "url is required for backend = http");
		goto fail;
	}
	if (c->request_timeout_ms == 0 || c->request_timeout_ms == UINT64_MAX) {
		const struct hocon_member *t = hocon_get_member(m->value, "request_timeout");
		size_t old = cfgr_path_push(r, "request_timeout");
		cfgr_fail(r, t ? t : m, "must be a finite duration above zero");
		cfgr_path_pop(r, old);
		goto fail;
	}
	if (c->headers_m) {
		size_t old = cfgr_path_push(r, "headers");
		bool ok = authn_http_headers_parse(r, c->headers_m, &c->headers, &c->nheaders);
		int ct = ok ? authn_http_header_find(c->headers, c->nheaders, "content-type") : -1;
		if (ok && ct >= 0 && !c->post)
			ok = cfgr_fail(r, c->headers_m, "a GET request cannot carry content-type (EMQX)");
		if (ok && ct >= 0) {
			const char *v = c->headers[ct].value;
			if (strncasecmp(v, "application/x-www-form-urlencoded", 33) == 0)
				c->form = true;
			else if (strncasecmp(v, "application/json", 16) != 0)
				ok = cfgr_fail(r, c->headers_m,
					       "content-type must be application/json or application/x-www-form-urlencoded");
		}
		cfgr_path_pop(r, old);
		if (!ok)
			goto fail;
	}
	for (size_t i = 0; i < sizeof default_headers / sizeof default_headers[0]; i++)
		if (authn_http_header_find(c->headers, c->nheaders, default_headers[i][0]) < 0)
			add_header(c, default_headers[i][0], default_headers[i][1]);
	if (c->post && authn_http_header_find(c->headers, c->nheaders, "content-type") < 0)
		add_header(c, "content-type", "application/json");
	c->header_tmpl = xcalloc(c->nheaders, sizeof *c->header_tmpl);
	for (size_t i = 0; i < c->nheaders; i++)
		c->header_tmpl[i] = tmpl_parse(c->headers[i].value, tmpl_authn_vars);
	if (c->body_m) {
		size_t old = cfgr_path_push(r, "body");
		bool ok = parse_body(r, c->body_m, c->post && !c->form, &c->body, &c->nbody);
		cfgr_path_pop(r, old);
		if (!ok)
			goto fail;
	}
	if (strncasecmp(c->url, "http:", 5) == 0 && (c->ssl.enable || c->ssl.certfile)) {
		const struct hocon_member *s = hocon_get_member(m->value, "ssl");
		log_warn("%s:%d: %s.ssl: the url is http://, the ssl settings have no effect", cfgr_file(s), s ? s->line : 0,
			 r->path);
	}
	if (strncasecmp(c->url, "https:", 6) == 0 && !c->ssl.enable) {
		const struct hocon_member *u = hocon_get_member(m->value, "url");
		log_warn("%s:%d: %s.url: https without ssl.enable = true: the server certificate is not verified",
			 cfgr_file(u), u ? u->line : 0, r->path);
	}
	c->method_m = c->headers_m = c->body_m = NULL;
	return c;
fail:
	c->method_m = c->headers_m = c->body_m = NULL;
	cfg_unref(c);
	return NULL;
}

/* ---- requests ---- */

static const char *lookup(void *arg, const char *name, size_t name_len, size_t *len, char *scratch, size_t scratch_len)
{
	return authn_request_var(arg, name, name_len, len, scratch, scratch_len);
}

/* Render t raw into a fresh buffer. */
static void render_raw(const struct tmpl *t, const struct authn_request *rq, struct buf *out)
{
	out->len = 0;
	tmpl_render(t, lookup, (void *)rq, TMPL_RAW, out);
}

static bool json_body(struct buf *out, const struct body_item *v, size_t n, const struct authn_request *rq)
{
	struct buf tmp = { 0 };
	bool ok = true;
	buf_append(out, "{", 1);
	for (size_t i = 0; ok && i < n; i++) {
		if (i)
			buf_append(out, ",", 1);
		render_raw(v[i].key, rq, &tmp);
		buf_append(out, "\"", 1);
		ok = authn_http_json_escape(out, (const char *)tmp.data, tmp.len);
		buf_append(out, "\":", 2);
		if (!ok)
			break;
		switch (v[i].kind) {
		case BODY_TEMPLATE:
			render_raw(v[i].value, rq, &tmp);
			buf_append(out, "\"", 1);
			ok = authn_http_json_escape(out, (const char *)tmp.data, tmp.len);
			buf_append(out, "\"", 1);
			break;
		case BODY_LITERAL:
			buf_append_str(out, v[i].literal);
			break;
		case BODY_OBJECT:
			ok = json_body(out, v[i].children, v[i].nchildren, rq);
			break;
		}
	}
	buf_append(out, "}", 1);
	buf_free(&tmp);
	return ok;
}

/* key=value&... with every rendered part percent-encoded (a GET query or a form body). */
static void form_body(struct buf *out, const struct body_item *v, size_t n, const struct authn_request *rq)
{
	struct buf tmp = { 0 };
	for (size_t i = 0; i < n; i++) {
		if (i)
			buf_append(out, "&", 1);
		render_raw(v[i].key, rq, &tmp);
		authn_http_url_escape(out, (const char *)tmp.data, tmp.len);
		buf_append(out, "=", 1);
		if (v[i].kind == BODY_TEMPLATE) {
			render_raw(v[i].value, rq, &tmp);
			authn_http_url_escape(out, (const char *)tmp.data, tmp.len);
		} else if (v[i].kind == BODY_LITERAL && strcmp(v[i].literal, "null") != 0) {
			authn_http_url_escape(out, v[i].literal, strlen(v[i].literal));
		}
	}
	buf_free(&tmp);
}

static void answer(struct authn_call *call, enum authn_verdict v, const char *why)
{
	struct authn_result res = { .verdict = v };
	snprintf(res.reason, sizeof res.reason, "%s", why);
	authn_done(call, &res);
}

static void on_response(void *arg, const struct http_response *resp)
{
	struct pending_call *pc = arg;
	struct authn *a = pc->a;
	pthread_mutex_lock(&a->lock);
	list_del_init(&pc->link);
	pthread_mutex_unlock(&a->lock);
	struct authn_result res;
	authn_http_parse_response(resp->status, resp->content_type, resp->body, resp->body_len, clock_wall_s(), &res);
	if (resp->status == 0)
		snprintf(res.reason, sizeof res.reason, "HTTP request failed: %.160s", resp->error ? resp->error : "?");
	if (res.verdict == AUTHN_ERROR)
		log_warn("authentication %s: backend failure: %s", a->id, res.reason);
	else
		log_debug("authentication %s: HTTP %d in %llu ms: %s", a->id, resp->status,
			  (unsigned long long)resp->elapsed_ms, res.reason);
	authn_done(pc->call, &res);
	free(pc);
}

/* The request for rq: url and body (NUL-terminated), hdrs ("name: value", NULL-terminated,
 * free with free_headers). False with *why when it cannot be built (the call is a backend
 * failure then). */
static bool build_request(const struct http_cfg *c, const struct authn_request *rq, struct buf *url, struct buf *body,
			  char ***hdrs, const char **why)
{
	struct buf tmp = { 0 };
	*why = NULL;
	*hdrs = xcalloc(c->nheaders + 1, sizeof **hdrs);
	buf_append_str(url, c->url_base);
	tmpl_render(c->url_rest, lookup, (void *)rq, TMPL_URL, url);
	if (c->post) {
		if (c->form)
			form_body(body, c->body, c->nbody, rq);
		else if (!json_body(body, c->body, c->nbody, rq))
			*why = "a credential is not UTF-8 and cannot be sent in a JSON body";
	} else if (c->nbody) {
		/* The query goes after an existing one and before a fragment. */
		size_t frag = 0;
		while (frag < url->len && url->data[frag] != '#')
			frag++;
		struct buf u2 = { 0 };
		buf_append(&u2, url->data, frag);
		buf_append(&u2, memchr(url->data, '?', frag) ? "&" : "?", 1);
		form_body(&u2, c->body, c->nbody, rq);
		buf_append(&u2, url->data + frag, url->len - frag);
		buf_free(url);
		*url = u2;
	}
	buf_append(url, "", 1);
	url->len--;
	buf_append(body, "", 1);
	body->len--;
	for (size_t i = 0; i < c->nheaders; i++) {
		render_raw(c->header_tmpl[i], rq, &tmp);
		if (memchr(tmp.data, '\r', tmp.len) || memchr(tmp.data, '\n', tmp.len) || memchr(tmp.data, '\0', tmp.len))
			*why = "a rendered header value contains CR, LF or NUL";
		struct buf h = { 0 };
		buf_printf(&h, "%s: ", c->headers[i].name);
		buf_append(&h, tmp.data, tmp.len);
		buf_append(&h, "", 1);
		(*hdrs)[i] = (char *)h.data;
	}
	buf_free(&tmp);
	return *why == NULL;
}

static void free_headers(char **hdrs)
{
	for (size_t i = 0; hdrs && hdrs[i]; i++)
		free(hdrs[i]);
	free(hdrs);
}

static void authenticate(struct authn *a, struct authn_call *call)
{
	const struct authn_request *rq = authn_call_request(call);
	const struct http_cfg *c = a->cfg;
	if (!rq->password) {
		answer(call, AUTHN_IGNORE, "no password");
		return;
	}
	if (rq->auth_method) {
		answer(call, AUTHN_IGNORE, "enhanced authentication");
		return;
	}
	struct buf url = { 0 }, body = { 0 };
	char **hdrs = NULL;
	const char *why = NULL;
	if (!build_request(c, rq, &url, &body, &hdrs, &why)) {
		log_warn("authentication %s: backend failure: %s", a->id, why);
		answer(call, AUTHN_ERROR, why);
		goto out;
	}
	struct http_request req = {
		.method = c->post ? "POST" : "GET",
		.url = (const char *)url.data,
		.headers = (const char *const *)hdrs,
		.body = c->post ? (const void *)body.data : NULL,
		.body_len = c->post ? body.len : 0,
		.timeout_ms = c->request_timeout_ms,
		.connect_timeout_ms = c->connect_timeout_ms < c->request_timeout_ms ? c->connect_timeout_ms : 0,
		.max_response = HTTP_AUTHN_MAX_RESPONSE,
	};
	authn_http_ssl_apply(&c->ssl, &req);
	struct loop *l = loop_current();
	if (!l)
		l = a->main_loop;
	struct pending_call *pc = xcalloc(1, sizeof *pc);
	pc->a = a;
	pc->call = call;
	pthread_mutex_lock(&a->lock);
	list_push_back(&a->pending, &pc->link);
	pthread_mutex_unlock(&a->lock);
	http_start(a->hc, &req, l, on_response, pc);
out:
	free_headers(hdrs);
	buf_free(&url);
	buf_free(&body);
}

/* ---- life cycle ---- */

static struct authn *create(const void *cfgp, const struct authn_env *env, const char *id, char *err, size_t errlen)
{
	struct http_cfg *c = (struct http_cfg *)cfgp;
	struct http_client *hc = http_client_new(c->pool_size);
	if (!hc) {
		snprintf(err, errlen, "%s: the HTTP client could not start", id);
		return NULL;
	}
	struct authn *a = xcalloc(1, sizeof *a);
	atomic_fetch_add(&c->refs, 1);
	a->cfg = c;
	a->id = xstrdup(id);
	a->hc = hc;
	a->main_loop = env ? env->main_loop : NULL;
	pthread_mutex_init(&a->lock, NULL);
	list_init(&a->pending);
	return a;
}

static void destroy(struct authn *a)
{
	if (!a)
		return;
	/* Requests in flight complete with "shutting down" on loops that still run; calls of
	 * loops that stopped are dropped by the client and answered here. */
	http_client_free(a->hc);
	pthread_mutex_lock(&a->lock);
	struct list left;
	list_init(&left);
	list_for_each_safe(it, &a->pending) {
		list_del_init(it);
		list_push_back(&left, it);
	}
	pthread_mutex_unlock(&a->lock);
	list_for_each_safe(it, &left) {
		struct pending_call *pc = container_of(it, struct pending_call, link);
		list_del_init(it);
		answer(pc->call, AUTHN_ERROR, "shutting down");
		free(pc);
	}
	pthread_mutex_destroy(&a->lock);
	cfg_unref(a->cfg);
	free(a->id);
	free(a);
}

static const struct authn_ops http_ops = {
	.mechanism = "password_based",
	.backend = "http",
	.cacheable = true,
	.parse = parse,
	.free_config = free_config,
	.create = create,
	.destroy = destroy,
	.authenticate = authenticate,
};

__attribute__((constructor)) static void register_http(void)
{
	authn_register(&http_ops);
}
