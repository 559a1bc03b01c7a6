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
 * hiredis (blocking API) runs on the pool threads (auth/dbpool.h). As for
 * authentication, ssl.enable = true is refused (libhiredis 0.14 has no TLS) and
 * redis_type = cluster | sentinel are not supported yet.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "auth/dbpool.h"
#include "auth/dbpool_authn.h"
#include "auth/template.h"
#include "authz/source.h"
#include "authz/source_db.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/clock.h"
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

static void rz_free_words(char **w, size_t n)
{
	for (size_t i = 0; w && i < n; i++)
		free(w[i]);
	free(w);
}

/* Split a command line into words: blanks separate; "double" (with \ escapes) and
 * 'single' quotes group. False on an unterminated quote or too many words. */
static bool rz_split_words(const char *s, char ***out, size_t *n, char *err, size_t errlen)
{
	char **w = xcalloc(REDIS_MAX_ARGS + 1, sizeof *w);
	size_t cnt = 0;
	const char *p = s;
	*out = NULL;
	*n = 0;
	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
			p++;
		if (!*p)
			break;
		if (cnt == REDIS_MAX_ARGS) {
			snprintf(err, errlen, "too many arguments (at most %d)", REDIS_MAX_ARGS);
			rz_free_words(w, cnt);
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
					rz_free_words(w, cnt);
					snprintf(err, errlen, "unterminated %c quote", q);
					return false;
				}
				p++;
			} else {
				buf_append(&b, p++, 1);
			}
		}
		w[cnt++] = xstrndup(b.data ? (const char *)b.data : "", b.len);
		buf_free(&b);
	}
	*out = w;
	*n = cnt;
	return true;
}

/* Parse and validate `cmd`: HGETALL key | HMGET key field... */
static bool rz_cmd_parse(const char *text, struct rz_cfg *c, char *err, size_t errlen)
{
	char **w = NULL;
	size_t n = 0;
	if (!rz_split_words(text, &w, &n, err, errlen))
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
	rz_free_words(c->words, c->nwords);
	c->words = w;
	c->nwords = n;
	c->hmget = hmget;
	return true;
fail:
	rz_free_words(w, n);
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

static bool rz_read_redis_type(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	static const char *const names[] = { "single", "cluster", "sentinel", NULL };
	int v = 0;
	if (!cfgr_enum(r, m, names, &v))
		return false;
	return v == 0 ? true : cfgr_unsupported(r, m);
}

static bool rz_read_compat(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	static const char *const names[] = { "disabled", "v4", NULL };
	int v = 0;
	if (!cfgr_enum(r, m, names, &v))
		return false;
	return v == 0 ? true : cfgr_unsupported(r, m);
}

static bool rz_read_redis_ssl(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	struct rz_cfg *c = target;
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

static const struct cfg_field rz_fields[] = {
	{ "ssl", CFG_F_CUSTOM, 0, 0, 0, NULL, rz_read_redis_ssl }, /* before the common "ssl" */
	AZDB_COMMON_FIELDS,
	{ "redis_type", CFG_F_CUSTOM, 0, 0, 0, NULL, rz_read_redis_type },
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
	rz_free_words(c->words, c->nwords);
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
	if (c->c.username && c->c.username[0] && !c->c.password) {
		cfgr_fail(r, m, "username needs a password (Redis AUTH username password)");
		goto fail;
	}
	if (!dbauth_common_check(r, m, &c->c, 6379, false))
		goto fail;
	return c;
fail:
	rz_cfg_unref(c);
	return NULL;
}

/* ---- backend ---- */

static struct timeval rz_tv(uint64_t ms)
{
	struct timeval tv = { .tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000 };
	return tv;
}

/* hiredis reports a socket timeout as an I/O error "Resource temporarily unavailable". */
static const char *rz_io_error(const redisContext *c, uint64_t deadline)
{
	if (clock_mono_ms() + 5 >= deadline)
		return "timed out";
	return c->errstr[0] ? c->errstr : "connection lost";
}

static bool rz_setup_cmd(redisContext *c, int argc, const char **argv, const size_t *lens, const char *what,
		      uint64_t deadline, char *err, size_t errlen)
{
	redisReply *rep = redisCommandArgv(c, argc, argv, lens);
	if (!rep) {
		snprintf(err, errlen, "%s: %s", what, rz_io_error(c, deadline));
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
	const struct rz_cfg *cfg = ctx;
	redisContext *c = redisConnectWithTimeout(cfg->c.host, cfg->c.port, rz_tv(dbauth_ms_left(deadline)));
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
	redisSetTimeout(c, rz_tv(dbauth_ms_left(deadline)));
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
		if (!rz_setup_cmd(c, argc, argv, lens, "AUTH", deadline, err, errlen))
			goto fail;
	}
	if (cfg->database) {
		char db[16];
		snprintf(db, sizeof db, "%u", cfg->database);
		const char *argv[2] = { "SELECT", db };
		size_t lens[2] = { 6, strlen(db) };
		if (!rz_setup_cmd(c, 2, argv, lens, "SELECT", deadline, err, errlen))
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

static enum dbpool_rc r_run(void *ctx, void *conn, void *job, uint64_t deadline, char *err, size_t errlen)
{
	const struct rz_cfg *cfg = ctx;
	redisContext *c = conn;
	struct azdb_job *j = job;
	redisSetTimeout(c, rz_tv(dbauth_ms_left(deadline)));
	redisReply *rep = redisCommandArgv(c, (int)j->nparams, (const char **)j->param, j->param_len);
	if (!rep) {
		const char *why = rz_io_error(c, deadline);
		snprintf(err, errlen, "%s", why);
		return strcmp(why, "timed out") == 0 ? DBPOOL_TIMEOUT : DBPOOL_ERR_CONN;
	}
	enum dbpool_rc rc = DBPOOL_OK;
	if (rep->type == REDIS_REPLY_ERROR) {
		snprintf(err, errlen, "%.180s", rep->str ? rep->str : "error");
		rc = DBPOOL_ERR_QUERY;
	} else if (!rz_rules_of_reply(cfg->hmget, rep, j)) {
		snprintf(err, errlen, "unexpected answer to %s (reply type %d)", cfg->hmget ? "HMGET" : "HGETALL",
			 rep->type);
		rc = DBPOOL_ERR_QUERY;
	}
	freeReplyObject(rep);
	return rc;
}

static const struct dbpool_backend rz_backend = {
	.name = "redis",
	.connect = r_connect,
	.run = r_run,
	.close = r_close,
	.healthy = r_healthy,
	.interrupt = r_interrupt,
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
