/* `mechanism = password_based, backend = postgresql` (EMQX, reference/emqx.md §4.2-4.3):
 *
 *   authentication = [{
 *     mechanism = password_based, backend = postgresql
 *     server = "127.0.0.1:5432", database = mqtt, username = bulwark, password = "secret"
 *     pool_size = 8, query_timeout = 5s
 *     ssl { enable = true, verify = verify_peer, cacertfile = "ca.pem" }
 *     query = "SELECT password_hash, salt, is_superuser FROM mqtt_user WHERE username = ${username} LIMIT 1"
 *     password_hash_algorithm { name = sha256, salt_position = prefix }
 *   }]
 *
 * Placeholders become bind parameters $1, $2, ... (tmpl_sql): values never enter the SQL
 * text; an undefined one binds NULL. The first row is used; columns password_hash (or
 * password), salt, is_superuser (boolean, integer or text), clientid_override.
 *
 * libpq runs on the pool threads (dbpool.h): connecting with PQconnectStartParams and
 * querying with PQsendQueryParams, both polled against the request's deadline; at the
 * deadline the query is cancelled (PQcancel) so the connection stays usable.
 *
 * ssl: verify_none -> sslmode=require (encrypted, server not verified); verify_peer ->
 * sslmode=verify-full against cacertfile (the name checked is server_name_indication
 * when set, else the server's host); server_name_indication = disable -> sslsni=0.
 */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <arpa/inet.h>

#include <libpq-fe.h>

#include "auth/authn.h"
#include "auth/dbpool.h"
#include "auth/dbpool_authn.h"
#include "auth/template.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"

/* Type OIDs (catalog/pg_type.h, stable). */
#define PG_BOOLOID 16
#define PG_INT8OID 20
#define PG_INT2OID 21
#define PG_INT4OID 23

#define CANCEL_GRACE_MS 1000

struct pg_cfg {
	struct dbauth_common c; /* first (dbpool_authn.h) */
	char *query;
	char *sql;        /* query with $n parameters */
	char **names;     /* parameter i+1 is ${names[i]} */
	size_t nnames;
};

struct authn {
	struct dbauth base; /* first */
	struct pg_cfg *cfg;
};

struct pgc {
	PGconn *pc;
	bool broken;
};

/* ---- config ---- */

static bool read_query(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	struct pg_cfg *c = target;
	char *q = NULL, *sql = NULL, **names = NULL, err[200];
	size_t n = 0;
	if (!cfgr_string(r, m, &q))
		return false;
	if (!q[0]) {
		free(q);
		return cfgr_fail(r, m, "the query is empty");
	}
	if (!tmpl_sql(q, tmpl_authn_vars, TMPL_SQL_DOLLAR, &sql, &names, &n, err, sizeof err)) {
		free(q);
		return cfgr_fail(r, m, "%s", err);
	}
	free(c->query);
	free(c->sql);
	tmpl_sql_free_names(c->names);
	c->query = q;
	c->sql = sql;
	c->names = names;
	c->nnames = n;
	return true;
}

