/* Authorization core: the `authorization` config, the source registry, the per-client
 * subject with its answer cache, and the evaluation order (see authz.h).
 *
 * An asynchronous source gets an authz_call holding a reference on the subject (whose
 * strings are immutable copies, safe to read from the source's threads). Its answer is
 * carried back to the subject's loop (loop_post, or loop_defer when already there) and
 * evaluation goes on there with the next source. A call whose subject was cancelled meanwhile
 * is dropped on arrival.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "auth/client_attrs.h"
#include "authz/acl.h"
#include "authz/authz.h"
#include "authz/source.h"
#include "broker/topic.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/hash.h"
#include "core/hmap.h"
#include "core/list.h"
#include "core/log.h"
#include "net/loop.h"

#define MAX_KINDS 16

/* ---- registry ---- */

static const struct authz_source_ops *kinds[MAX_KINDS];
static size_t nkinds;

void authz_source_register(const struct authz_source_ops *ops)
{
	if (nkinds < MAX_KINDS)
		kinds[nkinds++] = ops;
}

const struct authz_source_ops *authz_source_find(const char *type)
{
	for (size_t i = 0; i < nkinds; i++)
		if (strcmp(kinds[i]->type, type) == 0)
			return kinds[i];
	return NULL;
}

const char *authz_verdict_str(enum authz_verdict v)
{
	switch (v) {
	case AUTHZ_NOMATCH: return "nomatch";
	case AUTHZ_ALLOW: return "allow";
	case AUTHZ_DENY: return "deny";
	case AUTHZ_ERROR: return "error";
	case AUTHZ_PENDING: return "pending";
	}
	return "?";
}

const char *authz_action_str(enum authz_action_type t)
{
	return t == AUTHZ_PUBLISH ? "publish" : "subscribe";
}

/* ---- configuration ---- */

struct src_cfg {
	const struct authz_source_ops *ops;
	void *cfg;
	bool enable;
	char *id;     /* "file", "http", ... (one of each type) */
};

struct authz_cfg {
	bool no_match_allow;
	bool deny_disconnect;
	bool ignore_backend_failures;
	bool cache_enable;
	uint32_t cache_max;
	uint64_t cache_ttl_ms;
	char **cache_excludes;
	size_t n_excludes;
	struct src_cfg *src;
	size_t nsrc;
};

struct authz_cfg *authz_config_default(void)
{
	struct authz_cfg *c = xcalloc(1, sizeof *c);
	c->no_match_allow = true;
	c->ignore_backend_failures = true;
	c->cache_enable = true;
	c->cache_max = 32;
	c->cache_ttl_ms = 60000;
	return c;
}

void authz_config_free(struct authz_cfg *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->nsrc; i++) {
		if (c->src[i].ops && c->src[i].cfg)
			c->src[i].ops->free_config(c->src[i].cfg);
		free(c->src[i].id);
	}
	free(c->src);
	cfgr_free_list(c->cache_excludes);
	free(c);
}

bool authz_config_disconnect_on_deny(const struct authz_cfg *c)
{
	return c->deny_disconnect;
}

static void known_types(char *out, size_t outlen)
{
	size_t o = 0;
	out[0] = '\0';
	for (size_t i = 0; i < nkinds && o < outlen; i++)
		o += (size_t)snprintf(out + o, outlen - o, "%s%s", i ? ", " : "", kinds[i]->type);
}

