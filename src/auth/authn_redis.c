/* `mechanism = password_based, backend = redis` (EMQX, reference/emqx.md §4.2-4.3):
 *
 *   authentication = [{
 *     mechanism = password_based, backend = redis
 *     redis_type = single, server = "127.0.0.1:6379", database = 0
 *     username = "", password = "secret"          # AUTH [username] password
 *     pool_size = 8, query_timeout = 5s
 *     cmd = "HMGET mqtt_user:${username} password_hash salt is_superuser"
 *     password_hash_algorithm { name = sha256, salt_position = prefix }
 *   }]
 *
 * cmd is HGET <key> <field> or HMGET <key> <field>...; the fields come from password_hash,
 * password, salt, is_superuser, clientid_override, and one of password_hash / password is
 * required. Each argument is rendered on its own and sent as one bulk string, so a
 * username with spaces or CR LF cannot add arguments or commands. An empty or all-nil
 * answer is "no such user" (IGNORE).
 *
 * hiredis (blocking API) runs on the pool threads (dbpool.h) through auth/conn_redis.h. Debian 12's libhiredis 0.14
 * has no TLS (hiredis_ssl came with 1.0): ssl.enable = true is refused at parse time.
 * redis_type = cluster | sentinel are refused as not supported yet.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <hiredis/hiredis.h>

#include "auth/authn.h"
#include "auth/conn_redis.h"
#include "auth/dbpool.h"
#include "auth/dbpool_authn.h"
#include "auth/template.h"
#include "core/alloc.h"
#include "core/log.h"

#define REDIS_MAX_ARGS 16

/* A parsed `cmd`. */
struct redis_cmd {
	bool hmget;
	char *key;       /* template text of the key */
	size_t nfields;
	char **fields;   /* as written */
	int *kinds;      /* enum dbauth_field of each field */
};

struct redis_cfg {
	struct dbauth_common c; /* first (dbpool_authn.h) */
	uint32_t database;
	struct redis_cmd cmd;
	bool have_cmd;
};

struct authn {
	struct dbauth base;  /* first */
	struct redis_cfg *cfg;
};

/* ---- cmd ---- */

static void redis_cmd_free(struct redis_cmd *c)
{
	free(c->key);
	for (size_t i = 0; i < c->nfields; i++)
		free(c->fields[i]);
	free(c->fields);
	free(c->kinds);
	memset(c, 0, sizeof *c);
}

/* Parse and validate `cmd` (EMQX rules). */
static bool redis_cmd_parse(const char *text, struct redis_cmd *out, char *err, size_t errlen)
{
	char **w = NULL;
	size_t n = 0;
	bool ok = false;
	memset(out, 0, sizeof *out);
	if (!conn_redis_split_words(text, REDIS_MAX_ARGS, &w, &n, err, errlen))
		return false;
	if (n == 0) {
		snprintf(err, errlen, "empty command; expected HGET or HMGET <key> <fields...>");
		goto out;
	}
	if (strcasecmp(w[0], "HMGET") == 0) {
		out->hmget = true;
	} else if (strcasecmp(w[0], "HGET") != 0) {
		snprintf(err, errlen, "only HGET and HMGET are supported, got %.40s", w[0]);
		goto out;
	}
	if (n < 3) {
		snprintf(err, errlen, "%s needs a key and at least one field", out->hmget ? "HMGET" : "HGET");
		goto out;
	}
	if (!out->hmget && n != 3) {
		snprintf(err, errlen, "HGET takes exactly one field (password_hash or password); use HMGET for several");
		goto out;
	}
	if (!w[1][0]) {
		snprintf(err, errlen, "the key is empty");
		goto out;
	}
	out->key = xstrdup(w[1]);
	out->nfields = n - 2;
	out->fields = xcalloc(out->nfields, sizeof *out->fields);
	out->kinds = xcalloc(out->nfields, sizeof *out->kinds);
	bool has_hash = false;
	for (size_t i = 0; i < out->nfields; i++) {
		const char *f = w[i + 2];
		int k = -1;
		if (!strchr(f, '$'))
			k = dbauth_field_of(f, strlen(f));
		if (k < 0 || strcmp(f, dbauth_field_name(k)) != 0) {
			snprintf(err, errlen,
				 "field %.60s is not allowed; allowed: password_hash, password, salt, is_superuser, "
				 "clientid_override", f);
			goto out;
		}
		for (size_t j = 0; j < i; j++) {
			if (out->kinds[j] == k) {
				snprintf(err, errlen, "field %.60s appears twice", f);
				goto out;
			}
		}
		out->fields[i] = xstrdup(f);
		out->kinds[i] = k;
		has_hash |= k == DBAUTH_F_PASSWORD_HASH || k == DBAUTH_F_PASSWORD;
	}
	if (!has_hash) {
		snprintf(err, errlen, "the fields must include password_hash or password");
		goto out;
	}
	ok = true;
out:
	conn_redis_free_words(w, n);
	if (!ok)
		redis_cmd_free(out);
	return ok;
}

