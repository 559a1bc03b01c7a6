/* The configuration the SQL backends share (PostgreSQL and MySQL, for authentication and
 * for authorization), prefix conn_sql_: the connector keys (struct dbauth_common) and the
 * `query`, whose ${placeholders} become bind parameters ($1, $2, ... or ?; tmpl_sql) so
 * that values never enter the SQL text.
 */
#ifndef BW_CONN_SQL_H
#define BW_CONN_SQL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/dbpool_authn.h"
#include "auth/template.h"
#include "config/cfgread.h"

struct conn_sql_cfg {
	struct dbauth_common c; /* first (dbpool_authn.h) */
	atomic_int refs;        /* the parser's reference and one per instance using it */
	char *query;            /* as written */
	char *sql;              /* query with bind parameters */
	char **names;           /* parameter i binds ${names[i]} */
	size_t nnames;
};

/* The `query` key into c (the body of a CFG_F_CUSTOM reader): placeholders from allowed
 * become parameters of style. False with the error set (empty, a placeholder not allowed). */
bool conn_sql_read_query(struct cfg_reader *r, const struct hocon_member *m, struct conn_sql_cfg *c,
			 const char *const *allowed, enum tmpl_sql_style style);
/* Read the backend object m through fields (whose target is a struct conn_sql_cfg): the
 * query is required ("query is required (e.g. \"example\")"), then dbauth_common_check
 * with default_port (database required). A new config with one reference, or NULL with
 * the error set. */
struct conn_sql_cfg *conn_sql_parse(struct cfg_reader *r, const struct hocon_member *m, const struct cfg_field *fields,
				    uint16_t default_port, const char *example);
/* Take / drop a reference; the last unref frees. NULL is ignored by unref. */
void conn_sql_cfg_ref(struct conn_sql_cfg *c);
void conn_sql_cfg_unref(struct conn_sql_cfg *c);
/* The parameter templates ${names[i]} (variables from allowed), nnames + 1 entries: the
 * caller owns the array and the templates. */
struct tmpl **conn_sql_params(const struct conn_sql_cfg *c, const char *const *allowed);

#endif
