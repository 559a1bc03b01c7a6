/* The authentication chain at run time: runs authenticators in order, asynchronously,
 * applies the failure policy and the node cache, and hands the outcome to the caller's
 * loop. See auth.h for the semantics and authn.h for the authenticator contract.
 *
 * An attempt's life: auth_start copies the request and runs the first enabled
 * authenticator. Each authenticator answers through authn_done, from any thread; the
 * answer is carried to the attempt's loop (loop_post, or loop_defer when already there)
 * and evaluated there: IGNORE runs the next one, anything final calls done. The attempt
 * is freed once the caller released it (auth_cancel) and no authenticator call is in
 * flight, so a late answer for a client that went away is harmless. */
#include "auth/auth.h"
#include "auth/client_attrs.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "auth/auth_int.h"
#include "config/config.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/hmap.h"
#include "core/list.h"
#include "core/log.h"
#include "mqtt/mqtt.h"
#include "net/loop.h"

struct warn_limit {
	_Atomic uint64_t last_ms;   /* last warning logged */
	atomic_ulong suppressed;    /* failures not logged since */
};

struct auth_chain {
	struct auth_system *sys;
	const struct auth_chain_cfg *cfg; /* NULL: empty chain */
	struct authn **inst;               /* [cfg->n], NULL for disabled entries */
	struct warn_limit *warn;           /* [cfg->n]: backend failure warnings, rate-limited */
	size_t n_enabled;
};

#define WARN_EVERY_MS 10000u

/* ---- node cache: backend answers by request, for cache_ttl ---- */

struct cache_entry {
	struct hmap_node hn;
	struct list lru;
	uint8_t key[32];
	int64_t expires_ms;
	enum authn_verdict verdict;
	uint8_t rc;
	bool is_superuser;
	int64_t expire_at;
	char *acl, *client_attrs, *clientid_override;
};

struct node_cache {
	pthread_mutex_t lock;
	struct hmap map;
	struct list lru; /* oldest first */
	size_t count, max;
	uint64_t ttl_ms;
};

struct auth_system {
	atomic_int refs;          /* the broker's, plus one per live attempt */
	bool destroyed;           /* authenticators are gone (shutdown) */
	const struct config *cfg;
	struct authn_env env;
	struct auth_chain global;
	struct auth_chain *listeners; /* [cfg->n_listeners] (only those with their own chain are used) */
	struct node_cache cache;
};

struct auth_attempt {
	struct auth_chain *chain;
	struct loop *loop;
	auth_done_fn done;
	void *arg;
	struct authn_request req;
	/* owned copies behind req */
	char *username, *client_id, *peerhost, *cert_subject, *cert_common_name, *listener, *auth_method;
	uint8_t *password, *auth_data;
	struct client_attrs attrs;
	size_t idx;               /* entry being asked */
	bool in_flight;           /* an authenticator call has not answered yet */
	bool released;            /* the caller let go (auth_cancel) */
	atomic_bool cancelled;    /* read by authenticators from any thread */
	bool enhanced;            /* entry idx answered CONTINUE: AUTH steps go to it */
	void *state;              /* authn_call_state */
	bool cache_lookup_done;
	uint8_t cache_key[32];
	struct authn_result res;  /* the answer being carried to the loop */
	struct loop_task task;
};

/* ---- request variables (for templates) ---- */

const char *authn_request_var(const struct authn_request *r, const char *name, size_t nlen, size_t *len, char *scratch,
			      size_t scratch_len)
{
#define IS(s) (nlen == sizeof(s) - 1 && memcmp(name, s, nlen) == 0)
	const char *v = NULL;
	if (IS("username")) {
		*len = r->username_len;
		return r->username;
	}
	if (IS("password")) {
		*len = r->password_len;
		return (const char *)r->password;
	}
	if (IS("clientid"))
		v = r->client_id;
	else if (IS("peerhost"))
		v = r->peerhost;
	else if (IS("cert_subject"))
		v = r->cert_subject;
	else if (IS("cert_common_name"))
		v = r->cert_common_name;
	else if (IS("listener"))
		v = r->listener;
	else if (IS("zone"))
		v = "default";
	else if (IS("peerport")) {
		snprintf(scratch, scratch_len, "%u", r->peerport);
		v = scratch;
	} else if (nlen > 13 && memcmp(name, "client_attrs.", 13) == 0)
		v = client_attrs_get(r->attrs, name + 13, nlen - 13);
#undef IS
	if (v)
		*len = strlen(v);
	return v;
}

