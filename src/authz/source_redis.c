/* `authorization.sources = [{type = redis, ...}]` (EMQX 5.8, reference/emqx.md §5):
 *
 *   { type = redis, enable = true
 *     redis_type = single, server = "127.0.0.1:6379", database = 0
 *     username = "", password = "secret"          # AUTH [username] password
 *     pool_size = 8, query_timeout = 5s
 *     cmd = "HGETALL mqtt_acl:${username}" }
 *
 * cmd is HGETALL <key> or HMGET <key> <field>...; every word may hold placeholders
 * (authz_tmpl_vars; undefined ones render as "", as EMQX) and is sent as one bulk
 * string, so a username with blanks or CR LF cannot add arguments or commands.
 *
 * Each hash field is a topic filter (placeholders and "eq FILTER" allowed, expanded by
 * acl_check) and its value `publish`, `subscribe`, `all` or a JSON object
 * {"action": "publish", "qos": [0, 1], "retain": false}; the permission is always allow.
 * With HMGET the fields are the command's own (rendered) field arguments, paired with the
 * values; absent fields are skipped. The fields are tried in the order Redis returns them
 * (insertion order for small hashes), the first matching one allows; none matches:
 * NOMATCH. An invalid value skips its field (logged).
 *
 * hiredis (blocking API) runs on the pool threads (auth/dbpool.h) through
 * auth/conn_redis.h. As for
 * authentication, ssl.enable = true is refused (libhiredis 0.14 has no TLS) and
 * redis_type = cluster | sentinel are not supported yet.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <hiredis/hiredis.h>

#include "auth/conn_redis.h"
#include "auth/dbpool.h"
#include "auth/dbpool_authn.h"
#include "auth/template.h"
#include "authz/source.h"
#include "authz/source_db.h"
#include "core/alloc.h"
#include "core/log.h"

#define REDIS_MAX_ARGS 64

struct rz_cfg {
	struct dbauth_common c; /* first (dbpool_authn.h) */
	atomic_int refs;        /* the core's reference and one per instance */
	uint32_t database;
	bool hmget;
	char **words;           /* the command split into words, as written */
	size_t nwords;
};

struct rz_source {
	struct azdb base; /* first */
	struct rz_cfg *cfg;
};

/* ---- cmd ---- */

/* Parse and validate `cmd`: HGETALL key | HMGET key field... */
static bool rz_cmd_parse(const char *text, struct rz_cfg *c, char *err, size_t errlen)
{
	char **w = NULL;
	size_t n = 0;
	if (!conn_redis_split_words(text, REDIS_MAX_ARGS, &w, &n, err, errlen))
		return false;
	bool hmget = false;
	if (n == 0) {
		snprintf(err, errlen, "empty command; expected HGETALL <key> or HMGET <key> <fields...>");
		goto fail;
	}
	if (strcasecmp(w[0], "HMGET") == 0) {
		hmget = true;
	} else if (strcasecmp(w[0], "HGETALL") != 0) {
		snprintf(err, errlen, "only HGETALL and HMGET are supported, got %.40s", w[0]);
		goto fail;
	}
	if (n < 2 || !w[1][0]) {
		snprintf(err, errlen, "%s needs a key", hmget ? "HMGET" : "HGETALL");
		goto fail;
	}
	if (!hmget && n != 2) {
		snprintf(err, errlen, "HGETALL takes only a key");
		goto fail;
	}
	if (hmget && n < 3) {
		snprintf(err, errlen, "HMGET needs a key and at least one field (a topic)");
		goto fail;
	}
	conn_redis_free_words(c->words, c->nwords);
	c->words = w;
	c->nwords = n;
	c->hmget = hmget;
	return true;
fail:
	conn_redis_free_words(w, n);
	return false;
}

/* ---- config ---- */

static bool rz_read_cmd(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	struct rz_cfg *c = target;
	const char *s = cfgr_scalar(m->value);
	char err[256];
	if (!s || m->value->type != HOCON_STRING)
		return cfgr_fail(r, m, "expected a string such as \"HGETALL mqtt_acl:${username}\"");
	if (!rz_cmd_parse(s, c, err, sizeof err))
		return cfgr_fail(r, m, "%s", err);
	return true;
}

static bool rz_read_compat(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	static const char *const names[] = { "disabled", "v4", NULL };
	int v = 0;
	if (!cfgr_enum(r, m, names, &v))
		return false;
	return v == 0 ? true : cfgr_unsupported(r, m);
}

