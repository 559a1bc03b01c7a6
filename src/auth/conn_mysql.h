/* The MySQL client (MariaDB Connector/C, blocking API) shared by the authenticator
 * (auth/authn_mysql.c) and the authorization source (authz/source_mysql.c), prefix
 * conn_my_:
 *
 *   - the `ssl { ... }` reader (server_name_indication cannot be chosen with this client
 *     library: a name is refused as not supported yet, `disable` warns);
 *   - connecting with the struct dbauth_common settings, always over TCP (also for
 *     "localhost"), with read/write timeouts of query_timeout; ssl enforced when enabled,
 *     verify_peer checking the chain (cacertfile) and the server's host name;
 *   - running the query as a prepared statement (prepared once per connection) with text
 *     bind parameters, and handing the caller the rows' columns it asks for;
 *   - the dbpool_backend callbacks close / healthy / interrupt.
 *
 * Everything but the ssl reader and conn_my_library_init runs on the pool threads
 * (auth/dbpool.h). What the rows mean stays with the caller.
 */
#ifndef BW_CONN_MYSQL_H
#define BW_CONN_MYSQL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/dbpool.h"
#include "auth/dbpool_authn.h"
#include "config/cfgread.h"

/* The `ssl` key (CFG_F_CUSTOM; target starts with struct dbauth_common): dbauth_read_ssl,
 * then the server_name_indication rule above. List it before the common "ssl" line. */
bool conn_my_read_ssl(struct cfg_reader *r, const struct hocon_member *m, void *target);
/* mysql_library_init, once per process; call on the main thread before any pool starts. */
void conn_my_library_init(void);

/* dbpool_backend.connect: ctx is a config that starts with struct dbauth_common. Returns
 * a connection for the other conn_my_ calls, or NULL with err. */
void *conn_my_connect(void *ctx, uint64_t deadline_ms, char *err, size_t errlen);
/* dbpool_backend.close / .healthy / .interrupt for conn_my_connect's connections. */
void conn_my_close(void *ctx, void *conn);
bool conn_my_healthy(void *ctx, void *conn);
void conn_my_interrupt(void *ctx, void *conn);

/* Which columns a caller wants: col_of maps a column name to 0..ncols-1 or -1 (the first
 * column of a name wins); row is called for each row with v[0..ncols) (DBAUTH_V_ABSENT
 * for a column the result lacks; integer types and BIT as DBAUTH_V_INT, BIT(n) as "1"
 * when any bit is set, else "0"), valid during the call only. */
struct conn_my_rows {
	int (*col_of)(const char *name, size_t len);
	size_t ncols;
	size_t max_rows;          /* stop after this many rows (0: all) */
	void (*row)(void *arg, const struct dbauth_value *v);
	void *arg;
};

/* Run sql (prepared on conn's first use; it must have nparams `?`) with the text
 * parameters param[i] (NULL binds NULL) by deadline_ms, handing the rows to rows (none for
 * a statement without a result set). DBPOOL_OK, or the error with err filled (a
 * client-side error marks the connection broken; near the deadline it is a timeout). */
enum dbpool_rc conn_my_query(void *conn, const char *sql, size_t nparams, char *const *param, const size_t *param_len,
			     uint64_t deadline_ms, const struct conn_my_rows *rows, char *err, size_t errlen);

#endif
