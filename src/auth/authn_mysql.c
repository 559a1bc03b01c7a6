/* `mechanism = password_based, backend = mysql` (EMQX, reference/emqx.md §4.2-4.3):
 *
 *   authentication = [{
 *     mechanism = password_based, backend = mysql
 *     server = "127.0.0.1:3306", database = mqtt, username = bulwark, password = "secret"
 *     pool_size = 8, query_timeout = 5s
 *     ssl { enable = true, verify = verify_peer, cacertfile = "ca.pem" }
 *     query = "SELECT password_hash, salt, is_superuser FROM mqtt_user WHERE username = ${username} LIMIT 1"
 *     password_hash_algorithm { name = sha256, salt_position = prefix }
 *   }]
 *
 * The query is a prepared statement: placeholders become `?` parameters (tmpl_sql),
 * bound per request (an undefined one binds NULL); values never enter the SQL text. The
 * statement is prepared once per connection. The first row is used; columns
 * password_hash (or password), salt, is_superuser (integer, BIT or text),
 * clientid_override.
 *
 * MariaDB Connector/C (blocking API) runs on the pool threads (dbpool.h), always over TCP
 * (also for "localhost"); read/write timeouts are query_timeout, and the pool answers at
 * the deadline in any case.
 *
 * ssl: enforced when enabled; verify_peer checks the certificate chain (cacertfile) and
 * the server's host name. server_name_indication cannot be chosen with this client
 * library: a name is refused as not supported yet.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <errmsg.h>
#include <mysql.h>

#include "auth/authn.h"
#include "auth/dbpool.h"
#include "auth/dbpool_authn.h"
#include "auth/template.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"

struct my_cfg {
	struct dbauth_common c; /* first (dbpool_authn.h) */
	char *query;
	char *sql;        /* query with ? parameters */
	char **names;     /* parameter i is ${names[i]} */
	size_t nnames;
};

struct authn {
	struct dbauth base; /* first */
	struct my_cfg *cfg;
};

struct myc {
	MYSQL *m;
	MYSQL_STMT *st;   /* the query, prepared on first use */
	bool broken;
};

/* ---- config ---- */

