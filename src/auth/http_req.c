/* The HTTP backends' shared request settings, building and client (see auth/http_req.h). */
#include "auth/http_req.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/alloc.h"
#include "core/log.h"
#include "net/loop.h"

/* ---- configuration ---- */

static void body_free(struct http_req_body_item *v, size_t n)
{
	for (size_t i = 0; v && i < n; i++) {
		tmpl_free(v[i].key);
		tmpl_free(v[i].value);
		free(v[i].literal);
		body_free(v[i].children, v[i].nchildren);
	}
	free(v);
}

void http_req_cfg_ref(struct http_req_cfg *c)
{
	atomic_fetch_add(&c->refs, 1);
}

void http_req_cfg_unref(struct http_req_cfg *c)
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

bool http_req_read_skip(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	return true; /* read by the core */
}

bool http_req_read_url(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	struct http_req_cfg *c = target;
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
	c->url_rest = tmpl_parse(host_end, c->kind->vars);
	return true;
}

bool http_req_read_method(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	static const char *const names[] = { "get", "post", NULL };
	int v = 1;
	if (!cfgr_enum(r, m, names, &v))
		return false;
	((struct http_req_cfg *)target)->post = v == 1;
	return true;
}

bool http_req_read_defer(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	struct http_req_cfg *c = target;
	if (strcmp(m->key, "headers") == 0)
		c->headers_m = m;
	else
		c->body_m = m;
	return true;
}

bool http_req_read_ssl(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	struct http_req_cfg *c = target;
	authn_http_ssl_free(&c->ssl);
	return authn_http_ssl_parse(r, m, &c->ssl);
}

bool http_req_read_pipelining(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	/* EMQX: a positive integer (5.x, default 100) or a boolean (4.x); accepted, not used. */
	if (!cfgr_scalar(m->value))
		return cfgr_fail(r, m, "expected a boolean or a positive integer");
	return true;
}

