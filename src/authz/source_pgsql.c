/* `authorization.sources = [{type = postgresql, ...}]` (EMQX 5.8, reference/emqx.md §5):
 *
 *   { type = postgresql, enable = true
 *     server = "127.0.0.1:5432", database = mqtt, username = bulwark, password = "secret"
 *     pool_size = 8, query_timeout = 5s
 *     ssl { enable = true, verify = verify_peer, cacertfile = "ca.pem" }
 *     query = "SELECT permission, action, topic, qos, retain FROM mqtt_acl WHERE username = ${username}" }
 *
 * Placeholders (authz_tmpl_vars) become bind parameters $1, $2, ... (tmpl_sql): values
 * never enter the SQL text; an undefined one binds NULL. Every row is a rule (columns
 * permission, action, topic, optional qos and retain; others ignored; source_db.h), tried
 * in order: the first matching row decides. qos may be an integer, a text list "0,1" or an
 * integer array; retain a boolean, an integer 0/1 or text.
 *
 * libpq runs on the pool threads (auth/dbpool.h), polled against the request's deadline
 * (cancelled with PQcancel at the deadline), exactly as the PostgreSQL authenticator.
 * ssl: verify_none -> sslmode=require; verify_peer -> sslmode=verify-full against
 * cacertfile (the name checked is server_name_indication when set, else the host);
 * server_name_indication = disable -> sslsni=0.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <libpq-fe.h>

#include "auth/dbpool.h"
#include "auth/dbpool_authn.h"
#include "auth/template.h"
#include "authz/source.h"
#include "authz/source_db.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"

/* Type OIDs (catalog/pg_type.h, stable). */
#define PGZ_BOOLOID 16
#define PGZ_INT8OID 20
#define PGZ_INT2OID 21
#define PGZ_INT4OID 23
#define PGZ_INT2ARRAYOID 1005
#define PGZ_INT4ARRAYOID 1007
#define PGZ_TEXTARRAYOID 1009
#define PGZ_VARCHARARRAYOID 1015
#define PGZ_INT8ARRAYOID 1016

#define PGZ_CANCEL_GRACE_MS 1000

struct pgz_cfg {
	struct dbauth_common c; /* first (dbpool_authn.h) */
	atomic_int refs;
	char *query;
	char *sql;              /* query with $n parameters */
	char **names;           /* parameter i+1 is ${names[i]} */
	size_t nnames;
};

struct pgz_source {
	struct azdb base; /* first */
	struct pgz_cfg *cfg;
};

struct pgz_conn {
	PGconn *pc;
	bool broken;
};

/* ---- config ---- */

