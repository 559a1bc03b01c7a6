/* `authorization.sources = [{type = http, ...}]` (EMQX 5.8, reference/emqx.md §5):
 *
 *   { type = http, enable = true
 *     method = post                               # or get (default post)
 *     url = "http://127.0.0.1:8080/mqtt/acl"      # path and query may hold placeholders
 *     headers { "X-Request-Source" = "bulwark" }
 *     body { username = "${username}", topic = "${topic}", action = "${action}" }
 *     request_timeout = 30s }
 *
 * Placeholders: authz_tmpl_vars (${username}, ${clientid}, ${peerhost}, ${topic},
 * ${action} publish|subscribe, ${qos}, ${retain}, ${mountpoint}, ${proto_name},
 * ${cert_common_name}, ${cert_subject}, ${client_attrs.NAME}, ...). The URL's path and
 * query are rendered URL-escaped; header values raw (a value with CR, LF or NUL fails the
 * request); the body as JSON strings (content-type application/json, the default) or as a
 * form (application/x-www-form-urlencoded); with GET the body goes to the query string.
 * Headers default as EMQX's (accept, cache-control, connection, keep-alive, and for POST
 * content-type: application/json); a GET must not carry content-type.
 *
 * Other keys: connect_timeout (15s), pool_size (8, this source's own HTTP client),
 * enable_pipelining (accepted), ssl { enable, verify, cacertfile, certfile, keyfile,
 * server_name_indication }; max_retries, retry_interval, pool_type, max_inactive are EMQX
 * settings not used (warning).
 *
 * The answer (hz_verdict, EMQX emqx_authz_http):
 *   204 -> ALLOW;
 *   200 with a JSON (or form) body -> "result": allow -> ALLOW, deny -> DENY, ignore ->
 *   NOMATCH; a body without a valid result -> NOMATCH (warning);
 *   any other status -> NOMATCH (debug log);
 *   no answer (refused, timeout, too large) -> AUTHZ_ERROR.
 *
 * Threads: start() runs on the client's loop, builds the request and starts it on this
 * source's HTTP client (net/http.h); the answer comes back on the same loop, where
 * authz_call_done is called. Nothing blocks.
 */
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/authn_http_util.h"
#include "auth/template.h"
#include "authz/source.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/list.h"
#include "core/log.h"
#include "net/http.h"
#include "net/loop.h"

#define HZ_MAX_RESPONSE (64u * 1024u)

enum hz_body_kind { HZ_BODY_TEMPLATE, HZ_BODY_LITERAL, HZ_BODY_OBJECT };

struct hz_body_item {
	struct tmpl *key;
	enum hz_body_kind kind;
	struct tmpl *value;            /* HZ_BODY_TEMPLATE */
	char *literal;                 /* HZ_BODY_LITERAL: JSON text of a number, boolean or null */
	struct hz_body_item *children; /* HZ_BODY_OBJECT */
	size_t nchildren;
};

struct hz_cfg {
	atomic_int refs;               /* the core's reference and one per instance */
	bool post;
	bool form;                     /* POST body as application/x-www-form-urlencoded */
	char *url;
	char *url_base;                /* "scheme://authority" */
	struct tmpl *url_rest;         /* path, query and fragment */
	struct authn_http_header *headers;
	size_t nheaders;
	struct tmpl **header_tmpl;
	struct hz_body_item *body;
	size_t nbody;
	uint64_t request_timeout_ms;
	uint64_t connect_timeout_ms;
	uint32_t pool_size;
	struct authn_http_ssl ssl;
	/* Parse-time only. */
	const struct hocon_member *headers_m, *body_m;
};

struct hz_source {
	struct hz_cfg *cfg;
	struct http_client *hc;
	struct loop *main_loop;
	pthread_mutex_t lock;          /* protects pending */
	struct list pending;           /* struct hz_pending, requests in flight */
};

struct hz_pending {
	struct list link;
	struct hz_source *s;
	struct authz_call *call;
};

