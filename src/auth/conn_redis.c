/* The Redis client of the authentication and authorization backends (see
 * auth/conn_redis.h). */
#include "auth/conn_redis.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/clock.h"

/* ---- config ---- */

void conn_redis_free_words(char **w, size_t n)
{
	for (size_t i = 0; w && i < n; i++)
		free(w[i]);
	free(w);
}

bool conn_redis_split_words(const char *s, size_t max, char ***out, size_t *n, char *err, size_t errlen)
{
	char **w = xcalloc(max + 1, sizeof *w);
	size_t cnt = 0;
	const char *p = s;
	*out = NULL;
	*n = 0;
	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
			p++;
		if (!*p)
			break;
		if (cnt == max) {
			snprintf(err, errlen, "too many arguments (at most %zu)", max);
			conn_redis_free_words(w, cnt);
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
					conn_redis_free_words(w, cnt);
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

bool conn_redis_read_type(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	static const char *const names[] = { "single", "cluster", "sentinel", NULL };
	int v = 0;
	if (!cfgr_enum(r, m, names, &v))
		return false;
	return v == 0 ? true : cfgr_unsupported(r, m);
}

bool conn_redis_read_ssl(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	struct dbauth_common *c = target;
	if (!dbauth_read_ssl(r, m, target))
		return false;
	if (!c->ssl.enable)
		return true;
	const struct hocon_member *at = c->ssl.enable_at ? c->ssl.enable_at : m;
	size_t old = cfgr_path_push(r, "enable");
	cfgr_unsupported(r, at);
	size_t l = strlen(r->err);
	snprintf(r->err + l, r->errlen > l ? r->errlen - l : 0,
		 ": TLS to Redis needs hiredis >= 1.0 (hiredis_ssl); this build uses libhiredis %d.%d, which has none",
		 HIREDIS_MAJOR, HIREDIS_MINOR);
	cfgr_path_pop(r, old);
	return false;
}

bool conn_redis_check(struct cfg_reader *r, const struct hocon_member *m, struct dbauth_common *c)
{
	if (c->username && c->username[0] && !c->password)
		return cfgr_fail(r, m, "username needs a password (Redis AUTH username password)");
	return dbauth_common_check(r, m, c, 6379, false);
}

/* ---- connections ---- */

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

void *conn_redis_connect(const struct dbauth_common *cfg, uint32_t database, uint64_t deadline, char *err,
			 size_t errlen)
{
	redisContext *c = redisConnectWithTimeout(cfg->host, cfg->port, tv_of(dbauth_ms_left(deadline)));
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
	if (cfg->password) {
		const char *argv[3] = { "AUTH" };
		size_t lens[3] = { 4 };
		int argc = 1;
		if (cfg->username && cfg->username[0]) {
			argv[argc] = cfg->username;
			lens[argc++] = strlen(cfg->username);
		}
		argv[argc] = cfg->password;
		lens[argc++] = strlen(cfg->password);
		if (!setup_cmd(c, argc, argv, lens, "AUTH", deadline, err, errlen))
			goto fail;
	}
	if (database) {
		char db[16];
		snprintf(db, sizeof db, "%u", database);
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

void conn_redis_close(void *ctx, void *conn)
{
	redisFree(conn);
}

bool conn_redis_healthy(void *ctx, void *conn)
{
	const redisContext *c = conn;
	return c->err == 0;
}

void conn_redis_interrupt(void *ctx, void *conn)
{
	const redisContext *c = conn;
	if (c->fd >= 0)
		shutdown(c->fd, SHUT_RDWR);
}

/* ---- commands ---- */

enum dbpool_rc conn_redis_command(void *conn, size_t argc, char *const *argv, const size_t *lens, uint64_t deadline,
				  redisReply **rep, char *err, size_t errlen)
{
	redisContext *c = conn;
	*rep = NULL;
	redisSetTimeout(c, tv_of(dbauth_ms_left(deadline)));
	redisReply *r = redisCommandArgv(c, (int)argc, (const char **)argv, lens);
	if (!r) {
		const char *why = io_error(c, deadline);
		snprintf(err, errlen, "%s", why);
		return strcmp(why, "timed out") == 0 ? DBPOOL_TIMEOUT : DBPOOL_ERR_CONN;
	}
	if (r->type == REDIS_REPLY_ERROR) {
		snprintf(err, errlen, "%.180s", r->str ? r->str : "error");
		freeReplyObject(r);
		return DBPOOL_ERR_QUERY;
	}
	*rep = r;
	return DBPOOL_OK;
}