static const struct cfg_field pg_fields[] = {
	DBAUTH_COMMON_FIELDS,
	{ "database", CFG_F_STRING, offsetof(struct dbauth_common, database), 0, 0, NULL, NULL },
	{ "query", CFG_F_CUSTOM, 0, 0, 0, NULL, read_query },
	{ "disable_prepared_statements", CFG_F_IGNORED, 0, 0, 0, NULL, NULL }, /* never named statements */
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

static void pg_free_config(void *p)
{
	struct pg_cfg *c = p;
	if (!c)
		return;
	dbauth_common_free(&c->c);
	free(c->query);
	free(c->sql);
	tmpl_sql_free_names(c->names);
	free(c);
}

static void *pg_parse(struct cfg_reader *r, const struct hocon_member *m)
{
	struct pg_cfg *c = xcalloc(1, sizeof *c);
	dbauth_common_init(&c->c);
	if (!cfgr_load_fields(r, m, m->value, pg_fields, c))
		goto fail;
	if (!c->sql) {
		cfgr_fail(r, m, "query is required (e.g. \"SELECT password_hash, salt FROM mqtt_user WHERE username = "
				"${username} LIMIT 1\")");
		goto fail;
	}
	if (!dbauth_common_check(r, m, &c->c, 5432, true))
		goto fail;
	return c;
fail:
	pg_free_config(c);
	return NULL;
}

/* ---- backend ---- */

/* libpq messages end with newlines and may span lines: one line, trimmed. */
static void one_line(char *dst, size_t dstlen, const char *msg)
{
	snprintf(dst, dstlen, "%s", msg && msg[0] ? msg : "unknown error");
	for (char *p = dst; *p; p++)
		if (*p == '\n' || *p == '\r' || *p == '\t')
			*p = ' ';
	size_t l = strlen(dst);
	while (l && dst[l - 1] == ' ')
		dst[--l] = '\0';
}

static void quiet_notices(void *arg, const char *msg)
{
}

/* Wait until fd is ready for ev or deadline: 1 ready, 0 timeout, -1 error. */
static int wait_fd(int fd, short ev, uint64_t deadline)
{
	for (;;) {
		uint64_t now = clock_mono_ms();
		if (now >= deadline)
			return 0;
		struct pollfd p = { .fd = fd, .events = ev };
		uint64_t left = deadline - now;
		int n = poll(&p, 1, left > 60000 ? 60000 : (int)left);
		if (n > 0)
			return 1;
		if (n < 0 && errno != EINTR)
			return -1;
	}
}

static void *p_connect(void *ctx, uint64_t deadline, char *err, size_t errlen)
{
	const struct pg_cfg *cfg = ctx;
	const struct dbauth_ssl *ssl = &cfg->c.ssl;
	const char *kw[20], *val[20];
	int n = 0;
	char port[8], hostaddr[INET6_ADDRSTRLEN] = "";
	snprintf(port, sizeof port, "%u", cfg->c.port);
#define KV(k, v) do { kw[n] = (k); val[n] = (v); n++; } while (0)
	if (ssl->enable && ssl->sni) {
		/* The name to send and verify differs from where to connect. */
		struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
		int e = getaddrinfo(cfg->c.host, NULL, &hints, &res);
		if (e || !res) {
			snprintf(err, errlen, "cannot resolve %s: %s", cfg->c.host, gai_strerror(e));
			return NULL;
		}
		const void *addr = res->ai_family == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr
							      : (const void *)&((struct sockaddr_in *)res->ai_addr)->sin_addr;
		inet_ntop(res->ai_family, addr, hostaddr, sizeof hostaddr);
		freeaddrinfo(res);
		KV("host", ssl->sni);
		KV("hostaddr", hostaddr);
	} else {
		KV("host", cfg->c.host);
	}
	KV("port", port);
	KV("dbname", cfg->c.database);
	if (cfg->c.username && cfg->c.username[0])
		KV("user", cfg->c.username);
	if (cfg->c.password)
		KV("password", cfg->c.password);
	KV("application_name", "bulwark");
	KV("client_encoding", "UTF8");
	if (ssl->enable) {
		KV("sslmode", ssl->verify_peer ? "verify-full" : "require");
		if (ssl->cacertfile)
			KV("sslrootcert", ssl->cacertfile);
		if (ssl->certfile)
			KV("sslcert", ssl->certfile);
		if (ssl->keyfile)
			KV("sslkey", ssl->keyfile);
		if (ssl->sni_disable)
			KV("sslsni", "0");
	} else {
		KV("sslmode", "disable");
	}
	KV(NULL, NULL);
#undef KV
	PGconn *pc = PQconnectStartParams(kw, val, 0);
	if (!pc) {
		snprintf(err, errlen, "cannot allocate a connection");
		return NULL;
	}
	PostgresPollingStatusType st = PGRES_POLLING_WRITING;
	if (PQstatus(pc) == CONNECTION_BAD)
		st = PGRES_POLLING_FAILED;
	while (st != PGRES_POLLING_OK) {
		if (st == PGRES_POLLING_FAILED) {
			one_line(err, errlen, PQerrorMessage(pc));
			goto fail;
		}
		int w = wait_fd(PQsocket(pc), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline);
		if (w == 0) {
			snprintf(err, errlen, "connect timed out");
			goto fail;
		}
		if (w < 0) {
			snprintf(err, errlen, "poll: %s", strerror(errno));
			goto fail;
		}
		st = PQconnectPoll(pc);
	}
	PQsetNoticeProcessor(pc, quiet_notices, NULL);
	struct pgc *c = xcalloc(1, sizeof *c);
	c->pc = pc;
	return c;
fail:
	PQfinish(pc);
	return NULL;
}

static void p_close(void *ctx, void *conn)
{
	struct pgc *c = conn;
	PQfinish(c->pc);
	free(c);
}

static bool p_healthy(void *ctx, void *conn)
{
	const struct pgc *c = conn;
	return !c->broken && PQstatus(c->pc) == CONNECTION_OK;
}

static void p_interrupt(void *ctx, void *conn)
{
	const struct pgc *c = conn;
	int fd = PQsocket(c->pc);
	if (fd >= 0)
		shutdown(fd, SHUT_RDWR);
}

static void cancel_query(PGconn *pc)
{
	PGcancel *cn = PQgetCancel(pc);
	char buf[256];
	if (cn) {
		PQcancel(cn, buf, sizeof buf);
		PQfreeCancel(cn);
	}
}

/* Fill row from the first tuple of res. */
static void row_of_result(const PGresult *res, struct dbauth_row *row)
{
	memset(row, 0, sizeof *row);
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) < 1)
		return;
	row->found = true;
	int nf = PQnfields(res);
	for (int i = 0; i < nf; i++) {
		const char *name = PQfname(res, i);
		int k = dbauth_field_of(name, strlen(name));
		if (k < 0 || row->v[k].type != DBAUTH_V_ABSENT)
			continue;
		struct dbauth_value *v = &row->v[k];
		if (PQgetisnull(res, 0, i)) {
			v->type = DBAUTH_V_NULL;
			continue;
		}
		Oid t = PQftype(res, i);
		v->type = t == PG_BOOLOID ? DBAUTH_V_BOOL
			  : (t == PG_INT2OID || t == PG_INT4OID || t == PG_INT8OID) ? DBAUTH_V_INT
										     : DBAUTH_V_TEXT;
		v->s = PQgetvalue(res, 0, i);
		v->len = (size_t)PQgetlength(res, 0, i);
	}
}