/* ---- cache ---- */

static void cache_entry_free(struct cache_entry *e)
{
	free(e->acl);
	free(e->client_attrs);
	free(e->clientid_override);
	free(e);
}

static void cache_key(const struct auth_attempt *a, const char *id, uint8_t out[32])
{
	const struct authn_request *r = &a->req;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	EVP_DigestInit_ex(md, EVP_sha256(), NULL);
	const void *parts[] = { id, r->username, r->password, r->client_id, r->peerhost, r->cert_subject, r->listener };
	size_t lens[] = { strlen(id), r->username_len, r->password_len, r->client_id ? strlen(r->client_id) : 0,
			  r->peerhost ? strlen(r->peerhost) : 0, r->cert_subject ? strlen(r->cert_subject) : 0,
			  r->listener ? strlen(r->listener) : 0 };
	for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
		uint64_t l = parts[i] ? lens[i] : UINT64_MAX; /* absent differs from empty */
		EVP_DigestUpdate(md, &l, sizeof l);
		if (parts[i] && lens[i])
			EVP_DigestUpdate(md, parts[i], lens[i]);
	}
	for (size_t i = 0; r->attrs && i < r->attrs->n; i++) {
		const struct client_attr *x = &r->attrs->v[i];
		EVP_DigestUpdate(md, x->name, strlen(x->name) + 1);
		EVP_DigestUpdate(md, x->value, strlen(x->value) + 1);
	}
	EVP_DigestFinal_ex(md, out, NULL);
	EVP_MD_CTX_free(md);
}

static uint64_t key_hash(const uint8_t k[32])
{
	uint64_t h;
	memcpy(&h, k, sizeof h);
	return h;
}

static struct cache_entry *cache_find(struct node_cache *c, const uint8_t key[32])
{
	hmap_for_hash(&c->map, key_hash(key), it) {
		struct cache_entry *e = container_of(it, struct cache_entry, hn);
		if (memcmp(e->key, key, 32) == 0)
			return e;
	}
	return NULL;
}

static void cache_drop(struct node_cache *c, struct cache_entry *e)
{
	hmap_remove(&c->map, &e->hn);
	list_del_init(&e->lru);
	c->count--;
	cache_entry_free(e);
}

/* A copy of a fresh cached answer into res; false on a miss. */
static bool cache_get(struct node_cache *c, const uint8_t key[32], struct authn_result *res)
{
	bool hit = false;
	pthread_mutex_lock(&c->lock);
	struct cache_entry *e = cache_find(c, key);
	if (e && e->expires_ms <= (int64_t)clock_mono_ms()) {
		cache_drop(c, e);
		e = NULL;
	}
	if (e) {
		memset(res, 0, sizeof *res);
		res->verdict = e->verdict;
		res->rc = e->rc;
		res->is_superuser = e->is_superuser;
		res->expire_at = e->expire_at;
		res->acl = e->acl ? xstrdup(e->acl) : NULL;
		res->client_attrs = e->client_attrs ? xstrdup(e->client_attrs) : NULL;
		res->clientid_override = e->clientid_override ? xstrdup(e->clientid_override) : NULL;
		snprintf(res->reason, sizeof res->reason, "cached answer");
		hit = true;
	}
	pthread_mutex_unlock(&c->lock);
	return hit;
}

