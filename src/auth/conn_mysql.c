/* The MySQL client of the authentication and authorization backends (see
 * auth/conn_mysql.h). */
#include "auth/conn_mysql.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <errmsg.h>
#include <mysql.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"

struct myc {
	MYSQL *m;
	MYSQL_STMT *st;   /* the query, prepared on first use */
	bool broken;
};

/* ---- config ---- */

bool conn_my_read_ssl(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	struct dbauth_common *c = target;
	if (!dbauth_read_ssl(r, m, target))
		return false;
	const struct hocon_member *at = c->ssl.sni_at;
	if (!c->ssl.enable || !at)
		return true;
	size_t old = cfgr_path_push(r, "server_name_indication");
	bool ok = true;
	if (c->ssl.sni_disable)
		log_warn("%s:%d: %s has no effect with MySQL (the client library decides)", cfgr_file(at), at->line,
			 r->path);
	else
		ok = cfgr_unsupported(r, at);
	cfgr_path_pop(r, old);
	return ok;
}

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;

static void lib_init(void)
{
	/* Not thread-safe itself: once, before any pool thread uses the library. */
	mysql_library_init(0, NULL, NULL);
}

void conn_my_library_init(void)
{
	pthread_once(&lib_once, lib_init);
}

/* ---- connections ---- */

static unsigned secs_ceil(uint64_t ms)
{
	uint64_t s = (ms + 999) / 1000;
	return s ? (unsigned)s : 1;
}