static bool pgz_read_query(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	struct pgz_cfg *c = target;
	char *q = NULL, *sql = NULL, **names = NULL, err[200];
	size_t n = 0;
	if (!cfgr_string(r, m, &q))
		return false;
	if (!q[0]) {
		free(q);
		return cfgr_fail(r, m, "the query is empty");
	}
	if (!tmpl_sql(q, authz_tmpl_vars, TMPL_SQL_DOLLAR, &sql, &names, &n, err, sizeof err)) {
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

static const struct cfg_field pgz_fields[] = {
	AZDB_COMMON_FIELDS,
	{ "database", CFG_F_STRING, offsetof(struct dbauth_common, database), 0, 0, NULL, NULL },
	{ "query", CFG_F_CUSTOM, 0, 0, 0, NULL, pgz_read_query },
	{ "disable_prepared_statements", CFG_F_IGNORED, 0, 0, 0, NULL, NULL }, /* never named statements */
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

static void pgz_cfg_unref(struct pgz_cfg *c)
{
	if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
		return;
	dbauth_common_free(&c->c);
	free(c->query);
	free(c->sql);
	tmpl_sql_free_names(c->names);
	free(c);
}

static void pgz_free_config(void *p)
{
	pgz_cfg_unref(p);
}

static void *pgz_parse(struct cfg_reader *r, const struct hocon_member *m)
{
	struct pgz_cfg *c = xcalloc(1, sizeof *c);
	dbauth_common_init(&c->c);
	atomic_init(&c->refs, 1);
	if (!cfgr_load_fields(r, m, m->value, pgz_fields, c))
		goto fail;
	if (!c->sql) {
		cfgr_fail(r, m, "query is required (e.g. \"SELECT permission, action, topic FROM mqtt_acl WHERE username = "
				"${username}\")");
		goto fail;
	}
	if (!dbauth_common_check(r, m, &c->c, 5432, true))
		goto fail;
	return c;
fail:
	pgz_cfg_unref(c);
	return NULL;
}

/* ---- backend ---- */

/* libpq messages end with newlines and may span lines: one line, trimmed. */
static void pgz_one_line(char *dst, size_t dstlen, const char *msg)
{
	snprintf(dst, dstlen, "%s", msg && msg[0] ? msg : "unknown error");
	for (char *p = dst; *p; p++)
		if (*p == '\n' || *p == '\r' || *p == '\t')
			*p = ' ';
	size_t l = strlen(dst);
	while (l && dst[l - 1] == ' ')
		dst[--l] = '\0';
}

static void pgz_quiet_notices(void *arg, const char *msg)
{
}

/* Wait until fd is ready for ev or deadline: 1 ready, 0 timeout, -1 error. */
static int pgz_wait_fd(int fd, short ev, uint64_t deadline)
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
	const struct pgz_cfg *cfg = ctx;
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
			pgz_one_line(err, errlen, PQerrorMessage(pc));
			goto fail;
		}
		int w = pgz_wait_fd(PQsocket(pc), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline);
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
	PQsetNoticeProcessor(pc, pgz_quiet_notices, NULL);
	struct pgz_conn *c = xcalloc(1, sizeof *c);
	c->pc = pc;
	return c;
fail:
	PQfinish(pc);
	return NULL;
}

static void p_close(void *ctx, void *conn)
{
	struct pgz_conn *c = conn;
	PQfinish(c->pc);
	free(c);
}

static bool p_healthy(void *ctx, void *conn)
{
	const struct pgz_conn *c = conn;
	return !c->broken && PQstatus(c->pc) == CONNECTION_OK;
}

static void p_interrupt(void *ctx, void *conn)
{
	const struct pgz_conn *c = conn;
	int fd = PQsocket(c->pc);
	if (fd >= 0)
		shutdown(fd, SHUT_RDWR);
}

static void pgz_cancel(PGconn *pc)
{
	PGcancel *cn = PQgetCancel(pc);
	char buf[256];
	if (cn) {
		PQcancel(cn, buf, sizeof buf);
		PQfreeCancel(cn);
	}
}

/* An array's text form "{0,1}" / {"a","b"} as a plain list "0,1" into out (NUL-terminated),
 * or NULL when it does not fit. */
static const char *pgz_array_list(const char *s, size_t len, char *out, size_t outlen, size_t *olen)
{
	if (len < 2 || s[0] != '{' || s[len - 1] != '}')
		return NULL;
	size_t n = 0;
	for (size_t i = 1; i + 1 < len; i++) {
		if (s[i] == '"')
			continue;
		if (n + 1 >= outlen)
			return NULL;
		out[n++] = s[i];
	}
	out[n] = '\0';
	*olen = n;
	return out;
}

/* Every tuple of res as a rule into j. */
static void pgz_rules_of_result(const PGresult *res, struct azdb_job *j)
{
	int col[AZDB_C_COUNT];
	Oid type[AZDB_C_COUNT] = { 0 };
	for (int k = 0; k < AZDB_C_COUNT; k++)
		col[k] = -1;
	int nf = PQnfields(res);
	for (int i = 0; i < nf; i++) {
		const char *name = PQfname(res, i);
		int k = azdb_col_of(name, strlen(name));
		if (k >= 0 && col[k] < 0) {
			col[k] = i;
			type[k] = PQftype(res, i);
		}
	}
	int nt = PQntuples(res);
	for (int t = 0; t < nt; t++) {
		struct azdb_row row;
		char scratch[AZDB_C_COUNT][64];
		memset(&row, 0, sizeof row);
		for (int k = 0; k < AZDB_C_COUNT; k++) {
			struct dbauth_value *v = &row.v[k];
			if (col[k] < 0)
				continue; /* DBAUTH_V_ABSENT */
			if (PQgetisnull(res, t, col[k])) {
				v->type = DBAUTH_V_NULL;
				continue;
			}
			Oid o = type[k];
			v->s = PQgetvalue(res, t, col[k]);
			v->len = (size_t)PQgetlength(res, t, col[k]);
			v->type = o == PGZ_BOOLOID ? DBAUTH_V_BOOL
				  : (o == PGZ_INT2OID || o == PGZ_INT4OID || o == PGZ_INT8OID) ? DBAUTH_V_INT
											    : DBAUTH_V_TEXT;
			if (o == PGZ_INT2ARRAYOID || o == PGZ_INT4ARRAYOID || o == PGZ_INT8ARRAYOID ||
			    o == PGZ_TEXTARRAYOID || o == PGZ_VARCHARARRAYOID) {
				size_t l = 0;
				const char *s = pgz_array_list(v->s, v->len, scratch[k], sizeof scratch[k], &l);
				if (s) {
					v->s = s;
					v->len = l;
				}
			}
		}
		azdb_job_add_row(j, &row);
	}
}

static enum dbpool_rc p_run(void *ctx, void *conn, void *job, uint64_t deadline, char *err, size_t errlen)
{
	const struct pgz_cfg *cfg = ctx;
	struct pgz_conn *c = conn;
	struct azdb_job *j = job;
	/* PostgreSQL text cannot hold NUL: a value with one matches no row. */
	for (size_t i = 0; i < j->nparams; i++)
		if (j->param[i] && memchr(j->param[i], 0, j->param_len[i]))
			return DBPOOL_OK;
	if (!PQsendQueryParams(c->pc, cfg->sql, (int)j->nparams, NULL, (const char *const *)j->param, NULL, NULL, 0)) {
		pgz_one_line(err, errlen, PQerrorMessage(c->pc));
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
		int w = pgz_wait_fd(PQsocket(c->pc), POLLIN, until);
		if (w == 0 && !cancelled) {
			/* Deadline: cancel the statement, wait a moment for the connection to settle. */
			pgz_cancel(c->pc);
			cancelled = true;
			until = clock_mono_ms() + PGZ_CANCEL_GRACE_MS;
			continue;
		}
		if (w == 0) {
			c->broken = true;
			break;
		}
		if (w < 0 || !PQconsumeInput(c->pc)) {
			pgz_one_line(err, errlen, w < 0 ? strerror(errno) : PQerrorMessage(c->pc));
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
	if (st == PGRES_TUPLES_OK) {
		pgz_rules_of_result(first, j);
	} else if (st != PGRES_COMMAND_OK) {
		pgz_one_line(err, errlen, PQresultErrorMessage(first));
		rc = PQstatus(c->pc) == CONNECTION_OK ? DBPOOL_ERR_QUERY : DBPOOL_ERR_CONN;
	}
	PQclear(first);
	return rc;
}

static const struct dbpool_backend pgz_backend = {
	.name = "postgresql",
	.connect = p_connect,
	.run = p_run,
	.close = p_close,
	.healthy = p_healthy,
	.interrupt = p_interrupt,
	.done = azdb_job_done,
	.release = azdb_job_release,
};

/* ---- source ---- */

static struct authz_source *pgz_create(const void *cfgp, const struct authz_env *env, char *err, size_t errlen)
{
	struct pgz_cfg *cfg = (struct pgz_cfg *)cfgp;
	struct pgz_source *s = xcalloc(1, sizeof *s);
	atomic_fetch_add(&cfg->refs, 1);
	s->cfg = cfg;
	s->base.type = "postgresql";
	s->base.id = xstrdup("authorization postgresql");
	s->base.cfg = &cfg->c;
	s->base.undefined_is_null = true;
	s->base.nparams = cfg->nnames;
	s->base.params = xcalloc(cfg->nnames + 1, sizeof *s->base.params);
	for (size_t i = 0; i < cfg->nnames; i++)
		s->base.params[i] = azdb_param_tmpl(cfg->names[i]);
	azdb_start_pool(&s->base, &pgz_backend, cfg);
	return (struct authz_source *)s;
}

static void pgz_destroy(struct authz_source *as)
{
	struct pgz_source *s = (struct pgz_source *)as;
	if (!s)
		return;
	azdb_fini(&s->base);
	pgz_cfg_unref(s->cfg);
	free(s);
}

static void pgz_start(struct authz_source *s, struct authz_call *call)
{
	azdb_start(&((struct pgz_source *)s)->base, call);
}

static const struct authz_source_ops pgz_ops = {
	.type = "postgresql",
	.async = true,
	.parse = pgz_parse,
	.free_config = pgz_free_config,
	.create = pgz_create,
	.destroy = pgz_destroy,
	.start = pgz_start,
};

__attribute__((constructor)) static void pgz_register(void)
{
	authz_source_register(&pgz_ops);
}
