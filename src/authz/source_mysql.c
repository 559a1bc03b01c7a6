/* `authorization.sources = [{type = mysql, ...}]` (EMQX 5.8, reference/emqx.md §5):
 *
 *   { type = mysql, enable = true
 *     server = "127.0.0.1:3306", database = mqtt, username = bulwark, password = "secret"
 *     pool_size = 8, query_timeout = 5s
 *     ssl { enable = true, verify = verify_peer, cacertfile = "ca.pem" }
 *     query = "SELECT permission, action, topic, qos, retain FROM mqtt_acl WHERE username = ${username}" }
 *
 * The query is a prepared statement (once per connection): placeholders (authz_tmpl_vars)
 * become `?` parameters (tmpl_sql), bound per request (an undefined one binds NULL);
 * values never enter the SQL text. Every row is a rule (columns permission, action,
 * topic, optional qos and retain; others ignored; source_db.h), tried in order: the first
 * matching row decides. qos may be an integer or a text list "0,1"; retain an integer
 * 0/1 (TINYINT(1), BIT(1)) or text.
 *
 * MariaDB Connector/C (blocking API) runs on the pool threads (auth/dbpool.h), over TCP,
 * with read/write timeouts of query_timeout, as the MySQL authenticator; ssl likewise
 * (server_name_indication cannot be chosen with this client library: refused).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <errmsg.h>
#include <mysql.h>

#include "auth/dbpool.h"
#include "auth/dbpool_authn.h"
#include "auth/template.h"
#include "authz/source.h"
#include "authz/source_db.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"

struct myz_cfg {
	struct dbauth_common c; /* first (dbpool_authn.h) */
	atomic_int refs;
	char *query;
	char *sql;              /* query with ? parameters */
	char **names;           /* parameter i is ${names[i]} */
	size_t nnames;
};

struct myz_source {
	struct azdb base; /* first */
	struct myz_cfg *cfg;
};

struct myz_conn {
	MYSQL *m;
	MYSQL_STMT *st;   /* the query, prepared on first use */
	bool broken;
};

/* ---- config ---- */

