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
 * libpq runs on the pool threads (auth/dbpool.h) through auth/conn_pgsql.h, polled against
 * the request's deadline (cancelled with PQcancel at the deadline), exactly as the
 * PostgreSQL authenticator.
 * ssl: verify_none -> sslmode=require; verify_peer -> sslmode=verify-full against
 * cacertfile (the name checked is server_name_indication when set, else the host);
 * server_name_indication = disable -> sslsni=0.
 */
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "auth/conn_pgsql.h"
#include "auth/conn_sql.h"
#include "auth/dbpool.h"
#include "auth/dbpool_authn.h"
#include "auth/template.h"
#include "authz/source.h"
#include "authz/source_db.h"
#include "core/alloc.h"

/* Array type OIDs (catalog/pg_type.h, stable). */
#define PGZ_INT2ARRAYOID 1005
#define PGZ_INT4ARRAYOID 1007
#define PGZ_TEXTARRAYOID 1009
#define PGZ_VARCHARARRAYOID 1015
#define PGZ_INT8ARRAYOID 1016

struct pgz_source {
	struct azdb base; /* first */
	struct conn_sql_cfg *cfg;
};

/* ---- config ---- */

static bool pgz_read_query(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	return conn_sql_read_query(r, m, target, authz_tmpl_vars, TMPL_SQL_DOLLAR);
}

static const struct cfg_field pgz_fields[] = {
	AZDB_COMMON_FIELDS,
	{ "database", CFG_F_STRING, offsetof(struct dbauth_common, database), 0, 0, NULL, NULL },
	{ "query", CFG_F_CUSTOM, 0, 0, 0, NULL, pgz_read_query },
	{ "disable_prepared_statements", CFG_F_IGNORED, 0, 0, 0, NULL, NULL }, /* never named statements */
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

static void pgz_free_config(void *p)
{
	conn_sql_cfg_unref(p);
}

static void *pgz_parse(struct cfg_reader *r, const struct hocon_member *m)
{
	return conn_sql_parse(r, m, pgz_fields, 5432,
			      "SELECT permission, action, topic FROM mqtt_acl WHERE username = ${username}");
}

/* ---- backend ---- */

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
	for (int k = 0; k < AZDB_C_COUNT; k++)
		col[k] = -1;
	int nf = PQnfields(res);
	for (int i = 0; i < nf; i++) {
		const char *name = PQfname(res, i);
		int k = azdb_col_of(name, strlen(name));
		if (k >= 0 && col[k] < 0)
			col[k] = i;
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
			conn_pg_value(res, t, col[k], v);
			if (v->type == DBAUTH_V_NULL)
				continue;
			Oid o = PQftype(res, col[k]);
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

static enum dbpool_rc pgz_run(void *ctx, void *conn, void *job, uint64_t deadline, char *err, size_t errlen)
{
	const struct conn_sql_cfg *cfg = ctx;
	struct azdb_job *j = job;
	PGresult *res = NULL;
	enum dbpool_rc rc = conn_pg_query(conn, cfg->sql, j->nparams, j->param, j->param_len, deadline, &res, err, errlen);
	if (rc != DBPOOL_OK || !res)
		return rc;
	if (PQresultStatus(res) == PGRES_TUPLES_OK)
		pgz_rules_of_result(res, j);
	PQclear(res);
	return DBPOOL_OK;
}

static const struct dbpool_backend pgz_backend = {
	.name = "postgresql",
	.connect = conn_pg_connect,
	.run = pgz_run,
	.close = conn_pg_close,
	.healthy = conn_pg_healthy,
	.interrupt = conn_pg_interrupt,
	.done = azdb_job_done,
	.release = azdb_job_release,
};

/* ---- source ---- */

static struct authz_source *pgz_create(const void *cfgp, const struct authz_env *env, char *err, size_t errlen)
{
	struct conn_sql_cfg *cfg = (struct conn_sql_cfg *)cfgp;
	struct pgz_source *s = xcalloc(1, sizeof *s);
	conn_sql_cfg_ref(cfg);
	s->cfg = cfg;
	s->base.type = "postgresql";
	s->base.id = xstrdup("authorization postgresql");
	s->base.cfg = &cfg->c;
	s->base.undefined_is_null = true;
	s->base.nparams = cfg->nnames;
	s->base.params = conn_sql_params(cfg, authz_tmpl_vars);
	azdb_start_pool(&s->base, &pgz_backend, cfg);
	return (struct authz_source *)s;
}

static void pgz_destroy(struct authz_source *as)
{
	struct pgz_source *s = (struct pgz_source *)as;
	if (!s)
		return;
	azdb_fini(&s->base);
	conn_sql_cfg_unref(s->cfg);
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