static bool parse_source(struct cfg_reader *r, const struct hocon_member *m, struct src_cfg *s, size_t index)
{
	const struct hocon_node *obj = m->value;
	if (obj->type != HOCON_OBJECT)
		return cfgr_fail(r, m, "entry %zu: expected a source object { type = ..., ... }", index);
	const struct hocon_member *ty = hocon_get_member(obj, "type");
	const struct hocon_member *en = hocon_get_member(obj, "enable");
	const struct hocon_member *pre = hocon_get_member(obj, "precondition");
	const char *ts = ty ? cfgr_scalar(ty->value) : NULL;
	if (!ts)
		return cfgr_fail(r, m, "entry %zu: type is required", index);
	if (pre) {
		size_t old = cfgr_path_push(r, "precondition");
		bool ok = cfgr_unsupported(r, pre);
		cfgr_path_pop(r, old);
		return ok;
	}
	s->ops = authz_source_find(ts);
	if (!s->ops) {
		char list[256];
		known_types(list, sizeof list);
		return cfgr_fail(r, ty, "entry %zu: unknown authorization source type = %s (known: %s)", index, ts, list);
	}
	s->enable = true;
	if (en && !cfgr_bool(r, en, &s->enable))
		return false;
	s->id = xstrdup(ts);
	s->cfg = s->ops->parse(r, m);
	return s->cfg != NULL;
}

static bool read_sources(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	struct authz_cfg *c = target;
	const struct hocon_node *v = m->value;
	if (v->type != HOCON_ARRAY)
		return cfgr_fail(r, m, "expected an array of sources [ { type = ..., ... } ]");
	for (size_t i = 0; i < c->nsrc; i++) {
		if (c->src[i].cfg)
			c->src[i].ops->free_config(c->src[i].cfg);
		free(c->src[i].id);
	}
	free(c->src);
	c->src = xcalloc(v->n ? v->n : 1, sizeof *c->src);
	c->nsrc = 0;
	for (size_t i = 0; i < v->n; i++) {
		const struct hocon_node *item = v->items[i];
		struct hocon_member im = { .key = m->key, .file = item->file, .line = item->line,
					   .value = (struct hocon_node *)item };
		struct src_cfg *s = &c->src[c->nsrc];
		if (!parse_source(r, &im, s, i + 1)) {
			if (s->cfg)
				s->ops->free_config(s->cfg);
			free(s->id);
			memset(s, 0, sizeof *s);
			return false;
		}
		c->nsrc++;
		for (size_t k = 0; k + 1 < c->nsrc; k++)
			if (strcmp(c->src[k].id, s->id) == 0)
				return cfgr_fail(r, &im, "entry %zu: only one source of type %s is allowed (entry %zu already is one)",
						 i + 1, s->id, k + 1);
	}
	return true;
}

static const char *const no_match_names[] = { "deny", "allow", NULL };
static const char *const deny_action_names[] = { "ignore", "disconnect", NULL };

static bool read_no_match(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	int v;
	if (!cfgr_enum(r, m, no_match_names, &v))
		return false;
	((struct authz_cfg *)target)->no_match_allow = v == 1;
	return true;
}

static bool read_deny_action(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	int v;
	if (!cfgr_enum(r, m, deny_action_names, &v))
		return false;
	((struct authz_cfg *)target)->deny_disconnect = v == 1;
	return true;
}

static bool read_excludes(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	struct authz_cfg *c = target;
	size_t n;
	char **v = cfgr_list(r, m, &n);
	if (!v)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!topic_filter_valid(v[i], strlen(v[i]))) {
			cfgr_fail(r, m, "'%s' is not a valid topic filter", v[i]);
			cfgr_free_list(v);
			return false;
		}
	}
	cfgr_free_list(c->cache_excludes);
	c->cache_excludes = v;
	c->n_excludes = n;
	return true;
}

static bool read_false_only(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	(void)target;
	bool b;
	if (!cfgr_bool(r, m, &b))
		return false;
	return b ? cfgr_unsupported(r, m) : true;
}