/* ---- the answer ---- */

static int hz_hex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* The value of key in an application/x-www-form-urlencoded body, percent-decoded into out
 * (NUL-terminated, truncated). False when absent. */
static bool hz_form_get(const char *body, size_t len, const char *key, char *out, size_t outlen)
{
	const char *p = body, *end = body + len;
	size_t klen = strlen(key);
	while (p < end) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *stop = amp ? amp : end;
		const char *eq = memchr(p, '=', (size_t)(stop - p));
		if (eq && (size_t)(eq - p) == klen && memcmp(p, key, klen) == 0) {
			size_t o = 0;
			for (const char *v = eq + 1; v < stop && o + 1 < outlen; v++) {
				int hi, lo;
				if (*v == '+') {
					out[o++] = ' ';
				} else if (*v == '%' && stop - v >= 3 && (hi = hz_hex(v[1])) >= 0 &&
					   (lo = hz_hex(v[2])) >= 0) {
					out[o++] = (char)(hi * 16 + lo);
					v += 2;
				} else {
					out[o++] = *v;
				}
			}
			out[o] = '\0';
			return true;
		}
		p = stop + 1;
	}
	return false;
}

/* The verdict an HTTP authorization answer gives (see the header comment). why gets a
 * short reason for the logs; *malformed is set for a 200 answer without a valid result. */
static enum authz_verdict hz_verdict(int status, const char *content_type, const uint8_t *body, size_t len, char *why,
				     size_t whylen, bool *malformed)
{
	*malformed = false;
	if (status == 0) {
		snprintf(why, whylen, "no answer");
		return AUTHZ_ERROR;
	}
	if (status == 204) {
		snprintf(why, whylen, "204: allow");
		return AUTHZ_ALLOW;
	}
	if (status != 200) {
		snprintf(why, whylen, "status %d: no match", status);
		return AUTHZ_NOMATCH;
	}
	const char *ct = content_type && content_type[0] ? content_type : "application/json";
	char result[16] = "";
	bool found = false;
	if (strncasecmp(ct, "application/x-www-form-urlencoded", 33) == 0) {
		found = hz_form_get(body ? (const char *)body : "", len, "result", result, sizeof result);
	} else if (strncasecmp(ct, "application/json", 16) == 0) {
		json_t *doc = json_loadb(body ? (const char *)body : "", len, 0, NULL);
		const json_t *r = json_is_object(doc) ? json_object_get(doc, "result") : NULL;
		if (r && json_is_string(r)) {
			snprintf(result, sizeof result, "%s", json_string_value(r));
			found = strlen(json_string_value(r)) < sizeof result;
		}
		json_decref(doc);
	} else {
		char shown[64];
		authn_http_printable(shown, sizeof shown, ct);
		snprintf(why, whylen, "200 with content-type %s (expected application/json or "
				      "application/x-www-form-urlencoded): no match", shown);
		*malformed = true;
		return AUTHZ_NOMATCH;
	}
	if (found && strcmp(result, "allow") == 0) {
		snprintf(why, whylen, "200: allow");
		return AUTHZ_ALLOW;
	}
	if (found && strcmp(result, "deny") == 0) {
		snprintf(why, whylen, "200: deny");
		return AUTHZ_DENY;
	}
	if (found && strcmp(result, "ignore") == 0) {
		snprintf(why, whylen, "200: ignore");
		return AUTHZ_NOMATCH;
	}
	snprintf(why, whylen, "200 without a result of allow, deny or ignore: no match");
	*malformed = true;
	return AUTHZ_NOMATCH;
}

/* ---- configuration ---- */

static void hz_body_free(struct hz_body_item *v, size_t n)
{
	for (size_t i = 0; v && i < n; i++) {
		tmpl_free(v[i].key);
		tmpl_free(v[i].value);
		free(v[i].literal);
		hz_body_free(v[i].children, v[i].nchildren);
	}
	free(v);
}