static bool myz_read_query(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	struct myz_cfg *c = target;
	char *q = NULL, *sql = NULL, **names = NULL, err[200];
	size_t n = 0;
	if (!cfgr_string(r, m, &q))
		return false;
	if (!q[0]) {
		free(q);
		return cfgr_fail(r, m, "the query is empty");
	}
	if (!tmpl_sql(q, authz_tmpl_vars, TMPL_SQL_QUESTION, &sql, &names, &n, err, sizeof err)) {
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

static bool myz_read_ssl(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	struct myz_cfg *c = target;
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

static const struct cfg_field myz_fields[] = {
	{ "ssl", CFG_F_CUSTOM, 0, 0, 0, NULL, myz_read_ssl }, /* before the common "ssl" */
	AZDB_COMMON_FIELDS,
	{ "database", CFG_F_STRING, offsetof(struct dbauth_common, database), 0, 0, NULL, NULL },
	{ "query", CFG_F_CUSTOM, 0, 0, 0, NULL, myz_read_query },
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

static void myz_cfg_unref(struct myz_cfg *c)
{
	if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
		return;
	dbauth_common_free(&c->c);
	free(c->query);
	free(c->sql);
	tmpl_sql_free_names(c->names);
	free(c);
}

static void myz_free_config(void *p)
{
	myz_cfg_unref(p);
}

static void *myz_parse(struct cfg_reader *r, const struct hocon_member *m)
{
	struct myz_cfg *c = xcalloc(1, sizeof *c);
	dbauth_common_init(&c->c);
	atomic_init(&c->refs, 1);
	if (!cfgr_load_fields(r, m, m->value, myz_fields, c))
		goto fail;
	if (!c->sql) {
		cfgr_fail(r, m, "query is required (e.g. \"SELECT permission, action, topic FROM mqtt_acl WHERE username = "
				"${username}\")");
		goto fail;
	}
	if (!dbauth_common_check(r, m, &c->c, 3306, true))
		goto fail;
	return c;
fail:
	myz_cfg_unref(c);
	return NULL;
}

/* ---- backend ---- */

static unsigned myz_secs_ceil(uint64_t ms)
{
	uint64_t s = (ms + 999) / 1000;
	return s ? (unsigned)s : 1;
}

static void *m_connect(void *ctx, uint64_t deadline, char *err, size_t errlen)
{
	const struct myz_cfg *cfg = ctx;
	const struct dbauth_ssl *ssl = &cfg->c.ssl;
	MYSQL *m = mysql_init(NULL);
	if (!m) {
		snprintf(err, errlen, "cannot allocate a connection");
		return NULL;
	}
	unsigned proto = MYSQL_PROTOCOL_TCP;
	unsigned ct = myz_secs_ceil(dbauth_ms_left(deadline));
	unsigned rt = myz_secs_ceil(cfg->c.query_timeout_ms);
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
	struct myz_conn *c = xcalloc(1, sizeof *c);
	c->m = m;
	return c;
}

static void m_close(void *ctx, void *conn)
{
	struct myz_conn *c = conn;
	if (c->st)
		mysql_stmt_close(c->st);
	mysql_close(c->m);
	free(c);
}

static bool m_healthy(void *ctx, void *conn)
{
	const struct myz_conn *c = conn;
	return !c->broken;
}

static void m_interrupt(void *ctx, void *conn)
{
	struct myz_conn *c = conn;
	my_socket fd = mysql_get_socket(c->m);
	if (fd >= 0)
		shutdown(fd, SHUT_RDWR);
}

/* Client-side errors (CR_*, 2000..2999) mean the connection is gone or unusable. */
static enum dbpool_rc myz_classify(struct myz_conn *c, unsigned e, uint64_t deadline, char *err, size_t errlen,
				   const char *msg)
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

static bool myz_prepare(const struct myz_cfg *cfg, struct myz_conn *c, uint64_t deadline, char *err, size_t errlen,
			enum dbpool_rc *rc)
{
	if (c->st)
		return true;
	MYSQL_STMT *st = mysql_stmt_init(c->m);
	if (!st) {
		*rc = myz_classify(c, mysql_errno(c->m), deadline, err, errlen, mysql_error(c->m));
		return false;
	}
	if (mysql_stmt_prepare(st, cfg->sql, (unsigned long)strlen(cfg->sql))) {
		*rc = myz_classify(c, mysql_stmt_errno(st), deadline, err, errlen, mysql_stmt_error(st));
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

static enum dbauth_vtype myz_vtype(enum enum_field_types t)
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

/* Every row of the executed statement (result stored) as a rule into j. */
static enum dbpool_rc myz_fetch_rules(struct myz_conn *c, MYSQL_STMT *st, MYSQL_RES *meta, struct azdb_job *j,
				      uint64_t deadline, char *err, size_t errlen)
{
	unsigned nf = mysql_num_fields(meta);
	MYSQL_FIELD *fields = mysql_fetch_fields(meta);
	if (!nf)
		return DBPOOL_OK;
	MYSQL_BIND *rb = xcalloc(nf, sizeof *rb);
	unsigned long *rlen = xcalloc(nf, sizeof *rlen);
	my_bool *rnull = xcalloc(nf, sizeof *rnull);
	int col[AZDB_C_COUNT];
	enum dbpool_rc rc = DBPOOL_OK;
	for (int k = 0; k < AZDB_C_COUNT; k++)
		col[k] = -1;
	for (unsigned i = 0; i < nf; i++) {
		int k = azdb_col_of(fields[i].name, strlen(fields[i].name));
		if (k >= 0 && col[k] < 0)
			col[k] = (int)i;
		unsigned long cap = fields[i].max_length > 64 ? fields[i].max_length : 64;
		rb[i].buffer_type = MYSQL_TYPE_STRING;
		rb[i].buffer = xmalloc(cap + 1);
		rb[i].buffer_length = cap;
		rb[i].length = &rlen[i];
		rb[i].is_null = &rnull[i];
	}
	if (mysql_stmt_bind_result(st, rb)) {
		rc = myz_classify(c, mysql_stmt_errno(st), deadline, err, errlen, mysql_stmt_error(st));
		goto out;
	}
	for (;;) {
		int f = mysql_stmt_fetch(st);
		if (f == MYSQL_NO_DATA)
			break;
		if (f == 1) {
			rc = myz_classify(c, mysql_stmt_errno(st), deadline, err, errlen, mysql_stmt_error(st));
			goto out;
		}
		struct azdb_row row;
		char *big[AZDB_C_COUNT] = { 0 }; /* whole values of truncated columns */
		memset(&row, 0, sizeof row);
		for (int k = 0; k < AZDB_C_COUNT; k++) {
			if (col[k] < 0)
				continue;
			unsigned i = (unsigned)col[k];
			struct dbauth_value *v = &row.v[k];
			if (rnull[i]) {
				v->type = DBAUTH_V_NULL;
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
					for (int b = 0; b <= k; b++)
						free(big[b]);
					rc = myz_classify(c, mysql_stmt_errno(st), deadline, err, errlen, mysql_stmt_error(st));
					goto out;
				}
				s = big[k];
			}
			v->type = myz_vtype(fields[i].type);
			v->s = s;
			v->len = rlen[i];
			if (fields[i].type == MYSQL_TYPE_BIT) {
				/* BIT(n) arrives as raw bytes: 1 when any bit is set. */
				bool any = false;
				for (unsigned long b = 0; b < rlen[i]; b++)
					any |= s[b] != 0;
				v->s = any ? "1" : "0";
				v->len = 1;
			}
		}
		azdb_job_add_row(j, &row);
		for (int k = 0; k < AZDB_C_COUNT; k++)
			free(big[k]);
	}
out:
	for (unsigned i = 0; i < nf; i++)
		free(rb[i].buffer);
	free(rb);
	free(rlen);
	free(rnull);
	return rc;
}

static enum dbpool_rc m_run(void *ctx, void *conn, void *job, uint64_t deadline, char *err, size_t errlen)
{
	const struct myz_cfg *cfg = ctx;
	struct myz_conn *c = conn;
	struct azdb_job *j = job;
	enum dbpool_rc rc = DBPOOL_OK;
	if (!myz_prepare(cfg, c, deadline, err, errlen, &rc))
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
	if ((j->nparams && mysql_stmt_bind_param(st, pb)) || mysql_stmt_execute(st)) {
		rc = myz_classify(c, mysql_stmt_errno(st), deadline, err, errlen, mysql_stmt_error(st));
		goto out;
	}
	meta = mysql_stmt_result_metadata(st);
	if (!meta) /* not a SELECT: no rows */
		goto out;
	if (mysql_stmt_store_result(st)) {
		rc = myz_classify(c, mysql_stmt_errno(st), deadline, err, errlen, mysql_stmt_error(st));
		goto out;
	}
	rc = myz_fetch_rules(c, st, meta, j, deadline, err, errlen);
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

static const struct dbpool_backend myz_backend = {
	.name = "mysql",
	.connect = m_connect,
	.run = m_run,
	.close = m_close,
	.healthy = m_healthy,
	.interrupt = m_interrupt,
	.done = azdb_job_done,
	.release = azdb_job_release,
};

/* ---- source ---- */

static pthread_once_t myz_lib_once = PTHREAD_ONCE_INIT;

static void myz_lib_init(void)
{
	/* Not thread-safe itself: once, before any pool thread uses the library (start-up runs
	 * on the main thread, so this never races with the authenticator's own call). */
	mysql_library_init(0, NULL, NULL);
}

static struct authz_source *myz_create(const void *cfgp, const struct authz_env *env, char *err, size_t errlen)
{
	struct myz_cfg *cfg = (struct myz_cfg *)cfgp;
	pthread_once(&myz_lib_once, myz_lib_init);
	struct myz_source *s = xcalloc(1, sizeof *s);
	atomic_fetch_add(&cfg->refs, 1);
	s->cfg = cfg;
	s->base.type = "mysql";
	s->base.id = xstrdup("authorization mysql");
	s->base.cfg = &cfg->c;
	s->base.undefined_is_null = true;
	s->base.nparams = cfg->nnames;
	s->base.params = xcalloc(cfg->nnames + 1, sizeof *s->base.params);
	for (size_t i = 0; i < cfg->nnames; i++)
		s->base.params[i] = azdb_param_tmpl(cfg->names[i]);
	azdb_start_pool(&s->base, &myz_backend, cfg);
	return (struct authz_source *)s;
}

static void myz_destroy(struct authz_source *as)
{
	struct myz_source *s = (struct myz_source *)as;
	if (!s)
		return;
	azdb_fini(&s->base);
	myz_cfg_unref(s->cfg);
	free(s);
}

static void myz_start(struct authz_source *s, struct authz_call *call)
{
	azdb_start(&((struct myz_source *)s)->base, call);
}

static const struct authz_source_ops myz_ops = {
	.type = "mysql",
	.async = true,
	.parse = myz_parse,
	.free_config = myz_free_config,
	.create = myz_create,
	.destroy = myz_destroy,
	.start = myz_start,
};

__attribute__((constructor)) static void myz_register(void)
{
	authz_source_register(&myz_ops);
}
