/* mqtt.client_attrs_init: see attrs_init.h. */
#include "auth/attrs_init.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/variform.h"
#include "core/alloc.h"
#include "core/log.h"
#include "tls/identity.h"

/* ---- variables ---- */

enum {
	VAR_CLIENTID,
	VAR_USERNAME,
	VAR_CN,
	VAR_DN,
	VAR_SAN_DNS,
	VAR_SAN_IP,
	VAR_SAN_EMAIL,
	VAR_SAN_URI,
	VAR_ZONE,
	VAR_LISTENER,
	VAR_PEERSNI,
	VAR_USER_PROP,
};

static const struct {
	const char *name;
	int id;
} var_names[] = {
	{ "clientid", VAR_CLIENTID },
	{ "username", VAR_USERNAME },
	{ "cn", VAR_CN },
	{ "cert_common_name", VAR_CN },
	{ "dn", VAR_DN },
	{ "cert_subject", VAR_DN },
	{ "cert_san.dns", VAR_SAN_DNS },
	{ "cert_san.ip", VAR_SAN_IP },
	{ "cert_san.email", VAR_SAN_EMAIL },
	{ "cert_san.uri", VAR_SAN_URI },
	{ "zone", VAR_ZONE },
	{ "listener", VAR_LISTENER },
	{ "peersni", VAR_PEERSNI },
};

#define USER_PROP_PREFIX "user_property."

static const char var_hint[] = "(known: clientid, username, cn, cert_common_name, dn, cert_subject, cert_san.dns, "
			       "cert_san.ip, cert_san.email, cert_san.uri, zone, listener, peersni, "
			       "user_property.NAME)";

static int resolve(const char *name, void *ud, enum variform_var_kind *kind)
{
	(void)ud;
	*kind = VARIFORM_VAR_STRING;
	for (size_t i = 0; i < sizeof var_names / sizeof var_names[0]; i++) {
		if (strcmp(var_names[i].name, name) == 0) {
			if (var_names[i].id >= VAR_SAN_DNS && var_names[i].id <= VAR_SAN_URI)
				*kind = VARIFORM_VAR_LIST;
			return var_names[i].id;
		}
	}
	size_t pl = strlen(USER_PROP_PREFIX);
	if (strncmp(name, USER_PROP_PREFIX, pl) == 0 && name[pl])
		return VAR_USER_PROP;
	return -1;
}

static void set_str(struct variform_value *out, const char *s, size_t len)
{
	out->kind = VARIFORM_VAR_STRING;
	out->s = s ? s : "";
	out->len = s ? len : 0;
}

static void set_list(struct variform_value *out, char *const *items, size_t n)
{
	out->kind = VARIFORM_VAR_LIST;
	out->items = (const char *const *)items;
	out->lens = NULL;
	out->n = items ? n : 0;
}

static bool lookup(void *ud, int id, const char *name, struct variform_value *out)
{
	const struct attrs_init_input *in = ud;
	const struct identity_sans *sans = in->sans;
	switch (id) {
	case VAR_CLIENTID:
		set_str(out, in->clientid, in->clientid ? strlen(in->clientid) : 0);
		return true;
	case VAR_USERNAME:
		set_str(out, in->username, in->username_len);
		return true;
	case VAR_CN:
		set_str(out, in->cn, in->cn ? strlen(in->cn) : 0);
		return true;
	case VAR_DN:
		set_str(out, in->dn, in->dn ? strlen(in->dn) : 0);
		return true;
	case VAR_SAN_DNS:
		set_list(out, sans ? sans->dns : NULL, sans ? sans->n_dns : 0);
		return true;
	case VAR_SAN_IP:
		set_list(out, sans ? sans->ip : NULL, sans ? sans->n_ip : 0);
		return true;
	case VAR_SAN_EMAIL:
		set_list(out, sans ? sans->email : NULL, sans ? sans->n_email : 0);
		return true;
	case VAR_SAN_URI:
		set_list(out, sans ? sans->uri : NULL, sans ? sans->n_uri : 0);
		return true;
	case VAR_ZONE:
		set_str(out, in->zone ? in->zone : "default", strlen(in->zone ? in->zone : "default"));
		return true;
	case VAR_LISTENER:
		set_str(out, in->listener, in->listener ? strlen(in->listener) : 0);
		return true;
	case VAR_PEERSNI:
		if (!in->peersni)
			return false;
		set_str(out, in->peersni, strlen(in->peersni));
		return true;
	case VAR_USER_PROP: {
		/* EMQX builds a map from the list: the last property with the name wins */
		const char *pn = name + strlen(USER_PROP_PREFIX);
		size_t pnl = strlen(pn), off = 0;
		struct mqtt_str k, v;
		bool found = false;
		while (in->user_props.p && mqtt_user_props_next(in->user_props, &off, &k, &v)) {
			if (k.len == pnl && memcmp(k.p, pn, pnl) == 0) {
				set_str(out, (const char *)v.p, v.len);
				found = true;
			}
		}
		return found;
	}
	default:
		return false;
	}
}

/* ---- config ---- */

static bool name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > ATTRS_INIT_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
			return false;
	}
	return true;
}