static void hz_cfg_unref(struct hz_cfg *c)
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
	hz_body_free(c->body, c->nbody);
	authn_http_ssl_free(&c->ssl);
	free(c);
}

static void hz_free_config(void *p)
{
	hz_cfg_unref(p);
}

static bool hz_skip(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	return true; /* read by the core */
}

static bool hz_read_url(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	struct hz_cfg *c = target;
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
	c->url_rest = tmpl_parse(host_end, authz_tmpl_vars);
	return true;
}

static bool hz_read_method(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	static const char *const names[] = { "get", "post", NULL };
	int v = 1;
	if (!cfgr_enum(r, m, names, &v))
		return false;
	((struct hz_cfg *)target)->post = v == 1;
	return true;
}

static bool hz_defer(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	struct hz_cfg *c = target;
	if (strcmp(m->key, "headers") == 0)
		c->headers_m = m;
	else
		c->body_m = m;
	return true;
}

static bool hz_read_ssl(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	struct hz_cfg *c = target;
	authn_http_ssl_free(&c->ssl);
	return authn_http_ssl_parse(r, m, &c->ssl);
}

static bool hz_read_pipelining(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	/* EMQX: a positive integer (5.x, default 100) or a boolean; accepted, not used. */
	if (!cfgr_scalar(m->value))
		return cfgr_fail(r, m, "expected a boolean or a positive integer");
	return true;
}