static enum dbpool_rc p_run(void *ctx, void *conn, void *job, uint64_t deadline, char *err, size_t errlen)
{
	const struct pg_cfg *cfg = ctx;
	struct pgc *c = conn;
	struct dbauth_job *j = job;
	/* PostgreSQL text cannot hold NUL: a value with one matches no row. */
	for (size_t i = 0; i < j->nparams; i++) {
		if (j->param[i] && memchr(j->param[i], 0, j->param_len[i])) {
			struct dbauth_row none = { 0 };
			dbauth_row_eval(&none, &cfg->c.pw, j->password, j->password_len, &j->res);
			return DBPOOL_OK;
		}
	}
	if (!PQsendQueryParams(c->pc, cfg->sql, (int)j->nparams, NULL, (const char *const *)j->param, NULL, NULL, 0)) {
		one_line(err, errlen, PQerrorMessage(c->pc));
		if (PQstatus(c->pc) != CONNECTION_OK)
			return DBPOOL_ERR_CONN;
		c->broken = true; /* unknown state: start over on a fresh connection */
		return DBPOOL_ERR_QUERY;
	}
	PGresult *first = NULL;
	bool cancelled = false;
	uint64_t until = deadline;
	for (;;) {
		while (!PQisBusy(c->pc)) {
			PGresult *r = PQgetResult(c->pc);
			if (!r)
				goto finished;
			if (!first)
				first = r;
			else
				PQclear(r);
		}
		int w = wait_fd(PQsocket(c->pc), POLLIN, until);
		if (w == 0 && !cancelled) {
			/* Deadline: cancel the statement, wait a moment for the connection to settle. */
			cancel_query(c->pc);
			cancelled = true;
			until = clock_mono_ms() + CANCEL_GRACE_MS;
			continue;
		}
		if (w == 0) {
			c->broken = true;
			break;
		}
		if (w < 0 || !PQconsumeInput(c->pc)) {
			one_line(err, errlen, w < 0 ? strerror(errno) : PQerrorMessage(c->pc));
			PQclear(first);
			return DBPOOL_ERR_CONN;
		}
	}
finished:
	if (cancelled) {
		PQclear(first);
		snprintf(err, errlen, "query timed out");
		return DBPOOL_TIMEOUT;
	}
	if (!first) {
		snprintf(err, errlen, "no result");
		return PQstatus(c->pc) == CONNECTION_OK ? DBPOOL_ERR_QUERY : DBPOOL_ERR_CONN;
	}
	enum dbpool_rc rc = DBPOOL_OK;
	ExecStatusType st = PQresultStatus(first);
	if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
		struct dbauth_row row;
		row_of_result(first, &row);
		dbauth_row_eval(&row, &cfg->c.pw, j->password, j->password_len, &j->res);
	} else {
		one_line(err, errlen, PQresultErrorMessage(first));
		rc = PQstatus(c->pc) == CONNECTION_OK ? DBPOOL_ERR_QUERY : DBPOOL_ERR_CONN;
	}
	PQclear(first);
	return rc;
}