#define AC(f) offsetof(struct authz_cfg, f)
static const struct cfg_field cache_fields[] = {
	{ "enable", CFG_F_BOOL, AC(cache_enable), 0, 0, NULL, NULL },
	{ "max_size", CFG_F_U32, AC(cache_max), 1, 1048576, NULL, NULL },
	{ "ttl", CFG_F_DURATION_MS, AC(cache_ttl_ms), 1, INT64_MAX, NULL, NULL },
	{ "excludes", CFG_F_CUSTOM, 0, 0, 0, NULL, read_excludes },
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

static bool read_cache(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	if (m->value->type != HOCON_OBJECT)
		return cfgr_fail(r, m, "expected an object { enable, max_size, ttl }");
	return cfgr_load_fields(r, m, m->value, cache_fields, target);
}

static const struct cfg_field authz_fields[] = {
	{ "no_match", CFG_F_CUSTOM, 0, 0, 0, NULL, read_no_match },
	{ "deny_action", CFG_F_CUSTOM, 0, 0, 0, NULL, read_deny_action },
	{ "cache", CFG_F_CUSTOM, 0, 0, 0, NULL, read_cache },
	{ "sources", CFG_F_CUSTOM, 0, 0, 0, NULL, read_sources },
	{ "ignore_backend_failures", CFG_F_BOOL, AC(ignore_backend_failures), 0, 0, NULL, NULL },
	{ "include_mountpoint", CFG_F_CUSTOM, 0, 0, 0, NULL, read_false_only },
	{ "node_cache", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

struct authz_cfg *authz_config_parse(struct cfg_reader *r, const struct hocon_member *m)
{
	if (m->value->type != HOCON_OBJECT) {
		cfgr_fail(r, m, "expected an object { no_match, deny_action, cache, sources }");
		return NULL;
	}
	struct authz_cfg *c = authz_config_default();
	if (!cfgr_load_fields(r, m, m->value, authz_fields, c)) {
		authz_config_free(c);
		return NULL;
	}
	return c;
}

/* ---- runtime ---- */

struct src {
	const struct authz_source_ops *ops;
	struct authz_source *inst;
	const char *id;
};

struct authz {
	const struct authz_cfg *cfg;
	struct src *src;     /* enabled sources, in order */
	size_t nsrc;
	_Atomic uint64_t generation;
	bool stopped;        /* authz_stop: sources destroyed, late answers deny */
};

struct authz *authz_new(const struct authz_cfg *cfg, const struct authz_env *env, char *err, size_t errlen)
{
	struct authz *z = xcalloc(1, sizeof *z);
	z->cfg = cfg;
	atomic_init(&z->generation, 1);
	z->src = xcalloc(cfg->nsrc ? cfg->nsrc : 1, sizeof *z->src);
	for (size_t i = 0; i < cfg->nsrc; i++) {
		const struct src_cfg *sc = &cfg->src[i];
		if (!sc->enable)
			continue;
		char e[400] = "";
		struct authz_source *inst = sc->ops->create(sc->cfg, env, e, sizeof e);
		if (!inst) {
			snprintf(err, errlen, "authorization source %s: %s", sc->id, e);
			authz_free(z);
			return NULL;
		}
		z->src[z->nsrc].ops = sc->ops;
		z->src[z->nsrc].inst = inst;
		z->src[z->nsrc].id = sc->id;
		z->nsrc++;
	}
	return z;
}

void authz_stop(struct authz *z)
{
	if (!z || z->stopped)
		return;
	z->stopped = true;
	for (size_t i = 0; i < z->nsrc; i++)
		z->src[i].ops->destroy(z->src[i].inst);
}

void authz_free(struct authz *z)
{
	if (!z)
		return;
	authz_stop(z);
	free(z->src);
	free(z);
}

bool authz_trivial(const struct authz *z)
{
	return z->nsrc == 0 && z->cfg->no_match_allow;
}

bool authz_disconnect_on_deny(const struct authz *z)
{
	return z->cfg->deny_disconnect;
}

void authz_invalidate(struct authz *z)
{
	atomic_fetch_add_explicit(&z->generation, 1, memory_order_release);
}

bool authz_ctl(struct authz *z, int argc, char **argv, struct buf *out)
{
	for (size_t i = 0; i < z->nsrc; i++) {
		if (!z->src[i].ops->ctl)
			continue;
		bool changed = false;
		bool ok = z->src[i].ops->ctl(z->src[i].inst, argc, argv, out, &changed);
		if (changed)
			authz_invalidate(z);
		return ok;
	}
	buf_printf(out, "no authorization source manages rules (add { type = built_in_database } to authorization.sources)\n");
	return false;
}

bool authz_reload(struct authz *z, struct buf *report)
{
	bool ok = true, any = false;
	for (size_t i = 0; i < z->nsrc; i++) {
		if (!z->src[i].ops->reload)
			continue;
		bool changed = false;
		char err[512] = "";
		if (z->src[i].ops->reload(z->src[i].inst, &changed, err, sizeof err)) {
			if (changed) {
				log_info("authorization source %s: rules reloaded", z->src[i].id);
				buf_printf(report, "authorization source %s: rules reloaded\n", z->src[i].id);
			}
		} else {
			ok = false;
			log_error("authorization source %s: reload failed, keeping the previous rules: %s", z->src[i].id, err);
			buf_printf(report, "authorization source %s: reload failed, keeping the previous rules: %s\n",
				   z->src[i].id, err);
		}
		any = any || changed;
	}
	if (any)
		authz_invalidate(z);
	return ok;
}

/* ---- subjects and their cache ---- */

struct centry {
	struct hmap_node hn;
	struct list fifo;
	uint64_t hash;
	uint64_t gen;
	uint64_t expires_ms;
	uint8_t type, qos;
	bool retain;
	uint8_t verdict;
	uint16_t len;
	char topic[];
};

struct authz_subject {
	struct authz *z;
	int refs;
	struct authz_client cl;     /* strings below are owned copies */
	struct client_attrs attrs;
	struct acl *authn_acl;
	struct hmap cache;
	struct list fifo;           /* oldest first */
	size_t ncache;
};

struct authz_call {
	struct authz_subject *s;    /* one reference */
	struct loop *loop;
	struct loop_task task;
	struct authz_wait *wait;    /* NULL once cancelled */
	authz_done_fn done;
	void *arg;
	struct authz_action act;    /* topic points into topic[] */
	size_t next;                /* index of the source being asked */
	enum authz_verdict v;
	char topic[];
};

static char *dup_or_null(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

struct authz_subject *authz_subject_new(struct authz *z, const struct authz_client *cl, const char *authn_acl)
{
	struct authz_subject *s = xcalloc(1, sizeof *s);
	s->z = z;
	s->refs = 1;
	s->cl = *cl;
	if (cl->username) {
		char *u = xmalloc(cl->username_len + 1);
		memcpy(u, cl->username, cl->username_len);
		u[cl->username_len] = '\0';
		s->cl.username = u;
	}
	s->cl.clientid = dup_or_null(cl->clientid);
	s->cl.peerhost = dup_or_null(cl->peerhost);
	s->cl.cert_common_name = dup_or_null(cl->cert_common_name);
	s->cl.cert_subject = dup_or_null(cl->cert_subject);
	s->cl.listener = dup_or_null(cl->listener);
	s->cl.zone = dup_or_null(cl->zone ? cl->zone : "default");
	s->cl.mountpoint = dup_or_null(cl->mountpoint);
	client_attrs_copy(&s->attrs, cl->attrs);
	s->cl.attrs = &s->attrs;
	if (authn_acl) {
		char err[256] = "";
		s->authn_acl = acl_parse_json(authn_acl, err, sizeof err);
		if (!s->authn_acl)
			log_warn("client %s: the ACL granted by authentication is not usable (%s); it grants nothing",
				 s->cl.clientid ? s->cl.clientid : "?", err);
	}
	hmap_init(&s->cache);
	list_init(&s->fifo);
	return s;
}

struct authz_subject *authz_subject_ref(struct authz_subject *s)
{
	s->refs++;
	return s;
}

static void cache_clear(struct authz_subject *s)
{
	while (!list_empty(&s->fifo)) {
		struct centry *e = list_first(&s->fifo, struct centry, fifo);
		list_del_init(&e->fifo);
		hmap_remove(&s->cache, &e->hn);
		free(e);
	}
	s->ncache = 0;
}

void authz_subject_unref(struct authz_subject *s)
{
	if (!s || --s->refs > 0)
		return;
	cache_clear(s);
	hmap_destroy(&s->cache);
	acl_free(s->authn_acl);
	client_attrs_clear(&s->attrs);
	free((char *)s->cl.username);
	free((char *)s->cl.clientid);
	free((char *)s->cl.peerhost);
	free((char *)s->cl.cert_common_name);
	free((char *)s->cl.cert_subject);
	free((char *)s->cl.listener);
	free((char *)s->cl.zone);
	free((char *)s->cl.mountpoint);
	free(s);
}

const struct authz_client *authz_subject_client(const struct authz_subject *s)
{
	return &s->cl;
}

void authz_wait_cancel(struct authz_wait *w)
{
	if (w->call) {
		w->call->wait = NULL;
		w->call = NULL;
	}
}

static bool cacheable(const struct authz_subject *s, const struct authz_action *a)
{
	const struct authz_cfg *c = s->z->cfg;
	if (!c->cache_enable)
		return false;
	if (a->topic_len > 65535)
		return false;
	for (size_t i = 0; i < c->n_excludes; i++)
		if (topic_match(c->cache_excludes[i], strlen(c->cache_excludes[i]), a->topic, a->topic_len))
			return false;
	return true;
}

static uint64_t action_hash(const struct authz_action *a)
{
	return hash_bytes(a->topic, a->topic_len) ^ ((uint64_t)a->type << 56) ^ ((uint64_t)a->qos << 48) ^
	       ((uint64_t)a->retain << 40);
}

static struct centry *cache_find(struct authz_subject *s, const struct authz_action *a, uint64_t h)
{
	hmap_for_hash(&s->cache, h, it) {
		struct centry *e = container_of(it, struct centry, hn);
		if (e->hash == h && e->type == a->type && e->qos == a->qos && e->retain == a->retain &&
		    e->len == a->topic_len && memcmp(e->topic, a->topic, a->topic_len) == 0)
			return e;
	}
	return NULL;
}

static void cache_drop(struct authz_subject *s, struct centry *e)
{
	list_del_init(&e->fifo);
	hmap_remove(&s->cache, &e->hn);
	free(e);
	s->ncache--;
}

static void cache_put(struct authz_subject *s, const struct authz_action *a, enum authz_verdict v)
{
	if (!cacheable(s, a))
		return;
	uint64_t h = action_hash(a);
	struct centry *e = cache_find(s, a, h);
	if (e)
		cache_drop(s, e);
	while (s->ncache >= s->z->cfg->cache_max && !list_empty(&s->fifo))
		cache_drop(s, list_first(&s->fifo, struct centry, fifo));
	e = xmalloc(sizeof *e + a->topic_len);
	e->hash = h;
	e->gen = atomic_load_explicit(&s->z->generation, memory_order_acquire);
	e->expires_ms = clock_mono_ms() + s->z->cfg->cache_ttl_ms;
	e->type = (uint8_t)a->type;
	e->qos = a->qos;
	e->retain = a->retain;
	e->verdict = (uint8_t)v;
	e->len = (uint16_t)a->topic_len;
	memcpy(e->topic, a->topic, a->topic_len);
	hmap_insert(&s->cache, &e->hn, h);
	list_push_back(&s->fifo, &e->fifo);
	s->ncache++;
}

static enum authz_verdict cache_get(struct authz_subject *s, const struct authz_action *a)
{
	if (!s->ncache || !cacheable(s, a))
		return AUTHZ_NOMATCH;
	struct centry *e = cache_find(s, a, action_hash(a));
	if (!e)
		return AUTHZ_NOMATCH;
	if (e->gen != atomic_load_explicit(&s->z->generation, memory_order_acquire) || clock_mono_ms() >= e->expires_ms) {
		cache_drop(s, e);
		return AUTHZ_NOMATCH;
	}
	return (enum authz_verdict)e->verdict;
}

static void log_decision(const struct authz_subject *s, const struct authz_action *a, enum authz_verdict v,
			 const char *by)
{
	if (v != AUTHZ_DENY || !log_enabled(LOG_INFO))
		return;
	log_info("client %s: %s %.*s denied by %s", s->cl.clientid ? s->cl.clientid : "?", authz_action_str(a->type),
		 (int)(a->topic_len > 200 ? 200 : a->topic_len), a->topic, by);
}

/* Backend errors count as no match unless ignore_backend_failures = false (then deny). */
static enum authz_verdict settle_error(const struct authz_subject *s, const struct src *src, enum authz_verdict v)
{
	if (v != AUTHZ_ERROR)
		return v;
	log_warn("client %s: authorization source %s failed to answer; %s", s->cl.clientid ? s->cl.clientid : "?",
		 src->id, s->z->cfg->ignore_backend_failures ? "treated as no match" : "denied");
	return s->z->cfg->ignore_backend_failures ? AUTHZ_NOMATCH : AUTHZ_DENY;
}

static enum authz_verdict start_async(struct authz_subject *s, const struct authz_action *a, size_t idx,
				       struct loop *l, struct authz_wait *w, authz_done_fn done, void *arg);

/* Evaluate sources from index idx on. Returns a final verdict, or PENDING after starting
 * an asynchronous source. */
static enum authz_verdict run_from(struct authz_subject *s, const struct authz_action *a, size_t idx, struct loop *l,
				   struct authz_wait *w, authz_done_fn done, void *arg)
{
	struct authz *z = s->z;
	for (size_t i = idx; i < z->nsrc; i++) {
		struct src *src = &z->src[i];
		if (src->ops->async)
			return start_async(s, a, i, l, w, done, arg);
		enum authz_verdict v = settle_error(s, src, src->ops->check(src->inst, &s->cl, a));
		if (v == AUTHZ_ALLOW || v == AUTHZ_DENY) {
			log_decision(s, a, v, src->id);
			cache_put(s, a, v);
			return v;
		}
	}
	enum authz_verdict v = z->cfg->no_match_allow ? AUTHZ_ALLOW : AUTHZ_DENY;
	log_decision(s, a, v, "no_match");
	cache_put(s, a, v);
	return v;
}

enum authz_verdict authz_check(struct authz_subject *s, const struct authz_action *a, struct loop *l,
			       struct authz_wait *w, authz_done_fn done, void *arg)
{
	if (s->cl.is_superuser)
		return AUTHZ_ALLOW;
	if (s->authn_acl && s->cl.authn_acl_expire_at && clock_wall_s() >= s->cl.authn_acl_expire_at) {
		/* The token's ACL has expired: it grants nothing more, and answers it gave are stale. */
		acl_free(s->authn_acl);
		s->authn_acl = NULL;
		cache_clear(s);
	}
	enum authz_verdict v = cache_get(s, a);
	if (v == AUTHZ_ALLOW || v == AUTHZ_DENY)
		return v;
	if (s->authn_acl) {
		v = acl_check(s->authn_acl, &s->cl, a);
		if (v == AUTHZ_ALLOW || v == AUTHZ_DENY) {
			log_decision(s, a, v, "the ACL granted by authentication");
			cache_put(s, a, v);
			return v;
		}
	}
	return run_from(s, a, 0, l, w, done, arg);
}

/* ---- asynchronous calls ---- */

const struct authz_client *authz_call_client(const struct authz_call *c)
{
	return &c->s->cl;
}

const struct authz_action *authz_call_action(const struct authz_call *c)
{
	return &c->act;
}

static void call_arrived(struct authz_call *c)
{
	struct authz_subject *s = c->s;
	struct authz_wait *w = c->wait;
	bool live = w != NULL;
	if (live)
		w->call = NULL;
	enum authz_verdict v = AUTHZ_NOMATCH;
	if (live && s->z->stopped) {
		v = AUTHZ_DENY; /* shutting down: the sources are gone */
	} else if (live) {
		struct src *src = &s->z->src[c->next];
		v = settle_error(s, src, c->v);
		if (v == AUTHZ_ALLOW || v == AUTHZ_DENY) {
			log_decision(s, &c->act, v, src->id);
			cache_put(s, &c->act, v);
		} else {
			v = run_from(s, &c->act, c->next + 1, c->loop, w, c->done, c->arg);
		}
	}
	authz_done_fn done = c->done;
	void *arg = c->arg;
	authz_subject_unref(s);
	free(c);
	if (live && v != AUTHZ_PENDING)
		done(arg, v);
}

static void call_post(void *arg)
{
	call_arrived(arg);
}

static void call_task(struct loop_task *t)
{
	call_arrived(container_of(t, struct authz_call, task));
}

void authz_call_done(struct authz_call *c, enum authz_verdict v)
{
	c->v = v;
	if (loop_current() == c->loop)
		loop_defer(c->loop, &c->task);
	else
		loop_post(c->loop, call_post, c);
}

static enum authz_verdict start_async(struct authz_subject *s, const struct authz_action *a, size_t idx,
				       struct loop *l, struct authz_wait *w, authz_done_fn done, void *arg)
{
	struct authz_call *c = xcalloc(1, sizeof *c + a->topic_len + 1);
	c->s = authz_subject_ref(s);
	c->loop = l;
	c->task.fn = call_task;
	c->done = done;
	c->arg = arg;
	c->act = *a;
	memcpy(c->topic, a->topic, a->topic_len);
	c->act.topic = c->topic;
	c->next = idx;
	authz_wait_cancel(w);
	c->wait = w;
	w->call = c;
	struct src *src = &s->z->src[idx];
	src->ops->start(src->inst, c);
	return AUTHZ_PENDING;
}

/* ---- template variables for backends ---- */

const char *const authz_tmpl_vars[] = {
	"username", "clientid", "peerhost", "peerport", "cert_subject", "cert_common_name", "listener", "zone",
	"client_attrs.", "action", "topic", "qos", "retain", "mountpoint", "proto_name", "proto_ver", NULL,
};

static bool is(const char *name, size_t len, const char *lit)
{
	return strlen(lit) == len && memcmp(name, lit, len) == 0;
}

static const char *str_var(const char *v, size_t *len)
{
	if (!v)
		return NULL;
	*len = strlen(v);
	return v;
}

const char *authz_call_var(void *arg, const char *name, size_t name_len, size_t *len, char *scratch,
			   size_t scratch_len)
{
	const struct authz_call *c = arg;
	const struct authz_client *cl = &c->s->cl;
	const struct authz_action *a = &c->act;
	if (is(name, name_len, "username")) {
		if (!cl->username)
			return NULL;
		*len = cl->username_len;
		return cl->username;
	}
	if (is(name, name_len, "clientid"))
		return str_var(cl->clientid, len);
	if (is(name, name_len, "peerhost"))
		return str_var(cl->peerhost, len);
	if (is(name, name_len, "cert_subject"))
		return str_var(cl->cert_subject, len);
	if (is(name, name_len, "cert_common_name"))
		return str_var(cl->cert_common_name, len);
	if (is(name, name_len, "listener"))
		return str_var(cl->listener, len);
	if (is(name, name_len, "zone"))
		return str_var(cl->zone, len);
	if (is(name, name_len, "mountpoint"))
		return str_var(cl->mountpoint ? cl->mountpoint : "", len);
	if (is(name, name_len, "action"))
		return str_var(authz_action_str(a->type), len);
	if (is(name, name_len, "topic")) {
		*len = a->topic_len;
		return a->topic;
	}
	if (is(name, name_len, "retain"))
		return str_var(a->retain ? "true" : "false", len);
	if (is(name, name_len, "proto_name"))
		return str_var(cl->proto_version == 3 ? "MQIsdp" : "MQTT", len);
	if (name_len > 13 && memcmp(name, "client_attrs.", 13) == 0)
		return str_var(client_attrs_get(cl->attrs, name + 13, name_len - 13), len);
	unsigned num;
	if (is(name, name_len, "peerport"))
		num = cl->peerport;
	else if (is(name, name_len, "qos"))
		num = a->qos;
	else if (is(name, name_len, "proto_ver"))
		num = cl->proto_version;
	else
		return NULL;
	int n = snprintf(scratch, scratch_len, "%u", num);
	*len = n > 0 ? (size_t)n : 0;
	return scratch;
}
