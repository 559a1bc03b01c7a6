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
 * hiredis (blocking API) runs on the pool threads (dbpool.h). Debian 12's libhiredis 0.14
 * has no TLS (hiredis_ssl came with 1.0): ssl.enable = true is refused at parse time.
 * redis_type = cluster | sentinel are refused as not supported yet.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "auth/authn.h"
#include "auth/dbpool.h"
#include "auth/dbpool_authn.h"
#include "auth/template.h"
#include "core/alloc.h"
#include "core/clock.h"
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

/* Split a command line into words: blanks separate; "double" (with \ escapes) and
 * 'single' quotes group. NULL-terminated; false on an unterminated quote or too many
 * words. */
static bool split_words(const char *s, char **words, size_t max, size_t *n, char *err, size_t errlen)
{
	*n = 0;
	const char *p = s;
	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
			p++;
		if (!*p)
			break;
		if (*n == max) {
			snprintf(err, errlen, "too many arguments (at most %zu)", max);
			return false;
		}
		struct buf b = { 0 };
		while (*p && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
			if (*p == '"' || *p == '\'') {
				char q = *p++;
				while (*p && *p != q) {
					if (q == '"' && *p == '\\' && p[1])
						p++;
					buf_append(&b, p++, 1);
				}
				if (!*p) {
					buf_free(&b);
					snprintf(err, errlen, "unterminated %c quote", q);
					return false;
				}
				p++;
			} else {
				buf_append(&b, p++, 1);
			}
		}
		words[(*n)++] = xstrndup(b.data ? (const char *)b.data : "", b.len);
		buf_free(&b);
	}
	words[*n] = NULL;
	return true;
}

