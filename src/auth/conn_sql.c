/* The SQL backends' shared configuration (see auth/conn_sql.h). */
#include "auth/conn_sql.h"

#include <stdio.h>
#include <stdlib.h>

#include "core/alloc.h"

bool conn_sql_read_query(struct cfg_reader *r, const struct hocon_member *m, struct conn_sql_cfg *c,
			 const char *const *allowed, enum tmpl_sql_style style)
{
	char *q = NULL, *sql = NULL, **names = NULL, err[200];
	size_t n = 0;
	if (!cfgr_string(r, m, &q))
		return false;
	if (!q[0]) {
		free(q);
		return cfgr_fail(r, m, "the query is empty");
	}
	if (!tmpl_sql(q, allowed, style, &sql, &names, &n, err, sizeof err)) {
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

struct conn_sql_cfg *conn_sql_parse(struct cfg_reader *r, const struct hocon_member *m, const struct cfg_field *fields,
				    uint16_t default_port, const char *example)
{
	struct conn_sql_cfg *c = xcalloc(1, sizeof *c);
	dbauth_common_init(&c->c);
	atomic_init(&c->refs, 1);
	if (!cfgr_load_fields(r, m, m->value, fields, c))
		goto fail;
	if (!c->sql) {
		cfgr_fail(r, m, "query is required (e.g. \"%s\")", example);
		goto fail;
	}
	if (!dbauth_common_check(r, m, &c->c, default_port, true))
		goto fail;
	return c;
fail:
	conn_sql_cfg_unref(c);
	return NULL;
}

void conn_sql_cfg_ref(struct conn_sql_cfg *c)
{
	atomic_fetch_add(&c->refs, 1);
}

void conn_sql_cfg_unref(struct conn_sql_cfg *c)
{
	if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
		return;
	dbauth_common_free(&c->c);
	free(c->query);
	free(c->sql);
	tmpl_sql_free_names(c->names);
	free(c);
}

struct tmpl **conn_sql_params(const struct conn_sql_cfg *c, const char *const *allowed)
{
	struct tmpl **p = xcalloc(c->nnames + 1, sizeof *p);
	for (size_t i = 0; i < c->nnames; i++) {
		char *t = xasprintf("${%s}", c->names[i]);
		p[i] = tmpl_parse(t, allowed);
		free(t);
	}
	return p;
}