/* Body members of obj into *v; nested objects only where allowed (a JSON body). */
static bool parse_body(struct cfg_reader *r, const struct hocon_member *m, const char *const *vars, bool nest,
		       struct http_req_body_item **v, size_t *n)
{
	const struct hocon_node *obj = m->value;
	if (obj->type != HOCON_OBJECT)
		return cfgr_fail(r, m, "expected an object { key = \"value\", ... }, got %s", hocon_type_str(obj->type));
	*v = xcalloc(obj->n ? obj->n : 1, sizeof **v);
	*n = 0;
	for (size_t i = 0; i < obj->n; i++) {
		const struct hocon_member *bm = &obj->members[i];
		const struct hocon_node *val = bm->value;
		struct http_req_body_item *it = &(*v)[*n];
		size_t old = cfgr_path_push(r, bm->key);
		bool ok = true;
		if (val->type == HOCON_STRING) {
			it->kind = HTTP_REQ_BODY_TEMPLATE;
			it->value = tmpl_parse(val->str, vars);
		} else if (val->type == HOCON_NUMBER || val->type == HOCON_BOOL || val->type == HOCON_NULL) {
			it->kind = HTTP_REQ_BODY_LITERAL;
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
			it->kind = HTTP_REQ_BODY_OBJECT;
			ok = parse_body(r, bm, vars, true, &it->children, &it->nchildren);
		} else {
			ok = cfgr_fail(r, bm, "expected a string%s, got %s", nest ? ", number, boolean or object" : "",
				       hocon_type_str(val->type));
		}
		cfgr_path_pop(r, old);
		if (ok)
			it->key = tmpl_parse(bm->key, vars);
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

static void add_header(struct http_req_cfg *c, const char *name, const char *value)
{
	c->headers = xrealloc(c->headers, (c->nheaders + 1) * sizeof *c->headers);
	c->headers[c->nheaders].name = xstrdup(name);
	c->headers[c->nheaders].value = xstrdup(value);
	c->nheaders++;
}

struct http_req_cfg *http_req_parse(struct cfg_reader *r, const struct hocon_member *m, const struct cfg_field *fields,
				    const struct http_req_kind *kind)
{
	struct http_req_cfg *c = xcalloc(1, sizeof *c);
	atomic_init(&c->refs, 1);
	c->kind = kind;
	c->post = true;
	c->request_timeout_ms = kind->request_timeout_ms;
	c->connect_timeout_ms = 15000;
	c->pool_size = 8;
	if (!cfgr_load_fields(r, m, m->value, fields, c))
		goto fail;
	if (!c->url) {
		cfgr_fail(r, m, "%s", kind->url_required);
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
	c->header_tmpl = xcalloc(c->nheaders ? c->nheaders : 1, sizeof *c->header_tmpl);
	for (size_t i = 0; i < c->nheaders; i++)
		c->header_tmpl[i] = tmpl_parse(c->headers[i].value, kind->vars);
	if (c->body_m) {
		size_t old = cfgr_path_push(r, "body");
		bool ok = parse_body(r, c->body_m, kind->vars, c->post && !c->form, &c->body, &c->nbody);
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
	http_req_cfg_unref(c);
	return NULL;
}

/* ---- requests ---- */

struct render {
	tmpl_lookup_fn fn;
	void *arg;
};

/* Render t raw into tmp (emptied first). */
static void render_raw(const struct tmpl *t, const struct render *rd, struct buf *out)
{
	out->len = 0;
	tmpl_render(t, rd->fn, rd->arg, TMPL_RAW, out);
}

static bool json_body(struct buf *out, const struct http_req_body_item *v, size_t n, const struct render *rd)
{
	struct buf tmp = { 0 };
	bool ok = true;
	buf_append(out, "{", 1);
	for (size_t i = 0; ok && i < n; i++) {
		if (i)
			buf_append(out, ",", 1);
		render_raw(v[i].key, rd, &tmp);
		buf_append(out, "\"", 1);
		ok = authn_http_json_escape(out, (const char *)tmp.data, tmp.len);
		buf_append(out, "\":", 2);
		if (!ok)
			break;
		switch (v[i].kind) {
		case HTTP_REQ_BODY_TEMPLATE:
			render_raw(v[i].value, rd, &tmp);
			buf_append(out, "\"", 1);
			ok = authn_http_json_escape(out, (const char *)tmp.data, tmp.len);
			buf_append(out, "\"", 1);
			break;
		case HTTP_REQ_BODY_LITERAL:
			buf_append_str(out, v[i].literal);
			break;
		case HTTP_REQ_BODY_OBJECT:
			ok = json_body(out, v[i].children, v[i].nchildren, rd);
			break;
		}
	}
	buf_append(out, "}", 1);
	buf_free(&tmp);
	return ok;
}

/* key=value&... with every rendered part percent-encoded (a GET query or a form body). */
static void form_body(struct buf *out, const struct http_req_body_item *v, size_t n, const struct render *rd)
{
	struct buf tmp = { 0 };
	for (size_t i = 0; i < n; i++) {
		if (i)
			buf_append(out, "&", 1);
		render_raw(v[i].key, rd, &tmp);
		authn_http_url_escape(out, (const char *)tmp.data, tmp.len);
		buf_append(out, "=", 1);
		if (v[i].kind == HTTP_REQ_BODY_TEMPLATE) {
			render_raw(v[i].value, rd, &tmp);
			authn_http_url_escape(out, (const char *)tmp.data, tmp.len);
		} else if (v[i].kind == HTTP_REQ_BODY_LITERAL && strcmp(v[i].literal, "null") != 0) {
			authn_http_url_escape(out, v[i].literal, strlen(v[i].literal));
		}
	}
	buf_free(&tmp);
}

bool http_req_build(const struct http_req_cfg *c, tmpl_lookup_fn fn, void *arg, struct buf *url, struct buf *body,
		    char ***hdrs, const char **why)
{
	const struct render rd = { fn, arg };
	struct buf tmp = { 0 };
	*why = NULL;
	*hdrs = xcalloc(c->nheaders + 1, sizeof **hdrs);
	buf_append_str(url, c->url_base);
	tmpl_render(c->url_rest, fn, arg, TMPL_URL, url);
	if (c->post) {
		if (c->form)
			form_body(body, c->body, c->nbody, &rd);
		else if (!json_body(body, c->body, c->nbody, &rd))
			*why = c->kind->not_utf8;
	} else if (c->nbody) {
		/* The query goes after an existing one and before a fragment. */
		size_t frag = 0;
		while (frag < url->len && url->data[frag] != '#')
			frag++;
		struct buf u2 = { 0 };
		buf_append(&u2, url->data, frag);
		buf_append(&u2, memchr(url->data, '?', frag) ? "&" : "?", 1);
		form_body(&u2, c->body, c->nbody, &rd);
		buf_append(&u2, url->data + frag, url->len - frag);
		buf_free(url);
		*url = u2;
	}
	buf_append(url, "", 1);
	url->len--;
	buf_append(body, "", 1);
	body->len--;
	for (size_t i = 0; i < c->nheaders; i++) {
		render_raw(c->header_tmpl[i], &rd, &tmp);
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

void http_req_free_headers(char **hdrs)
{
	for (size_t i = 0; hdrs && hdrs[i]; i++)
		free(hdrs[i]);
	free(hdrs);
}

/* ---- the client ---- */

struct pending {
	struct list link;
	struct http_req_client *rc;
	void (*done)(void *arg, const struct http_response *resp);
	void *arg;
};

bool http_req_client_init(struct http_req_client *rc, const struct http_req_cfg *c, struct loop *main_loop)
{
	rc->hc = http_client_new(c->pool_size);
	if (!rc->hc)
		return false;
	rc->main_loop = main_loop;
	pthread_mutex_init(&rc->lock, NULL);
	list_init(&rc->pending);
	return true;
}

static void on_response(void *arg, const struct http_response *resp)
{
	struct pending *p = arg;
	struct http_req_client *rc = p->rc;
	pthread_mutex_lock(&rc->lock);
	list_del_init(&p->link);
	pthread_mutex_unlock(&rc->lock);
	p->done(p->arg, resp);
	free(p);
}

void http_req_client_start(struct http_req_client *rc, const struct http_req_cfg *c, const struct buf *url,
			   const struct buf *body, char **hdrs, size_t max_response,
			   void (*done)(void *arg, const struct http_response *resp), void *arg)
{
	struct http_request req = {
		.method = c->post ? "POST" : "GET",
		.url = (const char *)url->data,
		.headers = (const char *const *)hdrs,
		.body = c->post ? (const void *)body->data : NULL,
		.body_len = c->post ? body->len : 0,
		.timeout_ms = c->request_timeout_ms,
		.connect_timeout_ms = c->connect_timeout_ms < c->request_timeout_ms ? c->connect_timeout_ms : 0,
		.max_response = max_response,
	};
	authn_http_ssl_apply(&c->ssl, &req);
	struct loop *l = loop_current();
	if (!l)
		l = rc->main_loop;
	struct pending *p = xcalloc(1, sizeof *p);
	p->rc = rc;
	p->done = done;
	p->arg = arg;
	pthread_mutex_lock(&rc->lock);
	list_push_back(&rc->pending, &p->link);
	pthread_mutex_unlock(&rc->lock);
	http_start(rc->hc, &req, l, on_response, p);
}

void http_req_client_fini(struct http_req_client *rc, void (*abandon)(void *arg))
{
	/* Requests in flight complete with "shutting down" on loops that still run; calls of
	 * loops that stopped are dropped by the client and answered here. */
	http_client_free(rc->hc);
	pthread_mutex_lock(&rc->lock);
	struct list left;
	list_init(&left);
	list_splice_back(&left, &rc->pending);
	pthread_mutex_unlock(&rc->lock);
	list_for_each_safe(it, &left) {
		struct pending *p = container_of(it, struct pending, link);
		list_del_init(it);
		abandon(p->arg);
		free(p);
	}
	pthread_mutex_destroy(&rc->lock);
}