static bool read_query(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	struct my_cfg *c = target;
	char *q = NULL, *sql = NULL, **names = NULL, err[200];
	size_t n = 0;
	if (!cfgr_string(r, m, &q))
		return false;
	if (!q[0]) {
		free(q);
		return cfgr_fail(r, m, "the query is empty");
	}
	if (!tmpl_sql(q, tmpl_authn_vars, TMPL_SQL_QUESTION, &sql, &names, &n, err, sizeof err)) {
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

static bool read_my_ssl(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	struct my_cfg *c = target;
	if (!dbauth_read_ssl(r, m, target))
		return false;
	const struct hocon_member *at = c->c.ssl.sni_at;
	if (!c->c.ssl.enable || !at)
		return true;
	size_t old = cfgr_path_push(r, "server_name_indication");
	bool ok = true;
	if (c->c.ssl.sni_disable)
		log_warn("%s:%d: %s has no effect with MySQL (the client library decides)", cfgr_file(at), at->line,
			 r->path);
	else
		ok = cfgr_unsupported(r, at);
	cfgr_path_pop(r, old);
	return ok;
}

static const struct cfg_field my_fields[] = {
	{ "ssl", CFG_F_CUSTOM, 0, 0, 0, NULL, read_my_ssl }, /* before the common "ssl" */
	DBAUTH_COMMON_FIELDS,
	{ "database", CFG_F_STRING, offsetof(struct dbauth_common, database), 0, 0, NULL, NULL },
	{ "query", CFG_F_CUSTOM, 0, 0, 0, NULL, read_query },
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

static void my_free_config(void *p)
{
	struct my_cfg *c = p;
	if (!c)
		return;
	dbauth_common_free(&c->c);
	free(c->query);
	free(c->sql);
	tmpl_sql_free_names(c->names);
	free(c);
}

static void *my_parse(struct cfg_reader *r, const struct hocon_member *m)
{
	struct my_cfg *c = xcalloc(1, sizeof *c);
	dbauth_common_init(&c->c);
	if (!cfgr_load_fields(r, m, m->value, my_fields, c))
		goto fail;
	if (!c->sql) {
		cfgr_fail(r, m, "query is required (e.g. \"SELECT password_hash, salt FROM mqtt_user WHERE username = "
				"${username} LIMIT 1\")");
		goto fail;
	}
	if (!dbauth_common_check(r, m, &c->c, 3306, true))
		goto fail;
	return c;
fail:
	my_free_config(c);
	return NULL;
}

/* ---- backend ---- */

static unsigned secs_ceil(uint64_t ms)
{
	uint64_t s = (ms + 999) / 1000;
	return s ? (unsigned)s : 1;
}

static void *m_connect(void *ctx, uint64_t deadline, char *err, size_t errlen)
{
	const struct my_cfg *cfg = ctx;
	const struct dbauth_ssl *ssl = &cfg->c.ssl;
	MYSQL *m = mysql_init(NULL);
	if (!m) {
		snprintf(err, errlen, "cannot allocate a connection");
		return NULL;
	}
	unsigned proto = MYSQL_PROTOCOL_TCP;
	unsigned ct = secs_ceil(dbauth_ms_left(deadline));
	unsigned rt = secs_ceil(cfg->c.query_timeout_ms);
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
	if (!mysql_real_connect(m, cfg->c.host, cfg->c.username ? cfg->c.username : "", cfg->c.password,
				cfg->c.database, cfg->c.port, NULL, 0)) {
		snprintf(err, errlen, "%s", mysql_error(m));
		mysql_close(m);
		return NULL;
	}
	struct myc *c = xcalloc(1, sizeof *c);
	c->m = m;
	return c;
}

static void m_close(void *ctx, void *conn)
{
	struct myc *c = conn;
	if (c->st)
		mysql_stmt_close(c->st);
	mysql_close(c->m);
	free(c);
}

static bool m_healthy(void *ctx, void *conn)
{
	const struct myc *c = conn;
	return !c->broken;
}

static void m_interrupt(void *ctx, void *conn)
{
	struct myc *c = conn;
	my_socket fd = mysql_get_socket(c->m);
	if (fd >= 0)
		shutdown(fd, SHUT_RDWR);
}

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

static bool prepare(const struct my_cfg *cfg, struct myc *c, uint64_t deadline, char *err, size_t errlen,
		    enum dbpool_rc *rc)
{
	if (c->st)
		return true;
	MYSQL_STMT *st = mysql_stmt_init(c->m);
	if (!st) {
		*rc = classify(c, mysql_errno(c->m), deadline, err, errlen, mysql_error(c->m));
		return false;
	}
	if (mysql_stmt_prepare(st, cfg->sql, (unsigned long)strlen(cfg->sql))) {
		*rc = classify(c, mysql_stmt_errno(st), deadline, err, errlen, mysql_stmt_error(st));
		mysql_stmt_close(st);
		return false;
	}
	if (mysql_stmt_param_count(st) != cfg->nnames) {
		snprintf(err, errlen, "the query has %lu parameters, expected %zu (a literal ? in the query?)",
			 mysql_stmt_param_count(st), cfg->nnames);
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

#define MAX_COLS 64

static enum dbpool_rc m_run(void *ctx, void *conn, void *job, uint64_t deadline, char *err, size_t errlen)
{
	const struct my_cfg *cfg = ctx;
	struct myc *c = conn;
	struct dbauth_job *j = job;
	enum dbpool_rc rc = DBPOOL_OK;
	if (!prepare(cfg, c, deadline, err, errlen, &rc))
		return rc;
	MYSQL_STMT *st = c->st;

	MYSQL_BIND *pb = xcalloc(j->nparams + 1, sizeof *pb);
	unsigned long *plen = xcalloc(j->nparams + 1, sizeof *plen);
	for (size_t i = 0; i < j->nparams; i++) {
		if (!j->param[i]) {
			pb[i].buffer_type = MYSQL_TYPE_NULL;
			continue;
		}
		plen[i] = (unsigned long)j->param_len[i];
		pb[i].buffer_type = MYSQL_TYPE_STRING;
		pb[i].buffer = j->param[i];
		pb[i].buffer_length = plen[i];
		pb[i].length = &plen[i];
	}
	MYSQL_RES *meta = NULL;
	MYSQL_BIND rb[MAX_COLS];
	unsigned long rlen[MAX_COLS];
	my_bool rnull[MAX_COLS];
	unsigned nf = 0;
	memset(rb, 0, sizeof rb);

	if ((j->nparams && mysql_stmt_bind_param(st, pb)) || mysql_stmt_execute(st)) {
		rc = classify(c, mysql_stmt_errno(st), deadline, err, errlen, mysql_stmt_error(st));
		goto out;
	}
	meta = mysql_stmt_result_metadata(st);
	struct dbauth_row row;
	memset(&row, 0, sizeof row);
	if (!meta) { /* not a SELECT: no row */
		dbauth_row_eval(&row, &cfg->c.pw, j->password, j->password_len, &j->res);
		goto out;
	}
	if (mysql_stmt_store_result(st)) {
		rc = classify(c, mysql_stmt_errno(st), deadline, err, errlen, mysql_stmt_error(st));
		goto out;
	}
	nf = mysql_num_fields(meta);
	if (nf > MAX_COLS)
		nf = MAX_COLS;
	MYSQL_FIELD *fields = mysql_fetch_fields(meta);
	for (unsigned i = 0; i < nf; i++) {
		unsigned long cap = fields[i].max_length > 64 ? fields[i].max_length : 64;
		rb[i].buffer_type = MYSQL_TYPE_STRING;
		rb[i].buffer = xmalloc(cap + 1);
		rb[i].buffer_length = cap;
		rb[i].length = &rlen[i];
		rb[i].is_null = &rnull[i];
	}
	if (nf && mysql_stmt_bind_result(st, rb)) {
		rc = classify(c, mysql_stmt_errno(st), deadline, err, errlen, mysql_stmt_error(st));
		goto out;
	}
	int f = nf ? mysql_stmt_fetch(st) : MYSQL_NO_DATA;
	if (f == 1) {
		rc = classify(c, mysql_stmt_errno(st), deadline, err, errlen, mysql_stmt_error(st));
		goto out;
	}
	if (f == 0 || f == MYSQL_DATA_TRUNCATED) {
		row.found = true;
		for (unsigned i = 0; i < nf; i++) {
			int k = dbauth_field_of(fields[i].name, strlen(fields[i].name));
			if (k < 0 || row.v[k].type != DBAUTH_V_ABSENT)
				continue;
			struct dbauth_value *v = &row.v[k];
			if (rnull[i]) {
				v->type = DBAUTH_V_NULL;
				continue;
			}
			if (rlen[i] > rb[i].buffer_length) { /* truncated: fetch the whole value */
				free(rb[i].buffer);
				rb[i].buffer = xmalloc(rlen[i] + 1);
				rb[i].buffer_length = rlen[i];
				if (mysql_stmt_fetch_column(st, &rb[i], i, 0)) {
					rc = classify(c, mysql_stmt_errno(st), deadline, err, errlen, mysql_stmt_error(st));
					goto out;
				}
			}
			char *s = rb[i].buffer;
			v->type = vtype_of(fields[i].type);
			v->s = s;
			v->len = rlen[i];
			if (fields[i].type == MYSQL_TYPE_BIT) {
				/* BIT(n) arrives as raw bytes: true when any bit is set. */
				bool any = false;
				for (unsigned long b = 0; b < rlen[i]; b++)
					any |= s[b] != 0;
				v->s = any ? "1" : "0";
				v->len = 1;
			}
		}
	}
	dbauth_row_eval(&row, &cfg->c.pw, j->password, j->password_len, &j->res);
out:
	if (meta) {
		mysql_free_result(meta);
		if (!c->broken)
			mysql_stmt_free_result(st);
	}
	for (unsigned i = 0; i < MAX_COLS; i++)
		free(rb[i].buffer);
	free(pb);
	free(plen);
	return rc;
}

static const struct dbpool_backend my_backend = {
	.name = "mysql",
	.connect = m_connect,
	.run = m_run,
	.close = m_close,
	.healthy = m_healthy,
	.interrupt = m_interrupt,
	.done = dbauth_job_done,
	.release = dbauth_job_release,
};

/* ---- authenticator ---- */

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;

static void lib_init(void)
{
	/* Not thread-safe itself: once, before any pool thread uses the library. */
	mysql_library_init(0, NULL, NULL);
}

static struct authn *my_create(const void *cfgp, const struct authn_env *env, const char *id, char *err, size_t errlen)
{
	const struct my_cfg *cfg = cfgp;
	pthread_once(&lib_once, lib_init);
	struct authn *a = xcalloc(1, sizeof *a);
	a->cfg = (struct my_cfg *)cfg;
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
	dbauth_start_pool(&a->base, &my_backend, (void *)cfg);
	return a;
}

static void my_destroy(struct authn *a)
{
	if (!a)
		return;
	dbauth_fini(&a->base);
	free(a);
}

static void my_authenticate(struct authn *a, struct authn_call *call)
{
	dbauth_authenticate(&a->base, call);
}

static const struct authn_ops my_ops = {
	.mechanism = "password_based",
	.backend = "mysql",
	.cacheable = true,
	.parse = my_parse,
	.free_config = my_free_config,
	.create = my_create,
	.destroy = my_destroy,
	.authenticate = my_authenticate,
};

__attribute__((constructor)) static void my_register(void)
{
	authn_register(&my_ops);
}
