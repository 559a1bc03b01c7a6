/* Shared pieces of the HTTP-speaking authenticators (see auth/authn_http_util.h). */
#include "auth/authn_http_util.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "auth/jwt.h"
#include "core/alloc.h"
#include "core/log.h"
#include "net/http.h"

/* ---- ssl { ... } ---- */

static bool custom_verify(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	static const char *const names[] = { "verify_none", "verify_peer", NULL };
	int v = 0;
	if (!cfgr_enum(r, m, names, &v))
		return false;
	((struct authn_http_ssl *)target)->verify_peer = v == 1;
	return true;
}

static bool custom_sni(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	struct authn_http_ssl *s = target;
	if (!cfgr_string(r, m, &s->sni))
		return false;
	if (strcmp(s->sni, "disable") == 0 || !s->sni[0]) {
		free(s->sni);
		s->sni = NULL;
	}
	return true;
}

#define SSLF(f) offsetof(struct authn_http_ssl, f)
static const struct cfg_field ssl_fields[] = {
	{ "enable", CFG_F_BOOL, SSLF(enable), 0, 0, NULL, NULL },
	{ "verify", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_verify },
	{ "cacertfile", CFG_F_STRING, SSLF(cacertfile), 0, 0, NULL, NULL },
	{ "certfile", CFG_F_STRING, SSLF(certfile), 0, 0, NULL, NULL },
	{ "keyfile", CFG_F_STRING, SSLF(keyfile), 0, 0, NULL, NULL },
	{ "server_name_indication", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_sni },
	{ "password", CFG_F_UNSUPPORTED, 0, 0, 0, NULL, NULL },
	/* TLS tuning the HTTP client does not expose (libcurl picks sane defaults). */
	{ "versions", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "ciphers", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "depth", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "reuse_sessions", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "secure_renegotiate", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "partial_chain", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "verify_peer_ext_key_usage", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "cacerts", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "hibernate_after", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "log_level", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "middlebox_comp_mode", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

/* A file named by key must be readable; inline PEM (EMQX accepts it) is not supported yet. */
static bool check_file(struct cfg_reader *r, const struct hocon_member *ssl, const char *key, const char *path)
{
	if (!path)
		return true;
	const struct hocon_member *m = hocon_get_member(ssl->value, key);
	size_t old = cfgr_path_push(r, key);
	bool ok = true;
	if (strstr(path, "-----BEGIN"))
		ok = cfgr_unsupported(r, m ? m : ssl);
	else if (access(path, R_OK) != 0)
		ok = cfgr_fail(r, m ? m : ssl, "cannot read %s", path);
	cfgr_path_pop(r, old);
	return ok;
}

bool authn_http_ssl_parse(struct cfg_reader *r, const struct hocon_member *m, struct authn_http_ssl *s)
{
	memset(s, 0, sizeof *s);
	if (!cfgr_load_fields(r, m, m->value, ssl_fields, s))
		return false;
	if (!check_file(r, m, "cacertfile", s->cacertfile) || !check_file(r, m, "certfile", s->certfile) ||
	    !check_file(r, m, "keyfile", s->keyfile))
		return false;
	if (s->keyfile && !s->certfile)
		return cfgr_fail(r, m, "keyfile needs a certfile");
	if (!s->enable && (s->verify_peer || s->cacertfile || s->certfile))
		log_warn("%s:%d: %s: ssl.enable is false: verify, cacertfile and certfile have no effect", cfgr_file(m),
			 m->line, r->path);
	return true;
}

void authn_http_ssl_free(struct authn_http_ssl *s)
{
	free(s->cacertfile);
	free(s->certfile);
	free(s->keyfile);
	free(s->sni);
	memset(s, 0, sizeof *s);
}

void authn_http_ssl_apply(const struct authn_http_ssl *s, struct http_request *req)
{
	req->tls_verify = s->enable && s->verify_peer;
	req->tls_ca_file = s->enable ? s->cacertfile : NULL;
	req->tls_cert_file = s->enable ? s->certfile : NULL;
	req->tls_key_file = s->enable ? s->keyfile : NULL;
	req->tls_sni = s->enable ? s->sni : NULL;
}

/* ---- headers { ... } ---- */

int authn_http_header_find(const struct authn_http_header *v, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i].name, name) == 0)
			return (int)i;
	return -1;
}

static bool header_name_ok(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f || strchr("()<>@,;:\\\"/[]?={}", *s))
			return false;
	return true;
}

