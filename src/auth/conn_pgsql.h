/* The PostgreSQL client shared by the authenticator (auth/authn_pgsql.c) and the
 * authorization source (authz/source_pgsql.c), prefix conn_pg_:
 *
 *   - connecting with the struct dbauth_common settings (server, database, username,
 *     password, ssl { ... }): PQconnectStartParams polled against the deadline;
 *     ssl: verify_none -> sslmode=require, verify_peer -> sslmode=verify-full against
 *     cacertfile (the name checked is server_name_indication when set, else the host),
 *     server_name_indication = disable -> sslsni=0;
 *   - running one parameterised query (PQsendQueryParams) by a deadline: at the deadline
 *     the query is cancelled (PQcancel) so the connection stays usable;
 *   - the dbpool_backend callbacks close / healthy / interrupt.
 *
 * Everything runs on the pool threads (auth/dbpool.h). What the rows mean stays with the
 * caller.
 */
#ifndef BW_CONN_PGSQL_H
#define BW_CONN_PGSQL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "auth/dbpool.h"
#include "auth/dbpool_authn.h"

/* dbpool_backend.connect: ctx is a config that starts with struct dbauth_common. Returns
 * a connection for the other conn_pg_ calls, or NULL with err. */
void *conn_pg_connect(void *ctx, uint64_t deadline_ms, char *err, size_t errlen);
/* dbpool_backend.close / .healthy / .interrupt for conn_pg_connect's connections. */
void conn_pg_close(void *ctx, void *conn);
bool conn_pg_healthy(void *ctx, void *conn);
void conn_pg_interrupt(void *ctx, void *conn);

/* Run sql with nparams text parameters (param[i] NULL binds NULL) on conn by deadline_ms.
 * DBPOOL_OK: *res is the first result, of status PGRES_TUPLES_OK or PGRES_COMMAND_OK
 * (the caller PQclear()s it), or NULL when a parameter holds a NUL byte (PostgreSQL text
 * cannot: such a value matches no row). Otherwise the error with err filled, *res NULL. */
enum dbpool_rc conn_pg_query(void *conn, const char *sql, size_t nparams, char *const *param, const size_t *param_len,
			     uint64_t deadline_ms, PGresult **res, char *err, size_t errlen);

/* Field (tuple, col) of res as a value: DBAUTH_V_NULL, or its text typed DBAUTH_V_BOOL
 * (boolean), DBAUTH_V_INT (int2/int4/int8) or DBAUTH_V_TEXT. Points into res. */
void conn_pg_value(const PGresult *res, int tuple, int col, struct dbauth_value *v);

#endif
