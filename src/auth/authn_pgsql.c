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
 * libpq runs on the pool threads (dbpool.h) through auth/conn_pgsql.h: connecting with
 * PQconnectStartParams and querying with PQsendQueryParams, both polled against the
 * request's deadline; at the deadline the query is cancelled (PQcancel) so the connection
 * stays usable.
 *
 * ssl: verify_none -> sslmode=require (encrypted, server not verified); verify_peer ->
 * sslmode=verify-full against cacertfile (the name checked is server_name_indication
 * when set, else the server's host); server_name_indication = disable -> sslsni=0.
 */
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "auth/authn.h"
#include "auth/conn_pgsql.h"
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
	return conn_sql_read_query(r, m, target, tmpl_authn_vars, TMPL_SQL_DOLLAR);
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
	conn_sql_cfg_unref(p);
}

static void *pg_parse(struct cfg_reader *r, const struct hocon_member *m)
{
	return conn_sql_parse(r, m, pg_fields, 5432,
			      "SELECT password_hash, salt FROM mqtt_user WHERE username = ${username} LIMIT 1");
}

/* ---- backend ---- */

/* Fill row from the first tuple of res (NULL: no row). */
static void row_of_result(const PGresult *res, struct dbauth_row *row)
{
	memset(row, 0, sizeof *row);
	if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) < 1)
		return;
	row->found = true;
	int nf = PQnfields(res);
	for (int i = 0; i < nf; i++) {
		const char *name = PQfname(res, i);
		int k = dbauth_field_of(name, strlen(name));
		if (k < 0 || row->v[k].type != DBAUTH_V_ABSENT)
			continue;
		conn_pg_value(res, 0, i, &row->v[k]);
	}
}

static enum dbpool_rc p_run(void *ctx, void *conn, void *job, uint64_t deadline, char *err, size_t errlen)
{
	const struct conn_sql_cfg *cfg = ctx;
	struct dbauth_job *j = job;
	PGresult *res = NULL;
	enum dbpool_rc rc = conn_pg_query(conn, cfg->sql, j->nparams, j->param, j->param_len, deadline, &res, err, errlen);
	if (rc != DBPOOL_OK)
		return rc;
	struct dbauth_row row;
	row_of_result(res, &row);
	dbauth_row_eval(&row, &cfg->c.pw, j->password, j->password_len, &j->res);
	PQclear(res);
	return DBPOOL_OK;
}

static const struct dbpool_backend pg_backend = {
	.name = "postgresql",
	.connect = conn_pg_connect,
	.run = p_run,
	.close = conn_pg_close,
	.healthy = conn_pg_healthy,
	.interrupt = conn_pg_interrupt,
	.done = dbauth_job_done,
	.release = dbauth_job_release,
};

/* ---- authenticator ---- */

static struct authn *pg_create(const void *cfgp, const struct authn_env *env, const char *id, char *err, size_t errlen)
{
	const struct conn_sql_cfg *cfg = cfgp;
	struct authn *a = xcalloc(1, sizeof *a);
	a->cfg = (struct conn_sql_cfg *)cfg;
	a->base.id = xstrdup(id);
	a->base.cfg = &cfg->c;
	a->base.undefined_is_null = true;
	a->base.nparams = cfg->nnames;
	a->base.params = conn_sql_params(cfg, tmpl_authn_vars);
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