static bool parse_entry(struct cfg_reader *r, const struct hocon_member *im, struct attrs_init_entry *e)
{
	const struct hocon_node *obj = im->value;
	if (obj->type != HOCON_OBJECT)
		return cfgr_fail(r, im, "expected an object { expression = \"...\", set_as_attr = NAME }");
	const struct hocon_member *ex = NULL, *as = NULL;
	for (size_t i = 0; i < obj->n; i++) {
		const struct hocon_member *x = &obj->members[i];
		if (strcmp(x->key, "expression") == 0) {
			ex = x;
		} else if (strcmp(x->key, "set_as_attr") == 0) {
			as = x;
		} else {
			size_t old = cfgr_path_push(r, x->key);
			bool ok = cfgr_unknown(r, x);
			cfgr_path_pop(r, old);
			return ok;
		}
	}
	if (!ex)
		return cfgr_fail(r, im, "expression is required");
	if (!as)
		return cfgr_fail(r, im, "set_as_attr is required");

	size_t old = cfgr_path_push(r, "set_as_attr");
	const char *name = cfgr_scalar(as->value);
	if (!name || !name_ok(name)) {
		bool ok = cfgr_fail(r, as, "expected 1 to %d letters, digits, '_' or '-'", ATTRS_INIT_NAME_MAX);
		cfgr_path_pop(r, old);
		return ok;
	}
	cfgr_path_pop(r, old);

	old = cfgr_path_push(r, "expression");
	const char *text = cfgr_scalar(ex->value);
	if (!text) {
		bool ok = cfgr_fail(r, ex, "expected a string");
		cfgr_path_pop(r, old);
		return ok;
	}
	char err[400];
	e->expr = variform_compile(text, strlen(text), resolve, NULL, var_hint, err, sizeof err);
	if (!e->expr) {
		bool ok = cfgr_fail(r, ex, "%s", err);
		cfgr_path_pop(r, old);
		return ok;
	}
	cfgr_path_pop(r, old);
	e->name = xstrdup(name);
	return true;
}

struct attrs_init_cfg *attrs_init_parse(struct cfg_reader *r, const struct hocon_member *m)
{
	const struct hocon_node *v = m->value;
	if (v->type != HOCON_ARRAY) {
		cfgr_fail(r, m, "expected an array [ { expression = \"...\", set_as_attr = NAME }, ... ]");
		return NULL;
	}
	struct attrs_init_cfg *c = xcalloc(1, sizeof *c);
	c->v = xcalloc(v->n ? v->n : 1, sizeof *c->v);
	for (size_t i = 0; i < v->n; i++) {
		const struct hocon_node *item = v->items[i];
		struct hocon_member im = { .key = m->key, .file = item->file, .line = item->line,
					   .value = (struct hocon_node *)item };
		size_t old = strlen(r->path);
		snprintf(r->path + old, sizeof r->path - old, "[%zu]", i + 1);
		bool ok = parse_entry(r, &im, &c->v[c->n]);
		cfgr_path_pop(r, old);
		if (!ok) {
			variform_free(c->v[c->n].expr);
			attrs_init_free(c);
			return NULL;
		}
		c->n++;
	}
	return c;
}

void attrs_init_free(struct attrs_init_cfg *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n; i++) {
		variform_free(c->v[i].expr);
		free(c->v[i].name);
	}
	free(c->v);
	free(c);
}

/* ---- evaluation ---- */

/* Valid UTF-8 without control characters (EMQX's is_mqtt_safe_utf8). */
static bool safe_utf8(const unsigned char *s, size_t len)
{
	for (size_t i = 0; i < len;) {
		unsigned char c = s[i];
		if (c < 0x80) {
			if (c < 0x20 || c == 0x7F)
				return false;
			i++;
			continue;
		}
		size_t n;
		uint32_t v, min;
		if (c >= 0xC2 && c <= 0xDF)
			n = 2, v = c & 0x1F, min = 0x80;
		else if (c >= 0xE0 && c <= 0xEF)
			n = 3, v = c & 0x0F, min = 0x800;
		else if (c >= 0xF0 && c <= 0xF4)
			n = 4, v = c & 0x07, min = 0x10000;
		else
			return false;
		if (len - i < n)
			return false;
		for (size_t k = 1; k < n; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				return false;
			v = (v << 6) | (s[i + k] & 0x3F);
		}
		if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF) || (v >= 0x80 && v <= 0x9F))
			return false;
		i += n;
	}
	return true;
}

/* Printable copy of client-supplied text for a log line (at most 100 bytes). */
static void printable(char *dst, size_t cap, const char *s)
{
	size_t o = 0;
	for (size_t i = 0; s && s[i] && o + 1 < cap && i < 100; i++) {
		unsigned char c = (unsigned char)s[i];
		dst[o++] = (c < 0x20 || c == 0x7F) ? '?' : (char)c;
	}
	dst[o] = '\0';
}

void attrs_init_eval(const struct attrs_init_cfg *c, const struct attrs_init_input *in, struct client_attrs *out)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n; i++) {
		const struct attrs_init_entry *e = &c->v[i];
		char err[300];
		size_t len = 0;
		char *v = variform_eval(e->expr, lookup, (void *)in, &len, err, sizeof err);
		const char *why = NULL;
		if (!v)
			why = err;
		else if (len == 0)
			why = "the result is empty";
		else if (!safe_utf8((const unsigned char *)v, len))
			why = "the result is not valid UTF-8 or holds control characters";
		if (!why)
			client_attrs_set(out, e->name, v);
		if (log_enabled(LOG_DEBUG)) {
			char cid[101], val[101];
			printable(cid, sizeof cid, in->clientid);
			if (why) {
				log_debug("client %s: client_attrs_init[%zu] (%s) sets nothing: %s", cid, i + 1, e->name, why);
			} else {
				printable(val, sizeof val, v);
				log_debug("client %s: client_attrs.%s = %s%s", cid, e->name, val, len > 100 ? "..." : "");
			}
		}
		free(v);
	}
}
