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
 * MariaDB Connector/C (blocking API) runs on the pool threads (auth/dbpool.h) through
 * auth/conn_mysql.h, over TCP, with read/write timeouts of query_timeout, as the MySQL
 * authenticator; ssl likewise
 * (server_name_indication cannot be chosen with this client library: refused).
 */
#include <stdlib.h>
#include <string.h>

#include "auth/conn_mysql.h"
#include "auth/conn_sql.h"
#include "auth/dbpool.h"
#include "auth/dbpool_authn.h"
#include "auth/template.h"
#include "authz/source.h"
#include "authz/source_db.h"
#include "core/alloc.h"

struct myz_source {
	struct azdb base; /* first */
	struct conn_sql_cfg *cfg;
};

/* ---- config ---- */

static bool myz_read_query(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	return conn_sql_read_query(r, m, target, authz_tmpl_vars, TMPL_SQL_QUESTION);
}

static const struct cfg_field myz_fields[] = {
	{ "ssl", CFG_F_CUSTOM, 0, 0, 0, NULL, conn_my_read_ssl }, /* before the common "ssl" */
	AZDB_COMMON_FIELDS,
	{ "database", CFG_F_STRING, offsetof(struct dbauth_common, database), 0, 0, NULL, NULL },
	{ "query", CFG_F_CUSTOM, 0, 0, 0, NULL, myz_read_query },
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

static void myz_free_config(void *p)
{
	conn_sql_cfg_unref(p);
}

static void *myz_parse(struct cfg_reader *r, const struct hocon_member *m)
{
	return conn_sql_parse(r, m, myz_fields, 3306,
			      "SELECT permission, action, topic FROM mqtt_acl WHERE username = ${username}");
}

/* ---- backend ---- */

static void myz_on_row(void *arg, const struct dbauth_value *v)
{
	struct azdb_row row;
	memcpy(row.v, v, sizeof row.v);
	azdb_job_add_row(arg, &row);
}

static enum dbpool_rc myz_run(void *ctx, void *conn, void *job, uint64_t deadline, char *err, size_t errlen)
{
	const struct conn_sql_cfg *cfg = ctx;
	struct azdb_job *j = job;
	const struct conn_my_rows rows = {
		.col_of = azdb_col_of, .ncols = AZDB_C_COUNT, .max_rows = 0, .row = myz_on_row, .arg = j,
	};
	return conn_my_query(conn, cfg->sql, j->nparams, j->param, j->param_len, deadline, &rows, err, errlen);
}

static const struct dbpool_backend myz_backend = {
	.name = "mysql",
	.connect = conn_my_connect,
	.run = myz_run,
	.close = conn_my_close,
	.healthy = conn_my_healthy,
	.interrupt = conn_my_interrupt,
	.done = azdb_job_done,
	.release = azdb_job_release,
};

/* ---- source ---- */

static struct authz_source *myz_create(const void *cfgp, const struct authz_env *env, char *err, size_t errlen)
{
	struct conn_sql_cfg *cfg = (struct conn_sql_cfg *)cfgp;
	conn_my_library_init();
	struct myz_source *s = xcalloc(1, sizeof *s);
	conn_sql_cfg_ref(cfg);
	s->cfg = cfg;
	s->base.type = "mysql";
	s->base.id = xstrdup("authorization mysql");
	s->base.cfg = &cfg->c;
	s->base.undefined_is_null = true;
	s->base.nparams = cfg->nnames;
	s->base.params = conn_sql_params(cfg, authz_tmpl_vars);
	azdb_start_pool(&s->base, &myz_backend, cfg);
	return (struct authz_source *)s;
}

static void myz_destroy(struct authz_source *as)
{
	struct myz_source *s = (struct myz_source *)as;
	if (!s)
		return;
	azdb_fini(&s->base);
	conn_sql_cfg_unref(s->cfg);
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