static void cache_put(struct node_cache *c, const uint8_t key[32], const struct authn_result *res)
{
	struct cache_entry *e = xcalloc(1, sizeof *e);
	memcpy(e->key, key, 32);
	e->expires_ms = (int64_t)(clock_mono_ms() + c->ttl_ms);
	if (res->expire_at) { /* never serve an authentication past its own expiry */
		int64_t left_ms = (res->expire_at - clock_wall_s()) * 1000;
		if (left_ms < (int64_t)c->ttl_ms)
			e->expires_ms = (int64_t)clock_mono_ms() + (left_ms > 0 ? left_ms : 0);
	}
	e->verdict = res->verdict;
	e->rc = res->rc;
	e->is_superuser = res->is_superuser;
	e->expire_at = res->expire_at;
	e->acl = res->acl ? xstrdup(res->acl) : NULL;
	e->client_attrs = res->client_attrs ? xstrdup(res->client_attrs) : NULL;
	e->clientid_override = res->clientid_override ? xstrdup(res->clientid_override) : NULL;
	pthread_mutex_lock(&c->lock);
	struct cache_entry *old = cache_find(c, key);
	if (old)
		cache_drop(c, old);
	hmap_insert(&c->map, &e->hn, key_hash(key));
	list_push_back(&c->lru, &e->lru);
	c->count++;
	while (c->count > c->max)
		cache_drop(c, list_first(&c->lru, struct cache_entry, lru));
	pthread_mutex_unlock(&c->lock);
}

/* ---- attempts ---- */

static void result_clear(struct authn_result *r)
{
	free(r->acl);
	free(r->client_attrs);
	free(r->clientid_override);
	free(r->auth_data);
	memset(r, 0, sizeof *r);
}

static struct authn *entry_inst(const struct auth_attempt *a)
{
	return a->chain->inst[a->idx];
}

static const struct authn_ops *entry_ops(const struct auth_attempt *a)
{
	return a->chain->cfg->v[a->idx].ops;
}

static const char *entry_id(const struct auth_attempt *a)
{
	return a->chain->cfg->v[a->idx].id;
}

static void end_enhanced(struct auth_attempt *a)
{
	if (a->enhanced) {
		if (entry_inst(a) && entry_ops(a)->auth_end)
			entry_ops(a)->auth_end(entry_inst(a), (struct authn_call *)(void *)a);
		else
			free(a->state); /* the authenticator is gone (shutdown): authn.h's fallback */
		a->state = NULL;
	}
	a->enhanced = false;
}

static void system_unref(struct auth_system *s);

static void attempt_free(struct auth_attempt *a)
{
	end_enhanced(a);
	result_clear(&a->res);
	free(a->username);
	free(a->client_id);
	free(a->peerhost);
	free(a->cert_subject);
	free(a->cert_common_name);
	free(a->listener);
	free(a->auth_method);
	client_attrs_clear(&a->attrs);
	if (a->password)
		OPENSSL_cleanse(a->password, a->req.password_len);
	free(a->password);
	free(a->auth_data);
	struct auth_system *sys = a->chain->sys;
	free(a);
	system_unref(sys);
}

const struct authn_request *authn_call_request(const struct authn_call *call)
{
	return &((const struct auth_attempt *)(const void *)call)->req;
}

void **authn_call_state(struct authn_call *call)
{
	return &((struct auth_attempt *)(void *)call)->state;
}

bool authn_call_cancelled(const struct authn_call *call)
{
	return atomic_load(&((struct auth_attempt *)(void *)call)->cancelled);
}

static void finish(struct auth_attempt *a, enum authn_verdict v, uint8_t rc, const char *by, const char *why)
{
	struct auth_outcome o;
	memset(&o, 0, sizeof o);
	o.verdict = v;
	o.rc = rc;
	o.by = by;
	snprintf(o.reason, sizeof o.reason, "%s", why ? why : "");
	if (v == AUTHN_ALLOW || v == AUTHN_CONTINUE) {
		o.is_superuser = a->res.is_superuser;
		o.expire_at = a->res.expire_at;
		o.acl = a->res.acl;
		o.acl_expire_at = a->res.acl_expire_at;
		o.client_attrs = a->res.client_attrs;
		o.clientid_override = a->res.clientid_override;
		o.auth_data = a->res.auth_data;
		o.auth_data_len = a->res.auth_data_len;
		a->res.acl = a->res.client_attrs = a->res.clientid_override = NULL;
		a->res.auth_data = NULL;
	}
	if (v != AUTHN_CONTINUE)
		end_enhanced(a);
	a->done(a->arg, &o); /* the receiver owns o's heap fields */
}