#define HZF(f) offsetof(struct hz_cfg, f)
static const struct cfg_field hz_fields[] = {
	{ "type", CFG_F_CUSTOM, 0, 0, 0, NULL, hz_skip },
	{ "enable", CFG_F_CUSTOM, 0, 0, 0, NULL, hz_skip },
	{ "method", CFG_F_CUSTOM, 0, 0, 0, NULL, hz_read_method },
	{ "url", CFG_F_CUSTOM, 0, 0, 0, NULL, hz_read_url },
	{ "headers", CFG_F_CUSTOM, 0, 0, 0, NULL, hz_defer },
	{ "body", CFG_F_CUSTOM, 0, 0, 0, NULL, hz_defer },
	{ "request_timeout", CFG_F_DURATION_MS, HZF(request_timeout_ms), 0, 0, NULL, NULL },
	{ "connect_timeout", CFG_F_DURATION_MS, HZF(connect_timeout_ms), 0, 0, NULL, NULL },
	{ "pool_size", CFG_F_U32, HZF(pool_size), 1, 1024, NULL, NULL },
	{ "enable_pipelining", CFG_F_CUSTOM, 0, 0, 0, NULL, hz_read_pipelining },
	{ "ssl", CFG_F_CUSTOM, 0, 0, 0, NULL, hz_read_ssl },
	{ "max_retries", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "retry_interval", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "pool_type", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "max_inactive", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

/* Body members of obj into *v; nested objects only where allowed (a JSON body). */
static bool hz_parse_body(struct cfg_reader *r, const struct hocon_member *m, bool nest, struct hz_body_item **v,
			  size_t *n)
{
	const struct hocon_node *obj = m->value;
	if (obj->type != HOCON_OBJECT)
		return cfgr_fail(r, m, "expected an object { key = \"value\", ... }, got %s", hocon_type_str(obj->type));
	*v = xcalloc(obj->n ? obj->n : 1, sizeof **v);
	*n = 0;
	for (size_t i = 0; i < obj->n; i++) {
		const struct hocon_member *bm = &obj->members[i];
		const struct hocon_node *val = bm->value;
		struct hz_body_item *it = &(*v)[*n];
		size_t old = cfgr_path_push(r, bm->key);
		bool ok = true;
		if (val->type == HOCON_STRING) {
			it->kind = HZ_BODY_TEMPLATE;
			it->value = tmpl_parse(val->str, authz_tmpl_vars);
		} else if (val->type == HOCON_NUMBER || val->type == HOCON_BOOL || val->type == HOCON_NULL) {
			it->kind = HZ_BODY_LITERAL;
			it->literal = xstrdup(val->type == HOCON_NULL ? "null" : val->str);
			if (val->type == HOCON_NUMBER) { /* HOCON numbers are JSON numbers but for a leading '+' or '.' */
				json_t *j = json_loads(val->str, JSON_DECODE_ANY, NULL);
				if (!j) {
					free(it->literal);
					it->literal = NULL;
					ok = cfgr_fail(r, bm, "not a JSON number: %s", val->str);
				}
				json_decref(j);
			}
		} else if (val->type == HOCON_OBJECT && nest) {
			it->kind = HZ_BODY_OBJECT;
			ok = hz_parse_body(r, bm, true, &it->children, &it->nchildren);
		} else {
			ok = cfgr_fail(r, bm, "expected a string%s, got %s", nest ? ", number, boolean or object" : "",
				       hocon_type_str(val->type));
		}
		cfgr_path_pop(r, old);
		if (ok)
			it->key = tmpl_parse(bm->key, authz_tmpl_vars);
		(*n)++;
		if (!ok)
			return false;
	}
	return true;
}

static const char *const hz_default_headers[][2] = {
	{ "accept", "application/json" },
	{ "cache-control", "no-cache" },
	{ "connection", "keep-alive" },
	{ "keep-alive", "timeout=30, max=1000" },
};

static void hz_add_header(struct hz_cfg *c, const char *name, const char *value)
{
	c->headers = xrealloc(c->headers, (c->nheaders + 1) * sizeof *c->headers);
	c->headers[c->nheaders].name = xstrdup(name);
	c->headers[c->nheaders].value = xstrdup(value);
	c->nheaders++;
}

static void *hz_parse(struct cfg_reader *r, const struct hocon_member *m)
{
	struct hz_cfg *c = xcalloc(1, sizeof *c);
	atomic_init(&c->refs, 1);
	c->post = true;
	c->request_timeout_ms = 30000;
	c->connect_timeout_ms = 15000;
	c->pool_size = 8;
	if (!cfgr_load_fields(r, m, m->value, hz_fields, c))
		goto fail;
	if (!c->url) {
		cfgr_fail(r, m, "url is required for type = http");
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
	for (size_t i = 0; i < sizeof hz_default_headers / sizeof hz_default_headers[0]; i++)
		if (authn_http_header_find(c->headers, c->nheaders, hz_default_headers[i][0]) < 0)
			hz_add_header(c, hz_default_headers[i][0], hz_default_headers[i][1]);
	if (c->post && authn_http_header_find(c->headers, c->nheaders, "content-type") < 0)
		hz_add_header(c, "content-type", "application/json");
	c->header_tmpl = xcalloc(c->nheaders ? c->nheaders : 1, sizeof *c->header_tmpl);
	for (size_t i = 0; i < c->nheaders; i++)
		c->header_tmpl[i] = tmpl_parse(c->headers[i].value, authz_tmpl_vars);
	if (c->body_m) {
		size_t old = cfgr_path_push(r, "body");
		bool ok = hz_parse_body(r, c->body_m, c->post && !c->form, &c->body, &c->nbody);
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
	c->headers_m = c->body_m = NULL;
	return c;
fail:
	c->headers_m = c->body_m = NULL;
	hz_cfg_unref(c);
	return NULL;
}

/* ---- requests ---- */

static const char *hz_lookup(void *arg, const char *name, size_t name_len, size_t *len, char *scratch,
			     size_t scratch_len)
{
	return authz_call_var(arg, name, name_len, len, scratch, scratch_len);
}

static void hz_render_raw(const struct tmpl *t, struct authz_call *call, struct buf *out)
{
	out->len = 0;
	tmpl_render(t, hz_lookup, call, TMPL_RAW, out);
}

static bool hz_json_body(struct buf *out, const struct hz_body_item *v, size_t n, struct authz_call *call)
{
	struct buf tmp = { 0 };
	bool ok = true;
	buf_append(out, "{", 1);
	for (size_t i = 0; ok && i < n; i++) {
		if (i)
			buf_append(out, ",", 1);
		hz_render_raw(v[i].key, call, &tmp);
		buf_append(out, "\"", 1);
		ok = authn_http_json_escape(out, (const char *)tmp.data, tmp.len);
		buf_append(out, "\":", 2);
		if (!ok)
			break;
		switch (v[i].kind) {
		case HZ_BODY_TEMPLATE:
			hz_render_raw(v[i].value, call, &tmp);
			buf_append(out, "\"", 1);
			ok = authn_http_json_escape(out, (const char *)tmp.data, tmp.len);
			buf_append(out, "\"", 1);
			break;
		case HZ_BODY_LITERAL:
			buf_append_str(out, v[i].literal);
			break;
		case HZ_BODY_OBJECT:
			ok = hz_json_body(out, v[i].children, v[i].nchildren, call);
			break;
		}
	}
	buf_append(out, "}", 1);
	buf_free(&tmp);
	return ok;
}

/* key=value&... with every rendered part percent-encoded (a GET query or a form body). */
static void hz_form_body(struct buf *out, const struct hz_body_item *v, size_t n, struct authz_call *call)
{
	struct buf tmp = { 0 };
	for (size_t i = 0; i < n; i++) {
		if (i)
			buf_append(out, "&", 1);
		hz_render_raw(v[i].key, call, &tmp);
		authn_http_url_escape(out, (const char *)tmp.data, tmp.len);
		buf_append(out, "=", 1);
		if (v[i].kind == HZ_BODY_TEMPLATE) {
			hz_render_raw(v[i].value, call, &tmp);
			authn_http_url_escape(out, (const char *)tmp.data, tmp.len);
		} else if (v[i].kind == HZ_BODY_LITERAL && strcmp(v[i].literal, "null") != 0) {
			authn_http_url_escape(out, v[i].literal, strlen(v[i].literal));
		}
	}
	buf_free(&tmp);
}

/* The request for call: url and body (NUL-terminated), hdrs ("name: value",
 * NULL-terminated, free with hz_free_headers). False with *why when it cannot be built. */
static bool hz_build_request(const struct hz_cfg *c, struct authz_call *call, struct buf *url, struct buf *body,
			     char ***hdrs, const char **why)
{
	struct buf tmp = { 0 };
	*why = NULL;
	*hdrs = xcalloc(c->nheaders + 1, sizeof **hdrs);
	buf_append_str(url, c->url_base);
	tmpl_render(c->url_rest, hz_lookup, call, TMPL_URL, url);
	if (c->post) {
		if (c->form)
			hz_form_body(body, c->body, c->nbody, call);
		else if (!hz_json_body(body, c->body, c->nbody, call))
			*why = "a value is not UTF-8 and cannot be sent in a JSON body";
	} else if (c->nbody) {
		/* The query goes after an existing one and before a fragment. */
		size_t frag = 0;
		while (frag < url->len && url->data[frag] != '#')
			frag++;
		struct buf u2 = { 0 };
		buf_append(&u2, url->data, frag);
		buf_append(&u2, memchr(url->data, '?', frag) ? "&" : "?", 1);
		hz_form_body(&u2, c->body, c->nbody, call);
		buf_append(&u2, url->data + frag, url->len - frag);
		buf_free(url);
		*url = u2;
	}
	buf_append(url, "", 1);
	url->len--;
	buf_append(body, "", 1);
	body->len--;
	for (size_t i = 0; i < c->nheaders; i++) {
		hz_render_raw(c->header_tmpl[i], call, &tmp);
		if (tmp.len && (memchr(tmp.data, '\r', tmp.len) || memchr(tmp.data, '\n', tmp.len) ||
				memchr(tmp.data, '\0', tmp.len)))
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

static void hz_free_headers(char **hdrs)
{
	for (size_t i = 0; hdrs && hdrs[i]; i++)
		free(hdrs[i]);
	free(hdrs);
}

static void hz_on_response(void *arg, const struct http_response *resp)
{
	struct hz_pending *pc = arg;
	struct hz_source *s = pc->s;
	pthread_mutex_lock(&s->lock);
	list_del_init(&pc->link);
	pthread_mutex_unlock(&s->lock);
	char why[200];
	bool malformed;
	enum authz_verdict v = hz_verdict(resp->status, resp->content_type, resp->body, resp->body_len, why, sizeof why,
					  &malformed);
	if (v == AUTHZ_ERROR)
		log_debug("authorization http: request failed: %.160s", resp->error ? resp->error : "?");
	else if (malformed)
		log_warn("authorization http: %s", why);
	else
		log_debug("authorization http: %s in %llu ms", why, (unsigned long long)resp->elapsed_ms);
	authz_call_done(pc->call, v);
	free(pc);
}

static void hz_start(struct authz_source *as, struct authz_call *call)
{
	struct hz_source *s = (struct hz_source *)as;
	const struct hz_cfg *c = s->cfg;
	struct buf url = { 0 }, body = { 0 };
	char **hdrs = NULL;
	const char *why = NULL;
	if (!hz_build_request(c, call, &url, &body, &hdrs, &why)) {
		log_warn("authorization http: cannot build the request: %s", why);
		authz_call_done(call, AUTHZ_ERROR);
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
		.max_response = HZ_MAX_RESPONSE,
	};
	authn_http_ssl_apply(&c->ssl, &req);
	struct loop *l = loop_current();
	if (!l)
		l = s->main_loop;
	struct hz_pending *pc = xcalloc(1, sizeof *pc);
	pc->s = s;
	pc->call = call;
	pthread_mutex_lock(&s->lock);
	list_push_back(&s->pending, &pc->link);
	pthread_mutex_unlock(&s->lock);
	http_start(s->hc, &req, l, hz_on_response, pc);
out:
	hz_free_headers(hdrs);
	buf_free(&url);
	buf_free(&body);
}

/* ---- life cycle ---- */

static struct authz_source *hz_create(const void *cfgp, const struct authz_env *env, char *err, size_t errlen)
{
	struct hz_cfg *c = (struct hz_cfg *)cfgp;
	struct http_client *hc = http_client_new(c->pool_size);
	if (!hc) {
		snprintf(err, errlen, "the HTTP client could not start");
		return NULL;
	}
	struct hz_source *s = xcalloc(1, sizeof *s);
	atomic_fetch_add(&c->refs, 1);
	s->cfg = c;
	s->hc = hc;
	s->main_loop = env ? env->main_loop : NULL;
	pthread_mutex_init(&s->lock, NULL);
	list_init(&s->pending);
	return (struct authz_source *)s;
}

static void hz_destroy(struct authz_source *as)
{
	struct hz_source *s = (struct hz_source *)as;
	if (!s)
		return;
	/* Requests in flight complete with "shutting down" on loops that still run; calls of
	 * loops that stopped are dropped by the client and answered here. */
	http_client_free(s->hc);
	pthread_mutex_lock(&s->lock);
	struct list left;
	list_init(&left);
	list_splice_back(&left, &s->pending);
	pthread_mutex_unlock(&s->lock);
	list_for_each_safe(it, &left) {
		struct hz_pending *pc = container_of(it, struct hz_pending, link);
		list_del_init(it);
		authz_call_done(pc->call, AUTHZ_ERROR);
		free(pc);
	}
	pthread_mutex_destroy(&s->lock);
	hz_cfg_unref(s->cfg);
	free(s);
}

static const struct authz_source_ops hz_ops = {
	.type = "http",
	.async = true,
	.parse = hz_parse,
	.free_config = hz_free_config,
	.create = hz_create,
	.destroy = hz_destroy,
	.start = hz_start,
};

__attribute__((constructor)) static void hz_register(void)
{
	authz_source_register(&hz_ops);
}
