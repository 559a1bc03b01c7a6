/* The PostgreSQL client of the authentication and authorization backends (see
 * auth/conn_pgsql.h). */
#include "auth/conn_pgsql.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/alloc.h"
#include "core/clock.h"

/* Type OIDs (catalog/pg_type.h, stable). */
#define PG_BOOLOID 16
#define PG_INT8OID 20
#define PG_INT2OID 21
#define PG_INT4OID 23

#define CANCEL_GRACE_MS 1000

struct pgc {
	PGconn *pc;
	bool broken;
};

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

void *conn_pg_connect(void *ctx, uint64_t deadline, char *err, size_t errlen)
{
	const struct dbauth_common *cfg = ctx;
	const struct dbauth_ssl *ssl = &cfg->ssl;
	const char *kw[20], *val[20];
	int n = 0;
	char port[8], hostaddr[INET6_ADDRSTRLEN] = "";
	snprintf(port, sizeof port, "%u", cfg->port);
#define KV(k, v) do { kw[n] = (k); val[n] = (v); n++; } while (0)
	if (ssl->enable && ssl->sni) {
		/* The name to send and verify differs from where to connect. */
		struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
		int e = getaddrinfo(cfg->host, NULL, &hints, &res);
		if (e || !res) {
			snprintf(err, errlen, "cannot resolve %s: %s", cfg->host, gai_strerror(e));
			return NULL;
		}
		const void *addr = res->ai_family == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr
							      : (const void *)&((struct sockaddr_in *)res->ai_addr)->sin_addr;
		inet_ntop(res->ai_family, addr, hostaddr, sizeof hostaddr);
		freeaddrinfo(res);
		KV("host", ssl->sni);
		KV("hostaddr", hostaddr);
	} else {
		KV("host", cfg->host);
	}
	KV("port", port);
	KV("dbname", cfg->database);
	if (cfg->username && cfg->username[0])
		KV("user", cfg->username);
	if (cfg->password)
		KV("password", cfg->password);
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

void conn_pg_close(void *ctx, void *conn)
{
	struct pgc *c = conn;
	PQfinish(c->pc);
	free(c);
}

bool conn_pg_healthy(void *ctx, void *conn)
{
	const struct pgc *c = conn;
	return !c->broken && PQstatus(c->pc) == CONNECTION_OK;
}

void conn_pg_interrupt(void *ctx, void *conn)
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

enum dbpool_rc conn_pg_query(void *conn, const char *sql, size_t nparams, char *const *param, const size_t *param_len,
			     uint64_t deadline, PGresult **res, char *err, size_t errlen)
{
	struct pgc *c = conn;
	*res = NULL;
	/* PostgreSQL text cannot hold NUL: a value with one matches no row. */
	for (size_t i = 0; i < nparams; i++)
		if (param[i] && memchr(param[i], 0, param_len[i]))
			return DBPOOL_OK;
	if (!PQsendQueryParams(c->pc, sql, (int)nparams, NULL, (const char *const *)param, NULL, NULL, 0)) {
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
	ExecStatusType st = PQresultStatus(first);
	if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
		*res = first;
		return DBPOOL_OK;
	}
	one_line(err, errlen, PQresultErrorMessage(first));
	enum dbpool_rc rc = PQstatus(c->pc) == CONNECTION_OK ? DBPOOL_ERR_QUERY : DBPOOL_ERR_CONN;
	PQclear(first);
	return rc;
}

void conn_pg_value(const PGresult *res, int tuple, int col, struct dbauth_value *v)
{
	if (PQgetisnull(res, tuple, col)) {
		v->type = DBAUTH_V_NULL;
		return;
	}
	Oid t = PQftype(res, col);
	v->type = t == PG_BOOLOID ? DBAUTH_V_BOOL
		  : (t == PG_INT2OID || t == PG_INT4OID || t == PG_INT8OID) ? DBAUTH_V_INT
									     : DBAUTH_V_TEXT;
	v->s = PQgetvalue(res, tuple, col);
	v->len = (size_t)PQgetlength(res, tuple, col);
}
