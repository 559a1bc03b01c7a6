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
 * MariaDB Connector/C (blocking API) runs on the pool threads (dbpool.h) through
 * auth/conn_mysql.h, always over TCP (also for "localhost"); read/write timeouts are query_timeout, and the pool answers at
 * the deadline in any case.
 *
 * ssl: enforced when enabled; verify_peer checks the certificate chain (cacertfile) and
 * the server's host name. server_name_indication cannot be chosen with this client
 * library: a name is refused as not supported yet.
 */
#include <stdlib.h>
#include <string.h>

#include "auth/authn.h"
#include "auth/conn_mysql.h"
#include "auth/conn_sql.h"
#include "auth/dbpool.h"
#include "auth/dbpool_authn.h"
#include "auth/template.h"
#include "core/alloc.h"

struct authn {
	struct dbauth base; /* first */
	struct conn_sql_cfg *cfg;
};

/* ---- config ---- */

static bool read_query(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	return conn_sql_read_query(r, m, target, tmpl_authn_vars, TMPL_SQL_QUESTION);
}

static const struct cfg_field my_fields[] = {
	{ "ssl", CFG_F_CUSTOM, 0, 0, 0, NULL, conn_my_read_ssl }, /* before the common "ssl" */
	DBAUTH_COMMON_FIELDS,
	{ "database", CFG_F_STRING, offsetof(struct dbauth_common, database), 0, 0, NULL, NULL },
	{ "query", CFG_F_CUSTOM, 0, 0, 0, NULL, read_query },
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

static void my_free_config(void *p)
{
	conn_sql_cfg_unref(p);
}

static void *my_parse(struct cfg_reader *r, const struct hocon_member *m)
{
	return conn_sql_parse(r, m, my_fields, 3306,
			      "SELECT password_hash, salt FROM mqtt_user WHERE username = ${username} LIMIT 1");
}

/* ---- backend ---- */

struct my_answer {
	const struct conn_sql_cfg *cfg;
	struct dbauth_job *j;
	bool found;
};

/* The first row decides (conn_my_query stops after it). */
static void on_row(void *arg, const struct dbauth_value *v)
{
	struct my_answer *a = arg;
	struct dbauth_row row = { .found = true };
	memcpy(row.v, v, sizeof row.v);
	a->found = true;
	dbauth_row_eval(&row, &a->cfg->c.pw, a->j->password, a->j->password_len, &a->j->res);
}

static enum dbpool_rc m_run(void *ctx, void *conn, void *job, uint64_t deadline, char *err, size_t errlen)
{
	const struct conn_sql_cfg *cfg = ctx;
	struct dbauth_job *j = job;
	struct my_answer a = { .cfg = cfg, .j = j };
	const struct conn_my_rows rows = {
		.col_of = dbauth_field_of, .ncols = DBAUTH_F_COUNT, .max_rows = 1, .row = on_row, .arg = &a,
	};
	enum dbpool_rc rc = conn_my_query(conn, cfg->sql, j->nparams, j->param, j->param_len, deadline, &rows, err, errlen);
	if (rc == DBPOOL_OK && !a.found) {
		struct dbauth_row none = { 0 };
		dbauth_row_eval(&none, &cfg->c.pw, j->password, j->password_len, &j->res);
	}
	return rc;
}

static const struct dbpool_backend my_backend = {
	.name = "mysql",
	.connect = conn_my_connect,
	.run = m_run,
	.close = conn_my_close,
	.healthy = conn_my_healthy,
	.interrupt = conn_my_interrupt,
	.done = dbauth_job_done,
	.release = dbauth_job_release,
};

/* ---- authenticator ---- */

static struct authn *my_create(const void *cfgp, const struct authn_env *env, const char *id, char *err, size_t errlen)
{
	const struct conn_sql_cfg *cfg = cfgp;
	conn_my_library_init();
	struct authn *a = xcalloc(1, sizeof *a);
	a->cfg = (struct conn_sql_cfg *)cfg;
	a->base.id = xstrdup(id);
	a->base.cfg = &cfg->c;
	a->base.undefined_is_null = true;
	a->base.nparams = cfg->nnames;
	a->base.params = conn_sql_params(cfg, tmpl_authn_vars);
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