/* ---- config ---- */

static bool read_cmd(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	struct redis_cfg *c = target;
	const char *s = cfgr_scalar(m->value);
	char err[256];
	if (!s || m->value->type != HOCON_STRING)
		return cfgr_fail(r, m, "expected a string such as \"HMGET mqtt_user:${username} password_hash salt\"");
	redis_cmd_free(&c->cmd);
	c->have_cmd = false;
	if (!redis_cmd_parse(s, &c->cmd, err, sizeof err))
		return cfgr_fail(r, m, "%s", err);
	c->have_cmd = true;
	return true;
}

static const struct cfg_field redis_fields[] = {
	{ "ssl", CFG_F_CUSTOM, 0, 0, 0, NULL, conn_redis_read_ssl }, /* before the common "ssl" */
	DBAUTH_COMMON_FIELDS,
	{ "redis_type", CFG_F_CUSTOM, 0, 0, 0, NULL, conn_redis_read_type },
	{ "database", CFG_F_U32, offsetof(struct redis_cfg, database), 0, 65535, NULL, NULL },
	{ "cmd", CFG_F_CUSTOM, 0, 0, 0, NULL, read_cmd },
	{ "servers", CFG_F_UNSUPPORTED, 0, 0, 0, NULL, NULL },   /* cluster / sentinel */
	{ "sentinel", CFG_F_UNSUPPORTED, 0, 0, 0, NULL, NULL },
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

static void redis_free_config(void *p)
{
	struct redis_cfg *c = p;
	if (!c)
		return;
	dbauth_common_free(&c->c);
	redis_cmd_free(&c->cmd);
	free(c);
}

static void *redis_parse(struct cfg_reader *r, const struct hocon_member *m)
{
	struct redis_cfg *c = xcalloc(1, sizeof *c);
	dbauth_common_init(&c->c);
	if (!cfgr_load_fields(r, m, m->value, redis_fields, c))
		goto fail;
	if (!c->have_cmd) {
		cfgr_fail(r, m, "cmd is required (e.g. \"HMGET mqtt_user:${username} password_hash salt is_superuser\")");
		goto fail;
	}
	if (!conn_redis_check(r, m, &c->c))
		goto fail;
	return c;
fail:
	redis_free_config(c);
	return NULL;
}

/* ---- backend ---- */

static void *r_connect(void *ctx, uint64_t deadline, char *err, size_t errlen)
{
	const struct redis_cfg *cfg = ctx;
	return conn_redis_connect(&cfg->c, cfg->database, deadline, err, errlen);
}

static void value_of(const redisReply *e, struct dbauth_value *v)
{
	if (e->type == REDIS_REPLY_STRING || e->type == REDIS_REPLY_STATUS) {
		v->type = DBAUTH_V_TEXT;
		v->s = e->str;
		v->len = (size_t)e->len;
	} else if (e->type == REDIS_REPLY_INTEGER) {
		/* not produced by HGET/HMGET; kept for completeness */
		v->type = DBAUTH_V_NULL;
	} else {
		v->type = DBAUTH_V_ABSENT;
	}
}

/* The row a reply describes. False when the reply is not an HGET/HMGET answer. */
static bool row_of_reply(const struct redis_cmd *cmd, const redisReply *rep, struct dbauth_row *row)
{
	memset(row, 0, sizeof *row);
	if (rep->type == REDIS_REPLY_NIL)
		return true;
	if (!cmd->hmget) {
		if (rep->type != REDIS_REPLY_STRING)
			return false;
		value_of(rep, &row->v[cmd->kinds[0]]);
		row->found = true;
		return true;
	}
	if (rep->type != REDIS_REPLY_ARRAY)
		return false;
	for (size_t i = 0; i < rep->elements && i < cmd->nfields; i++) {
		const redisReply *e = rep->element[i];
		if (e->type == REDIS_REPLY_NIL)
			continue;
		value_of(e, &row->v[cmd->kinds[i]]);
		row->found = true;
	}
	return true;
}

static enum dbpool_rc r_run(void *ctx, void *conn, void *job, uint64_t deadline, char *err, size_t errlen)
{
	const struct redis_cfg *cfg = ctx;
	struct dbauth_job *j = job;
	redisReply *rep = NULL;
	enum dbpool_rc rc = conn_redis_command(conn, j->nparams, j->param, j->param_len, deadline, &rep, err, errlen);
	if (rc != DBPOOL_OK)
		return rc;
	struct dbauth_row row;
	if (!row_of_reply(&cfg->cmd, rep, &row)) {
		snprintf(err, errlen, "unexpected answer to %s (reply type %d)", cfg->cmd.hmget ? "HMGET" : "HGET",
			 rep->type);
		rc = DBPOOL_ERR_QUERY;
	} else {
		dbauth_row_eval(&row, &cfg->c.pw, j->password, j->password_len, &j->res);
	}
	freeReplyObject(rep);
	return rc;
}

static const struct dbpool_backend redis_backend = {
	.name = "redis",
	.connect = r_connect,
	.run = r_run,
	.close = conn_redis_close,
	.healthy = conn_redis_healthy,
	.interrupt = conn_redis_interrupt,
	.done = dbauth_job_done,
	.release = dbauth_job_release,
};

/* ---- authenticator ---- */

static struct authn *redis_create(const void *cfgp, const struct authn_env *env, const char *id, char *err,
				  size_t errlen)
{
	const struct redis_cfg *cfg = cfgp;
	struct authn *a = xcalloc(1, sizeof *a);
	a->cfg = (struct redis_cfg *)cfg;
	a->base.id = xstrdup(id);
	a->base.cfg = &cfg->c;
	a->base.undefined_is_null = false; /* EMQX renders an undefined placeholder as "" */
	a->base.nparams = 2 + cfg->cmd.nfields;
	a->base.params = xcalloc(a->base.nparams, sizeof *a->base.params);
	a->base.params[0] = tmpl_parse(cfg->cmd.hmget ? "HMGET" : "HGET", NULL);
	a->base.params[1] = tmpl_parse(cfg->cmd.key, tmpl_authn_vars);
	for (size_t i = 0; i < cfg->cmd.nfields; i++)
		a->base.params[2 + i] = tmpl_parse(cfg->cmd.fields[i], NULL);
	dbauth_start_pool(&a->base, &redis_backend, (void *)cfg);
	return a;
}

static void redis_destroy(struct authn *a)
{
	if (!a)
		return;
	dbauth_fini(&a->base);
	free(a);
}

static void redis_authenticate(struct authn *a, struct authn_call *call)
{
	dbauth_authenticate(&a->base, call);
}

static const struct authn_ops redis_ops = {
	.mechanism = "password_based",
	.backend = "redis",
	.cacheable = true,
	.parse = redis_parse,
	.free_config = redis_free_config,
	.create = redis_create,
	.destroy = redis_destroy,
	.authenticate = redis_authenticate,
};

__attribute__((constructor)) static void redis_register(void)
{
	authn_register(&redis_ops);
}