static void run_next(struct auth_attempt *a);

static void call_current(struct auth_attempt *a, bool step)
{
	a->in_flight = true;
	if (step)
		entry_ops(a)->auth_step(entry_inst(a), (struct authn_call *)(void *)a);
	else
		entry_ops(a)->authenticate(entry_inst(a), (struct authn_call *)(void *)a);
}

/* Evaluate the answer of entry idx (on the attempt's loop). */
static void evaluate(struct auth_attempt *a)
{
	struct authn_result *r = &a->res;
	const struct cfg_authn_settings *st = &a->chain->sys->cfg->authn_settings;
	if (entry_ops(a)->cacheable && st->node_cache && r->verdict != AUTHN_ERROR && r->verdict != AUTHN_CONTINUE &&
	    !a->cache_lookup_done)
		cache_put(&a->chain->sys->cache, a->cache_key, r);
	switch (r->verdict) {
	case AUTHN_ALLOW:
		log_debug("authentication of %s allowed by %s%s%s", a->req.client_id, entry_id(a), r->reason[0] ? ": " : "",
			  r->reason);
		finish(a, AUTHN_ALLOW, 0, entry_id(a), r->reason);
		return;
	case AUTHN_DENY:
		finish(a, AUTHN_DENY, r->rc ? r->rc : MQTT_RC_BAD_USERNAME_OR_PASSWORD, entry_id(a), r->reason);
		return;
	case AUTHN_CONTINUE:
		a->enhanced = true;
		finish(a, AUTHN_CONTINUE, 0, entry_id(a), r->reason);
		return;
	case AUTHN_ERROR:
		if (!st->ignore_backend_failures) {
			finish(a, AUTHN_DENY, MQTT_RC_NOT_AUTHORIZED, entry_id(a), r->reason);
			return;
		}
	{
		/* One warning per authenticator every few seconds: a dead backend must not flood the log. */
		struct warn_limit *w = &a->chain->warn[a->idx];
		uint64_t now = clock_mono_ms(), last = atomic_load(&w->last_ms);
		if (now - last >= WARN_EVERY_MS && atomic_compare_exchange_strong(&w->last_ms, &last, now)) {
			unsigned long more = atomic_exchange(&w->suppressed, 0);
			if (more)
				log_warn("authenticator %s failed (%s); ignored (authentication_settings."
					 "ignore_backend_failures); %lu more failures since the last warning",
					 entry_id(a), r->reason, more);
			else
				log_warn("authenticator %s failed (%s); ignored (authentication_settings."
					 "ignore_backend_failures)",
					 entry_id(a), r->reason);
		} else {
			atomic_fetch_add(&w->suppressed, 1);
			log_debug("authenticator %s failed (%s); ignored", entry_id(a), r->reason);
		}
		break;
	}
	case AUTHN_IGNORE:
		break;
	}
	result_clear(r);
	end_enhanced(a);
	a->idx++;
	run_next(a);
}

static void run_next(struct auth_attempt *a)
{
	const struct auth_chain_cfg *cfg = a->chain->cfg;
	const struct cfg_authn_settings *st = &a->chain->sys->cfg->authn_settings;
	while (a->idx < cfg->n && !a->chain->inst[a->idx])
		a->idx++;
	if (a->idx >= cfg->n) {
		/* Everyone ignored. A client that asked for an enhanced method nobody handles gets
		 * "bad authentication method"; others are not authorized. */
		if (a->req.auth_method)
			finish(a, AUTHN_DENY, MQTT_RC_BAD_AUTH_METHOD, "chain", "no authenticator handles this method");
		else
			finish(a, AUTHN_DENY, MQTT_RC_NOT_AUTHORIZED, "chain", "no authenticator accepted the client");
		return;
	}
	a->cache_lookup_done = false;
	if (entry_ops(a)->cacheable && st->node_cache) {
		cache_key(a, entry_id(a), a->cache_key);
		if (cache_get(&a->chain->sys->cache, a->cache_key, &a->res)) {
			a->cache_lookup_done = true;
			evaluate(a);
			return;
		}
	}
	call_current(a, false);
}