bool authn_http_headers_parse(struct cfg_reader *r, const struct hocon_member *m, struct authn_http_header **v,
			      size_t *n)
{
	const struct hocon_node *obj = m->value;
	if (obj->type != HOCON_OBJECT)
		return cfgr_fail(r, m, "expected an object { name = \"value\", ... }, got %s", hocon_type_str(obj->type));
	for (size_t i = 0; i < obj->n; i++) {
		const struct hocon_member *h = &obj->members[i];
		size_t old = cfgr_path_push(r, h->key);
		const char *val = cfgr_scalar(h->value);
		bool ok = true;
		if (!header_name_ok(h->key))
			ok = cfgr_fail(r, h, "not a valid header name");
		else if (!val)
			ok = cfgr_fail(r, h, "expected a string, got %s", hocon_type_str(h->value->type));
		else if (strpbrk(val, "\r\n"))
			ok = cfgr_fail(r, h, "a header value cannot contain CR or LF");
		cfgr_path_pop(r, old);
		if (!ok)
			return false;
		char *name = xstrdup(h->key);
		for (char *p = name; *p; p++)
			*p = (char)tolower((unsigned char)*p);
		int at = authn_http_header_find(*v, *n, name);
		if (at >= 0) {
			free(name);
			free((*v)[at].value);
			(*v)[at].value = xstrdup(val);
			continue;
		}
		*v = xrealloc(*v, (*n + 1) * sizeof **v);
		(*v)[*n].name = name;
		(*v)[*n].value = xstrdup(val);
		(*n)++;
	}
	return true;
}

void authn_http_headers_free(struct authn_http_header *v, size_t n)
{
	for (size_t i = 0; v && i < n; i++) {
		free(v[i].name);
		free(v[i].value);
	}
	free(v);
}

/* ---- escaping ---- */

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 when invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	size_t len;
	uint32_t cp;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		cp = c & 0x07;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

bool authn_http_json_escape(struct buf *out, const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	for (size_t i = 0; i < n;) {
		unsigned char c = p[i];
		if (c == '"' || c == '\\') {
			char e[2] = { '\\', (char)c };
			buf_append(out, e, 2);
			i++;
		} else if (c < 0x20 || c == 0x7f) {
			buf_printf(out, "\\u%04x", c);
			i++;
		} else {
			size_t l = utf8_len(p + i, n - i);
			if (!l)
				return false;
			buf_append(out, p + i, l);
			i += l;
		}
	}
	return true;
}

void authn_http_url_escape(struct buf *out, const char *s, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
			buf_append(out, &c, 1);
		} else {
			char e[3] = { '%', hex[c >> 4], hex[c & 15] };
			buf_append(out, e, 3);
		}
	}
}

char *authn_http_printable(char *out, size_t outlen, const char *s)
{
	size_t k = 0;
	for (; s && *s && k + 1 < outlen; s++)
		out[k++] = (*s >= 0x20 && *s < 0x7f) ? *s : '?';
	if (outlen)
		out[k] = '\0';
	return out;
}

/* ---- answers ---- */

int authn_http_hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decoding of one form component ('+' is a space). NULL when malformed. */
static char *form_decode(const char *s, size_t n, size_t *outlen)
{
	char *o = xmalloc(n + 1);
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '+') {
			o[k++] = ' ';
		} else if (s[i] == '%') {
			if (i + 2 >= n) {
				free(o);
				return NULL;
			}
			int h = authn_http_hexval((unsigned char)s[i + 1]), l = authn_http_hexval((unsigned char)s[i + 2]);
			if (h < 0 || l < 0) {
				free(o);
				return NULL;
			}
			o[k++] = (char)(h << 4 | l);
			i += 2;
		} else {
			o[k++] = s[i];
		}
	}
	o[k] = '\0';
	*outlen = k;
	return o;
}

/* A x-www-form-urlencoded body as a JSON object of strings (values that are not UTF-8 are
 * dropped). NULL when malformed. */
static json_t *form_to_json(const char *body, size_t len)
{
	json_t *o = json_object();
	size_t i = 0;
	while (i < len) {
		size_t end = i;
		while (end < len && body[end] != '&')
			end++;
		if (end > i) {
			const char *eq = memchr(body + i, '=', end - i);
			size_t klen = eq ? (size_t)(eq - (body + i)) : end - i;
			size_t dk = 0, dv = 0;
			char *k = form_decode(body + i, klen, &dk);
			char *v = eq ? form_decode(eq + 1, (size_t)(body + end - eq - 1), &dv) : xstrdup("");
			if (!k || !v || memchr(k, 0, dk)) {
				free(k);
				free(v);
				json_decref(o);
				return NULL;
			}
			json_t *js = json_stringn(v, dv);
			if (js)
				json_object_set_new(o, k, js);
			free(k);
			free(v);
		}
		i = end + 1;
	}
	return o;
}