void *conn_my_connect(void *ctx, uint64_t deadline, char *err, size_t errlen)
{
	const struct dbauth_common *cfg = ctx;
	const struct dbauth_ssl *ssl = &cfg->ssl;
	MYSQL *m = mysql_init(NULL);
	if (!m) {
		snprintf(err, errlen, "cannot allocate a connection");
		return NULL;
	}
	unsigned proto = MYSQL_PROTOCOL_TCP;
	unsigned ct = secs_ceil(dbauth_ms_left(deadline));
	unsigned rt = secs_ceil(cfg->query_timeout_ms);
	my_bool no = 0, yes = 1;
	mysql_optionsv(m, MYSQL_OPT_PROTOCOL, &proto);
	mysql_optionsv(m, MYSQL_OPT_CONNECT_TIMEOUT, &ct);
	mysql_optionsv(m, MYSQL_OPT_READ_TIMEOUT, &rt);
	mysql_optionsv(m, MYSQL_OPT_WRITE_TIMEOUT, &rt);
	mysql_optionsv(m, MYSQL_OPT_RECONNECT, &no);
	mysql_optionsv(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
	if (ssl->enable) {
		if (ssl->keyfile)
			mysql_optionsv(m, MYSQL_OPT_SSL_KEY, ssl->keyfile);
		if (ssl->certfile)
			mysql_optionsv(m, MYSQL_OPT_SSL_CERT, ssl->certfile);
		if (ssl->cacertfile)
			mysql_optionsv(m, MYSQL_OPT_SSL_CA, ssl->cacertfile);
		mysql_optionsv(m, MYSQL_OPT_SSL_ENFORCE, &yes);
		mysql_optionsv(m, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, ssl->verify_peer ? &yes : &no);
	}
	if (!mysql_real_connect(m, cfg->host, cfg->username ? cfg->username : "", cfg->password, cfg->database,
				cfg->port, NULL, 0)) {
		snprintf(err, errlen, "%s", mysql_error(m));
		mysql_close(m);
		return NULL;
	}
	struct myc *c = xcalloc(1, sizeof *c);
	c->m = m;
	return c;
}

void conn_my_close(void *ctx, void *conn)
{
	struct myc *c = conn;
	if (c->st)
		mysql_stmt_close(c->st);
	mysql_close(c->m);
	free(c);
}

bool conn_my_healthy(void *ctx, void *conn)
{
	const struct myc *c = conn;
	return !c->broken;
}

void conn_my_interrupt(void *ctx, void *conn)
{
	struct myc *c = conn;
	my_socket fd = mysql_get_socket(c->m);
	if (fd >= 0)
		shutdown(fd, SHUT_RDWR);
}

/* ---- queries ---- */

/* Client-side errors (CR_*, 2000..2999) mean the connection is gone or unusable. */
static enum dbpool_rc classify(struct myc *c, unsigned e, uint64_t deadline, char *err, size_t errlen, const char *msg)
{
	snprintf(err, errlen, "%s", msg && msg[0] ? msg : "unknown error");
	if (e >= CR_MIN_ERROR && e <= CR_MAX_ERROR) {
		c->broken = true;
		if (clock_mono_ms() + 5 >= deadline) {
			snprintf(err, errlen, "query timed out");
			return DBPOOL_TIMEOUT;
		}
		return DBPOOL_ERR_CONN;
	}
	return DBPOOL_ERR_QUERY;
}

static enum dbpool_rc stmt_error(struct myc *c, MYSQL_STMT *st, uint64_t deadline, char *err, size_t errlen)
{
	return classify(c, mysql_stmt_errno(st), deadline, err, errlen, mysql_stmt_error(st));
}

static bool prepare(struct myc *c, const char *sql, size_t nparams, uint64_t deadline, char *err, size_t errlen,
		    enum dbpool_rc *rc)
{
	if (c->st)
		return true;
	MYSQL_STMT *st = mysql_stmt_init(c->m);
	if (!st) {
		*rc = classify(c, mysql_errno(c->m), deadline, err, errlen, mysql_error(c->m));
		return false;
	}
	if (mysql_stmt_prepare(st, sql, (unsigned long)strlen(sql))) {
		*rc = stmt_error(c, st, deadline, err, errlen);
		mysql_stmt_close(st);
		return false;
	}
	if (mysql_stmt_param_count(st) != nparams) {
		snprintf(err, errlen, "the query has %lu parameters, expected %zu (a literal ? in the query?)",
			 mysql_stmt_param_count(st), nparams);
		mysql_stmt_close(st);
		*rc = DBPOOL_ERR_QUERY;
		return false;
	}
	my_bool yes = 1;
	mysql_stmt_attr_set(st, STMT_ATTR_UPDATE_MAX_LENGTH, &yes);
	c->st = st;
	return true;
}

static enum dbauth_vtype vtype_of(enum enum_field_types t)
{
	switch (t) {
	case MYSQL_TYPE_TINY:
	case MYSQL_TYPE_SHORT:
	case MYSQL_TYPE_LONG:
	case MYSQL_TYPE_LONGLONG:
	case MYSQL_TYPE_INT24:
	case MYSQL_TYPE_YEAR:
	case MYSQL_TYPE_BIT:
		return DBAUTH_V_INT;
	default:
		return DBAUTH_V_TEXT;
	}
}

/* Hand every row of the executed statement (result stored) to rows. */
static enum dbpool_rc fetch_rows(struct myc *c, MYSQL_STMT *st, MYSQL_RES *meta, const struct conn_my_rows *rows,
				 uint64_t deadline, char *err, size_t errlen)
{
	unsigned nf = mysql_num_fields(meta);
	MYSQL_FIELD *fields = mysql_fetch_fields(meta);
	if (!nf)
		return DBPOOL_OK;
	size_t nc = rows->ncols;
	MYSQL_BIND *rb = xcalloc(nf, sizeof *rb);
	unsigned long *rlen = xcalloc(nf, sizeof *rlen);
	my_bool *rnull = xcalloc(nf, sizeof *rnull);
	int *col = xcalloc(nc, sizeof *col);
	struct dbauth_value *v = xcalloc(nc, sizeof *v);
	char **big = xcalloc(nc, sizeof *big); /* whole values of truncated columns */
	enum dbpool_rc rc = DBPOOL_OK;
	for (size_t k = 0; k < nc; k++)
		col[k] = -1;
	for (unsigned i = 0; i < nf; i++) {
		int k = rows->col_of(fields[i].name, strlen(fields[i].name));
		if (k >= 0 && (size_t)k < nc && col[k] < 0)
			col[k] = (int)i;
		unsigned long cap = fields[i].max_length > 64 ? fields[i].max_length : 64;
		rb[i].buffer_type = MYSQL_TYPE_STRING;
		rb[i].buffer = xmalloc(cap + 1);
		rb[i].buffer_length = cap;
		rb[i].length = &rlen[i];
		rb[i].is_null = &rnull[i];
	}
	if (mysql_stmt_bind_result(st, rb)) {
		rc = stmt_error(c, st, deadline, err, errlen);
		goto out;
	}
	for (size_t n = 0; !rows->max_rows || n < rows->max_rows; n++) {
		int f = mysql_stmt_fetch(st);
		if (f == MYSQL_NO_DATA)
			break;
		if (f == 1) {
			rc = stmt_error(c, st, deadline, err, errlen);
			goto out;
		}
		memset(v, 0, nc * sizeof *v);
		for (size_t k = 0; k < nc; k++) {
			if (col[k] < 0)
				continue; /* DBAUTH_V_ABSENT */
			unsigned i = (unsigned)col[k];
			if (rnull[i]) {
				v[k].type = DBAUTH_V_NULL;
				continue;
			}
			const char *s = rb[i].buffer;
			if (rlen[i] > rb[i].buffer_length) {
				/* Truncated (max_length makes it rare): fetch the whole value aside; the
				 * bound buffers stay as they are for the next rows. */
				MYSQL_BIND one;
				memset(&one, 0, sizeof one);
				big[k] = xmalloc(rlen[i] + 1);
				one.buffer_type = MYSQL_TYPE_STRING;
				one.buffer = big[k];
				one.buffer_length = rlen[i];
				if (mysql_stmt_fetch_column(st, &one, i, 0)) {
					rc = stmt_error(c, st, deadline, err, errlen);
					goto out;
				}
				s = big[k];
			}
			v[k].type = vtype_of(fields[i].type);
			v[k].s = s;
			v[k].len = rlen[i];
			if (fields[i].type == MYSQL_TYPE_BIT) {
				/* BIT(n) arrives as raw bytes: 1 when any bit is set. */
				bool any = false;
				for (unsigned long b = 0; b < rlen[i]; b++)
					any |= s[b] != 0;
				v[k].s = any ? "1" : "0";
				v[k].len = 1;
			}
		}
		rows->row(rows->arg, v);
		for (size_t k = 0; k < nc; k++) {
			free(big[k]);
			big[k] = NULL;
		}
	}
out:
	for (size_t k = 0; k < nc; k++)
		free(big[k]);
	for (unsigned i = 0; i < nf; i++)
		free(rb[i].buffer);
	free(rb);
	free(rlen);
	free(rnull);
	free(col);
	free(v);
	free(big);
	return rc;
}

enum dbpool_rc conn_my_query(void *conn, const char *sql, size_t nparams, char *const *param, const size_t *param_len,
			     uint64_t deadline, const struct conn_my_rows *rows, char *err, size_t errlen)
{
	struct myc *c = conn;
	enum dbpool_rc rc = DBPOOL_OK;
	if (!prepare(c, sql, nparams, deadline, err, errlen, &rc))
		return rc;
	MYSQL_STMT *st = c->st;
	MYSQL_BIND *pb = xcalloc(nparams + 1, sizeof *pb);
	unsigned long *plen = xcalloc(nparams + 1, sizeof *plen);
	for (size_t i = 0; i < nparams; i++) {
		if (!param[i]) {
			pb[i].buffer_type = MYSQL_TYPE_NULL;
			continue;
		}
		plen[i] = (unsigned long)param_len[i];
		pb[i].buffer_type = MYSQL_TYPE_STRING;
		pb[i].buffer = param[i];
		pb[i].buffer_length = plen[i];
		pb[i].length = &plen[i];
	}
	MYSQL_RES *meta = NULL;
	if ((nparams && mysql_stmt_bind_param(st, pb)) || mysql_stmt_execute(st)) {
		rc = stmt_error(c, st, deadline, err, errlen);
		goto out;
	}
	meta = mysql_stmt_result_metadata(st);
	if (!meta) /* not a SELECT: no rows */
		goto out;
	if (mysql_stmt_store_result(st)) {
		rc = stmt_error(c, st, deadline, err, errlen);
		goto out;
	}
	rc = fetch_rows(c, st, meta, rows, deadline, err, errlen);
out:
	if (meta) {
		mysql_free_result(meta);
		if (!c->broken)
			mysql_stmt_free_result(st);
	}
	free(pb);
	free(plen);
	return rc;
}