static const struct cfg_field rz_fields[] = {
	{ "ssl", CFG_F_CUSTOM, 0, 0, 0, NULL, conn_redis_read_ssl }, /* before the common "ssl" */
	AZDB_COMMON_FIELDS,
	{ "redis_type", CFG_F_CUSTOM, 0, 0, 0, NULL, conn_redis_read_type },
	{ "database", CFG_F_U32, offsetof(struct rz_cfg, database), 0, 65535, NULL, NULL },
	{ "cmd", CFG_F_CUSTOM, 0, 0, 0, NULL, rz_read_cmd },
	{ "compatibility_mode", CFG_F_CUSTOM, 0, 0, 0, NULL, rz_read_compat },
	{ "servers", CFG_F_UNSUPPORTED, 0, 0, 0, NULL, NULL }, /* cluster / sentinel */
	{ "sentinel", CFG_F_UNSUPPORTED, 0, 0, 0, NULL, NULL },
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

static void rz_cfg_unref(struct rz_cfg *c)
{
	if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
		return;
	dbauth_common_free(&c->c);
	conn_redis_free_words(c->words, c->nwords);
	free(c);
}

static void rz_free_config(void *p)
{
	rz_cfg_unref(p);
}

static void *rz_parse(struct cfg_reader *r, const struct hocon_member *m)
{
	struct rz_cfg *c = xcalloc(1, sizeof *c);
	dbauth_common_init(&c->c);
	atomic_init(&c->refs, 1);
	if (!cfgr_load_fields(r, m, m->value, rz_fields, c))
		goto fail;
	if (!c->words) {
		cfgr_fail(r, m, "cmd is required (e.g. \"HGETALL mqtt_acl:${username}\")");
		goto fail;
	}
	if (!conn_redis_check(r, m, &c->c))
		goto fail;
	return c;
fail:
	rz_cfg_unref(c);
	return NULL;
}

/* ---- backend ---- */

static void *rz_connect(void *ctx, uint64_t deadline, char *err, size_t errlen)
{
	const struct rz_cfg *cfg = ctx;
	return conn_redis_connect(&cfg->c, cfg->database, deadline, err, errlen);
}

static bool rz_is_text(const redisReply *e)
{
	return e->type == REDIS_REPLY_STRING || e->type == REDIS_REPLY_STATUS;
}

/* The rules a reply describes (into j). False when it is not an HGETALL/HMGET answer. */
static bool rz_rules_of_reply(bool hmget, const redisReply *rep, struct azdb_job *j)
{
	if (rep->type == REDIS_REPLY_NIL)
		return true;
	if (rep->type != REDIS_REPLY_ARRAY)
		return false;
	if (hmget) {
		/* Values of the fields param[2..], in order. */
		for (size_t i = 0; i < rep->elements && 2 + i < j->nparams; i++) {
			const redisReply *e = rep->element[i];
			if (!rz_is_text(e))
				continue; /* nil: no such field */
			azdb_job_add_redis(j, j->param[2 + i], j->param_len[2 + i], e->str, (size_t)e->len);
		}
		return true;
	}
	if (rep->elements % 2)
		return false;
	for (size_t i = 0; i + 1 < rep->elements; i += 2) {
		const redisReply *f = rep->element[i], *v = rep->element[i + 1];
		if (!rz_is_text(f) || !rz_is_text(v))
			return false;
		azdb_job_add_redis(j, f->str, (size_t)f->len, v->str, (size_t)v->len);
	}
	return true;
}

static enum dbpool_rc rz_run(void *ctx, void *conn, void *job, uint64_t deadline, char *err, size_t errlen)
{
	const struct rz_cfg *cfg = ctx;
	struct azdb_job *j = job;
	redisReply *rep = NULL;
	enum dbpool_rc rc = conn_redis_command(conn, j->nparams, j->param, j->param_len, deadline, &rep, err, errlen);
	if (rc != DBPOOL_OK)
		return rc;
	if (!rz_rules_of_reply(cfg->hmget, rep, j)) {
		snprintf(err, errlen, "unexpected answer to %s (reply type %d)", cfg->hmget ? "HMGET" : "HGETALL",
			 rep->type);
		rc = DBPOOL_ERR_QUERY;
	}
	freeReplyObject(rep);
	return rc;
}

static const struct dbpool_backend rz_backend = {
	.name = "redis",
	.connect = rz_connect,
	.run = rz_run,
	.close = conn_redis_close,
	.healthy = conn_redis_healthy,
	.interrupt = conn_redis_interrupt,
	.done = azdb_job_done,
	.release = azdb_job_release,
};

/* ---- source ---- */

static struct authz_source *rz_create(const void *cfgp, const struct authz_env *env, char *err, size_t errlen)
{
	struct rz_cfg *cfg = (struct rz_cfg *)cfgp;
	struct rz_source *s = xcalloc(1, sizeof *s);
	atomic_fetch_add(&cfg->refs, 1);
	s->cfg = cfg;
	s->base.type = "redis";
	s->base.id = xstrdup("authorization redis");
	s->base.cfg = &cfg->c;
	s->base.undefined_is_null = false; /* EMQX renders an undefined placeholder as "" */
	s->base.nparams = cfg->nwords;
	s->base.params = xcalloc(cfg->nwords, sizeof *s->base.params);
	s->base.params[0] = tmpl_parse(cfg->hmget ? "HMGET" : "HGETALL", NULL);
	for (size_t i = 1; i < cfg->nwords; i++)
		s->base.params[i] = tmpl_parse(cfg->words[i], authz_tmpl_vars);
	azdb_start_pool(&s->base, &rz_backend, cfg);
	return (struct authz_source *)s;
}

static void rz_destroy(struct authz_source *as)
{
	struct rz_source *s = (struct rz_source *)as;
	if (!s)
		return;
	azdb_fini(&s->base);
	rz_cfg_unref(s->cfg);
	free(s);
}

static void rz_start(struct authz_source *s, struct authz_call *call)
{
	azdb_start(&((struct rz_source *)s)->base, call);
}

static const struct authz_source_ops rz_ops = {
	.type = "redis",
	.async = true,
	.parse = rz_parse,
	.free_config = rz_free_config,
	.create = rz_create,
	.destroy = rz_destroy,
	.start = rz_start,
};

__attribute__((constructor)) static void rz_register(void)
{
	authz_source_register(&rz_ops);
}