static const struct dbpool_backend pg_backend = {
	.name = "postgresql",
	.connect = p_connect,
	.run = p_run,
	.close = p_close,
	.healthy = p_healthy,
	.interrupt = p_interrupt,
	.done = dbauth_job_done,
	.release = dbauth_job_release,
};

/* ---- authenticator ---- */

static struct authn *pg_create(const void *cfgp, const struct authn_env *env, const char *id, char *err, size_t errlen)
{
	const struct pg_cfg *cfg = cfgp;
	struct authn *a = xcalloc(1, sizeof *a);
	a->cfg = (struct pg_cfg *)cfg;
	a->base.id = xstrdup(id);
	a->base.cfg = &cfg->c;
	a->base.undefined_is_null = true;
	a->base.nparams = cfg->nnames;
	a->base.params = xcalloc(cfg->nnames + 1, sizeof *a->base.params);
	for (size_t i = 0; i < cfg->nnames; i++) {
		char *t = xasprintf("${%s}", cfg->names[i]);
		a->base.params[i] = tmpl_parse(t, tmpl_authn_vars);
		free(t);
	}
	dbauth_start_pool(&a->base, &pg_backend, (void *)cfg);
	return a;
}

static void pg_destroy(struct authn *a)
{
	if (!a)
		return;
	dbauth_fini(&a->base);
	free(a);
}

static void pg_authenticate(struct authn *a, struct authn_call *call)
{
	dbauth_authenticate(&a->base, call);
}

static const struct authn_ops pg_ops = {
	.mechanism = "password_based",
	.backend = "postgresql",
	.cacheable = true,
	.parse = pg_parse,
	.free_config = pg_free_config,
	.create = pg_create,
	.destroy = pg_destroy,
	.authenticate = pg_authenticate,
};

__attribute__((constructor)) static void pg_register(void)
{
	authn_register(&pg_ops);
}