/* content type without parameters, compared case-insensitively. */
static bool ctype_is(const char *ct, const char *want)
{
	if (!ct)
		return false;
	while (*ct == ' ')
		ct++;
	size_t n = strlen(want);
	return strncasecmp(ct, want, n) == 0 && (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

static void fail(struct authn_result *res, enum authn_verdict v, const char *fmt, const char *arg)
{
	res->verdict = v;
	if (v == AUTHN_DENY)
		res->rc = 0x86;
	snprintf(res->reason, sizeof res->reason, fmt, arg);
}

/* A value that may be JSON text inside a form field: parsed, or a new reference. */
static json_t *maybe_json(const json_t *v, bool form)
{
	if (form && json_is_string(v))
		return json_loads(json_string_value(v), JSON_REJECT_DUPLICATES, NULL);
	return json_incref((json_t *)v);
}

void authn_http_parse_response(int status, const char *content_type, const uint8_t *body, size_t len, int64_t now,
			       struct authn_result *res)
{
	memset(res, 0, sizeof *res);
	json_t *doc = NULL;
	if (status == 204) {
		res->verdict = AUTHN_ALLOW;
		snprintf(res->reason, sizeof res->reason, "HTTP 204");
		return;
	}
	if (status == 0) {
		fail(res, AUTHN_ERROR, "HTTP request failed", "");
		return;
	}
	if (status != 200) {
		char st[16];
		snprintf(st, sizeof st, "%d", status);
		fail(res, AUTHN_ERROR, "HTTP status %s", st);
		return;
	}
	bool form = false;
	if (ctype_is(content_type, "application/json")) {
		doc = json_loadb(body ? (const char *)body : "", len, JSON_REJECT_DUPLICATES, NULL);
	} else if (ctype_is(content_type, "application/x-www-form-urlencoded")) {
		form = true;
		doc = form_to_json(body ? (const char *)body : "", len);
	} else {
		char ct[64];
		fail(res, AUTHN_ERROR, "HTTP 200 with unsupported content type %s",
		     content_type ? authn_http_printable(ct, sizeof ct, content_type) : "(none)");
		return;
	}
	if (!json_is_object(doc)) {
		fail(res, AUTHN_ERROR, "HTTP 200 with a body that is not a %s object", form ? "form" : "JSON");
		goto out;
	}
	const json_t *result = json_object_get(doc, "result");
	const char *rs = result ? json_string_value(result) : "ignore";
	if (!rs) {
		fail(res, AUTHN_ERROR, "HTTP answer: result is not a string", "");
		goto out;
	}
	if (strcmp(rs, "ignore") == 0) {
		fail(res, AUTHN_IGNORE, "HTTP answer: ignore", "");
		goto out;
	}
	if (strcmp(rs, "deny") == 0) {
		fail(res, AUTHN_DENY, "HTTP answer: deny", "");
		goto out;
	}
	if (strcmp(rs, "allow") != 0) {
		char r40[41];
		fail(res, AUTHN_ERROR, "HTTP answer: unknown result \"%s\"", authn_http_printable(r40, sizeof r40, rs));
		goto out;
	}
	const json_t *acl = json_object_get(doc, "acl");
	if (acl) {
		json_t *a = maybe_json(acl, form);
		if (!jwt_acl_valid(a)) {
			json_decref(a);
			fail(res, AUTHN_DENY, "HTTP answer: invalid acl", "");
			goto out;
		}
		char *s = json_dumps(a, JSON_COMPACT);
		json_decref(a);
		res->acl = s ? xstrdup(s) : NULL;
		free(s);
	}
	const json_t *exp = json_object_get(doc, "expire_at");
	if (exp) {
		double d;
		if (!jwt_claim_number(exp, &d) || !(d > (double)now)) {
			authn_http_result_clear(res);
			fail(res, AUTHN_DENY, "HTTP answer: expire_at is not a time in the future", "");
			goto out;
		}
		res->expire_at = d >= 9.2e18 ? INT64_MAX : (int64_t)d;
		if (res->expire_at <= now)
			res->expire_at = now + 1;
	}
	res->verdict = AUTHN_ALLOW;
	res->is_superuser = jwt_json_truthy(json_object_get(doc, "is_superuser"));
	const json_t *attrs = json_object_get(doc, "client_attrs");
	if (attrs) {
		json_t *a = maybe_json(attrs, form);
		size_t dropped = 0;
		res->client_attrs = jwt_client_attrs(a, &dropped);
		if (dropped || !json_is_object(a))
			log_warn("HTTP authentication answer: client_attrs %s",
				 json_is_object(a) ? "members that are not strings dropped" : "is not an object; ignored");
		json_decref(a);
	}
	const json_t *cid = json_object_get(doc, "clientid_override");
	if (json_is_string(cid) && json_string_length(cid) && !memchr(json_string_value(cid), 0, json_string_length(cid)))
		res->clientid_override = xstrdup(json_string_value(cid));
	snprintf(res->reason, sizeof res->reason, "HTTP answer: allow%s", res->is_superuser ? " (superuser)" : "");
out:
	json_decref(doc);
}

void authn_http_result_clear(struct authn_result *res)
{
	free(res->acl);
	free(res->client_attrs);
	free(res->clientid_override);
	free(res->auth_data);
	res->acl = res->client_attrs = res->clientid_override = NULL;
	res->auth_data = NULL;
	res->auth_data_len = 0;
}