/* The answer reached the attempt's loop. */
static void arrived(struct auth_attempt *a)
{
	a->in_flight = false;
	if (a->released) {
		attempt_free(a);
		return;
	}
	if (a->chain->sys->destroyed) {
		result_clear(&a->res);
		finish(a, AUTHN_DENY, MQTT_RC_SERVER_UNAVAILABLE, "chain", "server shutting down");
		return;
	}
	evaluate(a);
}

static void arrived_post(void *arg)
{
	arrived(arg);
}

static void arrived_task(struct loop_task *t)
{
	arrived(container_of(t, struct auth_attempt, task));
}

void authn_done(struct authn_call *call, struct authn_result *res)
{
	struct auth_attempt *a = (struct auth_attempt *)(void *)call;
	a->res = *res;
	memset(res, 0, sizeof *res);
	/* Never continue inside the authenticator's own stack: on the same loop, run at the
	 * end of the iteration; elsewhere, post. */
	if (loop_current() == a->loop)
		loop_defer(a->loop, &a->task);
	else
		loop_post(a->loop, arrived_post, a);
}

static void start_task(struct loop_task *t)
{
	struct auth_attempt *a = container_of(t, struct auth_attempt, task);
	a->task.fn = arrived_task;
	a->in_flight = false;
	if (a->released) {
		attempt_free(a);
		return;
	}
	if (!a->chain->cfg || !a->chain->n_enabled) {
		struct auth_outcome o;
		memset(&o, 0, sizeof o);
		o.verdict = AUTHN_ALLOW;
		o.anonymous = true;
		o.by = "chain";
		snprintf(o.reason, sizeof o.reason, "no authenticator configured");
		a->done(a->arg, &o);
		return;
	}
	run_next(a);
}

/* A NUL-terminated copy of n bytes (NULL stays NULL). */
static void *dupn(const void *p, size_t n)
{
	if (!p)
		return NULL;
	char *d = xmalloc(n + 1);
	memcpy(d, p, n);
	d[n] = '\0';
	return d;
}

struct auth_attempt *auth_start(struct auth_chain *c, const struct authn_request *req, struct loop *l, auth_done_fn done,
				void *arg)
{
	struct auth_attempt *a = xcalloc(1, sizeof *a);
	atomic_fetch_add(&c->sys->refs, 1);
	a->chain = c;
	a->loop = l;
	a->done = done;
	a->arg = arg;
	list_init(&a->task.link);
	a->task.fn = arrived_task;
	atomic_init(&a->cancelled, false);
	/* Own every byte of the request (views into the read buffer do not survive). */
	a->req = *req;
	if (req->username) {
		a->username = xmalloc(req->username_len + 1);
		memcpy(a->username, req->username, req->username_len);
		a->username[req->username_len] = '\0';
		a->req.username = a->username;
	}
	if (req->password) {
		a->password = dupn(req->password, req->password_len);
		a->req.password = a->password;
	}
	a->req.client_id = a->client_id = req->client_id ? xstrdup(req->client_id) : NULL;
	a->req.peerhost = a->peerhost = req->peerhost ? xstrdup(req->peerhost) : NULL;
	a->req.cert_subject = a->cert_subject = req->cert_subject ? xstrdup(req->cert_subject) : NULL;
	a->req.cert_common_name = a->cert_common_name = req->cert_common_name ? xstrdup(req->cert_common_name) : NULL;
	a->req.listener = a->listener = req->listener ? xstrdup(req->listener) : NULL;
	a->req.auth_method = a->auth_method = req->auth_method ? xstrdup(req->auth_method) : NULL;
	client_attrs_copy(&a->attrs, req->attrs);
	a->req.attrs = &a->attrs;
	if (req->auth_data) {
		a->auth_data = dupn(req->auth_data, req->auth_data_len);
		a->req.auth_data = a->auth_data;
	}
	/* Start at the end of this iteration: done never runs before the caller holds the
	 * attempt. */
	a->task.fn = start_task;
	loop_defer(l, &a->task);
	a->in_flight = true;
	return a;
}

