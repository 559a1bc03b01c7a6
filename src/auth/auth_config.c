/* Parsing `authentication = [ ... ]` and the authenticator registry. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"
#include "auth/auth_int.h"
#include "core/alloc.h"

#define MAX_KINDS 32

static const struct authn_ops *kinds[MAX_KINDS];
static size_t nkinds;

void authn_register(const struct authn_ops *ops)
{
	if (nkinds < MAX_KINDS)
		kinds[nkinds++] = ops;
}

static bool same(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

const struct authn_ops *authn_find(const char *mechanism, const char *backend)
{
	for (size_t i = 0; i < nkinds; i++)
		if (strcmp(kinds[i]->mechanism, mechanism) == 0 && same(kinds[i]->backend, backend))
			return kinds[i];
	return NULL;
}

/* "mechanism[:backend]" lists for messages. */
static void known_kinds(char *out, size_t outlen)
{
	size_t o = 0;
	out[0] = '\0';
	for (size_t i = 0; i < nkinds && o < outlen; i++)
		o += (size_t)snprintf(out + o, outlen - o, "%s%s%s%s", i ? ", " : "", kinds[i]->mechanism,
				      kinds[i]->backend ? "+" : "", kinds[i]->backend ? kinds[i]->backend : "");
}

size_t auth_config_count(const struct auth_chain_cfg *c)
{
	return c ? c->n : 0;
}

static bool parse_entry(struct cfg_reader *r, const struct hocon_member *m, struct auth_entry_cfg *e, size_t index)
{
	const struct hocon_node *obj = m->value;
	if (obj->type != HOCON_OBJECT)
		return cfgr_fail(r, m, "entry %zu: expected an authenticator object { mechanism = ..., ... }", index);
	const struct hocon_member *mech = hocon_get_member(obj, "mechanism");
	const struct hocon_member *back = hocon_get_member(obj, "backend");
	const struct hocon_member *en = hocon_get_member(obj, "enable");
	const struct hocon_member *pre = hocon_get_member(obj, "precondition");
	const char *ms = mech ? cfgr_scalar(mech->value) : NULL;
	const char *bs = back ? cfgr_scalar(back->value) : NULL;
	if (!ms)
		return cfgr_fail(r, m, "entry %zu: mechanism is required", index);
	if (pre) {
		size_t old = cfgr_path_push(r, "precondition");
		bool ok = cfgr_unsupported(r, pre);
		cfgr_path_pop(r, old);
		return ok;
	}
	e->ops = authn_find(ms, bs);
	if (!e->ops) {
		char list[512];
		known_kinds(list, sizeof list);
		const struct hocon_member *where = back ? back : mech;
		return cfgr_fail(r, where, "entry %zu: unknown authenticator mechanism = %s%s%s (known: %s)", index, ms,
				 bs ? ", backend = " : "", bs ? bs : "", list);
	}
	e->enable = true;
	if (en && !cfgr_bool(r, en, &e->enable))
		return false;
	e->id = bs ? xasprintf("%s:%s", ms, bs) : xstrdup(ms);
	e->cfg = e->ops->parse(r, m);
	return e->cfg != NULL;
}

struct auth_chain_cfg *auth_config_parse(struct cfg_reader *r, const struct hocon_member *m)
{
	const struct hocon_node *v = m->value;
	struct auth_chain_cfg *c = xcalloc(1, sizeof *c);
	size_t n = v->type == HOCON_ARRAY ? v->n : 1;
	if (v->type != HOCON_ARRAY && v->type != HOCON_OBJECT) {
		free(c);
		cfgr_fail(r, m, "expected an array of authenticators [ { mechanism = ..., ... } ]");
		return NULL;
	}
	c->v = xcalloc(n ? n : 1, sizeof *c->v);
	for (size_t i = 0; i < n; i++) {
		const struct hocon_node *item = v->type == HOCON_ARRAY ? v->items[i] : v;
		struct hocon_member im = { .key = m->key, .file = item->file, .line = item->line,
					   .value = (struct hocon_node *)item };
		if (!parse_entry(r, &im, &c->v[c->n], i + 1)) {
			auth_config_free(c);
			return NULL;
		}
		for (size_t k = 0; k < c->n; k++) {
			if (strcmp(c->v[k].id, c->v[c->n].id) == 0) {
				cfgr_fail(r, &im, "entry %zu: a chain may hold one %s authenticator (entry %zu already is one)",
					  i + 1, c->v[k].id, k + 1);
				c->n++;
				auth_config_free(c);
				return NULL;
			}
		}
		c->n++;
	}
	return c;
}

void auth_config_free(struct auth_chain_cfg *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n; i++) {
		if (c->v[i].ops && c->v[i].cfg)
			c->v[i].ops->free_config(c->v[i].cfg);
		free(c->v[i].id);
	}
	free(c->v);
	free(c);
}
