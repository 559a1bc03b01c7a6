/* What the database-backed authorization sources (source_redis.c, source_pgsql.c,
 * source_mysql.c) share, prefix azdb_:
 *
 *   - the connector keys (server, username, password, pool_size, query_timeout, ssl,
 *     auto_reconnect) as field-table lines, read by auth/dbpool_authn.h's readers into a
 *     struct dbauth_common that starts the source's config;
 *   - EMQX's raw rule contract (emqx_authz_rule_raw, reference/emqx.md §5): a row's
 *     permission / action / topic / qos / retain, or a Redis field and value, become a
 *     struct acl_rule_spec (who = all);
 *   - the request flow: parameters rendered on the caller's thread (authz_call_var), a
 *     job on the backend's pool (auth/dbpool.h), the rows turned into a temporary struct
 *     acl on the pool thread, acl_check against the call's client and action, then
 *     authz_call_done. Rows are tried in order and the first matching one decides; no row
 *     or no match is NOMATCH; an invalid row is skipped (logged); a backend error, a
 *     timeout or a full queue is AUTHZ_ERROR.
 */
#ifndef BW_AUTHZ_SOURCE_DB_H
#define BW_AUTHZ_SOURCE_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/dbpool.h"
#include "auth/dbpool_authn.h"
#include "authz/acl.h"
#include "authz/source.h"

struct tmpl;

/* The field-table lines every database source has (type/enable are the core's). The
 * target must start with struct dbauth_common. */
#define AZDB_COMMON_FIELDS                                                                  \
	{ "type", CFG_F_CUSTOM, 0, 0, 0, NULL, dbauth_read_skip },                          \
	{ "enable", CFG_F_CUSTOM, 0, 0, 0, NULL, dbauth_read_skip },                        \
	{ "server", CFG_F_CUSTOM, 0, 0, 0, NULL, dbauth_read_server },                      \
	{ "username", CFG_F_STRING, offsetof(struct dbauth_common, username), 0, 0, NULL, NULL }, \
	{ "password", CFG_F_CUSTOM, 0, 0, 0, NULL, dbauth_read_password },                  \
	{ "pool_size", CFG_F_CUSTOM, 0, 0, 0, NULL, dbauth_read_pool_size },                \
	{ "query_timeout", CFG_F_CUSTOM, 0, 0, 0, NULL, dbauth_read_query_timeout },        \
	{ "ssl", CFG_F_CUSTOM, 0, 0, 0, NULL, dbauth_read_ssl },                            \
	{ "auto_reconnect", CFG_F_IGNORED, 0, 0, 0, NULL, NULL }

/* ---- the raw rule contract ---- */

enum azdb_col { AZDB_C_PERMISSION, AZDB_C_ACTION, AZDB_C_TOPIC, AZDB_C_QOS, AZDB_C_RETAIN, AZDB_C_COUNT };

/* A row as the rule sees it (other columns are ignored, as EMQX). */
struct azdb_row {
	struct dbauth_value v[AZDB_C_COUNT]; /* DBAUTH_V_ABSENT when the row lacks the column */
};

/* The column named name[0..len) (case-insensitive), or -1. */
int azdb_col_of(const char *name, size_t len);
/* pub | publish -> AUTHZ_PUBLISH, sub | subscribe -> AUTHZ_SUBSCRIBE, all -> both; 0 else. */
unsigned azdb_action_of(const char *s, size_t len);
/* qos: absent/NULL -> 0 (every QoS); an integer 0..2; text "0", "1,2" (blanks around items
 * allowed). *mask gets bit q per QoS. False when invalid. */
bool azdb_qos_of(const struct dbauth_value *v, uint8_t *mask);
/* retain: absent/NULL/"all" -> -1; 0/1, "0"/"1", "true"/"false", booleans -> 0/1. */
bool azdb_retain_of(const struct dbauth_value *v, int *retain);
/* A row as a rule: permission and action required, topic required (a filter, placeholders
 * or "eq FILTER" kept for acl_add). spec->topic points into row. False with err. */
bool azdb_row_spec(const struct azdb_row *row, struct acl_rule_spec *spec, char *err, size_t errlen);
/* A Redis hash entry as a rule: field = topic, value = publish | subscribe | all or a
 * JSON object {"action": .., "qos": 1 | [0,1] | "0,1", "retain": true | ..}; permission
 * allow. spec->topic points to topic. False with err. */
bool azdb_redis_spec(const char *topic, size_t topic_len, const char *value, size_t value_len,
		     struct acl_rule_spec *spec, char *err, size_t errlen);

/* ---- the request flow ---- */

/* A database source's shared part: embed first in the backend's instance. */
struct azdb {
	const char *type;         /* "redis", "postgresql", "mysql": for log lines */
	char *id;                 /* "authorization:redis" */
	const struct dbauth_common *cfg;
	struct dbpool *pool;
	struct tmpl **params;     /* rendered per request, in order */
	size_t nparams;
	bool undefined_is_null;   /* SQL: an undefined placeholder binds NULL; Redis: renders "" */
};

/* One request on its way through the pool. The backend's run() reads param[] and adds
 * the rows it got with azdb_job_add_row / azdb_job_add_redis. */
struct azdb_job {
	struct authz_call *call;
	const struct azdb *s;
	size_t nparams;
	char **param;             /* NUL-terminated copies; NULL = undefined (SQL NULL) */
	size_t *param_len;
	/* Written by run() only; read by done() after an OK run. */
	struct acl *acl;
	size_t nrows, nbad;
	char bad[200];            /* why the first invalid row was skipped */
};

/* Append a row (run(), pool thread). */
void azdb_job_add_row(struct azdb_job *j, const struct azdb_row *row);
/* Append a Redis field/value pair (run(), pool thread). */
void azdb_job_add_redis(struct azdb_job *j, const char *field, size_t field_len, const char *value, size_t value_len);

/* start(): render the parameters, submit (AUTHZ_ERROR when the queue is full). */
void azdb_start(struct azdb *s, struct authz_call *call);
/* dbpool_backend.done and .release for azdb jobs. */
void azdb_job_done(void *ctx, void *job, enum dbpool_rc rc, const char *err);
void azdb_job_release(void *ctx, void *job);
/* Start the pool for s (s->cfg set): threads = pool_size, timeout = query_timeout. */
void azdb_start_pool(struct azdb *s, const struct dbpool_backend *be, void *ctx);
/* Stop the pool (pending requests are answered), free params and id. */
void azdb_fini(struct azdb *s);

#endif