void auth_step(struct auth_attempt *a, const uint8_t *data, size_t len)
{
	if (!a->enhanced || a->in_flight || a->released)
		return;
	free(a->auth_data);
	a->auth_data = data ? dupn(data, len) : NULL;
	a->req.auth_data = a->auth_data;
	a->req.auth_data_len = data ? len : 0;
	if (!entry_ops(a)->auth_step) {
		finish(a, AUTHN_DENY, MQTT_RC_BAD_AUTH_METHOD, entry_id(a), "authenticator has no further steps");
		return;
	}
	call_current(a, true);
}

void auth_cancel(struct auth_attempt *a)
{
	if (!a)
		return;
	a->released = true;
	atomic_store(&a->cancelled, true);
	/* An answer still on its way (running, posted or deferred) frees the attempt when it
	 * arrives; otherwise nothing refers to it any more. */
	if (!a->in_flight)
		attempt_free(a);
}

/* ---- system ---- */

/* Build a chain's authenticators. A listener chain's instances get ids qualified by the
 * listener ("ssl:devices/password_based:built_in_database"), so their state (users) is
 * their own; the global chain's ids are the plain ones. */
static bool chain_build(struct auth_system *s, struct auth_chain *ch, const struct auth_chain_cfg *cfg,
			const char *listener_id, char *err, size_t errlen)
{
	ch->sys = s;
	ch->cfg = cfg;
	if (!cfg)
		return true;
	ch->inst = xcalloc(cfg->n ? cfg->n : 1, sizeof *ch->inst);
	ch->warn = xcalloc(cfg->n ? cfg->n : 1, sizeof *ch->warn);
	for (size_t i = 0; i < cfg->n; i++) {
		const struct auth_entry_cfg *e = &cfg->v[i];
		if (!e->enable)
			continue;
		char cerr[512] = "";
		char *qid = listener_id ? xasprintf("%s/%s", listener_id, e->id) : xstrdup(e->id);
		ch->inst[i] = e->ops->create(e->cfg, &s->env, qid, cerr, sizeof cerr);
		free(qid);
		if (!ch->inst[i]) {
			snprintf(err, errlen, "authenticator %s: %s", e->id, cerr[0] ? cerr : "cannot start");
			return false;
		}
		ch->n_enabled++;
	}
	return true;
}

static void chain_destroy(struct auth_chain *ch)
{
	for (size_t i = 0; ch->cfg && i < ch->cfg->n; i++) {
		if (ch->inst[i])
			ch->cfg->v[i].ops->destroy(ch->inst[i]);
		ch->inst[i] = NULL;
	}
}

struct auth_system *auth_system_new(const struct config *cfg, const struct authn_env *env, char *err, size_t errlen)
{
	struct auth_system *s = xcalloc(1, sizeof *s);
	atomic_init(&s->refs, 1);
	s->cfg = cfg;
	s->env = *env;
	pthread_mutex_init(&s->cache.lock, NULL);
	hmap_init(&s->cache.map);
	list_init(&s->cache.lru);
	s->cache.max = cfg->authn_settings.cache_max_count ? cfg->authn_settings.cache_max_count : 1000000;
	s->cache.ttl_ms = cfg->authn_settings.cache_ttl_ms;
	s->listeners = xcalloc(cfg->n_listeners ? cfg->n_listeners : 1, sizeof *s->listeners);
	if (!chain_build(s, &s->global, cfg->authn, NULL, err, errlen))
		goto fail;
	for (size_t i = 0; i < cfg->n_listeners; i++) {
		const struct cfg_listener *l = &cfg->listeners[i];
		if (l->authn && l->enable && !chain_build(s, &s->listeners[i], l->authn, l->id, err, errlen))
			goto fail;
	}
	return s;
fail:
	auth_system_free(s);
	return NULL;
}

static void system_unref(struct auth_system *s)
{
	if (atomic_fetch_sub(&s->refs, 1) != 1)
		return;
	free(s->global.inst);
	free(s->global.warn);
	for (size_t i = 0; i < s->cfg->n_listeners; i++) {
		free(s->listeners[i].inst);
		free(s->listeners[i].warn);
	}
	free(s->listeners);
	for (struct hmap_node *n = hmap_steal(&s->cache.map), *next; n; n = next) {
		next = n->next;
		cache_entry_free(container_of(n, struct cache_entry, hn));
	}
	pthread_mutex_destroy(&s->cache.lock);
	free(s);
}