/* Parse and validate `cmd` (EMQX rules). */
static bool redis_cmd_parse(const char *text, struct redis_cmd *out, char *err, size_t errlen)
{
	char *w[REDIS_MAX_ARGS + 1];
	size_t n = 0;
	bool ok = false;
	memset(out, 0, sizeof *out);
	if (!split_words(text, w, REDIS_MAX_ARGS, &n, err, errlen)) {
		for (size_t i = 0; i < n; i++)
			free(w[i]);
		return false;
	}
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
	for (size_t i = 0; i < n; i++)
		free(w[i]);
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

static bool read_redis_type(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	static const char *const names[] = { "single", "cluster", "sentinel", NULL };
	int v = 0;
	if (!cfgr_enum(r, m, names, &v))
		return false;
	return v == 0 ? true : cfgr_unsupported(r, m);
}

static bool read_redis_ssl(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	struct redis_cfg *c = target;
	if (!dbauth_read_ssl(r, m, target))
		return false;
	if (!c->c.ssl.enable)
		return true;
	const struct hocon_member *at = c->c.ssl.enable_at ? c->c.ssl.enable_at : m;
	size_t old = cfgr_path_push(r, "enable");
	cfgr_unsupported(r, at);
	size_t l = strlen(r->err);
	snprintf(r->err + l, r->errlen > l ? r->errlen - l : 0,
		 ": TLS to Redis needs hiredis >= 1.0 (hiredis_ssl); this build uses libhiredis %d.%d, which has none",
		 HIREDIS_MAJOR, HIREDIS_MINOR);
	cfgr_path_pop(r, old);
	return false;
}

static const struct cfg_field redis_fields[] = {
	{ "ssl", CFG_F_CUSTOM, 0, 0, 0, NULL, read_redis_ssl }, /* before the common "ssl" */
	DBAUTH_COMMON_FIELDS,
	{ "redis_type", CFG_F_CUSTOM, 0, 0, 0, NULL, read_redis_type },
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
	if (c->c.username && c->c.username[0] && !c->c.password) {
		cfgr_fail(r, m, "username needs a password (Redis AUTH username password)");
		goto fail;
	}
	if (!dbauth_common_check(r, m, &c->c, 6379, false))
		goto fail;
	return c;
fail:
	redis_free_config(c);
	return NULL;
}

/* ---- backend ---- */

static struct timeval tv_of(uint64_t ms)
{
	struct timeval tv = { .tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000 };
	return tv;
}

/* hiredis reports a socket timeout as an I/O error "Resource temporarily unavailable". */
static const char *io_error(const redisContext *c, uint64_t deadline)
{
	if (clock_mono_ms() + 5 >= deadline)
		return "timed out";
	return c->errstr[0] ? c->errstr : "connection lost";
}

/* Run one command during connection set-up; false with err on failure. */
static bool setup_cmd(redisContext *c, int argc, const char **argv, const size_t *lens, const char *what,
		      uint64_t deadline, char *err, size_t errlen)
{
	redisReply *rep = redisCommandArgv(c, argc, argv, lens);
	if (!rep) {
		snprintf(err, errlen, "%s: %s", what, io_error(c, deadline));
		return false;
	}
	bool ok = rep->type != REDIS_REPLY_ERROR;
	if (!ok)
		snprintf(err, errlen, "%s: %.150s", what, rep->str ? rep->str : "error");
	freeReplyObject(rep);
	return ok;
}

static void *r_connect(void *ctx, uint64_t deadline, char *err, size_t errlen)
{
	const struct redis_cfg *cfg = ctx;
	redisContext *c = redisConnectWithTimeout(cfg->c.host, cfg->c.port, tv_of(dbauth_ms_left(deadline)));
	if (!c) {
		snprintf(err, errlen, "cannot allocate a Redis context");
		return NULL;
	}
	if (c->err) {
		snprintf(err, errlen, "%s", clock_mono_ms() + 5 >= deadline ? "connect timed out"
					    : c->errstr[0]                    ? c->errstr
									      : "cannot connect");
		redisFree(c);
		return NULL;
	}
	redisSetTimeout(c, tv_of(dbauth_ms_left(deadline)));
	redisEnableKeepAlive(c);
	if (cfg->c.password) {
		const char *argv[3] = { "AUTH" };
		size_t lens[3] = { 4 };
		int argc = 1;
		if (cfg->c.username && cfg->c.username[0]) {
			argv[argc] = cfg->c.username;
			lens[argc++] = strlen(cfg->c.username);
		}
		argv[argc] = cfg->c.password;
		lens[argc++] = strlen(cfg->c.password);
		if (!setup_cmd(c, argc, argv, lens, "AUTH", deadline, err, errlen))
			goto fail;
	}
	if (cfg->database) {
		char db[16];
		snprintf(db, sizeof db, "%u", cfg->database);
		const char *argv[2] = { "SELECT", db };
		size_t lens[2] = { 6, strlen(db) };
		if (!setup_cmd(c, 2, argv, lens, "SELECT", deadline, err, errlen))
			goto fail;
	}
	return c;
fail:
	redisFree(c);
	return NULL;
}

static void r_close(void *ctx, void *conn)
{
	redisFree(conn);
}

static bool r_healthy(void *ctx, void *conn)
{
	const redisContext *c = conn;
	return c->err == 0;
}

static void r_interrupt(void *ctx, void *conn)
{
	const redisContext *c = conn;
	if (c->fd >= 0)
		shutdown(c->fd, SHUT_RDWR);
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
	redisContext *c = conn;
	struct dbauth_job *j = job;
	redisSetTimeout(c, tv_of(dbauth_ms_left(deadline)));
	redisReply *rep = redisCommandArgv(c, (int)j->nparams, (const char **)j->param, j->param_len);
	if (!rep) {
		const char *why = io_error(c, deadline);
		snprintf(err, errlen, "%s", why);
		return strcmp(why, "timed out") == 0 ? DBPOOL_TIMEOUT : DBPOOL_ERR_CONN;
	}
	enum dbpool_rc rc = DBPOOL_OK;
	struct dbauth_row row;
	if (rep->type == REDIS_REPLY_ERROR) {
		snprintf(err, errlen, "%.180s", rep->str ? rep->str : "error");
		rc = DBPOOL_ERR_QUERY;
	} else if (!row_of_reply(&cfg->cmd, rep, &row)) {
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
	.close = r_close,
	.healthy = r_healthy,
	.interrupt = r_interrupt,
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