void auth_system_free(struct auth_system *s)
{
	if (!s)
		return;
	/* Authenticators go now (answering their pending calls); the memory stays until the
	 * last attempt those answers reach is freed. */
	s->destroyed = true;
	chain_destroy(&s->global);
	for (size_t i = 0; i < s->cfg->n_listeners; i++)
		chain_destroy(&s->listeners[i]);
	system_unref(s);
}

struct auth_chain *auth_chain_for(struct auth_system *s, const struct cfg_listener *l)
{
	if (l && l->authn) {
		size_t i = (size_t)(l - s->cfg->listeners);
		if (i < s->cfg->n_listeners)
			return &s->listeners[i];
	}
	return &s->global;
}

bool auth_chain_empty(const struct auth_chain *c)
{
	return !c->cfg || c->n_enabled == 0;
}

/* ---- ctl and reload ---- */

/* Chains in a fixed order: global first, then listeners with their own chain. */
static struct auth_chain *chain_by_listener(struct auth_system *s, const char *listener_id)
{
	if (!listener_id)
		return &s->global;
	for (size_t i = 0; i < s->cfg->n_listeners; i++)
		if (s->cfg->listeners[i].authn && strcmp(s->cfg->listeners[i].id, listener_id) == 0)
			return &s->listeners[i];
	return NULL;
}

bool auth_ctl(struct auth_system *s, int argc, char **argv, struct buf *out)
{
	/* Options the core understands: --listener ID, --authenticator MECHANISM[:BACKEND] */
	const char *listener = NULL, *which = NULL;
	char *rest[64];
	int n = 0;
	for (int i = 0; i < argc && n < 63; i++) {
		if (!strcmp(argv[i], "--listener") && i + 1 < argc)
			listener = argv[++i];
		else if (!strcmp(argv[i], "--authenticator") && i + 1 < argc)
			which = argv[++i];
		else
			rest[n++] = argv[i];
	}
	rest[n] = NULL;
	struct auth_chain *ch = chain_by_listener(s, listener);
	if (!ch) {
		buf_printf(out, "no listener %s with its own authentication chain\n", listener);
		return false;
	}
	for (size_t i = 0; ch->cfg && i < ch->cfg->n; i++) {
		const struct auth_entry_cfg *e = &ch->cfg->v[i];
		if (!ch->inst[i] || !e->ops->ctl)
			continue;
		if (which && strcmp(e->id, which) != 0 && strcmp(e->ops->mechanism, which) != 0)
			continue;
		return e->ops->ctl(ch->inst[i], n, rest, out);
	}
	buf_printf(out, "no enabled authenticator%s%s in the %s chain handles \"%s\" (configure a built_in_database "
		       "authenticator)\n",
		   which ? " " : "", which ? which : "", listener ? listener : "global", argc ? argv[0] : "");
	return false;
}

static bool chain_reload(struct auth_chain *ch, const char *name, struct buf *report)
{
	bool ok = true;
	for (size_t i = 0; ch->cfg && i < ch->cfg->n; i++) {
		const struct auth_entry_cfg *e = &ch->cfg->v[i];
		if (!ch->inst[i] || !e->ops->reload)
			continue;
		char err[512] = "";
		if (e->ops->reload(ch->inst[i], err, sizeof err)) {
			buf_printf(report, "authentication (%s) %s: reloaded\n", name, e->id);
		} else {
			log_error("authentication (%s) %s: reload failed, keeping the previous data: %s", name, e->id, err);
			buf_printf(report, "authentication (%s) %s: reload failed, keeping the previous data: %s\n", name, e->id,
				   err);
			ok = false;
		}
	}
	return ok;
}

bool auth_reload(struct auth_system *s, struct buf *report)
{
	bool ok = chain_reload(&s->global, "global", report);
	for (size_t i = 0; i < s->cfg->n_listeners; i++)
		if (s->cfg->listeners[i].authn)
			ok = chain_reload(&s->listeners[i], s->cfg->listeners[i].id, report) && ok;
	return ok;
}
